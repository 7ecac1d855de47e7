"""The rules a request value must meet, each written once as a typed field.

Every alias here carries its rule as JSON Schema (``pattern``, lengths, bounds) that pydantic
enforces on the way in and OpenAPI publishes on the way out, so the schema, the server and
the clients generated from the schema (the web UI's forms) agree. Where the service layer
checks the same rule for its other callers (the CLI, the Clowder connector), the pattern
here accepts only what the service accepts, never more: a request that matches the schema
is not refused for its form.

The patterns are written for both regex dialects that read them: ECMA-262 (JSON Schema,
OpenAPI clients) and Rust's ``regex`` (pydantic-core). So: no look-around, no named groups,
no ``\\d`` (Unicode digits in Rust), ASCII classes spelled out.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BeforeValidator, Field

# Characters no stored path may hold (services.paths): control characters and backslash.
_BAD = r"\x00-\x1f\x7f\\"
# What Python's str.strip() removes beyond the control characters: a path is stripped
# before it is checked, so an edge of whitespace would be silently dropped.
_SPACE = r"\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def _segment(*, first: bool) -> str:
    """One path segment: not empty, not '.' or '..', no '/', no bad characters, no
    whitespace at either end; the first segment of a path does not start like a Windows
    drive ('C:')."""
    inner = f"[^/{_BAD}]"
    edge = f"[^/{_BAD}{_SPACE}]"
    non_dot_edge = f"[^./{_BAD}{_SPACE}]"
    if first:
        # A first character that is a letter must not be followed by ':'.
        starts = [f"[^./{_BAD}{_SPACE}A-Za-z]{inner}*{edge}",
                  f"[A-Za-z][^/:{_BAD}{_SPACE}]",
                  f"[A-Za-z][^/:{_BAD}]{inner}*{edge}"]
    else:
        starts = [f"{non_dot_edge}{inner}*{edge}"]
    return "(?:" + "|".join([
        non_dot_edge,                                # one character, not '.'
        *starts,                                     # two or more, not starting with '.'
        f"\\.{non_dot_edge}",                        # '.x'
        f"\\.[^./{_BAD}]{inner}*{edge}",             # '.x...'
        f"\\.\\.{inner}*{edge}",                     # '..x...' (three or more)
    ]) + ")"


_PATH_CORE = f"(?:\\./)*{_segment(first=True)}(?:/{_segment(first=False)})*"
MAX_PATH = 1024

FILE_PATH_PATTERN = f"^{_PATH_CORE}$"
"""A file's path in a dataset: relative, '/'-separated ('./' in front is dropped)."""

FILE_PATH_OR_EMPTY_PATTERN = f"^(?:{_PATH_CORE})?$"
"""As ``FILE_PATH_PATTERN``, or '' where a form field left empty means "not given"."""

FOLDER_PATTERN = f"^/*(?:{_PATH_CORE}/*)?$"
"""A folder in a dataset, '' (or '/') for its root; slashes around it are dropped."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""A dataset's or model's name (``services.datasets.NAME_RE``)."""

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,63}$"
"""A user name (``services.users.USERNAME_RE``)."""

_OWNER = r"[a-z0-9][a-z0-9._-]{1,63}"
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"

DATASET_REF_PATTERN = f"^(?:{_OWNER}:)?{_NAME}$"
"""A dataset in a URL: its id (``ds_...``), your dataset's name, a unique name shared with
you, or ``owner:name``."""

DATASET_REF_BODY_PATTERN = f"^(?:{_OWNER}[:/])?{_NAME}$"
"""A dataset in a request body: as in a URL, or ``owner/name``."""

MODEL_NAME_PATTERN = f"^(?:{_OWNER}:)?{_NAME}(?:@[A-Za-z0-9._-]+)?$"
"""A model in a URL: ``NAME`` or ``OWNER:NAME`` (a trailing ``@ALIAS`` is ignored)."""

MODEL_REF_PATTERN = f"^(?:{_OWNER}:)?{_NAME}(?:@[A-Za-z0-9._-]+|/[0-9]{{1,9}})?$"
"""A model version: ``NAME``, ``NAME@latest``, ``NAME@ALIAS``, ``NAME@N``, ``NAME/N``,
with ``OWNER:`` in front for another user's model (``registry.models.parse_ref``)."""

ALIAS_PATTERN = r"^[a-z][a-z0-9._-]{0,63}$"
"""An alias a user may set (``registry.models.ALIAS_RE``); never ``latest``."""

