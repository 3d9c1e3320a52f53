//! Reader tests over crafted pcap and pcapng bytes.
#![allow(clippy::unwrap_used)]

use super::reader::*;

fn w32(v: &mut Vec<u8>, x: u32, big: bool) {
    v.extend_from_slice(&if big {
        x.to_be_bytes()
    } else {
        x.to_le_bytes()
    });
}

fn w16(v: &mut Vec<u8>, x: u16, big: bool) {
    v.extend_from_slice(&if big {
        x.to_be_bytes()
    } else {
        x.to_le_bytes()
    });
}

/// A pcap file; packets are (sec, frac, data).
pub(super) fn pcap(big: bool, nanos: bool, link: u32, pkts: &[(u32, u32, &[u8])]) -> Vec<u8> {
    let mut v = Vec::new();
    w32(&mut v, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }, big);
    w16(&mut v, 2, big);
    w16(&mut v, 4, big);
    w32(&mut v, 0, big);
    w32(&mut v, 0, big);
    w32(&mut v, 65535, big);
    w32(&mut v, link, big);
    for (s, f, d) in pkts {
        w32(&mut v, *s, big);
        w32(&mut v, *f, big);
        w32(&mut v, d.len() as u32, big);
        w32(&mut v, d.len() as u32 + 10, big);
        v.extend_from_slice(d);
    }
    v
}

fn block(big: bool, kind: u32, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let len = body.len() as u32 + 12;
    let mut v = Vec::new();
    w32(&mut v, kind, big);
    w32(&mut v, len, big);
    v.extend_from_slice(&body);
    w32(&mut v, len, big);
    v
}

fn shb(big: bool) -> Vec<u8> {
    let mut b = Vec::new();
    w32(&mut b, 0x1a2b_3c4d, big);
    w16(&mut b, 1, big);
    w16(&mut b, 0, big);
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    block(big, 0x0a0d_0d0a, &b)
}

fn idb(big: bool, link: u16, tsresol: Option<u8>, name: Option<&str>) -> Vec<u8> {
    let mut b = Vec::new();
    w16(&mut b, link, big);
    w16(&mut b, 0, big);
    w32(&mut b, 0, big);
    if let Some(r) = tsresol {
        w16(&mut b, 9, big);
        w16(&mut b, 1, big);
        b.extend_from_slice(&[r, 0, 0, 0]);
    }
    if let Some(n) = name {
        w16(&mut b, 2, big);
        w16(&mut b, n.len() as u16, big);
        b.extend_from_slice(n.as_bytes());
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
    }
    w16(&mut b, 0, big);
    w16(&mut b, 0, big);
    block(big, 1, &b)
}

fn epb(big: bool, iface: u32, ts: u64, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    w32(&mut b, iface, big);
    w32(&mut b, (ts >> 32) as u32, big);
    w32(&mut b, ts as u32, big);
    w32(&mut b, data.len() as u32, big);
    w32(&mut b, data.len() as u32, big);
    b.extend_from_slice(data);
    block(big, 6, &b)
}

type Row = (u32, Option<u32>, Option<u64>, u32, Vec<u8>);

fn rows<R: std::io::Read>(mut r: CaptureReader<R>) -> Result<Vec<Row>, ReadError> {
    let mut out = Vec::new();
    while let Some(f) = r.next_frame()? {
        out.push((f.iface, f.link_type, f.ts_ns, f.orig_len, f.data.to_vec()));
    }
    Ok(out)
}

/// `bytes` in a file of its own (removed on drop).
struct TempCapture(std::path::PathBuf);

impl TempCapture {
    fn new(bytes: &[u8]) -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!(
            "flowlens-reader-test-{}-{n}.pcap",
            std::process::id()
        ));
        std::fs::write(&p, bytes).expect("write the test capture");
        Self(p)
    }
}

impl Drop for TempCapture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Every frame of `bytes` read as a stream; the same file memory-mapped
/// must give the same frames, or the same error.
fn read_all(bytes: &[u8]) -> Result<Vec<Row>, ReadError> {
    let streamed = CaptureReader::new(bytes).and_then(rows);
    let file = TempCapture::new(bytes);
    let r = CaptureReader::open(std::fs::File::open(&file.0).expect("open"));
    assert_eq!(
        r.as_ref()
            .map(|r| r.is_mapped())
            .unwrap_or(!bytes.is_empty()),
        !bytes.is_empty(),
        "a non-empty regular file is mapped"
    );
    let mapped = r.and_then(rows);
    match (&streamed, &mapped) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "mapped and streamed frames differ"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "errors differ"),
        (a, b) => panic!("streamed {a:?}, mapped {b:?}"),
    }
    streamed
}

