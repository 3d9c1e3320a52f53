//! The live window: the last hour of conversation records in memory, in a
//! compact form (labels and owners interned with reference counts, so
//! memory follows what is kept), bounded by a byte cap. Records older than
//! the window leave normally; records pushed out by the cap before their hour
//! is over are counted (`evicted_early`).

use std::{
    collections::{HashMap, VecDeque},
    mem::size_of,
    net::IpAddr,
    sync::Arc,
};

use flowlens_correlator::record::{ConversationRecord, Endpoint};
use flowlens_query::fact::{
    container_label, field_text, tag_label, user_label, Conv, ConvSignals, Counts, Owner, Side,
};

/// Bytes an interned entry costs besides its text (map entry, slot, Arc header).
const ENTRY_OVERHEAD: usize = 80;

/// Interned strings with reference counts; id 0 is the empty string (absent).
#[derive(Debug)]
struct Syms {
    ids: HashMap<Arc<str>, u32>,
    slots: Vec<Option<(Arc<str>, u32)>>,
    free: Vec<u32>,
    bytes: usize,
}

impl Default for Syms {
    fn default() -> Self {
        Syms {
            ids: HashMap::new(),
            slots: vec![None],
            free: Vec::new(),
            bytes: 0,
        }
    }
}

impl Syms {
    fn intern(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&id) = self.ids.get(s) {
            if let Some(Some((_, n))) = self.slots.get_mut(id as usize) {
                *n += 1;
            }
            return id;
        }
        let a: Arc<str> = s.into();
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some((a.clone(), 1));
                id
            }
            None => {
                self.slots.push(Some((a.clone(), 1)));
                (self.slots.len() - 1) as u32
            }
        };
        self.bytes += s.len() + ENTRY_OVERHEAD;
        self.ids.insert(a, id);
        id
    }

    fn release(&mut self, id: u32) {
        if id == 0 {
            return;
        }
        let Some(slot) = self.slots.get_mut(id as usize) else {
            return;
        };
        let gone = match slot {
            Some((_, n)) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if gone {
            if let Some((s, _)) = slot.take() {
                self.bytes -= s.len() + ENTRY_OVERHEAD;
                self.ids.remove(&s);
                self.free.push(id);
            }
        }
    }

    fn get(&self, id: u32) -> &str {
        match self.slots.get(id as usize) {
            Some(Some((s, _))) => s,
            _ => "",
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// An interned owner (a local end's process); strings are symbol ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct OwnerRec {
    pid: u32,
    uid: u32,
    comm: u32,
    user: u32,
    container: u32,
    container_id: u32,
    exe: u32,
}

#[derive(Debug, Default)]
struct Owners {
    ids: HashMap<OwnerRec, u32>,
    slots: Vec<Option<(OwnerRec, u32)>>,
    free: Vec<u32>,
}

impl Owners {
    /// Interns an owner whose symbols are already counted once for this call;
    /// when the owner exists, those extra symbol references are released.
    fn intern(&mut self, o: OwnerRec, syms: &mut Syms) -> u32 {
        if let Some(&id) = self.ids.get(&o) {
            if let Some(Some((_, n))) = self.slots.get_mut(id as usize) {
                *n += 1;
            }
            for s in [o.comm, o.user, o.container, o.container_id, o.exe] {
                syms.release(s);
            }
            return id + 1;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some((o, 1));
                id
            }
            None => {
                self.slots.push(Some((o, 1)));
                (self.slots.len() - 1) as u32
            }
        };
        self.ids.insert(o, id);
        id + 1
    }

    fn release(&mut self, id: u32, syms: &mut Syms) {
        let Some(i) = id.checked_sub(1) else { return };
        let Some(slot) = self.slots.get_mut(i as usize) else {
            return;
        };
        let gone = match slot {
            Some((_, n)) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if gone {
            if let Some((o, _)) = slot.take() {
                self.ids.remove(&o);
                self.free.push(i);
                for s in [o.comm, o.user, o.container, o.container_id, o.exe] {
                    syms.release(s);
                }
            }
        }
    }

    fn get(&self, id: u32) -> Option<&OwnerRec> {
        let i = id.checked_sub(1)?;
        self.slots.get(i as usize)?.as_ref().map(|(o, _)| o)
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// One conversation record, compact.
#[derive(Clone, Debug)]
struct Rec {
    ts: i64,
    first_seen: i64,
    last_seen: i64,
    c2s: (u64, u64),
    s2c: (u64, u64),
    client_addr: IpAddr,
    server_addr: IpAddr,
    client_text: u32,
    server_text: u32,
    host: u32,
    proto: u32,
    client_owner: u32,
    server_owner: u32,
    client_port: u16,
    server_port: u16,
    tcp_flags: u8,
    /// NAT kind, and what the other end sees of each end (0 / `None`: untranslated).
    nat: u32,
    client_nat: (u32, Option<u16>),
    server_nat: (u32, Option<u16>),
    /// DNS names of the ends (0: unknown).
    names: (u32, u32),
    /// Golden signals, boxed: most records of a busy host have none, and they then cost one pointer.
    signals: Option<Box<ConvSignals>>,
}

/// Counters of the live window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LiveStats {
    /// Records kept now.
    pub records: u64,
    /// Estimated bytes used now.
    pub bytes: u64,
    /// The byte cap.
    pub cap_bytes: u64,
    /// Records inserted since start.
    pub inserted: u64,
    /// Records pushed out by the byte cap before the end of their window (cumulative).
    pub evicted_early: u64,
    /// Time of the oldest record kept (Unix ns; 0 when empty).
    pub oldest_ns: i64,
    /// Distinct strings and owners interned now.
    pub interned: u64,
}

/// The last `window_ns` of conversation records, within `cap_bytes`.
#[derive(Debug)]
pub struct LiveWindow {
    recs: VecDeque<Rec>,
    syms: Syms,
    owners: Owners,
    window_ns: i64,
    cap_bytes: usize,
    inserted: u64,
    evicted_early: u64,
    /// Records holding boxed signals (for the memory estimate).
    boxed_signals: usize,
}

impl LiveWindow {
    /// An empty window.
    pub fn new(window_ns: i64, cap_bytes: usize) -> Self {
        LiveWindow {
            recs: VecDeque::new(),
            syms: Syms::default(),
            owners: Owners::default(),
            window_ns,
            cap_bytes,
            inserted: 0,
            evicted_early: 0,
            boxed_signals: 0,
        }
    }

    /// Estimated memory in use.
    pub fn bytes(&self) -> usize {
        self.recs.capacity() * size_of::<Rec>()
            + self.boxed_signals * size_of::<ConvSignals>()
            + self.syms.bytes
            + self.syms.slots.capacity() * size_of::<Option<(Arc<str>, u32)>>()
            + self.owners.len() * (size_of::<OwnerRec>() * 2 + 32)
    }

    fn name(&mut self, e: &Endpoint) -> u32 {
        self.syms
            .intern(&field_text(e.name.as_deref().unwrap_or("")))
    }

    fn side(&mut self, e: &Endpoint) -> (IpAddr, u32, u32) {
        let addr = e
            .addr
            .parse::<IpAddr>()
            .map(|a| a.to_canonical())
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let text = self.syms.intern(&field_text(&e.addr));
        let owner = match &e.process {
            None => 0,
            Some(p) => {
                let o = OwnerRec {
                    pid: p.pid,
                    uid: p.uid,
                    comm: self.syms.intern(&tag_label(&p.comm)),
                    user: self.syms.intern(&tag_label(&user_label(p))),
                    container: self.syms.intern(&tag_label(container_label(p))),
                    container_id: self
                        .syms
                        .intern(&field_text(p.container_id.as_deref().unwrap_or(""))),
                    exe: self
                        .syms
                        .intern(&field_text(p.exe.as_deref().unwrap_or(""))),
                };
                self.owners.intern(o, &mut self.syms)
            }
        };
        (addr, text, owner)
    }

    /// Adds an interval's records and evicts what is out of the window or over the cap.
    pub fn insert(&mut self, records: &[ConversationRecord]) {
        for r in records {
            let (client_addr, client_text, client_owner) = self.side(&r.client);
            let (server_addr, server_text, server_owner) = self.side(&r.server);
            let rec = Rec {
                ts: r.ts_unix_ns,
                first_seen: r.first_seen_unix_ns,
                last_seen: r.last_seen_unix_ns,
                c2s: (r.bytes_c2s, r.packets_c2s),
                s2c: (r.bytes_s2c, r.packets_s2c),
                client_addr,
                server_addr,
                client_text,
                server_text,
                host: self.syms.intern(&tag_label(&r.host)),
                proto: self.syms.intern(&tag_label(&r.proto)),
                client_owner,
                server_owner,
                client_port: r.client.port,
                server_port: r.server.port,
                tcp_flags: r.tcp_flags,
                nat: self
                    .syms
                    .intern(&field_text(r.nat.as_deref().unwrap_or(""))),
                client_nat: (
                    self.syms
                        .intern(&field_text(r.client.nat_addr.as_deref().unwrap_or(""))),
                    r.client.nat_port,
                ),
                server_nat: (
                    self.syms
                        .intern(&field_text(r.server.nat_addr.as_deref().unwrap_or(""))),
                    r.server.nat_port,
                ),
                names: (self.name(&r.client), self.name(&r.server)),
                signals: Some(ConvSignals::from_record(&r.signals))
                    .filter(|s| !s.is_empty())
                    .map(Box::new),
            };
            self.boxed_signals += usize::from(rec.signals.is_some());
            // Keep the deque sorted by time (records of an interval share it).
            match self.recs.back() {
                Some(b) if b.ts > rec.ts => {
                    let i = self.recs.partition_point(|x| x.ts <= rec.ts);
                    self.recs.insert(i, rec);
                }
                _ => self.recs.push_back(rec),
            }
            self.inserted += 1;
        }
        let newest = self.recs.back().map_or(0, |r| r.ts);
        while self
            .recs
            .front()
            .is_some_and(|r| r.ts < newest.saturating_sub(self.window_ns))
        {
            self.pop_front();
        }
        while self.bytes() > self.cap_bytes && !self.recs.is_empty() {
            self.pop_front();
            self.evicted_early += 1;
            // Give memory back once the deque is well below its capacity.
            if self.recs.len() * 2 < self.recs.capacity() && self.recs.capacity() > 1024 {
                self.recs.shrink_to(self.recs.len() + self.recs.len() / 4);
            }
        }
    }

    fn pop_front(&mut self) {
        if let Some(r) = self.recs.pop_front() {
            self.boxed_signals -= usize::from(r.signals.is_some());
            for s in [
                r.client_text,
                r.server_text,
                r.host,
                r.proto,
                r.nat,
                r.client_nat.0,
                r.server_nat.0,
                r.names.0,
                r.names.1,
            ] {
                self.syms.release(s);
            }
            self.owners.release(r.client_owner, &mut self.syms);
            self.owners.release(r.server_owner, &mut self.syms);
        }
    }

    /// Time of the oldest record kept.
    pub fn oldest(&self) -> Option<i64> {
        self.recs.front().map(|r| r.ts)
    }

    fn owner(&self, id: u32) -> Option<Owner<'_>> {
        let o = self.owners.get(id)?;
        let opt = |s: u32| (s != 0).then(|| self.syms.get(s));
        Some(Owner {
            pid: o.pid,
            uid: o.uid,
            comm: self.syms.get(o.comm),
            user: self.syms.get(o.user),
            container: self.syms.get(o.container),
            container_id: opt(o.container_id),
            exe: opt(o.exe),
        })
    }

    /// Calls `f` with every record whose time is in `[from, to)`, oldest first.
    pub fn each(&self, from: i64, to: i64, mut f: impl FnMut(&Conv<'_>)) {
        let start = self.recs.partition_point(|r| r.ts < from);
        let opt = |s: u32| (s != 0).then(|| self.syms.get(s));
        for r in self.recs.range(start..) {
            if r.ts >= to {
                break;
            }
            let conv = Conv {
                ts: r.ts,
                host: self.syms.get(r.host),
                proto: self.syms.get(r.proto),
                client: Side {
                    addr: r.client_addr,
                    addr_text: self.syms.get(r.client_text),
                    port: r.client_port,
                    owner: self.owner(r.client_owner),
                    nat_addr: opt(r.client_nat.0),
                    nat_port: r.client_nat.1,
                    name: opt(r.names.0),
                },
                server: Side {
                    addr: r.server_addr,
                    addr_text: self.syms.get(r.server_text),
                    port: r.server_port,
                    owner: self.owner(r.server_owner),
                    nat_addr: opt(r.server_nat.0),
                    nat_port: r.server_nat.1,
                    name: opt(r.names.1),
                },
                c2s: Counts {
                    bytes: r.c2s.0,
                    packets: r.c2s.1,
                },
                s2c: Counts {
                    bytes: r.s2c.0,
                    packets: r.s2c.1,
                },
                first_seen: r.first_seen,
                last_seen: r.last_seen,
                tcp_flags: r.tcp_flags,
                nat: opt(r.nat),
                signals: r.signals.as_deref().copied().unwrap_or_default(),
            };
            f(&conv);
        }
    }

    /// Counters.
    pub fn stats(&self) -> LiveStats {
        LiveStats {
            records: self.recs.len() as u64,
            bytes: self.bytes() as u64,
            cap_bytes: self.cap_bytes as u64,
            inserted: self.inserted,
            evicted_early: self.evicted_early,
            oldest_ns: self.oldest().unwrap_or(0),
            interned: (self.syms.len() + self.owners.len()) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowlens_query::fact::OwnedConv;

    pub(crate) fn record(i: u32, ts: i64) -> ConversationRecord {
        use flowlens_correlator::record::ProcessAttribution;
        ConversationRecord {
            ts: String::new(),
            ts_unix_ns: ts,
            interval_ms: 10_000,
            host: "h".into(),
            proto: "tcp".into(),
            client: Endpoint {
                addr: "10.0.0.1".into(),
                port: 40000 + (i % 1000) as u16,
                local: true,
                nat_addr: i.is_multiple_of(3).then(|| "203.0.113.9".to_owned()),
                nat_port: i.is_multiple_of(3).then_some(61000),
                name: None,
                process: Some(ProcessAttribution {
                    pid: 100 + i % 7,
                    comm: format!("proc{}", i % 7),
                    exe: Some("/bin/x".into()),
                    uid: 1000,
                    user: Some("alice".into()),
                    gid: 1000,
                    cgroup: None,
                    container_id: None,
                    container_runtime: "host".into(),
                    container_name: None,
                    container_image: None,
                    pod_uid: None,
                }),
            },
            server: Endpoint {
                addr: format!("192.0.2.{}", i % 200),
                port: 443,
                local: false,
                nat_addr: None,
                nat_port: None,
                name: None,
                process: None,
            },
            client_evidence: "socket".into(),
            bytes_c2s: u64::from(i),
            bytes_s2c: 2 * u64::from(i),
            packets_c2s: 1,
            packets_s2c: 1,
            first_seen: String::new(),
            first_seen_unix_ns: ts - 5,
            last_seen: String::new(),
            last_seen_unix_ns: ts - 1,
            duration_ms: 0,
            tcp_flags: 0x12,
            tcp_flags_text: String::new(),
            ifaces: vec![],
            nat: i.is_multiple_of(3).then(|| "snat".to_owned()),
            signals: Default::default(),
        }
    }

    #[test]
    fn records_come_back_as_they_went_in() {
        let mut w = LiveWindow::new(3_600_000_000_000, 1 << 30);
        let recs: Vec<ConversationRecord> = (0..50)
            .map(|i| record(i, 1_000 + i64::from(i / 10)))
            .collect();
        w.insert(&recs);
        let mut back = Vec::new();
        w.each(0, i64::MAX, |c| back.push(format!("{c:?}")));
        let want: Vec<String> = recs
            .iter()
            .map(|r| format!("{:?}", OwnedConv::from_record(r).view()))
            .collect();
        assert_eq!(back, want);
        let mut n = 0;
        w.each(1_002, 1_004, |_| n += 1);
        assert_eq!(n, 20);
    }

    #[test]
    fn the_window_and_the_cap_evict_and_interning_frees() {
        let mut w = LiveWindow::new(100, 1 << 30);
        w.insert(&(0..10).map(|i| record(i, 1000)).collect::<Vec<_>>());
        w.insert(&(0..10).map(|i| record(i + 500, 1101)).collect::<Vec<_>>());
        assert_eq!(
            w.stats().records,
            10,
            "the first interval left the 100 ns window"
        );
        assert_eq!(w.stats().evicted_early, 0);
        let interned = w.stats().interned;
        // Everything evicted: nothing stays interned.
        w.insert(&[record(1, 5000)]);
        w.cap_bytes = 0;
        w.insert(&[]);
        assert_eq!(w.stats().records, 0);
        assert_eq!(w.stats().evicted_early, 1);
        assert_eq!(
            w.syms.len(),
            0,
            "{:?}",
            w.syms.ids.keys().collect::<Vec<_>>()
        );
        assert_eq!(w.owners.len(), 0);
        assert!(interned > 0);
        // A cap keeps memory bounded while records keep coming.
        let mut w = LiveWindow::new(i64::MAX / 4, 256 << 10);
        for t in 0..200 {
            w.insert(
                &(0..100)
                    .map(|i| record(i + t * 100, i64::from(t)))
                    .collect::<Vec<_>>(),
            );
            assert!(w.bytes() <= 256 << 10);
        }
        let s = w.stats();
        assert!(s.evicted_early > 0 && s.records > 0, "{s:?}");
        assert_eq!(s.inserted, 20_000);
        assert_eq!(s.records + s.evicted_early, 20_000);
    }
}
