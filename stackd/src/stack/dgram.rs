//! UDP and ICMP echo sockets: opening the smoltcp socket, connected datagram sockets, the
//! pump between smoltcp and the socketpair (one [`DgramHeader`] per datagram), datagrams
//! smoltcp handed to the wrong socket of a port ([`Stack::redispatch`]), and ICMP errors for
//! connected UDP (`crate::icmperr`). Raw ICMP sockets are pumped by `crate::raw`.

use super::*;

/// One direction's buffer of a UDP or ICMP socket (`DGRAM_PACKETS` datagrams, `DGRAM_BYTES`).
pub(super) fn dgram_buffer<H: Clone>() -> smoltcp::storage::PacketBuffer<'static, H> {
    smoltcp::storage::PacketBuffer::new(
        vec![smoltcp::storage::PacketMetadata::EMPTY; DGRAM_PACKETS],
        vec![0; DGRAM_BYTES],
    )
}

impl<D: Link> Net<D> {
    /// Pump a UDP or ICMP socket both ways.
    pub(super) fn pump_dgram(&mut self, s: &mut Sock) {
        let fd = s.dmn.raw();
        if s.kind == Kind::Packet {
            return self.pump_packet(s);
        }
        if s.dg.hdrincl {
            return self.pump_hdrincl(s);
        }
        if s.kind == Kind::Raw {
            let Some(h) = s.dg.h else { return };
            let cx = crate::raw::Ctx {
                set: &mut self.set,
                iface: &mut self.iface,
                ll: config::link_local(&self.cfg.mac),
                scratch: &mut self.scratch,
            };
            let rs = crate::raw::Sock {
                h,
                v6: s.domain == libc::AF_INET6,
                fd,
                opts: &s.opts.other,
                peer: s.dg.peer,
                rd: &mut s.rd,
                wr: &mut s.wr,
            };
            return crate::raw::pump(cx, rs);
        }
        // app → net
        while s.rd {
            // (An unbound UDP socket was opened before: `Stack::service`.)
            let Some(h) = s.dg.h else { break };
            let room = match s.kind {
                Kind::Udp => self.set.get::<udp::Socket>(h).can_send(),
                _ => self.set.get::<icmp::Socket>(h).can_send(),
            };
            if !room {
                break;
            }
            let Some(n) = app_message(fd, &mut self.scratch, &mut s.rd) else {
                break;
            };
            let Ok(hdr) = DgramHeader::decode(&self.scratch[..n]) else {
                continue;
            };
            let dst = match hdr.addr.0.or(s.dg.peer) {
                Some(d) => d,
                None => continue,
            };
            let Ok(ip) = s.sock_ip(dst.ip()) else {
                continue;
            };
            if let IpAddr::V4(v4) = ip
                && (v4.is_broadcast() || self.is_subnet_broadcast(&ip))
                && !s.opts.broadcast
            {
                continue;
            }
            let payload_end = n;
            self.prime_neighbour(ip);
            match s.kind {
                Kind::Udp => {
                    let u = self.set.get_mut::<udp::Socket>(h);
                    let ep = IpEndpoint::new(from_ip(ip), dst.port());
                    let _ = u.send_slice(&self.scratch[DgramHeader::LEN..payload_end], ep);
                }
                _ => {
                    let ident = s.bound.map(|b| b.1).unwrap_or(0);
                    let msg = &mut self.scratch[DgramHeader::LEN..payload_end];
                    if msg.len() < 8 {
                        continue;
                    }
                    msg[4..6].copy_from_slice(&ident.to_be_bytes());
                    msg[2] = 0;
                    msg[3] = 0;
                    let ic = self.set.get_mut::<icmp::Socket>(h);
                    let _ = ic.send_slice(msg, from_ip(ip));
                }
            }
        }
        // net → app
        let Some(h) = s.dg.h else { return };
        while s.wr {
            let (src, data_len) = match s.kind {
                Kind::Udp => {
                    let u = self.set.get_mut::<udp::Socket>(h);
                    match u.peek() {
                        Ok((d, m)) => (ep_to_sa(m.endpoint), d.len()),
                        Err(_) => break,
                    }
                }
                _ => {
                    let ic = self.set.get_mut::<icmp::Socket>(h);
                    if !ic.can_recv() {
                        break;
                    }
                    match ic.recv() {
                        Ok((d, a)) => {
                            let k = d.len().min(self.scratch.len());
                            self.scratch[..k].copy_from_slice(&d[..k]);
                            (SocketAddr::new(to_ip(a), 0), k)
                        }
                        Err(_) => break,
                    }
                }
            };
            let wanted = dgram_wants(s, src);
            let hdr = DgramHeader {
                addr: s.present(src),
                len: data_len as u32,
                flags: 0,
            }
            .encode();
            let r = if !wanted {
                // smoltcp delivers to the first UDP socket on the port, whatever its family
                // or peer: another socket on the port may want it.
                if s.kind == Kind::Udp
                    && let Some((_, port)) = s.bound
                    && let Ok((d, _)) = self.set.get_mut::<udp::Socket>(h).peek()
                    && self.misrouted.len() < 256
                {
                    self.misrouted.push((port, src, d.to_vec()));
                }
                Ok(0)
            } else {
                let payload: &[u8] = match s.kind {
                    Kind::Udp => match self.set.get_mut::<udp::Socket>(h).peek() {
                        Ok((d, _)) => d,
                        Err(_) => break,
                    },
                    _ => &self.scratch[..data_len],
                };
                sys::sendmsg(
                    fd,
                    &[IoSlice::new(&hdr), IoSlice::new(payload)],
                    &[],
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            match r {
                Err(e) if e.is_again() => {
                    s.wr = false;
                    break;
                }
                _ => {
                    if s.kind == Kind::Udp {
                        let _ = self.set.get_mut::<udp::Socket>(h).recv();
                    }
                }
            }
        }
    }
}

impl<D: Link> Stack<D> {
    /// Give a UDP socket its smoltcp socket, bound to its port (an ephemeral one if none).
    pub(super) fn udp_open(&mut self, id: u64) -> Result<(), Errno> {
        let s = self.socks.get(&id).ok_or(Errno::EBADF)?;
        if s.dg.h.is_some() {
            return Ok(());
        }
        let (addr, port) = match s.bound {
            Some(b) => b,
            None => {
                let p = self.ephemeral(Kind::Udp)?;
                (None, p)
            }
        };
        let mut u = udp::Socket::new(dgram_buffer(), dgram_buffer());
        u.bind(IpListenEndpoint {
            addr: addr.map(from_ip),
            port,
        })
        .map_err(|_| Errno::EINVAL)?;
        let (net, s) = self.split(id)?;
        s.bound = Some((addr, port));
        s.dg.h = Some(net.set.add(u));
        s.rd = true;
        self.work.add(id);
        self.kept_report(id);
        Ok(())
    }

    pub(super) fn dgram_connect(&mut self, id: u64, addr: WireAddr) -> Result<Reply, Errno> {
        let Some(sa) = addr.0 else {
            let s = self.socks.get_mut(&id).ok_or(Errno::EBADF)?;
            s.dg.peer = None;
            s.peer = None;
            self.kept_report(id);
            return Ok(Reply::Ok);
        };
        let s = self.socks.get(&id).ok_or(Errno::EBADF)?;
        let ip = s.sock_ip(sa.ip())?;
        self.net.next_hop(&ip)?;
        if s.kind == Kind::Udp {
            self.udp_open(id)?;
        }
        let (net, s) = self.split(id)?;
        let peer = SocketAddr::new(ip, sa.port());
        s.dg.peer = Some(peer);
        s.peer = Some(peer);
        if let Some(src) = net.iface.get_source_address(&from_ip(ip)) {
            let port = s.bound.map(|b| b.1).unwrap_or(0);
            s.local = Some(SocketAddr::new(
                s.bound.and_then(|b| b.0).unwrap_or(to_ip(src)),
                port,
            ));
        }
        self.kept_report(id);
        Ok(Reply::Ok)
    }

    /// ICMP errors for UDP sockets, as Linux's `__udp4_lib_err`/`__udp6_lib_err` deliver
    /// them: to the socket the quoted datagram came from (connected to its destination, else
    /// bound to its port). Without `IP_RECVERR` (`IPV6_RECVERR` for ICMPv6) only hard errors
    /// reach a connected socket; with it every error reaches any socket and is also queued
    /// for `MSG_ERRQUEUE`. Reaching it: an error record on the socket's socketpair, which
    /// the next receive (or `SO_ERROR`) reports.
    pub(super) fn udp_errors(&mut self) {
        let mut errs = Vec::new();
        self.net.icmp_errors.take(&mut self.net.set, &mut errs);
        for e in errs {
            let peer = SocketAddr::new(e.peer.ip().to_canonical(), e.peer.port());
            let on_port = |s: &Sock| s.kind == Kind::Udp && s.bound.map(|b| b.1) == Some(e.port);
            let find = |want: &dyn Fn(&Sock) -> bool| {
                self.socks
                    .iter()
                    .find(|(_, s)| on_port(s) && want(s))
                    .map(|(id, _)| *id)
            };
            let id = find(&|s| s.dg.peer == Some(peer))
                .or_else(|| find(&|s| s.dg.peer.is_none() && dgram_wants(s, peer)));
            let Some(s) = id.and_then(|id| self.socks.get_mut(&id)) else {
                continue;
            };
            let recverr_opt = if e.origin == crate::icmperr::ORIGIN_ICMP6 {
                (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
            } else {
                (libc::IPPROTO_IP, libc::IP_RECVERR)
            };
            let recverr = s
                .opts
                .other
                .get(&recverr_opt)
                .is_some_and(|v| v.iter().any(|b| *b != 0));
            if !(recverr || e.hard && s.dg.peer.is_some()) {
                continue;
            }
            if recverr {
                if s.dg.errq.len() >= ERRQUEUE_MAX {
                    s.dg.errq.pop_front();
                }
                let offender = s.present(SocketAddr::new(e.offender.to_canonical(), 0));
                s.dg.errq.push_back(ctl::ErrQueueEntry {
                    errno: e.errno as u32,
                    origin: e.origin,
                    ty: e.ty,
                    code: e.code,
                    info: e.info,
                    offender,
                    dest: s.present(peer),
                    payload: e.payload,
                });
            }
            let hdr = DgramHeader::error(e.errno).encode();
            let _ = sys::send(s.dmn.raw(), &hdr, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        }
    }

    /// Hand misrouted UDP datagrams to the first other socket on their port that wants them.
    pub(super) fn redispatch(&mut self) {
        for (port, src, data) in std::mem::take(&mut self.net.misrouted) {
            let Some(o) = self.socks.values().find(|o| {
                o.kind == Kind::Udp && o.bound.map(|b| b.1) == Some(port) && dgram_wants(o, src)
            }) else {
                continue;
            };
            let hdr = DgramHeader {
                addr: o.present(src),
                len: data.len() as u32,
                flags: 0,
            }
            .encode();
            let _ = sys::sendmsg(
                o.dmn.raw(),
                &[IoSlice::new(&hdr), IoSlice::new(&data)],
                &[],
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            );
        }
    }
}
/// Whether datagram socket `s` takes a datagram from `src` (its peer, if connected; its
/// family, and IPv4 on a dual-stack socket).
pub(super) fn dgram_wants(s: &Sock, src: SocketAddr) -> bool {
    (match s.dg.peer {
        Some(p) if s.kind == Kind::Udp => p == src,
        Some(p) => p.ip() == src.ip(),
        None => true,
    }) && (s.domain == libc::AF_INET6 && (!s.opts.v6only || src.is_ipv6())
        || s.domain == libc::AF_INET && src.is_ipv4())
}
