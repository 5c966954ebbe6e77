//! `gracekill stop` driven as a user would, on real cgroups (root and cgroup v2 required).

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    TestCgroup, alive, assert_refused, gracekill, gracekill_env, json, read, stderr, stdout,
    wait_until,
};

/// Traps SIGTERM, takes 2 s to "flush" (ignoring further TERMs meanwhile), writes a marker.
const FLUSHING_APP: &str = r#"
trap 'trap "" TERM; sleep 2; echo flushed > "$SCRATCH/marker"; exit 0' TERM
echo ready
while :; do sleep 1 & wait $!; done
"#;

fn steps(v: &serde_json::Value) -> Vec<String> {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["signal"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn shell_wrapper_dies_but_app_flushes() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("wrapper");
    std::fs::write(cg.file("app.sh"), FLUSHING_APP).unwrap();
    // The Thermos shape: a `bash -c 'app; echo done'` wrapper that dies at once on SIGTERM.
    let mut p = cg.spawn(r#"bash "$SCRATCH/app.sh"; echo done > "$SCRATCH/wrapper-done""#);
    p.wait_line("ready");
    let t = Instant::now();
    let out = gracekill(&["stop", "--json", "--grace", "10s", &cg.rel]);
    let took = t.elapsed();
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(v["outcome"], "graceful");
    assert_eq!(
        read(&cg.file("marker")).trim(),
        "flushed",
        "the app must have flushed"
    );
    assert_eq!(steps(&v), ["SIGTERM"], "no SIGKILL step");
    assert!(
        v["steps"][0]["signalled"].as_u64().unwrap() >= 2,
        "wrapper and app signalled: {v}"
    );
    // The upper bound scaled on slow machines, where the handler starts late.
    assert!(
        took >= Duration::from_millis(1900) && took < common::slow(Duration::from_secs(5)),
        "took {took:?}"
    );
    assert!(!cg.populated());
    assert!(
        !cg.file("wrapper-done").exists(),
        "the wrapper died of SIGTERM, as in Thermos"
    );
    p.wait();
}

#[test]
fn proc_membership_proof_also_stops_gracefully() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("procproof");
    std::fs::write(cg.file("app.sh"), FLUSHING_APP).unwrap();
    let mut p = cg.spawn(r#"bash "$SCRATCH/app.sh"; echo done"#);
    p.wait_line("ready");
    let out = gracekill_env(
        &["stop", "--json", "--grace", "10s", &cg.rel],
        &[("GRACEKILL_FORCE_PROC_MEMBERSHIP", "1")],
    );
    let v = json(&out);
    assert_eq!(v["outcome"], "graceful", "{v}");
    assert_eq!(v["membership_proof"], "/proc/<pid>/cgroup");
    assert_eq!(read(&cg.file("marker")).trim(), "flushed");
    p.wait();
}

/// Without epoll watches (a task of the stopper's user can use up `fs.epoll.max_user_watches`;
/// forced here, as that would take gigabytes), the stop waits with poll(2) on cgroup.events: it
/// is still graceful for a task that flushes, and kills a deaf one at the deadline, not before.
#[test]
fn a_stop_without_epoll_watches_is_still_graceful_and_on_time() {
    require_cgroup_v2!();
    let blind = [("GRACEKILL_FORCE_BLIND_WATCH", "1")];
    let cg = TestCgroup::new("blind");
    std::fs::write(cg.file("app.sh"), FLUSHING_APP).unwrap();
    let mut p = cg.spawn(r#"bash "$SCRATCH/app.sh"; echo done"#);
    p.wait_line("ready");
    let out = gracekill_env(&["stop", "--json", "--grace", "10s", &cg.rel], &blind);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v} {}", stderr(&out));
    assert_eq!(v["outcome"], "graceful", "{v}");
    assert_eq!(read(&cg.file("marker")).trim(), "flushed");
    assert!(v["warnings"].to_string().contains("no epoll watch"), "{v}");
    p.wait();

    // And on a runtime without tokio's I/O driver, as the CLI falls back to when even the
    // runtime's own epoll registrations are refused.
    let blind = [("GRACEKILL_FORCE_NO_IO_RUNTIME", "1")];
    let mut p = cg.spawn("trap '' TERM; echo ready; while :; do sleep 1 & wait $!; done");
    p.wait_line("ready");
    let t = Instant::now();
    let out = gracekill_env(&["stop", "--json", "--grace", "1s", &cg.rel], &blind);
    let took = t.elapsed();
    let v = json(&out);
    assert_eq!(out.status.code(), Some(3), "{v} {}", stderr(&out));
    let at = v["steps"][1]["at_ms"].as_f64().unwrap();
    assert!((1000.0..1500.0).contains(&at), "final kill at {at} ms: {v}");
    assert!(
        v["warnings"].to_string().contains("no tokio I/O driver"),
        "{v}"
    );
    // (Wall time, the stopper's own start included: scaled on slow machines.)
    assert!(took < common::slow(Duration::from_secs(3)), "{took:?}");
    assert!(!cg.populated());
    p.wait();
}

/// A caller's runtime without timers works until an attack makes the watcher blind, which needs
/// them: the stop refuses such a runtime at once instead, before anything is signalled.
#[test]
fn a_runtime_without_timers_is_refused_before_any_signal() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("no-timers");
    let p = cg.spawn(
        r#"trap 'echo TERM > "$SCRATCH/got"' TERM; echo ready; while :; do sleep 1 & wait $!; done"#,
    );
    p.wait_line("ready");
    let mount = gracekill::Mount::discover().unwrap();
    let target = mount.open_cgroup(&cg.rel).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let policy = gracekill::Policy::default();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(gracekill::stop(
            &target,
            &policy,
            &gracekill::StopOptions::default(),
        ))
    }));
    let msg = r
        .err()
        .and_then(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        })
        .expect("the stop ran on a runtime without timers");
    assert!(msg.contains("timers are disabled"), "{msg}");
    // Nothing was signalled: the task is still there, its handler never ran.
    std::thread::sleep(Duration::from_millis(200));
    assert!(cg.populated());
    assert!(!cg.file("got").exists(), "the task got a signal");
    drop(p);
}

