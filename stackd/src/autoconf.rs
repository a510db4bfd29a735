//! Automatic addresses: `IOTH_IP=auto`, `slaac` and `dhcp`.
//!
//! * *DHCPv4* (RFC 2131) is smoltcp's client socket (`socket::dhcpv4`): discover, request,
//!   renew at T1, rebind, and start over when the lease expires or the server says NAK. On
//!   each lease this module installs the address and prefix, the default IPv4 route via the
//!   router option and remembers the DNS servers (reported as `dns=` lines in `NodeInfo`, which
//!   is where the shim's resolver reads them). The host name (`IOTH_NAME`) goes out as option
//!   12 so that servers such as dnsmasq can register it.
//! * *SLAAC* (RFC 4862) is smoltcp's own (`Config::slaac`): router solicitations at start,
//!   one prefix per router advertisement (the prefix information option with the A flag, a /64),
//!   the address built from the prefix and the modified EUI-64 of the MAC, a default route via
//!   the advertising router for the router lifetime; prefixes and routes expire with their
//!   lifetimes. No duplicate address detection, no privacy or stable-opaque interface
//!   identifiers (RFC 4941/7217), no DHCPv6, no RDNSS option (RFC 8106): IPv6 DNS servers come
//!   only from `IOTH_DNS`.
//!
//! Before the first address exists the node has only its IPv6 link-local address: a connect
//! or send to a global address fails with `ENETUNREACH`, as on a host whose interface is
//! still unconfigured. `ioth-stackd --daemon` (which is how the shim starts a node) returns
//! only once the node has an address from each enabled method (`auto`: an IPv4 lease and an
//! IPv6 SLAAC address; with only one of them after 3 s more), or fails after
//! `--addr-timeout` seconds (default 10) with "no address from DHCP within 10 s", killing
//! the node; the shim then reports that message and the socket call fails with `ENETDOWN`.
//! Leases and prefixes that come, change or expire later are applied as they happen (the
//! shim's resolver asks `NodeInfo` for the DNS servers at each lookup, so it follows them).
//!
//! The node's identity: with `IOTH_IP=auto` the MAC is derived from `IOTH_NAME` (or given as
//! `IOTH_MAC`); without either it is random, so every process would start a node of its own
//! (the control path is named after the MAC). Give `IOTH_NAME` or `IOTH_MAC` with auto modes;
//! a stable MAC also keeps the DHCP lease and the SLAAC address across restarts.
//!
//! What this module does not do: it owns no addresses itself. It changes the smoltcp
//! `Interface` and reports that something changed; the node then refreshes its own view
//! (addresses for hairpin and neighbour decisions, gateways, DNS servers).

#![deny(unsafe_code)]

use ioth_common::config::Cidr;
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::dhcpv4;
use smoltcp::wire::{DhcpOption, IpAddress, IpCidr, Ipv4Cidr};
use std::net::{IpAddr, Ipv4Addr};

/// A DHCPv4 lease as installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Cidr,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
}

/// The autoconfiguration state of one node.
pub struct Autoconf {
    dhcp: Option<SocketHandle>,
    slaac: bool,
    /// The current DHCPv4 lease.
    pub lease: Option<Lease>,
    slaac_seen: smoltcp::time::Instant,
    started: std::time::Instant,
}

