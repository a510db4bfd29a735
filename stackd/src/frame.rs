//! Just enough header parsing of Ethernet frames for the daemon's own decisions, before (or
//! instead of) smoltcp seeing a frame:
//! * which incoming frames are TCP SYNs to which local address and port (the listen backlog
//!   is enforced by dropping SYNs, like Linux, instead of smoltcp's RST);
//! * which outgoing frames are for the node itself (hairpin);
//! * which neighbours answered ARP / neighbour solicitations (to tell "host unreachable").
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
