"""While another sandbox is running with a secret in its /work, look for it: by the host
path of its work folder, through /proc of every visible process, and by walking /.

verdict: ok
limits: wall_s=25 cpu_s=25
"""
import os

victim = os.environ["VICTIM_HOST_WORK"]
for p in (victim, f"{victim}/victim-canary.txt", os.path.dirname(victim),
          os.path.dirname(os.path.dirname(victim))):
    try:
        print(p, "->", os.listdir(p) if os.path.isdir(p) else open(p).read())
        print("ESCAPED: reached", p)
    except OSError as e:
        print(p, "->", type(e).__name__, e.errno)
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for sub in ("root/work/victim-canary.txt", "cwd/victim-canary.txt"):
        try:
            print(pid, sub, open(f"/proc/{pid}/{sub}").read())
            print("ESCAPED: read the victim through /proc", pid)
        except OSError:
            pass
skip = ("/proc", "/sys", "/usr", "/dev", os.environ["SITE_PACKAGES"].split("/lib/")[0])
for dirpath, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(dirpath, d) not in skip]
    if "victim-canary.txt" in files:
        print("ESCAPED: found", dirpath)
print("own work:", os.listdir("/work"))
print("COMPLETE")
