//! Checksum filling for native ports that leave checksums out (`NATIVE_FLAG_CSUM_FILL`):
//! `ioth_common::csum::fill` against smoltcp's own checksum code, and the switch filling them
//! in exactly where the rest of the world can see the frames (VDE ports, native clients that
//! did not ask for the flag, the pcap file) and nowhere else.

mod util;

use ioth_common::csum;
use ioth_common::sys::{self, UnixAddr};
use ioth_common::vde::{NativeHello, NativeWelcome};
use smoltcp::wire::{
    EthernetFrame, Icmpv4Packet, Icmpv6Packet, IpAddress, Ipv4Address, Ipv4Packet, Ipv6Address,
    Ipv6Packet, TcpPacket, UdpPacket,
};
use util::*;

const SRC4: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const DST4: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const SRC6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 5);
const DST6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 6);

fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

/// An Ethernet frame (optionally 802.1Q-tagged) with an IP packet whose checksums are all 0.
/// `l4` is the transport header and data, checksum field zeroed by the caller.
fn ip_frame(v6: bool, proto: u8, l4: &[u8], tag: Option<u16>) -> Vec<u8> {
    let mut f = mac(2).to_vec();
    f.extend_from_slice(&mac(1));
    if let Some(v) = tag {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&v.to_be_bytes());
    }
    if v6 {
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        f.extend_from_slice(&[proto, 64]);
        f.extend_from_slice(&SRC6.octets());
        f.extend_from_slice(&DST6.octets());
    } else {
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&SRC4.octets());
        f.extend_from_slice(&DST4.octets());
    }
    f.extend_from_slice(l4);
    f
}

fn tcp_l4(n: usize) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&4321u16.to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x18; // PSH ACK
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(&payload(n, 7));
    t
}

fn udp_l4(n: usize) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&5353u16.to_be_bytes());
    u[2..4].copy_from_slice(&53u16.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + n) as u16).to_be_bytes());
    u.extend_from_slice(&payload(n, 9));
    u
}

fn icmp_l4(v6: bool, n: usize) -> Vec<u8> {
    let mut i = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0, 1, 0, 2];
    i.extend_from_slice(&payload(n, 3));
    i
}

/// The same frame with every checksum computed by smoltcp's `fill_checksum` functions.
fn reference(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let off = if f[12] == 0x81 { 18 } else { 14 };
    let ip = &mut f[off..];
    if ip[0] >> 4 == 4 {
        let mut p = Ipv4Packet::new_checked(&mut *ip).unwrap();
        p.fill_checksum();
        let proto = u8::from(p.next_header());
        let (s, d) = (IpAddress::Ipv4(p.src_addr()), IpAddress::Ipv4(p.dst_addr()));
        let l4 = p.payload_mut();
        match proto {
            6 => TcpPacket::new_checked(l4).unwrap().fill_checksum(&s, &d),
            17 => UdpPacket::new_checked(l4).unwrap().fill_checksum(&s, &d),
            1 => Icmpv4Packet::new_checked(l4).unwrap().fill_checksum(),
            _ => unreachable!(),
        }
    } else {
        let mut p = Ipv6Packet::new_checked(&mut *ip).unwrap();
        let proto = u8::from(p.next_header());
        let (s6, d6) = (p.src_addr(), p.dst_addr());
        let (s, d) = (IpAddress::Ipv6(s6), IpAddress::Ipv6(d6));
        let l4 = p.payload_mut();
        match proto {
            6 => TcpPacket::new_checked(l4).unwrap().fill_checksum(&s, &d),
            17 => UdpPacket::new_checked(l4).unwrap().fill_checksum(&s, &d),
            58 => Icmpv6Packet::new_checked(l4)
                .unwrap()
                .fill_checksum(&s6, &d6),
            _ => unreachable!(),
        }
    }
    f
}

/// Every kind of frame the switch fills, with odd and even lengths, tagged and not.
fn samples() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for v6 in [false, true] {
        for n in [0usize, 1, 2, 3, 7, 100, 1401, 1452, 9000, 65000] {
            for tag in [None, Some(5)] {
                v.push(ip_frame(v6, 6, &tcp_l4(n), tag));
                v.push(ip_frame(v6, 17, &udp_l4(n), tag));
                v.push(ip_frame(v6, if v6 { 58 } else { 1 }, &icmp_l4(v6, n), tag));
            }
        }
    }
    v
}

