//! VXLAN uplinks (`--uplink vxlan://…`) on loopback: a test UDP socket plays the remote
//! tunnel endpoint. (Kernel vxlan devices and two switches across network namespaces:
//! `tests/tests/vxlan.rs`.)

mod util;

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
