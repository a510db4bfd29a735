//! TCP cut-through between two nodes of one host: the messages two stack daemons exchange
//! over the shortcut that joins them (see `stack/cut.rs` for what each side does).
//!
//! `Connect`: "my application connects from `src` to your `dst`; here is the other end of its
//! socketpair (one descriptor), holding `filler` bytes that keep it unwritable until you
//! answer". `Answer`: the connection `tag` was taken (queued on a listener, the filler
//! drained) or refused (the client then connects through TCP, as it would have).
//!
//! Layout: `magic[8], kind u8, tag u64` and for `Connect`: `src, dst` (each `family u8` (4 or
//! 6), `ip[16]`, `port u16`) and `filler u32`; for `Answer`: `ok u8`. Little-endian. The peer
//! is not trusted: anything else is dropped.

#![deny(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// First bytes of every cut-through message on a shortcut's socket.
pub const MAGIC: &[u8; 8] = b"IOTHCUT1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg {
    Connect {
        tag: u64,
        src: SocketAddr,
        dst: SocketAddr,
        filler: u32,
    },
    Answer {
        tag: u64,
        ok: bool,
    },
    /// "Tell me your kernel listeners" (each as a `Listener`, then `Hello { done: true }`,
    /// and each new one from now on).
    Hello {
        done: bool,
    },
    /// "A kernel listener of mine: connect your applications' sockets to it directly".
    Listener(Listener),
}

/// A kernel listener, as told to peers: node `node`'s socket `lid`
/// (`names::listener_name`), bound to `addr` (`None`: any) and `port`, taking IPv4 (`v4`)
/// and IPv6 (`v6`) connections, an `AF_INET6` socket if `inet6` (its application sees IPv4
/// peers as v4-mapped), made by user `uid` (who takes connections from root and itself
/// only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    pub node: u64,
    pub lid: u64,
    pub uid: u32,
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub v4: bool,
    pub v6: bool,
    pub inet6: bool,
    /// It shares its port with others (`SO_REUSEPORT`): a newer one does not replace it.
    pub reuseport: bool,
}

const CONNECT: u8 = 1;
const ANSWER: u8 = 2;
const HELLO: u8 = 3;
const LISTENER: u8 = 4;

