//! The only file with `unsafe`: the few kernel interfaces rustix does not wrap.
//!
//! Each function is a thin, typed wrapper; callers above this file never see a raw pointer.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::io::Errno;

use crate::policy::Signal;

/// Converts our validated signal into rustix's, including realtime signals, which rustix's
/// checked constructors refuse.
pub fn to_rustix_signal(sig: Signal) -> rustix::process::Signal {
    // SAFETY: `Signal` only holds 1..=31 or SIGRTMIN(34)..=64 (checked in `Signal::from_raw`),
    // all valid non-zero signal numbers. 32 and 33, which the C library reserves, are excluded.
    // The value is only ever used to *send* a signal to another process through a pidfd, never
    // to block, consume or handle one in this process.
    unsafe { rustix::process::Signal::from_raw_unchecked(sig.as_raw()) }
}

/// `struct pidfd_info`, the 64-byte first version (`PIDFD_INFO_SIZE_VER0`, Linux 6.13).
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

const PIDFD_INFO_PID: u64 = 1 << 0;
/// `1 << 1` is `PIDFD_INFO_CREDS`, always returned: testing it instead of this bit would take a
/// missing cgroup id (a task without a v2 cgroup) for cgroup id 0.
const PIDFD_INFO_CGROUPID: u64 = 1 << 2;
/// Linux 6.15: the exit status, kept by pidfs once the task has been **reaped**.
const PIDFD_INFO_EXIT: u64 = 1 << 3;
/// `_IOWR(PIDFS_IOCTL_MAGIC = 0xFF, 11, struct pidfd_info)`.
const PIDFD_GET_INFO: u64 =
    (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as u64) << 16) | (0xFF << 8) | 11;

/// What `ioctl(PIDFD_GET_INFO)` (Linux 6.13) says about the task behind a pidfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PidfdFacts {
    /// The cgroup v2 id (the cgroup directory's inode) of that task, if reported.
    pub cgroup_id: Option<u64>,
    /// Its thread-group id (the process's pid), if reported.
    pub tgid: Option<i32>,
}

/// Asks the kernel about the task behind a pidfd: its cgroup id and thread-group id, from
/// `ioctl(PIDFD_GET_INFO)` (Linux 6.13). For a thread pidfd (`PIDFD_THREAD`) the cgroup is the
/// thread's own.
///
/// # Errors
/// `ESRCH` when the task has exited; `ENOTTY`/`EINVAL` on kernels without the ioctl.
pub fn pidfd_facts(pidfd: BorrowedFd<'_>) -> Result<PidfdFacts, Errno> {
    let info = pidfd_get_info(pidfd, PIDFD_INFO_PID | PIDFD_INFO_CGROUPID)?;
    Ok(PidfdFacts {
        cgroup_id: (info.mask & PIDFD_INFO_CGROUPID != 0).then_some(info.cgroupid),
        tgid: (info.mask & PIDFD_INFO_PID != 0)
            .then(|| i32::try_from(info.tgid).ok())
            .flatten(),
    })
}

/// The wait status (as `waitpid(2)` would give it: `WIFEXITED`, `WTERMSIG`, ...) of the process
/// behind `pidfd`, from `ioctl(PIDFD_GET_INFO)` with `PIDFD_INFO_EXIT` (Linux 6.15).
///
/// `None` while the process is alive or a zombie (pidfs records the status when the process is
/// reaped by its parent), and on kernels without `PIDFD_INFO_EXIT` (6.13, 6.14 answer `ESRCH`
/// once it is reaped; older ones have no ioctl).
pub fn pidfd_exit_status(pidfd: BorrowedFd<'_>) -> Option<i32> {
    pidfd_get_info(pidfd, PIDFD_INFO_EXIT)
        .ok()
        .filter(|info| info.mask & PIDFD_INFO_EXIT != 0)
        .map(|info| info.exit_code)
}

/// `ioctl(pidfd, PIDFD_GET_INFO)` asking for `mask`; the kernel says in the returned mask what
/// it filled in.
fn pidfd_get_info(pidfd: BorrowedFd<'_>, mask: u64) -> Result<PidfdInfo, Errno> {
    let mut info = PidfdInfo {
        mask,
        ..PidfdInfo::default()
    };
    // SAFETY: `info` is a valid, writable, properly aligned `struct pidfd_info` of exactly the
    // size encoded in the request number; the kernel writes at most that many bytes and keeps no
    // pointer after the call returns. `pidfd` is a live descriptor borrowed for the call.
    let rc = unsafe {
        libc::ioctl(
            pidfd.as_raw_fd(),
            PIDFD_GET_INFO as _,
            &mut info as *mut PidfdInfo,
        )
    };
    if rc < 0 { Err(last_errno()) } else { Ok(info) }
}

