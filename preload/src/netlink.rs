//! Virtual rtnetlink sockets: `socket(AF_NETLINK, SOCK_RAW|SOCK_DGRAM, NETLINK_ROUTE)` in an
//! active node shows the node's interface ([`crate::iface`]), not the host's.
//!
//! The application gets one end of a kernel `AF_UNIX` `SOCK_SEQPACKET` socketpair (a real fd:
//! `poll`, `epoll`, `O_NONBLOCK`, `MSG_PEEK`/`MSG_TRUNC` work natively); the shim keeps the
//! other end (close-on-exec, at a high fd number). A request the application sends is
//! answered right away, in the shim, by writing the kernel's reply datagrams into the other
//! end: `RTM_GETLINK` and `RTM_GETADDR` (dump or one interface) give `RTM_NEWLINK` /
//! `RTM_NEWADDR` messages and `NLMSG_DONE`; `RTM_GETROUTE` dumps give the node's routes as
//! Linux would show them (`RTM_NEWROUTE`: a prefix route per address, `proto kernel`, and a
//! default route per gateway, in the main table; `ioth_common::rtnl::routes`); requests that
//! change something get `NLMSG_ERROR` `EPERM`, unknown ones `EOPNOTSUPP`; `NLM_F_ACK` gets
//! an ack. Every reply carries the request's sequence number and the socket's port id;
//! `recvfrom`/`recvmsg` report the kernel (`nl_pid` 0) as the sender. `bind` (port id and
//! groups), `getsockname`, `setsockopt(SOL_NETLINK, …)` are accepted.
//!
//! Events: the node's addresses and gateways change only in its daemon (DHCP, SLAAC). A
//! socket that joins `RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR`, `RTMGRP_IPV4_ROUTE` or
//! `RTMGRP_IPV6_ROUTE` (`bind` with `nl_groups`, or `NETLINK_ADD_MEMBERSHIP` of
//! `RTNLGRP_IPV4_IFADDR`/`RTNLGRP_IPV6_IFADDR`/`RTNLGRP_IPV4_ROUTE`/`RTNLGRP_IPV6_ROUTE`) has
//! the daemon write `RTM_NEWADDR`/`RTM_DELADDR` and `RTM_NEWROUTE`/`RTM_DELROUTE` messages
//! (the prefix route that comes and goes with an address, the default route of a gateway,
//! encoded as the route dumps here encode them) into a copy of the shim's end (`Subscribe`,
//! `stackd/src/stack/rtnl.rs`), so they wait in the application's end like the kernel's and
//! wake `poll`/`epoll`. No link events (the link never changes).
//!
//! The fd is marked in the datagram fd table ([`crate::dgram`]), so the send/receive hooks
//! find it with the same one atomic load. Other netlink protocols go to the kernel.

#![deny(unsafe_code)]

use crate::iface::{self, Iface};
use ioth_common::ctl::{Reply, Request};
use ioth_common::rtnl::{
    EVENT_GROUPS, NLMSG_HDR, RTA_DST, RTM_NEWADDR, RTM_NEWROUTE, Route, addr_msg, align4, attr,
    message, name_z, route_msg, routes,
};
use ioth_common::sys::{self, Errno, Fd};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::RawFd;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_MULTI: u16 = 2;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_GETADDR: u16 = 22;
const RTM_GETROUTE: u16 = 26;
const IFLA_ADDRESS: u16 = 1;
const IFLA_BROADCAST: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_TXQLEN: u16 = 13;
const IFLA_OPERSTATE: u16 = 16;
const IF_OPER_UP: u8 = 6;

fn newlink(b: &mut Vec<u8>, i: &Iface, flags: u16, seq: u32, pid: u32) {
    message(b, RTM_NEWLINK, flags, seq, pid, |b| {
        b.push(libc::AF_UNSPEC as u8);
        b.push(0);
        b.extend_from_slice(&libc::ARPHRD_ETHER.to_ne_bytes());
        b.extend_from_slice(&(iface::INDEX as i32).to_ne_bytes());
        // The link is up with carrier (IFF_LOWER_UP, which only rtnetlink reports).
        let flags = iface::FLAGS | libc::IFF_LOWER_UP as u32;
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        attr(b, IFLA_IFNAME, &name_z());
        attr(b, IFLA_ADDRESS, &i.mac);
        attr(b, IFLA_BROADCAST, &[0xff; 6]);
        attr(b, IFLA_MTU, &i.mtu.to_ne_bytes());
        attr(b, IFLA_TXQLEN, &1000u32.to_ne_bytes());
        attr(b, IFLA_OPERSTATE, &[IF_OPER_UP]);
    });
}

