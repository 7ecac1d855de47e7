"""Batches the runner's events, metrics, progress and log, and sends them every interval.

Calls from the task (``event``, ``metric``, ``progress``) only append to memory, so a slow or
restarting server never slows the task down; a background thread sends one batch per
``interval_s``. A batch that fails stays queued and goes with the next one. The log is sent
by byte offset: the server places it by offset, so a batch replayed after a lost answer is
not duplicated.
"""

from __future__ import annotations

import codecs
import logging
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from clowder_ml.runner.api import ApiFailed, RunnerApi, TokenRefused

log = logging.getLogger("clowder_ml.runner")
MAX_LOG_CHUNK = 1 << 20
MAX_BUFFERED_LOG = 64 << 20  # kept while the server is away; the oldest is dropped past it
MAX_METRICS_PER_BATCH = 5000


class Reporter:
    def __init__(self, api: RunnerApi, *, interval_s: float = 1.0,
                 on_token_refused: Callable[[], None] | None = None) -> None:
        """``on_token_refused`` runs (once, in the sender thread) when the server refuses the
        job token: the job has ended there, so the runner should stop its work."""
        self._api = api
        self._on_token_refused = on_token_refused
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._metrics: list[dict[str, Any]] = []
        self._progress: dict[str, Any] | None = None
        self._started_at: datetime | None = None
        self._log = bytearray()  # not yet accepted by the server, from ``_log_offset``
        self._log_offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._log_full = False  # the server stores no more log for this job
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cancel_requested = False
        self.token_refused = False

    # what the task calls -------------------------------------------------------------------

    def started(self, at: float) -> None:
        with self._lock:
            self._started_at = datetime.fromtimestamp(at, UTC)

    def event(self, message: str) -> None:
        with self._lock:
            self._events.append({"message": message[:2000]})

    def metric(self, step: int, name: str, value: float) -> None:
        v = float(value)
        with self._lock:
            self._metrics.append({"step": int(step), "name": name[:128],
                                  "value": v if math.isfinite(v) else None})

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        with self._lock:
            self._progress = {"done": float(done),
                              "total": None if total is None else float(total),
                              "message": message[:500]}

    def log_bytes(self, data: bytes, *, final: bool = False) -> None:
        # Stored as valid UTF-8 (bad bytes replaced) so offsets mean the same on both sides.
        text = self._decoder.decode(data, final=final)
        with self._lock:
            if self._log_full:
                return
            self._log += text.encode("utf-8")
            excess = len(self._log) - MAX_BUFFERED_LOG
            if excess > 0:  # the server has been away long: keep the newest output
                while excess < len(self._log) and self._log[excess] & 0xC0 == 0x80:
                    excess += 1  # ...starting at a whole character
                del self._log[:excess]
                self._log_offset += excess

    # sending -------------------------------------------------------------------------------

    def start(self) -> Reporter:
        self._thread = threading.Thread(target=self._loop, name="reporter", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        # First batch at once: "started" is what moves the job to RUNNING.
        while True:
            try:
                self.flush(retry_s=0)
            except TokenRefused:
                self.token_refused = True
                if self._on_token_refused is not None:
                    self._on_token_refused()
                return
            except ApiFailed as exc:
                log.debug("report deferred: %s", exc)
            if self._stop.wait(self.interval_s):
                return

    def _take(self) -> dict[str, Any]:
        with self._lock:
            body: dict[str, Any] = {}
            if self._started_at is not None:
                body["started_at"] = self._started_at.isoformat()
            if self._events:
                body["events"] = list(self._events)
            if self._metrics:
                body["metrics"] = self._metrics[:MAX_METRICS_PER_BATCH]
            if self._progress is not None:
                body["progress"] = dict(self._progress)
            if self._log:
                cut = min(len(self._log), MAX_LOG_CHUNK)
                while cut < len(self._log) and self._log[cut] & 0xC0 == 0x80:
                    cut -= 1  # never split a UTF-8 character between two batches
                body["log"] = {"offset": self._log_offset,
                               "data": bytes(self._log[:cut]).decode("utf-8")}
            return body

    def _sent(self, body: dict[str, Any], ack: dict[str, Any]) -> None:
        with self._lock:
            if "started_at" in body:
                self._started_at = None
            del self._events[:len(body.get("events", []))]
            del self._metrics[:len(body.get("metrics", []))]
            if body.get("progress") == self._progress:
                self._progress = None
            if "log" in body:
                self._log_acked(body["log"], int(ack.get("log_offset", self._log_offset)))
            self.cancel_requested = bool(ack.get("cancel_requested"))

    def _log_acked(self, sent: dict[str, Any], accepted: int) -> None:
        """Move the log window by what the server says it holds now (lock held)."""
        offset = int(sent["offset"])
        if accepted > offset:
            done = min(accepted - self._log_offset, len(self._log))
            del self._log[:done]
            self._log_offset = accepted
        elif accepted < offset:
            # The server lacks bytes we dropped while it was away: go on from its end.
            self._log_offset = accepted
        elif sent["data"]:
            # It took nothing at its own end: its log for this job is full.
            self._log_full = True
            self._log.clear()

    def flush(self, retry_s: float | None = None) -> bool:
        """Send what is queued (one batch, or until empty when ``retry_s`` is None).

        Returns True when nothing is left to send.
        """
        while True:
            body = self._take()
            if not body:
                return True
            ack = self._api.report(body, retry_s=retry_s)
            self._sent(body, ack)
            if retry_s is not None:
                with self._lock:
                    return not (self._events or self._metrics or self._log)

    def close(self) -> None:
        """Stop the background sender and send everything left (riding out a restart)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.log_bytes(b"", final=True)  # an unfinished character at the very end
        self.flush()
