// SPDX-License-Identifier: GPL-2.0
// wgkeeper datapath (docs/ARCHITECTURE.md): two TC ingress programs that move IPv6 packets between the
// LAN (layer 2) and the WireGuard tunnel (layer 3) without net.ipv6.conf.all.forwarding.
//
// A packet that is not ours goes on with TC_ACT_UNSPEC: with nothing else attached the stack
// takes it exactly as with TC_ACT_OK, and other TCX programs / cls_bpf filters still see it.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef AF_INET6
#define AF_INET6 10
#endif

char LICENSE[] SEC("license") = "GPL";

// Key layout of BPF_MAP_TYPE_LPM_TRIE: prefix length first, then the address bytes.
struct prefix_key {
	__u32 prefixlen;
	__u8 addr[16];
};

// Value of a prefix entry. A longer PASS entry (the gateway's own /128) shadows a REDIRECT
// prefix that contains it, so packets for the gateway itself reach its stack.
enum prefix_action { ACTION_PASS = 0, ACTION_REDIRECT = 1 };

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct prefix_key);
	__type(value, __u32);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} client_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct prefix_key);
	__type(value, __u32);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} lan_prefixes SEC(".maps");

// Written by the loader: where to send packets. A zero index means "not configured": pass.
// The rest makes the programs answer like a router (RFC 4443): an MTU of 0 sends no Packet
// Too Big, a source of :: sends no error toward that side, an interval of 0 limits nothing.
struct datapath_config {
	__u32 tunnel_ifindex;
	__u32 lan_ifindex;
	__u32 tunnel_mtu;
	__u32 lan_mtu;
	__u32 icmp_interval_ms; // per destination, as net.ipv6.icmp.ratelimit
	__u32 flags;		// CONFIG_*
	struct in6_addr lan_source;    // source of errors sent to the LAN
	struct in6_addr tunnel_source; // source of errors sent to the clients
	__u8 lan_mac[ETH_ALEN];	// the LAN device's address, for Neighbor Advertisements
	__u8 pad[2];
};

// lan_ingress answers Neighbor Solicitations for the clients (gateway.ndp: datapath).
#define CONFIG_ANSWER_NS 1
// lan_ingress answers those sent to a client's address itself, a LAN host's reachability
// probes (gateway.ndp: kernel, whose proxy entries answer them only while the host forwards).
#define CONFIG_ANSWER_UNICAST_NS 2

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct datapath_config);
	__uint(max_entries, 1);
} config SEC(".maps");

// Indexes of the per-CPU counters; the loader reads them in this order.
enum counter {
	COUNTER_LAN_TO_TUNNEL = 0,
	COUNTER_TUNNEL_TO_LAN = 1,
	COUNTER_PASSED = 2,
	COUNTER_HOP_LIMIT_EXPIRED = 3,
	COUNTER_ERRORS = 4,
	COUNTER_TIME_EXCEEDED = 5,
	COUNTER_PACKET_TOO_BIG = 6,
	COUNTER_ICMP_RATE_LIMITED = 7,
	COUNTER_NS_ANSWERED = 8,
	COUNTER_POLICY_DENIED = 9,
	COUNTER_PROHIBITED = 10,
	COUNTER_COUNT = 11,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, COUNTER_COUNT);
} counters SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);
	if (value)
		*value += 1;
}

static __always_inline int pass(void)
{
	count(COUNTER_PASSED);
	return TC_ACT_UNSPEC;
}

enum verdict { VERDICT_PASS, VERDICT_REDIRECT, VERDICT_EXPIRED };

static __always_inline int is_unspecified(const struct in6_addr *a)
{
	return (a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1] | a->in6_u.u6_addr32[2] |
		a->in6_u.u6_addr32[3]) == 0;
}

static __always_inline int is_loopback(const struct in6_addr *a)
{
	return (a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1] | a->in6_u.u6_addr32[2]) == 0 &&
	       a->in6_u.u6_addr32[3] == bpf_htonl(1);
}

