//! The `gracekill` command: flags in, library calls, an exit code out.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use gracekill::policy::{Policy, Signal, Step, parse_duration};
use gracekill::stop::{KillMethod, Progress, StopOptions};
use gracekill::{Error, ErrorKind, Mount, Outcome};

const EXIT_CODES: &str = "\
EXIT CODES (stop):
  0  the cgroup emptied within the grace period (or was already empty)
  1  an error (permission denied, I/O); see the message
  2  bad usage or input, or a refused target; nothing was signalled
  3  the final kill was needed; the cgroup is now empty
  4  processes survived the final kill (reported with pid, state and wchan)";

/// Stop a task gracefully: its stop signal, its whole grace period, then SIGKILL for what is left.
#[derive(Parser, Debug)]
#[command(name = "gracekill", version, about, after_help = EXIT_CODES)]
struct Cli {
    /// More logging on stderr (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Stop the task in a cgroup: signal every process, wait for the cgroup to empty, then kill
    /// what is left.
    #[command(after_help = STOP_HELP)]
    Stop(StopArgs),
}

const STOP_HELP: &str = "\
TASK is a cgroup: a path under the cgroup2 mount (/sys/fs/cgroup/jobs/web), a path relative to
the mount root (/jobs/web), or a bare name under gracekill's root (the 'gracekill' cgroup at the
top of the mount; GRACEKILL_ROOT overrides it).

JSON (--json): {cgroup, outcome: empty|graceful|killed|survivors, elapsed_ms, empty_at_ms,
thawed, steps: [{signal, at_ms, signalled, via?}], killed: [{pid, comm, cmdline}],
survivors: [{pid, comm, state, wchan, memory_released, mrelease_error?}], membership_proof}

EXIT CODES:
  0 graceful or already empty, 1 error, 2 bad input or refused (nothing signalled),
  3 the final kill was needed, 4 processes survived the final kill

ENVIRONMENT:
  GRACEKILL_ROOT                   root cgroup for bare task names (default /gracekill)
  GRACEKILL_FORCE_FALLBACK=1       never use cgroup.kill: freeze, SIGKILL each pid, thaw
  GRACEKILL_FORCE_PROC_MEMBERSHIP=1  prove membership via /proc/<pid>/cgroup, not PIDFD_GET_INFO";

#[derive(Args, Debug)]
struct PolicyArgs {
    /// The stop signal: TERM, SIGINT, 15, RTMIN+3.
    #[arg(short, long, value_name = "SIG", value_parser = parse_signal)]
    signal: Option<Signal>,
    /// How long the task may take to exit after the stop signal: 30s, 1m30s, 250ms.
    #[arg(short, long, value_name = "DUR", value_parser = parse_dur)]
    grace: Option<Duration>,
    /// A further step if the task is still running: send SIG, wait up to DUR. Repeatable.
    #[arg(long = "then", value_name = "SIG:DUR", value_parser = parse_step)]
    then: Vec<Step>,
    /// Also send SIGHUP right after each signal (systemd's SendSIGHUP=).
    #[arg(long)]
    sighup: bool,
    /// How long to wait for the cgroup to empty after the final SIGKILL.
    #[arg(long, value_name = "DUR", value_parser = parse_dur)]
    kill_timeout: Option<Duration>,
}

#[derive(Args, Debug)]
struct StopArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Print one JSON object describing what happened on stdout.
    #[arg(long)]
    json: bool,
    /// Use the pre-5.14 final kill (freeze, SIGKILL each process, thaw) even where cgroup.kill
    /// exists. Same as GRACEKILL_FORCE_FALLBACK=1.
    #[arg(long, hide = true)]
    force_fallback: bool,
    /// The task: a cgroup path or a task name.
    #[arg(value_name = "TASK")]
    task: String,
}

fn parse_signal(s: &str) -> Result<Signal, String> {
    s.parse().map_err(|e: Error| e.to_string())
}
fn parse_dur(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}
fn parse_step(s: &str) -> Result<Step, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

