"""Inputs on local disk: each file fetched once per node into a cache keyed by its sha256,
then linked into the job's work folder under ``inputs/<mount>/<path>``.

A cached file is trusted only if its content hashes to its name: downloads go to a temp file
that is verified before it is renamed into place, so a crash or a corrupt transfer never
leaves a bad cache entry, and concurrent jobs on one node may fetch the same blob safely.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clowder_ml.runner.api import ApiFailed, RunnerApi
from clowder_ml.tasks.context import InputData


def default_cache_dir() -> Path:
    env = os.environ.get("CLOWDER_ML_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clowder-ml" / "blobs"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class BlobCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits = 0
        self.misses = 0

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def get(self, api: RunnerApi, sha256: str, size: int) -> Path:
        """The cached file for ``sha256``, downloading and verifying it on a miss."""
        dest = self.path(sha256)
        if dest.is_file() and dest.stat().st_size == size:
            self.hits += 1
            return dest
        self.misses += 1
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            api.download_blob(sha256, tmp)
            got = _sha256(tmp)
            if got != sha256:
                raise ApiFailed(f"input {sha256[:12]} arrived corrupt (sha256 {got[:12]})")
            os.chmod(tmp, 0o444)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system: a symlink to the read-only cached copy
        dst.symlink_to(src)


def materialize(api: RunnerApi, cache: BlobCache, inputs: list[dict[str, Any]], root: Path,
                progress: Callable[[int, int, str], None] | None = None) -> list[InputData]:
    """Fetch every input file (cache first) and lay them out under ``root``."""
    total = sum(len(i["files"]) for i in inputs)
    done = 0
    out: list[InputData] = []
    for index, item in enumerate(inputs):
        folder = root / (item.get("mount") or f"input-{index}")
        paths: list[str] = []
        for f in item["files"]:
            _link(cache.get(api, f["sha256"], int(f["size"])), folder / f["path"])
            paths.append(f["path"])
            done += 1
            if progress is not None:
                progress(done, total, f["path"])
        folder.mkdir(parents=True, exist_ok=True)
        out.append(InputData(kind=item["kind"], ref=item["ref"], version=item.get("version"),
                             path=folder, files=paths, name=item.get("name") or item["ref"],
                             digests={f["path"]: f["sha256"] for f in item["files"]}))
    return out
