"""A job-control shell on a fresh pseudo-terminal, in a session of its own, running one command
as its foreground job, as bash does: the job gets a process group and the terminal. Optionally
with `stty tostop` set first, and with a Ctrl-Z typed after some seconds. When the job stops,
the shell waits 4 s (nobody types `fg`), then continues it in the foreground. Prints one JSON
object: the signal that stopped the job (null if none did), its exit status, and the seconds
from start to its end.

    python3 tty_shell.py [--tostop] [--ctrl-z-after SECONDS] CMD [ARGS...]
"""

import fcntl
import json
import os
import pty
import signal
import sys
import termios
import threading
import time

args = sys.argv[1:]
tostop = args[:1] == ["--tostop"]
if tostop:
    args = args[1:]
ctrl_z_after = None
if args[:1] == ["--ctrl-z-after"]:
    ctrl_z_after = float(args[1])
    args = args[2:]
master, slave = pty.openpty()
name = os.ttyname(slave)
report_r, report_w = os.pipe()

shell = os.fork()
if shell == 0:
    os.close(master)
    os.close(report_r)
    os.setsid()
    tty = os.open(name, os.O_RDWR)
    fcntl.ioctl(tty, termios.TIOCSCTTY, 0)
    if tostop:
        mode = termios.tcgetattr(tty)
        mode[3] |= termios.TOSTOP
        termios.tcsetattr(tty, termios.TCSANOW, mode)
    # A shell ignores SIGTTOU so that it can hand the terminal around.
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    start = time.monotonic()
    job = os.fork()
    if job == 0:
        os.setpgid(0, 0)
        os.tcsetpgrp(tty, os.getpid())
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        for fd in (0, 1, 2):
            os.dup2(tty, fd)
        os.execvp(args[0], args)
    os.setpgid(job, job)
    _, status = os.waitpid(job, os.WUNTRACED)
    stopped_by = None
    if os.WIFSTOPPED(status):
        stopped_by = signal.Signals(os.WSTOPSIG(status)).name
        time.sleep(4)
        os.tcsetpgrp(tty, job)  # `fg`
        os.killpg(job, signal.SIGCONT)
        _, status = os.waitpid(job, 0)
    report = {
        "stopped_by": stopped_by,
        "exit": os.waitstatus_to_exitcode(status),
        "took": round(time.monotonic() - start, 3),
    }
    os.write(report_w, json.dumps(report).encode())
    os._exit(0)

os.close(slave)
os.close(report_w)
if ctrl_z_after is not None:

    def type_ctrl_z():
        time.sleep(ctrl_z_after)
        os.write(master, b"\x1a")

    threading.Thread(target=type_ctrl_z, daemon=True).start()
tty_output = b""
while True:
    try:
        chunk = os.read(master, 4096)
    except OSError:  # EIO: the terminal's last user is gone
        break
    if not chunk:
        break
    tty_output += chunk
os.waitpid(shell, 0)
with os.fdopen(report_r) as f:
    report = json.loads(f.read())
report["tty"] = tty_output.decode(errors="replace")
print(json.dumps(report))