#[test]
fn a_mapped_file_that_grows_is_read_further() {
    let all = pcap(false, false, 1, &[(1, 0, b"first"), (2, 0, b"second")]);
    let first_len = 24 + 16 + 5;
    let file = TempCapture::new(&all[..first_len]);
    let mut r = CaptureReader::open(std::fs::File::open(&file.0).expect("open")).expect("open");
    assert!(r.is_mapped());
    assert_eq!(
        r.next_frame().expect("first").expect("a frame").data,
        b"first"
    );
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file.0)
            .expect("append");
        f.write_all(&all[first_len..]).expect("grow the file");
    }
    let second = r.next_frame().expect("second").expect("a frame");
    assert_eq!(
        (second.data, second.ts_ns),
        (&b"second"[..], Some(2_000_000_000))
    );
    assert!(r.next_frame().expect("end").is_none());
}

#[test]
fn pipes_are_read_as_streams() {
    let bytes = pcap(false, false, 1, &[(1, 0, b"piped")]);
    let mut child = std::process::Command::new("cat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cat");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&bytes).expect("write");
    });
    let out = child.stdout.take().expect("stdout");
    let file = std::fs::File::from(std::os::fd::OwnedFd::from(out));
    let r = CaptureReader::open(file).expect("open a pipe");
    assert!(!r.is_mapped());
    let rows = rows(r).expect("frames");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].4, b"piped");
    writer.join().expect("writer");
    let _ = child.wait();
}

#[test]
fn pcap_both_byte_orders_micro_and_nano() {
    for big in [false, true] {
        let us = read_all(&pcap(big, false, 1, &[(2, 5, b"abc"), (3, 0, b"")])).unwrap();
        assert_eq!(us.len(), 2);
        assert_eq!(
            us[0],
            (0, Some(1), Some(2_000_005_000), 13, b"abc".to_vec())
        );
        assert_eq!(us[1].2, Some(3_000_000_000));
        let ns = read_all(&pcap(big, true, 113, &[(2, 5, b"x")])).unwrap();
        assert_eq!(
            ns[0],
            (0, Some(113), Some(2_000_000_005), 11, b"x".to_vec())
        );
    }
}

#[test]
fn pcapng_interfaces_resolutions_unknown_blocks_and_sections() {
    for big in [false, true] {
        let mut f = shb(big);
        f.extend(idb(big, 1, None, Some("eth0")));
        f.extend(block(big, 0x0bad, b"custom block"));
        f.extend(idb(big, 276, Some(9), None));
        f.extend(idb(big, 101, Some(0x80 | 10), None));
        f.extend(epb(big, 0, 7, b"e0"));
        f.extend(epb(big, 1, 7, b"e1"));
        f.extend(epb(big, 2, 2048, b"e2"));
        f.extend(epb(big, 9, 1, b"nope"));
        // Simple packet block: interface 0, no timestamp.
        let mut spb = Vec::new();
        w32(&mut spb, 3, big);
        spb.extend_from_slice(b"spb");
        f.extend(block(big, 3, &spb));
        // A new section of the other byte order resets the interfaces.
        f.extend(shb(!big));
        f.extend(idb(!big, 228, None, None));
        f.extend(epb(!big, 0, 1, b"s2"));
        let mut r = CaptureReader::new(&f[..]).unwrap();
        let mut rows = Vec::new();
        while let Some(fr) = r.next_frame().unwrap() {
            rows.push((fr.iface, fr.link_type, fr.ts_ns, fr.data.to_vec()));
        }
        assert_eq!(
            rows,
            vec![
                (0, Some(1), Some(7_000), b"e0".to_vec()),
                (1, Some(276), Some(7), b"e1".to_vec()),
                (2, Some(101), Some(2_000_000_000), b"e2".to_vec()),
                (9, None, None, b"nope".to_vec()),
                (0, Some(1), None, b"spb".to_vec()),
                (0, Some(228), Some(1_000), b"s2".to_vec()),
            ]
        );
        assert_eq!(r.interfaces().len(), 1);
    }
}

#[test]
fn interface_names_are_read() {
    let mut f = shb(false);
    f.extend(idb(false, 1, None, Some("wlan0")));
    let r = CaptureReader::new(&f[..]).unwrap();
    assert!(r.interfaces().is_empty(), "IDB is read with the next frame");
    let mut r = r;
    assert!(r.next_frame().unwrap().is_none());
    assert_eq!(r.interfaces()[0].name.as_deref(), Some("wlan0"));
}

