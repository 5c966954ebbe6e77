//! What `/proc` says about a process, for reports: name, state, wait channel, stuck threads, and
//! (off the stop's path) its command line.
//!
//! Only ever used to *describe* a process; nothing here decides whom to signal.
//!
//! The task controls what these reads cost. `stat`, `comm` and `wchan` never touch the target's
//! memory map, so they cannot block on it. `cmdline` reads the target's memory under its
//! `mmap_lock`: a process whose `mmap_lock` is held by a thread stuck in a page fault (a FUSE
//! file that never answers) makes that read block for as long as the fault does. So command
//! lines are read by one background thread ([`CmdlineReader`]), capped at [`MAX_CMDLINE`]
//! bytes, and a stop takes whatever has arrived by the time it reports; it never waits for one.

use std::collections::HashMap;
use std::io::Read;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use serde::Serialize;

/// At most this many bytes of a command line are read and reported.
pub const MAX_CMDLINE: usize = 512;

/// At most this many threads of one process are examined for [`ProcInfo::threads`].
const MAX_THREADS_EXAMINED: usize = 256;

/// At most this many threads are reported per process.
const MAX_THREADS_REPORTED: usize = 8;

/// A process as a report shows it, from sources that cannot block on the process.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ProcInfo {
    /// The pid (in the caller's pid namespace).
    pub pid: i32,
    /// `/proc/<pid>/stat`'s command name.
    pub comm: String,
    /// The one-letter state from `/proc/<pid>/stat` (`R`, `S`, `D`, `Z`, `T`...).
    pub state: String,
    /// `/proc/<pid>/wchan`: the kernel function a sleeping process waits in.
    pub wchan: String,
    /// Threads other than the leader whose state differs from the leader's (a thread stuck in
    /// `D` while the leader is a zombie, say), at most 8.
    pub threads: Vec<ThreadInfo>,
    /// For a process in a tracing stop (`t`): its tracer's pid (`TracerPid` of
    /// `/proc/<pid>/status`), the process that holds it there.
    pub tracer: Option<i32>,
}

/// One thread of a process, for survivors.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThreadInfo {
    /// The thread id.
    pub tid: i32,
    /// Its state letter.
    pub state: String,
    /// Its wait channel.
    pub wchan: String,
}

/// `(comm, state)` from `/proc/<path>/stat`, where `path` is `<pid>` or `<pid>/task/<tid>`.
fn stat(path: &str) -> Option<(String, String)> {
    stat_of(path).map(|s| (s.comm, s.state))
}

/// What the guard and the task records need from `/proc/<pid>/stat`: one read of a file that
/// never touches the process's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// The command name.
    pub comm: String,
    /// The one-letter state (`R`, `S`, `D`, `Z`...).
    pub state: String,
    /// The parent's pid (0 for pid 1).
    pub ppid: i32,
    /// The start time, in clock ticks after boot: with the pid, it names one process for good.
    pub starttime: u64,
}

/// `/proc/<path>/stat` parsed (`path`: `<pid>`, `self` or `<pid>/task/<tid>`); `None` if the
/// process is gone.
pub fn stat_of(path: &str) -> Option<Stat> {
    try_stat_of(path).ok().flatten()
}

