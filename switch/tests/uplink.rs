//! VXLAN uplinks (`--uplink vxlan://…`) on loopback: a test UDP socket plays the remote
//! tunnel endpoint. (Kernel vxlan devices and two switches across network namespaces:
//! `tests/tests/vxlan.rs`.)

mod util;

use ioth_common::port::{Incoming, SwitchPort};
use ioth_common::sys::{self, Fd};
use ioth_common::vde;
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use util::*;

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn wrong_uplink_urls_stop_the_switch_with_a_clear_error() {
    let tmp = TempDir::new("uplink-bad");
    for (url, says) in [
        ("slirp", "vdeplug4 URL"),
        ("vxlan://10.0.0.1/vni=16777216", "24 bits"),
        ("vxlan://10.0.0.1/colour=red", "unknown option"),
        ("vxlan://nowhere", "not an IPv4 or IPv6 address"),
    ] {
        let e = start_on(
            &tmp.path().join("sw"),
            &tmp.path().join("pid"),
            &["--uplink", url],
        )
        .expect_err(url);
        assert!(e.contains(says), "{url}: {e}");
    }
}

#[test]
fn an_uplink_whose_port_is_taken_waits_and_comes_up_when_it_is_free() {
    // The port is the squatter's from the start: no window in which another test takes it.
    let squatter = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let url = format!("vxlan://127.0.0.2/port={port}/local=127.0.0.1");
    let sw = Switch::start(&["--uplink", &url]);
    let (ok, text) = sw.ctl("port/print 1");
    assert!(ok, "{text}");
    assert!(
        text.contains("kind=vxlan") && text.contains("UPLINK: down (bind 127.0.0.1:"),
        "{text}"
    );
    drop(squatter);
    wait_until("the uplink up", || {
        sw.ctl("port/print 1")
            .1
            .contains("UPLINK: up remote 127.0.0.2")
    });
}

#[test]
fn frames_cross_the_tunnel_and_what_is_not_vxlan_is_counted() {
    let vtep = UdpSocket::bind("127.0.0.2:0").unwrap();
    let port = vtep.local_addr().unwrap().port();
    vtep.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let url = format!("vxlan://127.0.0.2/port={port}/vni=5/local=127.0.0.1");
    let sw = Switch::start(&["--uplink", &url]);
    wait_until("the uplink up", || {
        sw.ctl("port/print 1").1.contains("UPLINK: up")
    });
    let a = sw.native("a");
    let hdr = [0x08, 0, 0, 0, 0, 0, 5, 0];
    // Out: a broadcast from the native port is one datagram, header and whole frame.
    let f = frame(BCAST, mac(1), 200, 1);
    send(&a, &f);
    let mut buf = vec![0u8; 65536];
    let (n, from) = vtep.recv_from(&mut buf).unwrap();
    assert_eq!(from, format!("127.0.0.1:{port}").parse().unwrap());
    assert_eq!(&buf[..8], &hdr);
    assert_eq!(&buf[8..n], &f[..]);
    // In: a datagram for our VNI reaches the node, as the frame it carries.
    let g = frame(mac(1), mac(9), 300, 2);
    let to = format!("127.0.0.1:{port}");
    vtep.send_to(&[&hdr[..], &g].concat(), &to).unwrap();
    assert_eq!(recv(&a, 2000).as_deref(), Some(&g[..]));
    // Not VXLAN for us: too short, the I flag clear, another VNI. Dropped and counted; the
    // tunnel goes on working.
    vtep.send_to(&[1, 2, 3, 4, 5], &to).unwrap();
    vtep.send_to(&[&[0u8, 0, 0, 0, 0, 0, 5, 0][..], &g].concat(), &to)
        .unwrap();
    vtep.send_to(&[&[8u8, 0, 0, 0, 0, 0, 6, 0][..], &g].concat(), &to)
        .unwrap();
    let h = frame(mac(1), mac(9), 64, 3);
    vtep.send_to(&[&hdr[..], &h].concat(), &to).unwrap();
    assert_eq!(recv(&a, 2000).as_deref(), Some(&h[..]));
    assert_silent(&a, "nothing but the two frames");
    // Learned: a unicast to mac(9) goes to the endpoint it came from.
    let u = frame(mac(9), mac(1), 100, 4);
    send(&a, &u);
    let (n, _) = vtep.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[8..n], &u[..]);
    let tunnel = port_numbers(&sw, 1, "TUNNEL:");
    assert_eq!(tunnel[0], 1, "one address learned");
    assert_eq!(tunnel[1], 3, "three bad datagrams");
    let c = counters(&sw, 1);
    assert_eq!((c[0], c[1]), (2, 2), "two frames in, two out");
    // The largest frame on the wire: the route's MTU (65535 on loopback) less 36. The port
    // itself takes the nodes' 64 KiB frames (TCP is cut to fit).
    let (_, text) = sw.ctl("port/print 1");
    assert!(text.contains("wire_frame 65499"), "{text}");
    assert!(text.contains("max_frame=65536"), "{text}");
}

