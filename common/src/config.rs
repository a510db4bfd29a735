//! Node configuration: what `IOTH_IP`, `IOTH_GW`, `IOTH_DNS`, `IOTH_MAC`, `IOTH_MTU`,
//! `IOTH_SWITCH` and `IOTH_NAME` mean, parsed into validated values.
//!
//! The same parser serves the environment (the shim) and the command line (`ioth-stackd`,
//! `iothrun`), so a value that one accepts the other accepts too. Every error names the
//! variable and the offending text ([`ConfigError`]).

#![deny(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a configuration value was refused. Each variant carries the offending text; its
/// `Display` is the message the user sees (`IOTH_IP: 'fd00::zz' is not an IPv4 or IPv6
/// address`), and [`ConfigError::Var`] names the variable the value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `IOTH_IP` is missing (it is the one variable a node cannot do without).
    IpNotSet,
    /// A value of the variable `var` (`IOTH_IP`, `IOTH_GW`, ...) is wrong.
    Var {
        var: &'static str,
        error: Box<ConfigError>,
    },
    /// Not an IPv4 or IPv6 address.
    NotAnAddress(String),
    /// A prefix length that is not a number from 0 to `max`.
    BadPrefix { text: String, max: u8 },
    /// Unspecified, multicast or broadcast: not an address a node can have.
    NotNodeAddress(String),
    /// Not six bytes separated by `:` or `-`.
    MacLength(String),
    /// Six parts, but not all of them hex bytes.
    NotAMac(String),
    /// The group bit is set.
    MulticastMac(String),
    /// An empty address list.
    NoAddress,
    /// Set, but to an empty value (for `IOTH_IP`: a program meant to be a node, which must
    /// not fall back to the host's network).
    Empty,
    /// Fixed addresses and `auto`/`slaac`/`dhcp` in one list.
    MixedModes,
    /// The same address twice in one list.
    Duplicate(IpAddr),
    /// An MTU outside 1280..=65521.
    BadMtu(String),
    /// A gateway outside every prefix of the node (`ip` is the address list as given).
    GatewayOutside { gw: IpAddr, ip: String },
    /// Not a valid host name (RFC 1123 labels).
    BadName(String),
}

impl ConfigError {
    /// `var` is set but empty ([`ConfigError::Empty`]).
    pub fn empty(var: &'static str) -> ConfigError {
        ConfigError::var(var)(ConfigError::Empty)
    }

    fn var(var: &'static str) -> impl FnOnce(ConfigError) -> ConfigError {
        move |e| ConfigError::Var {
            var,
            error: Box::new(e),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::IpNotSet => {
                f.write_str("IOTH_IP is not set (example: IOTH_IP=fd00::5/64,10.0.0.5/24)")
            }
            ConfigError::Var { var, error } => write!(f, "{var}: {error}"),
            ConfigError::NotAnAddress(s) => write!(f, "'{s}' is not an IPv4 or IPv6 address"),
            ConfigError::BadPrefix { text, max } => {
                write!(f, "'{text}': prefix length must be 0..={max}")
            }
            ConfigError::NotNodeAddress(s) => write!(f, "'{s}' cannot be a node address"),
            ConfigError::MacLength(s) => write!(
                f,
                "'{s}' is not a MAC address (six hex bytes, like 02:00:00:00:00:05)"
            ),
            ConfigError::NotAMac(s) => write!(f, "'{s}' is not a MAC address"),
            ConfigError::MulticastMac(s) => write!(f, "'{s}' is a multicast MAC address"),
            ConfigError::NoAddress => f.write_str("no address given"),
            ConfigError::Empty => f.write_str(
                "set but empty: no node to be (give an address, e.g. IOTH_IP=fd00::5/64, or \
                 unset the variable)",
            ),
            ConfigError::MixedModes => {
                f.write_str("mixing fixed addresses with auto/dhcp is not supported yet")
            }
            ConfigError::Duplicate(a) => write!(f, "{a} is given twice"),
            ConfigError::BadMtu(m) => write!(f, "'{m}' must be a number from 1280 to 65521"),
            ConfigError::GatewayOutside { gw, ip } => {
                write!(f, "{gw} is not inside any of the node's prefixes ({ip})")
            }
            ConfigError::BadName(n) => write!(f, "'{n}' is not a valid host name"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Var { error, .. } => Some(&**error),
            _ => None,
        }
    }
}

/// An address with its prefix length (`fd00::5/64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Default prefixes: /64 for IPv6, /24 for IPv4.
    pub fn default_prefix(addr: &IpAddr) -> u8 {
        match addr {
            IpAddr::V4(_) => 24,
            IpAddr::V6(_) => 64,
        }
    }

