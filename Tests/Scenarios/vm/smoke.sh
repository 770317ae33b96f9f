#!/usr/bin/env bash
# Smoke test of the VM tier; run it *inside* the guest:
#   Tests/Scenarios/vm/run.sh -- Tests/Scenarios/vm/smoke.sh
# Checks: wireguard module, netns + wg device, tc, bpftool, bpffs, that
# host-built dynamically linked binaries (Swift toolchain) run in the guest.
set -euo pipefail

pass=0 fail=0
check() { # check NAME CMD...
    local name=$1; shift
    if "$@"; then echo "ok   - $name"; pass=$((pass + 1))
    else echo "FAIL - $name"; fail=$((fail + 1)); fi
}

[ "${WGKEEPER_IN_VM:-}" = 1 ] || { echo "smoke.sh: run me via Tests/Scenarios/vm/run.sh" >&2; exit 2; }
echo "kernel: $(uname -r)"

ns=wgk-smoke-$$
wg_netns() {
    ip netns add "$ns" &&
    ip -n "$ns" link add wg0 type wireguard &&
    local priv peer &&
    priv=$(wg genkey) && peer=$(wg genkey | wg pubkey) &&
    printf '%s\n' "$priv" > /run/wgk-smoke.key &&
    ip netns exec "$ns" wg set wg0 private-key /run/wgk-smoke.key listen-port 51820 \
        peer "$peer" allowed-ips 2001:db8::1/128 &&
    ip -n "$ns" -6 addr add 2001:db8::2/64 dev wg0 &&
    ip -n "$ns" link set wg0 up &&
    ip netns exec "$ns" wg show wg0 dump | tee /run/wgk-smoke.dump &&
    grep -q "^$peer	(none)	(none)	2001:db8::1/128	" /run/wgk-smoke.dump &&
    grep -q "	51820	off$" /run/wgk-smoke.dump
}
sysctl_netns() {
    # per-netns IPv6 forwarding; must not leak into the initial namespace
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.forwarding=1 &&
    [ "$(ip netns exec "$ns" cat /proc/sys/net/ipv6/conf/all/forwarding)" = 1 ] &&
    [ "$(cat /proc/sys/net/ipv6/conf/all/forwarding)" = 0 ]
}
tc_clsact() {
    ip -n "$ns" link add d0 type dummy &&
    ip -n "$ns" link set d0 up &&
    ip netns exec "$ns" tc qdisc add dev d0 clsact &&
    ip netns exec "$ns" tc qdisc show dev d0 | grep -q clsact
}
bpffs() {
    local d
    d=$(mktemp -d) &&
    mount -t bpf bpf "$d" && umount "$d" && rmdir "$d" &&
    { mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; } &&
    mountpoint -q /sys/fs/bpf
}
swift_binary() {
    local swift=/opt/swift/usr/bin/swift-frontend
    [ -x "$swift" ] || swift=$(command -v swift-frontend) || return 1
    ! ldd "$swift" | grep -q 'not found' && "$swift" --version | grep -q 'Swift version'
}

check "modprobe wireguard" modprobe wireguard
check "wireguard module loaded" grep -q '^wireguard ' /proc/modules
check "netns + wg0 configured (wg show dump)" wg_netns
check "per-netns net.ipv6.conf.all.forwarding" sysctl_netns
check "tc clsact qdisc" tc_clsact
if command -v bpftool >/dev/null; then
    check "bpftool runs" bpftool version
    check "bpftool prog list" bpftool prog list
fi
check "mount -t bpf (tmp dir and /sys/fs/bpf)" bpffs
check "host-built Swift binary runs, ldd resolves" swift_binary

ip netns del "$ns" 2>/dev/null || true
rm -f /run/wgk-smoke.key /run/wgk-smoke.dump

echo "smoke: $pass passed, $fail failed"
[ "$fail" = 0 ]
