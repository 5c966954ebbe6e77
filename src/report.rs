//! What a stop did: the outcome, its timeline, and its JSON form.

use serde::Serialize;

use crate::policy::Signal;
use crate::procinfo::ProcInfo;
pub use crate::procinfo::ThreadInfo;
use crate::task::PolicySource;

/// At most this many processes are listed in `killed` and in `survivors`; the totals count all.
pub const MAX_LISTED: usize = 100;

/// The verdict of a stop. Also decides the CLI's exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The cgroup was already empty; nothing was signalled. Exit 0.
    Empty,
    /// The cgroup emptied within the grace period(s). Exit 0.
    Graceful,
    /// The final kill was needed, and the cgroup is now empty. Exit 3.
    Killed,
    /// Processes survived the final kill for the whole kill timeout. Exit 4.
    Survivors,
    /// `kill-mode=process`: the main process is gone (or there was none) and the other
    /// processes were left running, as that mode asks. Exit 5.
    Remaining,
}

impl Verdict {
    /// The `gracekill stop` exit code for this verdict.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Empty | Verdict::Graceful => 0,
            Verdict::Killed => 3,
            Verdict::Survivors => 4,
            Verdict::Remaining => 5,
        }
    }

    /// The lowercase name used in JSON and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Empty => "empty",
            Verdict::Graceful => "graceful",
            Verdict::Killed => "killed",
            Verdict::Survivors => "survivors",
            Verdict::Remaining => "remaining",
        }
    }
}

/// One signal step as it happened.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[non_exhaustive]
pub struct StepReport {
    /// The signal; `SIGKILL` for the final kill. Its name in JSON (`"SIGTERM"`).
    #[serde(serialize_with = "by_name")]
    pub signal: Signal,
    /// When the step began, milliseconds after the stop started.
    pub at_ms: f64,
    /// How many processes were sent the signal (for the final kill: how many were alive).
    pub signalled: usize,
    /// For the final kill: `cgroup.kill`, `fallback` (freeze, SIGKILL each, thaw), or `pidfd`
    /// (process mode: the main process only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'static str>,
    /// For a final kill sent by another stop of the same task running at the same time: that
    /// stopper's pid. This stop saw the cgroup empty because of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_pid: Option<u32>,
}

impl StepReport {
    /// A step of this stop: `signal` sent at `at_ms` to `signalled` processes.
    pub fn new(signal: Signal, at_ms: f64, signalled: usize) -> StepReport {
        StepReport {
            signal,
            at_ms,
            signalled,
            via: None,
            by_pid: None,
        }
    }
}

fn by_name<S: serde::Serializer>(sig: &Signal, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(sig)
}

/// A process still present after the final kill and its timeout.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Survivor {
    /// The pid.
    pub pid: i32,
    /// `/proc/<pid>/comm`.
    pub comm: String,
    /// The state letter: `D` (uninterruptible sleep) is the usual reason.
    pub state: String,
    /// The kernel function it waits in, e.g. `__refrigerator`, `fuse_wait_answer`.
    pub wchan: String,
    /// Whether `process_mrelease(2)` released its memory.
    pub memory_released: bool,
    /// Why not, if it did not (e.g. `EINVAL`, `ENOSYS`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mrelease_error: Option<String>,
    /// Threads in another state than the leader (the one stuck in `D`, say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub threads: Vec<ThreadInfo>,
    /// For a survivor in a tracing stop (`t`): the pid of its tracer, which holds it there (a
    /// SIGKILLed tracee traced with `PTRACE_O_TRACEEXIT` waits at its exit until the tracer
    /// resumes it, or dies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracer: Option<i32>,
}

/// Errors met along the way that did not stop the stop (a process that could not be opened or
/// signalled, a cgroup that could not be listed): how many, and the first few.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problems {
    /// How many.
    pub count: usize,
    /// The first five different ones, one line each (a cause met at every read, such as an
    /// unreadable list, is one example however often it is counted, and leaves room for others).
    pub examples: Vec<String>,
}

impl Killed {
    /// A process alive when the final kill was sent.
    pub fn new(pid: i32, comm: String, cmdline: String) -> Killed {
        Killed { pid, comm, cmdline }
    }
}

