//! The exported data-path hooks for virtual datagram sockets: a thin FFI layer over
//! [`crate::dgram`].
//!
//! `read`, `readv`, `write`, `writev`, `send`, `sendto`, `sendmsg`, `sendmmsg`, `recv`,
//! `recvfrom`, `recvmsg`, `recvmmsg` and the fortified `__read_chk`, `__recv_chk`,
//! `__recvfrom_chk`: for an fd that is not in the datagram table the cost is one atomic load
//! before the real function; TCP sockets, files and pipes never get further. For a virtual
//! datagram socket the hook puts the 32-byte header in front of the caller's buffers in one
//! `sendmsg`/`recvmsg` of the kernel socketpair, so the datagram stays one message and
//! `MSG_PEEK`, `MSG_DONTWAIT`, `O_NONBLOCK`, `SO_RCVTIMEO` and signals behave natively.
//!
//! Also here: `dup`/`dup2`/`dup3` (copy the table entry) and the `SCM_RIGHTS` check of
//! `recvmsg` on other sockets (a virtual datagram socket passed from another process).
//!
//! Control messages on receive (`recvmsg`): `IP_PKTINFO`, `IPV6_PKTINFO`, `IP_TTL`,
//! `IPV6_HOPLIMIT` when the socket asked for them (see `dgram::cmsgs`).
//!
//! `poll`, `ppoll` and `__poll_chk` report a pending socket error (an ICMP error on a UDP
//! socket, queued as an error record, see `DgramHeader::ERROR`) as `POLLERR`, as Linux's
//! `datagram_poll` does, and without `POLLIN` when nothing but that record is queued. The
//! kernel saw a readable socketpair; `select` needs nothing (it reports an error as readable
//! and writable). `epoll` the same: its events carry the caller's data, not the fd, so
//! `epoll_ctl` remembers which data stands for a virtual datagram socket ([`epolled`]), and
//! `epoll_wait`, `epoll_pwait` and `epoll_pwait2` look at those only.
//!
//! Not done: other ancillary data (`SO_TIMESTAMP` and friends give none; programs fall back),
//! control messages on send (ignored), `MSG_OOB` (`EOPNOTSUPP`).

use crate::addr;
use crate::dgram::{self, Entry, Got};
use crate::hook::hooks;
use ioth_common::ctl::{DgramHeader, ErrQueueEntry};
use ioth_common::sys::Errno;
use libc::{
    c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t, timespec,
};
use std::os::fd::RawFd;
use std::panic::catch_unwind;

/// Largest iovec count (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

fn guard(f: impl FnOnce() -> Result<usize, Errno>) -> ssize_t {
    crate::hooks::guard(|| f().map(|v| v as ssize_t))
}

/// The caller's iovecs with room for our header in front.
struct Iovs {
    small: [iovec; 9],
    big: Vec<iovec>,
    n: usize,
}

impl Iovs {
    /// # Safety
    /// `iov` must point to `cnt` valid iovecs (or be null with `cnt == 0`).
    unsafe fn new(hdr: *mut u8, iov: *const iovec, cnt: usize) -> Result<Iovs, Errno> {
        if cnt > IOV_MAX {
            return Err(Errno::EMSGSIZE);
        }
        if cnt > 0 && iov.is_null() {
            return Err(Errno(libc::EFAULT));
        }
        let first = iovec {
            iov_base: hdr.cast(),
            iov_len: DgramHeader::LEN,
        };
        let user: &[iovec] = if cnt == 0 {
            &[]
        } else {
            // SAFETY: the caller guarantees cnt valid iovecs at iov.
            unsafe { std::slice::from_raw_parts(iov, cnt) }
        };
        let empty = iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut v = Iovs {
            small: [empty; 9],
            big: Vec::new(),
            n: cnt + 1,
        };
        if cnt < 9 {
            v.small[0] = first;
            v.small[1..=cnt].copy_from_slice(user);
        } else {
            v.big.reserve(cnt + 1);
            v.big.push(first);
            v.big.extend_from_slice(user);
        }
        Ok(v)
    }

    fn as_mut_ptr(&mut self) -> *mut iovec {
        if self.big.is_empty() {
            self.small.as_mut_ptr()
        } else {
            self.big.as_mut_ptr()
        }
    }

    fn user_len(&self) -> usize {
        let all: &[iovec] = if self.big.is_empty() {
            &self.small[..self.n]
        } else {
            &self.big
        };
        all[1..]
            .iter()
            .fold(0usize, |a, v| a.saturating_add(v.iov_len))
    }
}

/// Write a source address with the kernel's truncation rule.
///
/// # Safety
/// `p` null or `*len` writable bytes; `len` null or valid.
unsafe fn put_name(g: &Got, p: *mut c_void, len: *mut socklen_t) -> Result<(), Errno> {
    if p.is_null() || len.is_null() {
        return Ok(());
    }
    if let Some(ll) = &g.ll {
        // SAFETY: p/len are the caller's; at most *len bytes go to p.
        return unsafe { crate::hooks::write_truncated(ll, p, len) };
    }
    let a = &g.from;
    if a.0.is_none() {
        // SAFETY: len is the caller's.
        return unsafe { ioth_common::sys::copy_out(&[(len.cast(), &0u32.to_ne_bytes())]) };
    }
    // SAFETY: p/len are the caller's; at most *len bytes go to p.
    unsafe { crate::hooks::write_truncated(&addr::encode(a), p, len) }
}

/// One datagram out.
///
/// # Safety
/// `iov`/`cnt` as for writev; `dest`/`dlen` as for sendto.
unsafe fn send_dgram(
    mut e: Entry,
    iov: *const iovec,
    cnt: usize,
    flags: c_int,
    dest: *const c_void,
    dlen: socklen_t,
) -> Result<usize, Errno> {
    if flags & libc::MSG_OOB != 0 {
        return Err(Errno(libc::EOPNOTSUPP));
    }
    if e.is_netlink() {
        // SAFETY: iov/cnt from the caller.
        return unsafe { send_netlink(e, iov, cnt, dest, dlen) };
    }
    let dest = if dest.is_null() || dlen == 0 {
        None
    } else {
        // SAFETY: the caller guarantees dlen readable bytes at dest; we read at most that.
        Some(unsafe { crate::hooks::read_arg(dest, (dlen as usize).min(128)) }?)
    };
    let mut probe = [0u8; DgramHeader::LEN];
    // SAFETY: iov/cnt from the caller (checked, then only lengths are read).
    let total = unsafe { Iovs::new(probe.as_mut_ptr(), iov, cnt) }?.user_len();
    let mut hdr = if e.is_packet() {
        crate::packet::send_header(dest.as_deref(), total)?
    } else {
        let to = dest.map(|b| addr::decode(&b)).transpose()?;
        let h = e.prepare_send(to, total)?;
        if let Some(err) = e.send_error() {
            return Err(err);
        }
        h
    };
    // SAFETY: iov/cnt from the caller.
    let mut v = unsafe { Iovs::new(hdr.as_mut_ptr(), iov, cnt) }?;
    // SAFETY: msghdr is plain old data.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = v.as_mut_ptr();
    m.msg_iovlen = v.n;
    let f = (flags & libc::MSG_DONTWAIT) | libc::MSG_NOSIGNAL;
    // SAFETY: m describes our header and the caller's buffers.
    let n = unsafe { real::sendmsg(e.fd, &m, f) };
    if n < 0 {
        return Err(Errno::last());
    }
    Ok((n as usize).saturating_sub(DgramHeader::LEN))
}

