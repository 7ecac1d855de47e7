"""A Clowder v2 stand-in for tests: a small FastAPI app with clowder2's real paths, bodies, auth
header and RabbitMQ behaviour, for the endpoints the connector calls. Everything is in memory.

clowder2 sources copied (repository clowder-framework/clowder2): backend/app/routers/*.py,
backend/app/models/*.py, backend/app/rabbitmq/listeners.py, backend/message_listener.py,
backend/heartbeat_listener.py. See ``ClowderStandin``.
"""

from .broker import HEARTBEAT_EXCHANGE, REPLY_EXCHANGE, DroppedMessage
from .messages import EventListenerJobStatus, parse_message_status
from .server import DEFAULT_RABBITMQ_URI, ClowderStandin, new_instance_id

__all__ = [
    "DEFAULT_RABBITMQ_URI",
    "HEARTBEAT_EXCHANGE",
    "REPLY_EXCHANGE",
    "ClowderStandin",
    "DroppedMessage",
    "EventListenerJobStatus",
    "new_instance_id",
    "parse_message_status",
]
