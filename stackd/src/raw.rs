//! Raw ICMP sockets: `socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6)`, as router advertisement
//! daemons (dnsmasq `--enable-ra`, radvd) use them, and `socket(AF_INET, SOCK_RAW,
//! IPPROTO_ICMP)`, as busybox `ping` and `traceroute`-like tools do.
//!
//! The socket is a smoltcp raw socket for (IPv6, ICMPv6) or (IPv4, ICMP): it gets a copy of
//! every ICMP packet the interface accepts (for IPv6: addressed to one of the node's
//! addresses, to all-nodes, or to a group the node joined with `IPV6_JOIN_GROUP`, e.g.
//! all-routers `ff02::2`), while smoltcp still handles neighbour discovery, echo and SLAAC
//! itself. Like Linux, an IPv6 application sees the ICMPv6 message only (no IPv6 header), the
//! source address (scope id 1 for link-local sources) and, in the datagram header's `flags`,
//! the hop limit the packet arrived with ([`HOPS_PRESENT`] set; the shim turns it into an
//! `IPV6_HOPLIMIT` control message); types blocked by the socket's `ICMP6_FILTER` are
//! dropped. An IPv4 application sees the whole packet, IPv4 header included, as Linux gives
//! it; types blocked by `ICMP_FILTER` (level `SOL_RAW`) are dropped.
//!
//! Sending: the application gives an ICMP message; this module builds the IP header (IPv6
//! source: the node's link-local address for link-local and link-scope multicast
//! destinations, otherwise smoltcp's source address selection; hop limit from
//! `IPV6_UNICAST_HOPS`/`IPV6_MULTICAST_HOPS`, Linux's defaults 64 and 1; IPv4: smoltcp's
//! source address, TTL from `IP_TTL`, default 64). The ICMPv6 checksum is always computed (as
//! Linux does for `IPPROTO_ICMPV6`); the ICMPv4 one is the application's, as on Linux.
//!
//! Not done: raw sockets of other protocols (the shim refuses them with `EPERM`),
//! `IPV6_PKTINFO` as a *send* control message (the source is chosen as above), loopback of
//! the node's own multicast, `IPV6_HDRINCL`/`IP_HDRINCL`.

#![deny(unsafe_code)]

use foldhash::HashMap;
use ioth_common::csum;
use ioth_common::ctl::{DgramHeader, WireAddr};
use ioth_common::sys::{self, Errno};
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::raw;
use smoltcp::wire::{IpAddress, IpProtocol, IpVersion, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr};
use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// `ICMP6_FILTER` (level `IPPROTO_ICMPV6`), not in the libc crate.
pub const ICMP6_FILTER: i32 = 1;
/// `ICMP_FILTER` (level `SOL_RAW`): a 32-bit mask of the ICMPv4 types to drop.
pub const ICMP_FILTER: i32 = 1;
/// Set in a received datagram header's `flags`: the low 8 bits are the hop limit.
pub const HOPS_PRESENT: u32 = 1 << 8;

/// A new smoltcp raw socket for ICMPv6 (`v6`) or ICMPv4, added to `set`.
pub fn open(set: &mut SocketSet<'static>, v6: bool) -> SocketHandle {
    let buf =
        || raw::PacketBuffer::new(vec![raw::PacketMetadata::EMPTY; 64], vec![0u8; 128 * 1024]);
    let (v, p) = if v6 {
        (IpVersion::Ipv6, IpProtocol::Icmpv6)
    } else {
        (IpVersion::Ipv4, IpProtocol::Icmp)
    };
    set.add(raw::Socket::new(Some(v), Some(p), buf(), buf()))
}

/// Options a raw ICMPv6 socket keeps (stored by the node, read here).
pub fn is_raw_option(k: (i32, i32)) -> bool {
    matches!(
        k,
        (libc::IPPROTO_ICMPV6, ICMP6_FILTER)
            | (libc::SOL_RAW, ICMP_FILTER)
            | (libc::IPPROTO_IP, libc::IP_TTL)
            // The checksum offset at level SOL_RAW, as busybox `ping` sets it (Linux refuses
            // IPV6_CHECKSUM on ICMPv6 at level IPPROTO_IPV6 only).
            | (libc::SOL_RAW, libc::IPV6_CHECKSUM)
            | (
                libc::IPPROTO_IPV6,
                libc::IPV6_UNICAST_HOPS
                    | libc::IPV6_MULTICAST_HOPS
                    | libc::IPV6_MULTICAST_IF
                    | libc::IPV6_MULTICAST_LOOP
                    | libc::IPV6_CHECKSUM
                    | libc::IPV6_RECVPKTINFO
                    | libc::IPV6_RECVHOPLIMIT
                    | libc::IPV6_2292HOPLIMIT
                    | libc::IPV6_HOPLIMIT
            )
    )
}

