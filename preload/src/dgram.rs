//! Virtual datagram sockets (UDP, ICMP echo "ping" sockets): which fds they are, and what a
//! send or a receive means for them.
//!
//! A virtual datagram socket is the application's end of a kernel `AF_UNIX` socketpair that
//! keeps message boundaries; every message on it starts with a 32-byte
//! [`DgramHeader`](ioth_common::ctl::DgramHeader) (see `ioth_common::ctl`). The hooks of
//! [`crate::dghooks`] add the header on the way out and strip it on the way in, so the
//! application sees plain datagrams with per-datagram addresses.
//!
//! # Which fds are datagram sockets
//! `read` and `write` are hot for every program, so the question must cost almost nothing
//! for other fds: a per-process table, one `AtomicU64` per fd number below [`SLOTS`], is zero
//! for fds that are not virtual datagram sockets. A non-zero entry holds the low 32 bits of
//! the socket's inode number (sockfs inode numbers are never shared by two live sockets) and
//! a few facts about the socket. Before the shim strips or adds a header it confirms the entry
//! with one `fstat` (same sockfs device and inode): an entry left behind after a close the
//! shim did not see (`close`, `close_range`, `fclose`, libc-internal closes are not hooked)
//! is cleared the first time it is used, and can never make the shim corrupt a file read.
//!
//! Entries are made when the shim creates the socket (`socket`), when an fd arrives by
//! `SCM_RIGHTS` (`recvmsg` of any socket), at `dup`/`dup2`/`dup3`, and, after `exec`, by a
//! scan of `/proc/self/fd` in the library constructor (a socket whose name parses with
//! `names::parse_socket_name` and whose type keeps boundaries). Not covered: `fcntl(F_DUPFD)`
//! copies (not hooked), and fd numbers at or above [`SLOTS`].
//!
//! # Facts kept per fd
//! Family (`AF_INET6` or not) and ICMP-ness (asked from the daemon once when unknown),
//! "connected" and "bound" hints. The hints only save control round trips: "bound" means an
//! implicit bind was done (UDP binds an ephemeral port on the first send, as Linux does, so
//! `getsockname` right after `sendto` is right), "connected" means a `send` without an
//! address has somewhere to go (otherwise the daemon is asked, and `EDESTADDRREQ` is the
//! answer when the socket has no peer).

#![deny(unsafe_code)]

use crate::emu::{self, Daemons, Virt};
use ioth_common::ctl::{DgramHeader, WireAddr};
use ioth_common::sys::{self, Errno};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// In a received datagram header's `flags`: the low 8 bits are the packet's hop limit (the
/// daemon's raw ICMPv6 sockets, `stackd/src/raw.rs`).
pub const HOPS_PRESENT: u32 = 1 << 8;

/// Fd numbers below this can be virtual datagram sockets.
pub const SLOTS: usize = 1 << 16;

static TABLE: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
/// Device number of sockfs (learnt from the first virtual datagram socket).
static SOCKFS_DEV: AtomicU64 = AtomicU64::new(u64::MAX);

const PRESENT: u64 = 1 << 63;
const KNOWN: u64 = 1 << 62;
const V6: u64 = 1 << 61;
const ICMP: u64 = 1 << 60;
const CONNECTED: u64 = 1 << 59;
const BOUND: u64 = 1 << 58;
const PKTINFO4: u64 = 1 << 57;
const PKTINFO6: u64 = 1 << 56;
const RECVTTL: u64 = 1 << 55;
const RECVHOPS: u64 = 1 << 54;
/// A virtual rtnetlink socket ([`crate::netlink`]), not a datagram socket of the daemon.
const NETLINK: u64 = 1 << 53;
/// `IPV6_2292HOPLIMIT` (RFC 2292's spelling, which busybox `ping` asks for): the hop limit
/// as a control message of that type.
const HOPS2292: u64 = 1 << 52;
/// A packet socket (`AF_PACKET`, [`crate::packet`]): messages carry an `LlHeader`.
const PACKET: u64 = 1 << 51;
/// `PACKET_AUXDATA` asked for.
const AUXDATA: u64 = 1 << 50;
/// `IP_RECVERR`/`IPV6_RECVERR` set: ICMP errors reach the socket unconnected too.
const RECVERR: u64 = 1 << 49;
const INO: u64 = 0xffff_ffff;

