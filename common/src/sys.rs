//! Raw system calls, with safe wrappers.
//!
//! Every function here enters the kernel through `syscall(2)` with an explicit system-call
//! number. None of them goes through a libc symbol such as `connect` or `sendmsg`: inside
//! `libioth.so` those symbols resolve to the shim's own hooks, and calling them from the shim
//! would recurse. The daemons use the same layer so that there is one set of wrappers.
//!
//! Errors are [`Errno`] values (the positive errno the kernel returned). File descriptors are
//! owned by [`Fd`], which closes with a raw `close` on drop.

use std::fmt;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicPtr, Ordering};

/// The system call entry these wrappers use (see [`set_raw_syscall`]); null: libc's.
static RAW_SYSCALL: AtomicPtr<libc::c_void> = AtomicPtr::new(std::ptr::null_mut());

/// A raw system call, as libc's `syscall`.
type RawSyscall = unsafe extern "C" fn(libc::c_long, ...) -> libc::c_long;

/// In a process where a library of ours interposes libc's `syscall` (the shim, whose hook
/// sends an application's socket calls on virtual sockets to its emulation), the wrappers
/// here must reach the kernel, not that hook: the shim gives the next definition of
/// `syscall` (libc's, from `dlsym(RTLD_NEXT)`) at start. `p` must be null or the address
/// of a function with libc's `syscall` signature.
pub fn set_raw_syscall(p: *mut libc::c_void) {
    RAW_SYSCALL.store(p, Ordering::Release);
}

/// libc's `syscall`, or what [`set_raw_syscall`] gave.
fn raw_syscall() -> RawSyscall {
    let p = RAW_SYSCALL.load(Ordering::Acquire);
    if p.is_null() {
        libc::syscall
    } else {
        // SAFETY: set_raw_syscall's contract: p is a function with syscall's signature.
        unsafe { std::mem::transmute::<*mut libc::c_void, RawSyscall>(p) }
    }
}
/// A positive errno value, as the kernel reports it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const EINTR: Errno = Errno(libc::EINTR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const ENOTSOCK: Errno = Errno(libc::ENOTSOCK);
    pub const EPIPE: Errno = Errno(libc::EPIPE);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const ECONNREFUSED: Errno = Errno(libc::ECONNREFUSED);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EADDRINUSE: Errno = Errno(libc::EADDRINUSE);
    pub const ETIMEDOUT: Errno = Errno(libc::ETIMEDOUT);
    pub const EPROTO: Errno = Errno(libc::EPROTO);
    pub const EMSGSIZE: Errno = Errno(libc::EMSGSIZE);

    /// The errno of the calling thread, read right after a failed call.
    pub fn last() -> Errno {
        // SAFETY: __errno_location returns a valid pointer to the calling thread's errno.
        Errno(unsafe { *libc::__errno_location() })
    }

    /// Store this value in the calling thread's errno (for the preload shim's return paths).
    pub fn set_errno(self) {
        // SAFETY: __errno_location returns a valid pointer to the calling thread's errno.
        unsafe { *libc::__errno_location() = self.0 };
    }

    /// `true` for EAGAIN/EWOULDBLOCK.
    pub fn is_again(self) -> bool {
        self.0 == libc::EAGAIN || self.0 == libc::EWOULDBLOCK
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({}: {})", self.0, self)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // std formats OS errors without allocating a libc call we interpose.
        let e = std::io::Error::from_raw_os_error(self.0);
        let s = e.to_string();
        // "No such file or directory (os error 2)" -> keep the text only.
        match s.rfind(" (os error") {
            Some(i) => f.write_str(&s[..i]),
            None => f.write_str(&s),
        }
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}

pub type Result<T> = std::result::Result<T, Errno>;

fn check(r: libc::c_long) -> Result<usize> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r as usize)
    }
}

/// Retry a call while it fails with EINTR.
pub fn retry<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    loop {
        match f() {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// An owned file descriptor, closed with a raw `close` on drop.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Fd(RawFd);

/// The highest descriptor number an [`Fd`] was made with in this process (-1: none yet).
static HIGHEST_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// The highest descriptor number any [`Fd`] of this process was made with: every number
/// above it is free, unless something opened it without an `Fd` (the stack daemon makes
/// all of its lasting descriptors as `Fd`s, so it knows it has room for a message's fds
/// without asking the kernel).
pub fn highest_fd() -> RawFd {
    HIGHEST_FD.load(std::sync::atomic::Ordering::Relaxed)
}

impl Fd {
    /// Take ownership of `fd`: the returned `Fd` closes it on drop.
    ///
    /// # Safety
    /// `fd` must be an open descriptor (not negative) that the caller owns and gives up here:
    /// from now on nothing else may close it or take ownership of it (no other `Fd`,
    /// `OwnedFd`, `File`, ...). Otherwise the drop closes a descriptor that someone else still
    /// uses, or, once its number was reused, a stranger's open file. A std [`OwnedFd`]
    /// converts safely with `Fd::from`.
    pub unsafe fn from_raw(fd: RawFd) -> Fd {
        Fd::made(fd)
    }
    /// A descriptor just made (its number noted for [`highest_fd`]).
    fn made(fd: RawFd) -> Fd {
        HIGHEST_FD.fetch_max(fd, std::sync::atomic::Ordering::Relaxed);
        Fd(fd)
    }
    /// No descriptor: every call on it fails with `EBADF`, and dropping it closes nothing
    /// (a socket whose end went elsewhere, see the stack's cut-through).
    pub fn none() -> Fd {
        Fd(-1)
    }
    pub fn raw(&self) -> RawFd {
        self.0
    }
    /// Give up ownership without closing.
    pub fn into_raw(self) -> RawFd {
        let fd = self.0;
        std::mem::forget(self);
        fd
    }
    /// A new descriptor for the same open file (`fcntl(F_DUPFD_CLOEXEC)`), at `min` or above.
    pub fn dup_cloexec(&self, min: RawFd) -> Result<Fd> {
        fcntl(self.0, libc::F_DUPFD_CLOEXEC, min as libc::c_long).map(|fd| Fd::made(fd as RawFd))
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        if self.0 >= 0 {
            close(self.0);
        }
    }
}

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl AsFd for Fd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: self.0 is an open descriptor that this Fd owns (every constructor makes
        // sure of it), and it stays open for as long as the borrow of self lasts.
        unsafe { BorrowedFd::borrow_raw(self.0) }
    }
}

impl From<OwnedFd> for Fd {
    fn from(fd: OwnedFd) -> Fd {
        Fd::made(fd.into_raw_fd())
    }
}

impl From<Fd> for OwnedFd {
    fn from(fd: Fd) -> OwnedFd {
        // SAFETY: into_raw hands over the open descriptor this Fd owned, without closing it;
        // the OwnedFd is its only owner from here on.
        unsafe { OwnedFd::from_raw_fd(fd.into_raw()) }
    }
}

/// Raw `close`; errors are ignored (the descriptor is gone either way on Linux).
pub fn close(fd: RawFd) {
    // SAFETY: close takes an integer; on an fd we do not own it is the caller's bug, not UB.
    unsafe { raw_syscall()(libc::SYS_close, fd) };
}

pub fn socket(domain: i32, ty: i32, protocol: i32) -> Result<Fd> {
    // SAFETY: plain integer arguments.
    check(unsafe { raw_syscall()(libc::SYS_socket, domain, ty, protocol) })
        .map(|fd| Fd::made(fd as RawFd))
}

/// `dup3(fd, to, flags)`: `to` becomes a copy of `fd` (whatever `to` was is closed, at once
/// and atomically), by the raw system call (the shim hooks libc's `dup3`).
pub fn dup3(fd: RawFd, to: RawFd, flags: i32) -> Result<()> {
    // SAFETY: plain integer arguments.
    check(unsafe { raw_syscall()(libc::SYS_dup3, fd, to, flags) }).map(|_| ())
}

pub fn socketpair(domain: i32, ty: i32) -> Result<(Fd, Fd)> {
    let mut sv = [0 as libc::c_int; 2];
    // SAFETY: sv is a valid 2-int array the kernel writes into.
    check(unsafe { raw_syscall()(libc::SYS_socketpair, domain, ty, 0, sv.as_mut_ptr()) })?;
    Ok((Fd::made(sv[0]), Fd::made(sv[1])))
}

/// A unix-domain socket address: a path, an abstract name (without the leading NUL), or none.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    Unnamed,
    Path(Vec<u8>),
    Abstract(Vec<u8>),
}

