// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * signals.bpf.c - how well conversations go: TCP round-trip time and
 * retransmits per socket, resets, and copies of the DNS messages local
 * sockets send and receive (the collector parses them).
 *
 * Nothing here takes an owner: several hooks run in softirq (resets,
 * retransmits, RTT samples of ACKs) where the current task is unrelated. The
 * collector joins every signal to its conversation by tuple; owners come
 * from sock.bpf.c.
 *
 * TCP (flowlens_tcp_sigs: sig_key -> tcp_sig, one entry per socket):
 *  - sockops on the cgroup v2 root: an ACTIVE/PASSIVE_ESTABLISHED callback
 *    creates the entry (retrans_base 0: the connection began under us, so
 *    its SYN or SYN-ACK retransmits count) and turns on RTT callbacks for the
 *    socket; every RTT callback adds the kernel's smoothed estimate (srtt)
 *    to the current interval's slot and reads total_retrans.
 *  - tp_btf/tcp_retransmit_skb (fires after the kernel counted the segment):
 *    reads total_retrans, the same count as TcpRetransSegs; creates the entry
 *    of a connecting socket (SYN retransmits; base 0) or of a connection
 *    older than flowlens (base: what it had retransmitted before, this
 *    segment counted as one).
 *  - tp_btf/inet_sock_set_state -> CLOSE: emits EV_TCP_SIG_FINAL with the
 *    final count and deletes the entry, so the map holds live sockets only
 *    (a connection older than flowlens without an entry gives its srtt as a
 *    last sample).
 *  RTT slots by interval: see struct rtt_slot (flow_abi.h). Writers of one
 *  entry are serialised by the socket lock (ACK processing, timers, close),
 *  so plain read-modify-write is enough.
 *
 * Resets: tp_btf/tcp_send_reset and tcp_receive_reset emit EV_TCP_RESET with
 * the tuple seen from this host's end. A reset sent without a full socket
 * (a closed port's answer, a TIME_WAIT or request socket) takes its tuple
 * from the socket's common part or, with no socket at all, from the segment
 * it answers (kernels that trace those: 6.10+).
 *
 * DNS: cgroup_skb egress and ingress on the cgroup v2 root see every packet
 * a local socket sends or receives, once, after defragmentation: UDP or TCP
 * with port 53 on either side and a payload is copied (up to
 * DNS_PAYLOAD_MAX bytes, in a small or a large record) into
 * flowlens_sig_events. Headers are read directly (the L3 header is at
 * skb->data); anything else costs a few loads and compares. The programs
 * never drop or change a packet (they return 1).
 *
 * Kernels: one build for 5.10+: no socket cookie (the key is the tuple), no
 * fetching atomics, no global functions.
 *
 * Counters: CNT_TCP_SIG_MAP_FULL (a socket not tracked), CNT_SIG_EVENTS /
 * CNT_SIG_RINGBUF_FULL (reset and final events attempted / lost),
 * CNT_DNS_MESSAGES / CNT_DNS_RINGBUF_FULL (DNS copies attempted / lost),
 * CNT_DNS_CUT (copied in part), CNT_RTT_SAMPLES.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "flow_abi.h"
#include "counters.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define DNS_PORT 53
#define FL_IPPROTO_TCP 6
#define FL_IPPROTO_UDP 17

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} flowlens_sig_events SEC(".maps");

/* Sized by the collector (limits.max_sockets); memory only for live entries. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct sig_key);
	__type(value, struct tcp_sig);
} flowlens_tcp_sigs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sig_ctl);
} flowlens_sig_ctl SEC(".maps");

/* An IPv4 address (network order) as IPv4-mapped IPv6. */
static __always_inline void set_mapped(__u8 *dst, __u32 addr)
{
	__u32 *w = (__u32 *)dst;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = addr;
}

