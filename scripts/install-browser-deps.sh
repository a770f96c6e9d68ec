#!/usr/bin/env bash
# What tests/ingest's browser tests need, once: quick when it is there already.
# - Debian's chromium (the system's browser; Playwright never downloads one);
# - the real client libraries from the npm registry, pinned by tests/ingest/web's
#   package-lock.json (`npm ci`, into tests/ingest/web/node_modules, not committed).
set -euo pipefail

web="$(cd "$(dirname "$0")/.." && pwd)/tests/ingest/web"

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "install-browser-deps: need root and apt-get to install Debian's chromium" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-o DPkg::Lock::Timeout=300 -y -q)
    apt-get "${apt_opts[@]}" update >/dev/null
    apt-get "${apt_opts[@]}" install --no-install-recommends chromium >/dev/null
fi

if [ ! -f "$web/node_modules/.package-lock.json" ] \
    || [ "$web/package-lock.json" -nt "$web/node_modules/.package-lock.json" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "install-browser-deps: npm is missing (Debian: apt-get install npm)" >&2
        exit 1
    fi
    (cd "$web" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
