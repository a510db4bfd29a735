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

/// One direction's buffer of a UDP or ICMP socket (`DGRAM_PACKETS` datagrams, `DGRAM_BYTES`).
/// The node's loopback addresses: reachable from its own processes only (hairpinned like
/// its other addresses; frames from the switch that carry them are dropped as martians).
const LOOPBACK: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
];

fn dgram_buffer<H: Clone>() -> smoltcp::storage::PacketBuffer<'static, H> {
    smoltcp::storage::PacketBuffer::new(
        vec![smoltcp::storage::PacketMetadata::EMPTY; DGRAM_PACKETS],
        vec![0; DGRAM_BYTES],
    )
}
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Tcp,
    Udp,
    Icmp,
    /// Raw ICMPv6 (see [`crate::raw`]).
    Raw,
}

#[derive(Clone, Debug)]
struct Opts {
    reuseaddr: bool,
    reuseport: bool,
    keepalive: bool,
    keepidle: u32,
    keepintvl: u32,
    keepcnt: u32,
    sndbuf: i32,
    rcvbuf: i32,
    linger: Option<i32>,
    nodelay: bool,
    cork: bool,
    maxseg: i32,
    v6only: bool,
    tclass: i32,
    tos: i32,
    broadcast: bool,
    congestion: Vec<u8>,
    other: HashMap<(i32, i32), Vec<u8>>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            reuseaddr: false,
            reuseport: false,
            keepalive: false,
            keepidle: 7200,
            keepintvl: 75,
            keepcnt: 9,
            sndbuf: APP_SOCKBUF,
            rcvbuf: APP_SOCKBUF,
            linger: None,
            nodelay: false,
            cork: false,
            maxseg: 0,
            v6only: false,
            tclass: 0,
            tos: 0,
            broadcast: false,
            congestion: b"cubic".to_vec(),
            other: HashMap::new(),
        }
    }
}

struct Listener {
    backlog: usize,
    pool: Vec<SocketHandle>,
    queue: VecDeque<Pending>,
}

struct Pending {
    app: Fd,
    rec: AcceptRecord,
}

struct Connecting {
    h: SocketHandle,
    app: Fd,
    /// Optional second fd of a Connect request: a blocking connect in the shim reads it and
    /// wakes on EOF, which comes when this is dropped (the handshake ended either way).
    _notify: Option<Fd>,
    filler: usize,
    start: Instant,
    hop: IpAddr,
}

struct Conn {
    h: SocketHandle,
    app_eof: bool,
    fin_to_app: bool,
    prev: tcp::State,
}

enum TcpState {
    Idle,
    Listening(Listener),
    Connecting(Connecting),
    Conn(Conn),
    Done,
}

struct Dgram {
    h: Option<SocketHandle>,
    peer: Option<SocketAddr>,
}

struct Sock {
    domain: i32,
    kind: Kind,
    dmn: Fd,
    /// Bound local address (`None` = any) and port.
    bound: Option<(Option<IpAddr>, u16)>,
    /// Local address a connected/accepted TCP socket uses.
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    opts: Opts,
    so_error: i32,
    rd: bool,
    wr: bool,
    hup: bool,
    tcp: TcpState,
    dg: Dgram,
}

impl Sock {
    fn new(domain: i32, kind: Kind, dmn: Fd) -> Sock {
        Sock {
            domain,
            kind,
            dmn,
            bound: None,
            local: None,
            peer: None,
            opts: Opts::default(),
            so_error: 0,
            rd: false,
            wr: false,
            hup: false,
            tcp: TcpState::Idle,
            dg: Dgram {
                h: None,
                peer: None,
            },
        }
    }

    fn is_listening(&self) -> bool {
        matches!(self.tcp, TcpState::Listening(_))
    }

    /// Families this socket's wildcard covers.
    fn families(&self) -> (bool, bool) {
        if self.domain == libc::AF_INET {
            (true, false)
        } else {
            (!self.opts.v6only, true)
        }
    }

    /// Present an address the way this socket's family does (v4-mapped on AF_INET6).
    /// Link-local IPv6 addresses carry the scope id of the node's one interface (1, `vde0`),
    /// as Linux reports them.
    fn present(&self, a: SocketAddr) -> WireAddr {
        match a {
            SocketAddr::V4(v4) if self.domain == libc::AF_INET6 => WireAddr(Some(SocketAddr::new(
                IpAddr::V6(v4.ip().to_ipv6_mapped()),
                v4.port(),
            ))),
            SocketAddr::V6(v6) if v6.ip().is_unicast_link_local() && v6.scope_id() == 0 => {
                WireAddr(Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                    *v6.ip(),
                    v6.port(),
                    v6.flowinfo(),
                    1,
                ))))
            }
            _ => WireAddr(Some(a)),
        }
    }

    fn unspecified(&self, port: u16) -> SocketAddr {
        if self.domain == libc::AF_INET6 {
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port)
        } else {
            SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port)
        }
    }
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

