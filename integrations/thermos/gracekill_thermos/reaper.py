"""The coordinator as the reaper of its process's orphans (a child subreaper), reaping each the
moment it exits while it waits for the process's cgroup to empty. Event-driven: SIGCHLD wakes a
poll through the wakeup fd, and cgroup.events reports emptiness (POLLPRI)."""

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


def _reap_ready():
    """Reaps every child that has exited; returns False once there are no children at all."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def reap_until_empty(cg, timeout):
    """Reaps children as they exit until `cg` is empty (then the last ones, which are dying), or
    `timeout` seconds pass. Must run on the main thread (signal wakeup fd)."""
    deadline = time.monotonic() + timeout
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    old_handler = signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    old_fd = signal.set_wakeup_fd(w)
    try:
        events = os.open(os.path.join(cg.path, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
        events = None
    try:
        poller = select.poll()
        poller.register(r, select.POLLIN)
        if events is not None:
            poller.register(events, select.POLLPRI)
        while True:
            children = _reap_ready()
            if events is None or not _populated(events):
                break
            left = deadline - time.monotonic()
            if left <= 0 or not children and not _populated(events):
                return
            poller.poll(max(1, int(left * 1000)))
            try:
                while os.read(r, 512):
                    pass
            except BlockingIOError:
                pass
        # Empty: every child left is a process of the task between leaving its cgroup and
        # becoming a zombie. Reap them (a moment each), never past the deadline.
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGCHLD, old_handler)
        os.close(r)
        os.close(w)
        if events is not None:
            os.close(events)


def _populated(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    return "populated 1" in os.read(fd, 4096).decode().split("\n")
