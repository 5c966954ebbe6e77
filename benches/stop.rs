//! `cargo bench --bench stop [-- --quick] [-- --out FILE] [-- --only SCENARIO,...]`
//!
//! gracekill measured side by side with the kernel's own limit and with re-implementations of
//! what people use today (see `support/contenders.rs`), on real cgroups and real processes, in
//! one run on one machine. Each scenario runs its contenders interleaved (A B C A B C ...,
//! rotating who goes first) so machine noise hits all of them alike, and reports percentiles and
//! ratios against the kernel floor. `--quick` (CI) uses small counts and fails (exit 1) on any
//! error or correctness failure, e.g. a process surviving gracekill; missed *speed* targets are
//! reported, never fatal, because these machines are noisy.
//!
//! `--out FILE` and `--samples FILE` (relative to the directory cargo was run in) write the
//! tables, and every sample of the plotted distributions as JSON (for
//! `ci/plot-bench`). `--only latency,scale,...` runs some scenarios; `--sizes 1000,5000` sets the scale
//! scenario's process counts. `--profile perf|callgrind|strace` instead starts 5000 processes and runs one library stop of
//! them under the tool (output in `target/`).
//!
//! Needs root and cgroup v2. Every cgroup it creates lives under `/gkbench-<pid>` at the top of
//! the cgroup2 mount and is removed on exit, on error, on panic and on Ctrl-C.

#[path = "support/contenders.rs"]
mod contenders;
#[path = "support/engine.rs"]
mod engine;
#[path = "support/report.rs"]
mod report;
#[path = "support/sys.rs"]
mod sys;
#[path = "support/task.rs"]
mod task;

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use contenders::{Contender, Ctx, Run, Target, ms};
use report::{Table, num, pct, pct_row, ratio};
use task::{Cg, Task};

use Contender::{Cli, Floor, FloorProc, Lib, Naive, Runc, Thermos};

/// Run-wide state: the contenders' context, the bench's root cgroup, results.
struct Bench {
    ctx: Ctx,
    root: Cg,
    quick: bool,
    seq: usize,
    tables: Vec<Table>,
    /// Correctness failures (fatal).
    failures: Vec<String>,
    /// Targets: (target, met, measured).
    targets: Vec<(String, bool, String)>,
    scratch: std::path::PathBuf,
    /// `--sizes N,N...`: the scale scenario's process counts instead of the defaults.
    sizes: Option<Vec<usize>>,
    /// Every sample of the distributions that are plotted (`--samples FILE`): figure,
    /// contender, values in ms.
    samples: Vec<(String, String, Vec<f64>)>,
}

impl Bench {
    fn cg(&mut self, tag: &str) -> Result<Cg> {
        self.seq += 1;
        Ok(self.root.child(&format!("{tag}{}", self.seq))?)
    }

    fn n(&self, quick: usize, full: usize) -> usize {
        if self.quick { quick } else { full }
    }

    fn fail(&mut self, what: String) {
        eprintln!("FAILURE: {what}");
        self.failures.push(what);
    }

    fn target(&mut self, name: &str, met: bool, measured: String) {
        self.targets.push((name.into(), met, measured));
    }

    /// Runs `f(contender, round)` for each contender's rounds, interleaved, rotating the order.
    fn interleave(
        &mut self,
        plan: &[(Contender, usize)],
        mut f: impl FnMut(&mut Bench, Contender, usize) -> Result<()>,
    ) -> Result<()> {
        let rounds = plan.iter().map(|p| p.1).max().unwrap_or(0);
        for r in 0..rounds {
            for k in 0..plan.len() {
                let (c, n) = plan[(k + r) % plan.len()];
                if r >= n {
                    continue;
                }
                if sys::INTERRUPTED.load(Ordering::Relaxed) {
                    bail!("interrupted");
                }
                if let Err(e) = f(self, c, r) {
                    // A contender crashing is a failure of the run, whoever it is.
                    self.fail(format!("{} round {r}: {e:#}", c.name()));
                }
            }
        }
        Ok(())
    }
}

fn target_of<'a>(t: &'a Task) -> Target<'a> {
    Target {
        rel: &t.cg.rel,
        path: &t.cg.path,
        main: t.main,
        main_fd: std::os::fd::AsFd::as_fd(&t.main_fd),
    }
}

fn is_gracekill(c: Contender) -> bool {
    c == Lib || c == Cli
}

/// Samples per contender, in plan order.
struct Samples(Vec<(Contender, Vec<f64>, Vec<String>)>);

impl Samples {
    fn new(plan: &[(Contender, usize)]) -> Samples {
        Samples(plan.iter().map(|p| (p.0, Vec::new(), Vec::new())).collect())
    }
    fn push(&mut self, c: Contender, v: f64) {
        if let Some(e) = self.0.iter_mut().find(|e| e.0 == c) {
            e.1.push(v);
        }
    }
    fn note(&mut self, c: Contender, s: String) {
        if let Some(e) = self.0.iter_mut().find(|e| e.0 == c)
            && !e.2.contains(&s)
        {
            e.2.push(s);
        }
    }
    fn get(&self, c: Contender) -> &[f64] {
        self.0
            .iter()
            .find(|e| e.0 == c)
            .map_or(&[][..], |e| &e.1[..])
    }
    /// Keeps every sample for the plot, under `figure`.
    fn keep(&self, b: &mut Bench, figure: &str) {
        for (c, v, _) in &self.0 {
            b.samples
                .push((figure.to_string(), c.name().to_string(), v.clone()));
        }
    }
    fn table(&self, t: &mut Table) {
        let floor = self.get(Floor).to_vec();
        for (c, v, notes) in &self.0 {
            t.row(pct_row(c.name(), v, &floor, &notes.join("; ")));
        }
    }
}

