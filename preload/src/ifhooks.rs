//! Exported hooks that show the node's interface ([`crate::iface`]) instead of the host's:
//! `ioctl` (interface and ARP requests) and glibc's `getifaddrs`, `if_nametoindex`,
//! `if_indextoname`, `if_nameindex`, which open their own netlink or ioctl sockets inside
//! libc where no other hook sees them.
//!
//! In a process without an active node every call goes to libc untouched; `ioctl` with any
//! other request costs one comparison. The lists returned are laid out the way glibc frees
//! them: `getifaddrs` returns one `malloc` block (glibc's `freeifaddrs` is `free`), and
//! `if_nameindex` an array whose names are separate `malloc` strings (glibc's
//! `if_freenameindex`), so neither free function needs a hook.
//!
//! `SIOCSARP` becomes a `SetNeighbour` request to the node's daemon (see
//! `stackd/src/neigh.rs`); `SIOCDARP` is accepted and does nothing; `SIOCGARP` says `ENXIO`;
//! setting interface properties (`SIOCSIF*`) fails with `EPERM`. `FIONREAD` on a virtual
//! datagram socket is the size of the next datagram, as for UDP (the kernel would count the
//! whole `SOCK_SEQPACKET` queue with its headers); on other fds it is the kernel's.

use crate::hook::hooks;
use crate::hooks::guard;
use crate::iface::{self, IFREQ_LEN};
use ioth_common::ctl::{Request, WireAddr};
use ioth_common::sys::Errno;
use libc::{c_char, c_int, c_uint, c_ulong, c_void};
use std::net::{IpAddr, SocketAddr};
use std::panic::catch_unwind;

/// `Some` in a process with an active node: the interface calls are ours.
fn active() -> Option<()> {
    catch_unwind(crate::node::active)
        .unwrap_or(false)
        .then_some(())
}

/// Requests that set interface properties: `EPERM`.
pub const SET_REQS: [c_ulong; 7] = [
    libc::SIOCSIFFLAGS,
    libc::SIOCSIFADDR,
    libc::SIOCSIFNETMASK,
    libc::SIOCSIFBRDADDR,
    libc::SIOCSIFMTU,
    libc::SIOCSIFHWADDR,
    libc::SIOCSIFNAME,
];

fn ours(req: c_ulong) -> bool {
    iface::is_ifreq_get(req)
        || matches!(
            req,
            libc::SIOCGIFCONF | libc::SIOCSARP | libc::SIOCDARP | libc::SIOCGARP
        )
        || SET_REQS.contains(&req)
}

/// What an `ioctl` request is to the shim; `None`: the kernel's.
enum Ioctl {
    /// `FIONREAD` on a virtual datagram socket: the next datagram's size, or the error.
    NextLen(Result<usize, Errno>),
    /// An interface or ARP request in a process with an active node.
    Iface,
}

fn ioctl_kind(fd: c_int, req: c_ulong, arg: *mut c_void) -> Option<Ioctl> {
    if req == libc::FIONREAD
        && crate::dgram::hit(fd) != 0
        && !arg.is_null()
        && let Some(r) = crate::dgram::next_len(fd)
    {
        return Some(Ioctl::NextLen(r));
    }
    if ours(req) {
        active().map(|()| Ioctl::Iface)
    } else {
        None
    }
}

/// `ioctl(fd, req, arg)` for the interface and ARP requests (see the module documentation).
///
/// # Safety
/// `arg` is null or points to the structure `req` takes (`ifconf`, `arpreq`, `ifreq`).
unsafe fn iface_ioctl(req: c_ulong, arg: *mut c_void) -> c_int {
    guard(|| {
        if SET_REQS.contains(&req) {
            return Err(Errno(libc::EPERM));
        }
        if arg.is_null() {
            return Err(Errno(libc::EFAULT));
        }
        match req {
            libc::SIOCGIFCONF => {
                let i = iface::current().ok_or(Errno(libc::ENODEV))?;
                // SAFETY: arg points to the caller's struct ifconf.
                unsafe { ifconf(&i, arg.cast()) }
            }
            libc::SIOCSARP | libc::SIOCDARP | libc::SIOCGARP => {
                // SAFETY: arg points to the caller's struct arpreq (68 bytes).
                let b = unsafe { std::slice::from_raw_parts(arg.cast::<u8>(), 68) };
                arp(req, b)
            }
            _ => {
                let i = iface::current().ok_or(Errno(libc::ENODEV))?;
                let mut r = [0u8; IFREQ_LEN];
                // SAFETY: arg points to the caller's struct ifreq (40 bytes).
                unsafe {
                    std::ptr::copy_nonoverlapping(arg.cast::<u8>(), r.as_mut_ptr(), IFREQ_LEN)
                };
                iface::ifreq_get(&i, req, &mut r)?;
                // SAFETY: as above.
                unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), arg.cast::<u8>(), IFREQ_LEN) };
                Ok(0)
            }
        }
    })
}