/// Check an option value the way Linux does; `Err` is the errno.
pub fn check_option(k: (i32, i32), val: &[u8]) -> Result<(), Errno> {
    match k {
        (libc::IPPROTO_ICMPV6, ICMP6_FILTER) if val.len() > 32 => return Err(Errno::EINVAL),
        (libc::SOL_RAW, ICMP_FILTER) if val.len() < 4 => return Err(Errno::EINVAL),
        (libc::IPPROTO_IP, libc::IP_TTL) => {
            let v = int(val).ok_or(Errno::EINVAL)?;
            if !(-1..=255).contains(&v) || v == 0 {
                return Err(Errno::EINVAL);
            }
        }
        // The ICMPv6 checksum is always computed by the stack (RFC 3542 section 3.1).
        (libc::IPPROTO_IPV6, libc::IPV6_CHECKSUM) => return Err(Errno::EINVAL),
        (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS | libc::IPV6_MULTICAST_HOPS) => {
            let v = int(val).ok_or(Errno::EINVAL)?;
            if !(-1..=255).contains(&v) {
                return Err(Errno::EINVAL);
            }
        }
        _ => {}
    }
    Ok(())
}

fn int(v: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

/// Whether the filter blocks ICMPv6 `ty` (`ICMP6_FILTER_WILLBLOCK`).
fn blocked(filter: Option<&Vec<u8>>, ty: u8) -> bool {
    let Some(f) = filter else { return false };
    let w = (ty >> 5) as usize * 4;
    let Some(word) = f.get(w..w + 4) else {
        return false;
    };
    let word = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]);
    word & (1 << (ty & 31)) != 0
}

fn link_scope(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80 || (a.is_multicast() && a.segments()[0] & 0x000f <= 2)
}

/// The IPv6 packet for an ICMPv6 message `msg` to `dst` (checksum filled in).
pub fn build(src: Ipv6Addr, dst: Ipv6Addr, hops: u8, msg: &[u8]) -> Vec<u8> {
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: msg.len(),
        hop_limit: hops,
    };
    let mut b = vec![0u8; repr.buffer_len() + msg.len()];
    repr.emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
    let h = repr.buffer_len();
    b[h..].copy_from_slice(msg);
    if msg.len() >= 4 {
        b[h + 2] = 0;
        b[h + 3] = 0;
        let mut acc = csum::sum(&src.octets(), 0);
        acc = csum::sum(&dst.octets(), acc);
        acc = csum::sum(&(msg.len() as u32).to_be_bytes(), acc);
        acc = csum::sum(&[0, 0, 0, 58], acc);
        acc = csum::sum(&b[h..], acc);
        let c = csum::finish(acc);
        b[h + 2..h + 4].copy_from_slice(&c.to_be_bytes());
    }
    b
}

/// What the node lends a raw socket's pump.
pub struct Ctx<'a> {
    pub set: &'a mut SocketSet<'static>,
    pub iface: &'a mut Interface,
    /// The node's link-local address.
    pub ll: Ipv6Addr,
    pub scratch: &'a mut [u8],
}

/// One raw socket's view: its handle, family, the daemon's end of its socketpair, its
/// options and connected peer, and its readiness flags.
pub struct Sock<'a> {
    pub h: SocketHandle,
    pub v6: bool,
    pub fd: RawFd,
    pub opts: &'a HashMap<(i32, i32), Vec<u8>>,
    pub peer: Option<SocketAddr>,
    pub rd: &'a mut bool,
    pub wr: &'a mut bool,
}

