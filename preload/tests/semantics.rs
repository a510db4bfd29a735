//! Socket semantics (see semantics.py): non-blocking connect, ECONNREFUSED, EALREADY/EISCONN,
//! names, accept4 flags, shutdown, EOF, EPIPE, fork, exec with the socket on stdio, dup,
//! close_range, epoll ET/poll/select on mixed fds, SO_RCVTIMEO, AF_UNIX untouched.
//! Client and server are two nodes; the client runs over IPv6 and over IPv4.

mod harness;
use harness::*;
use std::time::Duration;

#[test]
fn tcp_socket_semantics() {
    if !have("python3") {
        eprintln!("SKIP: python3 missing");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/semantics.py");
    let mut lab = Lab::new("sem");
    let mut s = lab.node("fd00::10,10.0.0.10", "python3");
    s.args([script, "server"]);
    lab.spawn(s, "server.log");
    wait_for(Duration::from_secs(20), "server listening", || {
        lab.log("server.log")
            .contains("ok accept-eagain")
            .then_some(())
    });
    for (ip, host) in [("fd00::11", "fd00::10"), ("10.0.0.11", "10.0.0.10")] {
        let mut c = lab.node(ip, "python3");
        c.args([script, "client", host, "7000"]);
        let o = lab.run(c, Duration::from_secs(60));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.contains("all-ok"),
            "client {ip} -> {host}:\n{out}\n{}\nserver: {}",
            String::from_utf8_lossy(&o.stderr),
            lab.log("server.log")
        );
    }
}
