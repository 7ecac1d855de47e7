"""Extractor status messages: what Clowder shows on a job's page while our job runs.

The body is the one pyclowder's ``RabbitMQHandler.status_update`` publishes to the request's
``reply_to`` queue (``pyclowder/connectors.py``), and Clowder v2 reads
(``backend/message_listener.py`` ``parse_message_status``): the ``status`` text must start
with one of the :class:`Status` words and a colon, or Clowder files it as PROCESSING.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from clowder_ml.engine.states import JobState

MAX_MESSAGE = 2000  # Clowder shows the message in a table cell


class Status(StrEnum):
    """pyclowder's ``StatusMessage`` words (plus RESUBMITTED, which Clowder also parses)."""

    STARTED = "STARTED"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    SKIPPED = "SKIPPED"
    ERROR = "ERROR"
    RESUBMITTED = "RESUBMITTED"


def iso8601_now() -> str:
    """Local time with its UTC offset, to the second (pyclowder's ``iso8601time``)."""
    return datetime.now().astimezone().replace(microsecond=0).isoformat()


def status_body(status: Status, message: str, *, resource_id: str, extractor: str,
                job_id: str) -> dict[str, Any]:
    """The JSON body of one status update for Clowder job ``job_id``."""
    text = " ".join(message.split())[:MAX_MESSAGE]
    return {"file_id": resource_id, "extractor_id": extractor, "job_id": job_id,
            "status": f"{status.value}: {text}", "start": iso8601_now(),
            "message_type": status.value, "message": text}


def for_job_end(state: JobState) -> Status:
    """The final status Clowder gets for a job that ended in ``state``."""
    return Status.SUCCEEDED if state is JobState.SUCCEEDED else Status.ERROR
