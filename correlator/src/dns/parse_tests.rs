//! Golden messages (as a resolver and dnsmasq write them: compressed names,
//! CNAME chains, several answers) and hostile ones: compression loops,
//! forward pointers, oversized labels and names, counts that lie, records
//! whose data leaves the message, every truncation of a valid message, and
//! random bytes.

use super::*;

/// Builds messages byte by byte (names uncompressed unless a pointer is written).
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn header(id: u16, flags: u16, qd: u16, an: u16) -> Self {
        let mut m = Msg::default();
        for v in [id, flags, qd, an, 0, 0] {
            m.0.extend_from_slice(&v.to_be_bytes());
        }
        m
    }
    fn name(mut self, name: &str) -> Self {
        for label in name.split('.').filter(|l| !l.is_empty()) {
            self.0.push(label.len() as u8);
            self.0.extend_from_slice(label.as_bytes());
        }
        self.0.push(0);
        self
    }
    /// Labels, then a pointer to `to` instead of the terminating zero.
    fn name_ptr(mut self, labels: &str, to: u16) -> Self {
        for label in labels.split('.').filter(|l| !l.is_empty()) {
            self.0.push(label.len() as u8);
            self.0.extend_from_slice(label.as_bytes());
        }
        self.0.extend_from_slice(&(0xc000 | to).to_be_bytes());
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn question(self, qtype: u16) -> Self {
        self.u16(qtype).u16(1)
    }
    /// Record header after its name: type, class IN, ttl, rdlength.
    fn rr(self, rtype: u16, ttl: u32, rdlen: u16) -> Self {
        self.u16(rtype).u16(1).u32(ttl).u16(rdlen)
    }
}

const RESPONSE: u16 = 0x8180; // QR, RD, RA, NOERROR
const QUERY: u16 = 0x0100; // RD

