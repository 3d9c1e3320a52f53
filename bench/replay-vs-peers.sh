#!/usr/bin/env bash
# `flowlens replay` beside the flow tools Debian ships, each timed on the same
# captures in one run: softflowd, pmacctd, argus (+ racluster), nfpcapd; and
# `cat FILE >/dev/null` from the page cache, the machine's limit for reading
# the file at all.
#   1. installs the peers (apt-get, noninteractive) when missing;
#   2. makes the captures in target/bench/ (reused when present; --regen to
#      remake them): real traffic between two network namespaces over a veth
#      pair (offloads off, so the captures hold wire-sized packets):
#      - mixed.pcap, small packets (`tcpdump -s 128`): HTTP over IPv4 and IPv6
#        (python3 http.server + curl), DNS-like UDP request/response (a new
#        source port each), iperf3 TCP and UDP over IPv4 and IPv6, a
#        VLAN-tagged segment (VLAN 100, TCP and UDP conversations written as
#        tagged frames to AF_PACKET sockets on both ends: this kernel has
#        neither vlan devices nor tc vlan actions), IP fragments (ping -s 3000,
#        UDP datagrams of 4000 B);
#      - large.pcap, whole packets (`tcpdump -s 0`, ~1.3 GB, not committed):
#        16,000 short HTTP-like TCP conversations (6 KB answers, 4 client
#        processes), HTTP bulk over IPv4 and IPv6 (curl, 2 MB each), iperf3
#        TCP bulk over IPv4 and IPv6 (1,448-byte segments), iperf3 UDP of
#        1,400-byte datagrams, DNS-like UDP;
#   3. times every tool and `cat` on each capture, RUNS rounds interleaved
#      (the order rotates every round), and prints one markdown table per
#      capture: median and best wall time, CPU time (perf task-clock, or
#      /usr/bin/time), packets/s, flowlens's ratio to the fastest peer and to
#      `cat`, flowlens's max RSS.
#   --rt runs every timed command under SCHED_FIFO (`chrt -f 50`): on a
#   machine shared with other work, wall time then measures the tools, not
#   the queue for a core (other processes wait while a command runs).
# Usage: sudo bench/replay-vs-peers.sh [--regen] [--runs=N] [--bin=PATH (no cargo build)]
#          [--capture=mixed|large|both] [--peers="softflowd pmacctd argus nfpcapd"] [--rt]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=5 REGEN="" BIN="" WHICH=both RT=""
PEERS="softflowd pmacctd argus nfpcapd"
for a in "$@"; do
	case $a in
	--regen) REGEN=1 ;;
	--runs=*) RUNS=${a#*=} ;;
	--bin=*) BIN=${a#*=} ;;
	--capture=*) WHICH=${a#*=} ;;
	--peers=*) PEERS=${a#*=} ;;
	--rt) RT="chrt -f 50" ;;
	*) echo "usage: $0 [--regen] [--runs=N] [--bin=PATH] [--capture=mixed|large|both] [--peers=LIST] [--rt]" >&2; exit 2 ;;
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

# Two namespaces joined by a veth pair, offloads off; an HTTP server (python3
# http.server, dual stack, serving TMP/blob) and an iperf3 server in NB.
netns_up() {
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
	head -c 2000000 /dev/urandom >"$TMP/blob"
	(cd "$TMP" && exec ip netns exec $NB python3 -m http.server 8000 --bind :: >/dev/null 2>&1) &
	ip netns exec $NB iperf3 -s -D >/dev/null
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
	ip netns exec $NB python3 "$TMP/dns.py" server &
	sleep 1
}

# capture_start FILE SNAPLEN [FLAGS] / capture_stop FILE: tcpdump on vb (in NB).
capture_start() {
	ip netns exec $NB tcpdump -i vb -s "$2" -B 262144 ${3:-} -w "$1.tmp" 2>"$TMP/tcpdump.err" &
	TCPDUMP_PID=$!
	sleep 2
}
capture_stop() {
	sleep 1
	kill -INT $TCPDUMP_PID
	wait $TCPDUMP_PID || true
	cat "$TMP/tcpdump.err" >&2
	mv "$1.tmp" "$1"
	cleanup
	mkdir -p "$TMP"
}

make_mixed() {
	netns_up
	local A="ip netns exec $NA" B="ip netns exec $NB"
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
	capture_start "$1" 128 -U
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
	capture_stop "$1"
}

