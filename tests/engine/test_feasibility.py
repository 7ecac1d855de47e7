"""Impossible resource requests fail fast with a message that names what is missing."""

from __future__ import annotations

import pytest

from clowder_ml.engine.feasibility import check_feasible, shortfalls
from clowder_ml.engine.ray_backend import ClusterResources
from clowder_ml.engine.spec import JobSpec
from clowder_ml.errors import ResourcesUnsatisfiable

LAPTOP = ClusterResources(cpus=2, gpus=0, memory_bytes=24 << 30, nodes=1)


def spec(**resources: object) -> JobSpec:
    return JobSpec.model_validate({"task": "fine-tune", "resources": resources})


def test_feasible_request_passes() -> None:
    check_feasible(spec(cpus=2, memory_bytes="4G"), LAPTOP)
    assert shortfalls(spec(cpus=1), LAPTOP) == []


def test_gpu_on_a_cpu_cluster_names_the_gap() -> None:
    with pytest.raises(ResourcesUnsatisfiable) as info:
        check_feasible(spec(gpus=1), LAPTOP)
    assert "needs 1 GPU; cluster has 0" in info.value.message
    assert info.value.status == 422 and info.value.code == "resources_unsatisfiable"


def test_every_shortfall_is_listed() -> None:
    gaps = shortfalls(spec(cpus=8, gpus=2, memory_bytes="64G"), LAPTOP)
    assert gaps == ["needs 8 CPUs; cluster has 2", "needs 2 GPUs; cluster has 0",
                    "needs 64G of memory; cluster has 24G"]
