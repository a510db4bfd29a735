//! The node's own `/etc/resolv.conf`: programs that read it themselves (bind9's `dig`,
//! `nslookup` and `host`, Java, node.js's c-ares, Python's dnspython) see the node's DNS
//! servers (`IOTH_DNS`, or the `dns=` lines of its daemon: given, or its DHCP lease's), not
//! the host's, which a node cannot reach anyway. `open`, `open64`, `openat`, `openat64`,
//! their fortified `__open*_2` forms, `fopen` and `fopen64` of exactly that path, for
//! reading, in a process of an active node (and unless `IOTH_RESOLVE=kernel`), give a
//! sealed-size memfd holding `nameserver` lines, one per server (none: an empty file, which
//! resolvers read as "ask 127.0.0.1", the node's own loopback). Every other call goes to
//! libc, and what libc did is compared with the path afterwards: at most 17 bytes, read only
//! once the kernel has read the path (so a bad pointer is the kernel's `EFAULT`, never a
//! fault here), and no system call of ours on any other file.
//!
//! Not done: other spellings of the path (relative, through symlinks), `stat` of it (the
//! host's file's size and times), glibc's own resolver (its reads are inside libc;
//! `resolv.rs` answers its functions instead). Statically linked programs get the same file
//! from `ioth-exec`, which calls [`node_resolv_conf`].

use crate::hook::hooks;
use ioth_common::sys::{self, Errno};
use libc::{FILE, c_char, c_int, mode_t};
use std::panic::catch_unwind;

/// The path whose opens are answered.
pub const PATH: &[u8] = b"/etc/resolv.conf";

/// Whether `path`, which libc's call just got past the kernel with (`failed`: the errno it
/// failed with, if it did), is `/etc/resolv.conf` opened only for reading.
fn is_resolv_conf(path: *const c_char, flags: c_int, failed: Option<Errno>) -> bool {
    if path.is_null()
        || flags & libc::O_ACCMODE != libc::O_RDONLY
        || failed == Some(Errno(libc::EFAULT))
    {
        return false;
    }
    // Byte by byte: the first difference (a NUL included) ends the comparison, so no byte
    // past the string's NUL is read.
    for (i, want) in PATH.iter().enumerate() {
        // SAFETY: the kernel read this path (it is readable and NUL-terminated: the call did
        // not fail with EFAULT), and every byte before this one was a non-NUL byte of it.
        if unsafe { *path.add(i) } as u8 != *want {
            return false;
        }
    }
    // SAFETY: as above: the PATH.len() bytes before it were non-NUL bytes of the string.
    unsafe { *path.add(PATH.len()) == 0 }
}

/// The node's resolver configuration, as a file descriptor (`None`: not ours to answer).
/// `ioth-exec` gives it to static programs too.
pub fn node_resolv_conf(flags: c_int) -> Option<Result<c_int, Errno>> {
    let text = catch_unwind(crate::resolv::resolv_conf).ok()??;
    Some((|| {
        let cloexec = if flags & libc::O_CLOEXEC != 0 {
            libc::MFD_CLOEXEC
        } else {
            0
        };
        let fd = sys::memfd(c"resolv.conf", cloexec)?;
        // At offset 0, leaving the file offset there for the reader.
        sys::pwrite_all(fd.raw(), text.as_bytes())?;
        let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;
        sys::fcntl(fd.raw(), libc::F_ADD_SEALS, seals as libc::c_long)?;
        Ok(fd.into_raw())
    })())
}

/// After libc's `open` and friends returned `r`: the node's file instead, if it is ours.
fn opened(path: *const c_char, flags: c_int, r: c_int) -> c_int {
    let saved = Errno::last();
    if !is_resolv_conf(path, flags, (r < 0).then_some(saved)) {
        return r;
    }
    let Some(ours) = node_resolv_conf(flags) else {
        return r;
    };
    if r >= 0 {
        // SAFETY: r is the descriptor libc's open just made for this call.
        unsafe { libc::close(r) };
    }
    match ours {
        Ok(fd) => {
            saved.set_errno();
            fd
        }
        Err(e) => {
            e.set_errno();
            -1
        }
    }
}

