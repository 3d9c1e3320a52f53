//! The on-disk spool: a bounded FIFO of encoded line-protocol batches that
//! survives an InfluxDB outage and a collector restart.
//!
//! Layout of the spool directory:
//! - `seg-<20 digit sequence>.spool`: segments, appended in order. Each holds
//!   records `magic "FLS1" | body length u32 | lines u32 | crc32(body) u32 |
//!   body` (little endian), the body being line protocol as sent. A segment
//!   is fsynced when it is closed (full, or at shutdown); a restart always
//!   starts a new one, so a torn tail is never appended to.
//! - `index`: `v1 <sequence> <offset>`, the first record not yet written to
//!   InfluxDB. Replaced atomically (rename) after every batch; not fsynced: a
//!   stale index only replays batches again, which InfluxDB stores once
//!   (deterministic timestamps make writes idempotent).
//!
//! Several writers send at once: [`Spool::take`] hands out the next records
//! not handed out yet (consecutive small records as one request), and
//! [`Spool::commit`] marks them written, in any order; the index moves over
//! the records written without a gap, so after a restart only records not
//! known to be written are sent again (and those written out of order
//! behind a gap: stored once by InfluxDB).
//! - `lock`: `flock`ed while a collector owns the directory.
//! - `.flowlens-spool`: marks the directory as a spool; a directory with any
//!   other file is refused (see `spool_dir.rs`).
//!
//! The bound counts every byte of every segment file, including consumed
//! records of the oldest segment until it is deleted. A record that does not
//! fit is refused ([`AppendError::Full`]): the caller drops the newest batch
//! and counts it.
//!
//! Length: about 430 lines of code; the rest of the file is its unit tests,
//! kept beside the format they check.

use std::{
    collections::{BTreeMap, VecDeque},
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use tracing::{error, warn};

const MAGIC: &[u8; 4] = b"FLS1";
const HEADER: u64 = 16;
/// Larger bodies are treated as corruption (batches are ~1 MiB).
const MAX_BODY: u32 = 256 << 20;

/// Why a batch was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The spool is at its byte bound.
    #[error("spool full ({used} of {max} bytes used, batch needs {need})")]
    Full {
        /// Bytes in use.
        used: u64,
        /// Bound.
        max: u64,
        /// Bytes the batch needed.
        need: u64,
    },
    /// Writing failed (disk full, I/O error).
    #[error("writing the spool failed: {0}")]
    Io(#[from] io::Error),
}

/// Opening the spool failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The directory could not be created or read.
    #[error("spool directory {path}")]
    Io {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Another process holds the directory's lock.
    #[error("spool directory {0} is in use by another flowlens process")]
    Locked(PathBuf),
    /// The directory is not the spool's own.
    #[error("spool directory {path} is not a directory of its own: {found}; give the spool an empty or new directory (e.g. /var/lib/flowlens/influx-spool)")]
    NotOwn {
        /// Directory.
        path: PathBuf,
        /// What is wrong with it.
        found: String,
    },
}

/// Spooled records handed out together (one request): consecutive records
/// of one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledBatch {
    /// Line-protocol lines in `body`.
    pub lines: u32,
    /// Line protocol.
    pub body: Vec<u8>,
    seq: u64,
    start: u64,
    end: u64,
}

/// Corruption found while replaying; everything else in the spool is intact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorruptionStats {
    /// Bytes skipped (a torn or damaged tail of a segment).
    pub bytes: u64,
    /// Damaged regions skipped.
    pub regions: u64,
    /// Lines in damaged records whose header was still readable.
    pub lines: u64,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    seq: u64,
    len: u64,
}

/// Where [`Spool::take`] reads next.
struct ReadPos {
    seq: u64,
    offset: u64,
    file: Option<File>,
}

/// The spool. Not thread-safe by itself: the sink shares it behind a mutex.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    writing: Option<(u64, File)>,
    next_seq: u64,
    /// The first record not yet written (what the index says).
    committed: (u64, u64),
    /// The next record not yet handed out (at or after `committed`).
    read: ReadPos,
    /// Records written (or skipped as damaged) out of order, after
    /// `committed`: (segment, offset) -> end offset.
    done: BTreeMap<(u64, u64), u64>,
    /// Lines of the records not yet written (a gauge; damaged records count
    /// what their header said).
    pending_lines: u64,
    total: u64,
    corrupt: CorruptionStats,
    _lock: File,
}

