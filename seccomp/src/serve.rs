//! What each intercepted call means: the shim's emulation ([`ioth::emu`]) run by the
//! supervisor on a duplicate of the target's descriptor.
//!
//! * `socket(AF_INET/AF_INET6, SOCK_STREAM, 0|IPPROTO_TCP)` makes a virtual socket exactly as
//!   the shim does (a socketpair end registered with the node's daemon) and installs it in
//!   the target (`SECCOMP_IOCTL_NOTIF_ADDFD` answering the call atomically). So do UDP,
//!   ICMP echo and raw ICMP sockets, installed at a free descriptor of
//!   [`notify::DGRAM_FDS`]. Other INET sockets (raw IP other than ICMP, MPTCP) and `AF_PACKET` must not
//!   reach the host's network: `EPERM` (`EPROTONOSUPPORT` for a stream protocol other than
//!   TCP, so that programs trying MPTCP fall back to TCP). Every other family runs in the
//!   kernel.
//! * Data calls on a datagram socket (reads and writes on those descriptors, and the calls
//!   that carry an address or a `msghdr`, which the filter sends for any descriptor): the
//!   shim's datagram code (`dghooks::serve_send`/`serve_recv`) on our duplicate, the data
//!   copied between our buffers and the target's; on any other descriptor the kernel runs
//!   the call. The facts the shim keeps per datagram socket (options, hints) are kept here
//!   by inode ([`KEPT`]).
//! * Opens: `/etc/resolv.conf` for reading is the node's own ([`files::node_resolv_conf`]);
//!   every other open runs in the kernel.
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
use ioth::iface::IFREQ_LEN;
use ioth::{dghooks, dgram, files};
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
    if is_open(nr) {
        let a = open(listener, &n);
        finish(listener, &n, a);
        return;
    }
    if nr == libc::SYS_ioctl {
        let a = ioctl(&n);
        finish(listener, &n, a);
        return;
    }
    if is_data(nr) {
        match target_dgram(&n) {
            Ok(Some(fd)) => {
                if may_block(&n, &fd) {
                    let spawned = std::thread::Builder::new()
                        .name("ioth-exec-data".into())
                        .stack_size(256 << 10)
                        .spawn(move || finish(listener, &n, data_call(listener, &n, &fd)));
                    if spawned.is_err() {
                        notify::reply(listener, n.id, Err(Errno(libc::ENOMEM)));
                    }
                    return;
                }
                let a = data_call(listener, &n, &fd);
                finish(listener, &n, a);
            }
            Ok(None) => notify::cont(listener, n.id),
            Err(e) => notify::reply(listener, n.id, Err(e)),
        }
        return;
    }
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
    if domain != libc::AF_INET && domain != libc::AF_INET6 && domain != libc::AF_PACKET {
        return Answer::Continue;
    }
    let flags = ty & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    let base = ty & !flags;
    if base == libc::SOCK_STREAM && protocol != 0 && protocol != libc::IPPROTO_TCP {
        return Answer::Done(Err(Errno(libc::EPROTONOSUPPORT)));
    }
    if !emu::wants_virtual(domain, ty, protocol) {
        // Raw IP (other than ICMPv6), UDP-Lite, SCTP...: not on the host's network.
        return Answer::Done(Err(Errno(libc::EPERM)));
    }
    let fd = match emu::socket(&Daemons, domain, ty, protocol) {
        // SAFETY: emu::socket returns a descriptor it just created for us, owned by nobody
        // else.
        Ok(fd) => unsafe { Fd::from_raw(fd) },
        Err(e) => return Answer::Done(Err(e)),
    };
    let cloexec = flags & libc::SOCK_CLOEXEC != 0;
    if base == libc::SOCK_STREAM {
        return match notify::add_fd_reply(listener, n.id, fd.raw(), cloexec) {
            Ok(_) => Answer::Sent,
            // Gone (ENOENT) or out of descriptors (EMFILE): answer if still possible.
            Err(e) => Answer::Done(Err(e)),
        };
    }
    // A datagram socket goes where the filter sends its reads and writes to us.
    dgram::created(fd.raw(), domain, ty, protocol);
    if let Ok((_, ino)) = sys::fstat_id(fd.raw()) {
        keep(ino, dgram::keep(fd.raw()));
    }
    let pidfd = match notify::pidfd(n.pid) {
        Ok(p) => p,
        Err(e) => return Answer::Done(Err(e)),
    };
    for at in notify::DGRAM_FDS {
        // Only a free number: installing at a used one would replace the program's file.
        if notify::get_fd(&pidfd, at as i32) != Err(Errno::EBADF) {
            continue;
        }
        return match notify::add_fd_reply_at(listener, n.id, fd.raw(), at, cloexec) {
            Ok(_) => Answer::Sent,
            Err(e) => Answer::Done(Err(e)),
        };
    }
    Answer::Done(Err(Errno(libc::EMFILE)))
}

