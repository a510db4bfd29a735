//! The kernel interfaces of the supervisor: the seccomp filter with a user-notification
//! listener, the notification ioctls, pidfds and the target's memory.
//!
//! Every `unsafe` block of `ioth-exec` lives here, each a single system call on plain data.
//! The structures mirror `<linux/seccomp.h>` (x86_64 and aarch64 layouts are the same).
//! Nothing here decides what a call means; that is [`crate::serve`].

use ioth_common::sys::{Errno, Fd};
use std::os::fd::RawFd;

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub ip: u64,
    pub args: [u64; 6],
}

/// `struct seccomp_notif`: one intercepted system call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Notif {
    pub id: u64,
    pub pid: u32,
    pub flags: u32,
    pub data: SeccompData,
}

/// `struct seccomp_notif_resp`.
#[repr(C)]
struct Resp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

/// `struct seccomp_notif_addfd`.
#[repr(C)]
struct AddFd {
    id: u64,
    flags: u32,
    srcfd: u32,
    newfd: u32,
    newfd_flags: u32,
}

const IOCTL_RECV: libc::c_ulong = 0xc050_2100;
const IOCTL_SEND: libc::c_ulong = 0xc018_2101;
const IOCTL_ID_VALID: libc::c_ulong = 0x4008_2102;
const IOCTL_ADDFD: libc::c_ulong = 0x4018_2103;
const USER_NOTIF_FLAG_CONTINUE: u32 = 1;
const ADDFD_FLAG_SETFD: u32 = 1;
const ADDFD_FLAG_SEND: u32 = 2;
const SET_MODE_FILTER: libc::c_ulong = 1;
const FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;
const FILTER_FLAG_WAIT_KILLABLE_RECV: libc::c_ulong = 1 << 5;
/// The kernel's "restart this call, or fail it with `EINTR`, as the signal handler says".
pub const ERESTARTSYS: Errno = Errno(512);
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_ERRNO: u32 = 0x0005_0000;

/// The ABI the supervisor serves (`seccomp_data.arch`): the one it is built for.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
/// `__X32_SYSCALL_BIT`: x32 calls come with the x86-64 arch and this bit in the number.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The socket control calls the supervisor answers.
pub const NOTIFIED: [libc::c_long; 11] = [
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_shutdown,
];

/// Calls that always go to the supervisor although most of them are not for a virtual
/// socket: message calls (their addresses and control data are behind a `msghdr` the
/// filter cannot read) and opens (the node's `/etc/resolv.conf`; the path is a string the
/// filter cannot read). The supervisor lets the kernel run the others.
#[cfg(target_arch = "x86_64")]
pub const ALWAYS: [libc::c_long; 7] = [
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_open,
];
#[cfg(not(target_arch = "x86_64"))]
pub const ALWAYS: [libc::c_long; 6] = [
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_openat,
    libc::SYS_openat2,
];

/// Data calls that go to the supervisor when their descriptor is in [`DGRAM_FDS`], where
/// the supervisor installs virtual datagram sockets, whose every message carries a header
/// the program must not see. `sendto` and `recvfrom` go there too, and always when they
/// carry an address.
pub const IN_RANGE: [libc::c_long; 4] = [
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
];

/// The descriptor numbers of virtual datagram sockets in the target: the top 64 below
/// 1024 (the usual soft `RLIMIT_NOFILE`, which Go raises), so that the program's own
/// descriptors, always the lowest free numbers, reach them only past 960 open files.
pub const DGRAM_FDS: std::ops::Range<u32> = 960..1024;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// BPF_LD | BPF_W | BPF_ABS: load a word of `seccomp_data`.
const LD_W_ABS: u16 = 0x20;
/// BPF_JMP | BPF_JEQ | BPF_K.
const JEQ_K: u16 = 0x15;
/// BPF_JMP | BPF_JGE | BPF_K (unsigned).
const JGE_K: u16 = 0x35;
/// BPF_RET | BPF_K.
const RET_K: u16 = 0x06;

