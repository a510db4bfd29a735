//! The control protocol between `libioth.so` (or any client) and `ioth-stackd`.
//!
//! # Transport
//! An `AF_UNIX`, `SOCK_SEQPACKET` connection to the node's control socket (a path, and the
//! abstract name `ioth/<node-id>/ctl`). One request, one reply, in order; descriptors travel
//! as `SCM_RIGHTS` (exceptions: a `SetSockOpt` flagged [`FLAG_NO_REPLY`] and a `Register` get
//! no reply).
//! The stack daemon answers every request at once: nothing here blocks for
//! the network. Waiting (a blocking connect, accept or read) happens in the client on its own
//! kernel fd, where signals, timeouts and `poll` work as usual.
//!
//! # Messages
//! All integers little-endian. A request is a 16-byte header `magic "IOT1" (u32), op (u16),
//! flags (u16), socket id (u64)` followed by the op's body; a reply is `magic "IOR1" (u32),
//! status (i32: 0, or a positive errno)` followed by the body, and, for a request with a
//! sequence number, that number (u16) after the body. Addresses use the 24-byte
//! [`WireAddr`] layout. A message that does not parse gets `EPROTO`; the daemon never
//! trusts a length it has not checked.
//!
//! # Staying in step
//! The flags of a request are [`FLAG_NO_REPLY`] (bit 0) and a sequence number (bits 1..15)
//! that the reply echoes ([`request_seq`], [`Reply::encode_seq`]). A one-way request
//! ([`is_one_way`]: the flag, or a `Register` or `ConnectAsync`) is never answered, not even
//! when it cannot be read (its descriptors truncated because the daemon's table is full, a
//! body that does not parse); every other message gets exactly one reply. A client discards
//! a reply whose sequence number is not that of its request (one left over from a call it
//! gave up on), so that no failure can leave a connection one reply behind. Sequence numbers
//! start at 1: a request without one (0) gets a reply without one, as before they existed,
//! and a reply without one (from such a daemon) is taken as the reply.
//!
//! # The data path (TCP)
//! `Socket` returns, with the reply, the application's end of a `SOCK_STREAM` socketpair; the
//! daemon pumps the other end into the smoltcp socket. Plain `read`, `write`, `sendfile`,
//! `poll`, `epoll`, `shutdown` and `close` on that fd need no hook.
//! * Instead of `Socket`, a client may create the socketpair itself and send the daemon's end
//!   with a one-way `Register` (no reply): it picks the id (with [`CLIENT_ID_BIT`] set, which
//!   the daemon's own ids never have), binds its end to `names::socket_name(node, id)` (a
//!   failing bind means the id is taken: pick another), and may send requests about the socket
//!   right after it on the same connection. The daemon adopts a registered socket like one it
//!   made; one it cannot adopt (bad type, id in use) is dropped, so the app's end sees EOF.
//!   A TCP socket is registered without a daemon end: the client's socket is an unconnected
//!   `AF_UNIX` stream socket (attached: its own end, for its inode; or nothing, when a
//!   `ConnectAsync` with the fd follows) until its first `connect`
//!   (the fd attached: the daemon connects it, to another node's kernel listener, or to its
//!   own door, `names::node_door_name`, whose accepted end is then the socket's daemon end;
//!   a reply [`E_CUT_WAIT`] means "ask again") or `listen` (the client's kernel listener
//!   attached, bound to `names::listener_name`; or, that name being taken, the socket itself,
//!   which the daemon then connects to its door). Until then its record holds only addresses
//!   and options, and goes when the application's name is free (`app_gone`).
//!   A request from another connection that names an unknown client id makes the daemon read
//!   its other connections first (the `Register` may be queued there, before a `fork`).
//! * `Connect` carries the application's fd. The daemon returns `EINPROGRESS`, makes the fd
//!   unwritable (tiny `SO_SNDBUF` and filler it later drains) until the handshake ends, then
//!   restores the buffer: writability means "connect finished", and `SO_ERROR` (a `GetSockOpt`)
//!   says how. A blocking connect is the client polling for `POLLOUT`, then asking `SO_ERROR`.
//! * `ConnectAsync` is a one-way `Connect` for a non-blocking connect that the client's
//!   connect table (`Table`, `crate::table`) sends through TCP: the client has connected its
//!   socket to the door itself (the daemon takes that end first), has already
//!   made its fd unwritable (tiny `SO_SNDBUF`, `filler` bytes written) and returns
//!   `EINPROGRESS` at once; any error, even one `Connect` would answer at once, comes as
//!   `SO_ERROR` with the fd writable and shut down. Only for a socket that never connected
//!   or listened: a socket registered by a client carries the mark [`FRESH_PRIORITY`] in its
//!   app end's `SO_PRIORITY` (the kernel fd's own, unused by a socketpair; the virtual
//!   socket's `SO_PRIORITY` lives in the daemon) until the first `connect` or `listen`, which
//!   clears it before anything else.
//! * `Table`, `Lease`, `Connected` and `Closed`: a client may connect a fresh socket to
//!   another node's kernel listener itself, where the node's connect table says the daemon
//!   would (see `crate::table`), from a leased local port, and then tells the daemon
//!   one-way. A client may hold a socket's `Register` and `Connected` back until it next
//!   asks the daemon anything (any request about the socket comes after them); a socket
//!   closed by then is never registered, and its connection comes in a `Closed` batch.
//! * A kernel listener's connections come from the kernel's `accept`, each starting with its
//!   [`AcceptRecord`], written by whoever connected (the daemon, from a socket named
//!   `names::socket_name(node, id)`; or the connecting node's daemon, for a cut-through
//!   connection, whose record's id has [`MIRROR_BIT`]: the accepting client then sends its
//!   daemon an `Adopt`).
//! * After `Listen` the fd is a listener: for each established connection the daemon writes one
//!   [`AcceptRecord`] (64 bytes) with the connection's fd attached. `accept` is one `recvmsg` of
//!   64 bytes in any process that holds the listener. Out of descriptors for a connection's
//!   socketpair, the daemon keeps the connection and writes one error record instead (no fd:
//!   that `accept` fails with `EMFILE`); a client whose own table is full fails `accept` with
//!   `EMFILE` before it takes a record (it would lose the fd), leaving the connection queued.
//! * Peer FIN ⇒ the daemon shuts down its end for writing (the app reads EOF); the app's
//!   `shutdown(SHUT_WR)` or last `close` ⇒ the daemon sees EOF and sends FIN; peer RST ⇒ the
//!   daemon records `ECONNRESET` for `SO_ERROR` and shuts its end down both ways.
//!
//! # The data path (UDP, ICMP echo "ping" sockets)
//! `Socket` with `SOCK_DGRAM` returns one end of a `SOCK_SEQPACKET` socketpair (boundaries
//! kept like `SOCK_DGRAM`, and the daemon's end sees HUP when the app's last reference
//! closes, which a `SOCK_DGRAM` pair never reports). Every datagram
//! either way starts with a [`DgramHeader`] (32 bytes): from the daemon it names the source
//! and the datagram's full length; from the app it names the destination (family 0: the
//! connected peer). The shim adds and strips the header in its send/recv hooks, so
//! boundaries, `MSG_PEEK`, `MSG_TRUNC` and `poll` keep the kernel's meaning. ICMP sockets
//! (`SOCK_DGRAM` + `IPPROTO_ICMP`/`IPPROTO_ICMPV6`) carry the ICMP message (echo header
//! first) like Linux ping sockets: the daemon sets the identifier and checksum.