    pub fn parse(s: &str) -> Result<Cidr, ConfigError> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let a = a.trim_start_matches('[').trim_end_matches(']');
        let addr: IpAddr = a
            .parse()
            .map_err(|_| ConfigError::NotAnAddress(s.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => Cidr::default_prefix(&addr),
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(ConfigError::BadPrefix {
                        text: s.to_string(),
                        max,
                    });
                }
            },
        };
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(ConfigError::NotNodeAddress(s.to_string()));
        }
        if let IpAddr::V4(v4) = addr
            && v4.is_broadcast()
        {
            return Err(ConfigError::NotNodeAddress(s.to_string()));
        }
        Ok(Cidr { addr, prefix })
    }

    /// Whether `other` lies in this prefix.
    pub fn contains(&self, other: &IpAddr) -> bool {
        match (self.addr, other) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(a) & m == u32::from(*b) & m
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(a) & m == u128::from(*b) & m
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A locally administered, unicast Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub fn parse(s: &str) -> Result<Mac, ConfigError> {
        let parts: Vec<&str> = s.trim().split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(ConfigError::MacLength(s.to_string()));
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            m[i] = u8::from_str_radix(p, 16).map_err(|_| ConfigError::NotAMac(s.to_string()))?;
        }
        if m[0] & 1 != 0 {
            return Err(ConfigError::MulticastMac(s.to_string()));
        }
        Ok(Mac(m))
    }

    /// A stable locally administered MAC derived from an address, so that a node restarted
    /// elsewhere keeps its MAC: `02` followed by five bytes of a hash of the address.
    pub fn derive(addr: &IpAddr) -> Mac {
        let bytes: Vec<u8> = match addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let h = fnv1a(&bytes).to_be_bytes();
        Mac([0x02, h[0], h[1], h[2], h[3], h[4]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// FNV-1a, 64 bits: a stable hash for names and MACs (not for security).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// How a node gets its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddrMode {
    /// Fixed addresses.
    Static(Vec<Cidr>),
    /// IPv6 stateless autoconfiguration (router advertisements) and/or DHCPv4.
    Auto { slaac: bool, dhcp4: bool },
}

/// Everything that defines one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub addrs: AddrMode,
    pub gateways: Vec<IpAddr>,
    pub dns: Vec<IpAddr>,
    pub mac: Mac,
    /// IP MTU (bytes of IP packet; the Ethernet frame is 14 bytes more).
    pub mtu: Option<u16>,
    /// Switch location as given (directory, or `vde://DIR`); `None` = per-user default.
    pub switch: Option<String>,
    pub name: Option<String>,
}

/// Raw values as found in the environment or on a command line.
#[derive(Clone, Debug, Default)]
pub struct RawConfig {
    pub ip: Option<String>,
    pub gw: Option<String>,
    pub dns: Option<String>,
    pub mac: Option<String>,
    pub mtu: Option<String>,
    pub switch: Option<String>,
    pub name: Option<String>,
}

impl RawConfig {
    /// Read the `IOTH_*` variables through `get` (the shim passes a reader that does not
    /// allocate through hooked functions; tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> RawConfig {
        let nonempty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        RawConfig {
            ip: nonempty("IOTH_IP"),
            gw: nonempty("IOTH_GW"),
            dns: nonempty("IOTH_DNS"),
            mac: nonempty("IOTH_MAC"),
            mtu: nonempty("IOTH_MTU"),
            switch: nonempty("IOTH_SWITCH"),
            name: nonempty("IOTH_NAME"),
        }
    }

    pub fn from_env() -> RawConfig {
        RawConfig::from_lookup(|k| std::env::var(k).ok())
    }

    /// Validate. Errors read like `IOTH_IP: 'fd00::zz' is not an IPv4 or IPv6 address`.
    pub fn parse(&self) -> Result<NodeConfig, ConfigError> {
        let ip = self.ip.as_deref().ok_or(ConfigError::IpNotSet)?;
        let addrs = parse_addrs(ip).map_err(ConfigError::var("IOTH_IP"))?;
        let gateways = match &self.gw {
            Some(g) => parse_ip_list(g).map_err(ConfigError::var("IOTH_GW"))?,
            None => vec![],
        };
        let dns = match &self.dns {
            Some(g) => parse_ip_list(g).map_err(ConfigError::var("IOTH_DNS"))?,
            None => vec![],
        };
        let mac = match &self.mac {
            Some(m) => Mac::parse(m).map_err(ConfigError::var("IOTH_MAC"))?,
            None => match &addrs {
                AddrMode::Static(v) => Mac::derive(&v[0].addr),
                AddrMode::Auto { .. } => {
                    let seed = self
                        .name
                        .as_deref()
                        .map(|n| fnv1a(n.as_bytes()))
                        .unwrap_or_else(crate::sys::random_u64);
                    let h = seed.to_be_bytes();
                    Mac([0x02, h[0], h[1], h[2], h[3], h[4]])
                }
            },
        };
        let mtu = match &self.mtu {
            Some(m) => match m.trim().parse::<u16>() {
                Ok(v) if (1280..=65521).contains(&v) => Some(v),
                _ => return Err(ConfigError::var("IOTH_MTU")(ConfigError::BadMtu(m.clone()))),
            },
            None => None,
        };
        if let AddrMode::Static(v) = &addrs {
            for g in &gateways {
                if !v.iter().any(|c| c.contains(g)) {
                    return Err(ConfigError::var("IOTH_GW")(ConfigError::GatewayOutside {
                        gw: *g,
                        ip: ip.to_string(),
                    }));
                }
            }
        }
        if let Some(n) = &self.name
            && !valid_hostname(n)
        {
            return Err(ConfigError::var("IOTH_NAME")(ConfigError::BadName(
                n.clone(),
            )));
        }
        Ok(NodeConfig {
            addrs,
            gateways,
            dns,
            mac,
            mtu,
            switch: self.switch.clone(),
            name: self.name.clone(),
        })
    }
}