/// `ip route get DST`: the route a packet to `dst` takes (longest prefix), as a host route
/// with the source address the node would use.
fn route_to(i: &Iface, dst: IpAddr) -> Option<Route> {
    let within = |net: IpAddr, len: u8| {
        iface::Addr {
            ip: dst,
            prefix: len,
        }
        .network()
            == net
    };
    let best = routes(&i.addrs, &i.gws)
        .into_iter()
        .filter(|r| r.dst.is_ipv4() == dst.is_ipv4() && within(r.dst, r.len))
        .max_by_key(|r| r.len)?;
    let src = i
        .addrs
        .iter()
        .filter(|a| a.ip.is_ipv4() == dst.is_ipv4())
        .find(|a| best.gw.is_some() || a.network() == best.dst)
        .map(|a| a.ip);
    Some(Route {
        dst,
        len: if dst.is_ipv4() { 32 } else { 128 },
        gw: best.gw,
        src,
        cloned: true,
    })
}

fn error(b: &mut Vec<u8>, err: i32, req: &[u8], seq: u32, pid: u32) {
    message(b, NLMSG_ERROR, 0, seq, pid, |b| {
        b.extend_from_slice(&(-err).to_ne_bytes());
        // The offending request's header (NETLINK_CAP_ACK style, without its payload).
        b.extend_from_slice(&req[..NLMSG_HDR.min(req.len())]);
    });
}

fn done(b: &mut Vec<u8>, seq: u32, pid: u32) {
    message(b, NLMSG_DONE, NLM_F_MULTI, seq, pid, |b| {
        b.extend_from_slice(&0i32.to_ne_bytes());
    });
}

/// The end of a dump: its messages `b` (one datagram, if any), then `NLMSG_DONE` (another).
fn dump_end(out: &mut Vec<Vec<u8>>, b: Vec<u8>, seq: u32, pid: u32) {
    if !b.is_empty() {
        out.push(b);
    }
    let mut d = Vec::new();
    done(&mut d, seq, pid);
    out.push(d);
}

