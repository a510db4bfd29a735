//! The connect table: what a node's clients need to connect a TCP socket themselves, with no
//! round trip to their stack daemon.
//!
//! The daemon knows which other nodes of this host it reaches through a cut-through shortcut
//! (`Link::cut_route`) and which kernel listeners each of them has (`Msg::Listener`). It
//! publishes that, resolved to addresses, in one memfd that each client maps read-only:
//! * a *listener* entry: a connect to `dst`:`port` goes straight to the kernel listener
//!   `names::listener_name(node, lid)` of user `uid`, from the local address `src` (the one
//!   the daemon would pick); the accepting side presents addresses as IPv6 if `inet6`.
//!   Several listener entries for one `dst`:`port` are listeners that share the port
//!   (`SO_REUSEPORT`): each connect picks one;
//! * a *host* entry: `dst` is a neighbour that no listener entry names for the port asked
//!   about, and the daemon would not wait to learn more: a connect to it goes through TCP.
//!
//! A lookup that finds neither ("unknown": a neighbour not heard from yet, a peer whose list
//! has not all come, the table full) asks the daemon as before.
//!
//! A node with cut-through off says so once (`flags`): every connect goes through TCP.
//!
//! Layout: 64 bytes of header (`magic u64`, `seq u64`, `count u64`, `flags u64`), then `count` entries
//! of 7 words: `dst` (16 bytes, IPv6 form), `src` (likewise), `port | LISTENER | INET6 | V4
//! | uid << 32`, `node`, `lid`. Updates are a seqlock: `seq` is odd while the daemon writes;
//! a reader that saw it change (or odd) reads again.
//!
//! Trust: the memfd is sealed as a ring's (`crate::ring`: fixed size, no writes but the
//! daemon's own mapping), and a client checks the seals and size before mapping it. The
//! daemon is the client's own stack, trusted as it is for everything else; an entry only
//! says where to try, and the client still checks who listens there (`SO_PEERCRED`).

use crate::ring::{self, Mapping};
use crate::sys::{Errno, Fd};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{Ordering, fence};

const MAGIC: u64 = 0x3162_6174_6874_6f69; // "iothtab1"
/// The memfd's size.
pub const BYTES: usize = 64 * 1024;
const HDR: usize = 64;
const W_MAGIC: usize = 0;
const W_SEQ: usize = 8;
const W_COUNT: usize = 16;
/// [`ALL_TCP`], or 0.
const W_FLAGS: usize = 24;
/// Header flag: every connect goes through TCP (cut-through is off on this node).
const ALL_TCP: u64 = 1;
const ENTRY_WORDS: usize = 7;
/// Most entries the table holds (the rest are "unknown").
pub const MAX_ENTRIES: usize = 1024;

const LISTENER: u64 = 1 << 16;
const INET6: u64 = 1 << 17;
const V4: u64 = 1 << 18;

/// The number that picks one of several listeners sharing a port (`SO_REUSEPORT`) for a
/// connect of socket `id`, whose id is drawn at random: the id, mixed.
pub fn pick(id: u64) -> u64 {
    id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32
}

/// A listener entry (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub dst: IpAddr,
    pub port: u16,
    pub src: IpAddr,
    pub node: u64,
    pub lid: u64,
    pub uid: u32,
    pub inet6: bool,
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Listener(Entry),
    /// Through TCP.
    NoCut,
    /// Ask the daemon.
    Unknown,
}

fn ip_words(ip: IpAddr) -> (u64, u64) {
    let o = match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    let hi = u64::from_be_bytes(o[..8].try_into().unwrap_or_default());
    let lo = u64::from_be_bytes(o[8..].try_into().unwrap_or_default());
    (hi, lo)
}

fn words_ip(hi: u64, lo: u64, v4: bool) -> IpAddr {
    let mut o = [0u8; 16];
    o[..8].copy_from_slice(&hi.to_be_bytes());
    o[8..].copy_from_slice(&lo.to_be_bytes());
    let a = Ipv6Addr::from(o);
    match a.to_ipv4_mapped() {
        Some(v) if v4 => IpAddr::V4(v),
        _ => IpAddr::V6(a),
    }
}

/// The daemon's side: the table, mapped writable.
pub struct Writer {
    fd: Fd,
    map: Mapping,
}

impl Writer {
    pub fn create() -> Result<Writer, Errno> {
        let fd = ring::memfd(c"ioth-connect-table", BYTES)?;
        let map = Mapping::new(fd.raw(), BYTES, true)?;
        map.word(W_MAGIC).store(MAGIC, Ordering::Relaxed);
        ring::seal(&fd)?;
        Ok(Writer { fd, map })
    }

