//! `gracekill run`, `stop NAME`, `status`, `list`, driven as a user would (root, cgroup v2).

mod common;

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TestCgroup, json, read, stderr, stdout, wait_until};

/// `gracekill` with GRACEKILL_ROOT set to the test's cgroup, so bare task names live there.
fn gk(cg: &TestCgroup) -> Command {
    let mut c = Command::new(common::bin());
    c.env("GRACEKILL_ROOT", &cg.rel)
        .current_dir(&cg.scratch)
        .stdin(Stdio::null());
    c
}

fn run_bg(cg: &TestCgroup, args: &[&str]) -> Child {
    gk(cg)
        .arg("run")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gracekill run")
}

fn output(c: &mut Command) -> Output {
    c.output().expect("run gracekill")
}

fn finish(child: Child) -> Output {
    child.wait_with_output().expect("wait for gracekill run")
}

fn task_path(cg: &TestCgroup, name: &str) -> std::path::PathBuf {
    cg.path.join(name)
}

/// Waits until the task cgroup exists and holds at least `n` processes.
fn wait_task(cg: &TestCgroup, name: &str, n: usize) {
    let p = task_path(cg, name);
    assert!(
        wait_until(Duration::from_secs(10), || common::pids_below(&p).len()
            >= n),
        "task {name} never reached {n} processes"
    );
}

/// Waits until the task's processes are exactly `comms` (in any order): each has run its
/// `exec` (a process is in the cgroup from its fork on, before its shell has set a trap or
/// exec'd, and a stop that came then would find it with the wrong name and disposition).
fn wait_comms(cg: &TestCgroup, name: &str, comms: &[&str]) {
    common::wait_comms(&task_path(cg, name), comms);
}

const HANDLES_TERM: &str = r#"trap 'trap "" TERM; sleep 1; echo flushed > "$PWD/flushed"; exit 5' TERM; echo ready > "$PWD/ready"; while :; do sleep 1 & wait $!; done"#;

/// `--timeout` with `--kill-mode process`: a main process that ignores SIGTERM gets the final
/// kill, and `run` says so with 137 (`timeout(1)`'s), not 124, though the stop's verdict is
/// `remaining` (its other process was left running, as asked, and is then reaped by `run`).
#[test]
fn a_timeout_in_process_mode_that_needed_the_kill_exits_137() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("timeout-proc");
    let out = output(gk(&cg).args([
        "run",
        "--json",
        "--name",
        "t",
        "--timeout",
        "300ms",
        "--kill-mode",
        "process",
        "--grace",
        "300ms",
        "--",
        "sh",
        "-c",
        "trap '' TERM; sleep 2 & wait",
    ]));
    let v = json(&out);
    assert_eq!(out.status.code(), Some(137), "{v} {}", stderr(&out));
    assert_eq!(v["main"]["signal"], 9, "{v}");
}

/// A pipe whose reader has gone: every write to it fails with `EPIPE`.
fn closed_pipe() -> std::os::fd::OwnedFd {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
    drop(r);
    w
}

/// `run --timeout T --grace G` of a task that ignores SIGTERM and fills `run`'s stderr, a pipe;
/// and the pipe's read end, which nobody reads until the caller does.
fn run_with_stderr_kept_full(
    cg: &TestCgroup,
    timeout: &str,
    grace: &str,
) -> (Child, std::os::fd::OwnedFd) {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
    let child = gk(cg)
        .args(["run", "--name", "t", "--timeout", timeout, "--grace", grace])
        .args(["--", "sh", "-c", "trap '' TERM; exec yes spew >&2"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(w))
        .spawn()
        .expect("spawn gracekill run");
    (child, r)
}

/// `run`'s task inherits its stderr. A task that keeps that pipe full while nobody reads it (a
/// log shipper that stalled) must not hold `run` in a write of its own status line past the
/// task's deadlines: the task is stopped on time, and the line is written once the pipe is read.
#[test]
fn a_task_that_keeps_runs_stderr_full_cannot_hold_up_its_stop() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("fullpipe");
    let started = Instant::now();
    let (mut child, r) = run_with_stderr_kept_full(&cg, "500ms", "300ms");
    wait_task(&cg, "t", 1);
    let events = task_path(&cg, "t").join("cgroup.events");
    let stopped = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&events).map_or(true, |e| e.contains("populated 0"))
    });
    let took = started.elapsed();
    // Only now is the pipe read, so that `run` can write what it queued, and end.
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut all);
        all
    });
    let st = child.wait().expect("wait for gracekill run");
    let err = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(
        stopped,
        "the task still ran {took:?} after it started, with a 500 ms timeout and a 300 ms grace"
    );
    assert_eq!(st.code(), Some(137), "{st:?}");
    assert!(
        err.contains("gracekill: timeout after 500ms: stopping the task\n"),
        "{}",
        err.lines()
            .filter(|l| *l != "spew")
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Once its stop is over, `run` still waiting to write its last lines to a pipe nobody reads
/// ends on SIGTERM or SIGINT, as any program does: the handlers it used during the stop are gone.
#[test]
fn after_its_stop_a_run_blocked_on_its_stderr_ends_on_sigterm() {
    require_cgroup_v2!();
    for (sig, num) in [("TERM", 15), ("INT", 2)] {
        let cg = TestCgroup::new("fullpipe-term");
        let (mut child, r) = run_with_stderr_kept_full(&cg, "300ms", "200ms");
        wait_task(&cg, "t", 1);
        let task = task_path(&cg, "t");
        assert!(
            wait_until(Duration::from_secs(5), || !task.exists()),
            "the task was not stopped and removed"
        );
        // `run` is now blocked writing its summary: the pipe is still full and unread.
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended with its stderr full"
        );
        common::signal(child.id(), sig);
        let ended = wait_until(Duration::from_secs(5), || {
            child.try_wait().unwrap().is_some()
        });
        drop(r);
        let st = child.wait().expect("wait for gracekill run");
        assert!(ended, "run took no notice of SIG{sig}: {st:?}");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(num),
            "{st:?}"
        );
    }
}

