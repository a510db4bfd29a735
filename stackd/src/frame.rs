//! Just enough header parsing of Ethernet frames for the daemon's own decisions, before (or
//! instead of) smoltcp seeing a frame:
//! * which incoming frames are TCP SYNs to which local address and port (the listen backlog
//!   is enforced by dropping SYNs, like Linux, instead of smoltcp's RST);
//! * which outgoing frames are for the node itself (hairpin);
//! * which neighbours answered ARP / neighbour solicitations (to tell "host unreachable");
//! * the RST that refuses a SYN no listener of its family may take;
//! * frames from the switch that carry loopback addresses (dropped).
//!
//! Everything is bounds-checked; a short or odd frame is simply "not interesting".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const ETH_HDR: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;

fn ethertype(f: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(12)?, *f.get(13)?]))
}

/// A TCP SYN (without ACK): `(source, destination address, destination port)`.
pub fn tcp_syn(f: &[u8]) -> Option<(IpAddr, IpAddr, u16)> {
    let (src, dst, tcp) = match ethertype(f)? {
        ETHERTYPE_IPV4 => {
            let ip = f.get(ETH_HDR..)?;
            if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 6 {
                return None;
            }
            // Fragments other than the first carry no TCP header.
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
                return None;
            }
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            (IpAddr::V4(src), IpAddr::V4(dst), ip.get(ihl..)?)
        }
        ETHERTYPE_IPV6 => {
            let ip = f.get(ETH_HDR..)?;
            if ip.len() < 40 || ip[6] != 6 {
                return None;
            }
            let src: [u8; 16] = ip[8..24].try_into().ok()?;
            let dst: [u8; 16] = ip[24..40].try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                ip.get(40..)?,
            )
        }
        _ => return None,
    };
    if tcp.len() < 20 {
        return None;
    }
    let flags = tcp[13];
    if flags & 0x02 == 0 || flags & 0x14 != 0 {
        return None;
    }
    Some((src, dst, u16::from_be_bytes([tcp[2], tcp[3]])))
}

/// The IP address a neighbour announced about itself (ARP sender, or NDP advertisement
/// target), if the frame is such an announcement.
pub fn neighbour_seen(f: &[u8]) -> Option<IpAddr> {
    match ethertype(f)? {
        ETHERTYPE_ARP => {
            let a = f.get(ETH_HDR..ETH_HDR + 28)?;
            Some(IpAddr::V4(Ipv4Addr::new(a[14], a[15], a[16], a[17])))
        }
        ETHERTYPE_IPV6 => {
            let ip = f.get(ETH_HDR..)?;
            if ip.len() < 40 + 24 || ip[6] != 58 || ip[40] != 136 {
                return None;
            }
            let t: [u8; 16] = ip[48..64].try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(t)))
        }
        _ => None,
    }
}

/// Whether an outgoing frame must loop back to this node instead of going to the switch.
pub fn is_for_self(f: &[u8], mac: &[u8; 6], own: &[IpAddr]) -> bool {
    if f.len() < ETH_HDR {
        return false;
    }
    if &f[0..6] == mac {
        return true;
    }
    if f[0] & 1 == 0 {
        return false;
    }
    match ethertype(f) {
        Some(ETHERTYPE_ARP) => {
            // Request (op 1) whose target protocol address is ours.
            match f.get(ETH_HDR..ETH_HDR + 28) {
                Some(a) if a[7] == 1 => {
                    let t = IpAddr::V4(Ipv4Addr::new(a[24], a[25], a[26], a[27]));
                    own.contains(&t)
                }
                _ => false,
            }
        }
        Some(ETHERTYPE_IPV6) => {
            // Neighbour solicitation (135) whose target is ours.
            let ip = &f[ETH_HDR..];
            if ip.len() < 40 + 24 || ip[6] != 58 || ip[40] != 135 {
                return false;
            }
            let t: [u8; 16] = match ip[48..64].try_into() {
                Ok(t) => t,
                Err(_) => return false,
            };
            own.contains(&IpAddr::V6(Ipv6Addr::from(t)))
        }
        _ => false,
    }
}