/// The next datagram the application sent (its header and length in `scratch`), if the
/// smoltcp socket has room for it; `None` when there is none now (`rd` cleared when the
/// application's end has nothing more) or no room. Undecodable datagrams are dropped.
fn from_app(cx: &mut Ctx, s: &mut Sock) -> Option<(DgramHeader, usize)> {
    while *s.rd {
        if !cx.set.get::<raw::Socket>(s.h).can_send() {
            return None;
        }
        let n = crate::stack::app_message(s.fd, cx.scratch, s.rd)?;
        if let Ok(hdr) = DgramHeader::decode(&cx.scratch[..n]) {
            return Some((hdr, n));
        }
    }
    None
}

/// Give the application a datagram `msg` from `from` (with `flags`); `false` (and `wr`
/// cleared) when its end is full.
fn to_app(s: &mut Sock, from: SocketAddr, flags: u32, msg: &[u8]) -> bool {
    let hdr = DgramHeader {
        addr: WireAddr(Some(from)),
        len: msg.len() as u32,
        flags,
    }
    .encode();
    match sys::sendmsg(
        s.fd,
        &[IoSlice::new(&hdr), IoSlice::new(msg)],
        &[],
        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
    ) {
        Err(e) if e.is_again() => {
            *s.wr = false;
            false
        }
        _ => true,
    }
}

/// Move datagrams both ways between the app's socketpair and the smoltcp raw socket.
pub fn pump(mut cx: Ctx, mut s: Sock) {
    if !s.v6 {
        return pump4(cx, s);
    }
    // app → net
    while let Some((hdr, n)) = from_app(&mut cx, &mut s) {
        let dst = match hdr.addr.0.or(s.peer).map(|a| a.ip()) {
            Some(IpAddr::V6(d)) if d.to_ipv4_mapped().is_none() => d,
            _ => continue,
        };
        let multicast = dst.is_multicast();
        let hops = match int_opt(
            s.opts,
            if multicast {
                libc::IPV6_MULTICAST_HOPS
            } else {
                libc::IPV6_UNICAST_HOPS
            },
        ) {
            Some(v) if (0..=255).contains(&v) => v as u8,
            _ if multicast => 1,
            _ => 64,
        };
        let src = if link_scope(&dst) {
            cx.ll
        } else {
            match cx.iface.get_source_address(&IpAddress::Ipv6(dst)) {
                Some(IpAddress::Ipv6(a)) => a,
                _ => cx.ll,
            }
        };
        let pkt = build(src, dst, hops, &cx.scratch[DgramHeader::LEN..n]);
        let _ = cx.set.get_mut::<raw::Socket>(s.h).send_slice(&pkt);
    }
    // net → app
    while *s.wr {
        let sock = cx.set.get_mut::<raw::Socket>(s.h);
        let Ok(pkt) = sock.peek() else { break };
        let Ok(p) = Ipv6Packet::new_checked(pkt) else {
            let _ = sock.recv();
            continue;
        };
        let (src, dst, hops) = (p.src_addr(), p.dst_addr(), p.hop_limit());
        let msg = p.payload();
        let wanted = !msg.is_empty()
            && !blocked(s.opts.get(&(libc::IPPROTO_ICMPV6, ICMP6_FILTER)), msg[0])
            && s.peer.is_none_or(|a| a.ip() == IpAddr::V6(src));
        let _ = dst;
        if wanted {
            let scope = if link_scope(&src) { 1 } else { 0 };
            let from = SocketAddr::V6(SocketAddrV6::new(src, 0, 0, scope));
            if !to_app(&mut s, from, HOPS_PRESENT | hops as u32, msg) {
                break;
            }
        }
        let _ = cx.set.get_mut::<raw::Socket>(s.h).recv();
    }
}

/// The IPv4 packet for an ICMP message `msg` from `src` to `dst` (the message as given: its
/// checksum is the application's).
pub fn build4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, msg: &[u8]) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmp,
        payload_len: msg.len(),
        hop_limit: ttl,
    };
    let mut b = vec![0u8; repr.buffer_len() + msg.len()];
    repr.emit(
        &mut Ipv4Packet::new_unchecked(&mut b[..]),
        &ChecksumCapabilities::default(),
    );
    let h = repr.buffer_len();
    b[h..].copy_from_slice(msg);
    b
}

