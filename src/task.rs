//! Naming tasks: how a `TASK` argument becomes a cgroup path, gracekill's default root, and what
//! a task name may look like.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cgroup::{Cgroup, Mount, normalize};
use crate::error::{Error, Result};
use crate::policy::Policy;

/// The default root for tasks named by a bare name, relative to the cgroup2 mount.
pub const DEFAULT_ROOT: &str = "/gracekill";

/// gracekill's root for bare task names: `$GRACEKILL_ROOT` (an absolute path under the mount
/// or a mount-relative path) or [`DEFAULT_ROOT`].
///
/// # Errors
/// [`Error::Input`] when `$GRACEKILL_ROOT` is malformed or outside the mount.
pub fn default_root(mount: &Mount) -> Result<String> {
    root_from(
        mount.mountpoint(),
        std::env::var("GRACEKILL_ROOT").ok().as_deref(),
    )
}

/// [`default_root`] for a mount point and the value of `$GRACEKILL_ROOT` (unset or empty: the
/// default).
fn root_from(mountpoint: &Path, var: Option<&str>) -> Result<String> {
    match var {
        Some(v) if !v.is_empty() => {
            if !v.starts_with('/') {
                return Err(Error::Input(format!(
                    "GRACEKILL_ROOT='{}' must be an absolute path",
                    v.escape_debug()
                )));
            }
            absolute_to_rel(mountpoint, v).map_err(|e| Error::Input(format!("GRACEKILL_ROOT: {e}")))
        }
        _ => Ok(DEFAULT_ROOT.to_string()),
    }
}

/// Resolves a `TASK` argument to a path relative to the mount:
/// - `/sys/fs/cgroup/jobs/web` (under the mount point) -> `/jobs/web`;
/// - `/jobs/web` (not an existing path outside the mount) -> `/jobs/web`;
/// - `web` or `team/web` -> `<root>/web`, `<root>/team/web`.
///
/// # Errors
/// [`Error::Input`] for an empty spec, `.`/`..` components, or an existing path outside the
/// cgroup2 mount (another filesystem, a cgroup v1 hierarchy, a symlink).
pub fn resolve(mount: &Mount, spec: &str, root: &str) -> Result<String> {
    resolve_at(mount.mountpoint(), spec, root)
}

/// Resolves a `TASK` argument (a name or a cgroup path) to a path relative to the mount, as
/// everything that names a task does (`stop`, `status`, `run --parent`, `list --parent`, the C
/// ABI): [`resolve`] relative to [`default_root`].
///
/// # Errors
/// As [`default_root`] and [`resolve`].
pub fn locate(mount: &Mount, spec: &str) -> Result<String> {
    let root = default_root(mount)?;
    resolve(mount, spec, &root)
}

/// [`resolve`] for a mount point.
fn resolve_at(mountpoint: &Path, spec: &str, root: &str) -> Result<String> {
    if spec.trim().is_empty() {
        return Err(Error::Input("empty task name or cgroup path".into()));
    }
    if spec.split('/').any(|c| c == ".." || c == ".") {
        return Err(Error::Input(format!(
            "invalid cgroup path '{}': '.' and '..' are not allowed",
            spec.escape_debug()
        )));
    }
    if spec.starts_with('/') {
        absolute_to_rel(mountpoint, spec)
    } else {
        normalize(&format!("{root}/{spec}"))
    }
}

fn absolute_to_rel(mountpoint: &Path, spec: &str) -> Result<String> {
    if spec.bytes().all(|b| b == b'/') {
        // `/` is the mount's root cgroup (which the engine then refuses to stop).
        return Ok("/".into());
    }
    let p = Path::new(spec);
    if let Ok(rest) = p.strip_prefix(mountpoint) {
        let rest = rest
            .to_str()
            .ok_or_else(|| Error::Input(format!("'{}' is not valid UTF-8", spec.escape_debug())))?;
        return normalize(rest);
    }
    if std::fs::symlink_metadata(p).is_ok() {
        return Err(Error::Input(format!(
            "'{spec}' is outside the cgroup2 mount at '{}'; give a path under it, or one relative to it",
            mountpoint.display()
        )));
    }
    normalize(spec)
}

/// Checks a task name for `run --name`: one path component of letters, digits and `-_.@:`,
/// at most 128 bytes, not `.` or `..`.
///
/// # Errors
/// [`Error::Input`] naming the name and the rule.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@:".contains(&b))
        && !name.starts_with("cgroup.");
    if ok {
        Ok(())
    } else {
        Err(Error::Input(format!(
            "invalid task name '{}': use 1-128 letters, digits and -_.@: (one path component, not starting with 'cgroup.')",
            name.escape_debug()
        )))
    }
}

