"""Preview of tabular files (CSV, TSV, JSONL, Parquet): schema, row count, first rows.

Files are streamed: only the first rows are kept; counting rows reads the rest in a single
pass without holding it. Parquet answers from its footer. Results are cached by content
digest, since blobs never change.
"""

from __future__ import annotations

import base64
import csv
import json
import math
from collections import OrderedDict
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from threading import Lock
from typing import Any

from clowder_ml.errors import UnsupportedFormat

INFER_ROWS = 1000
MAX_ROWS = 1000
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}

_cache: OrderedDict[tuple[str, str, int], dict[str, Any]] = OrderedDict()
_cache_lock = Lock()
_CACHE_SIZE = 256


def format_of(name: str) -> str:
    suffix = Path(name).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise UnsupportedFormat(
            f"Cannot preview {name!r}: only CSV, TSV, JSONL and Parquet files have previews.",
            "Download the file to look at it.")
    return fmt


def preview(path: Path, name: str, digest: str, rows: int = 20) -> dict[str, Any]:
    """Return ``{format, columns: [{name, type}], row_count, rows}`` for a tabular file."""
    fmt = format_of(name)
    rows = max(0, min(rows, MAX_ROWS))
    key = (digest, fmt, rows)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    try:
        if fmt == "parquet":
            result = _parquet(path, rows)
        elif fmt == "jsonl":
            result = _jsonl(path, rows)
        else:
            result = _delimited(path, rows, "," if fmt == "csv" else "\t")
    except UnsupportedFormat:
        raise
    except (ValueError, OSError, csv.Error, UnicodeDecodeError) as exc:
        raise UnsupportedFormat(f"Cannot read {name!r} as {fmt.upper()}: {exc}",
                                "Check that the file's extension matches its content.") from exc
    result = {"format": fmt, **result}
    with _cache_lock:
        _cache[key] = result
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return result


def _infer_scalar(value: str) -> str:
    if value == "":
        return "null"
    low = value.lower()
    if low in ("true", "false"):
        return "boolean"
    try:
        int(value)
        return "integer"
    except ValueError:
        pass
    try:
        f = float(value)
        return "number" if math.isfinite(f) or low in ("nan", "inf", "-inf") else "string"
    except ValueError:
        return "string"


def _merge(a: str | None, b: str) -> str:
    if a is None or a == "null":
        return b
    if b == "null" or a == b:
        return a
    if {a, b} == {"integer", "number"}:
        return "number"
    return "string"


def _delimited(path: Path, rows: int, delimiter: str) -> dict[str, Any]:
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return {"columns": [], "row_count": 0, "rows": []}
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        types: list[str | None] = [None] * len(header)
        first: list[dict[str, Any]] = []
        count = 0
        for rec in reader:
            if not rec:
                continue
            if count < INFER_ROWS:
                for i, v in enumerate(rec[: len(header)]):
                    types[i] = _merge(types[i], _infer_scalar(v))
            if count < rows:
                first.append({h: (rec[i] if i < len(rec) else None) for i, h in enumerate(header)})
            count += 1
    columns = [{"name": h, "type": t or "null"} for h, t in zip(header, types, strict=True)]
    return {"columns": columns, "row_count": count, "rows": first}


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _jsonl(path: Path, rows: int) -> dict[str, Any]:
    types: dict[str, str | None] = {}
    first: list[Any] = []
    count = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            if count < max(rows, INFER_ROWS):
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"line {lineno} is not valid JSON ({exc.msg})") from exc
                if count < rows:
                    first.append(_jsonable(obj))
                if isinstance(obj, dict):
                    for k, v in obj.items():
                        types[k] = _merge(types.get(k), _json_type(v))
            count += 1
    columns = [{"name": k, "type": t or "null"} for k, t in types.items()]
    return {"columns": columns, "row_count": count, "rows": first}


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def _parquet(path: Path, rows: int) -> dict[str, Any]:
    import pyarrow.lib
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        columns = [{"name": f.name, "type": str(f.type)} for f in pf.schema_arrow]
        first: list[Any] = []
        if rows:
            for batch in pf.iter_batches(batch_size=rows):
                first = [_jsonable(r) for r in batch.to_pylist()]
                break
        return {"columns": columns, "row_count": int(pf.metadata.num_rows), "rows": first}
    except pyarrow.lib.ArrowException as exc:
        raise ValueError(str(exc)) from exc


