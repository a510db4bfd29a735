//! The stack: one smoltcp `Interface` on one [`Link`], all the node's sockets, and the
//! operations of the control protocol (`ioth_common::ctl`), apart from any I/O loop.
//!
//! A `Stack` does no waiting and reads no clock: its owner (the daemon, `crate::daemon`,
//! or the test harness, `crate::harness`) passes the time into every call, tells it which
//! socketpair ends became ready ([`Stack::app_event`]), calls [`Stack::poll`] for the work
//! that is due, and sleeps until [`Stack::poll_delay`]. The sockets' application ends are
//! real kernel socketpairs either way; new daemon ends to watch are listed by
//! [`Stack::take_watch`].
//!
//! Each poll: read frames one at a time (`poll_ingress_single`, after a look at the headers:
//! SYNs to a full listener are dropped like Linux does, listener pools are refilled after
//! every SYN), pump every socket between smoltcp and its socketpair, then send
//! (`poll_egress` until quiet).
//!
//! TCP data: the daemon end of each socketpair is read straight into smoltcp's transmit ring
//! and smoltcp's receive ring is written straight into it; EAGAIN clears a readiness flag
//! that only an edge-triggered epoll event sets again.
//!
//! Listeners: smoltcp has no accept queue. Each listener keeps a small pool of smoltcp sockets
//! in `Listen`; a connection that reaches `Established` gets its own socketpair and is queued
//! in the stack until its [`AcceptRecord`] (with the app's end attached) fits on the
//! listener's socketpair. Backlog = queued here + records not yet received by the app.
//!
//! Raw ICMP sockets are pumped by `crate::raw`; `SIOCSARP` neighbour entries come from
//! `crate::neigh`.
//!
//! The files, each adding an `impl Stack` block for one concern:
//! - `mod.rs`: the [`Stack`] struct, its creation, one poll, its timers;
//! - `control.rs`: dispatch of control requests to the operations below, node info;
//! - `sock.rs`: the socket table and socket creation;
//! - `ports.rs`: addresses, routing, ephemeral ports, bind;
//! - `stream.rs`: TCP listen, backlog, accept records, connect;
//! - `sockopt.rs`: socket options;
//! - `dgram.rs`: UDP and ICMP sockets;
//! - `pump.rs`: ingress, egress, and moving data between smoltcp and the socketpairs;
//! - `rtnl.rs`: address and route events for the node's rtnetlink sockets.
//!
//! Not done here: TCP urgent data, SO_LINGER with a timeout (only 0 = RST is honoured), IP
//! options, raw sockets other than ICMPv6.

#![deny(unsafe_code)]

use crate::frame;
use crate::link::{Link, Recv};
use crate::os;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use ioth_common::config::{self, AddrMode, NodeConfig};
use ioth_common::ctl::{self, AcceptRecord, DgramHeader, Reply, Request, WireAddr};
use ioth_common::names;
use ioth_common::sys::{self, Errno, Fd};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::task::Waker;

mod control;
mod cut;
mod demux;
mod dgram;
mod keep;
mod packet;
mod ports;
mod pump;
mod reset;
mod rtnl;
mod sock;
mod sockopt;
mod stats;
mod stream;
mod timeout;
mod timewait;
mod work;

use dgram::*;
use sock::*;
use sockopt::*;
use stream::*;
pub use timeout::TcpTimeouts;
use timeout::{Bounds, Linger, Verdict, Watch};
use work::Work;

pub use keep::{Kept, KeptSocket};

