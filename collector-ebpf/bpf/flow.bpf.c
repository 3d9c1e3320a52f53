// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * flow.bpf.c - packet flows: XDP on ingress, TC on egress, one parser.
 *
 * Every packet is counted into this CPU's flow slots (flowlens_slots, see
 * flow_abi.h: an mmapped array, FLOW_SLOT_PROBES slots from a seeded hash of
 * the key, values inline) or, when its flow has no slot and no free slot is in
 * its window, into flowlens_flows (per-CPU hash, struct flow_key -> struct
 * flow_value). The programs never drop or modify a
 * packet: XDP returns XDP_PASS and TC returns TC_ACT_UNSPEC on every path.
 *
 * Why slots: a hash lookup of the 44-byte key cost ~1.4x the empty program
 * on its own, and with 64k flows three cache misses per packet (bucket,
 * element, per-CPU value). A slot is one inlined array lookup, a cheap hash
 * and two adjacent cache lines; userspace reads all slots through mmap
 * without a syscall per entry. BENCHMARKS.md has the numbers.
 *
 * Parsing: Ethernet with up to two VLAN tags (802.1Q, 802.1ad), IPv4 (options
 * skipped with ihl), IPv6 (up to IPV6_MAX_EXT_HDRS extension headers:
 * hop-by-hop, routing, fragment, destination options, AH), then TCP, UDP,
 * ICMP and ICMPv6; any other protocol is counted with ports 0. An IPv6
 * packet with more extension headers than the walk allows is counted with
 * the last next-header value as its protocol and ports 0.
 *
 * Malformed and truncated packets:
 *  - Ethernet or VLAN header cut, or the fixed IPv4/IPv6 header cut: no
 *    addresses, so no flow; CNT_PARSE_TRUNCATED.
 *  - anything cut after the addresses (IPv4 options, extension headers, the
 *    L4 header): counted as far as parsed, i.e. with its protocol (for a cut
 *    extension header: that header's number) and ports 0;
 *    CNT_PARSE_TRUNCATED. So is an IPv4 ihl < 5. An extension header needs
 *    its first 8 bytes (the minimum length) to be walked.
 *  - ethertype not IPv4/IPv6 (ARP, LLDP, a third VLAN tag ...) or an IP
 *    version nibble that does not match the ethertype: CNT_NON_IP, no flow.
 * CNT_PARSE_TRUNCATED is incremented at most once per packet.
 *
 * Bytes are L3 bytes (IP header + payload):
 *  - non-GSO: the IPv4 tot_len / IPv6 payload_len + 40. If the header claims
 *    more than the packet holds, what is present is counted and
 *    CNT_PARSE_TRUNCATED incremented; if it claims less than a minimal IP
 *    header (tot_len < 20; payload_len 0 of a jumbogram or BIG TCP), what is
 *    present is counted. Ethernet padding is never counted.
 *  - TC, GSO super-packet: packets += gso_segs and bytes = skb->len - L2 +
 *    (gso_segs - 1) * (L3 header + L4 header), i.e. the sum of the L3 lengths
 *    of the segments on the wire. An untrusted GSO packet (gso_size set but
 *    gso_segs still 0) gets gso_segs = DIV_ROUND_UP(payload, gso_size).
 *    Only the outer headers are replicated in this sum: for encapsulated GSO
 *    (VXLAN, GRE) the inner headers of the extra segments are not counted.
 *  - XDP: there is no gso_segs in xdp_md. Native (driver) mode sees the
 *    segments as they are on the wire; generic (skb) mode may see a GRO
 *    packet, which is counted as one packet with its IP length fields (GRO
 *    rewrites them to the merged length), so bytes are right and packets low.
 *  - TC parses the linear part of the skb (where the stack puts the
 *    headers); the length fields are checked against skb->len. Both hooks
 *    expect an Ethernet header: attach them to Ethernet devices only.
 *
 * IP fragments (IPv4 MF or offset != 0, IPv6 fragment header with M or
 * offset != 0) are counted with FLOW_F_FRAGMENT:
 *  - the first fragment (offset 0) carries the L4 header: it is counted with
 *    its ports, and (src, dst, id, proto) -> ports is remembered in
 *    flowlens_frags (LRU; an update failure increments CNT_FRAG_MAP_FULL);
 *  - a later fragment (offset != 0) looks its ports up there; if the first
 *    fragment was not seen (lost, reordered, evicted) it is counted with
 *    ports 0 and CNT_FRAG_NO_FIRST is incremented.
 * A first fragment whose L4 header is cut is remembered with ports 0, so the
 * rest of its datagram joins it instead of counting as CNT_FRAG_NO_FIRST.
 * Only protocols whose key has ports (TCP, UDP, ICMP, ICMPv6) use the map;
 * fragments of other protocols are counted with ports 0 without a lookup.
 * Entries are not deleted on the last fragment (reordering, and the same
 * datagram may pass both hooks); the LRU evicts them.
 *
 * Per-CPU flow values: a value is added to in place without atomics. A
 * per-CPU hash entry inserted on one CPU has zeroed slots on the others, so
 * first_seen_ns is set on a slot's first packet, not only on insertion.
 *
 * Timestamps: bpf_ktime_get_ns() costs ~30 ns here (a third of the whole
 * program), so it is not called per packet. first_seen_ns is exact (one
 * bpf_ktime_get_ns() on a slot's first packet); last_seen_ns is the time of
 * the first packet of the current jiffy on this CPU (flowlens_clock, refreshed
 * when bpf_jiffies64(), which the verifier inlines to a load, changes), so it
 * lags the real last packet by less than one tick (1/HZ, 4 ms at HZ=250) and
 * is never below first_seen_ns. Both stay within CLOCK_MONOTONIC's past.
 *
 * Kernels: this file is built twice. flow.bpf.o needs 5.12 (fetching atomics,
 * a global function with a pointer argument); flow.compat.bpf.o (-DFL_COMPAT)
 * runs from 5.10 on (see slot_count and flowlens_account). The collector
 * picks one by probing the kernel. Loops are unrolled (5.10 has bounded loops
 * but no bpf_loop), and map helpers get keys on the stack.
 *
 * Verifier: the parser is inlined into both programs and hands scalars only
 * (struct pkt_meta) to the global function flowlens_account(), which the
 * verifier checks once instead of once per parser path (the unrolled IPv6
 * walk has many). Per packet: two PERCPU_ARRAY lookups (counter, clock;
 * inlined by the verifier), bpf_jiffies64() (inlined), one to four slot
 * lookups (ARRAY, inlined), and a hash lookup only for a flow without a slot; plus
 * bpf_ktime_get_ns() once per tick per CPU and on a slot's first packet, a
 * map update for a new flow and one fragment-map operation per port-carrying
 * fragment.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "flow_abi.h"
#include "counters.h"
#include "tick_clock.h"

#define FL_ETH_P_IP 0x0800
#define FL_ETH_P_IPV6 0x86DD
#define FL_ETH_P_8021Q 0x8100
#define FL_ETH_P_8021AD 0x88A8
#define FL_MAX_VLAN_TAGS 2

#define FL_IP_MF 0x2000
#define FL_IP_OFFMASK 0x1fff
#define FL_IP6_OFFMASK 0xfff8
#define FL_IP6_MF 0x0001

#define FL_NEXTHDR_HOP 0
#define FL_NEXTHDR_ROUTING 43
#define FL_NEXTHDR_FRAGMENT 44
#define FL_NEXTHDR_AH 51
#define FL_NEXTHDR_DEST 60
#define FL_IPPROTO_ICMPV6 58
#define IPV6_MAX_EXT_HDRS 6

#define FL_ICMP_ECHOREPLY 0
#define FL_ICMP_ECHO 8
#define FL_ICMPV6_ECHO_REQUEST 128
#define FL_ICMPV6_ECHO_REPLY 129

#define FL_TCP_SYN 0x02
#define FL_TCP_ACK 0x10

#define FL_TC_ACT_UNSPEC (-1)
#define FL_EEXIST 17

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flowlens_flows SEC(".maps");

/*
 * The flow slots (flow_abi.h): max_entries = nr_cpus << fl_slot_bits, set by
 * the collector at load time together with fl_slot_bits (0 = no slots:
 * every flow goes to flowlens_flows) and fl_hash_seed.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_slot);
} flowlens_slots SEC(".maps");

/* Written by the collector through mmap with one aligned 8-byte store. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_ctl);
} flowlens_ctl SEC(".maps");

const volatile __u32 fl_slot_bits = 0;
const volatile __u64 fl_hash_seed = 0;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
} flowlens_frags SEC(".maps");

struct fl_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

static __always_inline void add_to(struct flow_value *v, __u64 packets, __u64 bytes, __u8 tcp_flags,
				   __u8 flags)
{
	__u64 now = tick_ns();

	v->packets += packets;
	v->bytes += bytes;
	if (!v->first_seen_ns)
		v->first_seen_ns = bpf_ktime_get_ns();
	if (now < v->first_seen_ns)
		now = v->first_seen_ns;
	v->last_seen_ns = now;
	v->tcp_flags |= tcp_flags;
	v->flags |= flags;
}

/*
 * The key is copied to the stack first: kernels before 6.2 accept only stack,
 * packet or map memory as a map helper's key, not the caller's memory that
 * flowlens_account() receives ("R2 type=mem expected=fp" on 6.1). Only flows
 * without a slot come here.
 */
static __always_inline void update_flow(const struct flow_key *mkey, __u64 packets, __u64 bytes,
					__u8 tcp_flags, __u8 flags)
{
	struct flow_key k, *key = &k;
	struct flow_value *v;
	struct flow_value nv;
	long err;

	__builtin_memcpy(&k, mkey, sizeof(k));
	v = bpf_map_lookup_elem(&flowlens_flows, key);

	if (v) {
		add_to(v, packets, bytes, tcp_flags, flags);
		return;
	}
	__builtin_memset(&nv, 0, sizeof(nv));
	add_to(&nv, packets, bytes, tcp_flags, flags);
	err = bpf_map_update_elem(&flowlens_flows, key, &nv, BPF_NOEXIST);
	if (!err)
		return;
	if (err == -FL_EEXIST) {
		/* Another CPU inserted the key since our lookup. */
		v = bpf_map_lookup_elem(&flowlens_flows, key);
		if (v) {
			add_to(v, packets, bytes, tcp_flags, flags);
			return;
		}
	}
	count(CNT_FLOW_MAP_FULL);
}

/*
 * Slot hash: the key's words multiplied in parallel and folded (a few ns;
 * jhash over 44 bytes costs several times that). Seeded at load time, so the
 * slot a flow lands in cannot be chosen from outside; a crafted collision
 * costs a flow its slot, never its count (it goes to the hash).
 */
static __always_inline __u32 slot_hash(const struct flow_key *k)
{
	const __u64 *w = (const void *)k;
	__u64 h;

	h = (w[0] ^ w[1] ^ fl_hash_seed) * 0x9E3779B97F4A7C15ULL;
	h ^= (w[2] ^ w[3]) * 0xC2B2AE3D27D4EB4FULL;
	h ^= (w[4] ^ ((__u64)k->ifindex << 17)) * 0x165667B19E3779F9ULL;
	h ^= h >> 29;
	h *= 0xBF58476D1CE4E5B9ULL;
	return h >> 32;
}

#define READ_ONCE_U64(x) (*(volatile __u64 *)&(x))
#define WRITE_ONCE_U32(x, v) (*(volatile __u32 *)&(x) = (v))
#define fl_barrier() asm volatile("" ::: "memory")

static __always_inline int key_eq(const struct flow_key *a, const struct flow_key *b)
{
	const __u64 *x = (const void *)a, *y = (const void *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4]) |
		(a->ifindex ^ b->ifindex)) == 0;
}