#![deny(unsafe_code)]

use crate::sys::{self, Errno, Fd, UnixAddr};
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

pub const REQ_MAGIC: u32 = u32::from_le_bytes(*b"IOT1");
pub const REP_MAGIC: u32 = u32::from_le_bytes(*b"IOR1");
pub const ACCEPT_MAGIC: u32 = u32::from_le_bytes(*b"IOTA");
/// Largest control message either way.
pub const MAX_MSG: usize = 4096;
/// Largest socket option value carried.
pub const MAX_OPT: usize = 1024;
/// A `GetSockOpt` name of ioth's own (level `SOL_SOCKET`): the error a `read` at end of
/// stream must report instead of EOF, 0 if none. A TCP connection reset (or timed out)
/// before its FIN reached the application reports `ECONNRESET` (`ETIMEDOUT`) once, as Linux's
/// `read` does, and that clears the socket's `SO_ERROR` as Linux's does; after a FIN, EOF.
pub const SO_IOTH_READ_ERROR: i32 = 0x494f_0001;
/// A `GetSockOpt` name of ioth's own (level `SOL_SOCKET`): take the oldest entry of a UDP
/// socket's error queue (`IP_RECVERR`/`IPV6_RECVERR`; `recvmsg(MSG_ERRQUEUE)`), encoded as an
/// [`ErrQueueEntry`]; `EAGAIN` when it is empty.
pub const SO_IOTH_ERRQUEUE: i32 = 0x494f_0002;

/// A `SetSockOpt` name of ioth's own (level `SOL_PACKET`): `bind` of a packet socket, the
/// caller's `struct sockaddr_ll` as the value (the daemon checks the family and interface).
pub const SO_IOTH_PACKET_BIND: i32 = 0x494f_0003;
/// A `GetSockOpt` name of ioth's own (level `SOL_PACKET`): a packet socket's name, the
/// `struct sockaddr_ll` `getsockname` gives.
pub const SO_IOTH_PACKET_NAME: i32 = 0x494f_0004;

/// Length of `struct sockaddr_ll`.
pub const SOCKADDR_LL_LEN: usize = 20;

/// Header in front of every frame on a packet socket's (`AF_PACKET`) socketpair: the same 32
/// bytes as a [`DgramHeader`], with a `struct sockaddr_ll` as the kernel lays it out (family
/// `AF_PACKET` first, so that it never reads as a [`WireAddr`]) where the address is.
/// Daemon → app: the frame's source (protocol, interface 1, `ARPHRD_ETHER`, packet type,
/// the sender's MAC) and its length before truncation. App → daemon: the destination given
/// to the send (all zero: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LlHeader {
    pub sll: [u8; SOCKADDR_LL_LEN],
    pub len: u32,
    pub flags: u32,
}

impl LlHeader {
    pub const LEN: usize = DgramHeader::LEN;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..SOCKADDR_LL_LEN].copy_from_slice(&self.sll);
        out[24..28].copy_from_slice(&self.len.to_le_bytes());
        out[28..32].copy_from_slice(&self.flags.to_le_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> Result<LlHeader, Errno> {
        if b.len() < Self::LEN {
            return Err(Errno::EPROTO);
        }
        let mut sll = [0u8; SOCKADDR_LL_LEN];
        sll.copy_from_slice(&b[..SOCKADDR_LL_LEN]);
        let fam = u16::from_ne_bytes([sll[0], sll[1]]);
        if fam != 0 && fam != libc::AF_PACKET as u16 {
            return Err(Errno::EPROTO);
        }
        Ok(LlHeader {
            sll,
            len: u32::from_le_bytes([b[24], b[25], b[26], b[27]]),
            flags: u32::from_le_bytes([b[28], b[29], b[30], b[31]]),
        })
    }
}

/// The fields of a `struct sockaddr_ll` (`sll_protocol` in network order, as the kernel keeps
/// it; the address: `halen` bytes of `addr`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockaddrLl {
    pub protocol: u16,
    pub ifindex: i32,
    pub hatype: u16,
    pub pkttype: u8,
    pub halen: u8,
    pub addr: [u8; 8],
}

impl SockaddrLl {
    /// Parse the caller's bytes (at least up to the address, as `packet_bind` and
    /// `packet_snd` ask); another family is `EINVAL`.
    pub fn parse(b: &[u8]) -> Result<SockaddrLl, Errno> {
        if b.len() < 12 || u16::from_ne_bytes([b[0], b[1]]) != libc::AF_PACKET as u16 {
            return Err(Errno::EINVAL);
        }
        let mut a = SockaddrLl {
            protocol: u16::from_ne_bytes([b[2], b[3]]),
            ifindex: i32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            hatype: u16::from_ne_bytes([b[8], b[9]]),
            pkttype: b[10],
            halen: b[11],
            addr: [0; 8],
        };
        let n = (a.halen as usize).min(8).min(b.len() - 12);
        a.addr[..n].copy_from_slice(&b[12..12 + n]);
        Ok(a)
    }

    pub fn to_bytes(&self) -> [u8; SOCKADDR_LL_LEN] {
        let mut b = [0u8; SOCKADDR_LL_LEN];
        b[0..2].copy_from_slice(&(libc::AF_PACKET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&self.protocol.to_ne_bytes());
        b[4..8].copy_from_slice(&self.ifindex.to_ne_bytes());
        b[8..10].copy_from_slice(&self.hatype.to_ne_bytes());
        b[10] = self.pkttype;
        b[11] = self.halen;
        b[12..20].copy_from_slice(&self.addr);
        b
    }
}

/// One entry of a socket's error queue: Linux's `struct sock_extended_err` (origin, ICMP type
/// and code, info), who sent the ICMP error, the destination of the datagram it quotes, and
/// the part of that datagram's payload it quotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrQueueEntry {
    pub errno: u32,
    /// `SO_EE_ORIGIN_ICMP` (2) or `SO_EE_ORIGIN_ICMP6` (3).
    pub origin: u8,
    pub ty: u8,
    pub code: u8,
    pub info: u32,
    pub offender: WireAddr,
    pub dest: WireAddr,
    pub payload: Vec<u8>,
}

