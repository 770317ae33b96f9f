# The gateway (README, "The problem it solves") in network namespaces, for the end-to-end test and `make demo`.
# Source it; needs root, WireGuard (the VM's kernel), iproute2, wireguard-tools, ping.
#
#   laptops lap1..N ── underlay bridge (fd00::/64) ── gw ── LAN bridge ── srv1, srv2, rtr
#   each laptop: wg1 with 2001:db8:1::1xx/128     wg0 + private0    servers 2001:db8:1::10, ::11,
#                                                (wgkeeper run)      default via 2001:db8:1:: (anycast,
#                                                                     held by rtr 2001:db8:1::1/64)
#
# NDP=kernel (default) or datapath is the gateway's `ndp`. With datapath, private0 also holds
# an ordinary global address, 2001:db8:1::2/64, and keeps forwarding = 0 and proxy_ndp = 0.
# STRICT_MLD=1 (the default with NDP=datapath) makes the LAN bridge a switch that snoops MLD
# (querier on) and sends the gateway's port no multicast it has not reported: solicitations for
# the laptops then reach the gateway only through the solicited-node groups it joins.
# (gateway-test.sh starts with kernel and switches the live gateway to datapath by a reload,
# then adds the /64 and makes the bridge strict as set-up would; `make demo` keeps kernel.)
E2E=${E2E:-wgk-e2e}
NDP=${NDP:-kernel}
if [ "$NDP" = datapath ]; then STRICT_MLD=${STRICT_MLD:-1}; else STRICT_MLD=${STRICT_MLD:-0}; fi
GW_LAN_ADDRESS=2001:db8:1::2
LAN_PREFIX=2001:db8:1::/64
SERVERS=(2001:db8:1::10 2001:db8:1::11)
ROUTER=2001:db8:1::1
ANYCAST=2001:db8:1::
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
WGKEEPER=${WGKEEPER:-$REPO/.build/debug/wgkeeper}
# Not under /tmp: the loader refuses a configuration below a world-writable (even sticky) directory.
WORK=${WORK:-$(mkdir -p -m 0755 /run/wgkeeper-tests && mktemp -d /run/wgkeeper-tests/wgk-e2e.XXXXXX)}

in_ns() { local ns=$1; shift; ip netns exec "$E2E-$ns" "$@"; }
laptop_address() { printf '2001:db8:1::%x' $((0x100 + $1)); }

make_ns() {
    ip netns add "$E2E-$1"
    ip -n "$E2E-$1" link set lo up
    in_ns "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
}

# plug NS IFNAME BRIDGE_NS BRIDGE: a veth from NS into a bridge in BRIDGE_NS.
plug() {
    local ns=$1 ifname=$2 bns=$3 bridge=$4 port="p-$1"
    ip -n "$E2E-$ns" link add "$ifname" type veth peer name "$port" netns "$E2E-$bns"
    ip -n "$E2E-$bns" link set "$port" master "$bridge" up
    ip -n "$E2E-$ns" link set "$ifname" up
}

scenario_setup() {
    local laptops=$1
    umask 077
    mkdir -p "$WORK/conf.d" "$WORK/bpf"
    # A bpffs in this mount namespace, so the daemon's pins survive its restarts.
    mount -t bpf bpffs "$WORK/bpf"
    for ns in ul lan gw rtr srv1 srv2; do make_ns "$ns"; done
    for b in ul lan; do ip -n "$E2E-$b" link add br0 type bridge; ip -n "$E2E-$b" link set br0 up; done

    plug gw ul0 ul br0
    ip -n "$E2E-gw" -6 addr add fd00::1/64 dev ul0
    if [ "$STRICT_MLD" = 1 ]; then
        ip -n "$E2E-lan" link set br0 type bridge mcast_snooping 1 mcast_querier 1
    fi
    plug gw private0 lan br0
    if [ "$NDP" = datapath ]; then
        # An ordinary /64: with forwarding off the LAN joins no anycast for it.
        ip -n "$E2E-gw" -6 addr add "$GW_LAN_ADDRESS/64" dev private0
    fi                            # (kernel mode: only a link-local address: no anycast claimed)
    if [ "$STRICT_MLD" = 1 ]; then
        bridge -n "$E2E-lan" link set dev p-gw mcast_flood off
    fi
    plug rtr eth0 lan br0
    ip -n "$E2E-rtr" -6 addr add "$ROUTER/64" dev eth0
    in_ns rtr sysctl -qw net.ipv6.conf.all.forwarding=1   # the LAN's real router: holds the anycast
    local i=0
    for server in "${SERVERS[@]}"; do
        i=$((i + 1))
        plug "srv$i" eth0 lan br0
        ip -n "$E2E-srv$i" -6 addr add "$server/64" dev eth0
        ip -n "$E2E-srv$i" -6 route add default via "$ANYCAST" dev eth0
    done

    wg genkey > "$WORK/gw.key"; chmod 600 "$WORK/gw.key"
    wg pubkey < "$WORK/gw.key" > "$WORK/gw.pub"
    cat > "$WORK/wgkeeper.yaml" <<YAML
runtime:
  status_socket: $WORK/status.sock
  bpf_pin_root: $WORK/bpf
  wireguard_poll: 500ms
  proxy_poll: 500ms
  include_dir: $WORK/conf.d
wireguard:
  wg0:
    private_key_file: $WORK/gw.key
    listen_port: 51820
gateway:
  tunnel: wg0
  lan: private0
  lan_prefix: $LAN_PREFIX
  proxy_ndp: true
  ndp: $NDP
  redirect: true
YAML
    # Four laptops at a time: under TCG each of a laptop's dozen commands costs 0.3-0.9 s to
    # start, and the guest has two CPUs (50 laptops one by one took most of the scenario's 444 s).
    for i in $(seq 1 "$laptops"); do
        add_laptop "$i" &
        if [ $((i % 4)) = 0 ]; then wait; fi
    done
    wait
    local missing=""
    for i in $(seq 1 "$laptops"); do [ -s "$WORK/conf.d/lap$i.yaml" ] || missing="$missing lap$i"; done
    [ -z "$missing" ] || { echo "error: laptops not set up:$missing" >&2; return 1; }
}

