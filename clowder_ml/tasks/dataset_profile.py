"""Profile a dataset version's files: tables, images and everything else.

Contract
--------
``profile_dataset(root)`` walks the folder ``root`` (nested folders included; hidden files and
folders, whose names start with ``.``, and symlinks are skipped) and returns a JSON-serializable
dict made only of str/int/float/bool/None/list/dict, never NaN::

    {"files": int, "bytes": int,
     "tables": [{"path", "format", "rows", "columns": [{"name", "type", "missing", "distinct"}],
                 "duplicate_rows", "label": {"column", "distribution", "missing", "other"} | None,
                 "truncated"}],
     "images": {"count", "bytes", "formats", "width", "height", "modes", "by_folder",
                "unreadable", "unreadable_count"} | None,
     "other_files": int,
     "errors": [{"path", "error"}]}

* File kind comes from the extension, case-insensitively: ``.csv .tsv .jsonl .ndjson .parquet
  .pq`` are tables, ``.png .jpg .jpeg .gif .bmp .webp .tif .tiff`` are images, the rest count in
  ``other_files``. Paths are relative to ``root`` with ``/`` separators, sorted.
* Memory stays bounded whatever the file size: CSV/TSV stream through ``pyarrow.csv.open_csv``,
  Parquet through ``ParquetFile.iter_batches``, JSONL is parsed in chunks of lines. What grows
  with the row count is one 16-byte digest per row, kept to count duplicate rows.
* Column ``type`` is one of integer, float, boolean, string, datetime, other. A column that is
  integer in one chunk and float in another is float; any other mix is string (other when one
  side is nested/binary); a column with no value at all is other. JSONL strings that parse as ISO
  8601 are datetime. A CSV column whose type pyarrow inferred from the first block and that later
  holds wider values (``1`` then ``1.5``, or ``1`` then ``x``) is re-read with a wider type.
* ``missing`` counts nulls, empty strings and float NaN (and, in JSONL, rows without the key).
  CSV keeps pyarrow's default ``null_values`` ("", "NA", "N/A", "null", "NaN", ...): in numeric,
  boolean and date columns those spellings are nulls, hence missing; in a string column only the
  empty string is missing and ``"NA"`` is an ordinary value (pyarrow's
  ``strings_can_be_null=False``).
* ``distinct`` is the exact number of distinct non-missing values, or None once it passes 10_000.
* ``duplicate_rows`` counts rows identical to an earlier row of the same file (extra copies).
* The label column is the ``label`` argument when given (a table without that column gets an
  entry in ``errors`` naming its columns, and ``"label": None``), else the first column named
  label/labels/class/target/y/category in any case. Its distribution maps each value, as a
  string, to its count, most frequent first; beyond 10_000 distinct values the rest are only
  counted in ``other``.
* ``max_rows`` stops each table after that many rows; ``truncated`` says whether rows were left.
* Images: only the header is read (format, size, mode); pixels are never decoded, so a
  decompression bomb is reported with its size. ``count``/``bytes``/stats cover readable images;
  unreadable ones are listed in ``unreadable`` (first 50) and counted in ``unreadable_count``.
  ``by_folder`` counts by the immediate parent folder (``"."`` for files directly in root).
* A file that cannot be read or parsed goes to ``errors`` (one-line message) and is left out of
  ``tables``; it never aborts the profile.
* ``progress(done_files, total_files, path)`` is called after each file.
* Only a ``root`` that is not a folder raises :class:`~clowder_ml.errors.ValidationFailed`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from PIL import Image

from clowder_ml.errors import ValidationFailed

ProgressCallback = Callable[[int, int, str], None]

TABLE_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
LABEL_NAMES = ("label", "labels", "class", "target", "y", "category")

DISTINCT_LIMIT = 10_000
LABEL_VALUES_LIMIT = 10_000
UNREADABLE_LIMIT = 50
ERROR_MESSAGE_LIMIT = 500

# Batch sizes: small enough to bound memory, large enough that per-batch overhead is noise.
# Module-level so tests can shrink them to exercise multi-batch paths on tiny files.
CSV_BLOCK_SIZE = 1 << 20
PARQUET_BATCH_ROWS = 8192
JSONL_CHUNK_LINES = 4096

# Each CSV retry widens one column one step (null -> int64 -> float64 -> string), so a file
# needs at most three per column; the cap only guards against a pyarrow surprise.
_CSV_MAX_ATTEMPTS = 1000
_CSV_CONVERSION_ERROR = re.compile(r"In CSV column #(\d+): CSV conversion error to (\w+)")

# Errors that mean "this file is bad", as opposed to a bug in this module.
_FILE_ERRORS = (pa.ArrowException, OSError, ValueError, OverflowError, UnicodeError)

# Image.MAX_IMAGE_PIXELS is process-global; lifting it is serialized so two profiles running in
# threads never restore each other's value.
_BOMB_LOCK = threading.Lock()


def profile_dataset(
    root: Path,
    *,
    label: str | None = None,
    max_rows: int | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Profile every file under ``root``; see the module docstring for the result's shape."""
    root = Path(root)
    if not root.is_dir():
        raise ValidationFailed(
            f"dataset root is not a folder: {root}",
            hint="pass the folder that holds the dataset version's files",
        )
    if max_rows is not None:
        max_rows = max(0, max_rows)

    errors: list[dict[str, str]] = []
    files = _list_files(root, errors)
    tables: list[dict[str, Any]] = []
    images = _ImageStats()
    other_files = 0

    for done, (rel, path, _size) in enumerate(files, start=1):
        suffix = Path(rel).suffix.lower()
        if suffix in TABLE_FORMATS:
            table = _profile_table(path, rel, TABLE_FORMATS[suffix], label, max_rows, errors)
            if table is not None:
                tables.append(table)
        elif suffix in IMAGE_EXTENSIONS:
            images.add(path, rel)
        else:
            other_files += 1
        if progress is not None:
            progress(done, len(files), rel)

    return {
        "files": len(files),
        "bytes": sum(size for _, _, size in files),
        "tables": tables,
        "images": images.result() if images.seen else None,
        "other_files": other_files,
        "errors": errors,
    }


