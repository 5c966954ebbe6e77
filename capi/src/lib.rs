//! The C ABI for embedding gracekill in C and C++ programs (a Mesos module, an agent, a
//! supervisor): one blocking stop call on a cgroup path that fills an outcome struct.
//!
//! The header `include/gracekill.h` is generated from this file by cbindgen (`ci/gen-header`;
//! CI fails when it drifts). The crate builds `libgracekill_capi.a` and `libgracekill_capi.so`;
//! `ci/install-lib` installs them as `libgracekill.*` (SONAME `libgracekill.so.0`, from build.rs) with the
//! header and a `gracekill.pc` for pkg-config; `ci/package` makes Debian packages of the same files.
//!
//! Rules every entry point keeps:
//! - It catches panics: nothing unwinds into C. A caught panic returns `-ENOTRECOVERABLE`.
//! - Errors are negative errno values; `gracekill_last_error()` gives the message, per thread.
//! - It is callable from many threads at once: the only state is the per-thread last error, and
//!   the engine's own lazily probed kernel facts (`cgroup.kill` present, membership proof).
//! - The library never writes to stdout or stderr. Its tracing events go to the caller's log
//!   callback when one is given (on the calling thread, during the call), else to the process's
//!   global `tracing` subscriber if a Rust host installed one, else nowhere.
//!
//! `unsafe` in this module: `extern "C"` entry points that the C side calls with raw pointers
//! must dereference them (and `#[no_mangle]` is itself an unsafe attribute). Each dereference
//! is guarded by a null check and carries a `SAFETY:` comment naming the contract in the header
//! that makes it sound. Nothing else in the crate is reached through raw pointers.
// SAFETY (crate): the library denies `unsafe_code` outside its `sys` module; this FFI shell is
// the one other crate that uses it, because a C ABI cannot be written without raw pointers.
// Every `unsafe` block below states the invariant it relies on.
// The C names are the ABI; they follow C conventions, not Rust's.
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use gracekill::error::{Error, ErrorKind};
use gracekill::policy::{KillMode, MAX_STEPS, Policy, Signal, Step};
use gracekill::report::{Outcome, Verdict};
use gracekill::stop::{KillMethod, StopOptions, stop_named_blocking};

/// `sizeof(T)` for a `struct_size` field: the ABI's structs are a few hundred bytes.
fn struct_size<T>() -> u32 {
    u32::try_from(size_of::<T>()).expect("an ABI struct is smaller than 4 GiB")
}

/// The version of this C ABI. It grows when functions or fields are added: fields are only ever
/// appended (to structs the caller allocates, which carry `struct_size`, and to the outcome the
/// library allocates), so a program built against an older header keeps working with a newer
/// library. Check `gracekill_abi_version() >= GRACEKILL_ABI_VERSION` at run time. No existing
/// function or field changes meaning within one SONAME. 3 added the outcome's `exits`.
pub const GRACEKILL_ABI_VERSION: u32 = 3;

/// `kill_mode`: every process in the cgroup's subtree gets each stop signal (the default).
pub const GRACEKILL_KILL_MODE_CONTROL_GROUP: i32 = 0;
/// `kill_mode`: only `main_pid` gets the stop signals; the final kill takes the whole cgroup.
pub const GRACEKILL_KILL_MODE_MIXED: i32 = 1;
/// `kill_mode`: only `main_pid` is signalled and killed; the rest of the cgroup is left running.
pub const GRACEKILL_KILL_MODE_PROCESS: i32 = 2;

/// `verdict`: the cgroup was already empty; nothing was signalled (CLI exit code 0).
pub const GRACEKILL_VERDICT_EMPTY: i32 = 0;
/// `verdict`: the cgroup emptied within the grace period(s) (CLI exit code 0).
pub const GRACEKILL_VERDICT_GRACEFUL: i32 = 1;
/// `verdict`: the final SIGKILL was needed; the cgroup is now empty (CLI exit code 3).
pub const GRACEKILL_VERDICT_KILLED: i32 = 2;
/// `verdict`: processes survived SIGKILL for the whole kill timeout (CLI exit code 4).
pub const GRACEKILL_VERDICT_SURVIVORS: i32 = 3;
/// `verdict`: `kill_mode` process: the main process is gone (or there was none); the rest of
/// the cgroup was left running, as that mode asks (CLI exit code 5).
pub const GRACEKILL_VERDICT_REMAINING: i32 = 4;

/// Log level passed to the log callback: errors.
pub const GRACEKILL_LOG_ERROR: i32 = 1;
/// Log level: warnings.
pub const GRACEKILL_LOG_WARN: i32 = 2;
/// Log level: information.
pub const GRACEKILL_LOG_INFO: i32 = 3;
/// Log level: debugging detail (each signal sent, which kill path ran).
pub const GRACEKILL_LOG_DEBUG: i32 = 4;
/// Log level: tracing detail (each wakeup).
pub const GRACEKILL_LOG_TRACE: i32 = 5;

