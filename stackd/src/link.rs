//! What a [`crate::stack::Stack`] needs from the link it sits on, beyond smoltcp's `Device`.
//!
//! The stack reads frames one at a time and looks at each before smoltcp does (a SYN to a
//! full listener is dropped there, a frame that claims a loopback address is a martian), so
//! a link hands out a frame ([`Link::recv`]), shows it ([`Link::frame`]), and gives it to
//! smoltcp only once staged ([`Link::stage`]): `Device::receive` returns nothing else.
//!
//! Hairpin: smoltcp has no loopback. A link sends frames for the node itself (its own MAC,
//! ARP requests and neighbour solicitations for its own addresses: `crate::frame::is_for_self`)
//! back to the node through a queue that [`Link::recv`] reads first.
//!
//! Two links implement it: `crate::device::SwitchDevice` (a switch port with its
//! shortcuts, in the daemon) and the in-memory link of the test harness
//! (`crate::harness`).

#![deny(unsafe_code)]

use ioth_common::sys::{Errno, Fd};
use smoltcp::phy::Device;
use std::net::IpAddr;
use std::os::fd::RawFd;

/// What [`Link::recv`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    /// A frame of this many bytes (see [`Link::frame`]); `hairpin`: one of our own.
    Frame { len: usize, hairpin: bool },
    /// Nothing now: the link's owner says when there is more (an event).
    Empty,
    /// The link is gone (the switch closed the port or failed): frames are dropped until
    /// its owner plugs the node in again.
    Down,
}

pub trait Link: Device {
    /// The next frame: hairpinned frames first, then the wire.
    fn recv(&mut self) -> Recv;
    /// The frame of `len` bytes [`Link::recv`] just returned.
    fn frame(&self, len: usize) -> &[u8];
    /// Hand the frame of `len` bytes to the next `Device::receive` (`None`: hand nothing).
    fn stage(&mut self, len: Option<usize>);
    /// Queue a frame of the node's own making for the node itself.
    fn hairpin(&mut self, frame: Vec<u8>);
    /// Whether hairpinned frames wait.
    fn has_hairpin(&self) -> bool;
    /// Send a frame built outside smoltcp (an RST, a neighbour solicitation) now, or drop it.
    fn send_now(&mut self, frame: &[u8]);
    /// The node's addresses (hairpin decisions).
    fn set_own(&mut self, own: Vec<IpAddr>);
    /// Whether a frame waits for room on the wire (ingress pauses meanwhile).
    fn is_blocked(&self) -> bool;
    /// Try to send the waiting frame; `true` when none waits any more.
    fn flush(&mut self) -> bool;
    /// Whether an event will come when the waiting frame can go (else retry soon).
    fn wakes_when_writable(&self) -> bool;
    /// An epoll event for one of the link's sockets (not only for a doorbell): something
    /// may be there to read.
    fn socket_event(&mut self) {}
    /// Lines `key=value\n` for the node's info (port, counters).
    fn info(&self) -> String;
    /// Report the node's figures (`(metric, key, value)`, [`ioth_common::vde::stat`]) to
    /// whoever shows them (the switch's `/metrics`); called about once a second.
    fn report_stats(&mut self, _stats: &[(u8, u32, u64)]) {}

    // TCP cut-through (`crate::cut`, `stack/cut.rs`): links without shortcuts have none.

    /// The shortcut whose peer node has address `ip` (heard from through it), if that
    /// shortcut may carry cut-through connections.
    fn cut_route(&self, _ip: IpAddr) -> Option<u32> {
        None
    }
    /// The shortcuts that may carry cut-through connections.
    fn cut_peers(&self) -> Vec<u32> {
        Vec::new()
    }
    /// Whether the link knows which peer has address `ip` (else a connect may wait for the
    /// neighbour's answer before it chooses between cut-through and TCP).
    fn cut_known(&self, _ip: IpAddr) -> bool {
        true
    }
    /// A number that changes whenever what [`Link::cut_hosts`] and [`Link::cut_route`]
    /// answer may have (peers heard from, shortcuts made).
    fn cut_gen(&self) -> u64 {
        0
    }
    /// The addresses of the peers heard from ([`Link::cut_known`]), each with the shortcut
    /// to it if that may carry cut-through connections.
    fn cut_hosts(&self) -> Vec<(IpAddr, Option<u32>)> {
        Vec::new()
    }
    /// Send a cut-through message with descriptors on shortcut `sc`, without blocking.
    fn cut_send(&mut self, _sc: u32, _msg: &[u8], _fds: &[RawFd]) -> Result<(), Errno> {
        Err(Errno(libc::ENOTSUP))
    }
    /// The next cut-through message received: its shortcut, itself, its descriptor.
    fn cut_recv(&mut self) -> Option<(u32, crate::cut::Msg, Option<Fd>)> {
        None
    }
    /// A connection was cut through over shortcut `sc` (counted for the switch).
    fn cut_made(&mut self, _sc: u32) {}
    /// Shortcuts that ended since the last call.
    fn cut_ended(&mut self) -> Vec<u32> {
        Vec::new()
    }
}
