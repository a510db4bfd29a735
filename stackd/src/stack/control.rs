//! Control requests ([`ctl::Request`]) dispatched to the socket operations of the other
//! files, with the reply (and the fd a request creates). Also `NodeInfo` and `SetNeighbour`
//! (`SIOCSARP`, see [`crate::neigh`]). Reading and answering control connections is the
//! daemon's part ([`crate::daemon`]).

use super::*;

impl<D: Link> Stack<D> {
    /// Carry out one control request at `now`: the reply, and the fd it creates (`Socket`).
    pub fn handle(&mut self, req: Request, fds: Vec<Fd>, now: Instant) -> (Reply, Option<Fd>) {
        self.now = now;
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
        self.dev.hairpin(f);
        self.solicited.insert(IpAddr::V4(ip), self.now);
        Ok(Reply::Ok)
    }

    pub(super) fn with_sock(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut Self, &mut Sock) -> Result<Reply, Errno>,
    ) -> Result<Reply, Errno> {
        let mut s = self.socks.remove(&id).ok_or(Errno::EBADF)?;
        let r = f(self, &mut s);
        self.socks.insert(id, s);
        r
    }

    /// The node's info (`NodeInfo`): lines `key=value`.
    pub fn node_info(&self) -> String {
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
        t.push_str(&format!("switch={}\n", self.link_name));
        t.push_str(&self.dev.info());
        t.push_str(&format!("sockets={}\n", self.socks.len()));
        t.push_str(&format!("lingering={}\n", self.lingering.len()));
        t.push_str(&format!("uptime={}\n", (self.now - self.t0).secs()));
        t
    }
}