impl UnixAddr {
    pub fn path(p: impl AsRef<std::path::Path>) -> UnixAddr {
        use std::os::unix::ffi::OsStrExt;
        UnixAddr::Path(p.as_ref().as_os_str().as_bytes().to_vec())
    }

    /// Encode as a `sockaddr_un` and its length. Names longer than `sun_path` give EINVAL
    /// (ENAMETOOLONG for paths), as the kernel would.
    pub fn to_raw(&self) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
        // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
        let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let base = std::mem::size_of::<libc::sa_family_t>();
        let (bytes, off) = match self {
            UnixAddr::Unnamed => return Ok((sa, base as libc::socklen_t)),
            UnixAddr::Path(p) => (p.as_slice(), 0),
            UnixAddr::Abstract(n) => (n.as_slice(), 1),
        };
        if bytes.len() + off > sa.sun_path.len() - usize::from(off == 0) {
            return Err(Errno(libc::ENAMETOOLONG));
        }
        for (i, b) in bytes.iter().enumerate() {
            sa.sun_path[i + off] = *b as libc::c_char;
        }
        let len = match self {
            UnixAddr::Path(_) => base + bytes.len() + 1,
            _ => base + bytes.len() + off,
        };
        Ok((sa, len as libc::socklen_t))
    }

    /// Decode what the kernel wrote into a `sockaddr_un` of `len` bytes.
    pub fn from_raw(sa: &libc::sockaddr_un, len: libc::socklen_t) -> Option<UnixAddr> {
        let base = std::mem::size_of::<libc::sa_family_t>();
        if sa.sun_family != libc::AF_UNIX as libc::sa_family_t {
            return None;
        }
        let len = (len as usize).min(std::mem::size_of::<libc::sockaddr_un>());
        if len <= base {
            return Some(UnixAddr::Unnamed);
        }
        let raw: Vec<u8> = sa.sun_path[..len - base].iter().map(|c| *c as u8).collect();
        if raw[0] == 0 {
            Some(UnixAddr::Abstract(raw[1..].to_vec()))
        } else {
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            Some(UnixAddr::Path(raw[..end].to_vec()))
        }
    }
}

pub fn bind_unix(fd: RawFd, addr: &UnixAddr) -> Result<()> {
    let (sa, len) = addr.to_raw()?;
    // SAFETY: sa is a valid sockaddr_un of len bytes.
    check(unsafe { raw_syscall()(libc::SYS_bind, fd, &sa as *const _, len) }).map(drop)
}

pub fn connect_unix(fd: RawFd, addr: &UnixAddr) -> Result<()> {
    let (sa, len) = addr.to_raw()?;
    // SAFETY: sa is a valid sockaddr_un of len bytes.
    check(unsafe { raw_syscall()(libc::SYS_connect, fd, &sa as *const _, len) }).map(drop)
}

/// Make the stream socket `fd` unwritable for now: the smallest send buffer, then filler
/// bytes until the kernel takes no more (at most about 1 MiB); how many went. A connect
/// under way is held so (`ctl`: the daemon drains the filler once it ends).
pub fn fill_send_buffer(fd: RawFd) -> Result<usize> {
    static FILLER: [u8; 16384] = [0; 16384];
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 0)?;
    let mut count = 0usize;
    while count <= 1 << 20 {
        match send(fd, &FILLER, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            // A short send: the kernel stopped for want of send buffer, so the fd is full
            // (unwritable) now; asking again would only say EAGAIN.
            Ok(n) if n < FILLER.len() => {
                count += n;
                break;
            }
            Ok(n) => count += n,
            Err(e) if e == Errno::EINTR => {}
            Err(_) => break,
        }
    }
    Ok(count)
}

/// Whether the listener that `fd` just connected to was made by root, by `owner` or by us
/// (`SO_PEERCRED`: who called `listen`): a listener's name is anyone's once it is closed.
pub fn listened_by(fd: RawFd, owner: u32) -> bool {
    peer_cred(fd).is_ok_and(|(_, uid, _)| uid == 0 || uid == owner || uid == geteuid())
}

/// Whether some socket is bound to the unix name `name` now (a probe's bind says
/// `EADDRINUSE`); not if no probe can be made.
pub fn unix_name_taken(name: &UnixAddr) -> bool {
    socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
        .is_ok_and(|probe| bind_unix(probe.raw(), name) == Err(Errno::EADDRINUSE))
}

/// A listening `AF_UNIX` socket of type `ty` (close-on-exec, non-blocking) bound to `addr`.
pub fn unix_listener(ty: i32, addr: &UnixAddr, backlog: i32) -> Result<Fd> {
    let fd = socket(
        libc::AF_UNIX,
        ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        0,
    )?;
    bind_unix(fd.raw(), addr)?;
    listen(fd.raw(), backlog)?;
    Ok(fd)
}

pub fn listen(fd: RawFd, backlog: i32) -> Result<()> {
    // SAFETY: integer arguments.
    check(unsafe { raw_syscall()(libc::SYS_listen, fd, backlog) }).map(drop)
}

