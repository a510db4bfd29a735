//! Shortcuts between native ports (`NATIVE_FLAG_SHORTCUT`): offered for known unicast between
//! two ports that ask for them, never to other clients or with `--pcap`; revoked (both ends
//! see EOF / EPIPE) when a MAC moves or a port closes.

mod util;

use ioth_common::port::{Incoming, SwitchPort};
use ioth_common::sys::{self, Errno, Fd};
use ioth_common::vde::{self, ShortcutOffer};
use util::*;

fn capable(sw: &Switch, desc: &str) -> SwitchPort {
    SwitchPort::open_native_flags(
        &sw.dir.join("native"),
        desc,
        65536,
        vde::NATIVE_FLAG_SHORTCUT,
    )
    .expect("native port")
}

/// Next message on `p` within `ms`: a frame or an offer.
fn next(p: &SwitchPort, ms: u64) -> Option<Result<Vec<u8>, (ShortcutOffer, Fd)>> {
    let mut buf = vec![0u8; 70000];
    match recv_any(p, &mut buf, ms)? {
        Incoming::Frame(n) => Some(Ok(buf[..n].to_vec())),
        Incoming::Shortcut(o, fd) => Some(Err((o, fd))),
        _ => panic!("unexpected short message"),
    }
}

fn expect_offer(p: &SwitchPort, peer: [u8; 6]) -> (ShortcutOffer, Fd) {
    match next(p, 2000) {
        Some(Err((o, fd))) => {
            assert_eq!(o.peer, peer, "offer names the peer's MAC");
            (o, fd)
        }
        Some(Ok(f)) => panic!("a frame of {} bytes instead of an offer", f.len()),
        None => panic!("no offer"),
    }
}

fn expect_frame(p: &SwitchPort, marker: u8) {
    match next(p, 2000) {
        Some(Ok(f)) => assert_eq!(f[14], marker),
        Some(Err(_)) => panic!("an offer instead of a frame"),
        None => panic!("no frame"),
    }
}

/// Read one message from a shortcut socket within 2 s (`Ok(0)`: EOF).
fn sc_recv(fd: &Fd) -> Result<Vec<u8>, Errno> {
    assert!(
        sys::wait_fd(fd.raw(), libc::POLLIN, 2000).unwrap(),
        "shortcut socket readable"
    );
    let mut buf = vec![0u8; 70000];
    let n = sys::recv(fd.raw(), &mut buf, libc::MSG_DONTWAIT)?;
    Ok(buf[..n].to_vec())
}

/// Two capable ports A and B, each with its end of a shortcut between them.
fn pair(sw: &Switch) -> (SwitchPort, SwitchPort, Fd, Fd) {
    let (a, b) = (capable(sw, "a"), capable(sw, "b"));
    assert!(a.shortcuts && b.shortcuts, "flag granted");
    // A is learned by its broadcast; B's unicast to A is known unicast: both get offers,
    // then A gets the frame.
    send(&a, &frame(BCAST, mac(1), 60, 1));
    expect_frame(&b, 1);
    send(&b, &frame(mac(1), mac(2), 60, 2));
    let (oa, fa) = expect_offer(&a, mac(2));
    expect_frame(&a, 2);
    let (ob, fb) = expect_offer(&b, mac(1));
    assert_eq!(oa.id, ob.id, "both ends carry the same id");
    (a, b, fa, fb)
}

#[test]
fn offered_between_capable_ports_and_carries_frames() {
    let sw = Switch::start(&[]);
    let (a, b, fa, fb) = pair(&sw);
    let (ok, text) = sw.ctl("shortcut/print");
    assert!(ok && text.contains("02:10:20:30:40:01"), "{text}");
    // Frames go both ways, up to the largest frame, without the switch.
    let big = frame(mac(2), mac(1), 65536, 3);
    sys::send(fa.raw(), &big, libc::MSG_NOSIGNAL).unwrap();
    assert_eq!(sc_recv(&fb).unwrap(), big);
    sys::send(fb.raw(), &frame(mac(1), mac(2), 60, 4), libc::MSG_NOSIGNAL).unwrap();
    assert_eq!(sc_recv(&fa).unwrap()[14], 4);
    // Offered once: more unicast through the switch brings no second offer.
    send(&b, &frame(mac(1), mac(2), 60, 5));
    expect_frame(&a, 5);
    assert!(next(&b, 200).is_none());
    assert_eq!(counters(&sw, 2)[0], 2, "switch saw only B's two frames");
}

