//! The sockets that have work: a poll visits those, not the whole table.
//!
//! A socket has work when its daemon end had an event ([`super::Stack::app_event`]), when a
//! control request touched it, when it was just made, or when smoltcp woke it: every smoltcp
//! socket of ours carries a `Waker` of its [`Sock`](super::Sock) (smoltcp's `async`
//! feature), which smoltcp wakes when data arrives, room frees up in the transmit buffer or
//! the state changes (handshake done, FIN, RST, timeouts). A waker fires once: a visit ends
//! by registering it again ([`super::Net::rearm`]). Connects under way are visited at every
//! poll (their timeouts), and the daemon visits every socket once a second in case a
//! wake-up was missed; the test harness does not, so that a missed one shows.

use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

/// Ids of sockets with work, pushed by wakers and events; drained by a poll.
#[derive(Default)]
pub(crate) struct Work {
    ready: Arc<Mutex<Vec<u64>>>,
}

impl Work {
    /// A waker that marks socket `id`.
    pub(crate) fn waker(&self, id: u64) -> Waker {
        Waker::from(Arc::new(SockWaker {
            id,
            ready: self.ready.clone(),
        }))
    }

    /// Mark socket `id`.
    pub(crate) fn add(&self, id: u64) {
        if let Ok(mut v) = self.ready.lock() {
            v.push(id);
        }
    }

    /// Whether any socket is marked.
    pub(crate) fn pending(&self) -> bool {
        self.ready.lock().is_ok_and(|v| !v.is_empty())
    }

    /// Move the marked ids (each once, in order) into `out`.
    pub(crate) fn take(&self, out: &mut Vec<u64>) {
        if let Ok(mut v) = self.ready.lock() {
            out.append(&mut v);
        }
        out.sort_unstable();
        out.dedup();
    }
}

struct SockWaker {
    id: u64,
    ready: Arc<Mutex<Vec<u64>>>,
}

impl Wake for SockWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Ok(mut v) = self.ready.lock() {
            v.push(self.id);
        }
    }
}