/// The facts the shim keeps about each virtual datagram socket (`dgram`'s table entry: its
/// family, options that ask for control messages, the connected hint), by inode: our
/// duplicates of a target's descriptor live for one call each. At most [`KEPT_MAX`]; past
/// that the oldest facts are forgotten and learnt again (asking the daemon), except the
/// options, which are lost.
static KEPT: std::sync::Mutex<Option<std::collections::HashMap<u64, u64>>> =
    std::sync::Mutex::new(None);
const KEPT_MAX: usize = 65536;

fn keep(ino: u64, bits: u64) {
    if bits == 0 {
        return;
    }
    let mut k = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    let m = k.get_or_insert_with(Default::default);
    if m.len() >= KEPT_MAX && !m.contains_key(&ino) {
        m.clear();
    }
    m.insert(ino, bits);
}

fn kept(ino: u64) -> u64 {
    let k = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    k.as_ref().and_then(|m| m.get(&ino).copied()).unwrap_or(0)
}

/// Our duplicate `fd` taken as a virtual datagram socket for one call: the facts kept about
/// it are in `dgram`'s table while this lives, and kept again (with what the call changed)
/// when it is dropped.
struct Dgram<'a> {
    fd: &'a Fd,
    ino: u64,
}

impl<'a> Dgram<'a> {
    fn adopt(fd: &'a Fd) -> Option<Dgram<'a>> {
        let (_, ino) = sys::fstat_id(fd.raw()).ok()?;
        dgram::adopt(fd.raw(), kept(ino)).then_some(Dgram { fd, ino })
    }
}

impl Drop for Dgram<'_> {
    fn drop(&mut self) {
        keep(self.ino, dgram::keep(self.fd.raw()));
    }
}

/// Run `f` on `fd` if it is a virtual datagram socket (its facts in the table meanwhile).
fn with_dgram(fd: &Fd, f: impl FnOnce(RawFd)) {
    if let Some(d) = Dgram::adopt(fd) {
        f(d.fd.raw());
    }
}

/// Read an address argument (at most 128 bytes, as the kernel's `sockaddr_storage`).
fn in_addr(n: &Notif, p: u64, len: u64) -> Result<WireAddr, Errno> {
    addr::decode(&addr_bytes(n, p, len)?)
}

/// The bytes of an address argument.
fn addr_bytes(n: &Notif, p: u64, len: u64) -> Result<Vec<u8>, Errno> {
    let len = len as u32 as i32;
    if len < 0 || len as usize > 128 {
        return Err(Errno::EINVAL);
    }
    if p == 0 {
        return Err(Errno(libc::EFAULT));
    }
    notify::read_mem(n.pid, p, len as usize)
}

/// Whether our duplicate `fd` is a virtual packet socket.
fn is_packet(fd: &Fd) -> bool {
    Dgram::adopt(fd).is_some_and(|d| ioth::dghooks::entry_is(d.fd.raw(), |e| e.is_packet()))
}