/// A request to a virtual netlink socket ([`crate::netlink`]): gathered and answered.
///
/// # Safety
/// `iov`/`cnt` as for writev; `dest`/`dlen` as for sendto.
unsafe fn send_netlink(
    e: Entry,
    iov: *const iovec,
    cnt: usize,
    dest: *const c_void,
    dlen: socklen_t,
) -> Result<usize, Errno> {
    if !dest.is_null() && dlen > 0 {
        if (dlen as usize) < 12 {
            return Err(Errno::EINVAL);
        }
        // SAFETY: the caller guarantees dlen (>= 12) readable bytes at dest.
        let a = unsafe { crate::hooks::read_arg(dest, 12) }?;
        if u16::from_ne_bytes([a[0], a[1]]) != libc::AF_NETLINK as u16 {
            return Err(Errno::EINVAL);
        }
        if a[4..8] != [0, 0, 0, 0] {
            // Only the kernel (port 0) answers here.
            return Err(Errno(libc::ECONNREFUSED));
        }
    }
    if cnt > IOV_MAX || (cnt > 0 && iov.is_null()) {
        return Err(Errno::EINVAL);
    }
    let mut data = Vec::new();
    for i in 0..cnt {
        // SAFETY: the caller guarantees cnt valid iovecs at iov, each describing readable
        // memory.
        let v = unsafe { *iov.add(i) };
        if v.iov_len > 0 && !v.iov_base.is_null() {
            if data.len() + v.iov_len > 1 << 20 {
                return Err(Errno::EMSGSIZE);
            }
            // SAFETY: as above.
            data.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len)
            });
        }
    }
    crate::netlink::send(e.fd, &data)
}

/// A receive on a virtual netlink socket: the plain datagram, from the kernel (`nl_pid` 0).
///
/// # Safety
/// `m` as for recvmsg.
unsafe fn recv_netlink(e: Entry, m: &mut msghdr, flags: c_int) -> Result<usize, Errno> {
    let name = m.msg_name;
    let nlen = m.msg_namelen;
    m.msg_name = std::ptr::null_mut();
    m.msg_namelen = 0;
    m.msg_controllen = 0;
    // SAFETY: m is the caller's msghdr, with our name and control fields.
    let n = unsafe { real::recvmsg(e.fd, m, flags) };
    m.msg_name = name;
    if n < 0 {
        m.msg_namelen = nlen;
        return Err(Errno::last());
    }
    if !name.is_null() {
        let a = crate::netlink::sockaddr_nl(0, 0);
        let k = (nlen as usize).min(a.len());
        // SAFETY: the caller's name buffer holds msg_namelen bytes; we write at most that.
        unsafe { ioth_common::sys::copy_out(&[(name.cast(), &a[..k])]) }?;
        m.msg_namelen = a.len() as socklen_t;
    } else {
        m.msg_namelen = 0;
    }
    Ok(n as usize)
}

/// One datagram in; returns (return value, msg_flags).
///
/// # Safety
/// `iov`/`cnt` as for readv; `name`/`nlen` as for recvfrom.
unsafe fn recv_dgram(
    e: Entry,
    iov: *const iovec,
    cnt: usize,
    flags: c_int,
    name: *mut c_void,
    nlen: *mut socklen_t,
) -> Result<(usize, c_int, Got), Errno> {
    if e.is_netlink() {
        // SAFETY: msghdr is plain old data.
        let mut m: msghdr = unsafe { std::mem::zeroed() };
        m.msg_iov = iov as *mut iovec;
        m.msg_iovlen = cnt;
        m.msg_name = name;
        m.msg_namelen = if nlen.is_null() {
            0
        } else {
            // SAFETY: nlen is the caller's pointer.
            unsafe { crate::hooks::read_len(nlen) }?
        };
        // SAFETY: m describes the caller's buffers.
        let r = unsafe { recv_netlink(e, &mut m, flags) }?;
        if !nlen.is_null() {
            let got = m.msg_namelen.to_ne_bytes();
            // SAFETY: as above.
            unsafe { ioth_common::sys::copy_out(&[(nlen.cast(), &got)]) }?;
        }
        return Ok((r, m.msg_flags, Got::default()));
    }
    if flags & libc::MSG_ERRQUEUE != 0 {
        // SAFETY: iov/cnt and name/nlen from the caller.
        let (n, mf, _) = unsafe { recv_errqueue(&e, iov, cnt, name, nlen) }?;
        return Ok((n, mf, Got::default()));
    }
    if flags & libc::MSG_OOB != 0 {
        return Err(Errno(libc::EOPNOTSUPP));
    }
    let mut hdr = [0u8; DgramHeader::LEN];
    // SAFETY: iov/cnt from the caller.
    let mut v = unsafe { Iovs::new(hdr.as_mut_ptr(), iov, cnt) }?;
    // SAFETY: msghdr is plain old data.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = v.as_mut_ptr();
    m.msg_iovlen = v.n;
    let f = flags & (libc::MSG_PEEK | libc::MSG_DONTWAIT);
    // SAFETY: m describes our header and the caller's buffers.
    let n = unsafe { real::recvmsg(e.fd, &mut m, f) };
    if n < 0 {
        return Err(Errno::last());
    }
    let g = match Got::parse(&hdr, n as usize) {
        Err(err) if f & libc::MSG_PEEK != 0 => {
            // A pending socket error is reported once, peeking or not: drop its record.
            if DgramHeader::decode(&hdr).is_ok_and(|h| h.errno().is_some()) {
                let _ = ioth_common::sys::recv(e.fd, &mut hdr, libc::MSG_DONTWAIT);
            }
            return Err(err);
        }
        r => r?,
    };
    // SAFETY: name/nlen from the caller. A bad one is EFAULT with the datagram consumed, as
    // in the kernel.
    unsafe { put_name(&g, name, nlen) }?;
    let mf = if g.truncated() { libc::MSG_TRUNC } else { 0 };
    Ok((g.ret(flags), mf, g))
}

