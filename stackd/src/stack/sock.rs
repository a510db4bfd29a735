//! The socket table: what a socket is ([`Sock`]: kind, bound and peer addresses, options,
//! readiness flags, TCP state), how one is made (`Socket`: a fresh socketpair whose app end
//! carries the socket's abstract name; `Register`: an end the client made), and how the
//! daemon learns that the app closed its last fd ([`app_gone`]).

use super::*;

/// Door connections kept for a `Register` not read yet: at most this many, this long.
const DOOR_EARLY_MAX: usize = 4096;
const DOOR_EARLY_FOR: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    Tcp,
    Udp,
    Icmp,
    /// Raw ICMPv6 or ICMPv4 (see `crate::raw`).
    Raw,
    /// `AF_PACKET` (see `packet.rs`).
    Packet,
}

pub(super) struct Listener {
    /// A kernel listener (`names::listener_name`, made by the shim): connections are handed
    /// over by connecting to it, and it is looked at for the application's close from time
    /// to time (no descriptor of ours sees it).
    pub(super) kernel: Option<KernelListener>,
    pub(super) backlog: usize,
    pub(super) pool: Vec<SocketHandle>,
    pub(super) queue: VecDeque<Pending>,
    /// An error record was queued since the last connection got its socketpair: one
    /// `accept` per shortage fails (nginx then waits half a second), not one per
    /// connection waiting.
    pub(super) short: bool,
}

pub(super) struct KernelListener {
    pub(super) name: sys::UnixAddr,
    pub(super) check: super::cut::Cut,
}

/// One record for the listener's socketpair: a connection's (its app end attached), or an
/// error record without one (`AcceptRecord::encode_error`).
pub(super) struct Pending {
    /// The connection's socket (a kernel listener's: see `deliver`).
    pub(super) conn: u64,
    pub(super) app: Option<Fd>,
    pub(super) rec: [u8; ctl::ACCEPT_RECORD_LEN],
}

pub(super) struct Connecting {
    pub(super) h: SocketHandle,
    pub(super) app: Fd,
    /// Optional second fd of a Connect request: a blocking connect in the shim reads it and
    /// wakes on EOF, which comes when this is dropped (the handshake ended either way).
    pub(super) _notify: Option<Fd>,
    pub(super) filler: usize,
    pub(super) start: Instant,
    pub(super) hop: IpAddr,
}

pub(super) struct Conn {
    pub(super) h: SocketHandle,
    pub(super) app_eof: bool,
    pub(super) fin_to_app: bool,
    pub(super) prev: tcp::State,
    /// How long it may wait for a silent peer (see `timeout.rs`).
    pub(super) watch: Box<Watch>,
    /// Bytes handed to the application and taken from it, for [`bulk`].
    pub(super) rx_bytes: u64,
    pub(super) tx_bytes: u64,
}

/// Whether a connection that received `rx` bytes and sent `tx` is a bulk download: at least
/// [`BULK`] received, and at most 1/16 as much sent. Then smoltcp acknowledges every second
/// full segment (or after [`ACK_DELAY`]) rather than each one, as Linux's receivers do once
/// out of quick-ack mode: half the ACK frames or fewer (from about 16,000 per GiB across a
/// VXLAN uplink to about 2,600). Otherwise every segment is acknowledged at once: slow start
/// never waits for a delayed ACK, and neither does a request-response exchange, where a
/// sender's Nagle would hold a response's tail until the ACK came. Out-of-order segments are
/// acknowledged at once either way (smoltcp, RFC 5681).
pub(super) fn bulk(rx: u64, tx: u64) -> bool {
    rx >= BULK && tx.saturating_mul(16) < rx
}
pub(super) const BULK: u64 = 1 << 20;
pub(super) const ACK_DELAY: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(10);

pub(super) enum TcpState {
    /// Registered by a client, not attached yet (no daemon end: `ctl`, Register): checked
    /// for the application's close like a cut-through record.
    Fresh(super::cut::Cut),
    Idle,
    Listening(Listener),
    Connecting(Connecting),
    Conn(Conn),
    /// Cut-through (`cut.rs`): waiting for the peer daemon's answer; running from app to app.
    CutWait(super::cut::CutWait),
    CutPending(super::cut::CutPending),
    Cut(super::cut::Cut),
    Done,
}