/// A stopper told to end during the grace (Ctrl-C; SIGTERM from `timeout(1)` or a service
/// manager's stop timeout; SIGHUP) ends the grace there: the final kill goes out, the outcome is
/// reported and the exit code says killed. It used to die of the signal (exit 130/143, no
/// report) with its task signalled and never killed. The same on a runtime without tokio's I/O
/// driver (an attack on the epoll watches), whose stopper had no handlers and still died so.
#[test]
fn a_signal_to_the_stopper_cuts_the_grace_short_and_the_kill_still_comes() {
    require_cgroup_v2!();
    let runtimes: [&[(&str, &str)]; 2] = [&[], &[("GRACEKILL_FORCE_NO_IO_RUNTIME", "1")]];
    for (env, sig) in runtimes
        .into_iter()
        .flat_map(|env| ["TERM", "INT", "HUP"].map(|sig| (env, sig)))
    {
        let cg = TestCgroup::new("cut-short");
        let p = cg.spawn("trap '' TERM; echo ready; while :; do sleep 1 & wait $!; done");
        p.wait_line("ready");
        let stop = Command::new(common::bin())
            .args(["stop", "--grace", "30s", "--json", &cg.rel])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Once its stop has begun (its mark is on the cgroup; the handlers come before it):
        // a stopper still starting up (slowly, under emulation) would die of the signal.
        let mount = gracekill::Mount::discover().unwrap();
        let target = mount.open_cgroup(&cg.rel).unwrap();
        assert!(wait_until(common::slow(Duration::from_secs(10)), || target
            .get_xattr("trusted.gracekill.stopping")
            .is_ok_and(|m| m.is_some())));
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        // Only to the stopper this test started, not yet reaped.
        common::signal(stop.id(), sig);
        let out = stop.wait_with_output().unwrap();
        let took = t.elapsed();
        let v = json(&out);
        assert_eq!(
            out.status.code(),
            Some(3),
            "signal {sig} {env:?}: {v} {}",
            stderr(&out)
        );
        // At the signal, not at the end of the 30 s grace.
        let kill = v["steps"][1]["at_ms"].as_f64().unwrap();
        assert!(
            (150.0..10_000.0).contains(&kill),
            "final kill at {kill} ms: {v}"
        );
        assert!(took < common::slow(Duration::from_secs(3)), "{took:?}");
        assert!(
            stderr(&out).contains("cutting the grace short"),
            "{}",
            stderr(&out)
        );
        assert!(!cg.populated(), "signal {sig} {env:?}");
        drop(p);
    }
}

