//! What `/proc` says about a process, for reports: name, command line, state, wait channel.
//!
//! Only ever used to *describe* a process that the caller already holds a proven pidfd for;
//! nothing here decides whom to signal.

use serde::Serialize;

/// A process as a report shows it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ProcInfo {
    /// The pid (in the caller's pid namespace).
    pub pid: i32,
    /// `/proc/<pid>/comm`.
    pub comm: String,
    /// `/proc/<pid>/cmdline`, arguments joined by spaces.
    pub cmdline: String,
    /// The one-letter state from `/proc/<pid>/stat` (`R`, `S`, `D`, `Z`, `T`...).
    pub state: String,
    /// `/proc/<pid>/wchan`: the kernel function a sleeping process waits in.
    pub wchan: String,
}

/// Describes `pid`; fields that cannot be read (the process exited meanwhile) stay empty.
pub fn describe(pid: i32) -> ProcInfo {
    let mut info = ProcInfo {
        pid,
        ..ProcInfo::default()
    };
    let Ok(proc) = procfs::process::Process::new(pid) else {
        return info;
    };
    if let Ok(stat) = proc.stat() {
        info.comm = stat.comm;
        info.state = stat.state.to_string();
    }
    if let Ok(args) = proc.cmdline() {
        info.cmdline = args.join(" ");
    }
    if let Ok(w) = proc.wchan() {
        info.wchan = if w == "0" { String::new() } else { w };
    }
    info
}

/// Just the command name, cheaply (`/proc/<pid>/comm`).
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// Just the command line (`/proc/<pid>/cmdline`, arguments joined by spaces).
pub fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    args.join(" ")
}
