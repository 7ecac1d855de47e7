"""Write outside the work folder: the root, system folders, /etc, the read-only input and
code, the platform's Python environment, the host canary folder by its path, and /tmp
(private to the sandbox; the test checks the host's /tmp).

verdict: ok
"""
import os

m = os.environ["MARKER"]
site = os.environ["SITE_PACKAGES"]
targets = [f"/{m}", f"/usr/{m}", f"/usr/local/bin/{m}", f"/etc/{m}", "/etc/passwd",
           f"/data/{m}", "/data/train.csv", f"/code/{m}", f"{site}/{m}.pth",
           f"{site}/sitecustomize.py", f"{os.environ['CANARY_DIR']}/{m}",
           f"{os.environ['CANARY_DIR']}/host-canary.txt", f"/root/{m}", f"/work/../{m}",
           f"/proc/1/root/{m}", f"/var/tmp/{m}", f"/dev/shm/{m}", f"/dev/{m}"]
for t in targets:
    try:
        with open(t, "a") as f:
            f.write("pwned\n")
        print("ESCAPED: wrote", t)
    except OSError as e:
        print(t, "->", type(e).__name__, e.errno)
for d in ("/usr/lib", "/data", "/code", site):
    try:
        os.mkdir(f"{d}/{m}")
        print("ESCAPED: mkdir in", d)
    except OSError as e:
        print("mkdir", d, "->", e.errno)
    try:
        os.rename(f"{d}", f"{d}-{m}")
        print("ESCAPED: renamed", d)
    except OSError as e:
        print("rename", d, "->", e.errno)
# /tmp is the sandbox's own tmpfs: writing there works, but must not reach the host's /tmp.
with open(f"/tmp/{m}", "w") as f:
    f.write("inside only\n")
print("COMPLETE")
