//! What a stop does, as pure data: the signal ladder, the final kill, and how each is spelled.
//!
//! No I/O here. Parsers are strict and bounded because their input comes from command lines,
//! systemd-style properties and xattrs that a delegated (unprivileged) user can write.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// The lowest realtime signal a process may be sent: glibc's `SIGRTMIN` (it keeps 32 and 33 for
/// itself). Fixed for every build, not taken from the C library gracekill is linked with (musl's
/// is 35): a stored policy's `RTMIN+N` must name the same number whichever build reads it.
pub const SIGRTMIN: i32 = 34;
/// The highest realtime signal on Linux.
pub const SIGRTMAX: i32 = 64;

/// The longest grace or timeout accepted: 30 days. Longer values are refused, never capped.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// At most this many `--then` steps; a longer ladder is almost certainly a mistake.
pub const MAX_STEPS: usize = 16;

/// The signal names accepted (without `SIG`), with their numbers: for completions and help.
pub const NAMED: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

const ALIASES: &[(&str, i32)] = &[("IOT", 6), ("POLL", 29), ("CLD", 17)];

/// A signal that may be sent to a task: 1 to 31, or a realtime signal 34 to 64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// SIGHUP.
    pub const HUP: Signal = Signal(1);
    /// SIGINT.
    pub const INT: Signal = Signal(2);
    /// SIGKILL.
    pub const KILL: Signal = Signal(9);
    /// SIGTERM.
    pub const TERM: Signal = Signal(15);
    /// SIGCONT.
    pub const CONT: Signal = Signal(18);

    /// A signal from its number.
    ///
    /// # Errors
    /// [`Error::Input`] for 0, 32, 33 (reserved by the C library) and anything above 64.
    pub fn from_raw(n: i32) -> Result<Signal> {
        if (1..=31).contains(&n) || (SIGRTMIN..=SIGRTMAX).contains(&n) {
            Ok(Signal(n))
        } else {
            Err(Error::Input(format!(
                "invalid signal number {n}: expected 1-31 or {SIGRTMIN}-{SIGRTMAX}"
            )))
        }
    }

    /// The signal number.
    pub fn as_raw(self) -> i32 {
        self.0
    }
}

impl fmt::Display for Signal {
    /// `SIGTERM`, `SIGRTMIN+3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((name, _)) = NAMED.iter().find(|(_, n)| *n == self.0) {
            write!(f, "SIG{name}")
        } else if self.0 == SIGRTMIN {
            f.write_str("SIGRTMIN")
        } else {
            write!(f, "SIGRTMIN+{}", self.0 - SIGRTMIN)
        }
    }
}

impl FromStr for Signal {
    type Err = Error;

    /// Accepts `TERM`, `SIGTERM`, `sigterm`, `15`, `RTMIN`, `RTMIN+3`, `SIGRTMAX-2`.
    fn from_str(s: &str) -> Result<Signal> {
        let bad = |why: &str| Error::Input(format!("invalid signal '{}': {why}", s.escape_debug()));
        let t = s.trim();
        if t.is_empty() {
            return Err(bad("empty"));
        }
        if t.bytes().all(|b| b.is_ascii_digit()) {
            let n: i32 = t.parse().map_err(|_| bad("number out of range"))?;
            return Signal::from_raw(n).map_err(|e| bad(&e.to_string()));
        }
        let upper = t.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        if let Some(&(_, n)) = NAMED.iter().chain(ALIASES).find(|(k, _)| *k == name) {
            return Ok(Signal(n));
        }
        let rt = |base: i32, rest: &str, sign: i32| -> Result<Signal> {
            let off: i32 = if rest.is_empty() {
                0
            } else {
                let digits = rest
                    .strip_prefix(if sign > 0 { '+' } else { '-' })
                    .ok_or_else(|| bad("expected RTMIN+N or RTMAX-N"))?;
                if digits.is_empty()
                    || digits.len() > 2
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(bad("expected RTMIN+N or RTMAX-N"));
                }
                digits.parse().map_err(|_| bad("offset out of range"))?
            };
            let n = base + sign * off;
            if (SIGRTMIN..=SIGRTMAX).contains(&n) {
                Ok(Signal(n))
            } else {
                Err(bad("realtime signal out of range"))
            }
        };
        if let Some(rest) = name.strip_prefix("RTMIN") {
            return rt(SIGRTMIN, rest, 1);
        }
        if let Some(rest) = name.strip_prefix("RTMAX") {
            return rt(SIGRTMAX, rest, -1);
        }
        Err(bad("unknown signal name"))
    }
}

