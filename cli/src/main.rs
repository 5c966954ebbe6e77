//! The `gracekill` command: flags in, library calls, an exit code out.

mod manpage;
mod stderr;

/// `println!` that never panics: a reader that went away (`gracekill status | head -c0`) must
/// not turn a stop's or a run's exit code into a panic's, nor end `run` before it has stopped
/// its task. What could not be written is dropped.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// [`out!`] for a line a person reads: control characters in it (a cgroup name may hold an
/// escape) are written escaped, as by `say!`. Not for JSON, which escapes its own.
macro_rules! show {
    ($($arg:tt)*) => {{
        let line = gracekill::report::printable(&format!("{}", format_args!($($arg)*)));
        out!("{line}");
    }};
}

/// `eprintln!` that never panics (see [`out!`]) nor blocks (see [`stderr`]): `run`'s status
/// lines go to a stderr that may be a closed pipe (a supervisor's log that went away), or one
/// its task keeps full, just before it stops its task. One line each: control characters in
/// what it says (a cgroup name, a path given on the command line) are written escaped, so that
/// no name can split an error in two or send a terminal escape.
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = gracekill::report::printable(&format!("{}", format_args!($($arg)*)));
        $crate::stderr::global().send(format!("{line}\n").as_bytes());
    }};
}

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use gracekill::policy::{KillMode, Policy, PolicyFlags, Signal, Step, parse_duration};
use gracekill::runplan::RunRequest;
use gracekill::stop::{Progress, StopOptions};
use gracekill::supervise::run;
use gracekill::{Error, ErrorKind, Mount, Outcome};

const EXIT_CODES: &str = "\
EXIT CODES (stop):
  0  the cgroup emptied within the grace period (or was already empty)
  1  an error (permission denied, I/O); see the message
  2  bad usage or input, or a refused target; nothing was signalled
  3  the final kill was needed; the cgroup is now empty
  4  processes survived the final kill (reported with pid, state and wchan)
  5  kill-mode=process: the main process is gone; the others were left running, as asked";

/// Stop a task gracefully: its stop signal, its whole grace period, then SIGKILL for what is left.
#[derive(Parser, Debug)]
#[command(
    name = "gracekill",
    version,
    propagate_version = true,
    about,
    after_help = EXIT_CODES
)]
struct Cli {
    /// More logging on stderr (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    /// Print nothing on success: no summary, no generated task name (errors, warnings and
    /// --json output still appear).
    #[arg(short, long, global = true)]
    quiet: bool,
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
    /// Run a command in its own new cgroup, in the foreground, with a stop policy it keeps
    /// (like `systemd-run --scope`, or `timeout(1)` that setsid cannot escape).
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Show a task: its processes, its policy, its cgroup.
    #[command(after_help = STATUS_HELP)]
    Status(StatusArgs),
    /// List the tasks under gracekill's root.
    #[command(after_help = LIST_HELP)]
    List(ListArgs),
    /// Print the shell code that completes gracekill's arguments, task names included (bash,
    /// zsh, fish, elvish, powershell): `source <(gracekill completions bash)`.
    #[command(after_help = COMPLETIONS_HELP)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
        /// The gracekill the shell code runs to complete: this binary's absolute path by
        /// default; packages give the installed path (`--completer /usr/bin/gracekill`).
        #[arg(long, value_name = "PATH")]
        completer: Option<std::path::PathBuf>,
    },
    /// Print a man page (roff) generated from these definitions, or write them all.
    #[command(name = "manpage")]
    Manpage {
        /// Write every page into DIR: gracekill.1 and one per subcommand (gracekill-stop.1,
        /// gracekill-run.1, ...).
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
        /// Print this subcommand's page (stop, run, status, list, ...) instead of gracekill(1).
        #[arg(value_name = "SUBCOMMAND", conflicts_with = "dir")]
        subcommand: Option<String>,
    },
}

