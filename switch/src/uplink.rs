//! Uplinks: the switch's LAN carried to other hosts over VXLAN (RFC 7348), in the URL syntax of
//! VDE's vdeplug4 (`vxlan://ADDR[/port=4789][/vni=N][/ttl=N][/if=IFACE]`).
//!
//! An uplink is one switch port whose other side is a UDP socket. Each frame the switch sends
//! to it travels as one datagram: the 8-byte VXLAN header (flags byte 0x08, 24-bit VNI) and the
//! whole Ethernet frame. `ADDR` is either a multicast group (joined on `if=IFACE`, or on the
//! interface the kernel picks) or one or more unicast peers, comma-separated (`vxlan://10.0.0.2,10.0.0.3`), for networks without multicast. Frames
//! for a MAC address heard from a remote tunnel endpoint (VTEP) go to that endpoint alone;
//! broadcasts, multicasts and unknown addresses go to the group, or to every unicast peer
//! (head-end replication, as Linux does with `bridge fdb append 00:00:00:00:00:00 dst …`).
//! A learned endpoint is addressed on the uplink's port, as vdeplug4 does (senders pick their
//! source port by flow hash). This interoperates with a Linux kernel vxlan device
//! (`ip link add vx0 type vxlan id N dstport 4789 remote|group …`) and with vdeplug4's
//! `vxlan://`. Beyond vdeplug4's options, `local=ADDR` binds one local address (as Linux's
//! `local`), so that several switches of one host can each use the port on an address of
//! their own.
//!
//! Datagrams that are not VXLAN for our VNI, or too short to hold a frame, are dropped and
//! counted (`bad`); so are the switch's own multicast datagrams (the socket does not loop
//! them back). Only UDP sockets are used: no privilege is needed, except for ports below 1024.
//!
//! The largest frame an uplink carries is the underlay's MTU less the outer IP, UDP and
//! VXLAN headers (50 bytes of encapsulation on IPv4, counting the inner Ethernet header):
//! the interface's MTU with `if=`, the route's MTU towards a unicast peer, 1500 otherwise.
//! Larger frames are dropped and counted (`toobig`, as on any port), and TCP never needs
//! them: the switch lowers the MSS option of every SYN that crosses an uplink, in both
//! directions, to what fits ([`clamp_mss`]).

use ioth_common::csum;
use ioth_common::sys::{self, Errno};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// The IANA port of VXLAN.
pub const VXLAN_PORT: u16 = 4789;
/// vdeplug4's defaults: VNI 1, TTL 1, group 239.0.0.1 (IPv6 ff05:56de::1).
pub const DEFAULT_VNI: u32 = 1;
pub const DEFAULT_TTL: u32 = 1;
pub const DEFAULT_GROUP_V4: Ipv4Addr = Ipv4Addr::new(239, 0, 0, 1);
pub const DEFAULT_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff05, 0x56de, 0, 0, 0, 0, 0, 1);
/// VXLAN header bytes.
pub const HDR: usize = 8;
/// Remote MAC addresses remembered per uplink; beyond this, frames to unknown addresses are
/// flooded (never lost), and the oldest entry makes room.
pub const MAX_FDB: usize = 4096;
/// A learned address is forgotten after this long without a frame from it (Linux's default
/// vxlan ageing).
pub const FDB_AGE_MS: u64 = 300_000;
/// Underlay MTU assumed when neither the interface nor a route says.
pub const DEFAULT_UNDERLAY_MTU: usize = 1500;

/// What `--uplink URL` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkSpec {
    /// The URL as given (shown by `port/print`).
    pub url: String,
    /// A multicast group, or unicast peers.
    pub addrs: Vec<IpAddr>,
    pub port: u16,
    pub vni: u32,
    pub ttl: u32,
    pub iface: Option<String>,
    /// The local address to bind (`local=`, as Linux's vxlan `local`): several switches on
    /// one host can then each have their own address on the same port. Default: any.
    pub local: Option<IpAddr>,
}

