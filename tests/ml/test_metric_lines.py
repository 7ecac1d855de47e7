"""The incremental metrics.jsonl parser of ``custom-script`` (partial lines, bad lines, caps,
a file read again from its start) and the host-side follower that feeds it (no sandbox
needed: it reads a host folder, as it reads a live sandbox's work folder)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from clowder_ml.errors import ValidationFailed
from clowder_ml.sandbox.follow import Follow, Follower
from clowder_ml.tasks import custom_script as cs


def line(step: int, name: str = "loss", value: float = 1.0) -> bytes:
    return json.dumps({"step": step, "name": name, "value": value}).encode() + b"\n"


def test_partial_lines_wait_for_their_newline() -> None:
    p = cs.MetricLines()
    data = line(1, value=0.5) + line(2, value=0.25)
    cut = len(line(1)) - 3
    assert p.feed(0, data[:cut]) == []  # line 1 not complete yet
    assert p.feed(cut, data[cut:len(line(1, value=0.5)) + 4]) == [(1, "loss", 0.5)]
    rest = len(line(1, value=0.5)) + 4
    assert p.feed(rest, data[rest:]) == [(2, "loss", 0.25)]
    assert p.finish() == []
    assert p.points == [(1, "loss", 0.5), (2, "loss", 0.25)] and p.skipped == []


def test_a_last_line_without_newline_is_read_at_finish() -> None:
    p = cs.MetricLines()
    assert p.feed(0, line(1) + b'{"name": "acc", "value": 0.9}') == [(1, "loss", 1.0)]
    assert p.finish() == [(2, "acc", 0.9)]  # step defaults to the line number
    assert p.feed(100, line(9)) == []  # finished: nothing more


def test_bad_lines_are_skipped_and_counted_byte_by_byte() -> None:
    text = ('{"name": "a", "value": 1}\n\n[1]\n{"name": "a", "value": "x"}\n'
            '{"name": "b", "value": 2, "step": -1}\n{"name": "b", "value": 2.5, '
            '"step": 7}\n{"name": "c", "value": Infinity}\n\xff{\n').encode()
    p = cs.MetricLines()
    got = []
    for i in range(len(text)):  # one byte at a time: splits everywhere, UTF-8 included
        got += p.feed(i, text[i:i + 1])
    got += p.finish()
    assert got == p.points == [(1, "a", 1.0), (7, "b", 2.5)]
    assert [s.split(":")[0] for s in p.skipped] == ["line 3", "line 4", "line 5", "line 7",
                                                   "line 8"]
    assert p.skipped[0] == "line 3: not an object"


def test_caps_on_lines_line_length_and_bytes() -> None:
    p = cs.MetricLines(max_lines=2)
    assert p.feed(0, line(1) + line(2) + line(3) + line(4)) == [(1, "loss", 1.0),
                                                               (2, "loss", 1.0)]
    assert p.skipped == ["line 3: over 2 lines, rest ignored"]

    p = cs.MetricLines(max_line_bytes=64)
    long = b'{"name": "x", "value": 1, "pad": "' + b"y" * 500 + b'"}\n'
    assert p.feed(0, long[:100]) == []
    assert p.feed(100, long[100:] + line(2)) == [(2, "loss", 1.0)]
    assert p.skipped == ["line 1: longer than 64 bytes"]
    assert len(p._pending) == 0

    p = cs.MetricLines(max_bytes=2 << 20)
    big = line(1) * ((3 << 20) // len(line(1)))
    points = p.feed(0, big)
    assert len(points) == (2 << 20) // len(line(1))  # whole lines within the cap only
    assert p.skipped[-1].endswith("over 2 MiB read, rest ignored")
    assert p.feed(len(big), line(5)) == [] and p.finish() == []


def test_a_rewritten_file_reports_each_line_once() -> None:
    p = cs.MetricLines()
    first = line(1) + line(2)
    assert len(p.feed(0, first)) == 2
    # The script rewrote the whole file (open(..., "w")) with one more line.
    assert p.feed(0, first + line(3)) == [(3, "loss", 1.0)]
    assert [s for s, _, _ in p.points] == [1, 2, 3]
    with pytest.raises(ValueError, match="out of order"):
        p.feed(5, b"x")


def test_read_metrics_shares_the_parser(tmp_path: Path) -> None:
    f = tmp_path / "m.jsonl"
    f.write_bytes(line(1) + b"nope\n" + b'{"name": "z", "value": 3}')
    assert cs.read_metrics(f) == ([(1, "loss", 1.0), (3, "z", 3.0)], ["line 2: not JSON"])


# --------------------------------------------------------------------------- the follower


def test_the_follower_delivers_appends_in_order_and_the_rest_at_finish(tmp_path: Path
                                                                       ) -> None:
    got: list[tuple[int, bytes]] = []
    seen = threading.Event()

    def on_data(offset: int, data: bytes) -> None:
        got.append((offset, data))
        seen.set()

    fol = Follower({"metrics.jsonl": Follow(on_data, interval_s=0.02)})
    fol.start(tmp_path)
    with open(tmp_path / "metrics.jsonl", "ab", buffering=0) as f:
        f.write(b"one\n")
        assert seen.wait(5), "the first line was not delivered while running"
        f.write(b"two\nthr")
    fol.finish()  # the rest, after the "program" ended
    assert b"".join(d for _, d in got) == b"one\ntwo\nthr"
    offsets = [o for o, _ in got]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert fol.error is None


def test_the_follower_never_reads_through_links_or_fifos_and_caps_bytes(tmp_path: Path
                                                                        ) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"host secret\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "link.jsonl").symlink_to(secret)
    os.mkfifo(work / "fifo.jsonl")
    (work / "big.jsonl").write_bytes(b"x" * 5000)
    got: dict[str, bytes] = {"link.jsonl": b"", "fifo.jsonl": b"", "big.jsonl": b""}

    def sink(name: str) -> Follow:
        def on_data(offset: int, data: bytes) -> None:
            got[name] += data
        return Follow(on_data, max_bytes=1000, interval_s=0.02)

    fol = Follower({n: sink(n) for n in got})
    fol.start(work)
    fol.finish()  # would hang on the FIFO if it were opened blocking
    assert got == {"link.jsonl": b"", "fifo.jsonl": b"", "big.jsonl": b"x" * 1000}
    with pytest.raises(ValidationFailed):
        Follower({"../escape": sink("big.jsonl")})
    with pytest.raises(ValidationFailed):
        Follower({"sub/m.jsonl": sink("big.jsonl")})


def test_a_failing_callback_stops_following_and_is_kept(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b"a\n")

    def on_data(offset: int, data: bytes) -> None:
        raise RuntimeError("boom")

    fol = Follower({"m": Follow(on_data)})
    fol.start(tmp_path)
    fol.finish()
    assert isinstance(fol.error, RuntimeError)
