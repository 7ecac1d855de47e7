"""Raw and packet sockets (to forge or sniff traffic), and netlink to list or change the
interfaces.

verdict: ok
"""
import socket

attempts = {
    "raw icmp": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    "raw tcp": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
    "raw ip6": (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
    "packet": (socket.AF_PACKET, socket.SOCK_RAW, 0x0300),
    "packet dgram": (socket.AF_PACKET, socket.SOCK_DGRAM, 0x0300),
}
for what, args in attempts.items():
    try:
        s = socket.socket(*args)
        print("ESCAPED: created", what)
        s.close()
    except OSError as e:
        print(what, "->", type(e).__name__, e.errno)
ifaces = [name for _i, name in socket.if_nameindex()]
print("interfaces:", ifaces)
if any(i != "lo" for i in ifaces):
    print("ESCAPED: a network interface other than loopback:", ifaces)
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("8.8.8.8", 53))
    print("ESCAPED: a route to the outside, source", s.getsockname())
except OSError as e:
    print("route ->", e.errno)
print("COMPLETE")
