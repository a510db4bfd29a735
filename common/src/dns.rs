//! The small part of the DNS wire format (RFC 1035) that ioth needs: A, AAAA and PTR queries
//! and answers, for the shim's resolver (unicast DNS and multicast DNS, RFC 6762) and the
//! stack daemon's mDNS responder.
//!
//! Pure functions over byte slices. Parsing never panics and never trusts a length or a
//! compression pointer it has not checked (pointers must go backwards, so loops end). Not
//! here: EDNS, DNSSEC, TCP fallback, any record type other than A/AAAA/PTR/CNAME.

#![deny(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
pub const RCODE_NXDOMAIN: u8 = 3;
/// The mDNS port and groups (RFC 6762).
pub const MDNS_PORT: u16 = 5353;
pub const MDNS_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
pub const MDNS_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb);

/// Append `name` in wire form; `None` if a label is empty or longer than 63 bytes.
fn put_name(out: &mut Vec<u8>, name: &str) -> Option<()> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Some(())
}

/// A standard query for `name` with recursion desired (`rd`); `None` for a bad name.
pub fn query(id: u16, name: &str, qtype: u16, rd: bool) -> Option<Vec<u8>> {
    let mut b = Vec::with_capacity(32 + name.len());
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&(if rd { 0x0100u16 } else { 0 }).to_be_bytes());
    b.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    put_name(&mut b, name)?;
    b.extend_from_slice(&qtype.to_be_bytes());
    b.extend_from_slice(&CLASS_IN.to_be_bytes());
    Some(b)
}

/// The name to look up for a reverse (PTR) query of `ip`.
pub fn reverse_name(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v) => {
            let mut s = String::with_capacity(72);
            for b in v.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

struct Rd<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    /// Read a (possibly compressed) name, lower-cased, without the final dot.
    fn name(&mut self) -> Option<String> {
        let mut out = String::new();
        let mut pos = self.pos;
        let mut jumped = false;
        let mut hops = 0;
        loop {
            let len = *self.b.get(pos)? as usize;
            if len & 0xc0 == 0xc0 {
                let ptr = ((len & 0x3f) << 8) | *self.b.get(pos + 1)? as usize;
                if !jumped {
                    self.pos = pos + 2;
                }
                jumped = true;
                hops += 1;
                if ptr >= pos || hops > 64 {
                    return None;
                }
                pos = ptr;
                continue;
            }
            if len & 0xc0 != 0 {
                return None;
            }
            if len == 0 {
                if !jumped {
                    self.pos = pos + 1;
                }
                return Some(out);
            }
            let label = self.b.get(pos + 1..pos + 1 + len)?;
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
            if out.len() > 1024 {
                return None;
            }
            pos += 1 + len;
        }
    }
}

/// A parsed response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub id: u16,
    pub rcode: u8,
    /// A and AAAA records (in order), with their owner names.
    pub addrs: Vec<(String, IpAddr)>,
    /// PTR targets.
    pub ptrs: Vec<String>,
}

/// Parse a response; `None` if it is not a well-formed response.
pub fn parse_response(b: &[u8]) -> Option<Response> {
    let mut r = Rd { b, pos: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return None;
    }
    let (qd, an, ns, ar) = (r.u16()?, r.u16()?, r.u16()?, r.u16()?);
    for _ in 0..qd {
        r.name()?;
        r.bytes(4)?;
    }
    let mut resp = Response {
        id,
        rcode: (flags & 0xf) as u8,
        ..Default::default()
    };
    // Answers first; mDNS responders may put addresses in the additional section too.
    for i in 0..(an as u32 + ns as u32 + ar as u32) {
        let owner = r.name()?;
        let ty = r.u16()?;
        let _class = r.u16()?;
        let _ttl = r.u32()?;
        let len = r.u16()? as usize;
        let start = r.pos;
        let data = r.bytes(len)?;
        let in_answer = i < an as u32;
        let in_extra = i >= an as u32 + ns as u32;
        match ty {
            TYPE_A if len == 4 && (in_answer || in_extra) => {
                let ip = IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
                resp.addrs.push((owner, ip));
            }
            TYPE_AAAA if len == 16 && (in_answer || in_extra) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(data);
                resp.addrs.push((owner, IpAddr::V6(Ipv6Addr::from(o))));
            }
            TYPE_PTR if in_answer => {
                let mut sub = Rd { b, pos: start };
                if let Some(n) = sub.name() {
                    resp.ptrs.push(n);
                }
            }
            _ => {}
        }
    }
    Some(resp)
}

/// A question of a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    /// The mDNS "unicast response" bit (top bit of the class).
    pub unicast: bool,
}

