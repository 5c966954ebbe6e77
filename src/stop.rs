//! The engine: runs a [`Policy`] against a cgroup and returns an [`Outcome`].
//!
//! 0. Before the first signal, open what the final kill will write (`cgroup.kill`, or
//!    `cgroup.freeze` for the fallback): a stop that could not finish does not start.
//! 1. Signal every process in the subtree (or only the main process, per the kill mode) through
//!    a pidfd proven to belong to the cgroup, each followed by SIGCONT (and SIGHUP if asked);
//!    enumerate again until a pass finds no one new, or the step's grace is over. Thaw a frozen
//!    cgroup so handlers can run.
//! 2. Wait for `populated 0`, event-driven, until the step's grace ends; then the next step.
//! 3. Write `cgroup.kill` (5.14), or take the fallback: freeze, SIGKILL each member through its
//!    pidfd, thaw, until empty. Nothing is read about the task before the kill is sent.
//! 4. Wait up to the kill timeout, counted from the kill; report survivors (state D).
//!
//! The task is the adversary: nothing it does to itself may make a stop hang, spare a process
//! or report something false. So an error about one process or one cgroup (it cannot be opened,
//! signalled, listed) is recorded in the outcome and never prevents the final kill; the engine
//! holds a bounded number of descriptors whatever the task's shape; nothing on the way to the
//! kill reads the task's memory (`/proc/<pid>/cmdline` can block on its `mmap_lock`).
//!
//! The stop ends when the cgroup is empty, never because one particular process died.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use rustix::io::Errno;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cgroup::{Cgroup, Mount, is_gone};
use crate::error::{Error, Result};
use crate::guard;
pub use crate::kernel::KillMethod;
use crate::kernel::{
    Cmdlines, FinalKill, Kernel, MemoryRelease, Named, Real, TaskCgroup, TaskProc, TaskWatch,
    errno_name,
};
use crate::pidfd::{Membership, PidFd, membership_method};
use crate::policy::{KillMode, Policy, Signal};
use crate::report::{Exit, Killed, MAX_LISTED, Outcome, Problems, StepReport, Survivor, Verdict};
use crate::task::{self, FinalKillRecord, PolicySource, StopPlan};
use crate::watch::{Wake, deadline_after};

/// A snapshot for progress displays, passed to [`StopOptions::progress`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Progress {
    /// The current step's signal (`SIGTERM`), or `SIGKILL` during the final kill.
    pub phase: String,
    /// When the current step gives up.
    pub deadline: Instant,
    /// Processes the engine knows to be alive.
    pub remaining: usize,
    /// A few of their names.
    pub names: Vec<String>,
}

/// A progress callback. It runs on the stop's own thread, between its deadlines: it must not
/// block (on a terminal or pipe the task shares, say); hand the snapshot off and return.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Options beyond the policy.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct StopOptions {
    /// How to deliver the final kill. [`stop_task`] and [`stop_named`] take the fallback also
    /// when `GRACEKILL_FORCE_FALLBACK=1` is in the environment; [`stop`] uses exactly this.
    pub kill_method: KillMethod,
    /// The task's main process, for [`KillMode::Mixed`] and [`KillMode::Process`].
    pub main_pid: Option<i32>,
    /// Called on each wakeup while waiting (only when set; costs a few `/proc` reads).
    pub progress: Option<ProgressFn>,
    /// Notified to cut the grace short and go straight to the final kill (a second Ctrl-C).
    pub escalate: Option<Arc<Notify>>,
    /// With `escalate`: the cut is likely at any moment (a person at a terminal, as for `run`'s
    /// second Ctrl-C), so the command lines for the final kill's report are read at once, not
    /// shortly before the deadline. Else a cut-short stop reports the killed processes' names
    /// without their command lines, and a stop whose task ends in time reads none.
    pub cmdlines_at_once: bool,
}

impl std::fmt::Debug for StopOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopOptions")
            .field("kill_method", &self.kill_method)
            .field("main_pid", &self.main_pid)
            .finish_non_exhaustive()
    }
}

/// Enumeration passes per step before giving up on a process tree that forks faster than we
/// signal it (the final kill, atomic against forks, deals with it).
const MAX_PASSES: usize = 32;

/// How many members a pass handles between two looks at the clock (a vDSO read: cheap; under
/// a fork storm one member can cost milliseconds).
const CLOCK_EVERY: usize = 8;

/// The longest the pids of the subtree are listed (for the report) before a final kill that
/// comes before its deadline (a second Ctrl-C), or in the first step of mixed mode.
const PRE_KILL_LIST_BUDGET: Duration = Duration::from_millis(5);

/// How long before the last grace ends the subtree is listed for the final kill's report, so
/// that nothing but the kill itself happens at the deadline. The listing may use all of it, and
/// stops reading there (or [`PRE_KILL_LIST_BUDGET`] after it started, if it started late: the
/// step's pass used the grace up): the kernel needs about 1.2 us per process to produce
/// `cgroup.procs`, as much again for `cgroup.threads` (25 ms for 10,000 processes), and a task
/// may have grown since its last pass. The kill is not held up by it; a count it could not
/// finish says so.
const PRE_KILL_LEAD: Duration = Duration::from_millis(50);

/// How much longer than the kill timeout SIGKILLed processes that are not stuck (not in state D)
/// are given to finish exiting, while their number keeps falling, before what is left is
/// reported as survivors.
const DYING_MAX: Duration = Duration::from_secs(5);

/// How long dying processes are given to show their number falling (or, where the subtree
/// cannot be listed, to empty it) before the next look.
const DYING_ROUND: Duration = Duration::from_secs(1);

/// How long survivors that all look stuck are watched for one of them exiting, before they are
/// reported as stuck.
const STUCK_PROBE: Duration = Duration::from_millis(200);

/// While the cgroup stays populated after the final kill, and someone the stop holds is still
/// there, how often a kill round goes out all the same (see [`Engine::kill_rounds`]).
const KILL_ROUND_EVERY: Duration = Duration::from_secs(1);

/// No timed kill round within this much of the kill deadline (and a timed round waits this long
/// at most for its freeze).
const KILL_ROUND_MIN: Duration = Duration::from_millis(50);

/// The main process (process mode) that is not stuck gets this long after the kill timeout.
const DYING_GRACE: Duration = Duration::from_secs(1);

/// Is this survivor stuck, rather than a SIGKILLed process that is still exiting? Held, every
/// thread too: in uninterruptible sleep outside its own exit, or in a tracing stop (`t`: a
/// tracer that traces its exit holds it there until it resumes it, and a SIGKILL sent to a
/// dying process is dropped, so no kill round can free it).
fn is_stuck(s: &Survivor) -> bool {
    let held = |state: &str| matches!(state, "D" | "t");
    held(&s.state)
        && !(s.state == "D" && s.wchan == "do_exit")
        && s.threads.iter().all(|t| held(&t.state))
}

/// The longest the survivors report may take after the kill timeout.
const SURVIVOR_REPORT_BUDGET: Duration = Duration::from_millis(250);

/// Stops the task in `cg` as its owner asked: `given` (if any) replaces the stored policy as a
/// whole; else the policy `run` recorded on the task, if the caller may trust that record
/// ([`crate::task::Trust`]); else the default. The main pid comes from `opts` or a trusted
/// record. Records that cannot be read or parsed become warnings in the outcome.
///
/// This is what `gracekill stop TASK` and `gracekill_stop()` do.
///
/// # Errors
/// As [`stop`].
///
/// # Panics
/// As [`stop`], on a runtime without timers.
pub async fn stop_task(cg: &Cgroup, given: Option<Policy>, opts: &StopOptions) -> Result<Outcome> {
    let plan = StopPlan::for_task(cg, given, opts.main_pid);
    let opts = StopOptions {
        main_pid: plan.main_pid,
        kill_method: opts.kill_method.for_task(),
        ..opts.clone()
    };
    // A task of a `gracekill run` that is gone (SIGKILLed, say): nobody else will remove its
    // cgroup once it is empty, so this stop does.
    let run_gone = matches!(task::supervisor(cg), task::Supervisor::Gone);
    let mut outcome = stop(cg, &plan.policy, &opts).await?;
    outcome.policy_source = plan.source;
    let mut warnings = plan.warnings;
    for w in &warnings {
        tracing::warn!(cgroup = %cg.rel(), "{w}");
    }
    warnings.append(&mut outcome.warnings);
    outcome.warnings = warnings;
    if run_gone && !outcome.cgroup_removed && cg.events().is_ok_and(|e| !e.populated) {
        // Up to a second of system calls: off this thread, so that other stops on the same
        // runtime keep their deadlines meanwhile.
        let removed = match cg.try_clone() {
            Ok(c) => tokio::task::spawn_blocking(move || task::remove_cgroup(&c))
                .await
                .unwrap_or_else(|e| Err(Error::Input(format!("cgroup removal failed: {e}")))),
            Err(e) => Err(e),
        };
        match removed {
            Ok(()) => outcome.cgroup_removed = true,
            Err(e) => {
                let w = format!("the task's run is gone and its cgroup stays: {e}");
                tracing::warn!(cgroup = %cg.rel(), "{w}");
                outcome.warnings.push(w);
            }
        }
    }
    Ok(outcome)
}

/// [`stop_task`] on a private single-threaded tokio runtime.
///
/// # Errors
/// As [`stop_task`], plus failing to build the runtime.
pub fn stop_task_blocking(
    cg: &Cgroup,
    given: Option<Policy>,
    opts: &StopOptions,
) -> Result<Outcome> {
    runtime(cg)?.block_on(stop_task(cg, given, opts))
}

/// Stops the task a `TASK` argument names (a name under gracekill's root or a cgroup path; see
/// [`task::locate`]) as [`stop_task`] does: checks `given` before touching anything, finds the
/// cgroup2 mount, opens the task, stops it. This is `gracekill stop TASK` and
/// `gracekill_stop()`.
///
/// # Errors
/// [`Error::Input`] for an invalid `given` policy (before anything else is looked at); as
/// [`Mount::discover`], [`task::open`] and [`stop_task`].
///
/// # Panics
/// As [`stop`], on a runtime without timers.
pub async fn stop_named(task: &str, given: Option<Policy>, opts: &StopOptions) -> Result<Outcome> {
    let cg = open_named(task, given.as_ref())?;
    stop_task(&cg, given, opts).await
}

/// [`stop_named`] on a private single-threaded tokio runtime.
///
/// # Errors
/// As [`stop_named`], plus failing to build the runtime.
pub fn stop_named_blocking(
    task: &str,
    given: Option<Policy>,
    opts: &StopOptions,
) -> Result<Outcome> {
    let cg = open_named(task, given.as_ref())?;
    stop_task_blocking(&cg, given, opts)
}

/// The task of a [`stop_named`], once the policy it is given is known to be valid.
fn open_named(task: &str, given: Option<&Policy>) -> Result<Cgroup> {
    if let Some(p) = given {
        p.validate()?;
    }
    let mount = Mount::discover()?;
    task::open(&mount, task)
}

