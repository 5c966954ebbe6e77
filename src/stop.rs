//! The engine: runs a [`Policy`] against a cgroup and returns an [`Outcome`].
//!
//! 1. Signal every process in the subtree (or only the main process, per the kill mode) through
//!    a pidfd proven to belong to the cgroup, each followed by SIGCONT (and SIGHUP if asked);
//!    enumerate again until a pass finds no one new. Thaw a frozen cgroup so handlers can run.
//! 2. Wait for `populated 0`, event-driven, until the step's grace ends; then the next step.
//! 3. Write `cgroup.kill` (5.14), or take the fallback: freeze, SIGKILL each member through its
//!    pidfd, thaw, until empty.
//! 4. Wait up to the kill timeout; report survivors (state D) and release their memory.
//!
//! The stop ends when the cgroup is empty, never because one particular process died.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cgroup::{Cgroup, is_gone};
use crate::error::{Error, Result};
use crate::guard;
use crate::pidfd::{Membership, PidFd, membership_method};
use crate::policy::{KillMode, Policy, Signal};
use crate::procinfo;
use crate::report::{Killed, Outcome, StepReport, Survivor, Verdict};
use crate::watch::{Wake, Watcher, deadline_after};

/// How the final kill is delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KillMethod {
    /// `cgroup.kill` where the kernel has it (5.14+), else the fallback.
    #[default]
    Auto,
    /// Always the fallback (freeze, SIGKILL every member by pidfd, thaw, repeat): what runs on
    /// kernels before 5.14 and in threaded cgroups. For tests and old-kernel rehearsal.
    Fallback,
}

/// A snapshot for progress displays, passed to [`StopOptions::progress`].
#[derive(Clone, Debug)]
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

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Options beyond the policy.
#[derive(Clone, Default)]
pub struct StopOptions {
    /// How to deliver the final kill.
    pub kill_method: KillMethod,
    /// The task's main process, for [`KillMode::Mixed`] and [`KillMode::Process`].
    pub main_pid: Option<i32>,
    /// Called on each wakeup while waiting (only when set; costs a few `/proc` reads).
    pub progress: Option<ProgressFn>,
    /// Notified to cut the grace short and go straight to the final kill (a second Ctrl-C).
    pub escalate: Option<Arc<Notify>>,
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

/// Set once `cgroup.kill` is found missing: the kernel will not grow it.
static NO_CGROUP_KILL: AtomicBool = AtomicBool::new(false);

/// The xattr (`user.gracekill.final-kill`) a stop sets on the cgroup right before its final kill:
/// `PID MONOTONIC_NS VIA`. Another stop of the same task, running at the same time, that then
/// sees the cgroup empty reads it and reports that kill instead of claiming a graceful exit.
const FINAL_KILL_XATTR: &str = "final-kill";

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine.
fn monotonic_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}

/// Stops the task in `cg` by `policy`.
///
/// # Errors
/// [`Error::Input`] for an invalid policy or a refused target (the root cgroup, a cgroup holding
/// the caller): nothing is signalled then. OS errors (e.g. permission denied) as they happen.
pub async fn stop(cg: &Cgroup, policy: &Policy, opts: &StopOptions) -> Result<Outcome> {
    policy.validate()?;
    guard::check_stoppable(cg)?;
    raise_fd_limit();
    Engine {
        cg,
        policy,
        opts,
        t0: Instant::now(),
        t0_ns: monotonic_ns(),
        w: Watcher::new(cg)?,
        steps: Vec::new(),
        thawed: false,
    }
    .run()
    .await
}

/// [`stop`] on a private single-threaded tokio runtime, for callers without one.
///
/// # Errors
/// As [`stop`], plus failing to build the runtime.
pub fn stop_blocking(cg: &Cgroup, policy: &Policy, opts: &StopOptions) -> Result<Outcome> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Error::os(
                "create tokio runtime for",
                cg.path(),
                crate::cgroup::errno_of(&e),
            )
        })?;
    rt.block_on(stop(cg, policy, opts))
}

struct Engine<'a> {
    cg: &'a Cgroup,
    policy: &'a Policy,
    opts: &'a StopOptions,
    t0: Instant,
    /// `t0` on the machine-wide monotonic clock, to compare with other stoppers' records.
    t0_ns: u128,
    w: Watcher,
    steps: Vec<StepReport>,
    thawed: bool,
}

