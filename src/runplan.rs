//! What `gracekill run` decides before anything starts: the policy (systemd properties first,
//! the flags given explicitly on top), the task's name (checked, or `run-<pid>`) and its parent
//! cgroup (gracekill's root, or `--parent` resolved as any task argument is).

use std::ffi::OsString;
use std::time::Duration;

use crate::cgroup::Mount;
use crate::error::Result;
use crate::policy::{Policy, PolicyFlags, apply_property};
use crate::stop::KillMethod;
use crate::supervise::RunSpec;
use crate::task;

/// What a caller of `run` asks for, as given (`gracekill run`'s flags); nothing is checked
/// until [`RunRequest::plan`].
#[derive(Clone, Debug, Default)]
pub struct RunRequest {
    /// The task name (`--name`); `None`: `run-<pid>` (see [`default_name`]).
    pub name: Option<String>,
    /// The parent cgroup (`--parent`): a task argument (see [`task::locate`]); `None`:
    /// gracekill's root ([`task::default_root`]). Created if missing.
    pub parent: Option<String>,
    /// systemd-run properties (`-p NAME=VALUE`), applied in order (see [`apply_property`]).
    pub properties: Vec<String>,
    /// The policy flags given explicitly: each wins over the properties.
    pub flags: PolicyFlags,
    /// Start the graceful stop after this long (`--timeout`); wins over `RuntimeMaxSec=`.
    pub timeout: Option<Duration>,
    /// Keep the task's cgroup when the task ends (`--keep`).
    pub keep: bool,
    /// The command and its arguments.
    pub argv: Vec<OsString>,
}

/// A run decided: where its task goes and under which policy, ready for
/// [`crate::supervise::run`].
#[derive(Debug)]
#[non_exhaustive]
pub struct RunPlan {
    /// The cgroup2 mount the task's cgroup is made in.
    pub mount: Mount,
    /// What `run` starts.
    pub spec: RunSpec,
    /// The name was generated, not given: the user needs to be told it to stop the task by
    /// name.
    pub name_generated: bool,
}

impl RunPlan {
    /// The task's cgroup, relative to the mount: `<parent>/<name>`.
    pub fn cgroup(&self) -> String {
        cgroup_of(&self.spec.parent, &self.spec.name)
    }
}

/// `<parent>/<name>` without a doubled `/` (the parent may be the mount's root, `/`).
fn cgroup_of(parent: &str, name: &str) -> String {
    format!("{}/{name}", parent.trim_end_matches('/'))
}

/// The name of a task whose `run` (process `pid`) was given none: `run-<pid>`, unique among
/// the runs alive.
pub fn default_name(pid: u32) -> String {
    format!("run-{pid}")
}

impl RunRequest {
    /// The policy and the timeout asked for: the defaults, each property applied in order,
    /// then each flag given explicitly on top; validated. `--timeout` wins over
    /// `RuntimeMaxSec=`.
    ///
    /// # Errors
    /// [`crate::Error::Input`] naming the bad property, or the policy's broken rule.
    pub fn policy(&self) -> Result<(Policy, Option<Duration>)> {
        let mut policy = Policy::default();
        let mut timeout = None;
        for prop in &self.properties {
            apply_property(&mut policy, &mut timeout, prop)?;
        }
        let policy = self.flags.apply(policy);
        policy.validate()?;
        let timeout = self.timeout.or(timeout);
        if timeout.is_some_and(|t| t.is_zero()) {
            // timeout(1) reads 0 as "no timeout", a runtime limit of 0 as "stop at once": the
            // two readings disagree, so neither is guessed.
            return Err(crate::Error::Input(
                "a timeout of 0 is ambiguous (timeout(1) reads it as none, a limit of 0 as \
                 stop at once): leave --timeout and RuntimeMaxSec= out for no timeout"
                    .into(),
            ));
        }
        Ok((policy, timeout))
    }

