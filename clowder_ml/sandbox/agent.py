"""The agent: the small program that runs user code *inside* the sandbox and speaks to the
host over stdin/stdout. Staged read-only at ``/code`` and run with the platform's Python.
The host's side of the protocol below is :mod:`clowder_ml.sandbox.agent_client`.

Standard library only, and nothing from ``clowder_ml``: it must start fast (the warm pool
pays its import before a request arrives) and must not pull the platform into the sandbox.

Protocol (all on the agent's original fd 0 / fd 1; user code gets neither):

- The agent first writes a frame ``{"hello": 1}`` once it is up (the warm pool waits for
  it). The host sends one frame: a 4-byte big-endian length, then UTF-8 JSON
  ``{"op": "config" | "apply", "code": str, "filename": str, ...}``. EOF instead of a frame
  (a warm sandbox the pool no longer needs) makes the agent exit 0 without running anything.
- ``config`` (also ``max_bytes``): runs the code in a fresh module namespace, takes
  ``CONFIG`` (calls it when callable) and answers one frame: ``{"ok": true, "json": text}``
  (the value as JSON text, at most ``max_bytes``) or ``{"ok": false, "kind", "message",
  "line", "traceback"}`` with ``kind`` one of ``user_error``, ``missing``, ``not_dict``,
  ``not_json``, ``too_large``. Then exits.
- ``apply`` (also ``function``, ``batch``): runs the code, finds the function, and writes a
  first line ``{"ready": true}`` or ``!{error}``. Then reads JSONL records until EOF and
  writes exactly one line per record, in order: the function's result as JSON, or ``!``
  followed by a JSON error ``{"row", "message", "line", "traceback"}``. A line starting
  with ``!`` is never valid JSON, so results and errors cannot be confused. Output is
  written in batches of ``batch`` lines (few syscalls: each one is costly under gVisor).

- ``apply_arrow``: the same over Arrow record batches (see :func:`apply_arrow`).

User ``print`` output goes to stderr (fd 1 is pointed at stderr before user code runs, so
even C extensions cannot write into the protocol); user code sees an empty stdin.
Tracebacks sent back keep only the user's frames, never the agent's.
"""

from __future__ import annotations

import builtins
import io
import json
import linecache
import os
import struct
import sys
import traceback
from types import ModuleType
from typing import Any, BinaryIO

_LEN = struct.Struct(">I")
_MAX_REQUEST = 64 << 20


def read_frame(stream: BinaryIO) -> Any:
    """One length-prefixed JSON frame, or None at EOF before it."""
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (size,) = _LEN.unpack(head)
    if size > _MAX_REQUEST:
        raise ValueError("request too large")
    return json.loads(stream.read(size))


def write_frame(stream: BinaryIO, doc: Any) -> None:
    data = json.dumps(doc).encode()
    stream.write(_LEN.pack(len(data)) + data)
    stream.flush()


def _user_error(exc: BaseException, filename: str, **extra: Any) -> dict[str, Any]:
    """Message, line and a traceback of the user's frames only."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    line = frames[-1].lineno if frames else None
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        line = exc.lineno
    message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    text = message
    if frames:
        text = ("Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
                + message)
    return {"message": message[-2000:], "line": line, "traceback": text[-8000:], **extra}


def _load(code: str, filename: str) -> dict[str, Any]:
    """Run the user's module code in a fresh namespace, as if it were ``filename``."""
    # Registered so tracebacks show the user's source lines (the file is not on disk here).
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    module = ModuleType(os.path.splitext(os.path.basename(filename))[0])
    module.__file__ = filename
    ns = module.__dict__
    ns["__builtins__"] = builtins
    sys.modules[module.__name__] = module  # so dataclasses/pickle in user code find it
    exec(compile(code, filename, "exec"), ns)  # noqa: S102 - this is the sandbox
    return ns