/// One instruction with symbolic jump targets (resolved by [`assemble`]).
enum Insn {
    /// Load the word at this offset of `seccomp_data`.
    Load(u32),
    /// Jump to `yes` when the accumulator equals (`ge`: is at least, unsigned) `k`, else
    /// to `no`.
    Jump {
        ge: bool,
        k: u32,
        yes: Label,
        no: Label,
    },
    Ret(u32),
    /// A jump target (takes no room).
    Here(Label),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Label {
    Next,
    Allow,
    Notify,
    Enosys,
    /// `sendto`/`recvfrom`: notified if the address argument is not null, else as `read`.
    AddrArg,
    AddrHigh,
    /// Notified if `args[0]` is in [`DGRAM_FDS`].
    FdRange,
    FdBelowTop,
    /// `ioctl`: notified for the socket requests (`0x8900`-`0x89ff`: interfaces, ARP).
    IoctlReq,
    IoctlTop,
}

/// Offsets in `struct seccomp_data`: `nr`, `arch`, and `args[i]` (its low word on a
/// little-endian machine; the high word 4 bytes further).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg(i: u32) -> u32 {
    16 + 8 * i
}

fn assemble(prog: &[Insn]) -> Vec<libc::sock_filter> {
    let mut at = std::collections::HashMap::new();
    let mut n = 0usize;
    for i in prog {
        match i {
            Insn::Here(l) => {
                at.insert(*l, n);
            }
            _ => n += 1,
        }
    }
    let mut out = Vec::with_capacity(n);
    for i in prog {
        let pc = out.len();
        let to = |l: &Label| -> u8 {
            let t = if *l == Label::Next { pc + 1 } else { at[l] };
            u8::try_from(t - pc - 1).expect("filter jumps are forward and short")
        };
        match i {
            Insn::Here(_) => {}
            Insn::Load(k) => out.push(stmt(LD_W_ABS, *k)),
            Insn::Ret(k) => out.push(stmt(RET_K, *k)),
            Insn::Jump { ge, k, yes, no } => out.push(libc::sock_filter {
                code: if *ge { JGE_K } else { JEQ_K },
                jt: to(yes),
                jf: to(no),
                k: *k,
            }),
        }
    }
    out
}

fn eq(k: u32, yes: Label, no: Label) -> Insn {
    Insn::Jump {
        ge: false,
        k,
        yes,
        no,
    }
}

fn ge(k: u32, yes: Label, no: Label) -> Insn {
    Insn::Jump {
        ge: true,
        k,
        yes,
        no,
    }
}

/// The `ioctl` requests the supervisor sees: the socket ones (`SIOCGIFINDEX`, `SIOCGIFHWADDR`,
/// `SIOCGIFCONF`, `SIOCSARP` ...), which the kernel would answer for the host's interfaces.
pub const IOCTL_REQS: std::ops::Range<u32> = 0x8900..0x8a00;