# --------------------------------------------------------------------------- walking the tree


def _list_files(root: Path, errors: list[dict[str, str]]) -> list[tuple[str, Path, int]]:
    """Regular files under ``root`` as (relative path, path, size), sorted by relative path."""
    found: list[tuple[str, Path, int]] = []
    pending: list[tuple[Path, str]] = [(root, "")]
    while pending:
        folder, prefix = pending.pop()
        try:
            with os.scandir(folder) as entries:
                listing = list(entries)
        except OSError as exc:
            errors.append(_error(prefix.rstrip("/") or ".", exc))
            continue
        for entry in listing:
            # Hidden entries are tool state (.git, .DS_Store, ...), not data; symlinks could
            # point outside the dataset or loop, so neither is followed.
            if entry.name.startswith(".") or entry.is_symlink():
                continue
            rel = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                pending.append((Path(entry.path), rel + "/"))
            elif entry.is_file(follow_symlinks=False):
                try:
                    size = entry.stat(follow_symlinks=False).st_size
                except OSError as exc:
                    errors.append(_error(rel, exc))
                    continue
                found.append((rel, Path(entry.path), size))
    found.sort(key=lambda item: item[0])
    return found


def _error(path: str, exc: BaseException | str) -> dict[str, str]:
    """An ``errors`` entry whose message fits on one line."""
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    message = " ".join(text.split())
    if len(message) > ERROR_MESSAGE_LIMIT:
        message = message[: ERROR_MESSAGE_LIMIT - 3] + "..."
    return {"path": path, "error": message}


# --------------------------------------------------------------------------- values and types


