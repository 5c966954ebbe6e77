"""The coordinator as the reaper of its process's orphans (a child subreaper).

The kernel keeps a process's exit status for gracekill's report only once it is reaped, and
orphans would otherwise go to the runner, which reaps once per loop iteration. So the
coordinator adopts them, and reaps every child the moment it exits, for the whole life of the
process (no zombie accumulates): its wait for the wrapper is a loop woken by SIGCHLD (through the
signal wakeup fd), not a waitpid on one pid. After the wrapper, while a stop runs, it goes on
reaping until the cgroup is empty or the stopper is done. Event-driven throughout; main thread
only (the coordinator is single-threaded)."""

import ctypes
import errno
import os
import select
import signal
import time

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    """prctl(PR_SET_CHILD_SUBREAPER, 1): orphans of this process's descendants come to it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(PR_SET_CHILD_SUBREAPER): %s" % os.strerror(err))


def return_code(status):
    """subprocess's convention: the exit code, or minus the signal that ended it."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class _Wakeup(object):
    """SIGCHLD delivered as readability of a pipe, for poll()."""

    def __enter__(self):
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)
        self.old_handler = signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.old_fd = signal.set_wakeup_fd(self.w)
        return self

    def drain(self):
        try:
            while os.read(self.r, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def __exit__(self, *exc):
        signal.set_wakeup_fd(self.old_fd)
        signal.signal(signal.SIGCHLD, self.old_handler)
        os.close(self.r)
        os.close(self.w)


def reap_ready(wanted=None):
    """Reaps every child that has exited. Returns (children left?, status of `wanted` if it was
    among them)."""
    status_of_wanted = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False, status_of_wanted
        except InterruptedError:
            continue
        if pid == 0:
            return True, status_of_wanted
        if pid == wanted:
            status_of_wanted = status


def wait_reaping(pid):
    """Waits for child `pid` while reaping every other child as it exits; returns `pid`'s wait
    status."""
    with _Wakeup() as wake:
        poller = select.poll()
        poller.register(wake.r, select.POLLIN)
        while True:
            _, status = reap_ready(pid)
            if status is not None:
                return status
            poller.poll()
            wake.drain()


def reap_until_done(cg, stopper_fd, timeout):
    """After the wrapper: reaps children as they exit until `cg` is empty (then the last ones,
    which are dying) or the stopper (`stopper_fd`, a pidfd, or None) has exited, at most
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    try:
        events = os.open(os.path.join(cg.path, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
        events = None
    try:
        with _Wakeup() as wake:
            poller = select.poll()
            poller.register(wake.r, select.POLLIN)
            if events is not None:
                poller.register(events, select.POLLPRI)
            if stopper_fd is not None:
                poller.register(stopper_fd, select.POLLIN)
            while True:
                children, _ = reap_ready()
                if events is None or not _populated(events):
                    break
                if stopper_fd is not None and _readable(stopper_fd):
                    return  # the stop is over with processes left: survivors
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                poller.poll(max(1, int(left * 1000)))
                wake.drain()
            # Empty: every child left is between leaving its cgroup and becoming a zombie: a
            # moment each. Still never past the deadline.
            while children and time.monotonic() < deadline:
                children, _ = reap_ready()
                if children:
                    poller.poll(max(1, int((deadline - time.monotonic()) * 1000)))
                    wake.drain()
    finally:
        if events is not None:
            os.close(events)


def _readable(fd):
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


def _populated(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    return "populated 1" in os.read(fd, 4096).decode().split("\n")
