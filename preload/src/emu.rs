//! The socket emulation core: what each hooked call does to a virtual socket.
//!
//! Plain Rust over file descriptors and a [`Control`] (the daemons, or a fake in unit tests);
//! no raw pointers, no `extern "C"`. The hook layer ([`crate::hooks`]) decodes the caller's
//! arguments, asks [`virt`] whether the fd is ours, and calls in here.
//!
//! What lives where (see `ioth_common::ctl` for the protocol):
//! * *Identity*: a virtual socket is an `AF_UNIX` socket whose own name is
//!   `ioth/<node>/<sock>`; nothing is kept per process, so `dup`, `fork`, `exec` and
//!   `SCM_RIGHTS` need no hook.
//! * *Flags*: `O_NONBLOCK`, `FD_CLOEXEC`, `SO_RCVTIMEO` and `SO_SNDTIMEO` live on the kernel fd
//!   and work natively for reads, writes and our own waits.
//! * *Blocking*: the daemon never blocks. A blocking `connect` waits here with `poll(POLLOUT)`
//!   on the fd itself (bounded by `SO_SNDTIMEO`, interrupted by signals with `EINTR`); a
//!   blocking `accept` is a blocking `recvmsg` on the listener.
//! * *No round trip where none is needed*: a TCP `socket` makes an unconnected `AF_UNIX`
//!   stream socket here and registers it one-way (`Register`); "never connected" is a mark in
//!   the fd's own `SO_PRIORITY`, so it survives fork and dup. Its first `connect` (one round
//!   trip, the fd attached) is done by the daemon: straight to another node's kernel
//!   listener (cut-through), or to the daemon's door (TCP). Its `listen` makes a kernel
//!   listener in its place ([`kernel_listener`]), whose `accept` is the kernel's
//!   ([`accept_kernel`]). `TCP_CORK` is kept by the process ([`crate::cork`]). `SO_ERROR`
//!   of a TCP socket whose pair end shows no shutdown is 0, known here
//!   ([`no_error_pending`]).
//!
//! Elsewhere: datagram framing for UDP and ICMP sockets ([`crate::dgram`], hooked in
//! [`crate::dghooks`]) and name resolution ([`crate::resolv`]). Not here (yet): routing some
//! destinations to the kernel.

#![deny(unsafe_code)]

use crate::node;
use ioth_common::ctl::{self, ACCEPT_RECORD_LEN, AcceptRecord, Reply, Request, WireAddr};
use ioth_common::names;
use ioth_common::sys::{self, Errno, Fd};
use ioth_common::table::{self, Found};
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::Arc;

/// Who answers control requests.
pub trait Control {
    /// A request for the home node (new sockets).
    fn call_home(&self, req: &Request, fd: Option<RawFd>) -> Result<(Reply, Vec<Fd>), Errno>;
    /// A request about a socket of `node`.
    fn call(&self, node: u64, req: &Request, fd: Option<RawFd>) -> Result<(Reply, Vec<Fd>), Errno>;
    /// A request about a socket of `node` carrying several fds.
    fn call_fds(&self, node: u64, req: &Request, fds: &[RawFd]) -> Result<(Reply, Vec<Fd>), Errno> {
        self.call(node, req, fds.first().copied())
    }
    /// A request about a socket of `node` that cannot fail: no reply is awaited.
    fn post(&self, node: u64, req: &Request) -> Result<(), Errno> {
        self.call(node, req, None).map(drop)
    }
    /// A one-way request about a socket of `node` with fds attached (`Adopt`).
    fn post_fds(&self, node: u64, req: &Request, fds: &[RawFd]) -> Result<(), Errno> {
        self.call_fds(node, req, fds).map(drop)
    }
    /// A new socket made here and registered with the home node without a round trip
    /// (`Request::Register`), with `flags` (`SOCK_NONBLOCK`, `SOCK_CLOEXEC`) applied, and its
    /// id; `None`: ask with `Request::Socket` instead.
    fn register_home(
        &self,
        _domain: i32,
        _ty: i32,
        _protocol: i32,
        _flags: i32,
    ) -> Option<Result<(Fd, u64), Errno>> {
        None
    }
    /// `node`'s connect table (`ioth_common::table`), if it has one for us.
    fn table(&self, _node: u64) -> Option<Arc<table::Reader>> {
        None
    }
    /// A local port `node` leased us for a connect made here.
    fn lease_port(&self, _node: u64) -> Option<u16> {
        None
    }
    /// Socket `id`'s `Register`, if it is still held (`held::take_register`).
    fn take_register(&self, _node: u64, _id: u64) -> Option<Request> {
        None
    }
    /// Two one-way requests to `node`, in this order; `fds` go with the second.
    fn post_two(
        &self,
        node: u64,
        first: &Request,
        second: &Request,
        fds: &[RawFd],
    ) -> Result<(), Errno> {
        self.post_fds(node, first, &[])
            .and_then(|()| self.post_fds(node, second, fds))
    }
    /// Tell `node` of an accepted cut-through connection (at `fd`, inode `ino`) when the
    /// process next asks a daemon anything (`held::adopt_later`); here: now.
    fn adopt_later(&self, node: u64, _fd: RawFd, _ino: u64, req: Request) {
        let _ = self.post_fds(node, &req, &[]);
    }
    /// Tell `node` that socket `id` at `fd` was connected here from `local` to `peer`
    /// (`Connected`), when the process next asks a daemon anything (`held::connected_later`);
    /// here: now.
    fn connected_later(&self, node: u64, _fd: RawFd, id: u64, local: WireAddr, peer: WireAddr) {
        let _ = self.post_fds(node, &Request::Connected { id, local, peer }, &[]);
    }
}

/// The real daemons (see [`crate::node`]).
pub struct Daemons;

impl Control for Daemons {
    fn call_home(&self, req: &Request, fd: Option<RawFd>) -> Result<(Reply, Vec<Fd>), Errno> {
        node::call_home(req, fd)
    }
    fn call(&self, node: u64, req: &Request, fd: Option<RawFd>) -> Result<(Reply, Vec<Fd>), Errno> {
        node::call(node, req, fd)
    }
    fn call_fds(&self, node: u64, req: &Request, fds: &[RawFd]) -> Result<(Reply, Vec<Fd>), Errno> {
        node::call_fds(node, req, fds)
    }
    fn post_fds(&self, node: u64, req: &Request, fds: &[RawFd]) -> Result<(), Errno> {
        node::post_fds(node, req, fds)
    }
    /// TCP sockets (the only kind `wants_virtual` lets through as `SOCK_STREAM`).
    fn register_home(
        &self,
        domain: i32,
        ty: i32,
        protocol: i32,
        flags: i32,
    ) -> Option<Result<(Fd, u64), Errno>> {
        (ty == libc::SOCK_STREAM).then(|| node::register_home(domain, ty, protocol, flags))
    }
    fn post(&self, node: u64, req: &Request) -> Result<(), Errno> {
        node::post(node, req)
    }
    fn table(&self, node: u64) -> Option<Arc<table::Reader>> {
        node::table(node)
    }
    fn lease_port(&self, node: u64) -> Option<u16> {
        node::lease_port(node)
    }
    fn take_register(&self, node: u64, id: u64) -> Option<Request> {
        crate::held::take_register(node, id)
    }
    fn post_two(
        &self,
        node: u64,
        first: &Request,
        second: &Request,
        fds: &[RawFd],
    ) -> Result<(), Errno> {
        node::post_two(node, first, second, fds)
    }
    fn adopt_later(&self, node: u64, fd: RawFd, ino: u64, req: Request) {
        crate::held::adopt_later(node, fd, ino, req)
    }
    fn connected_later(&self, node: u64, fd: RawFd, id: u64, local: WireAddr, peer: WireAddr) {
        crate::held::connected_later(node, fd, id, local, peer)
    }
}

/// A virtual socket: its node and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Virt {
    pub node: u64,
    pub id: u64,
    /// The fd is a kernel listener (`names::listener_name`): accept is the kernel's.
    pub kl: bool,
}

