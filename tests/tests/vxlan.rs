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

fn nginx_bin() -> Option<std::path::PathBuf> {
    which("nginx").or_else(|| {
        ["/usr/sbin/nginx"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
    })
}

/// An nginx configuration in `dir` serving `root`, listening on `listen` (nginx `listen`
/// arguments), with its pid file at `dir/nginx.pid`.
fn nginx_conf(dir: &Path, root: &Path, listen: &[&str]) -> std::path::PathBuf {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let listens: String = listen.iter().map(|l| format!("listen {l}; ")).collect();
    let conf = format!(
        "daemon on; master_process on; worker_processes 1; user root;
pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{ sendfile on; access_log off; client_body_temp_path {d}/tmp/b; proxy_temp_path {d}/tmp/p;
  fastcgi_temp_path {d}/tmp/f; uwsgi_temp_path {d}/tmp/u; scgi_temp_path {d}/tmp/s;
  server {{ {listens} root {}; }} }}
",
        root.display()
    );
    let p = dir.join("nginx.conf");
    std::fs::write(&p, conf).unwrap();
    p
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
    b.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        "4789",
        "remote",
        "10.99.0.1",
        "local",
        "10.99.0.2",
        "dev",
        "vxb0",
    ]);
    b.ip(&["addr", "add", "10.1.0.2/24", "dev", "vx0"]);
    b.ip(&["addr", "add", "fd01::2/64", "dev", "vx0", "nodad"]);
    b.ip(&["link", "set", "vx0", "up"]);
    // Host A: ioth's LAN with an uplink to B.
    let sw = tmp.join("sw");
    let _switch = ioth_switch_in(&a, &sw, &["--uplink", "vxlan://10.99.0.2/vni=42"]);
    let www = tmp.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let len = if quick() { 8 << 20 } else { 100 << 20 };
    random_file(&www.join("f"), len);
    let want = sha256_file(&www.join("f"));
    let rundir = tmp.join("run");

    // An nginx node on A, reached by the kernel on B.
    let conf = nginx_conf(&tmp.join("ngx-node"), &www, &["80", "[::]:80"]);
    run_ok(
        as_node(nginx_bin().unwrap(), &sw, &rundir, "fd01::1,10.1.0.1")
            .arg("-c")
            .arg(&conf),
    );
    let _nginx_node = Daemon::from_pidfile("nginx node", &tmp.join("ngx-node/nginx.pid"));
    wait_for(Duration::from_secs(20), "the node answering ping", || {
        run(b.exec("ping").args(["-c", "1", "-W", "1", "10.1.0.1"]))
            .status
            .success()
            .then_some(())
    });
    for addr in ["10.1.0.1", "fd01::1"] {
        let o = run_ok(b.exec("ping").args(["-c", "3", "-i", "0.2", addr]));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(" 0% packet loss"),
            "ping {addr}: {}",
            text(&o)
        );
    }
    for url in ["http://10.1.0.1/f", "http://[fd01::1]/f"] {
        let got = curl_sha(b.exec("curl"), url, &tmp.join("got"));
        assert_eq!(got, want, "{url} through the tunnel");
    }

    // A kernel nginx on B, reached by a curl node on A.
    let conf = nginx_conf(
        &tmp.join("ngx-kernel"),
        &www,
        &["10.1.0.2:8080", "[fd01::2]:8080"],
    );
    run_ok(b.exec(nginx_bin().unwrap()).arg("-c").arg(&conf));
    let _nginx_kernel = Daemon::from_pidfile("kernel nginx", &tmp.join("ngx-kernel/nginx.pid"));
    for url in ["http://10.1.0.2:8080/f", "http://[fd01::2]:8080/f"] {
        let c = as_node("curl", &sw, &rundir, "fd01::5,10.1.0.5");
        assert_eq!(
            curl_sha(c, url, &tmp.join("got")),
            want,
            "{url} from a node"
        );
    }

    let print = switch_ctl(&sw, "port/print 1");
    assert!(print.contains("kind=vxlan"), "{print}");
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
        let na = node(&swa, "fd07::1/64,10.7.0.1/24", &tmp.join("a.ctl"));
        let nb = node(&swb, "fd07::2/64,10.7.0.2/24", &tmp.join("b.ctl"));
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
        for sw in [&swa, &swb] {
            let print = switch_ctl(sw, "port/print 1");
            assert!(print.contains("UPLINK: up"), "{mode}: {print}");
            assert_eq!(counter(&print, "bad"), 0, "{mode}: {print}");
            assert_eq!(counter(&print, "toobig"), 0, "{mode}: {print}");
            // The nodes' 64 KiB segments went out cut to the wire, and came in joined.
            assert!(counter(&print, "segmented") >= 1, "{mode}: {print}");
            assert!(counter(&print, "joined") >= 1, "{mode}: {print}");
        }
    }
}