/// The most steps a policy may have (the stop signal plus `then_len` further steps).
pub const GRACEKILL_MAX_STEPS: usize = 16;
const _: () = assert!(GRACEKILL_MAX_STEPS == MAX_STEPS);

/// One further rung of the ladder: send `signal`, then wait up to `grace_ms` for the cgroup to
/// empty.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gracekill_step {
    /// A signal number: 1-31 except SIGKILL, or SIGRTMIN..SIGRTMAX (34-64).
    pub signal: i32,
    /// Milliseconds to wait for the cgroup to empty after the signal.
    pub grace_ms: u64,
}

/// What a stop does. Fill it with `gracekill_policy_init()` (the CLI's defaults: SIGTERM, 30 s
/// grace, 10 s kill timeout, control-group mode), then change fields.
///
/// The library only reads it during `gracekill_stop()` and keeps no pointer into it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gracekill_policy {
    /// `sizeof(struct gracekill_policy)` as the caller was compiled; set by
    /// `gracekill_policy_init()`. Lets later versions append fields compatibly.
    pub struct_size: u32,
    /// The stop signal (default `SIGTERM`, 15). Not SIGKILL: that is the final kill.
    pub signal: i32,
    /// How long the task may take to exit after the stop signal, in milliseconds (default
    /// 30000).
    pub grace_ms: u64,
    /// Optional further steps after the stop signal (like `--then SIG:DUR`), or NULL. Read
    /// during the call only; owned by the caller.
    pub then: *const gracekill_step,
    /// How many steps `then` points to; at most `GRACEKILL_MAX_STEPS - 1`.
    pub then_len: usize,
    /// How long to wait for the cgroup to empty after the final SIGKILL, in milliseconds
    /// (default 10000).
    pub kill_timeout_ms: u64,
    /// `GRACEKILL_KILL_MODE_*` (default control-group).
    pub kill_mode: i32,
    /// Also send SIGHUP right after each step's signal (systemd's `SendSIGHUP=`).
    pub sighup: bool,
}

/// A log callback: `level` is `GRACEKILL_LOG_*`, `target` the Rust module
/// (`gracekill::stop`), `message` one line with the event's fields as `key=value`.
/// Both strings are valid only during the callback. It is called synchronously, only on the
/// thread that called `gracekill_stop()`, only during that call, between the stop's deadlines:
/// it must not block (a `write` to a pipe or terminal the task shares can), so queue the line
/// and return. It must not unwind (no C++ exception may leave it) and must not call
/// `gracekill_stop` itself.
pub type gracekill_log_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: i32,
        target: *const c_char,
        message: *const c_char,
    ),
>;

/// How a stop runs, beyond the policy. Fill it with `gracekill_stop_options_init()`. Passing
/// NULL instead means all defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gracekill_stop_options {
    /// `sizeof(struct gracekill_stop_options)`; set by `gracekill_stop_options_init()`.
    pub struct_size: u32,
    /// The task's main process for the mixed and process kill modes, or 0.
    pub main_pid: i32,
    /// Use the pre-5.14 final kill (freeze, SIGKILL each process through its pidfd, thaw) even
    /// where `cgroup.kill` exists. `GRACEKILL_FORCE_FALLBACK=1` in the environment does the same.
    pub force_fallback: bool,
    /// Receives the library's tracing events instead of the global subscriber, or NULL.
    pub log_fn: gracekill_log_fn,
    /// Passed back unchanged to `log_fn`; never dereferenced by the library.
    pub log_user_data: *mut c_void,
    /// The most detailed level delivered to `log_fn` (`GRACEKILL_LOG_*`; default
    /// `GRACEKILL_LOG_INFO`).
    pub log_level: i32,
}

/// One signal step as it happened; the final kill is the step with `signal` 9.
#[repr(C)]
#[derive(Debug)]
pub struct gracekill_step_report {
    /// The signal number.
    pub signal: i32,
    /// Its name: `SIGTERM`, `SIGRTMIN+3`, `SIGKILL`.
    pub signal_name: *const c_char,
    /// When the step began, milliseconds after the stop started.
    pub at_ms: f64,
    /// How many processes were sent the signal (for the final kill: how many were alive).
    pub signalled: usize,
    /// For the final kill: `cgroup.kill`, `fallback` or `pidfd`; NULL for other steps.
    pub via: *const c_char,
}

/// A process that was alive when the final kill was sent.
#[repr(C)]
#[derive(Debug)]
pub struct gracekill_process {
    /// The pid, in the caller's pid namespace.
    pub pid: i32,
    /// `/proc/<pid>/comm`.
    pub comm: *const c_char,
    /// `/proc/<pid>/cmdline`, arguments joined by spaces.
    pub cmdline: *const c_char,
}

