"""deploy/k8s: every overlay builds with ``kubectl kustomize``, every object validates against
Kubernetes' schemas and the RayCluster against KubeRay's CRD, and the pieces agree with each
other and with the server (settings that parse, placeholders refused, node types as Ray's
autoscaler derives them, a network policy that fences the workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
from k8s_helpers import OVERLAYS, Obj, api_env, build, one, pod_specs
from netpol import Address, Pod, allowed
from pydantic import ValidationError

from clowder_ml.settings import Settings, is_placeholder

each = pytest.mark.parametrize("overlay", OVERLAYS)

K8S_VERSION = "1.32"  # the Kubernetes the manifests are checked against (this kubectl's)
CRD_SCHEMA = Path(__file__).parent / "data" / "raycluster-v1.schema.json"
RAY_CLUSTER = "clowder-ml-ray"
WORKER = {"ray.io/cluster": RAY_CLUSTER, "ray.io/node-type": "worker", "ray.io/group": "cpu",
          "ray.io/is-ray-node": "yes"}  # the labels KubeRay puts on a worker pod
HEAD = {**WORKER, "ray.io/node-type": "head", "ray.io/group": "headgroup"}


def objects(overlay: str) -> tuple[Obj, ...]:
    return build(f"overlays/{overlay}")


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the server reads them from exactly this environment."""
    for var in [v for v in os.environ if v.startswith("CLOWDER_ML_")]:
        monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    return Settings(_env_file=None)


def real_values(env: dict[str, str], keep: str | None = None) -> dict[str, str]:
    """``env`` with every placeholder but ``keep``'s replaced as an operator would."""
    return {k: v if k == keep or not is_placeholder(v) else
            "postgresql+psycopg://clowder:s3cret-Xq7@db:5432/clowder" if "://" in v
            else "Xq7-real-admin-pw" for k, v in env.items()}


def test_overlays_are_the_two_promised() -> None:
    assert OVERLAYS == ["dev", "gpu"]


@each
def test_every_object_validates_against_the_kubernetes_schema(overlay: str) -> None:
    objs = objects(overlay)
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "Deployment", "Service", "Secret", "ConfigMap", "RuntimeClass",
            "PersistentVolumeClaim", "NetworkPolicy", "RayCluster"} <= kinds, kinds
    for o in objs:
        if o["kind"] == "RayCluster":
            continue  # a custom resource: checked against KubeRay's CRD below
        # strict: unknown fields are errors too (a typo would otherwise be dropped silently)
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)


