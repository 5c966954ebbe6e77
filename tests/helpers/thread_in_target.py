"""A process whose leader is in a threaded domain cgroup and one of whose threads lives in a
threaded child of it, which then asks gracekill to stop that child: as a parent of the CLI, or
itself through the C ABI (from its leader, as a supervisor's main thread would). The stop must
refuse: the child holds part of the caller. Prints the stop's result; survives to print
`alive` unless the stop signalled it.

    python3 thread_in_target.py DOMAIN_DIR CHILD_DIR CHILD_REL cli GRACEKILL
    python3 thread_in_target.py DOMAIN_DIR CHILD_DIR CHILD_REL capi LIBGRACEKILL_CAPI_SO
"""

import ctypes
import os
import subprocess
import sys
import threading

domain, child, rel, how, what = sys.argv[1:6]

with open(os.path.join(domain, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
moved = threading.Event()
done = threading.Event()


def apart():
    with open(os.path.join(child, "cgroup.threads"), "w") as f:
        f.write(str(threading.get_native_id()))
    moved.set()
    done.wait()


threading.Thread(target=apart, daemon=True).start()
moved.wait()
if how == "cli":
    r = subprocess.run([what, "stop", "--grace", "300ms", rel], capture_output=True, text=True)
    print("rc", r.returncode, r.stderr.strip().replace("\n", " "), flush=True)
else:
    lib = ctypes.CDLL(what)
    out = ctypes.c_void_p()
    rc = lib.gracekill_stop(rel.encode(), None, None, ctypes.byref(out))
    print("rc", rc, flush=True)
done.set()
print("alive", flush=True)
