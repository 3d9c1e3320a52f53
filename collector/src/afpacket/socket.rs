//! One AF_PACKET socket bound to one interface: both directions (outgoing
//! packets are not ignored), a receive timeout so its reader can stop, and
//! the kernel's drop counter.

use std::{
    io,
    mem::{size_of, zeroed},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use flowlens_correlator::types::Hook;

/// `PACKET_OUTGOING` (linux/if_packet.h): a packet this host sent.
const PACKET_OUTGOING: u8 = 4;

/// A frame read from the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Bytes copied into the buffer (at most its size).
    pub captured: usize,
    /// The frame's length on the wire (link header included).
    pub wire_len: u32,
    /// Egress for packets this interface sent, else ingress.
    pub hook: Hook,
}

/// Counters of `PACKET_STATISTICS` since the last read (the kernel resets them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketStats {
    /// Packets received.
    pub packets: u64,
    /// Packets dropped: the receive queue was full.
    pub drops: u64,
}

/// An AF_PACKET `SOCK_RAW` socket bound to one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl PacketSocket {
    /// Opens a socket receiving every protocol on `ifindex`, woken at least
    /// every `timeout` (reads then return `Ok(None)`), with a receive buffer
    /// of `rcvbuf` bytes.
    pub fn open(ifindex: u32, timeout: Duration, rcvbuf: usize) -> io::Result<Self> {
        let proto_be = (libc::ETH_P_ALL as u16).to_be();
        // Protocol 0 receives nothing until bind() names the protocol and the
        // interface: no frame of another interface is ever queued.
        // SAFETY: plain syscall; the result is checked and owned below.
        let raw =
            cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let sock = Self {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        };
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
        };
        sock.setsockopt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
        let buf = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
        // SO_RCVBUFFORCE passes rmem_max as root; SO_RCVBUF is capped by it.
        if sock
            .setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &buf)
            .is_err()
        {
            sock.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, &buf)?;
        }
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto_be;
        sll.sll_ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        cvt(unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        sock.take_stats()?;
        Ok(sock)
    }

    fn setsockopt<T>(&self, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` points to a live T of the size passed.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    /// Reads one frame into `buf` (a longer frame is cut: its wire length is
    /// still reported); `Ok(None)` when the timeout passed or a signal came.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<FrameInfo>> {
        self.recv_flags(buf, 0)
    }

    /// [`PacketSocket::recv`] without waiting: `Ok(None)` when nothing is
    /// queued (to drain the socket before it is closed).
    pub fn recv_queued(&self, buf: &mut [u8]) -> io::Result<Option<FrameInfo>> {
        self.recv_flags(buf, libc::MSG_DONTWAIT)
    }

    fn recv_flags(&self, buf: &mut [u8], flags: libc::c_int) -> io::Result<Option<FrameInfo>> {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` and `sll` are valid for writes of the sizes passed.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC | flags,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        let wire = n as usize;
        Ok(Some(FrameInfo {
            captured: wire.min(buf.len()),
            wire_len: u32::try_from(wire).unwrap_or(u32::MAX),
            hook: hook_of(sll.sll_pkttype),
        }))
    }

    /// `PACKET_STATISTICS` since the last call.
    pub fn take_stats(&self) -> io::Result<PacketStats> {
        // SAFETY: all-zero is a valid tpacket_stats.
        let mut st: libc::tpacket_stats = unsafe { zeroed() };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` is valid for writes of `len` bytes.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        })?;
        // tp_packets counts dropped packets too.
        Ok(PacketStats {
            packets: u64::from(st.tp_packets.saturating_sub(st.tp_drops)),
            drops: u64::from(st.tp_drops),
        })
    }
}

/// The hook a packet type maps to: what the interface sent is egress.
pub fn hook_of(pkttype: u8) -> Hook {
    if pkttype == PACKET_OUTGOING {
        Hook::Egress
    } else {
        Hook::Ingress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_is_egress() {
        assert_eq!(hook_of(PACKET_OUTGOING), Hook::Egress);
        for host_side in [0u8, 1, 2, 3] {
            assert_eq!(hook_of(host_side), Hook::Ingress);
        }
    }
}