#[test]
fn process_ignoring_sigterm_is_killed_after_the_grace() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("ignore");
    let mut p = cg.spawn("trap '' TERM; echo ready; while :; do sleep 1 & wait $!; done");
    p.wait_line("ready");
    let pid = p.pid();
    let t = Instant::now();
    let out = gracekill(&["stop", "--json", "--grace", "1s", &cg.rel]);
    let took = t.elapsed();
    let v = json(&out);
    assert_eq!(out.status.code(), Some(3), "{v}");
    assert_eq!(v["outcome"], "killed");
    assert_eq!(steps(&v), ["SIGTERM", "SIGKILL"]);
    assert_eq!(v["steps"][1]["via"], "cgroup.kill");
    let at = v["steps"][1]["at_ms"].as_f64().unwrap();
    assert!(
        (1000.0..1500.0).contains(&at),
        "final kill at {at} ms, never before the grace ends"
    );
    let killed: Vec<i64> = v["killed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["pid"].as_i64().unwrap())
        .collect();
    assert!(killed.contains(&i64::from(pid)), "{v}");
    assert!(
        v["killed"][0]["comm"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    // (Wall time, the stopper's own start included: scaled on slow machines.)
    assert!(took < common::slow(Duration::from_secs(3)), "took {took:?}");
    assert!(!cg.populated());
    p.wait();
}

/// The final kill's report names exactly who it killed: the processes that honoured the stop
/// signal during the grace are not counted, every one still there at the deadline is, with no
/// warning. (The subtree is listed shortly before the deadline, not at it: nothing but the kill
/// happens at the deadline.)
#[test]
fn the_final_kill_counts_exactly_those_still_there() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("killcount");
    let mut p = cg.spawn(
        r#"for i in 1 2 3 4 5 6 7 8; do
             (trap 'sleep 0.2; exit 0' TERM; while :; do sleep 0.05; done) &
           done
           trap '' TERM
           for i in $(seq 20); do sleep 1000 & done
           echo ready; wait"#,
    );
    p.wait_line("ready");
    // Every `sleep 1000` has exec'd (a child still between fork and exec is named after the
    // shell, and a stop that comes first reports that name).
    let execd = || {
        cg.pids()
            .iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == b"sleep\x001000\x00")
            })
            .count()
    };
    assert!(wait_until(common::slow(Duration::from_secs(10)), || execd(
    )
        == 20));
    // Long enough, on an emulated machine too, for the 8 to be gone well before the end.
    let grace = format!("{}ms", common::slow(Duration::from_secs(1)).as_millis());
    let out = gracekill(&["stop", "--json", "--grace", &grace, &cg.rel]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(3), "{v}");
    assert_eq!(v["outcome"], "killed", "{v}");
    // The shell and its 20 sleeps, which ignore SIGTERM; not the 8 that exited on it.
    assert_eq!(v["killed_total"], 21, "{v}");
    let comms: Vec<&str> = v["killed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["comm"].as_str().unwrap())
        .collect();
    assert_eq!(comms.iter().filter(|c| **c == "sleep").count(), 20, "{v}");
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
    assert!(!cg.populated());
    p.wait();
}

#[test]
fn setsid_double_forked_daemon_gets_the_signal_and_finishes() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("daemon");
    let daemon = r#"
trap 'echo got-term > "$SCRATCH/daemon"; sleep 0.5; echo finished >> "$SCRATCH/daemon"; exit 0' TERM
echo ready
while :; do sleep 1 & wait $!; done
"#;
    std::fs::write(cg.file("daemon.sh"), daemon).unwrap();
    // setsid + fork + parent exits: the daemon is reparented and in a new session.
    let mut p = cg.spawn(r#"setsid bash -c '(bash "$SCRATCH/daemon.sh" &) ; exit 0'"#);
    p.wait_line("ready");
    p.wait();
    assert!(cg.populated(), "the daemon outlived its parents");
    let out = gracekill(&["stop", "--json", "--grace", "5s", &cg.rel]);
    let v = json(&out);
    assert_eq!(v["outcome"], "graceful", "{v}");
    assert_eq!(read(&cg.file("daemon")), "got-term\nfinished\n");
}

#[test]
fn stopped_process_runs_its_handler_after_sigcont() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("sigstop");
    let mut p = cg.spawn(r#"trap 'echo handled > "$SCRATCH/handled"; exit 0' TERM; echo ready; while :; do sleep 1 & wait $!; done"#);
    p.wait_line("ready");
    let pid = p.pid();
    let st = Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        wait_until(Duration::from_secs(5), || proc_state(pid) == "T"),
        "not stopped"
    );
    let out = gracekill(&["stop", "--json", "--grace", "5s", &cg.rel]);
    let v = json(&out);
    assert_eq!(v["outcome"], "graceful", "{v}");
    assert_eq!(read(&cg.file("handled")).trim(), "handled");
    p.wait();
}

#[test]
fn frozen_cgroup_is_thawed_so_the_handler_runs() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("frozen");
    let mut p = cg.spawn(r#"trap 'echo handled > "$SCRATCH/handled"; exit 0' TERM; echo ready; while :; do sleep 1 & wait $!; done"#);
    p.wait_line("ready");
    std::fs::write(cg.path.join("cgroup.freeze"), "1").unwrap();
    assert!(wait_until(Duration::from_secs(5), || read(
        &cg.path.join("cgroup.events")
    )
    .contains("frozen 1")));
    let out = gracekill(&["stop", "--json", "--grace", "5s", &cg.rel]);
    let v = json(&out);
    assert_eq!(v["outcome"], "graceful", "{v}");
    assert_eq!(v["thawed"], true);
    assert_eq!(read(&cg.file("handled")).trim(), "handled");
    p.wait();
}

