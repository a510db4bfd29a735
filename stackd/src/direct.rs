//! Uplink shortcuts: the frames for a MAC that the switch learned behind one of its VXLAN
//! uplinks, sent by the daemon itself straight to that MAC's tunnel endpoint.
//!
//! Across hosts, every frame of a bulk transfer used to cross the sending host's switch:
//! into its ring, out again, cut into segments that fit the wire, sent with `UDP_SEGMENT`.
//! With an uplink shortcut the daemon does that last part itself, with a UDP socket of its
//! own: one process and two copies less on the path, and no wake-up of the switch per
//! frame. Frames from the tunnel still arrive through the switch (one UDP port, shared by
//! every node of the host).
//!
//! The switch offers one ([`vde::UplinkOffer`], only to a port that asked with
//! [`vde::NATIVE_FLAG_UPLINK`] and whose process is in the switch's network namespace) when
//! it forwards a unicast frame of ours to a MAC its uplink learned an endpoint for, under the
//! same conditions as a shortcut (no capture, no impairment, no block, no `--hub`,
//! `--no-shortcuts` or `--no-uplink-shortcuts`). The offer's descriptor is one end of a
//! socketpair; its first message is the [`vde::UplinkRoute`] (endpoint, source address,
//! VXLAN header, the wire's largest frame, TTL, the switch's namespace, checked again here),
//! and its end of file means the offer is over: the MAC moved (to another endpoint, or to a
//! port of the switch), the endpoint was forgotten, the uplink closed or reopened, a
//! capture or an impairment began, the switch went away. The socketpair is watched by its
//! own epoll token ([`Directs::check`]).
//!
//! What the switch did to such frames, the daemon does: a frame that fits the wire goes as
//! it is (checksums filled), a larger TCP frame is cut into segments that fit
//! ([`ioth_common::offload::segment_parts`], the switch's own code), anything else larger
//! (a big UDP datagram, to be fragmented) goes through the switch. A send the kernel cannot
//! take now (`EAGAIN`) sends that frame through the switch instead; any other error ends
//! the offer. The daemon counts these frames ([`Directs::info`]) and reports them per offer,
//! as for shortcuts; the switch adds the reports to its uplink's `OUT` counters and shows
//! them per offer (`/api/ports`, `/metrics`).
//!
//! Trust: the offer comes from the switch, which the daemon trusts with its frames anyway.
//! The daemon gains nothing it could not do with a UDP socket of its own.

#![deny(unsafe_code)]

use ioth_common::csum;
use ioth_common::offload;
use ioth_common::sys::{self, Fd};
use ioth_common::vde::{self, UplinkOffer, UplinkRoute};
use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};

/// Most uplink shortcuts a node keeps (further offers are refused).
pub const MAX_DIRECT: usize = 64;

/// One uplink shortcut.
pub struct Direct {
    pub id: u32,
    pub peer: [u8; 6],
    route: UplinkRoute,
    sock: UdpSocket,
    /// The offer's socket: its end of file ends the shortcut.
    fd: Fd,
    pub frames: u64,
    pub bytes: u64,
}

/// What became of a frame given to [`Directs::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Gone to the tunnel endpoint.
    Out,
    /// Not sent: it goes through the switch.
    Switch,
}

#[derive(Default)]
pub struct Directs {
    pub list: Vec<Direct>,
    /// Our network namespace, read at the first offer.
    netns: Option<Option<(u64, u64)>>,
    /// The epoll instance and token watching the offers' sockets.
    watch: Option<(RawFd, u64)>,
    pub made: u64,
    pub ended: u64,
    /// Offers not taken (another namespace, a malformed route, no socket, too many).
    pub refused: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames that went through the switch after all (`EAGAIN`, or too large and not TCP).
    pub via_switch: u64,
    hdrs: Vec<u8>,
    parts: Vec<(Range<usize>, Range<usize>)>,
}

/// A UDP socket for `route`: bound to its source address (port chosen by the kernel), with
/// its TTL and a large send buffer, non-blocking.
fn open_socket(route: &UplinkRoute) -> std::io::Result<UdpSocket> {
    let any: IpAddr = if route.to.is_ipv6() {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let sock = UdpSocket::bind(SocketAddr::new(route.local.unwrap_or(any), 0))?;
    sock.set_nonblocking(true)?;
    let fd = sock.as_raw_fd();
    let ttl = i32::from(route.ttl.max(1));
    if route.to.is_ipv6() {
        sys::setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, ttl)?;
    } else {
        sys::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_TTL, ttl)?;
    }
    let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
    Ok(sock)
}

impl Directs {
    /// The offers' sockets are watched by `ep` under `token` from now on.
    pub fn watch(&mut self, ep: RawFd, token: u64) {
        self.watch = Some((ep, token));
    }

    /// The shortcut for frames to `mac`, if any.
    pub fn find(&self, mac: &[u8]) -> Option<usize> {
        self.list.iter().position(|d| d.peer[..] == *mac)
    }

    /// Take an offer of the switch (or refuse it: its socket is closed, and the switch goes
    /// on sending those frames itself).
    pub fn accept(&mut self, o: UplinkOffer, fd: Fd) {
        match self.take(o, fd) {
            Ok(()) => self.made += 1,
            Err(why) => {
                log::debug!("uplink shortcut {}: refused: {why}", o.id);
                self.refused += 1;
            }
        }
    }

