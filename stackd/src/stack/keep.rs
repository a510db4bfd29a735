//! What outlives the daemon: its listeners and bound UDP sockets (see `crate::keeper`).
//!
//! When the stack keeps listeners (`Stack::keep_listeners`), every socket that starts to
//! listen, and every UDP socket once bound (and again when it connects or disconnects), is
//! reported with a duplicate of its daemon end ([`Kept::Listen`]), and every one that goes
//! away ([`Kept::Drop`]). The keeper holds those ends, so that the application's socket
//! never sees EOF if the daemon dies (a UDP server would read it as a datagram forever),
//! and a new daemon takes them back with [`Stack::restore_socket`]: same socket id, owner,
//! address, port, backlog (a listener) or peer (a connected UDP socket) and the binding
//! options. Datagrams still queued on the socketpair survive too, and a UDP socket's other
//! options (`SO_BROADCAST`, `IP_RECVERR`, multicast groups...) are set again: the last value
//! of each, the groups still joined ([`Opts::replay`](super::sockopt::Opts)).

use super::*;

/// A listening TCP socket or a bound UDP socket as the keeper stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptSocket {
    /// A UDP socket (else a TCP listener).
    pub udp: bool,
    /// A connected UDP socket's peer.
    pub peer: Option<SocketAddr>,
    pub id: u64,
    pub domain: i32,
    pub owner: u32,
    pub app_ino: Option<u64>,
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub backlog: u32,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    /// A kernel listener (`Listener::kernel`): the application holds it, its fd here is a
    /// placeholder.
    pub kernel: bool,
    /// A UDP socket's options, to be set again (`Opts::replay`).
    pub opts: Vec<(i32, i32, Vec<u8>)>,
}

/// A change for the keeper ([`Stack::take_kept`]).
pub enum Kept {
    /// A new listener or bound UDP socket (or one whose peer changed), with a duplicate of
    /// its daemon end.
    Listen(KeptSocket, Fd),
    /// Socket `id` is gone.
    Drop(u64),
}

impl KeptSocket {
    /// The fixed part; the options follow, each as level and name (4 bytes each), the
    /// value's length (2) and the value.
    pub const LEN: usize = 8 + 4 + 4 + 8 + 1 + 16 + 2 + 4 + 1 + 1 + WireAddr::LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::LEN];
        b[0..8].copy_from_slice(&self.id.to_le_bytes());
        b[8..12].copy_from_slice(&self.domain.to_le_bytes());
        b[12..16].copy_from_slice(&self.owner.to_le_bytes());
        b[16..24].copy_from_slice(&self.app_ino.unwrap_or(0).to_le_bytes());
        let (fam, ip) = match self.addr {
            None => (0u8, [0u8; 16]),
            Some(IpAddr::V4(v)) => (4, v.to_ipv6_mapped().octets()),
            Some(IpAddr::V6(v)) => (6, v.octets()),
        };
        b[24] = fam;
        b[25..41].copy_from_slice(&ip);
        b[41..43].copy_from_slice(&self.port.to_le_bytes());
        b[43..47].copy_from_slice(&self.backlog.to_le_bytes());
        b[47] = self.reuseaddr as u8
            | (self.reuseport as u8) << 1
            | (self.v6only as u8) << 2
            | (self.kernel as u8) << 3;
        b[48] = self.udp as u8;
        let mut peer = Vec::with_capacity(WireAddr::LEN);
        WireAddr(self.peer).encode(&mut peer);
        b[49..].copy_from_slice(&peer);
        for (level, name, v) in &self.opts {
            b.extend_from_slice(&level.to_le_bytes());
            b.extend_from_slice(&name.to_le_bytes());
            b.extend_from_slice(&(v.len() as u16).to_le_bytes());
            b.extend_from_slice(v);
        }
        b
    }

    pub fn decode(b: &[u8]) -> Option<KeptSocket> {
        if b.len() < Self::LEN {
            return None;
        }
        let (b, mut rest) = b.split_at(Self::LEN);
        let mut opts = Vec::new();
        while !rest.is_empty() {
            let n = u16::from_le_bytes(rest.get(8..10)?.try_into().ok()?) as usize;
            let level = i32::from_le_bytes(rest[0..4].try_into().ok()?);
            let name = i32::from_le_bytes(rest[4..8].try_into().ok()?);
            opts.push((level, name, rest.get(10..10 + n)?.to_vec()));
            rest = &rest[10 + n..];
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let ip: [u8; 16] = b[25..41].try_into().ok()?;
        let ip6 = std::net::Ipv6Addr::from(ip);
        let addr = match b[24] {
            0 => None,
            4 => Some(IpAddr::V4(ip6.to_ipv4_mapped()?)),
            6 => Some(IpAddr::V6(ip6)),
            _ => return None,
        };
        let ino = u64_at(16);
        Some(KeptSocket {
            udp: b[48] != 0,
            peer: WireAddr::decode(&b[49..]).ok()?.0,
            id: u64_at(0),
            domain: u32_at(8) as i32,
            owner: u32_at(12),
            app_ino: (ino != 0).then_some(ino),
            addr,
            port: u16::from_le_bytes([b[41], b[42]]),
            backlog: u32_at(43),
            reuseaddr: b[47] & 1 != 0,
            reuseport: b[47] & 2 != 0,
            v6only: b[47] & 4 != 0,
            kernel: b[47] & 8 != 0,
            opts,
        })
    }
}

