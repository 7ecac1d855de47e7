"""deploy/k8s/components/clowder: the optional Clowder extractor listener, added to an overlay
as a Kustomize component. It builds, validates against Kubernetes' schemas, shares the API
server's database, volume and settings, and the placeholders it ships are refused for real
(`clowder-ml serve` and `clowder-ml clowder listen` exit 2 naming the setting)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
from k8s_helpers import K8S, Obj, api_env, kustomize, one

from clowder_ml.settings import is_placeholder

LISTENER = "clowder-ml-clowder-listener"
REAL_DB = "postgresql+psycopg://clowder:s3cret-Xq7@127.0.0.1:9/clowder"


@pytest.fixture(scope="module", params=["dev", "gpu"])
def objs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Obj, ...]:
    """An operator's overlay: the shipped one plus the clowder component."""
    here = tmp_path_factory.mktemp("with-clowder")
    rel = os.path.relpath(K8S, here)
    (here / "kustomization.yaml").write_text(
        f"resources:\n  - {rel}/overlays/{request.param}\n"
        f"components:\n  - {rel}/components/clowder\n")
    return kustomize(here, "--load-restrictor=LoadRestrictionsNone")


def test_the_listener_runs_beside_the_server_on_its_database_and_volume(
        objs: tuple[Obj, ...]) -> None:
    for o in objs:
        if o["kind"] != "RayCluster":
            kubernetes_validate.validate(o, "1.32", strict=True)
    spec = one(objs, "Deployment", LISTENER)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"][:3] == ["clowder-ml", "clowder", "listen"]
    api = one(objs, "Deployment", "clowder-ml-api")["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"] for s in (spec, api)
              for v in s["volumes"] if "persistentVolumeClaim" in v}
    assert len(claims) == 1  # one data volume for both
    env, server = api_env(objs, LISTENER), api_env(objs)
    for same in ("CLOWDER_ML_DATABASE_URL", "CLOWDER_ML_DATA_DIR", "CLOWDER_ML_CLOWDER_URL"):
        assert env[same] == server[same], same
    assert "CLOWDER_ML_RABBITMQ_URI" in env and container["securityContext"][
        "readOnlyRootFilesystem"]


def _run(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    child = {k: v for k, v in os.environ.items() if not k.startswith("CLOWDER_ML_")}
    child.update(env, CLOWDER_ML_DATA_DIR=str(tmp_path / "data"), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "clowder_ml", *args], env=child,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_shipped_placeholders_are_refused_by_both_processes(objs: tuple[Obj, ...],
                                                                 tmp_path: Path) -> None:
    env = {**api_env(objs, LISTENER), "CLOWDER_ML_DATABASE_URL": REAL_DB}
    shipped = {v for v in env.values() if is_placeholder(v)}
    assert env["CLOWDER_ML_CLOWDER_URL"] in shipped and env["CLOWDER_ML_RABBITMQ_URI"] in shipped
    for args in (["serve", "--port", "9"], ["clowder", "listen"]):
        p = _run(args, env, tmp_path)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "CLOWDER_ML_CLOWDER_URL (its host)" in p.stderr, p.stderr
        assert not any(value in p.stdout + p.stderr for value in shipped)
    # The Clowder URL set for real: the listener still refuses the RabbitMQ placeholder.
    env["CLOWDER_ML_CLOWDER_URL"] = "https://clowder.ncsa.example.edu"
    p = _run(["clowder", "listen"], env, tmp_path)
    assert p.returncode == 2 and "CLOWDER_ML_RABBITMQ_URI" in p.stderr, p.stderr
    assert "its password is a placeholder" in p.stderr
    assert env["CLOWDER_ML_RABBITMQ_URI"] not in p.stdout + p.stderr
    assert not (tmp_path / "data").exists()  # refused before touching anything
