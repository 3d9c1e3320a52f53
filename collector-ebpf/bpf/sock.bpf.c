// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sock.bpf.c - who owns which socket, and which processes exist.
 *
 * Owner data (pid, uid, comm, cgroup) is only taken in hooks that run in the
 * socket owner's process context: send/recv syscalls, connect() (the
 * transition to SYN_SENT) and accept(). TCP state changes can run in the
 * softirq of an unrelated process, so EV_TCP_STATE carries no owner: the
 * collector joins it by cookie.
 *
 * flowlens_sock_seen: cookie -> (tuple hash & ~ROLE_MASK) | role. A socket
 * is reported again when its tuple changes (UDP connect after sends), and by
 * send/recv when it is still in use fl_refresh_ns after its last report (the
 * collector forgets owners nothing referenced for a while, e.g. of a
 * connection idle for minutes); the role decided first sticks to the cookie.
 *
 * ICMP: raw and ping sockets are reported at send time (the owner's context)
 * with role client; ping sockets carry the echo identifier as their local
 * port, raw sockets have none (lport 0). flowlens_icmp_egress (cgroup_skb
 * egress on the cgroup v2 root) records which socket cookie sent each echo
 * request (addresses + identifier), so the collector can join a raw socket's
 * owner to its echo conversation. It never drops a packet.
 *
 * Kernels (the collector probes and attaches per kernel; README's table):
 *  - send/recv: tp_btf sock_send_length / sock_recv_length (6.3+), else fexit
 *    on inet_sendmsg, inet6_sendmsg, inet_recvmsg, inet6_recvmsg (the
 *    functions those tracepoints' caller dispatches to for every IPv4/IPv6
 *    socket: TCP, UDP, ping, raw; same context, same arguments, same events).
 *  - process exit: tp_btf sched_process_exit with group_dead (6.16+), else
 *    the task-only tracepoint with the group's end read from signal->live.
 *  - This file is built twice: sock.bpf.o needs 5.12 helpers in tracing
 *    programs (bpf_get_socket_cookie, bpf_sk_storage_get,
 *    bpf_get_current_task_btf); sock.compat.bpf.o (-DFL_COMPAT) runs on
 *    5.10/5.11: the cookie is read from the socket (see sk_cookie), the
 *    dedup is flowlens_sock_seen alone, the task is read with CO-RE.
 *
 * Counters: CNT_SOCK_EVENTS / CNT_PROC_EVENTS count every attempt to emit an
 * event, CNT_RINGBUF_FULL the attempts whose reserve failed. Hence
 *   events delivered = CNT_SOCK_EVENTS + CNT_PROC_EVENTS - CNT_RINGBUF_FULL.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "flow_abi.h"
#include "counters.h"
#include "tick_clock.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define PF_KTHREAD 0x00200000
#define ROLE_MASK 0x3ULL
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_ICMPV6 58

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} flowlens_events SEC(".maps");

/* What flowlens_sock_seen remembers of a reported socket. */
struct sock_seen {
	__u64 hash_role;   /* tuple_hash() | ROLE_* */
	__u64 reported_ns; /* tick_ns() of the report */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_seen);
} flowlens_sock_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct icmp_echo_key);
	__type(value, __u64);
} flowlens_icmp_echo SEC(".maps");

/*
 * Per-socket copy of what was reported and when: the send/recv fast path. A
 * socket in use is reported again once fl_refresh_ns has passed, so the
 * collector, which forgets owners it has not needed for a while, learns an
 * idle connection's owner again when it wakes up.
 */
struct sk_local {
	__u64 hash;        /* tuple_hash() as reported */
	__u64 reported_ns; /* tick_ns() of the report */
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sk_local);
} flowlens_sk_seen SEC(".maps");

/* Set by the collector at load time (must stay below its owner grace period). */
const volatile __u64 fl_refresh_ns = 60000000000ULL;