const COMPLETIONS_HELP: &str = "\
The shell code asks gracekill itself while completing (GRACEKILL_COMPLETE=<shell> gracekill ...): task
names under gracekill's root for `stop` and `status`, signal names, kill modes. Regenerate it
after an upgrade; the simplest is to source it from the shell's startup file:

  bash:  echo 'source <(gracekill completions bash)' >> ~/.bashrc
  zsh:   echo 'source <(gracekill completions zsh)' >> ~/.zshrc
  fish:  gracekill completions fish > ~/.config/fish/completions/gracekill.fish";

const STATUS_HELP: &str = "\
TASK as for `gracekill stop`. Prints the task's state (running, empty, orphaned: running but
its `gracekill run` is gone, leftover: empty and its run is gone), its policy, main pid, age, the
`gracekill run` supervising it, and its processes (pid, state, comm).

JSON (--json): {name, cgroup, path, populated, state, process_count, main_pid, supervisor_pid,
policy: {steps: [{signal, grace_ms}], sighup, kill_timeout_ms, kill_mode} | null,
policy_summary, policy_error, age_s, processes: [{pid, comm, state}]}

EXIT CODES: 0 shown; 1 error; 2 bad input (a task that does not exist, a path outside the mount)

ENVIRONMENT:
  GRACEKILL_ROOT   root cgroup for bare task names (default /gracekill)

EXAMPLES:
  gracekill status web
  gracekill status --json /sys/fs/cgroup/jobs/web";

const LIST_HELP: &str = "\
Lists the cgroups directly under gracekill's root (or --parent): name, cgroup, state (running,
empty, orphaned, leftover; see `gracekill status --help`), process count, main pid, age and
policy.

JSON (--json): an array of the objects `gracekill status --json` prints, without `processes`.

EXIT CODES: 0 listed (an empty list when gracekill's root does not exist yet); 1 error;
2 bad input (a --parent that does not exist)

ENVIRONMENT:
  GRACEKILL_ROOT   the root listed without --parent (default /gracekill)

EXAMPLES:
  gracekill list
  gracekill list --json --parent /jobs";

const RUN_HELP: &str = "\
The task's cgroup is <parent>/<name> (parent: gracekill's root, /gracekill under the cgroup2
mount, or GRACEKILL_ROOT). `--` before CMD is optional: everything from the first non-option on
is CMD. CMD joins the cgroup before it executes its first instruction, runs in the foreground
with stdin, stdout, stderr and the environment inherited, and `run` exits with CMD's status
(128+N if signal N ended it).

SIGTERM, SIGINT or SIGHUP to `run` stop the task gracefully by its policy; a second one skips to
the final kill. At a terminal, CMD is the foreground job: Ctrl-C reaches CMD alone, once; Ctrl-Z
stops it and `run`, `fg` continues both. After --timeout the graceful stop starts: exit 124 if the task then ended within
its grace, 137 if the final kill was needed. If the main process exits and leaves processes
behind, they are stopped by the same policy. The policy is recorded on the cgroup (xattrs), so
`gracekill stop NAME` from anywhere applies it -- also if `run` itself was SIGKILLed, in which case
the task keeps running, as a systemd scope does.

-p takes systemd-run's spellings: KillSignal=, TimeoutStopSec=, KillMode=, SendSIGHUP=,
FinalKillSignal= (SIGKILL only), RuntimeMaxSec= (same as --timeout).

