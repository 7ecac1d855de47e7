"""The training workers' allocator setting keeps freed memory: a step's large buffers are
reused instead of being unmapped and faulted in again."""

from __future__ import annotations

import json
import subprocess
import sys

PROGRAM = """
import json, resource, sys
import torch
from clowder_ml.ml.allocator import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else None
x = torch.ones(256, 256)
def step():  # allocates and frees ~48 MB, as a MiniLM step's embedding gradient does
    return float(torch.zeros(30522, 384).add_(1.0).sum())
for _ in range(5):  # the heap grows to its working size in the first few steps
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before,
                  "tuned": tuned}))
"""


def _faults(mode: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True,
                         text=True, check=True, timeout=120)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_freed_buffers_are_reused_not_faulted_in_again() -> None:
    plain, tuned = _faults("plain"), _faults("tuned")
    assert tuned["tuned"] is True  # glibc took both settings
    # 20 steps x ~12,000 pages without the setting; with it at most about one step's pages
    # (the heap may still grow once).
    assert int(str(plain["faults"])) > 100_000, plain
    assert int(str(tuned["faults"])) < int(str(plain["faults"])) // 10, (plain, tuned)