/*
 * Counts into this CPU's slots: returns 1 if counted, 0 if the flow has no
 * slot and no free one in its probe window (the caller uses the hash).
 * Linear probing without deletions: an unused slot (seq 0) ends the window,
 * and reclaimed slots stay occupied, so a flow is found where it was put.
 */
static __always_inline int slot_count(struct flow_key *key, __u64 packets, __u64 bytes,
				      __u8 tcp_flags, __u8 flags)
{
	__u32 bits = fl_slot_bits;
	__u32 mask, base, h, seq, zero = 0;
	struct flow_slot *s, *free = NULL;
	struct flow_ctl *ctl = NULL;

	if (!bits || bits > 24)
		return 0;
	mask = (1U << bits) - 1;
	base = bpf_get_smp_processor_id() << bits;
	h = slot_hash(key);
#pragma unroll
	for (int i = 0; i < FLOW_SLOT_PROBES; i++) {
		__u32 idx = base + ((h + i) & mask);

		s = bpf_map_lookup_elem(&flowlens_slots, &idx);
		if (!s) {
			/* a CPU beyond the table (not sized for it): the hash counts it */
			count(CNT_FLOW_SLOTS_FULL);
			return 0;
		}
		if (s->seq == 0) {
			if (!free)
				free = s;
			break;
		}
		if (key_eq(&s->key, key)) {
			add_to(&s->val, packets, bytes, tcp_flags, flags);
			return 1;
		}
		if (!free) {
			if (!ctl)
				ctl = bpf_map_lookup_elem(&flowlens_ctl, &zero);
			if (ctl && s->val.last_seen_ns < READ_ONCE_U64(ctl->reclaim_before_ns))
				free = s;
		}
	}
	if (!free) {
		count(CNT_FLOW_SLOTS_FULL);
		return 0;
	}
	/*
	 * Odd seq while the slot changes hands: the collector skips it. Fetching
	 * atomics are fully ordered on every JIT (a plain atomic add is relaxed on
	 * arm64), so the key and value are written strictly between the two.
	 */
#ifndef FL_COMPAT
	seq = __sync_fetch_and_add(&free->seq, 1);
	__builtin_memcpy(&free->key, key, sizeof(*key));
	__builtin_memset(&free->val, 0, sizeof(free->val));
	add_to(&free->val, packets, bytes, tcp_flags, flags);
	seq += __sync_fetch_and_add(&free->seq, 1);
	return seq & 1; /* even + odd: always 1; uses both results, so both fetch */
#else
	/*
	 * Kernels before 5.12 have no fetching atomics. This CPU is the slot's
	 * only writer and the program cannot be preempted by another flow
	 * program on it, so plain stores keep the protocol; x86 does not reorder
	 * stores with stores, and the collector loads this object with slots
	 * only on x86-64 (elsewhere it sets fl_slot_bits = 0: hash only).
	 */
	seq = free->seq;
	WRITE_ONCE_U32(free->seq, seq + 1);
	fl_barrier();
	__builtin_memcpy(&free->key, key, sizeof(*key));
	__builtin_memset(&free->val, 0, sizeof(free->val));
	add_to(&free->val, packets, bytes, tcp_flags, flags);
	fl_barrier();
	WRITE_ONCE_U32(free->seq, seq + 2);
	return 1;
#endif
}

