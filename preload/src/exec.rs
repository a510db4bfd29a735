//! `exec`: what the shim holds back from the daemons (`crate::held`) goes first, since the
//! new program may use the sockets it inherits. `execve`, `execv`, `execvp`, `execvpe`,
//! `fexecve` and `execveat` are hooked; the variadic `execl`, `execlp` and `execle` are not
//! (nor the C library's own calls, as `posix_spawn`'s), and their programs may find such a
//! socket unknown to its daemon until this process next asks it anything (README).

use crate::hook::hooks;
use libc::{c_char, c_int};
use std::panic::catch_unwind;

fn before_exec() {
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
}
