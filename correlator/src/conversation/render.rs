//! Attribution and rendering of one conversation into a record.

use crate::owners::OwnerIndex;
use crate::paths::PATH_MARGIN_NS;
use crate::record::{
    clamp_i64, format_rfc3339, proto_name, tcp_flags_text, ConversationRecord, Endpoint,
    ProcessAttribution,
};
use crate::types::Lookup;

use super::state::{ConvKey, Conversation};

/// What every record of one export shares.
pub(crate) struct ExportCtx<'a> {
    pub offset: i128,
    pub ts: String,
    pub host: &'a str,
    pub lookup: &'a dyn Lookup,
    pub now_ns: u64,
    pub interval_ms: u64,
}

/// TCP and UDP: an end is a socket. (ICMP echo replies come from the kernel.)
pub(crate) fn key_has_ports(proto: u8) -> bool {
    proto == crate::types::proto::TCP || proto == crate::types::proto::UDP
}

/// Finds the owners of still unattributed ends; refreshes roles and owner
/// references. Returns how many earlier connections on the tuple (counted
/// with `count_merged`) the packets of a newly attributed end include.
pub(crate) fn attribute(
    key: &ConvKey,
    conv: &mut Conversation,
    owners: &mut OwnerIndex,
    now_ns: u64,
    count_merged: bool,
) -> u64 {
    let mut merged = 0;
    let start = conv.first_seen_ns.max(conv.since_ns());
    for side in 0..2 {
        let remote = conv.seen_as(key, 1 - side);
        match conv.owners.get(side) {
            Some(a) => {
                // Keep the identity for good; refresh the role while the socket is tracked.
                if let Some(role) = owners.role_of(a.cookie()) {
                    conv.owners.set_role(side, role);
                }
            }
            None => {
                // A socket that closed before the conversation began is an earlier
                // connection's on the same tuple (its successor's events may be late).
                let found = owners.find(key.proto, key.ends[side], remote).filter(|f| {
                    owners
                        .closed_ns(f.owner.cookie())
                        .is_none_or(|c| c.saturating_add(PATH_MARGIN_NS) >= start)
                });
                if let Some(f) = found {
                    if count_merged {
                        // Sockets that took the tuple over after the conversation's first
                        // packet: earlier connections' packets are in it too.
                        merged =
                            merged.max(f.takeovers.after(start.saturating_add(PATH_MARGIN_NS)));
                    }
                    conv.owners.set(side, f.owner, f.role);
                }
            }
        }
        if let Some(a) = conv.owners.get(side) {
            owners.touch(a.cookie(), now_ns);
        }
    }
    merged
}

/// Decides and renders one conversation; its news become reported.
pub(crate) fn build_record(
    key: &ConvKey,
    conv: &mut Conversation,
    owners: &OwnerIndex,
    ctx: &ExportCtx<'_>,
) -> ConversationRecord {
    let (client, evidence) = conv.decide_client(key);
    let server = 1 - client;
    let news = conv.take_news();
    let (c2s, s2c) = (news[client], news[server]);
    let endpoint = |side: usize| {
        let process = conv.owners.get(side).map(|a| {
            let p = &a.identity().process;
            let exe = owners.exe_of(p.pid, a.since_ns());
            ProcessAttribution::new(a.identity(), exe, ctx.lookup)
        });
        let mut end = Endpoint::new(key.ends[side], process);
        if let Some(n) = conv.nat().filter(|n| n.translated(side)) {
            end.nat_addr = Some(n.seen_as[side].0.to_string());
            end.nat_port = Some(n.seen_as[side].1);
        }
        end
    };
    let mut ifindexes: Vec<u32> = conv.entries.iter().map(|e| e.ifindex).collect();
    ifindexes.sort_unstable();
    ifindexes.dedup();
    let wall = |mono: u64| i128::from(mono) + ctx.offset;
    ConversationRecord {
        ts: ctx.ts.clone(),
        ts_unix_ns: clamp_i64(wall(ctx.now_ns)),
        interval_ms: ctx.interval_ms,
        host: ctx.host.to_owned(),
        proto: proto_name(key.proto),
        client: endpoint(client),
        server: endpoint(server),
        client_evidence: evidence.as_str().to_owned(),
        bytes_c2s: c2s.bytes,
        bytes_s2c: s2c.bytes,
        packets_c2s: c2s.packets,
        packets_s2c: s2c.packets,
        first_seen: format_rfc3339(wall(conv.first_seen_ns)),
        first_seen_unix_ns: clamp_i64(wall(conv.first_seen_ns)),
        last_seen: format_rfc3339(wall(conv.last_seen_ns)),
        last_seen_unix_ns: clamp_i64(wall(conv.last_seen_ns)),
        duration_ms: conv.last_seen_ns.saturating_sub(conv.first_seen_ns) / 1_000_000,
        tcp_flags: conv.tcp_flags,
        tcp_flags_text: tcp_flags_text(conv.tcp_flags),
        ifaces: ifindexes
            .into_iter()
            .map(|i| ctx.lookup.iface_name(i).unwrap_or_else(|| format!("if{i}")))
            .collect(),
        nat: conv.nat().map(|n| n.kind().to_owned()),
        signals: Default::default(),
    }
}
