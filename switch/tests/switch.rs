//! Integration tests against the real `ioth-switch` binary (daemon mode, temp directories).

mod util;

use ioth_common::sys::{self, UnixAddr};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use util::*;

#[test]
fn native_and_vde_ports_exchange_frames() {
    let sw = Switch::start(&[]);
    let a = sw.native("a");
    let b = sw.native("b");
    let c = sw.vde("c");
    assert_eq!(a.max_frame, 65536);
    assert_eq!(c.max_frame, 1518);
    // native -> everyone (broadcast)
    let f = frame(BCAST, mac(1), 100, 1);
    send(&a, &f);
    assert_eq!(recv(&b, 2000).as_deref(), Some(&f[..]));
    assert_eq!(recv(&c, 2000).as_deref(), Some(&f[..]));
    // vde -> native (unicast to a learned MAC)
    let g = frame(mac(1), mac(3), 1518, 2);
    send(&c, &g);
    assert_eq!(recv(&a, 2000).as_deref(), Some(&g[..]));
    assert_silent(&b, "b must not see unicast for a");
    // native -> vde, unicast
    let h = frame(mac(3), mac(1), 60, 3);
    send(&a, &h);
    assert_eq!(recv(&c, 2000).as_deref(), Some(&h[..]));
    // A jumbo frame reaches the native port but not the VDE one (counted as too big).
    let j = frame(BCAST, mac(2), 9000, 4);
    send(&b, &j);
    assert_eq!(recv(&a, 2000).as_deref(), Some(&j[..]));
    assert_silent(&c, "jumbo frame must not reach a VDE port");
    let vde_port = sw
        .ctl("port/print")
        .1
        .lines()
        .find(|l| l.contains("kind=vde"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .map(|s| s.parse::<u32>().unwrap())
        })
        .expect("vde port listed");
    assert_eq!(counters(&sw, vde_port)[3], 1, "drop_toobig on the VDE port");
}

#[test]
fn learning_sends_unicast_only_to_the_right_port() {
    let sw = Switch::start(&[]);
    let p: Vec<_> = (0..3).map(|i| sw.native(&format!("p{i}"))).collect();
    // Unknown destination: flooded to both others.
    let f = frame(mac(2), mac(1), 64, 1);
    send(&p[0], &f);
    assert!(recv(&p[1], 2000).is_some());
    assert!(recv(&p[2], 2000).is_some());
    // p1 answers: now both MACs are known.
    send(&p[1], &frame(mac(1), mac(2), 64, 2));
    assert!(recv(&p[0], 2000).is_some());
    assert_silent(&p[2], "answer is unicast to a known MAC");
    for i in 0..10 {
        send(&p[0], &frame(mac(2), mac(1), 64, 10 + i));
        assert_eq!(recv(&p[1], 2000).unwrap()[14], 10 + i);
    }
    assert_silent(&p[2], "third port receives nothing once learned");
    let (ok, table) = sw.ctl("hash/print");
    assert!(ok);
    assert!(table.contains("02:10:20:30:40:01"), "{table}");
    assert!(table.contains("02:10:20:30:40:02"), "{table}");
}

#[test]
fn broadcast_floods_to_all_other_ports() {
    let sw = Switch::start(&[]);
    let p: Vec<_> = (0..4).map(|i| sw.native(&format!("p{i}"))).collect();
    let v = sw.vde("v");
    send(&p[2], &frame(BCAST, mac(9), 60, 7));
    for (i, q) in p.iter().enumerate() {
        if i != 2 {
            assert_eq!(recv(q, 2000).unwrap()[14], 7);
        }
    }
    assert_eq!(recv(&v, 2000).unwrap()[14], 7);
    assert_silent(&p[2], "no echo to the ingress port");
}

