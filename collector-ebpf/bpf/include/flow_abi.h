/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flow_abi.h - the single source of truth for every struct shared between the
 * kernel programs and the collector. The Rust mirror lives in
 * collector-ebpf/src/abi.rs and asserts the same sizes and offsets.
 *
 * Rules: fixed-width fields only, explicit padding, no bool/enum.
 * Byte order: addresses are in network byte order (as on the wire), IPv4 is
 * stored IPv4-mapped (::ffff:a.b.c.d); ports and every other integer are in
 * host byte order.
 */
#ifndef FLOWLENS_FLOW_ABI_H
#define FLOWLENS_FLOW_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* ---- packet flows ---------------------------------------------------- */

/* flow_key.hook */
#define FLOW_HOOK_XDP_INGRESS 0 /* ingress: XDP, or TC ingress where XDP is not used */
#define FLOW_HOOK_TC_EGRESS 1

/* flow_value.flags */
#define FLOW_F_INITIATOR 0x01 /* a TCP SYN without ACK or an ICMP echo request was seen */
#define FLOW_F_FRAGMENT 0x02  /* at least one IP fragment was counted */
#define FLOW_F_RESPONDER 0x04 /* a TCP SYN+ACK or an ICMP echo reply was seen */

/*
 * One direction of a flow as seen by one hook of one interface.
 * ICMP/ICMPv6 echo request/reply: sport = dport = echo identifier, so both
 * directions merge; other ICMP messages and non-TCP/UDP protocols: ports 0.
 */
struct flow_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto; /* IPPROTO_* */
	__u8 hook;  /* FLOW_HOOK_* */
	__u16 pad;
	__u32 ifindex;
};
#define FLOW_KEY_SIZE 44

/* Per-CPU value: the collector sums packets/bytes, takes min/max of the times. */
struct flow_value {
	__u64 packets;
	__u64 bytes; /* L3 bytes (IP header + payload), per segment for GSO */
	__u64 first_seen_ns; /* bpf_ktime_get_ns (CLOCK_MONOTONIC) at the slot's first packet */
	__u64 last_seen_ns;  /* CLOCK_MONOTONIC, tick resolution: < 1/HZ before the last packet */
	__u8 tcp_flags; /* OR of the TCP flags byte */
	__u8 flags;     /* FLOW_F_* */
	__u8 pad[6];
};
#define FLOW_VALUE_SIZE 40

/*
 * The flow slots: a per-CPU open-addressing table in front of the hash
 * (BPF_MAP_TYPE_ARRAY, BPF_F_MMAPABLE, nr_cpus << slot_bits entries; CPU c
 * owns entries [c << slot_bits, (c + 1) << slot_bits) and is the only writer
 * of them). A flow is looked up in FLOW_SLOT_PROBES consecutive slots from
 * its hash; a miss with no free slot goes to the per-CPU hash instead.
 * A slot is never emptied: the kernel reclaims it for a new key once its
 * last_seen_ns is below flow_ctl.reclaim_before_ns, which the collector
 * publishes after each complete read (so a reclaimed occupant's final values
 * have been read). Values are cumulative for one occupancy of one slot.
 *
 * seq: 0 = never used; odd = being (re)claimed, skip; even = stable. It grows
 * by 2 per claim, so (slot, seq) names one occupancy.
 */
struct flow_slot {
	__u32 seq;
	__u32 pad0;
	struct flow_key key;
	__u32 pad1;
	struct flow_value val;
	__u8 pad2[32]; /* two whole cache lines per slot */
};
#define FLOW_SLOT_SIZE 128
#define FLOW_SLOT_PROBES 8

/* flowlens_ctl[0], written by the collector. */
struct flow_ctl {
	__u64 reclaim_before_ns; /* CLOCK_MONOTONIC; 0 = reclaim nothing */
	__u64 pad[7];
};
#define FLOW_CTL_SIZE 64

