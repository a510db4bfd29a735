//! Loss recovery, one behaviour at a time (issue 14): lost segments in the middle of a
//! window are resent one by one as the SACK blocks show them, a lost tail costs the 200 ms
//! minimum RTO (not smoltcp's default second), a FIN that overtook a lost segment is not
//! needed again, and a `setsockopt` on a busy connection leaves its congestion window alone.

use super::*;
use Node::A;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

const SEC: Duration = Duration::from_secs(1);
const SERVER: &str = "10.0.0.2:80";

/// A TCP segment from node a to node b over IPv4: (sequence number, payload length, FIN).
fn segment(to_b: bool, f: &[u8]) -> Option<(u32, usize, bool)> {
    if !to_b {
        return None;
    }
    let eth = EthernetFrame::new_checked(f).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let seg = &eth.payload()[ip.header_len() as usize..ip.total_len() as usize];
    let t = TcpPacket::new_checked(seg).ok()?;
    Some((t.seq_number().0 as u32, t.payload().len(), t.fin()))
}

/// What a filter saw of the data segments from a to b: how often each sequence number was
/// sent, and how many segments carried a FIN.
#[derive(Default)]
struct Seen {
    sends: HashMap<u32, u32>,
    fins: u32,
}

impl Seen {
    fn resent(&self) -> usize {
        self.sends.values().filter(|n| **n > 1).count()
    }
}

/// A filter that drops, once each, the data segments holding the stream offsets `lose`
/// (offsets from the first data byte), and records what it saw.
fn drop_once(p: &mut Pair, lose: Vec<usize>) -> Rc<RefCell<Seen>> {
    let seen = Rc::new(RefCell::new(Seen::default()));
    let s = seen.clone();
    let mut first: Option<u32> = None;
    let mut dropped: Vec<usize> = Vec::new();
    p.filter(Box::new(move |to_b, f| {
        let Some((seq, len, fin)) = segment(to_b, f) else {
            return false;
        };
        let mut s = s.borrow_mut();
        s.fins += u32::from(fin);
        if len == 0 {
            return false;
        }
        *s.sends.entry(seq).or_default() += 1;
        let start = *first.get_or_insert(seq);
        let off = seq.wrapping_sub(start) as usize;
        for &x in &lose {
            if (off..off + len).contains(&x) && !dropped.contains(&x) {
                dropped.push(x);
                return true;
            }
        }
        false
    }));
    seen
}

fn delay(p: &mut Pair, ms: u64) {
    p.impair(Impair {
        delay: Duration::from_millis(ms),
        ..Impair::default()
    });
}

/// `data` from a to b over a new connection on a wire of 5 ms each way, closed after it,
/// the stream offsets `lose` lost once each: (what arrived, virtual time taken, what the
/// wire saw).
fn lossy_transfer(seed: u64, data: &[u8], lose: &[usize]) -> (Vec<u8>, Duration, Seen) {
    let mut p = Pair::new(seed);
    let (_, c, conn, _l) = p.established(SERVER);
    delay(&mut p, 5);
    let seen = drop_once(&mut p, lose.to_vec());
    let t0 = p.now;
    let got = p.transfer(&c, &conn, data, true, Duration::from_secs(60));
    let took = p.now - t0;
    (got, took, seen.take())
}

#[test]
fn sack_holes_are_resent_one_by_one_without_a_timeout() {
    let data = pattern(400_000, 1);
    // The same transfer, intact, for the time it takes.
    let (got, clean, _) = lossy_transfer(3, &data, &[]);
    assert!(got == data);

    // Three segments lost in the middle of the stream.
    let (got, lossy, seen) = lossy_transfer(3, &data, &[100_000, 103_000, 106_000]);
    assert!(got == data, "content differs");
    assert_eq!(seen.resent(), 3, "only the lost segments go again");
    // No retransmission timeout (200 ms at least): a few round trips more than intact.
    assert!(
        lossy < clean + Duration::from_millis(150),
        "intact {clean}, with three losses {lossy}"
    );
}

#[test]
fn a_lost_tail_is_resent_after_200_ms_not_a_second() {
    let data = pattern(50_000, 2);
    let mut p = Pair::new(5);
    let (_, c, conn, _l) = p.established(SERVER);
    delay(&mut p, 5);
    // Warm the estimator up, then lose the last data segment: nothing follows it, so no
    // duplicate ACK, and only the timer can repair it.
    let warm = pattern(20_000, 3);
    assert!(p.transfer(&c, &conn, &warm, false, SEC) == warm);
    let seen = drop_once(&mut p, vec![data.len() - 1]);
    let t0 = p.now;
    let got = p.transfer(&c, &conn, &data, false, Duration::from_secs(10));
    let took = p.now - t0;
    assert!(got == data);
    assert_eq!(seen.borrow().resent(), 1);
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(600),
        "the lost tail came back after {took}"
    );
}

#[test]
fn a_fin_that_overtook_a_lost_segment_is_not_needed_again() {
    let data = pattern(200_000, 4);
    let (_, clean, _) = lossy_transfer(9, &data, &[]);
    // Lose a segment a few before the end: the segments after it, the FIN among them,
    // arrive first, and their duplicate ACKs bring the lost one back (fast retransmit). The
    // FIN is not sent again: the receiver kept it (after a timeout it would be, as the
    // sender cannot know whether it arrived).
    let (got, took, seen) = lossy_transfer(9, &data, &[data.len() - 8000]);
    assert!(got == data, "content differs or no EOF");
    assert_eq!(seen.resent(), 1);
    assert_eq!(seen.fins, 1, "the receiver kept the early FIN");
    assert!(
        took < clean + Duration::from_millis(150),
        "intact {clean}, with the loss {took}"
    );
}

#[test]
fn setsockopt_on_a_busy_connection_keeps_its_congestion_window() {
    let data = pattern(4 << 20, 5);
    let run = |poke: bool| -> Duration {
        let mut p = Pair::new(13);
        let (cid, c, conn, _l) = p.established(SERVER);
        delay(&mut p, 10);
        let (wfd, rfd) = (c.raw(), conn.raw());
        let (mut sent, mut got) = (0, 0);
        let mut buf = vec![0u8; 65536];
        let t0 = p.now;
        let done = p.run_until(Duration::from_secs(60), |p| {
            while sent < data.len() {
                let end = (sent + 65536).min(data.len());
                match sys::write(wfd, &data[sent..end]) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
                // As nginx does on a connection in use.
                if poke {
                    p.setsockopt_int(A, cid, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
                }
            }
            while let Ok(n) = sys::read(rfd, &mut buf) {
                if n == 0 {
                    break;
                }
                got += n;
            }
            got >= data.len()
        });
        assert!(done, "the transfer did not finish");
        p.now - t0
    };
    let quiet = run(false);
    let poked = run(true);
    assert!(
        poked < quiet + quiet / 5,
        "without setsockopt {quiet}, with one per 64 KiB {poked}"
    );
}
