//! ctnetlink messages (`linux/netfilter/nfnetlink_conntrack.h`) -> NAT
//! mappings. Pure: bytes in, domain types out; every length is checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowlens_correlator::types::{FlowTuple, NatEvent, NatMapping};

/// `struct nlmsghdr` length.
pub const NLMSG_HDR: usize = 16;
/// `NLMSG_ERROR`.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`.
pub const NLMSG_DONE: u16 = 3;
/// `NFNL_SUBSYS_CTNETLINK << 8`.
pub const SUBSYS_CTNETLINK: u16 = 1 << 8;
/// `IPCTNL_MSG_CT_NEW`.
pub const MSG_CT_NEW: u16 = 0;
/// `IPCTNL_MSG_CT_GET`.
pub const MSG_CT_GET: u16 = 1;
/// `IPCTNL_MSG_CT_DELETE`.
pub const MSG_CT_DELETE: u16 = 2;

const NFGENMSG: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// One netlink message of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A conntrack entry: its type (`MSG_CT_*`, subsystem stripped) and payload after the nfgenmsg.
    Conntrack { kind: u16, attrs: &'a [u8] },
    /// End of a dump.
    Done,
    /// An error (errno, positive) or an acknowledgement (0).
    Error(i32),
    /// Another type.
    Other(u16),
}

/// Why a buffer or a message could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A length field points outside the buffer.
    #[error("truncated netlink message")]
    Truncated,
    /// A tuple lacks its addresses or protocol.
    #[error("conntrack tuple without addresses or protocol")]
    IncompleteTuple,
}

/// Splits a receive buffer into its messages.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Result<Message<'_>, ParseError>> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off >= buf.len() {
            return None;
        }
        let rest = &buf[off..];
        let Some(hdr) = rest.get(..NLMSG_HDR) else {
            off = buf.len();
            return Some(Err(ParseError::Truncated));
        };
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let ty = u16::from_ne_bytes([hdr[4], hdr[5]]);
        if len < NLMSG_HDR || len > rest.len() {
            off = buf.len();
            return Some(Err(ParseError::Truncated));
        }
        let body = &rest[NLMSG_HDR..len];
        off += align4(len);
        Some(Ok(match ty {
            NLMSG_DONE => Message::Done,
            NLMSG_ERROR => {
                let errno = body
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                Message::Error(-errno)
            }
            t if t & 0xff00 == SUBSYS_CTNETLINK => match body.get(NFGENMSG..) {
                Some(attrs) => Message::Conntrack {
                    kind: t & 0xff,
                    attrs,
                },
                None => return Some(Err(ParseError::Truncated)),
            },
            t => Message::Other(t),
        }))
    })
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes of a nest (or of a message's payload): (type, payload).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), ParseError>> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            buf = &[];
            return Some(Err(ParseError::Truncated));
        }
        let payload = &buf[4..len];
        buf = buf.get(align4(len)..).unwrap_or(&[]);
        Some(Ok((ty, payload)))
    })
}

fn be16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

