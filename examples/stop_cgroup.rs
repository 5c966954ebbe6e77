//! Stop an existing cgroup the way `gracekill stop` does: resolve the task argument, apply a
//! policy, print what happened.
//!
//! ```sh
//! cargo build --examples
//! sudo target/debug/examples/stop_cgroup /jobs/web 10s   # TASK [GRACE]
//! ```
//! Prints the one-line summary and the JSON outcome; exits with the CLI's exit code (0 graceful
//! or already empty, 3 killed, 4 survivors; 1 on an error, 2 on a refused target).

use std::process::ExitCode;

use gracekill::policy::parse_duration;
use gracekill::{ErrorKind, Mount, Policy, StopOptions, stop_blocking};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(task) = args.first() else {
        eprintln!("usage: stop_cgroup TASK [GRACE]");
        return ExitCode::from(2);
    };
    match stop(task, args.get(1).map(String::as_str)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("stop_cgroup: {e}");
            let invalid = matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::NotFound);
            ExitCode::from(if invalid { 2 } else { 1 })
        }
    }
}

fn stop(task: &str, grace: Option<&str>) -> gracekill::Result<u8> {
    // The policy: the CLI's defaults (SIGTERM, 30 s, then SIGKILL with a 10 s timeout), with
    // the grace from the command line.
    let mut policy = Policy::default();
    if let Some(g) = grace {
        policy.steps[0].grace = parse_duration(g)?;
    }
    // Find the cgroup2 mount in /proc/self/mountinfo and resolve TASK exactly as the CLI does:
    // a path under the mount, a path relative to it, or a name under gracekill's root.
    let mount = Mount::discover()?;
    let cg = gracekill::task::open(&mount, task)?;
    // Blocks until the cgroup is empty or the policy is exhausted. The root cgroup and any
    // cgroup holding this process are refused before anything is signalled.
    let outcome = stop_blocking(&cg, &policy, &StopOptions::default())?;
    println!("{}", outcome.summary());
    println!("{}", outcome.to_json());
    Ok(u8::try_from(outcome.outcome.exit_code()).expect("exit codes are 0 to 5"))
}