/// smoltcp TCP ring sizes (each direction).
pub const TCP_BUF: usize = 1 << 20;
/// Socket buffer asked for on both ends of each socketpair.
pub const APP_SOCKBUF: i32 = ctl::APP_SOCKBUF;
/// What a socket's daemon end is watched for ([`Stack::take_watch`]): everything, or only the
/// application's close (`EPOLLHUP` comes without asking).
pub const WATCH_ALL: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
pub const WATCH_CLOSE: u32 = (libc::EPOLLRDHUP | libc::EPOLLET) as u32;
/// An edge-triggered event on a socket's daemon end ([`Stack::app_event`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppEvent {
    /// Data to read (`EPOLLIN`).
    pub readable: bool,
    /// Room to write (`EPOLLOUT`).
    pub writable: bool,
    /// The app shut its sending side down, or closed (`EPOLLRDHUP`).
    pub rdhup: bool,
    /// Both directions shut (`EPOLLHUP`, `EPOLLERR`).
    pub hup: bool,
}

impl AppEvent {
    /// From `epoll_event.events`.
    pub fn from_epoll(bits: u32) -> AppEvent {
        AppEvent {
            readable: bits & libc::EPOLLIN as u32 != 0,
            writable: bits & libc::EPOLLOUT as u32 != 0,
            rdhup: bits & libc::EPOLLRDHUP as u32 != 0,
            hup: bits & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0,
        }
    }
}

/// A connect with no answer fails with ETIMEDOUT after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A connect whose next hop does not answer ARP/NDP fails with EHOSTUNREACH after this long
/// (Linux: 3 probes a second apart, `mcast_solicit`/`ucast_solicit`).
pub const NEIGHBOUR_TIMEOUT: Duration = Duration::from_secs(3);
/// A neighbour that answered ARP/NDP counts as reachable for this long (Linux's
/// `base_reachable_time`); after that, a connect asks again before it relies on it.
pub const REACHABLE: Duration = Duration::from_secs(30);
/// Probes for a neighbour a connect waits for go out this often.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A reachable neighbour is probed when a connect to it had no answer for this long (the
/// SYN's first retransmission).
const SUSPECT: Duration = Duration::from_secs(1);
/// A connection whose peer acknowledges nothing (data or FIN sent, or a zero window probed)
/// fails with `ETIMEDOUT` after this long: Linux's `tcp_retries2` (15) retransmissions with
/// its minimum RTO of 200 ms doubling up to 120 s, ((2 << 9) - 1) x 0.2 s + 6 x 120 s.
pub const RETRIES_TIMEOUT: Duration = Duration::from_millis(924_600);
/// The same for an orphan (closed by the application): Linux's `tcp_orphan_retries` (0,
/// which means 8 retransmissions), ((2 << 8) - 1) x 0.2 s.
pub const ORPHAN_TIMEOUT: Duration = Duration::from_millis(102_200);
/// An orphan whose FIN was acknowledged waits this long for the peer's FIN in FIN-WAIT-2:
/// Linux's `tcp_fin_timeout`.
pub const FIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Local ports for connects and binds to port 0 unless the node is told otherwise
/// (`--port-range`): IANA's dynamic range, 16,384 ports (Linux's default
/// `ip_local_port_range` is 32768-60999).
pub const DEFAULT_PORT_RANGE: (u16, u16) = (49152, 65535);
/// Idle smoltcp sockets kept in `Listen` per listener.
const LISTEN_IDLE: usize = 2;
/// Closed smoltcp TCP sockets kept for reuse (rings and all): a new connection then costs no
/// 2 MiB `mmap`/`munmap` and no page faults (a quarter of the daemon's CPU at 2,500 conn/s).
const TCP_SPARE: usize = 32;
const MAX_BACKLOG: usize = 4096;
/// How soon connections for a kernel listener whose backlog was full are tried again.
const KERNEL_RETRY: Duration = Duration::from_millis(2);
const DGRAM_PACKETS: usize = 256;
const DGRAM_BYTES: usize = 512 * 1024;

/// The node's loopback addresses: reachable from its own processes only (hairpinned like
/// its other addresses; frames from the switch that carry them are dropped as martians).
const LOOPBACK: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
];

/// Every socket is visited at this interval in the daemon, in case a wake-up was missed.
const SWEEP: Duration = Duration::from_secs(1);
/// Frames read per loop turn before egress gets its turn.
const RX_BATCH: usize = 256;
/// The daemon asks again for a neighbour it asked for this long ago (smoltcp's cache entries
/// live 60 s).
const RESOLICIT: Duration = Duration::from_secs(20);