#[test]
fn vlans_separate_ports() {
    let sw = Switch::start(&[]);
    let a = sw.native("a"); // port 1
    let b = sw.native("b"); // port 2
    let c = sw.native("c"); // port 3
    assert!(sw.ctl("vlan/create 10").0);
    assert!(sw.ctl("port/setvlan 2 10").0);
    assert!(sw.ctl("vlan/addport 10 3").0);
    assert!(!sw.ctl("port/setvlan 2 11").0, "unknown VLAN is an error");
    send(&a, &frame(BCAST, mac(1), 60, 1));
    assert_eq!(recv(&c, 2000).unwrap()[14], 1);
    assert_silent(&b, "VLAN 10 port must not see VLAN 0");
    send(&b, &frame(BCAST, mac(2), 60, 2));
    let t = recv(&c, 2000).expect("tagged copy on the trunk");
    assert_eq!(&t[12..16], &[0x81, 0x00, 0x00, 10]);
    assert_eq!(t[18], 2);
    assert_silent(&a, "VLAN 0 port must not see VLAN 10");
}

#[test]
fn stuck_port_does_not_stall_a_bulk_transfer() {
    const BULK: u64 = 50_000;
    const FILL: u64 = 12_000;
    const WINDOW: u64 = 1_000;
    let sw = Switch::start(&[]);
    let a = sw.native("sender");
    let b = sw.native("receiver");
    let stuck = sw.native("stuck (never reads)");
    let (pa, pb, ps) = (a.port, b.port, stuck.port);
    // b speaks first so the switch knows where mac(2) is.
    send(&b, &frame(BCAST, mac(2), 60, 0));
    assert!(recv(&a, 2000).is_some());
    let got = Arc::new(AtomicU64::new(0));
    let unicast = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let rx = {
        let (got, unicast, done) = (got.clone(), unicast.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 70000];
            let mut next = 0u64;
            while !done.load(Ordering::Relaxed) {
                match b.recv(&mut buf) {
                    Ok(n) => {
                        if buf[0] != 0xff {
                            let seq = u64::from_le_bytes(buf[15..23].try_into().unwrap());
                            assert_eq!(seq, next, "unicast frames arrive in order");
                            assert_eq!(n, 1000);
                            next += 1;
                            unicast.fetch_add(1, Ordering::Relaxed);
                        }
                        got.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.is_again() => {
                        let _ = sys::wait_fd(b.data_fd(), libc::POLLIN, 50);
                    }
                    Err(e) => panic!("recv: {e}"),
                }
            }
            b
        })
    };
    let start = Instant::now();
    let mut sent = 0u64;
    let wait_window = |sent: u64| {
        while sent - got.load(Ordering::Relaxed) >= WINDOW {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "transfer stalled"
            );
            std::thread::yield_now();
        }
    };
    // Fill the stuck port's socket and queue with broadcasts (b gets them too).
    for _ in 0..FILL {
        wait_window(sent);
        send(&a, &frame(BCAST, mac(1), 1400, 0));
        sent += 1;
    }
    // Bulk unicast a -> b, with a broadcast every 100 frames that the stuck port cannot take.
    for i in 0..BULK {
        wait_window(sent);
        let mut f = frame(mac(2), mac(1), 1000, 1);
        f[15..23].copy_from_slice(&i.to_le_bytes());
        send(&a, &f);
        sent += 1;
        if i % 100 == 0 {
            send(&a, &frame(BCAST, mac(1), 200, 0));
            sent += 1;
        }
    }
    while got.load(Ordering::Relaxed) < sent && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    done.store(true, Ordering::Relaxed);
    let _b = rx.join().unwrap();
    assert_eq!(unicast.load(Ordering::Relaxed), BULK);
    assert_eq!(got.load(Ordering::Relaxed), sent);
    let cb = counters(&sw, pb);
    let cs = counters(&sw, ps);
    let ca = counters(&sw, pa);
    assert_eq!(cb[2], 0, "no queue drops on the healthy receiver");
    assert_eq!(ca[0], sent, "switch received everything");
    assert!(cs[2] > 0, "the stuck port dropped: {cs:?}");
    let (_, text) = sw.ctl(&format!("port/print {ps}"));
    let queued: usize = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("QUEUE: bytes "))
        .and_then(|n| n.parse().ok())
        .expect("queue gauge");
    assert!(
        queued > 3 << 20,
        "stuck port's queue is nearly full: {queued}"
    );
    drop(stuck);
}

