//! The golden-signal reader: the per-socket map (RTT slots, retransmit
//! totals) once per export, and the signals ring buffer (resets, closed
//! sockets' last signals, DNS copies) whenever the exporter waits. Kernel
//! structs become the correlator's signal types here and nowhere else.
//!
//! Retransmits are totals in the kernel; this reader remembers, per socket
//! (its key and creation time), the total it reported last, and hands the
//! correlator the difference. RTT slots are per interval (`sig_ctl.gen`):
//! before a read the generation moves on, and the slot of the previous one,
//! which no program writes any more, is read.

use std::collections::HashMap;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::Ebpf;
use flowlens_correlator::{
    conversation::ConversationTable,
    dns::{parse_message, tcp_messages},
    signals::{DnsObservation, RttStats, TcpReset, TcpSignal},
    types::mapped_to_ip,
};
use flowlens_ebpf::{
    abi::{self, DnsEventHdr, RttSlot, SigCtl, SigKey, TcpResetEvent, TcpSig, TcpSigFinalEvent},
    signals,
};

use super::{take_map, EbpfError};

/// Counters of the signal reader (cumulative).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SignalReaderStats {
    /// Ring-buffer records that could not be decoded (lost).
    pub undecodable: u64,
    /// DNS copies whose payload is not a DNS message (counted, skipped).
    pub dns_unparsable: u64,
    /// DNS messages handed to the correlator.
    pub dns_messages: u64,
    /// Resets handed to the correlator.
    pub resets: u64,
    /// Sockets tracked in the kernel map at the last read (gauge).
    pub sockets_tracked: u64,
}

/// What this reader last reported of one socket.
#[derive(Debug, Clone, Copy)]
struct Reported {
    created_ns: u64,
    /// Retransmit total already reported.
    retrans: u32,
    /// Every RTT slot of this generation or older was reported.
    rtt_gen: u32,
    /// The read that last saw the socket in the map.
    epoch: u64,
}

/// The signals object's maps and what was reported of them.
pub struct SignalReader {
    ring: RingBuf<MapData>,
    sockets: BpfHashMap<MapData, SigKey, TcpSig>,
    ctl: Array<MapData, SigCtl>,
    counters: PerCpuArray<MapData, u64>,
    gen: u32,
    epoch: u64,
    reported: HashMap<SigKey, Reported>,
    stats: SignalReaderStats,
}

fn addr(a: [u8; 16], port: u16) -> (std::net::IpAddr, u16) {
    (mapped_to_ip(a), port)
}

fn rtt_of(slot: &RttSlot) -> RttStats {
    RttStats {
        samples: slot.samples.into(),
        sum_us: slot.sum_us,
        min_us: slot.min_us.into(),
        max_us: slot.max_us.into(),
    }
}

impl SignalReader {
    /// Takes the maps out of the loaded signals object.
    pub fn new(bpf: &mut Ebpf) -> Result<Self, EbpfError> {
        let mut ctl: Array<MapData, SigCtl> = take_map(bpf, signals::MAP_CTL)?;
        // Generations start at 1: 0 means "nothing reported yet" below.
        let gen = 1;
        ctl.set(
            0,
            SigCtl {
                gen,
                ..SigCtl::default()
            },
            0,
        )
        .map_err(|e| EbpfError::Map {
            name: signals::MAP_CTL,
            message: e.to_string(),
        })?;
        Ok(Self {
            ring: take_map(bpf, signals::MAP_EVENTS)?,
            sockets: take_map(bpf, signals::MAP_TCP_SIGS)?,
            ctl,
            counters: take_map(bpf, signals::MAP_COUNTERS)?,
            gen,
            epoch: 0,
            reported: HashMap::new(),
            stats: SignalReaderStats::default(),
        })
    }

    /// The reader's counters.
    pub fn stats(&self) -> SignalReaderStats {
        self.stats
    }

