//! The signals that ask a stopper to end (SIGINT, SIGTERM, SIGHUP), taken on the runtime: `run`
//! starts, then escalates, its task's stop on them; `gracekill stop` cuts its grace short on
//! them, so that `timeout(1)`, a service manager's stop timeout or a Ctrl-C ends the stop with
//! its final kill and its report, not with a stopper killed halfway and a task left signalled.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Listening for SIGINT, SIGTERM and SIGHUP (tokio's handlers: no thread, no polling).
#[derive(Debug)]
pub struct Interrupts {
    int: Option<Signal>,
    term: Option<Signal>,
    hup: Option<Signal>,
}

impl Interrupts {
    /// Takes the three signals from now on. One this process inherited as ignored (`nohup`
    /// leaves SIGHUP ignored, a shell's background job SIGINT) stays ignored, as without us.
    ///
    /// # Errors
    /// tokio refusing a handler; a [`crate::StopRuntime`] that runs without tokio's I/O driver
    /// (an attack on the epoll watches), which tokio's handlers need.
    ///
    /// # Panics
    /// On any other runtime without the I/O driver (tokio's "IO is disabled").
    pub fn listen() -> std::io::Result<Interrupts> {
        if let Some(why) = crate::watch::runtime_without_io() {
            return Err(std::io::Error::other(format!(
                "no signal handlers without tokio's I/O driver ({why})"
            )));
        }
        let take = |kind: SignalKind, raw: i32| -> std::io::Result<Option<Signal>> {
            if crate::sys::signal_is_ignored(raw) {
                tracing::debug!(signal = raw, "inherited as ignored: left ignored");
                return Ok(None);
            }
            signal(kind).map(Some)
        };
        Ok(Interrupts {
            int: take(SignalKind::interrupt(), libc::SIGINT)?,
            term: take(SignalKind::terminate(), libc::SIGTERM)?,
            hup: take(SignalKind::hangup(), libc::SIGHUP)?,
        })
    }

    /// The next of them to arrive, by name. Cancel-safe (a `select!` branch).
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            () = recv(&mut self.int) => "SIGINT",
            () = recv(&mut self.term) => "SIGTERM",
            () = recv(&mut self.hup) => "SIGHUP",
        }
    }
}

/// Gives SIGINT, SIGTERM and SIGHUP back their default action (ending the process), except those
/// inherited as ignored. tokio's handlers outlive the runtime that installed them: once a stop is
/// over, a stopper still writing its report (to a pipe nobody reads) would otherwise take these
/// signals and do nothing with them.
pub fn restore_defaults() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        crate::sys::default_unless_ignored(sig);
    }
}

/// Blocks SIGTTOU on the calling thread, for good: its writes to a terminal then go through even
/// when its process is not the terminal's foreground and `stty tostop` is set, instead of
/// stopping the whole process (the kernel takes a blocked SIGTTOU as ignored). For a thread that
/// writes a stopper's output while the stop runs: a task that shares the terminal can set
/// TOSTOP and take the foreground.
pub fn never_stopped_by_terminal_writes() {
    crate::sys::block_sigttou_here();
}

/// Waits for `s`, forever if it is not listened to.
async fn recv(s: &mut Option<Signal>) {
    if let Some(s) = s
        && s.recv().await.is_some()
    {
        return;
    }
    std::future::pending().await
}
