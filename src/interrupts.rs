//! The signals that ask a stopper to end (SIGINT, SIGTERM, SIGHUP), taken on the runtime: `run`
//! starts, then escalates, its task's stop on them; `gracekill stop` cuts its grace short on
//! them, so that `timeout(1)`, a service manager's stop timeout or a Ctrl-C ends the stop with
//! its final kill and its report, not with a stopper killed halfway and a task left signalled.

use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// How often the signals are looked for on a runtime without tokio's I/O driver: as often as a
/// blind watcher looks at its cgroup (see `watch.rs`).
const NOTED_EVERY: Duration = Duration::from_millis(10);

/// Listening for SIGINT, SIGTERM and SIGHUP: tokio's handlers (no thread, no polling), or, on a
/// [`crate::StopRuntime`] without tokio's I/O driver, handlers that note each arrival, looked at
/// every 10 ms.
#[derive(Debug)]
pub struct Interrupts(Listening);

#[derive(Debug)]
enum Listening {
    Tokio {
        int: Option<Signal>,
        term: Option<Signal>,
        hup: Option<Signal>,
    },
    /// Bit `n` for each signal `n` listened to.
    Noted(u64),
}

/// The signals taken, with their names.
const TAKEN: [(i32, &str); 3] = [
    (libc::SIGINT, "SIGINT"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGHUP, "SIGHUP"),
];

impl Interrupts {
    /// Takes the three signals from now on. One this process inherited as ignored (`nohup`
    /// leaves SIGHUP ignored, a shell's background job SIGINT) stays ignored, as without us.
    ///
    /// On a [`crate::StopRuntime`] that runs without tokio's I/O driver (a task of the
    /// stopper's user can use up the epoll watches that driver needs), the handlers only note
    /// each signal, and [`Interrupts::next`] looks for them every 10 ms, as that runtime's
    /// watchers look at their cgroups: a stop under that attack can still be cut short, not
    /// only ended by the signal's default action halfway through. Those handlers replace
    /// tokio's for the whole process, which tokio does not notice: a process that has listened
    /// this way takes no more signals through tokio.
    ///
    /// # Errors
    /// A handler refused (by tokio, or by `sigaction`).
    ///
    /// # Panics
    /// On any other runtime without the I/O driver (tokio's "IO is disabled").
    pub fn listen() -> std::io::Result<Interrupts> {
        let listened = TAKEN
            .into_iter()
            .filter(|&(raw, _)| {
                let ignored = crate::sys::signal_is_ignored(raw);
                if ignored {
                    tracing::debug!(signal = raw, "inherited as ignored: left ignored");
                }
                !ignored
            })
            .map(|(raw, _)| raw);
        if crate::watch::runtime_without_io().is_some() {
            let mut mask = 0;
            for raw in listened {
                crate::sys::note_on_signal(raw).map_err(std::io::Error::from)?;
                mask |= 1 << raw;
            }
            // From now on: not what reached an earlier listener of this process.
            crate::sys::forget_noted(mask);
            return Ok(Interrupts(Listening::Noted(mask)));
        }
        let (mut int, mut term, mut hup) = (None, None, None);
        for raw in listened {
            let (slot, kind) = match raw {
                libc::SIGINT => (&mut int, SignalKind::interrupt()),
                libc::SIGTERM => (&mut term, SignalKind::terminate()),
                _ => (&mut hup, SignalKind::hangup()),
            };
            *slot = Some(signal(kind)?);
        }
        Ok(Interrupts(Listening::Tokio { int, term, hup }))
    }

    /// The next of them to arrive, by name. Cancel-safe (a `select!` branch).
    pub async fn next(&mut self) -> &'static str {
        match &mut self.0 {
            Listening::Tokio { int, term, hup } => tokio::select! {
                () = recv(int) => "SIGINT",
                () = recv(term) => "SIGTERM",
                () = recv(hup) => "SIGHUP",
            },
            Listening::Noted(mask) => loop {
                if let Some(raw) = crate::sys::take_noted(*mask)
                    && let Some(&(_, name)) = TAKEN.iter().find(|(r, _)| *r == raw)
                {
                    return name;
                }
                tokio::time::sleep(NOTED_EVERY).await;
            },
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
