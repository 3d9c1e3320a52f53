//! JSON lines (file or stdout): one object per record, the contract of
//! docs/schema.md.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use flowlens_correlator::record::ConversationRecord;

use super::RecordSink;
use crate::user_input::quote;

const BUFFER_BYTES: usize = 256 << 10;

/// Where the lines go.
enum Target {
    Stdout,
    File(PathBuf),
}

/// JSON lines, one object per record, flushed every interval.
pub struct JsonlSink {
    target: Target,
    out: Option<BufWriter<Box<dyn Write + Send>>>,
    line: Vec<u8>,
    /// A failed write may have left part of a line in the file: the next
    /// write starts a new line first, so every later line stands alone.
    torn: bool,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl JsonlSink {
    /// Appends to a file (created if missing; its directory must exist).
    pub fn file(path: &Path) -> io::Result<Self> {
        let f = open_append(path)?;
        Ok(Self::new(Target::File(path.to_path_buf()), Box::new(f)))
    }

    /// Writes to stdout.
    pub fn stdout() -> Self {
        Self::new(Target::Stdout, Box::new(io::stdout()))
    }

    fn new(target: Target, w: Box<dyn Write + Send>) -> Self {
        Self {
            target,
            out: Some(BufWriter::with_capacity(BUFFER_BYTES, w)),
            line: Vec::with_capacity(1024),
            torn: false,
        }
    }

    fn write_lines(&mut self, records: &[ConversationRecord]) -> io::Result<()> {
        let Some(out) = self.out.as_mut() else {
            return Err(io::Error::other("the JSON lines output is closed"));
        };
        if self.torn && !records.is_empty() {
            out.write_all(b"\n")?;
            // A failure from here on tears a line again.
            self.torn = false;
        }
        for r in records {
            self.line.clear();
            serde_json::to_writer(&mut self.line, r).map_err(io::Error::other)?;
            self.line.push(b'\n');
            out.write_all(&self.line)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let Some(out) = self.out.as_mut() else {
            return Err(io::Error::other("the JSON lines output is closed"));
        };
        out.flush()
    }

    /// After a failed write: drop what is still buffered (it belongs to the
    /// interval counted as lost, and must not be written ahead of the next).
    fn torn(&mut self, result: io::Result<()>) -> io::Result<()> {
        if result.is_err() {
            if let Some(out) = self.out.take() {
                let (inner, _unwritten) = out.into_parts();
                self.out = Some(BufWriter::with_capacity(BUFFER_BYTES, inner));
            }
            self.torn = true;
        }
        result
    }
}

impl RecordSink for JsonlSink {
    fn write_chunk(&mut self, records: &[ConversationRecord]) -> io::Result<()> {
        let result = self.write_lines(records);
        self.torn(result)
    }

    /// Every interval ends with a flush.
    fn end_interval(&mut self) -> io::Result<()> {
        let result = self.flush();
        self.torn(result)
    }

    fn describe(&self) -> String {
        match &self.target {
            Target::Stdout => "JSON lines on standard output".into(),
            Target::File(p) => format!("JSON lines file {}", quote(&p.to_string_lossy())),
        }
    }

    fn is_stdout(&self) -> bool {
        matches!(self.target, Target::Stdout)
    }

    fn reopen(&mut self) -> io::Result<bool> {
        let Target::File(path) = &self.target else {
            return Ok(false);
        };
        // Every interval ends with a flush: nothing is buffered here.
        let f = open_append(path)?;
        self.out = Some(BufWriter::with_capacity(BUFFER_BYTES, Box::new(f)));
        self.torn = false;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influx::fixtures::{end, record};

    #[test]
    fn a_failed_write_is_not_repeated_and_the_next_line_starts_fresh() {
        let r = record(
            end("10.0.0.1", 1, None),
            end("10.0.0.2", 2, None),
            (1, 2),
            (1, 1),
        );
        let mut full = JsonlSink::file(Path::new("/dev/full")).expect("open /dev/full");
        let e = full
            .write_interval(std::slice::from_ref(&r))
            .expect_err("/dev/full");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(full.describe().contains("'/dev/full'"));
        // Nothing of the failed interval is left to go out with the next.
        assert_eq!(full.out.as_ref().map(|o| o.buffer().len()), Some(0));
        let dir = std::env::temp_dir().join(format!("flowlens-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let path = dir.join("out.jsonl");
        let mut sink = JsonlSink::file(&path).expect("open");
        sink.torn = true;
        sink.write_interval(std::slice::from_ref(&r))
            .expect("write");
        let moved = dir.join("out.jsonl.1");
        std::fs::rename(&path, &moved).expect("rotate");
        assert!(sink.reopen().expect("reopen"));
        sink.write_interval(std::slice::from_ref(&r))
            .expect("write");
        let old = std::fs::read_to_string(&moved).expect("old");
        let new = std::fs::read_to_string(&path).expect("new");
        assert!(old.starts_with('\n') && old.lines().count() == 2, "{old:?}");
        assert_eq!(new.lines().count(), 1, "{new:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
