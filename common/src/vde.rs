//! The classic VDE v3 wire format (vde_switch's `ctl` handshake) and ioth's native port
//! handshake, both sides.
//!
//! VDE (byte layouts from vde-2 `src/vde_switch/datasock.c`, vdeplug4 `libvdeplug_vde.c`):
//! a client connects a `SOCK_STREAM` socket to `DIR/ctl`, binds a `SOCK_DGRAM` socket, and
//! sends one `request_v3` (native byte order, little-endian on every target we build for):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `0xfeedface` |
//! | 4 | 4 | version `3` |
//! | 8 | 4 | type: `(port << 8) \| kind`, kind 0 = new control, 1 = new port 0 |
//! | 12 | 110 | `sockaddr_un` of the client's datagram socket |
//! | 122 | n ≤ 134 | description, not NUL-terminated |
//!
//! The switch answers with the 110-byte `sockaddr_un` of its own datagram socket (already
//! connected to the client's), or closes the connection to refuse. Frames then travel one per
//! datagram, at most [`VDE_MAX_FRAME`] bytes. The control connection stays open: EOF on it
//! means the other side is gone.
//!
//! Native ports (ioth's own stacks): a `SOCK_SEQPACKET` connection to `DIR/native`; the client
//! sends [`NativeHello`], the switch answers with [`NativeWelcome`]; then one frame per
//! message, up to [`NATIVE_MAX_FRAME`] bytes.
//! A switch that cannot take the port (all its ports in use) answers [`NativeRefusal`]
//! instead of the welcome, then closes, so that the client can say why.
//!
//! Feature flags (added later, compatible both ways): a hello may end with `NUL, flags u32`
//! after its description; a switch that understands them answers with a 20-byte welcome
//! carrying the flags it grants. A client that sent no flags gets the 16-byte welcome, and a
//! switch that does not know flags answers 16 bytes (no flags granted). The one flag so far,
//! [`NATIVE_FLAG_CSUM_FILL`]: the client sends frames with the IPv4 header, TCP and UDP
//! checksums left out, and the switch fills them in ([`crate::csum::fill`]) whenever such a
//! frame leaves through a port that did not ask for the flag, or goes to a pcap file.
//!
//! [`NATIVE_FLAG_SHORTCUT`] (a client that understands shortcut offers): the switch may send
//! such a client a [`ShortcutOffer`] on its port: a message shorter than any frame (12 bytes,
//! so it can never be taken for one) carrying, by `SCM_RIGHTS`, one end of a fresh
//! `SOCK_SEQPACKET` socketpair whose other end went to the port of `peer`. The client may then
//! send its unicast frames for `peer` straight into that socket (one frame per message, as on
//! the port) and must read frames from it as if they came from the switch. The switch ends a
//! shortcut by `shutdown(SHUT_RDWR)` on its own copies of both ends: the clients then see EOF
//! (reading) or `EPIPE` (sending), drop the shortcut and go through the switch again.
//!
//! [`NATIVE_FLAG_RINGS`] (a client that can move its frames through shared-memory rings,
//! [`crate::ring`]): once granted, the client may send its half of the rings on the port
//! (`ring::SETUP_MAGIC` with its two memfds, as between the two ends of a shortcut); the
//! switch answers with its own half. From then on the frames of both directions go through
//! the rings, and the port's socket carries one-byte doorbells (`ring::DOORBELL`), control
//! messages and shortcut offers. Frames sent on the socket are still taken (those of the
//! moment the rings start). Each ring costs a 2 MiB memfd; the switch maps the client's
//! read-only, checks every record (a client that breaks the protocol loses its port), and
//! copies each frame out before it looks at it.
//!
//! [`NATIVE_FLAG_UPLINK`] (a client that can send frames to a VXLAN tunnel endpoint itself):
//! the switch may send it an [`UplinkOffer`] for a MAC its uplink learned an endpoint for,
//! with one end of a fresh `SOCK_SEQPACKET` socketpair whose first message is the
//! [`UplinkRoute`]. The client may then send its unicast frames for that MAC to the endpoint
//! with a UDP socket of its own (VXLAN header before each, TCP larger than the route's
//! `max_frame` cut to fit, as the uplink does), while the socketpair shows no end of file.
//! Granted only to a client in the switch's network namespace.

#![deny(unsafe_code)]

use crate::sys::{Errno, UnixAddr};

