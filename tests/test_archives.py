"""Zip uploads: unpacked into one new version; traversal, absolute paths, links, encrypted
entries and bombs (by ratio, by total size, by lying headers) are refused with clear errors
and leave the dataset unchanged."""

from __future__ import annotations

import io
import stat
import struct
import zipfile

import pytest

from tests.conftest import Api


def make_zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]],
             compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def post_zip(api: Api, data: bytes, prefix: str = "") -> object:
    return api.client.post("/api/v1/datasets/d/archive", headers=api.h(),
                           files={"file": ("a.zip", data, "application/zip")},
                           data={"prefix": prefix})


def assert_refused(api: Api, data: bytes, words: str) -> None:
    before = api.client.get("/api/v1/datasets/d", headers=api.h()).json()["latest_version"]
    r = post_zip(api, data)
    assert r.status_code == 422, r.text  # type: ignore[attr-defined]
    err = r.json()["error"]  # type: ignore[attr-defined]
    assert err["code"] == "unsafe_archive"
    assert words in err["message"], err["message"]
    after = api.client.get("/api/v1/datasets/d", headers=api.h()).json()["latest_version"]
    assert after == before


@pytest.fixture
def zapi(sqlite_api: Api) -> Api:
    sqlite_api.dataset("d", files={"existing.txt": b"x"})
    return sqlite_api


def test_good_zip_unpacks_into_one_version(zapi: Api) -> None:
    data = make_zip([("a/x.csv", b"a\n1\n"), ("a/b/y.txt", b"yy"), ("z.txt", b"")])
    r = post_zip(zapi, data, prefix="in")
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    assert r.json()["number"] == 2  # type: ignore[attr-defined]
    files = zapi.client.get("/api/v1/datasets/d/files", headers=zapi.h()).json()
    assert sorted(f["path"] for f in files) == [
        "existing.txt", "in/a/b/y.txt", "in/a/x.csv", "in/z.txt"]


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "ok/..\\..\\evil.txt"])
def test_traversal_is_refused(zapi: Api, name: str) -> None:
    assert_refused(zapi, make_zip([("fine.txt", b"1"), (name, b"evil")]), "'..'")


@pytest.mark.parametrize("name", ["/etc/passwd", "C:/windows/evil.txt"])
def test_absolute_path_is_refused(zapi: Api, name: str) -> None:
    assert_refused(zapi, make_zip([(name, b"evil")]), "absolute")


def test_symlink_is_refused(zapi: Api) -> None:
    link = zipfile.ZipInfo("link")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    assert_refused(zapi, make_zip([("ok.txt", b"1"), (link, b"/etc/passwd")]), "symbolic link")


def test_zip_bomb_by_ratio_is_refused(zapi: Api) -> None:
    bomb = make_zip([("zeros.bin", b"\0" * (20 << 20))])
    assert len(bomb) < 100_000
    assert_refused(zapi, bomb, "zip bomb")


def test_total_unpacked_size_limit(make_api: object) -> None:
    api = make_api(zip_max_total_bytes=100_000)  # type: ignore[operator]
    api.dataset("d")
    data = make_zip([(f"f{i}.bin", bytes(range(256)) * 200) for i in range(3)],
                    zipfile.ZIP_STORED)
    assert_refused(api, data, "more than 100000 bytes")


def test_too_many_entries(make_api: object) -> None:
    api = make_api(zip_max_entries=10)  # type: ignore[operator]
    api.dataset("d")
    assert_refused(api, make_zip([(f"f{i}", b"") for i in range(11)]), "11 entries")


def test_header_that_understates_size_is_caught(zapi: Api) -> None:
    """A forged size in the headers must not let more bytes out than declared."""
    data = bytearray(make_zip([("big.bin", b"A" * 500_000)]))
    # Patch the uncompressed size in the local header (offset 22) and central directory.
    assert data[:4] == b"PK\x03\x04"
    struct.pack_into("<I", data, 22, 1000)
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 1000)
    r = post_zip(zapi, bytes(data))
    assert r.status_code == 422  # type: ignore[attr-defined]
    assert r.json()["error"]["code"] == "unsafe_archive"  # type: ignore[attr-defined]


def test_not_a_zip_is_refused(zapi: Api) -> None:
    assert_refused(zapi, b"this is not a zip at all", "not a valid zip")


def test_encrypted_entry_is_refused(zapi: Api) -> None:
    data = bytearray(make_zip([("secret.txt", b"x")], zipfile.ZIP_STORED))
    struct.pack_into("<H", data, 6, 1)  # general purpose flag bit 0: encrypted
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<H", data, cd + 8, 1)
    assert_refused(zapi, bytes(data), "encrypted")


def test_duplicate_entries_are_refused(zapi: Api) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = make_zip([("same.txt", b"1"), ("same.txt", b"2")])
    assert_refused(zapi, data, "twice")


def test_empty_archive_is_refused(zapi: Api) -> None:
    assert_refused(zapi, make_zip([]), "no files")