/// Is `fd` a virtual socket? One `getsockname` (or one `fstat` for a kernel listener or one
/// of its connections seen before: `crate::vcache`); anything else (other sockets, files, bad
/// fds) is `None` and goes to the kernel untouched.
pub fn virt(fd: RawFd) -> Option<Virt> {
    if fd < 0 {
        return None;
    }
    if let Some(v) = crate::vcache::get(fd) {
        return Some(v);
    }
    let name = sys::getsockname_unix(fd).ok()??;
    if let Some((node, id)) = names::parse_socket_name(&name) {
        return Some(Virt {
            node,
            id,
            kl: false,
        });
    }
    let (node, id) = names::parse_listener_name(&name)?;
    // A kernel listener, or one of its connections (named as their listener): the peer says
    // which. The daemon hands a TCP connection over from a socket of its own; a cut-through
    // one comes from the connecting application's socket, whose node keeps its record.
    let v = match sys::getpeername_unix(fd) {
        Err(e) if e.0 == libc::ENOTCONN => Some(Virt { node, id, kl: true }),
        Ok(Some(peer)) => {
            let (pnode, pid) = names::parse_socket_name(&peer)?;
            let id = if pnode == node && !ctl::is_client_id(pid) {
                pid
            } else {
                ctl::mirror_id(pid)
            };
            Some(Virt {
                node,
                id,
                kl: false,
            })
        }
        _ => None,
    }?;
    crate::vcache::put(fd, v);
    Some(v)
}

/// Should `socket(domain, ty, protocol)` be virtual? TCP, UDP, ICMP echo and raw ICMPv6
/// over IPv4/IPv6; packet sockets (`crate::packet`).
pub fn wants_virtual(domain: i32, ty: i32, protocol: i32) -> bool {
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    if domain == libc::AF_PACKET {
        return base == libc::SOCK_DGRAM || base == libc::SOCK_RAW;
    }
    (domain == libc::AF_INET || domain == libc::AF_INET6)
        && ((base == libc::SOCK_STREAM && (protocol == 0 || protocol == libc::IPPROTO_TCP))
            || (base == libc::SOCK_DGRAM && crate::dgram::wants(domain, protocol))
            || (base == libc::SOCK_RAW && crate::dgram::wants_raw(domain, protocol)))
}

fn expect_ok(r: Reply) -> Result<(), Errno> {
    match r {
        Reply::Err(e) => Err(e),
        _ => Ok(()),
    }
}

/// Apply `SOCK_NONBLOCK`/`SOCK_CLOEXEC` (of `socket` or `accept4`) to a received fd, which
/// arrives close-on-exec and with whatever status flags the daemon left.
fn apply_flags(fd: &Fd, flags: i32) -> Result<(), Errno> {
    sys::set_nonblocking(fd.raw(), flags & libc::SOCK_NONBLOCK != 0)?;
    if flags & libc::SOCK_CLOEXEC == 0 {
        sys::set_cloexec(fd.raw(), false)?;
    }
    Ok(())
}

/// `socket()` for a virtual socket: the daemon creates it and hands us our end.
pub fn socket(c: &dyn Control, domain: i32, ty: i32, protocol: i32) -> Result<RawFd, Errno> {
    let flags = ty & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    if let Some(r) = c.register_home(domain, ty & !flags, protocol, flags) {
        let (fd, id) = r?;
        crate::fresh::made(id, domain == libc::AF_INET6);
        crate::debug!(
            "socket({domain}, {ty:#x}, {protocol}) = {} (registered)",
            fd.raw()
        );
        return Ok(fd.into_raw());
    }
    let req = Request::Socket {
        domain,
        ty: ty & !flags,
        protocol,
    };
    let (rep, mut fds) = c.call_home(&req, None)?;
    match rep {
        Reply::Created(id) if !fds.is_empty() => {
            let fd = fds.swap_remove(0);
            apply_flags(&fd, flags)?;
            crate::debug!(
                "socket({domain}, {ty:#x}, {protocol}) = {} (id {id})",
                fd.raw()
            );
            Ok(fd.into_raw())
        }
        Reply::Err(e) => Err(e),
        _ => Err(Errno::EPROTO),
    }
}

pub fn bind(c: &dyn Control, v: Virt, addr: WireAddr) -> Result<(), Errno> {
    crate::fresh::forget(v.id);
    let r = c.call(v.node, &Request::Bind { id: v.id, addr }, None)?.0;
    crate::debug!("bind({:?}) -> {r:?}", addr.0);
    expect_ok(r)
}

pub fn listen(c: &dyn Control, v: Virt, fd: RawFd, backlog: i32) -> Result<(), Errno> {
    if v.kl {
        // Listening already (a new backlog).
        sys::listen(fd, backlog)?;
    } else if claims_kernel_listen(v, fd) {
        return listen_kernel(c, v, fd, backlog);
    }
    expect_ok(
        c.call(v.node, &Request::Listen { id: v.id, backlog }, None)?
            .0,
    )?;
    listeners::remember(v);
    Ok(())
}

/// `listen` on a socket the shim made (never connected): it becomes a kernel listener bound
/// to `names::listener_name`, put in the fd's place with `dup3` (the socket was unconnected
/// and is not watched yet: a program adds a listener to its epoll set after `listen`). The
/// daemon hands its TCP connections over by connecting to it, and other nodes' applications
/// connect to it directly (cut-through); `accept` is the kernel's ([`accept_kernel`]).
fn listen_kernel(c: &dyn Control, v: Virt, fd: RawFd, backlog: i32) -> Result<(), Errno> {
    let cloexec = sys::fcntl(fd, libc::F_GETFD, 0)? & libc::FD_CLOEXEC != 0;
    let Some(l) = kernel_listener(c, v, fd, backlog)? else {
        return Ok(());
    };
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    sys::dup3(l.raw(), fd, flags)?;
    crate::debug!("listen({fd}): a kernel listener now");
    Ok(())
}

/// The kernel listener that the fresh socket `fd` (`v`) becomes: bound to its listener name,
/// listening with `backlog`, its daemon told; `fd`'s `O_NONBLOCK`, close-on-exec. The caller
/// puts it in `fd`'s place (`ioth-exec`: in the traced process's table). `None`: `fd`
/// listens through its daemon instead (the listener name was taken). On failure `fd` stays
/// fresh.
pub fn kernel_listener(
    c: &dyn Control,
    v: Virt,
    fd: RawFd,
    backlog: i32,
) -> Result<Option<Fd>, Errno> {
    let fl = sys::fcntl(fd, libc::F_GETFL, 0)?;
    let l = sys::socket(
        libc::AF_UNIX,
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC | (fl & libc::O_NONBLOCK),
        0,
    )?;
    let undo = |e: Errno| {
        let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY, ctl::FRESH_PRIORITY);
        e
    };
    let listen = Request::Listen { id: v.id, backlog };
    match sys::bind_unix(l.raw(), &names::listener_name(v.node, v.id)) {
        Ok(()) => {}
        Err(e) if e == Errno::EADDRINUSE => {
            // Someone took the name (it is public once the socket exists): the socket
            // listens through its daemon instead (accept records; no cut-through to it).
            crate::debug!("listen({fd}): listener name taken: through the daemon");
            expect_ok(c.call(v.node, &listen, Some(fd))?.0).map_err(undo)?;
            listeners::remember(v);
            return Ok(None);
        }
        Err(e) => return Err(undo(e)),
    }
    sys::listen(l.raw(), backlog).map_err(undo)?;
    expect_ok(c.call(v.node, &listen, Some(l.raw()))?.0).map_err(undo)?;
    listeners::remember(Virt { kl: true, ..v });
    Ok(Some(l))
}

/// `listen` on a fresh socket (its mark taken) through its daemon: accept records, as for a
/// socket the daemon made (`ioth-exec`, which must not block in a kernel `accept`).
pub fn listen_through_daemon(
    c: &dyn Control,
    v: Virt,
    fd: RawFd,
    backlog: i32,
) -> Result<(), Errno> {
    let r = c
        .call(v.node, &Request::Listen { id: v.id, backlog }, Some(fd))?
        .0;
    if let Err(e) = expect_ok(r) {
        let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY, ctl::FRESH_PRIORITY);
        return Err(e);
    }
    listeners::remember(v);
    Ok(())
}