/// Whose records a process may trust, and where it writes its own. Decided per cgroup.
///
/// A task can write `user.*` xattrs on its cgroup whenever it can write the directory: a
/// delegated user owns it, and a root task without `CAP_SYS_ADMIN` passes the permission check.
/// Only `CAP_SYS_ADMIN` can read or write `trusted.*`. So:
/// - a privileged stopper (`CAP_SYS_ADMIN`) reads and writes `trusted.gracekill.*` only, which
///   no task without `CAP_SYS_ADMIN` can forge;
/// - an unprivileged user who owns the cgroup reads and writes `user.gracekill.*` (anything the
///   task could forge there, it could do to its owner directly);
/// - anyone else (root without `CAP_SYS_ADMIN`, or a user stopping a cgroup owned by another)
///   trusts no record: the stop uses the given flags or the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// `trusted.gracekill.*`.
    Privileged,
    /// `user.gracekill.*` of a cgroup the caller owns.
    Owner,
    /// No record is read or written.
    Untrusted,
}

impl Trust {
    /// The trust the calling process has in `cg`'s records.
    pub fn of(cg: &Cgroup) -> Trust {
        let caps = rustix::thread::capabilities(None);
        if caps.is_ok_and(|c| {
            c.effective
                .contains(rustix::thread::CapabilitySet::SYS_ADMIN)
        }) {
            return Trust::Privileged;
        }
        let euid = rustix::process::geteuid();
        if !euid.is_root() && cg.owner_uid() == euid.as_raw() {
            Trust::Owner
        } else {
            Trust::Untrusted
        }
    }

    /// The xattr prefix, if records are used at all.
    pub fn prefix(self) -> Option<&'static str> {
        match self {
            Trust::Privileged => Some("trusted.gracekill."),
            Trust::Owner => Some("user.gracekill."),
            Trust::Untrusted => None,
        }
    }

    /// Lowercase name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Privileged => "trusted",
            Trust::Owner => "user",
            Trust::Untrusted => "none",
        }
    }
}

/// gracekill's records on one cgroup (xattrs), in the namespace [`Trust`] allows. Every record
/// gracekill keeps goes through here: the policy, the main pid, the creation time, the owner
/// claim of `run`, the stop-in-progress mark and the final-kill record.
#[derive(Debug)]
pub struct Records<'a> {
    cg: &'a Cgroup,
    trust: Trust,
}

impl<'a> Records<'a> {
    /// The records of `cg` as the calling process may use them.
    pub fn of(cg: &'a Cgroup) -> Records<'a> {
        Records {
            cg,
            trust: Trust::of(cg),
        }
    }

    /// The trust they are read with.
    pub fn trust(&self) -> Trust {
        self.trust
    }

    fn name(&self, key: &str) -> Option<String> {
        self.trust.prefix().map(|p| format!("{p}{key}"))
    }

    /// Reads one record; `None` when absent or not trusted.
    ///
    /// # Errors
    /// As [`Cgroup::get_xattr`].
    pub fn get(&self, key: &str) -> Result<Option<String>> {
        match self.name(key) {
            Some(n) => self.cg.get_xattr(&n),
            None => Ok(None),
        }
    }

    /// Writes one record (nothing when no namespace is trusted). With `create_only`, fails with
    /// [`Error::Busy`] if it exists.
    ///
    /// # Errors
    /// As [`Cgroup::set_xattr`].
    pub fn set(&self, key: &str, value: &str, create_only: bool) -> Result<()> {
        match self.name(key) {
            Some(n) => self.cg.set_xattr(&n, value, create_only),
            None => Ok(()),
        }
    }

    /// Removes one record; absent is fine.
    ///
    /// # Errors
    /// As [`Cgroup::remove_xattr`].
    pub fn remove(&self, key: &str) -> Result<()> {
        match self.name(key) {
            Some(n) => self.cg.remove_xattr(&n),
            None => Ok(()),
        }
    }
}

/// What `run` records on a task's cgroup so that `gracekill stop NAME`, `status` and `list`
/// work from anywhere, even after `run` is gone (see [`Records`] for where, and who trusts it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskMeta {
    /// The stop policy (`policy`).
    pub policy: Option<Policy>,
    /// The main process's pid (`main`).
    pub main_pid: Option<i32>,
    /// When `run` created the task, seconds since the epoch (`created`).
    pub created: Option<u64>,
}

