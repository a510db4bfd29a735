//! `TCP_CORK` of virtual TCP sockets, kept in the process.
//!
//! nginx (`tcp_nopush on`) corks and uncorks around every response, so a `setsockopt` of
//! `TCP_CORK` must cost no more than the kernel's one system call would. Cork never changes
//! the bytes, only where segments end: the daemon sends what the application wrote as soon
//! as it has it, and on a cut-through connection (a kernel socketpair end to end) there are
//! no segments at all. So the option is never sent to the daemon; what `getsockopt` must
//! answer is kept here, by socket id (from the `getsockname` that told the hook the fd is
//! virtual), so that every descriptor of the socket in this process (`dup`, `fcntl`,
//! `SCM_RIGHTS`) sees the same setting:
//!
//! * whether an fd number holds a stream socket (`TCP_CORK` on a datagram socket is an error):
//!   one `AtomicU64` per fd number below [`SLOTS`], the id of the socket it was last seen
//!   holding (made by `socket` or `accept`, or checked with `SO_TYPE` once); an entry counts
//!   only while it names the socket now at that number, so nothing needs a close hook;
//! * which sockets are corked: a small set of ids ([`CORKED`] slots, 8-way), from which
//!   uncorking removes the id.
//!
//! Kept in the process, the setting follows `fork` (the child gets a copy), not `exec`: there
//! a socket starts uncorked, as `getsockopt` then reports. A socket shared by two processes
//! that each cork it reports each one's own setting; and if more sockets are corked at once
//! than the set holds (thousands), the extra ones read back as uncorked. Neither changes a
//! byte sent.

#![deny(unsafe_code)]

use ioth_common::sys;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// Fd numbers below this remember that they are stream sockets; above it, `SO_TYPE` is asked
/// every time.
pub const SLOTS: usize = 1 << 16;

static STREAMS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

/// Slots of the set of corked socket ids (0: free).
pub const CORKED: usize = 4096;
const WAYS: usize = 8;

static CORK_SET: [AtomicU64; CORKED] = [const { AtomicU64::new(0) }; CORKED];

/// Ids are odd (`ioth_common::ctl`), so never 0, the empty slot.
fn window(id: u64) -> impl Iterator<Item = &'static AtomicU64> {
    // Ids are random bits: their low bits spread well enough (bit 0 is always set).
    let start = ((id >> 1) as usize) % CORKED;
    (0..WAYS).map(move |i| &CORK_SET[(start + i) % CORKED])
}

fn stream_slot(fd: RawFd) -> Option<&'static AtomicU64> {
    STREAMS.get(usize::try_from(fd).ok()?)
}

/// `fd` is the stream socket `id` (made by `socket` or `accept` just now).
pub fn stream(fd: RawFd, id: u64) {
    if let Some(s) = stream_slot(fd) {
        s.store(id, Ordering::Relaxed);
    }
}

/// Whether the virtual socket `id` at `fd` is a stream one (known, or asked once with
/// `SO_TYPE`), and then its cork setting.
pub fn get(fd: RawFd, id: u64) -> Option<bool> {
    let known = stream_slot(fd).is_some_and(|s| s.load(Ordering::Relaxed) == id);
    if !known {
        if sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) != Ok(libc::SOCK_STREAM) {
            return None;
        }
        stream(fd, id);
    }
    Some(window(id).any(|s| s.load(Ordering::Relaxed) == id))
}

/// Record the cork setting of the stream socket `id` (see [`get`]).
pub fn set(id: u64, on: bool) {
    if window(id).any(|s| s.load(Ordering::Relaxed) == id) {
        if !on {
            for s in window(id) {
                let _ = s.compare_exchange(id, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
        return;
    }
    if on {
        // A full window: not remembered (see the module docs).
        let _ = window(id).any(|s| {
            s.compare_exchange(0, id, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cork_follows_the_socket_not_the_fd_number() {
        let (a, _b) = sys::socketpair(libc::AF_UNIX, libc::SOCK_STREAM).unwrap();
        let fd = a.raw();
        let (x, y) = (0x0800_0000_0000_0003, 0x0800_0000_0000_0005);
        assert_eq!(get(fd, x), Some(false));
        set(x, true);
        assert_eq!(get(fd, x), Some(true));
        // Another socket now at the same number starts uncorked; the first keeps its cork.
        assert_eq!(get(fd, y), Some(false));
        assert_eq!(get(fd, x), Some(true));
        set(x, false);
        assert_eq!(get(fd, x), Some(false));
        // Datagram sockets have no TCP_CORK.
        let (d, _e) = sys::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET).unwrap();
        assert_eq!(get(d.raw(), 7), None);
        assert_eq!(get(-1, 7), None);
    }

    #[test]
    fn a_full_window_forgets_only_the_extra_socket() {
        // Ids that all start at the same slot.
        let ids: Vec<u64> = (0..=WAYS as u64)
            .map(|k| (((k * CORKED as u64) + 77) << 1) | 1 | (1 << 40))
            .collect();
        for &id in &ids {
            set(id, true);
        }
        let corked = |id: u64| window(id).any(|s| s.load(Ordering::Relaxed) == id);
        assert!(ids[..WAYS].iter().all(|&id| corked(id)));
        assert!(!corked(ids[WAYS]));
        set(ids[0], false);
        set(ids[WAYS], true);
        assert!(corked(ids[WAYS]) && !corked(ids[0]));
        for &id in &ids {
            set(id, false);
        }
        assert!(ids.iter().all(|&id| !corked(id)));
    }
}
