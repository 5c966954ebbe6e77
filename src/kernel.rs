//! The seam between the stop engine ([`mod@crate::stop`]) and the kernel: every operation the engine
//! performs on the task (list members, open and prove a pidfd, signal, watch `cgroup.events`
//! and the pidfds, freeze, kill, describe, read command lines, release memory, record) is a
//! method of one of these traits. One thing stays outside, as it decides nothing: the name of
//! the membership proof in use, which the report carries.
//!
//! [`Real`] implements them with cgroupfs, pidfds, epoll and `/proc` ([`crate::cgroup`],
//! [`crate::pidfd`], [`crate::watch`], [`crate::procinfo`]); the engine is compiled for it
//! alone outside the tests, so the seam costs nothing at run time. The unit tests implement them
//! with a scripted world of processes in virtual time (`kernel/fake.rs`), so every decision of
//! the engine can be tested in milliseconds, without root or cgroups.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::Errno;
use tokio::time::Instant;

use crate::cgroup::{Cgroup, Events, Members, is_gone};
use crate::error::{Error, Result};
use crate::pidfd::PidFd;
use crate::policy::Signal;
use crate::report::Survivor;
use crate::task::{FinalKillRecord, StopMark};
use crate::watch::{Wake, Watcher};

#[cfg(test)]
pub(crate) mod fake;

/// How the final kill is delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KillMethod {
    /// `cgroup.kill` where the kernel has it (5.14+) and the cgroup allows it (not threaded),
    /// else the fallback.
    #[default]
    Auto,
    /// Always the fallback (freeze, SIGKILL every member by pidfd, thaw, repeat): what runs on
    /// kernels before 5.14 and in threaded cgroups. For tests and old-kernel rehearsal.
    Fallback,
}

impl KillMethod {
    /// The method a task operation ([`crate::stop_task`], [`crate::stop_named`], [`crate::supervise::run`])
    /// uses when asked for `self`: the fallback when asked for it, or when the environment says
    /// `GRACEKILL_FORCE_FALLBACK=1` (for rehearsing the pre-5.14 path on any kernel), else
    /// `self`. [`crate::stop()`] itself uses exactly what it is given.
    pub(crate) fn for_task(self) -> KillMethod {
        self.or_forced(std::env::var_os("GRACEKILL_FORCE_FALLBACK").as_deref())
    }

    /// [`KillMethod::for_task`] for a value of `GRACEKILL_FORCE_FALLBACK`.
    pub(crate) fn or_forced(self, force_fallback: Option<&std::ffi::OsStr>) -> KillMethod {
        if force_fallback.is_some_and(|v| v == "1") {
            KillMethod::Fallback
        } else {
            self
        }
    }
}

/// One cgroup of the task's subtree.
pub(crate) trait TaskCgroup: Sized {
    /// The path relative to the mount, for reports and logs.
    fn rel(&self) -> &str;
    /// The path, for error messages.
    fn path(&self) -> &Path;
    /// The path as `/proc/<pid>/cgroup` shows it, for membership checks.
    fn ns_path_bytes(&self) -> &[u8];
    /// Has the cgroup been removed?
    fn is_removed(&self) -> bool;
    /// Visits this cgroup and every cgroup below it, until `until`.
    fn walk(
        &self,
        until: Option<std::time::Instant>,
        visit: impl FnMut(Result<&Self>) -> ControlFlow<()>,
    ) -> ControlFlow<()>;
    /// The members (`cgroup.procs` and `cgroup.threads`).
    fn members(&self) -> Result<Members>;
    /// The members, read until `until`; `false` if the lists were cut short.
    fn members_until(&self, until: Option<std::time::Instant>) -> Result<(Members, bool)>;
    /// Is `cgroup.freeze` set?
    fn freeze_requested(&self) -> Result<bool>;
    /// Writes `cgroup.freeze`.
    fn set_frozen(&self, frozen: bool) -> Result<()>;
}