impl ErrQueueEntry {
    /// The fixed part: errno, origin, type, code, a pad byte, info, two addresses.
    pub const FIXED: usize = 12 + 2 * WireAddr::LEN;
    /// The most payload an entry carries (it fits one socket option value).
    pub const MAX_PAYLOAD: usize = MAX_OPT - Self::FIXED;

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::FIXED + self.payload.len());
        v.extend_from_slice(&self.errno.to_le_bytes());
        v.extend_from_slice(&[self.origin, self.ty, self.code, 0]);
        v.extend_from_slice(&self.info.to_le_bytes());
        self.offender.encode(&mut v);
        self.dest.encode(&mut v);
        v.extend_from_slice(&self.payload[..self.payload.len().min(Self::MAX_PAYLOAD)]);
        v
    }

    pub fn decode(b: &[u8]) -> Result<ErrQueueEntry, Errno> {
        if b.len() < Self::FIXED {
            return Err(Errno::EPROTO);
        }
        let word = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        Ok(ErrQueueEntry {
            errno: word(0),
            origin: b[4],
            ty: b[5],
            code: b[6],
            info: word(8),
            offender: WireAddr::decode(&b[12..])?,
            dest: WireAddr::decode(&b[12 + WireAddr::LEN..])?,
            payload: b[Self::FIXED..].to_vec(),
        })
    }
}
pub const ACCEPT_RECORD_LEN: usize = 64;
/// Flag in a request header's reserved field: the client reads no reply, and the daemon
/// sends none. For requests that cannot fail (`TCP_NODELAY`/`TCP_CORK` on a TCP socket,
/// which nginx toggles around every response): one message instead of a round trip.
pub const FLAG_NO_REPLY: u16 = 1;

/// Whether an encoded request carries [`FLAG_NO_REPLY`].
pub fn no_reply(msg: &[u8]) -> bool {
    msg.len() >= 8 && u16::from_le_bytes([msg[6], msg[7]]) & FLAG_NO_REPLY != 0
}

/// Whether a received request message (parsed or not) must get no reply: a request header
/// with [`FLAG_NO_REPLY`], or the op of a `Register` or `ConnectAsync` (one-way by nature).
pub fn is_one_way(msg: &[u8]) -> bool {
    if msg.len() < 8 || msg[..4] != REQ_MAGIC.to_le_bytes() {
        return false;
    }
    let op = u16::from_le_bytes([msg[4], msg[5]]);
    no_reply(msg)
        || op == Op::Register as u16
        || op == Op::ConnectAsync as u16
        || op == Op::Adopt as u16
        || op == Op::Connected as u16
        || op == Op::Closed as u16
}

/// The sequence number of an encoded request (0 if none or unreadable), which its reply
/// echoes.
pub fn request_seq(msg: &[u8]) -> u16 {
    if msg.len() < 8 || msg[..4] != REQ_MAGIC.to_le_bytes() {
        return 0;
    }
    u16::from_le_bytes([msg[6], msg[7]]) >> 1
}

/// Largest request sequence number (15 bits).
pub const MAX_SEQ: u16 = 0x7fff;

/// Socket identifier inside one node (never reused by a running daemon).
pub type SockId = u64;

/// Set in the ids clients choose for `Register` (never in the daemon's own ids; bits 60..63
/// stay clear, the daemon uses them internally). Both kinds are random ([`client_id`],
/// [`daemon_id`]): socket names are public (`/proc/net/unix`), and predictable ones could be
/// taken by another user first.
pub const CLIENT_ID_BIT: u64 = 1 << 59;

/// `SO_PRIORITY` of a registered socket's app end until its first `connect` or `listen`
/// (see `ConnectAsync` in the module docs).
pub const FRESH_PRIORITY: i32 = 1;
/// The send buffer of the unix sockets that carry a TCP socket's bytes (1 MiB): the daemon's
/// ends, a cut-through connection's ends.
pub const APP_SOCKBUF: i32 = 1 << 20;
/// Set by the daemon in the `SO_PRIORITY` of an application's socket it connected straight
/// to another node's kernel listener (cut-through): options that mean nothing there are the
/// client's to keep.
pub const CUT_PRIORITY: i32 = 2;
/// `TCP_NODELAY` of a cut-through connection, kept in its fd's `SO_PRIORITY` by the client
/// (a connection through the daemon has its own in the daemon). At most 6 in all: more
/// needs `CAP_NET_ADMIN`.
pub const NODELAY_PRIORITY: i32 = 4;

/// A client-chosen socket id from 59 random bits (`random`): unpredictable, so that no
/// other user can take the names of our next sockets before we do.
pub fn client_id(random: u64) -> SockId {
    CLIENT_ID_BIT | (random & (CLIENT_ID_BIT - 1)) | 1
}

/// A daemon-chosen socket id from random bits: never a client id, bits 59..63 clear.
pub fn daemon_id(random: u64) -> SockId {
    (random & (CLIENT_ID_BIT - 1)) | 1
}

/// The id, in the connecting node's daemon, of the accepted end of the cut-through
/// connection whose connecting socket is `id` there: the accepting application's
/// `getsockname`, `getpeername` and options go to that record (`names::listener_name`).
pub const MIRROR_BIT: u64 = 1 << 60;

/// Most connections one `Request::Closed` carries.
pub const MAX_CLOSED: usize = 64;

/// The errno of a `Connect` reply that means "not yet: ask again in a moment" (the daemon
/// waits to hear from the peer before it chooses cut-through or TCP). Never a real errno.
pub const E_CUT_WAIT: i32 = 0x10c7;

pub fn mirror_id(id: SockId) -> SockId {
    id | MIRROR_BIT
}

/// Whether `id` was chosen by a client ([`CLIENT_ID_BIT`]).
pub fn is_client_id(id: SockId) -> bool {
    id & CLIENT_ID_BIT != 0
}

/// The 24-byte address layout: `family u16 (0 none, 4, 6), port u16, addr [16], scope u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct WireAddr(pub Option<SocketAddr>);

impl WireAddr {
    pub const LEN: usize = 24;

