"""The connector's Clowder v2 REST client against the stand-in: paging past Clowder's default
page of 10 (pyclowder reads only the first page), streamed downloads with a size limit,
uploads, and errors that name the call but never the key."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from clowder_ml.clowder.rest import ClowderApi, ClowderRefused, ClowderUnreachable
from tests.clowder.standin import ClowderStandin


@pytest.fixture(scope="module")
def clowder() -> Iterator[ClowderStandin]:
    with ClowderStandin() as standin:
        yield standin


@pytest.fixture(scope="module")
def user(clowder: ClowderStandin) -> tuple[str, str]:
    key = clowder.add_user("grace@example.org", "Grace", "Hopper")
    return key, clowder.add_dataset(key, "many files")


def test_every_file_of_a_large_dataset_is_listed(clowder: ClowderStandin,
                                                 user: tuple[str, str]) -> None:
    key, ds = user
    made = {clowder.add_file(key, ds, f"f{i:03}.txt", f"row {i}\n".encode()) for i in range(105)}
    with ClowderApi(clowder.url, key) as api:
        listed = api.dataset_files(ds)
        assert api.profile()["email"] == "grace@example.org"
    assert {f["id"] for f in listed} == made and len(listed) == 105
    assert clowder.request_count("GET", "/api/v2/datasets/{dataset_id}/files") == 2


def test_download_streams_and_refuses_more_than_the_limit(clowder: ClowderStandin,
                                                          user: tuple[str, str]) -> None:
    key, ds = user
    data = bytes(range(256)) * 8192  # 2 MiB, several chunks
    fid = clowder.add_file(key, ds, "big.bin", data)
    with ClowderApi(clowder.url, key) as api:
        sink = io.BytesIO()
        assert api.download(fid, sink, limit=len(data)) == len(data)
        assert sink.getvalue() == data
        with pytest.raises(ClowderRefused, match="larger than"):
            api.download(fid, io.BytesIO(), limit=len(data) - 1)


def test_upload_names_the_file_and_its_type(clowder: ClowderStandin, user: tuple[str, str],
                                            tmp_path: Path) -> None:
    key, ds = user
    local = tmp_path / "x.bin"
    local.write_bytes(b"id,predicted\n1,pos\n")
    with ClowderApi(clowder.url, key) as api:
        out = api.upload(ds, local, "clowder-ml-predictions-j1.csv")
    assert out["name"] == "clowder-ml-predictions-j1.csv" and out["bytes"] == 19
    assert out["content_type"]["content_type"] == "text/csv"
    assert clowder.file_bytes(out["id"]) == b"id,predicted\n1,pos\n"


def test_errors_name_the_call_not_the_key(clowder: ClowderStandin,
                                          user: tuple[str, str]) -> None:
    _key, ds = user
    wrong = "wrong-key-do-not-print-0123456789"
    with ClowderApi(clowder.url, wrong) as api, pytest.raises(ClowderRefused) as err:
        api.dataset_files(ds)
    text = f"{err.value.message} {err.value.hint}"
    assert "401" in text and "key" in text.lower() and wrong not in text
    with ClowderApi("http://127.0.0.1:9", wrong) as api, \
            pytest.raises(ClowderUnreachable) as gone:
        api.profile()
    assert gone.value.status == 503 and wrong not in gone.value.message