pub(super) struct Dgram {
    pub(super) h: Option<SocketHandle>,
    pub(super) peer: Option<SocketAddr>,
    /// The error queue (`IP_RECVERR`/`IPV6_RECVERR`), oldest first, at most
    /// [`ERRQUEUE_MAX`] entries.
    pub(super) errq: std::collections::VecDeque<ctl::ErrQueueEntry>,
    /// A packet socket's state.
    pub(super) pk: super::packet::Packet,
    /// A raw `IPPROTO_RAW` socket: the application sends whole IPv4 packets.
    pub(super) hdrincl: bool,
}

/// A UDP socket's error queue holds at most this many errors (Linux bounds it by the
/// receive buffer); older ones are dropped first.
pub(super) const ERRQUEUE_MAX: usize = 64;

pub(super) struct Sock {
    pub(super) domain: i32,
    pub(super) kind: Kind,
    pub(super) dmn: Fd,
    /// Bound local address (`None` = any) and port.
    pub(super) bound: Option<(Option<IpAddr>, u16)>,
    /// Local address a connected/accepted TCP socket uses.
    pub(super) local: Option<SocketAddr>,
    pub(super) peer: Option<SocketAddr>,
    pub(super) opts: Opts,
    pub(super) so_error: i32,
    /// The connection was reset (or timed out) before the app got EOF: its next read at end
    /// of stream reports `so_error` (`ctl::SO_IOTH_READ_ERROR`).
    pub(super) read_error: bool,
    pub(super) rd: bool,
    pub(super) wr: bool,
    /// The app's end reported RDHUP or HUP (it shut its sending side down, or closed): reads
    /// go on until EOF (see `pump_tcp`).
    pub(super) rd_eof: bool,
    pub(super) hup: bool,
    pub(super) tcp: TcpState,
    pub(super) dg: Dgram,
    /// Marks this socket as having work (see `work.rs`).
    pub(super) waker: Waker,
    /// The uid whose socket it is: its creator's (accepted connections: their listener's).
    pub(super) owner: u32,
    /// A connection handed over to a kernel listener (`Listener::kernel`).
    pub(super) kernel_conn: bool,
    /// Not handed over yet (its listener's backlog was full): not watched until then (an
    /// unconnected socket reports a hang-up).
    pub(super) held: bool,
    /// Inode of the application end, when known (see [`Stack::app_closed`]).
    pub(super) app_ino: Option<u64>,
    /// The application asked for a `shutdown` (the shim asks before it shuts its end down):
    /// a hang-up of a connection may then be that, not a close ([`Stack::app_closed`]).
    pub(super) app_shut: bool,
    /// A TCP socket made by `socket` that neither connects through TCP nor listens yet: its
    /// daemon end is watched for the app's close only ([`Stack::take_watch`]).
    pub(super) quiet: bool,
    /// The events its daemon end is watched for now (0: not yet), as the owner last took
    /// them ([`Stack::take_watch`]).
    pub(super) watched: u32,
}

impl Sock {
    /// What its daemon end should be watched for: a quiet socket and a listener with no
    /// accept record waiting for room only for the app's close (a listener's end is
    /// writable again each time the app takes a record: a wake-up per connection, for
    /// nothing); a listener whose records wait, also for room; everything otherwise.
    pub(super) fn watch_events(&self) -> u32 {
        match &self.tcp {
            _ if self.quiet => super::WATCH_CLOSE,
            TcpState::Listening(l) if l.queue.is_empty() => super::WATCH_CLOSE,
            TcpState::Listening(_) => super::WATCH_CLOSE | libc::EPOLLOUT as u32,
            _ => super::WATCH_ALL,
        }
    }

    pub(super) fn new(domain: i32, kind: Kind, dmn: Fd, waker: Waker, owner: u32) -> Sock {
        Sock {
            waker,
            owner,
            app_ino: None,
            app_shut: false,
            kernel_conn: false,
            held: false,
            quiet: false,
            watched: 0,
            domain,
            kind,
            dmn,
            bound: None,
            local: None,
            peer: None,
            opts: Opts::default(),
            so_error: 0,
            read_error: false,
            rd: false,
            wr: false,
            rd_eof: false,
            hup: false,
            tcp: TcpState::Idle,
            dg: Dgram {
                h: None,
                peer: None,
                errq: Default::default(),
                pk: Default::default(),
                hdrincl: false,
            },
        }
    }

    pub(super) fn is_listening(&self) -> bool {
        matches!(self.tcp, TcpState::Listening(_))
    }

