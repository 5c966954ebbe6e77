"""Starting gracekill stops without blocking the runner, and turning their outcomes into what
Thermos records for a process (state and return code)."""

import json
import os
import select
import signal
import subprocess
import time

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

    def clear(self):
        """Withdraws the request (the stop could not start)."""
        for path in (self.stopping, self.outcome):
            try:
                os.unlink(path)
            except OSError:
                pass

    def load(self):
        """The request ({grace, kill_timeout, pid}), or None if no stop was requested."""
        return _read_json(self.stopping)

    def read_outcome(self):
        """The outcome, or None while there is none (or only part of one)."""
        return _read_json(self.outcome)

    def stopper_pid(self, timeout):
        """The stopper's pid, once the runner has recorded it (right after starting it, before
        it can have signalled anything), waiting at most `timeout` seconds for that."""
        deadline = time.monotonic() + timeout
        while True:
            pid = (self.load() or {}).get("pid")
            if pid or time.monotonic() >= deadline:
                return pid
            time.sleep(0.01)

    def stopper_fd(self, timeout):
        """A pidfd for the stopper (Python 3.9+), or None (no pidfd_open, no pid, or gone)."""
        pid = self.stopper_pid(timeout)
        if not pid or not hasattr(os, "pidfd_open"):
            return None
        try:
            return os.pidfd_open(pid)
        except OSError:
            return None

    def wait_outcome(self, stopper_fd, timeout):
        """The outcome, once the stopper has exited (its stdout is then complete), waiting at
        most `timeout` seconds: on its pidfd where there is one (event-driven); on Python 3.6 to
        3.8, which have no pidfd_open, by looking for /proc/<pid> every 50 ms."""
        out = self.read_outcome()
        if out is not None:
            return out  # complete: the stopper is done (and its pid may be reused)
        if stopper_fd is not None:
            p = select.poll()
            p.register(stopper_fd, select.POLLIN)
            p.poll(int(timeout * 1000))
            return self.read_outcome()
        pid = self.stopper_pid(1)
        deadline = time.monotonic() + timeout
        while pid and os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
            if self.read_outcome() is not None:
                break  # complete JSON: the stopper is done (its pid may even be reused)
            time.sleep(0.05)
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


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_atomic(path, text):
    tmp = path + ".tmp%d" % os.getpid()
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)
