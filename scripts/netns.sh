#!/usr/bin/env bash
# A private network namespace for the dev server, the relay and WebRTC clients.
#
#   scripts/netns.sh up NAME [INDEX]   namespace NAME with a veth link: host end
#                                      10.213.INDEX.1/30, namespace end 10.213.INDEX.2/30
#                                      (INDEX 0-255, default 1), lo up, IPv6 off
#   scripts/netns.sh exec NAME CMD...  run CMD inside NAME
#   scripts/netns.sh down NAME         stop every process inside NAME by PID (TERM, then
#                                      KILL after 5 s), delete NAME and its link
#                                      (idempotent)
#
# Needs root (CAP_NET_ADMIN) and iproute2. Nothing is routed beyond the link. The Python
# harness (relay/devserver/netns.py) does the same for the tests and the demo.
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

link_names() { # NAME -> host and namespace interface names (at most 15 characters)
    local tag
    tag=$(printf '%s' "$1" | cksum | cut -c1-8)
    echo "rlh${tag} rln${tag}"
}

up() {
    local name=$1 index=${2:-1} host_if ns_if
    read -r host_if ns_if < <(link_names "$name")
    ip netns add "$name"
    ip netns exec "$name" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip netns exec "$name" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    ip netns exec "$name" ip link set lo up
    ip link add "$host_if" type veth peer name "$ns_if"
    sysctl -qw "net.ipv6.conf.${host_if}.disable_ipv6=1" || true
    ip link set "$ns_if" netns "$name"
    ip addr add "10.213.${index}.1/30" dev "$host_if"
    ip link set "$host_if" up
    ip netns exec "$name" sysctl -qw "net.ipv6.conf.${ns_if}.disable_ipv6=1" || true
    ip netns exec "$name" ip addr add "10.213.${index}.2/30" dev "$ns_if"
    ip netns exec "$name" ip link set "$ns_if" up
    echo "namespace $name: address 10.213.${index}.2 (host end 10.213.${index}.1)"
}

ns_pids() { ip netns pids "$1" 2>/dev/null || true; }

stop_processes() { # deleting a namespace does not end what runs in it
    local name=$1 pids tries=50
    pids=$(ns_pids "$name")
    [[ -n $pids ]] || return 0
    kill -TERM $pids 2>/dev/null || true
    while [[ -n $(ns_pids "$name") && $tries -gt 0 ]]; do sleep 0.1; tries=$((tries - 1)); done
    pids=$(ns_pids "$name")
    [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
}

down() {
    local name=$1 host_if ns_if
    read -r host_if ns_if < <(link_names "$name")
    stop_processes "$name"
    ip netns del "$name" 2>/dev/null || true
    ip link del "$host_if" 2>/dev/null || true
}

[[ $# -ge 2 ]] || usage
cmd=$1; shift
case "$cmd" in
    up) up "$@" ;;
    down) down "$1" ;;
    exec) name=$1; shift; exec ip netns exec "$name" "$@" ;;
    *) usage ;;
esac
