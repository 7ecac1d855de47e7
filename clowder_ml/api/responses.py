"""What each operation answers when it fails, declared in the OpenAPI document.

Every error answer is the platform's envelope ``{"error": {"code", "message", "hint"}}``,
published once as the named schema ``ErrorResponse`` (its ``code`` lists every code of
:mod:`clowder_ml.errors`). Each operation declares every status it may answer, each with
the codes it may carry there (listed in the description and, for programs, in
``x-error-codes``) and the ``Retry-After`` header where that status sends one; a generated
client therefore has a type for every error it can get.

Declared once per kind of route, never by hand per status:

* :func:`errors` turns error classes into a route's ``responses=``; the kinds many routes
  share are the tuples below (:data:`READS_DATASET`, :data:`WRITES_DATASET`, ...).
* :func:`complete_document` adds to every operation what follows from how it is built, as
  its own entry in the document says: request validation (422) where it takes parameters
  or a body, an unreadable body (400), authentication (401) where it names a credential
  scheme, the cross-site refusal (403) of ``api.origin_check`` on unsafe methods, and 500
  everywhere (the envelope of the app's last-resort handler).

The suite's fuzz test checks the other direction: every error it provokes must be declared
for its operation, with its code among the declared ones.
"""

from __future__ import annotations

import http
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, Field

from clowder_ml.errors import (
    AlreadyExists,
    AuthenticationRequired,
    BadRequest,
    ClowderMLError,
    Conflict,
    CrossSiteRequestRefused,
    DatasetBusy,
    InternalError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    StorageFull,
    ValidationFailed,
)

ErrorClass = type[ClowderMLError]
Responses = dict[int | str, dict[str, Any]]
# Every credential the API takes (user tokens, sessions, job tokens) answers this when it
# is missing or no longer valid.
AUTHENTICATION_ERRORS: tuple[ErrorClass, ...] = (AuthenticationRequired,)

CODES_KEY = "x-error-codes"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HTTP_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", *UNSAFE_METHODS})
_ERROR_SCHEMA_REF = "#/components/schemas/ErrorResponse"


def known_errors() -> dict[str, ErrorClass]:
    """Every error class by its code, those defined outside ``clowder_ml.errors`` too (the
    Clowder connector's); the root's ``error`` is never sent, the API always answers a
    specific class."""
    found: dict[str, ErrorClass] = {}
    stack = list(ClowderMLError.__subclasses__())
    while stack:
        cls = stack.pop()
        if "code" in cls.__dict__:  # a subclass without its own code answers its parent's
            found.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return dict(sorted(found.items()))


class ErrorDetail(BaseModel):
    """What went wrong: a stable machine ``code``, a human ``message``, and a ``hint`` that
    says what to do (or null)."""

    code: str = Field(description="Stable; each operation lists the codes it may send per "
                                  "status (x-error-codes)")
    message: str
    hint: str | None


class ErrorResponse(BaseModel):
    """The body of every error answer (any 4xx or 5xx)."""

    error: ErrorDetail


# Kinds of route ------------------------------------------------------------------------------

# A dataset named in the URL or body: missing or not visible (404), or a bare name that
# several datasets shared with the caller carry (409).
READS_DATASET: tuple[ErrorClass, ...] = (NotFound, Conflict)
# ... and changed: read-only access (403), its commit lock busy past the wait (503 with
# Retry-After, nothing changed), the disk full (507).
WRITES_DATASET: tuple[ErrorClass, ...] = (*READS_DATASET, PermissionDenied, DatasetBusy,
                                          StorageFull)
# Small uploads by multipart: a body over the simple-upload limit.
UPLOADS_FILES: tuple[ErrorClass, ...] = (*WRITES_DATASET, PayloadTooLarge)
# A model (or a version of one) named in the URL: missing or not visible.
READS_MODEL: tuple[ErrorClass, ...] = (NotFound,)
# ... and changed: read-only access, or a change the model's state refuses (409).
WRITES_MODEL: tuple[ErrorClass, ...] = (NotFound, PermissionDenied, Conflict)
# Sharing (datasets and models): only the owner shares; the user must exist; the owner
# cannot be given a share.
SHARES: tuple[ErrorClass, ...] = (NotFound, Conflict, PermissionDenied)
# Administrators only.
ADMIN_ONLY: tuple[ErrorClass, ...] = (PermissionDenied,)
# Something named in the URL (a job, token, upload or user by its id or name): missing, or
# not the caller's to see (which looks the same).
NAMES_RESOURCE: tuple[ErrorClass, ...] = (NotFound,)
# Creating something whose name must be new.
CREATES: tuple[ErrorClass, ...] = (AlreadyExists,)