pub const VDE_MAGIC: u32 = 0xfeed_face;
pub const VDE_VERSION: u32 = 3;
/// 1500-byte MTU + 14-byte header + one 802.1Q tag.
pub const VDE_MAX_FRAME: usize = 1518;
pub const NATIVE_MAX_FRAME: usize = 65536;
/// `sizeof(struct sockaddr_un)` on Linux.
pub const SOCKADDR_UN_LEN: usize = 110;
pub const REQ_FIXED_LEN: usize = 12 + SOCKADDR_UN_LEN;
/// The switch reads the request with one `read` of this size.
pub const REQ_MAX_LEN: usize = 256;
pub const MIN_FRAME: usize = 14;

/// A parsed `request_v3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VdeRequest {
    /// Requested port: 0 = any free port.
    pub port: u32,
    /// `true` for REQ_NEW_PORT0 (the reserved management port).
    pub port0: bool,
    /// The client's datagram socket.
    pub sock: UnixAddr,
    pub description: String,
}

impl VdeRequest {
    pub fn encode(&self) -> Result<Vec<u8>, Errno> {
        let mut b = Vec::with_capacity(REQ_FIXED_LEN + self.description.len());
        b.extend_from_slice(&VDE_MAGIC.to_le_bytes());
        b.extend_from_slice(&VDE_VERSION.to_le_bytes());
        let ty = (self.port << 8) | u32::from(self.port0);
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&sockaddr_un_bytes(&self.sock)?);
        let d = self.description.as_bytes();
        b.extend_from_slice(&d[..d.len().min(REQ_MAX_LEN - REQ_FIXED_LEN)]);
        Ok(b)
    }

    /// Parse what the switch read from a new `ctl` connection. Rejects (EPROTO) anything that
    /// vde_switch would reject: wrong magic, a version other than 3, an unknown kind, a
    /// socket address that is not AF_UNIX.
    pub fn parse(b: &[u8]) -> Result<VdeRequest, Errno> {
        if b.len() < REQ_FIXED_LEN || b.len() > REQ_MAX_LEN {
            return Err(Errno::EPROTO);
        }
        let u = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if u(0) != VDE_MAGIC || u(4) != VDE_VERSION {
            return Err(Errno::EPROTO);
        }
        let ty = u(8);
        let kind = ty & 0xff;
        if kind > 1 {
            return Err(Errno::EPROTO);
        }
        let sock = parse_sockaddr_un(&b[12..12 + SOCKADDR_UN_LEN])?;
        if sock == UnixAddr::Unnamed {
            return Err(Errno::EPROTO);
        }
        let description = String::from_utf8_lossy(&b[REQ_FIXED_LEN..])
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .trim_end_matches(' ')
            .to_string();
        Ok(VdeRequest {
            port: ty >> 8,
            port0: kind == 1,
            sock,
            description,
        })
    }
}

