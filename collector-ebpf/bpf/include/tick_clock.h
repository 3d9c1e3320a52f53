/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tick_clock.h - a CLOCK_MONOTONIC time at most one tick old, without a clock
 * read per call: bpf_ktime_get_ns() costs ~30 ns here, bpf_jiffies64() is
 * inlined by the verifier to a load. flowlens_clock caches, per CPU, the
 * bpf_ktime_get_ns() taken at the first call of the current jiffy. Include
 * once per object, after vmlinux.h and bpf_helpers.h.
 */
#ifndef FLOWLENS_TICK_CLOCK_H
#define FLOWLENS_TICK_CLOCK_H

struct fl_clock {
	__u64 jiffies;
	__u64 ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fl_clock);
} flowlens_clock SEC(".maps");

static __always_inline __u64 tick_ns(void)
{
	__u32 zero = 0;
	struct fl_clock *c = bpf_map_lookup_elem(&flowlens_clock, &zero);
	__u64 j = bpf_jiffies64();

	if (!c)
		return bpf_ktime_get_ns();
	if (c->jiffies != j) {
		c->jiffies = j;
		c->ns = bpf_ktime_get_ns();
	}
	return c->ns;
}

#endif /* FLOWLENS_TICK_CLOCK_H */
