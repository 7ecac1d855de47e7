"""Allocate and touch memory until something gives.

verdict: memory_limit
"""
chunks = []
while True:
    chunks.append(bytearray(16 << 20))
    chunks[-1][::4096] = b"x" * len(chunks[-1][::4096])
