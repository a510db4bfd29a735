//! The smoltcp `Device` over a switch port.
//!
//! * Receive: the event loop reads one frame at a time into [`SwitchDevice::rx`] (from the
//!   switch socket, a shortcut's socket or a shortcut's ring), looks at its headers first
//!   ([`SwitchDevice::frame`], `frame.rs`), marks it staged, and calls
//!   `poll_ingress_single`; `receive()` hands out only that staged frame.
//! * Transmit: frames are built in one reusable buffer and sent at once. `EAGAIN` keeps the
//!   frame pending and `transmit()` returns `None` until it went out (back-pressure, never a
//!   drop). While the switch is away (restart), frames are dropped: TCP retransmits.
//! * Wake-ups: once the event loop says which epoll instance watches the switch socket
//!   ([`SwitchDevice::watch`]), the device asks for `EPOLLOUT` only while a frame is pending.
//!   Otherwise every frame the switch takes off the socket would wake the daemon for nothing
//!   (an AF_UNIX sender is woken whenever its peer frees buffer space).
//! * Hairpin: smoltcp has no loopback. Frames addressed to our own MAC, and ARP requests or
//!   neighbour solicitations for one of our own addresses, go to a local queue that the event
//!   loop reads before the switch, so a node can talk to itself.
//!
//! * Checksums: on a native port whose switch fills them in ([`SwitchPort::csum_fill`]), the
//!   device tells smoltcp to neither compute (IPv4 header, TCP, UDP) nor verify (anything)
//!   checksums; ICMP checksums are still computed (not on the data path, and an ICMPv4 echo
//!   may be fragmented, which the switch cannot fill). smoltcp reads the capabilities once,
//!   when the interface is made, so the choice is fixed for the node's life: should the switch
//!   come back after a restart without the offer, the device fills the checksums itself
//!   ([`ioth_common::csum::fill`]). On a VDE port everything is computed and verified.
//!
//! * Shortcuts: on a native port that takes them ([`SwitchPort::shortcuts`]), the switch may
//!   hand over a direct `SOCK_SEQPACKET` socket to another stack's port
//!   ([`ioth_common::vde::ShortcutOffer`]). Unicast frames for that peer's MAC then go there
//!   instead of the switch socket, and frames are read from every shortcut as from the
//!   switch: the shortcut sockets are watched by the same epoll token as the switch socket
//!   (edge-triggered), and [`SwitchDevice::recv_switch`] answers `EAGAIN` only once every
//!   source said so in a row. A source keeps the turn for at most [`STREAK`] frames.
//!   - Rings: each side makes its half of the shared-memory rings (the ring it fills, the
//!     page where it acknowledges the ring it drains) and passes it over the shortcut
//!     (`ring.rs`); once the peer's half has arrived, frames go through the rings and the
//!     socket carries only doorbells. smoltcp builds a frame right in our ring when the last
//!     frame went to the same shortcut (a bet: a frame for someone else is copied out and
//!     goes its way); an incoming ring frame is copied into `rx` before anything looks at
//!     it, since the peer can still write the ring. Without rings (no memfd here), frames
//!     are sent on the socket itself.
//!   - The peer may be hostile (any process that may open the switch's native socket): a
//!     ring it passes that is not a sealed memfd of the right size, or the first malformed
//!     record or `head` it writes, ends the shortcut (counted as `shortcut_malformed`).
//!   - A full shortcut never blocks: the frame goes through the switch instead (counted as
//!     `shortcut_full`). Blocking there could stall two nodes waiting on each other, with
//!     no switch queue in between.
//!   - EOF or an error on a shortcut (the switch revoked it, the peer died) ends it: its
//!     frames go through the switch again. Shortcuts end with the switch port (restart).
//!     Counters: [`SwitchDevice::shortcut_info`].
//!
//! * Uplink shortcuts (`crate::direct`): a frame for a MAC the switch offered the tunnel
//!   endpoint of is sent there from the daemon's own UDP socket instead of the switch's ring
//!   (built in the ring slot all the same, which is then left uncommitted).
//!
//! No allocation per frame: hairpin buffers are recycled.

#![deny(unsafe_code)]

use crate::cut;
use crate::direct::{self, Directs};
use crate::link::{Link, Recv};
use crate::ring::{self, Half, RxRing, TxRing};
use crate::shortcut::{Broken, Shortcut, Shortcuts};
use foldhash::{HashMap, HashMapExt};
use ioth_common::port::{Incoming, PortKind, SwitchPort};
use ioth_common::sys::{self, Errno, Fd};
use ioth_common::vde;
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::os::fd::RawFd;

/// Frames read from one source in a row before the next source gets a turn.
pub const STREAK: u32 = 32;
/// Most shortcuts a node keeps (further offers are refused).
pub const MAX_SHORTCUTS: usize = 256;