/// A process (or a thread, in a threaded cgroup) held by the engine: a pidfd.
pub(crate) trait TaskProc: Sized {
    /// The pid (or thread id) it was opened for.
    fn pid(&self) -> i32;
    /// Its process's pid.
    fn tgid(&self) -> i32;
    /// Has it exited? Never blocks.
    fn has_exited(&self) -> bool;
    /// Is it still there, alive or not yet reaped, so that its pid still names it? Something
    /// read by that pid before a `true` here was its own. Never blocks.
    fn unreaped(&self) -> bool;
    /// Sends `sig`; `false` if it is gone.
    fn send_signal(&self, sig: Signal) -> Result<bool>;
    /// Sends `sig` to its whole process (for a thread); `false` if it is gone.
    fn send_signal_to_group(&self, sig: Signal) -> Result<bool>;
    /// Its wait status, once it has been reaped (and the kernel keeps it: Linux 6.15).
    fn exit_status(&self) -> Option<i32>;
    /// For a thread: a handle on its whole process, which outlives the thread (itself otherwise,
    /// or when that cannot be had safely).
    fn into_process(self) -> Self;
}

/// Watches the task's cgroup and the processes the engine holds (see [`Watcher`]).
pub(crate) trait TaskWatch: Sized {
    /// A held process.
    type Proc: TaskProc;
    /// `cgroup.events` now.
    fn state(&self) -> Result<Events>;
    /// Holds `p` and wakes when it exits.
    fn track(&mut self, p: Self::Proc) -> Result<()>;
    /// The held process for `pid`, unless its exit was seen by the last refresh.
    fn held(&self, pid: i32) -> Option<&Self::Proc>;
    /// Forgets the held processes seen to exit.
    fn refresh(&mut self) -> Result<()>;
    /// Refreshes after reading a list (see [`Watcher::refresh_listing`]).
    fn refresh_listing(&mut self) -> Result<()> {
        self.refresh()
    }
    /// Holds at most `keep` processes (out of descriptors).
    fn shed(&mut self, keep: usize);
    /// Every held process.
    fn tracked(&self) -> impl Iterator<Item = &Self::Proc>;
    /// The held processes seen to exit, kept for their exit statuses.
    fn exited(&self) -> impl Iterator<Item = &Self::Proc>;
    /// How many processes are held.
    fn tracked_count(&self) -> usize;
    /// Waits for `populated 0`, the deadline, or (`stop_when_tracked_gone`) every held process
    /// gone; `on_wake` after each wakeup that does not end the wait.
    async fn wait_empty(
        &mut self,
        deadline: Instant,
        stop_when_tracked_gone: bool,
        on_wake: impl FnMut(&Self),
    ) -> Result<Wake>;
    /// Waits for `frozen 1`, `populated 0` or the deadline.
    async fn wait_frozen(&mut self, deadline: Instant) -> Result<Wake>;
    /// Waits for the exited processes to be reaped (see [`Watcher::wait_reaped`]).
    async fn wait_reaped(&mut self, until: Instant, patient: Option<(i32, Instant)>) -> Result<()>;
    /// The exits seen, in order, with when each was seen.
    fn take_exits(&mut self) -> Vec<(Self::Proc, Instant)>;
    /// Why the watcher is blind (no epoll watch could be had: see `watch.rs`), if it is.
    fn blind(&self) -> Option<String> {
        None
    }
}

/// What the final kill writes, opened before the first signal.
pub(crate) trait FinalKill {
    /// Will the final kill write `cgroup.kill` (else: the fallback)?
    fn uses_cgroup_kill(&self) -> bool;
    /// Writes `cgroup.kill`.
    fn write_kill(&self) -> std::result::Result<(), Errno>;
    /// Writes `cgroup.freeze` (for the fallback).
    fn set_frozen(&self, frozen: bool) -> std::result::Result<(), Errno>;
}

/// The command lines of one stop's processes, read off the stop's path (reading
/// `/proc/<pid>/cmdline` blocks while the process's `mmap_lock` is held), for the report.
pub(crate) trait Cmdlines {
    /// Asks for these processes' command lines, each named by its pid and start time (a line
    /// read by pid is kept only if that pid still names that process after the read); never
    /// blocks.
    fn request(&self, procs: Vec<(i32, u64)>);
    /// The command line of `pid`, if it has been read (else empty).
    fn get(&self, pid: i32) -> String;
}

impl Cmdlines for crate::procinfo::CmdlineReader {
    fn request(&self, procs: Vec<(i32, u64)>) {
        crate::procinfo::CmdlineReader::request(self, procs);
    }
    fn get(&self, pid: i32) -> String {
        crate::procinfo::CmdlineReader::get(self, pid)
    }
}

