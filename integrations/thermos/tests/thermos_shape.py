"""A Thermos-shaped runner, written for these tests (no Aurora code): the classes and methods
gracekill_thermos patches, with the kill path of the upstream runner as the integration's docs
describe it:

- TaskRunner starts each process through a Process whose coordinator is a forked child that
  setsid()s and runs `bash -c <cmdline>` with subprocess.Popen, waits for it and records its
  return code (negative: killed by a signal -> KILLED, 0 -> SUCCESS, else FAILED).
- An executor kill (SIGUSR1 to the runner, or kill()) moves the task to CLEANING:
  _terminate_plan SIGTERMs the orphans and each process's wrapper pid; the runner then loops
  while _finalization_remaining() > 0 and has_running_processes().
- Whenever a coordinator records a terminal state, the runner calls kill_process, which
  SIGKILLs the coordinator's process group, the coordinator, the pid and its children.
- At the end, non-terminal processes are recorded KILLED with return code -1 and killed.
- `thermos kill` (TaskRunnerHelper.kill) SIGKILLs the runner, then kill_process for each
  process, and records KILLED -9.

The runner is a child subreaper and reaps once per loop iteration, as upstream does.
"""

import ctypes
import json
import os
import signal
import subprocess  # noqa: F401 (Process looks it up here at call time, as upstream does)
import sys
import time


class ProcessState(object):
    WAITING, FORKED, RUNNING, SUCCESS, KILLED, FAILED, LOST = range(7)
    NAMES = ["WAITING", "FORKED", "RUNNING", "SUCCESS", "KILLED", "FAILED", "LOST"]


TERMINAL = (ProcessState.SUCCESS, ProcessState.KILLED, ProcessState.FAILED, ProcessState.LOST)

# Tests only: seconds the runner's loop sleeps between reading the coordinators' updates and
# checking for running processes. Real Thermos has the same gap, a far narrower one; a
# coordinator that writes its last update and exits within it must still be read.
_CHECK_GAP = float(os.environ.get("THERMOS_SHAPE_CHECK_GAP", "0"))


class Record(object):
    """One update of one process run."""

    def __init__(self, **kw):
        self.state = kw.get("state")
        self.coordinator_pid = kw.get("coordinator_pid")
        self.pid = kw.get("pid")
        self.return_code = kw.get("return_code")


class PathSpec(object):
    def __init__(self, root, task_id, log_dir, process=None, run=None):
        self.root, self.task_id, self.log_dir = root, task_id, log_dir
        self.process, self.run = process, run

    def given(self, **kw):
        d = dict(root=self.root, task_id=self.task_id, log_dir=self.log_dir)
        d.update(process=self.process, run=self.run)
        d.update(kw)
        return PathSpec(**d)

    def getpath(self, name):
        if name == "checkpoint_path":
            return os.path.join(self.root, "checkpoints", self.task_id)
        if name == "process_checkpoint":
            return os.path.join(self.root, "checkpoints", self.task_id, "coordinator." + self.process)
        if name == "process_logdir":
            return os.path.join(self.log_dir, self.process, str(self.run))
        raise KeyError(name)


def set_subreaper():
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def children_of(pid):
    """The children of `pid`; none once it is gone, which can happen at any moment (upstream
    reads them through psutil, which turns that into NoSuchProcess and catches it)."""
    out = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for t in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out.extend(int(p) for p in f.read().split())
        except OSError:
            pass
    return out


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Process(object):
    def __init__(self, name, cmdline, pathspec, user=None):
        self._name = name
        self._cmdline = cmdline
        self._pathspec = pathspec
        self._user = user
        self._ckpt = pathspec.getpath("process_checkpoint")

    def name(self):
        return self._name

    def _write_process_update(self, **kw):
        with open(self._ckpt, "a") as f:
            f.write(json.dumps(kw) + "\n")

    def start(self):
        """Forks the coordinator; returns its pid to the runner."""
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                self.execute()
            except BaseException as e:  # noqa: BLE001 (report, never return into the runner)
                sys.stderr.write("coordinator: %r\n" % e)
                code = 1
            finally:
                os._exit(code)
        return pid

    def execute(self):
        os.setsid()
        if self._user is not None:
            import pwd

            pw = pwd.getpwnam(self._user)
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
        module = sys.modules[__name__]
        logdir = self._pathspec.getpath("process_logdir")
        with open(os.path.join(logdir, "stdout"), "ab") as out, open(
            os.path.join(logdir, "stderr"), "ab"
        ) as err:
            popen = module.subprocess.Popen(
                ["/bin/bash", "-c", self._cmdline],
                stdin=module.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                close_fds=True,
            )
        self._write_process_update(state=ProcessState.RUNNING, pid=popen.pid)
        rc = popen.wait()
        if rc < 0:
            state = ProcessState.KILLED
        elif rc == 0:
            state = ProcessState.SUCCESS
        else:
            state = ProcessState.FAILED
        self._write_process_update(state=state, return_code=rc)