/// Parses a small decimal number from a record strictly: digits only, at most 20 of them.
fn strict_number<T: std::str::FromStr>(what: &str, v: &str) -> Result<T> {
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Input(format!(
            "invalid stored {what} '{}': not a number",
            v.escape_debug()
                .to_string()
                .chars()
                .take(40)
                .collect::<String>()
        )));
    }
    v.parse().map_err(|_| {
        Error::Input(format!(
            "invalid stored {what} '{}': out of range",
            v.escape_debug()
        ))
    })
}

/// `PID STARTTIME` of the calling process, to name it in a record without PID-reuse doubt.
fn me() -> Option<String> {
    // A process's start time never changes: read once per process (a forked child has another
    // pid, and reads its own), not at each of a thousand stops.
    static START: std::sync::Mutex<Option<(i32, u64)>> = std::sync::Mutex::new(None);
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    let mut start = START
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let starttime = match *start {
        Some((p, t)) if p == pid => t,
        _ => {
            let t = crate::procinfo::stat_of("self")?.starttime;
            *start = Some((pid, t));
            t
        }
    };
    Some(format!("{pid} {starttime}"))
}

/// The live process named by a `PID STARTTIME` record, as a pidfd.
fn live_process(text: &str) -> Option<crate::pidfd::PidFd> {
    let (pid, start) = text.split_once(' ')?;
    let pid: i32 = strict_number("pid", pid).ok()?;
    let start: u64 = strict_number("start time", start).ok()?;
    let pidfd = crate::pidfd::PidFd::open(pid).ok()??;
    let stat = crate::procinfo::stat_of(&pid.to_string())?;
    (stat.starttime == start && !pidfd.has_exited()).then_some(pidfd)
}

/// Claims `cg` for the calling process (record `owner` = `PID STARTTIME`, created exclusively).
///
/// # Errors
/// [`Error::Busy`] when another process claimed it first; OS errors writing the record.
pub fn claim(cg: &Cgroup) -> Result<()> {
    let me = me().ok_or_else(|| Error::Input("cannot read /proc/self/stat".into()))?;
    Records::of(cg).set("owner", &me, true)
}

/// The live process that claimed `cg` (see [`claim`]), if any.
pub fn owner(cg: &Cgroup) -> Option<crate::pidfd::PidFd> {
    live_process(&Records::of(cg).get("owner").ok()??)
}

/// The `gracekill run` that claimed a task, as far as this caller may trust the records.
#[derive(Debug)]
pub enum Supervisor {
    /// No claim: not a task of `run` (or a record this caller does not read).
    None,
    /// The claiming `run` is alive.
    Live(crate::pidfd::PidFd),
    /// It claimed the task and is gone (SIGKILLed, say): nobody will remove the cgroup.
    Gone,
}

/// The longest gracekill spends removing a task's emptied cgroup and the cgroups the task left
/// below it. A legitimate task leaves a few; thousands take milliseconds; a task that built a
/// deeper or wider tree to hold up whoever removes it finds the removal given up with a
/// warning, its cgroup left in place.
pub const REMOVE_BUDGET: Duration = Duration::from_secs(1);

/// Removes a task's emptied cgroup and everything below it, within [`REMOVE_BUDGET`].
///
/// # Errors
/// As [`Cgroup::remove_tree`].
pub fn remove_cgroup(cg: &Cgroup) -> Result<()> {
    cg.remove_tree(Some(Instant::now() + REMOVE_BUDGET))
}

/// Who supervises `cg` (see [`Supervisor`]).
pub fn supervisor(cg: &Cgroup) -> Supervisor {
    match Records::of(cg).get("owner").ok().flatten() {
        None => Supervisor::None,
        Some(text) => live_process(&text).map_or(Supervisor::Gone, Supervisor::Live),
    }
}

/// Marks a stop in progress on a cgroup (record `stopping` = `PID STARTTIME T0_NS`, the stop's
/// start on `CLOCK_MONOTONIC` last), so that `run` can tell "someone is stopping my task" from
/// "my main process left helpers behind", and a stop that begins while another's final kill is
/// still emptying the cgroup can tell that kill is this other stop's (see [`kill_in_flight`]).
/// Removed on drop; a stopper that was SIGKILLed leaves a stale mark that [`stopper`] detects.
#[derive(Debug)]
pub struct StopMark<'a> {
    records: Records<'a>,
    me: String,
}

