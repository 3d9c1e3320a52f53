//! A reader of pcap and pcapng files, memory-mapped or streamed, that never
//! trusts a length: every record is bounded by [`MAX_RECORD`] before
//! anything is allocated, and every error names the byte offset of the
//! record it happened in.
//!
//! Length: pcap and pcapng share the read window (a mapped file or a
//! stream's buffer), the record bound and the offsets in errors; each
//! format's parser is about 200 lines. Tests are in `reader_tests.rs`.

use std::io::{self, Read};
use std::ops::Range;

use thiserror::Error;

use super::mapped::MappedFile;

/// The longest packet accepted (what tcpdump and Wireshark allow).
pub const MAX_RECORD: u32 = 256 << 10;
/// The longest pcapng block read into memory (packet plus room for options).
/// Unknown blocks are skipped without reading them into memory.
const MAX_BLOCK: u32 = MAX_RECORD + (64 << 10);

const PCAP_MICRO: u32 = 0xa1b2_c3d4;
const PCAP_NANO: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BOM: u32 = 0x1a2b_3c4d;
const BLOCK_IDB: u32 = 1;
const BLOCK_PB: u32 = 2;
const BLOCK_SPB: u32 = 3;
const BLOCK_EPB: u32 = 6;
const OPT_END: u16 = 0;
const OPT_IF_NAME: u16 = 2;
const OPT_IF_TSRESOL: u16 = 9;
const OPT_IF_TSOFFSET: u16 = 14;

/// Why a capture cannot be read further.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The operating system failed a read.
    #[error("read error at byte {offset}: {source}")]
    Io {
        /// Offset of the record being read.
        offset: u64,
        /// The error.
        source: io::Error,
    },
    /// Neither a pcap nor a pcapng file.
    #[error("not a pcap or pcapng file (magic {magic:02x?})")]
    BadMagic {
        /// The first bytes of the file.
        magic: Vec<u8>,
    },
    /// The file ends inside a record.
    #[error("file truncated in the {what} at byte {offset}: {needed} bytes needed, {got} present")]
    Truncated {
        /// Offset of the cut record.
        offset: u64,
        /// What was being read.
        what: &'static str,
        /// Bytes the record needs.
        needed: u64,
        /// Bytes present.
        got: u64,
    },
    /// A record longer than any packet can be (corrupt length).
    #[error("record at byte {offset} claims {len} bytes, more than the {limit}-byte limit")]
    RecordTooLong {
        /// Offset of the record.
        offset: u64,
        /// Its claimed length.
        len: u64,
        /// The limit.
        limit: u32,
    },
    /// A structurally invalid record.
    #[error("malformed {what} at byte {offset}")]
    Malformed {
        /// Offset of the record.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}

impl ReadError {
    fn malformed(offset: u64, what: impl Into<String>) -> Self {
        Self::Malformed {
            offset,
            what: what.into(),
        }
    }
}

/// One capture interface (pcap: the file itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Link type.
    pub link_type: u32,
    /// Snapshot length (0: none).
    pub snaplen: u32,
    /// Timestamp units per second.
    pub units_per_sec: u128,
    /// Seconds added to every timestamp (pcapng `if_tsoffset`).
    pub ts_offset_s: i64,
    /// `if_name`, when given.
    pub name: Option<String>,
}

/// One packet record.
#[derive(Debug)]
pub struct Frame<'a> {
    /// Interface id within the file (pcap: 0).
    pub iface: u32,
    /// Link type; `None` when the record names an interface never described.
    pub link_type: Option<u32>,
    /// Capture time, ns since the epoch; `None` for simple packet blocks.
    pub ts_ns: Option<u64>,
    /// Length of the packet on the wire (at least `data.len()`).
    pub orig_len: u32,
    /// What was captured.
    pub data: &'a [u8],
    /// Offset of the record in the file.
    pub offset: u64,
}

#[derive(Clone, Copy, Debug)]
enum Format {
    Pcap { swapped: bool, nanos: bool },
    Pcapng { big_endian: bool },
}

/// Bytes asked of the stream at a time (the window grows for a longer record).
const READ_CHUNK: usize = 1 << 20;

/// Where a reader's bytes come from.
enum Source<R> {
    /// A stream read in [`READ_CHUNK`]s into a window.
    Stream { r: R, buf: Vec<u8> },
    /// A regular file mapped whole: the window is the file.
    Mapped(MappedFile),
}