/// Whether `listen` on `fd` (`v`) makes a kernel listener ([`kernel_listener`]): a socket the
/// shim made that never connected nor listened (its fresh mark is taken).
pub fn claims_kernel_listen(v: Virt, fd: RawFd) -> bool {
    !v.kl && claim_fresh(v, fd)
}

/// Sockets known to be listening, so that `accept` needs no round trip to tell a listener
/// (records with fds) from a connected socket (data). A socket never stops listening until
/// it is closed, and ids are never reused within a node, so a hit is always right; a miss
/// (never seen, or evicted by a collision) only costs one `SO_ACCEPTCONN` question. Lock-free
/// so that `fork` and signal handlers can never find it locked.
mod listeners {
    use super::Virt;
    use std::sync::atomic::{AtomicU64, Ordering};

    const SLOTS: usize = 256;
    static KEYS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

    fn key(v: Virt) -> u64 {
        (v.node.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ v.id).max(1)
    }

    pub fn remember(v: Virt) {
        let k = key(v);
        KEYS[(k % SLOTS as u64) as usize].store(k, Ordering::Relaxed);
    }

    pub fn known(v: Virt) -> bool {
        let k = key(v);
        KEYS[(k % SLOTS as u64) as usize].load(Ordering::Relaxed) == k
    }
}

/// `accept` on a socket that is not listening is `EINVAL`, as on Linux (and it must not eat
/// the data of a connected socket).
pub fn check_listening(c: &dyn Control, v: Virt) -> Result<(), Errno> {
    if listeners::known(v) {
        return Ok(());
    }
    let req = Request::GetSockOpt {
        id: v.id,
        level: libc::SOL_SOCKET,
        name: libc::SO_ACCEPTCONN,
        len: 4,
    };
    match c.call(v.node, &req, None)?.0 {
        Reply::Bytes(b) if b.len() >= 4 && b[..4] != [0; 4] => {
            listeners::remember(v);
            Ok(())
        }
        Reply::Err(e) => Err(e),
        _ => Err(Errno::EINVAL),
    }
}

/// `accept4` on a virtual listener: one record (with the connection's fd) per connection.
/// `O_NONBLOCK` and `SO_RCVTIMEO` of the listener apply natively; signals give `EINTR`
/// (or a kernel restart under `SA_RESTART`), exactly like the kernel's accept.
pub fn accept(fd: RawFd, flags: i32) -> Result<(RawFd, WireAddr), Errno> {
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let (conn, peer) = take_connection(fd, 0, flags & libc::SOCK_CLOEXEC != 0, true)?;
    // The daemon hands a connection over blocking (its socketpair's app end, or a cut-through
    // peer's end after `F_SETFL 0`): SOCK_NONBLOCK is one F_SETFL (a socket has no other
    // status flag to keep), and close-on-exec came as asked with the descriptor.
    if flags & libc::SOCK_NONBLOCK != 0 {
        sys::fcntl(conn.raw(), libc::F_SETFL, libc::O_NONBLOCK as libc::c_long)?;
    } else {
        sys::set_nonblocking(conn.raw(), false)?;
    }
    crate::cork::stream(conn.raw(), peer.1);
    crate::debug!("accept({fd}) = {} from {:?}", conn.raw(), peer.0);
    Ok((conn.into_raw(), peer.0))
}

/// `accept4` on a kernel listener (`listen_kernel`): the kernel's accept, then the
/// connection's record (`AcceptRecord`: its addresses), which whoever connected wrote first
/// (the daemon, or the connecting node's daemon for a cut-through connection). A connection
/// from anyone else (the listener's name is public: another user may connect to it), or
/// without a record, is closed and the next one taken.
pub fn accept_kernel(
    c: &dyn Control,
    v: Virt,
    fd: RawFd,
    flags: i32,
) -> Result<(RawFd, WireAddr), Errno> {
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let (conn, peer) = take_kernel_connection(c, v, fd, flags, true)?;
    crate::cork::stream(conn.raw(), peer.1);
    crate::debug!("accept({fd}) = {} from {:?}", conn.raw(), peer.0.0);
    Ok((conn.into_raw(), peer.0))
}

/// One connection from the kernel listener `fd` (`v`) with `accept4` `flags`: with its
/// record read, and for a cut-through one, our daemon told of it (`Adopt`; if `later`, when
/// the process next asks a daemon anything: `Control::adopt_later`). Its peer address and
/// id.
pub fn take_kernel_connection(
    c: &dyn Control,
    v: Virt,
    fd: RawFd,
    flags: i32,
    later: bool,
) -> Result<(Fd, (WireAddr, u64)), Errno> {
    loop {
        let conn = sys::accept(fd, flags)?;
        match connection_record(conn.raw()) {
            Some(rec) => {
                // The send buffer of a stack's socket (`ctl::APP_SOCKBUF`), not a unix
                // socket's default (about 200 KiB), which would halve a bulk download.
                let _ = sys::setsockopt_int(
                    conn.raw(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    ctl::APP_SOCKBUF,
                );
                if rec.id & ctl::MIRROR_BIT != 0 {
                    // A cut-through connection: our daemon keeps its record.
                    let ino = sys::fstat_id(conn.raw()).map_or(0, |i| i.1);
                    let req = Request::Adopt {
                        id: rec.id,
                        lid: v.id,
                        local: rec.local,
                        peer: rec.peer,
                        ino,
                    };
                    if later {
                        c.adopt_later(v.node, conn.raw(), ino, req);
                    } else {
                        let _ = c.post_fds(v.node, &req, &[]);
                    }
                }
                return Ok((conn, (rec.peer, rec.id)));
            }
            None => crate::debug!("accept({fd}): a connection without a record: closed"),
        }
    }
}

/// The record at the head of a connection accepted from a kernel listener, if it came from
/// root or our own user (a daemon) and says where the connection is from. Whoever connected
/// wrote it right after connecting: it is there, or about to be (waited for up to 1 s).
pub fn connection_record(conn: RawFd) -> Option<AcceptRecord> {
    match sys::peer_cred(conn) {
        Ok((_, uid, _)) if uid == 0 || uid == sys::geteuid() => {}
        _ => return None,
    }
    let mut buf = [0u8; ACCEPT_RECORD_LEN];
    let mut got = 0;
    let mut waited = false;
    while got < buf.len() {
        match sys::recv(conn, &mut buf[got..], libc::MSG_DONTWAIT) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(e) if e == Errno::EINTR => {}
            Err(e) if e.is_again() && !waited => {
                waited = true;
                if !sys::wait_fd(conn, libc::POLLIN, 1000).unwrap_or(false) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    AcceptRecord::decode(&buf).ok()
}

/// One connection from the listener fd `fd` (its accept record and fd, as the daemon queued
/// them); `recv_flags` e.g. `MSG_DONTWAIT` (`EAGAIN` if none is queued); the fd close-on-exec
/// if `cloexec`.
///
/// Out of descriptors, it fails with `EMFILE` and leaves the connection queued, as the
/// kernel's accept does: a record received into a full table would lose its fd (the kernel
/// closes what does not fit, `MSG_CTRUNC`), so the table is checked first (a `dup` of the
/// listener, closed at once). An error record from the daemon (it had no descriptor for the
/// connection) fails this one call with its errno.
///
/// A listener whose daemon end closed (the daemon and its keeper are both gone: the node is
/// dead for good) fails with `EINVAL`; if `own` (`fd` is the application's own descriptor,
/// as in the preload shim) it is also made quiet ([`quiet_dead_listener`]).
pub fn take_connection(
    fd: RawFd,
    recv_flags: i32,
    cloexec: bool,
    own: bool,
) -> Result<(Fd, (WireAddr, u64)), Errno> {
    let probe = sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0)?;
    sys::close(probe);
    let mut buf = [0u8; ACCEPT_RECORD_LEN];
    let got = sys::recvmsg_fds(fd, &mut [IoSliceMut::new(&mut buf)], recv_flags, cloexec)?;
    if got.len == 0 && got.fds.is_empty() {
        // The daemon closed its end: the listener is gone (as after a shutdown).
        if own {
            quiet_dead_listener(fd);
        }
        return Err(Errno::EINVAL);
    }
    if let Some(e) = AcceptRecord::decode_error(&buf[..got.len]) {
        return Err(e);
    }
    if got.flags & libc::MSG_CTRUNC != 0 {
        // Another thread took the last free descriptor since the check: this one is lost.
        return Err(Errno(libc::EMFILE));
    }
    let mut fds = got.fds;
    let rec = match AcceptRecord::decode(&buf[..got.len]) {
        Ok(r) if !fds.is_empty() => r,
        _ => return Err(Errno(libc::ECONNABORTED)),
    };
    Ok((fds.swap_remove(0), (rec.peer, rec.id)))
}

/// Replace the listener `fd`, whose daemon end closed for good, with a socket that never
/// becomes readable: the old one polls readable (EOF) forever, so a program waiting for
/// connections in poll or epoll (nginx) would call accept in a loop at full CPU, and log
/// each failure. A kernel listener never ends by itself; this one now stays quiet, as a
/// listener on a network that went away. The replacement is an unnamed `AF_UNIX` datagram
/// socket (no peer, so no hang-up) with the listener's `O_NONBLOCK` and close-on-exec;
/// `dup3` swaps it in atomically, under the same number, and the program's epoll forgets
/// the old file. Only if `fd` is still that listener (same inode: another thread may have
/// closed the number since); other processes sharing the listener do the same at their
/// own next accept.
fn quiet_dead_listener(fd: RawFd) {
    let Ok(before) = sys::fstat_id(fd) else {
        return;
    };
    let fl = sys::fcntl(fd, libc::F_GETFL, 0).unwrap_or(0);
    let cloexec = sys::fcntl(fd, libc::F_GETFD, 0).is_ok_and(|f| f & libc::FD_CLOEXEC != 0);
    let Ok(q) = sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) else {
        return;
    };
    let _ = sys::fcntl(
        q.raw(),
        libc::F_SETFL,
        (fl & libc::O_NONBLOCK) as libc::c_long,
    );
    if sys::fstat_id(fd) == Ok(before) {
        forget_in_epolls(fd, before.1);
        let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
        if sys::dup3(q.raw(), fd, flags).is_ok() {
            crate::debug!("accept({fd}): the node is gone; the listener is now quiet");
        }
    }
}

/// Take `fd` (socket inode `ino`) out of every epoll set of this process that watches it.
/// An epoll set watches the open file, not the number: the file lives on while another
/// process holds it (nginx's master holds its workers' listeners), so replacing the number
/// would leave the set reporting the old file's hang-up under the number forever. The sets
/// are found as the kernel lists them, in `/proc/self/fdinfo` (`tfd:` lines).
fn forget_in_epolls(fd: RawFd, ino: u64) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for e in dir.flatten() {
        let is_epoll =
            std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:[eventpoll]");
        let Some(ep) = e.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
            continue;
        };
        if !is_epoll {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{ep}")) else {
            continue;
        };
        if epoll_watches(&info, fd, ino) {
            let _ = sys::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, 0, 0);
        }
    }
}

