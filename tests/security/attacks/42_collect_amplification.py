"""Make collection write far more to the host than the work folder holds: a sparse file that
claims hundreds of megabytes in a 16 MiB work folder, and one file hard-linked many times.
Whatever is collected must fit in the disk limit.

verdict: ok
collect: *
"""
import os

with open("/work/sparse.bin", "wb") as f:
    f.truncate(200 << 20)
with open("/work/block.bin", "wb") as f:
    f.write(os.urandom(4 << 20))
os.mkdir("/work/links")
made = 0
for i in range(100):
    try:
        os.link("/work/block.bin", f"/work/links/{i}.bin")
        made += 1
    except OSError as e:
        print("link", i, "->", e.errno)
        break
print("hard links:", made, "work folder use:", os.statvfs("/work").f_bfree)
print("COMPLETE")
