//! Shared-memory frame rings for switch shortcuts (see `device.rs`).
//!
//! A shortcut is a `SOCK_SEQPACKET` socketpair between two stack daemons. Sending a 64 KiB
//! frame through it costs two kernel copies (into the socket, out of it) and a socket buffer
//! allocation. With rings, each direction of the shortcut is a ring in shared memory: the
//! sender (producer) builds frames straight into it, the receiver (consumer) copies each one
//! out, and the socket only carries one-byte doorbells, sent when the other side said it is
//! about to sleep (the consumer on an empty ring, the producer on a full one).
//!
//! Layout. A ring is two memfds, each written by one side only:
//! * the *data* memfd, made and written by the producer: a 4 KiB header (`magic u64`,
//!   `size u64`; then, a cache line each, `tail u64`: bytes published, and `tx_wait u64`:
//!   bumped when the producer found the ring full), then `size` bytes of records: `len u32`,
//!   the frame, padding to 8 bytes. A record never wraps: a `len` of [`WRAP`] says "continue
//!   at offset 0", and stands only where the next record would not have fit.
//! * the *ack* memfd, made and written by the consumer: 4 KiB (`magic u64`; then, a cache
//!   line each, `head u64`: bytes consumed, and `rx_wait u64`: bumped when the consumer
//!   found the ring empty).
//!
//! Wake-ups: the side about to sleep bumps its wait counter, full fence, checks again; the
//! other side publishes (`tail` or `head`), full fence, and rings a doorbell if the counter
//! differs from the last value it rang for. Counters rather than flags, so that no field has
//! two writers.
//!
//! Doorbells between two daemons (a shortcut) go to an eventfd instead, when the peer sent one
//! with its half (a third descriptor): an 8-byte `write` that its epoll (edge-triggered)
//! reports, and that nobody ever reads: no socket buffer to fill and drain, no `recvmsg` per
//! doorbell. A descriptor that is not an eventfd is refused (the shortcut ends). The switch's
//! rings keep the socket's one-byte doorbells.
//!
//! Setup: on a new shortcut each daemon makes its [`Half`]: the data memfd of the ring it
//! will fill and the ack memfd of the ring it will drain, both sealed, and sends the two
//! descriptors to the peer ([`SETUP_MAGIC`]). With the peer's half, [`Half::join`] gives the
//! [`TxRing`] (our data, the peer's ack) and the [`RxRing`] (the peer's data, our ack).
//!
//! Trust: the peer is whatever process got the other end of the shortcut from the switch:
//! any process allowed to open the switch's `native` socket, possibly another user's, and it
//! may be hostile. Whatever it does, it must not crash us or make us read anything but its
//! frames:
//! * No page the peer can shrink. We map a peer's memfd only if `F_GET_SEALS` shows
//!   `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL` (a call that fails on anything but a memfd)
//!   and `fstat` gives exactly the size we expect, so no access to the mapping can fault
//!   (SIGBUS). Our own memfds carry the same seals.
//! * No page of ours the peer can write. Ours are also sealed with `F_SEAL_FUTURE_WRITE` once
//!   we mapped them: the peer can map them read-only only, and neither `write`, `fallocate`
//!   nor truncate them. We map the peer's memfds read-only.
//! * Every value we read from the peer's pages is checked before use: `tail` (8-aligned, not
//!   behind what we consumed, at most a ring ahead), `head` (8-aligned, not behind what it
//!   was, not ahead of what we published), each record (length at least [`MIN_FRAME`] and
//!   at most the consumer's largest frame, inside the ring and inside what was published;
//!   [`WRAP`] only where the next record would not have fit). The first violation is a
//!   [`RingError`], which sticks to the ring and ends the shortcut (`device.rs`): no bogus
//!   record is ever skipped. The wait counters may hold anything (at worst a doorbell more).
//! * Nothing is parsed in shared memory. [`RxRing::pop`] copies each frame into the caller's
//!   buffer and gives the room back before anyone looks at the frame, so a peer rewriting a
//!   published frame changes at most what we copied, never a frame between smoltcp's checks
//!   and its use. Every access to a peer's pages is an atomic load of 8 bytes with `Relaxed`
//!   ordering (plus fences where the protocol needs them), which Rust defines on read-only
//!   mappings too; no Rust reference to a peer's plain bytes is ever made.
//!
//! The peer can still send garbage frames (as it could through the switch), stop draining
//! its ring (ours fills and frames take the switch: `shortcut_full`), or ring needless
//! doorbells. smoltcp still builds our frames straight into our own data ring: only we write
//! it.
//!
//! Cost: each ring is a 2 MiB memfd (plus a page) that both daemons map; pages are touched
//! as frames pass, so a daemon with busy shortcuts to N peers holds up to 4 MiB × N of shared
//! memory (`MAX_SHORTCUTS` in `device.rs` bounds N). An idle node has none. Each received
//! frame is copied once more than a frame read in place would be.
//! Not done: more than one producer or consumer per ring (each daemon is single-threaded).

