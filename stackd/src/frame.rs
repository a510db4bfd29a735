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
    fn hairpin_decision() {
        let mac = [2, 0, 0, 0, 0, 1];
        let mut f = v4_tcp(2);
        assert!(!is_for_self(&f, &mac, &[]));
        f[0..6].copy_from_slice(&mac);
        assert!(is_for_self(&f, &mac, &[]));
    }
}
