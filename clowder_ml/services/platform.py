"""The objects one server process shares between requests (built by the API at start-up,
handed to the services that need more than a database session)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from clowder_ml.db.session import Database
from clowder_ml.services.uploads import UploadService
from clowder_ml.settings import Settings
from clowder_ml.storage import LocalBlobStore
from clowder_ml.tasks.registry import TaskRegistry

if TYPE_CHECKING:
    from clowder_ml.engine.dispatcher import Dispatcher


@dataclass
class Platform:
    settings: Settings
    db: Database
    blobs: LocalBlobStore
    uploads: UploadService
    tasks: TaskRegistry
    # Set while the job engine runs (``engine_enabled``); None: jobs wait in the queue.
    dispatcher: Dispatcher | None = field(default=None)

    @classmethod
    def build(cls, settings: Settings) -> Platform:
        settings.ensure_dirs()
        db = Database(settings.sqlalchemy_url, lock_wait_s=settings.dataset_commit_wait_s)
        blobs = LocalBlobStore(settings.blobs_dir, settings.tmp_dir)
        return cls(settings, db, blobs, UploadService(settings, db, blobs),
                   TaskRegistry(settings.extra_tasks))

    def wake_dispatcher(self) -> None:
        """Let the engine act now on a new, cancelled or finished job."""
        if self.dispatcher is not None:
            self.dispatcher.wake()