/// `accept4` without the peer address.
pub fn accept(fd: RawFd, flags: i32) -> Result<Fd> {
    // SAFETY: null address pointers are allowed by accept4.
    check(unsafe {
        raw_syscall()(
            libc::SYS_accept4,
            fd,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
            flags,
        )
    })
    .map(|fd| Fd::made(fd as RawFd))
}

/// The unix address a socket is bound to; `None` if it is not an AF_UNIX socket.
pub fn getsockname_unix(fd: RawFd) -> Result<Option<UnixAddr>> {
    // SAFETY: sockaddr_un is plain old data.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: sa/len point to a buffer of the size given in len.
    check(unsafe { raw_syscall()(libc::SYS_getsockname, fd, &mut sa as *mut _, &mut len) })?;
    Ok(UnixAddr::from_raw(&sa, len))
}

/// Raw `getsockname`/`getpeername` into a caller buffer (for pass-through).
pub fn getpeername_unix(fd: RawFd) -> Result<Option<UnixAddr>> {
    // SAFETY: sockaddr_un is plain old data.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: sa/len point to a buffer of the size given in len.
    check(unsafe { raw_syscall()(libc::SYS_getpeername, fd, &mut sa as *mut _, &mut len) })?;
    Ok(UnixAddr::from_raw(&sa, len))
}

pub fn setsockopt_bytes(fd: RawFd, level: i32, name: i32, val: &[u8]) -> Result<()> {
    // SAFETY: val is a valid buffer of val.len() bytes.
    check(unsafe {
        raw_syscall()(
            libc::SYS_setsockopt,
            fd,
            level,
            name,
            val.as_ptr(),
            val.len() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, val: i32) -> Result<()> {
    setsockopt_bytes(fd, level, name, &val.to_ne_bytes())
}

/// `getsockopt` into `buf`; returns the length the kernel reported.
pub fn getsockopt_bytes(fd: RawFd, level: i32, name: i32, buf: &mut [u8]) -> Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf/len describe a writable buffer.
    check(unsafe {
        raw_syscall()(
            libc::SYS_getsockopt,
            fd,
            level,
            name,
            buf.as_mut_ptr(),
            &mut len,
        )
    })?;
    Ok(len as usize)
}

/// The process's soft limit on open files (`RLIMIT_NOFILE`), or 1024 if unknown.
pub fn fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur
    } else {
        1024
    }
}

/// Raise the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit (for the daemons:
/// a node's daemon holds one descriptor per socket of all its processes, and inherits the
/// soft limit, often 1024, of whichever process started it). Returns the soft limit now.
pub fn raise_fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    if r.rlim_cur < r.rlim_max {
        let want = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: want is a valid rlimit; raising the soft limit up to the hard one is allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return r.rlim_max;
        }
    }
    r.rlim_cur
}

/// `(pid, uid, gid)` of the peer of a unix socket (`SO_PEERCRED`).
pub fn peer_cred(fd: RawFd) -> Result<(u32, u32, u32)> {
    let mut b = [0u8; 12];
    let n = getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, &mut b)?;
    if n < 12 {
        return Err(Errno::EINVAL);
    }
    let u = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Ok((u(0), u(4), u(8)))
}

/// Bound every blocking `connect`, send and receive on socket `fd` to `ms` milliseconds
/// (`SO_SNDTIMEO`, `SO_RCVTIMEO`): past it they fail with `EAGAIN`.
pub fn set_io_timeout(fd: RawFd, ms: u32) -> Result<()> {
    let mut tv = [0u8; 16];
    tv[..8].copy_from_slice(&i64::from(ms / 1000).to_ne_bytes());
    tv[8..].copy_from_slice(&(i64::from(ms % 1000) * 1000).to_ne_bytes());
    setsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv)?;
    setsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

pub fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> Result<i32> {
    let mut b = [0u8; 4];
    getsockopt_bytes(fd, level, name, &mut b)?;
    Ok(i32::from_ne_bytes(b))
}

pub fn shutdown(fd: RawFd, how: i32) -> Result<()> {
    // SAFETY: integer arguments.
    check(unsafe { raw_syscall()(libc::SYS_shutdown, fd, how) }).map(drop)
}

pub fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: buf is a writable buffer of buf.len() bytes.
    check(unsafe { raw_syscall()(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) })
}

pub fn write(fd: RawFd, buf: &[u8]) -> Result<usize> {
    // SAFETY: buf is a readable buffer of buf.len() bytes.
    check(unsafe { raw_syscall()(libc::SYS_write, fd, buf.as_ptr(), buf.len()) })
}

/// Write all of `buf`, retrying on EINTR and short writes (blocking fds only).
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        let n = retry(|| write(fd, buf))?;
        buf = &buf[n..];
    }
    Ok(())
}

pub fn recv(fd: RawFd, buf: &mut [u8], flags: i32) -> Result<usize> {
    // SAFETY: buf is writable; null address pointers are allowed.
    check(unsafe {
        raw_syscall()(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            flags,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    })
}

pub fn send(fd: RawFd, buf: &[u8], flags: i32) -> Result<usize> {
    // SAFETY: buf is readable; a null address is allowed.
    check(unsafe {
        raw_syscall()(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            flags,
            std::ptr::null::<libc::sockaddr>(),
            0,
        )
    })
}

/// Send to an explicit unix address (unconnected datagram sockets).
pub fn sendto_unix(fd: RawFd, buf: &[u8], flags: i32, to: &UnixAddr) -> Result<usize> {
    let (sa, len) = to.to_raw()?;
    // SAFETY: buf is readable; sa is a valid sockaddr_un of len bytes.
    check(unsafe {
        raw_syscall()(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            flags,
            &sa as *const _,
            len,
        )
    })
}

/// Largest number of descriptors carried by one message in this crate's protocols.
pub const MAX_FDS: usize = 4;

/// `sendmsg` with optional `SCM_RIGHTS` descriptors.
pub fn sendmsg(fd: RawFd, iov: &[IoSlice<'_>], fds: &[RawFd], flags: i32) -> Result<usize> {
    // Control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 8];
    let msg = msghdr_with_fds(iov, fds, &mut cbuf);
    // SAFETY: msg describes valid iovecs (IoSlice is ABI-compatible with iovec) and control data.
    check(unsafe { raw_syscall()(libc::SYS_sendmsg, fd, &msg as *const libc::msghdr, flags) })
}

/// A msghdr for `iov` with `fds` attached (`SCM_RIGHTS`, in `cbuf`); valid while both are.
fn msghdr_with_fds(iov: &[IoSlice<'_>], fds: &[RawFd], cbuf: &mut [u64; 8]) -> libc::msghdr {
    assert!(fds.len() <= MAX_FDS);
    // SAFETY: msghdr is plain old data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len();
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        // SAFETY: msg_control points to cbuf (64 bytes), large enough for MAX_FDS descriptors;
        // CMSG_FIRSTHDR/CMSG_DATA stay within it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(payload) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c) as *mut RawFd,
                fds.len(),
            );
        }
    }
    msg
}

