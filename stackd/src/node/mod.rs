//! The node: one smoltcp `Interface` on one switch port, all the node's sockets, and the
//! control protocol server (`ioth_common::ctl`), driven by a single-threaded epoll loop.
//!
//! Each loop turn: wait (timeout from `Interface::poll_delay`), handle control requests, read
//! frames one at a time (`poll_ingress_single`, after a look at the headers: SYNs to a full
//! listener are dropped like Linux does, listener pools are refilled after every SYN), pump
//! every socket between smoltcp and its socketpair, then send (`poll_egress` until quiet).
//!
//! TCP data: the daemon end of each socketpair is read straight into smoltcp's transmit ring
//! and smoltcp's receive ring is written straight into it; EAGAIN clears a readiness flag
//! that only an edge-triggered epoll event sets again.
//!
//! Listeners: smoltcp has no accept queue. Each listener keeps a small pool of smoltcp sockets
//! in `Listen`; a connection that reaches `Established` gets its own socketpair and is queued
//! in the daemon until its [`AcceptRecord`] (with the app's end attached) fits on the
//! listener's socketpair. Backlog = queued here + records not yet received by the app.
//!
//! Raw ICMPv6 sockets are pumped by [`crate::raw`]; `SIOCSARP` neighbour entries come from
//! [`crate::neigh`].
//!
//! The files, each adding an `impl Node` block for one concern:
//! - `mod.rs`: the [`Node`] struct, its creation, the event loop, timers, switch reconnects,
//!   exit when idle;
//! - `control.rs`: the control server (accept, read, dispatch, reply);
//! - `sock.rs`: the socket table and socket creation;
//! - `ports.rs`: addresses, routing, ephemeral ports, bind;
//! - `stream.rs`: TCP listen, backlog, accept records, connect;
//! - `sockopt.rs`: socket options;
//! - `dgram.rs`: UDP and ICMP sockets;
//! - `pump.rs`: ingress, egress, and moving data between smoltcp and the socketpairs.
//!
//! Not done here: TCP urgent data, SO_LINGER with a timeout (only 0 = RST is honoured), IP
//! options, raw sockets other than ICMPv6.

use crate::device::SwitchDevice;
use crate::frame;
use crate::os;
use ioth_common::config::{self, AddrMode, NodeConfig};
use ioth_common::ctl::{self, AcceptRecord, DgramHeader, MAX_MSG, Reply, Request, WireAddr};
use ioth_common::names;
use ioth_common::port::{PortKind, SwitchPort};
use ioth_common::sys::{self, Errno, Fd};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};
use std::collections::{HashMap, VecDeque};
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

mod control;
mod dgram;
mod ports;
mod pump;
mod sock;
mod sockopt;
mod stream;

use dgram::*;
use sock::*;
use sockopt::*;
use stream::*;

/// smoltcp TCP ring sizes (each direction).
pub const TCP_BUF: usize = 1 << 20;
/// Socket buffer asked for on both ends of each socketpair.
pub const APP_SOCKBUF: i32 = 1 << 20;
/// A connect with no answer fails with ETIMEDOUT after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A connect whose next hop never answered ARP/NDP fails with EHOSTUNREACH after this long.
pub const NEIGHBOUR_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle smoltcp sockets kept in `Listen` per listener.
const LISTEN_IDLE: usize = 2;
/// Closed smoltcp TCP sockets kept for reuse (rings and all): a new connection then costs no
/// 2 MiB `mmap`/`munmap` and no page faults (a quarter of the daemon's CPU at 2,500 conn/s).
const TCP_SPARE: usize = 32;
const MAX_BACKLOG: usize = 4096;
const DGRAM_PACKETS: usize = 256;
const DGRAM_BYTES: usize = 512 * 1024;

/// The node's loopback addresses: reachable from its own processes only (hairpinned like
/// its other addresses; frames from the switch that carry them are dropped as martians).
const LOOPBACK: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
];

/// Frames read per loop turn before egress gets its turn.
const RX_BATCH: usize = 256;
/// The daemon asks again for a neighbour it asked for this long ago (smoltcp's cache entries
/// live 60 s).
const RESOLICIT: Duration = Duration::from_secs(20);

const T_SWITCH: u64 = 1;
const T_SWITCH_CTL: u64 = 2;
const T_LISTEN: u64 = 3;
const T_CTL: u64 = 1 << 60;
const T_SOCK: u64 = 2 << 60;
const T_MASK: u64 = 0xf << 60;

/// The frame size to ask a native port for.
pub fn want_frame(mtu: Option<u16>) -> usize {
    mtu.map(|m| m as usize + 14).unwrap_or(65535)
}