fn valid_hostname(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `fd00::5/64,10.0.0.5` → addresses; `auto`, `slaac`, `dhcp` → autoconfiguration.
pub fn parse_addrs(s: &str) -> Result<AddrMode, ConfigError> {
    let items: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .collect();
    if items.is_empty() {
        return Err(ConfigError::NoAddress);
    }
    let mut slaac = false;
    let mut dhcp4 = false;
    let mut v = Vec::new();
    for it in &items {
        match it.to_ascii_lowercase().as_str() {
            "auto" => {
                slaac = true;
                dhcp4 = true;
            }
            "slaac" | "auto6" => slaac = true,
            "dhcp" | "dhcp4" | "auto4" => dhcp4 = true,
            _ => v.push(Cidr::parse(it)?),
        }
    }
    if slaac || dhcp4 {
        if !v.is_empty() {
            return Err(ConfigError::MixedModes);
        }
        return Ok(AddrMode::Auto { slaac, dhcp4 });
    }
    for (i, a) in v.iter().enumerate() {
        if v[..i].iter().any(|b| b.addr == a.addr) {
            return Err(ConfigError::Duplicate(a.addr));
        }
    }
    Ok(AddrMode::Static(v))
}

fn parse_ip_list(s: &str) -> Result<Vec<IpAddr>, ConfigError> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map_err(|_| ConfigError::NotAnAddress(x.to_string()))
        })
        .collect()
}

/// IPv6 link-local address derived from a MAC (modified EUI-64, RFC 4291 appendix A).
pub fn link_local(mac: &Mac) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
}

/// Map `::ffff:a.b.c.d` to `a.b.c.d`; other addresses unchanged.
pub fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        a => a,
    }
}

/// Map an IPv4 address into `::ffff:a.b.c.d` (for dual-stack AF_INET6 sockets).
pub fn map_v6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

