"""Starting gracekill stops without blocking the runner, and turning their outcomes into what
Thermos records for a process (state and return code)."""

import json
import os
import select
import signal
import subprocess

# Thermos' ProcessState names (gen.apache.thermos.ttypes.ProcessState).
KILLED = "KILLED"
LOST = "LOST"


class StopRecord(object):
    """The files through which the runner's stop of one process run reaches its coordinator, in
    the task's checkpoint directory (written by the runner, read by the coordinator):

    - `gracekill.<process>.<run>.stopping`: a stop was requested, with its grace and kill
      timeout, and the stopper's pid once it runs. Written *before* the first signal, so a
      coordinator whose wrapper dies of that signal knows the process is being stopped.
    - `gracekill.<process>.<run>.json`: the stop's outcome (`gracekill stop --json`, its
      stdout), complete once the stopper has exited.
    """

    def __init__(self, checkpoint_dir, cgroup):
        base = "gracekill.%s.%d" % (cgroup_basename(cgroup), cgroup.run)
        self.stopping = os.path.join(checkpoint_dir, base + ".stopping")
        self.outcome = os.path.join(checkpoint_dir, base + ".json")

    def write(self, grace, kill_timeout, pid=None):
        _write_atomic(
            self.stopping,
            json.dumps({"grace": grace, "kill_timeout": kill_timeout, "pid": pid}),
        )

    def load(self):
        """The request ({grace, kill_timeout, pid}), or None if no stop was requested."""
        try:
            with open(self.stopping) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def read_outcome(self):
        try:
            with open(self.outcome) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def wait_outcome(self, timeout):
        """The outcome, once the stopper has written it: waits for the stopper to exit through a
        pidfd (Python 3.9+; event-driven), at most `timeout` seconds. None if there is none."""
        pid = (self.load() or {}).get("pid")
        if pid and hasattr(os, "pidfd_open"):
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                fd = None
            if fd is not None:
                try:
                    # A whole outcome means the stopper is done, and the pidfd may name a
                    # reused pid: nothing to wait for.
                    if self.read_outcome() is None:
                        p = select.poll()
                        p.register(fd, select.POLLIN)
                        p.poll(int(timeout * 1000))
                finally:
                    os.close(fd)
        return self.read_outcome()


def cgroup_basename(cgroup):
    from .cgroup import safe_name

    return safe_name(cgroup.process)


def _millis(seconds):
    return "%dms" % max(0, int(round(seconds * 1000)))


def start_stop(gracekill, cgroup, record, grace, kill_timeout, signal_name="TERM"):
    """Starts `gracekill stop --json` of `cgroup` in the background and returns its Popen; the
    caller must not wait for it (the runner's loop reaps it with its other children).

    The record is written first ("requested", before any signal), then gracekill started with
    its stdout in the outcome file, then its pid added to the record. A reader takes the
    outcome only once that pid has exited (see StopRecord.wait_outcome)."""
    record.write(grace, kill_timeout)
    argv = [
        gracekill,
        "stop",
        "--json",
        "--signal",
        signal_name,
        "--grace",
        _millis(grace),
        "--kill-timeout",
        _millis(kill_timeout),
        cgroup.path,
    ]
    with open(record.outcome, "w") as out:
        os.chmod(record.outcome, 0o644)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            close_fds=True,
            # Not in the runner's process group or session: a signal meant for the runner (or
            # the executor's killpg) must not cut the stop short.
            start_new_session=True,
        )
    record.write(grace, kill_timeout, proc.pid)
    return proc


def kill_now(gracekill, cgroup, kill_timeout):
    """Ends everything in `cgroup` at once (`cgroup.kill`, through gracekill) and waits for the
    outcome: the force path (`thermos kill`, or a deadline already passed). Returns the outcome
    dict, or None when gracekill failed (the error is in the exception)."""
    argv = [
        gracekill,
        "stop",
        "--json",
        "--grace",
        "0",
        "--kill-timeout",
        _millis(kill_timeout),
        cgroup.path,
    ]
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        timeout=kill_timeout + 30,
    )
    if proc.returncode not in (0, 3, 4):
        raise RuntimeError(
            "gracekill stop %s: %s" % (cgroup.path, proc.stderr.strip() or proc.returncode)
        )
    return json.loads(proc.stdout)


def status_of(outcome, wrapper_rc):
    """What Thermos records for a process whose stop ended with `outcome`: (state, return_code).

    - `graceful`/`empty`: KILLED, with the application's own exit status: the status of the
      last process of the task to exit (the one whose exit emptied its cgroup), from the exit
      timeline; the wrapper's status where the kernel could not say (before Linux 6.15).
    - `killed`: KILLED, with the status of the last process to exit (-9 for SIGKILL, also when
      the kernel could not say).
    - `survivors`: LOST (processes outlived SIGKILL: stuck in the kernel).
    Return codes follow Thermos (and subprocess): an exit code, or minus the signal number.
    """
    verdict = outcome.get("outcome")
    if verdict == "survivors":
        return LOST, None
    exits = outcome.get("exits") or []
    rc = _return_code(exits[-1]) if exits else None
    if rc is None:
        rc = -9 if verdict == "killed" else wrapper_rc
    return KILLED, rc


def _return_code(exit_entry):
    if exit_entry.get("code") is not None:
        return int(exit_entry["code"])
    sig = exit_entry.get("signal")
    if sig:
        try:
            return -int(getattr(signal, sig))
        except (AttributeError, TypeError, ValueError):
            return None
    return None


def _write_atomic(path, text):
    tmp = path + ".tmp%d" % os.getpid()
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)