/// The 110 bytes of a `sockaddr_un` for `addr` (path NUL-padded).
pub fn sockaddr_un_bytes(addr: &UnixAddr) -> Result<[u8; SOCKADDR_UN_LEN], Errno> {
    let mut out = [0u8; SOCKADDR_UN_LEN];
    out[0..2].copy_from_slice(&(libc::AF_UNIX as u16).to_le_bytes());
    let (bytes, off): (&[u8], usize) = match addr {
        UnixAddr::Unnamed => (&[], 0),
        UnixAddr::Path(p) => (p, 0),
        UnixAddr::Abstract(n) => (n, 1),
    };
    // 108 bytes of sun_path: a path keeps a terminating NUL, an abstract name fills the
    // 107 bytes after its leading NUL (what [`parse_sockaddr_un`] gives back).
    if bytes.len() + off > SOCKADDR_UN_LEN - 2 - usize::from(off == 0) {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    out[2 + off..2 + off + bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

/// Parse 110 bytes of `sockaddr_un` (a path ends at the first NUL; an abstract name, which
/// vde_switch connects to with the full length, keeps all 107 bytes).
pub fn parse_sockaddr_un(b: &[u8]) -> Result<UnixAddr, Errno> {
    if b.len() != SOCKADDR_UN_LEN {
        return Err(Errno::EPROTO);
    }
    if u16::from_le_bytes([b[0], b[1]]) != libc::AF_UNIX as u16 {
        return Err(Errno::EPROTO);
    }
    let p = &b[2..];
    if p[0] == 0 {
        if p.iter().all(|x| *x == 0) {
            return Ok(UnixAddr::Unnamed);
        }
        return Ok(UnixAddr::Abstract(p[1..].to_vec()));
    }
    let end = p.iter().position(|x| *x == 0).unwrap_or(p.len());
    Ok(UnixAddr::Path(p[..end].to_vec()))
}

pub const NATIVE_MAGIC: &[u8; 8] = b"IOTHPRT1";

/// Native port flag: checksums are filled by the switch, not by the sending stack (see the
/// module documentation).
pub const NATIVE_FLAG_CSUM_FILL: u32 = 1;
/// Native port flag: the client takes [`ShortcutOffer`]s (see the module documentation).
pub const NATIVE_FLAG_SHORTCUT: u32 = 2;
/// Native port flag: the client may move frames through shared-memory rings (see the module
/// documentation).
pub const NATIVE_FLAG_RINGS: u32 = 4;
/// Native port flag: the client takes [`UplinkOffer`]s (see the module documentation).
pub const NATIVE_FLAG_UPLINK: u32 = 8;

/// Magic of a [`ShortcutOffer`].
pub const SHORTCUT_MAGIC: &[u8; 2] = b"SC";
/// Length of a [`ShortcutOffer`]: shorter than [`MIN_FRAME`], so never a frame.
pub const SHORTCUT_OFFER_LEN: usize = 13;
/// [`ShortcutOffer::flags`]: the switch does not allow TCP cut-through on this shortcut
/// (`ioth-switch --no-cut-through`): the connections' bytes must stay on the LAN.
pub const SHORTCUT_NO_CUT: u8 = 1;

/// The switch's offer of a direct path to `peer` (its MAC): `"SC", peer[6], id u32, flags
/// u8` (an offer of 12 bytes, without flags, is also understood), sent with one descriptor
/// (`SCM_RIGHTS`): the client's end of the shortcut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortcutOffer {
    pub peer: [u8; 6],
    /// The switch's number for the shortcut (both ends get the same).
    pub id: u32,
    /// [`SHORTCUT_NO_CUT`] or 0.
    pub flags: u8,
}

impl ShortcutOffer {
    pub fn encode(&self) -> [u8; SHORTCUT_OFFER_LEN] {
        let mut b = [0u8; SHORTCUT_OFFER_LEN];
        b[..2].copy_from_slice(SHORTCUT_MAGIC);
        b[2..8].copy_from_slice(&self.peer);
        b[8..12].copy_from_slice(&self.id.to_le_bytes());
        b[12] = self.flags;
        b
    }
    pub fn parse(b: &[u8]) -> Result<ShortcutOffer, Errno> {
        if !(12..=SHORTCUT_OFFER_LEN).contains(&b.len()) || &b[..2] != SHORTCUT_MAGIC {
            return Err(Errno::EPROTO);
        }
        let mut peer = [0u8; 6];
        peer.copy_from_slice(&b[2..8]);
        Ok(ShortcutOffer {
            peer,
            id: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: b.get(12).copied().unwrap_or(0),
        })
    }
}

/// Magic of an [`UplinkOffer`].
pub const UPLINK_OFFER_MAGIC: &[u8; 2] = b"UO";
/// Length of an [`UplinkOffer`]: shorter than [`MIN_FRAME`], so never a frame.
pub const UPLINK_OFFER_LEN: usize = 12;

/// The switch's offer to send the frames for `peer` (a MAC learned behind a VXLAN uplink)
/// straight to its tunnel endpoint: `"UO", peer[6], id u32`, sent with one descriptor
/// (`SCM_RIGHTS`), the client's end of a `SOCK_SEQPACKET` socketpair whose first message is
/// the [`UplinkRoute`] and whose end of file means the offer is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UplinkOffer {
    pub peer: [u8; 6],
    /// The switch's number for it (shortcuts and uplink offers share the numbers).
    pub id: u32,
}

impl UplinkOffer {
    pub fn encode(&self) -> [u8; UPLINK_OFFER_LEN] {
        let mut b = [0u8; UPLINK_OFFER_LEN];
        b[..2].copy_from_slice(UPLINK_OFFER_MAGIC);
        b[2..8].copy_from_slice(&self.peer);
        b[8..12].copy_from_slice(&self.id.to_le_bytes());
        b
    }
    pub fn parse(b: &[u8]) -> Option<UplinkOffer> {
        if b.len() != UPLINK_OFFER_LEN || &b[..2] != UPLINK_OFFER_MAGIC {
            return None;
        }
        let mut peer = [0u8; 6];
        peer.copy_from_slice(&b[2..8]);
        Some(UplinkOffer {
            peer,
            id: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        })
    }
}

/// Magic of an [`UplinkRoute`].
pub const UPLINK_ROUTE_MAGIC: &[u8; 4] = b"IOUR";
/// Length of an [`UplinkRoute`].
pub const UPLINK_ROUTE_LEN: usize = 4 + 19 + 17 + 8 + 4 + 1 + 16;

/// Where an [`UplinkOffer`]'s frames go, and how: the tunnel endpoint (`to`), the address the
/// uplink sends from (`local`, `None`: any), the VXLAN header to put before each frame, the
/// largest frame the wire takes (larger TCP is cut into segments of that size, anything else
/// larger goes through the switch), the unicast TTL, and the switch's network namespace
/// (device and inode of `/proc/self/ns/net`): the endpoint is reachable from there, so the
/// client takes the offer only in the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UplinkRoute {
    pub to: std::net::SocketAddr,
    pub local: Option<std::net::IpAddr>,
    pub header: [u8; 8],
    pub max_frame: u32,
    pub ttl: u8,
    pub netns: (u64, u64),
}