# add_laptop N: a laptop namespace with its own wg1, and its peer file in conf.d.
add_laptop() {
    local n=$1 ns="lap$1" address
    address=$(laptop_address "$n")
    make_ns "$ns"
    plug "$ns" ul0 ul br0
    ip -n "$E2E-$ns" -6 addr add "fd00::1:$(printf %x "$n")/64" dev ul0
    wg genkey > "$WORK/$ns.key"; chmod 600 "$WORK/$ns.key"
    ip -n "$E2E-$ns" link add wg1 type wireguard
    in_ns "$ns" wg set wg1 private-key "$WORK/$ns.key" \
        peer "$(cat "$WORK/gw.pub")" endpoint "[fd00::1]:51820" allowed-ips "$LAN_PREFIX" persistent-keepalive 5
    ip -n "$E2E-$ns" -6 addr add "$address/128" dev wg1
    ip -n "$E2E-$ns" link set wg1 up
    ip -n "$E2E-$ns" -6 route add "$LAN_PREFIX" dev wg1
    cat > "$WORK/conf.d/$ns.yaml" <<YAML
wireguard:
  wg0:
    peers:
      - name: $ns
        public_key: "$(wg pubkey < "$WORK/$ns.key")"
        allowed_ips: [$address/128]
YAML
}

daemon_start() {
    ip netns exec "$E2E-gw" "$WGKEEPER" run --config "$WORK/wgkeeper.yaml" >> "$WORK/wgkeeper.log" 2>&1 &
    echo $! > "$WORK/wgkeeper.pid"
    local i
    for i in $(seq 1 200); do
        "$WGKEEPER" status --socket "$WORK/status.sock" --json > /dev/null 2>&1 && return 0
        kill -0 "$(cat "$WORK/wgkeeper.pid")" 2>/dev/null || { cat "$WORK/wgkeeper.log"; return 1; }
        sleep 0.1
    done
    return 1
}

daemon_stop() {
    [ -f "$WORK/wgkeeper.pid" ] || return 0
    kill "$(cat "$WORK/wgkeeper.pid")" 2>/dev/null || true
    wait "$(cat "$WORK/wgkeeper.pid")" 2>/dev/null || true
    rm -f "$WORK/wgkeeper.pid"
}

status_json() { "$WGKEEPER" status --socket "$WORK/status.sock" --json; }

# ping_ok NS ADDRESS [COUNT]: true when every ping of COUNT is answered.
ping_ok() { in_ns "$1" ping -6 -q -n -c "${3:-1}" -i 0.2 -W 2 "$2" > /dev/null 2>&1; }

# until_ok SECONDS CMD...: retries CMD every 0.1 s; prints how long it took; false on timeout.
until_ok() {
    local limit_ms=$(( $1 * 1000 )); shift
    local start now
    start=$(date +%s%N)
    while true; do
        if "$@" > /dev/null 2>&1; then
            now=$(date +%s%N)
            printf '%d ms' $(( (now - start) / 1000000 ))
            return 0
        fi
        now=$(date +%s%N)
        if [ $(( (now - start) / 1000000 )) -gt "$limit_ms" ]; then printf 'timeout after %d ms' "$limit_ms"; return 1; fi
        sleep 0.1
    done
}

scenario_teardown() {
    daemon_stop
    local ns
    for ns in $(ip netns list | awk -v p="$E2E-" 'index($1, p) == 1 {print $1}'); do ip netns del "$ns"; done
    umount -l "$WORK/bpf" 2>/dev/null || true
    rm -rf "$WORK"
}
