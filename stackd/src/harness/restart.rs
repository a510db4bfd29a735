//! A node's stack replaced by a new one, as when the keeper restarts a daemon that died
//! (`crate::keeper`): the new stack takes back the listener and resets the peers of the
//! connections it lost.

use super::*;
use crate::stack::Kept;
use Node::{A, B};

const SEC: Duration = Duration::from_secs(1);

/// B listens (reporting to a keeper), A connects and receives a little; then B's stack is
/// replaced by a new one that takes back the listener and resets A's connection.
fn restart(server: &str, reset: bool) {
    let mut p = Pair::new(21);
    p.b.stack.keep_listeners();
    let (_, l) = p.listener(B, server, 16);
    let kept: Vec<_> =
        p.b.stack
            .take_kept()
            .into_iter()
            .filter_map(|k| match k {
                Kept::Listen(k, fd) => Some((k, fd)),
                Kept::Drop(_) => None,
            })
            .collect();
    assert_eq!(kept.len(), 1, "the listener was not reported");
    let (cid, c) = p.connecting(A, server);
    assert!(p.until_writable(&c, SEC));
    let (rec, conn) = p.accept(&l, SEC).expect("accept");
    let data = pattern(10_000, 3);
    assert_eq!(p.transfer(&conn, &c, &data, false, SEC), data);

    // B's daemon dies: its stack goes, and with it the daemon end of the connection.
    let seed = 77;
    p.b = Side::new(2, seed, p.now);
    drop(conn);
    for (k, fd) in kept {
        p.b.stack.restore_socket(&k, fd, p.now);
    }
    if reset {
        let local = rec.local.0.unwrap();
        let remote = rec.peer.0.unwrap();
        p.b.stack.reset_peers(vec![(local, remote)], p.now);
    }
    let reset_seen = p.run_until(Duration::from_millis(200), |p| {
        p.so_error(A, cid) == libc::ECONNRESET
    });
    assert_eq!(
        reset_seen, reset,
        "the client's connection after the restart"
    );

    // The same listener fd accepts a new connection from the new stack.
    let (cid2, c2) = p.connecting(A, server);
    assert!(
        p.until_writable(&c2, SEC),
        "no handshake with the new stack"
    );
    assert_eq!(p.so_error(A, cid2), 0);
    let (_, conn2) = p
        .accept(&l, SEC)
        .expect("the old listener fd accepts again");
    let up = pattern(50_000, 4);
    assert_eq!(p.transfer(&c2, &conn2, &up, false, SEC), up);
}

#[test]
fn a_new_stack_resets_the_lost_connections_and_takes_the_listener_back_v4() {
    restart("10.0.0.2:80", true);
}

#[test]
fn a_new_stack_resets_the_lost_connections_and_takes_the_listener_back_v6() {
    restart("[fd00::2]:80", true);
}

#[test]
fn without_the_probes_the_client_waits() {
    restart("10.0.0.2:80", false);
}
