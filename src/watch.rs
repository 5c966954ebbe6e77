//! Waiting without polling: for `populated 0` in `cgroup.events`, for processes to exit, for a
//! deadline.
//!
//! One private epoll instance holds the `cgroup.events` descriptor (`EPOLLPRI`: kernfs signals a
//! change as a priority event) and every pidfd the engine holds (`EPOLLIN`: readable once the
//! process exits). tokio waits on that epoll descriptor, so a wait costs one wakeup per event.
//! Waking on pidfds as well matters: the kernel rate-limits `cgroup.events` notifications to one
//! per 10 ms per file (`CGROUP_FILE_NOTIFY_MIN_INTV`), so re-reading the file when a tracked
//! process exits reports emptiness up to 10 ms sooner.
//!
//! Deadlines are a `timerfd` (`CLOCK_MONOTONIC`, armed for the absolute deadline) in the same
//! epoll set: a kernel timer with nanosecond resolution, where tokio's timer wheel rounds up to
//! the next millisecond.
//!
//! Without epoll watches to spare (`epoll_ctl` answers `ENOSPC` once a task of the same user
//! holds `fs.epoll.max_user_watches` of them, `ENOMEM` under memory pressure), the watcher is
//! *blind*: it cannot be woken, so it looks every 10 ms (tokio's timer, which needs no watch,
//! and no thread): `cgroup.events` is read and the held pidfds polled in one `poll(2)`, exits
//! and emptiness seen within a tick; no reap is waited for. This is polling, the price of an
//! attack on the stopper's user; the stop still signals, catches latecomers, waits for
//! `populated 0` and kills on time, and says it was blind.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::event::epoll;
use rustix::io::Errno;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::cgroup::{Cgroup, Events, EventsFile};
use crate::error::{Error, Result};
use crate::pidfd::PidFd;

const EVENTS_KEY: u64 = 0;
/// The deadline's timerfd in the epoll set.
const TIMER_KEY: u64 = u64::MAX;
/// Marks the key of an exited pidfd waited on for its reap: the index in `exited` follows.
const REAP_BIT: u64 = 1 << 62;

/// Why a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// `populated 0`: the cgroup's whole subtree is empty.
    Empty,
    /// The deadline passed with processes still present.
    Deadline,
    /// Every tracked process has exited but the cgroup is still populated (processes we have not
    /// seen yet, or not yet reported by `cgroup.events`).
    TrackedGone,
    /// `frozen 1` appeared (only for [`Watcher::wait_frozen`]).
    Frozen,
}

/// Watches one cgroup and the processes the engine has opened in it.
#[derive(Debug)]
pub struct Watcher {
    /// The epoll set and the deadline's timerfd in it; `None`: blind (see the module docs).
    epoll: Option<(AsyncFd<OwnedFd>, OwnedFd)>,
    /// Why it is blind.
    blind: Option<String>,
    /// The deadline of the current wait, for a blind wait.
    deadline: Cell<Option<Instant>>,
    events: EventsFile,
    /// Tracked pidfds by epoll key.
    tracked: HashMap<u64, PidFd>,
    /// pid -> key, for the pids currently tracked.
    by_pid: HashMap<i32, u64>,
    next_key: u64,
    /// Tracked processes seen to exit, with when, in that order: their pidfds are kept so the
    /// exit status can be read once their parent reaps them (at most [`MAX_EXITS`]: the first
    /// ones, and the latest).
    exited: Vec<(PidFd, Instant)>,
    /// How many of `exited` are in the epoll set waiting for `EPOLLHUP` (reaped).
    reaps_pending: usize,
}

/// How often a blind watcher looks (see the module docs): the kernel's own rate for
/// `cgroup.events` notifications.
const BLIND_TICK: Duration = Duration::from_millis(10);

/// How many exits are kept for the report's timeline (each holds its pidfd until the end).
pub const MAX_EXITS: usize = crate::report::MAX_LISTED;

