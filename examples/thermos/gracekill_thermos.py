"""Stop a Thermos process the way TaskRunnerHelper.terminate_process + kill_process should have.

Thermos sends SIGTERM to one pid, the process's `bash -c <cmdline>` wrapper; bash dies at once
without passing the signal on, Thermos sees "process killed" and SIGKILLs the coordinator's
process group, with the real application still inside and still flushing. This recipe treats
the process's cgroup as the process instead: `gracekill stop --json` signals every process in it
(through pidfds proven to be members), waits event-driven for the cgroup to empty for the whole
finalization wait, and only then SIGKILLs what is left, and reports what happened.

The outcome maps onto Thermos process states:

    graceful / empty  -> KILLED, return_code = the process's own exit status (from `reap`)
    killed            -> KILLED, return_code = -9 (what TaskRunnerHelper.kill records)
    survivors         -> LOST   (processes outlived SIGKILL, e.g. stuck in D state)

Standard library only; Python 3.6+. Use it as a module (`stop_process`) or from the command line:

    python3 gracekill_thermos.py [--gracekill PATH] [--finalization-wait SECS]
                                 [--kill-timeout SECS] [--signal SIG] CGROUP

which prints one JSON object: {"state", "return_code", "outcome"}; exit status 0 for KILLED,
1 for LOST, 2 when gracekill refused or failed (nothing was signalled for a refusal).
"""

import argparse
import json
import subprocess
import sys

# Thermos' ProcessState names (gen.apache.thermos.ttypes.ProcessState).
KILLED = "KILLED"
LOST = "LOST"

# Aurora's defaults: Task.finalization_wait is 30 s; gracekill's kill timeout is 10 s.
DEFAULT_FINALIZATION_WAIT = 30.0
DEFAULT_KILL_TIMEOUT = 10.0


class GracekillError(Exception):
    """gracekill could not stop the process: a refused target, bad input, or an OS error."""

    def __init__(self, exit_code, message):
        super().__init__(message)
        self.exit_code = exit_code


class StopResult(object):
    """What the Thermos runner should checkpoint for the process."""

    __slots__ = ("state", "return_code", "outcome")

    def __init__(self, state, return_code, outcome):
        self.state = state  # KILLED or LOST
        self.return_code = return_code  # int or None
        self.outcome = outcome  # gracekill's JSON outcome, as a dict

    def as_dict(self):
        return {"state": self.state, "return_code": self.return_code, "outcome": self.outcome}

    def __repr__(self):
        return "StopResult(state=%r, return_code=%r, outcome=%r)" % (
            self.state,
            self.return_code,
            self.outcome.get("outcome"),
        )


def _millis(seconds):
    return "%dms" % max(0, int(round(seconds * 1000)))


def map_outcome(outcome, reap=None):
    """Maps a `gracekill stop --json` outcome to a StopResult.

    `reap`, if given, is called (only once the cgroup is empty, so it never blocks for long) to
    collect the exit status of the process Thermos forked, e.g. `lambda: os.waitpid(pid, 0)`
    wrapped to return a Thermos return code. With a `bash -c` wrapper that is the wrapper's
    status; with `exec app` in the cmdline it is the app's own.
    """
    verdict = outcome["outcome"]
    if verdict in ("graceful", "empty"):
        return StopResult(KILLED, reap() if reap else None, outcome)
    if verdict == "killed":
        if reap:
            reap()  # collect the zombie; Thermos records -9 for a kill regardless
        return StopResult(KILLED, -9, outcome)
    if verdict == "survivors":
        return StopResult(LOST, None, outcome)
    raise ValueError("unknown gracekill outcome %r" % verdict)


def stop_process(
    cgroup,
    finalization_wait=DEFAULT_FINALIZATION_WAIT,
    kill_timeout=DEFAULT_KILL_TIMEOUT,
    signal="TERM",
    gracekill="gracekill",
    reap=None,
):
    """Stops the Thermos process whose processes live in `cgroup` (a path under the cgroup2
    mount, a path relative to it, or a gracekill task name) and returns a StopResult.

    The process gets `signal` and the whole `finalization_wait` (seconds) to exit; what is left
    then gets SIGKILL, and `kill_timeout` more seconds to disappear. Blocks for at most about
    finalization_wait + kill_timeout. Raises GracekillError when gracekill refuses (the root
    cgroup, the runner's own cgroup, a path outside the mount) or fails.
    """
    cmd = [
        gracekill,
        "stop",
        "--json",
        "--signal",
        signal,
        "--grace",
        _millis(finalization_wait),
        "--kill-timeout",
        _millis(kill_timeout),
        cgroup,
    ]
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            # gracekill never hangs (it reports survivors instead); this is a backstop only.
            timeout=finalization_wait + kill_timeout + 30,
        )
    except subprocess.TimeoutExpired:
        raise GracekillError(1, "gracekill stop %s did not return" % cgroup)
    except OSError as e:
        raise GracekillError(1, "cannot run %s: %s" % (gracekill, e))
    if proc.returncode not in (0, 3, 4):
        message = proc.stderr.strip() or "gracekill stop exited with %d" % proc.returncode
        raise GracekillError(proc.returncode, message)
    return map_outcome(json.loads(proc.stdout), reap)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gracekill", default="gracekill", help="the gracekill binary")
    p.add_argument(
        "--finalization-wait",
        type=float,
        default=DEFAULT_FINALIZATION_WAIT,
        help="seconds the process may take to exit after the stop signal (Thermos' "
        "finalization_wait)",
    )
    p.add_argument(
        "--kill-timeout",
        type=float,
        default=DEFAULT_KILL_TIMEOUT,
        help="seconds to wait for the cgroup to empty after SIGKILL",
    )
    p.add_argument("--signal", default="TERM", help="the stop signal")
    p.add_argument("cgroup", help="the process's cgroup")
    args = p.parse_args(argv)
    try:
        result = stop_process(
            args.cgroup,
            finalization_wait=args.finalization_wait,
            kill_timeout=args.kill_timeout,
            signal=args.signal,
            gracekill=args.gracekill,
        )
    except GracekillError as e:
        sys.stderr.write("gracekill_thermos: %s\n" % e)
        return 2
    print(json.dumps(result.as_dict()))
    return 0 if result.state == KILLED else 1


if __name__ == "__main__":
    sys.exit(main())
