//! A scripted kernel for the engine's unit tests: a world of processes in cgroups, each with its
//! reaction to each signal, in tokio's virtual time (the tests run on a paused clock, which jumps
//! to the next timer whenever every task waits). The engine ([`crate::stop::run_engine`]) runs
//! on it unchanged; the world logs what the engine did to it (signals, freezes, kills) and keeps
//! what the processes did (exits, statuses, reaps), so a test asserts both the outcome and the
//! path to it, in milliseconds and without root.
//!
//! The model keeps what the engine relies on and nothing else: a zombie has left its cgroup and
//! its status is known once its parent reaps it; SIGKILL ends every process not stuck in
//! uninterruptible sleep, frozen or not (after its `dies_after`); other signals wait for a
//! frozen cgroup's thaw; a freeze takes effect after the world's freeze delay, never while a
//! stuck process is in the cgroup; `cgroup.kill` SIGKILLs what is in the subtree at that instant
//! (not what appears later). Whatever changes the world wakes the watcher, as the kernel's
//! notifications do.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use rustix::io::Errno;
use tokio::time::Instant;

use super::{
    Cmdlines, FinalKill, Kernel, KillMethod, MemoryRelease, Named, TaskCgroup, TaskProc, TaskWatch,
};
use crate::cgroup::{Events, Members};
use crate::error::{Error, Result};
use crate::policy::Signal;
use crate::report::Survivor;
use crate::task::FinalKillRecord;
use crate::watch::Wake;

/// Fake pids start here: above any `pid_max`, so nothing of the real `/proc` is ever read for
/// them (the engine's background command-line reader tries, and finds nothing).
pub const FIRST_PID: i32 = 5_000_001;

/// What a process does when a signal reaches it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reaction {
    /// The default action of a fatal signal: it dies of it at once.
    Die,
    /// A handler that exits with `code` after `after` (a flush). Later signals change nothing.
    Exit { after: Duration, code: i32 },
    /// Ignored (or blocked).
    Ignore,
    /// Forks a child at once (a shell's trap starting a helper), which ignores that signal; the
    /// process itself goes on.
    Fork,
}

/// A process of the world, as a test describes it.
#[derive(Clone, Debug)]
pub struct Spec {
    pub comm: String,
    /// The cgroup (0: the task's own).
    pub cg: usize,
    /// Reactions to signals not in `on`: fatal signals kill, SIGCONT and SIGCHLD do nothing.
    pub on: Vec<(Signal, Reaction)>,
    /// How long after its exit its parent reaps it; `None`: never.
    pub reaped_after: Option<Duration>,
    /// In uninterruptible sleep: SIGKILL does not end it.
    pub stuck: bool,
    /// How long its exit takes once SIGKILLed (tearing down a large address space).
    pub dies_after: Duration,
    /// Signals the stopper may not send it (`EPERM`: it changed its credentials).
    pub forbidden: Vec<Signal>,
    /// How long it stays listed in its cgroup after its exit (the kernel lists a task until its
    /// last context switch): meanwhile it can be opened and proven, and a signal to it succeeds
    /// without effect, as for any zombie.
    pub listed_after_exit: Duration,
    /// Once it is reaped, its pid is another process's, of this name.
    pub pid_reused_by: Option<String>,
}

impl Spec {
    pub fn new(comm: &str) -> Spec {
        Spec {
            comm: comm.into(),
            cg: 0,
            on: Vec::new(),
            reaped_after: Some(Duration::from_millis(1)),
            stuck: false,
            dies_after: Duration::ZERO,
            forbidden: Vec::new(),
            listed_after_exit: Duration::ZERO,
            pid_reused_by: None,
        }
    }
    pub fn on(mut self, sig: Signal, r: Reaction) -> Spec {
        self.on.push((sig, r));
        self
    }
    pub fn flushes(self, sig: Signal, after: Duration) -> Spec {
        self.on(sig, Reaction::Exit { after, code: 0 })
    }
    pub fn ignores(self, sig: Signal) -> Spec {
        self.on(sig, Reaction::Ignore)
    }
    pub fn in_cgroup(mut self, cg: usize) -> Spec {
        self.cg = cg;
        self
    }
    pub fn reaped_after(mut self, d: Option<Duration>) -> Spec {
        self.reaped_after = d;
        self
    }
    /// Once reaped, its pid is taken by a process named `comm` (outside the task).
    pub fn pid_reused_by(mut self, comm: &str) -> Spec {
        self.pid_reused_by = Some(comm.into());
        self
    }
    /// The stopper may not send it `sig` (`EPERM`).
    pub fn forbids(mut self, sig: Signal) -> Spec {
        self.forbidden.push(sig);
        self
    }
    /// Still listed for `d` after its exit.
    pub fn listed_after_exit(mut self, d: Duration) -> Spec {
        self.listed_after_exit = d;
        self
    }

    pub fn stuck(mut self) -> Spec {
        self.stuck = true;
        self
    }
    pub fn dies_after(mut self, d: Duration) -> Spec {
        self.dies_after = d;
        self
    }
    fn reaction(&self, sig: Signal) -> Reaction {
        if let Some(&(_, r)) = self.on.iter().rev().find(|(s, _)| *s == sig) {
            return r;
        }
        match sig.as_raw() {
            // CONT, CHLD, WINCH, URG are ignored; STOP, TSTP, TTIN, TTOU stop a process, which
            // for a stop means it does not exit either.
            18 | 17 | 28 | 23 | 19 | 20 | 21 | 22 => Reaction::Ignore,
            _ => Reaction::Die,
        }
    }
}

