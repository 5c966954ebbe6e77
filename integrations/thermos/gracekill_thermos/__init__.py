"""gracekill for Apache Aurora's Thermos: every Thermos process in its own cgroup, stopped
gracefully by gracekill instead of SIGTERM-to-the-wrapper-then-SIGKILL-the-group.

Enable it in the runner's entry point (and in the `thermos` CLI, for `thermos kill`), before a
TaskRunner is built:

    import gracekill_thermos
    gracekill_thermos.install()

What changes (standard library only; Python 3.6+, pidfd waits on 3.9+):

- Start: the coordinator creates the cgroup `<root>/<task_id>/<process>.<run>` and its
  `bash -c` wrapper joins it between fork and exec, so the process and everything it forks,
  setsid'd daemons included, run inside it from their first instruction.
- `TaskRunner._terminate_plan` (executor kill, task end): starts one `gracekill stop` per running
  process, all at once, in the background; the grace is what Thermos allows: `preemption_wait`
  for an executor kill, `finalization_wait` when the task ends by itself.
- `TaskRunnerHelper.kill_process`: while time remains, never SIGKILLs anything; a process whose
  wrapper exited but whose cgroup is still populated is stopped gracefully. Once Thermos' own
  deadline has passed, or from `thermos kill` (no runner in this process), it ends everything
  at once through `cgroup.kill`.
- `TaskRunnerHelper.terminate_orphans`: orphans inside a process's cgroup are left to its stop.
- `TaskRunner.has_running_processes`: a process runs while its cgroup is populated.
- The coordinator records what really happened: it waits for the cgroup to empty and for the
  stop's outcome, then writes KILLED with the application's own exit status (or -9 if the final
  kill was needed), or LOST if processes outlived SIGKILL.

Configuration (environment, or arguments to install()):
    GRACEKILL_THERMOS_ROOT  cgroup under which task cgroups are made, relative to the cgroup2
                            mount or absolute (default /gracekill/thermos)
    GRACEKILL_BIN           the gracekill binary (default: gracekill on PATH)
    GRACEKILL_KILL_TIMEOUT  seconds allowed after SIGKILL (default 10)
"""

import logging
import os
import shutil
import signal

from . import cgroup as _cg
from . import reaper as _reaper
from . import stops as _stops
from .cgroup import ProcessCgroup, cgroup_of, mount
from .stops import KILLED, LOST, StopRecord, status_of

__all__ = [
    "install",
    "Config",
    "ProcessCgroup",
    "StopRecord",
    "status_of",
    "KILLED",
    "LOST",
    "mount",
]

log = logging.getLogger("gracekill_thermos")


class Config(object):
    """Where task cgroups live and how they are stopped."""

    def __init__(self, root=None, gracekill=None, kill_timeout=None):
        # By default below the runner's own cgroup: under Mesos that is the container's `leaf`,
        # so the task's processes stay inside the container's limits and its destroy.
        root = (
            root
            or os.environ.get("GRACEKILL_THERMOS_ROOT")
            or os.path.join(_cg.own_cgroup(), "gracekill")
        )
        m = mount()
        if not (root == m or root.startswith(m.rstrip("/") + "/")):
            root = os.path.join(m, root.lstrip("/"))
        self.root = os.path.normpath(root)
        self.gracekill = gracekill or os.environ.get("GRACEKILL_BIN") or "gracekill"
        found = shutil.which(self.gracekill)
        if found is None:
            # Said when the runner starts, not when a task must be stopped.
            raise RuntimeError(
                "gracekill_thermos: the gracekill binary %r was not found (set GRACEKILL_BIN)"
                % self.gracekill
            )
        self.gracekill = found
        self.kill_timeout = float(
            kill_timeout
            if kill_timeout is not None
            else os.environ.get("GRACEKILL_KILL_TIMEOUT", "10")
        )

    def cgroup(self, task_id, process, run):
        return ProcessCgroup(self.root, task_id, process, run)