/// [`pump`] for a raw ICMPv4 socket.
fn pump4(mut cx: Ctx, mut s: Sock) {
    // app → net
    while let Some((hdr, n)) = from_app(&mut cx, &mut s) {
        let dst = match hdr.addr.0.or(s.peer).map(|a| a.ip()) {
            Some(IpAddr::V4(d)) => d,
            _ => continue,
        };
        let ttl = match s
            .opts
            .get(&(libc::IPPROTO_IP, libc::IP_TTL))
            .and_then(|v| int(v))
        {
            Some(v) if (1..=255).contains(&v) => v as u8,
            _ => 64,
        };
        let src = match cx.iface.get_source_address(&IpAddress::Ipv4(dst)) {
            Some(IpAddress::Ipv4(a)) => a,
            _ => continue,
        };
        let pkt = build4(src, dst, ttl, &cx.scratch[DgramHeader::LEN..n]);
        let _ = cx.set.get_mut::<raw::Socket>(s.h).send_slice(&pkt);
    }
    // net → app
    while *s.wr {
        let sock = cx.set.get_mut::<raw::Socket>(s.h);
        let Ok(pkt) = sock.peek() else { break };
        let Ok(p) = Ipv4Packet::new_checked(pkt) else {
            let _ = sock.recv();
            continue;
        };
        let src: Ipv4Addr = p.src_addr();
        let ty = p.payload().first().copied();
        let filter = s
            .opts
            .get(&(libc::SOL_RAW, ICMP_FILTER))
            .and_then(|v| int(v));
        let wanted = ty.is_some_and(|t| t >= 32 || filter.is_none_or(|f| f & (1 << t) == 0))
            && s.peer.is_none_or(|a| a.ip() == IpAddr::V4(src));
        if wanted {
            let from = SocketAddr::V4(SocketAddrV4::new(src, 0));
            let flags = HOPS_PRESENT | p.hop_limit() as u32;
            if !to_app(&mut s, from, flags, pkt) {
                break;
            }
        }
        let _ = cx.set.get_mut::<raw::Socket>(s.h).recv();
    }
}

fn int_opt(o: &HashMap<(i32, i32), Vec<u8>>, name: i32) -> Option<i32> {
    int(o.get(&(libc::IPPROTO_IPV6, name))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_packets_carry_a_valid_icmpv6_checksum() {
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let dst: Ipv6Addr = "ff02::1".parse().unwrap();
        // A router solicitation (type 133), checksum garbage on input.
        let b = build(src, dst, 255, &[133, 0, 0xde, 0xad, 0, 0, 0, 0]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.hop_limit(), 255);
        assert_eq!(p.next_header(), IpProtocol::Icmpv6);
        let mut acc = csum::sum(&src.octets(), 0);
        acc = csum::sum(&dst.octets(), acc);
        acc = csum::sum(&8u32.to_be_bytes(), acc);
        acc = csum::sum(&[0, 0, 0, 58], acc);
        acc = csum::sum(p.payload(), acc);
        assert_eq!(csum::finish(acc), 0, "checksum verifies");
    }

    #[test]
    fn built_ipv4_packets_carry_the_message_as_given() {
        let msg = [8, 0, 0x12, 0x34, 0, 1, 0, 1, b'p', b'i'];
        let b = build4(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            7,
            &msg,
        );
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.hop_limit(), 7);
        assert_eq!(p.next_header(), IpProtocol::Icmp);
        assert_eq!(p.payload(), msg);
        assert_eq!(
            check_option((libc::IPPROTO_IP, libc::IP_TTL), &0i32.to_ne_bytes()),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            check_option((libc::SOL_RAW, ICMP_FILTER), &[0; 2]),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn filters_and_scopes() {
        let mut f = vec![0u8; 32];
        // Block everything but 133 (router solicitation), as dnsmasq does.
        for w in 0..8 {
            f[w * 4..w * 4 + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
        }
        let w = (133 >> 5) * 4;
        let v = !(1u32 << (133 & 31));
        f[w..w + 4].copy_from_slice(&v.to_ne_bytes());
        assert!(!blocked(Some(&f), 133));
        assert!(blocked(Some(&f), 134));
        assert!(!blocked(None, 134));
        assert!(link_scope(&"ff02::2".parse().unwrap()));
        assert!(link_scope(&"fe80::5".parse().unwrap()));
        assert!(!link_scope(&"ff05::2".parse().unwrap()));
        assert!(!link_scope(&"fd00::1".parse().unwrap()));
        assert_eq!(
            check_option((libc::IPPROTO_IPV6, libc::IPV6_CHECKSUM), &[0; 4]),
            Err(Errno::EINVAL)
        );
    }
}