pub const UNSPECIFIED_V4: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn raw(pairs: &[(&str, &str)]) -> RawConfig {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RawConfig::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn addresses_with_default_prefixes() {
        let c = raw(&[("IOTH_IP", "fd00::5, 10.0.0.5"), ("IOTH_GW", "10.0.0.1")])
            .parse()
            .unwrap();
        assert_eq!(
            c.addrs,
            AddrMode::Static(vec![
                Cidr {
                    addr: "fd00::5".parse().unwrap(),
                    prefix: 64
                },
                Cidr {
                    addr: "10.0.0.5".parse().unwrap(),
                    prefix: 24
                }
            ])
        );
        assert_eq!(c.mac, Mac::derive(&"fd00::5".parse().unwrap()));
        assert_eq!(c.mac.0[0], 0x02);
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let msg = |pairs: &[(&str, &str)]| raw(pairs).parse().unwrap_err().to_string();
        let ip = |v: &str| msg(&[("IOTH_IP", v)]);
        let with = |k: &str, v: &str| msg(&[("IOTH_IP", "10.0.0.5"), (k, v)]);
        // The messages users see, word for word.
        assert_eq!(
            msg(&[]),
            "IOTH_IP is not set (example: IOTH_IP=fd00::5/64,10.0.0.5/24)"
        );
        assert_eq!(
            ip("fd00::zz"),
            "IOTH_IP: 'fd00::zz' is not an IPv4 or IPv6 address"
        );
        assert_eq!(
            ip("10.0.0.5/33"),
            "IOTH_IP: '10.0.0.5/33': prefix length must be 0..=32"
        );
        assert_eq!(ip("0.0.0.0"), "IOTH_IP: '0.0.0.0' cannot be a node address");
        assert_eq!(
            ip("255.255.255.255"),
            "IOTH_IP: '255.255.255.255' cannot be a node address"
        );
        assert_eq!(ip("10.0.0.5,10.0.0.5"), "IOTH_IP: 10.0.0.5 is given twice");
        assert_eq!(ip(" , "), "IOTH_IP: no address given");
        assert_eq!(
            ip("auto,fd00::5"),
            "IOTH_IP: mixing fixed addresses with auto/dhcp is not supported yet"
        );
        assert_eq!(
            with("IOTH_GW", "10.1.0.1"),
            "IOTH_GW: 10.1.0.1 is not inside any of the node's prefixes (10.0.0.5)"
        );
        assert_eq!(
            with("IOTH_GW", "gw"),
            "IOTH_GW: 'gw' is not an IPv4 or IPv6 address"
        );
        assert_eq!(
            with("IOTH_DNS", "1.2.3"),
            "IOTH_DNS: '1.2.3' is not an IPv4 or IPv6 address"
        );
        assert_eq!(
            with("IOTH_MAC", "01:00:00:00:00:01"),
            "IOTH_MAC: '01:00:00:00:00:01' is a multicast MAC address"
        );
        assert_eq!(
            with("IOTH_MAC", "02:00:00:00:00"),
            "IOTH_MAC: '02:00:00:00:00' is not a MAC address (six hex bytes, like 02:00:00:00:00:05)"
        );
        assert_eq!(
            with("IOTH_MAC", "02:00:00:00:00:zz"),
            "IOTH_MAC: '02:00:00:00:00:zz' is not a MAC address"
        );
        assert_eq!(
            with("IOTH_MTU", "70000"),
            "IOTH_MTU: '70000' must be a number from 1280 to 65521"
        );
        assert_eq!(
            with("IOTH_NAME", "-web"),
            "IOTH_NAME: '-web' is not a valid host name"
        );
        // The variable and the value, for a program that wants them.
        let e = raw(&[("IOTH_IP", "fd00::zz")]).parse().unwrap_err();
        assert_eq!(
            e,
            ConfigError::Var {
                var: "IOTH_IP",
                error: Box::new(ConfigError::NotAnAddress("fd00::zz".into())),
            }
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn auto_modes() {
        assert_eq!(
            parse_addrs("auto").unwrap(),
            AddrMode::Auto {
                slaac: true,
                dhcp4: true
            }
        );
        assert_eq!(
            parse_addrs("dhcp").unwrap(),
            AddrMode::Auto {
                slaac: false,
                dhcp4: true
            }
        );
    }

    #[test]
    fn prefix_membership_and_link_local() {
        let c = Cidr::parse("10.1.2.3/16").unwrap();
        assert!(c.contains(&"10.1.99.1".parse().unwrap()));
        assert!(!c.contains(&"10.2.0.1".parse().unwrap()));
        let ll = link_local(&Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]));
        assert_eq!(ll, "fe80::11:22ff:fe33:4455".parse::<Ipv6Addr>().unwrap());
    }
}
