//! UDP through two stacks: datagram boundaries and addresses.

use super::*;
use Node::{A, B};
use ioth_common::ctl::DgramHeader;
use std::io::IoSlice;

const SEC: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A UDP socket of node `n` bound to `addr`: (id, application end).
fn udp(p: &mut Pair, n: Node, addr: &str) -> (u64, Fd) {
    let domain = domain_of(addr);
    let (id, fd) = p.socket(n, domain, libc::SOCK_DGRAM);
    assert_eq!(p.bind(n, id, addr), Reply::Ok);
    (id, fd)
}

/// Send one datagram to `to` (`None`: the connected peer), header first, as the shim does.
fn send_to(fd: &Fd, to: Option<&str>, payload: &[u8]) {
    let hdr = DgramHeader {
        addr: WireAddr(to.map(|a| a.parse().unwrap())),
        len: payload.len() as u32,
        flags: 0,
    }
    .encode();
    sys::sendmsg(
        fd.raw(),
        &[IoSlice::new(&hdr), IoSlice::new(payload)],
        &[],
        libc::MSG_DONTWAIT,
    )
    .unwrap();
}

/// The datagrams `fd` received: (source, payload), each read whole in one call.
fn recv_all(fd: &Fd) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while let Ok(n) = sys::recv(fd.raw(), &mut buf, libc::MSG_DONTWAIT) {
        let h = DgramHeader::decode(&buf[..n]).unwrap();
        let payload = buf[DgramHeader::LEN..n].to_vec();
        assert_eq!(h.len as usize, payload.len());
        out.push((h.addr.0.unwrap(), payload));
    }
    out
}

#[test]
fn datagram_boundaries_and_sources_v4_and_v6() {
    // Up to the link's MTU (1500 here, as on a VDE port). Not yet beyond: smoltcp fragments
    // IPv4 into a 1500-byte buffer and one datagram at a time, and not IPv6 at all (native
    // ports carry 64 KiB frames, so datagrams are never fragmented there).
    for (srv, cli, sizes) in [
        ("10.0.0.2:7", "10.0.0.1:5000", &[0usize, 1, 1000, 1472][..]),
        (
            "[fd00::2]:7",
            "[fd00::1]:5000",
            &[0usize, 1, 1000, 1452][..],
        ),
    ] {
        let mut p = Pair::new(43);
        let (_, s) = udp(&mut p, B, srv);
        let (_, c) = udp(&mut p, A, cli);
        let sent: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| pattern(*n, i as u32 + 10))
            .collect();
        for d in &sent {
            send_to(&c, Some(srv), d);
        }
        let mut got = Vec::new();
        let all = sent.len();
        assert!(
            p.run_until(secs(5), |_| {
                got.extend(recv_all(&s));
                got.len() >= all
            }),
            "{srv}: got {} of {all} datagrams: {:?}",
            got.len(),
            got.iter().map(|g| g.1.len()).collect::<Vec<_>>()
        );
        for ((src, payload), want) in got.iter().zip(&sent) {
            assert_eq!(src.to_string(), cli);
            assert_eq!(payload.len(), want.len());
            assert!(payload == want);
        }
    }
}

#[test]
fn connected_udp_takes_only_its_peer() {
    let mut p = Pair::new(47);
    let (_, s) = udp(&mut p, B, "10.0.0.2:53");
    let (cid, c) = udp(&mut p, A, "10.0.0.1:6000");
    let (_, other) = udp(&mut p, A, "10.0.0.1:6001");
    let peer = WireAddr(Some("10.0.0.2:53".parse().unwrap()));
    let r = p
        .request(
            A,
            Request::Connect {
                id: cid,
                addr: peer,
            },
            vec![],
        )
        .0;
    assert_eq!(r, Reply::Ok);
    send_to(&c, None, b"query");
    let mut got = Vec::new();
    assert!(p.run_until(SEC, |_| {
        got.extend(recv_all(&s));
        !got.is_empty()
    }));
    assert_eq!(got[0].0.to_string(), "10.0.0.1:6000");
    assert_eq!(got[0].1, b"query");
    // An answer from the peer arrives; a datagram from another port of node A does not.
    send_to(&s, Some("10.0.0.1:6000"), b"answer");
    send_to(&other, Some("10.0.0.1:6000"), b"stray");
    let mut back = Vec::new();
    p.run_until(SEC, |_| {
        back.extend(recv_all(&c));
        false
    });
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].1, b"answer");
}

/// A bound UDP socket outlives its stack, as a listener does (`crate::keeper`): B's server
/// socket is reported with its daemon end, B's stack is replaced by a new one that takes it
/// back, and the same application end gets A's next datagram and answers it from the same
/// port; a datagram that waited on the socketpair during the change is still there. A
/// connected one keeps its peer.
#[test]
fn a_bound_udp_socket_is_taken_back_by_a_new_stack() {
    use crate::stack::Kept;
    let mut p = Pair::new(23);
    p.b.stack.keep_listeners();
    let (_, srv) = udp(&mut p, B, "10.0.0.2:53");
    let (cid, conn) = udp(&mut p, B, "10.0.0.2:54");
    assert_eq!(
        p.request(
            B,
            Request::Connect {
                id: cid,
                addr: WireAddr(Some("10.0.0.1:6000".parse().unwrap())),
            },
            vec![]
        )
        .0,
        Reply::Ok
    );
    let (_, cli) = udp(&mut p, A, "10.0.0.1:6000");
    let mut kept = std::collections::HashMap::new();
    for k in p.b.stack.take_kept() {
        if let Kept::Listen(k, fd) = k {
            kept.insert(k.id, (k, fd));
        }
    }
    assert_eq!(
        kept.len(),
        2,
        "both bound sockets reported (the last report of each)"
    );
    assert!(kept.values().all(|(k, _)| k.udp));
    assert_eq!(
        kept.values().filter(|(k, _)| k.peer.is_some()).count(),
        1,
        "the connected one with its peer"
    );
    // The application wrote while its daemon was gone.
    send_to(&conn, None, b"waited");
    p.b = Side::new(2, 99, p.now);
    for (k, fd) in kept.into_values() {
        p.b.stack.restore_socket(&k, fd, p.now);
    }
    send_to(&cli, Some("10.0.0.2:53"), b"question");
    let mut got = Vec::new();
    assert!(p.run_until(SEC, |_| {
        got.extend(recv_all(&srv));
        !got.is_empty()
    }));
    assert_eq!(
        got,
        vec![("10.0.0.1:6000".parse().unwrap(), b"question".to_vec())]
    );
    send_to(&srv, Some("10.0.0.1:6000"), b"answer");
    let mut back = Vec::new();
    assert!(p.run_until(SEC, |_| {
        back.extend(recv_all(&cli));
        back.len() == 2
    }));
    back.sort();
    assert_eq!(
        back,
        vec![
            ("10.0.0.2:53".parse().unwrap(), b"answer".to_vec()),
            ("10.0.0.2:54".parse().unwrap(), b"waited".to_vec()),
        ]
    );
}
