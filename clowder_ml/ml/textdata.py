"""Text-classification data: find tables, stream rows, check them, split, tokenize to Arrow.

Contract
--------
* A dataset version is a folder ``root`` materialized on local disk. Table files are the
  extensions of :data:`clowder_ml.tasks.dataset_profile.TABLE_FORMATS` (``.csv .tsv .jsonl
  .ndjson .parquet .pq``, case-insensitive); hidden files/folders (``.``-prefixed) and symlinks
  are skipped. Paths shown to users are relative to ``root`` with ``/`` separators.
* :func:`iter_text_rows` streams one table in :class:`TextBatch` batches of at most
  ``batch_rows`` rows: CSV/TSV through ``pyarrow.csv.open_csv`` (only the needed columns are
  converted), JSONL line by line, Parquet through ``ParquetFile.iter_batches``. The whole file
  is never held in memory. Training and prediction use this streamed path (usually through
  :func:`encode_to_arrow` and :class:`TokenizedTable`); :func:`load_examples` concatenates
  everything and is meant for small data (validation sets, tests).
* Rows are numbered from 1 over data rows: the CSV/TSV header is not a row, and blank lines
  (CSV/TSV/JSONL) are skipped without being counted.
* Every data problem raises :class:`~clowder_ml.errors.ValidationFailed` whose message names the
  file (relative path), the row and the column, and whose hint says what to do: a missing
  column (lists the file's columns, names the ``--param`` to set and a close match if any),
  text that is not valid UTF-8 (with the byte offset in the file), a null text, a null/empty
  label, a null/empty id.
* Labels are strings: ints and bools go through ``str()``, integral floats become their int
  spelling (``1.0`` -> ``"1"``, Parquet stores nullable ints as floats).
* CSV/TSV: an empty unquoted cell is null; a quoted empty cell (``""``) is the empty string.
  No other spelling (``NA``, ``null``) is null: text is kept as written.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import math
import os
import random
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from clowder_ml.errors import ValidationFailed
from clowder_ml.tasks.dataset_profile import TABLE_FORMATS

__all__ = [
    "TABLE_FORMATS",
    "TextBatch",
    "TextExamples",
    "TokenizedTable",
    "cache_key",
    "check_validation_labels",
    "encode_to_arrow",
    "find_tables",
    "iter_text_rows",
    "label_mapping",
    "load_examples",
    "no_tables",
    "split_examples",
    "table_columns",
]

Tokenize = Callable[[list[str]], dict[str, list[list[int]]]]

# Bytes pyarrow reads per CSV block; rows are re-cut into ``batch_rows`` batches afterwards.
CSV_BLOCK_SIZE = 1 << 20
MAX_VALIDATION_FRACTION = 0.9
_SHOWN_COLUMNS = 50
_SHOWN_LABELS = 20

_UTF8_HINT = (
    "re-save the file as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet, or "
    "`iconv -f latin1 -t utf-8 in.csv > out.csv`)"
)
_SURROGATE = re.compile("[\udc80-\udcff]")
_PARAM_FOR_ROLE = {"text": "text_column", "label": "label_column", "id": "id_column"}


@dataclass
class TextBatch:
    """Up to ``batch_rows`` consecutive rows of one table.

    ``labels`` is None when no label column was asked for. ``rows`` are the 1-based data row
    numbers in the file; ``source`` is the file's path relative to the dataset root.
    """

    texts: list[str]
    labels: list[str] | None
    ids: list[str]
    rows: list[int]
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class TextExamples:
    """Rows of one or more tables, in file order then row order; all lists have one length.

    ``sources[i]``/``rows[i]`` say where example ``i`` came from (for error messages);
    ``text_column``/``label_column`` are the column names they were read from.
    """

    texts: list[str] = field(default_factory=list)
    labels: list[str] | None = None
    ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    text_column: str = "text"
    label_column: str | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def extend(self, batch: TextBatch) -> None:
        """Append a batch (its labels must be present exactly when ``labels`` is not None)."""
        self.texts.extend(batch.texts)
        if self.labels is not None:
            if batch.labels is None:
                raise ValueError("batch has no labels but the examples do")
            self.labels.extend(batch.labels)
        self.ids.extend(batch.ids)
        self.sources.extend([batch.source] * len(batch))
        self.rows.extend(batch.rows)

    def select(self, indices: list[int]) -> TextExamples:
        """A new TextExamples holding the examples at ``indices``, in that order."""
        return TextExamples(
            texts=[self.texts[i] for i in indices],
            labels=None if self.labels is None else [self.labels[i] for i in indices],
            ids=[self.ids[i] for i in indices],
            sources=[self.sources[i] for i in indices],
            rows=[self.rows[i] for i in indices],
            text_column=self.text_column,
            label_column=self.label_column,
        )


# --------------------------------------------------------------------------- finding tables


def find_tables(
    root: Path, files: list[str] | None = None, *, exclude: Iterable[str] = ()
) -> list[Path]:
    """Table files under ``root``, sorted by relative path.

    Without ``files`` every table under ``root`` is returned (hidden entries and symlinks
    skipped). With ``files`` only those relative paths are returned; each must exist inside
    ``root`` and be a table, else ValidationFailed. ``exclude`` drops relative paths (e.g. the
    validation file from the training files). An empty result is not an error here.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValidationFailed(
            f"dataset root is not a folder: {root}",
            hint="pass the folder that holds the dataset version's files",
        )
    excluded = {_normal_rel(name) for name in exclude}
    if files is None:
        found = [p for p in _walk_tables(root) if _rel(p, root) not in excluded]
        return sorted(found, key=lambda p: _rel(p, root))
    chosen: dict[str, Path] = {}
    resolved_root = root.resolve()
    for name in files:
        rel = _normal_rel(name)
        path = root / rel
        inside = path.resolve().is_relative_to(resolved_root)
        if not inside or not path.is_file():
            raise ValidationFailed(
                f"file {name!r} not found in the dataset",
                hint=f"name a file relative to the dataset root; tables there: "
                f"{_shown([_rel(p, root) for p in _walk_tables(root)], _SHOWN_COLUMNS)}",
            )
        if path.suffix.lower() not in TABLE_FORMATS:
            raise ValidationFailed(
                f"file {rel!r} is not a table",
                hint=f"use a file ending in one of {', '.join(sorted(TABLE_FORMATS))}",
            )
        if rel not in excluded:
            chosen[rel] = path
    return [chosen[rel] for rel in sorted(chosen)]


