//! Socket options: what `getsockopt`/`setsockopt` store and report ([`Opts`]), which of them
//! reach smoltcp (Nagle, keep-alive: [`apply_tcp_opts`]), `TCP_INFO`, multicast membership,
//! and the options Linux accepts without effect here ([`generic_option`]).

use super::*;

#[derive(Clone, Debug)]
pub(super) struct Opts {
    pub(super) reuseaddr: bool,
    pub(super) reuseport: bool,
    pub(super) keepalive: bool,
    pub(super) keepidle: u32,
    pub(super) keepintvl: u32,
    pub(super) keepcnt: u32,
    /// `TCP_USER_TIMEOUT`, ms (0: the default limits).
    pub(super) user_timeout: u32,
    /// `TCP_LINGER2`, s (0: `tcp_fin_timeout`; negative: none, as Linux's -1).
    pub(super) linger2: i32,
    pub(super) sndbuf: i32,
    pub(super) rcvbuf: i32,
    pub(super) linger: Option<i32>,
    pub(super) nodelay: bool,
    pub(super) cork: bool,
    pub(super) maxseg: i32,
    pub(super) v6only: bool,
    pub(super) tclass: i32,
    pub(super) tos: i32,
    pub(super) broadcast: bool,
    pub(super) congestion: Vec<u8>,
    pub(super) other: HashMap<(i32, i32), Vec<u8>>,
    /// A datagram socket's options as set (level, name, value), to be set again on the
    /// socket a new daemon takes back (`keep.rs`): the last value of each, and the
    /// multicast groups still joined, in order. At most [`REPLAY_MAX`] bytes in all.
    pub(super) replay: Vec<(i32, i32, Vec<u8>)>,
}

/// The group of an `ip_mreq`/`ip_mreqn` (`IPPROTO_IP`) or `ipv6_mreq` (`IPPROTO_IPV6`)
/// membership option; `None` if the value is too short for its struct.
fn membership_group(level: i32, val: &[u8]) -> Option<IpAddress> {
    match (level, val.len()) {
        (libc::IPPROTO_IP, 8..) => Some(IpAddress::Ipv4(std::net::Ipv4Addr::new(
            val[0], val[1], val[2], val[3],
        ))),
        (libc::IPPROTO_IPV6, 20..) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&val[..16]);
            Some(IpAddress::Ipv6(std::net::Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

/// The most bytes of options a datagram socket keeps to be set again after a restart (the
/// keeper's message holds them with the socket).
pub(super) const REPLAY_MAX: usize = 1024;

impl Opts {
    /// Remember a datagram socket's option that was just set (see [`Opts::replay`]); whether
    /// that changed what is remembered. What the kept record carries itself (`SO_REUSEADDR`,
    /// `SO_REUSEPORT`, `IPV6_V6ONLY`) is left out; leaving a group forgets its join.
    pub(super) fn remember(&mut self, level: i32, name: i32, val: &[u8]) -> bool {
        let join = if level == libc::IPPROTO_IP {
            libc::IP_ADD_MEMBERSHIP
        } else {
            libc::IPV6_ADD_MEMBERSHIP
        };
        let joined = |r: &[(i32, i32, Vec<u8>)], g: &Option<IpAddress>| {
            r.iter()
                .rposition(|(l, n, v)| (*l, *n) == (level, join) && membership_group(*l, v) == *g)
        };
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_REUSEADDR | libc::SO_REUSEPORT)
            | (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => return false,
            (libc::IPPROTO_IP, libc::IP_DROP_MEMBERSHIP)
            | (libc::IPPROTO_IPV6, libc::IPV6_DROP_MEMBERSHIP) => {
                let Some(i) = joined(&self.replay, &membership_group(level, val)) else {
                    return false;
                };
                self.replay.remove(i);
                return true;
            }
            (libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP)
            | (libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP) => {
                if joined(&self.replay, &membership_group(level, val)).is_some() {
                    return false;
                }
            }
            _ => {
                if let Some(i) = self
                    .replay
                    .iter()
                    .position(|(l, n, _)| (*l, *n) == (level, name))
                {
                    if self.replay[i].2 == val {
                        return false;
                    }
                    self.replay.remove(i);
                }
            }
        }
        // Each costs its value and 10 bytes of the keeper's message.
        let used: usize = self.replay.iter().map(|(_, _, v)| 10 + v.len()).sum();
        if used + 10 + val.len() > REPLAY_MAX {
            log::warn!("option ({level}, {name}) will not be set again after a restart");
            return true;
        }
        self.replay.push((level, name, val.to_vec()));
        true
    }
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
            user_timeout: 0,
            linger2: 0,
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
            replay: Vec::new(),
        }
    }
}