#[derive(Debug)]
struct Proc {
    spec: Spec,
    /// When it exited and its wait status.
    exited: Option<(Instant, i32)>,
    /// A handler is flushing: it exits by itself (SIGKILL still ends it sooner).
    flushing: bool,
    /// SIGKILLed, its exit under way (`dies_after`).
    dying: bool,
    reaped: bool,
    /// Signals that arrived while its cgroup was frozen, handled at the thaw.
    pending: Vec<Signal>,
}

impl Proc {
    /// Is it listed in its cgroup at `now`: alive, or exited within `listed_after_exit`?
    fn listed(&self, now: Instant) -> bool {
        self.exited
            .is_none_or(|(t, _)| now < t + self.spec.listed_after_exit)
    }
}

#[derive(Debug)]
struct Cg {
    rel: String,
    parent: Option<usize>,
    /// `cgroup.freeze` as written.
    freeze: bool,
    /// When the freeze takes effect (`frozen 1`), once written.
    frozen_from: Option<Instant>,
}

#[derive(Debug)]
enum Event {
    Exit(i32, i32),
    Reap(i32),
    Spawn(Spec),
    /// An exited process leaves the listing (see `Spec::listed_after_exit`): nothing to do but
    /// wake whoever watches `populated`.
    Unlisted,
    /// From now on the task's lists cannot be read (its owner made them unreadable).
    RefuseListing,
}

#[derive(Debug)]
struct State {
    t0: Instant,
    cgroups: Vec<Cg>,
    procs: BTreeMap<i32, Proc>,
    schedule: Vec<(Instant, u64, Event)>,
    seq: u64,
    next_pid: i32,
    log: Vec<String>,
    has_cgroup_kill: bool,
    /// Writing `cgroup.kill` fails with `EOPNOTSUPP` (as in a threaded cgroup).
    cgroup_kill_refused: bool,
    /// Opening the fallback's `cgroup.freeze` fails (EACCES).
    fallback_path_refused: bool,
    /// Reading `cgroup.procs` fails (EACCES).
    listing_refused: bool,
    /// From then on, opening a pidfd fails with `ENFILE` (the system's file table is full).
    opens_refused_from: Option<Instant>,
    /// Holding a pidfd in the watcher fails with `ENOSPC` (`epoll_ctl`: a task of the
    /// stopper's user used up `fs.epoll.max_user_watches`).
    watch_refused: bool,
    /// Every wait of the watcher fails (`EBADF`): the engine's own event loop is broken.
    waits_fail: bool,
    /// How many more refreshes of the watcher succeed; at none left, refreshes and waits fail.
    refreshes_left: Option<usize>,
    record: Option<FinalKillRecord>,
    /// The stop that wrote `record` is still going on (see `Kernel::kill_in_flight`).
    kill_in_flight: bool,
    budget: usize,
    /// The most pidfds one watcher held at once.
    peak_held: usize,
    /// Each request for command lines: when (ms) and which pids.
    cmdline_requests: Vec<(f64, Vec<i32>)>,
    /// How many times each process's memory release was started.
    releases: BTreeMap<i32, usize>,
    /// How long a freeze takes to take effect.
    freeze_delay: Duration,
    /// Writing `cgroup.freeze` fails (EACCES).
    freeze_refused: bool,
    /// Wakes the watcher when something outside the engine changed the world.
    changed: Rc<tokio::sync::Notify>,
}

/// The world, shared by every handle the engine holds.
#[derive(Clone, Debug)]
pub struct Fake(Rc<RefCell<State>>);

impl Fake {
    /// An empty world whose task cgroup is `/task`; must be made on the paused runtime.
    pub fn new() -> Fake {
        Fake(Rc::new(RefCell::new(State {
            t0: Instant::now(),
            cgroups: vec![Cg {
                rel: "/task".into(),
                parent: None,
                freeze: false,
                frozen_from: None,
            }],
            procs: BTreeMap::new(),
            schedule: Vec::new(),
            seq: 0,
            next_pid: FIRST_PID,
            log: Vec::new(),
            has_cgroup_kill: true,
            cgroup_kill_refused: false,
            fallback_path_refused: false,
            listing_refused: false,
            opens_refused_from: None,
            watch_refused: false,
            waits_fail: false,
            refreshes_left: None,
            record: None,
            kill_in_flight: false,
            budget: 1 << 16,
            peak_held: 0,
            releases: BTreeMap::new(),
            cmdline_requests: Vec::new(),
            freeze_delay: Duration::ZERO,
            freeze_refused: false,
            changed: Rc::new(tokio::sync::Notify::new()),
        })))
    }

    /// A child cgroup of `parent`; returns its index.
    pub fn mkdir(&self, parent: usize, name: &str) -> usize {
        let mut s = self.0.borrow_mut();
        let rel = format!("{}/{name}", s.cgroups[parent].rel);
        s.cgroups.push(Cg {
            rel,
            parent: Some(parent),
            freeze: false,
            frozen_from: None,
        });
        s.cgroups.len() - 1
    }

    /// Starts a process now; returns its pid.
    pub fn spawn(&self, spec: Spec) -> i32 {
        self.0.borrow_mut().spawn(spec)
    }

