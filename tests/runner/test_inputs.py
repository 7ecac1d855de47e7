"""BlobCache and materialize with a fake API that serves blobs from memory."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import Any

import pytest

from clowder_ml.runner.api import ApiFailed
from clowder_ml.runner.inputs import BlobCache, default_cache_dir, materialize


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeBlobApi:
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs  # what the server sends for a digest (may differ from it: corrupt)
        self.downloads: list[str] = []
        self.fail: Exception | None = None

    def download_blob(self, sha256: str, dest: Path) -> None:
        self.downloads.append(sha256)
        assert dest.name.startswith(".part-")  # never written straight into the cache entry
        if self.fail is not None:
            dest.write_bytes(b"partial")
            raise self.fail
        dest.write_bytes(self.blobs[sha256])


A = b"alpha contents\n"
B = b"beta " * 1000
C = b"\x00\x01gamma"


def manifest() -> list[dict[str, Any]]:
    return [
        {"kind": "dataset", "ref": "ds-1", "version": 3, "mount": "train", "name": "Train",
         "files": [{"path": "a.txt", "sha256": sha(A), "size": len(A)},
                   {"path": "deep/er/b.bin", "sha256": sha(B), "size": len(B)}]},
        {"kind": "model", "ref": "m-1", "files": [
            {"path": "w/c.pt", "sha256": sha(C), "size": len(C)},
            {"path": "copy-of-a.txt", "sha256": sha(A), "size": len(A)}]},
    ]


def cache_leftovers(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".part-*"))


def test_miss_downloads_then_a_second_job_hits_the_cache(tmp_path: Path) -> None:
    api = FakeBlobApi({sha(A): A, sha(B): B, sha(C): C})
    cache = BlobCache(tmp_path / "cache")
    seen: list[tuple[int, int, str]] = []
    got = materialize(api, cache, manifest(), tmp_path / "job1" / "inputs",  # type: ignore[arg-type]
                      lambda done, total, path: seen.append((done, total, path)))
    # A is needed twice in this job but downloaded once
    assert sorted(api.downloads) == sorted([sha(A), sha(B), sha(C)])
    assert (cache.misses, cache.hits) == (3, 1)
    assert seen == [(1, 4, "a.txt"), (2, 4, "deep/er/b.bin"), (3, 4, "w/c.pt"),
                    (4, 4, "copy-of-a.txt")]

    root = tmp_path / "job1" / "inputs"
    assert (root / "train" / "a.txt").read_bytes() == A
    assert (root / "train" / "deep" / "er" / "b.bin").read_bytes() == B
    assert (root / "input-1" / "w" / "c.pt").read_bytes() == C  # no mount: by position
    assert (root / "input-1" / "copy-of-a.txt").read_bytes() == A
    assert [(d.kind, d.ref, d.version, d.name, d.path, d.files) for d in got] == [
        ("dataset", "ds-1", 3, "Train", root / "train", ["a.txt", "deep/er/b.bin"]),
        ("model", "m-1", None, "m-1", root / "input-1", ["w/c.pt", "copy-of-a.txt"]),
    ]

    api.downloads.clear()
    got2 = materialize(api, cache, manifest(), tmp_path / "job2")  # type: ignore[arg-type]
    assert api.downloads == []
    assert (cache.misses, cache.hits) == (3, 5)
    assert (tmp_path / "job2" / "train" / "deep" / "er" / "b.bin").read_bytes() == B
    assert got2[0].path == tmp_path / "job2" / "train"
    assert cache_leftovers(cache.root) == []


def test_cached_files_are_read_only_and_named_by_digest(tmp_path: Path) -> None:
    api = FakeBlobApi({sha(A): A})
    cache = BlobCache(tmp_path / "cache")
    path = cache.get(api, sha(A), len(A))  # type: ignore[arg-type]
    assert path == tmp_path / "cache" / sha(A)[:2] / sha(A)
    assert path.read_bytes() == A
    assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0
    materialize(api, cache, [{"kind": "dataset", "ref": "d", "mount": "m",  # type: ignore[arg-type]
                              "files": [{"path": "x/a.txt", "sha256": sha(A),
                                         "size": len(A)}]}], tmp_path / "in")
    linked = tmp_path / "in" / "m" / "x" / "a.txt"
    assert linked.read_bytes() == A
    assert stat.S_IMODE(linked.stat().st_mode) & 0o222 == 0


def test_corrupt_download_raises_and_leaves_nothing(tmp_path: Path) -> None:
    api = FakeBlobApi({sha(A): b"not what was asked for"})
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(ApiFailed, match="corrupt"):
        cache.get(api, sha(A), len(A))  # type: ignore[arg-type]
    assert not cache.path(sha(A)).exists()
    assert cache_leftovers(cache.root) == []
    assert list(cache.path(sha(A)).parent.iterdir()) == []

    # the next attempt downloads again (and succeeds once the server sends the right bytes)
    api.blobs[sha(A)] = A
    assert cache.get(api, sha(A), len(A)).read_bytes() == A  # type: ignore[arg-type]
    assert len(api.downloads) == 2 and cache.misses == 2 and cache.hits == 0


def test_failed_download_leaves_no_temp_file(tmp_path: Path) -> None:
    api = FakeBlobApi({})
    api.fail = ApiFailed("input: HTTP 404")
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(ApiFailed, match="404"):
        materialize(api, cache, manifest(), tmp_path / "in")  # type: ignore[arg-type]
    assert not cache.path(sha(A)).exists()
    assert cache_leftovers(cache.root) == []


def test_wrong_size_entry_is_fetched_again(tmp_path: Path) -> None:
    api = FakeBlobApi({sha(B): B})
    cache = BlobCache(tmp_path / "cache")
    stale = cache.path(sha(B))
    stale.parent.mkdir(parents=True)
    stale.write_bytes(B[:10])  # a truncated entry (say, from an older runner)
    stale.chmod(0o444)
    assert cache.get(api, sha(B), len(B)).read_bytes() == B  # type: ignore[arg-type]
    assert api.downloads == [sha(B)] and cache.misses == 1


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLOWDER_ML_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("CLOWDER_ML_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "clowder-ml" / "blobs"
