//! What the root integration tests (`tests/`) and the benchmark (`benches/`) share: the guard of
//! a cgroup they created ([`Cg`]: killed, emptied and removed on drop, also while unwinding),
//! the test cgroup built on it ([`TestCgroup`], with a scratch directory and processes started
//! inside), prerequisites and their strict mode, test users, time bounds scaled for slow
//! machines. The tests' own module (`tests/common`) adds what only a test of the CLI package can
//! know: the gracekill binary cargo built, the repository's paths, the C helpers.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// With `CI=true` or `GRACEKILL_STRICT=1` a missing prerequisite fails the test.
pub fn strict() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("GRACEKILL_STRICT").is_ok_and(|v| v == "1")
}

/// Root and a writable cgroup2 mount, or why not.
pub fn prerequisites() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("needs root".into());
    }
    let m = mount().ok_or("no cgroup2 mount in /proc/self/mountinfo")?;
    if !m.join("cgroup.procs").exists() {
        return Err(format!("{} is not a cgroup2 mount", m.display()));
    }
    Ok(())
}

/// A program the test runs, or what is missing (ci/install-deps installs every one), for the
/// tests' `require!`: `tool` answers `--version` with success.
pub fn installed(tool: &str) -> Result<(), String> {
    match Command::new(tool).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(format!(
            "{tool} is not installed (ci/install-deps installs it)"
        )),
    }
}

/// The cgroup2 mount point, from mountinfo.
pub fn mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    gracekill::cgroup::parse_mountinfo(&text).map(|(p, _)| p)
}

/// A cgroup v1 hierarchy with the freezer controller, if one is mounted.
pub fn v1_freezer() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.get(sep + 1) == Some(&"cgroup")
            && f.get(sep + 3)
                .is_some_and(|o| o.split(',').any(|x| x == "freezer")))
        .then(|| PathBuf::from(f[4]))
    })
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parses the JSON outcome printed by `--json`.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            stdout(o),
            stderr(o)
        )
    })
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A cgroup a test or the bench created. Dropping it (also while unwinding from a panic) thaws
/// and kills whatever is inside (`cgroup.kill`), waits for it to empty (event-driven) and removes
/// it with everything below it.
#[derive(Debug)]
pub struct Cg {
    /// Relative to the cgroup2 mount: `/gkbench-123/r7`.
    pub rel: String,
    /// Absolute path.
    pub path: PathBuf,
}

