//! The switch's I/O layer: the switch directory, its listeners, the ports' sockets and one
//! epoll loop driving [`crate::core::Core`].
//!
//! Directory layout (`DIR`):
//! * `DIR/ctl`: classic VDE v3 control listener (`SOCK_STREAM`). Per client: one read of at
//!   most 256 bytes, [`VdeRequest::parse`], a new non-blocking `SOCK_DGRAM` socket connected
//!   to the client's and bound to `DIR/NNN.FD`, the 110-byte `sockaddr_un` as the reply.
//!   EOF on the control connection removes the port and unlinks its data socket.
//!
//!   The client names its datagram socket, and the switch connects to it with the switch's
//!   own rights: unchecked, a client could make the switch write frames into a socket it
//!   could not open itself (a confused deputy). So the named socket must belong to the client:
//!   [`connect_client`] opens the path (`O_PATH`), requires a socket whose owner is the uid of
//!   the control connection's peer (`SO_PEERCRED`), unless that peer is root, and connects to
//!   that very inode through `/proc/self/fd/N`, so the name cannot be swapped between check
//!   and connect. vde2's and vdeplug4's libvdeplug (`vde_plug`, QEMU) bind their socket
//!   themselves, so it is theirs. An abstract name has no owner to check (it is no file): it
//!   is accepted only from root or the switch's own user. Unnamed sockets cannot be named at
//!   all ([`VdeRequest::parse`] refuses them). A refused client's control connection is closed
//!   without a reply, as vde_switch refuses.
//! * `DIR/native`: ioth's native ports (`SOCK_SEQPACKET`): [`NativeHello`] in,
//!   [`NativeWelcome`] out, then one frame per message; EOF removes the port. A native client
//!   may ask for checksum filling ([`vde::NATIVE_FLAG_CSUM_FILL`]): its frames then carry no
//!   IPv4/TCP/UDP checksums, and the switch fills them in ([`ioth_common::csum::fill`], once
//!   per frame) before the frame goes to the pcap file or out of a port that did not ask for
//!   the flag (VDE ports, older native clients). Frames from VDE ports are forwarded as they
//!   are: the switch does not verify checksums, and stacks on flagged ports do not either
//!   (unix sockets do not corrupt data; a VDE peer's bad checksum reaches an ioth stack
//!   unnoticed).
//!
//!   Rings: a native client that asks for them ([`vde::NATIVE_FLAG_RINGS`], granted unless
//!   `--no-rings`) sends its half of a pair of shared-memory rings on its port
//!   ([`ioth_common::ring`]: the ring it fills, the page where it acknowledges ours); the
//!   switch checks and maps it, answers with its own half, and from then on takes the port's
//!   frames from the client's ring and delivers the port's frames into its own, with
//!   one-byte doorbells on the socket when the other side said it sleeps. A 64 KiB frame then
//!   costs a copy in user space instead of two kernel copies, a socket buffer and a system
//!   call on each side. A full ring queues frames as a full socket does (until the client's
//!   doorbell says it freed room); a ring that breaks the protocol (a malformed record, a
//!   `head` out of bounds) removes the port; a client's half that is not a sealed memfd of
//!   the right size is refused (the client goes on with its socket). Frames sent on the
//!   socket are still taken. At most [`BATCH`] frames are taken from a ring per turn; a ring
//!   with more is visited again before the loop sleeps.
//! * `DIR/mgmt`: the text console ([`crate::mgmt`]). Its socket has a mode (and group) of its
//!   own, 0600 by default whatever the ports' mode: a LAN opened to everyone (`--mode 0666`)
//!   must not let everyone stop the switch or change its VLANs.
//!
//! Shortcuts: native clients that ask for them ([`vde::NATIVE_FLAG_SHORTCUT`]; never with
//! `--pcap`, `--hub` or `--no-shortcuts`) get, once the core proposes one
//! ([`Core::shortcut_candidate`]: known unicast between two such ports), one end each of a
//! fresh `SOCK_SEQPACKET` socketpair ([`vde::ShortcutOffer`], `SCM_RIGHTS`), sent on their
//! ports just before the frame that prompted it, and only when neither port has frames queued.
//! The two stacks then exchange their unicast frames directly: no switch wakeup, two copies
//! less per frame. The switch keeps its own copies of both ends; to revoke a shortcut (MAC
//! moved, port gone, VLAN change, shutdown) it calls `shutdown(SHUT_RDWR)` on them, which both
//! clients see as EOF/`EPIPE` whatever they are doing, and they fall back to the switch.
//!
//! Uplink offers: a native client that asks ([`vde::NATIVE_FLAG_UPLINK`]) and is in our
//! network namespace may get, when it sends a unicast frame to a MAC a VXLAN uplink knows the
//! endpoint of ([`Core::uplink_candidate`]), one end of a socketpair carrying the route
//! ([`vde::UplinkOffer`], [`vde::UplinkRoute`]): it then sends those frames to the endpoint
//! itself. Recorded in the core as a shortcut with the uplink port, so it ends like one, and
//! also when the uplink's endpoint for the MAC changes or is forgotten (`Uplink::moved`) and
//! when the uplink closes or opens again.
//!
//! Every port has a bounded output queue (bytes): frames go to the kernel directly while it
//! takes them, are queued on `EAGAIN` and flushed on `EPOLLOUT`; a full queue drops and counts.
//! A port whose peer never reads therefore only loses its own frames. Each wakeup reads at
//! most [`BATCH`] frames from a port (level-triggered epoll brings the rest back), so a busy
//! port cannot starve the others.
//!
//! Clients that connect and never speak are closed after [`HANDSHAKE_TIMEOUT`]; nothing a
//! client sends can block or stop the loop.

use crate::child::{Event, Supervised};
use crate::core::{self, Core, Egress, Port, PortId, PortKind};
use crate::mgmt::{self, Action, Line, LineBuf};
use crate::pcap::{self, PcapWriter};
use crate::status;
use crate::uplink::{self, Sent, Uplink, UplinkUrl};
use ioth_common::csum;
use ioth_common::offload::Coalescer;
use ioth_common::ring::{self, Half, RxRing, TxRing};
use ioth_common::sys::{self, Errno, Fd, UnixAddr};
use ioth_common::vde::{self, NativeHello, NativeWelcome, VdeRequest};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Frames read from one port per wakeup.
pub const BATCH: usize = 64;
/// Socket buffers asked for on data sockets.
pub const SOCKBUF: i32 = 4 << 20;
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const TICK_MS: i32 = 200;
const MAX_MGMT_CONNS: usize = 32;
const MAX_MGMT_OUT: usize = 1 << 20;
const MAX_PENDING: usize = 256;

/// How the switch was asked to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub dir: PathBuf,
    /// Mode of the port sockets (`ctl`, `native`, the VDE data sockets).
    pub mode: u32,
    /// Mode of the console socket (`mgmt`), independent of `mode`: whoever can open the
    /// console can stop the switch and rewire its VLANs.
    pub mgmt_mode: u32,
    /// Group of the console socket (none: whatever the directory gives it).
    pub mgmt_group: Option<u32>,
    /// Mode of the directory (applied when created, or always when given explicitly).
    pub dirmode: u32,
    pub dirmode_explicit: bool,
    pub group: Option<u32>,
    pub pcap: Option<PathBuf>,
    pub numports: u32,
    pub hub: bool,
    pub queue: usize,
    /// Offer shortcuts between native ports that take them (see the module documentation).
    pub shortcuts: bool,
    /// Take shared-memory rings on native ports that ask for them (see the module
    /// documentation).
    pub rings: bool,
    /// Offer native ports that take them uplink shortcuts: the frames for a MAC learned
    /// behind a VXLAN uplink go from the stack daemon straight to the tunnel endpoint (see
    /// the module documentation).
    pub uplink_shortcuts: bool,
    /// Let the stacks at both ends of a shortcut carry TCP connections between their
    /// applications directly (cut-through: the bytes are then not on the LAN).
    pub cut_through: bool,
    /// Most MAC addresses learned on one port ([`Core::max_macs_per_port`]).
    pub max_macs_per_port: usize,
    /// Most MAC addresses learned in all ([`Core::max_macs`]).
    pub max_macs: usize,
    /// Each port keeps the first source address it sent ([`Core::port_lock`]).
    pub port_lock: bool,
    /// Uplinks to other hosts, one port each: VXLAN tunnels of the switch's own
    /// ([`crate::uplink`]) and cables through Debian's `vde_plug` ([`Cable`]).
    pub uplinks: Vec<UplinkUrl>,
    /// Seeds the impairments (`impair`) that name no seed of their own; `None`: a random
    /// one (`showinfo` says which).
    pub seed: Option<u64>,
    /// Serve the status page, `/api/ports` and `/metrics` on this TCP address
    /// ([`crate::status`]).
    pub http: Option<String>,
    /// Serve the same on the LAN, from a node of its own ([`HttpNode`]).
    pub http_node: Option<HttpNode>,
}

/// `--http-node`: the status page served on the virtual LAN by a node of the switch's own, a
/// copy of this program (`ioth-switch status-node`) run with the shim preloaded, which asks
/// the console for `status/json` and `status/metrics` on each request. Supervised as the
/// cables are ([`Supervised`]).
#[derive(Clone, Debug)]
pub struct HttpNode {
    /// The node's addresses, in `IOTH_IP`'s syntax.
    pub ip: String,
    /// Its name (`IOTH_NAME`: its stack daemon answers multicast DNS for it).
    pub name: Option<String>,
    /// The shim (`libioth.so`).
    pub lib: PathBuf,
    /// This program.
    pub exe: PathBuf,
    /// Where the node listens (`[::]:80`, which takes IPv4 too, or `0.0.0.0:80`).
    pub listen: String,
}

/// An uplink through Debian's `vde_plug` (any vdeplug4 URL the switch does not speak itself):
/// the switch runs `vde_plug vde://DIR[PORT] URL` on a port it keeps for it, and runs it again
/// when it exits (after 1 s, doubling up to 30 s while it keeps failing at once). While it is
/// not connected, the port is there with no one behind it, and `port/print` says why.
struct Cable {
    url: String,
    port: PortId,
    /// Its `vde_plug`; `down` says why the cable is not connected (`None` while it is).
    run: Supervised,
}

/// How long a failed uplink waits before its socket is opened again.
const UPLINK_RETRY: Duration = Duration::from_secs(1);

