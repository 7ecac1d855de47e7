"""Dataset path rules: relative, '/'-separated, no '.', '..', empty or control segments."""

from __future__ import annotations

import re

from clowder_ml.errors import ValidationFailed

MAX_PATH = 1024
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def normalize_path(path: str) -> str:
    """Return the canonical form of a dataset file path or raise ``ValidationFailed``.

    A leading './' is dropped; everything that could escape a folder or confuse a file
    system (absolute paths, '..', backslashes, control characters, drive letters) is refused.
    """
    hint = "Use a relative path like 'data/train.csv'."
    p = path.strip()
    while p.startswith("./"):
        p = p[2:]
    if not p:
        raise ValidationFailed("Empty file path.", hint)
    if len(p) > MAX_PATH:
        raise ValidationFailed(f"File path longer than {MAX_PATH} characters.", hint)
    if p.startswith("/") or re.match(r"^[A-Za-z]:", p):
        raise ValidationFailed(f"Absolute path {path!r} is not allowed.", hint)
    if _BAD_CHARS.search(p):
        raise ValidationFailed(f"Path {path!r} contains backslashes or control characters.", hint)
    parts = p.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValidationFailed(f"Path {path!r} has an empty, '.' or '..' segment.", hint)
    return p


def normalize_prefix(prefix: str | None) -> str:
    """A folder prefix ('' for the root) without leading or trailing slashes."""
    if not prefix or prefix.strip("/") == "":
        return ""
    return normalize_path(prefix.strip("/"))
