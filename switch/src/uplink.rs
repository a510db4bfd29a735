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
//! The largest frame an uplink carries on the wire is the underlay's MTU less the outer IP,
//! UDP and VXLAN headers (50 bytes of encapsulation on IPv4, counting the inner Ethernet
//! header): the interface's MTU with `if=`, the route's MTU towards a unicast peer, 1500
//! otherwise. The nodes keep their 64 KiB frames: a larger TCP frame is cut into segments
//! that fit ([`ioth_common::offload::segment`], as a NIC's TSO), sent with one system call per
//! 64 KiB (`UDP_SEGMENT`); another IP packet too large (a UDP datagram, an ICMP echo) is cut
//! into IP fragments ([`ioth_common::offload::fragment`], as a NIC's UDP fragmentation offload);
//! what is neither is dropped and counted (`toobig`).
//! Datagrams are received up to 64 per system call (`recvmmsg`; with `UDP_GRO`, a run of
//! datagrams from one sender, such as a peer's offloaded send, is one of them), and the
//! switch glues
//! consecutive segments of one connection back together for the local node
//! ([`ioth_common::offload::Coalescer`]).

use ioth_common::csum;
use ioth_common::offload;
use ioth_common::sys::{self, Errno};
use ioth_common::vde;
use std::collections::HashMap;
use std::io::IoSlice;
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

    /// The TTL of unicast sends: `ttl=` (vdeplug4's default of 1 is meant for multicast),
    /// but at least 64.
    pub fn unicast_ttl(&self) -> u8 {
        self.ttl.clamp(64, 255) as u8
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

/// An `--uplink` as given: a VXLAN tunnel of the switch's own, or any other vdeplug4 URL,
/// reached through Debian's `vde_plug` as a cable the switch runs and supervises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UplinkUrl {
    Vxlan(UplinkSpec),
    Cable(String),
}

/// Parse an uplink URL. Errors say what is wrong, with the URL.
pub fn parse_url(url: &str) -> Result<UplinkUrl, String> {
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(format!(
            "{url:?}: an uplink is a URL such as vxlan://239.0.0.1/vni=42, vxlan://10.0.0.2 or \
             any vdeplug4 URL (vxvde://, slirp://, tap://, udp://…)"
        ));
    };
    if scheme == "vxlan" {
        return parse(url).map(UplinkUrl::Vxlan);
    }
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!("{url}: {scheme:?} is not a vdeplug4 URL scheme"));
    }
    Ok(UplinkUrl::Cable(url.to_string()))
}

/// Parse a `vxlan://` URL. Errors say what is wrong, with the URL.
pub fn parse(url: &str) -> Result<UplinkSpec, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "{url:?}: an uplink is a URL such as vxlan://239.0.0.1/vni=42 or vxlan://10.0.0.2"
        ));
    };
    if scheme != "vxlan" {
        return Err(format!("{url}: not a vxlan:// URL"));
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
    /// TCP frames cut into segments that fit the wire.
    pub segmented: u64,
    /// Other IP packets cut into fragments that fit the wire.
    pub fragmented: u64,
    /// Received segments glued onto the one before (counted by the server).
    pub joined: u64,
}

/// Datagrams read per system call.
pub const BATCH: usize = 64;
/// Room for one received datagram (the largest UDP payload, and one byte to tell a longer
/// one).
pub const SLOT: usize = 65536;
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
    /// Largest inner frame on the wire (underlay MTU less [`UplinkSpec::overhead`]), found at
    /// each [`Uplink::open`].
    pub max_frame: usize,
    buf: Vec<u8>,
    got: Vec<sys::UdpGot>,
    /// The last fragment identification used.
    frag_id: u32,
    /// Where the headers (in `buf`) and the payload (in the frame) of each segment lie.
    parts: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    /// MACs whose endpoint changed or was forgotten since the server last looked (their
    /// uplink offers end).
    pub moved: Vec<[u8; 6]>,
}

