"""Sleep forever, ignoring the polite signals, in a new session and a child.

verdict: timeout
limits: wall_s=2
"""
import os
import signal
import time

for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
if os.fork() == 0:
    os.setsid()
while True:
    time.sleep(3600)
