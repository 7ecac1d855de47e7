#!/usr/bin/env bash
# The web UI: install its npm packages from web/package-lock.json (npm ci, when the lock
# changed since the last install) and build it into clowder_ml/api/static (when a source
# is newer than the build). Idempotent; scripts/setup.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is missing: install Node.js 20.19+ with npm to build the web UI." >&2
  exit 1
fi
stamp=web/node_modules/.clowder-ml-lock.sha256
want="$(sha256sum web/package-lock.json | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  npm --prefix web ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
index=clowder_ml/api/static/index.html
if [ ! -f "$index" ] || [ -n "$(find web/src web/index.html web/vite.config.ts \
    web/tsconfig.json web/package-lock.json -newer "$index" -print -quit)" ]; then
  npm --prefix web run --silent build
fi
