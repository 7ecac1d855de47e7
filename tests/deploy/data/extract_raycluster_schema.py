"""Write ``raycluster-v1.schema.json`` from KubeRay's RayCluster CRD (see README.md here).

    python tests/deploy/data/extract_raycluster_schema.py ray.io_rayclusters.yaml

Keeps the ``v1`` version's ``openAPIV3Schema`` and drops what the manifests are not checked
against here: ``status`` (written by the operator), and each pod ``template`` (KubeRay's copy
of Kubernetes' PodTemplateSpec; the tests validate the templates against Kubernetes' own
schema with kubernetes-validate instead, which is stricter and keeps this file small).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

POD_TEMPLATE = {"type": "object", "description": "PodTemplateSpec: validated against "
                "Kubernetes' own schema (kubernetes-validate)"}


def extract(crd: dict[str, Any]) -> dict[str, Any]:
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = v1["schema"]["openAPIV3Schema"]
    schema["properties"].pop("status", None)
    spec = schema["properties"]["spec"]["properties"]
    spec["headGroupSpec"]["properties"]["template"] = POD_TEMPLATE
    spec["workerGroupSpecs"]["items"]["properties"]["template"] = POD_TEMPLATE
    return schema


if __name__ == "__main__":
    crd = yaml.safe_load(Path(sys.argv[1]).read_text())
    out = Path(__file__).with_name("raycluster-v1.schema.json")
    out.write_text(json.dumps(extract(crd), indent=1, sort_keys=True) + "\n")
