//! TCP sockets: listen (a pool of smoltcp sockets in `Listen` per listener, since smoltcp has
//! no accept queue), the backlog kept here, connections handed to the app as accept records
//! with an fd attached, connect (blocking, non-blocking and `ConnectAsync`, with the filler
//! that holds the app's fd unwritable until the handshake ends), and reuse of closed sockets.

use super::*;

impl<D: Link> Net<D> {
    /// A closed TCP socket: a spare one (its state is reset by `listen`/`connect`, its options
    /// here), else a new one.
    pub(super) fn new_tcp(&mut self, opts: &Opts) -> tcp::Socket<'static> {
        let mut t = match self.tcp_spare.pop() {
            Some(t) => {
                // Back in the set, where its counters are read live.
                self.tcp_gone.sub(&t);
                t
            }
            None => tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; TCP_BUF]),
                tcp::SocketBuffer::new(vec![0; TCP_BUF]),
            ),
        };
        t.set_hop_limit(None);
        // Every segment acknowledged at once until the connection is a bulk transfer
        // (`BULK`, `pump_tcp`).
        t.set_ack_delay(None);
        apply_tcp_opts(&mut t, opts);
        t
    }

    /// Remove a TCP socket from the set, keeping it for reuse.
    pub(super) fn free_tcp(&mut self, h: SocketHandle) {
        let so = self.remove_tcp(h);
        keep_spare(&mut self.tcp_spare, &mut self.tcp_gone, so);
    }

    /// Keep LISTEN_IDLE smoltcp sockets in `Listen` in a listener's pool.
    pub(super) fn refill(&mut self, s: &mut Sock) {
        let (addr, port) = s.bound.unwrap_or((None, 0));
        let opts = s.opts.clone();
        let TcpState::Listening(l) = &mut s.tcp else {
            return;
        };
        let mut idle = l
            .pool
            .iter()
            .filter(|h| self.set.get::<tcp::Socket>(**h).state() == tcp::State::Listen)
            .count();
        while idle < LISTEN_IDLE {
            let mut t = self.new_tcp(&opts);
            let ep = IpListenEndpoint {
                addr: addr.map(from_ip),
                port,
            };
            if t.listen(ep).is_err() {
                return;
            }
            // The listener is woken when a pool socket's state changes (handshakes).
            t.register_recv_waker(&s.waker);
            t.register_send_waker(&s.waker);
            l.pool.push(self.set.add(t));
            idle += 1;
        }
    }

    /// Established connections waiting for the app to accept on listener `s`.
    pub(super) fn accept_pending(&self, s: &Sock) -> usize {
        let TcpState::Listening(l) = &s.tcp else {
            return 0;
        };
        // (A kernel listener has no daemon end: the kernel keeps its backlog.)
        if l.kernel.is_some() {
            return l.queue.len();
        }
        let inq = os::outq(s.dmn.raw()).unwrap_or(0);
        l.queue.len() + inq.div_ceil(self.record_cost.max(1))
    }

    /// Read and drop `filler` bytes the app end holds (the filler of a connect).
    pub(super) fn drain(&mut self, s: &Sock, filler: usize) {
        let mut left = filler;
        while left > 0 {
            let n = left.min(self.scratch.len());
            match sys::read(s.dmn.raw(), &mut self.scratch[..n]) {
                Ok(0) => break,
                Ok(k) => left -= k,
                Err(e) if e == Errno::EINTR => {}
                Err(_) => break,
            }
        }
    }

    /// Finish a connect: drain the filler, give the app its buffer back, start pumping
    /// (`err == 0`), or fail the socket with `err`.
    pub(super) fn connect_done(&mut self, s: &mut Sock, err: i32) {
        let TcpState::Connecting(c) = std::mem::replace(&mut s.tcp, TcpState::Done) else {
            return;
        };
        if err != 0 {
            log::debug!(target: "ioth_stackd::connect", "connect failed: errno {err}");
            // Both ways, before the drain makes the app's fd writable: the app reads EOF and
            // its writes fail with EPIPE, as on Linux (our own end then reports HUP, which
            // `app_gone` tells apart from a close), and whoever the writable fd wakes sees
            // the shutdown with it (the shim answers SO_ERROR itself until one shows).
            // What the app's end sent (the filler) can still be read.
            let _ = sys::shutdown(s.dmn.raw(), libc::SHUT_RDWR);
        }
        self.drain(s, c.filler);
        let _ = sys::setsockopt_int(
            c.app.raw(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            s.opts.sndbuf,
        );
        drop(c.app);
        if err == 0 {
            s.rd = true;
            s.wr = true;
            let watch = Watch::new(self.now, self.set.get(c.h), Bounds::of(&s.opts));
            s.tcp = TcpState::Conn(Conn {
                h: c.h,
                app_eof: false,
                fin_to_app: false,
                prev: tcp::State::Established,
                watch: Box::new(watch),
                rx_bytes: 0,
                tx_bytes: 0,
            });
            if let Some(l) = self.set.get::<tcp::Socket>(c.h).local_endpoint() {
                s.local = Some(ep_to_sa(l));
            }
        } else {
            s.so_error = err;
            s.peer = None;
            let t = self.set.get_mut::<tcp::Socket>(c.h);
            // A SYN nobody answered needs no RST (Linux sends none): forget it at once, so
            // that it does not keep asking for an absent neighbour.
            if !matches!(t.state(), tcp::State::Closed | tcp::State::SynSent) {
                t.abort();
                self.lingering.push(c.h.into());
            } else {
                self.free_tcp(c.h);
            }
        }
    }
}

