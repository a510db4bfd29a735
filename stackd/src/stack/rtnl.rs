//! rtnetlink address and route events for the node's processes (`ip monitor address`,
//! `ip monitor route`).
//!
//! A virtual netlink socket of the shim (`preload/src/netlink.rs`) is one end of a kernel
//! `SOCK_SEQPACKET` socketpair held by the application; the shim keeps the other end. When
//! the socket joins the address groups (`bind` with `nl_groups`, or
//! `NETLINK_ADD_MEMBERSHIP`) or the route groups, the shim hands a copy of its end to the
//! daemon in a `Subscribe` request. Whenever DHCP or SLAAC changes the node's addresses or
//! gateways ([`Net::autoconf`](super::Net)), the daemon writes the `RTM_DELADDR`/
//! `RTM_NEWADDR` and `RTM_DELROUTE`/`RTM_NEWROUTE` messages ([`ioth_common::rtnl::events`]:
//! the prefix route of each address, the default route of each gateway, as the shim's dumps
//! list them) into each subscribed end: they arrive in the
//! application's end in order, which becomes readable (`poll`, `epoll`) as it would with the
//! kernel's socket. Nothing runs in the application for it.
//!
//! The daemon holds one fd per subscribed socket. The application's end going away (its last
//! close) shows as `POLLHUP` on ours, checked before every event and every new subscription,
//! so the dead ones never outnumber the live ones by more than one batch. Writes never
//! block: a socket whose reader left 1 MiB unread loses the events (the kernel would report
//! `ENOBUFS` on its next receive; a unix socketpair cannot). Subscriptions do not survive a
//! restart of the daemon.

use ioth_common::config::Cidr;
use ioth_common::rtnl::{Addr, EVENT_GROUPS, View, events};
use ioth_common::sys::{self, Errno, Fd};
use std::net::{IpAddr, Ipv6Addr};

/// The node as its rtnetlink sockets see it: its addresses `cidrs`, then the link-local
/// one, and its gateways (as `NodeInfo` lists them, from which the shim's dumps come).
pub(super) fn view(cidrs: &[Cidr], link_local: Ipv6Addr, gws: &[IpAddr]) -> View {
    let mut addrs: Vec<Addr> = cidrs
        .iter()
        .map(|c| Addr {
            ip: c.addr,
            prefix: c.prefix,
        })
        .collect();
    addrs.push(Addr {
        ip: IpAddr::V6(link_local),
        prefix: 64,
    });
    View {
        addrs,
        gws: gws.to_vec(),
    }
}

/// Most sockets subscribed at once (each holds one of the daemon's fds).
const MAX_SUBSCRIBERS: usize = 1024;

struct Subscriber {
    fd: Fd,
    /// (device, inode) of the socket: a second `Subscribe` for it replaces the first.
    id: (u64, u64),
    groups: u32,
}

impl Subscriber {
    /// Whether the application's end is still open (not `POLLHUP` on ours).
    fn alive(&self) -> bool {
        let mut p = [libc::pollfd {
            fd: self.fd.raw(),
            events: 0,
            revents: 0,
        }];
        let dead = libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
        !matches!(sys::poll(&mut p, 0), Ok(1) if p[0].revents & dead != 0)
    }
}

/// The node's subscribed netlink sockets.
#[derive(Default)]
pub(super) struct Subscribers {
    v: Vec<Subscriber>,
}

impl Subscribers {
    /// `Subscribe`: `fd` is to hear the events of `groups` (none: no more events).
    pub fn subscribe(&mut self, fd: Fd, groups: u32) -> Result<(), Errno> {
        let kind = (
            sys::getsockopt_int(fd.raw(), libc::SOL_SOCKET, libc::SO_DOMAIN),
            sys::getsockopt_int(fd.raw(), libc::SOL_SOCKET, libc::SO_TYPE),
        );
        if kind != (Ok(libc::AF_UNIX), Ok(libc::SOCK_SEQPACKET)) {
            return Err(Errno::EINVAL);
        }
        let id = sys::fstat_id(fd.raw())?;
        self.prune();
        self.v.retain(|s| s.id != id);
        let groups = groups & EVENT_GROUPS;
        if groups == 0 {
            return Ok(());
        }
        if self.v.len() >= MAX_SUBSCRIBERS {
            return Err(Errno(libc::ENOBUFS));
        }
        self.v.push(Subscriber { fd, id, groups });
        Ok(())
    }

    /// Let go of the sockets whose application end is closed.
    fn prune(&mut self) {
        self.v.retain(Subscriber::alive);
    }

    /// Whether a subscribed socket is still open in some process (which keeps the node up).
    pub fn any_alive(&self) -> bool {
        self.v.iter().any(Subscriber::alive)
    }

    /// The node's addresses or gateways went from `old` to `new`: tell every subscriber in
    /// their groups.
    pub fn changed(&mut self, old: &View, new: &View) {
        if old == new {
            return;
        }
        self.prune();
        self.v.retain(|s| {
            for d in events(old, new, s.groups) {
                match sys::send(s.fd.raw(), &d, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
                    Ok(_) => {}
                    Err(e) if e.is_again() => {
                        log::warn!("netlink subscriber {:?}: queue full, events lost", s.id);
                        break;
                    }
                    Err(e) => {
                        log::debug!("netlink subscriber {:?}: {e}; dropped", s.id);
                        return false;
                    }
                }
            }
            true
        });
    }

