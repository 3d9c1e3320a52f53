#!/usr/bin/env bash
# Live traffic through a veth pair between the root namespace and a test
# namespace, without and with the real flowlens binary attached to the root
# end (TC ingress + TC egress: a veth gets TC, not XDP, for ingress),
# interleaved round by round, beside two floors measured the same way: the
# empty TC program on the same veth (any TC-based monitor), and empty programs
# on every hook flowlens attaches (TC + the socket/process hooks: any monitor
# that attributes sockets where flowlens does).
#   UDP flood (64-byte frames, ns -> root: crosses TC ingress), TCP bulk
#   ns -> root and root -> ns (iperf3; TC ingress resp. egress), then
#   short-connection churn (conn-churn: many processes, thousands of
#   connections/s) with flowlens on: records and attributions vs connections
#   made (per conversation and per record), collector CPU and RSS.
# Usage: bench/live-traffic.sh [--smoke] [--rounds=N] [--secs=S]   (root; after cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3 SECS=5 CHURN_SECS=5 PROCS=16
for a in "$@"; do
	case $a in
	--smoke) ROUNDS=1 SECS=1 CHURN_SECS=1 PROCS=2 ;;
	--rounds=*) ROUNDS=${a#*=} ;;
	--secs=*) SECS=${a#*=} ;;
	--no-header) NOHEADER=1 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "error: needs root" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "error: apt-get install iperf3" >&2; exit 1; }
BIN=target/release
. bench/lib.sh
require_bins flowlens udp-flood conn-churn sock-hooks
NS=flbench H=flbh N=flbn HIP=10.200.0.1 NIP=10.200.0.2
TMP=$(mktemp -d /tmp/flowlens-live.XXXXXX)
FL_PID="" HOLD_PID=""
cleanup() {
	[ -n "$FL_PID" ] && kill -INT "$FL_PID" 2>/dev/null && wait "$FL_PID" 2>/dev/null || true
	[ -n "$HOLD_PID" ] && kill "$HOLD_PID" 2>/dev/null || true
	[ -n "${IPERF_PID:-}" ] && kill "$IPERF_PID" 2>/dev/null || true
	veth_down $NS $H
	rm -rf "$TMP"
}
trap cleanup EXIT
veth_up $NS $H $N $HIP $NIP
sleep 1

start_flowlens() {
	: >"$TMP/records.jsonl"
	flowlens_bg "$TMP/flowlens.log" --no-web --iface $H --export-interval 1s --jsonl "$TMP/records.jsonl" --host bench
}
stop_flowlens() { kill -INT "$FL_PID"; wait "$FL_PID" || true; FL_PID=""; }
cpu_ticks() { awk '{print $14+$15}' /proc/$1/stat; }

udp_pps() { # received datagrams/s ns -> root
	$BIN/udp-flood recv --bind=$HIP:9000 --secs=$SECS >"$TMP/recv" &
	local r=$!; sleep 0.2
	ip netns exec $NS $BIN/udp-flood send --dst=$HIP:9000 --secs=$SECS --flows=4 --frame=64 >/dev/null
	wait $r; echo "$(cat "$TMP/recv") $SECS" | awk '{printf "%.0f", $1/$2}'
}
tcp_bps() { # $1: "" (ns -> root) or "-R" (root -> ns); bits/s received
	ip netns exec $NS iperf3 -c $HIP -t $SECS $1 -J 2>/dev/null | awk -F: '/"bits_per_second"/{v=$2} END{gsub(/[ ,]/,"",v); print v+0}'
}

