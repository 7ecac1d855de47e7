"""Housekeeping: expire stale uploads, collect unreferenced blobs, forget decayed log-in
failures and audit records past their retention."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clowder_ml.registry import models
from clowder_ml.services import accounts, datasets, jobs

if TYPE_CHECKING:
    from clowder_ml.services.platform import Platform


def collect(platform: Platform, grace_seconds: float | None = None) -> tuple[int, int]:
    """Return (uploads expired, blobs removed)."""
    grace = platform.settings.gc_grace_seconds if grace_seconds is None else grace_seconds
    expired = platform.uploads.expire(grace)
    with platform.db.session() as s:
        accounts.prune(s, platform.settings)  # decayed log-in failures, old audit records
    with platform.db.session() as s:
        referenced = (datasets.referenced_digests(s) | jobs.output_digests(s)
                      | models.file_digests(s))
    return expired, platform.blobs.collect(referenced, grace)
