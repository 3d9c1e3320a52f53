//! The fuzzers' seed corpus (`fuzz/corpus/`) on stable: every file through
//! the same code the `cargo fuzz` targets drive, so CI exercises the crashers
//! that were fixed and the crafted captures without a nightly toolchain.

use std::path::{Path, PathBuf};

use flowlens_collector::capture::parse_frame;
use flowlens_collector::capture::FlowAccounts;
use flowlens_collector::replay::reader::CaptureReader;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{}: only {} seeds",
        dir.display(),
        files.len()
    );
    files
}

/// As `fuzz/fuzz_targets/packet_parser.rs`: 4 bytes pick the link type.
fn link_type(raw: u32) -> u32 {
    const LINKS: [u32; 10] = [1, 113, 276, 101, 12, 14, 228, 229, 0, 108];
    LINKS.get((raw % 16) as usize).copied().unwrap_or(raw >> 4)
}

#[test]
fn pcap_reader_corpus() {
    let mut frames = 0;
    for f in corpus("pcap_reader") {
        let data = std::fs::read(&f).expect("read seed");
        let Ok(mut reader) = CaptureReader::new(data.as_slice()) else {
            continue;
        };
        let mut accounts = FlowAccounts::new();
        while let Ok(Some(frame)) = reader.next_frame() {
            assert!(
                frame.orig_len as usize >= frame.data.len(),
                "{}",
                f.display()
            );
            frames += 1;
            if let Some(Ok(p)) = frame.link_type.map(|l| parse_frame(l, frame.data)) {
                accounts.account(
                    &p,
                    frame.orig_len,
                    frame.iface + 1,
                    frame.ts_ns.unwrap_or(0),
                );
            }
        }
    }
    assert!(frames > 100, "only {frames} frames in the corpus");
}

#[test]
fn packet_parser_corpus() {
    for f in corpus("packet_parser") {
        let data = std::fs::read(&f).expect("read seed");
        let Some((link, frame)) = data.split_first_chunk::<4>() else {
            continue;
        };
        if let Ok(p) = parse_frame(link_type(u32::from_le_bytes(*link)), frame) {
            let mut accounts = FlowAccounts::new();
            let wire = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            accounts.account(&p, wire, 1, 1);
            accounts.account(&p, wire, 1, 2);
            let _ = accounts.take_changed();
        }
    }
}
