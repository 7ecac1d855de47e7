"""``custom-script`` end to end on the real Ray head: a user's train.py uploaded with its data
runs in the gVisor sandbox inside the job, its model folder is registered as a model version
and its metrics are on the job; a failing script fails the job with its line."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from clowder_ml.engine.ray_cluster import EmbeddedRayHead
from clowder_ml.errors import SandboxUnavailable
from clowder_ml.sandbox import get_sandbox
from tests.conftest import ServerProcess
from tests.engine.conftest import engine_server
from tests.engine.jobs_helpers import TERMINAL, JobsApi

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

# Writes one point (its value: when it was written, by the clock the host shares), then
# works for a while before the second: the first must reach the job while this still runs.
# The pause is the behaviour under test (a script busy between two points), not a wait
# for an event; nothing outside can signal into the sandbox (no network, read-only /data).
SLOW_PY = b'''\
import json, struct, time
from pathlib import Path

def point(step):
    with open("/work/metrics.jsonl", "a") as m:
        m.write(json.dumps({"step": step, "name": "written_at", "value": time.time()}) + "\\n")

point(1)
time.sleep(8)
point(2)
raw = struct.pack("<f", 1.0)
header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
header += b" " * (-len(header) % 8)
Path("/work/output/model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + raw)
Path("/work/output/config.json").write_text("{}")
'''


@pytest.fixture(scope="module")
def server(ray_head: EmbeddedRayHead, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[ServerProcess, JobsApi]]:
    try:
        get_sandbox()
    except SandboxUnavailable as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"gVisor sandbox unavailable: {exc}")
    files = {"train.py": TRAIN_PY, "broken.py": BROKEN_PY, "slow.py": SLOW_PY,
             "train.csv": b"text,label\na,1\nb,0\nc,1\n"}
    with engine_server(ray_head, tmp_path_factory.mktemp("custom-script"),
                       {"mydata": files}) as served:
        yield served


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


def test_metrics_stream_to_the_job_while_the_script_runs(
        server: tuple[ServerProcess, JobsApi]) -> None:
    _, api = server
    job = api.submit("custom-script", datasets=("mydata",),
                     params={"model_name": "streamed", "script": "slow.py", "timeout_s": 90,
                             "memory": "512M"}, resources={"cpus": 1})
    deadline = time.monotonic() + 120
    while True:
        # Metrics first, then the state: a point seen before a state still "running" was
        # on the job while the script ran.
        points = api.http.get(f"/api/v1/jobs/{job['id']}/metrics").json()
        seen_at = time.time()
        state = api.job(job["id"])["state"]
        if points or state in TERMINAL:
            break
        assert time.monotonic() < deadline, "no metric point while the job ran"
        time.sleep(0.1)
    assert state == "running", (state, points)
    assert [(m["step"], m["name"]) for m in points] == [(1, "written_at")], points
    # Written -> on the job: the host polls every 0.25 s, the reporter sends every 1 s.
    latency = seen_at - points[0]["value"]
    print(f"first point on the job {latency:.2f}s after the script wrote it")
    assert 0 <= latency < 4.0, latency
    done = api.wait(job["id"], timeout=120)
    assert done["state"] == "succeeded", done
    final = api.http.get(f"/api/v1/jobs/{job['id']}/metrics").json()
    # Each point once: streamed live, never again from the collected files.
    assert [(m["step"], m["name"]) for m in final] == [(1, "written_at"), (2, "written_at")]
    assert final[1]["value"] - final[0]["value"] >= 8
    assert done["result"]["metrics"] == {"written_at": final[1]["value"]}