/// How the node shows up in the switch's port list: name or first address, and pid.
pub fn port_description(cfg: &NodeConfig) -> String {
    let who = match (&cfg.name, &cfg.addrs) {
        (Some(n), _) => n.clone(),
        (None, AddrMode::Static(v)) => v[0].addr.to_string(),
        (None, _) => cfg.mac.to_string(),
    };
    format!("ioth-stackd {who} pid={}", sys::getpid())
}

/// What a stack is made of besides its link.
/// The next message the application wrote on a datagram-like socket's end `fd` (UDP, ICMP,
/// raw, packet: one message each), into `buf`: its length, or `None` with `rd` cleared when
/// there is none now, or never again (end of file: every message from the shim has a header,
/// so a 0 is the end, and reading on would spin).
pub(crate) fn app_message(fd: RawFd, buf: &mut [u8], rd: &mut bool) -> Option<usize> {
    loop {
        match sys::recv(fd, buf, libc::MSG_DONTWAIT) {
            Ok(n) if n > 0 => return Some(n),
            Err(e) if e == Errno::EINTR => continue,
            _ => {
                *rd = false;
                return None;
            }
        }
    }
}

pub struct StackConfig {
    pub node: NodeConfig,
    /// The node's id: part of its sockets' abstract names (`names::socket_name`).
    pub id: u64,
    /// IP MTU.
    pub ip_mtu: usize,
    /// Seeds smoltcp (initial sequence numbers, DHCP) and the first ephemeral port and ICMP
    /// identifier: the test harness gives fixed seeds for repeatable runs.
    pub seed: u64,
    /// Where the link goes, for the node's info (`switch=`).
    pub link_name: String,
}

/// What [`Stack::poll`] saw that its owner must act on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Polled {
    /// The link is gone (`Recv::Down`): plug the node in again.
    pub link_down: bool,
}

pub struct Stack<D: Link> {
    /// Everything but the socket table, so that a socket of the table and the rest can be
    /// borrowed at once ([`Stack::split`]).
    net: Net<D>,
    socks: HashMap<u64, Sock>,
    /// Draws socket ids (seeded: the harness repeats its runs).
    rng: u64,
    /// Keys the choice among listeners sharing a port (`SO_REUSEPORT`, `match_listener`).
    reuse_key: u64,
    next_ident: u16,
    next_ephemeral: u16,
    /// The ephemeral range, inclusive ([`Stack::set_port_range`]).
    port_range: (u16, u16),
    /// Sockets with work to do (see `work.rs`).
    work: Work,
    /// Sockets to visit again at the next poll whatever happens (connects under way: their
    /// timeouts), and the ids being visited now.
    revisit: Vec<u64>,
    ids: Vec<u64>,
    /// Established connections still without a socketpair (we were out of descriptors):
    /// tried again at every poll, as the kernel keeps a connection queued while `accept`
    /// fails with `EMFILE`.
    unpaired: Vec<SocketHandle>,
    /// A visit of every socket at this interval, in case a wake-up was missed (`None`: never,
    /// as in the tests, where a missed wake-up must show).
    sweep: Option<Duration>,
    next_sweep: Instant,
    /// Sockets for the owner to start watching (`EPOLL_CTL_ADD`) or to watch for everything
    /// from now on (`EPOLL_CTL_MOD`, [`Stack::loud`]) ([`Stack::take_watch`]).
    watch: Vec<(u64, i32)>,
    /// Listeners are reported for a keeper (`keep.rs`), and the reports not yet taken.
    keeping: bool,
    kept: Vec<Kept>,
    kept_ids: HashSet<u64>,
    /// Where connections are recorded for the next daemon (`crate::journal`).
    journal: Option<crate::journal::Journal>,
    /// Connections to visit at a time whatever happens (`Watch::stall_end`), earliest first.
    alarms: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Ids of the listening sockets (a few among thousands of connections): a SYN looks
    /// only at these. Ids that stopped listening are dropped at each poll.
    listeners: Vec<u64>,
    /// Ids of the packet sockets (`packet.rs`): every frame from the link visits these.
    packets: Vec<u64>,
    /// TCP ports in use, gathered for the ephemeral ports of many connects at most once a
    /// second, and when gathered (`None`: gather again; see `Stack::ephemeral`).
    tcp_ports: Option<(Instant, HashSet<u16>)>,
    /// Names of the node's sockets in `/proc/net/unix` by inode, read once per poll
    /// (`Stack::app_closed`).
    unix_names: Option<HashMap<u64, String>>,
    /// The node's door (`Stack::door_ready`), -1 if none.
    door: RawFd,
    /// Door connections that came before their socket's `Register`, with when.
    door_early: HashMap<u64, (Fd, Instant)>,
    /// TCP cut-through with other nodes of this host (`cut.rs`).
    cut: cut::CutThrough,
    /// When the node's figures go to the link next (`stats.rs`), and whether anything
    /// happened since they last went.
    next_stats: Instant,
    stats_dirty: bool,
}

