//! Load: 200 tasks of 1 to 10 processes each, stopped at once, by one engine process through
//! the library and by 200 concurrent `gracekill stop` calls on tasks `gracekill run` started.
//! Nothing may be left: no process, no zombie, no cgroup, no file descriptor.
//!
//! One test per binary on purpose: the descriptor count of this process must not be disturbed
//! by another test running beside it.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestCgroup, bin, read, wait_until};

const TASKS: usize = 200;

/// How many tasks: [`TASKS`], divided by the slowness of the machine (common::slow_factor),
/// so a VM under software emulation gets the same load per CPU second (at least 20 tasks).
// A count divided by a factor of at least 1: positive and no larger than TASKS.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn tasks() -> usize {
    ((TASKS as f64 / common::slow_factor()).round() as usize).clamp(20, TASKS)
}

/// Task `i`: `1 + i % 10` processes; every third one ignores SIGTERM (so it needs the final
/// kill), the others die of it. Writes `ready-i` once all its processes exist.
/// (Its main loop forks a `sleep` a second; on a slow machine, where 200 of those loops alone
/// would eat the CPUs, it sleeps longer: common::slow.)
fn task_script(i: usize) -> String {
    let helpers = i % 10;
    let nap = common::slow_factor().round();
    let deaf = if i.is_multiple_of(3) {
        "trap '' TERM; "
    } else {
        ""
    };
    format!(
        r#"{deaf}for _ in $(seq {helpers}); do sleep 600 & done; echo $$ > "$SCRATCH/ready-{i}"; while :; do sleep {nap} & wait $!; done"#
    )
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Zombies among this process's children, and processes still alive among `pids`.
fn leftovers(pids: &[i32]) -> (Vec<i32>, Vec<i32>) {
    let me = std::process::id().to_string();
    let mut zombies = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = read(&e.path().join("stat"));
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") && (f.get(1) == Some(&me.as_str()) || pids.contains(&pid)) {
            zombies.push(pid);
        }
    }
    let alive = pids.iter().copied().filter(|p| common::alive(*p)).collect();
    (zombies, alive)
}

/// Reaps every child of this process that has exited (orphans of the tasks included: this
/// process is their subreaper).
fn reap_all() {
    while let Ok(Some(_)) = rustix::process::waitpid(None, rustix::process::WaitOptions::NOHANG) {}
}

#[test]
fn two_hundred_tasks_stopped_at_once_leave_nothing_behind() {
    require_cgroup_v2!();
    // Orphaned task processes come to us, so "no zombies" is ours to check, not init's.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
    library_engine_stops_200_tasks_concurrently();
    two_hundred_concurrent_cli_stops_of_run_tasks();
}