/* IP fragment tracking: datagram id -> ports of its first fragment. */
struct frag_key {
	__u8 src[16];
	__u8 dst[16];
	__u32 id; /* IPv4 id (16 bit) or IPv6 fragment id */
	__u8 proto;
	__u8 pad[3];
};
#define FRAG_KEY_SIZE 40

struct frag_value {
	__u16 sport;
	__u16 dport;
	__u32 pad;
};
#define FRAG_VALUE_SIZE 8

/*
 * ICMP echo requests sent by local sockets (cgroup_skb egress): which socket
 * sent the echo with this identifier to this destination. Raw ICMP sockets
 * have no port, so their owner (taken at send time by the socket hooks) is
 * joined to the conversation through this cookie.
 */
struct icmp_echo_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 ident; /* echo identifier, host byte order */
	__u8 proto;  /* IPPROTO_ICMP or IPPROTO_ICMPV6 */
	__u8 pad;
};
#define ICMP_ECHO_KEY_SIZE 36

/* ---- drop / health counters (PERCPU_ARRAY "flowlens_counters") ------- */
#define CNT_FLOW_MAP_FULL 0      /* flow update failed: packet not counted */
#define CNT_FRAG_MAP_FULL 1      /* first fragment could not be remembered */
#define CNT_FRAG_NO_FIRST 2      /* later fragment without its first: counted with ports 0 */
#define CNT_PARSE_TRUNCATED 3    /* header shorter than it claims: counted as far as parsed */
#define CNT_NON_IP 4             /* not IPv4/IPv6 (ARP, LLDP ...): not a flow, informational */
#define CNT_RINGBUF_FULL 5       /* socket/process event lost: ring buffer reserve failed */
#define CNT_SOCK_MAP_FULL 6      /* socket dedup map update failed (event still sent) */
#define CNT_PACKETS_SEEN 7       /* every packet the flow programs ran on */
#define CNT_SOCK_EVENTS 8        /* EV_SOCK + EV_TCP_STATE emit attempts (incl. ring buffer full) */
#define CNT_PROC_EVENTS 9        /* EV_EXEC + EV_EXIT emit attempts (incl. ring buffer full) */
/* delivered events = CNT_SOCK_EVENTS + CNT_PROC_EVENTS - CNT_RINGBUF_FULL */
#define CNT_ICMP_MAP_FULL 10     /* an echo request's socket could not be remembered */
#define CNT_FLOW_SLOTS_FULL 11   /* packet of a flow without a slot: counted in the hash (not a loss) */
/* signals.bpf.c */
#define CNT_TCP_SIG_MAP_FULL 12  /* a TCP socket not tracked: its RTT and retransmits are missing */
#define CNT_SIG_RINGBUF_FULL 13  /* a reset or a socket's final signals lost: ring buffer full */
#define CNT_DNS_RINGBUF_FULL 14  /* a DNS message lost: ring buffer full */
#define CNT_DNS_MESSAGES 15      /* DNS packets (UDP/TCP port 53) copied or attempted */
#define CNT_DNS_CUT 16           /* DNS packets longer than DNS_PAYLOAD_MAX: copied in part */
#define CNT_SIG_EVENTS 17        /* EV_TCP_RESET + EV_TCP_SIG_FINAL emit attempts */
#define CNT_RTT_SAMPLES 18       /* RTT samples taken (informational) */
#define CNT_MAX 32

/* ---- events (ring buffer "flowlens_events") --------------------------- */
#define EV_SOCK 1      /* socket ownership, from a hook in the owner's context */
#define EV_TCP_STATE 2 /* TCP state change, any context: tuple and role only */
#define EV_EXEC 3
#define EV_EXIT 4
/* signals.bpf.c, on its own ring buffer "flowlens_sig_events" */
#define EV_TCP_RESET 5     /* a TCP RST sent or received by this host */
#define EV_TCP_SIG_FINAL 6 /* a TCP socket closed: its last signals (the map entry is gone) */
#define EV_DNS 7           /* a DNS message sent or received by a local socket */

