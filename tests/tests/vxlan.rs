//! The LAN across hosts over VXLAN (`ioth-switch --uplink vxlan://…`). Network namespaces,
//! joined by a veth pair, stand in for the hosts; the switches run inside them (their UDP
//! sockets are the hosts' own), the nodes outside (they reach their switch by its directory,
//! which no namespace hides).
//! * A Linux kernel vxlan device in one namespace and an `ioth-switch` uplink in the other:
//!   kernel `ping` and `curl` reach an nginx node (IPv4 and IPv6, sha256), and a curl node
//!   reaches a kernel nginx in the other namespace. TCP works with no MTU set anywhere: the
//!   switch cuts the nodes' large segments to the wire's size and joins the ones that
//!   arrive (counted).
//! * Two `ioth-switch`es joined by `vxlan://`, with unicast peers and with a multicast group:
//!   nodes on each exchange ping and a TCP stream (sha256).
//!
//! Needs root (namespaces); skipped otherwise.

use ioth_e2e::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A kernel vxlan device `vx0` in `ns` on port 4789 (`how`: its id and peers, as `ip link add
/// … type vxlan` takes them), with the LAN addresses `addrs`, up.
fn kernel_vxlan(ns: &Netns, how: &[&str], addrs: &[&str]) {
    let mut args = vec!["link", "add", "vx0", "type", "vxlan", "dstport", "4789"];
    args.extend_from_slice(how);
    ns.ip(&args);
    for a in addrs {
        let mut add = vec!["addr", "add", a, "dev", "vx0"];
        if a.contains(':') {
            add.push("nodad");
        }
        ns.ip(&add);
    }
    ns.ip(&["link", "set", "vx0", "up"]);
}

/// The datagram [`big_datagram`] sends: 8000 bytes.
const DATAGRAM: &str = "bytes(range(256)) * 31 + bytes(64)";

fn datagram_sha() -> String {
    let mut d: Vec<u8> = (0..=255u8).cycle().take(256 * 31).collect();
    d.extend_from_slice(&[0; 64]);
    sha256_bytes(&d)
}