/// Reads frames from a pcap or pcapng file or stream.
///
/// Records are slices of one window, no copy and no allocation per packet:
/// a mapped file ([`CaptureReader::open`]) is its own window, so only the
/// headers a parser looks at are ever read; a stream is read in
/// [`READ_CHUNK`]s into a buffer (a `BufReader` under a per-record buffer
/// copied every packet twice).
pub struct CaptureReader<R> {
    src: Source<R>,
    offset: u64,
    format: Format,
    ifaces: Vec<Interface>,
    /// Bumped whenever `ifaces` changes (an interface description, a new section).
    ifaces_version: u64,
    /// `pos..end` of the window is read but not consumed yet.
    pos: usize,
    end: usize,
    /// The record last read, within the window.
    rec: Range<usize>,
}

fn u16_at(b: &[u8], off: usize, big: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(off..off.checked_add(2)?)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(s)
    } else {
        u16::from_le_bytes(s)
    })
}

fn u32_at(b: &[u8], off: usize, big: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(s)
    } else {
        u32::from_le_bytes(s)
    })
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn fill<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Capture time in ns from a timestamp in `units_per_sec` and an offset in seconds.
fn to_ns(ts: u64, units_per_sec: u128, offset_s: i64) -> u64 {
    let ns = i128::try_from(u128::from(ts) * 1_000_000_000 / units_per_sec.max(1))
        .unwrap_or(i128::MAX)
        .saturating_add(i128::from(offset_s) * 1_000_000_000);
    u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
}

impl CaptureReader<std::fs::File> {
    /// Reads `file`: mapped when it is a regular file (see [`MappedFile`]),
    /// as a stream otherwise (a pipe, stdin).
    pub fn open(file: std::fs::File) -> Result<Self, ReadError> {
        match MappedFile::new(file) {
            Ok(map) => {
                let end = map.bytes().len();
                let mut me = Self::with(Source::Mapped(map));
                me.end = end;
                let head: [u8; 4] = me
                    .window()
                    .get(..4)
                    .and_then(|h| h.try_into().ok())
                    .ok_or_else(|| ReadError::BadMagic {
                        magic: me.window().to_vec(),
                    })?;
                me.pos = 4;
                me.start(head)?;
                Ok(me)
            }
            Err(file) => Self::new(file),
        }
    }

    /// The file is memory-mapped (not read as a stream).
    pub fn is_mapped(&self) -> bool {
        matches!(self.src, Source::Mapped(_))
    }
}

impl<R: Read> CaptureReader<R> {
    fn with(src: Source<R>) -> Self {
        Self {
            src,
            offset: 4,
            format: Format::Pcapng { big_endian: false },
            ifaces: Vec::new(),
            ifaces_version: 0,
            pos: 0,
            end: 0,
            rec: 0..0,
        }
    }

    /// Reads the file header (pcap) or first section header (pcapng) of a
    /// stream.
    pub fn new(mut r: R) -> Result<Self, ReadError> {
        let mut head = [0u8; 4];
        let n = fill(&mut r, &mut head).map_err(|source| ReadError::Io { offset: 0, source })?;
        if n < 4 {
            return Err(ReadError::BadMagic {
                magic: head[..n].to_vec(),
            });
        }
        let mut me = Self::with(Source::Stream { r, buf: Vec::new() });
        me.start(head)?;
        Ok(me)
    }