/// A process still present after the final kill and the kill timeout.
#[repr(C)]
#[derive(Debug)]
pub struct gracekill_survivor {
    /// The pid.
    pub pid: i32,
    /// `/proc/<pid>/comm`.
    pub comm: *const c_char,
    /// The state letter; `D` (uninterruptible sleep) is the usual reason.
    pub state: *const c_char,
    /// The kernel function it waits in (`/proc/<pid>/wchan`), possibly empty.
    pub wchan: *const c_char,
    /// Whether `process_mrelease(2)` released its memory.
    pub memory_released: bool,
    /// Why not (`EINVAL`, `ENOSYS`), or NULL.
    pub mrelease_error: *const c_char,
}

/// A process the stop signalled and saw exit: one entry of the exit timeline.
#[repr(C)]
#[derive(Debug)]
pub struct gracekill_exit {
    /// The pid.
    pub pid: i32,
    /// `/proc/<pid>/comm`, read while it was alive; empty if it was not described.
    pub comm: *const c_char,
    /// When the stop saw it exit, milliseconds after the stop started.
    pub at_ms: f64,
    /// Whether `wait_status` is known: false before Linux 6.15 (no `PIDFD_INFO_EXIT`), or when
    /// its parent had not reaped it when the stop ended.
    pub status_known: bool,
    /// Its wait status, as `waitpid(2)` gives it: use `WIFEXITED`/`WEXITSTATUS`,
    /// `WIFSIGNALED`/`WTERMSIG` from `<sys/wait.h>`.
    pub wait_status: i32,
}

/// What a stop did: the same facts as `gracekill stop --json`. Allocated by
/// `gracekill_stop()`, read-only for the caller, released with `gracekill_outcome_free()`;
/// every pointer inside stays valid until then and is owned by the outcome.
#[repr(C)]
#[derive(Debug)]
pub struct gracekill_outcome {
    /// `GRACEKILL_VERDICT_*`.
    pub verdict: i32,
    /// The `gracekill stop` exit code for the verdict: 0, 3, 4 or 5.
    pub exit_code: i32,
    /// The verdict's name: `empty`, `graceful`, `killed`, `survivors` or `remaining`.
    pub verdict_name: *const c_char,
    /// The cgroup, relative to the cgroup2 mount (`/jobs/web`).
    pub cgroup: *const c_char,
    /// How long the stop took, in milliseconds.
    pub elapsed_ms: f64,
    /// Whether `populated 0` was observed; `empty_at_ms` is meaningful only then.
    pub emptied: bool,
    /// When `populated 0` was observed, milliseconds after the start.
    pub empty_at_ms: f64,
    /// A frozen cgroup was thawed so the task's handlers could run.
    pub thawed: bool,
    /// Each signal step, the final kill included.
    pub steps: *const gracekill_step_report,
    /// Number of `steps`.
    pub steps_len: usize,
    /// Processes alive at the final kill.
    pub killed: *const gracekill_process,
    /// Number of `killed`.
    pub killed_len: usize,
    /// Processes alive after the kill timeout.
    pub survivors: *const gracekill_survivor,
    /// Number of `survivors`.
    pub survivors_len: usize,
    /// How membership was proven: `PIDFD_GET_INFO` or `/proc/<pid>/cgroup`.
    pub membership_proof: *const c_char,
    /// The whole outcome as the one-line JSON object `gracekill stop --json` prints.
    pub json: *const c_char,
    /// How many processes were alive at the final kill (`killed` lists at most 100).
    pub killed_total: usize,
    /// How many processes survived (`survivors` lists at most 100).
    pub survivors_total: usize,
    /// Errors that did not stop the stop (a process that could not be signalled, a cgroup that
    /// could not be listed); the final kill was still sent.
    pub error_count: usize,
    /// The first of them, or NULL.
    pub first_error: *const c_char,
    /// Where the policy came from: `given`, `stored` or `default`.
    pub policy_source: *const c_char,
    /// The exit timeline (ABI 3): the processes the stop signalled and saw exit, in order (at
    /// most 100).
    pub exits: *const gracekill_exit,
    /// Number of `exits`.
    pub exits_len: usize,
}

/// The outcome and the memory its pointers point into, in one allocation. `public` comes first
/// so a pointer to the allocation is a pointer to the public struct (`repr(C)`).
#[repr(C)]
struct OwnedOutcome {
    public: gracekill_outcome,
    _strings: Vec<CString>,
    _steps: Vec<gracekill_step_report>,
    _killed: Vec<gracekill_process>,
    _survivors: Vec<gracekill_survivor>,
    _exits: Vec<gracekill_exit>,
}

// -- errors -------------------------------------------------------------------------------------

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(msg: &str) {
    // One line, as documented: control characters (a newline or an escape in a cgroup name the
    // caller passed) are written escaped; NUL among them.
    let c = CString::new(gracekill::report::printable(msg)).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(c));
}