class State(object):
    class Header(object):
        def __init__(self, task_id):
            self.task_id = task_id

    def __init__(self, task_id):
        self.header = State.Header(task_id)
        self.processes = {}  # name -> [Record, ...] (one per run; the last is current)
        self.runner_pid = os.getpid()


class TaskRunnerHelper(object):
    @classmethod
    def scan_process(cls, state, process_name):
        run = state.processes[process_name][-1]
        coordinator = run.coordinator_pid if run.coordinator_pid and alive(run.coordinator_pid) else None
        pid = run.pid if run.pid and alive(run.pid) else None
        tree = set()
        if pid:
            todo = [pid]
            while todo:
                for c in children_of(todo.pop()):
                    tree.add(c)
                    todo.append(c)
        return coordinator, pid, tree

    @classmethod
    def safe_signal(cls, pid, sig):
        try:
            os.kill(pid, sig)
        except OSError:
            pass

    @classmethod
    def terminate_pid(cls, pid):
        cls.safe_signal(pid, signal.SIGTERM)

    @classmethod
    def kill_pid(cls, pid):
        cls.safe_signal(pid, signal.SIGKILL)

    @classmethod
    def kill_group(cls, pgrp):
        cls.safe_signal(-pgrp, signal.SIGKILL)

    @classmethod
    def terminate_orphans(cls, state):
        coordinators = {r[-1].coordinator_pid for r in state.processes.values()}
        for pid in children_of(os.getpid()):
            if pid not in coordinators and alive(pid):
                cls.terminate_pid(pid)

    @classmethod
    def terminate_process(cls, state, process_name):
        _, pid, _ = cls.scan_process(state, process_name)
        if pid:
            cls.terminate_pid(pid)
        return bool(pid)

    @classmethod
    def kill_process(cls, state, process_name):
        coordinator_pgid = state.processes[process_name][-1].coordinator_pid
        coordinator, pid, tree = cls.scan_process(state, process_name)
        if coordinator_pgid:
            cls.kill_group(coordinator_pgid)
        if coordinator:
            cls.kill_pid(coordinator)
        if pid:
            cls.kill_pid(pid)
        for c in tree:
            cls.kill_pid(c)
        return bool(coordinator or pid or tree)

    @classmethod
    def reap_children(cls):
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    @classmethod
    def kill(cls, task_id, checkpoint_root, force=False):
        """`thermos kill`: SIGKILL the runner, kill every process, record KILLED -9 (or LOST for
        a process with nothing left to kill). Returns what it recorded."""
        path = os.path.join(checkpoint_root, "checkpoints", task_id, "runner.json")
        with open(path) as f:
            saved = json.load(f)
        state = State(saved["task_id"])
        for name, runs in saved["processes"].items():
            state.processes[name] = [Record(**r) for r in runs]
        if force:
            cls.kill_pid(saved["runner_pid"])
        result = {}
        for name in state.processes:
            if cls.kill_process(state, name):
                result[name] = {"state": "KILLED", "return_code": -9}
            else:
                result[name] = {"state": "LOST", "return_code": None}
        return result


class Plan(object):
    def __init__(self):
        self.running = []


class Task(object):
    def __init__(self, processes, finalization_wait):
        self.processes = processes  # [(name, cmdline)]
        self._finalization_wait = finalization_wait

    def finalization_wait(self):
        class Value(object):
            def __init__(self, v):
                self.v = v

            def get(self):
                return self.v

        return Value(self._finalization_wait)


class Clock(object):
    def time(self):
        return time.time()

    def sleep(self, seconds):
        time.sleep(seconds)


