//! `struct sockaddr` bytes to and from [`WireAddr`], with the kernel's length rules.
//!
//! Pure functions over byte slices: the hook layer turns the caller's pointers into slices
//! and back. Only `AF_INET`, `AF_INET6` and `AF_UNSPEC` are understood; anything else is
//! `EAFNOSUPPORT`, a too-short address is `EINVAL`, as `inet_bind`/`inet6_bind` answer.

#![deny(unsafe_code)]

use ioth_common::ctl::WireAddr;
use ioth_common::sys::Errno;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

const SOCKADDR_IN_LEN: usize = 16;
/// `SIN6_LEN_RFC2133`: the kernel accepts a sockaddr_in6 without the scope id.
const SOCKADDR_IN6_MIN: usize = 24;
const SOCKADDR_IN6_LEN: usize = 28;

/// Decode an address passed to `bind`/`connect`. `AF_UNSPEC` is `WireAddr(None)`.
pub fn decode(b: &[u8]) -> Result<WireAddr, Errno> {
    if b.len() < 2 {
        return Err(Errno::EINVAL);
    }
    let fam = i32::from(u16::from_ne_bytes([b[0], b[1]]));
    match fam {
        libc::AF_UNSPEC => Ok(WireAddr(None)),
        libc::AF_INET => {
            if b.len() < SOCKADDR_IN_LEN {
                return Err(Errno::EINVAL);
            }
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Ok(WireAddr(Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))))
        }
        libc::AF_INET6 => {
            if b.len() < SOCKADDR_IN6_MIN {
                return Err(Errno::EINVAL);
            }
            let port = u16::from_be_bytes([b[2], b[3]]);
            let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[8..24]);
            let scope = if b.len() >= SOCKADDR_IN6_LEN {
                u32::from_ne_bytes([b[24], b[25], b[26], b[27]])
            } else {
                0
            };
            Ok(WireAddr(Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(o),
                port,
                flow,
                scope,
            )))))
        }
        _ => Err(Errno(libc::EAFNOSUPPORT)),
    }
}

/// Encode an address as the kernel returns it from `getsockname`, `accept`, ... .
/// `None` (no address) is a bare `AF_UNSPEC` family.
pub fn encode(a: &WireAddr) -> Vec<u8> {
    match a.0 {
        None => (libc::AF_UNSPEC as u16).to_ne_bytes().to_vec(),
        Some(SocketAddr::V4(a)) => {
            let mut b = vec![0u8; SOCKADDR_IN_LEN];
            b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.ip().octets());
            b
        }
        Some(SocketAddr::V6(a)) => {
            let mut b = vec![0u8; SOCKADDR_IN6_LEN];
            b[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            b[8..24].copy_from_slice(&a.ip().octets());
            b[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
            b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `sockaddr_in` laid out at libc's own field offsets.
    fn raw_in(ip: [u8; 4], port: u16) -> Vec<u8> {
        use std::mem::offset_of;
        let mut b = vec![0u8; std::mem::size_of::<libc::sockaddr_in>()];
        let f = offset_of!(libc::sockaddr_in, sin_family);
        b[f..f + 2].copy_from_slice(&(libc::AF_INET as libc::sa_family_t).to_ne_bytes());
        let p = offset_of!(libc::sockaddr_in, sin_port);
        b[p..p + 2].copy_from_slice(&port.to_be_bytes());
        let a = offset_of!(libc::sockaddr_in, sin_addr);
        b[a..a + 4].copy_from_slice(&ip);
        b
    }

    #[test]
    fn ipv4_matches_libc_layout() {
        let b = raw_in([10, 0, 0, 5], 8080);
        let a = decode(&b).unwrap();
        assert_eq!(a.0, Some("10.0.0.5:8080".parse().unwrap()));
        assert_eq!(encode(&a), b);
    }

    #[test]
    fn ipv6_roundtrip_and_short_forms() {
        let a = WireAddr(Some("[fd00::5%3]:80".parse().unwrap()));
        let b = encode(&a);
        assert_eq!(b.len(), std::mem::size_of::<libc::sockaddr_in6>());
        assert_eq!(decode(&b).unwrap(), a);
        // RFC 2133 length: no scope id.
        let short = decode(&b[..24]).unwrap();
        assert_eq!(short.0, Some("[fd00::5]:80".parse().unwrap()));
        assert_eq!(decode(&b[..23]), Err(Errno::EINVAL));
    }

    #[test]
    fn bad_families_and_lengths() {
        assert_eq!(decode(&[]), Err(Errno::EINVAL));
        assert_eq!(decode(&raw_in([1, 2, 3, 4], 1)[..8]), Err(Errno::EINVAL));
        let unix = (libc::AF_UNIX as u16).to_ne_bytes();
        assert_eq!(decode(&unix), Err(Errno(libc::EAFNOSUPPORT)));
        let unspec = (libc::AF_UNSPEC as u16).to_ne_bytes();
        assert_eq!(decode(&unspec), Ok(WireAddr(None)));
    }
}
