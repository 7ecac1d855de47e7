"""Walk every file the sandbox can see (except the system and Python trees) and print any
that looks like a secret; the test checks none of the host's secrets comes out. Also open
every host path listed in mountinfo.

verdict: ok
"""
import os
import stat

# The Python trees (a venv's and the interpreter's own) are public code, not secrets.
skip = ("/proc", "/sys", "/usr", "/dev", os.environ["SITE_PACKAGES"].split("/lib/")[0],
        os.environ["PYTHON_EXE"].split("/bin/")[0])
seen = 0
for top in os.listdir("/"):
    start = "/" + top
    if start.startswith(skip) or os.path.islink(start):
        continue
    for dirpath, dirs, files in os.walk(start):
        dirs[:] = [d for d in dirs if not os.path.join(dirpath, d).startswith(skip)]
        for f in files:
            p = os.path.join(dirpath, f)
            seen += 1
            try:
                st = os.lstat(p)
                if not stat.S_ISREG(st.st_mode) or st.st_size > 1 << 20:
                    continue
                raw = open(p, "rb").read()
            except OSError:
                continue
            if b"secret" in raw.lower() or b"canary" in raw.lower():
                print("suspicious", p, raw[:200])
print("files seen:", seen)
for line in open("/proc/self/mountinfo"):
    fields = line.split()
    for cand in (fields[3], fields[4]):
        if cand.startswith("/") and cand not in ("/",):
            try:
                print("mount path", cand, "->", sorted(os.listdir(cand))[:10])
            except OSError as e:
                print("mount path", cand, "->", e.errno)
print("COMPLETE")