fn int_opt(v: &[u8]) -> Result<i32, Errno> {
    if v.len() < 4 {
        return Err(Errno::EINVAL);
    }
    Ok(i32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
}

fn linux_state(s: tcp::State) -> u8 {
    use tcp::State::*;
    match s {
        Established => 1,
        SynSent => 2,
        SynReceived => 3,
        FinWait1 => 4,
        FinWait2 => 5,
        TimeWait => 6,
        Closed => 7,
        CloseWait => 8,
        LastAck => 9,
        Listen => 10,
        Closing => 11,
    }
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

    // ---------------------------------------------------------------- control connections

    fn accept_ctl(&mut self) {
        for i in 0..self.ctl_listeners.len() {
            loop {
                let l = self.ctl_listeners[i].raw();
                let c = match sys::accept(l, libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) {
                    Ok(c) => c,
                    Err(e) if e == Errno::EINTR => continue,
                    Err(_) => break,
                };
                // Same user, root, or any user when the node itself runs as root: a server
                // started as root (nginx) drops privileges in its workers, which must still
                // reach their node.
                match os::peer_cred(c.raw()) {
                    Ok((_, uid, _)) if uid == 0 || [uid, 0].contains(&sys::geteuid()) => {}
                    other => {
                        log::warn!("control connection refused: credentials {other:?}");
                        continue;
                    }
                }
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
                    self.ctl_conns.insert(cid, c);
                }
            }
        }
    }

    fn ctl_readable(&mut self, cid: u64) {
        let mut buf = [0u8; MAX_MSG];
        for _ in 0..64 {
            let Some(fd) = self.ctl_conns.get(&cid).map(|f| f.raw()) else {
                return;
            };
            let got = match sys::recvmsg(fd, &mut [IoSliceMut::new(&mut buf)], libc::MSG_DONTWAIT) {
                Ok(g) => g,
                Err(e) if e.is_again() => return,
                Err(e) if e == Errno::EINTR => continue,
                Err(_) => {
                    self.ctl_conns.remove(&cid);
                    return;
                }
            };
            if got.len == 0 && got.fds.is_empty() {
                self.ctl_conns.remove(&cid);
                return;
            }
            // A one-way request: a well-formed SetSockOpt with ctl::FLAG_NO_REPLY, a Register.
            let mut silent = false;
            let (reply, fd_out) = if got.flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
                (Reply::Err(Errno::EPROTO), None)
            } else {
                match Request::decode(&buf[..got.len]) {
                    Ok(req) => {
                        silent = matches!(req, Request::SetSockOpt { .. })
                            && ioth_common::ctl::no_reply(&buf[..got.len])
                            || matches!(
                                req,
                                Request::Register { .. } | Request::ConnectAsync { .. }
                            );
                        log::debug!("ctl {cid}: {req:?}");
                        let id = req.id();
                        if ctl::is_client_id(id)
                            && !self.socks.contains_key(&id)
                            && !matches!(req, Request::Register { .. })
                            && !self.draining
                        {
                            // Its Register may wait on another connection (sent before a fork).
                            self.draining = true;
                            let others: Vec<u64> = self
                                .ctl_conns
                                .keys()
                                .copied()
                                .filter(|c| *c != cid)
                                .collect();
                            for o in others {
                                self.ctl_readable(o);
                            }
                            self.draining = false;
                        }
                        self.handle(req, got.fds)
                    }
                    Err(e) => (Reply::Err(e), None),
                }
            };
            log::debug!("ctl {cid}: -> {reply:?}");
            if silent {
                continue;
            }
            let msg = reply.encode();
            let fds: Vec<RawFd> = fd_out.iter().map(|f| f.raw()).collect();
            let r = sys::retry(|| {
                sys::sendmsg(
                    fd,
                    &[IoSlice::new(&msg)],
                    &fds,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            });
            if r.is_err() {
                self.ctl_conns.remove(&cid);
                return;
            }
        }
    }

    fn handle(&mut self, req: Request, fds: Vec<Fd>) -> (Reply, Option<Fd>) {
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
    fn set_neighbour(&mut self, addr: WireAddr, mac: [u8; 6]) -> Result<Reply, Errno> {
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
        self.dev.hairpin.push_back(f);
        self.solicited.insert(IpAddr::V4(ip), Instant::now());
        Ok(Reply::Ok)
    }

    fn with_sock(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut Node, &mut Sock) -> Result<Reply, Errno>,
    ) -> Result<Reply, Errno> {
        let mut s = self.socks.remove(&id).ok_or(Errno::EBADF)?;
        let r = f(self, &mut s);
        self.socks.insert(id, s);
        r
    }

    fn node_info(&self) -> String {
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
        t.push_str(&format!("switch={}\n", self.opts.switch_loc));
        t.push_str(&format!("port={}\n", self.port_no));
        t.push_str(&format!(
            "kind={}\n",
            match self.port_kind {
                PortKind::Native => "native",
                PortKind::Vde => "vde",
            }
        ));
        t.push_str(&self.dev.shortcut_info());
        t.push_str(&format!("sockets={}\n", self.socks.len()));
        t.push_str(&format!("lingering={}\n", self.lingering.len()));
        t.push_str(&format!("clients={}\n", self.ctl_conns.len()));
        t.push_str(&format!("uptime={}\n", self.t0.elapsed().as_secs()));
        t
    }

    // ---------------------------------------------------------------- socket creation

    fn new_id(&mut self) -> u64 {
        let id = self.next_sock;
        self.next_sock += 1;
        id
    }

    /// A socketpair of type `ty`: (daemon end, app end), the app end bound to its name.
    fn make_pair(&mut self, ty: i32, id: u64) -> Result<(Fd, Fd), Errno> {
        // The app's end stays blocking (clients other than the shim rely on it); ours gets
        // O_NONBLOCK with one F_SETFL (a fresh socket has no other status flag to keep).
        let (d, a) = sys::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC)?;
        sys::fcntl(d.raw(), libc::F_SETFL, libc::O_NONBLOCK as libc::c_long)?;
        sys::bind_unix(a.raw(), &names::socket_name(self.id, id))?;
        for fd in [d.raw(), a.raw()] {
            let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, APP_SOCKBUF);
            let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, APP_SOCKBUF);
        }
        let ev = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        sys::epoll_ctl(self.ep.raw(), libc::EPOLL_CTL_ADD, d.raw(), ev, T_SOCK | id)?;
        Ok((d, a))
    }

    /// What `socket(domain, ty, protocol)` makes, or the kernel's errno.
    fn sock_kind(domain: i32, ty: i32, protocol: i32) -> Result<Kind, Errno> {
        let ty = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        if domain != libc::AF_INET && domain != libc::AF_INET6 {
            return Err(Errno(libc::EAFNOSUPPORT));
        }
        Ok(match (ty, protocol) {
            (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => Kind::Tcp,
            (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => Kind::Udp,
            (libc::SOCK_DGRAM, libc::IPPROTO_ICMP) if domain == libc::AF_INET => Kind::Icmp,
            (libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6) if domain == libc::AF_INET6 => Kind::Icmp,
            (libc::SOCK_RAW, libc::IPPROTO_ICMPV6) if domain == libc::AF_INET6 => Kind::Raw,
            (libc::SOCK_STREAM | libc::SOCK_DGRAM, _) => {
                return Err(Errno(libc::EPROTONOSUPPORT));
            }
            _ => return Err(Errno(libc::ESOCKTNOSUPPORT)),
        })
    }

    /// `Register`: adopt a socketpair end the client made (see `ctl`), as socket `id`.
    fn op_register(
        &mut self,
        id: u64,
        domain: i32,
        ty: i32,
        protocol: i32,
        fds: Vec<Fd>,
    ) -> Result<(), Errno> {
        let d = fds.into_iter().next().ok_or(Errno::EINVAL)?;
        if !ctl::is_client_id(id) || self.socks.contains_key(&id) {
            return Err(Errno::EADDRINUSE);
        }
        let kind = Self::sock_kind(domain, ty, protocol)?;
        let want = if kind == Kind::Tcp {
            libc::SOCK_STREAM
        } else {
            libc::SOCK_SEQPACKET
        };
        if sys::getsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_DOMAIN) != Ok(libc::AF_UNIX)
            || sys::getsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_TYPE) != Ok(want)
        {
            return Err(Errno::EINVAL);
        }
        sys::set_nonblocking(d.raw(), true)?;
        let _ = sys::setsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_SNDBUF, APP_SOCKBUF);
        let _ = sys::setsockopt_int(d.raw(), libc::SOL_SOCKET, libc::SO_RCVBUF, APP_SOCKBUF);
        let ev = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        sys::epoll_ctl(self.ep.raw(), libc::EPOLL_CTL_ADD, d.raw(), ev, T_SOCK | id)?;
        self.install(id, domain, kind, d);
        Ok(())
    }

    fn op_socket(&mut self, domain: i32, ty: i32, protocol: i32) -> (Reply, Option<Fd>) {
        let kind = match Self::sock_kind(domain, ty, protocol) {
            Ok(k) => k,
            Err(e) => return (Reply::Err(e), None),
        };
        let id = self.new_id();
        // Datagram sockets: SOCK_SEQPACKET keeps boundaries like SOCK_DGRAM, and unlike a
        // SOCK_DGRAM pair it reports HUP on our end when the app's last reference closes.
        let pty = if kind == Kind::Tcp {
            libc::SOCK_STREAM
        } else {
            libc::SOCK_SEQPACKET
        };
        let (d, a) = match self.make_pair(pty, id) {
            Ok(p) => p,
            Err(e) => return (Reply::Err(e), None),
        };
        self.install(id, domain, kind, d);
        (Reply::Created(id), Some(a))
    }

    /// A new socket `id` whose socketpair end `d` is ready (non-blocking, in the epoll set).
    fn install(&mut self, id: u64, domain: i32, kind: Kind, d: Fd) {
        let mut s = Sock::new(domain, kind, d);
        if kind == Kind::Icmp {
            let ident = self.alloc_ident();
            let mut so = icmp::Socket::new(dgram_buffer(), dgram_buffer());
            let _ = so.bind(icmp::Endpoint::Ident(ident));
            s.dg.h = Some(self.set.add(so));
            s.bound = Some((None, ident));
        }
        if kind == Kind::Raw {
            s.dg.h = Some(crate::raw::open(&mut self.set));
            s.bound = Some((None, 0));
        }
        self.socks.insert(id, s);
    }

    fn alloc_ident(&mut self) -> u16 {
        loop {
            self.next_ident = self.next_ident.wrapping_add(1);
            let i = self.next_ident;
            if i != 0
                && !self
                    .socks
                    .values()
                    .any(|s| s.kind == Kind::Icmp && s.bound.map(|b| b.1) == Some(i))
            {
                return i;
            }
        }
    }

    // ---------------------------------------------------------------- addresses and ports

    fn on_link(&self, a: &IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains(a))
            || matches!(a, IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80)
    }

    /// One of the node's addresses, loopback included.
    fn is_own(&self, a: &IpAddr) -> bool {
        self.own.contains(a) || LOOPBACK.contains(a)
    }

    /// Next hop towards `a`, or ENETUNREACH.
    fn next_hop(&self, a: &IpAddr) -> Result<IpAddr, Errno> {
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
    fn prime_neighbour(&mut self, dst: IpAddr) {
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
        let now = Instant::now();
        if self
            .solicited
            .get(&hop)
            .is_some_and(|t| now.duration_since(*t) < RESOLICIT)
        {
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
        if frame::solicitation(self.cfg.mac.0, src, hop, &mut f)
            && let Some(p) = &self.dev.port
        {
            let _ = p.send(&f);
        }
    }

    fn port_used(&self, kind: Kind, port: u16) -> bool {
        if self
            .socks
            .values()
            .any(|s| s.kind == kind && s.bound.map(|b| b.1) == Some(port))
        {
            return true;
        }
        if kind == Kind::Tcp {
            for (_, so) in self.set.iter() {
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

    fn ephemeral(&mut self, kind: Kind) -> Result<u16, Errno> {
        for _ in 0..16384 {
            self.next_ephemeral = if self.next_ephemeral == 65535 {
                49152
            } else {
                self.next_ephemeral + 1
            };
            let p = self.next_ephemeral;
            if !self.port_used(kind, p) {
                return Ok(p);
            }
        }
        Err(Errno::EADDRINUSE)
    }

    /// Whether binding `s` to (addr, port) conflicts with another socket.
    fn conflicts(&self, s: &Sock, addr: Option<IpAddr>, port: u16) -> bool {
        let (v4, v6) = s.families();
        for (oid, o) in &self.socks {
            if o.kind != s.kind || o.bound.map(|b| b.1) != Some(port) {
                continue;
            }
            // close() is not seen synchronously: a socket whose app end is already closed
            // (reaped on the next loop turn) does not hold its port, as on Linux.
            if app_gone(self.id, *oid) {
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

    /// Translate an address given to socket `s` (v4-mapped on AF_INET6 → IPv4).
    fn sock_ip(&self, s: &Sock, a: IpAddr) -> Result<IpAddr, Errno> {
        match (s.domain, a) {
            (libc::AF_INET, IpAddr::V6(_)) => Err(Errno(libc::EAFNOSUPPORT)),
            (libc::AF_INET6, IpAddr::V6(v)) if v.to_ipv4_mapped().is_some() => {
                if s.opts.v6only {
                    Err(Errno(libc::ENETUNREACH))
                } else {
                    Ok(config::unmap(a))
                }
            }
            _ => Ok(a),
        }
    }

    fn op_bind(&mut self, s: &mut Sock, addr: WireAddr) -> Result<Reply, Errno> {
        if s.bound.is_some() && !matches!(s.kind, Kind::Icmp | Kind::Raw) {
            return Err(Errno::EINVAL);
        }
        let sa = addr.0.ok_or(Errno(libc::EAFNOSUPPORT))?;
        let ip = match self.sock_ip(s, sa.ip()) {
            Ok(ip) => ip,
            Err(e) if e.0 == libc::ENETUNREACH => return Err(Errno::EINVAL),
            Err(e) => return Err(e),
        };
        let any = ip.is_unspecified();
        if !any && !self.is_own(&ip) {
            return Err(Errno(libc::EADDRNOTAVAIL));
        }
        let addr = if any { None } else { Some(ip) };
        if matches!(s.kind, Kind::Icmp | Kind::Raw) {
            s.bound = Some((addr, s.bound.map(|b| b.1).unwrap_or(0)));
            return Ok(Reply::Ok);
        }
        let port = if sa.port() == 0 {
            self.ephemeral(s.kind)?
        } else {
            sa.port()
        };
        if self.conflicts(s, addr, port) {
            return Err(Errno::EADDRINUSE);
        }
        s.bound = Some((addr, port));
        if s.kind == Kind::Udp {
            self.udp_open(s)?;
        }
        Ok(Reply::Ok)
    }

    fn op_sockname(&mut self, s: &mut Sock) -> Result<Reply, Errno> {
        if let Some(l) = s.local {
            return Ok(Reply::Addr(s.present(l)));
        }
        let a = match s.bound {
            Some((Some(ip), port)) => SocketAddr::new(ip, port),
            Some((None, port)) => s.unspecified(port),
            None => s.unspecified(0),
        };
        Ok(Reply::Addr(s.present(a)))
    }

    // ---------------------------------------------------------------- TCP sockets

    /// A closed TCP socket: a spare one (its state is reset by `listen`/`connect`, its options
    /// here), else a new one.
    fn new_tcp(&mut self, opts: &Opts) -> tcp::Socket<'static> {
        let mut t = self.tcp_spare.pop().unwrap_or_else(|| {
            tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; TCP_BUF]),
                tcp::SocketBuffer::new(vec![0; TCP_BUF]),
            )
        });
        t.set_hop_limit(None);
        apply_tcp_opts(&mut t, opts);
        t
    }

    /// Remove a TCP socket from the set, keeping it for reuse.
    fn free_tcp(&mut self, h: SocketHandle) {
        keep_spare(&mut self.tcp_spare, self.set.remove(h));
    }

    fn op_listen(&mut self, s: &mut Sock, backlog: i32) -> Result<Reply, Errno> {
        if s.kind != Kind::Tcp {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        let backlog = (backlog.max(1) as usize).min(MAX_BACKLOG);
        match &mut s.tcp {
            TcpState::Listening(l) => {
                l.backlog = backlog;
                return Ok(Reply::Ok);
            }
            TcpState::Idle => {}
            _ => return Err(Errno::EINVAL),
        }
        if s.bound.is_none() {
            let p = self.ephemeral(Kind::Tcp)?;
            s.bound = Some((None, p));
        }
        let (addr, port) = s.bound.unwrap_or((None, 0));
        // Two listeners on one address need SO_REUSEPORT on both.
        let (v4, v6) = s.families();
        for (oid, o) in &self.socks {
            if let (true, Some((oa, op))) = (o.is_listening(), o.bound)
                && op == port
                && !(s.opts.reuseport && o.opts.reuseport)
                && !app_gone(self.id, *oid)
            {
                let (o4, o6) = o.families();
                let overlap = match (addr, oa) {
                    (None, None) => (v4 && o4) || (v6 && o6),
                    (None, Some(b)) => (b.is_ipv4() && v4) || (b.is_ipv6() && v6),
                    (Some(a), None) => (a.is_ipv4() && o4) || (a.is_ipv6() && o6),
                    (Some(a), Some(b)) => a == b,
                };
                if overlap {
                    return Err(Errno::EADDRINUSE);
                }
            }
        }
        s.tcp = TcpState::Listening(Listener {
            backlog,
            pool: Vec::new(),
            queue: VecDeque::new(),
        });
        self.refill(s);
        Ok(Reply::Ok)
    }

    /// Keep LISTEN_IDLE smoltcp sockets in `Listen` in a listener's pool.
    fn refill(&mut self, s: &mut Sock) {
        let (addr, port) = s.bound.unwrap_or((None, 0));
        let opts = s.opts.clone();
        let TcpState::Listening(l) = &mut s.tcp else {
            return;
        };
        let mut idle = l
            .pool
            .iter()
            .filter(|h| self.set.get::<tcp::Socket>(**h).state() == tcp::State::Listen)
            .count();
        while idle < LISTEN_IDLE {
            let mut t = self.new_tcp(&opts);
            let ep = IpListenEndpoint {
                addr: addr.map(from_ip),
                port,
            };
            if t.listen(ep).is_err() {
                return;
            }
            l.pool.push(self.set.add(t));
            idle += 1;
        }
    }

    /// Refill every listener on `port` (a SYN may have taken any of their pools' sockets).
    fn refill_port(&mut self, port: u16) {
        self.ids.clear();
        self.ids.extend(
            self.socks
                .iter()
                .filter(|(_, s)| s.is_listening() && s.bound.map(|b| b.1) == Some(port))
                .map(|(id, _)| *id),
        );
        let ids = std::mem::take(&mut self.ids);
        for id in &ids {
            if let Some(mut s) = self.socks.remove(id) {
                self.refill(&mut s);
                self.socks.insert(*id, s);
            }
        }
        self.ids = ids;
    }

    /// The listener that takes a connection to (dst, port): specific address first.
    fn match_listener(&self, dst: IpAddr, port: u16) -> Option<u64> {
        let mut best: Option<(u8, u64)> = None;
        for (id, s) in &self.socks {
            if !s.is_listening() {
                continue;
            }
            let Some((addr, p)) = s.bound else { continue };
            if p != port {
                continue;
            }
            let (v4, v6) = s.families();
            let score = match addr {
                Some(a) if a == dst => 2,
                Some(_) => continue,
                None if (dst.is_ipv4() && v4) || (dst.is_ipv6() && v6) => 1,
                None => continue,
            };
            if best.is_none_or(|(b, bid)| score > b || (score == b && *id < bid)) {
                best = Some((score, *id));
            }
        }
        best.map(|b| b.1)
    }

    /// Established connections waiting for the app to accept on listener `s`.
    fn accept_pending(&self, s: &Sock) -> usize {
        let TcpState::Listening(l) = &s.tcp else {
            return 0;
        };
        let inq = os::outq(s.dmn.raw()).unwrap_or(0);
        l.queue.len() + inq.div_ceil(self.record_cost.max(1))
    }

    /// `ConnectAsync` (see `ctl`): a connect nobody waits for, on an fd the client already
    /// made unwritable with `filler` bytes. Errors become `SO_ERROR` of a failed connect.
    fn op_connect_async(
        &mut self,
        s: &mut Sock,
        addr: WireAddr,
        app: Option<Fd>,
        filler: u32,
    ) -> Result<Reply, Errno> {
        match &mut s.tcp {
            // Another process's connect won the race: its drain takes our filler too.
            TcpState::Connecting(c) => {
                c.filler += filler as usize;
                return Err(Errno(libc::EALREADY));
            }
            TcpState::Idle if s.kind == Kind::Tcp => {}
            // Cannot happen with the client's mark; the filler is the app's problem then.
            _ => return Err(Errno(libc::EISCONN)),
        }
        let mut app = app;
        let r = self.op_connect(s, addr, &mut app, None, filler as usize);
        match r {
            Err(e) if e.0 == libc::EINPROGRESS => {}
            Err(e) => {
                // As a connect that failed later: drain, writable again, SO_ERROR, shut down.
                let mut left = filler as usize;
                while left > 0 {
                    let n = left.min(self.scratch.len());
                    match sys::read(s.dmn.raw(), &mut self.scratch[..n]) {
                        Ok(0) => break,
                        Ok(k) => left -= k,
                        Err(e) if e == Errno::EINTR => {}
                        Err(_) => break,
                    }
                }
                if let Some(a) = &app {
                    let _ = sys::setsockopt_int(
                        a.raw(),
                        libc::SOL_SOCKET,
                        libc::SO_SNDBUF,
                        s.opts.sndbuf,
                    );
                }
                s.so_error = e.0;
                s.tcp = TcpState::Done;
                let _ = sys::shutdown(s.dmn.raw(), libc::SHUT_RDWR);
            }
            Ok(_) => {}
        }
        r
    }

    /// `app`: the app's fd (taken once the connect is under way). `prefilled`: filler bytes
    /// the client already wrote (`ConnectAsync`).
    fn op_connect(
        &mut self,
        s: &mut Sock,
        addr: WireAddr,
        app: &mut Option<Fd>,
        notify: Option<Fd>,
        prefilled: usize,
    ) -> Result<Reply, Errno> {
        if s.kind != Kind::Tcp {
            return self.dgram_connect(s, addr);
        }
        match s.tcp {
            TcpState::Idle => {}
            TcpState::Connecting(_) => return Err(Errno(libc::EALREADY)),
            TcpState::Conn(_) | TcpState::Listening(_) => return Err(Errno(libc::EISCONN)),
            TcpState::Done => {
                return Err(if s.peer.is_some() {
                    Errno(libc::EISCONN)
                } else {
                    Errno(libc::ECONNABORTED)
                });
            }
        }
        if app.is_none() {
            return Err(Errno::EINVAL);
        }
        let sa = addr.0.ok_or(Errno(libc::EAFNOSUPPORT))?;
        let mut dst = self.sock_ip(s, sa.ip())?;
        if dst.is_unspecified() {
            // As on Linux: the unspecified address means this host (loopback).
            dst = LOOPBACK[usize::from(dst.is_ipv6())];
        }
        if sa.port() == 0 {
            return Err(Errno::ECONNREFUSED);
        }
        let hop = self.next_hop(&dst)?;
        let src = match s.bound.and_then(|b| b.0) {
            Some(a) => a,
            None => self
                .iface
                .get_source_address(&from_ip(dst))
                .map(to_ip)
                .ok_or(Errno(libc::ENETUNREACH))?,
        };
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(Errno(libc::ENETUNREACH));
        }
        let lport = match s.bound {
            Some((_, p)) => p,
            None => {
                let p = self.ephemeral(Kind::Tcp)?;
                s.bound = Some((None, p));
                p
            }
        };
        let mut t = self.new_tcp(&s.opts);
        t.connect(
            self.iface.context(),
            IpEndpoint::new(from_ip(dst), sa.port()),
            IpListenEndpoint {
                addr: Some(from_ip(src)),
                port: lport,
            },
        )
        .map_err(|_| Errno(libc::EADDRNOTAVAIL))?;
        let Some(app) = app.take() else {
            return Err(Errno::EINVAL);
        };
        let h = self.set.add(t);
        self.prime_neighbour(dst);
        // Hold the app's fd unwritable until the handshake ends (ctl.rs), unless the client
        // already did.
        let filler = [0u8; 512];
        let mut count = prefilled;
        if prefilled == 0 {
            let _ = sys::setsockopt_int(app.raw(), libc::SOL_SOCKET, libc::SO_SNDBUF, 0);
            loop {
                match sys::send(app.raw(), &filler, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
                    Ok(n) => count += n,
                    Err(e) if e == Errno::EINTR => continue,
                    Err(_) => break,
                }
                if count > 1 << 20 {
                    break;
                }
            }
        }
        s.local = Some(SocketAddr::new(src, lport));
        s.peer = Some(SocketAddr::new(dst, sa.port()));
        s.tcp = TcpState::Connecting(Connecting {
            h,
            app,
            _notify: notify,
            filler: count,
            start: Instant::now(),
            hop,
        });
        Err(Errno(libc::EINPROGRESS))
    }

    /// Finish a connect: drain the filler, give the app its buffer back, start pumping
    /// (`err == 0`), or fail the socket with `err`.
    fn connect_done(&mut self, s: &mut Sock, err: i32) {
        let TcpState::Connecting(c) = std::mem::replace(&mut s.tcp, TcpState::Done) else {
            return;
        };
        let mut left = c.filler;
        while left > 0 {
            let n = left.min(self.scratch.len());
            match sys::read(s.dmn.raw(), &mut self.scratch[..n]) {
                Ok(0) => break,
                Ok(k) => left -= k,
                Err(e) if e == Errno::EINTR => {}
                Err(_) => break,
            }
        }
        let _ = sys::setsockopt_int(
            c.app.raw(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            s.opts.sndbuf,
        );
        drop(c.app);
        if err == 0 {
            s.rd = true;
            s.wr = true;
            s.tcp = TcpState::Conn(Conn {
                h: c.h,
                app_eof: false,
                fin_to_app: false,
                prev: tcp::State::Established,
            });
            if let Some(l) = self.set.get::<tcp::Socket>(c.h).local_endpoint() {
                s.local = Some(ep_to_sa(l));
            }
        } else {
            s.so_error = err;
            s.peer = None;
            let t = self.set.get_mut::<tcp::Socket>(c.h);
            // A SYN nobody answered needs no RST (Linux sends none): forget it at once, so
            // that it does not keep asking for an absent neighbour.
            if !matches!(t.state(), tcp::State::Closed | tcp::State::SynSent) {
                t.abort();
                self.lingering.push(c.h);
            } else {
                self.free_tcp(c.h);
            }
            // Both ways: the app reads EOF and its writes fail with EPIPE, as on Linux (our
            // own end then reports HUP, which `app_gone` tells apart from a close).
            let _ = sys::shutdown(s.dmn.raw(), libc::SHUT_RDWR);
        }
    }

    fn op_shutdown(&mut self, s: &mut Sock, how: i32) -> Result<Reply, Errno> {
        if !(libc::SHUT_RD..=libc::SHUT_RDWR).contains(&how) {
            return Err(Errno::EINVAL);
        }
        match &s.tcp {
            TcpState::Conn(_) | TcpState::Connecting(_) => Ok(Reply::Ok),
            TcpState::Listening(_) => Ok(Reply::Ok),
            _ if s.kind != Kind::Tcp => Ok(Reply::Ok),
            _ => Err(Errno(libc::ENOTCONN)),
        }
    }

    // ---------------------------------------------------------------- socket options

    fn tcp_handle(s: &Sock) -> Option<SocketHandle> {
        match &s.tcp {
            TcpState::Conn(c) => Some(c.h),
            TcpState::Connecting(c) => Some(c.h),
            _ => None,
        }
    }

    fn op_getsockopt(&mut self, s: &mut Sock, level: i32, name: i32) -> Result<Vec<u8>, Errno> {
        let int = |v: i32| Ok(v.to_ne_bytes().to_vec());
        let tcp = s.kind == Kind::Tcp;
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_ERROR) => {
                let e = s.so_error;
                s.so_error = 0;
                int(e)
            }
            (libc::SOL_SOCKET, libc::SO_TYPE) => int(if tcp {
                libc::SOCK_STREAM
            } else if s.kind == Kind::Raw {
                libc::SOCK_RAW
            } else {
                libc::SOCK_DGRAM
            }),
            (libc::SOL_SOCKET, libc::SO_DOMAIN) => int(s.domain),
            (libc::SOL_SOCKET, libc::SO_PROTOCOL) => int(match s.kind {
                Kind::Tcp => libc::IPPROTO_TCP,
                Kind::Udp => libc::IPPROTO_UDP,
                Kind::Icmp | Kind::Raw if s.domain == libc::AF_INET6 => libc::IPPROTO_ICMPV6,
                Kind::Icmp | Kind::Raw => libc::IPPROTO_ICMP,
            }),
            (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => int(s.is_listening() as i32),
            (libc::SOL_SOCKET, libc::SO_REUSEADDR) => int(s.opts.reuseaddr as i32),
            (libc::SOL_SOCKET, libc::SO_REUSEPORT) => int(s.opts.reuseport as i32),
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => int(s.opts.keepalive as i32),
            (libc::SOL_SOCKET, libc::SO_BROADCAST) => int(s.opts.broadcast as i32),
            (libc::SOL_SOCKET, libc::SO_SNDBUF) => int(s.opts.sndbuf.saturating_mul(2)),
            (libc::SOL_SOCKET, libc::SO_RCVBUF) => int(s.opts.rcvbuf.saturating_mul(2)),
            (libc::SOL_SOCKET, libc::SO_LINGER) => {
                let (on, t): (i32, i32) = match s.opts.linger {
                    Some(t) => (1, t),
                    None => (0, 0),
                };
                let mut v = on.to_ne_bytes().to_vec();
                v.extend_from_slice(&t.to_ne_bytes());
                Ok(v)
            }
            (libc::IPPROTO_TCP, _) if !tcp => Err(Errno(libc::ENOPROTOOPT)),
            (libc::IPPROTO_TCP, libc::TCP_NODELAY) => int(s.opts.nodelay as i32),
            (libc::IPPROTO_TCP, libc::TCP_CORK) => int(s.opts.cork as i32),
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => int(s.opts.keepidle as i32),
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => int(s.opts.keepintvl as i32),
            (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => int(s.opts.keepcnt as i32),
            (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => {
                let hdr = if s.peer.is_some_and(|p| p.is_ipv4()) {
                    40
                } else {
                    60
                };
                if s.peer.is_some() {
                    int((self.ip_mtu - hdr) as i32)
                } else if s.opts.maxseg > 0 {
                    int(s.opts.maxseg)
                } else {
                    int(536)
                }
            }
            (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => {
                let mut v = s.opts.congestion.clone();
                v.resize(16, 0);
                Ok(v)
            }
            (libc::IPPROTO_TCP, libc::TCP_INFO) => Ok(self.tcp_info(s)),
            (libc::IPPROTO_IPV6, _) if s.domain != libc::AF_INET6 => Err(Errno(libc::ENOPROTOOPT)),
            (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => int(s.opts.v6only as i32),
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => int(s.opts.tclass),
            (libc::IPPROTO_IP, libc::IP_TOS) => int(s.opts.tos),
            (libc::IPPROTO_IP, libc::IP_MTU) | (libc::IPPROTO_IPV6, libc::IPV6_MTU)
                if s.peer.is_some() =>
            {
                int(self.ip_mtu as i32)
            }
            k => match s.opts.other.get(&k) {
                Some(v) => Ok(v.clone()),
                None if generic_option(k) => int(0),
                None => Err(Errno(libc::ENOPROTOOPT)),
            },
        }
    }

    fn tcp_info(&self, s: &Sock) -> Vec<u8> {
        let mut v = vec![0u8; 232];
        let (state, rtt) = match &s.tcp {
            TcpState::Listening(_) => (10, 0),
            TcpState::Done | TcpState::Idle => (7, 0),
            TcpState::Connecting(c) => (linux_state(self.set.get::<tcp::Socket>(c.h).state()), 0),
            TcpState::Conn(c) => {
                let t = self.set.get::<tcp::Socket>(c.h);
                (linux_state(t.state()), 1000)
            }
        };
        v[0] = state;
        let mss = (self.ip_mtu - 60) as u32;
        let put = |v: &mut Vec<u8>, off: usize, x: u32| {
            v[off..off + 4].copy_from_slice(&x.to_ne_bytes());
        };
        put(&mut v, 8, 200_000); // rto, µs
        put(&mut v, 16, mss); // snd_mss
        put(&mut v, 20, mss); // rcv_mss
        put(&mut v, 56, self.ip_mtu as u32); // pmtu
        put(&mut v, 64, rtt); // rtt, µs
        put(&mut v, 76, 10); // snd_cwnd
        put(&mut v, 80, mss); // advmss
        v
    }

    fn op_setsockopt(
        &mut self,
        s: &mut Sock,
        level: i32,
        name: i32,
        val: &[u8],
    ) -> Result<(), Errno> {
        let tcp = s.kind == Kind::Tcp;
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_REUSEADDR) => s.opts.reuseaddr = int_opt(val)? != 0,
            (libc::SOL_SOCKET, libc::SO_REUSEPORT) => s.opts.reuseport = int_opt(val)? != 0,
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => s.opts.keepalive = int_opt(val)? != 0,
            (libc::SOL_SOCKET, libc::SO_BROADCAST) => s.opts.broadcast = int_opt(val)? != 0,
            (libc::SOL_SOCKET, libc::SO_SNDBUF) => {
                s.opts.sndbuf = int_opt(val)?.clamp(2304, i32::MAX / 2)
            }
            (libc::SOL_SOCKET, libc::SO_RCVBUF) => {
                s.opts.rcvbuf = int_opt(val)?.clamp(2304, i32::MAX / 2)
            }
            (libc::SOL_SOCKET, libc::SO_LINGER) => {
                if val.len() < 8 {
                    return Err(Errno::EINVAL);
                }
                let on = int_opt(&val[0..4])?;
                let t = int_opt(&val[4..8])?;
                s.opts.linger = if on != 0 { Some(t.max(0)) } else { None };
            }
            (libc::IPPROTO_TCP, _) if !tcp => return Err(Errno(libc::ENOPROTOOPT)),
            (libc::IPPROTO_TCP, libc::TCP_NODELAY) => s.opts.nodelay = int_opt(val)? != 0,
            (libc::IPPROTO_TCP, libc::TCP_CORK) => s.opts.cork = int_opt(val)? != 0,
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => {
                s.opts.keepidle = int_opt(val)?.clamp(1, 32767) as u32
            }
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => {
                s.opts.keepintvl = int_opt(val)?.clamp(1, 32767) as u32
            }
            (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => {
                s.opts.keepcnt = int_opt(val)?.clamp(1, 127) as u32
            }
            (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => {
                let v = int_opt(val)?;
                if !(0..=65535).contains(&v) {
                    return Err(Errno::EINVAL);
                }
                s.opts.maxseg = v;
            }
            (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => {
                let name: Vec<u8> = val.iter().take_while(|b| **b != 0).copied().collect();
                match name.as_slice() {
                    b"cubic" | b"reno" => s.opts.congestion = name,
                    _ => return Err(Errno::ENOENT),
                }
            }
            (libc::IPPROTO_IPV6, _) if s.domain != libc::AF_INET6 => {
                return Err(Errno(libc::ENOPROTOOPT));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => {
                if s.bound.is_some() && s.kind != Kind::Icmp {
                    return Err(Errno::EINVAL);
                }
                s.opts.v6only = int_opt(val)? != 0;
            }
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => s.opts.tclass = int_opt(val)?,
            (libc::IPPROTO_IP, libc::IP_TOS) => s.opts.tos = int_opt(val)?,
            (libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP | libc::IP_DROP_MEMBERSHIP)
            | (libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP | libc::IPV6_DROP_MEMBERSHIP) => {
                if tcp {
                    return Err(Errno(libc::ENOPROTOOPT));
                }
                let group = match (level, val.len()) {
                    (libc::IPPROTO_IP, 8..) => {
                        IpAddress::Ipv4(std::net::Ipv4Addr::new(val[0], val[1], val[2], val[3]))
                    }
                    (libc::IPPROTO_IPV6, 20..) => {
                        let mut o = [0u8; 16];
                        o.copy_from_slice(&val[..16]);
                        IpAddress::Ipv6(std::net::Ipv6Addr::from(o))
                    }
                    _ => return Err(Errno::EINVAL),
                };
                if !group.is_multicast() {
                    return Err(Errno::EINVAL);
                }
                let join = name == libc::IP_ADD_MEMBERSHIP || name == libc::IPV6_ADD_MEMBERSHIP;
                let r = if join {
                    self.iface.join_multicast_group(group)
                } else {
                    self.iface.leave_multicast_group(group)
                };
                r.map_err(|_| Errno(libc::ENOBUFS))?;
            }
            k if s.kind == Kind::Raw && crate::raw::is_raw_option(k) => {
                crate::raw::check_option(k, val)?;
                s.opts.other.insert(k, val.to_vec());
            }
            k if generic_option(k) => {
                s.opts.other.insert(k, val.to_vec());
            }
            _ => return Err(Errno(libc::ENOPROTOOPT)),
        }
        if let Some(h) = Self::tcp_handle(s) {
            apply_tcp_opts(self.set.get_mut::<tcp::Socket>(h), &s.opts);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- datagram sockets

    fn udp_open(&mut self, s: &mut Sock) -> Result<(), Errno> {
        if s.dg.h.is_some() {
            return Ok(());
        }
        let (addr, port) = match s.bound {
            Some(b) => b,
            None => {
                let p = self.ephemeral(Kind::Udp)?;
                s.bound = Some((None, p));
                (None, p)
            }
        };
        let mut u = udp::Socket::new(dgram_buffer(), dgram_buffer());
        u.bind(IpListenEndpoint {
            addr: addr.map(from_ip),
            port,
        })
        .map_err(|_| Errno::EINVAL)?;
        s.dg.h = Some(self.set.add(u));
        s.rd = true;
        Ok(())
    }

    fn dgram_connect(&mut self, s: &mut Sock, addr: WireAddr) -> Result<Reply, Errno> {
        match addr.0 {
            None => {
                s.dg.peer = None;
                s.peer = None;
                Ok(Reply::Ok)
            }
            Some(sa) => {
                let ip = self.sock_ip(s, sa.ip())?;
                self.next_hop(&ip)?;
                if s.kind == Kind::Udp {
                    self.udp_open(s)?;
                }
                let peer = SocketAddr::new(ip, sa.port());
                s.dg.peer = Some(peer);
                s.peer = Some(peer);
                if let Some(src) = self.iface.get_source_address(&from_ip(ip)) {
                    let port = s.bound.map(|b| b.1).unwrap_or(0);
                    s.local = Some(SocketAddr::new(
                        s.bound.and_then(|b| b.0).unwrap_or(to_ip(src)),
                        port,
                    ));
                }
                Ok(Reply::Ok)
            }
        }
    }

    /// Pump a UDP or ICMP socket both ways.
    fn pump_dgram(&mut self, s: &mut Sock) {
        let fd = s.dmn.raw();
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
            if s.kind == Kind::Udp && s.dg.h.is_none() && self.udp_open(s).is_err() {
                break;
            }
            let Some(h) = s.dg.h else { break };
            let room = match s.kind {
                Kind::Udp => self.set.get::<udp::Socket>(h).can_send(),
                _ => self.set.get::<icmp::Socket>(h).can_send(),
            };
            if !room {
                break;
            }
            let n = match sys::recv(fd, &mut self.scratch, libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.is_again() => {
                    s.rd = false;
                    break;
                }
                Err(e) if e == Errno::EINTR => continue,
                Err(_) => {
                    s.rd = false;
                    break;
                }
            };
            if n == 0 {
                // EOF (every datagram from the shim has a header): reading on would spin.
                s.rd = false;
                break;
            }
            let Ok(hdr) = DgramHeader::decode(&self.scratch[..n]) else {
                continue;
            };
            let dst = match hdr.addr.0.or(s.dg.peer) {
                Some(d) => d,
                None => continue,
            };
            let Ok(ip) = self.sock_ip(s, dst.ip()) else {
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

    /// ICMP errors for connected UDP sockets: an error record on the socket's socketpair.
    fn udp_errors(&mut self) {
        let mut errs = Vec::new();
        self.icmp_errors.take(&mut self.set, &mut errs);
        for e in errs {
            let peer = SocketAddr::new(e.peer.ip().to_canonical(), e.peer.port());
            if let Some(s) = self.socks.values().find(|s| {
                s.kind == Kind::Udp
                    && s.bound.map(|b| b.1) == Some(e.port)
                    && s.dg.peer == Some(peer)
            }) {
                let hdr = DgramHeader::error(e.errno).encode();
                let _ = sys::send(s.dmn.raw(), &hdr, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
            }
        }
    }

    /// Hand misrouted UDP datagrams to the first other socket on their port that wants them.
    fn redispatch(&mut self) {
        for (port, src, data) in std::mem::take(&mut self.misrouted) {
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

    fn is_subnet_broadcast(&self, ip: &IpAddr) -> bool {
        let IpAddr::V4(v) = ip else { return false };
        self.cidrs.iter().any(|c| {
            c.addr.is_ipv4() && c.prefix < 31 && c.contains(ip) && {
                let host = u32::MAX >> c.prefix;
                u32::from(*v) & host == host
            }
        })
    }

    // ---------------------------------------------------------------- the loop's work

    fn ingress(&mut self) {
        if !self.more_rx && self.dev.hairpin.is_empty() {
            return;
        }
        self.more_rx = false;
        let native = self.port_kind == PortKind::Native;
        let mut budget = RX_BATCH;
        loop {
            if self.dev.is_blocked() {
                // Replies could not be sent: resume when the switch socket drains (the
                // EPOLLOUT event the device asked for), or retry at once without one.
                self.more_rx = !self.dev.wakes_when_writable();
                return;
            }
            if budget == 0 {
                self.more_rx = true;
                return;
            }
            budget -= 1;
            let (n, hairpin) = match self.dev.take_hairpin() {
                Some(n) => (n, true),
                None => match self.dev.recv_switch() {
                    Ok(0) if native => {
                        self.switch_gone();
                        return;
                    }
                    Ok(n) => (n, false),
                    Err(e) if e.is_again() => return,
                    Err(e) if e == Errno::EMSGSIZE || e == Errno::EINTR => continue,
                    Err(e) => {
                        log::debug!("switch recv: {e}");
                        self.switch_gone();
                        return;
                    }
                },
            };
            let f = self.dev.frame(n);
            if !hairpin && frame::loopback_martian(f) {
                log::debug!("frame with a loopback address from the switch: dropped");
                continue;
            }
            if let Some(ip) = frame::neighbour_seen(f) {
                if self.seen.len() > 4096 {
                    self.seen.clear();
                }
                self.seen.insert(ip, Instant::now());
            }
            let mut syn_port = None;
            if let Some((_src, dst, port)) = frame::tcp_syn(f)
                && self.is_own(&dst)
            {
                match self.match_listener(dst, port) {
                    Some(lid) => {
                        let full = self
                            .socks
                            .get(&lid)
                            .map(|l| {
                                let TcpState::Listening(li) = &l.tcp else {
                                    return true;
                                };
                                self.accept_pending(l) >= li.backlog
                            })
                            .unwrap_or(true);
                        if full {
                            log::debug!("backlog full on port {port}: SYN dropped");
                            continue;
                        }
                        self.refill_port(port);
                        syn_port = Some(port);
                    }
                    None => {
                        // A pool for another family would take it: refuse it as Linux does
                        // (no listener of its family) rather than misdeliver it.
                        if self
                            .socks
                            .values()
                            .any(|s| s.is_listening() && s.bound.map(|b| b.1) == Some(port))
                        {
                            let mut rst = Vec::new();
                            if frame::rst_for_syn(f, self.cfg.mac.0, &mut rst) {
                                if rst[..6] == self.cfg.mac.0 {
                                    // A SYN of our own (hairpin): the RST comes back the same way.
                                    self.dev.hairpin.push_back(rst);
                                } else if let Some(p) = &self.dev.port {
                                    let _ = p.send(&rst);
                                }
                            }
                            continue;
                        }
                    }
                }
            }
            self.dev.staged = Some(n);
            self.iface
                .poll_ingress_single(smol_now(), &mut self.dev, &mut self.set);
            self.dev.staged = None;
            if let Some(p) = syn_port {
                self.refill_port(p);
            }
        }
    }

    fn egress(&mut self) {
        for _ in 0..100_000 {
            if !self.dev.flush() {
                return;
            }
            match self
                .iface
                .poll_egress(smol_now(), &mut self.dev, &mut self.set)
            {
                smoltcp::iface::PollResult::None => return,
                smoltcp::iface::PollResult::SocketStateChanged => {}
            }
        }
    }

    /// Pump every socket, finish connects, hand over accepted connections, reap closed ones.
    fn service(&mut self) {
        self.ids.clear();
        self.ids.extend(self.socks.keys().copied());
        let ids = std::mem::take(&mut self.ids);
        let mut accepted: Vec<SocketHandle> = Vec::new();
        for id in &ids {
            let Some(mut s) = self.socks.remove(id) else {
                continue;
            };
            let keep = match s.kind {
                Kind::Tcp => self.service_tcp(&mut s, &mut accepted),
                _ => {
                    self.pump_dgram(&mut s);
                    if s.hup {
                        if let Some(h) = s.dg.h.take() {
                            self.set.remove(h);
                        }
                        false
                    } else {
                        true
                    }
                }
            };
            if keep {
                self.socks.insert(*id, s);
            } else {
                let _ = sys::epoll_ctl(self.ep.raw(), libc::EPOLL_CTL_DEL, s.dmn.raw(), 0, 0);
            }
        }
        self.ids = ids;
        self.redispatch();
        self.udp_errors();
        if let Some(m) = &mut self.mdns {
            m.poll(&mut self.set, &self.own);
        }
        for h in accepted {
            self.accepted(h);
        }
        // Deliver what is queued (new connections just arrived).
        self.ids.clear();
        self.ids.extend(
            self.socks
                .iter()
                .filter(|(_, s)| matches!(&s.tcp, TcpState::Listening(l) if !l.queue.is_empty()))
                .map(|(id, _)| *id),
        );
        let ids = std::mem::take(&mut self.ids);
        for id in &ids {
            if let Some(mut s) = self.socks.remove(id) {
                Self::deliver(&mut s);
                self.socks.insert(*id, s);
            }
        }
        self.ids = ids;
    }

    /// Free lingering sockets that smoltcp is done with (called after egress, so that an
    /// aborted socket got its chance to send the RST).
    fn reap(&mut self) {
        let set = &mut self.set;
        let spare = &mut self.tcp_spare;
        self.lingering.retain(|h| {
            let t = set.get_mut::<tcp::Socket>(*h);
            if t.recv_queue() > 0 && t.state() != tcp::State::Closed {
                // Data for a socket the app has closed: Linux answers with RST. Keep the
                // socket until egress has sent it.
                t.abort();
                return true;
            }
            let st = t.state();
            if matches!(st, tcp::State::Closed | tcp::State::TimeWait) {
                keep_spare(spare, set.remove(*h));
                false
            } else {
                true
            }
        });
    }

    /// Service one TCP socket; `false` when it is gone.
    fn service_tcp(&mut self, s: &mut Sock, accepted: &mut Vec<SocketHandle>) -> bool {
        match &mut s.tcp {
            TcpState::Idle => !s.hup,
            TcpState::Done => {
                // Whatever the app still writes has nowhere to go.
                while s.rd {
                    match sys::read(s.dmn.raw(), &mut self.scratch) {
                        Ok(n) if n > 0 => {}
                        Err(e) if e == Errno::EINTR => {}
                        _ => s.rd = false,
                    }
                }
                !s.hup
            }
            TcpState::Listening(l) => {
                let mut i = 0;
                while i < l.pool.len() {
                    let h = l.pool[i];
                    match self.set.get::<tcp::Socket>(h).state() {
                        tcp::State::Listen | tcp::State::SynReceived => i += 1,
                        tcp::State::Closed => {
                            self.free_tcp(h);
                            l.pool.swap_remove(i);
                        }
                        _ => {
                            l.pool.swap_remove(i);
                            accepted.push(h);
                        }
                    }
                }
                if s.wr {
                    Self::deliver(s);
                }
                if s.hup {
                    if let TcpState::Listening(l) = std::mem::replace(&mut s.tcp, TcpState::Done) {
                        for h in l.pool {
                            self.set.get_mut::<tcp::Socket>(h).abort();
                            self.lingering.push(h);
                        }
                        // Queued connections: dropping their app ends makes them close.
                        drop(l.queue);
                    }
                    return false;
                }
                true
            }
            TcpState::Connecting(c) => {
                let st = self.set.get::<tcp::Socket>(c.h).state();
                let elapsed = c.start.elapsed();
                let err = match st {
                    tcp::State::SynSent | tcp::State::SynReceived => {
                        if elapsed >= CONNECT_TIMEOUT {
                            Some(libc::ETIMEDOUT)
                        } else if elapsed >= NEIGHBOUR_TIMEOUT
                            && !self.is_own(&c.hop)
                            && !self.seen.contains_key(&c.hop)
                        {
                            Some(libc::EHOSTUNREACH)
                        } else {
                            None
                        }
                    }
                    tcp::State::Closed => Some(libc::ECONNREFUSED),
                    _ => Some(0),
                };
                if let Some(e) = err {
                    self.connect_done(s, e);
                    if e == 0 {
                        return self.pump_tcp(s);
                    }
                }
                true
            }
            TcpState::Conn(_) => self.pump_tcp(s),
        }
    }

    /// Move data both ways for a connected socket; `false` when the socket is gone.
    fn pump_tcp(&mut self, s: &mut Sock) -> bool {
        let TcpState::Conn(c) = &mut s.tcp else {
            return true;
        };
        let fd = s.dmn.raw();
        let t = self.set.get_mut::<tcp::Socket>(c.h);
        // net → app
        if s.wr {
            while t.can_recv() {
                let r = t.recv(|buf| match sys::write(fd, buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(n)) if n > 0 => {}
                    Ok(Err(e)) if e.is_again() => {
                        s.wr = false;
                        break;
                    }
                    Ok(Err(e)) if e == Errno::EINTR => {}
                    Ok(Err(_)) => {
                        // The app can no longer read: Linux answers further data with RST.
                        s.wr = false;
                        t.abort();
                        break;
                    }
                    _ => break,
                }
            }
        }
        // app → net
        if s.rd && !c.app_eof {
            loop {
                // Our side is already closed (nothing to do with app data), or no room.
                if !t.may_send() || !t.can_send() {
                    break;
                }
                let r = t.send(|buf| match sys::read(fd, buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(0)) => {
                        c.app_eof = true;
                        t.close();
                        break;
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.is_again() => {
                        s.rd = false;
                        break;
                    }
                    Ok(Err(e)) if e == Errno::EINTR => {}
                    Ok(Err(e)) => {
                        // ECONNRESET: the app closed with data it never read; Linux then
                        // resets the connection.
                        c.app_eof = true;
                        if e.0 == libc::ECONNRESET {
                            t.abort();
                        } else {
                            t.close();
                        }
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let st = t.state();
        let reset = st == tcp::State::Closed
            && !matches!(
                c.prev,
                tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
                    | tcp::State::Closed
            );
        if reset {
            log::debug!("connection reset (was {})", c.prev);
            if s.so_error == 0 {
                s.so_error = if c.prev == tcp::State::SynReceived {
                    libc::ECONNREFUSED
                } else {
                    libc::ECONNRESET
                };
            }
            // Reads give EOF, writes EPIPE (SIGPIPE unless MSG_NOSIGNAL), as after an RST.
            let _ = sys::shutdown(fd, libc::SHUT_RDWR);
            // If we aborted (app closed with unread data), the RST still has to go out.
            self.lingering.push(c.h);
            s.tcp = TcpState::Done;
            return !s.hup;
        }
        if !c.fin_to_app
            && !t.may_recv()
            && t.recv_queue() == 0
            && matches!(
                st,
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
                    | tcp::State::Closed
            )
        {
            let _ = sys::shutdown(fd, libc::SHUT_WR);
            c.fin_to_app = true;
        }
        c.prev = st;
        if s.hup && c.app_eof {
            // The app closed its last fd: linger until smoltcp is done with the socket.
            let unread = t.recv_queue() > 0
                || sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)
                    == Ok(libc::ECONNRESET);
            if s.opts.linger == Some(0) || unread {
                t.abort();
            } else {
                t.close();
            }
            self.lingering.push(c.h);
            s.tcp = TcpState::Done;
            return false;
        }
        if matches!(st, tcp::State::Closed | tcp::State::TimeWait) && c.fin_to_app && c.app_eof {
            let h = c.h;
            self.free_tcp(h);
            s.tcp = TcpState::Done;
            return !s.hup;
        }
        true
    }

    /// A pool socket reached Established: give it a socketpair and queue it on the listener
    /// that matches its local address.
    fn accepted(&mut self, h: SocketHandle) {
        let t = self.set.get::<tcp::Socket>(h);
        let (Some(local), Some(remote)) = (t.local_endpoint(), t.remote_endpoint()) else {
            self.set.get_mut::<tcp::Socket>(h).abort();
            self.lingering.push(h);
            return;
        };
        let (local, remote) = (ep_to_sa(local), ep_to_sa(remote));
        let Some(lid) = self.match_listener(local.ip(), local.port()) else {
            self.set.get_mut::<tcp::Socket>(h).abort();
            self.lingering.push(h);
            return;
        };
        let id = self.new_id();
        let (d, a) = match self.make_pair(libc::SOCK_STREAM, id) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("accept: socketpair: {e}");
                self.set.get_mut::<tcp::Socket>(h).abort();
                self.lingering.push(h);
                return;
            }
        };
        let Some(l) = self.socks.get_mut(&lid) else {
            return;
        };
        let mut s = Sock::new(l.domain, Kind::Tcp, d);
        s.opts = l.opts.clone();
        s.opts.other.clear();
        s.bound = l.bound;
        s.local = Some(local);
        s.peer = Some(remote);
        s.wr = true;
        s.rd = true;
        let rec = AcceptRecord {
            id,
            local: s.present(local),
            peer: s.present(remote),
        };
        if let TcpState::Listening(li) = &mut l.tcp {
            li.queue.push_back(Pending { app: a, rec });
        }
        apply_tcp_opts(self.set.get_mut::<tcp::Socket>(h), &s.opts);
        s.tcp = TcpState::Conn(Conn {
            h,
            app_eof: false,
            fin_to_app: false,
            prev: tcp::State::Established,
        });
        self.socks.insert(id, s);
    }

    /// Write queued accept records (with their fds) to the listener's socketpair.
    fn deliver(s: &mut Sock) {
        let fd = s.dmn.raw();
        let TcpState::Listening(l) = &mut s.tcp else {
            return;
        };
        while let Some(p) = l.queue.front() {
            let rec = p.rec.encode();
            match sys::sendmsg(
                fd,
                &[IoSlice::new(&rec)],
                &[p.app.raw()],
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            ) {
                Ok(_) => {
                    l.queue.pop_front();
                }
                Err(e) if e == Errno::EINTR => {}
                Err(e) if e.is_again() => {
                    s.wr = false;
                    return;
                }
                Err(_) => {
                    s.hup = true;
                    return;
                }
            }
        }
    }
}

/// Whether the app's end of socket `id` of node `node` is closed in every process: the kernel
/// frees its abstract name (`names::socket_name`) when the last reference goes away.
fn app_gone(node: u64, id: u64) -> bool {
    let Ok(probe) = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) else {
        return true;
    };
    sys::bind_unix(probe.raw(), &names::socket_name(node, id)) != Err(Errno::EADDRINUSE)
}

/// Whether datagram socket `s` takes a datagram from `src` (its peer, if connected; its
/// family, and IPv4 on a dual-stack socket).
fn dgram_wants(s: &Sock, src: SocketAddr) -> bool {
    (match s.dg.peer {
        Some(p) if s.kind == Kind::Udp => p == src,
        Some(p) => p.ip() == src.ip(),
        None => true,
    }) && (s.domain == libc::AF_INET6 && (!s.opts.v6only || src.is_ipv6())
        || s.domain == libc::AF_INET && src.is_ipv4())
}

/// Options that Linux accepts on any socket and that have no effect here: stored and
/// reported back.
fn generic_option(k: (i32, i32)) -> bool {
    matches!(
        k,
        (
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO
                | libc::SO_SNDTIMEO
                | libc::SO_RCVLOWAT
                | libc::SO_SNDLOWAT
                | libc::SO_PRIORITY
                | libc::SO_OOBINLINE
                | libc::SO_TIMESTAMP
                | libc::SO_MARK
                | libc::SO_DONTROUTE
                | libc::SO_BUSY_POLL
                | libc::SO_ZEROCOPY
        ) | (
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT
                | libc::TCP_FASTOPEN
                | libc::TCP_QUICKACK
                | libc::TCP_USER_TIMEOUT
                | libc::TCP_NOTSENT_LOWAT
                | libc::TCP_LINGER2
                | libc::TCP_SYNCNT
                | libc::TCP_WINDOW_CLAMP
                | libc::TCP_FASTOPEN_CONNECT
        ) | (
            libc::IPPROTO_IP,
            libc::IP_TTL
                | libc::IP_RECVERR
                | libc::IP_PKTINFO
                | libc::IP_MTU_DISCOVER
                | libc::IP_RECVTOS
                | libc::IP_RECVTTL
                | libc::IP_MULTICAST_TTL
                | libc::IP_MULTICAST_LOOP
                | libc::IP_FREEBIND
                | libc::IP_BIND_ADDRESS_NO_PORT
                | libc::IP_RETOPTS
                | libc::IP_MULTICAST_IF
        ) | (
            libc::IPPROTO_IPV6,
            libc::IPV6_UNICAST_HOPS
                | libc::IPV6_RECVERR
                | libc::IPV6_RECVPKTINFO
                | libc::IPV6_MTU_DISCOVER
                | libc::IPV6_RECVTCLASS
                | libc::IPV6_MULTICAST_HOPS
                | libc::IPV6_MULTICAST_LOOP
                | libc::IPV6_RECVHOPLIMIT
                | libc::IPV6_MULTICAST_IF
        )
    )
}

fn apply_tcp_opts(t: &mut tcp::Socket<'static>, o: &Opts) {
    t.set_nagle_enabled(o.cork || !o.nodelay);
    t.set_ack_delay(None);
    // Always: even from a native port, the path may cross a VDE cable to a switch that
    // drops (vde_plug to Debian's vde_switch), and a 1 MiB window sent blind into it is lost
    // again at every retransmission timeout.
    t.set_congestion_control(tcp::CongestionControl::Cubic);
    if o.keepalive {
        t.set_keep_alive(Some(smoltcp::time::Duration::from_secs(o.keepidle as u64)));
        t.set_timeout(Some(smoltcp::time::Duration::from_secs(
            (o.keepintvl as u64) * (o.keepcnt as u64) + o.keepidle as u64,
        )));
    } else {
        t.set_keep_alive(None);
        t.set_timeout(None);
    }
}

/// Keep a socket removed from the set for reuse if it is a TCP socket and there is room.
fn keep_spare(spare: &mut Vec<tcp::Socket<'static>>, so: smoltcp::socket::Socket<'static>) {
    if let smoltcp::socket::Socket::Tcp(mut t) = so
        && spare.len() < TCP_SPARE
    {
        // Closed, so that `listen`/`connect` take it (they reset an unopened socket).
        t.abort();
        spare.push(t);
    }
}

/// Kernel accounting bytes one accept record (with its fd) takes in a socketpair, so that
/// `SIOCOUTQ` on a listener tells how many connections wait for `accept`.
fn measure_record_cost() -> usize {
    let probe = || -> Result<usize, Errno> {
        let (a, _b) = sys::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC)?;
        let (x, _y) = sys::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC)?;
        let rec = [0u8; ioth_common::ctl::ACCEPT_RECORD_LEN];
        sys::sendmsg(
            a.raw(),
            &[IoSlice::new(&rec)],
            &[x.raw()],
            libc::MSG_DONTWAIT,
        )?;
        os::outq(a.raw())
    };
    match probe() {
        Ok(n) if n > 0 => n,
        _ => ioth_common::ctl::ACCEPT_RECORD_LEN,
    }
}