    /// Starts a process `after` from now (unsignalled: it missed every pass so far).
    pub fn spawn_later(&self, after: Duration, spec: Spec) {
        let at = Instant::now() + after;
        self.0.borrow_mut().at(at, Event::Spawn(spec));
    }

    /// The kernel has no `cgroup.kill` (before 5.14).
    pub fn without_cgroup_kill(&self) {
        self.0.borrow_mut().has_cgroup_kill = false;
    }

    /// Writing `cgroup.kill` fails with `EOPNOTSUPP`, as in a threaded cgroup.
    pub fn refuse_cgroup_kill(&self) {
        self.0.borrow_mut().cgroup_kill_refused = true;
    }

    /// Opening `cgroup.freeze` for the fallback fails with `EACCES`.
    pub fn refuse_fallback_path(&self) {
        self.0.borrow_mut().fallback_path_refused = true;
    }

    /// `after` from now, the task's lists become unreadable (EACCES), as a task that owns its
    /// cgroup can make them with `chmod`.
    pub fn refuse_listing_after(&self, after: Duration) {
        let at = Instant::now() + after;
        self.0.borrow_mut().at(at, Event::RefuseListing);
    }

    /// Freezes a cgroup, as its owner might have (before the stop: it has taken effect).
    pub fn freeze(&self, cg: usize) {
        let mut s = self.0.borrow_mut();
        let now = Instant::now();
        s.set_freeze(cg, true, now);
        s.cgroups[cg].frozen_from = Some(now);
    }

    /// A freeze takes `d` to take effect.
    pub fn set_freeze_delay(&self, d: Duration) {
        self.0.borrow_mut().freeze_delay = d;
    }

    /// Writing `cgroup.freeze` fails with EACCES.
    pub fn refuse_freeze(&self) {
        self.0.borrow_mut().freeze_refused = true;
    }

    /// From `after` on, every pidfd open fails with `ENFILE`.
    pub fn refuse_opens_after(&self, after: Duration) {
        self.0.borrow_mut().opens_refused_from = Some(Instant::now() + after);
    }

    /// Every pidfd the watcher is given is refused (`ENOSPC`).
    pub fn refuse_watch(&self) {
        self.0.borrow_mut().watch_refused = true;
    }

    /// Every wait of the watcher fails: the engine's own event loop is broken (not something a
    /// task can cause).
    pub fn fail_waits(&self) {
        self.0.borrow_mut().waits_fail = true;
    }

    /// After `n` more refreshes the watcher breaks: every refresh and wait fails from then on.
    pub fn break_watcher_after_refreshes(&self, n: usize) {
        self.0.borrow_mut().refreshes_left = Some(n);
    }

    /// Whether `cgroup.freeze` of `cg` is written `1`.
    pub fn freeze_written(&self, cg: usize) -> bool {
        self.0.borrow().cgroups[cg].freeze
    }

    /// The stop may hold this many pidfds at once.
    pub fn set_budget(&self, n: usize) {
        self.0.borrow_mut().budget = n;
    }

    /// Another stopper's final-kill record, `after` the start of the world.
    pub fn record_other_kill(&self, pid: u32, after: Duration, via: &'static str) {
        let mut s = self.0.borrow_mut();
        let at_ns = s.ns(s.t0 + after);
        s.record = Some(FinalKillRecord { pid, at_ns, via });
    }

    /// A final-kill record an earlier stop left, `before` the start of the world.
    pub fn record_earlier_kill(&self, pid: u32, before: Duration, via: &'static str) {
        let mut s = self.0.borrow_mut();
        let at_ns = s.ns(s.t0) - before.as_nanos();
        s.record = Some(FinalKillRecord { pid, at_ns, via });
    }

    /// The final kill of another stop still going on, sent `before` the start of the world.
    pub fn record_kill_in_flight(&self, pid: u32, before: Duration, via: &'static str) {
        self.record_earlier_kill(pid, before, via);
        self.0.borrow_mut().kill_in_flight = true;
    }

    /// Whatever final-kill record there is comes from a stop still going on.
    pub fn set_kill_in_flight(&self) {
        self.0.borrow_mut().kill_in_flight = true;
    }

    /// The task cgroup (index 0) as the engine sees it.
    pub fn cgroup(&self, id: usize) -> FakeCg {
        let rel = self.0.borrow().cgroups[id].rel.clone();
        FakeCg {
            world: self.clone(),
            id,
            path: PathBuf::from(format!("/fake{rel}")),
            rel,
        }
    }

    /// What the engine did, in order: `"<ms> SIGTERM app"`, `"<ms> cgroup.kill"`, ...
    pub fn log(&self) -> Vec<String> {
        self.0.borrow().log.clone()
    }

    /// The signals `pid` received, as names.
    pub fn signals_of(&self, pid: i32) -> Vec<String> {
        let comm = self.0.borrow().procs[&pid].spec.comm.clone();
        self.log()
            .iter()
            .filter_map(|l| {
                let mut w = l.split(' ').skip(1);
                let (sig, who) = (w.next()?, w.next()?);
                (who == format!("{comm}[{pid}]")).then(|| sig.to_string())
            })
            .collect()
    }