impl<D: Link> Stack<D> {
    /// `Listen` on a socket the shim made (`TcpState::Fresh`), with one fd attached: its
    /// kernel listener (bound to `names::listener_name`: our record keeps its inode, to
    /// tell it from a socket another user binds to that name once it is closed), or, when
    /// that name was taken, the application's socket itself, which then gets a daemon end
    /// through our door and listens the old way (accept records).
    pub(super) fn op_listen_fresh(&mut self, id: u64, fds: Vec<Fd>) -> Result<(), Errno> {
        let Some(s) = self.socks.get(&id) else {
            return Ok(());
        };
        let (TcpState::Fresh(_), Some(fd)) = (&s.tcp, fds.into_iter().next()) else {
            return Ok(());
        };
        let name = sys::getsockname_unix(fd.raw()).ok().flatten();
        if name == Some(names::listener_name(self.net.id, id)) {
            let ino = sys::fstat_id(fd.raw()).ok().map(|i| i.1);
            if let Some(s) = self.socks.get_mut(&id) {
                s.app_ino = ino;
            }
            return Ok(());
        }
        if name != Some(names::socket_name(self.net.id, id)) {
            return Err(Errno::EINVAL);
        }
        self.door_self_attach(id, &fd)
    }

    pub(super) fn op_listen(&mut self, id: u64, backlog: i32) -> Result<Reply, Errno> {
        let s = self.socks.get_mut(&id).ok_or(Errno::EBADF)?;
        if s.kind != Kind::Tcp {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        let backlog = (backlog.max(1) as usize).min(MAX_BACKLOG);
        let kernel = match &mut s.tcp {
            TcpState::Listening(l) => {
                l.backlog = backlog;
                return Ok(Reply::Ok);
            }
            TcpState::Idle => None,
            // A socket the shim made: it listens in the kernel, under its listener name.
            TcpState::Fresh(_) => Some(KernelListener {
                name: names::listener_name(self.net.id, id),
                check: super::cut::Cut::new(id, self.net.now),
            }),
            _ => return Err(Errno::EINVAL),
        };
        if s.bound.is_none() {
            let p = self.ephemeral(Kind::Tcp)?;
            self.socks.get_mut(&id).ok_or(Errno::EBADF)?.bound = Some((None, p));
        }
        let s = self.socks.get(&id).ok_or(Errno::EBADF)?;
        let (addr, port) = s.bound.unwrap_or((None, 0));
        // Two listeners on one address need SO_REUSEPORT on both.
        let (v4, v6) = s.families();
        for (oid, o) in &self.socks {
            if let (true, Some((oa, op))) = (o.is_listening(), o.bound)
                && *oid != id
                && op == port
                && !(s.opts.reuseport && o.opts.reuseport)
                && !sock_gone(self.net.id, *oid, o)
            {
                let (o4, o6) = o.families();
                let overlap = match (addr, oa) {
                    (None, None) => (v4 && o4) || (v6 && o6),
                    (None, Some(b)) => (b.is_ipv4() && v4) || (b.is_ipv6() && v6),
                    (Some(a), None) => (a.is_ipv4() && o4) || (a.is_ipv6() && o6),
                    (Some(a), Some(b)) => a == b,
                };
                if overlap {
                    return Err(Errno::EADDRINUSE);
                }
            }
        }
        let (net, s) = self.split(id)?;
        s.tcp = TcpState::Listening(Listener {
            kernel,
            backlog,
            pool: Vec::new(),
            queue: VecDeque::new(),
            short: false,
        });
        net.refill(s);
        self.kept_report(id);
        self.listeners.push(id);
        self.loud(id);
        self.cut_announce(id);
        Ok(Reply::Ok)
    }

    /// The listening sockets.
    pub(super) fn listening(&self) -> impl Iterator<Item = (u64, &Sock)> {
        self.listeners.iter().filter_map(|id| {
            self.socks
                .get(id)
                .filter(|s| s.is_listening())
                .map(|s| (*id, s))
        })
    }

    /// Refill every listener on `port` (a SYN may have taken any of their pools' sockets).
    pub(super) fn refill_port(&mut self, port: u16) {
        let net = &mut self.net;
        for id in &self.listeners {
            if let Some(s) = self.socks.get_mut(id)
                && s.is_listening()
                && s.bound.map(|b| b.1) == Some(port)
            {
                net.refill(s);
            }
        }
    }

    /// An idle socket of listener `lid`'s pool that takes a SYN for `k` (what smoltcp's
    /// `accepts` checks for a socket in `Listen`).
    pub(super) fn pool_socket(&self, lid: u64, k: &demux::Key) -> Option<SocketHandle> {
        let TcpState::Listening(l) = &self.socks.get(&lid)?.tcp else {
            return None;
        };
        l.pool.iter().copied().find(|h| {
            let t = self.net.set.get::<tcp::Socket>(*h);
            let ep = t.listen_endpoint();
            t.state() == tcp::State::Listen
                && ep.port == k.1
                && ep.addr.is_none_or(|a| to_ip(a) == k.0)
        })
    }

    /// The listener that takes a connection to (dst, port) from `from`: one bound to that
    /// address first. Several such listeners share the port (`SO_REUSEPORT`, as nginx's
    /// workers with `reuseport`): the connection's addresses, hashed with a key of this
    /// node's, choose one, as the kernel's reuseport group does, so connections spread over
    /// them and a client cannot pick one (the SYN and the established connection land on the
    /// same one). Without `from`, the first.
    pub(super) fn match_listener(
        &self,
        dst: IpAddr,
        port: u16,
        from: Option<SocketAddr>,
    ) -> Option<u64> {
        let score = |s: &Sock| {
            let (addr, p) = s.bound?;
            if p != port {
                return None;
            }
            let (v4, v6) = s.families();
            match addr {
                Some(a) if a == dst => Some(2u8),
                Some(_) => None,
                None if (dst.is_ipv4() && v4) || (dst.is_ipv6() && v6) => Some(1),
                None => None,
            }
        };
        let (mut best, mut n, mut first) = (0u8, 0u64, None);
        for (id, s) in self.listening() {
            let Some(sc) = score(s) else { continue };
            if sc > best {
                (best, n, first) = (sc, 0, Some(id));
            }
            if sc == best {
                n += 1;
            }
        }
        let (Some(from), true) = (from, n > 1) else {
            return first;
        };
        let h = reuse_pick(self.reuse_key, from, SocketAddr::new(dst, port));
        let mut k = h % n;
        for (id, s) in self.listening() {
            if score(s) == Some(best) {
                if k == 0 {
                    return Some(id);
                }
                k -= 1;
            }
        }
        first
    }

    /// `ConnectAsync` (see `ctl`): a connect nobody waits for, on an fd the client already
    /// made unwritable with `filler` bytes. Errors become `SO_ERROR` of a failed connect.
    pub(super) fn op_connect_async(
        &mut self,
        id: u64,
        addr: WireAddr,
        app: Option<Fd>,
        filler: u32,
    ) -> Result<Reply, Errno> {
        let s = self.socks.get_mut(&id).ok_or(Errno::EBADF)?;
        if s.app_ino.is_none() {
            // Registered without its fd (`Register` then this, one way both).
            s.app_ino = app
                .as_ref()
                .and_then(|a| sys::fstat_id(a.raw()).ok())
                .map(|i| i.1);
        }
        match &mut s.tcp {
            // Another process's connect won the race: its drain takes our filler too.
            TcpState::Connecting(c) => {
                c.filler += filler as usize;
                return Err(Errno(libc::EALREADY));
            }
            // Nothing sent yet: the first connect's drain takes this filler too.
            TcpState::CutWait(w) => {
                w.filler += filler as usize;
                return Err(Errno(libc::EALREADY));
            }
            // Our end went to the peer daemon with the first filler only: this one goes now
            // (a race of two processes connecting one socket at once, as above).
            TcpState::CutPending(_) => {
                drain_nb(s.dmn.raw(), filler as usize);
                return Err(Errno(libc::EALREADY));
            }
            TcpState::Idle if s.kind == Kind::Tcp => {}
            // A socket the shim made, connected to our door by the client before this was
            // sent (its table said: through TCP): its daemon end waits at the door.
            TcpState::Fresh(_) if s.kind == Kind::Tcp => {
                self.door_ready();
                if !matches!(self.socks.get(&id).map(|s| &s.tcp), Some(TcpState::Idle)) {
                    // (Not at our door: the connect fails, as one that failed later.)
                    if let Some(a) = &app {
                        let _ = sys::shutdown(a.raw(), libc::SHUT_RDWR);
                    }
                    if let Some(s) = self.socks.get_mut(&id) {
                        s.so_error = libc::ENETDOWN;
                        s.tcp = TcpState::Done;
                    }
                    return Err(Errno(libc::ENETDOWN));
                }
            }
            // Cannot happen with the client's mark; the filler is the app's problem then.
            _ => return Err(Errno(libc::EISCONN)),
        }
        if ctl::is_client_id(id) {
            self.cut.async_by_client += 1;
        }
        let mut app = app;
        // The shim posts this only for what its table says goes through TCP (daemon-made
        // sockets may still be cut through, with the peer daemon's agreement).
        let r = self.connect_via(
            id,
            addr,
            &mut app,
            None,
            filler as usize,
            !ctl::is_client_id(id),
        );
        match r {
            Err(e) if e.0 == libc::EINPROGRESS => {}
            // As a connect that failed later (see `connect_done`).
            Err(e) => self.connect_failed(id, e.0, filler as usize, app),
            Ok(_) => {}
        }
        r
    }

    /// `app`: the app's fd (taken once the connect is under way). `prefilled`: filler bytes
    /// the client already wrote (`ConnectAsync`). Cut-through first where it may be
    /// (`cut.rs`).
    pub(super) fn op_connect(
        &mut self,
        id: u64,
        addr: WireAddr,
        app: &mut Option<Fd>,
        notify: Option<Fd>,
        prefilled: usize,
    ) -> Result<Reply, Errno> {
        self.connect_via(id, addr, app, notify, prefilled, true)
    }

    /// [`Stack::op_connect`] through TCP only.
    pub(super) fn op_connect_tcp(
        &mut self,
        id: u64,
        addr: WireAddr,
        app: &mut Option<Fd>,
        notify: Option<Fd>,
        prefilled: usize,
    ) -> Result<Reply, Errno> {
        self.connect_via(id, addr, app, notify, prefilled, false)
    }

    fn connect_via(
        &mut self,
        id: u64,
        addr: WireAddr,
        app: &mut Option<Fd>,
        notify: Option<Fd>,
        prefilled: usize,
        try_cut: bool,
    ) -> Result<Reply, Errno> {
        let (mut notify, mut prefilled) = (notify, prefilled);
        let s = self.socks.get(&id).ok_or(Errno::EBADF)?;
        if s.kind != Kind::Tcp {
            return self.dgram_connect(id, addr);
        }
        let fresh = matches!(s.tcp, TcpState::Fresh(_));
        match s.tcp {
            TcpState::Idle | TcpState::Fresh(_) => {}
            TcpState::Connecting(_) | TcpState::CutPending(_) | TcpState::CutWait(_) => {
                return Err(Errno(libc::EALREADY));
            }
            TcpState::Conn(_) | TcpState::Listening(_) | TcpState::Cut(_) => {
                return Err(Errno(libc::EISCONN));
            }
            TcpState::Done => {
                return Err(if s.peer.is_some() {
                    Errno(libc::EISCONN)
                } else {
                    Errno(libc::ECONNABORTED)
                });
            }
        }
        if app.is_none() {
            return Err(Errno::EINVAL);
        }
        let sa = addr.0.ok_or(Errno(libc::EAFNOSUPPORT))?;
        let mut dst = s.sock_ip(sa.ip())?;
        if dst.is_unspecified() {
            // As on Linux: the unspecified address means this host (loopback).
            dst = LOOPBACK[usize::from(dst.is_ipv6())];
        }
        if sa.port() == 0 {
            return Err(Errno::ECONNREFUSED);
        }
        let hop = self.net.next_hop(&dst)?;
        let src = match s.bound.and_then(|b| b.0) {
            Some(a) => a,
            None => self
                .net
                .iface
                .get_source_address(&from_ip(dst))
                .map(to_ip)
                .ok_or(Errno(libc::ENETUNREACH))?,
        };
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(Errno(libc::ENETUNREACH));
        }
        let lport = match s.bound {
            Some((_, p)) => p,
            None => {
                // No port left: EADDRNOTAVAIL for a connect, as on Linux.
                let p = self.ephemeral(Kind::Tcp).map_err(|e| {
                    if e == Errno::EADDRINUSE {
                        Errno(libc::EADDRNOTAVAIL)
                    } else {
                        e
                    }
                })?;
                self.socks.get_mut(&id).ok_or(Errno::EBADF)?.bound = Some((None, p));
                p
            }
        };
        if fresh {
            // A socket the shim made: connected here, straight to the peer's listener, or
            // to our door, whose other end is then its daemon end.
            let Some(a) = app.as_ref() else {
                return Err(Errno::EINVAL);
            };
            if try_cut && hop == dst {
                let local = SocketAddr::new(src, lport);
                let to = SocketAddr::new(dst, sa.port());
                match self.cut_direct(id, local, to, a) {
                    super::cut::Direct::Done => return Ok(Reply::Ok),
                    super::cut::Direct::Wait => return Err(Errno(ctl::E_CUT_WAIT)),
                    super::cut::Direct::Failed => return Err(Errno::ECONNREFUSED),
                    super::cut::Direct::No => {}
                }
            }
            self.cut_waited(id);
            self.door_self_attach(id, a)?;
        } else if try_cut && hop == dst {
            let local = SocketAddr::new(src, lport);
            let to = SocketAddr::new(dst, sa.port());
            match self.cut_connect(id, local, to, app, &mut notify, prefilled) {
                Ok(()) => return Err(Errno(libc::EINPROGRESS)),
                Err(filled) => prefilled = filled,
            }
        }
        let (net, s) = self.split(id)?;
        let mut t = net.new_tcp(&s.opts);
        t.connect(
            net.iface.context(),
            IpEndpoint::new(from_ip(dst), sa.port()),
            IpListenEndpoint {
                addr: Some(from_ip(src)),
                port: lport,
            },
        )
        .map_err(|_| Errno(libc::EADDRNOTAVAIL))?;
        let Some(app) = app.take() else {
            return Err(Errno::EINVAL);
        };
        let h = net.set.add(t);
        net.demux.learn(h, net.set.get::<tcp::Socket>(h));
        net.prime_neighbour(dst);
        // Hold the app's fd unwritable until the handshake ends (ctl.rs), unless the client
        // already did.
        let count = if prefilled == 0 {
            fill(&app)
        } else {
            prefilled
        };
        s.local = Some(SocketAddr::new(src, lport));
        s.peer = Some(SocketAddr::new(dst, sa.port()));
        s.tcp = TcpState::Connecting(Connecting {
            h,
            app,
            _notify: notify,
            filler: count,
            start: net.now,
            hop,
        });
        self.journal_add(
            id,
            SocketAddr::new(src, lport),
            SocketAddr::new(dst, sa.port()),
        );
        self.loud(id);
        Err(Errno(libc::EINPROGRESS))
    }