/// The cgroup v2 id of the task behind a pidfd (see [`pidfd_facts`]).
///
/// # Errors
/// As [`pidfd_facts`].
pub fn pidfd_cgroup_id(pidfd: BorrowedFd<'_>) -> Result<Option<u64>, Errno> {
    pidfd_facts(pidfd).map(|f| f.cgroup_id)
}

/// The errno of the call that just failed (`EIO` if it left none: rustix has no `Errno` 0).
fn last_errno() -> Errno {
    Errno::from_raw_os_error(
        std::io::Error::last_os_error()
            .raw_os_error()
            .filter(|&e| e > 0)
            .unwrap_or(libc::EIO),
    )
}

/// `PIDFD_SIGNAL_THREAD_GROUP` (Linux 6.9): deliver to the thread group of the pidfd's task.
const PIDFD_SIGNAL_THREAD_GROUP: libc::c_uint = 1 << 1;

/// `pidfd_send_signal(pidfd, sig, NULL, PIDFD_SIGNAL_THREAD_GROUP)` (Linux 6.9): signals the
/// whole process of the thread behind a thread pidfd (`PIDFD_THREAD`).
///
/// # Errors
/// `ESRCH` when gone, `EPERM`, `EINVAL` on kernels before 6.9.
pub fn pidfd_signal_thread_group(pidfd: BorrowedFd<'_>, sig: Signal) -> Result<(), Errno> {
    // SAFETY: plain syscall: a borrowed live descriptor, a signal number validated by `Signal`
    // (1-31 or 34-64), a NULL siginfo (the kernel fills in a default one), and a flags word.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig.as_raw(),
            std::ptr::null::<libc::siginfo_t>(),
            PIDFD_SIGNAL_THREAD_GROUP,
        )
    };
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