/// Whether an epoll fd's `fdinfo` text lists `fd` with inode `ino` (`tfd: N ... ino:HEX`).
fn epoll_watches(info: &str, fd: RawFd, ino: u64) -> bool {
    info.lines().any(|l| {
        let mut w = l.split_whitespace();
        w.next() == Some("tfd:")
            && w.next().and_then(|n| n.parse::<RawFd>().ok()) == Some(fd)
            && w.any(|t| {
                t.strip_prefix("ino:")
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    == Some(ino)
            })
    })
}

/// `SO_SNDTIMEO` of the fd as a poll timeout (-1: none).
fn send_timeout_ms(fd: RawFd) -> i32 {
    let mut b = [0u8; 16];
    match sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &mut b) {
        Ok(16) => {
            let sec = i64::from_ne_bytes(b[0..8].try_into().unwrap_or([0; 8]));
            let usec = i64::from_ne_bytes(b[8..16].try_into().unwrap_or([0; 8]));
            let ms = sec.saturating_mul(1000).saturating_add((usec + 999) / 1000);
            if ms <= 0 {
                -1
            } else {
                ms.min(i32::MAX as i64) as i32
            }
        }
        _ => -1,
    }
}

/// `SO_ERROR` as the daemon reports it ([`lost_error`] for a socket it does not know).
pub fn so_error(c: &dyn Control, v: Virt, fd: RawFd) -> Result<i32, Errno> {
    lost_error(socket_int(c, v, libc::SO_ERROR), fd)
}

/// A daemon's `EBADF` about a TCP socket of ours whose daemon end is gone (`POLLHUP`): the
/// socket was lost with a daemon that died (its registration, or its connect, went to that
/// daemon; the keeper's new one never heard of it). It reads as a reset connection, as a
/// kernel socket's would whose stack dropped it: `ECONNRESET`, not an `EBADF` for a live
/// descriptor.
fn lost_error(r: Result<i32, Errno>, fd: RawFd) -> Result<i32, Errno> {
    match r {
        Err(e) if e == Errno::EBADF && daemon_end_gone(fd) => Ok(libc::ECONNRESET),
        r => r,
    }
}

/// The app's end of a TCP socket shows `POLLHUP`: its daemon end is closed.
fn daemon_end_gone(fd: RawFd) -> bool {
    stream_socket(fd) && shut_events(fd).is_some_and(|r| r & libc::POLLHUP != 0)
}

/// Whether `fd` is a stream socket (`SO_TYPE`).
fn stream_socket(fd: RawFd) -> bool {
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) == Ok(libc::SOCK_STREAM)
}

/// What `fd` shows of shutdowns now (`poll` for `POLLRDHUP`, no wait): its events (0 for
/// none: `POLLHUP` is both directions shut, `POLLRDHUP` the receiving one), `None` if
/// `poll` fails.
fn shut_events(fd: RawFd) -> Option<i16> {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    }];
    match sys::poll(&mut p, 0) {
        Ok(0) => Some(0),
        Ok(_) => Some(p[0].revents),
        Err(_) => None,
    }
}

/// An integer `SOL_SOCKET` option `name` as the daemon reports it.
fn socket_int(c: &dyn Control, v: Virt, name: i32) -> Result<i32, Errno> {
    let req = Request::GetSockOpt {
        id: v.id,
        level: libc::SOL_SOCKET,
        name,
        len: 4,
    };
    match c.call(v.node, &req, None)?.0 {
        Reply::Bytes(b) if b.len() >= 4 => Ok(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
        Reply::Err(e) => Err(e),
        _ => Err(Errno::EPROTO),
    }
}

/// Wait for a blocking connect to end: a blocking `read` of the waiter socket, whose other end
/// the daemon holds until the handshake ends. A `read` is what makes signals behave as in the
/// kernel's connect: restarted under `SA_RESTART` (the kernel restarts the system call),
/// `EINTR` otherwise, and `EINTR` whenever `SO_SNDTIMEO` is set (copied to the waiter as
/// `SO_RCVTIMEO`); the time limit gives `EINPROGRESS`.
fn wait_connect(fd: RawFd, waiter: Option<Fd>) -> Result<(), Errno> {
    let timeout = send_timeout_ms(fd);
    if let Some(w) = waiter {
        let mut tv = [0u8; 16];
        if timeout > 0
            && sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &mut tv) == Ok(16)
        {
            sys::setsockopt_bytes(w.raw(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
        }
        let mut b = [0u8; 1];
        match sys::read(w.raw(), &mut b) {
            Ok(_) => {}
            Err(e) if e.is_again() => return Err(Errno(libc::EINPROGRESS)),
            Err(e) => return Err(e),
        }
        // A daemon that ignores the waiter drops it at once: then poll as below.
        if sys::wait_fd(fd, libc::POLLOUT, 0)? {
            return Ok(());
        }
    }
    if !sys::wait_fd(fd, libc::POLLOUT, timeout)? {
        return Err(Errno(libc::EINPROGRESS));
    }
    Ok(())
}

/// Whether `fd` is a registered socket that never connected or listened, which from now on
/// it is not: its mark (`ctl::FRESH_PRIORITY` in the kernel fd's `SO_PRIORITY`) is cleared.
fn claim_fresh(v: Virt, fd: RawFd) -> bool {
    if !ctl::is_client_id(v.id) {
        return false;
    }
    match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY) {
        Ok(p) if p & ctl::FRESH_PRIORITY != 0 => {
            let p = p & !ctl::FRESH_PRIORITY;
            sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY, p).is_ok()
        }
        _ => false,
    }
}

