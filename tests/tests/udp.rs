//! UDP and ICMP over the virtual network with real programs: a Python script checking UDP
//! semantics (udp_semantics.py), socat and nc UDP echo, iperf3 -u between two nodes, and
//! iputils ping over IPv6 and IPv4 (as root and as `nobody`) through `scripts/iothrun`.
//!
//! Every node is a stack daemon started for the test (`node()`), joined by the programs with
//! `IOTH_STACK`, or a node the shim starts itself; all processes are stopped by pid.

use ioth_e2e::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn udp_semantics_python() {
    if !have("python3") {
        return skip("python3 missing");
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/udp_semantics.py");
    let mut lab = NodeLab::new("udpsem", None);
    let a = lab.node("fd00::11,10.0.0.11");
    let b = lab.node("fd00::12,10.0.0.12");
    let mut s = lab.on(&a, "python3");
    s.args([script, "server", "10.0.0.11", "fd00::11"]);
    lab.spawn(s, "server.log");
    wait_for(Duration::from_secs(20), "UDP server ready", || {
        lab.log("server.log").contains("ready").then_some(())
    });
    let mut c = lab.on(&b, "python3");
    c.args([script, "client", "fd00::11", "10.0.0.11"]);
    let o = run_for(60, c);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("all-ok"),
        "{}\nserver: {}",
        text(&o),
        lab.log("server.log")
    );
}

/// Send `msg` with a client command until the echo comes back (the server may still be
/// starting: UDP has no connect to wait for).
fn echo_until(what: &str, mut client: impl FnMut() -> Command, want: &str) {
    wait_for(Duration::from_secs(30), what, || {
        let o = run_for(5, client());
        String::from_utf8_lossy(&o.stdout)
            .contains(want)
            .then_some(())
    });
}

#[test]
fn udp_socat_echo() {
    if !have("socat") {
        return skip("socat missing");
    }
    let mut lab = NodeLab::new("udpsocat", None);
    let a = lab.node("fd00::21,10.0.0.21");
    let b = lab.node("fd00::22,10.0.0.22");
    let mut s = lab.on(&a, "socat");
    s.args(["UDP6-RECVFROM:7000,fork", "EXEC:tr a-z A-Z"]);
    lab.spawn(s, "socat6.log");
    let mut s = lab.on(&a, "socat");
    s.args(["UDP4-RECVFROM:7001,fork", "EXEC:rev"]);
    lab.spawn(s, "socat4.log");
    echo_until(
        "socat UDP6 echo",
        || {
            let mut c = lab.on(&b, "sh");
            c.args(["-c", "echo hello | socat -T2 - UDP6:[fd00::21]:7000"]);
            c
        },
        "HELLO",
    );
    echo_until(
        "socat UDP4 echo",
        || {
            let mut c = lab.on(&b, "sh");
            c.args(["-c", "echo abc | socat -T2 - UDP4:10.0.0.21:7001"]);
            c
        },
        "cba",
    );
}

#[test]
fn udp_nc() {
    if !have("nc") || !have("socat") {
        return skip("nc (netcat-openbsd) or socat missing");
    }
    let mut lab = NodeLab::new("udpnc", None);
    let a = lab.node("fd00::31,10.0.0.31");
    let b = lab.node("fd00::32,10.0.0.32");
    let mut s = lab.on(&a, "socat");
    s.args(["UDP6-RECVFROM:7100,fork", "EXEC:tr a-z A-Z"]);
    lab.spawn(s, "socat.log");
    echo_until(
        "nc -u client",
        || {
            let mut c = lab.on(&b, "sh");
            c.args(["-c", "echo netcat | nc -u -w2 fd00::31 7100"]);
            c
        },
        "NETCAT",
    );
    // nc -u as the server: one datagram in, printed.
    let mut s = lab.on(&a, "nc");
    s.args(["-u", "-l", "10.0.0.31", "7200"]);
    lab.spawn(s, "ncserver.log");
    wait_for(Duration::from_secs(30), "nc -u -l received", || {
        let mut c = lab.on(&b, "sh");
        c.args(["-c", "echo via-nc-server | nc -u -w1 10.0.0.31 7200"]);
        run_for(5, c);
        lab.log("ncserver.log")
            .contains("via-nc-server")
            .then_some(())
    });
}

