//! The control server: accepting control connections (peer credentials checked), reading
//! requests ([`ctl::Request`]), dispatching them to the socket operations of the other files,
//! and writing replies (with an fd attached where the request creates one). Also `NodeInfo`
//! and `SetNeighbour` (`SIOCSARP`, see [`crate::neigh`]).

use super::*;

impl Node {
    pub(super) fn accept_ctl(&mut self) {
        for i in 0..self.ctl_listeners.len() {
            loop {
                let l = self.ctl_listeners[i].raw();
                let c = match sys::accept(l, libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) {
                    Ok(c) => c,
                    Err(e) if e == Errno::EINTR => continue,
                    Err(_) => break,
                };
                // Same user, root, or any user when the node itself runs as root: a server
                // started as root (nginx) drops privileges in its workers, which must still
                // reach their node.
                match os::peer_cred(c.raw()) {
                    Ok((_, uid, _)) if uid == 0 || [uid, 0].contains(&sys::geteuid()) => {}
                    other => {
                        log::warn!("control connection refused: credentials {other:?}");
                        continue;
                    }
                }
                let cid = self.next_ctl;
                self.next_ctl += 1;
                if sys::epoll_ctl(
                    self.ep.raw(),
                    libc::EPOLL_CTL_ADD,
                    c.raw(),
                    libc::EPOLLIN as u32,
                    T_CTL | cid,
                )
                .is_ok()
                {
                    self.ctl_conns.insert(cid, c);
                }
            }
        }
    }

    pub(super) fn ctl_readable(&mut self, cid: u64) {
        let mut buf = [0u8; MAX_MSG];
        for _ in 0..64 {
            let Some(fd) = self.ctl_conns.get(&cid).map(|f| f.raw()) else {
                return;
            };
            let got = match sys::recvmsg(fd, &mut [IoSliceMut::new(&mut buf)], libc::MSG_DONTWAIT) {
                Ok(g) => g,
                Err(e) if e.is_again() => return,
                Err(e) if e == Errno::EINTR => continue,
                Err(_) => {
                    self.ctl_conns.remove(&cid);
                    return;
                }
            };
            if got.len == 0 && got.fds.is_empty() {
                self.ctl_conns.remove(&cid);
                return;
            }
            // A one-way request: a well-formed SetSockOpt with ctl::FLAG_NO_REPLY, a Register.
            let mut silent = false;
            let (reply, fd_out) = if got.flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
                (Reply::Err(Errno::EPROTO), None)
            } else {
                match Request::decode(&buf[..got.len]) {
                    Ok(req) => {
                        silent = matches!(req, Request::SetSockOpt { .. })
                            && ioth_common::ctl::no_reply(&buf[..got.len])
                            || matches!(
                                req,
                                Request::Register { .. } | Request::ConnectAsync { .. }
                            );
                        log::debug!("ctl {cid}: {req:?}");
                        let id = req.id();
                        if ctl::is_client_id(id)
                            && !self.socks.contains_key(&id)
                            && !matches!(req, Request::Register { .. })
                            && !self.draining
                        {
                            // Its Register may wait on another connection (sent before a fork).
                            self.draining = true;
                            let others: Vec<u64> = self
                                .ctl_conns
                                .keys()
                                .copied()
                                .filter(|c| *c != cid)
                                .collect();
                            for o in others {
                                self.ctl_readable(o);
                            }
                            self.draining = false;
                        }
                        self.handle(req, got.fds)
                    }
                    Err(e) => (Reply::Err(e), None),
                }
            };
            log::debug!("ctl {cid}: -> {reply:?}");
            if silent {
                continue;
            }
            let msg = reply.encode();
            let fds: Vec<RawFd> = fd_out.iter().map(|f| f.raw()).collect();
            let r = sys::retry(|| {
                sys::sendmsg(
                    fd,
                    &[IoSlice::new(&msg)],
                    &fds,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            });
            if r.is_err() {
                self.ctl_conns.remove(&cid);
                return;
            }
        }
    }