use crate::sys::{self, Errno, Fd};
use crate::vde::MIN_FRAME;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Size of a ring's record area.
pub const RING_BYTES: usize = 2 << 20;
/// Size of a data memfd's header.
const HDR: usize = 4096;
/// Size of an ack memfd.
const ACK_BYTES: usize = 4096;
const DATA_MAGIC: u64 = u64::from_le_bytes(*b"IOTHRNG2");
const ACK_MAGIC: u64 = u64::from_le_bytes(*b"IOTHACK2");
/// Record length meaning "the next record is at offset 0".
pub const WRAP: u32 = u32::MAX;
/// The message that passes a [`Half`]'s two memfds (data, ack) to the peer.
pub const SETUP_MAGIC: &[u8; 2] = b"SR";
/// The one-byte doorbell.
pub const DOORBELL: &[u8; 1] = b"D";

// Data header fields (byte offsets).
const D_MAGIC: usize = 0;
const D_SIZE: usize = 8;
const D_TAIL: usize = 64;
const D_TXW: usize = 128;
// Ack fields.
const A_MAGIC: usize = 0;
const A_HEAD: usize = 64;
const A_RXW: usize = 128;

/// Seals a peer's memfd must have before we map it.
const SEALS_NEEDED: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
/// Seals of our own memfds.
const SEALS_OURS: i32 = SEALS_NEEDED | libc::F_SEAL_FUTURE_WRITE;

fn rec_len(len: usize) -> usize {
    (4 + len + 7) & !7
}

/// Why a ring cannot be made or used. Any of these ends the shortcut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// A system call failed (making, sealing or mapping a memfd).
    Sys(Errno),
    /// The peer's descriptor is not a memfd sealed against shrinking, growing and new seals.
    Unsealed,
    /// The peer's memfd, or its header, does not have the size of a ring.
    Size,
    /// The peer's memfd does not start with the magic number.
    Magic,
    /// The producer's `tail` is unaligned, behind what we consumed or more than a ring ahead.
    Tail,
    /// The consumer's `head` is unaligned, went back, or is ahead of what we published.
    Head,
    /// A record's length is out of bounds (too short or long a frame, past the ring's end or
    /// past what was published).
    Length(u32),
    /// A [`WRAP`] marker where the next record would have fit, or with nothing after it.
    Wrap,
    /// The peer sent a second setup.
    Setup,
    /// The peer's doorbell descriptor is not an eventfd.
    Bell,
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingError::Sys(e) => write!(f, "{e}"),
            RingError::Unsealed => f.write_str("not a sealed memfd"),
            RingError::Size => f.write_str("wrong size"),
            RingError::Magic => f.write_str("bad magic"),
            RingError::Tail => f.write_str("bad tail"),
            RingError::Head => f.write_str("bad head"),
            RingError::Length(n) => write!(f, "bad record length {n}"),
            RingError::Wrap => f.write_str("misplaced wrap marker"),
            RingError::Setup => f.write_str("second setup"),
            RingError::Bell => f.write_str("doorbell not an eventfd"),
        }
    }
}

impl From<Errno> for RingError {
    fn from(e: Errno) -> RingError {
        RingError::Sys(e)
    }
}

/// A shared mapping of a whole memfd, unmapped on drop.
pub(crate) struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe a mapping made by `Mapping::new` and not used after this.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

impl Mapping {
    /// Map the first `len` bytes of `fd`, shared; writable only if `write`.
    pub(crate) fn new(fd: RawFd, len: usize, write: bool) -> Result<Mapping, Errno> {
        let prot = if write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a new shared mapping of `len` bytes of `fd`; the kernel picks the address,
        // so no existing memory is affected.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(Mapping {
            ptr: p as *mut u8,
            len,
        })
    }

    /// The 8-byte word at byte offset `off` (8-aligned, inside the mapping).
    ///
    /// On a peer's (read-only) mapping only `load(Relaxed)` may be used.
    pub(crate) fn word(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: off is 8-aligned and inside the mapping (checked above), which is
        // page-aligned and lives as long as self; AtomicU64 has u64's size and alignment,
        // and its interior mutability allows the other process's writes. No &mut reference
        // covers these bytes: the only mutable references into a mapping are the record
        // slots of `TxRing::reserve`, which lie in the record area, never in a header word.
        unsafe { &*(self.ptr.add(off) as *const AtomicU64) }
    }

    /// The mapping from byte `off` (8-aligned) to its end, as 8-byte words: for a peer's
    /// read-only mapping, read with `load(Relaxed)` only.
    fn words_from(&self, off: usize) -> &[AtomicU64] {
        assert!(off.is_multiple_of(8) && off <= self.len);
        // SAFETY: as in `word`, for every 8-byte word from off to the end of the mapping.
        // Used only on a peer's mapping, which is read-only: nothing in this process holds a
        // mutable reference into it.
        unsafe {
            std::slice::from_raw_parts(self.ptr.add(off) as *const AtomicU64, (self.len - off) / 8)
        }
    }
}

