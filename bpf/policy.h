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
// The live set's hash seed (0-7), also in its policy_info: the client's hash needs no other load.
#define POLICY_SEED_SHIFT 8
#define POLICY_SEED_MASK (7 << POLICY_SEED_SHIFT)
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

// The two lookups (client → class, (class, destination) → items) are open-addressing hash
// tables the loader lays out in ARRAY maps: the verifier inlines an array lookup, where a hash
// map's is a call into the kernel (about 30 ns against 3 ns on a host with the SRSO "Safe RET"
// mitigation, PolicyKernelTests.testPerPacketCost). A key sits at most POLICY_PROBES slots
// after its home slot (the loader picks a seed for which every key does, at most half full);
// a probe ends at the first empty slot. Robin Hood placement keeps probes short at that load.
#define POLICY_SLOT_BITS 17
#define POLICY_SOURCE_SLOTS (1 << POLICY_SLOT_BITS)
#define POLICY_RULE_SLOTS (1 << POLICY_SLOT_BITS)
#define POLICY_ITEM_SLOTS 262144
#define POLICY_PROBES 16
#define POLICY_USED 0x80000000

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} policy_select SEC(".maps");

// What each generation's tables hold, indexed by generation: the destination prefix lengths
// the entries use, longest first, whether any client prefix is shorter than /128, the hash seed
// and which lengths class 0 (a client in no source slot) has entries at (bit l: lengths[l]).
#define POLICY_INFO_SOURCE_PREFIXES 1
struct policy_info {
	__u32 flags;
	__u32 length_count;
	__u8 lengths[POLICY_LENGTHS];
	__u32 rule_count; // for the loader's read-back; the programs do not use it
	__u32 seed;
	__u32 default_lengths;
	__u32 pad;
	__u64 masks[POLICY_LENGTHS][2]; // lengths[l] as a mask, in network order, as two words
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct policy_info);
	__uint(max_entries, 2);
} policy_info SEC(".maps");

// A client's /128 → its class, and the lengths its class has entries at (bit l: lengths[l]),
// with POLICY_USED: 0 is an empty slot. Shorter client prefixes go to an LPM trie (value: the
// class), consulted only on a miss and only when the generation has any.
struct policy_source {
	__u64 addr[2];
	__u32 class;
	__u32 lengths;
};

// Each table holds both generations, generation g in the slots from g × its size: one copy
// of the lookup code serves both (the verifier inlines an array lookup only where the call
// names one map, and walks every copy of the probe loops: two copies took it four times as long
// as the programs without a policy).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct policy_source);
	__uint(max_entries, 2 * POLICY_SOURCE_SLOTS);
} policy_sources SEC(".maps");

#define POLICY_SOURCE_PREFIXES(n)                                                                  \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);                                               \
		__type(key, struct prefix_key);                                                    \
		__type(value, __u32);                                                              \
		__uint(max_entries, POLICY_ENTRIES);                                               \
		__uint(map_flags, BPF_F_NO_PREALLOC);                                              \
	} policy_source_prefixes_##n SEC(".maps")

POLICY_SOURCE_PREFIXES(0);
POLICY_SOURCE_PREFIXES(1);

// One protocol/port range of a rule; proto 0 is any protocol.
struct policy_item {
	__u8 proto;
	__u8 pad;
	__u16 rule;
	__u16 port_first;
	__u16 port_last;
};

// (class, prefix length, LAN prefix) → its items: `meta` holds POLICY_USED (0 is an empty
// slot), the first item's index in policy_items << 8 and the item count; the first item is
// also held here, which spares the load of policy_items when it decides. Probed for each
// length the class uses, longest first; the first hit is the longest matching destination of
// the class.
#define POLICY_META_FIRST_SHIFT 8
#define POLICY_META_COUNT 0xff
struct policy_slot {
	__u64 addr[2];
	__u32 tag; // class << 8 | length
	__u32 meta;
	struct policy_item item;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct policy_slot);
	__uint(max_entries, 2 * POLICY_RULE_SLOTS);
} policy_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct policy_item);
	__uint(max_entries, 2 * POLICY_ITEM_SLOTS);
} policy_items SEC(".maps");

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

// An IPv6 address as the two 64-bit words it loads as from memory: the unit of the hashes and
// the compares (half the instructions and registers of four 32-bit words).
struct policy_address {
	__u64 w0, w1;
};