pub struct SwitchDevice {
    port: Option<SwitchPort>,
    /// The port's number and kind (the last ones while the switch is away).
    port_no: u32,
    port_kind: PortKind,
    pub mac: [u8; 6],
    pub own: Vec<IpAddr>,
    /// Largest Ethernet frame (no FCS).
    pub frame_mtu: usize,
    /// Largest frame received: what the port carries (`rx` has 64 bytes more).
    rx_max: usize,
    pub rx: Vec<u8>,
    pub staged: Option<usize>,
    tx: Vec<u8>,
    pending: Option<usize>,
    pub hairpin: VecDeque<Vec<u8>>,
    free: Vec<Vec<u8>>,
    pub sent: u64,
    pub dropped_down: u64,
    /// Checksums left to the switch (fixed at creation, see the module documentation).
    offload: bool,
    /// The epoll instance and token watching the switch socket (see [`SwitchDevice::watch`]),
    /// and whether `EPOLLOUT` is asked for.
    watch: Option<(RawFd, u64)>,
    out_armed: bool,
    /// The token our shortcuts' doorbells (eventfds) are watched under: their events say
    /// "a frame in a ring", not "something on a socket" ([`SwitchDevice::watch_bells`]).
    bell_token: u64,
    /// A socket (the switch port's, a shortcut's) may have something to read: an epoll
    /// event for one came since they all said `EAGAIN`. While not, a drain looks at the
    /// rings only, with no `recvmsg` that can only say `EAGAIN`. Always set without epoll.
    sockets_dirty: bool,
    pub shortcuts: Shortcuts,
    /// Source read from: 0 the switch port, i + 1 shortcut i; and frames read from it in a
    /// row.
    rr: usize,
    streak: u32,
    /// TCP cut-through (`crate::cut`): allowed on this node; the MAC each address was last
    /// heard from (any frame, ARP included); messages received and not yet taken.
    pub cut_through: bool,
    cut_macs: HashMap<IpAddr, [u8; 6]>,
    /// Changes whenever `cut_macs` or the list of shortcuts does (`Link::cut_gen`).
    cut_gen: u64,
    cut_inbox: VecDeque<(u32, cut::Msg, Option<Fd>)>,
    /// When the switch was last told how many connections were cut through.
    cut_reported_at: Option<std::time::Instant>,
    /// The figures the switch was last told ([`vde::StatReport`]: metric, key, value).
    stats_sent: HashMap<(u8, u32), u64>,
    /// Shared-memory rings with the switch itself, on a native port that takes them.
    sw: SwitchRings,
    /// Uplink shortcuts: frames for MACs behind the switch's VXLAN uplinks, sent straight to
    /// their tunnel endpoints (`crate::direct`).
    pub direct: Directs,
}

/// The rings of a native switch port ([`vde::NATIVE_FLAG_RINGS`]): our half goes to the switch
/// when the port opens, and the switch answers with its own; from then on frames go both ways
/// through them, and the port's socket carries doorbells (see the module documentation).
#[derive(Default)]
struct SwitchRings {
    /// Our half, sent, until the switch's arrives.
    half: Option<Half>,
    tx: Option<TxRing>,
    rx: Option<RxRing>,
    /// A frame waits for room in `tx`: the switch rings when it frees some.
    full: bool,
    /// The switch broke the ring protocol (a bug): the port is dropped and opened again.
    broken: bool,
    tx_frames: u64,
    rx_frames: u64,
}

impl SwitchRings {
    /// Send our half on a port that takes rings.
    fn start(port: &SwitchPort) -> SwitchRings {
        let mut r = SwitchRings::default();
        if port.rings {
            r.half = Half::offer(port.data_fd())
                .map_err(|e| log::debug!("switch ring: {e}"))
                .ok();
        }
        r
    }
}

/// At most one [`vde::CutReport`] round per this long (the switch's `shortcut/print`).
const CUT_REPORT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Ask `ep` for `EPOLLOUT` on `fd` too (`on`), or only for `EPOLLIN`; edge-triggered.
fn arm(watch: Option<(RawFd, u64)>, fd: RawFd, armed: &mut bool, on: bool) {
    let Some((ep, token)) = watch else {
        return;
    };
    if *armed == on {
        return;
    }
    let mut ev = libc::EPOLLIN | libc::EPOLLET;
    if on {
        ev |= libc::EPOLLOUT;
    }
    if sys::epoll_ctl(ep, libc::EPOLL_CTL_MOD, fd, ev as u32, token).is_ok() {
        *armed = on;
    }
}

impl SwitchDevice {
    pub fn new(port: SwitchPort, mac: [u8; 6], own: Vec<IpAddr>, frame_mtu: usize) -> Self {
        let bufsz = frame_mtu.max(port.max_frame).max(1518);
        let offload = port.csum_fill;
        SwitchDevice {
            port_no: port.port,
            port_kind: port.kind,
            port: None,
            mac,
            own,
            frame_mtu,
            rx_max: bufsz,
            rx: vec![0; bufsz + 64],
            staged: None,
            tx: vec![0; frame_mtu],
            pending: None,
            hairpin: VecDeque::new(),
            free: Vec::new(),
            sent: 0,
            dropped_down: 0,
            offload,
            watch: None,
            out_armed: false,
            bell_token: 0,
            sockets_dirty: true,
            shortcuts: Shortcuts::default(),
            rr: 0,
            streak: 0,
            cut_through: false,
            cut_macs: HashMap::new(),
            cut_gen: 0,
            cut_inbox: VecDeque::new(),
            cut_reported_at: None,
            stats_sent: HashMap::new(),
            sw: SwitchRings::start(&port),
            direct: Directs::default(),
        }
        .with_port(port)
    }

