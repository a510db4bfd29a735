//! Neighbour entries set from outside: `ioctl(SIOCSARP)` in a node's process (the control
//! request `SetNeighbour`).
//!
//! A DHCP server (dnsmasq) answers a client that has no address yet and did not ask for a
//! broadcast reply (smoltcp's client clears the broadcast flag) by unicast to the offered
//! address, after telling the kernel the client's MAC with `SIOCSARP`: nobody would answer an
//! ARP request for that address. smoltcp has no public call to fill its neighbour cache, so
//! the node feeds its own interface a synthetic ARP reply from the neighbour (sender: the
//! neighbour's MAC and IPv4 address; target: this node's MAC and its address on that subnet)
//! through the hairpin queue that ingress reads; smoltcp's `process_arp` fills the cache from
//! any ARP packet aimed at one of its addresses whose sender is on a local subnet.
//!
//! Not done: IPv6 neighbours (no `SIOCSARP` equivalent is needed by the programs we run),
//! deleting an entry (`SIOCDARP` is accepted and does nothing: the entry expires after 60 s).

#![deny(unsafe_code)]

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Ipv4Address,
};

/// The Ethernet frame of an ARP reply from `(their_mac, their_ip)` to `(our_mac, our_ip)`.
pub fn arp_reply_frame(
    our_mac: [u8; 6],
    our_ip: Ipv4Address,
    their_mac: [u8; 6],
    their_ip: Ipv4Address,
) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(their_mac),
        source_protocol_addr: their_ip,
        target_hardware_addr: EthernetAddress(our_mac),
        target_protocol_addr: our_ip,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(their_mac),
        dst_addr: EthernetAddress(our_mac),
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
    buf
}

/// Whether `mac` can be a neighbour's (unicast, not all zeros).
pub fn valid_mac(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && mac.iter().any(|b| *b != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_reply_parses_back() {
        let f = arp_reply_frame(
            [2, 0, 0, 0, 0, 1],
            Ipv4Address::new(10, 0, 9, 1),
            [2, 0, 0, 0, 0, 2],
            Ipv4Address::new(10, 0, 9, 100),
        );
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.ethertype(), EthernetProtocol::Arp);
        assert_eq!(e.dst_addr(), EthernetAddress([2, 0, 0, 0, 0, 1]));
        let a = ArpRepr::parse(&ArpPacket::new_checked(e.payload()).unwrap()).unwrap();
        let ArpRepr::EthernetIpv4 {
            operation,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = a
        else {
            panic!("{a:?}")
        };
        assert_eq!(operation, ArpOperation::Reply);
        assert_eq!(source_protocol_addr, Ipv4Address::new(10, 0, 9, 100));
        assert_eq!(target_protocol_addr, Ipv4Address::new(10, 0, 9, 1));
        assert!(valid_mac(&[2, 0, 0, 0, 0, 2]));
        assert!(!valid_mac(&[1, 0, 0, 0, 0, 2]) && !valid_mac(&[0; 6]));
    }
}
