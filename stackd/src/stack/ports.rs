//! Addresses, ports and routing: which addresses are the node's own, the next hop towards a
//! destination (and asking for its link address early), ephemeral ports, bind conflicts
//! (`SO_REUSEADDR`, `SO_REUSEPORT`, `IPV6_V6ONLY`), and `bind`.

use super::*;

impl<D: Link> Net<D> {
    pub(super) fn on_link(&self, a: &IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains(a))
            || matches!(a, IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80)
    }

    /// One of the node's addresses, loopback included.
    pub(super) fn is_own(&self, a: &IpAddr) -> bool {
        self.own.contains(a) || LOOPBACK.contains(a)
    }

    /// Next hop towards `a`, or ENETUNREACH.
    pub(super) fn next_hop(&self, a: &IpAddr) -> Result<IpAddr, Errno> {
        if self.is_own(a) || self.on_link(a) {
            return Ok(*a);
        }
        self.cfg
            .gateways
            .iter()
            .find(|g| g.is_ipv4() == a.is_ipv4())
            .copied()
            .ok_or(Errno(libc::ENETUNREACH))
    }

    /// Ask for the link address of the next hop towards `dst` now, unless we did within
    /// `RESOLICIT` (see `frame::solicitation`: smoltcp's own request may be held back for up to
    /// a second by its cache-wide rate limit).
    pub(super) fn prime_neighbour(&mut self, dst: IpAddr) {
        self.solicit(dst, RESOLICIT);
    }

    /// Whether a connect that began at `start` must give up on its next hop `hop`, as Linux
    /// gives up on a neighbour whose entry failed: a neighbour not heard from (ARP,
    /// neighbour advertisement) within [`REACHABLE`] is probed at once, one heard from is
    /// probed once the SYN went [`SUSPECT`] without an answer; probes go every
    /// [`PROBE_INTERVAL`], and without an answer within [`NEIGHBOUR_TIMEOUT`] the connect
    /// fails with `EHOSTUNREACH`. A node that is gone is found so within seconds, not at the
    /// connect timeout; a node that is there but drops SYNs (full backlog) answers the probe,
    /// and the connect waits as before.
    pub(super) fn neighbour_failed(&mut self, hop: IpAddr, start: Instant) -> bool {
        if self.is_own(&hop) {
            return false;
        }
        let seen = self.seen.get(&hop).copied();
        let since = if seen.is_some_and(|t| t + REACHABLE > start) {
            start + SUSPECT
        } else {
            start
        };
        if self.now < since || seen.is_some_and(|t| t >= since) {
            return false;
        }
        self.solicit(hop, PROBE_INTERVAL);
        self.now >= since + NEIGHBOUR_TIMEOUT
    }

    /// Ask for the link address of the next hop towards `dst`, unless we did within `every`.
    fn solicit(&mut self, dst: IpAddr, every: Duration) {
        let Ok(hop) = self.next_hop(&dst) else {
            return;
        };
        if self.is_own(&hop) || hop.is_multicast() || self.is_subnet_broadcast(&hop) {
            return;
        }
        if let IpAddr::V4(v) = hop
            && v.is_broadcast()
        {
            return;
        }
        let now = self.now;
        if self.solicited.get(&hop).is_some_and(|t| now - *t < every) {
            return;
        }
        let Some(src) = self.iface.get_source_address(&from_ip(hop)).map(to_ip) else {
            return;
        };
        if self.solicited.len() > 4096 {
            self.solicited.clear();
        }
        self.solicited.insert(hop, now);
        // Rare (once per neighbour per RESOLICIT): a fresh buffer; `scratch` may hold a
        // datagram being sent.
        let mut f = Vec::new();
        if frame::solicitation(self.cfg.mac.0, src, hop, &mut f) {
            self.dev.send_now(&f);
        }
    }

    pub(super) fn is_subnet_broadcast(&self, ip: &IpAddr) -> bool {
        let IpAddr::V4(v) = ip else { return false };
        self.cidrs.iter().any(|c| {
            c.addr.is_ipv4() && c.prefix < 31 && c.contains(ip) && {
                let host = u32::MAX >> c.prefix;
                u32::from(*v) & host == host
            }
        })
    }
}

impl<D: Link> Stack<D> {
    pub(super) fn port_used(&self, kind: Kind, port: u16) -> bool {
        if kind == Kind::Tcp && self.leased(port) {
            return true;
        }
        if self
            .socks
            .values()
            .any(|s| s.kind == kind && s.bound.map(|b| b.1) == Some(port))
        {
            return true;
        }
        if kind == Kind::Tcp {
            for (_, so) in self.net.set.iter() {
                if let smoltcp::socket::Socket::Tcp(t) = so
                    && (t.listen_endpoint().port == port
                        || t.local_endpoint().map(|e| e.port) == Some(port))
                {
                    return true;
                }
            }
        }
        false
    }

