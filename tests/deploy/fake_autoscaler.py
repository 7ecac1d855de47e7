"""Ray's own autoscaler on fake nodes, as ``ray.cluster_utils.AutoscalingCluster`` runs it,
but as one of our heads: own temp folder, free ports, token auth, stopped alone.

``AutoscalingCluster`` itself cannot be used here: its ``start()`` and ``shutdown()`` run
``ray stop --force``, which kills every Ray on the machine (other sessions' heads, the test
session's shared head), and its config template (``fake_multi_node/example.yaml``) is not in
Ray's wheel. So this builds the same config (``AutoscalingCluster._generate_config``: that
template with the head and worker node types put in; the template's values are those of
ray-project/ray's ``python/ray/autoscaler/_private/fake_multi_node/example.yaml``) and starts
the head the way ``AutoscalingCluster.start()`` does: ``ray start --head
--autoscaling-config=...`` with ``RAY_FAKE_CLUSTER=1``. The autoscaler (Ray's monitor) then
adds and removes worker nodes through ``FakeMultiNodeProvider``: real raylets on this
machine, in the head's temp folder, so ``stop()`` ends them too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ray

from clowder_ml.engine.ray_cluster import EmbeddedRayHead

# fake_multi_node/example.yaml (Ray 2.x), less its node types, which the caller gives.
TEMPLATE: dict[str, Any] = {
    "cluster_name": "fake_multinode",
    "max_workers": 8,
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                 "disable_node_updaters": True, "disable_launch_config_check": True},
    "head_node_type": "ray.head.default",
    "auth": {},
    "upscaling_speed": 1.0,
    "idle_timeout_minutes": 0.1,
    "docker": {},
    "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
    "worker_setup_commands": [], "head_start_ray_commands": [],
    "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
    "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
}


class FakeAutoscalingHead(EmbeddedRayHead):
    """A head of ``head_cpus`` CPUs whose autoscaler may add nodes of ``worker_node_types``
    (Ray's ``available_node_types`` shape, as ``AutoscalingCluster`` takes them) and removes
    them after ``idle_timeout_s`` idle."""

    def __init__(self, temp_dir: Path, head_cpus: int,
                 worker_node_types: dict[str, dict[str, Any]],
                 idle_timeout_s: float = 6.0) -> None:
        super().__init__(temp_dir, num_cpus=head_cpus, num_gpus=0)
        self.worker_node_types = worker_node_types
        self.config = {
            **TEMPLATE,
            "available_node_types": {
                **worker_node_types,
                "ray.head.default": {"resources": {"CPU": head_cpus}, "node_config": {},
                                     "max_workers": 0},
            },
            "idle_timeout_minutes": idle_timeout_s / 60,
            # Where the fake nodes join: our head's GCS (not the default port 6379).
            "provider": {**TEMPLATE["provider"],
                         "gcs_address": f"{ray.util.get_node_ip_address()}:{self.gcs_port}"},
        }

    def _command(self) -> list[str]:
        config = self.temp_dir / "autoscaling.json"
        config.write_text(json.dumps(self.config))
        return [*super()._command(), f"--autoscaling-config={config}"]

    def _environment(self) -> dict[str, str]:
        # As AutoscalingCluster.start(): the fake provider requires RAY_FAKE_CLUSTER, and the
        # autoscaler looks at the cluster every second instead of every five.
        return {**super()._environment(), "RAY_FAKE_CLUSTER": "1",
                "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
