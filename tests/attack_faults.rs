//! Faults around a stop: the stopper dies, two stoppers race, `run` dies, the cgroup vanishes.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestCgroup, alive, bin, gracekill_env, json, read, stderr, wait_until};

/// Records every SIGTERM it gets and keeps running: only SIGKILL ends it.
const TERM_DEAF: &str = r#"trap 'echo term >> "$SCRATCH/got-term"' TERM; echo ready; while :; do sleep 1 & wait $!; done"#;

/// Starts `gracekill ARGS` in the background with its output piped.
fn spawn_gracekill(args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    let mut c = Command::new(bin());
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().expect("spawn gracekill")
}

fn finish(c: &mut std::process::Child) -> std::process::Output {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    c.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    c.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
    let status = c.wait().unwrap();
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

fn stopping_mark(cg: &TestCgroup) -> Option<String> {
    let mount = gracekill::Mount::discover().unwrap();
    let c = mount.open_cgroup(&cg.rel).unwrap();
    c.get_xattr("trusted.gracekill.stopping").unwrap()
}

#[test]
fn stopper_sigkilled_mid_grace_a_second_stop_finishes_the_job() {
    require_cgroup_v2!();
    for leave_frozen in [false, true] {
        let cg = TestCgroup::new("stopper-killed");
        // Like TERM_DEAF, but the loop also notes each turn, so the test can tell when bash has
        // left its trap: bash (5.2, `run_pending_traps`) zeroes a signal's pending count after
        // running its trap, so a second SIGTERM handled while the first one's trap still runs
        // is lost: in the TCG guest (Linux 6.1, bash 5.2), 38 of 170 rounds that signalled bash
        // right after its trap wrote, frozen meanwhile or not; nothing was left pending in the
        // kernel. Signalled once the loop had turned, 0 of 70.
        let script = r#"trap 'echo term >> "$SCRATCH/got-term"' TERM; echo ready; while :; do sleep 1 & wait $!; echo turn >> "$SCRATCH/got-term"; done"#;
        let terms = || read(&cg.file("got-term")).matches("term\n").count();
        let mut p = cg.spawn(script);
        p.wait_line("ready");
        let mut first = spawn_gracekill(&["stop", "--json", "--grace", "60s", &cg.rel], &[]);
        assert!(
            wait_until(Duration::from_secs(5), || terms() >= 1),
            "the first stop never sent SIGTERM"
        );
        // Out of its trap: the loop has turned since.
        assert!(
            wait_until(common::slow(Duration::from_secs(5)), || {
                read(&cg.file("got-term")).contains("term\nturn\n")
            }),
            "bash never came back from its trap"
        );
        first.kill().unwrap();
        let out = finish(&mut first);
        assert!(
            out.stdout.is_empty(),
            "SIGKILLed mid-grace, it reported nothing"
        );
        assert!(alive(p.pid()), "the task outlives its stopper");
        if leave_frozen {
            // What a stopper SIGKILLed inside the fallback's freeze window leaves behind.
            std::fs::write(cg.path.join("cgroup.freeze"), "1").unwrap();
            assert!(wait_until(Duration::from_secs(5), || read(
                &cg.path.join("cgroup.events")
            )
            .contains("frozen 1")));
        }
        // The grace must outlast the task's handler, which runs only once the thaw (or, under
        // software emulation, the scheduler) lets it: scaled on slow machines.
        let grace = common::slow(Duration::from_secs(1));
        let grace_arg = format!("{}ms", grace.as_millis());
        let t = Instant::now();
        let out = gracekill_env(&["stop", "--json", "--grace", &grace_arg, &cg.rel], &[]);
        let v = json(&out);
        assert_eq!(out.status.code(), Some(3), "{v}\n{}", stderr(&out));
        assert!(stderr(&out).is_empty(), "{}", stderr(&out));
        assert_eq!(v["outcome"], "killed", "{v}");
        assert_eq!(v["steps"][0]["signal"], "SIGTERM");
        assert!(v["steps"][0]["signalled"].as_u64().unwrap() >= 1, "{v}");
        assert_eq!(v["steps"][1]["via"], "cgroup.kill");
        assert_eq!(v["thawed"], leave_frozen, "{v}");
        assert!(
            v["killed"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["pid"] == p.pid()),
            "{v}"
        );
        assert!(t.elapsed() < grace + common::slow(Duration::from_secs(2)));
        assert!(cg.pids().is_empty() && !cg.populated());
        // The second SIGTERM reached the task (its handler ran).
        assert!(
            terms() >= 2,
            "both stops sent SIGTERM first (left frozen: {leave_frozen}): {v}"
        );
        assert_eq!(stopping_mark(&cg), None, "no stale 'stopping' mark is left");
        p.wait();
    }
}

/// A stop that begins while another stop's final kill is still emptying the task (thousands of
/// processes take half a second to die of it) reports that kill, sent before it began: the
/// records say the stop still marked as going on, by a live stopper, sent it after it began. It
/// said `graceful`, exit 0, where the other said `killed` (helper-31: 3,000 processes, the
/// second stop started 20 ms after the first one's kill). The other stop is played by this test
/// through its records, so that the moment is no race: its mark and its record, then its kill,
/// 300 ms into the new stop. A record that the marked stop did not send (an earlier stop of the
/// same process), or whose stopper is gone, or a mark without its start (an older gracekill) is
/// no kill in flight: a task that ends on SIGTERM is then stopped gracefully.
#[test]
fn a_stop_begun_while_another_stops_kill_empties_the_task_reports_that_kill() {
    require_cgroup_v2!();
    let me = std::process::id();
    let start = read(std::path::Path::new("/proc/self/stat"))
        .rsplit(") ")
        .next()
        .and_then(|rest| rest.split(' ').nth(19).map(str::to_string))
        .unwrap();
    let gone = {
        let mut c = Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let now = || {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        u128::from(t.tv_sec.unsigned_abs()) * 1_000_000_000 + u128::from(t.tv_nsec.unsigned_abs())
    };
    let ms = 1_000_000u128;
    let ends_on_term = r#"trap 'exit 0' TERM; echo ready; while :; do sleep 1 & wait $!; done"#;
    for (case, in_flight) in [
        ("in flight", true),
        ("an earlier stop's record", false),
        ("a gone stopper", false),
        ("an older mark", false),
    ] {
        let cg = TestCgroup::new("kill-in-flight");
        let mut p = cg.spawn(if in_flight { TERM_DEAF } else { ends_on_term });
        p.wait_line("ready");
        let t = now();
        let by = if case == "a gone stopper" { gone } else { me };
        let record = format!("{by} {} cgroup.kill", t - 20 * ms);
        let mark = match case {
            "in flight" => format!("{me} {start} {}", t - 50 * ms),
            "an earlier stop's record" => format!("{me} {start} {}", t - 10 * ms),
            "a gone stopper" => format!("{gone} {start} {}", t - 50 * ms),
            _ => format!("{me} {start}"),
        };
        let mount = gracekill::Mount::discover().unwrap();
        let target = mount.open_cgroup(&cg.rel).unwrap();
        target
            .set_xattr("trusted.gracekill.final-kill", &record, false)
            .unwrap();
        target
            .set_xattr("trusted.gracekill.stopping", &mark, false)
            .unwrap();
        let mut b = spawn_gracekill(&["stop", "--json", "--grace", "10s", &cg.rel], &[]);
        if in_flight {
            // Once the new stop has begun (its mark replaced the other's), the other's kill
            // reaches the task.
            assert!(wait_until(common::slow(Duration::from_secs(5)), || {
                stopping_mark(&cg).is_some_and(|m| !m.starts_with(&format!("{me} ")))
            }));
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(cg.path.join("cgroup.kill"), "1").unwrap();
        }
        let out = finish(&mut b);
        let v = json(&out);
        let steps = v["steps"].as_array().unwrap();
        if in_flight {
            assert_eq!(out.status.code(), Some(3), "{case}: {v} {}", stderr(&out));
            assert_eq!(v["outcome"], "killed", "{case}: {v}");
            assert_eq!(steps.len(), 2, "{case}: {v}");
            assert_eq!(steps[1]["by_pid"], me, "{case}: {v}");
            let at = steps[1]["at_ms"].as_f64().unwrap();
            assert!(at < 0.0, "{case}: sent before this stop began: {v}");
        } else {
            assert_eq!(out.status.code(), Some(0), "{case}: {v} {}", stderr(&out));
            assert_eq!(v["outcome"], "graceful", "{case}: {v}");
            assert_eq!(steps.len(), 1, "{case}: {v}");
        }
        assert!(!cg.populated());
        p.wait();
    }
}

#[test]
fn two_concurrent_stops_both_succeed_and_agree() {
    require_cgroup_v2!();
    // A task that flushes for a second on SIGTERM (graceful for both), and one that ignores
    // SIGTERM (both must see the final kill).
    let flushing = r#"trap 'trap "" TERM; sleep 1; echo flushed >> "$SCRATCH/flushed"; exit 0' TERM; echo ready; while :; do sleep 1 & wait $!; done"#;
    for (script, want, code) in [(flushing, "graceful", 0), (TERM_DEAF, "killed", 3)] {
        for round in 0..3 {
            let cg = TestCgroup::new("two-stops");
            let mut p = cg.spawn(script);
            p.wait_line("ready");
            // (The grace must outlast the 1 s flush: scaled on slow machines, common::slow.)
            let grace = format!(
                "{}ms",
                common::slow(Duration::from_millis(1500)).as_millis()
            );
            let args = ["stop", "--json", "--grace", &grace, cg.rel.as_str()];
            let mut a = spawn_gracekill(&args, &[]);
            let mut b = spawn_gracekill(&args, &[]);
            let (a, b) = (finish(&mut a), finish(&mut b));
            for (who, out) in [("first", &a), ("second", &b)] {
                let v = json(out);
                assert_eq!(
                    out.status.code(),
                    Some(code),
                    "{want} round {round}, {who}: {v}\n{}",
                    stderr(out)
                );
                assert_eq!(v["outcome"], want, "round {round}, {who}: {v}");
                assert!(stderr(out).is_empty(), "{who}: {}", stderr(out));
                assert!(v["survivors"].as_array().unwrap().is_empty());
            }
            let kills = [&a, &b]
                .iter()
                .filter(|o| json(o)["steps"].as_array().unwrap().len() == 2)
                .count();
            assert!([&a, &b].iter().all(|o| {
                json(o)["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|s| s["signal"] != "SIGKILL" || s["via"] == "cgroup.kill")
            }),);
            if want == "killed" {
                assert_eq!(kills, 2, "both report the final kill");
            } else {
                assert_eq!(kills, 0);
                assert_eq!(read(&cg.file("flushed")).lines().count(), 1);
            }
            assert!(cg.pids().is_empty() && !cg.populated());
            assert_eq!(stopping_mark(&cg), None);
            p.wait();
        }
    }
}

#[test]
fn run_sigkilled_leaves_a_task_that_stop_ends_by_its_recorded_policy() {
    require_cgroup_v2!();
    let parent = TestCgroup::new("run-killed");
    let env = [("GRACEKILL_ROOT", parent.rel.as_str())];
    let app = format!(
        r#"trap 'echo "$GOT" > {dir}/got; sleep 0.5; echo flushed > {dir}/flushed; exit 0' INT; trap 'GOT=term' TERM; GOT=int; echo ready > {dir}/ready; while :; do sleep 1 & wait $!; done"#,
        dir = parent.scratch.display()
    );
    let mut run = Command::new(bin())
        .args([
            "run", "--name", "web", "--signal", "INT", "--grace", "5s", "--", "bash", "-c", &app,
        ])
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let task = parent.path.join("web");
    assert!(wait_until(Duration::from_secs(5), || parent
        .file("ready")
        .exists()));
    let main_pid = common::pids_below(&task)[0];
    run.kill().unwrap();
    let status = run.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(main_pid), "the task keeps running without run");

    let list = gracekill_env(&["list", "--json"], &env);
    assert_eq!(list.status.code(), Some(0), "{}", stderr(&list));
    let tasks = json(&list);
    let web = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "web")
        .unwrap_or_else(|| panic!("list does not show the task: {tasks}"));
    assert_eq!(web["populated"], true, "{web}");

    let out = gracekill_env(&["stop", "--json", "web"], &env);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v}\n{}", stderr(&out));
    assert_eq!(v["outcome"], "graceful", "{v}");
    assert_eq!(
        v["steps"][0]["signal"], "SIGINT",
        "the recorded policy: {v}"
    );
    assert_eq!(read(&parent.file("got")).trim(), "int");
    assert_eq!(read(&parent.file("flushed")).trim(), "flushed");
    assert!(common::pids_below(&task).is_empty());
}

