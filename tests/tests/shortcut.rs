//! Switch shortcuts between two stack daemons: TCP between two nodes goes over the direct
//! socketpair and its shared-memory rings (the daemons' `shortcut_tx`/`shortcut_rx`/
//! `shortcut_ring_tx` counters), survives revocations in the
//! middle of a stream, falls back when the peer is killed, and is never used on a switch that
//! writes a pcap file. Every transfer is checked by sha256.

use ioth_e2e::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A counter `key=N` from the node's info.
fn counter(ctl: &Path, key: &str) -> u64 {
    info_field(ctl, key).parse().unwrap()
}

/// A checked stream (`checked_stream`) of `data` from node `from` to `to_ip`:`port` on `to`.
fn transfer(
    tmp: &TempDir,
    from: &Path,
    to: &Path,
    to_ip: &str,
    port: u16,
    data: &[u8],
    during: impl FnOnce(),
) {
    checked_stream(tmp, (from, to), (to_ip, port), data, during);
}

/// `python3 -c script` (then `args`) as an application of the node at control socket `ctl`
/// (`IOTH_STACK`, run directory in `tmp`).
fn python_on(tmp: &TempDir, ctl: &Path, script: &str, args: &[&Path]) -> Command {
    let mut c = Command::new("python3");
    c.arg("-c")
        .arg(script)
        .args(args)
        .env("LD_PRELOAD", libioth())
        .env("IOTH_STACK", ctl)
        .env("IOTH_RUNDIR", tmp.join("run"))
        .env_remove("IOTH_IP");
    c
}

/// A server started from `c` that prints `ready` once it listens: running (stopped by pid
/// if the test fails first), its guard, and the rest of its output.
fn ready_server(
    mut c: Command,
) -> (
    std::process::Child,
    Daemon,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let mut server = c.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let guard = Daemon {
        pid: server.id() as i32,
        name: "server".into(),
    };
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut out, &mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    (server, guard, out)
}

/// A python server on node `ctl` (IPv6 socket, port `port`) that takes `count` connections,
/// one at a time: for each it checks `getpeername` and `getsockname` against `accept`,
/// reads up to `bytes` bytes, sends back the peer's address as `accept` gave it and the
/// sha256 of what came, and closes; then prints `served N`. Started as [`ready_server`].
fn hashing_server(
    tmp: &TempDir,
    ctl: &Path,
    port: u16,
    count: usize,
    bytes: usize,
) -> (
    std::process::Child,
    Daemon,
    std::io::BufReader<std::process::ChildStdout>,
) {
    ready_server(python_on(
        tmp,
        ctl,
        &format!(
            "import socket,hashlib\n\
             l=socket.socket(socket.AF_INET6); l.bind(('::',{port})); l.listen(64)\n\
             l.settimeout(30); print('ready', flush=True)\n\
             for i in range({count}):\n    \
               c,a=l.accept(); h=hashlib.sha256(); n=0\n    \
               assert c.getpeername()[:2] == a[:2] and c.getsockname()[1] == {port}, (a, c.getpeername(), c.getsockname())\n    \
               while n < {bytes}:\n        d=c.recv(65536)\n        if not d: break\n        h.update(d); n+=len(d)\n    \
               c.sendall(('%s %d %s\\n' % (a[0], a[1], h.hexdigest())).encode()); c.close()\n\
             print('served', i + 1)\n"
        ),
        &[],
    ))
}

fn random(len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len];
    ioth_common::sys::getrandom(&mut d).unwrap();
    d
}

