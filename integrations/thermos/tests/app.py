"""The application of the scenarios: starts a setsid'd daemon child (which flushes on SIGTERM), then
flushes for 1 s on SIGTERM (`flushing`), ignores SIGTERM (`stubborn`), or ends by itself after
0.5 s leaving the daemon behind (`natural`). Files go to the scratch directory argv[1]."""

import os
import signal
import sys
import time

scratch, mode = sys.argv[1], sys.argv[2]


def put(name, text):
    with open(os.path.join(scratch, name + ".tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(scratch, name + ".tmp"), os.path.join(scratch, name))


# The daemon: its own session, so a process-group kill misses it; the app's child, so it is
# no orphan when Thermos looks for orphans, only once the app is gone.
if os.fork() == 0:
    os.setsid()

    def daemon_term(signum, frame):
        put("daemon-flushed", "yes")
        os._exit(0)

    signal.signal(signal.SIGTERM, daemon_term)
    put("daemon.pid", str(os.getpid()))
    while True:
        time.sleep(1)


def term(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    put("term-seen", "yes")
    time.sleep(1)
    put("flushed", "yes")
    sys.exit(0)


signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else term)
while not os.path.exists(os.path.join(scratch, "daemon.pid")):
    time.sleep(0.01)
if os.environ.get("APP_ORPHANS"):
    # Short-lived orphans, as `(cmd &)` in a shell makes them: they exit while the app lives,
    # and their reaper must reap them (no zombie may pile up).
    for _ in range(int(os.environ["APP_ORPHANS"])):
        if os.fork() == 0:
            if os.fork() == 0:
                time.sleep(0.05)
                os._exit(0)
            os._exit(0)
        os.wait()
    time.sleep(0.5)
put("ready", str(os.getpid()))
if mode == "natural":
    time.sleep(0.5)
    sys.exit(0)
while True:
    time.sleep(1)
