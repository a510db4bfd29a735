//! Packet sockets (`AF_PACKET`) of a node: the daemon's side is `stackd/src/stack/packet.rs`.
//!
//! A packet socket is a virtual datagram socket ([`crate::dgram`]) whose messages carry an
//! [`LlHeader`] (a `struct sockaddr_ll`) instead of a [`DgramHeader`](ioth_common::ctl::DgramHeader):
//! the hooks put the destination of a send there and take the source of a receive from it.
//! `bind` and `getsockname` go to the daemon as options of ioth's own
//! ([`ctl::SO_IOTH_PACKET_BIND`], [`ctl::SO_IOTH_PACKET_NAME`]). `PACKET_AUXDATA` gives each
//! received frame its `struct tpacket_auxdata` (status `TP_STATUS_USER`, the checksums being
//! valid: the daemon fills them in; lengths; no VLAN).

#![deny(unsafe_code)]

use crate::emu::{self, Control, Virt};
use ioth_common::ctl::{self, LlHeader};
use ioth_common::sys::Errno;
use std::os::fd::RawFd;

/// `TP_STATUS_USER | TP_STATUS_CSUM_VALID`.
const TP_STATUS: u32 = 1 | (1 << 7);

/// Whether the bytes of an address passed to `bind`/`connect`/`sendto` are a `sockaddr_ll`.
pub fn is_ll(b: &[u8]) -> bool {
    b.len() >= 2 && u16::from_ne_bytes([b[0], b[1]]) == libc::AF_PACKET as u16
}

/// `bind` of packet socket `v` to the `sockaddr_ll` bytes `b`.
pub fn bind(c: &dyn Control, v: Virt, fd: RawFd, b: &[u8]) -> Result<(), Errno> {
    match emu::setsockopt(c, v, fd, libc::SOL_PACKET, ctl::SO_IOTH_PACKET_BIND, b) {
        // Not a packet socket: an inet socket refuses a link-layer address.
        Err(e) if e.0 == libc::ENOPROTOOPT => Err(Errno(libc::EAFNOSUPPORT)),
        r => r,
    }
}

/// `getsockname` of packet socket `v`: its `sockaddr_ll`.
pub fn name(c: &dyn Control, v: Virt, fd: RawFd) -> Result<Vec<u8>, Errno> {
    emu::getsockopt(
        c,
        v,
        fd,
        libc::SOL_PACKET,
        ctl::SO_IOTH_PACKET_NAME,
        ctl::SOCKADDR_LL_LEN,
    )
}

/// The header of a send of `len` bytes to `dest` (the caller's address bytes; `None`: none).
pub fn send_header(dest: Option<&[u8]>, len: usize) -> Result<[u8; LlHeader::LEN], Errno> {
    let mut sll = [0u8; ctl::SOCKADDR_LL_LEN];
    if let Some(b) = dest {
        // As packet_snd: the family, and room for the address length it gives.
        let a = ctl::SockaddrLl::parse(b)?;
        if b.len() < 12 + a.halen as usize {
            return Err(Errno::EINVAL);
        }
        if a.ifindex != ioth_common::rtnl::IFINDEX as i32 {
            return Err(Errno(libc::ENXIO));
        }
        sll = a.to_bytes();
    }
    if len > 65535 {
        return Err(Errno::EMSGSIZE);
    }
    Ok(LlHeader {
        sll,
        len: len as u32,
        flags: 0,
    }
    .encode())
}

/// The `PACKET_AUXDATA` control message of a frame of `full` bytes of which `copied` were
/// delivered.
pub fn auxdata(full: usize, copied: usize) -> Vec<u8> {
    let mut d = Vec::with_capacity(20);
    d.extend_from_slice(&TP_STATUS.to_ne_bytes());
    d.extend_from_slice(&(full as u32).to_ne_bytes());
    d.extend_from_slice(&(copied as u32).to_ne_bytes());
    d.extend_from_slice(&0u16.to_ne_bytes()); // tp_mac
    d.extend_from_slice(&0u16.to_ne_bytes()); // tp_net
    d.extend_from_slice(&0u16.to_ne_bytes()); // tp_vlan_tci
    d.extend_from_slice(&0u16.to_ne_bytes()); // tp_vlan_tpid
    d
}