/* The key of a socket through a BTF pointer: sock_common only (valid for full, request and TIME_WAIT sockets). */
static __always_inline int key_from_sk(const struct sock *sk, struct sig_key *k)
{
	const struct sock_common *c = &sk->__sk_common;
	__u16 family = c->skc_family;

	__builtin_memset(k, 0, sizeof(*k));
	if (family == AF_INET) {
		set_mapped(k->laddr, c->skc_rcv_saddr);
		set_mapped(k->raddr, c->skc_daddr);
	} else if (family == AF_INET6) {
		__u32 *l = (__u32 *)k->laddr, *r = (__u32 *)k->raddr;

#pragma unroll
		for (int i = 0; i < 4; i++) {
			l[i] = c->skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			r[i] = c->skc_v6_daddr.in6_u.u6_addr32[i];
		}
	} else {
		return 0;
	}
	k->lport = c->skc_num;
	k->rport = bpf_ntohs(c->skc_dport);
	return 1;
}

/* The same key from a sockops context (the kernel rewrites these loads to the socket's). */
static __always_inline int key_from_ops(struct bpf_sock_ops *ops, struct sig_key *k)
{
	__u32 family = ops->family;

	__builtin_memset(k, 0, sizeof(*k));
	if (family == AF_INET) {
		set_mapped(k->laddr, ops->local_ip4);
		set_mapped(k->raddr, ops->remote_ip4);
	} else if (family == AF_INET6) {
		__u32 *l = (__u32 *)k->laddr, *r = (__u32 *)k->raddr;

		l[0] = ops->local_ip6[0];
		l[1] = ops->local_ip6[1];
		l[2] = ops->local_ip6[2];
		l[3] = ops->local_ip6[3];
		r[0] = ops->remote_ip6[0];
		r[1] = ops->remote_ip6[1];
		r[2] = ops->remote_ip6[2];
		r[3] = ops->remote_ip6[3];
	} else {
		return 0;
	}
	k->lport = (__u16)ops->local_port;
	/* network order in the upper 16 bits of a host-order word */
	k->rport = (__u16)bpf_ntohl(ops->remote_port);
	return 1;
}

static __always_inline __u32 current_gen(void)
{
	__u32 zero = 0;
	struct sig_ctl *ctl = bpf_map_lookup_elem(&flowlens_sig_ctl, &zero);

	return ctl ? ctl->gen : 0;
}

/* Adds one RTT sample (us) to the slot of the current interval. */
static __always_inline void add_rtt(struct tcp_sig *s, __u32 us)
{
	__u32 gen = current_gen();
	struct rtt_slot *slot = &s->rtt[gen & 1];

	if (slot->gen != gen || slot->samples == 0) {
		slot->gen = gen;
		slot->samples = 0;
		slot->min_us = us;
		slot->max_us = us;
		slot->sum_us = 0;
	}
	slot->samples += 1;
	slot->sum_us += us;
	if (us < slot->min_us)
		slot->min_us = us;
	if (us > slot->max_us)
		slot->max_us = us;
	count(CNT_RTT_SAMPLES);
}

/* The entry of `k`, created with `base` when missing; NULL (counted) when the map is full. */
static __always_inline struct tcp_sig *sig_entry(const struct sig_key *k, __u32 total, __u32 base)
{
	struct tcp_sig *s = bpf_map_lookup_elem(&flowlens_tcp_sigs, k);
	struct tcp_sig init;

	if (s)
		return s;
	__builtin_memset(&init, 0, sizeof(init));
	init.created_ns = bpf_ktime_get_ns();
	init.total_retrans = total;
	init.retrans_base = base;
	/* EEXIST: another hook made it meanwhile; the lookup below finds it */
	bpf_map_update_elem(&flowlens_tcp_sigs, k, &init, BPF_NOEXIST);
	s = bpf_map_lookup_elem(&flowlens_tcp_sigs, k);
	if (!s)
		count(CNT_TCP_SIG_MAP_FULL);
	return s;
}