    /// Families this socket's wildcard covers.
    pub(super) fn families(&self) -> (bool, bool) {
        if self.domain == libc::AF_INET {
            (true, false)
        } else {
            (!self.opts.v6only, true)
        }
    }

    /// Present an address the way this socket's family does (v4-mapped on AF_INET6).
    /// Link-local IPv6 addresses carry the scope id of the node's one interface (1, `vde0`),
    /// as Linux reports them.
    pub(super) fn present(&self, a: SocketAddr) -> WireAddr {
        match a {
            SocketAddr::V4(_) => WireAddr::presented(a, self.domain == libc::AF_INET6),
            SocketAddr::V6(v6) if v6.ip().is_unicast_link_local() && v6.scope_id() == 0 => {
                WireAddr(Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                    *v6.ip(),
                    v6.port(),
                    v6.flowinfo(),
                    1,
                ))))
            }
            _ => WireAddr(Some(a)),
        }
    }

    /// Translate an address given to this socket (v4-mapped on AF_INET6 → IPv4).
    pub(super) fn sock_ip(&self, a: IpAddr) -> Result<IpAddr, Errno> {
        match (self.domain, a) {
            (libc::AF_INET, IpAddr::V6(_)) => Err(Errno(libc::EAFNOSUPPORT)),
            (libc::AF_INET6, IpAddr::V6(v)) if v.to_ipv4_mapped().is_some() => {
                if self.opts.v6only {
                    Err(Errno(libc::ENETUNREACH))
                } else {
                    Ok(config::unmap(a))
                }
            }
            _ => Ok(a),
        }
    }

    /// `getsockname`.
    pub(super) fn sockname(&self) -> Reply {
        if let Some(l) = self.local {
            return Reply::Addr(self.present(l));
        }
        let a = match self.bound {
            Some((Some(ip), port)) => SocketAddr::new(ip, port),
            Some((None, port)) => self.unspecified(port),
            None => self.unspecified(0),
        };
        Reply::Addr(self.present(a))
    }

    /// `getpeername`.
    pub(super) fn peername(&self) -> Result<Reply, Errno> {
        match self.peer {
            Some(p) => Ok(Reply::Addr(self.present(p))),
            None => Err(Errno(libc::ENOTCONN)),
        }
    }

    pub(super) fn unspecified(&self, port: u16) -> SocketAddr {
        if self.domain == libc::AF_INET6 {
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port)
        } else {
            SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port)
        }
    }
}

impl<D: Link> Net<D> {
    /// A socketpair of type `ty`: (daemon end, app end), the app end bound to its name.
    /// The daemon end of a connection for a kernel listener: a stream socket named as
    /// socket `id` (the accepting shim reads who it is from its peer's name), and a second
    /// descriptor of it that `deliver` connects (and drops).
    pub(super) fn make_connector(&mut self, id: u64) -> Result<(Fd, Fd), Errno> {
        let d = sys::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )?;
        sys::bind_unix(d.raw(), &names::socket_name(self.id, id))?;
        let _ = sys::setsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_SNDBUF, APP_SOCKBUF);
        let a = d.dup_cloexec(0)?;
        Ok((d, a))
    }

    pub(super) fn make_pair(&mut self, ty: i32, id: u64) -> Result<(Fd, Fd), Errno> {
        // The app's end stays blocking (clients other than the shim rely on it); ours gets
        // O_NONBLOCK with one F_SETFL (a fresh socket has no other status flag to keep).
        let (d, a) = sys::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC)?;
        sys::fcntl(d.raw(), libc::F_SETFL, libc::O_NONBLOCK as libc::c_long)?;
        sys::bind_unix(a.raw(), &names::socket_name(self.id, id))?;
        for fd in [d.raw(), a.raw()] {
            let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, APP_SOCKBUF);
            // A stream socket's receive buffer limits nothing (the sender's send buffer does).
            if ty != libc::SOCK_STREAM {
                let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, APP_SOCKBUF);
            }
        }
        Ok((d, a))
    }
}

impl<D: Link> Stack<D> {
    pub(super) fn new_id(&mut self) -> u64 {
        // Random (ctl::daemon_id): socket names are public and must not be predictable.
        loop {
            let id = ioth_common::ctl::daemon_id(mix(&mut self.rng));
            if !self.socks.contains_key(&id) {
                return id;
            }
        }
    }