static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_ICMP ||
	       proto == FL_IPPROTO_ICMPV6;
}

static __always_inline int is_ipv6_ext(__u8 nexthdr)
{
	return nexthdr == FL_NEXTHDR_HOP || nexthdr == FL_NEXTHDR_ROUTING ||
	       nexthdr == FL_NEXTHDR_DEST || nexthdr == FL_NEXTHDR_AH ||
	       nexthdr == FL_NEXTHDR_FRAGMENT;
}

/* What the parser found, handed to flowlens_account() as scalars only. */
struct pkt_meta {
	struct flow_key key;
	__u32 l2_len;
	__u32 hdrs_len; /* L3 header (options, extension headers) + L4 header */
	__u32 claimed; /* L3 length from the IP header, 0 if absent */
	__u32 frag_id;
	__u32 pkt_len; /* frame length including L2 */
	__u32 gso_segs;
	__u32 gso_size;
	__u8 tcp_flags;
	__u8 flags;
	__u8 truncated;
	__u8 frag; /* FRAG_* */
};

#define FRAG_NONE 0
#define FRAG_FIRST 1
#define FRAG_LATER 2

/*
 * Counts one parsed packet: fragment ports, bytes, the flow update. A global
 * (non-inlined) function so the verifier checks it once, not once per parser
 * path. Kernels before 5.12 do not accept a pointer to memory as a global
 * function's argument: the compat build makes it a static subprogram, which
 * the verifier checks in each caller's context.
 */
