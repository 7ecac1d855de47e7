"""Running user-written Python for the platform: evaluating a ``config.py`` and applying a
user function (e.g. ``preprocess(example) -> example``) to a stream of records.

Both run the user's code only inside a sandbox, through the agent
(:mod:`clowder_ml.sandbox.agent`); values cross back as JSON text only and are parsed with
``json.loads`` on the host. Nothing user-written is ever ``eval``-ed or imported here.

- :func:`evaluate_config` -> the ``CONFIG`` dict, validated by a pydantic schema if given.
- :func:`apply` -> an iterator of results, one per input record, in order, streamed: the
  host writes records from a thread while the caller consumes results, and the pipes give
  backpressure, so only a bounded window is ever in memory on either side.

Errors are :class:`UserCodeError` subclasses (user code failed, with the user's own line
number and traceback), :class:`UserCodeLimit` (the sandbox hit a limit: timeout, memory...),
or :class:`~clowder_ml.errors.ValidationFailed` (the schema rejected the config).

Layering: this is the top of :mod:`clowder_ml.sandbox`'s user-code stack. It starts agents
and moves frames through :mod:`clowder_ml.sandbox.agent_client`, takes warm ones from a
:class:`~clowder_ml.sandbox.pool.WarmPool` when given one, and owns what the answers mean
(the errors above, schema validation, the pre-run scan). Neither of those modules imports
this one.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from clowder_ml.errors import ClowderMLError, ValidationFailed
from clowder_ml.sandbox.agent_client import (
    CONFIG_LIMITS,
    FRAME_LEN,
    NO_DEADLINE,
    read_exact,
    read_json_frame,
    send_frame,
    start_agent,
    write_all,
)
from clowder_ml.sandbox.base import Sandbox, SandboxProcess
from clowder_ml.sandbox.limits import Limits, MiB
from clowder_ml.sandbox.result import SandboxResult, Verdict
from clowder_ml.sandbox.scan import ScanOptions, scan
from clowder_ml.settings import Settings

if TYPE_CHECKING:
    from pydantic import BaseModel

    from clowder_ml.sandbox.pool import WarmPool

#: The most source text accepted for one piece of user code.
MAX_CODE_CHARS = 4 * MiB
#: The default answer cap for a config, as JSON text.
CONFIG_MAX_BYTES = 1 * MiB


# "settings": the operator's scan_block_at; a severity blocks at and above it; "off" never.
BlockAt = Literal["settings", "high", "medium", "low", "off"]


class UserCodeError(ClowderMLError):
    """The user's code failed. ``line`` is the line in the user's file (None when unknown),
    ``traceback`` the user's frames only."""

    code: ClassVar[str] = "user_code_error"
    status: ClassVar[int] = 422

    def __init__(self, message: str, hint: str | None = None, *, line: int | None = None,
                 traceback: str = "") -> None:
        super().__init__(message, hint)
        self.line = line
        self.traceback = traceback


class ConfigMissing(UserCodeError):
    """``config.py`` defines no ``CONFIG``."""

    code: ClassVar[str] = "config_missing"


class ConfigNotJSON(UserCodeError):
    """``CONFIG`` is not a dict of JSON values, or its JSON is over the size cap."""

    code: ClassVar[str] = "config_not_json"


class RowError(UserCodeError):
    """The user's function failed on record ``row`` (0-based)."""

    code: ClassVar[str] = "row_error"

    def __init__(self, message: str, *, row: int, line: int | None = None,
                 traceback: str = "") -> None:
        super().__init__(message, line=line, traceback=traceback)
        self.row = row


class UserCodeLimit(UserCodeError):
    """The sandbox ended the user's code: a limit (``verdict``: timeout, memory_limit...),
    or the program died. ``result`` holds the full sandbox result when there is one."""

    code: ClassVar[str] = "user_code_limit"

    def __init__(self, message: str, *, verdict: Verdict,
                 result: SandboxResult | None = None) -> None:
        super().__init__(message)
        self.verdict = verdict
        self.result = result


