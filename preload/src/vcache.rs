//! What [`crate::emu::virt`] found out about a socket named as a kernel listener, kept by fd
//! number and confirmed by inode.
//!
//! A socket named `names::socket_name` is known virtual from one `getsockname`. A kernel
//! listener and the connections accepted from it carry the listener's name, and telling them
//! apart takes a `getpeername` too (which also gives a connection's id). nginx corks and
//! uncorks each response (`tcp_nopush`): two `setsockopt`s per request, each of which asked
//! both questions. Here the answer is kept per fd number, with the socket's device and inode;
//! it counts only after an `fstat` shows the same socket at that number (one system call
//! instead of two). Nothing needs a close hook: an fd number closed and reused for anything
//! else fails the check, the slot is cleared, and the questions are asked again. (`accept`
//! clears the slot of the number it returns: no check is spent on a connection closed
//! before.)
//!
//! The table is direct-mapped ([`SLOTS`] slots by fd number), each slot a seqlock of plain
//! atomics: no lock, no allocation, safe in a signal handler; a reader that meets a write
//! under way, or a writer that meets another, just does without.

#![deny(unsafe_code)]

use crate::emu::Virt;
use ioth_common::sys;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Slots (fd numbers modulo this).
pub const SLOTS: usize = 4096;

struct Slot {
    /// Even: stable; odd: being written.
    seq: AtomicU64,
    /// fd + 1 (0: empty).
    fd: AtomicU64,
    dev: AtomicU64,
    ino: AtomicU64,
    node: AtomicU64,
    id: AtomicU64,
    kl: AtomicU64,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        seq: AtomicU64::new(0),
        fd: AtomicU64::new(0),
        dev: AtomicU64::new(0),
        ino: AtomicU64::new(0),
        node: AtomicU64::new(0),
        id: AtomicU64::new(0),
        kl: AtomicU64::new(0),
    }
}; SLOTS];

fn slot(fd: RawFd) -> &'static Slot {
    &TABLE[fd as u32 as usize % SLOTS]
}

/// The slot's content if it is about `fd` and was read whole: ((dev, ino), virt).
fn read(s: &Slot, fd: RawFd) -> Option<((u64, u64), Virt)> {
    let seq = s.seq.load(Ordering::Acquire);
    if seq & 1 != 0 || s.fd.load(Ordering::Relaxed) != fd as u64 + 1 {
        return None;
    }
    let id = (s.dev.load(Ordering::Relaxed), s.ino.load(Ordering::Relaxed));
    let v = Virt {
        node: s.node.load(Ordering::Relaxed),
        id: s.id.load(Ordering::Relaxed),
        kl: s.kl.load(Ordering::Relaxed) != 0,
    };
    fence(Ordering::Acquire);
    (s.seq.load(Ordering::Relaxed) == seq).then_some((id, v))
}

/// Write the slot (`None`: clear it), unless another writer is at it.
fn write(s: &Slot, fd: RawFd, what: Option<((u64, u64), Virt)>) {
    let seq = s.seq.load(Ordering::Relaxed);
    if seq & 1 != 0
        || s.seq
            .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    fence(Ordering::Release);
    match what {
        Some(((dev, ino), v)) => {
            s.fd.store(fd as u64 + 1, Ordering::Relaxed);
            s.dev.store(dev, Ordering::Relaxed);
            s.ino.store(ino, Ordering::Relaxed);
            s.node.store(v.node, Ordering::Relaxed);
            s.id.store(v.id, Ordering::Relaxed);
            s.kl.store(v.kl as u64, Ordering::Relaxed);
        }
        None => s.fd.store(0, Ordering::Relaxed),
    }
    s.seq.store(seq + 2, Ordering::Release);
}

/// What was found about `fd`, if the socket it was found about is still there (one `fstat`
/// when the slot is about `fd`; none otherwise).
pub fn get(fd: RawFd) -> Option<Virt> {
    let s = slot(fd);
    let (id, v) = read(s, fd)?;
    if sys::fstat_id(fd) == Ok(id) {
        return Some(v);
    }
    write(s, fd, None);
    None
}

/// `fd` is a new descriptor (just accepted): whatever the slot says about its number is
/// about a socket closed since (no system call; the check would cost one).
pub fn forget(fd: RawFd) {
    let s = slot(fd);
    if s.fd.load(Ordering::Relaxed) == fd as u64 + 1 {
        write(s, fd, None);
    }
}

/// Keep what was found about `fd` (one `fstat`).
pub fn put(fd: RawFd, v: Virt) {
    if let Ok(id) = sys::fstat_id(fd) {
        write(slot(fd), fd, Some((id, v)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_counts_only_for_the_socket_it_was_found_about() {
        let (a, b) = sys::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC)
            .expect("socketpair");
        let v = Virt {
            node: 7,
            id: 9,
            kl: true,
        };
        assert_eq!(get(a.raw()), None);
        put(a.raw(), v);
        assert_eq!(get(a.raw()), Some(v));
        // Another fd, the same slot's neighbour: nothing.
        assert_eq!(get(b.raw()), None);
        // The number now holds another socket: the answer is dropped.
        let fd = a.raw();
        sys::dup3(b.raw(), fd, libc::O_CLOEXEC).expect("dup3");
        assert_eq!(get(fd), None);
        assert_eq!(read(slot(fd), fd), None);
        put(fd, v);
        forget(fd);
        assert_eq!(read(slot(fd), fd), None);
        std::mem::forget(a);
        sys::close(fd);
    }
}
