//! Stop many cgroups concurrently on one thread: each stop waits on events (`cgroup.events`,
//! pidfds, a deadline), so a single current-thread tokio runtime can drive hundreds at once.
//!
//! ```sh
//! cargo build --examples
//! sudo target/debug/examples/stop_many --grace 10s /jobs/a /jobs/b /jobs/c
//! ```
//! Prints one JSON outcome per cgroup (in the order given) and exits with the worst exit code
//! (0 all graceful, 3 some needed the final kill, 4 survivors, 1 an error).

use std::process::ExitCode;
use std::rc::Rc;

use gracekill::policy::parse_duration;
use gracekill::{Mount, Policy, StopOptions};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut policy = Policy::default();
    if args.first().map(String::as_str) == Some("--grace") && args.len() >= 2 {
        match parse_duration(&args[1]) {
            Ok(g) => policy.steps[0].grace = g,
            Err(e) => {
                eprintln!("stop_many: {e}");
                return ExitCode::from(2);
            }
        }
        args.drain(..2);
    }
    if args.is_empty() {
        eprintln!("usage: stop_many [--grace DUR] TASK...");
        return ExitCode::from(2);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let codes = tokio::task::LocalSet::new().block_on(&rt, stop_all(args, policy));
    ExitCode::from(codes.into_iter().max().unwrap_or(0))
}

async fn stop_all(tasks: Vec<String>, policy: Policy) -> Vec<u8> {
    let mount = match Mount::discover() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("stop_many: {e}");
            return vec![1];
        }
    };
    let policy = Rc::new(policy);
    // Open every cgroup first, then start every stop: each is a task on this thread's runtime.
    let mut running = Vec::new();
    for task in tasks {
        let cg = gracekill::task::open(&mount, &task);
        let policy = policy.clone();
        running.push(tokio::task::spawn_local(async move {
            let cg = cg?;
            gracekill::stop(&cg, &policy, &StopOptions::default()).await
        }));
    }
    let mut codes = Vec::new();
    for handle in running {
        match handle.await.expect("stop task panicked") {
            Ok(outcome) => {
                println!("{}", outcome.to_json());
                codes.push(
                    u8::try_from(outcome.outcome.exit_code()).expect("exit codes are 0 to 5"),
                );
            }
            Err(e) => {
                eprintln!("stop_many: {e}");
                codes.push(1);
            }
        }
    }
    codes
}
