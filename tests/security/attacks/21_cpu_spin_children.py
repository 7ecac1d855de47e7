"""Spin in several processes at once, so CPU time outruns the wall clock.

verdict: cpu_limit
limits: cpu_s=2 wall_s=20
"""
import os

for _ in range(3):
    if os.fork() == 0:
        break
while True:
    pass
