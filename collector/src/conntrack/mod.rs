//! The kernel's connection tracking, read over netlink (ctnetlink): the
//! translated connections (NAT) the correlator joins into one conversation.
//!
//! Events (new and destroyed entries) come on a multicast socket; a dump of
//! the whole table at start-up, and again after the event socket overflowed
//! (ENOBUFS: events were lost), brings the index up to date. ctnetlink exists
//! on every kernel flowlens runs on (it is the `conntrack` tool's interface);
//! when it cannot be opened (no `nf_conntrack_netlink`, not allowed) the join
//! is off, which `flowlens doctor` and the log say.
//!
//! Timing: conntrack confirms a connection (and sends its NEW event) before
//! the first packet leaves the box, so when the flow map has counted a
//! translated packet, reading the event socket afterwards finds its mapping.

pub mod parse;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use flowlens_correlator::types::NatEvent;
use serde::Serialize;

use parse::{Message, MSG_CT_GET, SUBSYS_CTNETLINK};

const NETLINK_NETFILTER: libc::c_int = 12;
/// `NF_NETLINK_CONNTRACK_NEW | NF_NETLINK_CONNTRACK_DESTROY`.
const GROUPS: u32 = 0x1 | 0x4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// Receive buffer asked for the event socket (busy hosts confirm many
/// connections between two reads).
const RCVBUF: libc::c_int = 8 << 20;
/// A dump after lost events at most this often.
const RESYNC_GAP: Duration = Duration::from_secs(10);
/// Messages read per drain at most (the rest waits for the next one).
const MAX_PER_DRAIN: usize = 1 << 20;

/// Counters of the connection tracking reader, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConntrackStats {
    /// conntrack messages read (events and dump entries).
    pub messages: u64,
    /// Of those, translated connections handed to the correlator.
    pub translated: u64,
    /// Times the event socket overflowed (events lost; a dump follows).
    pub overflows: u64,
    /// Table dumps done.
    pub dumps: u64,
    /// Messages that could not be decoded.
    pub undecodable: u64,
}

/// Why connection tracking cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The netlink socket could not be opened or bound.
    #[error("cannot open the conntrack netlink socket ({0}); is nf_conntrack_netlink available?")]
    Open(io::Error),
    /// The table dump failed.
    #[error("cannot dump the conntrack table: {0}")]
    Dump(io::Error),
}

