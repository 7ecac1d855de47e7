"""Inherited descriptors: anything open besides stdin/out/err could point at the host (a
leaked platform socket or file). Walk them all, then exhaust the descriptor limit.

verdict: ok
"""
import os
import stat

for name in sorted(os.listdir("/proc/self/fd"), key=int):
    fd = int(name)
    try:
        target = os.readlink(f"/proc/self/fd/{name}")
        st = os.fstat(fd)
    except OSError:
        continue
    print(fd, "->", target, oct(st.st_mode))
    if fd > 2 and not target.startswith(("/proc/", "/dev/null")) and \
            not stat.S_ISDIR(st.st_mode):
        try:
            data = os.pread(fd, 200, 0)
            print("  content:", data[:200])
        except OSError as e:
            print("  read ->", e.errno)
for fd in range(3, 64):
    try:
        os.fstat(fd)
    except OSError:
        continue
    target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else "?"
    if "/proc/self/fd" in target or target.startswith("/proc/"):
        continue
    print("ESCAPED: an inherited descriptor", fd, target)
fds = []
try:
    while True:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    print("descriptors stop at", len(fds) + 3, "with", e.errno)
print("COMPLETE")
