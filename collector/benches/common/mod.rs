//! Data generators shared by the collector benches: ring-buffer records as the
//! kernel writes them and per-CPU flow map contents.
#![allow(dead_code)]

use flowlens_ebpf::abi::{self, FlowKey, FlowValue};

fn put<const N: usize>(buf: &mut [u8], off: usize, bytes: [u8; N]) {
    buf[off..off + N].copy_from_slice(&bytes);
}

fn mapped(a: [u8; 4]) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[10] = 0xff;
    m[11] = 0xff;
    m[12..].copy_from_slice(&a);
    m
}

fn header(buf: &mut [u8], kind: u32, i: u64) {
    let size = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    put(buf, 0, kind.to_ne_bytes());
    put(buf, 4, size.to_ne_bytes());
    put(buf, 8, (1_000_000 + i).to_ne_bytes());
}

/// The i-th `EV_SOCK` record (112 bytes; offsets as asserted in `abi.rs`).
pub fn sock_event(i: u32) -> Vec<u8> {
    let mut b = vec![0u8; 112];
    header(&mut b, abi::EV_SOCK, u64::from(i));
    put(&mut b, 16, (u64::from(i) + 1).to_ne_bytes()); // cookie
    put(&mut b, 24, 4242u64.to_ne_bytes()); // cgroup id
    put(&mut b, 32, (1000 + i).to_ne_bytes()); // pid
    put(&mut b, 48, 4_026_531_840u32.to_ne_bytes()); // netns
    put(
        &mut b,
        52,
        u16::try_from(i % 60_000 + 1024).unwrap_or(0).to_ne_bytes(),
    );
    put(&mut b, 54, 443u16.to_ne_bytes());
    put(&mut b, 56, mapped([10, 0, 0, 1]));
    put(&mut b, 72, mapped(i.to_be_bytes()));
    b[88] = 6;
    b[89] = abi::ROLE_CLIENT;
    b[90] = abi::SOCK_HOOK_CONNECT;
    b[92..92 + 4].copy_from_slice(b"curl");
    b
}

/// The i-th `EV_TCP_STATE` record (72 bytes).
pub fn tcp_state_event(i: u32) -> Vec<u8> {
    let mut b = vec![0u8; 72];
    header(&mut b, abi::EV_TCP_STATE, u64::from(i));
    put(&mut b, 16, (u64::from(i) + 1).to_ne_bytes());
    put(&mut b, 24, mapped([10, 0, 0, 1]));
    put(&mut b, 40, mapped(i.to_be_bytes()));
    put(
        &mut b,
        56,
        u16::try_from(i % 60_000 + 1024).unwrap_or(0).to_ne_bytes(),
    );
    put(&mut b, 58, 443u16.to_ne_bytes());
    b[60] = 2; // SYN_SENT
    b[61] = 1; // ESTABLISHED
    b
}

/// The i-th `EV_EXEC` record (312 bytes).
pub fn exec_event(i: u32) -> Vec<u8> {
    let mut b = vec![0u8; 312];
    header(&mut b, abi::EV_EXEC, u64::from(i));
    put(&mut b, 24, (1000 + i).to_ne_bytes());
    b[40..44].copy_from_slice(b"curl");
    let exe = b"/usr/bin/curl";
    b[56..56 + exe.len()].copy_from_slice(exe);
    b
}

/// A mix of ring-buffer records in the proportion a connection produces them:
/// one owner event, two state changes; one exec per ten connections.
pub fn event_mix(n: u32) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(sock_event(i));
        v.push(tcp_state_event(i));
        v.push(tcp_state_event(i));
        if i % 10 == 0 {
            v.push(exec_event(i));
        }
    }
    v
}

/// `n` flow map entries with `cpus` per-CPU values each; `busy` of the CPU
/// slots carry packets, the others are zero (a flow seen on one CPU).
pub fn flow_entries(n: u32, cpus: usize, busy: usize) -> Vec<(FlowKey, Vec<FlowValue>)> {
    (0..n)
        .map(|i| {
            let key = FlowKey {
                src: mapped(i.to_be_bytes()),
                dst: mapped([192, 168, 0, 1]),
                sport: u16::try_from(i % 60_000 + 1024).unwrap_or(0),
                dport: 443,
                proto: 6,
                hook: abi::FLOW_HOOK_XDP_INGRESS,
                pad: 0,
                ifindex: 2,
            };
            let values = (0..cpus)
                .map(|c| {
                    if c < busy {
                        FlowValue {
                            packets: 10 + u64::from(i),
                            bytes: 1500 * (10 + u64::from(i)),
                            first_seen_ns: 1_000 + c as u64,
                            last_seen_ns: 9_000 + c as u64,
                            tcp_flags: 0x18,
                            flags: 0,
                            ..Default::default()
                        }
                    } else {
                        FlowValue::default()
                    }
                })
                .collect();
            (key, values)
        })
        .collect()
}

/// A deterministic xorshift generator: the same data on every run.
pub struct Rng(pub u64);

impl Rng {
    /// The next value below `m`.
    pub fn below(&mut self, m: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % m
    }
}