TASK_PATTERN = r"^[a-z][a-z0-9-]{1,63}$"
"""A task's name (``engine.spec.TASK_RE``)."""

NO_NUL_PATTERN = r"^[^\x00]*$"
"""Text the databases can store: PostgreSQL refuses NUL characters."""

DATASET_ID_PATTERN = r"^ds_[0-9a-f]{16}$"
"""A dataset's id, as the server made it (``services.datasets``)."""

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""A server-made id (jobs ``job_...``, uploads, tokens): letters, digits, '_' and '-'."""

MIN_PASSWORD = 8  # services.users.MIN_PASSWORD

_ISO_DATE_START = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_time(value: Any) -> Any:
    """An ISO 8601 time as the schema's ``date-time`` (RFC 3339) has it, and the lenient
    forms people type (a date alone, a time without offset). Not a number: pydantic would
    read one as a Unix time, which is not what the schema says. RFC 3339 times that Python
    cannot hold are their nearest equivalent: a leap second is the second before it, the
    year 0000 the first instant Python has."""
    if not isinstance(value, str) or not _ISO_DATE_START.match(value):
        raise ValueError("expected an ISO 8601 time, e.g. 2026-01-31T12:00:00Z")
    if value.startswith("0000-"):
        return datetime.min.replace(tzinfo=UTC)
    return re.sub(r"([Tt ][0-9]{2}:[0-9]{2}:)60", r"\g<1>59", value, count=1)


# Request body fields ------------------------------------------------------------------------

DatasetName = Annotated[str, Field(pattern=NAME_PATTERN, description=(
    "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"))]
ModelName = Annotated[str, Field(pattern=NAME_PATTERN, description=(
    "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"))]
Username = Annotated[str, Field(pattern=USERNAME_PATTERN, description=(
    "2-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"))]
NewPassword = Annotated[str, Field(min_length=MIN_PASSWORD, max_length=1024)]
DatasetRefField = Annotated[str, Field(pattern=DATASET_REF_BODY_PATTERN, max_length=300,
                                       description="Id, name, owner:name or owner/name")]
FilePathField = Annotated[str, Field(pattern=FILE_PATH_PATTERN, max_length=MAX_PATH,
                                     description="A file's path in the dataset")]
FolderField = Annotated[str, Field(pattern=FOLDER_PATTERN, max_length=MAX_PATH,
                                   description="A folder in the dataset ('' for its root)")]

# Path and query parameters --------------------------------------------------------------------

DatasetRefPath = Annotated[str, Path(pattern=DATASET_REF_PATTERN, max_length=300, description=(
    "The dataset: its id, your dataset's name, a unique name shared with you, "
    "or owner:name"))]
# A path parameter that spans segments: the example tells clients (and fuzzers) that '/'
# belongs in it.
FilePathPath = Annotated[str, Path(pattern=FILE_PATH_PATTERN, max_length=MAX_PATH,
                                   description="A file's path in the dataset",
                                   openapi_examples={"file": {"value": "train/data.csv"}})]
UsernamePath = Annotated[str, Path(pattern=USERNAME_PATTERN, description="A user's name")]
ModelNamePath = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, max_length=300,
                                    description="The model: NAME or OWNER:NAME")]
ModelRefPath = Annotated[str, Path(pattern=MODEL_REF_PATTERN, max_length=300, description=(
    "A model version: NAME, NAME@latest, NAME@ALIAS, NAME/N or OWNER:NAME/N"),
    openapi_examples={"number": {"value": "reviews/3"}, "alias": {"value": "reviews@best"}})]
AliasPath = Annotated[str, Path(pattern=ALIAS_PATTERN, description=(
    "An alias such as production; 'latest' is implicit and cannot be set or removed"),
    json_schema_extra={"not": {"const": "latest"}})]
TaskPath = Annotated[str, Path(pattern=TASK_PATTERN, description="A task's name")]
IdPath = Annotated[str, Path(pattern=ID_PATTERN, description="An id the server gave")]
OptionalTimeQuery = Annotated[datetime | None, BeforeValidator(_iso_time), Query(description=(
    "ISO 8601 (RFC 3339); a date alone is its midnight, a time without offset is UTC"))]
FolderQuery = Annotated[str, Query(pattern=FOLDER_PATTERN, max_length=MAX_PATH,
                                   description="A folder in the dataset ('' for its root)")]
