"""What Clowder does with the RabbitMQ messages it consumes.

* status updates on the reply queue ``clowder.<instance_id>``: clowder2 backend/message_listener.py
  (``parse_message_status``, ``callback``);
* extractor heartbeats on the fanout exchange ``extractors``: clowder2
  backend/heartbeat_listener.py ``callback``.

Both handlers raise where clowder2's ``callback`` raises; the consumer then rejects the message
without requeueing, as aio_pika's ``message.process()`` does, and nothing is stored.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from enum import StrEnum
from typing import Any, TypedDict

from packaging import version

from .models import EventListenerFromHeartbeat, ExtractorInfo
from .store import JobUpdate, Listener, Store, iso, localnow, object_id, require_object_id, utcnow

logger = logging.getLogger(__name__)


class EventListenerJobStatus(StrEnum):
    """clowder2 backend/app/models/listeners.py ``EventListenerJobStatus``."""

    CREATED = "CREATED"
    STARTED = "STARTED"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    ERROR = "ERROR"
    SKIPPED = "SKIPPED"
    RESUBMITTED = "RESUBMITTED"


FINISHED = (EventListenerJobStatus.SUCCEEDED, EventListenerJobStatus.ERROR,
            EventListenerJobStatus.SKIPPED)


class ParsedStatus(TypedDict):
    status: EventListenerJobStatus
    cleaned_msg: str


def parse_message_status(msg: str) -> ParsedStatus | EventListenerJobStatus:
    """clowder2 backend/message_listener.py ``parse_message_status``, line for line.

    The prefixes are pyclowder's: ``"%s: %s" % (StatusMessage.x, message)`` gives
    ``"StatusMessage.done: ..."`` and the enum's value gives ``"SUCCEEDED: ..."``. A message
    matching none of them makes clowder2 return the bare status (its dict return is unreachable
    code), so the caller's ``parsed["cleaned_msg"]`` raises and the message is dropped.
    """
    s = EventListenerJobStatus
    if (msg.startswith("StatusMessage.start: ") or msg.startswith("STARTED: ")
            or msg.endswith("Started processing.")):
        return {"status": s.STARTED,
                "cleaned_msg": msg.replace("StatusMessage.start: ", "").replace("STARTED: ", "")}
    if (msg.startswith("StatusMessage.done: ") or msg.startswith("SUCCEEDED: ")
            or msg.endswith("Done processing.")):
        return {"status": s.SUCCEEDED,
                "cleaned_msg": msg.replace("StatusMessage.done: ", "").replace("SUCCEEDED: ", "")}
    if msg.startswith("StatusMessage.error: ") or msg.startswith("ERROR: "):
        return {"status": s.ERROR,
                "cleaned_msg": msg.replace("StatusMessage.error: ", "").replace("ERROR: ", "")}
    if msg.startswith("StatusMessage.retry: ") or msg.startswith("RESUBMITTED: "):
        return {"status": s.RESUBMITTED,
                "cleaned_msg": msg.replace("StatusMessage.retry: ", "")
                .replace("RESUBMITTED: ", "")}
    if msg.startswith("StatusMessage.skip: ") or msg.startswith("SKIPPED: "):
        return {"status": s.SKIPPED,
                "cleaned_msg": msg.replace("StatusMessage.skip: ", "").replace("SKIPPED: ", "")}
    if msg.startswith("StatusMessage.processing: ") or msg.startswith("PROCESSING: "):
        return {"status": s.PROCESSING,
                "cleaned_msg": msg.replace("StatusMessage.processing: ", "")
                .replace("PROCESSING: ", "")}
    return s.PROCESSING


def handle_status_message(store: Store, body: bytes) -> bool:
    """clowder2 backend/message_listener.py ``callback``. Returns False (message still acked)
    for a job id Clowder does not know; raises for anything clowder2 chokes on: not JSON, no
    ``job_id``/``status``/``start``, a ``start`` not in ``%Y-%m-%dT%H:%M:%S%z`` (an offset is
    required, fractions of a second are not allowed), a job id that is no ObjectId, a status
    text ``parse_message_status`` does not recognise."""
    msg: Any = json.loads(body.decode("utf-8"))
    job_id = msg["job_id"]
    message_str = msg["status"]
    # incoming format: '2023-01-20T08:30:27-05:00'; clowder2 then drops the offset with
    # .replace(tzinfo=datetime.utcnow().tzinfo), i.e. keeps the sender's wall-clock time.
    timestamp = datetime.strptime(msg["start"], "%Y-%m-%dT%H:%M:%S%z").replace(tzinfo=None)
    require_object_id(job_id)
    with store.lock:
        job = store.jobs.get(job_id)
        if job is None:
            logger.error("Job ID %s not found in database, skipping message.", job_id)
            return False
        parsed = parse_message_status(message_str)
        if not isinstance(parsed, dict):
            raise TypeError("string indices must be integers, not 'str'")
        cleaned_msg = parsed["cleaned_msg"]
        incoming = parsed["status"]
        # Don't override a finished status if a message comes in late
        status = job.status if job.status in FINISHED else incoming.value
        if job.started is not None:
            job.duration = (timestamp - job.started).total_seconds()
        elif incoming == EventListenerJobStatus.STARTED:
            job.duration = 0
        if incoming == EventListenerJobStatus.STARTED:
            job.started = timestamp
        elif incoming in FINISHED:
            job.finished = timestamp
        job.status = status
        job.latest_message = cleaned_msg
        job.updated = timestamp
        store.job_updates.append(JobUpdate(id=object_id(), job_id=job_id, timestamp=timestamp,
                                           status=cleaned_msg))
        return True


def handle_heartbeat(store: Store, body: bytes) -> dict[str, Any]:
    """clowder2 backend/heartbeat_listener.py ``callback``: register the extractor, or update
    the one with that name (and owner). Listener name: ``extractor_info["name"]``, or the
    heartbeat's ``queue`` when it has an ``owner``. A new listener is *inactive*; an update keeps
    id, ``created`` and ``active`` and replaces the rest, whatever the version. (clowder2 also
    creates a MIME feed from ``process.file`` for a new listener; feeds are not modelled.)"""
    msg: Any = json.loads(body.decode("utf-8"))
    extractor_info = msg["extractor_info"]
    owner = msg.get("owner")
    if owner is not None and owner != "":
        orig_properties = ExtractorInfo(**extractor_info)
        extractor_name = msg["queue"]
        del extractor_info["name"]
        new = EventListenerFromHeartbeat(**extractor_info, name=extractor_name,
                                         access={"owner": owner}, properties=orig_properties)
    else:
        extractor_name = extractor_info["name"]
        new = EventListenerFromHeartbeat(**extractor_info,
                                         properties=ExtractorInfo(**extractor_info))
    with store.lock:
        existing: Listener | None = None
        for item in store.listeners.values():
            if item.name != extractor_name:
                continue
            if owner is not None and owner != "":
                if item.access is None or item.access.get("owner") != owner:
                    continue
            existing = item
            break
        now = localnow()
        listener = Listener(
            id=object_id(), name=new.name, version=new.version, description=new.description,
            access=None if new.access is None else new.access.model_dump(),
            creator=new.creator, created=new.created or now, modified=new.modified or now,
            last_alive=utcnow(), alive=True, active=new.active,
            properties=None if new.properties is None else new.properties.model_dump())
        if existing is not None:
            listener.id = existing.id
            listener.created = existing.created
            listener.active = existing.active
            if version.parse(listener.version) > version.parse(existing.version):
                logger.info("%s updated from %s to %s", extractor_name, existing.version,
                            listener.version)
        store.listeners[listener.id] = listener
        logger.info("%s is alive at %s", extractor_name, iso(listener.last_alive))
        return listener.out()