fn clear_last_error() {
    LAST_ERROR.with(|e| *e.borrow_mut() = None);
}

/// Records `err` as this thread's last error and returns it as a negative errno.
fn fail(err: &Error) -> c_int {
    set_last_error(&err.to_string());
    -errno_for(err)
}

fn invalid(msg: &str) -> c_int {
    set_last_error(msg);
    -libc::EINVAL
}

/// The errno a C caller sees for `err`: the kernel's own when there was a system call,
/// otherwise one standing for the error's kind.
fn errno_for(err: &Error) -> c_int {
    if let Some(e) = err.errno() {
        return e;
    }
    match err.kind() {
        ErrorKind::InvalidInput => libc::EINVAL,
        ErrorKind::NotFound => libc::ENOENT,
        ErrorKind::PermissionDenied => libc::EACCES,
        ErrorKind::Unsupported => libc::EOPNOTSUPP,
        ErrorKind::Busy => libc::EBUSY,
        ErrorKind::Io => libc::EIO,
    }
}

/// Runs an entry point's body, turning a panic into `-ENOTRECOVERABLE` with a message.
fn guarded(body: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(rc) => rc,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error (a bug in gracekill): {what}"));
            -libc::ENOTRECOVERABLE
        }
    }
}

// -- entry points ---------------------------------------------------------------------------------

/// The library's version, e.g. `"0.1.0"`: a static string, never freed.
#[unsafe(no_mangle)]
pub extern "C" fn gracekill_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The C ABI version this library implements (`GRACEKILL_ABI_VERSION`). A program needs at least
/// the version of the header it was built with: `gracekill_abi_version() >=
/// GRACEKILL_ABI_VERSION`.
#[unsafe(no_mangle)]
pub extern "C" fn gracekill_abi_version() -> u32 {
    GRACEKILL_ABI_VERSION
}

/// The message of the last failed gracekill call on the calling thread (one lowercase line
/// naming the operation and path, e.g. `open '/sys/fs/cgroup/jobs/web': no such file or
/// directory`), or NULL if the last call succeeded.
///
/// The string is owned by the library and stays valid until the next gracekill call on the same
/// thread; copy it to keep it. Other threads' errors are never visible here.
#[unsafe(no_mangle)]
pub extern "C" fn gracekill_last_error() -> *const c_char {
    catch_unwind(|| {
        LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
    })
    .unwrap_or(std::ptr::null())
}

/// Fills `*policy` with the defaults of `gracekill stop`: SIGTERM, 30 s grace, no further
/// steps, SIGHUP off, 10 s kill timeout, control-group mode; sets `struct_size`.
///
/// Returns 0, or `-EINVAL` when `policy` is NULL.
///
/// # Safety
/// `policy` is NULL or points to writable memory for one `struct gracekill_policy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gracekill_policy_init(policy: *mut gracekill_policy) -> c_int {
    guarded(|| {
        if policy.is_null() {
            return invalid("gracekill_policy_init: policy is NULL");
        }
        let d = Policy::default();
        let value = gracekill_policy {
            struct_size: struct_size::<gracekill_policy>(),
            signal: d.steps[0].signal.as_raw(),
            grace_ms: millis(d.steps[0].grace),
            then: std::ptr::null(),
            then_len: 0,
            kill_timeout_ms: millis(d.kill_timeout),
            kill_mode: GRACEKILL_KILL_MODE_CONTROL_GROUP,
            sighup: d.sighup,
        };
        // SAFETY: non-null (checked) and, by the documented contract, valid for a write of one
        // `gracekill_policy`; `write` does not read or drop the old (possibly uninitialized)
        // contents.
        unsafe { policy.write(value) };
        clear_last_error();
        0
    })
}

/// Fills `*options` with the defaults: no main pid, `cgroup.kill` where available, no log
/// callback, log level INFO; sets `struct_size`.
///
/// Returns 0, or `-EINVAL` when `options` is NULL.
///
/// # Safety
/// `options` is NULL or points to writable memory for one `struct gracekill_stop_options`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gracekill_stop_options_init(
    options: *mut gracekill_stop_options,
) -> c_int {
    guarded(|| {
        if options.is_null() {
            return invalid("gracekill_stop_options_init: options is NULL");
        }
        let value = gracekill_stop_options {
            struct_size: struct_size::<gracekill_stop_options>(),
            main_pid: 0,
            force_fallback: false,
            log_fn: None,
            log_user_data: std::ptr::null_mut(),
            log_level: GRACEKILL_LOG_INFO,
        };
        // SAFETY: non-null (checked) and valid for one write by the documented contract.
        unsafe { options.write(value) };
        clear_last_error();
        0
    })
}