iperf3 -s -B $HIP -D -I "$TMP/iperf.pid" >/dev/null; sleep 0.3; IPERF_PID=$(cat "$TMP/iperf.pid")
# The empty programs of bench_empty.bpf.c, held attached by `sock-hooks --hold`
# until its standard input (fd 7 here) closes: the empty classifier (returns
# TC_ACT_UNSPEC) on $H ingress and egress, attached as flowlens attaches its
# own (TCX links), and unless $1 is --tc-only the empty socket/process hooks.
hold_empty_hooks() {
	exec 7> >(exec $BIN/sock-hooks --hold --iface=$H ${1:-} >"$TMP/hold.out")
	HOLD_PID=$!
	for _ in $(seq 50); do grep -q attached "$TMP/hold.out" 2>/dev/null && return 0; sleep 0.1; done
	echo "error: sock-hooks --hold did not attach the empty programs" >&2
	exit 1
}
release_empty_hooks() { exec 7>&-; wait "$HOLD_PID" 2>/dev/null || true; HOLD_PID=""; }
declare -A OFF ON EMPTY HOOKS
CPU_TICKS=0 CPU_SECS=0
measure() { # $1 = off|on|empty|hooks; appends to the arrays
	local u t r c0 c1
	[ "$1" = on ] && { start_flowlens; c0=$(cpu_ticks $FL_PID); }
	[ "$1" = empty ] && hold_empty_hooks --tc-only
	[ "$1" = hooks ] && hold_empty_hooks
	u=$(udp_pps); t=$(tcp_bps ""); r=$(tcp_bps -R)
	case $1 in
	on)
		c1=$(cpu_ticks $FL_PID); CPU_TICKS=$((CPU_TICKS + c1 - c0)); CPU_SECS=$((CPU_SECS + 3 * SECS))
		ON[udp]+="$u " ON[tcp]+="$t " ON[tcpr]+="$r "; stop_flowlens ;;
	empty)
		release_empty_hooks
		EMPTY[udp]+="$u " EMPTY[tcp]+="$t " EMPTY[tcpr]+="$r " ;;
	hooks)
		release_empty_hooks
		HOOKS[udp]+="$u " HOOKS[tcp]+="$t " HOOKS[tcpr]+="$r " ;;
	*) OFF[udp]+="$u " OFF[tcp]+="$t " OFF[tcpr]+="$r " ;;
	esac
}
for round in $(seq "$ROUNDS"); do
	case $((round % 4)) in
	1) measure off; measure on; measure empty; measure hooks ;;
	2) measure on; measure hooks; measure off; measure empty ;;
	3) measure empty; measure off; measure hooks; measure on ;;
	*) measure hooks; measure empty; measure on; measure off ;;
	esac
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{if(NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
HZ=$(getconf CLK_TCK)
row() { # name unit scale off on
	local off on
	off=$(echo "$4" | median); on=$(echo "$5" | median)
	awk -v n="$1" -v u="$2" -v s="$3" -v off="$off" -v on="$on" 'BEGIN{r=(off>0)?on/off:0;
		printf "| live | %s | %.2f %s with flowlens | %.2f %s without | %.1f%% | ≥ 97%%: %s |\n", n, on/s, u, off/s, u, 100*r, (r>=0.97)?"met":"MISSED"}'
}
[ -n "${NOHEADER:-}" ] || { echo "| section | case | measured | baseline (same run) | ratio | goal |"; echo "|---|---|---|---|---|---|"; }
floor() { # name unit scale off empty hooks on: the two floors, and flowlens against the second
	local off em ho on
	off=$(echo "$4" | median); em=$(echo "$5" | median); ho=$(echo "$6" | median); on=$(echo "$7" | median)
	awk -v n="$1" -v u="$2" -v s="$3" -v off="$off" -v em="$em" -v ho="$ho" -v on="$on" 'BEGIN{
		printf "| live | %s, floor 1: empty TC programs only | %.2f %s with empty programs | %.2f %s without | %.1f%% | |\n", n, em/s, u, off/s, u, 100*((off>0)?em/off:0);
		printf "| live | %s, floor 2: empty programs on every hook flowlens attaches | %.2f %s with empty programs | %.2f %s without | %.1f%% | |\n", n, ho/s, u, off/s, u, 100*((off>0)?ho/off:0);
		printf "| live | %s, flowlens against floor 2 | %.2f %s with flowlens | %.2f %s with empty programs | %.1f%% | |\n", n, on/s, u, ho/s, u, 100*((ho>0)?on/ho:0)}'
}
row "UDP flood 64 B frames ns→root (TC ingress), 4 flows, median of $ROUNDS×${SECS}s" "Mpps" 1e6 "${OFF[udp]}" "${ON[udp]}"
floor "UDP flood 64 B frames ns→root" "Mpps" 1e6 "${OFF[udp]}" "${EMPTY[udp]}" "${HOOKS[udp]}" "${ON[udp]}"
row "TCP bulk ns→root (iperf3, TC ingress)" "Gbit/s" 1e9 "${OFF[tcp]}" "${ON[tcp]}"
floor "TCP bulk ns→root" "Gbit/s" 1e9 "${OFF[tcp]}" "${EMPTY[tcp]}" "${HOOKS[tcp]}" "${ON[tcp]}"
row "TCP bulk root→ns (iperf3 -R, TC egress)" "Gbit/s" 1e9 "${OFF[tcpr]}" "${ON[tcpr]}"
floor "TCP bulk root→ns" "Gbit/s" 1e9 "${OFF[tcpr]}" "${EMPTY[tcpr]}" "${HOOKS[tcpr]}" "${ON[tcpr]}"
awk -v t=$CPU_TICKS -v hz=$HZ -v s=$CPU_SECS 'BEGIN{printf "| live | flowlens CPU during the traffic above | %.1f%% of one core | %d s of traffic | | |\n", 100*t/hz/s, s}'

