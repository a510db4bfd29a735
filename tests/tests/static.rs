//! Statically linked programs as IoTh nodes through `ioth-exec` (seccomp user notification):
//! a static `busybox httpd` serving curl (a shim node), a static `busybox wget` downloading
//! from python's http.server (a shim node), and plain programs under `ioth-exec` behaving as
//! without it (exit status, signals, unix sockets; UDP virtual, raw IP refused with `EPERM`); a signal
//! interrupts a blocking accept; socket calls through a foreign ABI (i386, x32) fail with
//! `ENOSYS` (`ioth-abi-probe`, a helper of this crate); a Go HTTP server and client (static,
//! raw system calls, many threads) as nodes when `go` is installed, the client resolving the
//! server's name with Go's own resolver from a dnsmasq node; static busybox `nslookup` and
//! `ping` (IPv6 and IPv4) as nodes.
//!
//! Skipped when `busybox` is not the static build (Debian's `busybox-static`) or when the
//! kernel refuses seccomp user notification here (probed with `ioth-exec --check`).

use ioth_e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Does seccomp user notification work here? An actual probe: a child under the filter makes
/// one notified call, which the supervisor continues.
fn seccomp_works() -> bool {
    let o = run(Command::new(bin("ioth-exec")).arg("--check"));
    if !o.status.success() {
        eprintln!("ioth-exec --check: {}", text(&o));
    }
    o.status.success()
}

/// A statically linked busybox (no program interpreter in its ELF header).
fn static_busybox() -> Option<PathBuf> {
    let p = which("busybox")?;
    let o = Command::new("readelf").arg("-lW").arg(&p).output().ok()?;
    let headers = String::from_utf8_lossy(&o.stdout).to_string();
    (o.status.success() && headers.contains("LOAD") && !headers.contains("INTERP")).then_some(p)
}

/// `prog` run through `ioth-exec` as the node `ip` of this lab's switch.
fn exec_at(lab: &NodeLab, ip: &str, prog: &Path) -> Command {
    let mut c = Command::new(bin("ioth-exec"));
    c.arg("--")
        .arg(prog)
        .env("IOTH_IP", ip)
        .env("IOTH_SWITCH", &lab.sw)
        .env("IOTH_RUNDIR", lab.dir.join("run"))
        .env("IOTH_STACKD", bin("ioth-stackd"))
        .env_remove("LD_PRELOAD")
        .env_remove("IOTH_STACK")
        .env_remove("IOTH_DNS")
        .env_remove("IOTH_NAME");
    c
}

/// `prog` run through `scripts/iothrun` (static programs: `ioth-exec`, by itself).
fn iothrun_at(lab: &NodeLab, ip: &str, prog: &Path) -> Command {
    let mut c = Command::new(repo().join("scripts/iothrun"));
    c.args(["--ip", ip, "--switch"])
        .arg(&lab.sw)
        .arg("--")
        .arg(prog)
        .env("IOTH_LIB", libioth())
        .env("IOTH_RUNDIR", lab.dir.join("run"))
        .env("IOTH_STACKD", bin("ioth-stackd"))
        .env_remove("LD_PRELOAD")
        .env_remove("IOTH_STACK")
        .env_remove("IOTH_DNS")
        .env_remove("IOTH_NAME");
    c
}

fn ready() -> Option<PathBuf> {
    let Some(bb) = static_busybox() else {
        skip("no statically linked busybox (apt-get install busybox-static) or no readelf");
        return None;
    };
    if !seccomp_works() {
        skip("seccomp user notification is not available here");
        return None;
    }
    Some(bb)
}

