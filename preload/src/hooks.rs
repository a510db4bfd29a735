//! The exported hooks: a thin FFI layer over [`crate::emu`].
//!
//! Each hook first asks whether its fd is a virtual socket (one `getsockname`); if not, the
//! call goes to the real libc function untouched (the prologue [`crate::hook::hooks!`]
//! writes). Virtual sockets get the emulation, with the
//! caller's pointers turned into slices here and nowhere else. No panic crosses this
//! boundary: a panic becomes `EIO` and -1, and the call is never re-run on the kernel.
//!
//! Not hooked on purpose (the fd is a real kernel socket): `select`, `close`, `fcntl`
//! (`FIONBIO` works natively). `read`, `write`, `send*`, `recv*` and `dup*` are hooked in
//! [`crate::dghooks`] only to frame datagram sockets: for any other fd they cost one atomic
//! load (`sendmsg` one more, and while the process holds a registration back, a look at
//! its control data: `crate::held`); `sendfile`/`splice` there only change the errno of a failed call, and `poll`/`epoll`
//! only the events of a datagram socket with a pending error. `ioctl`: [`crate::ifhooks`]. `recvfrom`/`recvmsg` already report an empty
//! peer address on a virtual TCP socket, as Linux TCP does, because the daemon's end of the
//! socketpair has no name.

use crate::addr;
use crate::emu::{self, Daemons, Virt};
use crate::hook::hooks;
use ioth_common::ctl::WireAddr;
use ioth_common::sys::Errno;
use libc::{c_int, c_void, sockaddr, socklen_t};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Run the emulation; errors set errno and give -1, panics give `EIO`.
pub(crate) fn guard<T: From<i8>>(f: impl FnOnce() -> Result<T, Errno>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            e.set_errno();
            T::from(-1)
        }
        Err(_) => {
            Errno::EIO.set_errno();
            T::from(-1)
        }
    }
}

/// The virtual socket behind `fd`, if any (never panics).
fn virt(fd: c_int) -> Option<Virt> {
    catch_unwind(|| emu::virt(fd)).ok().flatten()
}

// The caller's address and option structures are read and written through
// `sys::copy_in`/`sys::copy_out`: a bad pointer gives `EFAULT`, as from the kernel, instead
// of a fault inside the shim. (Data buffers go to the kernel as they are; it checks them.)

/// Read `n` bytes of a caller's argument at `p` (`EFAULT` if not readable).
///
/// # Safety
/// `p` must be null or point to `n` readable bytes (see `sys::copy_in`).
pub(crate) unsafe fn read_arg(p: *const c_void, n: usize) -> Result<Vec<u8>, Errno> {
    let mut b = vec![0u8; n];
    // SAFETY: the caller's contract, passed on.
    unsafe { ioth_common::sys::copy_in(p.cast(), &mut b) }?;
    Ok(b)
}

/// Read a caller's `socklen_t` (`EFAULT` if null or not readable).
///
/// # Safety
/// `len` must be null or valid (see `sys::copy_in`).
pub(crate) unsafe fn read_len(len: *const socklen_t) -> Result<socklen_t, Errno> {
    let mut b = [0u8; 4];
    // SAFETY: the caller's contract, passed on.
    unsafe { ioth_common::sys::copy_in(len.cast(), &mut b) }?;
    Ok(socklen_t::from_ne_bytes(b))
}

/// Write `b` with the kernel's truncation rule to a caller's buffer `p` of `*len` bytes
/// (copy at most that, report the full length in `*len`). `EFAULT` if `len` or `p` is bad.
///
/// # Safety
/// `p`, `len` as the caller's contract says (see `sys::copy_out`).
pub(crate) unsafe fn write_truncated(
    b: &[u8],
    p: *mut c_void,
    len: *mut socklen_t,
) -> Result<(), Errno> {
    // SAFETY: the caller's contract, passed on.
    let room = unsafe { read_len(len) }? as usize;
    let n = room.min(b.len());
    let full = (b.len() as socklen_t).to_ne_bytes();
    // SAFETY: the caller's contract, passed on; at most *len bytes go to p.
    unsafe { ioth_common::sys::copy_out(&[(p.cast(), &b[..n]), (len.cast(), &full)]) }
}

/// Read a caller's address argument.
///
/// # Safety
/// `p` must be null or point to `len` readable bytes.
unsafe fn in_addr(p: *const sockaddr, len: socklen_t) -> Result<WireAddr, Errno> {
    if p.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: the caller guarantees len readable bytes at p; we read at most that.
    let b = unsafe { read_arg(p.cast(), (len as usize).min(128)) }?;
    addr::decode(&b)
}

