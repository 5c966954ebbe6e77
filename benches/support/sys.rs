//! The harness's raw system calls: fork and signal plumbing for the helper processes, reaping
//! with resource usage, and the plain `kill(2)` the kernel-floor contender uses. Everything the
//! bench needs that rustix does not offer safely lives here, each block with a SAFETY comment.
#![allow(unsafe_code)]

use std::io;
use std::time::Duration;

/// `fork(2)`. `Ok(None)` in the child, `Ok(Some(pid))` in the parent.
///
/// Only called from the helper process, which never starts a thread, so the child inherits no
/// lock held by another thread.
pub fn fork() -> io::Result<Option<i32>> {
    // SAFETY: the calling process is single-threaded (the helper never spawns threads), so the
    // child's copy of the address space is consistent; the child only calls async-signal-safe
    // functions or plain Rust code that takes no lock another thread could hold.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// Ends the calling process at once, without running destructors or atexit handlers (what a
/// forked child must do).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Sets SIGTERM to be ignored (inherited across fork and exec).
pub fn ignore_sigterm() {
    // SAFETY: installs the SIG_IGN disposition; no handler code runs in this process.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
}

/// Blocks SIGTERM so that [`wait_sigterm`] can take it synchronously.
pub fn block_sigterm() {
    // SAFETY: `set` is a valid, initialised sigset on the stack; the old mask is not needed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for a (blocked) SIGTERM.
pub fn wait_sigterm() {
    // SAFETY: `set` is a valid sigset holding SIGTERM, which the caller blocked; `sig` is a
    // valid out-pointer for the call.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut sig = 0;
        while libc::sigwait(&set, &mut sig) != 0 {}
    }
}

/// Sleeps until a signal arrives, forever (a process with nothing to do but be stopped).
pub fn pause_forever() -> ! {
    loop {
        // SAFETY: `pause` takes no arguments and only returns after a signal handler ran.
        unsafe {
            libc::pause();
        }
    }
}

/// Makes this process the reaper of orphaned descendants (`PR_SET_CHILD_SUBREAPER`). This
/// machine's PID 1 does not reap orphans; without this, every helper's children would stay
/// zombies for good.
pub fn become_subreaper() -> io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(io::Error::from)
}

/// Children reaped by the [`start_reaper`] thread and not yet claimed by [`wait_child`]:
/// pid -> (exit code, usage).
type Reaped = std::collections::HashMap<i32, (i32, Usage)>;

static REAPED: std::sync::Mutex<Option<Reaped>> = std::sync::Mutex::new(None);
static REAPED_CHANGED: std::sync::Condvar = std::sync::Condvar::new();

/// Makes this process reap like a real init or supervisor: a thread reaps every child and
/// orphan the moment it exits (woken by SIGCHLD, which every thread of the bench blocks), and
/// keeps each one's exit code and usage for [`wait_child`]. Without it the tasks' orphans stay
/// zombies while a stopper runs, and a stopper that waits for its task's exits to be reaped (to
/// report their statuses) measures the harness instead. Call once, first thing, before any
/// other thread exists: threads inherit the blocked mask (spawned programs do not: the
/// standard library resets it in the child).
pub fn start_reaper() -> io::Result<()> {
    // SAFETY: `set` is a valid, initialised sigset on the stack; the old mask is not needed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    *REAPED.lock().expect("reaper lock") = Some(Reaped::new());
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(|| {
            loop {
                reap_ready();
                // SAFETY: `set` is a valid sigset holding SIGCHLD, blocked in every thread.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGCHLD);
                    let mut sig = 0;
                    libc::sigwait(&set, &mut sig);
                }
            }
        })?;
    Ok(())
}

/// Reaps every child that has exited, without blocking, into [`REAPED`].
fn reap_ready() {
    loop {
        let mut status = 0;
        // SAFETY: `status` and `ru` are valid writable locations for the duration of the call.
        let (pid, ru) = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            let pid = libc::wait4(-1, &mut status, libc::WNOHANG, &mut ru);
            (pid, ru)
        };
        if pid <= 0 {
            return;
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        if let Some(map) = REAPED.lock().expect("reaper lock").as_mut() {
            map.insert(pid, (code, usage_of(&ru)));
        }
        REAPED_CHANGED.notify_all();
    }
}