/// An uplink port's tunnel and its registration.
struct UplinkIo {
    up: Uplink,
    /// Receive slots ([`uplink::BATCH`] of [`uplink::SLOT`] bytes).
    rx: Vec<u8>,
    frames: Vec<(usize, usize)>,
    gro: Coalescer,
    /// The last joined frame's storage (swapped with the coalescer's).
    joined: Vec<u8>,
    /// The epoll token, while the socket is open.
    token: Option<u64>,
    next_try: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    CtlListen,
    NativeListen,
    MgmtListen,
    Signal,
    Pending,
    Mgmt,
    PortCtl(PortId),
    PortData(PortId),
    Uplink(PortId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PendingKind {
    Vde,
    Native,
}

struct Pending {
    fd: Fd,
    kind: PendingKind,
    deadline: Instant,
}

struct PortIo {
    data: Fd,
    data_token: u64,
    ctl: Option<(Fd, u64)>,
    path: Option<PathBuf>,
    queue: VecDeque<Vec<u8>>,
    qbytes: usize,
    want_out: bool,
    /// The client may set up rings (`vde::NATIVE_FLAG_RINGS` granted), and the rings once it
    /// did.
    rings_granted: bool,
    rings: Option<PortRings>,
}

/// A native port's shared-memory rings: the switch's towards the client, the client's
/// towards the switch (`ioth_common::ring`).
struct PortRings {
    tx: TxRing,
    rx: RxRing,
}

struct MgmtConn {
    fd: Fd,
    lines: LineBuf,
    out: Vec<u8>,
    want_out: bool,
    close_after_flush: bool,
    /// The connection carries a live capture (`capture`).
    capture: Option<Capture>,
}

/// A live capture on a console connection: the frames of one port (or all) as pcap.
struct Capture {
    port: Option<PortId>,
    /// Frames still to send (`None`: until the client goes).
    left: Option<u64>,
    /// Frames left out because the client read too slowly (the switch never waits for it).
    dropped: u64,
}

/// Bytes a capture may hold for a slow reader before frames are left out.
const CAPTURE_BUF: usize = 8 << 20;

/// What a capture watches, for the log.
fn captured_what(port: Option<PortId>) -> String {
    port.map_or("every port".into(), |p| format!("port {p}"))
}

/// A bound switch, ready to run.
pub struct Server {
    cfg: Config,
    ep: Fd,
    listeners: Vec<(Fd, PathBuf)>,
    signal: Option<Fd>,
    core: Core,
    ports: HashMap<PortId, PortIo>,
    sources: HashMap<u64, Source>,
    next_token: u64,
    pending: HashMap<u64, Pending>,
    mgmts: HashMap<u64, MgmtConn>,
    pcap: Option<PcapWriter<std::fs::File>>,
    start: Instant,
    rxbuf: Vec<u8>,
    /// Ports whose ring still held frames when their turn ended ([`Server::read_ring`]).
    ring_busy: Vec<PortId>,
    egress: Vec<Egress>,
    scratch: Vec<u8>,
    running: bool,
    /// The switch's copies of both ends of each shortcut, by id (of an uplink offer: the
    /// socketpair whose one end went to the port).
    sc_fds: HashMap<u32, (Fd, Fd)>,
    /// Our network namespace (device, inode): uplink offers go only to clients in it.
    netns: Option<(u64, u64)>,
    uplinks: HashMap<PortId, UplinkIo>,
    cables: Vec<Cable>,
    /// Scratch space for the segments of a frame too large for its port.
    segs: Vec<u8>,
    /// The last IP fragment identification used on a VDE port.
    frag_id: u32,
    /// Debian's `vde_plug`, when a cable needs it.
    vde_plug: Option<PathBuf>,
    /// A refusal for want of a free port was logged since the last port went away (one line
    /// per episode, not one per retrying client).
    full_said: bool,
    /// `--http`: the bound socket until the switch runs, then the server and its snapshot.
    http_listener: Option<std::net::TcpListener>,
    http: Option<(Arc<tiny_http::Server>, Arc<Mutex<status::Snapshot>>)>,
    http_addr: Option<std::net::SocketAddr>,
    /// `--http-node`'s program.
    status_node: Option<Supervised>,
}

/// Why the switch could not set itself up (its directory, listeners, signals) or a new port.
/// Each variant carries what failed and on which path or value; `Display` is the message
/// printed (`bind /tmp/sw/ctl: Address already in use`).
#[derive(Debug)]
pub enum SetupError {
    /// `--group` names no group in `/etc/group`.
    UnknownGroup(String),
    Chmod {
        mode: u32,
        path: PathBuf,
        error: std::io::Error,
    },
    Chgrp {
        gid: u32,
        path: PathBuf,
        error: std::io::Error,
    },
    Mkdir {
        path: PathBuf,
        error: std::io::Error,
    },
    NotADirectory(PathBuf),
    /// A switch answers on a socket of the directory `dir`.
    AlreadyRunning(PathBuf),
    /// Something that is not a socket we can probe sits where a listener goes.
    NotASocket {
        path: PathBuf,
        error: Errno,
    },
    Socket(Errno),
    Bind {
        path: PathBuf,
        error: Errno,
    },
    Listen {
        path: PathBuf,
        error: Errno,
    },
    Pcap {
        path: PathBuf,
        error: std::io::Error,
    },
    Epoll(Errno),
    Signalfd(Errno),
    /// A VDE client's port request cannot be met (`port` as asked).
    Port {
        port: u32,
        error: Errno,
    },
    /// No free port for a native client.
    NoPort(Errno),
    /// A VDE client's data socket cannot be reached.
    ConnectClient {
        sock: UnixAddr,
        error: Errno,
    },
    /// A VDE client named a datagram socket that is not its own (`owner`: the socket file's
    /// owner; `None` for an abstract name, which has no owner to check).
    NotOwner {
        sock: UnixAddr,
        peer_uid: u32,
        owner: Option<u32>,
    },
    /// The credentials of a VDE client (`SO_PEERCRED`) cannot be read.
    PeerCred(Errno),
    /// The data socket's address does not fit a `sockaddr_un`.
    Address(Errno),
    ShortReply(usize),
    Reply(Errno),
    Welcome(Errno),
    /// An uplink cannot be set up at all (say, `vde_plug` is missing).
    Uplink(String),
    /// The status server's address cannot be bound (`--http`).
    Http {
        addr: String,
        error: std::io::Error,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::UnknownGroup(g) => write!(f, "unknown group {g}"),
            SetupError::Chmod { mode, path, error } => {
                write!(f, "chmod {mode:o} {}: {error}", path.display())
            }
            SetupError::Chgrp { gid, path, error } => {
                write!(f, "chgrp {gid} {}: {error}", path.display())
            }
            SetupError::Mkdir { path, error } => write!(f, "mkdir {}: {error}", path.display()),
            SetupError::NotADirectory(p) => write!(f, "{} is not a directory", p.display()),
            SetupError::AlreadyRunning(dir) => {
                write!(f, "a switch is already running on {}", dir.display())
            }
            SetupError::NotASocket { path, error } => write!(
                f,
                "{} exists and is not a usable socket ({error}); remove it or pick another directory",
                path.display()
            ),
            SetupError::Socket(e) => write!(f, "socket: {e}"),
            SetupError::Bind { path, error } => write!(f, "bind {}: {error}", path.display()),
            SetupError::Listen { path, error } => write!(f, "listen {}: {error}", path.display()),
            SetupError::Pcap { path, error } => write!(f, "pcap file {}: {error}", path.display()),
            SetupError::Epoll(e) => write!(f, "epoll: {e}"),
            SetupError::Signalfd(e) => write!(f, "signalfd: {e}"),
            SetupError::Port { port, error } => write!(f, "port {port}: {error}"),
            SetupError::NoPort(e) => write!(f, "{e}"),
            SetupError::ConnectClient { sock, error } => {
                write!(
                    f,
                    "connect to the client's socket {}: {error}",
                    addr_str(sock)
                )
            }
            SetupError::NotOwner {
                sock,
                peer_uid,
                owner: Some(owner),
            } => write!(
                f,
                "the client (uid {peer_uid}) names {}, a socket of uid {owner}",
                addr_str(sock)
            ),
            SetupError::NotOwner {
                sock,
                peer_uid,
                owner: None,
            } => write!(
                f,
                "the client (uid {peer_uid}) names the abstract socket {}, whose owner \
                 cannot be checked (only root and the switch's own user may)",
                addr_str(sock)
            ),
            SetupError::PeerCred(e) => write!(f, "SO_PEERCRED: {e}"),
            SetupError::Address(e) => write!(f, "{e}"),
            SetupError::ShortReply(n) => write!(f, "short reply ({n} bytes)"),
            SetupError::Reply(e) => write!(f, "reply: {e}"),
            SetupError::Welcome(e) => write!(f, "welcome: {e}"),
            SetupError::Uplink(e) => write!(f, "{e}"),
            SetupError::Http { addr, error } => write!(f, "--http {addr}: {error}"),
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::Chmod { error, .. }
            | SetupError::Chgrp { error, .. }
            | SetupError::Mkdir { error, .. }
            | SetupError::Pcap { error, .. } => Some(error),
            SetupError::NotASocket { error, .. }
            | SetupError::Bind { error, .. }
            | SetupError::Listen { error, .. }
            | SetupError::Port { error, .. }
            | SetupError::ConnectClient { error, .. }
            | SetupError::Socket(error)
            | SetupError::Epoll(error)
            | SetupError::Signalfd(error)
            | SetupError::NoPort(error)
            | SetupError::PeerCred(error)
            | SetupError::Address(error)
            | SetupError::Reply(error)
            | SetupError::Welcome(error) => Some(error),
            SetupError::UnknownGroup(_)
            | SetupError::NotADirectory(_)
            | SetupError::AlreadyRunning(_)
            | SetupError::NotOwner { .. }
            | SetupError::ShortReply(_)
            | SetupError::Uplink(_) => None,
            SetupError::Http { error, .. } => Some(error),
        }
    }
}

/// A unix address for messages: the path, `@name` for an abstract name (NULs dropped).
fn addr_str(a: &UnixAddr) -> String {
    match a {
        UnixAddr::Unnamed => "(unnamed)".into(),
        UnixAddr::Path(p) => String::from_utf8_lossy(p).into_owned(),
        UnixAddr::Abstract(n) => {
            let n: Vec<u8> = n.iter().copied().filter(|b| *b != 0).collect();
            format!("@{}", String::from_utf8_lossy(&n))
        }
    }
}

fn set_mode(path: &Path, mode: u32, group: Option<u32>) -> Result<(), SetupError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|error| {
        SetupError::Chmod {
            mode,
            path: path.to_path_buf(),
            error,
        }
    })?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|error| SetupError::Chgrp {
            gid,
            path: path.to_path_buf(),
            error,
        })?;
    }
    Ok(())
}

/// Resolve a group given by name or number (names from `/etc/group`).
/// The URL given to `vde_plug` for a cable: as the user wrote it, except that a `vxvde://`
/// endpoint gets a 4 MiB receive buffer unless one is given (`rcvbuf=`). Its default (the
/// system's, 208 KiB) overflows under the bursts of a TCP stream cut into 1500-byte frames,
/// and every datagram lost there costs a TCP retransmission.
fn vde_plug_url(url: &str) -> String {
    if url.starts_with("vxvde://") && !url.contains("rcvbuf=") {
        format!("{}/rcvbuf={}", url.trim_end_matches('/'), 4 << 20)
    } else {
        url.to_string()
    }
}