@dataclass(frozen=True)
class RowFailure:
    """In :func:`apply` with ``on_error="record"``: stands in for the result of a record
    whose function call failed."""

    row: int
    message: str
    line: int | None
    traceback: str


def _default_sandbox() -> Sandbox:
    from clowder_ml.sandbox import get_sandbox

    return get_sandbox()


def _limit_error(proc: SandboxProcess, what: str) -> UserCodeLimit:
    """Why the sandbox ended without an answer, from its verdict and stderr.

    Not stopped first: a sandbox whose stdout ended is ending by itself, and its own verdict
    (memory_limit, output_limit...) is the reason to report. One still running after a few
    seconds (it broke the protocol) is stopped."""
    try:
        result = proc.wait(timeout=5)
    except TimeoutError:
        proc.stop()
        result = proc.wait()
    stderr = result.stderr.decode("utf-8", "replace").strip()[-1500:]
    detail = f"{result.detail}" + (f"\n{stderr}" if stderr else "")
    verdict = result.verdict if result.verdict is not Verdict.OK else Verdict.ERROR
    return UserCodeLimit(f"{what} ended without an answer ({verdict.value}): {detail}",
                         verdict=verdict, result=result)


def _schema_error(exc: Any, schema: type[BaseModel]) -> ValidationFailed:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
        lines.append(f"{loc}: {err.get('msg', 'invalid')}")
    return ValidationFailed(f"CONFIG does not match {schema.__name__}: " + "; ".join(lines),
                            "Fix these fields in config.py")


def evaluate_config(code: str, schema: type[BaseModel] | None = None, *,
                    pool: WarmPool | None = None, sandbox: Sandbox | None = None,
                    limits: Limits | None = None, timeout_s: float = 10.0,
                    max_bytes: int = CONFIG_MAX_BYTES,
                    filename: str = "config.py",
                    scan_block_at: BlockAt = "settings") -> dict[str, Any]:
    """Run a user's ``config.py`` source in a single-use sandbox and return its ``CONFIG``.

    ``CONFIG`` may be a dict or a callable returning one; it crosses back as JSON text of at
    most ``max_bytes`` and, when ``schema`` is given, is validated by it (the returned dict
    is then ``schema.model_validate(value).model_dump(mode="json")``).

    The sandbox comes from ``pool`` (warm, instant) or is started cold on ``sandbox`` (the
    configured backend by default) with ``limits`` (:data:`CONFIG_LIMITS`). ``timeout_s`` is
    the host's deadline for the answer, counted from the request (a pooled sandbox's idle
    time does not count).

    Raises :class:`UserCodeError` (exception in user code, with ``line``),
    :class:`ConfigMissing`, :class:`ConfigNotJSON`, :class:`UserCodeLimit` (timeout,
    memory...), :class:`~clowder_ml.errors.ValidationFailed` (schema),
    :class:`~clowder_ml.sandbox.scan.ScanBlocked` (the pre-run scan refused the code; see
    ``scan_block_at``), or :class:`~clowder_ml.errors.SandboxUnavailable`.
    """
    _check_code(code, scan_block_at, pool.sandbox if pool is not None else sandbox)
    if pool is not None:
        agent = pool.take()
    else:
        agent = start_agent(sandbox or _default_sandbox(), limits or CONFIG_LIMITS)
    proc = agent.proc
    try:
        deadline = time.monotonic() + timeout_s
        try:
            # Sent before the hello is read: a cold start overlaps with the pipe transfer.
            send_frame(proc, {"op": "config", "code": code, "filename": filename,
                              "max_bytes": max_bytes})
        except OSError:
            raise _limit_error(proc, "The config sandbox") from None
        # A cold sandbox's boot counts against the request deadline too, with a floor so
        # a short timeout_s still lets the sandbox start.
        if not agent.await_hello(max(deadline, time.monotonic() + 10.0)):
            raise _limit_error(proc, "The config sandbox")
        head = read_exact(proc, FRAME_LEN.size, deadline)
        size = FRAME_LEN.unpack(head)[0] if head is not None else -1
        # The agent's answer holds at most max_bytes of JSON plus a short envelope; anything
        # bigger is not from an honest agent and is not read.
        body = (read_exact(proc, size, deadline)
                if 0 <= size <= 2 * max_bytes + 65536 else None)
        if body is None:
            if time.monotonic() >= deadline:
                proc.stop(Verdict.TIMEOUT)
                raise UserCodeLimit(f"config.py did not finish within {timeout_s:g} s",
                                    verdict=Verdict.TIMEOUT)
            raise _limit_error(proc, "The config sandbox")
    finally:
        # The answer is in; the agent exits by itself and the run cleans up in its thread,
        # so the caller does not wait for the teardown.
        for f in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                f.close()
    answer = json.loads(body)
    if not answer.get("ok"):
        kind = answer.get("kind")
        cls = {"missing": ConfigMissing, "not_json": ConfigNotJSON,
               "too_large": ConfigNotJSON, "not_dict": ConfigNotJSON}.get(kind, UserCodeError)
        message = str(answer.get("message", "config.py failed"))
        line = answer.get("line")
        if line is not None:
            message = f"{filename}, line {line}: {message}"
        raise cls(message, line=line, traceback=str(answer.get("traceback", "")))
    value: dict[str, Any] = json.loads(answer["json"])
    if schema is None:
        return value
    from pydantic import ValidationError

    try:
        return schema.model_validate(value).model_dump(mode="json")
    except ValidationError as exc:
        raise _schema_error(exc, schema) from None


