"""The Clowder v2 stand-in (tests/clowder/standin) behaves like clowder2 where the connector
touches it: X-API-KEY auth, paging, upload/download, metadata validation, extraction messages on
RabbitMQ, heartbeats and status updates. Needs RabbitMQ at amqp://guest:guest@127.0.0.1:5672/."""

from __future__ import annotations

import datetime
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pika
import pytest

from tests.clowder.standin import (
    DEFAULT_RABBITMQ_URI,
    ClowderStandin,
    EventListenerJobStatus,
    parse_message_status,
)

API = "/api/v2"


@pytest.fixture(scope="module")
def clowder() -> Iterator[ClowderStandin]:
    with ClowderStandin() as standin:
        yield standin


@pytest.fixture(scope="module")
def channel() -> Iterator[Any]:
    connection = pika.BlockingConnection(pika.URLParameters(DEFAULT_RABBITMQ_URI))
    yield connection.channel()
    connection.close()


@pytest.fixture
def queue(channel: Any) -> Iterator[str]:
    """An extractor's queue (as pyclowder declares it: durable, named after the extractor)."""
    name = f"standin.test.{uuid.uuid4().hex[:8]}"
    channel.queue_declare(queue=name, durable=True)
    yield name
    channel.queue_delete(queue=name)


def _email() -> str:
    return f"u{uuid.uuid4().hex[:10]}@example.org"


def _user(clowder: ClowderStandin) -> tuple[str, str]:
    email = _email()
    return email, clowder.add_user(email, "Ada", "Lovelace")


def _get(clowder: ClowderStandin, path: str, key: str | None, **params: Any) -> httpx.Response:
    headers = {} if key is None else {"X-API-KEY": key}
    return httpx.get(f"{clowder.url}{API}{path}", headers=headers, params=params)


def _iso8601time() -> str:
    """pyclowder.utils.iso8601time: local time, seconds, with a +HH:MM offset."""
    if time.daylight == 0:
        tz = str.format("{0:+06.2f}", -float(time.timezone) / 3600).replace(".", ":")
    else:
        tz = str.format("{0:+06.2f}", -float(time.altzone) / 3600).replace(".", ":")
    now = datetime.datetime.now().replace(microsecond=0)
    return now.isoformat() + tz


def _status_payload(job_id: str, file_id: str, status: str, message: str) -> dict[str, Any]:
    """pyclowder connectors.RabbitMQHandler.status_update's payload."""
    return {"file_id": file_id, "extractor_id": "standin.test", "job_id": job_id,
            "status": f"{status}: {message}", "start": _iso8601time(),
            "message_type": status, "message": message}


def _publish_status(channel: Any, clowder: ClowderStandin, body: bytes) -> None:
    """As pyclowder's RabbitMQHandler.process_messages: default exchange, routing key reply_to."""
    channel.basic_publish(exchange="", routing_key=clowder.reply_queue, body=body,
                          properties=pika.BasicProperties(delivery_mode=2))


def _get_message(channel: Any, queue: str, timeout: float = 5.0) -> tuple[Any, bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue=queue, auto_ack=True)
        if method is not None:
            return properties, body
        time.sleep(0.02)
    raise AssertionError(f"nothing published to {queue}")


# -- auth -------------------------------------------------------------------------------------


def test_auth_is_x_api_key_and_401_otherwise(clowder: ClowderStandin) -> None:
    email, key = _user(clowder)

    missing = _get(clowder, "/users/profile", None)
    assert missing.status_code == 401
    assert missing.json() == {"detail": "Not authenticated."}
    assert missing.headers["www-authenticate"] == "Bearer"

    wrong = _get(clowder, "/users/profile", "not-a-key")
    assert wrong.status_code == 401
    assert wrong.json() == {"detail": {"error": "Key is invalid."}}

    profile = _get(clowder, "/users/profile", key)
    assert profile.status_code == 200
    body = profile.json()
    assert set(body) == {"id", "email", "first_name", "last_name", "admin", "admin_mode",
                         "read_only_user"}
    assert (body["email"], body["first_name"], body["last_name"]) == (email, "Ada", "Lovelace")
    assert len(body["id"]) == 24 and int(body["id"], 16) >= 0

    # The job key Clowder sends to extractors as secretKey authenticates the same routes.
    assert _get(clowder, "/users/profile", clowder.job_key(email)).json()["email"] == email

    expiring = clowder.add_api_key(email, mins=1)
    with clowder.store.lock:
        clowder.store.keys[expiring].expires = datetime.datetime(2000, 1, 1)
    expired = _get(clowder, "/users/profile", expiring)
    assert expired.status_code == 401
    assert expired.json() == {"detail": {"error": "Key is expired."}}


