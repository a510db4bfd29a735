//! The sender's record of what the receiver holds beyond the cumulative acknowledgement,
//! built from the SACK blocks it reports (RFC 2018; the "scoreboard" of RFC 6675).
//!
//! Ranges are kept sorted, disjoint and merged, at most [`MAX_RANGES`] of them; when a new
//! range does not fit, the highest one is forgotten (the low ones say which holes to
//! retransmit first, and a forgotten range only costs a needless retransmission).

use crate::wire::TcpSeqNumber;

/// Most ranges remembered.
pub(super) const MAX_RANGES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(super) struct Scoreboard {
    /// `(left, right)`: the receiver holds `left..right`, sorted by `left`.
    ranges: [(TcpSeqNumber, TcpSeqNumber); MAX_RANGES],
    len: usize,
}

impl Default for Scoreboard {
    fn default() -> Self {
        Self::new()
    }
}

impl Scoreboard {
    pub(super) const fn new() -> Self {
        Scoreboard {
            ranges: [(TcpSeqNumber(0), TcpSeqNumber(0)); MAX_RANGES],
            len: 0,
        }
    }

    pub(super) fn clear(&mut self) {
        self.len = 0;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn iter(&self) -> impl Iterator<Item = &(TcpSeqNumber, TcpSeqNumber)> {
        self.ranges[..self.len].iter()
    }

    /// Record that the receiver holds `left..right`. Blocks that are empty, at or below
    /// `una` (a D-SACK, RFC 2883, or stale) or beyond `max` (data never sent) are ignored.
    pub(super) fn add(
        &mut self,
        left: TcpSeqNumber,
        right: TcpSeqNumber,
        una: TcpSeqNumber,
        max: TcpSeqNumber,
    ) {
        if !(una < left && left < right && right <= max) {
            return;
        }
        let (mut left, mut right) = (left, right);
        // Merge every range that touches the new one, then insert it in order.
        let mut kept = [(TcpSeqNumber(0), TcpSeqNumber(0)); MAX_RANGES];
        let mut n = 0;
        for &(l, r) in self.iter() {
            if r < left || l > right {
                kept[n] = (l, r);
                n += 1;
            } else {
                left = left.min(l);
                right = right.max(r);
            }
        }
        let at = kept[..n].iter().position(|&(l, _)| l > left).unwrap_or(n);
        if n == MAX_RANGES {
            if at == n {
                // Higher than every range kept, and no room: forget it.
                self.ranges = kept;
                self.len = n;
                return;
            }
            n -= 1;
        }
        for i in (at..n).rev() {
            kept[i + 1] = kept[i];
        }
        kept[at] = (left, right);
        self.ranges = kept;
        self.len = n + 1;
    }

    /// The cumulative acknowledgement moved to `una`: forget what it covers.
    pub(super) fn advance(&mut self, una: TcpSeqNumber) {
        let mut n = 0;
        for i in 0..self.len {
            let (l, r) = self.ranges[i];
            if r <= una {
                continue;
            }
            self.ranges[n] = (l.max(una), r);
            n += 1;
        }
        self.len = n;
    }

    /// Octets recorded below `limit`.
    pub(super) fn sacked_below(&self, limit: TcpSeqNumber) -> usize {
        self.iter()
            .filter(|(l, _)| *l < limit)
            .map(|&(l, r)| r.min(limit) - l)
            .sum()
    }

    /// The end of the range holding `seq`, if one does.
    pub(super) fn covering(&self, seq: TcpSeqNumber) -> Option<TcpSeqNumber> {
        self.iter()
            .find(|&&(l, r)| l <= seq && seq < r)
            .map(|&(_, r)| r)
    }

    /// The start of the first range above `seq`.
    pub(super) fn next_after(&self, seq: TcpSeqNumber) -> Option<TcpSeqNumber> {
        self.iter().map(|&(l, _)| l).find(|l| *l > seq)
    }

    /// The first stretch at or after `from` that the receiver lacks and that lies below
    /// data it holds (so it is taken as lost), as `(start, end)`.
    pub(super) fn next_hole(&self, from: TcpSeqNumber) -> Option<(TcpSeqNumber, TcpSeqNumber)> {
        let mut start = from;
        for &(l, r) in self.iter() {
            if start < l {
                return Some((start, l));
            }
            start = start.max(r);
        }
        None
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn s(n: i32) -> TcpSeqNumber {
        TcpSeqNumber(n)
    }

    fn ranges(b: &Scoreboard) -> alloc_free::Vec {
        let mut v = alloc_free::Vec::default();
        for &(l, r) in b.iter() {
            v.push((l.0, r.0));
        }
        v
    }

    // A tiny fixed vector so the tests need no allocator.
    mod alloc_free {
        #[derive(Debug, Default, PartialEq)]
        pub struct Vec {
            items: [(i32, i32); 8],
            len: usize,
        }
        impl Vec {
            pub fn push(&mut self, x: (i32, i32)) {
                self.items[self.len] = x;
                self.len += 1;
            }
            pub fn as_slice(&self) -> &[(i32, i32)] {
                &self.items[..self.len]
            }
        }
    }

    #[test]
    fn ranges_merge_and_stay_sorted() {
        let mut b = Scoreboard::new();
        b.add(s(300), s(400), s(100), s(1000));
        b.add(s(150), s(200), s(100), s(1000));
        b.add(s(500), s(600), s(100), s(1000));
        assert_eq!(ranges(&b).as_slice(), &[(150, 200), (300, 400), (500, 600)]);
        b.add(s(200), s(300), s(100), s(1000));
        assert_eq!(ranges(&b).as_slice(), &[(150, 400), (500, 600)]);
        b.add(s(350), s(550), s(100), s(1000));
        assert_eq!(ranges(&b).as_slice(), &[(150, 600)]);
        assert_eq!(b.sacked_below(s(1000)), 450);
        assert_eq!(b.sacked_below(s(200)), 50);
    }

    #[test]
    fn stale_empty_and_unsent_blocks_are_ignored() {
        let mut b = Scoreboard::new();
        b.add(s(50), s(90), s(100), s(1000));
        b.add(s(100), s(150), s(100), s(1000));
        b.add(s(200), s(200), s(100), s(1000));
        b.add(s(900), s(1100), s(100), s(1000));
        assert!(b.is_empty());
    }

    #[test]
    fn advancing_forgets_what_is_acknowledged() {
        let mut b = Scoreboard::new();
        b.add(s(200), s(300), s(100), s(1000));
        b.add(s(400), s(500), s(100), s(1000));
        b.advance(s(250));
        assert_eq!(ranges(&b).as_slice(), &[(250, 300), (400, 500)]);
        b.advance(s(450));
        assert_eq!(ranges(&b).as_slice(), &[(450, 500)]);
        b.advance(s(500));
        assert!(b.is_empty());
    }

    #[test]
    fn holes_lie_below_held_data() {
        let mut b = Scoreboard::new();
        b.add(s(200), s(300), s(100), s(1000));
        b.add(s(400), s(500), s(100), s(1000));
        assert_eq!(b.next_hole(s(100)), Some((s(100), s(200))));
        assert_eq!(b.next_hole(s(200)), Some((s(300), s(400))));
        assert_eq!(b.next_hole(s(350)), Some((s(350), s(400))));
        assert_eq!(b.next_hole(s(400)), None, "nothing above 500 is known lost");
        assert_eq!(b.covering(s(250)), Some(s(300)));
        assert_eq!(b.covering(s(300)), None);
        assert_eq!(b.next_after(s(300)), Some(s(400)));
        assert_eq!(b.next_after(s(400)), None);
    }

    #[test]
    fn a_full_board_keeps_the_lowest_ranges() {
        let mut b = Scoreboard::new();
        for i in 0..MAX_RANGES as i32 {
            b.add(s(200 + 100 * i), s(250 + 100 * i), s(100), s(10_000));
        }
        b.add(s(5000), s(5100), s(100), s(10_000));
        assert_eq!(b.len, MAX_RANGES);
        assert_eq!(
            b.next_after(s(900)),
            None,
            "the highest new range was dropped"
        );
        b.add(s(120), s(130), s(100), s(10_000));
        assert_eq!(b.len, MAX_RANGES);
        assert_eq!(b.next_hole(s(100)), Some((s(100), s(120))));
        assert_eq!(b.covering(s(925)), None, "the highest range made room");
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut b = Scoreboard::new();
        b.add(
            s(i32::MAX - 10),
            s(i32::MIN + 10),
            s(i32::MAX - 100),
            s(i32::MIN + 100),
        );
        assert_eq!(b.sacked_below(s(i32::MIN + 100)), 21);
        assert_eq!(
            b.next_hole(s(i32::MAX - 100)),
            Some((s(i32::MAX - 100), s(i32::MAX - 10)))
        );
    }
}
