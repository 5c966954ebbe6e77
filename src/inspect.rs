//! What a task looks like from outside, for `gracekill status` and `gracekill list`: its state,
//! the policy recorded for it, its processes. Gathered here; printing it is the caller's part.

use std::ops::ControlFlow;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::cgroup::{Cgroup, Mount};
use crate::error::{ErrorKind, Result};
use crate::policy::Policy;
use crate::task::{self, Supervisor, TaskMeta};

/// Whether a task has processes, and whether the `gracekill run` that started it is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TaskState {
    /// Populated; supervised by its `run`, or never started by one.
    Running,
    /// Empty; its `run` is alive, or it never had one.
    Empty,
    /// Populated, and the `run` that supervised it is gone (SIGKILLed, say).
    Orphaned,
    /// Empty, and its `run` is gone: nobody will remove the cgroup (`gracekill stop` does).
    Leftover,
}

impl TaskState {
    /// The state of a task that is `populated` or not, whose `run` is `run_gone` or not.
    pub fn of(populated: bool, run_gone: bool) -> TaskState {
        match (populated, run_gone) {
            (true, false) => TaskState::Running,
            (true, true) => TaskState::Orphaned,
            (false, false) => TaskState::Empty,
            (false, true) => TaskState::Leftover,
        }
    }

    /// Its name, as `list` and the JSON show it: `running`, `empty`, `orphaned`, `leftover`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Empty => "empty",
            TaskState::Orphaned => "orphaned",
            TaskState::Leftover => "leftover",
        }
    }
}

/// One task as `status` and `list` show it (`--json` prints it as is).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task name: the last component of its cgroup path.
    pub name: String,
    /// Its cgroup, relative to the mount.
    pub cgroup: String,
    /// Its cgroup's directory.
    pub path: String,
    /// Whether any process is in its subtree.
    pub populated: bool,
    /// See [`TaskState`].
    pub state: TaskState,
    /// How many processes its subtree holds (threaded subtrees are not counted).
    pub process_count: usize,
    /// The main process `run` recorded.
    pub main_pid: Option<i32>,
    /// The `run` process supervising the task, while it lives.
    pub supervisor_pid: Option<i32>,
    /// The recorded policy, structured for machines.
    pub policy: Option<PolicyInfo>,
    /// The recorded policy in words ([`Policy::summary`]).
    pub policy_summary: Option<String>,
    /// Why records were ignored (an unreadable or malformed policy, say), if any were.
    pub policy_error: Option<String>,
    /// Seconds since `run` created the task.
    pub age_s: Option<u64>,
    /// Its processes, when asked for (`status`; `list` leaves them out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<TaskProcess>>,
}

impl TaskInfo {
    /// The state in words, as `gracekill status` prints it (who supervises a running task, and
    /// what to do about one whose `run` is gone).
    pub fn state_text(&self) -> String {
        match (self.state, self.supervisor_pid) {
            (TaskState::Running, Some(pid)) => {
                format!("running (supervised by gracekill run, pid {pid})")
            }
            (TaskState::Orphaned, _) => {
                "running; its gracekill run is gone (stop it by name)".into()
            }
            (TaskState::Leftover, _) => {
                "empty; its gracekill run is gone (`gracekill stop` removes it)".into()
            }
            (s, _) => s.as_str().into(),
        }
    }
}

/// A recorded policy, structured for machines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PolicyInfo {
    /// The ladder: the stop signal first.
    pub steps: Vec<StepInfo>,
    /// SIGHUP after each signal.
    pub sighup: bool,
    /// How long the final kill waits for the cgroup to empty.
    pub kill_timeout_ms: u128,
    /// `control-group`, `mixed` or `process`.
    pub kill_mode: String,
}

/// One step of a [`PolicyInfo`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StepInfo {
    /// `SIGTERM`, `SIGRTMIN+3`.
    pub signal: String,
    /// The step's grace.
    pub grace_ms: u128,
}

impl From<&Policy> for PolicyInfo {
    fn from(p: &Policy) -> PolicyInfo {
        PolicyInfo {
            steps: p
                .steps
                .iter()
                .map(|s| StepInfo {
                    signal: s.signal.to_string(),
                    grace_ms: s.grace.as_millis(),
                })
                .collect(),
            sighup: p.sighup,
            kill_timeout_ms: p.kill_timeout.as_millis(),
            kill_mode: p.kill_mode.to_string(),
        }
    }
}

/// A process of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TaskProcess {
    /// The pid, in the caller's pid namespace.
    pub pid: i32,
    /// `/proc/<pid>/stat`'s command name.
    pub comm: String,
    /// Its state letter (`R`, `S`, `D`...).
    pub state: String,
}

