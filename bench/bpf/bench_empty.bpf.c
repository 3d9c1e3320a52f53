// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bench_empty.bpf.c - the floor for the kernel-program benchmarks: programs
 * of the same types as flow.bpf.c that do nothing, measured in the same run
 * so a flow program's cost is reported as a ratio to the BPF_PROG_TEST_RUN
 * overhead (context setup, dispatch, timing) on this machine at this moment.
 * Part of the bench crate, not of the collector.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int bench_empty_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("classifier")
int bench_empty_tc(struct __sk_buff *skb)
{
	return -1; /* TC_ACT_UNSPEC, as flowlens_tc */
}

/*
 * The same floor for the socket and process hooks of sock.bpf.c: one empty
 * program per hook, attached where flowlens attaches its own, so the
 * sock-hooks benchmark reports each hook's cost beside the cost of running
 * any program there (dispatch, and bpf_stats' own clock reads).
 */
SEC("tp_btf/sock_send_length")
int bench_empty_sock_send(void *ctx)
{
	return 0;
}

SEC("tp_btf/sock_recv_length")
int bench_empty_sock_recv(void *ctx)
{
	return 0;
}

/* Where the 6.3 tracepoints are missing, flowlens uses fexit on these. */
SEC("fexit/inet_sendmsg")
int bench_empty_inet_sendmsg(void *ctx)
{
	return 0;
}

SEC("fexit/inet6_sendmsg")
int bench_empty_inet6_sendmsg(void *ctx)
{
	return 0;
}

SEC("fexit/inet_recvmsg")
int bench_empty_inet_recvmsg(void *ctx)
{
	return 0;
}

SEC("fexit/inet6_recvmsg")
int bench_empty_inet6_recvmsg(void *ctx)
{
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int bench_empty_sock_state(void *ctx)
{
	return 0;
}

SEC("tp_btf/sched_process_exec")
int bench_empty_exec(void *ctx)
{
	return 0;
}

SEC("tp_btf/sched_process_exit")
int bench_empty_exit(void *ctx)
{
	return 0;
}

SEC("tp_btf/sched_process_exit")
int bench_empty_exit_task(void *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int bench_empty_accept4(void *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int bench_empty_accept(void *ctx)
{
	return 0;
}

SEC("cgroup_skb/egress")
int bench_empty_icmp_egress(struct __sk_buff *skb)
{
	return 1;
}

/*
 * The floor for the golden-signal programs of signals.bpf.c (bench
 * signal-costs): the same hooks, nothing done. inet_sock_set_state and
 * cgroup_skb egress use the programs above.
 */
SEC("sockops")
int bench_empty_sockops(struct bpf_sock_ops *ops)
{
	return 1;
}

SEC("tp_btf/tcp_retransmit_skb")
int bench_empty_tcp_retransmit(void *ctx)
{
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int bench_empty_tcp_send_reset(void *ctx)
{
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int bench_empty_tcp_recv_reset(void *ctx)
{
	return 0;
}

SEC("cgroup_skb/ingress")
int bench_empty_cgroup_ingress(struct __sk_buff *skb)
{
	return 1;
}
