//! The cgroups and processes the bench stops.
//!
//! Every cgroup is a [`Cg`] guard (`gracekill-testkit`, shared with the tests): dropping it
//! (also while unwinding from a panic) SIGKILLs whatever is left inside through `cgroup.kill`,
//! waits for the cgroup to empty and removes it and everything below it. The processes are the bench binary itself re-run as a helper
//! (`__helper MODE ...`, see [`helper_main`]) that joins its cgroup before exec and then forks
//! the rest of the task, so 5000 processes take about a second to start.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::sys;

/// The bench's cgroups are the test support's guard: dropping one kills what is inside,
/// waits for it to empty and removes it; `wait_empty` is the kernel's own wait on
/// `cgroup.events`.
pub use gracekill_testkit::{Cg, wait_empty};

/// A started task: the cgroup, its main process (our child) and that process's stdout.
pub struct Task {
    /// The task's cgroup (removed when the task is dropped).
    pub cg: Cg,
    /// The main process: the helper, or `bash` for the mission scenario. Our child, and the
    /// leader of the task's process group. Not reaped until [`Task::finish`], so its pid (and
    /// process group id) cannot be recycled while a contender works on it.
    pub main: i32,
    /// A pidfd for `main`.
    pub main_fd: OwnedFd,
    out: BufReader<ChildStdout>,
    _child: Child,
}

/// Resolves the bench binary for re-running itself as a helper.
pub fn self_exe() -> PathBuf {
    std::env::current_exe().expect("path of the bench binary")
}

impl Task {
    /// Starts `__helper ARGS...` inside a new cgroup `cg`, as its own process group, and waits
    /// until it says it is ready.
    pub fn helper(cg: Cg, args: &[&str]) -> io::Result<Task> {
        let mut cmd = Command::new(self_exe());
        cmd.arg("__helper").args(args);
        Task::start(cg, cmd)
    }

    /// Starts `bash -c SCRIPT` inside `cg` (the mission scenario); the script must start a
    /// helper that prints `ready`.
    pub fn bash(cg: Cg, script: &str) -> io::Result<Task> {
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(script);
        Task::start(cg, cmd)
    }

    fn start(cg: Cg, mut cmd: Command) -> io::Result<Task> {
        let procs = File::options()
            .write(true)
            .open(cg.path.join("cgroup.procs"))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        gracekill::cgroup::join_cgroup_before_exec(&mut cmd, &procs);
        let mut child = cmd.spawn()?;
        drop(procs);
        let main = child.id().cast_signed();
        let main_fd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(main).expect("child pid"),
            rustix::process::PidfdFlags::empty(),
        )?;
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut t = Task {
            cg,
            main,
            main_fd,
            out,
            _child: child,
        };
        let line = t.line()?;
        if line.trim() != "ready" {
            return Err(io::Error::other(format!(
                "helper did not start (said {line:?})"
            )));
        }
        Ok(t)
    }

    /// The next line the task printed ("" at EOF).
    pub fn line(&mut self) -> io::Result<String> {
        let mut s = String::new();
        self.out.read_line(&mut s)?;
        Ok(s)
    }

    /// Ends the round: waits up to `settle` for the cgroup to empty on its own, then kills what
    /// is left, reaps the main process and reads what the task printed after `ready` (every
    /// writer is gone by then). Returns how many processes were still there after `settle`
    /// (the survivors) and that output.
    pub fn finish(mut self, settle: Duration) -> io::Result<(usize, String)> {
        let survivors = if self.cg.wait_empty(settle)? {
            0
        } else {
            let n = self.cg.procs().len();
            self.cg.kill()?;
            self.cg.wait_empty(Duration::from_secs(10))?;
            n.max(1)
        };
        let mut rest = String::new();
        let _ = io::Read::read_to_string(&mut self.out, &mut rest);
        let _ = sys::wait_child_for(self.main, Duration::from_secs(10));
        sys::reap_all_nohang();
        Ok((survivors, rest))
    }
}

