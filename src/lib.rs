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
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod capi;
pub mod cgroup;
pub mod error;
pub mod guard;
pub mod pidfd;
pub mod policy;
pub mod procinfo;
pub mod report;
pub mod stop;
pub mod supervise;
pub mod sys;
pub mod task;
pub mod watch;

pub use cgroup::{Cgroup, Events, Mount};
pub use error::{Error, ErrorKind, Result};
pub use policy::{KillMode, Policy, Signal, Step};
pub use report::{Outcome, Verdict};
pub use stop::{KillMethod, Progress, StopOptions, stop, stop_blocking};