impl UplinkSpec {
    pub fn multicast(&self) -> bool {
        self.addrs.first().is_some_and(|a| a.is_multicast())
    }

    fn v6(&self) -> bool {
        self.addrs.first().is_some_and(|a| a.is_ipv6())
    }

    /// Bytes of encapsulation on top of the inner frame: outer IP, UDP, VXLAN.
    pub fn overhead(&self) -> usize {
        (if self.v6() { 40 } else { 20 }) + 8 + HDR
    }
}

fn parse_num<T: std::str::FromStr>(url: &str, key: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{url}: {key}={v:?} is not a valid number"))
}

/// Parse an uplink URL (`vxlan://…`). Errors say what is wrong, with the URL.
pub fn parse(url: &str) -> Result<UplinkSpec, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "{url:?}: an uplink is a URL such as vxlan://239.0.0.1/vni=42 or vxlan://10.0.0.2"
        ));
    };
    if scheme != "vxlan" {
        return Err(format!(
            "{url}: unknown uplink type {scheme:?} (this switch speaks vxlan://)"
        ));
    }
    let mut parts = rest.split('/');
    let first = parts.next().unwrap_or("");
    let (mut v4, mut v6) = (false, false);
    let mut spec = UplinkSpec {
        url: url.to_string(),
        addrs: Vec::new(),
        port: VXLAN_PORT,
        vni: DEFAULT_VNI,
        ttl: DEFAULT_TTL,
        iface: None,
        local: None,
    };
    for opt in parts.filter(|p| !p.is_empty()) {
        let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
        match k {
            "v4" if v.is_empty() => v4 = true,
            "v6" if v.is_empty() => v6 = true,
            "port" => spec.port = parse_num(url, k, v)?,
            "vni" => {
                spec.vni = parse_num(url, k, v)?;
                if spec.vni >= 1 << 24 {
                    return Err(format!("{url}: vni={v} does not fit in 24 bits"));
                }
            }
            "ttl" => {
                spec.ttl = parse_num(url, k, v)?;
                if !(1..=255).contains(&spec.ttl) {
                    return Err(format!("{url}: ttl={v} must be from 1 to 255"));
                }
            }
            "if" if !v.is_empty() => spec.iface = Some(v.to_string()),
            "local" => {
                spec.local = Some(
                    v.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse()
                        .map_err(|_| {
                            format!("{url}: local={v:?} is not an IPv4 or IPv6 address")
                        })?,
                )
            }
            _ => {
                return Err(format!(
                    "{url}: unknown option {opt:?} (vxlan:// takes port=, vni=, ttl=, if=, local=, v4, v6)"
                ));
            }
        }
    }
    if spec.port == 0 {
        return Err(format!("{url}: port=0 is not a port"));
    }
    for a in first.split(',').filter(|a| !a.is_empty()) {
        let t = a.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = t
            .parse()
            .map_err(|_| format!("{url}: {a:?} is not an IPv4 or IPv6 address"))?;
        spec.addrs.push(ip);
    }
    if spec.addrs.is_empty() {
        spec.addrs.push(if v6 && !v4 {
            IpAddr::V6(DEFAULT_GROUP_V6)
        } else {
            IpAddr::V4(DEFAULT_GROUP_V4)
        });
    }
    let fam = spec.addrs[0].is_ipv6();
    if spec.addrs.iter().any(|a| a.is_ipv6() != fam) {
        return Err(format!("{url}: mix of IPv4 and IPv6 addresses"));
    }
    if spec.multicast() && spec.addrs.len() > 1 {
        return Err(format!(
            "{url}: one multicast group, or unicast peers, not both"
        ));
    }
    if spec.local.is_some_and(|l| l.is_ipv6() != fam) {
        return Err(format!(
            "{url}: local= and the peers are of different families"
        ));
    }
    if spec.addrs.iter().any(|a| a.is_unspecified()) {
        return Err(format!("{url}: the unspecified address is not a peer"));
    }
    Ok(spec)
}

