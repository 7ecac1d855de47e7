"""User-supplied pieces of a fine-tune: a params file and an optional ``preprocess`` function.

Contract
--------
* :func:`load_params_file` reads fine-tune params from a ``.json`` file (``json.loads``), a
  ``.yaml``/``.yml`` file (``yaml.safe_load``; needs PyYAML) or a ``config.py`` whose
  ``CONFIG`` (a dict, or a function returning one) is evaluated in the sandbox by
  :func:`~clowder_ml.sandbox.usercode.evaluate_config`; the Python file is never imported or
  run on the host. The file's top-level keys override the ``base`` params (a shallow merge:
  a key in the file replaces the base value whole), and the result is validated by the given
  pydantic model. Every problem is a :class:`~clowder_ml.errors.ValidationFailed` naming the
  file (and each bad field), or, for ``config.py``, the sandbox's own errors
  (:class:`~clowder_ml.sandbox.usercode.UserCodeError` with the user's line,
  :class:`~clowder_ml.sandbox.usercode.UserCodeLimit`,
  :class:`~clowder_ml.sandbox.scan.ScanBlocked`).
* :func:`preprocess_examples` runs the user's ``preprocess(example)`` over the examples in
  the sandbox (:func:`~clowder_ml.sandbox.usercode.apply`, streamed, in order, fail fast),
  and caches the result under ``cache_dir`` keyed by the code's digest and the caller's data
  digest, so the same code over the same data never runs twice.
* :func:`code_digest` is the SHA-256 of a user file, for the job manifest.

The trusted training loop never sees user code: only JSON values cross back.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from clowder_ml.errors import ValidationFailed
from clowder_ml.ml.manifest import sha256_file
from clowder_ml.ml.textdata import TextExamples
from clowder_ml.sandbox import get_sandbox
from clowder_ml.sandbox.usercode import RowError, apply, evaluate_config
from clowder_ml.settings import Settings

__all__ = [
    "PARAMS_FILE_KINDS",
    "PREPROCESS_FUNCTION",
    "PreprocessStats",
    "code_digest",
    "load_params_file",
    "preprocess_cache_path",
    "preprocess_examples",
    "preprocess_stats",
]

#: File name endings :func:`load_params_file` accepts (case-insensitive).
PARAMS_FILE_KINDS = (".json", ".yaml", ".yml", ".py")
#: The function a preprocess file must define.
PREPROCESS_FUNCTION = "preprocess"
#: The most bytes of a params file read (it is a handful of settings).
MAX_PARAMS_FILE_BYTES = 1 << 20
#: Bumped when the cache file layout changes; old files then count as a miss.
_CACHE_FORMAT = 1
_SHOWN_ERRORS = 20


# --------------------------------------------------------------------------- digests


def code_digest(path: Path) -> str:
    """Hex SHA-256 of the file's bytes, as recorded in a job manifest."""
    return sha256_file(path)


# --------------------------------------------------------------------------- params files