impl Cg {
    /// Creates the cgroup `rel` below the mount at `mount` (it must not exist yet).
    ///
    /// # Errors
    /// `mkdir` failing, with the path in the message.
    pub fn create(mount: &Path, rel: &str) -> io::Result<Cg> {
        let path = mount.join(rel.trim_start_matches('/'));
        std::fs::create_dir(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", path.display())))?;
        Ok(Cg {
            rel: rel.to_string(),
            path,
        })
    }

    /// Creates a child cgroup, guarded too.
    ///
    /// # Errors
    /// `mkdir` failing.
    pub fn child(&self, name: &str) -> io::Result<Cg> {
        let rel = format!("{}/{name}", self.rel);
        let path = self.path.join(name);
        std::fs::create_dir(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", path.display())))?;
        Ok(Cg { rel, path })
    }

    /// The pids in `cgroup.procs` (this cgroup only).
    pub fn procs(&self) -> Vec<i32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Does anything live in this cgroup or below?
    pub fn populated(&self) -> bool {
        std::fs::read_to_string(self.path.join("cgroup.events"))
            .is_ok_and(|t| t.contains("populated 1"))
    }

    /// Opens `cgroup.events` for [`wait_empty`].
    ///
    /// # Errors
    /// `open` failing.
    pub fn events(&self) -> io::Result<File> {
        File::open(self.path.join("cgroup.events"))
    }

    /// Writes `cgroup.kill` (only ever on cgroups a test or the bench created).
    ///
    /// # Errors
    /// The write failing.
    pub fn kill(&self) -> io::Result<()> {
        std::fs::write(self.path.join("cgroup.kill"), "1")
    }

    /// Waits up to `timeout` for `populated 0`; returns whether it came.
    ///
    /// # Errors
    /// `cgroup.events` failing to open, read or poll.
    pub fn wait_empty(&self, timeout: Duration) -> io::Result<bool> {
        wait_empty(&self.events()?, Instant::now() + timeout)
    }
}

impl Drop for Cg {
    fn drop(&mut self) {
        if !self.path.exists() {
            return;
        }
        let _ = std::fs::write(self.path.join("cgroup.freeze"), "0");
        if self.populated() {
            let _ = self.kill();
            let _ = self.wait_empty(Duration::from_secs(10));
        }
        // Relative to descriptors, so names that are not UTF-8 or paths past PATH_MAX go too;
        // children first. A just-emptied cgroup can refuse rmdir for a moment (EBUSY).
        let mount = gracekill::Mount::discover().ok();
        for attempt in 0..200 {
            let removed = mount.as_ref().is_some_and(|m| {
                m.open_cgroup(&self.rel)
                    .and_then(|c| c.remove_tree(None))
                    .is_ok()
            });
            if removed || remove_tree(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            if attempt == 199 {
                eprintln!("could not remove {}", self.path.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn remove_tree(path: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Is `populated 0` in this `cgroup.events`? (A removed cgroup reads as empty.)
fn read_empty(ev: &File) -> io::Result<bool> {
    let mut buf = [0u8; 128];
    match ev.read_at(&mut buf, 0) {
        Ok(n) => Ok(!buf[..n].windows(11).any(|w| w == b"populated 1")),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(true),
        Err(e) => Err(e),
    }
}

/// The kernel's own wait: read `cgroup.events`, block in `poll(POLLPRI)` until it changes, read
/// again, until `populated 0` or `deadline`. Returns whether the cgroup emptied.
///
/// # Errors
/// The read or `poll` failing.
pub fn wait_empty(ev: &File, deadline: Instant) -> io::Result<bool> {
    loop {
        if read_empty(ev)? {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let left = deadline - now;
        let ts = rustix::time::Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [rustix::event::PollFd::new(
            ev,
            rustix::event::PollFlags::PRI,
        )];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// A cgroup made for one test, with a scratch directory for the files its processes write.
/// Dropped, its [`Cg`] guard kills what is left, waits for it to empty and removes it, so a
/// failing test leaks nothing.
pub struct TestCgroup {
    /// Relative to the mount: `/gktest-123-4-name`.
    pub rel: String,
    /// Absolute path.
    pub path: PathBuf,
    /// A scratch directory for files the test's processes write.
    pub scratch: PathBuf,
    guard: Option<Cg>,
}

impl TestCgroup {
    /// Creates `/gktest-<pid>-<n>-<tag>` below the mount.
    ///
    /// # Panics
    /// Without a cgroup2 mount, or when the cgroup cannot be made.
    pub fn new(tag: &str) -> TestCgroup {
        let m = mount().expect("cgroup2 mount");
        let rel = format!(
            "/gktest-{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let guard = Cg::create(&m, &rel).unwrap_or_else(|e| panic!("{e}"));
        let scratch = std::env::temp_dir().join(&rel[1..]);
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        TestCgroup {
            rel,
            path: guard.path.clone(),
            scratch,
            guard: Some(guard),
        }
    }

    /// A child cgroup (created) as a path.
    pub fn child(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// A file in the scratch directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }

    /// The pids in this cgroup and below.
    pub fn pids(&self) -> Vec<i32> {
        pids_below(&self.path)
    }

    /// Does anything live in this cgroup or below?
    pub fn populated(&self) -> bool {
        self.guard.as_ref().is_some_and(Cg::populated)
    }

    /// Starts `script` under bash, joined to this cgroup before it runs. Its stdout is piped:
    /// wait for its readiness line with [`Proc::wait_line`].
    pub fn spawn(&self, script: &str) -> Proc {
        self.spawn_in(&self.path, script)
    }

    /// [`TestCgroup::spawn`] into `dir`, a cgroup below this one.
    pub fn spawn_in(&self, dir: &Path, script: &str) -> Proc {
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(r#"echo 0 > "$GK_PROCS" && exec bash -c "$GK_SCRIPT""#)
            .env("GK_PROCS", dir.join("cgroup.procs"))
            .env("GK_SCRIPT", script)
            .env("SCRATCH", &self.scratch)
            .current_dir(&self.scratch)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0);
        Proc::new(c.spawn().expect("spawn bash"))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The processes first (they may be writing to the scratch directory), then their files.
        drop(self.guard.take());
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// The pids in the cgroup at `p` and below.
pub fn pids_below(p: &Path) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_to_string(p.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(pids_below(&e.path()));
            }
        }
    }
    out
}

/// A process the test started; reaped on drop.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn new(mut child: Child) -> Proc {
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Proc { child, lines: rx }
    }

    pub fn pid(&self) -> i32 {
        self.child.id().cast_signed()
    }

    /// Waits for the process to print `want` (its readiness line); panics after 10 s (scaled
    /// on slow machines: starting hundreds of processes under emulation takes that long).
    pub fn wait_line(&self, want: &str) {
        let deadline = Instant::now() + slow(Duration::from_secs(10));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.trim() == want => return,
                Ok(_) => continue,
                Err(_) => panic!("process {} never printed '{want}'", self.pid()),
            }
        }
    }

    /// Reaps the process (after the test stopped it).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The cgroup guard kills the task; we only reap our direct child if it is gone.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Is `pid` alive and not a zombie?
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Waits until `cond` holds, up to `limit`; tests only.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Reads a file the app wrote, or "" if it did not.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A refusal as users must see it: exit 2, one line on stderr starting `gracekill: `, nothing on
/// stdout.
pub fn assert_refused(out: &Output, what: &str) {
    assert_refused_with(out, what, 2);
}

/// [`assert_refused`] with another exit code (`run` refuses with 125).
pub fn assert_refused_with(out: &Output, what: &str, code: i32) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit {:?}, stderr: {err}",
        out.status.code()
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{what}: one line, got: {err}"
    );
    assert!(err.starts_with("gracekill: "), "{what}: {err}");
    assert!(
        !err.trim_end_matches('\n').chars().any(char::is_control),
        "{what}: control characters are said escaped: {err:?}"
    );
    assert!(out.stdout.is_empty(), "{what}: {}", stdout(out));
}

/// How much slower than a native machine the tests run: `$GRACEKILL_TEST_SLOW` (a factor, at
/// least 1; the VM tests set it under software emulation), 1 when unset or unparsable.
pub fn slow_factor() -> f64 {
    std::env::var("GRACEKILL_TEST_SLOW")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f >= 1.0)
        .unwrap_or(1.0)
}

/// A time bound a test asserts or waits for, scaled by [`slow_factor`]: upper bounds that
/// measure how fast the machine is, and graces that must outlast what the app does in them (a
/// flush, dying). Lower bounds (a grace that must be waited out) stay as they are.
pub fn slow(d: Duration) -> Duration {
    d.mul_f64(slow_factor())
}

/// The running kernel's (major, minor) version, from `/proc/sys/kernel/osrelease`.
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0)
    });
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Is the running kernel at least `major.minor`?
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    kernel_version() >= (major, minor)
}

/// A user made for this test; `userdel` on drop. Declared before the cgroup guards, so it is
/// dropped after them: by then none of its processes is left.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
}

impl TestUser {
    /// A new user, or `None` (the test then skips, outside CI) without useradd or setpriv.
    pub fn try_new() -> Option<TestUser> {
        if !Path::new("/usr/sbin/useradd").exists() || !Path::new("/usr/bin/setpriv").exists() {
            assert!(
                !strict(),
                "useradd or setpriv missing (CI=true makes this a failure)"
            );
            eprintln!("SKIPPED: no useradd/setpriv");
            return None;
        }
        Some(TestUser::new())
    }

    /// Creates the user (`useradd`).
    #[allow(
        clippy::new_without_default,
        reason = "creating a user is an act, not a default"
    )]
    pub fn new() -> TestUser {
        let name = format!(
            "gk{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let st = Command::new("useradd")
            .args(["-M", "-N", "-s", "/usr/sbin/nologin", &name])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {name}");
        let out = Command::new("id").args(["-u", &name]).output().unwrap();
        let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        TestUser { name, uid }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// Starts `argv` as `uid`, after moving into the cgroup `cg` (as root, before dropping
/// privileges: the user's session lives inside its delegated subtree, as under systemd).
pub fn as_user(uid: u32, cg: Option<&Path>, argv: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new("bash");
    let join = if cg.is_some() {
        r#"echo 0 > "$GK_JOIN/cgroup.procs" && "#
    } else {
        ""
    };
    c.arg("-c")
        .arg(format!(
            r#"{join}exec setpriv --reuid="$GK_UID" --regid="$GK_UID" --clear-groups -- "$@""#
        ))
        .arg("bash")
        .args(argv)
        .env("GK_UID", uid.to_string())
        .stdin(Stdio::null());
    if let Some(cg) = cg {
        c.env("GK_JOIN", cg);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

impl Proc {
    /// Waits for a line starting with `prefix` and returns the rest of it; panics after 10 s.
    pub fn wait_prefix(&self, prefix: &str) -> String {
        let deadline = Instant::now() + slow(Duration::from_secs(10));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l[prefix.len()..].trim().to_string(),
                Ok(_) => continue,
                Err(_) => panic!("process {} never printed '{prefix}...'", self.pid()),
            }
        }
    }
}
