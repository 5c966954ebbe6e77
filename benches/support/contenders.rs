//! The contenders. gracekill itself (the library call and the CLI as a whole process), and
//! re-implementations, written for this harness, of the approaches people use today. Each
//! re-implementation keeps the *timing structure* of the original (what it signals, how it
//! notices the end, how it escalates); none is the original code.
//!
//! Safety deviations, all of which can only make a contender slower, never faster: the
//! runc-style, thermos-style and naive contenders send every per-pid signal through a pidfd
//! whose cgroup membership is proven first (`gracekill::pidfd::PidFd::open_member`), where the
//! originals call `kill(pid)`. A stale pid could otherwise hit a recycled pid of a process this
//! bench did not start (fork storms recycle pids quickly). That costs them a few microseconds
//! per process. Zombies count as exited (the bench is their reaper and reaps between rounds; a
//! real init reaps them at once).

use std::fs::File;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gracekill::pidfd::PidFd;
use gracekill::{Mount, Policy, Signal, StopOptions};
use rustix::event::{PollFd, PollFlags};

use crate::sys;
use crate::task::{proc_stat, wait_empty};

/// Who stops the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    /// The least any stopper could do: `kill(2)` every pid in `cgroup.procs` once, then block in
    /// `poll(POLLPRI)` on `cgroup.events` until `populated 0`; `cgroup.kill` at the deadline. No
    /// pidfds, no membership proof, no second enumeration, no bookkeeping.
    Floor,
    /// The same floor as a program of its own, in C (`benches/support/floor.c`): what the CLI,
    /// also a whole process (fork, exec, exit, reaped by its parent), is compared with. Not in
    /// [`Contender::ALL`]: only the detection and deadline scenarios run it.
    FloorProc,
    /// `gracekill::stop_blocking` in the bench process.
    Lib,
    /// `gracekill stop --json` as a whole process (fork, exec, runtime, JSON, exit).
    Cli,
    /// runc-style: signal every process in the cgroup (`runc kill --all`), then check
    /// `cgroup.procs` every 100 ms (sleep first, as runc's delete loop does); at the deadline
    /// `cgroup.kill`, then the same 100 ms polling until empty.
    Runc,
    /// A naive shell script, given the pid list from `cgroup.procs`: `kill -TERM $pids`, then
    /// `while any kill -0 $pid; do sleep 0.1; done`, and `kill -KILL $pids` at the deadline
    /// (without waiting afterwards).
    Naive,
    /// Thermos-style (Apache Aurora): SIGTERM to the task's main pid only (the `bash -c`
    /// wrapper); the runner learns of that pid's death at once (its coordinator is the parent
    /// and waits on it) and then SIGKILLs the whole process group; otherwise it looks for live
    /// processes of the group once per second (a `/proc` scan) and SIGKILLs the process group
    /// at the first check past the deadline.
    Thermos,
}

impl Contender {
    /// Every contender, in table order.
    pub const ALL: [Contender; 6] = [
        Contender::Floor,
        Contender::Lib,
        Contender::Cli,
        Contender::Runc,
        Contender::Naive,
        Contender::Thermos,
    ];

    /// The name used in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Contender::Floor => "kernel floor",
            Contender::FloorProc => "kernel floor (C process)",
            Contender::Lib => "gracekill (lib)",
            Contender::Cli => "gracekill (CLI)",
            Contender::Runc => "runc-style",
            Contender::Naive => "naive shell",
            Contender::Thermos => "thermos-style",
        }
    }

    /// A short tag for argument lists.
    pub fn tag(self) -> &'static str {
        match self {
            Contender::Floor => "floor",
            Contender::FloorProc => "floor-proc",
            Contender::Lib => "lib",
            Contender::Cli => "cli",
            Contender::Runc => "runc",
            Contender::Naive => "naive",
            Contender::Thermos => "thermos",
        }
    }

    /// The contender named by [`Contender::tag`].
    pub fn from_tag(s: &str) -> Option<Contender> {
        Contender::ALL.into_iter().find(|c| c.tag() == s)
    }
}