/// `ioctl` (the filter sends the socket requests, `0x8900`-`0x89ff`): the node's interface
/// and ARP requests answered as the shim answers them (`ioth::ifhooks`); the rest is the
/// kernel's.
fn ioctl(n: &Notif) -> Answer {
    let req = u64::from(n.data.args[1] as u32);
    let p = n.data.args[2];
    let r = (|| -> Result<i64, Errno> {
        if ioth::ifhooks::SET_REQS.contains(&req) {
            return Err(Errno(libc::EPERM));
        }
        if p == 0 {
            return Err(Errno(libc::EFAULT));
        }
        match req {
            libc::SIOCGIFCONF => {
                let i = ioth::iface::current().ok_or(Errno(libc::ENODEV))?;
                let reqs = ioth::iface::ifconf(&i);
                let c = notify::read_mem(n.pid, p, 16)?;
                let room = i32::from_ne_bytes([c[0], c[1], c[2], c[3]]).max(0) as usize;
                let buf =
                    u64::from_ne_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]);
                let k = if buf == 0 {
                    reqs.len()
                } else {
                    let k = (room / IFREQ_LEN).min(reqs.len());
                    notify::write_mem(n.pid, buf, &reqs[..k].concat())?;
                    k
                };
                notify::write_mem(n.pid, p, &((k * IFREQ_LEN) as i32).to_ne_bytes())?;
                Ok(0)
            }
            libc::SIOCSARP | libc::SIOCDARP | libc::SIOCGARP => {
                let b = notify::read_mem(n.pid, p, 68)?;
                ioth::ifhooks::arp(req, &b).map(i64::from)
            }
            _ if ioth::iface::is_ifreq_get(req) => {
                let i = ioth::iface::current().ok_or(Errno(libc::ENODEV))?;
                let mut r = [0u8; IFREQ_LEN];
                r.copy_from_slice(&notify::read_mem(n.pid, p, IFREQ_LEN)?);
                ioth::iface::ifreq_get(&i, req, &mut r)?;
                notify::write_mem(n.pid, p, &r)?;
                Ok(0)
            }
            _ => Err(Errno::ENOENT),
        }
    })();
    match r {
        Err(Errno::ENOENT) => Answer::Continue,
        r => Answer::Done(r),
    }
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
    out_bytes(n, &addr::encode(a), p, lenp)
}

/// The same for the bytes of an address.
fn out_bytes(n: &Notif, b: &[u8], p: u64, lenp: u64) -> Result<(), Errno> {
    if p == 0 {
        return Ok(());
    }
    let room = read_len(n, lenp)?;
    if room < 0 {
        return Err(Errno::EINVAL);
    }
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
                emu::connect(&Daemons, v, d, to)?;
                with_dgram(&fd, |d| dgram::connected(d, to.0.is_some()));
                Ok(0)
            }
            libc::SYS_bind => {
                let b = addr_bytes(n, a[1], a[2])?;
                pending(listener, n)?;
                if ioth::packet::is_ll(&b) {
                    return ioth::packet::bind(&Daemons, v, d, &b).map(|_| 0);
                }
                emu::bind(&Daemons, v, addr::decode(&b)?).map(|_| 0)
            }
            libc::SYS_getsockname if is_packet(&fd) => {
                let name = ioth::packet::name(&Daemons, v, d)?;
                if a[1] == 0 {
                    return Err(Errno(libc::EFAULT));
                }
                pending(listener, n)?;
                out_bytes(n, &name, a[1], a[2]).map(|_| 0)
            }
            // A fresh socket listens through its daemon (accept records), not as a kernel
            // listener: our accept must not block on the target's blocking listener, whose
            // file (and O_NONBLOCK) we share.
            libc::SYS_listen if emu::claims_kernel_listen(v, d) => {
                emu::listen_through_daemon(&Daemons, v, d, a[1] as i32).map(|_| 0)
            }
            libc::SYS_listen => emu::listen(&Daemons, v, d, a[1] as i32).map(|_| 0),
            libc::SYS_getsockname | libc::SYS_getpeername => {
                let name = emu::name(&Daemons, v, d, nr == libc::SYS_getpeername)?;
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
                let (level, name) = (a[1] as i32, a[2] as i32);
                emu::setsockopt(&Daemons, v, d, level, name, &value)?;
                with_dgram(&fd, |d| dgram::option_set(d, level, name, &value));
                Ok(0)
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
fn take_connection(fd: RawFd, v: Virt, flags: i32) -> Result<(Fd, WireAddr), Errno> {
    let (conn, peer) = if v.kl {
        // (A kernel listener made by a shim elsewhere: its file may be blocking.)
        if !sys::wait_fd(fd, libc::POLLIN, 0)? {
            return Err(Errno(libc::EAGAIN));
        }
        emu::take_kernel_connection(
            &Daemons,
            v,
            fd,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            false,
        )?
    } else {
        emu::take_connection(fd, libc::MSG_DONTWAIT, true, false)?
    };
    sys::set_nonblocking(conn.raw(), flags & libc::SOCK_NONBLOCK != 0)?;
    Ok((conn, peer.0))
}

fn accept(listener: RawFd, n: &Notif, fd: &Fd, v: Virt, flags: i32) -> Answer {
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return Answer::Done(Err(Errno::EINVAL));
    }
    if !v.kl
        && let Err(e) = emu::check_listening(&Daemons, v)
    {
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
        match take_connection(fd.raw(), v, flags) {
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

/// `open`, `openat`, `openat2`: the node's own `/etc/resolv.conf` instead of the host's
/// ([`files::node_resolv_conf`], as the shim answers); every other open runs in the kernel.
fn is_open(nr: libc::c_long) -> bool {
    #[cfg(target_arch = "x86_64")]
    if nr == libc::SYS_open {
        return true;
    }
    nr == libc::SYS_openat || nr == libc::SYS_openat2
}

fn open(listener: RawFd, n: &Notif) -> Answer {
    let a = n.data.args;
    let nr = n.data.nr as libc::c_long;
    let (path, flags) = if nr == libc::SYS_openat {
        (a[1], a[2] as i32)
    } else if nr == libc::SYS_openat2 {
        // struct open_how: its first field, flags (u64).
        match notify::read_mem(n.pid, a[2], 8) {
            Ok(b) => (
                a[1],
                u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])) as i32,
            ),
            Err(_) => return Answer::Continue,
        }
    } else {
        (a[0], a[1] as i32)
    };
    // A path we cannot read is the kernel's to report (EFAULT).
    match notify::read_cstr(n.pid, path, files::PATH.len()) {
        Ok(Some(p)) if p == files::PATH && flags & libc::O_ACCMODE == libc::O_RDONLY => {}
        _ => return Answer::Continue,
    }
    let fd = match files::node_resolv_conf(flags) {
        None => return Answer::Continue,
        Some(Err(e)) => return Answer::Done(Err(e)),
        // SAFETY: node_resolv_conf returns a descriptor it just made, owned by nobody else.
        Some(Ok(fd)) => unsafe { Fd::from_raw(fd) },
    };
    let cloexec = flags & libc::O_CLOEXEC != 0;
    match notify::add_fd_reply(listener, n.id, fd.raw(), cloexec) {
        Ok(_) => Answer::Sent,
        Err(e) => Answer::Done(Err(e)),
    }
}

