//! The DNS wire format (RFC 1035), read defensively: every message comes
//! from the network, so nothing in it is trusted.
//!
//! - Names: labels of at most 63 bytes, at most 255 bytes in all, compression
//!   pointers only backwards (to before where the name, or the part reached
//!   by the last pointer, began: each jump lands lower than every byte read
//!   so far, so no loop is possible) and at most [`MAX_POINTERS`] of them per
//!   name; the extended label types (0x40, 0x80) are errors.
//! - Counts that lie: records are read while the message has bytes; a count
//!   larger than what is there ends the reading (`complete` is false), never
//!   a panic; at most [`MAX_ANSWERS`] answers are kept.
//! - Record data must lie inside the message; an A record is 4 bytes, AAAA 16.
//! - Only the first question is kept (the others are skipped over) and the
//!   authority and additional sections are not read.
//!
//! Names are returned in lower case, in presentation form: a byte outside
//! printable ASCII, a space, a dot or a backslash inside a label is written
//! `\DDD` or `\.`/`\\`, so a name never carries a control character to a log,
//! a terminal or a line-protocol field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Compression pointers followed per name at most.
pub const MAX_POINTERS: usize = 16;
/// Answers kept per message at most.
pub const MAX_ANSWERS: usize = 64;
/// Longest name on the wire (RFC 1035 2.3.4).
const MAX_NAME_WIRE: usize = 255;
/// Longest label.
const MAX_LABEL: usize = 63;
/// DNS header length.
const HEADER: usize = 12;

/// Record types the parser interprets.
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Canonical name.
    pub const CNAME: u16 = 5;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
}

/// Response codes (RFC 1035 4.1.1, RFC 6895).
pub mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// Format error.
    pub const FORMERR: u8 = 1;
    /// Server failure.
    pub const SERVFAIL: u8 = 2;
    /// The name does not exist.
    pub const NXDOMAIN: u8 = 3;
    /// Not implemented.
    pub const NOTIMP: u8 = 4;
    /// Refused.
    pub const REFUSED: u8 = 5;
}

/// Why a message could not be read at all (a message whose header and
/// question were read is returned, possibly incomplete).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// Shorter than the 12-byte header.
    #[error("shorter than a DNS header")]
    Short,
    /// A name could not be read (cut, too long, a bad pointer or label type).
    #[error("bad name: {0}")]
    Name(NameError),
    /// The question is cut.
    #[error("question cut")]
    QuestionCut,
}

/// What is wrong with a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The message ends inside the name.
    #[error("cut")]
    Cut,
    /// Longer than 255 bytes.
    #[error("longer than 255 bytes")]
    TooLong,
    /// A pointer that does not point backwards (a loop or a forward jump).
    #[error("pointer not backwards")]
    BadPointer,
    /// More than [`MAX_POINTERS`] pointers.
    #[error("too many pointers")]
    TooManyPointers,
    /// A label type other than a plain label or a pointer (0x40, 0x80).
    #[error("unknown label type")]
    LabelType,
}

/// The first question of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// The name asked for (lower case, presentation form, no trailing dot; `.` for the root).
    pub name: String,
    /// The query type (1 = A, 28 = AAAA ...).
    pub qtype: u16,
}

/// What an answer record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// A canonical name.
    Cname(String),
    /// Another type, not interpreted.
    Other(u16),
}

/// One answer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The record's owner name.
    pub name: String,
    /// Seconds it may be cached.
    pub ttl: u32,
    /// Its data.
    pub data: AnswerData,
}

/// A parsed DNS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    /// Transaction id.
    pub id: u16,
    /// QR: a response.
    pub response: bool,
    /// OPCODE (0 = QUERY).
    pub opcode: u8,
    /// RCODE (see [`rcode`]).
    pub rcode: u8,
    /// TC: the server truncated the response (the client retries over TCP).
    pub truncated: bool,
    /// The first question, if the message has one.
    pub question: Option<Question>,
    /// The answers read (at most [`MAX_ANSWERS`]).
    pub answers: Vec<Answer>,
    /// Every answer the header counts was read (false: cut, lying counts, or more than kept).
    pub complete: bool,
}

