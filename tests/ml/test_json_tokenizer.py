"""The runner's tokenizer for built-in base models gives what AutoTokenizer gives."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from clowder_ml.ml.json_tokenizer import JsonTokenizer
from clowder_ml.ml.models import builtin_dir

TEXTS = [
    "A great movie.", "THE WORST   meal, ever!!", "Café naïve résumé — Ünïcödé", "日本語の文章です",
    "emoji 🙂👍 and tabs\tand\nnewlines", "x", "  leading and trailing  ", "don't can't won't",
    "http://example.com/a?b=c&d=e", "numbers 3.14159 1,000,000 42nd",
    " ".join(["long"] * 700),  # past every max_length
]


def _random_texts(n: int) -> list[str]:
    rng = random.Random(5)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"-éüßñ中文"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300))) for _ in range(n)]


@pytest.mark.parametrize("name", ["minilm-l6"])
@pytest.mark.parametrize(("truncation", "padding", "max_length"), [
    (True, False, 64), (True, False, 8), (True, "max_length", 32), (False, False, 512),
    (True, False, 512),
])
def test_same_ids_and_masks_as_autotokenizer(name: str, truncation: bool,
                                             padding: str | bool, max_length: int) -> None:
    folder = builtin_dir(name)
    ours, theirs = JsonTokenizer(folder), AutoTokenizer.from_pretrained(folder)
    texts = TEXTS + _random_texts(200)
    # A second call with other settings must not leak into this one.
    ours(texts[:3], truncation=not truncation, max_length=16,
         padding="max_length" if padding is False else False)
    got = ours(texts, truncation=truncation, max_length=max_length, padding=padding)
    want = theirs(texts, truncation=truncation, max_length=max_length, padding=padding)
    assert got["input_ids"] == want["input_ids"]
    assert got["attention_mask"] == want["attention_mask"]
    assert ours.pad_token_id == theirs.pad_token_id
