//! The Rust examples in `examples/`, run as a user would run them, on real cgroups (root and
//! cgroup v2). `cargo test` builds them; this runs the binaries cargo put in
//! `target/<profile>/examples/`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TestCgroup, read, stderr, stdout};

/// Traps SIGTERM, takes 1 s to flush (ignoring further TERMs), writes a marker, exits 0.
const FLUSHING_APP: &str = r#"
trap 'trap "" TERM; sleep 1; echo flushed > "$SCRATCH/marker"; exit 0' TERM
echo ready
while :; do sleep 1 & wait $!; done
"#;

/// A built example, or why it is missing (a failure in CI).
fn example(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("examples").join(name))
        .unwrap();
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is not built (cargo test and cargo build --examples build it)",
            p.display()
        ))
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run example")
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn flushing_task(tag: &str) -> (TestCgroup, common::Proc) {
    let cg = TestCgroup::new(tag);
    std::fs::write(cg.file("app.sh"), FLUSHING_APP).unwrap();
    let p = cg.spawn(r#"bash "$SCRATCH/app.sh"; echo done"#);
    p.wait_line("ready");
    (cg, p)
}

#[test]
fn stop_cgroup_example_stops_an_existing_cgroup_gracefully() {
    require_cgroup_v2!();
    let exe = require!(example("stop_cgroup"));
    let (cg, mut p) = flushing_task("ex-stop");
    // The absolute path under the mount, as an operator would paste it.
    let out = run(Command::new(&exe).arg(&cg.path).arg("10s"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = &json_lines(&out)[0];
    assert_eq!(v["outcome"], "graceful");
    assert_eq!(v["cgroup"], cg.rel.as_str());
    assert!(v["empty_at_ms"].as_f64().unwrap() >= 900.0, "{v}");
    assert!(stdout(&out).contains(&format!("{} graceful", cg.rel)));
    assert_eq!(read(&cg.file("marker")).trim(), "flushed");
    p.wait();

    // The same refusals as the CLI: nothing signalled, exit 2.
    let out = run(Command::new(&exe).arg("/"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("refusing to stop the root cgroup"));
}

#[test]
fn stop_many_example_stops_cgroups_concurrently_on_one_thread() {
    require_cgroup_v2!();
    let exe = require!(example("stop_many"));
    let tasks: Vec<_> = (0..3)
        .map(|i| flushing_task(&format!("ex-many{i}")))
        .collect();
    let t = Instant::now();
    let out = run(Command::new(&exe)
        .args(["--grace", "10s"])
        .args(tasks.iter().map(|(cg, _)| &cg.rel)));
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let outcomes = json_lines(&out);
    assert_eq!(outcomes.len(), 3);
    for ((cg, _), v) in tasks.iter().zip(&outcomes) {
        assert_eq!(v["cgroup"], cg.rel.as_str(), "in the order given");
        assert_eq!(v["outcome"], "graceful");
        assert_eq!(read(&cg.file("marker")).trim(), "flushed");
    }
    assert!(
        took < Duration::from_millis(2800),
        "three 1 s flushes were waited for at once: {took:?}"
    );
    for (_, mut p) in tasks {
        p.wait();
    }
}

#[test]
fn run_under_policy_example_stops_the_task_gracefully_on_timeout() {
    require_cgroup_v2!();
    let exe = require!(example("run_under_policy"));
    // The example creates its task cgroup below this test's cgroup, which is removed at the end
    // whatever happens.
    let parent = TestCgroup::new("ex-run");
    std::fs::write(parent.file("app.sh"), FLUSHING_APP).unwrap();
    let script = format!(
        r#"bash "{}"; echo wrapper-done"#,
        parent.file("app.sh").display()
    );
    // The timeout must outlast the start of the wrapper and the app, up to its trap (else the
    // app dies of SIGTERM unflushed): scaled on slow machines, and the bound on the whole with it.
    let timeout = common::slow(Duration::from_millis(500));
    let t = Instant::now();
    let out = run(Command::new(&exe)
        .args(["--name", "task", "--parent", &parent.rel])
        .args(["--grace", "10s", "--timeout"])
        .arg(format!("{}ms", timeout.as_millis()))
        .arg("--")
        .args(["bash", "-c", &script])
        .env("SCRATCH", &parent.scratch));
    let took = t.elapsed();
    assert_eq!(
        out.status.code(),
        Some(124),
        "timeout(1)'s code after a graceful stop: {}",
        stderr(&out)
    );
    let v = &json_lines(&out)[0];
    assert_eq!(v["cgroup"], format!("{}/task", parent.rel).as_str());
    assert_eq!(v["timed_out"], true);
    assert_eq!(v["stop"]["outcome"], "graceful", "{v}");
    assert_eq!(v["removed"], true);
    assert_eq!(read(&parent.file("marker")).trim(), "flushed");
    assert!(
        took >= Duration::from_millis(1400) && took < timeout + Duration::from_millis(7500),
        "0.5 s until the timeout, then the 1 s flush: {took:?}"
    );
    assert!(
        !parent.path.join("task").exists(),
        "the task cgroup is gone"
    );
}