#[test]
fn nested_child_cgroups_are_all_signalled() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("nested");
    let a = cg.child("a");
    let b = cg.child("a/b");
    let app = |name: &str| {
        format!(
            r#"trap 'echo {name} > "$SCRATCH/{name}"; exit 0' TERM; echo ready; while :; do sleep 1 & wait $!; done"#
        )
    };
    let mut procs = vec![
        cg.spawn(&app("top")),
        cg.spawn_in(&a, &app("mid")),
        cg.spawn_in(&b, &app("leaf")),
    ];
    for p in &procs {
        p.wait_line("ready");
    }
    let out = gracekill(&["stop", "--json", "--grace", "5s", &cg.rel]);
    let v = json(&out);
    assert_eq!(v["outcome"], "graceful", "{v}");
    for name in ["top", "mid", "leaf"] {
        assert_eq!(read(&cg.file(name)).trim(), name, "{name} got SIGTERM");
    }
    assert!(cg.pids().is_empty());
    for p in &mut procs {
        p.wait();
    }
}

#[test]
fn ladder_int_then_term_reaches_a_process_that_only_honours_term() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("ladder");
    let mut p = cg.spawn(r#"trap '' INT; trap 'echo term > "$SCRATCH/got"; exit 0' TERM; echo ready; while :; do sleep 1 & wait $!; done"#);
    p.wait_line("ready");
    // The second step's grace must outlast the TERM handler: scaled on slow machines.
    let then = format!(
        "TERM:{}ms",
        common::slow(Duration::from_secs(1)).as_millis()
    );
    let t = Instant::now();
    let out = gracekill(&[
        "stop", "--json", "--signal", "INT", "--grace", "1s", "--then", &then, &cg.rel,
    ]);
    let took = t.elapsed();
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["outcome"], "graceful");
    assert_eq!(steps(&v), ["SIGINT", "SIGTERM"]);
    assert_eq!(read(&cg.file("got")).trim(), "term");
    assert!(
        took >= Duration::from_millis(950) && took < common::slow(Duration::from_secs(3)),
        "{took:?}"
    );
    p.wait();
}

#[test]
fn forced_fallback_kills_a_fork_loop_completely() {
    require_cgroup_v2!();
    {
        let cg = TestCgroup::new("forkloop");
        let mut p =
            cg.spawn("trap '' TERM; echo ready; while :; do (trap '' TERM; sleep 60 &); done");
        p.wait_line("ready");
        assert!(wait_until(common::slow(Duration::from_secs(5)), || cg
            .pids()
            .len()
            > 50));
        let args = [
            "stop",
            "--json",
            "--grace",
            "500ms",
            "--kill-timeout",
            "5s",
            &cg.rel,
        ];
        let out = gracekill_env(&args, &[("GRACEKILL_FORCE_FALLBACK", "1")]);
        let v = json(&out);
        assert_eq!(out.status.code(), Some(3), "{v}");
        assert_eq!(v["outcome"], "killed");
        assert_eq!(v["steps"][1]["via"], "fallback");
        assert!(cg.pids().is_empty(), "survivors: {:?}", cg.pids());
        assert!(!cg.populated());
        p.wait();
    }
}

#[test]
fn v1_frozen_process_is_reported_as_a_survivor() {
    require_cgroup_v2!();
    let Some(freezer) = common::v1_freezer() else {
        if common::strict() {
            panic!(
                "no cgroup v1 freezer hierarchy mounted: this test needs one (mount -t cgroup -o freezer none DIR)"
            );
        }
        eprintln!("SKIPPED v1_frozen_process_is_reported_as_a_survivor: no v1 freezer mounted");
        return;
    };
    let cg = TestCgroup::new("v1frozen");
    let v1 = freezer.join(&cg.rel[1..]);
    std::fs::create_dir(&v1).unwrap();
    let mut p = cg.spawn("echo ready; while :; do sleep 1 & wait $!; done");
    p.wait_line("ready");
    // Declared after `p`, so on a failed assertion it drops (thaws) first: reaping a frozen
    // process would block forever.
    let thaw = common::Thaw(v1.clone());
    let pid = p.pid();
    std::fs::write(v1.join("cgroup.procs"), pid.to_string()).unwrap();
    std::fs::write(v1.join("freezer.state"), "FROZEN").unwrap();
    assert!(wait_until(Duration::from_secs(5), || read(
        &v1.join("freezer.state")
    )
    .trim()
        == "FROZEN"));
    let t = Instant::now();
    let out = gracekill(&[
        "stop",
        "--json",
        "--grace",
        "300ms",
        "--kill-timeout",
        "1s",
        &cg.rel,
    ]);
    let took = t.elapsed();
    let v = json(&out);
    assert_eq!(out.status.code(), Some(4), "{v}");
    assert_eq!(v["outcome"], "survivors");
    let s = &v["survivors"][0];
    assert_eq!(s["pid"], pid);
    assert_eq!(s["state"], "D", "{v}");
    // The wait channel names where it is stuck: `__refrigerator` on this kind of machine; kernels
    // since 6.1's freezer rework may show the function it was frozen in (e.g. `do_wait`).
    assert!(!s["wchan"].as_str().unwrap().is_empty(), "{v}");
    assert!(s.get("memory_released").is_some());
    assert!(v["empty_at_ms"].is_null());
    assert!(
        v["warnings"]
            .to_string()
            .contains("frozen by the cgroup v1 freezer"),
        "said so: {v}"
    );
    assert!(
        stderr(&out).contains("v1 freezer"),
        "at once, on stderr: {}",
        stderr(&out)
    );
    // (Wall time, the stopper's own start included: scaled on slow machines.)
    assert!(
        took < common::slow(Duration::from_secs(3)),
        "returned within the kill timeout: {took:?}"
    );
    drop(thaw);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "SIGKILL lands after the thaw"
    );
    p.wait();
}

