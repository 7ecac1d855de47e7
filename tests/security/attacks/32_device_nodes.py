"""Reach hardware and kernel memory: open disk, memory, kernel log and KVM device nodes by
name, and make new device nodes with mknod.

verdict: ok
"""
import os
import stat

print("/dev holds", sorted(os.listdir("/dev")))
for p in ("/dev/sda", "/dev/vda", "/dev/nvme0n1", "/dev/mem", "/dev/kmem", "/dev/port",
          "/dev/kmsg", "/dev/kvm", "/dev/vsock", "/dev/loop0",
          "/dev/console", "/dev/tty1", "/proc/kcore", "/dev/nvidia0", "/dev/dri/card0"):
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        data = b""
        try:
            data = os.read(fd, 64)
        except OSError:
            pass
        os.close(fd)
        print("ESCAPED: opened", p, data[:32])
    except OSError as e:
        print(p, "->", e.errno)
# gVisor's own emulated devices: opening them is allowed, but they reach nothing on the host;
# making a tun interface needs CAP_NET_ADMIN.
for p in ("/dev/fuse", "/dev/net/tun"):
    try:
        fd = os.open(p, os.O_RDWR)
        print(p, "is gVisor's own device, opened")
        if p.endswith("tun"):
            import fcntl
            import struct
            try:
                fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"evil0", 0x0002 | 0x1000))
                print("ESCAPED: created a tun interface")
            except OSError as e:
                print("TUNSETIFF ->", e.errno)
        os.close(fd)
    except OSError as e:
        print(p, "->", e.errno)
# gVisor's tmpfs lets anyone make a node, but it leads to no device (ENXIO on open).
for where in ("/work", "/tmp", "/dev"):
    for kind, dev in ((stat.S_IFBLK, os.makedev(8, 0)), (stat.S_IFCHR, os.makedev(1, 1)),
                      (stat.S_IFCHR, os.makedev(10, 232))):
        path = f"{where}/node-{kind}-{dev}"
        try:
            os.mknod(path, 0o666 | kind, dev)
            print("made", path)
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
            print("ESCAPED: opened a new device node", path)
        except OSError as e:
            print("mknod", path, "->", e.errno)
print("COMPLETE")
