"""Names built to escape the collect folder or confuse it: asked-for names with '..',
absolute paths, backslashes and NULs are in the test's collect list; inside, odd but legal
names (leading dots, newlines, non-UTF-8 bytes, very long, very deep folders).

verdict: ok
collect: ../escape /etc/passwd a/../../escape ./x a//b a\b ok.txt deep ..hidden link/passwd
"""
import os

os.symlink("/etc", "/work/link")
for name in ("ok.txt", "..hidden", "new\nline", "x" * 255):
    with open(f"/work/{name}", "w") as f:
        f.write("data\n")
with open(b"/work/bad-\xff-utf8", "w") as f:
    f.write("data\n")
# Deeper than any sane output, to exhaust a recursive collector's stack or descriptors.
os.chdir("/work")
os.mkdir("deep")
os.chdir("deep")
for _ in range(1500):
    os.mkdir("d")
    os.chdir("d")
with open("leaf.txt", "w") as f:
    f.write("leaf\n")
print("COMPLETE")
