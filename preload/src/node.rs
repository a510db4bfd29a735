//! Control connections to stack daemons, and the process's home node.
//!
//! * A virtual socket names its node in its own fd name, so calls on an existing socket go to
//!   the abstract control name of that node (`ioth/<node>/ctl`), whichever process holds it.
//! * New sockets go to the *home* node: `IOTH_STACK` (a control socket path), else the node
//!   described by `IOTH_IP` & co., whose daemon is started on first use when nobody answers at
//!   its path. Without either variable the shim is inert.
//! * Idle connections wait in a pool under one mutex. A call takes one out (or opens one),
//!   releases the mutex, makes its round trip, and puts it back: no lock is held across a
//!   round trip, so a stopped or hung daemon can block only the threads that talk to it, and
//!   never `fork` (whose `pthread_atfork` handlers take the mutex). Every round trip, and the
//!   `connect` that opens a connection, is bounded ([`ROUND_TRIP_MS`], `SO_SNDTIMEO`/
//!   `SO_RCVTIMEO`); past it the call fails with `ENETDOWN`, as when the daemon is gone.
//! * A connection is used only if its peer runs as our effective uid or as root
//!   (`SO_PEERCRED`), checked before anything is sent: a daemon of another user at our path
//!   gets nothing from us.
//! * Every use checks the pid: a child drops the connections it inherited, idle or in use by
//!   another thread at the fork (sharing one SEQPACKET stream with the parent would mix
//!   replies), and that a pooled fd is still the socket we opened (`fstat` device and inode:
//!   programs close or `dup2` over descriptors they do not know). An fd that is no longer ours
//!   is forgotten, never closed.
//! * Control fds are close-on-exec and moved to a high number, out of the way of `dup2`.

use crate::spawn;
use ioth_common::config::{ConfigError, NodeConfig, RawConfig};
use ioth_common::ctl::{self, Reply, Request};
use ioth_common::names;
use ioth_common::sys::{self, Errno, Fd, UnixAddr};
use ioth_common::table;
use parking_lot::Mutex;
use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Lowest fd number used for control connections (when the fd limit allows it).
const HIGH_FD: i32 = 900;
/// Longest a control round trip (or the connect before it) may take. A daemon answers at
/// once (`ctl`: nothing it does waits for the network); this bounds a stopped, hung or fake
/// one.
pub const ROUND_TRIP_MS: u32 = 5000;

/// One control connection.
struct Conn {
    node: u64,
    fd: Fd,
    ident: (u64, u64),
    /// The daemon's uid (`SO_PEERCRED`).
    peer_uid: u32,
    /// Sequence number of the last request (`ctl`, Staying in step).
    seq: std::cell::Cell<u16>,
}

/// Replies with another sequence number read and dropped in one call before giving up on the
/// connection (each is a reply to a call that gave up earlier, at most a few).
const MAX_STALE: usize = 16;

/// Errnos that say the process (or system) is out of descriptors or memory: the call fails
/// with it, as the kernel's would, and nothing is retried or started.
pub fn out_of_resources(e: Errno) -> bool {
    [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM].contains(&e.0)
}