/// An address as `family u8 (0 none, 4, 6), address[16]` into `b` (17 bytes).
fn put_addr(b: &mut [u8], a: Option<std::net::IpAddr>) {
    match a {
        Some(std::net::IpAddr::V4(v)) => {
            b[0] = 4;
            b[1..5].copy_from_slice(&v.octets());
        }
        Some(std::net::IpAddr::V6(v)) => {
            b[0] = 6;
            b[1..17].copy_from_slice(&v.octets());
        }
        None => b[0] = 0,
    }
}

/// The network namespace of process `pid` (`"self"` for ours): device and inode of
/// `/proc/PID/ns/net`; `None` if it cannot be read (another user's process).
pub fn netns_of(pid: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    Some((m.dev(), m.ino()))
}

fn get_addr(b: &[u8]) -> Result<Option<std::net::IpAddr>, Errno> {
    match b[0] {
        0 => Ok(None),
        4 => Ok(Some(std::net::IpAddr::from([b[1], b[2], b[3], b[4]]))),
        6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[1..17]);
            Ok(Some(std::net::IpAddr::from(o)))
        }
        _ => Err(Errno::EPROTO),
    }
}

impl UplinkRoute {
    /// `magic[4], to (family u8: 4 or 6, address[16], port u16), local (family u8: 0 for
    /// none, address[16]), header[8], max_frame u32, ttl u8, netns dev u64, ino u64`
    /// (little-endian numbers).
    pub fn encode(&self) -> [u8; UPLINK_ROUTE_LEN] {
        let mut b = [0u8; UPLINK_ROUTE_LEN];
        b[..4].copy_from_slice(UPLINK_ROUTE_MAGIC);
        put_addr(&mut b[4..21], Some(self.to.ip()));
        b[21..23].copy_from_slice(&self.to.port().to_le_bytes());
        put_addr(&mut b[23..40], self.local);
        b[40..48].copy_from_slice(&self.header);
        b[48..52].copy_from_slice(&self.max_frame.to_le_bytes());
        b[52] = self.ttl;
        b[53..61].copy_from_slice(&self.netns.0.to_le_bytes());
        b[61..69].copy_from_slice(&self.netns.1.to_le_bytes());
        b
    }
    pub fn parse(b: &[u8]) -> Result<UplinkRoute, Errno> {
        if b.len() != UPLINK_ROUTE_LEN || &b[..4] != UPLINK_ROUTE_MAGIC {
            return Err(Errno::EPROTO);
        }
        let ip = get_addr(&b[4..21])?.ok_or(Errno::EPROTO)?;
        let port = u16::from_le_bytes([b[21], b[22]]);
        let u64_at = |i: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(v)
        };
        let mut header = [0u8; 8];
        header.copy_from_slice(&b[40..48]);
        Ok(UplinkRoute {
            to: std::net::SocketAddr::new(ip, port),
            local: get_addr(&b[23..40])?,
            header,
            max_frame: u32::from_le_bytes([b[48], b[49], b[50], b[51]]),
            ttl: b[52],
            netns: (u64_at(53), u64_at(61)),
        })
    }
}