#ifndef FL_COMPAT
__noinline int flowlens_account(struct pkt_meta *m)
#else
static __noinline int flowlens_account(struct pkt_meta *m)
#endif
{
	__u32 avail, segs, gso_size;
	__u64 packets = 1, bytes;

	if (!m)
		return 0;

	if (m->frag != FRAG_NONE) {
		m->flags |= FLOW_F_FRAGMENT;
		if (has_ports(m->key.proto)) {
			struct frag_key fk;

			__builtin_memset(&fk, 0, sizeof(fk));
			__builtin_memcpy(fk.src, m->key.src, 16);
			__builtin_memcpy(fk.dst, m->key.dst, 16);
			fk.id = m->frag_id;
			fk.proto = m->key.proto;
			if (m->frag == FRAG_LATER) {
				struct frag_value *fv = bpf_map_lookup_elem(&flowlens_frags, &fk);

				if (fv) {
					m->key.sport = fv->sport;
					m->key.dport = fv->dport;
				} else {
					count(CNT_FRAG_NO_FIRST);
				}
			} else {
				struct frag_value fv = { .sport = m->key.sport,
							 .dport = m->key.dport };

				if (bpf_map_update_elem(&flowlens_frags, &fk, &fv, BPF_ANY))
					count(CNT_FRAG_MAP_FULL);
			}
		}
	}

	avail = m->pkt_len - m->l2_len;
	segs = m->gso_segs;
	gso_size = m->gso_size;
	if (segs == 0 && gso_size != 0) {
		/* Untrusted GSO (virtio, tap, packet socket): segments not yet counted. */
		segs = 1;
		if (avail > m->hdrs_len)
			segs = (avail - m->hdrs_len + gso_size - 1) / gso_size;
	}
	if (segs > 1) {
		packets = segs;
		bytes = avail + (__u64)(segs - 1) * m->hdrs_len;
	} else if (m->claimed > avail) {
		bytes = avail;
		m->truncated = 1;
	} else if (m->claimed < sizeof(struct iphdr)) {
		/* No usable claim (IPv6 jumbogram, zero tot_len): what is present. */
		bytes = avail;
	} else {
		bytes = m->claimed;
	}

	if (!slot_count(&m->key, packets, bytes, m->tcp_flags, m->flags))
		update_flow(&m->key, packets, bytes, m->tcp_flags, m->flags);
	if (m->truncated)
		count(CNT_PARSE_TRUNCATED);
	return 0;
}