/// The filter:
///
/// 1. A call of a foreign ABI fails with `ENOSYS`: another `seccomp_data.arch` (i386 through
///    `int 0x80` from a 64-bit program, which has its own numbers: `socketcall` 102,
///    `socket` 359...) or, on x86-64, an x32 call (the number with `__X32_SYSCALL_BIT`). The
///    numbers below are those of the native ABI only, so such a call would bypass the
///    notifications and open a socket on the host's network. `ENOSYS` is what a kernel
///    without that ABI answers, so a program falls back or fails cleanly; a program that is
///    entirely i386 or x32 cannot run under `ioth-exec` (its first call fails).
/// 2. The calls of [`NOTIFIED`] and [`ALWAYS`] go to the supervisor; so do those of
///    [`IN_RANGE`], `sendto` and `recvfrom` on a descriptor in [`DGRAM_FDS`], and `sendto`
///    and `recvfrom` with an address.
///    So does `ioctl` with a request in [`IOCTL_REQS`].
/// 3. `io_uring_setup` fails with `ENOSYS` (io_uring could open and connect sockets without
///    any of those calls).
/// 4. Everything else runs natively.
pub fn filter() -> Vec<libc::sock_filter> {
    use Insn::*;
    use Label::*;
    let mut p = vec![Load(OFF_ARCH), eq(AUDIT_ARCH, Next, Enosys), Load(OFF_NR)];
    #[cfg(target_arch = "x86_64")]
    p.push(ge(X32_SYSCALL_BIT, Enosys, Next));
    for nr in NOTIFIED.iter().chain(ALWAYS.iter()) {
        p.push(eq(*nr as u32, Notify, Next));
    }
    for nr in IN_RANGE {
        p.push(eq(nr as u32, FdRange, Next));
    }
    for nr in [libc::SYS_sendto, libc::SYS_recvfrom] {
        p.push(eq(nr as u32, AddrArg, Next));
    }
    p.push(eq(libc::SYS_ioctl as u32, IoctlReq, Next));
    p.push(eq(libc::SYS_io_uring_setup as u32, Enosys, Allow));
    p.extend([
        Here(IoctlReq),
        // The kernel takes the request's low 32 bits.
        Load(off_arg(1)),
        ge(IOCTL_REQS.start, IoctlTop, Allow),
        Here(IoctlTop),
        ge(IOCTL_REQS.end, Allow, Notify),
        Here(AddrArg),
        Load(off_arg(4)),
        eq(0, AddrHigh, Notify),
        Here(AddrHigh),
        Load(off_arg(4) + 4),
        eq(0, FdRange, Notify),
        Here(FdRange),
        Load(off_arg(0)),
        ge(DGRAM_FDS.start, FdBelowTop, Allow),
        Here(FdBelowTop),
        ge(DGRAM_FDS.end, Allow, Notify),
        Here(Allow),
        Ret(RET_ALLOW),
        Here(Notify),
        Ret(RET_USER_NOTIF),
        Here(Enosys),
        Ret(RET_ERRNO | libc::ENOSYS as u32),
    ]);
    assemble(&p)
}

/// In the child, before `execve`: no new privileges, then the filter; returns the listener.
/// Only raw system calls (this runs between `fork` and `exec`).
pub fn install(filter: &[libc::sock_filter]) -> Result<RawFd, Errno> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(Errno::last());
    }
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    let mut last = Errno::EINVAL;
    // WAIT_KILLABLE_RECV first (Linux 5.19): once the supervisor has the call, only a fatal
    // signal ends the target's wait, so an emulated call is never half done and then
    // restarted (Go preempts its threads with SIGURG every few milliseconds).
    for flags in [
        FILTER_FLAG_NEW_LISTENER | FILTER_FLAG_WAIT_KILLABLE_RECV,
        FILTER_FLAG_NEW_LISTENER,
    ] {
        // SAFETY: prog points to `filter`, alive for the call; the kernel copies it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SET_MODE_FILTER,
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if r >= 0 {
            return Ok(r as RawFd);
        }
        last = Errno::last();
        if last != Errno::EINVAL {
            break;
        }
    }
    Err(last)
}

/// Ask the parent to kill us if it dies (a target without its supervisor gets `ENOSYS`).
pub fn die_with_parent() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
}

fn ioctl<T>(fd: RawFd, req: libc::c_ulong, arg: &mut T) -> Result<i32, Errno> {
    // SAFETY: arg is a valid, exclusively borrowed structure of the size `req` encodes.
    let r = unsafe { libc::ioctl(fd, req, arg as *mut T) };
    if r < 0 { Err(Errno::last()) } else { Ok(r) }
}

/// The next notification (blocking).
pub fn recv(listener: RawFd) -> Result<Notif, Errno> {
    let mut n = Notif::default();
    ioctl(listener, IOCTL_RECV, &mut n)?;
    Ok(n)
}

/// Is the notification still pending (its thread still waiting, the pid not reused)?
pub fn id_valid(listener: RawFd, id: u64) -> bool {
    let mut id = id;
    ioctl(listener, IOCTL_ID_VALID, &mut id).is_ok()
}

fn send(listener: RawFd, id: u64, val: i64, error: i32, flags: u32) {
    let mut r = Resp {
        id,
        val,
        error,
        flags,
    };
    // ENOENT: the target went away (killed, or interrupted by a signal); nothing to answer.
    let _ = ioctl(listener, IOCTL_SEND, &mut r);
}

/// Answer with a result.
pub fn reply(listener: RawFd, id: u64, r: Result<i64, Errno>) {
    match r {
        Ok(v) => send(listener, id, v, 0, 0),
        Err(e) => send(listener, id, 0, -e.0, 0),
    }
}