/// The `SO_PRIORITY` of a cut-through connection's fd (the accepted end: `ctl::MIRROR_BIT`
/// in its id; the connecting one: `ctl::CUT_PRIORITY` in that value), where the shim keeps
/// its `TCP_NODELAY`; `None` for any other socket.
fn cut_priority(v: Virt, fd: RawFd) -> Option<i32> {
    if !ctl::is_client_id(v.id) {
        return None;
    }
    let p = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY).ok()?;
    (v.id & ctl::MIRROR_BIT != 0 || p & ctl::CUT_PRIORITY != 0).then_some(p)
}

/// `TCP_NODELAY` of a cut-through connection, kept in its fd's `SO_PRIORITY`: that value, or
/// `None` (another option or socket: the daemon's). Nagle means nothing on a unix socket;
/// nginx and wrk set it on every connection, a request to the daemon each.
fn cut_nodelay(v: Virt, fd: RawFd, level: i32, name: i32) -> Option<i32> {
    if level != libc::IPPROTO_TCP || name != libc::TCP_NODELAY {
        return None;
    }
    cut_priority(v, fd)
}

/// `TCP_CORK` on a TCP socket: its current setting, kept by the process ([`crate::cork`]),
/// never sent to the daemon. `None` for any other option or socket.
fn local_cork(v: Virt, fd: RawFd, level: i32, name: i32) -> Option<bool> {
    if level == libc::IPPROTO_TCP && name == libc::TCP_CORK {
        crate::cork::get(fd, v.id)
    } else {
        None
    }
}

/// A first connect made here, with no round trip, where the daemon's connect table
/// (`ioth_common::table`) says what the daemon would do: `None` where it does not (ask the
/// daemon). Straight to another node's kernel listener (cut-through), for a plain socket
/// (`crate::fresh`: nothing asked of it that the daemon would have to apply); or, not
/// blocking, through the door and TCP (`ConnectAsync`).
fn connect_direct(
    c: &dyn Control,
    v: Virt,
    fd: RawFd,
    addr: WireAddr,
    blocking: bool,
    plain: Option<crate::fresh::Plain>,
) -> Option<Result<(), Errno>> {
    let sa = addr.0?;
    let ip = sa.ip();
    // (The node's loopback is in the table too: its own listeners.)
    if sa.port() == 0 || ip.is_unspecified() || ip.is_multicast() {
        return None;
    }
    if let IpAddr::V6(a) = ip
        && a.to_ipv4_mapped().is_some()
    {
        return None;
    }
    let t = c.table(v.node)?;
    match t.lookup(ip, sa.port(), table::pick(v.id)) {
        Found::Listener(e) => {
            let plain = plain.filter(|p| p.inet6 == ip.is_ipv6())?;
            // Connected already; a non-blocking connect still says EINPROGRESS, as the
            // kernel's to another host does (the fd is writable at once).
            let done = if blocking {
                Ok(())
            } else {
                Err(Errno(libc::EINPROGRESS))
            };
            connect_listener(c, v, fd, e, plain.nodelay).map(|r| r.and(done))
        }
        Found::NoCut if !blocking => connect_through_door(c, v, fd, addr),
        _ => None,
    }
}

/// Cut-through made here: connect `fd` to the kernel listener of table entry `e`, write the
/// accepting side's record, and tell our daemon (one way) what it would have recorded.
fn connect_listener(
    c: &dyn Control,
    v: Virt,
    fd: RawFd,
    e: table::Entry,
    nodelay: bool,
) -> Option<Result<(), Errno>> {
    // The accepting application takes connections from root and its own user only.
    let me = sys::geteuid();
    if me != 0 && me != e.uid {
        return None;
    }
    let port = c.lease_port(v.node)?;
    let local = SocketAddr::new(e.src, port);
    let peer = SocketAddr::new(e.dst, e.port);
    let rec = AcceptRecord {
        id: ctl::mirror_id(v.id),
        local: WireAddr::presented(peer, e.inet6),
        peer: WireAddr::presented(local, e.inet6),
    }
    .encode();
    // As the daemon's cut_direct: a TCP socket's send buffer, TCP_NODELAY kept in the fd.
    // All before the connect: the accepting application may wait for the record from the
    // moment the connect returns, so only the owner check comes between the two.
    let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, ctl::APP_SOCKBUF);
    let prio = ctl::CUT_PRIORITY | if nodelay { ctl::NODELAY_PRIORITY } else { 0 };
    let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY, prio);
    // (A full backlog, a listener gone: the daemon decides, as if we had not tried.)
    if sys::connect_unix(fd, &names::listener_name(e.node, e.lid)).is_err() {
        let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY, 0);
        return None;
    }
    // A listener's name is anyone's once it closed: who listens there must be its user.
    if !sys::listened_by(fd, e.uid) {
        let _ = sys::shutdown(fd, libc::SHUT_RDWR);
        return Some(Err(Errno::ECONNREFUSED));
    }
    let _ = sys::send(fd, &rec, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
    let (local, peer) = (WireAddr(Some(local)), WireAddr(Some(peer)));
    c.connected_later(v.node, fd, v.id, local, peer);
    Some(Ok(()))
}

/// A non-blocking connect through TCP with no round trip: `fd` connects to the node's door
/// (where the daemon takes its other end), is made unwritable (tiny `SO_SNDBUF`, filler),
/// and the daemon is told one way (`ConnectAsync`).
fn connect_through_door(
    c: &dyn Control,
    v: Virt,
    fd: RawFd,
    addr: WireAddr,
) -> Option<Result<(), Errno>> {
    sys::connect_unix(fd, &names::node_door_name(v.node)).ok()?;
    let count = match sys::fill_send_buffer(fd) {
        Ok(n) => n,
        Err(e) => return Some(Err(e)),
    };
    let req = Request::ConnectAsync {
        id: v.id,
        addr,
        filler: count as u32,
    };
    // A registration still held goes first, without the fd, which comes with this.
    let sent = match c.take_register(v.node, v.id) {
        Some(reg) => c.post_two(v.node, &reg, &req, &[fd]),
        None => c.post_fds(v.node, &req, &[fd]),
    };
    Some(sent.and(Err(Errno(libc::EINPROGRESS))))
}