make_large() {
	netns_up
	local A="ip netns exec $NA" B="ip netns exec $NB"
	cat >"$TMP/short.py" <<'EOF'
# Short HTTP-like conversations: connect, a 60-byte request, a 6,000-byte
# answer, close. server: threads; client: P processes x N connections.
import os, socket, sys, threading
if sys.argv[1] == "server":
    l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("10.77.0.2", 8080))
    l.listen(512)
    answer = b"HTTP/1.0 200 OK\r\n\r\n" + b"y" * 5981
    def serve(c):
        try:
            c.recv(512)
            c.sendall(answer)
        finally:
            c.close()
    while True:
        c, _ = l.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
else:
    procs, n = int(sys.argv[2]), int(sys.argv[3])
    kids = []
    for p in range(procs):
        pid = os.fork()
        if pid == 0:
            for i in range(n):
                try:
                    c = socket.create_connection(("10.77.0.2", 8080), timeout=2)
                    c.sendall(b"GET /%08d HTTP/1.0\r\nHost: bench\r\n\r\n" % i + b"x" * 24)
                    while c.recv(65536):
                        pass
                    c.close()
                except OSError:
                    pass
            os._exit(0)
        kids.append(pid)
    for k in kids:
        os.waitpid(k, 0)
EOF
	$B python3 "$TMP/short.py" server &
	sleep 1
	capture_start "$1" 0
	echo "capture: short TCP conversations" >&2
	$A python3 "$TMP/short.py" client 4 4000
	echo "capture: HTTP bulk" >&2
	for i in $(seq 40); do $A curl -s -o /dev/null http://10.77.0.2:8000/blob; done
	for i in $(seq 20); do $A curl -s -o /dev/null "http://[fd77::2]:8000/blob"; done
	echo "capture: DNS-like UDP" >&2
	$A python3 "$TMP/dns.py" client 20000
	echo "capture: iperf3" >&2
	# Paced so tcpdump keeps up writing whole packets (it prints what it dropped).
	$A iperf3 -c 10.77.0.2 -n 800M -b 600M >/dev/null
	$A iperf3 -6 -c fd77::2 -n 200M -b 600M >/dev/null
	$A iperf3 -c 10.77.0.2 -u -l 1400 -b 200M -t 3 >/dev/null
	capture_stop "$1"
}

CAPS=""
case $WHICH in
mixed | large) CAPS=$WHICH ;;
both) CAPS="mixed large" ;;
*) echo "error: --capture=mixed|large|both" >&2; exit 2 ;;
esac
for c in $CAPS; do
	if [ -n "$REGEN" ] || [ ! -s "target/bench/$c.pcap" ]; then
		"make_$c" "$PWD/target/bench/$c.pcap"
	fi
done

# Peers' configuration and output places.
pmacct_conf() {
	cat >"$TMP/pmacctd.conf" <<EOF
daemonize: false
pcap_savefile: $1
plugins: print
aggregate: src_host, dst_host, src_port, dst_port, proto
print_output: csv
print_output_file: $TMP/pmacct.csv
print_refresh_time: 3600
plugin_pipe_size: 1024000000
plugin_buffer_size: 102400
EOF
}

# command TOOL FILE: the shell command timed for TOOL.
command_of() {
	case $1 in
	softflowd) echo "softflowd -d -c none -p $TMP/sf.pid -n 127.0.0.1:9995 -r $2" ;;
	pmacctd) echo "pmacctd -f $TMP/pmacctd.conf" ;;
	argus) echo "argus -X -r $2 -w $TMP/out.argus && racluster -r $TMP/out.argus -w /dev/null" ;;
	nfpcapd) echo "nfpcapd -r $2 -w $TMP/nf" ;;
	flowlens) echo "$BIN replay $2 --jsonl /dev/null" ;;
	cat) echo "cat $2 >/dev/null" ;;
	esac
}