def test_datasets_are_for_their_creator_and_those_shared(clowder: ClowderStandin) -> None:
    _, owner = _user(clowder)
    other_email, other = _user(clowder)
    dataset_id = clowder.add_dataset(owner, "reviews", "movie reviews")
    file_id = clowder.add_file(owner, dataset_id, "a.txt", b"hello")

    got = _get(clowder, f"/datasets/{dataset_id}", owner)
    assert got.status_code == 200
    dataset = got.json()
    assert dataset["id"] == dataset_id
    assert (dataset["name"], dataset["description"], dataset["status"]) == (
        "reviews", "movie reviews", "PRIVATE")
    assert dataset["creator"]["first_name"] == "Ada"
    for field in ("created", "modified"):
        datetime.datetime.fromisoformat(dataset[field])

    denied = _get(clowder, f"/datasets/{dataset_id}", other)
    assert denied.status_code == 403
    assert denied.json()["detail"] == (
        f"User `{other_email} does not have `viewer` permission on dataset {dataset_id}")
    assert _get(clowder, f"/files/{file_id}/summary", other).status_code == 404

    unknown = "0" * 24
    missing = _get(clowder, f"/datasets/{unknown}", owner)
    assert missing.status_code == 404
    assert missing.json() == {"detail": f"The dataset {unknown} is not found"}
    missing_file = _get(clowder, f"/files/{unknown}/summary", owner)
    assert missing_file.json() == {"detail": f"File {unknown} not found"}
    # PydanticObjectId("nope") raises bson's InvalidId, which clowder2 does not catch.
    assert _get(clowder, "/datasets/nope", owner).status_code == 500

    clowder.share(dataset_id, other_email, "viewer")
    assert _get(clowder, f"/datasets/{dataset_id}", other).status_code == 200
    assert _get(clowder, f"/files/{file_id}", other).content == b"hello"


# -- files ------------------------------------------------------------------------------------


def test_dataset_files_are_paged_newest_first(clowder: ClowderStandin) -> None:
    _, key = _user(clowder)
    dataset_id = clowder.add_dataset(key, "paging")
    ids = [clowder.add_file(key, dataset_id, f"f{i}.txt", b"x" * i) for i in range(3)]
    for i in range(12):
        clowder.add_file(key, dataset_id, f"more{i}.txt", b"")

    default = _get(clowder, f"/datasets/{dataset_id}/files", key).json()
    assert default["metadata"] == {"total_count": 15, "skip": 0, "limit": 10}
    assert len(default["data"]) == 10

    last = _get(clowder, f"/datasets/{dataset_id}/files", key, skip=13, limit=10).json()
    assert last["metadata"] == {"total_count": 15, "skip": 13, "limit": 10}
    assert [f["id"] for f in last["data"]] == [ids[1], ids[0]]
    assert last["data"][0]["bytes"] == 1

    beyond = _get(clowder, f"/datasets/{dataset_id}/files", key, skip=50).json()
    assert beyond == {"metadata": {"total_count": 15, "skip": 50, "limit": 10}, "data": []}


def test_upload_then_download_round_trip(clowder: ClowderStandin) -> None:
    email, key = _user(clowder)
    dataset_id = clowder.add_dataset(key, "uploads")
    content = b"text,label\ngood,1\n"
    before = clowder.request_count("POST", "/api/v2/datasets/{dataset_id}/files")

    uploaded = httpx.post(f"{clowder.url}{API}/datasets/{dataset_id}/files",
                          headers={"X-API-KEY": key},
                          files={"file": ("reviews.csv", content, "text/csv")})
    assert uploaded.status_code == 200
    file_out = uploaded.json()
    assert clowder.request_count("POST", "/api/v2/datasets/{dataset_id}/files") == before + 1
    assert file_out["name"] == "reviews.csv"
    assert file_out["dataset_id"] == dataset_id
    assert file_out["bytes"] == len(content)
    assert file_out["version_num"] == 1
    assert file_out["content_type"] == {"content_type": "text/csv", "main_type": "text"}
    assert file_out["creator"]["email"] == email
    assert {"version_id", "folder_id", "views", "downloads", "created", "storage_type",
            "status"} <= set(file_out)
    file_id = file_out["id"]

    summary = _get(clowder, f"/files/{file_id}/summary", key).json()
    assert summary["id"] == file_id and summary["origin_id"] == file_id
    assert summary["downloads"] == 0

    download = _get(clowder, f"/files/{file_id}", key)
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["content-disposition"] == "attachment; filename=reviews.csv"
    assert download.headers["content-type"].startswith("text/csv")
    assert clowder.file_bytes(file_id) == content
    assert _get(clowder, f"/files/{file_id}/summary", key).json()["downloads"] == 1
    assert [f["id"] for f in clowder.files(dataset_id)] == [file_id]

    # No MIME type on the part: guessed from the file name, as clowder2 get_content_type.
    guessed = httpx.post(f"{clowder.url}{API}/datasets/{dataset_id}/files",
                         headers={"X-API-KEY": key}, files={"file": ("notes.json", b"{}")})
    assert guessed.json()["content_type"] == {"content_type": "application/json",
                                              "main_type": "application"}