/// Two messages in one `sendmmsg`, each with its fds: how many were sent (the second may not
/// have been: no room for it, or an error after the first).
pub fn sendmsg2(fd: RawFd, msgs: [(&[u8], &[RawFd]); 2], flags: i32) -> Result<usize> {
    let iovs = msgs.map(|m| [IoSlice::new(m.0)]);
    let mut cbufs = [[0u64; 8]; 2];
    let [c0, c1] = &mut cbufs;
    let hdrs = [
        msghdr_with_fds(&iovs[0], msgs[0].1, c0),
        msghdr_with_fds(&iovs[1], msgs[1].1, c1),
    ];
    let mut mm = hdrs.map(|h| libc::mmsghdr {
        msg_hdr: h,
        msg_len: 0,
    });
    // SAFETY: mm holds two msghdrs, each describing a valid iovec and its control data, all
    // alive for the call.
    check(unsafe {
        raw_syscall()(
            libc::SYS_sendmmsg,
            fd,
            mm.as_mut_ptr(),
            2 as libc::c_uint,
            flags,
        )
    })
}

/// What [`recvmsg`] received.
#[derive(Debug)]
pub struct Received {
    pub len: usize,
    pub fds: Vec<Fd>,
    /// `msg_flags` (MSG_TRUNC, MSG_CTRUNC, ...).
    pub flags: i32,
}

