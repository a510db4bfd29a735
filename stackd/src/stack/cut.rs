//! TCP cut-through between two nodes of one host.
//!
//! A connect to an address that this node hears through a shortcut (`Link::cut_route`: the
//! peer is another stack daemon on this host, on the same switch and VLAN, and the switch
//! allows it) does not start a TCP handshake. The daemon sends the peer daemon, over the
//! shortcut, a `Connect` message (`crate::cut`) with its own end of the application's
//! socketpair, still holding the filler that keeps the application's fd unwritable. The peer
//! checks that one of its listeners takes the connection (address, port, backlog), names
//! the end as one of its own sockets, drains the filler and queues the end on the listener:
//! the accepting application gets, as its accepted fd, the other end of the connecting
//! application's own socketpair. Then it answers. From then on the bytes go from application
//! to application through one kernel socketpair, with no daemon and no TCP in the way; both
//! daemons keep only a record of the socket (`TcpState::Cut`: addresses and options, for
//! `getsockname`, `getpeername`, `getsockopt`), and drop it once the application's end is
//! closed (its name is free again, `app_gone`: probed at growing intervals, since no
//! descriptor of ours sees the close).
//!
//! A refusal (no listener, a full backlog, cut-through off on that node, anything odd) costs
//! one round trip: the connect goes on through TCP as it would have, and meets the same
//! listener, or its RST. A connection never changes path once it is established. If the
//! answer does not come (the shortcut ended, or a few seconds passed), the connect fails
//! with `ETIMEDOUT`: the peer may hold our end by then, so TCP cannot take over.
//!
//! What cut-through gives up: the bytes are not on the virtual LAN (no capture, no switch or
//! shortcut counters). So it is off where that matters: the switch does not allow it with
//! `--pcap`, `--hub`, `--no-shortcuts` or `--no-cut-through` (no shortcut, or one flagged
//! `SHORTCUT_NO_CUT`), and a node started with `--no-cut-through` (`IOTH_CUT_THROUGH=0`)
//! neither starts nor takes one. Counted in the node's info (`cut_*`).

use super::*;
use crate::cut::Msg;
use ioth_common::table;

/// How long a connect waits for the peer daemon's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// A cut-through socket's record is checked for the application's close after this, then
/// at doubling intervals up to [`CHECK_MAX`].
const CHECK_FIRST: Duration = Duration::from_millis(500);
const CHECK_MAX: Duration = Duration::from_secs(30);
/// Most filler a `Connect` may announce (the shim's and ours are far smaller).
const MAX_FILLER: u32 = 4 << 20;

#[derive(Default)]
pub(super) struct CutThrough {
    on: bool,
    /// The owner's epoll set: an end that leaves for another process must leave it too (the
    /// open file lives on there, and with it the registration).
    ep: Option<RawFd>,
    /// Connects waiting for an answer: tag → socket id.
    pending: HashMap<u64, u64>,
    /// Records due for a look at their application's end (see [`Stack::cut_sweep`]).
    due: Vec<u64>,
    /// When every record was last looked at at once, and whether that freed none
    /// ([`Stack::cut_sweep_all`]).
    swept_all: Option<(Instant, bool)>,
    next_tag: u64,
    /// Connections made (ours connected), taken (to our listeners), refused (either way),
    /// and connects that failed waiting for an answer.
    pub(super) made: u64,
    pub(super) taken: u64,
    pub(super) refused: u64,
    pub(super) lost: u64,
    /// Of `made`: connects the client made itself (`Connected`); and non-blocking connects
    /// through TCP the client started itself (`ConnectAsync` after its own door connect).
    pub(super) made_by_client: u64,
    pub(super) async_by_client: u64,
    /// Of `made_by_client`: connections told of only once closed (`Closed`: never
    /// registered).
    pub(super) told_closed: u64,
    /// Connections through TCP queued on our listeners (beside the cut-through ones, which
    /// this daemon hears of only when asked about them: `cut_taken`).
    pub(super) tcp_accepted: u64,
    /// The kernel listeners of the peer at the other end of each shortcut (`Msg::Listener`),
    /// asked for with `Msg::Hello`.
    peers: HashMap<u32, PeerTable>,
    /// Shortcuts whose peer asked for ours: each new kernel listener is sent there too.
    subscribers: HashSet<u32>,
    /// Connects of sockets the shim made waiting for their peer (`cut_direct`): when the
    /// wait began, and when the neighbour was first known.
    waits: HashMap<u64, (Instant, Option<Instant>)>,
    /// The connect table our clients map (`ioth_common::table`), made at the first `Table`.
    table: Option<table::Writer>,
    /// The link's `cut_gen` the table was built at, and whether the peers' lists changed
    /// since.
    table_gen: u64,
    table_dirty: bool,
    /// Our own kernel listeners the table was built with (connects within the node).
    own_listeners: Vec<u64>,
    /// Local ports leased to clients (`Request::Lease`): the control connection that asked
    /// (they are free again when it closes) and its user.
    pub(super) leased: HashMap<u16, (u64, u32)>,
    /// The control connection whose request is being carried out ([`Stack::handle_on`]).
    pub(super) asker: u64,
}

/// What a shortcut's peer told of its kernel listeners.
pub(super) struct PeerTable {
    asked: Instant,
    /// Its whole list came (`Msg::Hello { done: true }`).
    complete: bool,
    list: Vec<PeerListener>,
}

/// A peer's kernel listener (`Msg::Listener`).
pub(super) type PeerListener = crate::cut::Listener;

/// Of `list`, the listener a connect to `ip`:`port` goes to; of several sharing the port,
/// the one `pick` chooses.
fn listener_for(list: &[PeerListener], ip: IpAddr, port: u16, pick: u64) -> Option<PeerListener> {
    let n = listeners_for(list, ip, port).count() as u64;
    listeners_for(list, ip, port).nth((pick % n.max(1)) as usize)
}