/// The reply datagrams to the request datagram `req` for a socket with port id `pid`.
/// `None` for the interface means it could not be read: requests are answered `ENODEV`.
pub fn answer(req: &[u8], iface: Option<&Iface>, pid: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut off = 0;
    while req.len() - off >= NLMSG_HDR {
        let m = &req[off..];
        let len = u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) as usize;
        if len < NLMSG_HDR || len > m.len() {
            break;
        }
        let m = &m[..len];
        let ty = u16::from_ne_bytes([m[4], m[5]]);
        let flags = u16::from_ne_bytes([m[6], m[7]]);
        let seq = u32::from_ne_bytes([m[8], m[9], m[10], m[11]]);
        let body = &m[NLMSG_HDR..];
        off += align4(len);
        if flags & NLM_F_REQUEST == 0 || ty < RTM_NEWLINK {
            // Not a request, or a control message: the kernel ignores these.
            continue;
        }
        let mut b = Vec::new();
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let Some(i) = iface else {
            error(&mut b, libc::ENODEV, m, seq, pid);
            out.push(b);
            continue;
        };
        match ty {
            RTM_GETLINK if dump => {
                newlink(&mut b, i, NLM_F_MULTI, seq, pid);
                dump_end(&mut out, b, seq, pid);
                continue;
            }
            RTM_GETLINK => {
                // ifinfomsg: index at 4..8; or an IFLA_IFNAME attribute.
                let idx = body
                    .get(4..8)
                    .map(|x| i32::from_ne_bytes([x[0], x[1], x[2], x[3]]))
                    .unwrap_or(0);
                let by_name = attrs(body.get(16..).unwrap_or(&[]))
                    .find(|(t, _)| *t == IFLA_IFNAME)
                    .map(|(_, v)| v.split(|c| *c == 0).next().unwrap_or(&[]).to_vec());
                let ok = if idx != 0 {
                    idx == iface::INDEX as i32
                } else {
                    by_name.as_deref() == Some(iface::NAME.as_bytes())
                };
                if ok {
                    newlink(&mut b, i, 0, seq, pid);
                } else {
                    error(&mut b, libc::ENODEV, m, seq, pid);
                }
            }
            RTM_GETADDR if dump => {
                let fam = body.first().copied().unwrap_or(0) as i32;
                for a in &i.addrs {
                    let af = if a.ip.is_ipv4() {
                        libc::AF_INET
                    } else {
                        libc::AF_INET6
                    };
                    if fam == libc::AF_UNSPEC || fam == af {
                        addr_msg(&mut b, RTM_NEWADDR, a, NLM_F_MULTI, seq, pid);
                    }
                }
                dump_end(&mut out, b, seq, pid);
                continue;
            }
            RTM_GETROUTE if !dump => {
                // rtmsg (12 bytes), then RTA_DST.
                let fam = body.first().copied().unwrap_or(0) as i32;
                let dst = attrs(body.get(12..).unwrap_or(&[]))
                    .find(|(t, _)| *t == RTA_DST)
                    .and_then(|(_, v)| match (fam, v.len()) {
                        (libc::AF_INET, 4) => Some(IpAddr::from([v[0], v[1], v[2], v[3]])),
                        (libc::AF_INET6, 16) => <[u8; 16]>::try_from(v).ok().map(IpAddr::from),
                        _ => None,
                    });
                match dst.map(|d| route_to(i, d)) {
                    Some(Some(r)) => route_msg(&mut b, RTM_NEWROUTE, &r, 0, seq, pid),
                    Some(None) => error(&mut b, libc::ENETUNREACH, m, seq, pid),
                    None => error(&mut b, libc::EINVAL, m, seq, pid),
                }
            }
            RTM_GETROUTE => {
                let fam = body.first().copied().unwrap_or(0) as i32;
                for r in routes(&i.addrs, &i.gws) {
                    let af = if r.dst.is_ipv4() {
                        libc::AF_INET
                    } else {
                        libc::AF_INET6
                    };
                    if fam == libc::AF_UNSPEC || fam == af {
                        route_msg(&mut b, RTM_NEWROUTE, &r, NLM_F_MULTI, seq, pid);
                    }
                }
                dump_end(&mut out, b, seq, pid);
                continue;
            }
            // Other GET requests (RTM_GETADDR of one address, neighbours, rules, …).
            t if (t - RTM_NEWLINK) % 4 == 2 => error(&mut b, libc::EOPNOTSUPP, m, seq, pid),
            // NEW, DEL, SET: the node's configuration belongs to its daemon.
            _ => error(&mut b, libc::EPERM, m, seq, pid),
        }
        if flags & NLM_F_ACK != 0
            && !b.is_empty()
            && u16::from_ne_bytes([b[4], b[5]]) != NLMSG_ERROR
        {
            error(&mut b, 0, m, seq, pid);
        }
        out.push(b);
    }
    out
}

/// The attributes in `b` as (type, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]);
        if len < 4 || len > b.len() {
            return None;
        }
        let v = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some((ty, v))
    })
}

/// A `sockaddr_nl` (12 bytes).
pub fn sockaddr_nl(pid: u32, groups: u32) -> [u8; 12] {
    let mut s = [0u8; 12];
    s[0..2].copy_from_slice(&(libc::AF_NETLINK as u16).to_ne_bytes());
    s[4..8].copy_from_slice(&pid.to_ne_bytes());
    s[8..12].copy_from_slice(&groups.to_ne_bytes());
    s
}

// ------------------------------------------------------------------ the virtual sockets

/// One virtual netlink socket, keyed by the inode of the application's end.
struct Sock {
    /// Our end of the pair, and its (device, inode) to check it is still ours.
    peer: Fd,
    peer_id: (u64, u64),
    pid: u32,
    /// Multicast groups joined: bit `n - 1` for group `n` (1..=64); the low 32 bits are
    /// `nl_groups`.
    groups: u64,
    /// The event groups the daemon sends into `peer` (the last `Subscribe`).
    subscribed: u32,
}

static SOCKS: Mutex<Option<HashMap<u64, Sock>>> = Mutex::new(None);

/// Lowest fd number for the shim's ends.
const HIGH_FD: RawFd = 800;

