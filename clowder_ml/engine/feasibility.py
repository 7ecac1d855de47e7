"""Fail fast on requests a cluster can never satisfy, with a message that says what is
missing ("needs 1 GPU; cluster has 0") instead of a job that waits forever.

Ray leaves such a job PENDING for good (and in Ray 2.60 cannot even stop it), so the engine
checks before submitting. On an autoscaling cluster the current totals are not the limit:
there the operator's configured maxima are passed instead.
"""

from __future__ import annotations

from clowder_ml.engine.ray_backend import ClusterResources
from clowder_ml.engine.spec import JobSpec, Resources
from clowder_ml.errors import ResourcesUnsatisfiable
from clowder_ml.sandbox.limits import format_size


def _n(value: float, unit: str) -> str:
    count = f"{value:g}"
    return f"{count} {unit}" if value == 1 else f"{count} {unit}s"


def _per_worker(r: Resources, value: float) -> str:
    return f" ({r.workers} workers x {value:g})" if r.workers > 1 else ""


def shortfalls(spec: JobSpec, cluster: ClusterResources) -> list[str]:
    """What the request needs beyond the cluster's capacity, one phrase per resource.

    CPUs and GPUs are the job's totals: ``workers`` x ``cpus`` (and x ``gpus``), as
    :class:`~clowder_ml.engine.spec.Resources` reserves them."""
    r = spec.resources
    out: list[str] = []
    if r.total_cpus() > cluster.cpus:
        out.append(f"needs {_n(r.total_cpus(), 'CPU')}{_per_worker(r, r.cpus)}; "
                   f"cluster has {cluster.cpus:g}")
    if r.total_gpus() > cluster.gpus:
        out.append(f"needs {_n(r.total_gpus(), 'GPU')}{_per_worker(r, r.gpus)}; "
                   f"cluster has {cluster.gpus:g}")
    if r.memory_bytes is not None and r.memory_bytes > cluster.memory_bytes:
        out.append(f"needs {format_size(r.memory_bytes)} of memory; cluster has "
                   f"{format_size(cluster.memory_bytes)}")
    return out


def check_feasible(spec: JobSpec, cluster: ClusterResources) -> None:
    """Raise :class:`ResourcesUnsatisfiable` when ``spec`` can never run on ``cluster``."""
    missing = shortfalls(spec, cluster)
    if missing:
        raise ResourcesUnsatisfiable(
            "This job can never start: " + "; ".join(missing) + ".",
            "Ask for fewer resources, or run it on a cluster that has them.")