/// 1. Detection latency: the last process exits 20 ms after the stop signal; time from its
///    exit to the stopper's return.
fn detection_latency(b: &mut Bench) -> Result<()> {
    let fast = b.n(15, 200);
    let plan = [
        (Floor, fast),
        (FloorProc, fast),
        (Lib, fast),
        (Cli, fast),
        (Runc, b.n(5, 50)),
        (Naive, b.n(5, 50)),
        (Thermos, b.n(5, 50)),
    ];
    let mut s = Samples::new(&plan);
    b.interleave(&plan, |b, c, _| {
        let cg = b.cg("lat")?;
        let task = Task::helper(cg, &["hold", "3", "late:20"])?;
        let run = contenders::run(c, &b.ctx, &target_of(&task), Duration::from_secs(5))?;
        let (survivors, out) = task.finish(Duration::from_secs(1))?;
        let exit_ns: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("exit "))
            .and_then(|v| v.trim().parse().ok())
            .context("the helper reported no exit time")?;
        s.push(c, (run.end_ns as f64 - exit_ns as f64) / 1e6);
        if c == Thermos {
            s.note(
                c,
                "returns when the main pid dies; SIGKILLs its 2 children, never signalled".into(),
            );
        }
        if survivors > 0 {
            s.note(c, format!("{survivors} survivors"));
            if is_gracekill(c) {
                b.fail(format!(
                    "latency: {survivors} processes survived {}",
                    c.name()
                ));
            }
        }
        Ok(())
    })?;
    let mut t = Table::new(
        "1. Detection latency (3 processes; the last exits 20 ms after SIGTERM; its exit -> stopper returns)",
        &report::PCT_HEADER,
    );
    s.table(&mut t);
    b.tables.push(t);
    s.keep(
        b,
        "Detection latency: the last exit -> the stopper returns (ms)",
    );
    let (lib, floor) = (s.get(Lib), s.get(Floor));
    let (p50, p99, f50) = (pct(lib, 50.0), pct(lib, 99.0), pct(floor, 50.0));
    b.target(
        "1. latency p50 <= 1 ms",
        p50 <= 1.0,
        format!("{} ms", num(p50)),
    );
    b.target(
        "1. latency p50 <= 1.5x floor",
        p50 <= 1.5 * f50,
        ratio(p50, f50),
    );
    b.target(
        "1. latency p99 <= 15 ms",
        p99 <= 15.0,
        format!("{} ms", num(p99)),
    );
    // The CLI is a whole process: it is held to the floor that is one too.
    let (cli, fproc) = (pct(s.get(Cli), 50.0), pct(s.get(FloorProc), 50.0));
    b.target(
        "1. CLI latency p50 <= 1.2x the C floor process",
        cli <= 1.2 * fproc,
        ratio(cli, fproc),
    );
    Ok(())
}

/// Time from the stop's start until the cgroup is empty: the stopper's return if the cgroup is
/// empty by then, else when the harness sees `populated 0` (up to `settle`).
fn time_to_empty(task: &Task, run: &Run, settle: Duration) -> Result<Option<f64>> {
    if !task.cg.populated() {
        return Ok(Some(run.ms()));
    }
    if task.cg.wait_empty(settle)? {
        return Ok(Some(ms(run.start.elapsed())));
    }
    Ok(None)
}

/// 2. Scale: N processes that exit on SIGTERM; time from stop to empty.
fn scale(b: &mut Bench) -> Result<()> {
    let sizes: Vec<(usize, usize)> = if let Some(sizes) = &b.sizes {
        sizes.iter().map(|&n| (n, b.n(3, 8))).collect()
    } else if b.quick {
        vec![(10, 3), (1000, 3)]
    } else {
        // 20,000 is what #11 asks for; this machine's pid_max is 32,768.
        vec![(10, 40), (100, 40), (1000, 20), (5000, 8), (20_000, 3)]
    };
    let mut t = Table::new(
        "2. Scale (N processes exit on SIGTERM; stop start -> cgroup empty)",
        &[
            "N",
            "contender",
            "rounds",
            "p50 ms",
            "p90 ms",
            "max ms",
            "p50 vs floor",
            "us/process (p50)",
            "stopper CPU ms (p50)",
            "notes",
        ],
    );
    let mut lib_p50 = Vec::new();
    for (n, rounds) in sizes {
        let plan: Vec<(Contender, usize)> = Contender::ALL.iter().map(|&c| (c, rounds)).collect();
        let mut s = Samples::new(&plan);
        let mut cpu = Samples::new(&plan);
        let nstr = n.to_string();
        b.interleave(&plan, |b, c, _| {
            let cg = b.cg("scale")?;
            let task = Task::helper(cg, &["hold", &nstr, "die"])?;
            // A running task, not one whose cgroup.events just changed (rate limit, see docs).
            std::thread::sleep(Duration::from_millis(20));
            let run = contenders::run(c, &b.ctx, &target_of(&task), Duration::from_secs(30))?;
            let returned_populated = task.cg.populated();
            cpu.push(c, run.cpu_ms);
            let done = time_to_empty(&task, &run, Duration::from_secs(2))?;
            let (survivors, _) = task.finish(Duration::from_millis(100))?;
            match done {
                Some(v) => s.push(c, v),
                None => s.note(c, "never emptied".into()),
            }
            if returned_populated {
                s.note(c, "returned before the cgroup was empty".into());
            }
            if survivors > 0 {
                s.note(c, format!("{survivors} survivors"));
                if is_gracekill(c) {
                    b.fail(format!("scale N={n}: {survivors} survived {}", c.name()));
                }
            }
            Ok(())
        })?;
        let floor = s.get(Floor).to_vec();
        for (c, v, notes) in &s.0 {
            let p50 = pct(v, 50.0);
            t.row(vec![
                nstr.clone(),
                c.name().into(),
                v.len().to_string(),
                num(p50),
                num(pct(v, 90.0)),
                num(pct(v, 100.0)),
                ratio(p50, pct(&floor, 50.0)),
                num(p50 * 1000.0 / n as f64),
                num(pct(cpu.get(*c), 50.0)),
                notes.join("; "),
            ]);
        }
        let (l, f) = (pct(s.get(Lib), 50.0), pct(&floor, 50.0));
        lib_p50.push((n, l));
        if n == 1000 {
            b.target("2. scale N=1000 <= 1.3x floor", l <= 1.3 * f, ratio(l, f));
        }
        if n >= 20_000 {
            b.target(
                &format!("2. scale N={n}: us/process <= 1.2x the floor's"),
                l <= 1.2 * f,
                format!(
                    "{} vs {} us/process ({})",
                    num(l * 1000.0 / n as f64),
                    num(f * 1000.0 / n as f64),
                    ratio(l, f)
                ),
            );
        }
    }
    if let (Some(&(n0, a)), Some(&(n1, z))) = (lib_p50.first(), lib_p50.last())
        && n1 > n0
    {
        // Linear: the per-process cost at the largest N is no worse than 1.5x the smallest's
        // (fixed costs make the small end look *more* expensive per process, never less).
        let per = |v: f64, n: usize| v / n as f64;
        b.target(
            &format!("2. scale linear (per-process cost N={n1} vs N={n0})"),
            per(z, n1) <= 1.5 * per(a, n0),
            ratio(per(z, n1), per(a, n0)),
        );
    }
    t.note("`returned before the cgroup was empty`: the stopper returned while processes were still exiting; the time shown is when the harness then saw `populated 0`.");
    b.tables.push(t);
    Ok(())
}

