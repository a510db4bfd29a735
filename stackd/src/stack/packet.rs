//! Packet sockets (`AF_PACKET`, `SOCK_DGRAM` or `SOCK_RAW`) on the node's one interface
//! (`vde0`, index 1), as DHCP clients such as busybox `udhcpc` use them: they read the
//! server's answer before the node has the address it is sent to, and send from no address.
//!
//! Receive: every frame the link brings (not the node's own hairpinned ones) that is for the
//! node's MAC (`PACKET_HOST`), broadcast or multicast (and, once `PACKET_MR_PROMISC` was
//! asked, for another MAC: `PACKET_OTHERHOST`) goes to each packet socket whose protocol
//! matches its EtherType (`ETH_P_ALL`: every one; protocol 0: none, as on Linux until a
//! `bind` names one), before smoltcp sees it. A `SOCK_DGRAM` socket gets the frame without
//! its Ethernet header, a `SOCK_RAW` one whole; each behind an [`LlHeader`] with the
//! `sockaddr_ll` of its source. Checksums are filled in first: nodes on a native port leave
//! them to the switch, and a shortcut's frames never met it. A socket whose application end
//! is full loses the frame, as a full receive queue does on Linux.
//!
//! Send: a `SOCK_RAW` socket's message is the whole frame; a `SOCK_DGRAM` one's gets an
//! Ethernet header for the destination of the send (`sll_addr`, `sll_protocol` or else the
//! socket's protocol), from the node's MAC. Frames go to the switch as they are.
//!
//! Only the node's owner (and root) may open one, as only a process with `CAP_NET_RAW` may
//! on Linux: a user let in with `--allow-uid` must not read the owner's frames.
//!
//! Not done: the outgoing frames of the node itself (`PACKET_OUTGOING`), `SO_ATTACH_FILTER`,
//! the `mmap` rings (`PACKET_RX_RING`, `PACKET_TX_RING`, as libpcap uses them), VLAN tags
//! in `PACKET_AUXDATA`.

use super::*;
use ioth_common::ctl::{LlHeader, SockaddrLl};

/// The node's interface index.
const IFINDEX: i32 = ioth_common::rtnl::IFINDEX as i32;

pub(super) const ETH_P_ALL: u16 = 0x0003;
const ARPHRD_ETHER: u16 = 1;
const PACKET_HOST: u8 = 0;
const PACKET_BROADCAST: u8 = 1;
const PACKET_MULTICAST: u8 = 2;
const PACKET_OTHERHOST: u8 = 3;
const PACKET_MR_PROMISC: u16 = 1;

/// A packet socket's own state.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Packet {
    /// `SOCK_RAW` (the whole frame) rather than `SOCK_DGRAM`.
    pub(super) raw: bool,
    /// The EtherType it takes, in host order (0: none; [`ETH_P_ALL`]: all).
    pub(super) proto: u16,
    /// The interface it was bound to (0: any).
    pub(super) ifindex: i32,
    /// `PACKET_MR_PROMISC` memberships.
    pub(super) promisc: u32,
}

impl Packet {
    /// From the arguments of `socket(AF_PACKET, ty, protocol)` (`protocol` in network order).
    pub(super) fn new(ty: i32, protocol: i32) -> Packet {
        Packet {
            raw: ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) == libc::SOCK_RAW,
            proto: u16::from_be(protocol as u16),
            ..Packet::default()
        }
    }
}

/// The packet type of a frame with destination `dst` at a node with MAC `own`.
fn pkttype(dst: &[u8], own: &[u8; 6]) -> u8 {
    if dst == own {
        PACKET_HOST
    } else if dst == [0xff; 6] {
        PACKET_BROADCAST
    } else if dst[0] & 1 != 0 {
        PACKET_MULTICAST
    } else {
        PACKET_OTHERHOST
    }
}

impl<D: Link> Stack<D> {
    /// Hand the frame of `n` bytes the link just gave to the packet sockets that take it.
    pub(super) fn packet_tap(&mut self, n: usize) {
        if self.packets.is_empty() {
            return;
        }
        let own = self.net.cfg.mac.0;
        let f = self.net.dev.frame(n);
        if f.len() < 14 {
            return;
        }
        let ty = pkttype(&f[0..6], &own);
        let ethertype = u16::from_be_bytes([f[12], f[13]]);
        let mut frame = Vec::new();
        self.packets
            .retain(|id| self.socks.get(id).is_some_and(|s| s.kind == Kind::Packet));
        for id in &self.packets {
            let Some(s) = self.socks.get(id) else {
                continue;
            };
            let p = s.dg.pk;
            if p.proto == 0 || (p.proto != ETH_P_ALL && p.proto != ethertype) {
                continue;
            }
            if ty == PACKET_OTHERHOST && p.promisc == 0 {
                continue;
            }
            if frame.is_empty() {
                frame = self.net.dev.frame(n).to_vec();
                ioth_common::csum::fill(&mut frame);
            }
            let mut src = [0u8; 8];
            src[..6].copy_from_slice(&frame[6..12]);
            let sll = SockaddrLl {
                protocol: u16::from_ne_bytes(ethertype.to_be_bytes()),
                ifindex: IFINDEX,
                hatype: ARPHRD_ETHER,
                pkttype: ty,
                halen: 6,
                addr: src,
            };
            let data = if p.raw { &frame[..] } else { &frame[14..] };
            let hdr = LlHeader {
                sll: sll.to_bytes(),
                len: data.len() as u32,
                flags: 0,
            }
            .encode();
            let iov = [IoSlice::new(&hdr), IoSlice::new(data)];
            // A full receive queue loses the frame, as on Linux.
            let _ = sys::sendmsg(s.dmn.raw(), &iov, &[], libc::MSG_DONTWAIT);
        }
    }
}