/// What [`Uplink::send`] did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Gone (or lost and counted in `tx_errors`).
    Out,
    /// Too large for the wire and not TCP that can be cut: dropped.
    TooBig,
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
        Uplink {
            spec,
            sock: None,
            fdb: HashMap::new(),
            hdr,
            flood,
            stats: UplinkStats::default(),
            down: Some("not opened yet".into()),
            max_frame: 0,
            buf: Vec::with_capacity(HDR + 65536),
            got: Vec::with_capacity(BATCH),
            frag_id: sys::random_u64() as u32,
            parts: Vec::new(),
            moved: Vec::new(),
        }
    }

    /// The largest inner frame the wire takes (and a UDP datagram holds).
    fn wire_frame(&self) -> usize {
        let udp_max = if self.spec.v6() { 65527 } else { 65507 } - HDR;
        self.underlay_mtu()
            .saturating_sub(self.spec.overhead())
            .min(udp_max)
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

    /// Open the socket (bind the port, join the group) and find the wire's frame size (the
    /// interface or route may have changed since the last try). On failure the uplink stays
    /// down, with the reason, and the caller retries later.
    pub fn open(&mut self) -> Result<(), String> {
        self.max_frame = self.wire_frame();
        match self.try_open() {
            Ok(s) => {
                self.sock = Some(s);
                self.down = None;
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
                sock.set_ttl(u32::from(s.unicast_ttl()))
                    .map_err(|e| ctx("ttl", e))?;
            }
            sock
        };
        sock.set_nonblocking(true)
            .map_err(|e| ctx("non-blocking", e))?;
        // Runs of datagrams from one sender come in one reception (and the kernel does not
        // cut a peer's segmentation-offload sends back into datagrams for us).
        let _ = sys::setsockopt_int(sock.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1);
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
        let moved = &mut self.moved;
        self.fdb.retain(|m, (_, t)| {
            let keep = now_ms.saturating_sub(*t) < FDB_AGE_MS;
            if !keep {
                moved.push(*m);
            }
            keep
        });
    }

    /// Where a stack daemon in network namespace `netns` may send the frames for `dst`
    /// itself (an uplink offer): the endpoint learned for it, with our header, frame size,
    /// source address and TTL. `None` while the socket is down, for an unknown or group
    /// address, and on an uplink bound to an interface (`if=`), whose sends a daemon
    /// could not bind alike.
    pub fn route(&self, dst: &[u8; 6], netns: (u64, u64)) -> Option<vde::UplinkRoute> {
        if self.sock.is_none() || self.spec.iface.is_some() || dst[0] & 1 != 0 {
            return None;
        }
        let (to, _) = self.fdb.get(dst)?;
        Some(vde::UplinkRoute {
            to: *to,
            local: self.spec.local,
            header: self.hdr,
            max_frame: self.max_frame as u32,
            ttl: self.spec.unicast_ttl(),
            netns,
        })
    }

    /// Receive up to [`BATCH`] datagrams into `buf` (slots of [`SLOT`] bytes) without waiting;
    /// `frames` gets the place of each frame for us (`buf[start..end]`), in order. What is
    /// not VXLAN for our VNI is dropped and counted. `Ok(0)`: nothing was waiting.
    pub fn recv_batch(
        &mut self,
        buf: &mut [u8],
        frames: &mut Vec<(usize, usize)>,
        now_ms: u64,
    ) -> Result<usize, Errno> {
        frames.clear();
        let Some(sock) = &self.sock else {
            return Ok(0);
        };
        let mut got = std::mem::take(&mut self.got);
        let r = sys::recv_udp_batch(sock.as_raw_fd(), buf, SLOT, &mut got);
        let n = match r {
            Ok(n) => n,
            Err(e) if e.is_again() || e == Errno::EINTR => 0,
            Err(e) => {
                self.got = got;
                return Err(e);
            }
        };
        // A run of datagrams comes from one sender and one MAC: learn each pair once.
        let mut last: Option<([u8; 6], IpAddr)> = None;
        for (i, g) in got.iter().enumerate() {
            let slot = i * SLOT;
            if g.len >= SLOT {
                self.stats.bad += 1;
                continue;
            }
            // One datagram, or several of `gso` bytes that the kernel received together.
            let step = if g.gso > 0 { g.gso } else { g.len };
            let mut at = slot;
            while at < slot + g.len {
                let end = (at + step).min(slot + g.len);
                let d = &buf[at..end];
                at = end;
                // RFC 7348: the I flag set, our VNI; the reserved bits are ignored.
                if d.len() < HDR + 14 || d[0] & 0x08 == 0 || d[4..7] != self.hdr[4..7] {
                    self.stats.bad += 1;
                    continue;
                }
                if let (Some(from), Ok(src)) = (g.from, <[u8; 6]>::try_from(&d[HDR + 6..HDR + 12]))
                    && last != Some((src, from.ip()))
                {
                    last = Some((src, from.ip()));
                    self.learn(src, from.ip(), now_ms);
                }
                frames.push((end - d.len() + HDR, end));
            }
        }
        self.got = got;
        Ok(n)
    }

    fn learn(&mut self, src: [u8; 6], ip: IpAddr, now_ms: u64) {
        if src[0] & 1 != 0 {
            return;
        }
        // Learned endpoints are addressed on our port (senders pick theirs by flow hash).
        let to = SocketAddr::new(ip, self.spec.port);
        if let Some(e) = self.fdb.get_mut(&src) {
            if e.0 != to {
                self.moved.push(src);
            }
            *e = (to, now_ms);
            return;
        }
        if self.fdb.len() >= MAX_FDB
            && let Some(old) = self
                .fdb
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(m, _)| *m)
        {
            self.fdb.remove(&old);
            self.moved.push(old);
        }
        self.fdb.insert(src, (to, now_ms));
    }

    /// Send `frame` through the tunnel: to the endpoint its destination was learned from, or
    /// to the group / every peer; cut into segments if it is TCP too large for the wire.
    /// Errors of the kernel are counted; `Err` only for one that needs the socket reopened.
    pub fn send(&mut self, frame: &[u8]) -> Result<Sent, Errno> {
        let Some(sock) = &self.sock else {
            self.stats.tx_errors += 1;
            return Ok(Sent::Out);
        };
        let fd = sock.as_raw_fd();
        let dst: [u8; 6] = frame[..6].try_into().unwrap_or_default();
        let to_one = match self.fdb.get(&dst) {
            Some((to, _)) if dst[0] & 1 == 0 => Some(*to),
            _ => None,
        };
        let dests = match &to_one {
            Some(to) => std::slice::from_ref(to),
            None => &self.flood[..],
        };
        let url = &self.spec.url;
        let mut errors = 0;
        self.buf.clear();
        self.parts.clear();
        // TCP larger than the wire: headers built apart, payload sent from where it lies.
        let cut = frame.len() > self.max_frame;
        if cut
            && let Some(unit) = offload::segment_parts(
                frame,
                self.max_frame,
                &self.hdr,
                &mut self.buf,
                &mut self.parts,
            )
        {
            self.stats.segmented += 1;
            for to in dests {
                for iov in offload::send_groups(&self.buf, &self.parts, frame, unit) {
                    gso_send(fd, &iov, unit, to, url, &mut errors)?;
                }
            }
            self.stats.tx_errors += errors;
            return Ok(Sent::Out);
        }
        self.buf.clear();
        let unit = if !cut {
            self.buf.extend_from_slice(&self.hdr);
            self.buf.extend_from_slice(frame);
            // The switch hands the uplink frames whose checksums may be missing (see
            // `server.rs`): the wire gets them right.
            csum::fill(&mut self.buf[HDR..]);
            self.buf.len()
        } else {
            self.frag_id = self.frag_id.wrapping_add(1);
            match offload::fragment(
                frame,
                self.max_frame,
                &self.hdr,
                &mut self.buf,
                self.frag_id,
            ) {
                Some(unit) => {
                    self.stats.fragmented += 1;
                    unit
                }
                None => return Ok(Sent::TooBig),
            }
        };
        let per = offload::per_send(unit) * unit;
        for to in dests {
            for chunk in self.buf.chunks(per) {
                gso_send(fd, &[IoSlice::new(chunk)], unit, to, url, &mut errors)?;
            }
        }
        self.stats.tx_errors += errors;
        Ok(Sent::Out)
    }
}