# -- metadata ---------------------------------------------------------------------------------


def test_metadata_needs_a_context(clowder: ClowderStandin) -> None:
    _, key = _user(clowder)
    dataset_id = clowder.add_dataset(key, "metadata")
    url = f"{clowder.url}{API}/datasets/{dataset_id}/metadata"
    headers = {"X-API-KEY": key}

    no_context = httpx.post(url, headers=headers, json={"content": {"accuracy": 0.9}})
    assert no_context.status_code == 400
    assert no_context.json() == {"detail": "Context is required"}
    assert httpx.post(url, headers=headers, json={"@context": ["https://schema.org/"]}
                      ).status_code == 422  # content is required

    listener = {"name": "standin.test", "version": "1.0", "description": "test"}
    added = httpx.post(url, headers=headers, json={
        "@context": ["https://schema.org/"], "content": {"accuracy": 0.9}, "listener": listener})
    assert added.status_code == 200
    md = added.json()
    assert md["@context"] == ["https://schema.org/"]
    assert md["content"] == {"accuracy": 0.9}
    assert md["resource"] == {"collection": "datasets", "resource_id": dataset_id,
                              "version": None}
    assert md["agent"]["listener"]["name"] == "standin.test"

    # pyclowder's v2 get_metadata sends "context" (not "@context") and a context_url.
    pyclowder_style = httpx.post(url, headers=headers, json={
        "context": ["https://clowder.ncsa.illinois.edu/contexts/metadata.jsonld"],
        "context_url": "https://clowder.ncsa.illinois.edu/contexts/metadata.jsonld",
        "content": {"n": 1}, "contents": {"n": 1}, "listener": listener})
    assert pyclowder_style.status_code == 200

    listed = httpx.get(url, headers=headers).json()
    assert [m["id"] for m in listed] == [md["id"], pyclowder_style.json()["id"]]
    assert clowder.dataset_metadata(dataset_id) == listed

    # On files a listener must be a registered one (name + version), else 404.
    file_id = clowder.add_file(key, dataset_id, "a.txt", b"a")
    on_file = httpx.post(f"{clowder.url}{API}/files/{file_id}/metadata", headers=headers,
                         json={"context_url": "https://schema.org/", "content": {"a": 1},
                               "listener": {"name": f"unknown.{uuid.uuid4().hex}"}})
    assert on_file.status_code == 404
    assert on_file.json() == {"detail": "Extractor not found"}


# -- RabbitMQ ---------------------------------------------------------------------------------


def test_submit_extraction_publishes_clowder_job_messages(
        clowder: ClowderStandin, channel: Any, queue: str) -> None:
    email, key = _user(clowder)
    dataset_id = clowder.add_dataset(key, "extract me")
    file_id = clowder.add_file(key, dataset_id, "reviews.csv", b"a,b\n1,2\n")

    job_id = clowder.submit_extraction(key, queue, file_id=file_id,
                                       parameters={"model": "sentiment@latest"})
    assert len(job_id) == 24
    properties, body = _get_message(channel, queue)
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 1
    assert properties.reply_to == clowder.reply_queue == f"clowder.{clowder.instance_id}"
    message = json.loads(body)
    assert list(message) == ["host", "secretKey", "retry_count", "resource_type", "flags",
                             "filename", "fileSize", "id", "datasetId", "job_id", "parameters"]
    assert message == {"host": clowder.url, "secretKey": clowder.job_key(email),
                       "retry_count": 0, "resource_type": "file", "flags": "",
                       "filename": "reviews.csv", "fileSize": 8, "id": file_id,
                       "datasetId": dataset_id, "job_id": job_id,
                       "parameters": {"model": "sentiment@latest"}}
    # host is the base URL extractors call back into, secretKey works there.
    assert _get(clowder, f"/files/{file_id}", message["secretKey"]).content == b"a,b\n1,2\n"

    summary = _get(clowder, f"/jobs/{job_id}/summary", key).json()
    assert summary["status"] == "CREATED"
    assert summary["listener_id"] == queue
    assert summary["resource_ref"] == {"collection": "files", "resource_id": file_id,
                                       "version": 1}

    dataset_job = httpx.post(f"{clowder.url}{API}/datasets/{dataset_id}/extract",
                             params={"extractorName": queue}, headers={"X-API-KEY": key})
    assert dataset_job.status_code == 200
    _, body = _get_message(channel, queue)
    message = json.loads(body)
    assert list(message) == ["host", "secretKey", "retry_count", "resource_type", "flags",
                             "datasetName", "id", "datasetId", "job_id", "parameters"]
    assert message["resource_type"] == "dataset"
    assert message["datasetName"] == "extract me"
    assert message["id"] == message["datasetId"] == dataset_id
    assert message["job_id"] == dataset_job.json()
    assert message["parameters"] is None

    no_name = httpx.post(f"{clowder.url}{API}/files/{file_id}/extract",
                         headers={"X-API-KEY": key}, json={})
    assert no_name.status_code == 422