fn tuple(nest: &[u8]) -> Result<FlowTuple, ParseError> {
    let (mut src, mut dst, mut proto) = (None, None, None);
    let (mut sport, mut dport, mut icmp_id) = (0u16, 0u16, None);
    for a in attrs(nest) {
        let (ty, p) = a?;
        match ty {
            CTA_TUPLE_IP => {
                for a in attrs(p) {
                    let (ty, p) = a?;
                    let v4 = || {
                        <[u8; 4]>::try_from(p)
                            .ok()
                            .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
                    };
                    let v6 = || {
                        <[u8; 16]>::try_from(p)
                            .ok()
                            .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
                    };
                    match ty {
                        CTA_IP_V4_SRC => src = v4(),
                        CTA_IP_V4_DST => dst = v4(),
                        CTA_IP_V6_SRC => src = v6(),
                        CTA_IP_V6_DST => dst = v6(),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for a in attrs(p) {
                    let (ty, p) = a?;
                    match ty {
                        CTA_PROTO_NUM => proto = p.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = be16(p).unwrap_or(0),
                        CTA_PROTO_DST_PORT => dport = be16(p).unwrap_or(0),
                        CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => icmp_id = be16(p),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let (Some(src), Some(dst), Some(proto)) = (src, dst, proto) else {
        return Err(ParseError::IncompleteTuple);
    };
    if proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6 {
        // flowlens keys ICMP echo by its identifier on both ends.
        let id = icmp_id.unwrap_or(0);
        (sport, dport) = (id, id);
    }
    Ok(FlowTuple::new(proto, (src, sport), (dst, dport)))
}

/// The mapping of a conntrack message's payload (both tuples).
pub fn mapping(payload: &[u8]) -> Result<NatMapping, ParseError> {
    let (mut original, mut reply) = (None, None);
    for a in attrs(payload) {
        let (ty, p) = a?;
        match ty {
            CTA_TUPLE_ORIG => original = Some(tuple(p)?),
            CTA_TUPLE_REPLY => reply = Some(tuple(p)?),
            _ => {}
        }
    }
    match (original, reply) {
        (Some(original), Some(reply)) => Ok(NatMapping { original, reply }),
        _ => Err(ParseError::IncompleteTuple),
    }
}

/// A conntrack message as a NAT event: `None` when nothing was translated
/// (or the message is neither a new entry nor a deletion).
pub fn nat_event(kind: u16, payload: &[u8]) -> Result<Option<NatEvent>, ParseError> {
    let m = mapping(payload)?;
    if !m.is_translated() {
        return Ok(None);
    }
    Ok(match kind {
        MSG_CT_NEW => Some(NatEvent::New(m)),
        MSG_CT_DELETE => Some(NatEvent::Destroy(m)),
        _ => None,
    })
}

/// Builds a ctnetlink message (tests, and the dump request): header, nfgenmsg, body.
pub fn build(ty: u16, flags: u16, seq: u32, family: u8, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDR + NFGENMSG + body.len();
    let mut m = Vec::with_capacity(align4(len));
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, 0, 0, 0]);
    m.extend_from_slice(body);
    m.resize(align4(len), 0);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(payload);
        a.resize(align4(a.len()), 0);
        a
    }

    fn nest(ty: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(ty | 0x8000, &parts.concat())
    }

    fn tuple_attr(ty: u16, src: [u8; 4], dst: [u8; 4], proto: u8, sp: u16, dp: u16) -> Vec<u8> {
        nest(
            ty,
            &[
                nest(
                    CTA_TUPLE_IP,
                    &[attr(CTA_IP_V4_SRC, &src), attr(CTA_IP_V4_DST, &dst)],
                ),
                nest(
                    CTA_TUPLE_PROTO,
                    &[
                        attr(CTA_PROTO_NUM, &[proto]),
                        attr(CTA_PROTO_SRC_PORT, &sp.to_be_bytes()),
                        attr(CTA_PROTO_DST_PORT, &dp.to_be_bytes()),
                    ],
                ),
            ],
        )
    }

    fn masquerade(kind: u16) -> Vec<u8> {
        let body = [
            tuple_attr(CTA_TUPLE_ORIG, [172, 17, 0, 2], [10, 9, 0, 2], 6, 40000, 80),
            tuple_attr(
                CTA_TUPLE_REPLY,
                [10, 9, 0, 2],
                [192, 168, 1, 10],
                6,
                80,
                61000,
            ),
            attr(3, &0x1b8u32.to_be_bytes()),
        ]
        .concat();
        build(SUBSYS_CTNETLINK | kind, 0, 0, 2, &body)
    }

    #[test]
    fn new_and_destroyed_translations_are_decoded() {
        let buf = [masquerade(MSG_CT_NEW), masquerade(MSG_CT_DELETE)].concat();
        let events: Vec<NatEvent> = messages(&buf)
            .map(|m| match m.expect("message") {
                Message::Conntrack { kind, attrs } => nat_event(kind, attrs)
                    .expect("decodes")
                    .expect("translated"),
                other => panic!("{other:?}"),
            })
            .collect();
        let m = NatMapping {
            original: FlowTuple::new(
                6,
                ([172, 17, 0, 2].into(), 40000),
                ([10, 9, 0, 2].into(), 80),
            ),
            reply: FlowTuple::new(
                6,
                ([10, 9, 0, 2].into(), 80),
                ([192, 168, 1, 10].into(), 61000),
            ),
        };
        assert_eq!(events, [NatEvent::New(m), NatEvent::Destroy(m)]);
    }

    #[test]
    fn untranslated_entries_and_bad_lengths() {
        let plain = [
            tuple_attr(CTA_TUPLE_ORIG, [10, 0, 0, 1], [10, 0, 0, 2], 17, 5000, 53),
            tuple_attr(CTA_TUPLE_REPLY, [10, 0, 0, 2], [10, 0, 0, 1], 17, 53, 5000),
        ]
        .concat();
        assert_eq!(nat_event(MSG_CT_NEW, &plain), Ok(None));
        let mut cut = masquerade(MSG_CT_NEW);
        cut.truncate(40);
        assert_eq!(messages(&cut).next(), Some(Err(ParseError::Truncated)));
        let mut bad_attr = masquerade(MSG_CT_NEW);
        bad_attr[20] = 0xff; // first attribute claims 255+ bytes
        let Some(Ok(Message::Conntrack { kind, attrs })) = messages(&bad_attr).next() else {
            panic!("header is fine");
        };
        assert_eq!(nat_event(kind, attrs), Err(ParseError::Truncated));
        let orig_only = tuple_attr(CTA_TUPLE_ORIG, [10, 0, 0, 1], [10, 0, 0, 2], 6, 1, 2);
        assert_eq!(mapping(&orig_only), Err(ParseError::IncompleteTuple));
    }

    #[test]
    fn done_and_errors() {
        let mut done = build(NLMSG_DONE, 0, 1, 0, &[]);
        let mut err = build(NLMSG_ERROR, 0, 1, 0, &[]);
        err[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        done.extend(err);
        let got: Vec<_> = messages(&done).collect();
        assert_eq!(got, [Ok(Message::Done), Ok(Message::Error(1))]);
    }
}