    /// What `socket(domain, ty, protocol)` makes, or the kernel's errno.
    pub(super) fn sock_kind(domain: i32, ty: i32, protocol: i32) -> Result<Kind, Errno> {
        let ty = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        if domain == libc::AF_PACKET {
            return match ty {
                libc::SOCK_DGRAM | libc::SOCK_RAW => Ok(Kind::Packet),
                _ => Err(Errno(libc::ESOCKTNOSUPPORT)),
            };
        }
        if domain != libc::AF_INET && domain != libc::AF_INET6 {
            return Err(Errno(libc::EAFNOSUPPORT));
        }
        Ok(match (ty, protocol) {
            (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => Kind::Tcp,
            (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => Kind::Udp,
            (libc::SOCK_DGRAM, libc::IPPROTO_ICMP) if domain == libc::AF_INET => Kind::Icmp,
            (libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6) if domain == libc::AF_INET6 => Kind::Icmp,
            (libc::SOCK_RAW, libc::IPPROTO_ICMPV6) if domain == libc::AF_INET6 => Kind::Raw,
            (libc::SOCK_RAW, libc::IPPROTO_ICMP) if domain == libc::AF_INET => Kind::Raw,
            // Whole IPv4 packets, sent only (`packet.rs`, `pump_hdrincl`).
            (libc::SOCK_RAW, libc::IPPROTO_RAW) if domain == libc::AF_INET => Kind::Raw,
            (libc::SOCK_STREAM | libc::SOCK_DGRAM, _) => {
                return Err(Errno(libc::EPROTONOSUPPORT));
            }
            _ => return Err(Errno(libc::ESOCKTNOSUPPORT)),
        })
    }

    /// What `install` does not know: a packet socket's type and protocol, a raw socket's
    /// `IPPROTO_RAW` (no smoltcp socket until it sends).
    fn installed(&mut self, id: u64, ty: i32, protocol: i32) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        match s.kind {
            Kind::Packet => s.dg.pk = super::packet::Packet::new(ty, protocol),
            Kind::Raw if protocol == libc::IPPROTO_RAW => {
                s.dg.hdrincl = true;
                if let Some(h) = s.dg.h.take() {
                    self.net.set.remove(h);
                }
            }
            _ => {}
        }
    }

    /// Packet sockets are the node owner's (and root's) only: a user let in with
    /// `--allow-uid` must not read the owner's frames (Linux asks for `CAP_NET_RAW`).
    fn may_open(kind: Kind, owner: u32) -> Result<(), Errno> {
        if kind == Kind::Packet && owner != 0 && owner != sys::geteuid() {
            return Err(Errno(libc::EPERM));
        }
        Ok(())
    }

    /// `Register`: adopt a socketpair end the client made (see `ctl`), as socket `id`.
    pub(super) fn op_register(
        &mut self,
        id: u64,
        (domain, ty, protocol): (i32, i32, i32),
        fds: Vec<Fd>,
        owner: u32,
    ) -> Result<(), Errno> {
        let mut fds = fds.into_iter();
        if !ctl::is_client_id(id) || self.socks.contains_key(&id) {
            return Err(Errno::EADDRINUSE);
        }
        let kind = Self::sock_kind(domain, ty, protocol)?;
        Self::may_open(kind, owner)?;
        if kind == Kind::Tcp {
            // Only the client's own end: the daemon end comes through the door. Or none,
            // when a `ConnectAsync` follows, with it.
            let app_ino = fds
                .next()
                .and_then(|app| sys::fstat_id(app.raw()).ok())
                .map(|i| i.1);
            self.install(id, domain, kind, Fd::none(), owner);
            let now = self.net.now;
            if let Some(s) = self.socks.get_mut(&id) {
                s.app_ino = app_ino;
                s.tcp = TcpState::Fresh(super::cut::Cut::new(id, now));
            }
            self.installed(id, ty, protocol);
            if let Some((d, _)) = self.door_early.remove(&id) {
                self.door_attach(id, d);
            }
            return Ok(());
        }
        let d = fds.next().ok_or(Errno::EINVAL)?;
        // The client's own end, when it sends it along: only its inode is kept.
        let app_ino = fds
            .next()
            .and_then(|a| sys::fstat_id(a.raw()).ok())
            .map(|i| i.1);
        let want = libc::SOCK_SEQPACKET;
        if sys::getsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_DOMAIN) != Ok(libc::AF_UNIX)
            || sys::getsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_TYPE) != Ok(want)
        {
            return Err(Errno::EINVAL);
        }
        // (A socket's only status flag is O_NONBLOCK: no need to read them first.)
        sys::fcntl(d.raw(), libc::F_SETFL, libc::O_NONBLOCK as libc::c_long)?;
        let _ = sys::setsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_SNDBUF, APP_SOCKBUF);
        let _ = sys::setsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_RCVBUF, APP_SOCKBUF);
        self.install(id, domain, kind, d, owner);
        if let Some(s) = self.socks.get_mut(&id) {
            s.app_ino = app_ino;
        }
        self.installed(id, ty, protocol);
        Ok(())
    }

    pub(super) fn op_socket(
        &mut self,
        (domain, ty, protocol): (i32, i32, i32),
        owner: u32,
    ) -> (Reply, Option<Fd>) {
        let kind = match Self::sock_kind(domain, ty, protocol)
            .and_then(|k| Self::may_open(k, owner).map(|_| k))
        {
            Ok(k) => k,
            Err(e) => return (Reply::Err(e), None),
        };
        let id = self.new_id();
        // Datagram sockets: SOCK_SEQPACKET keeps boundaries like SOCK_DGRAM, and unlike a
        // SOCK_DGRAM pair it reports HUP on our end when the app's last reference closes.
        let pty = if kind == Kind::Tcp {
            libc::SOCK_STREAM
        } else {
            libc::SOCK_SEQPACKET
        };
        let (d, a) = match self.net.make_pair(pty, id) {
            Ok(p) => p,
            Err(e) => return (Reply::Err(e), None),
        };
        self.install(id, domain, kind, d, owner);
        if let Some(s) = self.socks.get_mut(&id) {
            s.app_ino = sys::fstat_id(a.raw()).ok().map(|i| i.1);
        }
        self.installed(id, ty, protocol);
        (Reply::Created(id), Some(a))
    }

    /// A new socket `id` whose socketpair end `d` is ready (non-blocking); the owner is told
    /// to watch it ([`Stack::take_watch`]).
    pub(super) fn install(&mut self, id: u64, domain: i32, kind: Kind, d: Fd, owner: u32) {
        self.watch.push((id, libc::EPOLL_CTL_ADD));
        let mut s = Sock::new(domain, kind, d, self.work.waker(id), owner);
        s.quiet = kind == Kind::Tcp;
        if kind == Kind::Icmp {
            let ident = self.alloc_ident();
            let mut so = icmp::Socket::new(dgram_buffer(), dgram_buffer());
            let _ = so.bind(icmp::Endpoint::Ident(ident));
            s.dg.h = Some(self.net.set.add(so));
            s.bound = Some((None, ident));
        }
        if kind == Kind::Packet {
            self.packets.push(id);
        }
        if kind == Kind::Raw {
            let v6 = s.domain == libc::AF_INET6;
            s.dg.h = Some(crate::raw::open(&mut self.net.set, v6));
            s.bound = Some((None, 0));
        }
        self.socks.insert(id, s);
        self.work.add(id);
    }

    /// Take the connections waiting at the node's door (`set_door`): each one the daemon end
    /// of a registered TCP socket that is about to connect or listen (`ctl`, Register). One
    /// whose peer is not such a socket of ours (named by `names::socket_name`, not attached
    /// yet, its process of the socket's owner, root or ours) is dropped.
    pub fn door_ready(&mut self) {
        if self.door < 0 {
            return;
        }
        loop {
            let d = match sys::accept(self.door, libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) {
                Ok(d) => d,
                Err(e) if e == Errno::EINTR => continue,
                Err(_) => return,
            };
            let id = sys::getpeername_unix(d.raw())
                .ok()
                .flatten()
                .and_then(|n| names::parse_socket_name(&n))
                .and_then(|(node, id)| (node == self.net.id).then_some(id));
            let Some(id) = id else {
                continue;
            };
            if self.socks.contains_key(&id) {
                self.door_attach(id, d);
            } else if self.door_early.len() < DOOR_EARLY_MAX {
                // Its `Register` is still on its way (read after this, or on another
                // control connection): the socket takes it when it comes.
                self.door_early.insert(id, (d, self.net.now));
            }
        }
    }

    /// Attach `d`, taken at the door, as socket `id`'s daemon end, if `id` waits for one and
    /// `d`'s peer runs as its owner, root or us.
    fn door_attach(&mut self, id: u64, d: Fd) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        let uid = sys::peer_cred(d.raw()).map(|c| c.1);
        if !matches!(s.tcp, TcpState::Fresh(_))
            || !uid.is_ok_and(|u| u == 0 || u == s.owner || u == sys::geteuid())
        {
            return;
        }
        let _ = sys::setsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_SNDBUF, APP_SOCKBUF);
        s.dmn = d;
        s.tcp = TcpState::Idle;
        self.watch.push((id, libc::EPOLL_CTL_ADD));
        self.work.add(id);
    }

    /// Give socket `id`, a fresh one, its daemon end: connect its application's end `app`
    /// (unconnected) to our own door and take the other end there.
    pub(super) fn door_self_attach(&mut self, id: u64, app: &Fd) -> Result<(), Errno> {
        if self.door < 0 {
            return Err(Errno(libc::ENETDOWN));
        }
        let door = names::node_door_name(self.net.id);
        for _ in 0..2 {
            match super::cut::connect_nb(app.raw(), &door) {
                Ok(()) => break,
                Err(e) if e.is_again() => self.door_ready(),
                Err(e) => return Err(e),
            }
        }
        self.door_ready();
        match self.socks.get(&id).map(|s| &s.tcp) {
            Some(TcpState::Idle) => Ok(()),
            _ => Err(Errno(libc::ENETDOWN)),
        }
    }

    /// Drop door connections whose socket never registered (see [`Stack::door_ready`]).
    pub(super) fn door_expire(&mut self) {
        let now = self.net.now;
        self.door_early
            .retain(|_, (_, t)| now < *t + DOOR_EARLY_FOR);
    }

    /// The node's door, a listening stream socket (see [`Stack::door_ready`]).
    pub fn set_door(&mut self, fd: RawFd) {
        self.door = fd;
    }

    pub(super) fn alloc_ident(&mut self) -> u16 {
        loop {
            self.next_ident = self.next_ident.wrapping_add(1);
            let i = self.next_ident;
            if i != 0
                && !self
                    .socks
                    .values()
                    .any(|s| s.kind == Kind::Icmp && s.bound.map(|b| b.1) == Some(i))
            {
                return i;
            }
        }
    }
}

