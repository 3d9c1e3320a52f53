/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * counters.h - the per-CPU drop/health counters of an object
 * (flowlens_counters, indexed by CNT_* of flow_abi.h; the collector sums the
 * CPUs). The verifier inlines the array lookup. Include once per object,
 * after vmlinux.h, bpf_helpers.h and flow_abi.h.
 */
#ifndef FLOWLENS_COUNTERS_H
#define FLOWLENS_COUNTERS_H

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} flowlens_counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&flowlens_counters, &idx);

	if (c)
		*c += 1;
}

#endif /* FLOWLENS_COUNTERS_H */