/// Parses a duration: humantime (`250ms`, `1m30s`, `2h`) or a bare number of seconds (`30`,
/// as `timeout(1)` and systemd's `TimeoutStopSec=` take it). Bounded by [`MAX_DURATION`].
///
/// # Errors
/// [`Error::Input`] naming the text when it is empty, malformed or too long.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = |why: String| Error::Input(format!("invalid duration '{}': {why}", s.escape_debug()));
    let t = s.trim();
    if t.is_empty() {
        return Err(bad("empty".into()));
    }
    if t.len() > 64 {
        return Err(bad("too long".into()));
    }
    if ["infinity", "inf"].contains(&t.to_ascii_lowercase().as_str()) {
        return Err(bad(
            "'infinity' is not supported: a stop must end; give at most 30 days".into(),
        ));
    }
    let d = if t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = t.parse().map_err(|_| bad("number out of range".into()))?;
        Duration::from_secs(secs)
    } else if let Some(d) = parse_decimal(t) {
        d.map_err(bad)?
    } else {
        humantime::parse_duration(t).map_err(|e| bad(e.to_string().to_lowercase()))?
    };
    if d > MAX_DURATION {
        return Err(bad("longer than the maximum of 30 days".into()));
    }
    // Timers and the stored policy count whole milliseconds: refuse finer values rather than
    // silently round them (`run` would record a different policy than the one given).
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(bad("finer than a millisecond".into()));
    }
    Ok(d)
}

/// A decimal number of a unit, as systemd and `timeout(1)` take them: `1.5` (seconds), `0.25s`,
/// `1.5m`, `2.5h`, `1.5ms`. `None` if `t` has no decimal point or another unit (humantime's
/// forms then apply). Computed exactly in nanoseconds, never through floating point.
fn parse_decimal(t: &str) -> Option<std::result::Result<Duration, String>> {
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let (int, frac) = num.split_once('.')?;
    let unit_ns: u128 = match unit.trim_start() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
        "ms" | "msec" | "msecs" => 1_000_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000_000,
        "h" | "hr" | "hour" | "hours" => 3_600_000_000_000,
        _ => return None,
    };
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') || int.len() > 12 {
        return Some(Err("expected a number like 1.5 or 0.25s".into()));
    }
    if frac.len() > 9 {
        return Some(Err("finer than a millisecond".into()));
    }
    let whole: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let part: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let ns = whole * unit_ns + part * unit_ns / scale;
    if !(part * unit_ns).is_multiple_of(scale) {
        return Some(Err("finer than a millisecond".into()));
    }
    let secs = u64::try_from(ns / 1_000_000_000).ok()?;
    Some(Ok(Duration::new(secs, (ns % 1_000_000_000) as u32)))
}

/// Prints a duration the way [`parse_duration`] reads it back (`1s 500ms`, `30s`).
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        "0s".into()
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// One rung of the ladder: send `signal`, then wait up to `grace` for the cgroup to empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The signal sent to every process (or the main process, per [`KillMode`]).
    pub signal: Signal,
    /// How long to wait for the cgroup to empty before the next step.
    pub grace: Duration,
}

impl FromStr for Step {
    type Err = Error;

    /// `SIG:DUR`, e.g. `TERM:5s`, `INT:500ms`, `RTMIN+2:10`.
    fn from_str(s: &str) -> Result<Step> {
        let Some((sig, dur)) = s.split_once(':') else {
            return Err(Error::Input(format!(
                "invalid step '{}': expected SIGNAL:DURATION, e.g. TERM:5s",
                s.escape_debug()
            )));
        };
        let step = Step {
            signal: sig.parse()?,
            grace: parse_duration(dur)?,
        };
        if step.signal == Signal::KILL {
            return Err(Error::Input(format!(
                "invalid step '{}': SIGKILL is the final kill, which always follows the last step",
                s.escape_debug()
            )));
        }
        Ok(step)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.signal, format_duration(self.grace))
    }
}