/// 3. Deadline precision: 10 processes ignore SIGTERM, 500 ms grace; when the final kill came.
fn deadline(b: &mut Bench) -> Result<()> {
    let plan = [
        (Floor, b.n(3, 60)),
        (FloorProc, b.n(3, 60)),
        (Lib, b.n(3, 60)),
        (Cli, b.n(3, 60)),
        (Runc, b.n(2, 15)),
        (Naive, b.n(2, 15)),
        (Thermos, b.n(2, 15)),
    ];
    let grace = Duration::from_millis(500);
    // Each stopper's own account (its report, or the harness's clock around its calls), and
    // the same deadline seen from outside: the app stamps its SIGTERM, a pidfd held by the
    // harness (on another thread) sees it die.
    let mut own = Samples::new(&plan);
    let mut outside = Samples::new(&plan);
    b.interleave(&plan, |b, c, _| {
        let cg = b.cg("dl")?;
        let task = Task::helper(cg, &["hold", "10", "stamp"])?;
        let fd = task.main_fd.try_clone()?;
        let death = std::thread::spawn(move || sys::wait_exit_ns(&fd, Duration::from_secs(20)));
        let run = contenders::run(c, &b.ctx, &target_of(&task), grace)?;
        let died_ns = death.join().expect("death watcher");
        let (survivors, rest) = task.finish(Duration::from_secs(1))?;
        let stamp_ns = rest
            .lines()
            .find_map(|l| l.strip_prefix("term ")?.trim().parse::<u64>().ok());
        match run.late_ms {
            Some(l) => own.push(c, l),
            None => own.note(c, "no final kill".into()),
        }
        match (stamp_ns, died_ns) {
            (Some(t), Some(d)) if d >= t => {
                outside.push(c, ms(Duration::from_nanos(d - t)) - ms(grace))
            }
            _ => outside.note(c, "no stamp or no death seen".into()),
        }
        if survivors > 0 {
            own.note(c, format!("{survivors} survivors"));
            if is_gracekill(c) {
                b.fail(format!("deadline: {survivors} survived {}", c.name()));
            }
        }
        if is_gracekill(c) && run.exit_code.is_some_and(|e| e != 3) {
            b.fail(format!(
                "deadline: CLI exit {:?}, expected 3",
                run.exit_code
            ));
        }
        Ok(())
    })?;
    let mut t = Table::new(
        "3. Deadline precision (10 processes ignore SIGTERM, 500 ms grace; how late the final kill is, ms; negative = early)",
        &[
            "contender",
            "rounds",
            "outside p50",
            "outside p99",
            "outside max",
            "p50 - floor's",
            "own min",
            "own p50",
            "own max",
            "notes",
        ],
    );
    outside.keep(
        b,
        "Final kill after a 500 ms grace, seen from outside: death - SIGTERM stamp - grace (ms)",
    );
    let floor_out = outside.get(Floor).to_vec();
    for (c, v, notes) in &own.0 {
        let o = outside.get(*c);
        let mut notes = notes.clone();
        notes.extend(
            outside
                .0
                .iter()
                .filter(|e| e.0 == *c)
                .flat_map(|e| e.2.clone()),
        );
        t.row(vec![
            c.name().into(),
            v.len().to_string(),
            num(pct(o, 50.0)),
            num(pct(o, 99.0)),
            num(pct(o, 100.0)),
            num(pct(o, 50.0) - pct(&floor_out, 50.0)),
            num(pct(v, 0.0)),
            num(pct(v, 50.0)),
            num(pct(v, 100.0)),
            notes.join("; "),
        ]);
    }
    t.note("Outside: the app's main process stamps CLOCK_MONOTONIC when its SIGTERM arrives; a pidfd held by the harness on another thread sees it die; lateness = death - stamp - grace (so it includes the kernel's SIGKILL delivery and exit, the same for every contender). Own: gracekill's Outcome (`steps[].at_ms`: SIGKILL step minus SIGTERM step minus grace); the others timed by the harness around their calls the same way.");
    b.tables.push(t);
    for c in [Lib, Cli] {
        let v = own.get(c);
        let (lo, p99) = (pct(v, 0.0), pct(v, 99.0));
        b.target(
            &format!("3. {} kill p99 <= 5 ms late, never early", c.name()),
            p99 <= 5.0 && lo >= 0.0,
            format!("min {} / p99 {} ms", num(lo), num(p99)),
        );
        let o = outside.get(c);
        let (p50, max) = (pct(o, 50.0), pct(o, 100.0));
        let (f50, fmax) = (pct(&floor_out, 50.0), pct(&floor_out, 100.0));
        b.target(
            &format!(
                "3. {} from outside: p50 <= floor + 1 ms, max <= floor + 3 ms",
                c.name()
            ),
            p50 <= f50 + 1.0 && max <= fmax + 3.0,
            format!(
                "p50 {} (floor {}) / max {} (floor {}) ms",
                num(p50),
                num(f50),
                num(max),
                num(fmax)
            ),
        );
    }
    Ok(())
}