/// `run` writes status lines to stderr just before it stops its task (the timeout, a signal):
/// a stderr that is a closed pipe (a supervisor's log that went away) must not end it there,
/// with its task left running unsupervised, nor change its exit code; nor may a closed stdout
/// change `stop`'s.
#[test]
fn closed_output_pipes_cannot_keep_run_or_stop_from_their_job() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("epipe");
    let t = Instant::now();
    let st = gk(&cg)
        .args([
            "run",
            "--name",
            "t",
            "--timeout",
            "500ms",
            "--grace",
            "300ms",
            "--json",
        ])
        .args(["--", "sh", "-c", "trap '' TERM; exec sleep 30"])
        .stdout(Stdio::from(closed_pipe()))
        .stderr(Stdio::from(closed_pipe()))
        .status()
        .unwrap();
    // Timed out, and the final kill was needed: timeout(1)'s 128 + 9.
    assert_eq!(st.code(), Some(137), "{st:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let task = task_path(&cg, "t");
    assert!(
        !task.exists() || !read(&task.join("cgroup.events")).contains("populated 1"),
        "the task outlived its run"
    );

    // `stop --json` into a closed stdout: the task is killed, and the exit code says so.
    let child = run_bg(
        &cg,
        &[
            "--name",
            "s",
            "--",
            "sh",
            "-c",
            "trap '' TERM; exec sleep 30",
        ],
    );
    wait_comms(&cg, "s", &["sleep"]);
    let st = gk(&cg)
        .args(["stop", "--grace", "200ms", "--json", "s"])
        .stdout(Stdio::from(closed_pipe()))
        .stderr(Stdio::from(closed_pipe()))
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(3), "{st:?}");
    finish(child);
}

#[test]
fn run_then_stop_from_another_process() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-stop");
    let child = run_bg(
        &cg,
        &[
            "--name",
            "t1",
            "--grace",
            "10s",
            "--",
            "bash",
            "-c",
            HANDLES_TERM,
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || cg
        .file("ready")
        .exists()));
    let out = output(gk(&cg).args(["stop", "--json", "t1"]));
    let v = json(&out);
    assert_eq!(v["outcome"], "graceful", "{v}");
    assert_eq!(v["cgroup"], format!("{}/t1", cg.rel));
    let run = finish(child);
    assert_eq!(read(&cg.file("flushed")).trim(), "flushed");
    assert_eq!(
        run.status.code(),
        Some(5),
        "run exits with the task's status: {}",
        stderr(&run)
    );
    assert!(
        wait_until(Duration::from_secs(5), || !task_path(&cg, "t1").exists()),
        "cgroup removed"
    );
}

#[test]
fn stored_policy_is_applied_by_a_bare_stop() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-policy");
    let app = r#"trap '' TERM; trap 'echo int > "$PWD/got"; exit 0' INT; echo ready > "$PWD/ready"; while :; do sleep 1 & wait $!; done"#;
    let child = run_bg(
        &cg,
        &[
            "--name",
            "t2",
            "-p",
            "KillSignal=SIGINT",
            "-p",
            "TimeoutStopSec=5",
            "--",
            "bash",
            "-c",
            app,
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || cg
        .file("ready")
        .exists()));
    let st = output(gk(&cg).args(["status", "--json", "t2"]));
    let s = json(&st);
    assert!(
        s["policy_summary"]
            .as_str()
            .unwrap()
            .starts_with("SIGINT 5s"),
        "{s}"
    );
    // Structured for machines: each step's signal and grace in milliseconds.
    assert_eq!(s["policy"]["steps"][0]["signal"], "SIGINT", "{s}");
    assert_eq!(s["policy"]["steps"][0]["grace_ms"], 5000, "{s}");
    assert_eq!(s["policy"]["kill_mode"], "control-group", "{s}");
    assert_eq!(s["state"], "running", "{s}");
    assert!(s["supervisor_pid"].as_i64().is_some(), "{s}");
    let out = output(gk(&cg).args(["stop", "--json", "t2"]));
    let v = json(&out);
    assert_eq!(v["outcome"], "graceful", "{v}");
    assert_eq!(v["steps"][0]["signal"], "SIGINT");
    assert_eq!(read(&cg.file("got")).trim(), "int");
    assert_eq!(finish(child).status.code(), Some(0));
}

#[test]
fn ctrl_c_stops_gracefully_and_a_second_one_kills() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-ctrlc");
    // First: one SIGINT to `run` -> graceful stop by policy.
    let child = run_bg(
        &cg,
        &[
            "--name",
            "c1",
            "--grace",
            "10s",
            "--",
            "bash",
            "-c",
            HANDLES_TERM,
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || cg
        .file("ready")
        .exists()));
    common::signal(child.id(), "INT");
    let out = finish(child);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(read(&cg.file("flushed")).trim(), "flushed");
    assert!(stderr(&out).contains("graceful"), "{}", stderr(&out));
    // Second: a task that ignores SIGTERM, 60 s grace; the second SIGINT skips to the kill.
    std::fs::remove_file(cg.file("ready")).unwrap();
    let stubborn =
        r#"trap '' TERM; echo ready > "$PWD/ready"; while :; do sleep 1 & wait $!; done"#;
    let log = std::fs::File::create(cg.file("run.log")).unwrap();
    let child = gk(&cg)
        .args([
            "run", "--name", "c2", "--grace", "60s", "--json", "--", "bash", "-c", stubborn,
        ])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || cg
        .file("ready")
        .exists()));
    let t = Instant::now();
    common::signal(child.id(), "INT");
    // The second Ctrl-C must come after `run` has begun the graceful stop.
    assert!(wait_until(Duration::from_secs(5), || read(
        &cg.file("run.log")
    )
    .contains("stopping the task gracefully")));
    common::signal(child.id(), "INT");
    let out = finish(child);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "escalated, not the 60 s grace: {:?}",
        t.elapsed()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stop"]["outcome"], "killed", "{v}");
    assert_eq!(v["stop_reason"], "signal");
    assert_eq!(out.status.code(), Some(137), "killed by SIGKILL: 128+9");
}

#[test]
fn timeout_exits_124_or_137_and_reaches_double_forked_daemons() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-timeout");
    let daemon =
        r#"trap 'echo got-term > "$PWD/daemon"; exit 0' TERM; while :; do sleep 1 & wait $!; done"#;
    std::fs::write(cg.file("daemon.sh"), daemon).unwrap();
    let well = r#"setsid bash -c '(bash "$PWD/daemon.sh" &)'; sleep 30"#;
    // The timeouts must outlast the start of the shells, up to their traps (the daemon is four
    // execs away): the stop signal may not come first. Much longer under emulation.
    let ms = |d: Duration| format!("{}ms", common::slow(d).as_millis());
    let t = Instant::now();
    let out = output(gk(&cg).args([
        "run",
        "--name",
        "to1",
        "--timeout",
        &ms(Duration::from_secs(1)),
        "--grace",
        "5s",
        "--",
        "bash",
        "-c",
        well,
    ]));
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    let took = t.elapsed();
    assert!(
        took < common::slow(Duration::from_secs(1)) + Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(
        read(&cg.file("daemon")).trim(),
        "got-term",
        "the double-forked daemon got SIGTERM"
    );
    assert!(!task_path(&cg, "to1").exists());
    let out = output(gk(&cg).args([
        "run",
        "--name",
        "to2",
        "--timeout",
        &ms(Duration::from_millis(500)),
        "--grace",
        "500ms",
        "--",
        "bash",
        "-c",
        "trap '' TERM; sleep 30",
    ]));
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert!(!task_path(&cg, "to2").exists());
}