/// Build an address-resolution request for `target` into `out`: an ARP request (IPv4) or a
/// neighbour solicitation to the solicited-node group (IPv6, RFC 4861 7.2.2), from `mac`
/// and the source address `src`. `false` when the families differ.
///
/// Whether a frame from the switch carries a loopback address (IPv4 127/8 or IPv6 `::1` as
/// source or destination, or in an ARP packet or a neighbour solicitation's target): such
/// frames never come from a well-behaved node, and the node's own loopback addresses must
/// not be reachable (or answer ARP/NDP) from the LAN.
pub fn loopback_martian(f: &[u8]) -> bool {
    let lo4 = |b: &[u8]| b[0] == 127;
    let lo6 = |b: &[u8]| b[..15].iter().all(|x| *x == 0) && b[15] == 1;
    match ethertype(f) {
        Some(ETHERTYPE_IPV4) => match f.get(ETH_HDR..ETH_HDR + 20) {
            Some(ip) => lo4(&ip[12..16]) || lo4(&ip[16..20]),
            None => false,
        },
        Some(ETHERTYPE_ARP) => match f.get(ETH_HDR..ETH_HDR + 28) {
            Some(a) => lo4(&a[14..18]) || lo4(&a[24..28]),
            None => false,
        },
        Some(ETHERTYPE_IPV6) => {
            let Some(ip) = f.get(ETH_HDR..ETH_HDR + 40) else {
                return false;
            };
            if lo6(&ip[8..24]) || lo6(&ip[24..40]) {
                return true;
            }
            // A neighbour solicitation or advertisement about ::1.
            matches!(f.get(ETH_HDR + 40..ETH_HDR + 64), Some(icmp)
                if ip[6] == 58 && (icmp[0] == 135 || icmp[0] == 136) && lo6(&icmp[8..24]))
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
        EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
        Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    };
    out.clear();
    let Ok(eth) = EthernetFrame::new_checked(f) else {
        return false;
    };
    let cs = ChecksumCapabilities::ignored();
    let (src, dst, tcp) = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                return false;
            };
            if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 {
                return false;
            }
            let h = usize::from(ip.header_len());
            let end = usize::from(ip.total_len()).min(eth.payload().len());
            let Some(tcp) = eth.payload().get(h..end) else {
                return false;
            };
            (
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(ip.dst_addr()),
                tcp,
            )
        }
        EthernetProtocol::Ipv6 => {
            let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else {
                return false;
            };
            if ip.next_header() != IpProtocol::Tcp {
                return false;
            }
            (
                IpAddress::Ipv6(ip.src_addr()),
                IpAddress::Ipv6(ip.dst_addr()),
                ip.payload(),
            )
        }
        _ => return false,
    };
    let Ok(syn) = TcpPacket::new_checked(tcp) else {
        return false;
    };
    let Ok(syn) = TcpRepr::parse(&syn, &src, &dst, &cs) else {
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

/// The daemon sends these itself because smoltcp rate-limits its own requests with one timer
/// for the whole neighbour cache: after asking for one neighbour it stays silent for 1 s
/// about every other, so a node's first packet to a second new neighbour (an IPv6 connect
/// right after an IPv4 one, a server's reply to a second new client) waited a full second.
/// smoltcp learns the answer (ARP reply, neighbour advertisement) like one to its own
/// request, and wakes the sockets waiting for that neighbour at once.
pub fn solicitation(mac: [u8; 6], src: IpAddr, target: IpAddr, out: &mut Vec<u8>) -> bool {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
        EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet, Ipv6Repr, NdiscRepr,
    };
    out.clear();
    let me = EthernetAddress(mac);
    match (src, target) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            let arp = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: me,
                source_protocol_addr: s,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: t,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_tcp(flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = 6;
        f[14 + 12..14 + 16].copy_from_slice(&[10, 0, 0, 2]);
        f[14 + 16..14 + 20].copy_from_slice(&[10, 0, 0, 1]);
        f[34 + 2..34 + 4].copy_from_slice(&80u16.to_be_bytes());
        f[34 + 13] = flags;
        f
    }

    #[test]
    fn loopback_frames_are_martians() {
        let mut f = v4_tcp(0x02);
        assert!(!loopback_martian(&f));
        f[14 + 16..14 + 20].copy_from_slice(&[127, 0, 0, 1]);
        assert!(loopback_martian(&f));
        // ARP request for 127.0.0.1.
        let mut a = vec![0u8; 14 + 28];
        a[12..14].copy_from_slice(&[0x08, 0x06]);
        a[14 + 14..14 + 18].copy_from_slice(&[10, 0, 0, 2]);
        assert!(!loopback_martian(&a));
        a[14 + 24..14 + 28].copy_from_slice(&[127, 0, 0, 1]);
        assert!(loopback_martian(&a));
        // IPv6 to ::1, and a neighbour solicitation for ::1.
        let mut v6 = vec![0u8; 14 + 40 + 24];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        v6[14] = 0x60;
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
        f[14 + 3] = 40; // total length
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[34 + 4..34 + 8].copy_from_slice(&1000u32.to_be_bytes());
        f[34 + 12] = 0x50; // data offset: 5 words
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
}