    /// When `pid` exited (ms after the start), and its wait status.
    pub fn exit_of(&self, pid: i32) -> Option<(f64, i32)> {
        let s = self.0.borrow();
        s.procs[&pid].exited.map(|(t, st)| (s.ms(t), st))
    }

    /// The most processes the stop held (as pidfds) at once.
    pub fn peak_held(&self) -> usize {
        self.0.borrow().peak_held
    }

    /// Each request for command lines: when (ms after the start) and which pids.
    pub fn cmdline_requests(&self) -> Vec<(f64, Vec<i32>)> {
        self.0.borrow().cmdline_requests.clone()
    }

    /// How many times the memory release of `pid` was started.
    pub fn releases_of(&self, pid: i32) -> usize {
        self.0.borrow().releases.get(&pid).copied().unwrap_or(0)
    }

    /// Is `pid` still running?
    pub fn alive(&self, pid: i32) -> bool {
        let mut s = self.0.borrow_mut();
        s.advance(Instant::now());
        s.procs[&pid].exited.is_none()
    }
}

impl State {
    fn ms(&self, t: Instant) -> f64 {
        (t - self.t0).as_secs_f64() * 1000.0
    }

    fn ns(&self, t: Instant) -> u128 {
        // Any origin will do, as long as it is the one of the whole world.
        (t - self.t0).as_nanos() + 1_000_000_000_000
    }

    /// Logs what the engine (or a test) did to the world, and wakes the watcher: whatever it
    /// waits for may have changed.
    fn note(&mut self, now: Instant, what: String) {
        let line = format!("{:.0} {what}", self.ms(now));
        self.log.push(line);
        self.changed.notify_waiters();
    }

    fn at(&mut self, t: Instant, e: Event) {
        self.seq += 1;
        self.schedule.push((t, self.seq, e));
    }

    fn spawn(&mut self, spec: Spec) -> i32 {
        let pid = self.next_pid;
        self.next_pid += 1;
        self.procs.insert(
            pid,
            Proc {
                spec,
                exited: None,
                flushing: false,
                dying: false,
                reaped: false,
                pending: Vec::new(),
            },
        );
        pid
    }

    /// Applies every scheduled event due by `now`, in order.
    fn advance(&mut self, now: Instant) {
        loop {
            let Some(i) = self
                .schedule
                .iter()
                .enumerate()
                .filter(|(_, (t, _, _))| *t <= now)
                .min_by_key(|(_, (t, seq, _))| (*t, *seq))
                .map(|(i, _)| i)
            else {
                return;
            };
            let (t, _, e) = self.schedule.remove(i);
            match e {
                Event::Exit(pid, status) => self.exit(pid, status, t),
                Event::Reap(pid) => {
                    if let Some(p) = self.procs.get_mut(&pid) {
                        p.reaped = true;
                    }
                }
                Event::Spawn(spec) => {
                    self.spawn(spec);
                }
                Event::RefuseListing => self.listing_refused = true,
                Event::Unlisted => {}
            }
        }
    }

    /// When the world next changes by itself: a scheduled event, or a freeze taking effect.
    fn next_event(&self) -> Option<Instant> {
        let now = Instant::now();
        let freezes = self
            .cgroups
            .iter()
            .filter_map(|c| c.frozen_from)
            .filter(|&t| t > now);
        self.schedule
            .iter()
            .map(|(t, _, _)| *t)
            .chain(freezes)
            .min()
    }