/// `MSG_ERRQUEUE`: the oldest entry of the socket's error queue (`IP_RECVERR`), from the
/// daemon: the quoted payload as the data (`MSG_TRUNC` if it did not fit), the destination
/// of the datagram it quotes as the source address, `MSG_ERRQUEUE` in the flags, and the
/// entry (for its control message). `EAGAIN` when the queue is empty, as Linux's
/// `ip_recv_error`, which also replaces the socket's pending error with the next one: the
/// error record at the head of the socketpair goes too.
///
/// # Safety
/// `iov`/`cnt` as for readv; `name`/`nlen` as for recvfrom.
unsafe fn recv_errqueue(
    e: &Entry,
    iov: *const iovec,
    cnt: usize,
    name: *mut c_void,
    nlen: *mut socklen_t,
) -> Result<(usize, c_int, ErrQueueEntry), Errno> {
    let v = crate::emu::virt(e.fd).ok_or(Errno::EBADF)?;
    let b = crate::emu::getsockopt(
        &crate::emu::Daemons,
        v,
        e.fd,
        libc::SOL_SOCKET,
        ioth_common::ctl::SO_IOTH_ERRQUEUE,
        ioth_common::ctl::MAX_OPT,
    )?;
    let q = ErrQueueEntry::decode(&b)?;
    dgram::take_error(e.fd);
    if cnt > IOV_MAX || (cnt > 0 && iov.is_null()) {
        return Err(Errno::EINVAL);
    }
    let mut left: &[u8] = &q.payload;
    for i in 0..cnt {
        if left.is_empty() {
            break;
        }
        // SAFETY: the caller guarantees cnt valid iovecs at iov.
        let v = unsafe { *iov.add(i) };
        let k = v.iov_len.min(left.len());
        // SAFETY: the caller's iovec describes writable memory of iov_len bytes.
        unsafe { ioth_common::sys::copy_out(&[(v.iov_base.cast(), &left[..k])]) }?;
        left = &left[k..];
    }
    let n = q.payload.len() - left.len();
    let g = Got {
        from: q.dest,
        ..Got::default()
    };
    // SAFETY: name/nlen from the caller.
    unsafe { put_name(&g, name, nlen) }?;
    let mf = libc::MSG_ERRQUEUE | if left.is_empty() { 0 } else { libc::MSG_TRUNC };
    Ok((n, mf, q))
}

/// The `IP_RECVERR`/`IPV6_RECVERR` control message of an error queue entry: Linux's
/// `struct sock_extended_err` followed by the offender's address.
fn errqueue_cmsg(q: &ErrQueueEntry) -> dgram::Cmsg {
    let mut data = Vec::with_capacity(16 + 28);
    data.extend_from_slice(&q.errno.to_ne_bytes());
    data.extend_from_slice(&[q.origin, q.ty, q.code, 0]);
    data.extend_from_slice(&q.info.to_ne_bytes());
    data.extend_from_slice(&0u32.to_ne_bytes());
    data.extend_from_slice(&addr::encode(&q.offender));
    let v6 = q.origin == 3;
    dgram::Cmsg {
        level: if v6 {
            libc::IPPROTO_IPV6
        } else {
            libc::IPPROTO_IP
        },
        ty: if v6 {
            libc::IPV6_RECVERR
        } else {
            libc::IP_RECVERR
        },
        data,
    }
}

/// The error a send on virtual TCP socket `fd` that met `EPIPE` must report first, taken:
/// the kernel's own `SO_ERROR` (a cut-through connection, whose peer is an application's
/// unix socket), else the daemon's (`ECONNRESET` after a reset). `None`: `EPIPE` it is
/// (also when the pending error is `EPIPE`, a reset after the peer's FIN as Linux's
/// `tcp_reset` in CLOSE_WAIT).
fn pending_error(fd: c_int) -> Option<i32> {
    catch_unwind(|| {
        match ioth_common::sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR) {
            Ok(e) if e != 0 => return Some(e),
            _ => {}
        }
        let v = crate::emu::virt(fd)?;
        crate::emu::so_error(&crate::emu::Daemons, v, fd)
            .ok()
            .filter(|e| *e != 0)
    })
    .ok()
    .flatten()
    .filter(|e| *e != libc::EPIPE)
}

/// `sendfile`/`splice` into a virtual TCP socket that gave `r`: on `EPIPE`, the pending
/// error instead, as [`stream_send`] (the kernel raised `SIGPIPE` already: these calls have
/// no `MSG_NOSIGNAL`, so a program that does not ignore `SIGPIPE` gets it one call early).
fn stream_spliced(fd: c_int, r: ssize_t) -> ssize_t {
    if r >= 0 || !dgram::is_stream(fd) || Errno::last() != Errno::EPIPE {
        return r;
    }
    Errno(pending_error(fd).unwrap_or(libc::EPIPE)).set_errno();
    -1
}

/// A send on a virtual TCP socket, made with `MSG_NOSIGNAL` by `send`: the kernel raises no
/// `SIGPIPE` when the daemon shut its end after a reset or a timeout. On `EPIPE` the
/// socket's pending error comes first, without `SIGPIPE`, as Linux's `tcp_sendmsg` reports
/// it (`ECONNRESET` after a reset; the kernel's own `SO_ERROR` for a cut-through connection,
/// whose peer is an application's unix socket); then `EPIPE`, with `SIGPIPE` for the calling
/// thread unless the caller asked for `MSG_NOSIGNAL`.
fn stream_send(fd: c_int, nosignal: bool, send: impl FnOnce() -> ssize_t) -> ssize_t {
    let r = send();
    if r >= 0 || Errno::last() != Errno::EPIPE {
        return r;
    }
    if let Some(e) = pending_error(fd) {
        Errno(e).set_errno();
        return -1;
    }
    if !nosignal {
        ioth_common::sys::raise_for_thread(libc::SIGPIPE);
    }
    Errno::EPIPE.set_errno();
    -1
}

/// A confirmed datagram entry for `fd`, if the table says so.
#[inline(always)]
fn entry(fd: c_int) -> Option<Entry> {
    let bits = dgram::hit(fd);
    if bits == 0 {
        return None;
    }
    catch_unwind(|| dgram::confirm(fd, bits)).ok().flatten()
}

/// Whether `fd` is a virtual datagram socket for which `f` holds (one atomic load for other
/// fds).
pub fn entry_is(fd: c_int, f: impl FnOnce(&mut Entry) -> bool) -> bool {
    dgram::hit(fd) != 0
        && catch_unwind(std::panic::AssertUnwindSafe(|| {
            dgram::confirm(fd, dgram::hit(fd)).is_some_and(|mut e| f(&mut e))
        }))
        .unwrap_or(false)
}

fn one(buf: *const c_void, n: size_t) -> iovec {
    iovec {
        iov_base: buf as *mut c_void,
        iov_len: n,
    }
}