/// Stops the task in a cgroup, blocking the calling thread until the stop is over (at most the
/// sum of the policy's graces and its kill timeout, plus a little).
///
/// `cgroup` is resolved exactly as the `gracekill stop` CLI resolves its TASK argument: a path
/// under the cgroup2 mount (`/sys/fs/cgroup/jobs/web`), a path relative to the mount root
/// (`/jobs/web`), or a bare name under gracekill's root (`$GRACEKILL_ROOT`, default
/// `/gracekill`). The mount is found in `/proc/self/mountinfo`. The same refusals apply as for
/// the CLI: the root cgroup, any cgroup holding the calling process or one of its ancestors,
/// paths leaving the mount; nothing is signalled then.
///
/// `policy` NULL applies the task's own policy, as `gracekill stop TASK` without flags does: the
/// one `gracekill run` recorded, if the caller may trust that record (a root caller reads only
/// records no task can forge; see the README's trust model), else the defaults (SIGTERM, 30 s,
/// SIGKILL, 10 s). A non-NULL `policy` replaces the stored one as a whole. `options` may be
/// NULL (defaults; the main pid then also comes from the trusted record). On success
/// `*outcome` receives a new outcome that the caller must release with
/// `gracekill_outcome_free()`; on failure it is set to NULL. As `gracekill stop` does, it
/// removes the emptied cgroup of a task whose `gracekill run` is gone (within 1 s, else it
/// stays, with a warning in the outcome's JSON): no one else would.
///
/// Returns 0 on success (whatever the verdict: read `verdict`), else a negative errno:
/// `-EINVAL` bad arguments, policy or refused target; `-ENOENT` no such cgroup; `-EACCES` or
/// `-EPERM` not allowed (run as root or in a delegated subtree); `-EOPNOTSUPP` no cgroup2
/// mount; `-ENOTRECOVERABLE` an internal error; others as the kernel returned them.
/// `gracekill_last_error()` has the message.
///
/// Thread-safe: many threads may stop different cgroups at once. It must not be called from a
/// thread that is running a tokio runtime (it builds its own, single-threaded, for the call).
/// As the CLI does, the first stop in a process raises the soft `RLIMIT_NOFILE` to the hard
/// limit, because it holds one pidfd per process of the task.
///
/// # Safety
/// `cgroup` is a NUL-terminated string; `policy` and `options` are NULL or point to structs
/// filled by their `_init` functions (with `then` valid for `then_len` steps); `outcome` points
/// to writable storage for one pointer. All are only read (or written) during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gracekill_stop(
    cgroup: *const c_char,
    policy: *const gracekill_policy,
    options: *const gracekill_stop_options,
    outcome: *mut *mut gracekill_outcome,
) -> c_int {
    guarded(|| {
        if outcome.is_null() {
            return invalid("gracekill_stop: outcome is NULL");
        }
        // SAFETY: non-null and writable for one pointer by the contract.
        unsafe { outcome.write(std::ptr::null_mut()) };
        if cgroup.is_null() {
            return invalid("gracekill_stop: cgroup is NULL");
        }
        // SAFETY: non-null and NUL-terminated by the contract; the borrow ends with this call.
        let task = unsafe { CStr::from_ptr(cgroup) };
        let Ok(task) = task.to_str() else {
            return invalid("gracekill_stop: cgroup path is not valid UTF-8");
        };
        // SAFETY: NULL or a filled `gracekill_policy` whose `then` is valid for `then_len`.
        let policy = match unsafe { read_policy(policy) } {
            Ok(p) => p,
            Err(rc) => return rc,
        };
        // SAFETY: NULL or a filled `gracekill_stop_options`.
        let options = match unsafe { read_options(options) } {
            Ok(o) => o,
            Err(rc) => return rc,
        };
        let mut opts = StopOptions::default();
        // GRACEKILL_FORCE_FALLBACK=1 also forces it: the library decides (stop_named).
        opts.kill_method = if options.force_fallback {
            KillMethod::Fallback
        } else {
            KillMethod::Auto
        };
        opts.main_pid = (options.main_pid > 0).then_some(options.main_pid);
        let result = match options.log_fn {
            Some(f) => {
                let sink = LogSink {
                    f,
                    user_data: options.log_user_data,
                    max: options.log_level,
                };
                tracing::subscriber::with_default(sink.subscriber(), || {
                    stop_named_blocking(task, policy, &opts)
                })
            }
            None => stop_named_blocking(task, policy, &opts),
        };
        match result {
            Ok(o) => {
                let owned = Box::new(OwnedOutcome::new(&o));
                // SAFETY: non-null and writable for one pointer (checked above). The pointer
                // is to the whole `OwnedOutcome`, whose first field (repr(C)) is the public
                // struct; `gracekill_outcome_free` casts it back.
                unsafe { outcome.write(Box::into_raw(owned).cast()) };
                clear_last_error();
                0
            }
            Err(e) => fail(&e),
        }
    })
}