    fn exit(&mut self, pid: i32, status: i32, t: Instant) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if p.exited.is_some() {
            return;
        }
        p.exited = Some((t, status));
        let linger = p.spec.listed_after_exit;
        if let Some(d) = p.spec.reaped_after {
            self.at(t + d, Event::Reap(pid));
        }
        if !linger.is_zero() {
            self.at(t + linger, Event::Unlisted);
        }
    }

    /// Is `cg` frozen (`frozen 1`: its own freeze or an ancestor's has taken effect)?
    fn frozen(&self, mut cg: usize, now: Instant) -> bool {
        loop {
            if self.cgroups[cg].frozen_from.is_some_and(|t| t <= now) {
                return true;
            }
            match self.cgroups[cg].parent {
                Some(p) => cg = p,
                None => return false,
            }
        }
    }

    fn within(&self, mut cg: usize, root: usize) -> bool {
        loop {
            if cg == root {
                return true;
            }
            match self.cgroups[cg].parent {
                Some(p) => cg = p,
                None => return false,
            }
        }
    }

    fn populated(&self, root: usize) -> bool {
        let now = Instant::now();
        self.procs
            .values()
            .any(|p| p.listed(now) && self.within(p.spec.cg, root))
    }

    fn signal(&mut self, pid: i32, sig: Signal, now: Instant) -> bool {
        self.advance(now);
        let Some(p) = self.procs.get(&pid) else {
            return false;
        };
        if p.exited.is_some() {
            // A zombie still listed takes the signal, to no effect; one no longer listed is
            // taken as gone (reaped, for the tests' purposes).
            return p.listed(now);
        }
        let line = format!("{sig} {}[{pid}]", p.spec.comm);
        self.note(now, line);
        let frozen = self.frozen(self.procs[&pid].spec.cg, now);
        if sig == Signal::KILL {
            self.kill(pid, now);
        } else if frozen {
            if let Some(p) = self.procs.get_mut(&pid) {
                p.pending.push(sig);
            }
        } else {
            self.react(pid, sig, now);
        }
        true
    }

    /// SIGKILL: the end, unless it is stuck; at once, or once its exit is done (a flushing
    /// handler is cut short).
    fn kill(&mut self, pid: i32, now: Instant) {
        let p = &self.procs[&pid];
        let dies_after = p.spec.dies_after;
        if p.spec.stuck || p.exited.is_some() || p.dying {
            return;
        }
        if dies_after.is_zero() {
            self.exit(pid, Signal::KILL.as_raw(), now);
        } else {
            if let Some(p) = self.procs.get_mut(&pid) {
                p.dying = true;
            }
            self.at(now + dies_after, Event::Exit(pid, Signal::KILL.as_raw()));
        }
    }

    fn react(&mut self, pid: i32, sig: Signal, now: Instant) {
        let p = &self.procs[&pid];
        if p.flushing || p.dying || p.exited.is_some() {
            return;
        }
        match p.spec.reaction(sig) {
            Reaction::Die => self.exit(pid, sig.as_raw(), now),
            Reaction::Exit { after, code } => {
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.flushing = true;
                }
                self.at(now + after, Event::Exit(pid, code << 8));
            }
            Reaction::Ignore => {}
            Reaction::Fork => {
                let child = Spec::new(&format!("{}-child", p.spec.comm))
                    .in_cgroup(p.spec.cg)
                    .ignores(sig);
                self.spawn(child);
            }
        }
    }

    /// Writes `cgroup.freeze` of `cg`: the freeze takes effect after the world's delay, and not
    /// while a stuck process is in the subtree (it cannot enter the freezer).
    fn set_freeze(&mut self, cg: usize, freeze: bool, now: Instant) {
        self.advance(now);
        let subtree = self.subtree(cg);
        let stuck_inside = self
            .procs
            .values()
            .any(|p| p.exited.is_none() && p.spec.stuck && subtree.contains(&p.spec.cg));
        let c = &mut self.cgroups[cg];
        c.freeze = freeze;
        c.frozen_from = (freeze && !stuck_inside).then_some(now + self.freeze_delay);
        let what = format!("freeze {} {}", self.cgroups[cg].rel, u8::from(freeze));
        self.note(now, what);
        if freeze {
            return;
        }
        let thawed: Vec<i32> = self
            .procs
            .iter()
            .filter(|(_, p)| !p.pending.is_empty() && !self.frozen(p.spec.cg, now))
            .map(|(&pid, _)| pid)
            .collect();
        for pid in thawed {
            let pending = std::mem::take(&mut self.procs.get_mut(&pid).expect("listed").pending);
            for sig in pending {
                self.react(pid, sig, now);
            }
        }
    }

    fn subtree(&self, root: usize) -> Vec<usize> {
        let mut out = vec![root];
        let mut i = 0;
        while i < out.len() {
            let parent = out[i];
            out.extend((0..self.cgroups.len()).filter(|&c| self.cgroups[c].parent == Some(parent)));
            i += 1;
        }
        out
    }
}

/// A cgroup of the world.
#[derive(Debug)]
pub struct FakeCg {
    world: Fake,
    id: usize,
    rel: String,
    path: PathBuf,
}

