#!/usr/bin/env python3
"""Reference conversation table of a capture, from tshark's dissectors.

    tests/reference/tshark_conv.py FILE   ->  one JSON object per line:
    {"proto": "tcp"|"udp"|"icmp"|"icmpv6"|"<number>", "a": ADDR, "a_port": N,
     "b": ADDR, "b_port": N, "packets_ab": N, "bytes_ab": N, "packets_ba": N, "bytes_ba": N}

A conversation is a bidirectional 5-tuple; (a, a_port) sorts before (b, b_port) (addresses compared as
16-byte IPv4-mapped keys). Bytes are IP lengths (`ip.len`, `ipv6.plen` + 40). tshark runs without
reassembly or defragmentation (every frame is dissected on its own), and only the outermost IP header
counts (tunnels, ICMP errors quoting a packet: the quoted/inner headers are ignored).

The counting rules of docs/replay.md that are conventions, not dissection, are applied here explicitly
so that tests/tests/replay_reference.rs can require equality. Each is marked RULE below:

 1. Ports: TCP/UDP ports; ICMP/ICMPv6 echo request/reply (types 8/0, 128/129): the identifier on both
    sides; any other protocol or ICMP type: 0.
 2. Later fragments (offset > 0) take the ports of their first fragment, remembered by
    (src, dst, id, proto); 0 when the first fragment was not seen before. tshark gives them no ports.
 3. A byte claim larger than what is present on the wire (frame.len minus the link-layer headers), or an
    IPv4 claim below 20 / IPv6 payload length 0, counts what is present.
 4. A third VLAN tag is "not IP" (the kernel parses two); such frames are not counted.
 5. An L4 header cut short (fewer than 20 TCP / 8 UDP / 8 ICMP bytes captured) has ports 0.
"""

import ipaddress
import json
import subprocess
import sys

FIELDS = [
    "frame.len",
    "frame.cap_len",
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ip.len",
    "ip.proto",
    "ip.id",
    "ip.flags.mf",
    "ip.frag_offset",
    "ip.hdr_len",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.plen",
    "ipv6.nxt",
    "ipv6.hopopts.nxt",
    "ipv6.routing.nxt",
    "ipv6.dstopts.nxt",
    "ipv6.fraghdr.nxt",
    "ipv6.fraghdr.offset",
    "ipv6.fraghdr.more",
    "ipv6.fraghdr.ident",
    "ah.next_header",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
    "icmp.type",
    "icmp.ident",
    "icmpv6.type",
    "icmpv6.echo.identifier",
]

# Link-layer protocol names of frame.protocols and the bytes each adds before the IP header.
L2_LEN = {
    "eth": 14,
    "sll": 16,
    "sll2": 20,
    "null": 4,
    "loop": 4,
    "vlan": 4,
    "ieee8021ad": 4,
    "pppoes": 6,
    "ppp": 2,
    "mpls": 4,
    "raw": 0,
    "ethertype": 0,
    "frame": 0,
}
IPV6_EXT = {
    "ipv6.hopopts": "ipv6.hopopts.nxt",
    "ipv6.routing": "ipv6.routing.nxt",
    "ipv6.dstopts": "ipv6.dstopts.nxt",
    "ipv6.fraghdr": "ipv6.fraghdr.nxt",
    "ah": "ah.next_header",
}
NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}
L4_MIN = {6: 20, 17: 8, 1: 8, 58: 8}


def num(s, default=0):
    if s in ("", None):
        return default
    if s in ("True", "False"):
        return int(s == "True")
    return int(s, 0)


def key(addr):
    a = ipaddress.ip_address(addr)
    if a.version == 4:
        return ipaddress.IPv6Address("::ffff:" + str(a)).packed
    return a.packed


