"""Flood stderr from several processes at once.

verdict: output_limit
"""
import os

for _ in range(3):
    if os.fork() == 0:
        break
line = b"E" * 4096
while True:
    os.write(2, line)
