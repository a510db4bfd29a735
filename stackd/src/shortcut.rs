//! A switch shortcut: a direct `SOCK_SEQPACKET` socket to another stack's port, with a
//! shared-memory ring each way once both sides made theirs (see [`crate::device`] for how
//! frames choose between shortcuts and the switch, and [`crate::ring`] for the rings).

#![deny(unsafe_code)]

use crate::ring::{self, Half, RingError, RxRing, TxRing};
use ioth_common::sys::{self, Errno, Fd};
use std::os::fd::RawFd;

/// A direct socket to another stack's port (see the module documentation).
pub(crate) struct Shortcut {
    pub(crate) id: u32,
    pub(crate) peer: [u8; 6],
    /// The switch lets this shortcut carry cut-through connections.
    pub(crate) cut: bool,
    pub(crate) fd: Fd,
    /// Our half of the rings (`ring.rs`), sent to the peer, until the peer's half arrives.
    pub(crate) half: Option<Half>,
    /// Our ring towards the peer, once both halves met; until then frames go through the
    /// socket.
    pub(crate) tx_ring: Option<TxRing>,
    /// The peer's ring towards us.
    pub(crate) rx_ring: Option<RxRing>,
    /// Our doorbell: an eventfd, sent with our half, in our epoll (edge-triggered, never
    /// read: `ring.rs`).
    pub(crate) bell: Option<Fd>,
    /// The peer's doorbell, once its half came with one (checked to be an eventfd); until
    /// then, and for a peer that sent none, doorbells go on the socket.
    pub(crate) peer_bell: Option<Fd>,
    /// Connections we cut through over it, and how many of them the switch was told of
    /// ([`ioth_common::vde::CutReport`]).
    pub(crate) cut_made: u32,
    pub(crate) cut_reported: u32,
    /// Frames and bytes sent over it (reported to the switch, [`ioth_common::vde::stat`]).
    pub(crate) sent_frames: u64,
    pub(crate) sent_bytes: u64,
}

/// Why a shortcut ended.
#[derive(Debug)]
pub(crate) enum Broken {
    /// EOF or an error on its socket: revoked, or the peer is gone.
    Io(Errno),
    /// The peer broke the ring protocol (see [`crate::ring`]).
    Ring(RingError),
}

impl From<Errno> for Broken {
    fn from(e: Errno) -> Broken {
        Broken::Io(e)
    }
}

impl From<RingError> for Broken {
    fn from(e: RingError) -> Broken {
        Broken::Ring(e)
    }
}

impl Shortcut {
    /// Tell the peer there is something for it (a frame, or room).
    pub(crate) fn ring(&self) -> Result<(), Errno> {
        if let Some(b) = &self.peer_bell {
            // A counter the peer may have filled (`EAGAIN`) only delays its own wake-ups.
            let _ = sys::write(b.raw(), &1u64.to_ne_bytes());
            return Ok(());
        }
        match send_frame(self.fd.raw(), ring::DOORBELL) {
            Ok(_) => Ok(()),
            // Full of doorbells already: it will wake up.
            Err(e) if e.is_again() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Put `frame` into our ring: `Ok(true)` sent, `Ok(false)` full (and the consumer asked
    /// to make room), `Err` the shortcut is dead. Only with a `tx_ring`.
    pub(crate) fn ring_send(&mut self, frame: &[u8]) -> Result<bool, Broken> {
        let Some(r) = &mut self.tx_ring else {
            return Err(Broken::Io(Errno::EPIPE));
        };
        loop {
            if let Some(slot) = r.reserve(frame.len())? {
                slot.copy_from_slice(frame);
                if r.commit(frame.len())? {
                    self.ring()?;
                }
                return Ok(true);
            }
            if !r.wait_room(frame.len())? {
                return Ok(false);
            }
        }
    }

    /// Send one frame to the peer: ring or socket. `Ok(false)`: no room now (the caller
    /// sends it through the switch instead: a shortcut never blocks the node, so two nodes
    /// that both wait for room in each other's shortcut cannot stall each other).
    pub(crate) fn send(&mut self, frame: &[u8]) -> Result<bool, Broken> {
        if self.tx_ring.is_some() {
            return self.ring_send(frame);
        }
        match send_frame(self.fd.raw(), frame) {
            Ok(_) => Ok(true),
            Err(e) if e.is_again() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// The node's shortcuts and their counters.
#[derive(Default)]
pub struct Shortcuts {
    pub(crate) list: Vec<Shortcut>,
    pub tx_frames: u64,
    pub rx_frames: u64,
    pub made: u64,
    pub ended: u64,
    /// Frames that went through a shared-memory ring (a part of `tx_frames`).
    pub ring_tx: u64,
    /// Frames sent through the switch because the shortcut was full.
    pub full: u64,
    /// Shortcuts ended because the peer broke the ring protocol: a ring it passed was
    /// refused (not a sealed memfd, wrong size) or it wrote a malformed record or `head`.
    pub malformed: u64,
    /// The shortcut the last frame went to, if it has a ring: smoltcp builds the next
    /// frame straight into that ring, on the bet that it goes there too.
    pub(crate) bet: Option<usize>,
    /// Ids of the shortcuts that ended since the link last said (cut-through connects
    /// waiting for an answer on one of them fail).
    pub(crate) ended_ids: Vec<u32>,
}

impl Shortcuts {
    pub(crate) fn find(&self, mac: &[u8]) -> Option<usize> {
        if self.list.is_empty() {
            return None;
        }
        self.list.iter().position(|s| s.peer[..] == *mac)
    }

    /// End shortcut `i`: out of epoll, and shut down so that the peer falls back too (the
    /// switch holds a copy of the socket, so closing alone would not tell it).
    pub(crate) fn end(&mut self, i: usize, watch: Option<(RawFd, u64)>) {
        self.bet = None;
        let s = self.list.swap_remove(i);
        if let Some((ep, _)) = watch {
            let _ = sys::epoll_ctl(ep, libc::EPOLL_CTL_DEL, s.fd.raw(), 0, 0);
            // The peer holds a copy of our bell: closing ours would not take it out.
            if let Some(b) = &s.bell {
                let _ = sys::epoll_ctl(ep, libc::EPOLL_CTL_DEL, b.raw(), 0, 0);
            }
        }
        let _ = sys::shutdown(s.fd.raw(), libc::SHUT_RDWR);
        self.ended += 1;
        if s.cut {
            self.ended_ids.push(s.id);
        }
        log::debug!("shortcut {} ended", s.id);
    }

    /// End shortcut `i` for `why`: a broken ring is counted and logged.
    pub(crate) fn fail(&mut self, i: usize, watch: Option<(RawFd, u64)>, why: Broken) {
        match why {
            Broken::Ring(e) => {
                self.malformed += 1;
                log::info!("shortcut {}: peer's ring: {e}", self.list[i].id);
            }
            Broken::Io(e) => log::debug!("shortcut {}: {e}", self.list[i].id),
        }
        self.end(i, watch);
    }

    pub(crate) fn clear(&mut self, watch: Option<(RawFd, u64)>) {
        while !self.list.is_empty() {
            self.end(self.list.len() - 1, watch);
        }
    }
}

/// Send one frame on a shortcut without blocking.
pub(crate) fn send_frame(fd: RawFd, frame: &[u8]) -> Result<usize, Errno> {
    sys::send(fd, frame, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
}
