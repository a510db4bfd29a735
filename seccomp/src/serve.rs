//! What each intercepted call means: the shim's emulation ([`ioth::emu`]) run by the
//! supervisor on a duplicate of the target's descriptor.
//!
//! * `socket(AF_INET/AF_INET6, SOCK_STREAM, 0|IPPROTO_TCP)` makes a virtual socket exactly as
//!   the shim does (a socketpair end registered with the node's daemon) and installs it in
//!   the target (`SECCOMP_IOCTL_NOTIF_ADDFD` answering the call atomically). Other INET
//!   sockets (UDP, raw, ICMP, MPTCP) and `AF_PACKET` must not reach the host's network:
//!   `EPERM` (`EPROTONOSUPPORT` for a stream protocol other than TCP, so that programs
//!   trying MPTCP fall back to TCP). Every other family runs in the kernel.
//! * Calls on a descriptor: `pidfd_getfd` gives our own duplicate (same open file
//!   description, so `O_NONBLOCK`, socket options and the connect filler trick behave as in
//!   the target); if it is not a virtual socket ([`ioth::emu::virt`]) the kernel runs the
//!   call. Otherwise addresses and option values are read and written in the target's memory
//!   with `process_vm_readv/writev`, checked with `SECCOMP_IOCTL_NOTIF_ID_VALID` before
//!   acting, and the call is answered with the result or the errno.
//! * The filter makes the target's wait killable only (`WAIT_KILLABLE_RECV`), so a call we
//!   have started is never abandoned half done by a signal and restarted (a connection taken
//!   from a listener for a call that no longer waits would be lost).
//! * A blocking `connect` or `accept` runs on its own thread. A blocking accept polls the
//!   listener and the target thread's pending signals (`/proc/TID/status`): a signal it does
//!   not block ends the wait with `ERESTARTSYS`, which the kernel turns into a restart
//!   (`SA_RESTART`) or `EINTR`, as for the kernel's own accept.
//!
//! Not done: `SO_RCVTIMEO` on a blocking accept; a blocking connect waits for the end of the
//! handshake even if a handled signal arrives (fatal signals end it at once). Not a security
//! boundary: a thread of the target can change its descriptor table between our check and a
//! kernel-run call.

use crate::notify::{self, Notif};
use ioth::addr;
use ioth::emu::{self, Daemons, Virt};
use ioth_common::ctl::{MAX_OPT, WireAddr};
use ioth_common::sys::{self, Errno, Fd};
use std::os::fd::RawFd;

/// How a call is answered.
enum Answer {
    /// Let the kernel run it.
    Continue,
    /// The result (the call's return value) or the errno.
    Done(Result<i64, Errno>),
    /// Already answered (with `ADDFD_FLAG_SEND`), or no longer pending.
    Sent,
}

/// One notification, served on the caller's thread or, when it may block, on a new one.
pub fn dispatch(listener: RawFd, n: Notif) {
    let nr = n.data.nr as libc::c_long;
    if nr == libc::SYS_connect || nr == libc::SYS_accept || nr == libc::SYS_accept4 {
        // Decide cheaply whether this may block; if so, serve it on its own thread.
        match target_virt(&n) {
            Ok(Some((fd, v))) => {
                let blocking = sys::fcntl(fd.raw(), libc::F_GETFL, 0)
                    .map(|f| f & libc::O_NONBLOCK == 0)
                    .unwrap_or(false);
                if blocking {
                    let spawned = std::thread::Builder::new()
                        .name("ioth-exec-call".into())
                        .stack_size(256 << 10)
                        .spawn(move || finish(listener, &n, fd_call(listener, &n, fd, v)));
                    if spawned.is_ok() {
                        return;
                    }
                    notify::reply(listener, n.id, Err(Errno(libc::ENOMEM)));
                    return;
                }
                let a = fd_call(listener, &n, fd, v);
                finish(listener, &n, a);
            }
            Ok(None) => notify::cont(listener, n.id),
            Err(e) => notify::reply(listener, n.id, Err(e)),
        }
        return;
    }
    let a = if nr == libc::SYS_socket {
        socket(listener, &n)
    } else {
        match target_virt(&n) {
            Ok(Some((fd, v))) => fd_call(listener, &n, fd, v),
            Ok(None) => Answer::Continue,
            Err(e) => Answer::Done(Err(e)),
        }
    };
    finish(listener, &n, a);
}