    pub(super) fn handle(&mut self, req: Request, fds: Vec<Fd>) -> (Reply, Option<Fd>) {
        let r = match req {
            Request::Hello { .. } => Ok(Reply::Created(self.id)),
            Request::Socket {
                domain,
                ty,
                protocol,
            } => return self.op_socket(domain, ty, protocol),
            Request::NodeInfo => Ok(Reply::Bytes(self.node_info().into_bytes())),
            Request::Register {
                id,
                domain,
                ty,
                protocol,
            } => {
                if let Err(e) = self.op_register(id, domain, ty, protocol, fds) {
                    log::debug!("register {id:x}: {e}");
                }
                Ok(Reply::Ok)
            }
            Request::Bind { id, addr } => self.with_sock(id, |n, s| n.op_bind(s, addr)),
            Request::Listen { id, backlog } => self.with_sock(id, |n, s| n.op_listen(s, backlog)),
            Request::Connect { id, addr } => {
                let mut fds = fds.into_iter();
                let (mut app, notify) = (fds.next(), fds.next());
                self.with_sock(id, |n, s| n.op_connect(s, addr, &mut app, notify, 0))
            }
            Request::ConnectAsync { id, addr, filler } => {
                let app = fds.into_iter().next();
                let r = self.with_sock(id, |n, s| n.op_connect_async(s, addr, app, filler));
                log::debug!("async connect {id:x}: {r:?}");
                Ok(Reply::Ok)
            }
            Request::GetSockName { id } => self.with_sock(id, |n, s| n.op_sockname(s)),
            Request::GetPeerName { id } => self.with_sock(id, |_, s| match s.peer {
                Some(p) => Ok(Reply::Addr(s.present(p))),
                None => Err(Errno(libc::ENOTCONN)),
            }),
            Request::GetSockOpt {
                id,
                level,
                name,
                len,
            } => self.with_sock(id, |n, s| {
                n.op_getsockopt(s, level, name).map(|mut v| {
                    v.truncate(len as usize);
                    Reply::Bytes(v)
                })
            }),
            Request::SetSockOpt {
                id,
                level,
                name,
                value,
            } => self.with_sock(id, |n, s| {
                n.op_setsockopt(s, level, name, &value).map(|_| Reply::Ok)
            }),
            Request::Shutdown { id, how } => self.with_sock(id, |n, s| n.op_shutdown(s, how)),
            Request::SetNeighbour { addr, mac } => self.set_neighbour(addr, mac),
        };
        (r.unwrap_or_else(Reply::Err), None)
    }

    /// `SetNeighbour` (`SIOCSARP`): see [`crate::neigh`].
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
        self.dev.hairpin.push_back(f);
        self.solicited.insert(IpAddr::V4(ip), Instant::now());
        Ok(Reply::Ok)
    }

    pub(super) fn with_sock(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut Node, &mut Sock) -> Result<Reply, Errno>,
    ) -> Result<Reply, Errno> {
        let mut s = self.socks.remove(&id).ok_or(Errno::EBADF)?;
        let r = f(self, &mut s);
        self.socks.insert(id, s);
        r
    }

    pub(super) fn node_info(&self) -> String {
        let mut t = String::new();
        t.push_str(&format!("node={:016x}\n", self.id));
        t.push_str(&format!("mac={}\n", self.cfg.mac));
        t.push_str(&format!("mtu={}\n", self.ip_mtu));
        for c in &self.cidrs {
            t.push_str(&format!("addr={c}\n"));
        }
        t.push_str(&format!("addr={}/64\n", config::link_local(&self.cfg.mac)));
        for g in &self.cfg.gateways {
            t.push_str(&format!("gw={g}\n"));
        }
        for d in &self.cfg.dns {
            t.push_str(&format!("dns={d}\n"));
        }
        if let Some(n) = &self.cfg.name {
            t.push_str(&format!("name={n}\n"));
        }
        t.push_str(&format!("switch={}\n", self.opts.switch_loc));
        t.push_str(&format!("port={}\n", self.port_no));
        t.push_str(&format!(
            "kind={}\n",
            match self.port_kind {
                PortKind::Native => "native",
                PortKind::Vde => "vde",
            }
        ));
        t.push_str(&self.dev.shortcut_info());
        t.push_str(&format!("sockets={}\n", self.socks.len()));
        t.push_str(&format!("lingering={}\n", self.lingering.len()));
        t.push_str(&format!("clients={}\n", self.ctl_conns.len()));
        t.push_str(&format!("uptime={}\n", self.t0.elapsed().as_secs()));
        t
    }
}