_config = None
# The TaskRunner of this process, if it is a runner (None in `thermos kill` and coordinators
# never use it).
_runner = None
# Stops started by this runner: cgroup path -> Popen.
_stopping = {}


def install(root=None, gracekill=None, kill_timeout=None, thermos=None):
    """Patches Thermos' runner, helper and process classes. `thermos` is a namespace with
    `TaskRunner`, `TaskRunnerHelper`, `Process` and `ProcessState` (defaults to the modules in
    `apache.thermos.core` and `gen.apache.thermos.ttypes`). Idempotent."""
    global _config
    if thermos is None:
        thermos = _upstream()
    if getattr(thermos.TaskRunnerHelper, "_gracekill_installed", False):
        return
    _config = Config(root, gracekill, kill_timeout)
    _patch_process(thermos)
    _patch_runner(thermos)
    _patch_helper(thermos)
    thermos.TaskRunnerHelper._gracekill_installed = True


def _upstream():
    from apache.thermos.core import helper, process, runner
    from gen.apache.thermos import ttypes

    class Ns(object):
        TaskRunner = runner.TaskRunner
        TaskRunnerHelper = helper.TaskRunnerHelper
        Process = process.Process
        ProcessState = ttypes.ProcessState
        subprocess_module_owner = process

    return Ns


# -- the coordinator side ---------------------------------------------------------------------


def _process_cgroup(proc):
    """The cgroup of a thermos Process (coordinator side), from its pathspec."""
    pathspec = proc._pathspec
    task_id = os.path.basename(pathspec.getpath("checkpoint_path"))
    run = int(os.path.basename(pathspec.getpath("process_logdir")))
    return _config.cgroup(task_id, proc.name(), run), pathspec.getpath("checkpoint_path")


def _patch_process(thermos):
    Process = thermos.Process
    owner = getattr(thermos, "subprocess_module_owner", None)
    orig_execute = Process.execute
    orig_update = Process._write_process_update

    def execute(self):
        # In the coordinator (forked by the runner), before it setsid()s, drops privileges and
        # starts `bash -c`: create the cgroup and open cgroup.procs while still privileged.
        cg, ckpt_dir = _process_cgroup(self)
        cg.create()
        procs = cg.open_procs()
        self._gracekill = (cg, StopRecord(ckpt_dir, cg))
        # The task's orphans are reparented to the coordinator, not the runner, so it can reap
        # them the moment they exit: the kernel keeps a process's exit status for gracekill's
        # report only once it is reaped (the runner reaps once per loop iteration).
        _reaper.become_subreaper()

        def join():
            os.write(procs, b"0")

        module = owner if owner is not None else _import_process_module()
        real = module.subprocess
        module.subprocess = _JoiningSubprocess(real, join, lambda: _close(procs))
        try:
            return orig_execute(self)
        finally:
            module.subprocess = real
            _close(procs)

    def write_process_update(self, **kw):
        gk = getattr(self, "_gracekill", None)
        if gk is not None and "return_code" in kw and "state" in kw:
            kw = _final_update(gk, kw, thermos.ProcessState)
        return orig_update(self, **kw)

    Process.execute = execute
    Process._write_process_update = write_process_update


def _final_update(gk, kw, ProcessState):
    """The coordinator's last update: if the runner is stopping this process, the process is
    over when its cgroup is empty, and its status is the stop's outcome."""
    cg, record = gk
    request = record.load()
    if request is None:
        return kw
    # The stopper's own deadlines bound these waits: its grace and kill timeout, then it
    # reports. The margins only matter if the stopper itself was killed.
    grace, kill_timeout = float(request["grace"]), float(request["kill_timeout"])
    stopper = record.stopper_fd(timeout=5)
    try:
        _reaper.reap_until_done(cg, stopper, timeout=grace + kill_timeout + 30)
        outcome = record.wait_outcome(stopper, timeout=kill_timeout + 30)
    finally:
        if stopper is not None:
            _close(stopper)
    if outcome is None:
        return kw
    state, rc = status_of(outcome, kw.get("return_code"))
    kw = dict(kw)
    kw["state"] = ProcessState.LOST if state == LOST else ProcessState.KILLED
    kw["return_code"] = rc
    return kw