/// `process_mrelease(2)` of the survivors of one stop, each process at most once: the stop
/// describes its survivors more than once (whether their number falls decides if they are
/// survivors at all), and a release that blocks (on a survivor that holds its `mmap_lock`) must
/// not be started again, nor leave a thread behind per description.
pub(crate) trait MemoryRelease {
    /// A held process.
    type Proc;
    /// Has the release of process `pid` been started in this stop?
    fn started(&self, pid: i32) -> bool;
    /// Starts releasing the memory of `p` (process `pid`) in the background.
    fn start(&mut self, pid: i32, p: Self::Proc);
    /// Notes in each of `out` whose release was started what came of it, waiting until `until`
    /// at most for the answers still missing.
    fn collect(&mut self, out: &mut [Survivor], until: std::time::Instant);
    /// Lets go of the processes that have exited; returns how many are still held (each a
    /// descriptor, counted in the stop's budget).
    fn prune(&mut self) -> usize;
}

/// A process's name as read by pid ([`Kernel::comm_and_state`]), with what the same read gives.
#[derive(Clone, Debug, Default)]
pub(crate) struct Named {
    /// Its `comm`; empty when unknown.
    pub comm: String,
    /// Neither running nor in an interruptible sleep: it could be frozen.
    pub maybe_frozen: bool,
    /// Its start time (clock ticks after boot): with the pid, it names this process for good.
    pub start: Option<u64>,
}

/// The kernel as the engine sees it.
pub(crate) trait Kernel {
    /// A cgroup of the task.
    type Cg: TaskCgroup;
    /// A held process.
    type Proc: TaskProc;
    /// The watcher of one stop.
    type Watch: TaskWatch<Proc = Self::Proc>;
    /// The final kill's files.
    type Kill: FinalKill;
    /// The stop-in-progress mark on a cgroup, removed when dropped.
    type Mark<'c>
    where
        Self: 'c;

