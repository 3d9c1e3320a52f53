#!/usr/bin/env bash
# `flowlens replay` beside the flow tools Debian ships, each timed on the same
# capture in one run: softflowd, pmacctd, argus (+ racluster), nfpcapd.
#   1. installs the peers (apt-get, noninteractive) when missing;
#   2. makes target/bench/mixed.pcap (reused when present; --regen to remake):
#      real traffic between two network namespaces over a veth pair (offloads
#      off, so the capture holds wire-sized packets), captured with
#      `tcpdump -s 128`: HTTP over IPv4 and IPv6 (python3 http.server + curl),
#      DNS-like UDP request/response (a new source port each), iperf3 TCP and
#      UDP over IPv4 and IPv6, a VLAN-tagged segment (VLAN 100, TCP and UDP
#      conversations written as tagged frames to AF_PACKET sockets on both ends:
#      this kernel has neither vlan devices nor tc vlan actions), IP fragments
#      (ping -s 3000, UDP datagrams of 4000 B);
#   3. times every tool on it (wall time, best of 3) and prints one markdown
#      table: packets/s, flowlens's ratio to the fastest peer, max RSS.
# Usage: sudo bench/replay-vs-peers.sh [--regen] [--runs=N] [--bin=PATH (no cargo build)]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=3 REGEN="" BIN=""
for a in "$@"; do
	case $a in
	--regen) REGEN=1 ;;
	--runs=*) RUNS=${a#*=} ;;
	--bin=*) BIN=${a#*=} ;;
	*) echo "usage: $0 [--regen] [--runs=N] [--bin=PATH]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "error: needs root (namespaces, apt-get): sudo $0" >&2; exit 1; }

PKGS="softflowd pmacct argus-server argus-client nfdump tcpdump iperf3 curl time ethtool"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
	echo "installing:$missing" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >&2
fi
if [ -z "$BIN" ]; then
	cargo build --release --bin flowlens >&2
	BIN=target/release/flowlens
fi

mkdir -p target/bench
PCAP=$PWD/target/bench/mixed.pcap
TMP=$(mktemp -d /tmp/flowlens-peers.XXXXXX)
NA=flpeer-a NB=flpeer-b
cleanup() {
	ip netns pids $NA 2>/dev/null | xargs -r kill 2>/dev/null || true
	ip netns pids $NB 2>/dev/null | xargs -r kill 2>/dev/null || true
	ip netns del $NA 2>/dev/null || true
	ip netns del $NB 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

make_capture() {
	cleanup
	mkdir -p "$TMP"
	ip netns add $NA
	ip netns add $NB
	ip link add va netns $NA type veth peer name vb netns $NB
	local ns dev
	for ns in $NA $NB; do
		dev=va
		[ $ns = $NB ] && dev=vb
		ip -n $ns link set lo up
		ip -n $ns link set $dev up
		ip netns exec $ns ethtool -K $dev tso off gso off gro off >/dev/null 2>&1 || true
	done
	ip -n $NA addr add 10.77.0.1/24 dev va
	ip -n $NB addr add 10.77.0.2/24 dev vb
	ip -n $NA addr add fd77::1/64 dev va nodad
	ip -n $NB addr add fd77::2/64 dev vb nodad
	local A="ip netns exec $NA" B="ip netns exec $NB"
	# Servers: HTTP (dual stack), iperf3, a DNS-like UDP responder.
	head -c 2000000 /dev/urandom >"$TMP/blob"
	(cd "$TMP" && exec $B python3 -m http.server 8000 --bind :: >/dev/null 2>&1) &
	$B iperf3 -s -D >/dev/null
	cat >"$TMP/dns.py" <<'EOF'
import socket, sys
if sys.argv[1] == "server":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.77.0.2", 5353))
    while True:
        q, a = s.recvfrom(512)
        s.sendto(q + b"\x00" * 80, a)
else:
    n = int(sys.argv[2])
    for i in range(n):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(0.5)
        c.sendto(b"q%08d.example.test" % i, ("10.77.0.2", 5353))
        try:
            c.recvfrom(512)
        except OSError:
            pass
        c.close()
EOF
	$B python3 "$TMP/dns.py" server &
	cat >"$TMP/vlan.py" <<'EOF'
# VLAN 100 frames from 10.78.0.1 (client) / 10.78.0.2 (server): 300 TCP
# conversations (SYN, SYN+ACK, 400 segments each way) and 200 UDP ones.
import socket, struct, sys

dev, side = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
me, peer = bytes([10, 78, 0, 1]), bytes([10, 78, 0, 2])
if side == "server":
    me, peer = peer, me
mac = {"client": bytes([2, 0, 0, 0, 0, 1]), "server": bytes([2, 0, 0, 0, 0, 2])}
other = "server" if side == "client" else "client"
eth = mac[other] + mac[side] + struct.pack("!HHH", 0x8100, 100, 0x0800)

def csum(b):
    t = sum(struct.unpack("!10H", b))
    t = (t & 0xFFFF) + (t >> 16)
    return (~((t & 0xFFFF) + (t >> 16))) & 0xFFFF

def frame(proto, l4, payload):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4) + len(payload), 0, 0x4000, 64, proto, 0, me, peer)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return eth + ip + l4 + payload

data = b"x" * 60
for c in range(300):
    cport, sport = 40000 + c, 443
    a, b = (cport, sport) if side == "client" else (sport, cport)
    first = 0x02 if side == "client" else 0x12
    s.send(frame(6, struct.pack("!HHIIBBHHH", a, b, 1, 0, 0x50, first, 65535, 0, 0), b""))
    for i in range(400):
        s.send(frame(6, struct.pack("!HHIIBBHHH", a, b, 2 + i * 60, 1, 0x50, 0x18, 65535, 0, 0), data))
