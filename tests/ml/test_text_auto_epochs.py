"""text-classification-finetune with its defaults (epochs=auto) in process, on a tiny random
BERT with minilm-l6's tokenizer: it stops by itself, keeps the best epoch, and says why in
the result, metrics.json and the model card; auto without held-out data is refused."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from clowder_ml.errors import ValidationFailed
from clowder_ml.ml import determinism, models
from clowder_ml.tasks.context import InputData, TaskContext
from clowder_ml.tasks.registry import TaskRegistry
from clowder_ml.tasks.text_classification import FinetuneParams
from tests.ml.test_image_models import _Report


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tiny_base(folder: Path) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(models.builtin_dir("minilm-l6"))
    determinism.setup(0, 1)
    BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
        num_labels=2)).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _reviews(folder: Path, n: int = 32) -> Path:
    rng = random.Random(0)
    good, bad = ["great", "lovely", "superb", "moving"], ["awful", "boring", "dull", "slow"]
    lines = ["text,label"]
    for i in range(n):
        pos = i % 2 == 0
        lines.append(f"the film was {rng.choice(good if pos else bad)},{'pos' if pos else 'neg'}")
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_defaults_stop_by_themselves_and_say_why(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from clowder_ml.tasks import text_finetune

    monkeypatch.setenv("CLOWDER_ML_CACHE_DIR", str(tmp_path / "cache" / "blobs"))
    monkeypatch.delenv("CLOWDER_ML_SHARED_DIR", raising=False)
    data = _reviews(tmp_path / "ds")
    base = _tiny_base(tmp_path / "base_model")
    # Patience 2 rather than 5 keeps the test short; the default is checked in
    # test_training_length.
    params = FinetuneParams(model_name="auto", base_model="tiny@1", max_length=16,
                            batch_size=8, learning_rate=1e-3, validation_split=0.25,
                            early_stopping_patience=2)
    assert params.epochs == "auto"
    out = tmp_path / "run" / "outputs"
    out.mkdir(parents=True)
    ctx = TaskContext(job_id="run", params=params, inputs=[
        InputData(kind="dataset", ref="ds_1", version=1, path=data, name="reviews",
                  files=["train.csv"], digests={"train.csv": _sha(data / "train.csv")}),
        InputData(kind="model", ref="mv_1", version=1, path=base, name="tiny@1")],
        outputs_dir=out, work_dir=tmp_path / "run", cpus=1, gpus=0, report=_Report())
    result = text_finetune.run(ctx)
    training = result["training"]
    # 24 training rows in batches of 8: 3 steps an epoch, a ceiling of 20 epochs.
    assert training["reason"] in ("early_stopping", "ceiling"), training
    assert 1 <= training["best_epoch"] <= training["epochs"] <= 20
    assert re.fullmatch(r"(no improvement for 2 epochs|reached the ceiling of 20 epochs); "
                        r"best epoch \d+ of \d+, accuracy [0-9.]+", training["message"])
    assert result["metrics"]["eval_accuracy"] == training["best"]
    assert result["metrics"]["global_step"] == 3 * training["epochs"]
    metrics = json.loads((out / "model" / "metrics.json").read_text())
    assert metrics["training"] == training
    card = (out / "model" / "README.md").read_text()
    assert "epochs=auto (at most 20 epochs" in card and "patience 2" in card
    assert f"Stopped: {training['message']}" in card
    report = ctx.report
    assert isinstance(report, _Report)
    # A short run under the default checkpoint_every_minutes writes none, and says so.
    assert f"training stopped: {training['message']} (no checkpoint was due)" in report.events
    assert result["checkpoints"]["written"] == 0


def test_auto_needs_held_out_data() -> None:
    ft = TaskRegistry().get("text-classification-finetune")
    with pytest.raises(ValidationFailed, match="epochs=auto chooses the length on held-out"):
        ft.parse_params({"model_name": "m", "validation_split": 0})
    assert ft.parse_params({"model_name": "m", "validation_split": 0, "epochs": 2})
    assert ft.parse_params({"model_name": "m", "validation_split": 0,
                            "validation_file": "val.csv"})
