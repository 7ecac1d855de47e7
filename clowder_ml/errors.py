"""One error root for the whole platform.

Every error has a stable machine ``code``, a human ``message`` and an optional ``hint`` that
says what to do. The API maps each error class to an HTTP status and answers
``{"error": {"code", "message", "hint"}}``; the SDK rebuilds the same class from the code.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ClowderMLError(Exception):
    """Root of all platform errors. Subclasses fix ``code`` and ``status``."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400

    def __init__(self, message: str, hint: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            # An instance may carry a more specific code than its class (e.g. from the server).
            self.code = code  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "hint": self.hint}

    def http_headers(self) -> dict[str, str]:
        """Headers the API adds to this error's response (e.g. ``Retry-After``)."""
        return {}

    @classmethod
    def sends_retry_after(cls) -> bool:
        """Whether every answer to this error carries ``Retry-After`` (the API's OpenAPI
        document declares the header from this)."""
        return False

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class BadRequest(ClowderMLError):
    code = "bad_request"
    status = 400


class ValidationFailed(ClowderMLError):
    code = "validation_failed"
    status = 422


class AuthenticationRequired(ClowderMLError):
    code = "authentication_required"
    status = 401


class InvalidCredentials(ClowderMLError):
    code = "invalid_credentials"
    status = 401


class PermissionDenied(ClowderMLError):
    code = "permission_denied"
    status = 403


class CrossSiteRequestRefused(PermissionDenied):
    """A cookie-authenticated write whose ``Origin``/``Referer`` is not this server's."""

    code = "cross_site_request_refused"


class NotFound(ClowderMLError):
    code = "not_found"
    status = 404


class MethodNotAllowed(ClowderMLError):
    code = "method_not_allowed"
    status = 405


class Conflict(ClowderMLError):
    code = "conflict"
    status = 409


class AlreadyExists(Conflict):
    code = "already_exists"


class UploadOffsetMismatch(Conflict):
    code = "upload_offset_mismatch"


class UnusableContent(Conflict):
    """What the request names exists, but what it holds cannot serve the request: a
    dataset without files yet, a folder that is not a model, a file that is not text.
    The request itself is well formed (a 422 is for requests that break the API's schema)."""

    code = "unusable_content"


class InvalidJobTransition(Conflict):
    """A job state change the state machine forbids (e.g. anything after a terminal state)."""

    code = "invalid_job_transition"


class TooManyAttempts(ClowderMLError):
    """Too many failed log-ins for an account or from an address: wait ``retry_after`` s."""

    code = "too_many_attempts"
    status = 429

    def __init__(self, message: str, hint: str | None = None, *, code: str | None = None,
                 retry_after: int = 1) -> None:
        super().__init__(message, hint, code=code)
        self.retry_after = max(1, int(retry_after))

    def http_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}

    @classmethod
    def sends_retry_after(cls) -> bool:
        return True


class Gone(ClowderMLError):
    code = "gone"
    status = 410


class UploadExpired(Gone):
    code = "upload_expired"


class PreconditionFailed(ClowderMLError):
    code = "precondition_failed"
    status = 412


class PayloadTooLarge(ClowderMLError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(ClowderMLError):
    code = "unsupported_media_type"
    status = 415


class RangeNotSatisfiable(ClowderMLError):
    code = "range_not_satisfiable"
    status = 416


class ChecksumMismatch(ClowderMLError):
    """The bytes received do not hash to what the client declared."""

    code = "checksum_mismatch"
    status = 460  # tus checksum extension's status


class ResourcesUnsatisfiable(ClowderMLError):
    """A job asks for more than the cluster can ever give it (it would wait forever)."""

    code = "resources_unsatisfiable"
    status = 422


class TrainingFailed(ClowderMLError):
    """Training could not complete (the worker's own one-line reason, or repeated deaths)."""

    code = "training_failed"
    status = 422


class UnsafeArchive(ClowderMLError):
    code = "unsafe_archive"
    status = 422


class UnsupportedFormat(UnusableContent):
    """A file whose format (or content) does not allow what was asked, e.g. a preview."""

    code = "unsupported_format"


class StorageFull(ClowderMLError):
    code = "storage_full"
    status = 507


class StorageError(ClowderMLError):
    code = "storage_error"
    status = 500


class ServiceUnavailable(ClowderMLError):
    """The server cannot do it right now; nothing was changed. When ``retry_after_s`` is set
    the API sends it as ``Retry-After``."""

    code = "service_unavailable"
    status = 503
    retry_after_s: int | None = None

    def http_headers(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}

    @classmethod
    def sends_retry_after(cls) -> bool:
        return cls.retry_after_s is not None


class DatasetBusy(ServiceUnavailable):
    """A change to a dataset waited its bound for the dataset's commit lock (other changes
    were committing ahead of it) and was not made. Retry after ``retry_after_s``."""

    code = "dataset_busy"
    retry_after_s = 5


class UploadFinalizing(ServiceUnavailable):
    """Every byte of a tus upload arrived and is kept, but adding it to its dataset failed
    for a passing reason; the server retries by itself (HEAD shows the state)."""

    code = "upload_finalizing"
    retry_after_s = 5


class SandboxUnavailable(ServiceUnavailable):
    """The configured sandbox backend (gVisor ``runsc`` or bubblewrap) is missing or cannot start.

    User code is never run unsandboxed instead.
    """

    code = "sandbox_unavailable"
    status = 503


class EngineUnavailable(ServiceUnavailable):
    """The Ray cluster behind the job engine cannot be reached or refused the request."""

    code = "engine_unavailable"
    status = 503


class InternalError(ClowderMLError):
    code = "internal_error"
    status = 500


def _all_subclasses(cls: type[ClowderMLError]) -> list[type[ClowderMLError]]:
    out: list[type[ClowderMLError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


_ALL_ERRORS: list[type[ClowderMLError]] = [ClowderMLError, *_all_subclasses(ClowderMLError)]
ERRORS_BY_CODE: dict[str, type[ClowderMLError]] = {c.code: c for c in _ALL_ERRORS}


def error_from_payload(status: int, payload: Any) -> ClowderMLError:
    """Rebuild a typed error from an API error body (used by the SDK).

    Unknown codes fall back to the class for the HTTP status family, keeping the code.
    """
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        text = str(payload)[:500] if payload else f"HTTP {status}"
        cls = _class_for_status(status)
        return cls(f"Server answered {status}: {text}")
    code = str(err.get("code") or "error")
    message = str(err.get("message") or f"HTTP {status}")
    hint = err.get("hint")
    cls = ERRORS_BY_CODE.get(code) or _class_for_status(status)
    return cls(message, hint if isinstance(hint, str) else None, code=code)


def _class_for_status(status: int) -> type[ClowderMLError]:
    for cls in (
        NotFound, AuthenticationRequired, PermissionDenied, Conflict, Gone, PayloadTooLarge,
        ValidationFailed, TooManyAttempts, ServiceUnavailable,
    ):
        if cls.status == status:
            return cls
    return InternalError if status >= 500 else BadRequest