// Not link-local (fe80::/10), multicast, unspecified or loopback.
static __always_inline int is_forwardable_source(const struct in6_addr *a)
{
	__u8 first = a->in6_u.u6_addr8[0];
	if (first == 0xff || (first == 0xfe && (a->in6_u.u6_addr8[1] & 0xc0) == 0x80))
		return 0;
	return !is_unspecified(a) && !is_loopback(a);
}

static __always_inline int lookup_redirect(void *prefixes, struct prefix_key *key)
{
	__u32 *action = bpf_map_lookup_elem(prefixes, key);
	return action && *action == ACTION_REDIRECT;
}

// `prefixes` decides; a destination also found in `exclude` is passed. The tunnel side
// excludes the VPN clients: their /128s lie inside the LAN prefix (proxy NDP),
// yet must never be sent to the LAN, where only the gateway itself answers for them.
static __always_inline enum verdict classify(struct __sk_buff *skb, __u32 offset, void *prefixes,
					     void *exclude)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + offset;

	if ((void *)(ip6 + 1) > end)
		return VERDICT_PASS;
	if (ip6->version != 6)
		return VERDICT_PASS;
	// Multicast is link business (ND, MLD): never forwarded.
	if (ip6->daddr.in6_u.u6_addr8[0] == 0xff)
		return VERDICT_PASS;
	// Nor is anything from a source a router does not forward from (ip6_forward): link-local,
	// multicast, unspecified or loopback. The stack, which forwards nothing, drops it.
	if (!is_forwardable_source(&ip6->saddr))
		return VERDICT_PASS;

	struct prefix_key key = { .prefixlen = 128 };
	__builtin_memcpy(key.addr, ip6->daddr.in6_u.u6_addr8, 16);
	if (!lookup_redirect(prefixes, &key))
		return VERDICT_PASS;
	if (exclude && lookup_redirect(exclude, &key))
		return VERDICT_PASS;

	// Neighbour discovery for a redirected address (NUD probes to a client) is answered by
	// the gateway's proxy NDP (or, before this, by answer_solicitation), so it goes to the stack.
	if (ip6->nexthdr == IPPROTO_ICMPV6) {
		struct icmp6hdr *icmp = (void *)(ip6 + 1);
		if ((void *)(icmp + 1) > end)
			return VERDICT_PASS;
		if (icmp->icmp6_type >= 133 && icmp->icmp6_type <= 137)
			return VERDICT_PASS;
	}
	if (ip6->hop_limit <= 1)
		return VERDICT_EXPIRED;
	return VERDICT_REDIRECT;
}

static __always_inline struct datapath_config *load_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

// ICMPv6 errors (RFC 4443), built in the invoking packet's skb and sent back out of the
// device it came in on, as the kernel's ip6_forward would send them with icmpv6_send.

// An error and its quote fit the IPv6 minimum MTU (RFC 4443 2.4 c).
#define ICMP_ERROR_MAX 1280
#define ICMP_HEADERS (sizeof(struct ipv6hdr) + sizeof(struct icmp6hdr))
#define ICMP_QUOTE_MAX (ICMP_ERROR_MAX - ICMP_HEADERS)
// net/ipv4/inetpeer.c XRLIM_BURST_FACTOR: a destination may receive this many at once.
#define ICMP_BURST 6
#define ICMP_HOP_LIMIT 64

// Token bucket per destination, in nanoseconds (inet_peer_xrlim_allow, with ns for jiffies).
struct icmp_bucket {
	__u64 last;
	__u64 tokens;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct in6_addr);
	__type(value, struct icmp_bucket);
	__uint(max_entries, 16384);
} icmp_buckets SEC(".maps");

// The quote is copied here to be summed: bpf_csum_diff takes at most 512 bytes at a time.
struct icmp_scratch {
	__u8 bytes[3 * 512];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct icmp_scratch);
	__uint(max_entries, 1);
} icmp_scratch SEC(".maps");

