"""JobSpec: strict requests, sizes, bounds, and the Ray reservation it yields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from clowder_ml.engine.spec import JobSpec


def test_defaults_and_reservation() -> None:
    spec = JobSpec.model_validate({"task": "dataset-profile",
                                   "inputs": [{"kind": "dataset", "ref": "reviews"}]})
    assert spec.resources.cpus == 1 and spec.retry.max_retries == 0
    assert spec.entrypoint_resources() == {"entrypoint_num_cpus": 1.0}
    big = JobSpec.model_validate({"task": "fine-tune", "resources": {
        "cpus": 2, "gpus": 1, "memory_bytes": "4G", "workers": 2}})
    assert big.resources.memory_bytes == 4 << 30
    # Two workers: each Ray Train worker reserves cpus/gpus; the runner only the memory.
    assert big.entrypoint_resources() == {"entrypoint_num_cpus": 0.0,
                                          "entrypoint_memory": 4 << 30}
    one = JobSpec.model_validate({"task": "fine-tune", "resources": {"cpus": 2, "gpus": 1}})
    assert one.entrypoint_resources() == {"entrypoint_num_cpus": 2.0, "entrypoint_num_gpus": 1.0}


@pytest.mark.parametrize("body", [
    {"task": "x"},                                          # too short a name
    {"task": "Fine_Tune"},                                  # not a task name
    {"task": "fine-tune", "bogus": 1},                      # unknown field
    {"task": "fine-tune", "resources": {"cpus": 0}},        # no CPUs
    {"task": "fine-tune", "resources": {"gpus": -1}},
    {"task": "fine-tune", "resources": {"memory_bytes": "lots"}},
    {"task": "fine-tune", "timeout_s": 0},
    {"task": "fine-tune", "retry": {"max_retries": 99}},
    {"task": "fine-tune", "inputs": [{"kind": "dataset", "ref": "d", "mount": "../x"}]},
    {"task": "fine-tune", "inputs": [{"kind": "table", "ref": "d"}]},
])
def test_bad_specs_are_refused(body: dict[str, object]) -> None:
    with pytest.raises((ValidationError, ValueError)):
        JobSpec.model_validate(body)