def apply(code: str, function_name: str, records: Iterable[Any], *,
          sandbox: Sandbox | None = None, limits: Limits | None = None,
          on_error: Literal["raise", "record"] = "raise", raw: bool = False,
          batch: int = 1000, filename: str = "preprocess.py",
          scan_block_at: BlockAt = "settings") -> Iterator[Any]:
    """Apply ``function_name`` from the user's ``code`` to every record, in one sandbox,
    streaming. Yields one result per record, in order.

    ``records``: JSON-able values, or ``bytes`` holding one JSON document each (a JSONL line,
    passed through as-is: no host-side re-encoding). With ``raw=True`` results are yielded
    as JSON ``bytes`` (no newline) instead of parsed values.

    A failing record: ``on_error="raise"`` (default, fail fast) raises :class:`RowError` with
    the row index and the user's traceback, and stops the sandbox; ``"record"`` yields a
    :class:`RowFailure` in that record's place and goes on. A function result that is not
    JSON counts as a failure of that record.

    Memory: the host writes records from a thread in chunks of ``batch``; the pipes block
    the writer when the sandbox is behind, and the sandbox when the caller is behind, so at
    most a few batches are in flight whatever the stream length. The sandbox starts on the
    first ``next()``; closing or dropping the iterator stops it. A record that is not JSON
    (``TypeError``/``ValueError`` from ``json``) or an exception from ``records`` is raised
    to the caller after the results of the records before it.

    Raises :class:`UserCodeError` (the code fails to load, or has no such function) before
    the first result, :class:`UserCodeLimit` when the sandbox hits a limit (``limits``:
    :class:`~clowder_ml.sandbox.limits.Limits` defaults, whole stream).
    """
    _check_code(code, scan_block_at, sandbox)
    return _apply_stream(sandbox, limits or Limits(), code, function_name, records, on_error,
                         raw, batch, filename)