impl<D: Link> Stack<D> {
    /// Report listeners to the owner from now on ([`Stack::take_kept`]).
    pub fn keep_listeners(&mut self) {
        self.keeping = true;
    }

    /// Listeners that started or sockets that went since the last call.
    pub fn take_kept(&mut self) -> Vec<Kept> {
        std::mem::take(&mut self.kept)
    }

    /// Report socket `id` to the keeper, with a duplicate of its daemon end, if it is a
    /// listener or a bound UDP socket: when it starts to listen, when a UDP socket is bound
    /// and when its peer changes (the keeper replaces what it had).
    pub(super) fn kept_report(&mut self, id: u64) {
        if !self.keeping {
            return;
        }
        let Some(s) = self.socks.get(&id) else {
            return;
        };
        let Some((addr, port)) = s.bound else {
            return;
        };
        let (udp, backlog, kernel) = match &s.tcp {
            TcpState::Listening(l) => (false, l.backlog as u32, l.kernel.is_some()),
            _ if s.kind == Kind::Udp && s.dg.h.is_some() => (true, 0, false),
            _ => return,
        };
        let fd = if kernel {
            sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
        } else {
            s.dmn.dup_cloexec(0)
        };
        let Ok(fd) = fd else {
            log::warn!("socket {id:x}: no fd for the keeper");
            return;
        };
        let k = KeptSocket {
            udp,
            peer: if udp { s.dg.peer } else { None },
            id,
            domain: s.domain,
            owner: s.owner,
            app_ino: s.app_ino,
            addr,
            port,
            backlog,
            reuseaddr: s.opts.reuseaddr,
            reuseport: s.opts.reuseport,
            v6only: s.opts.v6only,
            kernel,
            // (Only a UDP socket remembers any.)
            opts: s.opts.replay.clone(),
        };
        self.kept_ids.insert(id);
        self.kept.push(Kept::Listen(k, fd));
    }

    /// Record connections in `j` from now on (see `crate::journal`).
    pub fn set_journal(&mut self, j: crate::journal::Journal) {
        self.journal = Some(j);
    }

    /// Connection `id` runs between `local` and `remote`.
    pub(super) fn journal_add(&mut self, id: u64, local: SocketAddr, remote: SocketAddr) {
        if let Some(j) = &mut self.journal {
            j.add(id, local, remote);
        }
    }

    /// Socket `id` is gone (the keeper forgets it if it was a listener).
    pub(super) fn kept_drop(&mut self, id: u64) {
        if let Some(j) = &mut self.journal {
            j.remove(id);
        }
        if self.kept_ids.remove(&id) {
            self.kept.push(Kept::Drop(id));
        }
    }

