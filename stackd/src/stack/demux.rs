//! Finding the socket of an incoming TCP segment without smoltcp's scan.
//!
//! smoltcp hands a segment to the first socket of the set that `accepts` it, trying them all
//! in turn: with thousands of connections that scan costs more than everything else the node
//! does (10,000 connections: three segments each, each tried against thousands of sockets).
//! The stack therefore keeps its own index of its connections' 4-tuples (local address and
//! port, remote address and port), learnt when a connect starts, when a listener's pool
//! socket takes a SYN and when a connection is handed over, and forgotten when the socket
//! leaves the set. A segment whose socket the index knows, checked against that socket's own
//! state and endpoints, goes to smoltcp in a one-socket set: the socket is moved out of the
//! node's set for the call (a closed placeholder without buffers holds its slot) and moved
//! back after, wakers and all. A SYN for a listener goes the same way to an idle socket of
//! that listener's pool. Anything else, or a 4-tuple two sockets share, takes smoltcp's scan
//! as before.
//!
//! The one difference from the scan: a SYN whose 4-tuple belongs to a connection in
//! progress goes to that connection (a retransmitted SYN gets its SYN-ACK again), where the
//! scan could have given it to an earlier pool socket in `Listen` as a second connection.
//!
//! Egress has the same problem: `poll_egress` asks every socket of the set whether it has a
//! segment to send, and a node polls after every batch of frames. A node with at least
//! [`MANY`] indexed connections therefore sends, on most turns, only for the TCP sockets
//! that may have something to send: those handed a segment, and those the turn visited
//! (data from the app, a close, a connect; see `work.rs`), each alone in the one-socket set
//! as above. Every socket is tried (smoltcp's own egress) when anything else happened (a
//! frame that took the scan, a datagram socket visited) and at least every
//! [`full_egress_every`], for the timers (retransmissions, delayed ACKs, `TIME-WAIT`), which
//! are thus late by that much at most while the node is busy, and on time when it is idle.
//! Likewise the time to the next poll: while egress is put off, the next full pass is when
//! the owner polls next, without asking every socket for its timers (smoltcp's `poll_delay`
//! asks every socket); after a full pass, every socket is asked as before.

use super::*;

/// Indexed connections from which a node sends for the sockets with work only.
pub(super) const MANY: usize = 64;
/// Longest time between two egress passes over every socket while the node is busy, for `n`
/// indexed connections: 5 ms, and 4 µs more per connection (a pass costs about half a
/// microsecond per socket, so passes take an eighth of the node's time at most; 45 ms with
/// 10,000 connections).
pub(super) fn full_egress_every(n: usize) -> Duration {
    Duration::from_micros(5000 + 4 * n as u64)
}

/// (local address, local port, remote address, remote port).
pub(super) type Key = (IpAddr, u16, IpAddr, u16);

pub(super) struct Demux {
    by_key: HashMap<Key, SocketHandle>,
    by_handle: HashMap<SocketHandle, Key>,
    /// TCP sockets that may have a segment to send this turn.
    dirty: Vec<SocketHandle>,
    /// Something else may have to send: the next egress tries every socket.
    pub(super) egress_all: bool,
    /// When every socket was last tried.
    last_full: Option<Instant>,
    /// An egress since then was for the touched sockets only.
    deferred: bool,
    /// The one-socket set segments are processed in.
    one: SocketSet<'static>,
    /// Holds a moved-out socket's slot in the node's set.
    placeholder: Option<tcp::Socket<'static>>,
}

impl Default for Demux {
    fn default() -> Self {
        Demux {
            by_key: HashMap::new(),
            by_handle: HashMap::new(),
            dirty: Vec::new(),
            egress_all: false,
            last_full: None,
            deferred: false,
            one: SocketSet::new(Vec::new()),
            placeholder: None,
        }
    }
}

/// The 4-tuple of a TCP socket that has one.
fn key_of(t: &tcp::Socket) -> Option<Key> {
    let (l, r) = (t.local_endpoint()?, t.remote_endpoint()?);
    Some((to_ip(l.addr), l.port, to_ip(r.addr), r.port))
}

impl Demux {
    /// Index socket `h` under its 4-tuple (if it has one yet). A 4-tuple already indexed for
    /// another socket is dropped from the index: both then take the scan.
    pub(super) fn learn(&mut self, h: SocketHandle, t: &tcp::Socket) {
        let Some(k) = key_of(t) else {
            return;
        };
        if self.by_handle.get(&h) == Some(&k) {
            return;
        }
        self.forget(h);
        match self.by_key.get(&k) {
            Some(&other) if other != h => {
                self.by_key.remove(&k);
                self.by_handle.remove(&other);
            }
            _ => {
                self.by_key.insert(k, h);
                self.by_handle.insert(h, k);
            }
        }
    }

    /// Whether socket `h` is indexed (and so in the set: it is forgotten when it leaves).
    fn knows(&self, h: SocketHandle) -> bool {
        self.by_handle.contains_key(&h)
    }