impl Engine<'_> {
    fn ms(&self, t: Instant) -> f64 {
        (t - self.t0).as_secs_f64() * 1000.0
    }

    fn outcome(
        self,
        verdict: Verdict,
        empty_at: Option<Instant>,
        killed: Vec<Killed>,
        survivors: Vec<Survivor>,
    ) -> Outcome {
        Outcome {
            cgroup: self.cg.rel().to_string(),
            outcome: verdict,
            elapsed_ms: self.ms(Instant::now()),
            empty_at_ms: empty_at.map(|t| self.ms(t)),
            thawed: self.thawed,
            steps: self.steps,
            killed,
            survivors,
            membership_proof: match membership_method() {
                Membership::PidfdInfo => "PIDFD_GET_INFO",
                Membership::ProcFile => "/proc/<pid>/cgroup",
            },
            cgroup_removed: self.cg.is_removed(),
        }
    }

    /// The cgroup emptied before this stop's final kill. If another stop of the same task sent
    /// its final kill meanwhile, that kill emptied it: report it, not a graceful exit.
    fn graceful(mut self) -> Outcome {
        if let Some(step) = self.final_kill_by_another_stop() {
            tracing::debug!(cgroup = %self.cg.rel(), by = step.by_pid, "emptied by another stop's final kill");
            self.steps.push(step);
            return self.outcome(
                Verdict::Killed,
                Some(Instant::now()),
                Vec::new(),
                Vec::new(),
            );
        }
        self.outcome(
            Verdict::Graceful,
            Some(Instant::now()),
            Vec::new(),
            Vec::new(),
        )
    }

    /// Records this stop's final kill for concurrent stops (best effort: a cgroup whose xattrs
    /// we may not write simply goes unrecorded).
    fn record_final_kill(&self) {
        let via = if self.opts.kill_method == KillMethod::Auto
            && !NO_CGROUP_KILL.load(Ordering::Relaxed)
        {
            "cgroup.kill"
        } else {
            "fallback"
        };
        let _ = self.cg.set_xattr(
            FINAL_KILL_XATTR,
            &format!("{} {} {via}", std::process::id(), monotonic_ns()),
        );
    }

    /// A final kill another stop recorded after this one started. The xattr may have been
    /// written by a delegated user: parsed strictly, and at worst it changes the report.
    fn final_kill_by_another_stop(&self) -> Option<StepReport> {
        let text = self.cg.get_xattr(FINAL_KILL_XATTR).ok()??;
        let mut words = text.split(' ');
        let pid: u32 = words.next()?.parse().ok()?;
        let at_ns: u128 = words.next()?.parse().ok()?;
        let via = match words.next()? {
            "cgroup.kill" => "cgroup.kill",
            "fallback" => "fallback",
            _ => return None,
        };
        if words.next().is_some() || at_ns < self.t0_ns {
            return None;
        }
        Some(StepReport {
            signal: Signal::KILL.to_string(),
            at_ms: (at_ns - self.t0_ns) as f64 / 1e6,
            signalled: 0,
            via: Some(via),
            by_pid: Some(pid),
        })
    }

    async fn run(mut self) -> Result<Outcome> {
        if !self.w.state()?.populated {
            tracing::debug!(cgroup = %self.cg.rel(), "already empty");
            let t0 = self.t0;
            return Ok(self.outcome(Verdict::Empty, Some(t0), Vec::new(), Vec::new()));
        }
        let _mark = crate::task::StopMark::set(self.cg);
        let frozen: Vec<Cgroup> = self
            .cg
            .subtree()?
            .into_iter()
            .filter(|c| c.freeze_requested().unwrap_or(false))
            .collect();

        let escalate = self.opts.escalate.clone();
        for (i, step) in self.policy.steps.iter().enumerate() {
            let at = Instant::now();
            // The grace runs from the moment the step began signalling, not from its last signal.
            let deadline = at
                .checked_add(step.grace)
                .unwrap_or_else(|| deadline_after(step.grace));
            let signalled = self.signal_step(step.signal, deadline)?;
            tracing::debug!(cgroup = %self.cg.rel(), signal = %step.signal, signalled, "sent stop signal");
            if i == 0 && !frozen.is_empty() {
                // Signals sent to frozen tasks stay pending; a handler runs only after the thaw,
                // so a stop that left the cgroup frozen would waste its whole grace.
                for c in &frozen {
                    c.set_frozen(false)?;
                }
                self.thawed = true;
                tracing::debug!(cgroup = %self.cg.rel(), "thawed frozen cgroup");
            }
            self.steps.push(StepReport {
                signal: step.signal.to_string(),
                at_ms: self.ms(at),
                signalled,
                via: None,
                by_pid: None,
            });
            let wake = self
                .wait_grace(deadline, step.signal, escalate.as_deref())
                .await?;
            if wake == Wake::Empty {
                return Ok(self.graceful());
            }
            if wake == Wake::TrackedGone {
                // Escalation requested.
                break;
            }
        }
        self.final_kill().await
    }

    /// Waits out one grace period. Returns `TrackedGone` to mean "escalate now".
    async fn wait_grace(
        &mut self,
        deadline: Instant,
        signal: Signal,
        escalate: Option<&Notify>,
    ) -> Result<Wake> {
        let progress = self.opts.progress.clone();
        let phase = signal.to_string();
        let proc_mode = self.policy.kill_mode == KillMode::Process;
        // In control-group mode, wake up too when every signalled process has exited while the
        // cgroup stays populated: see the latecomers below.
        let mut catch_latecomers = self.policy.kill_mode == KillMode::ControlGroup;
        loop {
            let wait = self
                .w
                .wait_empty(deadline, proc_mode || catch_latecomers, |w| {
                    report_progress(progress.as_ref(), &phase, deadline, w)
                });
            let wake = match escalate {
                Some(n) => tokio::select! {
                    w = wait => w?,
                    () = n.notified() => return Ok(Wake::TrackedGone),
                },
                None => wait.await?,
            };
            if wake != Wake::TrackedGone {
                return Ok(wake);
            }
            // In process mode the task is its main process: it is done when that process is.
            if proc_mode {
                return Ok(Wake::Empty);
            }
            // Everyone signalled is gone, yet the cgroup is populated: processes appeared after
            // the last enumeration pass. A shell blocks SIGTERM around fork(2), so the child it
            // forks in the instant the signal arrives is created unsignalled (the kernel clears
            // a child's pending signals) and becomes visible only after the parent dies. Give
            // them the step's signal too; if there is no one new, just wait out the grace.
            let extra = self.extra_signals(signal);
            let late = self.pass(&mut HashSet::new(), signal, extra)?;
            tracing::debug!(cgroup = %self.cg.rel(), signal = %signal, late, "signalled latecomers");
            if let Some(step) = self.steps.last_mut() {
                step.signalled += late;
            }
            catch_latecomers = late > 0;
        }
    }

    /// The main process, opened and proven to be somewhere in the subtree.
    fn main_process(&mut self, subtree: &[Cgroup]) -> Result<Option<PidFd>> {
        let Some(pid) = self.opts.main_pid else {
            return Ok(None);
        };
        let Some(pidfd) = PidFd::open(pid)? else {
            return Ok(None);
        };
        for c in subtree {
            if pidfd.is_member_of(c)? {
                return Ok(Some(pidfd));
            }
        }
        Ok(None)
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
    /// is signalled must not delay the final kill.
    fn signal_step(&mut self, sig: Signal, deadline: Instant) -> Result<usize> {
        let extra = self.extra_signals(sig);
        if self.policy.kill_mode != KillMode::ControlGroup {
            let subtree = self.cg.subtree()?;
            if let Some(main) = self.main_process(&subtree)? {
                let sent = send_all(&main, sig, extra)?;
                self.w.track(main)?;
                return Ok(usize::from(sent));
            }
            if self.policy.kill_mode == KillMode::Process {
                return Ok(0);
            }
            tracing::debug!(cgroup = %self.cg.rel(), "main process gone: signalling the whole cgroup (mixed mode)");
        }
        let mut done: HashSet<i32> = HashSet::new();
        let mut total = 0;
        for pass in 0..MAX_PASSES {
            let new = self.pass(&mut done, sig, extra)?;
            total += new;
            if new == 0 {
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

    /// One enumeration pass over the subtree: every member not yet in `done` (or whose pid now
    /// names a new process) is opened or taken from the tracked set, proven, signalled and
    /// tracked. Returns how many were signalled.
    fn pass(&mut self, done: &mut HashSet<i32>, sig: Signal, extra: &[Signal]) -> Result<usize> {
        let subtree = self.cg.subtree()?;
        let mut n = 0;
        for c in &subtree {
            let pids = c.procs()?;
            // After the read: exits seen so far are forgotten, so a pidfd still held names the
            // listed process (see `Watcher::held`). One epoll_wait instead of a poll per pid.
            self.w.refresh()?;
            for pid in pids {
                let sent = if let Some(held) = self.w.held(pid) {
                    if done.contains(&pid) {
                        continue;
                    }
                    // Alive and holding its pid, so it is the process that was listed.
                    send_all(held, sig, extra)?
                } else if let Some(pidfd) = signal_listed_pid(c, pid, sig, extra)? {
                    self.w.track(pidfd)?;
                    true
                } else {
                    false
                };
                if sent {
                    done.insert(pid);
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// The proven members right now, described for the report.
    fn members(&mut self) -> Result<Vec<Killed>> {
        let mut out = Vec::new();
        for c in self.cg.subtree()? {
            let pids = c.procs()?;
            self.w.refresh()?;
            for pid in pids {
                let proven = self.w.held(pid).is_some() || PidFd::open_member(&c, pid)?.is_some();
                if proven {
                    // Two small reads per process: this runs between the deadline and the kill.
                    out.push(Killed {
                        pid,
                        comm: procinfo::comm(pid),
                        cmdline: procinfo::cmdline(pid),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn final_kill(mut self) -> Result<Outcome> {
        if !self.w.state()?.populated {
            return Ok(self.graceful());
        }
        let at = Instant::now();
        let deadline = deadline_after(self.policy.kill_timeout);
        if self.policy.kill_mode == KillMode::Process {
            return self.final_kill_main(at, deadline).await;
        }
        // Freeze while the members are described and killed: a fork storm would otherwise keep
        // growing (and take the CPU) during the description. No need to wait for `frozen 1`:
        // tasks stop at their next return to user space, and SIGKILL ends frozen tasks too.
        let hold = Hold::freeze(self.cg);
        let killed = self.members()?;
        self.record_final_kill();
        let via = self.kill_all(deadline).await?;
        drop(hold);
        self.steps.push(StepReport {
            signal: Signal::KILL.to_string(),
            at_ms: self.ms(at),
            signalled: killed.len(),
            via: Some(via),
            by_pid: None,
        });
        let progress = self.opts.progress.clone();
        let wake = self
            .w
            .wait_empty(deadline, false, |w| {
                report_progress(progress.as_ref(), "SIGKILL", deadline, w)
            })
            .await?;
        if wake == Wake::Empty {
            return Ok(self.outcome(Verdict::Killed, Some(Instant::now()), killed, Vec::new()));
        }
        let survivors = self.survivors()?;
        tracing::debug!(cgroup = %self.cg.rel(), survivors = survivors.len(), "processes survived SIGKILL");
        Ok(self.outcome(Verdict::Survivors, None, killed, survivors))
    }

    /// Process mode: SIGKILL the main process only.
    async fn final_kill_main(mut self, at: Instant, deadline: Instant) -> Result<Outcome> {
        let subtree = self.cg.subtree()?;
        let mut killed = Vec::new();
        if let Some(main) = self.main_process(&subtree)? {
            killed.push(procinfo::describe(main.pid()).into());
            main.send_signal(Signal::KILL)?;
            self.w.track(main)?;
        }
        self.steps.push(StepReport {
            signal: Signal::KILL.to_string(),
            at_ms: self.ms(at),
            signalled: killed.len(),
            via: Some("pidfd"),
            by_pid: None,
        });
        let wake = self.w.wait_empty(deadline, true, |_| {}).await?;
        if wake == Wake::Deadline {
            let survivors = self.survivors()?;
            return Ok(self.outcome(Verdict::Survivors, None, killed, survivors));
        }
        Ok(self.outcome(Verdict::Killed, None, killed, Vec::new()))
    }

    /// Delivers SIGKILL to the whole subtree; returns how (`cgroup.kill` or `fallback`).
    async fn kill_all(&mut self, deadline: Instant) -> Result<&'static str> {
        if self.opts.kill_method == KillMethod::Auto && !NO_CGROUP_KILL.load(Ordering::Relaxed) {
            match self.cg.kill() {
                Ok(()) => {
                    tracing::debug!(cgroup = %self.cg.rel(), "final kill via cgroup.kill");
                    return Ok("cgroup.kill");
                }
                Err(e) if is_gone(&e) && self.cg.read_file("cgroup.procs").is_ok() => {
                    // The cgroup is there but cgroup.kill is not: a kernel before 5.14.
                    NO_CGROUP_KILL.store(true, Ordering::Relaxed);
                    tracing::debug!("cgroup.kill missing (kernel < 5.14): using the fallback");
                }
                Err(e) if is_gone(&e) => return Ok("cgroup.kill"),
                Err(Error::Os {
                    errno: rustix::io::Errno::OPNOTSUPP,
                    ..
                }) => {
                    tracing::debug!(cgroup = %self.cg.rel(), "cgroup.kill refused (threaded cgroup): using the fallback");
                }
                Err(e) => return Err(e),
            }
        }
        self.fallback_kill(deadline).await?;
        Ok("fallback")
    }

    /// Freeze, SIGKILL every member through its pidfd, thaw; again until empty or the deadline.
    /// Freezing stops forks, so one pass normally suffices; a frozen task still dies of SIGKILL.
    async fn fallback_kill(&mut self, deadline: Instant) -> Result<()> {
        loop {
            if !self.w.state()?.populated || Instant::now() >= deadline {
                return Ok(());
            }
            let froze = match self.cg.set_frozen(true) {
                Ok(()) => true,
                Err(e) if is_gone(&e) => false, // cgroup.freeze needs 5.2; kill without it
                Err(e) => return Err(e),
            };
            if froze {
                // A task in uninterruptible sleep can hold up freezing; do not wait past 1 s.
                let limit = deadline.min(Instant::now() + Duration::from_secs(1));
                self.w.wait_frozen(limit).await?;
            }
            let mut done = HashSet::new();
            let killed = self.pass(&mut done, Signal::KILL, &[])?;
            if froze {
                self.cg.set_frozen(false)?;
            }
            tracing::debug!(cgroup = %self.cg.rel(), killed, "fallback kill pass");
            // Wait for everyone we killed; if the cgroup is still populated after that, someone
            // was missed (or appeared before the freeze took): go round again.
            let wake = self.w.wait_empty(deadline, killed > 0, |_| {}).await?;
            if wake != Wake::TrackedGone {
                return Ok(());
            }
        }
    }

    fn survivors(&mut self) -> Result<Vec<Survivor>> {
        let mut out = Vec::new();
        for c in self.cg.subtree()? {
            for pid in c.procs()? {
                let pidfd = match PidFd::open_member(&c, pid)? {
                    Some(p) => p,
                    None => continue,
                };
                let info = procinfo::describe(pid);
                let (memory_released, mrelease_error) = match pidfd.mrelease() {
                    Ok(()) => (true, None),
                    Err(e) => (false, Some(errno_name(e))),
                };
                out.push(Survivor {
                    pid,
                    comm: info.comm,
                    state: info.state,
                    wchan: info.wchan,
                    memory_released,
                    mrelease_error,
                });
            }
        }
        Ok(out)
    }
}

/// A best-effort `cgroup.freeze` of a cgroup gracekill is killing, undone on drop (also when
/// the kill fails), so the engine never leaves a cgroup frozen.
struct Hold<'a>(Option<&'a Cgroup>);

impl<'a> Hold<'a> {
    fn freeze(cg: &'a Cgroup) -> Hold<'a> {
        Hold(cg.set_frozen(true).is_ok().then_some(cg))
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if let Some(cg) = self.0 {
            let _ = cg.set_frozen(false);
        }
    }
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

fn send_all(p: &PidFd, sig: Signal, extra: &[Signal]) -> Result<bool> {
    if !p.send_signal(sig)? {
        return Ok(false);
    }
    for &s in extra {
        p.send_signal(s)?;
    }
    Ok(true)
}

fn report_progress(progress: Option<&ProgressFn>, phase: &str, deadline: Instant, w: &Watcher) {
    if let Some(f) = progress {
        let names = w
            .tracked()
            .take(3)
            .map(|p| procinfo::comm(p.pid()))
            .collect();
        f(&Progress {
            phase: phase.to_string(),
            deadline,
            remaining: w.tracked_count(),
            names,
        });
    }
}

fn errno_name(e: rustix::io::Errno) -> String {
    match e {
        rustix::io::Errno::INVAL => "EINVAL (process not dying)".into(),
        rustix::io::Errno::NOSYS => "ENOSYS (kernel < 5.15)".into(),
        rustix::io::Errno::SRCH => "ESRCH (process gone)".into(),
        other => std::io::Error::from(other).to_string(),
    }
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