    /// The kernel counters of the signals object.
    pub fn counters(&self) -> &PerCpuArray<MapData, u64> {
        &self.counters
    }

    /// Hands every record in the ring buffer to `table` (cheap when empty).
    pub fn drain_events(&mut self, table: &mut ConversationTable) {
        while let Some(item) = self.ring.next() {
            let buf: &[u8] = &item;
            let Some(hdr) = abi::read_pod::<abi::EventHdr>(buf) else {
                self.stats.undecodable += 1;
                continue;
            };
            match hdr.kind {
                abi::EV_TCP_RESET => match abi::read_pod::<TcpResetEvent>(buf) {
                    Some(e) => {
                        self.stats.resets += 1;
                        table.observe_tcp_reset(TcpReset {
                            local: addr(e.key.laddr, e.key.lport),
                            remote: addr(e.key.raddr, e.key.rport),
                            sent: e.sent != 0,
                            ts_ns: e.hdr.ts_ns,
                        });
                    }
                    None => self.stats.undecodable += 1,
                },
                abi::EV_TCP_SIG_FINAL => match abi::read_pod::<TcpSigFinalEvent>(buf) {
                    Some(e) => {
                        let s = Self::final_signal(&mut self.reported, &e.key, &e.sig);
                        table.observe_tcp_signal(s, e.hdr.ts_ns);
                    }
                    None => self.stats.undecodable += 1,
                },
                abi::EV_DNS => match abi::read_pod::<DnsEventHdr>(buf) {
                    Some(e) => {
                        let end = abi::DNS_EVENT_HDR_SIZE + usize::from(e.cap_len);
                        match buf.get(abi::DNS_EVENT_HDR_SIZE..end) {
                            Some(payload) => Self::dns(&mut self.stats, table, &e, payload),
                            None => self.stats.undecodable += 1,
                        }
                    }
                    None => self.stats.undecodable += 1,
                },
                _ => self.stats.undecodable += 1,
            }
        }
    }

    fn dns(
        stats: &mut SignalReaderStats,
        table: &mut ConversationTable,
        e: &DnsEventHdr,
        payload: &[u8],
    ) {
        let mut one = |msg: &[u8]| match parse_message(msg) {
            Ok(message) => {
                stats.dns_messages += 1;
                table.observe_dns(&DnsObservation {
                    proto: e.proto,
                    src: addr(e.saddr, e.sport),
                    dst: addr(e.daddr, e.dport),
                    egress: e.egress != 0,
                    message,
                    ts_ns: e.hdr.ts_ns,
                });
            }
            Err(_) => stats.dns_unparsable += 1,
        };
        if e.proto == flowlens_correlator::types::proto::TCP {
            tcp_messages(payload).for_each(&mut one);
        } else {
            one(payload);
        }
    }

    /// The last signals of a socket that closed: what was not reported yet.
    fn final_signal(
        reported: &mut HashMap<SigKey, Reported>,
        key: &SigKey,
        sig: &TcpSig,
    ) -> TcpSignal {
        let (retrans_from, rtt_gen) = match reported.get(key) {
            Some(r) if r.created_ns == sig.created_ns => {
                let seen = (r.retrans, r.rtt_gen);
                reported.remove(key);
                seen
            }
            _ => (sig.retrans_base, 0),
        };
        let mut rtt = RttStats::default();
        for slot in &sig.rtt {
            if slot.samples > 0 && slot.gen > rtt_gen {
                rtt = rtt.merge(rtt_of(slot));
            }
        }
        TcpSignal {
            local: addr(key.laddr, key.lport),
            remote: addr(key.raddr, key.rport),
            retransmits: sig.total_retrans.saturating_sub(retrans_from).into(),
            rtt,
        }
    }

