//! `libioth.so`: the `LD_PRELOAD` shim that makes an unmodified, dynamically linked program an
//! IoTh node (see `DESIGN.md`).
//!
//! `LD_PRELOAD=libioth.so IOTH_IP=fd00::5 nginx`: every TCP, UDP and ICMP echo ("ping")
//! socket the program creates over IPv4 or IPv6 becomes a socket of the node's user-space
//! stack (`ioth-stackd`, started on first use), reached through a kernel socketpair, so
//! polling, fork and exec need no hook (datagram sockets get a small header added and
//! stripped in the read/write/send/recv hooks). Raw ICMPv6 sockets are virtual too (router
//! advertisement daemons); other raw IP sockets fail with `EPERM`. The process sees the node's
//! interface `vde0` ([`iface`]) through rtnetlink ([`netlink`]), interface `ioctl`s and
//! `getifaddrs`/`if_*` ([`ifhooks`]). Names are resolved on the virtual network ([`resolv`]).
//! Everything else goes to the kernel untouched.
//!
//! Layers: [`hooks`] (exported C symbols, pointer handling, panic barrier) over [`emu`] (what
//! each call means for a virtual socket) over [`node`] (control connections, starting the
//! daemon) and [`spawn`]; [`addr`] converts socket addresses. Datagram sockets: [`dghooks`]
//! over [`dgram`]; names: [`resolv`]. Every exported symbol, with its pass-through to libc's
//! own function (each hook module's `real`), is declared by one macro in [`hook`].
//!
//! Environment: `IOTH_STACK` (control socket of a running node), else `IOTH_IP` (+ `IOTH_GW`,
//! `IOTH_DNS`, `IOTH_MAC`, `IOTH_MTU`, `IOTH_SWITCH`, `IOTH_NAME`, `IOTH_RUNDIR`); `IOTH_STACKD`
//! (daemon binary); `IOTH_LOG` (debug lines on stderr); `IOTH_RESOLVE=kernel` (names resolved by glibc
//! as usual, i.e. by the host, instead of on the virtual network). With neither `IOTH_STACK` nor
//! `IOTH_IP` the shim is inert. A node that cannot start makes `socket()` fail with
//! `ENETDOWN` after one `libioth: <reason>` line on stderr.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod addr;
pub mod cork;
pub mod dghooks;
pub mod dgram;
pub mod emu;
pub mod exec;
pub mod files;
pub mod fresh;
pub mod held;
pub mod hook;
pub mod hooks;
pub mod iface;
pub mod ifhooks;
pub mod log;
pub mod netlink;
pub mod node;
pub mod packet;
pub mod resolv;
pub mod spawn;
pub mod vcache;

extern "C" fn init() {
    let _ = std::panic::catch_unwind(|| {
        log::quiet_panics();
        hook::resolve_all();
        // The shim's own system calls go to libc's syscall, not to its hook of it.
        // SAFETY: RTLD_NEXT is a valid pseudo-handle; the name is NUL-terminated.
        let next = unsafe { libc::dlsym(libc::RTLD_NEXT, c"syscall".as_ptr()) };
        ioth_common::sys::set_raw_syscall(next);
        ioth_common::sys::note_main_stack();
        dgram::scan_inherited();
        node::install_atfork();
        let _ = spawn::self_dir();
    });
}

/// Library constructor: keep the shim's panics out of the host's stderr, resolve the real
/// functions before any hook can run in a signal handler, install the fork handlers, and
/// remember where the library lives.
#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;
