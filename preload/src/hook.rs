//! How a hook is made: one macro, [`hooks!`], declares everything an interposed libc function
//! needs, so that no hook module writes its own `dlsym`, slot or pass-through.
//!
//! For each function listed, `hooks!` writes, together:
//! * the exported symbol, `#[unsafe(no_mangle)] pub unsafe extern "C" fn name(..)`, to which
//!   the dynamic linker binds the application's calls (symbol interposition);
//! * its slot: the address of the next definition of `name` in lookup order
//!   (`dlsym(RTLD_NEXT, "name")`, normally glibc's);
//! * the slot's eager resolution, in the invoking module's `real::resolve_all`, which
//!   [`resolve_all`] runs from the library's `.init_array` constructor, so that no `dlsym`
//!   runs later inside a hook (possibly in a signal handler). A hook that runs before the
//!   constructor (another library's constructor can create sockets) resolves its slot lazily;
//! * `real::name(..)`: a call of that next definition, never of our hook (calling
//!   `libc::connect` from inside this library would reach the hook again). A symbol that cannot
//!   be found at all makes the call fail with `ENOSYS` (and -1, 0 or null: [`Missing`])
//!   instead of crashing;
//! * the pass-through prologue. `fn name(..) -> T where OURS => |x| BODY` runs BODY only when
//!   OURS (an `Option`, computed from the arguments: "is this fd one of our sockets?") is
//!   `Some(x)`, and otherwise hands the caller's arguments untouched to `real::name`. A hook
//!   whose decision is not a plain "is it ours" (`recvmsg` also learns the fds passed to a
//!   kernel socket, `dup` always runs the real one first) gives a bare block instead and calls
//!   `real::name` itself.
//!
//! What the bodies keep (DESIGN.md, Re-entry): no panic crosses the FFI boundary (they run the
//! emulation under [`crate::hooks::guard`] or `catch_unwind`), the shim's own I/O goes through
//! `real::` functions or raw system calls, and errors are reported the C way (errno).
//!
//! Variadic C functions are declared with the fixed arguments the shim reads: `ioctl`'s third
//! argument as one pointer (the x86-64 and AArch64 Linux ABIs pass a variadic argument in the
//! same register as a named one; requests without an argument never reach our code).
//! `fcntl` is not hooked. The few hooks that cannot be Rust functions at all, because their
//! arguments cannot be declared (`execl`, `execlp`, `execle`) or because the caller's frame
//! must be the one the function returns into twice (`vfork`), are naked trampolines
//! (`crate::exec::tail`, x86-64): they call the shim, then jump to the next definition with
//! the caller's registers and stack untouched.

use libc::{c_int, c_uint, c_void, ssize_t};
use std::sync::atomic::{AtomicPtr, Ordering};

/// Resolve every hooked function's slot (called from the library constructor).
pub fn resolve_all() {
    crate::hooks::real::resolve_all();
    crate::dghooks::real::resolve_all();
    crate::ifhooks::real::resolve_all();
    crate::resolv::real::resolve_all();
    crate::files::real::resolve_all();
    crate::exec::real::resolve_all();
    #[cfg(target_arch = "x86_64")]
    crate::exec::tail::resolve_all();
}

/// The slot's address, resolving it first if it is still empty. `name` ends in a NUL.
pub fn resolve(slot: &AtomicPtr<c_void>, name: &'static str) -> *mut c_void {
    let p = slot.load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    debug_assert!(name.ends_with('\0'));
    // SAFETY: name is a NUL-terminated symbol name (the macro appends the NUL); RTLD_NEXT is
    // a valid pseudo-handle for dlsym.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) };
    slot.store(p, Ordering::Release);
    p
}

/// What a call of a missing symbol returns (errno is `ENOSYS`).
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
/// `if_nametoindex`: 0 is its error value.
impl Missing for c_uint {
    fn missing() -> Self {
        0
    }
}
impl<T> Missing for *mut T {
    fn missing() -> Self {
        std::ptr::null_mut()
    }
}

/// Declare hooked functions (see the module documentation). One invocation per module: it
/// also makes that module's `real` submodule, whose `resolve_all` must be listed in
/// [`resolve_all`].
///
/// ```text
/// hooks! {
///     /// Doc comment of the exported symbol.
///     fn listen(fd: c_int, backlog: c_int) -> c_int
///     where virt(fd) => |v| {
///         guard(|| emu::listen(&Daemons, v, fd, backlog).map(|_| 0))
///     }
///
///     fn dup(fd: c_int) -> c_int {
///         // SAFETY: ...
///         let r = unsafe { real::dup(fd) };
///         ...
///     }
/// }
/// ```
macro_rules! hooks {
    ($(
        $(#[$attr:meta])*
        fn $name:ident($($arg:ident: $t:ty),* $(,)?) -> $ret:ty
        $(where $ours:expr => |$v:pat_param|)? $body:block
    )*) => {
        /// The next definitions of this module's hooked symbols (libc's), for pass-through and
        /// for the shim's own calls.
        pub(crate) mod real {
            #![allow(non_upper_case_globals, clippy::too_many_arguments)]
            use super::*;

            mod slot {
                use std::sync::atomic::AtomicPtr;
                $( pub static $name: AtomicPtr<libc::c_void> =
                    AtomicPtr::new(std::ptr::null_mut()); )*
            }

            /// Resolve this module's slots now (from the library constructor).
            pub fn resolve_all() {
                $( $crate::hook::resolve(&slot::$name, concat!(stringify!($name), "\0")); )*
            }

            $(
                /// Call the next definition of this symbol (libc's), never our hook.
                ///
                /// # Safety
                /// The arguments must meet the contract of the C function of that name.
                #[inline]
                pub unsafe fn $name($($arg: $t),*) -> $ret {
                    let p = $crate::hook::resolve(&slot::$name, concat!(stringify!($name), "\0"));
                    if p.is_null() {
                        ioth_common::sys::Errno(libc::ENOSYS).set_errno();
                        return <$ret as $crate::hook::Missing>::missing();
                    }
                    // SAFETY: p is the non-null address dlsym returned for this symbol's name:
                    // the C function whose signature is the one declared here.
                    let f = unsafe {
                        std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn($($t),*) -> $ret>(p)
                    };
                    // SAFETY: the caller meets the C function's contract (# Safety above).
                    unsafe { f($($arg),*) }
                }
            )*
        }

        $(
            $(#[$attr])*
            ///
            /// # Safety
            /// Called by C code: the arguments must meet the contract of the C function of the
            /// same name.
            #[unsafe(no_mangle)]
            #[allow(clippy::too_many_arguments)]
            pub unsafe extern "C" fn $name($($arg: $t),*) -> $ret {
                $crate::hook::hooks!(@body $name ($($arg),*) $(where $ours => |$v|)? $body)
            }
        )*
    };
    (@body $name:ident ($($arg:ident),*) where $ours:expr => |$v:pat_param| $body:block) => {
        match $ours {
            Some($v) => $body,
            // SAFETY: not ours: the application's arguments, untouched, to the function it
            // meant to call; it vouches for them as it would without the shim.
            None => unsafe { real::$name($($arg),*) },
        }
    };
    (@body $name:ident ($($arg:ident),*) $body:block) => {
        $body
    };
}
pub(crate) use hooks;
