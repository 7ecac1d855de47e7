#!/usr/bin/env bash
# Generate the UI's typed API client types from the server's OpenAPI document.
# Usage: gen-api.sh [OUT]   (default: src/api/schema.d.ts, the checked-in file).
# tests/web/test_api_client.py runs this to a temporary file and fails if the checked-in
# file differs, so the UI and the API cannot drift apart.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-src/api/schema.d.ts}")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# From the repository root, so this checkout's clowder_ml is the one described.
(cd .. && CLOWDER_ML_DATA_DIR="$tmp/data" python3 -m clowder_ml.api.openapi_dump) \
  > "$tmp/openapi.json"
# Fields with a default are optional in requests: not "non-nullable" (required) types.
node_modules/.bin/openapi-typescript "$tmp/openapi.json" --default-non-nullable false \
  -o "$out" >/dev/null