fn library_engine_stops_200_tasks_concurrently() {
    let n = tasks();
    let parent = TestCgroup::new("load-lib");
    let mut children: Vec<Child> = (0..n)
        .map(|i| {
            let dir = parent.child(&format!("t{i}"));
            Command::new("bash")
                .arg("-c")
                .arg(r#"echo 0 > "$GK_PROCS" && exec bash -c "$GK_SCRIPT""#)
                .env("GK_PROCS", dir.join("cgroup.procs"))
                .env("GK_SCRIPT", task_script(i))
                .env("SCRATCH", &parent.scratch)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    assert!(
        wait_until(common::slow(Duration::from_secs(30)), || (0..n)
            .all(|i| parent.file(&format!("ready-{i}")).exists())),
        "tasks did not start"
    );
    let pids = parent.pids();
    // (Plus one short `sleep` per task from its main loop.)
    assert!(pids.len() >= (0..n).map(|i| 1 + i % 10).sum::<usize>());

    let mount = gracekill::Mount::discover().unwrap();
    let cgs: Vec<gracekill::Cgroup> = (0..n)
        .map(|i| mount.open_cgroup(&format!("{}/t{i}", parent.rel)).unwrap())
        .collect();
    let mut policy = gracekill::Policy::default();
    // (Dying takes longer on a slow machine: the grace is scaled, common::slow.)
    policy.steps[0].grace = common::slow(Duration::from_secs(2));
    policy.kill_timeout = Duration::from_secs(5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fds_before = open_fds();
    let t = Instant::now();
    let verdicts: Vec<gracekill::Verdict> = rt.block_on(async {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let handles: Vec<_> = cgs
                    .iter()
                    .map(|cg| {
                        let cg = cg.try_clone().unwrap();
                        let policy = policy.clone();
                        tokio::task::spawn_local(async move {
                            gracekill::stop(&cg, &policy, &gracekill::StopOptions::default()).await
                        })
                    })
                    .collect();
                let mut out = Vec::new();
                for h in handles {
                    out.push(h.await.unwrap().unwrap().outcome);
                }
                out
            })
            .await
    });
    let took = t.elapsed();
    let fds_after = open_fds();
    eprintln!(
        "library: {n} tasks, {} processes, stopped in {took:?}",
        pids.len()
    );
    for (i, v) in verdicts.iter().enumerate() {
        let want = if i.is_multiple_of(3) {
            gracekill::Verdict::Killed
        } else {
            gracekill::Verdict::Graceful
        };
        assert_eq!(*v, want, "task {i}");
    }
    assert!(took < common::slow(Duration::from_secs(10)), "{took:?}");
    assert_eq!(
        fds_before, fds_after,
        "file descriptors leaked by the engine"
    );
    assert!(parent.pids().is_empty());

    for c in &mut children {
        c.wait().unwrap();
    }
    reap_all();
    let (zombies, alive) = leftovers(&pids);
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
    assert!(alive.is_empty(), "alive: {alive:?}");
    for cg in &cgs {
        cg.remove_tree(None).unwrap();
    }
    assert_eq!(
        std::fs::read_dir(&parent.path)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .count(),
        0,
        "no cgroups left"
    );
}

fn two_hundred_concurrent_cli_stops_of_run_tasks() {
    let n = tasks();
    let parent = TestCgroup::new("load-cli");
    let env = [("GRACEKILL_ROOT", parent.rel.as_str())];
    let grace = format!("{}ms", common::slow(Duration::from_secs(2)).as_millis());
    let mut runs: Vec<Child> = (0..n)
        .map(|i| {
            Command::new(bin())
                .args(["run", "--name", &format!("t{i}"), "--grace", &grace, "--"])
                .args(["bash", "-c", &task_script(i)])
                .envs(env)
                .env("SCRATCH", &parent.scratch)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    assert!(
        wait_until(common::slow(Duration::from_secs(60)), || (0..n)
            .all(|i| parent.file(&format!("ready-{i}")).exists())),
        "tasks did not start"
    );
    let pids = parent.pids();
    let t = Instant::now();
    let stops: Vec<Child> = (0..n)
        .map(|i| {
            Command::new(bin())
                .args(["stop", "--json", &format!("t{i}")])
                .envs(env)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, s) in stops.into_iter().enumerate() {
        let out = s.wait_with_output().unwrap();
        let v = common::json(&out);
        let (want, code) = if i.is_multiple_of(3) {
            ("killed", 3)
        } else {
            ("graceful", 0)
        };
        assert_eq!(out.status.code(), Some(code), "task {i}: {v}");
        assert_eq!(v["outcome"], want, "task {i}: {v}");
        assert!(out.stderr.is_empty(), "{}", common::stderr(&out));
    }
    let took = t.elapsed();
    eprintln!(
        "cli: {n} concurrent stops of {} processes in {took:?}",
        pids.len()
    );
    assert!(took < common::slow(Duration::from_secs(20)), "{took:?}");
    for (i, r) in runs.iter_mut().enumerate() {
        let status = r.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(r.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(
            status.code().is_some(),
            "run {i} exited by itself: {status} {err}"
        );
    }
    reap_all();
    let (zombies, alive) = leftovers(&pids);
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
    assert!(alive.is_empty(), "alive: {alive:?}");
    let left: Vec<_> = std::fs::read_dir(&parent.path)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "run removes each task's cgroup: {left:?}");
    assert!(!Path::new(&parent.path).join("t0").exists());
}
