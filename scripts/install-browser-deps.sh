#!/usr/bin/env bash
# What tests/ingest's browser tests need, once: quick when it is there already.
# - Debian's chromium (scripts/install-chromium.sh; Playwright never downloads one);
# - the real client libraries from the npm registry, pinned by tests/ingest/web's
#   package-lock.json (`npm ci`, into tests/ingest/web/node_modules, not committed).
set -euo pipefail

web="$(cd "$(dirname "$0")/.." && pwd)/tests/ingest/web"

"$(dirname "$0")/install-chromium.sh"

if [ ! -f "$web/node_modules/.package-lock.json" ] \
    || [ "$web/package-lock.json" -nt "$web/node_modules/.package-lock.json" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "install-browser-deps: npm is missing (Debian: apt-get install npm)" >&2
        exit 1
    fi
    (cd "$web" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