/// What the stopper is pointed at.
pub struct Target<'a> {
    /// The cgroup, relative to the mount.
    pub rel: &'a str,
    /// The cgroup's absolute path.
    pub path: &'a Path,
    /// The task's main process (leader of its process group).
    pub main: i32,
    /// A pidfd for `main`.
    pub main_fd: BorrowedFd<'a>,
}

impl Target<'_> {
    fn procs(&self) -> Vec<i32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    fn kill_all(&self) -> Result<()> {
        std::fs::write(self.path.join("cgroup.kill"), "1")
            .with_context(|| format!("write cgroup.kill of {}", self.path.display()))
    }
}

/// One stop, as the harness saw it.
#[derive(Clone, Debug)]
pub struct Run {
    /// Just before the stopper was called.
    pub start: Instant,
    /// Just after it returned.
    pub end: Instant,
    /// `end` on CLOCK_MONOTONIC, to compare with a helper's exit stamp.
    pub end_ns: u64,
    /// The final kill relative to the deadline (stop signal + grace), ms; `None` if no kill.
    pub late_ms: Option<f64>,
    /// The CLI's exit code.
    pub exit_code: Option<i32>,
    /// CPU time the stopper used (user + system): this thread's for in-process contenders, the
    /// whole process's for the CLI.
    pub cpu_ms: f64,
}

impl Run {
    /// Wall time of the stop, ms.
    pub fn ms(&self) -> f64 {
        ms(self.end - self.start)
    }
}

/// Milliseconds as f64.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Shared, per-bench context.
pub struct Ctx {
    /// The cgroup2 mount.
    pub mount: Mount,
    /// The `gracekill` binary.
    pub cli: PathBuf,
    /// The C floor, built by [`build_floor`].
    pub floor: PathBuf,
}

/// Compiles `benches/support/floor.c` into `dir` with the system's `cc -O2`.
pub fn build_floor(dir: &Path) -> Result<PathBuf> {
    let src = dir.join("floor.c");
    std::fs::write(&src, include_str!("floor.c"))?;
    let out = dir.join("gkbench-floor");
    let child = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .spawn()
        .context("run cc to build the C floor (install gcc)")?;
    // The bench's reaper thread reaps every child: wait through it.
    let (code, _) = sys::wait_child(child.id().cast_signed())?;
    if code != 0 {
        bail!("cc failed to build the C floor (exit {code})");
    }
    Ok(out)
}

/// Stops `t` with contender `c`, giving it `grace` before the final kill.
pub fn run(c: Contender, ctx: &Ctx, t: &Target<'_>, grace: Duration) -> Result<Run> {
    // The library's view of the cgroup, for the membership proofs; opened before the clock
    // starts for the re-implementations (the originals need no such handle).
    let cg = ctx.mount.open_cgroup(t.rel)?;
    let cpu0 = sys::usage_thread().cpu;
    let mut cpu_ms = None;
    let start = Instant::now();
    let (late_ms, exit_code) = match c {
        Contender::Floor => (floor(t, grace)?, None),
        Contender::FloorProc => (floor_proc(ctx, t, grace)?, None),
        Contender::Lib => {
            let mut policy = Policy::default();
            policy.steps[0].grace = grace;
            policy.kill_timeout = Duration::from_secs(10);
            let cg = ctx.mount.open_cgroup(t.rel)?;
            let o = gracekill::stop_blocking(&cg, &policy, &StopOptions::default())?;
            if o.outcome == gracekill::Verdict::Survivors {
                bail!("gracekill reported survivors: {}", o.to_json());
            }
            let late = match (o.steps.first(), o.steps.last()) {
                (Some(a), Some(b)) if o.steps.len() > 1 => Some(b.at_ms - a.at_ms - ms(grace)),
                _ => None,
            };
            (late, None)
        }
        Contender::Cli => {
            let (late, code, cpu) = cli(ctx, t, grace)?;
            cpu_ms = Some(cpu);
            (late, code)
        }
        Contender::Runc => (runc(&cg, t, grace)?, None),
        Contender::Naive => (naive(&cg, t, grace)?, None),
        Contender::Thermos => (thermos(&cg, t, grace)?, None),
    };
    let end = Instant::now();
    let end_ns = sys::mono_ns();
    let cpu_ms = cpu_ms.unwrap_or_else(|| ms(sys::usage_thread().cpu.saturating_sub(cpu0)));
    Ok(Run {
        start,
        end,
        end_ns,
        late_ms,
        exit_code,
        cpu_ms,
    })
}

