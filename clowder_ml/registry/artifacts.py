"""Model versions as files: export into a dataset, import an external Hugging Face folder.

Both move no bytes: files are content-addressed blobs, so an export is a new dataset version
that names the model's blobs, and an import registers a dataset folder's blobs as a model
version. Downloads (a streamed zip) are in the router, over ``services.files.stream_zip``.

An imported folder must be loadable without running code: ``config.json`` plus safetensors
weights whose header parses. Pickle-based weights (``.bin``, ``.pt``, ...) are never taken:
a folder that has only those is refused with the command that converts them; next to
safetensors they are left out (and listed as skipped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy.orm import Session

from clowder_ml.db.models import Dataset, DatasetVersion, Model, ModelVersion, User
from clowder_ml.db.session import Database
from clowder_ml.errors import UnusableContent
from clowder_ml.ml.models import CONVERT_HINT, PICKLE_SUFFIXES, is_safetensors
from clowder_ml.registry import models
from clowder_ml.services import datasets
from clowder_ml.storage.blobstore import BlobInfo, LocalBlobStore


def export_to_dataset(s: Session, db: Database, user: User, version: ModelVersion,
                      ds: Dataset, prefix: str) -> DatasetVersion:
    """Add the version's files under ``prefix`` in ``ds`` (a new dataset version), with the
    model's reference, digest, metrics and lineage as metadata on its model.safetensors."""
    ref = models.ref_of(s, version)
    pre = prefix.strip("/")
    rows = models.files(s, version)
    adds = {f"{pre}/{f.path}" if pre else f.path: BlobInfo(f.sha256, f.size) for f in rows}
    new = datasets.commit_changes(db, ds.id, user.id, adds, message=f"export of {ref}")
    s.refresh(ds)  # the commit ran in its own transaction: latest_version moved
    weights = f"{pre}/model.safetensors" if pre else "model.safetensors"
    datasets.set_file_metadata(s, ds, weights, {
        "model": ref, "digest": version.digest, "task": version.task,
        "base_model": version.base_model, "metrics": version.metrics,
        "source_job": version.job_id})
    return new


@dataclass(frozen=True)
class Imported:
    version: ModelVersion
    skipped: list[str]


def check_safetensors_header(blobs: LocalBlobStore, sha256: str, name: str) -> None:
    """Refuse a file that is not safetensors (size-prefixed JSON header)."""
    with blobs.open(sha256) as fh:
        ok = is_safetensors(fh, blobs.path(sha256).stat().st_size)
    if not ok:
        raise UnusableContent(f"{name} is not a safetensors file (its header does not parse).",
                              "Save the weights with save_pretrained(..., "
                              "safe_serialization=True).")


def import_folder(s: Session, blobs: LocalBlobStore, user: User, ds: Dataset,
                  number: int | None, folder: str, name: str, description: str = ""
                  ) -> Imported:
    """Register the HF folder ``folder`` of dataset ``ds`` (version ``number``, latest when
    None) as the next version of the user's model ``name`` (``source`` = import)."""
    version = datasets.get_version(s, ds, number)
    if version is None:
        raise UnusableContent(f"Dataset {ds.name!r} has no files yet.")
    pre = folder.strip("/")
    rows = datasets.files(s, ds, version.number, prefix=pre or None)
    rel = {f.path[len(pre) + 1:] if pre else f.path: f for f in rows}
    where = f"{ds.name}:{pre or '/'} (version {version.number})"
    if not rel:
        raise UnusableContent(f"There are no files in {where}.",
                              "Name the folder that holds config.json and the weights.")
    if "config.json" not in rel:
        raise UnusableContent(f"{where} has no config.json, so it is not a Hugging Face "
                              "model folder.", "Upload the folder save_pretrained() wrote.")
    pickles = sorted(p for p in rel if PurePosixPath(p).suffix in PICKLE_SUFFIXES)
    weights = sorted(p for p in rel if p.endswith(".safetensors"))
    if not weights:
        if pickles:
            raise UnusableContent(f"{where} has only pickle-based weights ({pickles[0]}); "
                                  "they are refused because loading them can run code.",
                                  CONVERT_HINT)
        raise UnusableContent(f"{where} has no model.safetensors.",
                              "Upload the weights saved with safe_serialization=True.")
    if "model.safetensors" not in rel:
        raise UnusableContent(f"{where} has {weights[0]} but no model.safetensors.",
                              "Sharded weights are not supported yet: save with "
                              "max_shard_size large enough for one file.")
    try:
        config: Any = json.loads(blobs.path(rel["config.json"].sha256).read_bytes())
    except (OSError, ValueError) as exc:
        raise UnusableContent(f"{where}: config.json is not valid JSON ({exc}).") from None
    if not isinstance(config, dict) or not config.get("model_type"):
        raise UnusableContent(f"{where}: config.json names no model_type.",
                              "Upload the config.json that save_pretrained() wrote.")
    for w in weights:
        check_safetensors_header(blobs, rel[w].sha256, w)
    kept = [(p, f.sha256, f.size) for p, f in sorted(rel.items()) if p not in pickles]
    model: Model = models.model_for_new_version(s, user.id, name)
    new = models.add_version(
        s, model, kept, source="import", task="", base_model=str(config["model_type"]),
        inputs={"inputs": [{"kind": "dataset", "ref": ds.id, "version": version.number,
                            "path": pre, "mount": ds.name}]},
        description=description or f"imported from {where}")
    return Imported(version=new, skipped=pickles)