/// [`stat_of`], telling a process that is gone (`Ok(None)`) from a read that failed.
///
/// # Errors
/// Opening or reading the file failed for another reason than the process being gone.
pub fn try_stat_of(path: &str) -> std::io::Result<Option<Stat>> {
    let mut buf = [0u8; 1024];
    match std::fs::File::open(format!("/proc/{path}/stat")).and_then(|mut f| f.read(&mut buf)) {
        Ok(n) => Ok(parse_stat(&buf[..n])),
        Err(e) if crate::cgroup::is_gone_io(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parses a `stat` line: `pid (comm) state ppid ... starttime ...` (comm may hold spaces and
/// parentheses, so it ends at the last `)`; starttime is the 22nd field).
fn parse_stat(raw: &[u8]) -> Option<Stat> {
    let text = String::from_utf8_lossy(raw);
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.to_string();
    let ppid = rest.next()?.parse().ok()?;
    let starttime = rest.nth(17)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        starttime,
    })
}

/// `TracerPid` from `/proc/<pid>/status`; `None` if untraced or unreadable. It comes before
/// the lines whose length the process sets (`Groups`): the first 512 bytes hold it, and
/// `status`, like `stat`, only reads counters of the process's memory map, never its pages.
fn tracer_of(pid: i32) -> Option<i32> {
    let mut buf = [0u8; 512];
    let n = std::fs::File::open(format!("/proc/{pid}/status"))
        .and_then(|mut f| f.read(&mut buf))
        .ok()?;
    parse_tracer(&buf[..n])
}

fn parse_tracer(raw: &[u8]) -> Option<i32> {
    let text = String::from_utf8_lossy(raw);
    // `Name:` comes first and is escaped by the kernel (a newline in comm is `\n`), so every
    // line start here is the kernel's.
    let value = text.lines().find_map(|l| l.strip_prefix("TracerPid:"))?;
    value.trim().parse().ok().filter(|&p: &i32| p > 0)
}

fn wchan(path: &str) -> String {
    let w = std::fs::read_to_string(format!("/proc/{path}/wchan")).unwrap_or_default();
    if w == "0" { String::new() } else { w }
}

/// Describes `pid` from `stat`, `wchan` and its threads' `stat`; fields that cannot be read
/// (the process exited meanwhile) stay empty. Never reads the process's memory.
pub fn describe(pid: i32) -> ProcInfo {
    let mut info = ProcInfo {
        pid,
        ..ProcInfo::default()
    };
    let leader = pid.to_string();
    if let Some((comm, state)) = stat(&leader) {
        info.comm = comm;
        info.state = state;
    }
    info.wchan = wchan(&leader);
    if info.state == "t" {
        info.tracer = tracer_of(pid);
    }
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten().take(MAX_THREADS_EXAMINED) {
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
            else {
                continue;
            };
            if tid == pid {
                continue;
            }
            let path = format!("{pid}/task/{tid}");
            if let Some((_, state)) = stat(&path)
                && state != info.state
            {
                info.threads.push(ThreadInfo {
                    tid,
                    wchan: wchan(&path),
                    state,
                });
                if info.threads.len() == MAX_THREADS_REPORTED {
                    break;
                }
            }
        }
    }
    info
}

/// The cgroup v1 freezer cgroup that holds `pid` frozen, if any (hybrid hosts only). A process
/// frozen there runs no signal handler and does not die of SIGKILL until it is thawed, which
/// gracekill (a cgroup v2 tool) never does to a hierarchy it does not own.
pub fn v1_frozen(pid: i32) -> Option<String> {
    let mount = crate::cgroup::v1_freezer_mount()?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctrls.split(',').any(|c| c == "freezer").then_some(path)
    })?;
    let dir = mount.join(path.trim_start_matches('/'));
    let state = std::fs::read_to_string(dir.join("freezer.state")).ok()?;
    matches!(state.trim(), "FROZEN" | "FREEZING").then(|| dir.display().to_string())
}

/// Has the process `pid` a live thread in the cgroup subtree `within` (a path as
/// `/proc/<pid>/cgroup` gives it)? True at once (one read of `/proc/<pid>/stat`) unless its
/// leader has exited (state `Z` while it is still listed: other threads live on); then each
/// thread's `/proc/<pid>/task/<tid>/cgroup` is read (at most 256). Never reads its memory.
pub fn has_live_thread_in(pid: i32, within: &[u8]) -> bool {
    let leader = pid.to_string();
    match stat(&leader) {
        Some((_, state)) if state == "Z" => {}
        _ => return true,
    }
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    dir.flatten().take(MAX_THREADS_EXAMINED).any(|entry| {
        let Some(tid) = entry.file_name().to_str().map(str::to_owned) else {
            return false;
        };
        let path = format!("{pid}/task/{tid}");
        let alive = stat(&path).is_some_and(|(_, st)| st != "Z" && st != "X");
        alive
            && crate::cgroup::proc_cgroup(&path)
                .is_some_and(|p| crate::cgroup::is_within_bytes(&p, within))
    })
}

/// The thread-group id of thread `tid`, from `/proc/<tid>/status` (which does not touch the
/// process's memory); `None` if it is gone.
pub fn tgid_of(tid: i32) -> Option<i32> {
    let mut buf = [0u8; 512];
    let n = std::fs::File::open(format!("/proc/{tid}/status"))
        .and_then(|mut f| f.read(&mut buf))
        .ok()?;
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Just the command name (`/proc/<pid>/comm`, at most 16 bytes); empty if gone.
pub fn comm(pid: i32) -> String {
    let mut buf = [0u8; 64];
    std::fs::File::open(format!("/proc/{pid}/comm"))
        .and_then(|mut f| f.read(&mut buf))
        .map(|n| String::from_utf8_lossy(&buf[..n]).trim_end().to_string())
        .unwrap_or_default()
}

/// The first [`MAX_CMDLINE`] bytes of `/proc/<pid>/cmdline`, arguments joined by spaces, with
/// `...` when cut. **May block** for as long as the process's `mmap_lock` is held: call it only
/// off any path that must finish (see [`CmdlineReader`]).
pub fn cmdline_blocking(pid: i32) -> String {
    let mut raw = Vec::with_capacity(MAX_CMDLINE + 1);
    let _ = std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|f| f.take(MAX_CMDLINE as u64 + 1).read_to_end(&mut raw));
    let cut = raw.len() > MAX_CMDLINE;
    raw.truncate(MAX_CMDLINE);
    let mut text = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    if cut {
        text.push_str("...");
    }
    text
}