def run_tshark(path):
    cmd = ["tshark", "-n", "-r", path, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    for pref in (
        "ip.defragment:FALSE",
        "ipv6.defragment:FALSE",
        "tcp.desegment_tcp_streams:FALSE",
        "tcp.analyze_sequence_numbers:FALSE",
        "udp.try_heuristic_first:FALSE",
    ):
        cmd += ["-o", pref]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        vals = line.split("\t")
        vals += [""] * (len(FIELDS) - len(vals))
        yield dict(zip(FIELDS, vals))


def packet(f, frags):
    """(proto, src, sport, dst, dport, bytes) of one frame, or None when it is not counted."""
    protos = f["frame.protocols"].split(":")
    ip_at = next((i for i, p in enumerate(protos) if p in ("ip", "ipv6")), None)
    if ip_at is None:
        return None
    l2 = protos[:ip_at]
    if sum(1 for p in l2 if p in ("vlan", "ieee8021ad")) > 2:
        return None  # RULE 4
    l2_len = sum(L2_LEN.get(p, 0) for p in l2)
    present = num(f["frame.len"]) - l2_len
    captured = num(f["frame.cap_len"]) - l2_len
    v6 = protos[ip_at] == "ipv6"
    if v6:
        if not f["ipv6.src"]:
            return None
        src, dst = f["ipv6.src"], f["ipv6.dst"]
        plen = num(f["ipv6.plen"])
        claimed = plen + 40 if plen else 0
        proto = num(f["ipv6.nxt"])
        hdr = 40
        for p in protos[ip_at + 1 :]:
            if p not in IPV6_EXT:
                break
            proto = num(f[IPV6_EXT[p]], proto)
        later = num(f["ipv6.fraghdr.offset"]) > 0
        first = not later and num(f["ipv6.fraghdr.more"]) == 1
        frag_id = f["ipv6.fraghdr.ident"]
        l4_bytes = None  # IPv6: extension header lengths are not exported; see L4 check below
    else:
        if not f["ip.src"]:
            return None
        src, dst = f["ip.src"], f["ip.dst"]
        claimed = num(f["ip.len"])
        if claimed < 20:
            claimed = 0
        proto = num(f["ip.proto"])
        hdr = num(f["ip.hdr_len"], 20)
        later = num(f["ip.frag_offset"]) > 0
        first = not later and num(f["ip.flags.mf"]) == 1
        frag_id = f["ip.id"]
        l4_bytes = captured - hdr
    counted = present if claimed == 0 or claimed > present else claimed  # RULE 3
    sport = dport = 0
    if proto in (6, 17):
        name = NAMES[proto]
        sport, dport = num(f[name + ".srcport"]), num(f[name + ".dstport"])
    elif proto == 1 and num(f["icmp.type"], -1) in (0, 8):
        sport = dport = num(f["icmp.ident"])
    elif proto == 58 and num(f["icmpv6.type"], -1) in (128, 129):
        sport = dport = num(f["icmpv6.echo.identifier"])
    if l4_bytes is not None and proto in L4_MIN and l4_bytes < L4_MIN[proto]:
        sport = dport = 0  # RULE 5
    fkey = (src, dst, frag_id, proto)
    if later and proto in L4_MIN:
        sport, dport = frags.get(fkey, (0, 0))  # RULE 2
    elif first:
        frags[fkey] = (sport, dport)
    return proto, src, sport, dst, dport, counted


def conversations(path):
    frags = {}
    table = {}
    for f in run_tshark(path):
        p = packet(f, frags)
        if p is None:
            continue
        proto, src, sport, dst, dport, nbytes = p
        s, d = (key(src), sport), (key(dst), dport)
        if s <= d:
            k, forward = (proto, src, sport, dst, dport), True
        else:
            k, forward = (proto, dst, dport, src, sport), False
        c = table.setdefault(k, [0, 0, 0, 0])
        i = 0 if forward else 2
        c[i] += 1
        c[i + 1] += nbytes
    for (proto, a, ap, b, bp), c in sorted(table.items(), key=lambda kv: (kv[0][0], key(kv[0][1]), kv[0][2], key(kv[0][3]), kv[0][4])):
        yield {
            "proto": NAMES.get(proto, str(proto)),
            "a": str(ipaddress.ip_address(a)),
            "a_port": ap,
            "b": str(ipaddress.ip_address(b)),
            "b_port": bp,
            "packets_ab": c[0],
            "bytes_ab": c[1],
            "packets_ba": c[2],
            "bytes_ba": c[3],
        }


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: tshark_conv.py FILE")
    for conv in conversations(sys.argv[1]):
        print(json.dumps(conv))


if __name__ == "__main__":
    main()
