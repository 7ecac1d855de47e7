"""cgroup release_agent (the classic cgroup-v1 escape), sysfs writes, and uevent_helper.

verdict: ok
"""
import os

m = os.environ["MARKER"]
print("/sys holds", os.listdir("/sys") if os.path.isdir("/sys") else None)
print("/sys/fs/cgroup holds", os.listdir("/sys/fs/cgroup")
      if os.path.isdir("/sys/fs/cgroup") else None)
for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids",
             "/sys/fs/cgroup/rdma"):
    for name in ("release_agent", "notify_on_release", "cgroup.procs", "memory.limit_in_bytes",
                 "pids.max"):
        p = f"{root}/{name}"
        try:
            with open(p, "w") as f:
                f.write(f"/work/{m}\n" if name == "release_agent" else "1\n")
            print("ESCAPED: wrote", p)
        except OSError as e:
            print(p, "->", e.errno)
    try:
        os.mkdir(f"{root}/{m}")
        print("ESCAPED: made cgroup", root)
    except OSError as e:
        print("mkdir", root, "->", e.errno)
os.mkdir("/work/cg")
import ctypes  # noqa: E402

libc = ctypes.CDLL(None, use_errno=True)
r = libc.mount(b"cgroup", b"/work/cg", b"cgroup", 0, b"rdma")
print("mount cgroup ->", r, ctypes.get_errno())
if r == 0:
    print("ESCAPED: mounted a cgroup hierarchy")
for p in ("/sys/kernel/uevent_helper", "/sys/kernel/mm/transparent_hugepage/enabled",
          "/sys/class/net/lo/mtu", "/sys/power/state"):
    try:
        with open(p, "w") as f:
            f.write("x")
        print("ESCAPED: wrote", p)
    except OSError as e:
        print(p, "->", e.errno)
print("COMPLETE")
