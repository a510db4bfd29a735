//! Just enough header parsing of Ethernet frames for the daemon's own decisions, before (or
//! instead of) smoltcp seeing a frame:
//! * which incoming frames are TCP SYNs to which local address and port (the listen backlog
//!   is enforced by dropping SYNs, like Linux, instead of smoltcp's RST), and the 4-tuple of
//!   every TCP segment (to find its socket without smoltcp's scan, `stack::demux`);
//! * which outgoing frames are for the node itself (hairpin);
//! * which neighbours answered ARP / neighbour solicitations (to tell "host unreachable");
//! * the RST that refuses a SYN no listener of its family may take;
//! * frames from the switch that carry loopback addresses (dropped).
//!
//! Parsing goes through smoltcp's checked `wire` views (`new_checked` verifies that every
//! length field fits the buffer before any accessor reads it, and nothing is copied or
//! allocated), so a short or odd frame is simply "not interesting": `None` or `false`, never
//! a panic. A frame these views refuse is one smoltcp would drop as malformed too.

#![deny(unsafe_code)]

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, ETHERNET_HEADER_LEN as ETH_HDR, EthernetAddress,
    EthernetFrame, EthernetProtocol, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Packet,
    Ipv6Packet, TcpPacket,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An Ethernet/IPv4 ARP packet (the only kind the node speaks): operation, sender and target
/// protocol addresses.
fn arp(payload: &[u8]) -> Option<(ArpOperation, Ipv4Addr, Ipv4Addr)> {
    match ArpRepr::parse(&ArpPacket::new_checked(payload).ok()?).ok()? {
        ArpRepr::EthernetIpv4 {
            operation,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } => Some((operation, source_protocol_addr, target_protocol_addr)),
        _ => None,
    }
}

/// The target address of a neighbour solicitation or advertisement (RFC 4861 4.3, 4.4)
/// carried directly in `ip`, with its message type.
fn ndisc_target(ip: &Ipv6Packet<&[u8]>) -> Option<(Icmpv6Message, Ipv6Addr)> {
    if ip.next_header() != IpProtocol::Icmpv6 {
        return None;
    }
    // new_checked makes sure a solicitation or advertisement holds its target field.
    let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
    match icmp.msg_type() {
        t @ (Icmpv6Message::NeighborSolicit | Icmpv6Message::NeighborAdvert) => {
            Some((t, icmp.target_addr()))
        }
        _ => None,
    }
}

/// A TCP segment in a frame, with the frame and the IP addresses around it.
struct Segment<'a> {
    eth: EthernetFrame<&'a [u8]>,
    src: IpAddr,
    dst: IpAddr,
    tcp: TcpPacket<&'a [u8]>,
}

/// The TCP segment in an IPv4 or IPv6 frame (first fragment only).
fn tcp_segment(f: &[u8]) -> Option<Segment<'_>> {
    let eth = EthernetFrame::new_checked(f).ok()?;
    let (src, dst, tcp) = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            // Fragments other than the first carry no TCP header.
            if ip.version() != 4 || ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 {
                return None;
            }
            (
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
                ip.payload(),
            )
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            (
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                ip.payload(),
            )
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(tcp).ok()?;
    Some(Segment { eth, src, dst, tcp })
}

/// A TCP segment's 4-tuple as the receiver sees it, `(local address, local port, remote
/// address, remote port)`, and whether it is a SYN without ACK.
pub fn tcp_tuple(f: &[u8]) -> Option<((IpAddr, u16, IpAddr, u16), bool)> {
    let Segment { src, dst, tcp, .. } = tcp_segment(f)?;
    Some((
        (dst, tcp.dst_port(), src, tcp.src_port()),
        tcp.syn() && !tcp.ack() && !tcp.rst(),
    ))
}

/// A TCP SYN (without ACK): `(source, destination address, destination port)`.
pub fn tcp_syn(f: &[u8]) -> Option<(IpAddr, IpAddr, u16)> {
    let Segment { src, dst, tcp, .. } = tcp_segment(f)?;
    (tcp.syn() && !tcp.ack() && !tcp.rst()).then(|| (src, dst, tcp.dst_port()))
}