    /// Starts watching `cg`.
    fn watch(&self, cg: &Self::Cg) -> Result<Self::Watch>;
    /// Opens what the final kill of `cg` will write, by `method`.
    fn kill_path(&self, cg: &Self::Cg, method: KillMethod) -> Result<Self::Kill>;
    /// Opens `pid`: `None` if there is no such process.
    fn open(&self, pid: i32) -> Result<Option<Self::Proc>>;
    /// Opens `id` (a pid, or a thread id if `threaded`) and proves it a member of `cg`.
    fn open_member(&self, cg: &Self::Cg, id: i32, threaded: bool) -> Result<Option<Self::Proc>>;
    /// The cgroup path of `pid`, as `/proc/<pid>/cgroup` shows it.
    fn proc_cgroup(&self, pid: i32) -> Option<Vec<u8>>;
    /// The name of `pid` (`comm`), empty if gone.
    fn comm(&self, pid: i32) -> String;
    /// The name of `pid`, whether it could be frozen (neither running nor in an interruptible
    /// sleep: a frozen process shows `D`, and a process whose leader has exited `Z`) and its start
    /// time, from one read; empty if gone.
    fn comm_and_state(&self, pid: i32) -> Named;
    /// `pid` described for the survivors report (state, wait channel, threads).
    fn describe(&self, pid: i32) -> Survivor;
    /// The cgroup v1 freezer cgroup holding `pid` frozen, if any.
    fn v1_frozen(&self, pid: i32) -> Option<String>;
    /// The process of thread `tid`.
    fn tgid_of(&self, tid: i32) -> Option<i32>;
    /// Does process `pid` have a live thread within the cgroup at `ns_path` (or below)?
    fn has_live_thread_in(&self, pid: i32, ns_path: &[u8]) -> bool;
    /// One stop's command-line reader (see [`Cmdlines`]).
    type Cmdlines: Cmdlines;
    /// A new reader for one stop.
    fn cmdlines(&self) -> Self::Cmdlines;
    /// Releases survivors' memory for one stop (see [`MemoryRelease`]).
    type Release: MemoryRelease<Proc = Self::Proc>;
    /// A new release for one stop: nothing started yet.
    fn memory_release(&self) -> Self::Release;
    /// Marks a stop in progress on `cg`, begun at `t0_ns` (`CLOCK_MONOTONIC`).
    fn mark_stopping<'c>(&'c self, cg: &'c Self::Cg, t0_ns: u128) -> Option<Self::Mark<'c>>;
    /// Records this stop's final kill on `cg`.
    fn record_final_kill(&self, cg: &Self::Cg, at_ns: u128, via: &'static str);
    /// The final kill recorded on `cg` (by any stop).
    fn final_kill_record(&self, cg: &Self::Cg) -> Option<FinalKillRecord>;
    /// The final kill recorded on `cg` by the stop in progress there, if that stop has sent it
    /// and is still going on (a live stopper whose mark is still set): what is left in `cg`
    /// is dying of it. Read before this stop marks its own.
    fn kill_in_flight(&self, cg: &Self::Cg) -> Option<FinalKillRecord>;
    /// `CLOCK_MONOTONIC` in nanoseconds, the clock of the records.
    fn now_ns(&self) -> u128;
    /// How many processes one stop may hold at once.
    fn fd_budget(&self) -> usize;
}

/// The kernel itself.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Real;

impl TaskCgroup for Cgroup {
    fn rel(&self) -> &str {
        Cgroup::rel(self)
    }
    fn path(&self) -> &Path {
        Cgroup::path(self)
    }
    fn ns_path_bytes(&self) -> &[u8] {
        Cgroup::ns_path_bytes(self)
    }
    fn is_removed(&self) -> bool {
        Cgroup::is_removed(self)
    }
    fn walk(
        &self,
        until: Option<std::time::Instant>,
        visit: impl FnMut(Result<&Self>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        Cgroup::walk(self, until, visit)
    }
    fn members(&self) -> Result<Members> {
        Cgroup::members(self)
    }
    fn members_until(&self, until: Option<std::time::Instant>) -> Result<(Members, bool)> {
        Cgroup::members_until(self, until)
    }
    fn freeze_requested(&self) -> Result<bool> {
        Cgroup::freeze_requested(self)
    }
    fn set_frozen(&self, frozen: bool) -> Result<()> {
        Cgroup::set_frozen(self, frozen)
    }
}

impl TaskProc for PidFd {
    fn pid(&self) -> i32 {
        PidFd::pid(self)
    }
    fn tgid(&self) -> i32 {
        PidFd::tgid(self)
    }
    fn has_exited(&self) -> bool {
        PidFd::has_exited(self)
    }
    fn unreaped(&self) -> bool {
        PidFd::unreaped(self)
    }
    fn send_signal(&self, sig: Signal) -> Result<bool> {
        PidFd::send_signal(self, sig)
    }
    fn send_signal_to_group(&self, sig: Signal) -> Result<bool> {
        PidFd::send_signal_to_group(self, sig)
    }
    fn exit_status(&self) -> Option<i32> {
        crate::sys::pidfd_exit_status(std::os::fd::AsFd::as_fd(self))
    }
    fn into_process(self) -> Self {
        PidFd::into_process(self)
    }
}

impl TaskWatch for Watcher {
    type Proc = PidFd;
    fn state(&self) -> Result<Events> {
        Watcher::state(self)
    }
    fn track(&mut self, p: PidFd) -> Result<()> {
        Watcher::track(self, p)
    }
    fn held(&self, pid: i32) -> Option<&PidFd> {
        Watcher::held(self, pid)
    }
    fn refresh(&mut self) -> Result<()> {
        Watcher::refresh(self)
    }
    fn refresh_listing(&mut self) -> Result<()> {
        Watcher::refresh_listing(self)
    }
    fn shed(&mut self, keep: usize) {
        Watcher::shed(self, keep);
    }
    fn exited(&self) -> impl Iterator<Item = &PidFd> {
        Watcher::exited(self)
    }
    fn tracked(&self) -> impl Iterator<Item = &PidFd> {
        Watcher::tracked(self)
    }
    fn tracked_count(&self) -> usize {
        Watcher::tracked_count(self)
    }
    async fn wait_empty(
        &mut self,
        deadline: Instant,
        stop_when_tracked_gone: bool,
        on_wake: impl FnMut(&Self),
    ) -> Result<Wake> {
        Watcher::wait_empty(self, deadline, stop_when_tracked_gone, on_wake).await
    }
    async fn wait_frozen(&mut self, deadline: Instant) -> Result<Wake> {
        Watcher::wait_frozen(self, deadline).await
    }
    async fn wait_reaped(&mut self, until: Instant, patient: Option<(i32, Instant)>) -> Result<()> {
        Watcher::wait_reaped(self, until, patient).await
    }
    fn take_exits(&mut self) -> Vec<(PidFd, Instant)> {
        Watcher::take_exits(self)
    }
    fn blind(&self) -> Option<String> {
        Watcher::blind(self).map(str::to_string)
    }
}

/// Set once `cgroup.kill` is found missing: the kernel will not grow it.
static NO_CGROUP_KILL: AtomicBool = AtomicBool::new(false);

/// What the final kill will write, opened before the first signal.
#[derive(Debug, Default)]
pub(crate) struct KillPath {
    /// `cgroup.kill`, when it will be used.
    kill: Option<OwnedFd>,
    /// `cgroup.freeze`, for the fallback (absent before 5.2, and not opened with `cgroup.kill`).
    freeze: Option<OwnedFd>,
}

impl KillPath {
    /// Opens `cgroup.kill` (unless the fallback is forced or the kernel lacks it), or else
    /// `cgroup.freeze`, for writing. Opened before the first signal, so a caller who may not
    /// kill learns it before anything is signalled. Opened, not checked with `faccessat2(2)`
    /// and opened later: Landlock, AppArmor, TOMOYO, SELinux's open permission and fanotify
    /// refuse only at `open(2)`; seccomp profiles answer `faccessat2` with `EPERM` or `ENOSYS`;
    /// a delegated task can `chmod` its own `cgroup.kill` during the grace; and a descriptor
    /// needed at the deadline is the one `EMFILE` takes. Held, it makes the kill certain (one
    /// descriptor per stop). A threaded cgroup refuses `cgroup.kill`
    /// only when it is written (`EOPNOTSUPP`): the stop then prepares the fallback (it may
    /// have become threaded meanwhile anyway).
    ///
    /// # Errors
    /// Permission denied on the file the final kill needs; any other unexpected error.
    fn prepare(cg: &Cgroup, method: KillMethod) -> Result<KillPath> {
        let mut path = KillPath::default();
        if method == KillMethod::Auto && !NO_CGROUP_KILL.load(Ordering::Relaxed) {
            match cg.open_for_write("cgroup.kill") {
                Ok(fd) => {
                    path.kill = Some(fd);
                    return Ok(path);
                }
                Err(Error::Os {
                    errno: Errno::NOENT,
                    ..
                }) if cg.read_file("cgroup.procs").is_ok() => {
                    // The cgroup is there but cgroup.kill is not: a kernel before 5.14.
                    NO_CGROUP_KILL.store(true, Ordering::Relaxed);
                    tracing::debug!("cgroup.kill missing (kernel < 5.14): using the fallback");
                }
                Err(e) if is_gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
        match cg.open_for_write("cgroup.freeze") {
            Ok(fd) => path.freeze = Some(fd),
            Err(e) if is_gone(&e) => {} // cgroup.freeze needs 5.2; the fallback kills without it
            Err(e) => return Err(e),
        }
        Ok(path)
    }
}

impl FinalKill for KillPath {
    fn uses_cgroup_kill(&self) -> bool {
        self.kill.is_some()
    }

    fn write_kill(&self) -> std::result::Result<(), Errno> {
        match &self.kill {
            Some(fd) => rustix::io::write(fd, b"1").map(drop),
            None => Err(Errno::NOENT),
        }
    }

    fn set_frozen(&self, frozen: bool) -> std::result::Result<(), Errno> {
        match &self.freeze {
            Some(fd) => rustix::io::write(fd, if frozen { b"1" } else { b"0" }).map(drop),
            None => Err(Errno::NOENT),
        }
    }
}

impl Kernel for Real {
    type Cg = Cgroup;
    type Proc = PidFd;
    type Watch = Watcher;
    type Kill = KillPath;
    type Mark<'c> = StopMark<'c>;
    type Release = ThreadRelease<PidFd>;
    type Cmdlines = crate::procinfo::CmdlineReader;

    fn watch(&self, cg: &Cgroup) -> Result<Watcher> {
        Watcher::new(cg)
    }
    fn kill_path(&self, cg: &Cgroup, method: KillMethod) -> Result<KillPath> {
        KillPath::prepare(cg, method)
    }
    fn open(&self, pid: i32) -> Result<Option<PidFd>> {
        PidFd::open(pid)
    }
    fn open_member(&self, cg: &Cgroup, id: i32, threaded: bool) -> Result<Option<PidFd>> {
        if threaded {
            PidFd::open_thread_member(cg, id)
        } else {
            PidFd::open_member(cg, id)
        }
    }
    fn proc_cgroup(&self, pid: i32) -> Option<Vec<u8>> {
        crate::cgroup::proc_cgroup(&pid.to_string())
    }
    fn comm(&self, pid: i32) -> String {
        crate::procinfo::comm(pid)
    }
    fn comm_and_state(&self, pid: i32) -> Named {
        crate::procinfo::stat_of(&pid.to_string())
            .map(|s| Named {
                maybe_frozen: !matches!(s.state.as_str(), "R" | "S" | "I"),
                comm: s.comm,
                start: Some(s.starttime),
            })
            .unwrap_or_default()
    }
    fn describe(&self, pid: i32) -> Survivor {
        crate::procinfo::describe(pid).into()
    }
    fn v1_frozen(&self, pid: i32) -> Option<String> {
        crate::procinfo::v1_frozen(pid)
    }
    fn tgid_of(&self, tid: i32) -> Option<i32> {
        crate::procinfo::tgid_of(tid)
    }
    fn has_live_thread_in(&self, pid: i32, ns_path: &[u8]) -> bool {
        crate::procinfo::has_live_thread_in(pid, ns_path)
    }
    fn cmdlines(&self) -> crate::procinfo::CmdlineReader {
        crate::procinfo::CmdlineReader::default()
    }
    fn memory_release(&self) -> ThreadRelease<PidFd> {
        ThreadRelease::new(PidFd::mrelease, PidFd::has_exited, "gracekill-mrelease")
    }
    fn mark_stopping<'c>(&'c self, cg: &'c Cgroup, t0_ns: u128) -> Option<StopMark<'c>> {
        StopMark::set(cg, t0_ns)
    }
    fn record_final_kill(&self, cg: &Cgroup, at_ns: u128, via: &'static str) {
        FinalKillRecord::write(cg, at_ns, via);
    }
    fn final_kill_record(&self, cg: &Cgroup) -> Option<FinalKillRecord> {
        FinalKillRecord::read(cg)
    }
    fn kill_in_flight(&self, cg: &Cgroup) -> Option<FinalKillRecord> {
        crate::task::kill_in_flight(cg)
    }
    fn now_ns(&self) -> u128 {
        monotonic_ns()
    }
    fn fd_budget(&self) -> usize {
        fd_budget()
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine.
pub(crate) fn monotonic_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // The monotonic clock is never negative.
    u128::from(t.tv_sec.unsigned_abs()) * 1_000_000_000 + u128::from(t.tv_nsec.unsigned_abs())
}

/// [`MemoryRelease`] off the stop's path: `process_mrelease(2)` takes the process's
/// `mmap_lock`, which a survivor stuck in a page fault may keep from it for as long as it is
/// stuck. One thread per stop, started with the first release, does them in turn; whatever has
/// not answered when a description's time is up is reported as such. When the stop is over the
/// thread finishes the releases queued and ends; blocked on a wedged survivor, it ends when that
/// survivor does (one thread per such stop, never one per description).
///
/// Each release is of one process, held: a pid listed again after its process has exited names
/// a newcomer, whose release starts afresh and whose answer is its own.
pub(crate) struct ThreadRelease<P> {
    release: fn(&P) -> std::result::Result<(), Errno>,
    exited: fn(&P) -> bool,
    thread_name: &'static str,
    jobs: Option<std::sync::mpsc::Sender<Job<P>>>,
    answers: Option<std::sync::mpsc::Receiver<(u64, std::result::Result<(), Errno>)>>,
    next: u64,
    /// By pid: the release started last for it.
    state: HashMap<i32, Started<P>>,
}

type Job<P> = (u64, Arc<P>);

struct Started<P> {
    seq: u64,
    proc: Arc<P>,
    /// `None` while awaited.
    answer: Option<std::result::Result<(), String>>,
}

impl<P: Send + Sync + 'static> ThreadRelease<P> {
    pub(crate) fn new(
        release: fn(&P) -> std::result::Result<(), Errno>,
        exited: fn(&P) -> bool,
        thread_name: &'static str,
    ) -> Self {
        ThreadRelease {
            release,
            exited,
            thread_name,
            jobs: None,
            answers: None,
            next: 0,
            state: HashMap::new(),
        }
    }

    /// The worker's queue, the worker started on first use; `None` if no thread can be had.
    fn queue(&mut self) -> Option<&std::sync::mpsc::Sender<Job<P>>> {
        if self.jobs.is_none() && self.answers.is_none() {
            let (jobs, todo) = std::sync::mpsc::channel::<Job<P>>();
            let (tx, answers) = std::sync::mpsc::channel();
            let release = self.release;
            let spawned = std::thread::Builder::new()
                .name(self.thread_name.into())
                .spawn(move || {
                    for (seq, p) in todo {
                        if tx.send((seq, release(&p))).is_err() {
                            return;
                        }
                    }
                });
            // Either way `answers` is set, so a failed spawn is not retried for each process.
            self.answers = Some(answers);
            if spawned.is_ok() {
                self.jobs = Some(jobs);
            }
        }
        self.jobs.as_ref()
    }

    fn take_answer(&mut self, (seq, r): (u64, std::result::Result<(), Errno>)) {
        // A newcomer's pid answered for its predecessor: not its answer.
        if let Some(s) = self.state.values_mut().find(|s| s.seq == seq) {
            s.answer = Some(r.map_err(errno_name));
        }
    }
}

impl<P: Send + Sync + 'static> MemoryRelease for ThreadRelease<P> {
    type Proc = P;

    fn started(&self, pid: i32) -> bool {
        self.state
            .get(&pid)
            .is_some_and(|s| !(self.exited)(&s.proc))
    }

    fn start(&mut self, pid: i32, p: P) {
        if self.started(pid) {
            return;
        }
        self.next += 1;
        let seq = self.next;
        let proc = Arc::new(p);
        let queued = self
            .queue()
            .is_some_and(|q| q.send((seq, proc.clone())).is_ok());
        let answer = (!queued).then(|| Err("no thread to run process_mrelease".to_string()));
        self.state.insert(pid, Started { seq, proc, answer });
    }

    fn prune(&mut self) -> usize {
        let exited = self.exited;
        self.state.retain(|_, s| !exited(&s.proc));
        self.state.len()
    }

    fn collect(&mut self, out: &mut [Survivor], until: std::time::Instant) {
        let awaited = |state: &HashMap<i32, Started<P>>| {
            out.iter()
                .any(|s| state.get(&s.pid).is_some_and(|s| s.answer.is_none()))
        };
        while awaited(&self.state) {
            let Some(answers) = &self.answers else { break };
            let wait = until.saturating_duration_since(std::time::Instant::now());
            match answers.recv_timeout(wait) {
                Ok(a) => self.take_answer(a),
                Err(_) => break,
            }
        }
        // Answers that came in meanwhile for processes no longer listed.
        while let Some(Ok(a)) = self.answers.as_ref().map(|r| r.try_recv()) {
            self.take_answer(a);
        }
        for s in out.iter_mut() {
            match self.state.get(&s.pid).map(|st| &st.answer) {
                Some(Some(Ok(()))) => s.memory_released = true,
                Some(Some(Err(e))) => s.mrelease_error = Some(e.clone()),
                Some(None) => {
                    s.mrelease_error =
                        Some("not answered in time (the process's memory map is locked)".into());
                }
                None => {}
            }
        }
    }
}

pub(crate) fn errno_name(e: Errno) -> String {
    match e {
        Errno::INVAL => "EINVAL (process not dying)".into(),
        Errno::NOSYS => "ENOSYS (kernel < 5.15)".into(),
        Errno::SRCH => "ESRCH (process gone)".into(),
        other => std::io::Error::from(other).to_string(),
    }
}

/// How many pidfds one stop may hold: half the soft descriptor limit, less a reserve for the
/// caller, at most 65,536. Processes beyond it are signalled through a pidfd that is closed at
/// once (their exits are then seen through `cgroup.events` alone).
pub(crate) fn fd_budget() -> usize {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let soft = lim.current.unwrap_or(1 << 20);
    usize::try_from(soft / 2)
        .unwrap_or(usize::MAX)
        .saturating_sub(64)
        .min(1 << 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
    use std::time::Duration;

    /// A process whose release blocks until the test lets it go (as `process_mrelease(2)`
    /// blocks on a survivor holding its `mmap_lock`), and that the test can make exit.
    struct Proc {
        gate: Mutex<Receiver<()>>,
        exited: AtomicBool,
    }

    fn proc() -> (SyncSender<()>, Proc) {
        let (open, gate) = sync_channel(1);
        let p = Proc {
            gate: Mutex::new(gate),
            exited: AtomicBool::new(false),
        };
        (open, p)
    }

    fn blocking(p: &Proc) -> std::result::Result<(), Errno> {
        let gate = p.gate.lock().map_err(|_| Errno::PIPE)?;
        gate.recv().map_err(|_| Errno::PIPE)
    }

    fn exited(p: &Proc) -> bool {
        p.exited.load(Ordering::SeqCst)
    }

    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|c| c.trim_end() == name)
            .count()
    }