/// Survivors in a threaded cgroup are counted by their threads, every one of them: more than
/// the stop remembers from its signal pass (200 processes), none of them held (64 descriptors:
/// none to spare for holding), all frozen by the cgroup v1 freezer so that SIGKILL cannot end
/// them.
#[test]
fn survivors_in_a_threaded_cgroup_are_all_counted() {
    require_cgroup_v2!();
    let Some(freezer) = common::v1_freezer() else {
        if common::strict() {
            panic!("no cgroup v1 freezer hierarchy mounted: this test needs one");
        }
        eprintln!("SKIPPED survivors_in_a_threaded_cgroup_are_all_counted: no v1 freezer");
        return;
    };
    let cg = TestCgroup::new("v1frozen-thr");
    let t = cg.child("t");
    std::fs::write(t.join("cgroup.type"), "threaded").unwrap();
    let v1 = freezer.join(&cg.rel[1..]);
    std::fs::create_dir(&v1).unwrap();
    // Just past the 200 remembered, so that the look-ups fit the listing's 150 ms even under
    // emulation.
    let n = 210;
    let mut p = cg.spawn_in(
        &t,
        &format!(
            "echo $$ > '{}'; for i in $(seq {n}); do sleep 1000 & done; echo ready; wait",
            v1.join("cgroup.procs").display()
        ),
    );
    p.wait_line("ready");
    let thaw = common::Thaw(v1.clone());
    assert!(wait_until(Duration::from_secs(5), || {
        read(&t.join("cgroup.threads")).lines().count() == n + 1
    }));
    std::fs::write(v1.join("freezer.state"), "FROZEN").unwrap();
    assert!(wait_until(Duration::from_secs(10), || read(
        &v1.join("freezer.state")
    )
    .trim()
        == "FROZEN"));
    let rel = format!("{}/t", cg.rel);
    // The signal pass must meet them all (it remembers the first 200): scaled under emulation.
    let grace = format!("{}ms", common::slow(Duration::from_millis(300)).as_millis());
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"ulimit -n 64 && exec "$0" "$@""#)
        .arg(common::bin())
        .args([
            "stop",
            "--json",
            "--grace",
            &grace,
            "--kill-timeout",
            "1s",
            &rel,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(out.status.code(), Some(4), "{v}");
    let other: Vec<String> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.to_string())
        .filter(|w| !w.contains("v1 freezer"))
        .collect();
    assert_eq!(v["survivors_total"], n + 1, "{} {other:?}", v["errors"]);
    // Nothing ran out of descriptors: the memory releases, too, keep within the budget.
    assert_eq!(v["errors"]["count"], 0, "{}", v["errors"]);
    assert_eq!(
        v["survivors"][0]["mrelease_error"],
        "not tried: no descriptor to spare"
    );
    assert_eq!(v["survivors"].as_array().unwrap().len(), 100);
    drop(thaw);
    assert!(wait_until(Duration::from_secs(10), || !cg.populated()));
    p.wait();
}

#[test]
fn already_empty_cgroup_is_reported_empty() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("empty");
    cg.child("web");
    // By bare name under GRACEKILL_ROOT, as a user of `run` would name it.
    let out = gracekill_env(&["stop", "--json", "web"], &[("GRACEKILL_ROOT", &cg.rel)]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(v["outcome"], "empty");
    assert_eq!(v["cgroup"], format!("{}/web", cg.rel));
    assert!(v["steps"].as_array().unwrap().is_empty());
    // And by absolute path under the mount.
    let out = gracekill(&["stop", cg.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(common::stdout(&out).contains("empty"));
}

/// A canary task in its own test cgroup: every refusal must leave it running.
fn canary(cg: &TestCgroup) -> common::Proc {
    let p = cg.spawn("echo ready; while :; do sleep 1 & wait $!; done");
    p.wait_line("ready");
    p
}

#[test]
fn refusals_exit_2_and_leave_the_canary_alone() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("canary");
    let c = canary(&cg);
    let pid = c.pid();
    let mount = common::mount().unwrap();
    let link = cg.file("link");
    std::os::unix::fs::symlink(&cg.path, &link).unwrap();
    std::fs::create_dir_all(cg.file("plain-dir")).unwrap();
    let procs_file = cg.path.join("cgroup.procs");
    let dotdot = format!("{}/../..", cg.rel);
    let dotdot_abs = format!("{}/..", cg.path.display());
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("root by /", vec!["/".into()]),
        ("root by mount path", vec![mount.display().to_string()]),
        ("dot dot", vec![dotdot.clone()]),
        ("dot dot absolute", vec![dotdot_abs.clone()]),
        ("symlink out of the mount", vec![link.display().to_string()]),
        (
            "plain directory",
            vec![cg.file("plain-dir").display().to_string()],
        ),
        (
            "cgroup file, not a cgroup",
            vec![procs_file.display().to_string()],
        ),
        ("missing", vec![format!("{}/no-such", cg.rel)]),
        ("empty", vec!["".into()]),
        (
            "bad signal",
            vec!["--signal".into(), "SIGFOO".into(), cg.rel.clone()],
        ),
        (
            "signal zero",
            vec!["--signal".into(), "0".into(), cg.rel.clone()],
        ),
        (
            "bad duration",
            vec!["--grace".into(), "ten".into(), cg.rel.clone()],
        ),
        (
            "huge duration",
            vec![
                "--grace".into(),
                "99999999999999999999".into(),
                cg.rel.clone(),
            ],
        ),
        (
            "bad step",
            vec!["--then".into(), "TERM".into(), cg.rel.clone()],
        ),
        (
            "kill step",
            vec!["--then".into(), "KILL:1s".into(), cg.rel.clone()],
        ),
    ];
    for (what, args) in cases {
        let mut full = vec!["stop".to_string()];
        full.extend(args);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let out = gracekill(&refs);
        assert_refused(&out, what);
        assert!(alive(pid), "{what}: the canary was hit");
    }
    if let Some(freezer) = common::v1_freezer() {
        let out = gracekill(&["stop", freezer.to_str().unwrap()]);
        assert_refused(&out, "cgroup v1 path");
    }
    assert!(alive(pid) && cg.pids().contains(&pid));
}

#[test]
fn refuses_the_callers_own_cgroup_and_its_ancestors_cgroups() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("self");
    let inner = cg.child("inner");
    let sibling = cg.child("sibling");
    let c = canary(&cg);
    let bin = common::bin();
    // gracekill itself inside the target.
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"echo 0 > "$1/cgroup.procs" && exec "$2" stop "$3""#)
        .args([
            "bash",
            inner.to_str().unwrap(),
            bin.to_str().unwrap(),
            &cg.rel,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_refused(&out, "own cgroup");
    assert!(
        stderr(&out).contains("gracekill itself"),
        "{}",
        stderr(&out)
    );
    // gracekill in a sibling, its parent shell inside the target's subtree.
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"echo 0 > "$1/cgroup.procs" && bash -c 'echo 0 > "$0/cgroup.procs" && exec "$1" stop "$2"' "$2" "$3" "$4"; exit $?"#)
        .args(["bash", inner.to_str().unwrap(), sibling.to_str().unwrap(), bin.to_str().unwrap(), &format!("{}/inner", cg.rel)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_refused(&out, "ancestor's cgroup");
    assert!(stderr(&out).contains("ancestor"), "{}", stderr(&out));
    assert!(alive(c.pid()));
}

/// In a cgroup namespace, a cgroup2 mount made outside it has its root above the namespace's
/// (`/..` in mountinfo: `unshare -C`, a container with a private cgroup namespace and the host's
/// hierarchy bind-mounted), and `/proc/<pid>/cgroup` names cgroups from the namespace's root: the
/// two views of a path cannot be compared. gracekill used to compare them anyway. It did not see
/// itself and its shell in the target, SIGTERMed both and `cgroup.kill`ed them; and its `/proc`
/// membership proof (kernels before 6.13) proved no one, so a task that would have ended on
/// SIGTERM was SIGKILLed and reported `killed` with nobody signalled and no error. Such a mount
/// is now refused, before any signal: the stopper and its shell live on, and so does the task.
#[test]
fn a_mount_outside_the_callers_cgroup_namespace_is_refused_before_any_signal() {
    require_cgroup_v2!();
    common::installed("unshare").unwrap();
    let cg = TestCgroup::new("cgns");
    let caller = cg.child("a/caller");
    let task = cg.child("b/task");
    let p = cg.spawn_in(
        &task,
        r#"trap 'echo TERM > "$SCRATCH/got"; exit 0' TERM; echo ready; while :; do sleep 1 & wait $!; done"#,
    );
    p.wait_line("ready");
    let bin = common::bin();
    for (what, target, env) in [
        (
            "the caller's own cgroup",
            format!("{}/a/caller", cg.rel),
            "0",
        ),
        ("a task, /proc proof", format!("{}/b/task", cg.rel), "1"),
    ] {
        // The shell joins `a/caller`, then runs gracekill in a new cgroup namespace rooted
        // there; it says whether it survived.
        let out = Command::new("bash")
            .arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && unshare -C "$2" stop --json --grace 1s "$3"; echo "survived $?""#)
            .args(["bash", caller.to_str().unwrap(), bin.to_str().unwrap(), &target])
            .env("GRACEKILL_FORCE_PROC_MEMBERSHIP", env)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(stdout(&out), "survived 1\n", "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
        assert!(err.contains("cgroup namespace"), "{what}: {err}");
        assert!(!cg.file("got").exists(), "{what}: the task was signalled");
        assert!(cg.populated(), "{what}");
    }
    drop(p);

    // The same mount from outside, bind-mounted over one made inside the namespace (as a
    // container's runtime mounts cgroup2, then the host's hierarchy is mounted on top): the
    // mountinfo line of the covered mount says `/`, the path leads to the other.
    let at = cg.file("covered");
    std::fs::create_dir_all(&at).unwrap();
    let host = common::mount().unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && unshare -Cm bash -c 'mount -t cgroup2 none "$0" && mount --bind "$2" "$0" && exec "$1" stop --json --grace 1s "$3"' "$4" "$2" "$5" "$3"; echo "survived $?""#)
        .args([
            "bash",
            caller.to_str().unwrap(),
            bin.to_str().unwrap(),
            &format!("{}/a/caller", cg.rel),
            at.to_str().unwrap(),
            host.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(stdout(&out), "survived 1\n", "covered: {err}");
    assert!(err.contains("cgroup namespace"), "covered: {err}");

    // What the hint says works: cgroup2 mounted inside the namespace (in a mount namespace of
    // its own), where a task below the namespace's root is stopped as anywhere else.
    let inner = cg.child("a/caller/t");
    let mut p = cg.spawn_in(
        &inner,
        r#"trap 'echo TERM > "$SCRATCH/got"; exit 0' TERM; echo ready; while :; do sleep 1 & wait $!; done"#,
    );
    p.wait_line("ready");
    let at = cg.file("mnt");
    std::fs::create_dir_all(&at).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && unshare -Cm bash -c 'mount -t cgroup2 none "$0" && exec "$1" stop --json --grace 5s /t' "$3" "$2"; echo "survived $?""#)
        .args(["bash", caller.to_str().unwrap(), bin.to_str().unwrap(), at.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.ends_with("survived 0\n"), "{text} {}", stderr(&out));
    assert!(text.contains(r#""outcome":"graceful""#), "{text}");
    assert_eq!(read(&cg.file("got")).trim(), "TERM");
    p.wait();
}

/// The live progress line at a terminal names the processes still running by their `comm`,
/// which a task sets at will (`PR_SET_NAME`, or the name of what it executes): an escape there
/// reached the terminal raw (helper-32: `\x1b]52;...` writes the clipboard, `\x1b[2J` clears
/// the screen). It is written escaped, as in every other line a person reads.
#[test]
fn the_live_line_at_a_terminal_writes_task_names_escaped() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("live-escape");
    let evil = cg.file("\u{1b}[2Jevil");
    std::os::unix::fs::symlink("/bin/sleep", &evil).unwrap();
    let mut p = cg.spawn(
        r#"trap '' TERM; (trap '' TERM; exec "$SCRATCH"/$'\e[2Jevil' 1000) & echo ready; wait"#,
    );
    p.wait_line("ready");
    // The child forked before `ready` may not have exec'd yet: the line would name it `bash`.
    common::wait_comms(&cg.path, &["bash", "\u{1b}[2Jevil"]);
    // gracekill's stderr a terminal (a pty), read until it closes.
    let script = r#"
import os, pty, subprocess, sys
master, slave = pty.openpty()
stop = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
os.close(slave)
out = b""
while True:
    try:
        chunk = os.read(master, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
stop.wait()
sys.stdout.write(repr(out))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(common::bin())
        .args(["stop", "--grace", "1500ms", &cg.rel])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let tty = stdout(&out);
    assert!(tty.contains("remaining"), "no live line: {tty}");
    assert!(tty.contains("evil"), "the task's name is shown: {tty}");
    // The line's own control sequence (`\r\x1b[K`) aside, no escape reaches the terminal.
    let others = tty.replace("\\x1b[K", "");
    assert!(!others.contains("\\x1b"), "a raw escape: {tty}");
    p.wait();
}

/// A process is in every cgroup one of its threads is in: a parent whose leader is in a threaded
/// domain and one of whose threads lives in a threaded child is refused as the child's
/// ancestor, not signalled through that thread (which would end the whole parent).
#[test]
fn refuses_a_cgroup_holding_only_a_thread_of_an_ancestor() {
    require_cgroup_v2!();
    let said = common::stop_with_a_thread_in_the_target("thr-anc", "cli", &common::bin());
    assert!(said.contains("rc 2 "), "{said}");
    assert!(
        said.contains("refusing") && said.contains("ancestor"),
        "{said}"
    );
}

/// A stopper started with few descriptors, inside the cgroup it is asked to stop: whatever
/// the limit, it fails with an error or refuses, never stops its own cgroup and never panics
/// (tokio panicked, exit 101, when building its runtime came up short).
#[test]
fn a_stopper_short_of_descriptors_errs_or_refuses_and_never_panics() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("fd-starved");
    let inner = cg.child("inner");
    let c = canary(&cg);
    for n in 3..=16 {
        let out = Command::new("bash")
            .arg("-c")
            .arg(r#"echo 0 > "$1/cgroup.procs" && ulimit -Sn "$2" && exec "$3" stop --grace 1s "$4""#)
            .arg("bash")
            .arg(&inner)
            .arg(n.to_string())
            .arg(common::bin())
            .arg(&cg.rel)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        // 127: the dynamic loader itself found no descriptor for a library.
        assert!(
            matches!(out.status.code(), Some(1 | 2 | 127)),
            "{n} descriptors: {:?} {}",
            out.status,
            stderr(&out)
        );
        assert!(alive(c.pid()), "{n} descriptors: the canary was stopped");
    }
}

/// The refusal holds when the caller's cgroup has a name that is not UTF-8 (its path in
/// `/proc/self/cgroup` was once read as text, failed, and the check was skipped: the stop then
/// killed its own caller).
#[test]
fn refuses_its_own_cgroup_whatever_its_name() {
    use std::os::unix::ffi::OsStrExt;
    require_cgroup_v2!();
    let cg = TestCgroup::new("selfodd");
    let odd = cg.path.join(std::ffi::OsStr::from_bytes(b"odd\xff name"));
    std::fs::create_dir(&odd).unwrap();
    let c = canary(&cg);
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"echo 0 > "$1/cgroup.procs" && exec "$2" stop --grace 1s "$3""#)
        .arg("bash")
        .arg(&odd)
        .arg(common::bin())
        .arg(&cg.rel)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_refused(&out, "own cgroup, not UTF-8");
    assert!(
        stderr(&out).contains("gracekill itself"),
        "{}",
        stderr(&out)
    );
    assert!(alive(c.pid()));
}

#[test]
fn unprivileged_caller_gets_permission_denied_with_a_hint() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("eperm");
    let c = canary(&cg);
    let out = Command::new(common::bin())
        .args(["stop", "--grace", "1s", &cg.rel])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("hint: run as root"),
        "{}",
        stderr(&out)
    );
    assert!(alive(c.pid()));
}

fn proc_state(pid: i32) -> String {
    read(std::path::Path::new(&format!("/proc/{pid}/stat")))
        .rsplit_once(')')
        .map(|(_, r)| r.trim_start().chars().take(1).collect())
        .unwrap_or_default()
}

/// The main process's exit status reaches the report although its parent (its supervisor) reaps
/// it late, as a loaded machine makes a supervisor: here the test is that parent, and waits
/// 150 ms after the exit before reaping. Other exits get 50 ms; the main process gets longer.
#[test]
fn the_main_status_is_reported_when_its_supervisor_reaps_late() {
    require_cgroup_v2!();
    let tc = TestCgroup::new("late-reap");
    let mut app = tc.spawn(r#"trap 'exit 3' TERM; echo ready; sleep 1000 & wait"#);
    app.wait_line("ready");
    let main = app.pid();
    let slow_parent = std::thread::spawn(move || {
        // Exited, not reaped: a zombie until this parent gets to it.
        assert!(wait_until(Duration::from_secs(30), || !alive(main)));
        std::thread::sleep(Duration::from_millis(150));
        app.wait()
    });
    let mount = gracekill::Mount::discover().unwrap();
    let cg = mount.open_cgroup(&tc.rel).unwrap();
    let mut opts = gracekill::StopOptions::default();
    opts.main_pid = Some(main);
    let o = gracekill::stop_task_blocking(&cg, Some(gracekill::Policy::default()), &opts).unwrap();
    assert_eq!(slow_parent.join().unwrap().code(), Some(3));
    assert_eq!(o.outcome, gracekill::Verdict::Graceful, "{o:?}");
    let exit = o
        .exits
        .iter()
        .find(|e| e.pid == main)
        .expect("the main exit");
    if common::kernel_at_least(6, 15) {
        assert_eq!(exit.code, Some(3), "{o:?}");
    } else {
        assert_eq!(exit.code, None, "no PIDFD_INFO_EXIT before 6.15: {o:?}");
    }
}