#[test]
fn never_offered_to_old_clients_nor_with_pcap_or_when_disabled() {
    // A client without the flag next to a capable one.
    let sw = Switch::start(&[]);
    let (a, old) = (capable(&sw, "a"), sw.native("old"));
    assert!(!old.shortcuts);
    send(&a, &frame(BCAST, mac(1), 60, 1));
    assert_eq!(recv(&old, 2000).unwrap()[14], 1);
    for i in 0..3 {
        send(&old, &frame(mac(1), mac(2), 60, 10 + i));
        expect_frame(&a, 10 + i);
        send(&a, &frame(mac(2), mac(1), 60, 20 + i));
        assert_eq!(recv(&old, 2000).unwrap()[14], 20 + i, "only frames");
    }
    // --pcap and --no-shortcuts: the flag is not granted.
    for extra in [vec!["--pcap"], vec!["--no-shortcuts"]] {
        let tmp = TempDir::new("pcap");
        let pcap = tmp.path().join("cap.pcap");
        let mut args: Vec<&str> = extra.clone();
        let p = pcap.to_string_lossy().into_owned();
        if extra[0] == "--pcap" {
            args.push(&p);
        }
        let sw = Switch::start(&args);
        let (a, b) = (capable(&sw, "a"), capable(&sw, "b"));
        assert!(!a.shortcuts && !b.shortcuts, "{extra:?}: flag not granted");
        send(&a, &frame(BCAST, mac(1), 60, 1));
        expect_frame(&b, 1);
        send(&b, &frame(mac(1), mac(2), 60, 2));
        expect_frame(&a, 2);
        send(&a, &frame(mac(2), mac(1), 60, 3));
        expect_frame(&b, 3);
        let (_, text) = sw.ctl("showinfo");
        assert!(text.contains("shortcuts off active 0"), "{text}");
    }
}

#[test]
fn revoked_when_a_mac_moves() {
    let sw = Switch::start(&[]);
    let (_a, _b, fa, fb) = pair(&sw);
    // B's MAC shows up on a third port: A's shortcut to it is shut down.
    let c = capable(&sw, "c");
    send(&c, &frame(BCAST, mac(2), 60, 7));
    assert_eq!(sc_recv(&fa).unwrap().len(), 0, "EOF at A");
    assert_eq!(sc_recv(&fb).unwrap().len(), 0, "EOF at B");
    assert_eq!(
        sys::send(fa.raw(), &frame(mac(2), mac(1), 60, 8), libc::MSG_NOSIGNAL),
        Err(Errno::EPIPE)
    );
    let (_, text) = sw.ctl("shortcut/print");
    assert!(!text.contains("Shortcut 0"), "{text}");
}

#[test]
fn revoked_when_a_port_closes_and_offered_again_to_the_newcomer() {
    let sw = Switch::start(&[]);
    let (a, b, fa, _fb) = pair(&sw);
    drop(b);
    assert_eq!(sc_recv(&fa).unwrap().len(), 0, "EOF at A");
    // The same MAC on a new port: a new shortcut.
    let b2 = capable(&sw, "b2");
    send(&b2, &frame(mac(1), mac(2), 60, 9));
    let (_o, fa2) = expect_offer(&a, mac(2));
    expect_frame(&a, 9);
    let (_o, fb2) = expect_offer(&b2, mac(1));
    sys::send(
        fa2.raw(),
        &frame(mac(2), mac(1), 60, 10),
        libc::MSG_NOSIGNAL,
    )
    .unwrap();
    assert_eq!(sc_recv(&fb2).unwrap()[14], 10);
}
