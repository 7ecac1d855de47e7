"""ptrace (through ctypes) of the host platform, the host sentinel and pid 1; reading their
memory with process_vm_readv; a child tracing its parent.

verdict: ok
"""
import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_ATTACH, PTRACE_SEIZE, PTRACE_DETACH = 16, 0x4206, 17
host = [int(os.environ["HOST_PID"]), int(os.environ["SENTINEL_PID"])]
for pid in host:
    for req in (PTRACE_ATTACH, PTRACE_SEIZE):
        r = libc.ptrace(req, pid, None, None)
        err = ctypes.get_errno()
        print("ptrace", req, pid, "->", r, err)
        if r == 0:
            print("ESCAPED: traced host pid", pid)
            libc.ptrace(PTRACE_DETACH, pid, None, None)


class IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


buf = ctypes.create_string_buffer(64)
local = IOVec(ctypes.cast(buf, ctypes.c_void_p), 64)
remote = IOVec(0x400000, 64)
for pid in host:
    n = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    print("process_vm_readv", pid, "->", n, ctypes.get_errno())
    if n > 0:
        print("ESCAPED: read memory of", pid)
child = os.fork()
if child == 0:
    r = libc.ptrace(PTRACE_ATTACH, os.getppid(), None, None)
    print("child traces its parent ->", r, ctypes.get_errno(), flush=True)
    os._exit(0)
os.waitpid(child, 0)
print("COMPLETE")
