#!/usr/bin/env bash
# Install promtool (Debian's `prometheus` package) for tests/deploy, once: quick when it
# is there already. Needs root and apt. The package's service is never started: a
# policy-rc.d that forbids starts is put in place for the install if none exists.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-promtool: need root and apt-get to install Debian's prometheus package" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=300 -y -q)
apt-get "${apt_opts[@]}" update >/dev/null
apt-get "${apt_opts[@]}" install --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null