/// 4. Fork storm: processes that ignore SIGTERM, fork a successor every ~1 ms and exit, the
///    successor leaving the process group (setsid).
fn fork_storm(b: &mut Bench) -> Result<()> {
    let r = b.n(2, 10);
    let plan = [(Lib, r), (Cli, r), (Runc, r), (Naive, r), (Thermos, r)];
    let mut s = Samples::new(&plan);
    let mut surv: Vec<(Contender, usize, usize)> = plan.iter().map(|p| (p.0, 0, 0)).collect();
    b.interleave(&plan, |b, c, _| {
        let cg = b.cg("storm")?;
        let task = Task::helper(cg, &["storm", "4"])?;
        std::thread::sleep(Duration::from_millis(50));
        let run = contenders::run(c, &b.ctx, &target_of(&task), Duration::from_millis(300))?;
        let done = time_to_empty(&task, &run, Duration::from_secs(1))?;
        let (survivors, _) = task.finish(Duration::ZERO)?;
        if let Some(v) = done {
            s.push(c, v);
        }
        if let Some(e) = surv.iter_mut().find(|e| e.0 == c) {
            e.1 += 1;
            e.2 += survivors;
        }
        if survivors > 0 && is_gracekill(c) {
            b.fail(format!("fork storm: {survivors} survived {}", c.name()));
        }
        Ok(())
    })?;
    let mut t = Table::new(
        "4. Fork storm (4 chains forking every ~1 ms with setsid, SIGTERM ignored, 300 ms grace)",
        &[
            "contender",
            "rounds",
            "rounds with survivors",
            "survivors (total)",
            "p50 ms to empty",
            "max ms to empty",
        ],
    );
    for (c, rounds, total) in &surv {
        let v = s.get(*c);
        t.row(vec![
            c.name().into(),
            rounds.to_string(),
            (rounds - v.len()).to_string(),
            total.to_string(),
            num(pct(v, 50.0)),
            num(pct(v, 100.0)),
        ]);
    }
    t.note("Survivors: processes still in the cgroup 1 s after the stopper returned (the harness then removes them with cgroup.kill). The kernel floor is not run here: it signals by raw pid, unsafe when pids die on their own.");
    b.tables.push(t);
    let g: usize = surv.iter().filter(|e| is_gracekill(e.0)).map(|e| e.2).sum();
    b.target(
        "4. fork storm: 0 survivors for gracekill",
        g == 0,
        g.to_string(),
    );
    Ok(())
}

