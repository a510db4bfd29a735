//! The few system calls the daemon needs that `ioth_common::sys` does not wrap: process
//! control for `--daemon` (fork, setsid, stdio redirection, waiting for the daemon in its
//! keeper, the process name), the unread-bytes counter of a socket (`SIOCOUTQ`), and
//! allocator tuning.
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

/// Kill and reap our own child `pid` (a `--daemon` child that never became ready), and the
/// process group it leads (its daemon, when `pid` is the keeper).
pub fn kill_child(pid: i32) {
    // SAFETY: plain integers; `pid` is a child of this process, not yet reaped, and the
    // leader of its own process group once it called setsid.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Leave the process at once, without running destructors or atexit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is always safe to call.
    unsafe { libc::_exit(code) }
}

/// Bytes (kernel accounting units) sent on `fd` that the peer has not read yet (`SIOCOUTQ`).
pub fn outq(fd: RawFd) -> Result<usize, Errno> {
    ioctl_count(fd, libc::TIOCOUTQ)
}

/// Bytes waiting to be read on a socket (`FIONREAD`).
pub fn inq(fd: RawFd) -> Result<usize, Errno> {
    ioctl_count(fd, libc::FIONREAD)
}

/// An `ioctl` that writes one non-negative int: a byte count.
fn ioctl_count(fd: RawFd, req: libc::c_ulong) -> Result<usize, Errno> {
    let mut v: libc::c_int = 0;
    // SAFETY: TIOCOUTQ and FIONREAD (the only requests passed) write one int into v.
    let r = unsafe { libc::ioctl(fd, req, &mut v as *mut libc::c_int) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(v.max(0) as usize)
    }
}

/// How a child ended ([`wait_child`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Wait for our child `pid` to end, and reap it.
pub fn wait_child(pid: i32) -> Result<Exit, Errno> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: status is a valid int the kernel writes; `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = Errno::last();
        if e != Errno::EINTR {
            return Err(e);
        }
    }
    Ok(if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(libc::WEXITSTATUS(status))
    })
}

/// Name this process (`comm`, as `ps` and `pgrep` show it; at most 15 bytes).
pub fn set_name(name: &std::ffi::CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of which the kernel takes 16 bytes.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0);
    }
}

/// A new memfd of `len` bytes (sparse: untouched pages cost nothing).
pub fn memfd(name: &std::ffi::CStr, len: usize) -> Result<ioth_common::sys::Fd, Errno> {
    // SAFETY: memfd_create with a NUL-terminated name and flags.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: memfd_create succeeded: fd is a new descriptor that only we hold.
    let fd = unsafe { ioth_common::sys::Fd::from_raw(fd as RawFd) };
    // SAFETY: plain syscall on our own fd.
    if unsafe { libc::ftruncate(fd.raw(), len as libc::off_t) } < 0 {
        return Err(Errno::last());
    }
    Ok(fd)
}

/// A whole file mapped shared and writable, that no other process maps at the same time
/// (the journal of `crate::journal`: each daemon of a node in turn), unmapped on drop.
pub struct SharedFile {
    ptr: *mut u8,
    len: usize,
}

impl SharedFile {
    pub fn map(fd: RawFd) -> Result<SharedFile, Errno> {
        // SAFETY: plain syscall; the offset of a mapped file does not matter.
        let end = unsafe { libc::lseek(fd, 0, libc::SEEK_END) };
        if end < 0 {
            return Err(Errno::last());
        }
        let len = end as usize;
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        // SAFETY: a new shared mapping of the whole file; the kernel picks the address, so
        // no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(SharedFile {
            ptr: p as *mut u8,
            len,
        })
    }

    pub fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: ptr/len describe our live mapping; no other process maps the file while
        // we do, and the returned borrow is tied to &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for SharedFile {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe a mapping made by `SharedFile::map`, not used after this.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}
