//! `ioth-exec [--] CMD ARGS...`: run a program as an IoTh node without `LD_PRELOAD`, so that
//! statically linked programs (and Go programs, which make their own system calls) get a
//! virtual network too.
//!
//! The child installs a seccomp filter that sends the socket control calls (`socket`,
//! `connect`, `bind`, `listen`, `accept[4]`, `get{sock,peer}name`, `{set,get}sockopt`,
//! `shutdown`) to this supervisor as user notifications, tells it its pid and the listener's
//! number over a socketpair (the supervisor takes it with `pidfd_getfd`), and execs CMD. The
//! supervisor answers each call with the shim's own emulation ([`serve`]): a virtual TCP
//! socket is one end of a kernel socketpair pumped by the node's stack daemon, so reads,
//! writes and polling stay native system calls the filter allows. Datagram sockets sit at
//! [`notify::DGRAM_FDS`], whose reads and writes the filter sends here too (their messages
//! carry the shim's header), as it does calls with addresses or a `msghdr`, and opens (the
//! node's `/etc/resolv.conf`).
//! Calls of a foreign ABI (i386 through `int 0x80`, x32) fail with `ENOSYS`: the filter
//! knows only the native numbers, so they would bypass the notifications and reach the
//! host's network ([`notify::filter`]).
//! The filter is inherited, so one supervisor serves the program's threads, forks and execs;
//! it runs until none of them is left and exits with the child's status (a signal `n` gives
//! `128+n`). Termination and user signals sent to the supervisor go to the child.
//!
//! Environment: as `libioth.so` (`IOTH_IP` & co. or `IOTH_STACK`; `IOTH_LOG`).
//! `ioth-exec --check` probes that seccomp user notification works here (exit 0).

mod notify;
mod serve;

use ioth::node::{self, Home};
use ioth_common::sys;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

const USAGE: &str = "usage: ioth-exec [--] CMD ARGS...   (environment: IOTH_IP/IOTH_STACK & co.)
       ioth-exec --check                 (does seccomp user notification work here?)";

fn main() {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let first = args.first().and_then(|a| a.to_str()).map(str::to_owned);
    match first.as_deref() {
        Some("-h") | Some("--help") => {
            println!("{USAGE}");
            return;
        }
        Some("--check-child") => std::process::exit(check_child()),
        Some("--check") => {
            let me = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
            std::process::exit(supervise(me.into(), vec!["--check-child".into()]));
        }
        Some("--") => {
            args.remove(0);
        }
        Some(a) if a.starts_with('-') => {
            eprintln!("ioth-exec: unknown option {a}\n{USAGE}");
            std::process::exit(2);
        }
        _ => {}
    }
    if args.is_empty() {
        eprintln!("ioth-exec: no command given\n{USAGE}");
        std::process::exit(2);
    }
    match node::home() {
        Home::Inert => {
            eprintln!(
                "ioth-exec: give the node an address (IOTH_IP) or a running stack (IOTH_STACK)"
            );
            std::process::exit(2);
        }
        Home::Bad(e) => {
            eprintln!("ioth-exec: {e}");
            std::process::exit(2);
        }
        _ => {}
    }
    let cmd = args.remove(0);
    std::process::exit(supervise(cmd, args));
}

/// The probe's child: one notified call, continued by the supervisor.
fn check_child() -> i32 {
    match sys::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("ioth-exec: socket under the filter: {e}");
            1
        }
    }
}

fn exit_code(s: ExitStatus) -> i32 {
    match (s.code(), s.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    }
}

/// Start `cmd` under the filter and serve it until its process tree is gone.
fn supervise(cmd: OsString, args: Vec<OsString>) -> i32 {
    // Our copies of the program's sockets last one call: what the shim would hold back
    // for later goes at once.
    ioth::held::hold_nothing();
    let (ours, theirs) =
        match sys::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("ioth-exec: socketpair: {e}");
                return 125;
            }
        };
    let mut c = Command::new(&cmd);
    c.args(&args);
    notify::on_exec(&mut c, theirs.raw());
    // The child hands over its listener while `spawn` waits for its exec.
    let chan = ours.raw();
    let taker = std::thread::spawn(move || notify::take_listener(chan));
    let spawned = c.spawn();
    drop(theirs);
    let mut child = match spawned {
        Ok(ch) => ch,
        Err(e) => {
            // The child is gone; so is its end of the channel, which ends the taker.
            let _ = sys::shutdown(ours.raw(), libc::SHUT_RDWR);
            let _ = taker.join();
            eprintln!("ioth-exec: {}: {e}", cmd.to_string_lossy());
            return match e.kind() {
                std::io::ErrorKind::NotFound => 127,
                std::io::ErrorKind::PermissionDenied => 126,
                _ => 125,
            };
        }
    };
    notify::forward_signals(child.id() as i32);
    let listener = match taker.join() {
        Ok(Ok(l)) => l,
        r => {
            eprintln!("ioth-exec: no seccomp listener from the child: {r:?}");
            let _ = child.kill();
            let _ = child.wait();
            return 125;
        }
    };
    drop(ours);
    let waiter = std::thread::spawn(move || child.wait());
    let l = listener.raw();
    loop {
        let mut p = [libc::pollfd {
            fd: l,
            events: libc::POLLIN,
            revents: 0,
        }];
        match sys::poll(&mut p, -1) {
            Ok(_) => {}
            Err(e) if e == sys::Errno::EINTR => continue,
            Err(e) => {
                eprintln!("ioth-exec: poll: {e}");
                break;
            }
        }
        if p[0].revents & libc::POLLIN != 0 {
            // ENOENT: the caller went away between poll and receive.
            if let Ok(n) = notify::recv(l) {
                serve::dispatch(l, n);
            }
            continue;
        }
        if p[0].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            // No process uses the filter any more.
            break;
        }
    }
    match waiter.join() {
        Ok(Ok(s)) => exit_code(s),
        _ => 125,
    }
}