#[test]
fn nodes_talk_over_a_shortcut_and_fall_back_when_the_peer_is_killed() {
    let tmp = TempDir::new("shortcut");
    let sw = tmp.join("sw");
    // The stream must cross the shortcut itself, not go from process to process.
    let _switch = ioth_switch(&sw, &["--no-cut-through"]);
    let a = node(&sw, "fd00::51/64", &tmp.join("a.ctl"));
    let mut b = node(&sw, "fd00::52/64", &tmp.join("b.ctl"));
    let data = random(8 << 20);
    transfer(&tmp, &a.ctl, &b.ctl, "fd00::52", 6001, &data, || {});
    assert_eq!(counter(&a.ctl, "shortcuts"), 1, "{}", node_info(&a.ctl));
    assert!(
        counter(&a.ctl, "shortcut_tx") > 100,
        "{}",
        node_info(&a.ctl)
    );
    assert!(
        counter(&b.ctl, "shortcut_rx") > 100,
        "{}",
        node_info(&b.ctl)
    );
    // Both daemons speak rings: the data frames went through shared memory.
    assert!(
        counter(&a.ctl, "shortcut_ring_tx") > 100,
        "{}",
        node_info(&a.ctl)
    );
    assert!(switch_ctl(&sw, "shortcut/print").contains("Shortcut 0001"));

    // The peer dies without a word; a new node with the same address (and so the same MAC)
    // plugs in on another port: A's shortcut ends, and A reaches the newcomer.
    b.kill();
    let b2 = node(&sw, "fd00::52/64", &tmp.join("b2.ctl"));
    let data = random(4 << 20);
    transfer(&tmp, &a.ctl, &b2.ctl, "fd00::52", 6002, &data, || {});
    assert!(
        counter(&a.ctl, "shortcuts_ended") >= 1,
        "{}",
        node_info(&a.ctl)
    );
    assert!(
        counter(&b2.ctl, "shortcut_rx") > 0,
        "{}",
        node_info(&b2.ctl)
    );
}

