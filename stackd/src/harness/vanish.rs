//! Peers that vanish: connections whose peer went silent (the wire cut, the node dead) end
//! as on Linux, by retransmission limits, `TCP_USER_TIMEOUT`, keep-alive, the orphan limit
//! and the FIN-WAIT-2 timeout; connections whose peer is only quiet live on.

use super::*;
use crate::stack::{FIN_TIMEOUT, ORPHAN_TIMEOUT, RETRIES_TIMEOUT};
use Node::{A, B};

const SEC: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// An established connection: (client id, client fd, server id, server fd, listener fd).
fn established(p: &mut Pair) -> (u64, Fd, u64, Fd, Fd) {
    let (_, l) = p.listener(B, "10.0.0.2:80", 16);
    let (cid, c) = p.connecting(A, "10.0.0.2:80");
    assert!(p.until_writable(&c, SEC), "handshake did not finish");
    assert_eq!(p.so_error(A, cid), 0);
    let (rec, conn) = p.accept(&l, SEC).expect("no connection to accept");
    (cid, c, rec.id, conn, l)
}

/// Cut the wire both ways, ARP included: the peer is gone.
fn cut(p: &mut Pair) {
    p.filter(Box::new(|_, _| true));
}

/// Whether the application end `fd` reads EOF now (the stack shut it down).
fn at_eof(fd: &Fd) -> bool {
    let mut b = [0u8; 65536];
    loop {
        match sys::read(fd.raw(), &mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// Write what fits into `fd` now; how much that was.
fn fill(fd: &Fd) -> usize {
    let chunk = vec![7u8; 65536];
    let mut n = 0;
    while let Ok(k) = sys::write(fd.raw(), &chunk) {
        if k == 0 {
            break;
        }
        n += k;
    }
    n
}

/// Run until the application end `fd` reads EOF; how long that took (`None`: not within
/// `limit`).
fn until_eof(p: &mut Pair, fd: &Fd, limit: Duration) -> Option<Duration> {
    let start = p.now;
    p.run_until(limit, |_| at_eof(fd)).then(|| p.now - start)
}

fn getsockopt_int(p: &mut Pair, n: Node, id: u64, level: i32, name: i32) -> i32 {
    let req = Request::GetSockOpt {
        id,
        level,
        name,
        len: 4,
    };
    match p.request(n, req, vec![]).0 {
        Reply::Bytes(b) => i32::from_ne_bytes(b[..4].try_into().unwrap()),
        r => panic!("getsockopt: {r:?}"),
    }
}

#[test]
fn unacked_data_to_a_vanished_peer_times_out_with_etimedout() {
    let mut p = Pair::new(101);
    let (cid, c, _, _conn, _l) = established(&mut p);
    cut(&mut p);
    assert!(fill(&c) > 0);
    // Linux gives up after tcp_retries2 (15) retransmissions: 924.6 s with a 200 ms RTO.
    let took = until_eof(&mut p, &c, secs(3600)).expect("the connection never timed out");
    assert!(
        took >= RETRIES_TIMEOUT && took < RETRIES_TIMEOUT + secs(3),
        "took {took}"
    );
    assert_eq!(p.so_error(A, cid), libc::ETIMEDOUT);
    // Writes fail as after any end of the connection.
    assert!(sys::write(c.raw(), b"x").is_err());
    // Nothing of it is left in the stack but the socket the app still holds.
    drop(c);
    p.run_for(SEC);
    assert!(p.a.stack.is_idle(), "the stack still holds the connection");
}

#[test]
fn tcp_user_timeout_shortens_the_limit() {
    let mut p = Pair::new(103);
    let (cid, c, _, _conn, _l) = established(&mut p);
    assert_eq!(
        getsockopt_int(&mut p, A, cid, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
        0
    );
    let r = p.setsockopt_int(A, cid, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 5000);
    assert_eq!(r, Reply::Ok);
    assert_eq!(
        getsockopt_int(&mut p, A, cid, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
        5000
    );
    let r = p.setsockopt_int(A, cid, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, -1);
    assert_eq!(r, Reply::Err(Errno::EINVAL));
    cut(&mut p);
    assert!(fill(&c) > 0);
    let took = until_eof(&mut p, &c, secs(60)).expect("TCP_USER_TIMEOUT did not end it");
    assert!(took >= secs(5) && took < secs(7), "took {took}");
    assert_eq!(p.so_error(A, cid), libc::ETIMEDOUT);
}

#[test]
fn a_quiet_peer_is_never_timed_out() {
    let mut p = Pair::new(107);
    let (cid, c, _, conn, _l) = established(&mut p);
    // Data both ways, then hours of silence (no keep-alive asked): still connected.
    let up = pattern(100_000, 1);
    assert_eq!(p.transfer(&c, &conn, &up, false, secs(10)), up);
    let down = pattern(100_000, 2);
    assert_eq!(p.transfer(&conn, &c, &down, false, secs(10)), down);
    p.run_for(secs(3 * 3600));
    let msg = pattern(50_000, 3);
    assert_eq!(p.transfer(&c, &conn, &msg, false, secs(10)), msg);
    // Without keep-alive even a cut wire goes unnoticed while nothing is sent, as on Linux.
    cut(&mut p);
    p.run_for(secs(3 * 3600));
    assert!(!at_eof(&c));
    assert_eq!(p.so_error(A, cid), 0);
}

#[test]
fn closing_after_a_long_silence_is_a_clean_close() {
    let mut p = Pair::new(109);
    let (_, c, _, conn, _l) = established(&mut p);
    let q = pattern(1000, 4);
    assert_eq!(p.transfer(&c, &conn, &q, false, secs(5)), q);
    // Longer than every limit: the FIN must still go out and be answered, with no RST.
    p.run_for(secs(2 * 3600));
    drop(c);
    assert!(until_eof(&mut p, &conn, secs(5)).is_some());
    drop(conn);
    p.run_for(secs(5));
    assert_eq!(p.stats().tcp_rst, [0, 0]);
    assert!(p.a.stack.is_idle());
}

#[test]
fn keepalive_finds_a_vanished_idle_peer() {
    let mut p = Pair::new(113);
    let (cid, c, _, _conn, _l) = established(&mut p);
    for (name, v) in [
        (libc::TCP_KEEPIDLE, 10),
        (libc::TCP_KEEPINTVL, 2),
        (libc::TCP_KEEPCNT, 3),
    ] {
        assert_eq!(
            p.setsockopt_int(A, cid, libc::IPPROTO_TCP, name, v),
            Reply::Ok
        );
    }
    let r = p.setsockopt_int(A, cid, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    assert_eq!(r, Reply::Ok);
    // A live peer answers the probes: an idle hour changes nothing.
    p.run_for(secs(3600));
    assert!(!at_eof(&c));
    assert_eq!(p.so_error(A, cid), 0);
    // Gone: KEEPIDLE + KEEPCNT x KEEPINTVL of silence (16 s) ends it.
    let start = p.now;
    cut(&mut p);
    let took = until_eof(&mut p, &c, secs(600)).expect("keep-alive never gave up");
    assert!(
        took >= secs(6) && took <= secs(17),
        "took {took} from the cut"
    );
    assert!(p.now - start <= secs(17));
    assert_eq!(p.so_error(A, cid), libc::ETIMEDOUT);
}

#[test]
fn an_unanswered_zero_window_times_out_an_answered_one_does_not() {
    let mut p = Pair::new(127);
    let (cid, c, _, _conn, _l) = established(&mut p);
    // B's application never reads: A fills B's window and its own buffers.
    let fd = c.raw();
    let mut sent = 0;
    p.run_until(secs(60), |_| {
        sent += fill(&c);
        !writable(fd) && sent > 3 << 20
    });
    assert!(sent > 3 << 20, "only {sent} bytes went out");
    // B answers the window probes: an hour later the connection is still there.
    p.run_for(secs(3600));
    assert!(!at_eof(&c));
    assert_eq!(p.so_error(A, cid), 0);
    // Nobody answers any more: the probes run out as retransmissions do.
    cut(&mut p);
    let took = until_eof(&mut p, &c, secs(3600)).expect("the zero window never timed out");
    assert!(took <= RETRIES_TIMEOUT + secs(3), "took {took}");
    assert_eq!(p.so_error(A, cid), libc::ETIMEDOUT);
}

#[test]
fn an_orphan_with_unsent_data_is_dropped_after_the_orphan_limit() {
    let mut p = Pair::new(131);
    let (_, c, _, _conn, _l) = established(&mut p);
    cut(&mut p);
    assert!(fill(&c) > 0);
    p.run_for(secs(2));
    // The application closes: nobody is left to tell, the stack gives up on its own.
    drop(c);
    let start = p.now;
    assert!(
        p.run_until(secs(3600), |p| p.a.stack.is_idle()),
        "the orphan was never dropped"
    );
    let took = p.now - start;
    assert!(
        took >= ORPHAN_TIMEOUT - secs(3) && took < ORPHAN_TIMEOUT + secs(3),
        "took {took}"
    );
}

#[test]
fn an_orphan_in_fin_wait_2_is_dropped_after_the_fin_timeout() {
    let mut p = Pair::new(137);
    let (_, c, _, conn, _l) = established(&mut p);
    // A closes; B acknowledges the FIN but never closes its side.
    drop(c);
    assert!(until_eof(&mut p, &conn, secs(5)).is_some());
    let start = p.now;
    assert!(
        p.run_until(secs(3600), |p| p.a.stack.is_idle()),
        "FIN-WAIT-2 lasted forever"
    );
    let took = p.now - start;
    assert!(
        took >= FIN_TIMEOUT - SEC && took < FIN_TIMEOUT + secs(2),
        "took {took}"
    );
}

#[test]
fn an_orphan_whose_fin_is_never_answered_is_dropped() {
    let mut p = Pair::new(139);
    let (_, c, _, _conn, _l) = established(&mut p);
    cut(&mut p);
    drop(c);
    let start = p.now;
    assert!(
        p.run_until(secs(3600), |p| p.a.stack.is_idle()),
        "the unanswered FIN kept the connection forever"
    );
    let took = p.now - start;
    assert!(
        took >= ORPHAN_TIMEOUT - secs(3) && took < ORPHAN_TIMEOUT + secs(3),
        "took {took}"
    );
}

/// A's application fills the connection until B's window is shut (B's application never
/// reads) and A's buffers are full.
fn fill_the_window(p: &mut Pair, c: &Fd) {
    let fd = c.raw();
    let mut sent = 0;
    p.run_until(secs(60), |_| {
        sent += fill(c);
        !writable(fd) && sent > 3 << 20
    });
    assert!(sent > 3 << 20, "only {sent} bytes went out");
}

#[test]
fn tcp_user_timeout_ends_even_an_answered_zero_window() {
    // As Linux since 5.13: with TCP_USER_TIMEOUT, a window that stays shut ends the
    // connection although the peer answers the probes.
    let mut p = Pair::new(149);
    let (cid, c, _, _conn, _l) = established(&mut p);
    let r = p.setsockopt_int(A, cid, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 30_000);
    assert_eq!(r, Reply::Ok);
    fill_the_window(&mut p, &c);
    let took = until_eof(&mut p, &c, secs(600)).expect("the shut window lasted forever");
    assert!(took <= secs(31), "took {took}");
    assert_eq!(p.so_error(A, cid), libc::ETIMEDOUT);
    assert!(p.stats().tcp_rst[1] > 0, "B was not told");
}

#[test]
fn an_orphan_behind_a_window_that_never_opens_is_dropped() {
    // B is alive and answers the window probes, but never reads: Linux drops the orphan
    // once the probes' backoff reaches its maximum RTO (204.6 s); here twice the orphan limit.
    let mut p = Pair::new(151);
    let (_, c, _, _conn, _l) = established(&mut p);
    fill_the_window(&mut p, &c);
    drop(c);
    let start = p.now;
    assert!(
        p.run_until(secs(3600), |p| p.a.stack.is_idle()),
        "the orphan was never dropped"
    );
    let took = p.now - start;
    assert!(took <= ORPHAN_TIMEOUT * 2 + secs(2), "took {took}");
    assert!(p.stats().tcp_rst[1] > 0, "B was not told");
}
