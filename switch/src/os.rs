//! The few process-level system calls `ioth_common::sys` does not wrap: fork, setsid, stdio
//! redirection, a signalfd for SIGTERM/SIGINT, a socket peer's credentials and the open-file
//! limit. Each `unsafe` block says why it is sound.
//! Nothing here is used on the frame path.

use ioth_common::sys::{Errno, Fd};
use std::os::fd::RawFd;

fn check(r: libc::c_int) -> Result<libc::c_int, Errno> {
    if r < 0 { Err(Errno::last()) } else { Ok(r) }
}

/// `fork()`: `Ok(0)` in the child, the child's pid in the parent. Only call it while the
/// process has a single thread.
pub fn fork() -> Result<libc::pid_t, Errno> {
    // SAFETY: fork has no memory-safety preconditions; the callers are single-threaded, so the
    // child does not inherit locks held by other threads.
    let r = unsafe { libc::fork() };
    if r < 0 { Err(Errno::last()) } else { Ok(r) }
}

pub fn setsid() -> Result<(), Errno> {
    // SAFETY: no arguments.
    check(unsafe { libc::setsid() }).map(drop)
}

/// Point stdin, stdout and stderr at `/dev/null`.
pub fn stdio_to_devnull() -> Result<(), Errno> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
    use std::os::fd::AsRawFd;
    for target in 0..3 {
        // SAFETY: dup2 on two valid descriptors; the targets are the standard streams, which
        // this process owns.
        check(unsafe { libc::dup2(f.as_raw_fd(), target) })?;
    }
    Ok(())
}

/// Block SIGTERM, SIGINT and SIGHUP (they stay pending until a signalfd reads them).
pub fn block_termination_signals() -> Result<libc::sigset_t, Errno> {
    // SAFETY: sigset_t is plain old data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
    }
    // SAFETY: set is valid; the old mask is not wanted (null).
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
    Ok(set)
}

/// Block SIGTERM, SIGINT and SIGHUP and return a non-blocking signalfd that reports them.
/// Create it in the process that polls it: a signalfd polled through an epoll set made before
/// a `fork` keeps waking the parent only.
pub fn termination_signalfd() -> Result<Fd, Errno> {
    let set = block_termination_signals()?;
    // SAFETY: -1 asks for a new signalfd; set is valid.
    let fd = check(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
    // SAFETY: signalfd just created this descriptor (check passed it as non-negative) and
    // nothing else holds it.
    Ok(unsafe { Fd::from_raw(fd) })
}

/// Read one pending signal number from a signalfd (`None` if there is none).
pub fn read_signal(fd: RawFd) -> Option<u32> {
    let mut buf = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
    match ioth_common::sys::read(fd, &mut buf) {
        Ok(n) if n == buf.len() => Some(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]])),
        _ => None,
    }
}

/// Close every descriptor above 2 that is not in `keep` (a daemon must not hold its parent's
/// pipes open: a caller reading the parent's output would never see EOF).
pub fn close_other_fds(keep: &[RawFd]) {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(rd) => rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            ioth_common::sys::close(fd);
        }
    }
}

/// `(pid, uid, gid)` of the process that connected the unix socket `fd` (`SO_PEERCRED`:
/// its credentials when it called `connect`).
pub fn peer_cred(fd: RawFd) -> Result<(u32, u32, u32), Errno> {
    let mut b = [0u8; 12];
    let n = ioth_common::sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, &mut b)?;
    if n < 12 {
        return Err(Errno::EINVAL);
    }
    let u = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Ok((u(0), u(4), u(8)))
}

/// SIGTERM to a child process the switch started (a cable's `vde_plug`), by pid.
pub fn terminate(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child's, not yet
    // reaped, so it names no other process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
}
