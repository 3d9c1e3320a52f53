#!/usr/bin/env bash
# Where a monitored UDP datagram's time goes: kernel.bpf_stats_enabled during a
# 64-byte UDP flood through a veth pair (namespace -> root, the live-traffic
# case) with `flowlens run` attached; prints run_time_ns / run_cnt of every
# flowlens program and what it costs per datagram received. bpf_stats adds its
# own two clock reads to every run (~40 ns here): compare with the empty
# programs of `sock-hooks` / `kernel-progs` for the floor.
# Usage: bench/udp-hook-costs.sh [--secs=S]   (root; after cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=4
for a in "$@"; do case $a in --secs=*) SECS=${a#*=} ;; *) echo "usage: $0 [--secs=S]" >&2; exit 2 ;; esac; done
[ "$(id -u)" = 0 ] || { echo "error: needs root" >&2; exit 1; }
BIN=target/release
. bench/lib.sh
require_bins flowlens udp-flood
NS=flhcost H=flhch N=flhcn HIP=10.203.0.1 NIP=10.203.0.2
TMP=$(mktemp -d /tmp/flowlens-hooks.XXXXXX)
FL_PID=""
cleanup() {
	[ -n "$FL_PID" ] && kill -INT "$FL_PID" 2>/dev/null && wait "$FL_PID" 2>/dev/null || true
	sysctl -qw kernel.bpf_stats_enabled=0 || true
	veth_down $NS $H
	rm -rf "$TMP"
}
trap cleanup EXIT
veth_up $NS $H $N $HIP $NIP
sleep 0.5
FLOWLENS_LOG=warn $BIN/flowlens run --no-web --iface $H --export-interval 1s --jsonl /dev/null 2>"$TMP/log" &
FL_PID=$!
sleep 2
sysctl -qw kernel.bpf_stats_enabled=1
bpftool prog show -j >"$TMP/before.json"
$BIN/udp-flood recv --bind=$HIP:9000 --secs=$SECS >"$TMP/recv" &
R=$!; sleep 0.2
ip netns exec $NS $BIN/udp-flood send --dst=$HIP:9000 --secs=$SECS --flows=4 --frame=64 >/dev/null
wait $R
bpftool prog show -j >"$TMP/after.json"
python3 - "$TMP/before.json" "$TMP/after.json" "$(cat "$TMP/recv")" <<'PY'
import json, sys
before = {p["id"]: p for p in json.load(open(sys.argv[1]))}
after = json.load(open(sys.argv[2]))
n = int(sys.argv[3])
print(f"{n} datagrams received")
print("| program | runs per datagram | ns per run (bpf_stats) | ns per datagram |")
print("|---|---|---|---|")
total = 0.0
for p in sorted(after, key=lambda p: p.get("name", "")):
    if not p.get("name", "").startswith("flowlens"):
        continue
    b = before.get(p["id"], {})
    cnt = p.get("run_cnt", 0) - b.get("run_cnt", 0)
    ns = p.get("run_time_ns", 0) - b.get("run_time_ns", 0)
    if cnt <= 0 or n <= 0:
        continue
    total += ns / n
    print(f"| {p['name']} | {cnt / n:.2f} | {ns / cnt:.1f} | {ns / n:.1f} |")
print(f"| all | | | {total:.1f} |")
PY
