//! Interface notifications from the kernel: an rtnetlink socket subscribed
//! to `RTNLGRP_LINK` (`RTM_NEWLINK`, `RTM_DELLINK` of this network
//! namespace), read by a thread that hands each change to the exporter and
//! wakes it, so a new interface (a container's veth) is attached within
//! about a millisecond of its creation instead of at the next poll.
//!
//! The messages are parsed by [`parse_link_messages`] (pure, unit-tested);
//! a receive queue overrun (`ENOBUFS`: more changes than the socket could
//! hold) is reported as [`LinkEvent::Overrun`], and the exporter then lists
//! the interfaces again.

use std::{
    io,
    mem::{size_of, zeroed},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crossbeam_channel::{unbounded, Receiver, Sender};

use crate::ifaces::Iface;

/// `RTMGRP_LINK` (linux/rtnetlink.h): the link multicast group as a bind mask.
const RTMGRP_LINK: u32 = 1;
/// Message types (linux/rtnetlink.h, linux/netlink.h).
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const NLMSG_OVERRUN: u16 = 4;
/// `IFLA_IFNAME` (linux/if_link.h).
const IFLA_IFNAME: u16 = 3;
/// `AF_BRIDGE`: bridge port notifications (a port joining or leaving a
/// bridge), which are not the device itself appearing or going away.
const AF_BRIDGE: u8 = 7;
/// `IFF_UP`.
const IFF_UP: u32 = 0x1;
/// Bytes of `struct nlmsghdr` and `struct ifinfomsg`.
const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;
/// The socket's receive buffer: a burst of thousands of link changes (a
/// node starting many pods) fits before the kernel reports an overrun.
const RCVBUF_BYTES: libc::c_int = 4 << 20;
/// The reader wakes this often to see a stop request.
const READ_TIMEOUT: Duration = Duration::from_millis(200);

/// A change of this namespace's interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// An interface appeared or changed (name, flags): its state now.
    Changed(Iface),
    /// An interface was deleted (or moved to another network namespace).
    Deleted {
        /// Its index.
        index: u32,
        /// Its name, when the message carried one.
        name: Option<String>,
    },
    /// Notifications were lost (the socket's queue overflowed): list the
    /// interfaces again.
    Overrun,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One `ifinfomsg` + attributes (the payload of RTM_NEWLINK/RTM_DELLINK).
fn parse_link(kind: u16, payload: &[u8]) -> Option<LinkEvent> {
    let family = *payload.first()?;
    if family == AF_BRIDGE {
        return None;
    }
    let link_type = u32::from(u16_at(payload, 2)?);
    let index = u32_at(payload, 4)?;
    let flags = u32_at(payload, 8)?;
    let mut name = None;
    let mut at = IFINFOMSG;
    while at + 4 <= payload.len() {
        let len = usize::from(u16_at(payload, at)?);
        let ty = u16_at(payload, at + 2)? & 0x3fff;
        if len < 4 || at + len > payload.len() {
            break;
        }
        if ty == IFLA_IFNAME {
            let raw = &payload[at + 4..at + len];
            let raw = raw.split(|&c| c == 0).next().unwrap_or_default();
            name = Some(String::from_utf8_lossy(raw).into_owned());
        }
        at += align4(len);
    }
    match kind {
        RTM_DELLINK => Some(LinkEvent::Deleted { index, name }),
        _ => Some(LinkEvent::Changed(Iface {
            name: name?,
            index,
            up: flags & IFF_UP != 0,
            link_type,
        })),
    }
}

/// The link changes of one datagram of netlink messages, in order; messages
/// of other types and bridge-port notifications are skipped, a truncated
/// message ends the datagram.
pub fn parse_link_messages(buf: &[u8], out: &mut Vec<LinkEvent>) {
    let mut at = 0;
    while at + NLMSG_HDR <= buf.len() {
        let (Some(len), Some(kind)) = (u32_at(buf, at), u16_at(buf, at + 4)) else {
            return;
        };
        let len = len as usize;
        if len < NLMSG_HDR || at + len > buf.len() {
            return;
        }
        let payload = &buf[at + NLMSG_HDR..at + len];
        match kind {
            RTM_NEWLINK | RTM_DELLINK => out.extend(parse_link(kind, payload)),
            NLMSG_OVERRUN => out.push(LinkEvent::Overrun),
            // NLMSG_ERROR/DONE/NOOP and anything else: nothing for us.
            _ => {}
        }
        at += align4(len);
    }
}

/// The netlink socket, bound to the link group.
struct LinkSocket {
    fd: OwnedFd,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl LinkSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked and owned below.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let sock = Self {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        };
        let tv = libc::timeval {
            tv_sec: READ_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(READ_TIMEOUT.subsec_micros()),
        };
        sock.setsockopt(libc::SO_RCVTIMEO, &tv)?;
        // SO_RCVBUFFORCE passes rmem_max with CAP_NET_ADMIN; SO_RCVBUF is capped by it.
        if sock
            .setsockopt(libc::SO_RCVBUFFORCE, &RCVBUF_BYTES)
            .is_err()
        {
            sock.setsockopt(libc::SO_RCVBUF, &RCVBUF_BYTES)?;
        }
        // SAFETY: all-zero is a valid sockaddr_nl.
        let mut addr: libc::sockaddr_nl = unsafe { zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = RTMGRP_LINK;
        // SAFETY: `addr` is a valid sockaddr_nl of the size passed.
        cvt(unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        Ok(sock)
    }

    fn setsockopt<T>(&self, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` points to a live T of the size passed.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    /// One datagram; `Ok(0)` when the timeout passed.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        Ok(n as usize)
    }
}

/// The reader thread and what it found.
pub struct LinkWatch {
    events: Receiver<LinkEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LinkWatch {
    /// Subscribes to link notifications (before the interfaces are listed,
    /// so none is missed in between) and starts the reader; after each
    /// datagram it sends on `wake` (without waiting: one pending wake-up is
    /// enough).
    pub fn start(wake: Sender<()>) -> io::Result<Self> {
        let sock = LinkSocket::open()?;
        let (tx, events) = unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("link-watch".into())
                .spawn(move || read_loop(&sock, &tx, &wake, &stop))?
        };
        Ok(Self {
            events,
            stop,
            thread: Some(thread),
        })
    }

    /// The next change, if one arrived.
    pub fn try_recv(&self) -> Option<LinkEvent> {
        self.events.try_recv().ok()
    }
}

impl Drop for LinkWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_loop(sock: &LinkSocket, tx: &Sender<LinkEvent>, wake: &Sender<()>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 << 10];
    let mut events = Vec::new();
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        events.clear();
        match sock.recv(&mut buf) {
            Ok(0) => continue,
            Ok(n) => parse_link_messages(&buf[..n], &mut events),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => events.push(LinkEvent::Overrun),
            Err(e) => {
                failures += 1;
                if failures <= 3 {
                    tracing::warn!(error = %e, "Reading interface notifications failed; new interfaces are found by the 1 s poll meanwhile.");
                }
                std::thread::sleep(READ_TIMEOUT);
                continue;
            }
        }
        if events.is_empty() {
            continue;
        }
        for ev in events.drain(..) {
            if tx.send(ev).is_err() {
                return;
            }
        }
        let _ = wake.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink message as the kernel lays it out (native endian).
    fn message(kind: u16, family: u8, index: u32, flags: u32, name: Option<&str>) -> Vec<u8> {
        let mut payload = vec![family, 0];
        payload.extend(1u16.to_ne_bytes()); // ARPHRD_ETHER
        payload.extend(index.to_ne_bytes());
        payload.extend(flags.to_ne_bytes());
        payload.extend(0u32.to_ne_bytes()); // change mask
                                            // IFLA_MTU first, so the name is not the first attribute.
        payload.extend(8u16.to_ne_bytes());
        payload.extend(4u16.to_ne_bytes());
        payload.extend(1500u32.to_ne_bytes());
        if let Some(n) = name {
            let len = 4 + n.len() + 1;
            payload.extend((len as u16).to_ne_bytes());
            payload.extend(IFLA_IFNAME.to_ne_bytes());
            payload.extend(n.as_bytes());
            payload.push(0);
            payload.resize(align4(payload.len()), 0);
        }
        let mut m = Vec::new();
        m.extend(((NLMSG_HDR + payload.len()) as u32).to_ne_bytes());
        m.extend(kind.to_ne_bytes());
        m.extend(0u16.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend(payload);
        m
    }

    #[test]
    fn new_and_deleted_links_are_parsed_and_bridge_port_notes_skipped() {
        let mut buf = message(RTM_NEWLINK, 0, 42, IFF_UP | 0x1000, Some("veth1a2b"));
        buf.extend(message(
            RTM_NEWLINK,
            AF_BRIDGE,
            42,
            IFF_UP,
            Some("veth1a2b"),
        ));
        buf.extend(message(RTM_DELLINK, AF_BRIDGE, 42, 0, Some("veth1a2b")));
        buf.extend(message(RTM_NEWLINK, 0, 43, 0, Some("eth1")));
        buf.extend(message(RTM_DELLINK, 0, 42, 0, Some("veth1a2b")));
        let mut out = Vec::new();
        parse_link_messages(&buf, &mut out);
        assert_eq!(
            out,
            vec![
                LinkEvent::Changed(Iface {
                    name: "veth1a2b".into(),
                    index: 42,
                    up: true,
                    link_type: 1
                }),
                LinkEvent::Changed(Iface {
                    name: "eth1".into(),
                    index: 43,
                    up: false,
                    link_type: 1
                }),
                LinkEvent::Deleted {
                    index: 42,
                    name: Some("veth1a2b".into())
                },
            ]
        );
    }

    #[test]
    fn truncated_and_foreign_messages_do_not_panic() {
        let full = message(RTM_NEWLINK, 0, 7, IFF_UP, Some("abcdefghijklmno"));
        for cut in 0..full.len() {
            let mut out = Vec::new();
            parse_link_messages(&full[..cut], &mut out);
            assert!(out.is_empty(), "cut at {cut}: {out:?}");
        }
        // An attribute that claims more than there is: no name, no event
        // (the next poll finds the interface).
        let mut bad = full.clone();
        bad[NLMSG_HDR + IFINFOMSG + 8] = 0xff;
        let mut out = Vec::new();
        parse_link_messages(&bad, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // A new link without a name is not usable; other types are skipped.
        let mut out = Vec::new();
        parse_link_messages(&message(RTM_NEWLINK, 0, 9, 0, None), &mut out);
        parse_link_messages(&message(20, 0, 9, 0, Some("x")), &mut out);
        assert!(out.is_empty(), "{out:?}");
        let mut overrun = message(NLMSG_OVERRUN, 0, 0, 0, None);
        overrun.truncate(NLMSG_HDR);
        overrun[0..4].copy_from_slice(&(NLMSG_HDR as u32).to_ne_bytes());
        parse_link_messages(&overrun, &mut out);
        assert_eq!(out, vec![LinkEvent::Overrun]);
    }
}
