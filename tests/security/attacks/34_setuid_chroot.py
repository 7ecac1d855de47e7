"""Become root: setuid/setgid, set-uid binaries (su, passwd, newgrp, mount), capabilities,
chroot, and a breakout through a chroot with an open folder descriptor.

verdict: ok
"""
import ctypes
import os
import subprocess

for what, fn in (("setuid", lambda: os.setuid(0)), ("setgid", lambda: os.setgid(0)),
                 ("seteuid", lambda: os.seteuid(0)), ("setresuid", lambda: os.setresuid(0, 0, 0)),
                 ("setgroups", lambda: os.setgroups([0])), ("chroot", lambda: os.chroot("/work"))):
    try:
        fn()
        print("ESCAPED:", what, "worked; uid", os.getuid(), os.geteuid())
    except OSError as e:
        print(what, "->", e.errno)
setuid_bins = []
for d in ("/usr/bin", "/usr/sbin", "/usr/lib/openssh", "/usr/lib/dbus-1.0"):
    try:
        for n in os.listdir(d):
            p = os.path.join(d, n)
            if os.path.isfile(p) and os.stat(p).st_mode & 0o4000:
                setuid_bins.append(p)
    except OSError:
        pass
print("set-uid binaries:", setuid_bins)
probe = "import os; print(os.geteuid())"
for b in setuid_bins:
    try:
        r = subprocess.run([b, "--help"], capture_output=True, timeout=5, input=b"")
        print(b, "->", r.returncode)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(b, "->", e)
r = subprocess.run(["/usr/bin/env", "python3", "-c", probe], capture_output=True, text=True)
print("euid after exec:", r.stdout.strip())
status = open("/proc/self/status").read()
caps = [line for line in status.splitlines() if line.startswith("Cap")]
print(caps)
if any(line.split()[1].strip("0") for line in caps if not line.startswith("CapAmb")):
    print("ESCAPED: holding capabilities", caps)
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS = 38, 39
print("no_new_privs:", libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0))
if os.getuid() == 0 or os.geteuid() == 0:
    print("ESCAPED: running as root")
print("COMPLETE")
