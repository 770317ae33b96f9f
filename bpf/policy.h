// SPDX-License-Identifier: GPL-2.0
// Access policy of the gateway path (issue 17; Sources/Reconciler/PolicyCompiler.swift is the
// compiler, DesiredPolicy.evaluate the reference these programs must agree with).
//
// Two map sets (generation 0 and 1) and one selecting word: the loader fills the set not in
// use, then switches the word with one aligned 4-byte store. A program reads the word once per
// packet and uses one set throughout, so each packet meets either the old policy or the new
// one, never a mixture and never no policy.

// policy_select bits: which set is live and the two defaults.
#define POLICY_GENERATION 1
#define POLICY_CLIENT_DENY 2
#define POLICY_LAN_SHIFT 2
#define POLICY_LAN_MASK (3 << POLICY_LAN_SHIFT)
enum policy_lan { POLICY_LAN_ALLOW = 0, POLICY_LAN_DENY = 1, POLICY_LAN_REPLIES = 2 };

#define POLICY_ITEMS 16
#define POLICY_RULES_MAX 4096
// Counter slots per generation: the two defaults' denials, then one per rule.
#define POLICY_SLOT_CLIENT_DENIED 0
#define POLICY_SLOT_LAN_DENIED 1
#define POLICY_SLOT_RULES 2
#define POLICY_SLOTS (POLICY_RULES_MAX + POLICY_SLOT_RULES)
#define POLICY_ENTRIES 65536
// Distinct destination prefix lengths one generation's rules may use.
#define POLICY_LENGTHS 8

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} policy_select SEC(".maps");

// What each generation's maps hold, indexed by generation: the destination prefix lengths the
// entries use, longest first, and whether any client prefix is shorter than /128.
#define POLICY_INFO_SOURCE_PREFIXES 1
struct policy_info {
	__u32 flags;
	__u32 length_count;
	__u8 lengths[POLICY_LENGTHS];
	__u32 rule_count; // for the loader's read-back; the programs do not use it
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct policy_info);
	__uint(max_entries, 2);
} policy_info SEC(".maps");

// A client's /128 → its class (hash: one probe, where an LPM trie of 10 000 addresses costs
// a walk); shorter client prefixes go to the trie, consulted only on a miss and only when the
// generation has any. A miss everywhere is class 0.
#define POLICY_SOURCES(n)                                                                          \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_HASH);                                                   \
		__type(key, struct in6_addr);                                                      \
		__type(value, __u32);                                                              \
		__uint(max_entries, POLICY_ENTRIES);                                               \
		__uint(map_flags, BPF_F_NO_PREALLOC);                                              \
	} policy_sources_##n SEC(".maps");                                                         \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);                                               \
		__type(key, struct prefix_key);                                                    \
		__type(value, __u32);                                                              \
		__uint(max_entries, POLICY_ENTRIES);                                               \
		__uint(map_flags, BPF_F_NO_PREALLOC);                                              \
	} policy_source_prefixes_##n SEC(".maps")

// (class, prefix length, LAN prefix): probed for each length of policy_info, longest first;
// the first hit is the longest matching destination of the class.
struct policy_key {
	__u32 class;
	__u32 length;
	__u8 addr[16];
};

// One protocol/port range of a rule; proto 0 is any protocol.
struct policy_item {
	__u8 proto;
	__u8 pad;
	__u16 rule;
	__u16 port_first;
	__u16 port_last;
};

struct policy_entry {
	__u32 count;
	__u32 pad;
	struct policy_item items[POLICY_ITEMS];
};

#define POLICY_RULES(n)                                                                            \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_HASH);                                                   \
		__type(key, struct policy_key);                                                    \
		__type(value, struct policy_entry);                                                \
		__uint(max_entries, POLICY_ENTRIES);                                               \
		__uint(map_flags, BPF_F_NO_PREALLOC);                                              \
	} policy_rules_##n SEC(".maps")

POLICY_SOURCES(0);
POLICY_SOURCES(1);
POLICY_RULES(0);
POLICY_RULES(1);

// Per generation: POLICY_SLOTS packet counters (the loader zeroes a set's before using it).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2 * POLICY_SLOTS);
} policy_counters SEC(".maps");

static __always_inline void policy_count(__u32 generation, __u32 slot)
{
	__u32 index = (generation & 1) * POLICY_SLOTS + slot;
	if (index >= 2 * POLICY_SLOTS)
		return;
	__u64 *value = bpf_map_lookup_elem(&policy_counters, &index);
	if (value)
		*value += 1;
}

static __always_inline __u32 policy_word(void)
{
	__u32 zero = 0;
	__u32 *word = bpf_map_lookup_elem(&policy_select, &zero);
	return word ? *(volatile __u32 *)word : 0;
}

static __always_inline __u32 policy_mask(__u32 length, __u32 word)
{
	if (length >= 32 * (word + 1))
		return 0xffffffff;
	if (length <= 32 * word)
		return 0;
	return bpf_htonl(0xffffffff << (32 * (word + 1) - length));
}

