"""The publish step: what a successful job's outputs become on the server.

A task declares the kind of outputs its job has (``TaskParams.publishes``, see
:mod:`clowder_ml.tasks.outputs`); this module turns them into registry entries when the runner
reports success: the ``model/`` folder into the next version of ``model_name`` (or, for a
reproduce run, into a verdict), ``predictions.csv`` into a new version of the input dataset.
Every step is idempotent, so a runner retrying its finish call after a lost answer publishes
once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from clowder_ml.db.models import Dataset, Job, JobOutput
from clowder_ml.errors import ValidationFailed
from clowder_ml.registry import lineage, models, reproduction
from clowder_ml.services import datasets
from clowder_ml.storage.blobstore import BlobInfo
from clowder_ml.tasks.outputs import PREDICTIONS_DIR, PREDICTIONS_FILE, Publish
from clowder_ml.tasks.params import TaskParams

if TYPE_CHECKING:
    from clowder_ml.services.platform import Platform

# What a predictions file's metadata in the dataset keeps of the job's result.
_SUMMARY_KEYS = ("model", "rows", "label_counts", "accuracy", "confusion_matrix", "labels")


def publish(s: Session, platform: Platform, job: Job, result: dict[str, Any]
            ) -> dict[str, Any]:
    """Publish the job's outputs as its params declare; returns the result with what was
    made (``model`` or ``predictions``) added. Raises ClowderMLError to fail the job."""
    params = platform.tasks.get(job.task).parse_params(job.spec["params"])
    kind = params.publishes()
    if kind is Publish.MODEL:
        return _publish_model(s, platform, job, params, result)
    if kind is Publish.PREDICTIONS:
        return _publish_predictions(s, platform, job, result)
    return result


def _publish_model(s: Session, platform: Platform, job: Job, params: TaskParams,
                  result: dict[str, Any]) -> dict[str, Any]:
    """Register the job's model folder as the next version of ``model_name`` — or, for a
    reproduce run, compare it with the version it reproduces instead (no new version).
    ``params`` are the job's, parsed (defaults filled in: what compare shows)."""
    reproducing = reproduction.of_job(s, job)
    if reproducing is not None:
        return reproduction.conclude(s, platform, job, reproducing, result)
    name = str(job.spec["params"]["model_name"])
    version = models.register_from_job(s, job, name, result, params.model_dump(mode="json"))
    return {**result, "model": {"name": name, "version": version.number,
                                "ref": models.ref_of(s, version), "digest": version.digest}}


def _publish_predictions(s: Session, platform: Platform, job: Job, result: dict[str, Any]
                        ) -> dict[str, Any]:
    """Add ``predictions.csv`` to the input dataset as a new version, with summary metadata.

    Idempotent: committing the same file again makes no new version.
    """
    out = s.get(JobOutput, (job.id, PREDICTIONS_FILE))
    if out is None:
        raise ValidationFailed("The job produced no predictions file.")
    item = next(i for i in job.spec["inputs"] if i["kind"] == "dataset")
    params = job.spec["params"]
    model_ref = str(result.get("model") or params["model"])
    safe = model_ref.replace(":", "_").replace("/", "-").replace("@", "-")
    path = params.get("output_path") or f"{PREDICTIONS_DIR}{safe}/{job.id}.csv"
    version = datasets.commit_changes(platform.db, item["ref"], job.owner_id,
                                      {path: BlobInfo(out.sha256, out.size)},
                                      message=f"predictions of {model_ref} (job {job.id})")
    ds = s.get(Dataset, item["ref"])
    assert ds is not None
    datasets.set_file_metadata(s, ds, path, {k: result[k] for k in _SUMMARY_KEYS
                                             if k in result})
    lineage.link_output_dataset(s, job, ds.id, version.number)
    return {**result, "predictions": {"dataset": item["ref"], "version": version.number,
                                      "path": path, "sha256": out.sha256}}