    /// Socket `h` may have a segment to send.
    pub(super) fn touch(&mut self, h: SocketHandle) {
        if self.by_handle.len() >= MANY {
            self.dirty.push(h);
        }
    }

    /// Whether the next egress may be for the touched sockets only, at `now` (not when a
    /// quarter of them or more were touched, as by the daemon's sweep: one pass is cheaper).
    fn targeted(&self, now: Instant) -> bool {
        !self.egress_all
            && self.by_handle.len() >= MANY
            && self.dirty.len() < self.by_handle.len() / 4
            && self
                .last_full
                .is_some_and(|t| now < t + full_egress_every(self.by_handle.len()))
    }

    /// When a busy node tries every socket again, if it put that off (its owner polls again
    /// by then, and need not look at every socket's timers before); `None` when nothing is
    /// put off.
    pub(super) fn full_due_in(&self, now: Instant) -> Option<Duration> {
        if !self.deferred || self.egress_all {
            return None;
        }
        let t = self.last_full? + full_egress_every(self.by_handle.len());
        (now < t).then(|| t - now)
    }

    /// Socket `h` leaves the set (its handle may be given to another socket).
    pub(super) fn forget(&mut self, h: SocketHandle) {
        if let Some(k) = self.by_handle.remove(&h)
            && self.by_key.get(&k) == Some(&h)
        {
            self.by_key.remove(&k);
        }
    }

    /// The indexed socket for `k`, if its state and endpoints say it takes the segment
    /// (smoltcp's `accepts` for a socket with a 4-tuple).
    pub(super) fn lookup(&self, set: &SocketSet, k: &Key) -> Option<SocketHandle> {
        let h = *self.by_key.get(k)?;
        let t = set.get::<tcp::Socket>(h);
        (!matches!(t.state(), tcp::State::Closed | tcp::State::Listen) && key_of(t) == Some(*k))
            .then_some(h)
    }
}

impl<D: Link> Net<D> {
    /// Let smoltcp process the staged frame with socket `h` alone (see the module
    /// documentation); `h` is then indexed under the 4-tuple it may have taken.
    pub(super) fn ingress_to(&mut self, h: SocketHandle) {
        let d = &mut self.demux;
        let ph = d.placeholder.take().unwrap_or_else(|| {
            tcp::Socket::new(
                tcp::SocketBuffer::new(Vec::new()),
                tcp::SocketBuffer::new(Vec::new()),
            )
        });
        let t = std::mem::replace(self.set.get_mut::<tcp::Socket>(h), ph);
        let oh = d.one.add(t);
        self.iface
            .poll_ingress_single(self.now, &mut self.dev, &mut d.one);
        if let smoltcp::socket::Socket::Tcp(t) = d.one.remove(oh) {
            d.learn(h, &t);
            d.touch(h);
            d.placeholder = Some(std::mem::replace(self.set.get_mut::<tcp::Socket>(h), t));
        }
    }

    /// Send what the sockets have to send: the touched ones, or every socket (see the module
    /// documentation).
    pub(super) fn egress(&mut self) {
        if !self.demux.targeted(self.now) {
            self.demux.egress_all = false;
            self.demux.last_full = Some(self.now);
            self.demux.deferred = false;
            self.demux.dirty.clear();
            self.egress_every_socket();
            return;
        }
        self.demux.deferred = true;
        let mut dirty = std::mem::take(&mut self.demux.dirty);
        // Closed and aborted sockets: their FIN or RST.
        dirty.extend(self.lingering.iter().map(|o| o.h));
        dirty.sort_unstable();
        dirty.dedup();
        for &h in &dirty {
            if self.demux.knows(h) {
                self.egress_one(h);
            }
        }
        dirty.clear();
        self.demux.dirty = dirty;
    }

    /// Egress for socket `h` alone, in the one-socket set.
    fn egress_one(&mut self, h: SocketHandle) {
        let d = &mut self.demux;
        let ph = d.placeholder.take().unwrap_or_else(|| {
            tcp::Socket::new(
                tcp::SocketBuffer::new(Vec::new()),
                tcp::SocketBuffer::new(Vec::new()),
            )
        });
        let t = std::mem::replace(self.set.get_mut::<tcp::Socket>(h), ph);
        let oh = d.one.add(t);
        for _ in 0..100_000 {
            if !self.dev.flush() {
                break;
            }
            match self.iface.poll_egress(self.now, &mut self.dev, &mut d.one) {
                smoltcp::iface::PollResult::None => break,
                smoltcp::iface::PollResult::SocketStateChanged => {}
            }
        }
        if let smoltcp::socket::Socket::Tcp(t) = d.one.remove(oh) {
            d.placeholder = Some(std::mem::replace(self.set.get_mut::<tcp::Socket>(h), t));
        }
    }

    /// Remove TCP socket `h` from the set.
    pub(super) fn remove_tcp(&mut self, h: SocketHandle) -> smoltcp::socket::Socket<'static> {
        self.demux.forget(h);
        self.set.remove(h)
    }
}
