"""TCP to a server the host runs on 127.0.0.1 (and on the host's own addresses), plus
well-known local services (PostgreSQL, SSH, the Ray dashboard, Redis).

verdict: ok
"""
import os
import socket

port = int(os.environ["TCP_PORT"])
targets = [(ip, port) for ip in os.environ["HOST_IPS"].split(",")]
targets += [("127.0.0.1", p) for p in (22, 5432, 6379, 8265, 2024)]
targets += [("::1", port), ("localhost", port), ("10.0.2.2", port), ("172.17.0.1", port)]
for addr in targets:
    try:
        s = socket.create_connection(addr, timeout=1)
        s.close()
        print("ESCAPED: connected to", addr)
    except OSError as e:
        print(addr, "->", type(e).__name__, e.errno)
print("COMPLETE")