/// Let the kernel run the call as it is.
pub fn cont(listener: RawFd, id: u64) {
    send(listener, id, 0, 0, USER_NOTIF_FLAG_CONTINUE);
}

/// Install `fd` in the target as its lowest free descriptor and answer the call with that
/// number, atomically (`SECCOMP_ADDFD_FLAG_SEND`).
pub fn add_fd_reply(listener: RawFd, id: u64, fd: RawFd, cloexec: bool) -> Result<i32, Errno> {
    let mut a = AddFd {
        id,
        flags: ADDFD_FLAG_SEND,
        srcfd: fd as u32,
        newfd: 0,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    ioctl(listener, IOCTL_ADDFD, &mut a)
}

/// Install `fd` in the target as descriptor `at` (which must be free: it would be replaced)
/// and answer the call with that number, atomically.
pub fn add_fd_reply_at(
    listener: RawFd,
    id: u64,
    fd: RawFd,
    at: u32,
    cloexec: bool,
) -> Result<i32, Errno> {
    let mut a = AddFd {
        id,
        flags: ADDFD_FLAG_SEND | ADDFD_FLAG_SETFD,
        srcfd: fd as u32,
        newfd: at,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    ioctl(listener, IOCTL_ADDFD, &mut a)
}

/// Has thread `tid` a signal pending that it does not block? (From `/proc/TID/status`; a
/// thread we cannot inspect has none.)
pub fn signal_pending(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    (field("SigPnd:") | field("ShdPnd:")) & !field("SigBlk:") & !field("SigIgn:") != 0
}

/// A pidfd for the process of thread `tid`.
pub fn pidfd(tid: u32) -> Result<Fd, Errno> {
    // SAFETY: pidfd_open with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, tid as libc::pid_t, 0) };
    if r >= 0 {
        // SAFETY: pidfd_open succeeded: r is a new descriptor that only we hold.
        return Ok(unsafe { Fd::from_raw(r as RawFd) });
    }
    // Not a thread-group leader (EINVAL, or ENOENT since Linux 6.9): open its process (a
    // thread pidfd, PIDFD_THREAD, is refused by pidfd_getfd).
    let e = Errno::last();
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).map_err(|_| e)?;
    let tgid: libc::pid_t = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or(e)?;
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, tgid, 0) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: pidfd_open succeeded: r is a new descriptor that only we hold.
    Ok(unsafe { Fd::from_raw(r as RawFd) })
}

/// A duplicate of the target's descriptor `fd` (same open file description), close-on-exec.
pub fn get_fd(pidfd: &Fd, fd: i32) -> Result<Fd, Errno> {
    // SAFETY: pidfd_getfd with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.raw(), fd, 0) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: pidfd_getfd succeeded: r is a new descriptor in this process that only we hold.
    Ok(unsafe { Fd::from_raw(r as RawFd) })
}

/// Read `len` bytes at `addr` in the target (`EFAULT` if it cannot be read).
pub fn read_mem(pid: u32, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; len];
    if len == 0 {
        return Ok(buf);
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: local describes our own buffer of len bytes; the remote address is only
    // dereferenced by the kernel, in the target.
    let r = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if r != len as isize {
        return Err(Errno(libc::EFAULT));
    }
    Ok(buf)
}

/// The NUL-terminated string at `addr` in the target, if it is at most `max` bytes long
/// (`Ok(None)` when longer). Read a page at a time, so a short string at the end of the
/// target's mapped memory is read without touching the next page.
pub fn read_cstr(pid: u32, addr: u64, max: usize) -> Result<Option<Vec<u8>>, Errno> {
    const PAGE: u64 = 4096;
    let mut out = Vec::new();
    let mut p = addr;
    while out.len() <= max {
        let n = (PAGE - p % PAGE).min((max + 1 - out.len()) as u64) as usize;
        let b = read_mem(pid, p, n)?;
        if let Some(end) = b.iter().position(|c| *c == 0) {
            out.extend_from_slice(&b[..end]);
            return Ok(Some(out));
        }
        out.extend_from_slice(&b);
        p += n as u64;
    }
    Ok(None)
}