// What the checksum covers before the quote: the pseudo-header (RFC 8200 8.1) and the
// ICMPv6 header with a zero checksum.
struct icmp_sum_head {
	struct in6_addr source;
	struct in6_addr destination;
	__be32 length;
	__be32 next_header;
	struct icmp6hdr icmp;
};

// The upper-layer header behind up to 6 extension headers (RFC 8200 4; hop-by-hop, routing,
// fragment, destination options, AH): its protocol in *next, its offset in *offset. A fragment
// other than the first holds none (*next stays IPPROTO_FRAGMENT); a longer chain, or one that
// cannot be read, is UPPER_UNKNOWN.
enum upper_layer { UPPER_FOUND, UPPER_LATER_FRAGMENT, UPPER_UNKNOWN };
#define EXTENSION_HEADERS_MAX 6

static __always_inline int is_extension_header(__u8 next)
{
	return next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_FRAGMENT ||
	       next == IPPROTO_DSTOPTS || next == IPPROTO_AH;
}

// A fragment header's identification, and whether it is a first fragment with more to come
// (a later fragment is told by UPPER_LATER_FRAGMENT); `found` is 0 without a fragment header.
// `data` is where the fragmentable part begins in the packet (after the fragment header),
// `offset` the fragment's offset within it, in bytes.
struct fragment_info {
	__u32 id;
	__u32 data;
	__u16 offset;
	__u8 found;
	__u8 first;
};

static __always_inline enum upper_layer find_upper_layer(struct __sk_buff *skb, __u32 l2, __u8 *next,
							  __u32 *offset, struct fragment_info *fragment)
{
	__u32 at = l2 + sizeof(struct ipv6hdr);
	__u8 header = *next;
	for (int i = 0; i < EXTENSION_HEADERS_MAX; i++) {
		__u8 bytes[8];
		switch (header) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			if (bpf_skb_load_bytes(skb, at, bytes, 2))
				return UPPER_UNKNOWN;
			header = bytes[0];
			at += (bytes[1] + 1) * 8;
			break;
		case IPPROTO_FRAGMENT:
			if (bpf_skb_load_bytes(skb, at, bytes, 8))
				return UPPER_UNKNOWN;
			if (fragment) {
				fragment->found = 1;
				fragment->first = bytes[3] & 1; // M: more fragments follow (offset 0 below)
				__builtin_memcpy(&fragment->id, bytes + 4, 4);
				fragment->data = at + 8;
				fragment->offset = (((__u16)bytes[2] << 8) | bytes[3]) & 0xfff8;
			}
			if ((((__u16)bytes[2] << 8) | bytes[3]) & 0xfff8) {
				*next = IPPROTO_FRAGMENT;
				*offset = at;
				return UPPER_LATER_FRAGMENT;
			}
			header = bytes[0];
			at += 8;
			break;
		case IPPROTO_AH:
			if (bpf_skb_load_bytes(skb, at, bytes, 2))
				return UPPER_UNKNOWN;
			header = bytes[0];
			at += (bytes[1] + 2) * 4;
			break;
		default:
			*next = header;
			*offset = at;
			return UPPER_FOUND;
		}
	}
	*next = header;
	*offset = at;
	return UPPER_UNKNOWN;
}

// RFC 4443 2.4 (e.1), as the kernel's is_ineligible: is the packet an ICMPv6 error, its
// header found behind the extension headers? A fragment other than the first has no header
// to look at and is not one; an unreadable chain is taken for one (no error sent).
static __always_inline int is_icmp_error(struct __sk_buff *skb, __u32 l2, __u8 next)
{
	__u32 offset = 0;
	switch (find_upper_layer(skb, l2, &next, &offset, NULL)) {
	case UPPER_LATER_FRAGMENT:
		return 0;
	case UPPER_UNKNOWN:
		return 1;
	case UPPER_FOUND:
		break;
	}
	if (next != IPPROTO_ICMPV6)
		return 0;
	__u8 type;
	if (bpf_skb_load_bytes(skb, offset, &type, 1))
		return 1;
	return type < 128;
}