/// The named signals worth offering as a stop signal (for completion, a picker): every one but
/// SIGKILL (the final kill, never a step) and SIGSTOP (it cannot be handled: the task would
/// stop, not exit), with their numbers.
pub fn offered_stop_signals() -> impl Iterator<Item = (&'static str, i32)> {
    NAMED
        .iter()
        .copied()
        .filter(|&(name, _)| name != "KILL" && name != "STOP")
}

/// Which processes receive the stop signals (the final kill always covers the whole cgroup,
/// except in `Process` mode). Same meaning as systemd's `KillMode=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KillMode {
    /// Every process in the cgroup's subtree gets each signal. The default.
    #[default]
    ControlGroup,
    /// Only the main process gets the stop signals; the final kill takes the whole cgroup.
    Mixed,
    /// Only the main process is signalled and killed; other processes are left running.
    /// Not recommended: it lets the task's helpers outlive it.
    Process,
}

impl KillMode {
    /// Every mode, in the order the documentation gives them.
    pub const ALL: [KillMode; 3] = [KillMode::ControlGroup, KillMode::Mixed, KillMode::Process];
}

impl FromStr for KillMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<KillMode> {
        match s.trim() {
            "control-group" => Ok(KillMode::ControlGroup),
            "mixed" => Ok(KillMode::Mixed),
            "process" => Ok(KillMode::Process),
            other => Err(Error::Input(format!(
                "invalid kill mode '{}': expected control-group, mixed or process",
                other.escape_debug()
            ))),
        }
    }
}

impl fmt::Display for KillMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KillMode::ControlGroup => "control-group",
            KillMode::Mixed => "mixed",
            KillMode::Process => "process",
        })
    }
}

/// A complete stop policy: the ladder of steps, then the final kill.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// At least one step; the first is the stop signal and its grace.
    pub steps: Vec<Step>,
    /// Send SIGHUP right after each step's signal (systemd's `SendSIGHUP=`).
    pub sighup: bool,
    /// How long to wait for the cgroup to empty after the final kill.
    pub kill_timeout: Duration,
    /// Who gets the stop signals.
    pub kill_mode: KillMode,
}

impl Default for Policy {
    /// SIGTERM, 30 s grace, 10 s kill timeout, control-group mode.
    fn default() -> Policy {
        Policy {
            steps: vec![Step {
                signal: Signal::TERM,
                grace: Duration::from_secs(30),
            }],
            sighup: false,
            kill_timeout: Duration::from_secs(10),
            kill_mode: KillMode::ControlGroup,
        }
    }
}

/// The longest policy text accepted from an xattr.
pub const MAX_POLICY_TEXT: usize = 1024;

impl Policy {
    /// Checks the invariants a stop relies on.
    ///
    /// # Errors
    /// [`Error::Input`] for an empty or overlong ladder or a SIGKILL step.
    pub fn validate(&self) -> Result<()> {
        if self.steps.is_empty() {
            return Err(Error::Input("invalid policy: no stop signal".into()));
        }
        if self.steps.len() > MAX_STEPS {
            return Err(Error::Input(format!(
                "invalid policy: {} steps, at most {MAX_STEPS} are allowed",
                self.steps.len()
            )));
        }
        if self.steps.iter().any(|s| s.signal == Signal::KILL) {
            return Err(Error::Input(
                "invalid policy: SIGKILL cannot be a stop step; it is the final kill".into(),
            ));
        }
        let total: Duration =
            self.steps.iter().map(|s| s.grace).sum::<Duration>() + self.kill_timeout;
        if total > MAX_DURATION || self.kill_timeout > MAX_DURATION {
            return Err(Error::Input(
                "invalid policy: longer than 30 days in total".into(),
            ));
        }
        Ok(())
    }

