"""Threads until the sandbox refuses, retry a while, then give up.

verdict: process_limit
"""
import threading
import time

threads, refused = [], 0
while refused < 50:
    try:
        t = threading.Thread(target=time.sleep, args=(60,), daemon=True)
        t.start()
        threads.append(t)
    except RuntimeError:
        refused += 1
print("threads started:", len(threads), "refused:", refused)
raise SystemExit(1)