/// `connect`: the daemon starts the handshake and holds the fd unwritable until it ends.
pub fn connect(c: &dyn Control, v: Virt, fd: RawFd, addr: WireAddr) -> Result<(), Errno> {
    let fl = sys::fcntl(fd, libc::F_GETFL, 0)?;
    let blocking = fl & libc::O_NONBLOCK == 0;
    // A socket the shim made and never connected is connected by the daemon, blocking or
    // not (one round trip): to a listener of another node's (cut-through, connected at
    // once: `Ok`), or to its own door (TCP).
    let fresh = claim_fresh(v, fd);
    if fresh {
        let plain = crate::fresh::take(v.id);
        if let Some(r) = connect_direct(c, v, fd, addr, blocking, plain) {
            crate::debug!("connect({fd}, {:?}) made here -> {r:?}", addr.0);
            return r;
        }
    }
    let pair = if blocking {
        sys::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC).ok()
    } else {
        None
    };
    let mut fds = vec![fd];
    fds.extend(pair.as_ref().map(|p| p.1.raw()));
    let mut r = Reply::Ok;
    // "Not yet" (the daemon waits to hear from the peer, a few milliseconds the first time,
    // at most a few hundred): ask again.
    for _ in 0..1000 {
        r = c
            .call_fds(v.node, &Request::Connect { id: v.id, addr }, &fds)?
            .0;
        if !matches!(r, Reply::Err(e) if e.0 == ctl::E_CUT_WAIT) {
            break;
        }
        let _ = sys::poll(&mut [], 1);
    }
    if matches!(r, Reply::Err(e) if e.0 == ctl::E_CUT_WAIT) {
        r = Reply::Err(Errno(libc::ETIMEDOUT));
    }
    // Only the daemon's copy of the waiter's other end may stay open.
    let waiter = pair.map(|(w, _)| w);
    crate::debug!("connect({fd}, {:?}) -> {r:?}", addr.0);
    match r {
        Reply::Err(e) if e.0 == libc::EINPROGRESS => {}
        // A connect already under way (one a signal interrupted): a blocking connect waits
        // for its outcome, as Linux does; a non-blocking one says EALREADY.
        Reply::Err(e) if e.0 == libc::EALREADY && blocking => {}
        // Cut through: connected already. A non-blocking connect still says EINPROGRESS,
        // as the kernel's to another host does (the fd is writable at once).
        Reply::Ok if fresh && !blocking => return Err(Errno(libc::EINPROGRESS)),
        r => return expect_ok(r),
    }
    if !blocking {
        return Err(Errno(libc::EINPROGRESS));
    }
    wait_connect(fd, waiter)?;
    // The connect ended; without a shutdown on our end it succeeded (`no_error_pending`),
    // which needs no round trip.
    let err = if no_error_pending(fd) {
        Ok(0)
    } else {
        so_error(c, v, fd)
    };
    crate::debug!("connect({fd}) finished: SO_ERROR {err:?}");
    match err? {
        0 => Ok(()),
        e => Err(Errno(e)),
    }
}

/// `getsockname` (`peer == false`) or `getpeername`.
pub fn name(c: &dyn Control, v: Virt, fd: RawFd, peer: bool) -> Result<WireAddr, Errno> {
    let req = if peer {
        Request::GetPeerName { id: v.id }
    } else {
        Request::GetSockName { id: v.id }
    };
    match ask(c, v, fd, &req)? {
        Reply::Addr(a) => Ok(a),
        Reply::Err(e) => Err(e),
        _ => Err(Errno::EPROTO),
    }
}

/// A request about socket `v` (at `fd`). An accepted cut-through connection our daemon has
/// no record of (`EBADF`) gets one first ([`adopt_from_peer`]), and is asked about again.
fn ask(c: &dyn Control, v: Virt, fd: RawFd, req: &Request) -> Result<Reply, Errno> {
    let r = c.call(v.node, req, None)?.0;
    if v.id & ctl::MIRROR_BIT != 0 && r == Reply::Err(Errno::EBADF) && adopt_from_peer(c, v, fd) {
        return Ok(c.call(v.node, req, None)?.0);
    }
    Ok(r)
}

/// The record of an accepted cut-through connection (`v`, at `fd`) that our daemon lacks:
/// the process that accepted it held it back (`held::adopt_later`), then `exec`ed or
/// passed the fd on. It is made as the accepting shim would have, from the connecting
/// node's record of the other end (the peer's name says which: our peer is its local
/// address, and the other way round), as our listener presents IPv4 peers.
fn adopt_from_peer(c: &dyn Control, v: Virt, fd: RawFd) -> bool {
    let name = |n: Result<Option<sys::UnixAddr>, Errno>| n.ok().flatten();
    let Some((cnode, cid)) =
        name(sys::getpeername_unix(fd)).and_then(|n| names::parse_socket_name(&n))
    else {
        return false;
    };
    let Some((node, lid)) =
        name(sys::getsockname_unix(fd)).and_then(|n| names::parse_listener_name(&n))
    else {
        return false;
    };
    if node != v.node || ctl::mirror_id(cid) != v.id {
        return false;
    }
    let addr = |req: Request| match c.call(cnode, &req, None) {
        Ok((Reply::Addr(WireAddr(Some(a))), _)) => Some(a),
        _ => None,
    };
    let (Some(theirs), Some(ours)) = (
        addr(Request::GetSockName { id: cid }),
        addr(Request::GetPeerName { id: cid }),
    ) else {
        return false;
    };
    let listener = Virt {
        node,
        id: lid,
        kl: true,
    };
    let inet6 = socket_int(c, listener, libc::SO_DOMAIN) == Ok(libc::AF_INET6);
    let req = Request::Adopt {
        id: v.id,
        lid,
        local: WireAddr::presented(ours, inet6),
        peer: WireAddr::presented(theirs, inet6),
        ino: sys::fstat_id(fd).map_or(0, |i| i.1),
    };
    c.post_fds(node, &req, &[]).is_ok()
}

/// The error a `read` that met end of stream on `fd` must give instead of EOF: a virtual TCP
/// socket whose connection was reset (or timed out) before its FIN came gives `ECONNRESET`
/// (`ETIMEDOUT`) once, as Linux's `read` does (`ctl::SO_IOTH_READ_ERROR`). The daemon shuts
/// the pair down both ways only then (or after a failed connect), which shows as `POLLHUP`:
/// an ordinary EOF (a FIN: the pair shut one way; a file, whose poll never says `POLLHUP`)
/// costs one `poll`, a closed pipe or a closed cut-through connection also a `getpeername`
/// (a cut-through connection's peer is the other application's end, a name of ours, whose
/// close the kernel already reports as Linux's TCP would: no round trip). What remains (a reset, or the app had shut its own
/// sending side) asks the daemon.
pub fn read_error(c: &dyn Control, fd: RawFd) -> Option<Errno> {
    if shut_events(fd).is_none_or(|r| r & libc::POLLHUP == 0) {
        return None;
    }
    // A pipe or another kind of socket fails here; a cut-through peer has a name of ours:
    // the connecting socket's, or, seen from there, the kernel listener's (which the
    // accepted end shares).
    let peer = sys::getpeername_unix(fd).ok()?;
    if peer.is_some_and(|n| {
        names::parse_socket_name(&n).is_some() || names::parse_listener_name(&n).is_some()
    }) {
        return None;
    }
    let e = lost_error(
        socket_int(c, virt(fd)?, ioth_common::ctl::SO_IOTH_READ_ERROR),
        fd,
    )
    .ok()?;
    (e != 0).then_some(Errno(e))
}

/// Whether a TCP socket's `SO_ERROR` is 0 for sure, known from its kernel fd alone: the
/// daemon sets a TCP socket's error only together with shutting its end of the pair down
/// both ways (a failed connect, a reset, a timeout), which the app's end shows as `POLLHUP`,
/// and a failed connect's fd becomes writable only after that. While neither that nor
/// `POLLRDHUP`/`POLLERR` shows, there is no error to report or clear, and the answer needs no
/// round trip (a program polling thousands of non-blocking connects asks once per
/// connection). Anything else, and datagram sockets (ICMP errors), ask.
fn no_error_pending(fd: RawFd) -> bool {
    stream_socket(fd) && shut_events(fd) == Some(0)
}

/// Options that live on the application's kernel fd.
fn native_option(level: i32, name: i32) -> bool {
    level == libc::SOL_SOCKET && (name == libc::SO_RCVTIMEO || name == libc::SO_SNDTIMEO)
}

