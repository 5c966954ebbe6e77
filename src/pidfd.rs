//! A process handle that cannot be fooled by PID reuse.
//!
//! A pid read from `cgroup.procs` names whatever process holds that number *now*. [`PidFd::open_member`]
//! opens a pidfd for it and then proves the process behind the pidfd is still a member of the
//! cgroup it was listed in, so a pid recycled by an unrelated host process is never signalled.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags};

use crate::cgroup::Cgroup;
use crate::error::{Error, Result};
use crate::policy::Signal;
use crate::sys;

/// How membership is proven; decided once per process (see [`membership_method`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// `ioctl(PIDFD_GET_INFO)` reports the pidfd's cgroup id (Linux 6.13): exact and atomic.
    PidfdInfo,
    /// Read `/proc/<pid>/cgroup`, then check the pidfd has not exited: if the process behind the
    /// pidfd is still alive after the read, the read described it (its pid cannot have been
    /// reused while it lives).
    ProcFile,
}

const UNKNOWN: u8 = 0;
const INFO: u8 = 1;
const PROC: u8 = 2;
static METHOD: AtomicU8 = AtomicU8::new(UNKNOWN);

/// `ioctl(PIDFD_GET_INFO)`'s answer; `ENOTTY`, as from a kernel without it, whenever the
/// `/proc` proof is in use: forcing that proof (`GRACEKILL_FORCE_PROC_MEMBERSHIP=1`) then
/// behaves like such a kernel wherever a pidfd's cgroup is asked for.
fn pidfd_info(fd: BorrowedFd<'_>) -> std::result::Result<sys::PidfdFacts, Errno> {
    if membership_method() == Membership::ProcFile {
        return Err(Errno::NOTTY);
    }
    sys::pidfd_facts(fd)
}

/// Opens the process of thread `tid` by its tgid and proves the thread a member of `cg` through
/// `/proc/<tgid>/task/<tid>/cgroup`: `/proc/<tgid>/task/<tid>` exists only while `tid` is a
/// thread of the process holding `tgid`, and that process is checked alive after the read, so
/// the pidfd names the process the read described.
fn thread_by_proc(cg: &Cgroup, tid: i32) -> Result<Option<PidFd>> {
    let Some(tgid) = crate::procinfo::tgid_of(tid) else {
        return Ok(None);
    };
    let Some(p) = PidFd::open(tgid)? else {
        return Ok(None);
    };
    let in_cg = proc_proof(cg, &format!("{tgid}/task/{tid}"))?;
    Ok((in_cg && !p.has_exited()).then_some(p))
}

/// The membership proof in use: probed on first use, then cached.
pub fn membership_method() -> Membership {
    match METHOD.load(Ordering::Relaxed) {
        INFO => Membership::PidfdInfo,
        PROC => Membership::ProcFile,
        _ => {
            if std::env::var_os("GRACEKILL_FORCE_PROC_MEMBERSHIP").is_some_and(|v| v == "1") {
                METHOD.store(PROC, Ordering::Relaxed);
                return Membership::ProcFile;
            }
            let probe = rustix::process::pidfd_open(rustix::process::getpid(), PidfdFlags::empty())
                .ok()
                .and_then(|fd| sys::pidfd_cgroup_id(fd.as_fd()).ok().flatten());
            let m = if probe.is_some() { INFO } else { PROC };
            METHOD.store(m, Ordering::Relaxed);
            tracing::debug!(
                method = if m == INFO {
                    "PIDFD_GET_INFO"
                } else {
                    "/proc/<pid>/cgroup"
                },
                "membership proof"
            );
            if m == INFO {
                Membership::PidfdInfo
            } else {
                Membership::ProcFile
            }
        }
    }
}

/// A pidfd (`pidfd_open(2)`, Linux 5.3) with the pid it was opened for.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
    /// For a thread pidfd (`PIDFD_THREAD`, from a threaded cgroup): the process it belongs to.
    thread_of: Option<i32>,
}

impl PidFd {
    /// Opens a pidfd for `pid`. `None` if no such process exists.
    ///
    /// # Errors
    /// Any error other than `ESRCH`.
    pub fn open(pid: i32) -> Result<Option<PidFd>> {
        let Some(p) = Pid::from_raw(pid) else {
            return Ok(None);
        };
        match rustix::process::pidfd_open(p, PidfdFlags::NONBLOCK) {
            Ok(fd) => Ok(Some(PidFd {
                fd,
                pid,
                thread_of: None,
            })),
            Err(Errno::SRCH) => Ok(None),
            Err(e) => Err(Error::os(
                "pidfd_open",
                std::path::Path::new(&format!("/proc/{pid}")),
                e,
            )),
        }
    }

