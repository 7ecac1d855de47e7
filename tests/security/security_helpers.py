"""Helpers of the attack suite: the host under attack, the listeners that must never hear
from a sandbox, and a snapshot of everything an escape could change on the host.

The attacks themselves are programs under ``attacks/``; ``test_attacks.py`` runs each one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import subprocess
import sys
import sysconfig
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clowder_ml.sandbox.cgroups import _controller_paths
from clowder_ml.sandbox.gvisor import RunscSandbox

SECRET_ENV = "CLOWDER_ML_SECRET_CANARY"
NOBODY = 65534


class Listener:
    """Counts everything that reaches a host socket (TCP accepts, UDP datagrams, abstract
    unix-socket connections). A sandbox with no network must never make it count."""

    def __init__(self, sock: socket.socket, stream: bool) -> None:
        self.sock = sock
        self.stream = stream
        self.hits: list[str] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                if self.stream:
                    conn, addr = self.sock.accept()
                    self.hits.append(f"connection from {addr!r}")
                    conn.close()
                else:
                    data, addr = self.sock.recvfrom(65536)
                    self.hits.append(f"datagram from {addr!r}: {data[:80]!r}")
            except OSError:
                return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass
class Host:
    """Everything the attacks aim at, and the strings that must never leave the host."""

    sb: RunscSandbox
    root: Path
    data_dir: Path  # a fake platform data folder: SQLite database and a blob
    canary_dir: Path  # a host folder outside every sandbox, with a secret file
    input_dir: Path  # mounted read-only at /data in every attack
    ssh_dir: Path
    marker: str  # attacks name the files they try to create on the host with this
    secrets: dict[str, str]  # what -> value; none may appear in any sandbox output
    tcp: Listener
    udp: Listener
    unix: Listener
    unix_name: str
    sentinel: subprocess.Popen[bytes]  # a host process the attacks try to kill or trace
    env: dict[str, str] = field(default_factory=dict)


def _digest(path: Path) -> str:
    try:
        if path.is_symlink():
            return "link:" + os.readlink(path)
        if path.is_dir():
            names = sorted(os.listdir(path))
            return "dir:" + hashlib.sha256("\0".join(names).encode()).hexdigest()
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"error:{exc.errno}"


def _tree(path: Path) -> dict[str, str]:
    out = {str(path): _digest(path)}
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p)] = f"{_digest(p)}:{st.st_mode:o}:{st.st_uid}:{st.st_size}"
    return out


def _processes() -> dict[int, tuple[int, bytes, str, int]]:
    """pid -> (uid, cmdline, state, parent pid) for every host process."""
    procs: dict[int, tuple[int, bytes, str, int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        procs[int(pid)] = (uid, cmd, fields[0], int(fields[1]))
    return procs


def _live_nobody(procs: dict[int, tuple[int, bytes, str, int]], ours: bytes) -> list[int]:
    """Live (not zombie) host processes running as nobody that are not part of another
    session's sandbox on this shared machine (gVisor's ptrace stubs run as nobody)."""
    found = []
    for pid, (uid, _cmd, state, _ppid) in procs.items():
        if uid != NOBODY or state in ("Z", "X"):
            continue
        parent, foreign = pid, False
        for _ in range(64):
            info = procs.get(parent)
            if info is None or parent <= 1:
                break
            if b"runsc" in info[1] and ours not in info[1]:
                foreign = True
                break
            parent = info[3]
        if not foreign:
            found.append(pid)
    return sorted(found)


# Host folders where an escaped program would most likely drop a file.
_DROP_DIRS = ("/", "/tmp", "/var/tmp", "/dev/shm", "/root", "/work", "/usr/local/bin",
              "/etc")


def watched_files(host: Host) -> dict[str, str]:
    """Digests of host files an escape would read or change."""
    files: dict[str, str] = {}
    for tree in (host.data_dir, host.canary_dir, host.input_dir, host.ssh_dir):
        files.update(_tree(tree))
    purelib = Path(sysconfig.get_paths()["purelib"])
    for p in (Path(sys.executable).resolve(), purelib, Path("/etc/passwd"),
              Path("/etc/shadow"), Path("/etc/hosts"), Path("/etc/hostname"),
              Path("/etc/resolv.conf"), Path("/proc/sys/kernel/core_pattern"),
              Path("/proc/sys/kernel/hostname"), Path("/usr/bin/runsc")):
        files[str(p)] = _digest(p)
    for ctrl in _controller_paths().values():
        for name in ("release_agent", "notify_on_release"):
            p = ctrl / name
            if p.exists():
                files[str(p)] = _digest(p)
    return files


def snapshot(host: Host) -> dict[str, Any]:
    """Everything that must be the same before and after an attack (and the idle state)."""
    sb = host.sb
    listed = subprocess.run([sb.runsc, "--root", str(sb.state_dir), "list", "-quiet"],
                            capture_output=True, text=True, check=True).stdout.split()
    state_marker = str(sb.state_dir).encode()
    prefix = sb.run_prefix.encode()
    procs = _processes()
    ours = sorted(f"{pid}: {cmd[:160]!r}" for pid, (_uid, cmd, _s, _p) in procs.items()
                  if state_marker in cmd or prefix in cmd)
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    our_mounts = [m for m in mounts if str(sb.tmp_root) in m or str(host.root) in m]
    # Other sessions on this machine may mount their own sandboxes under /tmp; any other
    # new mount point is ours to explain.
    points = sorted({m.split()[4] for m in mounts if not m.split()[4].startswith("/tmp/")})
    drops = sorted(str(Path(d) / n) for d in _DROP_DIRS if os.path.isdir(d)
                   for n in os.listdir(d) if host.marker in n)
    cgroups = sorted(str(p / c.name) for p in _controller_paths().values()
                     for c in p.iterdir() if c.name.startswith(sb.run_prefix))
    return {
        "runsc list": listed,
        "runsc state": sorted(p.name for p in sb.state_dir.iterdir()),
        "sandbox temp root": sorted(p.name for p in sb.tmp_root.iterdir()
                                    if p.name != "runsc-state"),
        "processes of our runs": ours,
        "mounts under our roots": our_mounts,
        "host mount points": points,
        "files dropped on the host": drops,
        "run cgroups": cgroups,
        "watched files": watched_files(host),
        "sentinel alive": host.sentinel.poll() is None,
        "tcp hits": list(host.tcp.hits),
        "udp hits": list(host.udp.hits),
        "unix hits": list(host.unix.hits),
        "nobody processes": _live_nobody(procs, state_marker),
    }


def listeners() -> tuple[Listener, Listener, Listener, str]:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", 0))
    tcp.listen(16)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 0))
    name = f"clowder-attack-{secrets.token_hex(4)}"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0" + name)
    unix.listen(4)
    return Listener(tcp, True), Listener(udp, False), Listener(unix, True), name


def host_ips() -> list[str]:
    ips = {"127.0.0.1"}
    with contextlib.suppress(OSError):
        out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,
                             check=False).stdout
        for line in out.splitlines():
            parts = line.split()
            if "inet" in parts:
                ips.add(parts[parts.index("inet") + 1].split("/")[0])
    return sorted(ips)


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two snapshots, in words (empty: the host is unchanged)."""
    problems = []
    for key, was in before.items():
        now = after[key]
        if key == "nobody processes":
            new = sorted(set(now) - set(was))
            if new:
                problems.append(f"new host processes running as nobody: {new}")
        elif key == "watched files":
            changed = {k: (was.get(k), now.get(k)) for k in set(was) | set(now)
                       if was.get(k) != now.get(k)}
            if changed:
                problems.append(f"host files changed: {changed}")
        elif now != was:
            problems.append(f"{key}: {was!r} -> {now!r}")
    return problems
