//! `run`: start a command straight into a new cgroup, stay its parent (and subreaper), and stop
//! the task by its policy when asked, on timeout, or when its main process leaves helpers behind.
//!
//! The command joins the cgroup between `fork` and `exec` (it writes `0` to the already-open
//! `cgroup.procs`), so it runs no instruction outside and cannot fork outside. The policy and the
//! main pid are recorded on the cgroup as xattrs, so `gracekill stop NAME` from anywhere applies
//! them, even if `run` itself was SIGKILLed (the task then keeps running, as a systemd scope does).

use std::ffi::OsString;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::process::WaitOptions;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use crate::cgroup::{Cgroup, Mount};
use crate::error::{Error, Result};
use crate::policy::{KillMode, Policy};
use crate::report::{Outcome, Verdict};
use crate::stop::{KillMethod, StopOptions, stop};
use crate::task::{TaskMeta, validate_name};
use crate::watch::{Wake, Watcher, deadline_after};

/// What to run and how to stop it.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The task name: one path component (see [`validate_name`]).
    pub name: String,
    /// The parent cgroup, relative to the mount (created if missing).
    pub parent: String,
    /// The stop policy, recorded on the cgroup.
    pub policy: Policy,
    /// Start the graceful stop after this long (`timeout(1)` semantics).
    pub timeout: Option<Duration>,
    /// Keep the (empty) cgroup when the task ends.
    pub keep: bool,
    /// The command and its arguments.
    pub argv: Vec<OsString>,
    /// How to deliver final kills (`GRACEKILL_FORCE_FALLBACK=1` in the environment also forces
    /// the fallback).
    pub kill_method: KillMethod,
}

/// Why a stop was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// `run` got SIGTERM, SIGINT or SIGHUP.
    Signal,
    /// `--timeout` expired.
    Timeout,
    /// The main process exited and left other processes in the cgroup.
    Leftovers,
    /// Another process stopped the task (`gracekill stop NAME`): seen by its stopping mark
    /// when the main process exited. That stop's outcome is that process's report.
    External,
}

/// How the main process ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MainExit {
    /// The main process's pid.
    pub pid: i32,
    /// Its exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
}

impl MainExit {
    /// The shell convention: the exit code, or 128 + the signal number.
    pub fn status(&self) -> i32 {
        match (self.exit_code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            _ => 1,
        }
    }
}

/// What `run` did, printed by `run --json`.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct RunReport {
    /// The task name.
    pub name: String,
    /// The task's cgroup, relative to the mount.
    pub cgroup: String,
    /// How the main process ended.
    pub main: MainExit,
    /// `run`'s own exit status: the main process's status, or 124/137 after `--timeout`.
    pub exit_code: i32,
    /// Whether `--timeout` fired.
    pub timed_out: bool,
    /// Why a stop ran, if one did.
    pub stop_reason: Option<StopReason>,
    /// The stop's outcome, if this `run` stopped the task.
    pub stop: Option<Outcome>,
    /// For `stop_reason: external`: the pid of the process that stopped the task.
    pub stopped_by: Option<i32>,
    /// Whether the cgroup was removed at the end.
    pub removed: bool,
}

/// Creates and claims the task cgroup `<parent>/<name>` for the calling process.
///
/// The claim is exclusive: `mkdir(2)` creates the cgroup for exactly one caller, who then
/// records itself as the owner (`owner` = `PID STARTTIME`, set with `XATTR_CREATE`) before
/// anything else. An existing cgroup of that name is reused only when it is gracekill's
/// (a `created` record), empty, and its owner is gone: it is then removed and created afresh,
/// so a frozen or threaded leftover never carries over, and of two callers racing for the name
/// only one `mkdir` succeeds. A fresh cgroup that is frozen (a frozen parent) or not a domain (a
/// threaded parent) is refused: a command could not start or be stopped there.
///
/// # Errors
/// [`Error::Input`] for a bad name, [`Error::Busy`] for a name in use (or lost to a concurrent
/// `run`), OS errors creating it.
pub fn create_task_cgroup(mount: &Mount, parent: &str, name: &str) -> Result<Cgroup> {
    validate_name(name)?;
    let (parent_cg, _) = mount.create_cgroup(parent)?;
    let in_use = |why: &str| {
        Error::Busy(format!(
            "task name '{name}' is in use: cgroup '{}' {why} (stop it with 'gracekill stop {name}')",
            parent_cg.path().join(name).display()
        ))
    };
    let cg = match parent_cg.create_child(name) {
        Ok(cg) => cg,
        Err(Error::Busy(_)) => {
            let old =
                mount.open_cgroup(&format!("{}/{name}", parent_cg.rel().trim_end_matches('/')))?;
            if old.events()?.populated {
                return Err(in_use("has running processes"));
            }
            let records = crate::task::Records::of(&old);
            if crate::task::owner(&old).is_some() {
                return Err(in_use("is claimed by a running 'gracekill run'"));
            }
            if records.get("created").ok().flatten().is_none() {
                return Err(in_use("exists and was not made by gracekill run"));
            }
            // A kept or abandoned task of ours, empty: remove it and claim the name afresh.
            match crate::task::remove_cgroup(&old) {
                Ok(()) => {}
                Err(_) if old.events()?.populated => {
                    return Err(in_use("has running processes"));
                }
                Err(e) => return Err(e),
            }
            parent_cg.create_child(name).map_err(|e| match e {
                Error::Busy(_) => in_use("was just claimed by another 'gracekill run'"),
                e => e,
            })?
        }
        Err(e) => return Err(e),
    };
    match crate::task::claim(&cg) {
        Ok(()) => {}
        Err(Error::Busy(_)) => return Err(in_use("was just claimed by another 'gracekill run'")),
        Err(e) => return Err(e),
    }
    let fail = |why: String| {
        let _ = crate::task::remove_cgroup(&cg);
        Err(Error::Input(why))
    };
    if cg.events()?.frozen {
        return fail(format!(
            "cannot start a task in '{}': it is frozen (a parent cgroup has cgroup.freeze set)",
            cg.path().display()
        ));
    }
    let kind = cg.read_file("cgroup.type").unwrap_or_default();
    if kind.trim() != "domain" {
        return fail(format!(
            "cannot start a task in '{}': its type is '{}', not 'domain' (the parent is threaded)",
            cg.path().display(),
            kind.trim()
        ));
    }
    Ok(cg)
}