for c in range(200):
    cport = 50000 + c
    a, b = (cport, 53) if side == "client" else (53, cport)
    for i in range(200):
        s.send(frame(17, struct.pack("!HHHH", a, b, 8 + len(data), 0), data))
EOF
	sleep 1
	$B tcpdump -i vb -s 128 -B 262144 -U -w "$PCAP.tmp" 2>"$TMP/tcpdump.err" &
	local tcpdump_pid=$!
	sleep 2
	echo "capture: HTTP" >&2
	for i in $(seq 60); do $A curl -s -o /dev/null http://10.77.0.2:8000/blob; done
	for i in $(seq 40); do $A curl -s -o /dev/null "http://[fd77::2]:8000/blob"; done
	echo "capture: DNS-like UDP" >&2
	$A python3 "$TMP/dns.py" client 30000
	echo "capture: iperf3" >&2
	$A iperf3 -c 10.77.0.2 -n 700M >/dev/null
	$A iperf3 -6 -c fd77::2 -n 250M >/dev/null
	$A iperf3 -c 10.77.0.2 -u -l 100 -b 50M -t 14 >/dev/null
	$A iperf3 -6 -c fd77::2 -u -l 200 -b 60M -t 4 >/dev/null
	echo "capture: VLAN 100" >&2
	$A python3 "$TMP/vlan.py" va client &
	$B python3 "$TMP/vlan.py" vb server
	wait $!
	echo "capture: fragments" >&2
	$A ping -q -f -s 3000 -c 25000 10.77.0.2 >/dev/null
	$A iperf3 -c 10.77.0.2 -u -l 4000 -b 150M -t 4 >/dev/null
	sleep 1
	kill -INT $tcpdump_pid
	wait $tcpdump_pid || true
	cat "$TMP/tcpdump.err" >&2
	mv "$PCAP.tmp" "$PCAP"
	cleanup
	mkdir -p "$TMP"
}

if [ -n "$REGEN" ] || [ ! -s "$PCAP" ]; then
	make_capture
fi
PACKETS=$(tcpdump -r "$PCAP" -nn 2>/dev/null | wc -l)
SIZE=$(stat -c %s "$PCAP")

# Peers' configuration and output places.
mkdir -p "$TMP/nf"
cat >"$TMP/pmacctd.conf" <<EOF
daemonize: false
pcap_savefile: $PCAP
plugins: print
aggregate: src_host, dst_host, src_port, dst_port, proto
print_output: csv
print_output_file: $TMP/pmacct.csv
print_refresh_time: 3600
plugin_pipe_size: 1024000000
plugin_buffer_size: 102400
EOF

# best NAME CMD...: best-of-$RUNS wall seconds into BEST[NAME] (output dropped).
declare -A BEST CMDS
best() {
	local name=$1
	shift
	CMDS[$name]="$*"
	local b="" i t0 t1 s
	for ((i = 0; i < RUNS; i++)); do
		rm -rf "$TMP/nf" "$TMP/out.argus" "$TMP/pmacct.csv"
		mkdir -p "$TMP/nf"
		t0=$(date +%s%N)
		bash -c "$*" >/dev/null 2>&1 || echo "warning: $name exited non-zero" >&2
		t1=$(date +%s%N)
		s=$(((t1 - t0) / 1000))
		[ -z "$b" ] || [ "$s" -lt "$b" ] && b=$s
	done
	BEST[$name]=$b
}

best softflowd "softflowd -d -c none -p $TMP/sf.pid -n 127.0.0.1:9995 -r $PCAP"
best pmacctd "pmacctd -f $TMP/pmacctd.conf"
best argus "argus -X -r $PCAP -w $TMP/out.argus && racluster -r $TMP/out.argus -w /dev/null"
best nfpcapd "nfpcapd -r $PCAP -w $TMP/nf"
best flowlens "$BIN replay $PCAP --jsonl /dev/null"
/usr/bin/time -f %M -o "$TMP/rss" $BIN replay "$PCAP" --jsonl /dev/null >/dev/null 2>&1
RSS_KB=$(cat "$TMP/rss")

pps() { echo $((PACKETS * 1000000 / $1)); }
fastest="" fastest_pps=0
for t in softflowd pmacctd argus nfpcapd; do
	p=$(pps "${BEST[$t]}")
	[ "$p" -gt "$fastest_pps" ] && fastest=$t fastest_pps=$p
done
fl_pps=$(pps "${BEST[flowlens]}")
echo "capture: $PCAP, $PACKETS packets, $SIZE bytes; best of $RUNS, wall time"
echo
echo "| tool | command | wall s | packets/s |"
echo "|---|---|---|---|"
for t in softflowd pmacctd argus nfpcapd flowlens; do
	cmd=${CMDS[$t]//$PCAP/FILE}
	printf '| %s | `%s` | %s | %s |\n' "$t" "${cmd//$TMP/TMP}" \
		"$(awk -v u="${BEST[$t]}" 'BEGIN { printf "%.3f", u / 1e6 }')" "$(pps "${BEST[$t]}")"
done
echo
awk -v f="$fl_pps" -v p="$fastest_pps" -v n="$fastest" -v r="$RSS_KB" 'BEGIN {
	printf "flowlens / fastest peer (%s): %.2fx (goal >= 2x); flowlens max RSS %.1f MiB\n", n, f / p, r / 1024 }'
