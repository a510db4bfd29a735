//! TCP through two stacks: handshakes, data, backlog, resets, half-close, connect outcomes,
//! loss.

use super::*;
use Node::{A, B};

const SEC: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn handshake_and_data_both_ways_v4_and_v6() {
    for (server, client_ip) in [("10.0.0.2:80", "10.0.0.1"), ("[fd00::2]:80", "fd00::1")] {
        let mut p = Pair::new(7);
        let (_, l) = p.listener(B, server, 16);
        let (cid, c) = p.connecting(A, server);
        assert!(p.until_writable(&c, SEC));
        assert_eq!(p.so_error(A, cid), 0);
        let (rec, conn) = p.accept(&l, SEC).expect("accept");
        let peer = rec.peer.0.unwrap();
        assert_eq!(peer.ip().to_string(), client_ip);
        assert_eq!(rec.local.0.unwrap().to_string(), server);
        let up = pattern(300_000, 1);
        assert_eq!(p.transfer(&c, &conn, &up, false, secs(10)), up);
        let down = pattern(200_000, 2);
        assert_eq!(p.transfer(&conn, &c, &down, true, secs(10)), down);
        assert_eq!(p.stats().tcp_rst, [0, 0]);
    }
}

#[test]
fn backlog_full_drops_syns_and_never_resets() {
    let mut p = Pair::new(11);
    let (_, l) = p.listener(B, "10.0.0.2:80", 1);
    // The first connection fills the backlog (nobody accepts it yet).
    let (c1id, c1) = p.connecting(A, "10.0.0.2:80");
    assert!(p.until_writable(&c1, SEC));
    assert_eq!(p.so_error(A, c1id), 0);
    // The second one's SYNs are dropped, not refused: it stays in progress.
    let (c2id, c2) = p.connecting(A, "10.0.0.2:80");
    p.run_for(secs(3));
    assert!(
        !writable(c2.raw()),
        "second connect finished while the backlog was full"
    );
    assert!(p.stats().tcp_syn[1] >= 2, "no SYN was retransmitted");
    assert_eq!(
        p.stats().tcp_rst,
        [0, 0],
        "a SYN beyond the backlog was reset"
    );
    // Accepting the first makes room: a retransmitted SYN gets through.
    assert!(try_accept(l.raw()).is_some());
    assert!(
        p.until_writable(&c2, secs(10)),
        "second connect never finished"
    );
    assert_eq!(p.so_error(A, c2id), 0);
    assert!(p.accept(&l, SEC).is_some());
    assert_eq!(p.stats().tcp_rst, [0, 0]);
}

#[test]
fn close_with_unread_data_resets() {
    let mut p = Pair::new(13);
    let (cid, c, conn, _l) = p.established("10.0.0.2:80");
    sys::write(c.raw(), b"never read").unwrap();
    // Let the data reach the server's application end, unread.
    let fd = conn.raw();
    assert!(p.run_until(SEC, |_| readable(fd)));
    drop(conn);
    assert!(
        p.run_until(SEC, |p| p.stats().tcp_rst[0] > 0),
        "no RST for a close with unread data"
    );
    p.run_for(Duration::from_millis(100));
    assert_eq!(p.so_error(A, cid), libc::ECONNRESET);
    assert_eq!(read_now(&c), None, "the client reads EOF after the reset");
}

#[test]
fn refused_and_reset_are_told_apart() {
    let mut p = Pair::new(17);
    // Nobody listens on port 81: RST to the SYN, ECONNREFUSED.
    let (cid, c) = p.connecting(A, "10.0.0.2:81");
    assert!(p.until_writable(&c, SEC));
    assert_eq!(p.so_error(A, cid), libc::ECONNREFUSED);
    // An established connection closed with SO_LINGER 0: RST, ECONNRESET.
    let (_, l) = p.listener(B, "[fd00::2]:80", 16);
    let (cid, c) = p.connecting(A, "[fd00::2]:80");
    assert!(p.until_writable(&c, SEC));
    assert_eq!(p.so_error(A, cid), 0);
    let (rec, conn) = p.accept(&l, SEC).unwrap();
    let mut linger = 1i32.to_ne_bytes().to_vec();
    linger.extend_from_slice(&0i32.to_ne_bytes());
    let req = Request::SetSockOpt {
        id: rec.id,
        level: libc::SOL_SOCKET,
        name: libc::SO_LINGER,
        value: linger,
    };
    assert_eq!(p.request(B, req, vec![]).0, Reply::Ok);
    drop(conn);
    assert!(p.run_until(SEC, |p| p.stats().tcp_rst[0] > 0));
    p.run_for(Duration::from_millis(100));
    assert_eq!(p.so_error(A, cid), libc::ECONNRESET);
    assert_eq!(read_now(&c), None);
}