/// How long `run` waits, once it has no child left, for one more to be reparented to it (a
/// process of the task that had left the cgroup but not yet finished exiting).
const REPARENT_WINDOW: Duration = Duration::from_millis(50);

/// A boxed stop in progress.
type StopFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome>> + 'a>>;

/// A wait for another process's stop of the task (`gracekill stop NAME`): it ends with `Empty`
/// (that stop emptied the cgroup), `TrackedGone` (its stopper died mid-stop) or `Deadline` (it
/// overran this task's policy).
type OtherStop<'a> = Pin<Box<dyn Future<Output = Result<Wake>> + 'a>>;

/// `--timeout`: its length, for the message, and its timer. The timer starts when first polled.
struct Timeout {
    after: Duration,
    timer: Pin<Box<dyn Future<Output = ()>>>,
}

/// Where `run` is in stopping its task. A stop's future, its reason and its outcome exist
/// together or not at all, and what each phase waits on lives in it: the `--timeout` timer only
/// in `Running` (leaving it disarms the timeout), our stop only in `Stopping`.
///
/// ```text
///          a signal, --timeout; main exited, others left
/// Running ────────────────────────────────────────────────▶ Stopping ── returns ──▶ Stopped
///    │                                                         ▲    ◀─── a signal ───┘
///    │ main exited, another's stop recorded                    │
///    ▼                                                         │
/// StoppedByOther ──── a signal; others left, its stopper gone ─┘
/// any phase ── the other stop we await overran our policy ──▶ Stopping (for the leftovers)
/// ```
/// A signal in `Stopping` escalates the stop instead. The run ends, the main process reaped,
/// in `Running`, `Stopped` or `StoppedByOther` (see [`Phase::over`]).
///
/// The wait for another process's stop is not a phase: it runs alongside one (`supervise`'s
/// `other`), as a signal then still starts or escalates a stop of our own.
enum Phase<'a> {
    /// Nothing has started a stop: `--timeout`, if given, is armed; a signal starts the graceful
    /// stop.
    Running { timeout: Option<Timeout> },
    /// Our stop runs: a signal skips the rest of its grace.
    Stopping {
        reason: StopReason,
        stop: StopFuture<'a>,
    },
    /// Our stop returned. The main process may not be reaped yet (`populated 0` comes a moment
    /// before its exit is final; or it survived the final kill): a signal then starts another
    /// stop.
    Stopped {
        reason: StopReason,
        outcome: Box<Outcome>,
    },
    /// Another process stopped the task, as its records said when the main process exited:
    /// that stop's outcome is that process's report.
    StoppedByOther,
}

/// Starts our stop of the task for a reason (`supervise` logs it and calls the engine).
type StartStop<'s, 'a> = &'s dyn Fn(StopReason) -> StopFuture<'a>;

