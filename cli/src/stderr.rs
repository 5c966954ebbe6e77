//! A stderr that a task cannot use to hold up its own stop.
//!
//! `run`'s task inherits `run`'s stderr, and `gracekill stop` may share a terminal with the task
//! it stops. The task can keep that pipe full while its reader is slow, or stop the terminal's
//! output (`tcflow(TCOOFF)`); a blocking `write` of a status line or a log event would then hold
//! the stopper's only thread, and the stop with it, past the task's deadlines.
//!
//! So every line goes into a bounded queue, and a writer thread, started at the first line,
//! does the blocking writes. A line that does not fit (1,024 lines or 1 MiB queued), or that
//! comes when no thread can be started (the task took the user's `RLIMIT_NPROC`), is dropped and
//! counted; the count is written with the next line that gets through. The queue is armed only
//! for the stop ([`Queue::arm`]); [`Queue::finish`] waits for it to drain once the stop is over,
//! and lines are written at once again, before and after, as any program's own writes are.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Lines queued at most.
const MAX_LINES: usize = 1024;
/// Bytes queued at most.
const MAX_BYTES: usize = 1 << 20;

/// The queue's sending end and the thread that writes what it sends.
type Writer = (SyncSender<Vec<u8>>, JoinHandle<()>);

/// A queue of lines in front of one blocking writer.
pub struct Queue {
    sink: Arc<Mutex<Box<dyn Write + Send>>>,
    writer: Mutex<Option<Writer>>,
    /// Bytes in the queue.
    queued: Arc<AtomicUsize>,
    /// Lines dropped since the last one queued.
    dropped: AtomicUsize,
    /// Lines are written at once, blocking as any program's would: until [`Queue::arm`], and
    /// again from [`Queue::finish`] on.
    direct: AtomicBool,
}

impl Queue {
    pub fn new(sink: impl Write + Send + 'static) -> Queue {
        Queue {
            sink: Arc::new(Mutex::new(Box::new(sink))),
            writer: Mutex::new(None),
            queued: Arc::default(),
            dropped: AtomicUsize::new(0),
            direct: AtomicBool::new(true),
        }
    }

    /// From now until [`Queue::finish`], lines are queued: call it just before a stop (or the
    /// supervision that may start one) begins. Before, nothing is queued, so no thread is needed
    /// for an error said before any stop, and none can be lost for want of one.
    pub fn arm(&self) {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.direct.store(false, Ordering::Relaxed);
    }

    /// Queues `line` (its newline included) without ever blocking on the sink, once armed. The first line
    /// queued after some were dropped carries their count, so the gap is said where it is.
    pub fn send(&self, line: &[u8]) {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.direct.load(Ordering::Relaxed) {
            let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
            let _ = sink.write_all(line);
            let _ = sink.flush();
            return;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        let mut bytes = Vec::new();
        if dropped > 0 {
            bytes.extend_from_slice(dropped_line(dropped).as_bytes());
        }
        bytes.extend_from_slice(line);
        let len = bytes.len();
        let fits = self.queued.load(Ordering::Relaxed) + len <= MAX_BYTES;
        if fits && writer.is_none() {
            *writer = self.start();
        }
        // Counted before the send: the writer may take it off at once.
        self.queued.fetch_add(len, Ordering::Relaxed);
        let sent = fits
            && match &*writer {
                Some((tx, _)) => tx.try_send(bytes).is_ok(),
                None => false,
            };
        if !sent {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.dropped.fetch_add(dropped + 1, Ordering::Relaxed);
        }
    }

    /// Queues a redraw of a progress line, unless lines are still waiting to be written: then
    /// the next redraw will say more, and a terminal whose output was stopped is not made to
    /// replay every stale one when it resumes. Not counted as dropped.
    pub fn redraw(&self, line: &[u8]) {
        if self.queued.load(Ordering::Relaxed) == 0 {
            self.send(line);
        }
    }

    /// Starts the writer thread; `None` when no thread can be had.
    fn start(&self) -> Option<Writer> {
        let (tx, rx) = sync_channel(MAX_LINES);
        let sink = self.sink.clone();
        let queued = self.queued.clone();
        let thread = std::thread::Builder::new()
            .name("stderr".into())
            .stack_size(64 * 1024)
            .spawn(move || drain(rx, &sink, &queued))
            .ok()?;
        Some((tx, thread))
    }

    /// Waits until every queued line is written, then writes the count of those dropped since;
    /// later lines are written at once. Blocks as long as the sink does: call it once the stop
    /// is over.
    pub fn finish(&self) {
        // From here on a SIGINT or SIGTERM ends the process, as any program's, even while it
        // waits on a reader.
        gracekill::interrupts::restore_defaults();
        // Held throughout: a line sent meanwhile waits, and comes after those queued.
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((tx, thread)) = writer.take() {
            drop(tx);
            let _ = thread.join();
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
            let _ = sink.write_all(dropped_line(dropped).as_bytes());
            let _ = sink.flush();
        }
        self.direct.store(true, Ordering::Relaxed);
    }
}

fn dropped_line(n: usize) -> String {
    format!(
        "gracekill: {n} line(s) of output dropped here: stderr was blocked, or no thread could write it\n"
    )
}

/// The writer thread: writes each line as it comes, blocking as long as the sink does.
fn drain(rx: Receiver<Vec<u8>>, sink: &Mutex<Box<dyn Write + Send>>, queued: &AtomicUsize) {
    // A terminal with TOSTOP set whose foreground the task took would stop the whole stopper,
    // mid-stop, at this thread's first write.
    gracekill::interrupts::never_stopped_by_terminal_writes();
    for line in rx {
        let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
        let _ = sink.write_all(&line);
        let _ = sink.flush();
        queued.fetch_sub(line.len(), Ordering::Relaxed);
    }
}

/// The process's stderr behind a [`Queue`].
pub fn global() -> &'static Queue {
    static STDERR: std::sync::OnceLock<Queue> = std::sync::OnceLock::new();
    STDERR.get_or_init(|| Queue::new(std::io::stderr()))
}

