//! The stop engine's decisions, each on a scripted world ([`crate::kernel::fake`]) in virtual
//! time: who is signalled when, when the grace ends, how the final kill is sent and what the
//! outcome says. No root, no cgroups, no real process; the whole file runs in milliseconds.
//! (The same behaviours on the real kernel: `tests/`, as root.)

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::kernel::fake::{Fake, Reaction, Spec};
use crate::policy::{KillMode, Policy, Signal, Step};
use crate::report::{Outcome, Verdict};
use crate::stop::{KillMethod, StopOptions, run_engine};

const MS: Duration = Duration::from_millis(1);

/// Runs `f` on a single-threaded runtime whose clock is paused: it jumps to the next timer
/// whenever every task waits, so a 30 s grace takes no real time.
fn paused(f: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(f);
}

fn policy(steps: &[(Signal, u64)], kill_timeout_ms: u64, mode: KillMode) -> Policy {
    Policy {
        steps: steps
            .iter()
            .map(|&(signal, ms)| Step {
                signal,
                grace: MS * u32::try_from(ms).expect("small"),
            })
            .collect(),
        sighup: false,
        kill_timeout: MS * u32::try_from(kill_timeout_ms).expect("small"),
        kill_mode: mode,
    }
}

fn term(grace_ms: u64) -> Policy {
    policy(&[(Signal::TERM, grace_ms)], 1000, KillMode::ControlGroup)
}

/// Options naming the task's main process (as `run`'s record or an executor does).
fn with_main(pid: i32) -> StopOptions {
    StopOptions {
        main_pid: Some(pid),
        ..StopOptions::default()
    }
}

async fn stop(w: &Fake, policy: &Policy, opts: &StopOptions) -> Outcome {
    let cg = w.cgroup(0);
    run_engine(w, &cg, policy, opts).await.expect("stop")
}

/// Stops with an escalation handle that is notified (a second Ctrl-C) `after` the start, command
/// lines read at once (as `run` asks).
async fn stop_escalated(w: &Fake, policy: &Policy, after: Duration) -> Outcome {
    stop_cut_short(w, policy, after, true).await
}

/// Stops with an escalation handle notified `after` the start.
async fn stop_cut_short(
    w: &Fake,
    policy: &Policy,
    after: Duration,
    cmdlines_at_once: bool,
) -> Outcome {
    let n = Arc::new(tokio::sync::Notify::new());
    let opts = StopOptions {
        escalate: Some(n.clone()),
        cmdlines_at_once,
        ..StopOptions::default()
    };
    let second_request = async {
        tokio::time::sleep(after).await;
        n.notify_one();
    };
    tokio::join!(stop(w, policy, &opts), second_request).0
}

/// Starts `n` processes that ignore SIGTERM and survive SIGKILL (`stuck0`, `stuck1`...).
fn spawn_stuck(w: &Fake, n: usize) -> Vec<i32> {
    (0..n)
        .map(|i| {
            w.spawn(
                Spec::new(&format!("stuck{i}"))
                    .ignores(Signal::TERM)
                    .stuck(),
            )
        })
        .collect()
}

fn signals(o: &Outcome) -> Vec<String> {
    o.steps.iter().map(|s| s.signal.to_string()).collect()
}

/// Names are read by pid, and a pid names another process once its own has been reaped: a task
/// whose processes die at once and are reaped at once (the pids cycled by a fork loop) must not
/// get the outsiders that took their pids into its exit timeline. Those read after the pass
/// (beyond the first few, named as they are met) are checked against their pidfds.
#[test]
fn a_name_read_after_its_pid_was_reused_is_not_reported() {
    paused(async {
        let w = Fake::new();
        let pids: Vec<i32> = (0..12)
            .map(|i| {
                w.spawn(
                    Spec::new(&format!("w{i}"))
                        .reaped_after(Some(Duration::ZERO))
                        .pid_reused_by("outsider"),
                )
            })
            .collect();
        let o = stop(&w, &term(1000), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Graceful, "{o:?}");
        assert_eq!(o.exits.len(), 12, "{o:?}");
        for e in &o.exits {
            assert_ne!(e.comm, "outsider", "{o:?}");
        }
        // The first ones, named as they were met (alive), keep their names.
        let first = o.exits.iter().find(|e| e.pid == pids[0]).expect("exit");
        assert_eq!(first.comm, "w0", "{o:?}");
    });
}

/// The same for names read without a pidfd to check them against: the main process in mixed
/// mode (named before it is held), and a newcomer the final kill takes unheld (it came after the
/// last pass). A pid that an outsider took is not named after it.
#[test]
fn names_read_without_a_pidfd_are_not_an_outsiders_either() {
    paused(async {
        let w = Fake::new();
        let main = w.spawn(
            Spec::new("main")
                .reaped_after(Some(Duration::ZERO))
                .pid_reused_by("outsider"),
        );
        w.spawn(Spec::new("helper").ignores(Signal::TERM));
        let p = policy(&[(Signal::TERM, 500)], 1000, KillMode::Mixed);
        let o = stop(&w, &p, &with_main(main)).await;
        assert!(o.exits.iter().any(|e| e.pid == main), "{o:?}");
        assert!(o.exits.iter().all(|e| e.comm != "outsider"), "{o:?}");
    });
    paused(async {
        let w = Fake::new();
        w.spawn(Spec::new("app").ignores(Signal::TERM));
        w.spawn_later(
            100 * MS,
            Spec::new("new")
                .ignores(Signal::TERM)
                .reaped_after(Some(Duration::ZERO))
                .pid_reused_by("outsider"),
        );
        let o = stop_escalated(&w, &term(5000), 200 * MS).await;
        assert_eq!(o.killed.len(), 2, "{o:?}");
        assert!(o.killed.iter().all(|k| k.comm != "outsider"), "{o:?}");
        assert!(o.killed.iter().any(|k| k.comm == "app"), "{o:?}");
    });
}

/// The Thermos case: the wrapper dies of SIGTERM at once, the application flushes for 2 s. The
/// stop waits for the cgroup, not the wrapper: no SIGKILL, graceful, and the timeline says who
/// exited how.
#[test]
fn the_wrapper_dying_first_does_not_end_the_grace() {
    paused(async {
        let w = Fake::new();
        let wrapper = w.spawn(Spec::new("bash"));
        let app = w.spawn(Spec::new("app").flushes(Signal::TERM, 2000 * MS));
        let o = stop(&w, &term(5000), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Graceful, "{o:?}");
        assert_eq!(signals(&o), ["SIGTERM"]);
        assert_eq!(o.steps[0].signalled, 2);
        assert_eq!(w.signals_of(app), ["SIGTERM", "SIGCONT"]);
        assert_eq!(w.exit_of(wrapper).map(|e| e.1), Some(15), "died of SIGTERM");
        let empty = o.empty_at_ms.expect("emptied");
        assert!((2000.0..2010.0).contains(&empty), "{empty}");
        let app_exit = o.exits.iter().find(|e| e.pid == app).expect("app exit");
        assert_eq!(app_exit.code, Some(0), "{o:?}");
        let bash_exit = o
            .exits
            .iter()
            .find(|e| e.pid == wrapper)
            .expect("bash exit");
        assert_eq!(bash_exit.signal.as_deref(), Some("SIGTERM"));
        assert!(!w.log().iter().any(|l| l.contains("cgroup.kill")));
        assert_eq!(o.outcome.exit_code(), 0);
    });
}

