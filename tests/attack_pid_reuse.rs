//! PID reuse, forced for real: the window between reading a pid from `cgroup.procs` and
//! signalling it, with the pid taken over by a process outside the task's cgroup.
//!
//! The trials run inside a new PID namespace (`unshare --pid --fork --mount-proc`) whose
//! `pid_max` is lowered to a few hundred (per-namespace since Linux 6.14), so pids wrap after
//! about a hundred forks. Each trial:
//! 1. starts a victim in the task cgroup and reads its pid P from `cgroup.procs`;
//! 2. the victim exits and is reaped;
//! 3. the helper forks until a child gets P: the outsider, in another cgroup;
//! 4. gracekill signals P as the engine does (`signal_listed_pid`, the per-pid step of every
//!    enumeration pass) and through a pidfd it opened before the victim died;
//! 5. a naive `kill(P, SIGTERM)` follows.
//!
//! Every process involved blocks all signals, so any signal it is sent stays pending and is
//! visible in `/proc/<pid>/status` (`SigPnd`/`ShdPnd`): no timing decides the verdict.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::TestCgroup;

const HELPER_ENV: &str = "GK_PID_REUSE_HELPER";
const RESULT_TAG: &str = "GK_PID_REUSE_RESULT ";
const TRIALS: u32 = 1000;
/// Pids below 300 are reserved after the first wrap, so pids cycle through 300..PID_MAX: a
/// freed pid is handed out again within ten forks.
const PID_MAX: u32 = 310;

