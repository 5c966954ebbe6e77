"""The little of cgroup v2 the integration needs: where the mount is, where a Thermos process's
cgroup lives, whether it is populated, and an event-driven wait for it to empty."""

import errno
import os
import select


def mount():
    """The cgroup2 mount point, from /proc/self/mountinfo (never assumed: hybrid hosts have it at
    /sys/fs/cgroup/unified). Raises OSError(ENOENT) when there is none."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if right.split()[:1] == ["cgroup2"] and len(fields) > 4:
                return fields[4].replace("\\040", " ")
    raise OSError(errno.ENOENT, "no cgroup2 mount in /proc/self/mountinfo")


def safe_name(name):
    """A cgroup directory name for a Thermos name, one to one (distinct names never share a
    cgroup or a record file): letters, digits and `-.:@+` stay; every other byte, `_` included,
    becomes `_xx` (its hex value). Never empty, never `.` or `..`."""
    out = "".join(
        chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "-.:@+") else "_%02x" % b
        for b in name.encode("utf-8", "surrogateescape")
    )
    if out in ("", ".", ".."):
        out = "_" + out
    return out


def own_cgroup():
    """This process's cgroup v2 path relative to the mount ('/a/b')."""
    return cgroup_of(os.getpid()) or "/"


class ProcessCgroup(object):
    """The cgroup of one run of one Thermos process: <root>/<task_id>/<process>.<run>."""

    def __init__(self, root, task_id, process, run):
        self.root = root
        self.task_id = task_id
        self.process = process
        self.run = run
        self.path = os.path.join(root, safe_name(task_id), "%s.%d" % (safe_name(process), run))

    def __repr__(self):
        return "ProcessCgroup(%r)" % self.path

    def exists(self):
        return os.path.isfile(os.path.join(self.path, "cgroup.events"))

    def create(self):
        """mkdir -p; an existing directory is reused (a coordinator restarted on recovery)."""
        os.makedirs(self.path, exist_ok=True)

    def open_procs(self):
        """cgroup.procs opened for writing now, so the write can happen later in the child: the
        kernel checks the permission of the opener (Linux 5.16), not of the writer."""
        return os.open(os.path.join(self.path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)

    def populated(self):
        try:
            with open(os.path.join(self.path, "cgroup.events")) as f:
                return "populated 1" in f.read().split("\n")
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise

    def wait_empty(self, timeout=None):
        """Waits for `populated 0` on cgroup.events (POLLPRI: the kernel's notification), up to
        `timeout` seconds (None: no limit). Returns whether it is empty."""
        try:
            fd = os.open(os.path.join(self.path, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return True
            raise
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI)
            deadline = None if timeout is None else _now() + timeout
            while True:
                os.lseek(fd, 0, os.SEEK_SET)
                if "populated 1" not in os.read(fd, 4096).decode().split("\n"):
                    return True
                left = None if deadline is None else deadline - _now()
                if left is not None and left <= 0:
                    return False
                poller.poll(None if left is None else max(1, int(left * 1000)))
        finally:
            os.close(fd)

    def pids(self):
        """Every pid in the cgroup and below it."""
        out = []
        for d, subdirs, _ in os.walk(self.path):
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    out.extend(int(p) for p in f.read().split())
            except OSError:
                pass
        return out


def cgroup_of(pid):
    """The cgroup v2 path of `pid`, relative to the mount ('/a/b'), or None."""
    try:
        with open("/proc/%d/cgroup" % pid) as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].rstrip("\n")
    except OSError:
        return None
    return None


def _now():
    import time

    return time.monotonic()