#[test]
fn pcap_is_readable_by_tcpdump() {
    if !have("tcpdump", "pcap_is_readable_by_tcpdump") {
        return;
    }
    let tmp = TempDir::new("pcap");
    let pcap = tmp.path().join("cap.pcap");
    let sw = Switch::start(&["--pcap", pcap.to_str().unwrap()]);
    let a = sw.native("a");
    let b = sw.native("b");
    for i in 0..25u8 {
        send(&a, &frame(BCAST, mac(1), 60 + i as usize, i));
        assert!(recv(&b, 2000).is_some());
    }
    send(&b, &frame(mac(1), mac(2), 3000, 99));
    assert!(recv(&a, 2000).is_some());
    sw.stop();
    let out = std::process::Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let packets = text
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .count();
    assert_eq!(packets, 26, "{text}");
    assert!(text.contains("02:10:20:30:40:01"), "{text}");
}

#[test]
fn mgmt_console_prints_ports_and_survives_garbage() {
    let sw = Switch::start(&[]);
    let _a = sw.native("first-port");
    let _v = sw.vde("second-port");
    let (ok, text) = sw.ctl("port/print");
    assert!(ok, "{text}");
    assert!(text.contains("Port 0001 kind=native"), "{text}");
    assert!(text.contains("first-port"), "{text}");
    assert!(text.contains("kind=vde"), "{text}");
    assert!(text.contains("second-port"), "{text}");
    assert!(text.contains(" IN:  pkts 0 bytes 0"), "{text}");
    let (ok, text) = sw.ctl("no/such/command");
    assert!(!ok && text.contains("1038"), "{text}");
    // Raw console: banner, prompt, garbage, an over-long line, then a good command.
    let fd = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0).unwrap();
    sys::connect_unix(fd.raw(), &UnixAddr::path(sw.dir.join("mgmt"))).unwrap();
    let mut junk = vec![0u8, 0xff, 0xfe, b'\r', b'\n'];
    junk.extend(std::iter::repeat_n(b'x', 10_000));
    junk.extend_from_slice(b"\nshowinfo\n");
    sys::write_all(fd.raw(), &junk).unwrap();
    let mut all = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&all).contains("1000 Success") && Instant::now() < end {
        let mut b = [0u8; 4096];
        if sys::wait_fd(fd.raw(), libc::POLLIN, 500).unwrap() {
            let n = sys::read(fd.raw(), &mut b).unwrap();
            assert!(n > 0, "console closed");
            all.extend_from_slice(&b[..n]);
        }
    }
    let s = String::from_utf8_lossy(&all);
    assert!(s.starts_with("ioth-switch"), "{s}");
    assert!(s.contains("vde$ "), "{s}");
    assert!(s.contains("1038 "), "garbage command: {s}");
    assert!(s.contains("1090 "), "over-long line: {s}");
    assert!(s.contains("1000 Success"), "{s}");
    drop(fd);
    assert!(sw.ctl("showinfo").0, "switch alive");
}

/// Connect to DIR/ctl, send `bytes`, return whether the switch closed without a reply.
fn ctl_refuses(dir: &std::path::Path, bytes: &[u8]) -> bool {
    let fd = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0).unwrap();
    sys::connect_unix(fd.raw(), &UnixAddr::path(dir.join("ctl"))).unwrap();
    if !bytes.is_empty() {
        let _ = sys::send(fd.raw(), bytes, libc::MSG_NOSIGNAL);
    }
    if !sys::wait_fd(fd.raw(), libc::POLLIN, 5000).unwrap() {
        return false;
    }
    let mut b = [0u8; 200];
    matches!(sys::read(fd.raw(), &mut b), Ok(0) | Err(_))
}

