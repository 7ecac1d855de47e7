"""mount(2) through ctypes: a tmpfs, a new proc, bind mounts of / and the host paths, remount
of read-only folders as writable; the set-uid mount binary; then the same inside a new user
namespace (if gVisor allows one, what it mounts is gVisor's, never the host's).

verdict: ok
"""
import ctypes
import os
import subprocess

libc = ctypes.CDLL(None, use_errno=True)
MS_BIND, MS_REMOUNT, MS_REC = 4096, 32, 16384
os.mkdir("/work/mnt")


def attempts(tag: str) -> None:
    for src, dst, fs, flags in ((b"tmpfs", b"/work/mnt", b"tmpfs", 0),
                                (b"proc", b"/work/mnt", b"proc", 0),
                                (b"/", b"/work/mnt", None, MS_BIND | MS_REC),
                                (os.environ["DATA_DIR"].encode(), b"/work/mnt", None, MS_BIND),
                                (b"none", b"/usr", None, MS_REMOUNT | MS_BIND),
                                (b"none", b"/data", None, MS_REMOUNT),
                                (b"none", b"/", None, MS_REMOUNT)):
        r = libc.mount(src, dst, fs, flags, None)
        err = ctypes.get_errno()
        print(tag, src, dst, "->", r, err)
        if r == 0:
            listing = os.listdir(dst.decode())
            print(tag, "mounted; sees", listing[:20])
            if tag == "plain":
                print("ESCAPED: nobody without capabilities mounted", src)
            libc.umount2(dst, 2)


attempts("plain")
if os.path.exists("/usr/bin/mount"):
    r = subprocess.run(["/usr/bin/mount", "-t", "tmpfs", "none", "/work/mnt"],
                       capture_output=True, text=True)
    print("mount binary ->", r.returncode, r.stderr.strip())
    if r.returncode == 0:
        print("ESCAPED: the set-uid mount binary worked")
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
r = libc.unshare(CLONE_NEWUSER | CLONE_NEWNS)
print("unshare ->", r, ctypes.get_errno())
if r == 0:
    attempts("userns")
    for p in (os.environ["DATA_DIR"], os.environ["CANARY_DIR"]):
        print(p, "exists in the user namespace:", os.path.exists(p))
print("COMPLETE")