// The home slot of a key: multiply-xor over the address's two words (Datapath.PolicyTables.hash
// is the same function), the product's top bits (the only ones every bit of the key reaches).
// `h` is the seed for a client; for a destination, the seed and the length multiplied once (the
// class then joins by XOR, `policy_class_mix`).
#define POLICY_HASH_MULTIPLIER 0x9e3779b97f4a7c15ULL
static __always_inline __u32 policy_hash(__u64 h, __u64 w0, __u64 w1)
{
	h = (h ^ w0) * POLICY_HASH_MULTIPLIER;
	h = (h ^ w1) * POLICY_HASH_MULTIPLIER;
	return h >> (64 - POLICY_SLOT_BITS);
}

// Whether an item allows the protocol and LAN-side port; with `any_protocol` any item does.
static __always_inline int policy_item_allows(const struct policy_item *item, __u32 proto, __u32 port,
					      __u32 any_protocol)
{
	if (any_protocol)
		return 1;
	if (item->proto && item->proto != proto)
		return 0;
	return port >= item->port_first && port <= item->port_last;
}

// A class's part of an entry's home slot: the top bits of a multiplicative hash (0 for class 0).
#define POLICY_CLASS_MULTIPLIER 0x9e3779b1U
static __always_inline __u32 policy_class_mix(__u32 class)
{
	return (class * POLICY_CLASS_MULTIPLIER) >> (32 - POLICY_SLOT_BITS);
}

// The rule that allows a flow between `client` and `lan` (protocol, LAN-side port), or -1, in
// the tables of `generation`. With `any_protocol` the client's first rule for the address will do.
static __always_inline int policy_lookup(__u32 generation, const struct policy_address *client,
					 const struct policy_address *lan, __u32 proto, __u32 port, __u32 any_protocol)
{
	__u32 index = generation & 1;
	struct policy_info *info = bpf_map_lookup_elem(&policy_info, &index);
	if (!info)
		return -1;
	__u32 seed = (generation & POLICY_SEED_MASK) >> POLICY_SEED_SHIFT;
	__u32 class = 0, lengths = info->default_lengths, found = 0;
	__u64 cw0 = client->w0, cw1 = client->w1;
	__u32 home = policy_hash(seed, cw0, cw1);
	for (__u32 p = 0; p < POLICY_PROBES; p++) {
		__u32 at = index * POLICY_SOURCE_SLOTS + ((home + p) & (POLICY_SOURCE_SLOTS - 1));
		struct policy_source *source = bpf_map_lookup_elem(&policy_sources, &at);
		if (!source || !(source->lengths & POLICY_USED))
			break;
		if (source->addr[0] == cw0 && source->addr[1] == cw1) {
			class = source->class;
			lengths = source->lengths;
			found = 1;
			break;
		}
	}
	if (__builtin_expect(!found && (info->flags & POLICY_INFO_SOURCE_PREFIXES), 0)) {
		struct prefix_key key = { .prefixlen = 128 };
		__builtin_memcpy(key.addr, client, 16);
		// Rare (a miss, and client prefixes shorter than /128): the trie of the generation.
		__u32 *shorter = index ? bpf_map_lookup_elem(&policy_source_prefixes_1, &key)
				       : bpf_map_lookup_elem(&policy_source_prefixes_0, &key);
		if (shorter) {
			class = *shorter;
			lengths = 0xff; // its class's lengths are not recorded: probe them all
		}
	}

	struct policy_slot *entry = NULL;
	__u32 count = info->length_count;
	for (__u32 l = 0; l < POLICY_LENGTHS; l++) {
		if (l >= count)
			break;
		if (!(lengths & (1 << l)))
			continue;
		__u32 length = info->lengths[l];
		__u32 tag = class << 8 | length;
		__u64 mw0 = lan->w0 & info->masks[l][0];
		__u64 mw1 = lan->w1 & info->masks[l][1];
		// The destination's hash does not wait for the class: the class joins by XOR.
		__u32 start = policy_hash((__u64)(seed ^ length) * POLICY_HASH_MULTIPLIER, mw0, mw1) ^ policy_class_mix(class);
		for (__u32 p = 0; p < POLICY_PROBES; p++) {
			__u32 at = index * POLICY_RULE_SLOTS + ((start + p) & (POLICY_RULE_SLOTS - 1));
			struct policy_slot *slot = bpf_map_lookup_elem(&policy_rules, &at);
			if (!slot || !(slot->meta & POLICY_USED))
				break;
			if (slot->tag == tag && slot->addr[0] == mw0 && slot->addr[1] == mw1) {
				entry = slot;
				break;
			}
		}
		if (entry)
			break;
	}
	if (!entry)
		return -1;
	if (policy_item_allows(&entry->item, proto, port, any_protocol))
		return entry->item.rule;
	__u32 meta = entry->meta;
	__u32 first = meta >> POLICY_META_FIRST_SHIFT, n = meta & POLICY_META_COUNT;
	for (__u32 i = 1; i < POLICY_ITEMS; i++) {
		if (i >= n)
			break;
		__u32 at = index * POLICY_ITEM_SLOTS + ((first + i) & (POLICY_ITEM_SLOTS - 1));
		struct policy_item *item = bpf_map_lookup_elem(&policy_items, &at);
		if (!item)
			return -1;
		if (policy_item_allows(item, proto, port, any_protocol))
			return item->rule;
	}
	return -1;
}