impl Watcher {
    /// Starts watching `cg`'s `cgroup.events`: blind (see the module docs) when no epoll watch
    /// can be had, or when `GRACEKILL_FORCE_BLIND_WATCH=1` asks for it (tests).
    ///
    /// # Errors
    /// Opening the file (missing on the root cgroup); creating the epoll set or its timer for
    /// another reason than a shortage.
    pub fn new(cg: &Cgroup) -> Result<Watcher> {
        let events = cg.open_events()?;
        let forced = std::env::var_os("GRACEKILL_FORCE_BLIND_WATCH").is_some_and(|v| v == "1");
        let (epoll, blind) = if forced {
            (
                None,
                Some("forced (GRACEKILL_FORCE_BLIND_WATCH=1)".to_string()),
            )
        } else if let Some(why) = runtime_without_io() {
            (None, Some(why))
        } else {
            match Self::epoll_set(cg, &events) {
                Ok(set) => (Some(set), None),
                Err(e) if is_shortage(&e) => (None, Some(e.to_string())),
                Err(e) => return Err(e),
            }
        };
        if let Some(why) = &blind {
            tracing::warn!(cgroup = %cg.rel(), why, "no epoll watch: looking at cgroup.events and the held pidfds every 10 ms");
        }
        Ok(Watcher {
            epoll,
            blind,
            deadline: Cell::new(None),
            events,
            tracked: HashMap::new(),
            by_pid: HashMap::new(),
            next_key: 1,
            exited: Vec::new(),
            reaps_pending: 0,
        })
    }