    /// The one-line text form stored in the `user.gracekill.policy` xattr:
    /// `v1 steps=TERM:30s,INT:5s sighup=0 kill-timeout=10s kill-mode=control-group`.
    pub fn to_text(&self) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|s| format!("{}:{}", s.signal.as_raw(), s.grace.as_millis()))
            .collect();
        format!(
            "v1 steps={} sighup={} kill-timeout={} kill-mode={}",
            steps.join(","),
            u8::from(self.sighup),
            self.kill_timeout.as_millis(),
            self.kill_mode
        )
    }

    /// Parses [`Policy::to_text`]'s format strictly: every key exactly once, nothing else.
    ///
    /// # Errors
    /// [`Error::Input`] describing the first problem; the text may come from an untrusted xattr.
    pub fn from_text(text: &str) -> Result<Policy> {
        let bad = |why: &str| Error::Input(format!("invalid stored policy: {why}"));
        if text.len() > MAX_POLICY_TEXT {
            return Err(bad("longer than 1024 bytes"));
        }
        let mut words = text.split(' ');
        if words.next() != Some("v1") {
            return Err(bad("unknown version (expected 'v1')"));
        }
        let (mut steps, mut sighup, mut kill_timeout, mut kill_mode) = (None, None, None, None);
        let ms = |v: &str| -> Result<Duration> {
            if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("a duration is not a number of milliseconds"));
            }
            let d = Duration::from_millis(v.parse().map_err(|_| bad("duration out of range"))?);
            if d > MAX_DURATION {
                return Err(bad("a duration exceeds 30 days"));
            }
            Ok(d)
        };
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| bad("expected key=value"))?;
            let slot_taken = match key {
                "steps" => {
                    let mut list = Vec::new();
                    for item in value.split(',') {
                        if list.len() == MAX_STEPS {
                            return Err(bad("too many steps"));
                        }
                        let (sig, dur) =
                            item.split_once(':').ok_or_else(|| bad("malformed step"))?;
                        if sig.is_empty()
                            || sig.len() > 2
                            || !sig.bytes().all(|b| b.is_ascii_digit())
                        {
                            return Err(bad("malformed step signal"));
                        }
                        let signal = Signal::from_raw(sig.parse().map_err(|_| bad("bad signal"))?)
                            .map_err(|_| bad("signal out of range"))?;
                        list.push(Step {
                            signal,
                            grace: ms(dur)?,
                        });
                    }
                    steps.replace(list).is_some()
                }
                "sighup" => sighup
                    .replace(match value {
                        "0" => false,
                        "1" => true,
                        _ => return Err(bad("sighup must be 0 or 1")),
                    })
                    .is_some(),
                "kill-timeout" => kill_timeout.replace(ms(value)?).is_some(),
                "kill-mode" => kill_mode
                    .replace(
                        value
                            .parse::<KillMode>()
                            .map_err(|_| bad("unknown kill mode"))?,
                    )
                    .is_some(),
                _ => return Err(bad("unknown key")),
            };
            if slot_taken {
                return Err(bad("a key appears twice"));
            }
        }
        let policy = Policy {
            steps: steps.ok_or_else(|| bad("missing steps"))?,
            sighup: sighup.ok_or_else(|| bad("missing sighup"))?,
            kill_timeout: kill_timeout.ok_or_else(|| bad("missing kill-timeout"))?,
            kill_mode: kill_mode.ok_or_else(|| bad("missing kill-mode"))?,
        };
        policy.validate().map_err(|e| bad(&e.to_string()))?;
        Ok(policy)
    }

    /// A short human summary: `SIGTERM 30s, then SIGINT 5s, then SIGKILL (kill timeout 10s)`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .steps
            .iter()
            .map(|s| format!("{} {}", s.signal, format_duration(s.grace)))
            .collect();
        parts.push(format!(
            "SIGKILL (timeout {})",
            format_duration(self.kill_timeout)
        ));
        let mut s = parts.join(", then ");
        if self.sighup {
            s.push_str(", +SIGHUP");
        }
        if self.kill_mode != KillMode::ControlGroup {
            s.push_str(&format!(", kill-mode={}", self.kill_mode));
        }
        s
    }
}

/// The systemd properties `run -p` understands, for error messages.
pub const PROPERTIES: &str =
    "KillSignal, TimeoutStopSec, KillMode, SendSIGHUP, FinalKillSignal, RuntimeMaxSec";

