//! A deterministic two-stack harness (in the spirit of quinn-proto's `Pair`): two
//! [`Stack`]s joined by an in-memory wire with a virtual clock, optional loss, delay,
//! jitter and reordering on the wire, and real kernel socketpairs as the application ends.
//!
//! Nothing here sleeps: when neither stack nor the wire has work, the clock jumps to the
//! next deadline (a stack's timer or a frame in flight). A test drives the stacks through
//! control requests (as the shim would send them) and reads and writes the application ends
//! itself, non-blocking; [`Pair::run_until`] advances until its condition holds or a virtual
//! time limit passes. Randomness (the stacks' and the wire's) is seeded, so a failing test
//! fails the same way again.
//!
//! Node `a` is `10.0.0.1/24` and `fd00::1/64`, node `b` is `10.0.0.2/24` and `fd00::2/64`,
//! on a link with a 1500-byte IP MTU (as a VDE port).

#![deny(unsafe_code)]
#![allow(dead_code)]

mod many;
mod recovery;
mod restart;
mod tcp;
mod udp;
mod vanish;

use crate::frame;
use crate::link::{Link, Recv};
use crate::stack::{Stack, StackConfig};
use ioth_common::config::{AddrMode, Cidr, Mac, NodeConfig};
use ioth_common::ctl::{AcceptRecord, Reply, Request, WireAddr};
use ioth_common::sys::{self, Errno, Fd};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
};
use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;

/// IP MTU of the harness link.
pub const MTU: usize = 1500;

// ------------------------------------------------------------------------------ the link

/// An in-memory [`Link`]: frames sent go to `out`, frames received come from `inq`, and
/// frames for the node itself are hairpinned, as on a switch port.
pub struct MemLink {
    mac: [u8; 6],
    own: Vec<IpAddr>,
    out: VecDeque<Vec<u8>>,
    inq: VecDeque<Vec<u8>>,
    hairpin: VecDeque<Vec<u8>>,
    rx: Vec<u8>,
    staged: Option<usize>,
}

impl MemLink {
    fn new(mac: [u8; 6]) -> MemLink {
        MemLink {
            mac,
            own: Vec::new(),
            out: VecDeque::new(),
            inq: VecDeque::new(),
            hairpin: VecDeque::new(),
            rx: vec![0; MTU + 14],
            staged: None,
        }
    }

    fn load(&mut self, f: &[u8]) -> usize {
        let n = f.len().min(self.rx.len());
        self.rx[..n].copy_from_slice(&f[..n]);
        n
    }
}

pub struct MemRx<'a>(&'a [u8]);

impl phy::RxToken for MemRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

pub struct MemTx<'a> {
    out: &'a mut VecDeque<Vec<u8>>,
    hairpin: &'a mut VecDeque<Vec<u8>>,
    mac: [u8; 6],
    own: &'a [IpAddr],
}

impl phy::TxToken for MemTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        if frame::is_for_self(&b, &self.mac, self.own) {
            self.hairpin.push_back(b);
        } else {
            self.out.push_back(b);
        }
        r
    }
}

impl Device for MemLink {
    type RxToken<'a> = MemRx<'a>;
    type TxToken<'a> = MemTx<'a>;

