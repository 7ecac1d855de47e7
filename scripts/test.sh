#!/usr/bin/env bash
# The whole test suite, plus the type and lint checks on the package.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check clowder_ml tests bench
python3 -m mypy clowder_ml
python3 -m pytest -q "$@"
