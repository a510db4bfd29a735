//! What this process has not told its stack daemons yet: sent when it next asks one anything.
//!
//! * A TCP socket made here (`node::register_home`) is registered (`Register`, its fd
//!   attached) only then; so is a connect the shim made itself from a leased port
//!   (`Connected`, `emu::connect_listener`), and an accepted cut-through connection's record
//!   (`Adopt`, `emu::take_kernel_connection`). Every request first sends what is held, so the
//!   daemon hears of a socket before anything about it.
//! * Most such sockets are closed by then (a client's or a server's `Connection: close`
//!   requests): they are never registered nor adopted, and the connections made from leased
//!   ports go, up to `ctl::MAX_CLOSED` at a time, in one `Closed` (counted; their ports free
//!   again). A connection therefore wakes no daemon on either side.
//! * Also sent: before a fork (the child may `exec`), before an `exec` (`crate::exec`), at
//!   exit, and when the oldest held socket has waited [`SOCKS_WAIT`] (seen when one more
//!   comes). When [`SOCKS_MAX`] wait, those closed are told of, and those still open stay
//!   held.
//! * Closed or not: a held fd that still has the socket's inode is open. Else the socket's
//!   name says (`names::socket_name`: free once every copy is closed): a copy made by `dup`,
//!   `fcntl(F_DUPFD)` or received by `SCM_RIGHTS` keeps it, and is found by its inode to go
//!   with the `Register`.
//! * While one thread sends what it took, the others' requests wait for it (briefly: sends
//!   are one-way), or a request could overtake the `Register` of its socket.
//! * Also sent before a `sendmsg` or `sendmmsg` with control data (it may pass a held
//!   socket with `SCM_RIGHTS`).
//! * Also sent before a spawn (`posix_spawn`, `system`, `popen`, `vfork`: `crate::exec`).
//! * Not covered: a held socket that only another program holds before this process asks
//!   anything, passed on by a child made with `clone` itself: its daemon does not know it
//!   (`EBADF` for its address; for an accepted connection `emu::adopt_from_peer` makes the
//!   record).

