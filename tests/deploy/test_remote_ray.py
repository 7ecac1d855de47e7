"""A server with ``CLOWDER_ML_RAY_ADDRESS`` submits to that cluster and starts no Ray of its
own, and a fine-tune runs through it with its inputs and outputs over the API only.

The "remote" cluster is a separate ``ray start --head`` process (its own temp folder, its own
token) that cannot see the server's folder at all: it runs in a private mount namespace with
an empty tmpfs over that folder, as a KubeRay cluster on other machines would. So a job that
read a server path (a blob, the database, the data folder) would fail; this one must fetch
its inputs through the runner API and upload its outputs the same way.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from clowder_ml.engine.ray_cluster import EmbeddedRayHead, ray_temp_dir
from tests.conftest import ServerProcess
from tests.engine.jobs_helpers import JobsApi
from tests.engine.test_finetune_e2e import reviews_csv

pytestmark = pytest.mark.timeout(600)

PARAMS = {"model_name": "remote", "base_model": "minilm-l6", "text_column": "text",
          "label_column": "label", "epochs": 1, "max_steps": 2, "batch_size": 8,
          "max_length": 16, "checkpoint_every_steps": 1, "validation_split": 0.25,
          "seed": 3}


class HeadWithoutServerFiles(EmbeddedRayHead):
    """A Ray head (and every process it starts: raylet, job supervisors, runners) for which
    ``hidden`` is an empty folder: ``unshare`` gives it a private mount namespace with a
    tmpfs mounted over ``hidden``, then becomes ``ray start`` (exec), so stopping it works
    as for any head. Needs root, as the gVisor sandbox does."""

    def __init__(self, temp_dir: Path, hidden: Path, **kwargs: object) -> None:
        super().__init__(temp_dir, **kwargs)  # type: ignore[arg-type]
        self.hidden = hidden

    def _command(self) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o size=1m cml-hidden "$0" && exec "$@"', str(self.hidden),
                *super()._command()]


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[HeadWithoutServerFiles, Path, Path]]:
    """(the cluster's head, the server's folder it cannot see, the cluster's own folder)."""
    server_side, cluster_side = tmp_path / "server", tmp_path / "cluster"
    server_side.mkdir()
    cluster_side.mkdir()
    temp_dir = Path(tempfile.mkdtemp(prefix="cml-remote-", dir="/tmp"))  # short: Ray sockets
    head = HeadWithoutServerFiles(temp_dir, hidden=server_side, num_cpus=2)
    try:
        head.start()
        yield head, server_side, cluster_side
    finally:
        head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_finetune_runs_on_a_remote_cluster_with_data_only_over_the_api(
        remote: tuple[HeadWithoutServerFiles, Path, Path]) -> None:
    head, server_side, cluster_side = remote
    # The cluster really cannot see the server's folder (checked from inside its namespace).
    (server_side / "canary").write_text("server only")
    seen = subprocess.run(["nsenter", f"--target={head.session}", "--mount", "ls", "-A",
                           str(server_side)], capture_output=True, text=True, check=True)
    assert seen.stdout == "", seen.stdout

    data = reviews_csv(24, seed=5)
    srv = ServerProcess(server_side / "data", env={
        "CLOWDER_ML_ENGINE_ENABLED": "true",
        "CLOWDER_ML_RAY_ADDRESS": head.address,
        "CLOWDER_ML_RAY_AUTH_TOKEN": head.auth_token,
        # The cluster's own disks: the node's input cache and the shared checkpoint volume.
        "CLOWDER_ML_JOB_ENV": json.dumps({"CLOWDER_ML_CACHE_DIR": str(cluster_side / "cache")}),
        "CLOWDER_ML_JOB_SHARED_DIR": str(cluster_side / "shared"),
    })
    srv.start()
    try:
        api = JobsApi(srv.url, srv.token())
        api.dataset("reviews", {"train.csv": data})
        job = api.submit("text-classification-finetune", datasets=("reviews",), params=PARAMS,
                         resources={"cpus": 1})
        done = api.wait(job["id"], timeout=480)
        assert done["state"] == "succeeded", (done, api.events(job["id"]))
        messages = [e["message"] for e in api.events(job["id"])]
        assert any(m.startswith(f"submitted to Ray as {job['id']}") for m in messages)
        result = done["result"]
        assert (result["model"]["name"], result["model"]["version"]) == ("remote", 1)

        # In: the input reached the node's cache through the runner API, checked by sha256.
        digest = hashlib.sha256(data).hexdigest()
        cached = cluster_side / "cache" / digest[:2] / digest
        assert cached.read_bytes() == data
        # Checkpoints went to the cluster's shared volume (and were cleaned up after the
        # model was saved), never to a server path.
        assert (cluster_side / "shared" / "jobs").is_dir()
        assert not (cluster_side / "shared" / "jobs" / job["id"]).exists()
        assert not (server_side / "data" / "shared").exists()
        # Out: the model came back over the API and is the registered version's file.
        outputs = {o["path"]: o for o in api.http.get(
            f"/api/v1/jobs/{job['id']}/outputs").json()}
        weights = api.http.get("/api/v1/models/remote/versions/1/files/model.safetensors")
        assert weights.status_code == 200
        assert hashlib.sha256(weights.content).hexdigest() == result["digest"] \
            == outputs["model/model.safetensors"]["sha256"]
    finally:
        srv.stop()
    # The server started no Ray of its own: no head folder, no state file, no process.
    data_dir = server_side / "data"
    assert not ray_temp_dir(data_dir.resolve()).exists()
    assert not (data_dir / "ray-spill").exists()
    assert EmbeddedRayHead(ray_temp_dir(data_dir.resolve())).pids() == []
