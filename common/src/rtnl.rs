//! rtnetlink messages as Linux encodes them, for a node's one interface (`vde0`, index 1).
//!
//! Two users: the shim's virtual netlink sockets answer link, address and route dumps with
//! them (`preload/src/netlink.rs`), and the stack daemon sends address and route events
//! (`RTM_NEWADDR`/`RTM_DELADDR`, `RTM_NEWROUTE`/`RTM_DELROUTE`, [`events`]) to the netlink
//! sockets that joined the address or route groups, when DHCP or SLAAC changes the node's
//! addresses or gateways (`stackd/src/stack/rtnl.rs`). Both must describe an address or a
//! route the same way, so that `ip monitor` shows what `ip addr` and `ip route` would.
//!
//! Everything here is in native byte order, as netlink is.

#![deny(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The node's interface, as its processes see it.
pub const IFNAME: &str = "vde0";
pub const IFINDEX: u32 = 1;

pub const NLMSG_HDR: usize = 16;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
/// Multicast groups (`nl_groups` bits): `1 << (RTNLGRP_IPV4_IFADDR - 1)`, and IPv6's, and
/// the route groups (`RTNLGRP_IPV4_ROUTE` 7, `RTNLGRP_IPV6_ROUTE` 11).
pub const RTMGRP_IPV4_IFADDR: u32 = 0x10;
pub const RTMGRP_IPV6_IFADDR: u32 = 0x100;
pub const RTMGRP_IPV4_ROUTE: u32 = 0x40;
pub const RTMGRP_IPV6_ROUTE: u32 = 0x400;
/// The groups the daemon sends events for.
pub const EVENT_GROUPS: u32 =
    RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;

pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
pub const IFA_LABEL: u16 = 3;
pub const IFA_BROADCAST: u16 = 4;
pub const IFA_CACHEINFO: u16 = 6;
pub const IFA_FLAGS: u16 = 8;
pub const IFA_F_PERMANENT: u32 = 0x80;

pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
pub const RTA_PRIORITY: u16 = 6;
pub const RTA_PREFSRC: u16 = 7;
pub const RTA_TABLE: u16 = 15;
pub const RTA_PREF: u16 = 20;
pub const RT_TABLE_MAIN: u8 = 254;
pub const RTPROT_KERNEL: u8 = 2;
pub const RTPROT_STATIC: u8 = 4;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RTN_UNICAST: u8 = 1;
pub const RTM_F_CLONED: u32 = 0x200;

/// One address of the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl Addr {
    pub fn netmask(&self) -> IpAddr {
        match self.ip {
            IpAddr::V4(_) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix.min(32) as u32)
                };
                IpAddr::V4(Ipv4Addr::from(m))
            }
            IpAddr::V6(_) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix.min(128) as u32)
                };
                IpAddr::V6(Ipv6Addr::from(m))
            }
        }
    }

    /// The address with its host bits cleared.
    pub fn network(&self) -> IpAddr {
        match (self.ip, self.netmask()) {
            (IpAddr::V4(a), IpAddr::V4(m)) => IpAddr::V4(a & m),
            (IpAddr::V6(a), IpAddr::V6(m)) => IpAddr::V6(a & m),
            (ip, _) => ip,
        }
    }

    /// IPv4 subnet broadcast (`None` for IPv6 and /31, /32).
    pub fn broadcast(&self) -> Option<Ipv4Addr> {
        match (self.ip, self.netmask()) {
            (IpAddr::V4(a), IpAddr::V4(m)) if self.prefix < 31 => {
                Some(Ipv4Addr::from(u32::from(a) | !u32::from(m)))
            }
            _ => None,
        }
    }

    /// rtnetlink scope: link for fe80::/10, else universe.
    pub fn scope(&self) -> u8 {
        match self.ip {
            IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80 => libc::RT_SCOPE_LINK,
            _ => libc::RT_SCOPE_UNIVERSE,
        }
    }

    /// The multicast group of its events.
    pub fn group(&self) -> u32 {
        if self.ip.is_ipv4() {
            RTMGRP_IPV4_IFADDR
        } else {
            RTMGRP_IPV6_IFADDR
        }
    }
}

pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Append one attribute (padded to 4 bytes).
pub fn attr(b: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    b.extend_from_slice(&(len as u16).to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(data);
    b.resize(align4(b.len()), 0);
}

/// Append one message: header (length filled in), then `body(b)`.
pub fn message(
    b: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = b.len();
    b.extend_from_slice(&[0u8; 4]);
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&pid.to_ne_bytes());
    body(b);
    b.resize(align4(b.len()), 0);
    let len = (b.len() - start) as u32;
    b[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// The interface name, NUL-terminated.
pub fn name_z() -> Vec<u8> {
    let mut v = IFNAME.as_bytes().to_vec();
    v.push(0);
    v
}

/// Append an `RTM_NEWADDR` (or, `ty`, `RTM_DELADDR`) message for `a`: `ifaddrmsg`, then
/// `IFA_ADDRESS` (and for IPv4 `IFA_LOCAL`, `IFA_BROADCAST`, `IFA_LABEL`), `IFA_CACHEINFO`
/// (lifetimes forever), `IFA_FLAGS` (permanent), as Linux describes a static address.
pub fn addr_msg(b: &mut Vec<u8>, ty: u16, a: &Addr, flags: u16, seq: u32, pid: u32) {
    message(b, ty, flags, seq, pid, |b| {
        let fam = if a.ip.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        b.push(fam as u8);
        b.push(a.prefix);
        b.push(IFA_F_PERMANENT as u8);
        b.push(a.scope());
        b.extend_from_slice(&IFINDEX.to_ne_bytes());
        match a.ip {
            IpAddr::V4(v) => {
                attr(b, IFA_ADDRESS, &v.octets());
                attr(b, IFA_LOCAL, &v.octets());
                if let Some(bc) = a.broadcast() {
                    attr(b, IFA_BROADCAST, &bc.octets());
                }
                attr(b, IFA_LABEL, &name_z());
            }
            IpAddr::V6(v) => attr(b, IFA_ADDRESS, &v.octets()),
        }
        let mut ci = Vec::with_capacity(16);
        for v in [u32::MAX, u32::MAX, 0, 0] {
            ci.extend_from_slice(&v.to_ne_bytes());
        }
        attr(b, IFA_CACHEINFO, &ci);
        attr(b, IFA_FLAGS, &IFA_F_PERMANENT.to_ne_bytes());
    });
}

/// The bytes of an address.
pub fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// One route of the main table: to `dst`/`len` (`len` 0: default), through `gw` or on the
/// link (from `src`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpAddr,
    pub len: u8,
    pub gw: Option<IpAddr>,
    pub src: Option<IpAddr>,
    /// An answer to `ip route get` (a cloned host route: `RTM_F_CLONED`, no protocol).
    pub cloned: bool,
}

impl Route {
    /// The multicast group of its events.
    pub fn group(&self) -> u32 {
        if self.dst.is_ipv4() {
            RTMGRP_IPV4_ROUTE
        } else {
            RTMGRP_IPV6_ROUTE
        }
    }
}

/// The node's routes as Linux would list them for its addresses and gateways: a prefix route
/// per address (`proto kernel`; IPv4 `scope link src ADDR`, IPv6 `metric 256`), a default
/// route per gateway (`proto static`; IPv6 `metric 1024`).
pub fn routes(addrs: &[Addr], gws: &[IpAddr]) -> Vec<Route> {
    let mut v: Vec<Route> = Vec::new();
    for a in addrs {
        let dst = a.network();
        let max = if a.ip.is_ipv4() { 32 } else { 128 };
        if a.prefix == max || v.iter().any(|r| r.dst == dst && r.len == a.prefix) {
            continue;
        }
        v.push(Route {
            dst,
            len: a.prefix,
            gw: None,
            src: a.ip.is_ipv4().then_some(a.ip),
            cloned: false,
        });
    }
    for g in gws {
        let any = if g.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        let r = Route {
            dst: any,
            len: 0,
            gw: Some(*g),
            src: None,
            cloned: false,
        };
        // Linux lists IPv4's default route first, IPv6's last.
        if g.is_ipv4() {
            v.insert(0, r);
        } else {
            v.push(r);
        }
    }
    v
}

/// Append an `RTM_NEWROUTE` (or, `ty`, `RTM_DELROUTE`) message for `r`: `rtmsg` (main
/// table, unicast; `proto kernel` and, for IPv4, `scope link` on the link, `proto static`
/// through a gateway), then `RTA_TABLE`, `RTA_DST` (not for a default route),
/// `RTA_PREFSRC`, `RTA_GATEWAY`, for IPv6 `RTA_PRIORITY` and `RTA_PREF`, `RTA_OIF`.
pub fn route_msg(b: &mut Vec<u8>, ty: u16, r: &Route, flags: u16, seq: u32, pid: u32) {
    message(b, ty, flags, seq, pid, |b| {
        let v4 = r.dst.is_ipv4();
        b.push(if v4 { libc::AF_INET } else { libc::AF_INET6 } as u8);
        b.push(r.len);
        b.push(0); // src_len
        b.push(0); // tos
        b.push(RT_TABLE_MAIN);
        b.push(match (r.cloned, r.gw) {
            (true, _) => 0,
            (false, Some(_)) => RTPROT_STATIC,
            (false, None) => RTPROT_KERNEL,
        });
        b.push(if v4 && r.gw.is_none() && !r.cloned {
            RT_SCOPE_LINK
        } else {
            RT_SCOPE_UNIVERSE
        });
        b.push(RTN_UNICAST);
        let flags: u32 = if r.cloned { RTM_F_CLONED } else { 0 };
        b.extend_from_slice(&flags.to_ne_bytes());
        attr(b, RTA_TABLE, &u32::from(RT_TABLE_MAIN).to_ne_bytes());
        if r.len > 0 {
            attr(b, RTA_DST, &octets(r.dst));
        }
        if let Some(s) = r.src {
            attr(b, RTA_PREFSRC, &octets(s));
        }
        if let Some(g) = r.gw {
            attr(b, RTA_GATEWAY, &octets(g));
        }
        if !v4 && !r.cloned {
            let metric: u32 = if r.gw.is_some() { 1024 } else { 256 };
            attr(b, RTA_PRIORITY, &metric.to_ne_bytes());
            attr(b, RTA_PREF, &[0]); // ICMPV6_ROUTER_PREF_MEDIUM
        }
        attr(b, RTA_OIF, &IFINDEX.to_ne_bytes());
    });
}

/// What the node's rtnetlink view is made of: its addresses (with the `fe80::` one, as the
/// shim lists them) and default gateways. The routes follow from them ([`routes`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub addrs: Vec<Addr>,
    pub gws: Vec<IpAddr>,
}