    /// Take back a listener or UDP socket a previous daemon of this node had: `dmn` is its
    /// daemon end.
    pub fn restore_socket(&mut self, k: &KeptSocket, dmn: Fd, now: Instant) {
        self.net.now = now;
        if self.socks.contains_key(&k.id) {
            return;
        }
        if k.udp {
            self.restore_udp(k, dmn);
            return;
        }
        let kernel = k.kernel.then(|| KernelListener {
            name: names::listener_name(self.net.id, k.id),
            check: super::cut::Cut::new(k.id, now),
        });
        let dmn = if kernel.is_some() { Fd::none() } else { dmn };
        let mut s = self.kept_sock(k, dmn, Kind::Tcp);
        s.tcp = TcpState::Listening(Listener {
            kernel,
            backlog: (k.backlog as usize).clamp(1, MAX_BACKLOG),
            pool: Vec::new(),
            queue: VecDeque::new(),
            short: false,
        });
        self.net.refill(&mut s);
        self.socks.insert(k.id, s);
        self.listeners.push(k.id);
        self.kept_ids.insert(k.id);
        self.watch.push((k.id, libc::EPOLL_CTL_ADD));
        self.work.add(k.id);
        log::info!(
            "listener {:x} restored on {:?} port {}",
            k.id,
            k.addr,
            k.port
        );
    }
}

impl<D: Link> Stack<D> {
    /// The socket a kept one was, on its daemon end `dmn`: id, owner, binding, options.
    fn kept_sock(&mut self, k: &KeptSocket, dmn: Fd, kind: Kind) -> Sock {
        let _ = sys::fcntl(dmn.raw(), libc::F_SETFL, libc::O_NONBLOCK as libc::c_long);
        let mut s = Sock::new(k.domain, kind, dmn, self.work.waker(k.id), k.owner);
        s.app_ino = k.app_ino;
        s.bound = Some((k.addr, k.port));
        s.opts.reuseaddr = k.reuseaddr;
        s.opts.reuseport = k.reuseport;
        s.opts.v6only = k.v6only;
        s.wr = true;
        s
    }

    fn restore_udp(&mut self, k: &KeptSocket, dmn: Fd) {
        let s = self.kept_sock(k, dmn, Kind::Udp);
        self.socks.insert(k.id, s);
        self.kept_ids.insert(k.id);
        if let Err(e) = self.udp_open(k.id) {
            log::warn!("socket {:x}: port {} not restored: {e}", k.id, k.port);
            self.socks.remove(&k.id);
            self.kept_drop(k.id);
            return;
        }
        if let Some(peer) = k.peer
            && self.dgram_connect(k.id, WireAddr(Some(peer))).is_err()
            && let Some(s) = self.socks.get_mut(&k.id)
        {
            // No route yet (an address still to come): the peer all the same.
            s.dg.peer = Some(peer);
            s.peer = Some(peer);
        }
        if let Ok((net, s)) = self.split(k.id) {
            for (level, name, v) in &k.opts {
                if let Err(e) = net.op_setsockopt(s, *level, *name, v) {
                    log::warn!(
                        "socket {:x}: option ({level}, {name}) not set again: {e}",
                        k.id
                    );
                }
            }
            s.opts.replay = k.opts.clone();
        }
        self.watch.push((k.id, libc::EPOLL_CTL_ADD));
        self.work.add(k.id);
        log::info!(
            "UDP socket {:x} restored on {:?} port {}",
            k.id,
            k.addr,
            k.port
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_socket_round_trips() {
        for addr in [
            None,
            Some("10.0.0.5".parse().unwrap()),
            Some("fd00::5".parse().unwrap()),
        ] {
            let k = KeptSocket {
                udp: addr.is_some(),
                peer: addr.map(|a| SocketAddr::new(a, 53)),
                id: 0x1234_5678_9abc_def0,
                domain: libc::AF_INET6,
                owner: 33,
                app_ino: Some(99),
                addr,
                port: 80,
                backlog: 511,
                reuseaddr: true,
                reuseport: false,
                v6only: true,
                kernel: addr.is_none(),
                opts: if addr.is_some() {
                    vec![
                        (1, 6, vec![1, 0, 0, 0]),
                        (41, 20, vec![0xff; 20]),
                        (0, 0, vec![]),
                    ]
                } else {
                    Vec::new()
                },
            };
            let b = k.encode();
            assert_eq!(KeptSocket::decode(&b), Some(k));
            // A record cut short anywhere in its options is refused.
            for n in KeptSocket::LEN + 1..b.len() {
                if n != KeptSocket::LEN + 14 && n != KeptSocket::LEN + 44 {
                    assert_eq!(KeptSocket::decode(&b[..n]), None, "{n}");
                }
            }
        }
        assert_eq!(KeptSocket::decode(&[0u8; 3]), None);
    }
}