/// The node's network side: interface, link, smoltcp sockets, addresses, and what belongs
/// to no one socket.
pub(super) struct Net<D: Link> {
    /// Connections handed over to kernel listeners since the last poll (`deliver`).
    delivered: Vec<u64>,
    /// Connections queued on a kernel listener that closed before taking them: for another
    /// listener sharing the port, or reset (`Stack::rehome`).
    orphans: Vec<Pending>,
    /// Likewise, its pool sockets with a handshake under way.
    orphan_handshakes: Vec<SocketHandle>,
    cfg: NodeConfig,
    id: u64,
    link_name: String,
    iface: Interface,
    dev: D,
    set: SocketSet<'static>,
    cidrs: Vec<config::Cidr>,
    own: Vec<IpAddr>,
    ip_mtu: usize,
    lingering: Vec<Linger>,
    /// How long connections wait for a silent peer (see `timeout.rs`).
    timeouts: TcpTimeouts,
    /// When the first orphan's wait ends (`Watch::stall_end`; see `reap`).
    next_orphan_end: Option<Instant>,
    /// When a frame last came from each neighbour.
    seen: HashMap<IpAddr, Instant>,
    /// When the stack last asked for each neighbour itself (`prime_neighbour`).
    solicited: HashMap<IpAddr, Instant>,
    record_cost: usize,
    /// Frames may wait on the link (an event said so, or a batch ended early).
    more_rx: bool,
    scratch: Vec<u8>,
    /// UDP datagrams smoltcp gave to a socket that does not want them (wrong family, other
    /// peer): (port, source, payload), handed to another socket on that port.
    misrouted: Vec<(u16, SocketAddr, Vec<u8>)>,
    /// The mDNS responder for the node's name (see `crate::mdns`).
    mdns: Option<crate::mdns::Responder>,
    /// ICMP errors for connected UDP sockets (see `crate::icmperr`).
    icmp_errors: crate::icmperr::IcmpErrors,
    /// Closed TCP sockets to reuse (see [`TCP_SPARE`]).
    tcp_spare: Vec<tcp::Socket<'static>>,
    /// The retransmission counters of TCP sockets no longer in the set (`stats.rs`).
    tcp_gone: stats::TcpCounters,
    /// Local endpoints of connections closed here first (`timewait.rs`).
    time_wait: timewait::TimeWait,
    /// The connections' 4-tuples, to find a segment's socket without smoltcp's scan.
    demux: demux::Demux,
    /// DHCPv4 and SLAAC in auto mode (see `crate::autoconf`).
    auto: Option<crate::autoconf::Autoconf>,
    /// Gateways and DNS servers given in the configuration (auto mode adds learnt ones).
    given_gw: Vec<IpAddr>,
    given_dns: Vec<IpAddr>,
    /// Probes that make a previous daemon's peers reset its connections (`reset.rs`).
    resets: Option<reset::Resets>,
    /// The rtnetlink sockets that hear of address and route changes (`rtnl.rs`).
    rtnl: rtnl::Subscribers,
    /// The time of the current call (every entry point sets it).
    now: Instant,
    t0: Instant,
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

/// A small generator for the stack's seeded choices (splitmix64).
fn mix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<D: Link> Stack<D> {
    pub fn new(sc: StackConfig, mut dev: D, now: Instant) -> Stack<D> {
        let StackConfig {
            node: cfg,
            id,
            ip_mtu,
            mut seed,
            link_name,
        } = sc;
        let cidrs = match &cfg.addrs {
            AddrMode::Static(v) => v.clone(),
            // Addresses come later (see `crate::autoconf`); only the link-local one now.
            AddrMode::Auto { .. } => Vec::new(),
        };
        let ll = config::link_local(&cfg.mac);
        let mut own: Vec<IpAddr> = cidrs.iter().map(|c| c.addr).collect();
        own.push(IpAddr::V6(ll));
        dev.set_own(own.iter().chain(&LOOPBACK).copied().collect());
        let mut icfg = Config::new(EthernetAddress(cfg.mac.0).into());
        icfg.random_seed = mix(&mut seed);
        icfg.slaac = matches!(cfg.addrs, AddrMode::Auto { slaac: true, .. });
        let mut iface = Interface::new(icfg, &mut dev, now);
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
        let mut set = SocketSet::new(vec![]);
        let icmp_errors = crate::icmperr::IcmpErrors::open(&mut set);
        let next_ident = (mix(&mut seed) as u16) | 1;
        let next_ephemeral = 49152 + (mix(&mut seed) % 16384) as u16;
        let mut net = Net {
            delivered: Vec::new(),
            orphans: Vec::new(),
            orphan_handshakes: Vec::new(),
            given_gw: cfg.gateways.clone(),
            given_dns: cfg.dns.clone(),
            cfg,
            id,
            link_name,
            iface,
            dev,
            set,
            cidrs,
            own,
            ip_mtu,
            lingering: Vec::new(),
            timeouts: TcpTimeouts::default(),
            next_orphan_end: None,
            seen: HashMap::new(),
            solicited: HashMap::new(),
            record_cost: measure_record_cost(),
            more_rx: true,
            scratch: vec![0; 65536 + 64],
            misrouted: Vec::new(),
            mdns: None,
            icmp_errors,
            tcp_spare: Vec::new(),
            tcp_gone: stats::TcpCounters::default(),
            time_wait: timewait::TimeWait::default(),
            demux: demux::Demux::default(),
            auto: None,
            resets: None,
            rtnl: rtnl::Subscribers::default(),
            now,
            t0: now,
        };
        if let AddrMode::Auto { slaac, dhcp4 } = net.cfg.addrs {
            net.auto = Some(crate::autoconf::Autoconf::new(
                &mut net.set,
                slaac,
                dhcp4,
                net.cfg.name.as_deref(),
            ));
        }
        if let Some(name) = net.cfg.name.clone() {
            net.mdns = Some(crate::mdns::Responder::new(
                &mut net.iface,
                &mut net.set,
                &name,
            ));
        }
        log::info!("node {id:016x} up: mtu {} addrs {:?}", net.ip_mtu, net.own);
        Stack {
            net,
            socks: HashMap::new(),
            rng: mix(&mut seed),
            reuse_key: mix(&mut seed),
            next_ident,
            next_ephemeral,
            port_range: DEFAULT_PORT_RANGE,
            listeners: Vec::new(),
            packets: Vec::new(),
            tcp_ports: None,
            unix_names: None,
            door: -1,
            door_early: HashMap::new(),
            work: Work::default(),
            revisit: Vec::new(),
            unpaired: Vec::new(),
            ids: Vec::new(),
            sweep: Some(SWEEP),
            next_sweep: now + SWEEP,
            next_stats: now,
            stats_dirty: true,
            watch: Vec::new(),
            keeping: false,
            kept: Vec::new(),
            kept_ids: Default::default(),
            journal: None,
            alarms: BinaryHeap::new(),
            cut: cut::CutThrough::default(),
        }
    }

    /// Visit every socket at this interval besides the ones with work (`None`: never).
    pub fn set_sweep(&mut self, every: Option<Duration>) {
        self.sweep = every;
    }

    /// The link (the daemon plugs a new switch port into it after a restart).
    pub fn link(&self) -> &D {
        &self.net.dev
    }

    pub fn link_mut(&mut self) -> &mut D {
        &mut self.net.dev
    }

    /// Announce every address of the node on the LAN (at start, and when it plugs in again):
    /// see `Net::announce`.
    pub fn announce_all(&mut self) {
        announce(&mut self.net.dev, self.net.cfg.mac.0, &self.net.own);
    }

    /// The link has frames (an event said so), or room for the waiting one.
    pub fn link_ready(&mut self, writable: bool) {
        if writable {
            self.net.dev.flush();
        }
        self.net.dev.socket_event();
        // Ingress stops while a frame waits; frames may wait too (edge-triggered).
        self.net.more_rx = true;
    }

    /// A shortcut's doorbell rang: a frame in its ring (`ring.rs`).
    pub fn bell_rung(&mut self) {
        self.net.more_rx = true;
    }

    /// The node's id.
    pub fn id(&self) -> u64 {
        self.net.id
    }

    /// Whether socket `id` exists.
    pub fn has_socket(&self, id: u64) -> bool {
        self.socks.contains_key(&id)
    }

    /// Whether socket `id` is a TCP socket a client made that never connected or listened
    /// as far as we know (its client may have connected it itself: `Request::Connected`).
    pub fn is_fresh(&self, id: u64) -> bool {
        self.socks
            .get(&id)
            .is_some_and(|s| matches!(s.tcp, TcpState::Fresh(_)))
    }

    /// No socket left, none lingering, no netlink socket listening for events.
    pub fn is_idle(&self) -> bool {
        self.socks.is_empty() && self.net.lingering.is_empty() && !self.net.rtnl.any_alive()
    }

    /// Whether the node has its addresses (at once for fixed ones; in auto mode, a lease or a
    /// SLAAC address).
    pub fn is_configured(&self) -> bool {
        self.net
            .auto
            .as_ref()
            .is_none_or(|a| a.ready(&self.net.cidrs))
    }

    /// Changes to what the owner watches on the sockets' daemon ends, made since the last
    /// call: `(fd, id, op, events)` for `epoll_ctl` (edge-triggered; reported with
    /// [`Stack::app_event`]). A daemon end leaves the watch when the stack closes it.
    ///
    /// A TCP socket that neither connects nor listens yet ([`Sock::quiet`]) is watched for
    /// its close only ([`WATCH_CLOSE`]): nothing it could say otherwise is news (the
    /// writable end of a fresh socketpair, the shim's filler arriving), and a connect cut
    /// through never needs more. Each would be a wake-up of the daemon per connection. A
    /// listener is watched for room only while accept records wait ([`Sock::watch_events`]).
    pub fn take_watch(&mut self) -> Vec<(RawFd, u64, i32, u32)> {
        let mut ids = std::mem::take(&mut self.watch);
        // An `ADD` takes the events as they are now and reports what is pending, as a `MOD`
        // would: a `MOD` of the same socket in the same batch (a connect started with the
        // request that gave it its daemon end, `loud`) is a system call for nothing, or
        // fails (`ENOENT`) before the `ADD`. So is any second entry for a socket.
        if ids.len() > 1 {
            let added: HashSet<u64> = ids
                .iter()
                .filter(|(_, op)| *op == libc::EPOLL_CTL_ADD)
                .map(|(id, _)| *id)
                .collect();
            let mut seen = HashSet::with_capacity(ids.len());
            ids.retain(|&(id, op)| {
                !(op == libc::EPOLL_CTL_MOD && added.contains(&id)) && seen.insert((id, op))
            });
        }
        ids.into_iter()
            .filter_map(|(id, op)| {
                let s = self.socks.get_mut(&id)?;
                let ev = s.watch_events();
                s.watched = ev;
                (s.dmn.raw() >= 0 && !s.held).then(|| (s.dmn.raw(), id, op, ev))
            })
            .collect()
    }

    /// Socket `id` starts a TCP connect or listens: watch everything on its daemon end from
    /// now on (the events pending show at once).
    pub(super) fn loud(&mut self, id: u64) {
        if let Some(s) = self.socks.get_mut(&id)
            && std::mem::take(&mut s.quiet)
        {
            self.watch.push((id, libc::EPOLL_CTL_MOD));
        }
    }

    /// What an event on socket `id`'s daemon end says (see [`AppEvent`]).
    pub fn app_event(&mut self, id: u64, ev: AppEvent) {
        let AppEvent {
            readable,
            writable,
            rdhup,
            hup,
        } = ev;
        // HUP only means both directions are shut: also after our own SHUT_WR plus the app's
        // shutdown(SHUT_WR). Closed is when its name is free again.
        let gone = hup && self.socks.contains_key(&id) && self.app_closed(id);
        if let Some(s) = self.socks.get_mut(&id) {
            s.rd |= readable || rdhup || hup;
            s.rd_eof |= rdhup || hup;
            s.wr |= writable;
            s.hup |= gone;
            self.work.add(id);
        }
    }

    /// Socket `id` and everything else, borrowed at once.
    fn split(&mut self, id: u64) -> Result<(&mut Net<D>, &mut Sock), Errno> {
        let s = self.socks.get_mut(&id).ok_or(Errno::EBADF)?;
        Ok((&mut self.net, s))
    }

    /// Do the work that is due at `now`: frames in, sockets pumped, frames out.
    pub fn poll(&mut self, now: Instant) -> Polled {
        self.net.now = now;
        let mut polled = Polled::default();
        // A frame waiting for room on the link is retried on every turn: the EPOLLOUT edge of
        // a connected unix datagram socket (a VDE port) can be missed, and ingress stays
        // stopped while the frame waits.
        if self.net.dev.is_blocked() && self.net.dev.flush() {
            self.net.more_rx = true;
        }
        self.net.iface.poll_maintenance(now);
        let socks = &self.socks;
        self.listeners
            .retain(|id| socks.get(id).is_some_and(|s| s.is_listening()));
        if self
            .tcp_ports
            .as_ref()
            .is_some_and(|(t, _)| now >= *t + SWEEP)
        {
            self.tcp_ports = None;
        }
        self.unix_names = None;
        polled.link_down = self.ingress();
        self.cut_service();
        self.cut_publish();
        self.net.autoconf();
        self.service();
        // Connections a kernel listener took since: watched from now on.
        for id in std::mem::take(&mut self.net.delivered) {
            if let Some(s) = self.socks.get_mut(&id) {
                s.held = false;
                self.watch.push((id, libc::EPOLL_CTL_ADD));
                self.work.add(id);
            }
        }
        self.cut_sweep();
        if !self.door_early.is_empty() {
            self.door_expire();
        }
        self.net.egress();
        self.net.resets_tick();
        self.note_timeouts();
        self.net.reap();
        self.report_stats();
        // A listener watches for room only while accept records wait for it.
        for id in &self.listeners {
            if let Some(s) = self.socks.get(id)
                && s.watched != 0
                && s.watch_events() != s.watched
                && !self.watch.contains(&(*id, libc::EPOLL_CTL_MOD))
            {
                self.watch.push((*id, libc::EPOLL_CTL_MOD));
            }
        }
        // Egress can complete handshakes of hairpinned connections only after ingress;
        // a second pass keeps self-connections from waiting for a timeout.
        if self.net.dev.has_hairpin() {
            self.net.more_rx = true;
        }
        polled
    }

    /// How long the owner may wait before the next [`Stack::poll`] (`None`: until an event).
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.net.now = now;
        if self.net.dev.is_blocked() {
            // Retry the pending frame soon even if no event comes (see `poll`).
            return Some(Duration::from_millis(1));
        }
        if self.net.more_rx || self.net.dev.has_hairpin() || self.work.pending() {
            return Some(Duration::ZERO);
        }
        // A busy node with many connections tries every socket only so often (`demux.rs`):
        // a timer due before then waits for it.
        let mut t = match self.net.demux.full_due_in(now) {
            Some(wait) => Some(wait),
            None => self.net.iface.poll_delay(now, &self.net.set),
        };
        let mut at = |d: Duration| t = Some(t.map_or(d, |t| t.min(d)));
        if !self.revisit.is_empty() || !self.unpaired.is_empty() {
            // Connects under way (their timeouts); connections waiting for descriptors.
            at(Duration::from_millis(100));
        }
        let alarm = self.alarms.peek().map(|a| a.0.0);
        let stats = self.stats_dirty.then_some(self.next_stats);
        for end in [self.net.next_orphan_end, alarm, stats]
            .into_iter()
            .flatten()
        {
            at(if end > now { end - now } else { Duration::ZERO });
        }
        if self.sweep.is_some() && !self.socks.is_empty() {
            at(if self.next_sweep > now {
                self.next_sweep - now
            } else {
                Duration::ZERO
            });
        }
        t
    }
}