impl Conn {
    fn open(addr: &UnixAddr) -> Result<Conn, Errno> {
        let fd = sys::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)?;
        // Bounds the connect (a daemon that stopped accepting fills its backlog) and every
        // later send and receive.
        sys::set_io_timeout(fd.raw(), ROUND_TRIP_MS)?;
        sys::retry(|| sys::connect_unix(fd.raw(), addr)).map_err(|e| {
            if e.is_again() {
                Errno(libc::ETIMEDOUT)
            } else {
                e
            }
        })?;
        let (_, uid, _) = sys::peer_cred(fd.raw())?;
        if uid != 0 && uid != sys::geteuid() {
            crate::debug!("control socket served by uid {uid}: not ours, not used");
            return Err(Errno(libc::EPERM));
        }
        let fd = match fd.dup_cloexec(HIGH_FD) {
            Ok(high) => high,
            Err(_) => fd,
        };
        let ident = sys::fstat_id(fd.raw())?;
        Ok(Conn {
            node: 0,
            fd,
            ident,
            peer_uid: uid,
            seq: std::cell::Cell::new(0),
        })
    }

    /// Still the socket we opened?
    fn is_ours(&self) -> bool {
        sys::fstat_id(self.fd.raw()) == Ok(self.ident)
    }

    /// Send a request that gets no reply (`ctl::FLAG_NO_REPLY`), with `fds` attached.
    fn post(&self, req: &Request, fds: &[RawFd]) -> Result<(), Errno> {
        self.send(&req.encode_no_reply(), fds)
    }

    /// One control message, with `fds` attached.
    fn send(&self, msg: &[u8], fds: &[RawFd]) -> Result<(), Errno> {
        sys::retry(|| sys::sendmsg(self.fd.raw(), &[IoSlice::new(msg)], fds, libc::MSG_NOSIGNAL))
            .map(drop)
    }

    /// One round trip. The reply must echo the request's sequence number; others (left over
    /// from a call that gave up) are dropped. A reply whose descriptors did not fit our table
    /// (`MSG_CTRUNC`: the kernel closed them) is `EMFILE`, and the connection stays in step.
    fn call(&self, req: &Request, fds: &[RawFd]) -> Result<(Reply, Vec<Fd>), Errno> {
        let seq = self.seq.get() % ctl::MAX_SEQ + 1;
        self.seq.set(seq);
        self.send(&req.encode_seq(seq), fds)?;
        let mut buf = [0u8; ctl::MAX_MSG];
        for _ in 0..MAX_STALE {
            let got =
                sys::retry(|| sys::recvmsg(self.fd.raw(), &mut [IoSliceMut::new(&mut buf)], 0))?;
            if got.len == 0 {
                return Err(Errno(libc::ECONNRESET));
            }
            let (rseq, rep) = Reply::decode_seq(&buf[..got.len])?;
            // 0: a daemon that does not echo them (started before they existed).
            if rseq != seq && rseq != 0 {
                crate::debug!("stale control reply {rseq} (waiting for {seq}): dropped");
                continue;
            }
            if got.flags & libc::MSG_CTRUNC != 0 {
                return Err(Errno(libc::EMFILE));
            }
            return Ok((rep, got.fds));
        }
        Err(Errno::EPROTO)
    }
}

/// Give up a connection: close it only if the fd is still ours.
fn discard(c: Conn) {
    if c.is_ours() {
        drop(c);
    } else {
        let _ = c.fd.into_raw();
    }
}

/// Where new sockets go.
#[derive(Debug)]
pub enum Home {
    /// Neither `IOTH_STACK` nor `IOTH_IP`: everything goes to the kernel.
    Inert,
    /// The configuration is unusable; the reason, printed once.
    Bad(ConfigError),
    /// A running daemon's control socket (`IOTH_STACK`).
    Stack(PathBuf),
    /// A node to join or start.
    Node {
        path: PathBuf,
        cfg: Box<NodeConfig>,
        raw: Box<RawConfig>,
    },
}

static HOME: OnceLock<Home> = OnceLock::new();

/// The home node configuration, read from the environment once per process image.
pub fn home() -> &'static Home {
    HOME.get_or_init(|| {
        let stack = std::env::var_os("IOTH_STACK");
        if let Some(p) = stack.clone().filter(|p| !p.is_empty()) {
            return Home::Stack(PathBuf::from(p));
        }
        let raw = RawConfig::from_env();
        if raw.ip.is_none() {
            // Set but empty (`IOTH_IP=` in a script whose variable did not expand): the
            // program was meant to be a node, and must not talk on the host's network.
            if std::env::var_os("IOTH_IP").is_some() {
                return Home::Bad(ConfigError::empty("IOTH_IP"));
            }
            if stack.is_some() {
                return Home::Bad(ConfigError::empty("IOTH_STACK"));
            }
            return Home::Inert;
        }
        match raw.parse() {
            Ok(cfg) => Home::Node {
                path: names::node_ctl_path(&cfg),
                cfg: Box::new(cfg),
                raw: Box::new(raw),
            },
            Err(e) => Home::Bad(e),
        }
    })
}

