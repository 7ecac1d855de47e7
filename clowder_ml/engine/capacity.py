"""What a Ray cluster has now and what it can grow to: the input of the feasibility check.

A fixed cluster can only ever give a job what its alive nodes have. An autoscaling one
(KubeRay with ``enableInTreeAutoscaling``, or Ray's own autoscaler) can add worker nodes, up
to each node type's ``max_workers``; a request larger than the cluster *now* but within that
ceiling must be accepted and wait for the autoscaler, and only a request larger than the
ceiling refused.

The Ray Jobs API does not tell a client the autoscaler's node types, so the operator
describes them in ``CLOWDER_ML_RAY_NODE_TYPES``, in the shape of the autoscaler's own
``available_node_types`` (for KubeRay: what Ray derives from the RayCluster's
``workerGroupSpecs``; ``tests/deploy`` checks the shipped manifests agree). Every worker node
is assumed to belong to one of the types, as every KubeRay worker belongs to a worker group;
the head node is counted as it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from clowder_ml.engine.ray_backend import ClusterResources, NodeResources
from clowder_ml.settings import RayNodeType


@dataclass(frozen=True)
class NodeShape:
    """What one node offers (one alive node, or one node of an autoscaled type)."""

    name: str
    cpus: float
    gpus: float = 0.0
    memory_bytes: int | None = None  # None: not declared (a node type may leave it out)

    def fits(self, cpus: float, gpus: float, memory_bytes: int | None) -> bool:
        """Whether one process reserving this much can be placed on such a node."""
        return self.holds(cpus, gpus, memory_bytes) >= 1

    def holds(self, cpus: float, gpus: float, memory_bytes: int | None) -> int:
        """How many processes reserving this much each fit on one such node at once."""
        counts = [math.floor(self.cpus / cpus + 1e-9) if cpus > 0 else math.inf,
                  math.floor(self.gpus / gpus + 1e-9) if gpus > 0 else math.inf]
        if memory_bytes and self.memory_bytes is not None:
            counts.append(self.memory_bytes // memory_bytes)
        fit = min(counts)
        return 1 if fit == math.inf else int(fit)  # a process that reserves nothing: one


@dataclass(frozen=True)
class Capacity:
    """A cluster's resources now (``now``), at most (``most``), and the nodes a job's
    processes may land on (``shapes``: each shape with how many such nodes there can be;
    empty when unknown, e.g. totals given by hand).

    ``autoscaled`` lists each autoscaled node type with its ``max_workers``; when it is empty
    ``most`` is ``now``. ``most.memory_bytes`` is a bound only when ``memory_known`` (every
    autoscaled type declares its memory)."""

    now: ClusterResources
    most: ClusterResources
    shapes: tuple[tuple[NodeShape, int], ...] = ()
    autoscaled: tuple[tuple[NodeShape, int], ...] = ()
    memory_known: bool = True

    @property
    def autoscaling(self) -> bool:
        return bool(self.autoscaled)

    @classmethod
    def fixed(cls, total: ClusterResources) -> Capacity:
        """A cluster known only by its totals: no autoscaling, node shapes unknown."""
        return cls(now=total, most=total)


def _shape(name: str, resources: Mapping[str, float]) -> NodeShape:
    memory = resources.get("memory")
    return NodeShape(name=name, cpus=float(resources.get("CPU", 0)),
                     gpus=float(resources.get("GPU", 0)),
                     memory_bytes=None if memory is None else int(memory))


def capacity(nodes: Iterable[NodeResources],
             node_types: Mapping[str, RayNodeType] | None = None) -> Capacity:
    """The capacity of a cluster whose alive nodes are ``nodes`` and whose autoscaler may add
    nodes of ``node_types`` (name -> type; none: a fixed cluster).

    The ceiling is the head node plus every type at its ``max_workers``, per resource; never
    less than what is alive now (a node outside the declared types still counts).
    """
    alive = list(nodes)
    now = ClusterResources(
        cpus=sum(n.cpus for n in alive), gpus=sum(n.gpus for n in alive),
        memory_bytes=sum(n.memory_bytes for n in alive), nodes=len(alive))
    autoscaled = [(_shape(name, t.resources), t.max_workers)
                  for name, t in sorted((node_types or {}).items()) if t.max_workers > 0]
    if not autoscaled:
        return Capacity(now=now, most=now, shapes=tuple(
            (NodeShape("head" if n.is_head else "node", n.cpus, n.gpus, n.memory_bytes), 1)
            for n in alive))
    heads = [n for n in alive if n.is_head]
    shapes = [(NodeShape("head", n.cpus, n.gpus, n.memory_bytes), 1) for n in heads]
    grown = ClusterResources(
        cpus=sum(n.cpus for n in heads) + sum(s.cpus * k for s, k in autoscaled),
        gpus=sum(n.gpus for n in heads) + sum(s.gpus * k for s, k in autoscaled),
        memory_bytes=sum(n.memory_bytes for n in heads)
        + sum((s.memory_bytes or 0) * k for s, k in autoscaled),
        nodes=len(heads) + sum(k for _, k in autoscaled))
    most = ClusterResources(
        cpus=max(now.cpus, grown.cpus), gpus=max(now.gpus, grown.gpus),
        memory_bytes=max(now.memory_bytes, grown.memory_bytes),
        nodes=max(now.nodes, grown.nodes))
    return Capacity(now=now, most=most, shapes=tuple(shapes + autoscaled),
                    autoscaled=tuple(autoscaled),
                    memory_known=all(s.memory_bytes is not None for s, _ in autoscaled))
