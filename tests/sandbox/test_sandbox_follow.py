"""Following a file of /work from the host while the program runs (``Sandbox.run(follow=)``),
on gVisor and on bubblewrap: lines arrive while it runs, the rest after it ended, and what
the program leaves there (a symlink to a host file, a FIFO, a huge file) is never followed,
never blocks the host and is read only up to the cap."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from clowder_ml.sandbox import SandboxResult
from clowder_ml.sandbox.follow import Follow

RunPy = Callable[..., SandboxResult]


@pytest.fixture(params=["run_py", "run_bwrap"])
def runner(request: pytest.FixtureRequest) -> RunPy:
    fixture: RunPy = request.getfixturevalue(request.param)
    return fixture


def test_lines_arrive_while_the_program_runs(runner: RunPy) -> None:
    got: list[tuple[float, int, bytes]] = []
    first = threading.Event()

    def on_data(offset: int, data: bytes) -> None:
        got.append((time.monotonic(), offset, data))
        first.set()

    # The pause between the two writes is what is under test (a program busy between two
    # lines); nothing on the host can signal into the sandbox to end it sooner.
    res = runner("""
        import time
        with open("/work/m.jsonl", "a") as f:
            f.write("one\\n")
            f.flush()
            time.sleep(3)
            f.write("two")
        """, wall_s=30, follow={"m.jsonl": Follow(on_data, interval_s=0.05)})
    ended = time.monotonic()
    assert res.ok, res
    assert b"".join(d for _, _, d in got) == b"one\ntwo"
    assert got[0][1:] == (0, b"one\n")
    # Seen while the program was still sleeping, not only after it ended.
    assert ended - got[0][0] > 2.0, (ended - got[0][0], got)
    assert [o for _, o, _ in got] == sorted(o for _, o, _ in got)


def test_links_fifos_and_huge_files_are_not_followed_past_the_cap(runner: RunPy) -> None:
    got: dict[str, bytes] = {"link": b"", "fifo": b"", "big": b""}

    def sink(name: str) -> Follow:
        def on_data(offset: int, data: bytes) -> None:
            got[name] += data
        return Follow(on_data, max_bytes=4096, interval_s=0.05)

    res = runner("""
        import os, time
        os.symlink("/etc/hostname", "/work/link")
        try:
            os.mkfifo("/work/fifo")
        except OSError:
            pass
        with open("/work/big", "wb") as f:
            f.write(b"x" * (3 << 20))
        time.sleep(0.5)
        """, wall_s=30, disk_bytes=16 << 20,
        follow={name: sink(name) for name in ("link", "fifo", "big")})
    assert res.ok, res
    assert got == {"link": b"", "fifo": b"", "big": b"x" * 4096}
