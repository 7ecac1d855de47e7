"""Change ownership, modes and times of read-only and system files; make a set-uid file.

verdict: ok
"""
import os

for p in ("/data/train.csv", "/data", "/usr/bin/python3", "/etc/passwd", "/code",
          os.environ["PYTHON_EXE"]):
    for what, fn in (("chmod", lambda p: os.chmod(p, 0o777)),
                     ("chown", lambda p: os.chown(p, 65534, 65534)),
                     ("utime", lambda p: os.utime(p, (0, 0)))):
        try:
            fn(p)
            print("ESCAPED:", what, p)
        except OSError as e:
            print(what, p, "->", e.errno)
with open("/work/suid", "w") as f:
    f.write("#!/bin/sh\nid\n")
try:
    os.chown("/work/suid", 0, 0)
    print("ESCAPED: chown to root")
except OSError as e:
    print("chown root ->", e.errno)
os.chmod("/work/suid", 0o4755)  # allowed on one's own file, powerless (no new privileges)
print("COMPLETE")
