#!/usr/bin/env bash
# Hold a running server to its published contract, from outside, as a user who generates a
# client from /openapi.json would: start a fresh `clowder-ml serve` (embedded defaults, in a
# temporary data folder), log in as the admin, and run schemathesis against it with every
# check (server errors, undeclared statuses, content types, headers, response schemas,
# valid requests refused, invalid ones accepted, ...), MAX_EXAMPLES cases an operation, and
# its stateful phase (which follows the document's OpenAPI links). Token revocation and
# log-out are left out so the run keeps its own token; tests/schemathesis.toml says what
# else it must know (the rules no JSON Schema can state).
#
# Usage: bash scripts/fuzz-api.sh [schemathesis run options...]
#   e.g. bash scripts/fuzz-api.sh --seed 1 --report junit --report-dir "$PWD/fuzz-report"
#   (schemathesis runs in a temporary folder: give report folders as absolute paths)
# Environment: MAX_EXAMPLES (30), CLOWDER_ML_ENGINE_ENABLED (false: submitted jobs wait in
# the queue instead of starting a Ray head), FUZZ_KEEP=1 keeps the data folder and log.
# Exit status: schemathesis's (0 when it found no failure).
set -euo pipefail
cd "$(dirname "$0")/.."

examples="${MAX_EXAMPLES:-30}"
work="$(mktemp -d)"
password="fuzz-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:${port}"

CLOWDER_ML_ADMIN_PASSWORD="$password" \
CLOWDER_ML_ENGINE_ENABLED="${CLOWDER_ML_ENGINE_ENABLED:-false}" \
  python3 -m clowder_ml serve --host 127.0.0.1 --port "$port" --data-dir "$work/data" \
  --log-level warning >"$work/server.log" 2>&1 &
server=$!

finish() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  if [[ "${FUZZ_KEEP:-}" == 1 ]]; then
    echo "kept: $work (server.log, data/)" >&2
  else
    rm -rf "$work"
  fi
}
trap finish EXIT

for _ in $(seq 1 300); do
  if curl -fsS "$base/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then cat "$work/server.log" >&2; exit 1; fi
  sleep 0.2
done
curl -fsS "$base/readyz" >/dev/null

token="$(curl -fsS -X POST "$base/api/v1/auth/token" -H 'Content-Type: application/json' \
  -d "{\"username\": \"admin\", \"password\": \"$password\", \"name\": \"fuzz\"}" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"

echo "schemathesis --config-file tests/schemathesis.toml run $base/openapi.json --checks all" \
  "--max-examples $examples -H 'Authorization: Bearer ***'" \
  "--exclude-path-regex (token revocation, log-out) $*" >&2
config="$PWD/tests/schemathesis.toml"
cd "$work"  # schemathesis keeps a cache folder (.schemathesis) where it runs
schemathesis --config-file "$config" run "$base/openapi.json" \
  --checks all \
  --max-examples "$examples" \
  -H "Authorization: Bearer $token" \
  --exclude-path-regex '^/api/v1/(tokens/\{token_id\}|auth/logout)$' \
  "$@"