/// Forgets the exit of every child nobody claimed (orphans of the tasks); returns how many.
/// Called between rounds, when the harness waits for no child by pid.
pub fn reap_all_nohang() -> usize {
    REAPED
        .lock()
        .expect("reaper lock")
        .as_mut()
        .map_or(0, |m| m.drain().count())
}

/// Resource usage as `getrusage(2)`/`wait4(2)` report it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User + system CPU time.
    pub cpu: Duration,
    /// Voluntary context switches (each blocking wait that slept).
    pub nvcsw: i64,
    /// Involuntary context switches.
    pub nivcsw: i64,
    /// Peak resident set size, KiB.
    pub maxrss_kib: i64,
}

fn usage_of(ru: &libc::rusage) -> Usage {
    // rusage times are never negative, and tv_usec is below 1,000,000.
    let tv = |t: libc::timeval| {
        Duration::new(
            t.tv_sec.unsigned_abs(),
            u32::try_from(t.tv_usec).unwrap_or(0) * 1000,
        )
    };
    Usage {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        nvcsw: ru.ru_nvcsw,
        nivcsw: ru.ru_nivcsw,
        maxrss_kib: ru.ru_maxrss,
    }
}

/// `getrusage(RUSAGE_SELF)`.
pub fn usage_self() -> Usage {
    // SAFETY: `ru` is a valid, writable rusage; the kernel fills it and keeps no pointer.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        usage_of(&ru)
    }
}

/// `getrusage(RUSAGE_THREAD)`: the calling thread alone.
pub fn usage_thread() -> Usage {
    // SAFETY: as in `usage_self`.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        usage_of(&ru)
    }
}

/// Waits for the child `pid` to exit, up to `limit`: its exit code (128+signal if killed) and
/// usage, as the [`start_reaper`] thread reaped it.
pub fn wait_child_for(pid: i32, limit: Duration) -> io::Result<(i32, Usage)> {
    let until = std::time::Instant::now() + limit;
    let mut map = REAPED.lock().expect("reaper lock");
    loop {
        let Some(m) = map.as_mut() else {
            return Err(io::Error::other("the reaper thread is not running"));
        };
        if let Some(r) = m.remove(&pid) {
            return Ok(r);
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("child {pid} did not exit"),
            ));
        }
        map = REAPED_CHANGED
            .wait_timeout(map, left)
            .expect("reaper lock")
            .0;
    }
}

/// The voluntary context switches (wakeups after a blocking wait) of process `pid` so far,
/// summed over its threads (`/proc/<pid>/task/*/status`); `None` once it is gone. Threads that
/// have already exited are not counted, so compare two samples taken while no thread ends.
pub fn voluntary_switches(pid: i32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0;
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        sum += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(sum)
}

/// [`wait_child_for`] with no practical limit.
pub fn wait_child(pid: i32) -> io::Result<(i32, Usage)> {
    wait_child_for(pid, Duration::from_secs(3600))
}

/// Plain `kill(2)`, for the kernel-floor contender only (see `contenders::floor` for why it is
/// safe there: every pid it signals is alive until that very signal).
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    if unsafe { libc::kill(pid, sig) } == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Set when SIGINT or SIGTERM reaches the bench: it stops between rounds and cleans up.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Routes SIGINT/SIGTERM to [`INTERRUPTED`] so Ctrl-C still removes every cgroup.
pub fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe. SA_RESTART keeps
    // blocking reads going; the flag is checked between rounds.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_interrupt as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

/// The CLOCK_MONOTONIC time in nanoseconds (the clock `std::time::Instant` uses on Linux),
/// comparable across processes.
pub fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // The monotonic clock is never negative.
    t.tv_sec.unsigned_abs() * 1_000_000_000 + t.tv_nsec.unsigned_abs()
}

/// Waits until the process behind `pidfd` exits (its pidfd turns readable), up to `limit`;
/// returns [`mono_ns`] at that moment.
pub fn wait_exit_ns(pidfd: &std::os::fd::OwnedFd, limit: Duration) -> Option<u64> {
    use rustix::event::{PollFd, PollFlags};
    let ts = rustix::time::Timespec {
        tv_sec: i64::try_from(limit.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    match rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(n) if n > 0 => Some(mono_ns()),
        _ => None,
    }
}