    fn with_port(mut self, port: SwitchPort) -> Self {
        self.port = Some(port);
        self
    }

    /// The switch port, if plugged in.
    pub fn port(&self) -> Option<&SwitchPort> {
        self.port.as_ref()
    }

    /// Plug into a (new) switch port: after a switch restart.
    pub fn plug(&mut self, port: SwitchPort) {
        self.port_no = port.port;
        self.port_kind = port.kind;
        self.sw = SwitchRings::start(&port);
        self.port = Some(port);
        self.sockets_dirty = true;
        // A new switch knows nothing yet.
        self.stats_sent.clear();
    }

    /// Unplug (the switch went away); frames are dropped until [`SwitchDevice::plug`].
    pub fn unplug(&mut self) -> Option<SwitchPort> {
        self.sw = SwitchRings::default();
        self.direct.clear();
        self.port.take()
    }

    /// The frame of `n` bytes just read by [`SwitchDevice::recv_switch`] or
    /// [`SwitchDevice::take_hairpin`].
    pub fn frame(&self, n: usize) -> &[u8] {
        &self.rx[..n.min(self.rx.len())]
    }

    /// One line for the node's info: shortcuts open, made, ended, frames sent and received.
    pub fn shortcut_info(&self) -> String {
        let s = &self.shortcuts;
        format!(
            "shortcuts={} shortcuts_made={} shortcuts_ended={} shortcut_tx={} shortcut_rx={} \
             shortcut_ring_tx={} shortcut_full={} shortcut_malformed={}\n",
            s.list.len(),
            s.made,
            s.ended,
            s.tx_frames,
            s.rx_frames,
            s.ring_tx,
            s.full,
            s.malformed
        ) + &format!(
            "switch_rings={} switch_ring_tx={} switch_ring_rx={}\n",
            u8::from(self.sw.tx.is_some()),
            self.sw.tx_frames,
            self.sw.rx_frames
        ) + &self.direct.info()
    }

