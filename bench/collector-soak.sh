#!/usr/bin/env bash
# The whole collector under sustained connection churn: `flowlens run` on a
# veth pair while conn-churn opens short TCP connections from 16 processes for
# SECS seconds; the collector's RSS (and RssAnon, its own memory without the
# mapped slot table) sampled every 2 s. Flat = the last quarter's max over the
# first quarter's max (as table-rss reports for the table alone). A 10 s idle
# timeout makes conversations end, be evicted and their slots reclaimed all
# through the run.
# Usage: bench/collector-soak.sh [--smoke] [--secs=S] [--no-header]   (root; after cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=120 PROCS=16
for a in "$@"; do
	case $a in
	--smoke) SECS=6 PROCS=2 ;;
	--secs=*) SECS=${a#*=} ;;
	--no-header) NOHEADER=1 ;;
	*) echo "usage: $0 [--smoke] [--secs=S] [--no-header]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "error: needs root" >&2; exit 1; }
BIN=target/release
. bench/lib.sh
require_bins flowlens conn-churn
NS=flsoak H=flsoh N=flson HIP=10.204.0.1 NIP=10.204.0.2
TMP=$(mktemp -d /tmp/flowlens-soak.XXXXXX)
FL_PID=""
cleanup() {
	[ -n "$FL_PID" ] && kill -INT "$FL_PID" 2>/dev/null && wait "$FL_PID" 2>/dev/null || true
	veth_down $NS $H
	[ -n "${KEEP:-}" ] && cp "$TMP/flowlens.log" /tmp/soak-flowlens.log && cp "$TMP/records.jsonl" /tmp/soak-records.jsonl; rm -rf "$TMP"
}
trap cleanup EXIT
veth_up $NS $H $N $HIP $NIP
sleep 0.5
JSONL=/dev/null; [ -n "${KEEP:-}" ] && JSONL=$TMP/records.jsonl # KEEP=1: keep the log and records in /tmp/soak-*
FLOWLENS_LOG=info $BIN/flowlens run --no-web --iface $H --export-interval 1s --idle-timeout 10s \
	--jsonl "$JSONL" --host soak >/dev/null 2>"$TMP/flowlens.log" &
FL_PID=$!
wait_exported $FL_PID "$TMP/flowlens.log"
$BIN/conn-churn server --bind=$HIP:7777 --secs=$((SECS + 3)) >"$TMP/served" &
SRV=$!; sleep 0.3
ip netns exec $NS $BIN/conn-churn client --dst=$HIP:7777 --secs=$SECS --procs=$PROCS >"$TMP/client" &
CLI=$!
: >"$TMP/rss"
while kill -0 $CLI 2>/dev/null; do
	awk '/^VmRSS/{r=$2} /^RssAnon/{a=$2} END{print r, a}' /proc/$FL_PID/status >>"$TMP/rss"
	sleep 2
done
wait $CLI || true
wait $SRV || true
python3 - "$TMP/rss" "$TMP/client" "$TMP/flowlens.log" "$SECS" "${NOHEADER:-}" <<'PY'
import re, sys
rss_path, client, log, secs, noheader = sys.argv[1:]
samples = [tuple(int(x) for x in l.split()) for l in open(rss_path) if l.strip()]
ok, failed, tuples = (int(x) for x in open(client).read().split()[:3])
lost = 0
for line in open(log):
    m = re.search(r"\blost=(\d+)", line)
    if m:
        lost = max(lost, int(m.group(1)))
if not noheader:
    print("| section | case | measured | baseline (same run) | ratio | goal |")
    print("|---|---|---|---|---|---|")
n = len(samples)
q = max(n // 4, 1)
for i, name in ((0, "RSS"), (1, "RssAnon (without the mapped slot table)")):
    first = max(s[i] for s in samples[:q])
    last = max(s[i] for s in samples[-q:])
    r = last / max(first, 1)
    print(f"| soak | collector {name}, {secs} s of churn ({ok} connections, {ok / float(secs):.0f}/s, {failed} failed; {n} samples; lost={lost}) "
          f"| last quarter max {last / 1024:.1f} MiB | first quarter max {first / 1024:.1f} MiB | {r:.3f}× | ≤ 1.05×: {'met' if r <= 1.05 else 'MISSED'} |")
PY