    /// `a` as a socket of family `AF_INET6` (`inet6`) or `AF_INET` presents it: an IPv4
    /// address v4-mapped on an `AF_INET6` socket.
    pub fn presented(a: SocketAddr, inet6: bool) -> WireAddr {
        match a {
            SocketAddr::V4(v4) if inet6 => WireAddr(Some(SocketAddr::new(
                std::net::IpAddr::V6(v4.ip().to_ipv6_mapped()),
                v4.port(),
            ))),
            a => WireAddr(Some(a)),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut b = [0u8; 24];
        match self.0 {
            None => {}
            Some(SocketAddr::V4(a)) => {
                b[0..2].copy_from_slice(&4u16.to_le_bytes());
                b[2..4].copy_from_slice(&a.port().to_le_bytes());
                b[4..8].copy_from_slice(&a.ip().octets());
            }
            Some(SocketAddr::V6(a)) => {
                b[0..2].copy_from_slice(&6u16.to_le_bytes());
                b[2..4].copy_from_slice(&a.port().to_le_bytes());
                b[4..20].copy_from_slice(&a.ip().octets());
                b[20..24].copy_from_slice(&a.scope_id().to_le_bytes());
            }
        }
        out.extend_from_slice(&b);
    }

    pub fn decode(b: &[u8]) -> Result<WireAddr, Errno> {
        if b.len() < 24 {
            return Err(Errno::EPROTO);
        }
        let fam = u16::from_le_bytes([b[0], b[1]]);
        let port = u16::from_le_bytes([b[2], b[3]]);
        match fam {
            0 => Ok(WireAddr(None)),
            4 => Ok(WireAddr(Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(b[4], b[5], b[6], b[7]),
                port,
            ))))),
            6 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&b[4..20]);
                let scope = u32::from_le_bytes([b[20], b[21], b[22], b[23]]);
                Ok(WireAddr(Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(o),
                    port,
                    0,
                    scope,
                )))))
            }
            _ => Err(Errno::EPROTO),
        }
    }
}

/// Operation codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    Hello = 1,
    Socket = 2,
    Bind = 3,
    Listen = 4,
    Connect = 5,
    GetSockName = 6,
    GetPeerName = 7,
    GetSockOpt = 8,
    SetSockOpt = 9,
    Shutdown = 10,
    NodeInfo = 11,
    Register = 12,
    ConnectAsync = 13,
    SetNeighbour = 14,
    Join = 15,
    Subscribe = 16,
    Adopt = 17,
    Table = 18,
    Lease = 19,
    Connected = 20,
    Closed = 21,
}

impl Op {
    fn from_u16(v: u16) -> Option<Op> {
        use Op::*;
        Some(match v {
            1 => Hello,
            2 => Socket,
            3 => Bind,
            4 => Listen,
            5 => Connect,
            6 => GetSockName,
            7 => GetPeerName,
            8 => GetSockOpt,
            17 => Adopt,
            9 => SetSockOpt,
            10 => Shutdown,
            11 => NodeInfo,
            12 => Register,
            13 => ConnectAsync,
            14 => SetNeighbour,
            15 => Join,
            16 => Subscribe,
            18 => Table,
            19 => Lease,
            20 => Connected,
            21 => Closed,
            _ => return None,
        })
    }
}

/// A validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// First message of a connection (optional): who is calling.
    Hello {
        pid: u32,
    },
    /// `socket(domain, ty, protocol)`; `ty` without SOCK_NONBLOCK/SOCK_CLOEXEC (the client
    /// applies those to its fd). Reply: [`Reply::Created`] with the app's fd attached.
    Socket {
        domain: i32,
        ty: i32,
        protocol: i32,
    },
    Bind {
        id: SockId,
        addr: WireAddr,
    },
    Listen {
        id: SockId,
        backlog: i32,
    },
    /// `addr` of `None` is `AF_UNSPEC` (dissolve a UDP association). TCP: the app's fd is
    /// attached.
    Connect {
        id: SockId,
        addr: WireAddr,
    },
    GetSockName {
        id: SockId,
    },
    GetPeerName {
        id: SockId,
    },
    /// `len`: the caller's buffer size.
    GetSockOpt {
        id: SockId,
        level: i32,
        name: i32,
        len: u32,
    },
    SetSockOpt {
        id: SockId,
        level: i32,
        name: i32,
        value: Vec<u8>,
    },
    /// Informational: the client also shuts down its own end.
    Shutdown {
        id: SockId,
        how: i32,
    },
    /// Node description (`key=value` lines): addresses, MAC, MTU, gateways, DNS.
    NodeInfo,
    /// One-way, never answered: adopt the socketpair end attached as socket `id` (a client id,
    /// see [`CLIENT_ID_BIT`]), created as by `Socket { domain, ty, protocol }`. The pair is
    /// `SOCK_SEQPACKET` for datagram sockets. A second fd, the client's own end, may follow:
    /// the daemon keeps only its inode, to tell that end from another socket bound to the
    /// same name after the client closed it. TCP: only the client's own end, unconnected
    /// (the daemon's end comes through the door, see the module docs).
    Register {
        id: SockId,
        domain: i32,
        ty: i32,
        protocol: i32,
    },
    /// One-way, never answered: the accepting application's record of a cut-through
    /// connection (`id`: `mirror_id` of the connecting socket's id) that its listener `lid`
    /// took from another node's application (`names::listener_name`); `local` and `peer`
    /// as its `accept` gave them, `ino` the connection's inode (the record goes when no
    /// socket has it). Sent only once something about the connection is asked of the
    /// daemon (see the shim's `node::adopt_later`).
    Adopt {
        id: SockId,
        lid: SockId,
        local: WireAddr,
        peer: WireAddr,
        ino: u64,
    },
    /// The node's table of other nodes' kernel listeners that its clients may connect to
    /// themselves (`crate::table`): answered `Ok` with a read-only memfd attached.
    Table,
    /// Up to `count` local ports for the connects a client makes itself (`Connected`),
    /// answered with [`Reply::Bytes`]: the ports, `u16` each. They are the client's (the
    /// daemon gives them to no one else) until it tells what became of each (`Connected`,
    /// `Closed`), or until the control connection that asked closes (the process is gone).
    Lease {
        count: u32,
    },
    /// One-way, never answered: the client connected socket `id` (registered, never
    /// connected) itself, straight to another node's kernel listener found in the node's
    /// `Table`, from `local` (its port leased) to `peer`.
    Connected {
        id: SockId,
        local: WireAddr,
        peer: WireAddr,
    },
    /// One-way, never answered: connections the client made itself from leased ports
    /// (`local`, `peer`, as `Connected` would have said) and closed before it told the
    /// daemon of them (at most [`MAX_CLOSED`]): counted, and their ports free again.
    Closed {
        conns: Vec<(WireAddr, WireAddr)>,
    },
    /// One-way, never answered: a TCP `Connect` whose client does not wait (module docs); the
    /// app's fd is attached, `filler`: bytes the client wrote into it to make it unwritable.
    ConnectAsync {
        id: SockId,
        addr: WireAddr,
        filler: u32,
    },
    /// `ioctl(SIOCSARP)`: the link-layer address of a neighbour (dnsmasq tells the stack the
    /// MAC of a DHCP client that has no address yet, then sends it a unicast reply).
    /// Answered `Ok`, or the errno of the ioctl (`ENETUNREACH`: not on any local subnet).
    SetNeighbour {
        addr: WireAddr,
        mac: [u8; 6],
    },
    /// Prove membership of the node: the application end of socket `id` is attached (a
    /// process holds it, so it is one of the node's processes even if it runs as another
    /// user now, e.g. a worker after `setuid`). Answered `Ok`, and the connection may then
    /// do what the socket's owner may; or `EACCES`.
    Join {
        id: SockId,
    },
    /// rtnetlink address and route events: the attached fd (the shim's end of a virtual
    /// netlink socket's `SOCK_SEQPACKET` pair) gets one `RTM_NEWADDR`/`RTM_DELADDR` or
    /// `RTM_NEWROUTE`/`RTM_DELROUTE` datagram per change of the node's addresses and routes
    /// in `groups` (`nl_groups` bits; only `rtnl::EVENT_GROUPS` count), written with
    /// `MSG_DONTWAIT`, so that it reaches the application's end. A later `Subscribe` with
    /// the same socket replaces the groups (none: unsubscribed); the daemon lets go of the
    /// fd when the application's end is closed. Answered `Ok`, `EINVAL` for an fd of another
    /// kind.
    Subscribe {
        groups: u32,
    },
}