#[test]
fn static_busybox_httpd_serves_curl_4mib() {
    let Some(bb) = ready() else { return };
    if !have("curl") {
        return skip("curl missing");
    }
    let mut lab = NodeLab::new("static-httpd", None);
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    random_file(&www.join("f.bin"), 4 << 20);
    let want = sha256_file(&www.join("f.bin"));
    let mut httpd = exec_at(&lab, "fd00::20,10.0.0.20", &bb);
    httpd
        .args(["httpd", "-f", "-vv", "-p", "80", "-h"])
        .arg(&www);
    lab.spawn(httpd, "httpd.log");

    for (i, url) in ["http://10.0.0.20/f.bin", "http://[fd00::20]/f.bin"]
        .iter()
        .enumerate()
    {
        let out = lab.dir.join(&format!("got{i}.bin"));
        wait_for(Duration::from_secs(30), &format!("curl {url}"), || {
            let mut c = lab.at("fd00::21,10.0.0.21", "curl");
            c.args(["-gsS", "--max-time", "10", "-o"])
                .arg(&out)
                .arg(url);
            let o = run_for(15, c);
            if !o.status.success() {
                eprintln!("curl {url}: {}\nhttpd: {}", text(&o), lab.log("httpd.log"));
            }
            o.status.success().then_some(())
        });
        assert_eq!(sha256_file(&out), want, "{url}: content differs");
    }
    let log = lab.log("httpd.log");
    assert!(
        log.contains("url:/f.bin") && log.contains("10.0.0.21") && log.contains("fd00::21"),
        "httpd saw the clients' virtual addresses: {log}"
    );
}

#[test]
fn static_busybox_wget_downloads_from_python_node() {
    let Some(bb) = ready() else { return };
    if !have("python3") {
        return skip("python3 missing");
    }
    let mut lab = NodeLab::new("static-wget", None);
    let srv = lab.node("fd00::30,10.0.0.30");
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    random_file(&www.join("f.bin"), 4 << 20);
    let want = sha256_file(&www.join("f.bin"));
    let mut py = lab.on(&srv, "python3");
    py.args(["-m", "http.server", "8000", "--bind", "::", "--directory"])
        .arg(&www);
    lab.spawn(py, "python.log");

    for (i, url) in [
        "http://10.0.0.30:8000/f.bin",
        "http://[fd00::30]:8000/f.bin",
    ]
    .iter()
    .enumerate()
    {
        let out = lab.dir.join(&format!("got{i}.bin"));
        wait_for(
            Duration::from_secs(30),
            &format!("busybox wget {url}"),
            || {
                let _ = std::fs::remove_file(&out);
                // The IPv6 download goes through scripts/iothrun, which must notice that
                // busybox is static and run it under ioth-exec.
                let mut c = if i == 0 {
                    exec_at(&lab, "fd00::31,10.0.0.31", &bb)
                } else {
                    iothrun_at(&lab, "fd00::31,10.0.0.31", &bb)
                };
                c.args(["wget", "-q", "-O"]).arg(&out).arg(url);
                let o = run_for(15, c);
                if !o.status.success() {
                    eprintln!(
                        "wget {url}: {}\npython: {}",
                        text(&o),
                        lab.log("python.log")
                    );
                }
                o.status.success().then_some(())
            },
        );
        assert_eq!(sha256_file(&out), want, "{url}: content differs");
    }
    let log = lab.log("python.log");
    assert!(
        log.contains("10.0.0.31") && log.contains("fd00::31"),
        "the server saw the static client's virtual addresses: {log}"
    );
}

#[test]
fn plain_programs_under_ioth_exec_are_unchanged() {
    if !seccomp_works() {
        return skip("seccomp user notification is not available here");
    }
    let lab = NodeLab::new("static-plain", None);
    let sh = |script: &str| {
        let mut c = exec_at(&lab, "10.0.0.40", Path::new("/bin/sh"));
        c.args(["-c", script]);
        run_for(20, c)
    };
    let o = sh("echo out; echo err >&2; exit 7");
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    let o = sh("kill -TERM $$");
    assert_eq!(o.status.code(), Some(128 + libc::SIGTERM), "{}", text(&o));
    let o = run_for(
        20,
        exec_at(&lab, "10.0.0.40", Path::new("/nonexistent/prog")),
    );
    assert_eq!(o.status.code(), Some(127), "{}", text(&o));

    if have("python3") {
        // A unix socketpair (not INET: the kernel's), a TCP socket (virtual: named by the
        // node's daemon), a UDP socket (virtual: a datagram to itself, unconnected and
        // connected) and a raw socket (refused: it would reach the host's network).
        let script = r#"
import socket
a, b = socket.socketpair()
a.sendall(b"unix ok")
print(b.recv(16).decode())
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.bind(("0.0.0.0", 0))
print("tcp", t.getsockname()[0])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("10.0.0.40", 0))
me = u.getsockname()
u.sendto(b"udp ok", me)
d, frm = u.recvfrom(64)
print(d.decode(), frm == me)
u.connect(me)
u.send(b"connected udp ok")
print(u.recv(64).decode())
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    print("raw created")
except PermissionError:
    print("raw refused")
"#;
        let mut c = exec_at(&lab, "10.0.0.40", Path::new("python3"));
        c.args(["-c", script]);
        let o = run_for(30, c);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "unix ok\ntcp 0.0.0.0\nudp ok True\nconnected udp ok\nraw refused\n",
            "{}",
            text(&o)
        );
    }
}