/// The data calls the filter sends for descriptors in `DGRAM_FDS` (and `sendto`/`recvfrom`
/// with an address, and the message calls, always).
fn is_data(nr: libc::c_long) -> bool {
    matches!(
        nr,
        libc::SYS_read
            | libc::SYS_write
            | libc::SYS_readv
            | libc::SYS_writev
            | libc::SYS_sendto
            | libc::SYS_recvfrom
            | libc::SYS_sendmsg
            | libc::SYS_recvmsg
            | libc::SYS_sendmmsg
            | libc::SYS_recvmmsg
    )
}

/// Our duplicate of the call's descriptor, if it is a virtual datagram socket.
fn target_dgram(n: &Notif) -> Result<Option<Fd>, Errno> {
    let Some((fd, _)) = target_virt(n)? else {
        return Ok(None);
    };
    let ours = Dgram::adopt(&fd).is_some();
    Ok(ours.then_some(fd))
}

/// The call's `MSG_*` flags (none for read/write/readv/writev).
fn call_flags(n: &Notif) -> i32 {
    let a = n.data.args;
    match n.data.nr as libc::c_long {
        libc::SYS_sendto | libc::SYS_recvfrom => a[3] as i32,
        libc::SYS_sendmsg | libc::SYS_recvmsg => a[2] as i32,
        libc::SYS_sendmmsg | libc::SYS_recvmmsg => a[3] as i32,
        _ => 0,
    }
}

fn is_blocking(fd: &Fd) -> bool {
    sys::fcntl(fd.raw(), libc::F_GETFL, 0)
        .map(|f| f & libc::O_NONBLOCK == 0)
        .unwrap_or(false)
}

/// Whether the call may wait (a blocking socket, no `MSG_DONTWAIT`): served on its own
/// thread.
fn may_block(n: &Notif, fd: &Fd) -> bool {
    call_flags(n) & libc::MSG_DONTWAIT == 0 && is_blocking(fd)
}