def _merge_kind(old: str | None, new: str | None) -> str | None:
    """Combine the types seen for one column in two chunks (None: no value seen yet)."""
    if old is None or old == new:
        return new
    if new is None:
        return old
    if {old, new} == {"integer", "float"}:
        return "float"
    if "other" in (old, new):
        return "other"
    return "string"


def _arrow_kind(dtype: Any) -> str | None:
    """The profile type of an Arrow type; None for the null type, which says nothing yet."""
    types = pa.types
    if types.is_dictionary(dtype):
        return _arrow_kind(dtype.value_type)
    if types.is_null(dtype):
        return None
    if types.is_boolean(dtype):
        return "boolean"
    if types.is_integer(dtype):
        return "integer"
    if types.is_floating(dtype) or types.is_decimal(dtype):
        return "float"
    if types.is_string(dtype) or types.is_large_string(dtype):
        return "string"
    if types.is_timestamp(dtype) or types.is_date(dtype):
        return "datetime"
    return "other"


def _python_kind(value: Any) -> str:
    """The profile type of one decoded JSON value (never None: callers skip nulls)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "datetime" if _looks_like_datetime(value) else "string"
    return "other"


def _looks_like_datetime(text: str) -> bool:
    # The cheap shape test first: fromisoformat on every string of a big file would cost.
    if not (8 <= len(text) <= 40 and text[:4].isdigit() and text[4:5] == "-"):
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _is_missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and value != value)


def _encode(value: Any) -> bytes:
    """A canonical, type-tagged byte form of a value, used for distinct counts and row digests.

    The tag keeps ``1``, ``"1"`` and ``True`` apart; integral floats encode like ints so that a
    JSONL column holding ``1`` and ``1.0`` counts one distinct value.
    """
    if value is None:
        return b"n"
    if isinstance(value, bool):
        return b"b1" if value else b"b0"
    if isinstance(value, int):
        return b"i" + str(value).encode()
    if isinstance(value, float):
        if value.is_integer():
            return b"i" + str(int(value)).encode()
        return b"f" + repr(value).encode()
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return b"x" + value
    if isinstance(value, datetime | date | time):
        return b"t" + value.isoformat().encode()
    if isinstance(value, dict | list | tuple):
        text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
        return b"j" + text.encode()
    return b"o" + str(value).encode()


def _distinct_key(encoded: bytes) -> bytes:
    # Long values are stored as digests so 10_000 of them stay small. Encodings start with an
    # ASCII tag, never NUL, so a digest cannot collide with a short encoding.
    if len(encoded) <= 32:
        return encoded
    return b"\x00" + hashlib.blake2b(encoded, digest_size=16).digest()


def _label_key(value: Any) -> str:
    """A label value as the string key of the distribution."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


# --------------------------------------------------------------------------- table statistics


@dataclass
class _Column:
    name: str
    kind: str | None = None
    present: int = 0
    distinct: set[bytes] | None = field(default_factory=set)

    def observe(self, values: list[Any], encoded: list[bytes]) -> None:
        for value, enc in zip(values, encoded, strict=True):
            if _is_missing(value):
                continue
            self.present += 1
            if self.distinct is not None:
                self.distinct.add(_distinct_key(enc))
        if self.distinct is not None and len(self.distinct) > DISTINCT_LIMIT:
            self.distinct = None  # past the limit the exact count is no longer promised

    def result(self, rows: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.kind or "other",
            "missing": rows - self.present,
            "distinct": None if self.distinct is None else len(self.distinct),
        }