    fn receive(&mut self, _ts: Instant) -> Option<(MemRx<'_>, MemTx<'_>)> {
        let n = self.staged.take()?;
        let MemLink {
            mac,
            own,
            out,
            hairpin,
            rx,
            ..
        } = self;
        Some((
            MemRx(&rx[..n]),
            MemTx {
                out,
                hairpin,
                mac: *mac,
                own,
            },
        ))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<MemTx<'_>> {
        Some(MemTx {
            out: &mut self.out,
            hairpin: &mut self.hairpin,
            mac: self.mac,
            own: &self.own,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = MTU + 14;
        c
    }
}

impl Link for MemLink {
    fn recv(&mut self) -> Recv {
        if let Some(f) = self.hairpin.pop_front() {
            let len = self.load(&f);
            return Recv::Frame { len, hairpin: true };
        }
        match self.inq.pop_front() {
            Some(f) => {
                let len = self.load(&f);
                Recv::Frame {
                    len,
                    hairpin: false,
                }
            }
            None => Recv::Empty,
        }
    }

    fn frame(&self, len: usize) -> &[u8] {
        &self.rx[..len]
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

    fn send_now(&mut self, f: &[u8]) {
        if frame::is_for_self(f, &self.mac, &self.own) {
            self.hairpin.push_back(f.to_vec());
        } else {
            self.out.push_back(f.to_vec());
        }
    }

    fn set_own(&mut self, own: Vec<IpAddr>) {
        self.own = own;
    }

    fn is_blocked(&self) -> bool {
        false
    }

    fn flush(&mut self) -> bool {
        true
    }

    fn wakes_when_writable(&self) -> bool {
        true
    }

    fn info(&self) -> String {
        "port=0\nkind=memory\n".into()
    }
}

// ------------------------------------------------------------------------------ the wire

/// What the wire does to frames, each direction alike (as `tc netem` on both ends).
#[derive(Clone, Copy, Debug, Default)]
pub struct Impair {
    /// Fraction of frames lost (0.0..=1.0).
    pub loss: f64,
    pub delay: Duration,
    /// Extra delay, uniform in `0..=jitter` (reorders frames).
    pub jitter: Duration,
    /// Fraction of frames sent at once, ahead of the delayed ones.
    pub reorder: f64,
}

/// What crossed the wire, by direction (`[to a, to b]`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub frames: [u64; 2],
    pub lost: [u64; 2],
    pub tcp_rst: [u64; 2],
    pub tcp_syn: [u64; 2],
}

struct InFlight {
    at: Instant,
    seq: u64,
    to_b: bool,
    frame: Vec<u8>,
}

/// A frame-level predicate; `true` drops the frame (`to_b`, frame).
pub type Filter = Box<dyn FnMut(bool, &[u8]) -> bool>;

struct Wire {
    impair: Impair,
    rng: u64,
    seq: u64,
    flight: Vec<InFlight>,
    stats: Stats,
    filter: Option<Filter>,
}

impl Wire {
    fn random(&mut self) -> f64 {
        // xorshift64*: fixed seed, repeatable runs.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn send(&mut self, to_b: bool, frame: Vec<u8>, now: Instant) {
        let d = usize::from(to_b);
        self.stats.frames[d] += 1;
        if let Some(t) = tcp_flags(&frame) {
            self.stats.tcp_rst[d] += u64::from(t.rst);
            self.stats.tcp_syn[d] += u64::from(t.syn && !t.ack);
        }
        if self.filter.as_mut().is_some_and(|f| f(to_b, &frame)) {
            self.stats.lost[d] += 1;
            return;
        }
        if self.impair.loss > 0.0 && self.random() < self.impair.loss {
            self.stats.lost[d] += 1;
            return;
        }
        let mut at = now;
        if !(self.impair.reorder > 0.0 && self.random() < self.impair.reorder) {
            at += self.impair.delay;
            let j = self.impair.jitter.total_micros();
            if j > 0 {
                at += Duration::from_micros((self.random() * j as f64) as u64);
            }
        }
        self.seq += 1;
        self.flight.push(InFlight {
            at,
            seq: self.seq,
            to_b,
            frame,
        });
    }

    /// Frames due at `now`, in arrival order.
    fn due(&mut self, now: Instant) -> Vec<InFlight> {
        let mut due: Vec<InFlight> = Vec::new();
        let mut i = 0;
        while i < self.flight.len() {
            if self.flight[i].at <= now {
                due.push(self.flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|f| (f.at, f.seq));
        due
    }

    fn next_at(&self) -> Option<Instant> {
        self.flight.iter().map(|f| f.at).min()
    }
}

/// TCP flags of a frame, if it is TCP over IPv4 or IPv6.
#[derive(Clone, Copy, Debug)]
pub struct TcpFlags {
    pub src_port: u16,
    pub dst_port: u16,
    pub syn: bool,
    pub ack: bool,
    pub rst: bool,
    pub fin: bool,
}

pub fn tcp_flags(f: &[u8]) -> Option<TcpFlags> {
    let eth = EthernetFrame::new_checked(f).ok()?;
    let payload = eth.payload();
    let seg = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(payload).ok()?;
            if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 {
                return None;
            }
            &payload[ip.header_len() as usize..ip.total_len() as usize]
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(payload).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            &payload[40..40 + ip.payload_len() as usize]
        }
        _ => return None,
    };
    let t = TcpPacket::new_checked(seg).ok()?;
    Some(TcpFlags {
        src_port: t.src_port(),
        dst_port: t.dst_port(),
        syn: t.syn(),
        ack: t.ack(),
        rst: t.rst(),
        fin: t.fin(),
    })
}

// ------------------------------------------------------------------------------ the nodes

/// One node: its stack and the epoll set that watches its sockets' daemon ends (as the
/// daemon's does).
pub struct Side {
    pub stack: Stack<MemLink>,
    ep: Fd,
}

impl Side {
    fn new(n: u8, seed: u64, now: Instant) -> Side {
        let mac = [0x02, 0, 0, 0, 0, n];
        let node = NodeConfig {
            addrs: AddrMode::Static(vec![
                Cidr {
                    addr: format!("10.0.0.{n}").parse().unwrap(),
                    prefix: 24,
                },
                Cidr {
                    addr: format!("fd00::{n}").parse().unwrap(),
                    prefix: 64,
                },
            ]),
            gateways: Vec::new(),
            dns: Vec::new(),
            mac: Mac(mac),
            mtu: Some(MTU as u16),
            switch: None,
            name: None,
        };
        let sc = StackConfig {
            node,
            // Random: the sockets' abstract names must not meet those of other tests.
            id: sys::random_u64() | 1,
            ip_mtu: MTU,
            seed,
            link_name: "memory".into(),
        };
        let mut stack = Stack::new(sc, MemLink::new(mac), now);
        // No safety-net sweep: a missed wake-up must fail the tests.
        stack.set_sweep(None);
        Side {
            stack,
            ep: sys::epoll_create().expect("epoll"),
        }
    }

    /// Watch new sockets, hand their events to the stack, poll it. `true` if anything
    /// happened.
    fn pump(&mut self, now: Instant) -> bool {
        for (fd, id, op, ev) in self.stack.take_watch() {
            sys::epoll_ctl(self.ep.raw(), op, fd, ev, id).expect("epoll_ctl");
        }
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
        let n = sys::epoll_wait(self.ep.raw(), &mut evs, 0).unwrap_or(0);
        for ev in evs.iter().take(n) {
            let (id, bits) = (ev.u64, ev.events);
            self.stack
                .app_event(id, crate::stack::AppEvent::from_epoll(bits));
        }
        self.stack.poll(now);
        n > 0 || !self.stack.link().out.is_empty()
    }
}

/// Two nodes on one wire, and the virtual clock.
pub struct Pair {
    pub a: Side,
    pub b: Side,
    pub now: Instant,
    wire: Wire,
}

/// Which node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    A,
    B,
}

impl Default for Pair {
    fn default() -> Self {
        Pair::new(1)
    }
}

impl Pair {
    /// Two nodes; `seed` fixes every random choice (stacks and wire).
    pub fn new(seed: u64) -> Pair {
        let now = Instant::from_secs(1_000);
        Pair {
            a: Side::new(1, seed.wrapping_mul(3), now),
            b: Side::new(2, seed.wrapping_mul(5), now),
            now,
            wire: Wire {
                impair: Impair::default(),
                rng: seed | 1,
                seq: 0,
                flight: Vec::new(),
                stats: Stats::default(),
                filter: None,
            },
        }
    }

