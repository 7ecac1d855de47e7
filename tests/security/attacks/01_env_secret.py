"""Read a secret planted in the platform's environment: our own environment, and every
process's /proc/<pid>/environ the sandbox can see.

verdict: ok
"""
import os

name = os.environ["SECRET_ENV_NAME"]
if name in os.environ:
    print("ESCAPED: the host secret is in the environment")
print("env keys:", sorted(os.environ))
for pid in [p for p in os.listdir("/proc") if p.isdigit()] + ["self"]:
    try:
        raw = open(f"/proc/{pid}/environ", "rb").read()
    except OSError as e:
        print(pid, "environ:", e)
        continue
    print(pid, "environ:", raw[:2000])
    if (name + "=").encode() in raw:
        print("ESCAPED: the host secret is in", pid)
print("COMPLETE")
