"""A model version as Clowder gets it: one zip file in a Clowder dataset, with metadata.

The zip holds the version's Hugging Face folder as registered (``model.safetensors``,
``config.json``, tokenizer files and the ``README.md`` model card); the dataset metadata
next to it names the version, its metrics, params and lineage, under the extractor's JSON-LD
context. Used by the extractors' write-back and by ``clowder-ml models export REF
--to-clowder DATASET_ID``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from clowder_ml import __version__
from clowder_ml.clowder.extractor_info import metadata_context
from clowder_ml.clowder.rest import ClowderApi, ClowderNotConfigured
from clowder_ml.db.models import ModelVersion, User
from clowder_ml.registry import lineage, models
from clowder_ml.services import files
from clowder_ml.services.platform import Platform

WRITTEN_PREFIX = "clowder-ml-"  # names of the files this connector adds to Clowder
EXPORT_LISTENER = "clowder-ml.export"  # who Clowder shows wrote an exported model's metadata


def model_zip_name(name: str, number: int) -> str:
    return f"{WRITTEN_PREFIX}model-{name}-v{number}.zip"


def write_model_zip(platform: Platform, s: Session, version: ModelVersion, dest: Path) -> Path:
    """The version's folder (and model card) zipped at ``dest``."""
    entries = [(f.path, f.sha256) for f in models.files(s, version)]
    with dest.open("wb") as fh:
        for chunk in files.stream_zip(platform.blobs, entries):
            fh.write(chunk)
    return dest


def model_metadata(s: Session, user: User, version: ModelVersion) -> dict[str, Any]:
    """What Clowder's metadata says of a version (the ``model`` and ``lineage`` terms)."""
    model = models.model_of(s, version)
    return {"name": model.name, "version": version.number, "ref": models.ref_of(s, version),
            "digest": version.digest, "task": version.task, "base_model": version.base_model,
            "metrics": version.metrics, "params": version.params,
            "created": version.created_at.isoformat(),
            "lineage": lineage.version_lineage(s, user, version)}


def export_to_clowder(platform: Platform, user: User, ref: str, dataset_id: str, key: str,
                      *, transport: Any = None) -> dict[str, Any]:
    """Upload version ``ref`` (which ``user`` may read) into Clowder dataset ``dataset_id``
    as the owner of ``key``, on the Clowder this server is configured for; the uploaded
    file and metadata."""
    url = platform.settings.clowder_url
    if not url:
        raise ClowderNotConfigured("This server is not connected to a Clowder instance.",
                                   "Set CLOWDER_ML_CLOWDER_URL on the server.")
    with platform.db.session() as s, ClowderApi(url, key, transport=transport) as api:
        version = models.resolve(s, user, ref)
        model = models.model_of(s, version)
        name = model_zip_name(model.name, version.number)
        with tempfile.TemporaryDirectory(dir=platform.settings.tmp_dir) as tmp:
            uploaded = api.upload(dataset_id, write_model_zip(platform, s, version,
                                                              Path(tmp) / name), name)
        content = {"model": {**model_metadata(s, user, version),
                             "file_id": uploaded.get("id"), "file": name}}
        meta = api.add_dataset_metadata(
            dataset_id, content, [metadata_context(version.task or "model")],
            {"name": EXPORT_LISTENER, "version": __version__,
             "description": "A clowder-ml model version exported by its user"})
        return {"clowder_url": url, "dataset_id": dataset_id, "file_id": uploaded.get("id"),
                "file": name, "bytes": uploaded.get("bytes"), "metadata_id": meta.get("id"),
                "model": models.ref_of(s, version)}