struct State {
    pid: u32,
    /// Idle connections.
    pool: Vec<Conn>,
    /// Connections taken out of the pool (fd, identity): a child closes its copies.
    busy: Vec<(RawFd, (u64, u64))>,
    /// Node id of the home node once joined.
    home: Option<u64>,
    /// A node's connect table (`ioth_common::table`), mapped at the first connect.
    table: Option<(u64, Arc<table::Reader>)>,
    /// When a node was last asked for its table in vain.
    table_tried: Option<(u64, Instant)>,
    /// Local ports a node leased us (`Request::Lease`), not used yet.
    lease: Option<(u64, Vec<u16>)>,
}

static STATE: Mutex<State> = Mutex::new(State {
    pid: 0,
    pool: Vec::new(),
    busy: Vec::new(),
    home: None,
    table: None,
    table_tried: None,
    lease: None,
});

fn prepare_fork() {
    // What is held goes first: the child may exec, and lose it.
    crate::held::prepare_fork();
    std::mem::forget(STATE.lock());
}

fn after_fork(child: bool) {
    // SAFETY: prepare_fork locked the mutex in this thread and forgot the guard; in the
    // parent and in the child this thread is the owner.
    unsafe { STATE.force_unlock() };
    crate::held::after_fork(child);
}

/// Whether the control connections can be had now for a send before `exec`
/// (`held::before_exec`): not while this thread holds them (a signal handler's `exec`) or
/// another keeps them longer than briefly.
pub fn lock_free_for_exec() -> bool {
    STATE
        .try_lock_for(std::time::Duration::from_millis(50))
        .is_some()
}

extern "C" fn atfork_prepare() {
    prepare_fork();
}
extern "C" fn atfork_parent() {
    after_fork(false);
}
extern "C" fn atfork_child() {
    after_fork(true);
}

/// Install the fork and exit handlers (from the library constructor).
pub fn install_atfork() {
    // SAFETY: the handlers are plain functions valid for the life of the process.
    unsafe {
        libc::pthread_atfork(
            Some(atfork_prepare),
            Some(atfork_parent),
            Some(atfork_child),
        );
    }
    crate::held::install_at_exit();
}

impl State {
    /// Drop everything inherited from a parent process.
    fn check_pid(&mut self) {
        let pid = sys::getpid();
        if self.pid != pid {
            for c in self.pool.drain(..) {
                discard(c);
            }
            for (fd, ident) in self.busy.drain(..) {
                if sys::fstat_id(fd) == Ok(ident) {
                    sys::close(fd);
                }
            }
            // The home node stays: a child is a process of the same node, and so does the
            // table (the mapping is the child's too). The leased ports are the parent's.
            self.lease = None;
            self.pid = pid;
        }
    }

    /// An idle connection to `node` that is still ours, taken out of the pool.
    fn take(&mut self, node: u64) -> Option<Conn> {
        while let Some(i) = self.pool.iter().position(|c| c.node == node) {
            let c = self.pool.swap_remove(i);
            if c.is_ours() {
                self.busy.push((c.fd.raw(), c.ident));
                return Some(c);
            }
            let _ = c.fd.into_raw();
        }
        None
    }

    fn mark_busy(&mut self, c: &Conn) {
        self.busy.push((c.fd.raw(), c.ident));
    }

    fn unmark(&mut self, c: &Conn) {
        if let Some(i) = self.busy.iter().position(|b| b.0 == c.fd.raw()) {
            self.busy.swap_remove(i);
        }
    }
}

/// A connection to `node` for one call: from the pool, else a new one (opened without the
/// lock).
fn checkout(node: u64) -> Result<Conn, Errno> {
    {
        let mut st = STATE.lock();
        st.check_pid();
        if let Some(c) = st.take(node) {
            return Ok(c);
        }
    }
    let c = open_node(node)?;
    let mut st = STATE.lock();
    st.check_pid();
    st.mark_busy(&c);
    Ok(c)
}

/// A new connection to `node` by its abstract name, admitted (see [`admit`]).
fn open_node(node: u64) -> Result<Conn, Errno> {
    let mut c = Conn::open(&names::node_ctl_name(node))?;
    c.node = node;
    admit(&c, Some(node))?;
    Ok(c)
}

