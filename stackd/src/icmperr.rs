//! ICMP errors for connected UDP sockets, as Linux reports them.
//!
//! A UDP datagram sent to a port nobody listens on comes back as an ICMP "port unreachable"
//! (smoltcp sends those too). On Linux a *connected* UDP socket then fails its next `recv`
//! (or `send`) with `ECONNREFUSED`; other "hard" errors (protocol unreachable, prohibited
//! destinations, ...) are reported the same way with their own errno, while "soft" ones (net
//! or host unreachable from a router, fragmentation needed) are not, and an unconnected
//! socket hears nothing unless it set `IP_RECVERR` (`__udp4_lib_err`/`__udp6_lib_err` with
//! the `icmp_err_convert`/`icmpv6_err_convert` tables).
//!
//! The node keeps two smoltcp raw sockets (ICMPv4 and ICMPv6) that receive a copy of every
//! ICMP packet while smoltcp goes on handling echo and neighbour discovery itself. This
//! module reads them and says which (local port, peer) pair an error is for and with which
//! errno; the node hands it to the matching connected UDP socket as an error record on its
//! socketpair (`DgramHeader::error`), which the shim turns into `-1`/errno on the next
//! receive.
//!
//! With `IP_RECVERR`/`IPV6_RECVERR` set, as on Linux, every error (soft ones too, and on
//! unconnected sockets) is reported, and also queued with its ICMP details, the offender and
//! the quoted payload for `recvmsg(MSG_ERRQUEUE)` (`ctl::SO_IOTH_ERRQUEUE`). `SO_ERROR`
//! takes the pending error record (the shim peeks at the socketpair).
//!
//! Not done: errors on `send` (only the next receive or `SO_ERROR` reports it), `POLLERR`
//! (the socket polls readable instead: the record is a message), path MTU from
//! "fragmentation needed"/"packet too big".

#![deny(unsafe_code)]

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::raw;
use smoltcp::wire::{IpProtocol, IpVersion, Ipv4Packet, Ipv6Packet};
use std::net::{IpAddr, SocketAddr};

/// An ICMP error about a datagram the UDP socket bound to `port` sent to `peer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpError {
    pub port: u16,
    pub peer: SocketAddr,
    pub errno: i32,
    /// A "hard" error, reported to a connected socket without `IP_RECVERR` too.
    pub hard: bool,
    /// `SO_EE_ORIGIN_ICMP` (2) or `SO_EE_ORIGIN_ICMP6` (3), and the ICMP type and code.
    pub origin: u8,
    pub ty: u8,
    pub code: u8,
    /// The MTU of "fragmentation needed" / "packet too big", else 0.
    pub info: u32,
    /// The ICMP error's source.
    pub offender: IpAddr,
    /// The quoted datagram's payload (what follows its UDP header, as far as it is quoted).
    pub payload: Vec<u8>,
}

/// `SO_EE_ORIGIN_ICMP`, `SO_EE_ORIGIN_ICMP6`.
pub const ORIGIN_ICMP: u8 = 2;
pub const ORIGIN_ICMP6: u8 = 3;

/// The two raw sockets that see ICMP errors.
pub struct IcmpErrors {
    v4: SocketHandle,
    v6: SocketHandle,
}

impl IcmpErrors {
    pub fn open(set: &mut SocketSet<'static>) -> IcmpErrors {
        let mut add = |v, p| {
            let buf = || raw::PacketBuffer::new(vec![raw::PacketMetadata::EMPTY; 8], vec![0; 4096]);
            set.add(raw::Socket::new(Some(v), Some(p), buf(), buf()))
        };
        IcmpErrors {
            v4: add(IpVersion::Ipv4, IpProtocol::Icmp),
            v6: add(IpVersion::Ipv6, IpProtocol::Icmpv6),
        }
    }

    /// The UDP errors that arrived since the last call (other ICMP is read and dropped).
    pub fn take(&self, set: &mut SocketSet<'static>, out: &mut Vec<UdpError>) {
        for (h, v6) in [(self.v4, false), (self.v6, true)] {
            let s = set.get_mut::<raw::Socket>(h);
            while let Ok(pkt) = s.recv() {
                let e = if v6 { parse_v6(pkt) } else { parse_v4(pkt) };
                if let Some(e) = e {
                    out.push(e);
                }
            }
        }
    }
}

