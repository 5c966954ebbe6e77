//! Fork storms and escape attempts: nothing forks its way past a stop, nothing hides from it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestCgroup, gracekill_env, json, read, stderr, wait_until};

/// The tests here each load the machine (fork storms): one at a time, so each one's timing
/// bound measures gracekill, not its neighbour.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Both final-kill paths: `cgroup.kill`, and the freeze/SIGKILL/thaw fallback.
const PATHS: [(&str, &[(&str, &str)]); 2] = [
    ("cgroup.kill", &[]),
    ("fallback", &[("GRACEKILL_FORCE_FALLBACK", "1")]),
];

/// `gracekill stop --json --grace 1s TASK`; asserts the final kill was needed, went the expected
/// way, left nobody, and that the whole stop took at most the grace plus one second. Under
/// emulation (`GRACEKILL_TEST_SLOW`) both scale: a fork storm there leaves the stopper so small a
/// share of the CPUs that a second passes before its first signal.
fn stop_within_grace_plus_one(
    cg: &TestCgroup,
    via: &str,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let t = Instant::now();
    let grace = common::slow(Duration::from_secs(1));
    let grace_arg = format!("{}ms", grace.as_millis());
    let out = gracekill_env(
        &[
            "stop",
            "--json",
            "--grace",
            &grace_arg,
            "--kill-timeout",
            "5s",
            &cg.rel,
        ],
        env,
    );
    let took = t.elapsed();
    let v = json(&out);
    assert_eq!(out.status.code(), Some(3), "{v}\n{}", stderr(&out));
    assert_eq!(v["outcome"], "killed", "{v}");
    assert_eq!(v["steps"][1]["signal"], "SIGKILL");
    assert_eq!(v["steps"][1]["via"], via, "{v}");
    assert!(stderr(&out).is_empty(), "no warnings: {}", stderr(&out));
    // The bound is on the stop's own clock (from its start to `populated 0`): starting a
    // process at all can take seconds while a fork storm floods both CPUs, and that is not
    // the engine's time. The wall clock only guards against a hang.
    let elapsed = Duration::from_secs_f64(v["elapsed_ms"].as_f64().unwrap() / 1000.0);
    let summary = serde_json::json!({"elapsed_ms": v["elapsed_ms"], "steps": v["steps"], "killed": v["killed"].as_array().map(Vec::len)});
    // (Scaled on slow machines, common::slow: in a fork storm under emulation one enumeration
    // pass over a few hundred pids can outlast the whole grace. There the storm starves the
    // stopper beyond the slow factor: the CI of 1efce4b saw the kill 4.8 s after a 10 s grace,
    // 21.9 s in all, so an emulated machine gets twice the scaled second.)
    let over = if common::slow_factor() > 1.0 {
        common::slow(Duration::from_secs(2))
    } else {
        Duration::from_secs(1)
    };
    assert!(
        elapsed <= grace + over,
        "{via}: the stop took {elapsed:?}, more than grace + 1 s: {summary}"
    );
    assert!(
        took < grace + common::slow(Duration::from_secs(10)),
        "{via}: {took:?}: {summary}"
    );
    assert!(cg.pids().is_empty(), "{via}: survivors {:?}", cg.pids());
    assert!(!cg.populated());
    v
}

#[test]
fn shell_fork_loop_leaves_no_survivors_on_either_kill_path() {
    require_cgroup_v2!();
    let _serial = serial();
    for (via, env) in PATHS {
        let cg = TestCgroup::new("forkstorm-sh");
        // Two loops forking as fast as bash can; every child ignores SIGTERM and lives 1 s, so
        // the population is bounded (a few hundred) but always changing. (On a slow machine
        // bash forks slower: the children live longer, for the same population.)
        let life = common::slow_factor().round();
        let mut p = cg.spawn(&format!(
            "trap '' TERM; echo ready; \
             storm() {{ while :; do (sleep {life} &) & done; }}; storm & storm"
        ));
        p.wait_line("ready");
        assert!(wait_until(common::slow(Duration::from_secs(5)), || cg
            .pids()
            .len()
            > 100));
        let v = stop_within_grace_plus_one(&cg, via, env);
        // The stop signal reached the storm, not just its two loops. On this machine more
        // than 100 (the population it started with); under emulation (a VM guest, where the
        // storm and the stop share two emulated CPUs) 71 to 99 in the runs seen, so half of it:
        // what this test proves there is that nothing survives, within the grace.
        let want = if common::slow_factor() > 1.0 { 50 } else { 100 };
        assert!(v["steps"][0]["signalled"].as_u64().unwrap() > want, "{v}");
        p.wait();
    }
}

#[test]
fn stress_ng_fork_storm_leaves_no_survivors_on_either_kill_path() {
    require_cgroup_v2!();
    let _serial = serial();
    require!(common::installed("stress-ng"));
    for (via, env) in PATHS {
        let cg = TestCgroup::new("forkstorm-ng");
        // stress-ng's fork workers, plus a TERM-deaf loop so the final kill is always needed.
        let mut p = cg.spawn(
            "stress-ng --fork 4 --vfork 2 --timeout 60s --quiet & \
             trap '' TERM; echo ready; while :; do sleep 1 & wait $!; done",
        );
        p.wait_line("ready");
        assert!(wait_until(Duration::from_secs(10), || cg.pids().len() > 8));
        stop_within_grace_plus_one(&cg, via, env);
        p.wait();
    }
}

