//! The node's network interface as its processes see it: one Ethernet interface, `vde0`,
//! index 1 (the index `IP_PKTINFO`/`IPV6_PKTINFO` report, see [`crate::dgram::cmsgs`]), with
//! the node's MAC, MTU and addresses (IPv4, IPv6 and the IPv6 link-local address) from the
//! daemon's `NodeInfo`, flags `UP|BROADCAST|RUNNING|MULTICAST`. There is no `lo`: the node's
//! stack has no loopback interface of its own.
//!
//! Programs learn about interfaces three ways, all answered from this view in an active node
//! (pure encoders here, the hooks in [`crate::ifhooks`] and [`crate::netlink`]):
//! * `ioctl`s on any socket: `SIOCGIFCONF`, `SIOCGIFFLAGS`, `SIOCGIFINDEX`, `SIOCGIFNAME`,
//!   `SIOCGIFADDR`, `SIOCGIFNETMASK`, `SIOCGIFBRDADDR`, `SIOCGIFHWADDR`, `SIOCGIFMTU`
//!   (unknown interface: `ENODEV`; no IPv4 address: `EADDRNOTAVAIL`);
//! * rtnetlink (`RTM_GETLINK`, `RTM_GETADDR` dumps), see [`crate::netlink`];
//! * glibc's `getifaddrs`, `if_nametoindex`, `if_indextoname`, `if_nameindex`.
//!
//! Setting anything (`SIOCSIF*`, `RTM_NEWADDR`, …) is refused with `EPERM`, like for an
//! unprivileged process: the node's addresses are the daemon's.

#![deny(unsafe_code)]

use ioth_common::sys::Errno;
use std::net::{IpAddr, Ipv4Addr};

pub use ioth_common::rtnl::Addr;

pub const NAME: &str = ioth_common::rtnl::IFNAME;
pub const INDEX: u32 = ioth_common::rtnl::IFINDEX;
/// `IFF_UP | IFF_BROADCAST | IFF_RUNNING | IFF_MULTICAST`.
pub const FLAGS: u32 =
    (libc::IFF_UP | libc::IFF_BROADCAST | libc::IFF_RUNNING | libc::IFF_MULTICAST) as u32;
/// `sizeof(struct ifreq)`.
pub const IFREQ_LEN: usize = 40;

/// The interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub mac: [u8; 6],
    pub mtu: u32,
    pub addrs: Vec<Addr>,
    /// Default gateways (`gw=` lines: given, or from DHCP/router advertisements).
    pub gws: Vec<IpAddr>,
}

impl Iface {
    /// From a `NodeInfo` reply (`mac=`, `mtu=`, `addr=` lines).
    pub fn parse(text: &str) -> Iface {
        let mut i = Iface {
            mac: [0; 6],
            mtu: 1500,
            addrs: Vec::new(),
            gws: Vec::new(),
        };
        for line in text.lines() {
            if let Some(m) = line.strip_prefix("mac=") {
                let v: Vec<u8> = m
                    .split(':')
                    .filter_map(|x| u8::from_str_radix(x, 16).ok())
                    .collect();
                if v.len() == 6 {
                    i.mac.copy_from_slice(&v);
                }
            } else if let Some(m) = line.strip_prefix("mtu=") {
                i.mtu = m.trim().parse().unwrap_or(1500);
            } else if let Some(g) = line.strip_prefix("gw=") {
                if let Ok(ip) = g.trim().parse::<IpAddr>() {
                    i.gws.push(ip);
                }
            } else if let Some(a) = line.strip_prefix("addr=") {
                let (ip, prefix) = a.split_once('/').unwrap_or((a, ""));
                if let Ok(ip) = ip.parse::<IpAddr>() {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    let prefix = prefix.parse().unwrap_or(max).min(max);
                    i.addrs.push(Addr { ip, prefix });
                }
            }
        }
        i
    }

    pub fn first_v4(&self) -> Option<Addr> {
        self.addrs.iter().copied().find(|a| a.ip.is_ipv4())
    }
}