impl Request {
    pub fn op(&self) -> Op {
        match self {
            Request::Hello { .. } => Op::Hello,
            Request::Socket { .. } => Op::Socket,
            Request::Bind { .. } => Op::Bind,
            Request::Listen { .. } => Op::Listen,
            Request::Connect { .. } => Op::Connect,
            Request::GetSockName { .. } => Op::GetSockName,
            Request::GetPeerName { .. } => Op::GetPeerName,
            Request::GetSockOpt { .. } => Op::GetSockOpt,
            Request::SetSockOpt { .. } => Op::SetSockOpt,
            Request::Shutdown { .. } => Op::Shutdown,
            Request::NodeInfo => Op::NodeInfo,
            Request::Register { .. } => Op::Register,
            Request::ConnectAsync { .. } => Op::ConnectAsync,
            Request::SetNeighbour { .. } => Op::SetNeighbour,
            Request::Join { .. } => Op::Join,
            Request::Adopt { .. } => Op::Adopt,
            Request::Subscribe { .. } => Op::Subscribe,
            Request::Table => Op::Table,
            Request::Lease { .. } => Op::Lease,
            Request::Connected { .. } => Op::Connected,
            Request::Closed { .. } => Op::Closed,
        }
    }

    /// The socket a request is about (0 for `Hello`, `Socket`, `NodeInfo`).
    pub fn id(&self) -> SockId {
        match self {
            Request::Bind { id, .. }
            | Request::Listen { id, .. }
            | Request::Connect { id, .. }
            | Request::GetSockName { id }
            | Request::GetPeerName { id }
            | Request::GetSockOpt { id, .. }
            | Request::SetSockOpt { id, .. }
            | Request::Shutdown { id, .. }
            | Request::Register { id, .. }
            | Request::ConnectAsync { id, .. }
            | Request::Join { id }
            | Request::Adopt { id, .. }
            | Request::Connected { id, .. } => *id,
            _ => 0,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&REQ_MAGIC.to_le_bytes());
        b.extend_from_slice(&(self.op() as u16).to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&self.id().to_le_bytes());
        match self {
            Request::Hello { pid } => b.extend_from_slice(&pid.to_le_bytes()),
            Request::Socket {
                domain,
                ty,
                protocol,
            }
            | Request::Register {
                domain,
                ty,
                protocol,
                ..
            } => {
                for v in [domain, ty, protocol] {
                    b.extend_from_slice(&v.to_le_bytes());
                }
            }
            Request::Bind { addr, .. } | Request::Connect { addr, .. } => addr.encode(&mut b),
            Request::Listen { backlog, .. } => b.extend_from_slice(&backlog.to_le_bytes()),
            Request::ConnectAsync { addr, filler, .. } => {
                addr.encode(&mut b);
                b.extend_from_slice(&filler.to_le_bytes());
            }
            Request::SetNeighbour { addr, mac } => {
                addr.encode(&mut b);
                b.extend_from_slice(mac);
            }
            Request::GetSockName { .. }
            | Request::GetPeerName { .. }
            | Request::NodeInfo
            | Request::Join { .. } => {}
            Request::GetSockOpt {
                level, name, len, ..
            } => {
                b.extend_from_slice(&level.to_le_bytes());
                b.extend_from_slice(&name.to_le_bytes());
                b.extend_from_slice(&len.to_le_bytes());
            }
            Request::SetSockOpt {
                level, name, value, ..
            } => {
                b.extend_from_slice(&level.to_le_bytes());
                b.extend_from_slice(&name.to_le_bytes());
                b.extend_from_slice(&(value.len() as u32).to_le_bytes());
                b.extend_from_slice(value);
            }
            Request::Shutdown { how, .. } => b.extend_from_slice(&how.to_le_bytes()),
            Request::Subscribe { groups } => b.extend_from_slice(&groups.to_le_bytes()),
            Request::Table => {}
            Request::Lease { count } => b.extend_from_slice(&count.to_le_bytes()),
            Request::Connected { local, peer, .. } => {
                local.encode(&mut b);
                peer.encode(&mut b);
            }
            Request::Closed { conns } => {
                b.extend_from_slice(&(conns.len() as u32).to_le_bytes());
                for (local, peer) in conns {
                    local.encode(&mut b);
                    peer.encode(&mut b);
                }
            }
            Request::Adopt {
                lid,
                local,
                peer,
                ino,
                ..
            } => {
                b.extend_from_slice(&lid.to_le_bytes());
                local.encode(&mut b);
                peer.encode(&mut b);
                b.extend_from_slice(&ino.to_le_bytes());
            }
        }
        b
    }