/// Records SIGTERM under its name, then keeps running (only SIGKILL ends it).
const ESCAPEE: &str = r#"
name=$1
trap 'echo "$name" >> "$SCRATCH/got-term"' TERM
echo "$$" > "$SCRATCH/ready-$name"
while :; do sleep 1 & wait $!; done
"#;

/// A multi-threaded process: five threads, SIGTERM recorded by the main thread, then ignored.
const THREADED: &str = r#"
import os, signal, sys, threading, time
name = sys.argv[1]
def on_term(sig, frame):
    with open(os.environ["SCRATCH"] + "/got-term", "a") as f:
        f.write(name + "\n")
signal.signal(signal.SIGTERM, on_term)
def spin():
    while True:
        time.sleep(0.05)
for _ in range(4):
    threading.Thread(target=spin, daemon=True).start()
with open(os.environ["SCRATCH"] + "/ready-" + name, "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(1)
"#;

const ESCAPES: [&str; 8] = [
    "setsid",
    "doublefork",
    "nohup",
    "pgroup",
    "threads",
    "nested",
    "pidns",
    "plain",
];

#[test]
fn every_escape_gets_the_stop_signal_first_and_none_survive() {
    require_cgroup_v2!();
    let _serial = serial();
    for (via, env) in PATHS {
        let cg = TestCgroup::new("escapes");
        std::fs::write(cg.file("esc.sh"), ESCAPEE).unwrap();
        std::fs::write(cg.file("threads.py"), THREADED).unwrap();
        let nested = cg.child("inner/deeper");
        let mut launcher = cg.spawn(
            r#"
            e="$SCRATCH/esc.sh"
            setsid bash "$e" setsid < /dev/null > /dev/null 2>&1 &
            ( (bash "$e" doublefork &) & )
            nohup bash "$e" nohup > /dev/null 2>&1 &
            set -m; bash "$e" pgroup & set +m
            /usr/bin/python3 "$SCRATCH/threads.py" threads &
            unshare --pid --fork bash "$e" pidns &
            exec bash "$e" plain
            "#,
        );
        let mut nested_proc = cg.spawn_in(&nested, r#"exec bash "$SCRATCH/esc.sh" nested"#);
        assert!(
            wait_until(common::slow(Duration::from_secs(10)), || ESCAPES
                .iter()
                .all(|n| !read(&cg.file(&format!("ready-{n}"))).trim().is_empty())),
            "not all escapees started: {:?}",
            std::fs::read_dir(&cg.scratch)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect::<Vec<_>>()
        );
        // They really did escape in the ways they claim.
        let pid_of = |n: &str| -> i32 {
            read(&cg.file(&format!("ready-{n}")))
                .trim()
                .parse()
                .unwrap()
        };
        let stat = |pid: i32| -> Vec<String> {
            let s = read(Path::new(&format!("/proc/{pid}/stat")));
            s.rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .map(String::from)
                .collect()
        };
        let launcher_sid = stat(launcher.pid())[3].clone();
        assert_ne!(
            stat(pid_of("setsid"))[3],
            launcher_sid,
            "setsid: new session"
        );
        assert_ne!(
            stat(pid_of("pgroup"))[2],
            stat(launcher.pid())[2],
            "new process group"
        );
        let threads = read(Path::new(&format!("/proc/{}/status", pid_of("threads"))));
        assert!(threads.contains("Threads:\t5"), "{threads}");
        let nested_cg = read(Path::new(&format!("/proc/{}/cgroup", pid_of("nested"))));
        assert!(
            nested_cg.trim_end().ends_with("/inner/deeper"),
            "{nested_cg}"
        );

        stop_within_grace_plus_one(&cg, via, env);
        let got = read(&cg.file("got-term"));
        for name in ESCAPES {
            assert!(
                got.lines().any(|l| l == name),
                "{via}: {name} never got SIGTERM before the kill; recorded: {got:?}"
            );
        }
        launcher.wait();
        nested_proc.wait();
    }
}

#[test]
fn child_forked_as_its_parent_gets_sigterm_still_gets_sigterm() {
    require_cgroup_v2!();
    let _serial = serial();
    // bash blocks SIGTERM around fork(2): a child forked in the instant the signal arrives
    // starts unsignalled and is visible only after its parent died. With a parent that does
    // nothing but fork, some round of this hits the window; the stop must still be graceful
    // (everyone dies of SIGTERM) rather than wait out the grace for the SIGKILL.
    for round in 0..10 {
        let cg = TestCgroup::new("fork-window");
        let mut p = cg.spawn("echo ready; while :; do sleep 30 & done");
        p.wait_line("ready");
        assert!(wait_until(Duration::from_secs(5), || cg.pids().len() > 20));
        // (On a slow machine both the bound and the grace it must stay below are scaled.)
        let grace = format!("{}ms", common::slow(Duration::from_secs(5)).as_millis());
        let out = gracekill_env(&["stop", "--json", "--grace", &grace, &cg.rel], &[]);
        let v = json(&out);
        assert_eq!(out.status.code(), Some(0), "round {round}: {v}");
        assert_eq!(v["outcome"], "graceful", "round {round}: {v}");
        assert!(
            v["elapsed_ms"].as_f64().unwrap()
                < common::slow(Duration::from_secs(2)).as_secs_f64() * 1000.0,
            "round {round}: {v}"
        );
        p.wait();
    }
}