#[test]
fn exit_status_and_stdin_pass_through() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-status");
    for (script, want) in [
        ("exit 0", 0),
        ("exit 3", 3),
        ("kill -TERM $$", 128 + 15),
        ("kill -KILL $$", 128 + 9),
    ] {
        let out = output(gk(&cg).args(["run", "--name", "st", "--", "bash", "-c", script]));
        assert_eq!(out.status.code(), Some(want), "{script}: {}", stderr(&out));
    }
    let mut child = gk(&cg)
        .args(["run", "--name", "cat", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello through gracekill\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "hello through gracekill\n");
}

#[test]
fn leftover_daemon_is_stopped_gracefully_when_main_exits() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-leftover");
    let daemon = r#"trap 'sleep 0.3; echo stopped > "$PWD/daemon"; exit 0' TERM; echo > "$PWD/daemon-ready"; while :; do sleep 1 & wait $!; done"#;
    std::fs::write(cg.file("daemon.sh"), daemon).unwrap();
    // The main process exits (and the stop of its leftovers begins) only once the daemon has
    // set its trap: a fixed pause could end first under load.
    let out = output(gk(&cg).args([
        "run",
        "--name",
        "lo",
        "--json",
        "--grace",
        "5s",
        "--",
        "bash",
        "-c",
        r#"bash "$PWD/daemon.sh" & for _ in $(seq 1000); do [ -e "$PWD/daemon-ready" ] && break; sleep 0.01; done; exit 0"#,
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stop_reason"], "leftovers", "{v}");
    assert_eq!(v["stop"]["outcome"], "graceful");
    assert_eq!(v["main"]["exit_code"], 0);
    assert_eq!(read(&cg.file("daemon")).trim(), "stopped");
    assert!(stderr(&out).contains("left behind"), "{}", stderr(&out));
    assert!(!task_path(&cg, "lo").exists());
}

#[test]
fn orphans_are_reaped_no_zombies_remain() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-reap");
    // Orphans (parent gone) exit while the main process still runs: run, the subreaper, reaps them.
    let script =
        r#"for i in 1 2 3 4 5; do (sleep 0.1 &); done; echo ready > "$PWD/ready"; sleep 2"#;
    let child = run_bg(&cg, &["--name", "rp", "--", "bash", "-c", script]);
    let run_pid = child.id();
    assert!(wait_until(Duration::from_secs(10), || cg
        .file("ready")
        .exists()));
    std::thread::sleep(Duration::from_millis(800));
    let kids = read(std::path::Path::new(&format!(
        "/proc/{run_pid}/task/{run_pid}/children"
    )));
    for pid in kids.split_whitespace() {
        let stat = read(std::path::Path::new(&format!("/proc/{pid}/stat")));
        assert!(
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
            "zombie {pid}: {stat}"
        );
    }
    let out = finish(child);
    assert_eq!(out.status.code(), Some(0));
    assert!(!task_path(&cg, "rp").exists());
}

#[test]
fn name_collisions_bad_properties_and_bad_stored_policy_are_clear_errors() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-errors");
    let child = run_bg(
        &cg,
        &[
            "--name",
            "busy",
            "--",
            "bash",
            "-c",
            r#"echo ready > "$PWD/ready"; sleep 30"#,
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || cg
        .file("ready")
        .exists()));
    // `run`'s own failures are 125 (timeout(1)'s convention), never CMD's possible 1 or 2.
    let out = output(gk(&cg).args(["run", "--name", "busy", "--", "true"]));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    for bad in [
        "Bogus=1",
        "KillSignal=NOPE",
        "TimeoutStopSec=forever",
        "KillMode=all",
        "nonsense",
    ] {
        let out = output(gk(&cg).args(["run", "--name", "x", "-p", bad, "--", "true"]));
        assert_eq!(out.status.code(), Some(125), "{bad}");
        assert_eq!(stderr(&out).lines().count(), 1, "{bad}: {}", stderr(&out));
        assert!(!task_path(&cg, "x").exists(), "{bad}: nothing created");
    }
    // A record that is garbage (whoever wrote it) is a warning: the stop happens anyway, with
    // the defaults, and says what it ignored.
    let mount = gracekill::Mount::discover().unwrap();
    let task = mount.open_cgroup(&format!("{}/busy", cg.rel)).unwrap();
    task.set_xattr(
        "trusted.gracekill.policy",
        "v1 steps=15:999999999999 sighup=0 kill-timeout=1 kill-mode=nope",
        false,
    )
    .unwrap();
    let st = output(gk(&cg).args(["status", "busy"]));
    assert!(stdout(&st).contains("INVALID"), "{}", stdout(&st));
    let out = output(gk(&cg).args(["stop", "--json", "busy"]));
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v} {}", stderr(&out));
    assert_eq!(v["policy_source"], "default", "{v}");
    assert!(
        stderr(&out).contains("invalid stored policy"),
        "{}",
        stderr(&out)
    );
    assert!(
        v["warnings"].to_string().contains("invalid stored policy"),
        "{v}"
    );
    drop(task);
    drop(child);
}

#[test]
fn run_sigkilled_leaves_the_task_stoppable_by_its_policy() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-orphaned");
    let app = r#"trap '' TERM; trap 'echo int > "$PWD/got"; exit 0' INT; echo ready > "$PWD/ready"; while :; do sleep 1 & wait $!; done"#;
    let mut child = run_bg(
        &cg,
        &[
            "--name",
            "orph",
            "-p",
            "KillSignal=INT",
            "--grace",
            "5s",
            "--",
            "bash",
            "-c",
            app,
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || cg
        .file("ready")
        .exists()));
    child.kill().unwrap(); // SIGKILL to `run` itself
    child.wait().unwrap();
    assert!(task_path(&cg, "orph").exists());
    let list = output(gk(&cg).args(["list", "--json"]));
    let l = json(&list);
    let entry = l
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orph")
        .expect("list shows the task");
    assert_eq!(entry["populated"], true);
    assert_eq!(
        entry["state"], "orphaned",
        "list says its run is gone: {entry}"
    );
    assert!(entry["supervisor_pid"].is_null(), "{entry}");
    let out = output(gk(&cg).args(["stop", "--json", "orph"]));
    let v = json(&out);
    assert_eq!(v["outcome"], "graceful", "{v}");
    assert_eq!(v["steps"][0]["signal"], "SIGINT", "the recorded policy");
    assert_eq!(read(&cg.file("got")).trim(), "int");
    // Its run is gone, so nobody else would: the stop removed the emptied cgroup.
    assert!(
        !task_path(&cg, "orph").exists(),
        "the leftover cgroup was removed"
    );
}