impl<'a> Phase<'a> {
    /// The first phase: `--timeout` (if given) is armed; its timer starts on the first wait.
    fn running(timeout: Option<Duration>) -> Phase<'a> {
        Phase::Running {
            timeout: timeout.map(|after| Timeout {
                after,
                timer: Box::pin(async move { tokio::time::sleep(after).await }),
            }),
        }
    }

    fn stopping(reason: StopReason, start: StartStop<'_, 'a>) -> Phase<'a> {
        Phase::Stopping {
            reason,
            stop: start(reason),
        }
    }

    /// Why a stop ran, for the report; `None` while nothing has stopped the task.
    fn reason(&self) -> Option<StopReason> {
        match self {
            Phase::Running { .. } => None,
            Phase::Stopping { reason, .. } | Phase::Stopped { reason, .. } => Some(*reason),
            Phase::StoppedByOther => Some(StopReason::External),
        }
    }

    /// Whether a stop of ours is running (until it returns, the run cannot end).
    fn stopping_now(&self) -> bool {
        matches!(self, Phase::Stopping { .. })
    }

    /// Is a deadline of ours running: the stop's, or `--timeout`'s? A stopped job is then not
    /// followed (see the supervision loop).
    fn on_a_deadline(&self) -> bool {
        matches!(
            self,
            Phase::Stopping { .. } | Phase::Running { timeout: Some(_) }
        )
    }

    /// Once the main process has exited, no stop of ours runs and none of another process is
    /// awaited: whether the run is over. It is when the task is empty, when our stop has
    /// returned (its outcome reports what it left), and with `kill-mode=process`, which leaves
    /// the main process's helpers running by design. Otherwise the leftovers are stopped.
    fn over(&self, populated: bool, kill_mode: KillMode) -> bool {
        !populated || matches!(self, Phase::Stopped { .. }) || kill_mode == KillMode::Process
    }

    /// A stop request from a signal: the first starts the graceful stop, the next skips to the
    /// final kill.
    fn signal(
        &mut self,
        sig: &str,
        escalate: &Notify,
        start: StartStop<'_, 'a>,
        on_event: &dyn Fn(&str),
    ) {
        if self.stopping_now() {
            on_event(&format!(
                "{sig} again: skipping the rest of the grace period"
            ));
            escalate.notify_one();
        } else {
            on_event(&format!(
                "{sig}: stopping the task gracefully (again to kill at once)"
            ));
            *self = Phase::stopping(StopReason::Signal, start);
        }
    }

    /// Waits for this phase's own event and takes it: `Running`'s `--timeout` expiring starts
    /// the stop; `Stopping`'s stop returning records its outcome. Other phases (and `Running`
    /// without a timeout) wait on nothing of their own: this never returns there.
    ///
    /// # Errors
    /// The stop's error.
    async fn advance(&mut self, start: StartStop<'_, 'a>, on_event: &dyn Fn(&str)) -> Result<()> {
        match self {
            Phase::Running {
                timeout: Some(Timeout { after, timer }),
            } => {
                let after = *after;
                timer.await;
                on_event(&format!(
                    "timeout after {}: stopping the task",
                    crate::policy::format_duration(after)
                ));
                *self = Phase::stopping(StopReason::Timeout, start);
            }
            Phase::Stopping { reason, stop } => {
                let reason = *reason;
                let outcome = stop.await?;
                *self = Phase::Stopped {
                    reason,
                    outcome: Box::new(outcome),
                };
            }
            Phase::Running { timeout: None } | Phase::Stopped { .. } | Phase::StoppedByOther => {
                std::future::pending::<()>().await;
            }
        }
        Ok(())
    }

    /// The awaited stop of another process ended. `Empty`: it emptied the task. `TrackedGone`:
    /// its stopper died mid-stop; the main-exit check then starts our own. `Deadline`: it
    /// overran this task's policy, so we stop the leftovers ourselves, from the first step,
    /// in place of whatever this phase was (a signal's stop of ours included).
    fn other_ended(&mut self, wake: Wake, start: StartStop<'_, 'a>, on_event: &dyn Fn(&str)) {
        if wake == Wake::Deadline {
            on_event("the other stop overran this task's policy; stopping the task");
            *self = Phase::stopping(StopReason::Leftovers, start);
        }
    }

    /// The report's stop reason and our stop's outcome.
    fn end(self) -> (Option<StopReason>, Option<Outcome>) {
        let reason = self.reason();
        match self {
            Phase::Stopped { outcome, .. } => (reason, Some(*outcome)),
            Phase::Running { .. } | Phase::Stopping { .. } | Phase::StoppedByOther => {
                (reason, None)
            }
        }
    }
}

/// Runs `spec` in the foreground until the task ends; returns what happened. Must run on a
/// tokio runtime with signal support; installs handlers for SIGINT, SIGTERM, SIGHUP, SIGCHLD
/// and makes this process a child subreaper. `on_event` is called with status lines on the
/// thread that supervises and stops the task: it must not block, as a write to a stderr the task
/// inherited and keeps full would (the CLI queues its lines to a writer thread).
///
/// # Errors
/// Creating the cgroup, recording the policy, or spawning the command (`NotFound` when the
/// command does not exist, `PermissionDenied` when it cannot be executed).
pub async fn run(mount: &Mount, spec: &RunSpec, on_event: impl Fn(&str)) -> Result<RunReport> {
    spec.policy.validate()?;
    if spec.argv.is_empty() {
        return Err(Error::Input(
            "no command given (usage: gracekill run [OPTIONS] -- CMD [ARGS...])".into(),
        ));
    }
    let cg = create_task_cgroup(mount, &spec.parent, &spec.name)?;
    let result = supervise(&cg, spec, &on_event).await;
    if result.is_err() && !cg.events().map(|e| e.populated).unwrap_or(true) {
        let _ = crate::task::remove_cgroup(&cg);
    }
    result
}

