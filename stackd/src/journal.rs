//! The connection journal: the addresses and ports of every TCP connection of the node, in a
//! memfd that the keeper (`crate::keeper`) holds across daemons.
//!
//! A daemon that dies takes its connections' state with it, but their peers do not know: a
//! client that is only receiving (a download) would wait for its own timeout. The next daemon
//! reads the journal and makes each peer reset its side at once (`Stack::reset_peers`).
//! Writing the journal costs no system call: a slot of [`SLOT`] bytes per connection in a
//! shared mapping, written when a connection starts and cleared when it goes; the kernel
//! keeps the pages when the daemon dies.
//!
//! Layout: a 64-byte header whose first 4 bytes hold the number of slots ever used (so that
//! a reader touches no more pages than were written), then the slots: used flag, family, 2
//! reserved, local port, remote port (little endian), local and remote address (16 bytes
//! each, IPv4 mapped).

use crate::os::SharedFile;
use foldhash::{HashMap, HashMapExt};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

const HDR: usize = 64;
pub const SLOT: usize = 40;
/// Slots in a new journal (sparse: 10 MiB of address space, only written pages are memory).
pub const CAPACITY: usize = 1 << 18;

/// The size of a new journal memfd.
pub const fn file_len() -> usize {
    HDR + CAPACITY * SLOT
}

pub struct Journal {
    file: SharedFile,
    cap: u32,
    high: u32,
    free: Vec<u32>,
    slots: HashMap<u64, u32>,
}

fn ip16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

fn unip(b: &[u8], v4: bool) -> Option<IpAddr> {
    let a = Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?);
    Some(if v4 {
        IpAddr::V4(a.to_ipv4_mapped()?)
    } else {
        IpAddr::V6(a)
    })
}

impl Journal {
    /// Take over the journal in `file`; the connections a previous daemon left in it, as
    /// (local, remote) pairs. The journal is empty afterwards.
    pub fn open(mut file: SharedFile) -> (Journal, Vec<(SocketAddr, SocketAddr)>) {
        let b = file.bytes();
        let cap = (b.len().saturating_sub(HDR) / SLOT).min(u32::MAX as usize) as u32;
        let high = u32::from_le_bytes([b[0], b[1], b[2], b[3]]).min(cap);
        let mut left = Vec::new();
        for i in 0..high as usize {
            let s = &mut b[HDR + i * SLOT..HDR + (i + 1) * SLOT];
            if s[0] == 1 {
                let v4 = s[1] == 4;
                let lp = u16::from_le_bytes([s[4], s[5]]);
                let rp = u16::from_le_bytes([s[6], s[7]]);
                if let (Some(l), Some(r)) = (unip(&s[8..24], v4), unip(&s[24..40], v4)) {
                    left.push((SocketAddr::new(l, lp), SocketAddr::new(r, rp)));
                }
            }
            s.fill(0);
        }
        b[0..4].copy_from_slice(&0u32.to_le_bytes());
        let j = Journal {
            file,
            cap,
            high: 0,
            free: Vec::new(),
            slots: HashMap::new(),
        };
        (j, left)
    }

    /// Connection `id` runs between `local` and `remote`.
    pub fn add(&mut self, id: u64, local: SocketAddr, remote: SocketAddr) {
        if self.slots.contains_key(&id) {
            return;
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None if self.high < self.cap => {
                self.high += 1;
                let h = self.high;
                self.file.bytes()[0..4].copy_from_slice(&h.to_le_bytes());
                h - 1
            }
            // Full: this connection goes unrecorded (its peer waits for its own timeout).
            None => return,
        };
        let o = HDR + i as usize * SLOT;
        let s = &mut self.file.bytes()[o..o + SLOT];
        s[1] = if local.is_ipv4() { 4 } else { 6 };
        s[4..6].copy_from_slice(&local.port().to_le_bytes());
        s[6..8].copy_from_slice(&remote.port().to_le_bytes());
        s[8..24].copy_from_slice(&ip16(local.ip()));
        s[24..40].copy_from_slice(&ip16(remote.ip()));
        s[0] = 1;
        self.slots.insert(id, i);
    }

    /// Connection `id` is gone.
    pub fn remove(&mut self, id: u64) {
        if let Some(i) = self.slots.remove(&id) {
            let o = HDR + i as usize * SLOT;
            self.file.bytes()[o] = 0;
            self.free.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_journal_returns_what_the_last_one_left() {
        let fd = crate::os::memfd(c"journal-test", file_len()).unwrap();
        let (mut j, left) = Journal::open(SharedFile::map(fd.raw()).unwrap());
        assert!(left.is_empty());
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let c: SocketAddr = "[fd00::1]:80".parse().unwrap();
        let d: SocketAddr = "[fd00::2]:40001".parse().unwrap();
        j.add(1, a, b);
        j.add(2, c, d);
        j.add(3, a, d);
        j.remove(3);
        drop(j);
        let (_j, mut left) = Journal::open(SharedFile::map(fd.raw()).unwrap());
        left.sort();
        let mut want = vec![(a, b), (c, d)];
        want.sort();
        assert_eq!(left, want);
        let (_j, left) = Journal::open(SharedFile::map(fd.raw()).unwrap());
        assert!(left.is_empty(), "taken over once");
    }
}
