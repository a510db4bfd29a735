//! The keeper: a small process that outlives the stack daemon of a `--daemon` node and
//! starts it again when it dies, in the manner of systemd's socket activation and
//! file-descriptor store.
//!
//! It holds what must not die with the daemon: the control listeners (the node's control
//! path and abstract name, so that the shim's connections wait in their backlog during a
//! restart instead of starting a second node), and the daemon end of every listener the
//! daemon reports ([`crate::stack::Kept`]), so that the application's listener never reads
//! EOF (nginx workers would spin on it) and a new daemon re-creates the listening sockets on
//! the same addresses and ports with the same socket ids: the application's existing
//! listeners, in every process that holds them, accept again without a restart.
//!
//! Established connections die with the daemon (their daemon ends close: the application
//! reads EOF at once). The keeper forks each daemon itself (no `exec`: the daemon starts
//! from the keeper's state), reads its reports on a SEQPACKET socketpair until the daemon's
//! end closes, reaps it, and starts another one if it failed after it came up (killed by a
//! signal other than SIGTERM, SIGINT or SIGHUP, or exited with an error), at most
//! [`MAX_RESTARTS`] times per [`RESTART_WINDOW`]. A daemon that stops (status 0: no socket
//! left; or one of those signals) ends the keeper too, but not before the applications
//! closed the listeners it holds ([`hold`]): a listener of a stopped node stays quiet.

use crate::os;
use crate::stack::{Kept, KeptSocket};
use ioth_common::sys::{self, Errno, Fd};
use std::io::{IoSlice, IoSliceMut};
use std::time::{Duration, Instant};

/// Restarts allowed within [`RESTART_WINDOW`] before the keeper gives up.
pub const MAX_RESTARTS: usize = 5;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

const TAG_LISTEN: u8 = b'L';
const TAG_DROP: u8 = b'D';
const TAG_UP: u8 = b'U';

/// The daemon's side of the channel to its keeper.
pub struct Reporter {
    fd: Fd,
    up: bool,
}

impl Reporter {
    pub fn new(fd: Fd) -> Reporter {
        Reporter { fd, up: false }
    }

    /// Tell the keeper about listeners that started or went. A failure (the keeper is gone)
    /// only loses the protection.
    pub fn report(&mut self, kept: Vec<Kept>) {
        for k in kept {
            let r = match &k {
                Kept::Listen(l, fd) => {
                    let mut m = vec![TAG_LISTEN];
                    m.extend_from_slice(&l.encode());
                    self.send(&m, &[fd.raw()])
                }
                Kept::Drop(id) => {
                    let mut m = vec![TAG_DROP];
                    m.extend_from_slice(&id.to_le_bytes());
                    self.send(&m, &[])
                }
            };
            if let Err(e) = r {
                log::warn!("keeper: {e}");
            }
        }
    }

    /// The node is up (it has its addresses): a death from now on means a restart.
    pub fn up(&mut self) {
        if !self.up {
            self.up = true;
            if let Err(e) = self.send(&[TAG_UP], &[]) {
                log::warn!("keeper: {e}");
            }
        }
    }

    fn send(&self, m: &[u8], fds: &[i32]) -> Result<(), Errno> {
        sys::retry(|| sys::sendmsg(self.fd.raw(), &[IoSlice::new(m)], fds, libc::MSG_NOSIGNAL))
            .map(drop)
    }
}

/// What the keeper holds for the next daemon.
#[derive(Default)]
pub struct Store {
    pub listeners: Vec<(KeptSocket, Fd)>,
}

impl Store {
    /// Copies of the stored listener ends, for a new daemon (in the forked child).
    pub fn copies(&self) -> Vec<(KeptSocket, Fd)> {
        self.listeners
            .iter()
            .filter_map(|(k, fd)| Some((k.clone(), fd.dup_cloexec(0).ok()?)))
            .collect()
    }
}

/// How one daemon ended, as the keeper saw it.
pub struct Ended {
    pub exit: os::Exit,
    /// It said it was up.
    pub was_up: bool,
}

/// In the keeper: read the reports of daemon `pid` on `ch` until the daemon's end closes,
/// then reap it.
pub fn watch(ch: &Fd, pid: i32, store: &mut Store) -> Ended {
    let mut was_up = false;
    // A kept socket with its options (at most `REPLAY_MAX` bytes of values).
    let mut buf = [0u8; 4096];
    loop {
        let got = match sys::recvmsg(ch.raw(), &mut [IoSliceMut::new(&mut buf)], 0) {
            Ok(g) => g,
            Err(e) if e == Errno::EINTR => continue,
            Err(_) => break,
        };
        if got.len == 0 && got.fds.is_empty() {
            break;
        }
        let m = &buf[..got.len];
        match m.first() {
            Some(&TAG_LISTEN) => {
                if let (Some(k), Some(fd)) =
                    (KeptSocket::decode(&m[1..]), got.fds.into_iter().next())
                {
                    store.listeners.retain(|(o, _)| o.id != k.id);
                    store.listeners.push((k, fd));
                }
            }
            Some(&TAG_DROP) if m.len() == 9 => {
                let id = u64::from_le_bytes(m[1..9].try_into().unwrap_or_default());
                store.listeners.retain(|(o, _)| o.id != id);
            }
            Some(&TAG_UP) => was_up = true,
            _ => {}
        }
    }
    let exit = os::wait_child(pid).unwrap_or(os::Exit::Code(1));
    Ended { exit, was_up }
}

/// The keeper's restart budget.
#[derive(Default)]
pub struct Budget {
    restarts: Vec<Instant>,
}

impl Budget {
    /// Whether another restart is allowed now (and count it).
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.restarts
            .retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        if self.restarts.len() >= MAX_RESTARTS {
            return false;
        }
        self.restarts.push(now);
        true
    }
}

/// Hold the stored listeners' daemon ends until every application end is closed (a
/// stopped node: its listeners stay quiet, no connection arrives, rather than reading EOF).
pub fn hold(mut store: Store) {
    // A kernel listener is the application's own socket: nothing here to hold.
    store.listeners.retain(|(k, _)| !k.kernel);
    while !store.listeners.is_empty() {
        let mut p: Vec<libc::pollfd> = store
            .listeners
            .iter()
            .map(|(_, fd)| libc::pollfd {
                fd: fd.raw(),
                events: libc::POLLRDHUP,
                revents: 0,
            })
            .collect();
        match sys::poll(&mut p, -1) {
            Ok(_) => {}
            Err(e) if e == Errno::EINTR => continue,
            Err(_) => return,
        }
        let gone: Vec<bool> = p
            .iter()
            .map(|q| q.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLNVAL) != 0)
            .collect();
        let mut i = 0;
        store.listeners.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
    }
}