/// Magic of a [`CutReport`].
pub const CUT_REPORT_MAGIC: &[u8; 4] = b"ICUT";
/// Length of a [`CutReport`]: shorter than [`MIN_FRAME`], so never a frame.
pub const CUT_REPORT_LEN: usize = 12;

/// A stack daemon's count of the TCP connections it cut through over a shortcut (from its
/// side: the ones it connected), for the switch's `shortcut/print`: `"ICUT", shortcut id
/// u32, made u32`, sent on the daemon's native port now and then (the bytes of those
/// connections never reach the switch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutReport {
    pub shortcut: u32,
    pub made: u32,
}

impl CutReport {
    pub fn encode(&self) -> [u8; CUT_REPORT_LEN] {
        let mut b = [0u8; CUT_REPORT_LEN];
        b[..4].copy_from_slice(CUT_REPORT_MAGIC);
        b[4..8].copy_from_slice(&self.shortcut.to_le_bytes());
        b[8..12].copy_from_slice(&self.made.to_le_bytes());
        b
    }
    pub fn parse(b: &[u8]) -> Option<CutReport> {
        if b.len() != CUT_REPORT_LEN || &b[..4] != CUT_REPORT_MAGIC {
            return None;
        }
        Some(CutReport {
            shortcut: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            made: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        })
    }
}

/// Length of a [`StatReport`]: shorter than [`MIN_FRAME`], so never a frame.
pub const STAT_REPORT_LEN: usize = 13;
/// Magic of a [`StatReport`].
pub const STAT_REPORT_MAGIC: &[u8; 2] = b"IS";
/// Largest value a [`StatReport`] carries (48 bits; larger ones are sent as this).
pub const STAT_MAX: u64 = (1 << 48) - 1;

/// One figure of a stack daemon about itself, for the switch's `/metrics`: `"IS", metric u8,
/// key u32, value u48` (little-endian), sent on the daemon's native port when it changed
/// (at most once a second). The metrics and their keys are in [`stat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatReport {
    pub metric: u8,
    pub key: u32,
    pub value: u64,
}

/// The metrics of a [`StatReport`].
pub mod stat {
    /// TCP sockets (smoltcp's, listeners' pools included) in a state; key: index in
    /// [`TCP_STATES`]. Gauge.
    pub const TCP_STATE: u8 = 1;
    /// TCP connections cut through (`Cut` records). Gauge.
    pub const CUT_THROUGH: u8 = 2;
    /// The applications' sockets, by kind; key: index in [`SOCKET_KINDS`]. Gauge.
    pub const SOCKETS: u8 = 3;
    /// TCP segments retransmitted. Counter.
    pub const RETRANSMITTED: u8 = 4;
    /// TCP retransmission timeouts. Counter.
    pub const TIMEOUTS: u8 = 5;
    /// TCP fast retransmits. Counter.
    pub const FAST_RETRANSMITS: u8 = 6;
    /// The daemon's resident memory, bytes. Gauge.
    pub const RESIDENT: u8 = 7;
    /// Frames sent over a shortcut; key: the shortcut's id. Counter.
    pub const SHORTCUT_FRAMES: u8 = 8;
    /// Bytes sent over a shortcut; key: the shortcut's id. Counter.
    pub const SHORTCUT_BYTES: u8 = 9;
    /// TCP states, in smoltcp's order, as Prometheus label values.
    pub const TCP_STATES: [&str; 11] = [
        "closed",
        "listen",
        "syn_sent",
        "syn_received",
        "established",
        "fin_wait_1",
        "fin_wait_2",
        "close_wait",
        "closing",
        "last_ack",
        "time_wait",
    ];
    /// Kinds of sockets.
    pub const SOCKET_KINDS: [&str; 5] = ["tcp", "udp", "icmp", "raw", "packet"];
}

impl StatReport {
    pub fn encode(&self) -> [u8; STAT_REPORT_LEN] {
        let mut b = [0u8; STAT_REPORT_LEN];
        b[..2].copy_from_slice(STAT_REPORT_MAGIC);
        b[2] = self.metric;
        b[3..7].copy_from_slice(&self.key.to_le_bytes());
        b[7..13].copy_from_slice(&self.value.min(STAT_MAX).to_le_bytes()[..6]);
        b
    }
    pub fn parse(b: &[u8]) -> Option<StatReport> {
        if b.len() != STAT_REPORT_LEN || &b[..2] != STAT_REPORT_MAGIC {
            return None;
        }
        let mut v = [0u8; 8];
        v[..6].copy_from_slice(&b[7..13]);
        Some(StatReport {
            metric: b[2],
            key: u32::from_le_bytes([b[3], b[4], b[5], b[6]]),
            value: u64::from_le_bytes(v),
        })
    }
}