/// Should `socket(domain, ty, protocol)` be a virtual netlink socket?
pub fn wants(domain: i32, ty: i32, protocol: i32) -> bool {
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    domain == libc::AF_NETLINK
        && protocol == libc::NETLINK_ROUTE
        && (base == libc::SOCK_RAW || base == libc::SOCK_DGRAM)
}

/// Create one; returns the application's fd.
pub fn create(ty: i32) -> Result<RawFd, Errno> {
    let flags = ty & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    // Sequenced packets: datagrams, and the daemon's copy of our end (events) sees HUP once
    // the application's end is closed.
    let (app, ours) = sys::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC)?;
    let ours = ours.dup_cloexec(HIGH_FD).unwrap_or(ours);
    sys::set_nonblocking(ours.raw(), true)?;
    let _ = sys::setsockopt_int(ours.raw(), libc::SOL_SOCKET, libc::SO_SNDBUF, 1 << 20);
    let _ = sys::setsockopt_int(app.raw(), libc::SOL_SOCKET, libc::SO_RCVBUF, 1 << 20);
    sys::set_nonblocking(app.raw(), flags & libc::SOCK_NONBLOCK != 0)?;
    if flags & libc::SOCK_CLOEXEC == 0 {
        sys::set_cloexec(app.raw(), false)?;
    }
    let (_, ino) = sys::fstat_id(app.raw())?;
    let peer_id = sys::fstat_id(ours.raw())?;
    let mut socks = SOCKS.lock();
    let socks = socks.get_or_insert_with(HashMap::new);
    // Our ends of the sockets the application has closed since (HUP: its end is gone in
    // every process) are closed now.
    socks.retain(|_, s| {
        if sys::fstat_id(s.peer.raw()) != Ok(s.peer_id) {
            // Not ours any more (the application closed or reused the number): not ours to
            // close either.
            let _ = std::mem::replace(&mut s.peer, Fd::none()).into_raw();
            return false;
        }
        let mut p = [libc::pollfd {
            fd: s.peer.raw(),
            events: 0,
            revents: 0,
        }];
        !matches!(sys::poll(&mut p, 0), Ok(1) if p[0].revents & libc::POLLHUP != 0)
    });
    socks.insert(
        ino,
        Sock {
            peer: ours,
            peer_id,
            pid: 0,
            groups: 0,
            subscribed: 0,
        },
    );
    let fd = app.into_raw();
    crate::dgram::created_netlink(fd);
    Ok(fd)
}

fn with<T>(fd: RawFd, f: impl FnOnce(&mut Sock) -> Result<T, Errno>) -> Result<T, Errno> {
    let (_, ino) = sys::fstat_id(fd)?;
    let mut g = SOCKS.lock();
    let s = g
        .as_mut()
        .and_then(|m| m.get_mut(&ino))
        .ok_or(Errno::EBADF)?;
    f(s)
}

/// The port id the kernel would assign: the pid for the first socket, then others.
fn autobind(s: &mut Sock) {
    if s.pid == 0 {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = sys::getpid() as u32;
        s.pid = if n == 0 {
            pid
        } else {
            0x8000_0000 | (pid ^ (n << 16))
        };
    }
}

/// `bind` with a `sockaddr_nl`.
pub fn bind(fd: RawFd, a: &[u8]) -> Result<(), Errno> {
    if a.len() < 12 {
        return Err(Errno::EINVAL);
    }
    if u16::from_ne_bytes([a[0], a[1]]) != libc::AF_NETLINK as u16 {
        return Err(Errno::EINVAL);
    }
    let pid = u32::from_ne_bytes([a[4], a[5], a[6], a[7]]);
    let groups = u32::from_ne_bytes([a[8], a[9], a[10], a[11]]);
    with(fd, |s| {
        if pid != 0 {
            s.pid = pid;
        }
        autobind(s);
        s.groups = (s.groups & !0xffff_ffff) | u64::from(groups);
        Ok(())
    })?;
    subscribe(fd);
    Ok(())
}

/// `getsockname`: the socket's own `sockaddr_nl`.
pub fn name(fd: RawFd) -> Result<[u8; 12], Errno> {
    with(fd, |s| Ok(sockaddr_nl(s.pid, s.groups as u32)))
}

/// rtnetlink's groups (`RTNLGRP_MAX`, Linux 6.x).
const RTNLGRP_MAX: i32 = 40;