/// Parse a query: (id, questions); `None` if it is not a query.
pub fn parse_query(b: &[u8]) -> Option<(u16, Vec<Question>)> {
    let mut r = Rd { b, pos: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 {
        return None;
    }
    let qd = r.u16()?;
    r.bytes(6)?;
    let mut qs = Vec::new();
    for _ in 0..qd.min(16) {
        let name = r.name()?;
        let qtype = r.u16()?;
        let class = r.u16()?;
        qs.push(Question {
            name,
            qtype,
            unicast: class & 0x8000 != 0,
        });
    }
    Some((id, qs))
}

/// An authoritative response with `answers` (owner name, address) for the questions given
/// (echoed, as legacy unicast mDNS responses must). TTL in seconds.
pub fn response(
    id: u16,
    questions: &[Question],
    answers: &[(String, IpAddr)],
    ttl: u32,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + answers.len() * 32);
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&0x8400u16.to_be_bytes());
    b.extend_from_slice(&(questions.len() as u16).to_be_bytes());
    b.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
    for q in questions {
        if put_name(&mut b, &q.name).is_none() {
            b.push(0);
        }
        b.extend_from_slice(&q.qtype.to_be_bytes());
        b.extend_from_slice(&CLASS_IN.to_be_bytes());
    }
    for (name, ip) in answers {
        if put_name(&mut b, name).is_none() {
            b.push(0);
        }
        let (ty, data): (u16, Vec<u8>) = match ip {
            IpAddr::V4(v) => (TYPE_A, v.octets().to_vec()),
            IpAddr::V6(v) => (TYPE_AAAA, v.octets().to_vec()),
        };
        b.extend_from_slice(&ty.to_be_bytes());
        b.extend_from_slice(&CLASS_IN.to_be_bytes());
        b.extend_from_slice(&ttl.to_be_bytes());
        b.extend_from_slice(&(data.len() as u16).to_be_bytes());
        b.extend_from_slice(&data);
    }
    b
}

/// Whether `name` (any case, optional final dot) is `host` or `host.local`.
pub fn is_own_name(name: &str, host: &str) -> bool {
    let n = name.strip_suffix('.').unwrap_or(name);
    let n = n.strip_suffix(".local").unwrap_or(n);
    !host.is_empty() && n.eq_ignore_ascii_case(host.strip_suffix(".local").unwrap_or(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_answer_roundtrip() {
        let q = query(0x1234, "web1.local", TYPE_AAAA, false).unwrap();
        let (id, qs) = parse_query(&q).unwrap();
        assert_eq!(id, 0x1234);
        assert_eq!(qs[0].name, "web1.local");
        assert_eq!(qs[0].qtype, TYPE_AAAA);
        let ans = vec![
            ("web1.local".to_string(), "fd00::1".parse().unwrap()),
            ("web1.local".to_string(), "10.0.0.1".parse().unwrap()),
        ];
        let r = response(id, &qs, &ans, 10);
        let p = parse_response(&r).unwrap();
        assert_eq!(p.id, 0x1234);
        assert_eq!(p.rcode, 0);
        assert_eq!(p.addrs, ans);
        assert!(parse_response(&q).is_none(), "a query is not a response");
        assert!(parse_query(&r).is_none(), "a response is not a query");
    }

    #[test]
    fn bad_input_never_panics_or_loops() {
        assert!(query(1, "", TYPE_A, true).is_none());
        assert!(query(1, "a..b", TYPE_A, true).is_none());
        assert!(query(1, &"x".repeat(64), TYPE_A, true).is_none());
        let q = query(7, "a.b", TYPE_A, true).unwrap();
        for n in 0..q.len() {
            let _ = parse_query(&q[..n]);
            let _ = parse_response(&q[..n]);
        }
        // A compression pointer to itself.
        let mut r = vec![0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(parse_response(&r).is_none());
    }

    #[test]
    fn compressed_names_and_ptr() {
        // Response to "1.0.0.10.in-addr.arpa" PTR -> "web1" + pointer to ... (hand-made).
        let mut b = vec![0, 9, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        let qname_at = b.len();
        put_name(&mut b, "1.0.0.10.in-addr.arpa").unwrap();
        b.extend_from_slice(&[0, 12, 0, 1]);
        b.extend_from_slice(&[0xc0, qname_at as u8, 0, 12, 0, 1, 0, 0, 0, 60]);
        let mut data = Vec::new();
        put_name(&mut data, "web1.lan").unwrap();
        b.extend_from_slice(&(data.len() as u16).to_be_bytes());
        b.extend_from_slice(&data);
        let p = parse_response(&b).unwrap();
        assert_eq!(p.ptrs, vec!["web1.lan".to_string()]);
        assert_eq!(
            reverse_name(&"10.0.0.1".parse().unwrap()),
            "1.0.0.10.in-addr.arpa"
        );
        assert!(reverse_name(&"fd00::1".parse().unwrap()).starts_with("1.0.0.0.0.0.0.0."));
        assert!(is_own_name("Web1.local.", "web1"));
        assert!(is_own_name("web1", "web1"));
        assert!(!is_own_name("web2", "web1"));
    }
}