impl<D: Link> Stack<D> {
    /// The uid whose socket `id` is.
    pub fn owner(&self, id: u64) -> Option<u32> {
        self.socks.get(&id).map(|s| s.owner)
    }

    /// The daemon end of socket `id` (tests: to shrink a listener's room for records).
    #[cfg(test)]
    pub fn daemon_end(&self, id: u64) -> Option<RawFd> {
        self.socks.get(&id).map(|s| s.dmn.raw())
    }

    /// Whether `fd` is the application end of socket `id`: a socket bound to the socket's
    /// name. Names are unique, and the application end holds that name while it is open, so
    /// whoever can pass this fd holds the socket.
    ///
    /// A kernel listener (`names::listener_name`) proves it only if it is the very socket
    /// that listens (its inode): its name outlives it in nobody's hands, and the daemon
    /// learns of its close late.
    pub fn proves(&self, id: u64, fd: &Fd) -> bool {
        let Some(s) = self.socks.get(&id) else {
            return false;
        };
        let name = sys::getsockname_unix(fd.raw()).ok().flatten();
        name == Some(names::socket_name(self.net.id, id))
            || (name == Some(names::listener_name(self.net.id, id))
                && s.app_ino.is_some()
                && sys::fstat_id(fd.raw()).ok().map(|i| i.1) == s.app_ino)
    }
}