impl<'a> StopMark<'a> {
    /// Sets the mark (best effort: a cgroup whose records we may not write goes unmarked).
    pub fn set(cg: &'a Cgroup, t0_ns: u128) -> Option<StopMark<'a>> {
        let records = Records::of(cg);
        records.trust.prefix()?;
        let me = format!("{} {t0_ns}", me()?);
        records.set("stopping", &me, false).ok()?;
        Some(StopMark { records, me })
    }
}

/// A stop mark's words: the stopper (`PID STARTTIME`, for [`live_process`]), its pid, and when
/// its stop began (absent from a mark of an older gracekill). Strict: anything else is no mark.
fn mark_words(text: &str) -> Option<(&str, u32, Option<u128>)> {
    let mut words = text.splitn(3, ' ');
    let pid_word = words.next()?;
    let start = words.next()?;
    let who = &text[..pid_word.len() + 1 + start.len()];
    let t0 = match words.next() {
        None => None,
        Some(t0) => Some(strict_number::<u64>("time", t0).ok()?.into()),
    };
    Some((who, strict_number("pid", pid_word).ok()?, t0))
}

impl Drop for StopMark<'_> {
    /// Leaves `stopped` = the same `PID STARTTIME T0_NS` before removing the mark, so that `run`,
    /// which may notice its main process's exit only after the stop is over, can still say who
    /// stopped its task: at every moment one of the two records is there.
    fn drop(&mut self) {
        let _ = self.records.set("stopped", &self.me, false);
        let _ = self.records.remove("stopping");
    }
}

/// The pid of the last stop of `cg` that finished (the `stopped` record [`StopMark`] leaves).
pub fn last_stopper_pid(cg: &Cgroup) -> Option<i32> {
    Records::of(cg)
        .get("stopped")
        .ok()??
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The live process that marked a stop in progress on `cg`, as a pidfd, if there is one: the
/// start time recorded with the pid must match (a recycled pid is not mistaken for it), and the
/// process must not be inside the task itself (a task cannot pose as its own stopper).
pub fn stopper(cg: &Cgroup) -> Option<crate::pidfd::PidFd> {
    stopper_of(cg, &Records::of(cg).get("stopping").ok()??)
}

/// [`stopper`] for a `stopping` mark already read.
fn stopper_of(cg: &Cgroup, mark: &str) -> Option<crate::pidfd::PidFd> {
    let (who, _, _) = mark_words(mark)?;
    let pidfd = live_process(who)?;
    let path = crate::cgroup::proc_cgroup(&pidfd.pid().to_string())?;
    let inside = crate::cgroup::is_within_bytes(&path, cg.ns_path_bytes());
    (!inside && !pidfd.has_exited()).then_some(pidfd)
}

/// The final kill a stop records right before sending it (record `final-kill` =
/// `PID MONOTONIC_NS VIA`), so that another stop of the same task running at the same time,
/// which then sees the cgroup empty, reports that kill instead of claiming a graceful exit.
///
/// Written and read only with [`Trust::Privileged`] (`trusted.*`): what it changes is the
/// report, and a task can write its own cgroup's `user.*` xattrs, so an owner's record could be
/// the task's word that it was killed, by whom and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FinalKillRecord {
    /// The stopper's pid.
    pub pid: u32,
    /// `CLOCK_MONOTONIC` in nanoseconds when it was sent.
    pub at_ns: u128,
    /// `cgroup.kill` or `fallback`.
    pub via: &'static str,
}

impl FinalKillRecord {
    /// Records this process's final kill (best effort).
    pub fn write(cg: &Cgroup, at_ns: u128, via: &'static str) {
        let records = Records::of(cg);
        if records.trust() != Trust::Privileged {
            return;
        }
        let _ = records.set(
            "final-kill",
            &format!("{} {at_ns} {via}", std::process::id()),
            false,
        );
    }

    /// The recorded final kill, parsed strictly (a malformed record is ignored).
    pub fn read(cg: &Cgroup) -> Option<FinalKillRecord> {
        let records = Records::of(cg);
        if records.trust() != Trust::Privileged {
            return None;
        }
        let text = records.get("final-kill").ok()??;
        let mut words = text.split(' ');
        let pid: u32 = strict_number("pid", words.next()?).ok()?;
        let at_ns: u128 = strict_number::<u64>("time", words.next()?).ok()?.into();
        let via = match words.next()? {
            "cgroup.kill" => "cgroup.kill",
            "fallback" => "fallback",
            _ => return None,
        };
        words
            .next()
            .is_none()
            .then_some(FinalKillRecord { pid, at_ns, via })
    }
}

