//! Control connections to stack daemons, one per (process, node), and the process's home node.
//!
//! * A virtual socket names its node in its own fd name, so calls on an existing socket go to
//!   the abstract control name of that node (`ioth/<node>/ctl`), whichever process holds it.
//! * New sockets go to the *home* node: `IOTH_STACK` (a control socket path), else the node
//!   described by `IOTH_IP` & co., whose daemon is started on first use when nobody answers at
//!   its path. Without either variable the shim is inert.
//! * Connections are cached under one mutex. Every use checks the pid (after a `fork` the
//!   child drops the inherited connections: sharing one SEQPACKET stream with the parent would
//!   mix replies) and that the cached fd is still the socket we opened (`fstat` device and
//!   inode: programs close or `dup2` over descriptors they do not know). An fd that is no
//!   longer ours is forgotten, never closed. `pthread_atfork` handlers hold the mutex across
//!   `fork` so a child never inherits it locked.
//! * Control fds are close-on-exec and moved to a high number, out of the way of `dup2`.

use crate::spawn;
use ioth_common::config::{ConfigError, NodeConfig, RawConfig};
use ioth_common::ctl::{self, Reply, Request};
use ioth_common::names;
use ioth_common::sys::{self, Errno, Fd, UnixAddr};
use parking_lot::Mutex;
use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Lowest fd number used for control connections (when the fd limit allows it).
const HIGH_FD: i32 = 900;

/// One control connection.
struct Conn {
    node: u64,
    fd: Fd,
    ident: (u64, u64),
}

impl Conn {
    fn open(addr: &UnixAddr) -> Result<Conn, Errno> {
        let fd = sys::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)?;
        sys::retry(|| sys::connect_unix(fd.raw(), addr))?;
        let fd = match fd.dup_cloexec(HIGH_FD) {
            Ok(high) => high,
            Err(_) => fd,
        };
        let ident = sys::fstat_id(fd.raw())?;
        Ok(Conn { node: 0, fd, ident })
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

