"""What /proc/1 (the sandbox's init, or the host's if the pid namespace leaked) tells:
environment, command line, mounts, cgroup, and the host's kernel command line.

verdict: ok
"""
import os

for p in ("/proc/1/environ", "/proc/1/cmdline", "/proc/1/mountinfo", "/proc/1/cgroup",
          "/proc/1/status", "/proc/cmdline", "/proc/self/mountinfo", "/proc/1/maps"):
    try:
        raw = open(p, "rb").read()
    except OSError as e:
        print(p, "->", type(e).__name__, e.errno)
        continue
    print(p, "->", raw[:1500])
    if (os.environ["SECRET_ENV_NAME"] + "=").encode() in raw:
        print("ESCAPED: host secret in", p)
    if p.endswith(("cmdline", "status")) and b"pytest" in raw:
        print("ESCAPED: the host's process is visible in", p)
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print("pids:", pids)
if int(os.environ["HOST_PID"]) in pids and len(pids) > 20:
    print("ESCAPED: host processes are visible")
print("COMPLETE")
