"""Runs one scenario of the Thermos-shaped runner (thermos_shape.py), with or without
gracekill_thermos, and prints one JSON object: what the application and its daemon did, what
the runner recorded, how long the kill took.

    python3 scenario.py --scratch DIR --app flushing|stubborn|natural
        --kill executor|thermos-kill|none [--integration --root CGROUP --gracekill BIN]
        [--preemption-wait S] [--finalization-wait S] [--user NAME]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import thermos_shape  # noqa: E402


def install(args):
    if not args.integration:
        return
    import gracekill_thermos

    class Ns(object):
        TaskRunner = thermos_shape.TaskRunner
        TaskRunnerHelper = thermos_shape.TaskRunnerHelper
        Process = thermos_shape.Process
        ProcessState = thermos_shape.ProcessState
        subprocess_module_owner = thermos_shape

    gracekill_thermos.install(
        root=args.root, gracekill=args.gracekill, kill_timeout=args.kill_timeout, thermos=Ns
    )


def as_runner(args):
    """The runner process: runs the task until it ends, prints the recorded states."""
    install(args)
    if args.runner_cgroup:
        with open(os.path.join(args.runner_cgroup, "cgroup.procs"), "w") as f:
            f.write("0")
    if args.user:
        import pwd

        pw = pwd.getpwnam(args.user)
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    app = os.path.join(HERE, "app.py")
    # The system's python for the app: a role user may not be able to read a private one.
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    cmdline = "%s %s %s %s; echo wrapper-done > %s/wrapper-done" % (
        python,
        app,
        args.scratch,
        args.app,
        args.scratch,
    )
    task = thermos_shape.Task([("app", cmdline)], finalization_wait=args.finalization_wait)
    runner = thermos_shape.TaskRunner(task, os.path.join(args.scratch, "ckpt"), "task-1")
    runner._preemption_wait = args.preemption_wait
    print(json.dumps(runner.run()), flush=True)


def count_zombies(scratch):
    """Zombies among the children of the coordinator and of the runner, while the task runs."""
    path = os.path.join(scratch, "ckpt", "checkpoints", "task-1", "runner.json")
    wait_for(path, 20)
    with open(path) as f:
        saved = json.load(f)
    parents = [saved["runner_pid"]] + [r[-1]["coordinator_pid"] for r in saved["processes"].values()]
    n = 0
    for parent in parents:
        for child in thermos_shape.children_of(parent):
            try:
                with open("/proc/%d/stat" % child) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        n += 1
            except (OSError, IndexError):
                pass
    return n


def wait_for(path, limit):
    t = time.monotonic()
    while not os.path.exists(path):
        if time.monotonic() - t > limit:
            raise SystemExit("timed out waiting for %s" % path)
        time.sleep(0.01)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--scratch", required=True)
    p.add_argument("--app", choices=("flushing", "stubborn", "natural"), default="flushing")
    p.add_argument("--kill", choices=("executor", "thermos-kill", "none"), default="executor")
    p.add_argument("--integration", action="store_true")
    p.add_argument("--root")
    p.add_argument("--gracekill")
    p.add_argument("--kill-timeout", type=float, default=5)
    p.add_argument("--preemption-wait", type=float, default=10)
    p.add_argument("--finalization-wait", type=float, default=10)
    p.add_argument("--runner-cgroup", help="cgroup the runner joins (not the tasks' root)")
    p.add_argument("--user", help="run the runner as this user (a delegated role user)")
    p.add_argument("--orphans", type=int, default=0, help="short-lived orphans the app makes")
    p.add_argument("--as-runner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.as_runner:
        return as_runner(args)

    argv = [sys.executable, os.path.abspath(__file__), "--as-runner"] + sys.argv[1:]
    env = dict(os.environ, APP_ORPHANS=str(args.orphans)) if args.orphans else None
    # The runner's stderr goes to a file, and into the result when the runner failed: a test that
    # fails in a VM guest then says why.
    err_path = os.path.join(args.scratch, "runner.stderr")
    with open(err_path, "w") as err:
        runner = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=err, universal_newlines=True, env=env
        )
    wait_for(os.path.join(args.scratch, "ready"), 20)
    zombies = count_zombies(args.scratch)
    t = time.monotonic()
    killer_result = None
    if args.kill == "executor":
        runner.send_signal(signal.SIGUSR1)
    elif args.kill == "thermos-kill":
        # Another process, as the `thermos kill` CLI is: it loads the runner's state.
        install(args)
        killer_result = thermos_shape.TaskRunnerHelper.kill(
            "task-1", os.path.join(args.scratch, "ckpt"), force=True
        )
    out, _ = runner.communicate(timeout=120)
    took = time.monotonic() - t
    recorded = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
    daemon_pid = int(open(os.path.join(args.scratch, "daemon.pid")).read())
    # Let a daemon that was merely signalled finish exiting before asking if it is alive.
    time.sleep(0.2)
    result = {
        "flushed": os.path.exists(os.path.join(args.scratch, "flushed")),
        "term_seen": os.path.exists(os.path.join(args.scratch, "term-seen")),
        "daemon_flushed": os.path.exists(os.path.join(args.scratch, "daemon-flushed")),
        "daemon_left_running": thermos_shape.alive(daemon_pid),
        "recorded": recorded if killer_result is None else killer_result,
        "runner_exit": runner.returncode,
        "took": took,
        "zombies": zombies,
    }
    if runner.returncode != 0:
        with open(err_path) as f:
            result["runner_stderr"] = f.read()[-4000:]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