def _normal_rel(name: str) -> str:
    return Path(name.replace("\\", "/")).as_posix().lstrip("/")


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _walk_tables(root: Path) -> list[Path]:
    return [p for p in _walk_files(root) if p.suffix.lower() in TABLE_FORMATS]


def _walk_files(root: Path) -> list[Path]:
    """Every regular file under ``root``, hidden ones and symlinks left out."""
    found: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [
            d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(folder, d))
        ]
        for name in names:
            path = Path(folder) / name
            if not name.startswith(".") and not path.is_symlink():
                found.append(path)
    return found


def no_tables(root: Path, files: list[str] | None = None) -> ValidationFailed:
    """The error for data with no table to read: says which files it holds instead (a
    picture handed to a text task, say) and which formats are read."""
    held = sorted(_rel(p, root) for p in _walk_files(root)) if files is None else files
    where = "in the dataset" if files is None else "among the files named"
    return ValidationFailed(
        f"no table files {where}"
        + (f"; it holds {_shown(held, _SHOWN_COLUMNS)}" if held else "; it is empty"),
        hint=f"the text tasks read tables ({', '.join(sorted(TABLE_FORMATS))}); add one to "
        "the dataset version",
    )


def _shown(names: list[str], limit: int) -> str:
    if not names:
        return "(none)"
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


# --------------------------------------------------------------------------- streaming rows