/// Tell the LAN that the IPv4 addresses among `addrs` are at `mac` (`frame::gratuitous_arp`):
/// switches and neighbours that knew them elsewhere (a node that moved) learn where they are
/// now. Not the IPv6 ones: an unsolicited advertisement fills the neighbour caches of the
/// smoltcp nodes that hear it, while nodes that start later never hear ours, and smoltcp
/// drops the packet (an echo reply, a SYN-ACK) that waits for a neighbour instead of
/// queueing it: the first exchange after it would be lost. An IPv6 node's multicast listener
/// reports at start teach the switches where it is all the same.
fn announce<D: Link>(dev: &mut D, mac: [u8; 6], addrs: &[IpAddr]) {
    let mut f = Vec::new();
    for a in addrs {
        if let IpAddr::V4(a) = a {
            frame::gratuitous_arp(mac, *a, &mut f);
            dev.send_now(&f);
        }
    }
}

impl<D: Link> Net<D> {
    /// Auto mode: take new leases and SLAAC addresses into the node's view.
    fn autoconf(&mut self) {
        let Some(a) = &mut self.auto else {
            return;
        };
        self.iface.poll_maintenance(self.now);
        if a.poll(&mut self.iface, &mut self.set) {
            let ll = config::link_local(&self.cfg.mac);
            let before = rtnl::view(&self.cidrs, ll, &self.cfg.gateways);
            self.cidrs = crate::autoconf::global_cidrs(&self.iface);
            let mut own: Vec<IpAddr> = self.cidrs.iter().map(|c| c.addr).collect();
            own.push(IpAddr::V6(ll));
            let new: Vec<IpAddr> = own
                .iter()
                .filter(|a| !self.own.contains(a))
                .copied()
                .collect();
            self.own = own.clone();
            own.extend(LOOPBACK);
            self.dev.set_own(own);
            announce(&mut self.dev, self.cfg.mac.0, &new);
            let mut gw = self.given_gw.clone();
            gw.extend(a.gateways(&mut self.iface));
            self.cfg.gateways = gw;
            let mut dns = self.given_dns.clone();
            dns.extend(a.dns());
            self.cfg.dns = dns;
            let after = rtnl::view(&self.cidrs, ll, &self.cfg.gateways);
            self.rtnl.changed(&before, &after);
            log::info!(
                "addresses {:?} gateways {:?} dns {:?}",
                self.cidrs,
                self.cfg.gateways,
                self.cfg.dns
            );
        }
    }
}
