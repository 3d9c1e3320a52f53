//! Small kernel maps read once per interval: the per-CPU counters and the
//! ICMP echo requests of raw sockets.

use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData, PerCpuArray};
use flowlens_ebpf::abi::{self, IcmpEchoKey};

use super::convert::{icmp_echo, IcmpEcho};

/// Drains the ICMP echo map: (cookie, local end, remote end) of each echo
/// request a local socket sent since the last call.
pub fn drain_icmp_echo(map: &mut HashMap<MapData, IcmpEchoKey, u64>, out: &mut Vec<IcmpEcho>) {
    let keys: Vec<IcmpEchoKey> = map.keys().filter_map(Result::ok).collect();
    for k in keys {
        if let Ok(cookie) = map.get(&k, 0) {
            out.push(icmp_echo(&k, cookie));
        }
        let _ = map.remove(&k);
    }
}

/// Reads a `flowlens_counters` per-CPU array into name -> sum.
pub fn read_counters(map: &PerCpuArray<MapData, u64>, into: &mut BTreeMap<&'static str, u64>) {
    for (idx, name) in abi::COUNTER_NAMES {
        if let Ok(values) = map.get(&idx, 0) {
            let sum: u64 = values.iter().fold(0u64, |a, v| a.saturating_add(*v));
            *into.entry(name).or_insert(0) += sum;
        }
    }
}