/// Counters of an uplink beyond the port's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkStats {
    /// Datagrams dropped: not VXLAN, another VNI, or too short.
    pub bad: u64,
    /// Sends the kernel refused (no route, buffer full): the frame is lost, and counted here.
    pub tx_errors: u64,
    /// SYNs whose MSS option was lowered to fit.
    pub mss_clamped: u64,
}

/// A running (or retrying) uplink.
pub struct Uplink {
    pub spec: UplinkSpec,
    sock: Option<UdpSocket>,
    /// Learned: remote MAC → (endpoint, last heard in ms).
    fdb: HashMap<[u8; 6], (SocketAddr, u64)>,
    hdr: [u8; HDR],
    /// Where floods go: the group, or every unicast peer.
    flood: Vec<SocketAddr>,
    pub stats: UplinkStats,
    /// Why the socket is not open (shown by `port/print`; `None` while it is).
    pub down: Option<String>,
    /// Largest inner frame (underlay MTU less [`UplinkSpec::overhead`]).
    pub max_frame: usize,
    buf: Vec<u8>,
}

/// What one receive gave.
pub enum Recv {
    /// A frame, at `buf[HDR..n]` of the buffer passed.
    Frame(usize),
    /// Something that was not a frame for us (counted).
    Skip,
    Again,
    Err(Errno),
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

fn ifindex(name: &str) -> Result<u32, String> {
    let p = format!("/sys/class/net/{name}/ifindex");
    std::fs::read_to_string(&p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("no interface {name:?}"))
}

fn iface_mtu(name: &str) -> Option<usize> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The path MTU the kernel's routes give towards `peer` (a connected probe socket).
fn route_mtu(peer: SocketAddr) -> Option<usize> {
    let any: SocketAddr = if peer.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any).ok()?;
    s.connect(peer).ok()?;
    let (level, name) = if peer.is_ipv6() {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU)
    };
    sys::getsockopt_int(s.as_raw_fd(), level, name)
        .ok()
        .map(|m| m as usize)
}

impl Uplink {
    pub fn new(spec: UplinkSpec) -> Uplink {
        let vni = spec.vni.to_be_bytes();
        let hdr = [0x08, 0, 0, 0, vni[1], vni[2], vni[3], 0];
        let flood = spec
            .addrs
            .iter()
            .map(|a| SocketAddr::new(*a, spec.port))
            .collect();
        let mut u = Uplink {
            spec,
            sock: None,
            fdb: HashMap::new(),
            hdr,
            flood,
            stats: UplinkStats::default(),
            down: Some("not opened yet".into()),
            max_frame: 0,
            buf: Vec::with_capacity(HDR + 65536),
        };
        u.max_frame = u.underlay_mtu().saturating_sub(u.spec.overhead());
        u
    }

    fn underlay_mtu(&self) -> usize {
        if let Some(m) = self.spec.iface.as_deref().and_then(iface_mtu) {
            return m;
        }
        if self.spec.multicast() {
            return DEFAULT_UNDERLAY_MTU;
        }
        self.flood
            .iter()
            .filter_map(|p| route_mtu(*p))
            .min()
            .unwrap_or(DEFAULT_UNDERLAY_MTU)
    }

    /// The socket's descriptor, while open.
    pub fn fd(&self) -> Option<std::os::fd::RawFd> {
        self.sock.as_ref().map(|s| s.as_raw_fd())
    }

    /// Open the socket (bind the port, join the group). On failure the uplink stays down, with
    /// the reason, and the caller retries later.
    pub fn open(&mut self) -> Result<(), String> {
        match self.try_open() {
            Ok(s) => {
                self.sock = Some(s);
                self.down = None;
                self.max_frame = self.underlay_mtu().saturating_sub(self.spec.overhead());
                Ok(())
            }
            Err(e) => {
                self.down = Some(e.clone());
                Err(e)
            }
        }
    }