/// `getsockopt`; returns at most `len` bytes of the value.
pub fn getsockopt(
    c: &dyn Control,
    v: Virt,
    fd: RawFd,
    level: i32,
    name: i32,
    len: usize,
) -> Result<Vec<u8>, Errno> {
    if let Some(on) = local_cork(v, fd, level, name) {
        let mut b = (on as i32).to_ne_bytes().to_vec();
        b.truncate(len);
        return Ok(b);
    }
    if let Some(p) = cut_nodelay(v, fd, level, name) {
        let mut b = i32::from(p & ctl::NODELAY_PRIORITY != 0)
            .to_ne_bytes()
            .to_vec();
        b.truncate(len);
        return Ok(b);
    }
    if native_option(level, name) {
        let mut b = vec![0u8; len.min(64)];
        let n = sys::getsockopt_bytes(fd, level, name, &mut b)?;
        b.truncate(n);
        return Ok(b);
    }
    if level == libc::SOL_SOCKET && name == libc::SO_ERROR {
        let known = if no_error_pending(fd) {
            Some(0)
        } else {
            // A datagram socket's ICMP error waits as a record on its socketpair.
            crate::dgram::take_error(fd)
        };
        if let Some(e) = known {
            let mut b = e.to_ne_bytes().to_vec();
            b.truncate(len);
            return Ok(b);
        }
    }
    let req = Request::GetSockOpt {
        id: v.id,
        level,
        name,
        len: len.min(ioth_common::ctl::MAX_OPT) as u32,
    };
    match ask(c, v, fd, &req)? {
        Reply::Bytes(mut b) => {
            b.truncate(len);
            Ok(b)
        }
        Reply::Err(e) if level == libc::SOL_SOCKET && name == libc::SO_ERROR => {
            let mut b = lost_error(Err(e), fd)?.to_ne_bytes().to_vec();
            b.truncate(len);
            Ok(b)
        }
        Reply::Err(e) => Err(e),
        _ => Err(Errno::EPROTO),
    }
}

pub fn setsockopt(
    c: &dyn Control,
    v: Virt,
    fd: RawFd,
    level: i32,
    name: i32,
    value: &[u8],
) -> Result<(), Errno> {
    if native_option(level, name) {
        return sys::setsockopt_bytes(fd, level, name, value);
    }
    if value.len() > ioth_common::ctl::MAX_OPT {
        return Err(Errno::EINVAL);
    }
    if value.len() >= 4 && local_cork(v, fd, level, name).is_some() {
        let on = i32::from_ne_bytes([value[0], value[1], value[2], value[3]]) != 0;
        crate::cork::set(v.id, on);
        return Ok(());
    }
    if value.len() >= 4
        && let Some(p) = cut_nodelay(v, fd, level, name)
    {
        let on = i32::from_ne_bytes([value[0], value[1], value[2], value[3]]) != 0;
        let p = if on {
            p | ctl::NODELAY_PRIORITY
        } else {
            p & !ctl::NODELAY_PRIORITY
        };
        return sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY, p);
    }
    // A cut-through connection's send buffer is its kernel socket's, as a TCP socket's is:
    // resized there (with the kernel's checks: `SO_SNDBUFFORCE` needs `CAP_NET_ADMIN`), and
    // the daemon keeps the value for `getsockopt`.
    if level == libc::SOL_SOCKET
        && (name == libc::SO_SNDBUF || name == libc::SO_SNDBUFFORCE)
        && cut_priority(v, fd).is_some()
    {
        sys::setsockopt_bytes(fd, level, name, value)?;
    }
    // What a connect made here must know (`connect_direct`).
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_SNDBUF | libc::SO_SNDBUFFORCE) => crate::fresh::forget(v.id),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) if value.len() >= 4 => {
            let on = i32::from_ne_bytes([value[0], value[1], value[2], value[3]]) != 0;
            crate::fresh::nodelay(v.id, on);
        }
        _ => {}
    }
    let req = Request::SetSockOpt {
        id: v.id,
        level,
        name,
        value: value.to_vec(),
    };
    // nginx sets TCP_NODELAY on keep-alive connections: it cannot fail on a TCP socket (a
    // SOCK_STREAM pair), so it goes without waiting for the daemon. (The stream mark is made
    // by the hooks that make or receive a virtual socket, and cleared by those that make a
    // datagram one at its number.)
    if level == libc::IPPROTO_TCP
        && name == libc::TCP_NODELAY
        && value.len() >= 4
        && (crate::dgram::is_stream(fd) || stream_socket(fd))
    {
        return c.post(v.node, &req);
    }
    expect_ok(ask(c, v, fd, &req)?)
}

