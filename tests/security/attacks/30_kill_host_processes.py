"""Signal host processes: the platform's own pid and a host sentinel (both passed in),
every pid up to 4096, process groups, and finally pid 1 (which, inside, is this program).

verdict: killed
"""
import os
import signal

host_pid = int(os.environ["HOST_PID"])
sentinel = int(os.environ["SENTINEL_PID"])
for pid in (host_pid, sentinel):
    for sig in (0, signal.SIGTERM, signal.SIGKILL, signal.SIGSTOP):
        try:
            os.kill(pid, sig)
            print("signal", sig, "to", pid, "accepted")
        except OSError as e:
            print("signal", sig, "to", pid, "->", e.errno)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError as e:
        print("killpg", pid, "->", e.errno)
visible = []
for pid in range(2, 4097):
    try:
        os.kill(pid, 0)
        visible.append(pid)
    except OSError:
        pass
print("visible pids besides mine:", visible)
if visible:
    print("ESCAPED: other processes are visible")
try:
    os.kill(-1, signal.SIGKILL)  # every process we may signal, except ourselves
    print("kill(-1) accepted")
except OSError as e:
    print("kill(-1) ->", e.errno)
print("COMPLETE")
os.kill(1, signal.SIGKILL)
