//! The Thermos recipe (`examples/thermos/gracekill_thermos.py`) run under python3 against real
//! tasks shaped like Thermos processes: a `bash -c` wrapper around an app that flushes on
//! SIGTERM (root and cgroup v2 required).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TestCgroup, bin, read, stderr, stdout};

/// Flushes for 1 s on SIGTERM (ignoring further TERMs meanwhile), then writes a marker.
const FLUSHING_APP: &str = r#"
trap 'trap "" TERM; sleep 1; echo flushed > "$SCRATCH/marker"; exit 0' TERM
echo ready
while :; do sleep 1 & wait $!; done
"#;

fn recipe_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/thermos")
}

fn python() -> Result<(), String> {
    match Command::new("python3").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("python3 is not installed (ci/install-deps installs it)".into()),
    }
}

macro_rules! require_python {
    () => {
        if let Err(why) = python() {
            if common::strict() {
                panic!("prerequisite missing (CI=true makes this a failure): {why}");
            }
            eprintln!("SKIPPED {}: {why}", module_path!());
            return;
        }
    };
}

fn result_json(o: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(o).lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", stdout(o), stderr(o)))
}

/// The runner side: a Python "coordinator" that forks the process the way Thermos does (a
/// `bash -c` wrapper, joined to the task's cgroup before exec), then stops it with the recipe
/// and reaps the wrapper for its return code.
const RUNNER: &str = r#"
import json, os, subprocess, sys
sys.path.insert(0, os.environ["RECIPE_DIR"])
import gracekill_thermos

cgroup_dir, gracekill = sys.argv[1], sys.argv[2]
def join_cgroup():
    with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
        f.write("0")
cmdline = 'bash "$SCRATCH/app.sh"; echo wrapper-done > "$SCRATCH/wrapper-done"'
proc = subprocess.Popen(["bash", "-c", cmdline], stdout=subprocess.PIPE,
                        universal_newlines=True, preexec_fn=join_cgroup)
assert proc.stdout.readline().strip() == "ready"
result = gracekill_thermos.stop_process(cgroup_dir, finalization_wait=10, kill_timeout=5,
                                        gracekill=gracekill, reap=proc.wait)
print(json.dumps(result.as_dict()))
"#;

#[test]
fn thermos_recipe_lets_the_app_behind_a_bash_wrapper_flush() {
    require_cgroup_v2!();
    require_python!();
    let cg = TestCgroup::new("thermos");
    std::fs::write(cg.file("app.sh"), FLUSHING_APP).unwrap();
    let t = Instant::now();
    let out = Command::new("python3")
        .args(["-c", RUNNER])
        .arg(&cg.path)
        .arg(bin())
        .env("RECIPE_DIR", recipe_dir())
        .env("SCRATCH", &cg.scratch)
        .stdin(Stdio::null())
        .output()
        .expect("python3");
    let took = t.elapsed();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let v = result_json(&out);
    assert_eq!(v["state"], "KILLED", "{v}");
    assert_eq!(
        v["return_code"], -15,
        "the wrapper the runner forked died of SIGTERM, as under Thermos: {v}"
    );
    assert_eq!(v["outcome"]["outcome"], "graceful");
    assert_eq!(
        v["outcome"]["steps"].as_array().unwrap().len(),
        1,
        "no SIGKILL step: {v}"
    );
    assert_eq!(
        read(&cg.file("marker")).trim(),
        "flushed",
        "the app flushed although its wrapper died at once"
    );
    assert!(!cg.file("wrapper-done").exists());
    assert!(
        took >= Duration::from_millis(900) && took < common::slow(Duration::from_secs(8)),
        "the 1 s flush was waited for, not cut short: {took:?}"
    );
    assert!(!cg.populated());
}

fn recipe_cli(args: &[&str]) -> Output {
    Command::new("python3")
        .arg(recipe_dir().join("gracekill_thermos.py"))
        .arg("--gracekill")
        .arg(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python3")
}

#[test]
fn thermos_recipe_maps_a_final_kill_to_killed_by_sigkill() {
    require_cgroup_v2!();
    require_python!();
    let cg = TestCgroup::new("thermoskill");
    // An app that ignores SIGTERM: only the final kill ends it.
    let mut p = cg.spawn(r#"bash -c 'trap "" TERM; echo ready; while :; do sleep 1; done'"#);
    p.wait_line("ready");
    let out = recipe_cli(&["--finalization-wait", "0.3", "--kill-timeout", "5", &cg.rel]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = result_json(&out);
    assert_eq!(v["state"], "KILLED");
    assert_eq!(v["return_code"], -9);
    assert_eq!(v["outcome"]["outcome"], "killed");
    assert_eq!(v["outcome"]["steps"][1]["signal"], "SIGKILL");
    assert!(!cg.populated());
    p.wait();
}

#[test]
fn thermos_recipe_reports_a_refusal_and_signals_nothing() {
    require_cgroup_v2!();
    require_python!();
    let out = recipe_cli(&["/"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("refusing to stop the root cgroup"),
        "{}",
        stderr(&out)
    );
}