/// Write an address result with the kernel's truncation rule (copy at most `*len` bytes,
/// report the full length).
///
/// # Safety
/// `p` null (no address wanted) or `*len` writable bytes at `p`; `len` null or valid.
unsafe fn out_addr(a: &WireAddr, p: *mut sockaddr, len: *mut socklen_t) -> Result<(), Errno> {
    if p.is_null() {
        return Ok(());
    }
    // SAFETY: the caller vouches for p and len.
    unsafe { write_truncated(&addr::encode(a), p.cast(), len) }
}

/// What `socket` makes of its arguments; `None`: a kernel socket.
enum NewSocket {
    /// TCP, UDP or ICMP over IPv4/IPv6 in an active node.
    Virtual,
    /// An rtnetlink socket in an active node ([`crate::netlink`]).
    Netlink,
    /// A raw IP socket the node cannot offer: `EPERM`, an unprivileged kernel's answer (ping
    /// then falls back to a ping socket).
    RefusedRaw,
}

fn new_socket(domain: c_int, ty: c_int, protocol: c_int) -> Option<NewSocket> {
    let active = |wants: fn(c_int, c_int, c_int) -> bool| {
        catch_unwind(|| wants(domain, ty, protocol) && crate::node::active()).unwrap_or(false)
    };
    if active(emu::wants_virtual) {
        Some(NewSocket::Virtual)
    } else if active(crate::netlink::wants) {
        Some(NewSocket::Netlink)
    } else {
        crate::dgram::refuse_raw(domain, ty).then_some(NewSocket::RefusedRaw)
    }
}

/// Is `fd` a virtual netlink socket ([`crate::netlink`])? One atomic load for other fds.
fn netlink_fd(fd: c_int) -> bool {
    crate::dghooks::entry_is(fd, |e| e.is_netlink())
}

/// Is `fd` a virtual packet socket ([`crate::packet`])? One atomic load for other fds.
fn packet_fd(fd: c_int) -> bool {
    crate::dghooks::entry_is(fd, |e| e.is_packet())
}

/// A socket of ours, for the calls that also serve virtual netlink sockets.
enum Sock {
    Netlink,
    Virt(Virt),
}

/// `fd` as a virtual netlink socket (when `netlink` says the call may be for one) or as a
/// virtual socket.
fn sock(fd: c_int, netlink: bool) -> Option<Sock> {
    if netlink && netlink_fd(fd) {
        Some(Sock::Netlink)
    } else {
        virt(fd).map(Sock::Virt)
    }
}

/// Shared body of `accept` and `accept4`.
///
/// # Safety
/// As for accept4(2).
unsafe fn do_accept(
    v: Virt,
    fd: c_int,
    a: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    if !v.kl && guard(|| emu::check_listening(&Daemons, v).map(|_| 0)) < 0 {
        return -1;
    }
    guard(|| {
        if !a.is_null() && len.is_null() {
            return Err(Errno(libc::EFAULT));
        }
        let (conn, peer) = if v.kl {
            emu::accept_kernel(&Daemons, v, fd, flags)?
        } else {
            emu::accept(fd, flags)?
        };
        // SAFETY: a/len come from the caller of accept, who vouches for them.
        if let Err(e) = unsafe { out_addr(&peer, a, len) } {
            ioth_common::sys::close(conn);
            return Err(e);
        }
        crate::dgram::stream_mark(conn, true);
        crate::vcache::forget(conn);
        Ok(conn)
    })
}