/// Scenario 9, a hostile shape: N TERM-ignoring processes with 1.8 MB command lines each,
/// stopped by the CLI (a whole process, its peak RSS from `wait4`). The stopper must not copy
/// what the task makes big: lists are capped at 100, command lines at 512 bytes and read off
/// the kill's path.
fn hostile_memory(b: &mut Bench) -> Result<()> {
    let n = b.n(50, 10_000);
    let rounds = b.n(1, 3);
    // 1 MiB of command line: 8 arguments just under the kernel's 128 KiB per argument
    // (MAX_ARG_STRLEN). The helper's forks share those pages, so 10,000 such processes fit in
    // memory, while each one's /proc/<pid>/cmdline reads as the whole 1 MiB.
    let pad = "0".repeat(131_000);
    let mut args = vec![
        "hold".to_string(),
        n.to_string(),
        "ignore".into(),
        "--pad".into(),
    ];
    args.extend(std::iter::repeat_n(pad, 8));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut rss: Vec<f64> = Vec::new();
    let mut json_kib: Vec<f64> = Vec::new();
    let mut late: Vec<f64> = Vec::new();
    for _ in 0..rounds {
        let cg = b.cg("argv")?;
        let task = Task::helper(cg, &args)?;
        let pid0 = task.cg.procs().first().copied().unwrap_or(task.main);
        let argv_len = std::fs::read(format!("/proc/{pid0}/cmdline")).map_or(0, |c| c.len());
        if argv_len < 1_000_000 {
            bail!("hostile memory: the task's command line is {argv_len} bytes, not 1 MiB");
        }
        let child = Command::new(&b.ctx.cli)
            .args(["stop", "--json", "--grace", "1s", "--kill-timeout", "5s"])
            .arg(&task.cg.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let pid = child.id().cast_signed();
        let out = std::io::read_to_string(child.stdout.expect("piped"))?;
        let (code, usage) = sys::wait_child(pid)?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        // Every process ignores SIGTERM: all n are there for the final kill, and counted unless
        // the report says the count is partial (a stopper with fewer descriptors than
        // processes, and no time to list the rest before the deadline).
        let partial = v["warnings"].as_array().is_some_and(|w| {
            w.iter().any(|w| {
                w.as_str()
                    .is_some_and(|w| w.contains("killed_total counts only"))
            })
        });
        let counted = v["killed_total"].as_u64().unwrap_or(0);
        if code != 3 || !(counted == n as u64 || (partial && counted < n as u64)) {
            b.fail(format!(
                "hostile memory: exit {code}, killed_total {}",
                v["killed_total"]
            ));
        }
        rss.push(usage.maxrss_kib as f64 / 1024.0);
        json_kib.push(out.len() as f64 / 1024.0);
        let steps = v["steps"].as_array().cloned().unwrap_or_default();
        if let (Some(t), Some(k)) = (steps.first(), steps.last()) {
            late.push(
                k["at_ms"].as_f64().unwrap_or(0.0) - t["at_ms"].as_f64().unwrap_or(0.0) - 1000.0,
            );
        }
        let _ = task.finish(Duration::ZERO)?;
    }
    let mut t = Table::new(
        &format!("9. Hostile shape: {n} processes with 1 MiB command lines (gracekill CLI)"),
        &["measure", "median", "max"],
    );
    for (name, v) in [
        ("stopper peak RSS, MiB", &rss),
        ("JSON output, KiB", &json_kib),
        (
            "final kill after the 1 s grace, ms late (own report)",
            &late,
        ),
    ] {
        t.row(vec![name.into(), num(pct(v, 50.0)), num(pct(v, 100.0))]);
    }
    t.note("Peak RSS from wait4(2) of the `gracekill stop --json` process. The processes ignore SIGTERM and are forked from one helper whose command line is 1 MiB (8 arguments of 131,000 bytes), so each one's /proc/<pid>/cmdline is 1 MiB. Before the hostile-task fixes, 301 processes with 1.8 MB command lines took the stopper to 1.05 GB and a 548 MB JSON line, and the kill came 1.08 s after a 200 ms grace. With a 200 ms grace, 10,000 processes take most of it to signal through pidfds (~175 ms); the listing before the kill then reads for 5 ms at most and the report says its count is partial.");
    b.tables.push(t);
    let max_rss = pct(&rss, 100.0);
    b.target(
        "9. stopper peak RSS <= 32 MiB whatever the task's command lines",
        max_rss <= 32.0,
        format!("{} MiB", num(max_rss)),
    );
    Ok(())
}

/// Runs the bench binary as `__engine ARGS`, returns its JSON and its rusage.
fn engine(args: &[&str]) -> Result<(serde_json::Value, sys::Usage)> {
    engine_sampled(args, &[]).map(|(v, u, _)| (v, u))
}

/// [`engine`], also counting the engine process's voluntary context switches at each of
/// `at` (times after its start, in order; see [`sys::voluntary_switches`]).
fn engine_sampled(
    args: &[&str],
    at: &[Duration],
) -> Result<(serde_json::Value, sys::Usage, Vec<Option<u64>>)> {
    let t0 = Instant::now();
    let child = Command::new(task::self_exe())
        .arg("__engine")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id().cast_signed();
    let samples = sample_switches(pid, t0, at);
    let out = std::io::read_to_string(child.stdout.expect("piped"))?;
    let (code, usage) = sys::wait_child(pid)?;
    if code != 0 {
        bail!("engine {args:?} exited {code}");
    }
    Ok((serde_json::from_str(&out)?, usage, samples))
}

/// The voluntary context switches of process `pid` at each of `at` after `t0` (sleeping until
/// then; `None` where the process was gone).
fn sample_switches(pid: i32, t0: Instant, at: &[Duration]) -> Vec<Option<u64>> {
    at.iter()
        .map(|&a| {
            std::thread::sleep((t0 + a).saturating_duration_since(Instant::now()));
            sys::voluntary_switches(pid)
        })
        .collect()
}

/// 5. Many tasks: N single-process cgroups stopped concurrently by one engine process.
fn many_tasks(b: &mut Bench) -> Result<()> {
    let n = b.n(100, 1000);
    let rounds = b.n(1, 3);
    let plan = [(Floor, rounds), (Lib, rounds)];
    let mut rows: Vec<(Contender, serde_json::Value)> = Vec::new();
    b.interleave(&plan, |b, c, _| {
        let parent = b.cg("many")?;
        for i in 1..n {
            std::fs::create_dir(parent.path.join(format!("t{i}")))?;
        }
        let t0 = parent.child("t0")?;
        let nstr = n.to_string();
        let ppath = parent.path.to_string_lossy().into_owned();
        let task = Task::helper(t0, &["many", &nstr, &ppath])?;
        let (v, _) = engine(&["many", c.tag(), &parent.rel, &nstr])?;
        let left = parent.populated();
        let _ = task.finish(Duration::ZERO)?;
        if left || v["ok"].as_u64() != Some(n as u64) {
            let what = format!(
                "many tasks: {} stopped {} of {n} cleanly",
                c.name(),
                v["ok"]
            );
            if c == Lib {
                b.fail(what);
            } else {
                eprintln!("{what}");
            }
        }
        rows.push((c, v));
        drop(parent);
        Ok(())
    })?;
    let mut t = Table::new(
        &format!(
            "5. Many tasks ({n} single-process cgroups, stopped concurrently by one engine process)"
        ),
        &[
            "contender",
            "total ms (median)",
            "peak RSS MiB (max)",
            "fds before",
            "fds peak",
            "fds after",
        ],
    );
    for c in [Floor, Lib] {
        let r: Vec<&serde_json::Value> = rows.iter().filter(|r| r.0 == c).map(|r| &r.1).collect();
        let f = |k: &str| -> Vec<f64> { r.iter().filter_map(|v| v[k].as_f64()).collect() };
        t.row(vec![
            c.name().into(),
            num(pct(&f("total_ms"), 50.0)),
            num(pct(&f("hwm_kib"), 100.0) / 1024.0),
            num(pct(&f("fds_before"), 100.0)),
            num(pct(&f("fds_peak"), 100.0)),
            num(pct(&f("fds_after"), 100.0)),
        ]);
        if c == Lib {
            let total = pct(&f("total_ms"), 100.0);
            let rss = pct(&f("hwm_kib"), 100.0) / 1024.0;
            let back = r.iter().all(|v| v["fds_after"] == v["fds_before"]);
            b.target(
                &format!("5. {n} tasks < 2 s"),
                total < 2000.0,
                format!("{} ms", num(total)),
            );
            b.target(
                "5. peak RSS < 30 MB",
                rss < 30.0,
                format!("{} MiB", num(rss)),
            );
            b.target("5. fds back to baseline", back, back.to_string());
        }
    }
    t.note("Measured inside the engine process (`__engine many`): total from before opening the first cgroup to the last stop's return; peak RSS is its VmHWM; `fds peak` is sampled once every stop has started waiting.");
    b.tables.push(t);
    Ok(())
}

/// 6. Idle cost: a grace in which nothing exits, then the final kill, in a process of its own.
fn idle_cost(b: &mut Bench) -> Result<()> {
    let grace_ms = b.n(1000, 5000);
    // Wakeups vary by one or two between rounds (how the processes' exits batch after the kill):
    // five rounds, so the median means something.
    let rounds = b.n(1, 5);
    let plan: Vec<(Contender, usize)> = Contender::ALL.iter().map(|&c| (c, rounds)).collect();
    // Wakeups in the grace alone, sampled from outside between 10 % and 90 % of it: what a
    // stopper costs while it waits, apart from its start-up and the final kill.
    let window = [grace_ms / 10, grace_ms * 9 / 10].map(|m| Duration::from_millis(m as u64));
    // contender, wall ms, voluntary and involuntary switches, CPU ms, wakeups in the grace
    type Row = (Contender, f64, f64, f64, f64, f64);
    let mut rows: Vec<Row> = Vec::new();
    b.interleave(&plan, |b, c, _| {
        let cg = b.cg("idle")?;
        let task = Task::helper(cg, &["hold", "10", "ignore"])?;
        let (total, vcs, ivcs, cpu, samples) = if c == Cli {
            let t0 = Instant::now();
            let child = Command::new(&b.ctx.cli)
                .args(["stop", "--json", "--grace"])
                .arg(format!("{grace_ms}ms"))
                .arg(&task.cg.path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?;
            let pid = child.id().cast_signed();
            let samples = sample_switches(pid, t0, &window);
            let (code, u) = sys::wait_child(pid)?;
            if code != 3 {
                bail!("gracekill exited {code}, expected 3");
            }
            let t = ms(t0.elapsed());
            (t, u.nvcsw as f64, u.nivcsw as f64, ms(u.cpu), samples)
        } else {
            let (v, _, samples) = engine_sampled(
                &[
                    "idle",
                    c.tag(),
                    &task.cg.rel,
                    &task.main.to_string(),
                    &grace_ms.to_string(),
                ],
                &window,
            )?;
            let g = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            (g("total_ms"), g("nvcsw"), g("nivcsw"), g("cpu_ms"), samples)
        };
        let in_grace = match samples[..] {
            [Some(a), Some(b)] => b.saturating_sub(a) as f64,
            _ => f64::NAN,
        };
        let (survivors, _) = task.finish(Duration::from_secs(1))?;
        if survivors > 0 && is_gracekill(c) {
            b.fail(format!("idle: {survivors} survived {}", c.name()));
        }
        rows.push((c, total, vcs, ivcs, cpu, in_grace));
        Ok(())
    })?;
    let mut t = Table::new(
        &format!(
            "6. Idle cost ({grace_ms} ms grace, 10 processes ignore SIGTERM; the whole stop incl. the final kill)"
        ),
        &[
            "contender",
            "wall ms",
            "voluntary ctx switches",
            "involuntary",
            "CPU ms (user+sys)",
            "wakeups in the grace",
        ],
    );
    for c in Contender::ALL {
        let r: Vec<_> = rows.iter().filter(|r| r.0 == c).collect();
        let med = |f: fn(&Row) -> f64| pct(&r.iter().map(|x| f(x)).collect::<Vec<_>>(), 50.0);
        t.row(vec![
            c.name().into(),
            num(med(|x| x.1)),
            num(med(|x| x.2)),
            num(med(|x| x.3)),
            num(med(|x| x.4)),
            num(med(|x| x.5)),
        ]);
        if is_gracekill(c) {
            let w = med(|x| x.5);
            b.target(
                &format!("6. idle: {} wakes <= 5 times in the grace", c.name()),
                w <= 5.0,
                format!("{} voluntary switches", num(w)),
            );
        }
        if c == Lib {
            let (w, cpu) = (med(|x| x.2), med(|x| x.4));
            b.target(
                "6. idle: <= 5 wakeups",
                w <= 5.0,
                format!("{} voluntary switches", num(w)),
            );
            b.target(
                "6. idle: ~0 CPU (< 5 ms)",
                cpu < 5.0,
                format!("{} ms", num(cpu)),
            );
        }
    }
    t.note("The library and re-implementations run in a fresh `__engine idle` process and are measured with getrusage around the stop call alone; the CLI row is the whole process (wait4), start-up included. Wakeups in the grace: the stopper process's voluntary context switches (all its threads, from `/proc/<pid>/task/*/status`) between 10 % and 90 % of the grace, sampled by the harness. Medians.");
    b.tables.push(t);
    Ok(())
}

/// 7. The mission: `bash -c 'app; echo done'`, the app flushing for 500 ms after SIGTERM.
fn mission(b: &mut Bench) -> Result<()> {
    let r = b.n(2, 10);
    let plan: Vec<(Contender, usize)> = Contender::ALL.iter().map(|&c| (c, r)).collect();
    let mut s = Samples::new(&plan);
    let mut flushed: Vec<(Contender, usize, usize)> = plan.iter().map(|p| (p.0, 0, 0)).collect();
    let exe = task::self_exe();
    b.interleave(&plan, |b, c, _| {
        let cg = b.cg("mission")?;
        let file = b.scratch.join(format!("flushed-{}", b.seq));
        let script = format!(
            "'{}' __helper flush 500 '{}'; echo done",
            exe.display(),
            file.display()
        );
        let task = Task::bash(cg, &script)?;
        std::thread::sleep(Duration::from_millis(20));
        let run = contenders::run(c, &b.ctx, &target_of(&task), Duration::from_secs(5))?;
        let (survivors, _) = task.finish(Duration::from_secs(2))?;
        let ok = file.exists();
        let _ = std::fs::remove_file(&file);
        s.push(c, run.ms());
        if let Some(e) = flushed.iter_mut().find(|e| e.0 == c) {
            e.1 += 1;
            e.2 += usize::from(ok);
        }
        if is_gracekill(c) && (!ok || survivors > 0) {
            b.fail(format!(
                "mission: {} flushed={ok} survivors={survivors}",
                c.name()
            ));
        }
        Ok(())
    })?;
    let mut t = Table::new(
        "7. The mission (`bash -c 'app; echo done'`; app flushes 500 ms after SIGTERM; 5 s grace)",
        &[
            "contender",
            "rounds",
            "flushed",
            "p50 ms to return",
            "max ms",
        ],
    );
    for (c, rounds, ok) in &flushed {
        let v = s.get(*c);
        t.row(vec![
            c.name().into(),
            rounds.to_string(),
            format!("{ok}/{rounds}"),
            num(pct(v, 50.0)),
            num(pct(v, 100.0)),
        ]);
    }
    b.tables.push(t);
    let v = s.get(Lib);
    let all = flushed
        .iter()
        .filter(|f| is_gracekill(f.0))
        .all(|f| f.1 == f.2);
    b.target(
        "7. mission: gracekill ~500 ms and flushed",
        all && pct(v, 100.0) < 600.0,
        format!("flushed every round: {all}; max {} ms", num(pct(v, 100.0))),
    );
    Ok(())
}

/// 8. CLI start-up: `gracekill stop` on an empty cgroup, as a whole process.
fn cli_startup(b: &mut Bench) -> Result<()> {
    let r = b.n(10, 100);
    let cg = b.cg("empty")?;
    let mut wall: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut rss: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for i in 0..2 * r {
        let which = i % 2;
        let t0 = Instant::now();
        let child = if which == 0 {
            Command::new("/bin/true").stdout(Stdio::null()).spawn()?
        } else {
            Command::new(&b.ctx.cli)
                .args(["stop", "--json"])
                .arg(&cg.path)
                .stdout(Stdio::null())
                .spawn()?
        };
        let (code, u) = sys::wait_child(child.id().cast_signed())?;
        wall[which].push(ms(t0.elapsed()));
        rss[which].push(u.maxrss_kib as f64 / 1024.0);
        if code != 0 {
            b.fail(format!("CLI start-up: exit {code} on an empty cgroup"));
        }
    }
    let mut t = Table::new(
        "8. CLI start-up (`gracekill stop --json` on an empty cgroup, whole process)",
        &[
            "command",
            "runs",
            "p50 ms",
            "p99 ms",
            "peak RSS MiB (max)",
            "p50 vs /bin/true",
        ],
    );
    for (k, name) in ["/bin/true", "gracekill stop"].iter().enumerate() {
        t.row(vec![
            name.to_string(),
            wall[k].len().to_string(),
            num(pct(&wall[k], 50.0)),
            num(pct(&wall[k], 99.0)),
            num(pct(&rss[k], 100.0)),
            ratio(pct(&wall[k], 50.0), pct(&wall[0], 50.0)),
        ]);
    }
    b.tables.push(t);
    Ok(())
}

/// `--profile TOOL`: one library stop of 5000 processes under callgrind or strace.
fn profile(b: &mut Bench, tool: &str) -> Result<()> {
    let cg = b.cg("profile")?;
    let task = Task::helper(cg, &["hold", "5000", "die"])?;
    std::thread::sleep(Duration::from_millis(20));
    let out_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .join("target")
        });
    let exe = task::self_exe();
    let mut cmd = match tool {
        "callgrind" => {
            let mut c = Command::new("valgrind");
            c.arg("--tool=callgrind").arg(format!(
                "--callgrind-out-file={}",
                out_dir.join("gkbench-callgrind.out").display()
            ));
            c
        }
        "perf" => {
            // Software clock sampling: this VM exposes no hardware counters.
            let mut c = Command::new("perf");
            c.args(["record", "-e", "cpu-clock", "-F", "10000", "-g", "-o"])
                .arg(out_dir.join("gkbench-perf.data"));
            c
        }
        "strace" => {
            let mut c = Command::new("strace");
            c.args(["-c", "-o"]).arg(out_dir.join("gkbench-strace.txt"));
            c
        }
        other => bail!("unknown profiler {other} (perf, callgrind or strace)"),
    };
    // Waited for through the reaper thread, which reaps every child of the bench.
    let child = cmd
        .arg(&exe)
        .args(["__engine", "stop", &task.cg.rel, "30000"])
        .spawn()?;
    let (status, _) = sys::wait_child(child.id().cast_signed())?;
    let (survivors, _) = task.finish(Duration::from_secs(2))?;
    println!(
        "profile ({tool}) exit {status}; survivors {survivors}; output in {}",
        out_dir.display()
    );
    Ok(())
}

