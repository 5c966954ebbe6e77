//! The library's error type: what went wrong, on which path, and what the caller can do.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

/// The broad class of an [`Error`], for callers that decide by category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A path, signal, duration or policy was malformed, or the target is one the engine refuses
    /// to stop (the root cgroup, the caller's own cgroup). Nothing was signalled.
    InvalidInput,
    /// The cgroup or file does not exist.
    NotFound,
    /// The kernel refused: not root and not inside a delegated subtree.
    PermissionDenied,
    /// The kernel lacks a feature and no fallback applies.
    Unsupported,
    /// The resource is in use (for example a task name taken by a running task).
    Busy,
    /// Any other operating-system error.
    Io,
}

/// An error from gracekill. Its `Display` is one lowercase line naming the operation and the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input or a refused target; nothing was signalled.
    #[error("{0}")]
    Input(String),
    /// The target does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A missing kernel feature with no fallback.
    #[error("{0}")]
    Unsupported(String),
    /// In use.
    #[error("{0}")]
    Busy(String),
    /// The command given to `run` could not be started.
    #[error("cannot run '{cmd}': {msg}", msg = errno_text(*errno))]
    Spawn {
        /// The command.
        cmd: String,
        /// Why (`ENOENT`: not found; `EACCES`: not executable).
        errno: Errno,
    },
    /// A system call on a path failed.
    #[error("{op} '{path}': {msg}{hint}", msg = errno_text(*errno), hint = hint_for(*errno))]
    Os {
        /// What was being done, e.g. "write '1' to".
        op: String,
        /// The file or directory.
        path: PathBuf,
        /// The kernel's answer.
        errno: Errno,
    },
}

impl Error {
    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Input(_) => ErrorKind::InvalidInput,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Busy(_) => ErrorKind::Busy,
            Error::Os { errno, .. } | Error::Spawn { errno, .. } => match *errno {
                Errno::NOENT | Errno::NODEV => ErrorKind::NotFound,
                Errno::ACCESS | Errno::PERM | Errno::ROFS => ErrorKind::PermissionDenied,
                Errno::BUSY => ErrorKind::Busy,
                Errno::OPNOTSUPP | Errno::NOSYS => ErrorKind::Unsupported,
                _ => ErrorKind::Io,
            },
        }
    }

    /// The OS error number, when the error came from a system call.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Os { errno, .. } | Error::Spawn { errno, .. } => Some(errno.raw_os_error()),
            _ => None,
        }
    }

    pub(crate) fn os(op: impl fmt::Display, path: &Path, errno: Errno) -> Error {
        Error::Os {
            op: op.to_string(),
            path: path.to_path_buf(),
            errno,
        }
    }
}

fn errno_text(errno: Errno) -> String {
    let text = io::Error::from(errno).to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

fn hint_for(errno: Errno) -> &'static str {
    match errno {
        Errno::ACCESS | Errno::PERM => {
            " (hint: run as root, or inside a cgroup subtree delegated to this user)"
        }
        _ => "",
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