    /// A pool socket reached Established, or is still waiting for a socketpair (`unpaired`):
    /// give it a socketpair and queue it on the listener that matches its local address. Out
    /// of descriptors, the connection waits in `unpaired` (and is not lost), and the listener
    /// gets an error record, once per shortage: one `accept` fails with the errno.
    pub(super) fn accepted(&mut self, h: SocketHandle) {
        let t = self.net.set.get::<tcp::Socket>(h);
        let (Some(local), Some(remote)) = (t.local_endpoint(), t.remote_endpoint()) else {
            self.net.set.get_mut::<tcp::Socket>(h).abort();
            self.net.lingering.push(h.into());
            return;
        };
        let (local, remote) = (ep_to_sa(local), ep_to_sa(remote));
        self.net.demux.learn(h, self.net.set.get::<tcp::Socket>(h));
        let Some(lid) = self.match_listener(local.ip(), local.port(), Some(remote)) else {
            log::debug!("accepted {remote} -> {local}: no listener: reset");
            self.net.set.get_mut::<tcp::Socket>(h).abort();
            self.net.lingering.push(h.into());
            return;
        };
        let id = self.new_id();
        let kernel = self
            .socks
            .get(&lid)
            .is_some_and(|l| matches!(&l.tcp, TcpState::Listening(li) if li.kernel.is_some()));
        let made = if kernel {
            self.net.make_connector(id)
        } else {
            self.net.make_pair(libc::SOCK_STREAM, id)
        };
        let (d, a) = match made {
            Ok(p) => p,
            Err(e) if [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM].contains(&e.0) => {
                if let Some(l) = self.socks.get_mut(&lid)
                    && let TcpState::Listening(li) = &mut l.tcp
                    && !li.short
                {
                    log::warn!("accept: socketpair: {e} (connections wait)");
                    li.short = true;
                    li.queue.push_back(Pending {
                        conn: 0,
                        app: None,
                        rec: AcceptRecord::encode_error(e.0),
                    });
                    deliver(l, &mut self.net.delivered);
                    self.work.add(lid);
                }
                self.unpaired.push(h);
                return;
            }
            Err(e) => {
                log::warn!("accept: socketpair: {e}");
                self.net.set.get_mut::<tcp::Socket>(h).abort();
                self.net.lingering.push(h.into());
                return;
            }
        };
        let Some(l) = self.socks.get_mut(&lid) else {
            return;
        };
        self.cut.tcp_accepted += 1;
        let mut s = queue_accepted(
            &mut self.net.delivered,
            l,
            kernel,
            (id, d, self.work.waker(id)),
            a,
            local,
            remote,
        );
        if kernel {
            // Watched once handed over (`Net::delivered`).
            s.kernel_conn = true;
            s.held = true;
        }
        s.wr = true;
        s.rd = true;
        // (Should the listener have failed, its next visit drops it.)
        self.work.add(lid);
        let t = self.net.set.get_mut::<tcp::Socket>(h);
        apply_tcp_opts(t, &s.opts);
        let watch = Watch::new(self.net.now, t, Bounds::of(&s.opts));
        s.tcp = TcpState::Conn(Conn {
            h,
            app_eof: false,
            fin_to_app: false,
            prev: tcp::State::Established,
            watch: Box::new(watch),
            rx_bytes: 0,
            tx_bytes: 0,
        });
        self.socks.insert(id, s);
        self.journal_add(id, local, remote);
        if !kernel {
            self.watch.push((id, libc::EPOLL_CTL_ADD));
        }
        self.work.add(id);
    }
}

