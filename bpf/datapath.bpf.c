// SPDX-License-Identifier: GPL-2.0
// wgkeeper datapath (DESIGN §1): two TC ingress programs that move IPv6 packets between the
// LAN (layer 2) and the WireGuard tunnel (layer 3) without net.ipv6.conf.all.forwarding.
//
// A packet that is not ours goes on with TC_ACT_UNSPEC: with nothing else attached the stack
// takes it exactly as with TC_ACT_OK, and other TCX programs / cls_bpf filters still see it.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in6.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

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
struct datapath_config {
	__u32 tunnel_ifindex;
	__u32 lan_ifindex;
};

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
	COUNTER_COUNT = 5,
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

static __always_inline int lookup_redirect(void *prefixes, struct prefix_key *key)
{
	__u32 *action = bpf_map_lookup_elem(prefixes, key);
	return action && *action == ACTION_REDIRECT;
}

// `prefixes` decides; a destination also found in `exclude` is passed. The tunnel side
// excludes the VPN clients: their /128s lie inside the LAN prefix (proxy NDP, DESIGN §1),
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

	struct prefix_key key = { .prefixlen = 128 };
	__builtin_memcpy(key.addr, ip6->daddr.in6_u.u6_addr8, 16);
	if (!lookup_redirect(prefixes, &key))
		return VERDICT_PASS;
	if (exclude && lookup_redirect(exclude, &key))
		return VERDICT_PASS;

	// Neighbour discovery for a redirected address (NUD probes to a client) is answered by
	// the gateway's proxy NDP, so it goes to the stack.
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

// Ethernet frames from the LAN: IPv6 for a VPN client goes to the tunnel. The tunnel is a
// layer-3 device, so bpf_redirect strips the MAC header (__bpf_redirect_no_mac).
SEC("tc")
int lan_ingress(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return pass();
	// Only frames sent to the gateway's MAC: in promiscuous mode the device also sees frames
	// between other hosts, and redirecting those would duplicate them.
	if (skb->pkt_type != PACKET_HOST)
		return pass();
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return pass();

	struct datapath_config *cfg = load_config();
	if (!cfg || cfg->tunnel_ifindex == 0)
		return pass();

	switch (classify(skb, sizeof(struct ethhdr), &client_prefixes, NULL)) {
	case VERDICT_PASS:
		return pass();
	case VERDICT_EXPIRED:
		count(COUNTER_HOP_LIMIT_EXPIRED);
		return TC_ACT_UNSPEC;
	case VERDICT_REDIRECT:
		break;
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

	switch (classify(skb, 0, &lan_prefixes, &client_prefixes)) {
	case VERDICT_PASS:
		return pass();
	case VERDICT_EXPIRED:
		count(COUNTER_HOP_LIMIT_EXPIRED);
		return TC_ACT_UNSPEC;
	case VERDICT_REDIRECT:
		break;
	}

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
	return bpf_redirect_neigh(cfg->lan_ifindex, NULL, 0, 0);
}