/// First message on a native port: `magic[8], max_frame u32, description (UTF-8)`, and when
/// `flags` is not 0, `NUL, flags u32` after the description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeHello {
    pub max_frame: u32,
    pub description: String,
    pub flags: u32,
}

impl NativeHello {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = NATIVE_MAGIC.to_vec();
        b.extend_from_slice(&self.max_frame.to_le_bytes());
        let d = self.description.as_bytes();
        let d: Vec<u8> = d.iter().copied().filter(|c| *c != 0).collect();
        if self.flags == 0 {
            b.extend_from_slice(&d[..d.len().min(200)]);
        } else {
            // Stay within the 212 bytes older switches accept.
            b.extend_from_slice(&d[..d.len().min(195)]);
            b.push(0);
            b.extend_from_slice(&self.flags.to_le_bytes());
        }
        b
    }
    pub fn parse(b: &[u8]) -> Result<NativeHello, Errno> {
        if b.len() < 12 || b.len() > 212 || &b[..8] != NATIVE_MAGIC {
            return Err(Errno::EPROTO);
        }
        let max_frame = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if (max_frame as usize) < 64 {
            return Err(Errno::EPROTO);
        }
        let rest = &b[12..];
        let (desc, flags) = match rest.iter().position(|c| *c == 0) {
            Some(i) if rest.len() - i == 5 => {
                let f = &rest[i + 1..];
                (&rest[..i], u32::from_le_bytes([f[0], f[1], f[2], f[3]]))
            }
            Some(i) => (&rest[..i], 0),
            None => (rest, 0),
        };
        Ok(NativeHello {
            max_frame,
            description: String::from_utf8_lossy(desc).into_owned(),
            flags,
        })
    }
}

/// The switch's answer on a native port: `magic[8], port u32, max_frame u32` (the frame size
/// both sides use: the smaller of the two), then `flags u32` (the flags granted) only if the
/// hello carried flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeWelcome {
    pub port: u32,
    pub max_frame: u32,
    /// `None`: the 16-byte form, for clients that sent no flags.
    pub flags: Option<u32>,
}

impl NativeWelcome {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = NATIVE_MAGIC.to_vec();
        b.extend_from_slice(&self.port.to_le_bytes());
        b.extend_from_slice(&self.max_frame.to_le_bytes());
        if let Some(f) = self.flags {
            b.extend_from_slice(&f.to_le_bytes());
        }
        b
    }
    pub fn parse(b: &[u8]) -> Result<NativeWelcome, Errno> {
        if (b.len() != 16 && b.len() != 20) || &b[..8] != NATIVE_MAGIC {
            return Err(Errno::EPROTO);
        }
        Ok(NativeWelcome {
            port: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            max_frame: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
            flags: (b.len() == 20).then(|| u32::from_le_bytes([b[16], b[17], b[18], b[19]])),
        })
    }
    /// Whether the switch granted `flag`.
    pub fn has(&self, flag: u32) -> bool {
        self.flags.unwrap_or(0) & flag != 0
    }
}

/// Marker after [`NATIVE_MAGIC`] in a [`NativeRefusal`].
pub const REFUSAL_MARK: &[u8; 8] = b"REFUSED\0";
/// Length of a [`NativeRefusal`]: neither welcome length (16, 20), so an older client takes
/// it for a bad welcome and still fails.
pub const NATIVE_REFUSAL_LEN: usize = 24;
/// [`NativeRefusal::reason`]: every port of the switch is in use.
pub const REFUSED_FULL: u32 = 1;

/// The switch's answer to a hello it cannot serve, sent instead of the welcome before it
/// closes the connection: `magic[8], "REFUSED\0", reason u32, ports u32` (for
/// [`REFUSED_FULL`]: the switch's number of ports). A switch that does not send it just
/// closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeRefusal {
    pub reason: u32,
    pub ports: u32,
}