def load_params_file(path: Path, model: type[BaseModel], base: dict[str, Any], *,
                     settings: Settings | None = None) -> BaseModel:
    """Params from ``path`` laid over ``base``, validated by ``model``.

    ``path`` ends in ``.json``, ``.yaml``/``.yml`` or ``.py`` (case-insensitive); its top
    level must be a mapping with string keys (an empty YAML file is an empty mapping). A
    ``.py`` file is a ``config.py`` evaluated in the sandbox configured by ``settings``
    (default :class:`Settings`); its ``CONFIG`` may be a dict or a function returning one.
    The file's keys replace the same keys of ``base`` (shallow), then
    ``model.model_validate`` runs on the merged dict; ``base`` is not modified.

    Raises :class:`ValidationFailed` naming the file for: another file kind (listing the
    accepted ones), an unreadable/oversized/non-UTF-8 file, a JSON or YAML syntax error
    (with its line), YAML without PyYAML installed, a top level that is not a mapping, and
    a model rejection (each bad field with its message). For ``.py``: the errors of
    :func:`~clowder_ml.sandbox.usercode.evaluate_config` (``UserCodeError`` with the user's
    line, ``ConfigMissing``, ``ConfigNotJSON``, ``UserCodeLimit``, ``ScanBlocked``) and
    :class:`~clowder_ml.errors.SandboxUnavailable`.
    """
    name = path.name
    kind = path.suffix.lower()
    if kind not in PARAMS_FILE_KINDS:
        raise ValidationFailed(
            f"Params file {name}: unsupported kind {kind or '(no extension)'!r}",
            "Use one of " + ", ".join(PARAMS_FILE_KINDS) + " (JSON, YAML, or a config.py "
            "defining CONFIG)")
    text = _read_text(path)
    values: Any
    if kind == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationFailed(
                f"Params file {name} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                f"column {exc.colno}", "Fix the JSON syntax") from None
    elif kind in (".yaml", ".yml"):
        values = _load_yaml(text, name)
    else:
        values = evaluate_config(text, None, sandbox=get_sandbox(settings), filename=name)
    if not isinstance(values, dict):
        raise ValidationFailed(
            f"Params file {name} must hold a mapping of param names to values, "
            f"not {_kind_of(values)}", "Write the params as key: value pairs at the top level")
    bad_keys = [k for k in values if not isinstance(k, str)]
    if bad_keys:
        raise ValidationFailed(f"Params file {name}: param names must be strings, got "
                               f"{bad_keys[0]!r}", "Quote the param names")
    merged = {**base, **values}
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise _params_error(exc, model, name, set(values)) from None


def _read_text(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PARAMS_FILE_BYTES + 1)
    except OSError as exc:
        raise ValidationFailed(f"Params file {path.name} cannot be read: "
                               f"{exc.strerror or exc}") from None
    if len(data) > MAX_PARAMS_FILE_BYTES:
        raise ValidationFailed(f"Params file {path.name} is over "
                               f"{MAX_PARAMS_FILE_BYTES // 1024} KiB", "Params files are small")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(f"Params file {path.name} is not valid UTF-8 "
                               f"(byte {exc.start})", "Save it as UTF-8") from None


def _load_yaml(text: str, name: str) -> Any:
    try:
        # Looked up by name: PyYAML is optional and ships no type stubs.
        yaml: Any = importlib.import_module("yaml")
    except ImportError:
        raise ValidationFailed(
            f"Params file {name}: YAML params need PyYAML, which is not installed",
            "pip install pyyaml, or give the params as JSON") from None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValidationFailed(f"Params file {name} is not valid YAML{where}: {problem}",
                               "Fix the YAML syntax") from None
    return {} if value is None else value


def _params_error(exc: ValidationError, model: type[BaseModel], name: str,
                  from_file: set[str]) -> ValidationFailed:
    parts = []
    errors = exc.errors()
    for err in errors[:_SHOWN_ERRORS]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
        head = str(err["loc"][0]) if err.get("loc") else ""
        origin = "" if head in from_file or not head else " (from the submitted params)"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}{origin}")
    if len(errors) > _SHOWN_ERRORS:
        parts.append(f"... and {len(errors) - _SHOWN_ERRORS} more")
    return ValidationFailed(f"Params file {name} does not give valid {model.__name__}: "
                            + "; ".join(parts), f"Fix these fields in {name}")