    /// A copy of the memfd, for a client (which can only map it read-only).
    pub fn dup_fd(&self) -> Result<Fd, Errno> {
        self.fd.dup_cloexec(0)
    }

    /// Replace the table with `listeners` and `hosts` (host entries), as much as fits;
    /// `all_tcp`: every connect goes through TCP.
    pub fn publish(&self, listeners: &[Entry], hosts: &[IpAddr], all_tcp: bool) {
        let seq = self.map.word(W_SEQ);
        let s = seq.load(Ordering::Relaxed);
        seq.store(s | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let mut n = 0;
        let mut put = |words: [u64; ENTRY_WORDS]| {
            if n < MAX_ENTRIES {
                let at = HDR + n * ENTRY_WORDS * 8;
                for (i, w) in words.iter().enumerate() {
                    self.map.word(at + i * 8).store(*w, Ordering::Relaxed);
                }
                n += 1;
            }
        };
        for e in listeners {
            let (dh, dl) = ip_words(e.dst);
            let (sh, sl) = ip_words(e.src);
            let mut flags = u64::from(e.port) | LISTENER | (u64::from(e.uid) << 32);
            if e.inet6 {
                flags |= INET6;
            }
            if e.dst.is_ipv4() {
                flags |= V4;
            }
            put([dh, dl, sh, sl, flags, e.node, e.lid]);
        }
        for h in hosts {
            let (dh, dl) = ip_words(*h);
            let flags = if h.is_ipv4() { V4 } else { 0 };
            put([dh, dl, 0, 0, flags, 0, 0]);
        }
        self.map.word(W_COUNT).store(n as u64, Ordering::Relaxed);
        self.map
            .word(W_FLAGS)
            .store(if all_tcp { ALL_TCP } else { 0 }, Ordering::Relaxed);
        seq.store((s | 1) + 1, Ordering::Release);
    }
}

/// A client's read-only mapping of its daemon's table.
pub struct Reader {
    map: Mapping,
}

// SAFETY: the mapping is only read, through atomic loads (`Mapping::word`), from any thread;
// it is unmapped only when the Reader is dropped, which needs it owned.
unsafe impl Send for Reader {}
// SAFETY: as above: shared access is atomic loads only.
unsafe impl Sync for Reader {}

impl Reader {
    /// Map the table `fd` (from the daemon's `Table` answer), after checking it is a sealed
    /// memfd of the right size that holds a table.
    pub fn open(fd: &Fd) -> Result<Reader, Errno> {
        ring::check_peer(fd, BYTES).map_err(|_| Errno::EINVAL)?;
        let map = Mapping::new(fd.raw(), BYTES, false)?;
        if map.word(W_MAGIC).load(Ordering::Relaxed) != MAGIC {
            return Err(Errno::EINVAL);
        }
        Ok(Reader { map })
    }

    /// Where a connect to `dst`:`port` goes; of several listeners sharing the port, the one
    /// `pick` (a number of the caller's, random per connect) chooses.
    pub fn lookup(&self, dst: IpAddr, port: u16, pick: u64) -> Found {
        let (dh, dl) = ip_words(dst);
        let v4 = if dst.is_ipv4() { V4 } else { 0 };
        for _ in 0..64 {
            let s1 = self.map.word(W_SEQ).load(Ordering::Acquire);
            if s1 & 1 != 0 {
                std::hint::spin_loop();
                continue;
            }
            let mut n = (self.map.word(W_COUNT).load(Ordering::Relaxed) as usize).min(MAX_ENTRIES);
            let mut found = Found::Unknown;
            if self.map.word(W_FLAGS).load(Ordering::Relaxed) & ALL_TCP != 0 {
                (n, found) = (0, Found::NoCut);
            }
            // The listener entries for `dst`:`port`, in order: the first pass counts them, the
            // second takes the one picked.
            let mut listeners = 0u64;
            let mut want = None;
            for pass in 0..2 {
                let mut k = 0u64;
                for i in 0..n {
                    let at = HDR + i * ENTRY_WORDS * 8;
                    let w = |k: usize| self.map.word(at + k * 8).load(Ordering::Relaxed);
                    if w(0) != dh || w(1) != dl {
                        continue;
                    }
                    let flags = w(4);
                    if flags & V4 != v4 {
                        continue;
                    }
                    if flags & LISTENER == 0 {
                        if found == Found::Unknown {
                            found = Found::NoCut;
                        }
                        continue;
                    }
                    if flags & 0xffff != u64::from(port) {
                        continue;
                    }
                    if pass == 0 {
                        listeners += 1;
                        continue;
                    }
                    if Some(k) == want {
                        found = Found::Listener(Entry {
                            dst,
                            port,
                            src: words_ip(w(2), w(3), flags & V4 != 0),
                            node: w(5),
                            lid: w(6),
                            uid: (flags >> 32) as u32,
                            inet6: flags & INET6 != 0,
                        });
                        break;
                    }
                    k += 1;
                }
                if listeners == 0 {
                    break;
                }
                want = Some(pick % listeners);
            }
            fence(Ordering::Acquire);
            if self.map.word(W_SEQ).load(Ordering::Relaxed) == s1 {
                return found;
            }
        }
        Found::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dst: &str, port: u16, lid: u64) -> Entry {
        let dst: IpAddr = dst.parse().unwrap();
        Entry {
            dst,
            port,
            src: if dst.is_ipv4() {
                "10.0.0.9".parse().unwrap()
            } else {
                "fd00::9".parse().unwrap()
            },
            node: 7,
            lid,
            uid: 1000,
            inet6: dst.is_ipv6(),
        }
    }