def _closed(schema: Any) -> Any:
    """The CRD schema with unknown fields refused, as ``kubectl apply --validate=strict``
    does: every object that lists its properties allows no others."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@each
def test_the_raycluster_validates_against_kuberays_crd(overlay: str) -> None:
    rc = one(objects(overlay), "RayCluster", RAY_CLUSTER)
    schema = _closed(json.loads(CRD_SCHEMA.read_text()))
    jsonschema.Draft7Validator(schema).validate(rc)
    # The pod templates, left out of the stored CRD schema, against Kubernetes' own.
    for where, spec in pod_specs((rc,)):
        template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                    "template": {"spec": spec}}
        try:
            kubernetes_validate.validate(template, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{where}: {exc}") from exc
    # The schema refuses what it should: a typo, a negative maxReplicas.
    bad = json.loads(json.dumps(rc))
    bad["spec"]["enableInTreeAutoscalling"] = True
    with pytest.raises(jsonschema.ValidationError, match="enableInTreeAutoscalling"):
        jsonschema.Draft7Validator(schema).validate(bad)
    bad = json.loads(json.dumps(rc))
    bad["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(bad)


@each
def test_the_raycluster_autoscales_cpu_and_gpu_workers_under_gvisor(overlay: str) -> None:
    objs = objects(overlay)
    rc = one(objs, "RayCluster", RAY_CLUSTER)
    spec = rc["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # jobs go to workers
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    # dev is CPU only (a GPU request is refused); gpu has both groups.
    assert set(groups) == ({"cpu"} if overlay == "dev" else {"cpu", "gpu"})
    runtime = one(objs, "RuntimeClass", "gvisor")
    assert runtime["handler"] == "runsc" and "namespace" not in runtime["metadata"]
    for name, g in groups.items():
        assert g["minReplicas"] == 0 and g["replicas"] == 0 and g["maxReplicas"] >= 1, name
        pod = g["template"]["spec"]
        assert pod["runtimeClassName"] == "gvisor", name
        (c,) = pod["containers"]
        gpus = c["resources"]["limits"].get("nvidia.com/gpu")
        assert (gpus == 1) == (name == "gpu"), (name, gpus)
        if gpus:
            assert c["resources"]["requests"]["nvidia.com/gpu"] == gpus
            assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


@each
def test_every_container_has_requests_and_limits(overlay: str) -> None:
    for where, spec in pod_specs(objects(overlay)):
        for c in spec["containers"]:
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (where, c["name"])


@each
def test_the_shared_volume_is_rwx_and_workers_see_only_its_shared_folder(overlay: str) -> None:
    objs = objects(overlay)
    env = api_env(objs)
    pvc = one(objs, "PersistentVolumeClaim", "clowder-ml-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    api = one(objs, "Deployment", "clowder-ml-api")["spec"]["template"]["spec"]
    claims = {v["name"] for v in api["volumes"]
              if v.get("persistentVolumeClaim", {}).get("claimName") == "clowder-ml-data"}
    assert [m["mountPath"] for m in api["containers"][0]["volumeMounts"]
            if m["name"] in claims] == [env["CLOWDER_ML_DATA_DIR"]]
    rc = one(objs, "RayCluster", RAY_CLUSTER)
    for g in rc["spec"]["workerGroupSpecs"]:
        pod = g["template"]["spec"]
        claims = {v["name"] for v in pod["volumes"]
                  if v.get("persistentVolumeClaim", {}).get("claimName") == "clowder-ml-data"}
        mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] in claims]
        # Checkpoints where the server tells jobs to put them; never the data folder.
        assert [(m["mountPath"], m.get("subPath")) for m in mounts] == \
            [(env["CLOWDER_ML_JOB_SHARED_DIR"], "shared")], g["groupName"]
    head = rc["spec"]["headGroupSpec"]["template"]["spec"]
    assert not any("persistentVolumeClaim" in v for v in head.get("volumes", []))


@each
def test_the_server_settings_parse_and_point_at_the_cluster(
        overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objs = objects(overlay)
    settings = settings_from(real_values(api_env(objs)), monkeypatch)
    # The Ray Jobs API: the KubeRay head service and the head's dashboard port.
    ray = urlsplit(settings.ray_address or "")
    assert ray.hostname == f"{RAY_CLUSTER}-head-svc"
    head = one(objs, "RayCluster", RAY_CLUSTER)["spec"]["headGroupSpec"]
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]
             ["ports"]}
    assert ray.port == ports["dashboard"]
    # Runners call back the API server's Service.
    job_api = urlsplit(settings.job_api_url or "")
    service = one(objs, "Service", "clowder-ml-api")
    assert job_api.hostname == service["metadata"]["name"]
    assert job_api.port == service["spec"]["ports"][0]["port"]
    assert settings.ray_node_types, "the autoscaling ceiling must be declared"


@each
def test_node_types_are_what_rays_autoscaler_derives_from_the_raycluster(overlay: str) -> None:
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    objs = objects(overlay)
    declared = json.loads(api_env(objs)["CLOWDER_ML_RAY_NODE_TYPES"])
    derived = _derive_autoscaling_config_from_ray_cr(one(objs, "RayCluster", RAY_CLUSTER))
    workers = {name: {"resources": t["resources"], "min_workers": t["min_workers"],
                      "max_workers": t["max_workers"]}
               for name, t in derived["available_node_types"].items() if t["max_workers"] > 0}
    assert declared == workers


@each
def test_every_placeholder_secret_is_refused_at_start_up(
        overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objs = objects(overlay)
    env = api_env(objs)
    secrets = [o for o in objs if o["kind"] == "Secret"]
    placeholders = {(s["metadata"]["name"], k) for s in secrets
                    for k, v in s["stringData"].items() if is_placeholder(v)}
    assert placeholders, "the manifests ship placeholders, never real secrets"
    deploy = one(objs, "Deployment", "clowder-ml-api")
    used = {(v["valueFrom"]["secretKeyRef"]["name"], v["valueFrom"]["secretKeyRef"]["key"]):
            v["name"] for v in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
            if "valueFrom" in v}
    for secret, key in sorted(placeholders):
        if (secret, key) not in used:
            # Only dev's PostgreSQL password: the same value as database-url's password,
            # which the server does read (and refuses).
            assert (overlay, key) == ("dev", "postgres-password"), (secret, key)
            data = one(objs, "Secret", secret)["stringData"]
            assert urlsplit(data["database-url"]).password == data[key]
            continue
        var = used[(secret, key)]
        # This one placeholder alone (the others set for real) is enough to refuse.
        with pytest.raises(ValidationError, match=var):
            settings_from(real_values(env, keep=var), monkeypatch)
    settings_from(real_values(env), monkeypatch)  # and with none, it starts
    # And for real: `clowder-ml serve` with the manifest's environment exits before serving,
    # naming the settings and never printing a value.
    child = {k: v for k, v in os.environ.items() if not k.startswith("CLOWDER_ML_")}
    child.update(env, CLOWDER_ML_DATA_DIR=str(tmp_path / "data"), COLUMNS="200")
    p = subprocess.run([sys.executable, "-m", "clowder_ml", "serve", "--port", "9"],
                       env=child, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "placeholder secret" in p.stderr and "CLOWDER_ML_DATABASE_URL" in p.stderr
    for value in {v for v in env.values() if is_placeholder(v)}:
        assert value not in p.stderr + p.stdout
    assert not (tmp_path / "data").exists()  # refused before touching anything


@each
def test_workers_reach_only_the_api_server_their_ray_cluster_and_dns(overlay: str) -> None:
    objs = objects(overlay)
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    api_labels = one(objs, "Deployment", "clowder-ml-api")["spec"]["template"]["metadata"][
        "labels"]
    api_port = one(objs, "Service", "clowder-ml-api")["spec"]["ports"][0]["port"]
    worker, head, api = Pod(WORKER), Pod(HEAD), Pod(api_labels)
    other_worker = Pod({**WORKER, "ray.io/group": "gpu"})
    dns = Pod({"k8s-app": "kube-dns"}, namespace="kube-system")

    def egress(to: Pod | Address, port: int, protocol: str = "TCP") -> bool:
        return allowed(policies, "Egress", worker, to, port, protocol)

    assert egress(api, api_port)  # inputs, reports, outputs
    assert egress(head, 6379) and egress(head, 8265)  # GCS, Jobs API
    assert egress(other_worker, 45123)  # object transfer, Ray Train collectives
    assert egress(dns, 53, "UDP") and egress(dns, 53, "TCP")
    # Everything else is refused: other ports of the API pod, the database, other
    # namespaces' pods (even with the API's labels), the Kubernetes API, the internet.
    assert not egress(api, 22)
    assert not egress(Pod({"app.kubernetes.io/name": "clowder-ml-postgres"}), 5432)
    assert not egress(Pod(api_labels, namespace="elsewhere"), api_port)
    assert not egress(Pod(HEAD, namespace="elsewhere"), 6379)
    assert not egress(dns, 443)
    for ip in ("10.96.0.1", "1.1.1.1", "169.254.169.254"):
        assert not egress(Address(ip), 443), ip
    # Only pods of the same Ray cluster may connect to a worker.
    assert allowed(policies, "Ingress", worker, head, 10002)
    assert not allowed(policies, "Ingress", worker, api, 10002)
    assert not allowed(policies, "Ingress", worker, Pod(HEAD, namespace="elsewhere"), 10002)
    # The policy fences the workers only: the API server and the head are not selected.
    assert allowed(policies, "Egress", api, Address("1.1.1.1"), 443)