/// A daemon admits its own user and root. A process of the node that runs as another user
/// now (a worker after `setuid`) proves it belongs by handing over a socket of the node it
/// holds (`Request::Join`). Without one the connection is used as it is (the daemon may
/// admit our uid with `--allow-uid`).
/// Before anything else on the connection: `node` if known (else any node's socket will do;
/// the daemon checks it is one of its own).
fn admit(c: &Conn, node: Option<u64>) -> Result<(), Errno> {
    let me = sys::geteuid();
    if me == 0 || c.peer_uid == me {
        return Ok(());
    }
    let Some((fd, id)) = proof(node) else {
        return Ok(());
    };
    match c.call(&Request::Join { id }, &[fd])?.0 {
        Reply::Ok => Ok(()),
        Reply::Err(e) => Err(e),
        _ => Err(Errno::EPROTO),
    }
}

/// An fd of ours that is the application end of a socket of `node` (any node: `None`;
/// named by `names::socket_name`), and that socket's id.
fn proof(node: Option<u64>) -> Option<(RawFd, u64)> {
    // Best first: a kernel listener (always known to its daemon, which checks its inode);
    // then a connected socket (known since its connect); then any other socket of the node
    // (registered one-way: known once its `Register` is read; not one still held).
    // An accepted connection carries its listener's name and is no proof of it.
    let max = sys::fd_limit().clamp(64, 8192);
    let mut best: Option<(u8, RawFd, u64)> = None;
    for fd in 0..max as RawFd {
        let Some(name) = sys::getsockname_unix(fd).ok().flatten() else {
            continue;
        };
        let rank = if let Some((n, id)) = names::parse_listener_name(&name) {
            if sys::getpeername_unix(fd).is_ok() {
                continue;
            }
            (n, id, 0)
        } else if let Some((n, id)) = names::parse_socket_name(&name) {
            if crate::held::is_held(fd) {
                continue;
            }
            let connected = sys::getpeername_unix(fd).is_ok_and(|p| p.is_some());
            (n, id, if connected { 1 } else { 2 })
        } else {
            continue;
        };
        let (n, id, r) = rank;
        if node.is_some_and(|want| want != n) || best.is_some_and(|b| b.0 <= r) {
            continue;
        }
        best = Some((r, fd, id));
        if r == 0 {
            break;
        }
    }
    best.map(|(_, fd, id)| (fd, id))
}

/// Give a connection back after a call (`ok`), or close it (it failed: the daemon may be
/// gone, or it broke the protocol).
fn checkin(c: Conn, ok: bool) {
    let mut st = STATE.lock();
    if st.pid != sys::getpid() {
        // Forked during the call: this is the parent's connection (the child's copy was
        // closed by its check_pid); it is still ours only in the parent, so forget it here.
        let _ = c.fd.into_raw();
        return;
    }
    st.unmark(&c);
    if ok {
        st.pool.push(c);
    } else {
        if Some(c.node) == st.home {
            st.home = None;
        }
        // The daemon may be gone: a new one has a table and leases of its own.
        if st.table.as_ref().is_some_and(|t| t.0 == c.node) {
            st.table = None;
        }
        if st.lease.as_ref().is_some_and(|l| l.0 == c.node) {
            st.lease = None;
        }
        drop(st);
        discard(c);
    }
}

/// A connection to the home node, starting the node if needed.
fn checkout_home() -> Result<Conn, Errno> {
    let known = {
        let mut st = STATE.lock();
        st.check_pid();
        if let Some(n) = st.home
            && let Some(c) = st.take(n)
        {
            return Ok(c);
        }
        st.home
    };
    // A known node (joined before, or by the parent before a fork): by its abstract name,
    // which a process that changed its uid can still reach.
    let c = match known.map(open_node) {
        Some(Ok(c)) => c,
        _ => join_home()?,
    };
    let mut st = STATE.lock();
    st.check_pid();
    st.home = Some(c.node);
    st.mark_busy(&c);
    Ok(c)
}

