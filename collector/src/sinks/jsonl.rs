//! JSON lines (file or stdout): one object per record, the contract of
//! docs/schema.md.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::Path,
};

use flowlens_correlator::record::ConversationRecord;

use super::RecordSink;

/// JSON lines, one object per record, flushed every interval.
pub struct JsonlSink {
    out: BufWriter<Box<dyn Write + Send>>,
    line: Vec<u8>,
}

impl JsonlSink {
    /// Appends to a file (created if missing).
    pub fn file(path: &Path) -> io::Result<Self> {
        let f: File = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::new(Box::new(f)))
    }

    /// Writes to stdout.
    pub fn stdout() -> Self {
        Self::new(Box::new(io::stdout()))
    }

    fn new(w: Box<dyn Write + Send>) -> Self {
        Self {
            out: BufWriter::with_capacity(256 << 10, w),
            line: Vec::with_capacity(1024),
        }
    }
}

impl RecordSink for JsonlSink {
    fn write_interval(&mut self, records: &[ConversationRecord]) -> io::Result<()> {
        for r in records {
            self.line.clear();
            serde_json::to_writer(&mut self.line, r).map_err(io::Error::other)?;
            self.line.push(b'\n');
            self.out.write_all(&self.line)?;
        }
        self.out.flush()
    }
}
