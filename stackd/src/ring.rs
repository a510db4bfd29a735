//! Shared-memory frame rings for switch shortcuts (see `device.rs`).
//!
//! A shortcut is a `SOCK_SEQPACKET` socketpair between two stack daemons. Sending a 64 KiB
//! frame through it costs two kernel copies (into the socket, out of it) and a socket buffer
//! allocation. With a ring, each daemon makes one memfd ([`Ring::create`]), the sending side
//! of one direction, and passes it to its peer over the shortcut ([`SETUP_MAGIC`] message
//! with the fd): smoltcp then builds frames straight into the ring, the peer reads them from
//! the same pages, and the socket only carries one-byte doorbells, sent when the reader said
//! it is about to sleep (and when the writer waits for room).
//!
//! Layout: a 4 KiB header (`magic u64`, `size u64`; then, a cache line each: `tail u64`
//! (bytes published, written by the producer), `head u64` (bytes consumed, written by the
//! consumer), `rx_waiting u32` (consumer: "ring found empty, wake me"), `tx_waiting u32`
//! (producer: "ring full, wake me")), then `size` bytes of records: `len u32`, the frame,
//! padding to 8 bytes. A record never wraps: a `len` of [`WRAP`] says "continue at offset
//! 0". Wake-ups follow the usual pattern: set the waiting flag, full fence, check again; the
//! other side publishes, full fence, and if the flag is set clears it and rings.
//!
//! Trust: the peer is another stack daemon plugged into the same switch. What it writes into
//! the shared pages is checked for bounds before use (a bad length ends the shortcut), so it
//! can never make us read outside the mapping. Frames are parsed in place, though: a peer
//! that keeps rewriting a frame after publishing it can make it inconsistent while smoltcp
//! parses it (smoltcp's parsers are bounds-checked); that peer could send garbage frames
//! through the switch anyway.
//!
//! Cost: each ring is a 2 MiB memfd that both daemons map; pages are touched as frames pass,
//! so a daemon with busy shortcuts to N peers holds up to 4 MiB × N of shared memory
//! (`MAX_SHORTCUTS` in `device.rs` bounds N). An idle node has none.
//! Not done: more than one producer or consumer per ring (each daemon is single-threaded).

use ioth_common::sys::{Errno, Fd};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// Size of a ring's record area.
pub const RING_BYTES: usize = 2 << 20;
const HDR: usize = 4096;
const MAGIC: u64 = 0x4749_4e52_4854_4f49; // "IOTHRNG" + G, little-endian
/// Record length meaning "the next record is at offset 0".
pub const WRAP: u32 = u32::MAX;
/// First bytes of the message that passes a ring's memfd to the peer.
pub const SETUP_MAGIC: &[u8; 2] = b"SR";
/// The one-byte doorbell.
pub const DOORBELL: &[u8; 1] = b"D";

const O_TAIL: usize = 64;
const O_HEAD: usize = 128;
const O_RXW: usize = 192;
const O_TXW: usize = 256;

fn rec_len(len: usize) -> usize {
    (4 + len + 7) & !7
}

/// A shared mapping of a ring.
pub struct Ring {
    ptr: *mut u8,
    map_len: usize,
    size: usize,
    /// Producer: where the next record goes (== published tail). Consumer: next to read.
    pos: u64,
}

// The mapping is only used from the daemon's single thread.

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: ptr/map_len describe a mapping made by `map` and not used after this.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.map_len) };
    }
}

fn map(fd: RawFd, len: usize) -> Result<*mut u8, Errno> {
    // SAFETY: a new shared mapping of `len` bytes of `fd`; the kernel picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    Ok(p as *mut u8)
}

impl Ring {
    /// A new ring (this side produces): the memfd to pass to the peer, and the mapping.
    pub fn create() -> Result<(Fd, Ring), Errno> {
        let name = b"ioth-ring\0";
        // SAFETY: memfd_create with a NUL-terminated name and flags.
        let fd = unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: memfd_create succeeded: fd is a new descriptor that only we hold.
        let fd = unsafe { Fd::from_raw(fd as RawFd) };
        let map_len = HDR + RING_BYTES;
        // SAFETY: plain syscall on our own fd.
        if unsafe { libc::ftruncate(fd.raw(), map_len as libc::off_t) } < 0 {
            return Err(Errno::last());
        }
        let ptr = map(fd.raw(), map_len)?;
        let r = Ring {
            ptr,
            map_len,
            size: RING_BYTES,
            pos: 0,
        };
        r.u64_at(8).store(RING_BYTES as u64, Ordering::Relaxed);
        // The consumer has not read anything yet: the first frame rings.
        r.u32_at(O_RXW).store(1, Ordering::Relaxed);
        r.u64_at(0).store(MAGIC, Ordering::Release);
        Ok((fd, r))
    }