use crate::node;
use ioth_common::ctl::{self, Request, WireAddr};
use ioth_common::names;
use ioth_common::sys;
use parking_lot::Mutex;
use std::cell::Cell;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Sockets held before those closed are told of (at least: twice as many as were still
/// open the last time, which stay held).
pub const SOCKS_MAX: usize = 32;
/// Longest the oldest held socket waits, when others come.
pub const SOCKS_WAIT: Duration = Duration::from_secs(1);
/// Most `Adopt`s held back: then those closed are dropped and the oldest of the rest sent.
const ADOPTS_MAX: usize = 1024;

/// A socket made here that its daemon has not heard of (or not of its connect).
struct Sock {
    node: u64,
    fd: RawFd,
    ino: u64,
    id: u64,
    /// Its `Register`, if not sent.
    register: Option<Request>,
    /// The addresses of the connect the shim made itself (`Connected`), if any.
    connected: Option<(WireAddr, WireAddr)>,
    /// When it was held.
    at: Instant,
}

struct Held {
    pid: u32,
    socks: Vec<Sock>,
    /// How many of `socks` were still open at the last [`sweep`].
    kept: usize,
    /// Records of accepted cut-through connections: node, fd, inode, the `Adopt`.
    adopts: Vec<(u64, RawFd, u64, Request)>,
}

static HELD: Mutex<Held> = Mutex::new(Held {
    pid: 0,
    socks: Vec::new(),
    kept: 0,
    adopts: Vec::new(),
});
/// How many things are held (a request's check costs one load).
static PENDING: AtomicUsize = AtomicUsize::new(0);
/// Threads sending what they took.
static SENDING: AtomicUsize = AtomicUsize::new(0);
/// Nothing is held in this process ([`hold_nothing`]).
static NO_HOLD: AtomicBool = AtomicBool::new(false);

/// Send everything at once from now on: for `ioth-exec`'s supervisor, whose copies of a
/// program's sockets last one system call (it could not tell later whether they are open).
pub fn hold_nothing() {
    NO_HOLD.store(true, Ordering::Release);
}

/// After holding something: send it now if nothing may be held.
fn unless_held() {
    if NO_HOLD.load(Ordering::Acquire) {
        flush();
    }
}

thread_local! {
    /// This thread is sending what it took (its own requests must not wait for it).
    static IN_FLUSH: Cell<bool> = const { Cell::new(false) };
}

impl Held {
    /// A child drops what its parent held: the parent sends it (`prepare_fork` sent all it
    /// could; what another thread added since is the parent's).
    fn check_pid(&mut self) {
        let pid = sys::getpid();
        if self.pid != pid {
            if self.pid != 0 {
                self.socks.clear();
                self.adopts.clear();
                self.kept = 0;
                PENDING.store(0, Ordering::Release);
            }
            self.pid = pid;
        }
    }

    fn count(&self) -> usize {
        self.socks.len() + self.adopts.len()
    }
}

/// Whether `fd` still holds the socket with inode `ino` (it was not closed here).
fn still_open(fd: RawFd, ino: u64) -> bool {
    sys::fstat_id(fd).is_ok_and(|i| i.1 == ino)
}

/// Hold the `Register` of TCP socket `id` of `node`, made here at `fd` (inode `ino`).
pub fn register_later(node: u64, fd: RawFd, ino: u64, id: u64, req: Request) {
    let now = Instant::now();
    let (all, swept) = {
        let mut h = HELD.lock();
        h.check_pid();
        h.socks.push(Sock {
            node,
            fd,
            ino,
            id,
            register: Some(req),
            connected: None,
            at: now,
        });
        PENDING.store(h.count(), Ordering::Release);
        (
            now.duration_since(h.socks[0].at) >= SOCKS_WAIT,
            h.socks.len() >= SOCKS_MAX.max(2 * h.kept),
        )
    };
    if all || NO_HOLD.load(Ordering::Acquire) {
        flush();
    } else if swept {
        sweep();
    }
}

/// Hold the `Connected` of socket `id` of `node` at `fd`, which the shim connected itself
/// from `local` to `peer`.
pub fn connected_later(node: u64, fd: RawFd, id: u64, local: WireAddr, peer: WireAddr) {
    let mut h = HELD.lock();
    h.check_pid();
    if let Some(s) = h.socks.iter_mut().find(|s| s.id == id && s.node == node) {
        s.connected = Some((local, peer));
        drop(h);
        unless_held();
        return;
    }
    // Registered already (something about it was asked before the connect).
    let Ok((_, ino)) = sys::fstat_id(fd) else {
        return;
    };
    h.socks.push(Sock {
        node,
        fd,
        ino,
        id,
        register: None,
        connected: Some((local, peer)),
        at: Instant::now(),
    });
    PENDING.store(h.count(), Ordering::Release);
    drop(h);
    unless_held();
}

/// Take back the held `Register` of socket `id` of `node`, to send it along with a request
/// that carries the socket's fd anyway (`ConnectAsync`): the daemon then takes the inode
/// from that fd, and reads one fd fewer.
pub fn take_register(node: u64, id: u64) -> Option<Request> {
    let mut h = HELD.lock();
    h.check_pid();
    let i = h.socks.iter().position(|s| s.id == id && s.node == node)?;
    let req = h.socks[i].register.take()?;
    if h.socks[i].connected.is_none() {
        h.socks.remove(i);
    }
    PENDING.store(h.count(), Ordering::Release);
    Some(req)
}

/// Hold the record (`Adopt`) of the cut-through connection accepted at `fd` (inode `ino`):
/// nobody can ask about it before this process asks a daemon something.
pub fn adopt_later(node: u64, fd: RawFd, ino: u64, req: Request) {
    let due = {
        let mut h = HELD.lock();
        h.check_pid();
        h.adopts.push((node, fd, ino, req));
        PENDING.store(h.count(), Ordering::Release);
        if h.adopts.len() < ADOPTS_MAX {
            return;
        }
        PENDING.store(h.socks.len(), Ordering::Release);
        std::mem::take(&mut h.adopts)
    };
    let mut open: Vec<_> = due.into_iter().filter(|a| still_open(a.1, a.2)).collect();
    let keep = open.split_off(open.len().saturating_sub(ADOPTS_MAX / 4));
    {
        let mut h = HELD.lock();
        h.check_pid();
        h.adopts.splice(0..0, keep);
        PENDING.store(h.count(), Ordering::Release);
    }
    for (node, _, _, req) in open {
        let _ = node::send_fds(node, &req, &[]);
    }
}

/// Whether anything is held (one atomic load).
pub fn pending() -> bool {
    PENDING.load(Ordering::Acquire) != 0
}

/// Whether `fd` is a socket whose daemon has not heard of it yet.
pub fn is_held(fd: RawFd) -> bool {
    pending()
        && HELD
            .lock()
            .socks
            .iter()
            .any(|s| s.fd == fd && s.register.is_some())
}

/// Send all that is held, of the sockets still open; and wait for what other threads are
/// sending (or putting back: [`sweep`]).
pub fn flush() {
    if IN_FLUSH.with(|f| f.get()) {
        return;
    }
    for _ in 0..4 {
        if PENDING.load(Ordering::Acquire) != 0 {
            sending(|| {
                let (socks, adopts) = {
                    let mut h = HELD.lock();
                    h.check_pid();
                    h.kept = 0;
                    PENDING.store(0, Ordering::Release);
                    (std::mem::take(&mut h.socks), std::mem::take(&mut h.adopts))
                };
                send_socks(socks);
                for (node, fd, ino, req) in adopts {
                    if still_open(fd, ino) {
                        let _ = node::send_fds(node, &req, &[]);
                    }
                }
            });
        }
        // Bounded: a thread stopped in its send (a daemon that does not read) delays the
        // others by a few milliseconds at most, and a signal handler that interrupted a
        // send in this thread does not wait for itself.
        for _ in 0..2000 {
            if SENDING.load(Ordering::Acquire) == 0 {
                break;
            }
            std::thread::yield_now();
        }
        if PENDING.load(Ordering::Acquire) == 0 {
            return;
        }
    }
}

/// Run `f`, which takes held things out and sends them, marked as sending.
fn sending(f: impl FnOnce()) {
    IN_FLUSH.with(|i| i.set(true));
    SENDING.fetch_add(1, Ordering::AcqRel);
    f();
    SENDING.fetch_sub(1, Ordering::AcqRel);
    IN_FLUSH.with(|i| i.set(false));
}

/// Tell of the held sockets that are closed (most, in a client's `Connection: close`
/// requests), and keep holding those still open at their fds.
fn sweep() {
    if IN_FLUSH.with(|f| f.get()) {
        return;
    }
    sending(|| {
        let socks = {
            let mut h = HELD.lock();
            h.check_pid();
            let socks = std::mem::take(&mut h.socks);
            PENDING.store(h.count(), Ordering::Release);
            socks
        };
        let (open, rest): (Vec<Sock>, Vec<Sock>) =
            socks.into_iter().partition(|s| still_open(s.fd, s.ino));
        send_socks(rest);
        let mut h = HELD.lock();
        h.check_pid();
        h.kept = open.len();
        h.socks.splice(0..0, open);
        PENDING.store(h.count(), Ordering::Release);
    });
}

/// Where socket `s` is open in this process: its fd, else a copy of it (`dup`, ...); `None`
/// if it is closed everywhere, or open only in another process (`Some(None)`).
fn open_at(s: &Sock) -> Option<Option<RawFd>> {
    if still_open(s.fd, s.ino) {
        return Some(Some(s.fd));
    }
    // Its name is bound while any copy is open.
    if !sys::unix_name_taken(&names::socket_name(s.node, s.id)) {
        return None;
    }
    let max = sys::fd_limit().clamp(64, 8192) as RawFd;
    Some((0..max).find(|&fd| still_open(fd, s.ino)))
}

fn send_socks(socks: Vec<Sock>) {
    let mut closed: Vec<(u64, Vec<(WireAddr, WireAddr)>)> = Vec::new();
    for s in socks {
        if let Some(at) = open_at(&s) {
            if let (Some(req), Some(fd)) = (&s.register, at) {
                let _ = node::send_fds(s.node, req, &[fd]);
            }
            if let Some((local, peer)) = s.connected {
                let req = Request::Connected {
                    id: s.id,
                    local,
                    peer,
                };
                let _ = node::send_fds(s.node, &req, &[]);
            }
        } else if let Some(c) = s.connected {
            match closed.iter_mut().find(|b| b.0 == s.node) {
                Some(b) => b.1.push(c),
                None => closed.push((s.node, vec![c])),
            }
        }
    }
    for (node, conns) in closed {
        for part in conns.chunks(ctl::MAX_CLOSED) {
            let req = Request::Closed {
                conns: part.to_vec(),
            };
            let _ = node::send_fds(node, &req, &[]);
        }
    }
}

/// Lock what is held across a fork (after sending it): the child starts with nothing.
pub fn prepare_fork() {
    flush();
    std::mem::forget(HELD.lock());
}

/// After a fork: in the child, no other thread is sending anything.
pub fn after_fork(child: bool) {
    if child {
        SENDING.store(0, Ordering::Release);
    }
    // SAFETY: prepare_fork locked the mutex in this thread and forgot the guard; in the
    // parent and in the child this thread is the owner.
    unsafe { HELD.force_unlock() };
}

/// Before this process's program is replaced (`exec`): send what is held, as at exit, since
/// the new program may use the sockets it inherits and would find them unknown. Only in the
/// process that holds it: a `vfork` child shares our memory but not our pid, and what is
/// held is its parent's, which sent it before the `vfork` (`crate::exec`). Nothing waits
/// long: a lock this thread already holds (an `exec` from a signal handler that interrupted
/// the shim) or that another thread keeps skips the send.
pub fn before_exec() {
    if PENDING.load(Ordering::Acquire) == 0 {
        return;
    }
    let Some(h) = HELD.try_lock_for(Duration::from_millis(50)) else {
        return;
    };
    let ours = h.pid == sys::getpid();
    drop(h);
    if ours && node::lock_free_for_exec() {
        flush();
    }
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(flush);
}

/// Send what is held when the process exits (`exit`, or a return from `main`).
pub fn install_at_exit() {
    // SAFETY: the handler is a plain function valid for the life of the process.
    unsafe {
        libc::atexit(at_exit);
    }
}
