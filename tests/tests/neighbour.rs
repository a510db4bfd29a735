//! A connect to an address whose node answered before but is gone fails the way Linux's does
//! (issue 16): with `EHOSTUNREACH` once probes of the neighbour found no one (3 s, after the
//! SYN went 1 s unanswered), not after the program's own timeout or the 20 s connect timeout.
//! haproxy reported "Layer4 timeout" for such a server; Linux reports "No route to host".

use ioth_e2e::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The client: a refused connect to ADDR (the node answers), then, when told, a connect to
/// it again, timed.
const CLIENT: &str = r#"
import errno, socket, sys, time
a = sys.argv[1]
s = socket.socket(socket.AF_INET6)
print("first", errno.errorcode.get(s.connect_ex((a, 7)), "ok"), flush=True)
s.close()
sys.stdin.readline()
s = socket.socket(socket.AF_INET6)
t = time.monotonic()
r = s.connect_ex((a, 7))
print("second", errno.errorcode.get(r, "ok"), round(time.monotonic() - t, 1), flush=True)
"#;

#[test]
fn a_connect_to_a_node_that_is_gone_fails_with_ehostunreach() {
    if !have("python3") {
        return skip("python3 missing");
    }
    let tmp = TempDir::new("neigh");
    let sw = tmp.join("sw");
    let _switch = ioth_switch(&sw, &[]);
    // The server node: a stack daemon in the foreground (no keeper to run it again).
    let mut server = Command::new(bin("ioth-stackd"))
        .args(["--ip", "fd00::51/64", "--persist", "--switch"])
        .arg(&sw)
        .arg("--ctl")
        .arg(tmp.join("a.ctl"))
        .env_remove("LD_PRELOAD")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(5), "the server node", || {
        tmp.join("a.ctl").exists().then_some(())
    });
    let mut c = as_node("python3", &sw, &tmp.join("run"), "fd00::52/64");
    let mut client = c
        .args(["-c", CLIENT, "fd00::51"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "first ECONNREFUSED", "the server node answers");
    let _ = server.kill();
    let _ = server.wait();
    // The first connect's frames gave the two nodes a shortcut; wait until the client's
    // daemon has seen it end (the switch ends it when the server's port closes). A connect
    // sent over a shortcut whose peer died but whose end has not reached us yet loses its
    // answer and fails with ETIMEDOUT at once (the peer might have taken the connection):
    // not the case this test is about.
    let run = tmp.join("run");
    let client_ctl = wait_for(Duration::from_secs(10), "the client node's socket", || {
        std::fs::read_dir(&run)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("node-") && n.ends_with(".ctl"))
            })
    });
    wait_for(Duration::from_secs(10), "the shortcut to end", || {
        (info_field(&client_ctl, "shortcuts") == "0").then_some(())
    });
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let _ = client.kill();
    let _ = client.wait();
    let w: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(w.get(..2), Some(&["second", "EHOSTUNREACH"][..]), "{line}");
    // 1 s unanswered, then 3 s of probes: well before the 20 s connect timeout.
    let secs: f64 = w[2].parse().unwrap();
    assert!((3.0..10.0).contains(&secs), "{line}");
}