/// `recvmsg` accepting up to [`MAX_FDS`] descriptors, always with `MSG_CMSG_CLOEXEC`.
pub fn recvmsg(fd: RawFd, iov: &mut [IoSliceMut<'_>], flags: i32) -> Result<Received> {
    recvmsg_fds(fd, iov, flags, true)
}

/// [`recvmsg`], the received descriptors close-on-exec or not (`accept` without
/// `SOCK_CLOEXEC` gives the application one without the flag, as the kernel's does).
pub fn recvmsg_fds(
    fd: RawFd,
    iov: &mut [IoSliceMut<'_>],
    flags: i32,
    cloexec: bool,
) -> Result<Received> {
    let flags = if cloexec {
        flags | libc::MSG_CMSG_CLOEXEC
    } else {
        flags & !libc::MSG_CMSG_CLOEXEC
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain old data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len();
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: msg describes writable iovecs and a control buffer of the size given.
    let len = check(unsafe {
        raw_syscall()(libc::SYS_recvmsg, fd, &mut msg as *mut libc::msghdr, flags)
    })?;
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG_* macros walk it within
    // those bounds, and each SCM_RIGHTS payload holds cmsg_len - CMSG_LEN(0) bytes of fds.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                let p = libc::CMSG_DATA(c) as *const RawFd;
                for i in 0..n {
                    fds.push(Fd::made(std::ptr::read_unaligned(p.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Received {
        len,
        fds,
        flags: msg.msg_flags,
    })
}

/// Whether `process_vm_readv`/`process_vm_writev` on our own pid work here (0: not tried,
/// 1: yes, 2: refused, e.g. by a seccomp filter).
static VM_COPY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Our pid as `copy_in` last found it (0: not yet): see [`vm_read_cached`].
static SELF_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// One `process_vm_readv` (`write: false`) or `process_vm_writev` on our own memory; `None`
/// if the call is refused here (`ENOSYS`, `EPERM`).
fn vm_copy(write: bool, local: &[libc::iovec], remote: &[libc::iovec]) -> Option<Result<()>> {
    use std::sync::atomic::Ordering;
    if VM_COPY.load(Ordering::Relaxed) == 2 {
        return None;
    }
    let total: usize = local.iter().map(|v| v.iov_len).sum();
    let pid = getpid();
    if !write {
        SELF_PID.store(pid, Ordering::Relaxed);
    }
    match vm_call(write, pid, local, remote) {
        Ok(n) => {
            VM_COPY.store(1, Ordering::Relaxed);
            Some(if n == total {
                Ok(())
            } else {
                Err(Errno(libc::EFAULT))
            })
        }
        Err(e) if e.0 == libc::ENOSYS || e.0 == libc::EPERM => {
            VM_COPY.store(2, Ordering::Relaxed);
            None
        }
        Err(e) => Some(Err(e)),
    }
}

fn vm_call(write: bool, pid: u32, local: &[libc::iovec], remote: &[libc::iovec]) -> Result<usize> {
    let nr = if write {
        libc::SYS_process_vm_writev
    } else {
        libc::SYS_process_vm_readv
    };
    // SAFETY: local describes buffers of ours that the kernel reads or writes within their
    // lengths; remote addresses are checked by the kernel (a bad one is EFAULT, never a
    // fault here); flags 0.
    check(unsafe {
        raw_syscall()(
            nr,
            pid as libc::pid_t,
            local.as_ptr(),
            local.len(),
            remote.as_ptr(),
            remote.len(),
            0 as libc::c_ulong,
        )
    })
}

/// `process_vm_readv` of `out.len()` bytes at `src` with the pid found last time, saving the
/// `getpid` (nginx corks and uncorks every response: one `copy_in` each). A process made by
/// a raw `clone` without the C library's `fork` still has its parent's pid there, so the same
/// call also reads back a nonce from our own stack (clock and counter, never the same twice):
/// only our own memory holds it at that address. `None` when that cannot be shown (no pid
/// yet, a stale one, a refusal): then [`vm_copy`] asks for the pid.
fn vm_read_cached(src: *const u8, out: &mut [u8]) -> Option<Result<()>> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let pid = SELF_PID.load(Ordering::Relaxed);
    if pid == 0 {
        return None;
    }
    let nonce: u64 = monotonic_ns() ^ COUNT.fetch_add(1, Ordering::Relaxed).rotate_left(40);
    let mut seen: u64 = !nonce;
    let local = [
        libc::iovec {
            iov_base: (&mut seen as *mut u64).cast(),
            iov_len: 8,
        },
        libc::iovec {
            iov_base: out.as_mut_ptr().cast(),
            iov_len: out.len(),
        },
    ];
    let remote = [
        libc::iovec {
            iov_base: (&nonce as *const u64).cast_mut().cast(),
            iov_len: 8,
        },
        libc::iovec {
            iov_base: src as *mut libc::c_void,
            iov_len: out.len(),
        },
    ];
    match vm_call(false, pid, &local, &remote) {
        // The first piece is read before the second: a short count is the caller's bad
        // pointer, as the kernel would say.
        Ok(n) if n >= 8 && seen == nonce => Some(if n == 8 + out.len() {
            Ok(())
        } else {
            Err(Errno(libc::EFAULT))
        }),
        _ => None,
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds (the vDSO: no system call).
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a valid timespec of ours.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// The top of the main thread's stack (glibc's `__libc_stack_end`, the stack pointer at
/// `_start`), once [`note_main_stack`] found it; 0: unknown.
static MAIN_STACK_TOP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Learn where the main thread's stack ends (from the preload shim's constructor), so that
/// [`copy_in`] and [`copy_out`] need no system call for the caller's own stack variables.
pub fn note_main_stack() {
    // SAFETY: a NUL-terminated name; dlsym only looks the symbol up.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__libc_stack_end".as_ptr()) };
    if p.is_null() {
        return;
    }
    // SAFETY: glibc's `__libc_stack_end` is a `void *` variable set before any constructor
    // runs and never changed after.
    let top = unsafe { std::ptr::read(p.cast::<usize>()) };
    MAIN_STACK_TOP.store(top, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `[p, p + len)` lies in the part of the calling thread's stack that is in use now,
/// between our own frame and the stack's top: memory that is there, readable and writable,
/// as the caller's own variables are. On the main thread: a stack pointer within 64 MiB
/// under the top (the kernel keeps other mappings at least 128 MiB away from the stack). On
/// another thread: a stack pointer within the stack the C library made or was given for it
/// ([`thread_stack`]: one mapping, whose guard page lies below it), so a signal handler on
/// an alternate stack, or a coroutine's own stack, is never taken for it. Never inlined: its
/// own frame is below every caller's.
#[inline(never)]
fn on_own_stack(p: *const u8, len: usize) -> bool {
    let marker = 0u8;
    let here = std::hint::black_box(&marker as *const u8) as usize;
    let main_top = MAIN_STACK_TOP.load(std::sync::atomic::Ordering::Relaxed);
    if main_top == 0 {
        return false;
    }
    if in_stack_part(main_top, here, p as usize, len) {
        return true;
    }
    if here < main_top && main_top - here < 64 << 20 {
        // On the main thread, but not within its stack in use.
        return false;
    }
    let (lo, top) = thread_stack();
    lo <= here && in_stack_part(top, here, p as usize, len)
}

thread_local! {
    /// This thread's stack `[lowest, top)` as the C library knows it; `(0, 0)`: not looked
    /// up yet, `(usize::MAX, 0)`: unknown.
    static THREAD_STACK: std::cell::Cell<(usize, usize)> =
        const { std::cell::Cell::new((0, 0)) };
}

/// The calling thread's stack (not the main thread's: asking for that one reads
/// `/proc/self/maps`), looked up once per thread (`pthread_getattr_np` reads the thread's
/// own descriptor); `(usize::MAX, 0)` if unknown.
fn thread_stack() -> (usize, usize) {
    const UNKNOWN: (usize, usize) = (usize::MAX, 0);
    THREAD_STACK
        .try_with(|c| {
            if c.get() == (0, 0) {
                c.set(look_up_thread_stack().unwrap_or(UNKNOWN));
            }
            c.get()
        })
        .unwrap_or(UNKNOWN)
}

fn look_up_thread_stack() -> Option<(usize, usize)> {
    // SAFETY: no arguments.
    if unsafe { raw_syscall()(libc::SYS_gettid) } as u32 == getpid() {
        // The main thread, more than 64 MiB deep: not worth reading /proc/self/maps for
        // (perhaps in a signal handler).
        return None;
    }
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: pthread_getattr_np initialises attr for the calling thread (pthread_self)
    // when it returns 0; only then is attr read, and then destroyed once.
    unsafe {
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let r = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        let lo = addr as usize;
        (r == 0 && lo != 0 && size != 0)
            .then(|| lo.checked_add(size).map(|top| (lo, top)))
            .flatten()
    }
}

/// `[p, p + len)` within `[here, top)`, `here` within 64 MiB under `top` (0: unknown).
fn in_stack_part(top: usize, here: usize, p: usize, len: usize) -> bool {
    top != 0
        && here < top
        && top - here < 64 << 20
        && p >= here
        && p.checked_add(len).is_some_and(|end| end <= top)
}

/// Copy `out.len()` bytes from address `src` of our own memory (an argument a caller of the
/// preload shim passed), or `EFAULT` as the kernel would answer if any of it is not
/// readable: the kernel copies (`process_vm_readv` on our own pid), so a bad pointer never
/// faults in our code. Null is `EFAULT` without a system call, and so is a read of the
/// caller's own stack variables ([`on_own_stack`]), which are there.
///
/// # Safety
/// Where the kernel refuses `process_vm_readv` (a seccomp filter), the bytes are read
/// directly: then `src` must be valid for `out.len()` bytes, as the caller's contract says.
pub unsafe fn copy_in(src: *const u8, out: &mut [u8]) -> Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    if src.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    if on_own_stack(src, out.len()) {
        // SAFETY: the bytes are in the stack in use (see on_own_stack): mapped and readable.
        unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) };
        return Ok(());
    }
    let local = [libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: out.len(),
    }];
    let remote = [libc::iovec {
        iov_base: src as *mut libc::c_void,
        iov_len: out.len(),
    }];
    if let Some(r) = vm_read_cached(src, out) {
        return r;
    }
    match vm_copy(false, &local, &remote) {
        Some(r) => r,
        None => {
            // SAFETY: the caller guarantees src is valid for out.len() bytes (# Safety).
            unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) };
            Ok(())
        }
    }
}

/// Copy each `(dst, bytes)` into our own memory at `dst` (results for a caller of the preload
/// shim: an address and its length), all in one system call (none when every `dst` is on the
/// caller's own stack, [`on_own_stack`]), or `EFAULT` if any of it is not writable (then
/// nothing or part may have been written, as with the kernel). Null `dst` is `EFAULT`.
///
/// # Safety
/// Where the kernel refuses `process_vm_writev`, the bytes are written directly: then each
/// `dst` must be valid for writes of its length, as the caller's contract says.
pub unsafe fn copy_out(pieces: &[(*mut u8, &[u8])]) -> Result<()> {
    let pieces: Vec<&(*mut u8, &[u8])> = pieces.iter().filter(|p| !p.1.is_empty()).collect();
    if pieces.iter().any(|p| p.0.is_null()) {
        return Err(Errno(libc::EFAULT));
    }
    if pieces.is_empty() {
        return Ok(());
    }
    if pieces.iter().all(|p| on_own_stack(p.0, p.1.len())) {
        for (dst, b) in pieces.iter().map(|p| (p.0, p.1)) {
            // SAFETY: dst is in the stack in use (see on_own_stack): mapped and writable.
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), dst, b.len()) };
        }
        return Ok(());
    }
    let local: Vec<libc::iovec> = pieces
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.1.as_ptr() as *mut libc::c_void,
            iov_len: p.1.len(),
        })
        .collect();
    let remote: Vec<libc::iovec> = pieces
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.0.cast(),
            iov_len: p.1.len(),
        })
        .collect();
    match vm_copy(true, &local, &remote) {
        Some(r) => r,
        None => {
            for (dst, b) in pieces.iter().map(|p| (p.0, p.1)) {
                // SAFETY: the caller guarantees dst is valid for b.len() bytes (# Safety).
                unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), dst, b.len()) };
            }
            Ok(())
        }
    }
}