    /// Opens `pid` and proves it is a member of `cg` (see the module docs). `None` when the pid
    /// is gone or now belongs to a process outside `cg`.
    ///
    /// # Errors
    /// Unexpected OS errors only.
    pub fn open_member(cg: &Cgroup, pid: i32) -> Result<Option<PidFd>> {
        let Some(pidfd) = PidFd::open(pid)? else {
            return Ok(None);
        };
        Ok(pidfd.is_member_of(cg)?.then_some(pidfd))
    }

    /// Opens thread `tid` as listed in `cg`'s `cgroup.threads` (a threaded cgroup) and proves that
    /// thread is a member of `cg`. Signals through the result go to its whole process
    /// ([`PidFd::send_signal_to_group`]). `None` when the thread is gone or elsewhere.
    ///
    /// With `PIDFD_GET_INFO` (Linux 6.13) a thread pidfd (`PIDFD_THREAD`, 6.9) proves it
    /// exactly. Without it (before 6.13: 6.9 to 6.12 have `PIDFD_THREAD` but cannot tell a
    /// thread pidfd's cgroup), or before 6.9, the process is opened by its tgid (from
    /// `/proc/<tid>/status`) and the thread's `/proc/<tgid>/task/<tid>/cgroup` is read, then
    /// the pidfd checked to be alive, as the `/proc` proof does for processes.
    ///
    /// # Errors
    /// Unexpected OS errors only.
    pub fn open_thread_member(cg: &Cgroup, tid: i32) -> Result<Option<PidFd>> {
        let Some(t) = Pid::from_raw(tid) else {
            return Ok(None);
        };
        if membership_method() == Membership::ProcFile {
            return thread_by_proc(cg, tid);
        }
        let os = |e| {
            Error::os(
                "pidfd_open (thread)",
                std::path::Path::new(&format!("/proc/{tid}")),
                e,
            )
        };
        const PIDFD_THREAD: u32 = 0o200; // O_EXCL
        match rustix::process::pidfd_open(
            t,
            PidfdFlags::NONBLOCK | PidfdFlags::from_bits_retain(PIDFD_THREAD),
        ) {
            Ok(fd) => match pidfd_info(fd.as_fd()) {
                Ok(f) if f.cgroup_id == Some(cg.id()) => Ok(f.tgid.map(|tgid| PidFd {
                    fd,
                    pid: tid,
                    thread_of: Some(tgid),
                })),
                Ok(_) | Err(Errno::SRCH) => Ok(None),
                Err(e) => Err(os(e)),
            },
            Err(Errno::SRCH) => Ok(None),
            // No PIDFD_THREAD (before 6.9).
            Err(Errno::INVAL) => thread_by_proc(cg, tid),
            Err(e) => Err(os(e)),
        }
    }

    /// For signalling and holding a process reached through one of its threads: a pidfd of the
    /// whole process, which, unlike a thread's, signals the process for as long as any of it
    /// lives (a task can end the one thread it was met through). It is opened by the
    /// thread-group id while this thread is known alive before and after, so that id cannot
    /// have been reused meanwhile. `self` when it already is a process pidfd, when the thread
    /// has exited meanwhile, or when the open fails (this pidfd still signals the process while
    /// its thread lives).
    pub fn into_process(self) -> PidFd {
        let Some(tgid) = self.thread_of else {
            return self;
        };
        match PidFd::open(tgid) {
            Ok(Some(p)) if !self.has_exited() => p,
            Ok(_) => self,
            Err(e) => {
                tracing::debug!(tid = self.pid, tgid, error = %e, "holding the thread, not its process");
                self
            }
        }
    }

    /// The process this pidfd signals: the pid, or for a thread pidfd its thread-group id.
    pub fn tgid(&self) -> i32 {
        self.thread_of.unwrap_or(self.pid)
    }

