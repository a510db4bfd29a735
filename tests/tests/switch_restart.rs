//! A stack daemon reconnects when its switch restarts, and a TCP connection opened before the
//! restart carries on after it (smoltcp retransmits what was lost while the switch was down).

use ioth_e2e::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn nodes_reconnect_after_switch_restart_and_tcp_survives() {
    let tmp = TempDir::new("restart");
    let sw = tmp.join("sw");
    let mut switch = ioth_switch(&sw, &[]);
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

    switch.stop();
    let _switch2 = ioth_switch(&sw, &[]);
    // Both daemons come back on their own (they retry every 200 ms).
    wait_for(Duration::from_secs(20), "ping after the restart", || {
        ping(&a.ctl).then_some(())
    });

    tx.write_all(&data[1 << 20..]).unwrap();
    drop(tx);
    assert!(client.wait().unwrap().success(), "client");
    assert!(server.wait().unwrap().success(), "server");
    assert_eq!(
        sha256_file(&out),
        sha256_bytes(&data),
        "the stream across the restart differs"
    );
}
