#!/usr/bin/env bash
# The README's first command: install, start the server on embedded defaults and run the
# main flow on a generated sample. Extra arguments go to `clowder-ml demo` (e.g. --exit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m clowder_ml demo "$@"
