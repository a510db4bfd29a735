//! Starting a node's stack daemon from inside someone else's program.
//!
//! `ioth-stackd --daemon ...` is run with a raw `fork` (the `clone` system call: no
//! `pthread_atfork` handlers of the application run, and the child only makes raw system
//! calls before `execve`), with a clean descriptor set (stdin `/dev/null`, stdout and stderr a
//! pipe back to us, everything else closed), an empty signal mask, default signal
//! dispositions and the environment without `LD_PRELOAD`. `--daemon` returns once the control
//! socket is ready; we reap exactly that child (by pid, never `wait(-1)`), then read what it
//! wrote to report a failure in one line. If the application's own `SIGCHLD` handling reaps
//! it first (`ECHILD`), the caller's connection attempt decides.
//!
//! The binary is `IOTH_STACKD`, else `ioth-stackd` next to `libioth.so` (found with `dladdr`
//! on one of our functions when the library is loaded, before the program can `chdir`).

use ioth_common::sys::{self, Errno};
use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static SELF_DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

/// How long `ioth-stackd --daemon` may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Directory of `libioth.so` (absolute), computed once.
pub fn self_dir() -> Option<&'static Path> {
    SELF_DIR
        .get_or_init(|| {
            // SAFETY: Dl_info is plain old data; dladdr fills it for an address inside a loaded
            // object (this function's own code), and dli_fname is then a valid C string.
            let name = unsafe {
                let mut info: libc::Dl_info = std::mem::zeroed();
                if libc::dladdr(self_dir as *const libc::c_void, &mut info) == 0
                    || info.dli_fname.is_null()
                {
                    return None;
                }
                std::ffi::CStr::from_ptr(info.dli_fname).to_bytes().to_vec()
            };
            let p = PathBuf::from(OsString::from_vec(name));
            let p = std::fs::canonicalize(&p).unwrap_or(p);
            p.parent().map(Path::to_path_buf)
        })
        .as_deref()
}

/// The stack daemon binary to run.
pub fn stackd_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("IOTH_STACKD").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    match self_dir() {
        Some(d) => Ok(d.join("ioth-stackd")),
        None => Err("cannot locate ioth-stackd (set IOTH_STACKD)".into()),
    }
}

fn cstr(b: &[u8]) -> Result<CString, String> {
    CString::new(b).map_err(|_| "argument contains a NUL byte".to_string())
}