/// Events and dumps of the kernel's connection tracking.
pub struct ConntrackReader {
    events: OwnedFd,
    buf: Vec<u8>,
    last_dump: Option<Instant>,
    resync: bool,
    seq: u32,
    /// Counters.
    pub stats: ConntrackStats,
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: &OwnedFd, groups: u32) -> io::Result<()> {
    // SAFETY: sockaddr_nl is plain old data; zero is a valid value.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa.nl_groups = groups;
    // SAFETY: sa is a valid sockaddr_nl of the given length.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_rcvbuf(fd: &OwnedFd, bytes: libc::c_int) {
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt with a c_int value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// One recv into `buf`: Ok(None) when nothing is waiting.
fn recv(fd: &OwnedFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<Option<usize>> {
    // SAFETY: buf is valid for buf.len() bytes.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Ok(None),
        Some(libc::EINTR) => Ok(Some(0)),
        _ => Err(e),
    }
}

impl ConntrackReader {
    /// Subscribes to new and destroyed conntrack entries and dumps the table.
    pub fn open(out: &mut Vec<NatEvent>) -> Result<Self, ConntrackError> {
        let events = socket().map_err(ConntrackError::Open)?;
        bind(&events, GROUPS).map_err(ConntrackError::Open)?;
        set_rcvbuf(&events, RCVBUF);
        let mut r = Self {
            events,
            buf: vec![0u8; 1 << 16],
            last_dump: None,
            resync: false,
            seq: 0,
            stats: ConntrackStats::default(),
        };
        r.dump(out).map_err(ConntrackError::Dump)?;
        Ok(r)
    }

    /// Appends the translations reported since the last call (after a dump
    /// when events were lost). Never blocks.
    pub fn drain(&mut self, out: &mut Vec<NatEvent>) {
        let mut read = 0usize;
        loop {
            match recv(&self.events, &mut self.buf, libc::MSG_DONTWAIT) {
                Ok(None) => break,
                Ok(Some(n)) => {
                    read += 1;
                    let buf = std::mem::take(&mut self.buf);
                    self.decode(&buf[..n], out);
                    self.buf = buf;
                    if read >= MAX_PER_DRAIN {
                        break;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.stats.overflows += 1;
                    self.resync = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Reading conntrack events failed; NAT translations may be missed.");
                    self.resync = true;
                    break;
                }
            }
        }
        let due = self.last_dump.is_none_or(|t| t.elapsed() >= RESYNC_GAP);
        if self.resync && due {
            if let Err(e) = self.dump(out) {
                tracing::warn!(error = %e, "Dumping the conntrack table after lost events failed.");
            }
        }
    }

    /// Whether events were lost and not yet made up for by a dump.
    pub fn behind(&self) -> bool {
        self.resync
    }

    fn decode(&mut self, buf: &[u8], out: &mut Vec<NatEvent>) -> bool {
        let mut done = false;
        for m in parse::messages(buf) {
            match m {
                Ok(Message::Conntrack { kind, attrs }) => {
                    self.stats.messages += 1;
                    match parse::nat_event(kind, attrs) {
                        Ok(Some(ev)) => {
                            self.stats.translated += 1;
                            out.push(ev);
                        }
                        Ok(None) => {}
                        Err(_) => self.stats.undecodable += 1,
                    }
                }
                Ok(Message::Done) | Ok(Message::Error(_)) => done = true,
                Ok(Message::Other(_)) => {}
                Err(_) => self.stats.undecodable += 1,
            }
        }
        done
    }

    /// Reads the whole table on a socket of its own (blocking, bounded by a timeout).
    fn dump(&mut self, out: &mut Vec<NatEvent>) -> io::Result<()> {
        self.last_dump = Some(Instant::now());
        let fd = socket()?;
        bind(&fd, 0)?;
        self.seq = self.seq.wrapping_add(1);
        let req = parse::build(
            SUBSYS_CTNETLINK | MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
            self.seq,
            libc::AF_UNSPEC as u8,
            &[],
        );
        // SAFETY: req is a valid buffer of req.len() bytes.
        let n = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match recv(&fd, &mut buf, 0)? {
                Some(n) if n > 0 => {
                    if let Some(Ok(Message::Error(e))) = parse::messages(&buf[..n]).next() {
                        if e != 0 {
                            return Err(io::Error::from_raw_os_error(e));
                        }
                    }
                    if self.decode(&buf[..n], out) {
                        break;
                    }
                }
                // Non-blocking socket: wait briefly for the kernel's next batch.
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "dump took over 5 s",
                ));
            }
        }
        self.stats.dumps += 1;
        self.resync = false;
        Ok(())
    }
}

/// Whether connection tracking can be read here: `Ok(n)` with the number of
/// translated connections now, or why not (for `flowlens doctor`).
pub fn probe() -> Result<usize, ConntrackError> {
    let mut out = Vec::new();
    ConntrackReader::open(&mut out)?;
    Ok(out.len())
}

/// The NAT join's input for a run loop: connection tracking when it can be
/// read, else the table is told it is unavailable (its records get flagged).
pub struct NatFeed {
    reader: Option<ConntrackReader>,
    scratch: Vec<NatEvent>,
}

impl NatFeed {
    /// Opens connection tracking (logging why not) and feeds the current
    /// translations to `table`.
    pub fn start(table: &mut flowlens_correlator::ConversationTable) -> Self {
        use flowlens_correlator::NatJoin;
        let mut scratch = Vec::new();
        let reader = match ConntrackReader::open(&mut scratch) {
            Ok(r) => {
                table.set_nat_join(NatJoin::Available);
                tracing::info!(
                    translated = scratch.len(),
                    "Reading connection tracking: NAT'd conversations are joined."
                );
                Some(r)
            }
            Err(e) => {
                table.set_nat_join(NatJoin::Unavailable);
                tracing::warn!(error = %e, "Connection tracking is unavailable: a NAT'd conversation is reported once per side of the translation, and records that may be such a side are flagged nat=\"unjoined\".");
                None
            }
        };
        let mut feed = Self { reader, scratch };
        feed.apply(table);
        feed
    }

    /// Hands the translations reported since the last call to `table`; call
    /// it after reading the flow counters and before observing them.
    pub fn feed(&mut self, table: &mut flowlens_correlator::ConversationTable) {
        if let Some(r) = self.reader.as_mut() {
            r.drain(&mut self.scratch);
        }
        self.apply(table);
    }

    fn apply(&mut self, table: &mut flowlens_correlator::ConversationTable) {
        let now = crate::clock::monotonic_ns();
        for ev in self.scratch.drain(..) {
            table.observe_nat(ev, now);
        }
    }

    /// The reader's counters (`None`: connection tracking unavailable).
    pub fn stats(&self) -> Option<ConntrackStats> {
        self.reader.as_ref().map(|r| r.stats)
    }
}