def test_publish_raw_sends_like_clowder(clowder: ClowderStandin, channel: Any,
                                        queue: str) -> None:
    clowder.publish_raw(queue, b"{not json")
    properties, body = _get_message(channel, queue)
    assert body == b"{not json"
    assert properties.reply_to == clowder.reply_queue
    assert properties.content_type == "application/json"


def test_heartbeat_registers_a_listener(clowder: ClowderStandin, channel: Any) -> None:
    _, key = _user(clowder)
    name = f"standin.heartbeat.{uuid.uuid4().hex[:8]}"
    extractor_info = {"@context": "http://clowder.ncsa.illinois.edu/contexts/extractors.jsonld",
                      "name": name, "version": "2.1", "description": "Fine-tunes models",
                      "author": "Ada", "contributors": [], "contexts": [{}],
                      "repository": [{"repType": "git", "repUrl": "https://example.org/x"}],
                      "process": {"file": ["text/csv"]}, "categories": ["ml"],
                      "parameters": {"schema": {}}}
    # pyclowder connectors.RabbitMQBroadcast.send_heartbeat
    channel.exchange_declare(exchange="extractors", exchange_type="fanout", durable=True)
    heartbeat = {"id": str(uuid.uuid4()), "queue": name, "owner": None,
                 "extractor_info": extractor_info}
    channel.basic_publish(exchange="extractors", routing_key="", body=json.dumps(heartbeat))

    listener = clowder.wait_listener(name)
    assert listener["version"] == "2.1"
    assert listener["description"] == "Fine-tunes models"
    assert listener["alive"] is True and listener["active"] is False
    assert listener["properties"]["process"] == {"file": ["text/csv"]}
    assert listener["properties"]["repository"] == [{"repository_type": "git",
                                                     "repository_url": ""}]

    # GET /listeners hides inactive listeners from non-admins unless all=true.
    default = _get(clowder, "/listeners", key, limit=100).json()
    assert name not in [item["name"] for item in default["data"]]
    listed = _get(clowder, "/listeners", key, all=True, limit=100).json()
    assert name in [item["name"] for item in listed["data"]]
    assert _get(clowder, f"/listeners/{listener['id']}", key).status_code == 403

    clowder.set_listener_active(listener["id"])
    got = _get(clowder, f"/listeners/{listener['id']}", key)
    assert got.status_code == 200 and got.json()["name"] == name

    # A second heartbeat updates the same listener (same id, later lastAlive).
    time.sleep(0.005)
    channel.basic_publish(exchange="extractors", routing_key="", body=json.dumps(heartbeat))
    deadline = time.monotonic() + 5
    while True:
        mine = [item for item in clowder.listeners() if item["name"] == name]
        if mine[0]["lastAlive"] != listener["lastAlive"] or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert [item["id"] for item in mine] == [listener["id"]]
    assert mine[0]["lastAlive"] > listener["lastAlive"]
    assert mine[0]["active"] is True  # kept from the stored listener

    # Now metadata by that listener is accepted on files.
    dataset_id = clowder.add_dataset(key, "m")
    file_id = clowder.add_file(key, dataset_id, "a.csv", b"a")
    posted = httpx.post(f"{clowder.url}{API}/files/{file_id}/metadata",
                        headers={"X-API-KEY": key},
                        json={"context_url": "https://schema.org/", "content": {"a": 1},
                              "listener": {"name": name, "version": "2.1"}})
    assert posted.status_code == 200
    assert posted.json()["agent"]["listener"]["id"] == listener["id"]


