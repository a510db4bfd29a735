//! Control requests ([`ctl::Request`]) dispatched to the socket operations of the other
//! files, with the reply (and the fd a request creates). Also `NodeInfo`, `SetNeighbour`
//! (`SIOCSARP`, see `crate::neigh`) and `Subscribe` (rtnetlink events, see `rtnl.rs`). Reading and answering control connections is the
//! daemon's part (`crate::daemon`).

use super::*;

impl<D: Link> Stack<D> {
    /// [`Stack::handle`] of a request that came on control connection `cid` (the ports a
    /// `Lease` gives are its: [`Stack::ctl_closed`]).
    pub fn handle_on(
        &mut self,
        cid: u64,
        req: Request,
        fds: Vec<Fd>,
        caller: u32,
        now: Instant,
    ) -> (Reply, Option<Fd>) {
        self.cut.asker = cid;
        let r = self.handle(req, fds, caller, now);
        self.cut.asker = 0;
        r
    }

    /// Carry out one control request of `caller` (a uid: new sockets are its) at `now`: the
    /// reply, and the fd it creates (`Socket`). Who may ask is the owner's business
    /// ([`crate::daemon`]).
    pub fn handle(
        &mut self,
        req: Request,
        fds: Vec<Fd>,
        caller: u32,
        now: Instant,
    ) -> (Reply, Option<Fd>) {
        self.net.now = now;
        // Whatever the request did to its socket, the next poll looks at it.
        let id = req.id();
        if self.socks.contains_key(&id) {
            self.work.add(id);
            // A cut-through connect the application sees finished (its end writable) is
            // (an option set does not depend on it: nginx and wrk set TCP_NODELAY on every
            // new connection, a poll each).
            if !matches!(req, Request::SetSockOpt { .. }) {
                self.cut_settle(id);
            }
        }
        let r = match req {
            Request::Hello { .. } => Ok(Reply::Created(self.net.id)),
            Request::Socket {
                domain,
                ty,
                protocol,
            } => return self.op_socket((domain, ty, protocol), caller),
            Request::NodeInfo => Ok(Reply::Bytes(self.node_info().into_bytes())),
            Request::Table => return self.op_table(),
            Request::Lease { count } => self.op_lease(count, caller),
            Request::Closed { conns } => {
                self.op_closed(conns, caller);
                Ok(Reply::Ok)
            }
            Request::Connected { id, local, peer } => {
                self.op_connected(id, local, peer);
                Ok(Reply::Ok)
            }
            Request::Register {
                id,
                domain,
                ty,
                protocol,
            } => {
                if let Err(e) = self.op_register(id, (domain, ty, protocol), fds, caller) {
                    log::debug!("register {id:x}: {e}");
                }
                Ok(Reply::Ok)
            }
            Request::Adopt {
                id,
                lid,
                local,
                peer,
                ino,
            } => {
                self.op_adopt(id, lid, (local, peer), ino, caller);
                Ok(Reply::Ok)
            }
            Request::Bind { id, addr } => self.op_bind(id, addr),
            Request::Listen { id, backlog } => self
                .op_listen_fresh(id, fds)
                .and_then(|_| self.op_listen(id, backlog)),
            Request::Connect { id, addr } => {
                let mut fds = fds.into_iter();
                let (mut app, notify) = (fds.next(), fds.next());
                self.op_connect(id, addr, &mut app, notify, 0)
            }
            Request::ConnectAsync { id, addr, filler } => {
                let app = fds.into_iter().next();
                let r = self.op_connect_async(id, addr, app, filler);
                log::debug!("async connect {id:x}: {r:?}");
                Ok(Reply::Ok)
            }
            Request::GetSockName { id } => self.split(id).map(|(_, s)| s.sockname()),
            Request::GetPeerName { id } => self.split(id).and_then(|(_, s)| s.peername()),
            Request::GetSockOpt {
                id,
                level,
                name,
                len,
            } => self.split(id).and_then(|(net, s)| {
                net.op_getsockopt(s, level, name).map(|mut v| {
                    v.truncate(len as usize);
                    Reply::Bytes(v)
                })
            }),
            Request::SetSockOpt {
                id,
                level,
                name,
                value,
            } => {
                let r = self.split(id).and_then(|(net, s)| {
                    net.op_setsockopt(s, level, name, &value)?;
                    Ok(s.kind == Kind::Udp && s.opts.remember(level, name, &value))
                });
                if r == Ok(true) && self.kept_ids.contains(&id) {
                    // The keeper's copy of a bound UDP socket carries its options too (sent
                    // again only when they changed).
                    self.kept_report(id);
                }
                r.map(|_| Reply::Ok)
            }
            Request::Shutdown { id, how } => self.split(id).and_then(|(_, s)| op_shutdown(s, how)),
            Request::SetNeighbour { addr, mac } => self.net.set_neighbour(addr, mac),
            Request::Subscribe { groups } => match fds.into_iter().next() {
                Some(fd) => self.net.rtnl.subscribe(fd, groups).map(|_| Reply::Ok),
                None => Err(Errno::EINVAL),
            },
            Request::Join { id } => match fds.first() {
                Some(fd) if self.proves(id, fd) => Ok(Reply::Ok),
                _ => Err(Errno(libc::EACCES)),
            },
        };
        (r.unwrap_or_else(Reply::Err), None)
    }
}