#[test]
fn kill_mode_mixed_signals_only_the_main_process() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-mixed");
    let helper =
        r#"trap 'echo got-term > "$PWD/helper"' TERM; while :; do sleep 1 & wait $!; done"#;
    std::fs::write(cg.file("helper.sh"), helper).unwrap();
    let main = r#"bash "$PWD/helper.sh" & trap 'echo main-term > "$PWD/main"; exit 0' TERM; echo ready > "$PWD/ready"; while :; do sleep 1 & wait $!; done"#;
    let child = run_bg(
        &cg,
        &[
            "--name",
            "mx",
            "-p",
            "KillMode=mixed",
            "--grace",
            "1s",
            "--json",
            "--",
            "bash",
            "-c",
            main,
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || cg
        .file("ready")
        .exists()));
    wait_task(&cg, "mx", 3);
    let out = output(gk(&cg).args(["stop", "--json", "mx"]));
    let v = json(&out);
    assert_eq!(v["outcome"], "killed", "{v}");
    assert_eq!(
        v["steps"][0]["signalled"], 1,
        "only the main process got SIGTERM"
    );
    assert_eq!(read(&cg.file("main")).trim(), "main-term");
    let run = finish(child);
    let why = format!(
        "stop: {v}\nrun stdout: {}\nrun stderr: {}",
        stdout(&run),
        stderr(&run)
    );
    assert!(
        !cg.file("helper").exists(),
        "the helper must not have seen SIGTERM; {why}"
    );
    assert!(
        v["killed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["cmdline"].as_str().unwrap().contains("helper.sh"))
    );
}

#[test]
fn readme_quick_start_runs_as_written() {
    require_cgroup_v2!();
    let readme = include_str!("../README.md");
    let line = readme
        .lines()
        .find(|l| l.starts_with("cargo run --release -- run "))
        .expect("README quick start line");
    // In the VM tests there is no cargo: the same command line, with the binary under test.
    let line = match std::env::var("GRACEKILL_BIN") {
        Ok(bin) => line.replacen("cargo run --release --", &bin, 1),
        Err(_) => line.to_string(),
    };
    let cg = TestCgroup::new("readme");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&line)
        .current_dir(common::repo())
        .env("GRACEKILL_ROOT", &cg.rel)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    let o = stdout(&out);
    assert!(o.contains("working") && o.contains("flushed"), "{o}");
}

/// The exit timeline: every process the stop signalled, when it exited and how, read from the
/// kernel (`PIDFD_INFO_EXIT`, 6.15+) once `run`, their subreaper, reaped them.
#[test]
fn the_stop_reports_how_and_when_each_process_exited() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-exits");
    // bash exits 7 on TERM; `sleep 1001` dies of the TERM; `sleep 1002` ignores it.
    let script = r#"trap 'exit 7' TERM
        sleep 1001 &
        (trap '' TERM; exec sleep 1002) &
        echo ready > "$PWD/ready"; wait"#;
    let child = run_bg(&cg, &["--name", "tl", "--", "bash", "-c", script]);
    assert!(wait_until(Duration::from_secs(10), || cg
        .file("ready")
        .exists()));
    wait_comms(&cg, "tl", &["bash", "sleep", "sleep"]);
    // Scaled for emulated machines, where bash takes most of a second to run its trap.
    let grace = common::slow(Duration::from_secs(1));
    let grace_ms = grace.as_secs_f64() * 1000.0;
    let out = output(gk(&cg).args([
        "stop",
        "--grace",
        &format!("{}ms", grace.as_millis()),
        "--json",
        "tl",
    ]));
    let v = json(&out);
    assert_eq!(v["outcome"], "killed", "{v}");
    let exits = v["exits"].as_array().expect("exits").clone();
    assert_eq!(exits.len(), 3, "{v}");
    let by_comm = |want: &str| {
        exits
            .iter()
            .find(|e| e["comm"] == want)
            .unwrap_or_else(|| panic!("no {want} in {v}"))
    };
    let bash = by_comm("bash");
    let at = |e: &serde_json::Value| e["at_ms"].as_f64().expect("at_ms");
    let mut sleeps: Vec<_> = exits.iter().filter(|e| e["comm"] == "sleep").collect();
    assert_eq!(sleeps.len(), 2, "{v}");
    // By when they went (the statuses are unknown before Linux 6.15): the one that honoured
    // SIGTERM first, the stubborn one at the deadline.
    sleeps.sort_by(|a, b| at(a).total_cmp(&at(b)));
    let (termed, killed) = (sleeps[0], sleeps[1]);
    // In the order seen: the two that honoured SIGTERM at once, the stubborn one at the
    // deadline.
    assert!(
        at(bash) < grace_ms / 2.0 && at(termed) < grace_ms / 2.0,
        "{v}"
    );
    assert!(
        at(killed) >= grace_ms,
        "killed before the grace was over: {v}"
    );
    assert_eq!(exits.last().map(|e| &e["pid"]), Some(&killed["pid"]), "{v}");
    if common::kernel_at_least(6, 15) {
        assert_eq!(bash["code"], 7, "{v}");
        assert!(bash["signal"].is_null(), "{v}");
        assert_eq!(termed["signal"], "SIGTERM", "{v}");
        assert_eq!(killed["signal"], "SIGKILL", "{v}");
    } else {
        // No PIDFD_INFO_EXIT: the timeline says when, not how.
        assert!(
            exits
                .iter()
                .all(|e| e["code"].is_null() && e["signal"].is_null())
        );
    }
    let run = finish(child);
    assert_eq!(run.status.code(), Some(7), "{}", stderr(&run));
}

/// The same timeline in the summary line a person reads.
#[test]
fn the_summary_names_each_exit() {
    require_cgroup_v2!();
    // Before 6.15 (no PIDFD_INFO_EXIT) the summary says when each went, not how.
    let statuses = common::kernel_at_least(6, 15);
    let cg = TestCgroup::new("run-exits-human");
    let script = r#"trap 'exit 3' TERM; echo ready > "$PWD/ready"; sleep 1000 & wait"#;
    let child = run_bg(&cg, &["--name", "h", "--", "bash", "-c", script]);
    assert!(wait_until(Duration::from_secs(10), || cg
        .file("ready")
        .exists()));
    wait_comms(&cg, "h", &["bash", "sleep"]);
    let out = output(gk(&cg).args(["stop", "--grace", "5s", "h"]));
    let line = stdout(&out);
    assert!(out.status.success(), "{line}");
    if statuses {
        assert!(line.contains("bash exited 3 after"), "{line}");
        assert!(line.contains("sleep killed by SIGTERM after"), "{line}");
    } else {
        assert!(
            line.contains("bash gone after") && line.contains("sleep gone after"),
            "{line}"
        );
    }
    assert_eq!(finish(child).status.code(), Some(3));
}