/// `SO_RCVTIMEO`/`SO_SNDTIMEO` of the socket (kept by the kernel on the socketpair end).
fn sock_timeout(fd: &Fd, name: i32) -> Option<std::time::Duration> {
    let mut b = [0u8; 16];
    sys::getsockopt_bytes(fd.raw(), libc::SOL_SOCKET, name, &mut b).ok()?;
    let sec = i64::from_ne_bytes(b[..8].try_into().ok()?);
    let usec = i64::from_ne_bytes(b[8..].try_into().ok()?);
    (sec > 0 || usec > 0).then(|| {
        std::time::Duration::from_secs(sec.max(0) as u64)
            + std::time::Duration::from_micros(usec.max(0) as u64)
    })
}

/// Run `op` (a receive when `events` is `POLLIN`, else a send) as the kernel would on a
/// socket that may block: without `MSG_DONTWAIT` on a blocking socket it waits for the
/// socket, until its `SO_RCVTIMEO`/`SO_SNDTIMEO` (then `EAGAIN`) or a signal for the target
/// thread (restarted under `SA_RESTART`, else `EINTR`; `EINTR` with a timeout set, as the
/// kernel does), or until the target stops waiting (`ENOENT`).
fn wait_for<T>(
    listener: RawFd,
    n: &Notif,
    fd: &Fd,
    events: i16,
    flags: i32,
    mut op: impl FnMut(i32) -> Result<T, Errno>,
) -> Result<T, Errno> {
    if flags & libc::MSG_DONTWAIT != 0 || !is_blocking(fd) {
        return op(flags);
    }
    let name = if events == libc::POLLIN {
        libc::SO_RCVTIMEO
    } else {
        libc::SO_SNDTIMEO
    };
    let timeout = sock_timeout(fd, name);
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        pending(listener, n)?;
        match op(flags | libc::MSG_DONTWAIT) {
            Err(e) if e.is_again() => {
                if notify::signal_pending(n.pid) {
                    return Err(if timeout.is_some() {
                        Errno::EINTR
                    } else {
                        notify::ERESTARTSYS
                    });
                }
                let left = match deadline {
                    Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                        Some(l) if !l.is_zero() => l.as_millis().min(50) as i32,
                        _ => return Err(Errno::EAGAIN),
                    },
                    None => 50,
                };
                if let Err(e) = sys::wait_fd(fd.raw(), events, left.max(1))
                    && e != Errno::EINTR
                {
                    return Err(e);
                }
            }
            Err(e) if e == Errno::EINTR => {}
            r => return r,
        }
    }
}

/// A message as the target described it: its buffers, name and control data, in the
/// target's memory.
#[derive(Default)]
struct Msg {
    iov: Vec<(u64, usize)>,
    name: u64,
    /// The name's room (receive) or length (send).
    namelen: u32,
    control: u64,
    controllen: usize,
}

/// A send's data, name and control data, copied from the target.
struct Gathered {
    data: Vec<u8>,
    name: Vec<u8>,
    control: Vec<u8>,
}

/// The largest datagram (with its UDP header, over IPv6), and so the largest buffer a
/// receive needs.
const MAX_DGRAM: usize = 65536;
/// Most control data taken from a send (the kernel's `optmem_max` is 20 KiB by default).
const MAX_CONTROL: usize = 65536;
/// `UIO_MAXIOV`.
const MAX_IOV: u64 = 1024;

/// `struct msghdr` (LP64): name 0, namelen 8, iov 16, iovlen 24, control 32, controllen 40,
/// flags 48; 56 bytes. `struct mmsghdr` adds `msg_len` at 56; 64 bytes.
const MSGHDR: usize = 56;
const MMSGHDR: u64 = 64;

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

impl Msg {
    fn one(buf: u64, len: u64) -> Msg {
        Msg {
            iov: vec![(buf, len as usize)],
            ..Msg::default()
        }
    }

    fn iovecs(n: &Notif, at: u64, cnt: u64) -> Result<Vec<(u64, usize)>, Errno> {
        if cnt > MAX_IOV {
            return Err(Errno::EINVAL);
        }
        if cnt == 0 {
            return Ok(Vec::new());
        }
        let b = notify::read_mem(n.pid, at, cnt as usize * 16)?;
        Ok(b.chunks(16)
            .map(|c| (word(c, 0), word(c, 8) as usize))
            .collect())
    }

