//! What the engine refuses to stop, whoever asks: the root cgroup, and any cgroup that holds the
//! caller or one of its ancestors (stopping those would kill the stopper, its shell, or init).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::io::Errno;

use crate::cgroup::{Cgroup, errno_of, is_within_bytes, try_proc_cgroup};
use crate::error::{Error, Result};
use crate::procinfo;

/// One process of the caller's lineage: `(pid, comm, cgroup path in our namespace)`.
type Entry = (i32, String, Vec<u8>);

/// A lineage file that could not be read (not one of a process that is gone): its path and the
/// kernel's answer. The check then refuses: a lineage read in part could miss the caller.
type Unreadable = (String, Errno);

/// `r`, the read of `/proc/<what>`, with its failure named.
fn named<T>(what: &str, r: std::io::Result<T>) -> Result<T, Unreadable> {
    r.map_err(|e| (format!("/proc/{what}"), errno_of(&e)))
}

/// The thread ids of process `proc` in `/proc` (`None`: it is gone).
fn task_ids(proc: &str) -> std::io::Result<Option<Vec<String>>> {
    let dir = match std::fs::read_dir(format!("/proc/{proc}/task")) {
        Ok(d) => d,
        Err(e) if crate::cgroup::is_gone_io(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut ids = Vec::new();
    for t in dir {
        ids.push(t?.file_name().to_string_lossy().into_owned());
    }
    Ok(Some(ids))
}

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

/// The caller's process and its ancestors, up to pid 1, each with its cgroup as read now: small
/// reads per process (`stat`, reused for [`ANCESTORS_TTL`], its `cgroup`, and the list of its
/// threads), none of which touches its memory. The process comes first (`self`, as the mounted
/// `/proc` numbers it), then its ancestors by their parent pids.
///
/// A process is in every cgroup one of its threads is in: in a threaded subtree a thread may
/// live apart from its leader, and a stop that meets it there signals (and kills) its whole
/// process. So each process's other threads are read too (`task/<tid>/cgroup`, one read per
/// thread), and every cgroup they are in is an entry of its own.
///
/// A read that fails for another reason than the process being gone (out of descriptors: a task
/// of the stopper's user can fill the system's file table) is an error, never a skipped entry.
fn process_lineage() -> Result<Vec<Entry>, Unreadable> {
    let mut out = Vec::new();
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let Some(stat) = named("self/stat", procinfo::try_stat_of("self"))? else {
        return Ok(out);
    };
    push_process(
        &mut out,
        me,
        "self",
        &stat.comm,
        &try_proc_cgroup,
        &task_ids,
    )?;
    for (pid, comm) in ancestors(me, stat.ppid, Instant::now())?.iter() {
        push_process(
            &mut out,
            *pid,
            &pid.to_string(),
            comm,
            &try_proc_cgroup,
            &task_ids,
        )?;
    }
    Ok(out)
}

/// Adds the cgroups of process `pid` (`proc` in `/proc`) to `out`: its leader's, then each other
/// one its threads are in, once. Reads through `cgroup_of` and `tasks_of` (`/proc`, or a test's).
fn push_process(
    out: &mut Vec<Entry>,
    pid: i32,
    proc: &str,
    comm: &str,
    cgroup_of: &dyn Fn(&str) -> std::io::Result<Option<Vec<u8>>>,
    tasks_of: &dyn Fn(&str) -> std::io::Result<Option<Vec<String>>>,
) -> Result<(), Unreadable> {
    let Some(cg) = named(&format!("{proc}/cgroup"), cgroup_of(proc))? else {
        return Ok(());
    };
    let mut seen = vec![cg.clone()];
    out.push((pid, comm.to_string(), cg));
    let Some(tids) = named(&format!("{proc}/task"), tasks_of(proc))? else {
        return Ok(());
    };
    for tid in tids {
        if tid.parse::<i32>().is_ok_and(|t| t == pid) {
            continue;
        }
        let path = format!("{proc}/task/{tid}");
        if let Some(cg) = named(&format!("{path}/cgroup"), cgroup_of(&path))?
            && !seen.contains(&cg)
        {
            seen.push(cg.clone());
            out.push((pid, comm.to_string(), cg));
        }
    }
    Ok(())
}

/// The calling thread, if it is not its process's leader: in a threaded cgroup it may live apart
/// from its process (the leader's own `thread-self` is its process's cgroup).
fn calling_thread() -> Result<Option<Entry>, Unreadable> {
    if rustix::thread::gettid() == rustix::process::getpid() {
        return Ok(None);
    }
    let me = rustix::process::getpid().as_raw_nonzero().get();
    // Named as "gracekill itself" in a refusal: no name needed.
    let cg = named("thread-self/cgroup", try_proc_cgroup("thread-self"))?;
    Ok(cg.map(|cg| (me, String::new(), cg)))
}

/// A value read afresh for every request, shared by the requests made before the read began.
///
/// A thousand stops started at once by one process would each read the lineage (a read of
/// `/proc/<pid>/cgroup` per ancestor, each taking the kernel's cgroup lock). Each request takes
/// a ticket, yields once (so that the other stops of its runtime take theirs), and then uses the
/// last read if that read *began* after its ticket was taken, or reads itself, covering every
/// ticket taken by then. So every check still sees the lineage as it was after its own request:
/// a process that moved itself into the target just before asking is seen there.
///
/// A read is also only shared within one view: `/proc/<pid>/cgroup` shows paths relative to the
/// cgroup namespace of the thread that reads it, and threads of one process may be in different
/// ones. The caller names its view (`key`, taken by the thread that will use the result).
pub(crate) struct Fresh<T> {
    asked: AtomicU64,
    last: Mutex<Option<(u64, u64, Arc<T>)>>,
}

impl<T> Fresh<T> {
    pub(crate) const fn new() -> Self {
        Fresh {
            asked: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// A value read by `read` after this call began, in the view `key()` names (both are
    /// called on the thread that uses the result).
    pub(crate) async fn get(&self, key: impl Fn() -> u64, read: impl FnOnce() -> T) -> Arc<T> {
        let ticket = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::task::yield_now().await;
        // After the yield: on a multi-threaded runtime the task may now run on another thread.
        let view = key();
        {
            let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((covers, k, v)) = last.as_ref()
                && *covers >= ticket
                && *k == view
            {
                return v.clone();
            }
        }
        // Every ticket taken up to now was taken before this read begins.
        let covers = self.asked.load(Ordering::SeqCst);
        let v = Arc::new(read());
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.as_ref().is_none_or(|(c, _, _)| *c < covers) {
            *last = Some((covers, view, v.clone()));
        }
        v
    }
}

/// The view of the calling thread: its thread id. A thread's cgroup namespace changes only when
/// that thread itself calls `setns(2)` or `unshare(2)`, so reads made on one thread share its
/// view; threads of one process may be in different namespaces, and never share a read.
///
/// Not the namespace's inode: a `stat` of `/proc/thread-self/ns/cgroup` costs ~10 us (two
/// `/proc` lookups), a tenth of a whole stop, where `gettid` costs a quarter of a microsecond.
/// The one case this gives up is code that moves a runtime's thread into another cgroup
/// namespace between the polls of one stop (a task calling `setns` on a tokio worker), which
/// would change that stop's view of every path, not just this read's.
fn cgroup_view() -> u64 {
    u64::from(
        rustix::thread::gettid()
            .as_raw_nonzero()
            .get()
            .unsigned_abs(),
    )
}

static LINEAGE: Fresh<Result<Vec<Entry>, Unreadable>> = Fresh::new();

/// The chain of ancestors of process `pid` (whose parent is `ppid`), reused if read for the
/// same process and parent less than [`ANCESTORS_TTL`] ago.
fn ancestors(pid: i32, ppid: i32, now: Instant) -> Result<Arc<Vec<(i32, String)>>, Unreadable> {
    let mut cache = ANCESTORS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(a) = cache.as_ref()
        && a.pid == pid
        && a.ppid == ppid
        && now.saturating_duration_since(a.at) < ANCESTORS_TTL
    {
        return Ok(a.chain.clone());
    }
    let at = now;
    let chain = Arc::new(read_chain(ppid)?);
    *cache = Some(Ancestors {
        pid,
        ppid,
        at,
        chain: chain.clone(),
    });
    Ok(chain)
}

/// Reads the chain from `pid` up, by parent pids.
fn read_chain(mut pid: i32) -> Result<Vec<(i32, String)>, Unreadable> {
    let mut out = Vec::new();
    for _ in 0..4096 {
        if pid <= 0 {
            break;
        }
        let what = format!("{pid}/stat");
        let Some(stat) = named(&what, procinfo::try_stat_of(&pid.to_string()))? else {
            break;
        };
        out.push((pid, stat.comm));
        match stat.ppid {
            ppid if ppid > 0 && ppid != pid => pid = ppid,
            _ => break,
        }
    }
    Ok(out)
}

/// Refuses targets whose stop would hit the caller or the host.
///
/// # Errors
/// [`Error::Input`] naming the cgroup and the reason; [`Error::Os`] when a file of the caller's
/// lineage could not be read (for another reason than its process being gone). Nothing has
/// been signalled.
pub async fn check_stoppable(cg: &Cgroup) -> Result<()> {
    if cg.is_root() {
        return Err(root_refused(cg));
    }
    let lineage = LINEAGE.get(cgroup_view, process_lineage).await;
    let unreadable = |(path, errno): &Unreadable| {
        Error::os(
            format!(
                "refusing to stop '{}', as whether it holds gracekill or an ancestor cannot be \
                 told: read",
                cg.path().display()
            ),
            std::path::Path::new(path),
            *errno,
        )
    };
    let lineage = lineage.as_ref().as_ref().map_err(unreadable)?;
    // The thread that goes on with the stop (after the yield above).
    let thread = calling_thread().map_err(|e| unreadable(&e))?;
    thread
        .iter()
        .chain(lineage.iter())
        .try_for_each(|e| refuse_if_within(cg, e))
}

fn root_refused(cg: &Cgroup) -> Error {
    Error::Input(format!(
        "refusing to stop the root cgroup '{}': it holds every process on the host",
        cg.path().display()
    ))
}

fn refuse_if_within(cg: &Cgroup, (pid, comm, path): &Entry) -> Result<()> {
    let pid = *pid;
    if !is_within_bytes(path, cg.ns_path_bytes()) {
        return Ok(());
    }
    let who = if pid == rustix::process::getpid().as_raw_nonzero().get() {
        "gracekill itself".to_string()
    } else {
        format!(
            "its ancestor {} (pid {pid})",
            crate::report::printable(comm)
        )
    };
    Err(Error::Input(format!(
        "refusing to stop '{}': it contains {who}, which is in '{}'",
        cg.path().display(),
        String::from_utf8_lossy(path)
    )))
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
        let a = ancestors(me, ppid, t0).expect("chain");
        assert_eq!(
            a.first().map(|e| e.0),
            Some(ppid),
            "the chain starts at the parent"
        );
        // Read again for another parent (reparenting), and for another process (a fork).
        // (In a VM guest the test's parent can be pid 1 itself.)
        let other = if ppid == 1 { 2 } else { 1 };
        let b = ancestors(me, other, t0).expect("chain");
        assert!(!Arc::ptr_eq(&a, &b));
        let c = ancestors(me + 1, other, t0).expect("chain");
        assert!(!Arc::ptr_eq(&b, &c));
        let d =
            ancestors(me + 1, other, t0 + ANCESTORS_TTL - Duration::from_millis(1)).expect("chain");
        assert!(Arc::ptr_eq(&c, &d), "reused within {ANCESTORS_TTL:?}");
        let e = ancestors(me + 1, other, t0 + ANCESTORS_TTL).expect("chain");
        assert!(!Arc::ptr_eq(&d, &e), "read again after {ANCESTORS_TTL:?}");
    }

    /// A lineage file that cannot be read is an error, never a skipped entry: out of
    /// descriptors (which a task of the stopper's user can cause: `ENFILE`), a thread whose
    /// cgroup was not read could be the one in the target. A thread that is gone is skipped.
    #[test]
    fn an_unreadable_lineage_file_is_an_error_and_a_gone_thread_is_skipped() {
        let cgroup_of = |p: &str| match p {
            "7" => Ok(Some(b"/a".to_vec())),
            "7/task/8" => Ok(Some(b"/a/threaded".to_vec())),
            "7/task/9" => Ok(None),
            _ => Err(std::io::Error::from_raw_os_error(libc::EMFILE)),
        };
        let tasks = |_: &str| Ok(Some(vec!["7".into(), "8".into(), "9".into()]));
        let mut out = Vec::new();
        push_process(&mut out, 7, "7", "app", &cgroup_of, &tasks).expect("readable");
        let paths: Vec<&[u8]> = out.iter().map(|e| e.2.as_slice()).collect();
        assert_eq!(paths, [b"/a".as_slice(), b"/a/threaded".as_slice()]);

        let more = |_: &str| Ok(Some(vec!["7".into(), "10".into()]));
        let got = push_process(&mut Vec::new(), 7, "7", "app", &cgroup_of, &more);
        assert_eq!(
            got,
            Err(("/proc/7/task/10/cgroup".into(), Errno::MFILE)),
            "a thread's cgroup that could not be read"
        );
        let no_list = |_: &str| Err(std::io::Error::from_raw_os_error(libc::EMFILE));
        let got = push_process(&mut Vec::new(), 7, "7", "app", &cgroup_of, &no_list);
        assert_eq!(got, Err(("/proc/7/task".into(), Errno::MFILE)));
    }

    /// Stops started together share one read; a request made after a read began gets a read of
    /// its own (a lineage read before the request could miss a move made just before it).
    #[test]
    fn concurrent_checks_share_one_read_and_later_ones_read_again() {
        static SHARED: Fresh<usize> = Fresh::new();
        static READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let read = || READS.fetch_add(1, Ordering::SeqCst) + 1;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        let got: Vec<usize> = local.block_on(&rt, async {
            let tasks: Vec<_> = (0..100)
                .map(|_| tokio::task::spawn_local(async move { *SHARED.get(|| 7, read).await }))
                .collect();
            let mut got = Vec::new();
            for t in tasks {
                got.push(t.await.expect("check"));
            }
            got
        });
        assert_eq!(READS.load(Ordering::SeqCst), 1, "one read for the batch");
        assert!(got.iter().all(|&v| v == 1), "{got:?}");
        // One after the other: each request finds the last read begun before it, and reads.
        let a = rt.block_on(SHARED.get(|| 7, read));
        let b = rt.block_on(SHARED.get(|| 7, read));
        assert_eq!((*a, *b), (2, 3));
        // Another view (a thread in another cgroup namespace) never takes this one's read.
        let c = rt.block_on(async {
            let (mine, other) = tokio::join!(SHARED.get(|| 7, read), SHARED.get(|| 8, read));
            (*mine, *other)
        });
        assert_eq!(c.0.min(c.1), 4);
        assert_eq!(c.0.max(c.1), 5, "each view read its own: {c:?}");
    }

    /// A request whose ticket is taken while a read is under way does not get that read: the
    /// read may have begun before the request (before, say, the caller moved into the target).
    #[test]
    fn a_request_made_during_a_read_reads_again() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        static SHARED: Fresh<&'static str> = Fresh::new();
        let inner = std::cell::RefCell::new(None);
        let outer = SHARED.get(
            || 1,
            || {
                // Requested in the middle of the outer read: takes its ticket, parks at its yield.
                let mut f = Box::pin(SHARED.get(|| 1, || "inner"));
                let mut cx = Context::from_waker(Waker::noop());
                assert!(f.as_mut().poll(&mut cx).is_pending());
                *inner.borrow_mut() = Some(f);
                "outer"
            },
        );
        let mut cx = Context::from_waker(Waker::noop());
        let mut outer = std::pin::pin!(outer);
        let got = loop {
            if let Poll::Ready(v) = outer.as_mut().poll(&mut cx) {
                break v;
            }
        };
        assert_eq!(*got, "outer");
        let mut inner = inner.take().expect("requested during the read");
        let got = loop {
            if let Poll::Ready(v) = inner.as_mut().poll(&mut cx) {
                break v;
            }
        };
        assert_eq!(*got, "inner", "a read begun before the request was reused");
    }
}