/// CLI conventions of timeout(1) and systemd-run: no `--` needed, decimal seconds, `-q`.
#[test]
fn run_takes_cmd_without_dashes_decimal_seconds_and_quiet() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-cli");
    // No `--`: everything from the first non-option on is CMD, its own options included.
    let out = output(gk(&cg).args(["run", "--name", "nd", "bash", "-c", "exit 7"]));
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    // Decimal seconds, as systemd's TimeoutStopSec= and timeout(1) take them.
    let out = output(gk(&cg).args([
        "run",
        "--json",
        "--name",
        "dec",
        "--grace",
        "1.5",
        "-p",
        "RuntimeMaxSec=0.2",
        "sleep",
        "10",
    ]));
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["stop_reason"], "timeout", "{v}");
    assert!(
        v["stop"]["policy"]
            .as_str()
            .unwrap()
            .starts_with("SIGTERM 1s 500ms"),
        "{v}"
    );
    // -q: nothing on success (no generated name, no summary); the status still passes through.
    let out = output(gk(&cg).args(["run", "-q", "--timeout", "0.1", "sleep", "10"]));
    assert_eq!(out.status.code(), Some(124));
    assert_eq!(stderr(&out), "", "quiet");
    assert_eq!(stdout(&out), "");
    // `infinity` is explained, not "expected number".
    let out = output(gk(&cg).args(["run", "--grace", "infinity", "true"]));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("a stop must end"), "{}", stderr(&out));
    // An unknown option before CMD is `run`'s own error (125, clap's hint kept), never the
    // command: nothing is started, no cgroup made.
    for (args, hint) in [
        (&["run", "--bogus", "true"][..], "'--bogus'"),
        (&["run", "--gracee", "1s", "true"][..], "--grace"),
    ] {
        let out = output(gk(&cg).args(args));
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(hint), "{args:?}: {}", stderr(&out));
    }
    let tasks: Vec<_> = std::fs::read_dir(&cg.path)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect();
    assert!(
        tasks.is_empty(),
        "a mistyped option started no task: {tasks:?}"
    );
    // systemd's property takes decimal seconds too.
    let out = output(gk(&cg).args([
        "run",
        "--json",
        "-p",
        "TimeoutStopSec=1.5",
        "-p",
        "RuntimeMaxSec=0.1",
        "sleep",
        "10",
    ]));
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(
        json(&out)["stop"]["policy"]
            .as_str()
            .unwrap()
            .starts_with("SIGTERM 1s 500ms"),
        "{}",
        stdout(&out)
    );
    // clap's hint survives the one-line error.
    let out = output(gk(&cg).args(["stop", "--grac", "5s", "x"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--grace"), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

/// `status /` counts the root's processes as running; `list --parent` of a missing cgroup is an
/// error, not an empty table.
#[test]
fn status_of_the_root_and_list_of_a_missing_parent() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-views");
    let out = output(gk(&cg).args(["status", "--json", "/"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert!(v["process_count"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["populated"], true, "{v}");
    assert_eq!(v["state"], "running", "{v}");
    let out = output(gk(&cg).args(["list", "--parent", "/no-such-parent-gk"]));
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "no header for nothing");
}

/// A task whose `run` was SIGKILLed and which then ended by itself is a `leftover`: `list` says
/// so, and `gracekill stop` (which has nothing to signal) removes its emptied cgroup.
#[test]
fn a_leftover_of_a_killed_run_is_listed_and_removed_by_stop() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-leftover");
    let mut run = gk(&cg)
        .args(["run", "--name", "lo", "bash", "-c"])
        .arg(format!(
            "echo ready > {dir}/ready; read -t 30 _ < {dir}/fifo",
            dir = cg.scratch.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let fifo = cg.file("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    assert!(wait_until(common::slow(Duration::from_secs(10)), || cg
        .file("ready")
        .exists()));
    run.kill().unwrap();
    run.wait().unwrap();
    // The task ends by itself once its run is gone: one line into its fifo.
    std::fs::write(&fifo, "go\n").unwrap();
    let task = cg.path.join("lo");
    assert!(wait_until(common::slow(Duration::from_secs(10)), || {
        read(&task.join("cgroup.events")).contains("populated 0")
    }));
    let list = json(&output(gk(&cg).args(["list", "--json"])));
    let lo = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "lo")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(lo["state"], "leftover", "{lo}");
    let out = output(gk(&cg).args(["stop", "--json", "lo"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["outcome"], "empty", "{v}");
    assert_eq!(v["cgroup_removed"], true, "{v}");
    assert!(!task.exists(), "the leftover cgroup is gone");
}

/// Logs written to a file (not a terminal) carry no ANSI colour codes.
#[test]
fn verbose_logs_into_a_file_have_no_colours() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-ansi");
    cg.child("empty");
    let out = output(gk(&cg).args(["-vv", "stop", "--grace", "1s", "empty"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("DEBUG"), "-vv logs: {}", stderr(&out));
    assert!(!stderr(&out).contains('\u{1b}'), "{}", stderr(&out));
}

/// After another process stopped the task, `run --json` says so.
#[test]
fn run_reports_an_external_stop() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-ext");
    let child = run_bg(
        &cg,
        &["--json", "--name", "ext", "bash", "-c", HANDLES_TERM],
    );
    assert!(wait_until(Duration::from_secs(10), || cg
        .file("ready")
        .exists()));
    let stop = gk(&cg)
        .args(["stop", "--json", "ext"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stopper = i64::from(stop.id());
    let out = stop.wait_with_output().unwrap();
    assert_eq!(json(&out)["outcome"], "graceful");
    let run = finish(child);
    let v = json(&run);
    assert_eq!(v["stop_reason"], "external", "{v}");
    assert_eq!(v["stopped_by"], stopper, "{v}");
    assert_eq!(run.status.code(), Some(5), "the task's own status");
}

/// One man page per subcommand, each with its exit codes and examples; completions that offer
/// the task names under gracekill's root and never a hidden flag.
#[test]
fn man_pages_per_subcommand_and_completions_of_task_names() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-docs");
    let dir = cg.file("man");
    let out = output(gk(&cg).arg("manpage").arg("--dir").arg(&dir));
    assert!(out.status.success(), "{}", stderr(&out));
    for page in [
        "gracekill",
        "gracekill-stop",
        "gracekill-run",
        "gracekill-status",
        "gracekill-list",
    ] {
        let text = read(&dir.join(format!("{page}.1")));
        assert!(text.contains(&format!(".TH {page} 1")), "{page}: {text}");
        // The sections of man-pages(7), not one "EXTRA" holding them all.
        assert!(text.contains(".SH \"SEE ALSO\""), "{page}");
        assert!(!text.contains(".SH EXTRA"), "{page}");
        if page != "gracekill" {
            for section in ["EXIT STATUS", "ENVIRONMENT", "EXAMPLES", "JSON OUTPUT"] {
                assert!(
                    text.contains(&format!(".SH \"{section}\"")),
                    "{page}: {section}"
                );
            }
            // Tables are kept as written, not refilled.
            assert!(text.contains(".nf"), "{page}");
        }
    }
    assert!(read(&dir.join("gracekill-stop.1")).contains("GRACEKILL_ROOT"));
    assert!(read(&dir.join("gracekill-run.1")).contains("stopped_by"));
    let top = read(&dir.join("gracekill.1"));
    assert!(
        top.contains("gracekill\\-stop(1)"),
        "the top page names the others: {top}"
    );

    // Completions ask the binary: task names come from gracekill's root.
    cg.child("alpha");
    cg.child("beta");
    // A name with a terminal escape is not offered (a shell lists candidates raw).
    cg.child("abc\u{1b}[2Jx");
    let ask = |words: &[&str]| {
        let out = output(
            gk(&cg)
                .env("GRACEKILL_COMPLETE", "fish")
                .arg("--")
                .arg("gracekill")
                .args(words),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let names = ask(&["stop", "a"]);
    assert_eq!(names.trim(), "alpha", "{names}");
    let names = ask(&["status", ""]);
    assert!(
        names.lines().any(|l| l == "alpha") && names.lines().any(|l| l == "beta"),
        "{names}"
    );
    assert!(!names.contains("abc"), "{names:?}");
    let modes = ask(&["stop", "--kill-mode", ""]);
    assert_eq!(
        modes.lines().collect::<Vec<_>>(),
        ["control-group", "mixed", "process"]
    );
    let flags = ask(&["stop", "--"]);
    assert!(flags.contains("--grace"), "{flags}");
    // No hidden flag, not even for its own prefix; clap's variable name COMPLETE is not ours.
    for (sub, prefix) in [("stop", "--f"), ("run", "--f"), ("stop", "--h")] {
        let offered = ask(&[sub, prefix]);
        assert!(
            !offered.contains("fallback") && !offered.contains("--help-"),
            "{sub} {prefix}: {offered}"
        );
    }
    let hijack = gk(&cg)
        .env("COMPLETE", "bash")
        .args(["status", "--json", &cg.rel])
        .output()
        .unwrap();
    assert!(
        stdout(&hijack).contains("\"cgroup\""),
        "{}",
        stdout(&hijack)
    );
    let script = output(gk(&cg).args(["completions", "bash"]));
    let script = stdout(&script);
    assert!(
        script.contains("GRACEKILL_COMPLETE") && script.contains(common::bin().to_str().unwrap()),
        "{script}"
    );
    // Packages point the shell code at the installed binary instead.
    let packaged =
        output(gk(&cg).args(["completions", "--completer", "/usr/bin/gracekill", "fish"]));
    let packaged = stdout(&packaged);
    assert!(
        packaged.contains("GRACEKILL_COMPLETE=fish /usr/bin/gracekill")
            && !packaged.contains(common::bin().to_str().unwrap()),
        "{packaged}"
    );
    let relative = gk(&cg)
        .args(["completions", "--completer", "gracekill", "bash"])
        .output()
        .unwrap();
    assert_ne!(relative.status.code(), Some(0));
    assert!(stderr(&relative).contains("--completer must be an absolute path"));
}

/// Ctrl-C at a terminal: the app gets one stop request (the terminal's SIGINT), not SIGINT and
/// then `run`'s SIGTERM; Ctrl-Z stops the job and `run` with it, and `fg` continues both.
#[test]
fn at_a_terminal_ctrl_c_is_one_stop_request_and_ctrl_z_stops_the_job() {
    require_cgroup_v2!();
    require!(common::installed("python3"));
    let helper = common::repo().join("tests/helpers/tty_job.py");
    for mode in ["ctrl-c", "ctrl-z"] {
        let cg = TestCgroup::new("run-tty");
        let out = output(
            Command::new("python3")
                .arg(&helper)
                .arg(common::bin())
                .arg(&cg.scratch)
                .arg(mode)
                .env("GRACEKILL_ROOT", &cg.rel),
        );
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        let v = json(&out);
        assert_eq!(v["signals"], "2", "{mode}: only the terminal's SIGINT: {v}");
        assert_eq!(v["exit"], 3, "{mode}: the app's status: {v}");
        assert_eq!(v["stopped"], mode == "ctrl-z", "{mode}: {v}");
    }
}

/// `gracekill stop` at a terminal whose output is stopped (Ctrl-S, or its task sharing the
/// terminal and calling `tcflow(TCOOFF)`): its progress line would block the stop's only thread
/// until output resumed, past the task's deadlines. The task is killed on time all the same, and
/// the stop reports once the terminal lets it.
#[test]
fn a_stopped_terminal_cannot_hold_up_a_stop() {
    require_cgroup_v2!();
    require!(common::installed("python3"));
    let cg = TestCgroup::new("tty-stopped");
    let child = run_bg(
        &cg,
        &[
            "--name",
            "t",
            "--",
            "sh",
            "-c",
            "trap '' TERM; exec sleep 30",
        ],
    );
    wait_comms(&cg, "t", &["sleep"]);
    let out = output(
        Command::new("python3")
            .arg(common::repo().join("tests/helpers/tty_stopped.py"))
            .arg(common::bin())
            .arg(task_path(&cg, "t"))
            .arg("t")
            .env("GRACEKILL_ROOT", &cg.rel),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    let emptied = v["emptied_after"].as_f64();
    assert!(
        emptied.is_some_and(|s| s < 3.0),
        "not killed while the terminal was stopped (300 ms grace): {v}"
    );
    assert_eq!(v["exit"], 3, "the final kill was needed: {v}");
    assert!(v["stdout"].as_str().unwrap().contains("killed"), "{v}");
    finish(child);
}

/// `gracekill run --name t RUN_ARGS -- CMD` as the foreground job of a shell on a fresh
/// pseudo-terminal (`tests/helpers/tty_shell.py`, given `shell_opts`): the shell's JSON report,
/// once it is known that `run` was never stopped.
fn run_at_a_terminal(
    cg: &TestCgroup,
    shell_opts: &[&str],
    run_args: &[&str],
    cmd: &[&str],
) -> serde_json::Value {
    let out = output(
        Command::new("python3")
            .arg(common::repo().join("tests/helpers/tty_shell.py"))
            .args(shell_opts)
            .arg(common::bin())
            .args(["run", "--name", "t"])
            .args(run_args)
            .arg("--")
            .args(cmd)
            .env("GRACEKILL_ROOT", &cg.rel),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        v["stopped_by"],
        serde_json::Value::Null,
        "run was stopped: {v}"
    );
    v
}

/// `run` at a terminal, as a shell's foreground job, gives CMD the terminal. A task that turns
/// the terminal's TOSTOP on would have `run`'s own status line (the timeout's) stop `run` with
/// SIGTTOU, and its stop with it; one that stops itself on SIGTERM would have `run` follow it
/// as it follows a Ctrl-Z. Neither may hold the stop past its deadlines.
#[test]
fn a_task_at_a_terminal_cannot_get_its_run_stopped_mid_stop() {
    require_cgroup_v2!();
    require!(common::installed("python3"));
    for (mode, script) in [
        ("tostop", "stty tostop; trap '' TERM; exec sleep 30"),
        (
            "self-stop",
            "trap 'kill -STOP $$' TERM; while :; do sleep 0.2; done",
        ),
    ] {
        let cg = TestCgroup::new("tty-shell");
        let opts: &[&str] = if mode == "tostop" { &["--tostop"] } else { &[] };
        // The timeout must come after the shell's trap: scaled on an emulated machine, where a
        // shell can take longer than 1 s to get there (the Ctrl-Z test below saw it).
        let timeout = common::slow(Duration::from_secs(1));
        let timeout_arg = format!("{}ms", timeout.as_millis());
        let v = run_at_a_terminal(
            &cg,
            opts,
            &["--timeout", &timeout_arg, "--grace", "300ms"],
            &["sh", "-c", script],
        );
        assert_eq!(v["exit"], 137, "{mode}: timed out, killed: {v}");
        // Timeout 1 s, grace 300 ms; scaled on an emulated machine, where the shell, `run` and
        // the task start slowly (see the Ctrl-Z test below).
        let bound = (common::slow(Duration::from_secs(2)) + timeout).as_secs_f64();
        assert!(v["took"].as_f64().unwrap() < bound, "{mode}: {v}");
        let said = format!(
            "timeout after {}",
            gracekill::policy::format_duration(timeout)
        );
        assert!(v["tty"].as_str().unwrap().contains(&said), "{mode}: {v}");
        if mode == "self-stop" {
            assert!(
                v["tty"]
                    .as_str()
                    .unwrap()
                    .contains("continued, the stop goes on"),
                "{mode}: {v}"
            );
        }
    }
}

/// `--timeout` is a limit in real time: a task at a terminal that stops its main process before
/// it (SIGTSTP, as a Ctrl-Z sends) is continued at once, not followed: following would stop
/// `run`, and the timeout with it, until someone typed `fg`, while the task's other processes
/// (here a `sleep` in the background) ran on.
#[test]
fn a_task_at_a_terminal_cannot_pause_its_timeout() {
    require_cgroup_v2!();
    require!(common::installed("python3"));
    let cg = TestCgroup::new("tty-pause");
    // After the shell's `kill -TSTP`: scaled on an emulated machine, as above.
    let timeout = format!("{}ms", common::slow(Duration::from_secs(1)).as_millis());
    let v = run_at_a_terminal(
        &cg,
        &[],
        &["--timeout", &timeout, "--grace", "300ms"],
        &["sh", "-c", "sleep 30 & kill -TSTP $$; wait"],
    );
    assert_eq!(v["exit"], 124, "timed out, ended in its grace: {v}");
    // (Scaled on emulated machines, as above.)
    let bound = common::slow(Duration::from_secs(3)).as_secs_f64();
    assert!(v["took"].as_f64().unwrap() < bound, "{v}");
    assert!(
        v["tty"]
            .as_str()
            .unwrap()
            .contains("continued, as --timeout"),
        "{v}"
    );
}

/// A task whose main process reads the terminal from the background stops on every read
/// (SIGTTIN), and is continued every time before its timeout: `run` says so once, not once per
/// read, and the timeout still comes on time.
#[test]
fn a_job_that_stops_on_every_read_is_said_continued_once() {
    require_cgroup_v2!();
    require!(common::installed("python3"));
    let cg = TestCgroup::new("tty-ttin");
    let app = r#"
import os, signal, time
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
child = os.fork()
if child == 0:
    os.setpgid(0, 0)
    time.sleep(30)
    os._exit(0)
os.setpgid(child, child)
os.tcsetpgrp(0, child)
signal.signal(signal.SIGTTOU, signal.SIG_DFL)
while True:
    try:
        os.read(0, 1)
    except OSError:
        pass
"#;
    // The timeout must come after python's first reads: under emulation (a TCG guest, CI
    // 2026-12-01) python took longer than 1 s to start, and no read had stopped it yet.
    let timeout = format!("{}ms", common::slow(Duration::from_secs(1)).as_millis());
    let v = run_at_a_terminal(
        &cg,
        &[],
        &["--timeout", &timeout, "--grace", "300ms"],
        &["python3", "-c", app],
    );
    let tty = v["tty"].as_str().unwrap();
    assert_eq!(v["exit"], 124, "{v}");
    // (Scaled on emulated machines, as above.)
    let bound = common::slow(Duration::from_secs(3)).as_secs_f64();
    assert!(v["took"].as_f64().unwrap() < bound, "{v}");
    assert_eq!(
        tty.matches("the job was stopped: continued").count(),
        1,
        "{}",
        &tty[..tty.len().min(2000)]
    );
}

/// Ctrl-Z while `run` stops its task is not followed (see above), nor does it leave the job
/// stopped: the job is continued at once, and the application finishes its flush within its
/// grace (`run` exits 124: timed out, ended gracefully), instead of being killed, stopped, at
/// the deadline.
#[test]
fn ctrl_z_during_a_stop_does_not_cost_the_application_its_grace() {
    require_cgroup_v2!();
    require!(common::installed("python3"));
    let cg = TestCgroup::new("tty-ctrl-z");
    // The timeout 1 s, the Ctrl-Z half a second into the 1.5 s flush, the grace 3 s: all scaled
    // on an emulated machine, where the shell took longer than 1 s to set its trap (a TCG guest:
    // it died of SIGTERM at once, and the Ctrl-Z came after the stop).
    let f = common::slow_factor();
    let secs = |s: f64| format!("{}ms", (s * f * 1000.0).round());
    let (timeout, grace) = (secs(1.0), secs(3.0));
    let v = run_at_a_terminal(
        &cg,
        &["--ctrl-z-after", &format!("{}", 1.5 * f)],
        &["--timeout", &timeout, "--grace", &grace],
        &[
            "sh",
            "-c",
            // The flush's `sleep` ignores TERM (inherited): a process born during the stop
            // gets the stop signal too, and a slow pass (the TCG guest) met it.
            &format!(
                "trap 'trap \"\" TERM; sleep {}; exit 0' TERM; while :; do sleep 0.1; done",
                1.5 * f
            ),
        ],
    );
    assert_eq!(v["exit"], 124, "the flush ended within the grace: {v}");
    assert!(
        v["tty"]
            .as_str()
            .unwrap()
            .contains("the job was stopped during its stop: continued"),
        "the Ctrl-Z came during the stop: {v}"
    );
    // Exit 124 is the proof (a kill at the deadline is 137); the time, scaled on an emulated
    // machine where the shell and `run` start slowly (a TCG guest took 4.03 s), is a sanity check.
    assert!(
        v["took"].as_f64().unwrap() < common::slow(Duration::from_millis(3800)).as_secs_f64(),
        "before the 4 s deadline: {v}"
    );
}

/// The final kill counts exactly who it killed in mixed mode too, where only the main process
/// gets the stop signal: it tells its 8 workers to quit and lingers; the kill takes it and the
/// 20 others (which the stop never signalled, and tracks before the deadline), and counts them.
#[test]
fn a_mixed_mode_final_kill_counts_exactly_those_still_there() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("run-mixedcount");
    let script = format!(
        r#"trap '' TERM
           for i in $(seq 20); do sleep 1000 & done
           trap - TERM
           workers=
           for i in 1 2 3 4 5 6 7 8; do sleep 1000 & workers="$workers $!"; done
           trap 'kill $workers' TERM
           echo ready > {dir}/ready; while :; do wait; done"#,
        dir = cg.scratch.display()
    );
    // Long enough, on an emulated machine too, for the 8 to be gone well before the end.
    let grace = format!("{}ms", common::slow(Duration::from_secs(1)).as_millis());
    let run = run_bg(
        &cg,
        &[
            "--name",
            "m",
            "--kill-mode",
            "mixed",
            "--grace",
            &grace,
            "--",
            "bash",
            "-c",
            &script,
        ],
    );
    assert!(wait_until(common::slow(Duration::from_secs(10)), || cg
        .file("ready")
        .exists()));
    let out = output(gk(&cg).args(["stop", "--json", "m"]));
    let v = json(&out);
    assert_eq!(out.status.code(), Some(3), "{v}");
    assert_eq!(v["steps"][0]["signalled"], 1, "{v}");
    assert_eq!(v["killed_total"], 21, "{v}");
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
    let _ = finish(run);
}

/// A main process that survives `run`'s final kill does not hold `run`: its stop reports the
/// survivor and `run` ends with that report (exit 137: killed, its status unknown), the cgroup
/// kept. The main process is frozen here by the cgroup v1 freezer, the stand-in for
/// uninterruptible sleep; in life it may also be a tracee held at its exit by a tracer, which
/// two processes of the task tracing each other with `PTRACE_O_TRACEEXIT` make for good.
/// `run` used to wait for its reap for as long as that lasted (helper-30: until the tracer let
/// go; 15 s here, the length of the freeze). With `--timeout`, and with a SIGTERM to `run`.
#[test]
fn a_main_process_that_survives_the_final_kill_does_not_hold_run() {
    require_cgroup_v2!();
    for by_signal in [false, true] {
        let cg = TestCgroup::new("run-survivor");
        let mut args = vec!["--name", "t", "--grace", "300ms", "--kill-timeout", "300ms"];
        // The timeout must come after the freeze below (else `sleep` dies of its SIGTERM):
        // scaled on an emulated machine, where starting `run` and freezing take most of 1 s.
        let timeout = format!("{}ms", common::slow(Duration::from_secs(1)).as_millis());
        if !by_signal {
            args.extend(["--timeout", &timeout]);
        }
        args.extend(["--json", "--", "sleep", "1000"]);
        let mut child = run_bg(&cg, &args);
        wait_task(&cg, "t", 1);
        let main: i32 = read(&task_path(&cg, "t").join("cgroup.procs"))
            .trim()
            .parse()
            .unwrap();
        // Frozen only once it is `sleep`: frozen before its exec, it would hold `run` in its
        // spawn (which waits for the exec), before any timeout or signal handling of `run`'s
        // (CI, 2026-12-01: `run` still waited after 15 s, then removed the thawed task).
        assert!(
            wait_until(Duration::from_secs(10), || std::fs::read_to_string(
                format!("/proc/{main}/comm")
            )
            .is_ok_and(|c| c.trim() == "sleep")),
            "the main process {main} never became sleep"
        );
        let Some(thaw) = common::freeze_v1(&cg, main) else {
            let _ = child.kill();
            let _ = child.wait();
            return;
        };
        if by_signal {
            // Only to the `run` this test started.
            common::signal(child.id(), "TERM");
        }
        let t = Instant::now();
        let done = wait_until(common::slow(Duration::from_secs(15)), || {
            child.try_wait().unwrap().is_some()
        });
        let took = t.elapsed();
        // Its cgroup is kept, claimed by a `run` that is gone: `list` says orphaned.
        if done {
            let list = json(&output(gk(&cg).args(["list", "--json"])));
            let entry = list
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == "t")
                .cloned()
                .unwrap_or_default();
            assert_eq!(entry["state"], "orphaned", "{list}");
        }
        // Thawed, the main process dies of its SIGKILL and lets go of `run`'s pipes.
        drop(thaw);
        let out = finish(child);
        // And the stop that finds it emptied removes it, as for any task whose run is gone.
        let again = json(&output(gk(&cg).args(["stop", "--json", "t"])));
        assert_eq!(again["cgroup_removed"], true, "{again}");
        assert!(!task_path(&cg, "t").exists());
        assert!(
            done,
            "by signal {by_signal}: run still waited after {took:?}"
        );
        assert!(
            took < common::slow(Duration::from_secs(6)),
            "by signal {by_signal}: {took:?}"
        );
        let j = json(&out);
        assert_eq!(out.status.code(), Some(137), "{j} {}", stderr(&out));
        assert_eq!(j["exit_code"], 137, "{j}");
        assert_eq!(j["stop"]["outcome"], "survivors", "{j}");
        assert_eq!(j["stop"]["survivors"][0]["pid"], main, "{j}");
        assert!(
            j["main"]["exit_code"].is_null() && j["main"]["signal"].is_null(),
            "{j}"
        );
        assert_eq!(j["removed"], false, "{j}");
        assert!(
            stderr(&out).contains("survived the final kill"),
            "{}",
            stderr(&out)
        );
    }
}
