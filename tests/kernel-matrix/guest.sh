#!/usr/bin/env bash
# Runs inside one kernel-matrix guest (virtme-ng, this machine's root file
# system read-only, target/tmp shared writable): doctor, the BPF_PROG_TEST_RUN
# golden tests, the socket-hook tests, an end-to-end subset and the kernel
# benchmarks. Prints one "PASS|FAIL <step> (<s>)" line per step and the end
# of a failed step's log; exits non-zero if a step failed.
#   guest.sh <suite> <file with "name path" of the test binaries>
set -u
cd "$(dirname "$0")/../.."
suite=$1
bins=$2
bin() { awk -v n="$1" '$1 == n {print $2}' "$bins"; }
out=target/tmp/kernel-matrix/$suite
rm -rf "$out"
mkdir -p "$out"
# The release binary: the debug build's start-up (BTF parsing, CO-RE
# relocation) takes tens of seconds on the emulated CPU.
export FLOWLENS_BIN=$PWD/target/release/flowlens
export FLOWLENS_READY_TIMEOUT_SECS=120
# Harness timeouts and settle times × 8 (python start-up, tcpdump's last packets).
export FLOWLENS_TEST_TIME_SCALE=8
steps=" ${FLOWLENS_MATRIX_STEPS:-doctor flow_prog sock_prog e2e bench} "
# The guest has no docker: the "container" is a netns + a docker-scope cgroup.
echo "kernel $(uname -r) ($suite), $(nproc) CPUs"
failed=0
step() {
	local name=$1 start=$SECONDS
	shift
	[[ $steps == *" ${name%%_*} "* || $steps == *" $name "* ]] || return 0
	if "$@" >"$out/$name.log" 2>&1; then
		echo "PASS $name ($((SECONDS - start)) s)"
	else
		echo "FAIL $name ($((SECONDS - start)) s); end of $out/$name.log:"
		tail -n 60 "$out/$name.log" | sed 's/^/    /'
		failed=1
	fi
}
step doctor "$FLOWLENS_BIN" doctor
# The path each hook gets here, for the report.
[ -f "$out/doctor.log" ] && grep -E '^\[ *(ok|warn|MISSING)\] (hook:|XDP and TC flow|socket and process|golden-signal|signal hook)' "$out/doctor.log" | sed 's/^/    /'
step flow_prog "$(bin flow_prog)" --test-threads=1
step sock_prog "$(bin sock_prog)" --test-threads=1
# signals_prog (the DNS copy programs, byte for byte) only when FLOWLENS_MATRIX_STEPS names it: before
# the kernel fix of November 2024 (bpf-next; the selftest cgroup_skb_prog_run_direct_packet_access)
# BPF_PROG_TEST_RUN gives cgroup_skb programs no data_end, so they see no packet. Measured: its three
# copy tests fail on Debian's 5.10, 6.1 and 6.12.117 (the fourth, nothing copied, passes), pass on 6.18.
# Attached to a cgroup the programs do see packets there: signals_e2e below.
step signals_prog "$(bin signals_prog)" --test-threads=1
# End-to-end (each test ~1.5 min under TCG, so a subset): TCP and UDP
# (sendto) between the host and a "container" (netns + docker-scope cgroup),
# both ends attributed (pid, user, container) and counts equal to tcpdump's;
# a connection older than flowlens; a client gone before the export.
step e2e "$(bin e2e_capture)" --test-threads=1 --exact \
	ebpf_tcp_host_client_to_container_server ebpf_udp_unconnected_host_client_to_container_server \
	ebpf_connection_opened_before_start_is_attributed ebpf_exited_client_is_attributed
# Golden signals from real traffic: refused, aborted, timed-out and unreachable connects, RTT, retransmits
# against the kernel's TcpRetransSegs, DNS names and rcodes from dnsmasq; signals_delay: behind a 40 ms
# TUN relay (RTT, connect and DNS latency against ping). Only when FLOWLENS_MATRIX_STEPS names them
# (~3 + ~2.5 min per kernel). Measured 2026-12-02: both pass on 6.1; on 6.12 signals_e2e passes and
# signals_delay's DNS band failed once (dnsmasq answered in up to 120 ms under TCG vs ping's 60 ms).
step signals_e2e "$(bin e2e_signals)" --test-threads=1
step signals_delay "$(bin e2e_signals_delay)" --test-threads=1
# Benchmarks (emulated CPU: ratios against empty programs in the same run).
if [[ $steps == *" bench "* ]]; then
	step bench_kernel_progs target/release/kernel-progs --repeat=20000 --rounds=3 --flows=1024 \
		--passes=1 --new-rounds=1 --no-header
	step bench_sock_hooks target/release/sock-hooks --conns=150 --execs=15 --rounds=2 --no-header
	cat "$out/bench_kernel_progs.log" "$out/bench_sock_hooks.log" | grep '^|' | sed "s/^/    [$suite] /"
fi
exit $failed