fn finish(listener: RawFd, n: &Notif, a: Answer) {
    if ioth::log::enabled() {
        let what = match &a {
            Answer::Continue => "kernel".to_string(),
            Answer::Done(r) => format!("{r:?}"),
            Answer::Sent => "sent".to_string(),
        };
        ioth::log::debug_line(&format!(
            "ioth-exec: pid {} call {} {:x?} -> {what}",
            n.pid,
            n.data.nr,
            &n.data.args[..3]
        ));
    }
    match a {
        Answer::Continue => notify::cont(listener, n.id),
        Answer::Done(r) => notify::reply(listener, n.id, r),
        Answer::Sent => {}
    }
}

/// Our duplicate of the call's descriptor argument and its virtual socket, if it is one.
/// Bad descriptors are the kernel's to report (`Ok(None)`).
fn target_virt(n: &Notif) -> Result<Option<(Fd, Virt)>, Errno> {
    let pidfd = match notify::pidfd(n.pid) {
        Ok(p) => p,
        Err(e) => {
            ioth::debug!("ioth-exec: pidfd of {}: {e}", n.pid);
            return Ok(None);
        }
    };
    let fd = match notify::get_fd(&pidfd, n.data.args[0] as i32) {
        Ok(fd) => fd,
        Err(e) => {
            ioth::debug!("ioth-exec: fd {} of {}: {e}", n.data.args[0] as i32, n.pid);
            return Ok(None);
        }
    };
    Ok(emu::virt(fd.raw()).map(|v| (fd, v)))
}

fn socket(listener: RawFd, n: &Notif) -> Answer {
    let [domain, ty, protocol, ..] = n.data.args.map(|a| a as i32);
    if domain == libc::AF_PACKET {
        return Answer::Done(Err(Errno(libc::EPERM)));
    }
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Answer::Continue;
    }
    let flags = ty & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    let base = ty & !flags;
    if base != libc::SOCK_STREAM {
        return Answer::Done(Err(Errno(libc::EPERM)));
    }
    if protocol != 0 && protocol != libc::IPPROTO_TCP {
        return Answer::Done(Err(Errno(libc::EPROTONOSUPPORT)));
    }
    let fd = match emu::socket(&Daemons, domain, ty, protocol) {
        // SAFETY: emu::socket returns a descriptor it just created for us, owned by nobody
        // else.
        Ok(fd) => unsafe { Fd::from_raw(fd) },
        Err(e) => return Answer::Done(Err(e)),
    };
    let cloexec = flags & libc::SOCK_CLOEXEC != 0;
    match notify::add_fd_reply(listener, n.id, fd.raw(), cloexec) {
        Ok(_) => Answer::Sent,
        // Gone (ENOENT) or out of descriptors (EMFILE): answer if still possible.
        Err(e) => Answer::Done(Err(e)),
    }
}

/// Read an address argument (at most 128 bytes, as the kernel's `sockaddr_storage`).
fn in_addr(n: &Notif, p: u64, len: u64) -> Result<WireAddr, Errno> {
    let len = len as u32 as i32;
    if len < 0 || len as usize > 128 {
        return Err(Errno::EINVAL);
    }
    if p == 0 {
        return Err(Errno(libc::EFAULT));
    }
    addr::decode(&notify::read_mem(n.pid, p, len as usize)?)
}

