"""Helpers shared by the sandbox tests (importable, unlike conftest)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from clowder_ml.sandbox.cgroups import _controller_paths
from clowder_ml.sandbox.gvisor import RunscSandbox


def assert_no_leftovers(sb: RunscSandbox) -> None:
    """No container in runsc's state, no runsc process using our state folder, no mount or
    bundle under our temp root, no run cgroup."""
    listed = subprocess.run([sb.runsc, "--root", str(sb.state_dir), "list", "-quiet"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert listed == [], f"runsc list shows {listed}"
    assert list(sb.state_dir.iterdir()) == []
    marker = str(sb.state_dir).encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert marker not in cmdline, f"leftover process {pid}: {cmdline[:200]!r}"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(sb.tmp_root) not in mounts
    assert [p.name for p in sb.tmp_root.iterdir() if p.name.startswith("cml-")] == []
    for path in _controller_paths().values():
        assert [p.name for p in path.iterdir() if p.name.startswith(sb.run_prefix)] == []