/* A socket's addresses as reported: IPv4 mapped, 0.0.0.0 all zero. */
struct sk_tuple {
	__u32 laddr[4];
	__u32 raddr[4];
	__u16 lport; /* host order */
	__u16 rport; /* host order */
	__u16 family;
	__u8 proto;
	__u8 pad;
};

static __always_inline void set_v4(__u32 *dst, __u32 addr)
{
	dst[0] = 0;
	dst[1] = 0;
	/* 0.0.0.0 (unbound / unconnected) stays all zero, not ::ffff:0.0.0.0 */
	dst[2] = addr ? bpf_htonl(0x0000ffff) : 0;
	dst[3] = addr;
}

static __always_inline int family_proto_ok(__u16 family, __u16 proto)
{
	return (family == AF_INET || family == AF_INET6) &&
	       (proto == IPPROTO_TCP || proto == IPPROTO_UDP);
}

static __always_inline int is_icmp(__u16 family, __u16 proto)
{
	return (family == AF_INET && proto == IPPROTO_ICMP) ||
	       (family == AF_INET6 && proto == IPPROTO_ICMPV6);
}

/* Tuple through a BTF pointer (tp_btf arguments): plain loads, no helper calls. */
static __always_inline void tuple_from_btf(const struct sock *sk, __u16 family, struct sk_tuple *t)
{
	const struct sock_common *c = &sk->__sk_common;

	if (family == AF_INET) {
		set_v4(t->laddr, c->skc_rcv_saddr);
		set_v4(t->raddr, c->skc_daddr);
	} else {
#pragma unroll
		for (int i = 0; i < 4; i++) {
			t->laddr[i] = c->skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			t->raddr[i] = c->skc_v6_daddr.in6_u.u6_addr32[i];
		}
	}
	t->lport = c->skc_num;
	t->rport = bpf_ntohs(c->skc_dport);
	t->family = family;
	t->proto = (__u8)sk->sk_protocol;
	t->pad = 0;
}