pub struct Options {
    pub persist: bool,
    pub linger: Duration,
    pub switch_loc: String,
    /// Written to (one byte) and closed once the node has an address: at once for fixed
    /// addresses, at the first DHCP lease or SLAAC address in auto mode (`--daemon`).
    pub ready: Option<Fd>,
}

/// How the node shows up in the switch's port list: name or first address, and pid.
pub fn port_description(cfg: &NodeConfig) -> String {
    let who = match (&cfg.name, &cfg.addrs) {
        (Some(n), _) => n.clone(),
        (None, AddrMode::Static(v)) => v[0].addr.to_string(),
        (None, _) => cfg.mac.to_string(),
    };
    format!("ioth-stackd {who} pid={}", sys::getpid())
}

pub struct Node {
    cfg: NodeConfig,
    id: u64,
    opts: Options,
    ep: Fd,
    iface: Interface,
    dev: SwitchDevice,
    set: SocketSet<'static>,
    cidrs: Vec<config::Cidr>,
    own: Vec<IpAddr>,
    ip_mtu: usize,
    ctl_listeners: Vec<Fd>,
    ctl_conns: HashMap<u64, Fd>,
    next_ctl: u64,
    socks: HashMap<u64, Sock>,
    next_sock: u64,
    lingering: Vec<SocketHandle>,
    seen: HashMap<IpAddr, Instant>,
    /// When the daemon last asked for each neighbour itself (`prime_neighbour`).
    solicited: HashMap<IpAddr, Instant>,
    record_cost: usize,
    idle_since: Option<Instant>,
    switch_down: bool,
    next_reconnect: Instant,
    port_no: u32,
    port_kind: PortKind,
    more_rx: bool,
    next_ident: u16,
    next_ephemeral: u16,
    scratch: Vec<u8>,
    ids: Vec<u64>,
    /// UDP datagrams smoltcp gave to a socket that does not want them (wrong family, other
    /// peer): (port, source, payload), handed to another socket on that port.
    misrouted: Vec<(u16, SocketAddr, Vec<u8>)>,
    /// The mDNS responder for the node's name (see [`crate::mdns`]).
    mdns: Option<crate::mdns::Responder>,
    /// ICMP errors for connected UDP sockets (see [`crate::icmperr`]).
    icmp_errors: crate::icmperr::IcmpErrors,
    /// Closed TCP sockets to reuse (see [`TCP_SPARE`]).
    tcp_spare: Vec<tcp::Socket<'static>>,
    /// Reading other control connections for a `Register` (see `ctl_readable`).
    draining: bool,
    /// DHCPv4 and SLAAC in auto mode (see [`crate::autoconf`]).
    auto: Option<crate::autoconf::Autoconf>,
    /// Gateways and DNS servers given in the configuration (auto mode adds learnt ones).
    given_gw: Vec<IpAddr>,
    given_dns: Vec<IpAddr>,
    t0: Instant,
}

fn smol_now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::from(std::time::Instant::now())
}

fn to_ip(a: IpAddress) -> IpAddr {
    match a {
        IpAddress::Ipv4(v) => IpAddr::V4(v),
        IpAddress::Ipv6(v) => IpAddr::V6(v),
    }
}

fn from_ip(a: IpAddr) -> IpAddress {
    match a {
        IpAddr::V4(v) => IpAddress::Ipv4(v),
        IpAddr::V6(v) => IpAddress::Ipv6(v),
    }
}

fn ep_to_sa(e: IpEndpoint) -> SocketAddr {
    SocketAddr::new(to_ip(e.addr), e.port)
}

