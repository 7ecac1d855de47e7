"""Overwrite the interpreter the host also uses (the runc CVE-2019-5736 idea): through
/proc/self/exe, its host path, and /proc/self/map_files.

verdict: ok
"""
import os

for p in ("/proc/self/exe", os.environ["PYTHON_EXE"], "/proc/1/exe"):
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
        try:
            fd = os.open(p, flags)
            os.close(fd)
            print("ESCAPED: opened for writing", p, flags)
        except OSError as e:
            print(p, flags, "->", e.errno)
for name in os.listdir("/proc/self/map_files")[:20] if os.path.isdir(
        "/proc/self/map_files") else []:
    try:
        fd = os.open(f"/proc/self/map_files/{name}", os.O_WRONLY)
        os.close(fd)
        print("ESCAPED: map_files writable", name)
    except OSError:
        pass
print("COMPLETE")