/// Largest UDP payload over IPv4 and IPv6 (65535 minus the headers).
const MAX_UDP4: usize = 65507;
const MAX_UDP6: usize = 65527;

/// Virtual stream (TCP) sockets, one bit per fd number below [`SLOTS`]: their sends take
/// `MSG_NOSIGNAL`, so that a send after a reset can fail with `ECONNRESET` and no `SIGPIPE`
/// first, as on Linux ([`crate::dghooks`]). A stale bit (a close the shim did not see) costs
/// nothing but that: the send on whatever the number is now behaves as the kernel's.
static STREAMS: [AtomicU64; SLOTS / 64] = [const { AtomicU64::new(0) }; SLOTS / 64];

/// Mark (or unmark) `fd` as a virtual stream socket.
pub fn stream_mark(fd: RawFd, on: bool) {
    let i = fd as u32 as usize;
    if i >= SLOTS {
        return;
    }
    let bit = 1u64 << (i % 64);
    if on {
        STREAMS[i / 64].fetch_or(bit, Ordering::Relaxed);
    } else if STREAMS[i / 64].load(Ordering::Relaxed) & bit != 0 {
        STREAMS[i / 64].fetch_and(!bit, Ordering::Relaxed);
    }
}

/// Whether `fd` was marked a virtual stream socket. One atomic load.
#[inline(always)]
pub fn is_stream(fd: RawFd) -> bool {
    let i = fd as u32 as usize;
    i < SLOTS && STREAMS[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) != 0
}

/// Whether `dup` and friends must tell this module about a copy of `fd` (or a copy onto it).
#[inline(always)]
pub fn tracked(fd: RawFd) -> bool {
    hit(fd) != 0 || is_stream(fd)
}

/// The raw table entry of `fd` (0: not a virtual datagram socket). One atomic load.
#[inline(always)]
pub fn hit(fd: RawFd) -> u64 {
    if (fd as u32 as usize) < SLOTS {
        TABLE[fd as usize].load(Ordering::Relaxed)
    } else {
        0
    }
}

/// A confirmed virtual datagram socket.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub fd: RawFd,
    bits: u64,
}

/// `FIONREAD` (`SIOCINQ`) on `fd` when it is a virtual datagram socket: the payload size of
/// the next datagram (0 when none is queued), as Linux reports for UDP. The kernel's own
/// answer for the `SOCK_SEQPACKET` pair would be every queued byte, headers included.
pub fn next_len(fd: RawFd) -> Option<Result<usize, Errno>> {
    let e = confirm(fd, hit(fd))?;
    let mut hdr = [0u8; DgramHeader::LEN];
    let flags = libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT;
    Some(match sys::recv(e.fd, &mut hdr, flags) {
        Ok(n) => Ok(n.saturating_sub(DgramHeader::LEN)),
        Err(err) if err.is_again() => Ok(0),
        Err(err) => Err(err),
    })
}

/// Confirm a non-zero table entry with `fstat`; a stale entry is cleared.
pub fn confirm(fd: RawFd, bits: u64) -> Option<Entry> {
    if bits == 0 {
        return None;
    }
    if confirm_bits(fd, bits) {
        return Some(Entry { fd, bits });
    }
    let _ = TABLE[fd as usize].compare_exchange(bits, 0, Ordering::Relaxed, Ordering::Relaxed);
    None
}

fn store(fd: RawFd, bits: u64) {
    if (fd as u32 as usize) < SLOTS {
        TABLE[fd as usize].store(bits, Ordering::Relaxed);
    }
}

