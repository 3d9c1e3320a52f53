#!/usr/bin/env bash
# The whole collector's CPU with the web's embedded store on vs off: `flowlens
# run` on a veth pair while conn-churn opens short TCP connections from 8
# processes for SECS seconds; utime + stime of the collector process over the
# churn, per 1000 records exported. Rounds alternate --no-web and the web
# (embedded live store + history file in a temporary directory); medians.
# Usage: bench/web-store-cost.sh [--smoke] [--secs=S] [--rounds=N] [--no-header]   (root; after cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=40 PROCS=8 ROUNDS=2
for a in "$@"; do
	case $a in
	--smoke) SECS=4 PROCS=2 ROUNDS=1 ;;
	--secs=*) SECS=${a#*=} ;;
	--rounds=*) ROUNDS=${a#*=} ;;
	--no-header) NOHEADER=1 ;;
	*) echo "usage: $0 [--smoke] [--secs=S] [--rounds=N] [--no-header]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "error: needs root" >&2; exit 1; }
BIN=target/release
. bench/lib.sh
require_bins flowlens conn-churn
NS=flweb H=flwebh N=flwebn HIP=10.205.0.1 NIP=10.205.0.2
TMP=$(mktemp -d /tmp/flowlens-webcost.XXXXXX)
FL_PID=""
cleanup() {
	[ -n "$FL_PID" ] && kill -INT "$FL_PID" 2>/dev/null && wait "$FL_PID" 2>/dev/null || true
	veth_down $NS $H
	rm -rf "$TMP"
}
trap cleanup EXIT
veth_up $NS $H $N $HIP $NIP
sleep 0.5
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
one() { # one MODE (web|noweb) -> "ticks records"
	local mode=$1 args=(--no-web)
	[ "$mode" = web ] && args=(--listen 127.0.0.1:0 --web-history "$TMP/history.sqlite")
	rm -f "$TMP"/history.sqlite*
	FLOWLENS_LOG=info $BIN/flowlens run "${args[@]}" --iface $H --export-interval 1s --idle-timeout 10s \
		--jsonl /dev/null --host webcost >/dev/null 2>"$TMP/flowlens.log" &
	FL_PID=$!
	wait_exported $FL_PID "$TMP/flowlens.log"
	$BIN/conn-churn server --bind=$HIP:7778 --secs=$((SECS + 3)) >"$TMP/served" &
	local srv=$! t0; sleep 0.3
	t0=$(cpu_ticks $FL_PID)
	ip netns exec $NS $BIN/conn-churn client --dst=$HIP:7778 --secs=$SECS --procs=$PROCS >"$TMP/client"
	sleep 2 # the last intervals
	local t1; t1=$(cpu_ticks $FL_PID)
	wait $srv || true
	kill -INT $FL_PID; wait $FL_PID || true; FL_PID=""
	local recs; recs=$(grep -o 'records=[0-9]*' "$TMP/flowlens.log" | awk -F= '{s += $2} END {print s + 0}')
	echo "$((t1 - t0)) $recs"
}
: >"$TMP/results"
for r in $(seq "$ROUNDS"); do
	if [ $((r % 2)) = 1 ]; then order="noweb web"; else order="web noweb"; fi
	for m in $order; do echo "$m $(one $m)" >>"$TMP/results"; done
done
python3 - "$TMP/results" "$(getconf CLK_TCK)" "$SECS" "${NOHEADER:-}" <<'PY'
import statistics, sys
path, hz, secs, noheader = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
per = {"web": [], "noweb": []}
recs = {"web": [], "noweb": []}
for line in open(path):
    m, ticks, r = line.split()
    per[m].append(int(ticks) * 1000.0 / hz / max(int(r), 1) * 1000)  # ms CPU per 1000 records
    recs[m].append(int(r))
if not noheader:
    print("| section | case | measured | baseline (same run) | ratio | goal |")
    print("|---|---|---|---|---|---|")
w, n = statistics.median(per["web"]), statistics.median(per["noweb"])
print(f"| web | collector CPU under {secs} s of churn with the embedded web store ({statistics.median(recs['web']):.0f} records), per 1000 records "
      f"| {w:.1f} ms | --no-web {n:.1f} ms ({statistics.median(recs['noweb']):.0f} records) | {w / n:.2f}× | |")
PY