/// A process that ignores SIGTERM is killed when the grace is over: not before, and by
/// `cgroup.kill`, with the kill step at the deadline.
#[test]
fn an_ignored_stop_signal_is_answered_by_cgroup_kill_at_the_deadline() {
    paused(async {
        let w = Fake::new();
        let app = w.spawn(Spec::new("app").ignores(Signal::TERM));
        let o = stop(&w, &term(3000), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        assert_eq!(signals(&o), ["SIGTERM", "SIGKILL"]);
        let kill = &o.steps[1];
        assert_eq!(kill.via, Some("cgroup.kill"));
        assert!(
            (3000.0..3001.0).contains(&kill.at_ms),
            "at the deadline: {}",
            kill.at_ms
        );
        let (died, status) = w.exit_of(app).expect("dead");
        assert!(died >= 3000.0, "never before the grace is over: {died}");
        assert_eq!(status, 9);
        assert_eq!(o.killed_total, 1);
        assert_eq!(o.killed[0].pid, app);
        assert_eq!(o.killed[0].comm, "app");
        assert_eq!(o.outcome.exit_code(), 3);
    });
}

/// Everyone signalled is gone but the cgroup is still populated: a process appeared after the
/// pass (a shell's child forked as SIGTERM arrived). It gets the step's signal too, and its
/// own grace is the step's: it flushes, the stop is graceful.
#[test]
fn a_latecomer_gets_the_stop_signal_when_everyone_signalled_is_gone() {
    paused(async {
        let w = Fake::new();
        w.spawn(Spec::new("sh").flushes(Signal::TERM, 20 * MS));
        w.spawn_later(10 * MS, Spec::new("late").flushes(Signal::TERM, 100 * MS));
        let o = stop(&w, &term(5000), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Graceful, "{o:?}");
        assert_eq!(o.steps[0].signalled, 2, "the latecomer counted: {o:?}");
        let late = crate::kernel::fake::FIRST_PID + 1;
        assert_eq!(w.signals_of(late), ["SIGTERM", "SIGCONT"]);
        let got = w.log();
        let at: f64 = got
            .iter()
            .find(|l| l.contains("SIGTERM late"))
            .and_then(|l| l.split(' ').next()?.parse().ok())
            .expect("signalled");
        assert!((20.0..21.0).contains(&at), "when the sh exited: {got:?}");
    });
}

/// A process that appeared during the grace while others still ran (no wakeup tells of it) is
/// found by the listing shortly before the deadline, and gets the step's signal then, not just
/// the final kill: here it flushes in time and is not killed.
#[test]
fn a_process_unseen_during_the_grace_gets_the_stop_signal_before_the_kill() {
    paused(async {
        let w = Fake::new();
        w.spawn(Spec::new("app").ignores(Signal::TERM));
        w.spawn_later(100 * MS, Spec::new("new").flushes(Signal::TERM, 10 * MS));
        let o = stop(&w, &term(1000), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        let newcomer = crate::kernel::fake::FIRST_PID + 1;
        assert_eq!(w.signals_of(newcomer), ["SIGTERM", "SIGCONT"]);
        let (at, status) = w.exit_of(newcomer).expect("exited");
        assert_eq!(status, 0, "flushed, not killed");
        assert!(at < 1000.0, "{at}");
        assert_eq!(o.killed_total, 1, "{o:?}");
        assert_eq!(o.steps[0].signalled, 2, "{o:?}");
    });
}

/// A second request (a second Ctrl-C) cuts the grace short: the final kill comes then.
#[test]
fn escalation_cuts_the_grace_short() {
    paused(async {
        let w = Fake::new();
        w.spawn(Spec::new("app").ignores(Signal::TERM));
        let o = stop_escalated(&w, &term(30_000), 250 * MS).await;
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        let kill = &o.steps[1];
        assert!(
            (250.0..251.0).contains(&kill.at_ms),
            "at the request, not after 30 s: {}",
            kill.at_ms
        );
        assert_eq!(o.killed_total, 1, "listed at once for the report");
    });
}

/// Each step gets its own grace; a process that ignores SIGTERM but honours SIGINT ends in
/// the second step, and nothing is killed.
#[test]
fn a_later_step_can_end_the_stop_gracefully() {
    paused(async {
        let w = Fake::new();
        let app = w.spawn(
            Spec::new("app")
                .ignores(Signal::TERM)
                .flushes(Signal::INT, 50 * MS),
        );
        let p = policy(
            &[(Signal::TERM, 1000), (Signal::INT, 1000)],
            1000,
            KillMode::ControlGroup,
        );
        let o = stop(&w, &p, &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Graceful, "{o:?}");
        assert_eq!(signals(&o), ["SIGTERM", "SIGINT"]);
        assert!((1000.0..1001.0).contains(&o.steps[1].at_ms));
        assert_eq!(w.exit_of(app).map(|e| e.1), Some(0));
    });
}

/// `kill-mode=process`: only the main process is signalled and killed; the others are left
/// running, and the outcome says so (exit 5).
#[test]
fn process_mode_touches_only_the_main_process() {
    paused(async {
        let w = Fake::new();
        let main = w.spawn(Spec::new("main").ignores(Signal::TERM));
        let helper = w.spawn(Spec::new("helper"));
        let p = policy(&[(Signal::TERM, 500)], 1000, KillMode::Process);
        let opts = with_main(main);
        let o = stop(&w, &p, &opts).await;
        assert_eq!(o.outcome, Verdict::Remaining, "{o:?}");
        assert_eq!(o.outcome.exit_code(), 5);
        assert_eq!(signals(&o), ["SIGTERM", "SIGKILL"]);
        assert_eq!(o.steps[1].via, Some("pidfd"));
        assert_eq!(w.exit_of(main).map(|e| e.1), Some(9));
        assert!(w.signals_of(helper).is_empty(), "{:?}", w.log());
        assert!(w.alive(helper));
        assert!(!w.log().iter().any(|l| l.contains("cgroup.kill")));
    });
}

/// `kill-mode=process` without a main process signals nothing, and says why.
#[test]
fn process_mode_without_a_main_process_signals_nothing() {
    paused(async {
        let w = Fake::new();
        let helper = w.spawn(Spec::new("helper"));
        let p = policy(&[(Signal::TERM, 500)], 1000, KillMode::Process);
        let o = stop(&w, &p, &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Remaining, "{o:?}");
        assert!(w.signals_of(helper).is_empty());
        assert!(
            o.warnings.iter().any(|m| m.contains("no main process")),
            "{o:?}"
        );
    });
}

/// `kill-mode=mixed` whose main process is gone already: the stop signal goes to everyone, as
/// in control-group mode (systemd does the same), rather than to no one.
#[test]
fn mixed_mode_without_a_main_process_signals_everyone() {
    paused(async {
        let w = Fake::new();
        let a = w.spawn(Spec::new("a").flushes(Signal::TERM, 10 * MS));
        let b = w.spawn(Spec::new("b").flushes(Signal::TERM, 20 * MS));
        let p = policy(&[(Signal::TERM, 500)], 1000, KillMode::Mixed);
        let o = stop(&w, &p, &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Graceful, "{o:?}");
        assert_eq!(o.steps[0].signalled, 2);
        assert_eq!(w.exit_of(a).map(|e| e.1), Some(0));
        assert_eq!(w.exit_of(b).map(|e| e.1), Some(0));
    });
}

/// Process mode: a main process that takes longer than the kill timeout to die of SIGKILL (not
/// stuck: tearing down) is given up to a second more, and is not reported as a survivor.
#[test]
fn process_mode_waits_for_a_main_process_slow_to_die() {
    paused(async {
        let w = Fake::new();
        let main = w.spawn(
            Spec::new("main")
                .ignores(Signal::TERM)
                .dies_after(1500 * MS),
        );
        w.spawn(Spec::new("helper"));
        let p = policy(&[(Signal::TERM, 100)], 1000, KillMode::Process);
        let opts = with_main(main);
        let o = stop(&w, &p, &opts).await;
        assert_eq!(o.outcome, Verdict::Remaining, "{o:?}");
        assert_eq!(o.survivors_total, 0, "{o:?}");
        assert_eq!(w.exit_of(main), Some((1600.0, 9)));
    });
}

/// Process mode: a main process stuck in uninterruptible sleep is reported as the survivor once
/// the kill timeout is over; the others are left alone as the mode asks.
#[test]
fn process_mode_reports_a_stuck_main_process() {
    paused(async {
        let w = Fake::new();
        let main = w.spawn(Spec::new("main").ignores(Signal::TERM).stuck());
        let helper = w.spawn(Spec::new("helper"));
        let p = policy(&[(Signal::TERM, 100)], 1000, KillMode::Process);
        let opts = with_main(main);
        let o = stop(&w, &p, &opts).await;
        assert_eq!(o.outcome, Verdict::Survivors, "{o:?}");
        assert_eq!(o.survivors[0].pid, main);
        assert!(w.alive(helper));
        assert!((1100.0..1101.0).contains(&o.elapsed_ms), "{}", o.elapsed_ms);
    });
}

/// A second request during the first of several steps goes straight to the final kill: the
/// later steps are skipped.
#[test]
fn escalation_skips_the_remaining_steps() {
    paused(async {
        let w = Fake::new();
        let app = w.spawn(Spec::new("app").ignores(Signal::TERM).ignores(Signal::INT));
        let p = policy(
            &[(Signal::TERM, 1000), (Signal::INT, 1000)],
            1000,
            KillMode::ControlGroup,
        );
        let o = stop_escalated(&w, &p, 300 * MS).await;
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        assert_eq!(signals(&o), ["SIGTERM", "SIGKILL"]);
        assert!(!w.signals_of(app).iter().any(|s| s == "SIGINT"));
        assert!(
            (300.0..301.0).contains(&o.steps[1].at_ms),
            "{}",
            o.steps[1].at_ms
        );
    });
}

/// `kill-mode=mixed`: the stop signal to the main process only, the final kill to everyone.
#[test]
fn mixed_mode_signals_the_main_process_and_kills_everyone() {
    paused(async {
        let w = Fake::new();
        let main = w.spawn(Spec::new("main").ignores(Signal::TERM));
        let helper = w.spawn(Spec::new("helper").ignores(Signal::TERM));
        let p = policy(&[(Signal::TERM, 500)], 1000, KillMode::Mixed);
        let opts = with_main(main);
        let o = stop(&w, &p, &opts).await;
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        assert_eq!(
            w.signals_of(main).first().map(String::as_str),
            Some("SIGTERM")
        );
        assert_eq!(
            w.signals_of(helper),
            ["SIGKILL"],
            "no SIGTERM, then the kill"
        );
        assert_eq!(w.exit_of(helper).map(|e| e.1), Some(9));
        assert_eq!(o.steps[1].via, Some("cgroup.kill"));
        assert_eq!(o.killed_total, 2, "{o:?}");
    });
}

/// Without `cgroup.kill` (Linux < 5.14), the final kill is the fallback: freeze, SIGKILL each
/// member through its pidfd, thaw.
#[test]
fn without_cgroup_kill_the_fallback_freezes_kills_each_and_thaws() {
    paused(async {
        let w = Fake::new();
        w.without_cgroup_kill();
        let a = w.spawn(Spec::new("a").ignores(Signal::TERM));
        let b = w.spawn(Spec::new("b").ignores(Signal::TERM));
        let o = stop(&w, &term(400), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        assert_eq!(o.steps[1].via, Some("fallback"));
        let log = w.log();
        let pos = |what: &str| log.iter().position(|l| l.contains(what)).expect(what);
        assert!(pos("freeze /task 1") < pos("SIGKILL a"));
        assert!(pos("SIGKILL b") < pos("freeze /task 0"), "{log:?}");
        assert_eq!(w.exit_of(a).map(|e| e.1), Some(9));
        assert_eq!(w.exit_of(b).map(|e| e.1), Some(9));
    });
}

/// Two TERM-ignoring processes, a 400 ms grace: the stop kills by the fallback, at the deadline.
async fn two_killed_by_the_fallback_at_400ms(w: &Fake) -> (Outcome, i32, i32) {
    let a = w.spawn(Spec::new("a").ignores(Signal::TERM));
    let b = w.spawn(Spec::new("b").ignores(Signal::TERM));
    let o = stop(w, &term(400), &StopOptions::default()).await;
    assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
    let kill = &o.steps[1];
    assert_eq!(kill.via, Some("fallback"));
    assert!((400.0..401.0).contains(&kill.at_ms), "{}", kill.at_ms);
    (o, a, b)
}

/// A threaded cgroup refuses `cgroup.kill` when it is written (`EOPNOTSUPP`): the final kill
/// is then the fallback, on time, and the refusal is the expected answer there, not an error.
#[test]
fn a_refused_cgroup_kill_falls_back_at_once_without_an_error() {
    paused(async {
        let w = Fake::new();
        w.refuse_cgroup_kill();
        let (o, a, b) = two_killed_by_the_fallback_at_400ms(&w).await;
        assert_eq!(o.errors.count, 0, "{:?}", o.errors);
        // The record other stops read says how the kill went.
        let rec = crate::kernel::Kernel::final_kill_record(&w, &w.cgroup(0)).expect("recorded");
        assert_eq!(rec.via, "fallback");
        let log = w.log();
        let pos = |what: &str| log.iter().position(|l| l.contains(what)).expect(what);
        assert!(pos("freeze /task 1") < pos("SIGKILL a"), "{log:?}");
        assert_eq!(w.exit_of(a).map(|e| e.1), Some(9));
        assert_eq!(w.exit_of(b).map(|e| e.1), Some(9));
    });
}

/// A refused `cgroup.kill` whose fallback cannot open `cgroup.freeze` either (permission
/// denied): the fallback's SIGKILL through each pidfd still goes out at the deadline, unfrozen,
/// and the one failure is reported.
#[test]
fn a_fallback_that_cannot_freeze_still_kills_everyone_on_time() {
    paused(async {
        let w = Fake::new();
        w.refuse_cgroup_kill();
        w.refuse_fallback_path();
        let (o, a, b) = two_killed_by_the_fallback_at_400ms(&w).await;
        assert_eq!(o.errors.count, 1, "{:?}", o.errors);
        assert!(
            o.errors.examples[0].contains("cgroup.freeze"),
            "{:?}",
            o.errors
        );
        assert_eq!(w.exit_of(a).map(|e| e.1), Some(9));
        assert_eq!(w.exit_of(b).map(|e| e.1), Some(9));
    });
}

/// The fallback's rounds go on while someone is left that the last round did not signal: a
/// process that appeared after the first round (moved in, or forked before the freeze took)
/// is killed by the next, once everyone the first round killed is gone.
#[test]
fn the_fallback_repeats_for_processes_that_appear_after_a_round() {
    paused(async {
        let w = Fake::new();
        let opts = StopOptions {
            kill_method: KillMethod::Fallback,
            ..StopOptions::default()
        };
        w.spawn(Spec::new("forker").ignores(Signal::TERM).dies_after(5 * MS));
        // Appears 2 ms after the first round, while the forker is still exiting.
        w.spawn_later(402 * MS, Spec::new("child").ignores(Signal::TERM));
        let o = stop(&w, &term(400), &opts).await;
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        let child = crate::kernel::fake::FIRST_PID + 1;
        assert_eq!(w.signals_of(child), ["SIGKILL"]);
        let freezes = w
            .log()
            .iter()
            .filter(|l| l.contains("freeze /task 1"))
            .count();
        assert_eq!(freezes, 2, "two rounds: {:?}", w.log());
    });
}

/// The fallback kills even when `cgroup.freeze` cannot be written: the freeze only keeps new
/// forks from slipping between rounds.
#[test]
fn the_fallback_kills_when_the_freeze_is_refused() {
    paused(async {
        let w = Fake::new();
        w.without_cgroup_kill();
        w.refuse_freeze();
        let a = w.spawn(Spec::new("a").ignores(Signal::TERM));
        let o = stop(&w, &term(400), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        assert_eq!(w.exit_of(a), Some((400.0, 9)));
        assert!(
            !w.log().iter().any(|l| l.contains("freeze")),
            "{:?}",
            w.log()
        );
    });
}

/// The fallback's first round does not wait for the freeze to take (a task in uninterruptible
/// sleep can hold it off for as long as it is stuck): the kill goes out at the deadline. A
/// later round waits for it at most 1 s.
#[test]
fn a_slow_freeze_holds_up_no_kill_and_a_later_round_for_one_second_at_most() {
    paused(async {
        let w = Fake::new();
        w.set_freeze_delay(10_000 * MS);
        let opts = StopOptions {
            kill_method: KillMethod::Fallback,
            ..StopOptions::default()
        };
        let a = w.spawn(Spec::new("a").ignores(Signal::TERM).dies_after(5 * MS));
        w.spawn_later(402 * MS, Spec::new("b").ignores(Signal::TERM));
        let p = policy(&[(Signal::TERM, 400)], 5000, KillMode::ControlGroup);
        let o = stop(&w, &p, &opts).await;
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        assert_eq!(
            w.exit_of(a),
            Some((405.0, 9)),
            "killed at the deadline, not after a freeze"
        );
        let b = crate::kernel::fake::FIRST_PID + 1;
        let (died, _) = w.exit_of(b).expect("b killed");
        assert!(
            (1405.0..1406.0).contains(&died),
            "the second round waited 1 s: {died}"
        );
    });
}

/// A process stuck in uninterruptible sleep survives SIGKILL: once the kill timeout is over
/// it is reported (state D, its memory released), exit 4, and the stop ends.
#[test]
fn a_process_that_outlives_sigkill_is_reported_as_a_survivor() {
    paused(async {
        let w = Fake::new();
        let stuck = w.spawn(Spec::new("fusey").ignores(Signal::TERM).stuck());
        let o = stop(&w, &term(200), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Survivors, "{o:?}");
        assert_eq!(o.outcome.exit_code(), 4);
        assert_eq!(o.survivors_total, 1);
        assert_eq!(o.survivors[0].pid, stuck);
        assert_eq!(o.survivors[0].state, "D");
        assert!(o.survivors[0].memory_released);
        // Described twice (before and after the short look), its memory released once.
        assert_eq!(w.releases_of(stuck), 1);
        // The kill timeout (1 s) and a short look (200 ms) whether it exits after all.
        assert!(
            (1400.0..1500.0).contains(&o.elapsed_ms),
            "bounded: {}",
            o.elapsed_ms
        );
    });
}

/// A held process stuck in uninterruptible sleep never exits, so the round that goes out once
/// every held process is gone never comes: a process that appeared after the kill (unheld; one
/// that `cgroup.kill` spares, its leader gone, is the same to the rounds) is killed all the same,
/// by a round on a timer, not waited out and then reported as a survivor that outlived SIGKILL.
#[test]
fn a_latecomer_after_the_kill_is_killed_while_a_held_process_is_stuck() {
    paused(async {
        let w = Fake::new();
        let stuck = w.spawn(Spec::new("fusey").ignores(Signal::TERM).stuck());
        // The kill comes at 200 ms.
        w.spawn_later(300 * MS, Spec::new("late").ignores(Signal::TERM));
        let o = stop(&w, &term(200), &StopOptions::default()).await;
        let late = crate::kernel::fake::FIRST_PID + 1;
        assert!(
            w.signals_of(late).iter().any(|s| s == "SIGKILL"),
            "{:?} {o:?}",
            w.log()
        );
        assert!(!w.alive(late), "{o:?}");
        assert_eq!(o.outcome, Verdict::Survivors, "{o:?}");
        assert_eq!(o.survivors_total, 1, "{o:?}");
        assert_eq!(o.survivors[0].pid, stuck);
        // Halfway through the 1 s kill timeout; the bound is unchanged.
        let (at, _) = w.exit_of(late).expect("exited");
        assert!((700.0..800.0).contains(&at), "killed at {at}");
        assert!((1400.0..1500.0).contains(&o.elapsed_ms), "{}", o.elapsed_ms);
    });
}

/// The timed rounds go on while a stuck process keeps the cgroup populated, each a second after
/// the last one ended: latecomers that come after the first such round are killed by the next.
#[test]
fn timed_rounds_go_on_a_second_apart_until_the_kill_timeout() {
    paused(async {
        let w = Fake::new();
        w.spawn(Spec::new("fusey").ignores(Signal::TERM).stuck());
        // The kill at 200 ms, a 5 s kill timeout. Each timed round waits 50 ms for a freeze the
        // stuck process never lets take: rounds due at 1200, 2250, 3300 and 4350 ms.
        w.spawn_later(1500 * MS, Spec::new("late").ignores(Signal::TERM));
        w.spawn_later(3400 * MS, Spec::new("later").ignores(Signal::TERM));
        let p = policy(&[(Signal::TERM, 200)], 5000, KillMode::ControlGroup);
        let o = stop(&w, &p, &StopOptions::default()).await;
        for (pid, window) in [
            (crate::kernel::fake::FIRST_PID + 1, 2250.0..2350.0),
            (crate::kernel::fake::FIRST_PID + 2, 4350.0..4450.0),
        ] {
            let (at, _) = w.exit_of(pid).expect("killed");
            assert!(window.contains(&at), "{pid} killed at {at}: {:?}", w.log());
        }
        // None closer together than a second: the rounds are a second apart from the end of one
        // to the due time of the next.
        let rounds: Vec<u64> = w
            .log()
            .iter()
            .filter_map(|l| l.strip_suffix(" freeze /task 1"))
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(rounds, [1200, 2250, 3300, 4350], "{:?}", w.log());
        assert_eq!(o.survivors_total, 1, "{o:?}");
    });
}

/// A survivor is described in every round the stop waits on (here four: the other processes
/// keep exiting, then a short look), yet its memory release is started once: a release that
/// blocks on the survivor's `mmap_lock` must not be started again, each time on a new thread.
#[test]
fn a_survivors_memory_is_released_once_however_often_it_is_described() {
    paused(async {
        let w = Fake::new();
        let stuck = w.spawn(Spec::new("fusey").ignores(Signal::TERM).stuck());
        let dying: Vec<i32> = [("big", 1200), ("bigger", 2600)]
            .into_iter()
            .map(|(name, ms)| w.spawn(Spec::new(name).ignores(Signal::TERM).dies_after(ms * MS)))
            .collect();
        let o = stop(&w, &term(100), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Survivors, "{o:?}");
        assert_eq!(o.survivors_total, 1);
        assert_eq!(o.survivors[0].pid, stuck);
        assert!(o.survivors[0].memory_released, "{o:?}");
        assert_eq!(w.releases_of(stuck), 1);
        for pid in dying {
            assert!(w.releases_of(pid) <= 1, "{pid}: {}", w.releases_of(pid));
        }
        // Rounds at 1100, 2100 and 3100 ms (the count falls), then a 200 ms look.
        assert!((3300.0..3400.0).contains(&o.elapsed_ms), "{}", o.elapsed_ms);
    });
}

/// SIGKILLed processes that take long to exit (a large address space to tear down, a loaded
/// machine) are not survivors: while their number keeps falling the stop waits on, a second at
/// a time, and reports them killed.
#[test]
fn slowly_exiting_processes_are_waited_for_not_reported_as_survivors() {
    paused(async {
        let w = Fake::new();
        // Killed at 100 ms, the kill timeout ends at 1100: they exit at 1300, 2700 and 3500, one
        // in each second the stop waits on.
        for (name, ms) in [("big", 1200), ("bigger", 2600), ("biggest", 3400)] {
            w.spawn(Spec::new(name).ignores(Signal::TERM).dies_after(ms * MS));
        }
        let o = stop(&w, &term(100), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        assert_eq!(o.survivors_total, 0);
        let empty = o.empty_at_ms.expect("emptied");
        assert!((3500.0..3501.0).contains(&empty), "{empty}");
    });
}

/// Another stop of the same task sent its final kill while this one waited: this stop saw
/// the cgroup empty because of it, and says so instead of claiming a graceful exit.
#[test]
fn an_emptying_by_another_stops_kill_is_reported_as_that_kill() {
    paused(async {
        let w = Fake::new();
        let app = w.spawn(Spec::new("app").ignores(Signal::TERM));
        // The other stopper: its record, then its kill, 100 ms in.
        let other = async {
            tokio::time::sleep(100 * MS).await;
            w.record_other_kill(4242, 100 * MS, "cgroup.kill");
            let cg = w.cgroup(0);
            let k = crate::kernel::Kernel::kill_path(&w, &cg, KillMethod::Auto).expect("kill");
            crate::kernel::FinalKill::write_kill(&k).expect("write");
        };
        let (p, opts) = (term(5000), StopOptions::default());
        let (o, ()) = tokio::join!(stop(&w, &p, &opts), other);
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        let kill = o.steps.last().expect("steps");
        assert_eq!(kill.by_pid, Some(4242));
        assert_eq!(kill.via, Some("cgroup.kill"));
        assert!((100.0..101.0).contains(&kill.at_ms), "{}", kill.at_ms);
        assert_eq!(w.exit_of(app).map(|e| e.1), Some(9));
        let empty = o.empty_at_ms.expect("emptied");
        assert!((100.0..101.0).contains(&empty), "seen at once: {empty}");
    });
}

/// Another stop sent its final kill just before this one began, and was still going on (a task
/// of 3,000 processes takes half a second to die): this stop found the cgroup dying of it and
/// reports that kill, sent before it began (a negative `at_ms`), not a graceful exit. It said
/// `graceful`, exit 0, where the other said `killed` (helper-31).
#[test]
fn an_emptying_by_a_kill_sent_just_before_this_stop_is_reported_as_that_kill() {
    paused(async {
        let w = Fake::new();
        let app = w.spawn(Spec::new("app").ignores(Signal::TERM).dies_after(30 * MS));
        // The other stop's record, then its kill: the app dies 30 ms later.
        w.record_kill_in_flight(4242, 20 * MS, "cgroup.kill");
        let cg = w.cgroup(0);
        let k = crate::kernel::Kernel::kill_path(&w, &cg, KillMethod::Auto).expect("kill");
        crate::kernel::FinalKill::write_kill(&k).expect("write");
        let o = stop(&w, &term(5000), &StopOptions::default()).await;
        assert_eq!(w.exit_of(app).map(|e| e.1), Some(9));
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        assert_eq!(signals(&o), ["SIGTERM", "SIGKILL"]);
        let kill = o.steps.last().expect("steps");
        assert_eq!(kill.by_pid, Some(4242));
        assert_eq!(kill.via, Some("cgroup.kill"));
        assert!((-20.5..-19.5).contains(&kill.at_ms), "{}", kill.at_ms);
    });
}

/// A final-kill record not sent during this stop does not turn it into a kill: one an earlier
/// stop left behind, nor one dated after the moment the cgroup was seen empty (a forged record
/// once made a graceful stop report a kill 584,000 years into the stop).
#[test]
fn a_kill_record_from_before_this_stop_or_from_the_future_is_no_kill() {
    paused(async {
        for future in [false, true] {
            let w = Fake::new();
            w.spawn(Spec::new("app").flushes(Signal::TERM, 10 * MS));
            if future {
                w.record_other_kill(4242, 3_600_000 * MS, "cgroup.kill");
                // Not even as a kill in flight: it is dated after this stop began.
                w.set_kill_in_flight();
            } else {
                w.record_earlier_kill(4242, 60_000 * MS, "cgroup.kill");
            }
            let o = stop(&w, &term(5000), &StopOptions::default()).await;
            assert_eq!(o.outcome, Verdict::Graceful, "future {future}: {o:?}");
            assert_eq!(signals(&o), ["SIGTERM"]);
        }
    });
}

/// A task its owner froze cannot run its SIGTERM handler: the stop thaws it (after signalling
/// it), and the stop is graceful.
#[test]
fn a_frozen_task_is_thawed_so_it_can_honour_the_stop() {
    paused(async {
        let w = Fake::new();
        let sub = w.mkdir(0, "inner");
        let app = w.spawn(
            Spec::new("app")
                .in_cgroup(sub)
                .flushes(Signal::TERM, 100 * MS),
        );
        w.freeze(sub);
        let o = stop(&w, &term(5000), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Graceful, "{o:?}");
        assert!(o.thawed);
        assert_eq!(w.exit_of(app).map(|e| e.1), Some(0));
        let log = w.log();
        let pos = |what: &str| log.iter().position(|l| l.contains(what)).expect(what);
        assert!(
            pos("SIGTERM app") < pos("freeze /task/inner 0"),
            "signalled, then thawed: {log:?}"
        );
    });
}

/// In mixed mode only the main process is signalled; a frozen subtree is thawed all the same
/// (before the grace begins), or the main process could not run its handler.
#[test]
fn mixed_mode_thaws_a_frozen_subtree_too() {
    paused(async {
        let w = Fake::new();
        let sub = w.mkdir(0, "inner");
        let main = w.spawn(
            Spec::new("main")
                .in_cgroup(sub)
                .flushes(Signal::TERM, 100 * MS),
        );
        w.freeze(sub);
        let p = policy(&[(Signal::TERM, 5000)], 1000, KillMode::Mixed);
        let opts = with_main(main);
        let o = stop(&w, &p, &opts).await;
        assert_eq!(o.outcome, Verdict::Graceful, "{o:?}");
        assert!(o.thawed);
        assert_eq!(w.exit_of(main), Some((100.0, 0)));
    });
}

/// Beyond the descriptor budget, processes are signalled through a pidfd closed at once; the
/// stop still sees the cgroup empty through `cgroup.events` and ends gracefully.
#[test]
fn processes_beyond_the_descriptor_budget_are_signalled_all_the_same() {
    paused(async {
        let w = Fake::new();
        w.set_budget(2);
        let pids: Vec<i32> = (0..6)
            .map(|i| w.spawn(Spec::new(&format!("p{i}")).flushes(Signal::TERM, 10 * MS)))
            .collect();
        let o = stop(&w, &term(5000), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Graceful, "{o:?}");
        assert_eq!(o.steps[0].signalled, 6);
        assert_eq!(w.peak_held(), 2, "never more pidfds than the budget");
        for pid in pids {
            assert_eq!(w.signals_of(pid), ["SIGTERM", "SIGCONT"]);
        }
    });
}

/// An empty task is not signalled at all.
#[test]
fn an_empty_task_is_reported_empty() {
    paused(async {
        let w = Fake::new();
        let o = stop(&w, &term(5000), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Empty);
        assert!(o.steps.is_empty());
        assert!(w.log().is_empty());
    });
}

/// `SendSIGHUP=`: SIGHUP right after the stop signal, then SIGCONT.
#[test]
fn sighup_follows_the_stop_signal_when_asked() {
    paused(async {
        let w = Fake::new();
        let app = w.spawn(
            Spec::new("app")
                .flushes(Signal::TERM, 10 * MS)
                .on(Signal::HUP, Reaction::Ignore),
        );
        let mut p = term(1000);
        p.sighup = true;
        let o = stop(&w, &p, &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Graceful, "{o:?}");
        assert_eq!(w.signals_of(app), ["SIGTERM", "SIGHUP", "SIGCONT"]);
    });
}

/// A process whose parent never reaps it costs the stop 50 ms once (waiting for its status),
/// which is then unknown.
#[test]
fn an_unreaped_exit_costs_fifty_milliseconds_once() {
    paused(async {
        let w = Fake::new();
        let orphan = w.spawn(
            Spec::new("orphan")
                .flushes(Signal::TERM, 10 * MS)
                .reaped_after(None),
        );
        let o = stop(&w, &term(5000), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Graceful, "{o:?}");
        assert_eq!(o.empty_at_ms, Some(10.0));
        assert!((60.0..61.0).contains(&o.elapsed_ms), "{}", o.elapsed_ms);
        let exit = o.exits.iter().find(|e| e.pid == orphan).expect("exit");
        assert_eq!((exit.code, exit.wait_status), (None, None));
    });
}

/// Exit statuses: the main process's parent (its supervisor) reaping it late still gets its
/// status into the report (up to 500 ms); another process whose parent never reaps it costs
/// the stop 50 ms once, and its status is unknown.
#[test]
fn the_main_status_waits_for_a_late_reap_and_others_do_not() {
    paused(async {
        let w = Fake::new();
        let main = w.spawn(
            Spec::new("main")
                .flushes(Signal::TERM, 10 * MS)
                .reaped_after(Some(300 * MS)),
        );
        let orphan = w.spawn(Spec::new("orphan").reaped_after(None));
        let opts = with_main(main);
        let o = stop(&w, &term(5000), &opts).await;
        assert_eq!(o.outcome, Verdict::Graceful, "{o:?}");
        let exit = |pid: i32| o.exits.iter().find(|e| e.pid == pid).expect("exit");
        assert_eq!(exit(main).code, Some(0), "{o:?}");
        assert_eq!(exit(orphan).code, None);
        assert_eq!(exit(orphan).signal, None);
        assert!(
            (310.0..320.0).contains(&o.elapsed_ms),
            "until the main reap: {}",
            o.elapsed_ms
        );
    });
}

/// Command lines are for the report of what the final kill takes: asked for once, when the
/// listing before that kill runs (deadline - 50 ms), only for processes not seen to exit. The
/// one that honoured the signal is never read; the one killed is reported with its own.
#[test]
fn command_lines_are_read_only_for_what_the_final_kill_takes() {
    paused(async {
        let w = Fake::new();
        let quick = w.spawn(Spec::new("quick"));
        let app = w.spawn(Spec::new("app").ignores(Signal::TERM));
        let o = stop(&w, &term(1000), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        let asked = w.cmdline_requests();
        assert_eq!(asked.len(), 1, "{asked:?}");
        let (at, pids) = &asked[0];
        assert!((950.0..951.0).contains(at), "{at}");
        assert_eq!(pids, &[app], "not {quick}, which exited");
        assert_eq!(o.killed[0].pid, app);
        assert_eq!(o.killed[0].cmdline, "app --fake");
    });
}

/// A task that honours its signal within the grace is never read at all.
#[test]
fn a_task_that_ends_in_time_has_no_command_line_read() {
    paused(async {
        let w = Fake::new();
        w.spawn(Spec::new("bash"));
        w.spawn(Spec::new("app").flushes(Signal::TERM, 500 * MS));
        let o = stop(&w, &term(5000), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Graceful, "{o:?}");
        assert_eq!(w.cmdline_requests(), []);
    });
}

/// When the grace can be cut short at any moment (an escalation handle: a second Ctrl-C), the
/// command lines are asked for at once, so the report of the kill that follows has them.
#[test]
fn with_an_escalation_handle_command_lines_are_asked_for_at_once() {
    paused(async {
        let w = Fake::new();
        let app = w.spawn(Spec::new("app").ignores(Signal::TERM));
        let o = stop_escalated(&w, &term(30_000), 200 * MS).await;
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        let asked = w.cmdline_requests();
        assert!(asked[0].0 < 1.0, "{asked:?}");
        assert_eq!(o.killed[0].pid, app);
        assert_eq!(o.killed[0].cmdline, "app --fake");
    });
}

/// An escalation handle alone (`gracekill stop` listens for SIGTERM and Ctrl-C to cut its grace
/// short) does not make the command lines be read at once: a stop whose task ends in time reads
/// none, and a cut-short one reports names only.
#[test]
fn an_escalation_handle_alone_reads_no_command_lines_early() {
    paused(async {
        let w = Fake::new();
        w.spawn(Spec::new("quick").flushes(Signal::TERM, 100 * MS));
        let o = stop_cut_short(&w, &term(30_000), 20_000 * MS, false).await;
        assert_eq!(o.outcome, Verdict::Graceful, "{o:?}");
        assert_eq!(w.cmdline_requests(), []);
        let w = Fake::new();
        let app = w.spawn(Spec::new("app").ignores(Signal::TERM));
        let o = stop_cut_short(&w, &term(30_000), 200 * MS, false).await;
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        assert!(o.steps[1].at_ms < 201.0, "cut short: {o:?}");
        assert_eq!(o.killed[0].pid, app);
        assert_eq!(o.killed[0].comm, "app");
        assert!(
            w.cmdline_requests().iter().all(|(at, _)| *at >= 200.0),
            "{:?}",
            w.cmdline_requests()
        );
    });
}

/// With several steps, the command lines are asked for in the last one, before its deadline:
/// those described in the first step included, and no wakeup is spent on them before.
#[test]
fn with_several_steps_command_lines_are_asked_for_in_the_last() {
    paused(async {
        let w = Fake::new();
        let app = w.spawn(Spec::new("app").ignores(Signal::TERM).ignores(Signal::INT));
        let p = policy(
            &[(Signal::TERM, 300), (Signal::INT, 300)],
            1000,
            KillMode::ControlGroup,
        );
        let o = stop(&w, &p, &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
        let asked = w.cmdline_requests();
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert!((550.0..551.0).contains(&asked[0].0), "{asked:?}");
        assert_eq!(asked[0].1, [app]);
        assert_eq!(o.killed[0].cmdline, "app --fake");
    });
}

/// A task that owns its cgroup makes its lists unreadable once signalled, then forks a child the
/// stop never sees. The fallback cannot list anyone: it still kills the process it holds, and the
/// report says that the subtree could not be listed instead of blaming processes stuck in their
/// exit.
#[test]
fn the_fallback_kills_what_it_holds_when_the_task_hides_its_lists() {
    paused(async {
        let w = Fake::new();
        w.without_cgroup_kill();
        let app = w.spawn(Spec::new("app").ignores(Signal::TERM));
        w.refuse_listing_after(100 * MS);
        w.spawn_later(200 * MS, Spec::new("child").ignores(Signal::TERM));
        let o = stop(&w, &term(1000), &StopOptions::default()).await;
        assert!(!w.alive(app), "the held process survived: {o:?}");
        assert_eq!(
            w.signals_of(app).last().map(String::as_str),
            Some("SIGKILL")
        );
        assert_eq!(o.outcome, Verdict::Survivors, "the child is left: {o:?}");
        assert!(o.errors.count > 1, "{o:?}");
        // One cause, met at every read: one example, leaving room for any other.
        assert_eq!(o.errors.examples.len(), 1, "{:?}", o.errors);
        assert!(
            o.warnings
                .iter()
                .any(|w| w.contains("not listed completely")),
            "{:?}",
            o.warnings
        );
        assert!(
            !o.warnings.iter().any(|w| w.contains("stuck in their exit")),
            "{:?}",
            o.warnings
        );
        // Nothing can be counted, so nothing is seen dying: after the kill timeout the child
        // gets one look (1 s), not the 5 s given to a number that keeps falling.
        assert!(
            o.elapsed_ms <= 1000.0 + 1000.0 + 1000.0 + 300.0,
            "{}",
            o.elapsed_ms
        );
    });
}

/// The fallback's kill of a process it holds can be refused (`EPERM`: the process changed its
/// credentials after its SIGTERM, and the stopper is not root). The refusal is reported, the
/// process is a survivor, and nothing claims the task ended.
#[test]
fn a_refused_kill_of_a_held_process_is_reported_not_hidden() {
    paused(async {
        let w = Fake::new();
        w.without_cgroup_kill();
        let app = w.spawn(Spec::new("app").ignores(Signal::TERM).forbids(Signal::KILL));
        w.refuse_listing_after(100 * MS);
        let o = stop(&w, &term(1000), &StopOptions::default()).await;
        assert!(w.alive(app));
        assert_eq!(o.outcome, Verdict::Survivors, "{o:?}");
        assert!(
            o.errors
                .examples
                .iter()
                .any(|e| e.contains("send SIGKILL") && e.contains("not permitted")),
            "{:?}",
            o.errors
        );
    });
}

/// A process that has exited stays listed until its last context switch, and its pidfd is
/// readable before that. A pass that lists it again then must not take it for a newcomer that
/// reused its pid: it is not signalled (or counted) again, its exit is reported once, and when
/// it is still listed as the final kill nears (a long linger) it is not reported as killed.
#[test]
fn an_exited_process_still_listed_is_not_signalled_or_reported_twice() {
    for linger in [5 * MS, 1100 * MS] {
        paused(async {
            let w = Fake::new();
            let app = w.spawn(
                Spec::new("app")
                    .on(
                        Signal::TERM,
                        Reaction::Exit {
                            after: Duration::ZERO,
                            code: 7,
                        },
                    )
                    .listed_after_exit(linger),
            );
            let stubborn = w.spawn(Spec::new("stubborn").ignores(Signal::TERM));
            let o = stop(&w, &term(1000), &StopOptions::default()).await;
            assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
            assert_eq!(o.steps[0].signalled, 2, "{o:?}");
            assert_eq!(w.signals_of(app), ["SIGTERM"], "{:?}", w.log());
            let pids: Vec<i32> = o.exits.iter().map(|e| e.pid).collect();
            assert_eq!(pids, [app, stubborn], "{o:?}");
            let killed: Vec<i32> = o.killed.iter().map(|k| k.pid).collect();
            assert_eq!(killed, [stubborn], "linger {linger:?}: {o:?}");
            assert_eq!(o.killed_total, 1, "{o:?}");
        });
    }
}

/// The system's file table fills up (a task can open files by the million) while the final
/// kill's listing runs: the stop gives up half of its pidfds to go on. Those it had already
/// passed over as held are then in neither list, so the report must say its count is partial
/// rather than name fewer processes as if that were all of them. Without the shortage the same
/// task is listed whole and every process is named.
#[test]
fn pidfds_given_up_during_the_last_listing_make_the_count_partial() {
    for shortage in [false, true] {
        paused(async {
            let w = Fake::new();
            let held: Vec<i32> = (0..10)
                .map(|i| w.spawn(Spec::new(&format!("p{i}")).ignores(Signal::TERM)))
                .collect();
            w.spawn_later(900 * MS, Spec::new("late").ignores(Signal::TERM));
            if shortage {
                w.refuse_opens_after(940 * MS);
            }
            let o = stop(&w, &term(1000), &StopOptions::default()).await;
            assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
            let partial = o
                .warnings
                .iter()
                .any(|w| w.contains("not listed completely before the final kill"));
            assert_eq!(partial, shortage, "{o:?}");
            if shortage {
                assert!(o.errors.count > 0, "{:?}", o.errors);
            } else {
                let named: Vec<i32> = o.killed.iter().map(|k| k.pid).collect();
                assert!(held.iter().all(|p| named.contains(p)), "{o:?}");
                assert_eq!(o.killed_total, 11, "{o:?}");
            }
        });
    }
}

/// A watcher that refuses every pidfd (`epoll_ctl`: `ENOSPC`, as when a task of the stopper's
/// user has used up `fs.epoll.max_user_watches`) costs the early wakeups, never the stop: in
/// every kill mode each process gets the stop signal once, the whole grace, then the kill, and
/// the refusal is reported.
#[test]
fn a_watcher_refusing_pidfds_does_not_end_the_stop() {
    paused(async {
        for mode in [KillMode::ControlGroup, KillMode::Mixed, KillMode::Process] {
            let w = Fake::new();
            w.refuse_watch();
            let main = w.spawn(Spec::new("main").ignores(Signal::TERM));
            let other = w.spawn(Spec::new("other").ignores(Signal::TERM));
            let p = policy(&[(Signal::TERM, 500)], 1000, mode);
            let cg = w.cgroup(0);
            let o = run_engine(&w, &cg, &p, &with_main(main))
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: the stop ended in an error: {e}"));
            assert_eq!(signals(&o), ["SIGTERM", "SIGKILL"], "{mode:?}: {o:?}");
            let at = o.steps[1].at_ms;
            assert!((500.0..510.0).contains(&at), "{mode:?}: kill at {at} ms");
            let terms = w
                .signals_of(main)
                .iter()
                .filter(|s| *s == "SIGTERM")
                .count();
            assert_eq!(terms, 1, "{mode:?}: {:?}", w.log());
            assert_eq!(w.exit_of(main).map(|e| e.1), Some(9), "{mode:?}");
            assert!(o.errors.count >= 1, "{mode:?}: {:?}", o.errors);
            assert!(o.errors.examples[0].contains("epoll_ctl"), "{:?}", o.errors);
            if mode == KillMode::Process {
                assert_eq!(o.outcome, Verdict::Remaining, "{o:?}");
                assert!(w.alive(other));
            } else {
                assert_eq!(o.outcome, Verdict::Killed, "{mode:?}: {o:?}");
                assert!(!w.alive(other));
                // Mixed mode sends the stop signal to the main process only.
                let terms = w
                    .signals_of(other)
                    .iter()
                    .filter(|s| *s == "SIGTERM")
                    .count();
                let want = usize::from(mode == KillMode::ControlGroup);
                assert_eq!(terms, want, "{mode:?}: {:?}", w.log());
            }
        }
    });
}

/// The engine's own event loop failing once the stop signal is out (nothing a task can cause:
/// what it can is counted and the stop goes on, as above) still ends in the kill: it can no
/// longer time the grace, so the kill goes out at once, then the error is returned.
#[test]
fn an_engine_failure_after_the_signals_still_sends_the_final_kill() {
    paused(async {
        for mode in [KillMode::ControlGroup, KillMode::Process] {
            let w = Fake::new();
            w.fail_waits();
            let main = w.spawn(Spec::new("main").ignores(Signal::TERM));
            let other = w.spawn(Spec::new("other").ignores(Signal::TERM));
            let p = policy(&[(Signal::TERM, 500)], 1000, mode);
            let cg = w.cgroup(0);
            let r = run_engine(&w, &cg, &p, &with_main(main)).await;
            assert!(r.is_err(), "{mode:?}: {r:?}");
            assert_eq!(w.signals_of(main)[0], "SIGTERM", "{mode:?}");
            assert_eq!(w.exit_of(main), Some((0.0, 9)), "{mode:?}: {:?}", w.log());
            assert_eq!(w.alive(other), mode == KillMode::Process, "{mode:?}");
        }
    });
}

/// Survivors counted once are not forgotten because a later look could not list them (the
/// task made its lists unreadable, or the stopper ran out of descriptors): the report keeps
/// the last whole count rather than saying none are left.
#[test]
fn a_later_look_that_cannot_list_does_not_erase_the_survivors() {
    paused(async {
        let w = Fake::new();
        spawn_stuck(&w, 3);
        // After the kill timeout's first look (at 1500 ms), before the next.
        w.refuse_listing_after(1600 * MS);
        let o = stop(&w, &term(500), &StopOptions::default()).await;
        assert_eq!(o.outcome, Verdict::Survivors, "{o:?}");
        assert_eq!(o.survivors_total, 3, "{o:?}");
        assert_eq!(o.survivors.len(), 3, "{o:?}");

        // Nor does such a look keep one that has exited since: a process slow to die of
        // SIGKILL (not stuck) is no survivor once gone.
        let w = Fake::new();
        let slow = w.spawn(
            Spec::new("slow")
                .ignores(Signal::TERM)
                .dies_after(1200 * MS),
        );
        spawn_stuck(&w, 2);
        w.refuse_listing_after(1600 * MS);
        let o = stop(&w, &term(500), &StopOptions::default()).await;
        assert_eq!(w.exit_of(slow).map(|e| e.1), Some(9));
        assert_eq!(o.survivors_total, 2, "{o:?}");
        assert!(o.survivors.iter().all(|s| s.pid != slow), "{o:?}");

        // More than the report describes: every one counted before is counted again, none
        // twice, and no more than MAX_LISTED described.
        let w = Fake::new();
        spawn_stuck(&w, 150);
        w.refuse_listing_after(1600 * MS);
        let o = stop(&w, &term(500), &StopOptions::default()).await;
        assert_eq!(o.survivors_total, 150, "{}", o.survivors_total);
        assert_eq!(o.survivors.len(), crate::report::MAX_LISTED);
    });
}

/// The survivors' memory releases hold a pidfd each: they stay within the stop's descriptor
/// budget, and those not tried for lack of one say so.
#[test]
fn memory_releases_keep_within_the_descriptor_budget() {
    paused(async {
        let w = Fake::new();
        w.set_budget(2);
        let pids = spawn_stuck(&w, 5);
        let o = stop(&w, &term(500), &StopOptions::default()).await;
        assert_eq!(o.survivors_total, 5, "{o:?}");
        let started: usize = pids.iter().map(|&p| w.releases_of(p)).sum();
        assert!(started <= 2, "{started} releases started, budget 2");
        let untried = o
            .survivors
            .iter()
            .filter(|s| s.mrelease_error.as_deref() == Some("not tried: no descriptor to spare"))
            .count();
        assert_eq!(untried, 5 - started, "{o:?}");
    });
}

/// A child forked on the signal (a shell's trap starting a helper) is found by the step's next
/// enumeration pass, at once: not left to the listing before the final kill.
#[test]
fn a_child_forked_on_the_signal_is_signalled_by_the_next_pass() {
    paused(async {
        let w = Fake::new();
        let sh = w.spawn(Spec::new("sh").on(Signal::TERM, Reaction::Fork));
        let o = stop(&w, &term(1000), &StopOptions::default()).await;
        let child = sh + 1;
        assert!(
            w.log()
                .iter()
                .any(|l| l == &format!("0 SIGTERM sh-child[{child}]")),
            "{:?}",
            w.log()
        );
        assert_eq!(o.steps[0].signalled, 2, "{o:?}");
        assert_eq!(o.outcome, Verdict::Killed, "{o:?}");
    });
}

/// Process mode, the watcher refusing the main process: its exit is seen at the step's
/// deadline at the latest, and ends the stop there, without the later steps, a false "nothing
/// was signalled" or a kill of nobody.
#[test]
fn an_unwatched_main_process_that_exits_ends_the_stop_at_the_deadline() {
    paused(async {
        let w = Fake::new();
        w.refuse_watch();
        let main = w.spawn(Spec::new("main").flushes(Signal::TERM, 100 * MS));
        let helper = w.spawn(Spec::new("helper"));
        let p = policy(
            &[(Signal::TERM, 1000), (Signal::INT, 1000)],
            1000,
            KillMode::Process,
        );
        let o = stop(&w, &p, &with_main(main)).await;
        assert_eq!(o.outcome, Verdict::Remaining, "{o:?}");
        assert_eq!(signals(&o), ["SIGTERM"], "{o:?}");
        assert!((1000.0..1010.0).contains(&o.elapsed_ms), "{}", o.elapsed_ms);
        assert!(
            !o.warnings
                .iter()
                .any(|m| m.contains("nothing was signalled")),
            "{o:?}"
        );
        assert_eq!(w.exit_of(main).map(|e| e.1), Some(0));
        assert!(w.alive(helper));
    });
}

/// The same failure on the fallback's path (no `cgroup.kill`), the watcher breaking once the
/// first pass has signalled: the kill round still SIGKILLs every member and thaws the cgroup.
#[test]
fn an_engine_failure_on_the_fallback_path_still_kills_and_thaws() {
    paused(async {
        let w = Fake::new();
        w.without_cgroup_kill();
        w.break_watcher_after_refreshes(1);
        let pids: Vec<i32> = (0..3)
            .map(|i| w.spawn(Spec::new(&format!("p{i}")).ignores(Signal::TERM)))
            .collect();
        let cg = w.cgroup(0);
        let r = run_engine(&w, &cg, &term(500), &StopOptions::default()).await;
        assert!(r.is_err(), "{r:?}");
        for p in pids {
            assert_eq!(w.signals_of(p)[0], "SIGTERM", "{:?}", w.log());
            assert_eq!(w.exit_of(p), Some((0.0, 9)), "{:?}", w.log());
        }
        assert!(!w.freeze_written(0), "left frozen: {:?}", w.log());
    });
}
