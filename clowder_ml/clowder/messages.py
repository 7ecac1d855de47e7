"""The extraction requests Clowder v2 sends an extractor's queue, parsed and checked.

Clowder publishes one JSON object per request (``submit_file_job`` and
``submit_dataset_job`` in clowder2 ``backend/app/rabbitmq/listeners.py``), shaped by
``EventListenerJobMessage`` (a file) and ``EventListenerDatasetJobMessage`` (a dataset) in
clowder2 ``backend/app/models/listeners.py``. Unknown fields are tolerated (Clowder may add
some); a missing or mistyped required field makes the message malformed.

The ``secretKey`` Clowder sends carries the user's rights on Clowder: it is held as a
``SecretStr`` and never appears in a repr, a log line or an error message, including the
ones written for a malformed message.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from clowder_ml.errors import ValidationFailed

MAX_MESSAGE_BYTES = 1 << 20  # Clowder's messages are a few hundred bytes
# Clowder v2's ids are MongoDB ObjectIds (``PydanticObjectId``). They go into API paths, so
# anything else is refused here: no path tricks, and no id Clowder would answer with a 500.
OBJECT_ID = r"^[0-9a-fA-F]{24}$"


class MalformedMessage(ValidationFailed):
    """The message is not an extraction request this connector can read (to be rejected)."""


class ExtractionRequest(BaseModel):
    """One extraction request: run this extractor on a Clowder file or dataset."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    host: str = Field(min_length=1, description="Clowder's API base URL")
    secret_key: SecretStr = Field(alias="secretKey")
    job_id: str = Field(pattern=OBJECT_ID, description="Clowder's id of this extraction job")
    resource_type: Literal["file", "dataset"] = "file"
    id: str = Field(pattern=OBJECT_ID, description="The file's or the dataset's id")
    dataset_id: str = Field(alias="datasetId", pattern=OBJECT_ID)
    filename: str | None = None
    file_size: int | None = Field(default=None, alias="fileSize", ge=0)
    dataset_name: str | None = Field(default=None, alias="datasetName")
    parameters: dict[str, Any] = Field(default_factory=dict)
    retry_count: int = Field(default=0, ge=0)
    flags: str = ""

    @model_validator(mode="before")
    @classmethod
    def _none_parameters(cls, data: Any) -> Any:
        # Clowder sends ``"parameters": null`` when the user gave none.
        if isinstance(data, dict) and data.get("parameters") is None:
            data = {k: v for k, v in data.items() if k != "parameters"}
        return data

    @model_validator(mode="after")
    def _resource_fields(self) -> ExtractionRequest:
        if self.resource_type == "file" and not self.filename:
            raise ValueError("a file request needs filename")
        return self


def parse_request(body: bytes) -> ExtractionRequest:
    """The request in ``body``; ``MalformedMessage`` naming what is wrong (never a value)."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(f"The message is {len(body)} bytes; the limit is "
                               f"{MAX_MESSAGE_BYTES}.")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedMessage("The message is not UTF-8 JSON.") from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"The message is a JSON {type(data).__name__}, not an object.")
    try:
        return ExtractionRequest.model_validate(data)
    except ValidationError as exc:
        # Field names and rules only: pydantic's own text would quote the input values.
        bad = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'message'}: {e['msg']}"
                        for e in exc.errors(include_input=False)[:5])
        raise MalformedMessage(f"The message is not a Clowder extraction request: {bad}.",
                               "Clowder v2 sends EventListenerJobMessage or "
                               "EventListenerDatasetJobMessage bodies.") from None
