"""Spread a memory bomb over several processes, each under any per-process limit, so only a
cap on the whole sandbox stops it.

verdict: memory_limit
"""
import os

for _ in range(6):
    if os.fork() == 0:
        break
chunks = []
while True:
    chunks.append(bytearray(8 << 20))
    chunks[-1][::4096] = b"y" * len(chunks[-1][::4096])
