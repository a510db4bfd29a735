//! Interoperation with Debian's vde2 / vdeplug4 tools: `vde_plug` plugs into ioth-switch, and
//! a `vde_plug` cable joins ioth-switch to Debian's `vde_switch`. Skipped, with a message,
//! when the tools are missing.

mod util;

use ioth_common::port::SwitchPort;
use ioth_common::sys;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use util::*;

/// Kills a child process we started (by pid) on drop.
struct ChildGuard(Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills a daemon by pid on drop.
struct PidGuard(u32);
impl Drop for PidGuard {
    fn drop(&mut self) {
        if alive(self.0) {
            kill(self.0, "TERM");
            if !wait_gone(self.0, Duration::from_secs(3)) {
                kill(self.0, "KILL");
                wait_gone(self.0, Duration::from_secs(3));
            }
        }
    }
}

/// Wait (bounded) until the switch lists `n` VDE ports.
fn wait_vde_ports(sw: &Switch, n: usize) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let c = sw
            .ctl("port/print")
            .1
            .lines()
            .filter(|l| l.contains("kind=vde"))
            .count();
        if c >= n {
            return;
        }
        assert!(Instant::now() < end, "vde_plug never plugged in");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_exact_timeout(r: &mut impl Read, fd: i32, buf: &mut [u8], ms: i32) -> bool {
    let mut got = 0;
    let end = Instant::now() + Duration::from_millis(ms as u64);
    while got < buf.len() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() || !sys::wait_fd(fd, libc::POLLIN, left.as_millis() as i32).unwrap() {
            return false;
        }
        match r.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    true
}

#[test]
fn vde_plug_plugs_into_ioth_switch() {
    if !have("vde_plug", "vde_plug_plugs_into_ioth_switch") {
        return;
    }
    let sw = Switch::start(&[]);
    let n = sw.native("native");
    let mut child = ChildGuard(
        Command::new("vde_plug")
            .arg(&sw.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vde_plug"),
    );
    wait_vde_ports(&sw, 1);
    assert!(sw.ctl("port/print").1.contains("vdeplug"));
    // vdestream in: 2-byte big-endian length + frame.
    let f = frame(BCAST, mac(7), 100, 0x5a);
    let mut stdin = child.0.stdin.take().unwrap();
    let mut msg = (f.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(&f);
    stdin.write_all(&msg).unwrap();
    stdin.flush().unwrap();
    assert_eq!(
        recv(&n, 5000).as_deref(),
        Some(&f[..]),
        "frame from vde_plug"
    );
    // And out: unicast to the MAC vde_plug's side used.
    let g = frame(mac(7), mac(1), 80, 0xa5);
    send(&n, &g);
    let mut out = child.0.stdout.take().unwrap();
    let fd = out.as_raw_fd();
    let mut len = [0u8; 2];
    assert!(
        read_exact_timeout(&mut out, fd, &mut len, 5000),
        "frame to vde_plug"
    );
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    assert!(read_exact_timeout(&mut out, fd, &mut body, 5000));
    assert_eq!(body, g);
    drop(stdin);
}

#[test]
fn cable_to_debian_vde_switch() {
    if !have("vde_switch", "cable_to_debian_vde_switch")
        || !have("vde_plug", "cable_to_debian_vde_switch")
    {
        return;
    }
    let tmp = TempDir::new("deb");
    let deb = tmp.path().join("vde");
    let pidfile = tmp.path().join("vde.pid");
    let st = Command::new("vde_switch")
        .arg("-s")
        .arg(&deb)
        .arg("-d")
        .arg("-p")
        .arg(&pidfile)
        .stdin(Stdio::null())
        .status()
        .expect("run vde_switch");
    assert!(st.success());
    // vde_switch's parent may return before the daemon wrote its pid file and bound ctl.
    let end = Instant::now() + Duration::from_secs(10);
    let deb_pid = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            && std::os::unix::net::UnixStream::connect(deb.join("ctl")).is_ok()
        {
            break p;
        }
        assert!(Instant::now() < end, "vde_switch did not come up");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _deb_guard = PidGuard(deb_pid);
    let sw = Switch::start(&[]);
    let _cable = ChildGuard(
        Command::new("vde_plug")
            .arg(&sw.dir)
            .arg(&deb)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vde_plug cable"),
    );
    wait_vde_ports(&sw, 1);
    let n = sw.native("ioth side");
    let v = SwitchPort::open_vde(&deb, "debian side", 0).expect("port on Debian's vde_switch");
    // The cable's far end may plug into vde_switch a little later: retry a broadcast.
    let end = Instant::now() + Duration::from_secs(10);
    let mut got = None;
    let mut i = 0u8;
    while got.is_none() && Instant::now() < end {
        send(&n, &frame(BCAST, mac(1), 120, i));
        got = recv(&v, 200);
        i = i.wrapping_add(1);
    }
    let got = got.expect("broadcast crossed ioth-switch -> vde_plug -> vde_switch");
    assert_eq!(&got[6..12], &mac(1));
    // Back: unicast from the Debian side to the native port's MAC.
    while recv(&n, 50).is_some() {}
    let back = frame(mac(1), mac(2), 500, 0x77);
    send(&v, &back);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let f = recv(&n, 5000).expect("frame back from vde_switch");
        if f == back {
            break;
        }
        assert!(Instant::now() < end);
    }
}