    /// [`Request::encode`] with [`FLAG_NO_REPLY`] set.
    pub fn encode_no_reply(&self) -> Vec<u8> {
        let mut b = self.encode();
        b[6..8].copy_from_slice(&FLAG_NO_REPLY.to_le_bytes());
        b
    }

    /// [`Request::encode`] with sequence number `seq` (low 15 bits), which the reply echoes.
    pub fn encode_seq(&self, seq: u16) -> Vec<u8> {
        let mut b = self.encode();
        b[6..8].copy_from_slice(&((seq & MAX_SEQ) << 1).to_le_bytes());
        b
    }

    /// Parse a request; anything malformed is `EPROTO` (never a panic).
    pub fn decode(b: &[u8]) -> Result<Request, Errno> {
        let mut r = Reader::new(b);
        if r.u32()? != REQ_MAGIC {
            return Err(Errno::EPROTO);
        }
        let op = Op::from_u16(r.u16()?).ok_or(Errno::EPROTO)?;
        let _reserved = r.u16()?;
        let id = r.u64()?;
        let req = match op {
            Op::Hello => Request::Hello { pid: r.u32()? },
            Op::Socket => Request::Socket {
                domain: r.i32()?,
                ty: r.i32()?,
                protocol: r.i32()?,
            },
            Op::Bind => Request::Bind {
                id,
                addr: r.addr()?,
            },
            Op::Listen => Request::Listen {
                id,
                backlog: r.i32()?,
            },
            Op::Connect => Request::Connect {
                id,
                addr: r.addr()?,
            },
            Op::GetSockName => Request::GetSockName { id },
            Op::GetPeerName => Request::GetPeerName { id },
            Op::GetSockOpt => Request::GetSockOpt {
                id,
                level: r.i32()?,
                name: r.i32()?,
                len: r.u32()?,
            },
            Op::SetSockOpt => {
                let (level, name) = (r.i32()?, r.i32()?);
                let n = r.u32()? as usize;
                if n > MAX_OPT {
                    return Err(Errno::EPROTO);
                }
                Request::SetSockOpt {
                    id,
                    level,
                    name,
                    value: r.bytes(n)?.to_vec(),
                }
            }
            Op::Shutdown => Request::Shutdown { id, how: r.i32()? },
            Op::NodeInfo => Request::NodeInfo,
            Op::ConnectAsync => Request::ConnectAsync {
                id,
                addr: r.addr()?,
                filler: r.u32()?,
            },
            Op::Register => Request::Register {
                id,
                domain: r.i32()?,
                ty: r.i32()?,
                protocol: r.i32()?,
            },
            Op::Join => Request::Join { id },
            Op::Adopt => Request::Adopt {
                id,
                lid: r.u64()?,
                local: r.addr()?,
                peer: r.addr()?,
                ino: r.u64()?,
            },
            Op::Subscribe => Request::Subscribe { groups: r.u32()? },
            Op::Table => Request::Table,
            Op::Lease => Request::Lease { count: r.u32()? },
            Op::Connected => Request::Connected {
                id,
                local: r.addr()?,
                peer: r.addr()?,
            },
            Op::Closed => {
                let n = r.u32()? as usize;
                if n > MAX_CLOSED {
                    return Err(Errno::EPROTO);
                }
                let mut conns = Vec::with_capacity(n);
                for _ in 0..n {
                    conns.push((r.addr()?, r.addr()?));
                }
                Request::Closed { conns }
            }
            Op::SetNeighbour => {
                let addr = r.addr()?;
                let mut mac = [0u8; 6];
                mac.copy_from_slice(r.bytes(6)?);
                Request::SetNeighbour { addr, mac }
            }
        };
        if !r.is_empty() {
            return Err(Errno::EPROTO);
        }
        Ok(req)
    }
}

/// A reply body. Which variant answers which request is fixed by the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Success with no body.
    Ok,
    /// Failure: a positive errno (`EINPROGRESS` for a connect under way is one).
    Err(Errno),
    /// `Hello`: the node id. `Socket`: the new socket's id (fd attached).
    Created(u64),
    /// `GetSockName`/`GetPeerName`.
    Addr(WireAddr),
    /// `GetSockOpt`, or `NodeInfo` text.
    Bytes(Vec<u8>),
}

impl Reply {
    /// The reply to a request with sequence number 0.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_seq(0)
    }

    /// The reply to a request with sequence number `seq` ([`request_seq`]; 0: none).
    pub fn encode_seq(&self, seq: u16) -> Vec<u8> {
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&REP_MAGIC.to_le_bytes());
        let status = match self {
            Reply::Err(e) => e.0,
            _ => 0,
        };
        b.extend_from_slice(&status.to_le_bytes());
        match self {
            Reply::Ok | Reply::Err(_) => b.push(0),
            Reply::Created(id) => {
                b.push(1);
                b.extend_from_slice(&id.to_le_bytes());
            }
            Reply::Addr(a) => {
                b.push(2);
                a.encode(&mut b);
            }
            Reply::Bytes(v) => {
                b.push(3);
                b.extend_from_slice(&(v.len() as u32).to_le_bytes());
                b.extend_from_slice(v);
            }
        }
        if seq != 0 {
            b.extend_from_slice(&seq.to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Reply, Errno> {
        Reply::decode_seq(b).map(|(_, r)| r)
    }

    /// Parse a reply and the sequence number it echoes (0: none).
    pub fn decode_seq(b: &[u8]) -> Result<(u16, Reply), Errno> {
        let mut r = Reader::new(b);
        if r.u32()? != REP_MAGIC {
            return Err(Errno::EPROTO);
        }
        let status = r.i32()?;
        let kind = r.u8()?;
        let rep = match kind {
            0 if status > 0 => Reply::Err(Errno(status)),
            0 if status == 0 => Reply::Ok,
            1 => Reply::Created(r.u64()?),
            2 => Reply::Addr(r.addr()?),
            3 => {
                let n = r.u32()? as usize;
                if n > MAX_MSG {
                    return Err(Errno::EPROTO);
                }
                Reply::Bytes(r.bytes(n)?.to_vec())
            }
            _ => return Err(Errno::EPROTO),
        };
        let seq = match r.b.len() {
            0 => 0,
            2 => r.u16()?,
            _ => return Err(Errno::EPROTO),
        };
        if seq == 0 && !r.is_empty() || (status != 0 && kind != 0) {
            return Err(Errno::EPROTO);
        }
        Ok((seq, rep))
    }

    /// `Reply::Err(e)` as `Err(e)`, anything else as `Ok`.
    pub fn into_result(self) -> Result<Reply, Errno> {
        match self {
            Reply::Err(e) => Err(e),
            r => Ok(r),
        }
    }
}

/// What a listener's fd carries for each accepted connection (with its fd attached):
/// `magic "IOTA" u32, errno u32 (0), socket id u64, local WireAddr, peer WireAddr`.
///
/// An *error record* ([`AcceptRecord::encode_error`]: a nonzero errno, no fd attached) makes
/// one `accept` fail with that errno: the daemon could not make the connection's socketpair
/// (`EMFILE`/`ENFILE`); the connection itself stays queued in the daemon, as the kernel keeps
/// it queued when `accept` fails for want of a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptRecord {
    pub id: SockId,
    pub local: WireAddr,
    pub peer: WireAddr,
}

