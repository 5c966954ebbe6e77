//! The Thermos integration (`integrations/thermos/gracekill_thermos`) on a Thermos-shaped runner
//! written for these tests (`integrations/thermos/tests/thermos_shape.py`: the upstream kill
//! path, no Aurora code), run under python3 on real cgroups (root and cgroup v2 required).
//!
//! Each scenario runs the runner in `<test cgroup>/runner` and the task's cgroups under
//! `<test cgroup>/tasks`; the app flushes for 1 s on SIGTERM and has a setsid'd daemon child
//! that flushes on SIGTERM too.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{TestCgroup, TestUser, bin, stderr, stdout};

fn scenario_py() -> PathBuf {
    common::repo().join("integrations/thermos/tests/scenario.py")
}

struct Setup {
    cg: TestCgroup,
    runner: PathBuf,
    tasks: PathBuf,
}

fn setup(tag: &str) -> Setup {
    let cg = TestCgroup::new(tag);
    let runner = cg.child("runner");
    let tasks = cg.child("tasks");
    Setup { cg, runner, tasks }
}

/// Runs one scenario; returns its JSON result.
fn scenario(s: &Setup, integration: bool, args: &[&str]) -> serde_json::Value {
    scenario_env(s, integration, args, &[])
}

/// [`scenario`] with more environment for the runner.
fn scenario_env(
    s: &Setup,
    integration: bool,
    args: &[&str],
    env: &[(&str, &str)],
) -> serde_json::Value {
    let mut c = Command::new("python3");
    c.envs(env.iter().copied());
    c.arg(scenario_py())
        .arg("--scratch")
        .arg(&s.cg.scratch)
        .arg("--runner-cgroup")
        .arg(&s.runner)
        .args(args)
        .stdin(Stdio::null());
    if integration {
        c.arg("--integration")
            .arg("--root")
            .arg(&s.tasks)
            .arg("--gracekill")
            .arg(bin());
    }
    let out = c.output().expect("python3");
    assert!(
        out.status.success(),
        "scenario failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let last = stdout(&out).lines().last().unwrap_or("").to_string();
    serde_json::from_str(&last)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(&out), stderr(&out)))
}

