// SPDX-License-Identifier: GPL-2.0
// Neighbour discovery for the VPN clients in the program (gateway.ndp: datapath), part of
// datapath.bpf.c (it uses its maps, counters and checksum helpers).
//
// lan_ingress answers a Neighbor Solicitation (RFC 4861 4.3) for a client address itself: the
// frame becomes the Neighbor Advertisement (4.4) the client would send if it sat on the LAN,
// naming the LAN device's MAC, and goes back out of the LAN. LAN hosts then resolve the
// clients to the gateway without proxy entries, so the LAN keeps proxy_ndp = 0 and
// forwarding = 0. Anything that is not a valid solicitation for a client goes to the kernel
// untouched, which validates it again and answers for the gateway's own addresses.
//
// With gateway.ndp: kernel the proxy entries answer address resolution, but the kernel answers
// a solicitation sent to the proxied address itself (a LAN host's reachability probe) only on
// its forwarding path, closed by all.forwarding = 0: the program answers those alone.

#define ND_NEIGHBOR_SOLICITATION 135
#define ND_NEIGHBOR_ADVERTISEMENT 136
#define ND_OPTION_SOURCE_LL 1
#define ND_OPTION_TARGET_LL 2
// RFC 4861 7.1.1: a solicitation that crossed a router is not one.
#define ND_HOP_LIMIT 255
#define NS_MIN 24
// The longest solicitation read: the header and 29 options of 8 bytes. Longer ones (never
// seen in practice) go to the kernel.
#define NS_MAX 256

// The NA's flags word (RFC 4861 4.4), network order: Router stays 0.
#define NA_SOLICITED 0x40000000
#define NA_OVERRIDE 0x20000000

// Neighbor Solicitation and Advertisement share this layout up to their options.
struct nd_message {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be32 flags; // reserved in a solicitation
	struct in6_addr target;
};

// The reply from the IPv6 header on: the advertisement with its target link-layer option.
struct na_packet {
	struct ipv6hdr ip6;
	struct nd_message na;
	__u8 option_type;
	__u8 option_length; // units of 8 bytes
	__u8 mac[ETH_ALEN];
};

// The checksum's pseudo-header (RFC 8200 8.1).
struct pseudo_header {
	struct in6_addr source;
	struct in6_addr destination;
	__be32 length;
	__be32 next_header;
};

static __always_inline int same_address(const struct in6_addr *a, const struct in6_addr *b)
{
	return a->in6_u.u6_addr32[0] == b->in6_u.u6_addr32[0] && a->in6_u.u6_addr32[1] == b->in6_u.u6_addr32[1] &&
	       a->in6_u.u6_addr32[2] == b->in6_u.u6_addr32[2] && a->in6_u.u6_addr32[3] == b->in6_u.u6_addr32[3];
}

// ff02::1:ffXX:XXXX with the target's low 24 bits (RFC 4291 2.7.1).
static __always_inline int is_solicited_node_group(const struct in6_addr *group, const struct in6_addr *target)
{
	return group->in6_u.u6_addr32[0] == bpf_htonl(0xff020000) && group->in6_u.u6_addr32[1] == 0 &&
	       group->in6_u.u6_addr32[2] == bpf_htonl(1) && group->in6_u.u6_addr8[12] == 0xff &&
	       group->in6_u.u6_addr8[13] == target->in6_u.u6_addr8[13] &&
	       group->in6_u.u6_addr8[14] == target->in6_u.u6_addr8[14] &&
	       group->in6_u.u6_addr8[15] == target->in6_u.u6_addr8[15];
}

static __always_inline __s64 checksum_of(const struct pseudo_header *pseudo, void *message, __u32 length, __s64 seed)
{
	__s64 sum = bpf_csum_diff(NULL, 0, (void *)pseudo, sizeof(*pseudo), seed);
	if (sum < 0)
		return sum;
	return bpf_csum_diff(NULL, 0, message, length, sum);
}

