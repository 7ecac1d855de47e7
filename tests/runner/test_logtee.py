"""LogTee replaces fds 1 and 2 of its process, so it runs in a child Python, never in pytest's."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import json, os, subprocess, sys
    from clowder_ml.runner.logtee import LogTee

    got = []
    tee = LogTee(got.append).start()
    print("from python")
    print("python stderr", file=sys.stderr)
    os.write(2, b"raw fd 2\\n")
    os.write(1, "raw fd 1 \\u20ac\\n".encode())
    subprocess.run(["echo", "from child"], check=True)
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('child stderr\\\\n')"],
                   check=True)
    tee.stop()
    print("after stop")
    os.write(2, b"stderr after stop\\n")
    with open(sys.argv[1], "w") as f:
        json.dump(b"".join(got).decode("utf-8"), f)
""")


def test_logtee_captures_python_raw_fds_and_children(tmp_path: Path) -> None:
    script = tmp_path / "tee.py"
    script.write_text(SCRIPT)
    dump = tmp_path / "got.json"
    r = subprocess.run([sys.executable, str(script), str(dump)], capture_output=True,
                       timeout=30, check=False)
    assert r.returncode == 0, r.stderr.decode()
    captured: str = json.loads(dump.read_text())
    expected = ["from python", "python stderr", "raw fd 2", "raw fd 1 €", "from child",
                "child stderr"]
    assert captured.splitlines() == expected  # all of it, in the order it was written
    assert "after stop" not in captured

    # still shown on the real stdout (stderr is copied there too while the tee runs) ...
    out = r.stdout.decode().splitlines()
    assert out == [*expected, "after stop"]
    # ... and after stop() the real stderr is back in place
    assert r.stderr.decode().splitlines() == ["stderr after stop"]