    fn take(&mut self, o: UplinkOffer, fd: Fd) -> Result<(), String> {
        let mut b = [0u8; vde::UPLINK_ROUTE_LEN + 1];
        let n = sys::recv(fd.raw(), &mut b, libc::MSG_DONTWAIT).map_err(|e| e.to_string())?;
        let route = UplinkRoute::parse(&b[..n]).map_err(|e| format!("route: {e}"))?;
        let ours = *self.netns.get_or_insert_with(|| vde::netns_of("self"));
        if ours != Some(route.netns) {
            return Err("the switch is in another network namespace".into());
        }
        if route.max_frame < 64 {
            return Err(format!("wire frame of {} bytes", route.max_frame));
        }
        if let Some(i) = self.find(&o.peer) {
            self.end(i);
        }
        if self.list.len() >= MAX_DIRECT {
            return Err("too many".into());
        }
        let sock = open_socket(&route).map_err(|e| format!("socket: {e}"))?;
        if let Some((ep, token)) = self.watch {
            let ev = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
            sys::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd.raw(), ev, token)
                .map_err(|e| format!("epoll: {e}"))?;
        }
        log::debug!(
            "uplink shortcut {} to {:02x?} at {}",
            o.id,
            o.peer,
            route.to
        );
        self.list.push(Direct {
            id: o.id,
            peer: o.peer,
            route,
            sock,
            fd,
            frames: 0,
            bytes: 0,
        });
        Ok(())
    }

    /// End shortcut `i` (its socket and the offer's close).
    fn end(&mut self, i: usize) {
        let d = self.list.swap_remove(i);
        if let Some((ep, _)) = self.watch {
            let _ = sys::epoll_ctl(ep, libc::EPOLL_CTL_DEL, d.fd.raw(), 0, 0);
        }
        log::debug!("uplink shortcut {} ended", d.id);
        self.ended += 1;
    }

    /// End every shortcut (the switch port is gone).
    pub fn clear(&mut self) {
        while !self.list.is_empty() {
            self.end(self.list.len() - 1);
        }
    }

    /// An offer's socket is readable: end the shortcuts whose offer is over (end of file, an
    /// error; anything the switch would send there is read and dropped).
    pub fn check(&mut self) {
        let mut i = 0;
        while i < self.list.len() {
            let mut b = [0u8; 64];
            match sys::recv(self.list[i].fd.raw(), &mut b, libc::MSG_DONTWAIT) {
                Err(e) if e.is_again() => i += 1,
                Ok(n) if n > 0 => {}
                _ => self.end(i),
            }
        }
    }

    /// Send `frame` (unicast to `self.list[i].peer`) to its tunnel endpoint. Checksums are
    /// filled here (the frame may be changed to that end).
    pub fn send(&mut self, i: usize, frame: &mut [u8]) -> Sent {
        let d = &mut self.list[i];
        let fd = d.sock.as_raw_fd();
        let (to, hdr, max) = (d.route.to, d.route.header, d.route.max_frame as usize);
        let r = if frame.len() <= max {
            csum::fill(frame);
            sys::send_udp_gso(fd, &[IoSlice::new(&hdr), IoSlice::new(frame)], 0, &to)
        } else {
            self.hdrs.clear();
            self.parts.clear();
            let Some(unit) =
                offload::segment_parts(frame, max, &hdr, &mut self.hdrs, &mut self.parts)
            else {
                self.via_switch += 1;
                return Sent::Switch;
            };
            let mut r = Ok(0);
            for (k, iov) in offload::send_groups(&self.hdrs, &self.parts, frame, unit).enumerate() {
                r = sys::send_udp_gso(fd, &iov, unit as u16, &to);
                if r.is_err() {
                    // A later group that fails is lost with the frame's tail (TCP sends it
                    // again); only a frame none of which went can take the switch instead.
                    if k > 0 {
                        r = Ok(0);
                    }
                    break;
                }
            }
            r
        };
        match r {
            Ok(_) => {
                let d = &mut self.list[i];
                d.frames += 1;
                d.bytes += frame.len() as u64;
                self.tx_frames += 1;
                self.tx_bytes += frame.len() as u64;
                Sent::Out
            }
            Err(e) if e.is_again() || e.0 == libc::ENOBUFS => {
                self.via_switch += 1;
                Sent::Switch
            }
            Err(e) => {
                log::debug!("uplink shortcut {}: send to {to}: {e}", self.list[i].id);
                self.end(i);
                self.via_switch += 1;
                Sent::Switch
            }
        }
    }

    /// One line for the node's info.
    pub fn info(&self) -> String {
        format!(
            "uplink_shortcuts={} uplink_shortcuts_made={} uplink_shortcuts_ended={} \
             uplink_shortcuts_refused={} uplink_shortcut_tx={} uplink_shortcut_bytes={} \
             uplink_shortcut_via_switch={}\n",
            self.list.len(),
            self.made,
            self.ended,
            self.refused,
            self.tx_frames,
            self.tx_bytes,
            self.via_switch
        )
    }
}