#[test]
fn cgroup_removed_by_someone_else_mid_stop_ends_cleanly() {
    require_cgroup_v2!();
    let cg = TestCgroup::new("vanish");
    let holding = TestCgroup::new("vanish-holding");
    let sub = cg.child("sub");
    let deaf = r#"trap 'echo int >> "$SCRATCH/got-int"' INT; "#.to_string() + TERM_DEAF;
    let a = cg.spawn(&deaf);
    let b = cg.spawn_in(&sub, &deaf);
    a.wait_line("ready");
    b.wait_line("ready");
    let move_out = |pid: i32| {
        let _ = std::fs::write(holding.path.join("cgroup.procs"), pid.to_string());
    };
    // The bound on noticing (5 s) and the second grace it must stay well below both scale on
    // slow machines, where starting the stopper and the handlers take seconds.
    let then = format!(
        "INT:{}ms",
        common::slow(Duration::from_secs(10)).as_millis()
    );
    let t = Instant::now();
    let mut stop = spawn_gracekill(
        &["stop", "--json", "--grace", "1s", "--then", &then, &cg.rel],
        &[],
    );
    assert!(wait_until(Duration::from_secs(5), || read(
        &cg.file("got-term")
    )
    .lines()
    .count()
        >= 2));
    // Someone else empties and removes the nested cgroup during the first grace: the second
    // step's enumeration must cope with a child that vanished.
    // (Short-lived `sleep` children may exit between the listing and the move: retry.)
    assert!(wait_until(Duration::from_secs(5), || {
        common::pids_below(&sub).into_iter().for_each(move_out);
        common::pids_below(&sub).is_empty()
    }));
    std::fs::remove_dir(&sub).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !read(
        &cg.file("got-int")
    )
    .is_empty()));
    // Then the task's own cgroup, while the stopper is held still (SIGSTOP, so it cannot see
    // `populated 0` before the rmdir): it wakes up to a cgroup that no longer exists.
    let gk = rustix::process::Pid::from_raw(stop.id().cast_signed()).unwrap();
    rustix::process::kill_process(gk, rustix::process::Signal::STOP).unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        cg.pids().into_iter().for_each(move_out);
        !cg.populated()
    }));
    std::fs::remove_dir(&cg.path).unwrap();
    rustix::process::kill_process(gk, rustix::process::Signal::CONT).unwrap();
    let out = finish(&mut stop);
    let took = t.elapsed();
    let v = json(&out);
    assert!(
        took < common::slow(Duration::from_secs(5)),
        "it noticed at once, not at the end of the grace: {took:?}"
    );
    assert!(
        stderr(&out).is_empty(),
        "no errors about missing files: {}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(
        v["cgroup_removed"], true,
        "the report says what happened: {v}"
    );
    assert_eq!(v["steps"][1]["signal"], "SIGINT", "{v}");
    // The processes were moved, not stopped: the report must not claim they were killed.
    assert!(v["killed"].as_array().unwrap().is_empty(), "{v}");
    assert!(alive(a.pid()) && alive(b.pid()));
}
