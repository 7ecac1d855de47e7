#!/usr/bin/env bash
# Install clowder-ml and its development tools into the current Python (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'
# pyenv only exposes new console scripts (clowder-ml) after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
# The web UI that `clowder-ml serve` serves at / (npm packages from the lock file, build).
bash scripts/web.sh
