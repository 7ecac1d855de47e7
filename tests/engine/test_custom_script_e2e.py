"""``custom-script`` end to end on the real Ray head: a user's train.py uploaded with its data
runs in the gVisor sandbox inside the job, its model folder is registered as a model version
and its metrics are on the job; a failing script fails the job with its line."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from clowder_ml.engine.ray_cluster import EmbeddedRayHead
from clowder_ml.errors import SandboxUnavailable
from clowder_ml.sandbox import get_sandbox
from tests.conftest import ServerProcess
from tests.engine.conftest import engine_env, kill_runners
from tests.engine.jobs_helpers import JobsApi

pytestmark = pytest.mark.timeout(300)

TRAIN_PY = b'''\
import json, struct
from pathlib import Path

args = json.loads(Path("/work/args.json").read_text())
rows = Path("/data/train.csv").read_text().splitlines()[1:]
values = [float(len(rows)), float(args["scale"])]
raw = struct.pack(f"<{len(values)}f", *values)
header = json.dumps({"w": {"dtype": "F32", "shape": [len(values)],
                           "data_offsets": [0, len(raw)]}}).encode()
header += b" " * (-len(header) % 8)
out = Path("/work/output")
(out / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + raw)
(out / "config.json").write_text(json.dumps({"rows": len(rows)}))
with open("/work/metrics.jsonl", "w") as m:
    for step in (1, 2, 3):
        m.write(json.dumps({"step": step, "name": "loss", "value": 1.0 / step}) + "\\n")
print("trained on", len(rows), "rows")
'''

BROKEN_PY = b'import json\n\nraise RuntimeError("no labels found")\n'


@pytest.fixture(scope="module")
def server(ray_head: EmbeddedRayHead, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[ServerProcess, JobsApi]]:
    try:
        get_sandbox()
    except SandboxUnavailable as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"gVisor sandbox unavailable: {exc}")
    base = tmp_path_factory.mktemp("custom-script")
    srv = ServerProcess(base / "data", env=engine_env(ray_head, base / "cache"))
    srv.start()
    api = JobsApi(srv.url, srv.token())
    api.dataset("mydata", {"train.py": TRAIN_PY, "broken.py": BROKEN_PY,
                           "train.csv": b"text,label\na,1\nb,0\nc,1\n"})
    yield srv, api
    srv.stop()
    kill_runners(srv.url)


def test_a_train_script_becomes_a_model_version(server: tuple[ServerProcess, JobsApi]
                                                ) -> None:
    _, api = server
    job = api.submit("custom-script", datasets=("mydata",),
                     params={"model_name": "scripted", "args": {"scale": 2},
                             "timeout_s": 60, "memory": "512M"},
                     resources={"cpus": 1})
    done = api.wait(job["id"], timeout=120)
    assert done["state"] == "succeeded", done
    result = done["result"]
    assert result["model"]["name"] == "scripted" and result["model"]["version"] == 1
    assert result["metrics"] == {"loss": 1 / 3}
    outputs = {o["path"] for o in api.http.get(f"/api/v1/jobs/{job['id']}/outputs").json()}
    assert {"model/model.safetensors", "model/config.json", "model/manifest.json",
            "model/metrics.json"} <= outputs, outputs
    man = json.loads(api.http.get(
        f"/api/v1/jobs/{job['id']}/outputs/model/manifest.json").text)
    assert man["code"] == {"train.py": result["code_digest"]}
    points = api.http.get(f"/api/v1/jobs/{job['id']}/metrics").json()
    assert [(m["step"], m["name"]) for m in points] == [(1, "loss"), (2, "loss"), (3, "loss")]
    log = api.http.get(f"/api/v1/jobs/{job['id']}/logs")  # the script's stdout
    assert log.status_code == 200 and "trained on 3 rows" in log.text, log.text


def test_a_failing_script_fails_the_job_with_its_line(server: tuple[ServerProcess, JobsApi]
                                                      ) -> None:
    _, api = server
    job = api.submit("custom-script", datasets=("mydata",),
                     params={"model_name": "broken", "script": "broken.py", "timeout_s": 60,
                             "memory": "512M"}, resources={"cpus": 1})
    done = api.wait(job["id"], timeout=120)
    assert done["state"] == "failed", done
    assert "broken.py, line 3: RuntimeError: no labels found" in json.dumps(done), done