/// `prog` in `PATH`, as a shell would find it.
fn find_in_path(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_else(|| vec!["/usr/bin".into(), "/bin".into()])
        .into_iter()
        .map(|d| d.join(prog))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

pub fn resolve_group(g: &str) -> Result<u32, SetupError> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    for line in groups.lines() {
        let mut f = line.split(':');
        if f.next() == Some(g)
            && let Some(gid) = f.nth(1).and_then(|s| s.parse().ok())
        {
            return Ok(gid);
        }
    }
    Err(SetupError::UnknownGroup(g.to_string()))
}

/// A socketpair for a shortcut or an uplink offer (`what`, for the log): non-blocking,
/// close-on-exec, `SOCK_SEQPACKET`.
fn offer_pair(what: &str) -> Option<(Fd, Fd)> {
    sys::socketpair(
        libc::AF_UNIX,
        libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
    )
    .map_err(|e| log::debug!("{what} socketpair: {e}"))
    .ok()
}

/// Set both socket buffers, forcing past the sysctl limits when allowed.
fn big_buffers(fd: RawFd) {
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        if sys::setsockopt_int(fd, libc::SOL_SOCKET, force, SOCKBUF).is_err() {
            let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, plain, SOCKBUF);
        }
    }
}

/// Connect the datagram socket `data` to a VDE client's socket `sock`, provided it belongs to
/// the client, whose uid is `peer_uid` (see the module documentation).
fn connect_client(data: RawFd, sock: &UnixAddr, peer_uid: u32) -> Result<(), SetupError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let failed = |error: Errno| SetupError::ConnectClient {
        sock: sock.clone(),
        error,
    };
    let io_failed = |e: std::io::Error| failed(Errno(e.raw_os_error().unwrap_or(libc::EIO)));
    let not_owner = |owner| SetupError::NotOwner {
        sock: sock.clone(),
        peer_uid,
        owner,
    };
    let path = match sock {
        UnixAddr::Path(p) => Path::new(std::ffi::OsStr::from_bytes(p)),
        UnixAddr::Abstract(_) => {
            if peer_uid != 0 && peer_uid != sys::geteuid() {
                return Err(not_owner(None));
            }
            return sys::connect_unix(data, sock).map_err(failed);
        }
        UnixAddr::Unnamed => return Err(failed(Errno::EINVAL)),
    };
    // The socket itself (symbolic links followed), held open so that what is checked is
    // what is connected to.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .map_err(io_failed)?;
    let md = file.metadata().map_err(io_failed)?;
    if !md.file_type().is_socket() {
        return Err(failed(Errno::ECONNREFUSED));
    }
    if peer_uid != 0 && md.uid() != peer_uid {
        return Err(not_owner(Some(md.uid())));
    }
    let held = format!("/proc/self/fd/{}", file.as_raw_fd());
    match sys::connect_unix(data, &UnixAddr::path(&held)) {
        Err(Errno::ENOENT) if !Path::new("/proc/self/fd").is_dir() => {
            // No /proc: connect by name, then make sure it was the same socket (a narrow
            // window remains in which the name could be swapped and swapped back).
            sys::connect_unix(data, sock).map_err(failed)?;
            let now = std::fs::metadata(path).map_err(io_failed)?;
            if (now.dev(), now.ino()) != (md.dev(), md.ino()) {
                return Err(not_owner(Some(now.uid())));
            }
            Ok(())
        }
        r => r.map_err(failed),
    }
}

/// Probe a socket path left by an earlier switch: `Ok(())` if it is free (removed if stale).
fn clear_stale(path: &Path, ty: i32, dir: &Path) -> Result<(), SetupError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let s = sys::socket(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0).map_err(SetupError::Socket)?;
    match sys::retry(|| sys::connect_unix(s.raw(), &UnixAddr::path(path))) {
        Ok(()) => Err(SetupError::AlreadyRunning(dir.to_path_buf())),
        Err(e) if e == Errno::ECONNREFUSED || e == Errno::ENOENT => {
            let _ = std::fs::remove_file(path);
            Ok(())
        }
        Err(error) => Err(SetupError::NotASocket {
            path: path.to_path_buf(),
            error,
        }),
    }
}

