"""Outputs that point outside: symlinks to host files and folders (absolute, relative,
through /proc), a folder symlink hiding a path, a FIFO that would block a reader, a device
node attempt, a hard link to a system file. Collection must copy none of them.

verdict: ok
collect: *
"""
import os

links = {"passwd": "/etc/passwd", "shadow": "/etc/shadow", "rootdir": "/",
         "up": "../../../../../../../etc", "proc_root": "/proc/1/root/etc/passwd",
         "canary": os.environ["CANARY_DIR"] + "/host-canary.txt",
         "data_dir": os.environ["DATA_DIR"], "self": "self"}
for name, target in links.items():
    os.symlink(target, f"/work/{name}")
os.mkdir("/work/results")
os.symlink("/etc", "/work/results/etc")
os.symlink("/etc/passwd", "/work/results/model.bin")
with open("/work/results/real.txt", "w") as f:
    f.write("a real output\n")
os.mkfifo("/work/pipe")
try:
    os.link("/etc/passwd", "/work/hardlink")
    print("ESCAPED: hard link to a system file")
except OSError as e:
    print("hard link ->", e.errno)
try:
    os.mknod("/work/disk", 0o600 | 0o060000, os.makedev(8, 0))
    print("ESCAPED: made a block device")
except OSError as e:
    print("mknod ->", e.errno)
print("COMPLETE")