/// After libc's `fopen`/`fopen64` returned `f`: the node's file instead for mode `r` (also
/// `re`, `rb`), if it is ours.
///
/// # Safety
/// `mode` must be a NUL-terminated string and `f` what libc's fopen returned for these
/// arguments, as fopen(3) requires of its caller.
unsafe fn fopened(path: *const c_char, mode: *const c_char, f: *mut FILE) -> *mut FILE {
    if mode.is_null() {
        return f;
    }
    let saved = Errno::last();
    // SAFETY: the caller's mode string (fopen's contract; libc just read it).
    let m = unsafe { std::ffi::CStr::from_ptr(mode) }.to_bytes();
    if m.first() != Some(&b'r') || m.contains(&b'+') {
        return f;
    }
    let flags = if m.contains(&b'e') {
        libc::O_CLOEXEC
    } else {
        0
    };
    if !is_resolv_conf(path, flags, f.is_null().then_some(saved)) {
        return f;
    }
    let Some(ours) = node_resolv_conf(flags) else {
        return f;
    };
    if !f.is_null() {
        // SAFETY: f is the stream libc's fopen just opened for this call.
        unsafe { libc::fclose(f) };
    }
    let fd = match ours {
        Ok(fd) => fd,
        Err(e) => {
            e.set_errno();
            return std::ptr::null_mut();
        }
    };
    // SAFETY: fd is the memfd just made, readable; "r" is a valid mode.
    let g = unsafe { libc::fdopen(fd, c"r".as_ptr()) };
    if g.is_null() {
        let e = Errno::last();
        // SAFETY: fd is ours and fdopen did not take it.
        unsafe { libc::close(fd) };
        e.set_errno();
    } else {
        saved.set_errno();
    }
    g
}

hooks! {
    fn open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
        // SAFETY: the caller's arguments, untouched, to libc's open (mode as the caller
        // passed it, read where a variadic third argument is, as libc's open reads it).
        let r = unsafe { real::open(path, flags, mode) };
        opened(path, flags, r)
    }

    fn open64(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
        // SAFETY: as for open.
        let r = unsafe { real::open64(path, flags, mode) };
        opened(path, flags, r)
    }

    fn openat(dir: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
        // SAFETY: as for open.
        let r = unsafe { real::openat(dir, path, flags, mode) };
        opened(path, flags, r)
    }

    fn openat64(dir: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
        // SAFETY: as for open.
        let r = unsafe { real::openat64(dir, path, flags, mode) };
        opened(path, flags, r)
    }

    fn __open_2(path: *const c_char, flags: c_int) -> c_int {
        // SAFETY: as for open.
        let r = unsafe { real::__open_2(path, flags) };
        opened(path, flags, r)
    }

    fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
        // SAFETY: as for open.
        let r = unsafe { real::__open64_2(path, flags) };
        opened(path, flags, r)
    }

    fn __openat_2(dir: c_int, path: *const c_char, flags: c_int) -> c_int {
        // SAFETY: as for open.
        let r = unsafe { real::__openat_2(dir, path, flags) };
        opened(path, flags, r)
    }

    fn __openat64_2(dir: c_int, path: *const c_char, flags: c_int) -> c_int {
        // SAFETY: as for open.
        let r = unsafe { real::__openat64_2(dir, path, flags) };
        opened(path, flags, r)
    }

    fn fopen(path: *const c_char, mode: *const c_char) -> *mut FILE {
        // SAFETY: the caller's arguments, untouched.
        let f = unsafe { real::fopen(path, mode) };
        // SAFETY: the caller's mode, and what fopen returned for it.
        unsafe { fopened(path, mode, f) }
    }

    fn fopen64(path: *const c_char, mode: *const c_char) -> *mut FILE {
        // SAFETY: the caller's arguments, untouched.
        let f = unsafe { real::fopen64(path, mode) };
        // SAFETY: the caller's mode, and what fopen returned for it.
        unsafe { fopened(path, mode, f) }
    }
}