/// Next message on `p` within `ms`: a frame, or an uplink offer with its descriptor.
fn next(p: &SwitchPort, ms: u64) -> Option<Result<Vec<u8>, (vde::UplinkOffer, Fd)>> {
    let mut buf = vec![0u8; 70000];
    match recv_any(p, &mut buf, ms)? {
        Incoming::Frame(n) => Some(Ok(buf[..n].to_vec())),
        Incoming::Uplink(o, fd) => Some(Err((o, fd))),
        _ => panic!("unexpected short message"),
    }
}

/// A switch with an uplink to a test endpoint at 127.0.0.2 (VNI 5) and a native port that
/// takes uplink offers (`flags`), on which the endpoint's MAC, mac(9), was learned: the
/// switch, the endpoint, its port and the native port.
fn offer_lab(extra: &[&str], flags: u32) -> (Switch, UdpSocket, u16, SwitchPort) {
    let vtep = UdpSocket::bind("127.0.0.2:0").unwrap();
    let port = vtep.local_addr().unwrap().port();
    vtep.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let url = format!("vxlan://127.0.0.2/port={port}/vni=5/local=127.0.0.1");
    let mut args = vec!["--uplink", &url];
    args.extend_from_slice(extra);
    let sw = Switch::start(&args);
    wait_until("the uplink up", || {
        sw.ctl("port/print 1").1.contains("UPLINK: up")
    });
    let a = SwitchPort::open_native_flags(&sw.dir.join("native"), "a", 65536, flags)
        .expect("native port");
    let g = frame(mac(1), mac(9), 300, 1);
    vtep.send_to(&[&VNI5[..], &g].concat(), format!("127.0.0.1:{port}"))
        .unwrap();
    assert_eq!(next(&a, 2000).and_then(|m| m.ok()), Some(g));
    (sw, vtep, port, a)
}

const VNI5: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 5, 0];

/// The offer's route (its first message), checked against what the uplink says.
fn route_of(fd: &Fd) -> vde::UplinkRoute {
    assert!(sys::wait_fd(fd.raw(), libc::POLLIN, 2000).unwrap());
    let mut b = [0u8; 256];
    let n = sys::recv(fd.raw(), &mut b, libc::MSG_DONTWAIT).unwrap();
    vde::UplinkRoute::parse(&b[..n]).expect("a route")
}