/// A bounds-checked reader over the message.
struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u16(&mut self) -> Option<u16> {
        let b = self.msg.get(self.pos..self.pos + 2)?;
        self.pos += 2;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.msg.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.msg.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(b)
    }

    /// Reads a name at the current position (which moves past it, not past
    /// what its pointers point to).
    fn name(&mut self) -> Result<String, NameError> {
        let (name, end) = read_name_at(self.msg, self.pos)?;
        self.pos = end;
        Ok(name)
    }
}

/// Reads the name at `start`; returns it and the position right after it
/// (after its first pointer, if any).
fn read_name_at(msg: &[u8], start: usize) -> Result<(String, usize), NameError> {
    let mut out = String::new();
    let mut pos = start;
    // Where the part being read began: a pointer must land before it.
    let mut floor = start;
    let mut end = None;
    let mut pointers = 0;
    let mut wire_len = 0usize;
    loop {
        let len = *msg.get(pos).ok_or(NameError::Cut)?;
        match len & 0xc0 {
            0x00 => {
                let len = usize::from(len);
                if len == 0 {
                    wire_len += 1;
                    if wire_len > MAX_NAME_WIRE {
                        return Err(NameError::TooLong);
                    }
                    let after = end.unwrap_or(pos + 1);
                    if out.is_empty() {
                        out.push('.');
                    }
                    return Ok((out, after));
                }
                // len <= 63 by the mask above
                debug_assert!(len <= MAX_LABEL);
                wire_len += 1 + len;
                if wire_len > MAX_NAME_WIRE {
                    return Err(NameError::TooLong);
                }
                let label = msg.get(pos + 1..pos + 1 + len).ok_or(NameError::Cut)?;
                if !out.is_empty() {
                    out.push('.');
                }
                push_label(&mut out, label);
                pos += 1 + len;
            }
            0xc0 => {
                let lo = *msg.get(pos + 1).ok_or(NameError::Cut)?;
                let target = usize::from(len & 0x3f) << 8 | usize::from(lo);
                // Strictly below every byte read so far: pointers cannot loop.
                if target >= floor {
                    return Err(NameError::BadPointer);
                }
                floor = target;
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err(NameError::TooManyPointers);
                }
                if end.is_none() {
                    end = Some(pos + 2);
                }
                pos = target;
            }
            _ => return Err(NameError::LabelType),
        }
    }
}

/// Appends a label in presentation form, lower case.
fn push_label(out: &mut String, label: &[u8]) {
    for &b in label {
        match b {
            b'.' => out.push_str("\\."),
            b'\\' => out.push_str("\\\\"),
            0x21..=0x7e => out.push(char::from(b.to_ascii_lowercase())),
            _ => {
                out.push('\\');
                out.push(char::from(b'0' + b / 100));
                out.push(char::from(b'0' + b / 10 % 10));
                out.push(char::from(b'0' + b % 10));
            }
        }
    }
}

/// Parses one DNS message (UDP payload, or one TCP message without its
/// length prefix). The header and the first question must be readable;
/// answers are read as far as the message allows.
pub fn parse_message(msg: &[u8]) -> Result<DnsMessage, DnsError> {
    if msg.len() < HEADER {
        return Err(DnsError::Short);
    }
    let mut r = Reader { msg, pos: 0 };
    let id = r.u16().ok_or(DnsError::Short)?;
    let flags = r.u16().ok_or(DnsError::Short)?;
    let qdcount = r.u16().ok_or(DnsError::Short)?;
    let ancount = r.u16().ok_or(DnsError::Short)?;
    r.pos = HEADER;
    let mut m = DnsMessage {
        id,
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0x0f) as u8,
        rcode: (flags & 0x000f) as u8,
        truncated: flags & 0x0200 != 0,
        question: None,
        answers: Vec::new(),
        complete: false,
    };
    for i in 0..qdcount {
        let name = r.name().map_err(DnsError::Name)?;
        let qtype = r.u16().ok_or(DnsError::QuestionCut)?;
        r.u16().ok_or(DnsError::QuestionCut)?; // class
        if i == 0 {
            m.question = Some(Question { name, qtype });
        }
    }
    let mut read = 0u16;
    while read < ancount {
        if m.answers.len() >= MAX_ANSWERS {
            return Ok(m);
        }
        match read_answer(&mut r) {
            Some(Some(a)) => m.answers.push(a),
            Some(None) => {} // a record skipped (class not IN)
            None => return Ok(m),
        }
        read += 1;
    }
    m.complete = true;
    Ok(m)
}

