"""Leave the sandbox through /proc: the root and cwd links of every visible process, fd
links of folders, /proc/self/root/.. chains, and the sandbox runtime's own processes.

verdict: ok
"""
import os

m = os.environ["MARKER"]
for p in ("/proc/self/root/../../../..", "/proc/1/root/..", "/proc/self/cwd/../..",
          "/proc/1/cwd/../../..", "/proc/thread-self/root/.."):
    try:
        names = sorted(os.listdir(p))
        print(p, "->", names)
        if "pytest-of-root" in " ".join(names) or "clowder-ml-sandbox" in names:
            print("ESCAPED: the host's folders through", p)
    except OSError as e:
        print(p, "->", e.errno)
fd = os.open("/work", os.O_RDONLY)
for p in (f"/proc/self/fd/{fd}/..", f"/proc/self/fd/{fd}/../..", f"/proc/self/fd/{fd}/../tmp"):
    try:
        print(p, "->", sorted(os.listdir(p))[:20])
    except OSError as e:
        print(p, "->", e.errno)
    try:
        with open(f"{p}/{m}", "w") as f:
            f.write("x")
        print("wrote through", p, "(the test checks the host)")
    except OSError as e:
        print("write", p, "->", e.errno)
try:
    with open("/proc/self/mem", "rb") as f:
        print("own memory is readable (inside only)")
except OSError as e:
    print("/proc/self/mem ->", e.errno)
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
        except OSError:
            continue
        print("pid", pid, comm)
        if comm in ("runsc", "runsc-sandbox", "runsc-gofer", "exe", "pytest", "sleep"):
            print("ESCAPED: a host process is visible:", pid, comm)
print("COMPLETE")