/// Command lines read by a background thread, for one stop's report.
///
/// [`CmdlineReader::request`] queues pids (never blocks: when the queue is full the request is
/// dropped); [`CmdlineReader::get`] returns what has been read so far. One thread serves the
/// whole process: if a wedged task blocks it, later requests simply go unanswered (reports show
/// an empty command line), and the thread resumes once the task is killed.
#[derive(Debug, Default)]
pub struct CmdlineReader {
    got: Arc<Mutex<HashMap<i32, String>>>,
}

type Request = (Vec<(i32, u64)>, Weak<Mutex<HashMap<i32, String>>>);

/// Pending requests (batches) across all stops of the process.
const QUEUE: usize = 1024;

fn worker() -> &'static SyncSender<Request> {
    static TX: OnceLock<SyncSender<Request>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Request>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("gracekill-cmdline".into())
            .spawn(move || {
                for (procs, slot) in rx {
                    for (pid, start) in procs {
                        // The stop that asked may be over: skip the reads then.
                        if slot.strong_count() == 0 {
                            break;
                        }
                        let line = cmdline_blocking(pid);
                        // Read by pid: kept only if the pid still names the process asked
                        // about (its start time), so it did during the read too.
                        if stat_of(&pid.to_string()).is_none_or(|s| s.starttime != start) {
                            continue;
                        }
                        if let Some(slot) = slot.upgrade()
                            && let Ok(mut map) = slot.lock()
                        {
                            map.insert(pid, line);
                        }
                    }
                }
            });
        if spawned.is_err() {
            tracing::debug!("no thread for command lines: reports will not show them");
        }
        tx
    })
}

impl CmdlineReader {
    /// Asks for these processes' command lines, each named by its pid and start time (see
    /// [`Stat::starttime`]), in one batch (one wakeup of the reader). A line is kept only if its
    /// pid still names that process once it has been read. Never blocks.
    pub fn request(&self, procs: Vec<(i32, u64)>) {
        match worker().try_send((procs, Arc::downgrade(&self.got))) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// The command line of `pid` if it has been read (empty otherwise).
    pub fn get(&self, pid: i32) -> String {
        self.got
            .lock()
            .ok()
            .and_then(|m| m.get(&pid).cloned())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line =
            b"4242 (a) b (c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, "a) b (c");
        assert_eq!(s.state, "S");
        assert_eq!(s.ppid, 17);
        assert_eq!(s.starttime, 987_654);
        assert_eq!(parse_stat(b"4242 (x) S"), None);
        let me = stat_of("self").unwrap();
        assert_eq!(
            me.ppid,
            rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get())
        );
    }

    /// `TracerPid` is the kernel's line, not one a comm could forge (`Name:` is escaped), and
    /// 0 means untraced.
    #[test]
    fn the_tracer_is_read_from_its_own_line() {
        let status = b"Name:\tsleep\\nTracerPid:\t66\nUmask:\t0022\nState:\tt (tracing stop)\n\
                       Tgid:\t4242\nNgid:\t0\nPid:\t4242\nPPid:\t1\nTracerPid:\t4300\nUid:\t0";
        assert_eq!(parse_tracer(status), Some(4300));
        assert_eq!(parse_tracer(b"Name:\tx\nTracerPid:\t0\nUid:\t0"), None);
        assert_eq!(parse_tracer(b"Name:\tx\nState:\tS"), None);
        let me = rustix::process::getpid().as_raw_nonzero().get();
        assert_eq!(tracer_of(me), None, "this test runs untraced");
    }

    #[test]
    fn describes_itself_without_blocking() {
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let info = describe(me);
        assert!(!info.comm.is_empty());
        assert!(["R", "S"].contains(&info.state.as_str()), "{info:?}");
        assert!(!cmdline_blocking(me).is_empty());
        assert_eq!(comm(me), info.comm);
    }

    #[test]
    fn a_thread_in_another_state_than_the_leader_is_described() {
        // This thread runs (R) while describing; the leader (the test harness's main thread)
        // waits for it (S). The report names this thread.
        // The leader also runs for a moment whenever another test of this binary ends (it
        // prints the result): a few tries catch it waiting.
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        let mut info = describe(me);
        for _ in 0..100 {
            if info.state != "R" {
                break;
            }
            std::thread::yield_now();
            info = describe(me);
        }
        assert_ne!(info.state, "R", "{info:?}");
        assert!(
            info.threads.iter().any(|t| t.tid == tid && t.state == "R"),
            "{info:?}"
        );
    }

    #[test]
    fn the_reader_answers_in_the_background() {
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let start = stat_of("self").unwrap().starttime;
        // Asked about a process of another start time under this pid: by the time the right
        // one is answered (the reader serves requests in order), the other was not kept.
        let other = CmdlineReader::default();
        other.request(vec![(me, start + 1)]);
        let r = CmdlineReader::default();
        r.request(vec![(me, start)]);
        let t = std::time::Instant::now();
        while r.get(me).is_empty() && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::yield_now();
        }
        assert_eq!(r.get(me), cmdline_blocking(me));
        assert_eq!(
            other.get(me),
            "",
            "a line read by a pid that names another process"
        );
    }
}