/// `poll` on a set of descriptors; `timeout_ms < 0` waits forever.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> Result<usize> {
    let ts;
    let tsp = if timeout_ms < 0 {
        std::ptr::null()
    } else {
        ts = libc::timespec {
            tv_sec: (timeout_ms / 1000) as libc::time_t,
            tv_nsec: ((timeout_ms % 1000) * 1_000_000) as libc::c_long,
        };
        &ts as *const libc::timespec
    };
    // SAFETY: fds is a valid pollfd array; tsp is null or a valid timespec; no sigmask.
    check(unsafe {
        raw_syscall()(
            libc::SYS_ppoll,
            fds.as_mut_ptr(),
            fds.len(),
            tsp,
            std::ptr::null::<libc::sigset_t>(),
            8,
        )
    })
}

/// Wait until `fd` reports one of `events` (or an error/hangup); `Ok(false)` on timeout.
pub fn wait_fd(fd: RawFd, events: i16, timeout_ms: i32) -> Result<bool> {
    let mut p = [libc::pollfd {
        fd,
        events,
        revents: 0,
    }];
    Ok(poll(&mut p, timeout_ms)? > 0)
}

pub fn fcntl(fd: RawFd, cmd: i32, arg: libc::c_long) -> Result<i32> {
    // SAFETY: the commands used here take an integer argument.
    check(unsafe { raw_syscall()(libc::SYS_fcntl, fd, cmd, arg) }).map(|v| v as i32)
}

/// An `ioctl` that writes an `int` (`FIONREAD`, `SIOCOUTQ`), by the raw system call (the
/// shim hooks libc's `ioctl`).
pub fn ioctl_int(fd: RawFd, req: libc::c_ulong) -> Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: the requests used here write one int to the pointer, which is ours.
    check(unsafe { raw_syscall()(libc::SYS_ioctl, fd, req, &mut v as *mut libc::c_int) })?;
    Ok(v)
}

pub fn set_nonblocking(fd: RawFd, on: bool) -> Result<()> {
    let fl = fcntl(fd, libc::F_GETFL, 0)?;
    let new = if on {
        fl | libc::O_NONBLOCK
    } else {
        fl & !libc::O_NONBLOCK
    };
    if new != fl {
        fcntl(fd, libc::F_SETFL, new as libc::c_long)?;
    }
    Ok(())
}

pub fn set_cloexec(fd: RawFd, on: bool) -> Result<()> {
    fcntl(
        fd,
        libc::F_SETFD,
        if on {
            libc::FD_CLOEXEC as libc::c_long
        } else {
            0
        },
    )
    .map(drop)
}

/// `fstat`: device and inode of an open file (how the shim recognises its own descriptors).
pub fn fstat_id(fd: RawFd) -> Result<(u64, u64)> {
    // SAFETY: stat is plain old data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable stat buffer.
    check(unsafe { raw_syscall()(libc::SYS_fstat, fd, &mut st as *mut libc::stat) })?;
    Ok((st.st_dev, st.st_ino))
}

pub fn epoll_create() -> Result<Fd> {
    // SAFETY: integer argument.
    check(unsafe { raw_syscall()(libc::SYS_epoll_create1, libc::EPOLL_CLOEXEC) })
        .map(|fd| Fd::made(fd as RawFd))
}

pub fn epoll_ctl(ep: RawFd, op: i32, fd: RawFd, events: u32, data: u64) -> Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: ev is a valid epoll_event.
    check(unsafe {
        raw_syscall()(
            libc::SYS_epoll_ctl,
            ep,
            op,
            fd,
            &mut ev as *mut libc::epoll_event,
        )
    })
    .map(drop)
}

/// `epoll_pwait2`: `epoll_wait` with a timeout in nanoseconds (a delay of 10 ms must not
/// become 11). Kernels before 5.11 lack it: there, the timeout is rounded up to milliseconds.
/// EINTR is reported as zero events.
pub fn epoll_wait_ns(
    ep: RawFd,
    events: &mut [libc::epoll_event],
    timeout: std::time::Duration,
) -> Result<usize> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: events is a writable array of events.len() entries, ts a valid timespec; no
    // sigmask.
    let r = check(unsafe {
        raw_syscall()(
            libc::SYS_epoll_pwait2,
            ep,
            events.as_mut_ptr(),
            events.len() as libc::c_int,
            &ts as *const libc::timespec,
            std::ptr::null::<libc::sigset_t>(),
            8,
        )
    });
    match r {
        Err(Errno::EINTR) => Ok(0),
        Err(e) if e.0 == libc::ENOSYS => {
            let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
            epoll_wait(ep, events, ms)
        }
        r => r,
    }
}

/// `epoll_wait`; `timeout_ms < 0` waits forever. EINTR is reported as zero events.
pub fn epoll_wait(ep: RawFd, events: &mut [libc::epoll_event], timeout_ms: i32) -> Result<usize> {
    // SAFETY: events is a writable array of events.len() entries; no sigmask.
    let r = check(unsafe {
        raw_syscall()(
            libc::SYS_epoll_pwait,
            ep,
            events.as_mut_ptr(),
            events.len() as libc::c_int,
            timeout_ms,
            std::ptr::null::<libc::sigset_t>(),
            8,
        )
    });
    match r {
        Err(Errno::EINTR) => Ok(0),
        r => r,
    }
}

/// A new eventfd (counter 0), non-blocking and close-on-exec.
pub fn eventfd() -> Result<Fd> {
    // SAFETY: integer arguments.
    let fd = check(unsafe {
        raw_syscall()(
            libc::SYS_eventfd2,
            0,
            libc::EFD_NONBLOCK | libc::EFD_CLOEXEC,
        )
    })?;
    Ok(Fd::made(fd as RawFd))
}

/// Whether `fd` is an eventfd (its `/proc/self/fd` link says so): the only kind of
/// descriptor a peer may hand us to write wake-ups into. (A socket would carry our
/// credentials to whoever is at its other end; a file, our eight bytes.)
pub fn is_eventfd(fd: RawFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|l| l.as_os_str() == "anon_inode:[eventfd]")
}

/// A new, empty memfd that can be sealed (`MFD_ALLOW_SEALING`, plus `flags`, e.g.
/// `MFD_CLOEXEC`).
pub fn memfd(name: &std::ffi::CStr, flags: libc::c_uint) -> Result<Fd> {
    // SAFETY: memfd_create with a NUL-terminated name and flags.
    let fd = check(unsafe {
        raw_syscall()(
            libc::SYS_memfd_create,
            name.as_ptr(),
            flags | libc::MFD_ALLOW_SEALING,
        )
    })?;
    Ok(Fd::made(fd as RawFd))
}