/// Of `list`, the listeners a connect to `ip`:`port` may go to: those bound to that address,
/// else those bound to any address of the family (several: they share the port,
/// `SO_REUSEPORT`).
fn listeners_for(
    list: &[PeerListener],
    ip: IpAddr,
    port: u16,
) -> impl Iterator<Item = PeerListener> + '_ {
    let fits = move |l: &&PeerListener| {
        l.port == port && (if ip.is_ipv4() { l.v4 } else { l.v6 }) && l.addr.is_none_or(|a| a == ip)
    };
    let specific = list.iter().filter(fits).any(|l| l.addr.is_some());
    list.iter()
        .filter(fits)
        .filter(move |l| l.addr.is_some() == specific)
        .copied()
}

/// The connect table's entries for connects to `ip` from `src`: every listener of `list`
/// such a connect may go to, into `out`; whether none was left out (a listener of another
/// user's is left to `cut_direct`, which knows the daemon's uid: its client may be someone
/// else).
fn entries_for(
    list: &[PeerListener],
    ip: IpAddr,
    src: IpAddr,
    me: u32,
    out: &mut Vec<table::Entry>,
) -> bool {
    let ports: std::collections::BTreeSet<u16> = list.iter().map(|l| l.port).collect();
    let mut all = true;
    for l in ports.into_iter().flat_map(|p| listeners_for(list, ip, p)) {
        if me != 0 && me != l.uid {
            all = false;
            continue;
        }
        out.push(table::Entry {
            dst: ip,
            port: l.port,
            src,
            node: l.node,
            lid: l.lid,
            uid: l.uid,
            inet6: l.inet6,
        });
    }
    all
}

/// At most this many listeners are kept per peer (the rest are reached through TCP).
const PEER_LISTENERS: usize = 256;
/// How long a connect waits for a peer's list of listeners once the shortcut is there.
const WAIT_TABLE: Duration = Duration::from_millis(20);

/// What [`Stack::cut_direct`] did.
pub(super) enum Direct {
    /// Connected to the peer's listener.
    Done,
    /// Not yet known: the client asks again shortly (`ctl::E_CUT_WAIT`).
    Wait,
    /// Through TCP.
    No,
    /// Connected to someone else's listener: the connect fails (`ECONNREFUSED`).
    Failed,
}

/// A connect whose `Connect` went to the peer daemon.
pub(super) struct CutPending {
    tag: u64,
    sc: u32,
    app: Fd,
    _notify: Option<Fd>,
    filler: usize,
    start: Instant,
}

/// A connect to a neighbour not heard from yet: it waits (as its SYN would) for the
/// neighbour's answer, and then for a shortcut to it, before choosing between cut-through
/// and TCP (a shortcut comes with the first unicast frame between the two, the neighbour's
/// answer).
pub(super) struct CutWait {
    app: Fd,
    notify: Option<Fd>,
    pub(super) filler: usize,
    start: Instant,
    dst: SocketAddr,
    /// When the neighbour's address was first known.
    known: Option<Instant>,
}

/// How long a connect waits for the neighbour's answer, and then for the shortcut, before
/// it goes through TCP.
const WAIT_NEIGHBOUR: Duration = Duration::from_millis(200);
const WAIT_SHORTCUT: Duration = Duration::from_millis(20);
/// How often a connect waiting for its neighbour looks whether the answer came.
const CUT_WAIT_LOOK: Duration = Duration::from_millis(2);

/// The record of a connection that runs from application to application.
pub(super) struct Cut {
    id: u64,
    pub(super) check_at: Instant,
    every: Duration,
}

impl Cut {
    /// The next look: twice as far off as the last one, at most [`CHECK_MAX`].
    pub(super) fn later(&mut self, now: Instant) {
        self.every = (self.every * 2).min(CHECK_MAX);
        self.check_at = now + self.every;
    }

    pub(super) fn new(id: u64, now: Instant) -> Cut {
        Cut {
            id,
            check_at: now + CHECK_FIRST,
            every: CHECK_FIRST,
        }
    }
}

impl<D: Link> Stack<D> {
    /// Allow cut-through on this node (`on`); `ep`: the owner's epoll set.
    pub fn set_cut_through(&mut self, on: bool, ep: RawFd) {
        self.cut.on = on;
        self.cut.ep = Some(ep);
    }

    /// Lines for the node's info.
    pub(super) fn cut_info(&self) -> String {
        let open = self
            .socks
            .values()
            .filter(|s| matches!(s.tcp, TcpState::Cut(_)))
            .count();
        format!(
            "cut_through={}\ncut_open={open}\ncut_made={}\ncut_taken={}\ncut_refused={}\ncut_lost={}\n\
             cut_made_by_client={}\ncut_told_closed={}\ncut_leased={}\nconnect_async_by_client={}\n\
             tcp_accepted={}\n",
            if self.cut.on { "on" } else { "off" },
            self.cut.made,
            self.cut.taken,
            self.cut.refused,
            self.cut.lost,
            self.cut.made_by_client,
            self.cut.told_closed,
            self.cut.leased.len(),
            self.cut.async_by_client,
            self.cut.tcp_accepted,
        )
    }

