"""Resolve names (the resolver, a raw query to public and configured nameservers).

verdict: ok
"""
import socket
import struct

for name in ("example.com", "pypi.org", "metadata.google.internal", "host.docker.internal"):
    try:
        addrs = {a[4][0] for a in socket.getaddrinfo(name, 80)}
        print(name, "->", addrs)
        if any(not a.startswith(("127.", "::1")) for a in addrs):
            print("ESCAPED: resolved", name)
    except OSError as e:
        print(name, "->", type(e).__name__, e)
query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00" + \
    struct.pack(">HH", 1, 1)
for server in ("8.8.8.8", "1.1.1.1", "10.255.255.53", "127.0.0.53"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    try:
        s.sendto(query, (server, 53))
        data = s.recv(512)
        print("ESCAPED: DNS answer from", server, data[:40])
    except OSError as e:
        print(server, "->", type(e).__name__, e.errno)
    finally:
        s.close()
    try:
        t = socket.create_connection((server, 53), timeout=1)
        t.close()
        print("ESCAPED: TCP DNS to", server)
    except OSError as e:
        print(server, "tcp ->", type(e).__name__, e.errno)
print("COMPLETE")