    fn survivor(pid: i32) -> Survivor {
        let mut s = crate::report::Survivor::from(crate::procinfo::describe(-1));
        s.pid = pid;
        s
    }

    fn soon(ms: u64) -> std::time::Instant {
        std::time::Instant::now() + Duration::from_millis(ms)
    }

    /// A blocked release is reported as unanswered, is not started again when the survivors
    /// are described again, and holds up no other description: one thread for the whole stop,
    /// not one per description. Once it unblocks, later descriptions get the answers.
    #[test]
    fn a_blocked_release_costs_one_thread_per_stop_and_is_not_started_twice() {
        const NAME: &str = "gk-test-release";
        let mut r = ThreadRelease::new(blocking, exited, NAME);
        let (open1, p1) = proc();
        let (open2, p2) = proc();
        r.start(101, p1);
        let mut out = vec![survivor(101)];
        let t = std::time::Instant::now();
        r.collect(&mut out, soon(50));
        assert!(t.elapsed() < Duration::from_secs(2), "bounded by its time");
        assert!(!out[0].memory_released);
        assert!(
            out[0]
                .mrelease_error
                .as_deref()
                .is_some_and(|e| e.contains("not answered")),
            "{:?}",
            out[0].mrelease_error
        );
        // Described again, with a second survivor: 101 is not started again, 102 queues behind.
        assert!(r.started(101));
        let (_unused, p1_again) = proc();
        r.start(101, p1_again);
        r.start(102, p2);
        let mut out = vec![survivor(101), survivor(102)];
        r.collect(&mut out, soon(50));
        assert!(out.iter().all(|s| !s.memory_released));
        assert_eq!(threads_named(NAME), 1, "one thread, blocked");
        // Unblocked: both answer.
        open1.send(()).expect("gate 1");
        open2.send(()).expect("gate 2");
        let mut out = vec![survivor(101), survivor(102)];
        r.collect(&mut out, soon(5000));
        assert!(out.iter().all(|s| s.memory_released), "{out:?}");
        // The stop over, its thread ends: it drops its end of the answers when its loop is
        // done (waited for as that event, not polled).
        let answers = r.answers.take().expect("a worker was started");
        drop(r);
        assert_eq!(
            answers.recv_timeout(Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
            "the worker ended"
        );
    }

    /// A pid listed again after its process exited names a newcomer: its release is started,
    /// and the answer reported for it is its own, not its predecessor's.
    #[test]
    fn a_reused_pid_gets_a_release_and_an_answer_of_its_own() {
        let mut r = ThreadRelease::new(blocking, exited, "gk-test-reuse");
        let (open1, p1) = proc();
        open1.send(()).expect("gate");
        r.start(7, p1);
        let mut out = vec![survivor(7)];
        r.collect(&mut out, soon(5000));
        assert!(out[0].memory_released);
        // Its process exits; a newcomer with the same pid is listed, and its release blocks.
        r.state
            .get(&7)
            .expect("started")
            .proc
            .exited
            .store(true, Ordering::SeqCst);
        assert!(!r.started(7), "a newcomer is not the process released");
        let (_blocked, p2) = proc();
        r.start(7, p2);
        let mut out = vec![survivor(7)];
        r.collect(&mut out, soon(50));
        assert!(!out[0].memory_released, "the predecessor's answer: {out:?}");
        assert!(out[0].mrelease_error.is_some());
    }
}