/// Stops the task in `cg` by exactly `policy` (no stored record is consulted).
///
/// # Errors
/// [`Error::Input`] for an invalid policy or a refused target (the root cgroup, a cgroup holding
/// the caller); [`Error::Os`] with `EACCES`/`EPERM` when the caller may not write the cgroup's
/// `cgroup.kill` (or, for the fallback, `cgroup.freeze`). Nothing is signalled in these cases.
/// Errors about single processes or cgroups during the stop do not end it: they are counted in
/// [`Outcome::errors`].
///
/// # Runtime
/// Runs on a tokio runtime with its I/O driver and timers (`enable_all`): the I/O driver for the
/// stop's epoll set, the timers for the blind watcher, which takes over when no epoll watch can
/// be had (see `watch.rs`). [`StopRuntime`] builds one that falls back to timers alone.
///
/// # Panics
/// On a runtime without timers, at once and before anything is signalled (tokio's own "timers
/// are disabled"): the stop would otherwise need them only once a task of the caller's user had
/// used up its epoll watches, and would then panic halfway, its task unkilled.
pub async fn stop(cg: &Cgroup, policy: &Policy, opts: &StopOptions) -> Result<Outcome> {
    // Creating a timer is what panics without the time driver; it is never awaited.
    drop(tokio::time::sleep(Duration::ZERO));
    policy.validate()?;
    guard::check_stoppable(cg).await?;
    raise_fd_limit();
    run_engine(&Real, cg, policy, opts).await
}

/// The stop itself, on any [`Kernel`] (the real one, or the unit tests' scripted fake), once the
/// policy and the target have been checked.
pub(crate) async fn run_engine<K: Kernel>(
    k: &K,
    cg: &K::Cg,
    policy: &Policy,
    opts: &StopOptions,
) -> Result<Outcome> {
    let t0 = Instant::now();
    let w = match k.watch(cg) {
        Ok(w) => w,
        // Removed between being opened and now (`run` removes an emptied task): it is empty.
        Err(e) if is_gone(&e) => {
            return Ok(bare_outcome(cg, policy, Verdict::Empty, Some(0.0)));
        }
        Err(e) => return Err(e),
    };
    let blind = w.blind();
    let mut engine = Engine {
        k,
        cg,
        policy,
        opts,
        t0,
        t0_ns: k.now_ns(),
        w,
        kill: None,
        steps: Vec::new(),
        thawed: false,
        problems: Problems::default(),
        warnings: Vec::new(),
        described: HashMap::new(),
        early_comm: HashMap::new(),
        starts: HashMap::new(),
        to_describe: Vec::new(),
        cmdlines: k.cmdlines(),
        cmdlines_wanted: Vec::new(),
        cmdlines_due: None,
        last_step: false,
        step_done: HashMap::new(),
        budget: k.fd_budget(),
        thread_tgid: HashMap::new(),
        held_threads: HashMap::new(),
        own_threads: HashMap::new(),
        last_not_member: None,
        main_unwatched: false,
        sent_any: false,
        release: k.memory_release(),
        pre_kill: None,
        kill_in_flight: None,
    };
    if !engine.w.state()?.populated {
        tracing::debug!(cgroup = %cg.rel(), "already empty");
        return Ok(engine.outcome(Verdict::Empty, Some(t0), Vec::new(), 0, Vec::new(), 0));
    }
    // Before this stop's mark replaces the other stop's. Sent before this stop began: a record
    // dated later (another clock, or a forgery) is no kill in flight.
    engine.kill_in_flight = k.kill_in_flight(cg).filter(|r| r.at_ns <= engine.t0_ns);
    engine.kill = Some(k.kill_path(cg, opts.kill_method)?);
    if let Some(why) = blind {
        engine.warnings.push(format!(
            "no epoll watch could be had ({why}): the stop looked at cgroup.events and the \
             processes it held every 10 ms instead of being woken, and did not wait for exit \
             statuses"
        ));
    }
    engine.run().await
}

/// [`stop`] on a private single-threaded tokio runtime, for callers without one.
///
/// # Errors
/// As [`stop`], plus failing to build the runtime.
pub fn stop_blocking(cg: &Cgroup, policy: &Policy, opts: &StopOptions) -> Result<Outcome> {
    runtime(cg)?.block_on(stop(cg, policy, opts))
}

fn runtime(cg: &Cgroup) -> Result<StopRuntime> {
    StopRuntime::new().map_err(|e| {
        Error::os(
            "create tokio runtime for",
            cg.path(),
            crate::cgroup::errno_of(&e),
        )
    })
}

/// A single-threaded tokio runtime for a stop, as the blocking calls and the CLI use: with
/// tokio's I/O driver, or, when that cannot be built (its epoll registrations refused: a task
/// of the same user can use up `fs.epoll.max_user_watches`), with timers only, its stops'
/// watchers blind (they look every 10 ms; see `watch.rs`).
pub struct StopRuntime {
    rt: tokio::runtime::Runtime,
    /// Why it has no I/O driver.
    no_io: Option<String>,
}

impl StopRuntime {
    /// Builds it.
    ///
    /// # Errors
    /// Neither runtime could be built.
    pub fn new() -> std::io::Result<StopRuntime> {
        runtime_descriptors()?;
        let with_io = if std::env::var_os("GRACEKILL_FORCE_NO_IO_RUNTIME").is_some_and(|v| v == "1")
        {
            Err(std::io::Error::other(
                "forced (GRACEKILL_FORCE_NO_IO_RUNTIME=1)",
            ))
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        };
        match with_io {
            Ok(rt) => Ok(StopRuntime { rt, no_io: None }),
            // Whatever kept the I/O driver from being built (its epoll registrations refused,
            // as a task of the same user can make them): timers only.
            Err(e) => match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => Ok(StopRuntime {
                    rt,
                    no_io: Some(format!("no tokio I/O driver: {e}")),
                }),
                Err(_) => Err(e),
            },
        }
    }

    /// Runs `f` to completion on it.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.no_io {
            Some(why) => crate::watch::without_io(why.clone(), || self.rt.block_on(f)),
            None => self.rt.block_on(f),
        }
    }
}

fn membership_name() -> &'static str {
    match membership_method() {
        Membership::PidfdInfo => "PIDFD_GET_INFO",
        Membership::ProcFile => "/proc/<pid>/cgroup",
    }
}

/// An outcome for a stop that had nothing to do.
fn bare_outcome(
    cg: &impl TaskCgroup,
    policy: &Policy,
    verdict: Verdict,
    empty_at: Option<f64>,
) -> Outcome {
    Outcome {
        empty_at_ms: empty_at,
        membership_proof: membership_name(),
        cgroup_removed: cg.is_removed(),
        ..Outcome::nothing(cg.rel().to_string(), verdict, policy.summary())
    }
}

/// How the stop signals' steps ended.
enum StepsEnd {
    /// The cgroup emptied, at this moment.
    Emptied(Instant),
    /// Process mode: the main process is gone.
    MainGone,
    /// The last grace is over, or a second request cut it short.
    KillDue,
}

/// How a grace period ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GraceEnd {
    /// `populated 0`.
    Empty,
    /// The step's grace is over with processes left.
    Deadline,
    /// A second request cut the grace short.
    Escalated,
    /// Process mode: the main process is gone (the others stay, as the mode asks).
    MainGone,
}

/// How many processes are named right before their first signal, for the exit timeline of one
/// that exits and is reaped before the pass is over (the main process and its first helpers).
const EARLY_NAMES: usize = 8;

/// How long an emptied task's exits are given to be reaped by their parents, for their exit
/// statuses (see [`Engine::settle_exits`]). A supervisor reaps its child within a millisecond
/// of SIGCHLD, and orphans are reaped by their subreaper or init as promptly; a parent that
/// never reaps costs a stop this much once, and its child's status is reported unknown.
const REAP_WAIT: Duration = Duration::from_millis(50);

/// How long the main process, once exited, is given to be reaped (the others get
/// [`REAP_WAIT`]): its parent is its supervisor (`gracekill run`, an executor), which waits for
/// it, and whose wakeup a loaded machine can delay past `REAP_WAIT`. Its status is the one users
/// read.
const MAIN_REAP_WAIT: Duration = Duration::from_millis(500);

struct Engine<'a, K: Kernel> {
    k: &'a K,
    cg: &'a K::Cg,
    policy: &'a Policy,
    opts: &'a StopOptions,
    t0: Instant,
    /// `t0` on the machine-wide monotonic clock, to compare with other stoppers' records.
    t0_ns: u128,
    w: K::Watch,
    /// Opened once the task is known to be populated.
    kill: Option<K::Kill>,
    steps: Vec<StepReport>,
    thawed: bool,
    problems: Problems,
    warnings: Vec<String>,
    /// The comm of the first processes signalled, read while they were alive (for `killed`).
    described: HashMap<i32, String>,
    /// Names read just before the first signal (a process that exits at once may be reaped
    /// before the pass is over and [`Engine::describe_pending`] runs), for the exit timeline.
    /// With whether the process could be frozen (see [`Kernel::comm_and_state`]).
    early_comm: HashMap<i32, Named>,
    /// The start time of each process named (its name checked against its pidfd): with the
    /// pid, what its command line is asked for by.
    starts: HashMap<i32, u64>,
    /// Signalled in the current pass, to be described once it is over.
    to_describe: Vec<i32>,
    cmdlines: K::Cmdlines,
    /// Processes whose command lines are to be asked for, and when (see
    /// [`Engine::describe_pending`]).
    cmdlines_wanted: Vec<(i32, bool)>,
    cmdlines_due: Option<Instant>,
    /// The step being run is the last one.
    last_step: bool,
    /// This step's signalled pids: `true` if their pidfd is tracked, `false` if it was closed
    /// (over the descriptor budget).
    step_done: HashMap<i32, bool>,
    /// How many pidfds may be held at once.
    budget: usize,
    /// The process of each thread signalled in a threaded cgroup, for the report.
    thread_tgid: HashMap<i32, i32>,
    /// One pidfd per process signalled through a threaded cgroup (within the descriptor budget),
    /// of the process rather than of the thread met (see [`TaskProc::into_process`]): not
    /// tracked (its threads elsewhere are not the task), but kept so that a fallback round kills
    /// the process even when the lists can no longer be read.
    held_threads: HashMap<i32, K::Proc>,
    /// The members listed shortly before the final kill's deadline that the stop holds no
    /// pidfd for (see [`PRE_KILL_LEAD`]), and whether the listing was complete.
    pre_kill: Option<(Vec<i32>, bool)>,
    /// Threads seen in a domain cgroup's `cgroup.threads` and found to belong to a process
    /// listed in the same cgroup's `cgroup.procs` (tid -> tgid), so they are looked up once.
    own_threads: HashMap<i32, i32>,
    /// The id the last open found to be no member (gone, elsewhere, or exited and still
    /// listed): the listing before the final kill resets it before each visit, and leaves such
    /// an id out of the kill's report.
    last_not_member: Option<i32>,
    /// The main process was signalled but the watcher refused it: its exit cannot end a grace.
    main_unwatched: bool,
    /// A stop signal has gone out to some process.
    sent_any: bool,
    /// The survivors' memory release, each process once in the stop.
    release: K::Release,
    /// Another stop's final kill, sent before this stop began while that stop still went on
    /// (see [`Kernel::kill_in_flight`]).
    kill_in_flight: Option<FinalKillRecord>,
}