/// With both DHCPv4 and SLAAC, how long readiness waits for the second family once the
/// first address is there.
const SECOND_FAMILY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Autoconf {
    /// Set up DHCPv4 (a socket in `set`) and/or SLAAC (already enabled in the interface's
    /// `Config`). `name`: the host name to send to the DHCP server.
    pub fn new(set: &mut SocketSet<'static>, slaac: bool, dhcp4: bool, name: Option<&str>) -> Self {
        let dhcp = dhcp4.then(|| {
            let mut s = dhcpv4::Socket::new();
            // smoltcp waits 10 s before a second DISCOVER: one lost frame would use up the
            // whole `--daemon` wait. RFC 2131 section 4.1 starts at 4 s; 3 s and 2 s here.
            let mut r = s.get_retry_config();
            r.discover_timeout = smoltcp::time::Duration::from_secs(3);
            r.initial_request_timeout = smoltcp::time::Duration::from_secs(2);
            s.set_retry_config(r);
            if let Some(n) = name {
                // Option data must outlive the socket, which lives as long as the daemon.
                let data: &'static [u8] = Box::leak(n.as_bytes().to_vec().into_boxed_slice());
                let opts: &'static [DhcpOption<'static>] =
                    Box::leak(Box::new([DhcpOption { kind: 12, data }]));
                s.set_outgoing_options(opts);
            }
            set.add(s)
        });
        Autoconf {
            dhcp,
            slaac,
            lease: None,
            slaac_seen: smoltcp::time::Instant::from_millis(0),
            started: std::time::Instant::now(),
        }
    }

    /// Take what the DHCP client and SLAAC learnt into the interface. Returns whether the
    /// node's addresses or routes changed.
    pub fn poll(&mut self, iface: &mut Interface, set: &mut SocketSet<'static>) -> bool {
        let mut changed = false;
        if let Some(h) = self.dhcp {
            let ev = match set.get_mut::<dhcpv4::Socket>(h).poll() {
                None => None,
                Some(dhcpv4::Event::Configured(c)) => Some(Some(Lease {
                    addr: c.address,
                    router: c.router,
                    dns: c.dns_servers.iter().copied().collect(),
                    server: c.server.address,
                })),
                Some(dhcpv4::Event::Deconfigured) => Some(None),
            };
            if let Some(new) = ev {
                self.install(iface, new);
                changed = true;
            }
        }
        if self.slaac && iface.slaac_updated_at() != self.slaac_seen {
            self.slaac_seen = iface.slaac_updated_at();
            changed = true;
        }
        changed
    }

    fn install(&mut self, iface: &mut Interface, new: Option<Lease>) {
        if let Some(old) = self.lease.take() {
            log::info!("dhcp: lease {} from {} ends", old.addr, old.server);
            iface.update_ip_addrs(|v| v.retain(|c| *c != IpCidr::Ipv4(old.addr)));
            if let Some(r) = old.router {
                iface.routes_mut().update(|t| {
                    t.retain(|x| !(x.cidr.prefix_len() == 0 && x.via_router == IpAddress::Ipv4(r)))
                });
            }
        }
        if let Some(l) = &new {
            log::info!(
                "dhcp: {} from {} (router {:?}, dns {:?})",
                l.addr,
                l.server,
                l.router,
                l.dns
            );
            iface.update_ip_addrs(|v| {
                if v.push(IpCidr::Ipv4(l.addr)).is_err() {
                    log::warn!("dhcp: no room for another address");
                }
            });
            if let Some(r) = l.router
                && iface.routes_mut().add_default_ipv4_route(r).is_err()
            {
                log::warn!("dhcp: no room for the default route via {r}");
            }
        }
        self.lease = new;
    }

    /// Whether a `--daemon` parent may return: every enabled method gave an address, or one
    /// did and [`SECOND_FAMILY_WAIT`] has passed (so that the first program of an `auto` node
    /// sees the DHCP DNS servers when there is a DHCP server, without waiting long when not).
    pub fn ready(&self, cidrs: &[Cidr]) -> bool {
        let v4 = cidrs.iter().any(|c| c.addr.is_ipv4());
        let v6 = cidrs.iter().any(|c| c.addr.is_ipv6());
        let all = (self.dhcp.is_none() || v4) && (!self.slaac || v6);
        all || ((v4 || v6) && self.started.elapsed() >= SECOND_FAMILY_WAIT)
    }

    /// Gateways learnt: the DHCP router and the routers of SLAAC default routes.
    pub fn gateways(&self, iface: &mut Interface) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = Vec::new();
        if let Some(r) = self.lease.as_ref().and_then(|l| l.router) {
            v.push(IpAddr::V4(r));
        }
        if self.slaac {
            iface.routes_mut().update(|t| {
                for r in t.iter() {
                    if let (IpCidr::Ipv6(c), IpAddress::Ipv6(g)) = (r.cidr, r.via_router)
                        && c.prefix_len() == 0
                        && !v.contains(&IpAddr::V6(g))
                    {
                        v.push(IpAddr::V6(g));
                    }
                }
            });
        }
        v
    }

    /// DNS servers learnt (DHCP option 6).
    pub fn dns(&self) -> Vec<IpAddr> {
        self.lease
            .iter()
            .flat_map(|l| l.dns.iter().map(|d| IpAddr::V4(*d)))
            .collect()
    }
}

/// The interface's addresses other than IPv6 link-local ones, as the node lists them.
pub fn global_cidrs(iface: &Interface) -> Vec<Cidr> {
    iface
        .ip_addrs()
        .iter()
        .filter_map(|c| {
            let addr = match c.address() {
                // The node's loopback addresses are not on the LAN.
                IpAddress::Ipv4(a) if a.is_loopback() => return None,
                IpAddress::Ipv6(a) if a.is_loopback() => return None,
                IpAddress::Ipv4(a) => IpAddr::V4(a),
                IpAddress::Ipv6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => return None,
                IpAddress::Ipv6(a) => IpAddr::V6(a),
            };
            Some(Cidr {
                addr,
                prefix: c.prefix_len(),
            })
        })
        .collect()
}