#[test]
fn bad_vde_requests_keep_the_switch_alive() {
    let sw = Switch::start(&[]);
    // Garbage, a truncated request, a wrong version, an oversized one.
    assert!(ctl_refuses(&sw.dir, b"hello switch"));
    let good = ioth_common::vde::VdeRequest {
        port: 0,
        port0: false,
        sock: UnixAddr::path(sw.tmp.path().join("nobody")),
        description: "x".into(),
    }
    .encode()
    .unwrap();
    assert!(ctl_refuses(&sw.dir, &good[..50]));
    let mut v2 = good.clone();
    v2[4] = 2;
    assert!(ctl_refuses(&sw.dir, &v2));
    assert!(ctl_refuses(&sw.dir, &[0xaa; 300]));
    // A well-formed request naming a socket that does not exist.
    assert!(ctl_refuses(&sw.dir, &good));
    // A client that connects and vanishes, and one that connects and says nothing.
    drop(std::os::unix::net::UnixStream::connect(sw.dir.join("ctl")).unwrap());
    let _silent = std::os::unix::net::UnixStream::connect(sw.dir.join("ctl")).unwrap();
    // Bad native hellos too.
    let n = sys::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0).unwrap();
    sys::connect_unix(n.raw(), &UnixAddr::path(sw.dir.join("native"))).unwrap();
    sys::send(n.raw(), &[1u8; 5000], 0).unwrap();
    assert!(sys::wait_fd(n.raw(), libc::POLLIN, 5000).unwrap());
    assert_eq!(sys::recv(n.raw(), &mut [0u8; 64], 0).unwrap_or(0), 0);
    // The switch still works for good clients.
    let a = sw.vde("a");
    let b = sw.native("b");
    send(&a, &frame(BCAST, mac(1), 60, 5));
    assert_eq!(recv(&b, 2000).unwrap()[14], 5);
    // Runt and oversized frames are dropped and counted.
    send(&b, &[1u8; 10]);
    let mut huge = frame(BCAST, mac(2), 1600, 6);
    huge.truncate(1600);
    send(&a, &huge);
    send(&a, &frame(BCAST, mac(1), 60, 7));
    assert_eq!(recv(&b, 2000).unwrap()[14], 7);
    let ca = counters(&sw, a_port(&sw));
    assert_eq!(
        ca[3], 1,
        "oversized datagram counted on the VDE port: {ca:?}"
    );
    let cb = counters(&sw, b.port);
    assert_eq!(cb[4], 1, "runt counted as malformed: {cb:?}");
}