#[test]
fn blocking_accept_under_ioth_exec_is_interrupted_by_a_signal() {
    if !seccomp_works() {
        return skip("seccomp user notification is not available here");
    }
    if !have("python3") {
        return skip("python3 missing");
    }
    let lab = NodeLab::new("static-signal", None);
    // A handler that raises: the blocking accept must end (EINTR) for it to run.
    let script = r#"
import signal, socket, time
class Alarm(Exception): pass
def on_alarm(sig, frame): raise Alarm()
signal.signal(signal.SIGALRM, on_alarm)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("0.0.0.0", 8000))
s.listen(4)
t = time.monotonic()
signal.alarm(1)
try:
    s.accept()
    print("accepted?")
except Alarm:
    print("interrupted after %.1f s" % (time.monotonic() - t))
"#;
    let mut c = exec_at(&lab, "10.0.0.45", Path::new("python3"));
    c.args(["-c", script]);
    let o = run_for(30, c);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success() && out.starts_with("interrupted after 1."),
        "{}",
        text(&o)
    );
}

/// A socket through a foreign system call ABI (i386 `int 0x80`: `socket` and `socketcall`;
/// x32) fails with `ENOSYS` under `ioth-exec` instead of reaching the host's network, while
/// a native socket call of the same program gets a virtual socket. Also as another user.
#[cfg(target_arch = "x86_64")]
#[test]
fn foreign_abi_socket_calls_fail_under_ioth_exec() {
    if !seccomp_works() {
        return skip("seccomp user notification is not available here");
    }
    let probe = Path::new(env!("CARGO_BIN_EXE_ioth-abi-probe"));
    // What the kernel gives without ioth-exec (an i386 or x32 "kernel" line: that ABI is a
    // way around the filter here).
    let o = run_for(20, Command::new(probe));
    assert!(o.status.success(), "{}", text(&o));
    eprintln!("without ioth-exec:\n{}", String::from_utf8_lossy(&o.stdout));

    let lab = NodeLab::new("static-abi", None);
    let want = "native socket: virtual\n\
                i386 socket: ENOSYS\n\
                i386 socketcall: ENOSYS\n\
                x32 socket: ENOSYS\n";
    let o = run_for(20, exec_at(&lab, "10.0.0.60", probe));
    assert_eq!(String::from_utf8_lossy(&o.stdout), want, "{}", text(&o));
    assert!(o.status.success(), "{}", text(&o));

    // The same as nobody (the supervisor stays root): a copy the other user can run.
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 || !have("setpriv") {
        return skip("as another user: needs root and setpriv");
    }
    let copy = lab.dir.join("ioth-abi-probe");
    std::fs::copy(probe, &copy).unwrap();
    chmod(&copy, 0o755);
    let mut c = exec_at(&lab, "10.0.0.61", Path::new("setpriv"));
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy);
    let o = run_for(20, c);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        want,
        "as nobody: {}",
        text(&o)
    );
    assert!(o.status.success(), "as nobody: {}", text(&o));
}

const GO_HTTP: &str = r#"package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
)

// serve ADDR DIR: an HTTP file server; get URL: prints the body's sha256 and length;
// resolve NAME: prints the name's addresses, sorted, with Go's own resolver.
func main() {
	switch os.Args[1] {
	case "resolve":
		addrs, err := net.DefaultResolver.LookupHost(context.Background(), os.Args[2])
		if err != nil {
			fmt.Println("resolve:", err)
			os.Exit(1)
		}
		sort.Strings(addrs)
		fmt.Println(strings.Join(addrs, " "))
	case "serve":
		ln, err := net.Listen("tcp", os.Args[2])
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(1)
		}
		fmt.Println("listening", ln.Addr())
		fmt.Println("serve:", http.Serve(ln, http.FileServer(http.Dir(os.Args[3]))))
		os.Exit(1)
	case "get":
		r, err := http.Get(os.Args[2])
		if err != nil {
			fmt.Println("get:", err)
			os.Exit(1)
		}
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			fmt.Println("read:", err)
			os.Exit(1)
		}
		fmt.Printf("%x %d\n", h.Sum(nil), n)
	}
}
"#;