/// Releases an outcome returned by `gracekill_stop()`, with every string and array in it.
/// NULL is ignored.
///
/// # Safety
/// `outcome` is NULL or a pointer returned by `gracekill_stop` that was not freed yet; nothing
/// inside it may be used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gracekill_outcome_free(outcome: *mut gracekill_outcome) {
    if outcome.is_null() {
        return;
    }
    let _ = catch_unwind(|| {
        // SAFETY: by the contract the pointer came from `Box::into_raw` of an `OwnedOutcome`
        // in `gracekill_stop` (cast to its first field) and is freed once; casting back
        // restores the original type and provenance.
        drop(unsafe { Box::from_raw(outcome.cast::<OwnedOutcome>()) });
    });
}

// -- conversions ---------------------------------------------------------------------------------

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Checks the `struct_size` a caller passed against the size this library knows.
fn check_size(what: &str, size: u32, ours: usize) -> Result<(), c_int> {
    if (size as usize) < ours {
        return Err(invalid(&format!(
            "{what}.struct_size is {size}, expected at least {ours}: initialize it with {what}_init"
        )));
    }
    Ok(())
}

/// The policy a C caller passed, validated.
///
/// # Safety
/// `p` is NULL or points to a readable `gracekill_policy` of at least `struct_size` bytes whose
/// `then` is NULL or valid for `then_len` reads.
unsafe fn read_policy(p: *const gracekill_policy) -> Result<Option<Policy>, c_int> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null; by the contract at least `struct_size` bytes are readable, and the
    // first field is `struct_size` itself (a `u32` at offset 0).
    let size = unsafe { p.cast::<u32>().read_unaligned() };
    check_size("gracekill_policy", size, size_of::<gracekill_policy>())?;
    // SAFETY: `struct_size` >= our size (checked), so the whole struct is readable.
    let c = unsafe { p.read_unaligned() };
    if c.then_len > MAX_STEPS - 1 {
        return Err(invalid(&format!(
            "invalid policy: then_len is {}, at most {} further steps are allowed",
            c.then_len,
            MAX_STEPS - 1
        )));
    }
    let then: &[gracekill_step] = if c.then_len == 0 {
        &[]
    } else if c.then.is_null() {
        return Err(invalid(
            "invalid policy: then is NULL but then_len is not 0",
        ));
    } else {
        // SAFETY: non-null, and valid for `then_len` (bounded above) reads by the contract;
        // the slice lives only during this call.
        unsafe { std::slice::from_raw_parts(c.then, c.then_len) }
    };
    let step = |signal: i32, grace_ms: u64| -> Result<Step, c_int> {
        let signal = Signal::from_raw(signal).map_err(|e| fail(&e))?;
        Ok(Step {
            signal,
            grace: Duration::from_millis(grace_ms),
        })
    };
    let mut steps = vec![step(c.signal, c.grace_ms)?];
    for s in then {
        steps.push(step(s.signal, s.grace_ms)?);
    }
    let kill_mode = match c.kill_mode {
        GRACEKILL_KILL_MODE_CONTROL_GROUP => KillMode::ControlGroup,
        GRACEKILL_KILL_MODE_MIXED => KillMode::Mixed,
        GRACEKILL_KILL_MODE_PROCESS => KillMode::Process,
        other => {
            return Err(invalid(&format!(
                "invalid policy: kill_mode {other} is not a GRACEKILL_KILL_MODE_* value"
            )));
        }
    };
    let mut policy = Policy::default();
    policy.steps = steps;
    policy.sighup = c.sighup;
    policy.kill_timeout = Duration::from_millis(c.kill_timeout_ms);
    policy.kill_mode = kill_mode;
    policy.validate().map_err(|e| fail(&e))?;
    Ok(Some(policy))
}

/// The options a C caller passed, or the defaults.
///
/// # Safety
/// `o` is NULL or points to a readable `gracekill_stop_options` of at least `struct_size`
/// bytes.
unsafe fn read_options(o: *const gracekill_stop_options) -> Result<gracekill_stop_options, c_int> {
    if o.is_null() {
        return Ok(gracekill_stop_options {
            struct_size: struct_size::<gracekill_stop_options>(),
            main_pid: 0,
            force_fallback: false,
            log_fn: None,
            log_user_data: std::ptr::null_mut(),
            log_level: GRACEKILL_LOG_INFO,
        });
    }
    // SAFETY: non-null; `struct_size` is the first field, a `u32` at offset 0.
    let size = unsafe { o.cast::<u32>().read_unaligned() };
    check_size(
        "gracekill_stop_options",
        size,
        size_of::<gracekill_stop_options>(),
    )?;
    // SAFETY: at least our size is readable (checked).
    let c = unsafe { o.read_unaligned() };
    if c.main_pid < 0 {
        return Err(invalid("invalid options: main_pid is negative"));
    }
    Ok(c)
}

/// A string for C: interior NULs (impossible in the engine's strings) become spaces.
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

