"""Flood stdout.

verdict: output_limit
"""
import os

line = b"A" * 65536
while True:
    os.write(1, line)