def _bad_json(value: Any, path: str = "CONFIG", depth: int = 0) -> str | None:
    """Where the first non-JSON value is, and its type, for a readable message."""
    if depth > 100:
        return f"{path} is nested too deeply"
    if value is None or isinstance(value, bool | int | str):
        return None
    if isinstance(value, float):
        return None if value == value and value not in (float("inf"), float("-inf")) else \
            f"{path} is {value!r}, which JSON cannot hold"
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{path} has a key of type {type(k).__name__} ({k!r}); keys must be str"
            found = _bad_json(v, f"{path}[{k!r}]", depth + 1)
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _bad_json(v, f"{path}[{i}]", depth + 1)
            if found:
                return found
        return None
    return f"{path} is a {type(value).__name__}, which is not JSON"


def evaluate_config(req: dict[str, Any]) -> dict[str, Any]:
    filename = str(req.get("filename") or "config.py")
    max_bytes = int(req.get("max_bytes") or 1 << 20)
    try:
        ns = _load(str(req["code"]), filename)
    except BaseException as exc:
        return {"ok": False, "kind": "user_error", **_user_error(exc, filename)}
    if "CONFIG" not in ns:
        return {"ok": False, "kind": "missing", "line": None, "traceback": "",
                "message": f"{filename} does not define CONFIG"}
    value = ns["CONFIG"]
    if callable(value):
        try:
            value = value()
        except BaseException as exc:
            return {"ok": False, "kind": "user_error", **_user_error(exc, filename)}
    if not isinstance(value, dict):
        return {"ok": False, "kind": "not_dict", "line": None, "traceback": "",
                "message": "CONFIG must be a dict (or a function returning one), "
                           f"not {type(value).__name__}"}
    problem = _bad_json(value)
    if problem is None:
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            problem = f"CONFIG is not JSON: {exc}"
    if problem is not None:
        return {"ok": False, "kind": "not_json", "line": None, "traceback": "",
                "message": problem}
    if len(text.encode()) > max_bytes:
        return {"ok": False, "kind": "too_large", "line": None, "traceback": "",
                "message": f"CONFIG as JSON is over {max_bytes} bytes"}
    return {"ok": True, "json": text}


def _load_function(req: dict[str, Any], filename: str) -> tuple[Any, dict[str, Any]]:
    """(the user's function, {}) or (None, an error record)."""
    name = str(req["function"])
    try:
        fn = _load(str(req["code"]), filename).get(name)
    except BaseException as exc:
        return None, {"row": None, **_user_error(exc, filename)}
    if not callable(fn):
        return None, {"row": None, "line": None, "traceback": "",
                      "message": f"{filename} does not define a function {name}()"}
    return fn, {}


def apply_arrow(req: dict[str, Any], inp: BinaryIO, out: BinaryIO) -> int:
    """Arrow variant of :func:`apply`: input and output are frames holding one Arrow IPC
    stream of one record batch each (a zero-length frame ends the input). The function
    still sees one record (a dict) at a time. Per input batch the agent answers a JSON frame
    ``{"rows", "errors": [...], "size"}`` then ``size`` bytes of IPC stream: one output row
    per input row, a failed row all-null (when every row failed: one null ``_failed``
    column). pyarrow is imported only here."""
    import pyarrow as pa

    filename = str(req.get("filename") or "preprocess.py")
    fn, error = _load_function(req, filename)
    if fn is None:
        write_frame(out, {"ok": False, **error})
        return 1
    write_frame(out, {"ok": True})
    first = 0
    while True:
        head = inp.read(_LEN.size)
        if len(head) < _LEN.size:
            break
        (size,) = _LEN.unpack(head)
        if size == 0:
            break
        rows = pa.ipc.open_stream(inp.read(size)).read_all().to_pylist()
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for i, rec in enumerate(rows):
            try:
                res = fn(rec)
                if not isinstance(res, dict):
                    raise TypeError(f"{req['function']}() must return a dict for Arrow "
                                    f"output, not {type(res).__name__}")
            except BaseException as exc:
                errors.append({"row": first + i, **_user_error(exc, filename)})
                res = {}
            results.append(res)
        try:
            batch = pa.RecordBatch.from_pylist(results)
        except Exception as exc:  # e.g. mixed types across rows: the whole batch fails
            errors = [{"row": first + i, "message": f"Arrow cannot hold the results: {exc}",
                       "line": None, "traceback": ""} for i in range(len(rows))]
            batch = pa.RecordBatch.from_pylist([{}] * len(rows))
        if batch.num_columns == 0 and rows:
            batch = pa.RecordBatch.from_arrays([pa.nulls(len(rows))], names=["_failed"])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        blob = sink.getvalue().to_pybytes()
        write_frame(out, {"rows": len(rows), "errors": errors, "size": len(blob)})
        out.write(blob)
        out.flush()
        first += len(rows)
    return 0