/// Applies one systemd-style property (`KillSignal=SIGINT`, `TimeoutStopSec=5`, ...) to a policy;
/// `RuntimeMaxSec=` sets `timeout`. Same spellings as `systemd-run -p`.
///
/// # Errors
/// [`Error::Input`] naming the property: unknown names, malformed values, `infinity`, and a
/// `FinalKillSignal=` other than SIGKILL (the final kill is always `cgroup.kill`).
pub fn apply_property(
    policy: &mut Policy,
    timeout: &mut Option<Duration>,
    prop: &str,
) -> Result<()> {
    let bad =
        |why: String| Error::Input(format!("invalid property '{}': {why}", prop.escape_debug()));
    let Some((key, value)) = prop.split_once('=') else {
        return Err(bad("expected Name=Value".into()));
    };
    let dur = |v: &str| -> Result<Duration> {
        if v.trim() == "infinity" {
            return Err(bad(
                "'infinity' is not supported; give a duration of at most 30 days".into(),
            ));
        }
        parse_duration(v).map_err(|e| bad(e.to_string()))
    };
    match key {
        "KillSignal" => {
            let sig: Signal = value.parse().map_err(|e: Error| bad(e.to_string()))?;
            if sig == Signal::KILL {
                return Err(bad(
                    "SIGKILL cannot be the stop signal; it is the final kill".into(),
                ));
            }
            policy.steps[0].signal = sig;
        }
        "TimeoutStopSec" => policy.steps[0].grace = dur(value)?,
        "KillMode" => policy.kill_mode = value.parse().map_err(|e: Error| bad(e.to_string()))?,
        "SendSIGHUP" => {
            policy.sighup = match value.trim().to_ascii_lowercase().as_str() {
                "yes" | "true" | "on" | "1" => true,
                "no" | "false" | "off" | "0" => false,
                _ => return Err(bad("expected yes or no".into())),
            }
        }
        "FinalKillSignal" => {
            let sig: Signal = value.parse().map_err(|e: Error| bad(e.to_string()))?;
            if sig != Signal::KILL {
                return Err(bad(
                    "gracekill's final kill is always SIGKILL (cgroup.kill)".into(),
                ));
            }
        }
        "RuntimeMaxSec" => *timeout = Some(dur(value)?),
        _ => {
            return Err(Error::Input(format!(
                "unknown property '{}' (supported: {PROPERTIES})",
                key.escape_debug()
            )));
        }
    }
    Ok(())
}

/// Policy settings given one by one, as the CLI's flags give them (`--signal`, `--grace`,
/// `--then`, `--sighup`, `--kill-timeout`, `--kill-mode`): each one set replaces its part of a
/// policy, the rest stays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyFlags {
    /// The stop signal (the first step's).
    pub signal: Option<Signal>,
    /// The first step's grace.
    pub grace: Option<Duration>,
    /// Further steps: when not empty, they replace every step after the first.
    pub then: Vec<Step>,
    /// Send SIGHUP after each signal (set only: `false` leaves the base policy's choice).
    pub sighup: bool,
    /// The kill timeout.
    pub kill_timeout: Option<Duration>,
    /// Who gets the stop signals.
    pub kill_mode: Option<KillMode>,
}

impl PolicyFlags {
    /// Whether any setting is given.
    pub fn any(&self) -> bool {
        self.signal.is_some()
            || self.grace.is_some()
            || !self.then.is_empty()
            || self.sighup
            || self.kill_timeout.is_some()
            || self.kill_mode.is_some()
    }