// `lan_to_client: replies`: what a LAN host may send a client is an answer, not a new
// conversation. TCP: a segment with SYN and without ACK (an opening) is denied; the rest is
// left to the rules (no sequence or state tracking). UDP and ICMPv6 echo: a flow a client
// opened (client address and port or echo identifier, LAN address and port) is remembered here
// by the tunnel-side program, refreshed by either side, forgotten after POLICY_FLOW_TIMEOUT_NS
// without a packet or when the LRU map needs the room; a LAN packet of neither kind is denied.
// ICMPv6 errors and other protocols are not tracked (the rules alone decide).
#define POLICY_FLOW_TIMEOUT_NS (120ULL * 1000000000ULL)
#define POLICY_FLOW_REFRESH_NS 1000000000ULL
#define POLICY_FLOWS 65536

struct policy_flow {
	__u32 client[4];
	__u32 lan[4];
	__u16 client_port; // UDP port, or the echo identifier
	__u16 lan_port;	   // UDP port, 0 for echo
	__u8 proto;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct policy_flow);
	__type(value, __u64); // last packet, bpf_ktime_get_ns
	__uint(max_entries, POLICY_FLOWS);
} policy_flows SEC(".maps");

// Whether a LAN packet belongs to a flow a client opened, refreshing it; a client packet opens
// or refreshes one (`open`).
static __always_inline int policy_flow(const struct policy_address *client, const struct policy_address *lan, __u8 proto,
				       __u16 client_port, __u16 lan_port, int open)
{
	struct policy_flow key = { .client_port = client_port, .lan_port = lan_port, .proto = proto };
	__builtin_memcpy(key.client, client, 16);
	__builtin_memcpy(key.lan, lan, 16);
	__u64 now = bpf_ktime_get_ns();
	__u64 *seen = bpf_map_lookup_elem(&policy_flows, &key);
	if (seen) {
		__u64 last = *seen;
		if (!open && now - last > POLICY_FLOW_TIMEOUT_NS)
			return 0;
		// One store a second at most: every packet of a flow would otherwise dirty the line.
		if (now - last > POLICY_FLOW_REFRESH_NS)
			*seen = now;
		return 1;
	}
	if (open)
		bpf_map_update_elem(&policy_flows, &key, &now, BPF_ANY);
	return open;
}

// Fragments: a fragment after the first carries no upper-layer header, so no protocol or port a
// rule could match. The first fragment (offset 0, more to come) of a datagram that is allowed
// leaves its (source, destination, identification) here with the rule that allowed it, and the
// later fragments of that datagram pass under that rule within POLICY_FRAGMENT_TIMEOUT_NS
// (RFC 8200's reassembly time). One that comes first, or after the entry is gone, meets the
// rules with protocol IPPROTO_FRAGMENT: only a rule without a protocol allows it.
#define POLICY_FRAGMENT_TIMEOUT_NS (60ULL * 1000000000ULL)
#define POLICY_FRAGMENTS 16384
#define POLICY_NO_RULE 0xffff

struct policy_fragment {
	__u32 source[4];
	__u32 destination[4];
	__u32 id;
};

// The generation is the one the first fragment met: a later fragment passes only while that
// generation is live, so a reload's new policy judges it (the loader also empties the table
// after each switch, so a generation that comes back finds nothing left from before).
// A later fragment whose offset lies below the end of the first fragment's data overlaps it
// (RFC 5722: the receiver drops the datagram) and could rewrite the ports or flags the first
// was judged by: it does not pass under the first's rule.
struct policy_fragment_seen {
	__u64 at; // bpf_ktime_get_ns of the first fragment
	__u32 rule; // POLICY_NO_RULE: allowed without a rule
	__u32 generation;
	__u32 end; // the first fragment's data ends here, in bytes of the fragmentable part
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct policy_fragment);
	__type(value, struct policy_fragment_seen);
	__uint(max_entries, POLICY_FRAGMENTS);
} policy_fragments SEC(".maps");