/* Parses the L4 header at l3 + off into m (ports, TCP flags, header length). */
static __always_inline void parse_l4(struct pkt_meta *m, void *l3, __u32 off, void *data_end)
{
	__u8 *l4 = l3 + off;
	__u8 proto = m->key.proto;

	if (proto == IPPROTO_TCP) {
		__u8 f, doff;

		if ((void *)(l4 + 20) > data_end) {
			m->truncated = 1;
			return;
		}
		m->key.sport = bpf_ntohs(*(__be16 *)l4);
		m->key.dport = bpf_ntohs(*(__be16 *)(l4 + 2));
		f = l4[13];
		m->tcp_flags = f;
		if ((f & (FL_TCP_SYN | FL_TCP_ACK)) == FL_TCP_SYN)
			m->flags |= FLOW_F_INITIATOR;
		else if ((f & (FL_TCP_SYN | FL_TCP_ACK)) == (FL_TCP_SYN | FL_TCP_ACK))
			m->flags |= FLOW_F_RESPONDER;
		doff = (l4[12] >> 4) * 4;
		m->hdrs_len = off + (doff < 20 ? 20 : doff);
	} else if (proto == IPPROTO_UDP) {
		if ((void *)(l4 + 8) > data_end) {
			m->truncated = 1;
			return;
		}
		m->key.sport = bpf_ntohs(*(__be16 *)l4);
		m->key.dport = bpf_ntohs(*(__be16 *)(l4 + 2));
		m->hdrs_len = off + 8;
	} else if (proto == IPPROTO_ICMP || proto == FL_IPPROTO_ICMPV6) {
		__u8 type;

		if ((void *)(l4 + 8) > data_end) {
			m->truncated = 1;
			return;
		}
		type = l4[0];
		m->hdrs_len = off + 8;
		if (proto == IPPROTO_ICMP ? type == FL_ICMP_ECHO : type == FL_ICMPV6_ECHO_REQUEST)
			m->flags |= FLOW_F_INITIATOR;
		else if (proto == IPPROTO_ICMP ? type == FL_ICMP_ECHOREPLY
					       : type == FL_ICMPV6_ECHO_REPLY)
			m->flags |= FLOW_F_RESPONDER;
		else
			return;
		m->key.sport = m->key.dport = bpf_ntohs(*(__be16 *)(l4 + 4));
	}
}

