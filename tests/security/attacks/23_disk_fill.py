"""Fill the work folder, and keep writing after it is full.

verdict: disk_limit
"""
block = b"x" * (1 << 20)
i = 0
while i < 1000:
    try:
        with open(f"/work/fill-{i}", "wb") as f:
            while True:
                f.write(block)
    except OSError:
        i += 1
