"""``ClowderStandin``: the HTTP API on a free local port plus the two RabbitMQ consumers."""

from __future__ import annotations

import json
import logging
import secrets
import socket
import string
import threading
import time
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from .app import API, CountRequests, RequestLog, create_app
from .broker import (
    HEARTBEAT_EXCHANGE,
    Broker,
    Consumer,
    DroppedMessage,
    heartbeat_setup,
    reply_queue_setup,
)
from .messages import handle_heartbeat, handle_status_message
from .store import JSON, Store

logger = logging.getLogger(__name__)

DEFAULT_RABBITMQ_URI = "amqp://guest:guest@127.0.0.1:5672/"


def new_instance_id() -> str:
    """clowder2 backend/app/rabbitmq/listeners.py ``create_reply_queue``: 10 random
    alphanumerics (clowder2 keeps one per installation in ``ConfigEntryDB``)."""
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(10))


class ClowderStandin:
    """A Clowder v2 stand-in for tests. Use as a context manager::

        with ClowderStandin() as clowder:
            key = clowder.add_user("ada@example.org")
            ds = clowder.add_dataset(key, "reviews")
            fid = clowder.add_file(key, ds, "reviews.csv", b"text,label\\n")
            job = clowder.submit_extraction(key, "my.extractor", file_id=fid)

    The Python helpers act on the in-memory state directly (they are not counted by
    ``request_count``), except ``submit_extraction``, which goes through the HTTP endpoint.
    """

    def __init__(self, rabbitmq_uri: str = DEFAULT_RABBITMQ_URI, *,
                 instance_id: str | None = None, strict_roles: bool = False) -> None:
        self.rabbitmq_uri = rabbitmq_uri
        self.instance_id = instance_id or new_instance_id()
        self.store = Store(strict_roles=strict_roles)
        self.broker = Broker(rabbitmq_uri, self.instance_id)
        self.reply_queue = self.broker.reply_queue
        self.heartbeat_exchange = HEARTBEAT_EXCHANGE
        self.url = ""
        self.request_log = RequestLog()
        self._dropped: list[DroppedMessage] = []
        self._dropped_lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._consumers: list[Consumer] = []

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> ClowderStandin:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        try:
            self._start_consumers(timeout)
            self._start_http(timeout)
        except BaseException:
            self.stop()
            raise

    def _start_consumers(self, timeout: float) -> None:
        status = Consumer(self.broker, "status", reply_queue_setup(self.broker),
                          lambda body: handle_status_message(self.store, body), self._drop)
        heartbeat = Consumer(self.broker, "heartbeat", heartbeat_setup,
                             lambda body: handle_heartbeat(self.store, body), self._drop)
        for consumer in (status, heartbeat):
            self._consumers.append(consumer)
            consumer.start()
        for consumer in self._consumers:
            if not consumer.ready.wait(timeout):
                raise TimeoutError(f"RabbitMQ consumer {consumer.source} did not start")
            if consumer.error is not None:
                raise RuntimeError(
                    f"RabbitMQ at {self.rabbitmq_uri}: {consumer.error!r}") from consumer.error

    def _start_http(self, timeout: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        # The `host` of job messages: clowder2's settings.API_HOST, i.e. base URL, no /api/v2.
        self.store.host = self.url
        app = CountRequests(create_app(self.store, self.broker, self.instance_id),
                            self.request_log)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                ws="none", timeout_graceful_shutdown=2)
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                        name="clowder-standin-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Clowder stand-in's HTTP server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._server = None
        for consumer in self._consumers:
            consumer.stop()
        if self._consumers:
            try:
                self.broker.delete_reply_queue()
            except Exception:
                logger.warning("could not delete %s", self.reply_queue, exc_info=True)
        self._consumers = []

    def _drop(self, message: DroppedMessage) -> None:
        with self._dropped_lock:
            self._dropped.append(message)

    # -- setup helpers -------------------------------------------------------------------------

    def _user_of(self, key: str) -> Any:
        return self.store.authenticate(key)

    def add_user(self, email: str, first_name: str = "", last_name: str = "", *,
                 admin: bool = False) -> str:
        """Create a user; returns a non-expiring API key (``X-API-KEY``). The user's job key
        (``__user_job_key``, sent to extractors as ``secretKey``) is created too."""
        self.store.add_user(email, first_name, last_name, admin=admin)
        self.store.job_key(email)
        return self.store.user_key(email, "standin", 0)

    def add_api_key(self, email: str, *, name: str = "standin", mins: int = 0) -> str:
        """Another user key, like POST /api/v2/users/keys (``mins`` > 0 makes it expire)."""
        return self.store.user_key(email, name, mins)

    def job_key(self, email: str) -> str:
        """The user's job key, exactly what ``secretKey`` carries in job messages."""
        return self.store.job_key(email)

    def add_dataset(self, owner_key: str, name: str, description: str = "") -> str:
        return self.store.add_dataset(self._user_of(owner_key), name, description).id

    def add_file(self, owner_key: str, dataset_id: str, name: str, content: bytes,
                 content_type: str | None = None) -> str:
        """Store a file as POST /datasets/{id}/files would (content type guessed from the name
        when ``None``); the key's user needs a role on the dataset."""
        user = self._user_of(owner_key)
        dataset = self.store.authorize_dataset(user, dataset_id, "uploader", False)
        return self.store.save_file(user, dataset, name, content, content_type).id

    def share(self, dataset_id: str, email: str, role: str) -> None:
        """Give ``email`` a role (owner/editor/uploader/viewer) on the dataset."""
        self.store.share(dataset_id, email, role)

    def set_listener_active(self, listener_id: str, active: bool = True) -> None:
        """What an admin's PUT /api/v2/listeners/{id}/enable (or /disable) does."""
        with self.store.lock:
            self.store.listeners[listener_id].active = active

    # -- actions through HTTP ------------------------------------------------------------------

    def submit_extraction(self, key: str, extractor_name: str, *, dataset_id: str | None = None,
                          file_id: str | None = None,
                          parameters: dict[str, Any] | None = None) -> str:
        """POST /api/v2/{datasets|files}/{id}/extract?extractorName=... with ``parameters`` as
        the JSON body, as the Clowder web UI does; returns the job id."""
        if (dataset_id is None) == (file_id is None):
            raise ValueError("give exactly one of dataset_id and file_id")
        path = f"datasets/{dataset_id}" if dataset_id is not None else f"files/{file_id}"
        response = httpx.post(f"{self.url}{API}/{path}/extract",
                              params={"extractorName": extractor_name},
                              headers={"X-API-KEY": key}, json=parameters, timeout=30)
        response.raise_for_status()
        job_id: str = response.json()
        return job_id

    def publish_raw(self, routing_key: str, body: bytes, reply_to: bool | str = True) -> None:
        """Publish ``body`` as clowder2 publishes a job (default exchange, ``content_type``
        application/json, ``delivery_mode`` 1, ``reply_to`` this stand-in's reply queue unless
        False or another queue name)."""
        self.broker.publish(routing_key, body, reply_to=reply_to)

    def publish_status(self, body: bytes | dict[str, Any]) -> None:
        """Publish to the reply queue as pyclowder's ``RabbitMQHandler.process_messages`` does
        (default exchange, routing key = the job message's ``reply_to``)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.broker.publish(self.reply_queue, raw, reply_to=False)

    # -- inspection ----------------------------------------------------------------------------

    def job(self, job_id: str) -> JSON:
        """The job summary (``EventListenerJobOut``), as GET /jobs/{id}/summary."""
        with self.store.lock:
            return self.store.jobs[job_id].out()

    def job_updates(self, job_id: str) -> list[JSON]:
        """``EventListenerJobUpdateOut`` entries, as GET /jobs/{id}/updates."""
        return [u.out() for u in self.store.updates_of(job_id)]

    def jobs(self) -> list[JSON]:
        with self.store.lock:
            return [j.out() for j in self.store.jobs.values()]

    def wait_job_status(self, job_id: str, statuses: set[str], timeout: float = 10.0) -> JSON:
        """Poll the job summary until its ``status`` is one of ``statuses``."""
        deadline = time.monotonic() + timeout
        while True:
            summary = self.job(job_id)
            if summary["status"] in statuses:
                return summary
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is {summary['status']!r}, not in {statuses}")
            time.sleep(0.02)

    def files(self, dataset_id: str) -> list[JSON]:
        """All the dataset's files as FileOut (as listed), in upload order."""
        with self.store.lock:
            return [f.out(view=True) for f in self.store.files.values()
                    if f.dataset_id == dataset_id]

    def file_bytes(self, file_id: str) -> bytes:
        with self.store.lock:
            return self.store.files[file_id].content

    def dataset_metadata(self, dataset_id: str) -> list[JSON]:
        """MetadataOut entries on the dataset, as GET /datasets/{id}/metadata."""
        return [m.out(view=True) for m in self.store.metadata_of(dataset_id)]

    def file_metadata(self, file_id: str) -> list[JSON]:
        """MetadataOut entries on the file (all versions)."""
        return [m.out(view=True) for m in self.store.metadata_of(file_id)]

    def listeners(self) -> list[JSON]:
        """Every registered listener (EventListenerOut), active or not, sorted by name."""
        with self.store.lock:
            items = sorted(self.store.listeners.values(), key=lambda item: item.name)
            return [item.out() for item in items]

    def wait_listener(self, name: str, timeout: float = 10.0) -> JSON:
        """Wait until a heartbeat has registered a listener called ``name``."""
        deadline = time.monotonic() + timeout
        while True:
            for item in self.listeners():
                if item["name"] == name:
                    return item
            if time.monotonic() > deadline:
                raise TimeoutError(f"no heartbeat registered listener {name!r}")
            time.sleep(0.02)

    def dropped_messages(self) -> list[DroppedMessage]:
        """Messages rejected (not requeued) because clowder2's listeners raise on them."""
        with self._dropped_lock:
            return list(self._dropped)

    def request_count(self, method: str, path_template: str) -> int:
        """How many requests hit a route, e.g. ``("POST", "/api/v2/datasets/{dataset_id}/files")``
        (FastAPI path templates; unmatched requests are logged under their raw path)."""
        method = method.upper()
        return sum(1 for m, p, _ in self.request_log.snapshot()
                   if m == method and p == path_template)

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path template, status) of every request so far."""
        return self.request_log.snapshot()
