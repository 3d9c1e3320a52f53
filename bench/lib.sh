# Sourced by the bench scripts (from the repository root).

# require_bins NAME...: the release binaries the script runs.
require_bins() {
	for b in "$@"; do
		[ -x "target/release/$b" ] || {
			echo "error: target/release/$b missing: cargo build --release -p flowlens-collector -p flowlens-bench" >&2
			exit 1
		}
	done
}

# veth_up NS H N HIP NIP: a veth pair H (root namespace, HIP/24) - N (in the
# new namespace NS, NIP/24), both up; leftovers of an earlier run removed first.
veth_up() {
	local ns=$1 h=$2 n=$3 hip=$4 nip=$5
	veth_down "$ns" "$h"
	ip netns add "$ns"
	ip link add "$h" type veth peer name "$n"
	ip link set "$n" netns "$ns"
	ip addr add "$hip/24" dev "$h" && ip link set "$h" up
	ip -n "$ns" addr add "$nip/24" dev "$n" && ip -n "$ns" link set "$n" up && ip -n "$ns" link set lo up
}

# veth_down NS H: removes what veth_up made (quietly, also when half made).
veth_down() {
	ip link del "$2" 2>/dev/null || true
	ip netns del "$1" 2>/dev/null || true
}

# flowlens_bg LOG FLAG...: `flowlens run FLAG...` in the background (FL_PID), its log in LOG, until its
# first interval. LOG is emptied here, before the start: the redirection happens in the background job,
# maybe after wait_exported read a previous run's log.
flowlens_bg() {
	local log=$1
	shift
	: >"$log"
	FLOWLENS_LOG=info $BIN/flowlens run "$@" >/dev/null 2>"$log" &
	FL_PID=$!
	wait_exported $FL_PID "$log"
}

# wait_exported PID LOG: until the collector PID logged its first interval.
wait_exported() {
	for _ in $(seq 100); do
		grep -q "Interval exported" "$2" 2>/dev/null && return 0
		kill -0 "$1" 2>/dev/null || { cat "$2" >&2; exit 1; }
		sleep 0.1
	done
	echo "error: flowlens did not start" >&2
	cat "$2" >&2
	exit 1
}