# Churn: flowlens on, many processes making short connections.
start_flowlens
c0=$(cpu_ticks $FL_PID)
$BIN/conn-churn server --bind=$HIP:7777 --secs=$((CHURN_SECS + 3)) >"$TMP/served" &
SRV=$!; sleep 0.3
read -r OK FAILED TUPLES < <(ip netns exec $NS $BIN/conn-churn client --dst=$HIP:7777 --secs=$CHURN_SECS --procs=$PROCS)
wait $SRV || true
sleep 2.5 # two more export intervals
c1=$(cpu_ticks $FL_PID)
RSS=$(awk '/VmRSS/{print $2}' /proc/$FL_PID/status)
stop_flowlens
python3 - "$TMP/records.jsonl" "$OK" "$FAILED" "$TUPLES" "$CHURN_SECS" "$((c1 - c0))" "$HZ" "$RSS" "$TMP/flowlens.log" <<'PY'
import json, sys, re
path, ok, failed, tuples, secs, ticks, hz, rss, log = sys.argv[1:]
ok, failed, tuples, secs = int(ok), int(failed), int(tuples), float(secs)
convs, attributed = set(), set()
records = records_both = 0
for line in open(path):
    r = json.loads(line)
    if r["proto"] != "tcp" or r["server"]["port"] != 7777:
        continue
    # One conversation per connection (a reused port starts a new one): its lines share first_seen.
    key = (r["client"]["addr"], r["client"]["port"], r["first_seen_unix_ns"])
    convs.add(key)
    records += 1
    if r["client"].get("pid") is not None and r["server"].get("pid") is not None:
        attributed.add(key)
        records_both += 1
lost = unattributed_local = merged = 0
for line in open(log):
    m = re.search(r"\bmerged=(\d+)", line)
    if m:
        merged = max(merged, int(m.group(1)))
    m = re.search(r"\blost=(\d+)", line)
    if m:
        lost = max(lost, int(m.group(1)))
    m = re.search(r"\bunattributed_local=(\d+)", line)
    if m:
        unattributed_local = max(unattributed_local, int(m.group(1)))
rate = ok / secs
print(f"| live | churn: {ok} TCP connections in {secs:.0f} s ({rate:.0f}/s, {failed} failed, {tuples} distinct 5-tuples), conversations recorded + merged in one interval ({merged}) | {len(convs) + merged} | {ok} connections | {100*(len(convs) + merged)/max(ok,1):.1f}% | 100% or losses counted (lost={lost}) |")
print(f"| live | churn: conversations with both ends attributed (pid) | {len(attributed)} | {len(convs)} conversations | {100*len(attributed)/max(len(convs),1):.1f}% | 100% or losses counted |")
print(f"| live | churn: records with both ends attributed (pid) | {records_both} | {records} records | {100*records_both/max(records,1):.1f}% | 100% or counted (unattributed_local={unattributed_local}) |")
print(f"| live | churn: flowlens CPU / RSS | {100*int(ticks)/int(hz)/(secs+2.8):.1f}% of one core | | RSS {int(rss)/1024:.1f} MiB | |")
PY