    fn call(&self, req: &Request, fds: &[RawFd]) -> Result<(Reply, Vec<Fd>), Errno> {
        self.send(&req.encode(), fds)?;
        let mut buf = [0u8; ctl::MAX_MSG];
        let got = sys::retry(|| sys::recvmsg(self.fd.raw(), &mut [IoSliceMut::new(&mut buf)], 0))?;
        if got.len == 0 {
            return Err(Errno(libc::ECONNRESET));
        }
        Ok((Reply::decode(&buf[..got.len])?, got.fds))
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
        if let Some(p) = std::env::var_os("IOTH_STACK").filter(|p| !p.is_empty()) {
            return Home::Stack(PathBuf::from(p));
        }
        let raw = RawConfig::from_env();
        if raw.ip.is_none() {
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
    conns: Vec<Conn>,
    /// Node id of the home node once joined.
    home: Option<u64>,
    /// This process's part of the socket ids it picks (`ctl::client_id`): a random salt, new
    /// in every process, and a counter.
    salt: u64,
    counter: u32,
}

static STATE: Mutex<State> = Mutex::new(State {
    pid: 0,
    conns: Vec::new(),
    home: None,
    salt: 0,
    counter: 0,
});

/// Socket buffer sizes of both socketpair ends (as the daemon sets on the pairs it makes).
const SOCKBUF: i32 = 1 << 20;

fn prepare_fork() {
    std::mem::forget(STATE.lock());
}

fn after_fork() {
    // SAFETY: prepare_fork locked the mutex in this thread and forgot the guard; in the
    // parent and in the child this thread is the owner.
    unsafe { STATE.force_unlock() };
}

extern "C" fn atfork_prepare() {
    prepare_fork();
}
extern "C" fn atfork_after() {
    after_fork();
}

/// Install the fork handlers (from the library constructor).
pub fn install_atfork() {
    // SAFETY: the handlers are plain functions valid for the life of the process.
    unsafe {
        libc::pthread_atfork(Some(atfork_prepare), Some(atfork_after), Some(atfork_after));
    }
}

impl State {
    /// Drop everything inherited from a parent process.
    fn check_pid(&mut self) {
        let pid = sys::getpid();
        if self.pid != pid {
            for c in self.conns.drain(..) {
                discard(c);
            }
            self.home = None;
            self.pid = pid;
            self.salt = sys::random_u64();
            self.counter = 0;
        }
    }

    /// Index of a usable connection to `node`, connecting if needed.
    fn conn_for(&mut self, node: u64) -> Result<usize, Errno> {
        if let Some(i) = self.conns.iter().position(|c| c.node == node) {
            if self.conns[i].is_ours() {
                return Ok(i);
            }
            let c = self.conns.swap_remove(i);
            let _ = c.fd.into_raw();
        }
        let mut c = Conn::open(&names::node_ctl_name(node))?;
        c.node = node;
        self.conns.push(c);
        Ok(self.conns.len() - 1)
    }

    fn drop_conn(&mut self, i: usize) {
        let c = self.conns.swap_remove(i);
        if Some(c.node) == self.home {
            self.home = None;
        }
        discard(c);
    }

    /// Index of the home node's connection, starting the node if needed.
    fn home_conn(&mut self) -> Result<usize, Errno> {
        if let Some(n) = self.home
            && let Some(i) = self.conns.iter().position(|c| c.node == n)
        {
            if self.conns[i].is_ours() {
                return Ok(i);
            }
            let c = self.conns.swap_remove(i);
            let _ = c.fd.into_raw();
        }
        self.home = None;
        let mut c = join_home()?;
        let node = c.node;
        // An older connection to the same node (by its abstract name) is replaced.
        if let Some(i) = self.conns.iter().position(|o| o.node == node) {
            self.drop_conn(i);
        }
        c.node = node;
        self.conns.push(c);
        self.home = Some(node);
        Ok(self.conns.len() - 1)
    }
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
                unusable(&format!(
                    "cannot reach the node at IOTH_STACK={}: {e}",
                    p.display()
                ))
            })?;
            hello(&mut c).map_err(|e| unusable(&format!("node at {}: {e}", p.display())))?;
            Ok(c)
        }
        Home::Node { path, cfg, raw } => {
            let addr = UnixAddr::path(path);
            if let Ok(mut c) = Conn::open(&addr)
                && hello(&mut c).is_ok()
            {
                return Ok(c);
            }
            crate::debug!("starting a stack daemon for {}", path.display());
            if let Err(e) = start_node(path, cfg, raw) {
                return Err(unusable(&format!("cannot start the node: {e}")));
            }
            // The daemon is ready (or another process won the race and is finishing).
            let mut last = Errno::ENOENT;
            for _ in 0..200 {
                match Conn::open(&addr) {
                    Ok(mut c) => match hello(&mut c) {
                        Ok(()) => return Ok(c),
                        Err(e) => last = e,
                    },
                    Err(e) => last = e,
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

/// Transport failures (daemon gone) become `ENETDOWN` for the application.
fn transport(e: Errno) -> Errno {
    crate::debug!("control connection failed: {e}");
    Errno(libc::ENETDOWN)
}

/// Send a request to the home node (new sockets). One retry on a fresh connection if the
/// cached one broke (the daemon may have exited and been restarted).
pub fn call_home(req: &Request, fd: Option<RawFd>) -> Result<(Reply, Vec<Fd>), Errno> {
    let mut st = STATE.lock();
    st.check_pid();
    let i = st.home_conn()?;
    let fds: Vec<RawFd> = fd.into_iter().collect();
    match st.conns[i].call(req, &fds) {
        Ok(r) => Ok(r),
        Err(e) if e == Errno::EPROTO => Err(e),
        Err(_) => {
            st.drop_conn(i);
            let i = st.home_conn()?;
            st.conns[i].call(req, &fds).map_err(transport)
        }
    }
}

/// A new socket of the home node without a round trip: make the socketpair here, name our
/// end with an id of our own, and hand the daemon its end in a one-way `Register`
/// (`ctl::CLIENT_ID_BIT`). `pair_type`: `SOCK_STREAM` (TCP) or `SOCK_SEQPACKET` (datagrams).
pub fn register_home(domain: i32, ty: i32, protocol: i32, pair_type: i32) -> Result<Fd, Errno> {
    let mut st = STATE.lock();
    st.check_pid();
    let mut last = Errno(libc::ENETDOWN);
    for _ in 0..2 {
        let i = st.home_conn()?;
        let node = st.conns[i].node;
        // Non-blocking: the daemon needs its end so (and only checks); `emu::socket` sets ours
        // as the app asked.
        let (app, dmn) = sys::socketpair(
            libc::AF_UNIX,
            pair_type | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )?;
        // A taken name (a socket of a process that had our salt) means: next id.
        let mut id = 0;
        for _ in 0..64 {
            st.counter = st.counter.wrapping_add(1);
            let cand = ctl::client_id(st.salt, st.counter);
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
        for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
            let _ = sys::setsockopt_int(app.raw(), libc::SOL_SOCKET, opt, SOCKBUF);
        }
        if pair_type == libc::SOCK_STREAM {
            // Never connected nor listening (ctl: `ConnectAsync`).
            let _ = sys::setsockopt_int(
                app.raw(),
                libc::SOL_SOCKET,
                libc::SO_PRIORITY,
                ctl::FRESH_PRIORITY,
            );
        }
        let req = Request::Register {
            id,
            domain,
            ty,
            protocol,
        };
        match st.conns[i].post(&req, &[dmn.raw()]) {
            Ok(()) => return Ok(app),
            Err(e) => {
                last = e;
                st.drop_conn(i);
            }
        }
    }
    Err(transport(last))
}

/// Send a request about a socket of `node`.
pub fn call(node: u64, req: &Request, fd: Option<RawFd>) -> Result<(Reply, Vec<Fd>), Errno> {
    let fds: Vec<RawFd> = fd.into_iter().collect();
    call_fds(node, req, &fds)
}

/// Send a request about a socket of `node` that gets no reply (it cannot fail).
pub fn post(node: u64, req: &Request) -> Result<(), Errno> {
    let mut st = STATE.lock();
    st.check_pid();
    let i = st.conn_for(node).map_err(transport)?;
    if st.conns[i].post(req, &[]).is_ok() {
        return Ok(());
    }
    st.drop_conn(i);
    let i = st.conn_for(node).map_err(transport)?;
    st.conns[i].post(req, &[]).map_err(transport)
}

/// Send a one-way request about a socket of `node` with fds attached.
pub fn post_fds(node: u64, req: &Request, fds: &[RawFd]) -> Result<(), Errno> {
    let mut st = STATE.lock();
    st.check_pid();
    let i = st.conn_for(node).map_err(transport)?;
    if st.conns[i].post(req, fds).is_ok() {
        return Ok(());
    }
    st.drop_conn(i);
    let i = st.conn_for(node).map_err(transport)?;
    st.conns[i].post(req, fds).map_err(transport)
}

/// Send a request about a socket of `node`, with any number of fds attached.
pub fn call_fds(node: u64, req: &Request, fds: &[RawFd]) -> Result<(Reply, Vec<Fd>), Errno> {
    let mut st = STATE.lock();
    st.check_pid();
    let i = st.conn_for(node).map_err(transport)?;
    match st.conns[i].call(req, fds) {
        Ok(r) => Ok(r),
        Err(e) if e == Errno::EPROTO => Err(e),
        Err(_) => {
            st.drop_conn(i);
            let i = st.conn_for(node).map_err(transport)?;
            st.conns[i].call(req, fds).map_err(transport)
        }
    }
}
