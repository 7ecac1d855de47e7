"""Fill the sandbox's /tmp (a tmpfs living in the sandbox's memory) and /dev/shm.

verdict: memory_limit
"""
i = 0
block = b"x" * (1 << 20)
while True:
    for d in ("/tmp", "/dev/shm"):
        try:
            with open(f"{d}/fill-{i}", "wb") as f:
                for _ in range(16):
                    f.write(block)
        except OSError:
            pass
    i += 1