    fn readv(n: &Notif, at: u64, cnt: u64) -> Result<Msg, Errno> {
        Ok(Msg {
            iov: Msg::iovecs(n, at, cnt)?,
            ..Msg::default()
        })
    }

    /// The target's `msghdr` at `at`.
    fn msghdr(n: &Notif, at: u64) -> Result<Msg, Errno> {
        let h = notify::read_mem(n.pid, at, MSGHDR)?;
        let iovlen = word(&h, 24);
        if iovlen > MAX_IOV {
            return Err(Errno(libc::EMSGSIZE));
        }
        Ok(Msg {
            iov: Msg::iovecs(n, word(&h, 16), iovlen)?,
            name: word(&h, 0),
            namelen: u32::from_ne_bytes(h[8..12].try_into().unwrap_or([0; 4])),
            control: word(&h, 32),
            controllen: word(&h, 40) as usize,
        })
    }

    fn room(&self) -> usize {
        self.iov.iter().fold(0usize, |a, v| a.saturating_add(v.1))
    }

    /// Everything the target sends.
    fn gather(&self, n: &Notif) -> Result<Gathered, Errno> {
        if self.room() > MAX_DGRAM {
            return Err(Errno(libc::EMSGSIZE));
        }
        let mut data = Vec::with_capacity(self.room());
        for (p, l) in &self.iov {
            if *l > 0 {
                data.extend(notify::read_mem(n.pid, *p, *l)?);
            }
        }
        let name = if self.name == 0 || self.namelen == 0 {
            Vec::new()
        } else if self.namelen as usize > 128 {
            return Err(Errno::EINVAL);
        } else {
            notify::read_mem(n.pid, self.name, self.namelen as usize)?
        };
        let control = if self.control == 0 || self.controllen == 0 {
            Vec::new()
        } else if self.controllen > MAX_CONTROL {
            return Err(Errno(libc::ENOBUFS));
        } else {
            notify::read_mem(n.pid, self.control, self.controllen)?
        };
        Ok(Gathered {
            data,
            name,
            control,
        })
    }

    fn send(&self, listener: RawFd, n: &Notif, d: &Dgram, flags: i32) -> Result<usize, Errno> {
        let Gathered {
            data,
            name,
            control,
        } = self.gather(n)?;
        pending(listener, n)?;
        wait_for(listener, n, d.fd, libc::POLLOUT, flags, |f| {
            dghooks::serve_send(d.fd.raw(), &data, &name, &control, f)
        })
    }

    /// Receive one datagram into the target's buffers; what `recvmsg` reports besides.
    fn recv(
        &self,
        listener: RawFd,
        n: &Notif,
        d: &Dgram,
        flags: i32,
    ) -> Result<dghooks::Received, Errno> {
        let mut buf = vec![0u8; self.room().min(MAX_DGRAM)];
        let mut name = vec![
            0u8;
            if self.name == 0 {
                0
            } else {
                self.namelen.min(128) as usize
            }
        ];
        let mut control = vec![
            0u8;
            if self.control == 0 {
                0
            } else {
                self.controllen.min(MAX_CONTROL)
            }
        ];
        let got = wait_for(listener, n, d.fd, libc::POLLIN, flags, |f| {
            dghooks::serve_recv(d.fd.raw(), &mut buf, &mut name, &mut control, f)
        })?;
        // The datagram is taken: a target that stopped waiting loses it, as with a signal
        // after the kernel's copy. Bad buffers are EFAULT after the datagram is consumed,
        // as in the kernel.
        let mut left = &buf[..got.ret.min(buf.len())];
        for (p, l) in &self.iov {
            if left.is_empty() {
                break;
            }
            let k = (*l).min(left.len());
            notify::write_mem(n.pid, *p, &left[..k])?;
            left = &left[k..];
        }
        if !name.is_empty() {
            let k = (got.namelen as usize).min(name.len());
            notify::write_mem(n.pid, self.name, &name[..k])?;
        }
        if got.controllen > 0 {
            notify::write_mem(n.pid, self.control, &control[..got.controllen])?;
        }
        Ok(got)
    }
}

/// Write back what `recvmsg` reports in the target's `msghdr` at `at`.
fn put_msghdr(n: &Notif, at: u64, got: &dghooks::Received) -> Result<(), Errno> {
    notify::write_mem(n.pid, at + 8, &got.namelen.to_ne_bytes())?;
    notify::write_mem(n.pid, at + 40, &(got.controllen as u64).to_ne_bytes())?;
    notify::write_mem(n.pid, at + 48, &got.flags.to_ne_bytes())
}