/// `recvmsg` on a virtual datagram socket (`m` valid).
///
/// # Safety
/// `m` must point to a valid msghdr.
unsafe fn recvmsg_dgram(e: Entry, m: *mut msghdr, flags: c_int) -> Result<usize, Errno> {
    if m.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: m is the caller's valid msghdr.
    let mh = unsafe { &mut *m };
    if e.is_netlink() {
        // SAFETY: the caller's msghdr.
        return unsafe { recv_netlink(e, mh, flags) };
    }
    if flags & libc::MSG_ERRQUEUE != 0 {
        // SAFETY: mh is the caller's valid msghdr (buffers, name, control).
        let (n, mut mf, q) = unsafe {
            recv_errqueue(
                &e,
                mh.msg_iov,
                mh.msg_iovlen,
                mh.msg_name,
                &mut mh.msg_namelen,
            )
        }?;
        // SAFETY: mh is the caller's valid msghdr; put_cmsgs stays within its control buffer.
        if !unsafe { put_cmsgs(mh, &[errqueue_cmsg(&q)]) } {
            mf |= libc::MSG_CTRUNC;
        }
        mh.msg_flags = mf;
        return Ok(n);
    }
    // SAFETY: mh is the caller's valid msghdr: msg_iov/msg_iovlen describe its buffers and
    // msg_name/msg_namelen its name buffer, as recvmsg(2) requires of it.
    let (r, mut mf, g) = unsafe {
        recv_dgram(
            e,
            mh.msg_iov,
            mh.msg_iovlen,
            flags,
            mh.msg_name,
            &mut mh.msg_namelen,
        )
    }?;
    // SAFETY: mh is the caller's valid msghdr; put_cmsgs stays within its control buffer.
    if !unsafe { put_cmsgs(mh, &dgram::cmsgs(&e, &g)) } {
        mf |= libc::MSG_CTRUNC;
    }
    mh.msg_flags = mf;
    Ok(r)
}

/// What a receive for a supervisor gave ([`serve_recv`]): the call's result and what
/// `recvmsg` would have written back into the caller's `msghdr`.
pub struct Received {
    pub ret: usize,
    pub namelen: u32,
    pub controllen: usize,
    pub flags: c_int,
}

/// For a supervisor that serves another process's calls (`ioth-exec`): `recvmsg` on `fd`,
/// its duplicate of a virtual datagram socket (taken with [`dgram::adopt`]), into the
/// supervisor's own buffers. An empty `name` or `control` is a null one.
pub fn serve_recv(
    fd: RawFd,
    buf: &mut [u8],
    name: &mut [u8],
    control: &mut [u8],
    flags: c_int,
) -> Result<Received, Errno> {
    let e = entry(fd).ok_or(Errno::EBADF)?;
    let mut v = one(buf.as_mut_ptr().cast(), buf.len());
    // SAFETY: msghdr is plain old data.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = &mut v;
    m.msg_iovlen = 1;
    if !name.is_empty() {
        m.msg_name = name.as_mut_ptr().cast();
        m.msg_namelen = name.len() as socklen_t;
    }
    if !control.is_empty() {
        m.msg_control = control.as_mut_ptr().cast();
        m.msg_controllen = control.len();
    }
    // SAFETY: m describes our own buffers, alive for the call.
    let ret = unsafe { recvmsg_dgram(e, &mut m, flags) }?;
    Ok(Received {
        ret,
        namelen: m.msg_namelen,
        controllen: if m.msg_control.is_null() {
            0
        } else {
            m.msg_controllen
        },
        flags: m.msg_flags,
    })
}

/// The same for `sendmsg` of `data` to `name` (empty: none) with `control`.
pub fn serve_send(
    fd: RawFd,
    data: &[u8],
    name: &[u8],
    control: &[u8],
    flags: c_int,
) -> Result<usize, Errno> {
    let e = entry(fd).ok_or(Errno::EBADF)?;
    let mut v = one(data.as_ptr().cast(), data.len());
    // SAFETY: msghdr is plain old data.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = &mut v;
    m.msg_iovlen = 1;
    if !name.is_empty() {
        m.msg_name = name.as_ptr().cast_mut().cast();
        m.msg_namelen = name.len() as socklen_t;
    }
    if !control.is_empty() {
        m.msg_control = control.as_ptr().cast_mut().cast();
        m.msg_controllen = control.len();
    }
    // SAFETY: m describes our own buffers, alive for the call (only read).
    unsafe { sendmsg_dgram(e, &m, flags) }
}

/// Write control messages into the caller's control buffer; `false` if they did not all fit.
///
/// # Safety
/// `mh.msg_control` null or `mh.msg_controllen` writable bytes.
unsafe fn put_cmsgs(mh: &mut msghdr, msgs: &[dgram::Cmsg]) -> bool {
    let room = if mh.msg_control.is_null() {
        0
    } else {
        mh.msg_controllen
    };
    let mut used = 0usize;
    let mut all = true;
    for m in msgs {
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure computations.
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(m.data.len() as u32) as usize,
                libc::CMSG_LEN(m.data.len() as u32) as usize,
            )
        };
        if used + space > room {
            all = false;
            break;
        }
        // SAFETY: [used, used + space) lies within the caller's control buffer; the buffer
        // is cmsghdr-aligned (the caller's duty, as for the kernel) and space keeps it so.
        unsafe {
            let c = mh
                .msg_control
                .cast::<u8>()
                .add(used)
                .cast::<libc::cmsghdr>();
            (*c).cmsg_len = len as _;
            (*c).cmsg_level = m.level;
            (*c).cmsg_type = m.ty;
            std::ptr::copy_nonoverlapping(m.data.as_ptr(), libc::CMSG_DATA(c), m.data.len());
        }
        used += space;
    }
    mh.msg_controllen = used as _;
    all
}

/// Learn virtual datagram sockets that arrived by `SCM_RIGHTS`.
/// A virtual TCP socket whose peer is another node's application on this host (TCP
/// cut-through: the peer end is named as that node's socket) reports no peer address on
/// receive, as Linux TCP does (and as when the peer end is a daemon's, which has no name).
///
/// # Safety
/// `alen` must be valid (the kernel just wrote it); `a` is only read through
/// `process_vm_readv` (its buffer may be shorter than the name the kernel reported).
unsafe fn hide_cut_peer(a: *const sockaddr, alen: *mut socklen_t) {
    const PREFIX: &[u8] = b"\0ioth/";
    // SAFETY: alen is valid (see above).
    let len = unsafe { *alen } as usize;
    // (Cheap for anything else: only names this long are looked at.)
    if len < 2 + PREFIX.len() {
        return;
    }
    let mut head = [0u8; 2 + PREFIX.len()];
    // SAFETY: copy_in checks the source range (a bad one is an error, never a fault).
    if unsafe { ioth_common::sys::copy_in(a.cast(), &mut head) }.is_err() {
        return;
    }
    if u16::from_ne_bytes([head[0], head[1]]) == libc::AF_UNIX as u16 && &head[2..] == PREFIX {
        // SAFETY: as above.
        unsafe { *alen = 0 };
    }
}

///
/// # Safety
/// `m` must point to a msghdr the kernel just filled.
unsafe fn learn_passed_fds(m: *const msghdr) {
    // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG_* macros walk it within
    // those bounds, and each SCM_RIGHTS payload holds cmsg_len - CMSG_LEN(0) bytes of fds.
    unsafe {
        if m.is_null() || (*m).msg_control.is_null() || (*m).msg_controllen == 0 {
            return;
        }
        let mut c = libc::CMSG_FIRSTHDR(m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<c_int>();
                let p = libc::CMSG_DATA(c) as *const c_int;
                for i in 0..n {
                    let fd = std::ptr::read_unaligned(p.add(i));
                    let _ = catch_unwind(|| dgram::learn(fd));
                }
            }
            c = libc::CMSG_NXTHDR(m, c);
        }
    }
}