#[test]
fn go_http_server_and_client_as_nodes() {
    if !seccomp_works() {
        return skip("seccomp user notification is not available here");
    }
    let Some(go) = which("go") else {
        return skip("go missing (apt-get install golang-go)");
    };
    let mut lab = NodeLab::new("static-go", None);
    let src = lab.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("main.go"), GO_HTTP).unwrap();
    std::fs::write(src.join("go.mod"), "module iothgo\n\ngo 1.19\n").unwrap();
    let exe = lab.dir.join("iothgo");
    // run_for keeps no working directory: sh changes to the module's.
    let mut b = Command::new("sh");
    b.args(["-c", r#"cd "$1" && exec "$0" build -o "$2" ."#])
        .arg(go)
        .arg(&src)
        .arg(&exe)
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", lab.dir.join("gocache"))
        .env("GOPATH", lab.dir.join("gopath"))
        .env("HOME", lab.dir.path())
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env_remove("LD_PRELOAD");
    let o = run_for(240, b);
    assert!(o.status.success(), "go build: {}", text(&o));

    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    random_file(&www.join("f.bin"), 4 << 20);
    let want = sha256_file(&www.join("f.bin"));
    let mut srv = exec_at(&lab, "fd00::50,10.0.0.50", &exe);
    srv.args(["serve", ":8080"]).arg(&www);
    lab.spawn(srv, "go-server.log");
    wait_for(Duration::from_secs(20), "the Go server listening", || {
        lab.log("go-server.log").contains("listening").then_some(())
    });
    // Go listens on IPv4 only here: its IPv6 probe binds [::1], which a node does not have.
    for i in 0..3 {
        let mut c = exec_at(&lab, "fd00::51,10.0.0.51", &exe);
        c.args(["get", "http://10.0.0.50:8080/f.bin"]);
        let o = run_for(30, c);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!("{want} {}", 4 << 20),
            "Go client, download {i}: {}\nserver: {}",
            text(&o),
            lab.log("go-server.log")
        );
    }
    // Names: Go's own resolver reads the node's /etc/resolv.conf (IOTH_DNS) and asks a
    // dnsmasq node over UDP (a connected socket: write and read).
    if have("dnsmasq") {
        let dns = lab.node("fd00::53,10.0.0.53");
        lab.dnsmasq(&dns, &["goweb,fd00::50,10.0.0.50"]);
        let mut c = exec_at(&lab, "fd00::51,10.0.0.51", &exe);
        c.args(["resolve", "goweb"]).env("IOTH_DNS", "fd00::53");
        let o = run_for(30, c);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "10.0.0.50 fd00::50",
            "Go resolving goweb: {}\ndnsmasq: {}",
            text(&o),
            lab.log("dnsmasq.log")
        );
        let mut c = exec_at(&lab, "fd00::51,10.0.0.51", &exe);
        c.args(["get", "http://goweb:8080/f.bin"])
            .env("IOTH_DNS", "10.0.0.53");
        let o = run_for(30, c);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!("{want} {}", 4 << 20),
            "Go client by name: {}",
            text(&o)
        );
    }
    if have("curl") {
        let out = lab.dir.join("curl.bin");
        let mut c = lab.at("fd00::52,10.0.0.52", "curl");
        c.args(["-sS", "--max-time", "20", "-o"])
            .arg(&out)
            .arg("http://10.0.0.50:8080/f.bin");
        let o = run_for(30, c);
        assert!(o.status.success(), "curl from the Go server: {}", text(&o));
        assert_eq!(sha256_file(&out), want);
    }
}