static __always_inline struct policy_fragment policy_fragment_key(const struct policy_address *source,
								   const struct policy_address *destination, __u32 id)
{
	struct policy_fragment key = { .id = id };
	__builtin_memcpy(key.source, source, 16);
	__builtin_memcpy(key.destination, destination, 16);
	return key;
}

// Whether the 16 bytes at `at` are `address`.
static __always_inline int policy_quotes(struct __sk_buff *skb, __u32 at, const struct policy_address *address)
{
	struct policy_address quoted;
	if (bpf_skb_load_bytes(skb, at, &quoted, sizeof(quoted)))
		return 0;
	return quoted.w0 == address->w0 && quoted.w1 == address->w1;
}

// Byte `k` and big-endian half-word `k` of the eight bytes at the upper-layer header, read as one word.
static __always_inline __u8 policy_l4_byte(__u64 l4, int k)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return l4 >> (8 * k);
#else
	return l4 >> (56 - 8 * k);
#endif
}

static __always_inline __u16 policy_l4_half(__u64 l4, int k)
{
	return (__u16)policy_l4_byte(l4, 2 * k) << 8 | policy_l4_byte(l4, 2 * k + 1);
}

// Whether the packet at `l2` may pass, counting it; `to_lan` says which way it goes.
// The protocol is the upper-layer header's, found behind the extension headers; TCP/UDP ports
// are read from it (0 when the packet is too short to hold them). A fragment other than the
// first has none: its protocol is IPPROTO_FRAGMENT, which only a rule without a protocol
// allows. With `replies`, a LAN packet whose headers cannot be followed is denied.
static __always_inline int policy_allows(struct __sk_buff *skb, __u32 l2, __u32 word, int to_lan)
{
	__u32 lan_mode = (word & POLICY_LAN_MASK) >> POLICY_LAN_SHIFT;
	int replies = lan_mode == POLICY_LAN_REPLIES;
	if (to_lan) {
		if (!(word & POLICY_CLIENT_DENY) && !replies)
			return 1;
	} else {
		if (lan_mode == POLICY_LAN_ALLOW)
			return 1;
		if (lan_mode == POLICY_LAN_DENY) {
			policy_count(word, POLICY_SLOT_LAN_DENIED);
			return 0;
		}
	}
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + l2;
	if ((void *)(ip6 + 1) > end)
		return 0;
	// The addresses as two 64-bit words each (a misaligned load is allowed where the
	// architecture has efficient unaligned access, x86 and arm64): half the instructions of
	// four 32-bit words, for the hash and the compares alike.
	struct policy_address source = { *(__u64 *)&ip6->saddr, *((__u64 *)&ip6->saddr + 1) };
	struct policy_address destination = { *(__u64 *)&ip6->daddr, *((__u64 *)&ip6->daddr + 1) };
	__u8 proto = ip6->nexthdr;
	__u16 port = 0;
	int any_protocol = 0;
	// The first eight bytes of the upper-layer header (ports; ICMPv6 type and echo identifier),
	// as one word: read in place when right after the fixed header in the linear part (the
	// common case, a handful of instructions), copied otherwise.
	__u64 l4 = 0;
	__u8 *head = (void *)(ip6 + 1);
	__u32 offset = l2 + sizeof(struct ipv6hdr);
	enum upper_layer chain = UPPER_FOUND;
	struct fragment_info fragment = {};
	int l4_read = 0; // the eight bytes (four of a UDP header's ports suffice for a flow)
	int type_read = 1; // at least the first four (an ICMPv6 type); 0 when none could be read
	if (__builtin_expect(!is_extension_header(proto) && head + 8 <= (__u8 *)end, 1)) {
		l4 = *(__u64 *)head;
		l4_read = 1;
	} else {
		if (is_extension_header(proto))
			chain = find_upper_layer(skb, l2, &proto, &offset, &fragment);
		if (chain == UPPER_LATER_FRAGMENT) {
			struct policy_fragment fragment_key = policy_fragment_key(&source, &destination, fragment.id);
			struct policy_fragment_seen *seen = bpf_map_lookup_elem(&policy_fragments, &fragment_key);
			if (seen && seen->generation == (word & POLICY_GENERATION) && fragment.offset >= seen->end &&
			    bpf_ktime_get_ns() - seen->at <= POLICY_FRAGMENT_TIMEOUT_NS) {
				if (seen->rule < POLICY_RULES_MAX)
					policy_count(word, POLICY_SLOT_RULES + seen->rule);
				return 1;
			}
		} else if (chain == UPPER_FOUND) {
			if (!bpf_skb_load_bytes(skb, offset, &l4, 8))
				l4_read = 1;
			else if (!bpf_skb_load_bytes(skb, offset, &l4, 4))
				l4_read = proto == IPPROTO_UDP;
			else {
				l4 = 0;
				type_read = 0;
			}
		}
	}
	__u8 type = policy_l4_byte(l4, 0);
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
		port = policy_l4_half(l4, to_lan ? 1 : 0);
	else if (proto == IPPROTO_ICMPV6 && type < 128)
		// An error about a packet its destination sent (the quote's source, after the 8-byte
		// ICMPv6 header and 8 bytes of the quoted IPv6 header): any rule for the pair will do.
		// One that quotes someone else's packet is an ordinary ICMPv6 message to the rules.
		any_protocol = policy_quotes(skb, offset + 16, &destination);
	// A flow replies track: UDP, or an ICMPv6 echo (request from a client, reply from the LAN).
	int udp = proto == IPPROTO_UDP;
	int echo = proto == IPPROTO_ICMPV6 && type == (to_lan ? ICMPV6_ECHO_REQUEST : ICMPV6_ECHO_REPLY);
	__u16 client_port = udp ? policy_l4_half(l4, to_lan ? 0 : 1) : policy_l4_half(l4, 2);
	if (!to_lan && replies) {
		int opening = 0;
		if (chain == UPPER_UNKNOWN) {
			opening = 1; // what it carries cannot be told: it may be an opening
		} else if (proto == IPPROTO_TCP) {
			// A segment too short to hold its flags (a tiny first fragment, whose next one
			// carries them, or a chain that claims more than the packet has) may be a SYN.
			__u8 tcp_flags = 0;
			int flags_read = 1;
			if (offset == l2 + sizeof(struct ipv6hdr) && head + 14 <= (__u8 *)end)
				tcp_flags = head[13];
			else if (bpf_skb_load_bytes(skb, offset + 13, &tcp_flags, 1))
				flags_read = 0;
			opening = !flags_read || (tcp_flags & 0x12) == 0x02; // SYN without ACK
		} else if (udp || echo) {
			// Ports or identifier unread: no flow can be told, so none is assumed.
			opening = !l4_read || !policy_flow(&destination, &source, proto, client_port, udp ? port : 0, 0);
		} else if (proto == IPPROTO_ICMPV6 && (type >= 128 || !type_read)) {
			// An echo request, or any other informational message, from the LAN; or a message
			// whose type is not in this packet (a first fragment that ends before the ICMPv6
			// header: its type would come in a later fragment, which passes under this one).
			opening = 1;
		}
		if (opening) {
			policy_count(word, POLICY_SLOT_LAN_DENIED);
			return 0;
		}
		if (!(word & POLICY_CLIENT_DENY))
			return 1; // the clients may send anything, so the reversed packet is allowed
	}
	int rule = -1;
	if (!to_lan || (word & POLICY_CLIENT_DENY)) {
		rule = to_lan ? policy_lookup(word, &source, &destination, proto, port, any_protocol)
			      : policy_lookup(word, &destination, &source, proto, port, any_protocol);
		if (rule < 0 || rule >= POLICY_RULES_MAX) {
			policy_count(word, to_lan ? POLICY_SLOT_CLIENT_DENIED : POLICY_SLOT_LAN_DENIED);
			return 0;
		}
		policy_count(word, POLICY_SLOT_RULES + rule);
	}
	if (__builtin_expect(to_lan && replies && (udp || echo), 0))
		policy_flow(&source, &destination, proto, client_port, udp ? port : 0, 1);
	if (__builtin_expect(chain == UPPER_FOUND && fragment.found && fragment.first, 0)) {
		struct policy_fragment fragment_key = policy_fragment_key(&source, &destination, fragment.id);
		struct policy_fragment_seen seen = { .at = bpf_ktime_get_ns(),
						     .rule = rule < 0 ? POLICY_NO_RULE : rule,
						     .generation = word & POLICY_GENERATION,
						     .end = skb->len - fragment.data };
		bpf_map_update_elem(&policy_fragments, &fragment_key, &seen, BPF_ANY);
	}
	return 1;
}