impl PolicyArgs {
    /// Applies the flags given on top of `base`.
    fn apply(&self, mut base: Policy) -> Policy {
        if let Some(sig) = self.signal {
            base.steps[0].signal = sig;
        }
        if let Some(g) = self.grace {
            base.steps[0].grace = g;
        }
        if !self.then.is_empty() {
            base.steps.truncate(1);
            base.steps.extend(self.then.iter().copied());
        }
        if self.sighup {
            base.sighup = true;
        }
        if let Some(k) = self.kill_timeout {
            base.kill_timeout = k;
        }
        base
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind as K;
            if matches!(
                e.kind(),
                K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line without its "error: " prefix.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid usage");
            eprintln!(
                "gracekill: {}",
                first.strip_prefix("error: ").unwrap_or(first)
            );
            return ExitCode::from(2);
        }
    };
    init_logging(cli.verbose, cli.log_format);
    let code = match cli.command {
        Command::Stop(args) => cmd_stop(args),
    };
    match code {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("gracekill: {e:#}");
            ExitCode::from(exit_code_for(&e))
        }
    }
}

fn exit_code_for(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<Error>().map(Error::kind) {
        Some(ErrorKind::InvalidInput | ErrorKind::NotFound) => 2,
        _ => 1,
    }
}

fn init_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "gracekill=debug,warn",
        _ => "gracekill=trace,debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

fn cmd_stop(args: StopArgs) -> anyhow::Result<u8> {
    let policy = args.policy.apply(Policy::default());
    policy.validate()?;
    let mount = Mount::discover()?;
    let root = gracekill::task::default_root(&mount)?;
    let rel = gracekill::task::resolve(&mount, &args.task, &root)?;
    let cg = mount.open_cgroup(&rel)?;
    let mut opts = StopOptions {
        kill_method: if args.force_fallback || env_flag("GRACEKILL_FORCE_FALLBACK") {
            KillMethod::Fallback
        } else {
            KillMethod::Auto
        },
        ..StopOptions::default()
    };
    let live = (!args.json && std::io::stderr().is_terminal()).then(LiveLine::new);
    if let Some(l) = &live {
        opts.progress = Some(l.callback());
    }
    let rt = runtime()?;
    let outcome = rt.block_on(async {
        let ticker = live.as_ref().map(|l| tokio::spawn(l.clone().tick()));
        let r = gracekill::stop(&cg, &policy, &opts).await;
        if let Some(t) = ticker {
            t.abort();
        }
        r
    });
    if let Some(l) = &live {
        l.clear();
    }
    let outcome = outcome?;
    print_outcome(&outcome, args.json);
    Ok(outcome.outcome.exit_code() as u8)
}

fn print_outcome(o: &Outcome, json: bool) {
    if json {
        println!("{}", o.to_json());
    } else {
        println!("gracekill: {}", o.summary());
    }
}

/// The live status line on a terminal: remaining processes and time left in the step.
#[derive(Clone)]
struct LiveLine {
    last: Arc<Mutex<Option<Progress>>>,
}

impl LiveLine {
    fn new() -> LiveLine {
        LiveLine {
            last: Arc::new(Mutex::new(None)),
        }
    }

    fn callback(&self) -> gracekill::stop::ProgressFn {
        let last = self.last.clone();
        Arc::new(move |p: &Progress| {
            *last.lock().unwrap() = Some(p.clone());
        })
    }

    /// Redraws the line a few times a second so the countdown moves. This is display refresh
    /// only; the engine itself waits on events.
    async fn tick(self) {
        loop {
            self.draw();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn draw(&self) {
        let Some(p) = self.last.lock().unwrap().clone() else {
            return;
        };
        let left = p
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let names = if p.names.is_empty() {
            String::new()
        } else {
            format!(
                " ({}{})",
                p.names.join(", "),
                if p.remaining > p.names.len() {
                    ", ..."
                } else {
                    ""
                }
            )
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K{}: {} remaining{names}, {:.1}s left",
            p.phase,
            p.remaining,
            left.as_secs_f64()
        );
        let _ = err.flush();
    }

    fn clear(&self) {
        if self.last.lock().unwrap().is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}