pub(super) fn op_shutdown(s: &mut Sock, how: i32) -> Result<Reply, Errno> {
    if !(libc::SHUT_RD..=libc::SHUT_RDWR).contains(&how) {
        return Err(Errno::EINVAL);
    }
    s.app_shut = true;
    match &s.tcp {
        TcpState::Conn(_) | TcpState::Connecting(_) => Ok(Reply::Ok),
        // The app's own shutdown of its fd is all there is to do.
        TcpState::Cut(_) | TcpState::CutPending(_) | TcpState::CutWait(_) => Ok(Reply::Ok),
        TcpState::Listening(_) => Ok(Reply::Ok),
        _ if s.kind != Kind::Tcp => Ok(Reply::Ok),
        _ => Err(Errno(libc::ENOTCONN)),
    }
}

/// A connection from `remote` to `local` accepted on listener `l`: its socket (`id`, its
/// daemon end and waker), with the listener's options and binding; its accept record is
/// queued on the listener with the app's end `app`, and written out if there is room.
/// `kernel`: the listener is a kernel listener of the application's.
pub(super) fn queue_accepted(
    delivered: &mut Vec<u64>,
    l: &mut Sock,
    kernel: bool,
    (id, dmn, waker): (u64, Fd, Waker),
    app: Fd,
    local: SocketAddr,
    remote: SocketAddr,
) -> Sock {
    let mut s = Sock::new(l.domain, Kind::Tcp, dmn, waker, l.owner);
    // (A kernel listener's connection has no app end of ours to know: `app` is a second
    // descriptor of the daemon's own end.)
    if !kernel {
        s.app_ino = sys::fstat_id(app.raw()).ok().map(|i| i.1);
    }
    s.opts = l.opts.clone();
    s.opts.other.clear();
    s.bound = l.bound;
    s.local = Some(local);
    s.peer = Some(remote);
    let rec = AcceptRecord {
        id,
        local: s.present(local),
        peer: s.present(remote),
    };
    if let TcpState::Listening(li) = &mut l.tcp {
        li.short = false;
        li.queue.push_back(Pending {
            conn: id,
            app: Some(app),
            rec: rec.encode(),
        });
    }
    deliver(l, delivered);
    s
}

