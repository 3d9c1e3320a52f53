//! Holds the Rust mirror (`src/abi.rs`) to the layouts clang gave the C
//! structs of `flow_abi.h`: every struct's size and every member's offset
//! and size, read from the `.BTF` section of each compiled object. A member
//! added, moved or resized on either side fails here.

use std::mem::{offset_of, size_of};

use flowlens_ebpf::{
    abi::*, btf::Btf, FLOW_COMPAT_OBJ, FLOW_OBJ, SIGNALS_OBJ, SOCK_COMPAT_OBJ, SOCK_OBJ,
};
use object::{Object, ObjectSection};

fn object_btf(obj: &[u8]) -> Btf {
    let file = object::File::parse(obj).expect("ELF object");
    let section = file.section_by_name(".BTF").expect(".BTF section");
    Btf::parse(section.data().expect("section data")).expect("BTF")
}

/// (C member name, Rust offset, Rust size) of every field of a mirror.
type Fields = &'static [(&'static str, usize, usize)];

macro_rules! fields {
    ($t:ty { $($c:literal => $r:ident),* $(,)? }) => {{
        const F: Fields = &[$(($c, offset_of!($t, $r), {
            const fn size_of_field<T>(_: fn(&$t) -> &T) -> usize { size_of::<T>() }
            size_of_field(|v: &$t| &v.$r)
        })),*];
        F
    }};
}

/// Compares one C struct with its Rust mirror.
fn check(btf: &Btf, c_name: &str, rust_size: usize, fields: Fields) -> Result<(), String> {
    let (size, members) = btf
        .struct_layout(c_name)
        .ok_or_else(|| format!("struct {c_name} is not in the object's BTF"))?;
    if size as usize != rust_size {
        return Err(format!("{c_name}: C size {size}, Rust size {rust_size}"));
    }
    let c_names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let rust_names: Vec<&str> = fields.iter().map(|f| f.0).collect();
    if c_names != rust_names {
        return Err(format!(
            "{c_name}: C members {c_names:?}, Rust mirror {rust_names:?}"
        ));
    }
    for (m, (name, off, len)) in members.iter().zip(fields) {
        let c_len = btf.size_of(m.type_id).unwrap_or(0) as usize;
        if m.bit_offset as usize != off * 8 || c_len != *len {
            return Err(format!(
                "{c_name}.{name}: C offset {} size {c_len}, Rust offset {off} size {len}",
                m.bit_offset / 8
            ));
        }
    }
    Ok(())
}

fn flow_structs() -> Vec<(&'static str, usize, Fields)> {
    vec![
        (
            "flow_key",
            size_of::<FlowKey>(),
            fields!(FlowKey { "src" => src, "dst" => dst, "sport" => sport, "dport" => dport,
                "proto" => proto, "hook" => hook, "pad" => pad, "ifindex" => ifindex }),
        ),
        (
            "flow_value",
            size_of::<FlowValue>(),
            fields!(FlowValue { "packets" => packets, "bytes" => bytes,
                "first_seen_ns" => first_seen_ns, "last_seen_ns" => last_seen_ns,
                "tcp_flags" => tcp_flags, "flags" => flags, "pad" => pad }),
        ),
        (
            "flow_slot",
            size_of::<FlowSlot>(),
            fields!(FlowSlot { "seq" => seq, "pad0" => pad0, "key" => key, "pad1" => pad1,
                "val" => val, "pad2" => pad2 }),
        ),
        (
            "flow_ctl",
            size_of::<FlowCtl>(),
            fields!(FlowCtl { "reclaim_before_ns" => reclaim_before_ns, "pad" => pad }),
        ),
        (
            "frag_key",
            size_of::<FragKey>(),
            fields!(FragKey { "src" => src, "dst" => dst, "id" => id, "proto" => proto,
                "pad" => pad }),
        ),
        (
            "frag_value",
            size_of::<FragValue>(),
            fields!(FragValue { "sport" => sport, "dport" => dport, "pad" => pad }),
        ),
    ]
}

fn sock_structs() -> Vec<(&'static str, usize, Fields)> {
    vec![
        (
            "icmp_echo_key",
            size_of::<IcmpEchoKey>(),
            fields!(IcmpEchoKey { "src" => src, "dst" => dst, "ident" => ident,
                "proto" => proto, "pad" => pad }),
        ),
        (
            "event_hdr",
            size_of::<EventHdr>(),
            fields!(EventHdr { "type" => kind, "size" => size, "ts_ns" => ts_ns }),
        ),
        (
            "sock_event",
            size_of::<SockEvent>(),
            fields!(SockEvent { "hdr" => hdr, "cookie" => cookie, "cgroup_id" => cgroup_id,
                "pid" => pid, "tid" => tid, "uid" => uid, "gid" => gid, "netns" => netns,
                "lport" => lport, "rport" => rport, "laddr" => laddr, "raddr" => raddr,
                "proto" => proto, "role" => role, "hook" => hook, "pad" => pad,
                "comm" => comm, "pad2" => pad2 }),
        ),
        (
            "tcp_state_event",
            size_of::<TcpStateEvent>(),
            fields!(TcpStateEvent { "hdr" => hdr, "cookie" => cookie, "laddr" => laddr,
                "raddr" => raddr, "lport" => lport, "rport" => rport, "oldstate" => oldstate,
                "newstate" => newstate, "pad" => pad, "netns" => netns, "sk_err" => sk_err }),
        ),
        (
            "flowlens_proc_event",
            size_of::<ProcEvent>(),
            fields!(ProcEvent { "hdr" => hdr, "cgroup_id" => cgroup_id, "pid" => pid,
                "ppid" => ppid, "uid" => uid, "gid" => gid, "comm" => comm, "exe" => exe }),
        ),
    ]
}