/// `shutdown`: tell the daemon (it knows whether the socket is connected), then shut the
/// kernel fd down, which is what the daemon acts on.
pub fn shutdown(c: &dyn Control, v: Virt, fd: RawFd, how: i32) -> Result<(), Errno> {
    if !(libc::SHUT_RD..=libc::SHUT_RDWR).contains(&how) {
        return Err(Errno::EINVAL);
    }
    expect_ok(ask(c, v, fd, &Request::Shutdown { id: v.id, how })?)?;
    match sys::shutdown(fd, how) {
        // The daemon may already have shut its end down both ways (reset).
        Err(e) if e.0 == libc::ENOTCONN => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ioth_common::sys::UnixAddr;
    use std::cell::RefCell;
    use std::io::IoSlice;

    /// Answers from a script; records the requests.
    struct Fake {
        replies: RefCell<Vec<(Reply, Option<Fd>)>>,
        seen: RefCell<Vec<(u64, Request, bool)>>,
    }

    impl Fake {
        fn new(mut replies: Vec<(Reply, Option<Fd>)>) -> Fake {
            replies.reverse();
            Fake {
                replies: RefCell::new(replies),
                seen: RefCell::new(Vec::new()),
            }
        }
        fn next(&self) -> Result<(Reply, Vec<Fd>), Errno> {
            let (r, fd) = self.replies.borrow_mut().pop().expect("unexpected request");
            Ok((r, fd.into_iter().collect()))
        }
    }

    impl Control for Fake {
        fn call_home(&self, req: &Request, fd: Option<RawFd>) -> Result<(Reply, Vec<Fd>), Errno> {
            self.seen.borrow_mut().push((0, req.clone(), fd.is_some()));
            self.next()
        }
        fn call(
            &self,
            node: u64,
            req: &Request,
            fd: Option<RawFd>,
        ) -> Result<(Reply, Vec<Fd>), Errno> {
            self.seen
                .borrow_mut()
                .push((node, req.clone(), fd.is_some()));
            self.next()
        }
    }

    fn pair() -> (Fd, Fd) {
        sys::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC).unwrap()
    }

    fn named_pair(node: u64, id: u64) -> (Fd, Fd) {
        let (a, b) = pair();
        let name = names::socket_name(node, id ^ (sys::random_u64() & 0xffff_0000));
        sys::bind_unix(a.raw(), &name).unwrap();
        (a, b)
    }

    #[test]
    fn socket_applies_type_flags_and_strips_them_from_the_request() {
        let (app, _dmn) = named_pair(7, 1);
        let f = Fake::new(vec![(Reply::Created(1), Some(app))]);
        let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK;
        let fd = socket(&f, libc::AF_INET6, ty, 0).unwrap();
        let fl = sys::fcntl(fd, libc::F_GETFL, 0).unwrap();
        assert_ne!(fl & libc::O_NONBLOCK, 0);
        let fdfl = sys::fcntl(fd, libc::F_GETFD, 0).unwrap();
        assert_eq!(fdfl & libc::FD_CLOEXEC, 0, "no SOCK_CLOEXEC asked");
        assert!(virt(fd).is_some_and(|v| v.node == 7));
        sys::close(fd);
        let seen = f.seen.borrow();
        assert_eq!(
            seen[0].1,
            Request::Socket {
                domain: libc::AF_INET6,
                ty: libc::SOCK_STREAM,
                protocol: 0
            }
        );
    }

    #[test]
    fn errors_pass_through_and_non_virtual_fds_are_not_ours() {
        let f = Fake::new(vec![(Reply::Err(Errno::EADDRINUSE), None)]);
        let v = Virt {
            node: 3,
            id: 9,
            kl: false,
        };
        assert_eq!(bind(&f, v, WireAddr(None)), Err(Errno::EADDRINUSE));
        assert_eq!(f.seen.borrow()[0].0, 3);
        let (a, _b) = pair();
        assert_eq!(virt(a.raw()), None);
        assert_eq!(virt(-1), None);
        let other = UnixAddr::Abstract(format!("not-ioth/{}", sys::random_u64()).into_bytes());
        let (c, _d) = pair();
        sys::bind_unix(c.raw(), &other).unwrap();
        assert_eq!(virt(c.raw()), None);
    }

    #[test]
    fn epoll_fdinfo_lines_name_fd_and_inode() {
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1039\n\
                    tfd:        4 events:       19 data:                4  pos:0 ino:1f21e0 sdev:9\n\
                    tfd:       12 events:       19 data:                c  pos:0 ino:10 sdev:9\n";
        assert!(epoll_watches(info, 4, 0x1f21e0));
        assert!(epoll_watches(info, 12, 0x10));
        assert!(
            !epoll_watches(info, 4, 0x10),
            "the number with another file"
        );
        assert!(!epoll_watches(info, 5, 0x1f21e0));
        assert!(
            !epoll_watches(info, 1039, 1039),
            "the epoll fd's own inode line"
        );
    }

    #[test]
    fn accept_takes_one_record_and_its_fd() {
        let (listener, dmn) = pair();
        sys::set_nonblocking(listener.raw(), true).unwrap();
        assert_eq!(accept(listener.raw(), 0).err(), Some(Errno::EAGAIN));
        let (conn, peer_end) = pair();
        let rec = AcceptRecord {
            id: 5,
            local: WireAddr(Some("[fd00::1]:80".parse().unwrap())),
            peer: WireAddr(Some("[::ffff:10.0.0.2]:4000".parse().unwrap())),
        };
        sys::sendmsg(dmn.raw(), &[IoSlice::new(&rec.encode())], &[conn.raw()], 0).unwrap();
        drop(conn);
        let (fd, peer) = accept(listener.raw(), libc::SOCK_CLOEXEC).unwrap();
        assert_eq!(peer, rec.peer);
        let fdfl = sys::fcntl(fd, libc::F_GETFD, 0).unwrap();
        assert_ne!(fdfl & libc::FD_CLOEXEC, 0);
        sys::write_all(peer_end.raw(), b"hi").unwrap();
        let mut b = [0u8; 2];
        assert_eq!(sys::read(fd, &mut b).unwrap(), 2);
        sys::close(fd);
        assert_eq!(
            accept(listener.raw(), 0x4000_0000).err(),
            Some(Errno::EINVAL)
        );
    }

    #[test]
    fn nonblocking_connect_in_progress_and_blocking_connect_waits_for_so_error() {
        let v = Virt {
            node: 1,
            id: 2,
            kl: false,
        };
        let (app, dmn) = pair();
        sys::set_nonblocking(app.raw(), true).unwrap();
        let to = WireAddr(Some("10.0.0.1:80".parse().unwrap()));
        let f = Fake::new(vec![(Reply::Err(Errno(libc::EINPROGRESS)), None)]);
        assert_eq!(connect(&f, v, app.raw(), to), Err(Errno(libc::EINPROGRESS)));
        assert!(f.seen.borrow()[0].2, "the fd travels with Connect");
        // Blocking: the fd is writable at once here. Without a shutdown of the pair the
        // connect succeeded, and nothing is asked.
        sys::set_nonblocking(app.raw(), false).unwrap();
        let f = Fake::new(vec![(Reply::Err(Errno(libc::EINPROGRESS)), None)]);
        assert_eq!(connect(&f, v, app.raw(), to), Ok(()));
        assert_eq!(f.seen.borrow().len(), 1, "no SO_ERROR round trip");
        // A failed connect comes with the pair shut down (the daemon's doing): SO_ERROR
        // decides.
        sys::shutdown(dmn.raw(), libc::SHUT_RDWR).unwrap();
        let refused = (libc::ECONNREFUSED).to_ne_bytes().to_vec();
        let f = Fake::new(vec![
            (Reply::Err(Errno(libc::EINPROGRESS)), None),
            (Reply::Bytes(refused), None),
        ]);
        assert_eq!(connect(&f, v, app.raw(), to), Err(Errno::ECONNREFUSED));
        let f = Fake::new(vec![
            (Reply::Err(Errno(libc::EINPROGRESS)), None),
            (Reply::Bytes(vec![0; 4]), None),
        ]);
        assert_eq!(connect(&f, v, app.raw(), to), Ok(()));
    }

    #[test]
    fn timeouts_are_native_and_other_options_go_to_the_daemon() {
        let v = Virt {
            node: 1,
            id: 2,
            kl: false,
        };
        let (app, _dmn) = pair();
        let tv = [1i64.to_ne_bytes(), 500_000i64.to_ne_bytes()].concat();
        let f = Fake::new(vec![(Reply::Bytes(vec![1, 0, 0, 0, 9, 9]), None)]);
        setsockopt(&f, v, app.raw(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv).unwrap();
        let got = getsockopt(&f, v, app.raw(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, 16).unwrap();
        assert_eq!(got, tv);
        assert!(f.seen.borrow().is_empty());
        let got = getsockopt(&f, v, app.raw(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 4).unwrap();
        assert_eq!(got, vec![1, 0, 0, 0], "truncated to the caller's length");
        assert_eq!(
            shutdown(&f, v, app.raw(), 7),
            Err(Errno::EINVAL),
            "bad how is checked before asking"
        );
    }

    #[test]
    fn so_error_of_a_tcp_socket_needs_the_daemon_only_once_its_end_is_shut_down() {
        let v = Virt {
            node: 1,
            id: 2,
            kl: false,
        };
        let (app, dmn) = pair();
        let err = |f: &Fake| getsockopt(f, v, app.raw(), libc::SOL_SOCKET, libc::SO_ERROR, 4);
        // Nothing shut down: no error can be pending, nobody is asked (the fake has no answer).
        let f = Fake::new(vec![]);
        assert_eq!(err(&f).unwrap(), vec![0; 4]);
        assert_eq!(
            getsockopt(&f, v, app.raw(), libc::SOL_SOCKET, libc::SO_ERROR, 2).unwrap(),
            vec![0; 2],
            "truncated to the caller's length"
        );
        assert!(f.seen.borrow().is_empty());
        // The daemon fails a socket by shutting its end down both ways: then it tells.
        sys::shutdown(dmn.raw(), libc::SHUT_RDWR).unwrap();
        let refused = libc::ECONNREFUSED.to_ne_bytes().to_vec();
        let f = Fake::new(vec![(Reply::Bytes(refused.clone()), None)]);
        assert_eq!(err(&f).unwrap(), refused);
        assert_eq!(f.seen.borrow().len(), 1);
        // A datagram socket (ICMP errors come without a shutdown) always asks.
        let (dg, _dg_dmn) =
            sys::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC).unwrap();
        let f = Fake::new(vec![(Reply::Bytes(refused.clone()), None)]);
        let got = getsockopt(&f, v, dg.raw(), libc::SOL_SOCKET, libc::SO_ERROR, 4).unwrap();
        assert_eq!(got, refused);
    }

    #[test]
    fn a_socket_lost_with_a_dead_daemon_reads_as_reset_not_as_a_bad_descriptor() {
        let v = Virt {
            node: 1,
            id: 2,
            kl: false,
        };
        let (app, dmn) = pair();
        let unknown = || Fake::new(vec![(Reply::Err(Errno::EBADF), None)]);
        // Its daemon end still open: the daemon's answer stands.
        sys::shutdown(dmn.raw(), libc::SHUT_WR).unwrap();
        let f = unknown();
        let got = getsockopt(&f, v, app.raw(), libc::SOL_SOCKET, libc::SO_ERROR, 4);
        assert_eq!(got, Err(Errno::EBADF));
        // Its daemon end gone with the daemon (the new one never heard of it): reset.
        drop(dmn);
        let reset = libc::ECONNRESET.to_ne_bytes().to_vec();
        let f = unknown();
        let got = getsockopt(&f, v, app.raw(), libc::SOL_SOCKET, libc::SO_ERROR, 4).unwrap();
        assert_eq!(got, reset);
        assert_eq!(so_error(&unknown(), v, app.raw()), Ok(libc::ECONNRESET));
        // Other questions keep the daemon's answer.
        let f = unknown();
        let got = getsockopt(&f, v, app.raw(), libc::SOL_SOCKET, libc::SO_RCVBUF, 4);
        assert_eq!(got, Err(Errno::EBADF));
    }
}
