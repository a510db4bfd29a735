//! The real libc functions behind the datagram and resolver hooks ([`crate::dghooks`],
//! [`crate::resolv`]).
//!
//! Same scheme as [`crate::real`] (eager `dlsym(RTLD_NEXT, ..)` from the library constructor,
//! lazy resolution if a hook runs earlier, `ENOSYS` if a symbol is missing), but for functions
//! whose return type is not `int`: `read`/`write` and friends return `ssize_t`, the resolver
//! functions return pointers. Going through glibc (rather than raw system calls) keeps its
//! cancellation points and `SA_RESTART` behaviour for the application's own calls.

#![allow(
    non_upper_case_globals,
    clippy::missing_safety_doc,
    clippy::too_many_arguments
)]

use libc::{
    addrinfo, c_char, c_int, c_uint, c_void, hostent, iovec, mmsghdr, msghdr, size_t, sockaddr,
    socklen_t, ssize_t, timespec,
};
use std::sync::atomic::{AtomicPtr, Ordering};

fn resolve(slot: &AtomicPtr<c_void>, name: &'static [u8]) -> *mut c_void {
    let p = slot.load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    // SAFETY: name is a NUL-terminated symbol name; RTLD_NEXT is a valid pseudo-handle.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) };
    slot.store(p, Ordering::Release);
    p
}

/// What a missing symbol returns.
pub trait Missing {
    fn missing() -> Self;
}
impl Missing for c_int {
    fn missing() -> Self {
        -1
    }
}
impl Missing for ssize_t {
    fn missing() -> Self {
        -1
    }
}
impl Missing for *mut hostent {
    fn missing() -> Self {
        std::ptr::null_mut()
    }
}
impl Missing for () {
    fn missing() -> Self {}
}

macro_rules! real_fns {
    ($( fn $name:ident ( $($arg:ident : $t:ty),* ) -> $ret:ty; )*) => {
        mod slot {
            use std::sync::atomic::AtomicPtr;
            $( pub static $name: AtomicPtr<libc::c_void> = AtomicPtr::new(std::ptr::null_mut()); )*
        }

        /// Resolve every entry now (called from the library constructor).
        pub fn resolve_all() {
            $( resolve(&slot::$name, concat!(stringify!($name), "\0").as_bytes()); )*
        }

        $(
            /// Call the real function (libc's), never our hook.
            #[inline]
            pub unsafe fn $name($($arg: $t),*) -> $ret {
                let p = resolve(&slot::$name, concat!(stringify!($name), "\0").as_bytes());
                if p.is_null() {
                    ioth_common::sys::Errno(libc::ENOSYS).set_errno();
                    return <$ret as Missing>::missing();
                }
                // SAFETY: p is the address of the libc function of that name, whose C
                // signature is the one declared here.
                let f: unsafe extern "C" fn($($t),*) -> $ret = unsafe { std::mem::transmute(p) };
                // SAFETY: the caller passes the arguments the application gave us.
                unsafe { f($($arg),*) }
            }
        )*
    };
}

real_fns! {
    fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t;
    fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t;
    fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t;
    fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t;
    fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t;
    fn sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, a: *const sockaddr, l: socklen_t) -> ssize_t;
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
    fn sendmmsg(fd: c_int, v: *mut mmsghdr, n: c_uint, flags: c_int) -> c_int;
    fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t;
    fn recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, a: *mut sockaddr, l: *mut socklen_t) -> ssize_t;
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    fn recvmmsg(fd: c_int, v: *mut mmsghdr, n: c_uint, flags: c_int, t: *mut timespec) -> c_int;
    fn __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t;
    fn __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t;
    fn __recvfrom_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int, a: *mut sockaddr, l: *mut socklen_t) -> ssize_t;
    fn dup(fd: c_int) -> c_int;
    fn dup2(fd: c_int, to: c_int) -> c_int;
    fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int;
    fn getaddrinfo(node: *const c_char, service: *const c_char, hints: *const addrinfo, res: *mut *mut addrinfo) -> c_int;
    fn getnameinfo(a: *const sockaddr, l: socklen_t, host: *mut c_char, hl: socklen_t, serv: *mut c_char, sl: socklen_t, flags: c_int) -> c_int;
    fn gethostbyname(name: *const c_char) -> *mut hostent;
    fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent;
    fn gethostbyaddr(a: *const c_void, l: socklen_t, ty: c_int) -> *mut hostent;
    fn gethostbyname_r(name: *const c_char, ret: *mut hostent, buf: *mut c_char, bl: size_t, result: *mut *mut hostent, err: *mut c_int) -> c_int;
    fn gethostbyname2_r(name: *const c_char, af: c_int, ret: *mut hostent, buf: *mut c_char, bl: size_t, result: *mut *mut hostent, err: *mut c_int) -> c_int;
    fn gethostbyaddr_r(a: *const c_void, l: socklen_t, ty: c_int, ret: *mut hostent, buf: *mut c_char, bl: size_t, result: *mut *mut hostent, err: *mut c_int) -> c_int;
}