/// One segmentation-offload send of datagrams of `unit` bytes; an error of the kernel is
/// logged and counted in `errors`, `Err` only for one that needs the socket reopened.
fn gso_send(
    fd: std::os::fd::RawFd,
    iov: &[IoSlice<'_>],
    unit: usize,
    to: &SocketAddr,
    url: &str,
    errors: &mut u64,
) -> Result<(), Errno> {
    match sys::send_udp_gso(fd, iov, unit as u16, to) {
        Ok(_) => Ok(()),
        Err(e) if e.0 == libc::EBADF => Err(e),
        Err(e) => {
            log::debug!("uplink {url}: send to {to}: {e}");
            *errors += 1;
            Ok(())
        }
    }
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
        assert_eq!(
            parse_url("vxvde://239.0.0.1/vni=3"),
            Ok(UplinkUrl::Cable("vxvde://239.0.0.1/vni=3".into()))
        );
        assert!(matches!(
            parse_url("vxlan://10.0.0.2"),
            Ok(UplinkUrl::Vxlan(_))
        ));
        assert!(parse_url("slirp").unwrap_err().contains("vdeplug4 URL"));
        assert!(
            parse_url("s l://x")
                .unwrap_err()
                .contains("not a vdeplug4 URL scheme")
        );
        for (bad, says) in [
            ("vxlan:10.0.0.1", "is a URL"),
            ("gre://10.0.0.1", "not a vxlan:// URL"),
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
}