def _apply_stream(sandbox: Sandbox | None, limits: Limits, code: str, function_name: str,
                  records: Iterable[Any], on_error: str, raw: bool, batch: int,
                  filename: str) -> Iterator[Any]:
    # Started on the first next(), not at the call: an iterator never iterated (whose
    # ``finally`` would never run) must not leave a sandbox behind.
    agent = start_agent(sandbox or _default_sandbox(), limits)
    proc = agent.proc
    writer_error: list[BaseException] = []
    sent = [0]

    def send(chunk: list[bytes]) -> bool:
        chunk.append(b"")
        data = b"\n".join(chunk)
        chunk.clear()
        try:
            write_all(proc, data)
        except (OSError, ValueError):
            # The sandbox ended (its verdict says why) or the stream was closed.
            return False
        return True

    def feed() -> None:
        dumps = json.JSONEncoder(allow_nan=False, ensure_ascii=False).encode
        chunk: list[bytes] = []
        for rec in records:
            if isinstance(rec, bytes | bytearray | memoryview):
                line = bytes(rec).rstrip(b"\r\n")
                if b"\n" in line:
                    raise ValidationFailed(f"Record {sent[0]} holds a newline; "
                                           "bytes records must be one JSONL line each")
            else:
                line = dumps(rec).encode()  # not JSON: the caller's error, raised to them
            chunk.append(line)
            sent[0] += 1
            if len(chunk) >= batch and not send(chunk):
                return
        if chunk:
            send(chunk)

    writer = _feeder(proc, feed, writer_error, "apply-feed")
    try:
        try:
            send_frame(proc, {"op": "apply", "code": code, "function": function_name,
                              "filename": filename, "batch": batch})
            if not agent.await_hello(time.monotonic() + 60.0):
                raise OSError("no hello")
        except OSError:
            raise _limit_error(proc, "The apply sandbox") from None
        out = proc.stdout.fileno()
        pending = b""
        ready = False
        row = 0
        while True:
            chunk = os.read(out, 1 << 20)
            if not chunk:
                break
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if not ready:
                    if line.startswith(b"!"):
                        err = json.loads(line[1:])
                        raise UserCodeError(_where(filename, err), line=err.get("line"),
                                            traceback=err.get("traceback", ""))
                    ready = True
                    writer.start()
                    continue
                if line.startswith(b"!"):
                    err = json.loads(line[1:])
                    if on_error == "raise":
                        raise RowError(f"Record {row}: {_where(filename, err)}", row=row,
                                       line=err.get("line"),
                                       traceback=err.get("traceback", ""))
                    yield RowFailure(row, str(err.get("message", "")), err.get("line"),
                                     str(err.get("traceback", "")))
                else:
                    yield line if raw else json.loads(line)
                row += 1
        if writer.is_alive():
            writer.join()
        if writer_error:
            raise writer_error[0]
        result = proc.wait()
        if not ready or result.verdict is not Verdict.OK or row != sent[0]:
            raise _limit_error(proc, "The apply sandbox")
    finally:
        _teardown(proc, writer)


def _teardown(proc: SandboxProcess, writer: threading.Thread) -> None:
    """End a streaming run however it went: stop the sandbox if still alive, release it,
    and give the feeder thread a moment to notice its closed pipe."""
    if proc.alive:
        proc.stop()
    proc.close()
    if writer.is_alive():
        writer.join(timeout=5)


def _feeder(proc: SandboxProcess, body: Callable[[], None], errors: list[BaseException],
            name: str) -> threading.Thread:
    """A (not yet started) thread that runs ``body`` to feed the sandbox's stdin, keeps what
    it raises in ``errors`` (the caller's records failed: reported to them), and always
    closes stdin so the agent sees the end of the stream."""

    def run() -> None:
        try:
            body()
        except BaseException as exc:
            errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    return threading.Thread(target=run, daemon=True, name=name)


def _check_code(code: str, block_at: BlockAt, sandbox: Sandbox | None) -> None:
    """Refuse code that is not text, too large, or blocked by the pre-run scan.

    ``block_at`` "settings" takes the operator's ``scan_block_at``; "off" never blocks.
    The scan is advice and defense in depth: the sandbox stays the boundary either way.
    """
    if not isinstance(code, str):
        raise ValidationFailed("User code must be a str")
    if len(code) > MAX_CODE_CHARS:
        raise ValidationFailed(f"User code is over {MAX_CODE_CHARS} characters")
    if block_at == "settings":
        block_at = (sandbox.settings if sandbox is not None else Settings()).scan_block_at
    if block_at == "off":
        return
    scan(code, ScanOptions(block_at=block_at)).raise_if_blocked()


