//! What outlives the daemon: its listeners (see `crate::keeper`).
//!
//! When the stack keeps listeners (`Stack::keep_listeners`), every socket that starts to
//! listen is reported with a duplicate of its daemon end ([`Kept::Listen`]), and every one
//! that goes away ([`Kept::Drop`]). The keeper holds those ends, so that the application's
//! listener never sees EOF if the daemon dies, and a new daemon takes them back with
//! [`Stack::restore_listener`]: same socket id, owner, address, port, backlog and options.

use super::*;

/// A listening TCP socket as the keeper stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptListener {
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
}

/// A change for the keeper ([`Stack::take_kept`]).
pub enum Kept {
    /// A new listener, with a duplicate of its daemon end.
    Listen(KeptListener, Fd),
    /// Socket `id` is gone.
    Drop(u64),
}

impl KeptListener {
    pub const LEN: usize = 8 + 4 + 4 + 8 + 1 + 16 + 2 + 4 + 1;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
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
        b[47] = self.reuseaddr as u8 | (self.reuseport as u8) << 1 | (self.v6only as u8) << 2;
        b
    }

    pub fn decode(b: &[u8]) -> Option<KeptListener> {
        if b.len() != Self::LEN {
            return None;
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
        Some(KeptListener {
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

    /// Socket `id` just started to listen.
    pub(super) fn kept_listen(&mut self, id: u64) {
        if !self.keeping {
            return;
        }
        let Some(s) = self.socks.get(&id) else {
            return;
        };
        let TcpState::Listening(l) = &s.tcp else {
            return;
        };
        let Some((addr, port)) = s.bound else {
            return;
        };
        let Ok(fd) = s.dmn.dup_cloexec(0) else {
            log::warn!("listener {id:x}: no fd for the keeper");
            return;
        };
        let k = KeptListener {
            id,
            domain: s.domain,
            owner: s.owner,
            app_ino: s.app_ino,
            addr,
            port,
            backlog: l.backlog as u32,
            reuseaddr: s.opts.reuseaddr,
            reuseport: s.opts.reuseport,
            v6only: s.opts.v6only,
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

    /// Take back a listener a previous daemon of this node had: `dmn` is its daemon end.
    pub fn restore_listener(&mut self, k: &KeptListener, dmn: Fd, now: Instant) {
        self.net.now = now;
        if self.socks.contains_key(&k.id) {
            return;
        }
        let _ = sys::fcntl(dmn.raw(), libc::F_SETFL, libc::O_NONBLOCK as libc::c_long);
        let mut s = Sock::new(k.domain, Kind::Tcp, dmn, self.work.waker(k.id), k.owner);
        s.app_ino = k.app_ino;
        s.bound = Some((k.addr, k.port));
        s.opts.reuseaddr = k.reuseaddr;
        s.opts.reuseport = k.reuseport;
        s.opts.v6only = k.v6only;
        s.wr = true;
        s.tcp = TcpState::Listening(Listener {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_listener_round_trips() {
        for addr in [
            None,
            Some("10.0.0.5".parse().unwrap()),
            Some("fd00::5".parse().unwrap()),
        ] {
            let k = KeptListener {
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
            };
            assert_eq!(KeptListener::decode(&k.encode()), Some(k));
        }
        assert_eq!(KeptListener::decode(&[0u8; 3]), None);
    }
}