/// Linux's `icmp_err_convert`: the errno of an ICMPv4 error and whether it is hard.
fn v4_error(ty: u8, code: u8) -> Option<(i32, bool)> {
    Some(match (ty, code) {
        (3, 0) => (libc::ENETUNREACH, false),
        (3, 1) => (libc::EHOSTUNREACH, false),
        (3, 2) => (libc::ENOPROTOOPT, true),
        (3, 3) => (libc::ECONNREFUSED, true),
        (3, 4) => (libc::EMSGSIZE, false),
        (3, 5) => (libc::EOPNOTSUPP, false),
        (3, 6) => (libc::ENETUNREACH, true),
        (3, 7) => (libc::EHOSTDOWN, true),
        (3, 8) => (libc::ENONET, true),
        (3, 9) => (libc::ENETUNREACH, true),
        (3, 10) => (libc::EHOSTUNREACH, true),
        (3, 11) => (libc::ENETUNREACH, false),
        (3, 12) => (libc::EHOSTUNREACH, false),
        (3, 13..=15) => (libc::EHOSTUNREACH, true),
        // Time exceeded, parameter problem.
        (11, _) => (libc::EHOSTUNREACH, false),
        (12, _) => (libc::EPROTO, true),
        _ => return None,
    })
}

/// Linux's `icmpv6_err_convert`.
fn v6_error(ty: u8, code: u8) -> Option<(i32, bool)> {
    Some(match (ty, code) {
        // Destination unreachable: no route, beyond scope, address unreachable (soft);
        // administratively prohibited, source address failed policy, reject route; port
        // unreachable.
        (1, 0) | (1, 2) | (1, 3) => (libc::EHOSTUNREACH, false),
        (1, 1) | (1, 5) | (1, 6) => (libc::EACCES, true),
        (1, 4) => (libc::ECONNREFUSED, true),
        (1, _) => (libc::EPROTO, true),
        // Packet too big, time exceeded, parameter problem.
        (2, _) => (libc::EMSGSIZE, false),
        (3, _) => (libc::EHOSTUNREACH, false),
        (4, _) => (libc::EPROTO, true),
        _ => return None,
    })
}

/// Source and destination ports of the UDP header quoted in an ICMP error, and the quoted
/// payload after it.
fn quoted_udp(udp: &[u8]) -> Option<(u16, u16, Vec<u8>)> {
    let b = udp.get(..8)?;
    Some((
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
        udp[8..].to_vec(),
    ))
}

/// An ICMPv4 packet (IPv4 header included, as smoltcp's raw sockets give it).
pub fn parse_v4(pkt: &[u8]) -> Option<UdpError> {
    let ip = Ipv4Packet::new_checked(pkt).ok()?;
    let icmp = ip.payload();
    if icmp.len() < 8 {
        return None;
    }
    let (ty, code) = (icmp[0], icmp[1]);
    let (errno, hard) = v4_error(ty, code)?;
    let info = if (ty, code) == (3, 4) {
        u32::from(u16::from_be_bytes([icmp[6], icmp[7]]))
    } else {
        0
    };
    let inner = Ipv4Packet::new_checked(&icmp[8..]).ok()?;
    if inner.next_header() != IpProtocol::Udp {
        return None;
    }
    let hl = usize::from(inner.header_len());
    let (sport, dport, payload) = quoted_udp(icmp.get(8 + hl..)?)?;
    Some(UdpError {
        port: sport,
        peer: SocketAddr::new(IpAddr::V4(inner.dst_addr()), dport),
        errno,
        hard,
        origin: ORIGIN_ICMP,
        ty,
        code,
        info,
        offender: IpAddr::V4(ip.src_addr()),
        payload,
    })
}