/// The IP address a neighbour announced about itself (ARP sender, or NDP advertisement
/// target), if the frame is such an announcement.
pub fn neighbour_seen(f: &[u8]) -> Option<IpAddr> {
    let eth = EthernetFrame::new_checked(f).ok()?;
    match eth.ethertype() {
        EthernetProtocol::Arp => arp(eth.payload()).map(|(_, sender, _)| IpAddr::V4(sender)),
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            match ndisc_target(&ip)? {
                (Icmpv6Message::NeighborAdvert, t) => Some(IpAddr::V6(t)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether an outgoing frame must loop back to this node instead of going to the switch.
pub fn is_for_self(f: &[u8], mac: &[u8; 6], own: &[IpAddr]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(f) else {
        return false;
    };
    let to = eth.dst_addr();
    if to == EthernetAddress(*mac) {
        return true;
    }
    if !to.is_multicast() {
        return false;
    }
    match eth.ethertype() {
        // A request whose target protocol address is ours.
        EthernetProtocol::Arp => arp(eth.payload()).is_some_and(|(op, _, target)| {
            op == ArpOperation::Request && own.contains(&IpAddr::V4(target))
        }),
        // A neighbour solicitation whose target is ours.
        EthernetProtocol::Ipv6 => Ipv6Packet::new_checked(eth.payload())
            .ok()
            .and_then(|ip| ndisc_target(&ip))
            .is_some_and(|(t, target)| {
                t == Icmpv6Message::NeighborSolicit && own.contains(&IpAddr::V6(target))
            }),
        _ => false,
    }
}

/// Whether a frame from the switch carries a loopback address (IPv4 127/8 or IPv6 `::1` as
/// source or destination, or in an ARP packet or a neighbour solicitation's target): such
/// frames never come from a well-behaved node, and the node's own loopback addresses must
/// not be reachable (or answer ARP/NDP) from the LAN.
pub fn loopback_martian(f: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(f) else {
        return false;
    };
    match eth.ethertype() {
        EthernetProtocol::Ipv4 => Ipv4Packet::new_checked(eth.payload())
            .is_ok_and(|ip| ip.src_addr().is_loopback() || ip.dst_addr().is_loopback()),
        EthernetProtocol::Arp => arp(eth.payload())
            .is_some_and(|(_, sender, target)| sender.is_loopback() || target.is_loopback()),
        EthernetProtocol::Ipv6 => {
            let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else {
                return false;
            };
            // Or a neighbour solicitation or advertisement about ::1.
            ip.src_addr().is_loopback()
                || ip.dst_addr().is_loopback()
                || ndisc_target(&ip).is_some_and(|(_, t)| t.is_loopback())
        }
        _ => false,
    }
}

/// The RST|ACK with which Linux refuses the TCP SYN in `f` (RFC 9293 3.10.7.1: sequence 0,
/// acknowledging the SYN), from `mac` back to the sender; checksums filled. For SYNs the
/// daemon answers itself because smoltcp would hand them to a listener that must not take
/// them (an IPv4 SYN to a port with only an IPv6-only listener).
pub fn rst_for_syn(f: &[u8], mac: [u8; 6], out: &mut Vec<u8>) -> bool {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetRepr, IpAddress, Ipv4Repr, Ipv6Repr, TcpControl, TcpRepr, TcpSeqNumber,
    };
    out.clear();
    let Some(Segment { eth, src, dst, tcp }) = tcp_segment(f) else {
        return false;
    };
    let (src, dst) = (IpAddress::from(src), IpAddress::from(dst));
    let cs = ChecksumCapabilities::ignored();
    let Ok(syn) = TcpRepr::parse(&tcp, &src, &dst, &cs) else {
        return false;
    };
    if syn.control != TcpControl::Syn || syn.ack_number.is_some() {
        return false;
    }
    let rst = TcpRepr {
        src_port: syn.dst_port,
        dst_port: syn.src_port,
        control: TcpControl::Rst,
        seq_number: TcpSeqNumber(0),
        ack_number: Some(syn.seq_number + syn.segment_len()),
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let full = ChecksumCapabilities::default();
    let ip_len = match dst {
        IpAddress::Ipv4(_) => 20,
        IpAddress::Ipv6(_) => 40,
    };
    out.resize(ETH_HDR + ip_len + rst.buffer_len(), 0);
    let mut o = EthernetFrame::new_unchecked(&mut out[..]);
    EthernetRepr {
        src_addr: EthernetAddress(mac),
        dst_addr: eth.src_addr(),
        ethertype: eth.ethertype(),
    }
    .emit(&mut o);
    let payload = o.payload_mut();
    match (dst, src) {
        (IpAddress::Ipv4(me), IpAddress::Ipv4(peer)) => {
            let ip = Ipv4Repr {
                src_addr: me,
                dst_addr: peer,
                next_header: IpProtocol::Tcp,
                payload_len: rst.buffer_len(),
                hop_limit: 64,
            };
            let mut p = Ipv4Packet::new_unchecked(payload);
            ip.emit(&mut p, &full);
            rst.emit(
                &mut TcpPacket::new_unchecked(p.payload_mut()),
                &dst,
                &src,
                &full,
            );
        }
        (IpAddress::Ipv6(me), IpAddress::Ipv6(peer)) => {
            let ip = Ipv6Repr {
                src_addr: me,
                dst_addr: peer,
                next_header: IpProtocol::Tcp,
                payload_len: rst.buffer_len(),
                hop_limit: 64,
            };
            let mut p = Ipv6Packet::new_unchecked(payload);
            ip.emit(&mut p);
            rst.emit(
                &mut TcpPacket::new_unchecked(p.payload_mut()),
                &dst,
                &src,
                &full,
            );
        }
        _ => return false,
    }
    true
}

/// Build an address-resolution request for `target` into `out`: an ARP request (IPv4) or a
/// neighbour solicitation to the solicited-node group (IPv6, RFC 4861 7.2.2), from `mac`
/// and the source address `src`. `false` when the families differ.
///
/// The daemon sends these itself because smoltcp rate-limits its own requests with one timer
/// for the whole neighbour cache: after asking for one neighbour it stays silent for 1 s
/// about every other, so a node's first packet to a second new neighbour (an IPv6 connect
/// right after an IPv4 one, a server's reply to a second new client) waited a full second.
/// smoltcp learns the answer (ARP reply, neighbour advertisement) like one to its own
/// request, and wakes the sockets waiting for that neighbour at once.
pub fn solicitation(mac: [u8; 6], src: IpAddr, target: IpAddr, out: &mut Vec<u8>) -> bool {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{EthernetRepr, Icmpv6Repr, Ipv6Repr, NdiscRepr};
    out.clear();
    let me = EthernetAddress(mac);
    match (src, target) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            arp_request(me, s, t, out);
            true
        }
        (IpAddr::V6(s), IpAddr::V6(t)) => {
            let o = t.octets();
            let group = Ipv6Addr::new(
                0xff02,
                0,
                0,
                0,
                0,
                1,
                0xff00 | o[13] as u16,
                u16::from_be_bytes([o[14], o[15]]),
            );
            let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                target_addr: t,
                lladdr: Some(me.into()),
            });
            let ip = Ipv6Repr {
                src_addr: s,
                dst_addr: group,
                next_header: IpProtocol::Icmpv6,
                payload_len: ns.buffer_len(),
                hop_limit: 255,
            };
            out.resize(ETH_HDR + ip.buffer_len() + ns.buffer_len(), 0);
            let mut f = EthernetFrame::new_unchecked(&mut out[..]);
            EthernetRepr {
                src_addr: me,
                dst_addr: EthernetAddress([0x33, 0x33, 0xff, o[13], o[14], o[15]]),
                ethertype: EthernetProtocol::Ipv6,
            }
            .emit(&mut f);
            let mut p = Ipv6Packet::new_unchecked(f.payload_mut());
            ip.emit(&mut p);
            ns.emit(
                &s,
                &group,
                &mut Icmpv6Packet::new_unchecked(p.payload_mut()),
                &ChecksumCapabilities::default(),
            );
            true
        }
        _ => false,
    }
}

