"""A model folder must be safe to load (safetensors only) and of the right kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clowder_ml.errors import ValidationFailed
from clowder_ml.ml.models import builtin_dir, check_text_model


def folder(tmp_path: Path, config: dict[str, object] | None, files: dict[str, bytes]) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_the_builtin_model_passes() -> None:
    assert check_text_model(builtin_dir("minilm-l6"), "base model")["model_type"] == "bert"


def test_pickle_weights_are_refused_with_how_to_convert(tmp_path: Path) -> None:
    path = folder(tmp_path, {"model_type": "bert"},
                  {"pytorch_model.bin": b"\x80\x04pickle", "vocab.txt": b"[PAD]\n"})
    with pytest.raises(ValidationFailed) as err:
        check_text_model(path, "base model 'x'")
    assert "pytorch_model.bin" in err.value.message and "pickle" in err.value.message
    assert err.value.hint and "safe_serialization=True" in err.value.hint


@pytest.mark.parametrize(("config", "files", "words"), [
    (None, {"model.safetensors": b""}, "no config.json"),
    ({"model_type": "bert"}, {"vocab.txt": b""}, "no model.safetensors"),
    ({"model_type": "vit"}, {"model.safetensors": b"", "vocab.txt": b""}, "cannot classify text"),
    ({"model_type": "bert"}, {"model.safetensors": b""}, "no tokenizer"),
])
def test_wrong_folders_are_refused_naming_the_problem(tmp_path: Path, config: dict[str, object]
                                                      | None, files: dict[str, bytes],
                                                      words: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        check_text_model(folder(tmp_path, config, files), "base model 'x'")
    assert words in err.value.message and "base model 'x'" in err.value.message