EXIT CODES: CMD's status; 124/137 after --timeout; 125 run's own failures (bad usage, a
name in use, other errors: never mistaken for CMD's 1 or 2); 126 CMD cannot be executed;
127 CMD not found.

JSON (--json, on stdout after the task ends): {name, cgroup, main: {pid, exit_code, signal},
exit_code, timed_out, stop_reason: null|signal|timeout|leftovers|external, stop: <the stop's
JSON, see `gracekill stop --help`>|null, stopped_by, removed}

ENVIRONMENT:
  GRACEKILL_ROOT   parent cgroup for tasks without --parent (default /gracekill)
  RUST_LOG         log filter (-v, -vv are shortcuts); NO_COLOR: no colours in the logs

EXAMPLES:
  gracekill run --name web --grace 30s ./server --port 8080
  gracekill run --timeout 10m -p KillSignal=SIGINT make test
  gracekill stop web        (from anywhere else: applies the recorded policy)";

const STOP_HELP: &str = "\
TASK is a cgroup: a path under the cgroup2 mount (/sys/fs/cgroup/jobs/web), a path relative to
the mount root (/jobs/web), or a bare name under gracekill's root (the 'gracekill' cgroup at the
top of the mount; GRACEKILL_ROOT overrides it).

Without policy flags, the task's own policy applies: the one `gracekill run` recorded, if this
caller may trust the record (root reads only trusted.gracekill.* xattrs, which no task can forge;
a user reads user.gracekill.* of cgroups it owns), else the defaults. Any policy flag replaces the
stored policy as a whole.

SIGTERM, SIGINT or SIGHUP to `gracekill stop` during the grace cut it short: the final kill goes
out at once and the outcome is reported as usual (timeout(1) or a service manager's stop timeout
end the stop, not the stopper).

JSON (--json): {cgroup, outcome: empty|graceful|killed|survivors|remaining, elapsed_ms,
empty_at_ms, thawed, steps: [{signal, at_ms, signalled, via?}], killed: [{pid, comm, cmdline}],
killed_total, exits: [{pid, comm, at_ms, code, signal, core_dumped?}] (how and when each
signalled process exited; code/signal null before Linux 6.15 or if not yet reaped), survivors: [{pid, comm, state, wchan, memory_released, mrelease_error?, threads?, tracer?}],
survivors_total, policy, policy_source: given|stored|default, warnings: [..],
errors: {count, examples}, membership_proof, cgroup_removed}

EXIT CODES:
  0 graceful or already empty, 1 error, 2 bad input or refused (nothing signalled),
  3 the final kill was needed, 4 processes survived the final kill,
  5 kill-mode=process left the other processes running

ENVIRONMENT:
  GRACEKILL_ROOT                   root cgroup for bare task names (default /gracekill)
  GRACEKILL_FORCE_FALLBACK=1       never use cgroup.kill: freeze, SIGKILL each pid, thaw
  GRACEKILL_FORCE_PROC_MEMBERSHIP=1  prove membership via /proc/<pid>/cgroup, not PIDFD_GET_INFO
  RUST_LOG                         log filter (-v, -vv are shortcuts)
  NO_COLOR                         no colours in the logs (only a terminal gets them anyway)

EXAMPLES:
  gracekill stop web                          the policy `gracekill run` recorded, or defaults
  gracekill stop --grace 1m --json /jobs/web  SIGTERM, 1 minute, then SIGKILL; JSON outcome
  gracekill stop --signal INT --grace 10s --then TERM:20s --kill-timeout 5s web";

#[derive(Args, Debug)]
struct PolicyArgs {
    /// The stop signal: TERM, SIGINT, 15, RTMIN+3.
    #[arg(short, long, value_name = "SIG", value_parser = parse_signal,
          add = ArgValueCandidates::new(signal_names))]
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
    /// Who gets the stop signals: control-group (every process, default), mixed (the main
    /// process; the final kill takes all), process (main process only; not recommended).
    #[arg(long, value_name = "MODE", value_parser = parse_kill_mode,
          add = ArgValueCandidates::new(kill_modes))]
    kill_mode: Option<KillMode>,
}