/// The node's interface now (a `NodeInfo` round trip), or `None` if the shim is inert or
/// the daemon cannot be reached.
pub fn current() -> Option<Iface> {
    if !crate::node::active() {
        return None;
    }
    match crate::node::call_home(&ioth_common::ctl::Request::NodeInfo, None) {
        Ok((ioth_common::ctl::Reply::Bytes(b), _)) => {
            Some(Iface::parse(&String::from_utf8_lossy(&b)))
        }
        _ => None,
    }
}

/// The interface name in an `ifreq` (NUL-terminated within 16 bytes).
pub fn ifr_name(r: &[u8; IFREQ_LEN]) -> &[u8] {
    let n = r[..16].iter().position(|b| *b == 0).unwrap_or(16);
    &r[..n]
}

fn put_name(r: &mut [u8; IFREQ_LEN]) {
    r[..16].fill(0);
    r[..NAME.len()].copy_from_slice(NAME.as_bytes());
}

/// A `sockaddr_in` (16 bytes).
pub fn sockaddr_in(a: Ipv4Addr) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    s[4..8].copy_from_slice(&a.octets());
    s
}

/// The interface `ioctl`s that read (`SIOCGIF*` except `SIOCGIFCONF`): fill `r` in place.
pub fn ifreq_get(i: &Iface, req: u64, r: &mut [u8; IFREQ_LEN]) -> Result<(), Errno> {
    if req == libc::SIOCGIFNAME {
        let idx = i32::from_ne_bytes([r[16], r[17], r[18], r[19]]);
        if idx != INDEX as i32 {
            return Err(Errno(libc::ENODEV));
        }
        put_name(r);
        return Ok(());
    }
    if ifr_name(r) != NAME.as_bytes() {
        return Err(Errno(libc::ENODEV));
    }
    let body = &mut r[16..];
    match req {
        libc::SIOCGIFFLAGS => {
            body.fill(0);
            body[0..2].copy_from_slice(&(FLAGS as u16).to_ne_bytes());
        }
        libc::SIOCGIFINDEX => {
            body.fill(0);
            body[0..4].copy_from_slice(&(INDEX as i32).to_ne_bytes());
        }
        libc::SIOCGIFMTU => {
            body.fill(0);
            body[0..4].copy_from_slice(&(i.mtu as i32).to_ne_bytes());
        }
        libc::SIOCGIFHWADDR => {
            body.fill(0);
            body[0..2].copy_from_slice(&libc::ARPHRD_ETHER.to_ne_bytes());
            body[2..8].copy_from_slice(&i.mac);
        }
        libc::SIOCGIFADDR | libc::SIOCGIFNETMASK | libc::SIOCGIFBRDADDR => {
            let a = i.first_v4().ok_or(Errno(libc::EADDRNOTAVAIL))?;
            let ip = match req {
                libc::SIOCGIFADDR => a.ip,
                libc::SIOCGIFNETMASK => a.netmask(),
                _ => IpAddr::V4(a.broadcast().unwrap_or(Ipv4Addr::UNSPECIFIED)),
            };
            let IpAddr::V4(v4) = ip else {
                return Err(Errno(libc::EADDRNOTAVAIL));
            };
            body.fill(0);
            body[..16].copy_from_slice(&sockaddr_in(v4));
        }
        _ => return Err(Errno::EINVAL),
    }
    Ok(())
}

/// Whether `req` is one of the reading interface `ioctl`s of [`ifreq_get`].
pub fn is_ifreq_get(req: u64) -> bool {
    matches!(
        req,
        libc::SIOCGIFNAME
            | libc::SIOCGIFFLAGS
            | libc::SIOCGIFINDEX
            | libc::SIOCGIFMTU
            | libc::SIOCGIFHWADDR
            | libc::SIOCGIFADDR
            | libc::SIOCGIFNETMASK
            | libc::SIOCGIFBRDADDR
    )
}

/// `SIOCGIFCONF`: one `ifreq` (name and `sockaddr_in`) per IPv4 address.
pub fn ifconf(i: &Iface) -> Vec<[u8; IFREQ_LEN]> {
    i.addrs
        .iter()
        .filter_map(|a| match a.ip {
            IpAddr::V4(v) => {
                let mut r = [0u8; IFREQ_LEN];
                put_name(&mut r);
                r[16..32].copy_from_slice(&sockaddr_in(v));
                Some(r)
            }
            _ => None,
        })
        .collect()
}