impl AcceptRecord {
    pub fn encode(&self) -> [u8; ACCEPT_RECORD_LEN] {
        let mut v = Vec::with_capacity(ACCEPT_RECORD_LEN);
        v.extend_from_slice(&ACCEPT_MAGIC.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&self.id.to_le_bytes());
        self.local.encode(&mut v);
        self.peer.encode(&mut v);
        let mut out = [0u8; ACCEPT_RECORD_LEN];
        out.copy_from_slice(&v);
        out
    }

    /// An error record carrying `errno` (see the type's docs).
    pub fn encode_error(errno: i32) -> [u8; ACCEPT_RECORD_LEN] {
        let mut out = [0u8; ACCEPT_RECORD_LEN];
        out[..4].copy_from_slice(&ACCEPT_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&(errno as u32).to_le_bytes());
        out
    }

    /// The errno of an error record; `None` for a connection's record (or garbage).
    pub fn decode_error(b: &[u8]) -> Option<Errno> {
        if b.len() != ACCEPT_RECORD_LEN || b[..4] != ACCEPT_MAGIC.to_le_bytes() {
            return None;
        }
        let e = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        (e != 0 && e < 4096).then_some(Errno(e as i32))
    }

    pub fn decode(b: &[u8]) -> Result<AcceptRecord, Errno> {
        if b.len() != ACCEPT_RECORD_LEN {
            return Err(Errno::EPROTO);
        }
        let mut r = Reader::new(b);
        if r.u32()? != ACCEPT_MAGIC {
            return Err(Errno::EPROTO);
        }
        let _ = r.u32()?;
        Ok(AcceptRecord {
            id: r.u64()?,
            local: r.addr()?,
            peer: r.addr()?,
        })
    }
}

/// Header in front of every datagram on a datagram socket's socketpair:
/// `WireAddr (24), length u32, flags u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DgramHeader {
    /// Daemon → app: the source. App → daemon: the destination (`None`: connected peer).
    pub addr: WireAddr,
    /// Daemon → app: the datagram's payload length before any truncation.
    pub len: u32,
    pub flags: u32,
}

impl DgramHeader {
    pub const LEN: usize = 32;
    /// Daemon → app, in `flags`: an error record, not a datagram (no payload; the errno is in
    /// the top 16 bits). The next receive fails with that errno (ICMP errors on connected
    /// UDP sockets, `stackd/src/icmperr.rs`).
    pub const ERROR: u32 = 1 << 9;

    /// An error record carrying `errno`.
    pub fn error(errno: i32) -> DgramHeader {
        DgramHeader {
            addr: WireAddr(None),
            len: 0,
            flags: Self::ERROR | ((errno as u32 & 0xffff) << 16),
        }
    }

