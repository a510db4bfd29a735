//! A stack daemon reconnects when its switch restarts, and a TCP connection opened before the
//! restart carries on after it (smoltcp retransmits what was lost while the switch was down).
//! The stream goes through the switch itself (no shortcuts): before the restart through the
//! port's shared-memory rings, after it through the port's socket (`--no-rings`).

use ioth_e2e::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn nodes_reconnect_after_switch_restart_and_tcp_survives() {
    let tmp = TempDir::new("restart");
    let sw = tmp.join("sw");
    let mut switch = ioth_switch(&sw, &["--no-shortcuts"]);
    let a = node(&sw, "fd00::41/64", &tmp.join("a.ctl"));
    let b = node(&sw, "fd00::42/64", &tmp.join("b.ctl"));
    let ping = |ctl: &std::path::Path| {
        run(Command::new(bin("iothctl"))
            .arg("--ctl")
            .arg(ctl)
            .args(["ping", "-c", "1", "-W", "1", "fd00::42"]))
        .status
        .success()
    };
    assert!(ping(&a.ctl), "ping before the restart");
    let rings = |ctl: &std::path::Path| info_field(ctl, "switch_rings");
    assert_eq!((rings(&a.ctl), rings(&b.ctl)), ("1".into(), "1".into()));

    // A connection across the restart: half of the data before, half after.
    let out = tmp.join("out");
    let mut server = iothctl_listen(&b.ctl, "::", 6000, &out);
    let mut client = Command::new(bin("iothctl"))
        .arg("--ctl")
        .arg(&a.ctl)
        .args(["connect", "fd00::42", "6000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut data = vec![0u8; 2 << 20];
    ioth_common::sys::getrandom(&mut data).unwrap();
    let mut tx = client.stdin.take().unwrap();
    tx.write_all(&data[..1 << 20]).unwrap();
    // The first half has arrived when the output file holds it.
    wait_for(Duration::from_secs(20), "first half delivered", || {
        (std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) >= 1 << 20).then_some(())
    });

    // The first half went through the rings.
    assert!(info_field(&a.ctl, "switch_ring_tx").parse::<u64>().unwrap() > 0);
    switch.stop();
    let _switch2 = ioth_switch(&sw, &["--no-shortcuts", "--no-rings"]);
    // Both daemons come back on their own (they retry every 200 ms).
    wait_for(Duration::from_secs(20), "ping after the restart", || {
        ping(&a.ctl).then_some(())
    });

    assert_eq!((rings(&a.ctl), rings(&b.ctl)), ("0".into(), "0".into()));
    tx.write_all(&data[1 << 20..]).unwrap();
    drop(tx);
    assert!(client.wait().unwrap().success(), "client");
    assert!(server.wait().unwrap().success(), "server");
    assert_eq!(
        sha256_file(&out),
        sha256_bytes(&data),
        "the stream across the restart differs"
    );
    // The second half did not (the counters start again with each port).
    assert_eq!(info_field(&a.ctl, "switch_ring_tx"), "0");
}