fn a_port(sw: &Switch) -> u32 {
    sw.ctl("port/print")
        .1
        .lines()
        .find(|l| l.contains("kind=vde"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("vde port")
}

#[test]
fn directory_and_socket_modes() {
    let sw = Switch::start(&[]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&sw.dir.join("ctl")), 0o600);
    assert_eq!(mode(&sw.dir), 0o700);
    let sw2 = Switch::start(&["--mode", "660"]);
    assert_eq!(mode(&sw2.dir.join("ctl")), 0o660);
    assert_eq!(mode(&sw2.dir.join("native")), 0o660);
    assert_eq!(
        mode(&sw2.dir),
        0o3770,
        "setgid, and sticky: group members write"
    );
    let sw3 = Switch::start(&["--mode", "0666", "--dirmode", "0755"]);
    assert_eq!(mode(&sw3.dir.join("ctl")), 0o666);
    assert_eq!(mode(&sw3.dir), 0o755);
}

#[test]
fn stale_sockets_are_replaced_and_live_switch_is_detected() {
    let sw = Switch::start(&[]);
    // A second switch on the same directory refuses.
    let err = start_on(&sw.dir, &sw.tmp.path().join("pid2"), &[]).unwrap_err();
    assert!(err.contains("a switch is already running on"), "{err}");
    assert!(sw.ctl("showinfo").0);
    // Crash it: the sockets stay behind; a new switch takes the directory over.
    let _p = sw.vde("left behind");
    kill(sw.pid, "KILL");
    assert!(wait_gone(sw.pid, Duration::from_secs(5)));
    assert!(sw.dir.join("ctl").exists());
    let pid = start_on(&sw.dir, &sw.tmp.path().join("pid3"), &[]).expect("restart");
    let _guard = Pid(pid);
    assert!(ctl(&sw.dir, "showinfo").0);
    let a = SwitchPortPair::new(&sw.dir);
    a.check();
    // SIGTERM removes the sockets.
    kill(pid, "TERM");
    assert!(wait_gone(pid, Duration::from_secs(5)));
    for f in ["ctl", "native", "mgmt"] {
        assert!(!sw.dir.join(f).exists(), "{f} removed on exit");
    }
}

struct Pid(u32);
impl Drop for Pid {
    fn drop(&mut self) {
        if alive(self.0) {
            kill(self.0, "KILL");
            wait_gone(self.0, Duration::from_secs(3));
        }
    }
}

struct SwitchPortPair(ioth_common::port::SwitchPort, ioth_common::port::SwitchPort);
impl SwitchPortPair {
    fn new(dir: &std::path::Path) -> Self {
        let n = ioth_common::port::SwitchPort::open_native(&dir.join("native"), "n", 2000).unwrap();
        let v = ioth_common::port::SwitchPort::open_vde(dir, "v", 0).unwrap();
        assert_eq!(n.max_frame, 2000);
        SwitchPortPair(n, v)
    }
    fn check(&self) {
        send(&self.0, &frame(BCAST, mac(1), 60, 42));
        assert_eq!(recv(&self.1, 2000).unwrap()[14], 42);
    }
}

#[test]
fn vde_port_closed_removes_port_and_socket() {
    let sw = Switch::start(&[]);
    let v = sw.vde("gone soon");
    let count = || {
        std::fs::read_dir(&sw.dir)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                n.to_string_lossy().chars().next().unwrap().is_ascii_digit()
            })
            .count()
    };
    assert_eq!(count(), 1);
    drop(v);
    let end = Instant::now() + Duration::from_secs(5);
    while count() > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(count(), 0, "data socket unlinked");
    assert!(!sw.ctl("port/print").1.contains("kind=vde"));
}

/// Throughput of one native -> native stream (run with
/// `cargo test --release --test switch -- --ignored --nocapture`).
#[test]
#[ignore]
fn bench_native_throughput() {
    let sw = Switch::start(&[]);
    let a = sw.native("a");
    let b = sw.native("b");
    send(&b, &frame(BCAST, mac(2), 60, 0));
    assert!(recv(&a, 2000).is_some());
    for size in [64usize, 1514, 9014, 65000] {
        let n: u64 = if size > 9000 { 20_000 } else { 200_000 };
        let got = Arc::new(AtomicU64::new(0));
        let g2 = got.clone();
        let bfd = b.data_fd();
        let rx = std::thread::spawn(move || {
            let mut buf = vec![0u8; 70000];
            while g2.load(Ordering::Relaxed) < n {
                match sys::recv(bfd, &mut buf, libc::MSG_DONTWAIT) {
                    Ok(_) => {
                        g2.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        let _ = sys::wait_fd(bfd, libc::POLLIN, 100);
                    }
                }
            }
        });
        let f = frame(mac(2), mac(1), size, 1);
        let t = Instant::now();
        let mut sent = 0;
        while sent < n {
            // A window of 2 MiB in flight, like a TCP sender's.
            if (sent - got.load(Ordering::Relaxed)) * (size as u64) < 2 << 20 {
                send(&a, &f);
                sent += 1;
            } else {
                std::thread::yield_now();
            }
        }
        rx.join().unwrap();
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "size {size}: {:.0} frames/s, {:.2} Gbit/s",
            n as f64 / s,
            n as f64 * size as f64 * 8.0 / s / 1e9
        );
    }
    let cb = counters(&sw, b.port);
    assert_eq!(cb[2], 0);
}