impl TaskCgroup for FakeCg {
    fn rel(&self) -> &str {
        &self.rel
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn ns_path_bytes(&self) -> &[u8] {
        self.rel.as_bytes()
    }
    fn is_removed(&self) -> bool {
        false
    }
    fn walk(
        &self,
        _until: Option<std::time::Instant>,
        mut visit: impl FnMut(Result<&Self>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let ids = self.world.0.borrow().subtree(self.id);
        for id in ids {
            let c = self.world.cgroup(id);
            visit(Ok(&c))?;
        }
        ControlFlow::Continue(())
    }
    fn members(&self) -> Result<Members> {
        let mut s = self.world.0.borrow_mut();
        s.advance(Instant::now());
        if s.listing_refused {
            return Err(Error::os(
                "read",
                &self.path.join("cgroup.procs"),
                Errno::ACCESS,
            ));
        }
        let now = Instant::now();
        let ids: Vec<i32> = s
            .procs
            .iter()
            .filter(|(_, p)| p.listed(now) && p.spec.cg == self.id)
            .map(|(&pid, _)| pid)
            .collect();
        Ok(Members {
            threads: ids.clone(),
            ids,
            threaded: false,
        })
    }
    fn members_until(&self, _until: Option<std::time::Instant>) -> Result<(Members, bool)> {
        Ok((self.members()?, true))
    }
    fn freeze_requested(&self) -> Result<bool> {
        Ok(self.world.0.borrow().cgroups[self.id].freeze)
    }
    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let mut s = self.world.0.borrow_mut();
        if s.freeze_refused {
            return Err(Error::os(
                "write to",
                &self.path.join("cgroup.freeze"),
                Errno::ACCESS,
            ));
        }
        s.set_freeze(self.id, frozen, Instant::now());
        Ok(())
    }
}

/// The command lines of one stop: a request is logged, and read at once for the processes alive
/// then (`<comm> --fake`); a process gone by then has none, as in the real world.
#[derive(Debug)]
pub struct FakeCmdlines {
    world: Fake,
    got: RefCell<BTreeMap<i32, String>>,
}

impl Cmdlines for FakeCmdlines {
    fn request(&self, procs: Vec<(i32, u64)>) {
        let pids: Vec<i32> = procs.into_iter().map(|(pid, _)| pid).collect();
        let now = Instant::now();
        let mut s = self.world.0.borrow_mut();
        s.advance(now);
        for &pid in &pids {
            if let Some(p) = s.procs.get(&pid).filter(|p| p.exited.is_none()) {
                let line = format!("{} --fake", p.spec.comm);
                self.got.borrow_mut().insert(pid, line);
            }
        }
        let at = s.ms(now);
        s.cmdline_requests.push((at, pids));
    }
    fn get(&self, pid: i32) -> String {
        self.got.borrow().get(&pid).cloned().unwrap_or_default()
    }
}

/// The memory release of one stop: counts each start, answers at once. As the real one, a pid
/// whose process has exited is a newcomer when listed again.
#[derive(Debug)]
pub struct FakeRelease {
    world: Fake,
    started: BTreeMap<i32, FakeProc>,
}

impl MemoryRelease for FakeRelease {
    type Proc = FakeProc;
    fn started(&self, pid: i32) -> bool {
        self.started.get(&pid).is_some_and(|p| !p.has_exited())
    }
    fn start(&mut self, pid: i32, p: FakeProc) {
        if self.started(pid) {
            return;
        }
        self.started.insert(pid, p);
        *self.world.0.borrow_mut().releases.entry(pid).or_default() += 1;
    }
    fn prune(&mut self) -> usize {
        self.started.retain(|_, p| !p.has_exited());
        self.started.len()
    }
    fn collect(&mut self, out: &mut [Survivor], _until: std::time::Instant) {
        for s in out {
            if self.started.contains_key(&s.pid) {
                s.memory_released = true;
            }
        }
    }
}

/// A pidfd of the world.
#[derive(Debug)]
pub struct FakeProc {
    world: Fake,
    pid: i32,
}

impl TaskProc for FakeProc {
    fn pid(&self) -> i32 {
        self.pid
    }
    fn tgid(&self) -> i32 {
        self.pid
    }
    fn has_exited(&self) -> bool {
        !self.world.alive(self.pid)
    }
    fn unreaped(&self) -> bool {
        let mut s = self.world.0.borrow_mut();
        s.advance(Instant::now());
        !s.procs[&self.pid].reaped
    }
    fn send_signal(&self, sig: Signal) -> Result<bool> {
        if self.world.0.borrow().procs[&self.pid]
            .spec
            .forbidden
            .contains(&sig)
        {
            return Err(Error::os(
                format!("send {sig} to"),
                std::path::Path::new(&format!("/proc/{}", self.pid)),
                Errno::PERM,
            ));
        }
        Ok(self
            .world
            .0
            .borrow_mut()
            .signal(self.pid, sig, Instant::now()))
    }
    fn send_signal_to_group(&self, sig: Signal) -> Result<bool> {
        self.send_signal(sig)
    }
    fn into_process(self) -> Self {
        self
    }
    fn exit_status(&self) -> Option<i32> {
        let mut s = self.world.0.borrow_mut();
        s.advance(Instant::now());
        let p = &s.procs[&self.pid];
        if p.reaped {
            p.exited.map(|e| e.1)
        } else {
            None
        }
    }
}

/// The watcher of one stop: `cgroup.events` of the task and the pidfds held, in virtual time.
#[derive(Debug)]
pub struct FakeWatch {
    world: Fake,
    root: usize,
    tracked: BTreeMap<i32, FakeProc>,
    exited: Vec<(FakeProc, Instant)>,
}

impl FakeWatch {
    /// Is the watcher's event loop broken (see [`Fake::fail_waits`])?
    fn broken(&self) -> bool {
        let s = self.world.0.borrow();
        s.waits_fail || s.refreshes_left == Some(0)
    }

    /// Moves the held processes that have exited to the exits, as the real watcher's drain does.
    fn drain(&mut self) {
        let gone: Vec<i32> = self
            .tracked
            .keys()
            .copied()
            .filter(|&pid| !self.world.alive(pid))
            .collect();
        let s = self.world.0.borrow();
        let mut out = Vec::new();
        for pid in gone {
            let p = self.tracked.remove(&pid).expect("listed");
            let at = s.procs[&pid].exited.map_or_else(Instant::now, |e| e.0);
            out.push((p, at));
        }
        drop(s);
        self.exited.extend(out);
    }

    /// Sleeps until the next thing happens in the world (scheduled, or done to it from
    /// outside), or `until`.
    async fn next(&self, until: Instant) {
        let (next, changed) = {
            let s = self.world.0.borrow();
            (s.next_event(), s.changed.clone())
        };
        let changed = changed.notified();
        tokio::select! {
            () = tokio::time::sleep_until(next.map_or(until, |t| t.min(until))) => {}
            () = changed => {}
        }
    }