class _TableProfile:
    """Accumulates one table's figures batch by batch, whatever the file format."""

    def __init__(self, path: str, fmt: str, label: str | None, max_rows: int | None) -> None:
        self.path = path
        self.format = fmt
        self.label_wanted = label
        self.max_rows = max_rows
        self.columns: list[_Column] = []
        self.index_by_name: dict[str, int] = {}
        self.rows = 0
        self.truncated = False
        self.row_digests: set[bytes] = set()
        self.duplicates = 0
        self.label_index: int | None = None
        self.label_counts: Counter[str] = Counter()
        self.label_other = 0

    def register(self, names: Iterable[str], *, by_name: bool) -> list[int]:
        """Column indices for a batch's columns, adding unseen ones.

        ``by_name`` is for JSONL, whose chunks may list keys in any order; CSV and Parquet have
        one fixed schema matched by position (CSV headers may repeat a name).
        """
        indices = []
        for name in names:
            index = self.index_by_name.get(name) if by_name else None
            if index is None:
                index = len(self.columns)
                self.columns.append(_Column(name))
                self.index_by_name.setdefault(name, index)
                if self.label_index is None and self._is_label(name):
                    self.label_index = index
            indices.append(index)
        return indices

    def _is_label(self, name: str) -> bool:
        if self.label_wanted is not None:
            return name == self.label_wanted
        return name.lower() in LABEL_NAMES

    def room(self) -> int | None:
        """How many more rows may be read; None when unlimited."""
        return None if self.max_rows is None else self.max_rows - self.rows

    def add_batch(
        self, indices: list[int], kinds: list[str | None], columns: list[list[Any]]
    ) -> None:
        """Add rows given column-wise; ``indices`` come from :meth:`register`."""
        if not columns:
            return
        count = len(columns[0])
        encoded_columns: list[tuple[int, list[bytes]]] = []
        for index, kind, values in zip(indices, kinds, columns, strict=True):
            column = self.columns[index]
            column.kind = _merge_kind(column.kind, kind)
            encoded = [_encode(value) for value in values]
            column.observe(values, encoded)
            encoded_columns.append((index, encoded))
            if index == self.label_index:
                self._count_labels(values)
        # Digest in global column order so a JSONL row hashes the same whatever its key order.
        encoded_columns.sort(key=lambda item: item[0])
        self._count_duplicates(encoded_columns, count)
        self.rows += count

    def _count_labels(self, values: list[Any]) -> None:
        for value in values:
            if _is_missing(value):
                continue
            key = _label_key(value)
            if key in self.label_counts or len(self.label_counts) < LABEL_VALUES_LIMIT:
                self.label_counts[key] += 1
            else:
                self.label_other += 1

    def _count_duplicates(self, encoded_columns: list[tuple[int, list[bytes]]], count: int) -> None:
        for row in range(count):
            digest = hashlib.blake2b(digest_size=16)
            for index, encoded in encoded_columns:
                value = encoded[row]
                # Nulls are left out, so a JSONL row without a key equals one with the key null.
                if value == b"n":
                    continue
                # Column index and length prefixes keep ("ab", "c") apart from ("a", "bc").
                digest.update(index.to_bytes(4, "little"))
                digest.update(len(value).to_bytes(8, "little"))
                digest.update(value)
            key = digest.digest()
            if key in self.row_digests:
                self.duplicates += 1
            else:
                self.row_digests.add(key)

    def result(self, errors: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "rows": self.rows,
            "columns": [column.result(self.rows) for column in self.columns],
            "duplicate_rows": self.duplicates,
            "label": self._label_result(errors),
            "truncated": self.truncated,
        }

    def _label_result(self, errors: list[dict[str, str]]) -> dict[str, Any] | None:
        if self.label_index is None:
            if self.label_wanted is not None:
                names = [column.name for column in self.columns]
                shown = ", ".join(names[:50]) + (", ..." if len(names) > 50 else "")
                errors.append(
                    _error(
                        self.path,
                        f"label column {self.label_wanted!r} not found; "
                        f"available columns: {shown or '(none)'}",
                    )
                )
            return None
        counted = sum(self.label_counts.values()) + self.label_other
        ordered = sorted(self.label_counts.items(), key=lambda item: (-item[1], item[0]))
        return {
            "column": self.columns[self.label_index].name,
            "distribution": dict(ordered),
            "missing": self.rows - counted,
            "other": self.label_other,
        }


