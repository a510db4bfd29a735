//! `ioth-abi-probe`: for the `ioth-exec` tests, creates a TCP socket through each system
//! call ABI an x86-64 process can use and prints, one line each, what it got:
//!
//! ```text
//! native socket: virtual|kernel|ENOSYS|errno N
//! i386 socket: ...       (int 0x80, socket = 359)
//! i386 socketcall: ...   (int 0x80, socketcall = 102, SYS_SOCKET)
//! x32 socket: ...        (syscall, 41 | __X32_SYSCALL_BIT)
//! ```
//!
//! `virtual` is a unix socket standing for the INET one (the virtual socket that the shim or
//! `ioth-exec` installs), `kernel` any other socket: the host's network.

#[cfg(target_arch = "x86_64")]
fn main() {
    use std::arch::asm;

    /// An i386 system call through `int 0x80`; the kernel's return value.
    fn int80(nr: u32, a: u32, b: u32, c: u32) -> i64 {
        let ret: u64;
        // SAFETY: the calls made here (socket, socketcall) take integers and, for
        // socketcall, a pointer to three readable words below 4 GiB; they touch no other
        // memory of ours. rbx (the first argument) is reserved by LLVM, so it is swapped in
        // and out around the call; int 0x80 preserves every register but eax (r8-r11 are
        // declared clobbered for kernels that zeroed them).
        unsafe {
            asm!(
                "xchg {a}, rbx",
                "int 0x80",
                "xchg {a}, rbx",
                a = inout(reg) u64::from(a) => _,
                inlateout("rax") u64::from(nr) => ret,
                in("rcx") u64::from(b),
                in("rdx") u64::from(c),
                lateout("r8") _,
                lateout("r9") _,
                lateout("r10") _,
                lateout("r11") _,
            );
        }
        // The result is eax, sign-extended.
        i64::from(ret as u32 as i32)
    }

    /// An x32 system call: the x86-64 `syscall` instruction with `__X32_SYSCALL_BIT`.
    fn x32(nr: u64, a: u64, b: u64, c: u64) -> i64 {
        let ret: i64;
        // SAFETY: only socket is called (integer arguments, no memory); syscall clobbers
        // rcx and r11 only.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") nr | 0x4000_0000 => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    let (inet, stream) = (libc::AF_INET as u32, libc::SOCK_STREAM as u32);
    // SAFETY: socket with integer arguments.
    let native = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    let native = if native < 0 {
        -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        i64::from(native)
    };
    report("native socket", native);
    report("i386 socket", int80(359, inet, stream, 0));
    // socketcall's arguments must be addressable with 32 bits.
    // SAFETY: an anonymous private mapping of one page, only used through the returned
    // pointer (checked below).
    let low = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    assert!(low != libc::MAP_FAILED, "mmap MAP_32BIT");
    let args = low.cast::<[u32; 3]>();
    // SAFETY: `low` is a fresh, writable, page-aligned page of our own.
    unsafe { args.write([inet, stream, 0]) };
    report("i386 socketcall", int80(102, 1, args as u64 as u32, 0));
    report("x32 socket", x32(41, inet.into(), stream.into(), 0));
}

/// Print what the call returned (a descriptor, which is then closed, or `-errno`).
#[cfg(target_arch = "x86_64")]
fn report(what: &str, r: i64) {
    let got = if r == -i64::from(libc::ENOSYS) {
        "ENOSYS".to_string()
    } else if r < 0 {
        format!("errno {}", -r)
    } else {
        let fd = r as i32;
        let kind = if is_unix(fd) { "virtual" } else { "kernel" };
        // SAFETY: fd is a descriptor this program just received and owns.
        unsafe { libc::close(fd) };
        kind.to_string()
    };
    println!("{what}: {got}");
}

/// Is `fd` a unix socket (its inode listed in `/proc/self/net/unix`)?
#[cfg(target_arch = "x86_64")]
fn is_unix(fd: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(format!("/proc/self/fd/{fd}")) else {
        return false;
    };
    let ino = m.ino().to_string();
    std::fs::read_to_string("/proc/self/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(6) == Some(ino.as_str()))
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("unsupported");
}
