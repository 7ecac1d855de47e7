"""Change shared kernel state: the clock, the host name and domain name, kernel tunables.

verdict: ok
"""
import ctypes
import os
import socket
import time

libc = ctypes.CDLL(None, use_errno=True)


class Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


r = libc.clock_settime(0, ctypes.byref(Timespec(0, 0)))
print("clock_settime ->", r, ctypes.get_errno())
if r == 0:
    print("ESCAPED: set the clock")
try:
    time.clock_settime(time.CLOCK_REALTIME, 0)
    print("ESCAPED: set the clock (time module)")
except OSError as e:
    print("time.clock_settime ->", e.errno)
for what, fn in (("sethostname", lambda: socket.sethostname("pwned")),
                 ("setdomainname", lambda: libc.setdomainname(b"pwned", 5) == 0
                  or (_ for _ in ()).throw(OSError(ctypes.get_errno(), "failed")))):
    try:
        fn()
        print(what, "worked; hostname now", socket.gethostname(), "(the sandbox's own)")
    except OSError as e:
        print(what, "->", e.errno)
for p, v in (("/proc/sys/kernel/hostname", "pwned"), ("/proc/sys/kernel/core_pattern", "|/x"),
             ("/proc/sys/vm/drop_caches", "3"), ("/proc/sys/kernel/panic", "1"),
             ("/proc/sysrq-trigger", "b"), ("/proc/sys/net/ipv4/ip_forward", "1")):
    try:
        with open(p, "w") as f:
            f.write(v)
        print("wrote", p, "(check: host unchanged)")
        if p.endswith(("core_pattern", "sysrq-trigger", "panic")):
            print("ESCAPED: wrote", p)
    except OSError as e:
        print(p, "->", e.errno)
print("uname:", os.uname())
print("COMPLETE")