#[derive(Args, Debug)]
struct StopArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Print one JSON object describing what happened on stdout.
    #[arg(long)]
    json: bool,
    /// The task: a cgroup path or a task name.
    #[arg(value_name = "TASK", add = ArgValueCandidates::new(task_names))]
    task: String,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The task name (letters, digits, -_.@:); generated and printed on stderr when absent.
    #[arg(short = 'n', long)]
    name: Option<String>,
    /// The parent cgroup for the task (a path under the mount, mount-relative, or a name under
    /// gracekill's root). Created if missing.
    #[arg(long, value_name = "CGROUP")]
    parent: Option<String>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Start the graceful stop after DUR, in real time (exit 124, or 137 if the final kill was
    /// needed). At a terminal, a job with a timeout cannot be suspended.
    #[arg(long, value_name = "DUR", value_parser = parse_dur)]
    timeout: Option<Duration>,
    /// A systemd-run property: KillSignal=, TimeoutStopSec=, KillMode=, SendSIGHUP=,
    /// FinalKillSignal=, RuntimeMaxSec=. Repeatable; flags given explicitly win.
    #[arg(short = 'p', long = "property", value_name = "NAME=VALUE")]
    properties: Vec<String>,
    /// Keep the task's cgroup when the task ends.
    #[arg(long)]
    keep: bool,
    /// After the task ends, print a JSON report on stdout.
    #[arg(long)]
    json: bool,
    /// The command and its arguments. Options of `run` go before it; `--` is optional, as for
    /// timeout(1) and systemd-run: everything from the first non-option on is CMD. An unknown
    /// option before CMD is an error (exit 125), never taken for the command; a CMD that starts
    /// with `-` goes after `--`.
    #[arg(
        trailing_var_arg = true,
        required = true,
        num_args = 1..,
        value_name = "CMD"
    )]
    command: Vec<std::ffi::OsString>,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The task: a name under gracekill's root, or a cgroup path.
    #[arg(value_name = "TASK", add = ArgValueCandidates::new(task_names))]
    task: String,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// List the tasks under this cgroup instead of gracekill's root.
    #[arg(long, value_name = "CGROUP")]
    parent: Option<String>,
}

/// Completion candidates: the tasks under gracekill's root (nothing if it cannot be read). A
/// name with a control character is left out: it cannot be typed, and a shell that lists the
/// candidates prints them raw (an escape sequence would reach the terminal).
fn task_names() -> Vec<CompletionCandidate> {
    Mount::discover()
        .and_then(|mount| gracekill::inspect::names(&mount))
        .unwrap_or_default()
        .into_iter()
        .filter(|name| !name.chars().any(char::is_control))
        .map(CompletionCandidate::new)
        .collect()
}

fn signal_names() -> Vec<CompletionCandidate> {
    gracekill::policy::offered_stop_signals()
        .map(|(name, n)| CompletionCandidate::new(name).help(Some(format!("signal {n}").into())))
        .collect()
}

fn kill_modes() -> Vec<CompletionCandidate> {
    KillMode::ALL
        .iter()
        .map(|m| CompletionCandidate::new(m.to_string()))
        .collect()
}