/// `pidfd_send_signal(pidfd, 0, NULL, 0)` (Linux 5.1): sends nothing, and fails with `ESRCH`
/// only once the process (or thread) is gone for good: a zombie not yet reaped still answers.
///
/// # Errors
/// `ESRCH` once reaped, `EPERM` (it exists, and may not be signalled).
pub fn pidfd_probe(pidfd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: plain syscall: a borrowed live descriptor, signal 0 (permission and existence
    // check only, nothing is delivered), a NULL siginfo and a zero flags word.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

/// `process_mrelease(pidfd, 0)` (Linux 5.15): reap a dying process's memory now instead of
/// waiting for its exit path.
///
/// # Errors
/// `EINVAL` when the process is not dying, `ENOSYS` on older kernels, `ESRCH` when gone.
pub fn process_mrelease(pidfd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: plain syscall with an integer fd (borrowed, live for the call) and a zero flags
    // word; no memory is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_process_mrelease,
            pidfd.as_raw_fd(),
            0 as libc::c_uint,
        )
    };
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

/// Makes the child join a cgroup between `fork` and `exec`, by writing `0` ("the calling
/// process") to the already-open `cgroup.procs` of the target. The child therefore runs no
/// instruction of the command outside the cgroup, and everything it forks is inside.
///
/// `procs` must stay open until `spawn` returns.
pub fn join_cgroup_before_exec<F: AsFd>(cmd: &mut Command, procs: &F) {
    let raw = procs.as_fd().as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec. It calls only `write(2)`, which
    // is async-signal-safe, on a descriptor the parent keeps open across `spawn` (the caller's
    // contract), with a static buffer; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            let buf = b"0";
            if libc::write(raw, buf.as_ptr().cast(), 1) == 1 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Registers an owned descriptor with the current tokio reactor for readability.
///
/// # Errors
/// The reactor refusing the descriptor.
pub fn async_readable(
    fd: std::os::fd::OwnedFd,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: `OwnedFd` owns a valid open descriptor and closes it only on drop, which happens
    // when the `AsyncFd` (its sole owner) is dropped; `as_raw_fd` always returns that descriptor.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Is `sig`'s disposition in this process `SIG_IGN` (inherited through exec, as `nohup` leaves
/// SIGHUP)? Reads the disposition without changing it.
pub fn signal_is_ignored(sig: i32) -> bool {
    // SAFETY: `sigaction` with a NULL new action only reads the current one into `old`, a
    // zeroed, properly aligned `struct sigaction` owned by this frame.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Puts `sig` back to its default action (`SIG_DFL`) unless it is ignored, which is left as is.
pub fn default_unless_ignored(sig: i32) {
    if signal_is_ignored(sig) {
        return;
    }
    // SAFETY: `sigaction` installs a zeroed `struct sigaction` owned by this frame whose handler
    // is SIG_DFL (empty mask, no flags); the old one is not asked for.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &new, std::ptr::null_mut());
    }
}

/// The signals caught by [`note_on_signal`]'s handler and not yet taken: bit `n` for signal `n`.
static NOTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn note_signal(sig: libc::c_int) {
    // Async-signal-safe: one atomic read-modify-write, no allocation, no lock.
    if let Ok(bit) = u32::try_from(sig)
        && bit < 64
    {
        NOTED.fetch_or(1 << bit, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Installs a handler for `sig` (below 64) that only notes its arrival, for
/// [`take_noted`]: signal handling that needs no file descriptor, no thread and no event loop.
///
/// # Errors
/// `sigaction` refused it (`EINVAL` for a signal that cannot be caught).
pub fn note_on_signal(sig: i32) -> Result<(), Errno> {
    // SAFETY: `sigaction` installs a `struct sigaction` owned by this frame, zeroed then given a
    // handler that only touches an atomic (async-signal-safe), an empty mask and SA_RESTART, so
    // that interrupted system calls of other code resume instead of failing with EINTR.
    let rc = unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = note_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        new.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut new.sa_mask);
        libc::sigaction(sig, &new, std::ptr::null_mut())
    };
    if rc == 0 { Ok(()) } else { Err(last_errno()) }
}

/// Forgets the signals in `mask` noted so far (by an earlier listener of the same process).
pub fn forget_noted(mask: u64) {
    NOTED.fetch_and(!mask, std::sync::atomic::Ordering::SeqCst);
}

/// Takes one signal noted and not yet taken among those in `mask` (bit `n` for signal `n`),
/// the lowest; the others stay noted. A signal that arrived twice meanwhile is taken once, as
/// the kernel merges a standard signal that is already pending.
pub fn take_noted(mask: u64) -> Option<i32> {
    use std::sync::atomic::Ordering::SeqCst;
    let mut cur = NOTED.load(SeqCst);
    loop {
        let hit = cur & mask;
        if hit == 0 {
            return None;
        }
        let lowest = hit & hit.wrapping_neg();
        match NOTED.compare_exchange(cur, cur & !lowest, SeqCst, SeqCst) {
            Ok(_) => return i32::try_from(lowest.trailing_zeros()).ok(),
            Err(now) => cur = now,
        }
    }
}

/// Blocks SIGTTOU on the calling thread, for good (see
/// [`crate::interrupts::never_stopped_by_terminal_writes`]).
pub fn block_sigttou_here() {
    let ttou = sigttou_only();
    // SAFETY: pthread_sigmask changes only this thread's mask, from a set owned by this frame.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &ttou, std::ptr::null_mut());
    }
}

/// The signal set holding SIGTTOU alone.
fn sigttou_only() -> libc::sigset_t {
    // SAFETY: sigset operations on a local, zero-initialized set.
    unsafe {
        let mut ttou: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut ttou);
        libc::sigaddset(&mut ttou, libc::SIGTTOU);
        ttou
    }
}

/// Job control for a foreground `run`, between fork and exec in the child: a process group of
/// its own (`setpgid(0, 0)`) made the terminal's foreground group (`tcsetpgrp`), as a shell does
/// for a job. Ctrl-C, Ctrl-\ and Ctrl-Z then reach the job alone, once each. The parent does the
/// same two calls after `spawn` (whichever runs first wins; both are idempotent).
pub fn foreground_job_before_exec(cmd: &mut Command, tty: BorrowedFd<'_>) {
    let tty = tty.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (setpgid, sigemptyset/sigaddset on a local set, sigprocmask, tcsetpgrp, getpid)
    // on its own stack; it allocates nothing and takes no locks. `tty` stays open across spawn
    // (it is the caller's stdin). SIGTTOU is blocked around tcsetpgrp (a background process
    // calling it would be stopped) and the previous mask restored, so exec inherits the mask
    // `run` had.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut ttou: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut ttou);
            libc::sigaddset(&mut ttou, libc::SIGTTOU);
            libc::sigprocmask(libc::SIG_BLOCK, &ttou, &mut old);
            let rc = libc::tcsetpgrp(tty, libc::getpid());
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            // The terminal may have gone (hangup): the job then runs without it, as it would.
            let _ = rc;
            Ok(())
        });
    }
}