/// www.example.com A? -> CNAME edge.example.net (ttl 300) -> A 93.184.216.34 (ttl 60),
/// A 93.184.216.35; names compressed the way servers do it.
fn cname_chain() -> Vec<u8> {
    let m = Msg::header(0x1234, RESPONSE, 1, 3).name("www.example.com");
    let q = m.0.len();
    let m = m.question(1);
    // answer 1: owner = pointer to the question name (offset 12)
    let m = m.name_ptr("", 12).rr(rtype::CNAME, 300, 0);
    let rdlen_at = m.0.len() - 2;
    let start = m.0.len();
    let mut m = m.name("edge.example.net");
    let rdlen = (m.0.len() - start) as u16;
    m.0[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    assert_eq!(q, 12 + 17);
    let target = start as u16;
    let m = m
        .name_ptr("", target)
        .rr(rtype::A, 60, 4)
        .raw(&[93, 184, 216, 34]);
    m.name_ptr("", target)
        .rr(rtype::A, 600, 4)
        .raw(&[93, 184, 216, 35])
        .0
}

#[test]
fn a_cname_chain_resolves_to_the_name_asked() {
    let m = parse_message(&cname_chain()).expect("parses");
    assert_eq!(
        (m.id, m.response, m.rcode, m.complete),
        (0x1234, true, 0, true)
    );
    assert_eq!(
        m.question,
        Some(Question {
            name: "www.example.com".into(),
            qtype: 1
        })
    );
    assert_eq!(m.answers.len(), 3);
    assert_eq!(m.answers[0].name, "www.example.com");
    assert_eq!(
        m.answers[0].data,
        AnswerData::Cname("edge.example.net".into())
    );
    assert_eq!(m.answers[1].name, "edge.example.net");
    let addrs = m.resolved_addresses();
    assert_eq!(
        addrs,
        vec![
            ("93.184.216.34".parse().unwrap(), 60),
            // the chain's CNAME lives 300 s: the smaller TTL wins
            ("93.184.216.35".parse().unwrap(), 300),
        ]
    );
}

#[test]
fn aaaa_and_uppercase_names() {
    let b = Msg::header(7, RESPONSE, 1, 1)
        .name("Host.LAN")
        .question(28)
        .name_ptr("", 12)
        .rr(rtype::AAAA, 30, 16)
        .raw(&"fd00::5".parse::<Ipv6Addr>().unwrap().octets())
        .0;
    let m = parse_message(&b).expect("parses");
    assert_eq!(
        m.question.as_ref().map(|q| q.name.as_str()),
        Some("host.lan")
    );
    assert_eq!(
        m.resolved_addresses(),
        vec![("fd00::5".parse().unwrap(), 30)]
    );
}

#[test]
fn a_query_and_error_responses() {
    let q = Msg::header(9, QUERY, 1, 0).name("nope.test").question(1).0;
    let m = parse_message(&q).expect("query");
    assert!(!m.response && m.complete && m.answers.is_empty());
    let nx = Msg::header(9, 0x8183, 1, 0).name("nope.test").question(1).0;
    let m = parse_message(&nx).expect("nxdomain");
    assert_eq!(m.rcode, rcode::NXDOMAIN);
    assert!(m.resolved_addresses().is_empty());
    let sf = Msg::header(10, 0x8182, 1, 0).name("x.test").question(1).0;
    assert_eq!(parse_message(&sf).expect("servfail").rcode, rcode::SERVFAIL);
}

#[test]
fn records_about_names_not_asked_are_ignored() {
    // Asked a.test; the server also "answers" bank.test and an unrelated CNAME.
    let b = Msg::header(1, RESPONSE, 1, 3)
        .name("a.test")
        .question(1)
        .name("bank.test")
        .rr(rtype::A, 60, 4)
        .raw(&[10, 9, 9, 9])
        .name("other.test")
        .rr(rtype::CNAME, 60, 8)
        .name("a.test")
        .name("a.test")
        .rr(rtype::A, 60, 4)
        .raw(&[10, 1, 1, 1])
        .0;
    let m = parse_message(&b).expect("parses");
    assert_eq!(m.answers.len(), 3);
    assert_eq!(
        m.resolved_addresses(),
        vec![("10.1.1.1".parse().unwrap(), 60)]
    );
}

#[test]
fn cnames_in_any_order_and_a_cname_loop() {
    // a -> b -> c, listed c's A first, then b->c, then a->b; plus c -> a (a loop).
    let b = Msg::header(1, RESPONSE, 1, 4)
        .name("a.t")
        .question(1)
        .name("c.t")
        .rr(rtype::A, 60, 4)
        .raw(&[10, 0, 0, 3])
        .name("b.t")
        .rr(rtype::CNAME, 60, 5)
        .name("c.t")
        .name("a.t")
        .rr(rtype::CNAME, 60, 5)
        .name("b.t")
        .name("c.t")
        .rr(rtype::CNAME, 60, 5)
        .name("a.t")
        .0;
    let m = parse_message(&b).expect("parses");
    assert_eq!(
        m.resolved_addresses(),
        vec![("10.0.0.3".parse().unwrap(), 60)]
    );
}

#[test]
fn compression_loops_and_forward_pointers_are_refused() {
    // The question name is a pointer to itself.
    let mut b = Msg::header(1, RESPONSE, 1, 0).0;
    b.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(
        parse_message(&b),
        Err(DnsError::Name(NameError::BadPointer))
    );
    // A forward pointer.
    let mut b = Msg::header(1, RESPONSE, 1, 0).0;
    b.extend_from_slice(&[0xc0, 20, 0, 1, 0, 1, 0, 0, 1, b'a', 0]);
    assert_eq!(
        parse_message(&b),
        Err(DnsError::Name(NameError::BadPointer))
    );
    // Two names pointing at each other: "x" + ptr(->the other), the other "y" + ptr(->first).
    let b = Msg::header(1, RESPONSE, 1, 1)
        .name("q.t")
        .question(1)
        .raw(&[1, b'x', 0xc0, 33]) // at 21: x, then a pointer to 33 (after it)
        .rr(rtype::A, 1, 4)
        .raw(&[1, 2, 3, 4])
        .raw(&[1, b'y', 0xc0, 21])
        .0;
    let m = parse_message(&b).expect("header and question read");
    assert!(m.answers.is_empty() && !m.complete);
    // Label, then a pointer back to that label: the floor rule stops it at once.
    let mut b = Msg::header(1, RESPONSE, 1, 0).0;
    b.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(
        parse_message(&b),
        Err(DnsError::Name(NameError::BadPointer))
    );
}

#[test]
fn long_pointer_chains_are_cut_off() {
    // 20 names each "a" + pointer to the previous one: the last has 19 pointers.
    let mut b = Msg::header(1, RESPONSE, 1, 20).name("q.t").question(1).0;
    let mut prev = 12u16;
    let mut names = Vec::new();
    for _ in 0..20 {
        let at = b.len() as u16;
        b.extend_from_slice(&[1, b'a']);
        b.extend_from_slice(&(0xc000 | prev).to_be_bytes());
        b.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 10, 0, 0, 1]);
        names.push(at);
        prev = at;
    }
    let m = parse_message(&b).expect("parses");
    // Names with up to MAX_POINTERS pointers are read; the next one is not.
    assert_eq!(m.answers.len(), MAX_POINTERS);
    assert!(!m.complete);
    assert_eq!(
        m.answers[0].name, "a.q.t",
        "one pointer: the label, then the question's name"
    );
}

