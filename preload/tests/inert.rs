//! Without IOTH_IP/IOTH_STACK the shim is inert; with a bad IOTH_IP it prints one clear line
//! and socket() fails with ENETDOWN, at once.

mod harness;
use harness::*;
use std::process::Command;
use std::time::{Duration, Instant};

const PROBE: &str = r#"
import socket, errno, sys
# A kernel TCP connection on loopback must work through the inert shim.
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname())
a, peer = srv.accept()
c.sendall(b"hi"); assert a.recv(2) == b"hi"
assert c.getpeername() == srv.getsockname()
u1, u2 = socket.socketpair()
u1.send(b"x"); assert u2.recv(1) == b"x"
print("inert-ok")
"#;

#[test]
fn inert_without_configuration() {
    let lib = bin_dir().join("libioth.so");
    assert!(lib.exists(), "{} missing", lib.display());
    let o = Command::new("python3")
        .args(["-c", PROBE])
        .env("LD_PRELOAD", &lib)
        .env_remove("IOTH_IP")
        .env_remove("IOTH_STACK")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "inert-ok");
    assert!(o.stderr.is_empty(), "the shim must be silent");
}

const BAD: &str = r#"
import socket, errno
for i in range(3):
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        print("created")
    except OSError as e:
        print("errno", errno.errorcode[e.errno])
# Non-INET sockets still work.
a, b = socket.socketpair(); a.send(b"x"); assert b.recv(1) == b"x"
"#;

fn bad_env(ip: &str, extra: &[(&str, &str)]) -> (String, String, Duration) {
    let lib = bin_dir().join("libioth.so");
    let dir = std::env::temp_dir().join(format!("ioth-shim-bad-{}", std::process::id()));
    let mut c = Command::new("python3");
    c.args(["-c", BAD])
        .env("LD_PRELOAD", &lib)
        .env("IOTH_IP", ip)
        .env("IOTH_RUNDIR", &dir)
        .env_remove("IOTH_STACK");
    for (k, v) in extra {
        c.env(k, v);
    }
    let t = Instant::now();
    let o = c.output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
        t.elapsed(),
    )
}

#[test]
fn bad_address_fails_fast_with_one_line() {
    let (out, err, took) = bad_env("fd00::zz", &[]);
    assert_eq!(out.matches("errno ENETDOWN").count(), 3, "stdout: {out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {err}");
    assert!(
        lines[0].starts_with("libioth: IOTH_IP: 'fd00::zz'"),
        "{}",
        lines[0]
    );
    assert!(took < Duration::from_secs(5));
}

#[test]
fn missing_daemon_binary_fails_fast_with_one_line() {
    let (out, err, took) = bad_env("fd00::77", &[("IOTH_STACKD", "/nonexistent/ioth-stackd")]);
    assert_eq!(out.matches("errno ENETDOWN").count(), 3, "stdout: {out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {err}");
    assert!(
        lines[0].starts_with("libioth: cannot start the node"),
        "{}",
        lines[0]
    );
    assert!(took < Duration::from_secs(10));
}
