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
const PIDFD_INFO_CGROUPID: u64 = 1 << 1;
/// `_IOWR(PIDFS_IOCTL_MAGIC = 0xFF, 11, struct pidfd_info)`.
const PIDFD_GET_INFO: u64 =
    (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as u64) << 16) | (0xFF << 8) | 11;

/// The cgroup v2 id (cgroup directory inode) of the process behind a pidfd, from
/// `ioctl(PIDFD_GET_INFO)` (Linux 6.13).
///
/// Returns `Ok(None)` when the kernel answered but did not report a cgroup id.
///
/// # Errors
/// `ESRCH` when the process has exited; `ENOTTY`/`EINVAL` on kernels without the ioctl.
pub fn pidfd_cgroup_id(pidfd: BorrowedFd<'_>) -> Result<Option<u64>, Errno> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_PID | PIDFD_INFO_CGROUPID,
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
    if rc < 0 {
        return Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        ));
    }
    Ok((info.mask & PIDFD_INFO_CGROUPID != 0).then_some(info.cgroupid))
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
    if rc < 0 {
        Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        ))
    } else {
        Ok(())
    }
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