    fn try_open(&self) -> Result<UdpSocket, String> {
        let s = &self.spec;
        let ctx = |what: &str, e: std::io::Error| format!("{what}: {e}");
        let index = match &s.iface {
            Some(n) => ifindex(n)?,
            None => 0,
        };
        let sock = if s.v6() {
            let at = SocketAddr::new(s.local.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)), s.port);
            let sock = UdpSocket::bind(at).map_err(|e| ctx(&format!("bind {at}"), e))?;
            if let IpAddr::V6(g) = s.addrs[0]
                && g.is_multicast()
            {
                sock.join_multicast_v6(&g, index)
                    .map_err(|e| ctx(&format!("join {g}"), e))?;
                sock.set_multicast_loop_v6(false)
                    .map_err(|e| ctx("multicast loop", e))?;
                let fd = sock.as_raw_fd();
                sys::setsockopt_int(
                    fd,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_MULTICAST_HOPS,
                    s.ttl as i32,
                )
                .map_err(|e| format!("multicast hops: {e}"))?;
                if index != 0 {
                    sys::setsockopt_int(
                        fd,
                        libc::IPPROTO_IPV6,
                        libc::IPV6_MULTICAST_IF,
                        index as i32,
                    )
                    .map_err(|e| format!("multicast interface: {e}"))?;
                }
            }
            sock
        } else {
            let at = SocketAddr::new(s.local.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), s.port);
            let sock = UdpSocket::bind(at).map_err(|e| ctx(&format!("bind {at}"), e))?;
            if let IpAddr::V4(g) = s.addrs[0]
                && g.is_multicast()
            {
                // struct ip_mreqn: group, local address (any), interface index.
                let mut mreqn = Vec::with_capacity(12);
                mreqn.extend_from_slice(&g.octets());
                mreqn.extend_from_slice(&[0; 4]);
                mreqn.extend_from_slice(&(index as i32).to_ne_bytes());
                let fd = sock.as_raw_fd();
                sys::setsockopt_bytes(fd, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreqn)
                    .map_err(|e| format!("join {g}: {e}"))?;
                if index != 0 {
                    sys::setsockopt_bytes(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreqn)
                        .map_err(|e| format!("multicast interface: {e}"))?;
                }
                sock.set_multicast_loop_v4(false)
                    .map_err(|e| ctx("multicast loop", e))?;
                sock.set_multicast_ttl_v4(s.ttl)
                    .map_err(|e| ctx("multicast ttl", e))?;
            } else {
                sock.set_ttl(s.ttl.max(64)).map_err(|e| ctx("ttl", e))?;
            }
            sock
        };
        sock.set_nonblocking(true)
            .map_err(|e| ctx("non-blocking", e))?;
        for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            let _ = sys::setsockopt_int(sock.as_raw_fd(), libc::SOL_SOCKET, opt, 4 << 20);
        }
        Ok(sock)
    }

    /// Close the socket (a fatal error on it); the caller reopens it later.
    pub fn fail(&mut self, why: String) {
        self.sock = None;
        self.down = Some(why);
    }

    /// Remote addresses learned.
    pub fn learned(&self) -> usize {
        self.fdb.len()
    }

    /// Forget addresses not heard from for [`FDB_AGE_MS`].
    pub fn expire(&mut self, now_ms: u64) {
        self.fdb
            .retain(|_, (_, t)| now_ms.saturating_sub(*t) < FDB_AGE_MS);
    }

    /// Receive one datagram into `buf`; a frame is at `buf[HDR..n]`.
    pub fn recv(&mut self, buf: &mut [u8], now_ms: u64) -> Recv {
        let Some(sock) = &self.sock else {
            return Recv::Again;
        };
        let (n, from) = match sock.recv_from(buf) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Recv::Again,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Recv::Skip,
            Err(e) => return Recv::Err(io_errno(&e)),
        };
        // RFC 7348: the I flag set, our VNI; the reserved bits are ignored.
        if n < HDR + 14 || n > buf.len() || buf[0] & 0x08 == 0 || buf[4..7] != self.hdr[4..7] {
            self.stats.bad += 1;
            return Recv::Skip;
        }
        let src: [u8; 6] = buf[HDR + 6..HDR + 12].try_into().unwrap_or_default();
        if src[0] & 1 == 0 {
            // Learned endpoints are addressed on our port (senders pick theirs by flow hash).
            let to = SocketAddr::new(from.ip(), self.spec.port);
            let known = self.fdb.contains_key(&src);
            if known || self.fdb.len() < MAX_FDB {
                self.fdb.insert(src, (to, now_ms));
            } else if let Some(old) = self
                .fdb
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(m, _)| *m)
            {
                self.fdb.remove(&old);
                self.fdb.insert(src, (to, now_ms));
            }
        }
        Recv::Frame(n)
    }

    /// Send `frame` through the tunnel: to the endpoint its destination was learned from, or
    /// to the group / every peer. Errors are counted; `Err` only for an error that needs the
    /// socket reopened.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), Errno> {
        let Some(sock) = &self.sock else {
            self.stats.tx_errors += 1;
            return Ok(());
        };
        self.buf.clear();
        self.buf.extend_from_slice(&self.hdr);
        self.buf.extend_from_slice(frame);
        if clamp_mss(&mut self.buf[HDR..], self.max_frame) {
            self.stats.mss_clamped += 1;
        }
        let dst: [u8; 6] = frame[..6].try_into().unwrap_or_default();
        let one;
        let dests: &[SocketAddr] = match self.fdb.get(&dst) {
            Some((to, _)) if dst[0] & 1 == 0 => {
                one = [*to];
                &one
            }
            _ => &self.flood,
        };
        for to in dests {
            match sock.send_to(&self.buf, to) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBADF) => return Err(Errno(libc::EBADF)),
                Err(e) => {
                    log::debug!("uplink {}: send to {to}: {e}", self.spec.url);
                    self.stats.tx_errors += 1;
                }
            }
        }
        Ok(())
    }
}