impl<D: Link> Stack<D> {
    /// Whether the application closed socket `id` for good (its daemon end saw HUP, which
    /// both directions shut down also gives). The name probe ([`app_gone`]) says "closed"
    /// when the name is free; a name that is taken may have been bound by another user after
    /// the close (names are public), so it counts as ours only if the socket holding it is
    /// our application end (its inode, from `/proc/net/unix`). Without an inode or a readable
    /// `/proc/net/unix` the name decides.
    ///
    /// The table is read once until the next poll (`unix_names`): closes come in bursts (a
    /// client resetting 10,000 connections), and each read costs the whole table.
    pub(super) fn app_closed(&mut self, id: u64) -> bool {
        if let Some(s) = self.socks.get(&id)
            && matches!(s.tcp, TcpState::Conn(_))
            && !s.app_shut
        {
            // A hang-up is both directions of our end shut: the receiving one by the app's
            // close or `shutdown(SHUT_WR)` (or ours, which only a reset or a failed connect
            // does, and those leave `Conn`). The app shuts down only through the shim, which
            // tells us first (`app_shut`): so this one is its close, and no probe is needed
            // (the `sock_diag` question scans every unix socket of the host: a sixth of a
            // busy daemon's time at 10,000 connections/s).
            return true;
        }
        if let Some(s) = self.socks.get(&id)
            && s.kernel_conn
        {
            // Handed to a kernel listener: the application's end has no name of its own
            // (ours holds the socket's). Its inode, as our end's peer, is 0 once it is
            // closed (`sock_diag`); a hang-up may also be both ways shut down.
            return sys::fstat_id(s.dmn.raw())
                .ok()
                .and_then(|(_, ino)| unix_peer_ino(ino))
                .is_none_or(|peer| peer == 0);
        }
        if app_gone(self.net.id, id, self.socks.get(&id).is_none_or(may_listen)) {
            return true;
        }
        let Some(ino) = self.socks.get(&id).and_then(|s| s.app_ino) else {
            return false;
        };
        let prefix = format!("@ioth/{:016x}/", self.net.id);
        if self.unix_names.is_none() {
            let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
                return false;
            };
            self.unix_names = Some(names_by_inode(&table, &prefix));
        }
        let name = proc_name(self.net.id, id);
        self.unix_names
            .as_ref()
            .is_some_and(|m| m.get(&ino) != Some(&name))
    }
}

