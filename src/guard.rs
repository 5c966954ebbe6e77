//! What the engine refuses to stop, whoever asks: the root cgroup, and any cgroup that holds the
//! caller or one of its ancestors (stopping those would kill the stopper, its shell, or init).

use crate::cgroup::{Cgroup, is_within_bytes, proc_cgroup};
use crate::error::{Error, Result};
use crate::procinfo;

/// The caller and its ancestors, up to pid 1: `(pid, comm, cgroup path in our namespace)`.
/// Two small reads per process (`stat` and `cgroup`), none of which touches its memory.
///
/// The calling thread comes first (`thread-self`: in a threaded cgroup it may live apart from
/// its process), then the process (`self`, as the mounted `/proc` numbers it), then its
/// ancestors by their parent pids.
fn lineage() -> Vec<(i32, String, Vec<u8>)> {
    let mut out = Vec::new();
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let Some(stat) = procinfo::stat_of("self") else {
        return out;
    };
    // A thread other than the leader may sit in another (threaded) cgroup than its process;
    // the leader's own thread-self is its process's cgroup.
    if rustix::thread::gettid() != rustix::process::getpid()
        && let Some(cg) = proc_cgroup("thread-self")
    {
        out.push((me, stat.comm.clone(), cg));
    }
    if let Some(cg) = proc_cgroup("self") {
        out.push((me, stat.comm, cg));
    }
    let mut pid = stat.ppid;
    for _ in 0..4096 {
        if pid <= 0 {
            break;
        }
        let Some(stat) = procinfo::stat_of(&pid.to_string()) else {
            break;
        };
        if let Some(cg) = proc_cgroup(&pid.to_string()) {
            out.push((pid, stat.comm, cg));
        }
        match stat.ppid {
            ppid if ppid > 0 && ppid != pid => pid = ppid,
            _ => break,
        }
    }
    out
}

/// Refuses targets whose stop would hit the caller or the host.
///
/// # Errors
/// [`Error::Input`] naming the cgroup and the reason; nothing has been signalled.
pub fn check_stoppable(cg: &Cgroup) -> Result<()> {
    if cg.is_root() {
        return Err(Error::Input(format!(
            "refusing to stop the root cgroup '{}': it holds every process on the host",
            cg.path().display()
        )));
    }
    for (pid, comm, path) in lineage() {
        if is_within_bytes(&path, cg.ns_path_bytes()) {
            let who = if pid == rustix::process::getpid().as_raw_nonzero().get() {
                "gracekill itself".to_string()
            } else {
                format!(
                    "its ancestor {} (pid {pid})",
                    crate::report::printable(&comm)
                )
            };
            return Err(Error::Input(format!(
                "refusing to stop '{}': it contains {who}, which is in '{}'",
                cg.path().display(),
                String::from_utf8_lossy(&path)
            )));
        }
    }
    Ok(())
}