// The rule that allows a flow between `client` and `lan` (protocol, LAN-side port), or -1, in
// the maps of one generation. With `any_protocol` the client's first rule for the address will do.
static __always_inline int policy_lookup_in(__u32 index, void *sources, void *source_prefixes, void *rules,
					    const struct in6_addr *client, const struct in6_addr *lan,
					    __u32 proto, __u32 port, __u32 any_protocol)
{
	struct policy_info *info = bpf_map_lookup_elem(&policy_info, &index);
	if (!info)
		return -1;
	__u32 *class = bpf_map_lookup_elem(sources, client);
	if (!class && (info->flags & POLICY_INFO_SOURCE_PREFIXES)) {
		struct prefix_key source = { .prefixlen = 128 };
		__builtin_memcpy(source.addr, client, 16);
		class = bpf_map_lookup_elem(source_prefixes, &source);
	}

	struct policy_key key = { .class = class ? *class : 0 };
	struct policy_entry *entry = NULL;
	__u32 count = info->length_count;
	for (int l = 0; l < POLICY_LENGTHS; l++) {
		if (l >= count)
			break;
		__u32 length = info->lengths[l];
		key.length = length;
		__u32 *address = (__u32 *)key.addr;
		address[0] = lan->in6_u.u6_addr32[0] & policy_mask(length, 0);
		address[1] = lan->in6_u.u6_addr32[1] & policy_mask(length, 1);
		address[2] = lan->in6_u.u6_addr32[2] & policy_mask(length, 2);
		address[3] = lan->in6_u.u6_addr32[3] & policy_mask(length, 3);
		entry = bpf_map_lookup_elem(rules, &key);
		if (entry)
			break;
	}
	if (!entry)
		return -1;
	__u32 items = entry->count;
	for (int i = 0; i < POLICY_ITEMS; i++) {
		if (i >= items)
			break;
		struct policy_item *item = &entry->items[i];
		if (any_protocol)
			return item->rule;
		if (item->proto && item->proto != proto)
			continue;
		if (port < item->port_first || port > item->port_last)
			continue;
		return item->rule;
	}
	return -1;
}

// One copy of the lookup per generation, so that each map lookup names one map: where clang
// merged the two generations' calls into one, the verifier could no longer inline the hash
// lookups and each became a call through the map's ops (90-93 ns added per packet then). The
// copies are inlined into the programs (as __noinline subprograms they cost a BPF call and
// return more, 3-12 ns on the test host); clang keeps them apart as long as each names its
// own maps, which the xlated program shows (one __htab_map_lookup_elem call per lookup).
static __always_inline int policy_lookup_0(const struct in6_addr *client, const struct in6_addr *lan,
					   __u32 proto, __u32 port, __u32 any_protocol)
{
	return policy_lookup_in(0, &policy_sources_0, &policy_source_prefixes_0, &policy_rules_0, client, lan,
				proto, port, any_protocol);
}

static __always_inline int policy_lookup_1(const struct in6_addr *client, const struct in6_addr *lan,
					   __u32 proto, __u32 port, __u32 any_protocol)
{
	return policy_lookup_in(1, &policy_sources_1, &policy_source_prefixes_1, &policy_rules_1, client, lan,
				proto, port, any_protocol);
}

static __always_inline int policy_lookup(__u32 generation, const struct in6_addr *client,
					 const struct in6_addr *lan, __u8 proto, __u16 port, int any_protocol)
{
	if (generation & 1)
		return policy_lookup_1(client, lan, proto, port, any_protocol);
	return policy_lookup_0(client, lan, proto, port, any_protocol);
}

// Whether the packet at `l2` may pass, counting it; `to_lan` says which way it goes.
// Extension headers are not walked: the protocol is the fixed header's next header, and
// TCP/UDP ports are read right after it (0 when the packet is too short to hold them).
static __always_inline int policy_allows(struct __sk_buff *skb, __u32 l2, __u32 word, int to_lan)
{
	__u32 lan_mode = (word & POLICY_LAN_MASK) >> POLICY_LAN_SHIFT;
	if (to_lan) {
		if (!(word & POLICY_CLIENT_DENY))
			return 1;
	} else {
		if (lan_mode == POLICY_LAN_ALLOW)
			return 1;
		if (lan_mode == POLICY_LAN_DENY) {
			policy_count(word, POLICY_SLOT_LAN_DENIED);
			return 0;
		}
		if (!(word & POLICY_CLIENT_DENY))
			return 1; // replies, and the clients may send anything
	}
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + l2;
	if ((void *)(ip6 + 1) > end)
		return 0;
	struct in6_addr source = ip6->saddr, destination = ip6->daddr;
	__u8 proto = ip6->nexthdr;
	__u16 port = 0;
	int any_protocol = 0;
	// The four bytes after the fixed header: ports, or the ICMPv6 type. Read in place when
	// they are in the linear part, copied otherwise.
	__u8 l4[4] = {};
	__u8 *head = (void *)(ip6 + 1);
	if (head + 4 <= (__u8 *)end)
		__builtin_memcpy(l4, head, 4);
	else if (bpf_skb_load_bytes(skb, l2 + sizeof(struct ipv6hdr), l4, 4))
		__builtin_memset(l4, 0, 4);
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
		port = to_lan ? (__u16)l4[2] << 8 | l4[3] : (__u16)l4[0] << 8 | l4[1];
	else if (proto == IPPROTO_ICMPV6 && !to_lan && l4[0] < 128)
		any_protocol = 1;
	int rule = to_lan ? policy_lookup(word, &source, &destination, proto, port, 0)
			  : policy_lookup(word, &destination, &source, proto, port, any_protocol);
	if (rule < 0 || rule >= POLICY_RULES_MAX) {
		policy_count(word, to_lan ? POLICY_SLOT_CLIENT_DENIED : POLICY_SLOT_LAN_DENIED);
		return 0;
	}
	policy_count(word, POLICY_SLOT_RULES + rule);
	return 1;
}
