#!/bin/sh
# Debian's chromium for the browser tests (Playwright drives it with
# executable_path=/usr/bin/chromium; `playwright install` is never used). Idempotent.
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "install-chromium: /usr/bin/chromium is missing; run as root: apt-get install -y chromium" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends chromium >/dev/null || {
    apt-get -o DPkg::Lock::Timeout=900 update >/dev/null && apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends chromium >/dev/null
}
test -x /usr/bin/chromium