/// `SIOCSARP` (an entry in the node's ARP cache), `SIOCDARP` (accepted, nothing done),
/// `SIOCGARP` (`ENXIO`) with the caller's `struct arpreq`.
pub fn arp(req: c_ulong, b: &[u8]) -> Result<c_int, Errno> {
    let (ip, mac) = iface::parse_arpreq(b)?;
    match req {
        libc::SIOCSARP => {
            let r = crate::node::call_home(
                &Request::SetNeighbour {
                    addr: WireAddr(Some(SocketAddr::new(IpAddr::V4(ip), 0))),
                    mac,
                },
                None,
            )?;
            r.0.into_result().map(|_| 0)
        }
        libc::SIOCDARP => Ok(0),
        _ => Err(Errno(libc::ENXIO)),
    }
}

/// `SIOCGIFCONF` into the caller's `struct ifconf` (`ifc_len` at 0, `ifc_buf` at 8).
///
/// # Safety
/// `c` points to a valid `struct ifconf` whose buffer (if any) has `ifc_len` bytes.
unsafe fn ifconf(i: &iface::Iface, c: *mut u8) -> Result<c_int, Errno> {
    let reqs = iface::ifconf(i);
    // SAFETY: c points to the caller's ifconf.
    unsafe {
        let len_p = c.cast::<c_int>();
        let buf = std::ptr::read_unaligned(c.add(8).cast::<*mut u8>());
        if buf.is_null() {
            std::ptr::write_unaligned(len_p, (reqs.len() * IFREQ_LEN) as c_int);
            return Ok(0);
        }
        let room = std::ptr::read_unaligned(len_p).max(0) as usize;
        let n = (room / IFREQ_LEN).min(reqs.len());
        for (k, r) in reqs.iter().take(n).enumerate() {
            std::ptr::copy_nonoverlapping(r.as_ptr(), buf.add(k * IFREQ_LEN), IFREQ_LEN);
        }
        std::ptr::write_unaligned(len_p, (n * IFREQ_LEN) as c_int);
    }
    Ok(0)
}

/// One `malloc` block: the entries, then 32-byte address slots, then the name.
///
/// # Safety
/// None beyond allocating; returns a block the caller frees with `free`.
unsafe fn build_ifaddrs(list: &[iface::IfaEntry]) -> Result<*mut libc::ifaddrs, Errno> {
    const SLOT: usize = 32;
    let n = list.len();
    let ent = std::mem::size_of::<libc::ifaddrs>();
    let slots_at = n * ent;
    let name_at = slots_at + n * 3 * SLOT;
    let total = name_at + iface::NAME.len() + 1;
    // SAFETY: calloc of a non-zero size; checked for NULL.
    let base = unsafe { libc::calloc(1, total) }.cast::<u8>();
    if base.is_null() {
        return Err(Errno(libc::ENOMEM));
    }
    // SAFETY: every write below stays inside the `total` bytes just allocated: entries in
    // [0, slots_at), three SLOT-byte slots per entry (each address at most 28 bytes), the
    // name at name_at. The block is suitably aligned (malloc) and ent is a multiple of 8.
    unsafe {
        let name = base.add(name_at);
        std::ptr::copy_nonoverlapping(iface::NAME.as_ptr(), name, iface::NAME.len());
        for (k, e) in list.iter().enumerate() {
            let ifa = base.add(k * ent).cast::<libc::ifaddrs>();
            let slot = |j: usize, v: &Option<Vec<u8>>| -> *mut libc::sockaddr {
                match v {
                    Some(b) if b.len() <= SLOT => {
                        let p = base.add(slots_at + (k * 3 + j) * SLOT);
                        std::ptr::copy_nonoverlapping(b.as_ptr(), p, b.len());
                        p.cast()
                    }
                    _ => std::ptr::null_mut(),
                }
            };
            (*ifa).ifa_next = if k + 1 < n {
                base.add((k + 1) * ent).cast()
            } else {
                std::ptr::null_mut()
            };
            (*ifa).ifa_name = name.cast();
            (*ifa).ifa_flags = e.flags;
            (*ifa).ifa_addr = slot(0, &Some(e.addr.clone()));
            (*ifa).ifa_netmask = slot(1, &e.netmask);
            (*ifa).ifa_ifu = slot(2, &e.broad);
            (*ifa).ifa_data = std::ptr::null_mut();
        }
    }
    Ok(base.cast())
}