def test_status_messages_update_the_job(clowder: ClowderStandin, channel: Any,
                                        queue: str) -> None:
    _, key = _user(clowder)
    dataset_id = clowder.add_dataset(key, "status")
    file_id = clowder.add_file(key, dataset_id, "a.csv", b"a")
    job_id = clowder.submit_extraction(key, queue, file_id=file_id)

    started = _status_payload(job_id, file_id, "StatusMessage.start", "Started processing.")
    _publish_status(channel, clowder, json.dumps(started).encode())
    assert clowder.wait_job_status(job_id, {"STARTED"})["latest_message"] == (
        "Started processing.")

    done = _status_payload(job_id, file_id, "SUCCEEDED", "Done.")
    _publish_status(channel, clowder, json.dumps(done).encode())
    summary = clowder.wait_job_status(job_id, {"SUCCEEDED"})
    assert summary["latest_message"] == "Done."
    assert summary["started"] is not None and summary["finished"] is not None
    assert summary["duration"] >= 0
    assert _get(clowder, f"/jobs/{job_id}/summary", key).json() == summary

    updates = _get(clowder, f"/jobs/{job_id}/updates", key).json()
    assert [u["status"] for u in updates] == ["Started processing.", "Done."]
    assert updates == clowder.job_updates(job_id)

    # A finished status sticks; a late message still becomes latest_message and an update.
    clowder.publish_status(_status_payload(job_id, file_id, "PROCESSING", "late"))
    deadline = time.monotonic() + 5
    while len(clowder.job_updates(job_id)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert clowder.job(job_id)["status"] == "SUCCEEDED"
    assert clowder.job(job_id)["latest_message"] == "late"


def test_malformed_status_messages_are_dropped(clowder: ClowderStandin, channel: Any,
                                              queue: str) -> None:
    _, key = _user(clowder)
    dataset_id = clowder.add_dataset(key, "malformed")
    file_id = clowder.add_file(key, dataset_id, "a.csv", b"a")
    job_id = clowder.submit_extraction(key, queue, file_id=file_id)
    before = len(clowder.dropped_messages())

    unknown_text = _status_payload(job_id, file_id, "x", "y") | {"status": "Downloading file."}
    no_offset = _status_payload(job_id, file_id, "SUCCEEDED", "Done.") | {
        "start": "2024-01-20T08:30:27"}
    bad = [b"not json", json.dumps({"job_id": job_id}).encode(),
           json.dumps(unknown_text).encode(), json.dumps(no_offset).encode()]
    for body in bad:
        _publish_status(channel, clowder, body)
    # Unknown job id: acknowledged and ignored (not dropped as malformed).
    other = _status_payload("0" * 24, file_id, "SUCCEEDED", "Done.")
    _publish_status(channel, clowder, json.dumps(other).encode())
    step = _status_payload(job_id, file_id, "PROCESSING", "step 1")
    _publish_status(channel, clowder, json.dumps(step).encode())

    summary = clowder.wait_job_status(job_id, {"PROCESSING"})
    assert summary["latest_message"] == "step 1"
    assert [u["status"] for u in clowder.job_updates(job_id)] == ["step 1"]
    dropped = clowder.dropped_messages()[before:]
    assert [d.body for d in dropped] == bad
    assert all(d.source == "status" for d in dropped)


def test_parse_message_status_is_clowder2s() -> None:
    s = EventListenerJobStatus
    assert parse_message_status("SUCCEEDED: Done.") == {"status": s.SUCCEEDED,
                                                        "cleaned_msg": "Done."}
    assert parse_message_status("StatusMessage.done: Done processing.") == {
        "status": s.SUCCEEDED, "cleaned_msg": "Done processing."}
    assert parse_message_status("StatusMessage.start: Started processing.") == {
        "status": s.STARTED, "cleaned_msg": "Started processing."}
    assert parse_message_status("PROCESSING: 3/10") == {"status": s.PROCESSING,
                                                        "cleaned_msg": "3/10"}
    assert parse_message_status("ERROR: boom") == {"status": s.ERROR, "cleaned_msg": "boom"}
    assert parse_message_status("SKIPPED: no") == {"status": s.SKIPPED, "cleaned_msg": "no"}
    assert parse_message_status("RESUBMITTED: (#1)") == {"status": s.RESUBMITTED,
                                                         "cleaned_msg": "(#1)"}
    # clowder2 checks endswith("Done processing.") before the ERROR prefix.
    assert parse_message_status("ERROR: Done processing.") == {
        "status": s.SUCCEEDED, "cleaned_msg": "ERROR: Done processing."}
    # Unrecognised text: the bare status, not a dict (clowder2 then fails on it).
    assert parse_message_status("Downloading file.") == s.PROCESSING
