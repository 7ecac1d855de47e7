"""Unix sockets: a host abstract socket (shared by network namespace), and the well-known
control sockets of container runtimes and init.

verdict: ok
"""
import os
import socket

targets = ["\0" + os.environ["UNIX_NAME"], "/var/run/docker.sock", "/run/docker.sock",
           "/run/containerd/containerd.sock", "/run/systemd/private", "/run/dbus/system_bus_socket",
           "\0/org/freedesktop/systemd1/notify", "/tmp/.X11-unix/X0"]
for t in targets:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_UNIX, kind)
        try:
            s.settimeout(1)
            s.connect(t)
            print("ESCAPED: connected to", repr(t))
        except OSError as e:
            print(repr(t), kind, "->", e.errno)
        finally:
            s.close()
print("COMPLETE")
