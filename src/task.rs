//! Naming tasks: how a `TASK` argument becomes a cgroup path, gracekill's default root, and what
//! a task name may look like.

use std::path::Path;

use crate::cgroup::{Mount, normalize};
use crate::error::{Error, Result};

/// The default root for tasks named by a bare name, relative to the cgroup2 mount.
pub const DEFAULT_ROOT: &str = "/gracekill";

/// gracekill's root for bare task names: `$GRACEKILL_ROOT` (an absolute path under the mount
/// or a mount-relative path) or [`DEFAULT_ROOT`].
///
/// # Errors
/// [`Error::Input`] when `$GRACEKILL_ROOT` is malformed or outside the mount.
pub fn default_root(mount: &Mount) -> Result<String> {
    match std::env::var("GRACEKILL_ROOT") {
        Ok(v) if !v.is_empty() => {
            if !v.starts_with('/') {
                return Err(Error::Input(format!(
                    "GRACEKILL_ROOT='{}' must be an absolute path",
                    v.escape_debug()
                )));
            }
            absolute_to_rel(mount, &v).map_err(|e| Error::Input(format!("GRACEKILL_ROOT: {e}")))
        }
        _ => Ok(DEFAULT_ROOT.to_string()),
    }
}

/// Resolves a `TASK` argument to a path relative to the mount:
/// - `/sys/fs/cgroup/jobs/web` (under the mount point) -> `/jobs/web`;
/// - `/jobs/web` (not an existing path outside the mount) -> `/jobs/web`;
/// - `web` or `team/web` -> `<root>/web`, `<root>/team/web`.
///
/// # Errors
/// [`Error::Input`] for an empty spec, `.`/`..` components, or an existing path outside the
/// cgroup2 mount (another filesystem, a cgroup v1 hierarchy, a symlink).
pub fn resolve(mount: &Mount, spec: &str, root: &str) -> Result<String> {
    if spec.trim().is_empty() {
        return Err(Error::Input("empty task name or cgroup path".into()));
    }
    if spec.split('/').any(|c| c == ".." || c == ".") {
        return Err(Error::Input(format!(
            "invalid cgroup path '{}': '.' and '..' are not allowed",
            spec.escape_debug()
        )));
    }
    if spec.starts_with('/') {
        absolute_to_rel(mount, spec)
    } else {
        normalize(&format!("{root}/{spec}"))
    }
}

fn absolute_to_rel(mount: &Mount, spec: &str) -> Result<String> {
    if spec.bytes().all(|b| b == b'/') {
        // `/` is the mount's root cgroup (which the engine then refuses to stop).
        return Ok("/".into());
    }
    let p = Path::new(spec);
    if let Ok(rest) = p.strip_prefix(mount.mountpoint()) {
        let rest = rest
            .to_str()
            .ok_or_else(|| Error::Input(format!("'{}' is not valid UTF-8", spec.escape_debug())))?;
        return normalize(rest);
    }
    if std::fs::symlink_metadata(p).is_ok() {
        return Err(Error::Input(format!(
            "'{spec}' is outside the cgroup2 mount at '{}'; give a path under it, or one relative to it",
            mount.mountpoint().display()
        )));
    }
    normalize(spec)
}

/// Checks a task name for `run --name`: one path component of letters, digits and `-_.@:`,
/// at most 128 bytes, not `.` or `..`.
///
/// # Errors
/// [`Error::Input`] naming the name and the rule.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@:".contains(&b))
        && !name.starts_with("cgroup.");
    if ok {
        Ok(())
    } else {
        Err(Error::Input(format!(
            "invalid task name '{}': use 1-128 letters, digits and -_.@: (one path component, not starting with 'cgroup.')",
            name.escape_debug()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["web", "a-b_c.d@e:f", "X1"] {
            validate_name(good).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "ünï",
            "cgroup.procs",
            &"x".repeat(129),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