#[test]
fn a_port_that_asks_is_offered_the_endpoint_of_a_remote_mac_until_it_moves() {
    let (sw, vtep, port, a) = offer_lab(&[], vde::NATIVE_FLAG_UPLINK);
    assert!(a.uplink, "flag granted");
    // A unicast to mac(9): it goes through the tunnel, and the port gets an offer.
    let u = frame(mac(9), mac(1), 100, 2);
    send(&a, &u);
    let mut buf = vec![0u8; 65536];
    let (n, _) = vtep.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[8..n], &u[..]);
    let (o, fd) = match next(&a, 2000) {
        Some(Err(offer)) => offer,
        other => panic!("no offer: {other:?}"),
    };
    assert_eq!(o.peer, mac(9));
    let r = route_of(&fd);
    assert_eq!(r.to, format!("127.0.0.2:{port}").parse().unwrap());
    assert_eq!(r.local, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(r.header, VNI5);
    assert_eq!(r.max_frame, 65499, "the wire's frame, as port/print says");
    assert_eq!(Some(r.netns), vde::netns_of("self"));
    let (ok, text) = sw.ctl("shortcut/print");
    assert!(ok && text.contains("02:10:20:30:40:09"), "{text}");
    // Offered once.
    send(&a, &u);
    assert!(next(&a, 300).is_none(), "no second offer");
    // mac(9) speaks from another endpoint: the offer ends (EOF), and the next unicast
    // brings one for the new place.
    let moved = UdpSocket::bind(format!("127.0.0.3:{port}")).unwrap();
    moved
        .send_to(
            &[&VNI5[..], &frame(mac(1), mac(9), 64, 3)].concat(),
            format!("127.0.0.1:{port}"),
        )
        .unwrap();
    assert_eq!(next(&a, 2000).and_then(|m| m.ok()).map(|f| f[14]), Some(3));
    assert!(sys::wait_fd(fd.raw(), libc::POLLIN, 2000).unwrap());
    assert_eq!(
        sys::recv(fd.raw(), &mut buf, libc::MSG_DONTWAIT),
        Ok(0),
        "EOF"
    );
    send(&a, &u);
    let (_, fd2) = match next(&a, 2000) {
        Some(Err(offer)) => offer,
        other => panic!("no new offer: {other:?}"),
    };
    assert_eq!(
        route_of(&fd2).to,
        format!("127.0.0.3:{port}").parse().unwrap()
    );
    // The switch going away ends it too.
    sw.stop();
    assert!(sys::wait_fd(fd2.raw(), libc::POLLIN, 5000).unwrap());
    assert!(sys::recv(fd2.raw(), &mut buf, libc::MSG_DONTWAIT).is_ok_and(|n| n == 0));
}

#[test]
fn no_uplink_offer_to_a_port_that_does_not_ask_nor_with_no_uplink_shortcuts() {
    for (extra, flags) in [
        (&[][..], 0),
        (&["--no-uplink-shortcuts"][..], vde::NATIVE_FLAG_UPLINK),
        (&["--no-shortcuts"][..], vde::NATIVE_FLAG_UPLINK),
    ] {
        let (_sw, vtep, _port, a) = offer_lab(extra, flags);
        assert!(!a.uplink, "{extra:?}: flag not granted");
        let u = frame(mac(9), mac(1), 100, 2);
        for _ in 0..3 {
            send(&a, &u);
            let mut buf = vec![0u8; 65536];
            let (n, _) = vtep.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[8..n], &u[..], "{extra:?}: through the switch");
        }
        assert!(next(&a, 300).is_none(), "{extra:?}: no offer");
    }
}

#[test]
fn a_cable_whose_vde_plug_fails_is_shown_down_and_run_again() {
    if !have(
        "vde_plug",
        "a_cable_whose_vde_plug_fails_is_shown_down_and_run_again",
    ) {
        return;
    }
    // vde_plug knows no such plugin: it exits at once, saying so.
    let sw = Switch::start(&["--uplink", "nosuch://nowhere"]);
    wait_until("two runs of vde_plug", || {
        let (_, text) = sw.ctl("port/print 1");
        text.contains("UPLINK: down (vde_plug exited")
            && numbers_after(&text, "UPLINK:")
                .last()
                .is_some_and(|r| *r >= 2)
    });
    let (_, text) = sw.ctl("port/print 1");
    assert!(text.contains("cable nosuch://nowhere"), "{text}");
    // The switch itself goes on: a native port still works.
    let a = sw.native("a");
    let b = sw.native("b");
    let f = frame(BCAST, mac(1), 100, 1);
    send(&a, &f);
    assert_eq!(recv(&b, 2000).as_deref(), Some(&f[..]));
}