/// Socket `id`'s name (`names::socket_name`) as `/proc/net/unix` shows it: '@' for the
/// leading NUL.
pub(super) fn proc_name(node: u64, id: u64) -> String {
    proc_form(&names::socket_name(node, id)).unwrap_or_default()
}

/// An abstract name as `/proc/net/unix` shows it ('@' for the leading NUL).
fn proc_form(name: &sys::UnixAddr) -> Option<String> {
    match name {
        sys::UnixAddr::Abstract(b) => Some(format!("@{}", String::from_utf8_lossy(b))),
        _ => None,
    }
}

/// The names starting with `prefix` in `/proc/net/unix` (`table`), by inode.
pub(super) fn names_by_inode(table: &str, prefix: &str) -> HashMap<u64, String> {
    // Columns: Num RefCount Protocol Flags Type St Inode [Path].
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && f[7].starts_with(prefix))
                .then(|| Some((f[6].parse::<u64>().ok()?, f[7].to_string())))
                .flatten()
        })
        .collect()
}

/// Whether socket `id` (`s`) of node `node` is closed in every process ([`app_gone`], or
/// [`kernel_listener_gone`]).
pub(super) fn sock_gone(node: u64, id: u64, s: &Sock) -> bool {
    match &s.tcp {
        TcpState::Listening(l) if l.kernel.is_some() => kernel_listener_gone(node, id, s.app_ino),
        _ => app_gone(node, id, may_listen(s)),
    }
}

/// Whether socket `s` may be (or become) a kernel listener, under its listener name: not
/// once it connected.
pub(super) fn may_listen(s: &Sock) -> bool {
    !matches!(
        s.tcp,
        TcpState::Connecting(_)
            | TcpState::Conn(_)
            | TcpState::CutWait(_)
            | TcpState::CutPending(_)
            | TcpState::Cut(_)
    )
}

/// Whether the kernel listener of socket `id` of node `node` (inode `ino`) is closed: its
/// name is free, or held by another socket (anyone may bind a freed name: only ours, by its
/// inode in `/proc/net/unix`, counts).
pub(super) fn kernel_listener_gone(node: u64, id: u64, ino: Option<u64>) -> bool {
    let name = names::listener_name(node, id);
    if !sys::unix_name_taken(&name) {
        return true;
    }
    let (Some(ino), Ok(table)) = (ino, std::fs::read_to_string("/proc/net/unix")) else {
        return false;
    };
    let Some(want) = proc_form(&name) else {
        return false;
    };
    names_by_inode(&table, &want)
        .get(&ino)
        .is_none_or(|n| *n != want)
}

/// Whether the app's end of socket `id` of node `node` is closed in every process: the kernel
/// frees its abstract name (`names::socket_name`) when the last reference goes away. A socket
/// the shim made may be a kernel listener now, under its listener name
/// (`names::listener_name`), unless it connected ([`may_listen`]).
pub(super) fn app_gone(node: u64, id: u64, may_listen: bool) -> bool {
    !(sys::unix_name_taken(&names::socket_name(node, id))
        || (may_listen
            && ctl::is_client_id(id)
            && sys::unix_name_taken(&names::listener_name(node, id))))
}

