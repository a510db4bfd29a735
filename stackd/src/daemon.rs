//! The daemon around a [`Stack`]: the epoll loop, the control server (control connections
//! accepted with their peer credentials checked, requests read and answered), the switch
//! port (watched, and plugged in again after a switch restart), the wall clock, and the exit
//! once no socket and no client is left for `--linger`.
//!
//! One epoll instance watches, edge-triggered where it matters: the switch socket and its
//! shortcuts (`T_SWITCH`, through `SwitchDevice::watch`), the shortcuts' doorbells (`T_BELL`:
//! a frame in a ring, no socket to read), the switch's control socket of a
//! VDE port (`T_SWITCH_CTL`: its EOF means the switch is gone), the sockets of the switch's
//! uplink offers (`T_UPLINK`: their EOF ends them, `crate::direct`), the control listeners
//! (`T_LISTEN`), each control connection (`T_CTL | connection`), and the daemon end of each
//! socket (`T_SOCK | socket id`, from [`Stack::take_watch`]).

#![deny(unsafe_code)]

use crate::device::SwitchDevice;
use crate::keeper::Reporter;
use crate::stack::{AppEvent, KeptSocket, Stack, StackConfig, port_description};
use foldhash::{HashMap, HashMapExt};
use ioth_common::config::NodeConfig;
use ioth_common::ctl::{self, MAX_MSG, Reply, Request};
use ioth_common::names;
use ioth_common::port::{PortKind, SwitchPort};
use ioth_common::sys::{self, Errno, Fd};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

const T_SWITCH: u64 = 1;
const T_SWITCH_CTL: u64 = 2;
const T_LISTEN: u64 = 3;
const T_UPLINK: u64 = 4;
const T_DOOR: u64 = 5;
const T_BELL: u64 = 6;
const T_CTL: u64 = 1 << 60;
const T_SOCK: u64 = 2 << 60;
const T_MASK: u64 = 0xf << 60;

/// The frame size to ask a native port for.
pub fn want_frame(mtu: Option<u16>) -> usize {
    mtu.map(|m| m as usize + 14).unwrap_or(65535)
}

/// The wall clock, as the stack counts time.
fn now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::from(Instant::now())
}

/// A control connection and who it speaks for.
struct Ctl {
    fd: Fd,
    /// The uid whose rights it has: its peer's, when that uid is admitted (ours, root,
    /// `--allow-uid`, `--allow-gid`), or the owner's of a socket it proved to hold
    /// (`Request::Join`); `None` until then (it may only `Join`).
    who: Option<u32>,
}

pub struct Options {
    /// Uids and gids admitted besides the daemon's own uid and root.
    pub allow_uids: Vec<u32>,
    pub allow_gids: Vec<u32>,
    pub persist: bool,
    pub linger: Duration,
    /// How long connections wait for a silent peer (`Stack::set_tcp_timeouts`).
    pub tcp_timeouts: crate::stack::TcpTimeouts,
    /// TCP cut-through with other nodes of this host (`stack/cut.rs`).
    pub cut_through: bool,
    /// Local ports for connects and binds to port 0 (`Stack::set_port_range`).
    pub port_range: (u16, u16),
    pub switch_loc: String,
    /// Written to (one byte) and closed once the node has an address: at once for fixed
    /// addresses, at the first DHCP lease or SLAAC address in auto mode (`--daemon`).
    pub ready: Option<Fd>,
    /// The channel to the keeper (`crate::keeper`), which is told about listeners.
    pub keeper: Option<Reporter>,
    /// Listeners of the previous daemon of this node, from the keeper.
    pub restored: Vec<(KeptSocket, Fd)>,
    /// The connection journal the keeper holds (`crate::journal`).
    pub journal: Option<Fd>,
    /// How many daemons of this node came before this one (`restarts=` in the node's info).
    pub restarts: u32,
}