/*
 * Walks the IPv6 extension headers after the fixed header at l3. Returns
 * the offset of the upper-layer header from l3, or 0 when there is none to
 * parse (truncated, a later fragment, or more headers than the walk allows);
 * m->key.proto is the last next-header value read.
 */
static __always_inline __u32 walk_ipv6_ext(struct pkt_meta *m, __u8 *l3, void *data_end)
{
	__u32 off = sizeof(struct ipv6hdr);
	__u8 proto = m->key.proto;

#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT_HDRS; i++) {
		__u8 *h = l3 + off;

		if (!is_ipv6_ext(proto))
			break;
		if ((void *)(h + 8) > data_end) {
			/* Every extension header is at least 8 bytes long. */
			m->truncated = 1;
			m->key.proto = proto;
			return 0;
		}
		if (proto == FL_NEXTHDR_FRAGMENT) {
			__u16 fo = bpf_ntohs(*(__be16 *)(h + 2));

			off += 8;
			proto = h[0];
			if (fo & (FL_IP6_OFFMASK | FL_IP6_MF)) {
				m->frag_id = bpf_ntohl(*(__be32 *)(h + 4));
				if (fo & FL_IP6_OFFMASK) {
					m->frag = FRAG_LATER;
					m->key.proto = proto;
					m->hdrs_len = off;
					return 0;
				}
				m->frag = FRAG_FIRST;
			}
		} else if (proto == FL_NEXTHDR_AH) {
			off += ((__u32)h[1] + 2) * 4;
			proto = h[0];
		} else {
			off += ((__u32)h[1] + 1) * 8;
			proto = h[0];
		}
	}
	m->key.proto = proto;
	m->hdrs_len = off;
	return is_ipv6_ext(proto) ? 0 : off;
}

/*
 * Parses one frame at [data, data_end) and counts it. pkt_len is the whole
 * frame including L2 (may exceed data_end - data for a non-linear skb);
 * gso_segs/gso_size are 0 outside TC.
 */