# --------------------------------------------------------------------------- table readers


def _profile_table(
    path: Path,
    rel: str,
    fmt: str,
    label: str | None,
    max_rows: int | None,
    errors: list[dict[str, str]],
) -> dict[str, Any] | None:
    """One table's entry, or None after recording why the file could not be read."""

    def fresh() -> _TableProfile:
        return _TableProfile(rel, fmt, label, max_rows)

    try:
        if fmt in ("csv", "tsv"):
            profile = _read_csv(path, fresh, "\t" if fmt == "tsv" else ",")
        elif fmt == "parquet":
            profile = fresh()
            _read_parquet(path, profile)
        else:
            profile = fresh()
            _read_jsonl(path, profile)
    except _FILE_ERRORS as exc:
        errors.append(_error(rel, exc))
        return None
    return profile.result(errors)


def _feed_arrow(profile: _TableProfile, schema: Any, batches: Iterator[Any]) -> None:
    """Feed Arrow record batches into ``profile``, honouring ``max_rows``."""
    indices = profile.register(schema.names, by_name=False)
    kinds = [_arrow_kind(f.type) for f in schema]
    for batch in batches:
        if batch.num_rows == 0:
            continue
        room = profile.room()
        if room is not None and batch.num_rows > room:
            # Reaching here means rows beyond the limit exist, whether in this batch or later.
            profile.truncated = True
            if room <= 0:
                return
            batch = batch.slice(0, room)
        profile.add_batch(indices, kinds, [column.to_pylist() for column in batch.columns])
        if profile.truncated:
            return


def _read_csv(path: Path, fresh: Callable[[], _TableProfile], delimiter: str) -> _TableProfile:
    """Stream a CSV/TSV file, re-reading it with a wider column type when pyarrow asks to.

    The streaming reader infers types from the first block only and fails on a later value that
    does not fit (an int column meeting ``1.5``); each such failure widens that column and
    starts over, so the file is read a few extra times at worst but never held in memory.
    """
    overrides: dict[str, Any] = {}
    for _attempt in range(_CSV_MAX_ATTEMPTS):
        profile = fresh()
        try:
            _read_csv_once(path, profile, delimiter, overrides)
        except pa.ArrowInvalid as exc:
            if not _widen_column(str(exc), profile, overrides):
                raise
            continue
        return profile
    raise ValueError("CSV column types kept changing; gave up re-reading")


def _read_csv_once(
    path: Path, profile: _TableProfile, delimiter: str, overrides: dict[str, Any]
) -> None:
    read_options = pacsv.ReadOptions(block_size=CSV_BLOCK_SIZE)
    parse_options = pacsv.ParseOptions(delimiter=delimiter)
    # Default null_values are kept on purpose (see the module docstring).
    convert_options = pacsv.ConvertOptions(column_types=overrides)
    with pa.input_stream(str(path)) as stream:
        reader = pacsv.open_csv(
            stream,
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )
        _feed_arrow(profile, reader.schema, iter(reader))


def _widen_column(message: str, profile: _TableProfile, overrides: dict[str, Any]) -> bool:
    """Record a wider type for the column a conversion error names; False if none is wider."""
    match = _CSV_CONVERSION_ERROR.search(message)
    if match is None:
        return False
    position, failed_type = int(match.group(1)), match.group(2)
    if position >= len(profile.columns):
        return False
    if failed_type == "null":
        wider = pa.int64()
    elif failed_type.startswith(("int", "uint")):
        wider = pa.float64()
    elif failed_type == "string":
        return False  # nothing is wider: the bytes are not valid text
    else:
        wider = pa.string()
    overrides[profile.columns[position].name] = wider
    return True


def _read_parquet(path: Path, profile: _TableProfile) -> None:
    with pq.ParquetFile(str(path)) as parquet:
        schema = parquet.schema_arrow
        _feed_arrow(profile, schema, parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS))


