"""Extraction requests as Clowder v2 publishes them (clowder2 backend/app/rabbitmq/listeners.py:
``EventListenerJobMessage(...).dict()`` / ``EventListenerDatasetJobMessage``, JSON-dumped),
and the malformed ones a queue may also hold."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clowder_ml.clowder.messages import (
    MAX_MESSAGE_BYTES,
    MalformedMessage,
    parse_request,
)

KEY = "ck_user-full-rights-0123456789"


def file_message(**over: Any) -> dict[str, Any]:
    """Every field ``EventListenerJobMessage`` has, with the values Clowder fills in."""
    return {"host": "http://clowder.local:8000", "secretKey": KEY, "retry_count": 0,
            "resource_type": "file", "flags": "", "filename": "reviews.csv",
            "fileSize": 2048, "id": "65a1f0c2e4b0a1b2c3d4e5f6",
            "datasetId": "65a1f0c2e4b0a1b2c3d4e5f0", "job_id": "65a1f0c2e4b0a1b2c3d4e5f9",
            "parameters": {"model": "sentiment@latest"}, **over}


def dataset_message(**over: Any) -> dict[str, Any]:
    return {"host": "http://clowder.local:8000", "secretKey": KEY, "retry_count": 0,
            "resource_type": "dataset", "flags": "", "datasetName": "reviews",
            "id": "65a1f0c2e4b0a1b2c3d4e5f0", "datasetId": "65a1f0c2e4b0a1b2c3d4e5f0",
            "job_id": "65a1f0c2e4b0a1b2c3d4e5fa", "parameters": None, **over}


def body(message: Any) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode()


def test_a_file_request_as_clowder_sends_it() -> None:
    req = parse_request(body(file_message()))
    assert (req.resource_type, req.filename, req.file_size) == ("file", "reviews.csv", 2048)
    assert req.dataset_id == "65a1f0c2e4b0a1b2c3d4e5f0" and req.job_id.endswith("f9")
    assert req.parameters == {"model": "sentiment@latest"}
    assert req.secret_key.get_secret_value() == KEY


def test_a_dataset_request_with_no_parameters() -> None:
    req = parse_request(body(dataset_message(extra_field_from_a_newer_clowder=1)))
    assert (req.resource_type, req.dataset_name, req.parameters) == ("dataset", "reviews", {})
    assert req.id == req.dataset_id


def test_the_key_never_shows() -> None:
    req = parse_request(body(file_message()))
    assert KEY not in repr(req) and KEY not in str(req)
    assert KEY not in req.model_dump_json()


@pytest.mark.parametrize(("raw", "says"), [
    (b"\xff\xfe", "not UTF-8 JSON"),
    (b"{not json", "not UTF-8 JSON"),
    (body(["a", "list"]), "a JSON list, not an object"),
    (body({k: v for k, v in file_message().items() if k != "job_id"}), "job_id: Field required"),
    (body(file_message(filename=None)), "needs filename"),
    (body(file_message(resource_type="collection")), "resource_type"),
    (body(file_message(parameters=["x"])), "parameters"),
    (body(file_message(fileSize=-1)), "fileSize"),
    (body(file_message(id="../users/keys")), "id: String should match pattern"),
    (body(dataset_message(datasetId="65a1f0c2e4b0a1b2c3d4e5f0/../x")), "datasetId"),
    (body(file_message(secretKey=12345, datasetId=None)), "secretKey"),
    (b" " * (MAX_MESSAGE_BYTES + 1), "the limit is"),
])
def test_malformed_messages_say_why_without_values(raw: bytes, says: str) -> None:
    with pytest.raises(MalformedMessage) as err:
        parse_request(raw)
    text = f"{err.value.message} {err.value.hint}"
    assert says in text
    for secret in (KEY, "12345"):
        assert secret not in text
    assert err.value.code == "validation_failed"