/// The 1-minute load average: other work on the machine shows up in the tails.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split(' ').next().map(str::to_string))
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let kernel = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    format!(
        "kernel {kernel}, CPU {cpu}, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

/// Removes `gkbench-<pid>` cgroups left by earlier runs whose process is gone (a run killed
/// with SIGKILL cannot clean up after itself).
fn remove_stale(mount: &std::path::Path) {
    let Ok(dir) = std::fs::read_dir(mount) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("gkbench-")
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("removing {name}, left by an earlier run");
        drop(Cg {
            rel: format!("/{name}"),
            path: e.path(),
        });
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__helper") => task::helper_main(&args[1..]),
        Some("__engine") => engine::engine_main(&args[1..]),
        _ => {}
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets too: stay out of the way.
        println!("stop bench: run it with `cargo bench --bench stop` (`-- --quick` for CI)");
        return;
    }
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("stop bench: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: &[String]) -> Result<bool> {
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let only: Option<Vec<String>> =
        value("--only").map(|s| s.split(',').map(str::to_string).collect());
    if !rustix::process::geteuid().is_root() {
        bail!("needs root (it creates cgroups and starts processes in them)");
    }
    let mount = gracekill::Mount::discover()?;
    sys::start_reaper()?;
    sys::catch_interrupts();
    sys::become_subreaper()?;
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut l = getrlimit(Resource::Nofile);
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
    remove_stale(mount.mountpoint());
    let cli = std::path::PathBuf::from(env!("CARGO_BIN_EXE_gracekill"));
    let rel = format!("/gkbench-{}", std::process::id());
    let root = Cg::create(mount.mountpoint(), &rel)?;
    let scratch = std::env::temp_dir().join(&rel[1..]);
    std::fs::create_dir_all(&scratch)?;
    let started = Instant::now();
    let load_at_start = load();
    let mut b = Bench {
        ctx: Ctx {
            mount,
            cli,
            floor: contenders::build_floor(&scratch)?,
        },
        root,
        quick,
        seq: 0,
        tables: Vec::new(),
        failures: Vec::new(),
        targets: Vec::new(),
        scratch: scratch.clone(),
        sizes: value("--sizes").map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect()),
        samples: Vec::new(),
    };
    if let Some(tool) = value("--profile") {
        let r = profile(&mut b, &tool);
        let _ = std::fs::remove_dir_all(&scratch);
        r?;
        return Ok(true);
    }
    type Scenario = fn(&mut Bench) -> Result<()>;
    let scenarios: [(&str, Scenario); 9] = [
        ("latency", detection_latency),
        ("scale", scale),
        ("deadline", deadline),
        ("storm", fork_storm),
        ("many", many_tasks),
        ("idle", idle_cost),
        ("mission", mission),
        ("startup", cli_startup),
        ("hostile", hostile_memory),
    ];
    let mut result = Ok(());
    for (name, f) in scenarios {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == name)) {
            continue;
        }
        eprintln!(
            "== {name} ({:.0} s so far)",
            started.elapsed().as_secs_f64()
        );
        if let Err(e) = f(&mut b) {
            result = Err(e);
            break;
        }
        sys::reap_all_nohang();
    }
    let _ = std::fs::remove_dir_all(&scratch);

    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Results: `cargo bench --bench stop{}`\n\n{}; {} mode; {:.0} s; load average {} at the \
         start, {} at the end.\n",
        if quick { " -- --quick" } else { "" },
        machine(),
        if quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64(),
        load_at_start,
        load()
    );
    for t in &b.tables {
        md.push_str(&t.render());
    }
    let mut tt = Table::new("Targets", &["target", "met", "measured"]);
    for (name, met, measured) in &b.targets {
        tt.row(vec![
            name.clone(),
            if *met { "yes" } else { "**MISSED**" }.into(),
            measured.clone(),
        ]);
    }
    md.push_str(&tt.render());
    if !b.failures.is_empty() {
        let _ = writeln!(md, "### FAILURES\n");
        for f in &b.failures {
            let _ = writeln!(md, "- {f}");
        }
    }
    println!("{md}");
    if let Some(path) = value("--out").map(invoked_path) {
        std::fs::write(&path, &md).with_context(|| format!("write {path}"))?;
    }
    if let Some(path) = value("--samples").map(invoked_path) {
        let figures: Vec<serde_json::Value> = b
            .samples
            .iter()
            .map(|(figure, contender, v)| {
                serde_json::json!({"figure": figure, "contender": contender, "ms": v})
            })
            .collect();
        let text = serde_json::json!({"machine": machine(), "samples": figures}).to_string();
        std::fs::write(&path, text).with_context(|| format!("write {path}"))?;
    }
    result?;
    Ok(b.failures.is_empty())
}

/// A path given on the command line, as the user meant it: cargo runs a bench in its package's
/// directory (`cli/`), so a relative path is taken from the directory cargo was invoked in
/// (`$PWD`, which cargo passes on unchanged), or from the workspace's root without one.
fn invoked_path(path: String) -> String {
    let p = std::path::Path::new(&path);
    if p.is_absolute() {
        return path;
    }
    let base = std::env::var_os("PWD")
        .map(std::path::PathBuf::from)
        .filter(|d| d.is_absolute())
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    base.join(p).to_string_lossy().into_owned()
}
