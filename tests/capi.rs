//! The C ABI (`capi/src/lib.rs`, `include/gracekill.h`): argument checking and per-thread errors
//! called from Rust, real stops from many threads at once with per-call log callbacks, and the
//! C++ example compiled with g++ against the header and the library (static, and shared through
//! the packaged `gracekill.pc`), and the C example linked shared and fully static against the
//! Debian packages (`ci/package`), run on real cgroups.

mod common;

use std::ffi::{CStr, CString, c_char, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{TestCgroup, read};
use gracekill_capi::*;

/// Same flushing app as the other tests, with a 1 s flush.
const FLUSHING_APP: &str = r#"
trap 'trap "" TERM; sleep 1; echo flushed > "$SCRATCH/marker"; exit 0' TERM
echo ready
while :; do sleep 1 & wait $!; done
"#;

fn policy() -> gracekill_policy {
    let mut p = std::mem::MaybeUninit::<gracekill_policy>::uninit();
    // SAFETY: `p` is writable storage for one policy, which the call fills completely.
    assert_eq!(unsafe { gracekill_policy_init(p.as_mut_ptr()) }, 0);
    // SAFETY: the call returned 0, so it initialised every field.
    unsafe { p.assume_init() }
}

fn options() -> gracekill_stop_options {
    let mut o = std::mem::MaybeUninit::<gracekill_stop_options>::uninit();
    // SAFETY: `o` is writable storage for one options struct, which the call fills completely.
    assert_eq!(unsafe { gracekill_stop_options_init(o.as_mut_ptr()) }, 0);
    // SAFETY: the call returned 0, so it initialised every field.
    unsafe { o.assume_init() }
}

fn last_error() -> String {
    let p = gracekill_last_error();
    assert!(!p.is_null(), "a failed call leaves a message");
    // SAFETY: a non-NULL last error is a NUL-terminated string, valid until the next call.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// `gracekill_stop` on `task`; returns the rc and, on success, the outcome (freed by the caller
/// through [`Outcome::drop`]).
fn stop(
    task: &str,
    p: Option<&gracekill_policy>,
    o: Option<&gracekill_stop_options>,
) -> (i32, Outcome) {
    let task = CString::new(task).unwrap();
    let mut out: *mut gracekill_outcome = std::ptr::dangling_mut();
    // SAFETY: a NUL-terminated task, NULL or init-filled structs that outlive the call, and
    // writable storage for the outcome pointer.
    let rc = unsafe {
        gracekill_stop(
            task.as_ptr(),
            p.map_or(std::ptr::null(), |p| p as *const _),
            o.map_or(std::ptr::null(), |o| o as *const _),
            &mut out,
        )
    };
    assert_eq!(rc < 0, out.is_null(), "outcome is set exactly on success");
    (rc, Outcome(out))
}

struct Outcome(*mut gracekill_outcome);

impl Outcome {
    fn get(&self) -> &gracekill_outcome {
        assert!(!self.0.is_null());
        // SAFETY: a non-NULL outcome from gracekill_stop lives until Drop frees it.
        unsafe { &*self.0 }
    }
    fn json(&self) -> serde_json::Value {
        // SAFETY: an outcome's strings are NUL-terminated and live as long as it does.
        let s = unsafe { CStr::from_ptr(self.get().json) }.to_str().unwrap();
        serde_json::from_str(s).unwrap()
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        // SAFETY: freed once, here; NULL (a failed stop) is ignored by the call.
        unsafe { gracekill_outcome_free(self.0) };
    }
}

fn cstr(p: *const c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: callers pass strings the library returned or lent: NUL-terminated and alive.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[test]
fn policy_init_gives_the_cli_defaults() {
    let p = policy();
    assert_eq!(p.struct_size as usize, size_of::<gracekill_policy>());
    assert_eq!(
        (p.signal, p.grace_ms, p.kill_timeout_ms),
        (15, 30_000, 10_000)
    );
    assert_eq!(
        (p.then_len, p.kill_mode, p.sighup),
        (0, GRACEKILL_KILL_MODE_CONTROL_GROUP, false)
    );
    assert_eq!(gracekill_abi_version(), GRACEKILL_ABI_VERSION);
    assert_eq!(cstr(gracekill_version()), env!("CARGO_PKG_VERSION"));
    // SAFETY: NULL is a documented input (refused with -EINVAL).
    let rc = unsafe { gracekill_policy_init(std::ptr::null_mut()) };
    assert_eq!(rc, -libc::EINVAL);
}

/// A change that makes a policy invalid.
type Change = Box<dyn Fn(&mut gracekill_policy)>;

#[test]
fn bad_arguments_are_refused_with_einval_and_a_message() {
    let mut out: *mut gracekill_outcome = std::ptr::null_mut();
    // SAFETY: NULL arguments are documented inputs (refused with -EINVAL).
    let rc = unsafe {
        gracekill_stop(
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            &mut out,
        )
    };
    assert_eq!(rc, -libc::EINVAL);
    assert!(last_error().contains("cgroup is NULL"));
    let task = CString::new("/x").unwrap();
    // SAFETY: NULL arguments are documented inputs (refused with -EINVAL).
    let rc = unsafe {
        gracekill_stop(
            task.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, -libc::EINVAL);

    // A zeroed struct (never initialized) is refused, not read as a policy.
    let mut p = policy();
    p.struct_size = 0;
    assert_eq!(stop("/x", Some(&p), None).0, -libc::EINVAL);
    assert!(
        last_error().contains("gracekill_policy_init"),
        "{}",
        last_error()
    );

    let cases: Vec<(&str, Change)> = vec![
        ("invalid signal", Box::new(|p| p.signal = 0)),
        ("invalid signal", Box::new(|p| p.signal = 32)),
        ("SIGKILL cannot be a stop step", Box::new(|p| p.signal = 9)),
        ("kill_mode 7", Box::new(|p| p.kill_mode = 7)),
        ("30 days", Box::new(|p| p.grace_ms = 31 * 24 * 3600 * 1000)),
        ("then is NULL", Box::new(|p| p.then_len = 1)),
        ("then_len is 99", Box::new(|p| p.then_len = 99)),
    ];
    for (want, change) in cases {
        let mut p = policy();
        change(&mut p);
        let (rc, _) = stop("/x", Some(&p), None);
        assert_eq!(rc, -libc::EINVAL, "{want}");
        assert!(last_error().contains(want), "{want}: {}", last_error());
    }
    let bad_ladder = [gracekill_step {
        signal: 9,
        grace_ms: 1,
    }];
    let mut p = policy();
    p.then = bad_ladder.as_ptr();
    p.then_len = 1;
    assert_eq!(stop("/x", Some(&p), None).0, -libc::EINVAL);

    let mut o = options();
    o.main_pid = -1;
    assert_eq!(stop("/x", None, Some(&o)).0, -libc::EINVAL);
}

#[test]
fn last_error_is_per_thread_and_cleared_by_success() {
    let mut p = policy();
    p.signal = 0;
    assert_eq!(stop("/x", Some(&p), None).0, -libc::EINVAL);
    let mine = last_error();
    std::thread::spawn(|| {
        assert!(
            gracekill_last_error().is_null(),
            "another thread's error leaked"
        );
        let mut p = policy();
        p.kill_mode = 9;
        assert_eq!(stop("/x", Some(&p), None).0, -libc::EINVAL);
        assert!(last_error().contains("kill_mode"));
    })
    .join()
    .unwrap();
    assert_eq!(last_error(), mine, "unchanged by the other thread");
    let _ = policy();
    assert!(
        gracekill_last_error().is_null(),
        "a successful call clears it"
    );
}

#[test]
fn refusals_and_missing_cgroups_match_the_cli() {
    require_cgroup_v2!();
    let (rc, _) = stop("/", None, None);
    assert_eq!(rc, -libc::EINVAL);
    assert!(
        last_error().contains("refusing to stop the root cgroup"),
        "{}",
        last_error()
    );

    // The cgroup holding this very process (or an ancestor of it) is refused as by the CLI.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .to_string();
    if own != "/" {
        let (rc, _) = stop(&own, None, None);
        assert_eq!(rc, -libc::EINVAL, "own cgroup {own}");
        assert!(last_error().contains("refusing"), "{}", last_error());
    }

    let (rc, _) = stop("/gktest-no-such-cgroup-here", None, None);
    assert_eq!(rc, -libc::ENOENT, "{}", last_error());
    let (rc, _) = stop("/a/../b", None, None);
    assert_eq!(rc, -libc::EINVAL);
    let (rc, _) = stop("/etc", None, None);
    assert_eq!(rc, -libc::EINVAL, "outside the mount: {}", last_error());
}

/// Log lines collected by one stop's callback, and the thread it ran on.
#[derive(Default)]
struct Collected {
    lines: Mutex<Vec<(i32, String, std::thread::ThreadId)>>,
}

unsafe extern "C" fn collect(
    user: *mut c_void,
    level: i32,
    target: *const c_char,
    message: *const c_char,
) {
    // SAFETY: `user` is the &Collected the test passed as log_user_data; it outlives the stop.
    let c = unsafe { &*(user as *const Collected) };
    let line = format!("{}: {}", cstr(target), cstr(message));
    c.lines
        .lock()
        .unwrap()
        .push((level, line, std::thread::current().id()));
}

#[test]
fn many_threads_stop_many_cgroups_each_with_its_own_log() {
    require_cgroup_v2!();
    let cgs: Vec<TestCgroup> = (0..4)
        .map(|i| TestCgroup::new(&format!("capi{i}")))
        .collect();
    let mut procs = Vec::new();
    for cg in &cgs {
        std::fs::write(cg.file("app.sh"), FLUSHING_APP).unwrap();
        let p = cg.spawn(r#"bash "$SCRATCH/app.sh"; echo done"#);
        p.wait_line("ready");
        procs.push(p);
    }
    let t = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = cgs
            .iter()
            .map(|cg| {
                s.spawn(move || {
                    let logs = Collected::default();
                    let mut p = policy();
                    p.grace_ms = 10_000;
                    let mut o = options();
                    o.log_fn = Some(collect);
                    o.log_user_data = &logs as *const Collected as *mut c_void;
                    o.log_level = GRACEKILL_LOG_DEBUG;
                    let (rc, out) = stop(&cg.rel, Some(&p), Some(&o));
                    assert_eq!(rc, 0, "{}: {}", cg.rel, last_error());
                    let c = out.get();
                    assert_eq!(c.verdict, GRACEKILL_VERDICT_GRACEFUL);
                    assert_eq!((c.exit_code, cstr(c.verdict_name)), (0, "graceful".into()));
                    assert_eq!(cstr(c.cgroup), cg.rel);
                    assert!(
                        c.emptied && c.empty_at_ms > 900.0,
                        "the 1 s flush was waited for"
                    );
                    assert_eq!(c.steps_len, 1);
                    // SAFETY: steps_len is 1: `steps` points at one step the outcome owns.
                    let step = unsafe { &*c.steps };
                    assert_eq!(
                        (step.signal, cstr(step.signal_name)),
                        (15, "SIGTERM".into())
                    );
                    assert!(step.signalled >= 2, "wrapper and app");
                    assert!(step.via.is_null());
                    assert_eq!((c.killed_len, c.survivors_len), (0, 0));
                    let v = out.json();
                    assert_eq!(v["outcome"], "graceful");
                    assert_eq!(v["cgroup"], cg.rel.as_str());
                    assert_eq!(
                        v["membership_proof"].as_str().unwrap(),
                        cstr(c.membership_proof)
                    );
                    // The callback ran on this thread only, and saw this stop's events only.
                    let lines = logs.lines.lock().unwrap();
                    let me = std::thread::current().id();
                    assert!(lines.iter().all(|(_, _, t)| *t == me));
                    let sent: Vec<_> = lines
                        .iter()
                        .filter(|(_, l, _)| l.contains("sent stop signal"))
                        .collect();
                    assert_eq!(sent.len(), 1, "{lines:?}");
                    assert_eq!(sent[0].0, GRACEKILL_LOG_DEBUG);
                    assert!(sent[0].1.starts_with("gracekill::stop: sent stop signal"));
                    assert!(
                        sent[0].1.contains(&format!("cgroup={}", cg.rel)),
                        "{:?}",
                        sent[0]
                    );
                    assert!(sent[0].1.contains("signal=SIGTERM"));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(3500),
        "four 1 s stops ran concurrently, not one after another: {took:?}"
    );
    for (cg, mut p) in cgs.iter().zip(procs) {
        assert_eq!(read(&cg.file("marker")).trim(), "flushed");
        assert!(!cg.populated());
        p.wait();
    }
}

#[test]
fn ladder_and_final_kill_are_reported() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("capikill");
    // Ignores TERM and INT: only the final kill ends it.
    let mut proc_ = cg.spawn(r#"trap "" TERM INT; echo ready; while :; do sleep 1; done"#);
    proc_.wait_line("ready");
    let ladder = [gracekill_step {
        signal: libc::SIGINT,
        grace_ms: 100,
    }];
    let mut p = policy();
    p.grace_ms = 100;
    p.then = ladder.as_ptr();
    p.then_len = 1;
    p.kill_timeout_ms = 5000;
    let mut o = options();
    o.force_fallback = true;
    let (rc, out) = stop(&cg.path.to_string_lossy(), Some(&p), Some(&o));
    assert_eq!(rc, 0, "{}", last_error());
    let c = out.get();
    assert_eq!((c.verdict, c.exit_code), (GRACEKILL_VERDICT_KILLED, 3));
    // SAFETY: the outcome owns `steps_len` steps at `steps` while `out` lives.
    let steps = unsafe { std::slice::from_raw_parts(c.steps, c.steps_len) };
    let names: Vec<String> = steps.iter().map(|s| cstr(s.signal_name)).collect();
    assert_eq!(names, ["SIGTERM", "SIGINT", "SIGKILL"]);
    assert_eq!(steps[2].signal, 9);
    assert_eq!(cstr(steps[2].via), "fallback");
    assert!(c.killed_len >= 1);
    // SAFETY: the outcome owns `killed_len` entries at `killed` while `out` lives.
    let killed = unsafe { std::slice::from_raw_parts(c.killed, c.killed_len) };
    assert!(
        killed.iter().any(|k| cstr(k.comm) == "bash"),
        "{:?}",
        out.json()
    );
    assert_eq!(out.json()["outcome"], "killed");
    drop(out);
    assert!(!cg.populated());
    proc_.wait();
}

/// The exit timeline through the C ABI: each process's wait status, usable with the C
/// library's `WIFEXITED`/`WTERMSIG`, once its parent (this test, on another thread) reaps it.
#[test]
fn exits_carry_wait_statuses() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("capiexits");
    // The app reaps its child before exiting: an orphan's status waits for init to reap it,
    // which some inits do only every second or two (this CI machine's does).
    let mut app = cg.spawn(r#"trap 'wait; exit 4' TERM; echo ready; sleep 1000 & wait"#);
    app.wait_line("ready");
    // Its `sleep` forked and exec'd (a child still named `bash` would be reported so).
    common::wait_comms(&cg.path, &["bash", "sleep"]);
    let app_pid = app.pid();
    // The parent reaps as a supervisor would, while the stop runs.
    let reaper = std::thread::spawn(move || app.wait());
    let mut p = policy();
    p.grace_ms = 5000;
    let (rc, out) = stop(&cg.path.to_string_lossy(), Some(&p), None);
    assert_eq!(rc, 0, "{}", last_error());
    let c = out.get();
    assert_eq!(c.verdict, GRACEKILL_VERDICT_GRACEFUL, "{:?}", out.json());
    // SAFETY: the outcome owns `exits_len` entries at `exits` while `out` lives.
    let exits = unsafe { std::slice::from_raw_parts(c.exits, c.exits_len) };
    assert_eq!(exits.len(), 2, "{:?}", out.json());
    let app_exit = exits
        .iter()
        .find(|e| e.pid == app_pid)
        .unwrap_or_else(|| panic!("no entry for the app: {:?}", out.json()));
    assert_eq!(cstr(app_exit.comm), "bash");
    assert!(app_exit.at_ms >= 0.0 && app_exit.at_ms < c.elapsed_ms);
    if common::kernel_at_least(6, 15) {
        assert!(app_exit.status_known, "{:?}", out.json());
        assert!(libc::WIFEXITED(app_exit.wait_status));
        assert_eq!(libc::WEXITSTATUS(app_exit.wait_status), 4);
        let sleep = exits.iter().find(|e| e.pid != app_pid).unwrap();
        assert_eq!(cstr(sleep.comm), "sleep");
        assert!(sleep.status_known, "{:?}", out.json());
        assert!(libc::WIFSIGNALED(sleep.wait_status));
        assert_eq!(libc::WTERMSIG(sleep.wait_status), libc::SIGTERM);
    } else {
        assert!(exits.iter().all(|e| !e.status_known));
    }
    assert_eq!(reaper.join().unwrap().code(), Some(4));
}

#[test]
fn a_null_policy_applies_the_tasks_trusted_policy_and_ignores_forgeries() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("capistored");
    // What a root `run` records, and what a task could forge next to it.
    let set = |name: &str, value: &str| {
        let st = Command::new("python3")
            .args([
                "-c",
                "import os,sys; os.setxattr(sys.argv[1], sys.argv[2], sys.argv[3].encode())",
            ])
            .arg(&cg.path)
            .args([name, value])
            .status()
            .unwrap();
        assert!(st.success());
    };
    // The grace is what the app needs to end on SIGINT (its `sleep` dies, then bash runs its
    // trap): milliseconds here, over half a second in an emulated VM guest.
    let grace = common::slow(Duration::from_millis(1500)).as_millis();
    set(
        "trusted.gracekill.policy",
        &format!("v1 steps=2:{grace} sighup=0 kill-timeout=3000 kill-mode=control-group"),
    );
    set(
        "user.gracekill.policy",
        "v1 steps=28:20000 sighup=0 kill-timeout=20000 kill-mode=process",
    );
    // Ignores TERM, ends on INT: only the stored policy (SIGINT) stops it gracefully.
    let mut p =
        cg.spawn(r#"trap "" TERM; trap "exit 0" INT; echo ready; while :; do sleep 0.1; done"#);
    p.wait_line("ready");
    let t = Instant::now();
    let (rc, out) = stop(&cg.path.to_string_lossy(), None, None);
    assert_eq!(rc, 0, "{}", last_error());
    let c = out.get();
    assert_eq!(cstr(c.policy_source), "stored", "{}", out.json());
    assert_eq!(c.verdict, GRACEKILL_VERDICT_GRACEFUL, "{}", out.json());
    assert_eq!(out.json()["steps"][0]["signal"], "SIGINT");
    assert_eq!(c.error_count, 0);
    assert!(c.first_error.is_null());
    assert!(t.elapsed() < common::slow(Duration::from_secs(3)));
    drop(out);
    p.wait();
}

/// Like `gracekill stop`, the C ABI removes the emptied cgroup of a task whose `gracekill run`
/// is gone (its trusted `owner` record names a dead process): no one else would.
#[test]
fn an_orphaned_task_of_a_dead_run_is_stopped_and_its_cgroup_removed() {
    require_cgroup_v2!();
    let tc = TestCgroup::new("capiorphan");
    let task = tc.child("task");
    // What a root `run` records, naming a process that no longer exists.
    let st = Command::new("python3")
        .args([
            "-c",
            "import os,sys; os.setxattr(sys.argv[1], 'trusted.gracekill.owner', b'999999 1')",
        ])
        .arg(&task)
        .status()
        .unwrap();
    assert!(st.success());
    let mut p = tc.spawn_in(&task, FLUSHING_APP);
    p.wait_line("ready");
    let (rc, out) = stop(&task.to_string_lossy(), None, None);
    assert_eq!(rc, 0, "{}", last_error());
    assert_eq!(
        out.get().verdict,
        GRACEKILL_VERDICT_GRACEFUL,
        "{}",
        out.json()
    );
    assert_eq!(out.json()["cgroup_removed"], true, "{}", out.json());
    assert_eq!(read(&tc.file("marker")).trim(), "flushed");
    assert!(!task.exists(), "the orphaned task's cgroup is gone");
    drop(out);
    p.wait();
}

// -- the C++ example, compiled with g++ ---------------------------------------------------------

/// `target/debug` (or release): where cargo put libgracekill.a and .so for this test run.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn repo() -> &'static Path {
    common::repo()
}

/// g++ and pkg-config, or why not (a failure in CI).
fn toolchain() -> Result<(), String> {
    for tool in ["g++", "pkg-config"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Err(format!(
                "{tool} is not installed (ci/install-deps installs it)"
            ));
        }
    }
    for lib in ["libgracekill_capi.a", "libgracekill_capi.so"] {
        if !target_dir().join(lib).exists() {
            return Err(format!("{lib} was not built in {}", target_dir().display()));
        }
    }
    Ok(())
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn header_compiles_cleanly_as_c_and_cxx() {
    require!(toolchain());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let c = dir.join("gk_header_check.c");
    std::fs::write(
        &c,
        "#include <gracekill.h>\n\
         int main(void) { struct gracekill_policy p; return gracekill_policy_init(&p); }\n",
    )
    .unwrap();
    let exe = dir.join("gk_header_check");
    for (compiler, std) in [("gcc", "-std=c99"), ("g++", "-std=c++11")] {
        let mut cmd = Command::new(compiler);
        cmd.args([std, "-Wall", "-Wextra", "-pedantic", "-Werror", "-pthread"])
            .arg("-I")
            .arg(repo().join("include"));
        if compiler == "g++" {
            cmd.args(["-x", "c++"]);
        }
        cmd.arg(&c)
            .args(["-x", "none"])
            .arg(target_dir().join("libgracekill_capi.a"))
            .args(["-ldl", "-lm", "-o"])
            .arg(&exe);
        run(&mut cmd);
        assert!(Command::new(&exe).status().unwrap().success());
    }
}

/// The example's per-task lines and JSON outcomes.
fn check_example_output(stdout: &str, tasks: usize) {
    assert!(stdout.starts_with(&format!("libgracekill {}", env!("CARGO_PKG_VERSION"))));
    let ticks: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("main thread stayed responsive: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the responsiveness line");
    assert!(
        ticks >= 5,
        "the main thread kept running during the stops: {ticks}"
    );
    let task_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("task ")).collect();
    assert_eq!(task_lines.len(), tasks, "{stdout}");
    for l in &task_lines {
        assert!(l.contains("verdict=graceful exit_code=0"), "{l}");
        assert!(l.contains("flushed=yes"), "the app flushed: {l}");
        assert!(!l.contains("logs=0"), "the log callback got events: {l}");
    }
    let outcomes: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("json: "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    assert_eq!(outcomes.len(), tasks);
    for v in outcomes {
        assert_eq!(v["outcome"], "graceful");
        let empty_at = v["empty_at_ms"].as_f64().unwrap();
        assert!(
            (250.0..4000.0).contains(&empty_at),
            "the 300 ms flush was waited for: {v}"
        );
        assert!(v["steps"][0]["signalled"].as_u64().unwrap() >= 2, "{v}");
    }
    assert!(stdout.contains("log debug gracekill::stop: sent stop signal"));
}

#[test]
fn cxx_example_stops_tasks_on_worker_threads_static_link() {
    require_cgroup_v2!();
    require!(toolchain());
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stop_on_worker_static");
    run(Command::new("g++")
        .args([
            "-std=c++17",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pthread",
            "-I",
        ])
        .arg(repo().join("include"))
        .arg(repo().join("examples/cpp/stop_on_worker.cpp"))
        .arg(target_dir().join("libgracekill_capi.a"))
        .args(["-ldl", "-lm", "-o"])
        .arg(&exe));
    // The example's cgroups go below this test's cgroup, so a failing example leaks nothing.
    let parent = TestCgroup::new("cxx");
    let out = run(Command::new(&exe)
        .args(["--tasks", "3", "--grace-ms", "10000", "--parent"])
        .arg(&parent.path));
    check_example_output(&String::from_utf8_lossy(&out.stdout), 3);
    assert!(
        std::fs::read_dir(&parent.path)
            .unwrap()
            .flatten()
            .all(|e| !e.file_type().unwrap().is_dir()),
        "the example removed the cgroups it created"
    );
}

/// The Debian packages `ci/package` built (target/debian), unpacked into one directory that
/// stands for an installed system: what `apt install ./*.deb` puts under `/`. pkg-config reads
/// the packaged `gracekill.pc` with that directory as its sysroot, so the flags are exactly those
/// an embedder gets on a real install, with the prefix in front.
struct Packaged {
    root: PathBuf,
    pc_dir: PathBuf,
    lib_dir: PathBuf,
}

/// `tag` names the directory, so tests running at once do not unpack over each other.
fn packaged(tag: &str) -> Result<Packaged, String> {
    let debs = target_dir().parent().unwrap().join("debian");
    let names = ["gracekill_", "libgracekill0_", "libgracekill-dev_"];
    let mut found = Vec::new();
    // Packages older than the C ABI's source would test an old library.
    let newest_source = ["capi/src/lib.rs", "include/gracekill.h"]
        .iter()
        .filter_map(|f| {
            std::fs::metadata(repo().join(f))
                .and_then(|m| m.modified())
                .ok()
        })
        .max()
        .expect("the C ABI's source");
    for name in names {
        let matches: Vec<PathBuf> = std::fs::read_dir(&debs)
            .map_err(|e| {
                format!(
                    "{}: {e} (ci/package builds the packages; ci/test runs it)",
                    debs.display()
                )
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let f = p.file_name().unwrap().to_string_lossy();
                f.starts_with(name) && f.ends_with(".deb")
            })
            .collect();
        let [deb] = &matches[..] else {
            return Err(format!(
                "expected one {name}*.deb in {}, found {matches:?} (run ci/package)",
                debs.display()
            ));
        };
        if std::fs::metadata(deb).and_then(|m| m.modified()).ok() < Some(newest_source) {
            return Err(format!(
                "{} is older than the C ABI's source (run ci/package)",
                deb.display()
            ));
        }
        found.push(deb.clone());
    }
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gk-debroot-{tag}"));
    let _ = std::fs::remove_dir_all(&root);
    for deb in &found {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
    }
    let triplet = run(Command::new("dpkg-architecture").arg("-qDEB_HOST_MULTIARCH")).stdout;
    let lib_dir = root
        .join("usr/lib")
        .join(String::from_utf8(triplet).unwrap().trim());
    Ok(Packaged {
        pc_dir: lib_dir.join("pkgconfig"),
        lib_dir,
        root,
    })
}

impl Packaged {
    /// `pkg-config ARGS gracekill` against the unpacked packages.
    fn pkg_config(&self, args: &[&str]) -> Vec<String> {
        let out = run(Command::new("pkg-config")
            .env("PKG_CONFIG_SYSROOT_DIR", &self.root)
            .env("PKG_CONFIG_LIBDIR", &self.pc_dir)
            .env_remove("PKG_CONFIG_PATH")
            .args(args)
            .arg("gracekill"));
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Runs a program built against the packages; the shared library comes from them too (on a
    /// real install ld.so finds it by its SONAME; vm-tests guest2 runs it that way).
    fn command(&self, exe: &Path) -> Command {
        let mut c = Command::new(exe);
        c.env("LD_LIBRARY_PATH", &self.lib_dir);
        c
    }
}

fn readelf_dynamic(exe: &Path) -> String {
    String::from_utf8(run(Command::new("readelf").arg("-d").arg(exe)).stdout).unwrap()
}

/// A program calling `gracekill_stop()` from its main thread while another of its threads lives
/// in the target (a threaded child of the program's own cgroup) is refused with `-EINVAL`: the
/// target holds part of the caller, and a stop would signal the whole program through that
/// thread. (A Python program through ctypes, against the library cargo built: the test process
/// itself must not move into the target.)
#[test]
fn c_program_whose_other_thread_is_in_the_target_is_refused() {
    require_cgroup_v2!();
    let so = target_dir().join("libgracekill_capi.so");
    require!(if so.exists() {
        Ok(())
    } else {
        Err(format!(
            "{} was not built (ci/test builds it)",
            so.display()
        ))
    });
    let said = common::stop_with_a_thread_in_the_target("thr-self", "capi", &so);
    assert!(said.contains("rc -22"), "{said}");
}

#[test]
fn c_program_links_shared_and_fully_static_against_the_packaged_library() {
    require_cgroup_v2!();
    require!(toolchain());
    let pkg = require!(packaged("c"));
    assert_eq!(
        pkg.pkg_config(&["--modversion"]),
        [env!("CARGO_PKG_VERSION")]
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let src = repo().join("examples/c/stop_task.c");
    let shared = dir.join("stop_task_shared");
    let fully_static = dir.join("stop_task_static");
    // An embedder's two link lines, with no flag but pkg-config's (warnings are errors, so the
    // header is clean C99 too).
    let strict_c = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"];
    run(Command::new("cc")
        .args(strict_c)
        .arg("-o")
        .arg(&shared)
        .arg(&src)
        .args(pkg.pkg_config(&["--cflags", "--libs"])));
    run(Command::new("cc")
        .arg("-static")
        .args(strict_c)
        .arg("-o")
        .arg(&fully_static)
        .arg(&src)
        .args(pkg.pkg_config(&["--static", "--cflags", "--libs"])));

    // The shared program records the SONAME, never the unversioned -dev symlink; the static one
    // needs nothing at all at run time.
    let d = readelf_dynamic(&shared);
    assert!(d.contains("Shared library: [libgracekill.so.0]"), "{d}");
    assert!(!d.contains("[libgracekill.so]"), "{d}");
    assert!(
        readelf_dynamic(&fully_static).contains("no dynamic section"),
        "fully static"
    );

    for exe in [&shared, &fully_static] {
        // A task that flushes on SIGTERM: both stop it gracefully, and it flushed.
        let cg = TestCgroup::new("cprog");
        let app = cg.spawn(FLUSHING_APP);
        app.wait_line("ready");
        let out = run(pkg.command(exe).arg(&cg.path).arg("20000"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.starts_with(&format!("libgracekill {} abi ", env!("CARGO_PKG_VERSION"))),
            "{stdout}"
        );
        assert!(stdout.contains("verdict=graceful exit_code=0"), "{stdout}");
        let json: serde_json::Value = stdout
            .lines()
            .find_map(|l| l.strip_prefix("json: "))
            .map(|j| serde_json::from_str(j).unwrap())
            .expect("the JSON line");
        assert_eq!(json["outcome"], "graceful", "{json}");
        assert_eq!(read(&cg.file("marker")).trim(), "flushed");

        // A task that ignores it: killed at the end of a short grace, exit code 3.
        let cg = TestCgroup::new("cprogkill");
        let app = cg.spawn("trap '' TERM; echo ready; while :; do sleep 1; done");
        app.wait_line("ready");
        let out = pkg.command(exe).arg(&cg.rel).arg("200").output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("verdict=killed exit_code=3"));
        assert!(!cg.populated());

        // Refused input: one line from the library, exit 2, nothing signalled.
        let out = pkg.command(exe).arg("/").arg("100").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to stop the root cgroup"));
    }
}

#[test]
fn cxx_example_links_shared_through_the_packaged_pkg_config_file() {
    require_cgroup_v2!();
    require!(toolchain());
    let pkg = require!(packaged("cxx"));
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stop_on_worker_shared");
    run(Command::new("g++")
        .args(["-std=c++17", "-O1", "-pthread"])
        .arg(repo().join("examples/cpp/stop_on_worker.cpp"))
        .args(pkg.pkg_config(&["--cflags", "--libs"]))
        .arg("-o")
        .arg(&exe));
    // The library the program loads is the packaged one, found by its SONAME.
    let ldd = run(pkg.command(&exe).env("LD_TRACE_LOADED_OBJECTS", "1"));
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    assert!(
        ldd.contains(&format!(
            "libgracekill.so.0 => {}",
            pkg.lib_dir.join("libgracekill.so.0").display()
        )),
        "{ldd}"
    );
    let parent = TestCgroup::new("cxxso");
    let out = run(pkg
        .command(&exe)
        .args(["--tasks", "1", "--grace-ms", "10000", "--parent"])
        .arg(&parent.path));
    check_example_output(&String::from_utf8_lossy(&out.stdout), 1);
}