// NOT_SENT leaves the packet as it was; FAILED means it was cut or moved already.
enum icmp_outcome { ICMP_SENT, ICMP_LIMITED, ICMP_NOT_SENT, ICMP_FAILED };

// All destinations together, as net.ipv4.icmp_msgs_per_sec and icmp_msgs_burst (which the
// kernel applies to ICMPv6 too): without it, spoofed sources would each get a burst.
#define ICMP_GLOBAL_PER_SECOND 1000
#define ICMP_GLOBAL_BURST 50

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct icmp_bucket);
	__uint(max_entries, 1);
} icmp_global_bucket SEC(".maps");

// Adds the time since the last call to the bucket (at most `burst` intervals' worth) and takes
// one interval if it is there. Racy across CPUs like the kernel's: a few extra at worst.
static __always_inline int take_token(struct icmp_bucket *bucket, __u64 now, __u64 interval, __u64 burst)
{
	__u64 tokens = bucket->tokens + (now - bucket->last);
	bucket->last = now;
	if (tokens > burst * interval)
		tokens = burst * interval;
	int allowed = tokens >= interval;
	if (allowed)
		tokens -= interval;
	bucket->tokens = tokens;
	return allowed;
}

static __always_inline int icmp_allowed(const struct in6_addr *destination, __u32 interval_ms)
{
	if (interval_ms == 0)
		return 1;
	__u64 now = bpf_ktime_get_ns();
	__u32 zero = 0;
	struct icmp_bucket *global = bpf_map_lookup_elem(&icmp_global_bucket, &zero);
	if (!global || !take_token(global, now, 1000000000 / ICMP_GLOBAL_PER_SECOND, ICMP_GLOBAL_BURST))
		return 0;
	__u64 interval = (__u64)interval_ms * 1000000;
	struct icmp_bucket *bucket = bpf_map_lookup_elem(&icmp_buckets, destination);
	if (!bucket) {
		// A new destination starts with a full bucket, as a new inet_peer does.
		struct icmp_bucket fresh = { .last = now, .tokens = (ICMP_BURST - 1) * interval };
		bpf_map_update_elem(&icmp_buckets, destination, &fresh, BPF_ANY);
		return 1;
	}
	return take_token(bucket, now, interval, ICMP_BURST);
}

static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

// The value in the quoted packet's UDP or TCP checksum field when it equals the sum of its
// pseudo-header (a checksum left for the device to fill in, see icmp_error); 0 otherwise.
// Only for an upper-layer header right after the IPv6 header, where such a sender puts it.
static __always_inline __u16 pending_l4_checksum(__u8 *quote, __u32 length)
{
	__u8 protocol = quote[6];
	__u32 field;
	if (protocol == IPPROTO_UDP)
		field = sizeof(struct ipv6hdr) + 6;
	else if (protocol == IPPROTO_TCP)
		field = sizeof(struct ipv6hdr) + 16;
	else
		return 0;
	if (length < field + 2)
		return 0;
	struct {
		__be32 length;
		__be32 next_header;
	} tail = {
		.length = bpf_htonl(((__u32)quote[4] << 8) | quote[5]),
		.next_header = bpf_htonl(protocol),
	};
	// Source and destination: 32 bytes from offset 8.
	__s64 sum = bpf_csum_diff(NULL, 0, (void *)(quote + 8), 32, 0);
	if (sum < 0)
		return 0;
	sum = bpf_csum_diff(NULL, 0, (void *)&tail, sizeof(tail), sum);
	if (sum < 0)
		return 0;
	__u16 pseudo = (__u16)~csum_fold(sum);
	__u16 value = *(__u16 *)(quote + (field & 0x3f));
	return value == pseudo ? value : 0;
}

