//! TCP socket semantics of virtual sockets, one test per behaviour (see `sockets.py`): a
//! server node (fd00::10, 10.0.0.10) and a client node (fd00::11, 10.0.0.11) run as real
//! Python processes with the shim, through the stacks and cut through; and the client again
//! as another process of the server's own node. Each case must print `ok CASE`, and the
//! shim must stay silent (empty stderr).

mod harness;
use harness::*;
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sockets.py");
const V6: (&str, &str) = ("fd00::10", "fd00::11");
const V4: (&str, &str) = ("10.0.0.10", "10.0.0.11");

/// A client node that stays up while the cases run, and connects to the server over and
/// over (both families) until told to stop (the file `argv[1]` appears): the first
/// connections go through TCP and make the shortcut; then the node hears the server's
/// addresses through it and cuts its connections through.
const WARM: &str = r#"
import os, socket, sys
flag, hosts = sys.argv[1], sys.argv[2:]
while not os.path.exists(flag):
    for h in hosts:
        socket.create_connection((h, 7000)).close()
print("warm", flush=True)
sys.stdin.read()
"#;

/// Cases that open no TCP connection to the server's listeners (nothing to cut through):
/// they connect within the client node itself, to closed ports, or to nothing.
const NO_CUT: &[&str] = &[
    "loopback",
    "unreachable",
    "non_inet_untouched",
    "accept_flags",
    "econnrefused",
    "reuseaddr",
];

/// How the case's client reaches the server.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Through the stacks: both nodes with `IOTH_CUT_THROUGH=0`.
    Stack,
    /// Cut through, from another node (warmed up first).
    Cut,
    /// From within the server's own node: cut through to its own listeners.
    Node,
}

/// Run `case` three ways: through the stacks, with every connection cut through, and from a
/// process of the server's own node (each must cut at least one connection, unless it opens
/// none).
fn run_case(case: &str, families: &[(&str, &str)], limit: Duration) {
    for mode in [Mode::Stack, Mode::Cut, Mode::Node] {
        run_case_mode(case, families, limit, mode);
    }
}

/// Start the server node, then run `case` on the client node once per address family given.
fn run_case_mode(case: &str, families: &[(&str, &str)], limit: Duration, how: Mode) {
    if !have("python3") {
        eprintln!("SKIP: python3 missing");
        return;
    }
    let cut = how != Mode::Stack;
    let mode = match how {
        Mode::Stack => "stack",
        Mode::Cut => "cut",
        Mode::Node => "node",
    };
    let (client, counted) = if how == Mode::Node {
        ("fd00::10,10.0.0.10", "fd00::10")
    } else {
        ("fd00::11,10.0.0.11", "fd00::11")
    };
    let mut lab = Lab::new(&format!("sk-{}-{mode}", &case[..case.len().min(8)]));
    let set_mode = |c: &mut std::process::Command| {
        if !cut {
            c.env("IOTH_CUT_THROUGH", "0");
        }
    };
    let mut s = lab.node("fd00::10,10.0.0.10", "python3");
    s.args([SCRIPT, "server"]);
    set_mode(&mut s);
    lab.spawn(s, "server.log");
    wait_for(Duration::from_secs(30), "server ready", || {
        lab.log("server.log").contains("ready").then_some(())
    });
    let mut made = 0;
    if how == Mode::Cut {
        let flag = lab.path("warm");
        let mut w = lab.node(client, "python3");
        w.args(["-c", WARM])
            .arg(&flag)
            .args(["fd00::10", "10.0.0.10"])
            .stdin(std::process::Stdio::piped());
        lab.spawn(w, "warm.log");
        // Two rounds of both families cut through: both routes are known.
        made = wait_for(Duration::from_secs(30), "connections cut through", || {
            lab.node_counter(counted, "cut_made").filter(|n| *n >= 4)
        });
        std::fs::write(&flag, b"").unwrap();
        wait_for(Duration::from_secs(30), "warm-up over", || {
            lab.log("warm.log").contains("warm").then_some(())
        });
        made = lab.node_counter(counted, "cut_made").unwrap_or(made);
    } else if how == Mode::Node {
        made = lab.node_counter(counted, "cut_made").unwrap_or(0);
    }
    for (host, me) in families {
        // Within the node, the client's own address is the server's.
        let me = if how == Mode::Node {
            if me.contains(':') {
                "fd00::10"
            } else {
                "10.0.0.10"
            }
        } else {
            me
        };
        let mut c = lab.node(client, "python3");
        c.args([SCRIPT, case, host, me]);
        if case == "v6only" {
            c.args([if how == Mode::Node {
                "fd00::10"
            } else {
                "fd00::11"
            }]);
        }
        set_mode(&mut c);
        let o = lab.run(c, limit);
        let out = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && out.contains(&format!("ok {case}")),
            "{case} ({me} -> {host}, {mode}): {}\nstdout: {out}\nstderr: {err}\nserver: {}",
            o.status,
            lab.log("server.log")
        );
        assert!(err.is_empty(), "{case}: the shim must be silent: {err}");
    }
    if cut && !NO_CUT.contains(&case) {
        let now = lab.node_counter(counted, "cut_made").unwrap_or(0);
        assert!(
            now > made,
            "{case} ({mode}): no connection was cut through ({made} before, {now} after)"
        );
    }
}