/// `bind` of a packet socket (`ctl::SO_IOTH_PACKET_BIND`): the interface must be the node's
/// (or 0, any), a protocol given replaces the socket's.
pub(super) fn bind(p: &mut Packet, val: &[u8]) -> Result<(), Errno> {
    let a = SockaddrLl::parse(val)?;
    if a.ifindex != 0 && a.ifindex != IFINDEX {
        return Err(Errno(libc::ENODEV));
    }
    if a.protocol != 0 {
        p.proto = u16::from_be_bytes(a.protocol.to_ne_bytes());
    }
    p.ifindex = a.ifindex;
    Ok(())
}

/// `PACKET_ADD_MEMBERSHIP`/`PACKET_DROP_MEMBERSHIP` (`struct packet_mreq`: ifindex, type,
/// address length, address): multicast memberships need nothing (every multicast frame is
/// taken), promiscuous ones are counted.
pub(super) fn membership(p: &mut Packet, add: bool, val: &[u8]) -> Result<(), Errno> {
    if val.len() < 8 {
        return Err(Errno::EINVAL);
    }
    let ifindex = i32::from_ne_bytes([val[0], val[1], val[2], val[3]]);
    if ifindex != IFINDEX {
        return Err(Errno(libc::ENODEV));
    }
    if u16::from_ne_bytes([val[4], val[5]]) == PACKET_MR_PROMISC {
        p.promisc = if add {
            p.promisc.saturating_add(1)
        } else {
            p.promisc.saturating_sub(1)
        };
    }
    Ok(())
}

impl<D: Link> Net<D> {
    /// Send what the application wrote on an `IPPROTO_RAW` socket: whole IPv4 packets (the
    /// destination of the send is not looked at, as on Linux). smoltcp sends them through a
    /// raw socket for any protocol that exists only while packets wait: such a socket takes
    /// every incoming packet (it would keep smoltcp from answering a datagram to a closed
    /// port), so a program that opens one only for its `ioctl`s (busybox `udhcpc`) changes
    /// nothing.
    pub(super) fn pump_hdrincl(&mut self, s: &mut Sock) {
        let fd = s.dmn.raw();
        if let Some(h) = s.dg.h
            && self.set.get::<smoltcp::socket::raw::Socket>(h).send_queue() == 0
        {
            self.set.remove(h);
            s.dg.h = None;
        }
        while s.rd {
            let Some(n) = app_message(fd, &mut self.scratch, &mut s.rd) else {
                break;
            };
            if n < DgramHeader::LEN + 20 || DgramHeader::decode(&self.scratch[..n]).is_err() {
                continue;
            }
            let h = *s.dg.h.get_or_insert_with(|| {
                use smoltcp::socket::raw;
                let none = raw::PacketBuffer::new(Vec::new(), Vec::new());
                let tx = raw::PacketBuffer::new(
                    vec![raw::PacketMetadata::EMPTY; 64],
                    vec![0u8; 128 * 1024],
                );
                self.set.add(raw::Socket::new(
                    Some(smoltcp::wire::IpVersion::Ipv4),
                    None,
                    none,
                    tx,
                ))
            });
            let r = self.set.get_mut::<smoltcp::socket::raw::Socket>(h);
            if !r.can_send() {
                // (Visited again when the queue drains: the socket's send waker.)
                break;
            }
            let _ = r.send_slice(&self.scratch[DgramHeader::LEN..n]);
        }
    }

    /// `getsockname` of a packet socket (`ctl::SO_IOTH_PACKET_NAME`).
    pub(super) fn packet_name(&self, s: &Sock) -> Vec<u8> {
        let mut addr = [0u8; 8];
        addr[..6].copy_from_slice(&self.cfg.mac.0);
        SockaddrLl {
            protocol: u16::from_ne_bytes(s.dg.pk.proto.to_be_bytes()),
            ifindex: s.dg.pk.ifindex,
            hatype: ARPHRD_ETHER,
            pkttype: 0,
            halen: 6,
            addr,
        }
        .to_bytes()
        .to_vec()
    }
    /// Send what the application wrote on a packet socket.
    pub(super) fn pump_packet(&mut self, s: &mut Sock) {
        let fd = s.dmn.raw();
        let own = self.cfg.mac.0;
        while s.rd {
            let Some(n) = app_message(fd, &mut self.scratch[14..], &mut s.rd) else {
                break;
            };
            let Ok(hdr) = LlHeader::decode(&self.scratch[14..14 + n]) else {
                continue;
            };
            let data = 14 + LlHeader::LEN..14 + n;
            if s.dg.pk.raw {
                if data.len() >= 14 {
                    self.dev.send_now(&self.scratch[data]);
                }
                continue;
            }
            // SOCK_DGRAM: an Ethernet header for the destination, right in front of the data.
            let Ok(to) = SockaddrLl::parse(&hdr.sll) else {
                continue;
            };
            if to.halen != 6 {
                continue;
            }
            let proto = if to.protocol != 0 {
                u16::from_be_bytes(to.protocol.to_ne_bytes())
            } else {
                s.dg.pk.proto
            };
            let at = LlHeader::LEN;
            self.scratch[at..at + 6].copy_from_slice(&to.addr[..6]);
            self.scratch[at + 6..at + 12].copy_from_slice(&own);
            self.scratch[at + 12..at + 14].copy_from_slice(&proto.to_be_bytes());
            self.dev.send_now(&self.scratch[at..data.end]);
        }
    }
}