    #[test]
    fn a_client_finds_listeners_hosts_and_nothing_else() {
        let w = Writer::create().unwrap();
        let fd = w.dup_fd().unwrap();
        let r = Reader::open(&fd).unwrap();
        let a = "fd00::1".parse().unwrap();
        assert_eq!(r.lookup(a, 80, 0), Found::Unknown);
        let l6 = entry("fd00::1", 80, 3);
        let l4 = entry("10.0.0.1", 80, 4);
        let host: IpAddr = "10.0.0.2".parse().unwrap();
        w.publish(&[l6, l4], &[host, a], false);
        assert_eq!(r.lookup(a, 80, 0), Found::Listener(l6));
        assert_eq!(
            r.lookup("10.0.0.1".parse().unwrap(), 80, 0),
            Found::Listener(l4)
        );
        // A host entry of the same address: no listener on that port.
        assert_eq!(r.lookup(a, 81, 0), Found::NoCut);
        assert_eq!(r.lookup(host, 80, 0), Found::NoCut);
        // The IPv4-mapped form is another address.
        assert_eq!(
            r.lookup("::ffff:10.0.0.1".parse().unwrap(), 80, 0),
            Found::Unknown
        );
        assert_eq!(r.lookup("fd00::3".parse().unwrap(), 80, 0), Found::Unknown);
        w.publish(&[], &[], false);
        assert_eq!(r.lookup(a, 80, 0), Found::Unknown);
        w.publish(&[l6], &[], true);
        assert_eq!(r.lookup(a, 80, 0), Found::NoCut);
    }

    #[test]
    fn listeners_sharing_a_port_are_picked_by_the_callers_number() {
        let w = Writer::create().unwrap();
        let fd = w.dup_fd().unwrap();
        let r = Reader::open(&fd).unwrap();
        let a: IpAddr = "fd00::1".parse().unwrap();
        let (l1, l2, l3) = (
            entry("fd00::1", 80, 1),
            entry("fd00::1", 80, 2),
            entry("fd00::1", 80, 3),
        );
        let other = entry("fd00::1", 81, 4);
        w.publish(&[other, l1, l2, l3], &[a], false);
        assert_eq!(r.lookup(a, 80, 0), Found::Listener(l1));
        assert_eq!(r.lookup(a, 80, 1), Found::Listener(l2));
        assert_eq!(r.lookup(a, 80, 5), Found::Listener(l3));
        assert_eq!(r.lookup(a, 80, u64::MAX), Found::Listener(l1));
        assert_eq!(r.lookup(a, 81, 7), Found::Listener(other));
        assert_eq!(r.lookup(a, 82, 7), Found::NoCut);
    }

    #[test]
    fn a_full_table_keeps_what_fits_and_clients_cannot_write_it() {
        let w = Writer::create().unwrap();
        let many: Vec<Entry> = (0..MAX_ENTRIES as u64 + 10)
            .map(|i| entry("fd00::1", (i + 1) as u16, i))
            .collect();
        w.publish(&many, &[], false);
        let fd = w.dup_fd().unwrap();
        let r = Reader::open(&fd).unwrap();
        let a = "fd00::1".parse().unwrap();
        assert!(matches!(
            r.lookup(a, MAX_ENTRIES as u16, 0),
            Found::Listener(_)
        ));
        assert_eq!(r.lookup(a, MAX_ENTRIES as u16 + 1, 0), Found::Unknown);
        assert!(Mapping::new(fd.raw(), BYTES, true).is_err());
        // Not a table: refused.
        let other = ring::memfd(c"other", BYTES).unwrap();
        assert!(Reader::open(&other).is_err());
    }
}
