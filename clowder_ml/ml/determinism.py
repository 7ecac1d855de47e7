"""Reproducibility switches and RNG state capture for the trusted training loop.

Contract: after ``setup(seed, threads)`` in a given environment (same library versions,
same hardware kind, same thread count), the same training inputs produce bit-identical
weights. ``rng_state()`` / ``set_rng_state()`` capture and restore every random number
generator the training loop draws from (python ``random``, numpy if installed, torch CPU
and CUDA), as plain ints/floats/tensors in a dict so that a checkpoint holding it can be
written with ``torch.save`` and read back with ``torch.load(..., weights_only=True)``:
no pickle of arbitrary objects is ever needed to resume.
"""

from __future__ import annotations

import os
import random
from typing import Any

import torch

try:  # numpy is optional: torch works without it and the loop does not need it.
    import numpy as np
except ImportError:  # pragma: no cover - numpy is installed in the dev environment
    np = None  # type: ignore[assignment]

# cuBLAS picks non-deterministic reduction kernels unless its workspace is pinned;
# torch.use_deterministic_algorithms(True) raises on CUDA without this setting.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


def seed_all(seed: int) -> None:
    """Seed python ``random``, numpy (if installed) and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    if np is not None:
        # numpy's legacy global generator only accepts 32-bit seeds.
        np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def setup(seed: int, threads: int) -> dict[str, Any]:
    """Make this process deterministic and seed every RNG; return the facts to record.

    Sets ``CUBLAS_WORKSPACE_CONFIG`` (only effective if CUDA was not initialised yet, so
    call this early), turns on ``torch.use_deterministic_algorithms(True)`` (ops with no
    deterministic implementation then raise instead of silently varying), pins cuDNN to
    deterministic non-benchmarked kernels, and fixes the intra-op thread count: float
    reductions split across a different number of threads sum in a different order, so
    the thread count is part of the determinism contract and is recorded.

    The inter-op pool size can only be set once per process and before any parallel work;
    it is set when still possible and otherwise left as is (recorded either way).
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_CONFIG
    seed_all(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.set_num_threads(threads)
    interop_set = True
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        # Already set or parallel work already started: torch refuses a second call.
        interop_set = False
    cuda = torch.cuda.is_available()
    return {
        "seed": seed,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "interop_threads_set": interop_set,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"],
        "torch_version": str(torch.__version__),
        "numpy_version": None if np is None else str(np.__version__),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda_version": torch.version.cuda if cuda else None,
    }


def rng_state() -> dict[str, Any]:
    """Capture all RNG states as a dict of ints, floats, None and tensors.

    The result is safe for ``torch.save`` and loads with ``weights_only=True``: the python
    Mersenne Twister state and numpy's key array are converted to int64 tensors instead of
    being pickled as tuples/ndarrays.
    """
    version, mt, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python_version": int(version),
        "python_mt": torch.tensor(list(mt), dtype=torch.int64),
        "python_gauss_next": gauss_next,
        "torch_cpu": torch.get_rng_state(),
    }
    if np is not None:
        name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        state["numpy"] = {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    if torch.cuda.is_available():
        state["torch_cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states captured by :func:`rng_state` (the exact next draws repeat).

    A numpy or CUDA part present in ``state`` but unavailable here is ignored; a missing
    part leaves that generator untouched.
    """
    mt = tuple(int(x) for x in state["python_mt"].tolist())
    random.setstate((int(state["python_version"]), mt, state["python_gauss_next"]))
    torch.set_rng_state(state["torch_cpu"])
    numpy_state = state.get("numpy")
    if np is not None and numpy_state is not None:
        np.random.set_state(
            (
                numpy_state["name"],
                numpy_state["keys"].numpy().astype(np.uint32),
                int(numpy_state["pos"]),
                int(numpy_state["has_gauss"]),
                float(numpy_state["cached_gaussian"]),
            )
        )
    cuda_states = state.get("torch_cuda")
    if cuda_states is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