async fn supervise(cg: &Cgroup, spec: &RunSpec, on_event: &dyn Fn(&str)) -> Result<RunReport> {
    let created = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    TaskMeta {
        policy: Some(spec.policy.clone()),
        main_pid: None,
        created: Some(created),
    }
    .write(cg)?;

    // Signal handlers first: no window in which a Ctrl-C would kill `run` but not stop the task.
    let sig_err = |e: std::io::Error| {
        Error::os(
            "install signal handler in",
            cg.path(),
            crate::cgroup::errno_of(&e),
        )
    };
    // SIGCHLD needs tokio's I/O driver: without it (a runtime built for an attack on the
    // epoll watches), an error before CMD starts, not tokio's panic.
    if let Some(why) = crate::watch::runtime_without_io() {
        return Err(Error::Unsupported(format!(
            "run needs tokio's I/O driver to wait for its task ({why})"
        )));
    }
    // A signal inherited as ignored stays ignored, for `run` and, through exec, for CMD.
    let mut interrupts = crate::interrupts::Interrupts::listen().map_err(sig_err)?;
    let mut sigchld = signal(SignalKind::child()).map_err(sig_err)?;
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| Error::os("become child subreaper for", cg.path(), e))?;

    // In the foreground of a terminal, CMD becomes a job of its own (see `Job`).
    let tty = Job::terminal();
    let main_pid = spawn_into(cg, &spec.argv, tty.is_some())?;
    let mut job = tty.map(|own| Job::start(own, main_pid));
    TaskMeta {
        main_pid: Some(main_pid),
        ..TaskMeta::default()
    }
    .write(cg)?;
    tracing::debug!(cgroup = %cg.rel(), pid = main_pid, "started main process");

    let escalate = Arc::new(Notify::new());
    let opts = StopOptions {
        kill_method: spec.kill_method.for_task(),
        main_pid: Some(main_pid),
        progress: None,
        escalate: Some(escalate.clone()),
        // A person at a terminal cuts the grace short with a second Ctrl-C: the report of the
        // kill that follows names command lines too.
        cmdlines_at_once: true,
    };
    let start_stop = |reason: StopReason| -> StopFuture<'_> {
        tracing::debug!(cgroup = %cg.rel(), ?reason, "stopping task");
        Box::pin(stop(cg, &spec.policy, &opts))
    };

    let mut main: Option<MainExit> = None;
    let mut phase = Phase::running(spec.timeout);
    // A stop started by another process (`gracekill stop NAME`) while our main process exits:
    // wait for it (or for its stopper to die) instead of starting a second stop.
    let mut other: Option<OtherStop<'_>> = None;
    let mut stopped_by = None;
    // Whether the line about a job continued was said, in the stop (true) or before it (false):
    // once each, however often a task stops itself (one that reads the terminal from the
    // background stops on every read).
    let mut said_continued = [false; 2];
    loop {
        if let Some(j) = job.as_mut()
            && main.is_none()
            && main_stopped(main_pid)
        {
            if phase.on_a_deadline() {
                // Not followed while a deadline of ours runs: a task could stop itself (say its
                // SIGTERM handler sending itself SIGSTOP, or SIGTSTP before `--timeout`, which
                // is a Ctrl-Z's) to have `run` stop with it, and the deadline with `run`, while
                // its other processes run on. Nor left stopped: a Ctrl-Z during the stop would
                // cost the application the rest of its grace, and keep the terminal from a
                // second Ctrl-C.
                let stopping = phase.stopping_now();
                if !std::mem::replace(&mut said_continued[usize::from(stopping)], true) {
                    on_event(if stopping {
                        "the job was stopped during its stop: continued, the stop goes on"
                    } else {
                        "the job was stopped: continued, as --timeout is a limit in real time"
                    });
                }
                j.continue_job(main_pid);
            } else {
                j.stopped(main_pid);
            }
        }
        reap(main_pid, &mut main);
        // Our stop is over and the main process survived its final kill: stuck in
        // uninterruptible sleep, or held at its exit by a tracer (two processes of the task
        // tracing each other with PTRACE_O_TRACEEXIT hold each other for good). Its reap may
        // never come: the stop has reported it, and `run` ends with that report, the cgroup
        // kept (helper-30: `run` waited for as long as the tracer held it).
        let survived = main.is_none()
            && other.is_none()
            && matches!(&phase, Phase::Stopped { outcome, .. } if main_survived(outcome, main_pid));
        if (main.is_some() || survived)
            && let Some(j) = job.as_mut()
        {
            j.take_back();
        }
        if survived {
            on_event(&format!(
                "main process {main_pid} survived the final kill: not waiting for it"
            ));
            break;
        }
        if other.is_none()
            && !phase.stopping_now()
            && let Some(m) = &main
        {
            if let Phase::Running { .. } = phase {
                // A stop in progress, or one that finished before we noticed the exit.
                let by = crate::task::stopper(cg)
                    .map(|p| p.pid())
                    .or_else(|| crate::task::last_stopper_pid(cg))
                    .filter(|&pid| u32::try_from(pid).ok() != Some(std::process::id()));
                if let Some(pid) = by {
                    phase = Phase::StoppedByOther;
                    stopped_by = Some(pid);
                }
            }
            let populated = cg.events()?.populated;
            if phase.over(populated, spec.policy.kill_mode) {
                break;
            }
            if let Some(stopper) = crate::task::stopper(cg) {
                tracing::debug!(cgroup = %cg.rel(), pid = stopper.pid(), "another process is stopping the task; waiting");
                let mut w = Watcher::new(cg)?;
                w.track(stopper)?;
                // However long the other stop may take by our policy, plus a margin: a stopper
                // that hangs (or a record that lies) cannot hold the leftovers forever.
                let bound = spec.policy.steps.iter().map(|s| s.grace).sum::<Duration>()
                    + spec.policy.kill_timeout
                    + Duration::from_secs(5);
                other = Some(Box::pin(async move {
                    w.wait_empty(deadline_after(bound), true, |_| {}).await
                }));
                continue;
            }
            on_event(&format!(
                "main process {} exited (status {}); stopping the processes it left behind",
                m.pid,
                m.status()
            ));
            phase = Phase::stopping(StopReason::Leftovers, &start_stop);
        }
        tokio::select! {
            _ = sigchld.recv() => {}
            name = interrupts.next() => phase.signal(name, &escalate, &start_stop, on_event),
            r = phase.advance(&start_stop, on_event) => r?,
            r = other_stop_ends(&mut other) => {
                let wake = r?;
                other = None;
                // After `Empty` or `TrackedGone`, the top of the loop decides (and may start our
                // own stop); after `Deadline`, our own stop has started.
                phase.other_ended(wake, &start_stop, on_event);
            }
        }
    }
    // Everything in the task has exited, but `populated 0` comes when the last process leaves
    // its cgroup, a moment before its exit is final: its children may not be reparented to us
    // (the subreaper) yet, nor it a zombie we can reap. Reap every child, orphans included, so
    // none is left for init: wait for SIGCHLD while children remain, and, once none is left,
    // a short while longer for a last reparented one. Bounded: a child that left the cgroup
    // (only a privileged one can) is not waited for past a second.
    let reap_until = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let remain = reap(main_pid, &mut main);
        let until = if remain {
            reap_until
        } else {
            reap_until.min(tokio::time::Instant::now() + REPARENT_WINDOW)
        };
        tokio::select! {
            _ = sigchld.recv() => {}
            () = tokio::time::sleep_until(until) => {
                if remain {
                    tracing::debug!(cgroup = %cg.rel(), "children outside the task remain; not waiting for them");
                }
                break;
            }
        }
    }
    let populated = cg.events().map(|e| e.populated).unwrap_or(false);
    // A cgroup left populated (survivors of the final kill, helpers process mode leaves
    // running) keeps its claim: once this `run` is gone, `list` shows the task orphaned and
    // the stop that empties it removes it. Without the claim it would stay for good.
    if !populated {
        let _ = crate::task::Records::of(cg).remove("owner");
    }
    let main = main.unwrap_or(MainExit {
        pid: main_pid,
        ..MainExit::default()
    });
    let (stop_reason, outcome) = phase.end();
    let timed_out = stop_reason == Some(StopReason::Timeout);
    let exit_code = exit_code(outcome.as_ref().map(kill_was_needed), timed_out, &main);
    let removed = !spec.keep
        && !populated
        && crate::task::remove_cgroup(cg)
            .inspect_err(|e| tracing::warn!("the task's cgroup stays: {e}"))
            .is_ok();
    Ok(RunReport {
        name: spec.name.clone(),
        cgroup: cg.rel().to_string(),
        main,
        exit_code,
        timed_out,
        stop_reason,
        stop: outcome,
        stopped_by,
        removed,
    })
}

