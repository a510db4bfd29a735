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
//!
//! Not here (yet): UDP/ICMP datagram framing, name resolution, routing some destinations to
//! the kernel.

use crate::node;
use ioth_common::ctl::{ACCEPT_RECORD_LEN, AcceptRecord, Reply, Request, WireAddr};
use ioth_common::names;
use ioth_common::sys::{self, Errno, Fd};
use std::io::IoSliceMut;
use std::os::fd::RawFd;

/// Who answers control requests.
pub trait Control {
    /// A request for the home node (new sockets).
    fn call_home(&self, req: &Request, fd: Option<RawFd>) -> Result<(Reply, Vec<Fd>), Errno>;
    /// A request about a socket of `node`.
    fn call(&self, node: u64, req: &Request, fd: Option<RawFd>) -> Result<(Reply, Vec<Fd>), Errno>;
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
}

/// A virtual socket: its node and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Virt {
    pub node: u64,
    pub id: u64,
}

/// Is `fd` a virtual socket? One `getsockname`; anything else (other sockets, files, bad fds)
/// is `None` and goes to the kernel untouched.
pub fn virt(fd: RawFd) -> Option<Virt> {
    if fd < 0 {
        return None;
    }
    let name = sys::getsockname_unix(fd).ok()??;
    names::parse_socket_name(&name).map(|(node, id)| Virt { node, id })
}

/// Should `socket(domain, ty, protocol)` be virtual? TCP over IPv4/IPv6 only for now.
pub fn wants_virtual(domain: i32, ty: i32, protocol: i32) -> bool {
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    (domain == libc::AF_INET || domain == libc::AF_INET6)
        && base == libc::SOCK_STREAM
        && (protocol == 0 || protocol == libc::IPPROTO_TCP)
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
    let r = c.call(v.node, &Request::Bind { id: v.id, addr }, None)?.0;
    crate::debug!("bind({:?}) -> {r:?}", addr.0);
    expect_ok(r)
}

pub fn listen(c: &dyn Control, v: Virt, backlog: i32) -> Result<(), Errno> {
    expect_ok(
        c.call(v.node, &Request::Listen { id: v.id, backlog }, None)?
            .0,
    )
}

/// `accept4` on a virtual listener: one record (with the connection's fd) per connection.
/// `O_NONBLOCK` and `SO_RCVTIMEO` of the listener apply natively; signals give `EINTR`
/// (or a kernel restart under `SA_RESTART`), exactly like the kernel's accept.
pub fn accept(fd: RawFd, flags: i32) -> Result<(RawFd, WireAddr), Errno> {
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let mut buf = [0u8; ACCEPT_RECORD_LEN];
    let got = sys::recvmsg(fd, &mut [IoSliceMut::new(&mut buf)], 0)?;
    if got.len == 0 {
        // The daemon closed its end: the listener is gone (as after a shutdown).
        return Err(Errno::EINVAL);
    }
    let mut fds = got.fds;
    let rec = match AcceptRecord::decode(&buf[..got.len]) {
        Ok(r) if !fds.is_empty() => r,
        _ => return Err(Errno(libc::ECONNABORTED)),
    };
    let conn = fds.swap_remove(0);
    apply_flags(&conn, flags)?;
    crate::debug!("accept({fd}) = {} from {:?}", conn.raw(), rec.peer.0);
    Ok((conn.into_raw(), rec.peer))
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

/// `SO_ERROR` as the daemon reports it.
pub fn so_error(c: &dyn Control, v: Virt) -> Result<i32, Errno> {
    let req = Request::GetSockOpt {
        id: v.id,
        level: libc::SOL_SOCKET,
        name: libc::SO_ERROR,
        len: 4,
    };
    match c.call(v.node, &req, None)?.0 {
        Reply::Bytes(b) if b.len() >= 4 => Ok(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
        Reply::Err(e) => Err(e),
        _ => Err(Errno::EPROTO),
    }
}

/// `connect`: the daemon starts the handshake and holds the fd unwritable until it ends.
pub fn connect(c: &dyn Control, v: Virt, fd: RawFd, addr: WireAddr) -> Result<(), Errno> {
    let r = c
        .call(v.node, &Request::Connect { id: v.id, addr }, Some(fd))?
        .0;
    crate::debug!("connect({fd}, {:?}) -> {r:?}", addr.0);
    match r {
        Reply::Err(e) if e.0 == libc::EINPROGRESS => {}
        r => return expect_ok(r),
    }
    let fl = sys::fcntl(fd, libc::F_GETFL, 0)?;
    if fl & libc::O_NONBLOCK != 0 {
        return Err(Errno(libc::EINPROGRESS));
    }
    let timeout = send_timeout_ms(fd);
    if !sys::wait_fd(fd, libc::POLLOUT, timeout)? {
        return Err(Errno(libc::EINPROGRESS));
    }
    let err = so_error(c, v);
    crate::debug!("connect({fd}) finished: SO_ERROR {err:?}");
    match err? {
        0 => Ok(()),
        e => Err(Errno(e)),
    }
}

/// `getsockname` (`peer == false`) or `getpeername`.
pub fn name(c: &dyn Control, v: Virt, peer: bool) -> Result<WireAddr, Errno> {
    let req = if peer {
        Request::GetPeerName { id: v.id }
    } else {
        Request::GetSockName { id: v.id }
    };
    match c.call(v.node, &req, None)?.0 {
        Reply::Addr(a) => Ok(a),
        Reply::Err(e) => Err(e),
        _ => Err(Errno::EPROTO),
    }
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
    if native_option(level, name) {
        let mut b = vec![0u8; len.min(64)];
        let n = sys::getsockopt_bytes(fd, level, name, &mut b)?;
        b.truncate(n);
        return Ok(b);
    }
    let req = Request::GetSockOpt {
        id: v.id,
        level,
        name,
        len: len.min(ioth_common::ctl::MAX_OPT) as u32,
    };
    match c.call(v.node, &req, None)?.0 {
        Reply::Bytes(mut b) => {
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
    let req = Request::SetSockOpt {
        id: v.id,
        level,
        name,
        value: value.to_vec(),
    };
    expect_ok(c.call(v.node, &req, None)?.0)
}

/// `shutdown`: tell the daemon (it knows whether the socket is connected), then shut the
/// kernel fd down, which is what the daemon acts on.
pub fn shutdown(c: &dyn Control, v: Virt, fd: RawFd, how: i32) -> Result<(), Errno> {
    if !(libc::SHUT_RD..=libc::SHUT_RDWR).contains(&how) {
        return Err(Errno::EINVAL);
    }
    expect_ok(
        c.call(v.node, &Request::Shutdown { id: v.id, how }, None)?
            .0,
    )?;
    match sys::shutdown(fd, how) {
        // The daemon may already have shut its end down both ways (reset).
        Err(e) if e.0 == libc::ENOTCONN => Ok(()),
        r => r,
    }
}
