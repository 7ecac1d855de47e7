"""The RabbitMQ side of the extractors: queues, heartbeats, deliveries, acknowledgements.

The wire protocol is pyclowder's (``pyclowder/connectors.py``), so Clowder v2 cannot tell
these extractors from pyclowder ones:

* one durable queue per extractor, named after it (``clowder-ml.<task>``), plus
  ``error.<queue>`` for the messages given up on;
* every ``heartbeat_s`` a ``{"id", "queue", "owner", "extractor_info"}`` message on the
  durable fanout exchange ``extractors``, which registers the extractor with Clowder
  (clowder2 ``backend/heartbeat_listener.py``);
* a status body on the message's ``reply_to`` queue, with its ``correlation_id``, for each
  step (see :mod:`clowder_ml.clowder.statuses`).

Unlike pyclowder's connector, a message is worked on in a thread of its own (up to
``concurrency`` at once: training takes hours, and Clowder should not wait for one job to
start the next), and it is acknowledged only once the request is answered. A listener that
is killed leaves its messages unacknowledged: RabbitMQ hands them to the next listener,
which resumes watching the job already started (:class:`Extractions` keeps a record per
request, and lets one delivery of a request work at a time) instead of running it again.
A malformed message is logged (without its body, which holds a key), copied to the error
queue and acknowledged, as pyclowder does.

pika's connection is not thread-safe: workers hand every publish and acknowledgement to the
connection's thread with ``add_callback_threadsafe``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from clowder_ml.clowder.extraction import Extractions, Interrupted, LeaseLost
from clowder_ml.clowder.extractor_info import extractor_name
from clowder_ml.clowder.messages import MalformedMessage, parse_request
from clowder_ml.clowder.rest import ClowderUnreachable
from clowder_ml.clowder.statuses import Status, status_body
from clowder_ml.tasks.registry import TaskDef

log = logging.getLogger(__name__)

HEARTBEAT_EXCHANGE = "extractors"
RETRY_DELAY_S = 10.0  # before a message whose Clowder was unreachable goes back


@dataclass
class Listener:
    """Listens for ``tasks``' extraction requests on ``rabbitmq_uri`` until :meth:`stop`."""

    rabbitmq_uri: str
    extractions: Extractions
    tasks: list[TaskDef]
    infos: dict[str, dict[str, Any]]  # extractor name -> extractor_info
    heartbeat_s: float = 10.0
    concurrency: int = 2
    owner: str | None = None  # the e-mail Clowder shows as the extractors' owner
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def stop(self) -> None:
        """Stop taking messages; those in progress are left for redelivery (safe from any
        thread or a signal handler)."""
        self._stop.set()

    @property
    def queues(self) -> dict[str, TaskDef]:
        return {extractor_name(t.name): t for t in self.tasks}

    def run(self) -> None:
        """Connect, listen and reconnect after a lost connection until stopped."""
        delay = 1.0
        while not self._stop.is_set():
            try:
                self._run_once()
                delay = 1.0
            except (pika.exceptions.AMQPError, OSError) as exc:
                log.warning("RabbitMQ connection lost (%s); reconnecting in %.0fs",
                            type(exc).__name__, delay)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, 30.0)

    def _run_once(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.rabbitmq_uri))
        # Set when this connection ends: its workers stop watching, and leave their
        # messages unacknowledged for the next connection (or listener) to take.
        ended = threading.Event()
        try:
            channel = conn.channel()
            channel.basic_qos(prefetch_count=self.concurrency)
            channel.exchange_declare(exchange=HEARTBEAT_EXCHANGE, exchange_type="fanout",
                                     durable=True)
            for queue, task in self.queues.items():
                channel.queue_declare(queue=queue, durable=True)
                channel.queue_declare(queue=f"error.{queue}", durable=True)
                channel.basic_consume(queue=queue, auto_ack=False,
                                      on_message_callback=self._on_message(conn, task,
                                                                           ended))
            log.info("listening on %s", ", ".join(self.queues))
            next_beat = 0.0
            while not self._stop.is_set():
                if time.monotonic() >= next_beat:
                    self._heartbeat(channel)
                    next_beat = time.monotonic() + self.heartbeat_s
                conn.process_data_events(time_limit=0.5)
        finally:
            ended.set()
            self._join_workers()
            if conn.is_open:
                conn.close()

    def _heartbeat(self, channel: BlockingChannel) -> None:
        for queue, info in self.infos.items():
            if queue in self.queues:
                body = {"id": self._id, "queue": queue, "owner": self.owner,
                        "extractor_info": info}
                channel.basic_publish(exchange=HEARTBEAT_EXCHANGE, routing_key="",
                                      body=json.dumps(body))

    def _on_message(self, conn: pika.BlockingConnection, task: TaskDef, ended: threading.Event
                    ) -> Callable[[BlockingChannel, Basic.Deliver, BasicProperties, bytes],
                                  None]:
        def on_message(channel: BlockingChannel, method: Basic.Deliver,
                       props: BasicProperties, body: bytes) -> None:
            worker = threading.Thread(target=self._work, name=f"clowder-{method.delivery_tag}",
                                      args=(conn, channel, task, method, props, body,
                                            ended),
                                      daemon=True)
            self._workers = [w for w in self._workers if w.is_alive()] + [worker]
            worker.start()
        return on_message

    def _work(self, conn: pika.BlockingConnection, channel: BlockingChannel, task: TaskDef,
              method: Basic.Deliver, props: BasicProperties, body: bytes,
              ended: threading.Event) -> None:
        """One delivery, in its own thread: every channel call goes through ``later``."""
        queue = extractor_name(task.name)
        tag = method.delivery_tag

        def later(fn: Callable[[], None]) -> None:
            try:
                conn.add_callback_threadsafe(fn)
            except (pika.exceptions.AMQPError, OSError, RuntimeError):
                log.warning("RabbitMQ connection gone: message %s comes back later", tag)

        try:
            request = parse_request(body)
        except MalformedMessage as exc:
            log.error("rejected a malformed message on %s: %s", queue, exc)
            later(lambda: self._to_error_queue(channel, queue, props, body, tag))
            return

        def status(state: Status, message: str) -> None:
            log.info("[%s] %s %s: %s", request.job_id, queue, state.value, message)
            if not props.reply_to:
                return
            payload = json.dumps(status_body(state, message, resource_id=request.id,
                                             extractor=queue, job_id=request.job_id))
            properties = pika.BasicProperties(delivery_mode=2,
                                              correlation_id=props.correlation_id)
            later(lambda: channel.basic_publish(exchange="", routing_key=props.reply_to or "",
                                                properties=properties, body=payload))

        try:
            self.extractions.handle(request, task, status, ended)
        except Interrupted:
            return  # unacknowledged: redelivered when this connection closes
        except LeaseLost:
            log.warning("[%s] another delivery took the request over; leaving it to that one",
                        request.job_id)
        except ClowderUnreachable as exc:
            log.warning("[%s] %s; the message goes back in %.0fs", request.job_id, exc,
                        RETRY_DELAY_S)
            if not ended.wait(RETRY_DELAY_S):
                later(lambda: channel.basic_nack(tag, requeue=True))
            return
        except Exception as exc:  # a bug here must not take the listener down
            log.exception("[%s] failed on %s", request.job_id, queue)
            status(Status.ERROR, f"clowder-ml could not carry out the request: "
                                 f"{type(exc).__name__}: {exc}")
            later(lambda: self._to_error_queue(channel, queue, props, body, tag))
            return
        later(lambda: channel.basic_ack(tag))

    @staticmethod
    def _to_error_queue(channel: BlockingChannel, queue: str, props: BasicProperties,
                        body: bytes, tag: int) -> None:
        channel.basic_publish(exchange="", routing_key=f"error.{queue}", body=body,
                              properties=pika.BasicProperties(delivery_mode=2,
                                                              reply_to=props.reply_to))
        channel.basic_ack(tag)

    def _join_workers(self) -> None:
        for w in self._workers:
            w.join()
        self._workers = []