/// `tcsetpgrp(tty, pgrp)` with SIGTTOU blocked on the calling thread, so that a process that is
/// no longer in the foreground (`run` taking the terminal back from its job) is not stopped for
/// it.
///
/// # Errors
/// The errno (`ENOTTY` once the terminal is gone, `EPERM` for a group of another session).
pub fn set_foreground(tty: BorrowedFd<'_>, pgrp: i32) -> Result<(), Errno> {
    let ttou = sigttou_only();
    // SAFETY: pthread_sigmask changes only this thread's mask, from and into sets owned by this
    // frame, and is restored before returning; tcsetpgrp takes a live borrowed fd.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &ttou, &mut old);
        let rc = libc::tcsetpgrp(tty.as_raw_fd(), pgrp);
        // errno only after a failure: after a success it holds whatever came before (0 too).
        let result = if rc != 0 { Err(last_errno()) } else { Ok(()) };
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
}

/// Stops this process (`SIGSTOP`, which the kernel delivers even in an orphaned process group,
/// where SIGTSTP would be discarded); returns once it is continued.
pub fn stop_self() {
    // SAFETY: raise(3) with a valid signal number; no memory is involved.
    unsafe {
        libc::raise(libc::SIGSTOP);
    }
}

/// `killpg(pgrp, SIGCONT)`: continues a stopped job. Only for the process group of our own
/// unreaped child (its leader): that group id cannot have been reused while the leader exists.
///
/// # Errors
/// The errno (`ESRCH` if the group is gone).
pub fn continue_group(pgrp: i32) -> Result<(), Errno> {
    // SAFETY: a plain syscall with two integers.
    let rc = unsafe { libc::killpg(pgrp, libc::SIGCONT) };
    if rc != 0 { Err(last_errno()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that failed without setting errno (or errno read after a success) is an error,
    /// never rustix's assertion that an `Errno` is not 0.
    #[test]
    fn an_errno_of_zero_is_eio() {
        // SAFETY: this thread's own errno, a valid thread-local int.
        unsafe { *libc::__errno_location() = 0 };
        assert_eq!(last_errno(), Errno::IO);
    }

    /// Noted signals are taken one at a time, lowest first, only those asked for, and each
    /// once. SIGUSR1 and SIGUSR2, raised in this test's thread: no other test uses them.
    #[test]
    fn noted_signals_are_taken_once_each_and_only_when_asked() {
        let (usr1, usr2) = (libc::SIGUSR1, libc::SIGUSR2);
        note_on_signal(usr1).unwrap();
        note_on_signal(usr2).unwrap();
        // To this thread: its handler has run when `raise` returns.
        // SAFETY: `raise` with caught signals whose handler only touches an atomic.
        unsafe {
            assert_eq!(libc::raise(usr2), 0);
            assert_eq!(libc::raise(usr1), 0);
        }
        let both = (1 << usr1) | (1 << usr2);
        assert_eq!(take_noted(1 << usr2), Some(usr2));
        assert_eq!(take_noted(1 << usr2), None);
        assert_eq!(take_noted(both), Some(usr1));
        assert_eq!(take_noted(both), None);
        // A new listener forgets what an earlier one left untaken.
        // SAFETY: as above.
        unsafe { assert_eq!(libc::raise(usr1), 0) };
        forget_noted(1 << usr1);
        assert_eq!(take_noted(both), None);
        assert_eq!(note_on_signal(libc::SIGKILL), Err(Errno::INVAL));
        default_unless_ignored(usr1);
        default_unless_ignored(usr2);
    }

    /// A look at the held pidfds is never failed by a signal the stopper catches: poll(2)
    /// returns EINTR even with a zero timeout, which ended a blind stop (no report, exit 1)
    /// when its own noted SIGINT or SIGTERM arrived during it (helper-32). Here SIGURG, caught
    /// and sent to the polling thread again and again while it polls 500 pipes 100 times.
    #[test]
    fn a_caught_signal_never_fails_a_look_at_the_pidfds() {
        let sig = libc::SIGURG;
        note_on_signal(sig).unwrap();
        let pipes: Vec<_> = (0..500).map(|_| rustix::pipe::pipe().unwrap()).collect();
        // This thread, by its kernel ids: it outlives the sender (joined below).
        let (pid, tid) = (
            rustix::process::getpid().as_raw_nonzero().get(),
            rustix::thread::gettid().as_raw_nonzero().get(),
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // SAFETY: tgkill(2) takes no pointer; the target is a live thread (it
                    // joins this one before it ends) whose handler only touches an atomic.
                    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) };
                }
            })
        };
        let mut failed = None;
        for _ in 0..100 {
            let mut fds: Vec<_> = pipes
                .iter()
                .map(|(r, _)| rustix::event::PollFd::new(r, rustix::event::PollFlags::IN))
                .collect();
            if let Err(e) = crate::watch::poll_now(&mut fds) {
                failed = Some(e);
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sender.join().unwrap();
        take_noted(1 << sig);
        default_unless_ignored(sig);
        assert_eq!(failed, None);
    }
}