impl OwnedOutcome {
    fn new(o: &Outcome) -> OwnedOutcome {
        let mut strings: Vec<CString> = Vec::new();
        // A CString's buffer is on the heap: moving the CString into `strings` (or `strings`
        // growing) does not move the bytes, so the pointer stays valid while it is owned.
        let mut keep = |s: &str| -> *const c_char {
            let c = c_string(s);
            let p = c.as_ptr();
            strings.push(c);
            p
        };
        let steps: Vec<gracekill_step_report> = o
            .steps
            .iter()
            .map(|s| gracekill_step_report {
                signal: s.signal.as_raw(),
                signal_name: keep(&s.signal.to_string()),
                at_ms: s.at_ms,
                signalled: s.signalled,
                via: s.via.map_or(std::ptr::null(), &mut keep),
            })
            .collect();
        let killed: Vec<gracekill_process> = o
            .killed
            .iter()
            .map(|k| gracekill_process {
                pid: k.pid,
                comm: keep(&k.comm),
                cmdline: keep(&k.cmdline),
            })
            .collect();
        let survivors: Vec<gracekill_survivor> = o
            .survivors
            .iter()
            .map(|s| gracekill_survivor {
                pid: s.pid,
                comm: keep(&s.comm),
                state: keep(&s.state),
                wchan: keep(&s.wchan),
                memory_released: s.memory_released,
                mrelease_error: s
                    .mrelease_error
                    .as_deref()
                    .map_or(std::ptr::null(), &mut keep),
            })
            .collect();
        let exits: Vec<gracekill_exit> = o
            .exits
            .iter()
            .map(|e| gracekill_exit {
                pid: e.pid,
                comm: keep(&e.comm),
                at_ms: e.at_ms,
                status_known: e.wait_status.is_some(),
                wait_status: e.wait_status.unwrap_or(0),
            })
            .collect();
        let public = gracekill_outcome {
            verdict: match o.outcome {
                Verdict::Empty => GRACEKILL_VERDICT_EMPTY,
                Verdict::Graceful => GRACEKILL_VERDICT_GRACEFUL,
                Verdict::Killed => GRACEKILL_VERDICT_KILLED,
                Verdict::Survivors => GRACEKILL_VERDICT_SURVIVORS,
                Verdict::Remaining => GRACEKILL_VERDICT_REMAINING,
            },
            exit_code: o.outcome.exit_code(),
            verdict_name: keep(o.outcome.as_str()),
            cgroup: keep(&o.cgroup),
            elapsed_ms: o.elapsed_ms,
            emptied: o.empty_at_ms.is_some(),
            empty_at_ms: o.empty_at_ms.unwrap_or(0.0),
            thawed: o.thawed,
            steps: steps.as_ptr(),
            steps_len: steps.len(),
            killed: killed.as_ptr(),
            killed_len: killed.len(),
            survivors: survivors.as_ptr(),
            survivors_len: survivors.len(),
            membership_proof: keep(o.membership_proof),
            json: keep(&o.to_json()),
            killed_total: o.killed_total,
            survivors_total: o.survivors_total,
            error_count: o.errors.count,
            first_error: o
                .errors
                .examples
                .first()
                .map_or(std::ptr::null(), |e| keep(e)),
            policy_source: keep(o.policy_source.as_str()),
            exits: exits.as_ptr(),
            exits_len: exits.len(),
        };
        // The Vecs' buffers do not move when the Vecs move into the struct.
        OwnedOutcome {
            public,
            _strings: strings,
            _steps: steps,
            _killed: killed,
            _survivors: survivors,
            _exits: exits,
        }
    }
}

// -- logging -------------------------------------------------------------------------------------

/// Forwards tracing events to a C callback. Installed with `with_default` for one call, so it
/// only ever runs on the thread that called `gracekill_stop`.
struct LogSink {
    f: unsafe extern "C" fn(*mut c_void, i32, *const c_char, *const c_char),
    user_data: *mut c_void,
    max: i32,
}

// SAFETY: `user_data` is an opaque token the library never dereferences; it is handed back to
// the caller's callback. The sink is installed as the *thread-local* default subscriber for the
// duration of one `gracekill_stop` call (the engine runs on a current-thread runtime on that
// same thread and spawns no threads), so the callback is only invoked on the caller's thread,
// as the header documents. The bounds are needed only because `tracing::Dispatch` demands them.
unsafe impl Send for LogSink {}
// SAFETY: as above; the sink has no interior mutability.
unsafe impl Sync for LogSink {}

fn level_number(level: &tracing::Level) -> i32 {
    match *level {
        tracing::Level::ERROR => GRACEKILL_LOG_ERROR,
        tracing::Level::WARN => GRACEKILL_LOG_WARN,
        tracing::Level::INFO => GRACEKILL_LOG_INFO,
        tracing::Level::DEBUG => GRACEKILL_LOG_DEBUG,
        tracing::Level::TRACE => GRACEKILL_LOG_TRACE,
    }
}