/// Run `bin args...` as a daemon starter and wait until it exits. `Err` carries a one-line
/// reason.
pub fn run_starter(bin: &Path, args: &[OsString]) -> Result<(), String> {
    let bin_c = cstr(bin.as_os_str().as_bytes())?;
    let mut argv_c = vec![bin_c.clone()];
    for a in args {
        argv_c.push(cstr(a.as_bytes())?);
    }
    let mut envp_c = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k == "LD_PRELOAD" {
            continue;
        }
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        if let Ok(c) = CString::new(kv) {
            envp_c.push(c);
        }
    }
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envp_c.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let fail_msg = format!("cannot execute {}\n", bin.display()).into_bytes();

    let mut p = [0 as libc::c_int; 2];
    // SAFETY: p is a valid 2-int array.
    if unsafe { libc::syscall(libc::SYS_pipe2, p.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(format!("pipe: {}", Errno::last()));
    }
    // SAFETY: pipe2 succeeded: p holds two new descriptors that only we hold.
    let (pr, pw) = unsafe { (sys::Fd::from_raw(p[0]), sys::Fd::from_raw(p[1])) };
    // SAFETY: a valid NUL-terminated path and flags.
    let null = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c"/dev/null".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC,
        )
    };
    if null < 0 {
        return Err(format!("/dev/null: {}", Errno::last()));
    }
    // SAFETY: openat succeeded: null is a new descriptor that only we hold.
    let null = unsafe { sys::Fd::from_raw(null as i32) };

    // SAFETY: a fork-like clone (no CLONE_VM): the child gets a copy of the address space.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
    if pid < 0 {
        return Err(format!("fork: {}", Errno::last()));
    }
    if pid == 0 {
        // SAFETY: child of a fork in a possibly multi-threaded process: only raw system calls
        // on memory prepared before the fork, then execve or exit.
        unsafe { child(null.raw(), pw.raw(), &bin_c, &argv, &envp, &fail_msg) }
    }
    let pid = pid as libc::pid_t;
    drop(pw);
    drop(null);
    let deadline = Instant::now() + READY_TIMEOUT;
    let status = loop {
        let mut st: libc::c_int = 0;
        // SAFETY: st is a valid int; no rusage.
        let r = unsafe {
            libc::syscall(
                libc::SYS_wait4,
                pid,
                &mut st as *mut libc::c_int,
                libc::WNOHANG,
                0,
            )
        };
        if r == pid as libc::c_long {
            break Some(st);
        }
        if r < 0 && Errno::last() != Errno::EINTR {
            break None; // ECHILD: reaped by the application; the connect attempt decides.
        }
        if Instant::now() > deadline {
            // SAFETY: pid is our own child, not yet reaped.
            unsafe {
                libc::syscall(libc::SYS_kill, pid, libc::SIGKILL);
                libc::syscall(libc::SYS_wait4, pid, 0, 0, 0);
            }
            return Err(format!(
                "{} did not become ready within {} s",
                bin.display(),
                READY_TIMEOUT.as_secs()
            ));
        }
        sleep_ms(5);
    };
    let _ = sys::set_nonblocking(pr.raw(), true);
    let mut out = vec![0u8; 4096];
    let n = sys::read(pr.raw(), &mut out).unwrap_or(0);
    out.truncate(n);
    match status {
        Some(st) if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 => Ok(()),
        None => Ok(()),
        Some(st) => {
            let text = String::from_utf8_lossy(&out);
            let line = text
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .map(str::to_string);
            Err(match line {
                Some(l) => l,
                None if libc::WIFEXITED(st) => {
                    format!(
                        "{} exited with status {}",
                        bin.display(),
                        libc::WEXITSTATUS(st)
                    )
                }
                None => format!("{} killed by signal {}", bin.display(), libc::WTERMSIG(st)),
            })
        }
    }
}

/// # Safety
/// Only called in the child of a fork, with pointers prepared before it.
unsafe fn child(
    null: i32,
    pw: i32,
    bin: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    fail: &[u8],
) -> ! {
    // SAFETY: raw system calls with integer arguments or pointers into memory that the fork
    // copied (argv, envp, fail, sigaction buffers on our stack).
    unsafe {
        let n = libc::syscall(libc::SYS_fcntl, null, libc::F_DUPFD, 10) as i32;
        let w = libc::syscall(libc::SYS_fcntl, pw, libc::F_DUPFD, 10) as i32;
        libc::syscall(libc::SYS_dup3, n, 0, 0);
        libc::syscall(libc::SYS_dup3, w, 1, 0);
        libc::syscall(libc::SYS_dup3, w, 2, 0);
        if libc::syscall(libc::SYS_close_range, 3, u32::MAX, 0) < 0 {
            for fd in 3..1024 {
                libc::syscall(libc::SYS_close, fd);
            }
        }
        let empty: u64 = 0;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            0,
            8,
        );
        let dfl = [0usize; 4];
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), 0, 8);
            }
        }
        libc::syscall(libc::SYS_execve, bin.as_ptr(), argv.as_ptr(), envp.as_ptr());
        libc::syscall(libc::SYS_write, 1, fail.as_ptr(), fail.len());
        loop {
            libc::syscall(libc::SYS_exit_group, 127);
        }
    }
}

/// Sleep with a raw `nanosleep`.
pub fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: ts is a valid timespec; no remainder requested.
    unsafe { libc::syscall(libc::SYS_nanosleep, &ts as *const libc::timespec, 0) };
}