#[test]
fn udp_iperf3() {
    if !have("iperf3") {
        return skip("iperf3 missing");
    }
    let mut lab = NodeLab::new("udpiperf", None);
    let a = lab.node("fd00::41,10.0.0.41");
    let b = lab.node("fd00::42,10.0.0.42");
    let mut s = lab.on(&a, "iperf3");
    s.args(["-s", "-p", "5301", "--forceflush"]);
    lab.spawn(s, "iperf-s.log");
    wait_for(Duration::from_secs(20), "iperf3 server listening", || {
        lab.log("iperf-s.log").contains("listening").then_some(())
    });
    for (target, v) in [("fd00::41", "IPv6"), ("10.0.0.41", "IPv4")] {
        let mut c = lab.on(&b, "iperf3");
        c.args([
            "-u", "-c", target, "-p", "5301", "-t", "1", "-b", "20M", "-l", "1200",
        ]);
        let o = run_for(40, c);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success() && out.contains("receiver") && out.contains("iperf Done"),
            "iperf3 -u over {v}: {}\nserver: {}",
            text(&o),
            lab.log("iperf-s.log")
        );
        // The receiver line: "... Lost/Total Datagrams" as "L/T (P%)": most must arrive.
        let line = out.lines().find(|l| l.contains("receiver")).unwrap_or("");
        let lt = line
            .split_whitespace()
            .find(|w| w.contains('/') && w.chars().all(|c| c.is_ascii_digit() || c == '/'))
            .unwrap_or("1/0");
        let (lost, total) = lt.split_once('/').unwrap();
        let (lost, total): (u64, u64) = (lost.parse().unwrap(), total.parse().unwrap());
        assert!(
            total > 0 && lost * 10 <= total,
            "too many lost over {v}: {line}"
        );
    }
}

/// iputils ping through `scripts/iothrun`, whose own node (started by the shim) pings a
/// stack daemon node.
fn ping_from(lab: &NodeLab, user: Option<&str>, ip: &str, target: &str) -> std::process::Output {
    let iothrun = repo().join("scripts/iothrun");
    // A run directory of the user's own (the shim refuses one others may write).
    let rundir = lab
        .dir
        .join(&format!("run-ping-{}", user.unwrap_or("self")));
    std::fs::create_dir_all(&rundir).unwrap();
    chmod(&rundir, 0o700);
    if let Some(u) = user {
        let ok = Command::new("chown")
            .arg(format!("{u}:"))
            .arg(&rundir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown {u}");
    }
    let mut c = match user {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={u}"),
                "--regid=nogroup",
                "--clear-groups",
                "--",
            ]);
            c.arg(&iothrun);
            c
        }
        None => Command::new(&iothrun),
    };
    c.args(["--ip", ip, "--switch"])
        .arg(&lab.sw)
        .args(["--", "ping", "-c", "3", "-i", "0.3", "-W", "5", target])
        .env("IOTH_LIB", libioth())
        .env("IOTH_RUNDIR", &rundir)
        .env_remove("IOTH_STACK")
        .env_remove("LD_PRELOAD");
    run_for(40, c)
}

#[test]
fn ping_v6_v4() {
    if which("ping").is_none() || !have("setpriv") {
        return skip("ping (iputils-ping) or setpriv missing");
    }
    let mut lab = NodeLab::new("ping", Some("666"));
    chmod(lab.dir.path(), 0o755);
    lab.node("fd00::51,10.0.0.51");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut users = vec![None];
    if root {
        users.push(Some("nobody"));
    }
    for (i, user) in users.into_iter().enumerate() {
        for (target, ip) in [
            ("fd00::51", format!("fd00::{},10.0.0.{}", 60 + i, 60 + i)),
            ("10.0.0.51", format!("fd00::{},10.0.0.{}", 70 + i, 70 + i)),
        ] {
            let o = ping_from(&lab, user, &ip, target);
            let out = String::from_utf8_lossy(&o.stdout).to_string();
            assert!(
                o.status.success()
                    && out.contains(&format!("bytes from {target}"))
                    && !out.contains(" 0 received"),
                "ping {target} as {}: {}",
                user.unwrap_or("this user"),
                text(&o)
            );
        }
    }
}

/// ICMP errors on UDP sockets as a program sees them (`udp_errors.py`): a connected socket's
/// next receive or `SO_ERROR` takes the error once, and it polls as `POLLERR` (`poll`,
/// `epoll`) meanwhile; an
/// unconnected one hears nothing unless it
/// set `IP_RECVERR`/`IPV6_RECVERR`, and then `recvmsg(MSG_ERRQUEUE)` gives the quoted payload,
/// the destination, `sock_extended_err` and the offender. The same script over the kernel's
/// loopback and as an ioth node, IPv6 and IPv4, in this test run: what is expected is what the
/// kernel does.
#[test]
fn icmp_errors_on_udp_sockets_as_the_kernel_has_them() {
    if !have("python3") {
        return skip("python3 missing");
    }
    same_as_the_kernel(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/udp_errors.py"),
        "udperr",
        &[
            ("::1", "fd00::41/64", "fd00::41"),
            ("127.0.0.1", "10.4.0.41/24", "10.4.0.41"),
        ],
        &[
            "connected_recv: ECONNREFUSED",
            "so_error: ECONNREFUSED",
            "poll_error: OUT|ERR",
            "epoll_error: OUT|ERR",
            "send_after_error: ECONNREFUSED",
            "poll_after_recv: ECONNREFUSED OUT OUT",
            "unconnected_no_error: b'self'",
            "errqueue_data: b'quoted payload'",
        ],
    );
}