    fn unreaped(&self, pid: Option<i32>) -> usize {
        let s = self.world.0.borrow();
        self.exited
            .iter()
            .filter(|(p, _)| pid.is_none_or(|x| x == p.pid) && !s.procs[&p.pid].reaped)
            .count()
    }
}

impl TaskWatch for FakeWatch {
    type Proc = FakeProc;
    fn state(&self) -> Result<Events> {
        let mut s = self.world.0.borrow_mut();
        s.advance(Instant::now());
        Ok(Events {
            populated: s.populated(self.root),
            frozen: s.frozen(self.root, Instant::now()),
        })
    }
    fn track(&mut self, p: FakeProc) -> Result<()> {
        if self.world.0.borrow().watch_refused {
            return Err(Error::os(
                "epoll_ctl add pidfd of",
                std::path::Path::new(&format!("/proc/{}", p.pid)),
                Errno::NOSPC,
            ));
        }
        self.tracked.insert(p.pid, p);
        let mut s = self.world.0.borrow_mut();
        s.peak_held = s.peak_held.max(self.tracked.len());
        Ok(())
    }
    fn held(&self, pid: i32) -> Option<&FakeProc> {
        self.tracked.get(&pid)
    }
    fn refresh(&mut self) -> Result<()> {
        let mut s = self.world.0.borrow_mut();
        match &mut s.refreshes_left {
            Some(0) => return Err(Error::os("epoll_wait", Path::new("/task"), Errno::BADF)),
            Some(n) => *n -= 1,
            None => {}
        }
        drop(s);
        self.drain();
        Ok(())
    }
    fn shed(&mut self, keep: usize) {
        self.exited.clear();
        while self.tracked.len() > keep {
            self.tracked.pop_last();
        }
    }
    fn tracked(&self) -> impl Iterator<Item = &FakeProc> {
        self.tracked.values()
    }
    fn exited(&self) -> impl Iterator<Item = &FakeProc> {
        self.exited.iter().map(|(p, _)| p)
    }
    fn tracked_count(&self) -> usize {
        self.tracked.len()
    }
    async fn wait_empty(
        &mut self,
        deadline: Instant,
        stop_when_tracked_gone: bool,
        mut on_wake: impl FnMut(&Self),
    ) -> Result<Wake> {
        if self.broken() {
            return Err(Error::os("epoll_wait", Path::new("/task"), Errno::BADF));
        }
        loop {
            self.drain();
            if !self.state()?.populated {
                return Ok(Wake::Empty);
            }
            if Instant::now() >= deadline {
                return Ok(Wake::Deadline);
            }
            if stop_when_tracked_gone && self.tracked.is_empty() {
                return Ok(Wake::TrackedGone);
            }
            on_wake(self);
            self.next(deadline).await;
        }
    }
    async fn wait_frozen(&mut self, deadline: Instant) -> Result<Wake> {
        if self.broken() {
            return Err(Error::os("epoll_wait", Path::new("/task"), Errno::BADF));
        }
        loop {
            self.drain();
            let ev = self.state()?;
            if !ev.populated {
                return Ok(Wake::Empty);
            }
            if ev.frozen {
                return Ok(Wake::Frozen);
            }
            if Instant::now() >= deadline {
                return Ok(Wake::Deadline);
            }
            self.next(deadline).await;
        }
    }
    async fn wait_reaped(&mut self, until: Instant, patient: Option<(i32, Instant)>) -> Result<()> {
        loop {
            self.world.0.borrow_mut().advance(Instant::now());
            if self.unreaped(None) == 0 {
                return Ok(());
            }
            let now = Instant::now();
            let end = match patient {
                Some((pid, later)) if self.unreaped(Some(pid)) > 0 => until.max(later),
                _ => until,
            };
            if now >= end {
                return Ok(());
            }
            self.next(end).await;
        }
    }
    fn take_exits(&mut self) -> Vec<(FakeProc, Instant)> {
        std::mem::take(&mut self.exited)
    }
}

/// The final kill's files of the world.
#[derive(Debug)]
pub struct FakeKill {
    world: Fake,
    root: usize,
    cgroup_kill: bool,
}

impl FinalKill for FakeKill {
    fn uses_cgroup_kill(&self) -> bool {
        self.cgroup_kill
    }
    fn write_kill(&self) -> std::result::Result<(), Errno> {
        let now = Instant::now();
        let mut s = self.world.0.borrow_mut();
        s.advance(now);
        if s.cgroup_kill_refused {
            return Err(Errno::OPNOTSUPP);
        }
        let what = format!("cgroup.kill {}", s.cgroups[self.root].rel);
        s.note(now, what);
        let subtree = s.subtree(self.root);
        let victims: Vec<i32> = s
            .procs
            .iter()
            .filter(|(_, p)| p.exited.is_none() && subtree.contains(&p.spec.cg))
            .map(|(&pid, _)| pid)
            .collect();
        for pid in victims {
            let line = format!("SIGKILL {}[{pid}] (cgroup.kill)", s.procs[&pid].spec.comm);
            s.note(now, line);
            s.kill(pid, now);
        }
        Ok(())
    }
    fn set_frozen(&self, frozen: bool) -> std::result::Result<(), Errno> {
        // As the real one: a kill path for `cgroup.kill` has no `cgroup.freeze` opened.
        if self.cgroup_kill {
            return Err(Errno::NOENT);
        }
        let mut s = self.world.0.borrow_mut();
        if s.freeze_refused {
            return Err(Errno::ACCESS);
        }
        s.set_freeze(self.root, frozen, Instant::now());
        Ok(())
    }
}

impl Kernel for Fake {
    type Cg = FakeCg;
    type Proc = FakeProc;
    type Watch = FakeWatch;
    type Kill = FakeKill;
    type Mark<'c> = ();
    type Release = FakeRelease;
    type Cmdlines = FakeCmdlines;