pub struct Daemon {
    stack: Stack<SwitchDevice>,
    cfg: NodeConfig,
    opts: Options,
    ep: Fd,
    ctl_listeners: Vec<Fd>,
    /// The node's door (`Stack::door_ready`): where TCP sockets made by clients get their
    /// daemon end.
    _door: Option<Fd>,
    ctl_conns: HashMap<u64, Ctl>,
    next_ctl: u64,
    /// Reading other control connections for a `Register` (see `ctl_readable`).
    draining: bool,
    idle_since: Option<Instant>,
    /// Out of descriptors for new control connections (`EMFILE`): the control listeners
    /// are left out of the epoll set until then, rather than reported readable at once,
    /// again and again.
    ctl_paused: Option<Instant>,
    /// Our soft limit on open files.
    nofile: u64,
    switch_down: bool,
    next_reconnect: Instant,
}

impl Daemon {
    pub fn new(
        cfg: NodeConfig,
        id: u64,
        port: SwitchPort,
        listener: Fd,
        abstract_listener: Option<Fd>,
        opts: Options,
    ) -> Result<Daemon, String> {
        let default_mtu = match port.kind {
            PortKind::Native => 65521,
            PortKind::Vde => 1500,
        };
        let ip_mtu = (cfg.mtu.map(|m| m as usize).unwrap_or(default_mtu))
            .min(port.max_frame.saturating_sub(14))
            .max(1280);
        let port_no = port.port;
        let mut dev = SwitchDevice::new(port, cfg.mac.0, Vec::new(), ip_mtu + 14);
        dev.cut_through = opts.cut_through;
        let mut seed = [0u8; 8];
        let _ = sys::getrandom(&mut seed);
        let sc = StackConfig {
            node: cfg.clone(),
            id,
            ip_mtu,
            seed: u64::from_ne_bytes(seed),
            link_name: opts.switch_loc.clone(),
        };
        let mut stack = Stack::new(sc, dev, now());
        stack.set_tcp_timeouts(opts.tcp_timeouts);
        stack.set_port_range(opts.port_range);
        let mut opts = opts;
        if opts.keeper.is_some() {
            stack.keep_listeners();
        }
        for (k, fd) in std::mem::take(&mut opts.restored) {
            stack.restore_socket(&k, fd, now());
        }
        if let Some(fd) = opts.journal.take() {
            match crate::os::SharedFile::map(fd.raw()) {
                Ok(f) => {
                    let (j, left) = crate::journal::Journal::open(f);
                    stack.set_journal(j);
                    stack.reset_peers(left, now());
                }
                Err(e) => log::warn!("journal: {e}"),
            }
        }
        let ep = sys::epoll_create().map_err(|e| format!("epoll: {e}"))?;
        stack.set_cut_through(opts.cut_through, ep.raw());
        let mut ctl_listeners = vec![listener];
        if let Some(a) = abstract_listener {
            ctl_listeners.push(a);
        }
        for l in &ctl_listeners {
            sys::epoll_ctl(
                ep.raw(),
                libc::EPOLL_CTL_ADD,
                l.raw(),
                libc::EPOLLIN as u32,
                T_LISTEN,
            )
            .map_err(|e| format!("epoll: {e}"))?;
        }
        let door = match open_door(id) {
            Ok(fd) => {
                sys::epoll_ctl(
                    ep.raw(),
                    libc::EPOLL_CTL_ADD,
                    fd.raw(),
                    libc::EPOLLIN as u32,
                    T_DOOR,
                )
                .map_err(|e| format!("epoll: {e}"))?;
                stack.set_door(fd.raw());
                Some(fd)
            }
            Err(e) => {
                // Its name is taken (by another user, while this node's last daemon was
                // down): the node's clients find that door not ours and cannot connect.
                log::error!("door {:?}: {e}", names::node_door_name(id));
                None
            }
        };
        let mut d = Daemon {
            stack,
            cfg,
            opts,
            ep,
            ctl_listeners,
            _door: door,
            ctl_conns: HashMap::new(),
            next_ctl: 1,
            draining: false,
            idle_since: Some(Instant::now()),
            ctl_paused: None,
            nofile: sys::fd_limit(),
            switch_down: false,
            next_reconnect: Instant::now(),
        };
        d.register_switch().map_err(|e| format!("epoll: {e}"))?;
        // A node that moved here from another host (same addresses, same MAC) is found here
        // at once, not when the old place's entries age out.
        d.stack.announce_all();
        log::info!("node {id:016x} on port {port_no}");
        Ok(d)
    }