/// Checks every checksum of a received frame with smoltcp's verifiers.
fn valid(frame: &[u8]) -> bool {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let ip = eth.payload();
    if ip[0] >> 4 == 4 {
        let p = Ipv4Packet::new_checked(ip).unwrap();
        let (s, d) = (IpAddress::Ipv4(p.src_addr()), IpAddress::Ipv4(p.dst_addr()));
        p.verify_checksum()
            && match u8::from(p.next_header()) {
                6 => TcpPacket::new_checked(p.payload())
                    .unwrap()
                    .verify_checksum(&s, &d),
                17 => UdpPacket::new_checked(p.payload())
                    .unwrap()
                    .verify_checksum(&s, &d),
                _ => Icmpv4Packet::new_checked(p.payload())
                    .unwrap()
                    .verify_checksum(),
            }
    } else {
        let p = Ipv6Packet::new_checked(ip).unwrap();
        let (s6, d6) = (p.src_addr(), p.dst_addr());
        let (s, d) = (IpAddress::Ipv6(s6), IpAddress::Ipv6(d6));
        match u8::from(p.next_header()) {
            6 => TcpPacket::new_checked(p.payload())
                .unwrap()
                .verify_checksum(&s, &d),
            17 => UdpPacket::new_checked(p.payload())
                .unwrap()
                .verify_checksum(&s, &d),
            _ => Icmpv6Packet::new_checked(p.payload())
                .unwrap()
                .verify_checksum(&s6, &d6),
        }
    }
}

#[test]
fn fill_matches_smoltcp_checksums() {
    for f in samples() {
        let want = reference(&f);
        let mut got = f.clone();
        assert!(csum::fill(&mut got));
        assert_eq!(got, want, "frame of {} bytes", f.len());
        // Filling a frame whose checksums are already right changes nothing.
        let mut again = want.clone();
        csum::fill(&mut again);
        assert_eq!(again, want);
    }
}

#[test]
fn ipv4_fragments_get_only_the_header_checksum() {
    let mut f = ip_frame(false, 17, &udp_l4(100), None);
    f[14 + 6] = 0x20; // More Fragments
    let mut g = f.clone();
    csum::fill(&mut g);
    assert!(Ipv4Packet::new_checked(&g[14..]).unwrap().verify_checksum());
    assert_eq!(
        g[14 + 20..],
        f[14 + 20..],
        "the transport header is left alone"
    );
}

/// A native client speaking the original handshake (no flags), as older stack daemons do.
fn old_native(sw: &Switch) -> sys::Fd {
    let fd = sys::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0).unwrap();
    sys::connect_unix(fd.raw(), &UnixAddr::path(sw.dir.join("native"))).unwrap();
    let hello = NativeHello {
        max_frame: 65536,
        description: "old".into(),
        flags: 0,
    };
    sys::send(fd.raw(), &hello.encode(), 0).unwrap();
    assert!(sys::wait_fd(fd.raw(), libc::POLLIN, 5000).unwrap());
    let mut b = [0u8; 64];
    let n = sys::recv(fd.raw(), &mut b, 0).unwrap();
    assert_eq!(n, 16, "a client without flags gets the 16-byte welcome");
    assert_eq!(NativeWelcome::parse(&b[..n]).unwrap().flags, None);
    fd
}

fn recv_raw(fd: &sys::Fd) -> Vec<u8> {
    assert!(
        sys::wait_fd(fd.raw(), libc::POLLIN, 2000).unwrap(),
        "a frame"
    );
    let mut b = vec![0u8; 65536];
    let n = sys::recv(fd.raw(), &mut b, 0).unwrap();
    b.truncate(n);
    b
}

#[test]
fn switch_fills_checksums_towards_vde_and_old_clients_only() {
    let sw = Switch::start(&[]);
    let a = sw.native("a");
    assert!(a.csum_fill, "the switch offers checksum filling");
    let b = sw.native("b");
    let v = sw.vde("v");
    let old = old_native(&sw);
    // (Tagged frames: covered by fill_matches_smoltcp_checksums; port a is in no VLAN.)
    for f in samples()
        .iter()
        .filter(|f| f.len() <= 1514 && f[12] != 0x81)
    {
        send(&a, f);
        // Native to native (both asked for the flag): untouched, checksums still 0.
        assert_eq!(recv(&b, 2000).as_deref(), Some(&f[..]));
        let got = recv(&v, 2000).expect("the VDE port gets a copy");
        assert!(valid(&got), "valid checksums on the VDE port");
        assert_eq!(got, reference(f));
        assert_eq!(
            recv_raw(&old),
            reference(f),
            "an old native client gets checksums"
        );
    }
}

#[test]
fn pcap_gets_filled_checksums() {
    let tmp = TempDir::new("csum");
    let pcap = tmp.path().join("cap.pcap");
    let sw = Switch::start(&["--pcap", pcap.to_str().unwrap()]);
    let a = sw.native("a");
    let b = sw.native("b");
    let frames: Vec<Vec<u8>> = samples().into_iter().filter(|f| f[12] != 0x81).collect();
    for f in &frames {
        send(&a, f);
        assert!(recv(&b, 2000).is_some());
    }
    sw.stop();
    let cap = std::fs::read(&pcap).unwrap();
    let mut at = 24;
    let mut n = 0;
    while at + 16 <= cap.len() {
        let len = u32::from_le_bytes(cap[at + 8..at + 12].try_into().unwrap()) as usize;
        let rec = &cap[at + 16..at + 16 + len];
        assert!(valid(rec), "valid checksums in the capture");
        at += 16 + len;
        n += 1;
    }
    assert_eq!(n, frames.len());
}