/// `setsockopt(SOL_NETLINK, name, value)`: memberships change the groups, other options
/// (`NETLINK_NO_ENOBUFS`, extended acks, strict checking, …) are accepted and change nothing.
pub fn setsockopt(fd: RawFd, name: i32, value: &[u8]) -> Result<(), Errno> {
    let join = match name {
        libc::NETLINK_ADD_MEMBERSHIP => true,
        libc::NETLINK_DROP_MEMBERSHIP => false,
        _ => return with(fd, |_| Ok(())),
    };
    let Some(g) = value.get(..4) else {
        return Err(Errno::EINVAL);
    };
    let g = i32::from_ne_bytes([g[0], g[1], g[2], g[3]]);
    if !(1..=RTNLGRP_MAX).contains(&g) {
        return Err(Errno::EINVAL);
    }
    with(fd, |s| {
        let bit = 1u64 << (g - 1);
        if join {
            s.groups |= bit;
        } else {
            s.groups &= !bit;
        }
        Ok(())
    })?;
    subscribe(fd);
    Ok(())
}

/// Tell the daemon which event groups the socket is in, when that changed: it writes the
/// events into a copy of our end (`stackd/src/stack/rtnl.rs`), so that they reach the
/// application's end without the shim. A daemon that cannot be asked means no events, not a
/// failed call (the kernel's `bind` and `setsockopt` would succeed).
fn subscribe(fd: RawFd) {
    let Ok((peer, want, had)) = with(fd, |s| {
        if sys::fstat_id(s.peer.raw()) != Ok(s.peer_id) {
            return Err(Errno(libc::ECONNREFUSED));
        }
        Ok((s.peer.raw(), s.groups as u32 & EVENT_GROUPS, s.subscribed))
    }) else {
        return;
    };
    // (Virtual netlink sockets are made in active nodes only; not in unit tests.)
    if want == had || !crate::node::active() {
        return;
    }
    match crate::node::call_home(&Request::Subscribe { groups: want }, Some(peer)) {
        Ok((Reply::Ok, _)) => {
            let _ = with(fd, |s| {
                s.subscribed = want;
                Ok(())
            });
        }
        r => crate::debug!("netlink: subscribe {want:#x}: {r:?}"),
    }
}

/// A datagram the application sent: answer it into the socket. Returns its length.
pub fn send(fd: RawFd, data: &[u8]) -> Result<usize, Errno> {
    let (peer, pid) = with(fd, |s| {
        autobind(s);
        if sys::fstat_id(s.peer.raw()) != Ok(s.peer_id) {
            return Err(Errno(libc::ECONNREFUSED));
        }
        Ok((s.peer.raw(), s.pid))
    })?;
    let i = iface::current();
    for d in answer(data, i.as_ref(), pid) {
        sys::send(peer, &d, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL).map_err(|e| {
            if e.is_again() {
                Errno(libc::ENOBUFS)
            } else {
                e
            }
        })?;
    }
    Ok(data.len())
}

/// After `fork` nothing changes (the child shares the map's fds); after the application
/// closed its end the entry (and our end) stays until the next virtual netlink socket is
/// made.
#[cfg(test)]
mod tests {
    use super::*;
    use ioth_common::rtnl::{
        IFA_ADDRESS, IFA_CACHEINFO, RT_SCOPE_LINK, RT_TABLE_MAIN, RTA_GATEWAY, RTA_PREFSRC,
        RTPROT_KERNEL,
    };

    fn node() -> Iface {
        Iface::parse(
            "mac=02:00:00:00:09:01\nmtu=1500\naddr=10.0.9.1/24\naddr=fd00:9::1/64\naddr=fe80::1/64\n",
        )
    }

    fn request(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        message(&mut b, ty, flags, seq, 0, |b| b.extend_from_slice(body));
        b
    }

    /// (type, flags, seq, pid, body) of every message in a datagram.
    fn parse(d: &[u8]) -> Vec<(u16, u16, u32, u32, Vec<u8>)> {
        let mut v = Vec::new();
        let mut o = 0;
        while d.len() - o >= 16 {
            let len = u32::from_ne_bytes(d[o..o + 4].try_into().unwrap()) as usize;
            assert!(len >= 16 && o + len <= d.len(), "length {len} at {o}");
            let m = &d[o..o + len];
            v.push((
                u16::from_ne_bytes([m[4], m[5]]),
                u16::from_ne_bytes([m[6], m[7]]),
                u32::from_ne_bytes(m[8..12].try_into().unwrap()),
                u32::from_ne_bytes(m[12..16].try_into().unwrap()),
                m[16..].to_vec(),
            ));
            o += align4(len);
        }
        v
    }

