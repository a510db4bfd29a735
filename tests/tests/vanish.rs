//! Peers that vanish: a server node sends a large file to a client node whose stack daemon is
//! then killed (`kill -9`) mid-transfer. The server's connection must not live forever:
//!
//! - the server application closes: its stack daemon drops the orphaned connection after the
//!   orphan limit (`IOTH_TCP_ORPHAN_TIMEOUT`, short here; Linux's 102.2 s by default), stops
//!   asking for the dead node's MAC, and exits (no socket left, after its linger);
//! - the server application keeps the connection with `TCP_USER_TIMEOUT`: it fails with
//!   `ETIMEDOUT` (from `read`, or `SO_ERROR`), as on Linux.

use ioth_e2e::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// The server: listens on `port`, says so, accepts one connection and sends into it until a
/// send finds no room for 3 s or fails.
/// With `USER_TIMEOUT` set it keeps the socket after that and reports `SO_ERROR` once the
/// connection ended; it then closes and exits.
const SERVER: &str = r#"
import os, select, socket, sys, time
port = int(sys.argv[1])
user_timeout = int(os.environ.get("USER_TIMEOUT", "0"))
l = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("::", port))
l.listen(1)
print("listening", flush=True)
c, _ = l.accept()
l.close()
if user_timeout:
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout)
    print("user timeout", c.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT), flush=True)
c.setblocking(False)
chunk = bytes(range(256)) * 256
sent = 0
end = "stalled"
while True:
    r, w, _ = select.select([], [c], [], 3.0)
    if not w:
        break
    try:
        sent += c.send(chunk)
    except BlockingIOError:
        pass
    except OSError as e:
        end = "send failed: " + os.strerror(e.errno)
        break
print(end, "after", sent, flush=True)
if user_timeout:
    deadline = time.time() + 60
    while time.time() < deadline:
        # The stack shuts the connection down when it gives up: the read fails with
        # ETIMEDOUT (which takes the socket's error, as on Linux), or EOF.
        r, _, _ = select.select([c], [], [], 1.0)
        if r:
            try:
                if c.recv(65536) == b"":
                    break
            except OSError as e:
                print("read error", e.errno, flush=True)
                break
    print("so_error", c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), flush=True)
c.close()
print("closed", flush=True)
"#;

/// The client: connects and reads until EOF; says so after the first MiB.
const CLIENT: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
got = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    if got < 1 << 20 <= got + len(b):
        print("got 1 MiB", flush=True)
    got += len(b)
"#;

/// The pid of the stack daemon the shim started for the server (its `--ctl` is under the
/// lab's run directory).
fn server_daemon(rundir: &Path) -> Option<i32> {
    stack_daemons(&rundir.to_string_lossy()).first().copied()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the pid exists.
    let exists = unsafe { libc::kill(pid, 0) == 0 };
    // A zombie (exited, not yet reaped by whoever adopted it) counts as gone.
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
}

/// A server node on `lab`'s switch (started by the shim, with `env`) sending to a client node
/// (a daemon of our own, returned) that read 1 MiB; `server_log` holds the server's output.
fn transfer_to_a_doomed_client(
    lab: &mut NodeLab,
    port: u16,
    env: &[(&str, &str)],
    server_log: &str,
) -> (Node, Daemon) {
    let server_ip = "fd00::a1";
    let mut s = lab.at(&format!("{server_ip}/64"), "python3");
    s.args(["-c", SERVER, &port.to_string()]);
    // Through TCP: a cut-through connection has no peer to vanish (the socketpair is the
    // kernel's), and these timeouts are TCP's.
    s.env("IOTH_CUT_THROUGH", "0");
    for (k, v) in env {
        s.env(k, v);
    }
    lab.spawn(s, server_log);
    wait_for(Duration::from_secs(20), "the server to listen", || {
        lab.log(server_log).contains("listening").then_some(())
    });
    let rundir = lab.dir.join("run");
    let server_pid = server_daemon(&rundir).expect("the server's stack daemon");
    // Stopped by pid when the test ends, should it still run (as it did before the fix).
    let server = Daemon {
        pid: server_pid,
        name: "server's ioth-stackd".into(),
    };

    let client = node(
        &lab.sw,
        "fd00::a2/64",
        &lab.dir.join(&format!("c{port}.ctl")),
    );
    let mut c = lab.on(&client.ctl, "python3");
    c.args(["-c", CLIENT, server_ip, &port.to_string()]);
    let client_log = format!("client{port}.log");
    lab.spawn(c, &client_log);
    wait_for(Duration::from_secs(20), "the client to read 1 MiB", || {
        lab.log(&client_log).contains("got 1 MiB").then_some(())
    });
    (client, server)
}

#[test]
fn server_lets_go_of_a_vanished_client_and_its_daemon_exits() {
    let mut lab = NodeLab::new("vanish", None);
    let (mut client, server) = transfer_to_a_doomed_client(
        &mut lab,
        7001,
        &[("IOTH_TCP_ORPHAN_TIMEOUT", "8")],
        "server.log",
    );
    client.kill();
    // The server's sends stall (nothing is acknowledged any more); it closes and exits.
    wait_for(Duration::from_secs(30), "the server to close", || {
        lab.log("server.log").contains("closed").then_some(())
    });
    let closed = Instant::now();
    assert!(
        lab.log("server.log").contains("stalled after"),
        "{}",
        lab.log("server.log")
    );
    // Megabytes are still unsent, and the client's MAC is forgotten soon: without a limit
    // the daemon would ask for it every second, forever. With it: the orphan limit (8 s
    // since the client was last heard, which was 3 s or more before the close), then the
    // daemon's linger (2 s).
    wait_for(
        Duration::from_secs(30),
        "the server's stack daemon to exit",
        || (!alive(server.pid)).then_some(()),
    );
    let took = closed.elapsed();
    eprintln!("server daemon exited {took:?} after the app closed");
    assert!(
        took >= Duration::from_secs(4),
        "the daemon exited after {took:?}: the orphan did not wait for its limit"
    );
}

#[test]
fn a_connection_with_tcp_user_timeout_fails_with_etimedout() {
    let mut lab = NodeLab::new("vanish-ut", None);
    let (mut client, server) =
        transfer_to_a_doomed_client(&mut lab, 7002, &[("USER_TIMEOUT", "2000")], "server.log");
    assert!(lab.log("server.log").contains("user timeout 2000"));
    client.kill();
    wait_for(Duration::from_secs(30), "the server to see the end", || {
        lab.log("server.log").contains("closed").then_some(())
    });
    let log = lab.log("server.log");
    // Whichever call comes first takes the error, as on Linux: a send (the sender was
    // stalled, so usually this one), the read at the end, or SO_ERROR.
    assert!(
        log.contains(&format!("read error {}", libc::ETIMEDOUT))
            || log.contains(&format!("so_error {}", libc::ETIMEDOUT))
            || log.contains("send failed: Connection timed out"),
        "the server did not see ETIMEDOUT:\n{log}"
    );
    // TCP_USER_TIMEOUT bounds the orphan too: nothing is left, the daemon exits.
    wait_for(
        Duration::from_secs(30),
        "the server's stack daemon to exit",
        || (!alive(server.pid)).then_some(()),
    );
}