// Answers a Neighbor Solicitation for a VPN client from the LAN; returns the TC action, or -1
// when the frame is not one (or not valid, RFC 4861 7.1.1) and goes on untouched. With
// unicast_only, only one sent to the client's address itself (gateway.ndp: kernel).
static __always_inline int answer_solicitation(struct __sk_buff *skb, const struct datapath_config *cfg,
					       int unicast_only)
{
	// To the gateway's MAC (address resolution's unicast probes) or to a multicast group
	// (the solicited-node groups the daemon joins on the LAN); not frames between others.
	if (skb->pkt_type != PACKET_HOST && (unicast_only || skb->pkt_type != PACKET_MULTICAST))
		return -1;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	if ((void *)(ip6 + 1) > end)
		return -1;
	if (unicast_only && ip6->daddr.in6_u.u6_addr8[0] == 0xff)
		return -1;
	if (ip6->version != 6 || ip6->nexthdr != IPPROTO_ICMPV6 || ip6->hop_limit != ND_HOP_LIMIT ||
	    (eth->h_source[0] & 1))
		return -1;
	// What ip6_rcv_core drops before neighbour discovery sees it: a multicast source, or
	// loopback on either side.
	if (ip6->saddr.in6_u.u6_addr8[0] == 0xff || is_loopback(&ip6->saddr) || is_loopback(&ip6->daddr))
		return -1;
	// Only ND carries hop limit 255: the helper runs for little else. It reads past the linear
	// part of the skb too, as the rest of the message is read.
	__u8 type = 0;
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + sizeof(struct ipv6hdr), &type, 1) ||
	    type != ND_NEIGHBOR_SOLICITATION)
		return -1;
	__u32 length = bpf_ntohs(ip6->payload_len);
	if (length < NS_MIN || length > NS_MAX || (length & 7) ||
	    sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + length > skb->len)
		return -1;

	__u32 zero = 0;
	struct icmp_scratch *scratch = bpf_map_lookup_elem(&icmp_scratch, &zero);
	if (!scratch)
		return -1;
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + sizeof(struct ipv6hdr), scratch->bytes, length))
		return -1;
	struct pseudo_header pseudo = {
		.source = ip6->saddr,
		.destination = ip6->daddr,
		.length = bpf_htonl(length),
		.next_header = bpf_htonl(IPPROTO_ICMPV6),
	};
	__s64 sum = checksum_of(&pseudo, scratch->bytes, length, 0);
	if (sum < 0 || csum_fold(sum) != 0)
		return -1;

	struct nd_message *ns = (void *)scratch->bytes;
	if (ns->code != 0 || ns->target.in6_u.u6_addr8[0] == 0xff)
		return -1;
	int dad = is_unspecified(&pseudo.source);
	// Sent to the target itself or to its solicited-node group; duplicate address detection
	// (from ::) only to the group.
	int to_group = is_solicited_node_group(&pseudo.destination, &ns->target);
	if (!to_group && (dad || !same_address(&pseudo.destination, &ns->target)))
		return -1;
	// Every option has a non-zero length and ends inside the message; a probe for duplicate
	// addresses carries no source link-layer address.
	__u32 offset = NS_MIN;
	int source_ll = 0;
	for (int i = 0; i < (NS_MAX - NS_MIN) / 8 && offset < length; i++) {
		// offset < length <= NS_MAX, which clang knows and 6.1's verifier does not: the
		// barrier keeps the masks that prove it.
		__u32 at = offset;
		asm volatile("" : "+r"(at));
		__u8 option_length = scratch->bytes[(at + 1) & (NS_MAX - 1)];
		if (option_length == 0)
			return -1;
		if (scratch->bytes[at & (NS_MAX - 1)] == ND_OPTION_SOURCE_LL)
			source_ll = 1;
		offset += option_length * 8;
	}
	if (offset != length || (dad && source_ll))
		return -1;

	// Ours: a client address (LAN → tunnel map) inside a LAN prefix, which excludes the
	// gateway's own addresses there (their pass entries are longer).
	// Field by field: initialisers here would be copied from a .rodata map.
	struct prefix_key key;
	key.prefixlen = 128;
	__builtin_memcpy(key.addr, ns->target.in6_u.u6_addr8, 16);
	if (!lookup_redirect(&client_prefixes, &key) || !lookup_redirect(&lan_prefixes, &key))
		return -1;

	// RFC 4861 7.2.4: to the soliciting host, or to all nodes when it has no address yet
	// (then not "solicited"). From the target, as the client itself would answer.
	struct ethhdr reply_eth;
	__builtin_memset(&reply_eth, 0, sizeof(reply_eth));
	reply_eth.h_proto = bpf_htons(ETH_P_IPV6);
	__builtin_memcpy(reply_eth.h_source, cfg->lan_mac, ETH_ALEN);
	struct na_packet reply = {
		.ip6 = {
			.version = 6,
			.payload_len = bpf_htons(sizeof(struct nd_message) + 8),
			.nexthdr = IPPROTO_ICMPV6,
			.hop_limit = ND_HOP_LIMIT,
			.saddr = ns->target,
		},
		.na = {
			.type = ND_NEIGHBOR_ADVERTISEMENT,
			.flags = bpf_htonl(dad ? NA_OVERRIDE : NA_SOLICITED | NA_OVERRIDE),
			.target = ns->target,
		},
		.option_type = ND_OPTION_TARGET_LL,
		.option_length = 1,
	};
	__builtin_memcpy(reply.mac, cfg->lan_mac, ETH_ALEN);
	if (dad) {
		// ff02::1 and its MAC 33:33:00:00:00:01 (RFC 2464 7).
		reply.ip6.daddr.in6_u.u6_addr32[0] = bpf_htonl(0xff020000);
		reply.ip6.daddr.in6_u.u6_addr32[3] = bpf_htonl(1);
		reply_eth.h_dest[0] = 0x33;
		reply_eth.h_dest[1] = 0x33;
		reply_eth.h_dest[5] = 1;
	} else {
		reply.ip6.daddr = pseudo.source;
		__builtin_memcpy(reply_eth.h_dest, eth->h_source, ETH_ALEN);
	}
	struct pseudo_header reply_pseudo = {
		.source = reply.ip6.saddr,
		.destination = reply.ip6.daddr,
		.length = bpf_htonl(sizeof(struct nd_message) + 8),
		.next_header = bpf_htonl(IPPROTO_ICMPV6),
	};
	sum = checksum_of(&reply_pseudo, &reply.na, sizeof(struct nd_message) + 8, 0);
	if (sum < 0) {
		count(COUNTER_ERRORS);
		return -1;
	}
	reply.na.checksum = csum_fold(sum);

	// The solicitation is untouched until here: a failure to resize leaves it to the kernel.
	if (bpf_skb_change_tail(skb, sizeof(struct ethhdr) + sizeof(reply), 0)) {
		count(COUNTER_ERRORS);
		return -1;
	}
	// BPF_F_RECOMPUTE_CSUM keeps a CHECKSUM_COMPLETE skb's sum right for a receiver that trusts it.
	if (bpf_skb_store_bytes(skb, 0, &reply_eth, sizeof(reply_eth), BPF_F_RECOMPUTE_CSUM) ||
	    bpf_skb_store_bytes(skb, sizeof(reply_eth), &reply, sizeof(reply), BPF_F_RECOMPUTE_CSUM)) {
		count(COUNTER_ERRORS);
		return TC_ACT_SHOT;
	}
	count(COUNTER_NS_ANSWERED);
	return bpf_redirect(skb->ifindex, 0);
}
