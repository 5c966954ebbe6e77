"""Drives `gracekill run` on a pseudo-terminal, as a person at a terminal would: Ctrl-C, and
optionally Ctrl-Z then `fg` first. Prints one JSON object: run's exit status, the signals the
app received (in order), and whether run was seen stopped.

    python3 tty_job.py GRACEKILL SCRATCH [ctrl-z]
"""

import json
import os
import pty
import signal
import sys
import time

gk, scratch = sys.argv[1], sys.argv[2]
ctrl_z = len(sys.argv) > 3 and sys.argv[3] == "ctrl-z"

APP = r"""
import os, signal, sys, time
got = []
def handler(signum, frame):
    got.append(signum)
signal.signal(signal.SIGINT, handler)
signal.signal(signal.SIGTERM, handler)
with open(os.path.join(sys.argv[1], "ready"), "w") as f:
    f.write(str(os.getpid()))
while not got:
    time.sleep(0.02)
time.sleep(0.5)  # a second stop request would arrive meanwhile
with open(os.path.join(sys.argv[1], "signals"), "w") as f:
    f.write(",".join(str(s) for s in got))
sys.exit(3)
"""


def wait_file(path, limit=20):
    t = time.monotonic()
    while not os.path.exists(path):
        if time.monotonic() - t > limit:
            raise SystemExit("timed out waiting for " + path)
        time.sleep(0.02)


pid, fd = pty.fork()
if pid == 0:
    os.execv(gk, [gk, "run", "--name", "tty", sys.executable, "-c", APP, scratch])

output = []


def drain():
    try:
        while True:
            import select

            r, _, _ = select.select([fd], [], [], 0)
            if not r:
                return
            data = os.read(fd, 4096)
            if not data:
                return
            output.append(data.decode(errors="replace"))
    except OSError:
        return


wait_file(os.path.join(scratch, "ready"))
seen_stopped = False
if ctrl_z:
    os.write(fd, b"\x1a")
    _, status = os.waitpid(pid, os.WUNTRACED)
    seen_stopped = os.WIFSTOPPED(status)
    time.sleep(0.2)
    os.kill(pid, signal.SIGCONT)  # what `fg` does, after giving run the terminal
    time.sleep(0.3)
drain()
os.write(fd, b"\x03")
while True:
    drain()
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.02)
drain()
signals = open(os.path.join(scratch, "signals")).read() if os.path.exists(
    os.path.join(scratch, "signals")) else ""
print(json.dumps({
    "exit": os.waitstatus_to_exitcode(status),
    "signals": signals,
    "stopped": seen_stopped,
    "output": "".join(output),
}))
