//! The few system calls the daemon needs that `ioth_common::sys` does not wrap: process
//! control for `--daemon` (fork, setsid, stdio redirection), peer credentials of a control
//! connection, the unread-bytes counter of a socket (`SIOCOUTQ`), allocator tuning and the
//! open-file limit.
//!
//! This is the only module of the crate with `unsafe`.

use ioth_common::sys::Errno;
use std::os::fd::RawFd;

/// Outcome of [`fork`].
pub enum Forked {
    /// In the parent, with the child's pid.
    Parent(i32),
    Child,
}

/// `fork(2)`. Call only while the process has a single thread.
pub fn fork() -> Result<Forked, Errno> {
    // SAFETY: the daemon is single-threaded when it forks; the child continues normally.
    let r = unsafe { libc::fork() };
    match r {
        -1 => Err(Errno::last()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Detach from the terminal: new session, stdio on `/dev/null`.
pub fn detach() {
    // SAFETY: setsid takes no arguments; failure (already a group leader) is harmless.
    unsafe { libc::setsid() };
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for target in 0..3 {
            // SAFETY: dup2 of a valid open fd onto 0..2; both are plain integers.
            unsafe { libc::dup2(f.as_raw_fd(), target) };
        }
    }
}

/// Serve large allocations (each TCP socket's two 1 MiB rings) straight from `mmap`: fresh
/// pages are already zero, so a new socket costs no 2 MiB `memset` (it was most of the
/// daemon's CPU time at a thousand connections a second), a short connection touches only a
/// few pages, and a freed ring goes back to the kernel at once. glibc otherwise raises its
/// threshold after the first free and carves the rings from the heap, zeroing each.
pub fn large_allocations_from_mmap() {
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Raise the soft limit on open files to the hard one: the daemon holds one descriptor per
/// socket of its node (its end of the socketpair), and inherits the limit of whatever
/// started it (often 1024).
pub fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the rlimit we pass; setrlimit reads it. Raising the soft limit
    // up to the hard one needs no privilege.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Leave the process at once, without running destructors or atexit handlers.
/// Kill and reap our own child `pid` (a `--daemon` child that never became ready).
pub fn kill_child(pid: i32) {
    // SAFETY: plain integers; `pid` is a child of this process, not yet reaped.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is always safe to call.
    unsafe { libc::_exit(code) }
}

/// Bytes (kernel accounting units) sent on `fd` that the peer has not read yet (`SIOCOUTQ`).
pub fn outq(fd: RawFd) -> Result<usize, Errno> {
    let mut v: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int into v.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut v as *mut libc::c_int) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(v.max(0) as usize)
    }
}
