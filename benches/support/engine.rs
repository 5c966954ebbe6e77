//! `__engine MODE ...`: stoppers run in a process of their own, so that its peak RSS, open
//! descriptors, context switches and CPU time are the stopper's alone. Prints one JSON line.
//!
//! - `many TAG PARENT N`: stop the N single-process cgroups `PARENT/t0..` concurrently (TAG
//!   `lib`: N `gracekill::stop` futures on one current-thread runtime; `floor`: one `poll` over
//!   every `cgroup.events`).
//! - `idle TAG REL MAIN GRACE_MS`: one stop by contender TAG, with its `getrusage` cost.
//! - `stop REL GRACE_MS`: one `gracekill::stop_blocking` (for profilers).

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gracekill::{Mount, Policy, StopOptions, Verdict};
use rustix::event::{PollFd, PollFlags};

use crate::contenders::{self, Contender, Ctx, Target, ms};
use crate::sys;
use crate::task::{open_fds, peak_rss_kib};

/// Runs the engine mode in `args` and exits.
pub fn engine_main(args: &[String]) -> ! {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = match a.as_slice() {
        ["many", tag, parent, n] => many(tag, parent, n.parse().unwrap_or(0)),
        ["idle", tag, rel, main, grace] => idle(
            tag,
            rel,
            main.parse().unwrap_or(0),
            Duration::from_millis(grace.parse().unwrap_or(0)),
        ),
        ["stop", rel, grace] => stop(rel, Duration::from_millis(grace.parse().unwrap_or(0))),
        _ => Err(anyhow::anyhow!("bad arguments {a:?}")),
    };
    match r {
        Ok(v) => {
            println!("{v}");
            sys::exit_now(0)
        }
        Err(e) => {
            eprintln!("gkbench engine: {e:#}");
            sys::exit_now(1)
        }
    }
}

fn policy(grace: Duration) -> Policy {
    let mut p = Policy::default();
    p.steps[0].grace = grace;
    p.kill_timeout = Duration::from_secs(10);
    p
}

fn many(tag: &str, parent: &str, n: usize) -> Result<serde_json::Value> {
    let mount = Mount::discover()?;
    // tokio's signal driver creates a process-global socket pair the first time a runtime is
    // built and never closes it: take the baseline after that one-time cost.
    drop(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    );
    let fds_before = open_fds();
    let t0 = Instant::now();
    let (ok, fds_peak) = match tag {
        "lib" => {
            let cgs = (0..n)
                .map(|i| mount.open_cgroup(&format!("{parent}/t{i}")))
                .collect::<gracekill::Result<Vec<_>>>()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            let (ok, peak) = local.block_on(&rt, async {
                let p = policy(Duration::from_secs(30));
                let handles: Vec<_> = cgs
                    .into_iter()
                    .map(|cg| {
                        let p = p.clone();
                        tokio::task::spawn_local(async move {
                            gracekill::stop(&cg, &p, &StopOptions::default())
                                .await
                                .map(|o| o.outcome)
                        })
                    })
                    .collect();
                // Every stop has signalled and is waiting once the first wait yields; the
                // descriptor count peaks around then.
                tokio::task::yield_now().await;
                let peak = open_fds();
                let mut ok = 0;
                for h in handles {
                    if matches!(h.await, Ok(Ok(Verdict::Graceful | Verdict::Empty))) {
                        ok += 1;
                    }
                }
                (ok, peak)
            });
            (ok, peak)
        }
        "floor" => {
            let mut evs = Vec::with_capacity(n);
            for i in 0..n {
                let dir = mount.mountpoint().join(format!("{}/t{i}", &parent[1..]));
                let ev = File::open(dir.join("cgroup.events"))?;
                let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
                for pid in procs.lines().filter_map(|l| l.trim().parse().ok()) {
                    let _ = sys::kill(pid, libc::SIGTERM);
                }
                evs.push(ev);
            }
            let peak = open_fds();
            (floor_wait_all(evs, Duration::from_secs(30))?, peak)
        }
        other => bail!("unknown contender {other}"),
    };
    let total = t0.elapsed();
    Ok(serde_json::json!({
        "total_ms": ms(total),
        "ok": ok,
        "hwm_kib": peak_rss_kib(),
        "fds_before": fds_before,
        "fds_peak": fds_peak,
        "fds_after": open_fds(),
    }))
}

/// Waits until every `cgroup.events` in `evs` says `populated 0`; returns how many did.
fn floor_wait_all(mut evs: Vec<File>, timeout: Duration) -> Result<usize> {
    let n = evs.len();
    let deadline = Instant::now() + timeout;
    loop {
        let mut buf = [0u8; 128];
        evs.retain(|ev| {
            use std::os::unix::fs::FileExt;
            ev.read_at(&mut buf, 0)
                .map(|k| buf[..k].windows(11).any(|w| w == b"populated 1"))
                .unwrap_or(false)
        });
        if evs.is_empty() || Instant::now() >= deadline {
            return Ok(n - evs.len());
        }
        let mut fds: Vec<PollFd<'_>> = evs.iter().map(|e| PollFd::new(e, PollFlags::PRI)).collect();
        let ts = rustix::time::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn idle(tag: &str, rel: &str, main: i32, grace: Duration) -> Result<serde_json::Value> {
    let c = Contender::from_tag(tag).context("unknown contender")?;
    let ctx = Ctx {
        mount: Mount::discover()?,
        cli: Path::new("/nonexistent").into(),
        floor: Path::new("/nonexistent").into(),
    };
    let path = ctx.mount.mountpoint().join(&rel[1..]);
    let main_fd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(main).context("main pid")?,
        rustix::process::PidfdFlags::empty(),
    )?;
    let t = Target {
        rel,
        path: &path,
        main,
        main_fd: std::os::fd::AsFd::as_fd(&main_fd),
    };
    let before = sys::usage_self();
    let run = contenders::run(c, &ctx, &t, grace)?;
    let after = sys::usage_self();
    Ok(serde_json::json!({
        "total_ms": run.ms(),
        "nvcsw": after.nvcsw - before.nvcsw,
        "nivcsw": after.nivcsw - before.nivcsw,
        "cpu_ms": ms(after.cpu.saturating_sub(before.cpu)),
    }))
}

fn stop(rel: &str, grace: Duration) -> Result<serde_json::Value> {
    let mount = Mount::discover()?;
    let cg = mount.open_cgroup(rel)?;
    let t0 = Instant::now();
    let o = gracekill::stop_blocking(&cg, &policy(grace), &StopOptions::default())?;
    Ok(serde_json::json!({
        "total_ms": ms(t0.elapsed()),
        "outcome": o.outcome.as_str(),
        "signalled": o.steps.first().map(|s| s.signalled),
    }))
}