/// A new memfd of `len` bytes that can be sealed.
pub(crate) fn memfd(name: &std::ffi::CStr, len: usize) -> Result<Fd, Errno> {
    let fd = sys::memfd(name, libc::MFD_CLOEXEC)?;
    // SAFETY: plain syscall on our own fd.
    if unsafe { libc::ftruncate(fd.raw(), len as libc::off_t) } < 0 {
        return Err(Errno::last());
    }
    Ok(fd)
}

/// Seal our memfd (already mapped writable by us) for good: see the module documentation.
pub(crate) fn seal(fd: &Fd) -> Result<(), Errno> {
    sys::fcntl(fd.raw(), libc::F_ADD_SEALS, SEALS_OURS as libc::c_long).map(|_| ())
}

/// Check a peer's descriptor before mapping it: a memfd of exactly `len` bytes that can
/// neither shrink nor grow, for good.
pub(crate) fn check_peer(fd: &Fd, len: usize) -> Result<(), RingError> {
    let seals = sys::fcntl(fd.raw(), libc::F_GET_SEALS, 0).map_err(|_| RingError::Unsealed)?;
    if seals & SEALS_NEEDED != SEALS_NEEDED {
        return Err(RingError::Unsealed);
    }
    // SAFETY: libc::stat is plain old data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat into a local struct.
    if unsafe { libc::fstat(fd.raw(), &mut st) } < 0 {
        return Err(Errno::last().into());
    }
    if st.st_size < 0 || st.st_size as u64 != len as u64 {
        return Err(RingError::Size);
    }
    Ok(())
}

/// Our side of a shortcut's rings, before the peer's arrives: the data memfd of the ring we
/// fill and the ack memfd of the ring we drain, both mapped and sealed.
pub struct Half {
    data_fd: Fd,
    ack_fd: Fd,
    data: Mapping,
    ack: Mapping,
}

impl Half {
    /// Make our half (see the module documentation).
    pub fn create() -> Result<Half, RingError> {
        let data_fd = memfd(c"ioth-ring", HDR + RING_BYTES)?;
        let ack_fd = memfd(c"ioth-ring-ack", ACK_BYTES)?;
        let data = Mapping::new(data_fd.raw(), HDR + RING_BYTES, true)?;
        let ack = Mapping::new(ack_fd.raw(), ACK_BYTES, true)?;
        data.word(D_SIZE)
            .store(RING_BYTES as u64, Ordering::Relaxed);
        data.word(D_MAGIC).store(DATA_MAGIC, Ordering::Relaxed);
        // The first frame rings: the producer starts having rung for 0.
        ack.word(A_RXW).store(1, Ordering::Relaxed);
        ack.word(A_MAGIC).store(ACK_MAGIC, Ordering::Relaxed);
        seal(&data_fd)?;
        seal(&ack_fd)?;
        Ok(Half {
            data_fd,
            ack_fd,
            data,
            ack,
        })
    }

    /// The descriptors to send to the peer: data, ack.
    pub fn fds(&self) -> [RawFd; 2] {
        [self.data_fd.raw(), self.ack_fd.raw()]
    }

    /// Make our half and send it on `fd` ([`send_setup`]); if either fails, frames go on
    /// through the socket.
    pub fn offer(fd: RawFd) -> Result<Half, RingError> {
        Half::offer_with_bell(fd, None)
    }

    /// [`Half::offer`] with the eventfd our doorbells are to go to, if there is one.
    pub fn offer_with_bell(fd: RawFd, bell: Option<RawFd>) -> Result<Half, RingError> {
        let h = Half::create()?;
        let [data, ack] = h.fds();
        send_setup(fd, &[[data, ack].as_slice(), bell.as_slice()].concat())?;
        Ok(h)
    }

    /// Copies of [`Half::fds`], to send after [`Half::join`] (which closes ours): a side that
    /// answers a peer's half sends its own only once the peer's proved good.
    pub fn dup_fds(&self) -> Result<[Fd; 2], Errno> {
        Ok([self.data_fd.dup_cloexec(0)?, self.ack_fd.dup_cloexec(0)?])
    }

    /// With the peer's half (its data and ack memfds, checked here), the rings: ours towards
    /// the peer and the peer's towards us, whose frames may be up to `max_frame` bytes.
    pub fn join(
        self,
        peer_data: &Fd,
        peer_ack: &Fd,
        max_frame: usize,
    ) -> Result<(TxRing, RxRing), RingError> {
        check_peer(peer_data, HDR + RING_BYTES)?;
        check_peer(peer_ack, ACK_BYTES)?;
        let pdata = Mapping::new(peer_data.raw(), HDR + RING_BYTES, false)?;
        let pack = Mapping::new(peer_ack.raw(), ACK_BYTES, false)?;
        fence(Ordering::Acquire);
        if pdata.word(D_MAGIC).load(Ordering::Relaxed) != DATA_MAGIC
            || pack.word(A_MAGIC).load(Ordering::Relaxed) != ACK_MAGIC
        {
            return Err(RingError::Magic);
        }
        if pdata.word(D_SIZE).load(Ordering::Relaxed) != RING_BYTES as u64 {
            return Err(RingError::Size);
        }
        let max_frame = max_frame.min(RING_BYTES - 8);
        let tx = TxRing {
            data: self.data,
            ack: pack,
            size: RING_BYTES,
            pos: 0,
            head: 0,
            rung: 0,
            waits: 0,
            broken: None,
        };
        let rx = RxRing {
            data: pdata,
            ack: self.ack,
            size: RING_BYTES,
            pos: 0,
            max_frame,
            rung: 0,
            waits: 1,
            broken: None,
        };
        Ok((tx, rx))
    }
}