class _JoiningSubprocess(object):
    """The `subprocess` module as the coordinator sees it while starting its wrapper: Popen
    joins the child to the process's cgroup before exec, and the Popen it returns reaps every
    child of the coordinator (a subreaper) whenever it polls or waits for the wrapper."""

    def __init__(self, real, join, started):
        self._real = real
        self._join = join
        self._started = started

    def __getattr__(self, name):
        return getattr(self._real, name)

    def Popen(self, *args, **kw):  # noqa: N802 (the module's name)
        inner = kw.get("preexec_fn")
        join = self._join

        def preexec():
            join()
            if inner is not None:
                inner()

        kw["preexec_fn"] = preexec
        try:
            return _reaping_popen(self._real.Popen)(*args, **kw)
        finally:
            # cgroup.procs was opened privileged: not kept in the role user's coordinator.
            self._started()


def _reaping_popen(real_popen):
    class ReapingPopen(real_popen):
        """Popen whose poll() and wait() reap every exited child of the coordinator, not
        only the wrapper: the task's orphans come to the coordinator and must not pile up as
        zombies for the life of the process."""

        def poll(self):
            if self.returncode is None:
                _, status = _reaper.reap_ready(self.pid)
                if status is not None:
                    self.returncode = _reaper.return_code(status)
            return self.returncode

        def wait(self, timeout=None):
            if self.returncode is None:
                if timeout is not None:
                    return real_popen.wait(self, timeout)
                self.returncode = _reaper.return_code(_reaper.wait_reaping(self.pid))
            return self.returncode

    return ReapingPopen


def _close(fd):
    try:
        os.close(fd)
    except OSError:
        pass


def _import_process_module():
    from apache.thermos.core import process

    return process


# -- the runner side --------------------------------------------------------------------------


def _run_of(state, process_name):
    return len(state.processes[process_name]) - 1


def _cgroup_for(state, process_name):
    return _config.cgroup(state.header.task_id, process_name, _run_of(state, process_name))


def _record_for(runner, cg):
    return StopRecord(runner._pathspec.getpath("checkpoint_path"), cg)


def _grace(runner):
    """What Thermos allows now: the preemption deadline for an executor kill, what is left of
    the finalization wait once cleaning began, else the whole finalization wait."""
    if runner._preemption_deadline or runner._finalization_start is not None:
        return max(0.0, type(runner)._gracekill_orig_remaining(runner))
    return float(runner.task.finalization_wait().get())


def _start(runner, cg):
    if cg.path in _stopping and _stopping[cg.path].poll() is None:
        return
    # A stop started before a runner restart (recovery) may still run: never a second one,
    # whose outcome file would clobber the first's.
    request = _record_for(runner, cg).load()
    if (
        request
        and request.get("pid")
        and os.path.exists("/proc/%d" % request["pid"])
        and _record_for(runner, cg).read_outcome() is None
    ):
        return
    grace = _grace(runner)
    log.info("gracekill: stopping %s with %.1fs grace", cg.path, grace)
    try:
        _stopping[cg.path] = _stops.start_stop(
            _config.gracekill, cg, _record_for(runner, cg), grace, _config.kill_timeout
        )
    except OSError as e:
        # No stopper (fork failed, the binary vanished): SIGTERM the cgroup's processes from
        # here; Thermos' deadline then ends what is left through cgroup.kill (kill_process).
        log.error("gracekill: cannot start gracekill for %s (%s): signalling it directly", cg.path, e)
        _record_for(runner, cg).clear()
        _signal_all(cg, signal.SIGTERM)