fn late(signal_at: Instant, kill_at: Instant, grace: Duration) -> f64 {
    ms(kill_at - signal_at) - ms(grace)
}

/// The kernel floor. Plain `kill(2)` is safe here: the scenarios it runs in only have processes
/// that die of this very signal or of `cgroup.kill`, so every pid read from `cgroup.procs` is
/// alive (cannot have been recycled) until the floor's own signal reaches it. It is not run in
/// the fork storm, where pids die on their own.
fn floor(t: &Target<'_>, grace: Duration) -> Result<Option<f64>> {
    let ev = File::open(t.path.join("cgroup.events"))?;
    let signal_at = Instant::now();
    for pid in t.procs() {
        let _ = sys::kill(pid, libc::SIGTERM);
    }
    if wait_empty(&ev, signal_at + grace)? {
        return Ok(None);
    }
    let kill_at = Instant::now();
    t.kill_all()?;
    wait_empty(&ev, kill_at + Duration::from_secs(10))?;
    Ok(Some(late(signal_at, kill_at, grace)))
}

/// The C floor as a whole process; the clock stops when it has been reaped, as for the CLI.
fn floor_proc(ctx: &Ctx, t: &Target<'_>, grace: Duration) -> Result<Option<f64>> {
    let child = Command::new(&ctx.floor)
        .arg(t.path)
        .arg(grace.as_millis().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {}", ctx.floor.display()))?;
    let pid = child.id().cast_signed();
    let out = std::io::read_to_string(child.stdout.expect("piped stdout"))?;
    let (code, _) = sys::wait_child(pid)?;
    if code != 0 {
        bail!("the C floor exited {code}: {out}");
    }
    match out.trim().strip_prefix("late_ms ") {
        Some("-") => Ok(None),
        Some(v) => Ok(Some(v.parse().context("the C floor's late_ms")?)),
        None => bail!("the C floor printed {out:?}"),
    }
}

/// `gracekill stop` as a user runs it.
fn cli(ctx: &Ctx, t: &Target<'_>, grace: Duration) -> Result<(Option<f64>, Option<i32>, f64)> {
    let child = Command::new(&ctx.cli)
        .args(["stop", "--json", "--kill-timeout", "10s", "--grace"])
        .arg(format!("{}ms", grace.as_millis()))
        .arg(t.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {}", ctx.cli.display()))?;
    let pid = child.id().cast_signed();
    let out = std::io::read_to_string(child.stdout.expect("piped stdout"))?;
    let err = std::io::read_to_string(child.stderr.expect("piped stderr"))?;
    let (code, usage) = sys::wait_child(pid)?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("gracekill printed no JSON (exit {code}): {out}{err}"))?;
    if !(code == 0 || code == 3) {
        bail!("gracekill exited {code}: {out}{err}");
    }
    let steps = v["steps"].as_array().cloned().unwrap_or_default();
    let late = match (steps.first(), steps.last()) {
        (Some(a), Some(b)) if steps.len() > 1 => Some(
            b["at_ms"].as_f64().unwrap_or(f64::NAN)
                - a["at_ms"].as_f64().unwrap_or(f64::NAN)
                - ms(grace),
        ),
        _ => None,
    };
    Ok((late, Some(code), ms(usage.cpu)))
}

/// Signals `pid` if it is still a member of `cg` (see the module docs: the originals call
/// `kill(pid)` directly).
fn safe_kill(cg: &gracekill::Cgroup, pid: i32, sig: Signal) -> Result<bool> {
    Ok(match PidFd::open_member(cg, pid)? {
        Some(p) => p.send_signal(sig)?,
        None => false,
    })
}

const TICK: Duration = Duration::from_millis(100);

fn runc(cg: &gracekill::Cgroup, t: &Target<'_>, grace: Duration) -> Result<Option<f64>> {
    let signal_at = Instant::now();
    for pid in t.procs() {
        safe_kill(cg, pid, Signal::TERM)?;
    }
    loop {
        std::thread::sleep(TICK);
        if t.procs().is_empty() {
            return Ok(None);
        }
        if Instant::now() >= signal_at + grace {
            break;
        }
    }
    let kill_at = Instant::now();
    t.kill_all()?;
    for _ in 0..100 {
        std::thread::sleep(TICK);
        if t.procs().is_empty() {
            break;
        }
    }
    Ok(Some(late(signal_at, kill_at, grace)))
}

/// `kill -0` on a pid that is not a zombie.
fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != b'Z' && state != b'X')
}