fn hello(c: &mut Conn) -> Result<(), Errno> {
    match c.call(&Request::Hello { pid: sys::getpid() }, &[])?.0 {
        Reply::Created(node) => {
            c.node = node;
            Ok(())
        }
        Reply::Err(e) => Err(e),
        _ => Err(Errno::EPROTO),
    }
}

fn unusable(msg: &str) -> Errno {
    crate::log::error_once(msg);
    Errno(libc::ENETDOWN)
}

/// Connect to the home node, starting its daemon if nobody answers.
fn join_home() -> Result<Conn, Errno> {
    match home() {
        Home::Inert => Err(Errno(libc::EAFNOSUPPORT)),
        Home::Bad(e) => Err(unusable(&e.to_string())),
        Home::Stack(p) => {
            let mut c = Conn::open(&UnixAddr::path(p)).map_err(|e| {
                if out_of_resources(e) {
                    return e;
                }
                unusable(&format!(
                    "cannot reach the node at IOTH_STACK={}: {e}",
                    p.display()
                ))
            })?;
            admit(&c, None)
                .and_then(|()| hello(&mut c))
                .map_err(|e| unusable(&format!("node at {}: {e}", p.display())))?;
            Ok(c)
        }
        Home::Node { path, cfg, raw } => {
            if let Some(dir) = path.parent()
                && let Err(e) = names::ensure_private_dir(dir)
            {
                return Err(unusable(&e.to_string()));
            }
            let addr = UnixAddr::path(path);
            let refused = |e: Errno| -> Option<Errno> {
                if out_of_resources(e) {
                    // Out of descriptors here: the kernel's answer, and no new daemon.
                    return Some(e);
                }
                let why = match e.0 {
                    libc::EPERM => "is served by another user's daemon: not used",
                    libc::ETIMEDOUT | libc::EAGAIN => "does not answer in time",
                    _ => return None,
                };
                Some(unusable(&format!(
                    "the node's stack daemon at {} {why}",
                    path.display()
                )))
            };
            let join = || {
                Conn::open(&addr).and_then(|mut c| {
                    admit(&c, None)?;
                    hello(&mut c)?;
                    Ok(c)
                })
            };
            match join() {
                Ok(c) => return Ok(c),
                // A daemon that is there but hung, or not ours: starting one would not help.
                Err(e) => {
                    if let Some(e) = refused(e) {
                        return Err(e);
                    }
                }
            }
            crate::debug!("starting a stack daemon for {}", path.display());
            if let Err(e) = start_node(path, cfg, raw) {
                return Err(unusable(&format!("cannot start the node: {e}")));
            }
            // The daemon is ready (or another process won the race and is finishing).
            let mut last = Errno::ENOENT;
            for _ in 0..200 {
                match join() {
                    Ok(c) => return Ok(c),
                    Err(e) => {
                        if let Some(e) = refused(e) {
                            return Err(e);
                        }
                        last = e;
                    }
                }
                spawn::sleep_ms(10);
            }
            Err(unusable(&format!(
                "the node's stack daemon does not answer at {}: {last}",
                path.display()
            )))
        }
    }
}

fn start_node(path: &std::path::Path, _cfg: &NodeConfig, raw: &RawConfig) -> Result<(), String> {
    let bin = spawn::stackd_binary()?;
    let mut args: Vec<OsString> = vec!["--daemon".into()];
    let mut opt = |flag: &str, v: &Option<String>| {
        if let Some(v) = v {
            args.push(flag.into());
            args.push(v.into());
        }
    };
    opt("--ip", &raw.ip);
    opt("--gw", &raw.gw);
    opt("--mac", &raw.mac);
    opt("--mtu", &raw.mtu);
    opt("--switch", &raw.switch);
    args.push("--ctl".into());
    args.push(path.as_os_str().to_owned());
    spawn::run_starter(&bin, &args)
}

/// Is the shim active in this process (new INET sockets become virtual)?
pub fn active() -> bool {
    !matches!(home(), Home::Inert)
}

/// Transport failures (daemon gone) become `ENETDOWN` for the application; running out of
/// descriptors or memory is the kernel's errno (`EMFILE`...), as for a kernel socket.
fn transport(e: Errno) -> Errno {
    crate::debug!("control connection failed: {e}");
    if out_of_resources(e) {
        return e;
    }
    Errno(libc::ENETDOWN)
}