def iter_text_rows(
    path: Path,
    root: Path,
    text_column: str,
    label_column: str | None,
    id_column: str | None = None,
    batch_rows: int = 4096,
) -> Iterator[TextBatch]:
    """Stream one table as :class:`TextBatch` batches of at most ``batch_rows`` rows.

    ``ids`` come from ``id_column`` when given (as strings), else ``f"{relpath}:{row}"``.
    Raises ValidationFailed (file, row, column, hint) on a missing column, invalid UTF-8 text,
    a null text, a null/empty label or id, or a file that cannot be parsed. Rows before a bad
    row may already have been yielded.
    """
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    path, root = Path(path), Path(root)
    rel = _rel(path, root)
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValidationFailed(
            f"file {rel!r} is not a table",
            hint=f"use a file ending in one of {', '.join(sorted(TABLE_FORMATS))}",
        )
    wanted: list[tuple[str, str]] = [("text", text_column)]
    if label_column is not None:
        wanted.append(("label", label_column))
    if id_column is not None:
        wanted.append(("id", id_column))
    columns = list(dict.fromkeys(name for _, name in wanted))

    if fmt in ("csv", "tsv"):
        chunks = _csv_chunks(path, rel, "\t" if fmt == "tsv" else ",", wanted, columns)
    elif fmt == "parquet":
        chunks = _parquet_chunks(path, rel, wanted, columns, batch_rows)
    else:
        chunks = _jsonl_chunks(path, rel, wanted, columns, batch_rows)

    texts: list[str] = []
    labels: list[str] | None = None if label_column is None else []
    ids: list[str] = []
    rows: list[int] = []
    row = 0
    for chunk in chunks:
        text_values = chunk[text_column]
        label_values = chunk[label_column] if label_column is not None else None
        id_values = chunk[id_column] if id_column is not None else None
        for i, value in enumerate(text_values):
            row += 1
            texts.append(_text_value(value, rel, row, text_column))
            if labels is not None and label_values is not None and label_column is not None:
                labels.append(_label_value(label_values[i], rel, row, label_column))
            if id_values is not None and id_column is not None:
                ids.append(_id_value(id_values[i], rel, row, id_column))
            else:
                ids.append(f"{rel}:{row}")
            rows.append(row)
            if len(texts) >= batch_rows:
                yield TextBatch(texts, labels, ids, rows, rel)
                texts, ids, rows = [], [], []
                labels = None if label_column is None else []
    if texts:
        yield TextBatch(texts, labels, ids, rows, rel)


class _Absent:
    """A JSONL row without the key (distinct from an explicit null)."""


_ABSENT = _Absent()


def _where(rel: str, row: int, column: str) -> str:
    return f"{rel}, row {row}, column {column!r}"


def _text_value(value: Any, rel: str, row: int, column: str) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, _Absent) or _is_nan(value):
        raise ValidationFailed(
            f"missing text in {_where(rel, row, column)}",
            hint='drop or fill such rows (an empty text can be written as "" in CSV)',
        )
    if isinstance(value, bytes):
        return _decode_value(value, rel, row, column)
    if isinstance(value, bool | int | float):
        return str(value)
    raise ValidationFailed(
        f"text in {_where(rel, row, column)} is a {type(value).__name__}, not text",
        hint="point --param text_column=... at a column of plain text",
    )


def _label_value(value: Any, rel: str, row: int, column: str) -> str:
    if isinstance(value, bytes):
        value = _decode_value(value, rel, row, column)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = value if isinstance(value, str) else None
    if text is None and not (value is None or isinstance(value, _Absent) or _is_nan(value)):
        text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)
    if text is None or not text.strip():
        raise ValidationFailed(
            f"missing label in {_where(rel, row, column)}",
            hint="fill in a label for every row, or drop the unlabeled rows",
        )
    return text


