"""Make the job's math libraries use the CPUs the job reserved, no more, no less.

Ray sizes thread pools only for its own workers; an entrypoint that imports PyTorch gets
PyTorch's default (every core of the node: oversubscribed when several jobs share a node) or,
under some launchers, one thread (a fraction of the speed it reserved). The dispatcher sets
``OMP_NUM_THREADS`` and friends for the job; this applies the same count to PyTorch, which
reads its intra-op count once at import.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from typing import Any

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def reserved_threads(cpus: float) -> int:
    return max(1, math.floor(cpus))


def configure(cpus: float) -> int:
    """Set the thread count for ``cpus`` (env for subprocesses, PyTorch if importable);
    returns it."""
    n = reserved_threads(cpus)
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    torch: Any = sys.modules.get("torch")
    if torch is None:
        try:
            torch = importlib.import_module("torch")
        except ImportError:
            return n
    torch.set_num_threads(n)
    return n