    /// A free port of the ephemeral range for a socket of `kind`. With many sockets, the TCP
    /// ports in use are gathered at most once a second (not once per connect: 10,000
    /// connects would look at 10,000 sockets each); every TCP port bound since is added to
    /// them, and a port freed since counts as used until they are gathered again.
    pub(super) fn ephemeral(&mut self, kind: Kind) -> Result<u16, Errno> {
        if kind == Kind::Tcp && self.socks.len() >= 256 {
            let (at, mut used) = match self.tcp_ports.take() {
                Some(u) => u,
                None => (self.net.now, {
                    let mut u: HashSet<u16> = self
                        .socks
                        .values()
                        .filter(|s| s.kind == Kind::Tcp)
                        .filter_map(|s| s.bound.map(|b| b.1))
                        .collect();
                    u.extend(self.cut.leased.keys());
                    for (_, so) in self.net.set.iter() {
                        if let smoltcp::socket::Socket::Tcp(t) = so {
                            u.insert(t.listen_endpoint().port);
                            if let Some(e) = t.local_endpoint() {
                                u.insert(e.port);
                            }
                        }
                    }
                    u
                }),
            };
            let mut found = None;
            for _ in 0..self.port_count() {
                let p = self.next_port();
                if used.insert(p) {
                    found = Some(p);
                    break;
                }
            }
            if found.is_none() && at != self.net.now {
                // Ports freed since the gathering may be all that is left: gather again.
                self.tcp_ports = None;
                return self.ephemeral(kind);
            }
            if found.is_none() && self.cut_sweep_all() > 0 {
                // Cut-through records of closed connections held them.
                self.tcp_ports = None;
                return self.ephemeral(kind);
            }
            self.tcp_ports = Some((at, used));
            return found.ok_or(Errno::EADDRINUSE);
        }
        for _ in 0..self.port_count() {
            let p = self.next_port();
            if !self.port_used(kind, p) {
                return Ok(p);
            }
        }
        if kind == Kind::Tcp && self.cut_sweep_all() > 0 {
            return self.ephemeral(kind);
        }
        Err(Errno::EADDRINUSE)
    }

    /// Local ports for connects and binds to port 0: `lo..=hi` (Linux's
    /// `ip_local_port_range`), the next one tried picked at random inside.
    pub fn set_port_range(&mut self, (lo, hi): (u16, u16)) {
        let (lo, hi) = (lo.max(1), hi.max(lo.max(1)));
        self.port_range = (lo, hi);
        let n = u32::from(hi - lo) + 1;
        self.next_ephemeral = lo + (self.rng % u64::from(n)) as u16;
    }

    pub(super) fn port_count(&self) -> u32 {
        u32::from(self.port_range.1 - self.port_range.0) + 1
    }

    /// The next port of the range after the last one tried.
    fn next_port(&mut self) -> u16 {
        let (lo, hi) = self.port_range;
        self.next_ephemeral = if self.next_ephemeral >= hi || self.next_ephemeral < lo {
            lo
        } else {
            self.next_ephemeral + 1
        };
        self.next_ephemeral
    }

    /// Whether binding socket `id` to (addr, port) conflicts with another socket.
    pub(super) fn conflicts(&self, id: u64, addr: Option<IpAddr>, port: u16) -> bool {
        let Some(s) = self.socks.get(&id) else {
            return false;
        };
        let (v4, v6) = s.families();
        if s.kind == Kind::Tcp
            && !s.opts.reuseaddr
            && !s.opts.reuseport
            && self.net.closing_holds(addr, (v4, v6), port)
        {
            return true;
        }
        for (oid, o) in &self.socks {
            if *oid == id || o.kind != s.kind || o.bound.map(|b| b.1) != Some(port) {
                continue;
            }
            // close() is not seen synchronously: a socket whose app end is already closed
            // (reaped on the next loop turn) does not hold its port, as on Linux.
            if sock_gone(self.net.id, *oid, o) {
                continue;
            }
            let oaddr = o.bound.and_then(|b| b.0);
            let (o4, o6) = o.families();
            let overlap = match (addr, oaddr) {
                (None, None) => (v4 && o4) || (v6 && o6),
                (None, Some(b)) => (b.is_ipv4() && v4) || (b.is_ipv6() && v6),
                (Some(a), None) => (a.is_ipv4() && o4) || (a.is_ipv6() && o6),
                (Some(a), Some(b)) => a == b,
            };
            if !overlap {
                continue;
            }
            if s.opts.reuseport && o.opts.reuseport {
                continue;
            }
            if s.opts.reuseaddr && o.opts.reuseaddr && !o.is_listening() && s.kind == Kind::Tcp {
                continue;
            }
            return true;
        }
        false
    }

    pub(super) fn op_bind(&mut self, id: u64, addr: WireAddr) -> Result<Reply, Errno> {
        let s = self.socks.get(&id).ok_or(Errno::EBADF)?;
        let kind = s.kind;
        if kind == Kind::Packet {
            // (The shim binds a packet socket with `ctl::SO_IOTH_PACKET_BIND`.)
            return Err(Errno::EINVAL);
        }
        if s.bound.is_some() && !matches!(kind, Kind::Icmp | Kind::Raw) {
            return Err(Errno::EINVAL);
        }
        let sa = addr.0.ok_or(Errno(libc::EAFNOSUPPORT))?;
        let ip = match s.sock_ip(sa.ip()) {
            Ok(ip) => ip,
            Err(e) if e.0 == libc::ENETUNREACH => return Err(Errno::EINVAL),
            Err(e) => return Err(e),
        };
        let any = ip.is_unspecified();
        if !any && !self.net.is_own(&ip) {
            return Err(Errno(libc::EADDRNOTAVAIL));
        }
        let addr = if any { None } else { Some(ip) };
        if matches!(kind, Kind::Icmp | Kind::Raw) {
            let s = self.socks.get_mut(&id).ok_or(Errno::EBADF)?;
            s.bound = Some((addr, s.bound.map(|b| b.1).unwrap_or(0)));
            return Ok(Reply::Ok);
        }
        let port = if sa.port() == 0 {
            self.ephemeral(kind)?
        } else {
            sa.port()
        };
        if self.conflicts(id, addr, port) {
            return Err(Errno::EADDRINUSE);
        }
        if kind == Kind::Tcp
            && let Some((_, u)) = &mut self.tcp_ports
        {
            u.insert(port);
        }
        let s = self.socks.get_mut(&id).ok_or(Errno::EBADF)?;
        s.bound = Some((addr, port));
        if kind == Kind::Udp {
            self.udp_open(id)?;
        }
        Ok(Reply::Ok)
    }
}
