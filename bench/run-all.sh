#!/usr/bin/env bash
# Builds release and runs the whole benchmark suite; prints one markdown table
# (the one in BENCHMARKS.md). Needs root (BPF_PROG_TEST_RUN, namespaces, XDP).
#   bench/run-all.sh           full run (~30 minutes: a 3-minute table soak and a 5-minute collector soak included)
#   bench/run-all.sh --smoke   tiny counts: only checks every benchmark still runs (~1 minute + build)
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=""
[ "${1:-}" = --smoke ] && SMOKE=--smoke
[ "$(id -u)" = 0 ] || { echo "error: needs root: sudo $0" >&2; exit 1; }
cargo build --release -p flowlens-collector -p flowlens-bench >&2
OUT=$(mktemp); trap 'rm -f "$OUT"' EXIT
echo "| section | case | measured | baseline (same run) | ratio | goal |"
echo "|---|---|---|---|---|---|"
target/release/kernel-progs $SMOKE --no-header
target/release/sock-hooks $SMOKE --no-header
target/release/signal-costs $SMOKE --no-header
bench/live-traffic.sh $SMOKE --no-header
bench/signal-system-cost.sh $SMOKE --no-header
if [ -n "$SMOKE" ]; then bench/collector-soak.sh --smoke --no-header; else bench/collector-soak.sh --secs=300 --no-header; fi
target/release/table-rss $SMOKE --no-header
bench/web-store-cost.sh $SMOKE --no-header
target/release/web-queries $SMOKE --no-header
target/release/web-pages $SMOKE --no-header
# The InfluxDB writer against influxd's parallel ceiling (~10 minutes; --smoke: seconds).
cargo bench -q -p flowlens-collector --bench influx_write -- $SMOKE --no-header 2>/dev/null
# Criterion: --test runs every benchmark once (smoke); otherwise a short measurement.
if [ -n "$SMOKE" ]; then CRIT=(--test); else CRIT=(--warm-up-time 1 --measurement-time 3); fi
for b in "flowlens-correlator correlator" "flowlens-correlator signals" "flowlens-collector readers"; do
	set -- $b
	cargo bench -q -p "$1" --bench "$2" -- "${CRIT[@]}" >"$OUT" 2>/dev/null
	# "name\n  time: [lo mid hi]\n  thrpt: [lo mid hi]" -> one row per benchmark.
	awk -v crate="$1" '
		/^[a-z_]+\/[A-Za-z0-9_]+/ { name = $1; skip = 0 }
		/change:/ { skip = 1 } # the comparison with the previous run: not a measurement
		/time:/ && !skip { sub(/.*time: *\[/, ""); split($0, t, " "); time = t[3] " " t[4] }
		/thrpt:/ && !skip { sub(/.*thrpt: *\[/, ""); split($0, r, " "); printf "| userspace | %s %s | %s | | %s %s | |\n", crate, name, time, r[3], r[4] }
		/^Testing / { printf "| userspace | %s %s | ran (smoke) | | | |\n", crate, $2 }
	' "$OUT"
done
