#!/usr/bin/env bash
# Install clowder-ml and its development tools into the current Python (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'
# An editable install leaves our modules uncompiled, and with PYTHONDONTWRITEBYTECODE set
# every process (server, runner, training worker) would compile them again at import:
# ~60 ms of a runner's start, ~40 ms of a worker's. Stale .pyc files are ignored by Python.
python3 -m compileall -q clowder_ml
# pyenv only exposes new console scripts (clowder-ml) after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
# The web UI that `clowder-ml serve` serves at / (npm packages from the lock file, build).
bash scripts/web.sh