    #[test]
    fn groups_by_bind_and_membership() {
        let fd = create(libc::SOCK_RAW | libc::SOCK_CLOEXEC).unwrap();
        let groups = |fd| u32::from_ne_bytes(name(fd).unwrap()[8..12].try_into().unwrap());
        bind(fd, &sockaddr_nl(0, 0x100)).unwrap();
        assert_eq!(groups(fd), 0x100);
        let add = libc::NETLINK_ADD_MEMBERSHIP;
        setsockopt(fd, add, &5i32.to_ne_bytes()).unwrap();
        assert_eq!(
            groups(fd),
            0x110,
            "RTNLGRP_IPV4_IFADDR is RTMGRP_IPV4_IFADDR"
        );
        // Groups above 32 are joined, but not in nl_groups; bind replaces only those.
        setsockopt(fd, add, &33i32.to_ne_bytes()).unwrap();
        assert_eq!(groups(fd), 0x110);
        bind(fd, &sockaddr_nl(0, 0x1)).unwrap();
        assert_eq!(groups(fd), 0x1);
        assert_eq!(with(fd, |s| Ok(s.groups)), Ok(1 | 1 << 32));
        setsockopt(fd, libc::NETLINK_DROP_MEMBERSHIP, &1i32.to_ne_bytes()).unwrap();
        assert_eq!(groups(fd), 0);
        for bad in [&0i32.to_ne_bytes()[..], &41i32.to_ne_bytes(), &[5, 0]] {
            assert_eq!(setsockopt(fd, add, bad), Err(Errno::EINVAL), "{bad:?}");
        }
        // Other options change nothing.
        setsockopt(fd, libc::NETLINK_NO_ENOBUFS, &1i32.to_ne_bytes()).unwrap();
        assert_eq!(with(fd, |s| Ok(s.groups)), Ok(1 << 32));
        // The application closes its end: the next netlink socket closes ours.
        let (peer, peer_id) = with(fd, |s| Ok((s.peer.raw(), s.peer_id))).unwrap();
        sys::close(fd);
        assert_eq!(sys::fstat_id(peer), Ok(peer_id));
        let next = create(libc::SOCK_RAW | libc::SOCK_CLOEXEC).unwrap();
        assert_ne!(sys::fstat_id(peer), Ok(peer_id));
        sys::close(next);
    }

    #[test]
    fn link_dump() {
        let r = answer(
            &request(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 7, &[0; 16]),
            Some(&node()),
            42,
        );
        assert_eq!(r.len(), 2);
        let m = parse(&r[0]);
        assert_eq!(m.len(), 1);
        let (ty, flags, seq, pid, body) = &m[0];
        assert_eq!((*ty, *flags, *seq, *pid), (RTM_NEWLINK, NLM_F_MULTI, 7, 42));
        assert_eq!(i32::from_ne_bytes(body[4..8].try_into().unwrap()), 1);
        let a: Vec<(u16, Vec<u8>)> = attrs(&body[16..]).map(|(t, v)| (t, v.to_vec())).collect();
        assert!(a.contains(&(IFLA_IFNAME, b"vde0\0".to_vec())));
        assert!(a.contains(&(IFLA_ADDRESS, vec![2, 0, 0, 0, 9, 1])));
        assert!(a.contains(&(IFLA_MTU, 1500u32.to_ne_bytes().to_vec())));
        let d = parse(&r[1]);
        assert_eq!((d[0].0, d[0].2), (NLMSG_DONE, 7));
    }