    /// Map a ring the peer made (this side consumes). Checks its size and header.
    pub fn open(fd: &Fd) -> Result<Ring, Errno> {
        let mut st: libc::stat = unsafe_zeroed_stat();
        // SAFETY: fstat into a local struct.
        if unsafe { libc::fstat(fd.raw(), &mut st) } < 0 {
            return Err(Errno::last());
        }
        let map_len = HDR + RING_BYTES;
        if st.st_size as usize != map_len {
            return Err(Errno::EPROTO);
        }
        let ptr = map(fd.raw(), map_len)?;
        let r = Ring {
            ptr,
            map_len,
            size: RING_BYTES,
            pos: 0,
        };
        if r.u64_at(0).load(Ordering::Acquire) != MAGIC
            || r.u64_at(8).load(Ordering::Relaxed) != RING_BYTES as u64
        {
            return Err(Errno::EPROTO);
        }
        Ok(r)
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        // SAFETY: off is one of the header offsets (8-aligned, inside the 4 KiB header of a
        // page-aligned mapping that lives as long as self); AtomicU64 has u64's layout.
        unsafe { &*(self.ptr.add(off) as *const AtomicU64) }
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        // SAFETY: as in u64_at.
        unsafe { &*(self.ptr.add(off) as *const AtomicU32) }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the record area starts HDR bytes into the mapping.
        unsafe { self.ptr.add(HDR) }
    }

    // ---- producer

    /// Room for a frame of `len` bytes: its offset in the record area (the length word
    /// goes there, the frame after it), and whether a wrap marker is needed first.
    fn place(&self, len: usize) -> Option<(usize, bool)> {
        let need = rec_len(len);
        if need > self.size {
            return None;
        }
        let head = self.u64_at(O_HEAD).load(Ordering::Acquire);
        let used = self.pos.wrapping_sub(head) as usize;
        if used > self.size {
            return None; // Peer wrote nonsense: behave as full.
        }
        let free = self.size - used;
        let off = (self.pos % self.size as u64) as usize;
        if off + need <= self.size {
            (need <= free).then_some((off, false))
        } else {
            (self.size - off + need <= free).then_some((0, true))
        }
    }

    /// A slot for a frame of `len` bytes, or `None` if the ring is full.
    pub fn reserve(&mut self, len: usize) -> Option<&mut [u8]> {
        let (off, _) = self.place(len)?;
        // SAFETY: place() checked that off + 4 + len fits in the record area, and that the
        // bytes are free (the consumer has moved past them and reads only published ones).
        Some(unsafe { std::slice::from_raw_parts_mut(self.data().add(off + 4), len) })
    }

    /// Publish the frame written into the slot [`Ring::reserve`] gave for `len` bytes;
    /// `true` if the consumer asked to be woken (send a doorbell).
    pub fn commit(&mut self, len: usize) -> bool {
        let Some((off, wrap)) = self.place(len) else {
            return false;
        };
        let cur = (self.pos % self.size as u64) as usize;
        // SAFETY: length words go at 8-aligned offsets inside the record area (place()).
        unsafe {
            if wrap {
                (self.data().add(cur) as *mut u32).write_volatile(WRAP);
                self.pos += (self.size - cur) as u64;
            }
            (self.data().add(off) as *mut u32).write_volatile(len as u32);
        }
        self.pos += rec_len(len) as u64;
        self.u64_at(O_TAIL).store(self.pos, Ordering::Release);
        fence(Ordering::SeqCst);
        self.u32_at(O_RXW).load(Ordering::Relaxed) == 1
            && self.u32_at(O_RXW).swap(0, Ordering::AcqRel) == 1
    }

    /// The ring was full: ask the consumer for a doorbell when it frees room. `true` if
    /// room appeared meanwhile (retry at once).
    pub fn wait_room(&self, len: usize) -> bool {
        self.u32_at(O_TXW).store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.place(len).is_some()
    }

    // ---- consumer

