"""Daemonize to outlive the run: double fork, new session, ignore every catchable signal,
then, after the run has ended, try to write a host file and phone home. The test waits past
the delay and checks nothing happened and no process is left.

verdict: ok
"""
import os
import signal
import socket
import time

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for s in range(1, signal.NSIG):
            if s not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(s, signal.SIG_IGN)
                except (OSError, ValueError):
                    pass
        os.closerange(0, 3)
        time.sleep(2)
        for p in (f"{os.environ['CANARY_DIR']}/{os.environ['MARKER']}-daemon",
                  f"/tmp/{os.environ['MARKER']}-daemon"):
            try:
                with open(p, "w") as f:
                    f.write("survived\n")
            except OSError:
                pass
        try:
            socket.create_connection(("127.0.0.1", int(os.environ["TCP_PORT"])), timeout=1)
        except OSError:
            pass
        time.sleep(3600)
    os._exit(0)
print("parent leaving; the daemon stays behind")
print("COMPLETE")