/// Reads `/proc/<pid>/stat`: (state, process group). `None` if the process is gone.
pub fn proc_stat(pid: i32) -> Option<(u8, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let state = f.next()?.bytes().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// `__helper MODE ...`: the processes being stopped. Runs inside the task's cgroup (joined
/// before exec), prints `ready` once every process of the task exists, then waits to be
/// stopped. Modes:
/// - `hold N die|ignore|late:MS`: N processes; SIGTERM kills them (`die`), is ignored
///   (`ignore`), or (`late:MS`) kills the N-1 children at once while the helper itself exits
///   MS ms after it, printing `exit <CLOCK_MONOTONIC ns>` just before `_exit`.
/// - `hold N stamp`: N processes that SIGTERM does not end; the helper prints
///   `term <CLOCK_MONOTONIC ns>` as soon as its first SIGTERM arrives (the outside measure of
///   the deadline: the kill is due the grace after this stamp).
/// - `flush MS FILE`: on SIGTERM, "flush" for MS ms, write FILE, exit (the mission's app).
/// - `storm CHAINS`: ignores SIGTERM; CHAINS processes each fork a successor every ~1 ms and
///   exit, the successor calling setsid (a daemon escaping its process group, forever).
/// - `many N PARENT`: the helper stays in its cgroup (`PARENT/t0`) and forks N-1 children,
///   moving child i into `PARENT/ti`.
///
/// Arguments after `--pad` are ignored: they only make the command line long (every process
/// forked by the helper shares it, as `/proc/<pid>/cmdline` shows).
pub fn helper_main(args: &[String]) -> ! {
    let a: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .take_while(|a| *a != "--pad")
        .collect();
    let ready = || {
        let mut o = io::stdout().lock();
        let _ = o.write_all(b"ready\n");
        let _ = o.flush();
    };
    match a.as_slice() {
        ["hold", n, "stamp"] => {
            let n: usize = n.parse().expect("process count");
            // Blocked before the forks: the children inherit the mask, and SIGTERM stays
            // pending in them for good.
            sys::block_sigterm();
            for _ in 1..n {
                if sys::fork().expect("fork").is_none() {
                    sys::pause_forever();
                }
            }
            ready();
            sys::wait_sigterm();
            let line = format!("term {}\n", sys::mono_ns());
            let _ = io::stdout().lock().write_all(line.as_bytes());
            sys::pause_forever();
        }
        ["hold", n, term] => {
            let n: usize = n.parse().expect("process count");
            if *term == "ignore" {
                sys::ignore_sigterm();
            }
            for _ in 1..n {
                if sys::fork().expect("fork").is_none() {
                    sys::pause_forever();
                }
            }
            if let Some(ms) = term.strip_prefix("late:") {
                let ms: u64 = ms.parse().expect("delay");
                sys::block_sigterm();
                ready();
                sys::wait_sigterm();
                std::thread::sleep(Duration::from_millis(ms));
                let line = format!("exit {}\n", sys::mono_ns());
                let _ = io::stdout().lock().write_all(line.as_bytes());
                sys::exit_now(0);
            }
            ready();
            sys::pause_forever();
        }
        ["flush", ms, file] => {
            let ms: u64 = ms.parse().expect("flush time");
            sys::block_sigterm();
            ready();
            sys::wait_sigterm();
            std::thread::sleep(Duration::from_millis(ms));
            let _ = std::fs::write(file, "flushed\n");
            sys::exit_now(0);
        }
        ["storm", chains] => {
            let chains: usize = chains.parse().expect("chain count");
            sys::ignore_sigterm();
            for _ in 0..chains {
                if sys::fork().expect("fork").is_none() {
                    loop {
                        std::thread::sleep(Duration::from_millis(1));
                        match sys::fork() {
                            Ok(None) => {
                                let _ = rustix::process::setsid();
                            }
                            Ok(Some(_)) => sys::exit_now(0),
                            Err(_) => {}
                        }
                    }
                }
            }
            ready();
            sys::pause_forever();
        }
        ["many", n, parent] => {
            let n: usize = n.parse().expect("task count");
            for i in 1..n {
                match sys::fork().expect("fork") {
                    None => sys::pause_forever(),
                    Some(pid) => {
                        let procs = Path::new(parent).join(format!("t{i}/cgroup.procs"));
                        std::fs::write(&procs, pid.to_string()).expect("move child");
                    }
                }
            }
            ready();
            sys::pause_forever();
        }
        _ => {
            eprintln!("gkbench helper: bad arguments {a:?}");
            sys::exit_now(2);
        }
    }
}

/// The number of open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

/// `VmHWM` (peak RSS) of this process, KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
