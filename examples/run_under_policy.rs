//! Run a command under a stop policy, as `gracekill run` does: the command starts inside its own
//! new cgroup (it joins before `exec`, so nothing of it ever runs outside), and when the timeout
//! fires, or this program gets SIGTERM/SIGINT, the whole task is stopped by the policy.
//!
//! ```sh
//! cargo build --examples
//! sudo target/debug/examples/run_under_policy --grace 5s --timeout 30s -- ./server --port 8080
//! ```
//! Options: `--name NAME` (default `example-<pid>`), `--parent CGROUP` (a cgroup path or a name
//! under gracekill's root, as for `gracekill run`; default the root, `/gracekill`), `--grace
//! DUR`, `--timeout DUR`. Prints the run report as JSON and exits with the command's status (124
//! when the timeout stopped it gracefully, 137 when it had to be killed, as `timeout(1)` does).

use std::ffi::OsString;
use std::process::ExitCode;

use gracekill::policy::{PolicyFlags, parse_duration};
use gracekill::runplan::RunRequest;
use gracekill::supervise::run;

fn usage() -> ExitCode {
    eprintln!(
        "usage: run_under_policy [--name NAME] [--parent CGROUP] [--grace DUR] [--timeout DUR] -- CMD [ARGS...]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let mut name = format!("example-{}", std::process::id());
    let mut parent = None;
    let mut policy = PolicyFlags::default();
    let mut timeout = None;
    let mut argv: Vec<OsString> = Vec::new();
    while let Some(a) = args.next() {
        let Some(flag) = a.to_str() else {
            return usage();
        };
        if flag == "--" {
            argv.extend(args.by_ref());
            break;
        }
        let Some(value) = args.next().and_then(|v| v.into_string().ok()) else {
            return usage();
        };
        let duration = || {
            parse_duration(&value).map_err(|e| {
                eprintln!("run_under_policy: {e}");
                ExitCode::from(2)
            })
        };
        match flag {
            "--name" => name = value.clone(),
            "--parent" => parent = Some(value.clone()),
            "--grace" => match duration() {
                Ok(d) => policy.grace = Some(d),
                Err(code) => return code,
            },
            "--timeout" => match duration() {
                Ok(d) => timeout = Some(d),
                Err(code) => return code,
            },
            _ => return usage(),
        }
    }
    if argv.is_empty() {
        return usage();
    }
    match run_task(name, parent, policy, timeout, argv) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("run_under_policy: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_task(
    name: String,
    parent: Option<String>,
    policy: PolicyFlags,
    timeout: Option<std::time::Duration>,
    argv: Vec<OsString>,
) -> gracekill::Result<u8> {
    // The library decides what `gracekill run` decides: the policy (the defaults with the flags
    // on top, validated), the name checked, the parent resolved as a task argument (a path
    // under the cgroup2 mount, one relative to it, or a name under gracekill's root).
    let plan = RunRequest {
        name: Some(name),
        parent,
        flags: policy,
        timeout,
        argv,
        ..RunRequest::default()
    }
    .plan()?;
    // `run` supervises in the foreground on a tokio runtime with signal handling: it waits for
    // the command, forwards SIGTERM/SIGINT/SIGHUP as a graceful stop of the whole cgroup, and
    // removes the cgroup at the end.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = rt.block_on(run(&plan.mount, &plan.spec, |event| {
        eprintln!("run_under_policy: {event}")
    }))?;
    println!(
        "{}",
        serde_json::to_string(&report).expect("a report serializes")
    );
    Ok(u8::try_from(report.exit_code).unwrap_or(1))
}