impl NativeRefusal {
    pub fn encode(&self) -> [u8; NATIVE_REFUSAL_LEN] {
        let mut b = [0u8; NATIVE_REFUSAL_LEN];
        b[..8].copy_from_slice(NATIVE_MAGIC);
        b[8..16].copy_from_slice(REFUSAL_MARK);
        b[16..20].copy_from_slice(&self.reason.to_le_bytes());
        b[20..].copy_from_slice(&self.ports.to_le_bytes());
        b
    }
    pub fn parse(b: &[u8]) -> Result<NativeRefusal, Errno> {
        if b.len() != NATIVE_REFUSAL_LEN || &b[..8] != NATIVE_MAGIC || &b[8..16] != REFUSAL_MARK {
            return Err(Errno::EPROTO);
        }
        Ok(NativeRefusal {
            reason: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
            ports: u32::from_le_bytes([b[20], b[21], b[22], b[23]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uplink_offers_and_routes_round_trip_and_garbage_is_refused() {
        let o = UplinkOffer {
            peer: [2, 0, 0, 0, 0, 9],
            id: 77,
        };
        assert_eq!(UplinkOffer::parse(&o.encode()), Some(o));
        assert!(o.encode().len() < MIN_FRAME);
        assert_eq!(ShortcutOffer::parse(&o.encode()), Err(Errno::EPROTO));
        for (to, local) in [
            ("10.1.2.3:4789", None),
            ("[fd00::1]:14789", Some("fd00::2".parse().unwrap())),
            ("10.1.2.3:1", Some("10.9.9.9".parse().unwrap())),
        ] {
            let r = UplinkRoute {
                to: to.parse().unwrap(),
                local,
                header: [8, 0, 0, 0, 0, 0, 42, 0],
                max_frame: 1464,
                ttl: 64,
                netns: (4, 0xf000_0001),
            };
            let b = r.encode();
            assert_eq!(UplinkRoute::parse(&b), Ok(r));
            assert_eq!(UplinkRoute::parse(&b[..b.len() - 1]), Err(Errno::EPROTO));
            let mut bad = b;
            bad[4] = 5;
            assert_eq!(UplinkRoute::parse(&bad), Err(Errno::EPROTO));
            let mut bad = b;
            bad[23] = 9;
            assert_eq!(UplinkRoute::parse(&bad), Err(Errno::EPROTO));
        }
        let mut none = [0u8; UPLINK_ROUTE_LEN];
        none[..4].copy_from_slice(UPLINK_ROUTE_MAGIC);
        assert_eq!(UplinkRoute::parse(&none), Err(Errno::EPROTO), "no endpoint");
    }

    #[test]
    fn request_v3_layout_matches_vde_md_example() {
        let r = VdeRequest {
            port: 5,
            port0: false,
            sock: UnixAddr::Path(b"/tmp/vde.ctl/.01234-00000".to_vec()),
            description: "myproc user=1000 pid=1234".into(),
        };
        let b = r.encode().unwrap();
        assert_eq!(&b[0..4], &[0xce, 0xfa, 0xed, 0xfe]);
        assert_eq!(&b[4..8], &[3, 0, 0, 0]);
        assert_eq!(&b[8..12], &[0, 5, 0, 0]);
        assert_eq!(&b[12..14], &[1, 0]);
        assert_eq!(b.len(), 147);
        assert_eq!(VdeRequest::parse(&b).unwrap(), r);
    }

    #[test]
    fn a_full_length_abstract_name_roundtrips() {
        let mut n = b"ioth".to_vec();
        n.resize(107, 0);
        let a = UnixAddr::Abstract(n);
        assert_eq!(
            parse_sockaddr_un(&sockaddr_un_bytes(&a).unwrap()).unwrap(),
            a
        );
        assert!(sockaddr_un_bytes(&UnixAddr::Abstract(vec![1; 108])).is_err());
        assert!(sockaddr_un_bytes(&UnixAddr::Path(vec![b'a'; 107])).is_ok());
        assert!(sockaddr_un_bytes(&UnixAddr::Path(vec![b'a'; 108])).is_err());
    }

    #[test]
    fn bad_requests_are_rejected() {
        let good = VdeRequest {
            port: 0,
            port0: false,
            sock: UnixAddr::Path(b"/x".to_vec()),
            description: String::new(),
        }
        .encode()
        .unwrap();
        for n in 0..REQ_FIXED_LEN {
            assert!(VdeRequest::parse(&good[..n]).is_err());
        }
        let mut v2 = good.clone();
        v2[4] = 2;
        assert!(VdeRequest::parse(&v2).is_err());
        let mut m = good.clone();
        m[0] = 0;
        assert!(VdeRequest::parse(&m).is_err());
        assert!(VdeRequest::parse(&[0u8; 300]).is_err());
    }

    #[test]
    fn native_handshake_roundtrip() {
        let h = NativeHello {
            max_frame: 65536,
            description: "ioth-stackd pid=1".into(),
            flags: 0,
        };
        assert_eq!(NativeHello::parse(&h.encode()).unwrap(), h);
        assert_eq!(h.encode().len(), 12 + 17);
        let w = NativeWelcome {
            port: 3,
            max_frame: 9014,
            flags: None,
        };
        assert_eq!(w.encode().len(), 16);
        assert_eq!(NativeWelcome::parse(&w.encode()).unwrap(), w);
        assert!(NativeHello::parse(b"IOTHPRT1").is_err());
    }

    #[test]
    fn native_flags_roundtrip_and_stay_within_old_limits() {
        let h = NativeHello {
            max_frame: 65536,
            description: "x".repeat(300),
            flags: NATIVE_FLAG_CSUM_FILL,
        };
        let b = h.encode();
        assert!(
            b.len() <= 212,
            "an older switch would refuse {} bytes",
            b.len()
        );
        let p = NativeHello::parse(&b).unwrap();
        assert_eq!(p.flags, NATIVE_FLAG_CSUM_FILL);
        assert_eq!(p.description, "x".repeat(195));
        let w = NativeWelcome {
            port: 1,
            max_frame: 65536,
            flags: Some(NATIVE_FLAG_CSUM_FILL),
        };
        assert_eq!(w.encode().len(), 20);
        let pw = NativeWelcome::parse(&w.encode()).unwrap();
        assert!(pw.has(NATIVE_FLAG_CSUM_FILL));
        assert!(!NativeWelcome { flags: None, ..w }.has(NATIVE_FLAG_CSUM_FILL));
    }

    #[test]
    fn shortcut_offer_roundtrip_and_is_never_a_frame() {
        let o = ShortcutOffer {
            peer: [2, 0, 0, 0, 0, 9],
            id: 77,
            flags: SHORTCUT_NO_CUT,
        };
        let b = o.encode();
        assert!(b.len() < MIN_FRAME);
        let r = CutReport {
            shortcut: 7,
            made: 41,
        };
        assert!(r.encode().len() < MIN_FRAME);
        assert_eq!(CutReport::parse(&r.encode()), Some(r));
        assert_eq!(CutReport::parse(&r.encode()[..11]), None);
        assert_eq!(CutReport::parse(b"XCUT\0\0\0\0\0\0\0\0"), None);
        assert_eq!(ShortcutOffer::parse(&b).unwrap(), o);
        // An offer without flags (12 bytes) allows cut-through.
        assert_eq!(ShortcutOffer::parse(&b[..12]).unwrap().flags, 0);
        assert!(ShortcutOffer::parse(&b[..11]).is_err());
        assert!(ShortcutOffer::parse(&[b"SC".as_slice(), &[0; 12]].concat()).is_err());
        assert!(ShortcutOffer::parse(&[0u8; 12]).is_err());
    }

    #[test]
    fn stat_report_roundtrip_saturates_and_is_never_a_frame() {
        let r = StatReport {
            metric: stat::SHORTCUT_BYTES,
            key: 0x0102_0304,
            value: 123_456_789_012,
        };
        let b = r.encode();
        assert!(b.len() < MIN_FRAME);
        assert_eq!(StatReport::parse(&b), Some(r));
        assert_eq!(StatReport::parse(&b[..12]), None);
        assert_eq!(CutReport::parse(&b), None);
        let big = StatReport {
            value: u64::MAX,
            ..r
        };
        assert_eq!(StatReport::parse(&big.encode()).unwrap().value, STAT_MAX);
        assert_eq!(StatReport::parse(b"XS\0\0\0\0\0\0\0\0\0\0\0"), None);
    }

    #[test]
    fn refusal_round_trips_and_is_no_welcome() {
        let r = NativeRefusal {
            reason: REFUSED_FULL,
            ports: 1024,
        };
        let b = r.encode();
        assert_eq!(NativeRefusal::parse(&b).unwrap(), r);
        assert!(NativeWelcome::parse(&b).is_err());
        let w = NativeWelcome {
            port: 1,
            max_frame: 1518,
            flags: Some(1),
        };
        assert!(NativeRefusal::parse(&w.encode()).is_err());
    }
}