/// Write `data` at `addr` in the target (`EFAULT` if it cannot be written).
pub fn write_mem(pid: u32, addr: u64, data: &[u8]) -> Result<(), Errno> {
    if data.is_empty() {
        return Ok(());
    }
    let local = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: local describes our own buffer (only read); the remote address is only
    // dereferenced by the kernel, in the target.
    let r = unsafe { libc::process_vm_writev(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if r != data.len() as isize {
        return Err(Errno(libc::EFAULT));
    }
    Ok(())
}

/// The target's pid, for the signal forwarder.
static TARGET: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = TARGET.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; pid is our own child.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Pass termination and user signals sent to the supervisor on to the target.
pub fn forward_signals(pid: i32) {
    TARGET.store(pid, std::sync::atomic::Ordering::Relaxed);
    for sig in [
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        // SAFETY: a zeroed sigaction with a valid handler and SA_RESTART.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// `pre_exec` hook for `cmd`: in the child, after `fork`, install the filter, then tell the
/// supervisor over `chan` its pid and the listener's number, and wait for the supervisor to
/// have taken the listener ([`take_listener`]) before `exec` closes it (it is close-on-exec).
/// Not `SCM_RIGHTS`: `sendmsg` is a notified call, which would wait for a supervisor that
/// has no listener yet; `write` and `read` on a low descriptor are not.
pub fn on_exec(cmd: &mut std::process::Command, chan: RawFd) {
    use std::os::unix::process::CommandExt;
    let f = filter();
    let hook = move || -> std::io::Result<()> {
        die_with_parent();
        let l = install(&f).map_err(|e| std::io::Error::from_raw_os_error(e.0))?;
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&pid.to_ne_bytes());
        msg[4..].copy_from_slice(&l.to_ne_bytes());
        let io = |r: Result<usize, Errno>| r.map_err(|e| std::io::Error::from_raw_os_error(e.0));
        io(ioth_common::sys::write(chan, &msg))?;
        let mut ack = [0u8; 1];
        let got = io(ioth_common::sys::read(chan, &mut ack))?;
        ioth_common::sys::close(l);
        if got != 1 {
            return Err(std::io::Error::from_raw_os_error(libc::EPIPE));
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child and only makes system calls on its own
    // stack data and the filter, built before the fork (no allocation, no lock).
    unsafe { cmd.pre_exec(hook) };
}

/// The supervisor's side of [`on_exec`]'s handshake on `chan` (run while the child is being
/// spawned): the child's listener, duplicated with `pidfd_getfd`, then the acknowledgement.
pub fn take_listener(chan: RawFd) -> Result<Fd, Errno> {
    let mut msg = [0u8; 8];
    let mut got = 0;
    while got < msg.len() {
        match ioth_common::sys::read(chan, &mut msg[got..]) {
            Ok(0) => return Err(Errno(libc::EPIPE)),
            Ok(k) => got += k,
            Err(e) if e == Errno::EINTR => {}
            Err(e) => return Err(e),
        }
    }
    let pid = i32::from_ne_bytes(msg[..4].try_into().unwrap_or([0; 4]));
    let l = i32::from_ne_bytes(msg[4..].try_into().unwrap_or([0; 4]));
    let pidfd = pidfd(pid as u32)?;
    let listener = get_fd(&pidfd, l)?;
    ioth_common::sys::write(chan, &[1])?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    const AUDIT_ARCH_ARM: u32 = 0x4000_0028;

    /// Run the filter on (arch, nr) as the kernel would: the instructions it uses only.
    fn verdict(f: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        verdict_args(f, arch, nr, [0; 6])
    }

    /// The same with the call's arguments.
    fn verdict_args(f: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut a = 0u32;
        let mut pc = 0;
        loop {
            let i = f[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    a = match i.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        k if (16..64).contains(&k) && k % 4 == 0 => {
                            let v = args[(k as usize - 16) / 8];
                            if k % 8 == 0 {
                                v as u32
                            } else {
                                (v >> 32) as u32
                            }
                        }
                        k => panic!("load at offset {k}"),
                    }
                }
                JEQ_K | JGE_K => {
                    let taken = if i.code == JEQ_K { a == i.k } else { a >= i.k };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                RET_K => return i.k,
                c => panic!("instruction {c:#x}"),
            }
        }
    }

    const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;

    #[test]
    fn native_calls_are_notified_or_allowed() {
        let f = filter();
        for nr in NOTIFIED.iter().chain(ALWAYS.iter()) {
            assert_eq!(verdict(&f, AUDIT_ARCH, *nr as u32), RET_USER_NOTIF, "{nr}");
        }
        for nr in [libc::SYS_read, libc::SYS_write, libc::SYS_exit_group] {
            assert_eq!(verdict(&f, AUDIT_ARCH, nr as u32), RET_ALLOW, "{nr}");
        }
    }

    #[test]
    fn data_calls_are_notified_for_datagram_fds_and_addresses_only() {
        let f = filter();
        let v = |nr: libc::c_long, fd: u64, addr: u64| {
            verdict_args(&f, AUDIT_ARCH, nr as u32, [fd, 0, 0, 0, addr, 0])
        };
        let (lo, hi) = (u64::from(DGRAM_FDS.start), u64::from(DGRAM_FDS.end));
        for nr in IN_RANGE
            .iter()
            .chain(&[libc::SYS_sendto, libc::SYS_recvfrom])
        {
            for fd in [0, 3, lo - 1, hi, hi + 1, 1 << 20] {
                assert_eq!(v(*nr, fd, 0), RET_ALLOW, "{nr} fd {fd}");
            }
            // The kernel takes the descriptor's low 32 bits, as the filter does.
            for fd in [lo, lo + 1, hi - 1, (1 << 32) | lo] {
                assert_eq!(v(*nr, fd, 0), RET_USER_NOTIF, "{nr} fd {fd}");
            }
        }
        for nr in [libc::SYS_sendto, libc::SYS_recvfrom] {
            for addr in [8, 0x7fff_0000_1000, 1 << 32] {
                assert_eq!(v(nr, 3, addr), RET_USER_NOTIF, "{nr} addr {addr:#x}");
            }
        }
        // Other calls do not look at the arguments.
        assert_eq!(v(libc::SYS_close, lo, 0), RET_ALLOW);
        assert_eq!(v(libc::SYS_pread64, lo, 8), RET_ALLOW);
        // ioctl: the socket requests only.
        let io = |req: u64| {
            verdict_args(
                &f,
                AUDIT_ARCH,
                libc::SYS_ioctl as u32,
                [lo, req, 8, 0, 0, 0],
            )
        };
        for req in [
            0x8933,
            0x8927,
            0x8912,
            0x8955,
            0x8900,
            0x89ff,
            (1 << 32) | 0x8933,
        ] {
            assert_eq!(io(req), RET_USER_NOTIF, "ioctl {req:#x}");
        }
        for req in [libc::FIONREAD, libc::TCGETS, 0x88ff, 0x8a00, 0x5401] {
            assert_eq!(io(req), RET_ALLOW, "ioctl {req:#x}");
        }
        let uring = libc::SYS_io_uring_setup as u32;
        assert_eq!(verdict(&f, AUDIT_ARCH, uring), ENOSYS);
    }

    #[test]
    fn foreign_abis_fail_with_enosys() {
        let f = filter();
        let other = if AUDIT_ARCH == AUDIT_ARCH_ARM {
            AUDIT_ARCH_I386
        } else {
            AUDIT_ARCH_ARM
        };
        // i386: socketcall (102), socket (359) ... shutdown (373), and any other call.
        for arch in [AUDIT_ARCH_I386, other, 0] {
            for nr in [0, 1, 3, 41, 42, 102, 359, 362, 373, 425, 0x4000_0029] {
                assert_eq!(verdict(&f, arch, nr), ENOSYS, "arch {arch:#x} nr {nr}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_calls_fail_with_enosys() {
        let f = filter();
        // x32 socket, connect, read, its own recvmsg (519) and setsockopt (541), and the
        // largest number.
        for nr in [41, 42, 0, 519, 541, 0x3fff_ffff, 0xbfff_ffff] {
            let nr = X32_SYSCALL_BIT | nr;
            assert_eq!(verdict(&f, AUDIT_ARCH, nr), ENOSYS, "nr {nr:#x}");
        }
    }
}
