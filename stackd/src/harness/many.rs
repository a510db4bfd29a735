//! Many connections at once: beyond `demux::MANY` a node finds each segment's socket in its
//! own index and sends for the sockets with work only, trying every socket on a timer. The
//! handshakes, byte streams and closes must be those of a few connections, also with frames
//! lost (the retransmissions then come from the timed passes).

use super::*;
use Node::{A, B};

const N: usize = 300;

/// `N` connections from A to B, all open at once; each carries its own bytes both ways,
/// then closes. No RST at any point.
fn many_connections(seed: u64, impair: Impair) {
    let mut p = Pair::new(seed);
    p.impair(impair);
    let limit = Duration::from_secs(120);
    let (_, l) = p.listener(B, "10.0.0.2:80", 4096);
    let clients: Vec<(u64, Fd)> = (0..N).map(|_| p.connecting(A, "10.0.0.2:80")).collect();
    let mut conns: Vec<(AcceptRecord, Fd)> = Vec::new();
    let lfd = l.raw();
    assert!(
        p.run_until(limit, |_| {
            while let Some(c) = try_accept(lfd) {
                conns.push(c);
            }
            conns.len() == N
        }),
        "accepted {} of {N}",
        conns.len()
    );
    for (id, c) in &clients {
        assert!(p.until_writable(c, limit));
        assert_eq!(p.so_error(A, *id), 0);
    }
    // Each client says which it is; each server end answers with what it read, reversed.
    for (i, (_, c)) in clients.iter().enumerate() {
        sys::write(
            c.raw(),
            format!("client {i:04} {}", "x".repeat(i)).as_bytes(),
        )
        .unwrap();
    }
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); N];
    let want_len = |i: usize| 12 + i;
    let fds: Vec<RawFd> = conns.iter().map(|(_, f)| f.raw()).collect();
    assert!(
        p.run_until(limit, |_| {
            for (k, fd) in fds.iter().enumerate() {
                let mut b = [0u8; 4096];
                while let Ok(n) = sys::read(*fd, &mut b) {
                    if n == 0 {
                        break;
                    }
                    got[k].extend_from_slice(&b[..n]);
                }
            }
            got.iter()
                .all(|g| g.len() >= 12 && g.len() == want_len(parse_index(g)))
        }),
        "requests did not all arrive"
    );
    for (k, (_, f)) in conns.iter().enumerate() {
        let mut back = got[k].clone();
        back.reverse();
        sys::write(f.raw(), &back).unwrap();
    }
    let mut answers: Vec<Vec<u8>> = vec![Vec::new(); N];
    let cfds: Vec<RawFd> = clients.iter().map(|(_, c)| c.raw()).collect();
    assert!(
        p.run_until(limit, |_| {
            for (i, fd) in cfds.iter().enumerate() {
                let mut b = [0u8; 4096];
                while let Ok(n) = sys::read(*fd, &mut b) {
                    if n == 0 {
                        break;
                    }
                    answers[i].extend_from_slice(&b[..n]);
                }
            }
            (0..N).all(|i| answers[i].len() == want_len(i))
        }),
        "answers did not all arrive"
    );
    for (i, a) in answers.iter().enumerate() {
        let mut a = a.clone();
        a.reverse();
        assert_eq!(
            a,
            format!("client {i:04} {}", "x".repeat(i)).into_bytes(),
            "connection {i} got another's bytes"
        );
    }
    // Clients close; every server end reads EOF.
    drop(clients);
    let mut eof = vec![false; N];
    assert!(
        p.run_until(limit, |_| {
            for (k, fd) in fds.iter().enumerate() {
                let mut b = [0u8; 64];
                if matches!(sys::read(*fd, &mut b), Ok(0)) {
                    eof[k] = true;
                }
            }
            eof.iter().all(|e| *e)
        }),
        "{} of {N} server ends saw EOF",
        eof.iter().filter(|e| **e).count()
    );
    assert_eq!(p.stats().tcp_rst, [0, 0], "{:?}", p.stats());
}

/// The client index a request (`client NNNN ...`) names.
fn parse_index(g: &[u8]) -> usize {
    std::str::from_utf8(&g[7..11])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX / 2)
}

#[test]
fn three_hundred_connections_at_once_keep_their_own_bytes() {
    many_connections(41, Impair::default());
}

#[test]
fn three_hundred_connections_survive_frame_loss() {
    many_connections(
        43,
        Impair {
            loss: 0.05,
            delay: Duration::from_millis(1),
            ..Impair::default()
        },
    );
}

/// More established connections than the listener's socketpair holds records for (its
/// daemon end's send buffer made small here) while the application takes none: the records
/// wait in the daemon, which then watches the listener for room (it does not otherwise: its
/// end turns writable at every accept), and each accept makes room for the next. All
/// arrive, none lost.
#[test]
fn records_that_do_not_fit_wait_for_room_on_the_listener() {
    const M: usize = 120;
    let mut p = Pair::new(47);
    let limit = Duration::from_secs(60);
    let (lid, l) = p.listener(B, "10.0.0.2:80", 4096);
    let dmn = p.b.stack.daemon_end(lid).unwrap();
    sys::setsockopt_int(dmn, libc::SOL_SOCKET, libc::SO_SNDBUF, 4096).unwrap();
    let clients: Vec<(u64, Fd)> = (0..M).map(|_| p.connecting(A, "10.0.0.2:80")).collect();
    // Every connect completes (the handshake does not wait for accept), so every record
    // is made; the listener's buffer fills on the way.
    assert!(
        p.run_until(limit, |_| clients.iter().all(|(_, c)| writable(c.raw()))),
        "the connects did not all complete"
    );
    let lfd = l.raw();
    let mut got = 0;
    assert!(
        p.run_until(limit, |_| {
            while try_accept(lfd).is_some() {
                got += 1;
            }
            got == M
        }),
        "accepted {got} of {M}"
    );
}
