"""Tokenize with a model folder's ``tokenizer.json`` and the ``tokenizers`` library alone.

The runner tokenizes a fine-tune's data while the training worker imports PyTorch and
transformers on the other CPU. ``AutoTokenizer`` would make the runner import transformers
(and PyTorch) as well: ~2 s of CPU taken from the worker's start on a 2-CPU node. This
loads in ~30 ms and gives the same ids and masks as ``AutoTokenizer`` for the folders it is
used on: the built-in base models, whose equality is tested
(``tests/ml/test_json_tokenizer.py``). A folder of unknown origin keeps ``AutoTokenizer``:
some transformers tokenizer classes adjust the backend when they load (normalizer,
pre-tokenizer), which a bare ``tokenizer.json`` would miss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

TOKENIZER_FILE = "tokenizer.json"


class JsonTokenizer:
    """``tokenizer(texts, truncation=..., max_length=..., padding=...)`` with the contract of
    a transformers fast tokenizer called the same way on a list of texts (special tokens
    added): ``{"input_ids": [[int]], "attention_mask": [[int]]}``. ``pad_token_id`` as
    transformers names it."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        pad = config.get("pad_token")
        pad_token = pad.get("content") if isinstance(pad, dict) else pad
        self.pad_token: str | None = pad_token
        self.pad_token_id: int | None = (self._tok.token_to_id(pad_token)
                                         if pad_token else None)

    def __call__(self, texts: list[str], *, truncation: bool, max_length: int,
                 padding: Literal["max_length"] | bool) -> dict[str, list[list[int]]]:
        tok = self._tok
        # Set both every call: a tokenizer.json may carry its own (all-MiniLM-L6-v2's pads
        # and truncates to 128), which transformers also replaces per call.
        if truncation:
            tok.enable_truncation(max_length, stride=0, strategy="longest_first",
                                  direction="right")
        else:
            tok.no_truncation()
        if padding == "max_length":
            if self.pad_token is None or self.pad_token_id is None:
                raise ValueError("padding to max_length needs a pad token")
            tok.enable_padding(direction="right", pad_id=self.pad_token_id,
                               pad_token=self.pad_token, length=max_length)
        else:
            tok.no_padding()
        encodings = tok.encode_batch(texts, add_special_tokens=True)
        return {"input_ids": [e.ids for e in encodings],
                "attention_mask": [e.attention_mask for e in encodings]}
