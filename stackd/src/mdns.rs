//! A minimal multicast DNS responder (RFC 6762) for the node's own name (`--name`,
//! `IOTH_NAME`): other nodes on the virtual LAN resolve `NAME` or `NAME.local` without any
//! file or DNS server.
//!
//! It joins `ff02::fb` and `224.0.0.251`, listens on UDP port 5353 (a smoltcp socket of the
//! node's own, so that port is taken on a node that has a name), and answers A, AAAA and ANY
//! questions for its name with the node's addresses (link-local ones left out). A query from
//! port 5353 gets a multicast answer (§6); a query from any other port is a "legacy unicast"
//! query (§6.7) and gets a unicast answer to its source with the query's id and question,
//! which is what the shim's resolver sends.
//!
//! Not done: probing and announcing (§8), conflict resolution, known-answer suppression,
//! PTR/SRV/TXT records, service discovery.

#![deny(unsafe_code)]

use ioth_common::dns;
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};
use std::net::IpAddr;

/// Seconds a legacy unicast answer may be cached (§6.7: at most 10).
const LEGACY_TTL: u32 = 10;
/// TTL of multicast answers for host records (§10: 120 s).
const HOST_TTL: u32 = 120;

pub struct Responder {
    h: SocketHandle,
    name: String,
    buf: Vec<u8>,
}

impl Responder {
    /// Join the mDNS groups and open the responder's socket.
    pub fn new(iface: &mut Interface, set: &mut SocketSet<'static>, name: &str) -> Responder {
        for g in [IpAddress::Ipv6(dns::MDNS_V6), IpAddress::Ipv4(dns::MDNS_V4)] {
            if let Err(e) = iface.join_multicast_group(g) {
                log::warn!("mdns: cannot join {g}: {e}");
            }
        }
        let mut u = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16 * 1024]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16 * 1024]),
        );
        if let Err(e) = u.bind(IpListenEndpoint {
            addr: None,
            port: dns::MDNS_PORT,
        }) {
            log::warn!("mdns: cannot bind port 5353: {e}");
        }
        log::info!("mdns: answering for {name} and {name}.local");
        Responder {
            h: set.add(u),
            name: name.to_string(),
            buf: vec![0; 9000],
        }
    }

    /// Answer every query waiting on the socket.
    pub fn poll(&mut self, set: &mut SocketSet<'static>, own: &[IpAddr]) {
        let sock = set.get_mut::<udp::Socket>(self.h);
        while sock.can_recv() {
            let (n, from) = match sock.recv_slice(&mut self.buf) {
                Ok((n, meta)) => (n, meta.endpoint),
                Err(_) => break,
            };
            let Some(reply) = answer(&self.buf[..n], from.port, &self.name, own) else {
                continue;
            };
            let to = if from.port == dns::MDNS_PORT {
                let group = match from.addr {
                    IpAddress::Ipv4(_) => IpAddress::Ipv4(dns::MDNS_V4),
                    IpAddress::Ipv6(_) => IpAddress::Ipv6(dns::MDNS_V6),
                };
                IpEndpoint::new(group, dns::MDNS_PORT)
            } else {
                from
            };
            if sock.send_slice(&reply, to).is_err() {
                log::debug!("mdns: answer to {to} dropped (buffer full)");
            }
        }
    }
}

/// The answer to `query` (from source port `port`) for a node called `name` with addresses
/// `own`, if it asks about us.
pub fn answer(query: &[u8], port: u16, name: &str, own: &[IpAddr]) -> Option<Vec<u8>> {
    let (id, qs) = dns::parse_query(query)?;
    let legacy = port != dns::MDNS_PORT;
    let mut answers: Vec<(String, IpAddr)> = Vec::new();
    let mut asked = Vec::new();
    for q in qs {
        if !dns::is_own_name(&q.name, name) {
            continue;
        }
        for ip in own {
            let link_local = matches!(ip, IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80);
            let fits = match q.qtype {
                dns::TYPE_A => ip.is_ipv4(),
                dns::TYPE_AAAA => ip.is_ipv6(),
                dns::TYPE_ANY => true,
                _ => false,
            };
            if fits && !link_local && !answers.iter().any(|(_, a)| a == ip) {
                answers.push((q.name.clone(), *ip));
            }
        }
        asked.push(q);
    }
    if answers.is_empty() {
        return None;
    }
    if legacy {
        Some(dns::response(id, &asked, &answers, LEGACY_TTL))
    } else {
        Some(dns::response(0, &[], &answers, HOST_TTL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_for_its_name() {
        let own: Vec<IpAddr> = vec![
            "fd00::1".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            "fe80::1".parse().unwrap(),
        ];
        let q = dns::query(77, "web1.local", dns::TYPE_ANY, false).unwrap();
        let r = dns::parse_response(&answer(&q, 40000, "web1", &own).unwrap()).unwrap();
        assert_eq!(r.id, 77);
        let ips: Vec<IpAddr> = r.addrs.iter().map(|(_, a)| *a).collect();
        assert_eq!(ips, own[..2].to_vec());
        let q = dns::query(1, "web1", dns::TYPE_A, false).unwrap();
        let r = dns::parse_response(&answer(&q, 5353, "web1", &own).unwrap()).unwrap();
        assert_eq!(r.id, 0);
        assert_eq!(r.addrs.len(), 1);
        let q = dns::query(1, "other.local", dns::TYPE_ANY, false).unwrap();
        assert!(answer(&q, 5353, "web1", &own).is_none());
        assert!(answer(b"junk", 5353, "web1", &own).is_none());
    }
}