/// A broadcast ARP request from (`me`, `sender`) for `target` into `out`.
fn arp_request(me: EthernetAddress, sender: Ipv4Addr, target: Ipv4Addr, out: &mut Vec<u8>) {
    use smoltcp::wire::EthernetRepr;
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: me,
        source_protocol_addr: sender,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    out.resize(ETH_HDR + arp.buffer_len(), 0);
    let mut f = EthernetFrame::new_unchecked(&mut out[..]);
    EthernetRepr {
        src_addr: me,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
}

/// The frame that tells the LAN "`addr` is at `mac`", for a node that starts or plugs in
/// again, so that switches and neighbours that knew the address elsewhere (a node that moved
/// to another host) learn where it is now: a gratuitous ARP request (sender and target both
/// `addr`, to everyone), as Linux sends with `arp_notify`.
pub fn gratuitous_arp(mac: [u8; 6], addr: Ipv4Addr, out: &mut Vec<u8>) {
    out.clear();
    arp_request(EthernetAddress(mac), addr, addr, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP segment 10.0.0.2 -> 10.0.0.1 port 80 with these flags.
    fn v4_tcp(flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 3] = 40; // total length
        f[14 + 9] = 6;
        f[14 + 12..14 + 16].copy_from_slice(&[10, 0, 0, 2]);
        f[14 + 16..14 + 20].copy_from_slice(&[10, 0, 0, 1]);
        f[34 + 2..34 + 4].copy_from_slice(&80u16.to_be_bytes());
        f[34 + 12] = 0x50; // data offset: 5 words
        f[34 + 13] = flags;
        f
    }

    /// An Ethernet frame with an IPv6 header (`next` header, addresses) and `len` zero bytes
    /// of payload.
    fn v6_frame(next: u8, src: &str, dst: &str, len: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + usize::from(len)];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[14 + 5] = len; // payload length
        f[14 + 6] = next;
        f[14 + 8..14 + 24].copy_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        f[14 + 24..14 + 40].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        f
    }

    /// An IPv6 TCP segment fd00::2 port 50000 -> fd00::1 port 443 with these flags.
    fn v6_tcp(flags: u8) -> Vec<u8> {
        let mut f = v6_frame(6, "fd00::2", "fd00::1", 20);
        f[54..54 + 2].copy_from_slice(&50000u16.to_be_bytes());
        f[54 + 2..54 + 4].copy_from_slice(&443u16.to_be_bytes());
        f[54 + 12] = 0x50;
        f[54 + 13] = flags;
        f
    }

    /// An Ethernet/IPv4 ARP packet (broadcast).
    fn arp_frame(op: u8, sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut a = vec![0u8; 14 + 28];
        a[0..6].copy_from_slice(&[0xff; 6]);
        a[12..14].copy_from_slice(&[0x08, 0x06]);
        a[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, op]);
        a[14 + 14..14 + 18].copy_from_slice(&sender);
        a[14 + 24..14 + 28].copy_from_slice(&target);
        a
    }

    /// A neighbour solicitation (135) or advertisement (136) about `target`, to a multicast
    /// MAC.
    fn ndisc_frame(ty: u8, target: Ipv6Addr) -> Vec<u8> {
        let mut f = v6_frame(58, "fe80::9", "ff02::1", 24);
        f[0..2].copy_from_slice(&[0x33, 0x33]);
        f[54] = ty;
        f[54 + 8..54 + 24].copy_from_slice(&target.octets());
        f
    }

    #[test]
    fn loopback_frames_are_martians() {
        let mut f = v4_tcp(0x02);
        assert!(!loopback_martian(&f));
        f[14 + 16..14 + 20].copy_from_slice(&[127, 0, 0, 1]);
        assert!(loopback_martian(&f));
        // ARP request for 127.0.0.1.
        let mut a = arp_frame(1, [10, 0, 0, 2], [0; 4]);
        assert!(!loopback_martian(&a));
        a[14 + 24..14 + 28].copy_from_slice(&[127, 0, 0, 1]);
        assert!(loopback_martian(&a));
        // IPv6 to ::1, and a neighbour solicitation for ::1.
        let mut v6 = vec![0u8; 14 + 40 + 24];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        v6[14] = 0x60;
        v6[14 + 5] = 24; // payload length
        v6[14 + 8] = 0xfd;
        v6[14 + 24] = 0xff;
        assert!(!loopback_martian(&v6));
        v6[14 + 6] = 58;
        v6[14 + 40] = 135;
        v6[14 + 40 + 23] = 1;
        assert!(loopback_martian(&v6));
        v6[14 + 40] = 128;
        assert!(!loopback_martian(&v6));
        // Destination ::1.
        v6[14 + 24] = 0;
        v6[14 + 39] = 1;
        assert!(loopback_martian(&v6));
        assert!(!loopback_martian(&[0u8; 10]));
    }

    #[test]
    fn syn_gets_rst_ack() {
        let mut f = v4_tcp(0x02);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[34 + 4..34 + 8].copy_from_slice(&1000u32.to_be_bytes());
        let mut out = Vec::new();
        assert!(rst_for_syn(&f, [2, 0, 0, 0, 0, 1], &mut out));
        assert_eq!(&out[..6], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(&out[6..12], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&out[14 + 12..14 + 20], &[10, 0, 0, 1, 10, 0, 0, 2]);
        let tcp = &out[34..];
        assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), 80);
        assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 40000);
        assert_eq!(u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]), 1001);
        assert_eq!(tcp[13], 0x14, "RST|ACK");
        // Not a SYN (an ACK), or garbage: nothing.
        f[34 + 13] = 0x10;
        assert!(!rst_for_syn(&f, [2, 0, 0, 0, 0, 1], &mut out));
        assert!(!rst_for_syn(&[0u8; 30], [2, 0, 0, 0, 0, 1], &mut out));
    }

    #[test]
    fn syn_detection() {
        let (s, d, p) = tcp_syn(&v4_tcp(0x02)).unwrap();
        assert_eq!(s, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(d, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(p, 80);
        assert!(tcp_syn(&v4_tcp(0x12)).is_none());
        assert!(tcp_syn(&v4_tcp(0x10)).is_none());
        assert!(tcp_syn(&[0u8; 20]).is_none());
        let mut short = v4_tcp(0x02);
        short.truncate(40);
        assert!(tcp_syn(&short).is_none());
    }

    #[test]
    fn solicitations_parse_back() {
        use smoltcp::wire::{EthernetFrame, Icmpv6Packet, Icmpv6Repr, Ipv6Packet, NdiscRepr};
        let mac = [2, 0, 0, 0, 0, 1];
        let mut out = Vec::new();
        let src: IpAddr = "fd00::1".parse().unwrap();
        let t: IpAddr = "fd00::1:2:3".parse().unwrap();
        assert!(solicitation(mac, src, t, &mut out));
        assert_eq!(&out[0..6], &[0x33, 0x33, 0xff, 0x02, 0x00, 0x03]);
        let f = EthernetFrame::new_checked(&out[..]).unwrap();
        let ip = Ipv6Packet::new_checked(f.payload()).unwrap();
        assert_eq!(ip.dst_addr(), "ff02::1:ff02:3".parse::<Ipv6Addr>().unwrap());
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        let caps = smoltcp::phy::ChecksumCapabilities::default();
        let IpAddr::V6(s6) = src else { unreachable!() };
        let r = Icmpv6Repr::parse(&s6, &ip.dst_addr(), &icmp, &caps).unwrap();
        assert!(matches!(
            r,
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { .. })
        ));
        assert!(solicitation(
            mac,
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            &mut out
        ));
        assert_eq!(&out[0..6], &[0xff; 6]);
        assert_eq!(&out[12..14], &[0x08, 0x06]);
        assert!(!solicitation(
            mac,
            src,
            "10.0.0.2".parse().unwrap(),
            &mut out
        ));
    }

    #[test]
    fn hairpin_decision() {
        let mac = [2, 0, 0, 0, 0, 1];
        let mut f = v4_tcp(2);
        assert!(!is_for_self(&f, &mac, &[]));
        f[0..6].copy_from_slice(&mac);
        assert!(is_for_self(&f, &mac, &[]));
    }

    #[test]
    fn ipv6_syns_and_announcements() {
        let (s, d, p) = tcp_syn(&v6_tcp(0x02)).unwrap();
        assert_eq!(s, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(d, "fd00::1".parse::<IpAddr>().unwrap());
        assert_eq!(p, 443);
        assert!(tcp_syn(&v6_tcp(0x12)).is_none());
        assert!(tcp_syn(&v6_tcp(0x06)).is_none(), "SYN|RST");
        let mut out = Vec::new();
        assert!(rst_for_syn(&v6_tcp(0x02), [2, 0, 0, 0, 0, 1], &mut out));
        // Announcements: an ARP reply's sender, an advertisement's target; not a solicitation.
        let a = arp_frame(2, [10, 0, 0, 7], [10, 0, 0, 1]);
        assert_eq!(neighbour_seen(&a), Some("10.0.0.7".parse().unwrap()));
        let t: Ipv6Addr = "fd00::7".parse().unwrap();
        assert_eq!(neighbour_seen(&ndisc_frame(136, t)), Some(IpAddr::V6(t)));
        assert_eq!(neighbour_seen(&ndisc_frame(135, t)), None);
        assert_eq!(neighbour_seen(&v4_tcp(0x02)), None);
    }

    #[test]
    fn requests_for_own_addresses_loop_back() {
        let mac = [2, 0, 0, 0, 0, 1];
        let own: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        assert!(is_for_self(
            &arp_frame(1, [10, 0, 0, 2], [10, 0, 0, 1]),
            &mac,
            &own
        ));
        assert!(!is_for_self(
            &arp_frame(1, [10, 0, 0, 2], [10, 0, 0, 9]),
            &mac,
            &own
        ));
        assert!(!is_for_self(
            &arp_frame(2, [10, 0, 0, 2], [10, 0, 0, 1]),
            &mac,
            &own
        ));
        let me: Ipv6Addr = "fd00::1".parse().unwrap();
        assert!(is_for_self(&ndisc_frame(135, me), &mac, &own));
        assert!(!is_for_self(&ndisc_frame(136, me), &mac, &own));
        assert!(!is_for_self(
            &ndisc_frame(135, "fd00::9".parse().unwrap()),
            &mac,
            &own
        ));
        // Unicast to someone else: never, whatever it carries.
        let mut f = ndisc_frame(135, me);
        f[0] = 0x02;
        assert!(!is_for_self(&f, &mac, &own));
    }

    /// Every function on every proper prefix of a valid frame: `None`/`false`, no panic.
    #[test]
    fn truncated_frames_are_not_interesting() {
        let mac = [2, 0, 0, 0, 0, 1];
        let lo6 = Ipv6Addr::LOCALHOST;
        let own: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), IpAddr::V6(lo6)];
        let mut lo4 = v4_tcp(0x02);
        lo4[14 + 16..14 + 20].copy_from_slice(&[127, 0, 0, 1]);
        let frames = [
            v4_tcp(0x02),
            v6_tcp(0x02),
            lo4,
            arp_frame(1, [127, 0, 0, 1], [10, 0, 0, 1]),
            ndisc_frame(135, lo6),
            ndisc_frame(136, lo6),
        ];
        let mut out = Vec::new();
        for f in &frames {
            // The whole frame is interesting to at least one function...
            assert!(
                tcp_syn(f).is_some()
                    || neighbour_seen(f).is_some()
                    || is_for_self(f, &mac, &own)
                    || loopback_martian(f)
            );
            // ...and no prefix of it is to any.
            for n in 0..f.len() {
                let t = &f[..n];
                assert_eq!(tcp_syn(t), None, "{n} bytes");
                assert_eq!(neighbour_seen(t), None, "{n} bytes");
                assert!(!is_for_self(t, &mac, &own), "{n} bytes");
                assert!(!loopback_martian(t), "{n} bytes");
                assert!(!rst_for_syn(t, mac, &mut out), "{n} bytes");
            }
        }
    }

    /// Length fields that disagree with the frame: refused as smoltcp refuses them.
    #[test]
    fn malformed_headers_are_not_interesting() {
        let bad_v4 = |i: usize, v: u8| {
            let mut f = v4_tcp(0x02);
            f[i] = v;
            f
        };
        // IPv4: IHL below 5 or past the packet, total length past the frame or inside the
        // header, a later fragment; TCP data offset below 5 or past the segment.
        for f in [
            bad_v4(14, 0x44),
            bad_v4(14, 0x4f),
            bad_v4(14 + 3, 41),
            bad_v4(14 + 3, 19),
            bad_v4(14 + 7, 1),
            bad_v4(34 + 12, 0x40),
            bad_v4(34 + 12, 0x60),
            bad_v4(14, 0x65),
        ] {
            assert_eq!(tcp_syn(&f), None, "{f:?}");
            assert!(!rst_for_syn(&f, [2; 6], &mut Vec::new()));
        }
        // IPv6 payload length past the frame.
        let mut f = v6_tcp(0x02);
        f[14 + 5] = 21;
        assert_eq!(tcp_syn(&f), None);
        let mut f = ndisc_frame(135, Ipv6Addr::LOCALHOST);
        f[14 + 5] = 25;
        assert!(!loopback_martian(&f));
        // A solicitation too short to hold its target.
        let mut f = ndisc_frame(136, "fd00::7".parse().unwrap());
        f[14 + 5] = 20;
        f.truncate(14 + 40 + 20);
        assert_eq!(neighbour_seen(&f), None);
        // ARP for other hardware or protocol address sizes.
        let mut a = arp_frame(2, [10, 0, 0, 7], [127, 0, 0, 1]);
        a[14 + 4] = 8;
        assert_eq!(neighbour_seen(&a), None);
        assert!(!loopback_martian(&a));
    }

    /// Arbitrary bytes behind the interesting ethertypes never make a function panic.
    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mac = [2, 0, 0, 0, 0, 1];
        let own: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap()];
        let mut out = Vec::new();
        let mut f = Vec::with_capacity(128);
        for i in 0..20_000 {
            f.clear();
            let len = (next() % 128) as usize;
            f.extend((0..len).map(|_| next() as u8));
            if len >= 14 {
                let ty: [u8; 2] = [[0x08, 0x00], [0x08, 0x06], [0x86, 0xdd]][i % 3];
                f[12..14].copy_from_slice(&ty);
                f[0] |= 1;
            }
            if len >= 15 && i % 3 == 0 {
                f[14] = 0x45; // mostly plausible IPv4 headers
            }
            let _ = tcp_syn(&f);
            let _ = neighbour_seen(&f);
            let _ = is_for_self(&f, &mac, &own);
            let _ = loopback_martian(&f);
            let _ = rst_for_syn(&f, mac, &mut out);
        }
    }

    #[test]
    fn a_gratuitous_arp_parses_back() {
        let mac = [2, 0, 0, 0, 0, 9];
        let mut f = Vec::new();
        let ip = Ipv4Addr::new(10, 1, 0, 9);
        gratuitous_arp(mac, ip, &mut f);
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.dst_addr(), EthernetAddress::BROADCAST);
        let arp = ArpRepr::parse(&ArpPacket::new_checked(e.payload()).unwrap()).unwrap();
        assert_eq!(
            arp,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: EthernetAddress(mac),
                source_protocol_addr: ip,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: ip,
            }
        );
    }
}
