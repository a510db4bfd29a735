//! Many nodes on one switch: 300 stack daemons on a switch started with its defaults all get
//! a port and each answers a ping from another node; a switch with a small `--numports`
//! refuses the next node, and the node's daemon says that the switch is full and names the
//! option.

use ioth_e2e::*;
use std::process::Command;
use std::time::{Duration, Instant};

const NODES: usize = 300;

fn ip(i: usize) -> String {
    format!("10.61.{}.{}", i / 200, i % 200 + 1)
}

#[test]
fn three_hundred_nodes_on_a_default_switch_each_answer() {
    let tmp = TempDir::new("many-nodes");
    let sw = tmp.join("sw");
    let _switch = ioth_switch(&sw, &[]);
    let started = Instant::now();
    let mut nodes = Vec::new();
    // Node 0 is the prober; nodes 1..=NODES answer.
    for i in 0..=NODES {
        nodes.push(node(
            &sw,
            &format!("{}/16", ip(i)),
            &tmp.join(&format!("n{i}.ctl")),
        ));
    }
    eprintln!("{} nodes up in {:?}", NODES + 1, started.elapsed());
    let t = Instant::now();
    let deadline = t + Duration::from_secs(120);
    for i in 1..=NODES {
        assert!(
            Instant::now() < deadline,
            "pings took too long (at node {i})"
        );
        let mut c = Command::new(bin("iothctl"));
        c.arg("--ctl")
            .arg(&nodes[0].ctl)
            .args(["ping", "-c", "1", "-W", "3", &ip(i)]);
        let o = run_for(10, c);
        assert!(o.status.success(), "node {i} ({}): {}", ip(i), text(&o));
    }
    eprintln!("{NODES} nodes answered in {:?}", t.elapsed());
    // The switch shows them all.
    let info = switch_ctl(&sw, "showinfo");
    assert!(
        info.contains(&format!("in use {}", NODES + 1)),
        "showinfo: {info}"
    );
    // Stop them all at once (each by its pid), then reap one by one.
    for n in &nodes {
        // SAFETY: signalling a daemon this test started.
        unsafe { libc::kill(n.daemon.pid, libc::SIGTERM) };
    }
    drop(nodes);
}

#[test]
fn a_full_switch_says_so_and_names_the_option() {
    let tmp = TempDir::new("full-switch");
    let sw = tmp.join("sw");
    let _switch = ioth_switch(&sw, &["--numports", "2"]);
    let _a = node(&sw, "10.62.0.1/24", &tmp.join("a.ctl"));
    let _b = node(&sw, "10.62.0.2/24", &tmp.join("b.ctl"));
    let mut c = Command::new(bin("ioth-stackd"));
    c.arg("--ip")
        .arg("10.62.0.3/24")
        .arg("--switch")
        .arg(&sw)
        .arg("--ctl")
        .arg(tmp.join("c.ctl"))
        .arg("--daemon")
        .env_remove("LD_PRELOAD");
    let o = run_for(20, c);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "a third node on 2 ports: {}", text(&o));
    let want = format!(
        "the switch at {} is full: all its 2 ports are in use",
        sw.display()
    );
    assert!(err.contains(&want), "stderr: {err}");
    assert!(err.contains("--numports"), "stderr: {err}");
    // Over VDE, which cannot carry a reason, the client still points at the option.
    let e = ioth_common::port::SwitchPort::open(&format!("vde://{}", sw.display()), "d", 1518)
        .expect_err("no third VDE port");
    assert!(e.to_string().contains("--numports"), "{e}");
}