impl<K: Kernel> Engine<'_, K> {
    fn ms(&self, t: Instant) -> f64 {
        (t - self.t0).as_secs_f64() * 1000.0
    }

    /// The cgroup is empty: gives the parents of the processes seen to exit up to
    /// [`REAP_WAIT`] to reap them, so the timeline can carry their exit statuses (the kernel
    /// keeps a status for a pidfd only once the process is reaped). Event-driven; returns at
    /// once when they are all reaped already, and does nothing before Linux 6.15. Never past
    /// `limit`, the end of the phase the stop is in (the step's grace, or the kill timeout).
    async fn settle_exits(&mut self, limit: Instant) {
        let now = Instant::now();
        let until = (now + REAP_WAIT).min(limit);
        let patient = self
            .opts
            .main_pid
            .map(|pid| (pid, (now + MAIN_REAP_WAIT).min(limit)));
        if let Err(e) = self.w.wait_reaped(until, patient).await {
            self.problems.add(e);
        }
    }

    /// The timeline of the exits seen, with each exit status the kernel has by now.
    fn exits(&mut self) -> Vec<Exit> {
        let _ = self.w.refresh();
        self.w
            .take_exits()
            .into_iter()
            .map(|(p, at)| {
                let pid = p.tgid();
                let comm = self
                    .described
                    .get(&pid)
                    .or_else(|| self.early_comm.get(&pid).map(|e| &e.comm))
                    .cloned()
                    .unwrap_or_default();
                Exit::new(pid, comm, self.ms(at), p.exit_status())
            })
            .collect()
    }

    fn outcome(
        mut self,
        verdict: Verdict,
        empty_at: Option<Instant>,
        killed: Vec<Killed>,
        killed_total: usize,
        survivors: Vec<Survivor>,
        survivors_total: usize,
    ) -> Outcome {
        let exits = self.exits();
        Outcome {
            cgroup: self.cg.rel().to_string(),
            outcome: verdict,
            elapsed_ms: self.ms(Instant::now()),
            empty_at_ms: empty_at.map(|t| self.ms(t)),
            thawed: self.thawed,
            steps: self.steps,
            killed,
            killed_total,
            exits,
            survivors,
            survivors_total,
            policy: self.policy.summary(),
            policy_source: PolicySource::Given,
            warnings: self.warnings,
            errors: self.problems,
            membership_proof: membership_name(),
            cgroup_removed: self.cg.is_removed(),
        }
    }

    /// The cgroup emptied before this stop's final kill. If another stop of the same task sent
    /// its final kill meanwhile, that kill emptied it: report it, not a graceful exit.
    fn graceful(mut self, emptied: Instant) -> Outcome {
        let now = Some(emptied);
        // Sent during this stop: not before it began, nor after now (a record from the future
        // is no kill that emptied this cgroup).
        // Or sent just before it began by a stop that was still going on then: what this stop
        // found was already dying of it (its `at_ms` is negative).
        let now_ns = self.k.now_ns();
        if let Some(rec) = self
            .k
            .final_kill_record(self.cg)
            .filter(|r| r.at_ns >= self.t0_ns && r.at_ns <= now_ns)
            .or(self.kill_in_flight)
        {
            tracing::debug!(cgroup = %self.cg.rel(), by = rec.pid, "emptied by another stop's final kill");
            self.steps.push(StepReport {
                signal: Signal::KILL,
                at_ms: (rec.at_ns as f64 - self.t0_ns as f64) / 1e6,
                signalled: 0,
                via: Some(rec.via),
                by_pid: Some(rec.pid),
            });
            return self.outcome(Verdict::Killed, now, Vec::new(), 0, Vec::new(), 0);
        }
        self.outcome(Verdict::Graceful, now, Vec::new(), 0, Vec::new(), 0)
    }

    async fn run(mut self) -> Result<Outcome> {
        let _mark = self.k.mark_stopping(self.cg, self.t0_ns);
        match self.grace_steps().await {
            Ok(StepsEnd::Emptied(at)) => Ok(self.graceful(at)),
            Ok(StepsEnd::MainGone) => Ok(self.remaining(None)),
            Ok(StepsEnd::KillDue) => self.final_kill().await,
            // Nothing signalled yet: nothing to finish.
            Err(e) if !self.sent_any => Err(e),
            Err(e) => {
                // The engine itself failed once signals had gone out (its event loop, not the
                // task: what a task can make fail is counted in `errors` and the stop goes on).
                // It can no longer time the grace: the final kill goes out now, then the error
                // is returned.
                tracing::warn!(cgroup = %self.cg.rel(), error = %e, "stop failed after signalling: final kill now");
                self.emergency_kill().await;
                Err(e)
            }
        }
    }

    /// The final kill without waiting or counting (see [`Engine::run`]): the main process only
    /// in process mode, else `cgroup.kill` or a fallback round; errors are dropped, as the
    /// stop is already failing with one.
    async fn emergency_kill(&mut self) {
        if self.policy.kill_mode == KillMode::Process {
            if let Some(main) = self.main_process() {
                let _ = main.send_signal(Signal::KILL);
            }
            return;
        }
        let _ = self.send_final_kill().await;
    }

    /// The stop signals and their graces, until the task ends or the final kill is due.
    async fn grace_steps(&mut self) -> Result<StepsEnd> {
        let escalate = self.opts.escalate.clone();
        for (i, step) in self.policy.steps.iter().enumerate() {
            let at = Instant::now();
            // The grace runs from the moment the step began signalling, not from its last signal.
            let deadline = at
                .checked_add(step.grace)
                .unwrap_or_else(|| deadline_after(step.grace));
            self.last_step = i + 1 == self.policy.steps.len();
            let signalled = self.signal_step(step.signal, deadline, i == 0)?;
            if self.last_step {
                // Including those described in earlier steps.
                self.schedule_cmdlines(Some(deadline));
            }
            // Before the last grace ends, note who the final kill will take.
            let list_at = (self.last_step && self.policy.kill_mode != KillMode::Process)
                .then(|| deadline.checked_sub(PRE_KILL_LEAD).unwrap_or(at).max(at))
                .filter(|&t| t < deadline);
            tracing::debug!(cgroup = %self.cg.rel(), signal = %step.signal, signalled, "sent stop signal");
            self.steps.push(StepReport {
                signal: step.signal,
                at_ms: self.ms(at),
                signalled,
                via: None,
                by_pid: None,
            });
            match self
                .wait_grace(deadline, list_at, step.signal, escalate.as_deref())
                .await?
            {
                GraceEnd::Empty => {
                    let emptied = Instant::now();
                    self.settle_exits(deadline).await;
                    return Ok(StepsEnd::Emptied(emptied));
                }
                GraceEnd::MainGone => return Ok(StepsEnd::MainGone),
                GraceEnd::Escalated => break,
                GraceEnd::Deadline => {}
            }
        }
        Ok(StepsEnd::KillDue)
    }

    /// Process mode ended with the main process gone: other processes are left as asked.
    fn remaining(self, killed: Option<Vec<Killed>>) -> Outcome {
        if !self.w.state().map(|e| e.populated).unwrap_or(true) {
            return match killed {
                Some(k) => {
                    let n = k.len();
                    self.outcome(Verdict::Killed, Some(Instant::now()), k, n, Vec::new(), 0)
                }
                None => self.graceful(Instant::now()),
            };
        }
        let killed = killed.unwrap_or_default();
        let n = killed.len();
        self.outcome(Verdict::Remaining, None, killed, n, Vec::new(), 0)
    }

    /// Waits out one grace period; at `list_at`, lists the subtree for the final kill.
    async fn wait_grace(
        &mut self,
        deadline: Instant,
        mut list_at: Option<Instant>,
        signal: Signal,
        escalate: Option<&Notify>,
    ) -> Result<GraceEnd> {
        let progress = self.opts.progress.clone();
        let k = self.k;
        let phase = signal.to_string();
        let proc_mode = self.policy.kill_mode == KillMode::Process;
        // In control-group mode, wake up too when every signalled process has exited while the
        // cgroup stays populated: see the latecomers below. In process mode, the main process
        // (the only one tracked) exiting ends the step.
        let mut catch_latecomers = self.policy.kill_mode == KillMode::ControlGroup
            || (proc_mode && self.w.tracked_count() > 0);
        if proc_mode && self.w.tracked_count() == 0 && !self.main_unwatched {
            // No main process: nothing was signalled, and this mode touches nothing else.
            return Ok(GraceEnd::MainGone);
        }
        loop {
            let until = [list_at, self.cmdlines_due]
                .into_iter()
                .flatten()
                .fold(deadline, Instant::min);
            let wait = self.w.wait_empty(until, catch_latecomers, |w| {
                report_progress(k, progress.as_ref(), &phase, deadline, w)
            });
            let wake = match escalate {
                Some(n) => tokio::select! {
                    r = wait => r?,
                    () = n.notified() => return Ok(GraceEnd::Escalated),
                },
                None => wait.await?,
            };
            match wake {
                Wake::Empty => return Ok(GraceEnd::Empty),
                Wake::Deadline if self.ask_cmdlines(false) => continue,
                Wake::Deadline if list_at.take().is_some() => {
                    // Even when the step's pass ran long and the deadline is (nearly) here: the
                    // listing's reads stop a few milliseconds after it starts.
                    self.list_before_kill(deadline, signal);
                    continue;
                }
                // An unwatched main process (the watcher refused it) is looked for at the
                // deadline: gone, the step is over as if its exit had been seen.
                Wake::Deadline | Wake::Frozen
                    if proc_mode && self.main_unwatched && self.main_process().is_none() =>
                {
                    return Ok(GraceEnd::MainGone);
                }
                Wake::Deadline | Wake::Frozen => return Ok(GraceEnd::Deadline),
                Wake::TrackedGone if proc_mode => return Ok(GraceEnd::MainGone),
                Wake::TrackedGone => {}
            }
            // Everyone signalled is gone, yet the cgroup is populated: processes appeared after
            // the last enumeration pass. A shell blocks SIGTERM around fork(2), so the child it
            // forks in the instant the signal arrives is created unsignalled (the kernel clears
            // a child's pending signals) and becomes visible only after the parent dies. Give
            // them the step's signal too; if there is no one new, just wait out the grace.
            let extra = self.extra_signals(signal);
            let late = self.pass(signal, extra, Some(deadline), false)?;
            tracing::debug!(cgroup = %self.cg.rel(), signal = %signal, late, "signalled latecomers");
            if let Some(step) = self.steps.last_mut() {
                step.signalled += late;
            }
            catch_latecomers = late > 0;
        }
    }

    /// The main process, opened and proven to be somewhere in the subtree. Costs the same
    /// whatever the subtree's size: the process's own cgroup path is read and checked to lie
    /// within the target, then the pidfd checked alive (so the read described it).
    fn main_process(&mut self) -> Option<K::Proc> {
        let pid = self.opts.main_pid?;
        let pidfd = match self.k.open(pid) {
            Ok(p) => p?,
            Err(e) => {
                self.problems.add(e);
                return None;
            }
        };
        (self.in_target(pid) && !pidfd.has_exited()).then_some(pidfd)
    }

    /// Is process `pid` in the target or below, by its `/proc/<pid>/cgroup`?
    /// `read`, the name of `pid` read by pid, for a process the stop holds no pidfd for (one not
    /// signalled in mixed or process mode, one past the descriptor budget, one that came after
    /// the last pass): kept only if that pid named a process of the task throughout, its start
    /// time the same after a look at its cgroup. Empty otherwise: the pid may have been taken by
    /// an outsider after its own process was reaped.
    fn unheld_name(&self, pid: i32, read: Named) -> Named {
        match read.start {
            Some(start)
                if self.in_target(pid) && self.k.comm_and_state(pid).start == Some(start) =>
            {
                read
            }
            _ => Named::default(),
        }
    }

    fn in_target(&self, pid: i32) -> bool {
        self.k
            .proc_cgroup(pid)
            .is_some_and(|p| crate::cgroup::is_within_bytes(&p, self.cg.ns_path_bytes()))
    }

    /// What follows each stop signal: SIGCONT (so stopped processes run their handlers), and
    /// SIGHUP first if the policy asks for it.
    fn extra_signals(&self, sig: Signal) -> &'static [Signal] {
        if self.policy.sighup && sig != Signal::HUP {
            &[Signal::HUP, Signal::CONT]
        } else {
            &[Signal::CONT]
        }
    }

    /// Sends `sig` (+SIGHUP, +SIGCONT) to every member, or to the main process only. Gives up
    /// enumerating at `deadline` (the end of the step's grace): a tree that forks faster than it
    /// is signalled, or is too big to walk in time, must not delay the final kill.
    fn signal_step(&mut self, sig: Signal, deadline: Instant, first: bool) -> Result<usize> {
        let extra = self.extra_signals(sig);
        self.step_done.clear();
        if self.policy.kill_mode != KillMode::ControlGroup {
            if let Some(main) = self.main_process() {
                let sent = match send_all(&main, sig, extra) {
                    Ok(sent) => sent,
                    Err(e) => {
                        self.problems.add(e);
                        false
                    }
                };
                if sent {
                    self.sent_any = true;
                    self.describe_early(main.pid());
                }
                if first {
                    self.thaw_frozen(deadline);
                    // The others get no signal now but will be in the final kill's report:
                    // note who they are while they are alive (off the kill's path).
                    let mut pids = Vec::new();
                    self.list_members(&mut pids, Instant::now() + PRE_KILL_LIST_BUDGET);
                    for pid in pids {
                        self.describe_early(pid);
                    }
                }
                self.describe_pending(Some(deadline));
                // Refused, its exit cannot be watched: the grace is waited out in full.
                self.main_unwatched = !self.track_or_note(main);
                return Ok(usize::from(sent));
            }
            if self.policy.kill_mode == KillMode::Process {
                self.warnings.push(format!(
                    "kill-mode=process and no main process in '{}': nothing was signalled",
                    self.cg.rel()
                ));
                return Ok(0);
            }
            tracing::debug!(cgroup = %self.cg.rel(), "main process gone: signalling the whole cgroup (mixed mode)");
        }
        let mut total = 0;
        for pass in 0..MAX_PASSES {
            let new = self.pass(sig, extra, Some(deadline), first && pass == 0)?;
            total += new;
            if new == 0 {
                break;
            }
            // Another pass finds those who joined during this one; an emptied subtree (the
            // usual end of a task that honours its signal at once) has no one left to find.
            if !self.w.state().map(|e| e.populated).unwrap_or(true) {
                break;
            }
            if Instant::now() >= deadline {
                tracing::debug!(cgroup = %self.cg.rel(), "grace over while processes keep appearing; leaving the rest to the final kill");
                break;
            }
            if pass + 1 == MAX_PASSES {
                tracing::debug!(cgroup = %self.cg.rel(), "processes keep appearing; leaving the rest to the final kill");
            }
        }
        Ok(total)
    }

    /// Thaws every cgroup of the subtree that has `cgroup.freeze` set, until `deadline`. Signals
    /// sent to frozen tasks stay pending; a handler runs only after the thaw, so a stop that
    /// left the cgroup frozen would waste its whole grace.
    fn thaw_frozen(&mut self, deadline: Instant) {
        let mut errors = Vec::new();
        let mut thawed = false;
        let _ = self.cg.walk(Some(deadline.into_std()), |c| {
            if Instant::now() >= deadline {
                return ControlFlow::Break(());
            }
            match c {
                Ok(c) if c.freeze_requested().unwrap_or(false) => match c.set_frozen(false) {
                    Ok(()) => thawed = true,
                    Err(e) => errors.push(e),
                },
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
            ControlFlow::Continue(())
        });
        for e in errors {
            self.problems.add(e);
        }
        if thawed {
            self.thawed = true;
            tracing::debug!(cgroup = %self.cg.rel(), "thawed frozen cgroup");
        }
    }

    /// Notes a signalled process's name (cheap, cannot block) and asks the background reader for
    /// its command line, for the first processes only: reports list at most [`MAX_LISTED`].
    fn describe_early(&mut self, pid: i32) {
        if self.described.len() + self.to_describe.len() < 2 * MAX_LISTED
            && !self.described.contains_key(&pid)
        {
            self.to_describe.push(pid);
        }
    }

    /// Describes the processes noted by [`Engine::describe_early`], after a pass: their names
    /// and whether a cgroup v1 freezer holds them, and one batch of command lines for the
    /// background reader. Done between passes, not between one signal and the next.
    fn describe_pending(&mut self, deadline: Option<Instant>) {
        let mut pids = std::mem::take(&mut self.to_describe);
        if pids.is_empty() {
            return;
        }
        // The pidfds of those seen to exit, to check the names read by pid against: looked up
        // only for a pid not held, and indexed once, at the first.
        let w = &self.w;
        let mut exited: Option<HashMap<i32, &K::Proc>> = None;
        let mut done = 0;
        for &pid in &pids {
            // A few reads per process: never past the step's deadline (the rest go undescribed).
            if done % CLOCK_EVERY == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            done += 1;
            let Named {
                comm,
                maybe_frozen,
                start,
            } = self.early_comm.remove(&pid).unwrap_or_else(|| {
                let read = self.k.comm_and_state(pid);
                let held = w.held(pid).or_else(|| {
                    exited
                        .get_or_insert_with(|| w.exited().map(|p| (p.tgid(), p)).collect())
                        .get(&pid)
                        .copied()
                });
                match held {
                    Some(p) => own_name(p, read),
                    None => self.unheld_name(pid, read),
                }
            });
            if let Some(start) = start {
                self.starts.insert(pid, start);
            }
            // Said at once, not after a grace wasted on a process that cannot react. A process
            // running or sleeping interruptibly is not frozen: only otherwise is its cgroup v1
            // freezer looked up (a read of `/proc/<pid>/cgroup`, which takes the kernel's cgroup
            // lock).
            if maybe_frozen
                && let Some(v1) = self.k.v1_frozen(pid)
                // Still the process named: its start time unchanged since.
                && start.is_some()
                && self.k.comm_and_state(pid).start == start
            {
                let w = format!(
                    "pid {pid} ({}) is frozen by the cgroup v1 freezer at '{v1}': it cannot \
                     handle the stop signal or die of SIGKILL until that cgroup is thawed",
                    crate::report::printable(&comm)
                );
                tracing::warn!(cgroup = %self.cg.rel(), "{w}");
                self.warnings.push(w);
            }
            self.described.insert(pid, comm);
        }
        pids.truncate(done);
        // With whether each is held now: one that was and no longer is has exited, and is not
        // read (its pid may name another process by then).
        let held: Vec<(i32, bool)> = pids
            .into_iter()
            .map(|p| (p, self.w.held(p).is_some()))
            .collect();
        self.cmdlines_wanted.extend(held);
        self.schedule_cmdlines(deadline);
    }

    /// When to ask the background reader for the command lines wanted: they are reported for
    /// the processes the final kill takes, so they are asked for when the listing before it
    /// would run (the last step's deadline - [`PRE_KILL_LEAD`]), or at once when that is past or
    /// the grace is likely to be cut short at any moment ([`StopOptions::cmdlines_at_once`]). A task
    /// that honours its signal in time is gone before anyone reads its memory, and a stopper
    /// process that ends with it never starts the reader's thread.
    fn schedule_cmdlines(&mut self, deadline: Option<Instant>) {
        if self.cmdlines_wanted.is_empty() {
            return;
        }
        let now = Instant::now();
        let due = match deadline {
            Some(_) if self.opts.escalate.is_some() && self.opts.cmdlines_at_once => now,
            // Asked for in the last step.
            Some(_) if !self.last_step => return,
            Some(d) => d.checked_sub(PRE_KILL_LEAD).map_or(now, |t| t.max(now)),
            None => now,
        };
        self.cmdlines_due = Some(self.cmdlines_due.map_or(due, |d| d.min(due)));
    }

    /// Asks the background reader for the command lines wanted (of processes not seen to exit)
    /// if it is time, or `now`. Returns whether their time had come.
    fn ask_cmdlines(&mut self, now: bool) -> bool {
        let due = self.cmdlines_due.is_some_and(|d| Instant::now() >= d);
        if !(now || due) {
            return false;
        }
        self.cmdlines_due = None;
        if self.cmdlines_wanted.is_empty() {
            return due;
        }
        let _ = self.w.refresh();
        // Only for processes whose start time is known: a line read by pid is checked against
        // it.
        let procs: Vec<(i32, u64)> = std::mem::take(&mut self.cmdlines_wanted)
            .into_iter()
            .filter(|&(p, held)| !held || self.w.held(p).is_some())
            .filter_map(|(p, _)| Some((p, *self.starts.get(&p)?)))
            .collect();
        if !procs.is_empty() {
            self.cmdlines.request(procs);
        }
        due
    }

    /// One enumeration pass over the subtree: every member not yet signalled in this step (or
    /// whose pid now names a new process) is opened or taken from the tracked set, proven,
    /// signalled and tracked. Returns how many were signalled. Stops early at `deadline`. On the
    /// first pass of a stop, thaws frozen cgroups once their members have been signalled.
    fn pass(
        &mut self,
        sig: Signal,
        extra: &[Signal],
        deadline: Option<Instant>,
        first: bool,
    ) -> Result<usize> {
        let cg = self.cg;
        let mut n = 0;
        let mut seen = 0usize;
        let mut errors = Vec::new();
        let mut fatal = None;
        let _ = cg.walk(deadline.map(Instant::into_std), |c| {
            let c = match c {
                Ok(c) => c,
                Err(e) => {
                    errors.push(e);
                    return ControlFlow::Continue(());
                }
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return ControlFlow::Break(());
            }
            let members = match c.members() {
                Ok(m) => m,
                Err(e) => {
                    errors.push(e);
                    return ControlFlow::Continue(());
                }
            };
            // After the read: exits seen so far are forgotten, so a pidfd still held names the
            // listed process (see `Watcher::held`). One epoll_wait instead of a poll per pid.
            // Failing, the stop's own event loop is broken: a stop signal's pass ends here (the
            // stop then fails, with its final kill sent at once); a kill pass goes on, as the
            // kill must.
            if let Err(e) = self.w.refresh_listing() {
                fatal.get_or_insert(e);
                if sig != Signal::KILL {
                    return ControlFlow::Break(());
                }
            }
            let thread_set: std::collections::HashSet<i32> =
                members.threads.iter().copied().collect();
            // The listed members first; then the rare thread whose process is listed elsewhere
            // (finding those costs a lookup per unknown thread, mostly processes that exited
            // between the two reads: it must not delay the signals everyone else is owed).
            let mut ids: Vec<(i32, bool)> = members
                .ids
                .iter()
                .map(|&id| (id, members.threaded))
                .collect();
            let mut aliens_done = false;
            // Listed processes found to be no member here: their threads listed here are not
            // theirs to answer for (see `alien_threads`).
            let mut not_here = std::collections::HashSet::new();
            let mut i = 0;
            loop {
                if i == ids.len() {
                    if aliens_done {
                        break;
                    }
                    aliens_done = true;
                    ids.extend(
                        self.alien_threads(&members, &not_here, deadline)
                            .0
                            .into_iter()
                            .map(|t| (t, true)),
                    );
                    continue;
                }
                let (id, threaded) = ids[i];
                i += 1;
                seen += 1;
                if seen.is_multiple_of(CLOCK_EVERY) && deadline.is_some_and(|d| Instant::now() >= d)
                {
                    return ControlFlow::Break(());
                }
                self.last_not_member = None;
                match self.signal_member(c, id, threaded, &thread_set, sig, extra) {
                    Ok(true) => n += 1,
                    Ok(false) if !threaded && self.last_not_member == Some(id) => {
                        not_here.insert(id);
                    }
                    Ok(false) => {}
                    Err(e) => errors.push(e),
                }
            }
            if first && c.freeze_requested().unwrap_or(false) {
                match c.set_frozen(false) {
                    Ok(()) => {
                        self.thawed = true;
                        tracing::debug!(cgroup = %c.rel(), "thawed frozen cgroup");
                    }
                    Err(e) => errors.push(e),
                }
            }
            ControlFlow::Continue(())
        });
        for e in errors {
            self.problems.add(e);
        }
        if sig != Signal::KILL {
            self.describe_pending(deadline);
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        Ok(n)
    }

    /// Signals one member listed in `c` (a pid, or a thread id of a threaded cgroup) unless it
    /// was signalled already in this step. Returns whether a signal was delivered.
    fn signal_member(
        &mut self,
        c: &K::Cg,
        id: i32,
        threaded: bool,
        threads: &std::collections::HashSet<i32>,
        sig: Signal,
        extra: &[Signal],
    ) -> Result<bool> {
        let key = if threaded { -id } else { id };
        match self.step_done.get(&key) {
            // Tracked and still held: the same process, already signalled in this step.
            Some(true) if !threaded && self.w.held(id).is_some() => return Ok(false),
            // Tracked, exited since, and listed again: the pid was reused by a new member, or
            // the same process is still listed after its exit (told apart once opened).
            Some(true) => {}
            // Not tracked (over the descriptor budget): cannot tell a reused pid from the same
            // process, so assume the same; the final kill takes any newcomer.
            Some(false) => return Ok(false),
            None => {}
        }
        if !threaded && let Some(held) = self.w.held(id) {
            // Alive and holding its pid since the list was read, so it is the listed process.
            let sent = send_all(held, sig, extra)?;
            self.sent_any |= sent;
            self.step_done.insert(key, true);
            return Ok(sent);
        }
        let pidfd = match self.open_proven(c, id, threaded) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(false),
            Err(e) => return Err(e),
        };
        // One signal per process per step: a process reached through one of its threads (or
        // through several) may also be listed by its leader's pid.
        if threaded && self.step_done.contains_key(&pidfd.tgid()) {
            self.step_done.insert(key, false);
            return Ok(false);
        }
        // Reached through a thread: signal and hold its process, before the signal tells the
        // task to end that thread (a thread's pidfd reaches nothing once its thread is gone).
        let pidfd = if threaded {
            pidfd.into_process()
        } else {
            pidfd
        };
        // A leader that has exited (`pthread_exit`) stays listed here while its live threads may
        // all be elsewhere: signal its process only if one of them is within the target (else
        // the signal would reach only threads outside it).
        // (Its leader's own tid is then missing from cgroup.threads, read just before: only
        // then is the process looked at more closely.)
        if !threaded
            && !threads.contains(&id)
            && !self.k.has_live_thread_in(id, self.cg.ns_path_bytes())
        {
            tracing::debug!(cgroup = %c.rel(), pid = id, "exited leader, no live thread here: not a member");
            self.last_not_member = Some(id);
            return Ok(false);
        }
        let tgid = if threaded { pidfd.tgid() } else { id };
        if self.early_comm.len() < EARLY_NAMES && !self.described.contains_key(&tgid) {
            // One small read of task state, which a task cannot make block, checked against
            // the pidfd; only for the first few, so that a large task's sweep is not slowed
            // (the rest are named after the pass).
            let named = own_name(&pidfd, self.k.comm_and_state(tgid));
            self.early_comm.entry(tgid).or_insert(named);
        }
        let sent = if threaded {
            pidfd.send_signal_to_group(sig)? && {
                for &s in extra {
                    pidfd.send_signal_to_group(s)?;
                }
                true
            }
        } else {
            send_all(&pidfd, sig, extra)?
        };
        if !sent {
            return Ok(false);
        }
        self.sent_any = true;
        if threaded {
            // The process is done for this step, whichever of its ids comes next.
            self.step_done.insert(pidfd.tgid(), false);
            if self.thread_tgid.len() < 2 * MAX_LISTED {
                self.thread_tgid.insert(id, pidfd.tgid());
            }
        }
        self.describe_early(if threaded { pidfd.tgid() } else { id });
        let room = self.w.tracked_count() + self.held_threads.len() < self.budget;
        let mut track = !threaded && room;
        if track {
            // Refused (`epoll_ctl`: out of memory, or of the user's epoll watches, which a task
            // of the same user can use up): signalled and done for this step all the same,
            // as one over the budget is.
            track = self.track_or_note(pidfd);
        } else if threaded
            && room
            && self
                .held_threads
                .get(&pidfd.tgid())
                .is_none_or(TaskProc::has_exited)
        {
            // One per process (later steps and the fallback's rounds reach it again through some
            // thread); one that has exited gives way to a newcomer that reused its id.
            self.held_threads.insert(pidfd.tgid(), pidfd);
        }
        self.step_done.insert(key, track);
        Ok(true)
    }

    /// The threads listed in a domain cgroup whose process is not listed there, or is listed but
    /// was just found to be no member (`not_here`): a process whose leader has exited in
    /// another cgroup, with a live thread here. `cgroup.procs` lists only leaders (and, in a
    /// domain cgroup with threaded children, every process of that threaded subtree), so
    /// without this such a thread is never found (and `cgroup.kill` spares it). Each unknown
    /// thread costs one read of `/proc/<tid>/status` (never its memory), once, until `deadline`;
    /// also answers whether every thread was placed in time.
    fn alien_threads(
        &mut self,
        m: &crate::cgroup::Members,
        not_here: &std::collections::HashSet<i32>,
        deadline: Option<Instant>,
    ) -> (Vec<i32>, bool) {
        if m.threaded || m.threads.is_empty() {
            return (Vec::new(), true);
        }
        let listed: std::collections::HashSet<i32> = m.ids.iter().copied().collect();
        let mut aliens = Vec::new();
        // The clock is read every few look-ups (not every few threads: the threads known
        // already could be placed so that a look-up never falls on such a turn).
        let mut looked_up = 0usize;
        for &tid in &m.threads {
            if listed.contains(&tid) {
                continue;
            }
            let tgid = match self.own_threads.get(&tid) {
                Some(&g) => Some(g),
                None => {
                    if looked_up.is_multiple_of(CLOCK_EVERY)
                        && deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        return (aliens, false);
                    }
                    looked_up += 1;
                    self.k.tgid_of(tid)
                }
            };
            match tgid {
                // A leader missing from cgroup.procs has exited since the threads were read.
                Some(g) if g == tid => {}
                // Listed, yet its leader is elsewhere (exited in a threaded child, whose
                // process this domain cgroup lists too): this thread is the way to it.
                Some(g) if not_here.contains(&g) => aliens.push(tid),
                Some(g) if listed.contains(&g) && self.own_threads.len() < 1 << 17 => {
                    self.own_threads.insert(tid, g);
                }
                Some(g) if listed.contains(&g) => {}
                Some(_) => aliens.push(tid),
                None => {} // gone
            }
        }
        (aliens, true)
    }

    /// Opens `id` (a pid, or a thread id in a threaded cgroup) and proves it a member of `c`.
    /// Out of descriptors, sheds half of the tracked pidfds (they only speed up wakeups) and
    /// tries once more.
    fn open_proven(&mut self, c: &K::Cg, id: i32, threaded: bool) -> Result<Option<K::Proc>> {
        let k = self.k;
        // Exited, yet still listed (the kernel lists a task until its last context switch, and
        // its pidfd is readable before that): no member, and no newcomer that reused the pid;
        // signalled or tracked again it would be counted and its exit reported twice. One poll,
        // of a pidfd just opened.
        let open = |c: &K::Cg| {
            k.open_member(c, id, threaded)
                .map(|p| p.filter(|p| !p.has_exited()))
        };
        let opened = match open(c) {
            Err(Error::Os {
                errno: Errno::MFILE | Errno::NFILE,
                ..
            }) if self.w.tracked_count() > 0 => {
                let keep = self.w.tracked_count() / 2;
                self.w.shed(keep);
                self.budget = keep;
                tracing::debug!(cgroup = %self.cg.rel(), keep, "out of descriptors: holding fewer pidfds");
                open(c)
            }
            r => r,
        };
        if matches!(opened, Ok(None)) {
            self.last_not_member = Some(id);
        }
        opened
    }

    async fn final_kill(mut self) -> Result<Outcome> {
        self.ask_cmdlines(true);
        // Unreadable, it is taken as populated: the kill goes out.
        if !self.w.state().map(|e| e.populated).unwrap_or(true) {
            let emptied = Instant::now();
            self.settle_exits(deadline_after(self.policy.kill_timeout))
                .await;
            return Ok(self.graceful(emptied));
        }
        if self.policy.kill_mode == KillMode::Process {
            return self.final_kill_main().await;
        }
        let at = Instant::now();
        // Who is alive right now: the tracked pidfds (one epoll_wait) and the pids listed in
        // the subtree (a read of `cgroup.procs` per cgroup, nothing about the processes
        // themselves), for at most a few milliseconds: a subtree too large to list in that time
        // is killed anyway and counted as far as it was listed.
        let _ = self.w.refresh();
        let mut alive: Vec<i32> = self.w.tracked().map(TaskProc::pid).collect();
        // The processes held through threaded cgroups are killed too (see `send_final_kill`).
        alive.extend(
            self.held_threads
                .values()
                .filter(|p| !p.has_exited())
                .map(TaskProc::tgid),
        );
        let complete = match self.pre_kill.take() {
            // Listed during the grace: nothing but the kill happens at the deadline.
            Some((listed, complete)) => {
                alive.extend(listed);
                complete
            }
            // The grace was cut short (a second Ctrl-C): list now, for a few milliseconds at
            // most (the reads stop then).
            None => self.list_members(&mut alive, at + PRE_KILL_LIST_BUDGET),
        };
        if !complete {
            // Says what happened, not why: on a slow (emulated) machine two processes can take
            // longer to list than the time there was.
            self.warnings.push(
                "the subtree was not listed completely before the final kill: killed_total \
                 counts only those listed"
                    .to_string(),
            );
        }
        alive.sort_unstable();
        alive.dedup();
        let (via, signalled) = self.send_final_kill().await?;
        let sent = Instant::now();
        let deadline = deadline_after_from(sent, self.policy.kill_timeout);
        let total = alive.len().max(signalled);
        self.steps.push(StepReport {
            signal: Signal::KILL,
            at_ms: self.ms(at),
            signalled: total,
            via: Some(via),
            by_pid: None,
        });
        let killed = self.describe_killed(&alive);
        let wake = self.kill_rounds(deadline).await?;
        if wake == Wake::Empty {
            let emptied = Instant::now();
            self.settle_exits(deadline).await;
            return Ok(self.outcome(Verdict::Killed, Some(emptied), killed, total, Vec::new(), 0));
        }
        let (survivors, n) = self.confirmed_survivors().await?;
        tracing::debug!(cgroup = %self.cg.rel(), survivors = n, "processes survived SIGKILL");
        if n == 0 && !self.w.state()?.populated {
            return Ok(self.outcome(
                Verdict::Killed,
                Some(Instant::now()),
                killed,
                total,
                survivors,
                n,
            ));
        }
        Ok(self.outcome(Verdict::Survivors, None, killed, total, survivors, n))
    }

    /// Lists the subtree for the final kill's report, until `deadline` (see
    /// [`PRE_KILL_LEAD`]), so that the kill counts exactly who was alive when it came: each
    /// member the stop holds no pidfd for yet is opened, proven and tracked (and in
    /// control-group mode given the step's signal, which it missed: a latecomer), so that
    /// the kill counts it by its pidfd, alive or not. Only members past the descriptor budget,
    /// and processes known only by their threads, are counted from this list.
    fn list_before_kill(&mut self, deadline: Instant, signal: Signal) {
        self.ask_cmdlines(true);
        let cg = self.cg;
        let _ = self.w.refresh();
        let latecomers = self.policy.kill_mode == KillMode::ControlGroup;
        let mut listed = Vec::new();
        let budget = self.budget;
        let mut errors = Vec::new();
        let (mut first, mut seen, mut late, mut past) = (true, 0usize, 0usize, false);
        let mut whole = true;
        // Lists are read until the deadline, or for a few milliseconds if it is (nearly) past
        // (it starts late when the step's pass used the grace up).
        let read_until = deadline
            .max(Instant::now() + PRE_KILL_LIST_BUDGET)
            .into_std();
        let walked = cg.walk(Some(deadline.into_std()), |c| {
            // The task's own cgroup is always listed, as far as its lists can be read in time;
            // the deadline bounds the rest.
            if !std::mem::take(&mut first) && Instant::now() >= deadline {
                return ControlFlow::Break(());
            }
            let read = c.and_then(|c| Ok((c, c.members_until(Some(read_until))?)));
            let (c, m) = match read {
                Ok((c, (m, all))) => {
                    whole &= all;
                    (c, m)
                }
                Err(e) => {
                    whole = false;
                    errors.push(e);
                    return ControlFlow::Continue(());
                }
            };
            if m.threaded {
                let (tgids, all) = self.thread_processes(&m.ids, read_until.into());
                whole &= all;
                listed.extend(tgids);
                return ControlFlow::Continue(());
            }
            let threads: std::collections::HashSet<i32> = m.threads.iter().copied().collect();
            let mut not_here = std::collections::HashSet::new();
            for &pid in &m.ids {
                // Counted after the held ones are passed over, so that the clock is read every
                // few opened, wherever the held ones are listed.
                if self.w.held(pid).is_some() {
                    continue;
                }
                seen += 1;
                // Past the deadline, the rest are only listed (counted), never opened: a
                // fork storm lists thousands, and each costs system calls.
                past = past || (seen.is_multiple_of(CLOCK_EVERY) && Instant::now() >= deadline);
                if past {
                    listed.push(pid);
                    continue;
                }
                self.last_not_member = None;
                match self.meet_before_kill(c, pid, false, &threads, signal, latecomers) {
                    Ok(sent) => late += usize::from(sent),
                    Err(e) => errors.push(e),
                }
                if self.last_not_member == Some(pid) {
                    not_here.insert(pid);
                } else if self.w.held(pid).is_none() {
                    // Alive but not held (over the descriptor budget): killed, and named so.
                    listed.push(pid);
                }
            }
            // A latecomer whose leader exited elsewhere, with a live thread here (see
            // `alien_threads`): `cgroup.kill` spares such a process, so it is held (and in
            // control-group mode given the step's signal) like one met by a pass, and the kill
            // takes it through that pidfd.
            // Past the deadline not looked for (the kill rounds take any such process).
            if past {
                return ControlFlow::Continue(());
            }
            let (aliens, all) = self.alien_threads(&m, &not_here, Some(deadline));
            whole &= all;
            for (i, tid) in aliens.into_iter().enumerate() {
                // Like the listed ones: none opened past the deadline (a task can make thousands).
                if i.is_multiple_of(CLOCK_EVERY) && Instant::now() >= deadline {
                    whole = false;
                    break;
                }
                match self.meet_before_kill(c, tid, true, &threads, signal, latecomers) {
                    Ok(sent) => late += usize::from(sent),
                    Err(e) => errors.push(e),
                }
                // Over the budget: not held, counted from the list.
                // The process the signal found for it, else a look-up.
                let tgid = self.thread_tgid.get(&tid).copied();
                if let Some(g) = tgid.or_else(|| self.k.tgid_of(tid))
                    && self.held_threads.get(&g).is_none_or(TaskProc::has_exited)
                {
                    listed.push(g);
                }
            }
            ControlFlow::Continue(())
        });
        for e in errors {
            self.problems.add(e);
        }
        if late > 0 {
            tracing::debug!(cgroup = %self.cg.rel(), signal = %signal, late, "signalled latecomers");
            if let Some(step) = self.steps.last_mut() {
                step.signalled += late;
            }
            self.describe_pending(Some(deadline));
        }
        // Complete when neither the walk nor a read was cut short or failed, even if it ended
        // past the deadline (on a slow machine): every member was listed. Not when pidfds were
        // given up meanwhile (out of descriptors): those skipped as held earlier are in neither
        // list.
        let complete = walked.is_continue() && whole && self.budget == budget;
        tracing::debug!(cgroup = %self.cg.rel(), untracked = listed.len(), complete, "listed the subtree for the final kill");
        self.pre_kill = Some((listed, complete));
    }

    /// The processes of the threads `tids` listed in a threaded cgroup: each once, and not one
    /// held that has exited (a thread is listed a little after its exit). A thread the signal
    /// passes did not meet (a latecomer, or one of a process they met through another thread)
    /// costs one read of `/proc/<tid>/status`, until `until`; also answers whether every thread
    /// was placed (or found gone) in time. One poll per process, not per thread.
    fn thread_processes(&self, tids: &[i32], until: Instant) -> (Vec<i32>, bool) {
        let mut whole = true;
        let mut tgids = Vec::new();
        // The clock is read every few look-ups (see `alien_threads`).
        let mut looked_up = 0usize;
        for t in tids {
            if let Some(&g) = self.thread_tgid.get(t) {
                tgids.push(g);
                continue;
            }
            if !whole || (looked_up.is_multiple_of(CLOCK_EVERY) && Instant::now() >= until) {
                whole = false;
                continue;
            }
            looked_up += 1;
            if let Some(g) = self.k.tgid_of(*t) {
                tgids.push(g);
            }
        }
        tgids.sort_unstable();
        tgids.dedup();
        tgids.retain(|tgid| {
            !self
                .held_threads
                .get(tgid)
                .is_some_and(TaskProc::has_exited)
        });
        (tgids, whole)
    }

    /// A member the listing before the final kill meets unheld (a pid, or a thread whose
    /// process is listed elsewhere): in control-group mode a latecomer, given the step's signal
    /// (and held, as a pass would); otherwise only held, so that the kill counts it. Returns
    /// whether it was signalled.
    fn meet_before_kill(
        &mut self,
        c: &K::Cg,
        id: i32,
        threaded: bool,
        threads: &std::collections::HashSet<i32>,
        signal: Signal,
        latecomers: bool,
    ) -> Result<bool> {
        if latecomers {
            let extra = self.extra_signals(signal);
            self.signal_member(c, id, threaded, threads, signal, extra)
        } else if threaded {
            self.hold_thread_member(c, id).map(|()| false)
        } else {
            self.track_member(c, id).map(|()| false)
        }
    }

    /// Opens thread `tid`, proves it a member of `c` and holds its process (as a pass would,
    /// see [`Engine::signal_member`]), without a signal (within the descriptor budget).
    fn hold_thread_member(&mut self, c: &K::Cg, tid: i32) -> Result<()> {
        if self.w.tracked_count() + self.held_threads.len() >= self.budget {
            return Ok(());
        }
        if let Some(p) = self.open_proven(c, tid, true)? {
            let p = p.into_process();
            if self
                .held_threads
                .get(&p.tgid())
                .is_none_or(TaskProc::has_exited)
            {
                self.held_threads.insert(p.tgid(), p);
            }
        }
        Ok(())
    }

    /// Opens `pid`, proves it a member of `c` and tracks it, without a signal (within the
    /// descriptor budget).
    fn track_member(&mut self, c: &K::Cg, pid: i32) -> Result<()> {
        if self.w.tracked_count() >= self.budget {
            return Ok(());
        }
        match self.open_proven(c, pid, false)? {
            Some(p) => self.w.track(p),
            None => Ok(()),
        }
    }

    /// Adds the pids listed in the subtree to `out`, until `budget_end`. Returns whether the
    /// whole subtree was listed.
    fn list_members(&mut self, out: &mut Vec<i32>, budget_end: Instant) -> bool {
        let mut errors = Vec::new();
        let mut first = true;
        let mut whole = true;
        let walked = self.cg.walk(Some(budget_end.into_std()), |c| {
            // The task's own cgroup is always listed, as far as the budget lets its lists be
            // read; the budget bounds the rest.
            if !std::mem::take(&mut first) && Instant::now() >= budget_end {
                return ControlFlow::Break(());
            }
            let read = c.and_then(|c| c.members_until(Some(budget_end.into_std())));
            match read {
                Ok((m, all)) => {
                    whole &= all;
                    if m.threaded {
                        let (tgids, all) = self.thread_processes(&m.ids, budget_end);
                        whole &= all;
                        out.extend(tgids);
                    } else {
                        out.extend(m.ids);
                    }
                }
                Err(e) => {
                    // A cgroup that could not be listed was not listed whole.
                    whole = false;
                    errors.push(e);
                }
            }
            ControlFlow::Continue(())
        });
        for e in errors {
            self.problems.add(e);
        }
        // Whole when neither the walk nor a read was cut short or failed, even if it ended past
        // the budget.
        walked.is_continue() && whole
    }

    fn describe_killed(&self, alive: &[i32]) -> Vec<Killed> {
        alive
            .iter()
            .take(MAX_LISTED)
            .map(|&pid| Killed {
                pid,
                comm: self.described.get(&pid).cloned().unwrap_or_else(|| {
                    let read = self.k.comm_and_state(pid);
                    match self.w.held(pid) {
                        Some(p) => own_name(p, read).comm,
                        None => self.unheld_name(pid, read).comm,
                    }
                }),
                cmdline: self.cmdlines.get(pid),
            })
            .collect()
    }

    /// Process mode: SIGKILL the main process only.
    async fn final_kill_main(mut self) -> Result<Outcome> {
        let at = Instant::now();
        let mut killed = Vec::new();
        // Whether its exit is watched (nothing to watch without it); if the watcher refuses it,
        // the kill timeout is waited out before it is looked at again.
        let mut watched = true;
        if let Some(main) = self.main_process() {
            match main.send_signal(Signal::KILL) {
                Ok(true) => killed.push(Killed {
                    pid: main.pid(),
                    comm: own_name(&main, self.k.comm_and_state(main.pid())).comm,
                    cmdline: self.cmdlines.get(main.pid()),
                }),
                Ok(false) => {}
                Err(e) => self.problems.add(e),
            }
            watched = self.track_or_note(main);
        }
        self.steps.push(StepReport {
            signal: Signal::KILL,
            at_ms: self.ms(at),
            signalled: killed.len(),
            via: Some("pidfd"),
            by_pid: None,
        });
        let deadline = deadline_after(self.policy.kill_timeout);
        let wake = self.w.wait_empty(deadline, watched, |_| {}).await?;
        if wake == Wake::Deadline
            && let Some(main) = self.main_process()
        {
            // Only the main process can survive here: the others were never killed. Not stuck
            // (state D)? Then it is exiting: up to DYING_GRACE more.
            let pid = main.pid();
            let mut s = self.k.describe(pid);
            if !is_stuck(&s) {
                let watched = self.track_or_note(main);
                if self
                    .w
                    .wait_empty(deadline_after(DYING_GRACE), watched, |_| {})
                    .await?
                    != Wake::Deadline
                {
                    return Ok(self.remaining(Some(killed)));
                }
                s = self.k.describe(pid);
            }
            let total = killed.len();
            return Ok(self.outcome(Verdict::Survivors, None, killed, total, vec![s], 1));
        }
        Ok(self.remaining(Some(killed)))
    }

    /// Hands `p` to the watcher; a refusal is reported and answered `false` (not watched).
    fn track_or_note(&mut self, p: K::Proc) -> bool {
        match self.w.track(p) {
            Ok(()) => true,
            Err(e) => {
                self.problems.add(e);
                false
            }
        }
    }

    /// Sends the final SIGKILL to the whole subtree: `cgroup.kill`, or one fallback round.
    /// Returns how, and how many the fallback signalled.
    async fn send_final_kill(&mut self) -> Result<(&'static str, usize)> {
        if let Some(kill) = self.kill.as_ref().filter(|k| k.uses_cgroup_kill()) {
            self.k
                .record_final_kill(self.cg, self.k.now_ns(), "cgroup.kill");
            match kill.write_kill() {
                // Removed meanwhile (it emptied: a populated cgroup cannot be removed), or
                // written: either way, what the stop signalled and holds is killed too.
                // cgroup.kill signals each process through its leader, and silently spares a
                // process whose leader has exited (`pthread_exit`) while its other threads live
                // on; and a process the stop holds may have moved itself out.
                Ok(()) | Err(Errno::NOENT | Errno::NODEV) => {
                    tracing::debug!(cgroup = %self.cg.rel(), "final kill via cgroup.kill");
                    for p in self.w.tracked() {
                        let _ = p.send_signal(Signal::KILL);
                    }
                    for p in self.held_threads.values() {
                        let _ = p.send_signal_to_group(Signal::KILL);
                    }
                    return Ok(("cgroup.kill", 0));
                }
                // A threaded cgroup (or one made threaded since): the fallback kills, as
                // designed for it.
                Err(Errno::OPNOTSUPP) => {
                    tracing::debug!(cgroup = %self.cg.rel(), "threaded cgroup: cgroup.kill refuses to work there; using the fallback");
                }
                Err(e) => {
                    self.problems.add(Error::os(
                        "write '1' to",
                        &self.cg.path().join("cgroup.kill"),
                        e,
                    ));
                }
            }
        }
        self.k
            .record_final_kill(self.cg, self.k.now_ns(), "fallback");
        let n = self.fallback_round(None, Duration::ZERO).await?;
        Ok(("fallback", n))
    }

    fn set_frozen(&self, frozen: bool) -> std::result::Result<(), Errno> {
        self.kill
            .as_ref()
            .map_or(Err(Errno::NOENT), |k| k.set_frozen(frozen))
    }

    /// One fallback round: freeze (no new forks), SIGKILL every member through its pidfd, thaw.
    /// Always signals, even past the deadline: a kill is never skipped for lack of time. With a
    /// deadline, the freeze is waited for up to `freeze_wait` first (see below).
    async fn fallback_round(
        &mut self,
        deadline: Option<Instant>,
        freeze_wait: Duration,
    ) -> Result<usize> {
        if self.kill.as_ref().is_some_and(FinalKill::uses_cgroup_kill) {
            // The fallback's own file (`cgroup.freeze`), opened once it is needed: after a
            // refused `cgroup.kill`, or for someone it spared.
            match self.k.kill_path(self.cg, KillMethod::Fallback) {
                Ok(k) => self.kill = Some(k),
                Err(e) => {
                    self.kill = None;
                    self.problems.add(e);
                }
            }
        }
        let froze = self.set_frozen(true).is_ok();
        // The first round (no deadline: the final kill itself) does not wait for `frozen 1`: a
        // task in uninterruptible sleep can hold that up, and SIGKILL ends tasks whether frozen
        // or not; anyone forked meanwhile is taken by the next round. Later rounds wait for the
        // freeze to take, up to `freeze_wait` and never past the kill deadline.
        // An error of the stop's own watcher (its event loop) is returned once the round is
        // done: it must not leave the cgroup frozen, nor spare those held.
        let mut fatal = None;
        if froze && let Some(d) = deadline {
            let limit = d.min(Instant::now() + freeze_wait);
            if let Err(e) = self.w.wait_frozen(limit).await {
                fatal = Some(e);
            }
        }
        self.step_done.clear();
        self.own_threads.clear();
        let mut killed = match self.pass(Signal::KILL, &[], deadline, false) {
            Ok(n) => n,
            Err(e) => {
                fatal.get_or_insert(e);
                0
            }
        };
        // Every process held and not listed in this round too: a task that owns its cgroup can
        // make its lists unreadable, and one held was proven a member when it was signalled.
        // (The `cgroup.kill` path does the same for those that write spares.) A process reached
        // through a thread is held by its own pidfd, whichever of its threads is left.
        let mut errors = Vec::new();
        for p in self.w.tracked() {
            if !self.step_done.contains_key(&p.pid()) {
                match p.send_signal(Signal::KILL) {
                    Ok(true) => killed += 1,
                    Ok(false) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
        for t in self.held_threads.values() {
            if self.step_done.contains_key(&t.tgid()) {
                continue;
            }
            match t.send_signal_to_group(Signal::KILL) {
                Ok(true) => {
                    self.step_done.insert(t.tgid(), false);
                    killed += 1;
                }
                Ok(false) => {}
                Err(e) => errors.push(e),
            }
        }
        for e in errors {
            self.problems.add(e);
        }
        if froze && let Err(e) = self.set_frozen(false) {
            self.problems.add(Error::os(
                "write '0' to",
                &self.cg.path().join("cgroup.freeze"),
                e,
            ));
        }
        tracing::debug!(cgroup = %self.cg.rel(), killed, "fallback kill round");
        match fatal {
            Some(e) => Err(e),
            None => Ok(killed),
        }
    }

    /// After the final kill: waits for the cgroup to empty, until `deadline`. Whenever every
    /// process we hold is gone and the cgroup is still populated, someone was missed (one that
    /// appeared before the freeze took, one we hold no pidfd for, or one that `cgroup.kill`
    /// spared: a process whose leader has exited), so a fallback round goes out, again. A
    /// process the stop holds may never go (stuck in uninterruptible sleep): while the cgroup
    /// stays populated, a round also goes out [`KILL_ROUND_EVERY`] after the last one ended
    /// (the first one after half the kill timeout, if that is shorter), so that no one that keeps hidden is left
    /// unkilled and then reported as a survivor.
    async fn kill_rounds(&mut self, deadline: Instant) -> Result<Wake> {
        let progress = self.opts.progress.clone();
        let k = self.k;
        let start = Instant::now();
        let mut timed_at =
            start + KILL_ROUND_EVERY.min(deadline.saturating_duration_since(start) / 2);
        loop {
            // None too close to the deadline: a round there would only delay the report.
            let next = if timed_at + KILL_ROUND_MIN <= deadline {
                timed_at
            } else {
                deadline
            };
            let wake = self
                .w
                .wait_empty(next, true, |w| {
                    report_progress(k, progress.as_ref(), "SIGKILL", deadline, w)
                })
                .await?;
            let timed = match wake {
                Wake::TrackedGone => false,
                Wake::Deadline if Instant::now() < deadline => true,
                _ => return Ok(wake),
            };
            // A round after everyone held exited waits up to 1 s for the freeze to take (new
            // forks are what it is after); a timed one, which some process held and stuck in
            // uninterruptible sleep may keep from ever freezing, only briefly.
            let freeze_wait = if timed {
                KILL_ROUND_MIN
            } else {
                Duration::from_secs(1)
            };
            let n = self.fallback_round(Some(deadline), freeze_wait).await?;
            // The next timed round a second after this one ended, not after it was due: a
            // round slower than that (a huge listing) is not followed at once by another.
            timed_at = Instant::now() + KILL_ROUND_EVERY;
            if n == 0 && !timed {
                // No one left to signal, yet populated: wait for the stragglers to exit.
                return self.w.wait_empty(deadline, false, |_| {}).await;
            }
        }
    }

    /// The survivors once the kill timeout is over. A survivor is stuck: in uninterruptible
    /// sleep (state D, every thread too) somewhere else than its own exit, and none of them
    /// exits during a short look ([`STUCK_PROBE`]). Anything else has not survived SIGKILL, it is still exiting (slowly, on a loaded machine, when thousands
    /// of processes tear down their memory at once): while such processes are there and their
    /// number keeps falling, the stop waits on (event-driven, a second at a time, at most
    /// [`DYING_MAX`] in all) before it reports what is left.
    async fn confirmed_survivors(&mut self) -> Result<(Vec<Survivor>, usize)> {
        // From the first look on: each look (listing and describing) takes at most
        // SURVIVOR_REPORT_BUDGET, and none starts after this.
        let hard_end = deadline_after(DYING_MAX);
        let (mut survivors, mut counted, listed_whole) = self.survivors_after(&[]);
        let mut n = counted.len();
        if n == 0 {
            // Populated, yet no process listed: the last ones are between leaving cgroup.procs
            // and the end of their exit. Not survivors: wait for `populated 0`, event-driven.
            // A subtree that could not be listed shows no number to see falling: one round.
            let until = if listed_whole {
                hard_end
            } else {
                deadline_after(DYING_ROUND).min(hard_end)
            };
            if self.w.wait_empty(until, false, |_| {}).await? == Wake::Empty {
                return Ok((Vec::new(), 0));
            }
            let whole;
            (survivors, counted, whole) = self.survivors_after(&[]);
            n = counted.len();
            // Said only of a subtree listed whole (one that could not be is said so above).
            if n == 0 && whole {
                self.warnings.push(format!(
                    "the cgroup stayed populated for {}s after the kill without listing any \
                     process (tasks stuck in their exit)",
                    DYING_MAX.as_secs()
                ));
            }
        }
        // One sample can show every exiting process in state D outside `do_exit` (tearing down
        // its memory, on a loaded machine), so whether their number falls decides; when all
        // look stuck, a short look ([`STUCK_PROBE`]) is enough to tell.
        while n > 0 && Instant::now() < hard_end {
            let round = if survivors.iter().all(is_stuck) {
                STUCK_PROBE
            } else {
                DYING_ROUND
            };
            let more = deadline_after(round).min(hard_end);
            if self.w.wait_empty(more, false, |_| {}).await? == Wake::Empty {
                return Ok((Vec::new(), 0));
            }
            let before = n;
            (survivors, counted, _) = self.survivors_after(&counted);
            n = counted.len();
            if n >= before {
                break;
            }
        }
        Ok((survivors, n))
    }

    /// The processes still present, described from sources that cannot block (at most
    /// [`MAX_LISTED`], and within a time budget), their memory released where possible.
    ///
    /// After an earlier look that counted `earlier`: when this look cannot list the whole
    /// subtree (the task made some lists unreadable, or the stopper ran short of descriptors),
    /// each pid the earlier look counted and this one did not list is looked at again, within
    /// the same budget, and counted (and described, up to [`MAX_LISTED`] in all) while it is
    /// still there, in the target. Returns the descriptions, the pids counted, and whether the
    /// subtree was listed whole.
    fn survivors_after(&mut self, earlier: &[i32]) -> (Vec<Survivor>, Vec<i32>, bool) {
        // One budget for the whole look: the listing may use three fifths of it, the
        // descriptions (and the wait for memory releases) what is left.
        let start = Instant::now();
        let budget_end = (start + SURVIVOR_REPORT_BUDGET).into_std();
        let mut pids = Vec::new();
        let whole = self.list_members(&mut pids, start + SURVIVOR_REPORT_BUDGET * 3 / 5);
        // A process with threads in several threaded cgroups is listed by each.
        pids.sort_unstable();
        pids.dedup();
        if !whole {
            let w = format!(
                "the subtree was not listed completely (within {} ms, or a list could not be \
                 read: see errors): survivors_total counts only those listed",
                (SURVIVOR_REPORT_BUDGET * 3 / 5).as_millis()
            );
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
        let mut out = Vec::new();
        // The releases hold a pidfd each, within the stop's descriptor budget like the rest.
        let mut held = self.w.tracked_count() + self.held_threads.len() + self.release.prune();
        for &pid in pids.iter().take(MAX_LISTED) {
            if std::time::Instant::now() >= budget_end {
                break;
            }
            let mut s = self.k.describe(pid);
            if !self.release.started(pid) && held >= self.budget {
                s.mrelease_error = Some("not tried: no descriptor to spare".to_string());
            } else if !self.release.started(pid) {
                held += 1;
                match self.k.open(pid) {
                    Ok(Some(p)) => self.release.start(pid, p),
                    Ok(None) => s.mrelease_error = Some(errno_name(Errno::SRCH)),
                    Err(e) => s.mrelease_error = Some(e.to_string()),
                }
            }
            out.push(s);
        }
        let mut counted = pids;
        if !whole {
            let listed: std::collections::HashSet<i32> = counted.iter().copied().collect();
            let mut again = Vec::new();
            for &pid in earlier.iter().filter(|p| !listed.contains(p)) {
                if std::time::Instant::now() >= budget_end {
                    break;
                }
                if !self.in_target(pid) {
                    continue;
                }
                let now = self.k.describe(pid);
                if !now.state.is_empty() && (now.state != "Z" || !now.threads.is_empty()) {
                    again.push(pid);
                    if out.len() < MAX_LISTED {
                        out.push(now);
                    }
                }
            }
            counted.extend(again);
        }
        self.release.collect(&mut out, budget_end);
        (out, counted, whole)
    }
}

fn deadline_after_from(from: Instant, d: Duration) -> Instant {
    from.checked_add(d).unwrap_or_else(|| deadline_after(d))
}

/// Signals one pid as read from `cg`'s `cgroup.procs`, exactly as every stop step does: opens a
/// pidfd, proves the process behind it is still a member of `cg`, then sends `sig` and `extra`
/// through the pidfd. Returns the pidfd if the signal was delivered; `None` (nothing sent) when
/// the pid is gone or now names a process outside `cg` (the pid was reused).
///
/// Public only so the PID-reuse tests can put a recycled pid into exactly this window.
///
/// # Errors
/// Unexpected OS errors (`EPERM` from `pidfd_send_signal(2)`).
#[doc(hidden)]
pub fn signal_listed_pid(
    cg: &Cgroup,
    pid: i32,
    sig: Signal,
    extra: &[Signal],
) -> Result<Option<PidFd>> {
    let Some(pidfd) = PidFd::open_member(cg, pid)? else {
        return Ok(None);
    };
    Ok(send_all(&pidfd, sig, extra)?.then_some(pidfd))
}

fn send_all(p: &impl TaskProc, sig: Signal, extra: &[Signal]) -> Result<bool> {
    if !p.send_signal(sig)? {
        return Ok(false);
    }
    for &s in extra {
        p.send_signal(s)?;
    }
    Ok(true)
}

/// A name (and state) read by pid, kept only if `p`'s process was still there after the read: a
/// pid names another process once its own has been reaped, and a task that exits at once and
/// cycles the pids must not get an outsider's name into the report. Empty (unknown) otherwise.
fn own_name<P: TaskProc>(p: &P, read: Named) -> Named {
    if p.unreaped() {
        read
    } else {
        tracing::debug!(
            pid = p.tgid(),
            "reaped before its name could be checked: unnamed"
        );
        Named::default()
    }
}

fn report_progress<K: Kernel>(
    k: &K,
    progress: Option<&ProgressFn>,
    phase: &str,
    deadline: Instant,
    w: &K::Watch,
) {
    if let Some(f) = progress {
        let names = w.tracked().take(3).map(|p| k.comm(p.pid())).collect();
        f(&Progress {
            phase: phase.to_string(),
            deadline,
            remaining: w.tracked_count(),
            names,
        });
    }
}

/// Whether building a tokio runtime with `enable_all` can get the descriptors it needs: six
/// (its epoll set and a copy, an eventfd, and the first time in a process the socket pair of
/// its signal driver and a copy), which tokio gets with `expect` (a panic, exit 101, out of
/// descriptors). Six are taken and given back; without them, `EMFILE` (or `ENFILE`) as an error.
///
/// # Errors
/// The error of the `pipe2(2)` that could not be had.
pub fn runtime_descriptors() -> std::io::Result<()> {
    let flags = rustix::pipe::PipeFlags::CLOEXEC;
    let pipes = [
        rustix::pipe::pipe_with(flags)?,
        rustix::pipe::pipe_with(flags)?,
        rustix::pipe::pipe_with(flags)?,
    ];
    drop(pipes);
    Ok(())
}

/// Raises the soft open-file limit to the hard limit once: each live process costs one pidfd.
fn raise_fd_limit() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut lim = getrlimit(Resource::Nofile);
        if lim.current < lim.maximum {
            lim.current = lim.maximum;
            let _ = setrlimit(Resource::Nofile, lim);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn survivor(state: &str, wchan: &str, threads: &[&str]) -> Survivor {
        Survivor {
            pid: 1234,
            comm: "app".into(),
            state: state.into(),
            wchan: wchan.into(),
            memory_released: false,
            mrelease_error: None,
            tracer: None,
            threads: threads
                .iter()
                .enumerate()
                .map(|(i, s)| crate::procinfo::ThreadInfo {
                    tid: 2000 + i32::try_from(i).unwrap(),
                    state: (*s).into(),
                    wchan: String::new(),
                })
                .collect(),
        }
    }

    /// A survivor is stuck only in uninterruptible sleep outside its own exit or in a tracing
    /// stop, every thread too: a SIGKILLed process still tearing down is not reported as a
    /// survivor early.
    #[test]
    fn stuck_means_uninterruptible_outside_exit_in_every_thread() {
        assert!(is_stuck(&survivor("D", "fuse_wait_answer", &[])));
        assert!(is_stuck(&survivor("D", "fuse_wait_answer", &["D", "D"])));
        assert!(!is_stuck(&survivor("D", "do_exit", &[])));
        assert!(!is_stuck(&survivor("D", "fuse_wait_answer", &["D", "R"])));
        assert!(!is_stuck(&survivor("R", "", &[])));
        assert!(!is_stuck(&survivor("Z", "", &["D"])));
        // Held by a tracer at its exit (PTRACE_O_TRACEEXIT).
        assert!(is_stuck(&survivor("t", "ptrace_stop", &[])));
        assert!(is_stuck(&survivor("t", "ptrace_stop", &["D"])));
        assert!(!is_stuck(&survivor("t", "ptrace_stop", &["R"])));
        assert!(!is_stuck(&survivor("T", "do_signal_stop", &[])));
    }

    /// `GRACEKILL_FORCE_FALLBACK=1` forces the fallback; nothing in the environment takes a
    /// fallback that was asked for away.
    #[test]
    fn the_environment_can_force_the_fallback_but_not_undo_it() {
        use std::ffi::OsStr;
        let one = Some(OsStr::new("1"));
        assert_eq!(KillMethod::Auto.or_forced(None), KillMethod::Auto);
        assert_eq!(KillMethod::Auto.or_forced(one), KillMethod::Fallback);
        for other in ["0", "", "yes", "true"] {
            assert_eq!(
                KillMethod::Auto.or_forced(Some(OsStr::new(other))),
                KillMethod::Auto,
                "{other}"
            );
        }
        for env in [None, one, Some(OsStr::new("0"))] {
            assert_eq!(KillMethod::Fallback.or_forced(env), KillMethod::Fallback);
        }
    }
}