    fn register_switch(&mut self) -> Result<(), Errno> {
        let ep = self.ep.raw();
        let dev = self.stack.link_mut();
        if let Some(p) = dev.port() {
            // EPOLLOUT only while a frame is pending: the device arms it (device.rs).
            let ev = (libc::EPOLLIN | libc::EPOLLET) as u32;
            sys::epoll_ctl(ep, libc::EPOLL_CTL_ADD, p.data_fd(), ev, T_SWITCH)?;
            if let Some(c) = p.ctl_fd() {
                let ev = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
                sys::epoll_ctl(ep, libc::EPOLL_CTL_ADD, c, ev, T_SWITCH_CTL)?;
            }
            dev.watch(ep, T_SWITCH);
            dev.watch_bells(T_BELL);
            dev.direct.watch(ep, T_UPLINK);
        }
        Ok(())
    }

    fn switch_gone(&mut self) {
        if let Some(p) = self.stack.link_mut().unplug() {
            let _ = sys::epoll_ctl(self.ep.raw(), libc::EPOLL_CTL_DEL, p.data_fd(), 0, 0);
            if let Some(c) = p.ctl_fd() {
                let _ = sys::epoll_ctl(self.ep.raw(), libc::EPOLL_CTL_DEL, c, 0, 0);
            }
        }
        if !self.switch_down {
            log::warn!("switch {} went away; reconnecting", self.opts.switch_loc);
        }
        self.switch_down = true;
        self.next_reconnect = Instant::now() + Duration::from_millis(200);
    }

    fn try_reconnect(&mut self) {
        let desc = port_description(&self.cfg);
        match SwitchPort::open_with_shortcuts(
            &self.opts.switch_loc,
            &desc,
            want_frame(self.cfg.mtu),
        ) {
            Ok(p) => {
                log::info!("switch is back (port {})", p.port);
                self.stack.link_mut().plug(p);
                self.switch_down = false;
                self.stack.link_ready(false);
                if self.register_switch().is_err() {
                    self.switch_gone();
                } else {
                    self.stack.announce_all();
                }
            }
            Err(e) => {
                log::debug!("reconnect: {e}");
                self.next_reconnect = Instant::now() + Duration::from_millis(200);
            }
        }
    }

    /// Add the daemon ends of new sockets to the epoll set; tell the keeper about listeners.
    fn watch_new(&mut self) {
        if let Some(k) = &mut self.opts.keeper {
            k.report(self.stack.take_kept());
        }
        for (fd, id, op, ev) in self.stack.take_watch() {
            if let Err(e) = sys::epoll_ctl(self.ep.raw(), op, fd, ev, T_SOCK | id) {
                log::warn!("socket {id:x}: epoll: {e}");
            }
        }
    }