def _all_runs(state, process_name):
    """The cgroups of every run of a process so far: an earlier run's leftovers count too."""
    out = []
    for run in range(_run_of(state, process_name) + 1):
        cg = _config.cgroup(state.header.task_id, process_name, run)
        if cg.exists():
            out.append(cg)
    return out


def _managed_cgroups(runner):
    out = []
    for name in runner.state.processes:
        out.extend(_all_runs(runner.state, name))
    return out


def _patch_runner(thermos):
    TaskRunner = thermos.TaskRunner
    Helper = thermos.TaskRunnerHelper
    orig_init = TaskRunner.__init__
    orig_running = TaskRunner.has_running_processes
    orig_remaining = TaskRunner._finalization_remaining
    RUNNING = (thermos.ProcessState.FORKED, thermos.ProcessState.RUNNING)

    def init(self, *a, **kw):
        global _runner
        orig_init(self, *a, **kw)
        _runner = self

    def terminate_plan(self, plan):
        # Orphans in a process's cgroup are part of its stop; others get Thermos' SIGTERM.
        Helper.terminate_orphans(self.state)
        for process in plan.running:
            last_run = self._current_process_run(process)
            if not (last_run and last_run.state in RUNNING):
                continue
            cg = _cgroup_for(self.state, process)
            if cg.exists():
                _start(self, cg)
            else:
                Helper.terminate_process(self.state, process)

    def nothing_left(self):
        # No coordinator, wrapper or populated cgroup. A coordinator writes its process's last
        # update before it exits, so once it is gone that update is in its stream: collect it
        # now, or the loop ends with the process still RUNNING and the runner records it itself
        # (KILLED -1 / LOST), the stop's outcome unread.
        if orig_running(self) or any(cg.populated() for cg in _managed_cgroups(self)):
            return False
        self.collect_updates(0)
        return True

    def has_running_processes(self):
        return not nothing_left(self)

    def finalization_remaining(self):
        # Past Thermos' deadline, gracekill's final kill (due at the same moment) gets its kill
        # timeout to report, so the coordinator records the outcome rather than the runner
        # recording a blind KILLED -1 a moment before.
        left = orig_remaining(self)
        if left > 0:
            return left
        now = self._clock.time()
        since = getattr(self, "_gracekill_overdue_since", None)
        if since is None:
            since = self._gracekill_overdue_since = now
        # Over when every cgroup is empty and every coordinator has reported and exited.
        if nothing_left(self):
            return 0
        return max(0.0, _config.kill_timeout + 2 - (now - since))

    orig_run = TaskRunner.run
    orig_kill = TaskRunner.kill

    def run(self, *a, **kw):
        try:
            return orig_run(self, *a, **kw)
        finally:
            if self.is_terminal():
                _remove_task_cgroups(self.state.header.task_id)

    def kill(self, *a, **kw):
        try:
            return orig_kill(self, *a, **kw)
        finally:
            if self.is_terminal():
                _remove_task_cgroups(self.state.header.task_id)

    TaskRunner.__init__ = init
    TaskRunner.run = run
    TaskRunner.kill = kill
    TaskRunner._terminate_plan = terminate_plan
    TaskRunner.has_running_processes = has_running_processes
    TaskRunner._finalization_remaining = finalization_remaining
    TaskRunner._gracekill_orig_remaining = orig_remaining