/// One event: an address or a route, new or deleted.
enum Event<'a> {
    Addr(u16, &'a Addr),
    Route(u16, Route),
}

/// The events that tell a socket in `groups` that the node went from `old` to `new`: one
/// datagram per event, as the kernel sends them (sequence number and port id 0, no flags).
/// In the order Linux with a DHCP client would send them: the gateways' default routes that
/// went, the addresses that went, then their prefix routes (the kernel removes those after
/// the address); the new addresses, their prefix routes, the new default routes. Only the
/// events whose group (by kind and family) is in `groups`.
pub fn events(old: &View, new: &View, groups: u32) -> Vec<Vec<u8>> {
    let (ro, rn) = (routes(&old.addrs, &old.gws), routes(&new.addrs, &new.gws));
    let gone = |r: &&Route| !rn.contains(r);
    let came = |r: &&Route| !ro.contains(r);
    let mut v: Vec<Event> = Vec::new();
    v.extend(
        ro.iter()
            .filter(gone)
            .filter(|r| r.gw.is_some())
            .map(|r| Event::Route(RTM_DELROUTE, *r)),
    );
    v.extend(
        old.addrs
            .iter()
            .filter(|a| !new.addrs.contains(a))
            .map(|a| Event::Addr(RTM_DELADDR, a)),
    );
    v.extend(
        ro.iter()
            .filter(gone)
            .filter(|r| r.gw.is_none())
            .map(|r| Event::Route(RTM_DELROUTE, *r)),
    );
    v.extend(
        new.addrs
            .iter()
            .filter(|a| !old.addrs.contains(a))
            .map(|a| Event::Addr(RTM_NEWADDR, a)),
    );
    v.extend(
        rn.iter()
            .filter(came)
            .filter(|r| r.gw.is_none())
            .map(|r| Event::Route(RTM_NEWROUTE, *r)),
    );
    v.extend(
        rn.iter()
            .filter(came)
            .filter(|r| r.gw.is_some())
            .map(|r| Event::Route(RTM_NEWROUTE, *r)),
    );
    v.into_iter()
        .filter_map(|e| {
            let mut b = Vec::new();
            match e {
                Event::Addr(ty, a) if a.group() & groups != 0 => addr_msg(&mut b, ty, a, 0, 0, 0),
                Event::Route(ty, r) if r.group() & groups != 0 => {
                    route_msg(&mut b, ty, &r, 0, 0, 0)
                }
                _ => return None,
            }
            Some(b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Addr {
        let (ip, p) = s.split_once('/').unwrap();
        Addr {
            ip: ip.parse().unwrap(),
            prefix: p.parse().unwrap(),
        }
    }

    /// (type, flags, seq, pid, body) of the one message in `d`.
    fn one(d: &[u8]) -> (u16, u16, u32, u32, &[u8]) {
        let len = u32::from_ne_bytes(d[..4].try_into().unwrap()) as usize;
        assert_eq!(len, d.len(), "one message per datagram");
        (
            u16::from_ne_bytes([d[4], d[5]]),
            u16::from_ne_bytes([d[6], d[7]]),
            u32::from_ne_bytes(d[8..12].try_into().unwrap()),
            u32::from_ne_bytes(d[12..16].try_into().unwrap()),
            &d[16..],
        )
    }

    /// The attributes of a body whose fixed header (`ifaddrmsg` 8, `rtmsg` 12) is `hdr` bytes.
    fn attrs_at(body: &[u8], hdr: usize) -> Vec<(u16, Vec<u8>)> {
        let mut v = Vec::new();
        let mut b = &body[hdr..];
        while b.len() >= 4 {
            let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
            v.push((u16::from_ne_bytes([b[2], b[3]]), b[4..len].to_vec()));
            b = &b[align4(len).min(b.len())..];
        }
        v
    }

    /// The attributes of an `ifaddrmsg` body.
    fn attrs(body: &[u8]) -> Vec<(u16, Vec<u8>)> {
        attrs_at(body, 8)
    }

    fn view(addrs: &[&str], gws: &[&str]) -> View {
        View {
            addrs: addrs.iter().map(|s| a(s)).collect(),
            gws: gws.iter().map(|g| g.parse().unwrap()).collect(),
        }
    }

    const ADDR_GROUPS: u32 = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;

    #[test]
    fn lease_change_and_slaac_address() {
        let old = view(&["10.9.0.100/24", "fe80::1/64"], &[]);
        let new = view(&["10.9.0.101/24", "fe80::1/64", "fd09::1/64"], &[]);
        let all = events(&old, &new, ADDR_GROUPS);
        assert_eq!(all.len(), 3, "one removal, two additions");
        let (ty, flags, seq, pid, body) = one(&all[0]);
        assert_eq!((ty, flags, seq, pid), (RTM_DELADDR, 0, 0, 0));
        assert_eq!(
            &body[..8],
            &[
                libc::AF_INET as u8,
                24,
                IFA_F_PERMANENT as u8,
                0,
                1,
                0,
                0,
                0
            ]
        );
        let at = attrs(body);
        assert!(at.contains(&(IFA_LOCAL, vec![10, 9, 0, 100])), "{at:?}");
        assert!(at.contains(&(IFA_BROADCAST, vec![10, 9, 0, 255])));
        assert!(at.contains(&(IFA_LABEL, b"vde0\0".to_vec())));
        let (ty, _, _, _, body) = one(&all[1]);
        assert_eq!(ty, RTM_NEWADDR);
        assert!(attrs(body).contains(&(IFA_ADDRESS, vec![10, 9, 0, 101])));
        let (ty, _, _, _, body) = one(&all[2]);
        assert_eq!(
            (ty, body[0] as i32, body[1]),
            (RTM_NEWADDR, libc::AF_INET6, 64)
        );
        let v6: Vec<u8> = "fd09::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        assert!(attrs(body).contains(&(IFA_ADDRESS, v6)));
        // By group: a socket in the IPv6 group only hears of the IPv6 address.
        let six = events(&old, &new, RTMGRP_IPV6_IFADDR);
        assert_eq!(six, all[2..].to_vec());
        assert_eq!(events(&old, &new, RTMGRP_IPV4_IFADDR), all[..2].to_vec());
        assert!(events(&old, &new, 0x1).is_empty(), "RTMGRP_LINK only");
        assert!(events(&new, &new, EVENT_GROUPS).is_empty());
    }

    /// An event's type, `rtmsg` and attributes.
    type RouteEvent = (u16, [u8; 12], Vec<(u16, Vec<u8>)>);

    /// Each route event in `evs` (address events left out).
    fn route_events(evs: &[Vec<u8>]) -> Vec<RouteEvent> {
        evs.iter()
            .map(|d| one(d))
            .filter(|m| m.0 == RTM_NEWROUTE || m.0 == RTM_DELROUTE)
            .map(|(ty, flags, seq, pid, body)| {
                assert_eq!((flags, seq, pid), (0, 0, 0), "as the kernel's events");
                (ty, body[..12].try_into().unwrap(), attrs_at(body, 12))
            })
            .collect()
    }

    /// An `rtmsg`: family, dst_len, main table, protocol, scope, unicast, no flags.
    fn rtmsg(fam: i32, len: u8, proto: u8, scope: u8) -> [u8; 12] {
        [
            fam as u8,
            len,
            0,
            0,
            RT_TABLE_MAIN,
            proto,
            scope,
            RTN_UNICAST,
            0,
            0,
            0,
            0,
        ]
    }

    #[test]
    fn lease_and_router_bring_and_take_routes() {
        let (v4, v6) = (libc::AF_INET, libc::AF_INET6);
        let ll = "fe80::1/64";
        let bare = view(&[ll], &[]);
        let up = view(
            &["10.9.0.100/24", ll, "fd09::5/64"],
            &["10.9.0.1", "fe80::99"],
        );
        let all = events(&bare, &up, EVENT_GROUPS);
        let types: Vec<u16> = all.iter().map(|d| one(d).0).collect();
        assert_eq!(
            types,
            [
                RTM_NEWADDR,
                RTM_NEWADDR,
                RTM_NEWROUTE,
                RTM_NEWROUTE,
                RTM_NEWROUTE,
                RTM_NEWROUTE
            ],
            "the addresses, their prefix routes, the default routes"
        );
        let r = route_events(&all);
        let oif = (RTA_OIF, 1u32.to_ne_bytes().to_vec());
        let table = (RTA_TABLE, 254u32.to_ne_bytes().to_vec());
        // 10.9.0.0/24 dev vde0 proto kernel scope link src 10.9.0.100
        assert_eq!(r[0].1, rtmsg(v4, 24, RTPROT_KERNEL, RT_SCOPE_LINK));
        assert_eq!(
            r[0].2,
            [
                table.clone(),
                (RTA_DST, vec![10, 9, 0, 0]),
                (RTA_PREFSRC, vec![10, 9, 0, 100]),
                oif.clone()
            ]
        );
        // fd09::/64 dev vde0 proto kernel metric 256 pref medium
        assert_eq!(r[1].1, rtmsg(v6, 64, RTPROT_KERNEL, RT_SCOPE_UNIVERSE));
        let fd09: Ipv6Addr = "fd09::".parse().unwrap();
        assert_eq!(
            r[1].2,
            [
                table.clone(),
                (RTA_DST, fd09.octets().to_vec()),
                (RTA_PRIORITY, 256u32.to_ne_bytes().to_vec()),
                (RTA_PREF, vec![0]),
                oif.clone()
            ]
        );
        // default via 10.9.0.1 dev vde0 proto static
        assert_eq!(r[2].1, rtmsg(v4, 0, RTPROT_STATIC, RT_SCOPE_UNIVERSE));
        assert_eq!(
            r[2].2,
            [table.clone(), (RTA_GATEWAY, vec![10, 9, 0, 1]), oif.clone()]
        );
        // default via fe80::99 dev vde0 proto static metric 1024 pref medium
        assert_eq!(r[3].1, rtmsg(v6, 0, RTPROT_STATIC, RT_SCOPE_UNIVERSE));
        assert!(
            r[3].2
                .contains(&(RTA_PRIORITY, 1024u32.to_ne_bytes().to_vec()))
        );
        // Each event is a new route as the dumps describe it (`route_msg` of `routes`);
        // fe80::/64 was there before and stays.
        let before = routes(&bare.addrs, &bare.gws);
        assert_eq!(before.len(), 1);
        for rt in routes(&up.addrs, &up.gws) {
            let mut b = Vec::new();
            route_msg(&mut b, RTM_NEWROUTE, &rt, 0, 0, 0);
            let n = usize::from(!before.contains(&rt));
            assert_eq!(all.iter().filter(|d| **d == b).count(), n, "{rt:?}");
        }

        // The lease and the router go: the default routes first, then the addresses, then
        // their prefix routes.
        let gone = events(&up, &bare, EVENT_GROUPS);
        let types: Vec<u16> = gone.iter().map(|d| one(d).0).collect();
        assert_eq!(
            types,
            [
                RTM_DELROUTE,
                RTM_DELROUTE,
                RTM_DELADDR,
                RTM_DELADDR,
                RTM_DELROUTE,
                RTM_DELROUTE
            ]
        );
        let r = route_events(&gone);
        assert_eq!((r[0].1[0], r[0].1[1]), (v4 as u8, 0));
        assert_eq!((r[1].1[0], r[1].1[1]), (v6 as u8, 0));
        assert_eq!((r[2].1[0], r[2].1[1]), (v4 as u8, 24));
        assert_eq!((r[3].1[0], r[3].1[1]), (v6 as u8, 64));

        // By group: the route groups hear no addresses, each family its own routes.
        let fam = |evs: &[Vec<u8>]| -> Vec<(u16, u8, u8)> {
            route_events(evs)
                .iter()
                .map(|(t, m, _)| (*t, m[0], m[1]))
                .collect()
        };
        let r4 = events(&bare, &up, RTMGRP_IPV4_ROUTE);
        assert_eq!(route_events(&r4).len(), r4.len(), "no address events");
        assert_eq!(
            fam(&r4),
            [(RTM_NEWROUTE, v4 as u8, 24), (RTM_NEWROUTE, v4 as u8, 0)]
        );
        let r6 = events(&up, &bare, RTMGRP_IPV6_ROUTE);
        assert_eq!(
            fam(&r6),
            [(RTM_DELROUTE, v6 as u8, 0), (RTM_DELROUTE, v6 as u8, 64)]
        );
        assert_eq!(r6.len(), 2);
        assert!(
            events(&bare, &up, ADDR_GROUPS)
                .iter()
                .all(|d| one(d).0 == RTM_NEWADDR)
        );
    }

    #[test]
    fn new_gateway_and_shared_prefix() {
        let v4 = libc::AF_INET as u8;
        // A renewed lease with another router: the default route changes, nothing else.
        let old = view(&["10.9.0.100/24"], &["10.9.0.1"]);
        let new = view(&["10.9.0.100/24"], &["10.9.0.254"]);
        let r = route_events(&events(&old, &new, EVENT_GROUPS));
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].0, r[0].1[0], r[0].1[1]), (RTM_DELROUTE, v4, 0));
        assert!(r[0].2.contains(&(RTA_GATEWAY, vec![10, 9, 0, 1])));
        assert_eq!((r[1].0, r[1].1[1]), (RTM_NEWROUTE, 0));
        assert!(r[1].2.contains(&(RTA_GATEWAY, vec![10, 9, 0, 254])));
        // A second address in the prefix brings no route; a /32 none either.
        let two = view(
            &["10.9.0.100/24", "10.9.0.7/24", "10.8.0.1/32"],
            &["10.9.0.1"],
        );
        let e = events(&view(&["10.9.0.100/24"], &["10.9.0.1"]), &two, EVENT_GROUPS);
        assert_eq!(e.len(), 2, "two new addresses, no route");
        assert!(route_events(&e).is_empty());
        // The prefix route's source was the first address: it moves to the other.
        let e = events(
            &two,
            &view(&["10.9.0.7/24"], &["10.9.0.1"]),
            RTMGRP_IPV4_ROUTE,
        );
        let r = route_events(&e);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].0, r[1].0), (RTM_DELROUTE, RTM_NEWROUTE));
        assert!(r[0].2.contains(&(RTA_PREFSRC, vec![10, 9, 0, 100])));
        assert!(r[1].2.contains(&(RTA_PREFSRC, vec![10, 9, 0, 7])));
    }
}