    /// The next frame, if one is published; `Err` if the peer wrote nonsense.
    pub fn peek(&mut self) -> Result<Option<&[u8]>, Errno> {
        loop {
            let tail = self.u64_at(O_TAIL).load(Ordering::Acquire);
            if tail == self.pos {
                return Ok(None);
            }
            if tail.wrapping_sub(self.pos) as usize > self.size {
                return Err(Errno::EPROTO);
            }
            let off = (self.pos % self.size as u64) as usize;
            if off + 4 > self.size {
                return Err(Errno::EPROTO);
            }
            // SAFETY: off is 8-aligned and off + 4 is inside the record area.
            let len = unsafe { (self.data().add(off) as *const u32).read_volatile() };
            if len == WRAP {
                self.pos += (self.size - off) as u64;
                continue;
            }
            let len = len as usize;
            if off + rec_len(len) > self.size || rec_len(len) > tail.wrapping_sub(self.pos) as usize
            {
                return Err(Errno::EPROTO);
            }
            // SAFETY: checked to lie inside the record area, published by the producer.
            return Ok(Some(unsafe {
                std::slice::from_raw_parts(self.data().add(off + 4), len)
            }));
        }
    }

    /// Done with the frame [`Ring::peek`] returned (`len` bytes); `true` if the producer
    /// waits for room (send a doorbell).
    pub fn release(&mut self, len: usize) -> bool {
        self.pos += rec_len(len) as u64;
        self.u64_at(O_HEAD).store(self.pos, Ordering::Release);
        fence(Ordering::SeqCst);
        self.u32_at(O_TXW).load(Ordering::Relaxed) == 1
            && self.u32_at(O_TXW).swap(0, Ordering::AcqRel) == 1
    }

    /// The ring looked empty: ask for a doorbell on the next frame. `true` if a frame
    /// arrived meanwhile (read on).
    pub fn wait_data(&self) -> bool {
        self.u32_at(O_RXW).store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.u64_at(O_TAIL).load(Ordering::Acquire) != self.pos
    }
}

/// A frame left in place in a consumer ring, between [`Ring::peek`] and [`Ring::release`].
///
/// It points into the ring's mapping: the holder must keep that [`Ring`] alive (not
/// dropped: moving it is fine) as long as it uses the frame. `device.rs` does so by keeping
/// the rings of ended shortcuts until no frame is held.
#[derive(Clone, Copy, Debug)]
pub struct Held {
    ptr: *const u8,
    len: usize,
}

impl Held {
    pub fn new(frame: &[u8]) -> Held {
        Held {
            ptr: frame.as_ptr(),
            len: frame.len(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: ptr/len came from a slice of a ring mapping that its holder keeps mapped
        // while it uses this value (see the type's documentation).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

fn unsafe_zeroed_stat() -> libc::stat {
    // SAFETY: libc::stat is plain old data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_go_through_in_order_with_wraps_and_back_pressure() {
        let (fd, mut tx) = Ring::create().unwrap();
        let mut rx = Ring::open(&fd).unwrap();
        assert!(rx.peek().unwrap().is_none());
        let mut sent = 0u32;
        let mut got = 0u32;
        // Frames of varying sizes, far more than the ring holds.
        while got < 2000 {
            let len = 14 + (sent as usize * 7919) % 65000;
            match tx.reserve(len) {
                Some(slot) => {
                    slot.fill(sent as u8);
                    slot[..4].copy_from_slice(&sent.to_le_bytes());
                    tx.commit(len);
                    sent += 1;
                }
                None => {
                    // Full: drain a few.
                    assert!(!tx.wait_room(len));
                    let mut woke = false;
                    for _ in 0..3 {
                        let Some(f) = rx.peek().unwrap() else { break };
                        assert_eq!(u32::from_le_bytes(f[..4].try_into().unwrap()), got);
                        let n = f.len();
                        woke |= rx.release(n);
                        got += 1;
                    }
                    assert!(woke, "the producer asked for room");
                }
            }
        }
        // Doorbells: the consumer asks, the next commit says so, once.
        while let Some(f) = rx.peek().unwrap() {
            let n = f.len();
            rx.release(n);
        }
        assert!(!rx.wait_data());
        assert!(tx.reserve(100).is_some());
        assert!(tx.commit(100));
        assert!(tx.reserve(100).is_some());
        assert!(!tx.commit(100));
    }

    #[test]
    fn nonsense_from_the_peer_is_an_error_not_a_crash() {
        let (fd, tx) = Ring::create().unwrap();
        let mut rx = Ring::open(&fd).unwrap();
        tx.u64_at(O_TAIL).store(64, Ordering::Release);
        // SAFETY: test: a bogus length word at offset 0 of the record area.
        unsafe { (tx.data() as *mut u32).write(1 << 30) };
        assert!(rx.peek().is_err());
        tx.u64_at(O_TAIL).store(u64::MAX, Ordering::Release);
        assert!(rx.peek().is_err());
    }
}