    pub fn impair(&mut self, i: Impair) {
        self.wire.impair = i;
    }

    /// Drop the frames `f` says so of (besides the impairments).
    pub fn filter(&mut self, f: Filter) {
        self.wire.filter = Some(f);
    }

    pub fn stats(&self) -> Stats {
        self.wire.stats
    }

    pub fn side(&mut self, n: Node) -> &mut Side {
        match n {
            Node::A => &mut self.a,
            Node::B => &mut self.b,
        }
    }

    /// One turn: both stacks, then the wire. `true` if anything happened.
    pub fn step(&mut self) -> bool {
        let now = self.now;
        let mut busy = self.a.pump(now);
        busy |= self.b.pump(now);
        for to_b in [true, false] {
            let from = if to_b { &mut self.a } else { &mut self.b };
            let out: Vec<Vec<u8>> = from.stack.link_mut().out.drain(..).collect();
            for f in out {
                self.wire.send(to_b, f, now);
            }
        }
        for f in self.wire.due(now) {
            busy = true;
            let to = if f.to_b { &mut self.b } else { &mut self.a };
            to.stack.link_mut().inq.push_back(f.frame);
            to.stack.link_ready(false);
        }
        busy
    }

    /// Run until `cond` holds (`true`) or `limit` of virtual time passed (`false`). When
    /// nothing happens, the clock jumps to the next deadline.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&mut Pair) -> bool) -> bool {
        let end = self.now + limit;
        let mut idle_turns = 0u32;
        loop {
            if cond(self) {
                return true;
            }
            if self.now >= end {
                return false;
            }
            if self.step() {
                idle_turns = 0;
                continue;
            }
            // Nothing moved: a second quiet turn (an event may land between the two), then
            // jump to the next deadline.
            idle_turns += 1;
            if idle_turns < 2 {
                continue;
            }
            idle_turns = 0;
            let mut next = end;
            for d in [
                self.a.stack.poll_delay(self.now),
                self.b.stack.poll_delay(self.now),
            ]
            .into_iter()
            .flatten()
            {
                next = next.min(self.now + d);
            }
            if let Some(t) = self.wire.next_at() {
                next = next.min(t);
            }
            self.now = next.max(self.now + Duration::from_micros(100));
        }
    }