#[test]
fn static_busybox_nslookup_and_ping_as_nodes() {
    let Some(bb) = ready() else { return };
    if !have("dnsmasq") {
        return skip("dnsmasq missing (apt-get install dnsmasq-base)");
    }
    let mut lab = NodeLab::new("static-names", None);
    let dns = lab.node("fd00::70,10.0.0.70");
    lab.dnsmasq(&dns, &["bbweb,fd00::71,10.0.0.71"]);
    let bb_at = |args: &[&str], dns: Option<&str>| {
        let mut c = exec_at(&lab, "fd00::72,10.0.0.72", &bb);
        c.args(args);
        if let Some(d) = dns {
            c.env("IOTH_DNS", d);
        }
        run_for(30, c)
    };
    // The server from the node's /etc/resolv.conf (IOTH_DNS), then named on the command
    // line, over IPv4 and IPv6: each answer has both of bbweb's addresses.
    for (args, dns) in [
        (&["nslookup", "bbweb"][..], Some("fd00::70")),
        (&["nslookup", "bbweb"][..], Some("10.0.0.70")),
        (&["nslookup", "bbweb", "10.0.0.70"][..], None),
        (&["nslookup", "bbweb", "fd00::70"][..], None),
    ] {
        let o = bb_at(args, dns);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success() && out.contains("fd00::71") && out.contains("10.0.0.71"),
            "busybox {args:?} (IOTH_DNS {dns:?}): {}\ndnsmasq: {}",
            text(&o),
            lab.log("dnsmasq.log")
        );
    }
    let o = bb_at(&["nslookup", "nosuchname"], Some("fd00::70"));
    assert!(!o.status.success(), "an unknown name: {}", text(&o));

    // ping over IPv6 and IPv4 (raw ICMP sockets, moved to fd 0 by busybox): replies with the
    // hop limit from the control message (IPv6) or the IPv4 header, as on the kernel.
    for dst in ["fd00::70", "10.0.0.70"] {
        let o = bb_at(&["ping", "-c", "2", dst], None);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success() && out.contains("2 packets received") && out.contains("ttl=64"),
            "busybox ping {dst}: {}",
            text(&o)
        );
    }
    for dst in ["fd00::7f", "10.0.0.127"] {
        let o = bb_at(&["ping", "-c", "1", "-W", "2", dst], None);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            !o.status.success() && out.contains("0 packets received"),
            "busybox ping of a missing node {dst}: {}",
            text(&o)
        );
    }
}

/// Static busybox `udhcpc` as a node without an IPv4 address takes a lease from a dnsmasq
/// node: its packet sockets (`AF_PACKET`, `SOCK_DGRAM`) send the broadcast discover and read
/// the answers, its `IPPROTO_RAW` socket and `SIOCGIFINDEX`/`SIOCGIFHWADDR` show the node's
/// `vde0`, and its script gets the lease (address in the range, router, DNS server, mask).
#[test]
fn static_busybox_udhcpc_takes_a_lease_from_a_dnsmasq_node() {
    let Some(bb) = ready() else { return };
    if !have("dnsmasq") {
        return skip("dnsmasq missing (apt-get install dnsmasq-base)");
    }
    let mut lab = NodeLab::new("static-udhcpc", None);
    let server = lab.node("10.0.9.1/24");
    let leases = lab.dhcp_server(&server, "10.0.9.100,10.0.9.150,1h");
    let out = lab.dir.join("lease.out");
    let script = lab.dir.join("lease.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 ip=$ip mask=$mask router=$router dns=$dns interface=$interface\" >> {}\n",
            out.display()
        ),
    )
    .unwrap();
    chmod(&script, 0o755);
    let mut c = exec_at(&lab, "fd00:9::7", &bb);
    c.args([
        "udhcpc", "-i", "vde0", "-f", "-q", "-n", "-t", "5", "-T", "2", "-s",
    ])
    .arg(&script);
    let o = run_for(60, c);
    let got = std::fs::read_to_string(&out).unwrap_or_default();
    let bound = got
        .lines()
        .find(|l| l.starts_with("bound "))
        .unwrap_or_else(|| {
            panic!(
                "udhcpc: {}\nscript: {got}\ndnsmasq: {}",
                text(&o),
                lab.log("dnsmasq.log")
            )
        });
    assert!(o.status.success(), "udhcpc: {}", text(&o));
    let ip: std::net::Ipv4Addr = bound
        .split_whitespace()
        .find_map(|f| f.strip_prefix("ip="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{bound}"));
    assert!(
        (100..=150).contains(&ip.octets()[3]) && ip.octets()[..3] == [10, 0, 9],
        "{bound}"
    );
    for want in [
        "mask=24",
        "router=10.0.9.1",
        "dns=10.0.9.1",
        "interface=vde0",
    ] {
        assert!(bound.contains(want), "{want}: {bound}");
    }
    // dnsmasq recorded the lease it gave.
    let l = std::fs::read_to_string(&leases).unwrap_or_default();
    assert!(l.contains(&ip.to_string()), "leases: {l}");
}