fn parse_kill_mode(s: &str) -> Result<KillMode, String> {
    s.parse().map_err(|e: Error| e.to_string())
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

impl From<PolicyArgs> for PolicyFlags {
    fn from(a: PolicyArgs) -> PolicyFlags {
        PolicyFlags {
            signal: a.signal,
            grace: a.grace,
            then: a.then,
            sighup: a.sighup,
            kill_timeout: a.kill_timeout,
            kill_mode: a.kill_mode,
        }
    }
}

/// An exit code as the process's status byte (codes outside 0-255 become 255; none is).
fn exit_status(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(u8::MAX)
}

/// The environment variable through which the shell asks gracekill for completions.
const COMPLETE_VAR: &str = "GRACEKILL_COMPLETE";

fn main() -> ExitCode {
    let code = main_inner();
    stderr::global().finish();
    code
}

fn main_inner() -> ExitCode {
    // `GRACEKILL_COMPLETE=<shell> gracekill ...`: the shell asking for completions; answers and
    // exits. A name of our own: clap's default, COMPLETE, exported for another program, would
    // turn every gracekill call (a stop among them) into a completion request that does nothing.
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(COMPLETE_VAR)
        .complete();
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
            // One line: clap's first paragraph, joined, without its "error: " prefix, and its
            // hints ("tip: a similar argument exists: '--grace'"), which are what helps.
            let text = e.to_string();
            let para: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let mut line = para.join(" ");
            for tip in text
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("tip:"))
            {
                line.push_str("; ");
                line.push_str(tip.strip_prefix("tip: ").unwrap_or(tip));
            }
            say!(
                "gracekill: {}",
                line.strip_prefix("error: ").unwrap_or(&line)
            );
            return ExitCode::from(if invoked_run() { RUN_OWN_ERROR } else { 2 });
        }
    };
    init_logging(cli.verbose, cli.log_format);
    let quiet = cli.quiet;
    let is_run = matches!(cli.command, Command::Run(_));
    let code = match cli.command {
        Command::Stop(args) => cmd_stop(args, quiet),
        Command::Run(args) => cmd_run(args, quiet),
        Command::Status(args) => cmd_status(args),
        Command::List(args) => cmd_list(args),
        Command::Completions { shell, completer } => completions(shell, completer),
        Command::Manpage { dir, subcommand } => manpage(dir, subcommand),
    };
    match code {
        Ok(code) => ExitCode::from(code),
        // A reader that went away (`gracekill manpage | head`): nothing left to say.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("gracekill: {e:#}");
            let code = exit_code_for(&e);
            // `run` passes CMD's status through: its own failures must not look like CMD's 1
            // or 2. timeout(1)'s convention: 125 for its own errors, 126/127 for CMD's exec.
            ExitCode::from(if is_run && code < 126 {
                RUN_OWN_ERROR
            } else {
                code
            })
        }
    }
}

/// The exit status of `run` for its own failures (bad usage, a name in use, no cgroup2...).
const RUN_OWN_ERROR: u8 = 125;

/// Was `run` the subcommand (for usage errors, found before clap could say)? The first
/// argument that is not an option names it; the global options take no values but
/// `--log-format`.
fn invoked_run() -> bool {
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let a = a.to_string_lossy();
        if a == "--log-format" {
            args.next();
        } else if !a.starts_with('-') {
            return a == "run";
        }
    }
    false
}

/// The registration code for `shell`, calling back into `completer`, by default this binary (by
/// its absolute path, so the completions match the gracekill that wrote them).
fn completions(
    shell: clap_complete::Shell,
    completer: Option<std::path::PathBuf>,
) -> anyhow::Result<u8> {
    use clap_complete::env::EnvCompleter;
    let exe = match completer {
        Some(path) if path.is_absolute() => path,
        Some(path) => anyhow::bail!(
            "--completer must be an absolute path (the shell runs it from any directory): {}",
            path.display()
        ),
        None => std::env::current_exe()?,
    };
    let exe = exe.to_string_lossy();
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &clap_complete::env::Bash,
        clap_complete::Shell::Zsh => &clap_complete::env::Zsh,
        clap_complete::Shell::Fish => &clap_complete::env::Fish,
        clap_complete::Shell::Elvish => &clap_complete::env::Elvish,
        clap_complete::Shell::PowerShell => &clap_complete::env::Powershell,
        other => anyhow::bail!("no completions for {other}"),
    };
    let mut out = std::io::stdout();
    completer.write_registration(COMPLETE_VAR, "gracekill", "gracekill", &exe, &mut out)?;
    if shell == clap_complete::Shell::Zsh {
        // Installed as `_gracekill` in $fpath, the file is autoloaded as the body of the
        // function `_gracekill` on the first Tab; that body only defines the completer and
        // registers it, so it must also complete this first time. Sourced, it does nothing.
        writeln!(
            out,
            "if [[ ${{funcstack[1]}} == _gracekill ]]; then _clap_dynamic_completer_gracekill \"$@\"; fi"
        )?;
    }
    Ok(0)
}