// Turns the packet at `l2` (0 on the tunnel, 14 on the LAN) into an ICMPv6 error for its
// sender, to be redirected back out of the device it came in on. Follows RFC 4443 2.4 (e):
// no error about an error, nor to an unspecified or multicast source. Packet Too Big is not
// rate-limited (by neither bucket): the kernel's default net.ipv6.icmp.ratemask (0-1,3-127)
// exempts it, as path MTU discovery needs one per path; it is never larger than the packet.
static __always_inline enum icmp_outcome icmp_error(struct __sk_buff *skb, __u32 l2, __u8 type,
						    __u8 code, __u32 mtu, const struct in6_addr *source,
						    __u32 interval_ms)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + l2;
	if ((void *)(ip6 + 1) > end || is_unspecified(source))
		return ICMP_NOT_SENT;
	if (ip6->saddr.in6_u.u6_addr8[0] == 0xff || is_unspecified(&ip6->saddr))
		return ICMP_NOT_SENT;
	if (is_icmp_error(skb, l2, ip6->nexthdr))
		return ICMP_NOT_SENT;

	struct ethhdr reply_eth;
	reply_eth.h_proto = bpf_htons(ETH_P_IPV6);
	if (l2) {
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) > end)
			return ICMP_NOT_SENT;
		__builtin_memcpy(reply_eth.h_dest, eth->h_source, ETH_ALEN);
		__builtin_memcpy(reply_eth.h_source, eth->h_dest, ETH_ALEN);
	}
	struct icmp_sum_head head = {};
	head.source = *source;
	head.destination = ip6->saddr;
	if (type != ICMPV6_PKT_TOOBIG && !icmp_allowed(&head.destination, interval_ms))
		return ICMP_LIMITED;

	__u32 zero = 0;
	struct icmp_scratch *scratch = bpf_map_lookup_elem(&icmp_scratch, &zero);
	if (!scratch)
		return ICMP_NOT_SENT;
	__u32 quote = skb->len - l2;
	// Cut to what fits; a GSO aggregate (GRO, or a local sender's TSO/USO) is cut even when
	// it fits, since changing the tail is what ends its GSO state (skb_gso_reset).
	if (quote > ICMP_QUOTE_MAX || skb->gso_size != 0) {
		quote = quote > ICMP_QUOTE_MAX ? ICMP_QUOTE_MAX : quote;
		if (bpf_skb_change_tail(skb, l2 + quote, 0))
			return ICMP_FAILED;
	}
	if (quote < sizeof(struct ipv6hdr) || quote > ICMP_QUOTE_MAX)
		return ICMP_FAILED;
	if (bpf_skb_load_bytes(skb, l2, scratch->bytes, quote))
		return ICMP_FAILED;
	// An odd tail is summed as if padded with zeros (RFC 1071).
	scratch->bytes[quote] = 0;
	scratch->bytes[quote + 1] = 0;
	scratch->bytes[quote + 2] = 0;
	__u32 padded = (quote + 3) & ~3U;

	head.length = bpf_htonl(sizeof(struct icmp6hdr) + quote);
	head.next_header = bpf_htonl(IPPROTO_ICMPV6);
	head.icmp.icmp6_type = type;
	head.icmp.icmp6_code = code;
	head.icmp.icmp6_dataun.un_data32[0] = bpf_htonl(mtu);
	__s64 sum = bpf_csum_diff(NULL, 0, (void *)&head, sizeof(head), 0);
	if (sum < 0)
		return ICMP_FAILED;
	// A packet whose UDP or TCP checksum is still to be filled in (CHECKSUM_PARTIAL: a local
	// sender's, over a veth or virtio) keeps that state through the rewrite, and the stack or
	// the NIC fills it in at egress, inside the quote, after this checksum. The field then
	// holds the pseudo-header's sum, which is how it is recognised here. Whatever the fill
	// writes, the quoted segment then sums to minus that value (its checksum is valid against
	// the pseudo-header), so the error's checksum is computed for the quote as it will be.
	__u16 pending = pending_l4_checksum(scratch->bytes, quote);
	if (pending) {
		sum = bpf_csum_diff(NULL, 0, (void *)scratch->bytes, sizeof(struct ipv6hdr), sum);
		if (sum < 0)
			return ICMP_FAILED;
		head.icmp.icmp6_cksum = csum_fold(sum + (__u16)~pending);
		goto built;
	}
	__u32 chunk = padded < 512 ? padded : 512;
	sum = bpf_csum_diff(NULL, 0, (void *)scratch->bytes, chunk & 0x3fc, sum);
	if (padded > 512) {
		chunk = padded - 512 < 512 ? padded - 512 : 512;
		sum = bpf_csum_diff(NULL, 0, (void *)&scratch->bytes[512], chunk & 0x3fc, sum);
	}
	if (padded > 1024) {
		chunk = padded - 1024 < 512 ? padded - 1024 : 512;
		sum = bpf_csum_diff(NULL, 0, (void *)&scratch->bytes[1024], chunk & 0x3fc, sum);
	}
	if (sum < 0)
		return ICMP_FAILED;
	head.icmp.icmp6_cksum = csum_fold(sum);