    /// Decides the run: checks the policy and the name before looking at the system, then finds
    /// the cgroup2 mount and places the task under its parent, named as given or
    /// [`default_name`] of this process.
    ///
    /// # Errors
    /// As [`RunRequest::policy`]; [`crate::Error::Input`] for an invalid name
    /// ([`task::validate_name`]), a malformed `$GRACEKILL_ROOT` or `parent`; as
    /// [`Mount::discover`].
    pub fn plan(self) -> Result<RunPlan> {
        let (policy, timeout) = self.policy()?;
        if let Some(name) = &self.name {
            task::validate_name(name)?;
        }
        let mount = Mount::discover()?;
        let parent = match &self.parent {
            Some(p) => task::locate(&mount, p)?,
            None => task::default_root(&mount)?,
        };
        let name_generated = self.name.is_none();
        let name = self
            .name
            .unwrap_or_else(|| default_name(std::process::id()));
        Ok(RunPlan {
            mount,
            spec: RunSpec {
                name,
                parent,
                policy,
                timeout,
                keep: self.keep,
                argv: self.argv,
                kill_method: KillMethod::Auto,
            },
            name_generated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{KillMode, Signal};

    #[test]
    fn a_zero_timeout_is_refused_either_way_it_is_given() {
        for (props, flag) in [
            (vec![], Some(Duration::ZERO)),
            (vec!["RuntimeMaxSec=0"], None),
        ] {
            let mut r = request(&props, PolicyFlags::default());
            r.timeout = flag;
            let e = r.policy().expect_err("a zero timeout");
            assert!(e.to_string().contains("timeout of 0 is ambiguous"), "{e}");
        }
        let mut r = request(&[], PolicyFlags::default());
        r.timeout = Some(Duration::from_millis(1));
        assert_eq!(r.policy().expect("1 ms").1, Some(Duration::from_millis(1)));
    }

    fn request(properties: &[&str], flags: PolicyFlags) -> RunRequest {
        RunRequest {
            properties: properties.iter().map(|p| (*p).to_owned()).collect(),
            flags,
            ..RunRequest::default()
        }
    }

    #[test]
    fn without_properties_or_flags_the_defaults_apply() {
        let (p, t) = request(&[], PolicyFlags::default()).policy().unwrap();
        assert_eq!((p, t), (Policy::default(), None));
    }

    #[test]
    fn explicit_flags_win_over_properties() {
        let flags = PolicyFlags {
            signal: Some(Signal::HUP),
            kill_mode: Some(KillMode::Mixed),
            ..PolicyFlags::default()
        };
        let mut r = request(
            &[
                "KillSignal=SIGINT",
                "TimeoutStopSec=5",
                "KillMode=process",
                "RuntimeMaxSec=1m",
            ],
            flags,
        );
        r.timeout = Some(Duration::from_secs(10));
        let (p, t) = r.policy().unwrap();
        assert_eq!(p.steps[0].signal, Signal::HUP, "--signal wins");
        assert_eq!(p.kill_mode, KillMode::Mixed, "--kill-mode wins");
        assert_eq!(t, Some(Duration::from_secs(10)), "--timeout wins");
        // What no flag sets, the property decides.
        assert_eq!(p.steps[0].grace, Duration::from_secs(5));
    }

    #[test]
    fn properties_apply_in_order_and_the_last_one_wins() {
        let r = request(
            &["KillSignal=INT", "KillSignal=HUP", "RuntimeMaxSec=30s"],
            PolicyFlags::default(),
        );
        let (p, t) = r.policy().unwrap();
        assert_eq!(p.steps[0].signal, Signal::HUP);
        assert_eq!(t, Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_bad_property_or_policy_is_named() {
        let e = request(&["KillSignal=INT", "Nope=1"], PolicyFlags::default())
            .policy()
            .unwrap_err();
        assert!(e.to_string().contains("unknown property 'Nope'"), "{e}");
        // The flags' result is validated too: one step too many.
        let flags = PolicyFlags {
            then: vec!["INT:1s".parse().unwrap(); crate::policy::MAX_STEPS],
            ..PolicyFlags::default()
        };
        assert!(request(&[], flags).policy().is_err());
    }

    /// The policy is checked before the name, the name before the system is looked at: bad
    /// input is reported the same on any machine, cgroup v2 or not.
    #[test]
    fn bad_input_is_refused_before_the_system_is_looked_at() {
        let bad_name = RunRequest {
            name: Some("a/b".into()),
            ..RunRequest::default()
        };
        let e = bad_name.plan().unwrap_err();
        assert!(e.to_string().starts_with("invalid task name 'a/b'"), "{e}");
        let both = RunRequest {
            name: Some("a/b".into()),
            properties: vec!["Nope=1".into()],
            ..RunRequest::default()
        };
        assert!(
            both.plan()
                .unwrap_err()
                .to_string()
                .contains("unknown property")
        );
    }

    #[test]
    fn a_generated_name_is_a_valid_task_name() {
        assert_eq!(default_name(4242), "run-4242");
        task::validate_name(&default_name(u32::MAX)).unwrap();
    }

    #[test]
    fn the_cgroup_is_the_parent_and_the_name() {
        assert_eq!(cgroup_of("/gracekill", "web"), "/gracekill/web");
        assert_eq!(cgroup_of("/", "web"), "/web");
        assert_eq!(cgroup_of("/jobs/", "web"), "/jobs/web");
    }
}
