"""Request bodies the stand-in validates, copied from clowder2's pydantic (v1) models.

clowder2 still uses pydantic v1 (``class Config: fields = {...}``); these are v2 models that accept
the same JSON. ``coerce_numbers_to_str`` gives v1's number-to-``str`` coercion; v1's ``AnyUrl``
is checked by hand so the URL string is kept as sent (v2 would normalise it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _V1Like(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True, extra="ignore")


def _check_contexts(value: list[Any] | None) -> list[Any] | None:
    """``Optional[List[Union[dict, AnyUrl]]]``: each item a JSON object or an absolute URL."""
    if value is None:
        return None
    for item in value:
        if isinstance(item, dict):
            continue
        if not isinstance(item, str):
            raise ValueError("value is not a valid dict or URL")
        parts = urlsplit(item)
        if not parts.scheme or not parts.netloc:
            raise ValueError("invalid or missing URL scheme")
    return value


class Repository(_V1Like):
    """clowder2 backend/app/models/listeners.py ``Repository``."""

    repository_type: str = "git"
    repository_url: str = ""


class AccessList(_V1Like):
    """clowder2 backend/app/models/listeners.py ``AccessList``."""

    owner: str
    users: list[str] = []
    groups: list[str] = []
    datasets: list[str] = []


class ExtractorInfo(_V1Like):
    """clowder2 backend/app/models/listeners.py ``ExtractorInfo`` (stored as a listener's
    ``properties``). It has no ``description``: that lives on the listener itself."""

    author: str | None = None
    process: dict[str, Any] | None = None
    maturity: str = "Development"
    name: str | None = ""
    contributors: list[str] | None = []
    contexts: list[Any] | None = []
    repository: list[Repository] | None = []
    external_services: list[str] | None = []
    libraries: list[str] | None = []
    bibtex: list[str] | None = []
    default_labels: list[str] | None = []
    categories: list[str] | None = []
    parameters: dict[str, Any] | None = None
    version: str | None = "1.0"
    unique_key: str | None = None

    @field_validator("contexts")
    @classmethod
    def _contexts_valid(cls, value: list[Any] | None) -> list[Any] | None:
        return _check_contexts(value)


class EventListenerIn(_V1Like):
    """clowder2 backend/app/models/listeners.py ``EventListenerIn`` (name, version, description)."""

    name: str
    version: str = "1.0"
    description: str = ""
    access: AccessList | None = None


class LegacyEventListenerIn(ExtractorInfo):
    """clowder2 backend/app/models/listeners.py ``LegacyEventListenerIn``."""

    name: str
    version: str = "1.0"
    description: str = ""


class EventListenerFromHeartbeat(_V1Like):
    """What ``EventListenerDB(**extractor_info, ...)`` keeps of a heartbeat's ``extractor_info``
    (clowder2 backend/app/models/listeners.py ``EventListenerDB``): unknown keys are dropped, and
    keys that are listener fields (even ``active``) are taken as they come."""

    name: str
    version: str = "1.0"
    description: str = ""
    access: AccessList | None = None
    creator: dict[str, Any] | None = None
    created: datetime | None = None
    modified: datetime | None = None
    active: bool = False
    properties: ExtractorInfo | None = None


class MetadataIn(_V1Like):
    """clowder2 backend/app/models/metadata.py ``MetadataIn`` (``MetadataBase``): ``context`` is
    spelled ``@context`` in JSON; ``context`` is accepted too (allow_population_by_field_name)."""

    model_config = ConfigDict(coerce_numbers_to_str=True, extra="ignore", populate_by_name=True)

    context: list[Any] | None = Field(default=None, alias="@context")
    context_url: str | None = None
    definition: str | None = None
    content: dict[str, Any]
    description: str | None = None
    file_version: int | None = None
    listener: EventListenerIn | None = None
    extractor: LegacyEventListenerIn | None = None

    @field_validator("context")
    @classmethod
    def _context_valid(cls, value: list[Any] | None) -> list[Any] | None:
        return _check_contexts(value)
