//! Arbitrary frames through the packet parser and the flow accounting: the
//! first four bytes pick the link type (little endian), the rest is the frame.
#![no_main]

use flowlens_collector::capture::FlowAccounts;
use flowlens_collector::capture::parse_frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((link, frame)) = data.split_first_chunk::<4>() else {
        return;
    };
    // Mostly the supported link types, sometimes anything (the same mapping
    // as collector/tests/fuzz_corpus.rs).
    const LINKS: [u32; 10] = [1, 113, 276, 101, 12, 14, 228, 229, 0, 108];
    let raw = u32::from_le_bytes(*link);
    let link = LINKS.get((raw % 16) as usize).copied().unwrap_or(raw >> 4);
    if let Ok(packet) = parse_frame(link, frame) {
        let mut accounts = FlowAccounts::new();
        let wire = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        accounts.account(&packet, wire, 1, 1);
        accounts.account(&packet, wire, 1, 2);
        let _ = accounts.take_changed();
    }
});
