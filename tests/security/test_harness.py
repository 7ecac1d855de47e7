"""The host checks of the attack suite are not vacuous: each kind of change an escape would
make is seen by ``snapshot``/``compare``."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from security_helpers import Host, compare, snapshot


def test_snapshot_sees_what_an_escape_would_change(host: Host) -> None:
    before = snapshot(host)
    assert compare(before, snapshot(host)) == []
    dropped = Path("/tmp") / f"{host.marker}-harness"
    planted = host.canary_dir / "host-canary.txt"
    original = planted.read_text()
    tcp_hits, udp_hits = len(host.tcp.hits), len(host.udp.hits)
    try:
        dropped.write_text("x")
        planted.write_text("changed")
        with socket.create_connection(("127.0.0.1", host.tcp.sock.getsockname()[1])):
            pass
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(b"x", ("127.0.0.1", host.udp.sock.getsockname()[1]))
        for _ in range(100):
            if len(host.tcp.hits) > tcp_hits and len(host.udp.hits) > udp_hits:
                break
            time.sleep(0.02)
        problems = " ".join(compare(before, snapshot(host)))
        assert "files dropped on the host" in problems
        assert "host files changed" in problems and str(planted) in problems
        assert "tcp hits" in problems and "udp hits" in problems
    finally:
        dropped.unlink(missing_ok=True)
        planted.write_text(original)
        del host.tcp.hits[tcp_hits:]
        del host.udp.hits[udp_hits:]
    assert compare(before, snapshot(host)) == []