fn listen_on(path: &Path, ty: i32, mode: u32, group: Option<u32>) -> Result<Fd, SetupError> {
    let fd = sys::socket(
        libc::AF_UNIX,
        ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        0,
    )
    .map_err(SetupError::Socket)?;
    sys::bind_unix(fd.raw(), &UnixAddr::path(path)).map_err(|error| SetupError::Bind {
        path: path.to_path_buf(),
        error,
    })?;
    set_mode(path, mode, group)?;
    sys::listen(fd.raw(), 128).map_err(|error| SetupError::Listen {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(fd)
}

impl Server {
    /// Create the directory and bind every listener. After this returns, clients can connect
    /// (the kernel queues them until [`Server::run`] accepts).
    pub fn bind(cfg: Config) -> Result<Server, SetupError> {
        let dir = &cfg.dir;
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|error| SetupError::Mkdir {
                path: dir.clone(),
                error,
            })?;
            set_mode(dir, cfg.dirmode, cfg.group)?;
        } else if !dir.is_dir() {
            return Err(SetupError::NotADirectory(dir.clone()));
        } else if cfg.dirmode_explicit {
            set_mode(dir, cfg.dirmode, cfg.group)?;
        }
        let ctl = dir.join("ctl");
        let native = dir.join("native");
        let mgmt = dir.join("mgmt");
        clear_stale(&ctl, libc::SOCK_STREAM, dir)?;
        clear_stale(&native, libc::SOCK_SEQPACKET, dir)?;
        clear_stale(&mgmt, libc::SOCK_STREAM, dir)?;
        // Data sockets a crashed switch left behind ("NNN.FD").
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                if let Some((a, b)) = n.split_once('.')
                    && a.len() >= 3
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && !b.is_empty()
                    && b.bytes().all(|c| c.is_ascii_digit())
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let pcap = match &cfg.pcap {
            Some(p) => {
                let pcap_err = |error| SetupError::Pcap {
                    path: p.clone(),
                    error,
                };
                let f = std::fs::File::create(p).map_err(pcap_err)?;
                Some(PcapWriter::new(f).map_err(pcap_err)?)
            }
            None => None,
        };
        // The status server's socket now (a busy address is a setup error); its threads when
        // the switch runs (after `--daemon` forked).
        let http = match &cfg.http {
            Some(addr) => Some(std::net::TcpListener::bind(addr.as_str()).map_err(|error| {
                SetupError::Http {
                    addr: addr.clone(),
                    error,
                }
            })?),
            None => None,
        };
        let ep = sys::epoll_create().map_err(SetupError::Epoll)?;
        let mut s = Server {
            core: {
                let mut c = Core::new(cfg.hub);
                c.shortcuts_enabled = cfg.shortcuts && !cfg.hub && cfg.pcap.is_none();
                c.uplink_shortcuts = cfg.uplink_shortcuts;
                c.max_macs_per_port = cfg.max_macs_per_port;
                c.max_macs = cfg.max_macs;
                c.port_lock = cfg.port_lock;
                c.seed = cfg.seed.unwrap_or_else(sys::random_u64);
                c
            },
            cfg: cfg.clone(),
            ep,
            listeners: Vec::new(),
            signal: None,
            ports: HashMap::new(),
            sources: HashMap::new(),
            next_token: 1,
            pending: HashMap::new(),
            mgmts: HashMap::new(),
            pcap,
            start: Instant::now(),
            // (A ring record may take 8 bytes more than its frame.)
            rxbuf: vec![0u8; vde::NATIVE_MAX_FRAME + 64],
            ring_busy: Vec::new(),
            egress: Vec::new(),
            scratch: Vec::new(),
            running: true,
            sc_fds: HashMap::new(),
            netns: vde::netns_of("self"),
            uplinks: HashMap::new(),
            cables: Vec::new(),
            segs: Vec::new(),
            frag_id: sys::random_u64() as u32,
            vde_plug: None,
            full_said: false,
            http_addr: http.as_ref().and_then(|l| l.local_addr().ok()),
            http_listener: http,
            http: None,
            status_node: cfg
                .http_node
                .as_ref()
                .map(|_| Supervised::new("status node", cfg.dir.join("status-node.err"))),
        };
        let mut bound = Vec::new();
        let r = (|| {
            for (path, ty, src, mode, group) in [
                (
                    &mgmt,
                    libc::SOCK_STREAM,
                    Source::MgmtListen,
                    cfg.mgmt_mode,
                    cfg.mgmt_group,
                ),
                (
                    &native,
                    libc::SOCK_SEQPACKET,
                    Source::NativeListen,
                    cfg.mode,
                    cfg.group,
                ),
                (
                    &ctl,
                    libc::SOCK_STREAM,
                    Source::CtlListen,
                    cfg.mode,
                    cfg.group,
                ),
            ] {
                let fd = listen_on(path, ty, mode, group)?;
                bound.push(path.clone());
                s.register(fd.raw(), libc::EPOLLIN as u32, src)
                    .map_err(SetupError::Epoll)?;
                s.listeners.push((fd, path.clone()));
            }
            Ok::<(), SetupError>(())
        })();
        if let Err(e) = r {
            for p in bound {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        for url in &cfg.uplinks {
            let id = match s.alloc_port(0, false) {
                Ok(id) => id,
                Err(e) => {
                    for p in &bound {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(SetupError::NoPort(e));
                }
            };
            let spec = match url {
                UplinkUrl::Vxlan(spec) => spec,
                UplinkUrl::Cable(url) => {
                    if s.vde_plug.is_none() {
                        s.vde_plug = find_in_path("vde_plug");
                    }
                    if s.vde_plug.is_none() {
                        for p in &bound {
                            let _ = std::fs::remove_file(p);
                        }
                        return Err(SetupError::Uplink(format!(
                            "--uplink {url}: needs Debian's vde_plug (package vdeplug), which is not in PATH"
                        )));
                    }
                    s.cables.push(Cable {
                        url: url.clone(),
                        port: id,
                        run: Supervised::new("vde_plug", cfg.dir.join(format!("uplink-{id}.err"))),
                    });
                    s.cable_placeholder(id);
                    continue;
                }
            };
            let up = Uplink::new(spec.clone());
            // The port takes the nodes' 64 KiB frames: the uplink cuts TCP to the wire's size.
            // Checksums are the uplink's business both ways: it fills them in what it sends
            // (per segment), and what arrives may lack them (a kernel peer on the same host
            // hands over its offloaded segments as they are), so the switch fills them before
            // a frame goes to a port or a capture that needs them.
            let mut port = Port::new(PortKind::Vxlan, spec.url.clone(), vde::NATIVE_MAX_FRAME);
            port.csum_fill = true;
            let _ = s.core.add_port(id, port);
            s.uplinks.insert(
                id,
                UplinkIo {
                    up,
                    rx: Vec::new(),
                    frames: Vec::new(),
                    gro: Coalescer::default(),
                    joined: Vec::new(),
                    token: None,
                    next_try: Instant::now(),
                },
            );
            s.open_uplink(id);
        }
        Ok(s)
    }

    /// The port of a cable that is not connected: there, with no one behind it (frames to it
    /// go nowhere), and `port/print` says why.
    fn cable_placeholder(&mut self, id: PortId) {
        let _ = self.core.add_port(
            id,
            Port::new(PortKind::Vde, self.cable_url(id), vde::VDE_MAX_FRAME),
        );
        self.cable_detail(id);
    }

    fn cable_url(&self, id: PortId) -> String {
        self.cables
            .iter()
            .find(|c| c.port == id)
            .map(|c| c.url.clone())
            .unwrap_or_default()
    }

    fn cable_detail(&mut self, id: PortId) {
        let Some(c) = self.cables.iter().find(|c| c.port == id) else {
            return;
        };
        let state = match &c.run.down {
            None => "up".to_string(),
            Some(why) => format!("down ({why})"),
        };
        let line = format!(
            "UPLINK: {state} cable {} vde_plug pid {} restarts {}",
            c.url,
            c.run.pid(),
            c.run.restarts
        );
        if let Some(p) = self.core.port_mut(id) {
            p.detail = vec![line];
        }
    }

    /// Start the cables whose time has come; notice the ones whose `vde_plug` exited. Runs in
    /// the process that serves (after `--daemon`'s fork), from the loop.
    fn supervise_cables(&mut self) {
        let now = Instant::now();
        let dir = self.cfg.dir.display().to_string();
        for i in 0..self.cables.len() {
            let vde_plug = self.vde_plug.clone();
            let c = &mut self.cables[i];
            let id = c.port;
            let url = c.url.clone();
            let before = c.run.down.clone();
            let ev = c.run.supervise(now, || {
                let mut cmd = std::process::Command::new(vde_plug?);
                cmd.arg(format!("vde://{dir}[{id}]"))
                    .arg(vde_plug_url(&url));
                Some(cmd)
            });
            match ev {
                Event::Nothing => continue,
                Event::Exited => {
                    // Once per distinct reason.
                    if c.run.down != before {
                        let why = c.run.down.clone().unwrap_or_default();
                        log::error!("port {id}: uplink {url}: {why}; running it again");
                    }
                }
                Event::Started(pid) => {
                    log::info!("port {id}: uplink {url}: vde_plug pid {pid}");
                    c.run.down = Some("vde_plug started, not connected yet".into());
                }
                Event::Failed => {}
            }
            self.cable_detail(id);
        }
    }

    /// Start `--http-node`'s program, and again when it exits.
    fn supervise_status_node(&mut self) {
        let (Some(run), Some(node)) = (&mut self.status_node, &self.cfg.http_node) else {
            return;
        };
        let dir = &self.cfg.dir;
        let before = run.down.clone();
        let ev = run.supervise(Instant::now(), || {
            let mut cmd = std::process::Command::new(&node.exe);
            cmd.arg("status-node")
                .arg("--sock")
                .arg(dir)
                .arg("--listen")
                .arg(&node.listen);
            // A node of its own: nothing of the switch's own environment names another.
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy();
                if k.starts_with("IOTH_") && !matches!(&*k, "IOTH_LOG" | "IOTH_RUNDIR") {
                    cmd.env_remove(&*k);
                }
            }
            cmd.env("LD_PRELOAD", &node.lib)
                .env("IOTH_IP", &node.ip)
                .env("IOTH_SWITCH", dir);
            if let Some(n) = &node.name {
                cmd.env("IOTH_NAME", n);
            }
            Some(cmd)
        });
        match ev {
            Event::Started(pid) => {
                log::info!("status node {}: pid {pid}", node.ip);
                run.down = None;
            }
            Event::Exited | Event::Failed if run.down != before => {
                log::error!(
                    "status node: {}; running it again",
                    run.down.as_deref().unwrap_or("")
                );
            }
            _ => {}
        }
    }

    /// What `showinfo` says of `--http-node`.
    fn status_node_line(&self) -> Option<String> {
        let (run, node) = (self.status_node.as_ref()?, self.cfg.http_node.as_ref()?);
        let name = node
            .name
            .as_deref()
            .map(|n| format!(" name {n}"))
            .unwrap_or_default();
        Some(match &run.down {
            None => format!(
                "{}{name} pid {} restarts {}",
                node.ip,
                run.pid(),
                run.restarts
            ),
            Some(why) => format!("{}{name} down ({why}) restarts {}", node.ip, run.restarts),
        })
    }

    /// Stop every cable's `vde_plug` (at exit).
    fn stop_cables(&mut self) {
        for c in &mut self.cables {
            c.run.stop();
        }
    }

    /// Open an uplink's socket and watch it; on failure say why (once per distinct reason)
    /// and try again after [`UPLINK_RETRY`].
    fn open_uplink(&mut self, id: PortId) {
        let Some(u) = self.uplinks.get_mut(&id) else {
            return;
        };
        let before = u.up.down.clone();
        u.next_try = Instant::now() + UPLINK_RETRY;
        match u.up.open() {
            Ok(()) => {
                let fd = u.up.fd();
                let max = u.up.max_frame;
                if u.rx.is_empty() {
                    u.rx = vec![0u8; uplink::BATCH * uplink::SLOT];
                }
                if let Some(fd) = fd {
                    match self.register(fd, libc::EPOLLIN as u32, Source::Uplink(id)) {
                        Ok(t) => {
                            if let Some(u) = self.uplinks.get_mut(&id) {
                                u.token = Some(t);
                            }
                        }
                        Err(e) => {
                            if let Some(u) = self.uplinks.get_mut(&id) {
                                u.up.fail(format!("epoll: {e}"));
                            }
                        }
                    }
                }
                log::info!(
                    "port {id}: uplink {} up, frames up to {max} bytes",
                    self.uplink_url(id)
                );
                // Offers made before carry the old wire's frame size.
                self.core.revoke_port(id);
                self.end_revoked();
            }
            Err(e) => {
                if before.as_deref() != Some(e.as_str()) {
                    log::error!(
                        "port {id}: uplink {}: {e}; retrying every {} s",
                        self.uplink_url(id),
                        UPLINK_RETRY.as_secs()
                    );
                }
            }
        }
        self.uplink_detail(id);
    }

    fn uplink_url(&self, id: PortId) -> String {
        self.uplinks
            .get(&id)
            .map(|u| u.up.spec.url.clone())
            .unwrap_or_default()
    }

    /// Refresh the lines `port/print` shows for an uplink.
    fn uplink_detail(&mut self, id: PortId) {
        let Some(u) = self.uplinks.get(&id) else {
            return;
        };
        let s = &u.up.spec;
        let addrs: Vec<String> = s.addrs.iter().map(|a| a.to_string()).collect();
        let state = match &u.up.down {
            None => "up".to_string(),
            Some(why) => format!("down ({why})"),
        };
        let st = u.up.stats;
        let lines = vec![
            format!(
                "UPLINK: {state} {} {} port {} vni {} wire_frame {}",
                if s.multicast() { "group" } else { "remote" },
                addrs.join(","),
                s.port,
                s.vni,
                u.up.max_frame
            ),
            format!(
                "TUNNEL: learned {} bad {} tx_errors {} segmented {} fragmented {} joined {}",
                u.up.learned(),
                st.bad,
                st.tx_errors,
                st.segmented,
                st.fragmented,
                st.joined
            ),
        ];
        if let Some(p) = self.core.port_mut(id) {
            p.detail = lines;
        }
    }

    /// Datagrams from an uplink: each a frame for the switch. Consecutive segments of one
    /// TCP connection for a port that takes larger frames are joined first.
    fn read_uplink(&mut self, id: PortId) {
        let now = self.now_ms();
        let Some(u) = self.uplinks.get_mut(&id) else {
            return;
        };
        let mut rx = std::mem::take(&mut u.rx);
        let mut frames = std::mem::take(&mut u.frames);
        let mut gro = std::mem::take(&mut u.gro);
        let mut joined_buf = std::mem::take(&mut u.joined);
        // A few batches per wakeup: level-triggered epoll brings the rest back.
        for _ in 0..4 {
            let Some(u) = self.uplinks.get_mut(&id) else {
                break;
            };
            match u.up.recv_batch(&mut rx, &mut frames, now) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    self.close_uplink(id, format!("receive: {e}"));
                    break;
                }
            }
            self.uplink_moves(id);
            // Consecutive frames mostly go to one destination: look it up once per run (only
            // frames from the uplink are forwarded here, so no entry for a local port moves
            // meanwhile).
            let mut last: Option<([u8; 10], usize)> = None;
            for &(a, b) in &frames {
                let f = &mut rx[a..b];
                let key: Option<[u8; 10]> = f.get(..16).map(|h| {
                    [
                        h[0], h[1], h[2], h[3], h[4], h[5], h[12], h[13], h[14], h[15],
                    ]
                });
                let room = match (key, last) {
                    (Some(k), Some((lk, r))) if k == lk => r,
                    _ => {
                        let r = self.core.unicast_room(id, f).unwrap_or(0);
                        last = key.map(|k| (k, r));
                        r
                    }
                };
                if room > b - a && gro.offer(f, room) {
                    continue;
                }
                if !gro.is_empty() {
                    self.flush_joined(id, &mut gro, &mut joined_buf);
                    if room > b - a && gro.offer(f, room) {
                        continue;
                    }
                }
                self.forward(id, f);
            }
        }
        if !gro.is_empty() {
            self.flush_joined(id, &mut gro, &mut joined_buf);
        }
        if let Some(u) = self.uplinks.get_mut(&id) {
            u.joined = joined_buf;
            u.rx = rx;
            u.frames = frames;
            u.gro = gro;
        }
    }

    fn flush_joined(&mut self, id: PortId, gro: &mut Coalescer, buf: &mut Vec<u8>) {
        let n = gro.take(buf);
        if let Some(u) = self.uplinks.get_mut(&id) {
            u.up.stats.joined += n.saturating_sub(1) as u64;
        }
        self.forward(id, buf);
    }

    /// End the uplink offers for the MACs whose endpoint uplink `id` changed or forgot.
    fn uplink_moves(&mut self, id: PortId) {
        let Some(u) = self.uplinks.get_mut(&id) else {
            return;
        };
        if u.up.moved.is_empty() {
            return;
        }
        for mac in std::mem::take(&mut u.up.moved) {
            self.core.revoke_mac_at(id, mac);
        }
        if self.core.has_revoked() {
            self.end_revoked();
        }
    }

    /// An uplink's socket failed (`why`): close it, say so, and open it again later.
    fn close_uplink(&mut self, id: PortId, why: String) {
        let Some(u) = self.uplinks.get_mut(&id) else {
            return;
        };
        log::error!("port {id}: uplink {}: {why}; reopening", u.up.spec.url);
        let (fd, token) = (u.up.fd(), u.token.take());
        u.up.fail(why);
        u.next_try = Instant::now() + UPLINK_RETRY;
        if let (Some(fd), Some(t)) = (fd, token) {
            self.unregister(fd, t);
        }
        self.core.revoke_port(id);
        self.end_revoked();
        self.uplink_detail(id);
    }

    /// Handle SIGTERM/SIGINT/SIGHUP through a signalfd (call in the process that runs).
    pub fn catch_signals(&mut self) -> Result<(), SetupError> {
        let fd = crate::os::termination_signalfd().map_err(SetupError::Signalfd)?;
        self.register(fd.raw(), libc::EPOLLIN as u32, Source::Signal)
            .map_err(SetupError::Epoll)?;
        self.signal = Some(fd);
        Ok(())
    }

    /// The descriptors the switch owns (to keep when a daemon closes everything else).
    pub fn owned_fds(&self) -> Vec<RawFd> {
        use std::os::fd::AsRawFd;
        let mut v = vec![self.ep.raw()];
        v.extend(self.listeners.iter().map(|(fd, _)| fd.raw()));
        v.extend(self.signal.iter().map(|f| f.raw()));
        v.extend(self.uplinks.values().filter_map(|u| u.up.fd()));
        if let Some(p) = &self.pcap {
            v.push(p.get_ref().as_raw_fd());
        }
        if let Some(l) = &self.http_listener {
            v.push(l.as_raw_fd());
        }
        v
    }

    /// The address the status server listens on (`--http`, with the port the kernel chose
    /// for port 0).
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http_addr
    }

    /// Start the status server's threads (tiny_http's acceptor, and ours answering).
    fn start_http(&mut self) {
        let Some(l) = self.http_listener.take() else {
            return;
        };
        match tiny_http::Server::from_listener(l, None) {
            Ok(server) => {
                let server = Arc::new(server);
                let snap = Arc::new(Mutex::new(status::Snapshot::default()));
                let (sv, sn) = (server.clone(), snap.clone());
                std::thread::Builder::new()
                    .name("http".into())
                    .spawn(move || status::serve_snapshot(sv, sn))
                    .map_err(|e| log::error!("status server thread: {e}"))
                    .ok();
                self.http = Some((server, snap));
                self.refresh_status();
                if let Some(a) = self.http_addr {
                    log::info!("status page on http://{a}/");
                }
            }
            Err(e) => log::error!("status server: {e}"),
        }
    }

    /// Render what the status server hands out.
    fn refresh_status(&mut self) {
        let Some((_, snap)) = &self.http else {
            return;
        };
        let facts = status::Facts {
            dir: self.cfg.dir.display().to_string(),
            uptime_s: self.start.elapsed().as_secs(),
            now_ms: self.start.elapsed().as_millis() as u64,
        };
        let fresh = status::Snapshot {
            ports_json: status::ports_json(&self.core, &facts),
            metrics: status::metrics(&self.core, &facts),
        };
        *snap.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    fn register(&mut self, fd: RawFd, events: u32, src: Source) -> Result<u64, Errno> {
        let t = self.next_token;
        self.next_token += 1;
        sys::epoll_ctl(self.ep.raw(), libc::EPOLL_CTL_ADD, fd, events, t)?;
        self.sources.insert(t, src);
        Ok(t)
    }

    fn unregister(&mut self, fd: RawFd, token: u64) {
        let _ = sys::epoll_ctl(self.ep.raw(), libc::EPOLL_CTL_DEL, fd, 0, 0);
        self.sources.remove(&token);
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The impairments' clock.
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Run until shutdown (signal or console), then clean up the directory.
    pub fn run(mut self) {
        self.start_http();
        self.supervise_cables();
        self.supervise_status_node();
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut last_tick = Instant::now();
        let mut due = Vec::new();
        while self.running {
            // Frames held by impairments wake the loop when their time comes.
            let mut wait = Duration::from_millis(TICK_MS as u64);
            if let Some(at) = self.core.next_due() {
                wait = wait.min(Duration::from_nanos(at.saturating_sub(self.now_ns())));
            }
            if !self.ring_busy.is_empty() {
                wait = Duration::ZERO;
            }
            let n = match sys::epoll_wait_ns(self.ep.raw(), &mut events, wait) {
                Ok(n) => n,
                Err(e) => {
                    log::error!("epoll_wait: {e}");
                    break;
                }
            };
            for ev in events.iter().take(n) {
                let (token, evs) = (ev.u64, ev.events);
                let Some(src) = self.sources.get(&token).copied() else {
                    continue;
                };
                self.dispatch(token, src, evs);
                if !self.running {
                    break;
                }
            }
            for id in std::mem::take(&mut self.ring_busy) {
                self.read_ring(id);
            }
            if self.core.next_due().is_some_and(|at| at <= self.now_ns()) {
                self.core.take_due(self.now_ns(), &mut due);
                for (port, frame) in due.drain(..) {
                    self.deliver_now(port, &frame);
                }
            }
            if last_tick.elapsed() >= Duration::from_millis(TICK_MS as u64) {
                last_tick = Instant::now();
                self.tick();
            }
        }
        self.cleanup();
    }

    fn tick(&mut self) {
        if let Some(p) = &mut self.pcap {
            p.flush();
        }
        self.refresh_status();
        let now = Instant::now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            log::info!("closing a connection that sent no port request in time");
            self.drop_pending(t);
        }
        let now_ms = self.now_ms();
        self.core.expire(now_ms);
        self.supervise_cables();
        self.supervise_status_node();
        let ids: Vec<PortId> = self.uplinks.keys().copied().collect();
        for id in ids {
            let Some(u) = self.uplinks.get_mut(&id) else {
                continue;
            };
            u.up.expire(now_ms);
            self.uplink_moves(id);
            let Some(u) = self.uplinks.get_mut(&id) else {
                continue;
            };
            if u.up.down.is_some() && u.next_try <= now {
                self.open_uplink(id);
            } else {
                self.uplink_detail(id);
            }
        }
    }

    fn cleanup(&mut self) {
        log::info!("shutting down");
        if let Some((server, _)) = self.http.take() {
            server.unblock();
        }
        // The directory first: a switch started on it while this one waits for its cables
        // to stop must not lose its sockets to this one's cleanup.
        for (_, path) in &self.listeners {
            let _ = std::fs::remove_file(path);
        }
        self.stop_cables();
        if let Some(n) = &mut self.status_node {
            n.stop();
        }
        let ids: Vec<PortId> = self.ports.keys().copied().collect();
        self.core.revoke_all();
        self.end_revoked();
        for id in ids {
            self.remove_port(id);
        }
        if let Some(p) = self.pcap.take() {
            let _ = p.into_inner();
        }
    }

    fn dispatch(&mut self, token: u64, src: Source, evs: u32) {
        match src {
            Source::Signal => {
                if let Some(fd) = &self.signal {
                    while let Some(sig) = crate::os::read_signal(fd.raw()) {
                        log::info!("signal {sig}");
                        self.running = false;
                    }
                }
            }
            Source::CtlListen | Source::NativeListen => self.accept_port(src),
            Source::MgmtListen => self.accept_mgmt(),
            Source::Pending => self.pending_ready(token),
            Source::Mgmt => self.mgmt_ready(token, evs),
            Source::PortCtl(id) => self.port_ctl_ready(id),
            Source::Uplink(id) => self.read_uplink(id),
            Source::PortData(id) => {
                if evs & libc::EPOLLOUT as u32 != 0 {
                    self.flush_port(id);
                }
                if evs & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                    self.read_port(id);
                }
            }
        }
    }

    fn listener(&self, src: Source) -> Option<RawFd> {
        let name = match src {
            Source::CtlListen => "ctl",
            Source::NativeListen => "native",
            Source::MgmtListen => "mgmt",
            _ => return None,
        };
        self.listeners
            .iter()
            .find(|(_, p)| p.file_name().is_some_and(|n| n == name))
            .map(|(fd, _)| fd.raw())
    }

    fn accept_port(&mut self, src: Source) {
        let Some(lfd) = self.listener(src) else {
            return;
        };
        let kind = if src == Source::CtlListen {
            PendingKind::Vde
        } else {
            PendingKind::Native
        };
        loop {
            let fd = match sys::accept(lfd, libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
                Ok(fd) => fd,
                Err(e) if e.is_again() => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("accept: {e}");
                    return;
                }
            };
            if self.pending.len() >= MAX_PENDING {
                log::warn!("too many connections waiting for a handshake; closing one");
                continue;
            }
            let Ok(t) = self.register(fd.raw(), libc::EPOLLIN as u32, Source::Pending) else {
                continue;
            };
            self.pending.insert(
                t,
                Pending {
                    fd,
                    kind,
                    deadline: Instant::now() + HANDSHAKE_TIMEOUT,
                },
            );
        }
    }

    fn drop_pending(&mut self, token: u64) -> Option<Pending> {
        let p = self.pending.remove(&token)?;
        self.unregister(p.fd.raw(), token);
        Some(p)
    }

    /// Lowest free port ≥ 1, or exactly `want`.
    fn alloc_port(&self, want: u32, port0: bool) -> Result<PortId, Errno> {
        if port0 {
            return if self.core.has_port(0) {
                Err(Errno::EADDRINUSE)
            } else {
                Ok(0)
            };
        }
        if want > 0 {
            if want > self.cfg.numports {
                return Err(Errno::EINVAL);
            }
            return if self.core.has_port(want) {
                Err(Errno::EADDRINUSE)
            } else {
                Ok(want)
            };
        }
        (1..=self.cfg.numports)
            .find(|p| !self.core.has_port(*p))
            .ok_or(Errno(libc::ENOSPC))
    }

    fn pending_ready(&mut self, token: u64) {
        let Some(p) = self.drop_pending(token) else {
            return;
        };
        let mut buf = [0u8; vde::REQ_MAX_LEN];
        match p.kind {
            PendingKind::Vde => {
                let n = match sys::retry(|| sys::read(p.fd.raw(), &mut buf)) {
                    Ok(0) => {
                        log::info!("VDE client closed before sending a request");
                        return;
                    }
                    Ok(n) => n,
                    Err(e) if e.is_again() => {
                        // Spurious wakeup: wait again.
                        self.repend(p);
                        return;
                    }
                    Err(e) => {
                        log::info!("VDE ctl read: {e}");
                        return;
                    }
                };
                match VdeRequest::parse(&buf[..n]) {
                    Ok(req) => {
                        if let Err(e) = self.setup_vde(p.fd, req) {
                            log::warn!("VDE port refused: {e}");
                        }
                    }
                    Err(e) => log::warn!("bad VDE request ({n} bytes): {e}; connection closed"),
                }
            }
            PendingKind::Native => {
                let n = match sys::recv(p.fd.raw(), &mut buf, libc::MSG_DONTWAIT | libc::MSG_TRUNC)
                {
                    Ok(0) => {
                        log::info!("native client closed before its hello");
                        return;
                    }
                    Ok(n) => n,
                    Err(e) if e.is_again() || e == Errno::EINTR => {
                        self.repend(p);
                        return;
                    }
                    Err(e) => {
                        log::info!("native hello read: {e}");
                        return;
                    }
                };
                if n > buf.len() {
                    log::warn!("oversized native hello ({n} bytes); connection closed");
                    return;
                }
                match NativeHello::parse(&buf[..n]) {
                    Ok(h) => {
                        if let Err(e) = self.setup_native(p.fd, h) {
                            log::warn!("native port refused: {e}");
                        }
                    }
                    Err(e) => log::warn!("bad native hello: {e}; connection closed"),
                }
            }
        }
    }

    fn repend(&mut self, p: Pending) {
        if let Ok(t) = self.register(p.fd.raw(), libc::EPOLLIN as u32, Source::Pending) {
            self.pending.insert(t, p);
        }
    }

    fn setup_vde(&mut self, ctl: Fd, req: VdeRequest) -> Result<(), SetupError> {
        let (peer_pid, _, _) = crate::os::peer_cred(ctl.raw()).map_err(SetupError::PeerCred)?;
        // A cable's own vde_plug takes the port kept for it; nobody else can.
        let cable = self.cables.iter().position(|c| {
            req.port != 0
                && c.port == req.port
                && c.run.pid() == peer_pid
                && !self.ports.contains_key(&c.port)
        });
        if cable.is_some() {
            self.core.remove_port(req.port);
        }
        let r = self.setup_vde_port(ctl, req);
        if let Some(i) = cable {
            let id = self.cables[i].port;
            if r.is_ok() {
                self.cables[i].run.down = None;
                let url = self.cables[i].url.clone();
                log::info!("port {id}: uplink {url} connected");
                if let Some(p) = self.core.port_mut(id) {
                    p.description = url;
                }
            } else {
                self.cable_placeholder(id);
            }
            self.cable_detail(id);
        }
        r
    }

    fn setup_vde_port(&mut self, ctl: Fd, req: VdeRequest) -> Result<(), SetupError> {
        let id = self.alloc_port(req.port, req.port0).map_err(|error| {
            if error == Errno(libc::ENOSPC) {
                self.said_full(&req.description);
            }
            SetupError::Port {
                port: req.port,
                error,
            }
        })?;
        let data = sys::socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
        .map_err(SetupError::Socket)?;
        let (_, peer_uid, _) = crate::os::peer_cred(ctl.raw()).map_err(SetupError::PeerCred)?;
        connect_client(data.raw(), &req.sock, peer_uid)?;
        let path = self.cfg.dir.join(format!("{:03}.{}", id, data.raw()));
        let _ = std::fs::remove_file(&path);
        sys::bind_unix(data.raw(), &UnixAddr::path(&path)).map_err(|error| SetupError::Bind {
            path: path.clone(),
            error,
        })?;
        let unlink = crate::Unlink(path.clone());
        set_mode(&path, self.cfg.mode, self.cfg.group)?;
        big_buffers(data.raw());
        let reply = vde::sockaddr_un_bytes(&UnixAddr::path(&path)).map_err(SetupError::Address)?;
        match sys::send(ctl.raw(), &reply, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            Ok(n) if n == reply.len() => {}
            Ok(n) => return Err(SetupError::ShortReply(n)),
            Err(e) => return Err(SetupError::Reply(e)),
        }
        let data_token = self
            .register(data.raw(), libc::EPOLLIN as u32, Source::PortData(id))
            .map_err(SetupError::Epoll)?;
        let ctl_token = match self.register(
            ctl.raw(),
            (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            Source::PortCtl(id),
        ) {
            Ok(t) => t,
            Err(e) => {
                self.unregister(data.raw(), data_token);
                return Err(SetupError::Epoll(e));
            }
        };
        std::mem::forget(unlink);
        log::info!("port {id}: VDE {} ({})", req.description, path.display());
        let _ = self.core.add_port(
            id,
            Port::new(PortKind::Vde, req.description, vde::VDE_MAX_FRAME),
        );
        self.ports.insert(
            id,
            PortIo {
                data,
                data_token,
                ctl: Some((ctl, ctl_token)),
                path: Some(path),
                queue: VecDeque::new(),
                qbytes: 0,
                want_out: false,
                rings_granted: false,
                rings: None,
            },
        );
        Ok(())
    }

    /// Log (once until a port frees up) that a client was refused for want of a port.
    fn said_full(&mut self, who: &str) {
        if !self.full_said {
            self.full_said = true;
            log::error!(
                "the switch is full: all its {} ports are in use; refused {who:?} (and \
                 refusing others until a port frees up); start the switch with a larger \
                 --numports",
                self.cfg.numports
            );
        }
    }

    fn setup_native(&mut self, fd: Fd, h: NativeHello) -> Result<(), SetupError> {
        let id = match self.alloc_port(0, false) {
            Ok(id) => id,
            Err(e) => {
                // Say why before closing, so that the client can tell its user.
                let r = vde::NativeRefusal {
                    reason: vde::REFUSED_FULL,
                    ports: self.cfg.numports,
                };
                let _ = sys::send(
                    fd.raw(),
                    &r.encode(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                );
                self.said_full(&h.description);
                return Err(SetupError::NoPort(e));
            }
        };
        let max = (h.max_frame as usize).min(vde::NATIVE_MAX_FRAME);
        big_buffers(fd.raw());
        // Flags granted: checksum filling, if asked. A hello without flags gets the old
        // 16-byte welcome.
        let mut granted = h.flags & vde::NATIVE_FLAG_CSUM_FILL;
        if self.core.shortcuts_enabled {
            granted |= h.flags & vde::NATIVE_FLAG_SHORTCUT;
        }
        if self.cfg.rings {
            granted |= h.flags & vde::NATIVE_FLAG_RINGS;
        }
        // Uplink offers only to a client in our network namespace, where the tunnel
        // endpoints are reachable as they are from here (it checks too).
        if self.core.shortcuts_enabled
            && self.cfg.uplink_shortcuts
            && !self.uplinks.is_empty()
            && h.flags & vde::NATIVE_FLAG_UPLINK != 0
            && sys::peer_cred(fd.raw()).is_ok_and(|(pid, _, _)| {
                self.netns.is_some() && vde::netns_of(&pid.to_string()) == self.netns
            })
        {
            granted |= vde::NATIVE_FLAG_UPLINK;
        }
        let w = NativeWelcome {
            port: id,
            max_frame: max as u32,
            flags: (h.flags != 0).then_some(granted),
        };
        match sys::send(
            fd.raw(),
            &w.encode(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        ) {
            Ok(_) => {}
            Err(e) => return Err(SetupError::Welcome(e)),
        }
        let data_token = self
            .register(fd.raw(), libc::EPOLLIN as u32, Source::PortData(id))
            .map_err(SetupError::Epoll)?;
        log::info!("port {id}: native {} max_frame {max}", h.description);
        let mut port = Port::new(PortKind::Native, h.description, max);
        port.csum_fill = granted & vde::NATIVE_FLAG_CSUM_FILL != 0;
        port.shortcut = granted & vde::NATIVE_FLAG_SHORTCUT != 0;
        port.uplink_offers = granted & vde::NATIVE_FLAG_UPLINK != 0;
        let _ = self.core.add_port(id, port);
        self.ports.insert(
            id,
            PortIo {
                data: fd,
                data_token,
                ctl: None,
                path: None,
                queue: VecDeque::new(),
                qbytes: 0,
                want_out: false,
                rings_granted: granted & vde::NATIVE_FLAG_RINGS != 0,
                rings: None,
            },
        );
        Ok(())
    }

    fn remove_port(&mut self, id: PortId) {
        let Some(p) = self.ports.remove(&id) else {
            return;
        };
        self.full_said = false;
        self.unregister(p.data.raw(), p.data_token);
        if let Some((ctl, t)) = &p.ctl {
            self.unregister(ctl.raw(), *t);
        }
        if let Some(path) = &p.path {
            let _ = std::fs::remove_file(path);
        }
        self.core.remove_port(id);
        self.end_revoked();
        log::info!("port {id}: removed");
        if let Some(c) = self.cables.iter_mut().find(|c| c.port == id) {
            c.run.down = Some("vde_plug disconnected".into());
            self.cable_placeholder(id);
        }
    }

    fn port_ctl_ready(&mut self, id: PortId) {
        let Some(fd) = self
            .ports
            .get(&id)
            .and_then(|p| p.ctl.as_ref())
            .map(|(f, _)| f.raw())
        else {
            return;
        };
        let mut buf = [0u8; 256];
        loop {
            match sys::read(fd, &mut buf) {
                Ok(0) => break,
                Ok(_) => continue, // Nothing is expected on it: discard.
                Err(Errno::EINTR) => continue,
                Err(e) if e.is_again() => return,
                Err(_) => break,
            }
        }
        self.remove_port(id);
    }

    fn read_port(&mut self, id: PortId) {
        let mut rx = std::mem::take(&mut self.rxbuf);
        let mut rung = false;
        for _ in 0..BATCH {
            let Some(pio) = self.ports.get(&id) else {
                break;
            };
            let is_native = pio.ctl.is_none();
            // A native client may pass descriptors (its half of the rings); anything else
            // sent along is closed.
            let got = if is_native {
                sys::recvmsg(
                    pio.data.raw(),
                    &mut [std::io::IoSliceMut::new(&mut rx)],
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
                .map(|m| (m.len, m.fds))
            } else {
                sys::recv(
                    pio.data.raw(),
                    &mut rx,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
                .map(|n| (n, Vec::new()))
            };
            let got = got.map(|(n, fds)| {
                if is_native && n < vde::MIN_FRAME && n <= rx.len() {
                    if &rx[..n] == ring::DOORBELL {
                        return (n, Some(false), fds);
                    }
                    if &rx[..n] == ring::SETUP_MAGIC && fds.len() == 2 {
                        return (n, Some(true), fds);
                    }
                }
                (n, None, fds)
            });
            match got {
                Ok((0, _, _)) if is_native => {
                    self.remove_port(id);
                    break;
                }
                Ok((_, Some(false), _)) => rung = true,
                Ok((_, Some(true), fds)) => self.setup_rings(id, &fds),
                Ok((n, None, _)) => self.port_message(id, is_native, &mut rx, n),
                Err(Errno::EINTR) => continue,
                Err(e) if e.is_again() => break,
                Err(e) => {
                    if is_native {
                        log::info!("port {id}: {e}; removed");
                        self.remove_port(id);
                    } else {
                        log::debug!("port {id}: recv: {e}");
                    }
                    break;
                }
            }
        }
        self.rxbuf = rx;
        if rung {
            // Room in the client's ring, maybe: frames queued for it go now.
            self.flush_port(id);
        }
        self.read_ring(id);
    }

    /// A message of `n` bytes (in `rx`) read on port `id`'s socket: a frame, or a native
    /// client's report.
    fn port_message(&mut self, id: PortId, is_native: bool, rx: &mut [u8], n: usize) {
        match n {
            0 => {} // vde2's libvdeplug says goodbye with an empty datagram.
            // Never a frame (shorter than an Ethernet header): a daemon's count.
            n if is_native && let Some(r) = vde::CutReport::parse(&rx[..n.min(rx.len())]) => {
                self.core.note_cut_report(id, r.shortcut, r.made);
            }
            n if is_native && let Some(r) = vde::StatReport::parse(&rx[..n.min(rx.len())]) => {
                self.core.note_stat(id, r);
            }
            n => {
                let max = self.core.port(id).map_or(0, |p| p.max_frame);
                if n > rx.len() || n > max {
                    log::debug!("port {id}: oversized frame ({n} bytes) dropped");
                    self.core.note_toobig(id);
                    return;
                }
                self.forward(id, &mut rx[..n]);
            }
        }
    }

    /// A native client's half of the rings (`vde::NATIVE_FLAG_RINGS`): check and map it,
    /// and answer with ours. A half that is not good is ignored (the client goes on with
    /// its socket; a second one is too).
    fn setup_rings(&mut self, id: PortId, fds: &[Fd]) {
        let max = self.core.port(id).map_or(0, |p| p.max_frame);
        let Some(pio) = self.ports.get_mut(&id) else {
            return;
        };
        if !pio.rings_granted || pio.rings.is_some() {
            log::debug!("port {id}: rings not asked for, or set up already: ignored");
            return;
        }
        let made = Half::create().and_then(|h| {
            let ours = h.dup_fds()?;
            let (tx, rx) = h.join(&fds[0], &fds[1], max)?;
            Ok((ours, tx, rx))
        });
        let (ours, tx, rx) = match made {
            Ok(m) => m,
            Err(e) => {
                log::info!("port {id}: rings: {e}");
                return;
            }
        };
        match ring::send_setup(pio.data.raw(), &[ours[0].raw(), ours[1].raw()]) {
            Ok(_) => {
                log::info!("port {id}: frames through shared-memory rings");
                pio.rings = Some(PortRings { tx, rx });
            }
            Err(e) => log::info!("port {id}: rings: {e}"),
        }
    }

    /// Frames from port `id`'s ring, at most [`BATCH`] (the port is then visited again
    /// before the loop sleeps, [`Server::ring_busy`]). A client that breaks the ring protocol
    /// loses its port.
    fn read_ring(&mut self, id: PortId) {
        let mut rx = std::mem::take(&mut self.rxbuf);
        let mut left = BATCH;
        while let Some(pio) = self.ports.get_mut(&id) {
            let fd = pio.data.raw();
            let Some(r) = &mut pio.rings else {
                break;
            };
            match r.rx.pop(&mut rx) {
                Ok(Some((n, wake))) => {
                    if wake {
                        ring::doorbell(fd);
                    }
                    self.forward(id, &mut rx[..n]);
                    left -= 1;
                    if left == 0 {
                        if !self.ring_busy.contains(&id) {
                            self.ring_busy.push(id);
                        }
                        break;
                    }
                }
                // Empty: ask for a doorbell, unless a frame came in meanwhile.
                Ok(None) if r.rx.wait_data() => {}
                Ok(None) => break,
                Err(e) => {
                    log::info!("port {id}: ring: {e}; removed");
                    self.remove_port(id);
                    break;
                }
            }
        }
        self.rxbuf = rx;
    }

    fn forward(&mut self, ingress: PortId, frame: &mut [u8]) {
        // Checksums still to fill in (sender on a checksum-filling port), done at most once.
        let mut unfilled = self.core.port(ingress).is_some_and(|p| p.csum_fill);
        if let Some(p) = &mut self.pcap {
            if unfilled {
                csum::fill(frame);
                unfilled = false;
            }
            p.write_frame(SystemTime::now(), frame);
        }
        let now = self.now_ms();
        let mut egress = std::mem::take(&mut self.egress);
        let mut scratch = std::mem::take(&mut self.scratch);
        self.core.handle_frame(ingress, frame, now, &mut egress);
        if self.core.capturing() {
            if unfilled {
                csum::fill(frame);
                unfilled = false;
            }
            self.capture_frame(ingress, &egress, frame);
        }
        if self.core.has_revoked() {
            self.end_revoked();
        }
        if let Some(c) = self.core.shortcut_candidate(ingress, frame, &egress) {
            self.offer_shortcut(c, now);
        } else if let Some(c) = self.core.uplink_candidate(ingress, frame, &egress) {
            self.offer_uplink(c, now);
        }
        for e in &egress {
            if unfilled && !self.core.port(e.port).is_some_and(|p| p.csum_fill) {
                csum::fill(frame);
                unfilled = false;
            }
            let bytes = core::render(frame, e.tagging, &mut scratch);
            self.deliver(ingress, e.port, bytes);
        }
        self.egress = egress;
        self.scratch = scratch;
    }

    /// Whether `port` has no frames queued (an offer must not overtake them).
    fn port_idle(&self, port: PortId) -> bool {
        self.ports.get(&port).is_some_and(|io| io.queue.is_empty())
    }

    /// Send `port` an offer (`msg`, `what` for the log) with its end of the socketpair;
    /// whether it went.
    fn send_offer(&self, port: PortId, msg: &[u8], end: &Fd, what: &str) -> bool {
        self.ports.get(&port).is_some_and(|pio| {
            sys::sendmsg(
                pio.data.raw(),
                &[std::io::IoSlice::new(msg)],
                &[end.raw()],
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
            .map_err(|e| log::debug!("port {port}: {what}: {e}"))
            .is_ok()
        })
    }

    /// Make a shortcut between `src` on `ingress` and `dst` on `egress`, and send each port
    /// its end. Nothing happens if either port has frames queued or a send fails.
    fn offer_shortcut(&mut self, c: (core::Mac, PortId, core::Mac, PortId, core::Vlan), now: u64) {
        let (src, ingress, dst, egress, vlan) = c;
        if !self.port_idle(ingress) || !self.port_idle(egress) {
            return;
        }
        let Some((x, y)) = offer_pair("shortcut") else {
            return;
        };
        big_buffers(x.raw());
        big_buffers(y.raw());
        let id = self
            .core
            .add_shortcut((ingress, src), (egress, dst), vlan, now);
        let mut sent = 0;
        for (port, peer, end) in [(ingress, dst, &x), (egress, src, &y)] {
            let flags = if self.cfg.cut_through {
                0
            } else {
                vde::SHORTCUT_NO_CUT
            };
            let msg = vde::ShortcutOffer { peer, id, flags }.encode();
            if !self.send_offer(port, &msg, end, "shortcut offer") {
                break;
            }
            sent += 1;
        }
        self.sc_fds.insert(id, (x, y));
        if sent < 2 {
            // One side may hold its end already: the shutdown tells it.
            self.core.revoke_shortcut(id);
            self.end_revoked();
            return;
        }
        log::info!(
            "shortcut {id}: port {ingress} {} <-> port {egress} {}",
            core::mac_str(&src),
            core::mac_str(&dst)
        );
    }

    /// Offer `src`'s port to send the frames for `dst`, learned behind uplink `egress`,
    /// straight to its tunnel endpoint: one end of a fresh socketpair goes to the port with
    /// an [`vde::UplinkOffer`], carrying the [`vde::UplinkRoute`] as its first message; the
    /// offer is over when the switch shuts its end down (see [`Server::end_revoked`]).
    /// Nothing happens if the port has frames queued, the uplink does not know `dst`'s
    /// endpoint, or a send fails.
    fn offer_uplink(&mut self, c: (core::Mac, PortId, core::Mac, PortId, core::Vlan), now: u64) {
        let (src, ingress, dst, egress, vlan) = c;
        if !self.port_idle(ingress) {
            return;
        }
        let (Some(u), Some(netns)) = (self.uplinks.get(&egress), self.netns) else {
            return;
        };
        let Some(route) = u.up.route(&dst, netns) else {
            return;
        };
        let Some((x, y)) = offer_pair("uplink offer") else {
            return;
        };
        if sys::send(
            x.raw(),
            &route.encode(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
        .is_err()
        {
            return;
        }
        let id = self
            .core
            .add_shortcut((ingress, src), (egress, dst), vlan, now);
        let msg = vde::UplinkOffer { peer: dst, id }.encode();
        let sent = self.send_offer(ingress, &msg, &y, "uplink offer");
        self.sc_fds.insert(id, (x, y));
        if !sent {
            self.core.revoke_shortcut(id);
            self.end_revoked();
            return;
        }
        log::info!(
            "shortcut {id}: port {ingress} {} -> uplink port {egress} {} at {}",
            core::mac_str(&src),
            core::mac_str(&dst),
            route.to
        );
    }

    /// Shut down the sockets of every shortcut the core revoked: both clients see EOF/EPIPE.
    fn end_revoked(&mut self) {
        for id in self.core.take_revoked() {
            if let Some((x, y)) = self.sc_fds.remove(&id) {
                let _ = sys::shutdown(x.raw(), libc::SHUT_RDWR);
                let _ = sys::shutdown(y.raw(), libc::SHUT_RDWR);
                log::info!("shortcut {id}: revoked");
            }
        }
    }

    /// Send a frame from `from` to a port, through an impairment if one applies (the clock is
    /// read only then).
    fn deliver(&mut self, from: PortId, port: PortId, bytes: &[u8]) {
        let copies = if self.core.impairing() {
            let now = self.now_ns();
            self.core.impair(from, port, now, bytes).unwrap_or(1)
        } else {
            1
        };
        for _ in 0..copies {
            self.deliver_now(port, bytes);
        }
    }

    fn deliver_now(&mut self, port: PortId, bytes: &[u8]) {
        if let Some(u) = self.uplinks.get_mut(&port) {
            match u.up.send(bytes) {
                Ok(Sent::Out) => self.core.note_tx(port, bytes.len()),
                Ok(Sent::TooBig) => self.core.note_toobig(port),
                Err(e) => self.close_uplink(port, format!("send: {e}")),
            }
            return;
        }
        let max = self.core.port(port).map_or(usize::MAX, |p| p.max_frame);
        if bytes.len() > max {
            // An IP packet too large for this port (the core let only such frames through):
            // TCP cut into segments, anything else into IP fragments, untagged ones into
            // 1500-byte IP packets on a VDE port (the far side is a kernel or a VM with the
            // usual MTU), as a NIC's offloads do.
            let tagged = bytes.len() >= 14 && bytes[12..14] == [0x81, 0x00];
            let limit = if tagged { max } else { max - 4 };
            let mut segs = std::mem::take(&mut self.segs);
            segs.clear();
            self.frag_id = self.frag_id.wrapping_add(1);
            let cut = ioth_common::offload::segment(bytes, limit, &[], &mut segs).or_else(|| {
                ioth_common::offload::fragment(bytes, limit, &[], &mut segs, self.frag_id)
            });
            match cut {
                Some(unit) => {
                    for seg in segs.chunks(unit) {
                        self.deliver_frame(port, seg);
                    }
                }
                None => self.core.note_toobig(port),
            }
            self.segs = segs;
            return;
        }
        self.deliver_frame(port, bytes);
    }

    /// Send one frame to a port now, or queue it (bounded) until the port takes it.
    fn deliver_frame(&mut self, port: PortId, bytes: &[u8]) {
        let Some(pio) = self.ports.get_mut(&port) else {
            return;
        };
        if pio.queue.is_empty()
            && let Some(r) = &mut pio.rings
        {
            match r.tx.put(bytes, pio.data.raw()) {
                Ok(true) => {
                    self.core.note_tx(port, bytes.len());
                    return;
                }
                // Full: queued until the client rings (it frees room).
                Ok(false) => {}
                Err(e) => {
                    log::info!("port {port}: ring: {e}; removed");
                    self.remove_port(port);
                    return;
                }
            }
        } else if pio.queue.is_empty() {
            match sys::send(
                pio.data.raw(),
                bytes,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            ) {
                Ok(_) => {
                    self.core.note_tx(port, bytes.len());
                    return;
                }
                Err(e) if e.is_again() || e.0 == libc::ENOBUFS => {}
                Err(e) => {
                    log::debug!("port {port}: send: {e}");
                    return;
                }
            }
        }
        if pio.qbytes + bytes.len() > self.cfg.queue {
            self.core.note_drop_queue(port);
            return;
        }
        pio.qbytes += bytes.len();
        pio.queue.push_back(bytes.to_vec());
        self.core.note_queued(port, pio.qbytes);
        if !pio.want_out && pio.rings.is_none() {
            pio.want_out = true;
            let _ = sys::epoll_ctl(
                self.ep.raw(),
                libc::EPOLL_CTL_MOD,
                pio.data.raw(),
                (libc::EPOLLIN | libc::EPOLLOUT) as u32,
                pio.data_token,
            );
        }
    }

    fn flush_port(&mut self, id: PortId) {
        let Some(pio) = self.ports.get_mut(&id) else {
            return;
        };
        while let Some(f) = pio.queue.front() {
            if let Some(r) = &mut pio.rings {
                match r.tx.put(f, pio.data.raw()) {
                    Ok(true) => self.core.note_tx(id, f.len()),
                    Ok(false) => {
                        self.core.note_queued(id, pio.qbytes);
                        return;
                    }
                    Err(e) => {
                        log::info!("port {id}: ring: {e}; removed");
                        self.remove_port(id);
                        return;
                    }
                }
                let len = f.len();
                pio.qbytes -= len;
                pio.queue.pop_front();
                continue;
            }
            match sys::send(pio.data.raw(), f, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
                Ok(_) => {
                    self.core.note_tx(id, f.len());
                }
                Err(e) if e.is_again() || e.0 == libc::ENOBUFS => {
                    self.core.note_queued(id, pio.qbytes);
                    return;
                }
                Err(Errno::EINTR) => continue,
                Err(e) => log::debug!("port {id}: send: {e}"),
            }
            let len = f.len();
            pio.qbytes -= len;
            pio.queue.pop_front();
        }
        self.core.note_queued(id, pio.qbytes);
        if pio.want_out {
            pio.want_out = false;
            let _ = sys::epoll_ctl(
                self.ep.raw(),
                libc::EPOLL_CTL_MOD,
                pio.data.raw(),
                libc::EPOLLIN as u32,
                pio.data_token,
            );
        }
    }

    // ---- management console ----

    fn accept_mgmt(&mut self) {
        let Some(lfd) = self.listener(Source::MgmtListen) else {
            return;
        };
        loop {
            let fd = match sys::accept(lfd, libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
                Ok(fd) => fd,
                Err(Errno::EINTR) => continue,
                Err(e) if e.is_again() => return,
                Err(e) => {
                    log::warn!("mgmt accept: {e}");
                    return;
                }
            };
            if self.mgmts.len() >= MAX_MGMT_CONNS {
                log::warn!("too many console connections");
                continue;
            }
            let Ok(t) = self.register(fd.raw(), libc::EPOLLIN as u32, Source::Mgmt) else {
                continue;
            };
            let mut c = MgmtConn {
                fd,
                lines: LineBuf::default(),
                out: Vec::new(),
                want_out: false,
                close_after_flush: false,
                capture: None,
            };
            c.out.extend_from_slice(mgmt::BANNER.as_bytes());
            c.out.extend_from_slice(mgmt::PROMPT.as_bytes());
            self.mgmts.insert(t, c);
            self.mgmt_flush(t);
        }
    }

    fn close_mgmt(&mut self, token: u64) {
        if let Some(c) = self.mgmts.remove(&token) {
            self.unregister(c.fd.raw(), token);
            if let Some(cap) = c.capture {
                self.core.capture_end(cap.port);
                log::info!(
                    "capture of {} ended ({} frames left out for a slow reader)",
                    captured_what(cap.port),
                    cap.dropped
                );
            }
        }
    }

    /// Copy a frame to the live captures that watch its ingress port or one of its egress
    /// ports, as a pcap record each; a capture whose reader lags leaves frames out.
    fn capture_frame(&mut self, ingress: PortId, egress: &[Egress], frame: &[u8]) {
        let now = SystemTime::now();
        let tokens: Vec<u64> = self
            .mgmts
            .iter()
            .filter(|(_, c)| {
                !c.close_after_flush
                    && c.capture.as_ref().is_some_and(|cap| match cap.port {
                        None => true,
                        Some(p) => p == ingress || egress.iter().any(|e| e.port == p),
                    })
            })
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            let Some(c) = self.mgmts.get_mut(&t) else {
                continue;
            };
            let Some(cap) = c.capture.as_mut() else {
                continue;
            };
            if c.out.len() > CAPTURE_BUF {
                cap.dropped += 1;
                continue;
            }
            let n = frame.len().min(pcap::SNAPLEN as usize);
            c.out
                .extend_from_slice(&pcap::record_header(now, n, frame.len()));
            c.out.extend_from_slice(&frame[..n]);
            if let Some(left) = cap.left.as_mut() {
                *left -= 1;
                if *left == 0 {
                    c.close_after_flush = true;
                }
            }
            self.mgmt_flush(t);
        }
    }

    fn mgmt_ready(&mut self, token: u64, evs: u32) {
        if evs & libc::EPOLLOUT as u32 != 0 {
            self.mgmt_flush(token);
        }
        let Some(fd) = self.mgmts.get(&token).map(|c| c.fd.raw()) else {
            return;
        };
        if evs & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 == 0 {
            return;
        }
        let mut buf = [0u8; 4096];
        let mut lines = Vec::new();
        let mut eof = false;
        for _ in 0..16 {
            match sys::read(fd, &mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    if let Some(c) = self.mgmts.get_mut(&token) {
                        c.lines.feed(&buf[..n], &mut lines);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) if e.is_again() => break,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        for l in lines {
            // A capturing connection's lines are not commands: the stream is all it gets.
            if self.mgmts.get(&token).is_some_and(|c| c.capture.is_some()) {
                break;
            }
            let (text, action) = match l {
                Line::TooLong => (mgmt::error_line(Errno::EMSGSIZE), Action::Continue),
                Line::Text(t) => {
                    let info = mgmt::Info {
                        dir: self.cfg.dir.display().to_string(),
                        numports: self.cfg.numports,
                        pcap: self.cfg.pcap.as_ref().map(|p| p.display().to_string()),
                        queue_limit: self.cfg.queue,
                        http: self.http_addr.map(|a| a.to_string()),
                        http_node: self.status_node_line(),
                        now_ms: self.now_ms(),
                        uptime_s: self.start.elapsed().as_secs(),
                    };
                    // The uplinks' lines as they are now, not as the last tick left them.
                    let ids: Vec<PortId> = self.uplinks.keys().copied().collect();
                    for id in ids {
                        self.uplink_detail(id);
                    }
                    let a = mgmt::execute(&mut self.core, &info, &t);
                    self.end_revoked();
                    self.refresh_status();
                    (a.text, a.action)
                }
            };
            let Some(c) = self.mgmts.get_mut(&token) else {
                return;
            };
            if c.close_after_flush {
                break;
            }
            // One answer may be large (`status/metrics` of a big LAN); a client that sends
            // commands without reading their answers is cut off.
            if c.out.len() > MAX_MGMT_OUT {
                log::warn!("console client does not read its answers; closed");
                self.close_mgmt(token);
                return;
            }
            c.out.extend_from_slice(text.as_bytes());
            match action {
                Action::Continue => c.out.extend_from_slice(mgmt::PROMPT.as_bytes()),
                Action::Logout => c.close_after_flush = true,
                Action::Shutdown => {
                    c.close_after_flush = true;
                    log::info!("shutdown requested on the console");
                    self.running = false;
                }
                Action::Capture { port, count } => {
                    c.out.extend_from_slice(&pcap::file_header());
                    c.capture = Some(Capture {
                        port,
                        left: count,
                        dropped: 0,
                    });
                    self.core.capture_begin(port);
                    self.end_revoked();
                    log::info!("capture of {} begins", captured_what(port));
                }
            }
        }
        if eof {
            self.close_mgmt(token);
            return;
        }
        self.mgmt_flush(token);
    }

    fn mgmt_flush(&mut self, token: u64) {
        let Some(c) = self.mgmts.get_mut(&token) else {
            return;
        };
        while !c.out.is_empty() {
            match sys::send(c.fd.raw(), &c.out, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(Errno::EINTR) => continue,
                Err(e) if e.is_again() => break,
                Err(_) => {
                    self.close_mgmt(token);
                    return;
                }
            }
        }
        if c.out.is_empty() && c.close_after_flush {
            self.close_mgmt(token);
            return;
        }
        let want = !c.out.is_empty();
        if want != c.want_out {
            c.want_out = want;
            let ev = if want {
                libc::EPOLLIN | libc::EPOLLOUT
            } else {
                libc::EPOLLIN
            };
            let _ = sys::epoll_ctl(
                self.ep.raw(),
                libc::EPOLL_CTL_MOD,
                c.fd.raw(),
                ev as u32,
                token,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_read_as_before() {
        assert_eq!(
            resolve_group("no-such-group-here").unwrap_err().to_string(),
            "unknown group no-such-group-here"
        );
        assert_eq!(resolve_group("1234").unwrap(), 1234);
        let dir = std::env::temp_dir().join(format!("ioth-setup-{}", std::process::id()));
        std::fs::write(&dir, b"").unwrap();
        let e = Server::bind(Config {
            dir: dir.clone(),
            mode: 0o600,
            mgmt_mode: 0o600,
            mgmt_group: None,
            dirmode: 0o700,
            dirmode_explicit: false,
            group: None,
            pcap: None,
            numports: 4,
            hub: false,
            queue: 1 << 16,
            shortcuts: false,
            rings: false,
            uplink_shortcuts: false,
            cut_through: false,
            max_macs_per_port: 4,
            max_macs: 16,
            port_lock: false,
            uplinks: Vec::new(),
            seed: None,
            http: None,
            http_node: None,
        })
        .err()
        .unwrap();
        let _ = std::fs::remove_file(&dir);
        assert!(
            matches!(&e, SetupError::NotADirectory(p) if *p == dir),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("{} is not a directory", dir.display())
        );
        let e = SetupError::Bind {
            path: "/tmp/sw/ctl".into(),
            error: Errno::EADDRINUSE,
        };
        assert_eq!(
            e.to_string(),
            format!("bind /tmp/sw/ctl: {}", Errno::EADDRINUSE)
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