    pub fn len(&self) -> usize {
        self.v.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ioth_common::rtnl::{
        RTM_DELADDR, RTM_DELROUTE, RTM_NEWADDR, RTM_NEWROUTE, RTMGRP_IPV4_IFADDR,
        RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE,
    };

    /// The node with addresses `cidrs` (and fe80::1) and gateways `gws`.
    fn v(cidrs: &[&str], gws: &[&str]) -> View {
        let cidrs: Vec<Cidr> = cidrs.iter().map(|c| Cidr::parse(c).unwrap()).collect();
        let gws: Vec<IpAddr> = gws.iter().map(|g| g.parse().unwrap()).collect();
        view(&cidrs, "fe80::1".parse().unwrap(), &gws)
    }

    fn pair() -> (Fd, Fd) {
        sys::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC).unwrap()
    }

    /// The message types waiting at `app`.
    fn types(app: &Fd) -> Vec<u16> {
        let mut v = Vec::new();
        let mut buf = [0u8; 512];
        // (0: end of file, never a message.)
        while let Ok(n @ 1..) = sys::recv(app.raw(), &mut buf, libc::MSG_DONTWAIT) {
            assert_eq!(u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize, n);
            v.push(u16::from_ne_bytes([buf[4], buf[5]]));
        }
        v
    }

    #[test]
    fn events_reach_subscribers_by_group_and_closed_ones_go() {
        let mut subs = Subscribers::default();
        let (app4, ours4) = pair();
        let (app6, ours6) = pair();
        let ours6_copy = ours6.dup_cloexec(0).unwrap();
        // (The shim's own copy of its end.)
        let _shim6 = ours6.dup_cloexec(0).unwrap();
        let app6_copy = app6.dup_cloexec(0).unwrap();
        subs.subscribe(ours4, RTMGRP_IPV4_IFADDR).unwrap();
        subs.subscribe(ours6, RTMGRP_IPV6_IFADDR | 1).unwrap();
        assert_eq!(subs.len(), 2);
        let old = v(&["10.9.0.100/24"], &[]);
        let new = v(&["10.9.0.101/24", "fd09::5/64"], &[]);
        subs.changed(&old, &new);
        assert_eq!(types(&app4), [RTM_DELADDR, RTM_NEWADDR]);
        assert_eq!(types(&app6), [RTM_NEWADDR]);
        // The application closes its end: the daemon lets go of ours.
        assert!(subs.any_alive());
        drop(app4);
        subs.changed(&new, &old);
        assert_eq!(subs.len(), 1);
        assert_eq!(types(&app6), [RTM_DELADDR]);
        // The same socket (by another fd) with no groups: unsubscribed.
        drop(app6_copy);
        assert!(subs.any_alive(), "another fd of the app's end still open");
        subs.subscribe(ours6_copy, 0).unwrap();
        assert_eq!(subs.len(), 0);
        assert!(!subs.any_alive());
        subs.changed(&old, &new);
        assert_eq!(types(&app6), Vec::<u16>::new());
        // Not a socketpair end of the right kind.
        let (dg, _other) = sys::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM).unwrap();
        assert_eq!(subs.subscribe(dg, RTMGRP_IPV4_IFADDR), Err(Errno::EINVAL));
    }

    #[test]
    fn route_groups_hear_prefix_and_default_routes() {
        let mut subs = Subscribers::default();
        let (app_r, ours_r) = pair();
        let (app_a, ours_a) = pair();
        // `ip monitor route` (with the multicast route groups, which never hear anything),
        // `ip monitor address`.
        subs.subscribe(ours_r, RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | 0x80 | 0x200)
            .unwrap();
        subs.subscribe(ours_a, RTMGRP_IPV4_IFADDR).unwrap();
        let bare = v(&[], &[]);
        let lease = v(&["10.9.0.100/24"], &["10.9.0.1"]);
        subs.changed(&bare, &lease);
        assert_eq!(types(&app_r), [RTM_NEWROUTE, RTM_NEWROUTE]);
        assert_eq!(types(&app_a), [RTM_NEWADDR]);
        // The same view again (a SLAAC refresh that changed nothing): no events.
        subs.changed(&lease, &lease.clone());
        assert_eq!(types(&app_r), Vec::<u16>::new());
        // A router advertisement: the IPv6 prefix route and default route.
        let both = v(&["10.9.0.100/24", "fd09::5/64"], &["10.9.0.1", "fe80::99"]);
        subs.changed(&lease, &both);
        assert_eq!(types(&app_r), [RTM_NEWROUTE, RTM_NEWROUTE]);
        assert_eq!(types(&app_a), Vec::<u16>::new(), "IPv6 only");
        subs.changed(&both, &bare);
        assert_eq!(
            types(&app_r),
            [RTM_DELROUTE, RTM_DELROUTE, RTM_DELROUTE, RTM_DELROUTE]
        );
        assert_eq!(types(&app_a), [RTM_DELADDR]);
    }
}