static __always_inline void count_packet(void *data, void *data_end, __u32 pkt_len, __u32 gso_segs,
					 __u32 gso_size, __u32 ifindex, __u8 hook)
{
	struct ethhdr *eth = data;
	struct pkt_meta m;
	__u8 *l3;
	__u32 l4_off = 0;
	__u16 h_proto;

	count(CNT_PACKETS_SEEN);

	if ((void *)(eth + 1) > data_end) {
		count(CNT_PARSE_TRUNCATED);
		return;
	}
	h_proto = eth->h_proto;
	l3 = (__u8 *)(eth + 1);
#pragma unroll
	for (int i = 0; i < FL_MAX_VLAN_TAGS; i++) {
		struct fl_vlan_hdr *vh = (void *)l3;

		if (h_proto != bpf_htons(FL_ETH_P_8021Q) && h_proto != bpf_htons(FL_ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end) {
			count(CNT_PARSE_TRUNCATED);
			return;
		}
		h_proto = vh->proto;
		l3 = (__u8 *)(vh + 1);
	}

	__builtin_memset(&m, 0, sizeof(m));
	m.key.hook = hook;
	m.key.ifindex = ifindex;
	m.l2_len = (void *)l3 - data;
	m.pkt_len = pkt_len;
	m.gso_segs = gso_segs;
	m.gso_size = gso_size;

	if (h_proto == bpf_htons(FL_ETH_P_IP)) {
		struct iphdr *ip = (void *)l3;
		__u32 ihl;
		__u16 frag_off;

		if ((void *)(ip + 1) > data_end) {
			count(CNT_PARSE_TRUNCATED);
			return;
		}
		if ((l3[0] >> 4) != 4) {
			count(CNT_NON_IP);
			return;
		}
		m.key.src[10] = m.key.src[11] = 0xff;
		m.key.dst[10] = m.key.dst[11] = 0xff;
		__builtin_memcpy(&m.key.src[12], &ip->saddr, 4);
		__builtin_memcpy(&m.key.dst[12], &ip->daddr, 4);
		m.key.proto = ip->protocol;
		m.claimed = bpf_ntohs(ip->tot_len);
		frag_off = bpf_ntohs(ip->frag_off);
		if (frag_off & (FL_IP_MF | FL_IP_OFFMASK)) {
			m.frag = (frag_off & FL_IP_OFFMASK) ? FRAG_LATER : FRAG_FIRST;
			m.frag_id = bpf_ntohs(ip->id);
		}
		ihl = (l3[0] & 0x0f) * 4;
		m.hdrs_len = ihl;
		if (ihl < sizeof(*ip) || (void *)(l3 + ihl) > data_end)
			m.truncated = 1;
		else if (m.frag != FRAG_LATER)
			l4_off = ihl;
	} else if (h_proto == bpf_htons(FL_ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)l3;

		if ((void *)(ip6 + 1) > data_end) {
			count(CNT_PARSE_TRUNCATED);
			return;
		}
		if ((l3[0] >> 4) != 6) {
			count(CNT_NON_IP);
			return;
		}
		__builtin_memcpy(m.key.src, &ip6->saddr, 16);
		__builtin_memcpy(m.key.dst, &ip6->daddr, 16);
		m.key.proto = ip6->nexthdr;
		m.claimed = bpf_ntohs(ip6->payload_len);
		/* payload_len 0 is a jumbogram or BIG TCP: no usable claim. */
		if (m.claimed)
			m.claimed += sizeof(*ip6);
		l4_off = walk_ipv6_ext(&m, l3, data_end);
	} else {
		count(CNT_NON_IP);
		return;
	}

	if (l4_off)
		parse_l4(&m, l3, l4_off, data_end);
	flowlens_account(&m);
}

SEC("xdp")
int flowlens_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	count_packet(data, data_end, data_end - data, 0, 0, ctx->ingress_ifindex,
		     FLOW_HOOK_XDP_INGRESS);
	return XDP_PASS;
}

SEC("classifier")
int flowlens_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	count_packet(data, data_end, skb->len, skb->gso_segs, skb->gso_size, skb->ifindex,
		     FLOW_HOOK_TC_EGRESS);
	return FL_TC_ACT_UNSPEC;
}

/*
 * TC on ingress: used instead of XDP on virtual devices (veth, bridges, lo)
 * and where XDP driver mode is unavailable. It sees the skb with its GSO
 * segment count, and attaching it changes nothing on the device (XDP in
 * driver mode on a veth turns GSO off on its peer and costs TCP throughput).
 */
SEC("classifier")
int flowlens_tc_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	count_packet(data, data_end, skb->len, skb->gso_segs, skb->gso_size, skb->ifindex,
		     FLOW_HOOK_XDP_INGRESS);
	return FL_TC_ACT_UNSPEC;
}
