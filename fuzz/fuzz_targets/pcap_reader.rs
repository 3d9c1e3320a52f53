//! Arbitrary bytes as a pcap/pcapng file: read every frame and parse it, as
//! `flowlens replay` does. Any panic, hang or unbounded allocation is a bug.
#![no_main]

use flowlens_collector::capture::parse_frame;
use flowlens_collector::replay::reader::CaptureReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = CaptureReader::new(data) else {
        return;
    };
    while let Ok(Some(frame)) = reader.next_frame() {
        // The documented invariant replay's wire-byte totals rely on.
        assert!(frame.orig_len as usize >= frame.data.len());
        if let Some(link) = frame.link_type {
            let _ = parse_frame(link, frame.data);
        }
    }
});