    /// Take a shortcut the switch offered.
    fn accept_shortcut(&mut self, o: vde::ShortcutOffer, fd: Fd) {
        if let Some(i) = self.shortcuts.find(&o.peer) {
            self.shortcuts.end(i, self.watch);
        }
        if self.shortcuts.list.len() >= MAX_SHORTCUTS {
            let _ = sys::shutdown(fd.raw(), libc::SHUT_RDWR);
            return;
        }
        if let Some((ep, token)) = self.watch {
            let ev = (libc::EPOLLIN | libc::EPOLLET) as u32;
            if sys::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd.raw(), ev, token).is_err() {
                let _ = sys::shutdown(fd.raw(), libc::SHUT_RDWR);
                return;
            }
        }
        log::debug!("shortcut {} to {:02x?}", o.id, o.peer);
        // Our doorbell, watched before the peer can ring it (without one, doorbells come on
        // the socket).
        let bell = sys::eventfd().ok().filter(|b| {
            self.watch.is_none_or(|(ep, _)| {
                let ev = (libc::EPOLLIN | libc::EPOLLET) as u32;
                sys::epoll_ctl(ep, libc::EPOLL_CTL_ADD, b.raw(), ev, self.bell_token).is_ok()
            })
        });
        // Our half of the rings; without it, frames go through the socket.
        let half = Half::offer_with_bell(fd.raw(), bell.as_ref().map(|b| b.raw()))
            .map_err(|e| log::debug!("shortcut ring: {e}"))
            .ok();
        self.sockets_dirty = true;
        self.shortcuts.made += 1;
        self.cut_gen += 1;
        self.shortcuts.list.push(Shortcut {
            id: o.id,
            peer: o.peer,
            cut: o.flags & vde::SHORTCUT_NO_CUT == 0,
            fd,
            half,
            tx_ring: None,
            rx_ring: None,
            bell,
            peer_bell: None,
            cut_made: 0,
            cut_reported: 0,
            sent_frames: 0,
            sent_bytes: 0,
        });
    }

    /// The switch socket was just added to `ep` with `EPOLLIN | EPOLLET` under `token`: from
    /// now on the device adds `EPOLLOUT` only while a frame waits for room.
    pub fn watch(&mut self, ep: RawFd, token: u64) {
        self.watch = Some((ep, token));
        self.out_armed = false;
        self.bell_token = token;
        self.sockets_dirty = true;
    }

    /// Watch our shortcuts' doorbells under `token` rather than the sockets' (see
    /// `sockets_dirty`); events under it need only [`SwitchDevice::bell_rung`].
    pub fn watch_bells(&mut self, token: u64) {
        self.bell_token = token;
    }

    /// An epoll event for one of the sockets (the switch port's, a shortcut's).
    pub fn socket_event(&mut self) {
        self.sockets_dirty = true;
    }

    /// Whether an `EPOLLOUT` event will come when the pending frame can go (if `false` while
    /// blocked, the caller has to retry on its own).
    pub fn wakes_when_writable(&self) -> bool {
        self.out_armed || self.sw.full
    }

    /// Whether a frame waits for room on the switch socket.
    pub fn is_blocked(&self) -> bool {
        self.pending.is_some()
    }

    /// Try to send the pending frame; `true` if nothing is pending any more.
    pub fn flush(&mut self) -> bool {
        if self.port.is_none() && !self.shortcuts.list.is_empty() {
            self.shortcuts.clear(self.watch);
        }
        if let Some(n) = self.pending
            && let (Some(t), Some(p)) = (&mut self.sw.tx, &self.port)
        {
            match t.put(&self.tx[..n], p.data_fd()) {
                Ok(false) => return false,
                Ok(true) => {
                    self.sw.tx_frames += 1;
                    self.sent += 1;
                }
                Err(e) => {
                    log::warn!("switch ring: {e}");
                    self.sw.broken = true;
                    self.dropped_down += 1;
                }
            }
            self.pending = None;
            self.sw.full = false;
        }
        if let Some(n) = self.pending {
            // (Checksums, if needed, were filled when the frame was first sent.)
            match self.port.as_ref().map(|p| p.send(&self.tx[..n])) {
                Some(Err(e)) if e.is_again() => {
                    if let Some(p) = &self.port {
                        arm(self.watch, p.data_fd(), &mut self.out_armed, true);
                    }
                    return false;
                }
                _ => self.pending = None,
            }
        }
        if self.out_armed
            && let Some(p) = &self.port
        {
            arm(self.watch, p.data_fd(), &mut self.out_armed, false);
        }
        true
    }

    /// Take the next hairpinned frame into `rx`; its length.
    pub fn take_hairpin(&mut self) -> Option<usize> {
        let b = self.hairpin.pop_front()?;
        let n = b.len().min(self.rx.len());
        self.rx[..n].copy_from_slice(&b[..n]);
        self.free.push(b);
        Some(n)
    }

    /// Read one frame from the switch or one of the shortcuts into `rx` (see the module
    /// documentation); `EAGAIN` once every source is drained. `Ok(0)`: the switch closed the
    /// port. Shortcut offers are taken on the way.
    pub fn recv_switch(&mut self) -> Result<usize, Errno> {
        if self.port.is_none() {
            self.shortcuts.clear(self.watch);
            return Err(Errno::EAGAIN);
        }
        // Sources that said EAGAIN in a row.
        let mut dry = 0;
        loop {
            let sources = 1 + self.shortcuts.list.len();
            if dry >= sources {
                // Every socket said EAGAIN (or was known to): the next event sets it again.
                if self.watch.is_some() {
                    self.sockets_dirty = false;
                }
                return Err(Errno::EAGAIN);
            }
            if self.rr >= sources {
                self.rr = 0;
            }
            if self.streak >= STREAK {
                self.streak = 0;
                self.rr = (self.rr + 1) % sources;
            }
            if self.rr == 0 {
                let Some(p) = &self.port else {
                    return Err(Errno::EAGAIN);
                };
                if self.sw.broken {
                    return Err(Errno::EPIPE);
                }
                if let Some(r) = &mut self.sw.rx {
                    match r.pop(&mut self.rx) {
                        Ok(Some((n, wake))) => {
                            if wake {
                                ring::doorbell(p.data_fd());
                            }
                            self.sw.rx_frames += 1;
                            self.streak += 1;
                            return Ok(n);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            log::warn!("switch ring: {e}");
                            self.sw.broken = true;
                            return Err(Errno::EPIPE);
                        }
                    }
                }
                let got = if self.sockets_dirty {
                    p.recv_any(&mut self.rx)
                } else {
                    Err(Errno::EAGAIN)
                };
                match got {
                    Ok(Incoming::Frame(n)) => {
                        self.streak += 1;
                        return Ok(n);
                    }
                    Ok(Incoming::Shortcut(o, fd)) => {
                        self.accept_shortcut(o, fd);
                        dry = 0;
                    }
                    Ok(Incoming::Uplink(o, fd)) => {
                        self.direct.accept(o, fd);
                        dry = 0;
                    }
                    Ok(Incoming::Rings(data, ack)) => {
                        // The switch's half: its frames come through its ring from now on.
                        if let Some(h) = self.sw.half.take() {
                            match h.join(&data, &ack, self.rx_max) {
                                Ok((tx, rx)) => {
                                    self.sw.tx = Some(tx);
                                    self.sw.rx = Some(rx);
                                }
                                Err(e) => log::warn!("switch ring: {e}"),
                            }
                        }
                        dry = 0;
                    }
                    // A doorbell (or nothing we know).
                    Ok(Incoming::Ignored) => {}
                    Err(e)
                        if e.is_again() && self.sw.rx.as_mut().is_some_and(|r| r.wait_data()) =>
                    {
                        // A frame came into the ring meanwhile.
                    }
                    Err(e) if e.is_again() => {
                        dry += 1;
                        self.streak = 0;
                        self.rr = 1;
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            let i = self.rr - 1;
            match self.recv_shortcut(i) {
                Ok(Some(n)) => {
                    self.streak += 1;
                    self.shortcuts.rx_frames += 1;
                    return Ok(n);
                }
                Ok(None) => {
                    dry += 1;
                    self.streak = 0;
                    self.rr += 1;
                }
                Err(why) => {
                    self.shortcuts.fail(i, self.watch, why);
                    dry = 0;
                }
            }
        }
    }

    /// One frame from shortcut `i` into `rx`: from its ring, else from its socket (which
    /// also brings doorbells and the peer's half of the rings). `Ok(None)`: nothing now, and
    /// a doorbell or an epoll event will say when; `Err`: the shortcut is over (EOF, error,
    /// a broken ring).
    fn recv_shortcut(&mut self, i: usize) -> Result<Option<usize>, Broken> {
        let sc = &mut self.shortcuts.list[i];
        let dirty = self.sockets_dirty;
        loop {
            if let Some(r) = &mut sc.rx_ring
                && let Some((n, wake)) = r.pop(&mut self.rx)?
            {
                if wake {
                    sc.ring()?;
                }
                return Ok(Some(n));
            }
            let r = if dirty {
                sys::recvmsg(
                    sc.fd.raw(),
                    &mut [std::io::IoSliceMut::new(&mut self.rx)],
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            } else {
                Err(Errno::EAGAIN)
            };
            match r {
                Ok(m) if m.len == 0 => return Err(Errno::EPIPE.into()), // Revoked, or gone.
                Ok(mut m) if m.len <= self.rx.len() && self.rx[..m.len].starts_with(cut::MAGIC) => {
                    // A cut-through message (never a frame: that would have a multicast
                    // destination, which no shortcut carries). Garbage is dropped.
                    // (Taken even where cut-through is off: the stack refuses, so that the
                    // peer's connect goes on through TCP at once.)
                    if let Some(msg) = cut::Msg::parse(&self.rx[..m.len])
                        && self.cut_inbox.len() < 4096
                    {
                        let fd = (!m.fds.is_empty()).then(|| m.fds.swap_remove(0));
                        self.cut_inbox.push_back((sc.id, msg, fd));
                    }
                }
                Ok(m) if m.len > self.rx.len() => {} // Too big for us: dropped.
                Ok(m) if m.len >= vde::MIN_FRAME => return Ok(Some(m.len)),
                Ok(mut m)
                    if &self.rx[..m.len] == ring::SETUP_MAGIC
                        && (m.fds.len() == 2 || m.fds.len() == 3) =>
                {
                    // The peer's half: read from its ring and write into ours from now on,
                    // and ring its bell if it sent one.
                    if sc.rx_ring.is_some() {
                        return Err(ring::RingError::Setup.into());
                    }
                    let bell = (m.fds.len() == 3).then(|| m.fds.swap_remove(2));
                    if bell.as_ref().is_some_and(|b| !sys::is_eventfd(b.raw())) {
                        return Err(ring::RingError::Bell.into());
                    }
                    if let Some(half) = sc.half.take() {
                        let (tx, rx) = half.join(&m.fds[0], &m.fds[1], self.rx_max)?;
                        sc.tx_ring = Some(tx);
                        sc.rx_ring = Some(rx);
                        sc.peer_bell = bell;
                    }
                }
                Ok(_) => {} // A doorbell (or nothing we know).
                Err(e) if e.is_again() => {
                    // Ask for a doorbell; a frame may have come in meanwhile.
                    if !sc.rx_ring.as_mut().is_some_and(|r| r.wait_data()) {
                        return Ok(None);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl SwitchDevice {
    /// Tell the switch how many connections were cut through over each shortcut whose count
    /// changed, at most every [`CUT_REPORT_EVERY`] (what is left goes on a later call: the
    /// stack calls [`Link::cut_ended`] on every poll).
    fn report_cuts(&mut self) {
        if self
            .shortcuts
            .list
            .iter()
            .all(|s| s.cut_made == s.cut_reported)
        {
            return;
        }
        let now = std::time::Instant::now();
        if self
            .cut_reported_at
            .is_some_and(|t| now < t + CUT_REPORT_EVERY)
        {
            return;
        }
        let Some(p) = &self.port else {
            return;
        };
        if self.port_kind != PortKind::Native {
            return;
        }
        self.cut_reported_at = Some(now);
        for s in &mut self.shortcuts.list {
            if s.cut_made != s.cut_reported {
                let r = vde::CutReport {
                    shortcut: s.id,
                    made: s.cut_made,
                };
                if p.send(&r.encode()).is_ok() {
                    s.cut_reported = s.cut_made;
                }
            }
        }
    }

    /// Tell the switch the figures of `stats` that changed since it was last told, with the
    /// daemon's resident memory and the frames and bytes sent over each shortcut (what could
    /// not be sent goes next time).
    fn send_stats(&mut self, stats: &[(u8, u32, u64)]) {
        let Some(p) = &self.port else {
            return;
        };
        if self.port_kind != PortKind::Native {
            return;
        }
        let mut all = stats.to_vec();
        if let Some(rss) = resident_bytes() {
            all.push((vde::stat::RESIDENT, 0, rss));
        }
        for s in &self.shortcuts.list {
            all.push((vde::stat::SHORTCUT_FRAMES, s.id, s.sent_frames));
            all.push((vde::stat::SHORTCUT_BYTES, s.id, s.sent_bytes));
        }
        for d in &self.direct.list {
            all.push((vde::stat::SHORTCUT_FRAMES, d.id, d.frames));
            all.push((vde::stat::SHORTCUT_BYTES, d.id, d.bytes));
        }
        let live = |m: u8, k: u32| {
            (m != vde::stat::SHORTCUT_FRAMES && m != vde::stat::SHORTCUT_BYTES)
                || self.shortcuts.list.iter().any(|s| s.id == k)
                || self.direct.list.iter().any(|d| d.id == k)
        };
        self.stats_sent.retain(|(m, k), _| live(*m, *k));
        for (metric, key, value) in all {
            if self.stats_sent.get(&(metric, key)) == Some(&value) {
                continue;
            }
            let r = vde::StatReport { metric, key, value };
            match p.send(&r.encode()) {
                Ok(_) => {
                    self.stats_sent.insert((metric, key), value);
                }
                Err(_) => break,
            }
        }
    }

    /// Note which MAC sent the frame of `len` bytes in `rx` from its address (cut-through
    /// looks for a shortcut to that MAC).
    fn learn_sender(&mut self, len: usize) {
        let f = &self.rx[..len.min(self.rx.len())];
        let Some(ip) = cut::frame_sender_ip(f) else {
            return;
        };
        let Ok(mac) = <[u8; 6]>::try_from(&f[6..12]) else {
            return;
        };
        // Only from frames sent to us: the switch offers a shortcut just before the first
        // unicast frame between two nodes, so once one came, the offer (if any) is here too
        // and a connect need not wait for it. A broadcast (a node's announcement at start)
        // would make the address known before any offer could come.
        if f[0] & 1 != 0 || mac[0] & 1 != 0 || self.cut_macs.get(&ip) == Some(&mac) {
            return;
        }
        if self.cut_macs.len() >= 4096 {
            self.cut_macs.clear();
        }
        self.cut_macs.insert(ip, mac);
        self.cut_gen += 1;
    }
}

impl Link for SwitchDevice {
    fn recv(&mut self) -> Recv {
        if let Some(len) = self.take_hairpin() {
            return Recv::Frame { len, hairpin: true };
        }
        loop {
            return match self.recv_switch() {
                // A native port (SOCK_SEQPACKET) reads 0 bytes once the switch closed it.
                Ok(0) if self.port_kind == PortKind::Native => Recv::Down,
                Ok(len) => {
                    if self.cut_through {
                        self.learn_sender(len);
                    }
                    Recv::Frame {
                        len,
                        hairpin: false,
                    }
                }
                Err(e) if e.is_again() => Recv::Empty,
                Err(e) if e == Errno::EMSGSIZE || e == Errno::EINTR => continue,
                Err(e) => {
                    log::debug!("switch recv: {e}");
                    Recv::Down
                }
            };
        }
    }

    fn frame(&self, len: usize) -> &[u8] {
        SwitchDevice::frame(self, len)
    }

    fn stage(&mut self, len: Option<usize>) {
        self.staged = len;
    }

    fn hairpin(&mut self, frame: Vec<u8>) {
        self.hairpin.push_back(frame);
    }

    fn has_hairpin(&self) -> bool {
        !self.hairpin.is_empty()
    }

    fn send_now(&mut self, frame: &[u8]) {
        if crate::frame::is_for_self(frame, &self.mac, &self.own) {
            self.hairpin.push_back(frame.to_vec());
        } else if let Some(p) = &self.port {
            let _ = p.send(frame);
        }
    }

    fn set_own(&mut self, own: Vec<IpAddr>) {
        self.own = own;
    }

    fn is_blocked(&self) -> bool {
        SwitchDevice::is_blocked(self)
    }

    fn flush(&mut self) -> bool {
        SwitchDevice::flush(self)
    }

    fn wakes_when_writable(&self) -> bool {
        SwitchDevice::wakes_when_writable(self)
    }

    fn socket_event(&mut self) {
        SwitchDevice::socket_event(self)
    }

    fn cut_route(&self, ip: IpAddr) -> Option<u32> {
        let mac = self.cut_macs.get(&ip)?;
        self.shortcuts
            .list
            .iter()
            .find(|s| s.peer == *mac && s.cut)
            .map(|s| s.id)
    }

    fn cut_peers(&self) -> Vec<u32> {
        self.shortcuts
            .list
            .iter()
            .filter(|s| s.cut)
            .map(|s| s.id)
            .collect()
    }

    fn cut_known(&self, ip: IpAddr) -> bool {
        self.cut_macs.contains_key(&ip)
    }

    fn cut_gen(&self) -> u64 {
        self.cut_gen
    }

    fn cut_hosts(&self) -> Vec<(IpAddr, Option<u32>)> {
        self.cut_macs
            .iter()
            .map(|(ip, mac)| {
                let sc = self.shortcuts.list.iter().find(|s| s.peer == *mac);
                (*ip, sc.filter(|s| s.cut).map(|s| s.id))
            })
            .collect()
    }

    fn cut_send(&mut self, sc: u32, msg: &[u8], fds: &[RawFd]) -> Result<(), Errno> {
        let s = self
            .shortcuts
            .list
            .iter()
            .find(|s| s.id == sc)
            .ok_or(Errno::EPIPE)?;
        sys::sendmsg(
            s.fd.raw(),
            &[std::io::IoSlice::new(msg)],
            fds,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
        .map(|_| ())
    }

    fn cut_recv(&mut self) -> Option<(u32, cut::Msg, Option<Fd>)> {
        self.cut_inbox.pop_front()
    }

    fn cut_ended(&mut self) -> Vec<u32> {
        self.report_cuts();
        std::mem::take(&mut self.shortcuts.ended_ids)
    }

    fn cut_made(&mut self, sc: u32) {
        if let Some(s) = self.shortcuts.list.iter_mut().find(|s| s.id == sc) {
            s.cut_made = s.cut_made.wrapping_add(1);
        }
        self.report_cuts();
    }

    fn report_stats(&mut self, stats: &[(u8, u32, u64)]) {
        self.send_stats(stats);
    }

    fn info(&self) -> String {
        let kind = match self.port_kind {
            PortKind::Native => "native",
            PortKind::Vde => "vde",
        };
        format!(
            "port={}\nkind={kind}\n{}",
            self.port_no,
            self.shortcut_info()
        )
    }
}

pub struct Rx<'a>(&'a [u8]);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

pub struct Tx<'a> {
    buf: &'a mut Vec<u8>,
    pending: &'a mut Option<usize>,
    port: &'a Option<SwitchPort>,
    hairpin: &'a mut VecDeque<Vec<u8>>,
    free: &'a mut Vec<Vec<u8>>,
    mac: [u8; 6],
    own: &'a [IpAddr],
    sent: &'a mut u64,
    dropped: &'a mut u64,
    offload: bool,
    watch: Option<(RawFd, u64)>,
    out_armed: &'a mut bool,
    shortcuts: &'a mut Shortcuts,
    sw: &'a mut SwitchRings,
    direct: &'a mut Directs,
}

impl Tx<'_> {
    /// Whether frames of ours need their checksums filled here (see the module docs).
    fn fill_here(&self) -> bool {
        self.offload && self.port.as_ref().is_some_and(|p| !p.csum_fill)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        let fill = self.fill_here();
        // The bet: the frame goes to the same shortcut as the last one, and is built right
        // in its ring. If it does not, it is copied out and goes the ordinary way.
        // (A ring error here shows again when the frame is sent the ordinary way.)
        let bet = self.shortcuts.bet.and_then(|i| {
            let sc = self.shortcuts.list.get_mut(i)?;
            let peer = sc.peer;
            Some((i, peer, sc.tx_ring.as_mut()?.reserve(len).ok()??))
        });
        let r = match bet {
            Some((i, peer, slot)) => {
                let r = f(slot);
                if len >= 14 && slot[..6] == peer {
                    if fill {
                        ioth_common::csum::fill(slot);
                    }
                    let sc = &mut self.shortcuts.list[i];
                    let sent = match sc.tx_ring.as_mut().map(|ring| ring.commit(len)) {
                        Some(Ok(true)) => sc.ring().map_err(Broken::from),
                        Some(Ok(false)) => Ok(()),
                        Some(Err(e)) => Err(e.into()),
                        None => Err(Errno::EPIPE.into()),
                    };
                    match sent {
                        Ok(()) => {
                            *self.sent += 1;
                            self.shortcuts.tx_frames += 1;
                            self.shortcuts.ring_tx += 1;
                            sc.sent_frames += 1;
                            sc.sent_bytes += len as u64;
                        }
                        Err(why) => {
                            // The peer is gone or broke the ring (the frame with it; TCP
                            // sends it again).
                            self.shortcuts.fail(i, self.watch, why);
                            *self.dropped += 1;
                        }
                    }
                    return r;
                }
                self.buf[..len].copy_from_slice(slot);
                r
            }
            None => match self
                .sw
                .tx
                .as_mut()
                .and_then(|t| t.reserve(len).ok().flatten())
            {
                // Most frames go to the switch: with rings, each is built right in the
                // switch's ring, and copied out only if it turns out to be for a shortcut or
                // for ourselves.
                Some(slot) => {
                    let r = f(slot);
                    let to_switch = len >= 14
                        && !crate::frame::is_for_self(slot, &self.mac, self.own)
                        && self.shortcuts.find(&slot[..6]).is_none();
                    if !to_switch {
                        self.buf[..len].copy_from_slice(slot);
                        r
                    } else {
                        self.shortcuts.bet = None;
                        // For a MAC behind the switch's uplink, with an uplink shortcut:
                        // from here to the tunnel endpoint (the slot is not committed).
                        if let Some(i) = self.direct.find(&slot[..6])
                            && self.direct.send(i, slot) == direct::Sent::Out
                        {
                            *self.sent += 1;
                            return r;
                        }
                        if fill {
                            ioth_common::csum::fill(slot);
                        }
                        let t = self.sw.tx.as_mut().map(|t| t.commit(len));
                        match t {
                            Some(Ok(rung)) => {
                                if rung && let Some(p) = self.port {
                                    ring::doorbell(p.data_fd());
                                }
                                *self.sent += 1;
                                self.sw.tx_frames += 1;
                            }
                            Some(Err(e)) => {
                                log::warn!("switch ring: {e}");
                                self.sw.broken = true;
                                *self.dropped += 1;
                            }
                            None => *self.dropped += 1,
                        }
                        return r;
                    }
                }
                None => f(&mut self.buf[..len]),
            },
        };
        let frame = &self.buf[..len];
        if crate::frame::is_for_self(frame, &self.mac, self.own) {
            let mut b = self.free.pop().unwrap_or_default();
            b.clear();
            b.extend_from_slice(frame);
            self.hairpin.push_back(b);
            return r;
        }
        if fill {
            ioth_common::csum::fill(&mut self.buf[..len]);
        }
        let frame = &self.buf[..len];
        self.shortcuts.bet = None;
        if let Some(i) = self.shortcuts.find(&frame[..6]) {
            let sc = &mut self.shortcuts.list[i];
            match sc.send(frame) {
                Ok(true) => {
                    *self.sent += 1;
                    self.shortcuts.tx_frames += 1;
                    sc.sent_frames += 1;
                    sc.sent_bytes += frame.len() as u64;
                    if sc.tx_ring.is_some() {
                        self.shortcuts.ring_tx += 1;
                        self.shortcuts.bet = Some(i);
                    }
                    return r;
                }
                // Full: through the switch this time.
                Ok(false) => self.shortcuts.full += 1,
                // Revoked, the peer is gone or broke the ring: through the switch.
                Err(why) => self.shortcuts.fail(i, self.watch, why),
            }
        }
        if let Some(i) = self.direct.find(&frame[..6])
            && self.direct.send(i, &mut self.buf[..len]) == direct::Sent::Out
        {
            *self.sent += 1;
            return r;
        }
        let frame = &self.buf[..len];
        match self.port {
            Some(p) if let Some(t) = &mut self.sw.tx => match t.put(frame, p.data_fd()) {
                Ok(true) => {
                    *self.sent += 1;
                    self.sw.tx_frames += 1;
                }
                Ok(false) => {
                    *self.pending = Some(len);
                    self.sw.full = true;
                }
                Err(e) => {
                    log::warn!("switch ring: {e}");
                    self.sw.broken = true;
                    *self.dropped += 1;
                }
            },
            Some(p) => match p.send(frame) {
                Ok(_) => *self.sent += 1,
                Err(e) if e.is_again() => {
                    *self.pending = Some(len);
                    arm(self.watch, p.data_fd(), self.out_armed, true);
                }
                Err(e) => {
                    log::debug!("switch send: {e}");
                    *self.dropped += 1;
                }
            },
            None => *self.dropped += 1,
        }
        r
    }
}

impl Device for SwitchDevice {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _ts: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        self.staged?;
        if !self.flush() {
            return None;
        }
        let n = self.staged.take()?;
        let SwitchDevice {
            port,
            mac,
            own,
            rx,
            tx,
            pending,
            hairpin,
            free,
            sent,
            dropped_down,
            offload,
            watch,
            out_armed,
            shortcuts,
            sw,
            direct,
            ..
        } = self;
        Some((
            Rx(&rx[..n]),
            Tx {
                buf: tx,
                pending,
                port,
                hairpin,
                free,
                mac: *mac,
                own,
                sent,
                dropped: dropped_down,
                offload: *offload,
                watch: *watch,
                out_armed,
                shortcuts,
                sw,
                direct,
            },
        ))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<Tx<'_>> {
        if !self.flush() {
            return None;
        }
        Some(Tx {
            buf: &mut self.tx,
            pending: &mut self.pending,
            port: &self.port,
            hairpin: &mut self.hairpin,
            free: &mut self.free,
            mac: self.mac,
            own: &self.own,
            sent: &mut self.sent,
            dropped: &mut self.dropped_down,
            offload: self.offload,
            watch: self.watch,
            out_armed: &mut self.out_armed,
            shortcuts: &mut self.shortcuts,
            sw: &mut self.sw,
            direct: &mut self.direct,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.frame_mtu;
        c.max_burst_size = None;
        if self.offload {
            let mut k = ChecksumCapabilities::ignored();
            k.icmpv4 = Checksum::Tx;
            k.icmpv6 = Checksum::Tx;
            c.checksum = k;
        }
        c
    }
}

/// The process's resident memory (`/proc/self/statm`'s second field, in pages).
fn resident_bytes() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = t.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * sys::page_size())
}