    /// The errno of an error record.
    pub fn errno(&self) -> Option<i32> {
        (self.flags & Self::ERROR != 0).then_some((self.flags >> 16) as i32)
    }

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut v = Vec::with_capacity(Self::LEN);
        self.addr.encode(&mut v);
        v.extend_from_slice(&self.len.to_le_bytes());
        v.extend_from_slice(&self.flags.to_le_bytes());
        let mut out = [0u8; Self::LEN];
        out.copy_from_slice(&v);
        out
    }

    pub fn decode(b: &[u8]) -> Result<DgramHeader, Errno> {
        if b.len() < Self::LEN {
            return Err(Errno::EPROTO);
        }
        let mut r = Reader::new(&b[..Self::LEN]);
        Ok(DgramHeader {
            addr: r.addr()?,
            len: r.u32()?,
            flags: r.u32()?,
        })
    }
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b }
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Errno> {
        if self.b.len() < n {
            return Err(Errno::EPROTO);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, Errno> {
        Ok(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Errno> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, Errno> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }
    fn i32(&mut self) -> Result<i32, Errno> {
        Ok(i32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, Errno> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    fn addr(&mut self) -> Result<WireAddr, Errno> {
        WireAddr::decode(self.bytes(WireAddr::LEN)?)
    }
    fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
}

/// A synchronous control connection (one request at a time; callers serialise).
#[derive(Debug)]
pub struct Client {
    fd: Fd,
}

impl Client {
    /// Connect to a node's control socket, close-on-exec.
    pub fn connect(addr: &UnixAddr) -> Result<Client, Errno> {
        let fd = sys::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)?;
        sys::retry(|| sys::connect_unix(fd.raw(), addr))?;
        Ok(Client { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.raw()
    }

    /// Send `req` (with `fd` attached if given) and wait for the reply. Transport failures
    /// (daemon gone) are reported as `Err`; an errno answer is `Ok(Reply::Err(..))`.
    pub fn call(&self, req: &Request, fd: Option<RawFd>) -> Result<(Reply, Vec<Fd>), Errno> {
        let msg = req.encode();
        let fds: Vec<RawFd> = fd.into_iter().collect();
        sys::retry(|| {
            sys::sendmsg(
                self.fd.raw(),
                &[IoSlice::new(&msg)],
                &fds,
                libc::MSG_NOSIGNAL,
            )
        })?;
        let mut buf = [0u8; MAX_MSG];
        let got = sys::retry(|| sys::recvmsg(self.fd.raw(), &mut [IoSliceMut::new(&mut buf)], 0))?;
        if got.len == 0 {
            return Err(Errno(libc::ECONNRESET));
        }
        Ok((Reply::decode(&buf[..got.len])?, got.fds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_queue_entries_round_trip_and_short_ones_are_refused() {
        let e = ErrQueueEntry {
            errno: libc::ECONNREFUSED as u32,
            origin: 2,
            ty: 3,
            code: 3,
            info: 0,
            offender: WireAddr(Some("10.0.0.2:0".parse().unwrap())),
            dest: WireAddr(Some("10.0.0.2:9000".parse().unwrap())),
            payload: b"quoted".to_vec(),
        };
        let b = e.encode();
        assert_eq!(b.len(), ErrQueueEntry::FIXED + 6);
        assert_eq!(ErrQueueEntry::decode(&b), Ok(e.clone()));
        assert_eq!(
            ErrQueueEntry::decode(&b[..ErrQueueEntry::FIXED - 1]),
            Err(Errno::EPROTO)
        );
        let big = ErrQueueEntry {
            payload: vec![7; 5000],
            ..e
        };
        assert_eq!(big.encode().len(), MAX_OPT);
    }

    fn all_requests() -> Vec<Request> {
        let a = WireAddr(Some("[fd00::5%3]:80".parse().unwrap()));
        let b = WireAddr(Some("10.0.0.5:8080".parse().unwrap()));
        vec![
            Request::Hello { pid: 77 },
            Request::Join { id: 5 },
            Request::Table,
            Request::Lease { count: 32 },
            Request::Connected {
                id: 11,
                local: a,
                peer: b,
            },
            Request::Closed { conns: vec![] },
            Request::Closed {
                conns: vec![(a, b); MAX_CLOSED],
            },
            Request::Adopt {
                id: mirror_id(7),
                lid: 9,
                local: b,
                peer: b,
                ino: 12345,
            },
            Request::Socket {
                domain: libc::AF_INET6,
                ty: libc::SOCK_STREAM,
                protocol: 0,
            },
            Request::Bind { id: 3, addr: a },
            Request::Listen {
                id: 3,
                backlog: 511,
            },
            Request::Connect { id: 9, addr: b },
            Request::Connect {
                id: 9,
                addr: WireAddr(None),
            },
            Request::GetSockName { id: 1 },
            Request::GetPeerName { id: 2 },
            Request::GetSockOpt {
                id: 1,
                level: libc::SOL_SOCKET,
                name: libc::SO_ERROR,
                len: 4,
            },
            Request::SetSockOpt {
                id: 1,
                level: libc::IPPROTO_TCP,
                name: libc::TCP_NODELAY,
                value: vec![1, 0, 0, 0],
            },
            Request::Shutdown {
                id: 1,
                how: libc::SHUT_WR,
            },
            Request::NodeInfo,
            Request::Register {
                id: client_id(0x123_4567_89ab),
                domain: libc::AF_INET,
                ty: libc::SOCK_STREAM,
                protocol: 0,
            },
            Request::ConnectAsync {
                id: 7,
                addr: b,
                filler: 4608,
            },
            Request::SetNeighbour {
                addr: b,
                mac: [2, 0, 0, 0, 0, 7],
            },
            Request::Subscribe { groups: 0x110 },
        ]
    }

    #[test]
    fn client_ids_never_look_like_daemon_ids() {
        for r in [0, 1, u64::MAX, 0x5555_5555_5555_5555, 1 << 59] {
            let (c, d) = (client_id(r), daemon_id(r));
            assert!(is_client_id(c) && !is_client_id(d), "{r:x}");
            assert!(
                c >> 60 == 0 && d >> 60 == 0,
                "bits 60..63 stay clear: {r:x}"
            );
            assert!(c != 0 && d != 0);
        }
    }

    #[test]
    fn requests_roundtrip_and_truncations_fail_cleanly() {
        for req in all_requests() {
            let b = req.encode();
            assert_eq!(Request::decode(&b), Ok(req.clone()));
            for n in 0..b.len() {
                assert_eq!(
                    Request::decode(&b[..n]),
                    Err(Errno::EPROTO),
                    "{req:?} cut at {n}"
                );
            }
            let mut longer = b.clone();
            longer.push(0);
            assert_eq!(Request::decode(&longer), Err(Errno::EPROTO));
        }
    }

    #[test]
    fn replies_roundtrip() {
        for rep in [
            Reply::Ok,
            Reply::Err(Errno(libc::EINPROGRESS)),
            Reply::Created(42),
            Reply::Addr(WireAddr(Some("[::ffff:10.0.0.1]:5".parse().unwrap()))),
            Reply::Bytes(b"addr=fd00::5/64\n".to_vec()),
        ] {
            assert_eq!(Reply::decode(&rep.encode()), Ok(rep.clone()));
        }
        assert_eq!(Reply::decode(b"garbage!garbage!"), Err(Errno::EPROTO));
    }

    #[test]
    fn dgram_headers() {
        let h = DgramHeader {
            addr: WireAddr(Some("[fd00::9]:53".parse().unwrap())),
            len: 1200,
            flags: 0,
        };
        assert_eq!(DgramHeader::decode(&h.encode()), Ok(h));
        assert_eq!(DgramHeader::decode(&[0u8; 8]), Err(Errno::EPROTO));
    }

    #[test]
    fn accept_records() {
        let r = AcceptRecord {
            id: 5,
            local: WireAddr(Some("[fd00::1]:80".parse().unwrap())),
            peer: WireAddr(Some("10.0.0.2:40000".parse().unwrap())),
        };
        assert_eq!(AcceptRecord::decode(&r.encode()), Ok(r));
        assert_eq!(AcceptRecord::decode(&[0u8; 64]), Err(Errno::EPROTO));
        assert_eq!(AcceptRecord::decode_error(&r.encode()), None);
        let e = AcceptRecord::encode_error(libc::EMFILE);
        assert_eq!(AcceptRecord::decode_error(&e), Some(Errno(libc::EMFILE)));
    }

    #[test]
    fn replies_echo_the_sequence_and_one_way_requests_are_known_unparsed() {
        let req = Request::GetSockName { id: 4 };
        for seq in [0, 1, 77, MAX_SEQ] {
            let m = req.encode_seq(seq);
            assert_eq!(request_seq(&m), seq);
            assert!(!is_one_way(&m));
            assert_eq!(Request::decode(&m), Ok(req.clone()));
            for rep in [
                Reply::Err(Errno::EBADF),
                Reply::Bytes(vec![7; 9]),
                Reply::Created(3),
            ] {
                let r = rep.encode_seq(seq);
                assert_eq!(Reply::decode_seq(&r), Ok((seq, rep.clone())));
                // A reply without one is the old format, byte for byte.
                if seq == 0 {
                    assert_eq!(r, rep.encode());
                }
            }
        }
        assert!(is_one_way(&req.encode_no_reply()));
        let reg = Request::Register {
            id: client_id(5),
            domain: libc::AF_INET,
            ty: libc::SOCK_STREAM,
            protocol: 0,
        };
        // Even cut short (a body that does not parse), a Register gets no reply.
        assert!(is_one_way(&reg.encode()[..10]));
        assert!(!is_one_way(b"garbage!"));
    }
}
