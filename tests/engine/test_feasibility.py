"""Impossible resource requests fail fast with a message that names what is missing."""

from __future__ import annotations

import pytest

from clowder_ml.engine.capacity import capacity
from clowder_ml.engine.feasibility import check_feasible, shortfalls
from clowder_ml.engine.ray_backend import ClusterResources, NodeResources
from clowder_ml.engine.spec import JobSpec
from clowder_ml.errors import ResourcesUnsatisfiable
from clowder_ml.settings import RayNodeType

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


# The ceiling of an autoscaling cluster ------------------------------------------------------

HEAD = NodeResources(node_id="h", is_head=True, cpus=1, gpus=0, memory_bytes=4 << 30)
TYPES = {
    "cpu": RayNodeType(resources={"CPU": 4, "memory": 16 << 30}, max_workers=3),
    "gpu": RayNodeType(resources={"CPU": 8, "GPU": 1, "memory": 32 << 30}, max_workers=2),
    "off": RayNodeType(resources={"CPU": 64}, max_workers=0),  # never added: no capacity
}


def test_an_autoscaling_cluster_accepts_what_it_can_grow_into() -> None:
    cap = capacity([HEAD], TYPES)
    assert cap.autoscaling and cap.now.cpus == 1
    # head 1 + 3 x 4 + 2 x 8 CPUs; 2 GPUs; 4G + 3 x 16G + 2 x 32G.
    assert (cap.most.cpus, cap.most.gpus, cap.most.memory_bytes) == (29, 2, 116 << 30)
    check_feasible(spec(cpus=4, memory_bytes="16G"), cap)  # one cpu node
    check_feasible(spec(cpus=8, gpus=1), cap)  # one gpu node, none up now
    check_feasible(spec(cpus=4, workers=3), cap)  # three cpu nodes
    check_feasible(spec(cpus=2, gpus=1, workers=2), cap)  # both gpu nodes


def test_beyond_the_ceiling_is_refused_naming_what_it_can_grow_to() -> None:
    cap = capacity([HEAD], TYPES)
    with pytest.raises(ResourcesUnsatisfiable) as info:
        check_feasible(spec(gpus=3), cap)
    assert "needs 3 GPUs; cluster can grow to 2 (has 0 now)" in info.value.message
    assert "max_workers" in (info.value.hint or "")
    assert shortfalls(spec(cpus=4, workers=8), cap) == [
        "needs 32 CPUs (8 workers x 4); cluster can grow to 29 (has 1 now)"]


def test_each_process_must_fit_on_one_node() -> None:
    cap = capacity([HEAD], TYPES)
    # 9 CPUs fit the cluster's total but no node has 9: Ray would hold it forever.
    gaps = shortfalls(spec(cpus=9), cap)
    assert len(gaps) == 1 and gaps[0].startswith(
        "the job's process needs 9 CPUs on one node; no node has that (head: 1 CPU"), gaps
    assert "gpu: 8 CPUs, 1 GPU, 32G of memory" in gaps[0]
    assert shortfalls(spec(cpus=2, gpus=1, memory_bytes="40G"), cap)[0].startswith(
        "the job's process needs 2 CPUs, 1 GPU, 40G of memory on one node")
    # Workers: each on one node, as many per node as fit. 5 CPUs: one per gpu node (8).
    assert shortfalls(spec(cpus=5, workers=2), cap) == []
    assert shortfalls(spec(cpus=5, workers=3), cap)[0].startswith(
        "each of the 3 training workers needs 5 CPUs on one node; the nodes can hold 2 "
        "such workers (head: 1 CPU"), shortfalls(spec(cpus=5, workers=3), cap)
    assert shortfalls(spec(cpus=2, workers=10), cap) == []  # 3 x 2 + 2 x 4 = 14 slots
    # The same holds on a fixed cluster whose nodes are known: two 2-CPU nodes.
    two = capacity([HEAD, NodeResources("w", False, 2, 0, 4 << 30)])
    assert not two.autoscaling and two.most.cpus == 3
    assert shortfalls(spec(cpus=3), two)[0].startswith("the job's process needs 3 CPUs")
    assert shortfalls(spec(cpus=4), two) == ["needs 4 CPUs; cluster has 3"]


def test_a_gpu_group_at_zero_replicas_is_capacity_and_no_group_is_none() -> None:
    # No GPU group: refused with the message users already know.
    cpu_only = capacity([HEAD], {"cpu": TYPES["cpu"]})
    with pytest.raises(ResourcesUnsatisfiable) as info:
        check_feasible(spec(gpus=1), cpu_only)
    assert "needs 1 GPU; cluster can grow to 0" in info.value.message
    # A GPU group with no node up yet: accepted.
    check_feasible(spec(gpus=1), capacity([HEAD], TYPES))


def test_node_types_without_memory_leave_memory_unbounded() -> None:
    cap = capacity([HEAD], {"cpu": RayNodeType(resources={"CPU": 2}, max_workers=1)})
    assert not cap.memory_known
    check_feasible(spec(cpus=2, memory_bytes="64G"), cap)


def test_workers_beyond_the_types_still_count() -> None:
    # Alive nodes outside the declared types are never less than the ceiling.
    alive = [HEAD] + [NodeResources(f"w{i}", False, 8, 0, 1 << 30) for i in range(4)]
    cap = capacity(alive, {"cpu": RayNodeType(resources={"CPU": 4}, max_workers=1)})
    assert cap.most.cpus == 33 and cap.most.nodes == 5