impl Node {
    pub fn new(
        cfg: NodeConfig,
        id: u64,
        port: SwitchPort,
        listener: Fd,
        abstract_listener: Option<Fd>,
        opts: Options,
    ) -> Result<Node, String> {
        let cidrs = match &cfg.addrs {
            AddrMode::Static(v) => v.clone(),
            // Addresses come later (see `crate::autoconf`); only the link-local one now.
            AddrMode::Auto { .. } => Vec::new(),
        };
        let default_mtu = match port.kind {
            PortKind::Native => 65521,
            PortKind::Vde => 1500,
        };
        let ip_mtu = (cfg.mtu.map(|m| m as usize).unwrap_or(default_mtu))
            .min(port.max_frame.saturating_sub(14))
            .max(1280);
        let ll = config::link_local(&cfg.mac);
        let mut own: Vec<IpAddr> = cidrs.iter().map(|c| c.addr).collect();
        own.push(IpAddr::V6(ll));
        let port_no = port.port;
        let port_kind = port.kind;
        let dev_own = own.iter().chain(&LOOPBACK).copied().collect();
        let mut dev = SwitchDevice::new(port, cfg.mac.0, dev_own, ip_mtu + 14);
        let mut icfg = Config::new(EthernetAddress(cfg.mac.0).into());
        let mut seed = [0u8; 8];
        let _ = sys::getrandom(&mut seed);
        icfg.random_seed = u64::from_ne_bytes(seed);
        icfg.slaac = matches!(cfg.addrs, AddrMode::Auto { slaac: true, .. });
        let mut iface = Interface::new(icfg, &mut dev, smol_now());
        iface.update_ip_addrs(|v| {
            for c in &cidrs {
                let _ = v.push(IpCidr::new(from_ip(c.addr), c.prefix));
            }
            let _ = v.push(IpCidr::new(IpAddress::Ipv6(ll), 64));
            // Last, so that smoltcp's fallback source address is never a loopback one.
            let _ = v.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8));
            let _ = v.push(IpCidr::new(IpAddress::v6(0, 0, 0, 0, 0, 0, 0, 1), 128));
        });
        for g in &cfg.gateways {
            let r = match g {
                IpAddr::V4(v) => iface.routes_mut().add_default_ipv4_route(*v).map(drop),
                IpAddr::V6(v) => iface.routes_mut().add_default_ipv6_route(*v).map(drop),
            };
            if r.is_err() {
                log::warn!("too many routes; gateway {g} ignored");
            }
        }
        let ep = sys::epoll_create().map_err(|e| format!("epoll: {e}"))?;
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
        let mut set = SocketSet::new(vec![]);
        let icmp_errors = crate::icmperr::IcmpErrors::open(&mut set);
        let mut n = Node {
            cfg,
            id,
            opts,
            ep,
            iface,
            dev,
            set,
            cidrs,
            own,
            ip_mtu,
            ctl_listeners,
            ctl_conns: HashMap::new(),
            next_ctl: 1,
            socks: HashMap::new(),
            next_sock: 1,
            lingering: Vec::new(),
            seen: HashMap::new(),
            solicited: HashMap::new(),
            record_cost: measure_record_cost(),
            idle_since: Some(Instant::now()),
            switch_down: false,
            next_reconnect: Instant::now(),
            port_no,
            port_kind,
            more_rx: true,
            next_ident: (sys::random_u64() as u16) | 1,
            next_ephemeral: 49152 + (sys::random_u64() % 16384) as u16,
            scratch: vec![0; 65536 + 64],
            ids: Vec::new(),
            misrouted: Vec::new(),
            mdns: None,
            icmp_errors,
            tcp_spare: Vec::new(),
            draining: false,
            auto: None,
            given_gw: Vec::new(),
            given_dns: Vec::new(),
            t0: Instant::now(),
        };
        n.given_gw = n.cfg.gateways.clone();
        n.given_dns = n.cfg.dns.clone();
        if let AddrMode::Auto { slaac, dhcp4 } = n.cfg.addrs {
            n.auto = Some(crate::autoconf::Autoconf::new(
                &mut n.set,
                slaac,
                dhcp4,
                n.cfg.name.as_deref(),
            ));
        }
        n.register_switch().map_err(|e| format!("epoll: {e}"))?;
        if let Some(name) = n.cfg.name.clone() {
            n.mdns = Some(crate::mdns::Responder::new(&mut n.iface, &mut n.set, &name));
        }
        log::info!(
            "node {:016x} up: mtu {} addrs {:?} port {}",
            n.id,
            n.ip_mtu,
            n.own,
            n.port_no
        );
        Ok(n)
    }

    fn register_switch(&mut self) -> Result<(), Errno> {
        if let Some(p) = &self.dev.port {
            // EPOLLOUT only while a frame is pending: the device arms it (device.rs).
            let ev = (libc::EPOLLIN | libc::EPOLLET) as u32;
            sys::epoll_ctl(
                self.ep.raw(),
                libc::EPOLL_CTL_ADD,
                p.data_fd(),
                ev,
                T_SWITCH,
            )?;
            if let Some(c) = p.ctl_fd() {
                let ev = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
                sys::epoll_ctl(self.ep.raw(), libc::EPOLL_CTL_ADD, c, ev, T_SWITCH_CTL)?;
            }
            self.dev.watch(self.ep.raw(), T_SWITCH);
        }
        Ok(())
    }

    fn switch_gone(&mut self) {
        if let Some(p) = self.dev.port.take() {
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
                self.port_no = p.port;
                self.port_kind = p.kind;
                self.dev.port = Some(p);
                self.switch_down = false;
                self.more_rx = true;
                if self.register_switch().is_err() {
                    self.switch_gone();
                }
            }
            Err(e) => {
                log::debug!("reconnect: {e}");
                self.next_reconnect = Instant::now() + Duration::from_millis(200);
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
            for ev in evs.iter().take(n) {
                let (tok, bits) = (ev.u64, ev.events);
                self.event(tok, bits);
            }
            // A frame waiting for room on the switch socket is retried on every turn: the
            // EPOLLOUT edge of a connected unix datagram socket (a VDE port) can be missed,
            // and ingress stays stopped while the frame waits.
            if self.dev.is_blocked() && self.dev.flush() {
                self.more_rx = true;
            }
            self.iface.poll_maintenance(smol_now());
            self.ingress();
            self.autoconf();
            self.service();
            self.egress();
            self.reap();
            // Egress can complete handshakes of hairpinned connections only after ingress;
            // a second pass keeps self-connections from waiting for a timeout.
            if !self.dev.hairpin.is_empty() {
                self.more_rx = true;
            }
            if self.switch_down && Instant::now() >= self.next_reconnect {
                self.try_reconnect();
            }
            if self.should_exit() {
                log::info!("no socket and no client left: exiting");
                return 0;
            }
        }
    }

    /// Auto mode: take new leases and SLAAC addresses into the node's view; tell a waiting
    /// `--daemon` parent once the node has an address.
    fn autoconf(&mut self) {
        if let Some(a) = &mut self.auto {
            self.iface.poll_maintenance(smol_now());
            if a.poll(&mut self.iface, &mut self.set) {
                self.cidrs = crate::autoconf::global_cidrs(&self.iface);
                let mut own: Vec<IpAddr> = self.cidrs.iter().map(|c| c.addr).collect();
                own.push(IpAddr::V6(config::link_local(&self.cfg.mac)));
                self.own = own.clone();
                own.extend(LOOPBACK);
                self.dev.own = own;
                let mut gw = self.given_gw.clone();
                gw.extend(a.gateways(&mut self.iface));
                self.cfg.gateways = gw;
                let mut dns = self.given_dns.clone();
                dns.extend(a.dns());
                self.cfg.dns = dns;
                log::info!(
                    "addresses {:?} gateways {:?} dns {:?}",
                    self.cidrs,
                    self.cfg.gateways,
                    self.cfg.dns
                );
            }
        }
        if self.auto.as_ref().is_none_or(|a| a.ready(&self.cidrs))
            && let Some(fd) = self.opts.ready.take()
        {
            let _ = sys::write(fd.raw(), b"1");
        }
    }

    fn timeout_ms(&mut self) -> i32 {
        if self.dev.is_blocked() {
            // Retry the pending frame soon even if no EPOLLOUT comes (see `run`).
            return 1;
        }
        if self.more_rx || !self.dev.hairpin.is_empty() {
            return 0;
        }
        let mut t = Duration::from_millis(500);
        if let Some(d) = self.iface.poll_delay(smol_now(), &self.set) {
            t = t.min(Duration::from_micros(d.total_micros()));
        }
        if self.switch_down {
            t = t.min(Duration::from_millis(200));
        }
        if self
            .socks
            .values()
            .any(|s| matches!(s.tcp, TcpState::Connecting(_)))
        {
            t = t.min(Duration::from_millis(100));
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
        let idle = self.socks.is_empty() && self.lingering.is_empty() && self.ctl_conns.is_empty();
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
                    if bits & libc::EPOLLIN as u32 != 0 {
                        self.more_rx = true;
                    }
                    if bits & libc::EPOLLOUT as u32 != 0 {
                        self.dev.flush();
                        // Ingress stopped while blocked; frames may wait (edge-triggered).
                        self.more_rx = true;
                    }
                    if bits & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                        self.more_rx = true;
                    }
                }
                T_SWITCH_CTL => {
                    let fd = self.dev.port.as_ref().and_then(|p| p.ctl_fd());
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
                _ => {}
            },
            T_CTL => self.ctl_readable(tok & !T_MASK),
            T_SOCK => {
                let id = tok & !T_MASK;
                // HUP only means both directions are shut: also after our own SHUT_WR plus
                // the app's shutdown(SHUT_WR). Closed is when its name is free again.
                let gone = bits & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
                    && self.socks.contains_key(&id)
                    && app_gone(self.id, id);
                if let Some(s) = self.socks.get_mut(&id) {
                    if bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
                        s.rd = true;
                    }
                    if bits & libc::EPOLLOUT as u32 != 0 {
                        s.wr = true;
                    }
                    if gone {
                        s.hup = true;
                    }
                }
            }
            _ => {}
        }
    }
}