    /// Run for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    // -------------------------------------------------------------- control requests

    /// A control request to node `n`, as the shim would send it.
    pub fn request(&mut self, n: Node, req: Request, fds: Vec<Fd>) -> (Reply, Option<Fd>) {
        let now = self.now;
        self.side(n).stack.handle(req, fds, sys::geteuid(), now)
    }

    /// `socket()`: the socket's id and its application end (non-blocking).
    pub fn socket(&mut self, n: Node, domain: i32, ty: i32) -> (u64, Fd) {
        let (r, fd) = self.request(
            n,
            Request::Socket {
                domain,
                ty,
                protocol: 0,
            },
            vec![],
        );
        let (Reply::Created(id), Some(fd)) = (&r, fd) else {
            panic!("socket: {r:?}");
        };
        let id = *id;
        sys::set_nonblocking(fd.raw(), true).unwrap();
        (id, fd)
    }

    pub fn bind(&mut self, n: Node, id: u64, addr: &str) -> Reply {
        let addr = WireAddr(Some(addr.parse().unwrap()));
        self.request(n, Request::Bind { id, addr }, vec![]).0
    }

    pub fn listen(&mut self, n: Node, id: u64, backlog: i32) -> Reply {
        self.request(n, Request::Listen { id, backlog }, vec![]).0
    }

    /// A TCP listener on `addr` with `backlog`: (id, application end).
    pub fn listener(&mut self, n: Node, addr: &str, backlog: i32) -> (u64, Fd) {
        let domain = domain_of(addr);
        let (id, fd) = self.socket(n, domain, libc::SOCK_STREAM);
        assert_eq!(self.bind(n, id, addr), Reply::Ok);
        assert_eq!(self.listen(n, id, backlog), Reply::Ok);
        (id, fd)
    }

    /// `connect()` as a blocking connect in the shim starts it: the app's fd goes along;
    /// the reply is `EINPROGRESS` (then writability and `SO_ERROR` tell the outcome) or
    /// an error at once.
    pub fn connect(&mut self, n: Node, id: u64, app: &Fd, addr: &str) -> Reply {
        let addr = WireAddr(Some(addr.parse().unwrap()));
        let dup = app.dup_cloexec(0).unwrap();
        self.request(n, Request::Connect { id, addr }, vec![dup]).0
    }

    /// A TCP socket of node `n` connecting to `addr`: (id, application end).
    pub fn connecting(&mut self, n: Node, addr: &str) -> (u64, Fd) {
        let domain = domain_of(addr);
        let (id, fd) = self.socket(n, domain, libc::SOCK_STREAM);
        assert_eq!(
            self.connect(n, id, &fd, addr),
            Reply::Err(Errno(libc::EINPROGRESS))
        );
        (id, fd)
    }

    /// `getsockopt(SOL_SOCKET, SO_ERROR)` (which also clears it).
    pub fn so_error(&mut self, n: Node, id: u64) -> i32 {
        let req = Request::GetSockOpt {
            id,
            level: libc::SOL_SOCKET,
            name: libc::SO_ERROR,
            len: 4,
        };
        match self.request(n, req, vec![]).0 {
            Reply::Bytes(b) => i32::from_ne_bytes(b[..4].try_into().unwrap()),
            r => panic!("SO_ERROR: {r:?}"),
        }
    }