built:

	// Room for the new IPv6 and ICMPv6 headers between the MAC header (if any) and the
	// quote; the network header moves to the new IPv6 header.
	if (bpf_skb_adjust_room(skb, ICMP_HEADERS, BPF_ADJ_ROOM_MAC, 0))
		return ICMP_FAILED;
	struct ipv6hdr reply = {
		.version = 6,
		.payload_len = bpf_htons(sizeof(struct icmp6hdr) + quote),
		.nexthdr = IPPROTO_ICMPV6,
		.hop_limit = ICMP_HOP_LIMIT,
		.saddr = head.source,
		.daddr = head.destination,
	};
	if (l2 && bpf_skb_store_bytes(skb, 0, &reply_eth, sizeof(reply_eth), 0))
		return ICMP_FAILED;
	if (bpf_skb_store_bytes(skb, l2, &reply, sizeof(reply), 0) ||
	    bpf_skb_store_bytes(skb, l2 + sizeof(reply), &head.icmp, sizeof(head.icmp), 0))
		return ICMP_FAILED;
	return ICMP_SENT;
}

// Sends the error out of the device the packet came in on; -1 when none could be sent and
// the packet is untouched.
static __always_inline int answer(struct __sk_buff *skb, __u32 l2, __u8 type, __u8 code, __u32 mtu,
				  const struct in6_addr *source, __u32 interval_ms)
{
	switch (icmp_error(skb, l2, type, code, mtu, source, interval_ms)) {
	case ICMP_SENT:
		count(type == ICMPV6_PKT_TOOBIG	 ? COUNTER_PACKET_TOO_BIG
		      : type == ICMPV6_DEST_UNREACH ? COUNTER_PROHIBITED
						    : COUNTER_TIME_EXCEEDED);
		return bpf_redirect(skb->ifindex, 0);
	case ICMP_LIMITED:
		count(COUNTER_ICMP_RATE_LIMITED);
		return TC_ACT_SHOT;
	case ICMP_FAILED:
		count(COUNTER_ERRORS);
		return TC_ACT_SHOT;
	case ICMP_NOT_SENT:
		break;
	}
	return -1;
}

// Larger than the MTU of the device it is redirected to (`l2`: the MAC header's length). A
// GSO aggregate is as long as its segments are (skb_gso_validate_network_len, as the
// forwarding path's ip6_pkt_too_big), each checked against that device's MTU.
static __always_inline int too_big(struct __sk_buff *skb, __u32 l2, __u32 mtu, __u32 ifindex)
{
	if (mtu == 0 || skb->len - l2 <= mtu)
		return 0;
	if (skb->gso_size == 0)
		return 1;
	// With BPF_MTU_CHK_SEGS the helper takes no length adjustment (-EINVAL): an aggregate
	// is longer than any MTU with or without its MAC header, so only the segments decide.
	__u32 length = 0;
	return bpf_check_mtu(skb, ifindex, &length, 0, BPF_MTU_CHK_SEGS) == BPF_MTU_CHK_RET_SEGS_TOOBIG;
}