    /// The event loop; returns the exit code.
    pub fn run(&mut self) -> i32 {
        let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let timeout = self.timeout_ms();
            let n = match sys::epoll_wait(self.ep.raw(), &mut evs, timeout) {
                Ok(n) => n,
                Err(e) => {
                    log::error!("epoll_wait: {e}");
                    return 1;
                }
            };
            // Control requests after the sockets' events: a socket the app closed before its
            // next request is known closed (and its descriptor can be freed) when the
            // request is read.
            self.dispatch(&evs[..n], false);
            if self.dispatch(&evs[..n], true) {
                // The sockets' events that came while the requests were read (see `dispatch`).
                let n = sys::epoll_wait(self.ep.raw(), &mut evs, 0).unwrap_or(0);
                self.dispatch(&evs[..n], false);
            }
            if self.stack.poll(now()).link_down {
                self.switch_gone();
            }
            self.watch_new();
            if self.stack.is_configured() {
                if let Some(fd) = self.opts.ready.take() {
                    let _ = sys::write(fd.raw(), b"1");
                    // The linger counts from now: the wait for an address (a DHCP server's
                    // ping check alone takes 3 s) is not idleness, and the process that
                    // started us is only now about to connect.
                    self.idle_since = None;
                }
                if let Some(k) = &mut self.opts.keeper {
                    k.up();
                }
            }
            if self.switch_down && Instant::now() >= self.next_reconnect {
                self.try_reconnect();
            }
            if self.ctl_paused.is_some_and(|t| Instant::now() >= t) {
                self.pause_ctl(false);
            }
            if self.should_exit() {
                log::info!("no socket and no client left: exiting");
                return 0;
            }
        }
    }

    /// Handle the control connections' events (`ctl`) or every other one in `evs`; whether
    /// there were any.
    ///
    /// After a batch with control requests, the loop takes the sockets' events that came
    /// while they were read, before the stack polls. A connection's requests are read in a
    /// burst (up to 64 per wake-up), and a fast client may have closed a socket and sent
    /// several requests in the meantime; the kernel's close is over when it returns, so the
    /// stack must know of every close the requests came after before it reads the data
    /// they were followed by (a datagram to the port just closed must find it closed and
    /// be answered with "port unreachable"). The control connections' own events are left
    /// for the next turn (they are level-triggered and come again); the sockets' are
    /// edge-triggered and taken at once.
    fn dispatch(&mut self, evs: &[libc::epoll_event], ctl: bool) -> bool {
        let mut any = false;
        for ev in evs.iter().filter(|e| (e.u64 & T_MASK == T_CTL) == ctl) {
            let (tok, bits) = (ev.u64, ev.events);
            self.event(tok, bits);
            any = true;
        }
        any
    }

    fn timeout_ms(&mut self) -> i32 {
        let mut t = Duration::from_millis(500);
        if let Some(d) = self.stack.poll_delay(now()) {
            t = t.min(Duration::from_micros(d.total_micros()));
        }
        if self.switch_down {
            t = t.min(Duration::from_millis(200));
        }
        if let Some(until) = self.ctl_paused {
            t = t.min(until.saturating_duration_since(Instant::now()));
        }
        if !self.opts.persist
            && let Some(since) = self.idle_since
        {
            t = t.min((since + self.opts.linger).saturating_duration_since(Instant::now()));
        }
        let ms = t.as_micros().div_ceil(1000);
        ms.min(i32::MAX as u128) as i32
    }

    fn should_exit(&mut self) -> bool {
        let idle = self.stack.is_idle() && self.ctl_conns.is_empty();
        if !idle {
            self.idle_since = None;
            return false;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        // A `--daemon` parent still waiting for the first address keeps us alive.
        !self.opts.persist && self.opts.ready.is_none() && since.elapsed() >= self.opts.linger
    }

    fn event(&mut self, tok: u64, bits: u32) {
        match tok & T_MASK {
            0 => match tok {
                T_SWITCH => {
                    let out = bits & libc::EPOLLOUT as u32 != 0;
                    if bits
                        & (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32
                        != 0
                    {
                        self.stack.link_ready(out);
                    }
                }
                T_BELL => self.stack.bell_rung(),
                T_SWITCH_CTL => {
                    let fd = self.stack.link().port().and_then(|p| p.ctl_fd());
                    if let Some(fd) = fd {
                        let mut b = [0u8; 256];
                        match sys::recv(fd, &mut b, libc::MSG_DONTWAIT) {
                            Ok(0) => self.switch_gone(),
                            Err(e) if !e.is_again() => self.switch_gone(),
                            _ => {}
                        }
                    }
                }
                T_LISTEN => self.accept_ctl(),
                T_DOOR => self.stack.door_ready(),
                T_UPLINK => self.stack.link_mut().direct.check(),
                _ => {}
            },
            T_CTL => self.ctl_readable(tok & !T_MASK),
            T_SOCK => self
                .stack
                .app_event(tok & !T_MASK, AppEvent::from_epoll(bits)),
            _ => {}
        }
    }

    // ---------------------------------------------------------------- control connections

    /// Whether `who` may act on socket `id`: root and the daemon's own uid on every socket,
    /// others on their own (a socket that does not exist is the stack's `EBADF`).
    fn may_use(&self, who: u32, id: u64) -> bool {
        who == 0 || who == sys::geteuid() || self.stack.owner(id).is_none_or(|o| o == who)
    }

    /// Stop (`true`) or resume watching the control listeners and connections (see
    /// `ctl_paused`).
    fn pause_ctl(&mut self, pause: bool) {
        let ev = if pause { 0 } else { libc::EPOLLIN as u32 };
        for l in &self.ctl_listeners {
            let _ = sys::epoll_ctl(self.ep.raw(), libc::EPOLL_CTL_MOD, l.raw(), ev, T_LISTEN);
        }
        for (cid, c) in &self.ctl_conns {
            let _ = sys::epoll_ctl(
                self.ep.raw(),
                libc::EPOLL_CTL_MOD,
                c.fd.raw(),
                ev,
                T_CTL | cid,
            );
        }
        self.ctl_paused = pause.then(|| Instant::now() + Duration::from_millis(100));
    }

    /// Whether our descriptor table has room for the fds one control message carries (two:
    /// a `Register`'s). A message read without room loses them (`MSG_CTRUNC`: the kernel
    /// closes what does not fit), and with them a socket its client thinks registered.
    /// Known without a system call while the highest descriptor we ever made
    /// (`sys::highest_fd`) is well under the limit; near it, two dups, closed at once (the
    /// kernel keeps no count of free slots to ask for).
    fn fd_room(&self) -> bool {
        if self.nofile > 1 << 16 || (sys::highest_fd().max(0) as u64) + 4 < self.nofile {
            // A daemon that may hold this many descriptors is not near the end of them.
            return true;
        }
        let fd = self.ep.raw();
        let a = sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0);
        let b = sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0);
        let room = a.is_ok() && b.is_ok();
        for p in [a, b].into_iter().flatten() {
            sys::close(p);
        }
        room
    }

    /// Make room for a control message's fds: free the sockets the apps have closed. `false`:
    /// still none (control connections then wait, see `pause_ctl`).
    fn make_fd_room(&mut self) -> bool {
        if self.fd_room() {
            return true;
        }
        if self.stack.poll(now()).link_down {
            self.switch_gone();
        }
        self.watch_new();
        if self.fd_room() {
            return true;
        }
        log::warn!("out of descriptors: control requests wait");
        self.pause_ctl(true);
        false
    }

    fn accept_ctl(&mut self) {
        for i in 0..self.ctl_listeners.len() {
            loop {
                let l = self.ctl_listeners[i].raw();
                let c = match sys::accept(l, libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) {
                    Ok(c) => c,
                    Err(e) if e == Errno::EINTR => continue,
                    Err(e) if e.0 == libc::EMFILE || e.0 == libc::ENFILE => {
                        log::warn!("control connection: accept: {e}");
                        self.pause_ctl(true);
                        return;
                    }
                    Err(_) => break,
                };
                // Admitted: our uid, root, and the uids and gids allowed on the command line.
                // Anyone else (a worker of ours after setuid, say) may only prove it holds a
                // socket of the node (`Join`).
                let who = match sys::peer_cred(c.raw()) {
                    Ok((_, uid, gid)) => (uid == 0
                        || uid == sys::geteuid()
                        || self.opts.allow_uids.contains(&uid)
                        || self.opts.allow_gids.contains(&gid))
                    .then_some(uid),
                    Err(_) => continue,
                };
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
                    self.ctl_conns.insert(cid, Ctl { fd: c, who });
                }
            }
        }
    }

    /// Close control connection `cid` (the ports it leased go back to the stack).
    fn drop_ctl(&mut self, cid: u64) {
        self.ctl_conns.remove(&cid);
        self.stack.ctl_closed(cid);
    }

    fn ctl_readable(&mut self, cid: u64) {
        let mut buf = [0u8; MAX_MSG];
        for _ in 0..64 {
            let Some((fd, who)) = self.ctl_conns.get(&cid).map(|c| (c.fd.raw(), c.who)) else {
                return;
            };
            if self.ctl_paused.is_some() || !self.make_fd_room() {
                return;
            }
            let got = match sys::recvmsg(fd, &mut [IoSliceMut::new(&mut buf)], libc::MSG_DONTWAIT) {
                Ok(g) => g,
                Err(e) if e.is_again() => return,
                Err(e) if e == Errno::EINTR => continue,
                Err(_) => {
                    self.drop_ctl(cid);
                    return;
                }
            };
            if got.len == 0 && got.fds.is_empty() {
                self.drop_ctl(cid);
                return;
            }
            // A one-way request (ctl::is_one_way) gets no reply whatever happens to it, even
            // when it cannot be read (its fds truncated because our table is full): an answer
            // would be taken for the reply to the client's next request. Every other message
            // gets one reply, echoing its sequence number.
            let msg_in = &buf[..got.len];
            let silent = ctl::is_one_way(msg_in);
            let seq = ctl::request_seq(msg_in);
            let (reply, fd_out) = if got.flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
                log::warn!("ctl {cid}: request truncated (flags {:#x})", got.flags);
                // Its descriptors were lost: our table is full (EMFILE), or it was too long.
                let e = if got.flags & libc::MSG_CTRUNC != 0 {
                    libc::EMFILE
                } else {
                    libc::EPROTO
                };
                (Reply::Err(Errno(e)), None)
            } else {
                match Request::decode(msg_in) {
                    Ok(req) => {
                        log::debug!("ctl {cid}: {req:?}");
                        let id = req.id();
                        if who.is_some()
                            && ctl::is_client_id(id)
                            && (!self.stack.has_socket(id) || self.stack.is_fresh(id))
                            && !matches!(req, Request::Register { .. } | Request::Connected { .. })
                            && !self.draining
                        {
                            // Its Register may wait on another connection (sent before a fork),
                            // or the Connected of a connect another thread made.
                            self.draining = true;
                            let others: Vec<u64> = self
                                .ctl_conns
                                .iter()
                                .filter(|(c, o)| **c != cid && o.who.is_some())
                                .map(|(c, _)| *c)
                                .collect();
                            for o in others {
                                self.ctl_readable(o);
                            }
                            self.draining = false;
                        }
                        match (req, who) {
                            (Request::Join { id }, _) => {
                                let r = self.stack.handle(Request::Join { id }, got.fds, 0, now());
                                if r.0 == Reply::Ok
                                    && let Some(c) = self.ctl_conns.get_mut(&cid)
                                {
                                    c.who = self.stack.owner(id);
                                }
                                r
                            }
                            (_, None) => {
                                log::warn!("control connection {cid}: not admitted; closed");
                                self.drop_ctl(cid);
                                return;
                            }
                            // The daemon adds what only it knows.
                            (Request::NodeInfo, _) => {
                                let mut t = self.stack.node_info();
                                t.push_str(&format!("clients={}\n", self.ctl_conns.len()));
                                t.push_str(&format!("pid={}\n", sys::getpid()));
                                t.push_str(&format!("restarts={}\n", self.opts.restarts));
                                (Reply::Bytes(t.into_bytes()), None)
                            }
                            // A socket of another user's: as if the caller did not hold it.
                            (req, Some(w))
                                if id != 0
                                    && !matches!(req, Request::Register { .. })
                                    && !self.may_use(w, id) =>
                            {
                                log::warn!("uid {w} asked about socket {id:x}: refused");
                                (Reply::Err(Errno::EBADF), None)
                            }
                            (req, Some(w)) => self.stack.handle_on(cid, req, got.fds, w, now()),
                        }
                    }
                    Err(e) => (Reply::Err(e), None),
                }
            };
            log::debug!("ctl {cid}: -> {reply:?}");
            if silent {
                continue;
            }
            let msg = reply.encode_seq(seq);
            let fds: Vec<RawFd> = fd_out.iter().map(|f| f.raw()).collect();
            let r = sys::retry(|| {
                sys::sendmsg(
                    fd,
                    &[IoSlice::new(&msg)],
                    &fds,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            });
            self.watch_new();
            if r.is_err() {
                self.drop_ctl(cid);
                return;
            }
        }
    }
}

/// The node's door: a stream listener at `names::node_door_name`, non-blocking.
fn open_door(node: u64) -> Result<Fd, Errno> {
    sys::unix_listener(libc::SOCK_STREAM, &names::node_door_name(node), 4096)
}
