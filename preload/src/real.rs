//! The real libc functions behind the hooks.
//!
//! Every hooked symbol also has an entry here: a pointer to the next definition in lookup
//! order (`dlsym(RTLD_NEXT, ..)`, normally glibc's), resolved eagerly by [`resolve_all`] from
//! the library's `.init_array` constructor, so that no `dlsym` runs later inside a hook (or a
//! signal handler). A hook that runs before the constructor (another library's constructor
//! can create sockets) resolves its entry lazily. If a symbol cannot be found at all the call
//! fails with `ENOSYS` instead of crashing.
//!
//! Calling `libc::connect` from inside this library would reach our own hook again (symbol
//! interposition); pass-through paths call these wrappers, and the shim's own I/O uses the raw
//! system calls of `ioth_common::sys`.

#![allow(non_upper_case_globals, clippy::missing_safety_doc)]

use libc::{c_int, c_void, sockaddr, socklen_t};
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

macro_rules! real_fns {
    ($( fn $name:ident ( $($arg:ident : $t:ty),* ); )*) => {
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
            pub unsafe fn $name($($arg: $t),*) -> c_int {
                let p = resolve(&slot::$name, concat!(stringify!($name), "\0").as_bytes());
                if p.is_null() {
                    ioth_common::sys::Errno(libc::ENOSYS).set_errno();
                    return -1;
                }
                // SAFETY: p is the address of the libc function of that name, whose C
                // signature is the one declared here.
                let f: unsafe extern "C" fn($($t),*) -> c_int = unsafe { std::mem::transmute(p) };
                // SAFETY: the caller passes the arguments the application gave us.
                unsafe { f($($arg),*) }
            }
        )*
    };
}

real_fns! {
    fn socket(domain: c_int, ty: c_int, protocol: c_int);
    fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t);
    fn listen(fd: c_int, backlog: c_int);
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t);
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int);
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t);
    fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t);
    fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t);
    fn getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t);
    fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t);
    fn shutdown(fd: c_int, how: c_int);
    fn ioctl(fd: c_int, req: libc::c_ulong, arg: *mut c_void);
}