#[test]
fn oversized_labels_and_names() {
    // Length byte 64 has the 0x40 type bits: not a label.
    let mut b = Msg::header(1, QUERY, 1, 0).0;
    b.push(64);
    b.extend_from_slice(&[b'a'; 64]);
    b.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(parse_message(&b), Err(DnsError::Name(NameError::LabelType)));
    // 0x80 too.
    let mut b = Msg::header(1, QUERY, 1, 0).0;
    b.extend_from_slice(&[0x80, 0, 0, 1, 0, 1]);
    assert_eq!(parse_message(&b), Err(DnsError::Name(NameError::LabelType)));
    // Five 63-byte labels: 320 bytes > 255.
    let mut b = Msg::header(1, QUERY, 1, 0).0;
    for _ in 0..5 {
        b.push(63);
        b.extend_from_slice(&[b'b'; 63]);
    }
    b.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(parse_message(&b), Err(DnsError::Name(NameError::TooLong)));
    // Exactly 255 bytes on the wire: 3 x 63 + 1 x 61 labels + root.
    let mut b = Msg::header(1, QUERY, 1, 0).0;
    for len in [63u8, 63, 63, 61] {
        b.push(len);
        b.extend(std::iter::repeat_n(b'c', usize::from(len)));
    }
    b.extend_from_slice(&[0, 0, 1, 0, 1]);
    let m = parse_message(&b).expect("255 bytes is allowed");
    assert_eq!(m.question.map(|q| q.name.len()), Some(63 * 3 + 61 + 3));
}

#[test]
fn counts_that_lie() {
    // Says 5 answers, has 1; says 3 questions, has 1 (then answers are read as questions: cut).
    let b = Msg::header(1, RESPONSE, 1, 5)
        .name("a.t")
        .question(1)
        .name_ptr("", 12)
        .rr(rtype::A, 60, 4)
        .raw(&[10, 0, 0, 1])
        .0;
    let m = parse_message(&b).expect("parses");
    assert_eq!(m.answers.len(), 1);
    assert!(!m.complete);
    assert_eq!(
        m.resolved_addresses().len(),
        1,
        "what was read still counts"
    );
    let b = Msg::header(1, RESPONSE, 3, 0).name("a.t").question(1).0;
    assert!(parse_message(&b).is_err());
    // 65535 answers claimed, none there.
    let b = Msg::header(1, RESPONSE, 1, 0xffff)
        .name("a.t")
        .question(1)
        .0;
    let m = parse_message(&b).expect("parses");
    assert!(m.answers.is_empty() && !m.complete);
    // More than MAX_ANSWERS real answers: the rest is not read.
    let mut m = Msg::header(1, RESPONSE, 1, 100).name("a.t").question(1);
    for i in 0..100u8 {
        m = m.name_ptr("", 12).rr(rtype::A, 5, 4).raw(&[10, 0, 1, i]);
    }
    let m = parse_message(&m.0).expect("parses");
    assert_eq!(m.answers.len(), MAX_ANSWERS);
    assert!(!m.complete);
}