fn signals_structs() -> Vec<(&'static str, usize, Fields)> {
    vec![
        (
            "sig_key",
            size_of::<SigKey>(),
            fields!(SigKey { "laddr" => laddr, "raddr" => raddr, "lport" => lport,
                "rport" => rport, "pad" => pad }),
        ),
        (
            "rtt_slot",
            size_of::<RttSlot>(),
            fields!(RttSlot { "gen" => gen, "samples" => samples, "min_us" => min_us,
                "max_us" => max_us, "sum_us" => sum_us }),
        ),
        (
            "tcp_sig",
            size_of::<TcpSig>(),
            fields!(TcpSig { "created_ns" => created_ns, "total_retrans" => total_retrans,
                "retrans_base" => retrans_base, "rtt" => rtt }),
        ),
        (
            "sig_ctl",
            size_of::<SigCtl>(),
            fields!(SigCtl { "gen" => gen, "pad" => pad, "pad2" => pad2 }),
        ),
        (
            "tcp_reset_event",
            size_of::<TcpResetEvent>(),
            fields!(TcpResetEvent { "hdr" => hdr, "key" => key, "sent" => sent,
                "socket" => socket, "pad" => pad }),
        ),
        (
            "tcp_sig_final_event",
            size_of::<TcpSigFinalEvent>(),
            fields!(TcpSigFinalEvent { "hdr" => hdr, "key" => key, "sig" => sig }),
        ),
    ]
}

/// `dns_event` ends in its payload, which the Rust side reads as bytes after
/// [`DnsEventHdr`]: every member before it must match.
#[test]
fn dns_event_header_matches() {
    let btf = object_btf(SIGNALS_OBJ);
    let (size, members) = btf.struct_layout("dns_event").expect("dns_event in BTF");
    assert_eq!(size as usize, DNS_EVENT_HDR_SIZE + DNS_PAYLOAD_MAX);
    let hdr = fields!(DnsEventHdr { "hdr" => hdr, "saddr" => saddr, "daddr" => daddr,
        "sport" => sport, "dport" => dport, "proto" => proto, "egress" => egress,
        "cap_len" => cap_len, "orig_len" => orig_len, "pad" => pad });
    assert_eq!(members.len(), hdr.len() + 1);
    for (m, (name, off, len)) in members.iter().zip(hdr) {
        assert_eq!(m.name, *name);
        assert_eq!(m.bit_offset as usize, off * 8, "{name}");
        assert_eq!(btf.size_of(m.type_id).unwrap_or(0) as usize, *len, "{name}");
    }
    let payload = members.last().expect("payload");
    assert_eq!(payload.name, "payload");
    assert_eq!(payload.bit_offset as usize, DNS_EVENT_HDR_SIZE * 8);
}

#[test]
fn rust_mirror_matches_every_compiled_object() {
    let mut failures = Vec::new();
    for (obj_name, obj, structs) in [
        ("flow.bpf.o", FLOW_OBJ, flow_structs()),
        ("flow.compat.bpf.o", FLOW_COMPAT_OBJ, flow_structs()),
        ("sock.bpf.o", SOCK_OBJ, sock_structs()),
        ("sock.compat.bpf.o", SOCK_COMPAT_OBJ, sock_structs()),
        ("signals.bpf.o", SIGNALS_OBJ, signals_structs()),
    ] {
        let btf = object_btf(obj);
        for (c_name, size, fields) in structs {
            if let Err(e) = check(&btf, c_name, size, fields) {
                failures.push(format!("{obj_name}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "ABI drift:\n{}", failures.join("\n"));
}

#[test]
fn a_drifted_mirror_is_caught() {
    let btf = object_btf(FLOW_OBJ);
    // A mirror that swapped two members, one that lost a member, one of the wrong size.
    let swapped = fields!(FragValue { "sport" => dport, "dport" => sport, "pad" => pad });
    assert!(check(&btf, "frag_value", size_of::<FragValue>(), swapped).is_err());
    let short = fields!(FragValue { "sport" => sport, "dport" => dport });
    assert!(check(&btf, "frag_value", size_of::<FragValue>(), short).is_err());
    let ok = fields!(FragValue { "sport" => sport, "dport" => dport, "pad" => pad });
    assert!(check(&btf, "frag_value", 12, ok).is_err());
    assert!(check(&btf, "frag_value", size_of::<FragValue>(), ok).is_ok());
}
