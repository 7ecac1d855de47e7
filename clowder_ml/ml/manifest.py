"""``manifest.json``: everything needed to rebuild a model and to explain a difference.

Input digests, resolved params, user code digests, package versions, Python and platform,
hardware, thread count, seeds and determinism flags. Two runs with equal manifests (minus
times) are expected to give bit-identical weights; the registry's reproduce action compares
manifests to say why two runs differ.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    """The sha256 of a file's content, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


PACKAGES = ("clowder-ml", "torch", "transformers", "tokenizers", "safetensors", "numpy",
            "pyarrow", "ray")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def hardware() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cpu_count": os.cpu_count(),
                            "machine": platform.machine()}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i)
                            for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info


def build(*, task: str, job_id: str, inputs: list[dict[str, Any]], params: dict[str, Any],
          determinism: dict[str, Any], code: dict[str, str] | None = None,
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest as a JSON-ready dict (``code``: user file name -> sha256)."""
    return {
        "format": 1,
        "task": task,
        "job_id": job_id,
        "inputs": inputs,
        "params": params,
        "code": code or {},
        "environment": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": package_versions(),
            "hardware": hardware(),
        },
        "determinism": determinism,
        **(extra or {}),
    }