    #[test]
    fn addr_dump_by_family() {
        let mut body = [0u8; 8];
        body[0] = libc::AF_INET6 as u8;
        let r = answer(
            &request(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 9, &body),
            Some(&node()),
            1,
        );
        let m = parse(&r[0]);
        assert_eq!(m.len(), 2, "two IPv6 addresses");
        let (_, _, _, _, b) = &m[1];
        assert_eq!(
            (b[0] as i32, b[1], b[3]),
            (libc::AF_INET6, 64, libc::RT_SCOPE_LINK)
        );
        let a: Vec<(u16, Vec<u8>)> = attrs(&b[8..]).map(|(t, v)| (t, v.to_vec())).collect();
        assert!(a.iter().any(|(t, v)| *t == IFA_ADDRESS && v[0] == 0xfe));
        assert!(
            a.iter()
                .any(|(t, v)| *t == IFA_CACHEINFO && v[..4] == [0xff; 4])
        );
        let all = answer(
            &request(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 9, &[0; 8]),
            Some(&node()),
            1,
        );
        assert_eq!(parse(&all[0]).len(), 3);
        assert_eq!(parse(&all[1])[0].0, NLMSG_DONE);
    }

    #[test]
    fn errors_and_acks() {
        let r = answer(
            &request(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK, 3, &[0; 8]),
            Some(&node()),
            1,
        );
        let m = parse(&r[0]);
        assert_eq!(m[0].0, NLMSG_ERROR);
        assert_eq!(
            i32::from_ne_bytes(m[0].4[..4].try_into().unwrap()),
            -libc::EPERM
        );
        let mut body = [0u8; 16];
        body[4..8].copy_from_slice(&5i32.to_ne_bytes());
        let r = answer(
            &request(RTM_GETLINK, NLM_F_REQUEST, 4, &body),
            Some(&node()),
            1,
        );
        let m = parse(&r[0]);
        assert_eq!(
            i32::from_ne_bytes(m[0].4[..4].try_into().unwrap()),
            -libc::ENODEV
        );
        // The routes: one per prefix (the link-local one too), one per gateway; by family.
        let gw = Iface::parse("addr=10.0.9.1/24\naddr=10.0.9.7/24\ngw=10.0.9.254\n");
        let r = answer(
            &request(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, 5, &[0; 12]),
            Some(&gw),
            1,
        );
        let m = parse(&r[0]);
        assert_eq!(
            m.len(),
            2,
            "one prefix route (two addresses in it), one default"
        );
        assert!(m.iter().all(|x| x.0 == RTM_NEWROUTE && x.1 == NLM_F_MULTI));
        // The default route first (as Linux lists IPv4's), then the prefix route:
        // 10.0.9.0/24, scope link, src 10.0.9.1.
        let (fam, len, table, proto, scope) =
            (m[1].4[0], m[1].4[1], m[1].4[4], m[1].4[5], m[1].4[6]);
        assert_eq!(
            (fam as i32, len, table, proto, scope),
            (
                libc::AF_INET,
                24,
                RT_TABLE_MAIN,
                RTPROT_KERNEL,
                RT_SCOPE_LINK
            )
        );
        let a: Vec<(u16, Vec<u8>)> = attrs(&m[1].4[12..]).map(|(t, v)| (t, v.to_vec())).collect();
        assert!(a.contains(&(RTA_DST, vec![10, 0, 9, 0])));
        assert!(a.contains(&(RTA_PREFSRC, vec![10, 0, 9, 1])));
        let d: Vec<(u16, Vec<u8>)> = attrs(&m[0].4[12..]).map(|(t, v)| (t, v.to_vec())).collect();
        assert_eq!(m[0].4[1], 0);
        assert!(d.contains(&(RTA_GATEWAY, vec![10, 0, 9, 254])));
        assert_eq!(parse(&r[1])[0].0, NLMSG_DONE);
        let r = answer(
            &request(
                RTM_GETROUTE,
                NLM_F_REQUEST | NLM_F_DUMP,
                5,
                &[libc::AF_INET6 as u8; 12],
            ),
            Some(&node()),
            1,
        );
        let m = parse(&r[0]);
        assert_eq!(m.len(), 2, "fd00:9::/64 and fe80::/64: {m:?}");
        assert!(
            m.iter()
                .all(|x| x.4[0] as i32 == libc::AF_INET6 && x.4[1] == 64)
        );
        // Garbage and truncation never panic.
        assert!(answer(&[1, 2, 3], Some(&node()), 1).is_empty());
        assert!(answer(&[0xff; 40], Some(&node()), 1).is_empty());
        assert_eq!(
            answer(
                &request(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, &[]),
                None,
                1
            )
            .len(),
            1
        );
    }
}
