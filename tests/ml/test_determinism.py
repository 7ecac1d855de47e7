"""determinism.setup flags and RNG state capture/restore."""

from __future__ import annotations

import io
import os
import random

import numpy as np
import torch

from clowder_ml.ml import determinism


def _draws() -> tuple[list[float], list[float], list[float], float]:
    return (
        [random.random() for _ in range(5)],
        np.random.rand(5).tolist(),
        torch.rand(5).tolist(),
        random.gauss(0.0, 1.0),
    )


def test_setup_sets_flags_and_reports_them() -> None:
    facts = determinism.setup(123, 1)
    assert facts["seed"] == 123
    assert facts["threads"] == 1 == torch.get_num_threads()
    assert torch.are_deterministic_algorithms_enabled()
    assert facts["deterministic_algorithms"] is True
    assert torch.backends.cudnn.deterministic is True
    assert torch.backends.cudnn.benchmark is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert facts["torch_version"] == torch.__version__
    assert facts["device"] == ("cpu" if not torch.cuda.is_available() else facts["device"])
    assert isinstance(facts["interop_threads_set"], bool)
    # Same seed -> same draws from every generator.
    first = _draws()
    determinism.setup(123, 1)
    assert _draws() == first


def test_rng_state_round_trip_through_weights_only_load() -> None:
    determinism.setup(7, 1)
    random.gauss(0.0, 1.0)  # leaves a cached gaussian in python's state
    np.random.standard_normal()  # and in numpy's
    buf = io.BytesIO()
    torch.save(determinism.rng_state(), buf)
    expected = _draws()
    # Disturb everything, then restore from the serialized form.
    determinism.seed_all(999)
    _draws()
    buf.seek(0)
    determinism.set_rng_state(torch.load(buf, weights_only=True))
    assert _draws() == expected


def test_rng_state_contains_only_plain_values() -> None:
    state = determinism.rng_state()

    def check(v: object) -> None:
        if isinstance(v, dict):
            for x in v.values():
                check(x)
        elif isinstance(v, list):
            for x in v:
                check(x)
        else:
            assert v is None or isinstance(v, (int, float, str, torch.Tensor)), type(v)

    check(state)