/// The inode of the peer of the unix socket whose inode is `ino` (`NETLINK_SOCK_DIAG`,
/// `UDIAG_SHOW_PEER`): 0 once the peer is closed; `None` if the kernel does not say.
pub(super) fn unix_peer_ino(ino: u64) -> Option<u32> {
    // One socket for the daemon's life (a connection closed is one question: 10,000 at once
    // would open and close as many); dropped after any failure.
    thread_local! {
        static DIAG: std::cell::RefCell<(Option<Fd>, u32)> = const { std::cell::RefCell::new((None, 0)) };
    }
    DIAG.with(|d| {
        let mut d = d.borrow_mut();
        if d.0.is_none() {
            let nl = sys::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 4);
            d.0 = Some(nl.ok()?);
        }
        d.1 = d.1.wrapping_add(1);
        let seq = d.1;
        let r = d.0.as_ref().and_then(|nl| ask_peer_ino(nl, ino, seq));
        if r.is_none() {
            d.0 = None;
        }
        r
    })
}

/// One `SOCK_DIAG_BY_FAMILY` question on `nl` (see [`unix_peer_ino`]), numbered `seq`.
fn ask_peer_ino(nl: &Fd, ino: u64, seq: u32) -> Option<u32> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_PEER: u32 = 4;
    const UNIX_DIAG_PEER: u16 = 2;
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req.extend_from_slice(&seq.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.push(libc::AF_UNIX as u8);
    req.push(0); // protocol
    req.extend_from_slice(&0u16.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&u32::try_from(ino).ok()?.to_ne_bytes());
    req.extend_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]); // no cookie
    sys::send(nl.raw(), &req, 0).ok()?;
    let mut b = [0u8; 512];
    let n = sys::recv(nl.raw(), &mut b, 0).ok()?;
    let b = &b[..n];
    let u16_at = |i: usize| Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?));
    let seq_back = u32::from_ne_bytes(b.get(8..12)?.try_into().ok()?);
    if u16_at(4)? != SOCK_DIAG_BY_FAMILY || seq_back != seq {
        return None;
    }
    // nlmsghdr (16), unix_diag_msg (16), then attributes (len u16, type u16, value).
    let mut i = 32;
    while i + 4 <= b.len() {
        let (len, ty) = (u16_at(i)? as usize, u16_at(i + 2)?);
        if len < 4 {
            return None;
        }
        if ty == UNIX_DIAG_PEER && len >= 8 {
            return Some(u32::from_ne_bytes(b.get(i + 4..i + 8)?.try_into().ok()?));
        }
        i += (len + 3) & !3;
    }
    // No peer attribute: no peer at all.
    Some(0)
}

#[cfg(test)]
mod tests {
    use super::names_by_inode;

    #[test]
    fn a_unix_sockets_peer_inode_is_0_once_the_peer_is_closed() {
        use ioth_common::sys;
        let (a, b) =
            sys::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC).unwrap();
        let ino = |fd: &sys::Fd| sys::fstat_id(fd.raw()).unwrap().1;
        assert_eq!(
            super::unix_peer_ino(ino(&a)),
            Some(ino(&b) as u32),
            "the peer while it is open"
        );
        let _ = sys::shutdown(b.raw(), libc::SHUT_RDWR);
        assert_eq!(
            super::unix_peer_ino(ino(&a)),
            Some(ino(&b) as u32),
            "shut down"
        );
        let ia = ino(&a);
        drop(b);
        assert_eq!(super::unix_peer_ino(ia), Some(0), "closed");
    }

    fn holds_name(table: &str, name: &str, ino: u64) -> bool {
        names_by_inode(table, "@ioth/00000000000000aa/").get(&ino) == Some(&name.to_string())
    }

    #[test]
    fn a_name_counts_only_with_its_inode() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00000000 0001 03 4242 @ioth/00000000000000aa/7
0000000000000000: 00000002 00000000 00000000 0001 03 999 @ioth/00000000000000aa/8
0000000000000000: 00000002 00000000 00000000 0001 03 77
";
        assert!(holds_name(table, "@ioth/00000000000000aa/7", 4242));
        // The same name held by another socket (bound after the close): not ours.
        assert!(!holds_name(table, "@ioth/00000000000000aa/7", 4243));
        assert!(!holds_name(table, "@ioth/00000000000000aa/9", 4242));
    }
}
