// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bench_empty.bpf.c - the floor for the kernel-program benchmarks: programs
 * of the same types as flow.bpf.c that do nothing, measured in the same run
 * so a flow program's cost is reported as a ratio to the BPF_PROG_TEST_RUN
 * overhead (context setup, dispatch, timing) on this machine at this moment.
 * Not loaded by the collector.
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