def _id_value(value: Any, rel: str, row: int, column: str) -> str:
    if isinstance(value, bytes):
        value = _decode_value(value, rel, row, column)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = None if value is None or isinstance(value, _Absent) or _is_nan(value) else str(value)
    if text is None or not text.strip():
        raise ValidationFailed(
            f"missing id in {_where(rel, row, column)}",
            hint="give every row an id, or set --param id_column= (empty) to number rows by "
            "file:row",
        )
    return text


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _decode_value(value: bytes, rel: str, row: int, column: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(
            f"text is not valid UTF-8 in {_where(rel, row, column)} "
            f"(byte offset {exc.start} in the value)",
            hint=_UTF8_HINT,
        ) from exc


def _missing_column(rel: str, role: str, column: str, available: list[str]) -> ValidationFailed:
    param = _PARAM_FOR_ROLE[role]
    close = difflib.get_close_matches(column, available, n=1, cutoff=0.6)
    if not close:
        lowered = {name.lower(): name for name in available}
        if column.lower() in lowered:
            close = [lowered[column.lower()]]
    hint = f"set --param {param}=<column> to one of the file's columns"
    if close:
        hint += f"; did you mean --param {param}={close[0]}?"
    return ValidationFailed(
        f"{role} column {column!r} not found in {rel}; its columns are: "
        f"{_shown(available, _SHOWN_COLUMNS)}",
        hint=hint,
    )


def _check_columns(rel: str, wanted: list[tuple[str, str]], available: list[str]) -> None:
    present = set(available)
    for role, column in wanted:
        if column not in present:
            raise _missing_column(rel, role, column, available)


# ----- CSV / TSV


def _csv_records(path: Path, delimiter: str) -> Iterator[tuple[list[str], int, bytes]]:
    """Python-csv records of a file as (fields, byte offset of the record, raw record bytes).

    Bytes are decoded with ``surrogateescape``, so invalid UTF-8 shows as lone surrogates
    instead of failing. Empty records (blank lines) are skipped, as pyarrow does.
    """
    consumed: list[tuple[int, bytes]] = []

    def lines() -> Iterator[str]:
        position = 0
        with path.open("rb") as handle:
            for raw in handle:
                consumed.append((position, raw))
                position += len(raw)
                yield raw.decode("utf-8", "surrogateescape")

    # Texts may be longer than the csv module's default field limit (128 KiB).
    if csv.field_size_limit() < 2**31 - 1:
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    first = True
    for record in csv.reader(lines(), delimiter=delimiter):
        start = consumed[0][0] if consumed else 0
        raw = b"".join(chunk for _, chunk in consumed)
        consumed.clear()
        if first and record:
            record[0] = record[0].removeprefix("\ufeff")
            first = False
        if record:
            yield record, start, raw


def table_columns(path: Path) -> list[str]:
    """The column names of a table (CSV/TSV header, Parquet schema, the first JSONL record's
    keys); ``[]`` for an empty file or one that cannot be read (reading it later says why)."""
    fmt = TABLE_FORMATS.get(Path(path).suffix.lower())
    try:
        if fmt in ("csv", "tsv"):
            return _csv_header(Path(path), "\t" if fmt == "tsv" else ",") or []
        if fmt == "parquet":
            with pq.ParquetFile(str(path)) as parquet:
                return list(parquet.schema_arrow.names)
        if fmt is not None:
            with Path(path).open("rb") as handle:
                for raw in handle:
                    if raw.strip():
                        record = json.loads(raw)
                        return [str(k) for k in record] if isinstance(record, dict) else []
    except (ValueError, OSError, pa.ArrowException, ValidationFailed):
        pass
    return []


def _csv_header(path: Path, delimiter: str) -> list[str] | None:
    for record, _, _ in _csv_records(path, delimiter):
        return record
    return None


def _csv_chunks(
    path: Path,
    rel: str,
    delimiter: str,
    wanted: list[tuple[str, str]],
    columns: list[str],
) -> Iterator[dict[str, list[Any]]]:
    header = _csv_header(path, delimiter)
    if header is None:
        return  # an empty file has no rows
    _check_columns(rel, wanted, header)
    read_options = pacsv.ReadOptions(block_size=CSV_BLOCK_SIZE)
    parse_options = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
    convert_options = pacsv.ConvertOptions(
        include_columns=columns,
        column_types={name: pa.string() for name in columns},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    try:
        with pa.input_stream(str(path)) as stream:
            reader = pacsv.open_csv(
                stream,
                read_options=read_options,
                parse_options=parse_options,
                convert_options=convert_options,
            )
            for batch in reader:
                if batch.num_rows:
                    yield {name: batch.column(name).to_pylist() for name in columns}
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc) or "UTF-8" in str(exc):
            located = _locate_bad_csv_utf8(path, rel, delimiter, columns)
            if located is not None:
                raise located from exc
        raise ValidationFailed(
            f"cannot parse {rel}: {' '.join(str(exc).split())[:400]}",
            hint="check the file is a well-formed "
            f"{'TSV (tab-separated)' if delimiter == chr(9) else 'CSV'} with a header row",
        ) from exc


def _locate_bad_csv_utf8(
    path: Path, rel: str, delimiter: str, columns: list[str]
) -> ValidationFailed | None:
    """Find the first data row whose wanted column holds invalid UTF-8 (None if not found)."""
    positions: list[tuple[str, int]] = []
    row = -1  # the header is record 0
    for record, start, raw in _csv_records(path, delimiter):
        row += 1
        if row == 0:
            positions = [(name, record.index(name)) for name in columns if name in record]
            continue
        for name, index in positions:
            value = record[index] if index < len(record) else ""
            bad = _SURROGATE.search(value)
            if bad is None:
                continue
            in_value = len(value[: bad.start()].encode("utf-8", "surrogateescape"))
            try:
                raw.decode("utf-8")
                offset = start + in_value
            except UnicodeDecodeError as exc:
                offset = start + exc.start
            return ValidationFailed(
                f"text is not valid UTF-8 in {_where(rel, row, name)} "
                f"(byte offset {offset} in the file, {in_value} in the value)",
                hint=_UTF8_HINT,
            )
    return None


# ----- Parquet


def _parquet_chunks(
    path: Path,
    rel: str,
    wanted: list[tuple[str, str]],
    columns: list[str],
    batch_rows: int,
) -> Iterator[dict[str, list[Any]]]:
    try:
        parquet = pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise ValidationFailed(
            f"cannot read {rel} as Parquet: {' '.join(str(exc).split())[:400]}",
            hint="check the file is a complete Parquet file",
        ) from exc
    with parquet:
        _check_columns(rel, wanted, list(parquet.schema_arrow.names))
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            if batch.num_rows:
                yield {name: batch.column(name).to_pylist() for name in columns}


# ----- JSONL


def _jsonl_chunks(
    path: Path,
    rel: str,
    wanted: list[tuple[str, str]],
    columns: list[str],
    batch_rows: int,
) -> Iterator[dict[str, list[Any]]]:
    chunk: dict[str, list[Any]] = {name: [] for name in columns}
    size = 0
    row = 0
    position = 0
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            start = position
            position += len(raw)
            line = raw.strip()
            if not line:
                continue
            row += 1
            record = _json_record(line, raw, start, rel, row, line_number, columns)
            if row == 1:
                _check_columns(rel, wanted, list(record))
            for name in columns:
                chunk[name].append(record.get(name, _ABSENT))
            size += 1
            if size >= batch_rows:
                yield chunk
                chunk = {name: [] for name in columns}
                size = 0
    if size:
        yield chunk


def _json_record(
    line: bytes,
    raw: bytes,
    start: int,
    rel: str,
    row: int,
    line_number: int,
    columns: list[str],
) -> dict[str, Any]:
    bad_offset: int | None = None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text = line.decode("utf-8", "surrogateescape")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_offset = start + exc.start
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise ValidationFailed(
            f"{rel}, row {row} (line {line_number}) is not valid JSON: {exc}",
            hint="write one JSON object per line (JSON Lines)",
        ) from exc
    if not isinstance(record, dict):
        raise ValidationFailed(
            f"{rel}, row {row} (line {line_number}) is a JSON {type(record).__name__}, "
            "not an object",
            hint='write one JSON object per line, e.g. {"text": "...", "label": "..."}',
        )
    if bad_offset is not None:
        # Invalid bytes elsewhere in the line (a column not used) are harmless.
        for name in columns:
            value = record.get(name)
            if isinstance(value, str) and _SURROGATE.search(value):
                raise ValidationFailed(
                    f"text is not valid UTF-8 in {_where(rel, row, name)} "
                    f"(byte offset {bad_offset} in the file)",
                    hint=_UTF8_HINT,
                )
    return record


# --------------------------------------------------------------------------- whole datasets


def load_examples(
    root: Path,
    files: list[str] | None,
    text_column: str,
    label_column: str | None,
    id_column: str | None = None,
) -> TextExamples:
    """All rows of the tables :func:`find_tables` picks, concatenated in memory.

    For small data and tests; training streams through :func:`iter_text_rows` instead.
    Raises ValidationFailed "no table files" when there is no table, "dataset has no rows"
    (naming the files looked at) when they are all empty, and any error of iter_text_rows.
    """
    root = Path(root)
    tables = find_tables(root, files)
    if not tables:
        raise no_tables(root, files)
    examples = TextExamples(
        labels=None if label_column is None else [],
        text_column=text_column,
        label_column=label_column,
    )
    for path in tables:
        for batch in iter_text_rows(path, root, text_column, label_column, id_column):
            examples.extend(batch)
    if not examples.texts:
        raise ValidationFailed(
            f"dataset has no rows; looked at: {_shown([_rel(p, root) for p in tables], 20)}",
            hint="add rows to the table files (a header alone is not a row)",
        )
    return examples


def label_mapping(labels: Iterable[str]) -> dict[str, int]:
    """Sorted distinct labels mapped to 0..n-1 (same input set, same mapping).

    Raises ValidationFailed when fewer than 2 distinct labels are found.
    """
    distinct = sorted(set(labels))
    if len(distinct) < 2:
        found = ", ".join(repr(label) for label in distinct) or "none"
        raise ValidationFailed(
            f"a classifier needs at least 2 labels; found {len(distinct)}: {found}",
            hint="check --param label_column=... names the label column, "
            "and that the data holds examples of at least two classes",
        )
    return {label: index for index, label in enumerate(distinct)}


def check_validation_labels(train_map: dict[str, int], val: TextExamples) -> None:
    """Raise ValidationFailed at the first validation label that training never saw."""
    if val.labels is None:
        return
    for i, label in enumerate(val.labels):
        if label not in train_map:
            known = sorted(train_map)
            column = val.label_column or "label"
            raise ValidationFailed(
                f"label {label!r} in {_where(val.sources[i], val.rows[i], column)} of the "
                f"validation data does not occur in the training data; known labels: "
                f"{_shown([repr(k) for k in known], _SHOWN_LABELS)}",
                hint="fix or drop that row, or add training examples of that label",
            )


def split_examples(
    ex: TextExamples, fraction: float, seed: int
) -> tuple[TextExamples, TextExamples]:
    """Split off ``fraction`` of the examples for validation: (train, validation).

    Deterministic for a given ``seed`` and input. With labels the split is stratified: each
    label gives about ``fraction`` of its examples, keeps at least one in training, and the
    validation set is never empty (a label with 2+ examples gives one when rounding gave
    none). Both parts keep the original order. Raises ValidationFailed for ``fraction``
    outside (0, 0.9] or when too few examples leave nothing to validate on.
    """
    if not (0 < fraction <= MAX_VALIDATION_FRACTION) or math.isnan(fraction):
        raise ValidationFailed(
            f"validation_split must be in (0, {MAX_VALIDATION_FRACTION}]; got {fraction}",
            hint="set e.g. --param validation_split=0.1",
        )
    rng = random.Random(seed)  # noqa: S311 - a reproducible split, not security
    groups: dict[str, list[int]] = defaultdict(list)
    if ex.labels is None:
        groups[""] = list(range(len(ex)))
    else:
        for index, label in enumerate(ex.labels):
            groups[label].append(index)
    validation: list[int] = []
    spare: list[list[int]] = []  # per group, indices still in training beyond the first
    for label in sorted(groups):
        members = groups[label]
        rng.shuffle(members)
        take = min(round(len(members) * fraction), len(members) - 1)
        validation.extend(members[:take])
        spare.append(members[take:-1] if len(members) > 1 else [])
    if not validation:
        candidates = [members for members in spare if members]
        if not candidates:
            raise ValidationFailed(
                f"too few examples to split off validation data ({len(ex)} examples)",
                hint="add examples, or give a separate --param validation_file=...",
            )
        largest = max(candidates, key=len)
        validation.append(largest[0])
    chosen = set(validation)
    train = [i for i in range(len(ex)) if i not in chosen]
    return ex.select(train), ex.select(sorted(chosen))


# --------------------------------------------------------------------------- tokenized Arrow


def _schema(with_labels: bool) -> pa.Schema:
    fields = [
        pa.field("input_ids", pa.list_(pa.int32())),
        pa.field("attention_mask", pa.list_(pa.int8())),
    ]
    if with_labels:
        fields.append(pa.field("label", pa.int64()))
    fields += [pa.field("id", pa.string()), pa.field("length", pa.int32())]
    return pa.schema(fields)


def encode_to_arrow(
    batches: Iterable[TextBatch],
    tokenize: Tokenize,
    label_map: dict[str, int] | None,
    out: Path,
) -> Path:
    """Tokenize batch by batch into an Arrow IPC file at ``out``; returns ``out``.

    Columns: ``input_ids`` list<int32>, ``attention_mask`` list<int8> (all ones when the
    tokenizer gives none), ``label`` int64 (only when ``label_map`` is given), ``id`` string,
    ``length`` int32 (tokens per row). ``tokenize(texts)`` must return one list per text.
    The file is written to a temporary name and renamed, so ``out`` is either complete or
    absent. A label not in ``label_map`` raises ValidationFailed naming file, row and label.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = _schema(label_map is not None)
    handle, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, schema) as writer:
            for batch in batches:
                if len(batch):
                    writer.write_batch(_encode_batch(batch, tokenize, label_map, schema))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _encode_batch(
    batch: TextBatch, tokenize: Tokenize, label_map: dict[str, int] | None, schema: pa.Schema
) -> pa.RecordBatch:
    encoded = tokenize(batch.texts)
    input_ids = encoded["input_ids"]
    mask = encoded.get("attention_mask") or [[1] * len(ids) for ids in input_ids]
    if len(input_ids) != len(batch) or len(mask) != len(batch):
        raise ValueError(f"tokenize returned {len(input_ids)} rows for {len(batch)} texts")
    columns: dict[str, Any] = {
        "input_ids": pa.array(input_ids, type=pa.list_(pa.int32())),
        "attention_mask": pa.array(mask, type=pa.list_(pa.int8())),
    }
    if label_map is not None:
        if batch.labels is None:
            raise ValueError("a label map was given but the batch has no labels")
        label_ids: list[int] = []
        for label, row in zip(batch.labels, batch.rows, strict=True):
            if label not in label_map:
                raise ValidationFailed(
                    f"label {label!r} in {batch.source}, row {row} is not one the model knows; "
                    f"known labels: {_shown([repr(k) for k in sorted(label_map)], _SHOWN_LABELS)}",
                    hint="fix or drop that row, or add training examples of that label",
                )
            label_ids.append(label_map[label])
        columns["label"] = pa.array(label_ids, type=pa.int64())
    columns["id"] = pa.array(batch.ids, type=pa.string())
    columns["length"] = pa.array([len(ids) for ids in input_ids], type=pa.int32())
    return pa.record_batch([columns[f.name] for f in schema], schema=schema)


class TokenizedTable:
    """A tokenized Arrow IPC file (from :func:`encode_to_arrow`), memory-mapped, read-only.

    Rows are read on demand from the mapping; nothing is copied into Python until asked.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._source = pa.memory_map(str(self.path), "r")
        self._table = ipc.open_file(self._source).read_all()

    @property
    def has_labels(self) -> bool:
        return "label" in self._table.column_names

    @property
    def column_names(self) -> list[str]:
        return list(self._table.column_names)

    def __len__(self) -> int:
        return int(self._table.num_rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One row as a dict of Python values (lists of ints for the token columns)."""
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError(f"row {index} out of range for {size} rows")
        rows: list[dict[str, Any]] = self._table.slice(index, 1).to_pylist()
        return rows[0]

    def lengths(self) -> list[int]:
        """Token count of every row, in order (for length-grouped batching)."""
        values: list[int] = self._table.column("length").to_pylist()
        return values

    def batch(self, indices: list[int]) -> dict[str, list[Any]]:
        """The rows at ``indices`` as columns: ``{"input_ids": [[...], ...], ...}``."""
        picked: dict[str, list[Any]] = self._table.take(pa.array(indices, pa.int64())).to_pydict()
        return picked

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> TokenizedTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cache_key(*parts: str) -> str:
    """Hex sha256 of ``parts`` joined with NUL: a stable name for a cached file."""
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