# run_once TOOL FILE: appends "wall_us cpu_us" to TMP/times.TOOL.
PERF=""
perf stat -x, -e task-clock true >/dev/null 2>&1 && PERF=1
run_once() {
	local t0 t1 cmd
	cmd=$(command_of "$1" "$2")
	rm -rf "$TMP/nf" "$TMP/out.argus" "$TMP/pmacct.csv" "$TMP/perf" "$TMP/time"
	mkdir -p "$TMP/nf"
	t0=$(date +%s%N)
	if [ -n "$PERF" ]; then
		$RT perf stat -x, -e task-clock -o "$TMP/perf" bash -c "$cmd" >/dev/null 2>&1 || echo "warning: $1 exited non-zero" >&2
	else
		$RT /usr/bin/time -f "%U %S" -o "$TMP/time" bash -c "$cmd" >/dev/null 2>&1 || echo "warning: $1 exited non-zero" >&2
	fi
	t1=$(date +%s%N)
	local cpu
	if [ -n "$PERF" ]; then
		cpu=$(awk -F, '/task-clock/ { printf "%d", $1 * 1000 }' "$TMP/perf")
	else
		cpu=$(awk '{ printf "%d", ($1 + $2) * 1e6 }' "$TMP/time")
	fi
	echo "$(((t1 - t0) / 1000)) ${cpu:-0}" >>"$TMP/times.$1"
}

# stat TOOL COL median|min: over the rounds (COL 1 wall, 2 CPU; µs).
stat_of() {
	sort -n -k"$2" "$TMP/times.$1" | awk -v c="$2" -v w="$3" '{ v[NR] = $c }
		END { if (w == "min") print v[1]; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%d\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

TOOLS="$PEERS flowlens cat"
echo "$(date -u +%F), $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
for c in $CAPS; do
	PCAP=$PWD/target/bench/$c.pcap
	PACKETS=$(tcpdump -r "$PCAP" -nn 2>/dev/null | wc -l)
	SIZE=$(stat -c %s "$PCAP")
	pmacct_conf "$PCAP"
	rm -f "$TMP"/times.*
	cat "$PCAP" >/dev/null # into the page cache
	set -- $TOOLS
	n=$#
	for ((r = 0; r < RUNS; r++)); do
		# Rotate the order every round.
		for ((i = 0; i < n; i++)); do
			k=$(((i + r) % n + 1))
			run_once "${!k}" "$PCAP"
		done
	done
	/usr/bin/time -f %M -o "$TMP/rss" $BIN replay "$PCAP" --jsonl /dev/null >/dev/null 2>&1
	RSS_KB=$(cat "$TMP/rss")
	pps() { echo $((PACKETS * 1000000 / $1)); }
	fastest="" fastest_us=0
	for t in $PEERS; do
		m=$(stat_of "$t" 1 median)
		if [ -z "$fastest" ] || [ "$m" -lt "$fastest_us" ]; then fastest=$t fastest_us=$m; fi
	done
	fl_us=$(stat_of flowlens 1 median)
	cat_us=$(stat_of cat 1 median)
	echo "capture: $c.pcap, $PACKETS packets, $SIZE bytes ($((SIZE / PACKETS)) bytes per record); $RUNS rounds interleaved; wall and CPU time (CPU: $([ -n "$PERF" ] && echo "perf task-clock" || echo "/usr/bin/time user+sys"))${RT:+; every command under $RT}"
	echo
	echo "| tool | command | wall s, median | wall s, best | CPU s, median | packets/s (median wall) |"
	echo "|---|---|---|---|---|---|"
	for t in $TOOLS; do
		cmd=$(command_of "$t" FILE)
		printf '| %s | `%s` | %s | %s | %s | %s |\n' "$t" "${cmd//$TMP/TMP}" \
			"$(awk -v u="$(stat_of "$t" 1 median)" 'BEGIN { printf "%.3f", u / 1e6 }')" \
			"$(awk -v u="$(stat_of "$t" 1 min)" 'BEGIN { printf "%.3f", u / 1e6 }')" \
			"$(awk -v u="$(stat_of "$t" 2 median)" 'BEGIN { printf "%.3f", u / 1e6 }')" \
			"$(pps "$(stat_of "$t" 1 median)")"
	done
	echo
	awk -v f="$fl_us" -v p="$fastest_us" -v n="$fastest" -v c="$cat_us" -v r="$RSS_KB" \
		-v fc="$(stat_of flowlens 2 median)" -v pc="$(stat_of "$fastest" 2 median)" 'BEGIN {
		printf "%s: flowlens / fastest peer (%s): %.2fx by wall time (goal >= 2x), %.2fx by CPU time; flowlens takes %.2fx the time of cat from the page cache; flowlens max RSS %.1f MiB\n", "'"$c"'", n, p / f, pc / fc, f / c, r / 1024 }'
	echo
done
