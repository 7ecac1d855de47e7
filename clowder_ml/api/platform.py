"""The objects one server process shares between requests."""

from __future__ import annotations

from dataclasses import dataclass

from clowder_ml.db.session import Database
from clowder_ml.services.uploads import UploadService
from clowder_ml.settings import Settings
from clowder_ml.storage import LocalBlobStore


@dataclass
class Platform:
    settings: Settings
    db: Database
    blobs: LocalBlobStore
    uploads: UploadService

    @classmethod
    def build(cls, settings: Settings) -> Platform:
        settings.ensure_dirs()
        db = Database(settings.sqlalchemy_url)
        blobs = LocalBlobStore(settings.blobs_dir, settings.tmp_dir)
        return cls(settings, db, blobs, UploadService(settings, db, blobs))