    fn watch(&self, cg: &FakeCg) -> Result<FakeWatch> {
        Ok(FakeWatch {
            world: self.clone(),
            root: cg.id,
            tracked: BTreeMap::new(),
            exited: Vec::new(),
        })
    }
    fn kill_path(&self, cg: &FakeCg, method: KillMethod) -> Result<FakeKill> {
        if method == KillMethod::Fallback && self.0.borrow().fallback_path_refused {
            return Err(Error::os(
                "open",
                &cg.path.join("cgroup.freeze"),
                Errno::ACCESS,
            ));
        }
        Ok(FakeKill {
            world: self.clone(),
            root: cg.id,
            cgroup_kill: method == KillMethod::Auto && self.0.borrow().has_cgroup_kill,
        })
    }
    fn open(&self, pid: i32) -> Result<Option<FakeProc>> {
        let mut s = self.0.borrow_mut();
        s.advance(Instant::now());
        Ok(s.procs.get(&pid).filter(|p| !p.reaped).map(|_| FakeProc {
            world: self.clone(),
            pid,
        }))
    }
    fn open_member(&self, cg: &FakeCg, id: i32, _threaded: bool) -> Result<Option<FakeProc>> {
        let mut s = self.0.borrow_mut();
        s.advance(Instant::now());
        let now = Instant::now();
        if s.opens_refused_from.is_some_and(|t| now >= t) {
            return Err(Error::os(
                "pidfd_open",
                std::path::Path::new(&format!("/proc/{id}")),
                Errno::NFILE,
            ));
        }
        Ok(s.procs
            .get(&id)
            .filter(|p| p.listed(now) && p.spec.cg == cg.id)
            .map(|_| FakeProc {
                world: self.clone(),
                pid: id,
            }))
    }
    fn proc_cgroup(&self, pid: i32) -> Option<Vec<u8>> {
        let mut s = self.0.borrow_mut();
        s.advance(Instant::now());
        let p = s.procs.get(&pid).filter(|p| p.exited.is_none())?;
        Some(s.cgroups[p.spec.cg].rel.clone().into_bytes())
    }
    fn comm(&self, pid: i32) -> String {
        let mut s = self.0.borrow_mut();
        s.advance(Instant::now());
        match s.procs.get(&pid) {
            Some(p) if !p.reaped => p.spec.comm.clone(),
            Some(p) => p.spec.pid_reused_by.clone().unwrap_or_default(),
            None => String::new(),
        }
    }
    fn comm_and_state(&self, pid: i32) -> Named {
        let stuck = self
            .0
            .borrow()
            .procs
            .get(&pid)
            .is_some_and(|p| p.spec.stuck);
        let comm = self.comm(pid);
        // An outsider that took a reaped process's pid started later.
        let reused = self.0.borrow().procs.get(&pid).is_some_and(|p| p.reaped);
        Named {
            start: (!comm.is_empty()).then_some(u64::from(reused)),
            comm,
            maybe_frozen: stuck,
        }
    }
    fn describe(&self, pid: i32) -> Survivor {
        let mut s = self.0.borrow_mut();
        s.advance(Instant::now());
        let p = s.procs.get(&pid);
        let (state, wchan) = match p {
            Some(p) if p.exited.is_some() => ("Z", ""),
            Some(p) if p.spec.stuck => ("D", "fuse_wait_answer"),
            Some(_) => ("S", "do_nanosleep"),
            None => ("", ""),
        };
        Survivor {
            pid,
            comm: p.map(|p| p.spec.comm.clone()).unwrap_or_default(),
            state: state.into(),
            wchan: wchan.into(),
            memory_released: false,
            mrelease_error: None,
            tracer: None,
            threads: Vec::new(),
        }
    }
    fn v1_frozen(&self, _pid: i32) -> Option<String> {
        None
    }
    fn tgid_of(&self, tid: i32) -> Option<i32> {
        self.0.borrow().procs.contains_key(&tid).then_some(tid)
    }
    fn has_live_thread_in(&self, pid: i32, ns_path: &[u8]) -> bool {
        self.proc_cgroup(pid)
            .is_some_and(|p| crate::cgroup::is_within_bytes(&p, ns_path))
    }
    fn cmdlines(&self) -> FakeCmdlines {
        FakeCmdlines {
            world: self.clone(),
            got: RefCell::new(BTreeMap::new()),
        }
    }
    fn memory_release(&self) -> FakeRelease {
        FakeRelease {
            world: self.clone(),
            started: BTreeMap::new(),
        }
    }
    fn mark_stopping<'c>(&'c self, _cg: &'c FakeCg, _t0_ns: u128) -> Option<()> {
        Some(())
    }
    fn record_final_kill(&self, _cg: &FakeCg, at_ns: u128, via: &'static str) {
        self.0.borrow_mut().record = Some(FinalKillRecord {
            pid: std::process::id(),
            at_ns,
            via,
        });
    }
    fn final_kill_record(&self, _cg: &FakeCg) -> Option<FinalKillRecord> {
        self.0.borrow().record
    }
    fn kill_in_flight(&self, _cg: &FakeCg) -> Option<FinalKillRecord> {
        let s = self.0.borrow();
        s.record.filter(|_| s.kill_in_flight)
    }
    fn now_ns(&self) -> u128 {
        let s = self.0.borrow();
        s.ns(Instant::now())
    }
    fn fd_budget(&self) -> usize {
        self.0.borrow().budget
    }
}