hooks! {
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int
    where new_socket(domain, ty, protocol) => |kind| {
        match kind {
            NewSocket::Netlink => guard(|| crate::netlink::create(ty)),
            NewSocket::RefusedRaw => {
                Errno(libc::EPERM).set_errno();
                -1
            }
            NewSocket::Virtual => guard(|| {
                let fd = emu::socket(&Daemons, domain, ty, protocol)?;
                crate::dgram::created(fd, domain, ty, protocol);
                Ok(fd)
            }),
        }
    }

    fn bind(fd: c_int, a: *const sockaddr, len: socklen_t) -> c_int
    where sock(fd, true) => |s| {
        match s {
            Sock::Netlink => guard(|| {
                if a.is_null() {
                    return Err(Errno(libc::EFAULT));
                }
                // SAFETY: the caller guarantees len readable bytes at a; we read at most 12.
                let b = unsafe { read_arg(a.cast(), (len as usize).min(12)) }?;
                crate::netlink::bind(fd, &b).map(|_| 0)
            }),
            Sock::Virt(v) => guard(|| {
                if a.is_null() {
                    return Err(Errno(libc::EFAULT));
                }
                // SAFETY: the caller guarantees len readable bytes at a; we read at most that.
                let b = unsafe { read_arg(a.cast(), (len as usize).min(128)) }?;
                if crate::packet::is_ll(&b) {
                    return crate::packet::bind(&Daemons, v, fd, &b).map(|_| 0);
                }
                emu::bind(&Daemons, v, crate::addr::decode(&b)?).map(|_| 0)
            }),
        }
    }

    fn listen(fd: c_int, backlog: c_int) -> c_int
    where virt(fd) => |v| {
        guard(|| emu::listen(&Daemons, v, fd, backlog).map(|_| 0))
    }

    fn accept(fd: c_int, a: *mut sockaddr, len: *mut socklen_t) -> c_int
    where virt(fd) => |v| {
        // SAFETY: the caller's arguments, as for accept(2).
        unsafe { do_accept(v, fd, a, len, 0) }
    }

    fn accept4(fd: c_int, a: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int
    where virt(fd) => |v| {
        // SAFETY: the caller's arguments, as for accept4(2).
        unsafe { do_accept(v, fd, a, len, flags) }
    }

    fn connect(fd: c_int, a: *const sockaddr, len: socklen_t) -> c_int
    where virt(fd) => |v| {
        guard(|| {
            // SAFETY: a/len come from the caller of connect, who vouches for them.
            let to = unsafe { in_addr(a, len) }?;
            emu::connect(&Daemons, v, fd, to)?;
            crate::dgram::connected(fd, to.0.is_some());
            Ok(0)
        })
    }

    fn getsockname(fd: c_int, a: *mut sockaddr, len: *mut socklen_t) -> c_int
    where sock(fd, true) => |s| {
        match s {
            Sock::Netlink => guard(|| {
                if a.is_null() || len.is_null() {
                    return Err(Errno(libc::EFAULT));
                }
                let n = crate::netlink::name(fd)?;
                // SAFETY: a/len come from the caller, who vouches for them.
                unsafe { write_truncated(&n, a.cast(), len) }.map(|_| 0)
            }),
            Sock::Virt(v) => guard(|| {
                if packet_fd(fd) {
                    let n = crate::packet::name(&Daemons, v, fd)?;
                    if a.is_null() || len.is_null() {
                        return Err(Errno(libc::EFAULT));
                    }
                    // SAFETY: a/len come from the caller, who vouches for them.
                    return unsafe { write_truncated(&n, a.cast(), len) }.map(|_| 0);
                }
                let name = emu::name(&Daemons, v, fd, false)?;
                if a.is_null() {
                    return Err(Errno(libc::EFAULT));
                }
                // SAFETY: a/len come from the caller, who vouches for them.
                unsafe { out_addr(&name, a, len) }.map(|_| 0)
            }),
        }
    }

    fn getpeername(fd: c_int, a: *mut sockaddr, len: *mut socklen_t) -> c_int
    where virt(fd) => |v| {
        guard(|| {
            let name = emu::name(&Daemons, v, fd, true)?;
            if a.is_null() {
                return Err(Errno(libc::EFAULT));
            }
            // SAFETY: a/len come from the caller, who vouches for them.
            unsafe { out_addr(&name, a, len) }.map(|_| 0)
        })
    }

    fn getsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        val: *mut c_void,
        len: *mut socklen_t,
    ) -> c_int
    where virt(fd) => |v| {
        guard(|| {
            // SAFETY: len is the caller's.
            let room = unsafe { read_len(len) }? as i32;
            if room < 0 {
                return Err(Errno::EINVAL);
            }
            let b = emu::getsockopt(&Daemons, v, fd, level, name, room as usize)?;
            let got = (b.len() as socklen_t).to_ne_bytes();
            // SAFETY: val has room for *len bytes (b.len() <= *len); len is the caller's.
            unsafe { ioth_common::sys::copy_out(&[(val.cast(), &b), (len.cast(), &got)]) }?;
            Ok(0)
        })
    }

    fn setsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        val: *const c_void,
        len: socklen_t,
    ) -> c_int
    where sock(fd, level == libc::SOL_NETLINK) => |s| {
        let v = match s {
            Sock::Netlink => {
                return guard(|| {
                    // The kernel reads an int when there is room for one (else 0).
                    let value = if len >= 4 {
                        // SAFETY: the caller guarantees len (>= 4) readable bytes at val.
                        unsafe { read_arg(val, 4) }?
                    } else {
                        Vec::new()
                    };
                    crate::netlink::setsockopt(fd, name, &value).map(|_| 0)
                });
            }
            Sock::Virt(v) => v,
        };
        guard(|| {
            if len as usize > ioth_common::ctl::MAX_OPT {
                return Err(Errno::EINVAL);
            }
            // SAFETY: the caller guarantees len readable bytes at val.
            let value = unsafe { read_arg(val, len as usize) }?;
            emu::setsockopt(&Daemons, v, fd, level, name, &value)?;
            crate::dgram::option_set(fd, level, name, &value);
            Ok(0)
        })
    }

    fn shutdown(fd: c_int, how: c_int) -> c_int
    where virt(fd) => |v| {
        guard(|| emu::shutdown(&Daemons, v, fd, how).map(|_| 0))
    }
}