fn naive(cg: &gracekill::Cgroup, t: &Target<'_>, grace: Duration) -> Result<Option<f64>> {
    let pids = t.procs();
    let signal_at = Instant::now();
    for &pid in &pids {
        safe_kill(cg, pid, Signal::TERM)?;
    }
    loop {
        if !pids.iter().any(|&p| alive(p)) {
            return Ok(None);
        }
        if Instant::now() >= signal_at + grace {
            break;
        }
        std::thread::sleep(TICK);
    }
    let kill_at = Instant::now();
    for &pid in &pids {
        safe_kill(cg, pid, Signal::KILL)?;
    }
    Ok(Some(late(signal_at, kill_at, grace)))
}

fn thermos(cg: &gracekill::Cgroup, t: &Target<'_>, grace: Duration) -> Result<Option<f64>> {
    let signal_at = Instant::now();
    rustix::process::pidfd_send_signal(t.main_fd, rustix::process::Signal::TERM)?;
    let pgid = t.main;
    loop {
        let main_died = {
            let ts = rustix::time::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            };
            let mut fds = [PollFd::new(&t.main_fd, PollFlags::IN)];
            matches!(rustix::event::poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
        };
        if main_died {
            // The wrapper is dead, so the task "is done": SIGKILL what is left of its group.
            let kill_at = Instant::now();
            kill_group(cg, t, pgid);
            return Ok(Some(late(signal_at, kill_at, grace)));
        }
        if Instant::now() >= signal_at + grace {
            let kill_at = Instant::now();
            kill_group(cg, t, pgid);
            return Ok(Some(late(signal_at, kill_at, grace)));
        }
        if !group_alive(t.main) {
            return Ok(None);
        }
    }
}

/// SIGKILL to process group `pgid`, as Thermos sends it, but through a proven pidfd per member
/// of the task's cgroup (the bench reaps at once, so the group's leader may be gone and its pid
/// free: `killpg` could reach a process this bench did not start).
fn kill_group(cg: &gracekill::Cgroup, t: &Target<'_>, pgid: i32) {
    for pid in t.procs() {
        if proc_stat(pid).is_some_and(|(_, g)| g == pgid) {
            let _ = safe_kill(cg, pid, Signal::KILL);
        }
    }
}

/// A `/proc` scan: is any process of process group `pgid` alive?
fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| proc_stat(pid).is_some_and(|(s, g)| g == pgid && s != b'Z' && s != b'X'))
}