/// One answer record; `None` when it cannot be read, `Some(None)` for a record of another class.
fn read_answer(r: &mut Reader<'_>) -> Option<Option<Answer>> {
    let name = r.name().ok()?;
    let rtype = r.u16()?;
    let class = r.u16()?;
    let ttl = r.u32()?;
    let rdlen = usize::from(r.u16()?);
    let rdata_at = r.pos;
    let rdata = r.bytes(rdlen)?;
    // Class IN (1); mDNS sets the top bit (cache flush).
    if class & 0x7fff != 1 {
        return Some(None);
    }
    let data = match rtype {
        rtype::A => AnswerData::A(Ipv4Addr::from(<[u8; 4]>::try_from(rdata).ok()?)),
        rtype::AAAA => AnswerData::Aaaa(Ipv6Addr::from(<[u8; 16]>::try_from(rdata).ok()?)),
        rtype::CNAME => {
            // The target may use pointers into the message, but must itself end inside the rdata.
            let (target, end) = read_name_at(r.msg, rdata_at).ok()?;
            if end > rdata_at + rdlen {
                return None;
            }
            AnswerData::Cname(target)
        }
        other => AnswerData::Other(other),
    };
    Some(Some(Answer { name, ttl, data }))
}

/// Splits the payload of a TCP segment into DNS messages (each prefixed by
/// its 2-byte length, RFC 1035 4.2.2). A message the segment does not hold
/// whole comes last, cut; a segment that starts inside a message yields
/// garbage that [`parse_message`] refuses.
pub fn tcp_messages(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = payload;
    std::iter::from_fn(move || {
        if rest.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if len == 0 {
            rest = &[];
            return None;
        }
        let body = &rest[2..];
        let (msg, next) = body.split_at(len.min(body.len()));
        rest = next;
        Some(msg)
    })
}

impl DnsMessage {
    /// The addresses this response gives for the name asked: A/AAAA records
    /// whose owner is the question's name or a name it leads to through the
    /// response's CNAME records. Each with the smallest TTL along its chain.
    /// Records about names the question does not lead to are ignored (a
    /// server cannot name addresses nobody asked about).
    pub fn resolved_addresses(&self) -> Vec<(IpAddr, u32)> {
        let Some(q) = &self.question else {
            return Vec::new();
        };
        if !self.response || self.rcode != rcode::NOERROR {
            return Vec::new();
        }
        // (name, smallest TTL of the CNAMEs that lead to it)
        let mut names: Vec<(&str, u32)> = vec![(q.name.as_str(), u32::MAX)];
        // CNAMEs may come in any order: follow until nothing new (bounded by the answers).
        for _ in 0..self.answers.len().min(MAX_POINTERS) {
            let mut grew = false;
            for a in &self.answers {
                let AnswerData::Cname(target) = &a.data else {
                    continue;
                };
                let Some(&(_, ttl)) = names.iter().find(|(n, _)| *n == a.name) else {
                    continue;
                };
                if !names.iter().any(|(n, _)| n == target) {
                    names.push((target.as_str(), ttl.min(a.ttl)));
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        let mut out = Vec::new();
        for a in &self.answers {
            let ip = match a.data {
                AnswerData::A(v4) => IpAddr::V4(v4),
                AnswerData::Aaaa(v6) => IpAddr::V6(v6),
                _ => continue,
            };
            if let Some(&(_, chain)) = names.iter().find(|(n, _)| *n == a.name) {
                out.push((crate::types::normalize_ip(ip), chain.min(a.ttl)));
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
