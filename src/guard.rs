//! What the engine refuses to stop, whoever asks: the root cgroup, and any cgroup that holds the
//! caller or one of its ancestors (stopping those would kill the stopper, its shell, or init).

use crate::cgroup::{Cgroup, is_within};
use crate::error::{Error, Result};

/// The caller and its ancestors, up to pid 1: `(pid, comm, cgroup path in our namespace)`.
fn lineage() -> Vec<(i32, String, String)> {
    let mut out = Vec::new();
    let mut pid = rustix::process::getpid().as_raw_nonzero().get();
    for _ in 0..4096 {
        let Ok(proc) = procfs::process::Process::new(pid) else {
            break;
        };
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("0::").map(|p| p.trim_end().to_string()))
            });
        let stat = proc.stat().ok();
        let comm = stat.as_ref().map(|s| s.comm.clone()).unwrap_or_default();
        if let Some(cg) = cgroup {
            out.push((pid, comm, cg));
        }
        match stat.map(|s| s.ppid) {
            Some(ppid) if ppid > 0 && ppid != pid => pid = ppid,
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
        if is_within(&path, cg.ns_path()) {
            let who = if pid == rustix::process::getpid().as_raw_nonzero().get() {
                "gracekill itself".to_string()
            } else {
                format!("its ancestor {comm} (pid {pid})")
            };
            return Err(Error::Input(format!(
                "refusing to stop '{}': it contains {who}, which is in '{path}'",
                cg.path().display()
            )));
        }
    }
    Ok(())
}