    /// After the first four bytes (`head`): the rest of the header.
    fn start(&mut self, head: [u8; 4]) -> Result<(), ReadError> {
        let le = u32::from_le_bytes(head);
        let be = u32::from_be_bytes(head);
        let me = self;
        let pcap = |magic: u32| match magic {
            PCAP_MICRO => Some(false),
            PCAP_NANO => Some(true),
            _ => None,
        };
        if let Some(nanos) = pcap(le) {
            me.read_pcap_header(false, nanos)?;
        } else if let Some(nanos) = pcap(be) {
            me.read_pcap_header(true, nanos)?;
        } else if le == PCAPNG_SHB {
            me.read_shb_rest(0)?;
        } else {
            return Err(ReadError::BadMagic {
                magic: head.to_vec(),
            });
        }
        Ok(())
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Interfaces of the current section, by id.
    pub fn interfaces(&self) -> &[Interface] {
        &self.ifaces
    }

    /// Changes whenever [`CaptureReader::interfaces`] does.
    pub fn interfaces_version(&self) -> u64 {
        self.ifaces_version
    }

    /// The window: the stream's buffer, or the mapped file.
    #[inline]
    fn window(&self) -> &[u8] {
        match &self.src {
            Source::Stream { buf, .. } => buf,
            Source::Mapped(m) => m.bytes(),
        }
    }

    /// Reads exactly `n` bytes into the scratch buffer; `Ok(false)` at a clean
    /// end of file when `eof_ok` and nothing was read.
    fn read_record(
        &mut self,
        start: u64,
        n: usize,
        what: &'static str,
        eof_ok: bool,
    ) -> Result<bool, ReadError> {
        if self.end - self.pos < n {
            self.refill(n).map_err(|source| ReadError::Io {
                offset: start,
                source,
            })?;
        }
        let got = n.min(self.end - self.pos);
        self.rec = self.pos..self.pos + got;
        self.pos += got;
        self.offset += got as u64;
        if got == 0 && eof_ok {
            return Ok(false);
        }
        if got < n {
            return Err(ReadError::Truncated {
                offset: start,
                what,
                needed: (self.offset - start) + (n - got) as u64,
                got: self.offset - start,
            });
        }
        Ok(true)
    }

    /// Stream: moves the unconsumed bytes to the front and reads until `n`
    /// are buffered or the stream ends. Mapped: maps the file again if it
    /// grew.
    #[cold]
    fn refill(&mut self, n: usize) -> io::Result<()> {
        let (r, buf) = match &mut self.src {
            Source::Stream { r, buf } => (r, buf),
            Source::Mapped(m) => {
                if m.grow()? {
                    self.end = m.bytes().len();
                }
                return Ok(());
            }
        };
        buf.copy_within(self.pos..self.end, 0);
        self.end -= self.pos;
        self.pos = 0;
        let want = n.max(READ_CHUNK);
        if buf.len() < want {
            buf.resize(want, 0);
        }
        while self.end < n {
            match r.read(&mut buf[self.end..]) {
                Ok(0) => break,
                Ok(got) => self.end += got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Asks the CPU to load the next record's header while this one is
    /// parsed (mapped files: the window is not in the cache; a record's
    /// position is only known from the one before it).
    #[inline]
    fn prefetch_next(&self) {
        #[cfg(target_arch = "x86_64")]
        if let Source::Mapped(m) = &self.src {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let b = m.bytes();
            // The record header and the packet headers after it.
            for at in [self.pos, self.pos + 64] {
                if at < b.len() {
                    // SAFETY: a hint for an address inside the mapping; a
                    // prefetch never faults.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().add(at).cast()) };
                }
            }
        }
    }

    /// The record last read.
    #[inline]
    fn rec(&self) -> &[u8] {
        &self.window()[self.rec.clone()]
    }

    fn read_pcap_header(&mut self, swapped: bool, nanos: bool) -> Result<(), ReadError> {
        self.read_record(0, 20, "pcap file header", false)?;
        let big = swapped;
        let snaplen = u32_at(self.rec(), 12, big).unwrap_or(0);
        let network = u32_at(self.rec(), 16, big).unwrap_or(0);
        self.format = Format::Pcap { swapped, nanos };
        self.ifaces = vec![Interface {
            // The upper bits may carry the FCS length.
            link_type: network & 0x0fff_ffff,
            snaplen,
            units_per_sec: if nanos { 1_000_000_000 } else { 1_000_000 },
            ts_offset_s: 0,
            name: None,
        }];
        Ok(())
    }

    /// The rest of a section header block whose type (4 bytes) was read at `start`.
    fn read_shb_rest(&mut self, start: u64) -> Result<(), ReadError> {
        self.read_record(start, 8, "section header", false)?;
        let big = match u32_at(self.rec(), 4, false) {
            Some(PCAPNG_BOM) => false,
            Some(v) if v.swap_bytes() == PCAPNG_BOM => true,
            _ => {
                return Err(ReadError::malformed(
                    start,
                    "section header (byte-order magic)",
                ))
            }
        };
        let len = u32_at(self.rec(), 0, big).unwrap_or(0);
        if len < 28 || !len.is_multiple_of(4) {
            return Err(ReadError::malformed(
                start,
                format!("section header (length {len})"),
            ));
        }
        if len > MAX_BLOCK {
            return Err(ReadError::RecordTooLong {
                offset: start,
                len: u64::from(len),
                limit: MAX_BLOCK,
            });
        }
        self.format = Format::Pcapng { big_endian: big };
        self.ifaces.clear();
        self.ifaces_version += 1;
        let rest = (len - 12) as usize;
        self.read_record(start, rest, "section header", false)?;
        self.check_trailer(start, len, big)
    }

    fn check_trailer(&self, start: u64, len: u32, big: bool) -> Result<(), ReadError> {
        let tail = self
            .rec()
            .len()
            .checked_sub(4)
            .and_then(|o| u32_at(self.rec(), o, big));
        if tail != Some(len) {
            return Err(ReadError::malformed(
                start,
                format!("block (trailing length {tail:?} != {len})"),
            ));
        }
        Ok(())
    }

    /// The next frame, `Ok(None)` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, ReadError> {
        if let Source::Mapped(m) = &mut self.src {
            m.reading_at(self.pos);
        }
        match self.format {
            Format::Pcap { swapped, nanos } => self.next_pcap(swapped, nanos),
            Format::Pcapng { .. } => self.next_pcapng(),
        }
    }

    fn next_pcap(&mut self, big: bool, nanos: bool) -> Result<Option<Frame<'_>>, ReadError> {
        let start = self.offset;
        if !self.read_record(start, 16, "packet record header", true)? {
            return Ok(None);
        }
        let field = |i: usize| u32_at(self.rec(), i * 4, big).unwrap_or(0);
        let (sec, frac, incl, orig) = (field(0), field(1), field(2), field(3));
        if incl > MAX_RECORD {
            return Err(ReadError::RecordTooLong {
                offset: start,
                len: u64::from(incl),
                limit: MAX_RECORD,
            });
        }
        self.read_record(start, incl as usize, "packet data", false)?;
        self.prefetch_next();
        let frac_ns = if nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1000
        };
        Ok(Some(Frame {
            iface: 0,
            link_type: self.ifaces.first().map(|i| i.link_type),
            ts_ns: Some(u64::from(sec) * 1_000_000_000 + frac_ns),
            orig_len: orig.max(incl),
            data: self.rec(),
            offset: start,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Frame<'_>>, ReadError> {
        loop {
            let Format::Pcapng { big_endian: big } = self.format else {
                return Ok(None);
            };
            let start = self.offset;
            if !self.read_record(start, 4, "block header", true)? {
                return Ok(None);
            }
            let kind = u32_at(self.rec(), 0, big).unwrap_or(0);
            if kind == PCAPNG_SHB {
                self.read_shb_rest(start)?;
                continue;
            }
            self.read_record(start, 4, "block header", false)?;
            let len = u32_at(self.rec(), 0, big).unwrap_or(0);
            if len < 12 || !len.is_multiple_of(4) {
                return Err(ReadError::malformed(start, format!("block (length {len})")));
            }
            if !matches!(kind, BLOCK_IDB | BLOCK_PB | BLOCK_SPB | BLOCK_EPB) {
                self.skip(start, u64::from(len) - 8)?;
                continue;
            }
            if len > MAX_BLOCK {
                return Err(ReadError::RecordTooLong {
                    offset: start,
                    len: u64::from(len),
                    limit: MAX_BLOCK,
                });
            }
            self.read_record(start, (len - 8) as usize, "block body", false)?;
            self.check_trailer(start, len, big)?;
            self.prefetch_next();
            if kind == BLOCK_IDB {
                let iface = parse_idb(self.rec(), big, start)?;
                self.ifaces.push(iface);
                self.ifaces_version += 1;
                continue;
            }
            return self.packet_block(kind, start, big).map(Some);
        }
    }

    fn skip(&mut self, start: u64, n: u64) -> Result<(), ReadError> {
        let io_err = |source| ReadError::Io {
            offset: start,
            source,
        };
        if matches!(self.src, Source::Mapped(_))
            && usize::try_from(n).map_or(true, |n| n > self.end - self.pos)
        {
            self.refill(0).map_err(io_err)?;
        }
        let buffered =
            usize::try_from(n).map_or(self.end - self.pos, |n| n.min(self.end - self.pos));
        self.pos += buffered;
        let rest = n - buffered as u64;
        let unbuffered = match &mut self.src {
            Source::Stream { r, .. } => {
                io::copy(&mut r.take(rest), &mut io::sink()).map_err(io_err)?
            }
            Source::Mapped(_) => 0,
        };
        let got = buffered as u64 + unbuffered;
        self.offset += got;
        if got < n {
            return Err(ReadError::Truncated {
                offset: start,
                what: "block body",
                needed: n + 8,
                got: got + 8,
            });
        }
        Ok(())
    }

    /// EPB, SPB or obsolete PB whose body (after type and length) is in `buf`.
    fn packet_block(&self, kind: u32, start: u64, big: bool) -> Result<Frame<'_>, ReadError> {
        let b = self.rec();
        let body = b.len().saturating_sub(4);
        let field = |o: usize| {
            u32_at(b, o, big).ok_or_else(|| ReadError::malformed(start, "packet block (too short)"))
        };
        let (iface, ts, caplen, orig, data_off) = match kind {
            BLOCK_SPB => {
                let orig = field(0)?;
                let mut cap = orig.min(u32::try_from(body.saturating_sub(4)).unwrap_or(0));
                if let Some(i) = self.ifaces.first() {
                    if i.snaplen != 0 {
                        cap = cap.min(i.snaplen);
                    }
                }
                (0, None, cap, orig, 4usize)
            }
            BLOCK_PB => {
                let id = u32::from(u16_at(b, 0, big).unwrap_or(0));
                let ts = (u64::from(field(4)?) << 32) | u64::from(field(8)?);
                (id, Some(ts), field(12)?, field(16)?, 20)
            }
            _ => {
                let ts = (u64::from(field(4)?) << 32) | u64::from(field(8)?);
                (field(0)?, Some(ts), field(12)?, field(16)?, 20)
            }
        };
        if caplen > MAX_RECORD {
            return Err(ReadError::RecordTooLong {
                offset: start,
                len: u64::from(caplen),
                limit: MAX_RECORD,
            });
        }
        let data = data_off
            .checked_add(caplen as usize)
            .filter(|&end| end <= body)
            .and_then(|end| b.get(data_off..end))
            .ok_or_else(|| {
                ReadError::malformed(
                    start,
                    format!("packet block (captured length {caplen} beyond the block)"),
                )
            })?;
        let desc = usize::try_from(iface).ok().and_then(|i| self.ifaces.get(i));
        Ok(Frame {
            iface,
            link_type: desc.map(|d| d.link_type),
            ts_ns: ts
                .zip(desc)
                .map(|(t, d)| to_ns(t, d.units_per_sec, d.ts_offset_s)),
            orig_len: orig.max(caplen),
            data,
            offset: start,
        })
    }
}

/// An interface description block body (after type and length).
fn parse_idb(b: &[u8], big: bool, start: u64) -> Result<Interface, ReadError> {
    let short = || ReadError::malformed(start, "interface description (too short)");
    let mut iface = Interface {
        link_type: u32::from(u16_at(b, 0, big).ok_or_else(short)?),
        snaplen: u32_at(b, 4, big).ok_or_else(short)?,
        units_per_sec: 1_000_000,
        ts_offset_s: 0,
        name: None,
    };
    let end = b.len().saturating_sub(4);
    let mut o = 8usize;
    while o + 4 <= end {
        let code = u16_at(b, o, big).unwrap_or(OPT_END);
        let len = usize::from(u16_at(b, o + 2, big).unwrap_or(0));
        let Some(v) = b.get(o + 4..o + 4 + len).filter(|_| o + 4 + len <= end) else {
            return Err(ReadError::malformed(
                start,
                "interface option (length beyond the block)",
            ));
        };
        match code {
            OPT_END => break,
            OPT_IF_NAME => iface.name = Some(String::from_utf8_lossy(v).into_owned()),
            OPT_IF_TSRESOL => {
                let r = v.first().copied().unwrap_or(6);
                let units = if r & 0x80 != 0 {
                    1u128.checked_shl(u32::from(r & 0x7f))
                } else {
                    10u128.checked_pow(u32::from(r))
                };
                iface.units_per_sec = units
                    .filter(|&u| u != 0)
                    .ok_or_else(|| ReadError::malformed(start, format!("if_tsresol {r:#04x}")))?;
            }
            OPT_IF_TSOFFSET => {
                if let Ok(s) = <[u8; 8]>::try_from(v) {
                    iface.ts_offset_s = if big {
                        i64::from_be_bytes(s)
                    } else {
                        i64::from_le_bytes(s)
                    };
                }
            }
            _ => {}
        }
        o += 4 + len.div_ceil(4) * 4;
    }
    Ok(iface)
}