impl LogSink {
    fn subscriber(self) -> impl tracing::Subscriber + Send + Sync + 'static {
        use tracing_subscriber::filter::LevelFilter;
        use tracing_subscriber::layer::SubscriberExt as _;
        let filter = match self.max {
            i32::MIN..=0 => LevelFilter::OFF,
            GRACEKILL_LOG_ERROR => LevelFilter::ERROR,
            GRACEKILL_LOG_WARN => LevelFilter::WARN,
            GRACEKILL_LOG_INFO => LevelFilter::INFO,
            GRACEKILL_LOG_DEBUG => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        };
        tracing_subscriber::registry().with(self).with(filter)
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogSink {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        let mut line = Line::default();
        event.record(&mut line);
        let mut text = line.message;
        text.push_str(&line.fields);
        let target = c_string(meta.target());
        let message = c_string(&text);
        // SAFETY: `f` is the caller's callback, documented to be callable with its own
        // `user_data` and two NUL-terminated strings that live for the duration of the call
        // (they do: both CStrings outlive it). The callback must not unwind (header contract);
        // if it does, the `extern "C"` boundary aborts rather than unwinding through Rust.
        unsafe {
            (self.f)(
                self.user_data,
                level_number(meta.level()),
                target.as_ptr(),
                message.as_ptr(),
            )
        };
    }
}

/// An event's message and its other fields as ` key=value`.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl tracing::field::Visit for Line {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_keeps_the_kernels_errno() {
        let e = Error::Os {
            op: "open".into(),
            path: "/x".into(),
            errno: rustix::io::Errno::ACCESS,
        };
        assert_eq!(errno_for(&e), libc::EACCES);
        assert_eq!(errno_for(&Error::Input("x".into())), libc::EINVAL);
        assert_eq!(errno_for(&Error::NotFound("x".into())), libc::ENOENT);
        assert_eq!(errno_for(&Error::Unsupported("x".into())), libc::EOPNOTSUPP);
    }

    #[test]
    fn a_panic_becomes_an_error_code() {
        let rc = guarded(|| panic!("boom"));
        assert_eq!(rc, -libc::ENOTRECOVERABLE);
        // SAFETY: a failed call leaves this thread's message, a NUL-terminated string that stays
        // valid until the next gracekill call on this thread.
        let msg = unsafe { CStr::from_ptr(gracekill_last_error()) };
        assert!(msg.to_str().unwrap().contains("boom"));
    }

    #[test]
    fn outcome_strings_survive_the_move_into_the_box() {
        let mut o = Outcome::nothing("/jobs/web".into(), Verdict::Killed, "SIGTERM 1s".into());
        o.elapsed_ms = 12.5;
        o.empty_at_ms = Some(12.0);
        let rtmin3 = Signal::from_raw(37).unwrap();
        o.steps = vec![gracekill::report::StepReport::new(rtmin3, 0.1, 2)];
        o.killed = vec![gracekill::report::Killed::new(
            42,
            "app".into(),
            "app --serve".into(),
        )];
        o.killed_total = 1;
        o.policy_source = gracekill::task::PolicySource::Stored;
        o.errors
            .add("send SIGTERM to '/proc/7': operation not permitted");
        o.errors
            .add("send SIGTERM to '/proc/8': operation not permitted");
        o.membership_proof = "PIDFD_GET_INFO";
        let b = Box::new(OwnedOutcome::new(&o));
        let p: *mut gracekill_outcome = Box::into_raw(b).cast();
        // SAFETY: `p` came from Box::into_raw just above and is freed only at the end.
        let c = unsafe { &*p };
        // SAFETY: every string of an outcome is a NUL-terminated CString it owns.
        let s = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned();
        assert_eq!(c.exit_code, 3);
        assert_eq!(s(c.verdict_name), "killed");
        assert_eq!(s(c.cgroup), "/jobs/web");
        // SAFETY: the outcome holds one step, at `steps`, while it lives.
        let step = unsafe { &*c.steps };
        assert_eq!(
            (step.signal, s(step.signal_name)),
            (37, "SIGRTMIN+3".into())
        );
        assert!(step.via.is_null());
        // SAFETY: the outcome holds one killed process, at `killed`, while it lives.
        let k = unsafe { &*c.killed };
        assert_eq!((k.pid, s(k.cmdline)), (42, "app --serve".into()));
        assert_eq!(s(c.json), o.to_json());
        assert_eq!((c.killed_total, c.error_count), (1, 2));
        assert!(s(c.first_error).contains("not permitted"));
        assert_eq!(s(c.policy_source), "stored");
        // SAFETY: `p` is the outcome made above, not freed yet and not used afterwards.
        unsafe { gracekill_outcome_free(p) };
    }
}
