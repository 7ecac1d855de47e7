"""Exhaust the work folder's inodes with empty files.

verdict: disk_limit
"""
import os

os.mkdir("/work/many")
made = 0
try:
    while True:
        open(f"/work/many/{made}", "w").close()
        made += 1
except OSError as e:
    print("stopped after", made, "files:", e)