def _read_jsonl(path: Path, profile: _TableProfile) -> None:
    """Parse one JSON object per line, in chunks; blank lines are ignored."""
    chunk: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            room = profile.room()
            if room is not None and len(chunk) >= room:
                profile.truncated = True  # a further row exists beyond max_rows
                break
            chunk.append(_parse_json_line(line, line_number))
            if len(chunk) >= JSONL_CHUNK_LINES:
                _feed_json_rows(profile, chunk)
                chunk = []
    _feed_json_rows(profile, chunk)


def _parse_json_line(line: bytes, line_number: int) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"line {line_number}: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"line {line_number}: expected a JSON object, got {type(value).__name__}")
    return value


def _feed_json_rows(profile: _TableProfile, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    names = list(dict.fromkeys(key for row in rows for key in row))
    indices = profile.register(names, by_name=True)
    columns = [[row.get(name) for row in rows] for name in names]
    kinds = [_chunk_kind(values) for values in columns]
    profile.add_batch(indices, kinds, columns)


def _chunk_kind(values: list[Any]) -> str | None:
    kind: str | None = None
    for value in values:
        if not _is_missing(value):
            kind = _merge_kind(kind, _python_kind(value))
    return kind


# --------------------------------------------------------------------------- images


@dataclass
class _Range:
    low: int | None = None
    high: int | None = None
    total: int = 0

    def add(self, value: int) -> None:
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)
        self.total += value

    def result(self, count: int) -> dict[str, Any]:
        return {"min": self.low, "max": self.high, "mean": self.total / count if count else None}


@dataclass
class _ImageStats:
    seen: int = 0
    count: int = 0
    bytes: int = 0
    formats: Counter[str] = field(default_factory=Counter)
    modes: Counter[str] = field(default_factory=Counter)
    by_folder: Counter[str] = field(default_factory=Counter)
    width: _Range = field(default_factory=_Range)
    height: _Range = field(default_factory=_Range)
    unreadable: list[str] = field(default_factory=list)
    unreadable_count: int = 0

    def add(self, path: Path, rel: str) -> None:
        self.seen += 1
        header = _read_image_header(path)
        if header is None:
            self.unreadable_count += 1
            if len(self.unreadable) < UNREADABLE_LIMIT:
                self.unreadable.append(rel)
            return
        fmt, (width, height), mode = header
        self.count += 1
        self.bytes += path.stat().st_size
        self.formats[fmt] += 1
        self.modes[mode] += 1
        parent = rel.rpartition("/")[0]
        self.by_folder[parent.rpartition("/")[2] if parent else "."] += 1
        self.width.add(width)
        self.height.add(height)

    def result(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "bytes": self.bytes,
            "formats": dict(sorted(self.formats.items())),
            "width": self.width.result(self.count),
            "height": self.height.result(self.count),
            "modes": dict(sorted(self.modes.items())),
            "by_folder": dict(sorted(self.by_folder.items())),
            "unreadable": self.unreadable,
            "unreadable_count": self.unreadable_count,
        }


def _read_image_header(path: Path) -> tuple[str, tuple[int, int], str] | None:
    """(format, size, mode) from the image header, or None when Pillow cannot identify it."""
    try:
        try:
            return _open_header(path)
        except Image.DecompressionBombError:
            # Image.open refuses very large images before decoding anything; this profile never
            # decodes pixels, so the size is harmless to read with the limit lifted briefly.
            with _BOMB_LOCK:
                saved = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None
                try:
                    return _open_header(path)
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
    except Exception:
        # Pillow's format plugins raise a zoo of types on corrupt headers (OSError, SyntaxError,
        # struct.error, ValueError, ...); every one of them just means "unreadable".
        return None


def _open_header(path: Path) -> tuple[str, tuple[int, int], str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            return image.format or "unknown", image.size, image.mode