/// The final kill recorded on `cg` by the stop still marked as in progress there: recorded by
/// the same process after that stop began (not by an earlier stop of the same process), and the
/// stopper is alive and outside the task (see [`stopper`]). A stop that begins then finds the
/// cgroup emptying of that kill, and reports it instead of claiming a graceful exit. Trusted
/// records only, as [`FinalKillRecord::read`].
pub fn kill_in_flight(cg: &Cgroup) -> Option<FinalKillRecord> {
    let rec = FinalKillRecord::read(cg)?;
    let text = Records::of(cg).get("stopping").ok()??;
    let (_, pid, t0) = mark_words(&text)?;
    let by_that_stop = pid == rec.pid && t0.is_some_and(|t0| rec.at_ns >= t0);
    let alive = || stopper_of(cg, &text).is_some_and(|p| u32::try_from(p.pid()).ok() == Some(pid));
    (by_that_stop && alive()).then_some(rec)
}

impl TaskMeta {
    /// Reads the task's metadata under the caller's [`Trust`]. Never fails: a record that
    /// cannot be read or parsed is left out and described in the returned warnings.
    pub fn read(cg: &Cgroup) -> (TaskMeta, Vec<String>) {
        let records = Records::of(cg);
        let mut warnings = Vec::new();
        let mut field = |key: &str| -> Option<String> {
            match records.get(key) {
                Ok(v) => v,
                Err(e) => {
                    warnings.push(format!("ignored stored {key}: {e}"));
                    None
                }
            }
        };
        let (policy, main, created) = (field("policy"), field("main"), field("created"));
        let mut meta = TaskMeta::default();
        let ctx = |e: Error| format!("ignored {e} (on '{}')", cg.path().display());
        match policy.map(|t| Policy::from_text(&t)).transpose() {
            Ok(p) => meta.policy = p,
            Err(e) => warnings.push(ctx(e)),
        }
        match main
            .map(|v| strict_number::<i32>("main pid", &v))
            .transpose()
        {
            Ok(p) => meta.main_pid = p.filter(|p| *p > 0),
            Err(e) => warnings.push(ctx(e)),
        }
        match created
            .map(|v| strict_number::<u64>("creation time", &v))
            .transpose()
        {
            Ok(c) => meta.created = c,
            Err(e) => warnings.push(ctx(e)),
        }
        (meta, warnings)
    }

    /// Writes the attributes that are set, under the caller's [`Trust`] (nothing when no
    /// namespace is trusted).
    ///
    /// # Errors
    /// OS errors naming the cgroup (e.g. a filesystem without xattrs).
    pub fn write(&self, cg: &Cgroup) -> Result<()> {
        let records = Records::of(cg);
        if let Some(p) = &self.policy {
            records.set("policy", &p.to_text(), false)?;
        }
        if let Some(pid) = self.main_pid {
            records.set("main", &pid.to_string(), false)?;
        }
        if let Some(t) = self.created {
            records.set("created", &t.to_string(), false)?;
        }
        Ok(())
    }
}

/// Where the policy of a stop came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicySource {
    /// Given by the caller (flags, a C `gracekill_policy`): replaces any stored one whole.
    Given,
    /// Recorded on the task by `run`, in a namespace the caller trusts.
    Stored,
    /// Nothing given or trusted: SIGTERM, 30 s, SIGKILL, 10 s.
    Default,
}

impl PolicySource {
    /// Its name in reports: `given`, `stored` or `default` (as in the JSON outcome).
    pub fn as_str(self) -> &'static str {
        match self {
            PolicySource::Given => "given",
            PolicySource::Stored => "stored",
            PolicySource::Default => "default",
        }
    }
}

/// A stop of a task as decided from the caller's request and the task's trusted records.
#[derive(Clone, Debug)]
pub struct StopPlan {
    /// The policy to apply.
    pub policy: Policy,
    /// Where it came from.
    pub source: PolicySource,
    /// The main process (for mixed and process modes), from the caller or a trusted record.
    pub main_pid: Option<i32>,
    /// Records that were ignored, and why.
    pub warnings: Vec<String>,
}