/// Nothing of the task is left: no process, and no cgroup (the integration removes them when the
/// task is over).
fn assert_task_gone(s: &Setup) {
    assert!(common::pids_below(&s.tasks).is_empty());
    let left: Vec<_> = std::fs::read_dir(&s.tasks)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

fn took(v: &serde_json::Value) -> f64 {
    v["took"].as_f64().expect("took")
}

/// Without the integration the shape reproduces what upstream Thermos does: the wrapper dies of
/// SIGTERM, the group is SIGKILLed with the app inside, and the setsid'd daemon escapes.
#[test]
fn without_the_integration_the_app_never_flushes_and_the_daemon_escapes() {
    require_cgroup_v2!();
    require!(common::installed("python3"));
    let s = setup("thermos-upstream");
    let v = scenario(&s, false, &["--app", "flushing", "--kill", "executor"]);
    assert_eq!(v["flushed"], false, "{v}");
    assert_eq!(v["daemon_left_running"], true, "{v}");
    assert_eq!(v["recorded"]["app"]["state"], "KILLED", "{v}");
    assert_eq!(
        v["recorded"]["app"]["return_code"], -15,
        "the wrapper's status: {v}"
    );
}

#[test]
fn an_executor_kill_lets_the_app_and_its_daemon_flush() {
    require_cgroup_v2!();
    require!(common::installed("python3"));
    let s = setup("thermos-kill");
    let v = scenario(&s, true, &["--app", "flushing", "--kill", "executor"]);
    assert_eq!(v["flushed"], true, "{v}");
    assert_eq!(v["daemon_flushed"], true, "{v}");
    assert_eq!(v["daemon_left_running"], false, "{v}");
    assert_eq!(v["recorded"]["app"]["state"], "KILLED", "{v}");
    if common::kernel_at_least(6, 15) {
        assert_eq!(
            v["recorded"]["app"]["return_code"], 0,
            "the app's own status, not its wrapper's -15: {v}"
        );
    }
    assert!(
        took(&v) >= 0.9 && took(&v) < common::slow(std::time::Duration::from_secs(6)).as_secs_f64(),
        "the 1 s flush was waited for, and no longer: {v}"
    );
    assert_task_gone(&s);
}

/// Also with the runner's loop slowed between reading the coordinators' updates and checking
/// for running processes (`THERMOS_SHAPE_CHECK_GAP`): the coordinator's last update (KILLED -9,
/// from the stop's outcome) and its exit fall in that gap, and must still be read, not lost to
/// the runner's own KILLED -1.
#[test]
fn a_process_that_ignores_sigterm_is_killed_at_the_deadline_and_recorded_so() {
    require_cgroup_v2!();
    require!(common::installed("python3"));
    for gap in ["0", "0.3"] {
        stubborn_app_killed(gap);
    }
}

fn stubborn_app_killed(gap: &str) {
    let s = setup("thermos-stubborn");
    let v = scenario_env(
        &s,
        true,
        &[
            "--app",
            "stubborn",
            "--kill",
            "executor",
            "--preemption-wait",
            "1",
        ],
        &[("THERMOS_SHAPE_CHECK_GAP", gap)],
    );
    assert_eq!(v["flushed"], false, "{v}");
    assert_eq!(
        v["daemon_flushed"], true,
        "the daemon honoured its SIGTERM: {v}"
    );
    assert_eq!(v["daemon_left_running"], false, "{v}");
    assert_eq!(v["recorded"]["app"]["state"], "KILLED", "{v}");
    assert_eq!(v["recorded"]["app"]["return_code"], -9, "{v}");
    assert!(took(&v) >= 0.95, "killed before the preemption wait: {v}");
    assert_task_gone(&s);
}

#[test]
fn thermos_kill_ends_everything_at_once() {
    require_cgroup_v2!();
    require!(common::installed("python3"));
    let s = setup("thermos-force");
    let v = scenario(&s, true, &["--app", "flushing", "--kill", "thermos-kill"]);
    assert_eq!(v["daemon_left_running"], false, "{v}");
    assert_eq!(v["flushed"], false, "{v}");
    assert_eq!(v["recorded"]["app"]["state"], "KILLED", "{v}");
    assert_eq!(v["recorded"]["app"]["return_code"], -9, "{v}");
    // (Scaled on slow machines: it includes starting the stopper and the runner's death.)
    assert!(
        took(&v) < common::slow(std::time::Duration::from_secs(2)).as_secs_f64(),
        "force is immediate: {v}"
    );
    assert_task_gone(&s);
}

/// The task ends by itself and leaves its daemon behind: the daemon gets the stop signal and
/// the finalization wait, not an immediate SIGKILL; the process is recorded as it ended.
#[test]
fn a_natural_end_stops_the_leftovers_gracefully() {
    require_cgroup_v2!();
    require!(common::installed("python3"));
    let s = setup("thermos-natural");
    let v = scenario(
        &s,
        true,
        &[
            "--app",
            "natural",
            "--kill",
            "none",
            "--finalization-wait",
            "5",
        ],
    );
    assert_eq!(v["recorded"]["app"]["state"], "SUCCESS", "{v}");
    assert_eq!(v["recorded"]["app"]["return_code"], 0, "{v}");
    assert_eq!(v["daemon_flushed"], true, "{v}");
    assert_eq!(v["daemon_left_running"], false, "{v}");
    assert_task_gone(&s);
}

/// The runner as an unprivileged role user, in a subtree delegated to it (the directory and
/// its cgroup.procs chowned, as systemd's Delegate= does).
#[test]
fn an_unprivileged_role_user_in_a_delegated_subtree() {
    require_cgroup_v2!();
    require!(common::installed("python3"));
    let Some(user) = TestUser::try_new() else {
        return;
    };
    let s = setup("thermos-user");
    for p in [
        s.cg.path.clone(),
        s.cg.path.join("cgroup.procs"),
        s.runner.clone(),
        s.runner.join("cgroup.procs"),
        s.tasks.clone(),
        s.tasks.join("cgroup.procs"),
    ] {
        std::os::unix::fs::chown(&p, Some(user.uid), None).unwrap();
    }
    std::fs::set_permissions(
        &s.cg.scratch,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let v = scenario(
        &s,
        true,
        &[
            "--app", "flushing", "--kill", "executor", "--user", &user.name,
        ],
    );
    assert_eq!(v["flushed"], true, "{v}");
    assert_eq!(v["daemon_left_running"], false, "{v}");
    assert_eq!(v["recorded"]["app"]["state"], "KILLED", "{v}");
    assert_task_gone(&s);
}

/// The task's short-lived orphans are reaped as they exit (the coordinator adopts them), so no
/// zombie piles up for the life of the process; distinct process names never share a cgroup.
#[test]
fn orphans_are_reaped_at_once_and_names_map_one_to_one() {
    require_cgroup_v2!();
    require!(common::installed("python3"));
    let s = setup("thermos-zombies");
    let v = scenario(
        &s,
        true,
        &["--app", "flushing", "--kill", "executor", "--orphans", "20"],
    );
    assert_eq!(v["zombies"], 0, "{v}");
    assert_eq!(v["flushed"], true, "{v}");
    assert_task_gone(&s);
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys; sys.path.insert(0, sys.argv[1]); \
             from gracekill_thermos.cgroup import safe_name as n; \
             names = ['a b', 'a_b', 'a?b', 'a.b', '..', '']; \
             print(len(set(map(n, names))) == len(names) and '/' not in ''.join(map(n, names)))",
        )
        .arg(common::repo().join("integrations/thermos"))
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "True", "{}", stderr(&out));
}

/// Without the gracekill binary the integration refuses to install, when the runner starts,
/// rather than leaving a task it cannot stop.
#[test]
fn a_missing_gracekill_binary_is_said_at_install() {
    require_cgroup_v2!();
    require!(common::installed("python3"));
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys; sys.path.insert(0, sys.argv[1]); import gracekill_thermos as g; \
             g.Config(root='/x', gracekill='/nonexistent/gracekill')",
        )
        .arg(common::repo().join("integrations/thermos"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("was not found"), "{}", stderr(&out));
}