pub(super) fn int_opt(v: &[u8]) -> Result<i32, Errno> {
    if v.len() < 4 {
        return Err(Errno::EINVAL);
    }
    Ok(i32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
}

pub(super) fn linux_state(s: tcp::State) -> u8 {
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

impl<D: Link> Net<D> {
    pub(super) fn tcp_handle(s: &Sock) -> Option<SocketHandle> {
        match &s.tcp {
            TcpState::Conn(c) => Some(c.h),
            TcpState::Connecting(c) => Some(c.h),
            _ => None,
        }
    }

    pub(super) fn op_getsockopt(
        &mut self,
        s: &mut Sock,
        level: i32,
        name: i32,
    ) -> Result<Vec<u8>, Errno> {
        let int = |v: i32| Ok(v.to_ne_bytes().to_vec());
        let tcp = s.kind == Kind::Tcp;
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_ERROR) => {
                let e = s.so_error;
                s.so_error = 0;
                int(e)
            }
            (libc::SOL_SOCKET, ctl::SO_IOTH_READ_ERROR) => {
                let e = if std::mem::take(&mut s.read_error) {
                    std::mem::take(&mut s.so_error)
                } else {
                    0
                };
                int(e)
            }
            (libc::SOL_PACKET, ctl::SO_IOTH_PACKET_NAME) if s.kind == Kind::Packet => {
                Ok(self.packet_name(s))
            }
            (libc::SOL_PACKET, libc::PACKET_AUXDATA) if s.kind == Kind::Packet => {
                int(s.opts.other.contains_key(&(level, name)) as i32)
            }
            (libc::SOL_SOCKET, ctl::SO_IOTH_ERRQUEUE) => match s.dg.errq.pop_front() {
                Some(e) => Ok(e.encode()),
                None => Err(Errno::EAGAIN),
            },
            (libc::SOL_SOCKET, libc::SO_TYPE) => int(if tcp {
                libc::SOCK_STREAM
            } else if s.kind == Kind::Raw || (s.kind == Kind::Packet && s.dg.pk.raw) {
                libc::SOCK_RAW
            } else {
                libc::SOCK_DGRAM
            }),
            (libc::SOL_SOCKET, libc::SO_DOMAIN) => int(s.domain),
            (libc::SOL_SOCKET, libc::SO_PROTOCOL) => int(match s.kind {
                Kind::Tcp => libc::IPPROTO_TCP,
                Kind::Udp => libc::IPPROTO_UDP,
                Kind::Raw if s.dg.hdrincl => libc::IPPROTO_RAW,
                Kind::Icmp | Kind::Raw if s.domain == libc::AF_INET6 => libc::IPPROTO_ICMPV6,
                Kind::Icmp | Kind::Raw => libc::IPPROTO_ICMP,
                Kind::Packet => i32::from(u16::from_ne_bytes(s.dg.pk.proto.to_be_bytes())),
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
            // Linux: ip_getsockopt refuses a level other than SOL_IP with EOPNOTSUPP,
            // ipv6_getsockopt one other than SOL_IPV6 with ENOPROTOOPT.
            (libc::IPPROTO_TCP, _) if !tcp && s.domain == libc::AF_INET => {
                Err(Errno(libc::EOPNOTSUPP))
            }
            (libc::IPPROTO_TCP, _) if !tcp => Err(Errno(libc::ENOPROTOOPT)),
            (libc::IPPROTO_TCP, libc::TCP_NODELAY) => int(s.opts.nodelay as i32),
            (libc::IPPROTO_TCP, libc::TCP_CORK) => int(s.opts.cork as i32),
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => int(s.opts.keepidle as i32),
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => int(s.opts.keepintvl as i32),
            (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => int(s.opts.keepcnt as i32),
            (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT) => int(s.opts.user_timeout as i32),
            (libc::IPPROTO_TCP, libc::TCP_LINGER2) => int(match s.opts.linger2 {
                0 => self.timeouts.fin.secs() as i32,
                v => v,
            }),
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
                // Bound to no device: an empty name (sshd asks on every connection).
                None if k == (libc::SOL_SOCKET, libc::SO_BINDTODEVICE) => Ok(Vec::new()),
                None if generic_option(k) => int(0),
                None => Err(Errno(libc::ENOPROTOOPT)),
            },
        }
    }

    pub(super) fn tcp_info(&self, s: &Sock) -> Vec<u8> {
        let mut v = vec![0u8; 232];
        let (state, rtt) = match &s.tcp {
            TcpState::Listening(_) => (10, 0),
            TcpState::Done | TcpState::Idle | TcpState::Fresh(_) => (7, 0),
            TcpState::CutPending(_) | TcpState::CutWait(_) => (2, 0),
            TcpState::Cut(_) => (1, 0),
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

    pub(super) fn op_setsockopt(
        &mut self,
        s: &mut Sock,
        level: i32,
        name: i32,
        val: &[u8],
    ) -> Result<(), Errno> {
        let tcp = s.kind == Kind::Tcp;
        if s.kind == Kind::Packet && level == libc::SOL_PACKET {
            match name {
                ctl::SO_IOTH_PACKET_BIND => super::packet::bind(&mut s.dg.pk, val)?,
                libc::PACKET_ADD_MEMBERSHIP | libc::PACKET_DROP_MEMBERSHIP => {
                    let add = name == libc::PACKET_ADD_MEMBERSHIP;
                    super::packet::membership(&mut s.dg.pk, add, val)?
                }
                libc::PACKET_AUXDATA => {
                    if int_opt(val)? != 0 {
                        s.opts.other.insert((level, name), val.to_vec());
                    } else {
                        s.opts.other.remove(&(level, name));
                    }
                }
                _ => return Err(Errno(libc::ENOPROTOOPT)),
            }
            return Ok(());
        }
        if s.kind == Kind::Packet
            && matches!(
                level,
                libc::IPPROTO_IP | libc::IPPROTO_IPV6 | libc::IPPROTO_TCP
            )
        {
            return Err(Errno(libc::ENOPROTOOPT));
        }
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
            (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT) => {
                let v = int_opt(val)?;
                if v < 0 {
                    return Err(Errno::EINVAL);
                }
                s.opts.user_timeout = v as u32;
            }
            (libc::IPPROTO_TCP, libc::TCP_LINGER2) => {
                // As Linux: negative is "no FIN-WAIT-2 wait", at most 120 s.
                s.opts.linger2 = int_opt(val)?.clamp(-1, 120);
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
                let group = membership_group(level, val).ok_or(Errno::EINVAL)?;
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
            (libc::SOL_SOCKET, libc::SO_BINDTODEVICE) => {
                // The node's interfaces are its link (`vde0`, as the shim names it) and `lo`;
                // an empty name unbinds, as on Linux.
                let name: Vec<u8> = val.iter().take_while(|b| **b != 0).copied().collect();
                match name.as_slice() {
                    b"" => {
                        s.opts.other.remove(&(level, libc::SO_BINDTODEVICE));
                    }
                    b"vde0" | b"lo" => {
                        let mut v = name.clone();
                        v.push(0);
                        s.opts.other.insert((level, libc::SO_BINDTODEVICE), v);
                    }
                    _ => return Err(Errno(libc::ENODEV)),
                }
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
        if let TcpState::Conn(c) = &mut s.tcp {
            // The next visit sets the timeout for the new bounds.
            c.watch.bounds = Bounds::of(&s.opts);
            s.waker.wake_by_ref();
        }
        Ok(())
    }
}

/// Options that Linux accepts on any socket and that have no effect here: stored and
/// reported back.
pub(super) fn generic_option(k: (i32, i32)) -> bool {
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
                | libc::TCP_NOTSENT_LOWAT
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
                | libc::IPV6_2292HOPLIMIT
                | libc::IPV6_MULTICAST_IF
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_sockets_options_are_remembered_once_each() {
        let mut o = Opts::default();
        let one = 1i32.to_ne_bytes();
        let g = |last: u8| {
            let mut v = vec![0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last];
            v.extend_from_slice(&1u32.to_ne_bytes());
            v
        };
        let (v6, join, leave) = (
            libc::IPPROTO_IPV6,
            libc::IPV6_ADD_MEMBERSHIP,
            libc::IPV6_DROP_MEMBERSHIP,
        );
        assert!(o.remember(libc::SOL_SOCKET, libc::SO_BROADCAST, &one));
        assert!(
            !o.remember(libc::SOL_SOCKET, libc::SO_BROADCAST, &one),
            "same value"
        );
        assert!(
            !o.remember(libc::SOL_SOCKET, libc::SO_REUSEADDR, &one),
            "in the record"
        );
        assert!(o.remember(v6, join, &g(1)));
        assert!(!o.remember(v6, join, &g(1)), "joined already");
        assert!(o.remember(v6, join, &g(2)));
        assert!(o.remember(v6, leave, &g(1)));
        assert!(!o.remember(v6, leave, &g(1)), "left already");
        assert!(o.remember(libc::SOL_SOCKET, libc::SO_BROADCAST, &0i32.to_ne_bytes()));
        assert_eq!(
            o.replay,
            vec![
                (v6, join, g(2)),
                (
                    libc::SOL_SOCKET,
                    libc::SO_BROADCAST,
                    0i32.to_ne_bytes().to_vec()
                ),
            ]
        );
        // Beyond the budget a value is not kept (the rest stays).
        assert!(o.remember(libc::SOL_SOCKET, libc::SO_BINDTODEVICE, &[b'x'; REPLAY_MAX]));
        assert_eq!(o.replay.len(), 2);
    }
}
