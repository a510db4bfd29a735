//! The socket table: what a socket is ([`Sock`]: kind, bound and peer addresses, options,
//! readiness flags, TCP state), how one is made (`Socket`: a fresh socketpair whose app end
//! carries the socket's abstract name; `Register`: an end the client made), and how the
//! daemon learns that the app closed its last fd ([`app_gone`]).

use super::*;

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
    pub(super) backlog: usize,
    pub(super) pool: Vec<SocketHandle>,
    pub(super) queue: VecDeque<Pending>,
    /// An error record was queued since the last connection got its socketpair: one
    /// `accept` per shortage fails (nginx then waits half a second), not one per
    /// connection waiting.
    pub(super) short: bool,
}

/// One record for the listener's socketpair: a connection's (its app end attached), or an
/// error record without one (`AcceptRecord::encode_error`).
pub(super) struct Pending {
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
    /// Inode of the application end, when known (see [`Stack::app_closed`]).
    pub(super) app_ino: Option<u64>,
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
            SocketAddr::V4(v4) if self.domain == libc::AF_INET6 => WireAddr(Some(SocketAddr::new(
                IpAddr::V6(v4.ip().to_ipv6_mapped()),
                v4.port(),
            ))),
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
        let d = fds.next().ok_or(Errno::EINVAL)?;
        // The client's own end, when it sends it along: only its inode is kept.
        let app_ino = fds
            .next()
            .and_then(|a| sys::fstat_id(a.raw()).ok())
            .map(|i| i.1);
        if !ctl::is_client_id(id) || self.socks.contains_key(&id) {
            return Err(Errno::EADDRINUSE);
        }
        let kind = Self::sock_kind(domain, ty, protocol)?;
        Self::may_open(kind, owner)?;
        let want = if kind == Kind::Tcp {
            libc::SOCK_STREAM
        } else {
            libc::SOCK_SEQPACKET
        };
        if sys::getsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_DOMAIN) != Ok(libc::AF_UNIX)
            || sys::getsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_TYPE) != Ok(want)
        {
            return Err(Errno::EINVAL);
        }
        // (A socket's only status flag is O_NONBLOCK: no need to read them first.)
        sys::fcntl(d.raw(), libc::F_SETFL, libc::O_NONBLOCK as libc::c_long)?;
        let _ = sys::setsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_SNDBUF, APP_SOCKBUF);
        if want != libc::SOCK_STREAM {
            let _ = sys::setsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_RCVBUF, APP_SOCKBUF);
        }
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
    pub fn proves(&self, id: u64, fd: &Fd) -> bool {
        self.socks.contains_key(&id)
            && sys::getsockname_unix(fd.raw()).ok().flatten()
                == Some(names::socket_name(self.net.id, id))
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
        if app_gone(self.net.id, id) {
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
    match names::socket_name(node, id) {
        sys::UnixAddr::Abstract(b) => format!("@{}", String::from_utf8_lossy(&b)),
        _ => String::new(),
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

/// Whether the app's end of socket `id` of node `node` is closed in every process: the kernel
/// frees its abstract name (`names::socket_name`) when the last reference goes away.
pub(super) fn app_gone(node: u64, id: u64) -> bool {
    let Ok(probe) = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) else {
        return true;
    };
    sys::bind_unix(probe.raw(), &names::socket_name(node, id)) != Err(Errno::EADDRINUSE)
}

#[cfg(test)]
mod tests {
    use super::names_by_inode;

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