fn add_bits(e: &mut Entry, more: u64) {
    let new = e.bits | more;
    if (e.fd as u32 as usize) < SLOTS {
        let _ = TABLE[e.fd as usize].compare_exchange(
            e.bits,
            new,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    e.bits = new;
}

/// Should `socket(domain, SOCK_RAW, protocol)` be virtual? Raw ICMPv6 (router advertisement
/// daemons) and raw ICMPv4 (busybox `ping`), see `stackd/src/raw.rs`.
pub fn wants_raw(domain: i32, protocol: i32) -> bool {
    (domain == libc::AF_INET6 && protocol == libc::IPPROTO_ICMPV6)
        || (domain == libc::AF_INET && protocol == libc::IPPROTO_ICMP)
        || (domain == libc::AF_INET && protocol == libc::IPPROTO_RAW)
}

/// Should `socket(domain, SOCK_DGRAM, protocol)` be virtual? UDP, and ICMP echo sockets of
/// the matching family (Linux "ping sockets").
pub fn wants(domain: i32, protocol: i32) -> bool {
    matches!(
        (domain, protocol),
        (_, 0)
            | (_, libc::IPPROTO_UDP)
            | (libc::AF_INET, libc::IPPROTO_ICMP)
            | (libc::AF_INET6, libc::IPPROTO_ICMPV6)
    )
}

/// Raw IP sockets of an active node (other than raw ICMPv6, which is virtual) fail with
/// `EPERM`, as for an unprivileged process: they must not reach the host's network, and
/// programs such as ping then use a ping socket.
pub fn refuse_raw(domain: i32, ty: i32) -> bool {
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    base == libc::SOCK_RAW
        && (domain == libc::AF_INET || domain == libc::AF_INET6)
        && crate::node::active()
}

/// `connect` succeeded on `fd`: keep the "connected" hint of a datagram socket right.
pub fn connected(fd: RawFd, peer: bool) {
    if let Some(mut e) = confirm(fd, hit(fd)) {
        e.connected(peer);
    }
}

/// `setsockopt` succeeded on `fd`: remember the options that ask for control messages.
pub fn option_set(fd: RawFd, level: i32, name: i32, value: &[u8]) {
    let bit = match (level, name) {
        (libc::IPPROTO_IP, libc::IP_PKTINFO) => PKTINFO4,
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO) => PKTINFO6,
        (libc::IPPROTO_IP, libc::IP_RECVTTL) => RECVTTL,
        (libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT) => RECVHOPS,
        (libc::IPPROTO_IPV6, libc::IPV6_2292HOPLIMIT) => HOPS2292,
        (libc::SOL_PACKET, libc::PACKET_AUXDATA) => AUXDATA,
        (libc::IPPROTO_IP, libc::IP_RECVERR) | (libc::IPPROTO_IPV6, libc::IPV6_RECVERR) => RECVERR,
        _ => return,
    };
    let on = value.iter().any(|b| *b != 0);
    if let Some(e) = confirm(fd, hit(fd)) {
        let new = if on { e.bits | bit } else { e.bits & !bit };
        let _ =
            TABLE[fd as usize].compare_exchange(e.bits, new, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The node's first address of each family (the local address reported in `IP_PKTINFO`/
/// `IPV6_PKTINFO`: the daemon does not say which of the node's addresses a datagram was
/// sent to).
fn node_addrs() -> (Option<IpAddr>, Option<IpAddr>) {
    static ADDRS: std::sync::OnceLock<(Option<IpAddr>, Option<IpAddr>)> =
        std::sync::OnceLock::new();
    *ADDRS.get_or_init(|| {
        let mut v4 = None;
        let mut v6 = None;
        if let Ok((ioth_common::ctl::Reply::Bytes(b), _)) =
            crate::node::call_home(&ioth_common::ctl::Request::NodeInfo, None)
        {
            for line in String::from_utf8_lossy(&b).lines() {
                if let Some(a) = line.strip_prefix("addr=")
                    && let Some(ip) = a.split('/').next().and_then(|x| x.parse::<IpAddr>().ok())
                {
                    match ip {
                        IpAddr::V4(_) => {
                            v4.get_or_insert(ip);
                        }
                        IpAddr::V6(_) => {
                            v6.get_or_insert(ip);
                        }
                    }
                }
            }
        }
        (v4, v6)
    })
}

/// A control message to hand to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmsg {
    pub level: i32,
    pub ty: i32,
    pub data: Vec<u8>,
}

/// The control messages the application asked for (`IP_PKTINFO`, `IPV6_RECVPKTINFO`,
/// `IP_RECVTTL`, `IPV6_RECVHOPLIMIT`, `IPV6_2292HOPLIMIT`) for a datagram from `from`. Interface index 1
/// ([`crate::iface::INDEX`]); hop limit: the one the daemon reports in the header's `flags`
/// (raw ICMPv6 sockets), else 64.
pub fn cmsgs(e: &Entry, g: &Got) -> Vec<Cmsg> {
    let (from, hdr_flags) = (&g.from, g.flags);
    let mut v = Vec::new();
    if g.ll.is_some() {
        if e.bits & AUXDATA != 0 {
            v.push(Cmsg {
                level: libc::SOL_PACKET,
                ty: libc::PACKET_AUXDATA,
                data: crate::packet::auxdata(g.full, g.copied),
            });
        }
        return v;
    }
    if e.bits & (PKTINFO4 | PKTINFO6 | RECVTTL | RECVHOPS | HOPS2292) == 0 {
        return v;
    }
    let v4 = match from.0 {
        Some(SocketAddr::V4(_)) => true,
        Some(SocketAddr::V6(a)) => a.ip().to_ipv4_mapped().is_some(),
        None => return v,
    };
    let (a4, a6) = node_addrs();
    if v4 && e.bits & PKTINFO4 != 0 {
        let mut d = 1i32.to_ne_bytes().to_vec();
        let ip = match a4 {
            Some(IpAddr::V4(a)) => a.octets(),
            _ => [0; 4],
        };
        d.extend_from_slice(&ip);
        d.extend_from_slice(&ip);
        v.push(Cmsg {
            level: libc::IPPROTO_IP,
            ty: libc::IP_PKTINFO,
            data: d,
        });
    }
    if !v4 && e.bits & PKTINFO6 != 0 {
        let mut d = match a6 {
            Some(IpAddr::V6(a)) => a.octets().to_vec(),
            _ => vec![0; 16],
        };
        d.extend_from_slice(&1i32.to_ne_bytes());
        v.push(Cmsg {
            level: libc::IPPROTO_IPV6,
            ty: libc::IPV6_PKTINFO,
            data: d,
        });
    }
    if v4 && e.bits & RECVTTL != 0 {
        v.push(Cmsg {
            level: libc::IPPROTO_IP,
            ty: libc::IP_TTL,
            data: 64i32.to_ne_bytes().to_vec(),
        });
    }
    let hops = if hdr_flags & HOPS_PRESENT != 0 {
        (hdr_flags & 0xff) as i32
    } else {
        64
    };
    for (bit, ty) in [
        (RECVHOPS, libc::IPV6_HOPLIMIT),
        (HOPS2292, libc::IPV6_2292HOPLIMIT),
    ] {
        if !v4 && e.bits & bit != 0 {
            v.push(Cmsg {
                level: libc::IPPROTO_IPV6,
                ty,
                data: hops.to_ne_bytes().to_vec(),
            });
        }
    }
    v
}

/// The pending error of a virtual datagram socket `fd`, taken (`SO_ERROR`, and reading the
/// error queue, which on Linux replaces the socket's error with the next queued one's): the
/// error record at the head of its socketpair, if there is one. `fd` must be a virtual
/// socket (it is not looked up in the table: `ioth-exec` serves duplicates).
pub fn take_error(fd: RawFd) -> Option<i32> {
    if sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) == Ok(libc::SOCK_STREAM) {
        return None;
    }
    take_head_error(fd)
}

/// The errno of the error record at the head of `fd`'s queue, if the next message is one
/// (peeked, nothing taken).
fn head_error(fd: RawFd) -> Option<i32> {
    let mut hdr = [0u8; DgramHeader::LEN];
    let n = sys::recv(fd, &mut hdr, libc::MSG_PEEK | libc::MSG_DONTWAIT).ok()?;
    DgramHeader::decode(&hdr[..n]).ok()?.errno()
}

/// The same, and the record taken. Only that record: a datagram that arrived meanwhile stays
/// (the record is first, and messages keep their order).
fn take_head_error(fd: RawFd) -> Option<i32> {
    let errno = head_error(fd)?;
    let mut hdr = [0u8; DgramHeader::LEN];
    let _ = sys::recv(fd, &mut hdr, libc::MSG_DONTWAIT);
    Some(errno)
}

/// Protocols without ports, whose sockets take the [`ICMP`] bit: ICMP, and raw IP
/// (`IPPROTO_RAW`, whose packets carry their own header).
fn portless(protocol: i32) -> bool {
    matches!(
        protocol,
        libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6 | libc::IPPROTO_RAW
    )
}

/// Whether the next message of virtual datagram socket `fd` is an error record (`None`: it
/// is not, or `fd` is not one), and whether it is all that is queued. Peeks, takes nothing.
pub fn error_pending(fd: RawFd) -> Option<bool> {
    let e = confirm(fd, hit(fd))?;
    if e.is_netlink() {
        return None;
    }
    head_error(fd)?;
    // SIOCINQ of a SOCK_SEQPACKET socket counts every queued byte.
    let queued = sys::ioctl_int(fd, libc::FIONREAD).unwrap_or(0);
    Some(queued as usize <= DgramHeader::LEN)
}

/// Register `fd` (a virtual socket just created by `socket(domain, ty, protocol)`).
pub fn created(fd: RawFd, domain: i32, ty: i32, protocol: i32) {
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    stream_mark(fd, base == libc::SOCK_STREAM);
    if base != libc::SOCK_DGRAM && base != libc::SOCK_RAW {
        // A TCP socket may reuse the number of a closed datagram socket.
        store(fd, 0);
        return;
    }
    let Ok((dev, ino)) = sys::fstat_id(fd) else {
        return;
    };
    SOCKFS_DEV.store(dev, Ordering::Relaxed);
    let mut bits = PRESENT | KNOWN | (ino & INO);
    if domain == libc::AF_INET6 {
        bits |= V6;
    }
    if domain == libc::AF_PACKET {
        bits |= PACKET;
    } else if portless(protocol) {
        bits |= ICMP;
    }
    store(fd, bits);
}

/// Register `fd`, a virtual netlink socket just made by [`crate::netlink::create`].
pub fn created_netlink(fd: RawFd) {
    let Ok((dev, ino)) = sys::fstat_id(fd) else {
        return;
    };
    SOCKFS_DEV.store(dev, Ordering::Relaxed);
    stream_mark(fd, false);
    store(fd, PRESENT | KNOWN | NETLINK | (ino & INO));
}

/// The kernel type of `fd` if it is a virtual socket.
fn virtual_type(fd: RawFd) -> Option<i32> {
    emu::virt(fd)?;
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok()
}

/// Learn an fd that arrived from elsewhere (`SCM_RIGHTS`, inherited over `exec`).
pub fn learn(fd: RawFd) {
    if (fd as u32 as usize) >= SLOTS {
        return;
    }
    let ty = virtual_type(fd);
    stream_mark(fd, ty == Some(libc::SOCK_STREAM));
    if !matches!(ty, Some(libc::SOCK_DGRAM) | Some(libc::SOCK_SEQPACKET)) {
        store(fd, 0);
        return;
    }
    if let Ok((dev, ino)) = sys::fstat_id(fd) {
        SOCKFS_DEV.store(dev, Ordering::Relaxed);
        store(fd, PRESENT | (ino & INO));
    }
}

/// For a supervisor that serves another process's sockets through duplicates of them
/// (`ioth-exec`): take `fd`, our duplicate, as a virtual datagram socket with the facts
/// `kept` from an earlier duplicate of the same socket ([`keep`]; 0: learn them). Whether it
/// is one.
pub fn adopt(fd: RawFd, kept: u64) -> bool {
    if (fd as u32 as usize) >= SLOTS {
        return false;
    }
    if kept != 0 && confirm_bits(fd, kept) {
        store(fd, kept);
        return true;
    }
    learn(fd);
    hit(fd) != 0
}

/// Whether `fd` is the socket of the table entry `bits` (same sockfs device and inode).
fn confirm_bits(fd: RawFd, bits: u64) -> bool {
    matches!(sys::fstat_id(fd), Ok((dev, ino))
        if dev == SOCKFS_DEV.load(Ordering::Relaxed) && ino & INO == bits & INO)
}

/// The facts kept about `fd` (for [`adopt`] on a later duplicate), and forget them here:
/// `fd` is about to be closed.
pub fn keep(fd: RawFd) -> u64 {
    let bits = hit(fd);
    store(fd, 0);
    bits
}

/// `dup2(old, new)` (or `dup`) succeeded: `new` is what `old` is.
pub fn duplicated(old: RawFd, new: RawFd) {
    if old == new {
        return;
    }
    stream_mark(new, is_stream(old));
    let bits = hit(old);
    let bits = match confirm(old, bits) {
        Some(e) => e.bits & !(CONNECTED | BOUND),
        None => 0,
    };
    if bits != 0 || hit(new) != 0 {
        store(new, bits);
    }
}

/// After `exec`: find the virtual datagram sockets this process inherited.
pub fn scan_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for ent in dir.flatten() {
        let Some(fd) = ent
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        else {
            continue;
        };
        if (fd as u32 as usize) < SLOTS && sys::getsockname_unix(fd).is_ok_and(|n| n.is_some()) {
            learn(fd);
        }
    }
}

impl Entry {
    fn virt(&self) -> Result<Virt, Errno> {
        emu::virt(self.fd).ok_or(Errno::EBADF)
    }

    /// Family and protocol, asked from the daemon once if not known.
    fn meta(&mut self) -> Result<(), Errno> {
        if self.bits & KNOWN != 0 {
            return Ok(());
        }
        let v = self.virt()?;
        let int = |name| -> Result<i32, Errno> {
            let b = emu::getsockopt(&Daemons, v, self.fd, libc::SOL_SOCKET, name, 4)?;
            Ok(i32::from_ne_bytes(
                b.get(..4).and_then(|s| s.try_into().ok()).unwrap_or([0; 4]),
            ))
        };
        let domain = int(libc::SO_DOMAIN)?;
        let proto = int(libc::SO_PROTOCOL)?;
        let mut more = KNOWN;
        if domain == libc::AF_INET6 {
            more |= V6;
        }
        if domain == libc::AF_PACKET {
            more |= PACKET;
        } else if portless(proto) {
            more |= ICMP;
        }
        add_bits(self, more);
        Ok(())
    }

    pub fn is_netlink(&self) -> bool {
        self.bits & NETLINK != 0
    }

    /// Whether it is a packet socket ([`crate::packet`]).
    pub fn is_packet(&mut self) -> bool {
        let _ = self.meta();
        self.bits & PACKET != 0
    }

    pub fn is_icmp(&mut self) -> bool {
        let _ = self.meta();
        self.bits & ICMP != 0
    }

    /// `connect` on this socket succeeded: with a peer, or (`AF_UNSPEC`) without.
    pub fn connected(&mut self, peer: bool) {
        let new = if peer {
            self.bits | CONNECTED | BOUND
        } else {
            self.bits & !CONNECTED
        };
        if (self.fd as u32 as usize) < SLOTS {
            let _ = TABLE[self.fd as usize].compare_exchange(
                self.bits,
                new,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        self.bits = new;
    }

    /// A pending socket error fails the next send, as Linux's `sock_alloc_send_pskb` fails it
    /// (and takes it): the error record at the head of the queue, taken. Looked for only on
    /// sockets that can have one (connected, or with `IP_RECVERR`), at one peek each.
    pub fn send_error(&self) -> Option<Errno> {
        if self.bits & (CONNECTED | RECVERR) == 0 || self.bits & (NETLINK | PACKET) != 0 {
            return None;
        }
        take_head_error(self.fd).map(Errno)
    }

    /// Everything a send needs before the datagram goes out: checks of the destination (as
    /// `udp_sendmsg`/`ping_sendmsg` make them), the implicit bind, and the header.
    pub fn prepare_send(
        &mut self,
        dest: Option<WireAddr>,
        len: usize,
    ) -> Result<[u8; DgramHeader::LEN], Errno> {
        self.meta()?;
        let v6 = self.bits & V6 != 0;
        let icmp = self.bits & ICMP != 0;
        let dest = dest.and_then(|d| d.0);
        match dest {
            Some(SocketAddr::V6(_)) if !v6 => return Err(Errno(libc::EAFNOSUPPORT)),
            Some(SocketAddr::V4(_)) if v6 && icmp => return Err(Errno::EINVAL),
            Some(a) if a.port() == 0 && !icmp => return Err(Errno::EINVAL),
            Some(_) => {}
            None => {
                if self.bits & CONNECTED == 0 {
                    let v = self.virt()?;
                    match emu::name(&Daemons, v, self.fd, true) {
                        Ok(WireAddr(Some(_))) => add_bits(self, CONNECTED | BOUND),
                        Ok(WireAddr(None)) => return Err(Errno(libc::EDESTADDRREQ)),
                        Err(e) if e.0 == libc::ENOTCONN => {
                            return Err(Errno(libc::EDESTADDRREQ));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let max = match dest {
            Some(SocketAddr::V4(_)) => MAX_UDP4,
            _ if v6 => MAX_UDP6,
            _ => MAX_UDP4,
        };
        if len > max {
            return Err(Errno::EMSGSIZE);
        }
        if icmp && len < 8 {
            return Err(Errno::EINVAL);
        }
        if self.bits & BOUND == 0 && !icmp {
            // The implicit bind of an unbound socket (inet_autobind): an ephemeral port now,
            // so that getsockname after sendto is right. EINVAL: it was bound already.
            let v = self.virt()?;
            let any: SocketAddr = if v6 {
                "[::]:0"
                    .parse()
                    .unwrap_or_else(|_| SocketAddr::from(([0u8; 16], 0)))
            } else {
                SocketAddr::from(([0u8, 0, 0, 0], 0))
            };
            match emu::bind(&Daemons, v, WireAddr(Some(any))) {
                Ok(()) => {}
                Err(e) if e == Errno::EINVAL => {}
                Err(e) => return Err(e),
            }
            add_bits(self, BOUND);
        }
        Ok(DgramHeader {
            addr: WireAddr(dest),
            len: len as u32,
            flags: 0,
        }
        .encode())
    }
}

/// What a receive got, from the header and the byte count of the kernel `recvmsg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Got {
    /// Bytes of payload copied to the caller.
    pub copied: usize,
    /// The datagram's full payload length.
    pub full: usize,
    pub from: WireAddr,
    /// The header's flags (see [`HOPS_PRESENT`]).
    pub flags: u32,
    /// A packet socket's source (`struct sockaddr_ll`), in place of `from`.
    pub ll: Option<[u8; ioth_common::ctl::SOCKADDR_LL_LEN]>,
}

impl Default for Got {
    fn default() -> Got {
        Got {
            copied: 0,
            full: 0,
            from: WireAddr(None),
            flags: 0,
            ll: None,
        }
    }
}

impl Got {
    /// `n` bytes arrived with `hdr` in front (`n == 0`: end of file, `ENETDOWN`).
    pub fn parse(hdr: &[u8; DgramHeader::LEN], n: usize) -> Result<Got, Errno> {
        if n == 0 {
            // Every message from the daemon starts with a header: nothing at all is the EOF
            // of its end, closed for good (the daemon died, and its keeper, which holds
            // the bound ones, too). Not an empty datagram from nowhere.
            return Err(Errno(libc::ENETDOWN));
        }
        if n < DgramHeader::LEN {
            return Err(Errno::EPROTO);
        }
        let copied = n - DgramHeader::LEN;
        if crate::packet::is_ll(hdr) {
            let h = ioth_common::ctl::LlHeader::decode(hdr)?;
            return Ok(Got {
                copied,
                full: (h.len as usize).max(copied),
                ll: Some(h.sll),
                ..Got::default()
            });
        }
        let h = DgramHeader::decode(hdr)?;
        if let Some(errno) = h.errno() {
            return Err(Errno(errno));
        }
        Ok(Got {
            copied,
            full: (h.len as usize).max(copied),
            from: h.addr,
            flags: h.flags,
            ll: None,
        })
    }

    /// The return value of the call (`MSG_TRUNC` asks for the real length).
    pub fn ret(&self, flags: i32) -> usize {
        if flags & libc::MSG_TRUNC != 0 {
            self.full
        } else {
            self.copied
        }
    }

    pub fn truncated(&self) -> bool {
        self.full > self.copied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_lengths() {
        let h = DgramHeader {
            addr: WireAddr(Some("10.0.0.1:53".parse().unwrap())),
            len: 100,
            flags: 0,
        }
        .encode();
        let g = Got::parse(&h, 32 + 10).unwrap();
        assert_eq!((g.copied, g.full), (10, 100));
        assert!(g.truncated());
        assert_eq!(g.ret(0), 10);
        assert_eq!(g.ret(libc::MSG_TRUNC), 100);
        assert_eq!(Got::parse(&h, 5), Err(Errno::EPROTO));
        assert_eq!(Got::parse(&h, 0), Err(Errno(libc::ENETDOWN)));
    }

    #[test]
    fn table_entries_are_confirmed_and_stale_ones_cleared() {
        let (a, _b) = sys::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET).unwrap();
        let fd = a.raw();
        created(fd, libc::AF_INET, libc::SOCK_DGRAM, 0);
        let bits = hit(fd);
        assert_ne!(bits, 0);
        assert!(confirm(fd, bits).is_some());
        // The number now names another socket: the entry is stale.
        let (c, _d) = sys::socketpair(libc::AF_UNIX, libc::SOCK_STREAM).unwrap();
        sys::close(fd);
        let c2 = c.dup_cloexec(fd).unwrap();
        if c2.raw() == fd {
            assert!(confirm(fd, bits).is_none());
            assert_eq!(hit(fd), 0);
        }
        assert_eq!(hit(-1), 0);
        assert_eq!(hit(SLOTS as i32 + 5), 0);
        std::mem::forget(a);
    }
}