/// A `Write` for the tracing subscriber: each event it formats is one write, queued whole, its
/// control characters escaped (see [`escape_event`]).
pub struct Events;

impl Write for Events {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        global().send(&escape_event(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One formatted log event with the control characters a task can put in it escaped: its
/// sub-cgroup names and command names reach log lines, and the subscriber escapes ESC and the C1
/// controls in field values, not `\r`, `\t`, a backspace or SO/SI, which would let a task
/// rewrite or hide a line at a terminal. ESC itself passes (the subscriber's own colours) and so
/// does the event's final newline; any other newline (a `comm` may hold one) is escaped, so that
/// an event stays one line.
fn escape_event(buf: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    let plain = |b: u8| (b >= 0x20 && b != 0x7f) || b == 0x1b;
    if body.iter().all(|&b| plain(b)) {
        return std::borrow::Cow::Borrowed(buf);
    }
    let mut out = Vec::with_capacity(buf.len() + 16);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b if plain(b) => out.push(b),
            b => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    if body.len() < buf.len() {
        out.push(b'\n');
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task's names cannot rewrite a log line: carriage returns, tabs, backspaces, SO/SI and
    /// inner newlines are escaped; the subscriber's colours and the final newline are kept.
    #[test]
    fn log_events_keep_their_colours_and_lose_a_tasks_control_characters() {
        let plain = b"\x1b[2mDEBUG\x1b[0m thawed frozen cgroup cgroup=/t/a\n";
        assert_eq!(escape_event(plain).as_ref(), plain);
        assert_eq!(
            escape_event(b"x cgroup=/t/\rgracekill: graceful\x08\x0e\tz\x7f\n").as_ref(),
            b"x cgroup=/t/\\rgracekill: graceful\\x08\\x0e\\tz\\x7f\n"
        );
        assert_eq!(
            escape_event(b"comm=a\nfake line\n").as_ref(),
            b"comm=a\\nfake line\n"
        );
        assert_eq!(escape_event(b"no newline\r").as_ref(), b"no newline\\r");
    }
    use std::io::Read;
    use std::os::fd::OwnedFd;

    /// A queue in front of a pipe already full, so that the writer's first write blocks; and
    /// the pipe's read end.
    fn stalled() -> (Queue, OwnedFd) {
        let (r, w) = rustix::pipe::pipe().unwrap();
        rustix::fs::fcntl_setfl(&w, rustix::fs::OFlags::NONBLOCK).unwrap();
        while rustix::io::write(&w, &[b'x'; 4096]).is_ok() {}
        rustix::fs::fcntl_setfl(&w, rustix::fs::OFlags::empty()).unwrap();
        let q = Queue::new(std::fs::File::from(w));
        q.arm();
        (q, r)
    }

    /// Reads the pipe while the queue finishes; what the queue wrote (past the filling).
    fn read_after_finish(q: Queue, r: OwnedFd) -> String {
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            std::fs::File::from(r).read_to_end(&mut all).unwrap();
            all
        });
        q.finish();
        drop(q);
        let all = reader.join().unwrap();
        let start = all.iter().position(|b| *b != b'x').unwrap_or(all.len());
        String::from_utf8_lossy(&all[start..]).into_owned()
    }

    /// A sink nobody reads (a full pipe) takes no line's sender with it: past the queue's
    /// bound lines are dropped, and once the reader comes, every queued line arrives in order,
    /// then the count of those dropped.
    #[test]
    fn a_stalled_sink_drops_and_counts_instead_of_blocking() {
        let (q, r) = stalled();
        let total = MAX_LINES + 500;
        for i in 0..total {
            q.send(format!("line {i}\n").as_bytes());
        }
        let text = read_after_finish(q, r);
        // Every line written in order; each gap said where it is, with its size; the queue's
        // worth kept (one more in the writer's hands once it has started).
        let mut next = 0;
        let mut kept = 0;
        for l in text.lines() {
            if let Some(n) = l.strip_prefix("gracekill: ") {
                let n: usize = n.split(' ').next().unwrap().parse().unwrap();
                next += n;
            } else {
                assert_eq!(l, format!("line {next}"), "{text}");
                next += 1;
                kept += 1;
            }
        }
        assert_eq!(next, total, "{text}");
        assert!((MAX_LINES..=MAX_LINES + 1).contains(&kept), "{kept}");
    }

    /// Past the byte bound, lines are dropped even with line slots free.
    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let (q, r) = stalled();
        let mut big = vec![b'y'; 300 * 1024];
        big.push(b'\n');
        for _ in 0..10 {
            q.send(&big);
        }
        assert!(q.queued.load(Ordering::Relaxed) <= MAX_BYTES);
        let text = read_after_finish(q, r);
        let kept = text.lines().filter(|l| l.starts_with('y')).count();
        // Three fit in 1 MiB, the one in the writer's hands counted.
        assert_eq!(kept, 3);
        assert!(text.ends_with(&dropped_line(10 - kept)), "{kept}");
    }
}