#[test]
fn hub_mode_floods_known_unicast() {
    let sw = Switch::start(&["--hub"]);
    let p: Vec<_> = (0..3).map(|i| sw.native(&format!("p{i}"))).collect();
    send(&p[1], &frame(BCAST, mac(2), 60, 0));
    assert!(recv(&p[0], 2000).is_some());
    assert!(recv(&p[2], 2000).is_some());
    send(&p[0], &frame(mac(2), mac(1), 60, 1));
    assert_eq!(recv(&p[1], 2000).unwrap()[14], 1);
    assert_eq!(recv(&p[2], 2000).unwrap()[14], 1, "hub floods unicast too");
}

#[test]
fn numports_limits_ports_and_counters_reset() {
    let sw = Switch::start(&["--numports", "2"]);
    let a = sw.native("a");
    let b = sw.vde("b");
    let e = ioth_common::port::SwitchPort::open_native(&sw.dir.join("native"), "c", 1518)
        .expect_err("no third port");
    assert_eq!(e.errno, sys::Errno::ECONNREFUSED, "{e}");
    assert!(ioth_common::port::SwitchPort::open_vde(&sw.dir, "d", 0).is_err());
    send(&a, &frame(BCAST, mac(1), 60, 0));
    assert!(recv(&b, 2000).is_some());
    assert_eq!(counters(&sw, a.port)[0], 1);
    assert!(sw.ctl("port/resetcounter").0);
    assert_eq!(counters(&sw, a.port)[0], 0);
}

#[test]
fn group_owns_directory_and_sockets() {
    use std::os::unix::fs::MetadataExt;
    let Some(gid) = std::fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("nogroup:"))
        .and_then(|l| l.split(':').nth(2)?.parse::<u32>().ok())
    else {
        eprintln!("SKIPPED group_owns_directory_and_sockets: no group 'nogroup'");
        return;
    };
    if sys::geteuid() != 0 {
        eprintln!("SKIPPED group_owns_directory_and_sockets: chgrp to a foreign group needs root");
        return;
    }
    let sw = Switch::start(&["--group", "nogroup", "--mode", "0660"]);
    assert_eq!(std::fs::metadata(sw.dir.join("ctl")).unwrap().gid(), gid);
    assert_eq!(std::fs::metadata(&sw.dir).unwrap().gid(), gid);
    let _v = sw.vde("v");
    let data = std::fs::read_dir(&sw.dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("001."))
        .expect("data socket");
    assert_eq!(data.metadata().unwrap().gid(), gid);
}

#[test]
fn mac_caps_are_configurable_and_shown() {
    let sw = Switch::start(&["--max-macs-per-port", "3", "--max-macs", "4"]);
    let a = sw.native("a");
    let b = sw.native("b");
    for i in 1..=5 {
        send(&a, &frame(BCAST, mac(i), 60, i));
        assert_eq!(recv(&b, 2000).unwrap()[14], i, "forwarded, learned or not");
    }
    send(&b, &frame(BCAST, mac(9), 60, 9));
    send(&b, &frame(BCAST, mac(10), 60, 10));
    assert!(recv(&a, 2000).is_some() && recv(&a, 2000).is_some());
    let (ok, text) = sw.ctl(&format!("port/print {}", a.port));
    assert!(
        ok && text.contains(" MACS: learned 3 not_learned 2"),
        "{text}"
    );
    let (ok, text) = sw.ctl(&format!("port/print {}", b.port));
    assert!(
        ok && text.contains(" MACS: learned 1 not_learned 1"),
        "{text}"
    );
    let (ok, text) = sw.ctl("showinfo");
    assert!(
        ok && text.contains("learned MACs 4 max 4 per port 3"),
        "{text}"
    );
    let tmp = TempDir::new("caps");
    let e = start_on(
        &tmp.path().join("sw"),
        &tmp.path().join("pid"),
        &["--max-macs", "0"],
    )
    .unwrap_err();
    assert!(e.contains("--max-macs"), "{e}");
}
