#!/bin/bash
# Regenerates the iproute2 fixtures: what `ip` sends (sendmsg) and what the kernel answers
# (recvmsg), as hex dumps taken with strace in a throwaway namespace. Run as root:
#   Tests/NetlinkTests/Fixtures/capture.sh
# Each .hex file holds one datagram; `#` lines are comments. veth0 is ifindex 3 there.
set -euo pipefail
cd "$(dirname "$0")"
ns=wgk-capture-$$
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
ip -n "$ns" link set lo up
ip -n "$ns" link add veth0 type veth peer name veth1
ip -n "$ns" link set veth0 up
ip -n "$ns" link set veth1 up
ip -n "$ns" -6 addr add 2001:db8:ff::1/64 dev veth0 nodad

# strace prints "| 00000  38 00 ..." rows after each syscall; keep the rows of the last
# sendmsg (request) or of every recvmsg (replies), one datagram per file.
last_send() { # name, command...
    local name=$1; shift
    { echo "# $*"; ip netns exec "$ns" strace -e trace=sendmsg -e write=3,4 "$@" 2>&1 >/dev/null |
        awk '/^sendmsg/ {buf=""} /^ \| [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]  / {buf = buf substr($0, 11, 49) "\n"} END {printf "%s", buf}'
    } > "$name.hex"
}
first_recv_with() { # name, nlmsg_type, command...: the first datagram holding a message of that type
    local name=$1 type=$2; shift 2
    { echo "# replies to: $*"; ip netns exec "$ns" strace -e trace=recvmsg -e read=3,4 "$@" 2>&1 >/dev/null |
        awk -v type="$type" '/^recvmsg/ {if (keep) done = 1; if (!done) {buf = ""; keep = index($0, type) > 0} else keep = 0}
             /^ \| [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]  / {if (keep) buf = buf substr($0, 11, 49) "\n"} END {printf "%s", buf}'
    } > "$name.hex"
}

last_send route-add-host ip -6 route add 2001:db8:1::100/128 dev veth0 proto 77
last_send route-add-full ip -6 route add 2001:db8:2::/64 via fe80::1 metric 1024 table 1000 dev veth0 proto 77
last_send route-replace ip -6 route replace 2001:db8:1::100/128 metric 1024 dev veth0 proto 77
last_send route-add-v4 ip -4 route add 192.0.2.0/24 dev veth0 proto 77 scope link
last_send proxy-add ip -6 neigh add proxy 2001:db8:1::200 dev veth0 proto 77
ip -n "$ns" -6 route add 2001:db8:3::/64 via 2001:db8:ff::2 dev veth0 metric 300
first_recv_with route-dump-reply RTM_NEWROUTE ip -6 route show
first_recv_with proxy-dump-reply RTM_NEWNEIGH ip -6 neigh show proxy
# An error with an extended ack, the request echoed in full (iproute2 does not cap acks).
first_recv_with error-reply NLMSG_ERROR ip -6 route add 2001:db8:9::/64 via 2001:db8:77::1 proto 77 || true
first_recv_with error-reply-extack NLMSG_ERROR ip -6 route add 2001:db8:9::/64 via fe80::1 proto 77 || true
last_send proxy-del ip -6 neigh del proxy 2001:db8:1::200 dev veth0
last_send route-del ip -6 route del 2001:db8:1::100/128 dev veth0 proto 77
last_send route-del-v4 ip -4 route del 192.0.2.0/24 dev veth0 proto 77