#[test]
fn a_stream_survives_revocations_in_its_middle() {
    let tmp = TempDir::new("shortcut-revoke");
    let sw = tmp.join("sw");
    let _switch = ioth_switch(&sw, &[]);
    let a = node(&sw, "fd00::61/64", &tmp.join("a.ctl"));
    let b = node(&sw, "fd00::62/64", &tmp.join("b.ctl"));
    let data = random(16 << 20);
    transfer(&tmp, &a.ctl, &b.ctl, "fd00::62", 6003, &data, || {
        // Revoke whatever shortcut there is, a few times, while data flows: each time the
        // daemons fall back to the switch, which offers a new shortcut.
        let end = Instant::now() + Duration::from_millis(600);
        while Instant::now() < end {
            switch_ctl(&sw, "shortcut/revoke");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert!(
        counter(&a.ctl, "shortcuts_ended") >= 1,
        "{}",
        node_info(&a.ctl)
    );
    // After the last revocation, more traffic makes a new one.
    let data = random(1 << 20);
    transfer(&tmp, &a.ctl, &b.ctl, "fd00::62", 6004, &data, || {});
    assert_eq!(counter(&a.ctl, "shortcuts"), 1, "{}", node_info(&a.ctl));
}

/// `--port-lock` (each port keeps the first MAC it sends) does not get in the way of honest
/// stack daemons: their ports lock to their own MACs, nothing is dropped, shortcuts still
/// come.
#[test]
fn nodes_on_a_port_locked_switch_talk_and_take_shortcuts() {
    let tmp = TempDir::new("shortcut-lock");
    let sw = tmp.join("sw");
    let _switch = ioth_switch(&sw, &["--port-lock"]);
    let a = node(&sw, "fd00::91/64", &tmp.join("a.ctl"));
    let b = node(&sw, "fd00::92/64", &tmp.join("b.ctl"));
    let data = random(2 << 20);
    transfer(&tmp, &a.ctl, &b.ctl, "fd00::92", 6030, &data, || {});
    assert_eq!(counter(&a.ctl, "shortcuts"), 1, "{}", node_info(&a.ctl));
    let ports = switch_ctl(&sw, "port/print");
    assert_eq!(ports.matches(" locked ").count(), 2, "{ports}");
    assert!(
        ports
            .lines()
            .filter(|l| l.contains("DROP:"))
            .all(|l| l.contains(" lock 0 ")),
        "{ports}"
    );
}

#[test]
fn no_shortcut_on_a_switch_writing_a_pcap_file() {
    let tmp = TempDir::new("shortcut-pcap");
    let sw = tmp.join("sw");
    let pcap = tmp.join("cap.pcap");
    let _switch = ioth_switch(&sw, &["--pcap", &pcap.to_string_lossy()]);
    let a = node(&sw, "fd00::71/64", &tmp.join("a.ctl"));
    let b = node(&sw, "fd00::72/64", &tmp.join("b.ctl"));
    let data = random(2 << 20);
    transfer(&tmp, &a.ctl, &b.ctl, "fd00::72", 6005, &data, || {});
    assert_eq!(
        counter(&a.ctl, "shortcuts_made"),
        0,
        "{}",
        node_info(&a.ctl)
    );
    assert_eq!(counter(&b.ctl, "shortcut_rx"), 0, "{}", node_info(&b.ctl));
    // No connection was cut through either (no shortcut, no cut-through).
    assert_eq!(counter(&a.ctl, "cut_made"), 0, "{}", node_info(&a.ctl));
    // Every byte went through the switch and its capture (flushed within its 200 ms tick):
    // the stream reassembled from the TCP segments in the pcap file is the data sent.
    let want = sha256_bytes(&data);
    wait_for(
        Duration::from_secs(5),
        "the pcap file holds the whole stream",
        || {
            let got = tcp_stream_to(&std::fs::read(&pcap).unwrap_or_default(), 6005);
            (sha256_bytes(&got) == want).then_some(())
        },
    );
}

#[test]
fn streams_both_ways_at_once_do_not_stall_each_other() {
    let tmp = TempDir::new("shortcut-both");
    let sw = tmp.join("sw");
    // The streams must go through the rings, not from process to process (cut-through).
    let _switch = ioth_switch(&sw, &["--no-cut-through"]);
    let a = node(&sw, "fd00::81/64", &tmp.join("a.ctl"));
    let b = node(&sw, "fd00::82/64", &tmp.join("b.ctl"));
    // A first exchange makes the shortcut; then eight bulk streams cross, four each way: more
    // than a ring holds in flight, so some frames take the switch (`shortcut_full`), and
    // neither daemon may wait for the other.
    transfer(
        &tmp,
        &a.ctl,
        &b.ctl,
        "fd00::82",
        6010,
        &random(1 << 20),
        || {},
    );
    std::thread::scope(|s| {
        let ab = (&a.ctl, &b.ctl, "fd00::82");
        let ba = (&b.ctl, &a.ctl, "fd00::81");
        for (i, (from, to, ip)) in [ab, ba, ab, ba, ab, ba, ab, ba].into_iter().enumerate() {
            let tmp = &tmp;
            s.spawn(move || {
                transfer(tmp, from, to, ip, 6020 + i as u16, &random(12 << 20), || {});
            });
        }
    });
    assert_eq!(counter(&a.ctl, "shortcuts"), 1, "{}", node_info(&a.ctl));
    assert!(
        counter(&b.ctl, "shortcut_ring_tx") > 100,
        "{}",
        node_info(&b.ctl)
    );
}

/// TCP cut-through: a connection between two nodes of one switch runs from process to
/// process, the very first one too (counted on both sides, the bytes intact, no shortcut
/// frames for them); with `--no-cut-through` on the switch the same connections stay on
/// the LAN.
#[test]
fn connections_over_a_shortcut_are_cut_through_unless_the_switch_says_no() {
    for cut in [true, false] {
        let tmp = TempDir::new("shortcut-cut");
        let sw = tmp.join("sw");
        let args: &[&str] = if cut { &[] } else { &["--no-cut-through"] };
        let _switch = ioth_switch(&sw, args);
        let a = node(&sw, "fd00::91/64,10.0.9.1/24", &tmp.join("a.ctl"));
        let b = node(&sw, "fd00::92/64,10.0.9.2/24", &tmp.join("b.ctl"));
        // The first connections: each waits for its neighbour's answer, which brings the
        // shortcut, so they are cut through too.
        transfer(
            &tmp,
            &a.ctl,
            &b.ctl,
            "fd00::92",
            6040,
            &random(64 << 10),
            || {},
        );
        transfer(
            &tmp,
            &a.ctl,
            &b.ctl,
            "10.0.9.2",
            6043,
            &random(64 << 10),
            || {},
        );
        wait_for(Duration::from_secs(5), "the shortcut", || {
            (counter(&a.ctl, "shortcuts") == 1).then_some(())
        });
        let frames = counter(&a.ctl, "shortcut_tx");
        // Then both families, 4 MiB each, sha256-checked by checked_stream.
        transfer(
            &tmp,
            &a.ctl,
            &b.ctl,
            "fd00::92",
            6041,
            &random(4 << 20),
            || {},
        );
        transfer(
            &tmp,
            &a.ctl,
            &b.ctl,
            "10.0.9.2",
            6042,
            &random(4 << 20),
            || {},
        );
        let info = format!("{}\n{}", node_info(&a.ctl), node_info(&b.ctl));
        // The switch's console counts them too, as the daemons report them.
        let printed = |n: u32| {
            let p = switch_ctl(&sw, "shortcut/print");
            p.contains(&format!(" cut-through {n}\n")).then_some(p)
        };
        if cut {
            assert_eq!(counter(&a.ctl, "cut_made"), 4, "{info}");
            assert_eq!(counter(&b.ctl, "cut_taken"), 4, "{info}");
            wait_for(
                Duration::from_secs(5),
                "shortcut/print: cut-through 4",
                || printed(4),
            );
            // 8 MiB crossed, yet only a handful of frames (neighbour traffic) went through
            // the shortcut: through TCP the data alone takes 128 frames of 64 KiB or more.
            assert!(counter(&a.ctl, "shortcut_tx") - frames < 64, "{info}");
        } else {
            assert_eq!(counter(&a.ctl, "cut_made"), 0, "{info}");
            assert_eq!(counter(&b.ctl, "cut_taken"), 0, "{info}");
            assert!(
                printed(0).is_some(),
                "{}",
                switch_ctl(&sw, "shortcut/print")
            );
            assert!(counter(&a.ctl, "shortcut_tx") - frames >= 128, "{info}");
        }
    }
}

/// A client that makes short connections one after another, faster than its node looks at
/// the records of closed cut-through connections, must not run out of local ports: a record
/// keeps its connection's port until the daemon sees the application's end closed (0.5 s
/// after the connect at the earliest), and with 10,000 connections a second that held most
/// of the 16,384 ephemeral ports (wrk saw a burst of failed connects, EADDRINUSE, every
/// few runs). Here the client node has 32 ports (`--port-range`, Linux's
/// ip_local_port_range) for 400 connections, all cut through; each is checked end to end.
#[test]
fn short_cut_through_connections_in_a_row_never_run_out_of_local_ports() {
    if !have("python3") {
        return skip("python3 missing");
    }
    let tmp = TempDir::new("shortcut-ports");
    let sw = tmp.join("sw");
    let _switch = ioth_switch(&sw, &[]);
    let srv = node(&sw, "fd00::a1/64", &tmp.join("srv.ctl"));
    let cli_ctl = tmp.join("cli.ctl");
    // Bad ranges are refused with a clear error.
    for bad in ["40000", "0-10", "50000-40000", "1-70000", "a-b"] {
        let out = run(Command::new(bin("ioth-stackd"))
            .args(["--ip", "fd00::a2/64", "--port-range", bad, "--ctl"])
            .arg(&cli_ctl)
            .env_remove("LD_PRELOAD"));
        assert!(!out.status.success(), "--port-range {bad} accepted");
        assert!(
            text(&out).contains("IOTH_PORT_RANGE"),
            "--port-range {bad}: {}",
            text(&out)
        );
    }
    run_ok(
        Command::new(bin("ioth-stackd"))
            .args([
                "--ip",
                "fd00::a2/64",
                "--port-range",
                "40000-40031",
                "--switch",
            ])
            .arg(&sw)
            .arg("--ctl")
            .arg(&cli_ctl)
            .args(["--persist", "--daemon"])
            .env_remove("LD_PRELOAD"),
    );
    let needle = cli_ctl.to_string_lossy().to_string();
    let cli_pid = wait_for(Duration::from_secs(5), "client ioth-stackd", || {
        stack_daemons(&needle).first().copied()
    });
    let _cli = Daemon {
        pid: cli_pid,
        name: "ioth-stackd".into(),
    };
    // The server answers each connection with its own number and closes it.
    // Stopped by pid if the test fails before it ends.
    let (mut server, _server_guard, mut server_out) = ready_server(python_on(
        &tmp,
        &srv.ctl,
        "import socket,sys\n\
         l=socket.socket(socket.AF_INET6); l.bind(('fd00::a1',7400)); l.listen(64)\n\
         l.settimeout(30); print('ready', flush=True)\n\
         for i in range(400):\n    c,_=l.accept(); c.sendall(b'%d\\n' % i); c.close()\n\
         print('served', i + 1)\n",
        &[],
    ));
    let client = python_on(
        &tmp,
        &cli_ctl,
        "import socket\n\
         ports=set()\n\
         for i in range(400):\n    \
           s=socket.create_connection(('fd00::a1',7400)); ports.add(s.getsockname()[1])\n    \
           b=b''\n    \
           while True:\n        d=s.recv(64)\n        if not d: break\n        b+=d\n    \
           assert b==b'%d\\n' % i,(i,b)\n    s.close()\n\
         assert min(ports)>=40000 and max(ports)<=40031, sorted(ports)\n\
         print('done', len(ports))\n",
        &[],
    );
    let out = run_for(60, client);
    assert!(
        text(&out).contains("done 32"),
        "client: {}\n{}",
        text(&out),
        node_info(&cli_ctl)
    );
    let mut served = String::new();
    std::io::Read::read_to_string(&mut server_out, &mut served).unwrap();
    assert_eq!(served.trim(), "served 400");
    assert!(server.wait().unwrap().success());
    assert!(
        counter(&cli_ctl, "cut_made") >= 400,
        "{}",
        node_info(&cli_ctl)
    );
}

/// Connects with no round trip (the connect table): a node's applications connect straight
/// to the kernel listener of a node across a cut-through shortcut themselves, blocking or
/// not (`cut_made_by_client`); where the switch says no cut-through, a non-blocking connect
/// goes through TCP without waiting for the daemon either (`connect_async_by_client`).
/// Either way every connection carries its bytes intact (sha256), and both ends see the
/// addresses the kernel would give: the server's `accept` names the client's address and
/// port, as the client's `getsockname` does.
#[test]
fn applications_connect_by_themselves_where_the_table_says_how() {
    if !have("python3") {
        return skip("python3 missing");
    }
    const N: usize = 40;
    for cut in [true, false] {
        let tmp = TempDir::new("shortcut-table");
        let sw = tmp.join("sw");
        let args: &[&str] = if cut { &[] } else { &["--no-cut-through"] };
        let _switch = ioth_switch(&sw, args);
        let srv = node(&sw, "fd00::b1/64,10.0.11.1/24", &tmp.join("srv.ctl"));
        let cli = node(&sw, "fd00::b2/64,10.0.11.2/24", &tmp.join("cli.ctl"));
        let (mut server, _server_guard, mut server_out) =
            hashing_server(&tmp, &srv.ctl, 7500, N, 100_000);
        // Half of the connections blocking, half not; over IPv6 and IPv4 in turn.
        let client = python_on(
            &tmp,
            &cli.ctl,
            &format!(
                "import socket,select,hashlib,os\n\
                 for i in range({N}):\n    \
                   v6 = i % 2 == 0\n    \
                   fam, dst = (socket.AF_INET6, 'fd00::b1') if v6 else (socket.AF_INET, '10.0.11.1')\n    \
                   s = socket.socket(fam, socket.SOCK_STREAM)\n    \
                   if i % 4 < 2:\n        s.connect((dst, 7500))\n    \
                   else:\n        \
                     s.setblocking(False); e = s.connect_ex((dst, 7500))\n        \
                     assert e in (0, 115), e\n        \
                     select.select([], [s], [], 10)\n        \
                     assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0\n        \
                     s.setblocking(True)\n    \
                   me = s.getsockname(); peer = s.getpeername()\n    \
                   assert peer[:2] == (dst, 7500), peer\n    \
                   assert me[0] == ('fd00::b2' if v6 else '10.0.11.2'), me\n    \
                   data = os.urandom(100000); s.sendall(data)\n    \
                   b = b''\n    \
                   while not b.endswith(b'\\n'):\n        d = s.recv(256)\n        assert d, b\n        b += d\n    \
                   host, port, digest = b.decode().split()\n    \
                   want = me[0] if v6 else '::ffff:' + me[0]\n    \
                   assert (host, int(port)) == (want, me[1]), (b, me)\n    \
                   assert digest == hashlib.sha256(data).hexdigest(), i\n    \
                   s.close()\n\
                 print('done', i + 1)\n"
            ),
            &[],
        );
        let out = run_for(60, client);
        let info = format!("{}\n{}", node_info(&cli.ctl), node_info(&srv.ctl));
        assert!(
            text(&out).contains(&format!("done {N}")),
            "client: {}\n{info}",
            text(&out)
        );
        let mut served = String::new();
        std::io::Read::read_to_string(&mut server_out, &mut served).unwrap();
        assert_eq!(served.trim(), format!("served {N}"));
        assert!(server.wait().unwrap().success());
        if cut {
            // (The first connects of each family may ask the daemon: the peer's list of
            // listeners comes with the shortcut.)
            assert_eq!(counter(&cli.ctl, "cut_made"), N as u64, "{info}");
            assert!(
                counter(&cli.ctl, "cut_made_by_client") >= N as u64 - 4,
                "{info}"
            );
            assert_eq!(counter(&cli.ctl, "connect_async_by_client"), 0, "{info}");
        } else {
            assert_eq!(counter(&cli.ctl, "cut_made"), 0, "{info}");
            assert!(
                counter(&cli.ctl, "connect_async_by_client") >= N as u64 / 2 - 4,
                "{info}"
            );
        }
    }
}

/// A server that accepts a cut-through connection and `exec`s a program that takes it over
/// (as inetd does): the record of the accepted end, which the accepting process held back
/// (it asked its daemon nothing), is made from the connecting node's, and the new program
/// sees the addresses the kernel would give.
#[test]
fn a_connection_handed_over_by_exec_still_knows_its_addresses() {
    if !have("python3") {
        return skip("python3 missing");
    }
    let tmp = TempDir::new("shortcut-exec");
    let sw = tmp.join("sw");
    let _switch = ioth_switch(&sw, &[]);
    let srv = node(&sw, "fd00::c1/64", &tmp.join("srv.ctl"));
    let cli = node(&sw, "fd00::c2/64", &tmp.join("cli.ctl"));
    let handler = tmp.join("handler.py");
    std::fs::write(
        &handler,
        "import socket,sys\n\
         c=socket.socket(fileno=int(sys.argv[1]))\n\
         p=c.getpeername(); me=c.getsockname()\n\
         c.sendall(('%s %d %s %d\\n' % (p[0], p[1], me[0], me[1])).encode()); c.close()\n",
    )
    .unwrap();
    // Stopped by pid if the test fails before it ends.
    let (mut server, _server_guard, _server_out) = ready_server(python_on(
        &tmp,
        &srv.ctl,
        "import socket,sys,os\n\
         l=socket.socket(socket.AF_INET6); l.bind(('::',7600)); l.listen(8)\n\
         l.settimeout(30); print('ready', flush=True)\n\
         for i in range(3):\n    \
           c,a=l.accept()\n    \
           if i < 2: c.close(); continue\n    \
           c.set_inheritable(True)\n    \
           os.execv(sys.executable, [sys.executable, sys.argv[1], str(c.fileno())])\n",
        &[&handler],
    ));
    // Two connections first, so that the third is made by the client itself (the table).
    let client = python_on(
        &tmp,
        &cli.ctl,
        "import socket\n\
         for i in range(3):\n    \
           s=socket.create_connection(('fd00::c1',7600)); me=s.getsockname()\n    \
           b=b''\n    \
           while True:\n        d=s.recv(256)\n        if not d: break\n        b+=d\n    \
           s.close()\n\
         print(b.decode().strip(), me[0], me[1])\n",
        &[],
    );
    let out = run_for(60, client);
    let info = format!("{}\n{}", node_info(&cli.ctl), node_info(&srv.ctl));
    let words: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(words.len(), 6, "client: {}\n{info}", text(&out));
    // The handler's peer is the client's own address and port; its own is the server's.
    assert_eq!(words[0], words[4], "{}", text(&out));
    assert_eq!(words[1], words[5], "{}", text(&out));
    assert_eq!((words[2].as_str(), words[3].as_str()), ("fd00::c1", "7600"));
    assert!(server.wait().unwrap().success());
    assert_eq!(counter(&cli.ctl, "cut_made"), 3, "{info}");
}

/// A client that asks its daemon nothing between its connects (`Connection: close` style):
/// its sockets' registrations are held in the process (`held.rs`), the closed ones are told
/// in batches (`Closed`), and yet every socket still answers as the kernel's would: one kept
/// open all along (its port never given to another), one whose fd was duplicated before the
/// original was closed, one asked about by a child after a `fork`, two passed to another
/// process with `SCM_RIGHTS` (by `sendmsg`, by `sendmmsg`) and closed here before that
/// process asks. Each content is checked
/// by sha256; each address against what the server saw.
#[test]
fn a_client_that_asks_nothing_wakes_no_daemon_and_its_sockets_still_answer() {
    if !have("python3") {
        return skip("python3 missing");
    }
    const N: usize = 40;
    let total = N + 5;
    let tmp = TempDir::new("shortcut-held");
    let sw = tmp.join("sw");
    let _switch = ioth_switch(&sw, &[]);
    let srv = node(&sw, "fd00::d1/64", &tmp.join("srv.ctl"));
    let cli = node(&sw, "fd00::d2/64", &tmp.join("cli.ctl"));
    let (mut server, _server_guard, _server_out) =
        hashing_server(&tmp, &srv.ctl, 7700, total, 10_000);
    let client = python_on(
        &tmp,
        &cli.ctl,
        "import socket,hashlib,os\n\
         def conn():\n    \
           s = socket.create_connection(('fd00::d1', 7700))\n    \
           data = os.urandom(10000); s.sendall(data); b = b''\n    \
           while True:\n        d = s.recv(256)\n        if not d: break\n        b += d\n    \
           host, port, digest = b.decode().split()\n    \
           assert host == 'fd00::d2' and digest == hashlib.sha256(data).hexdigest(), b\n    \
           return s, int(port)\n\
         def check(s, port):\n    \
           me = s.getsockname(); peer = s.getpeername()\n    \
           assert me[:2] == ('fd00::d2', port), (me, port)\n    \
           assert peer[:2] == ('fd00::d1', 7700), peer\n\
         long, long_port = conn()\n\
         ports = set()\n\
         for i in range(40):\n    \
           s, port = conn(); ports.add(port); s.close()\n\
         assert long_port not in ports, (long_port, ports)\n\
         s, port = conn(); fd2 = os.dup(s.fileno()); s.close()\n\
         d = socket.socket(fileno=fd2); check(d, port); d.close()\n\
         s, port = conn(); r, w = os.pipe(); pid = os.fork()\n\
         if pid == 0:\n    \
           os.close(r); me = s.getsockname(); os.write(w, ('%s %d' % me[:2]).encode()); os._exit(0)\n\
         os.close(w); got = os.read(r, 100).decode(); os.waitpid(pid, 0)\n\
         assert got == 'fd00::d2 %d' % port, (got, port)\n\
         check(s, port); s.close()\n\
         import ctypes, struct\n\
         class Iov(ctypes.Structure): _fields_ = [('b', ctypes.c_void_p), ('n', ctypes.c_size_t)]\n\
         class Msg(ctypes.Structure): _fields_ = [('name', ctypes.c_void_p), ('namelen', ctypes.c_uint32),\
           ('iov', ctypes.POINTER(Iov)), ('iovlen', ctypes.c_size_t), ('ctl', ctypes.c_void_p),\
           ('ctllen', ctypes.c_size_t), ('flags', ctypes.c_int), ('pad', ctypes.c_int),\
           ('len', ctypes.c_uint), ('pad2', ctypes.c_uint)]\n\
         def sendmsg(a, fd):\n    \
           socket.send_fds(a, [b'x'], [fd])\n\
         def sendmmsg(a, fd):\n    \
           one = ctypes.create_string_buffer(b'x')\n    \
           cm = ctypes.create_string_buffer(struct.pack('=QiiI4x', 20, socket.SOL_SOCKET, socket.SCM_RIGHTS, fd), 24)\n    \
           m = Msg(None, 0, ctypes.pointer(Iov(ctypes.cast(one, ctypes.c_void_p), 1)), 1, ctypes.cast(cm, ctypes.c_void_p), 24)\n    \
           assert ctypes.CDLL(None).sendmmsg(a.fileno(), ctypes.byref(m), 1, 0) == 1\n\
         for send in (sendmsg, sendmmsg):\n    \
           a, b = socket.socketpair(); r, w = os.pipe(); pid = os.fork()\n    \
           if pid == 0:\n        \
             a.close(); os.close(r); _, fds, _, _ = socket.recv_fds(b, 1, 1)\n        \
             me = socket.socket(fileno=fds[0]).getsockname()\n        \
             os.write(w, ('%s %d' % me[:2]).encode()); os._exit(0)\n    \
           b.close(); os.close(w)\n    \
           s, port = conn(); send(a, s.fileno()); s.close()\n    \
           got = os.read(r, 100).decode(); os.waitpid(pid, 0)\n    \
           assert got == 'fd00::d2 %d' % port, (send.__name__, got, port)\n\
         check(long, long_port); long.close()\n\
         print('done')\n",
        &[],
    );
    let out = run_for(60, client);
    let info = || format!("{}\n{}", node_info(&cli.ctl), node_info(&srv.ctl));
    assert!(
        String::from_utf8_lossy(&out.stdout).trim() == "done",
        "client: {}\n{}",
        text(&out),
        info()
    );
    assert!(server.wait().unwrap().success());
    assert_eq!(counter(&cli.ctl, "cut_made"), total as u64, "{}", info());
    // (The first connect may ask the daemon: the peer's list of listeners comes with the
    // shortcut.) The 40 closed before the process asked anything were never registered.
    assert!(
        counter(&cli.ctl, "cut_made_by_client") >= total as u64 - 2,
        "{}",
        info()
    );
    assert!(
        counter(&cli.ctl, "cut_told_closed") >= N as u64 - 2,
        "{}",
        info()
    );
    // The ports leased to the client are free again once it is gone (its control
    // connections closed).
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&cli.ctl, "cut_leased") != 0 {
        assert!(Instant::now() < deadline, "{}", info());
        std::thread::sleep(Duration::from_millis(20));
    }
}
