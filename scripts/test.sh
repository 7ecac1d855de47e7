#!/usr/bin/env bash
# The whole test suite, plus the type and lint checks on the package.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check clowder_ml tests bench
python3 -m mypy clowder_ml
# The web UI: TypeScript (strict) and its component tests (Vitest); the browser tests run
# in pytest (tests/web/test_browser.py) against the build scripts/setup.sh made.
npm --prefix web run --silent typecheck
npm --prefix web test --silent
python3 -m pytest -q "$@"