/// The hash that picks one of the listeners sharing a port for a connection from `from` to
/// `to` (`Stack::match_listener`).
pub(super) fn reuse_pick(key: u64, from: SocketAddr, to: SocketAddr) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(key).hash_one((from, to))
}

/// Write queued accept records (with their fds) to the listener's socketpair. A kernel
/// listener's connections are handed over by connecting to it (the record, the
/// connection's addresses, written first); a full backlog leaves them queued, a listener
/// gone marks the socket hung up.
pub(super) fn deliver(s: &mut Sock, delivered: &mut Vec<u64>) {
    let fd = s.dmn.raw();
    let TcpState::Listening(l) = &mut s.tcp else {
        return;
    };
    if let Some(k) = &l.kernel {
        let owner = s.owner;
        while let Some(p) = l.queue.front() {
            let Some(a) = &p.app else {
                // (No error records: the kernel's accept fails by itself when out of fds.)
                l.queue.pop_front();
                continue;
            };
            match sys::connect_unix(a.raw(), &k.name) {
                Ok(()) if !sys::listened_by(a.raw(), owner) => {
                    // Another user's socket under the name of ours, closed: not for it.
                    log::warn!("kernel listener {:?}: taken by another user", k.name);
                    l.queue.pop_front();
                    s.hup = true;
                    return;
                }
                Ok(()) => {
                    let _ = sys::send(a.raw(), &p.rec, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
                    delivered.push(p.conn);
                    l.queue.pop_front();
                }
                Err(e) if e == Errno::EINTR => {}
                Err(e) if e.is_again() => {
                    s.wr = false;
                    return;
                }
                Err(e) if e.0 == libc::ECONNREFUSED || e.0 == libc::ENOENT => {
                    log::debug!("kernel listener {:?}: {e}", k.name);
                    s.hup = true;
                    return;
                }
                Err(e) => {
                    // (Not a socket we can connect: this connection goes.)
                    log::debug!("kernel listener {:?}: {e}", k.name);
                    l.queue.pop_front();
                }
            }
        }
        return;
    }
    while let Some(p) = l.queue.front() {
        let app: Vec<RawFd> = p.app.iter().map(|a| a.raw()).collect();
        match sys::sendmsg(
            fd,
            &[IoSlice::new(&p.rec)],
            &app,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        ) {
            Ok(_) => {
                l.queue.pop_front();
            }
            Err(e) if e == Errno::EINTR => {}
            Err(e) if e.is_again() => {
                s.wr = false;
                return;
            }
            Err(_) => {
                s.hup = true;
                return;
            }
        }
    }
}

pub(super) fn apply_tcp_opts(t: &mut tcp::Socket<'static>, o: &Opts) {
    t.set_nagle_enabled(o.cork || !o.nodelay);
    // Linux's floor (TCP_RTO_MIN) rather than RFC 6298's 1 s: a loss fast retransmit cannot
    // repair costs 200 ms on a short path, not a second (smoltcp patch 3).
    t.set_rto_min(smoltcp::time::Duration::from_millis(200));
    // Always: even from a native port, the path may cross a VDE cable to a switch that
    // drops (vde_plug to Debian's vde_switch), and a 1 MiB window sent blind into it is lost
    // again at every retransmission timeout.
    // Set once: setting it again starts a fresh controller (cwnd back to its initial 2 KB),
    // and this runs at every setsockopt (nginx sets TCP_NODELAY on a connection in use).
    if t.congestion_control() != tcp::CongestionControl::Cubic {
        t.set_congestion_control(tcp::CongestionControl::Cubic);
    }
    // Probes after KEEPIDLE of silence (and again every KEEPIDLE: smoltcp has one interval);
    // the timeout that ends the connection is the `Watch`'s (timeout.rs).
    let idle = o.keepalive.then(|| Duration::from_secs(o.keepidle as u64));
    if t.keep_alive() != idle {
        t.set_keep_alive(idle);
    }
}

/// Keep a socket removed from the set for reuse if it is a TCP socket and there is room;
/// either way its counters go to `gone`.
pub(super) fn keep_spare(
    spare: &mut Vec<tcp::Socket<'static>>,
    gone: &mut super::stats::TcpCounters,
    so: smoltcp::socket::Socket<'static>,
) {
    if let smoltcp::socket::Socket::Tcp(mut t) = so {
        gone.add(&t);
        if spare.len() < TCP_SPARE {
            // Closed, so that `listen`/`connect` take it (they reset an unopened socket).
            t.abort();
            spare.push(t);
        }
    }
}

/// Kernel accounting bytes one accept record (with its fd) takes in a socketpair, so that
/// `SIOCOUTQ` on a listener tells how many connections wait for `accept`.
pub(super) fn measure_record_cost() -> usize {
    let probe = || -> Result<usize, Errno> {
        let (a, _b) = sys::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC)?;
        let (x, _y) = sys::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC)?;
        let rec = [0u8; ioth_common::ctl::ACCEPT_RECORD_LEN];
        sys::sendmsg(
            a.raw(),
            &[IoSlice::new(&rec)],
            &[x.raw()],
            libc::MSG_DONTWAIT,
        )?;
        os::outq(a.raw())
    };
    match probe() {
        Ok(n) if n > 0 => n,
        _ => ioth_common::ctl::ACCEPT_RECORD_LEN,
    }
}

/// Fill the app's end with zeros until it takes no more (its send buffer at the minimum), so
/// that it stays unwritable until the connect ends; how many bytes went in.
pub(super) fn fill(app: &Fd) -> usize {
    sys::fill_send_buffer(app.raw()).unwrap_or(0)
}

/// Read and drop `n` bytes from `fd` without blocking (its flags are shared with a process
/// that may have made it blocking); how many were there.
pub(super) fn drain_nb(fd: RawFd, mut n: usize) -> usize {
    // A connect's filler (about 4.5 KiB, `sys::fill_send_buffer`) in one call.
    let mut buf = [0u8; 16384];
    let mut got = 0;
    while n > 0 {
        match sys::recv(fd, &mut buf[..n.min(16384)], libc::MSG_DONTWAIT) {
            Ok(0) => break,
            Ok(k) => {
                n -= k;
                got += k;
            }
            Err(e) if e == Errno::EINTR => {}
            Err(_) => break,
        }
    }
    got
}
