"""Reporter against a fake runner API that applies reports the way the server does."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from clowder_ml.runner import reporter as reporter_mod
from clowder_ml.runner.api import ApiFailed, TokenRefused
from clowder_ml.runner.reporter import MAX_LOG_CHUNK, MAX_METRICS_PER_BATCH, Reporter


class Runaway(Exception):
    """The reporter kept sending far more batches than its queue could need."""


class FakeServer:
    """Stands in for ``RunnerApi``: records every body and applies it like
    ``job_runs.record_report`` / ``_write_log`` (place at offset, ignore replays, refuse gaps
    by answering the current size, cut at ``max_log``)."""

    def __init__(self, *, max_log: int | None = None, max_calls: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.log = bytearray()
        self.events: list[str] = []
        self.metrics: list[dict[str, Any]] = []
        self.progress: dict[str, Any] | None = None
        self.started_at: list[str] = []
        self.cancel = False
        self.fail = 0  # the next N calls fail before reaching the server
        self.lose_answers = 0  # the next N calls are applied but the answer is lost
        self.refuse_token = False
        self.max_log = max_log
        self.max_calls = max_calls

    def report(self, body: dict[str, Any], *, retry_s: float | None = None) -> dict[str, Any]:
        self.bodies.append(copy.deepcopy(body))
        if len(self.bodies) > self.max_calls:
            raise Runaway(f"{len(self.bodies)} reports")
        if self.refuse_token:
            raise TokenRefused("job over")
        if self.fail:
            self.fail -= 1
            raise ApiFailed("POST /report: server unreachable (HTTP 503)")
        size = self._apply(body)
        if self.lose_answers:
            self.lose_answers -= 1
            raise ApiFailed("POST /report: server unreachable (ReadTimeout)")
        return {"cancel_requested": self.cancel, "log_offset": size}

    def _apply(self, body: dict[str, Any]) -> int:
        if "started_at" in body:
            self.started_at.append(body["started_at"])
        self.events += [e["message"] for e in body.get("events", [])]
        self.metrics += body.get("metrics", [])
        if body.get("progress") is not None:
            self.progress = body["progress"]
        if "log" in body:
            return self._write_log(body["log"]["offset"],
                                   body["log"]["data"].encode("utf-8", "replace"))
        return len(self.log)

    def _write_log(self, offset: int, data: bytes) -> int:
        size = len(self.log)
        if offset > size:
            return size  # a gap: resend from ``size``
        end = offset + len(data)
        if end <= size or not data:
            return size  # a replay
        if self.max_log is not None and end > self.max_log:
            data = data[: max(0, self.max_log - offset)]
            end = offset + len(data)
            if end <= size:
                return size
        self.log[offset:end] = data
        return end

    def log_bodies(self) -> list[dict[str, Any]]:
        return [b["log"] for b in self.bodies if "log" in b]


def test_events_metrics_progress_sent_once_across_a_failed_batch() -> None:
    server = FakeServer()
    rep = Reporter(server)  # type: ignore[arg-type]
    rep.started(1_700_000_000.0)
    rep.event("one")
    rep.metric(1, "loss", 0.5)
    rep.progress(1, 10, "first")
    server.fail = 1
    with pytest.raises(ApiFailed):
        rep.flush(retry_s=0)
    assert server.events == [] and server.metrics == []

    rep.event("two")
    rep.metric(2, "loss", 0.25)
    rep.progress(2, 10, "second")
    assert rep.flush() is True
    assert server.events == ["one", "two"]
    assert [(m["step"], m["value"]) for m in server.metrics] == [(1, 0.5), (2, 0.25)]
    assert server.progress == {"done": 2.0, "total": 10.0, "message": "second"}
    assert server.started_at == ["2023-11-14T22:13:20+00:00"]

    # nothing is left: a further flush sends nothing and the retried items never reappear
    calls = len(server.bodies)
    assert rep.flush() is True
    assert len(server.bodies) == calls
    rep.event("three")
    rep.flush()
    assert server.events == ["one", "two", "three"]
    assert server.started_at == ["2023-11-14T22:13:20+00:00"]
    assert "progress" not in server.bodies[-1] and "started_at" not in server.bodies[-1]


def test_many_metrics_go_in_several_batches_in_order() -> None:
    server = FakeServer()
    rep = Reporter(server)  # type: ignore[arg-type]
    n = MAX_METRICS_PER_BATCH + 7
    for i in range(n):
        rep.metric(i, "m", float(i))
    assert rep.flush(retry_s=0) is False  # one batch at a time from the background loop
    assert len(server.metrics) == MAX_METRICS_PER_BATCH
    assert rep.flush(retry_s=0) is True
    assert [m["step"] for m in server.metrics] == list(range(n))
    assert all(len(b.get("metrics", [])) <= MAX_METRICS_PER_BATCH for b in server.bodies)


def test_non_finite_metric_values_become_none() -> None:
    server = FakeServer()
    rep = Reporter(server)  # type: ignore[arg-type]
    for step, v in enumerate([math.nan, math.inf, -math.inf, 0.5, 3]):
        rep.metric(step, "loss", v)
    rep.flush()
    assert [m["value"] for m in server.metrics] == [None, None, None, 0.5, 3.0]
    assert isinstance(server.metrics[4]["value"], float)


def test_log_equals_bytes_given_with_split_characters_and_invalid_bytes() -> None:
    server = FakeServer()
    rep = Reporter(server)  # type: ignore[arg-type]
    euro = "€".encode()  # 3 bytes
    chunks = [b"start ", euro[:1], euro[1:2], euro[2:] + b" \xff bad\n", "é".encode()[:1]]
    for c in chunks:
        rep.log_bytes(c)
    rep.flush(retry_s=0)
    rep.log_bytes("é".encode()[1:] + "✓ done\n".encode())
    rep.flush()
    assert bytes(server.log) == "start € \ufffd bad\né✓ done\n".encode()
    # every batch was valid text at a contiguous offset
    offset = 0
    for part in server.log_bodies():
        assert part["offset"] == offset
        offset += len(part["data"].encode("utf-8"))


def test_log_larger_than_a_chunk_is_split_without_splitting_characters() -> None:
    server = FakeServer()
    rep = Reporter(server)  # type: ignore[arg-type]
    # "ab" first, so that MAX_LOG_CHUNK falls inside a 3-byte character
    text = "ab" + "€" * (MAX_LOG_CHUNK // 3 * 2) + "\nend\n"
    raw = text.encode()
    assert raw[MAX_LOG_CHUNK] & 0xC0 == 0x80
    for i in range(0, len(raw), 65536):  # the tee's read size: splits characters too
        rep.log_bytes(raw[i:i + 65536])
    assert rep.flush() is True
    parts = server.log_bodies()
    assert len(parts) == 3
    for part in parts:
        data = part["data"].encode("utf-8")
        assert 0 < len(data) <= MAX_LOG_CHUNK
        assert "\ufffd" not in part["data"]
    assert [p["offset"] for p in parts] == [0, len(parts[0]["data"].encode()),
                                           len((parts[0]["data"] + parts[1]["data"]).encode())]
    assert bytes(server.log) == raw


def test_lost_answer_does_not_duplicate_log_text() -> None:
    server = FakeServer()
    rep = Reporter(server)  # type: ignore[arg-type]
    rep.log_bytes(b"line 1\n")
    server.lose_answers = 1
    with pytest.raises(ApiFailed):
        rep.flush(retry_s=0)
    assert bytes(server.log) == b"line 1\n"  # the server did apply it
    rep.log_bytes(b"line 2\n")
    assert rep.flush() is True
    assert bytes(server.log) == b"line 1\nline 2\n"
    # the replay restarted at offset 0, and the server placed it there
    assert [p["offset"] for p in server.log_bodies()] == [0, 0]


def test_failed_batch_log_is_resent_from_the_same_offset() -> None:
    server = FakeServer()
    rep = Reporter(server)  # type: ignore[arg-type]
    rep.log_bytes(b"a\n")
    rep.flush()
    rep.log_bytes(b"b\n")
    server.fail = 2
    for _ in range(2):
        with pytest.raises(ApiFailed):
            rep.flush(retry_s=0)
    rep.log_bytes(b"c\n")
    rep.flush()
    assert bytes(server.log) == b"a\nb\nc\n"
    assert [p["offset"] for p in server.log_bodies()] == [0, 2, 2, 2]
    assert server.log_bodies()[-1]["data"] == "b\nc\n"


def test_close_sends_everything_left() -> None:
    server = FakeServer()
    rep = Reporter(server, interval_s=3600)  # type: ignore[arg-type]
    rep.started(0.0)
    rep.start()  # the first batch goes at once ("started")
    rep.event("queued")
    rep.metric(7, "acc", 0.9)
    rep.progress(3, None, "almost")
    for i in range(3000):
        rep.log_bytes(f"line {i:05d} {'x' * 400}\n".encode())  # > MAX_LOG_CHUNK in all
    rep.close()
    assert rep._thread is not None and not rep._thread.is_alive()
    assert server.events == ["queued"]
    assert server.metrics == [{"step": 7, "name": "acc", "value": 0.9}]
    assert server.progress == {"done": 3.0, "total": None, "message": "almost"}
    assert len(server.started_at) == 1
    assert bytes(server.log) == b"".join(f"line {i:05d} {'x' * 400}\n".encode()
                                         for i in range(3000))


def test_background_loop_sends_without_being_asked() -> None:
    server = FakeServer()
    rep = Reporter(server, interval_s=0.01)  # type: ignore[arg-type]
    rep.start()
    rep.event("hello")
    rep.log_bytes(b"hi\n")
    for _ in range(500):
        if server.events and server.log:
            break
        rep._stop.wait(0.01)
    rep.close()
    assert server.events == ["hello"]
    assert bytes(server.log) == b"hi\n"


def test_cancel_requested_from_the_ack_is_exposed() -> None:
    server = FakeServer()
    rep = Reporter(server)  # type: ignore[arg-type]
    rep.event("x")
    rep.flush()
    assert rep.cancel_requested is False
    server.cancel = True
    rep.event("y")
    rep.flush()
    assert rep.cancel_requested is True


def test_token_refused_stops_the_background_loop() -> None:
    server = FakeServer()
    server.refuse_token = True
    rep = Reporter(server, interval_s=0.01)  # type: ignore[arg-type]
    rep.event("x")
    rep.start()
    assert rep._thread is not None
    rep._thread.join(5)
    assert not rep._thread.is_alive()
    assert rep.token_refused is True


# defects found and fixed: these keep them fixed -------------------------------------------

def test_truncated_character_at_the_end_of_the_log_becomes_replacement() -> None:
    server = FakeServer()
    rep = Reporter(server)  # type: ignore[arg-type]
    rep.log_bytes(b"abc" + "€".encode()[:2])
    rep.close()
    assert bytes(server.log) == "abc\ufffd".encode()


def test_buffer_overflow_never_cuts_a_character(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reporter_mod, "MAX_BUFFERED_LOG", 10)
    server = FakeServer()
    rep = Reporter(server)  # type: ignore[arg-type]
    rep.log_bytes(("é" * 5 + "a").encode())  # 11 bytes: the oldest byte is half an "é"
    body = rep._take()
    assert body["log"]["data"].endswith("a")


def test_log_after_buffer_overflow_still_reaches_the_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reporter_mod, "MAX_BUFFERED_LOG", 10)
    server = FakeServer()
    rep = Reporter(server)  # type: ignore[arg-type]
    rep.log_bytes(b"0123456789AB")  # server away: the two oldest bytes are dropped
    for _ in range(3):
        rep.flush(retry_s=0)
    rep.log_bytes(b"new\n")
    for _ in range(3):
        rep.flush(retry_s=0)
    assert bytes(server.log).endswith(b"new\n")


def test_close_returns_when_the_server_log_is_full() -> None:
    server = FakeServer(max_log=8, max_calls=100)
    rep = Reporter(server)  # type: ignore[arg-type]
    rep.log_bytes(b"0123456789abcdef\n")
    try:
        rep.close()
    except Runaway:
        pytest.fail(f"close() re-sent the refused log {len(server.bodies)} times")
    assert bytes(server.log) == b"01234567"