def apply(req: dict[str, Any], inp: BinaryIO, out: BinaryIO) -> int:
    filename = str(req.get("filename") or "preprocess.py")
    name = str(req["function"])
    batch = max(1, int(req.get("batch") or 1000))
    dumps = json.JSONEncoder(allow_nan=False, ensure_ascii=False).encode
    fn, error = _load_function(req, filename)
    if fn is None:
        out.write(b"!" + json.dumps(error).encode() + b"\n")
        return 1
    out.write(b'{"ready": true}\n')
    out.flush()
    loads = json.loads
    lines: list[str] = []
    for row, raw in enumerate(inp):
        try:
            result = fn(loads(raw))
        except BaseException as exc:
            lines.append("!" + json.dumps({"row": row, **_user_error(exc, filename)}))
        else:
            try:
                lines.append(dumps(result))
            except (TypeError, ValueError, RecursionError):
                msg = f"{name}() returned a {type(result).__name__}, which is not JSON"
                if isinstance(result, dict | list):
                    where = _bad_json(result, "result")
                    msg = f"{name}() returned a value that is not JSON: {where}"
                lines.append("!" + json.dumps({"row": row, "message": msg, "line": None,
                                               "traceback": ""}))
        if len(lines) >= batch:
            lines.append("")
            out.write("\n".join(lines).encode())
            out.flush()  # one batch, one write: results flow while input still comes
            lines.clear()
    if lines:
        lines.append("")
        out.write("\n".join(lines).encode())
    out.flush()
    return 0


def _add_site_packages() -> None:
    """The environment's site-packages on ``sys.path``, without running ``site``.

    The agent runs with ``-S``: ``site`` processes every ``.pth`` file of the environment
    (editable installs' import hooks and whatever they import), which costs ~150 ms per start
    under gVisor. User code still imports installed packages (numpy...); only ``.pth``
    hooks are not applied.
    """
    import sysconfig

    for key in ("purelib", "platlib"):
        path = sysconfig.get_path(key)
        if path and path not in sys.path:
            sys.path.append(path)


def main() -> int:
    _add_site_packages()
    proto_in = os.fdopen(os.dup(0), "rb", buffering=1 << 20)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=1 << 20)
    # From here on fd 0/1 are not the protocol: user output lands in stderr, user reads
    # see nothing.
    os.dup2(2, 1)
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    except OSError:
        os.close(0)
    sys.stdout = sys.stderr
    sys.stdin = io.StringIO()
    # Tells the host (the warm pool) this sandbox is booted and waiting.
    write_frame(proto_out, {"hello": 1})
    req = read_frame(proto_in)  # a warm-pool sandbox waits here
    if req is None:
        return 0
    if req.get("op") == "config":
        write_frame(proto_out, evaluate_config(req))
        return 0
    if req.get("op") == "apply":
        return apply(req, proto_in, proto_out)
    if req.get("op") == "apply_arrow":
        return apply_arrow(req, proto_in, proto_out)
    write_frame(proto_out, {"ok": False, "kind": "protocol", "message": "unknown op",
                            "line": None, "traceback": ""})
    return 2


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # Exit now, whatever threads user code left behind: the host has its answer.
    os._exit(code)
