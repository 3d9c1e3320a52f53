#!/usr/bin/env bash
# System cost of the golden-signal programs: the same traffic with flowlens
# run with its signal programs (the default) and with --no-signals, and
# without flowlens, interleaved round by round (the order rotates), as ratios.
#   TCP bulk ns -> root (iperf3 through a veth pair, flowlens on the root end)
#   and short-connection churn (conn-churn: many processes, thousands of
#   connections/s): rate, and flowlens CPU per connection.
# Usage: bench/signal-system-cost.sh [--smoke] [--rounds=N] [--secs=S] [--no-header]
#   (root; after cargo build --release -p flowlens-collector -p flowlens-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3 SECS=5 PROCS=16
for a in "$@"; do
	case $a in
	--smoke) ROUNDS=1 SECS=1 PROCS=2 ;;
	--rounds=*) ROUNDS=${a#*=} ;;
	--secs=*) SECS=${a#*=} ;;
	--no-header) NOHEADER=1 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "error: needs root" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "error: apt-get install iperf3" >&2; exit 1; }
BIN=target/release
. bench/lib.sh
require_bins flowlens conn-churn
# Names of its own (live-traffic.sh may run at the same time).
NS=flsigbench H=flsigh N=flsign HIP=10.201.0.1 NIP=10.201.0.2
TMP=$(mktemp -d /tmp/flowlens-sigcost.XXXXXX)
FL_PID="" IPERF_PID=""
cleanup() {
	[ -n "$FL_PID" ] && kill -INT "$FL_PID" 2>/dev/null && wait "$FL_PID" 2>/dev/null || true
	[ -n "$IPERF_PID" ] && kill "$IPERF_PID" 2>/dev/null || true
	veth_down $NS $H
	rm -rf "$TMP"
}
trap cleanup EXIT
veth_up $NS $H $N $HIP $NIP
sleep 1
iperf3 -s -B $HIP -p 5301 -D -I "$TMP/iperf.pid" >/dev/null; sleep 0.3; IPERF_PID=$(cat "$TMP/iperf.pid")

start_flowlens() { # $@: extra flags
	flowlens_bg "$TMP/flowlens.log" --no-web --iface $H --export-interval 1s --jsonl /dev/null --host bench "$@"
}
stop_flowlens() { kill -INT "$FL_PID"; wait "$FL_PID" || true; FL_PID=""; }
cpu_ticks() { awk '{print $14+$15}' /proc/$1/stat; }
tcp_bps() {
	ip netns exec $NS iperf3 -c $HIP -p 5301 -t $SECS -J 2>/dev/null | awk -F: '/"bits_per_second"/{v=$2} END{gsub(/[ ,]/,"",v); print v+0}'
}
CHURN_PORT=7700
churn() { # prints connections made
	# A new server port each time: the last run's TIME_WAIT sockets hold
	# tens of thousands of the client's ports for 60 s, and would throttle
	# whichever case comes next.
	CHURN_PORT=$((CHURN_PORT + 1))
	$BIN/conn-churn server --bind=$HIP:$CHURN_PORT --secs=$((SECS + 2)) >/dev/null &
	local srv=$! ok failed tuples; sleep 0.3
	read -r ok failed tuples < <(ip netns exec $NS $BIN/conn-churn client --dst=$HIP:$CHURN_PORT --secs=$SECS --procs=$PROCS)
	wait $srv || true
	echo "$ok"
}
declare -A BULK CHURN TICKS
measure() { # $1 = off|nosig|sig
	local c0=0 b c
	case $1 in
	sig) start_flowlens; c0=$(cpu_ticks $FL_PID) ;;
	nosig) start_flowlens --no-signals; c0=$(cpu_ticks $FL_PID) ;;
	esac
	if [ "$1" = sig ] && ! grep -q "Golden-signal hooks loaded" "$TMP/flowlens.log"; then
		echo "error: flowlens did not load its signal programs" >&2; cat "$TMP/flowlens.log" >&2; exit 1
	fi
	if [ "$1" = nosig ] && ! grep -q "Golden signals off" "$TMP/flowlens.log"; then
		echo "error: --no-signals did not turn the signal programs off" >&2; cat "$TMP/flowlens.log" >&2; exit 1
	fi
	b=$(tcp_bps); c=$(churn)
	BULK[$1]+="$b " CHURN[$1]+="$c "
	if [ "$1" != off ]; then TICKS[$1]+="$(($(cpu_ticks $FL_PID) - c0)) "; stop_flowlens; fi
}
for round in $(seq "$ROUNDS"); do
	case $((round % 3)) in
	1) measure off; measure sig; measure nosig ;;
	2) measure nosig; measure off; measure sig ;;
	*) measure sig; measure nosig; measure off ;;
	esac
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{if(NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
sum() { tr ' ' '\n' | awk '{s+=$1} END{print s+0}'; }
[ -n "${NOHEADER:-}" ] || { echo "| section | case | measured | baseline (same run) | ratio | goal |"; echo "|---|---|---|---|---|---|"; }
HZ=$(getconf CLK_TCK)
awk -v sig="$(echo "${BULK[sig]}" | median)" -v nos="$(echo "${BULK[nosig]}" | median)" -v off="$(echo "${BULK[off]}" | median)" \
	-v r="$ROUNDS" -v s="$SECS" 'BEGIN{
	printf "| signals | TCP bulk ns→root (iperf3, flowlens on the root end), medians of %d×%ds | %.2f Gbit/s with signals | %.2f Gbit/s with --no-signals (%.2f without flowlens) | %.1f%% of --no-signals (%.1f%% of without) | |\n", r, s, sig/1e9, nos/1e9, off/1e9, 100*sig/(nos>0?nos:1), 100*sig/(off>0?off:1)}'
awk -v sig="$(echo "${CHURN[sig]}" | median)" -v nos="$(echo "${CHURN[nosig]}" | median)" -v off="$(echo "${CHURN[off]}" | median)" \
	-v s="$SECS" -v p="$PROCS" 'BEGIN{
	printf "| signals | churn: TCP connections in %ds (%d client processes), medians | %d with signals | %d with --no-signals (%d without flowlens) | %.1f%% of --no-signals (%.1f%% of without) | |\n", s, p, sig, nos, off, 100*sig/(nos>0?nos:1), 100*sig/(off>0?off:1)}'
awk -v ts="$(echo "${TICKS[sig]}" | sum)" -v tn="$(echo "${TICKS[nosig]}" | sum)" -v cs="$(echo "${CHURN[sig]}" | sum)" \
	-v cn="$(echo "${CHURN[nosig]}" | sum)" -v hz="$HZ" 'BEGIN{
	us=1e6*ts/hz/(cs>0?cs:1); un=1e6*tn/hz/(cn>0?cn:1);
	printf "| signals | flowlens CPU (user + system) over bulk + churn, per churn connection | %.1f µs with signals (%.2f s) | %.1f µs with --no-signals (%.2f s) | %.2f× | |\n", us, ts/hz, un, tn/hz, (un>0)?us/un:0}'
