//! The host and the Internet through libslirp, the user-mode NAT of QEMU and rootless
//! containers: `ioth-switch --uplink slirp://…` (Debian's `vde_plug` with
//! `libvdeplug-slirp`, run by the switch). A network namespace stands in for the host, so
//! that its loopback, its DNS server and its ports are the test's own: a dnsmasq on the
//! "host's" loopback is its resolver (`/etc/resolv.conf` inside the namespace), a kernel
//! HTTP server listens on the "host's" loopback, and the switch runs inside it.
//! * a node with `IOTH_IP=dhcp` gets its address from slirp's DHCP (10.0.2.15), resolves a
//!   name through slirp's DNS forwarder (10.0.2.3 -> dnsmasq) and fetches from the host's
//!   loopback through the host alias 10.0.2.2 (sha256);
//! * the other way, `tcpfwd=8080:10.0.2.50:80` forwards the host's port 8080 to an nginx node
//!   (a kernel curl on the host gets its file, sha256);
//! * `--uplink tap://IFACE` bridges the LAN to a kernel tap interface (root): the kernel
//!   pings a node and sends it a TCP stream (sha256).
//!
//! Needs root (namespaces), vde_plug and libvdeplug-slirp; skipped otherwise.

use ioth_e2e::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn spawn(mut c: Command) -> Daemon {
    // Reaped by `Daemon::stop` (waitpid on its pid).
    #[allow(clippy::zombie_processes)]
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{c:?}: {e}"));
    Daemon {
        pid: child.id() as i32,
        name: format!("{:?}", c.get_program()),
    }
}

#[test]
fn a_dhcp_node_reaches_the_host_by_name_and_the_host_reaches_a_node_through_slirp() {
    let Some(host) = Netns::new("slirp") else {
        return skip("not root: cannot make network namespaces");
    };
    let plugin = Path::new("/usr/lib/x86_64-linux-gnu/vdeplug/libvdeplug_slirp.so");
    if !have("vde_plug") || !plugin.exists() {
        return skip("vde_plug or libvdeplug-slirp missing");
    }
    let Some(nginx) = nginx_bin() else {
        return skip("nginx missing");
    };
    if !have("dnsmasq") || !have("curl") || !have("python3") {
        return skip("dnsmasq, curl or python3 missing");
    }
    let tmp = TempDir::new("slirp");
    let www = tmp.join("www");
    std::fs::create_dir_all(&www).unwrap();
    random_file(&www.join("f"), if quick() { 1 << 20 } else { 8 << 20 });
    let want = sha256_file(&www.join("f"));
    // The host: its resolver is a dnsmasq on its loopback, which knows one name.
    host.etc("resolv.conf", "nameserver 127.0.0.1\n");
    let mut dns = host.exec("dnsmasq");
    dns.args([
        "--no-daemon",
        "--no-resolv",
        "--no-hosts",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--address=/hostsvc.test/10.0.2.2",
    ])
    .arg(format!("--pid-file={}", tmp.join("dnsmasq.pid").display()));
    let _dns = spawn(dns);
    let mut web = host.exec("python3");
    web.args(["-m", "http.server", "-b", "127.0.0.1", "8123", "-d"])
        .arg(&www);
    let _web = spawn(web);
    wait_for(Duration::from_secs(20), "the host's web server", || {
        run(host
            .exec("curl")
            .args(["-sf", "-o", "/dev/null", "http://127.0.0.1:8123/f"]))
        .status
        .success()
        .then_some(())
    });
    // The LAN's uplink to the host: slirp, forwarding the host's port 8080 to 10.0.2.50:80.
    let sw = tmp.join("sw");
    let _switch = ioth_switch_in(
        &host,
        &sw,
        &["--uplink", "slirp:///tcpfwd=8080:10.0.2.50:80"],
    );
    wait_for(Duration::from_secs(10), "the slirp uplink up", || {
        switch_ctl(&sw, "port/print 1")
            .contains("UPLINK: up cable slirp://")
            .then_some(())
    });

    // A node with its address from slirp's DHCP reaches the host by name.
    let rundir = tmp.join("run");
    let out = tmp.join("got");
    let o = run(as_node("curl", &sw, &rundir, "dhcp")
        .env("IOTH_NAME", "slirpnode")
        .args(["-sSf", "-m", "60", "-o"])
        .arg(&out)
        .arg("http://hostsvc.test:8123/f"));
    assert!(o.status.success(), "curl through slirp: {}", text(&o));
    assert_eq!(sha256_file(&out), want, "the host's file through slirp");
    let ctl = std::fs::read_dir(&rundir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "ctl"))
        .expect("the DHCP node's control socket");
    let info = node_info(&ctl);
    assert!(
        info.contains("addr=10.0.2.15/24"),
        "slirp's first lease: {info}"
    );

    // The host reaches an nginx node through the forwarded port.
    let d = tmp.join("ngx");
    let conf = nginx_conf(&d, &www, &["80"]);
    run_ok(
        as_node(&nginx, &sw, &rundir, "10.0.2.50/24")
            .env("IOTH_GW", "10.0.2.2")
            .arg("-c")
            .arg(&conf),
    );
    let _nginx = Daemon::from_pidfile("nginx node", &d.join("nginx.pid"));
    let fetched = tmp.join("fwd");
    wait_for(Duration::from_secs(20), "the forwarded port", || {
        run(host
            .exec("curl")
            .args(["-sf", "-m", "20", "-o"])
            .arg(&fetched)
            .arg("http://127.0.0.1:8080/f"))
        .status
        .success()
        .then_some(())
    });
    assert_eq!(sha256_file(&fetched), want, "a node's file through tcpfwd");
    for p in stack_daemons(&rundir.display().to_string()) {
        // SAFETY: stopping a stack daemon this test's nodes started (its run dir is ours).
        unsafe { libc::kill(p, libc::SIGTERM) };
    }
}

#[test]
fn a_root_switch_bridges_the_lan_to_a_kernel_tap_interface() {
    let Some(host) = Netns::new("tap") else {
        return skip("not root: cannot make network namespaces");
    };
    if !have("vde_plug") || !have("ping") || !have("python3") {
        return skip("vde_plug, ping or python3 missing");
    }
    let tmp = TempDir::new("tap");
    // The tap interface exists first (as `ip tuntap` makes it for a user), then the switch
    // in the namespace attaches to it through vde_plug.
    host.ip(&["tuntap", "add", "dev", "iotap0", "mode", "tap"]);
    host.ip(&["addr", "add", "10.4.0.2/24", "dev", "iotap0"]);
    host.ip(&["link", "set", "iotap0", "up"]);
    let sw = tmp.join("sw");
    let _switch = ioth_switch_in(&host, &sw, &["--uplink", "tap://iotap0"]);
    wait_for(Duration::from_secs(10), "the tap uplink up", || {
        switch_ctl(&sw, "port/print 1")
            .contains("UPLINK: up cable tap://")
            .then_some(())
    });
    let n = node(&sw, "10.4.0.1/24", &tmp.join("n.ctl"));
    // The kernel reaches the node through its tap interface, and the node the kernel.
    host.wait_ping("10.4.0.1");
    let mut c = Command::new(bin("iothctl"));
    c.arg("--ctl")
        .arg(&n.ctl)
        .args(["ping", "-c", "3", "10.4.0.2"]);
    let o = run_for(30, c);
    assert!(o.status.success(), "ping the kernel: {}", text(&o));
    // A TCP stream from the kernel to the node, checked by sha256.
    host.stream_to_node(&tmp, &n.ctl, ("10.4.0.1", 7001), 1 << 20);
}