/// One round trip on a connection from `get`, with one retry on a fresh connection if the
/// first one broke (the daemon may have exited and been restarted); none after a broken
/// reply (`EPROTO`) or no answer within the bound. (A request about a socket sends what is
/// held first, `crate::held::flush`.)
fn round_trip(
    get: impl Fn() -> Result<Conn, Errno>,
    req: &Request,
    fds: &[RawFd],
) -> Result<(Reply, Vec<Fd>), Errno> {
    let c = get()?;
    match c.call(req, fds) {
        Ok(r) => {
            checkin(c, true);
            Ok(r)
        }
        // The reply came, its fds did not fit: the connection is in step.
        Err(e) if e.0 == libc::EMFILE => {
            checkin(c, true);
            Err(e)
        }
        Err(e) => {
            checkin(c, false);
            if e == Errno::EPROTO || out_of_resources(e) {
                return Err(e);
            }
            if e.is_again() {
                return Err(transport(e));
            }
            let c = get()?;
            let r = c.call(req, fds);
            checkin(c, r.is_ok());
            r.map_err(transport)
        }
    }
}

/// Send a request to the home node (new sockets).
pub fn call_home(req: &Request, fd: Option<RawFd>) -> Result<(Reply, Vec<Fd>), Errno> {
    let fds: Vec<RawFd> = fd.into_iter().collect();
    crate::held::flush();
    round_trip(checkout_home, req, &fds)
}

/// A new TCP socket of the home node without a round trip: a kernel stream socket named with
/// an id of our own (`ctl::CLIENT_ID_BIT`), whose one-way `Register` is held
/// ([`crate::held`]): told when the process next asks its daemon anything, since nothing
/// about the socket can be asked before, and it may be closed by then. `flags`: the app's
/// `SOCK_NONBLOCK`/`SOCK_CLOEXEC`, which the socket gets. The socket and its id.
///
/// The socket has no daemon end yet: it gets one through the door when it connects or
/// listens (`emu::attach`). It needs no buffer sizes: the daemon sets our send buffer on each
/// connect (first to nothing, for the filler, then to the socket's `SO_SNDBUF`), a listener's
/// end never sends, and a stream socket's receive buffer limits nothing.
pub fn register_home(domain: i32, ty: i32, protocol: i32, flags: i32) -> Result<(Fd, u64), Errno> {
    let node = home_node()?;
    let app = sys::socket(
        libc::AF_UNIX,
        libc::SOCK_STREAM | (flags & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)),
        0,
    )?;
    // A taken name (a random id that met another) means: another id.
    let mut id = 0;
    for _ in 0..64 {
        let cand = ctl::client_id(sys::random_u64());
        match sys::bind_unix(app.raw(), &names::socket_name(node, cand)) {
            Ok(()) => {
                id = cand;
                break;
            }
            Err(e) if e == Errno::EADDRINUSE => {}
            Err(e) => return Err(e),
        }
    }
    if id == 0 {
        return Err(Errno(libc::ENFILE));
    }
    // Never connected nor listening (`emu::connect`, `emu::listen`).
    let _ = sys::setsockopt_int(
        app.raw(),
        libc::SOL_SOCKET,
        libc::SO_PRIORITY,
        ctl::FRESH_PRIORITY,
    );
    let (_, ino) = sys::fstat_id(app.raw())?;
    let req = Request::Register {
        id,
        domain,
        ty,
        protocol,
    };
    crate::held::register_later(node, app.raw(), ino, id, req);
    Ok((app, id))
}

/// The home node: known (no connection needed), or joined now (starting it if needed).
fn home_node() -> Result<u64, Errno> {
    if let Some(n) = STATE.lock().home {
        return Ok(n);
    }
    let c = checkout_home()?;
    let node = c.node;
    checkin(c, true);
    Ok(node)
}