impl StopPlan {
    /// The plan for stopping `cg`: `given` (if any) replaces the stored policy as a whole;
    /// else the policy `run` recorded, if the caller may trust it (see [`Trust`]); else the
    /// default. `main_pid` given wins over the recorded one.
    pub fn for_task(cg: &Cgroup, given: Option<Policy>, main_pid: Option<i32>) -> StopPlan {
        let (meta, warnings) = if cg.is_root() {
            (TaskMeta::default(), Vec::new())
        } else {
            TaskMeta::read(cg)
        };
        let (policy, source) = match (given, meta.policy) {
            (Some(p), _) => (p, PolicySource::Given),
            (None, Some(p)) => (p, PolicySource::Stored),
            (None, None) => (Policy::default(), PolicySource::Default),
        };
        StopPlan {
            policy,
            source,
            main_pid: main_pid.or(meta.main_pid),
            warnings,
        }
    }
}

/// Opens the task named by a `TASK` argument (see [`locate`]): the one way a task is found by
/// its name or path.
///
/// # Errors
/// As [`locate`] and [`Mount::open_cgroup`].
pub fn open(mount: &Mount, spec: &str) -> Result<Cgroup> {
    mount.open_cgroup(&locate(mount, spec)?)
}

/// The name of the task in `cg`: the last component of its path (empty for the root cgroup).
pub fn name_of(cg: &Cgroup) -> &str {
    cg.rel().rsplit('/').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stop mark is `PID STARTTIME`, with the stop's start after them since it is needed to
    /// tell a kill in flight; anything else is no mark.
    #[test]
    fn stop_marks_are_read_strictly() {
        assert_eq!(mark_words("12 345"), Some(("12 345", 12, None)));
        assert_eq!(mark_words("12 345 678"), Some(("12 345", 12, Some(678))));
        for bad in [
            "",
            "12",
            "x 345",
            "12 345 6x",
            "12 345 678 9",
            "12 345 ",
            "-1 345 678",
        ] {
            assert_eq!(mark_words(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names() {
        for good in ["web", "a-b_c.d@e:f", "X1"] {
            validate_name(good).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "ünï",
            "cgroup.procs",
            &"x".repeat(129),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    const MNT: &str = "/nonexistent-gracekill-test-mount";

    #[test]
    fn a_task_argument_resolves_to_a_path_under_the_mount() {
        let at = |spec: &str, root: &str| resolve_at(Path::new(MNT), spec, root);
        // A bare name or a relative path: under the root.
        assert_eq!(at("web", "/gracekill").unwrap(), "/gracekill/web");
        assert_eq!(at("team/web", "/jobs/").unwrap(), "/jobs/team/web");
        assert_eq!(at("web", "/").unwrap(), "/web");
        // Under the mount point: relative to it, whatever the root.
        assert_eq!(
            at(&format!("{MNT}/jobs/web"), "/gracekill").unwrap(),
            "/jobs/web"
        );
        assert_eq!(at(MNT, "/gracekill").unwrap(), "/");
        // A path that names nothing outside the mount: mount-relative.
        assert_eq!(
            at("/no-such-dir-gk/web", "/gracekill").unwrap(),
            "/no-such-dir-gk/web"
        );
        assert_eq!(at("//", "/gracekill").unwrap(), "/");
    }

    #[test]
    fn bad_task_arguments_are_refused_with_the_reason() {
        let err = |spec: &str| {
            resolve_at(Path::new(MNT), spec, "/gracekill")
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err(" "), "empty task name or cgroup path");
        assert!(err("../etc").contains("'.' and '..' are not allowed"));
        assert!(err("a/./b").contains("'.' and '..' are not allowed"));
        // An existing path on another filesystem.
        assert!(
            err("/proc").contains("outside the cgroup2 mount"),
            "{}",
            err("/proc")
        );
    }

    #[test]
    fn gracekill_root_comes_from_the_environment_value() {
        let root = |v: Option<&str>| root_from(Path::new(MNT), v);
        assert_eq!(root(None).unwrap(), DEFAULT_ROOT);
        assert_eq!(root(Some("")).unwrap(), DEFAULT_ROOT);
        assert_eq!(root(Some("/jobs")).unwrap(), "/jobs");
        assert_eq!(root(Some(&format!("{MNT}/jobs/"))).unwrap(), "/jobs");
        assert!(
            root(Some("jobs"))
                .unwrap_err()
                .to_string()
                .contains("must be an absolute path")
        );
        assert!(
            root(Some("/proc"))
                .unwrap_err()
                .to_string()
                .starts_with("GRACEKILL_ROOT: ")
        );
    }

    #[test]
    fn policy_source_names_match_the_json() {
        for s in [
            PolicySource::Given,
            PolicySource::Stored,
            PolicySource::Default,
        ] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::from(s.as_str())
            );
        }
    }
}