/// An ICMPv6 packet (IPv6 header included). The quoted packet must carry UDP right after its
/// fixed header (no extension headers).
pub fn parse_v6(pkt: &[u8]) -> Option<UdpError> {
    let ip = Ipv6Packet::new_checked(pkt).ok()?;
    let icmp = ip.payload();
    if icmp.len() < 8 {
        return None;
    }
    let (ty, code) = (icmp[0], icmp[1]);
    let (errno, hard) = v6_error(ty, code)?;
    let info = if ty == 2 {
        u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]])
    } else {
        0
    };
    let inner = &icmp[8..];
    if inner.len() < 40 || inner[0] >> 4 != 6 || inner[6] != 17 {
        return None;
    }
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&inner[24..40]);
    let (sport, dport, payload) = quoted_udp(&inner[40..])?;
    Some(UdpError {
        port: sport,
        peer: SocketAddr::new(IpAddr::V6(dst.into()), dport),
        errno,
        hard,
        origin: ORIGIN_ICMP6,
        ty,
        code,
        info,
        offender: IpAddr::V6(ip.src_addr()),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, Icmpv6DstUnreachable, Icmpv6Packet,
        Icmpv6Repr, Ipv4Address, Ipv4Repr, Ipv6Address, Ipv6Repr,
    };

    /// The datagram smoltcp's error quotes: IPv4 header + UDP header + payload.
    fn quoted4() -> (Ipv4Repr, Vec<u8>) {
        let repr = Ipv4Repr {
            src_addr: Ipv4Address::new(10, 0, 0, 1),
            dst_addr: Ipv4Address::new(10, 0, 0, 2),
            next_header: IpProtocol::Udp,
            payload_len: 12,
            hop_limit: 64,
        };
        let udp = [0xc3, 0x50, 0x23, 0x28, 0, 12, 0, 0, 1, 2, 3, 4];
        (repr, udp.to_vec())
    }

    fn icmp4(reason: Icmpv4DstUnreachable) -> Vec<u8> {
        let (header, data) = quoted4();
        let icmp = Icmpv4Repr::DstUnreachable {
            reason,
            header,
            data: &data,
        };
        let outer = Ipv4Repr {
            src_addr: Ipv4Address::new(10, 0, 0, 2),
            dst_addr: Ipv4Address::new(10, 0, 0, 1),
            next_header: IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            hop_limit: 64,
        };
        let mut b = vec![0u8; 20 + icmp.buffer_len()];
        let cs = ChecksumCapabilities::default();
        outer.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]), &cs);
        icmp.emit(&mut Icmpv4Packet::new_unchecked(&mut b[20..]), &cs);
        b
    }

    #[test]
    fn port_unreachable_v4_is_econnrefused() {
        let e = parse_v4(&icmp4(Icmpv4DstUnreachable::PortUnreachable)).unwrap();
        assert_eq!(e.port, 50000);
        assert_eq!(e.peer, "10.0.0.2:9000".parse().unwrap());
        assert_eq!(e.errno, libc::ECONNREFUSED);
        assert!(e.hard);
        assert_eq!((e.origin, e.ty, e.code), (ORIGIN_ICMP, 3, 3));
        assert_eq!(e.offender, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(e.payload, [1, 2, 3, 4]);
    }

    #[test]
    fn soft_errors_v4_are_soft() {
        let e = parse_v4(&icmp4(Icmpv4DstUnreachable::HostUnreachable)).unwrap();
        assert_eq!((e.errno, e.hard), (libc::EHOSTUNREACH, false));
        let e = parse_v4(&icmp4(Icmpv4DstUnreachable::NetUnreachable)).unwrap();
        assert_eq!((e.errno, e.hard), (libc::ENETUNREACH, false));
        assert_eq!(parse_v4(&[0u8; 10]), None);
    }

    #[test]
    fn port_unreachable_v6_is_econnrefused() {
        let src = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
        let dst = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
        let header = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Udp,
            payload_len: 12,
            hop_limit: 64,
        };
        let data = [0xc3, 0x50, 0x23, 0x28, 0, 12, 0, 0, 1, 2, 3, 4];
        let icmp = Icmpv6Repr::DstUnreachable {
            reason: Icmpv6DstUnreachable::PortUnreachable,
            header,
            data: &data,
        };
        let outer = Ipv6Repr {
            src_addr: dst,
            dst_addr: src,
            next_header: IpProtocol::Icmpv6,
            payload_len: icmp.buffer_len(),
            hop_limit: 64,
        };
        let mut b = vec![0u8; 40 + icmp.buffer_len()];
        outer.emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
        icmp.emit(
            &dst,
            &src,
            &mut Icmpv6Packet::new_unchecked(&mut b[40..]),
            &ChecksumCapabilities::default(),
        );
        let e = parse_v6(&b).unwrap();
        assert_eq!(e.port, 50000);
        assert_eq!(e.peer, "[fd00::2]:9000".parse().unwrap());
        assert_eq!(e.errno, libc::ECONNREFUSED);
        assert!(e.hard);
        assert_eq!((e.origin, e.ty, e.code), (ORIGIN_ICMP6, 1, 4));
        assert_eq!(e.offender, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(e.payload, [1, 2, 3, 4]);
    }
}