    /// Reads the per-socket map: the interval's RTT samples and new
    /// retransmits of every live socket, into `table`. Call it once per export.
    pub fn read_sockets(&mut self, table: &mut ConversationTable, now_ns: u64) {
        // Resets and closes first: a socket closed before the read is settled by its final event.
        self.drain_events(table);
        let old = self.gen;
        let new = old.checked_add(1).unwrap_or(1);
        let ctl = SigCtl {
            gen: new,
            ..SigCtl::default()
        };
        if self.ctl.set(0, ctl, 0).is_err() {
            // Without a new generation the slot being read is still written: skip RTT this time.
            return;
        }
        self.gen = new;
        self.epoch += 1;
        let entries: Vec<(SigKey, TcpSig)> = self.sockets.iter().filter_map(Result::ok).collect();
        self.stats.sockets_tracked = entries.len() as u64;
        for (key, sig) in entries {
            let r = self.reported.entry(key).or_insert(Reported {
                created_ns: sig.created_ns,
                retrans: sig.retrans_base,
                rtt_gen: 0,
                epoch: 0,
            });
            if r.created_ns != sig.created_ns {
                *r = Reported {
                    created_ns: sig.created_ns,
                    retrans: sig.retrans_base,
                    rtt_gen: 0,
                    epoch: 0,
                };
            }
            let retransmits = u64::from(sig.total_retrans.saturating_sub(r.retrans));
            r.retrans = r.retrans.max(sig.total_retrans);
            let slot = &sig.rtt[(old & 1) as usize];
            let rtt = if slot.samples > 0 && slot.gen == old && r.rtt_gen < old {
                rtt_of(slot)
            } else {
                RttStats::default()
            };
            r.rtt_gen = old;
            r.epoch = self.epoch;
            table.observe_tcp_signal(
                TcpSignal {
                    local: addr(key.laddr, key.lport),
                    remote: addr(key.raddr, key.rport),
                    retransmits,
                    rtt,
                },
                now_ns,
            );
        }
        // A socket that closed during this read has its final event still in
        // the ring: keep what was reported of it one read longer.
        let epoch = self.epoch;
        self.reported.retain(|_, r| r.epoch + 1 >= epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(gen: u32, samples: u32, us: u32) -> RttSlot {
        RttSlot {
            gen,
            samples,
            min_us: us,
            max_us: us,
            sum_us: u64::from(samples) * u64::from(us),
        }
    }

    fn key() -> SigKey {
        SigKey {
            laddr: flowlens_correlator::types::ip_to_mapped("10.0.0.1".parse().expect("ip")),
            raddr: flowlens_correlator::types::ip_to_mapped("10.0.0.2".parse().expect("ip")),
            lport: 40000,
            rport: 443,
            pad: 0,
        }
    }

    #[test]
    fn a_final_event_reports_only_what_no_read_reported() {
        let mut reported = HashMap::new();
        // never read: everything after the base, both slots
        let sig = TcpSig {
            created_ns: 5,
            total_retrans: 7,
            retrans_base: 2,
            rtt: [slot(4, 2, 100), slot(3, 1, 400)],
        };
        let s = SignalReader::final_signal(&mut reported, &key(), &sig);
        assert_eq!((s.retransmits, s.rtt.samples, s.rtt.max_us), (5, 3, 400));
        assert_eq!(s.local.1, 40000);
        // read at generation 3 with 6 retransmits: the rest only
        reported.insert(
            key(),
            Reported {
                created_ns: 5,
                retrans: 6,
                rtt_gen: 3,
                epoch: 1,
            },
        );
        let s = SignalReader::final_signal(&mut reported, &key(), &sig);
        assert_eq!((s.retransmits, s.rtt.samples, s.rtt.max_us), (1, 2, 100));
        assert!(reported.is_empty(), "a closed socket is forgotten");
        // another socket on the same tuple (created later): its own counts
        reported.insert(
            key(),
            Reported {
                created_ns: 1,
                retrans: 6,
                rtt_gen: 9,
                epoch: 1,
            },
        );
        let s = SignalReader::final_signal(&mut reported, &key(), &sig);
        assert_eq!((s.retransmits, s.rtt.samples), (5, 3));
    }
}