class TaskRunner(object):
    MAX_ITERATION_WAIT = 0.1

    def __init__(self, task, checkpoint_root, task_id, user=None):
        self.task = task
        self._task_id = task_id
        self._user = user
        self._clock = Clock()
        self._pathspec = PathSpec(checkpoint_root, task_id, os.path.join(checkpoint_root, "logs"))
        self.state = State(task_id)
        self._regular_plan = Plan()
        self._preemption_deadline = None
        self._finalization_start = None
        self._kill_requested = None
        self._terminal = False
        self._offsets = {}
        os.makedirs(self._pathspec.getpath("checkpoint_path"), exist_ok=True)

    # -- state --------------------------------------------------------------------------------

    def _current_process_run(self, name):
        runs = self.state.processes.get(name)
        return runs[-1] if runs else None

    def _save(self):
        path = os.path.join(self._pathspec.getpath("checkpoint_path"), "runner.json")
        with open(path + ".tmp", "w") as f:
            json.dump(
                {
                    "task_id": self._task_id,
                    "runner_pid": os.getpid(),
                    "processes": {
                        n: [vars(r) for r in runs] for n, runs in self.state.processes.items()
                    },
                },
                f,
            )
        os.rename(path + ".tmp", path)

    def _set_process_status(self, name, state, **kw):
        run = self._current_process_run(name)
        was_terminal = run.state in TERMINAL
        run.state = state
        for k, v in kw.items():
            setattr(run, k, v)
        self._save()
        if state in TERMINAL and not was_terminal:
            # Upstream's process handlers (on_success, on_failed, on_killed...) -> _cleanup.
            TaskRunnerHelper.kill_process(self.state, name)
            if name in self._regular_plan.running:
                self._regular_plan.running.remove(name)

    def collect_updates(self, timeout=None):
        for name, _ in self.task.processes:
            spec = self._pathspec.given(process=name)
            path = spec.getpath("process_checkpoint")
            try:
                with open(path) as f:
                    f.seek(self._offsets.get(name, 0))
                    lines = f.readlines()
                    self._offsets[name] = f.tell()
            except OSError:
                continue
            for line in lines:
                if not line.endswith("\n"):
                    self._offsets[name] -= len(line)
                    break
                u = json.loads(line)
                run = self._current_process_run(name)
                if run.state in TERMINAL:
                    continue
                if u["state"] == ProcessState.RUNNING:
                    run.state, run.pid = ProcessState.RUNNING, u["pid"]
                    self._save()
                else:
                    self._set_process_status(name, u["state"], return_code=u.get("return_code"))

    # -- what gracekill_thermos patches ---------------------------------------------------------

    def _finalization_remaining(self):
        if self._preemption_deadline:
            return max(0, self._preemption_deadline - self._clock.time())
        if self._finalization_start is None:
            return sys.float_info.max
        waited = max(0, self._clock.time() - self._finalization_start)
        return max(0, self.task.finalization_wait().get() - waited)

    def has_running_processes(self):
        return any(any(TaskRunnerHelper.scan_process(self.state, n)) for n in self.state.processes)

    def _terminate_plan(self, plan):
        TaskRunnerHelper.terminate_orphans(self.state)
        for process in plan.running:
            run = self._current_process_run(process)
            if run and run.state in (ProcessState.FORKED, ProcessState.RUNNING):
                TaskRunnerHelper.terminate_process(self.state, process)

    # -- the loop -------------------------------------------------------------------------------

    def kill(self, preemption_wait):
        self._kill_requested = preemption_wait

    def is_terminal(self):
        return self._terminal

    def run(self):
        set_subreaper()
        signal.signal(signal.SIGUSR1, lambda s, f: self.kill(self._preemption_wait))
        for name, cmdline in self.task.processes:
            spec = self._pathspec.given(process=name, run=0)
            os.makedirs(spec.getpath("process_logdir"), exist_ok=True)
            self.state.processes[name] = [Record(state=ProcessState.WAITING)]
            proc = Process(name, cmdline, spec, user=self._user)
            pid = proc.start()
            self._set_process_status(name, ProcessState.FORKED, coordinator_pid=pid)
            self._regular_plan.running.append(name)
        stage = "ACTIVE"
        while True:
            self.collect_updates()
            if _CHECK_GAP:
                time.sleep(_CHECK_GAP)
            if stage == "ACTIVE":
                if self._kill_requested is not None:
                    self._preemption_deadline = self._clock.time() + self._kill_requested
                    stage = "CLEANING"
                    self._finalization_start = self._clock.time()
                    self._terminate_plan(self._regular_plan)
                elif not self._regular_plan.running:
                    stage = "CLEANING"
                    self._finalization_start = self._clock.time()
                    self._terminate_plan(self._regular_plan)
            elif stage == "CLEANING":
                if not (self._finalization_remaining() > 0 and self.has_running_processes()):
                    break
            TaskRunnerHelper.reap_children()
            self._clock.sleep(self.MAX_ITERATION_WAIT)
        # Terminal: non-terminal processes become KILLED -1 and are killed (_kill()).
        for name in self.state.processes:
            run = self._current_process_run(name)
            if run.state not in TERMINAL:
                self._set_process_status(name, ProcessState.KILLED, return_code=-1)
            else:
                TaskRunnerHelper.kill_process(self.state, name)
        self._save()
        self._terminal = True
        return {
            n: {"state": ProcessState.NAMES[r[-1].state], "return_code": r[-1].return_code}
            for n, r in self.state.processes.items()
        }
