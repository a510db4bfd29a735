//! What this process knows of the TCP sockets it made that have not connected yet, for a
//! connect with no round trip to the daemon (`emu::connect_direct`): the socket's family,
//! its `TCP_NODELAY`, and that nothing the daemon would apply to a cut-through connection
//! was asked for (a `bind`, a send buffer size). Every option still goes to the daemon as
//! before; this only says when the daemon's answer is known in advance.
//!
//! Kept by socket id in a small set ([`SLOTS`] slots, 8-way), as `crate::cork` keeps its
//! settings. An id missing from it (evicted, or made in another process image) only means
//! the connect asks the daemon, as it always did. A `fork`ed child gets a copy: if only one
//! of the two binds a shared, unconnected socket, the other may still connect it directly,
//! from an ephemeral port (an unlikely program: documented in DESIGN.md).

#![deny(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

const SLOTS: usize = 4096;
const WAYS: usize = 8;

static IDS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static INFO: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

const INET6: u64 = 1;
const NODELAY: u64 = 2;

/// A plain fresh socket: its family and `TCP_NODELAY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plain {
    pub inet6: bool,
    pub nodelay: bool,
}

fn window(id: u64) -> impl Iterator<Item = usize> {
    // Ids are random bits (bit 0 always set).
    let start = ((id >> 1) as usize) % SLOTS;
    (0..WAYS).map(move |i| (start + i) % SLOTS)
}

fn find(id: u64) -> Option<usize> {
    window(id).find(|&i| IDS[i].load(Ordering::Relaxed) == id)
}

/// Socket `id` was just made (`AF_INET6` if `inet6`).
pub fn made(id: u64, inet6: bool) {
    if id == 0 {
        return;
    }
    let slot = window(id)
        .find(|&i| {
            IDS[i]
                .compare_exchange(0, id, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        })
        // All taken (sockets closed before they connected): the oldest guess goes.
        .unwrap_or_else(|| {
            let i = window(id).nth((id >> 13) as usize % WAYS).unwrap_or(0);
            IDS[i].store(id, Ordering::Relaxed);
            i
        });
    INFO[slot].store(if inet6 { INET6 } else { 0 }, Ordering::Relaxed);
}

/// Socket `id` is no longer plain (bound, send buffer set), or connected.
pub fn forget(id: u64) {
    if let Some(i) = find(id) {
        let _ = IDS[i].compare_exchange(id, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// `TCP_NODELAY` was set on socket `id` (if it is still plain and fresh).
pub fn nodelay(id: u64, on: bool) {
    if let Some(i) = find(id) {
        let v = INFO[i].load(Ordering::Relaxed);
        INFO[i].store(
            if on { v | NODELAY } else { v & !NODELAY },
            Ordering::Relaxed,
        );
    }
}

/// Socket `id`, if it is plain and fresh.
pub fn get(id: u64) -> Option<Plain> {
    let i = find(id)?;
    let v = INFO[i].load(Ordering::Relaxed);
    Some(Plain {
        inet6: v & INET6 != 0,
        nodelay: v & NODELAY != 0,
    })
}

/// [`get`], and [`forget`] it: socket `id` is connecting.
pub fn take(id: u64) -> Option<Plain> {
    let p = get(id);
    forget(id);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_plain_until_forgotten_and_keeps_its_nodelay() {
        let id = 0x4000_0000_1234_5679;
        assert_eq!(get(id), None);
        made(id, true);
        assert_eq!(
            get(id),
            Some(Plain {
                inet6: true,
                nodelay: false
            })
        );
        nodelay(id, true);
        assert_eq!(get(id).map(|p| p.nodelay), Some(true));
        forget(id);
        assert_eq!(get(id), None);
        // Nothing to set on a forgotten socket.
        nodelay(id, true);
        assert_eq!(get(id), None);
    }

    #[test]
    fn a_full_window_evicts_one_and_never_answers_wrongly() {
        let base = 0x4000_0000_0000_0001u64;
        // Ids that share one window.
        let ids: Vec<u64> = (0..WAYS as u64 + 3)
            .map(|k| base + ((k * SLOTS as u64) << 1))
            .collect();
        for &id in &ids {
            made(id, false);
        }
        let known = ids.iter().filter(|&&id| get(id).is_some()).count();
        assert!(known <= WAYS);
        assert!(get(*ids.last().unwrap()).is_some());
        for &id in &ids {
            forget(id);
        }
        assert!(ids.iter().all(|&id| get(id).is_none()));
    }
}