fn data_call(listener: RawFd, n: &Notif, fd: &Fd) -> Answer {
    let Some(d) = Dgram::adopt(fd) else {
        return Answer::Continue;
    };
    let a = n.data.args;
    let nr = n.data.nr as libc::c_long;
    let r: Result<i64, Errno> = (|| {
        let r = match nr {
            libc::SYS_read => Msg::one(a[1], a[2]).recv(listener, n, &d, 0)?.ret,
            libc::SYS_readv => Msg::readv(n, a[1], a[2])?.recv(listener, n, &d, 0)?.ret,
            libc::SYS_recvfrom => {
                let mut m = Msg::one(a[1], a[2]);
                if a[4] != 0 {
                    let room = read_len(n, a[5])?;
                    if room < 0 {
                        return Err(Errno::EINVAL);
                    }
                    (m.name, m.namelen) = (a[4], room as u32);
                }
                let got = m.recv(listener, n, &d, a[3] as i32)?;
                if a[4] != 0 {
                    notify::write_mem(n.pid, a[5], &got.namelen.to_ne_bytes())?;
                }
                got.ret
            }
            libc::SYS_recvmsg => {
                let got = Msg::msghdr(n, a[1])?.recv(listener, n, &d, a[2] as i32)?;
                put_msghdr(n, a[1], &got)?;
                got.ret
            }
            libc::SYS_write => Msg::one(a[1], a[2]).send(listener, n, &d, 0)?,
            libc::SYS_writev => Msg::readv(n, a[1], a[2])?.send(listener, n, &d, 0)?,
            libc::SYS_sendto => {
                let mut m = Msg::one(a[1], a[2]);
                if a[4] != 0 {
                    (m.name, m.namelen) = (a[4], a[5] as u32);
                }
                m.send(listener, n, &d, a[3] as i32)?
            }
            libc::SYS_sendmsg => Msg::msghdr(n, a[1])?.send(listener, n, &d, a[2] as i32)?,
            libc::SYS_sendmmsg | libc::SYS_recvmmsg => return mmsg(listener, n, &d),
            _ => return Err(Errno(libc::ENOSYS)),
        };
        Ok(r as i64)
    })();
    match r {
        Err(Errno::ENOENT) if !notify::id_valid(listener, n.id) => Answer::Sent,
        r => Answer::Done(r),
    }
}

/// `sendmmsg`/`recvmmsg`: one message after the other, as the shim does; the count done, or
/// the first error when none was.
fn mmsg(listener: RawFd, n: &Notif, d: &Dgram) -> Result<i64, Errno> {
    let a = n.data.args;
    let recv = n.data.nr as libc::c_long == libc::SYS_recvmmsg;
    let (vec, vlen, flags) = (a[1], (a[2] as u32).min(MAX_IOV as u32), a[3] as i32);
    let deadline = if recv && a[4] != 0 {
        let t = notify::read_mem(n.pid, a[4], 16)?;
        let (sec, nsec) = (word(&t, 0) as i64, word(&t, 8) as i64);
        if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
            return Err(Errno::EINVAL);
        }
        Some(std::time::Instant::now() + std::time::Duration::new(sec as u64, nsec as u32))
    } else {
        None
    };
    let mut done = 0u32;
    while done < vlen {
        let at = vec + MMSGHDR * u64::from(done);
        let m = Msg::msghdr(n, at);
        let r = m.and_then(|m| {
            if recv {
                let mut f = flags & !libc::MSG_WAITFORONE;
                if done > 0 && flags & libc::MSG_WAITFORONE != 0 {
                    f |= libc::MSG_DONTWAIT;
                }
                let got = m.recv(listener, n, d, f)?;
                put_msghdr(n, at, &got)?;
                Ok(got.ret)
            } else {
                m.send(listener, n, d, flags)
            }
        });
        match r {
            Ok(len) => notify::write_mem(n.pid, at + 56, &(len as u32).to_ne_bytes())?,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
        done += 1;
        if deadline.is_some_and(|t| std::time::Instant::now() >= t) {
            break;
        }
    }
    Ok(i64::from(done))
}