/// Write all of `data` at offset 0 of `fd` (a file, a memfd), whatever its file offset.
pub fn pwrite_all(fd: RawFd, data: &[u8]) -> Result<()> {
    let mut done = 0;
    while done < data.len() {
        let rest = &data[done..];
        // SAFETY: rest is a valid buffer of rest.len() bytes.
        let n = check(unsafe {
            raw_syscall()(
                libc::SYS_pwrite64,
                fd,
                rest.as_ptr(),
                rest.len(),
                done as libc::off_t,
            )
        })?;
        if n == 0 {
            return Err(Errno::EIO);
        }
        done += n as usize;
    }
    Ok(())
}

/// The size of a memory page (4096 if the system will not say).
pub fn page_size() -> u64 {
    // SAFETY: sysconf reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

pub fn getpid() -> u32 {
    // SAFETY: no arguments.
    unsafe { raw_syscall()(libc::SYS_getpid) as u32 }
}

/// Send `sig` to the calling thread (`tgkill`), as the kernel sends `SIGPIPE` to the thread
/// whose write found the pipe or socket closed.
pub fn raise_for_thread(sig: i32) {
    // SAFETY: integer arguments only; the ids are our own process and thread.
    unsafe {
        let tid = raw_syscall()(libc::SYS_gettid);
        raw_syscall()(
            libc::SYS_tgkill,
            getpid() as libc::c_long,
            tid,
            sig as libc::c_long,
        );
    }
}

pub fn getuid() -> u32 {
    // SAFETY: no arguments.
    unsafe { raw_syscall()(libc::SYS_getuid) as u32 }
}

pub fn geteuid() -> u32 {
    // SAFETY: no arguments.
    unsafe { raw_syscall()(libc::SYS_geteuid) as u32 }
}

/// Fill `buf` from the kernel's random source (`getrandom(2)`).
pub fn getrandom(buf: &mut [u8]) -> Result<()> {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: buf[off..] is writable.
        let n = check(unsafe {
            raw_syscall()(
                libc::SYS_getrandom,
                buf[off..].as_mut_ptr(),
                buf.len() - off,
                0,
            )
        });
        match n {
            Ok(n) => off += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A random u64 from the kernel (falls back to time and pid if getrandom fails).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if getrandom(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return (t as u64) ^ ((getpid() as u64) << 32);
    }
    u64::from_ne_bytes(b)
}

/// A `sockaddr_in`/`sockaddr_in6` for `a`, with its length.
fn inet_sockaddr(a: &std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        std::net::SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and suitably aligned.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// The address in a `sockaddr_storage` the kernel filled (`None`: not IPv4/IPv6).
fn inet_from_storage(ss: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(std::net::SocketAddr::new(
                std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()).into(),
                u16::from_be(sin.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Send the bytes of `iov` (gathered) to `to` on the UDP socket `fd` as datagrams of `seg`
/// bytes each (the last may be shorter), cut by the kernel (`UDP_SEGMENT`, segmentation
/// offload: one call for many datagrams). `seg == 0` or `seg >=` the total: one datagram.
pub fn send_udp_gso(
    fd: RawFd,
    iov: &[IoSlice<'_>],
    seg: u16,
    to: &std::net::SocketAddr,
) -> Result<usize> {
    let (mut ss, slen) = inet_sockaddr(to);
    let total: usize = iov.iter().map(|v| v.len()).sum();
    let mut cbuf = [0u64; 4];
    // SAFETY: msghdr is plain old data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &mut ss as *mut _ as *mut libc::c_void;
    msg.msg_namelen = slen;
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len();
    if seg > 0 && (seg as usize) < total {
        let payload = std::mem::size_of::<u16>() as u32;
        // SAFETY: CMSG_SPACE is a pure computation.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(payload) } as usize;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        // SAFETY: msg_control points to cbuf (32 bytes), room for one cmsghdr and a u16;
        // CMSG_FIRSTHDR/CMSG_DATA stay within it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(payload) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg);
        }
    }
    // SAFETY: msg describes a valid address, iovecs (IoSlice is ABI-compatible with iovec)
    // and control data of the size given.
    check(unsafe {
        raw_syscall()(
            libc::SYS_sendmsg,
            fd,
            &msg as *const libc::msghdr,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

/// One datagram (or run of datagrams) [`recv_udp_batch`] received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpGot {
    /// Bytes received (more than the slot: it was cut).
    pub len: usize,
    pub from: Option<std::net::SocketAddr>,
    /// With `UDP_GRO` on the socket: the kernel joined datagrams of this size (the last may be
    /// shorter) into this one reception; 0: a single datagram.
    pub gso: usize,
}

/// `recvmmsg` without waiting: up to 64 receptions into consecutive slots of `slot` bytes of
/// `buf` (as many as fit); `out` gets each one's length, sender and, on a socket with
/// `UDP_GRO`, the size of the datagrams it joins. `Ok(0)`: none waiting.
pub fn recv_udp_batch(
    fd: RawFd,
    buf: &mut [u8],
    slot: usize,
    out: &mut Vec<UdpGot>,
) -> Result<usize> {
    const MAX: usize = 64;
    const CTL: usize = 4;
    out.clear();
    let n = (buf.len() / slot.max(1)).min(MAX);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: these are plain old data; all zeroes is a valid value for each.
    let mut names: [libc::sockaddr_storage; MAX] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MAX] = unsafe { std::mem::zeroed() };
    // Room for one cmsghdr and an int per reception, aligned for cmsghdr.
    let mut ctl = [[0u64; CTL]; MAX];
    let mut iovs: Vec<libc::iovec> = buf
        .chunks_mut(slot)
        .take(n)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr() as *mut libc::c_void,
            iov_len: c.len(),
        })
        .collect();
    for i in 0..n {
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = ctl[i].as_mut_ptr() as *mut libc::c_void;
        h.msg_controllen = std::mem::size_of_val(&ctl[i]);
    }
    // SAFETY: hdrs[..n] point to n writable slots of buf, n name buffers and n control
    // buffers, all alive for the call; the kernel writes within the lengths given.
    let got = check(unsafe {
        raw_syscall()(
            libc::SYS_recvmmsg,
            fd,
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            std::ptr::null_mut::<libc::timespec>(),
        )
    })?;
    for i in 0..got {
        let mut gso = 0;
        // SAFETY: the kernel filled msg_control/msg_controllen of this message; the CMSG_*
        // macros walk it within those bounds, and a UDP_GRO payload is one int.
        unsafe {
            let h = &hdrs[i].msg_hdr;
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                    gso =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int) as usize;
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        out.push(UdpGot {
            len: hdrs[i].msg_len as usize,
            from: inet_from_storage(&names[i]),
            gso,
        });
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketpair_bind_abstract_and_name_roundtrip() {
        let (a, b) = socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC).unwrap();
        let name =
            UnixAddr::Abstract(format!("ioth-test/{}/{}", getpid(), random_u64()).into_bytes());
        bind_unix(a.raw(), &name).unwrap();
        assert_eq!(getsockname_unix(a.raw()).unwrap(), Some(name.clone()));
        assert_eq!(getpeername_unix(b.raw()).unwrap(), Some(name));
        assert_eq!(getsockname_unix(b.raw()).unwrap(), Some(UnixAddr::Unnamed));
    }

    #[test]
    fn fds_travel_with_scm_rights() {
        let (a, b) = socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC).unwrap();
        let (x, y) = socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC).unwrap();
        sendmsg(a.raw(), &[IoSlice::new(b"hi")], &[x.raw()], 0).unwrap();
        drop(x);
        let mut buf = [0u8; 8];
        let r = recvmsg(b.raw(), &mut [IoSliceMut::new(&mut buf)], 0).unwrap();
        assert_eq!(&buf[..r.len], b"hi");
        assert_eq!(r.fds.len(), 1);
        write_all(r.fds[0].raw(), b"ping").unwrap();
        let mut got = [0u8; 4];
        assert_eq!(read(y.raw(), &mut got).unwrap(), 4);
        assert_eq!(&got, b"ping");
        let fl = fcntl(r.fds[0].raw(), libc::F_GETFD, 0).unwrap();
        assert_ne!(fl & libc::FD_CLOEXEC, 0, "received fds are close-on-exec");
    }

    #[test]
    fn only_the_stack_in_use_is_read_without_the_kernel() {
        let top = 0x7fff_0000_0000;
        let here = top - 0x3000;
        assert!(in_stack_part(top, here, here + 8, 4));
        assert!(in_stack_part(top, here, top - 4, 4));
        assert!(!in_stack_part(top, here, top - 3, 4), "past the top");
        assert!(
            !in_stack_part(top, here, here - 4, 4),
            "below our own frame"
        );
        assert!(!in_stack_part(top, here, usize::MAX - 1, 4), "wraps");
        assert!(!in_stack_part(0, here, here + 8, 4), "top unknown");
        assert!(
            !in_stack_part(top, top + 8, top + 16, 4),
            "not on the main stack"
        );
        assert!(
            !in_stack_part(top, top - (64 << 20), top - 8, 4),
            "too far under the top"
        );
        note_main_stack();
        let v = *b"own";
        let mut out = [0u8; 3];
        // SAFETY: v is valid for 3 bytes.
        unsafe { copy_in(v.as_ptr(), &mut out) }.unwrap();
        assert_eq!(&out, b"own");
    }

    #[test]
    fn a_threads_own_stack_is_read_without_the_kernel_and_nothing_else_is() {
        note_main_stack();
        std::thread::spawn(|| {
            let v = *b"thread's";
            assert!(on_own_stack(v.as_ptr(), v.len()), "a local of this thread");
            let (lo, top) = thread_stack();
            assert!(lo < top && top - lo >= 16 << 10, "{lo:x}-{top:x}");
            assert!(!on_own_stack(top as *const u8, 1), "past the top");
            let heap = Box::new([0u8; 8]);
            assert!(!on_own_stack(heap.as_ptr(), 8), "the heap");
            let mut out = [0u8; 8];
            // SAFETY: v is valid for 8 bytes.
            unsafe { copy_in(v.as_ptr(), &mut out) }.unwrap();
            assert_eq!(&out, b"thread's");
            // A bad pointer is still the kernel's EFAULT, never a fault here.
            // SAFETY: copy_in checks the address through the kernel.
            let r = unsafe { copy_in(8 as *const u8, &mut out) };
            assert_eq!(r, Err(Errno(libc::EFAULT)));
            let inner = std::thread::spawn(move || on_own_stack(v.as_ptr(), 8));
            // v was copied into the closure: its address is the new thread's own.
            assert!(inner.join().unwrap());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn copy_in_never_reads_another_process_with_a_stale_pid() {
        use std::sync::atomic::Ordering;
        // On the heap: a thread's own stack is copied without the kernel.
        let src = Box::new(*b"own copy");
        let mut out = [0u8; 8];
        // SAFETY: src is valid for 8 bytes; the bad address is checked by the kernel.
        unsafe {
            copy_in(src.as_ptr(), &mut out).unwrap();
            assert_eq!(SELF_PID.load(Ordering::Relaxed), getpid());
            // As after a raw clone: the pid of another process of ours (the parent, whose
            // memory we may read) or of none.
            // SAFETY: no arguments.
            let parent = libc::getppid() as u32;
            for stale in [parent, 0x3fff_fff0] {
                SELF_PID.store(stale, Ordering::Relaxed);
                out = [0; 8];
                copy_in(src.as_ptr(), &mut out).unwrap();
                assert_eq!(out, *src);
                assert_eq!(SELF_PID.load(Ordering::Relaxed), getpid());
            }
            assert_eq!(
                copy_in(std::ptr::without_provenance::<u8>(8), &mut out),
                Err(Errno(libc::EFAULT))
            );
        }
    }

    #[test]
    fn copies_give_efault_for_bad_addresses() {
        let src = *b"sockaddr";
        let mut out = [0u8; 8];
        // SAFETY: src is valid for 8 bytes; the bad addresses are checked by the kernel.
        unsafe {
            copy_in(src.as_ptr(), &mut out).unwrap();
            assert_eq!(out, src);
            assert_eq!(
                copy_in(std::ptr::without_provenance::<u8>(1), &mut out),
                Err(Errno(libc::EFAULT))
            );
            assert_eq!(
                copy_in(std::ptr::null(), &mut out),
                Err(Errno(libc::EFAULT))
            );
            let mut a = [0u8; 4];
            let mut b = [0u8; 2];
            copy_out(&[(a.as_mut_ptr(), b"abcd"), (b.as_mut_ptr(), b"xy")]).unwrap();
            assert_eq!((&a, &b), (b"abcd", b"xy"));
            let bad = copy_out(&[
                (a.as_mut_ptr(), b"abcd"),
                (std::ptr::without_provenance_mut::<u8>(8), b"xy"),
            ]);
            assert_eq!(bad, Err(Errno(libc::EFAULT)));
            // Read-only memory (a string literal) is not writable either.
            let ro = b"constant".as_ptr() as *mut u8;
            assert_eq!(copy_out(&[(ro, b"x")]), Err(Errno(libc::EFAULT)));
        }
    }

    #[test]
    fn errors_are_errnos() {
        assert_eq!(read(-1, &mut [0u8; 1]), Err(Errno::EBADF));
        assert_eq!(
            connect_unix(-1, &UnixAddr::Abstract(b"x".to_vec())),
            Err(Errno::EBADF)
        );
        let long = UnixAddr::Path(vec![b'a'; 200]);
        assert_eq!(long.to_raw().err(), Some(Errno(libc::ENAMETOOLONG)));
    }
}