/* sock_event.role */
#define ROLE_UNKNOWN 0
#define ROLE_CLIENT 1 /* connected / sent first */
#define ROLE_SERVER 2 /* accepted / received first */

/* sock_event.hook: which program saw it */
#define SOCK_HOOK_SEND 1
#define SOCK_HOOK_RECV 2
#define SOCK_HOOK_CONNECT 3 /* inet_sock_set_state -> SYN_SENT, in connect() */
#define SOCK_HOOK_ACCEPT 4  /* accept()/accept4() return */

#define COMM_LEN 16
#define EXE_LEN 256

/* Every event starts with this header. */
struct event_hdr {
	__u32 type; /* EV_* */
	__u32 size; /* total size of the event in bytes */
	__u64 ts_ns; /* bpf_ktime_get_ns */
};
#define EVENT_HDR_SIZE 16

struct sock_event {
	struct event_hdr hdr;
	__u64 cookie;    /* bpf_get_socket_cookie */
	__u64 cgroup_id; /* bpf_get_current_cgroup_id: inode of the v2 cgroup */
	__u32 pid;       /* tgid */
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u32 netns; /* inode number of the socket's network namespace */
	__u16 lport;
	__u16 rport; /* 0 for unconnected UDP */
	__u8 laddr[16];
	__u8 raddr[16]; /* all zero for unconnected UDP */
	__u8 proto;
	__u8 role; /* ROLE_* */
	__u8 hook; /* SOCK_HOOK_* */
	__u8 pad;
	char comm[COMM_LEN];
	__u32 pad2;
};
#define SOCK_EVENT_SIZE 112

struct tcp_state_event {
	struct event_hdr hdr;
	__u64 cookie;
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;
	__u16 rport;
	__u8 oldstate; /* TCP_* as in the kernel (1 = ESTABLISHED ... 12) */
	__u8 newstate;
	__u8 pad[2];
	__u32 netns;
	__u32 sk_err; /* newstate CLOSE: the socket's error (ECONNREFUSED, ETIMEDOUT ...), 0 if none */
};
#define TCP_STATE_EVENT_SIZE 72

struct flowlens_proc_event { /* not proc_event: vmlinux.h has cn_proc's */
	struct event_hdr hdr;
	__u64 cgroup_id;
	__u32 pid; /* tgid */
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	char comm[COMM_LEN];
	char exe[EXE_LEN]; /* EV_EXEC: the executed file name; EV_EXIT: empty */
};
#define PROC_EVENT_SIZE 312

/* ---- golden signals (signals.bpf.c) ----------------------------------- */

/*
 * A TCP socket as the signals map keys it, from its own point of view: local
 * = this host's end. Same addresses and byte order as the other structs.
 * No cookie: the sockops and tracing programs of every supported kernel
 * derive the same key, and the collector joins by tuple.
 */
struct sig_key {
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;
	__u16 rport;
	__u32 pad;
};
#define SIG_KEY_SIZE 40

/*
 * RTT samples (the kernel's smoothed estimate, srtt) of one export interval:
 * sig_ctl.gen names the interval. A program writing a sample into a slot of
 * an older gen resets it first; the collector bumps gen and then reads the
 * slot of the previous gen, which no program writes any more.
 */
struct rtt_slot {
	__u32 gen;
	__u32 samples;
	__u32 min_us;
	__u32 max_us;
	__u64 sum_us;
};
#define RTT_SLOT_SIZE 24

/* flowlens_tcp_sigs: sig_key -> tcp_sig, one per tracked TCP socket. */
struct tcp_sig {
	__u64 created_ns;    /* bpf_ktime_get_ns at creation: names this socket among those of the key */
	__u32 total_retrans; /* tcp_sock.total_retrans last read: segments retransmitted (TcpRetransSegs) */
	__u32 retrans_base;  /* of those, retransmitted before flowlens tracked the socket (0 for a new one) */
	struct rtt_slot rtt[2]; /* by gen & 1 */
};
#define TCP_SIG_SIZE 64

