//! The tests' side of the shared test support: everything in `gracekill-testkit` (`testkit/`),
//! plus what only a test of the CLI package can know (the gracekill binary cargo built, the
//! repository's paths, the C helpers it compiles) and the prerequisite macros.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub use gracekill_testkit::*;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// The value of a prerequisite (`Result<T, String>`, the error saying what is missing and who
/// installs it), or: outside CI, `SKIPPED <test binary>: <why>` and the test returns; with
/// `CI=true` (or `GRACEKILL_STRICT=1`), a failure.
#[macro_export]
macro_rules! require {
    ($prerequisite:expr) => {
        match $prerequisite {
            Ok(value) => value,
            Err(why) => {
                if common::strict() {
                    panic!("prerequisite missing (CI=true makes this a failure): {why}");
                }
                eprintln!("SKIPPED {}: {why}", module_path!());
                return;
            }
        }
    };
}

/// Root and cgroup v2, through [`require!`].
#[macro_export]
macro_rules! require_cgroup_v2 {
    () => {
        require!(common::prerequisites())
    };
}

/// The workspace's top directory (the tests are the `cli/` package's; what they read lives here).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ is inside the workspace")
}

/// The gracekill binary: `$GRACEKILL_BIN` (for the VM tests) or the one cargo built.
pub fn bin() -> PathBuf {
    std::env::var_os("GRACEKILL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_gracekill")))
}

/// `gracekill ARGS...` with the environment given, collecting its output.
pub fn gracekill(args: &[&str]) -> Output {
    gracekill_env(args, &[])
}

pub fn gracekill_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run gracekill")
}

/// Compiles the C helper `tests/helpers/NAME.c` (once per test binary run) and returns the
/// executable's path. Panics with the compiler's message if it does not build.
pub fn c_helper(name: &str) -> PathBuf {
    let src = repo().join("tests/helpers").join(format!("{name}.c"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let o = Command::new("cc")
        .args(["-O2", "-Wall", "-Wextra", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-lpthread")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cc for {}: {e} (ci/install-deps installs gcc)",
                src.display()
            )
        });
    assert!(
        o.status.success(),
        "cc {}: {}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Thaws (and removes) a cgroup v1 freezer cgroup when dropped.
pub struct Thaw(pub PathBuf);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
        let t = std::time::Instant::now();
        while std::fs::remove_dir(&self.0).is_err()
            && t.elapsed() < std::time::Duration::from_secs(10)
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Freezes process `pid` of `tc` in a cgroup v1 freezer cgroup of the same name (SIGKILL then
/// cannot end it until the thaw): a process stuck for good, made without FUSE. `None` (the
/// test is skipped) where no v1 freezer is mounted, a failure with `CI=true`.
pub fn freeze_v1(tc: &TestCgroup, pid: i32) -> Option<Thaw> {
    let Some(freezer) = v1_freezer() else {
        assert!(
            !strict(),
            "no cgroup v1 freezer hierarchy mounted: this test needs one"
        );
        eprintln!("SKIPPED: no cgroup v1 freezer mounted");
        return None;
    };
    let v1 = freezer.join(&tc.rel[1..]);
    std::fs::create_dir(&v1).unwrap();
    let thaw = Thaw(v1.clone());
    std::fs::write(v1.join("cgroup.procs"), pid.to_string()).unwrap();
    std::fs::write(v1.join("freezer.state"), "FROZEN").unwrap();
    assert!(
        wait_until(std::time::Duration::from_secs(10), || read(
            &v1.join("freezer.state")
        )
        .trim()
            == "FROZEN"),
        "the v1 freezer did not freeze {pid}"
    );
    Some(thaw)
}

/// Runs `tests/helpers/thread_in_target.py`: a Python process whose leader is in a new test
/// cgroup (a threaded domain) and one of whose threads lives in its threaded child, which then
/// asks for that child's stop (`how`: `cli` runs `what` as gracekill, `capi` loads `what` as
/// libgracekill_capi.so). Asserts the process survived and printed `alive`; returns what it
/// said about the stop.
pub fn stop_with_a_thread_in_the_target(tag: &str, how: &str, what: &Path) -> String {
    let cg = TestCgroup::new(tag);
    let child = cg.child("child");
    std::fs::write(child.join("cgroup.type"), "threaded").unwrap();
    let out = Command::new("python3")
        .arg(repo().join("tests/helpers/thread_in_target.py"))
        .arg(&cg.path)
        .arg(&child)
        .arg(format!("{}/child", cg.rel))
        .arg(how)
        .arg(what)
        .stdin(Stdio::null())
        .output()
        .expect("python3");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && said.contains("alive"),
        "the process was killed ({:?}): {said} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

/// Waits until the processes in the cgroup at `p` and below are exactly `comms` (in any order):
/// each has run its `exec`. A process is in the cgroup from its fork on, still named after its
/// shell (and with the shell's signal dispositions) until it execs: a stop that came first would
/// report, and treat, it as that shell. Panics after 10 s (scaled).
pub fn wait_comms(p: &Path, comms: &[&str]) {
    let mut want: Vec<&str> = comms.to_vec();
    want.sort_unstable();
    let mut seen = Vec::new();
    let ok = wait_until(slow(std::time::Duration::from_secs(10)), || {
        seen = pids_below(p)
            .iter()
            .map(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                comm.strip_suffix('\n').unwrap_or(&comm).to_string()
            })
            .collect::<Vec<_>>();
        seen.sort_unstable();
        seen == want
    });
    assert!(ok, "{}: processes {seen:?}, never {want:?}", p.display());
}

/// `kill -SIG PID` of a process the test started (never anyone else's); asserts it was sent.
pub fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .expect("kill")
            .success(),
        "kill -{sig} {pid}"
    );
}