/// Waits for the awaited stop of another process to end, or forever if none is awaited.
async fn other_stop_ends(other: &mut Option<OtherStop<'_>>) -> Result<Wake> {
    match other {
        Some(w) => w.await,
        None => std::future::pending().await,
    }
}

/// Reaps every exited child without blocking; records the main process's status. Returns
/// whether children remain (alive, or not yet reapable).
fn reap(main_pid: i32, main: &mut Option<MainExit>) -> bool {
    loop {
        // `wait` is `wait4(-1)`: any child. (`waitpid(None)` would be `wait4(0)`, only children
        // in our process group, missing every setsid'd orphan reparented to us.)
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => {
                if pid.as_raw_nonzero().get() == main_pid {
                    *main = Some(MainExit {
                        pid: main_pid,
                        exit_code: status.exit_status(),
                        signal: status.terminating_signal(),
                    });
                }
            }
            Ok(None) => return true,
            Err(Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

/// CMD as the terminal's foreground job, while `run` runs in the foreground of a terminal: as a
/// shell does for a job, CMD gets a process group of its own and the terminal, so Ctrl-C (or
/// Ctrl-\) reaches CMD's processes once, from the terminal, and not `run` (which would then
/// send the policy's stop signal on top: two stop requests at once). Ctrl-Z stops the job; `run`
/// takes the terminal back and stops itself, so the shell sees a stopped job; `fg` continues
/// `run`, which hands the terminal back and continues the job. When the main process is gone,
/// `run` takes the terminal back.
struct Job {
    /// `run`'s own process group, which had the terminal.
    own: i32,
    /// CMD's process group (its pid), while it has the terminal.
    pgrp: Option<i32>,
}

impl Job {
    /// `run`'s process group, if `run` is the foreground group of the terminal on its stdin.
    fn terminal() -> Option<i32> {
        let stdin = rustix::stdio::stdin();
        if !rustix::termios::isatty(stdin) {
            return None;
        }
        let fg = rustix::termios::tcgetpgrp(stdin).ok()?;
        let own = rustix::process::getpgrp();
        (fg == own).then(|| own.as_raw_nonzero().get())
    }

    /// The parent's half of the hand-over (the child did the same before exec).
    fn start(own: i32, main_pid: i32) -> Job {
        if let Some(pid) = rustix::process::Pid::from_raw(main_pid) {
            let _ = rustix::process::setpgid(Some(pid), Some(pid));
        }
        let _ = crate::sys::set_foreground(rustix::stdio::stdin(), main_pid);
        Job {
            own,
            pgrp: Some(main_pid),
        }
    }

    /// Gives the terminal back to `run`'s group.
    fn take_back(&mut self) {
        if self.pgrp.take().is_some() {
            let _ = crate::sys::set_foreground(rustix::stdio::stdin(), self.own);
        }
    }

    /// Continues the job, stopped while `run` stops it.
    fn continue_job(&self, main_pid: i32) {
        let _ = crate::sys::continue_group(main_pid);
    }

    /// The main process was stopped (Ctrl-Z): stop `run` too, then continue both.
    fn stopped(&mut self, main_pid: i32) {
        self.take_back();
        crate::sys::stop_self();
        // Continued (`fg`): the job gets the terminal back, then its SIGCONT.
        let _ = crate::sys::set_foreground(rustix::stdio::stdin(), main_pid);
        self.pgrp = Some(main_pid);
        let _ = crate::sys::continue_group(main_pid);
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.take_back();
    }
}

/// Has the main process been stopped by a job-control signal (consumes that report)?
fn main_stopped(main_pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(main_pid) else {
        return false;
    };
    matches!(
        rustix::process::waitid(
            rustix::process::WaitId::Pid(pid),
            rustix::process::WaitIdOptions::STOPPED | rustix::process::WaitIdOptions::NOHANG,
        ),
        Ok(Some(st)) if st.stopped()
    )
}

/// `run`'s exit status, as coreutils' `timeout` has it: when `--timeout` expired, 124 if the
/// task then ended within its grace, 137 if the final kill was needed; otherwise the main
/// process's own status (128 + signal when a signal ended it).
///
/// `killed`: whether the stop needed its final kill, if a stop ran (see [`kill_was_needed`]).
fn exit_code(killed: Option<bool>, timed_out: bool, main: &MainExit) -> i32 {
    let unknown = main.exit_code.is_none() && main.signal.is_none();
    match (killed, timed_out) {
        (Some(true), true) => 137,
        (Some(false), true) => 124,
        // Killed, and its status unknown: it survived the final kill (it will end of it).
        (Some(true), false) if unknown => 137,
        _ => main.status(),
    }
}

/// Is the main process among the survivors of the stop's final kill (or, with more survivors
/// than the report lists, possibly among those left out)? A main process that is merely slow to
/// be reaped after a stop whose other processes survived is not: `run` waits for its reap.
fn main_survived(o: &Outcome, main_pid: i32) -> bool {
    o.outcome == Verdict::Survivors
        && (o.survivors.iter().any(|s| s.pid == main_pid) || o.survivors_total > o.survivors.len())
}

/// Did the stop need its final kill? Its verdict says so, or, in process mode (whose verdict is
/// `remaining` while the others run on), a SIGKILL that went out to the main process.
fn kill_was_needed(o: &Outcome) -> bool {
    matches!(o.outcome, Verdict::Killed | Verdict::Survivors)
        || o.steps
            .iter()
            .any(|s| s.signal == crate::policy::Signal::KILL && s.signalled > 0)
}

/// Spawns `argv` so that it joins `cg` before `exec` (and, with `job`, becomes the terminal's
/// foreground job). Returns its pid.
fn spawn_into(cg: &Cgroup, argv: &[OsString], job: bool) -> Result<i32> {
    let procs_path = cg.path().join("cgroup.procs");
    let procs: OwnedFd = rustix::fs::openat(
        cg.as_fd(),
        "cgroup.procs",
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::os("open", &procs_path, e))?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    crate::sys::join_cgroup_before_exec(&mut cmd, &procs);
    if job {
        crate::sys::foreground_job_before_exec(&mut cmd, rustix::stdio::stdin());
    }
    let child = cmd.spawn().map_err(|e| Error::Spawn {
        cmd: argv[0].to_string_lossy().into_owned(),
        errno: crate::cgroup::errno_of(&e),
    })?;
    // A pid is below PID_MAX_LIMIT (2^22): it fits in a pid_t.
    let pid = child.id().cast_signed();
    // We reap with waitpid ourselves (we are the subreaper for the whole task); dropping the
    // `Child` neither waits nor kills.
    drop(child);
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Runs `f` to its end, or for 50 ms if it waits on something that does not come. A phase's
    /// waits are tokio's (timers), so this runs a current-thread runtime with time enabled.
    fn within_50ms<F: Future>(f: F) -> Option<F::Output> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(50), f)
                .await
                .ok()
        })
    }

    fn outcome(verdict: Verdict) -> Outcome {
        Outcome {
            policy_source: crate::task::PolicySource::Default,
            ..Outcome::nothing("/t".into(), verdict, String::new())
        }
    }

    /// What the transitions did: the stops they started, by reason, and the events they said.
    /// Each started stop returns `verdict`, or never returns if there is none.
    struct Seen {
        verdict: Option<Verdict>,
        started: RefCell<Vec<StopReason>>,
        events: RefCell<Vec<String>>,
    }

    impl Seen {
        fn new(verdict: Option<Verdict>) -> Seen {
            Seen {
                verdict,
                started: RefCell::new(Vec::new()),
                events: RefCell::new(Vec::new()),
            }
        }

        fn start(&self, reason: StopReason) -> StopFuture<'static> {
            self.started.borrow_mut().push(reason);
            match self.verdict {
                Some(v) => Box::pin(async move { Ok(outcome(v)) }),
                None => Box::pin(std::future::pending()),
            }
        }

        fn event(&self, e: &str) {
            self.events.borrow_mut().push(e.to_string());
        }

        fn events(&self) -> Vec<String> {
            self.events.borrow().clone()
        }

        fn started(&self) -> Vec<StopReason> {
            self.started.borrow().clone()
        }
    }

    #[test]
    fn a_first_signal_starts_the_graceful_stop_and_the_next_escalates_it() {
        let seen = Seen::new(None);
        let start = |r| seen.start(r);
        let on_event = |e: &str| seen.event(e);
        let escalate = Notify::new();
        let mut phase = Phase::running(None);
        phase.signal("SIGINT", &escalate, &start, &on_event);
        assert_eq!(phase.reason(), Some(StopReason::Signal));
        assert!(phase.stopping_now());
        assert_eq!(seen.started(), [StopReason::Signal]);
        assert!(
            within_50ms(escalate.notified()).is_none(),
            "escalated too early"
        );
        phase.signal("SIGTERM", &escalate, &start, &on_event);
        assert_eq!(
            seen.started(),
            [StopReason::Signal],
            "a second stop was started"
        );
        assert!(within_50ms(escalate.notified()).is_some(), "not escalated");
        assert_eq!(
            seen.events(),
            [
                "SIGINT: stopping the task gracefully (again to kill at once)",
                "SIGTERM again: skipping the rest of the grace period",
            ]
        );
    }

    #[test]
    fn a_signal_after_a_stop_ended_starts_a_new_one() {
        let seen = Seen::new(None);
        let start = |r| seen.start(r);
        let on_event = |e: &str| seen.event(e);
        let escalate = Notify::new();
        for mut phase in [
            Phase::Stopped {
                reason: StopReason::Leftovers,
                outcome: Box::new(outcome(Verdict::Survivors)),
            },
            Phase::StoppedByOther,
        ] {
            phase.signal("SIGHUP", &escalate, &start, &on_event);
            assert_eq!(phase.reason(), Some(StopReason::Signal));
            assert!(phase.stopping_now());
        }
        assert_eq!(seen.started(), [StopReason::Signal, StopReason::Signal]);
        assert!(within_50ms(escalate.notified()).is_none(), "escalated");
    }

    /// Process mode ends `remaining` while the others run on: a SIGKILL it sent to the main
    /// process is the final kill all the same (137 after `--timeout`, as `timeout(1)` has it).
    #[test]
    fn a_process_mode_kill_of_the_main_process_was_needed() {
        let step = |signal, signalled| crate::report::StepReport {
            signal,
            at_ms: 0.0,
            signalled,
            via: None,
            by_pid: None,
        };
        let mut o = outcome(Verdict::Remaining);
        o.steps = vec![step(crate::policy::Signal::TERM, 1)];
        assert!(!kill_was_needed(&o));
        o.steps.push(step(crate::policy::Signal::KILL, 0));
        assert!(!kill_was_needed(&o), "a final kill of no one");
        o.steps[1].signalled = 1;
        assert!(kill_was_needed(&o));
        assert!(kill_was_needed(&outcome(Verdict::Killed)));
        assert!(!kill_was_needed(&outcome(Verdict::Graceful)));
    }

    /// `run` stops waiting for its main process only when the main process is among the
    /// survivors (or may be, past the listed ones): one merely slow to be reaped, after a stop
    /// whose other processes survived, is waited for (helper-32).
    #[test]
    fn only_a_main_process_that_survived_ends_the_wait_for_its_reap() {
        let survivor = |pid| crate::report::Survivor {
            pid,
            comm: "x".into(),
            state: "D".into(),
            wchan: String::new(),
            memory_released: false,
            mrelease_error: None,
            tracer: None,
            threads: Vec::new(),
        };
        let mut o = outcome(Verdict::Survivors);
        o.survivors = vec![survivor(7)];
        o.survivors_total = 1;
        assert!(
            !main_survived(&o, 5),
            "a helper survived, not the main process"
        );
        assert!(main_survived(&o, 7));
        o.survivors_total = 101;
        assert!(main_survived(&o, 5), "maybe among those not listed");
        o.outcome = Verdict::Killed;
        assert!(!main_survived(&o, 7));
    }

    #[test]
    fn the_timeout_starts_the_stop_whose_outcome_decides_124_or_137() {
        for (verdict, want) in [(Verdict::Graceful, 124), (Verdict::Killed, 137)] {
            let seen = Seen::new(Some(verdict));
            let start = |r| seen.start(r);
            let on_event = |e: &str| seen.event(e);
            let mut phase = Phase::running(Some(Duration::ZERO));
            let r = within_50ms(phase.advance(&start, &on_event));
            assert!(matches!(r, Some(Ok(()))), "the timeout did not fire");
            assert_eq!(seen.events(), ["timeout after 0s: stopping the task"]);
            assert_eq!(seen.started(), [StopReason::Timeout]);
            let r = within_50ms(phase.advance(&start, &on_event));
            assert!(matches!(r, Some(Ok(()))), "the stop did not return");
            assert!(matches!(phase, Phase::Stopped { .. }));
            assert!(phase.over(true, KillMode::ControlGroup));
            let (reason, stop) = phase.end();
            assert_eq!(reason, Some(StopReason::Timeout));
            let main = MainExit {
                signal: Some(15),
                ..MainExit::default()
            };
            let timed_out = reason == Some(StopReason::Timeout);
            assert_eq!(
                exit_code(stop.as_ref().map(kill_was_needed), timed_out, &main),
                want
            );
        }
    }

    #[test]
    fn leaving_running_disarms_the_timeout_and_nothing_arms_it_later() {
        let seen = Seen::new(None);
        let start = |r| seen.start(r);
        let on_event = |e: &str| seen.event(e);
        // No `--timeout`: `Running` waits on nothing of its own.
        let mut phase = Phase::running(None);
        assert!(within_50ms(phase.advance(&start, &on_event)).is_none());
        assert_eq!(phase.reason(), None);
        // An expired timeout does not fire once a signal's stop has begun, nor after it.
        let mut phase = Phase::running(Some(Duration::ZERO));
        phase.signal("SIGTERM", &Notify::new(), &start, &on_event);
        assert!(within_50ms(phase.advance(&start, &on_event)).is_none());
        let mut phase = Phase::StoppedByOther;
        assert!(within_50ms(phase.advance(&start, &on_event)).is_none());
        assert_eq!(seen.started(), [StopReason::Signal]);
        assert_eq!(seen.events().len(), 1, "{:?}", seen.events());
    }

    #[test]
    fn a_failed_stop_is_an_error_and_no_outcome() {
        let seen = Seen::new(None);
        let start = |r| seen.start(r);
        let on_event = |e: &str| seen.event(e);
        let mut phase = Phase::Stopping {
            reason: StopReason::Leftovers,
            stop: Box::pin(async { Err(Error::Input("no".into())) }),
        };
        let r = within_50ms(phase.advance(&start, &on_event));
        assert!(matches!(r, Some(Err(Error::Input(_)))));
        assert_eq!(phase.end().1, None);
    }

    #[test]
    fn only_an_overrun_of_the_other_stop_starts_ours() {
        let seen = Seen::new(None);
        let start = |r| seen.start(r);
        let on_event = |e: &str| seen.event(e);
        let mut phase = Phase::StoppedByOther;
        for wake in [Wake::Empty, Wake::TrackedGone] {
            phase.other_ended(wake, &start, &on_event);
            assert_eq!(phase.reason(), Some(StopReason::External), "{wake:?}");
        }
        assert!(seen.started().is_empty());
        phase.other_ended(Wake::Deadline, &start, &on_event);
        assert_eq!(phase.reason(), Some(StopReason::Leftovers));
        assert!(phase.stopping_now());
        assert_eq!(seen.started(), [StopReason::Leftovers]);
        assert_eq!(
            seen.events(),
            ["the other stop overran this task's policy; stopping the task"]
        );
    }

    #[test]
    fn after_the_main_exit_leftovers_keep_the_run_going_unless_stopped_or_process_mode() {
        let stopped = || Phase::Stopped {
            reason: StopReason::Signal,
            outcome: Box::new(outcome(Verdict::Survivors)),
        };
        let cases = [
            (Phase::running(None), false, KillMode::ControlGroup, true),
            (Phase::running(None), true, KillMode::ControlGroup, false),
            (Phase::running(None), true, KillMode::Mixed, false),
            (Phase::running(None), true, KillMode::Process, true),
            (Phase::StoppedByOther, false, KillMode::ControlGroup, true),
            (Phase::StoppedByOther, true, KillMode::ControlGroup, false),
            (stopped(), true, KillMode::ControlGroup, true),
            (stopped(), false, KillMode::Mixed, true),
        ];
        for (phase, populated, mode, want) in cases {
            let reason = phase.reason();
            assert_eq!(
                phase.over(populated, mode),
                want,
                "{reason:?} populated={populated} {mode:?}"
            );
        }
        assert_eq!(Phase::running(None).end().0, None);
        assert_eq!(
            Phase::StoppedByOther.end(),
            (Some(StopReason::External), None)
        );
        assert_eq!(
            stopped().end(),
            (Some(StopReason::Signal), Some(outcome(Verdict::Survivors)))
        );
    }

    #[test]
    fn exit_status_follows_timeout_then_the_main_process() {
        let exited = |code| MainExit {
            exit_code: Some(code),
            ..MainExit::default()
        };
        let signalled = MainExit {
            signal: Some(15),
            ..MainExit::default()
        };
        for (stop, timed_out, main, want) in [
            (Some(true), true, exited(0), 137),
            (Some(false), true, signalled, 124),
            (Some(false), true, exited(3), 124),
            // A stop for another reason (a signal to run, leftovers): the main process's status.
            (Some(true), false, signalled, 143),
            (Some(false), false, exited(7), 7),
            (None, false, exited(0), 0),
            (None, false, MainExit::default(), 1),
        ] {
            assert_eq!(
                exit_code(stop, timed_out, &main),
                want,
                "{stop:?} {timed_out} {main:?}"
            );
        }
    }
}
