//! Naming tasks: how a `TASK` argument becomes a cgroup path, gracekill's default root, and what
//! a task name may look like.

use std::path::Path;

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
    match std::env::var("GRACEKILL_ROOT") {
        Ok(v) if !v.is_empty() => {
            if !v.starts_with('/') {
                return Err(Error::Input(format!(
                    "GRACEKILL_ROOT='{}' must be an absolute path",
                    v.escape_debug()
                )));
            }
            absolute_to_rel(mount, &v).map_err(|e| Error::Input(format!("GRACEKILL_ROOT: {e}")))
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
        absolute_to_rel(mount, spec)
    } else {
        normalize(&format!("{root}/{spec}"))
    }
}

fn absolute_to_rel(mount: &Mount, spec: &str) -> Result<String> {
    if spec.bytes().all(|b| b == b'/') {
        // `/` is the mount's root cgroup (which the engine then refuses to stop).
        return Ok("/".into());
    }
    let p = Path::new(spec);
    if let Ok(rest) = p.strip_prefix(mount.mountpoint()) {
        let rest = rest
            .to_str()
            .ok_or_else(|| Error::Input(format!("'{}' is not valid UTF-8", spec.escape_debug())))?;
        return normalize(rest);
    }
    if std::fs::symlink_metadata(p).is_ok() {
        return Err(Error::Input(format!(
            "'{spec}' is outside the cgroup2 mount at '{}'; give a path under it, or one relative to it",
            mount.mountpoint().display()
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

/// What `run` records on a task's cgroup (as `user.gracekill.*` xattrs) so that
/// `gracekill stop NAME`, `status` and `list` work from anywhere, even after `run` is gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskMeta {
    /// The stop policy (`user.gracekill.policy`).
    pub policy: Option<Policy>,
    /// The main process's pid (`user.gracekill.main`).
    pub main_pid: Option<i32>,
    /// When `run` created the task, seconds since the epoch (`user.gracekill.created`).
    pub created: Option<u64>,
}

/// Parses a small decimal number from an xattr strictly: digits only, at most 20 of them.
fn strict_number<T: std::str::FromStr>(what: &str, v: &str) -> Result<T> {
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Input(format!(
            "invalid stored {what} '{}': not a number",
            v.escape_debug()
        )));
    }
    v.parse().map_err(|_| {
        Error::Input(format!(
            "invalid stored {what} '{}': out of range",
            v.escape_debug()
        ))
    })
}

/// Marks a stop in progress on a cgroup (`user.gracekill.stopping` = `PID STARTTIME`), so that
/// `run` can tell "someone is stopping my task" from "my main process left helpers behind".
/// Removed on drop; a stopper that was SIGKILLed leaves a stale mark that [`stopper`] detects.
#[derive(Debug)]
pub struct StopMark<'a> {
    cg: &'a Cgroup,
}

impl<'a> StopMark<'a> {
    /// Sets the mark (best effort: a cgroup we may not write xattrs on simply goes unmarked).
    pub fn set(cg: &'a Cgroup) -> Option<StopMark<'a>> {
        let me = procfs::process::Process::myself().ok()?.stat().ok()?;
        cg.set_xattr("stopping", &format!("{} {}", me.pid, me.starttime))
            .ok()?;
        Some(StopMark { cg })
    }
}

impl Drop for StopMark<'_> {
    fn drop(&mut self) {
        let _ = self.cg.remove_xattr("stopping");
    }
}

/// The live process that marked a stop in progress on `cg`, as a pidfd, if there is one. The
/// start time recorded with the pid must match, so a recycled pid is not mistaken for it.
pub fn stopper(cg: &Cgroup) -> Option<crate::pidfd::PidFd> {
    let text = cg.get_xattr("stopping").ok()??;
    let (pid, start) = text.split_once(' ')?;
    let pid: i32 = strict_number("stopper pid", pid).ok()?;
    let start: u64 = strict_number("stopper start time", start).ok()?;
    let pidfd = crate::pidfd::PidFd::open(pid).ok()??;
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    (stat.starttime == start && !pidfd.has_exited()).then_some(pidfd)
}

impl TaskMeta {
    /// Reads the task's metadata. Absent attributes are `None`.
    ///
    /// # Errors
    /// [`Error::Input`] for a malformed attribute (a delegated user can write these), naming the
    /// cgroup; OS errors reading them.
    pub fn read(cg: &Cgroup) -> Result<TaskMeta> {
        let ctx = |e: Error| Error::Input(format!("{e} (on '{}')", cg.path().display()));
        let policy = cg
            .get_xattr("policy")?
            .map(|t| Policy::from_text(&t))
            .transpose()
            .map_err(ctx)?;
        let main_pid = cg
            .get_xattr("main")?
            .map(|v| strict_number::<i32>("main pid", &v))
            .transpose()
            .map_err(ctx)?
            .filter(|p| *p > 0);
        let created = cg
            .get_xattr("created")?
            .map(|v| strict_number::<u64>("creation time", &v))
            .transpose()
            .map_err(ctx)?;
        Ok(TaskMeta {
            policy,
            main_pid,
            created,
        })
    }

    /// Writes the attributes that are set.
    ///
    /// # Errors
    /// OS errors naming the cgroup (e.g. a filesystem without user xattrs).
    pub fn write(&self, cg: &Cgroup) -> Result<()> {
        if let Some(p) = &self.policy {
            cg.set_xattr("policy", &p.to_text())?;
        }
        if let Some(pid) = self.main_pid {
            cg.set_xattr("main", &pid.to_string())?;
        }
        if let Some(t) = self.created {
            cg.set_xattr("created", &t.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
