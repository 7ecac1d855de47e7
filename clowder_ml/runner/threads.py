"""Make the job's math libraries use the CPUs the job reserved, no more, no less.

Ray sizes thread pools only for its own workers; an entrypoint that imports PyTorch gets
PyTorch's default (every core of the node: oversubscribed when several jobs share a node) or,
under some launchers, one thread (a fraction of the speed it reserved). The dispatcher sets
``OMP_NUM_THREADS`` and friends for the job; this applies the same count to PyTorch, which
reads its intra-op count once at import.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def reserved_threads(cpus: float) -> int:
    return max(1, math.floor(cpus))


def configure(cpus: float) -> int:
    """Set the thread count for ``cpus`` (env for this process's later imports and for
    subprocesses; PyTorch at once if already imported); returns it."""
    n = reserved_threads(cpus)
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    # Not imported here (seconds of start-up for tasks that train in a worker process):
    # PyTorch imported later reads OMP_NUM_THREADS; one imported already is set now.
    torch: Any = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n