    /// `base` with every given setting applied on top (not validated).
    pub fn apply(&self, mut base: Policy) -> Policy {
        // A base without steps (not a valid policy) gets the default first step to change.
        if base.steps.is_empty() && (self.signal.is_some() || self.grace.is_some()) {
            base.steps.push(Policy::default().steps[0]);
        }
        if let Some(first) = base.steps.first_mut() {
            if let Some(sig) = self.signal {
                first.signal = sig;
            }
            if let Some(g) = self.grace {
                first.grace = g;
            }
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
        if let Some(m) = self.kill_mode {
            base.kill_mode = m;
        }
        base
    }

    /// The policy a stop is given: the settings on top of [`Policy::default`], or `None` when
    /// none is given (the task's own policy then applies; see [`crate::task::StopPlan`]). A
    /// single setting thus replaces a stored policy as a whole, never merges into it.
    pub fn given(&self) -> Option<Policy> {
        self.any().then(|| self.apply(Policy::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_number_and_realtime() {
        for (text, n) in [
            ("TERM", 15),
            ("SIGTERM", 15),
            ("sigint", 2),
            (" 9 ", 9),
            ("RTMIN", 34),
            ("RTMIN+3", 37),
            ("SIGRTMAX-2", 62),
            ("rtmax", 64),
            ("IOT", 6),
        ] {
            assert_eq!(text.parse::<Signal>().unwrap().as_raw(), n, "{text}");
        }
    }

    #[test]
    fn bad_signals_are_named_in_the_error() {
        for text in [
            "",
            "0",
            "32",
            "65",
            "TERMX",
            "RTMIN+31",
            "RTMAX-31",
            "RTMIN+",
            "RTMIN3",
            "99999999999",
            "ＴＥＲＭ",
            "-15",
        ] {
            let err = text.parse::<Signal>().unwrap_err().to_string();
            assert!(err.starts_with("invalid signal"), "{text}: {err}");
            assert_eq!(err.lines().count(), 1);
        }
    }

    #[test]
    fn offered_stop_signals_leave_out_kill_and_stop() {
        let names: Vec<&str> = offered_stop_signals().map(|(n, _)| n).collect();
        assert!(names.contains(&"TERM") && names.contains(&"INT") && names.contains(&"HUP"));
        assert!(!names.contains(&"KILL") && !names.contains(&"STOP"));
        for m in KillMode::ALL {
            assert_eq!(m.to_string().parse::<KillMode>().unwrap(), m);
        }
    }

    #[test]
    fn signal_display_round_trips() {
        for n in (1..=31).chain(34..=64) {
            let s = Signal::from_raw(n).unwrap();
            assert_eq!(s.to_string().parse::<Signal>().unwrap(), s);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        // Decimal seconds and units, as systemd's TimeoutStopSec= and timeout(1) take them.
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0.25s").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration(".5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2.").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0.5h").unwrap(), Duration::from_secs(1800));
        assert_eq!(
            parse_duration("2.5ms").unwrap_err().to_string(),
            "invalid duration '2.5ms': finer than a millisecond"
        );
        assert!(
            parse_duration("infinity")
                .unwrap_err()
                .to_string()
                .contains("a stop must end")
        );
        for bad in [
            ".",
            "1.2.3",
            "0.0001",
            "1.5 parsecs",
            "7300.5h",
            "",
            "abc",
            "-1s",
            "1y1y1y1y1y1y1y1y1y1y1y1y1y1y1y1y1y1y1y1y1y1y1y1y1y1y1y",
            "31days",
            "99999999999999999999",
            "5 parsecs",
            "2ns",
            "1500us",
            "1s 1us",
        ] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid duration"), "{bad}: {err}");
        }
        assert_eq!(
            parse_duration(&format_duration(Duration::from_millis(1500))).unwrap(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn steps() {
        let s: Step = "INT:1s".parse().unwrap();
        assert_eq!((s.signal, s.grace), (Signal::INT, Duration::from_secs(1)));
        assert_eq!("RTMIN+1:500ms".parse::<Step>().unwrap().signal.as_raw(), 35);
        for bad in ["TERM", "TERM:", ":1s", "KILL:1s", "TERM:1s:2s", "NOPE:1s"] {
            assert!(bad.parse::<Step>().is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_text_round_trips() {
        let p = Policy {
            steps: vec![
                Step {
                    signal: Signal::INT,
                    grace: Duration::from_millis(1500),
                },
                Step {
                    signal: Signal::TERM,
                    grace: Duration::from_secs(5),
                },
            ],
            sighup: true,
            kill_timeout: Duration::from_secs(3),
            kill_mode: KillMode::Mixed,
        };
        assert_eq!(Policy::from_text(&p.to_text()).unwrap(), p);
        assert_eq!(
            Policy::from_text(&Policy::default().to_text()).unwrap(),
            Policy::default()
        );
    }

    #[test]
    fn stored_policy_garbage_is_refused() {
        let good = Policy::default().to_text();
        for bad in [
            "",
            "v2 steps=15:1000 sighup=0 kill-timeout=1 kill-mode=mixed",
            "v1 steps=15:1000 sighup=0 kill-timeout=1",
            "v1 steps=15:1000 sighup=0 kill-timeout=1 kill-mode=mixed sighup=1",
            "v1 steps=9:1000 sighup=0 kill-timeout=1 kill-mode=mixed",
            "v1 steps=0:1000 sighup=0 kill-timeout=1 kill-mode=mixed",
            "v1 steps=15:99999999999999 sighup=0 kill-timeout=1 kill-mode=mixed",
            "v1 steps= sighup=0 kill-timeout=1 kill-mode=mixed",
            "v1 steps=15:1000 sighup=2 kill-timeout=1 kill-mode=mixed",
            "v1 steps=15:1000 sighup=0 kill-timeout=1 kill-mode=mixed evil=1",
            "v1  steps=15:1000 sighup=0 kill-timeout=1 kill-mode=mixed",
        ] {
            assert!(Policy::from_text(bad).is_err(), "{bad}");
        }
        let long = format!("{good} {}", "x".repeat(2000));
        assert!(Policy::from_text(&long).is_err());
        let many = format!(
            "v1 steps={} sighup=0 kill-timeout=1 kill-mode=mixed",
            vec!["15:1"; 17].join(",")
        );
        assert!(Policy::from_text(&many).is_err());
    }

    #[test]
    fn systemd_properties() {
        let mut p = Policy::default();
        let mut t = None;
        for prop in [
            "KillSignal=SIGINT",
            "TimeoutStopSec=5",
            "KillMode=mixed",
            "SendSIGHUP=yes",
            "FinalKillSignal=9",
            "RuntimeMaxSec=1min 30s",
        ] {
            apply_property(&mut p, &mut t, prop).unwrap();
        }
        assert_eq!(p.steps[0].signal, Signal::INT);
        assert_eq!(p.steps[0].grace, Duration::from_secs(5));
        assert_eq!(p.kill_mode, KillMode::Mixed);
        assert!(p.sighup);
        assert_eq!(t, Some(Duration::from_secs(90)));
        for bad in [
            "Bogus=1",
            "KillSignal",
            "KillSignal=KILL",
            "TimeoutStopSec=infinity",
            "TimeoutStopSec=x",
            "KillMode=all",
            "SendSIGHUP=maybe",
            "FinalKillSignal=TERM",
            "=",
            "",
        ] {
            let e = apply_property(&mut p, &mut t, bad).unwrap_err().to_string();
            assert!(e.contains("property"), "{bad}: {e}");
        }
    }

    #[test]
    fn no_flag_means_no_given_policy() {
        assert_eq!(PolicyFlags::default().given(), None);
        assert!(!PolicyFlags::default().any());
    }

    #[test]
    fn one_flag_gives_a_whole_policy_on_the_defaults() {
        // `stop --grace 5s` on a task whose record says SIGINT: the given policy is SIGTERM 5s,
        // not the record's signal with a new grace.
        let flags = PolicyFlags {
            grace: Some(Duration::from_secs(5)),
            ..PolicyFlags::default()
        };
        let mut want = Policy::default();
        want.steps[0].grace = Duration::from_secs(5);
        assert_eq!(flags.given(), Some(want));
        let sighup = PolicyFlags {
            sighup: true,
            ..PolicyFlags::default()
        };
        assert!(sighup.given().is_some_and(|p| p.sighup));
    }

    #[test]
    fn flags_on_a_base_without_steps_give_it_a_first_step_instead_of_panicking() {
        let empty = Policy {
            steps: Vec::new(),
            ..Policy::default()
        };
        let flags = PolicyFlags {
            grace: Some(Duration::from_secs(3)),
            ..PolicyFlags::default()
        };
        let p = flags.apply(empty.clone());
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].grace, Duration::from_secs(3));
        assert_eq!(p.steps[0].signal, Policy::default().steps[0].signal);
        assert!(PolicyFlags::default().apply(empty).steps.is_empty());
    }

    #[test]
    fn flags_replace_their_part_of_the_base_and_then_replaces_further_steps() {
        let base = Policy {
            steps: vec![
                "INT:1s".parse().unwrap(),
                "HUP:2s".parse().unwrap(),
                "QUIT:3s".parse().unwrap(),
            ],
            sighup: true,
            kill_timeout: Duration::from_secs(7),
            kill_mode: KillMode::Mixed,
        };
        let flags = PolicyFlags {
            signal: Some(Signal::TERM),
            then: vec!["USR1:4s".parse().unwrap()],
            kill_mode: Some(KillMode::Process),
            ..PolicyFlags::default()
        };
        let p = flags.apply(base);
        assert_eq!(
            p.steps,
            vec![
                Step {
                    signal: Signal::TERM,
                    grace: Duration::from_secs(1)
                },
                "USR1:4s".parse().unwrap()
            ]
        );
        // `sighup: false` is "not given": the base keeps its SIGHUP.
        assert!(p.sighup);
        assert_eq!(p.kill_timeout, Duration::from_secs(7));
        assert_eq!(p.kill_mode, KillMode::Process);
    }
}
