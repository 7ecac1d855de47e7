"""Where a task writes what the server publishes, and what publishing makes of it.

This is the contract between the code that runs in the job (the tasks) and the publish step
on the server (:mod:`clowder_ml.registry.publish`): a task's params say which kind of outputs
the job has (:meth:`clowder_ml.tasks.params.TaskParams.publishes`), the task writes them at
these paths of its outputs folder, and the server turns them into a model version or a new
dataset version when the runner reports success.
"""

from __future__ import annotations

from enum import StrEnum

MODEL_DIR = "model"  # outputs/model/: an HF folder (model.safetensors, config.json, ...)
PREDICTIONS_FILE = "predictions.csv"  # outputs/predictions.csv: one row per input row
PREDICTIONS_DIR = "predictions/"  # where predictions land in a dataset (not training data)


class Publish(StrEnum):
    """What the server makes of a successful job's outputs."""

    # outputs/model/ becomes the next version of the params' ``model_name``
    MODEL = "model"
    # outputs/predictions.csv becomes a new version of the (one) input dataset; the user
    # must be able to write to that dataset, which is checked at submission
    PREDICTIONS = "predictions"