    /// Sends `sig` to the whole process: for a thread pidfd, with `PIDFD_SIGNAL_THREAD_GROUP`
    /// (Linux 6.9); otherwise as [`PidFd::send_signal`]. Returns `false` if it is gone.
    ///
    /// # Errors
    /// `EPERM` and other unexpected errors.
    pub fn send_signal_to_group(&self, sig: Signal) -> Result<bool> {
        if self.thread_of.is_none() {
            return self.send_signal(sig);
        }
        match sys::pidfd_signal_thread_group(self.fd.as_fd(), sig) {
            Ok(()) => Ok(true),
            Err(Errno::SRCH) => Ok(false),
            Err(e) => Err(Error::os(
                format!("send {sig} to the process of thread"),
                std::path::Path::new(&format!("/proc/{}", self.pid)),
                e,
            )),
        }
    }

    /// Is the process behind this pidfd alive and in `cg` (exactly that cgroup)?
    ///
    /// # Errors
    /// Unexpected OS errors only.
    pub fn is_member_of(&self, cg: &Cgroup) -> Result<bool> {
        match membership_method() {
            Membership::PidfdInfo => match sys::pidfd_cgroup_id(self.fd.as_fd()) {
                Ok(Some(id)) => Ok(id == cg.id()),
                Ok(None) | Err(Errno::SRCH) => Ok(false),
                Err(e) => Err(Error::os(
                    "ioctl PIDFD_GET_INFO on pidfd of",
                    std::path::Path::new(&format!("/proc/{}", self.pid)),
                    e,
                )),
            },
            Membership::ProcFile => {
                let in_cg = proc_proof(cg, &self.pid.to_string())?;
                Ok(in_cg && !self.has_exited())
            }
        }
    }

    /// The pid this pidfd was opened for.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig` (`pidfd_send_signal(2)`, Linux 5.1). Returns `false` if the process is gone.
    ///
    /// # Errors
    /// `EPERM` and other unexpected errors.
    pub fn send_signal(&self, sig: Signal) -> Result<bool> {
        match rustix::process::pidfd_send_signal(&self.fd, sys::to_rustix_signal(sig)) {
            Ok(()) => Ok(true),
            Err(Errno::SRCH) => Ok(false),
            Err(e) => Err(Error::os(
                format!("send {sig} to"),
                std::path::Path::new(&format!("/proc/{}", self.pid)),
                e,
            )),
        }
    }

    /// Is the process still there, alive or a zombie not yet reaped? Until it is reaped its pid
    /// cannot name another process: whatever was read by that pid before a `true` here was
    /// this process's. One system call, which never blocks.
    pub fn unreaped(&self) -> bool {
        // EPERM: it exists. Any other failure (a seccomp filter's) proves nothing: not there.
        matches!(sys::pidfd_probe(self.fd.as_fd()), Ok(()) | Err(Errno::PERM))
    }

    /// Has the process exited (the pidfd is readable)? Does not block.
    pub fn has_exited(&self) -> bool {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }

    /// Frees the memory of a SIGKILLed process now (`process_mrelease(2)`, Linux 5.15).
    ///
    /// # Errors
    /// The errno: `EINVAL` if the process is not dying, `ENOSYS` on older kernels.
    pub fn mrelease(&self) -> std::result::Result<(), Errno> {
        sys::process_mrelease(self.fd.as_fd())
    }
}

/// Does `/proc/<proc_path>/cgroup` name `cg`? The kernel cuts that line at `PATH_MAX`: a
/// cgroup whose path is longer cannot be told from its cousins there, which is an error (the
/// process is then left to the final kill) rather than a silent "not a member".
fn proc_proof(cg: &Cgroup, proc_path: &str) -> Result<bool> {
    let want = cg.ns_path_bytes();
    if want.len() >= 4095 {
        return Err(Error::Unsupported(format!(
            "cannot prove that /proc/{proc_path} is in '{}': its path is longer than \
             /proc/<pid>/cgroup shows (PATH_MAX); Linux 6.13's PIDFD_GET_INFO can",
            cg.path().display()
        )));
    }
    Ok(crate::cgroup::proc_cgroup(proc_path).is_some_and(|p| p == want))
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zombie still answers (its pid is still its own); once reaped, it does not.
    #[test]
    fn unreaped_until_the_parent_reaps() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = i32::try_from(child.id()).expect("pid");
        let p = PidFd::open(pid).expect("pidfd_open").expect("there");
        assert!(p.unreaped());
        // Exited, not reaped: a zombie.
        let mut fds = [PollFd::new(&p.fd, PollFlags::IN)];
        rustix::event::poll(&mut fds, None).expect("poll");
        assert!(p.has_exited());
        assert!(p.unreaped(), "a zombie's pid is still its own");
        child.wait().expect("reap");
        assert!(!p.unreaped(), "reaped: its pid may be anyone's");
    }
}