static __always_inline void note_retrans(struct tcp_sig *s, __u32 total)
{
	if (total > s->total_retrans)
		s->total_retrans = total;
}

SEC("sockops")
int flowlens_tcp_sockops(struct bpf_sock_ops *ops)
{
	struct sig_key k;
	struct tcp_sig *s;
	__u32 op = ops->op;

	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_RTT_CB)
		return 1;
	if (!key_from_ops(ops, &k))
		return 1;
	if (op != BPF_SOCK_OPS_RTT_CB) {
		/* established under us: everything it retransmitted counts */
		bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_RTT_CB_FLAG);
		s = sig_entry(&k, ops->total_retrans, 0);
	} else {
		/* no entry (the map was full at the handshake): count from here */
		s = sig_entry(&k, ops->total_retrans, ops->total_retrans);
	}
	if (!s)
		return 1;
	note_retrans(s, ops->total_retrans);
	if (ops->srtt_us)
		add_rtt(s, ops->srtt_us >> 3);
	return 1;
}

static __always_inline __u32 total_retrans_of(const struct sock *sk)
{
	return BPF_CORE_READ((struct tcp_sock *)sk, total_retrans);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(flowlens_tcp_retransmit, const struct sock *sk, const struct sk_buff *skb)
{
	struct sig_key k;
	struct tcp_sig *s;
	__u32 total, base;

	if (!sk || sk->sk_protocol != IPPROTO_TCP || !key_from_sk(sk, &k))
		return 0;
	total = total_retrans_of(sk);
	/* a connect's SYNs count; an older connection counts from this segment on */
	base = sk->__sk_common.skc_state == TCP_SYN_SENT || total == 0 ? 0 : total - 1;
	s = sig_entry(&k, total, base);
	if (s)
		note_retrans(s, total);
	return 0;
}

static __always_inline int emit_final(const struct sig_key *k, const struct tcp_sig *s)
{
	struct tcp_sig_final_event *e;

	count(CNT_SIG_EVENTS);
	e = bpf_ringbuf_reserve(&flowlens_sig_events, sizeof(*e), 0);
	if (!e) {
		count(CNT_SIG_RINGBUF_FULL);
		return 0;
	}
	e->hdr.type = EV_TCP_SIG_FINAL;
	e->hdr.size = sizeof(*e);
	e->hdr.ts_ns = bpf_ktime_get_ns();
	__builtin_memcpy(&e->key, k, sizeof(*k));
	__builtin_memcpy(&e->sig, s, sizeof(*s));
	bpf_ringbuf_submit(e, 0);
	return 1;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(flowlens_tcp_close, const struct sock *sk, int oldstate, int newstate)
{
	struct sig_key k;
	struct tcp_sig *s, last;
	__u32 srtt;

	if (newstate != TCP_CLOSE || !sk || sk->sk_protocol != IPPROTO_TCP || !key_from_sk(sk, &k))
		return 0;
	/* the kernel releases the port (skc_num = 0) before this; inet_sport keeps it */
	if (!k.lport)
		k.lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	s = bpf_map_lookup_elem(&flowlens_tcp_sigs, &k);
	if (s) {
		note_retrans(s, total_retrans_of(sk));
		__builtin_memcpy(&last, s, sizeof(last));
		bpf_map_delete_elem(&flowlens_tcp_sigs, &k);
		emit_final(&k, &last);
		return 0;
	}
	/* untracked (older than flowlens, or the map was full): its srtt as a last sample */
	srtt = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
	if (!srtt || oldstate == TCP_SYN_SENT)
		return 0;
	__builtin_memset(&last, 0, sizeof(last));
	last.total_retrans = total_retrans_of(sk);
	last.retrans_base = last.total_retrans;
	add_rtt(&last, srtt);
	emit_final(&k, &last);
	return 0;
}

static __always_inline void emit_reset(const struct sig_key *k, __u8 sent, __u8 socket)
{
	struct tcp_reset_event *e;

	count(CNT_SIG_EVENTS);
	e = bpf_ringbuf_reserve(&flowlens_sig_events, sizeof(*e), 0);
	if (!e) {
		count(CNT_SIG_RINGBUF_FULL);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->hdr.type = EV_TCP_RESET;
	e->hdr.size = sizeof(*e);
	e->hdr.ts_ns = bpf_ktime_get_ns();
	__builtin_memcpy(&e->key, k, sizeof(*k));
	e->sent = sent;
	e->socket = socket;
	bpf_ringbuf_submit(e, 0);
}

/*
 * The tuple of the segment a socketless RST answers, from this host's end
 * (the segment's destination sent the RST).
 */
static __always_inline int key_from_segment(const struct sk_buff *skb, struct sig_key *k)
{
	unsigned char *head = skb->head;
	__u16 nh = skb->network_header, th = skb->transport_header;
	__u8 first = 0;
	__u16 ports[2];

	__builtin_memset(k, 0, sizeof(*k));
	if (bpf_probe_read_kernel(&first, 1, head + nh))
		return 0;
	if ((first >> 4) == 4) {
		__u32 addrs[2];

		if (bpf_probe_read_kernel(addrs, sizeof(addrs), head + nh + 12))
			return 0;
		set_mapped(k->raddr, addrs[0]);
		set_mapped(k->laddr, addrs[1]);
	} else if ((first >> 4) == 6) {
		if (bpf_probe_read_kernel(k->raddr, 16, head + nh + 8) ||
		    bpf_probe_read_kernel(k->laddr, 16, head + nh + 24))
			return 0;
	} else {
		return 0;
	}
	if (bpf_probe_read_kernel(ports, sizeof(ports), head + th))
		return 0;
	k->rport = bpf_ntohs(ports[0]);
	k->lport = bpf_ntohs(ports[1]);
	return 1;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(flowlens_tcp_send_reset, const struct sock *sk, const struct sk_buff *skb)
{
	struct sig_key k;
	__u8 full;

	if (sk) {
		if (!key_from_sk(sk, &k))
			return 0;
		/* TIME_WAIT and request sockets have the common part only */
		full = sk->__sk_common.skc_state != TCP_TIME_WAIT &&
		       sk->__sk_common.skc_state != TCP_NEW_SYN_RECV;
		if (!k.lport && full)
			k.lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
		emit_reset(&k, 1, full);
	} else if (skb && key_from_segment(skb, &k)) {
		emit_reset(&k, 1, 0);
	}
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(flowlens_tcp_recv_reset, struct sock *sk)
{
	struct sig_key k;

	if (sk && key_from_sk(sk, &k))
		emit_reset(&k, 0, 1);
	return 0;
}

/*
 * DNS: copies the L4 payload of a UDP or TCP packet with port 53 on either
 * side. data is the L3 header (cgroup_skb); TCP segments without payload
 * (handshake, ACKs) are skipped.
 */
static __always_inline void dns_copy(struct __sk_buff *skb, __u8 egress)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 *ip = data, *l4, proto;
	__u32 l3_len, off, len, n;
	struct dns_event *e;
	__u16 sport, dport;
	int v6;

	if ((void *)(ip + 1) > data_end)
		return;
	if ((ip[0] >> 4) == 4) {
		if ((void *)(ip + 20) > data_end)
			return;
		proto = ip[9];
		l3_len = (ip[0] & 0x0f) * 4;
		/* later fragments have no ports (the stack reassembles before ingress) */
		if (l3_len < 20 || (bpf_ntohs(*(__u16 *)(ip + 6)) & 0x1fff))
			return;
		v6 = 0;
	} else if ((ip[0] >> 4) == 6) {
		if ((void *)(ip + 40) > data_end)
			return;
		proto = ip[6]; /* DNS over IPv6 extension headers is not looked for */
		l3_len = 40;
		v6 = 1;
	} else {
		return;
	}
	if (proto != FL_IPPROTO_UDP && proto != FL_IPPROTO_TCP)
		return;
	l4 = ip + (l3_len & 0x3f);
	if ((void *)(l4 + 8) > data_end)
		return;
	sport = bpf_ntohs(*(__u16 *)l4);
	dport = bpf_ntohs(*(__u16 *)(l4 + 2));
	if (sport != DNS_PORT && dport != DNS_PORT)
		return;
	if (proto == FL_IPPROTO_UDP) {
		off = l3_len + 8;
	} else {
		if ((void *)(l4 + 20) > data_end)
			return;
		off = l3_len + ((l4[12] >> 4) * 4);
	}
	if (skb->len <= off)
		return;
	len = skb->len - off;
	count(CNT_DNS_MESSAGES);
	if (len > DNS_PAYLOAD_MAX)
		count(CNT_DNS_CUT);
	if (len <= DNS_PAYLOAD_SMALL)
		e = bpf_ringbuf_reserve(&flowlens_sig_events, DNS_EVENT_HDR_SIZE + DNS_PAYLOAD_SMALL, 0);
	else
		e = bpf_ringbuf_reserve(&flowlens_sig_events, sizeof(*e), 0);
	if (!e) {
		count(CNT_DNS_RINGBUF_FULL);
		return;
	}
	n = len;
	if (n > DNS_PAYLOAD_MAX)
		n = DNS_PAYLOAD_MAX;
	e->hdr.type = EV_DNS;
	e->hdr.size = DNS_EVENT_HDR_SIZE + (len <= DNS_PAYLOAD_SMALL ? DNS_PAYLOAD_SMALL : DNS_PAYLOAD_MAX);
	e->hdr.ts_ns = bpf_ktime_get_ns();
	if (v6) {
		__builtin_memcpy(e->saddr, ip + 8, 16);
		__builtin_memcpy(e->daddr, ip + 24, 16);
	} else {
		set_mapped(e->saddr, *(__u32 *)(ip + 12));
		set_mapped(e->daddr, *(__u32 *)(ip + 16));
	}
	e->sport = sport;
	e->dport = dport;
	e->proto = proto;
	e->egress = egress;
	e->orig_len = len;
	e->pad = 0;
	/*
	 * n is 1..the record's room (len > off above). The verifier needs both
	 * bounds on the size; compilers drop a "n < 1" test they can prove, so
	 * the bounds come from a mask the value passes through unchanged.
	 */
	asm volatile("" : "+r"(n));
	if (len <= DNS_PAYLOAD_SMALL) {
		n = ((n - 1) & (DNS_PAYLOAD_SMALL - 1)) + 1;
		if (bpf_skb_load_bytes(skb, off, e->payload, n))
			n = 0;
	} else {
		n = ((n - 1) & (DNS_PAYLOAD_MAX - 1)) + 1;
		if (bpf_skb_load_bytes(skb, off, e->payload, n))
			n = 0;
	}
	e->cap_len = (__u16)n;
	bpf_ringbuf_submit(e, 0);
}

SEC("cgroup_skb/egress")
int flowlens_dns_egress(struct __sk_buff *skb)
{
	dns_copy(skb, 1);
	return 1;
}

SEC("cgroup_skb/ingress")
int flowlens_dns_ingress(struct __sk_buff *skb)
{
	dns_copy(skb, 0);
	return 1;
}

/*
 * Never called: puts the event and map structs into this object's BTF for
 * the ABI test (ring-buffer records are locals, which BTF omits).
 */
__noinline int flowlens_abi_signals(struct tcp_reset_event *r, struct tcp_sig_final_event *f,
				    struct dns_event *d, struct sig_ctl *c)
{
	return r && f && d && c;
}