    /// Try cut-through for socket `id`'s connect from `local` to `dst` (on-link, `hop`);
    /// `app` and `notify` are taken if it starts. `Err(filler)`: it did not (the app's end
    /// now holds `filler` bytes, 0 if it was not filled here).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cut_connect(
        &mut self,
        id: u64,
        local: SocketAddr,
        dst: SocketAddr,
        app: &mut Option<Fd>,
        notify: &mut Option<Fd>,
        prefilled: usize,
    ) -> Result<(), usize> {
        if !self.cut.on {
            return Err(prefilled);
        }
        let Some(sc) = self.net.dev.cut_route(dst.ip()) else {
            if self.net.dev.cut_known(dst.ip()) {
                return Err(prefilled);
            }
            // Not heard from yet: wait for its answer (a SYN would too).
            let (Some(a), Some(s)) = (app.take(), self.socks.get_mut(&id)) else {
                return Err(prefilled);
            };
            let filler = if prefilled == 0 { fill(&a) } else { prefilled };
            s.local = Some(local);
            s.peer = Some(dst);
            s.tcp = TcpState::CutWait(CutWait {
                app: a,
                notify: notify.take(),
                filler,
                start: self.net.now,
                dst,
                known: None,
            });
            self.net.prime_neighbour(dst.ip());
            self.revisit.push(id);
            return Ok(());
        };
        let (Some(a), Some(s)) = (app.as_ref(), self.socks.get(&id)) else {
            return Err(prefilled);
        };
        let filler = if prefilled == 0 { fill(a) } else { prefilled };
        self.cut.next_tag = self.cut.next_tag.wrapping_add(1);
        let tag = self.cut.next_tag ^ self.rng;
        let msg = Msg::Connect {
            tag,
            src: local,
            dst,
            filler: filler as u32,
        };
        if self
            .net
            .dev
            .cut_send(sc, &msg.encode(), &[s.dmn.raw()])
            .is_err()
        {
            return Err(filler);
        }
        let (Some(app), Some(s)) = (app.take(), self.socks.get_mut(&id)) else {
            return Err(filler);
        };
        s.local = Some(local);
        s.peer = Some(dst);
        s.tcp = TcpState::CutPending(CutPending {
            tag,
            sc,
            app,
            _notify: notify.take(),
            filler,
            start: self.net.now,
        });
        self.cut.pending.insert(tag, id);
        self.revisit.push(id);
        log::debug!("cut-through {local} -> {dst}: asked on shortcut {sc}");
        Ok(())
    }

    /// Messages from peer daemons, and shortcuts that ended under connects.
    pub(super) fn cut_service(&mut self) {
        while let Some((sc, msg, fd)) = self.net.dev.cut_recv() {
            match msg {
                Msg::Connect {
                    tag,
                    src,
                    dst,
                    filler,
                } => {
                    let ok = self.cut_take(src, dst, filler, fd).is_some();
                    if ok {
                        self.cut.taken += 1;
                    } else {
                        self.cut.refused += 1;
                    }
                    let _ = self
                        .net
                        .dev
                        .cut_send(sc, &Msg::Answer { tag, ok }.encode(), &[]);
                }
                Msg::Answer { tag, ok } => self.cut_answer(sc, tag, ok),
                Msg::Hello { done: false } => {
                    // Off here: no listener is told (the peer's connects go through TCP).
                    let mine: Vec<Msg> = if self.cut.on {
                        self.cut.subscribers.insert(sc);
                        self.kernel_listeners().map(Msg::Listener).collect()
                    } else {
                        Vec::new()
                    };
                    for m in mine {
                        let _ = self.net.dev.cut_send(sc, &m.encode(), &[]);
                    }
                    let _ = self
                        .net
                        .dev
                        .cut_send(sc, &Msg::Hello { done: true }.encode(), &[]);
                }
                Msg::Hello { done: true } => {
                    if let Some(t) = self.cut.peers.get_mut(&sc) {
                        t.complete = true;
                        self.cut.table_dirty = true;
                    }
                }
                Msg::Listener(l) => {
                    let Some(t) = self.cut.peers.get_mut(&sc) else {
                        continue;
                    };
                    // A newer listener on the same address and port replaces the old one,
                    // unless both share the port (`SO_REUSEPORT`): then it joins them.
                    t.list.retain(|o| {
                        o.lid != l.lid
                            && ((o.addr, o.port, o.v4, o.v6) != (l.addr, l.port, l.v4, l.v6)
                                || (o.reuseport && l.reuseport))
                    });
                    if t.list.len() < PEER_LISTENERS {
                        t.list.push(l);
                    }
                    self.cut.table_dirty = true;
                }
            }
        }
        if !self.cut.waits.is_empty() {
            // (Connects whose application gave up waiting.)
            let now = self.net.now;
            self.cut
                .waits
                .retain(|_, (start, _)| now < *start + Duration::from_secs(1));
        }
        if self.cut.on {
            // Ask each new peer for its listeners at once: a new node's first connect then
            // finds them.
            for sc in self.net.dev.cut_peers() {
                if !self.cut.peers.contains_key(&sc)
                    && self
                        .net
                        .dev
                        .cut_send(sc, &Msg::Hello { done: false }.encode(), &[])
                        .is_ok()
                {
                    self.cut.peers.insert(
                        sc,
                        PeerTable {
                            asked: self.net.now,
                            complete: false,
                            list: Vec::new(),
                        },
                    );
                }
            }
        }
        for sc in self.net.dev.cut_ended() {
            self.cut.table_dirty = true;
            self.cut.peers.remove(&sc);
            self.cut.subscribers.remove(&sc);
            let lost: Vec<u64> = self
                .cut
                .pending
                .iter()
                .filter(|(_, id)| {
                    self.socks
                        .get(id)
                        .is_some_and(|s| matches!(&s.tcp, TcpState::CutPending(p) if p.sc == sc))
                })
                .map(|(t, _)| *t)
                .collect();
            for tag in lost {
                if let Some(id) = self.cut.pending.remove(&tag) {
                    self.cut_fail(id, libc::ETIMEDOUT);
                }
            }
        }
    }

    /// `Table`: the connect table (made now if it was not), for a client to map.
    pub(super) fn op_table(&mut self) -> (Reply, Option<Fd>) {
        if self.cut.table.is_none() {
            match table::Writer::create() {
                Ok(w) => self.cut.table = Some(w),
                Err(e) => return (Reply::Err(e), None),
            }
            self.cut.table_dirty = true;
            self.cut_publish();
        }
        match self.cut.table.as_ref().map(|w| w.dup_fd()) {
            Some(Ok(fd)) => (Reply::Ok, Some(fd)),
            Some(Err(e)) => (Reply::Err(e), None),
            None => (Reply::Err(Errno::EINVAL), None),
        }
    }

    /// Rebuild the connect table if what it says may have changed: for each peer heard from
    /// (on-link), the listeners a connect from here would be cut through to (as
    /// [`Stack::cut_direct`] picks them), and whether anything else to it goes through TCP
    /// without waiting (no cut-through shortcut to it, or its whole list came).
    pub(super) fn cut_publish(&mut self) {
        let Some(w) = &self.cut.table else {
            return;
        };
        let generation = self.net.dev.cut_gen();
        let own_same = self
            .cut
            .own_listeners
            .iter()
            .copied()
            .eq(self.kernel_listeners().map(|l| l.lid));
        if !self.cut.table_dirty && generation == self.cut.table_gen && own_same {
            return;
        }
        self.cut.table_dirty = false;
        self.cut.table_gen = generation;
        let mine: Vec<PeerListener> = self.kernel_listeners().collect();
        self.cut.own_listeners = mine.iter().map(|l| l.lid).collect();
        let (mut listeners, mut hosts) = (Vec::new(), Vec::new());
        let me = sys::geteuid();
        for (ip, sc) in self.net.dev.cut_hosts() {
            if !self.cut.on || self.net.next_hop(&ip).ok() != Some(ip) {
                continue;
            }
            let Some(sc) = sc else {
                hosts.push(ip);
                continue;
            };
            let Some(t) = self.cut.peers.get(&sc).filter(|t| t.complete) else {
                continue;
            };
            let Some(src) = self
                .net
                .iface
                .get_source_address(&from_ip(ip))
                .map(to_ip)
                .filter(|s| s.is_ipv4() == ip.is_ipv4())
            else {
                continue;
            };
            // (Every listener sharing a port: the client picks one per connect.)
            if entries_for(&t.list, ip, src, me, &mut listeners) {
                hosts.push(ip);
            }
        }
        // Connects within the node, to one of its addresses or to its loopback: straight to
        // our own kernel listener, from the address connected to (as Linux picks it), as to
        // another node's. Their bytes were never on the LAN (the node's stack loops them).
        if self.cut.on {
            let mut dsts = self.net.own.clone();
            if dsts.iter().any(IpAddr::is_ipv4) {
                dsts.push(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
            }
            if dsts.iter().any(IpAddr::is_ipv6) {
                dsts.push(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));
            }
            for ip in dsts {
                if entries_for(&mine, ip, ip, me, &mut listeners) {
                    hosts.push(ip);
                }
            }
        }
        w.publish(&listeners, &hosts, !self.cut.on);
    }

    /// `Lease`: up to `count` free local ports for the own connects of `caller`, whose
    /// control connection ([`Stack::handle_on`]) holds them until it tells what became of
    /// them (`Connected`, `Closed`), or closes.
    pub(super) fn op_lease(&mut self, count: u32, caller: u32) -> Result<Reply, Errno> {
        let holder = (self.cut.asker, caller);
        let mut b = Vec::new();
        // (At most a sixth of the range is leased at once: clients that ask for more, or
        // never use theirs, cannot take the ports the daemon's own connects need.)
        let room = (self.port_count() as usize / 6).saturating_sub(self.cut.leased.len());
        for _ in 0..(count.min(64) as usize).min(room) {
            let Ok(p) = self.ephemeral(Kind::Tcp) else {
                break;
            };
            self.cut.leased.insert(p, holder);
            b.extend_from_slice(&p.to_le_bytes());
        }
        if b.is_empty() {
            return Err(Errno(libc::EADDRNOTAVAIL));
        }
        Ok(Reply::Bytes(b))
    }

    /// Whether a client holds `port` (leased, not used yet, or used by a connection it has
    /// not told of).
    pub(super) fn leased(&self, port: u16) -> bool {
        self.cut.leased.contains_key(&port)
    }

    /// Control connection `cid` closed: the ports it leased are free again (its process is
    /// gone, and its connections with it, or it told of each before).
    pub fn ctl_closed(&mut self, cid: u64) {
        self.cut.leased.retain(|_, h| h.0 != cid);
    }

    /// `Closed`: connections `caller` made itself from ports leased to its user, closed
    /// before it told of them: counted as made, their ports free again.
    pub(super) fn op_closed(&mut self, conns: Vec<(WireAddr, WireAddr)>, caller: u32) {
        for (local, peer) in conns {
            let (Some(local), Some(peer)) = (local.0, peer.0) else {
                continue;
            };
            if self
                .cut
                .leased
                .get(&local.port())
                .is_none_or(|h| h.1 != caller)
            {
                continue;
            }
            self.cut.leased.remove(&local.port());
            self.cut.told_closed += 1;
            self.count_made_by_client(peer.ip());
        }
    }

    /// A connection a client made itself to `peer`: counted here and on its shortcut.
    fn count_made_by_client(&mut self, peer: IpAddr) {
        self.cut.made += 1;
        self.cut.made_by_client += 1;
        if let Some(sc) = self.net.dev.cut_route(peer) {
            self.net.dev.cut_made(sc);
        }
    }

    /// `Connected`: socket `id`'s client connected it itself to another node's kernel
    /// listener, from `local` (a leased port) to `peer`: its record, as
    /// [`Stack::cut_direct`] would have made it.
    pub(super) fn op_connected(&mut self, id: u64, local: WireAddr, peer: WireAddr) {
        let (Some(local), Some(peer)) = (local.0, peer.0) else {
            return;
        };
        let now = self.net.now;
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        if s.kind != Kind::Tcp || !matches!(s.tcp, TcpState::Fresh(_)) || s.bound.is_some() {
            return;
        }
        self.cut.leased.remove(&local.port());
        s.bound = Some((None, local.port()));
        s.local = Some(local);
        s.peer = Some(peer);
        s.so_error = 0;
        s.tcp = TcpState::Cut(Cut::new(id, now));
        self.cut.waits.remove(&id);
        self.count_made_by_client(peer.ip());
    }

    /// Our kernel listeners, as we tell the peers of them (`Msg::Listener`).
    fn kernel_listeners(&self) -> impl Iterator<Item = PeerListener> + '_ {
        let node = self.net.id;
        self.listening().filter_map(move |(id, s)| {
            let TcpState::Listening(l) = &s.tcp else {
                return None;
            };
            l.kernel.as_ref()?;
            let (addr, port) = s.bound?;
            let (v4, v6) = s.families();
            Some(PeerListener {
                node,
                lid: id,
                uid: s.owner,
                addr,
                port,
                v4,
                v6,
                inet6: s.domain == libc::AF_INET6,
                reuseport: s.opts.reuseport,
            })
        })
    }

    /// Tell the peers that asked (`Msg::Hello`) of our new kernel listener `id`.
    pub(super) fn cut_announce(&mut self, id: u64) {
        if self.cut.subscribers.is_empty() {
            return;
        }
        let Some(l) = self.kernel_listeners().find(|l| l.lid == id) else {
            return;
        };
        let m = Msg::Listener(l);
        let subs: Vec<u32> = self.cut.subscribers.iter().copied().collect();
        for sc in subs {
            let _ = self.net.dev.cut_send(sc, &m.encode(), &[]);
        }
    }

    /// Cut-through for socket `id`, one the shim made and nothing connected yet (its
    /// application's end `app` is an unconnected unix stream socket): connect `app` straight
    /// to the peer's kernel listener for `dst` and write the connection's record first on it
    /// (what the accepting application's `accept` reads), from `local`. No daemon is on the
    /// way, then or later: the peer's daemon does not even hear of it. Our record of the
    /// socket and one of its accepted end (`ctl::mirror_id`, for the accepting application's
    /// `getsockname`, `getpeername` and options) stay until the application closes it.
    ///
    /// A peer not heard from yet, or whose listeners have not come, is waited for a little
    /// (`Direct::Wait`: the client asks again), as a SYN would wait for it.
    pub(super) fn cut_direct(
        &mut self,
        id: u64,
        local: SocketAddr,
        dst: SocketAddr,
        app: &Fd,
    ) -> Direct {
        if !self.cut.on {
            return Direct::No;
        }
        let now = self.net.now;
        let ip = dst.ip();
        let (sc, l) = if self.net.is_own(&ip) {
            // Within the node: one of our own kernel listeners, or the node's TCP.
            let mine: Vec<PeerListener> = self.kernel_listeners().collect();
            match listener_for(&mine, ip, dst.port(), table::pick(id)) {
                Some(l) => (None, l),
                None => return Direct::No,
            }
        } else {
            let mut w = *self.cut.waits.entry(id).or_insert((now, None));
            let Some(sc) = self.net.dev.cut_route(ip) else {
                if self.net.dev.cut_known(ip) {
                    return Direct::No;
                }
                if now >= w.0 + WAIT_NEIGHBOUR {
                    return Direct::No;
                }
                self.net.prime_neighbour(ip);
                return Direct::Wait;
            };
            let known = *w.1.get_or_insert(now);
            self.cut.waits.insert(id, (w.0, Some(known)));
            let Some(t) = self.cut.peers.get(&sc) else {
                // (Asked at the next poll.)
                return if now < known + WAIT_SHORTCUT {
                    Direct::Wait
                } else {
                    Direct::No
                };
            };
            let Some(l) = listener_for(&t.list, ip, dst.port(), table::pick(id)) else {
                if !t.complete && now < t.asked.max(known) + WAIT_TABLE {
                    return Direct::Wait;
                }
                return Direct::No;
            };
            (Some(sc), l)
        };
        // Its application takes connections from root and its own user only (it cannot tell
        // ours from another user's): through TCP otherwise.
        let me = sys::geteuid();
        if me != 0 && me != l.uid {
            return Direct::No;
        }
        match connect_nb(app.raw(), &names::listener_name(l.node, l.lid)) {
            Ok(()) if !sys::listened_by(app.raw(), l.uid) => {
                // Another user's socket under that name: our socket is its now, and useless.
                log::warn!("cut-through to {dst}: the listener is another user's");
                let _ = sys::shutdown(app.raw(), libc::SHUT_RDWR);
                if let Some(t) = sc.and_then(|sc| self.cut.peers.get_mut(&sc)) {
                    t.list.retain(|o| *o != l);
                }
                self.cut.table_dirty = true;
                return Direct::Failed;
            }
            Ok(()) => {}
            // A full backlog: this one goes through TCP (whose listener queue waits).
            Err(e) if e.is_again() => return Direct::No,
            Err(e) => {
                log::debug!("cut-through to {dst}: {e}");
                if let Some(t) = sc.and_then(|sc| self.cut.peers.get_mut(&sc)) {
                    t.list.retain(|o| *o != l);
                }
                self.cut.table_dirty = true;
                return Direct::No;
            }
        }
        // (TCP_NODELAY, set before the connect, is the client's to keep from now on.) Its
        // send buffer is the socket's, as a TCP socket's would be: a unix socket's default
        // (about 200 KiB) would halve a bulk upload.
        let (nodelay, sndbuf) = self
            .socks
            .get(&id)
            .map_or((false, APP_SOCKBUF), |s| (s.opts.nodelay, s.opts.sndbuf));
        let _ = sys::setsockopt_int(app.raw(), libc::SOL_SOCKET, libc::SO_SNDBUF, sndbuf);
        let _ = sys::setsockopt_int(
            app.raw(),
            libc::SOL_SOCKET,
            libc::SO_PRIORITY,
            ctl::CUT_PRIORITY | if nodelay { ctl::NODELAY_PRIORITY } else { 0 },
        );
        let mid = ctl::mirror_id(id);
        let rec = AcceptRecord {
            id: mid,
            local: WireAddr::presented(dst, l.inet6),
            peer: WireAddr::presented(local, l.inet6),
        };
        let _ = sys::send(
            app.raw(),
            &rec.encode(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        );
        self.cut.waits.remove(&id);
        let Some(s) = self.socks.get_mut(&id) else {
            return Direct::Done;
        };
        s.local = Some(local);
        s.peer = Some(dst);
        s.so_error = 0;
        s.tcp = TcpState::Cut(Cut::new(id, now));
        self.cut.made += 1;
        if let Some(sc) = sc {
            self.net.dev.cut_made(sc);
        }
        Direct::Done
    }

    /// `Adopt`: the accepting application's record of a cut-through connection its kernel
    /// listener `lid` took (`ino`: its inode; the record goes when no socket has it).
    pub(super) fn op_adopt(
        &mut self,
        id: u64,
        lid: u64,
        (local, peer): (WireAddr, WireAddr),
        ino: u64,
        caller: u32,
    ) {
        if id & ctl::MIRROR_BIT == 0 || self.socks.contains_key(&id) {
            return;
        }
        let (Some(local), Some(peer)) = (local.0, peer.0) else {
            return;
        };
        let l = self
            .socks
            .get(&lid)
            .filter(|l| matches!(&l.tcp, TcpState::Listening(li) if li.kernel.is_some()));
        let me = sys::geteuid();
        let mut s = match l {
            Some(l) => {
                if caller != 0 && caller != l.owner && caller != me {
                    return;
                }
                let mut s = Sock::new(
                    l.domain,
                    Kind::Tcp,
                    Fd::none(),
                    self.work.waker(id),
                    l.owner,
                );
                s.opts = l.opts.clone();
                s.opts.other.clear();
                s
            }
            // The listener closed since (the record is made when something is asked about
            // the connection): the node's own user's, then, with the family of its address.
            None if caller == 0 || caller == me => {
                let domain = if local.is_ipv6() {
                    libc::AF_INET6
                } else {
                    libc::AF_INET
                };
                Sock::new(domain, Kind::Tcp, Fd::none(), self.work.waker(id), caller)
            }
            None => return,
        };
        s.local = Some(unmapped(local));
        s.peer = Some(unmapped(peer));
        s.app_ino = Some(ino);
        s.tcp = TcpState::Cut(Cut::new(id, self.net.now));
        self.socks.insert(id, s);
        self.cut.taken += 1;
    }

    /// Socket `id` no longer waits for a peer (`cut_direct`).
    pub(super) fn cut_waited(&mut self, id: u64) {
        self.cut.waits.remove(&id);
    }

    /// A peer's `Connect` to one of our listeners: queue the connection with `fd` as its
    /// app end, or `None` (refused, nothing of it taken).
    fn cut_take(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        filler: u32,
        fd: Option<Fd>,
    ) -> Option<()> {
        let refuse = |why: &str| {
            log::debug!("cut-through {src} -> {dst}: refused: {why}");
            None
        };
        let Some(d) = fd else {
            return refuse("no descriptor");
        };
        if !self.cut.on {
            return refuse("off here");
        }
        if !self.net.is_own(&dst.ip()) || filler > MAX_FILLER {
            return refuse("not ours");
        }
        let Some(lid) = self.match_listener(dst.ip(), dst.port(), Some(src)) else {
            return refuse("no listener");
        };
        let l = self.socks.get(&lid)?;
        let TcpState::Listening(li) = &l.tcp else {
            return None;
        };
        if self.net.accept_pending(l) >= li.backlog.max(1) {
            return refuse("backlog full");
        }
        if li.kernel.is_some() {
            // Its connections come straight from the connecting application (`cut_direct`).
            return refuse("a kernel listener");
        }
        // A connected unix stream socket without a name, holding the whole filler.
        if sys::getsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_DOMAIN) != Ok(libc::AF_UNIX)
            || sys::getsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_TYPE)
                != Ok(libc::SOCK_STREAM)
        {
            return refuse("not a unix stream socket");
        }
        if !matches!(
            sys::getsockname_unix(d.raw()),
            Ok(None | Some(sys::UnixAddr::Unnamed))
        ) {
            return refuse("named already");
        }
        if crate::os::inq(d.raw()).unwrap_or(0) < filler as usize {
            return refuse("without its filler");
        }
        let id = self.new_id();
        sys::bind_unix(d.raw(), &names::socket_name(self.net.id, id)).ok()?;
        // Nothing can fail from here: the filler goes, and the connecting app may write.
        drain_nb(d.raw(), filler as usize);
        let _ = sys::fcntl(d.raw(), libc::F_SETFL, 0);
        let now = self.net.now;
        let waker = self.work.waker(id);
        let l = self.socks.get_mut(&lid)?;
        // (Its daemon end is the peer's application's: none here.)
        let mut s = queue_accepted(
            &mut self.net.delivered,
            l,
            false,
            (id, Fd::none(), waker),
            d,
            dst,
            src,
        );
        s.tcp = TcpState::Cut(Cut::new(id, now));
        self.work.add(lid);
        self.socks.insert(id, s);
        Some(())
    }

    /// The peer daemon's answer to our `Connect` `tag`.
    fn cut_answer(&mut self, sc: u32, tag: u64, ok: bool) {
        log::debug!("cut-through answer on shortcut {sc}: {ok}");
        let Some(&id) = self.cut.pending.get(&tag) else {
            return;
        };
        let Some(s) = self.socks.get_mut(&id) else {
            self.cut.pending.remove(&tag);
            return;
        };
        if !matches!(&s.tcp, TcpState::CutPending(p) if p.sc == sc) {
            return;
        }
        self.cut.pending.remove(&tag);
        let TcpState::CutPending(p) = std::mem::replace(&mut s.tcp, TcpState::Idle) else {
            return;
        };
        if ok {
            // Our end now belongs to the peer's application.
            if let Some(ep) = self.cut.ep {
                let _ = sys::epoll_ctl(ep, libc::EPOLL_CTL_DEL, s.dmn.raw(), 0, 0);
            }
            s.dmn = Fd::none();
            let _ = sys::setsockopt_int(
                p.app.raw(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                s.opts.sndbuf,
            );
            s.tcp = TcpState::Cut(Cut::new(id, self.net.now));
            s.so_error = 0;
            self.cut.made += 1;
            self.net.dev.cut_made(sc);
            // (Dropping `p` wakes a blocking connect.)
            return;
        }
        // Through TCP, as if cut-through had not been tried.
        self.cut.refused += 1;
        let dst = s.peer.take();
        s.local = None;
        let CutPending {
            app,
            _notify: notify,
            filler,
            ..
        } = p;
        let mut app = Some(app);
        let r = match dst {
            Some(dst) => self.op_connect_tcp(id, WireAddr(Some(dst)), &mut app, notify, filler),
            None => Err(Errno::EINVAL),
        };
        match r {
            Err(e) if e.0 == libc::EINPROGRESS => {}
            Err(e) => self.connect_failed(id, e.0, filler, app),
            Ok(_) => {}
        }
    }

    /// Socket `id`'s cut-through connect ended well if the application's end is writable
    /// again: the peer daemon drains the filler only once it has taken the connection, and
    /// its answer may not have been read yet while the application, woken by the drain,
    /// already asks (`connect` again must then say `EISCONN`, as on Linux).
    pub(super) fn cut_settle(&mut self, id: u64) {
        let Some(s) = self.socks.get(&id) else {
            return;
        };
        let TcpState::CutPending(p) = &s.tcp else {
            return;
        };
        let mut pfd = [libc::pollfd {
            fd: p.app.raw(),
            events: libc::POLLOUT,
            revents: 0,
        }];
        if sys::poll(&mut pfd, 0) == Ok(1) && pfd[0].revents & libc::POLLOUT != 0 {
            let (tag, sc) = (p.tag, p.sc);
            self.cut_answer(sc, tag, true);
        }
    }

    /// Drop the records (due for a look, from `cut_visit`) whose application's end is
    /// closed: its name is free. Many at once (a busy server: thousands of short
    /// connections a second) cost one read of `/proc/net/unix` rather than a probe each.
    pub(super) fn cut_sweep(&mut self) {
        if self.cut.due.is_empty() {
            return;
        }
        let due = std::mem::take(&mut self.cut.due);
        let node = self.net.id;
        let present = if due.len() > 16 {
            self.names_present()
        } else {
            None
        };
        // The accepted ends of cut-through connections (`op_adopt`) have no name of their
        // own: they go when no socket has their inode.
        let inodes = due
            .iter()
            .any(|id| id & ctl::MIRROR_BIT != 0)
            .then(|| self.inodes_present())
            .flatten();
        let now = self.net.now;
        for id in due {
            let Some(s) = self.socks.get_mut(&id) else {
                continue;
            };
            // (A fresh socket may listen yet, a cut-through one never.)
            let fresh = matches!(s.tcp, TcpState::Fresh(_));
            let (TcpState::Cut(c) | TcpState::Fresh(c)) = &mut s.tcp else {
                continue;
            };
            let gone = if id & ctl::MIRROR_BIT != 0 {
                match (s.app_ino, &inodes) {
                    (Some(ino), Some(set)) => !set.contains(&ino),
                    _ => s.app_ino.is_none(),
                }
            } else {
                match &present {
                    Some(names) => !names.contains(&proc_name(node, id)),
                    None => app_gone(node, id, fresh),
                }
            };
            if gone {
                self.socks.remove(&id);
                self.kept_drop(id);
            } else {
                c.every = (c.every * 2).min(CHECK_MAX);
                c.check_at = now + c.every;
            }
        }
    }

    /// The inodes of this node's sockets that exist now (one read of `/proc/net/unix`; an
    /// accepted connection shows its listener's name).
    fn inodes_present(&self) -> Option<HashSet<u64>> {
        let prefix = format!("@ioth/{:016x}/", self.net.id);
        std::fs::read_to_string("/proc/net/unix")
            .ok()
            .map(|t| names_by_inode(&t, &prefix).into_keys().collect())
    }

    /// The names of this node's sockets that exist now (one read of `/proc/net/unix`).
    fn names_present(&self) -> Option<HashSet<String>> {
        let prefix = format!("@ioth/{:016x}/", self.net.id);
        std::fs::read_to_string("/proc/net/unix")
            .ok()
            .map(|t| names_by_inode(&t, &prefix).into_values().collect())
    }

    /// Drop every record whose application's end is closed, due for a look or not; how many
    /// went. For a connect that found no free ephemeral port: a record keeps its connection's
    /// port until its next look (0.5 s after the connect at the earliest), so thousands of
    /// short cut-through connections a second hold thousands of ports of the 16,384 that
    /// their applications closed long ago. Each sweep is a read of every unix socket of the
    /// host: after one that freed nothing (the ports belong to open connections), the next
    /// waits 100 ms.
    pub(super) fn cut_sweep_all(&mut self) -> usize {
        let now = self.net.now;
        if self
            .cut
            .swept_all
            .is_some_and(|(t, none)| none && now < t + Duration::from_millis(100))
        {
            return 0;
        }
        self.cut.swept_all = Some((now, true));
        let node = self.net.id;
        let records: Vec<u64> = self
            .socks
            .iter()
            .filter(|(id, s)| {
                matches!(s.tcp, TcpState::Cut(_) | TcpState::Fresh(_)) && *id & ctl::MIRROR_BIT == 0
            })
            .map(|(id, _)| *id)
            .collect();
        if records.is_empty() {
            return 0;
        }
        let Some(present) = self.names_present() else {
            return 0;
        };
        let mut gone = 0;
        for id in records {
            if !present.contains(&proc_name(node, id)) {
                self.socks.remove(&id);
                self.kept_drop(id);
                gone += 1;
            }
        }
        self.cut.swept_all = Some((now, gone == 0));
        gone
    }

    /// Go on with a connect that waited for its neighbour: cut-through if a shortcut to it
    /// came, else TCP.
    fn cut_resume(&mut self, id: u64) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        let TcpState::CutWait(w) = std::mem::replace(&mut s.tcp, TcpState::Idle) else {
            return;
        };
        let local = s.local.take();
        s.peer = None;
        let CutWait {
            app,
            notify,
            filler,
            dst,
            ..
        } = w;
        let mut app = Some(app);
        let mut notify = notify;
        if let Some(local) = local
            && self.net.dev.cut_route(dst.ip()).is_some()
            && self
                .cut_connect(id, local, dst, &mut app, &mut notify, filler)
                .is_ok()
        {
            return;
        }
        match self.op_connect_tcp(id, WireAddr(Some(dst)), &mut app, notify, filler) {
            Err(e) if e.0 == libc::EINPROGRESS => {}
            Err(e) => self.connect_failed(id, e.0, filler, app),
            Ok(_) => {}
        }
    }

    /// A connect waiting for an answer that will not come: fail it with `err`.
    fn cut_fail(&mut self, id: u64, err: i32) {
        self.cut.lost += 1;
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        let TcpState::CutPending(p) = std::mem::replace(&mut s.tcp, TcpState::Done) else {
            return;
        };
        self.cut.pending.remove(&p.tag);
        self.connect_failed(id, err, p.filler, Some(p.app));
    }

    /// A connect that failed after its app end was filled: shut down, drain, writable again,
    /// `SO_ERROR` (see `connect_done`). The drain never blocks: after a cut-through
    /// `Connect` our end's flags are shared with the peer's application.
    pub(super) fn connect_failed(&mut self, id: u64, err: i32, filler: usize, app: Option<Fd>) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        log::debug!(target: "ioth_stackd::connect", "connect of socket {id:x} failed: errno {err}");
        let _ = sys::shutdown(s.dmn.raw(), libc::SHUT_RDWR);
        drain_nb(s.dmn.raw(), filler);
        if let Some(a) = &app {
            let _ = sys::setsockopt_int(a.raw(), libc::SOL_SOCKET, libc::SO_SNDBUF, s.opts.sndbuf);
        }
        s.so_error = err;
        s.tcp = TcpState::Done;
    }

    /// Visit a cut-through socket's record or pending connect (from `service`): `false` once
    /// it can go.
    pub(super) fn cut_visit(&mut self, id: u64) -> bool {
        let now = self.net.now;
        let Some(s) = self.socks.get_mut(&id) else {
            return false;
        };
        match &mut s.tcp {
            TcpState::CutWait(w) => {
                if s.hup {
                    return false;
                }
                let ip = w.dst.ip();
                if w.known.is_none() && self.net.dev.cut_known(ip) {
                    w.known = Some(now);
                }
                let mut until = w.start + WAIT_NEIGHBOUR;
                if let Some(t) = w.known {
                    until = until.min(t + WAIT_SHORTCUT);
                }
                let go = self.net.dev.cut_route(ip).is_some() || now >= until;
                if !go {
                    // The answer comes with no event of this socket's: look again soon, and
                    // at the deadline exactly.
                    self.alarms
                        .push(Reverse((until.min(now + CUT_WAIT_LOOK), id)));
                    return true;
                }
                self.cut_resume(id);
                true
            }
            TcpState::CutPending(p) => {
                if now >= p.start + ANSWER_TIMEOUT {
                    self.cut_fail(id, libc::ETIMEDOUT);
                } else {
                    self.revisit.push(id);
                }
                true
            }
            TcpState::Cut(c) | TcpState::Fresh(c) => {
                if now >= c.check_at {
                    self.cut.due.push(c.id);
                }
                true
            }
            _ => true,
        }
    }
}

/// An address as the stack keeps it: a v4-mapped IPv6 address as IPv4.
/// `connect` of an application's unix socket that never blocks us: a blocking one is made
/// non-blocking for the call (its application waits for our answer meanwhile), so that a
/// full backlog is `EAGAIN`, not a daemon stopped until the listener takes a connection.
pub(super) fn connect_nb(fd: RawFd, to: &sys::UnixAddr) -> Result<(), Errno> {
    let fl = sys::fcntl(fd, libc::F_GETFL, 0)?;
    if fl & libc::O_NONBLOCK != 0 {
        return sys::connect_unix(fd, to);
    }
    sys::fcntl(fd, libc::F_SETFL, (fl | libc::O_NONBLOCK) as libc::c_long)?;
    let r = sys::connect_unix(fd, to);
    let _ = sys::fcntl(fd, libc::F_SETFL, fl as libc::c_long);
    r
}

fn unmapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        a => a,
    }
}