#[test]
fn truncated_file_reports_the_record_offset() {
    let f = pcap(
        false,
        false,
        1,
        &[(1, 0, b"0123456789"), (2, 0, b"0123456789")],
    );
    let cut = &f[..f.len() - 3];
    let mut r = CaptureReader::new(cut).unwrap();
    assert!(r.next_frame().unwrap().is_some());
    let e = r.next_frame().unwrap_err();
    assert!(
        matches!(
            e,
            ReadError::Truncated {
                offset: 50,
                got: 23,
                needed: 26,
                ..
            }
        ),
        "{e}"
    );
    // Cut inside a record header, and inside a pcapng block.
    let e = read_all(&f[..24 + 5]).unwrap_err();
    assert!(matches!(e, ReadError::Truncated { offset: 24, .. }), "{e}");
    let mut ng = shb(false);
    ng.extend(idb(false, 1, None, None));
    let good = ng.len();
    ng.extend(epb(false, 0, 1, b"abcdef"));
    let e = read_all(&ng[..ng.len() - 1]).unwrap_err();
    assert!(
        matches!(e, ReadError::Truncated { offset, .. } if offset == good as u64),
        "{e}"
    );
    // An unknown block cut short is skipped up to the cut, then reported.
    let mut ng = shb(false);
    ng.extend(block(false, 0x0bad, &[0u8; 64]));
    let e = read_all(&ng[..ng.len() - 10]).unwrap_err();
    assert!(matches!(e, ReadError::Truncated { offset: 28, .. }), "{e}");
}

#[test]
fn bad_magic_and_empty_files() {
    assert!(matches!(
        read_all(b"GET / HTTP/1.1"),
        Err(ReadError::BadMagic { .. })
    ));
    assert!(matches!(read_all(b""), Err(ReadError::BadMagic { .. })));
    assert!(matches!(
        read_all(&[0xd4, 0xc3, 0xb2]),
        Err(ReadError::BadMagic { .. })
    ));
    // A pcap header cut short.
    let f = pcap(false, false, 1, &[]);
    assert!(matches!(
        read_all(&f[..10]),
        Err(ReadError::Truncated { offset: 0, .. })
    ));
}

#[test]
fn huge_records_are_errors_not_allocations() {
    let mut f = pcap(false, false, 1, &[]);
    w32(&mut f, 1, false);
    w32(&mut f, 0, false);
    w32(&mut f, 0xffff_fff0, false);
    w32(&mut f, 0xffff_fff0, false);
    let e = read_all(&f).unwrap_err();
    assert!(
        matches!(e, ReadError::RecordTooLong { offset: 24, .. }),
        "{e}"
    );
    // pcapng: a packet block claiming 3 GiB.
    let mut ng = shb(true);
    w32(&mut ng, 6, true);
    w32(&mut ng, 3 << 30, true);
    let e = read_all(&ng).unwrap_err();
    assert!(
        matches!(e, ReadError::RecordTooLong { offset: 28, .. }),
        "{e}"
    );
    // A captured length beyond its own block.
    let mut ng = shb(false);
    ng.extend(idb(false, 1, None, None));
    let mut b = epb(false, 0, 1, b"abcd");
    b[20..24].copy_from_slice(&100u32.to_le_bytes());
    ng.extend(b);
    assert!(matches!(read_all(&ng), Err(ReadError::Malformed { .. })));
}

#[test]
fn lying_block_lengths_are_malformed() {
    let mut ng = shb(false);
    let mut b = idb(false, 1, None, None);
    let n = b.len();
    b[n - 4..].copy_from_slice(&4u32.to_le_bytes());
    ng.extend(b);
    assert!(matches!(read_all(&ng), Err(ReadError::Malformed { .. })));
    let mut ng = shb(false);
    w32(&mut ng, 6, false);
    w32(&mut ng, 13, false);
    assert!(matches!(read_all(&ng), Err(ReadError::Malformed { .. })));
    // An option running past its block.
    let mut ng = shb(false);
    let mut body = Vec::new();
    w16(&mut body, 1, false);
    w16(&mut body, 0, false);
    w32(&mut body, 0, false);
    w16(&mut body, 2, false);
    w16(&mut body, 200, false);
    ng.extend(block(false, 1, &body));
    assert!(matches!(read_all(&ng), Err(ReadError::Malformed { .. })));
}

#[test]
fn garbage_never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..3000 {
        let mut f = if round % 2 == 0 {
            shb(round % 4 == 0)
        } else {
            pcap(false, true, 1, &[])
        };
        for _ in 0..(round % 97) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            f.push(seed as u8);
        }
        let _ = read_all(&f);
    }
}