#include "ndp.h"
#include "policy.h"

// A packet the policy denies is dropped, and its sender gets Destination Unreachable,
// "communication administratively prohibited" (RFC 4443 3.1 code 1), rate-limited like Time
// Exceeded, as from a router with a reject rule. Checked before Packet Too Big: a denied
// packet tells nothing about the path behind the gateway.
static __always_inline int reject(struct __sk_buff *skb, __u32 l2, const struct in6_addr *source,
				  __u32 interval_ms)
{
	count(COUNTER_POLICY_DENIED);
	int action = answer(skb, l2, ICMPV6_DEST_UNREACH, ICMPV6_ADM_PROHIBITED, 0, source, interval_ms);
	return action < 0 ? TC_ACT_SHOT : action;
}

// Ethernet frames from the LAN: IPv6 for a VPN client goes to the tunnel. The tunnel is a
// layer-3 device, so bpf_redirect strips the MAC header (__bpf_redirect_no_mac).
SEC("tc")
int lan_ingress(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return pass();
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return pass();

	struct datapath_config *cfg = load_config();
	if (!cfg || cfg->tunnel_ifindex == 0)
		return pass();

	int action;
	if (cfg->flags & (CONFIG_ANSWER_NS | CONFIG_ANSWER_UNICAST_NS)) {
		action = answer_solicitation(skb, cfg, !(cfg->flags & CONFIG_ANSWER_NS));
		if (action >= 0)
			return action;
	}
	// Only frames sent to the gateway's MAC: in promiscuous mode the device also sees frames
	// between other hosts, and redirecting those would duplicate them.
	if (skb->pkt_type != PACKET_HOST)
		return pass();

	switch (classify(skb, sizeof(struct ethhdr), &client_prefixes, NULL)) {
	case VERDICT_PASS:
		return pass();
	case VERDICT_EXPIRED:
		count(COUNTER_HOP_LIMIT_EXPIRED);
		action = answer(skb, sizeof(struct ethhdr), ICMPV6_TIME_EXCEED, 0, 0, &cfg->lan_source,
				cfg->icmp_interval_ms);
		return action < 0 ? TC_ACT_UNSPEC : action;
	case VERDICT_REDIRECT:
		break;
	}
	__u32 word = policy_word();
	if (!policy_allows(skb, sizeof(struct ethhdr), word, 0))
		return reject(skb, sizeof(struct ethhdr), &cfg->lan_source, cfg->icmp_interval_ms);
	// Without a source address for the error the packet goes on: WireGuard fragments
	// the outer datagram, which beats losing it.
	if (too_big(skb, sizeof(struct ethhdr), cfg->tunnel_mtu, cfg->tunnel_ifindex)) {
		action = answer(skb, sizeof(struct ethhdr), ICMPV6_PKT_TOOBIG, 0, cfg->tunnel_mtu,
				&cfg->lan_source, cfg->icmp_interval_ms);
		if (action >= 0)
			return action;
	}

	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	if ((void *)(ip6 + 1) > end) {
		count(COUNTER_ERRORS);
		return TC_ACT_UNSPEC;
	}
	// IPv6 has no header checksum: the hop limit changes alone.
	ip6->hop_limit -= 1;
	count(COUNTER_LAN_TO_TUNNEL);
	return bpf_redirect(cfg->tunnel_ifindex, 0);
}

