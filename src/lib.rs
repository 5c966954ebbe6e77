//! gracekill stops a task gracefully: the task is a cgroup v2, it gets its stop signal and the
//! whole of its grace period, and only what still runs when that time is up gets SIGKILL.
//!
//! - Every signal goes through a pidfd opened for a pid read from `cgroup.procs` and then proven
//!   to still belong to that cgroup, so a recycled pid is never hit.
//! - The grace window ends the moment `cgroup.events` says `populated 0`, watched through
//!   epoll (and the pidfds held), never by polling or sleeping.
//! - The final kill is `cgroup.kill` (fork-proof), or a freeze/kill/thaw fallback.
//! - What happened comes back as an [`Outcome`]: a timeline, who was killed, who survived.
//!
//! What it deliberately does not do: enable controllers, write `cgroup.subtree_control` of any
//! cgroup it did not create, stop the root cgroup or one that holds the caller.
//!
//! ```no_run
//! use gracekill::{Mount, Policy, StopOptions, stop_blocking};
//! use std::time::Duration;
//!
//! let mount = Mount::discover()?;
//! let cg = mount.open_cgroup("/jobs/web")?;
//! let mut policy = Policy::default();
//! policy.steps[0].grace = Duration::from_secs(10);
//! let outcome = stop_blocking(&cg, &policy, &StopOptions::default())?;
//! println!("{}", outcome.to_json());
//! # Ok::<(), gracekill::Error>(())
//! ```
//!
//! A policy is plain data, built from the same strings the CLI takes and checked before any
//! signal is sent (this example runs anywhere, no root needed):
//!
//! ```
//! use gracekill::{KillMode, Policy, Signal, Step};
//! use gracekill::policy::parse_duration;
//!
//! let mut policy = Policy::default(); // SIGTERM, 30 s grace, SIGKILL, 10 s kill timeout
//! policy.steps[0].grace = parse_duration("1m30s")?;
//! policy.steps.push("INT:5s".parse::<Step>()?); // like `--then INT:5s`
//! policy.kill_mode = KillMode::Mixed;
//! policy.validate()?;
//! assert_eq!(policy.steps[1].signal, Signal::INT);
//! assert_eq!(
//!     policy.summary(),
//!     "SIGTERM 1m 30s, then SIGINT 5s, then SIGKILL (timeout 10s), kill-mode=mixed"
//! );
//! // The text stored in the task cgroup's xattr round-trips exactly.
//! assert_eq!(Policy::from_text(&policy.to_text())?, policy);
//! // SIGKILL is never a stop step: it is the final kill.
//! assert!("KILL:1s".parse::<Step>().is_err());
//! # Ok::<(), gracekill::Error>(())
//! ```
//!
//! # Embedding
//! - Rust: [`stop_blocking`] from any thread, or [`stop()`] on a tokio runtime; many stops can
//!   run concurrently (each waits on events, not threads). [`stop_named`] stops a task as
//!   `gracekill stop TASK` does: found by name or path, under the policy given, else its own.
//!   `examples/` has runnable programs for stopping an existing cgroup (`stop_cgroup`), running
//!   a command under a policy (`run_under_policy`) and stopping many cgroups at once
//!   (`stop_many`).
//! - C and C++: the `gracekill-capi` crate (`capi/`) is the C ABI (`include/gracekill.h`,
//!   `libgracekill.a`/`.so`, `gracekill.pc`); `examples/cpp/stop_on_worker.cpp` stops tasks from worker threads, as a
//!   Mesos module must.
//! - Anything else: the CLI's `--json` output (see `integrations/thermos/` for Aurora/Thermos).
//!   `docs/integration.md` covers Mesos, Thermos, systemd hosts and CI.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cgroup;
#[cfg(test)]
mod engine_tests;
pub mod error;
pub(crate) mod guard;
pub mod inspect;
pub mod interrupts;
mod kernel;
pub mod pidfd;
pub mod policy;
pub(crate) mod procinfo;
pub mod report;
pub mod runplan;
pub mod stop;
pub mod supervise;
pub(crate) mod sys;
pub mod task;
pub(crate) mod watch;

pub use cgroup::{Cgroup, Events, Mount};
pub use error::{Error, ErrorKind, Result};
pub use policy::{KillMode, Policy, Signal, Step};
pub use report::{Outcome, Verdict};
pub use stop::{
    KillMethod, Progress, StopOptions, StopRuntime, stop, stop_blocking, stop_named,
    stop_named_blocking, stop_task, stop_task_blocking,
};