/* Tuple through a pointer found by walking memory (accept): CO-RE probe reads. */
static __always_inline void tuple_from_probe(const struct sock *sk, __u16 family,
					     struct sk_tuple *t)
{
	if (family == AF_INET) {
		set_v4(t->laddr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		set_v4(t->raddr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
	} else {
		BPF_CORE_READ_INTO(&t->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&t->raddr, sk, __sk_common.skc_v6_daddr);
	}
	t->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	t->family = family;
	t->proto = (__u8)BPF_CORE_READ(sk, sk_protocol);
	t->pad = 0;
}

/* Dedup key of a tuple; the low bits are left free for the role. */
static __always_inline __u64 tuple_hash(const struct sk_tuple *t)
{
	__u64 h =
		0xcbf29ce484222325ULL ^ ((__u64)t->lport << 32 | (__u64)t->rport << 16 | t->proto);

#pragma unroll
	for (int i = 0; i < 4; i++) {
		h = (h ^ t->laddr[i]) * 0x100000001b3ULL;
		h = (h ^ t->raddr[i]) * 0x100000001b3ULL;
	}
	h ^= h >> 29;
	return h & ~ROLE_MASK;
}

static __always_inline void mark_seen(__u64 cookie, __u64 hash_role)
{
	struct sock_seen v = { .hash_role = hash_role, .reported_ns = tick_ns() };

	if (bpf_map_update_elem(&flowlens_sock_seen, &cookie, &v, BPF_ANY))
		count(CNT_SOCK_MAP_FULL);
}

/*
 * The socket's cookie. Before 5.12 tracing programs cannot call
 * bpf_get_socket_cookie, so the compat build reads the cookie the kernel
 * stored when something first asked for it (sock_diag, a cgroup or socket
 * program, flowlens_icmp_egress); a socket nobody asked yet gets an id
 * derived from its address (bit 62 set: apart from kernel cookies, which
 * count up from 1, and from the collector's /proc ids, bit 63). Every hook
 * of one build derives it the same way, so the events of a socket join.
 */
static __always_inline __u64 fl_pseudo_cookie(const void *sk)
{
	const void *p = sk;
	__u64 addr = 0;

	/* The verifier allows no arithmetic on a socket pointer: read its bits. */
	bpf_probe_read_kernel(&addr, sizeof(addr), &p);
	return ((addr * 0x9E3779B97F4A7C15ULL) >> 2) | (1ULL << 62);
}

static __always_inline __u64 sk_cookie(struct sock *sk)
{
#ifndef FL_COMPAT
	return bpf_get_socket_cookie(sk);
#else
	__u64 c = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);

	return c ? c : fl_pseudo_cookie(sk);
#endif
}

/* The current task's flags (PF_*). */
static __always_inline __u32 current_flags(void)
{
#ifndef FL_COMPAT
	return bpf_get_current_task_btf()->flags;
#else
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(task, flags);
#endif
}

/*
 * Emits EV_SOCK with the current task as owner and, if the event fits in the
 * ring buffer, remembers the cookie (a lost event leaves the cookie unseen so
 * the next send/recv reports it again).
 */
/* Returns 1 when the event was emitted (and the cookie marked seen). */
static __always_inline int emit_sock(const struct sk_tuple *t, __u32 netns, __u64 cookie, __u8 role,
				     __u8 hook, __u64 hash)
{
	struct sock_event *e;
	__u64 pid_tgid, uid_gid;

	count(CNT_SOCK_EVENTS);
	e = bpf_ringbuf_reserve(&flowlens_events, sizeof(*e), 0);
	if (!e) {
		count(CNT_RINGBUF_FULL);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	pid_tgid = bpf_get_current_pid_tgid();
	uid_gid = bpf_get_current_uid_gid();
	e->hdr.type = EV_SOCK;
	e->hdr.size = sizeof(*e);
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->cookie = cookie;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	e->netns = netns;
	e->lport = t->lport;
	e->rport = t->rport;
	__builtin_memcpy(e->laddr, t->laddr, 16);
	__builtin_memcpy(e->raddr, t->raddr, 16);
	e->proto = t->proto;
	e->role = role;
	e->hook = hook;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	mark_seen(cookie, hash | role);
	bpf_ringbuf_submit(e, 0);
	return 1;
}

/*
 * send/recv: the hot path is one socket-local storage lookup whose stored
 * tuple hash matches (no hash-map lookup, no cookie). A miss falls back to
 * flowlens_sock_seen, which also knows sockets reported by connect/accept.
 * The compat build has no socket storage in tracing programs: its hot path is
 * the flowlens_sock_seen lookup.
 */
static __always_inline int on_sock_io(struct sock *sk, int ret, __u8 hook)
{
	struct sk_tuple t;
	__u16 family, proto;
	__u64 cookie, hash, now;
	struct sock_seen *seen;
	int refresh = 0;
	__u8 role;

	/* a failed call (EAGAIN on an empty socket ...) says nothing about the role */
	if (ret < 0 || !sk)
		return 0;
	family = sk->__sk_common.skc_family;
	proto = sk->sk_protocol;
	if (is_icmp(family, proto)) {
		/* Raw sockets receive copies of all ICMP: only sends say who pings. */
		if (hook != SOCK_HOOK_SEND)
			return 0;
	} else if (!family_proto_ok(family, proto)) {
		return 0;
	}
	if (proto == IPPROTO_TCP) {
		__u8 state = sk->__sk_common.skc_state;

		/* closed: the tuple may be gone and connect/accept report it anyway */
		if (state == TCP_CLOSE || state == TCP_LISTEN)
			return 0;
	}
	tuple_from_btf(sk, family, &t);
	if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		/* ping sockets: skc_num is the echo identifier; raw: the protocol */
		if (sk->sk_type == SOCK_RAW)
			t.lport = 0;
		t.rport = 0;
	}
	hash = tuple_hash(&t);
	now = tick_ns();
#ifndef FL_COMPAT
	struct sk_local *local = bpf_sk_storage_get(&flowlens_sk_seen, sk, 0, 0);

	if (local && local->hash == hash) {
		if (now - local->reported_ns < fl_refresh_ns)
			return 0;
		refresh = 1; /* in use long after its report: report it again */
	}
#endif
	cookie = sk_cookie(sk);
	seen = bpf_map_lookup_elem(&flowlens_sock_seen, &cookie);
	if (seen) {
		if ((seen->hash_role & ~ROLE_MASK) == hash && !refresh) {
#ifndef FL_COMPAT
			goto remember; /* reported by connect/accept, or storage was full */
#else
			if (now - seen->reported_ns < fl_refresh_ns)
				return 0;
#endif
		}
		role = seen->hash_role & ROLE_MASK;
	} else if (proto != IPPROTO_TCP) {
		role = hook == SOCK_HOOK_SEND ? ROLE_CLIENT : ROLE_SERVER;
	} else {
		role = ROLE_UNKNOWN;
	}
	if (!emit_sock(&t, sk->__sk_common.skc_net.net->ns.inum, cookie, role, hook, hash))
		return 0;
#ifndef FL_COMPAT
remember:
	local = bpf_sk_storage_get(&flowlens_sk_seen, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (local) {
		local->hash = hash;
		local->reported_ns = now;
	} else {
		count(CNT_SOCK_MAP_FULL);
	}
#endif
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(flowlens_sock_send, struct sock *sk, int ret, int flags)
{
	return on_sock_io(sk, ret, SOCK_HOOK_SEND);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(flowlens_sock_recv, struct sock *sk, int ret, int flags)
{
	return on_sock_io(sk, ret, SOCK_HOOK_RECV);
}

/*
 * Before 6.3: the same events from the return of the inet protocol
 * functions that sock_sendmsg/sock_recvmsg dispatch to (the 6.3 tracepoints
 * fire right after them), in the same process context. Their signatures
 * are unchanged from 5.10 to 6.x, unlike tcp_recvmsg's and udp_recvmsg's.
 */
SEC("fexit/inet_sendmsg")
int BPF_PROG(flowlens_inet_sendmsg, struct socket *sock, struct msghdr *msg, size_t size, int ret)
{
	return on_sock_io(sock->sk, ret, SOCK_HOOK_SEND);
}

SEC("fexit/inet6_sendmsg")
int BPF_PROG(flowlens_inet6_sendmsg, struct socket *sock, struct msghdr *msg, size_t size, int ret)
{
	return on_sock_io(sock->sk, ret, SOCK_HOOK_SEND);
}

SEC("fexit/inet_recvmsg")
int BPF_PROG(flowlens_inet_recvmsg, struct socket *sock, struct msghdr *msg, size_t size, int flags,
	     int ret)
{
	return on_sock_io(sock->sk, ret, SOCK_HOOK_RECV);
}

SEC("fexit/inet6_recvmsg")
int BPF_PROG(flowlens_inet6_recvmsg, struct socket *sock, struct msghdr *msg, size_t size,
	     int flags, int ret)
{
	return on_sock_io(sock->sk, ret, SOCK_HOOK_RECV);
}

/* Transitions worth a record; the others are implied by these. */
static __always_inline int state_reported(int oldstate, int newstate)
{
	return newstate == TCP_ESTABLISHED || newstate == TCP_CLOSE || oldstate == TCP_SYN_RECV ||
	       newstate == TCP_FIN_WAIT1 || newstate == TCP_CLOSE_WAIT;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(flowlens_sock_state, const struct sock *sk, int oldstate, int newstate)
{
	struct sock *s = (struct sock *)sk;
	struct tcp_state_event *e;
	struct sk_tuple t;
	__u16 family;
	__u64 cookie;
	struct sock_seen *seen;

	if (!sk || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;

	if (newstate == TCP_SYN_SENT) {
		/* connect() of the owner; kernel threads (MPTCP subflows) own nothing */
		if (current_flags() & PF_KTHREAD)
			return 0;
		tuple_from_btf(sk, family, &t);
		cookie = sk_cookie(s);
		emit_sock(&t, sk->__sk_common.skc_net.net->ns.inum, cookie, ROLE_CLIENT,
			  SOCK_HOOK_CONNECT, tuple_hash(&t));
		return 0;
	}
	if (!state_reported(oldstate, newstate))
		return 0;

	tuple_from_btf(sk, family, &t);
	/*
	 * On -> CLOSE the kernel releases the port (skc_num = 0) before the
	 * state store; inet_sport keeps it.
	 */
	if (!t.lport)
		t.lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)s, inet_sport));
	cookie = sk_cookie(s);
	if (newstate == TCP_ESTABLISHED) {
		/* the local port is known now: later sends match the CONNECT record */
		seen = bpf_map_lookup_elem(&flowlens_sock_seen, &cookie);
		if (seen)
			seen->hash_role = tuple_hash(&t) | (seen->hash_role & ROLE_MASK);
	}

	count(CNT_SOCK_EVENTS);
	e = bpf_ringbuf_reserve(&flowlens_events, sizeof(*e), 0);
	if (!e) {
		count(CNT_RINGBUF_FULL);
	} else {
		__builtin_memset(e, 0, sizeof(*e));
		e->hdr.type = EV_TCP_STATE;
		e->hdr.size = sizeof(*e);
		e->hdr.ts_ns = bpf_ktime_get_ns();
		e->cookie = cookie;
		__builtin_memcpy(e->laddr, t.laddr, 16);
		__builtin_memcpy(e->raddr, t.raddr, 16);
		e->lport = t.lport;
		e->rport = t.rport;
		e->oldstate = (__u8)oldstate;
		e->newstate = (__u8)newstate;
		e->netns = sk->__sk_common.skc_net.net->ns.inum;
		/* a connect that failed: why (refused, timed out, unreachable ...) */
		if (newstate == TCP_CLOSE)
			e->sk_err = (__u32)sk->sk_err;
		bpf_ringbuf_submit(e, 0);
	}
	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&flowlens_sock_seen, &cookie);
	return 0;
}

/*
 * accept()/accept4() return: fd -> file -> socket -> sock. Tracepoint
 * programs cannot call bpf_get_socket_cookie, so the cookie is read from the
 * sock: flowlens_sock_state generated it at SYN_RECV -> ESTABLISHED; if it
 * has none (a connection older than the program; the compat build never
 * generates one), the id every hook of this build derives from the address.
 */
static __always_inline int on_accept(long ret)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file **fds, *file;
	struct socket *sock;
	struct sock *sk;
	struct sk_tuple t;
	__u16 family, proto;
	__u64 cookie;

	if (ret < 0)
		return 0;
	if ((__u64)ret >= BPF_CORE_READ(task, files, fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(task, files, fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[ret]) || !file)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	/* the fd could have been replaced since the syscall returned */
	if (!sock || BPF_CORE_READ(sock, file) != file)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	proto = BPF_CORE_READ(sk, sk_protocol);
	if (!family_proto_ok(family, proto))
		return 0;
	tuple_from_probe(sk, family, &t);
	cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (!cookie)
		cookie = fl_pseudo_cookie(sk);
	emit_sock(&t, BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum), cookie, ROLE_SERVER,
		  SOCK_HOOK_ACCEPT, tuple_hash(&t));
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int flowlens_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int flowlens_accept(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx->ret);
}

/* Fills a process event from the current task (the process itself). */
static __always_inline struct flowlens_proc_event *reserve_proc(struct task_struct *p, __u32 type)
{
	struct flowlens_proc_event *e;
	__u64 uid_gid;

	count(CNT_PROC_EVENTS);
	e = bpf_ringbuf_reserve(&flowlens_events, sizeof(*e), 0);
	if (!e) {
		count(CNT_RINGBUF_FULL);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	uid_gid = bpf_get_current_uid_gid();
	e->hdr.type = type;
	e->hdr.size = sizeof(*e);
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->pid = p->tgid;
	e->ppid = p->real_parent->tgid;
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(flowlens_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct flowlens_proc_event *e = reserve_proc(p, EV_EXEC);

	if (!e)
		return 0;
	bpf_probe_read_kernel_str(e->exe, sizeof(e->exe), bprm->filename);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/*
 * The last thread of the group (group_dead), not the leader: a leader may
 * exit while other threads keep the process and its sockets alive.
 */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(flowlens_exit, struct task_struct *p, bool group_dead)
{
	struct flowlens_proc_event *e;

	if (!group_dead)
		return 0;
	e = reserve_proc(p, EV_EXIT);
	if (e)
		bpf_ringbuf_submit(e, 0);
	return 0;
}

/*
 * Kernels before 6.16 pass the task only. do_exit() decrements
 * signal->live before this tracepoint, so 0 means the group is dead. Two
 * threads exiting at once may both see 0: a second EV_EXIT for a pid is
 * harmless (the collector forgets the pid once).
 */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(flowlens_exit_task, struct task_struct *p)
{
	struct flowlens_proc_event *e;

	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0;
	e = reserve_proc(p, EV_EXIT);
	if (e)
		bpf_ringbuf_submit(e, 0);
	return 0;
}

/*
 * Which local socket sent each ICMP echo request. Locally generated packets
 * only (cgroup egress); always allows the packet.
 */
SEC("cgroup_skb/egress")
int flowlens_icmp_egress(struct __sk_buff *skb)
{
	/* Runs on every locally sent packet: direct reads, no helper call until
	 * the packet is known to be an echo request. data is the L3 header. */
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct icmp_echo_key key = {};
	__u64 cookie;
	__u8 *ip = data;

	if ((void *)(ip + 1) > data_end)
		return 1;
	if ((ip[0] >> 4) == 4) {
		__u32 ihl;
		__u8 *icmp;

		if ((void *)(ip + 20) > data_end || ip[9] != IPPROTO_ICMP)
			return 1;
		ihl = (ip[0] & 0x0f) * 4;
		if (ihl < 20 || ihl > 60)
			return 1;
		icmp = ip + ihl;
		if ((void *)(icmp + 8) > data_end || icmp[0] != 8) /* echo request */
			return 1;
		set_v4((__u32 *)key.src, *(__u32 *)(ip + 12));
		set_v4((__u32 *)key.dst, *(__u32 *)(ip + 16));
		key.ident = bpf_ntohs(*(__u16 *)(icmp + 4));
		key.proto = IPPROTO_ICMP;
	} else if ((ip[0] >> 4) == 6) {
		__u8 *icmp = ip + 40;

		/* ping does not add extension headers */
		if ((void *)(icmp + 8) > data_end || ip[6] != IPPROTO_ICMPV6 || icmp[0] != 128)
			return 1;
		__builtin_memcpy(key.src, ip + 8, 16);
		__builtin_memcpy(key.dst, ip + 24, 16);
		key.ident = bpf_ntohs(*(__u16 *)(icmp + 4));
		key.proto = IPPROTO_ICMPV6;
	} else {
		return 1;
	}
	cookie = bpf_get_socket_cookie(skb);
	if (!cookie)
		return 1;
	if (bpf_map_update_elem(&flowlens_icmp_echo, &key, &cookie, BPF_ANY))
		count(CNT_ICMP_MAP_FULL);
	return 1;
}

/*
 * Never called. Its signature puts the event structs into this object's BTF
 * (ring-buffer records are locals, which BTF omits), where the ABI test
 * compares them with the Rust mirror.
 */
__noinline int flowlens_abi_events(struct sock_event *s, struct tcp_state_event *t,
				   struct flowlens_proc_event *p)
{
	return s && t && p;
}