def _patch_helper(thermos):
    Helper = thermos.TaskRunnerHelper
    orig_kill_process = Helper.kill_process.__func__
    orig_orphans = Helper.terminate_orphans.__func__

    def kill_process(cls, state, process_name):
        runs = _all_runs(state, process_name)
        if not runs:
            return orig_kill_process(cls, state, process_name)
        alive = [cg for cg in runs if cg.populated()]
        runner = _runner
        if runner is not None and _grace(runner) > 0:
            # Time remains: the process is over when its cgroups are empty. A wrapper that died
            # of the stop signal, or exited leaving daemons behind, gets no SIGKILL for it.
            for cg in alive:
                _start(runner, cg)
            return bool(alive)
        # Thermos' deadline has passed, or this is `thermos kill`: everything ends now.
        coordinator_pid, _, _ = cls.scan_process(state, process_name)
        for cg in alive:
            try:
                _stops.kill_now(_config.gracekill, cg, _config.kill_timeout)
            except Exception as e:  # noqa: BLE001 (the task must end anyway)
                log.error("gracekill: %s; writing cgroup.kill directly", e)
                _kill_directly(cg)
        if alive and any(cg.populated() for cg in alive):
            orig_kill_process(cls, state, process_name)
        if coordinator_pid:
            cls.kill_pid(coordinator_pid)
        return bool(alive or coordinator_pid)

    def terminate_orphans(cls, state):
        roots = []
        for name in state.processes:
            roots.extend(_all_runs(state, name))
        if not roots:
            return orig_orphans(cls, state)
        # Thermos' rule (SIGTERM to the runner's children that are not coordinators), minus
        # the processes a stop takes care of (inside a process's cgroup) and the stoppers.
        m = mount()
        inside = set()
        for cg in roots:
            inside.update(cg.pids())
        coordinators = {
            runs[-1].coordinator_pid for runs in state.processes.values() if runs
        }
        stoppers = {p.pid for p in _stopping.values()}
        for pid in _children(os.getpid()):
            if pid in coordinators or pid in stoppers or pid in inside:
                continue
            rel = cgroup_of(pid)
            if rel is not None and _within(m + rel, roots):
                continue
            log.info("gracekill: SIGTERM orphan %d", pid)
            cls.terminate_pid(pid)

    orig_kill = Helper.kill.__func__

    def kill(cls, task_id, *a, **kw):
        try:
            return orig_kill(cls, task_id, *a, **kw)
        finally:
            _remove_task_cgroups(task_id)

    Helper.kill_process = classmethod(kill_process)
    Helper.terminate_orphans = classmethod(terminate_orphans)
    Helper.kill = classmethod(kill)


def _signal_all(cg, sig):
    """The fallback when gracekill cannot run: signal every process listed in the cgroup."""
    for pid in cg.pids():
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _kill_directly(cg):
    """The fallback final kill: `cgroup.kill` of every cgroup of the process (we made them),
    the process's own first (it is recursive; Linux 5.14)."""
    try:
        with open(os.path.join(cg.path, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError as e:
        log.error("gracekill: cannot write %s/cgroup.kill: %s", cg.path, e)
        _signal_all(cg, signal.SIGKILL)


def _remove_task_cgroups(task_id):
    """Removes the task's process cgroups, and its own, once the task is over. Only empty ones
    go (rmdir refuses a populated cgroup): a process that outlived SIGKILL keeps its cgroup, to
    be found and reported."""
    task_dir = os.path.dirname(_config.cgroup(task_id, "x", 0).path)
    try:
        names = os.listdir(task_dir)
    except OSError:
        return
    for name in names:
        path = os.path.join(task_dir, name)
        if os.path.isdir(path):
            _rmdir_tree(path)
    _rmdir_tree(task_dir)


def _rmdir_tree(path):
    """rmdir, children first (a task may have made cgroups of its own below its process's)."""
    for dirpath, dirnames, _ in os.walk(path, topdown=False):
        for d in dirnames:
            try:
                os.rmdir(os.path.join(dirpath, d))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError as e:
        log.warning("gracekill: cannot remove %s: %s", path, e)


def _children(pid):
    """The children of `pid`, from /proc (what psutil's children() reads)."""
    out = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out.extend(int(p) for p in f.read().split())
        except OSError:
            pass
    return out


def _within(path, roots):
    return any(path == cg.path or path.startswith(cg.path + "/") for cg in roots)


_ = _cg  # the submodule is part of the package's API (gracekill_thermos.cgroup)