def _where(filename: str, err: dict[str, Any]) -> str:
    message = str(err.get("message", "failed"))
    line = err.get("line")
    return f"{filename}, line {line}: {message}" if line is not None else message


@dataclass(frozen=True)
class ArrowResult:
    """One output batch of :func:`apply_arrow`: a row per input row, in order. With
    ``on_error="record"``, failed rows are all-null and listed in ``failures``."""

    batch: Any  # pyarrow.RecordBatch (typed loosely: pyarrow is optional and untyped)
    failures: tuple[RowFailure, ...] = ()


def apply_arrow(code: str, function_name: str, batches: Iterable[Any], *,
                sandbox: Sandbox | None = None, limits: Limits | None = None,
                on_error: Literal["raise", "record"] = "raise",
                filename: str = "preprocess.py",
                scan_block_at: BlockAt = "settings") -> Iterator[ArrowResult]:
    """:func:`apply` over Arrow ``RecordBatch`` es: each input batch crosses as Arrow IPC,
    the function sees one record (a dict) at a time and must return a dict, and one
    :class:`ArrowResult` comes back per input batch, in order. Streaming and backpressure
    as in :func:`apply` (the window is a few batches). A batch whose results Arrow cannot
    hold (e.g. one column with mixed types) fails every row of it. Needs pyarrow on the host
    and in the sandbox's Python. Errors as in :func:`apply`.
    """
    _check_code(code, scan_block_at, sandbox)
    return _apply_arrow_stream(sandbox, limits or Limits(), code, function_name, batches,
                               on_error, filename)


def _apply_arrow_stream(sandbox: Sandbox | None, limits: Limits, code: str,
                        function_name: str, batches: Iterable[Any], on_error: str,
                        filename: str) -> Iterator[ArrowResult]:
    import pyarrow as pa

    agent = start_agent(sandbox or _default_sandbox(), limits)
    proc = agent.proc
    writer_error: list[BaseException] = []
    sent = [0]

    def feed() -> None:
        for batch in batches:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema) as w:
                w.write_batch(batch)
            blob = sink.getvalue().to_pybytes()
            sent[0] += 1
            try:
                write_all(proc, FRAME_LEN.pack(len(blob)) + blob)
            except (OSError, ValueError):
                return  # the sandbox ended: its verdict says why
        with contextlib.suppress(OSError, ValueError):
            write_all(proc, FRAME_LEN.pack(0))

    writer = _feeder(proc, feed, writer_error, "apply-arrow-feed")
    no_deadline = NO_DEADLINE
    try:
        try:
            send_frame(proc, {"op": "apply_arrow", "code": code, "function": function_name,
                              "filename": filename})
            if not agent.await_hello(time.monotonic() + 60.0):
                raise OSError("no hello")
        except OSError:
            raise _limit_error(proc, "The apply sandbox") from None
        ready = read_json_frame(proc, no_deadline)
        if ready is None:
            raise _limit_error(proc, "The apply sandbox")
        if not ready.get("ok"):
            raise UserCodeError(_where(filename, ready), line=ready.get("line"),
                                traceback=str(ready.get("traceback", "")))
        writer.start()
        got = 0
        while True:
            head = read_json_frame(proc, no_deadline)
            if head is None:
                break
            blob = read_exact(proc, int(head["size"]), no_deadline)
            if blob is None:
                break
            out = pa.ipc.open_stream(blob).read_next_batch()
            errors = head.get("errors") or []
            if errors and on_error == "raise":
                err = errors[0]
                raise RowError(f"Record {err['row']}: {_where(filename, err)}",
                               row=int(err["row"]), line=err.get("line"),
                               traceback=str(err.get("traceback", "")))
            yield ArrowResult(out, tuple(
                RowFailure(int(e["row"]), str(e.get("message", "")), e.get("line"),
                           str(e.get("traceback", ""))) for e in errors))
            got += 1
        writer.join()
        if writer_error:
            raise writer_error[0]
        result = proc.wait()
        if result.verdict is not Verdict.OK or got != sent[0]:
            raise _limit_error(proc, "The apply sandbox")
    finally:
        _teardown(proc, writer)