/// `node`'s connect table, mapped (asked for once; after a failure, again a second later).
pub fn table(node: u64) -> Option<Arc<table::Reader>> {
    {
        let mut st = STATE.lock();
        st.check_pid();
        if let Some((n, t)) = &st.table
            && *n == node
        {
            return Some(t.clone());
        }
        if st
            .table_tried
            .is_some_and(|(n, at)| n == node && at.elapsed() < Duration::from_secs(1))
        {
            return None;
        }
        st.table_tried = Some((node, Instant::now()));
    }
    let (r, fds) = call(node, &Request::Table, None).ok()?;
    if r != Reply::Ok {
        return None;
    }
    let t = Arc::new(table::Reader::open(fds.first()?).ok()?);
    let mut st = STATE.lock();
    st.check_pid();
    st.table = Some((node, t.clone()));
    st.table_tried = None;
    Some(t)
}

/// A local port of `node`'s for a connect made here (`Request::Lease`, 32 at a time; ours
/// while the control connection that asked is open: one closed for a failure drops them).
pub fn lease_port(node: u64) -> Option<u16> {
    {
        let mut st = STATE.lock();
        st.check_pid();
        if let Some((n, ports)) = st.lease.as_mut()
            && *n == node
            && let Some(p) = ports.pop()
        {
            return Some(p);
        }
    }
    // (About no socket: what is held may stay so.)
    let lease = round_trip(
        || checkout(node).map_err(transport),
        &Request::Lease { count: 32 },
        &[],
    );
    let Reply::Bytes(b) = lease.ok()?.0 else {
        return None;
    };
    let mut ports: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .rev()
        .collect();
    let p = ports.pop()?;
    let mut st = STATE.lock();
    st.check_pid();
    st.lease = Some((node, ports));
    Some(p)
}

/// Send a request about a socket of `node`.
pub fn call(node: u64, req: &Request, fd: Option<RawFd>) -> Result<(Reply, Vec<Fd>), Errno> {
    let fds: Vec<RawFd> = fd.into_iter().collect();
    call_fds(node, req, &fds)
}

/// Send a request about a socket of `node` that gets no reply (it cannot fail).
pub fn post(node: u64, req: &Request) -> Result<(), Errno> {
    post_fds(node, req, &[])
}

/// Send a one-way request about a socket of `node` with fds attached.
pub fn post_fds(node: u64, req: &Request, fds: &[RawFd]) -> Result<(), Errno> {
    crate::held::flush();
    send_fds(node, req, fds)
}

/// Two one-way requests about sockets of `node`, in this order, on one connection; `fds` go
/// with the second. One `sendmmsg` when there is room for both.
pub fn post_two(node: u64, first: &Request, second: &Request, fds: &[RawFd]) -> Result<(), Errno> {
    crate::held::flush();
    let (a, b) = (first.encode_no_reply(), second.encode_no_reply());
    let c = checkout(node).map_err(transport)?;
    match sys::retry(|| sys::sendmsg2(c.fd.raw(), [(&a, &[]), (&b, fds)], libc::MSG_NOSIGNAL)) {
        Ok(1) => {
            let r = c.send(&b, fds);
            checkin(c, r.is_ok());
            r.map_err(transport)
        }
        Ok(_) => {
            checkin(c, true);
            Ok(())
        }
        Err(_) => {
            checkin(c, false);
            send_fds(node, first, &[]).and_then(|()| send_fds(node, second, fds))
        }
    }
}

/// [`post_fds`] without sending what is held first (`crate::held` sends it with this).
pub fn send_fds(node: u64, req: &Request, fds: &[RawFd]) -> Result<(), Errno> {
    let c = checkout(node).map_err(transport)?;
    if c.post(req, fds).is_ok() {
        checkin(c, true);
        return Ok(());
    }
    checkin(c, false);
    let c = checkout(node).map_err(transport)?;
    let r = c.post(req, fds);
    checkin(c, r.is_ok());
    r.map_err(transport)
}

/// Send a request about a socket of `node`, with any number of fds attached.
pub fn call_fds(node: u64, req: &Request, fds: &[RawFd]) -> Result<(Reply, Vec<Fd>), Errno> {
    crate::held::flush();
    round_trip(|| checkout(node).map_err(transport), req, fds)
}
