"""UDP datagrams to a host listener on 127.0.0.1 and the host's addresses; the test checks
the listener received nothing.

verdict: ok
"""
import os
import socket

port = int(os.environ["UDP_PORT"])
for ip in [*os.environ["HOST_IPS"].split(","), "255.255.255.255", "224.0.0.1"]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        for _ in range(3):
            s.sendto(b"udp-from-sandbox", (ip, port))
        print(ip, "sent (no error)")
    except OSError as e:
        print(ip, "->", type(e).__name__, e.errno)
    finally:
        s.close()
print("COMPLETE")