    /// The epoll set holding `events` and a deadline timerfd, registered with tokio.
    fn epoll_set(cg: &Cgroup, events: &EventsFile) -> Result<(AsyncFd<OwnedFd>, OwnedFd)> {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| Error::os("epoll_create for", cg.path(), e))?;
        epoll::add(
            &ep,
            events.as_fd(),
            epoll::EventData::new_u64(EVENTS_KEY),
            epoll::EventFlags::PRI,
        )
        .map_err(|e| Error::os("epoll_ctl add", cg.path(), e))?;
        let timer = rustix::time::timerfd_create(
            rustix::time::TimerfdClockId::Monotonic,
            rustix::time::TimerfdFlags::CLOEXEC | rustix::time::TimerfdFlags::NONBLOCK,
        )
        .map_err(|e| Error::os("timerfd_create for", cg.path(), e))?;
        epoll::add(
            &ep,
            timer.as_fd(),
            epoll::EventData::new_u64(TIMER_KEY),
            epoll::EventFlags::IN,
        )
        .map_err(|e| Error::os("epoll_ctl add timerfd", cg.path(), e))?;
        let epoll = crate::sys::async_readable(ep).map_err(|e| {
            Error::os(
                "register epoll with tokio for",
                cg.path(),
                crate::cgroup::errno_of(&e),
            )
        })?;
        Ok((epoll, timer))
    }

    /// Why this watcher is blind (see the module docs), if it is.
    pub fn blind(&self) -> Option<&str> {
        self.blind.as_deref()
    }

    /// Reads `cgroup.events` now (this also re-arms the priority notification).
    ///
    /// # Errors
    /// An OS error naming the file.
    pub fn state(&self) -> Result<Events> {
        self.events.read()
    }

    /// Adds a pidfd to wake on. One whose process has already exited is reported by the next
    /// drain, as any exit.
    ///
    /// # Errors
    /// `epoll_ctl` failing (out of memory or descriptors).
    pub fn track(&mut self, pidfd: PidFd) -> Result<()> {
        let key = self.next_key;
        self.next_key += 1;
        if let Some((ep, _)) = &self.epoll {
            epoll::add(
                ep.get_ref(),
                pidfd.as_fd(),
                epoll::EventData::new_u64(key),
                epoll::EventFlags::IN,
            )
            .map_err(|e| {
                Error::os(
                    "epoll_ctl add pidfd of",
                    std::path::Path::new(&format!("/proc/{}", pidfd.pid())),
                    e,
                )
            })?;
        }
        if let Some(old) = self.by_pid.insert(pidfd.pid(), key) {
            self.tracked.remove(&old);
        }
        self.tracked.insert(key, pidfd);
        Ok(())
    }

    /// The tracked pidfd for `pid`, unless its exit was seen by the last [`Watcher::refresh`].
    /// Costs no system call.
    ///
    /// Call [`Watcher::refresh`] *after* reading a pid list and before asking: a pidfd still held
    /// then belonged to a process alive after the list was read, so the listed pid named that
    /// process (a pid is recycled only once its process has been reaped, and the exit reaches
    /// epoll before the process can be reaped).
    pub fn held(&self, pid: i32) -> Option<&PidFd> {
        let p = self.tracked.get(self.by_pid.get(&pid)?)?;
        // Blind, the listing's refresh is skipped (see [`Watcher::refresh_listing`]): this one
        // pidfd is asked, one poll.
        if self.epoll.is_none() && p.has_exited() {
            return None;
        }
        Some(p)
    }

    /// [`Watcher::refresh`] after reading a list, so that [`Watcher::held`] answers for the
    /// present. Blind, nothing: `held` then asks the one pidfd itself, so a pass does not poll
    /// every held pidfd at every cgroup it visits.
    ///
    /// # Errors
    /// `epoll_wait` failing.
    pub fn refresh_listing(&mut self) -> Result<()> {
        if self.epoll.is_none() {
            return Ok(());
        }
        self.refresh()
    }

    /// Forgets every tracked process whose exit epoll has reported (one `epoll_wait` per 64
    /// exits), so that [`Watcher::held`] answers for the present.
    ///
    /// # Errors
    /// `epoll_wait` failing.
    pub fn refresh(&mut self) -> Result<()> {
        self.drain().map(drop)
    }

    /// Closes tracked pidfds until at most `keep` remain (out of descriptors: waking on them is
    /// only an optimization; `cgroup.events` still reports emptiness). The pidfds kept for exit
    /// statuses go first: those exits are then missing from the timeline.
    pub fn shed(&mut self, keep: usize) {
        self.exited.clear();
        let extra: Vec<u64> = self
            .tracked
            .keys()
            .copied()
            .take(self.tracked.len().saturating_sub(keep))
            .collect();
        for key in extra {
            self.forget(key);
        }
    }

    /// All tracked pidfds (some may have exited since the last wake).
    pub fn tracked(&self) -> impl Iterator<Item = &PidFd> {
        self.tracked.values()
    }

    /// The tracked processes seen to exit, whose pidfds are kept for their exit statuses.
    pub fn exited(&self) -> impl Iterator<Item = &PidFd> {
        self.exited.iter().map(|(p, _)| p)
    }

    /// How many tracked processes have not been seen to exit.
    pub fn tracked_count(&self) -> usize {
        self.tracked.len()
    }

    /// The tracked process behind `key` exited: stop tracking it, and keep its pidfd (while
    /// there is room) to read its exit status for the report.
    fn exit_seen(&mut self, key: u64) {
        if let Some(p) = self.tracked.remove(&key) {
            if self.by_pid.get(&p.pid()) == Some(&key) {
                self.by_pid.remove(&p.pid());
            }
            // Out of the epoll set, since it stays open: an exited pidfd stays readable and
            // would wake every level-triggered wait at once.
            if let Some((ep, _)) = &self.epoll {
                let _ = epoll::delete(ep.get_ref(), p.as_fd());
            }
            if self.exited.len() >= MAX_EXITS {
                // Full: the first ones and always the latest (which says how the task ended;
                // the Thermos integration records its status), so the newest replaces the last.
                self.exited.pop();
            }
            self.exited.push((p, Instant::now()));
        }
    }

    /// The exits seen so far, in order, with when each was seen; empties the list.
    pub fn take_exits(&mut self) -> Vec<(PidFd, Instant)> {
        self.reaps_pending = 0;
        std::mem::take(&mut self.exited)
    }

    /// Waits, until `until` at the latest, for the kept exits' processes to be reaped by their
    /// parents, so their exit statuses can be read (pidfs keeps the status only from the reap
    /// on). Event-driven: a pidfd reports `EPOLLHUP` once its process is reaped. Does nothing on
    /// kernels without `PIDFD_INFO_EXIT` (before 6.15), where there is no status to wait for.
    ///
    /// `patient`: one process (by tgid) whose reap is waited for until a later instant (the
    /// main process, whose status users read, reaped by its supervisor, which a loaded machine
    /// can delay).
    ///
    /// # Errors
    /// `epoll_ctl`, `epoll_wait` or the timer failing.
    pub async fn wait_reaped(
        &mut self,
        until: Instant,
        patient: Option<(i32, Instant)>,
    ) -> Result<()> {
        // Blind: no watch to wait on the reaps with (the statuses taken are reported).
        let Some((ep, _)) = &self.epoll else {
            return Ok(());
        };
        if !exit_info_supported() {
            return Ok(());
        }
        let os = |e| {
            Error::os(
                "epoll_ctl add exited pidfd",
                std::path::Path::new("/proc"),
                e,
            )
        };
        for (i, (p, _)) in self.exited.iter().enumerate() {
            if crate::sys::pidfd_exit_status(p.as_fd()).is_some() {
                continue;
            }
            // No event flags: only EPOLLHUP (the reap) and EPOLLERR are reported.
            epoll::add(
                ep.get_ref(),
                p.as_fd(),
                epoll::EventData::new_u64(REAP_BIT | i as u64),
                epoll::EventFlags::empty(),
            )
            .map_err(os)?;
            self.reaps_pending += 1;
        }
        if self.reaps_pending == 0 {
            return Ok(());
        }
        self.arm(until)?;
        let mut extended = false;
        loop {
            self.drain()?;
            if self.reaps_pending == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= until {
                match patient {
                    Some((pid, later)) if now < later && self.unreaped(pid) => {
                        if !extended {
                            extended = true;
                            self.arm(later)?;
                        }
                    }
                    _ => return Ok(()),
                }
            }
            self.next_event().await?;
        }
    }

    /// Has `tgid` exited (among the kept exits) without being reaped yet?
    fn unreaped(&self, tgid: i32) -> bool {
        self.exited
            .iter()
            .any(|(p, _)| p.tgid() == tgid && crate::sys::pidfd_exit_status(p.as_fd()).is_none())
    }

    /// Waits until something in the epoll set is ready (one wakeup per event: tokio's
    /// readiness is cleared only when nothing is left to drain). Blind: one tick.
    async fn next_event(&self) -> Result<()> {
        let os = |e| Error::os("wait on", std::path::Path::new("cgroup.events"), e);
        let Some((ep, _)) = &self.epoll else {
            // Blind: the next look is one tick away (or at the deadline), on tokio's timer.
            let next = Instant::now() + BLIND_TICK;
            let until = self.deadline.get().map_or(next, |d| d.min(next));
            tokio::time::sleep_until(until).await;
            return Ok(());
        };
        let mut guard = ep
            .readable()
            .await
            .map_err(|e| os(crate::cgroup::errno_of(&e)))?;
        if !self.drain_peek()? {
            guard.clear_ready();
        }
        Ok(())
    }

    fn forget(&mut self, key: u64) {
        // Dropping the pidfd closes the only descriptor of its file, which removes it from the
        // epoll set: no EPOLL_CTL_DEL needed (one system call per process saved).
        if let Some(p) = self.tracked.remove(&key)
            && self.by_pid.get(&p.pid()) == Some(&key)
        {
            self.by_pid.remove(&p.pid());
        }
    }

    /// Fills `buf` (up to its capacity) with what is ready now, without blocking.
    fn ready_now(&self, buf: &mut Vec<epoll::Event>) -> Result<()> {
        buf.clear();
        let Some((ep, _)) = &self.epoll else {
            return Ok(());
        };
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            match epoll::wait(
                ep.get_ref(),
                rustix::buffer::spare_capacity(&mut *buf),
                Some(&zero),
            ) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(Error::os(
                        "epoll_wait",
                        std::path::Path::new("cgroup.events"),
                        e,
                    ));
                }
            }
        }
    }

    /// Drains ready epoll events without blocking; forgets exited pidfds. Returns whether
    /// anything was ready.
    fn drain(&mut self) -> Result<bool> {
        if self.epoll.is_none() {
            return self.drain_blind();
        }
        let mut buf = Vec::with_capacity(64);
        let mut any = false;
        loop {
            self.ready_now(&mut buf)?;
            any |= !buf.is_empty();
            for ev in &buf {
                match ev.data.u64() {
                    EVENTS_KEY => {}
                    TIMER_KEY => {
                        // Consume the expiration so the (level-triggered) timer reads idle.
                        let mut n = [0u8; 8];
                        if let Some((_, timer)) = &self.epoll {
                            let _ = rustix::io::read(timer, &mut n);
                        }
                    }
                    key if key & REAP_BIT != 0 => {
                        // Reaped: out of the set, or its HUP would wake every wait.
                        let i = usize::try_from(key & !REAP_BIT).unwrap_or(usize::MAX);
                        if let (Some((p, _)), Some((ep, _))) = (self.exited.get(i), &self.epoll) {
                            let _ = epoll::delete(ep.get_ref(), p.as_fd());
                            self.reaps_pending = self.reaps_pending.saturating_sub(1);
                        }
                    }
                    key => self.exit_seen(key),
                }
            }
            if buf.len() < buf.capacity() {
                return Ok(any);
            }
        }
    }

    /// Blind: the held pidfds that have exited, found by one `poll(2)` of them all (a pidfd is
    /// readable once its process has exited). Returns whether any had.
    ///
    /// # Errors
    /// `poll(2)` failing.
    fn drain_blind(&mut self) -> Result<bool> {
        let keys: Vec<u64> = self.tracked.keys().copied().collect();
        let gone: Vec<u64> = {
            let mut fds: Vec<rustix::event::PollFd<'_>> = keys
                .iter()
                .map(|k| rustix::event::PollFd::new(&self.tracked[k], rustix::event::PollFlags::IN))
                .collect();
            // Failing (out of memory), the held pidfds cannot be told alive: as for a failed
            // epoll_wait, the caller learns it.
            if let Err(e) = poll_now(&mut fds) {
                return Err(Error::os(
                    "poll the pidfds held for",
                    std::path::Path::new("cgroup.events"),
                    e,
                ));
            }
            keys.iter()
                .zip(&fds)
                .filter(|(_, f)| !f.revents().is_empty())
                .map(|(&k, _)| k)
                .collect()
        };
        for &k in &gone {
            self.exit_seen(k);
        }
        Ok(!gone.is_empty())
    }

    /// Waits until the cgroup is empty or `deadline` passes. With `stop_when_tracked_gone`, also
    /// returns [`Wake::TrackedGone`] once every tracked process has exited.
    /// `on_wake` runs after each wakeup that did not end the wait (for progress display).
    ///
    /// # Errors
    /// Reading `cgroup.events` or epoll failing.
    pub async fn wait_empty(
        &mut self,
        deadline: Instant,
        stop_when_tracked_gone: bool,
        mut on_wake: impl FnMut(&Watcher),
    ) -> Result<Wake> {
        self.wait_for(
            deadline,
            stop_when_tracked_gone,
            |ev| (!ev.populated).then_some(Wake::Empty),
            &mut on_wake,
        )
        .await
    }

    /// Waits for `frozen 1` (after writing `cgroup.freeze`), emptiness, or the deadline.
    ///
    /// # Errors
    /// Reading `cgroup.events` or epoll failing.
    pub async fn wait_frozen(&mut self, deadline: Instant) -> Result<Wake> {
        self.wait_for(
            deadline,
            false,
            |ev| {
                if !ev.populated {
                    Some(Wake::Empty)
                } else if ev.frozen {
                    Some(Wake::Frozen)
                } else {
                    None
                }
            },
            &mut |_| {},
        )
        .await
    }

    async fn wait_for(
        &mut self,
        deadline: Instant,
        stop_when_tracked_gone: bool,
        done: impl Fn(Events) -> Option<Wake>,
        on_wake: &mut dyn FnMut(&Watcher),
    ) -> Result<Wake> {
        self.arm(deadline)?;
        loop {
            // Drain first so exited pidfds are forgotten (and an expired timer consumed), then
            // read the file: its state is at least as new as every event drained.
            self.drain()?;
            if let Some(w) = done(self.events.read()?) {
                return Ok(w);
            }
            if Instant::now() >= deadline {
                return Ok(Wake::Deadline);
            }
            if stop_when_tracked_gone && self.tracked.is_empty() {
                return Ok(Wake::TrackedGone);
            }
            on_wake(self);
            self.next_event().await?;
        }
    }

    /// Arms the timerfd for `deadline` (absolute, `CLOCK_MONOTONIC`, which `Instant` is).
    fn arm(&self, deadline: Instant) -> Result<()> {
        self.deadline.set(Some(deadline));
        let Some((_, timer)) = &self.epoll else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        // A Duration is at most ~1.8e28 ns: it always fits in an i128.
        let left_ns = i128::try_from(left.as_nanos()).unwrap_or(i128::MAX / 2);
        let total_ns = i128::from(now.tv_nsec) + left_ns.min(i128::MAX / 2);
        let secs = i128::from(now.tv_sec) + total_ns / 1_000_000_000;
        let value = rustix::time::Timespec {
            tv_sec: i64::try_from(secs).unwrap_or(i64::MAX),
            tv_nsec: (total_ns % 1_000_000_000) as i64,
        };
        let spec = rustix::time::Itimerspec {
            it_interval: rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            // A zero value would disarm: a deadline at the clock's epoch is in the past anyway.
            it_value: if value.tv_sec == 0 && value.tv_nsec == 0 {
                rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 1,
                }
            } else {
                value
            },
        };
        rustix::time::timerfd_settime(timer, rustix::time::TimerfdTimerFlags::ABSTIME, &spec)
            .map(drop)
            .map_err(|e| Error::os("timerfd_settime", std::path::Path::new("cgroup.events"), e))
    }

    /// Is anything ready in the epoll set right now? (Does not consume pidfd events: level
    /// triggered, they are drained at the top of the loop.)
    fn drain_peek(&self) -> Result<bool> {
        let mut buf = Vec::with_capacity(1);
        self.ready_now(&mut buf)?;
        Ok(!buf.is_empty())
    }
}