/// One 8000-byte UDP datagram from the program `sender` runs (python3) to `to_ip` port 9999,
/// where the one `receiver` runs listens; the sha256 of what arrived. The sender repeats
/// (the first may go while the neighbour is being resolved) until the receiver has one.
fn big_datagram(mut receiver: Command, mut sender: Command, to_ip: &str) -> String {
    use std::io::{BufRead, BufReader};
    let fam = if to_ip.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    receiver
        .arg("-c")
        .arg(format!(
            "import socket, hashlib\n\
             s = socket.socket(socket.{fam}, socket.SOCK_DGRAM)\n\
             s.bind(('{to_ip}', 9999)); s.settimeout(30)\n\
             print('ready', flush=True)\n\
             d, _ = s.recvfrom(65535)\n\
             print(hashlib.sha256(d).hexdigest(), flush=True)\n"
        ))
        .stdout(std::process::Stdio::piped());
    let mut r = receiver.spawn().unwrap();
    let mut lines = BufReader::new(r.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    sender.arg("-c").arg(format!(
        "import socket, time\n\
         s = socket.socket(socket.{fam}, socket.SOCK_DGRAM)\n\
         for _ in range(50):\n    s.sendto({DATAGRAM}, ('{to_ip}', 9999)); time.sleep(0.2)\n"
    ));
    let mut snd = sender.stdout(std::process::Stdio::null()).spawn().unwrap();
    let got = lines.next().map(|l| l.unwrap()).unwrap_or_default();
    let _ = snd.kill();
    let _ = snd.wait();
    let _ = r.wait();
    got
}

/// The kernel's `ping ARGS ADDR` in `ns` (a try every 0.2 s), with no loss.
fn kernel_ping(ns: &Netns, args: &[&str], addr: &str) {
    let o = run_ok(ns.exec("ping").args(["-i", "0.2"]).args(args).arg(addr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(" 0% packet loss"),
        "ping {args:?} {addr}: {}",
        text(&o)
    );
}

/// `curl URL` (run by `c`) into `out`; its sha256.
fn curl_sha(mut c: Command, url: &str, out: &Path) -> String {
    c.args(["-sSf", "-m", "120", "-o"]).arg(out).arg(url);
    let o = run(&mut c);
    assert!(o.status.success(), "curl {url}: {}", text(&o));
    sha256_file(out)
}

/// The value after `key` in a `port/print` line of the switch.
fn counter(print: &str, key: &str) -> u64 {
    let mut w = print.split_whitespace();
    while let Some(x) = w.next() {
        if x == key {
            return w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    panic!("{key} not in {print}")
}

/// `iothctl info` of the node at `ctl`.
fn iothctl_info(ctl: &Path) -> String {
    let mut c = Command::new(bin("iothctl"));
    c.arg("--ctl").arg(ctl).arg("info");
    let o = run_for(10, c);
    assert!(o.status.success(), "iothctl info: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `iothctl info` of the one node whose control socket is in `rundir`.
fn node_info(rundir: &Path) -> String {
    let ctl = std::fs::read_dir(rundir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "ctl"))
        .expect("a node's control socket");
    iothctl_info(&ctl)
}

/// The number after `key=` in `iothctl info`.
fn info_value(info: &str, key: &str) -> u64 {
    info.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("{key} not in {info}"))
}

#[test]
fn kernel_vxlan_and_an_uplink_carry_ping_and_http_both_ways() {
    let (Some(a), Some(b)) = (Netns::new("vxa"), Netns::new("vxb")) else {
        return skip("not root: cannot make network namespaces");
    };
    if nginx_bin().is_none() || !have("curl") {
        return skip("nginx or curl missing");
    }
    let tmp = TempDir::new("vxlan-kernel");
    veth(&a, "vxa0", "10.99.0.1/24", &b, "vxb0", "10.99.0.2/24");
    // Host B: a kernel vxlan device with the addresses of a LAN host.
    kernel_vxlan(
        &b,
        &[
            "id",
            "42",
            "remote",
            "10.99.0.1",
            "local",
            "10.99.0.2",
            "dev",
            "vxb0",
        ],
        &["10.1.0.2/24", "fd01::2/64"],
    );
    // Host A: ioth's LAN with an uplink to B.
    let sw = tmp.join("sw");
    let _switch = ioth_switch_in(&a, &sw, &["--uplink", "vxlan://10.99.0.2/vni=42"]);
    let www = tmp.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let len = if quick() { 8 << 20 } else { 100 << 20 };
    random_file(&www.join("f"), len);
    let want = sha256_file(&www.join("f"));
    let rundir = tmp.join("run");

    // An nginx node on A, reached by the kernel on B. The nodes run in A's namespace, with
    // the switch, as on a real host: their daemons then send the frames for B's MAC
    // straight to B's endpoint (uplink shortcuts), and the kernel's vxlan takes them.
    let conf = nginx_conf(&tmp.join("ngx-node"), &www, &["80", "[::]:80"]);
    let rundir_nginx = tmp.join("run-nginx");
    run_ok(
        as_node_in(
            &a,
            nginx_bin().unwrap(),
            &sw,
            &rundir_nginx,
            "fd01::1,10.1.0.1",
        )
        .arg("-c")
        .arg(&conf),
    );
    let _nginx_node = Daemon::from_pidfile("nginx node", &tmp.join("ngx-node/nginx.pid"));
    b.wait_ping("10.1.0.1");
    for addr in ["10.1.0.1", "fd01::1"] {
        kernel_ping(&b, &["-c", "3"], addr);
    }
    for url in ["http://10.1.0.1/f", "http://[fd01::1]/f"] {
        let got = curl_sha(b.exec("curl"), url, &tmp.join("got"));
        assert_eq!(got, want, "{url} through the tunnel");
    }
    let info = node_info(&rundir_nginx);
    assert!(
        info_value(&info, "uplink_shortcut_bytes") >= len as u64,
        "most of the two downloads went straight to the kernel's endpoint: {info}"
    );

    // A kernel nginx on B, reached by a curl node on A.
    let conf = nginx_conf(
        &tmp.join("ngx-kernel"),
        &www,
        &["10.1.0.2:8080", "[fd01::2]:8080"],
    );
    run_ok(b.exec(nginx_bin().unwrap()).arg("-c").arg(&conf));
    let _nginx_kernel = Daemon::from_pidfile("kernel nginx", &tmp.join("ngx-kernel/nginx.pid"));
    for url in ["http://10.1.0.2:8080/f", "http://[fd01::2]:8080/f"] {
        let c = as_node_in(&a, "curl", &sw, &rundir, "fd01::5,10.1.0.5");
        assert_eq!(
            curl_sha(c, url, &tmp.join("got")),
            want,
            "{url} from a node"
        );
    }

    // Datagrams and echoes larger than the wire: the kernel fragments its own, the switch
    // fragments the nodes' (their MTU is 64 KiB), and each side reassembles.
    kernel_ping(&b, &["-c", "2", "-s", "4000"], "10.1.0.1");
    for (node_ip, kernel_ip) in [("10.1.0.7", "10.1.0.2"), ("fd01::7", "fd01::2")] {
        let got = big_datagram(
            b.exec("python3"),
            as_node("python3", &sw, &rundir, node_ip),
            kernel_ip,
        );
        assert_eq!(
            got,
            datagram_sha(),
            "a node's 8000-byte datagram to {kernel_ip}"
        );
    }
    for node_ip in ["10.1.0.8", "fd01::8"] {
        let got = big_datagram(
            as_node("python3", &sw, &rundir, node_ip),
            b.exec("python3"),
            node_ip,
        );
        assert_eq!(
            got,
            datagram_sha(),
            "the kernel's 8000-byte datagram to {node_ip}"
        );
    }
    kernel_ping(&b, &["-c", "2", "-s", "4000"], "fd01::1");

    let print = switch_ctl(&sw, "port/print 1");
    assert!(print.contains("kind=vxlan"), "{print}");
    assert!(counter(&print, "fragmented") >= 2, "{print}");
    assert!(
        print.contains("UPLINK: up remote 10.99.0.2 port 4789 vni 42"),
        "{print}"
    );
    assert!(
        print.contains("wire_frame 1464"),
        "1500 - 36 on IPv4: {print}"
    );
    assert_eq!(counter(&print, "bad"), 0, "{print}");
    assert!(counter(&print, "learned") >= 1, "{print}");
    assert_eq!(counter(&print, "toobig"), 0, "{print}");
    for p in stack_daemons(&tmp.path().display().to_string()) {
        // SAFETY: stopping a stack daemon this test's nodes started (its run dir is ours).
        unsafe { libc::kill(p, libc::SIGTERM) };
    }
}

#[test]
fn two_ioth_switches_joined_by_vxlan_unicast_and_multicast() {
    for (mode, url_a, url_b) in [
        (
            "unicast",
            "vxlan://10.98.0.2/vni=7",
            "vxlan://10.98.0.1/vni=7",
        ),
        (
            "multicast",
            "vxlan://239.1.2.7/vni=8/if=vta0",
            "vxlan://239.1.2.7/vni=8/if=vtb0",
        ),
    ] {
        let (Some(a), Some(b)) = (Netns::new("vta"), Netns::new("vtb")) else {
            return skip("not root: cannot make network namespaces");
        };
        let tmp = TempDir::new("vxlan-two");
        veth(&a, "vta0", "10.98.0.1/24", &b, "vtb0", "10.98.0.2/24");
        let (swa, swb) = (tmp.join("swa"), tmp.join("swb"));
        let _sa = ioth_switch_in(&a, &swa, &["--uplink", url_a]);
        let _sb = ioth_switch_in(&b, &swb, &["--uplink", url_b]);
        let na = node_in(&a, &swa, "fd07::1/64,10.7.0.1/24", &tmp.join("a.ctl"));
        let nb = node_in(&b, &swb, "fd07::2/64,10.7.0.2/24", &tmp.join("b.ctl"));
        for (from, to) in [(&na.ctl, "fd07::2"), (&nb.ctl, "10.7.0.1")] {
            let mut c = Command::new(bin("iothctl"));
            c.arg("--ctl").arg(from).args(["ping", "-c", "3", to]);
            let o = run_for(30, c);
            assert!(o.status.success(), "{mode}: ping {to}: {}", text(&o));
        }
        let mut data = vec![0u8; if quick() { 2 << 20 } else { 16 << 20 }];
        ioth_common::sys::getrandom(&mut data).unwrap();
        checked_stream(&tmp, (&nb.ctl, &na.ctl), ("fd07::1", 5001), &data, || {});
        checked_stream(&tmp, (&na.ctl, &nb.ctl), ("10.7.0.2", 5002), &data, || {});
        for (sw, n) in [(&swa, &na), (&swb, &nb)] {
            let print = switch_ctl(sw, "port/print 1");
            assert!(print.contains("UPLINK: up"), "{mode}: {print}");
            assert_eq!(counter(&print, "bad"), 0, "{mode}: {print}");
            assert_eq!(counter(&print, "toobig"), 0, "{mode}: {print}");
            // The nodes' 64 KiB segments came in joined; they went out cut to the wire, by
            // the switch, or on a unicast tunnel mostly by the node's daemon itself, which
            // sends them straight to the other host's endpoint (an uplink shortcut; none on
            // an uplink bound to an interface).
            assert!(counter(&print, "joined") >= 1, "{mode}: {print}");
            let info = iothctl_info(&n.ctl);
            let direct = info_value(&info, "uplink_shortcut_bytes");
            // The uplink's own counters include what the daemons sent for it (they report
            // it at most once a second).
            wait_for(Duration::from_secs(10), "the uplink's counters", || {
                let p = switch_ctl(sw, "port/print 1");
                let out = p.lines().find(|l| l.trim_start().starts_with("OUT:"))?;
                (counter(out, "bytes") >= data.len() as u64).then_some(())
            });
            if mode == "unicast" {
                assert!(direct >= data.len() as u64 / 2, "{mode}: {info}");
            } else {
                assert!(counter(&print, "segmented") >= 1, "{mode}: {print}");
                assert_eq!(direct, 0, "{mode}: {info}");
            }
        }
    }
}

/// The migration client: a node that fetches `/who` from `10.9.9.1` in a loop, a fresh
/// connection each time, and prints `SECONDS ANSWER` (or `SECONDS -` for a failed try) until
/// the file `argv[1]` exists.
const MIGRATION_CLIENT: &str = r#"
import os, socket, sys, time
stop, t0 = sys.argv[1], time.monotonic()
while not os.path.exists(stop) and time.monotonic() - t0 < 60:
    t = time.monotonic() - t0
    try:
        s = socket.create_connection(("10.9.9.1", 80), timeout=0.2)
        s.settimeout(0.5)
        s.sendall(b"GET /who HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
        s.close()
        body = data.partition(b"\r\n\r\n")[2].decode().strip() or "-"
    except OSError:
        body = "-"
    print(f"{t:.3f} {body}", flush=True)
    time.sleep(0.02)
"#;

#[test]
fn a_node_stopped_on_one_host_and_started_on_another_is_found_there_at_once() {
    let (Some(a), Some(b)) = (Netns::new("mga"), Netns::new("mgb")) else {
        return skip("not root: cannot make network namespaces");
    };
    if nginx_bin().is_none() || !have("python3") {
        return skip("nginx or python3 missing");
    }
    let tmp = TempDir::new("vxlan-move");
    veth(&a, "mga0", "10.96.0.1/24", &b, "mgb0", "10.96.0.2/24");
    let (swa, swb) = (tmp.join("swa"), tmp.join("swb"));
    let _sa = ioth_switch_in(&a, &swa, &["--uplink", "vxlan://10.96.0.2/vni=9"]);
    let _sb = ioth_switch_in(&b, &swb, &["--uplink", "vxlan://10.96.0.1/vni=9"]);
    // The same node (address, so MAC) serves "A" on host A, later "B" on host B. IPv4 only:
    // an IPv6 node's multicast listener reports would tell the switches where it is anyway.
    let serve = |host: &str, ns: &Netns, sw: &Path| -> (Daemon, std::path::PathBuf) {
        let www = tmp.join(&format!("www-{host}"));
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("who"), host).unwrap();
        let conf = nginx_conf(&tmp.join(&format!("ngx-{host}")), &www, &["80"]);
        let rundir = tmp.join(&format!("run-{host}"));
        run_ok(
            as_node_in(ns, nginx_bin().unwrap(), sw, &rundir, "10.9.9.1")
                .arg("-c")
                .arg(&conf),
        );
        let pidfile = tmp.join(&format!("ngx-{host}/nginx.pid"));
        (Daemon::from_pidfile("nginx node", &pidfile), rundir)
    };
    let (mut nginx_a, rundir_a) = serve("A", &a, &swa);
    let script = tmp.join("client.py");
    std::fs::write(&script, MIGRATION_CLIENT).unwrap();
    let stop = tmp.join("stop");
    let out = tmp.join("client.out");
    // The client on B sends to A's endpoint itself (an uplink shortcut) until the node
    // shows up on its own switch.
    let mut client = as_node_in(&b, "python3", &swb, &tmp.join("run-client"), "10.9.9.2")
        .arg(&script)
        .arg(&stop)
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let answers = || std::fs::read_to_string(&out).unwrap_or_default();
    wait_for(Duration::from_secs(20), "the client served by A", || {
        answers().lines().any(|l| l.ends_with(" A")).then_some(())
    });
    // Stop the node on host A: nginx, then its stack daemon (SIGTERM: stopped, not
    // restarted), whose switch port then closes.
    nginx_a.stop();
    for p in stack_daemons(&rundir_a.display().to_string()) {
        // SAFETY: stopping the stack daemon of the node this test started on host A.
        unsafe { libc::kill(p, libc::SIGTERM) };
    }
    wait_for(Duration::from_secs(10), "node A gone", || {
        stack_daemons(&rundir_a.display().to_string())
            .is_empty()
            .then_some(())
    });
    let served_before = answers().lines().count();
    let (_nginx_b, rundir_b) = serve("B", &b, &swb);
    let started = answers().lines().count();
    wait_for(Duration::from_secs(20), "the client served by B", || {
        answers().lines().any(|l| l.ends_with(" B")).then_some(())
    });
    // A little more traffic after the move, then stop the client.
    let after = answers().lines().count();
    wait_for(Duration::from_secs(10), "more answers", || {
        (answers().lines().count() > after + 10).then_some(())
    });
    std::fs::write(&stop, "").unwrap();
    assert!(client.wait().unwrap().success());
    let text = answers();
    let lines: Vec<(f64, &str)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(t, b)| (t.parse().unwrap(), b))
        .collect();
    // The time the node was up on B: the first try the client made after nginx B's start
    // returned; the first answer from B within a second of it.
    let t_start = lines[started.min(lines.len() - 1)].0;
    let first_b = lines.iter().find(|(_, b)| *b == "B").unwrap().0;
    assert!(
        first_b - t_start <= 1.0,
        "the moved node answered {:.3} s after it started on host B (tries: {})",
        first_b - t_start,
        &text[..text.len().min(4000)]
    );
    // Nobody answers in A's name once B has: no stale node.
    let after_b: Vec<&str> = lines
        .iter()
        .filter(|(t, _)| *t >= first_b)
        .map(|(_, b)| *b)
        .collect();
    assert!(
        !after_b.contains(&"A"),
        "a stale answer after the move: {text}"
    );
    assert!(served_before >= 1);
    for r in [&rundir_b, &tmp.join("run-client")] {
        for p in stack_daemons(&r.display().to_string()) {
            // SAFETY: stopping a stack daemon this test's nodes started (its run dir is ours).
            unsafe { libc::kill(p, libc::SIGTERM) };
        }
    }
}

#[test]
fn ioth_switches_and_a_debian_vde_switch_joined_by_vxvde() {
    let (Some(a), Some(b)) = (Netns::new("vva"), Netns::new("vvb")) else {
        return skip("not root: cannot make network namespaces");
    };
    if !have("vde_plug") || !have("vde_switch") {
        return skip("vde_plug (vdeplug) or vde_switch (vde2) missing");
    }
    let tmp = TempDir::new("vxvde");
    veth(&a, "vva0", "10.95.0.1/24", &b, "vvb0", "10.95.0.2/24");
    let (swa, swb, vsw) = (tmp.join("swa"), tmp.join("swb"), tmp.join("vsw"));
    // Two ioth-switches, each with a vxvde:// uplink (vde_plug run by the switch), and
    // Debian's vde_switch cabled to the same vxvde network by Debian's vde_plug.
    let _sa = ioth_switch_in(&a, &swa, &["--uplink", "vxvde://239.1.3.9/if=vva0"]);
    let _sb = ioth_switch_in(&b, &swb, &["--uplink", "vxvde://239.1.3.9/if=vvb0"]);
    let _vs = vde_switch(&vsw);
    // Reaped by `Daemon::stop` (waitpid on its pid).
    #[allow(clippy::zombie_processes)]
    let plug = b
        .exec("vde_plug")
        .arg(format!("vde://{}", vsw.display()))
        .arg("vxvde://239.1.3.9/if=vvb0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _plug = Daemon {
        pid: plug.id() as i32,
        name: "vde_plug".into(),
    };
    for sw in [&swa, &swb] {
        wait_for(Duration::from_secs(10), "the vxvde uplink up", || {
            switch_ctl(sw, "port/print 1")
                .contains("UPLINK: up cable vxvde://")
                .then_some(())
        });
    }
    let na = node(&swa, "fd08::1/64,10.8.0.1/24", &tmp.join("a.ctl"));
    let nb = node(&swb, "fd08::2/64,10.8.0.2/24", &tmp.join("b.ctl"));
    let nc = node(&vsw, "fd08::3/64,10.8.0.3/24", &tmp.join("c.ctl"));
    for (from, to) in [
        (&na.ctl, "fd08::2"),
        (&nb.ctl, "10.8.0.3"),
        (&nc.ctl, "fd08::1"),
    ] {
        let mut c = Command::new(bin("iothctl"));
        c.arg("--ctl").arg(from).args(["ping", "-c", "3", to]);
        let o = run_for(30, c);
        assert!(o.status.success(), "ping {to}: {}", text(&o));
    }
    // Between the two ioth nodes (64 KiB frames each side, cut to 1500-byte packets for the
    // cable by the switch).
    let mut data = vec![0u8; if quick() { 2 << 20 } else { 16 << 20 }];
    ioth_common::sys::getrandom(&mut data).unwrap();
    checked_stream(&tmp, (&nb.ctl, &na.ctl), ("fd08::1", 5001), &data, || {});
    // To and from the node on Debian's vde_switch, which drops past a 10-frame port queue:
    // the nodes' TCP recovers from that loss.
    checked_stream(&tmp, (&na.ctl, &nc.ctl), ("10.8.0.3", 5002), &data, || {});
    checked_stream(&tmp, (&nc.ctl, &nb.ctl), ("fd08::2", 5003), &data, || {});
    let print = switch_ctl(&swa, "port/print 1");
    assert_eq!(counter(&print, "toobig"), 0, "{print}");
}

#[test]
fn a_kernel_vxlan_device_on_a_multicast_group_reaches_a_node() {
    let (Some(a), Some(b)) = (Netns::new("vma"), Netns::new("vmb")) else {
        return skip("not root: cannot make network namespaces");
    };
    if !have("python3") {
        return skip("python3 missing");
    }
    let tmp = TempDir::new("vxlan-group");
    veth(&a, "vma0", "10.94.0.1/24", &b, "vmb0", "10.94.0.2/24");
    kernel_vxlan(
        &b,
        &["id", "43", "group", "239.1.4.3", "dev", "vmb0", "ttl", "1"],
        &["10.3.0.2/24"],
    );
    let sw = tmp.join("sw");
    let _switch = ioth_switch_in(&a, &sw, &["--uplink", "vxlan://239.1.4.3/vni=43/if=vma0"]);
    let n = node(&sw, "10.3.0.1/24", &tmp.join("n.ctl"));
    // The kernel floods its first ARP request to the group; the switch learns where the
    // kernel's MAC is, and its answer goes back unicast.
    b.wait_ping("10.3.0.1");
    b.stream_to_node(&tmp, &n.ctl, ("10.3.0.1", 7002), 4 << 20);
    let print = switch_ctl(&sw, "port/print 1");
    assert!(print.contains("UPLINK: up group 239.1.4.3"), "{print}");
    assert_eq!(counter(&print, "bad"), 0, "{print}");
}