// Bare IPv6 packets from the tunnel (no MAC header): packets for the LAN get a placeholder
// Ethernet header, which bpf_redirect_neigh needs to pull, and the neighbour subsystem fills
// in the MAC addresses.
SEC("tc")
int tunnel_ingress(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return pass();

	struct datapath_config *cfg = load_config();
	if (!cfg || cfg->lan_ifindex == 0)
		return pass();

	int action;
	switch (classify(skb, 0, &lan_prefixes, &client_prefixes)) {
	case VERDICT_PASS:
		return pass();
	case VERDICT_EXPIRED:
		count(COUNTER_HOP_LIMIT_EXPIRED);
		action = answer(skb, 0, ICMPV6_TIME_EXCEED, 0, 0, &cfg->tunnel_source, cfg->icmp_interval_ms);
		return action < 0 ? TC_ACT_UNSPEC : action;
	case VERDICT_REDIRECT:
		break;
	}
	// Before the FIB lookup: the fast way and the slow way both carry only allowed packets.
	__u32 word = policy_word();
	if (!policy_allows(skb, 0, word, 1))
		return reject(skb, 0, &cfg->tunnel_source, cfg->icmp_interval_ms);
	if (too_big(skb, 0, cfg->lan_mtu, cfg->lan_ifindex)) {
		action = answer(skb, 0, ICMPV6_PKT_TOOBIG, 0, cfg->lan_mtu, &cfg->tunnel_source,
				cfg->icmp_interval_ms);
		if (action >= 0)
			return action;
	}

	// With the LAN host's neighbour entry valid, its address (the next hop the FIB gives)
	// goes to bpf_redirect_neigh, which then skips its own route lookup and the dst it would
	// take: that lookup costs more than the rest of the path (`wgkeeper-bench pps`). Without a
	// valid entry the packet goes the slow way, with a dst, so that a failed resolution still
	// sends Address Unreachable (ndisc_error_report acts only through the skb's dst).
	struct bpf_fib_lookup fib = {
		.family = AF_INET6,
		.ifindex = cfg->lan_ifindex,
	};
	{
		void *data = (void *)(long)skb->data;
		void *end = (void *)(long)skb->data_end;
		struct ipv6hdr *ip6 = data;
		if ((void *)(ip6 + 1) > end) {
			count(COUNTER_ERRORS);
			return TC_ACT_UNSPEC;
		}
		__builtin_memcpy(fib.ipv6_src, ip6->saddr.in6_u.u6_addr8, sizeof(fib.ipv6_src));
		__builtin_memcpy(fib.ipv6_dst, ip6->daddr.in6_u.u6_addr8, sizeof(fib.ipv6_dst));
	}
	// Not BPF_FIB_LOOKUP_DIRECT: the lookup follows `ip rule` as the kernel's own does. It
	// answers only for a LAN that forwards (BPF_FIB_LKUP_RET_FWD_DISABLED otherwise), as with
	// ndp: kernel; with ndp: datapath every packet takes the slow way.
	int resolved = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT) ==
			       BPF_FIB_LKUP_RET_SUCCESS &&
		       fib.ifindex == cfg->lan_ifindex;
	struct bpf_redir_neigh next_hop = { .nh_family = AF_INET6 };
	__builtin_memcpy(next_hop.ipv6_nh, fib.ipv6_dst, sizeof(next_hop.ipv6_nh));

#ifdef DATAPATH_MEASURE_HOT
	// Only in the build PolicyKernelTests.testPerPacketCost compiles for itself (never the one
	// the daemon loads): the packet is left as it came, so one test run can repeat the program
	// and measure it warm, as lan_ingress is.
	return TC_ACT_REDIRECT;
#endif
	// Grow the head first: on failure the packet is still untouched.
	if (bpf_skb_change_head(skb, sizeof(struct ethhdr), 0) != 0) {
		count(COUNTER_ERRORS);
		return TC_ACT_UNSPEC;
	}
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	if ((void *)(ip6 + 1) > end) {
		count(COUNTER_ERRORS);
		return TC_ACT_SHOT;
	}
	__builtin_memset(eth->h_dest, 0, ETH_ALEN);
	__builtin_memset(eth->h_source, 0, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	ip6->hop_limit -= 1;
	count(COUNTER_TUNNEL_TO_LAN);
	if (resolved)
		return bpf_redirect_neigh(cfg->lan_ifindex, &next_hop, sizeof(next_hop), 0);
	return bpf_redirect_neigh(cfg->lan_ifindex, NULL, 0, 0);
}
