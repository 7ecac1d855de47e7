"""Fail fast on requests a cluster can never satisfy, with a message that says what is
missing ("needs 1 GPU; cluster has 0") instead of a job that waits forever.

Ray leaves such a job PENDING for good (and in Ray 2.60 cannot even stop it), so the engine
checks before submitting. "Never" is measured against the cluster's ceiling
(:class:`~clowder_ml.engine.capacity.Capacity`): on an autoscaling cluster a request larger
than the cluster now but within what its autoscaler can add is accepted and waits.

Two checks, both against the ceiling:

1. **Totals**: the job's CPUs and GPUs (``workers`` x per-worker) and memory.
2. **One node**: each of the job's processes (the entrypoint, or each Ray Train worker) is
   placed on one node, so some node (alive, or of an autoscaled type) must hold its whole
   reservation. Checked only when the totals pass (one message per cause) and the node
   shapes are known.
"""

from __future__ import annotations

from clowder_ml.engine.capacity import Capacity, NodeShape
from clowder_ml.engine.ray_backend import ClusterResources
from clowder_ml.engine.spec import JobSpec, Resources
from clowder_ml.errors import ResourcesUnsatisfiable
from clowder_ml.sandbox.limits import format_size


def _n(value: float, unit: str) -> str:
    count = f"{value:g}"
    return f"{count} {unit}" if value == 1 else f"{count} {unit}s"


def _per_worker(r: Resources, value: float) -> str:
    return f" ({r.workers} workers x {value:g})" if r.workers > 1 else ""


def _has(cap: Capacity, most: str, now: str) -> str:
    """'cluster has 2', or on an autoscaling cluster 'cluster can grow to 6 (has 2 now)'."""
    if not cap.autoscaling:
        return f"cluster has {most}"
    return f"cluster can grow to {most}" + (f" (has {now} now)" if now != most else "")


def _bundle(cpus: float, gpus: float, memory_bytes: int | None) -> str:
    parts = [_n(cpus, "CPU")]
    if gpus:
        parts.append(_n(gpus, "GPU"))
    if memory_bytes is not None:
        parts.append(f"{format_size(memory_bytes)} of memory")
    return ", ".join(parts)


def _shape(s: NodeShape) -> str:
    what = _bundle(s.cpus, s.gpus, s.memory_bytes)
    return f"{s.name}: {what}"


def _node_shortfall(spec: JobSpec, cap: Capacity) -> str | None:
    """Why the nodes cannot hold the job's processes, or None.

    One worker: some node must hold ``cpus``, ``gpus`` and ``memory_bytes`` at once. W > 1
    (Ray Train): the nodes, each as often as there can be such nodes, must hold W bundles of
    ``cpus`` and ``gpus`` (the entrypoint, which reserves only ``memory_bytes``, also needs
    a node with that memory)."""
    if not cap.shapes:
        return None
    r = spec.resources
    nodes = "; ".join(_shape(s) + (f" (x{k})" if k > 1 else "") for s, k in cap.shapes)
    if r.workers == 1:
        if any(s.fits(r.cpus, r.gpus, r.memory_bytes) for s, _ in cap.shapes):
            return None
        return (f"the job's process needs {_bundle(r.cpus, r.gpus, r.memory_bytes)} on one "
                f"node; no node has that ({nodes})")
    if r.memory_bytes is not None and not any(s.fits(0, 0, r.memory_bytes)
                                              for s, _ in cap.shapes):
        return (f"needs {format_size(r.memory_bytes)} of memory on one node; no node has "
                f"that ({nodes})")
    slots = sum(s.holds(r.cpus, r.gpus, None) * k for s, k in cap.shapes)
    if slots >= r.workers:
        return None
    return (f"each of the {r.workers} training workers needs {_bundle(r.cpus, r.gpus, None)} "
            f"on one node; the nodes can hold {slots} such workers ({nodes})")


def shortfalls(spec: JobSpec, cluster: ClusterResources | Capacity) -> list[str]:
    """What the request needs beyond the cluster's ceiling, one phrase per cause.

    CPUs and GPUs are the job's totals: ``workers`` x ``cpus`` (and x ``gpus``), as
    :class:`~clowder_ml.engine.spec.Resources` reserves them. Given bare totals
    (:class:`ClusterResources`) only the totals are checked."""
    cap = cluster if isinstance(cluster, Capacity) else Capacity.fixed(cluster)
    most, now, r = cap.most, cap.now, spec.resources
    out: list[str] = []
    if r.total_cpus() > most.cpus:
        out.append(f"needs {_n(r.total_cpus(), 'CPU')}{_per_worker(r, r.cpus)}; "
                   f"{_has(cap, f'{most.cpus:g}', f'{now.cpus:g}')}")
    if r.total_gpus() > most.gpus:
        out.append(f"needs {_n(r.total_gpus(), 'GPU')}{_per_worker(r, r.gpus)}; "
                   f"{_has(cap, f'{most.gpus:g}', f'{now.gpus:g}')}")
    if r.memory_bytes is not None and cap.memory_known and r.memory_bytes > most.memory_bytes:
        out.append(f"needs {format_size(r.memory_bytes)} of memory; "
                   f"{_has(cap, format_size(most.memory_bytes), format_size(now.memory_bytes))}")
    if not out:
        node = _node_shortfall(spec, cap)
        if node is not None:
            out.append(node)
    return out


def check_feasible(spec: JobSpec, cluster: ClusterResources | Capacity) -> None:
    """Raise :class:`ResourcesUnsatisfiable` when ``spec`` can never run on ``cluster``."""
    missing = shortfalls(spec, cluster)
    if missing:
        raise ResourcesUnsatisfiable(
            "This job can never start: " + "; ".join(missing) + ".",
            "Ask for fewer resources, or run it on a cluster that has them"
            + (" (or raise its node types' max_workers)."
               if isinstance(cluster, Capacity) and cluster.autoscaling else "."))