fn both(case: &str) {
    run_case(case, &[V6, V4], Duration::from_secs(90));
}

fn v6(case: &str) {
    run_case(case, &[V6], Duration::from_secs(90));
}

#[test]
fn nonblocking_connect_einprogress_ealready_eisconn() {
    both("nonblocking_connect");
}

#[test]
fn blocking_connect() {
    both("blocking_connect");
}

#[test]
fn connect_refused_econnrefused_and_socket_lives_on() {
    both("econnrefused");
}

#[test]
fn connect_to_absent_address_fails_within_30s() {
    both("unreachable");
}

#[test]
fn backlog_200_simultaneous_connects_to_slow_acceptor() {
    v6("backlog");
}

#[test]
fn accept_and_accept4_flags_and_einval() {
    both("accept_flags");
}

#[test]
fn getsockname_getpeername_and_v4_mapped() {
    both("names");
}

#[test]
fn loopback_of_the_node() {
    v6("loopback");
}

#[test]
fn ipv6_v6only() {
    run_case(
        "v6only",
        &[("fd00::10", "10.0.0.11")],
        Duration::from_secs(60),
    );
}

#[test]
fn so_reuseaddr() {
    both("reuseaddr");
}

#[test]
fn so_reuseport_spreads_connections() {
    both("reuseport");
}

#[test]
fn so_sndbuf_after_connect() {
    both("sndbuf");
}

#[test]
fn tcp_nodelay_and_cork() {
    v6("nodelay_cork");
}

#[test]
fn so_keepalive() {
    v6("keepalive");
}

#[test]
fn so_rcvtimeo_and_so_sndtimeo() {
    v6("timeouts");
}

#[test]
fn shutdown_each_direction() {
    both("shutdown");
}

#[test]
fn eof_and_rst_propagation() {
    both("eof_rst");
}

#[test]
fn epipe_sigpipe_msg_nosignal() {
    v6("epipe_sigpipe");
}

#[test]
fn nonblocking_by_fcntl_and_ioctl() {
    v6("nonblocking_fcntl_ioctl");
}

#[test]
fn close_on_exec() {
    v6("cloexec");
}

#[test]
fn dup_dup2_dup3() {
    v6("dup");
}

#[test]
fn fork_child_close_keeps_parent_connection() {
    v6("fork");
}

#[test]
fn exec_with_socket_on_stdin_stdout() {
    v6("exec_stdio");
}

#[test]
fn exec_before_asking_the_daemon_anything() {
    both("exec_held");
}

#[test]
fn spawn_before_asking_the_daemon_anything() {
    both("spawn_held");
}

#[test]
fn close_range_keeps_sockets_working() {
    v6("close_range");
}

#[test]
fn select_poll_ppoll_on_mixed_fds() {
    v6("poll_select");
}

#[test]
fn epoll_edge_triggered_rdhup_exclusive() {
    both("epoll");
}

#[test]
fn blocking_connect_and_signals_sa_restart_or_eintr() {
    v6("signals");
}

#[test]
fn non_inet_sockets_untouched() {
    v6("non_inet_untouched");
}