def _kind_of(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


# --------------------------------------------------------------------------- preprocess


@dataclass
class PreprocessStats:
    """Counts of :func:`preprocess_examples` outcomes in this process (for tests and logs):
    ``sandbox_runs`` preprocess runs started in a sandbox, ``cache_hits`` results served
    from the cache without a sandbox."""

    sandbox_runs: int = 0
    cache_hits: int = 0


_stats = PreprocessStats()
_stats_lock = threading.Lock()


def preprocess_stats() -> PreprocessStats:
    """A snapshot of this process's :class:`PreprocessStats`."""
    with _stats_lock:
        return PreprocessStats(_stats.sandbox_runs, _stats.cache_hits)


def _count(*, run: bool) -> None:
    with _stats_lock:
        if run:
            _stats.sandbox_runs += 1
        else:
            _stats.cache_hits += 1


def preprocess_cache_path(code_path: Path, cache_dir: Path, *, data_digest: str) -> Path:
    """Where :func:`preprocess_examples` caches the output of ``code_path`` over the data
    ``data_digest``: ``cache_dir/<sha256(code digest + data digest)>.jsonl``."""
    key = hashlib.sha256((code_digest(code_path) + data_digest).encode()).hexdigest()
    return cache_dir / f"{key}.jsonl"


def preprocess_examples(code_path: Path, ex: TextExamples, cache_dir: Path, *,
                        data_digest: str, settings: Settings | None = None) -> TextExamples:
    """``ex`` passed through the user's ``preprocess(example)`` from ``code_path``.

    Each example goes to the function as ``{"id": str, "text": str, "label": str | None}``
    (``label`` None when ``ex`` has no labels), in order, in one sandbox (``settings``'s
    backend, default :class:`Settings`). The function returns, per example:

    * ``None``: the example is dropped;
    * a dict with a ``str`` ``"text"`` and optionally ``"label"``: a non-empty ``str`` (an
      ``int`` becomes its decimal spelling) replaces the label, a missing or ``None`` label
      keeps the old one. A label on examples that have none is refused. Other keys (e.g.
      the ``"id"`` passed in) are ignored: ids, sources and rows stay those of the input.

    Returns a new :class:`TextExamples` of the kept examples in input order; ``ex`` is not
    modified.

    Cache: ``data_digest`` must identify the examples exactly (content and columns read);
    the output goes to :func:`preprocess_cache_path` (JSONL, written to a temp file and
    renamed, so a reader sees a whole file or none). A later call with the same code bytes
    and ``data_digest`` reads it back without starting a sandbox (see
    :func:`preprocess_stats`); a cache file that does not fit ``ex`` (length, indices) is
    ignored and rewritten.

    Raises :class:`~clowder_ml.sandbox.usercode.RowError` (fail fast: the first failing
    example, with the user's line, the example's source file, row and id),
    :class:`~clowder_ml.sandbox.usercode.UserCodeError` (the file fails to load or defines
    no ``preprocess``), :class:`~clowder_ml.sandbox.usercode.UserCodeLimit`,
    :class:`~clowder_ml.sandbox.scan.ScanBlocked`, :class:`ValidationFailed` (a result of
    the wrong shape, naming the example's row; an unreadable code file),
    :class:`~clowder_ml.errors.SandboxUnavailable`.
    """
    name = code_path.name
    try:
        code = code_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"Preprocess file {name} cannot be read as UTF-8 text: "
                               f"{exc}") from None
    cache = preprocess_cache_path(code_path, cache_dir, data_digest=data_digest)
    cached = _read_cache(cache, ex)
    if cached is not None:
        _count(run=False)
        return cached

    _count(run=True)
    results = apply(code, PREPROCESS_FUNCTION, _records(ex),
                    sandbox=get_sandbox(settings), on_error="raise", filename=name)
    kept: list[int] = []
    texts: list[str] = []
    labels: list[str] | None = None if ex.labels is None else []
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".jsonl", dir=cache_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps({"format": _CACHE_FORMAT, "examples": len(ex)}) + "\n")
            i = 0
            try:
                for i, result in enumerate(results):
                    text, label = _check_result(result, i, ex, name)
                    if text is None:
                        continue
                    kept.append(i)
                    texts.append(text)
                    if labels is not None:
                        assert label is not None  # _check_result keeps the old one
                        labels.append(label)
                    out.write(json.dumps({"i": i, "text": text, "label": label},
                                         ensure_ascii=False) + "\n")
            except RowError as exc:
                raise _row_error(exc, ex, name) from None
            finally:
                close = getattr(results, "close", None)
                if close is not None:
                    close()  # stops the sandbox at once when we left early
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, cache)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    result_ex = ex.select(kept)
    result_ex.texts = texts
    if labels is not None:
        result_ex.labels = labels
    return result_ex