fn now_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// # Safety
/// `m` must point to a valid msghdr.
unsafe fn sendmsg_dgram(e: Entry, m: *const msghdr, flags: c_int) -> Result<usize, Errno> {
    if m.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: m is the caller's valid msghdr.
    let mh = unsafe { &*m };
    // SAFETY: its fields describe the caller's buffers and address.
    unsafe {
        send_dgram(
            e,
            mh.msg_iov,
            mh.msg_iovlen,
            flags,
            mh.msg_name,
            mh.msg_namelen,
        )
    }
}
/// A message with control data may pass descriptors (`SCM_RIGHTS`): what the process holds
/// goes first, so that the daemons know the sockets another process may then ask about
/// (`crate::held`). Only while something is held: one atomic load otherwise.
///
/// # Safety
/// `m` is the caller's `msghdr` pointer (read with `copy_in`: a bad one is left to the
/// kernel's call).
unsafe fn before_passing(m: *const msghdr) {
    if m.is_null() {
        return;
    }
    // SAFETY: the caller's pointer, read through copy_in.
    let Ok(b) = (unsafe { crate::hooks::read_arg(m.cast(), std::mem::size_of::<msghdr>()) }) else {
        return;
    };
    // SAFETY: b holds size_of::<msghdr>() bytes copied from the caller; read unaligned.
    let mh: msghdr = unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) };
    if !mh.msg_control.is_null() && mh.msg_controllen > 0 {
        crate::held::flush();
    }
}

/// For the fortified `__*_chk` forms: a datagram-table hit whose length fits the buffer goes to
/// the plain hook; an overflow goes to the real one, which reports it.
fn chk_ours(fd: c_int, n: size_t, buflen: size_t) -> Option<()> {
    (n <= buflen && dgram::hit(fd) != 0).then_some(())
}

/// What a read of another fd returns: `r` from the real call, unless it is end of stream
/// (`r == 0` with room asked for, `asked`) on a virtual TCP socket that was reset, which gives
/// the error Linux's read would ([`crate::emu::read_error`]). errno is kept otherwise.
fn stream_end(fd: c_int, r: ssize_t, asked: bool) -> ssize_t {
    if r != 0 || !asked {
        return r;
    }
    let saved = Errno::last();
    match catch_unwind(|| crate::emu::read_error(&crate::emu::Daemons, fd)) {
        Ok(Some(e)) => {
            e.set_errno();
            -1
        }
        _ => {
            saved.set_errno();
            0
        }
    }
}

/// Whether `cnt` iovecs at `iov` have room for a byte (unreadable ones count as room: the
/// kernel already said what it thought of them).
///
/// # Safety
/// `iov` must be null or point to `cnt` iovecs, as the caller of readv/recvmsg vouches.
unsafe fn iov_room(iov: *const iovec, cnt: usize) -> bool {
    if iov.is_null() {
        return false;
    }
    // SAFETY: the caller's cnt iovecs, which the kernel just read without EFAULT.
    (0..cnt.min(IOV_MAX)).any(|i| unsafe { (*iov.add(i)).iov_len } > 0)
}

/// Reject a negative iovec count as the kernel does.
fn iov_count(cnt: c_int) -> Result<usize, Errno> {
    usize::try_from(cnt).map_err(|_| Errno::EINVAL)
}

/// After a `poll` that found `n` descriptors ready: a virtual datagram socket whose next
/// message is an error record polls as Linux's `datagram_poll` answers for a socket with a
/// pending error (`POLLERR`, and `POLLIN` only if datagrams wait behind it). One atomic
/// load per descriptor; `errno` is kept.
///
/// # Safety
/// `fds` points to `nfds` valid `pollfd`s (the caller's, after the kernel's poll).
unsafe fn poll_errors(fds: *mut libc::pollfd, nfds: libc::nfds_t, n: c_int) {
    if n <= 0 || fds.is_null() {
        return;
    }
    let saved = Errno::last();
    for i in 0..nfds as usize {
        // SAFETY: i < nfds, inside the caller's array.
        let p = unsafe { &mut *fds.add(i) };
        if p.revents & libc::POLLIN != 0 && dgram::hit(p.fd) != 0 {
            p.revents = with_error(p.fd, p.revents as u32) as i16;
        }
    }
    saved.set_errno();
}

/// Ready events `ev` (`POLLIN` among them; `poll` and `epoll` give `IN`, `ERR` and `RDNORM`
/// the same bits) of datagram socket `fd` as Linux's `datagram_poll` has them: `ERR` added
/// when its next message is an error record, `IN` taken away when that record is all there
/// is.
fn with_error(fd: c_int, ev: u32) -> u32 {
    const IN: u32 = (libc::POLLIN | libc::POLLRDNORM) as u32;
    match catch_unwind(|| dgram::error_pending(fd)) {
        Ok(Some(true)) => (ev | libc::POLLERR as u32) & !IN,
        Ok(Some(false)) => ev | libc::POLLERR as u32,
        _ => ev,
    }
}

/// Which `(epoll instance, data)` stands for which virtual datagram socket, for the epoll
/// hooks: a lock-free table (no lock a `fork` could leave held), a slot per key by hash,
/// overwritten on collision (a miss only loses the `EPOLLERR` of that socket). A stale
/// entry (the socket closed, its number reused) is harmless: the fd is confirmed as a
/// datagram socket before it is looked at.
mod epolled {
    use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

    const SLOTS: usize = 1024;
    static KEYS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
    static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
    /// Set once a datagram socket was added to an epoll instance: until then the wait hooks
    /// cost one load.
    pub static ANY: AtomicBool = AtomicBool::new(false);