/// Send a half's descriptors on `fd`, as [`SETUP_MAGIC`]: data, ack, and between two
/// daemons the eventfd their doorbells go to (see the module documentation).
pub fn send_setup(fd: RawFd, fds: &[RawFd]) -> Result<usize, Errno> {
    sys::sendmsg(
        fd,
        &[std::io::IoSlice::new(SETUP_MAGIC)],
        fds,
        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
    )
}

/// Ring the doorbell on `fd`: there is a frame, or room, for the peer. A full socket means
/// the peer has doorbells to read anyway.
pub fn doorbell(fd: RawFd) {
    let _ = sys::send(fd, DOORBELL, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
}

/// Our ring towards the peer: we write the records, `tail` and `tx_wait`; the peer's `head`
/// and `rx_wait` come from its ack memfd, mapped read-only.
pub struct TxRing {
    data: Mapping,
    ack: Mapping,
    size: usize,
    /// Where the next record goes (== published tail).
    pos: u64,
    /// The consumer's `head` as last read (and checked).
    head: u64,
    /// The consumer's `rx_wait` we last rang a doorbell for.
    rung: u64,
    /// Our `tx_wait`.
    waits: u64,
    /// The first error: the ring is dead.
    broken: Option<RingError>,
}

impl TxRing {
    fn fail(&mut self, e: RingError) -> RingError {
        *self.broken.get_or_insert(e)
    }

    /// The consumer's `head`, checked: 8-aligned, not behind the last one, not ahead of
    /// what we published.
    fn load_head(&mut self) -> Result<u64, RingError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        let h = self.ack.word(A_HEAD).load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if !h.is_multiple_of(8) || h.wrapping_sub(self.head) > self.pos.wrapping_sub(self.head) {
            return Err(self.fail(RingError::Head));
        }
        self.head = h;
        Ok(h)
    }

    /// Room for a frame of `len` bytes: its offset in the record area (the length word
    /// goes there, the frame after it), and whether a wrap marker is needed first.
    fn place(&mut self, len: usize) -> Result<Option<(usize, bool)>, RingError> {
        let head = self.load_head()?;
        let need = rec_len(len);
        if need > self.size || len >= WRAP as usize {
            return Ok(None);
        }
        // We never publish more than a ring ahead of a head we checked, and head only
        // moves forward: this is at most `size`.
        let used = self.pos.wrapping_sub(head) as usize;
        let free = self.size - used;
        let off = (self.pos % self.size as u64) as usize;
        Ok(if off + need <= self.size {
            (need <= free).then_some((off, false))
        } else {
            (self.size - off + need <= free).then_some((0, true))
        })
    }

    /// A slot for a frame of `len` bytes, or `None` if the ring is full.
    pub fn reserve(&mut self, len: usize) -> Result<Option<&mut [u8]>, RingError> {
        let Some((off, _)) = self.place(len)? else {
            return Ok(None);
        };
        // SAFETY: place() checked that off + 4 + len lies in the record area of our data
        // mapping (writable, and no other reference covers the record area: header words
        // lie before it), and that the consumer has moved past these bytes. The peer can
        // only read them (sealed F_SEAL_FUTURE_WRITE, mapped read-only on its side).
        Ok(Some(unsafe {
            std::slice::from_raw_parts_mut(self.data.ptr.add(HDR + off + 4), len)
        }))
    }

    fn put_len(&mut self, off: usize, len: u32) {
        assert!(off.is_multiple_of(8) && off + 4 <= self.size);
        // SAFETY: off is 8-aligned and inside the record area of our writable data mapping
        // (checked above), and no reference covers the length word (slots start after it).
        unsafe { (self.data.ptr.add(HDR + off) as *mut u32).write(len) };
    }

    /// Publish the frame written into the slot [`TxRing::reserve`] gave for `len` bytes;
    /// `true` if the consumer asked to be woken (send a doorbell).
    pub fn commit(&mut self, len: usize) -> Result<bool, RingError> {
        let Some((off, wrap)) = self.place(len)? else {
            return Ok(false);
        };
        if wrap {
            let cur = (self.pos % self.size as u64) as usize;
            self.put_len(cur, WRAP);
            self.pos += (self.size - cur) as u64;
        }
        self.put_len(off, len as u32);
        self.pos += rec_len(len) as u64;
        self.data.word(D_TAIL).store(self.pos, Ordering::Release);
        fence(Ordering::SeqCst);
        let w = self.ack.word(A_RXW).load(Ordering::Relaxed);
        Ok(w != std::mem::replace(&mut self.rung, w))
    }

    /// Copy `frame` into the ring and publish it, ringing the doorbell on `bell` if the
    /// consumer asked; `Ok(false)` if the ring is full (the consumer was asked to ring when it
    /// frees room).
    pub fn put(&mut self, frame: &[u8], bell: RawFd) -> Result<bool, RingError> {
        loop {
            if let Some(slot) = self.reserve(frame.len())? {
                slot.copy_from_slice(frame);
                if self.commit(frame.len())? {
                    doorbell(bell);
                }
                return Ok(true);
            }
            if !self.wait_room(frame.len())? {
                return Ok(false);
            }
        }
    }

    /// The ring was full: ask the consumer for a doorbell when it frees room. `true` if
    /// room appeared meanwhile (retry at once).
    pub fn wait_room(&mut self, len: usize) -> Result<bool, RingError> {
        self.waits += 1;
        self.data.word(D_TXW).store(self.waits, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Ok(self.place(len)?.is_some())
    }
}

/// The peer's ring towards us: it writes the records, `tail` and `tx_wait` (mapped
/// read-only here); we write `head` and `rx_wait` in our ack memfd.
pub struct RxRing {
    data: Mapping,
    ack: Mapping,
    size: usize,
    /// Next byte to read (== our head).
    pos: u64,
    /// Largest frame accepted.
    max_frame: usize,
    /// The producer's `tx_wait` we last rang a doorbell for.
    rung: u64,
    /// Our `rx_wait`.
    waits: u64,
    /// The first error: the ring is dead.
    broken: Option<RingError>,
}

impl RxRing {
    fn fail(&mut self, e: RingError) -> RingError {
        *self.broken.get_or_insert(e)
    }

    /// Copy the next frame into `buf` and give its room back: `(length, whether the
    /// producer waits for room: send a doorbell)`; `None` if nothing is published; `Err`
    /// (for good) on the first malformed record. `buf` must hold the largest frame and 8
    /// bytes more.
    pub fn pop(&mut self, buf: &mut [u8]) -> Result<Option<(usize, bool)>, RingError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        match self.next(buf.len()) {
            Ok(None) => Ok(None),
            Ok(Some((skip, off, len, first))) => {
                let n = len as usize;
                let words = rec_len(n) / 8;
                let w = off / 8;
                // The record's first word is the length and the frame's first 4 bytes.
                buf[..4].copy_from_slice(&first.to_ne_bytes()[4..]);
                let src = &self.data.words_from(HDR)[w + 1..w + words];
                let dst = &mut buf[4..4 + src.len() * 8];
                // Four words at a time: measurably faster than one at a time (loads can overlap).
                let mut d4 = dst.chunks_exact_mut(32);
                let mut s4 = src.chunks_exact(4);
                for (d, s) in (&mut d4).zip(&mut s4) {
                    let v = [0, 1, 2, 3].map(|i| s[i].load(Ordering::Relaxed).to_ne_bytes());
                    d.copy_from_slice(v.as_flattened());
                }
                for (d, s) in d4.into_remainder().chunks_exact_mut(8).zip(s4.remainder()) {
                    d.copy_from_slice(&s.load(Ordering::Relaxed).to_ne_bytes());
                }
                self.pos += (skip + rec_len(n)) as u64;
                self.ack.word(A_HEAD).store(self.pos, Ordering::Release);
                fence(Ordering::SeqCst);
                let w = self.data.word(D_TXW).load(Ordering::Relaxed);
                Ok(Some((n, w != std::mem::replace(&mut self.rung, w))))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Where the next record is, checked: `(bytes skipped by a wrap marker, its offset, its
    /// length, its first 8-byte word)`.
    fn next(&self, room: usize) -> Result<Option<(usize, usize, u32, u64)>, RingError> {
        let tail = self.data.word(D_TAIL).load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let avail = tail.wrapping_sub(self.pos);
        if avail == 0 {
            return Ok(None);
        }
        if avail > self.size as u64 || !tail.is_multiple_of(8) {
            return Err(RingError::Tail);
        }
        let avail = avail as usize;
        let words = self.data.words_from(HDR);
        let len_of = |w: u64| u32::from_ne_bytes(w.to_ne_bytes()[..4].try_into().unwrap());
        let mut off = (self.pos % self.size as u64) as usize;
        let mut first = words[off / 8].load(Ordering::Relaxed);
        let mut skip = 0;
        if len_of(first) == WRAP {
            // The producer wraps only when the next record does not fit before the end,
            // and publishes the marker together with that record.
            skip = self.size - off;
            if off == 0 || avail < skip + 8 {
                return Err(RingError::Wrap);
            }
            off = 0;
            first = words[0].load(Ordering::Relaxed);
        }
        let len = len_of(first);
        if len == WRAP {
            return Err(RingError::Wrap);
        }
        let n = len as usize;
        let rl = rec_len(n);
        if n < MIN_FRAME
            || n > self.max_frame
            || off + rl > self.size
            || skip + rl > avail
            || rl - 4 > room
        {
            return Err(RingError::Length(len));
        }
        if skip > 0 && rl <= skip {
            return Err(RingError::Wrap);
        }
        Ok(Some((skip, off, len, first)))
    }

    /// The ring looked empty: ask for a doorbell on the next frame. `true` if a frame
    /// arrived meanwhile (read on).
    pub fn wait_data(&mut self) -> bool {
        self.waits += 1;
        self.ack.word(A_RXW).store(self.waits, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.data.word(D_TAIL).load(Ordering::Relaxed) != self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(fd: &Fd) -> Fd {
        fd.dup_cloexec(0).unwrap()
    }

    /// Two halves joined: A's ring towards B, and B's ring from A.
    fn pair() -> (TxRing, RxRing) {
        let a = Half::create().unwrap();
        let b = Half::create().unwrap();
        let (ad, aa) = (dup(&a.data_fd), dup(&a.ack_fd));
        let (a_tx, _a_rx) = a.join(&b.data_fd, &b.ack_fd, 65536).unwrap();
        let (_b_tx, b_rx) = b.join(&ad, &aa, 65536).unwrap();
        (a_tx, b_rx)
    }

    /// Test only: what a hostile producer can do to the words of its own data memfd.
    fn poke(tx: &TxRing, off: usize, v: u64) {
        tx.data.word(off).store(v, Ordering::Release);
    }

    fn frame(tx: &mut TxRing, len: usize, fill: u8) {
        tx.reserve(len).unwrap().unwrap().fill(fill);
        tx.commit(len).unwrap();
    }

    #[test]
    fn frames_go_through_in_order_with_wraps_and_back_pressure() {
        let (mut tx, mut rx) = pair();
        let mut buf = vec![0u8; 70000];
        assert!(rx.pop(&mut buf).unwrap().is_none());
        let mut sent = 0u32;
        let mut got = 0u32;
        // Frames of varying sizes, far more than the ring holds.
        while got < 2000 {
            let len = 14 + (sent as usize * 7919) % 65000;
            match tx.reserve(len).unwrap() {
                Some(slot) => {
                    slot.fill(sent as u8);
                    slot[..4].copy_from_slice(&sent.to_le_bytes());
                    tx.commit(len).unwrap();
                    sent += 1;
                }
                None => {
                    // Full: drain a few.
                    assert!(!tx.wait_room(len).unwrap());
                    let mut woke = false;
                    for _ in 0..3 {
                        let Some((n, wake)) = rx.pop(&mut buf).unwrap() else {
                            break;
                        };
                        assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()), got);
                        let want = 14 + (got as usize * 7919) % 65000;
                        assert_eq!(n, want);
                        assert!(buf[4..n].iter().all(|&b| b == got as u8));
                        woke |= wake;
                        got += 1;
                    }
                    assert!(woke, "the producer asked for room");
                }
            }
        }
        // Doorbells: the consumer asks, the next commit says so, once.
        while rx.pop(&mut buf).unwrap().is_some() {}
        assert!(!rx.wait_data());
        assert!(tx.reserve(100).unwrap().is_some());
        assert!(tx.commit(100).unwrap());
        assert!(tx.reserve(100).unwrap().is_some());
        assert!(!tx.commit(100).unwrap());
    }

    /// A memfd of `len` bytes with a ring's header, sealed with `seals` if `sealing`.
    fn fake(len: usize, magic: u64, sealing: bool, seals: i32) -> Fd {
        let flags = if sealing {
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING
        } else {
            libc::MFD_CLOEXEC
        };
        // SAFETY: test: memfd_create with a NUL-terminated name.
        let fd = unsafe { libc::syscall(libc::SYS_memfd_create, c"fake".as_ptr(), flags) };
        assert!(fd >= 0);
        // SAFETY: a new descriptor only this test holds.
        let fd = unsafe { Fd::from_raw(fd as RawFd) };
        // SAFETY: test: ftruncate on our own memfd.
        assert_eq!(unsafe { libc::ftruncate(fd.raw(), len as libc::off_t) }, 0);
        let m = Mapping::new(fd.raw(), len, true).unwrap();
        m.word(0).store(magic, Ordering::Relaxed);
        m.word(8).store(RING_BYTES as u64, Ordering::Relaxed);
        drop(m);
        if seals != 0 {
            sys::fcntl(fd.raw(), libc::F_ADD_SEALS, seals as libc::c_long).unwrap();
        }
        fd
    }

    #[test]
    fn an_unsealed_memfd_or_other_file_is_refused() {
        let ack = || fake(ACK_BYTES, ACK_MAGIC, true, SEALS_NEEDED);
        let join = |d: &Fd, a: &Fd| Half::create().unwrap().join(d, a, 65536).err();
        let data = |sealing, seals| fake(HDR + RING_BYTES, DATA_MAGIC, sealing, seals);
        // The real thing is accepted.
        assert_eq!(join(&data(true, SEALS_NEEDED), &ack()), None);
        // Unsealed, or sealed without one of the three seals, or not a memfd.
        assert_eq!(join(&data(false, 0), &ack()), Some(RingError::Unsealed));
        let partial = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
        assert_eq!(
            join(&data(true, partial), &ack()),
            Some(RingError::Unsealed)
        );
        let no_grow = libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
        assert_eq!(
            join(&data(true, no_grow), &ack()),
            Some(RingError::Unsealed)
        );
        let unsealed_ack = fake(ACK_BYTES, ACK_MAGIC, false, 0);
        assert_eq!(
            join(&data(true, SEALS_NEEDED), &unsealed_ack),
            Some(RingError::Unsealed)
        );
        let (p, _q) = sys::socketpair(libc::AF_UNIX, libc::SOCK_STREAM).unwrap();
        assert_eq!(join(&p, &ack()), Some(RingError::Unsealed));
        // Sealed but the wrong size, or the wrong magic.
        let small = fake(HDR + RING_BYTES / 2, DATA_MAGIC, true, SEALS_NEEDED);
        assert_eq!(join(&small, &ack()), Some(RingError::Size));
        let bad = fake(HDR + RING_BYTES, 7, true, SEALS_NEEDED);
        assert_eq!(join(&bad, &ack()), Some(RingError::Magic));
    }

    #[test]
    fn the_peer_can_neither_shrink_grow_nor_write_our_memfds() {
        let h = Half::create().unwrap();
        let fails = |r: i64, e: i32| r == -1 && Errno::last() == Errno(e);
        for fd in [&h.data_fd, &h.ack_fd] {
            let fd = fd.raw();
            // What a peer holding our descriptor might try; none of it succeeds.
            // SAFETY: test: ftruncate on our own memfd.
            let r = unsafe { libc::ftruncate(fd, 0) };
            assert!(fails(r as i64, libc::EPERM), "shrunk");
            // SAFETY: test: ftruncate on our own memfd.
            let r = unsafe { libc::ftruncate(fd, 1 << 30) };
            assert!(fails(r as i64, libc::EPERM), "grown");
            // SAFETY: test: a write of one byte from a static buffer.
            let r = unsafe { libc::write(fd, c"x".as_ptr().cast(), 1) };
            assert!(fails(r as i64, libc::EPERM), "written");
            let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            // SAFETY: test: fallocate on our own memfd.
            let r = unsafe { libc::fallocate(fd, punch, 0, 4096) };
            assert!(fails(r as i64, libc::EPERM), "hole punched");
            assert_eq!(
                sys::fcntl(fd, libc::F_ADD_SEALS, 0),
                Err(Errno(libc::EPERM))
            );
            assert_eq!(Mapping::new(fd, 4096, true).err(), Some(Errno(libc::EPERM)));
            // Read-only it maps, and that mapping cannot be made writable.
            let m = Mapping::new(fd, 4096, false).unwrap();
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            // SAFETY: test: mprotect on a mapping this test owns (it fails).
            let r = unsafe { libc::mprotect(m.ptr.cast(), 4096, rw) };
            assert!(fails(r as i64, libc::EACCES), "made writable");
        }
        // Our own writable mappings still work.
        h.data.word(D_TAIL).store(8, Ordering::Relaxed);
        h.ack.word(A_HEAD).store(8, Ordering::Relaxed);
    }

    /// Test only: a length word at (absolute) position `p`, and `tail`, as a hostile
    /// producer writes them.
    fn put(tx: &mut TxRing, p: u64, len: u32, tail: u64) {
        tx.put_len((p % RING_BYTES as u64) as usize, len);
        poke(tx, D_TAIL, tail);
    }

    /// Send and receive 60000-byte frames until the ring's position is within 70000 bytes
    /// of its end.
    fn near_end(tx: &mut TxRing, rx: &mut RxRing, buf: &mut [u8]) {
        while tx.pos < (RING_BYTES - 70000) as u64 {
            frame(tx, 60000, 3);
            rx.pop(buf).unwrap().unwrap();
        }
    }

    #[derive(PartialEq)]
    enum Start {
        Empty,
        AfterOneFrame,
        NearTheEnd,
    }

    #[test]
    fn a_malformed_record_ends_the_ring_for_good() {
        use Start::*;
        let mut buf = vec![0u8; 70000];
        let ring = RING_BYTES as u64;
        // Each case: where the consumer is, what a hostile producer writes at `p` (the
        // consumer's position), and the error that must follow.
        type Case = (&'static str, Start, fn(&mut TxRing, u64), RingError);
        let cases: Vec<Case> = vec![
            (
                "zero length",
                AfterOneFrame,
                |t, p| put(t, p, 0, p + 8),
                RingError::Length(0),
            ),
            (
                "short",
                AfterOneFrame,
                |t, p| put(t, p, 13, p + 24),
                RingError::Length(13),
            ),
            (
                "longer than the largest frame",
                AfterOneFrame,
                |t, p| put(t, p, 65537, p + 65544),
                RingError::Length(65537),
            ),
            (
                "past what was published",
                AfterOneFrame,
                |t, p| put(t, p, 100, p + 8),
                RingError::Length(100),
            ),
            (
                "past the ring's end",
                NearTheEnd,
                |t, p| {
                    // 4 bytes too long to fit before the end.
                    let len = (RING_BYTES - (p % RING_BYTES as u64) as usize) as u32;
                    put(t, p, len, p + rec_len(len as usize) as u64)
                },
                RingError::Length(0), // (the length depends on where the end is)
            ),
            (
                "tail unaligned",
                AfterOneFrame,
                |t, p| put(t, p, 100, p + 113),
                RingError::Tail,
            ),
            (
                "tail more than a ring ahead",
                AfterOneFrame,
                |t, p| put(t, p, 100, p + RING_BYTES as u64 + 8),
                RingError::Tail,
            ),
            (
                "tail behind",
                AfterOneFrame,
                |t, _| poke(t, D_TAIL, 8),
                RingError::Tail,
            ),
            (
                "wrap marker with nothing after it",
                AfterOneFrame,
                |t, p| put(t, p, WRAP, p + 8),
                RingError::Wrap,
            ),
            (
                "wrap marker at the ring's start",
                Empty,
                |t, _| put(t, 0, WRAP, 112),
                RingError::Wrap,
            ),
            (
                "wrap marker where the next record would fit",
                NearTheEnd,
                |t, p| {
                    t.put_len(0, 100);
                    let skip = RING_BYTES as u64 - p % RING_BYTES as u64;
                    put(t, p, WRAP, p + skip + 104)
                },
                RingError::Wrap,
            ),
        ];
        for (what, start, attack, want) in cases {
            let (mut tx, mut rx) = pair();
            match start {
                Empty => {}
                AfterOneFrame => {
                    frame(&mut tx, 100, 1);
                    assert_eq!(rx.pop(&mut buf).unwrap(), Some((100, false)), "{what}");
                }
                NearTheEnd => near_end(&mut tx, &mut rx, &mut buf),
            }
            let p = tx.pos;
            assert!(p < ring);
            attack(&mut tx, p);
            let got = rx.pop(&mut buf);
            match want {
                RingError::Length(0) if what == "past the ring's end" => {
                    assert!(matches!(got, Err(RingError::Length(_))), "{what}: {got:?}")
                }
                _ => assert_eq!(got, Err(want), "{what}"),
            }
            // Sticky: once the producer writes good frames again, the ring stays dead
            // (nothing is skipped to get there).
            poke(&tx, D_TAIL, p);
            frame(&mut tx, 100, 2);
            assert_eq!(rx.pop(&mut buf), got, "{what}, again");
        }
    }

    #[test]
    fn a_bad_head_ends_our_own_ring() {
        let mut buf = vec![0u8; 70000];
        // Ahead of what we published.
        let (mut tx, mut rx) = pair();
        frame(&mut tx, 100, 1);
        rx.pop(&mut buf).unwrap();
        rx.ack.word(A_HEAD).store(4096, Ordering::Release);
        assert_eq!(tx.reserve(100).err(), Some(RingError::Head));
        rx.ack.word(A_HEAD).store(104, Ordering::Release);
        assert_eq!(tx.commit(100).err(), Some(RingError::Head), "sticky");
        // Going back.
        let (mut tx, mut rx) = pair();
        frame(&mut tx, 100, 1);
        rx.pop(&mut buf).unwrap();
        assert!(tx.reserve(100).unwrap().is_some());
        rx.ack.word(A_HEAD).store(0, Ordering::Release);
        assert_eq!(tx.reserve(100).err(), Some(RingError::Head));
        // Unaligned.
        let (mut tx, rx) = pair();
        rx.ack.word(A_HEAD).store(3, Ordering::Release);
        assert_eq!(tx.reserve(100).err(), Some(RingError::Head));
    }

    #[test]
    fn a_wrap_goes_where_the_producer_puts_it() {
        let (mut tx, mut rx) = pair();
        let mut buf = vec![0u8; 70000];
        near_end(&mut tx, &mut rx, &mut buf);
        let before = tx.pos;
        frame(&mut tx, 65000, 4);
        assert!(
            tx.pos % RING_BYTES as u64 == rec_len(65000) as u64,
            "wrapped"
        );
        assert!(tx.pos > before);
        assert_eq!(rx.pop(&mut buf).unwrap().map(|r| r.0), Some(65000));
        assert!(buf[..65000].iter().all(|&b| b == 4));
        assert_eq!(rx.pos, tx.pos);
    }

    #[test]
    fn a_frame_changed_after_publication_does_not_change_what_was_read() {
        let (mut tx, mut rx) = pair();
        let mut buf = vec![0u8; 70000];
        frame(&mut tx, 100, 1);
        assert_eq!(rx.pop(&mut buf).unwrap(), Some((100, false)));
        // The producer rewrites the published frame in place (record at offset 0).
        // SAFETY: test: bytes of our own data mapping's record area, as a hostile producer
        // writes them; no reference covers them.
        unsafe { std::ptr::write_bytes(tx.data.ptr.add(HDR + 4), 2, 100) };
        assert!(buf[..100].iter().all(|&b| b == 1), "what was read changed");
    }
}