fn put_addr(b: &mut Vec<u8>, a: SocketAddr) {
    let (fam, ip) = match a.ip() {
        IpAddr::V4(v4) => (4u8, v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => (6u8, v6.octets()),
    };
    b.push(fam);
    b.extend_from_slice(&ip);
    b.extend_from_slice(&a.port().to_le_bytes());
}

fn get_addr(b: &[u8]) -> Option<SocketAddr> {
    let ip: [u8; 16] = b.get(1..17)?.try_into().ok()?;
    let port = u16::from_le_bytes(b.get(17..19)?.try_into().ok()?);
    let v6 = Ipv6Addr::from(ip);
    let ip = match b[0] {
        4 => IpAddr::V4(v6.to_ipv4_mapped()?),
        6 => IpAddr::V6(v6),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

impl Msg {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        match *self {
            Msg::Connect {
                tag,
                src,
                dst,
                filler,
            } => {
                b.push(CONNECT);
                b.extend_from_slice(&tag.to_le_bytes());
                put_addr(&mut b, src);
                put_addr(&mut b, dst);
                b.extend_from_slice(&filler.to_le_bytes());
            }
            Msg::Answer { tag, ok } => {
                b.push(ANSWER);
                b.extend_from_slice(&tag.to_le_bytes());
                b.push(u8::from(ok));
            }
            Msg::Hello { done } => {
                b.push(HELLO);
                b.extend_from_slice(&u64::from(done).to_le_bytes());
            }
            Msg::Listener(Listener {
                node,
                lid,
                uid,
                addr,
                port,
                v4,
                v6,
                inet6,
                reuseport,
            }) => {
                b.push(LISTENER);
                b.extend_from_slice(&node.to_le_bytes());
                b.extend_from_slice(&lid.to_le_bytes());
                b.extend_from_slice(&uid.to_le_bytes());
                match addr {
                    Some(a) => put_addr(&mut b, SocketAddr::new(a, port)),
                    None => {
                        b.push(0);
                        b.extend_from_slice(&[0; 16]);
                        b.extend_from_slice(&port.to_le_bytes());
                    }
                }
                b.push(
                    u8::from(v4)
                        | u8::from(v6) << 1
                        | u8::from(inet6) << 2
                        | u8::from(reuseport) << 3,
                );
            }
        }
        b
    }

    /// A message of ours, or `None` (not one, or malformed).
    pub fn parse(b: &[u8]) -> Option<Msg> {
        let rest = b.strip_prefix(MAGIC)?;
        let kind = *rest.first()?;
        let tag = u64::from_le_bytes(rest.get(1..9)?.try_into().ok()?);
        let rest = &rest[9..];
        match kind {
            CONNECT if rest.len() == 19 + 19 + 4 => {
                let src = get_addr(&rest[..19])?;
                let dst = get_addr(&rest[19..38])?;
                if src.is_ipv4() != dst.is_ipv4() {
                    return None;
                }
                let filler = u32::from_le_bytes(rest[38..42].try_into().ok()?);
                Some(Msg::Connect {
                    tag,
                    src,
                    dst,
                    filler,
                })
            }
            ANSWER if rest.len() == 1 && rest[0] <= 1 => Some(Msg::Answer {
                tag,
                ok: rest[0] == 1,
            }),
            HELLO if rest.is_empty() && tag <= 1 => Some(Msg::Hello { done: tag == 1 }),
            LISTENER if rest.len() == 8 + 4 + 19 + 1 && rest[31] < 16 => {
                let lid = u64::from_le_bytes(rest[..8].try_into().ok()?);
                let uid = u32::from_le_bytes(rest[8..12].try_into().ok()?);
                let rest = &rest[4..];
                let a = &rest[8..27];
                let (addr, port) = if a[0] == 0 {
                    if a[1..17] != [0; 16] {
                        return None;
                    }
                    (None, u16::from_le_bytes(a[17..19].try_into().ok()?))
                } else {
                    let sa = get_addr(a)?;
                    (Some(sa.ip()), sa.port())
                };
                let f = rest[27];
                Some(Msg::Listener(Listener {
                    node: tag,
                    lid,
                    uid,
                    addr,
                    port,
                    v4: f & 1 != 0,
                    v6: f & 2 != 0,
                    inet6: f & 4 != 0,
                    reuseport: f & 8 != 0,
                }))
            }
            _ => None,
        }
    }
}

/// The sender's address of an untagged IPv4, IPv6 or ARP (Ethernet/IPv4) frame: with the
/// frame's source MAC, what tells which node has that address.
pub fn frame_sender_ip(f: &[u8]) -> Option<IpAddr> {
    if f.get(12..14)? == [0x08, 0x06] {
        // ARP: htype 1, ptype 0x0800, hlen 6, plen 4; sender IP after the sender MAC.
        if f.get(14..20)? != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        let b: [u8; 4] = f.get(28..32)?.try_into().ok()?;
        return Some(IpAddr::V4(Ipv4Addr::from(b)));
    }
    frame_src_ip(f)
}

/// The source address of an untagged IPv4 or IPv6 Ethernet frame.
pub fn frame_src_ip(f: &[u8]) -> Option<IpAddr> {
    match f.get(12..14)? {
        [0x08, 0x00] => {
            let b: [u8; 4] = f.get(26..30)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        [0x86, 0xdd] => {
            let b: [u8; 16] = f.get(22..38)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_roundtrip_and_garbage_is_dropped() {
        let c = Msg::Connect {
            tag: 7,
            src: "10.0.0.2:40000".parse().unwrap(),
            dst: "10.0.0.1:80".parse().unwrap(),
            filler: 4480,
        };
        let c6 = Msg::Connect {
            tag: u64::MAX,
            src: "[fd00::2]:1".parse().unwrap(),
            dst: "[fd00::1]:80".parse().unwrap(),
            filler: 0,
        };
        let a = Msg::Answer { tag: 9, ok: true };
        let l = Msg::Listener(Listener {
            node: 3,
            lid: 1 << 59 | 5,
            uid: 0,
            addr: None,
            port: 80,
            v4: true,
            v6: true,
            inet6: true,
            reuseport: true,
        });
        let l4 = Msg::Listener(Listener {
            node: 3,
            lid: 9,
            uid: 65534,
            addr: Some("10.0.0.1".parse().unwrap()),
            port: 8080,
            v4: true,
            v6: false,
            inet6: false,
            reuseport: false,
        });
        for m in [
            c,
            c6,
            a,
            Msg::Answer { tag: 0, ok: false },
            Msg::Hello { done: false },
            Msg::Hello { done: true },
            l,
            l4,
        ] {
            let b = m.encode();
            assert_eq!(Msg::parse(&b), Some(m));
            for n in 0..b.len() {
                assert_eq!(Msg::parse(&b[..n]), None, "{m:?} cut at {n}");
            }
            let mut longer = b.clone();
            longer.push(0);
            assert_eq!(Msg::parse(&longer), None);
        }
        let mut bad = c.encode();
        bad[17] = 5; // a family that is neither 4 nor 6
        assert_eq!(Msg::parse(&bad), None);
        let mut bad = a.encode();
        *bad.last_mut().unwrap() = 2;
        assert_eq!(Msg::parse(&bad), None);
    }

    #[test]
    fn the_source_of_a_frame() {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[26..30].copy_from_slice(&[10, 0, 0, 5]);
        assert_eq!(frame_src_ip(&f), Some("10.0.0.5".parse().unwrap()));
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(frame_src_ip(&f), None);
        assert_eq!(frame_sender_ip(&f), None, "not Ethernet/IPv4 ARP");
        f[14..20].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
        f[28..32].copy_from_slice(&[10, 0, 0, 7]);
        assert_eq!(frame_sender_ip(&f), Some("10.0.0.7".parse().unwrap()));
        assert_eq!(frame_src_ip(&f[..20]), None);
    }
}