def _records(ex: TextExamples) -> Iterator[dict[str, Any]]:
    for i, text in enumerate(ex.texts):
        yield {"id": ex.ids[i] if i < len(ex.ids) else str(i), "text": text,
               "label": None if ex.labels is None else ex.labels[i]}


def _where(ex: TextExamples, i: int) -> str:
    """``example 3 (train.csv, row 4, id "a3")`` for error messages."""
    bits = []
    if i < len(ex.sources) and ex.sources[i]:
        bits.append(ex.sources[i])
    if i < len(ex.rows):
        bits.append(f"row {ex.rows[i]}")
    if i < len(ex.ids):
        bits.append(f"id {ex.ids[i]!r}")
    return f"example {i}" + (f" ({', '.join(bits)})" if bits else "")


def _row_error(exc: RowError, ex: TextExamples, name: str) -> RowError:
    message = exc.message
    prefix = f"Record {exc.row}: "
    if message.startswith(prefix):
        message = message[len(prefix):]
    if exc.line is not None and not message.startswith(f"{name}, line"):
        message = f"{name}, line {exc.line}: {message}"
    return RowError(f"preprocess failed on {_where(ex, exc.row)}: {message}", row=exc.row,
                    line=exc.line, traceback=exc.traceback)


def _check_result(result: Any, i: int, ex: TextExamples,
                  name: str) -> tuple[str | None, str | None]:
    """(text, label) of one function result; (None, None) for a dropped example."""
    if result is None:
        return None, None
    hint = (f"{PREPROCESS_FUNCTION}() in {name} must return a dict with a str 'text' "
            "(and optionally 'label'), or None to drop the example")
    if not isinstance(result, dict):
        raise ValidationFailed(f"{name}: {PREPROCESS_FUNCTION}() returned {_kind_of(result)} "
                               f"for {_where(ex, i)}", hint)
    text = result.get("text")
    if not isinstance(text, str):
        what = "no 'text'" if "text" not in result else f"'text' as {_kind_of(text)}"
        raise ValidationFailed(f"{name}: {PREPROCESS_FUNCTION}() returned {what} for "
                               f"{_where(ex, i)}", hint)
    old = None if ex.labels is None else ex.labels[i]
    label = result.get("label")
    if label is None:
        return text, old
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)
    if not isinstance(label, str) or not label:
        shown = "an empty str" if label == "" else _kind_of(label)
        raise ValidationFailed(f"{name}: {PREPROCESS_FUNCTION}() returned 'label' as {shown} "
                               f"for {_where(ex, i)}", "A label is a non-empty str")
    if ex.labels is None:
        raise ValidationFailed(f"{name}: {PREPROCESS_FUNCTION}() returned a 'label' for "
                               f"{_where(ex, i)}, but these examples have no labels",
                               "Return only 'text' here, or leave 'label' None")
    return text, label


def _read_cache(path: Path, ex: TextExamples) -> TextExamples | None:
    """The cached output for ``ex`` at ``path``; None when absent or not fitting ``ex``."""
    kept: list[int] = []
    texts: list[str] = []
    labels: list[str] | None = None if ex.labels is None else []
    try:
        with open(path, encoding="utf-8") as f:
            header = json.loads(f.readline())
            if header != {"format": _CACHE_FORMAT, "examples": len(ex)}:
                return None
            last = -1
            for line in f:
                rec = json.loads(line)
                i, text, label = rec["i"], rec["text"], rec["label"]
                if not (isinstance(i, int) and last < i < len(ex) and isinstance(text, str)):
                    return None
                if labels is not None:
                    if not isinstance(label, str):
                        return None
                    labels.append(label)
                elif label is not None:
                    return None
                kept.append(i)
                texts.append(text)
                last = i
    except (OSError, ValueError, TypeError, KeyError):
        return None
    out = ex.select(kept)
    out.texts = texts
    if labels is not None:
        out.labels = labels
    return out