#[test]
fn half_close_keeps_the_other_direction() {
    let mut p = Pair::new(19);
    let (_, c, conn, _l) = p.established("10.0.0.2:80");
    let q = pattern(5_000, 3);
    // The client sends its request and shuts down its side: the server reads it all, then EOF.
    assert_eq!(p.transfer(&c, &conn, &q, true, secs(5)), q);
    // The server still answers on the other direction, then closes.
    let a = pattern(100_000, 4);
    assert_eq!(p.transfer(&conn, &c, &a, true, secs(5)), a);
    assert_eq!(p.stats().tcp_rst, [0, 0]);
}

#[test]
fn connect_to_an_absent_neighbour_fails_with_ehostunreach_in_bounded_time() {
    let mut p = Pair::new(23);
    let start = p.now;
    let (cid, c) = p.connecting(A, "10.0.0.99:80");
    assert!(p.until_writable(&c, secs(10)));
    let took = p.now - start;
    assert_eq!(p.so_error(A, cid), libc::EHOSTUNREACH);
    assert!(
        took >= crate::stack::NEIGHBOUR_TIMEOUT && took < crate::stack::NEIGHBOUR_TIMEOUT + SEC,
        "took {took}"
    );
}

#[test]
fn connect_without_answer_times_out_in_bounded_time() {
    let mut p = Pair::new(29);
    // B answers ARP, but its SYN-ACKs never arrive.
    p.filter(Box::new(|to_b, f| {
        !to_b && tcp_flags(f).is_some_and(|t| t.syn && t.ack)
    }));
    let (_, _l) = p.listener(B, "10.0.0.2:80", 16);
    let start = p.now;
    let (cid, c) = p.connecting(A, "10.0.0.2:80");
    assert!(p.until_writable(&c, secs(60)));
    let took = p.now - start;
    assert_eq!(p.so_error(A, cid), libc::ETIMEDOUT);
    let limit = crate::stack::CONNECT_TIMEOUT;
    assert!(took >= limit && took < limit + SEC, "took {took}");
}

#[test]
fn non_blocking_connect_completes_through_connect_async() {
    let mut p = Pair::new(31);
    let (_, l) = p.listener(B, "[fd00::2]:8080", 16);
    let (id, c) = p.socket(A, libc::AF_INET6, libc::SOCK_STREAM);
    // As the shim does: make the fd unwritable itself, then a one-way ConnectAsync.
    sys::setsockopt_int(c.raw(), libc::SOL_SOCKET, libc::SO_SNDBUF, 0).unwrap();
    let mut filler = 0u32;
    while sys::write(c.raw(), &[0u8; 512]).is_ok_and(|n| {
        filler += n as u32;
        n > 0
    }) {}
    assert!(!writable(c.raw()));
    let req = Request::ConnectAsync {
        id,
        addr: WireAddr(Some("[fd00::2]:8080".parse().unwrap())),
        filler,
    };
    let dup = c.dup_cloexec(0).unwrap();
    p.request(A, req, vec![dup]);
    assert!(p.until_writable(&c, SEC), "connect never completed");
    assert_eq!(p.so_error(A, id), 0);
    let (_, conn) = p.accept(&l, SEC).unwrap();
    // The filler was drained: the first bytes the server sees are the app's.
    let msg = pattern(10_000, 5);
    assert_eq!(p.transfer(&c, &conn, &msg, false, secs(5)), msg);
    // A second connect on it says EISCONN, as Linux.
    assert_eq!(
        p.connect(A, id, &c, "[fd00::2]:8080"),
        Reply::Err(Errno(libc::EISCONN))
    );
}

#[test]
fn transfer_survives_five_percent_frame_loss() {
    let mut p = Pair::new(37);
    let (_, c, conn, _l) = p.established("10.0.0.2:80");
    p.impair(Impair {
        loss: 0.05,
        delay: Duration::from_millis(1),
        ..Impair::default()
    });
    let data = pattern(1 << 20, 6);
    let got = p.transfer(&c, &conn, &data, true, Duration::from_secs(900));
    assert!(
        p.stats().lost[1] > 10,
        "the wire lost too little: {:?}",
        p.stats()
    );
    assert_eq!(got.len(), data.len());
    assert!(got == data, "content differs");
}

#[test]
fn reordering_and_jitter_keep_the_byte_stream() {
    let mut p = Pair::new(41);
    let (_, c, conn, _l) = p.established("[fd00::2]:80");
    p.impair(Impair {
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(5),
        reorder: 0.1,
        ..Impair::default()
    });
    let data = pattern(500_000, 7);
    assert!(p.transfer(&c, &conn, &data, true, Duration::from_secs(300)) == data);
}
