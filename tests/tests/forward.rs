//! Port forwarding between the host and the virtual LAN with `iothctl forward` / `expose`:
//! an ordinary program (curl without the shim) downloads from a node, and a node downloads
//! from an ordinary host service. Content checked by sha256.

use ioth_e2e::*;
use std::process::Command;
use std::time::Duration;

/// A free kernel TCP port on 127.0.0.1 (bound and released: the test uses it right away).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn www(lab: &NodeLab) -> (std::path::PathBuf, String) {
    let dir = lab.dir.join("www");
    std::fs::create_dir_all(&dir).unwrap();
    chmod(&dir, 0o755);
    random_file(&dir.join("blob"), 3 << 20);
    let sum = sha256_file(&dir.join("blob"));
    (dir, sum)
}

#[test]
fn forward_host_curl_reaches_a_node() {
    if !have("python3") || !have("curl") {
        return skip("python3 or curl missing");
    }
    let mut lab = NodeLab::new("fwd", None);
    let web = lab.node("fd00::91,10.0.0.91");
    let gw = lab.node("fd00::90,10.0.0.90");
    let (dir, sum) = www(&lab);
    let mut s = lab.on(&web, "python3");
    s.args(["-u", "-m", "http.server", "8000", "--bind", "::"])
        .current_dir(&dir);
    lab.spawn(s, "web.log");
    wait_for(Duration::from_secs(20), "http.server on the node", || {
        lab.log("web.log").contains("Serving HTTP").then_some(())
    });
    let port = free_port();
    let mut f = Command::new(bin("iothctl"));
    f.arg("--ctl")
        .arg(&gw)
        .args(["forward", &format!("127.0.0.1:{port}"), "fd00::91", "8000"]);
    lab.spawn(f, "forward.log");
    wait_for(Duration::from_secs(10), "forwarder ready", || {
        lab.log("forward.log").contains("forwarding").then_some(())
    });
    // Plain curl, no shim: the host's loopback into the virtual LAN. Twice (two connections).
    for i in 0..2 {
        let out = lab.dir.join(&format!("got{i}"));
        let o = run_for(60, {
            let mut c = Command::new("curl");
            c.args(["-sS", "-o"])
                .arg(&out)
                .arg(format!("http://127.0.0.1:{port}/blob"))
                .env_remove("LD_PRELOAD");
            c
        });
        assert!(
            o.status.success(),
            "{}\n{}",
            text(&o),
            lab.log("forward.log")
        );
        assert_eq!(sha256_file(&out), sum);
    }
    // An unreachable target: the host connection is closed, the forwarder lives on.
    let mut f = Command::new(bin("iothctl"));
    let port2 = free_port();
    f.arg("--ctl")
        .arg(&gw)
        .args(["forward", &format!("127.0.0.1:{port2}"), "fd00::91", "8001"]);
    lab.spawn(f, "forward2.log");
    wait_for(Duration::from_secs(10), "second forwarder ready", || {
        lab.log("forward2.log").contains("forwarding").then_some(())
    });
    let mut c = Command::new("curl");
    c.args(["-sS", "-o", "/dev/null"])
        .arg(format!("http://127.0.0.1:{port2}/blob"))
        .env_remove("LD_PRELOAD");
    let o = run_for(60, c);
    assert!(!o.status.success(), "{}", text(&o));
    wait_for(Duration::from_secs(10), "the refusal said", || {
        lab.log("forward2.log").contains("refused").then_some(())
    });
}

#[test]
fn expose_node_curl_reaches_a_host_service() {
    if !have("python3") || !have("curl") {
        return skip("python3 or curl missing");
    }
    let mut lab = NodeLab::new("expose", None);
    let gw = lab.node("fd00::92,10.0.0.92");
    let (dir, sum) = www(&lab);
    let port = free_port();
    // A host service: python without the shim on the kernel's loopback.
    let mut s = Command::new("python3");
    s.args([
        "-u",
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .current_dir(&dir)
    .env_remove("LD_PRELOAD");
    lab.spawn(s, "host.log");
    wait_for(Duration::from_secs(20), "host http.server", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let mut f = Command::new(bin("iothctl"));
    f.arg("--ctl")
        .arg(&gw)
        .args(["expose", "::", "8080", &format!("127.0.0.1:{port}")]);
    lab.spawn(f, "expose.log");
    wait_for(Duration::from_secs(10), "exposed", || {
        lab.log("expose.log").contains("listening").then_some(())
    });
    // A node of its own (the shim starts it) fetches through the node's port 8080, by IPv6
    // and by IPv4.
    for (i, url) in ["http://[fd00::92]:8080/blob", "http://10.0.0.92:8080/blob"]
        .iter()
        .enumerate()
    {
        let out = lab.dir.join(&format!("got{i}"));
        let mut c = lab.at("fd00::93,10.0.0.93", "curl");
        c.args(["-sS", "-o"]).arg(&out).arg(url);
        let o = run_for(60, c);
        assert!(
            o.status.success(),
            "{}\n{}",
            text(&o),
            lab.log("expose.log")
        );
        assert_eq!(sha256_file(&out), sum);
    }
    // The daemon the shim started for curl: stopped by pid at the end.
    let _node = stack_daemons(&lab.dir.join("run").to_string_lossy())
        .first()
        .copied()
        .map(|pid| Daemon {
            pid,
            name: "curl's ioth-stackd".into(),
        });
}