/// What the task in `cg` looks like: its state, recorded policy, main pid, supervisor and age
/// (records read under the caller's [`task::Trust`]; unreadable ones are described in
/// `policy_error`), and with `with_processes` its processes.
///
/// # Errors
/// A cgroup of the subtree whose members cannot be listed, or `cgroup.events` that cannot be
/// read.
pub fn inspect(cg: &Cgroup, with_processes: bool) -> Result<TaskInfo> {
    let mut pids = Vec::new();
    let mut walk_error = None;
    let _ = cg.walk(None, |c| {
        match c.and_then(Cgroup::members) {
            Ok(m) if !m.threaded => pids.extend(m.ids),
            Ok(_) => {}
            Err(e) => walk_error = Some(e),
        }
        ControlFlow::Continue(())
    });
    if let Some(e) = walk_error {
        return Err(e);
    }
    let (meta, warnings) = TaskMeta::read(cg);
    let policy_error = (!warnings.is_empty()).then(|| warnings.join("; "));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // The root cgroup has no cgroup.events: its processes say whether it is populated.
    let populated = cg.events()?.populated || !pids.is_empty();
    let supervisor = task::supervisor(cg);
    let supervisor_pid = match &supervisor {
        Supervisor::Live(p) => Some(p.pid()),
        _ => None,
    };
    let run_gone = matches!(supervisor, Supervisor::Gone);
    Ok(TaskInfo {
        name: task::name_of(cg).to_string(),
        cgroup: cg.rel().to_string(),
        path: cg.path().display().to_string(),
        populated,
        state: TaskState::of(populated, run_gone),
        process_count: pids.len(),
        main_pid: meta.main_pid,
        supervisor_pid,
        policy: meta.policy.as_ref().map(PolicyInfo::from),
        policy_summary: meta.policy.map(|p| p.summary()),
        policy_error,
        age_s: meta.created.map(|c| now.saturating_sub(c)),
        processes: with_processes.then(|| {
            pids.iter()
                .map(|&pid| {
                    let i = crate::procinfo::describe(pid);
                    TaskProcess {
                        pid,
                        comm: i.comm,
                        state: i.state,
                    }
                })
                .collect()
        }),
    })
}

/// The tasks directly under `parent` (a task argument, see [`task::locate`]) or, without one,
/// under gracekill's root, as [`inspect`] sees them without their processes. A default root
/// that does not exist yet (no task was ever run) holds no tasks.
///
/// # Errors
/// As [`task::locate`]; [`crate::Error::NotFound`] for a `parent` that does not exist; as
/// [`inspect`] for each task.
pub fn list(mount: &Mount, parent: Option<&str>) -> Result<Vec<TaskInfo>> {
    let rel = match parent {
        Some(p) => task::locate(mount, p)?,
        None => task::default_root(mount)?,
    };
    match mount.open_cgroup(&rel) {
        Ok(cg) => cg.children()?.iter().map(|c| inspect(c, false)).collect(),
        Err(e) if e.kind() == ErrorKind::NotFound && parent.is_none() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The names of the tasks under gracekill's root (for completing a task argument).
///
/// # Errors
/// As [`task::default_root`], [`Mount::open_cgroup`] and [`Cgroup::children`].
pub fn names(mount: &Mount) -> Result<Vec<String>> {
    let root = mount.open_cgroup(&task::default_root(mount)?)?;
    Ok(root
        .children()?
        .iter()
        .map(|c| task::name_of(c).to_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_state_says_whether_the_task_runs_and_whether_its_run_is_gone() {
        assert_eq!(TaskState::of(true, false), TaskState::Running);
        assert_eq!(TaskState::of(true, true), TaskState::Orphaned);
        assert_eq!(TaskState::of(false, false), TaskState::Empty);
        assert_eq!(TaskState::of(false, true), TaskState::Leftover);
        for s in [
            TaskState::Running,
            TaskState::Empty,
            TaskState::Orphaned,
            TaskState::Leftover,
        ] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::from(s.as_str())
            );
        }
    }

    fn info(state: TaskState, supervisor_pid: Option<i32>) -> TaskInfo {
        TaskInfo {
            name: "web".into(),
            cgroup: "/gracekill/web".into(),
            path: "/sys/fs/cgroup/gracekill/web".into(),
            populated: matches!(state, TaskState::Running | TaskState::Orphaned),
            state,
            process_count: 0,
            main_pid: None,
            supervisor_pid,
            policy: None,
            policy_summary: None,
            policy_error: None,
            age_s: None,
            processes: None,
        }
    }

    #[test]
    fn the_state_in_words_names_the_supervisor_or_what_to_do() {
        assert_eq!(
            info(TaskState::Running, Some(42)).state_text(),
            "running (supervised by gracekill run, pid 42)"
        );
        assert_eq!(info(TaskState::Running, None).state_text(), "running");
        assert_eq!(info(TaskState::Empty, Some(42)).state_text(), "empty");
        assert_eq!(
            info(TaskState::Orphaned, None).state_text(),
            "running; its gracekill run is gone (stop it by name)"
        );
        assert_eq!(
            info(TaskState::Leftover, None).state_text(),
            "empty; its gracekill run is gone (`gracekill stop` removes it)"
        );
    }

    /// The JSON `status --json` and `list --json` print: field names and order are an interface.
    #[test]
    fn the_json_keeps_its_fields() {
        let mut t = info(TaskState::Running, Some(7));
        let mut p = Policy::default();
        p.steps.push("INT:1500ms".parse().unwrap());
        t.policy = Some(PolicyInfo::from(&p));
        t.policy_summary = Some(p.summary());
        t.age_s = Some(3);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"name":"web","cgroup":"/gracekill/web","path":"/sys/fs/cgroup/gracekill/web","populated":true,"state":"running","process_count":0,"main_pid":null,"supervisor_pid":7,"policy":{"steps":[{"signal":"SIGTERM","grace_ms":30000},{"signal":"SIGINT","grace_ms":1500}],"sighup":false,"kill_timeout_ms":10000,"kill_mode":"control-group"},"policy_summary":"SIGTERM 30s, then SIGINT 1s 500ms, then SIGKILL (timeout 10s)","policy_error":null,"age_s":3}"#
        );
        t.processes = Some(vec![TaskProcess {
            pid: 9,
            comm: "app".into(),
            state: "S".into(),
        }]);
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(
            v["processes"],
            serde_json::json!([{"pid": 9, "comm": "app", "state": "S"}])
        );
        assert_eq!(
            PolicyInfo::from(&p).kill_timeout_ms,
            Duration::from_secs(10).as_millis()
        );
    }
}