#[test]
fn record_data_must_fit() {
    // rdlength 200 with 4 bytes left.
    let b = Msg::header(1, RESPONSE, 1, 1)
        .name("a.t")
        .question(1)
        .name_ptr("", 12)
        .rr(rtype::A, 60, 200)
        .raw(&[10, 0, 0, 1])
        .0;
    let m = parse_message(&b).expect("parses");
    assert!(m.answers.is_empty() && !m.complete);
    // An A record of 5 bytes, an AAAA of 4.
    for (t, len) in [(rtype::A, 5u16), (rtype::AAAA, 4)] {
        let b = Msg::header(1, RESPONSE, 1, 1)
            .name("a.t")
            .question(1)
            .name_ptr("", 12)
            .rr(t, 60, len)
            .raw(&vec![1; usize::from(len)])
            .0;
        let m = parse_message(&b).expect("parses");
        assert!(m.answers.is_empty(), "type {t} with {len} bytes");
    }
    // A CNAME whose name runs past its rdlength.
    let b = Msg::header(1, RESPONSE, 1, 1)
        .name("a.t")
        .question(1)
        .name_ptr("", 12)
        .rr(rtype::CNAME, 60, 2)
        .name("long.name.t")
        .0;
    let m = parse_message(&b).expect("parses");
    assert!(m.answers.is_empty());
}

#[test]
fn every_truncation_of_a_valid_message_is_safe() {
    let full = cname_chain();
    let whole = parse_message(&full).expect("whole");
    for cut in 0..full.len() {
        match parse_message(&full[..cut]) {
            Ok(m) => {
                assert!(!m.complete, "cut at {cut} cannot be complete");
                assert_eq!(m.question, whole.question);
                // The answers read are a prefix of the whole message's.
                assert_eq!(m.answers[..], whole.answers[..m.answers.len()]);
            }
            Err(_) => assert!(cut < 12 + 21, "cut at {cut} after the question must parse"),
        }
    }
}

#[test]
fn names_are_safe_to_print() {
    let b = Msg::header(1, QUERY, 1, 0)
        .raw(&[5, b'a', b'.', b' ', b'\\', 0x07, 2, 0xff, b'Z', 0])
        .question(1)
        .0;
    let m = parse_message(&b).expect("parses");
    assert_eq!(
        m.question.map(|q| q.name),
        Some("a\\.\\032\\\\\\007.\\255z".to_owned())
    );
    let root = Msg::header(1, QUERY, 1, 0).raw(&[0]).question(2).0;
    assert_eq!(
        parse_message(&root).expect("root").question.map(|q| q.name),
        Some(".".to_owned())
    );
}

#[test]
fn tcp_framing() {
    let a = Msg::header(1, QUERY, 1, 0).name("a.t").question(1).0;
    let b = Msg::header(2, QUERY, 1, 0).name("b.t").question(28).0;
    let mut seg = Vec::new();
    for m in [&a, &b] {
        seg.extend_from_slice(&(m.len() as u16).to_be_bytes());
        seg.extend_from_slice(m);
    }
    let msgs: Vec<&[u8]> = tcp_messages(&seg).collect();
    assert_eq!(msgs, vec![&a[..], &b[..]]);
    // Cut in the second message: it comes cut.
    let msgs: Vec<&[u8]> = tcp_messages(&seg[..seg.len() - 3]).collect();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].len(), b.len() - 3);
    assert!(tcp_messages(&[0]).next().is_none());
    assert!(tcp_messages(&[0, 0, 1, 2]).next().is_none());
}

/// A deterministic generator (xorshift) for the random inputs below.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn random_bytes_and_mutations_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let base = cname_chain();
    for i in 0..50_000 {
        let msg: Vec<u8> = if i % 2 == 0 {
            let len = (rng(&mut seed) % 300) as usize;
            (0..len).map(|_| rng(&mut seed) as u8).collect()
        } else {
            // a valid message with a few bytes changed: pointers and counts go wild
            let mut m = base.clone();
            for _ in 0..1 + rng(&mut seed) % 4 {
                let at = (rng(&mut seed) as usize) % m.len();
                m[at] = rng(&mut seed) as u8;
            }
            m
        };
        if let Ok(m) = parse_message(&msg) {
            assert!(m.answers.len() <= MAX_ANSWERS);
            for a in &m.answers {
                assert!(a.name.len() < 4 * 256);
                assert!(!a.name.chars().any(|c| c.is_control()));
            }
            let _ = m.resolved_addresses();
        }
        for part in tcp_messages(&msg) {
            let _ = parse_message(part);
        }
    }
}