/* flowlens_sig_ctl[0], written by the collector before each read. */
struct sig_ctl {
	__u32 gen;
	__u32 pad;
	__u64 pad2[7];
};
#define SIG_CTL_SIZE 64

/* EV_TCP_RESET */
struct tcp_reset_event {
	struct event_hdr hdr;
	struct sig_key key; /* local = the end on this host: the RST's sender (sent) or receiver */
	__u8 sent;          /* 1: sent by the local end, 0: received by it */
	__u8 socket;        /* 1: a socket sent or received it; 0: no socket (answer to a segment no socket took) */
	__u8 pad[6];
};
#define TCP_RESET_EVENT_SIZE 64

/* EV_TCP_SIG_FINAL: the socket reached CLOSE; its map entry was deleted. */
struct tcp_sig_final_event {
	struct event_hdr hdr;
	struct sig_key key;
	struct tcp_sig sig;
};
#define TCP_SIG_FINAL_EVENT_SIZE 120

/* EV_DNS: hdr.size = DNS_EVENT_HDR_SIZE + the record's payload room. */
#define DNS_PAYLOAD_SMALL 256
#define DNS_PAYLOAD_MAX 1024
struct dns_event {
	struct event_hdr hdr;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;    /* IPPROTO_UDP or IPPROTO_TCP */
	__u8 egress;   /* 1: sent by a local socket (cgroup egress); 0: delivered to one (ingress) */
	__u16 cap_len; /* payload bytes copied */
	__u32 orig_len; /* L4 payload bytes of the packet */
	__u32 pad;
	__u8 payload[DNS_PAYLOAD_MAX];
};
#define DNS_EVENT_HDR_SIZE 64
#define DNS_EVENT_SIZE (DNS_EVENT_HDR_SIZE + DNS_PAYLOAD_MAX)

_Static_assert(sizeof(struct flow_key) == FLOW_KEY_SIZE, "flow_key size");
_Static_assert(sizeof(struct flow_value) == FLOW_VALUE_SIZE, "flow_value size");
_Static_assert(sizeof(struct flow_slot) == FLOW_SLOT_SIZE, "flow_slot size");
_Static_assert(sizeof(struct flow_ctl) == FLOW_CTL_SIZE, "flow_ctl size");
_Static_assert(sizeof(struct frag_key) == FRAG_KEY_SIZE, "frag_key size");
_Static_assert(sizeof(struct frag_value) == FRAG_VALUE_SIZE, "frag_value size");
_Static_assert(sizeof(struct icmp_echo_key) == ICMP_ECHO_KEY_SIZE, "icmp_echo_key size");
_Static_assert(sizeof(struct event_hdr) == EVENT_HDR_SIZE, "event_hdr size");
_Static_assert(sizeof(struct sock_event) == SOCK_EVENT_SIZE, "sock_event size");
_Static_assert(sizeof(struct tcp_state_event) == TCP_STATE_EVENT_SIZE, "tcp_state_event size");
_Static_assert(sizeof(struct flowlens_proc_event) == PROC_EVENT_SIZE, "proc_event size");
_Static_assert(sizeof(struct sig_key) == SIG_KEY_SIZE, "sig_key size");
_Static_assert(sizeof(struct rtt_slot) == RTT_SLOT_SIZE, "rtt_slot size");
_Static_assert(sizeof(struct tcp_sig) == TCP_SIG_SIZE, "tcp_sig size");
_Static_assert(sizeof(struct sig_ctl) == SIG_CTL_SIZE, "sig_ctl size");
_Static_assert(sizeof(struct tcp_reset_event) == TCP_RESET_EVENT_SIZE, "tcp_reset_event size");
_Static_assert(sizeof(struct tcp_sig_final_event) == TCP_SIG_FINAL_EVENT_SIZE, "tcp_sig_final_event size");
_Static_assert(sizeof(struct dns_event) == DNS_EVENT_SIZE, "dns_event size");

#endif /* FLOWLENS_FLOW_ABI_H */