impl<D: Link> Net<D> {
    /// `SetNeighbour` (`SIOCSARP`): see `crate::neigh`.
    pub(super) fn set_neighbour(&mut self, addr: WireAddr, mac: [u8; 6]) -> Result<Reply, Errno> {
        let Some(IpAddr::V4(ip)) = addr.0.map(|a| config::unmap(a.ip())) else {
            return Err(Errno(libc::EAFNOSUPPORT));
        };
        if !crate::neigh::valid_mac(&mac) {
            return Err(Errno::EINVAL);
        }
        let ours = self
            .cidrs
            .iter()
            .find(|c| c.addr.is_ipv4() && c.contains(&IpAddr::V4(ip)))
            .map(|c| c.addr);
        let Some(IpAddr::V4(ours)) = ours else {
            return Err(Errno(libc::ENETUNREACH));
        };
        let f = crate::neigh::arp_reply_frame(self.cfg.mac.0, ours, mac, ip);
        self.dev.hairpin(f);
        self.solicited.insert(IpAddr::V4(ip), self.now);
        Ok(Reply::Ok)
    }
}

impl<D: Link> Stack<D> {
    /// The node's info (`NodeInfo`): lines `key=value`.
    pub fn node_info(&self) -> String {
        let n = &self.net;
        let mut t = String::new();
        t.push_str(&format!("node={:016x}\n", n.id));
        t.push_str(&format!("mac={}\n", n.cfg.mac));
        t.push_str(&format!("mtu={}\n", n.ip_mtu));
        for c in &n.cidrs {
            t.push_str(&format!("addr={c}\n"));
        }
        t.push_str(&format!("addr={}/64\n", config::link_local(&n.cfg.mac)));
        for g in &n.cfg.gateways {
            t.push_str(&format!("gw={g}\n"));
        }
        for d in &n.cfg.dns {
            t.push_str(&format!("dns={d}\n"));
        }
        if let Some(name) = &n.cfg.name {
            t.push_str(&format!("name={name}\n"));
        }
        t.push_str(&format!("switch={}\n", n.link_name));
        t.push_str(&n.dev.info());
        t.push_str(&self.cut_info());
        t.push_str(&format!("sockets={}\n", self.socks.len()));
        t.push_str(&format!("netlink_subscribers={}\n", n.rtnl.len()));
        t.push_str(&format!("lingering={}\n", n.lingering.len()));
        t.push_str(&format!("uptime={}\n", (n.now - n.t0).secs()));
        t
    }
}
