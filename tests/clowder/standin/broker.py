"""RabbitMQ as Clowder uses it, with pika (the client clowder2's API process and pyclowder use).

* publishing a job: clowder2 backend/app/rabbitmq/listeners.py ``create_reply_queue`` and
  ``submit_file_job``/``submit_dataset_job``;
* consuming status updates: clowder2 backend/message_listener.py ``listen_for_messages``;
* consuming heartbeats: clowder2 backend/heartbeat_listener.py ``listen_for_heartbeats``.

pika connections are not thread-safe, so every thread (and every publish) has its own.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika

logger = logging.getLogger(__name__)

REPLY_EXCHANGE = "clowder"
HEARTBEAT_EXCHANGE = "extractors"  # clowder2 backend/app/config.py HEARTBEAT_EXCHANGE


@dataclass
class DroppedMessage:
    """A message the stand-in rejected (not requeued) because clowder2's callback raises on it."""

    source: str  # "status" or "heartbeat"
    body: bytes
    error: str


class Broker:
    def __init__(self, uri: str, instance_id: str) -> None:
        self.uri = uri
        self.params = pika.URLParameters(uri)
        self.reply_queue = f"clowder.{instance_id}"

    def connect(self) -> Any:
        return pika.BlockingConnection(self.params)

    def declare_reply_queue(self, channel: Any) -> str:
        """clowder2 backend/app/rabbitmq/listeners.py ``create_reply_queue``."""
        channel.exchange_declare(exchange=REPLY_EXCHANGE, durable=True)
        result = channel.queue_declare(queue=self.reply_queue, durable=True, exclusive=False,
                                       auto_delete=False)
        queue_name: str = result.method.queue
        channel.queue_bind(exchange=REPLY_EXCHANGE, queue=queue_name)
        return queue_name

    def publish_job(self, routing_key: str, body: dict[str, Any]) -> None:
        """The ``basic_publish`` of clowder2 ``submit_file_job``/``submit_dataset_job``."""
        self.publish(routing_key, json.dumps(body, ensure_ascii=False).encode("utf-8"),
                     reply_to=True)

    def publish(self, routing_key: str, body: bytes, *, reply_to: bool | str = True,
                exchange: str = "") -> None:
        connection = self.connect()
        try:
            channel = connection.channel()
            reply: str | None
            if reply_to is True:
                reply = self.declare_reply_queue(channel)
            elif isinstance(reply_to, str):
                reply = reply_to
            else:
                reply = None
            channel.basic_publish(
                exchange=exchange, routing_key=routing_key, body=body,
                properties=pika.BasicProperties(content_type="application/json",
                                                delivery_mode=1, reply_to=reply))
        finally:
            connection.close()

    def delete_reply_queue(self) -> None:
        connection = self.connect()
        try:
            connection.channel().queue_delete(queue=self.reply_queue)
        finally:
            connection.close()


class Consumer(threading.Thread):
    """Consumes one queue on its own connection; acks what ``handle`` returns from, rejects
    (requeue=False) what it raises on, like aio_pika's ``message.process()`` in clowder2."""

    def __init__(self, broker: Broker, name: str, setup: Callable[[Any], str],
                 handle: Callable[[bytes], object],
                 dropped: Callable[[DroppedMessage], None]) -> None:
        super().__init__(name=f"clowder-standin-{name}", daemon=True)
        self.broker = broker
        self.source = name
        self.setup = setup
        self.handle = handle
        self.dropped = dropped
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.queue = ""

    def run(self) -> None:
        try:
            connection = self.broker.connect()
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            return
        try:
            channel = connection.channel()
            self.queue = self.setup(channel)
            channel.basic_consume(queue=self.queue, on_message_callback=self._on_message,
                                  auto_ack=False)
            self.ready.set()
            while not self.stopping.is_set():
                connection.process_data_events(time_limit=0.05)
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            logger.exception("clowder stand-in %s consumer failed", self.source)
        finally:
            try:
                connection.close()
            except Exception:
                pass

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        try:
            self.handle(body)
        except Exception as exc:
            logger.warning("clowder stand-in drops a %s message: %r", self.source, exc)
            self.dropped(DroppedMessage(self.source, body, f"{type(exc).__name__}: {exc}"))
            channel.basic_reject(delivery_tag=method.delivery_tag, requeue=False)
        else:
            channel.basic_ack(delivery_tag=method.delivery_tag)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


def reply_queue_setup(broker: Broker) -> Callable[[Any], str]:
    """clowder2 backend/message_listener.py: exchange ``clowder`` (durable), queue
    ``clowder.<instance_id>`` (durable), bound with its own name as routing key."""
    return broker.declare_reply_queue


def heartbeat_setup(channel: Any) -> str:
    """clowder2 backend/heartbeat_listener.py: fanout exchange ``extractors`` (durable, as
    pyclowder's ``RabbitMQBroadcast`` declares it) and an exclusive server-named queue."""
    channel.exchange_declare(exchange=HEARTBEAT_EXCHANGE, exchange_type="fanout", durable=True)
    result = channel.queue_declare(queue="", exclusive=True)
    queue: str = result.method.queue
    channel.queue_bind(exchange=HEARTBEAT_EXCHANGE, queue=queue)
    return queue