hooks! {
    /// `ioctl(fd, req, arg)`: declared with one pointer argument (the ABI passes the variadic
    /// argument in the same register; requests without one never reach our code).
    fn ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> c_int
    where ioctl_kind(fd, req, arg) => |kind| {
        match kind {
            Ioctl::NextLen(r) => guard(|| {
                let n = r? as c_int;
                // SAFETY: FIONREAD's argument is the caller's int (checked non-null).
                unsafe { arg.cast::<c_int>().write_unaligned(n) };
                Ok(0)
            }),
            // SAFETY: arg is what the caller passed with req.
            Ioctl::Iface => unsafe { iface_ioctl(req, arg) },
        }
    }

    fn getifaddrs(out: *mut *mut libc::ifaddrs) -> c_int
    where active() => |()| {
        guard(|| {
            if out.is_null() {
                return Err(Errno(libc::EFAULT));
            }
            let i = iface::current().ok_or(Errno(libc::ENODEV))?;
            let list = iface::ifaddrs(&i);
            // SAFETY: out is the caller's valid pointer; build writes a block it allocated.
            unsafe { *out = build_ifaddrs(&list)? };
            Ok(0)
        })
    }

    fn if_nametoindex(name: *const c_char) -> c_uint
    where active() => |()| {
        if name.is_null() {
            Errno(libc::ENODEV).set_errno();
            return 0;
        }
        // SAFETY: name is the caller's NUL-terminated string.
        let n = unsafe { std::ffi::CStr::from_ptr(name) };
        if n.to_bytes() == iface::NAME.as_bytes() {
            iface::INDEX
        } else {
            Errno(libc::ENODEV).set_errno();
            0
        }
    }

    fn if_indextoname(index: c_uint, buf: *mut c_char) -> *mut c_char
    where active() => |()| {
        if index != iface::INDEX || buf.is_null() {
            Errno(libc::ENXIO).set_errno();
            return std::ptr::null_mut();
        }
        // SAFETY: buf has room for IF_NAMESIZE (16) bytes, as the function requires.
        unsafe {
            std::ptr::copy_nonoverlapping(
                iface::NAME.as_ptr(),
                buf.cast::<u8>(),
                iface::NAME.len(),
            );
            *buf.add(iface::NAME.len()) = 0;
        }
        buf
    }

    fn if_nameindex() -> *mut libc::if_nameindex
    where active() => |()| {
        // SAFETY: two zeroed entries (the second is the terminator) and a malloc'd name, the
        // layout glibc's if_freenameindex frees; both allocations are checked.
        unsafe {
            let arr = libc::calloc(2, std::mem::size_of::<libc::if_nameindex>())
                .cast::<libc::if_nameindex>();
            if arr.is_null() {
                Errno(libc::ENOBUFS).set_errno();
                return std::ptr::null_mut();
            }
            let name = libc::calloc(1, iface::NAME.len() + 1).cast::<u8>();
            if name.is_null() {
                libc::free(arr.cast());
                Errno(libc::ENOBUFS).set_errno();
                return std::ptr::null_mut();
            }
            std::ptr::copy_nonoverlapping(iface::NAME.as_ptr(), name, iface::NAME.len());
            (*arr).if_index = iface::INDEX;
            (*arr).if_name = name.cast();
            arr
        }
    }
}
