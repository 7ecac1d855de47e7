"""Image models: the small CNN as a Hugging Face folder, base model checks, bit-identical
training, and fine-tune -> predict in process (the worker as a real child process)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from clowder_ml.errors import ValidationFailed
from clowder_ml.ml import image_models, image_worker, imagedata, textdata
from clowder_ml.tasks.context import InputData, TaskContext
from clowder_ml.tasks.image_classification import (
    DEFAULT_BASE_MODEL,
    DEFAULT_LEARNING_RATES,
    ImageFinetuneParams,
    ImagePredictParams,
)
from clowder_ml.tasks.registry import BUILTIN_MODELS, TaskRegistry
from tests.ml.test_imagedata import BLUE, RED, png, red_blue, write


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_small_cnn_is_a_safetensors_hf_folder_loaded_by_its_own_class(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = image_models.new_small_cnn(["blue", "red"], 16)
    model.save_pretrained(tmp_path, safe_serialization=True)
    image_models.write_preprocessor_config(tmp_path, image_models.Preprocessing(16))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json"]
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == \
        "clowder-small-cnn"
    loaded, id2label = image_models.load_classifier(tmp_path)
    assert id2label == {0: "blue", 1: "red"}
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        assert torch.equal(loaded(pixel_values=x).logits, model.eval()(pixel_values=x).logits)
    assert image_models.read_preprocessing(tmp_path, None, "m").size == 16


def test_new_small_cnns_have_batch_norm_and_older_saved_ones_load_without(tmp_path: Path
                                                                         ) -> None:
    torch.manual_seed(0)
    model = image_models.new_small_cnn(["blue", "red"], 16)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 3
    model.save_pretrained(tmp_path / "new", safe_serialization=True)
    assert json.loads((tmp_path / "new/config.json").read_text())["batch_norm"] is True
    # A folder saved before batch norm existed: its config has no such key.
    old = image_models.SmallCnnForImageClassification(image_models.SmallCnnConfig(
        image_size=16, id2label={0: "blue", 1: "red"}, label2id={"blue": 0, "red": 1}))
    old.save_pretrained(tmp_path / "old", safe_serialization=True)
    config = json.loads((tmp_path / "old/config.json").read_text())
    config.pop("batch_norm")
    (tmp_path / "old/config.json").write_text(json.dumps(config))
    for name in ("new", "old"):
        image_models.write_preprocessor_config(tmp_path / name, image_models.Preprocessing(16))
    loaded_old, _ = image_models.load_classifier(tmp_path / "old")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded_old.modules())
    loaded_new, _ = image_models.load_classifier(tmp_path / "new")
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        assert torch.equal(loaded_new(pixel_values=x).logits,
                           model.eval()(pixel_values=x).logits)
        assert torch.equal(loaded_old(pixel_values=x).logits, old.eval()(pixel_values=x).logits)


def test_base_model_checks(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    with pytest.raises(ValidationFailed, match=re.escape("no config.json")):
        image_models.check_image_model(folder, "base model 'x'")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValidationFailed, match="only pickle-based weights"):
        image_models.check_image_model(folder, "base model 'x'")
    (folder / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ValidationFailed, match="'bert' model, which cannot classify images"):
        image_models.check_image_model(folder, "base model 'x'")
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValidationFailed, match=re.escape("no preprocessor_config.json")):
        image_models.check_image_model(folder, "base model 'x'")


def test_tasks_are_registered_and_built_in_bases_are_not_pinned() -> None:
    reg = TaskRegistry()
    ft = reg.get("image-classification-finetune")
    assert reg.get("image-classification-predict").model_params == ("model",)
    p = ft.parse_params({"model_name": "m"})
    assert isinstance(p, ImageFinetuneParams) and p.base_model == DEFAULT_BASE_MODEL
    assert p.epochs == "auto" and p.image_size is None and p.learning_rate is None
    assert ft.model_params == ("base_model",)
    assert {"small-cnn", "efficientnet-lite0", "auto"} <= BUILTIN_MODELS
    assert p.learning_rate_for("small-cnn") == DEFAULT_LEARNING_RATES["small-cnn"]
    assert p.learning_rate_for("vit@3") == 5e-5
    assert ft.parse_params({"model_name": "m", "learning_rate": 0.1}
                           ).learning_rate_for("vit@3") == 0.1
    # auto: small-cnn for tiny images, the pretrained backbone otherwise (and when unknown).
    from clowder_ml.tasks.image_finetune import choose_base

    assert DEFAULT_BASE_MODEL == "auto"
    assert {choose_base("auto", s) for s in (8, 32, 33, 224, None)} == {"efficientnet-lite0"}
    assert choose_base("small-cnn", 500) == "small-cnn"
    assert choose_base("vit@latest", 8) == "vit@latest"
    p = ft.parse_params({"model_name": "m", "base_model": "vit@latest"})
    assert [getattr(p, n) for n in ft.model_params] == ["vit@latest"]
    with pytest.raises(ValidationFailed, match="nope"):
        ft.parse_params({"model_name": "m", "nope": 1})


def _config(tmp_path: Path, root: Path, run: str) -> dict[str, Any]:
    ex = imagedata.folder_examples(root)[0]
    labels = textdata.label_mapping(ex.labels or [])
    data = imagedata.decode_to_cache(root, ex, labels, 16, tmp_path / "cache", "k")
    return {"base_dir": None, "labels": sorted(labels), "seed": 5, "threads": 1,
            "augment": True, "image_size": 16, "image_mean": [0.5] * 3,
            "image_std": [0.5] * 3, "train_data": str(data), "eval_data": str(data),
            "checkpoint_dir": str(tmp_path / run / "ckpt"),
            "output_dir": str(tmp_path / run / "out"), "total_steps": 4,
            "train_params": {"epochs": 2, "batch_size": 4, "max_steps": 4,
                             "learning_rate": 1e-2, "seed": 5, "checkpoint_every_steps": 2,
                             "log_every_steps": 1}}


def test_training_is_bit_identical(tmp_path: Path) -> None:
    root = write(tmp_path / "ds", red_blue(6))
    first = image_worker.train_worker(_config(tmp_path, root, "a"))
    second = image_worker.train_worker(_config(tmp_path, root, "b"))
    assert first["global_step"] == second["global_step"] == 4
    assert _sha(tmp_path / "a/out/model.safetensors") == \
        _sha(tmp_path / "b/out/model.safetensors")
    assert first["history"] == second["history"]
    assert (tmp_path / "a/out/preprocessor_config.json").is_file()


@dataclass
class _Report:
    events: list[str] = field(default_factory=list)

    def event(self, message: str) -> None:
        self.events.append(message)

    def metric(self, step: int, name: str, value: float) -> None:
        pass

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        pass


def _ctx(tmp_path: Path, root: Path, params: Any, name: str, model: Path | None = None
         ) -> TaskContext:
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    inputs = [InputData(kind="dataset", ref="ds_1", version=1, path=root, name="pics",
                        files=files, digests={f: _sha(root / f) for f in files})]
    if model is not None:
        inputs.append(InputData(kind="model", ref="mv_1", version=1, path=model, name="m@1"))
    out = tmp_path / name / "outputs"
    out.mkdir(parents=True)
    return TaskContext(job_id=name, params=params, inputs=inputs, outputs_dir=out,
                       work_dir=tmp_path / name, cpus=1, gpus=0, report=_Report())


def test_finetune_then_predict_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    from clowder_ml.tasks import image_finetune, image_predict

    monkeypatch.setenv("CLOWDER_ML_CACHE_DIR", str(tmp_path / "cache" / "blobs"))
    monkeypatch.delenv("CLOWDER_ML_SHARED_DIR", raising=False)
    root = write(tmp_path / "ds", red_blue(8))
    params = ImageFinetuneParams(model_name="colors", base_model="small-cnn", image_size=16,
                                 epochs=2, max_steps=6, batch_size=4, learning_rate=1e-2,
                                 validation_split=0.25)
    result = image_finetune.run(_ctx(tmp_path, root, params, "ft"))
    assert result["labels"] == ["blue", "red"] and result["metrics"]["global_step"] == 6
    assert result["training"]["reason"] == "max_steps"
    assert result["train_examples"] == 12 and result["eval_examples"] == 4
    model = tmp_path / "ft/outputs/model"
    for name in ("model.safetensors", "config.json", "preprocessor_config.json",
                 "manifest.json", "metrics.json", "clowder_ml.json", "README.md"):
        assert (model / name).is_file(), name
    assert _sha(model / "model.safetensors") == result["digest"]
    assert list((tmp_path / "cache" / "decoded-images").glob("*.u8"))

    pred = image_predict.run(_ctx(tmp_path, root, ImagePredictParams(model="colors@latest"),
                                  "pr", model))
    assert pred["rows"] == 16 and pred["accuracy"] is not None
    assert len(pred["confusion_matrix"]) == 2
    rows = list(csv.DictReader((tmp_path / "pr/outputs/predictions.csv").open()))
    assert list(rows[0]) == ["id", "input", "predicted", "score", "score_blue", "score_red"]
    assert rows[0]["id"] == "blue/0.png"


def test_finetune_fails_before_training_on_a_bad_image(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from clowder_ml.tasks import image_finetune

    monkeypatch.setenv("CLOWDER_ML_CACHE_DIR", str(tmp_path / "cache" / "blobs"))
    root = write(tmp_path / "ds", {"red/0.png": png(RED), "red/1.png": b"not an image",
                                   "blue/0.png": png(BLUE), "blue/1.png": png(BLUE)})
    ctx = _ctx(tmp_path, root, ImageFinetuneParams(model_name="x", base_model="small-cnn",
                                                   epochs=1, validation_split=0), "bad")
    with pytest.raises(ValidationFailed, match=re.escape("image 'red/1.png' cannot be decoded")):
        image_finetune.run(ctx)
    report = ctx.report
    assert isinstance(report, _Report)
    assert not any(e.startswith("training ") for e in report.events)


def test_a_registered_hf_image_model_is_fine_tuned_with_its_preprocessing(tmp_path: Path
                                                                          ) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    base = tmp_path / "vit"
    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(
        image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_labels=3)).save_pretrained(
        base, safe_serialization=True)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.1, 0.2, 0.3]
                      ).save_pretrained(base)
    prep = image_models.read_preprocessing(base, None, "base model")
    assert prep.size == 16 and prep.mean == (0.1, 0.2, 0.3)
    root = write(tmp_path / "ds", red_blue(4))
    config = {**_config(tmp_path, root, "vit-run"), "base_dir": str(base),
              "image_mean": list(prep.mean), "image_std": list(prep.std)}
    result = image_worker.train_worker(config)
    assert result["global_step"] == 4
    model, id2label = image_models.load_classifier(tmp_path / "vit-run/out")
    assert id2label == {0: "blue", 1: "red"} and model.config.model_type == "vit"


def test_defaults_fine_tune_the_pretrained_backbone_at_the_images_own_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults fine-tune the built-in efficientnet-lite0 at the images' own size (80 px,
    within 64-224), with its learning rate, and a manifest naming the weights' source."""
    from clowder_ml.ml import efficientnet_lite
    from clowder_ml.tasks import image_finetune

    monkeypatch.setenv("CLOWDER_ML_CACHE_DIR", str(tmp_path / "cache" / "blobs"))
    monkeypatch.delenv("CLOWDER_ML_SHARED_DIR", raising=False)
    files = {f"{c}/{i}.png": png(rgb, size=80) for c, rgb in (("red", RED), ("blue", BLUE))
             for i in range(4)}
    root = write(tmp_path / "ds", files)
    params = ImageFinetuneParams(model_name="pretrained", max_steps=2, batch_size=4,
                                 validation_split=0.25)
    result = image_finetune.run(_ctx(tmp_path, root, params, "ft"))
    assert (result["base_model"], result["image_size"]) == ("efficientnet-lite0", 80)
    assert result["learning_rate"] == DEFAULT_LEARNING_RATES["efficientnet-lite0"]
    assert result["training"]["reason"] == "max_steps"
    model = tmp_path / "ft/outputs/model"
    loaded, id2label = image_models.load_classifier(model)
    assert id2label == {0: "blue", 1: "red"}
    assert loaded.config.model_type == efficientnet_lite.MODEL_TYPE
    manifest = json.loads((model / "manifest.json").read_text())
    assert {"kind": "builtin", "ref": "efficientnet-lite0",
            "source": efficientnet_lite.SOURCE_PACKAGE,
            "sha256": efficientnet_lite.SOURCE_SHA256} in manifest["inputs"]
    assert "fine-tuned from `efficientnet-lite0`" in (model / "README.md").read_text()
    # The converted backbone is cached on the node for the next job.
    assert list((tmp_path / "cache" / "builtin-models").glob("efficientnet-lite0-*"))