def errors(*classes: ErrorClass) -> Responses:
    """The ``responses=`` mapping for a route that raises ``classes`` (beyond what
    :func:`document_errors` adds by itself)."""
    by_status: dict[int, set[ErrorClass]] = {}
    for cls in classes:
        by_status.setdefault(cls.status, set()).add(cls)
    return {status: _entry(status, found) for status, found in sorted(by_status.items())}


def _entry(status: int, classes: Iterable[ErrorClass]) -> dict[str, Any]:
    found = sorted(set(classes), key=lambda c: c.code)
    codes = [c.code for c in found]
    phrase = _phrase(status)
    lines = [f"{phrase}. The error's code is one of:"]
    for cls in found:
        summary = _summary(cls)
        lines.append(f"- `{cls.code}`" + (f": {summary}" if summary else ""))
    entry: dict[str, Any] = {
        "description": "\n".join(lines),
        "content": {"application/json": {"schema": {"$ref": _ERROR_SCHEMA_REF}}},
        CODES_KEY: codes,
    }
    sends = [cls.sends_retry_after() for cls in found]
    if any(sends):
        entry["headers"] = {"Retry-After": {
            "description": "Seconds to wait before trying again",
            "required": all(sends),
            "schema": {"type": "integer", "minimum": 1}}}
    return entry


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _summary(cls: ErrorClass) -> str:
    """The first line of the class's own docstring (not an inherited one)."""
    doc = cls.__dict__.get("__doc__") or ""
    return " ".join(doc.strip().split("\n\n")[0].split()).replace("``", "`")


def _merge(responses: Mapping[str, dict[str, Any]],
           more: Mapping[int, set[ErrorClass]]) -> dict[str, dict[str, Any]]:
    """An operation's ``responses`` with the error classes in ``more`` added to their
    statuses' entries. Codes already declared there are kept; an error entry without
    declared codes (FastAPI's own 422, which this API never sends) is replaced."""
    out = {k: v for k, v in responses.items()}
    known = known_errors()
    by_status: dict[int, set[ErrorClass]] = {}
    for key, entry in responses.items():
        if CODES_KEY in entry:
            by_status.setdefault(int(key), set()).update(known[c] for c in entry[CODES_KEY])
    for status, classes in more.items():
        by_status.setdefault(status, set()).update(classes)
    for status, classes in by_status.items():
        out[str(status)] = _entry(status, classes)
    return dict(sorted(out.items()))


def operation_errors(method: str, operation: Mapping[str, Any]) -> dict[int, set[ErrorClass]]:
    """The errors an operation may answer because of how it is built, read from its own
    description in the document (see the module doc)."""
    found: set[ErrorClass] = {InternalError}
    parameters = operation.get("parameters") or []
    if parameters or operation.get("requestBody"):
        found.add(ValidationFailed)  # also a NUL in any path parameter (api.deps)
    if any(p.get("in") == "path" for p in parameters):
        found.add(NotFound)  # a value that routes nowhere (a newline, a '/' in a segment)
    if operation.get("requestBody"):
        found.add(BadRequest)  # a body that does not parse (JSON, multipart)
    if operation.get("security"):
        found.update(AUTHENTICATION_ERRORS)  # every credential scheme here is a bearer
    if method.upper() in UNSAFE_METHODS:
        found.add(CrossSiteRequestRefused)  # api.origin_check, before any route
    by_status: dict[int, set[ErrorClass]] = {}
    for cls in found:
        by_status.setdefault(cls.status, set()).add(cls)
    return by_status


def complete_document(document: dict[str, Any]) -> dict[str, Any]:
    """Add every operation's built-in errors to ``document`` (in place) and publish the
    error envelope in its components; FastAPI's own validation-error schemas, which this
    API never sends, are dropped."""
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method.upper() in HTTP_METHODS:
                operation["responses"] = _merge(operation.get("responses", {}),
                                                operation_errors(method, operation))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.update(_error_schemas())
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    return document


def _error_schemas() -> dict[str, Any]:
    schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    defs["ErrorDetail"]["properties"]["code"]["enum"] = list(known_errors())
    return {"ErrorResponse": schema, **defs}