/// gracekill(1), one subcommand's page, or all of them written into `dir`.
fn manpage(dir: Option<std::path::PathBuf>, sub: Option<String>) -> anyhow::Result<u8> {
    let pages = manpage::pages(Cli::command())?;
    if let Some(dir) = dir {
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        for (file, roff) in &pages {
            let path = dir.join(file);
            std::fs::write(&path, roff)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        }
        return Ok(0);
    }
    let file = match sub {
        Some(name) => format!("gracekill-{name}.1"),
        None => "gracekill.1".to_owned(),
    };
    let (_, roff) = pages
        .iter()
        .find(|(f, _)| *f == file)
        .ok_or_else(|| Error::Input(format!("no page for '{file}' (see gracekill --help)")))?;
    std::io::stdout().write_all(roff)?;
    Ok(0)
}

fn exit_code_for(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<Error>() {
        Some(Error::Spawn { errno, .. }) if *errno == rustix::io::Errno::NOENT => 127,
        Some(Error::Spawn { .. }) => 126,
        Some(e) => match e.kind() {
            ErrorKind::InvalidInput | ErrorKind::NotFound | ErrorKind::Busy => 2,
            _ => 1,
        },
        None => 1,
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
    // Colours only for a terminal, and never with NO_COLOR: logs redirected to a file stay text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| stderr::Events);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    gracekill::stop::runtime_descriptors().context("create tokio runtime")?;
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn cmd_stop(args: StopArgs, quiet: bool) -> anyhow::Result<u8> {
    let given = PolicyFlags::from(args.policy).given();
    let mut opts = StopOptions::default();
    let live = (!args.json && !quiet && std::io::stderr().is_terminal()).then(LiveLine::new);
    if let Some(l) = &live {
        opts.progress = Some(l.callback());
    }
    let cut = Arc::new(tokio::sync::Notify::new());
    opts.escalate = Some(cut.clone());
    // Without epoll watches to spare, a runtime without its I/O driver: the stop still runs.
    let rt = anyhow::Context::context(gracekill::StopRuntime::new(), "create tokio runtime")?;
    stderr::global().arm();
    let outcome = rt.block_on(async {
        // Before anything is signalled: SIGINT, SIGTERM or SIGHUP (Ctrl-C, timeout(1), a
        // service manager's stop timeout) cut the grace short; the final kill goes out and the
        // outcome is reported, instead of the stopper dying with its task signalled and unkilled.
        // Without tokio's I/O driver (an attack on the epoll watches) they are looked for every
        // 10 ms.
        let interrupts = match gracekill::interrupts::Interrupts::listen() {
            Ok(mut i) => Some(tokio::spawn(async move {
                let name = i.next().await;
                if !quiet {
                    say!("gracekill: {name}: cutting the grace short, final kill now");
                }
                cut.notify_one();
            })),
            Err(e) => {
                tracing::warn!(error = %e, "no signal handlers: a signal ends the stopper");
                None
            }
        };
        let ticker = live.as_ref().map(|l| tokio::spawn(l.clone().tick()));
        let r = gracekill::stop_named(&args.task, given, &opts).await;
        for t in [ticker, interrupts].into_iter().flatten() {
            t.abort();
        }
        r
    });
    if let Some(l) = &live {
        l.clear();
    }
    // The stop is over: what is left to say may block, as any program's output does.
    stderr::global().finish();
    let outcome = outcome?;
    print_outcome(&outcome, args.json, quiet);
    Ok(exit_status(outcome.outcome.exit_code()))
}

fn cmd_run(args: RunArgs, quiet: bool) -> anyhow::Result<u8> {
    let plan = RunRequest {
        name: args.name,
        parent: args.parent,
        properties: args.properties,
        flags: args.policy.into(),
        timeout: args.timeout,
        keep: args.keep,
        argv: args.command,
    }
    .plan()?;
    if plan.name_generated && !quiet {
        say!(
            "gracekill: task name {} (cgroup {})",
            plan.spec.name,
            plan.cgroup()
        );
    }
    let rt = runtime()?;
    stderr::global().arm();
    let report = rt.block_on(run(&plan.mount, &plan.spec, |msg| {
        if !quiet {
            say!("gracekill: {msg}");
        }
    }));
    stderr::global().finish();
    let report = report?;
    if let Some(o) = &report.stop
        && (!quiet || o.outcome == gracekill::Verdict::Survivors)
    {
        say!("gracekill: {}", o.summary());
    }
    if args.json {
        out!("{}", serde_json::to_string(&report)?);
    }
    Ok(exit_status(report.exit_code))
}

fn cmd_status(args: StatusArgs) -> anyhow::Result<u8> {
    let cg = gracekill::task::open(&Mount::discover()?, &args.task)?;
    let v = gracekill::inspect::inspect(&cg, true)?;
    if args.json {
        out!("{}", serde_json::to_string(&v)?);
        return Ok(0);
    }
    show!("task:     {}", v.name);
    show!("cgroup:   {} ({})", v.cgroup, v.path);
    show!("state:    {}", v.state_text());
    match (&v.policy_summary, &v.policy_error) {
        (Some(p), _) => show!("policy:   {p}"),
        (None, Some(e)) => show!("policy:   INVALID: {e}"),
        (None, None) => show!(
            "policy:   (none recorded; default {})",
            Policy::default().summary()
        ),
    }
    if let Some(pid) = v.main_pid {
        show!("main pid: {pid}");
    }
    if let Some(age) = v.age_s {
        show!(
            "age:      {}",
            gracekill::policy::format_duration(Duration::from_secs(age))
        );
    }
    show!("processes ({}):", v.process_count);
    for p in v.processes.unwrap_or_default() {
        show!("  {:>7} {} {}", p.pid, p.state, p.comm);
    }
    Ok(0)
}

fn cmd_list(args: ListArgs) -> anyhow::Result<u8> {
    let tasks = gracekill::inspect::list(&Mount::discover()?, args.parent.as_deref())?;
    if args.json {
        out!("{}", serde_json::to_string(&tasks)?);
        return Ok(0);
    }
    show!(
        "{:<20} {:<28} {:<9} {:>5} {:>8} {:>8}  POLICY",
        "NAME",
        "CGROUP",
        "STATE",
        "PROCS",
        "MAIN",
        "AGE"
    );
    for t in tasks {
        let age = t
            .age_s
            .map(|a| gracekill::policy::format_duration(Duration::from_secs(a)))
            .unwrap_or_else(|| "-".into());
        show!(
            "{:<20} {:<28} {:<9} {:>5} {:>8} {:>8}  {}",
            t.name,
            t.cgroup,
            t.state.as_str(),
            t.process_count,
            t.main_pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            age,
            t.policy_summary
                .or(t.policy_error.map(|e| format!("INVALID: {e}")))
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(0)
}

fn print_outcome(o: &Outcome, json: bool, quiet: bool) {
    if json {
        out!("{}", o.to_json());
    } else if !quiet || o.outcome == gracekill::Verdict::Survivors {
        // Survivors are said even with --quiet: processes outlived SIGKILL.
        show!("gracekill: {}", o.summary());
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
            // The task's names (comm, which it sets at will): escaped, as everywhere a person
            // reads them.
            format!(
                " ({}{})",
                gracekill::report::printable(&p.names.join(", ")),
                if p.remaining > p.names.len() {
                    ", ..."
                } else {
                    ""
                }
            )
        };
        stderr::global().redraw(
            format!(
                "\r\x1b[K{}: {} remaining{names}, {:.1}s left",
                p.phase,
                p.remaining,
                left.as_secs_f64()
            )
            .as_bytes(),
        );
    }

    fn clear(&self) {
        if self.last.lock().unwrap().is_some() {
            stderr::global().send(b"\r\x1b[K");
        }
    }
}