impl Problems {
    /// Records one.
    pub fn add(&mut self, what: impl std::fmt::Display) {
        self.count += 1;
        if self.examples.len() < 5 {
            let what = what.to_string();
            if !self.examples.contains(&what) {
                self.examples.push(what);
            }
        }
    }
}

/// A process that was alive when the final kill was sent.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Killed {
    /// The pid.
    pub pid: i32,
    /// `/proc/<pid>/comm`.
    pub comm: String,
    /// `/proc/<pid>/cmdline` (at most 512 bytes), if it could be read without waiting on the
    /// process; empty otherwise.
    pub cmdline: String,
}

/// A name the task chose (its comm), made safe for a line a person or a log reads: control
/// characters (a newline that would forge a second summary line, a terminal escape) are
/// written escaped. JSON carries names as they are, escaped by JSON itself.
pub fn printable(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// How one process the stop held a pidfd for ended: the per-process exit timeline.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[non_exhaustive]
pub struct Exit {
    /// The pid.
    pub pid: i32,
    /// `/proc/<pid>/comm`, read while it was alive; empty if it was not described.
    pub comm: String,
    /// When the stop saw it exit (its pidfd became readable), milliseconds after the stop
    /// started.
    pub at_ms: f64,
    /// Its exit code, if it exited by itself (`exit(3)`, returning from `main`).
    pub code: Option<i32>,
    /// The signal that ended it (`SIGKILL`, `SIGTERM` without a handler).
    pub signal: Option<String>,
    /// Whether it dumped core.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub core_dumped: bool,
    /// The raw wait status (`WIFEXITED`, `WTERMSIG` apply), for the C ABI. `code` and `signal`
    /// are both `None` when it is unknown: the kernel has no `PIDFD_INFO_EXIT` (before 6.15),
    /// or the process's parent had not reaped it yet when the stop ended.
    #[serde(skip)]
    pub wait_status: Option<i32>,
}

impl Exit {
    /// An entry from the kernel's wait status (`None`: unknown).
    pub fn new(pid: i32, comm: String, at_ms: f64, wait_status: Option<i32>) -> Exit {
        let (code, signal, core_dumped) = match wait_status {
            Some(st) if st & 0x7f == 0 => (Some((st >> 8) & 0xff), None, false),
            Some(st) => {
                let sig = st & 0x7f;
                let name = crate::policy::Signal::from_raw(sig)
                    .map_or_else(|_| format!("signal {sig}"), |s| s.to_string());
                (None, Some(name), st & 0x80 != 0)
            }
            None => (None, None, false),
        };
        Exit {
            pid,
            comm,
            at_ms,
            code,
            signal,
            core_dumped,
            wait_status,
        }
    }

    /// `app exited 0 after 1.50s`, `sleep killed by SIGKILL after 2.00s`.
    pub fn describe(&self) -> String {
        let who = if self.comm.is_empty() {
            format!("pid {}", self.pid)
        } else {
            printable(&self.comm)
        };
        let secs = self.at_ms / 1000.0;
        match (&self.code, &self.signal) {
            (Some(c), _) => format!("{who} exited {c} after {secs:.2}s"),
            (None, Some(s)) => format!("{who} killed by {s} after {secs:.2}s"),
            (None, None) => format!("{who} gone after {secs:.2}s"),
        }
    }
}

impl From<ProcInfo> for Survivor {
    fn from(p: ProcInfo) -> Survivor {
        Survivor {
            pid: p.pid,
            comm: p.comm,
            state: p.state,
            wchan: p.wchan,
            memory_released: false,
            mrelease_error: None,
            threads: p.threads,
            tracer: p.tracer,
        }
    }
}

/// Everything a stop did, in order. Serialized as the `--json` object.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[non_exhaustive]
pub struct Outcome {
    /// The cgroup, relative to the cgroup2 mount (`/gracekill/web`).
    pub cgroup: String,
    /// The verdict.
    pub outcome: Verdict,
    /// Total time the stop took, in milliseconds.
    pub elapsed_ms: f64,
    /// When `populated 0` was observed, or `None` if the cgroup never emptied.
    pub empty_at_ms: Option<f64>,
    /// Whether the cgroup (or a cgroup below it) was frozen and the stop thawed it so signal
    /// handlers could run.
    pub thawed: bool,
    /// Each signal step, the final kill included.
    pub steps: Vec<StepReport>,
    /// The processes alive when the final kill was sent (the first 100).
    pub killed: Vec<Killed>,
    /// How many processes were alive when the final kill was sent.
    pub killed_total: usize,
    /// The processes the stop signalled and saw exit, in the order they exited, with their exit
    /// status: the first 99 and the last one.
    pub exits: Vec<Exit>,
    /// The processes still present after the kill timeout (the first 100).
    pub survivors: Vec<Survivor>,
    /// How many processes survived.
    pub survivors_total: usize,
    /// The policy applied, in words.
    pub policy: String,
    /// Where the policy came from: `given`, `stored` or `default`.
    pub policy_source: PolicySource,
    /// Records that were ignored (malformed, unreadable) and other things the caller should know.
    pub warnings: Vec<String>,
    /// Errors that did not stop the stop.
    pub errors: Problems,
    /// How membership of each pid was proven: `PIDFD_GET_INFO` or `/proc/<pid>/cgroup`.
    pub membership_proof: &'static str,
    /// The cgroup was removed (by someone else) before the stop ended: its processes exited or
    /// were moved out, and the cgroup no longer exists.
    pub cgroup_removed: bool,
}

impl Outcome {
    /// The outcome of a stop of `cgroup` under `policy` (its summary) that did nothing yet: no
    /// step, no exit, no error. What a stop that finds nothing to do reports, filled in further.
    pub fn nothing(cgroup: String, outcome: Verdict, policy: String) -> Outcome {
        Outcome {
            cgroup,
            outcome,
            elapsed_ms: 0.0,
            empty_at_ms: None,
            thawed: false,
            steps: Vec::new(),
            killed: Vec::new(),
            killed_total: 0,
            exits: Vec::new(),
            survivors: Vec::new(),
            survivors_total: 0,
            policy,
            policy_source: crate::task::PolicySource::Given,
            warnings: Vec::new(),
            errors: Problems::default(),
            membership_proof: "",
            cgroup_removed: false,
        }
    }

    /// The JSON object, one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an Outcome always serializes")
    }

    /// The one-line human summary: `gracekill: /jobs/web graceful in 2.01s (SIGTERM to 2)`.
    pub fn summary(&self) -> String {
        let secs = self.elapsed_ms / 1000.0;
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|s| match (s.via, s.by_pid) {
                (Some(via), Some(pid)) => {
                    format!("{} via {via} by another stop (pid {pid})", s.signal)
                }
                (Some(via), None) => format!("{} via {via} to {}", s.signal, s.signalled),
                (None, _) => format!("{} to {}", s.signal, s.signalled),
            })
            .collect();
        let mut line = format!(
            "{} {} in {secs:.2}s",
            printable(&self.cgroup),
            self.outcome.as_str()
        );
        if !steps.is_empty() {
            line.push_str(&format!(" ({})", steps.join(", ")));
        }
        if self.thawed {
            line.push_str(", thawed");
        }
        if !self.exits.is_empty() {
            let list: Vec<String> = self.exits.iter().take(5).map(Exit::describe).collect();
            line.push_str(&format!("; {}", list.join("; ")));
            if self.exits.len() > 5 {
                line.push_str(&format!("; {} more exited", self.exits.len() - 5));
            }
        }
        if self.cgroup_removed {
            // Usually its `gracekill run`, tidying up once the task ended: not a fault.
            line.push_str(", cgroup removed once empty");
        }
        if self.errors.count > 0 {
            line.push_str(&format!(
                "; {} error(s), first: {}",
                self.errors.count,
                self.errors
                    .examples
                    .first()
                    .map(String::as_str)
                    .unwrap_or("?")
            ));
        }
        if !self.survivors.is_empty() {
            let list: Vec<String> = self
                .survivors
                .iter()
                .take(5)
                .map(|s| {
                    format!(
                        "{} {} state {} in {}{}",
                        s.pid,
                        printable(&s.comm),
                        s.state,
                        if s.wchan.is_empty() { "?" } else { &s.wchan },
                        s.tracer
                            .map(|t| format!(", held by its tracer {t}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            line.push_str(&format!(
                "; {} survived SIGKILL: {}",
                self.survivors_total,
                list.join("; ")
            ));
        }
        line
    }
}
