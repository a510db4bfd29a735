//! `exec` and the ways a new program starts: what the shim holds back from the daemons
//! (`crate::held`) goes first, since the new program may use the sockets it inherits.
//!
//! * `execve`, `execv`, `execvp`, `execvpe`, `fexecve` and `execveat` are plain hooks.
//! * `posix_spawn`, `posix_spawnp`, `system` and `popen` send it in the parent before their
//!   child exists (the C library starts that child and `exec`s in it with its own internal
//!   calls, which no hook sees).
//! * `vfork` sends it in the parent too: the child shares our memory until its `exec`, and
//!   what is held is the parent's to send (`held::before_exec` does nothing in that child).
//! * The variadic `execl`, `execlp` and `execle` cannot be written in Rust, and `vfork`
//!   cannot be wrapped by a function whose frame its child would return through. They are
//!   [`tail`] trampolines: each keeps the caller's registers and stack, calls the shim, and
//!   jumps to libc's function as if it had been called directly (x86-64; on other
//!   architectures they are not hooked, README).

use crate::hook::hooks;
use libc::{FILE, c_char, c_int, pid_t, posix_spawn_file_actions_t, posix_spawnattr_t};
use std::panic::catch_unwind;

/// Send what is held, keeping `errno`, never unwinding.
extern "C" fn before_exec() {
    let saved = ioth_common::sys::Errno::last();
    let _ = catch_unwind(crate::held::before_exec);
    saved.set_errno();
}

hooks! {
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
        before_exec();
        // SAFETY: the caller's arguments, untouched, to libc's execve.
        unsafe { real::execve(path, argv, envp) }
    }

    fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
        before_exec();
        // SAFETY: as for execve.
        unsafe { real::execv(path, argv) }
    }

    fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
        before_exec();
        // SAFETY: as for execve.
        unsafe { real::execvp(file, argv) }
    }

    fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
        before_exec();
        // SAFETY: as for execve.
        unsafe { real::execvpe(file, argv, envp) }
    }

    fn fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
        before_exec();
        // SAFETY: as for execve.
        unsafe { real::fexecve(fd, argv, envp) }
    }

    fn execveat(
        dirfd: c_int,
        path: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
        flags: c_int,
    ) -> c_int {
        before_exec();
        // SAFETY: as for execve.
        unsafe { real::execveat(dirfd, path, argv, envp, flags) }
    }

    fn posix_spawn(
        pid: *mut pid_t,
        path: *const c_char,
        actions: *const posix_spawn_file_actions_t,
        attr: *const posix_spawnattr_t,
        argv: *const *mut c_char,
        envp: *const *mut c_char,
    ) -> c_int {
        before_exec();
        // SAFETY: as for execve.
        unsafe { real::posix_spawn(pid, path, actions, attr, argv, envp) }
    }

    fn posix_spawnp(
        pid: *mut pid_t,
        file: *const c_char,
        actions: *const posix_spawn_file_actions_t,
        attr: *const posix_spawnattr_t,
        argv: *const *mut c_char,
        envp: *const *mut c_char,
    ) -> c_int {
        before_exec();
        // SAFETY: as for execve.
        unsafe { real::posix_spawnp(pid, file, actions, attr, argv, envp) }
    }

    fn system(command: *const c_char) -> c_int {
        before_exec();
        // SAFETY: as for execve.
        unsafe { real::system(command) }
    }

    fn popen(command: *const c_char, mode: *const c_char) -> *mut FILE {
        before_exec();
        // SAFETY: as for execve.
        unsafe { real::popen(command, mode) }
    }
}

/// Hooks that must leave the caller's registers and stack exactly as they were when they
/// reach libc's function: the variadic `execl`, `execlp`, `execle` (their arguments go on
/// as the caller passed them, however many), and `vfork` (its child runs on the caller's
/// stack in the parent's memory, and returns into the caller's frame, not into ours).
#[cfg(target_arch = "x86_64")]
pub mod tail {
    /// What a trampoline jumps to when libc's function cannot be found: `-1`, `ENOSYS`.
    extern "C" fn missing() -> libc::c_int {
        ioth_common::sys::Errno(libc::ENOSYS).set_errno();
        -1
    }

    macro_rules! tail_hooks {
        ($($name:ident),*) => {
            /// libc's functions, resolved by the library constructor ([`resolve_all`]).
            mod slot {
                #![allow(non_upper_case_globals)]
                use std::sync::atomic::AtomicPtr;
                $( pub static $name: AtomicPtr<libc::c_void> =
                    AtomicPtr::new(std::ptr::null_mut()); )*
            }

            /// Resolve the trampolines' targets now (from the library constructor).
            pub fn resolve_all() {
                $( crate::hook::resolve(&slot::$name, concat!(stringify!($name), "\0")); )*
            }

            /// What each trampoline runs before it jumps: send what is held, and say where
            /// to jump.
            mod prep {
                use super::*;
                $(
                    pub extern "C" fn $name() -> *const libc::c_void {
                        super::super::before_exec();
                        let p = crate::hook::resolve(&slot::$name, concat!(stringify!($name), "\0"));
                        if p.is_null() {
                            missing as *const libc::c_void
                        } else {
                            p
                        }
                    }
                )*
            }

            $(
                /// Sends what is held, then jumps to libc's function with the caller's own
                /// registers and stack.
                ///
                /// # Safety
                /// Called by C code as the libc function of the same name.
                #[unsafe(naked)]
                #[unsafe(no_mangle)]
                pub unsafe extern "C" fn $name() {
                    // SAFETY: on entry the stack holds the caller's return address (rsp is
                    // 8 mod 16). The six argument registers and rax (a variadic call's count
                    // of vector registers) are pushed, which aligns the stack for the call;
                    // the shim's function (an ordinary `extern "C"` one, which keeps the
                    // callee-saved registers) returns the target in rax; the registers are
                    // restored, the stack is as the caller left it, and the jump makes
                    // libc's function see exactly the caller's call. r11 is scratch in the
                    // ABI and carries no argument.
                    core::arch::naked_asm!(
                        "push rdi",
                        "push rsi",
                        "push rdx",
                        "push rcx",
                        "push r8",
                        "push r9",
                        "push rax",
                        "call {prep}",
                        "mov r11, rax",
                        "pop rax",
                        "pop r9",
                        "pop r8",
                        "pop rcx",
                        "pop rdx",
                        "pop rsi",
                        "pop rdi",
                        "jmp r11",
                        prep = sym prep::$name,
                    )
                }
            )*
        };
    }

    tail_hooks!(execl, execlp, execle, vfork);
}
