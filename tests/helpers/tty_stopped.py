"""Runs `gracekill stop` at a terminal whose output is stopped, as Ctrl-S does, or a task that
shares the terminal and calls tcflow(TCOOFF): every write to it blocks until output resumes.
Output resumes only once the task's cgroup is empty, or after 5 s. Prints one JSON object:
seconds from the stop's start to the cgroup emptied (null if it was not), the stop's exit
status, and what it wrote to the terminal and to stdout.

    python3 tty_stopped.py GRACEKILL TASK_CGROUP_DIR NAME
"""

import json
import os
import pty
import subprocess
import sys
import termios
import threading
import time

gk, task, name = sys.argv[1:4]
events = os.path.join(task, "cgroup.events")
master, slave = pty.openpty()
termios.tcflow(slave, termios.TCOOFF)


def populated():
    try:
        with open(events) as f:
            return "populated 1" in f.read()
    except FileNotFoundError:
        return False


start = time.monotonic()
stop = subprocess.Popen(
    [gk, "stop", "--grace", "300ms", name],
    stdin=subprocess.DEVNULL,
    stdout=subprocess.PIPE,
    stderr=slave,
)
while populated() and time.monotonic() - start < 5:
    time.sleep(0.01)
emptied_after = None if populated() else round(time.monotonic() - start, 3)

# Output resumes: the stop may write what it queued, and end.
termios.tcflow(slave, termios.TCOON)
os.close(slave)
tty = []


def drain():
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: no slave left open
            return
        if not chunk:
            return
        tty.append(chunk)


reader = threading.Thread(target=drain, daemon=True)
reader.start()
stdout = stop.stdout.read()
code = stop.wait(timeout=30)
reader.join(timeout=5)
print(
    json.dumps(
        {
            "emptied_after": emptied_after,
            "exit": code,
            "tty": b"".join(tty).decode(errors="replace"),
            "stdout": stdout.decode(errors="replace"),
        }
    )
)
