"""Kernel interfaces behind many container escapes, called directly: open_by_handle_at (the
"shocker" escape), bpf, perf_event_open, userfaultfd, keyctl, init_module, kexec_load,
io_uring_setup, add_key, pivot_root, setns, memfd+execveat, personality.

verdict: ok
"""
import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {"open_by_handle_at": 304, "name_to_handle_at": 303, "bpf": 321,
      "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250, "init_module": 175,
      "finit_module": 313, "kexec_load": 246, "io_uring_setup": 425, "add_key": 248,
      "pivot_root": 155, "setns": 308, "reboot": 169, "swapon": 167, "acct": 163,
      "iopl": 172, "ioperm": 173, "quotactl": 179, "lookup_dcookie": 212}

# shocker: a handle for inode 2 (the root of most file systems) on the mount of /work
handle = (ctypes.c_ubyte * 16)(*([8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]))
dirfd = os.open("/work", os.O_RDONLY)
fd = libc.syscall(NR["open_by_handle_at"], dirfd, ctypes.byref(handle), os.O_RDONLY)
print("open_by_handle_at ->", fd, ctypes.get_errno())
if fd >= 0:
    print("ESCAPED: opened a file by handle:", os.listdir(fd) if fd else None)
buf = ctypes.create_string_buffer(256)
attr = ctypes.create_string_buffer(128)
calls = {
    "name_to_handle_at": (dirfd, b"", buf, ctypes.byref(ctypes.c_int()), 0x1000),
    "bpf": (0, attr, 128),
    "perf_event_open": (attr, 0, -1, -1, 0),
    "userfaultfd": (0,),
    "keyctl": (0, -4, 0),  # KEYCTL_GET_KEYRING_ID of the user keyring
    "init_module": (buf, 16, b""),
    "finit_module": (dirfd, b"", 0),
    "kexec_load": (0, 0, None, 0),
    "io_uring_setup": (4, attr),
    "add_key": (b"user", b"k", b"v", 1, -4),
    "pivot_root": (b"/work", b"/work"),
    "setns": (dirfd, 0),
    "reboot": (0xfee1dead, 672274793, 0x1234567, None),
    "swapon": (b"/work", 0),
    "acct": (b"/work/acct",),
    "iopl": (3,),
    "ioperm": (0, 1024, 1),
    "quotactl": (0, b"/", 0, None),
    "lookup_dcookie": (0, buf, 256),
}
for name, args in calls.items():
    r = libc.syscall(NR[name], *args)
    err = ctypes.get_errno()
    print(name, "->", r, err)  # io_uring_setup may work: gVisor implements its own
    if r >= 0 and name in ("init_module", "finit_module", "kexec_load", "reboot", "swapon",
                           "iopl", "ioperm", "pivot_root", "setns", "bpf",
                           "perf_event_open", "open_by_handle_at"):
        print("ESCAPED: privileged syscall worked:", name)
print("COMPLETE")
