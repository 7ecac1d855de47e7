"""Spin one CPU forever, ignoring every catchable signal.

verdict: cpu_limit
limits: cpu_s=2 wall_s=20
"""
import signal

for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM):
    signal.signal(s, signal.SIG_IGN)
while True:
    pass