    fn key(epfd: i32, data: u64) -> u64 {
        ((epfd as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ data.rotate_left(17)).max(1)
    }

    pub fn set(epfd: i32, data: u64, fd: Option<i32>) {
        let k = key(epfd, data);
        let i = (k % SLOTS as u64) as usize;
        match fd {
            Some(fd) => {
                FDS[i].store(fd, Ordering::Relaxed);
                KEYS[i].store(k, Ordering::Release);
                ANY.store(true, Ordering::Relaxed);
            }
            None => {
                let _ = KEYS[i].compare_exchange(k, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }

    pub fn get(epfd: i32, data: u64) -> Option<i32> {
        let k = key(epfd, data);
        let i = (k % SLOTS as u64) as usize;
        (KEYS[i].load(Ordering::Acquire) == k).then(|| FDS[i].load(Ordering::Relaxed))
    }
}

/// After an `epoll_wait` that gave `n` events: those of virtual datagram sockets whose next
/// message is an error record, as for [`poll_errors`]. `errno` is kept.
///
/// # Safety
/// `ev` points to at least `n` events (the caller's, after the kernel's wait).
unsafe fn epoll_errors(epfd: c_int, ev: *mut libc::epoll_event, n: c_int) {
    if n <= 0 || ev.is_null() || !epolled::ANY.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let saved = Errno::last();
    for i in 0..n as usize {
        // SAFETY: i < n, inside the caller's array the kernel just filled.
        let e = unsafe { &mut *ev.add(i) };
        let (events, data) = (e.events, e.u64);
        if events & libc::EPOLLIN as u32 != 0
            && let Some(fd) = epolled::get(epfd, data)
        {
            e.events = with_error(fd, events);
        }
    }
    saved.set_errno();
}

hooks! {
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut libc::epoll_event) -> c_int {
        // SAFETY: the caller's arguments, as for epoll_ctl(2).
        let r = unsafe { real::epoll_ctl(epfd, op, fd, event) };
        if r == 0 && (op == libc::EPOLL_CTL_ADD || op == libc::EPOLL_CTL_MOD) && !event.is_null() {
            // SAFETY: the kernel just read the event at `event`.
            let data = unsafe { std::ptr::read_unaligned(std::ptr::addr_of!((*event).u64)) };
            let ours = entry_is(fd, |e| !e.is_netlink());
            epolled::set(epfd, data, ours.then_some(fd));
        }
        r
    }

    fn epoll_wait(epfd: c_int, ev: *mut libc::epoll_event, max: c_int, timeout: c_int) -> c_int {
        // SAFETY: the caller's arguments, as for epoll_wait(2).
        let n = unsafe { real::epoll_wait(epfd, ev, max, timeout) };
        // SAFETY: the kernel filled n events at ev.
        unsafe { epoll_errors(epfd, ev, n) };
        n
    }

    fn epoll_pwait(
        epfd: c_int,
        ev: *mut libc::epoll_event,
        max: c_int,
        timeout: c_int,
        mask: *const libc::sigset_t,
    ) -> c_int {
        // SAFETY: the caller's arguments, as for epoll_pwait(2).
        let n = unsafe { real::epoll_pwait(epfd, ev, max, timeout, mask) };
        // SAFETY: the kernel filled n events at ev.
        unsafe { epoll_errors(epfd, ev, n) };
        n
    }

    fn epoll_pwait2(
        epfd: c_int,
        ev: *mut libc::epoll_event,
        max: c_int,
        t: *const timespec,
        mask: *const libc::sigset_t,
    ) -> c_int {
        // SAFETY: the caller's arguments, as for epoll_pwait2(2).
        let n = unsafe { real::epoll_pwait2(epfd, ev, max, t, mask) };
        // SAFETY: the kernel filled n events at ev.
        unsafe { epoll_errors(epfd, ev, n) };
        n
    }

    fn poll(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: c_int) -> c_int {
        // SAFETY: the caller's arguments, as for poll(2).
        let n = unsafe { real::poll(fds, nfds, timeout) };
        // SAFETY: the kernel accepted fds/nfds.
        unsafe { poll_errors(fds, nfds, n) };
        n
    }

    fn ppoll(
        fds: *mut libc::pollfd,
        nfds: libc::nfds_t,
        t: *const timespec,
        mask: *const libc::sigset_t,
    ) -> c_int {
        // SAFETY: the caller's arguments, as for ppoll(2).
        let n = unsafe { real::ppoll(fds, nfds, t, mask) };
        // SAFETY: the kernel accepted fds/nfds.
        unsafe { poll_errors(fds, nfds, n) };
        n
    }

    fn __poll_chk(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: c_int, fdslen: size_t) -> c_int {
        // SAFETY: the caller's arguments, as for __poll_chk (glibc checks fdslen).
        let n = unsafe { real::__poll_chk(fds, nfds, timeout, fdslen) };
        // SAFETY: the kernel accepted fds/nfds.
        unsafe { poll_errors(fds, nfds, n) };
        n
    }

    fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
        let Some(e) = entry(fd) else {
            // SAFETY: not a virtual datagram socket: the caller's arguments, untouched.
            let r = unsafe { real::read(fd, buf, n) };
            return stream_end(fd, r, n > 0);
        };
        let v = one(buf, n);
        guard(|| {
            // SAFETY: one iovec describing the caller's buffer.
            unsafe { recv_dgram(e, &v, 1, 0, std::ptr::null_mut(), std::ptr::null_mut()) }
                .map(|r| r.0)
        })
    }

    fn __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t
    where chk_ours(fd, n, buflen) => |()| {
        // SAFETY: as for read (n fits the caller's buffer).
        unsafe { read(fd, buf, n) }
    }

    fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
        let Some(e) = entry(fd) else {
            // SAFETY: not a virtual datagram socket: the caller's arguments, untouched.
            let r = unsafe { real::readv(fd, iov, cnt) };
            // SAFETY: the kernel accepted cnt iovecs at iov (r is 0, not an error).
            return stream_end(fd, r, r == 0 && unsafe { iov_room(iov, cnt.max(0) as usize) });
        };
        guard(|| {
            let cnt = iov_count(cnt)?;
            // SAFETY: the caller's cnt iovecs.
            unsafe {
                recv_dgram(e, iov, cnt, 0, std::ptr::null_mut(), std::ptr::null_mut())
            }
            .map(|r| r.0)
        })
    }

    fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
        let Some(e) = entry(fd) else {
            // SAFETY: not a virtual datagram socket: the caller's arguments, untouched.
            let r = unsafe { real::recv(fd, buf, n, flags) };
            return stream_end(fd, r, n > 0);
        };
        let v = one(buf, n);
        guard(|| {
            // SAFETY: one iovec describing the caller's buffer.
            unsafe { recv_dgram(e, &v, 1, flags, std::ptr::null_mut(), std::ptr::null_mut()) }
                .map(|r| r.0)
        })
    }

    fn __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t
    where chk_ours(fd, n, buflen) => |()| {
        // SAFETY: as for recv (n fits the caller's buffer).
        unsafe { recv(fd, buf, n, flags) }
    }

    fn recvfrom(
        fd: c_int,
        buf: *mut c_void,
        n: size_t,
        flags: c_int,
        a: *mut sockaddr,
        alen: *mut socklen_t,
    ) -> ssize_t {
        let Some(e) = entry(fd) else {
            // SAFETY: not a virtual datagram socket: the caller's arguments, untouched,
            // which it vouches for as recvfrom(2) requires.
            let r = unsafe { real::recvfrom(fd, buf, n, flags, a, alen) };
            if r >= 0 && !a.is_null() && !alen.is_null() {
                // SAFETY: the kernel just wrote *alen (so it is valid) and the address.
                unsafe { hide_cut_peer(a.cast_const(), alen) };
            }
            return stream_end(fd, r, n > 0);
        };
        let v = one(buf, n);
        // SAFETY: one iovec describing the caller's buffer; a/alen are the caller's.
        guard(|| unsafe { recv_dgram(e, &v, 1, flags, a.cast(), alen) }.map(|r| r.0))
    }

    fn __recvfrom_chk(
        fd: c_int,
        buf: *mut c_void,
        n: size_t,
        buflen: size_t,
        flags: c_int,
        a: *mut sockaddr,
        alen: *mut socklen_t,
    ) -> ssize_t
    where chk_ours(fd, n, buflen) => |()| {
        // SAFETY: as for recvfrom (n fits the caller's buffer).
        unsafe { recvfrom(fd, buf, n, flags, a, alen) }
    }

