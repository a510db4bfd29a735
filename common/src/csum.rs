//! Filling in the Internet checksums of an Ethernet frame (RFC 1071 arithmetic).
//!
//! Between ioth's own stacks, frames carry no checksums: on a native switch port the stack
//! daemon asks for checksum filling ([`crate::vde::NATIVE_FLAG_CSUM_FILL`]), skips computing
//! the IPv4 header, TCP and UDP checksums (it leaves them zero) and does not verify checksums
//! of frames it receives. Whoever moves such a frame to a place where checksums matter (the
//! switch, towards a VDE port, an older native client or a pcap file) calls [`fill`] first.
//!
//! [`fill`] recomputes, in place:
//! * the IPv4 header checksum (every IPv4 packet, fragments included);
//! * TCP, UDP, ICMPv4 and ICMPv6 checksums of unfragmented packets (IPv4 without MF and with
//!   offset 0; IPv6 after any Hop-by-Hop and Destination Options headers). A UDP checksum
//!   that computes to 0 is sent as 0xffff (RFC 768).
//!
//! It leaves alone: other EtherTypes, IPv4 fragments' payloads (the transport header is in
//! the first fragment only; smoltcp leaves a fragmented UDP datagram's checksum at 0, which
//! IPv4 allows), IPv6 packets with a Routing or Fragment header, jumbograms, and anything
//! truncated or inconsistent (length fields that point past the frame). It never panics.
//! One 802.1Q tag before the EtherType is understood.

#![deny(unsafe_code)]

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;

/// The ones' complement sum of `data` (as big-endian 16-bit words, odd byte padded with 0)
/// added to `acc`, not yet folded.
///
/// The bulk is summed as native-endian 32-bit words into a 64-bit total (a loop the compiler
/// turns into vector adds), folded to 16 bits and byte-swapped to big-endian order on
/// little-endian machines: the ones' complement sum does not depend on byte order except for
/// that swap (RFC 1071, section 2 B).
pub fn sum(data: &[u8], mut acc: u64) -> u64 {
    let bulk = data.len() & !3;
    let ne: u64 = data[..bulk]
        .chunks_exact(4)
        .map(|w| u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .sum();
    let mut f = ne;
    while f > 0xffff {
        f = (f & 0xffff) + (f >> 16);
    }
    let f = f as u16;
    acc += u64::from(if cfg!(target_endian = "little") {
        f.swap_bytes()
    } else {
        f
    });
    let rest = &data[bulk..];
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [b] = pairs.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

/// Fold a sum to 16 bits and complement it: the value to store in a checksum field.
pub fn finish(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// A checksum field after one 16-bit word it covers changed from `old` to `new` (RFC 1624,
/// eqn. 3: `HC' = ~(~HC + ~m + m')`).
pub fn adjust(ck: u16, old: u16, new: u16) -> u16 {
    let acc = u64::from(!ck) + u64::from(!old) + u64::from(new);
    finish(acc)
}

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

/// Recompute the checksums of `frame` in place (see the module documentation). Returns
/// `true` if an IP packet was found and handled.
pub fn fill(frame: &mut [u8]) -> bool {
    if frame.len() < 14 {
        return false;
    }
    let (ethertype, off) = match be16(frame, 12) {
        ETH_VLAN if frame.len() >= 18 => (be16(frame, 16), 18),
        t => (t, 14),
    };
    match ethertype {
        ETH_IPV4 => fill_ipv4(&mut frame[off..]),
        ETH_IPV6 => fill_ipv6(&mut frame[off..]),
        _ => false,
    }
}

fn fill_ipv4(p: &mut [u8]) -> bool {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return false;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(be16(p, 2));
    if ihl < 20 || total < ihl || total > p.len() {
        return false;
    }
    p[10] = 0;
    p[11] = 0;
    let c = finish(sum(&p[..ihl], 0));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let frag = be16(p, 6);
    if frag & 0x3fff != 0 {
        return true; // A fragment: only the header checksum.
    }
    let proto = p[9];
    let (hdr, l4) = p[..total].split_at_mut(ihl);
    let pseudo = if proto == PROTO_ICMP {
        0
    } else {
        let mut acc = sum(&hdr[12..20], 0);
        acc += u64::from(proto) + l4.len() as u64;
        acc
    };
    fill_l4(proto, l4, pseudo);
    true
}

fn fill_ipv6(p: &mut [u8]) -> bool {
    if p.len() < 40 || p[0] >> 4 != 6 {
        return false;
    }
    let plen = usize::from(be16(p, 4));
    if plen == 0 || 40 + plen > p.len() {
        return false;
    }
    let mut nh = p[6];
    let mut at = 40;
    let end = 40 + plen;
    // Hop-by-Hop (MLD reports carry one) and Destination Options; stop at anything else.
    while nh == 0 || nh == 60 {
        if at + 2 > end {
            return false;
        }
        let len = (usize::from(p[at + 1]) + 1) * 8;
        nh = p[at];
        at += len;
        if at > end {
            return false;
        }
    }
    let (hdr, rest) = p[..end].split_at_mut(at);
    let mut acc = sum(&hdr[8..40], 0);
    acc += u64::from(nh) + rest.len() as u64;
    fill_l4(nh, rest, acc);
    true
}

fn fill_l4(proto: u8, l4: &mut [u8], pseudo: u64) {
    let at = match proto {
        PROTO_TCP if l4.len() >= 20 => 16,
        PROTO_UDP if l4.len() >= 8 => 6,
        PROTO_ICMP | PROTO_ICMPV6 if l4.len() >= 4 => 2,
        _ => return,
    };
    l4[at] = 0;
    l4[at + 1] = 0;
    let mut c = finish(sum(l4, pseudo));
    if proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 1071 example (section 3): words 0001 f203 f4f5 f6f7 sum to ddf2.
    #[test]
    fn rfc1071_example() {
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum(&d, 0)), !0xddf2);
        // Odd lengths and every split of the 8-byte fast path agree with plain 16-bit words.
        let data: Vec<u8> = (0..301u32).map(|i| (i * 37 + 11) as u8).collect();
        for n in 0..data.len() {
            let mut plain = 0u64;
            for ch in data[..n].chunks(2) {
                plain += u64::from(ch[0]) << 8 | u64::from(*ch.get(1).unwrap_or(&0));
            }
            assert_eq!(finish(sum(&data[..n], 0)), finish(plain), "len {n}");
        }
        // A frame's worth of bytes that make many carries.
        let big: Vec<u8> = (0..65539u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut plain = 0u64;
        for ch in big.chunks(2) {
            plain += u64::from(ch[0]) << 8 | u64::from(*ch.get(1).unwrap_or(&0));
        }
        assert_eq!(finish(sum(&big, 0)), finish(plain));
        assert_eq!(finish(sum(&big, 0x1234_5678)), finish(plain + 0x1234_5678));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 1u32;
        for len in 0..200 {
            for _ in 0..20 {
                let mut f: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (seed >> 16) as u8
                    })
                    .collect();
                if len > 14 {
                    f[12] = 0x86;
                    f[13] = if seed & 1 == 0 { 0xdd } else { 0x00 };
                    if f[13] == 0 {
                        f[12] = 0x08;
                    }
                }
                fill(&mut f);
            }
        }
    }
}