thread_local! {
    /// Set while a stop runs on a runtime built without its I/O driver (see
    /// [`crate::stop::StopRuntime`]): why. Its watchers are blind.
    static NO_IO_RUNTIME: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's watchers blind for `why` (the runtime it drives has no I/O
/// driver, so nothing can be registered with tokio).
pub(crate) fn without_io<T>(why: String, f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            NO_IO_RUNTIME.set(None);
        }
    }
    NO_IO_RUNTIME.set(Some(why));
    let _reset = Reset;
    f()
}

/// Why the runtime this thread drives has no I/O driver, if it has none (see [`without_io`]).
pub(crate) fn runtime_without_io() -> Option<String> {
    NO_IO_RUNTIME.with_borrow(Clone::clone)
}

/// `poll(2)` of `fds` without waiting. Asked again when a signal interrupts it: a zero
/// timeout does not keep poll from `EINTR`, and the stopper's own SIGINT or SIGTERM, noted by
/// its handler to cut the grace short, must not end the stop as a failed event loop would.
pub(crate) fn poll_now(fds: &mut [rustix::event::PollFd<'_>]) -> std::result::Result<(), Errno> {
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match rustix::event::poll(fds, Some(&zero)) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Is `e` a shortage of epoll watches, memory or descriptors (the reasons for a blind watcher)?
fn is_shortage(e: &Error) -> bool {
    matches!(
        e,
        Error::Os {
            errno: rustix::io::Errno::NOSPC
                | rustix::io::Errno::NOMEM
                | rustix::io::Errno::MFILE
                | rustix::io::Errno::NFILE,
            ..
        }
    )
}

/// Does this kernel keep exit statuses for pidfds (`PIDFD_INFO_EXIT`, Linux 6.15)? Decided by
/// the release number once: the ioctl cannot be probed without a reaped process at hand.
fn exit_info_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let uname = rustix::system::uname();
        let release = uname.release().to_string_lossy();
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) >= (6, 15)
    })
}

/// A deadline `d` from now, saturating far in the future.
pub fn deadline_after(d: Duration) -> Instant {
    Instant::now()
        .checked_add(d)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365))
}