#[test]
fn reused_pid_is_hit_by_naive_kill_and_never_by_gracekill() {
    require_cgroup_v2!();
    // Before 6.14 pid_max is global: lowering it in the namespace would lower it for the whole
    // machine. The VM tests exclude this test on older kernels (vm-tests/guest1/init).
    if !common::kernel_at_least(6, 14) {
        let (major, minor) = common::kernel_version();
        let why = format!(
            "needs per-PID-namespace pid_max (Linux 6.14), this kernel is {major}.{minor}: \
             refusing to touch the global pid_max"
        );
        assert!(!common::strict(), "{why}");
        eprintln!("SKIPPED pid reuse: {why}");
        return;
    }
    if !std::path::Path::new("/usr/bin/unshare").exists() {
        assert!(!common::strict(), "unshare (util-linux) is missing");
        eprintln!("SKIPPED pid reuse: no unshare");
        return;
    }
    for (method, force_proc) in [("PIDFD_GET_INFO", false), ("/proc/<pid>/cgroup", true)] {
        let task = TestCgroup::new("reuse-task");
        let outside = TestCgroup::new("reuse-outside");
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new("bash");
        // Join the outside cgroup first: the namespace's init and every process it forks
        // (outsiders included) live there, and the guard kills whatever is left.
        cmd.arg("-c")
            .arg(r#"echo 0 > "$GK_PROCS" && exec unshare --pid --fork --mount-proc "$@""#)
            .arg("bash")
            .arg(&exe)
            .args([
                "--exact",
                "helper_pid_reuse_trials_in_namespace",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("GK_PROCS", outside.path.join("cgroup.procs"))
            .env(HELPER_ENV, &task.rel)
            .env_remove("GRACEKILL_FORCE_PROC_MEMBERSHIP")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if force_proc {
            cmd.env("GRACEKILL_FORCE_PROC_MEMBERSHIP", "1");
        }
        let t = Instant::now();
        let mut child = cmd.spawn().expect("spawn unshare");
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        let line = out
            .lines()
            .find_map(|l| l.split_once(RESULT_TAG).map(|(_, r)| r))
            .unwrap_or_else(|| panic!("{method}: no result ({status})\n{out}\n{err}"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        eprintln!("pid reuse, {method}: {v} in {:?}", t.elapsed());
        assert!(status.success(), "{method}: helper failed\n{out}\n{err}");
        assert_eq!(v["membership_proof"], method, "{v}");
        assert_eq!(v["trials"], TRIALS, "{v}");
        assert_eq!(v["outsider_got_victims_pid"], TRIALS, "{v}");
        assert_eq!(
            v["members_signalled"], TRIALS,
            "the proof must accept real members: {v}"
        );
        assert_eq!(
            v["naive_kill_hit_outsider"], TRIALS,
            "kill(pid) hits the new owner of the pid every time: {v}"
        );
        assert_eq!(
            v["gracekill_hit_outsider"], 0,
            "gracekill must never signal the outsider: {v}"
        );
        assert_eq!(
            v["stale_pidfd_signalled"], 0,
            "a pidfd never follows a pid: {v}"
        );
        assert!(
            v["max_forks_to_reuse"].as_u64().unwrap() < u64::from(PID_MAX),
            "{v}"
        );
        assert!(task.pids().is_empty() && outside.pids().is_empty());
    }
}

/// Not a test on its own: the body of the namespace's init, started by the test above through
/// `unshare`. Without its environment variable it returns at once.
#[test]
fn helper_pid_reuse_trials_in_namespace() {
    let Ok(task_rel) = std::env::var(HELPER_ENV) else {
        return;
    };
    let result = trials(&task_rel);
    println!("\n{RESULT_TAG}{result}");
}

fn trials(task_rel: &str) -> serde_json::Value {
    use gracekill::Signal;
    use gracekill::pidfd::{Membership, PidFd, membership_method};
    use gracekill::stop::signal_listed_pid;

    assert_eq!(std::process::id(), 1, "must run as the namespace's init");
    assert!(
        common::kernel_at_least(6, 14),
        "pid_max is global before Linux 6.14: refusing to lower it"
    );
    std::fs::write("/proc/sys/kernel/pid_max", PID_MAX.to_string())
        .expect("per-namespace pid_max (Linux 6.14)");
    let mount = gracekill::Mount::discover().unwrap();
    let task = mount.open_cgroup(task_rel).unwrap();
    let method = match membership_method() {
        Membership::PidfdInfo => "PIDFD_GET_INFO",
        Membership::ProcFile => "/proc/<pid>/cgroup",
    };
    block_all_signals();
    // Until pids first wrap they start at 1; after that at 300. Wrap once so every trial sees
    // the steady cycle 300..PID_MAX.
    let mut last = 0;
    loop {
        let c = fork_exit_unless(-1);
        reap(c);
        if c < last {
            break;
        }
        last = c;
    }

    let (mut reused, mut members, mut naive, mut hit, mut stale, mut max_forks) =
        (0, 0, 0, 0, 0, 0);
    for _ in 0..TRIALS {
        // 1. The victim, a member of the task; its pid as the engine reads it.
        let victim = fork_paused();
        std::fs::write(task.path().join("cgroup.procs"), victim.to_string()).unwrap();
        let listed = task.procs().unwrap();
        assert_eq!(listed, [victim], "cgroup.procs lists the victim");
        let pid = listed[0];
        // Controls: the proof accepts a real member, and the engine's step signals it.
        let held = PidFd::open_member(&task, pid)
            .unwrap()
            .expect("victim proven");
        if signal_listed_pid(&task, pid, Signal::TERM, &[Signal::CONT])
            .unwrap()
            .is_some()
            && pending(pid) & bit(libc::SIGTERM) != 0
        {
            members += 1;
        }

        // 2. The victim exits and is reaped: its pid is free.
        kill_and_reap(victim);

        // 3. Fork until the pid comes round again; that child is the outsider.
        let mut forks = 0;
        let outsider = loop {
            forks += 1;
            assert!(forks < 10 * PID_MAX, "pid {pid} never came round again");
            let c = fork_exit_unless(pid);
            if c == pid {
                break c;
            }
            reap(c);
        };
        max_forks = max_forks.max(forks);
        let cg_line = std::fs::read_to_string(format!("/proc/{outsider}/cgroup")).unwrap();
        assert!(
            !cg_line.contains(task.ns_path()),
            "outsider is outside the task"
        );
        reused += 1;

        // 4. gracekill, in the window: the listed pid, and the pidfd opened before the reuse.
        assert!(
            signal_listed_pid(&task, pid, Signal::TERM, &[Signal::CONT])
                .unwrap()
                .is_none(),
            "reused pid proven a member"
        );
        let stale_sent =
            held.send_signal(Signal::TERM).unwrap() | held.send_signal(Signal::HUP).unwrap();
        if stale_sent {
            stale += 1;
        }
        if pending(outsider) != 0 {
            hit += 1;
        }

        // 5. What a naive stopper does with the pid it read.
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        if pending(outsider) & bit(libc::SIGTERM) != 0 {
            naive += 1;
        }
        kill_and_reap(outsider);
    }
    serde_json::json!({
        "membership_proof": method,
        "trials": TRIALS,
        "outsider_got_victims_pid": reused,
        "members_signalled": members,
        "naive_kill_hit_outsider": naive,
        "gracekill_hit_outsider": hit,
        "stale_pidfd_signalled": stale,
        "max_forks_to_reuse": max_forks,
    })
}

fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// The process's pending signals, thread and process-wide (`SigPnd | ShdPnd`).
fn pending(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))
        })
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .fold(0, |a, b| a | b)
}

/// Blocks every signal in this thread; forked children inherit the mask, so whatever they are
/// sent stays pending for `pending` to see (SIGKILL still ends them).
fn block_all_signals() {
    // SAFETY: sigfillset initialises the set; pthread_sigmask only changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
    }
}

/// Forks a child that waits forever.
fn fork_paused() -> i32 {
    fork_exit_unless(0)
}

/// Forks a child that exits at once unless its pid is `keep` (0: always keep); a kept child
/// waits forever.
fn fork_exit_unless(keep: i32) -> i32 {
    // SAFETY: the child calls only async-signal-safe functions (getpid, _exit, pause) before it
    // exits or is killed, so forking from a multi-threaded process is sound.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            if keep != 0 && libc::getpid() != keep {
                libc::_exit(0);
            }
            loop {
                libc::pause();
            }
        }
        pid
    }
}

fn reap(pid: i32) {
    let p = rustix::process::Pid::from_raw(pid).unwrap();
    rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty()).unwrap();
}

fn kill_and_reap(pid: i32) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    reap(pid);
}