    pub fn setsockopt_int(&mut self, n: Node, id: u64, level: i32, name: i32, v: i32) -> Reply {
        let req = Request::SetSockOpt {
            id,
            level,
            name,
            value: v.to_ne_bytes().to_vec(),
        };
        self.request(n, req, vec![]).0
    }

    /// A connection from node a to a listener of node b on `server`: (client id, client
    /// fd, server connection fd, listener fd).
    pub fn established(&mut self, server: &str) -> (u64, Fd, Fd, Fd) {
        let sec = Duration::from_secs(1);
        let (_, l) = self.listener(Node::B, server, 16);
        let (cid, c) = self.connecting(Node::A, server);
        assert!(self.until_writable(&c, sec), "handshake did not finish");
        assert_eq!(self.so_error(Node::A, cid), 0);
        let (_, conn) = self.accept(&l, sec).expect("no connection to accept");
        (cid, c, conn, l)
    }

    /// Run until `fd` polls writable (a connect ended), at most `limit`.
    pub fn until_writable(&mut self, fd: &Fd, limit: Duration) -> bool {
        let fd = fd.raw();
        self.run_until(limit, |_| writable(fd))
    }

    /// Run until a connection waits on listener `l` and take it: (record, connection fd).
    pub fn accept(&mut self, l: &Fd, limit: Duration) -> Option<(AcceptRecord, Fd)> {
        let mut got = None;
        let fd = l.raw();
        self.run_until(limit, |_| {
            got = try_accept(fd);
            got.is_some()
        });
        got
    }

    /// Write `data` into `from` and read it from `to` as the stacks carry it; what `to`
    /// read (until EOF if `close` shuts `from` down after the data, else until it has as
    /// many bytes as were sent) within `limit`.
    pub fn transfer(
        &mut self,
        from: &Fd,
        to: &Fd,
        data: &[u8],
        close: bool,
        limit: Duration,
    ) -> Vec<u8> {
        let (wfd, rfd) = (from.raw(), to.raw());
        let mut sent = 0;
        let mut shut = false;
        let mut got = Vec::new();
        let mut eof = false;
        let mut buf = vec![0u8; 65536];
        self.run_until(limit, |_| {
            while sent < data.len() {
                match sys::write(wfd, &data[sent..]) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            if close && sent == data.len() && !shut {
                let _ = sys::shutdown(wfd, libc::SHUT_WR);
                shut = true;
            }
            loop {
                match sys::read(rfd, &mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            if close { eof } else { got.len() >= data.len() }
        });
        got
    }
}

/// The address family of a socket address given as text.
pub fn domain_of(addr: &str) -> i32 {
    match addr.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(_)) => libc::AF_INET,
        _ => libc::AF_INET6,
    }
}

/// Whether `fd` polls writable now.
pub fn writable(fd: RawFd) -> bool {
    sys::wait_fd(fd, libc::POLLOUT, 0).unwrap_or(false)
}

/// Whether `fd` polls readable now.
pub fn readable(fd: RawFd) -> bool {
    sys::wait_fd(fd, libc::POLLIN, 0).unwrap_or(false)
}

/// One accept record and its fd from a listener's application end, if one waits.
pub fn try_accept(fd: RawFd) -> Option<(AcceptRecord, Fd)> {
    let mut b = [0u8; 64];
    let got = sys::recvmsg(fd, &mut [IoSliceMut::new(&mut b)], libc::MSG_DONTWAIT).ok()?;
    let rec = AcceptRecord::decode(&b[..got.len]).ok()?;
    let conn = got.fds.into_iter().next()?;
    sys::set_nonblocking(conn.raw(), true).ok()?;
    Some((rec, conn))
}

/// Read what `fd` has now (non-blocking): `None` at EOF.
pub fn read_now(fd: &Fd) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match sys::read(fd.raw(), &mut buf) {
            Ok(0) => return if out.is_empty() { None } else { Some(out) },
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => return Some(out),
        }
    }
}

/// `n` bytes of a repeatable pattern that shows misplaced data.
pub fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