/// Lower the MSS option of a TCP SYN in `frame` (Ethernet, untagged or one 802.1Q tag, IPv4
/// or IPv6 without extension headers) so that segments fit in frames of `max_frame` bytes,
/// updating the TCP checksum. Returns whether the frame changed. Anything else is left alone.
pub fn clamp_mss(frame: &mut [u8], max_frame: usize) -> bool {
    let mut off = 12;
    let mut ethertype =
        u16::from_be_bytes([*frame.get(12).unwrap_or(&0), *frame.get(13).unwrap_or(&0)]);
    if ethertype == 0x8100 {
        off += 4;
        ethertype = match frame.get(off..off + 2) {
            Some(b) => u16::from_be_bytes([b[0], b[1]]),
            None => return false,
        };
    }
    let l3 = off + 2;
    let (l4, ip_hdr) = match ethertype {
        0x0800 => {
            let Some(&vihl) = frame.get(l3) else {
                return false;
            };
            let ihl = ((vihl & 0x0f) as usize) * 4;
            // TCP, and not a fragment past the first.
            if frame.get(l3 + 9) != Some(&6) || ihl < 20 {
                return false;
            }
            let frag = u16::from_be_bytes([frame[l3 + 6], frame[l3 + 7]]);
            if frag & 0x1fff != 0 {
                return false;
            }
            (l3 + ihl, 20)
        }
        0x86dd => {
            if frame.get(l3 + 6) != Some(&6) {
                return false;
            }
            (l3 + 40, 40)
        }
        _ => return false,
    };
    let Some(tcp) = frame.get(l4..l4 + 20) else {
        return false;
    };
    let doff = ((tcp[12] >> 4) as usize) * 4;
    if tcp[13] & 0x02 == 0 || doff < 20 || frame.len() < l4 + doff {
        return false;
    }
    let limit = max_frame.saturating_sub(l3 + ip_hdr + 20).min(65535) as u16;
    let mut i = l4 + 20;
    let end = l4 + doff;
    while i < end {
        match frame[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = frame.get(i + 1) else {
                    return false;
                };
                let len = len as usize;
                if len < 2 || i + len > end {
                    return false;
                }
                if kind == 2 && len == 4 {
                    let mss = u16::from_be_bytes([frame[i + 2], frame[i + 3]]);
                    if mss <= limit {
                        return false;
                    }
                    frame[i + 2..i + 4].copy_from_slice(&limit.to_be_bytes());
                    // RFC 1624: HC' = ~(~HC + ~m + m').
                    let ck = u16::from_be_bytes([frame[l4 + 16], frame[l4 + 17]]);
                    let new = csum::adjust(ck, mss, limit);
                    frame[l4 + 16..l4 + 18].copy_from_slice(&new.to_be_bytes());
                    return true;
                }
                i += len;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_as_vdeplug4_writes_them() {
        let s = parse("vxlan://").unwrap();
        assert_eq!(s.addrs, vec![IpAddr::V4(DEFAULT_GROUP_V4)]);
        assert_eq!((s.port, s.vni, s.ttl), (4789, 1, 1));
        assert!(s.multicast());
        let s = parse("vxlan:///v6").unwrap();
        assert_eq!(s.addrs, vec![IpAddr::V6(DEFAULT_GROUP_V6)]);
        let s = parse("vxlan://10.0.0.2,10.0.0.3/vni=42/port=4790/ttl=8/if=veth0").unwrap();
        assert_eq!(s.addrs.len(), 2);
        assert!(!s.multicast());
        assert_eq!((s.port, s.vni, s.ttl), (4790, 42, 8));
        assert_eq!(s.iface.as_deref(), Some("veth0"));
        let s = parse("vxlan://127.0.0.2/local=127.0.0.1").unwrap();
        assert_eq!(s.local, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(s.overhead(), 36);
        let s = parse("vxlan://[fd99::2]/vni=7").unwrap();
        assert_eq!(s.addrs, vec!["fd99::2".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.overhead(), 56);
        for (bad, says) in [
            ("vxlan:10.0.0.1", "is a URL"),
            ("gre://10.0.0.1", "unknown uplink type"),
            ("vxlan://10.0.0.1/vni=16777216", "24 bits"),
            ("vxlan://10.0.0.1/vni=x", "not a valid number"),
            ("vxlan://10.0.0.1/ttl=0", "ttl"),
            ("vxlan://10.0.0.1/port=0", "not a port"),
            ("vxlan://10.0.0.1/colour=red", "unknown option"),
            ("vxlan://10.0.0.300", "not an IPv4 or IPv6"),
            ("vxlan://10.0.0.1,fd00::1", "mix"),
            ("vxlan://239.0.0.1,239.0.0.2", "not both"),
            ("vxlan://0.0.0.0", "unspecified"),
            ("vxlan://10.0.0.1/local=fd00::1", "different families"),
            ("vxlan://10.0.0.1/local=x", "local="),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    /// An IPv4 SYN with MSS `mss` and a correct checksum.
    fn syn_v4(mss: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 24];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&44u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let tcp = &mut f[34..];
        tcp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 6 << 4;
        tcp[13] = 0x02;
        tcp[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
        csum::fill(&mut f);
        f
    }

    #[test]
    fn syn_mss_is_clamped_with_a_checksum_that_stays_right() {
        let mut f = syn_v4(65480);
        assert!(clamp_mss(&mut f, 1464));
        assert_eq!(u16::from_be_bytes([f[56], f[57]]), 1464 - 14 - 40);
        let mut g = f.clone();
        g[50..52].copy_from_slice(&[0, 0]);
        csum::fill(&mut g);
        assert_eq!(f, g, "incremental checksum equals a full one");
        // Already small enough, not a SYN, not TCP: unchanged.
        let mut f = syn_v4(1000);
        assert!(!clamp_mss(&mut f, 1464));
        let mut f = syn_v4(9000);
        f[47] = 0x10;
        assert!(!clamp_mss(&mut f, 1464));
        let mut f = syn_v4(9000);
        f[23] = 17;
        assert!(!clamp_mss(&mut f, 1464));
        // Truncated options never read past the frame.
        let mut f = syn_v4(9000);
        f.truncate(56);
        assert!(!clamp_mss(&mut f, 1464));
    }
}