/// Read a `socklen_t` argument.
fn read_len(n: &Notif, p: u64) -> Result<i32, Errno> {
    if p == 0 {
        return Err(Errno(libc::EFAULT));
    }
    let b = notify::read_mem(n.pid, p, 4)?;
    Ok(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Write an address result with the kernel's truncation rule.
fn out_addr(n: &Notif, a: &WireAddr, p: u64, lenp: u64) -> Result<(), Errno> {
    if p == 0 {
        return Ok(());
    }
    let room = read_len(n, lenp)?;
    if room < 0 {
        return Err(Errno::EINVAL);
    }
    let b = addr::encode(a);
    notify::write_mem(n.pid, p, &b[..(room as usize).min(b.len())])?;
    notify::write_mem(n.pid, lenp, &(b.len() as u32).to_ne_bytes())
}

/// Still pending? If not, nothing must be done on the target's behalf.
fn pending(listener: RawFd, n: &Notif) -> Result<(), Errno> {
    if notify::id_valid(listener, n.id) {
        Ok(())
    } else {
        Err(Errno::ENOENT)
    }
}

fn fd_call(listener: RawFd, n: &Notif, fd: Fd, v: Virt) -> Answer {
    let a = n.data.args;
    let nr = n.data.nr as libc::c_long;
    if nr == libc::SYS_accept || nr == libc::SYS_accept4 {
        let flags = if nr == libc::SYS_accept4 {
            a[3] as i32
        } else {
            0
        };
        return accept(listener, n, &fd, v, flags);
    }
    let r: Result<i64, Errno> = (|| {
        let d = fd.raw();
        match nr {
            libc::SYS_connect => {
                let to = in_addr(n, a[1], a[2])?;
                pending(listener, n)?;
                emu::connect(&Daemons, v, d, to).map(|_| 0)
            }
            libc::SYS_bind => {
                let at = in_addr(n, a[1], a[2])?;
                pending(listener, n)?;
                emu::bind(&Daemons, v, at).map(|_| 0)
            }
            libc::SYS_listen => emu::listen(&Daemons, v, d, a[1] as i32).map(|_| 0),
            libc::SYS_getsockname | libc::SYS_getpeername => {
                let name = emu::name(&Daemons, v, nr == libc::SYS_getpeername)?;
                if a[1] == 0 {
                    return Err(Errno(libc::EFAULT));
                }
                pending(listener, n)?;
                out_addr(n, &name, a[1], a[2]).map(|_| 0)
            }
            libc::SYS_setsockopt => {
                let len = a[4] as u32 as usize;
                let value = if len == 0 {
                    Vec::new()
                } else if a[3] == 0 {
                    return Err(Errno(libc::EFAULT));
                } else if len > MAX_OPT {
                    return Err(Errno::EINVAL);
                } else {
                    notify::read_mem(n.pid, a[3], len)?
                };
                pending(listener, n)?;
                emu::setsockopt(&Daemons, v, d, a[1] as i32, a[2] as i32, &value).map(|_| 0)
            }
            libc::SYS_getsockopt => {
                let room = read_len(n, a[4])?;
                if room < 0 {
                    return Err(Errno::EINVAL);
                }
                let b = emu::getsockopt(&Daemons, v, d, a[1] as i32, a[2] as i32, room as usize)?;
                if !b.is_empty() && a[3] == 0 {
                    return Err(Errno(libc::EFAULT));
                }
                pending(listener, n)?;
                notify::write_mem(n.pid, a[3], &b)?;
                notify::write_mem(n.pid, a[4], &(b.len() as u32).to_ne_bytes()).map(|_| 0)
            }
            libc::SYS_shutdown => emu::shutdown(&Daemons, v, d, a[1] as i32).map(|_| 0),
            _ => Err(Errno(libc::ENOSYS)),
        }
    })();
    match r {
        Err(Errno::ENOENT) if !notify::id_valid(listener, n.id) => Answer::Sent,
        r => Answer::Done(r),
    }
}

/// One connection from a virtual listener, without blocking (`EAGAIN` if none is queued).
fn take_connection(fd: RawFd, flags: i32) -> Result<(Fd, WireAddr), Errno> {
    let (conn, peer) = emu::take_connection(fd, libc::MSG_DONTWAIT, true)?;
    sys::set_nonblocking(conn.raw(), flags & libc::SOCK_NONBLOCK != 0)?;
    Ok((conn, peer.0))
}

fn accept(listener: RawFd, n: &Notif, fd: &Fd, v: Virt, flags: i32) -> Answer {
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return Answer::Done(Err(Errno::EINVAL));
    }
    if let Err(e) = emu::check_listening(&Daemons, v) {
        return Answer::Done(Err(e));
    }
    let (a, lenp) = (n.data.args[1], n.data.args[2]);
    if a != 0 && lenp == 0 {
        return Answer::Done(Err(Errno(libc::EFAULT)));
    }
    loop {
        if !notify::id_valid(listener, n.id) {
            return Answer::Sent;
        }
        match take_connection(fd.raw(), flags) {
            Ok((conn, peer)) => {
                if let Err(e) = out_addr(n, &peer, a, lenp) {
                    return Answer::Done(Err(e));
                }
                let cloexec = flags & libc::SOCK_CLOEXEC != 0;
                return match notify::add_fd_reply(listener, n.id, conn.raw(), cloexec) {
                    Ok(_) => Answer::Sent,
                    Err(e) => Answer::Done(Err(e)),
                };
            }
            Err(e) if e.is_again() => {
                let blocking = sys::fcntl(fd.raw(), libc::F_GETFL, 0)
                    .map(|f| f & libc::O_NONBLOCK == 0)
                    .unwrap_or(false);
                if !blocking {
                    return Answer::Done(Err(e));
                }
                // A signal for the target ends the wait as in the kernel's accept: restarted
                // under SA_RESTART (a new notification), EINTR otherwise. Nothing has been
                // taken from the listener.
                if notify::signal_pending(n.pid) {
                    return Answer::Done(Err(notify::ERESTARTSYS));
                }
                // Wake up now and then to notice signals and a target that stopped waiting.
                if let Err(e) = sys::wait_fd(fd.raw(), libc::POLLIN, 50)
                    && e != Errno::EINTR
                {
                    return Answer::Done(Err(e));
                }
            }
            Err(e) if e == Errno::EINTR => {}
            Err(e) => return Answer::Done(Err(e)),
        }
    }
}