    fn recvmsg(fd: c_int, m: *mut msghdr, flags: c_int) -> ssize_t {
        let Some(e) = entry(fd) else {
            // SAFETY: not a virtual datagram socket: the caller's fd and msghdr, untouched,
            // which it vouches for as recvmsg(2) requires.
            let r = unsafe { real::recvmsg(fd, m, flags) };
            if r >= 0 {
                let saved = Errno::last();
                // SAFETY: the kernel just filled *m (its name and length too).
                unsafe {
                    learn_passed_fds(m);
                    if !(*m).msg_name.is_null() {
                        let name = (*m).msg_name.cast_const().cast();
                        hide_cut_peer(name, &mut (*m).msg_namelen);
                    }
                }
                saved.set_errno();
            }
            // SAFETY: the kernel just read the caller's msghdr and its iovecs.
            return stream_end(fd, r, r == 0 && unsafe { iov_room((*m).msg_iov, (*m).msg_iovlen) });
        };
        // SAFETY: the caller's msghdr.
        guard(|| unsafe { recvmsg_dgram(e, m, flags) })
    }

    fn recvmmsg(fd: c_int, v: *mut mmsghdr, n: c_uint, flags: c_int, t: *mut timespec) -> c_int
    where entry(fd) => |e| {
        if v.is_null() && n > 0 {
            Errno(libc::EFAULT).set_errno();
            return -1;
        }
        let deadline = if t.is_null() {
            None
        } else {
            let mut b = [0u8; std::mem::size_of::<timespec>()];
            // SAFETY: t is the caller's timespec.
            if let Err(e) = unsafe { ioth_common::sys::copy_in(t.cast(), &mut b) } {
                e.set_errno();
                return -1;
            }
            let ts = timespec {
                tv_sec: i64::from_ne_bytes(b[..8].try_into().unwrap_or([0; 8])) as _,
                tv_nsec: i64::from_ne_bytes(b[8..16].try_into().unwrap_or([0; 8])) as _,
            };
            if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
                Errno::EINVAL.set_errno();
                return -1;
            }
            Some(now_ns() + ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128)
        };
        let mut got: c_uint = 0;
        let n = n.min(IOV_MAX as c_uint);
        while got < n {
            let mut f = flags & !libc::MSG_WAITFORONE;
            if got > 0 && flags & libc::MSG_WAITFORONE != 0 {
                f |= libc::MSG_DONTWAIT;
            }
            // SAFETY: entry `got` of the caller's array of n entries.
            let mm = unsafe { &mut *v.add(got as usize) };
            // SAFETY: its msghdr is the caller's.
            let r = guard(|| unsafe { recvmsg_dgram(e, &mut mm.msg_hdr, f) });
            if r < 0 {
                if got > 0 {
                    break;
                }
                return -1;
            }
            mm.msg_len = r as c_uint;
            got += 1;
            if deadline.is_some_and(|d| now_ns() >= d) {
                break;
            }
        }
        got as c_int
    }

    fn sendfile(out: c_int, input: c_int, off: *mut libc::off_t, n: size_t) -> ssize_t {
        // SAFETY: the caller's arguments, as for sendfile(2).
        stream_spliced(out, unsafe { real::sendfile(out, input, off, n) })
    }

    fn sendfile64(out: c_int, input: c_int, off: *mut libc::off64_t, n: size_t) -> ssize_t {
        // SAFETY: the caller's arguments, as for sendfile64.
        stream_spliced(out, unsafe { real::sendfile64(out, input, off, n) })
    }

    fn splice(
        input: c_int,
        off_in: *mut libc::loff_t,
        out: c_int,
        off_out: *mut libc::loff_t,
        n: size_t,
        flags: c_uint,
    ) -> ssize_t {
        // SAFETY: the caller's arguments, as for splice(2).
        stream_spliced(out, unsafe { real::splice(input, off_in, out, off_out, n, flags) })
    }

    fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
        if dgram::is_stream(fd) {
            // SAFETY: the caller's buffer, as for write(2) (a send with no flags).
            let r = stream_send(fd, false, || unsafe {
                real::send(fd, buf, n, libc::MSG_NOSIGNAL)
            });
            if r >= 0 || Errno::last() != Errno(libc::ENOTSOCK) {
                return r;
            }
            // A stale mark: whatever fd is now, it is not a socket.
            dgram::stream_mark(fd, false);
        }
        let Some(e) = entry(fd) else {
            // SAFETY: not a virtual socket of ours: the caller's arguments, untouched.
            return unsafe { real::write(fd, buf, n) };
        };
        let v = one(buf, n);
        // SAFETY: one iovec describing the caller's buffer.
        guard(|| unsafe { send_dgram(e, &v, 1, 0, std::ptr::null(), 0) })
    }

    fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
        if dgram::is_stream(fd) && (0..=IOV_MAX as c_int).contains(&cnt) {
            // SAFETY: msghdr is plain old data.
            let mut m: msghdr = unsafe { std::mem::zeroed() };
            m.msg_iov = iov.cast_mut();
            m.msg_iovlen = cnt as usize;
            // SAFETY: the caller's iovecs, as for writev(2) (a sendmsg with no flags).
            let r = stream_send(fd, false, || unsafe {
                real::sendmsg(fd, &m, libc::MSG_NOSIGNAL)
            });
            if r >= 0 || Errno::last() != Errno(libc::ENOTSOCK) {
                return r;
            }
            dgram::stream_mark(fd, false);
        }
        let Some(e) = entry(fd) else {
            // SAFETY: not a virtual socket of ours: the caller's arguments, untouched.
            return unsafe { real::writev(fd, iov, cnt) };
        };
        guard(|| {
            let cnt = iov_count(cnt)?;
            // SAFETY: the caller's cnt iovecs.
            unsafe { send_dgram(e, iov, cnt, 0, std::ptr::null(), 0) }
        })
    }

    fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
        if dgram::is_stream(fd) {
            let nosig = flags & libc::MSG_NOSIGNAL != 0;
            // SAFETY: the caller's arguments, with MSG_NOSIGNAL added.
            return stream_send(fd, nosig, || unsafe {
                real::send(fd, buf, n, flags | libc::MSG_NOSIGNAL)
            });
        }
        let Some(e) = entry(fd) else {
            // SAFETY: not a virtual socket of ours: the caller's arguments, untouched.
            return unsafe { real::send(fd, buf, n, flags) };
        };
        let v = one(buf, n);
        // SAFETY: one iovec describing the caller's buffer.
        guard(|| unsafe { send_dgram(e, &v, 1, flags, std::ptr::null(), 0) })
    }

    fn sendto(
        fd: c_int,
        buf: *const c_void,
        n: size_t,
        flags: c_int,
        a: *const sockaddr,
        alen: socklen_t,
    ) -> ssize_t {
        if dgram::is_stream(fd) {
            let nosig = flags & libc::MSG_NOSIGNAL != 0;
            // SAFETY: the caller's arguments, with MSG_NOSIGNAL added.
            return stream_send(fd, nosig, || unsafe {
                real::sendto(fd, buf, n, flags | libc::MSG_NOSIGNAL, a, alen)
            });
        }
        let Some(e) = entry(fd) else {
            // SAFETY: not a virtual socket of ours: the caller's arguments, untouched.
            return unsafe { real::sendto(fd, buf, n, flags, a, alen) };
        };
        let v = one(buf, n);
        // SAFETY: one iovec describing the caller's buffer; a/alen are the caller's.
        guard(|| unsafe { send_dgram(e, &v, 1, flags, a.cast(), alen) })
    }

    fn sendmsg(fd: c_int, m: *const msghdr, flags: c_int) -> ssize_t {
        if crate::held::pending() {
            let saved = Errno::last();
            // SAFETY: the caller's msghdr, read through copy_in (EFAULT, not a fault).
            let _ = catch_unwind(|| unsafe { before_passing(m) });
            saved.set_errno();
        }
        if dgram::is_stream(fd) {
            let nosig = flags & libc::MSG_NOSIGNAL != 0;
            // SAFETY: the caller's arguments, with MSG_NOSIGNAL added.
            return stream_send(fd, nosig, || unsafe {
                real::sendmsg(fd, m, flags | libc::MSG_NOSIGNAL)
            });
        }
        let Some(e) = entry(fd) else {
            // SAFETY: not a virtual socket of ours: the caller's arguments, untouched.
            return unsafe { real::sendmsg(fd, m, flags) };
        };
        // SAFETY: the caller's msghdr.
        guard(|| unsafe { sendmsg_dgram(e, m, flags) })
    }

    fn sendmmsg(fd: c_int, v: *mut mmsghdr, n: c_uint, flags: c_int) -> c_int {
        if crate::held::pending() && !v.is_null() {
            let saved = Errno::last();
            let _ = catch_unwind(|| {
                for i in 0..n.min(IOV_MAX as c_uint) as usize {
                    if !crate::held::pending() {
                        break;
                    }
                    // Entry i's msghdr, its first field: an address only, read through
                    // copy_in.
                    let m = v.wrapping_add(i).cast::<msghdr>();
                    // SAFETY: as for sendmsg.
                    unsafe { before_passing(m) };
                }
            });
            saved.set_errno();
        }
        let Some(e) = entry(fd) else {
            // SAFETY: not a virtual socket of ours: the caller's arguments, untouched.
            return unsafe { real::sendmmsg(fd, v, n, flags) };
        };
        if v.is_null() && n > 0 {
            Errno(libc::EFAULT).set_errno();
            return -1;
        }
        let n = n.min(IOV_MAX as c_uint);
        let mut sent: c_uint = 0;
        while sent < n {
            // SAFETY: entry `sent` of the caller's array of n entries.
            let mm = unsafe { &mut *v.add(sent as usize) };
            // SAFETY: its msghdr is the caller's.
            let r = guard(|| unsafe { sendmsg_dgram(e, &mm.msg_hdr, flags) });
            if r < 0 {
                if sent > 0 {
                    break;
                }
                return -1;
            }
            mm.msg_len = r as c_uint;
            sent += 1;
        }
        sent as c_int
    }

    /// libc's `syscall(2)`: programs that make socket calls through it (libuv before 1.45,
    /// as Debian 12's, sends and receives UDP with `syscall(SYS_sendmmsg, …)` and
    /// `syscall(SYS_recvmmsg, …)`: bind9's `dig`, node.js) reach the hooks above for a
    /// virtual datagram socket; every other call goes to libc's untouched. Declared with six
    /// fixed arguments after the number: on x86-64 and aarch64 Linux a variadic call passes
    /// them where fixed ones go, and libc's `syscall` reads all six whatever the caller gave,
    /// as this does (and `long`, its result, is `ssize_t` on both).
    fn syscall(
        n: libc::c_long,
        a1: libc::c_long,
        a2: libc::c_long,
        a3: libc::c_long,
        a4: libc::c_long,
        a5: libc::c_long,
        a6: libc::c_long,
    ) -> ssize_t {
        let fd = a1 as c_int;
        let ours = matches!(
            n,
            libc::SYS_sendmmsg
                | libc::SYS_recvmmsg
                | libc::SYS_sendmsg
                | libc::SYS_recvmsg
                | libc::SYS_sendto
                | libc::SYS_recvfrom
        ) && a1 == libc::c_long::from(fd)
            && dgram::hit(fd) != 0;
        if !ours {
            // SAFETY: not a call of ours: the caller's number and arguments, untouched, to
            // libc's syscall, which the caller meant to call.
            return unsafe { real::syscall(n, a1, a2, a3, a4, a5, a6) };
        }
        // SAFETY: the caller's arguments for system call n, passed to the hook of the libc
        // function of the same arguments (its pointers are the caller's, as the kernel would
        // have taken them).
        unsafe {
            match n {
                libc::SYS_sendmmsg => {
                    sendmmsg(fd, a2 as *mut mmsghdr, a3 as c_uint, a4 as c_int) as ssize_t
                }
                libc::SYS_recvmmsg => recvmmsg(
                    fd,
                    a2 as *mut mmsghdr,
                    a3 as c_uint,
                    a4 as c_int,
                    a5 as *mut timespec,
                ) as ssize_t,
                libc::SYS_sendmsg => sendmsg(fd, a2 as *const msghdr, a3 as c_int),
                libc::SYS_recvmsg => recvmsg(fd, a2 as *mut msghdr, a3 as c_int),
                libc::SYS_sendto => sendto(
                    fd,
                    a2 as *const c_void,
                    a3 as size_t,
                    a4 as c_int,
                    a5 as *const sockaddr,
                    a6 as socklen_t,
                ),
                _ => recvfrom(
                    fd,
                    a2 as *mut c_void,
                    a3 as size_t,
                    a4 as c_int,
                    a5 as *mut sockaddr,
                    a6 as *mut socklen_t,
                ),
            }
        }
    }

    fn dup(fd: c_int) -> c_int {
        // SAFETY: integer arguments only; a bad descriptor is EBADF, not a memory error.
        let r = unsafe { real::dup(fd) };
        if r >= 0 && (dgram::tracked(fd) || dgram::tracked(r)) {
            let saved = Errno::last();
            let _ = catch_unwind(|| dgram::duplicated(fd, r));
            saved.set_errno();
        }
        r
    }

    fn dup2(fd: c_int, to: c_int) -> c_int {
        // SAFETY: integer arguments only; a bad descriptor is EBADF, not a memory error.
        let r = unsafe { real::dup2(fd, to) };
        if r >= 0 && (dgram::tracked(fd) || dgram::tracked(r)) {
            let _ = catch_unwind(|| dgram::duplicated(fd, r));
        }
        r
    }

    fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
        // SAFETY: integer arguments only; a bad descriptor is EBADF, not a memory error.
        let r = unsafe { real::dup3(fd, to, flags) };
        if r >= 0 && (dgram::tracked(fd) || dgram::tracked(r)) {
            let _ = catch_unwind(|| dgram::duplicated(fd, r));
        }
        r
    }
}