/// The `arpreq` of `SIOCSARP`/`SIOCDARP` (68 bytes): protocol address and hardware address.
pub fn parse_arpreq(b: &[u8]) -> Result<(Ipv4Addr, [u8; 6]), Errno> {
    if b.len() < 68 {
        return Err(Errno(libc::EFAULT));
    }
    if u16::from_ne_bytes([b[0], b[1]]) != libc::AF_INET as u16 {
        return Err(Errno(libc::EAFNOSUPPORT));
    }
    let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&b[18..24]);
    let dev = &b[52..68];
    let n = dev.iter().position(|c| *c == 0).unwrap_or(16);
    if n != 0 && &dev[..n] != NAME.as_bytes() {
        return Err(Errno(libc::ENODEV));
    }
    Ok((ip, mac))
}

/// One `struct ifaddrs` entry of `getifaddrs`: flags and the socket addresses (raw bytes) of
/// `ifa_addr`, `ifa_netmask` and `ifa_broadaddr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaEntry {
    pub flags: u32,
    pub addr: Vec<u8>,
    pub netmask: Option<Vec<u8>>,
    pub broad: Option<Vec<u8>>,
}

/// A `sockaddr_in6` (28 bytes); link-local addresses get scope id [`INDEX`].
pub fn sockaddr_in6(a: std::net::Ipv6Addr) -> Vec<u8> {
    let mut s = vec![0u8; 28];
    s[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    s[8..24].copy_from_slice(&a.octets());
    if a.segments()[0] & 0xffc0 == 0xfe80 {
        s[24..28].copy_from_slice(&INDEX.to_ne_bytes());
    }
    s
}

/// A `sockaddr_ll` (20 bytes) for hardware address `mac`.
pub fn sockaddr_ll(mac: [u8; 6]) -> Vec<u8> {
    let mut s = vec![0u8; 20];
    s[0..2].copy_from_slice(&(libc::AF_PACKET as u16).to_ne_bytes());
    s[4..8].copy_from_slice(&(INDEX as i32).to_ne_bytes());
    s[8..10].copy_from_slice(&libc::ARPHRD_ETHER.to_ne_bytes());
    s[11] = 6;
    s[12..18].copy_from_slice(&mac);
    s
}

/// What `getifaddrs` lists, in glibc's order: the link (`AF_PACKET`), then each address.
pub fn ifaddrs(i: &Iface) -> Vec<IfaEntry> {
    let mut v = vec![IfaEntry {
        flags: FLAGS,
        addr: sockaddr_ll(i.mac),
        netmask: None,
        broad: Some(sockaddr_ll([0xff; 6])),
    }];
    for a in &i.addrs {
        let e = match (a.ip, a.netmask()) {
            (IpAddr::V4(ip), IpAddr::V4(m)) => IfaEntry {
                flags: FLAGS,
                addr: sockaddr_in(ip).to_vec(),
                netmask: Some(sockaddr_in(m).to_vec()),
                broad: a.broadcast().map(|b| sockaddr_in(b).to_vec()),
            },
            (IpAddr::V6(ip), IpAddr::V6(m)) => IfaEntry {
                flags: FLAGS,
                addr: sockaddr_in6(ip),
                netmask: Some(sockaddr_in6(m)),
                broad: None,
            },
            _ => continue,
        };
        v.push(e);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Iface {
        Iface::parse(
            "node=1\nmac=02:00:00:00:09:01\nmtu=1500\naddr=10.0.9.1/24\naddr=fd00:9::1/64\n\
             addr=fe80::1/64\ndns=10.0.9.1\n",
        )
    }

    fn req(name: &str) -> [u8; IFREQ_LEN] {
        let mut r = [0u8; IFREQ_LEN];
        r[..name.len()].copy_from_slice(name.as_bytes());
        r
    }

    #[test]
    fn parses_node_info() {
        let i = node();
        assert_eq!(i.mac, [2, 0, 0, 0, 9, 1]);
        assert_eq!(i.addrs.len(), 3);
        assert_eq!(
            i.first_v4().unwrap().broadcast(),
            Some(Ipv4Addr::new(10, 0, 9, 255))
        );
        assert_eq!(i.addrs[2].scope(), libc::RT_SCOPE_LINK);
        assert_eq!(
            i.addrs[1].netmask(),
            "ffff:ffff:ffff:ffff::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ifreq_ioctls() {
        let i = node();
        let mut r = req("vde0");
        ifreq_get(&i, libc::SIOCGIFFLAGS, &mut r).unwrap();
        assert_eq!(u16::from_ne_bytes([r[16], r[17]]) as u32, FLAGS);
        let mut r = req("vde0");
        ifreq_get(&i, libc::SIOCGIFADDR, &mut r).unwrap();
        assert_eq!(&r[20..24], &[10, 0, 9, 1]);
        let mut r = req("vde0");
        ifreq_get(&i, libc::SIOCGIFNETMASK, &mut r).unwrap();
        assert_eq!(&r[20..24], &[255, 255, 255, 0]);
        let mut r = req("vde0");
        ifreq_get(&i, libc::SIOCGIFHWADDR, &mut r).unwrap();
        assert_eq!(&r[18..24], &[2, 0, 0, 0, 9, 1]);
        let mut r = req("vde0");
        ifreq_get(&i, libc::SIOCGIFMTU, &mut r).unwrap();
        assert_eq!(i32::from_ne_bytes([r[16], r[17], r[18], r[19]]), 1500);
        let mut r = req("vde0");
        ifreq_get(&i, libc::SIOCGIFINDEX, &mut r).unwrap();
        assert_eq!(r[16], 1);
        let mut r = [0u8; IFREQ_LEN];
        r[16] = 1;
        ifreq_get(&i, libc::SIOCGIFNAME, &mut r).unwrap();
        assert_eq!(ifr_name(&r), b"vde0");
        r[16] = 2;
        assert_eq!(
            ifreq_get(&i, libc::SIOCGIFNAME, &mut r),
            Err(Errno(libc::ENODEV))
        );
        let mut r = req("eth0");
        assert_eq!(
            ifreq_get(&i, libc::SIOCGIFFLAGS, &mut r),
            Err(Errno(libc::ENODEV))
        );
        let v6only = Iface::parse("mac=02:00:00:00:00:01\naddr=fd00::1/64\n");
        let mut r = req("vde0");
        assert_eq!(
            ifreq_get(&v6only, libc::SIOCGIFADDR, &mut r),
            Err(Errno(libc::EADDRNOTAVAIL))
        );
        let c = ifconf(&i);
        assert_eq!(c.len(), 1);
        assert_eq!(&c[0][..5], b"vde0\0");
    }

    #[test]
    fn getifaddrs_entries() {
        let e = ifaddrs(&node());
        assert_eq!(e.len(), 4);
        assert_eq!(
            u16::from_ne_bytes([e[0].addr[0], e[0].addr[1]]) as i32,
            libc::AF_PACKET
        );
        assert_eq!(&e[0].addr[12..18], &[2, 0, 0, 0, 9, 1]);
        assert_eq!(&e[1].addr[4..8], &[10, 0, 9, 1]);
        assert_eq!(&e[1].broad.as_ref().unwrap()[4..8], &[10, 0, 9, 255]);
        assert_eq!(e[2].addr.len(), 28);
        assert_eq!(
            &e[3].addr[24..28],
            &1u32.to_ne_bytes(),
            "link-local scope id"
        );
    }

    #[test]
    fn arpreqs() {
        let mut b = [0u8; 68];
        b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[4..8].copy_from_slice(&[10, 0, 9, 100]);
        b[16..18].copy_from_slice(&1u16.to_ne_bytes());
        b[18..24].copy_from_slice(&[2, 1, 2, 3, 4, 5]);
        b[52..56].copy_from_slice(b"vde0");
        assert_eq!(
            parse_arpreq(&b),
            Ok((Ipv4Addr::new(10, 0, 9, 100), [2, 1, 2, 3, 4, 5]))
        );
        b[52..56].copy_from_slice(b"eth0");
        assert_eq!(parse_arpreq(&b), Err(Errno(libc::ENODEV)));
    }
}
