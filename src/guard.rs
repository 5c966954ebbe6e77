//! What the engine refuses to stop, whoever asks: the root cgroup, and any cgroup that holds the
//! caller or one of its ancestors (stopping those would kill the stopper, its shell, or init).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cgroup::{Cgroup, is_within_bytes, proc_cgroup};
use crate::error::{Error, Result};
use crate::procinfo;

/// One process of the caller's lineage: `(pid, comm, cgroup path in our namespace)`.
type Entry = (i32, String, Vec<u8>);

/// How long the chain of the caller's ancestors (their pids and names), once read, serves later
/// stops from the same process.
///
/// A thousand stops started at once by one embedding process would otherwise each read `stat`
/// of every ancestor up to pid 1 (with their `cgroup`, the largest single cost of such a stop in
/// the bench's profile). Only the chain is reused: which process is whose parent changes when
/// one exits, not when it moves. Every cgroup is read afresh by every check, the caller's and
/// each ancestor's, so a process that moved itself into the target just before asking for its
/// stop is seen there. Within the 10 ms, an ancestor that exits is skipped (its `cgroup` is
/// gone) and a pid reused meanwhile can at worst cause a refusal, never a stop.
const ANCESTORS_TTL: Duration = Duration::from_millis(10);

/// The chain last read: for which process (pid, parent pid), when, and the `(pid, comm)` of
/// each ancestor from the parent up.
struct Ancestors {
    pid: i32,
    ppid: i32,
    at: Instant,
    chain: Arc<Vec<(i32, String)>>,
}

static ANCESTORS: Mutex<Option<Ancestors>> = Mutex::new(None);

/// The caller and its ancestors, up to pid 1, each with its cgroup as read now: two small
/// reads per process (`stat`, reused for [`ANCESTORS_TTL`], and `cgroup`), none of which
/// touches its memory.
///
/// The calling thread comes first (`thread-self`: in a threaded cgroup it may live apart from
/// its process), then the process (`self`, as the mounted `/proc` numbers it), then its
/// ancestors by their parent pids.
fn lineage() -> Vec<Entry> {
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
    for (pid, comm) in ancestors(me, stat.ppid, Instant::now()).iter() {
        if let Some(cg) = proc_cgroup(&pid.to_string()) {
            out.push((*pid, comm.clone(), cg));
        }
    }
    out
}

/// The chain of ancestors of process `pid` (whose parent is `ppid`), reused if read for the
/// same process and parent less than [`ANCESTORS_TTL`] ago.
fn ancestors(pid: i32, ppid: i32, now: Instant) -> Arc<Vec<(i32, String)>> {
    let mut cache = ANCESTORS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(a) = cache.as_ref()
        && a.pid == pid
        && a.ppid == ppid
        && now.saturating_duration_since(a.at) < ANCESTORS_TTL
    {
        return a.chain.clone();
    }
    let at = now;
    let chain = Arc::new(read_chain(ppid));
    *cache = Some(Ancestors {
        pid,
        ppid,
        at,
        chain: chain.clone(),
    });
    chain
}

/// Reads the chain from `pid` up, by parent pids.
fn read_chain(mut pid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for _ in 0..4096 {
        if pid <= 0 {
            break;
        }
        let Some(stat) = procinfo::stat_of(&pid.to_string()) else {
            break;
        };
        out.push((pid, stat.comm));
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
    for (pid, comm, path) in &lineage() {
        let pid = *pid;
        if is_within_bytes(path, cg.ns_path_bytes()) {
            let who = if pid == rustix::process::getpid().as_raw_nonzero().get() {
                "gracekill itself".to_string()
            } else {
                format!(
                    "its ancestor {} (pid {pid})",
                    crate::report::printable(comm)
                )
            };
            return Err(Error::Input(format!(
                "refusing to stop '{}': it contains {who}, which is in '{}'",
                cg.path().display(),
                String::from_utf8_lossy(path)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_reused_only_briefly_and_only_for_the_same_parent() {
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let ppid = procinfo::stat_of("self").expect("own stat").ppid;
        // The clock is passed in: each call says when it is, no waiting.
        let t0 = Instant::now();
        let a = ancestors(me, ppid, t0);
        assert_eq!(
            a.first().map(|e| e.0),
            Some(ppid),
            "the chain starts at the parent"
        );
        // Read again for another parent (reparenting), and for another process (a fork).
        // (In a VM guest the test's parent can be pid 1 itself.)
        let other = if ppid == 1 { 2 } else { 1 };
        let b = ancestors(me, other, t0);
        assert!(!Arc::ptr_eq(&a, &b));
        let c = ancestors(me + 1, other, t0);
        assert!(!Arc::ptr_eq(&b, &c));
        let d = ancestors(me + 1, other, t0 + ANCESTORS_TTL - Duration::from_millis(1));
        assert!(Arc::ptr_eq(&c, &d), "reused within {ANCESTORS_TTL:?}");
        let e = ancestors(me + 1, other, t0 + ANCESTORS_TTL);
        assert!(!Arc::ptr_eq(&d, &e), "read again after {ANCESTORS_TTL:?}");
    }
}