fn seg_name(seq: u64) -> String {
    format!("seg-{seq:020}.spool")
}

fn parse_seg_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".spool")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

fn read_index(dir: &Path) -> Option<(u64, u64)> {
    let text = fs::read_to_string(dir.join("index")).ok()?;
    let mut it = text.split_whitespace();
    if it.next()? != "v1" {
        return None;
    }
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Lines of the records from `from` on (record headers only; a segment's
/// count stops at its first damaged header).
fn count_lines(dir: &Path, segments: &VecDeque<Segment>, from: (u64, u64)) -> u64 {
    let mut lines = 0u64;
    for seg in segments.iter().filter(|s| s.seq >= from.0) {
        let Ok(mut f) = File::open(dir.join(seg_name(seg.seq))) else {
            continue;
        };
        let mut off = if seg.seq == from.0 { from.1 } else { 0 };
        let mut h = [0u8; HEADER as usize];
        while off + HEADER <= seg.len {
            if f.seek(SeekFrom::Start(off))
                .and_then(|_| f.read_exact(&mut h))
                .is_err()
                || &h[..4] != MAGIC
            {
                break;
            }
            let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            lines += u64::from(u32::from_le_bytes([h[8], h[9], h[10], h[11]]));
            off += HEADER + u64::from(len);
        }
    }
    lines
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, bounded to `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        let io_err = |source| SpoolError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let lock = super::spool_dir::claim(dir)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            if let Some(seq) = entry.file_name().to_str().and_then(parse_seg_name) {
                found.push(Segment {
                    seq,
                    len: entry.metadata().map_err(io_err)?.len(),
                });
            }
        }
        found.sort_by_key(|s| s.seq);
        let index = read_index(dir);
        let (start_seq, start_off) = index.unwrap_or((0, 0));
        if index.is_none() && !found.is_empty() {
            warn!(dir = %dir.display(), "Spool index missing or unreadable; replaying every segment from its start (InfluxDB stores repeated points once).");
        }
        let mut segments = VecDeque::new();
        for s in found {
            if s.seq < start_seq {
                // Fully written to InfluxDB before the last stop.
                let _ = fs::remove_file(dir.join(seg_name(s.seq)));
            } else {
                segments.push_back(s);
            }
        }
        let offset = match segments.front() {
            Some(f) if f.seq == start_seq => start_off.min(f.len),
            _ => 0,
        };
        let last = segments.back().map_or(0, |s| s.seq);
        let total = segments.iter().map(|s| s.len).sum();
        let first = segments.front().map_or(0, |s| s.seq);
        let pending_lines = count_lines(dir, &segments, (first, offset));
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 16).clamp(4 << 10, 16 << 20),
            committed: (first, offset),
            read: ReadPos {
                seq: first,
                offset,
                file: None,
            },
            done: BTreeMap::new(),
            pending_lines,
            segments,
            writing: None,
            next_seq: last.max(start_seq) + 1,
            total,
            corrupt: CorruptionStats::default(),
            _lock: lock,
        })
    }

    /// Bytes of segment files on disk (what the bound applies to).
    pub fn disk_bytes(&self) -> u64 {
        self.total
    }

    /// Bytes not yet written to InfluxDB.
    pub fn pending_bytes(&self) -> u64 {
        match self.segments.front() {
            Some(f) if f.seq == self.committed.0 => self.total.saturating_sub(self.committed.1),
            _ => self.total,
        }
    }

    /// Lines (points) not yet written to InfluxDB.
    pub fn pending_lines(&self) -> u64 {
        self.pending_lines
    }

    /// Nothing is waiting in the spool.
    pub fn is_empty(&self) -> bool {
        self.pending_bytes() == 0
    }

    /// Corruption skipped so far.
    pub fn corruption(&self) -> CorruptionStats {
        self.corrupt
    }

    /// Appends one batch at the back.
    pub fn append(&mut self, lines: u32, body: &[u8]) -> Result<(), AppendError> {
        let need = HEADER + body.len() as u64;
        if self.total + need > self.max_bytes || body.len() as u64 > u64::from(MAX_BODY) {
            return Err(AppendError::Full {
                used: self.total,
                max: self.max_bytes,
                need,
            });
        }
        let full = match (&self.writing, self.segments.back()) {
            (Some((seq, _)), Some(back)) if back.seq == *seq => {
                back.len > 0 && back.len + need > self.segment_bytes
            }
            _ => true,
        };
        if full {
            self.rotate()?;
        }
        let mut rec = Vec::with_capacity(need as usize);
        rec.extend_from_slice(MAGIC);
        rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
        rec.extend_from_slice(&lines.to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        rec.extend_from_slice(body);
        let Some((_, file)) = self.writing.as_mut() else {
            return Err(AppendError::Io(io::Error::other("no open segment")));
        };
        if let Err(e) = file.write_all(&rec) {
            // A partial record may be on disk: close the segment so the next
            // append starts clean; replay stops at the damage and counts it.
            let len = file.seek(SeekFrom::End(0)).unwrap_or(0);
            if let Some(back) = self.segments.back_mut() {
                self.total = self.total - back.len + len;
                back.len = len;
            }
            self.writing = None;
            return Err(e.into());
        }
        if let Some(back) = self.segments.back_mut() {
            back.len += need;
        }
        self.total += need;
        self.pending_lines += u64::from(lines);
        Ok(())
    }

    /// Closes the open segment (fsync) and starts a new one.
    fn rotate(&mut self) -> io::Result<()> {
        self.close_segment()?;
        let seq = self.next_seq;
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(self.dir.join(seg_name(seq)))?;
        self.next_seq += 1;
        self.segments.push_back(Segment { seq, len: 0 });
        self.writing = Some((seq, file));
        Ok(())
    }

    fn close_segment(&mut self) -> io::Result<()> {
        if let Some((_, file)) = self.writing.take() {
            file.sync_all()?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The oldest record not handed out yet, without handing it out. Damaged
    /// records are skipped to the end of their segment and counted.
    pub fn peek(&mut self) -> Option<SpooledBatch> {
        self.next_batch(1, 0, false)
    }

    /// Hands out the next records not handed out yet: consecutive records of
    /// one segment, together at most `max_lines` lines and `max_bytes` bytes
    /// (at least one record). Damaged records are skipped to the end of
    /// their segment and counted. Each record is handed out once; it stays
    /// in the spool (and is sent again after a restart) until committed.
    pub fn take(&mut self, max_lines: u32, max_bytes: usize) -> Option<SpooledBatch> {
        self.next_batch(max_lines, max_bytes, true)
    }

    fn next_batch(
        &mut self,
        max_lines: u32,
        max_bytes: usize,
        advance: bool,
    ) -> Option<SpooledBatch> {
        loop {
            if (self.read.seq, self.read.offset) < self.committed {
                self.read = ReadPos {
                    seq: self.committed.0,
                    offset: self.committed.1,
                    file: None,
                };
            }
            let seg = *self.segments.iter().find(|s| s.seq >= self.read.seq)?;
            if seg.seq != self.read.seq {
                self.read = ReadPos {
                    seq: seg.seq,
                    offset: 0,
                    file: None,
                };
            }
            let open = self.writing.as_ref().is_some_and(|(s, _)| *s == seg.seq);
            if self.read.offset >= seg.len {
                if open {
                    return None;
                }
                self.read = ReadPos {
                    seq: seg.seq + 1,
                    offset: 0,
                    file: None,
                };
                continue;
            }
            let start = self.read.offset;
            let mut batch = match self.read_record(seg, start) {
                Ok(b) => b,
                Err((why, lines)) => {
                    self.skip_damaged(seg, start, &why, lines);
                    if open {
                        self.writing = None;
                    }
                    continue;
                }
            };
            // More records of the segment while they fit in one request.
            while batch.end < seg.len {
                let Ok(next) = self.read_record(seg, batch.end) else {
                    break; // reported when it comes first
                };
                if batch.lines.saturating_add(next.lines) > max_lines
                    || batch.body.len() + next.body.len() > max_bytes
                {
                    break;
                }
                batch.lines += next.lines;
                batch.body.extend_from_slice(&next.body);
                batch.end = next.end;
            }
            if advance {
                self.read.offset = batch.end;
            }
            return Some(batch);
        }
    }

    /// A damaged record at `start`: the rest of its segment is skipped,
    /// counted, and treated as written (nothing in it can be trusted).
    fn skip_damaged(&mut self, seg: Segment, start: u64, why: &str, lines: u64) {
        let skipped = seg.len - start;
        self.corrupt.bytes += skipped;
        self.corrupt.regions += 1;
        self.corrupt.lines += lines;
        self.pending_lines = self.pending_lines.saturating_sub(lines);
        error!(segment = %self.dir.join(seg_name(seg.seq)).display(), offset = start, skipped_bytes = skipped, reason = %why, "Spool segment damaged; skipping its rest (those points are lost).");
        self.read.offset = seg.len;
        self.done.insert((seg.seq, start), seg.len);
        self.advance_committed();
    }

    /// The record at `offset` of `seg`.
    fn read_record(&mut self, seg: Segment, offset: u64) -> Result<SpooledBatch, (String, u64)> {
        let rest = seg.len - offset;
        if rest < HEADER {
            return Err((format!("truncated header ({rest} bytes)"), 0));
        }
        if self.read.file.is_none() {
            let f = File::open(self.dir.join(seg_name(seg.seq))).map_err(|e| (e.to_string(), 0))?;
            self.read.file = Some(f);
        }
        let Some(file) = self.read.file.as_mut() else {
            return Err(("segment not open".into(), 0));
        };
        let mut h = [0u8; HEADER as usize];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut h))
            .map_err(|e| (e.to_string(), 0))?;
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        if &h[..4] != MAGIC {
            return Err(("bad record magic".into(), 0));
        }
        let (len, lines, crc) = (word(4), word(8), word(12));
        if len > MAX_BODY || u64::from(len) > rest - HEADER {
            return Err((
                format!("truncated record ({len} bytes announced)"),
                u64::from(lines),
            ));
        }
        let mut body = vec![0u8; len as usize];
        file.read_exact(&mut body)
            .map_err(|e| (e.to_string(), u64::from(lines)))?;
        if crc32fast::hash(&body) != crc {
            return Err(("checksum mismatch".into(), u64::from(lines)));
        }
        Ok(SpooledBatch {
            lines,
            body,
            seq: seg.seq,
            start: offset,
            end: offset + HEADER + u64::from(len),
        })
    }

    fn drop_front(&mut self) {
        if let Some(f) = self.segments.pop_front() {
            self.total -= f.len;
            if self.read.seq == f.seq {
                self.read.file = None;
            }
            let _ = fs::remove_file(self.dir.join(seg_name(f.seq)));
        }
    }

    /// Marks `batch` (from [`Spool::take`] or [`Spool::peek`]) written, in
    /// any order; the index moves over what is written without a gap.
    pub fn commit(&mut self, batch: &SpooledBatch) {
        if (batch.seq, batch.start) < self.committed
            || self.done.contains_key(&(batch.seq, batch.start))
        {
            return;
        }
        self.done.insert((batch.seq, batch.start), batch.end);
        self.pending_lines = self.pending_lines.saturating_sub(u64::from(batch.lines));
        self.advance_committed();
        if let Err(e) = self.write_index() {
            warn!(dir = %self.dir.display(), error = %e, "Cannot update the spool index; a restart may replay batches again.");
        }
    }

    /// Moves `committed` over records written without a gap; deletes the
    /// segments it passes (also the open one: the next append starts anew).
    fn advance_committed(&mut self) {
        loop {
            let Some(front) = self.segments.front().copied() else {
                return;
            };
            if self.committed.0 != front.seq {
                self.committed = (front.seq, 0);
            }
            if let Some(end) = self.done.remove(&self.committed) {
                self.committed.1 = end;
                continue;
            }
            if self.committed.1 < front.len {
                return;
            }
            if self.writing.as_ref().is_some_and(|(s, _)| *s == front.seq) {
                self.writing = None;
            }
            self.drop_front();
            let next = self.segments.front().map_or(front.seq + 1, |s| s.seq);
            self.committed = (next, 0);
        }
    }

    fn write_index(&self) -> io::Result<()> {
        let tmp = self.dir.join("index.tmp");
        fs::write(
            &tmp,
            format!("v1 {} {}\n", self.committed.0, self.committed.1),
        )?;
        fs::rename(tmp, self.dir.join("index"))
    }

    /// Fsyncs the open segment and records the read position (shutdown).
    pub fn close(&mut self) -> io::Result<()> {
        self.close_segment()?;
        self.write_index()
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("flowlens-spool-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            Self(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn body(i: u32) -> Vec<u8> {
        format!("m,k=v{i} f={i}i {i}\n")
            .repeat(1 + (i as usize % 7))
            .into_bytes()
    }

    fn drain(s: &mut Spool) -> Vec<u32> {
        let mut got = Vec::new();
        while let Some(b) = s.peek() {
            got.push(b.lines);
            s.commit(&b);
        }
        got
    }

    #[test]
    fn replays_in_order_across_segments_and_restarts() {
        let d = TempDir::new("order");
        let mut s = Spool::open(&d.0, 64 << 10).expect("open");
        for i in 0..200 {
            s.append(i, &body(i)).expect("append");
        }
        assert!(s.segments.len() > 2, "small segments: {}", s.segments.len());
        // Consume a few, then "restart".
        for want in 0..5 {
            let b = s.peek().expect("batch");
            assert_eq!((b.lines, &b.body), (want, &body(want)));
            s.commit(&b);
        }
        drop(s);
        let mut s = Spool::open(&d.0, 64 << 10).expect("reopen");
        s.append(200, &body(200)).expect("append after restart");
        assert_eq!(drain(&mut s), (5..=200).collect::<Vec<_>>());
        assert!(s.is_empty());
        assert_eq!(s.corruption(), CorruptionStats::default());
        drop(s);
        // Everything consumed: only the newest (empty) segment may remain.
        let s = Spool::open(&d.0, 64 << 10).expect("reopen");
        assert_eq!(s.pending_bytes(), 0);
    }

    #[test]
    fn a_peeked_batch_stays_until_committed() {
        let d = TempDir::new("peek");
        let mut s = Spool::open(&d.0, 1 << 20).expect("open");
        s.append(1, b"a x=1i 1\n").expect("append");
        let b = s.peek().expect("batch");
        assert_eq!(s.peek().as_ref(), Some(&b));
        drop(s);
        let mut s = Spool::open(&d.0, 1 << 20).expect("reopen");
        assert_eq!(s.peek().map(|b| b.body), Some(b"a x=1i 1\n".to_vec()));
    }

    #[test]
    fn writers_take_each_record_once_and_commit_in_any_order() {
        let d = TempDir::new("take");
        let mut s = Spool::open(&d.0, 1 << 20).expect("open");
        for i in 0..10u32 {
            s.append(2, format!("m v={i}i {i}\nm w={i}i {i}\n").as_bytes())
                .expect("append");
        }
        assert_eq!(s.pending_lines(), 20);
        // Consecutive records as one request, within the lines bound.
        let a = s.take(5, 1 << 20).expect("a");
        let b = s.take(5, 1 << 20).expect("b");
        let c = s.take(100, 1 << 20).expect("c");
        assert_eq!((a.lines, b.lines, c.lines), (4, 4, 12));
        assert!(s.take(100, 1 << 20).is_none(), "everything is handed out");
        let text = |x: &SpooledBatch| String::from_utf8(x.body.clone()).expect("utf8");
        assert!(text(&a).starts_with("m v=0i 0\n") && text(&a).ends_with("m w=1i 1\n"));
        assert!(text(&b).starts_with("m v=2i 2\n"));
        // Written out of order: the index waits for the gap.
        let before = s.pending_bytes();
        s.commit(&c);
        s.commit(&b);
        assert_eq!(s.pending_bytes(), before, "a is still pending in front");
        assert_eq!(s.pending_lines(), 4);
        drop(s);
        // A restart sends a again, and b and c (stored once by InfluxDB).
        let mut s = Spool::open(&d.0, 1 << 20).expect("reopen");
        assert_eq!(s.pending_lines(), 20);
        let again = s.take(100, 1 << 20).expect("again");
        assert_eq!(again.lines, 20);
        s.commit(&again);
        assert!(s.is_empty());
        assert_eq!(s.pending_lines(), 0);
        drop(s);
        // Committing the gap first then the rest moves the index to the end.
        let mut s = Spool::open(&d.0, 1 << 20).expect("reopen");
        assert!(s.is_empty());
        s.append(1, b"m x=1i 1\n").expect("append");
        s.append(1, b"m x=2i 2\n").expect("append");
        let x = s.take(1, 1 << 20).expect("x");
        let y = s.take(1, 1 << 20).expect("y");
        s.commit(&y);
        s.commit(&x);
        assert!(s.is_empty());
        drop(s);
        let mut s = Spool::open(&d.0, 1 << 20).expect("reopen");
        assert!(s.take(100, 1 << 20).is_none());
    }

    #[test]
    fn the_bound_refuses_the_newest_batch() {
        let d = TempDir::new("bound");
        let mut s = Spool::open(&d.0, 10_000).expect("open");
        let payload = vec![b'x'; 984]; // 1000 bytes with the header
        for _ in 0..10 {
            s.append(1, &payload).expect("fits");
        }
        assert_eq!(s.disk_bytes(), 10_000);
        match s.append(1, &payload) {
            Err(AppendError::Full { used, max, need }) => {
                assert_eq!((used, max, need), (10_000, 10_000, 1000));
            }
            other => panic!("expected Full, got {other:?}"),
        }
        // Consuming frees space once a segment is deleted.
        for _ in 0..10 {
            let b = s.peek().expect("batch");
            s.commit(&b);
        }
        assert!(s.disk_bytes() < 10_000, "{}", s.disk_bytes());
        s.append(1, &payload).expect("space again");
    }

    #[test]
    fn a_truncated_segment_replays_what_is_intact() {
        let d = TempDir::new("trunc");
        let mut s = Spool::open(&d.0, 1 << 20).expect("open");
        for i in 0..3 {
            s.append(i, &body(i)).expect("append");
        }
        s.close().expect("close");
        let first = s.segments.front().expect("segment").seq;
        drop(s);
        // A crash in the middle of the third record.
        let path = d.0.join(seg_name(first));
        let len = fs::metadata(&path).expect("meta").len();
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open seg");
        f.set_len(len - 5).expect("truncate");
        drop(f);
        let mut s = Spool::open(&d.0, 1 << 20).expect("reopen");
        s.append(9, &body(9)).expect("append");
        assert_eq!(drain(&mut s), vec![0, 1, 9]);
        let c = s.corruption();
        assert_eq!((c.regions, c.lines), (1, 2));
        assert_eq!(c.bytes, HEADER + body(2).len() as u64 - 5);
    }

    #[test]
    fn damaged_bytes_are_detected_by_the_checksum() {
        let d = TempDir::new("crc");
        let mut s = Spool::open(&d.0, 1 << 20).expect("open");
        s.append(1, b"a x=1i 1\n").expect("append");
        s.append(2, b"a x=2i 2\na x=3i 3\n").expect("append");
        s.close().expect("close");
        let first = s.segments.front().expect("segment").seq;
        drop(s);
        let path = d.0.join(seg_name(first));
        let mut bytes = fs::read(&path).expect("read");
        bytes[HEADER as usize + 2] ^= 0xff; // inside the first body
        fs::write(&path, bytes).expect("write");
        let mut s = Spool::open(&d.0, 1 << 20).expect("reopen");
        assert_eq!(drain(&mut s), Vec::<u32>::new());
        assert_eq!(s.corruption().regions, 1);
        assert_eq!(s.corruption().lines, 1);
        // A garbage file with a valid name is skipped the same way.
        fs::write(d.0.join(seg_name(s.next_seq + 5)), b"garbage").expect("write");
        drop(s);
        let mut s = Spool::open(&d.0, 1 << 20).expect("reopen");
        assert!(s.peek().is_none());
        assert_eq!(s.corruption().bytes, 7);
    }

    #[test]
    fn one_owner_per_directory() {
        let d = TempDir::new("lock");
        let _s = Spool::open(&d.0, 1 << 20).expect("open");
        assert!(matches!(
            Spool::open(&d.0, 1 << 20),
            Err(SpoolError::Locked(_))
        ));
    }
}
