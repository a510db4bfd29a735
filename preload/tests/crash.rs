//! The stack daemon of a server node dies (`kill -9`) in the middle of a download.
//!
//! What must happen (issue 11): the established connection fails at once on both ends (the
//! client, on another node, within 1 s); no process of the server spins; and the node comes
//! back by itself: the keeper starts a new daemon, which takes back the listeners, and the
//! same server processes (nginx's master and both workers; python's `http.server`) serve a
//! new download, checked by sha256, within 2 s of the kill, without being restarted.

mod harness;
use harness::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A client that reads slowly (so that the transfer is still running when the daemon dies)
/// and prints `READY` once data flows, then `END <bytes> <how>` when the transfer ends.
const SLOW_READER: &str = r#"
import socket, sys, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port), timeout=30)
s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
got, told = 0, False
how = "eof"
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += len(b)
        if got > (2 << 20) and not told:
            print("READY", flush=True)
            told = True
        time.sleep(0.005)
except OSError as e:
    how = "error %d" % (e.errno or 0)
print("END %d %s" % (got, how), flush=True)
"#;

/// A node whose connections go through its stack daemon (`IOTH_CUT_THROUGH=0`): what these
/// tests kill is that daemon, with the connections on it. (A cut-through connection has no
/// daemon on its path and does not notice.)
fn tcp_node(lab: &Lab, ip: &str, prog: &str) -> Command {
    let mut c = lab.node(ip, prog);
    c.env("IOTH_CUT_THROUGH", "0");
    c
}

fn kill9(pid: i32) {
    // SAFETY: plain kill(2) on a daemon this test's nodes started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Process `pid` has ended (gone, or a zombie: its descriptors are closed). `kill` returns
/// before the process it killed has run its exit.
fn dead(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// The control path of the node with address `ip` in the lab's run directory.
fn node_ctl(run: &Path, ip: &str) -> PathBuf {
    let want = format!("addr={ip}/");
    wait_for(Duration::from_secs(5), "the node's control socket", || {
        std::fs::read_dir(run)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ctl"))
            .find(|p| info(p).lines().any(|l| l.starts_with(&want)))
    })
}

fn info(ctl: &Path) -> String {
    let o = Command::new(bin("iothctl"))
        .arg("--ctl")
        .arg(ctl)
        .arg("info")
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn field(info: &str, key: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

/// CPU seconds (user + system) of `pid` so far.
fn cpu_secs(pid: i32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Kill the server node's daemon while `reader` downloads `path`; check the failure is prompt
/// and the node serves again. `procs`: the server's processes (checked for spinning).
fn kill_mid_download(lab: &Lab, server: &str, path: &str, want: &str, procs: &[i32]) {
    let ctl = node_ctl(&lab.path("run"), server);
    let before = info(&ctl);
    let dpid: i32 = field(&before, "pid")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("pid= in {before}"));
    let mut reader = lab
        .node("fd00::2", "python3")
        .args(["-c", SLOW_READER, server, "80", path])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(reader.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    assert_eq!(first, "READY", "the download did not start");
    let cpu0: Vec<f64> = procs.iter().map(|p| cpu_secs(*p)).collect();
    let t0 = Instant::now();
    kill9(dpid);

    // The client's connection fails at once (its peer is reset by the new daemon).
    let end = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    let failed_after = t0.elapsed();
    let _ = reader.wait();
    assert!(end.starts_with("END "), "reader: {end}");
    let got: u64 = end.split_whitespace().nth(1).unwrap().parse().unwrap();
    let size = std::fs::metadata(lab.path("www/big")).unwrap().len();
    assert!(
        got < size,
        "the whole file arrived: the daemon died too late"
    );
    assert!(
        failed_after < Duration::from_secs(1),
        "the client noticed after {failed_after:?} ({end})"
    );

    // The same server serves again: the first answer counts; then the whole file.
    let mut served_after = None;
    while t0.elapsed() < Duration::from_secs(10) {
        let o = lab
            .node("fd00::3", "curl")
            .args([
                "-sf",
                "--max-time",
                "5",
                "-w",
                "%{time_connect} %{time_starttransfer}",
                "-o",
            ])
            .arg(lab.path("small"))
            .arg(format!("http://{}/small", url_host(server)))
            .output()
            .unwrap();
        eprintln!(
            "attempt at {:?}: {} (connect, first byte: {})",
            t0.elapsed(),
            o.status,
            String::from_utf8_lossy(&o.stdout)
        );
        if o.status.success() {
            served_after = Some(t0.elapsed());
            // The handshake with the new daemon took no SYN retransmission (1 s): it asks
            // for the client's link address at once rather than after smoltcp's rate limit.
            let connect: f64 = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::MAX);
            assert!(connect < 0.9, "the first connect took {connect} s");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let served_after = served_after.expect("the server never served again");
    assert_eq!(std::fs::read(lab.path("small")).unwrap(), b"small\n");
    let o = lab
        .node("fd00::3", "curl")
        .args(["-sf", "-o"])
        .arg(lab.path("got"))
        .arg(format!("http://{}{path}", url_host(server)))
        .output()
        .unwrap();
    assert!(o.status.success(), "download after the restart");
    assert_eq!(sha256(&lab.path("got")), want, "content after the restart");
    assert!(
        served_after < Duration::from_secs(2),
        "served again only after {served_after:?}"
    );
    eprintln!("client failed after {failed_after:?}; served again after {served_after:?}");

    // Nobody spun meanwhile: at most a tenth of one CPU each over the whole time.
    let spent = t0.elapsed().as_secs_f64();
    for (p, t) in procs.iter().zip(cpu0) {
        let used = cpu_secs(*p) - t;
        assert!(
            used < 0.1 * spent + 0.05,
            "process {p} used {used:.2} s of CPU in {spent:.2} s"
        );
    }

    // The node is the same node (same control path), on its second daemon.
    let after = info(&ctl);
    assert_eq!(field(&after, "restarts").as_deref(), Some("1"), "{after}");
    assert_ne!(field(&after, "pid"), field(&before, "pid"));
}

fn url_host(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

fn www(lab: &Lab) -> String {
    std::fs::create_dir_all(lab.path("www")).unwrap();
    random_file(&lab.path("www/big"), 64 << 20);
    set_mode(&lab.path("www/big"), 0o644);
    std::fs::write(lab.path("www/small"), "small\n").unwrap();
    set_mode(&lab.path("www/small"), 0o644);
    sha256(&lab.path("www/big"))
}

/// nginx's path, if nginx and curl are both installed (else a SKIP line).
fn nginx_and_curl() -> Option<String> {
    let Some(nginx) = nginx_bin() else {
        eprintln!("SKIP: nginx missing");
        return None;
    };
    if !have("curl") {
        eprintln!("SKIP: curl missing");
        return None;
    }
    Some(nginx)
}

/// nginx (master and two workers, epoll, sendfile) as the node `fd00::1,10.0.0.1` that
/// `node` makes, serving the lab's files on both addresses, its error log in
/// `logs/error.log`: (master, workers), once a curl of a node `fd00::3` (made the same way)
/// gets `/small`.
fn start_nginx(
    lab: &mut Lab,
    nginx: &str,
    node: impl Fn(&Lab, &str, &str) -> Command,
) -> (i32, Vec<i32>) {
    let d = lab.dir.display().to_string();
    for sub in ["tmp", "logs"] {
        std::fs::create_dir_all(lab.path(sub)).unwrap();
        set_mode(&lab.path(sub), 0o777);
    }
    let conf = format!(
        r#"daemon off; master_process on; worker_processes 2;
pid {d}/logs/nginx.pid; error_log {d}/logs/error.log info;
events {{ use epoll; worker_connections 256; }}
http {{
  sendfile on; access_log off;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fcgi; uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  server {{ listen [::]:80; listen 10.0.0.1:80; root {d}/www; }}
}}
"#
    );
    std::fs::write(lab.path("nginx.conf"), conf).unwrap();
    let elog = format!("{d}/logs/error.log");
    let mut c = node(lab, "fd00::1,10.0.0.1", nginx);
    c.args(["-p", &d, "-e", &elog, "-c"])
        .arg(lab.path("nginx.conf"));
    let master = lab.spawn(c, "nginx.out") as i32;
    let workers = wait_for(Duration::from_secs(10), "two nginx workers", || {
        let w: Vec<i32> = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .ok()?
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        (w.len() == 2).then_some(w)
    });
    wait_for(Duration::from_secs(10), "nginx serving", || {
        node(lab, "fd00::3", "curl")
            .args(["-sf", "-o", "/dev/null", "http://[fd00::1]/small"])
            .status()
            .ok()?
            .success()
            .then_some(())
    });
    (master, workers)
}

#[test]
fn nginx_survives_the_death_of_its_stack_daemon() {
    let Some(nginx) = nginx_and_curl() else {
        return;
    };
    let mut lab = Lab::new("crash-nginx");
    let want = www(&lab);
    let (master, workers) = start_nginx(&mut lab, &nginx, tcp_node);
    let mut procs = vec![master];
    procs.extend(&workers);
    kill_mid_download(&lab, "fd00::1", "/big", &want, &procs);
    // Over IPv4 too, on the restored second listener.
    let o = lab
        .node("10.0.0.3", "curl")
        .args(["-sf", "-o"])
        .arg(lab.path("got4"))
        .arg("http://10.0.0.1/big")
        .output()
        .unwrap();
    assert!(o.status.success(), "IPv4 download after the restart");
    assert_eq!(sha256(&lab.path("got4")), want);
    let elog = lab.log("logs/error.log");
    let errors = elog.matches("accept4() failed").count();
    assert!(errors == 0, "nginx: {errors} accept errors:\n{elog}");
}

#[test]
fn python_http_server_survives_the_death_of_its_stack_daemon() {
    let mut lab = Lab::new("crash-python");
    let want = www(&lab);
    let mut c = tcp_node(&lab, "fd00::1", "python3");
    c.args(["-m", "http.server", "80", "--bind", "::", "--directory"])
        .arg(lab.path("www"));
    let server = lab.spawn(c, "python.out") as i32;
    wait_for(Duration::from_secs(10), "python serving", || {
        tcp_node(&lab, "fd00::3", "curl")
            .args(["-sf", "-o", "/dev/null", "http://[fd00::1]/big"])
            .status()
            .ok()?
            .success()
            .then_some(())
    });
    kill_mid_download(&lab, "fd00::1", "/big", &want, &[server]);
}

/// A client that fetches a page, waits for `go`, and fetches it again (a new socket, a new
/// connection).
const TWICE: &str = r#"
import os, socket, sys, time
host, go = sys.argv[1], sys.argv[2]
def get():
    s = socket.create_connection((host, 80), timeout=10)
    s.sendall(b"GET /small HTTP/1.0\r\n\r\n")
    b = b""
    while True:
        x = s.recv(65536)
        if not x:
            break
        b += x
    s.close()
    return b.split(b"\r\n\r\n", 1)[1]
print("first", get().decode().strip(), flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
print("second", get().decode().strip(), flush=True)
"#;

#[test]
fn a_client_node_whose_daemon_died_carries_on() {
    let mut lab = Lab::new("crash-client");
    www(&lab);
    let mut c = tcp_node(&lab, "fd00::1", "python3");
    c.args(["-m", "http.server", "80", "--bind", "::", "--directory"])
        .arg(lab.path("www"));
    lab.spawn(c, "server.out");
    wait_for(Duration::from_secs(10), "python serving", || {
        tcp_node(&lab, "fd00::3", "curl")
            .args(["-sf", "-o", "/dev/null", "http://[fd00::1]/small"])
            .status()
            .ok()?
            .success()
            .then_some(())
    });
    let go = lab.path("go");
    let mut c = tcp_node(&lab, "fd00::2", "python3");
    c.args(["-c", TWICE, "fd00::1"]).arg(&go);
    lab.spawn(c, "client.out");
    wait_for(Duration::from_secs(10), "the first answer", || {
        lab.log("client.out").contains("first small").then_some(())
    });
    let ctl = node_ctl(&lab.path("run"), "fd00::2");
    let before = info(&ctl);
    let dpid: i32 = field(&before, "pid").unwrap().parse().unwrap();
    kill9(dpid);
    // Dead, not only signalled: a connect that reached the dying daemon would fail with it
    // (`ECONNRESET`), as a connection it carried does.
    wait_for(Duration::from_secs(10), "the daemon to die", || {
        dead(dpid).then_some(())
    });
    std::fs::write(&go, b"").unwrap();
    let t0 = Instant::now();
    while !lab.log("client.out").contains("second small") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no second answer within 10 s:\n{}",
            lab.log("client.out")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = info(&ctl);
    assert_ne!(field(&after, "pid"), Some(dpid.to_string()), "{after}");
}

/// Keepers of the nodes in `lab`.
fn keepers(lab: &Lab) -> Vec<i32> {
    pids_with(&lab.dir.to_string_lossy())
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "ioth-keeper")
        })
        .collect()
}

/// The pid of the daemon of the node with address `ip`, and of its keeper (its parent),
/// checked to be one of the lab's keepers; and the node's control path.
fn daemon_and_keeper(lab: &Lab, ip: &str) -> (PathBuf, i32, i32) {
    let ctl = node_ctl(&lab.path("run"), ip);
    let dpid: i32 = field(&info(&ctl), "pid").unwrap().parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{dpid}/stat")).unwrap();
    let keeper: i32 = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert!(
        keepers(lab).contains(&keeper),
        "the daemon's parent is its keeper"
    );
    (ctl, dpid, keeper)
}

#[test]
fn a_stopped_node_leaves_its_servers_quiet() {
    let mut lab = Lab::new("crash-stop");
    www(&lab);
    let mut c = tcp_node(&lab, "fd00::1", "python3");
    c.args(["-m", "http.server", "80", "--bind", "::", "--directory"])
        .arg(lab.path("www"));
    let server = lab.spawn(c, "server.out") as i32;
    wait_for(Duration::from_secs(10), "python serving", || {
        tcp_node(&lab, "fd00::3", "curl")
            .args(["-sf", "-o", "/dev/null", "http://[fd00::1]/small"])
            .status()
            .ok()?
            .success()
            .then_some(())
    });
    let (ctl, dpid, keeper) = daemon_and_keeper(&lab, "fd00::1");
    // The operator stops the node's daemon: it is not started again, and the server's
    // listener stays quiet (no EOF to spin on).
    // SAFETY: signalling the daemon this test's node started, by its pid.
    unsafe { libc::kill(dpid, libc::SIGTERM) };
    let t0 = Instant::now();
    let cpu0 = cpu_secs(server);
    wait_for(Duration::from_secs(5), "the daemon to stop", || {
        (!Path::new(&format!("/proc/{dpid}")).exists()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_secs(server) - cpu0;
    let spent = t0.elapsed().as_secs_f64();
    assert!(
        used < 0.1 * spent + 0.05,
        "the server used {used:.2} s of CPU in {spent:.2} s"
    );
    assert!(
        Path::new(&format!("/proc/{server}")).exists(),
        "the server died"
    );
    assert!(!ctl.exists(), "the control path of a stopped node is left");
    // Once the server is gone, so is the keeper that held its listener.
    // SAFETY: signalling the server this test started, by its pid.
    unsafe { libc::kill(server, libc::SIGTERM) };
    wait_for(Duration::from_secs(10), "the keeper to exit", || {
        (!keepers(&lab).contains(&keeper)).then_some(())
    });
}

/// A node dead for good (its daemon and its keeper both killed, as `kill -9` or the OOM
/// killer may do). nginx (epoll, two workers, the master holding the same listeners) must
/// not spin nor fill its error log: its listeners are kernel listeners of its own, which
/// stay quiet, as on a network that went away (a listener made through the daemon would
/// read EOF: its first accept fails with `EINVAL`, then it is made quiet). And nginx still
/// stops when asked.
#[test]
fn a_dead_node_leaves_nginx_quiet() {
    let Some(nginx) = nginx_and_curl() else {
        return;
    };
    let mut lab = Lab::new("crash-dead");
    www(&lab);
    let (master, workers) = start_nginx(&mut lab, &nginx, |l, ip, p| l.node(ip, p));
    let (_, dpid, keeper) = daemon_and_keeper(&lab, "fd00::1");
    kill9(keeper);
    kill9(dpid);
    wait_for(
        Duration::from_secs(10),
        "the daemon and its keeper to die",
        || [dpid, keeper].into_iter().all(dead).then_some(()),
    );
    let failed = |log: &str| log.matches("accept4() failed").count();
    let mut procs = vec![master];
    procs.extend(&workers);
    let cpu0: f64 = procs.iter().map(|&p| cpu_secs(p)).sum();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let used = procs.iter().map(|&p| cpu_secs(p)).sum::<f64>() - cpu0;
    let spent = t0.elapsed().as_secs_f64();
    assert!(
        used < 0.1 * spent + 0.05,
        "nginx used {used:.2} s of CPU in {spent:.2} s"
    );
    let log = lab.log("logs/error.log");
    assert!(
        failed(&log) <= 4,
        "at most one failed accept per worker and listener:\n{}",
        &log[log.len().saturating_sub(2000)..]
    );
    // SAFETY: signalling the nginx master this test started, by its pid.
    unsafe { libc::kill(master, libc::SIGTERM) };
    wait_for(Duration::from_secs(10), "nginx to stop", || {
        (!Path::new(&format!("/proc/{master}")).exists()
            || std::fs::read_to_string(format!("/proc/{master}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            }))
        .then_some(())
    });
}

/// A UDP server (a select loop, as a DNS server's) whose node's daemon dies: the keeper
/// held its bound socket, so the socket never reads EOF (it would read it as a datagram
/// forever and spin), the new daemon takes it back on the same port, and the same process
/// answers the next datagram. Queries are sent again until answered (a datagram sent
/// while no daemon runs is lost, as on a link that is down).
const UDP_ECHO: &str = r#"
import select, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 5353))
print("ready", flush=True)
while True:
    r, _, _ = select.select([s], [], [], 5)
    if not r:
        continue
    try:
        d, a = s.recvfrom(1000)
    except OSError as e:
        print("error", e, flush=True)
        continue
    s.sendto(b"echo " + d, a)
"#;

/// Send `argv[2]` to port 5353 of `argv[1]` (a group on the node's link, or an address)
/// until answered, for at most `argv[3]` seconds; print the answer (nothing if none came).
const UDP_ASK: &str = r#"
import socket, sys, time
to, what, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
scope = socket.if_nametoindex("vde0") if to.startswith("ff02:") else 0
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(0.2)
end = time.monotonic() + secs
while time.monotonic() < end:
    s.sendto(what.encode(), (to, 5353, 0, scope))
    try:
        print(s.recvfrom(1000)[0].decode(), flush=True)
        break
    except socket.timeout:
        pass
"#;

/// Ask `to` with [`UDP_ASK`] from another node.
fn udp_ask(lab: &Lab, to: &str, what: &str, secs: u32) -> String {
    let o = lab
        .node("fd00::3", "python3")
        .args(["-c", UDP_ASK, to, what, &secs.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn a_udp_server_survives_the_death_of_its_stack_daemon() {
    let mut lab = Lab::new("crash-udp");
    let mut c = lab.node("fd00::1", "python3");
    c.args(["-c", UDP_ECHO]);
    let server = lab.spawn(c, "server.out") as i32;
    let ask = |lab: &Lab, what: &str| udp_ask(lab, "fd00::1", what, 10);
    wait_for(Duration::from_secs(10), "the server answering", || {
        (ask(&lab, "one") == "echo one").then_some(())
    });
    let ctl = node_ctl(&lab.path("run"), "fd00::1");
    let dpid: i32 = field(&info(&ctl), "pid").unwrap().parse().unwrap();
    let cpu0 = cpu_secs(server);
    let t0 = Instant::now();
    kill9(dpid);
    assert_eq!(ask(&lab, "two"), "echo two", "{}", lab.log("server.out"));
    let after = info(&ctl);
    assert_ne!(field(&after, "pid"), Some(dpid.to_string()), "{after}");
    let used = cpu_secs(server) - cpu0;
    let spent = t0.elapsed().as_secs_f64();
    assert!(
        used < 0.2 * spent + 0.05,
        "the server used {used:.2} s of CPU in {spent:.2} s"
    );
    let out = lab.log("server.out");
    assert!(!out.contains("error"), "the server saw errors:\n{out}");
}

/// A UDP server's options and multicast group outlive its daemon: the new daemon sets them
/// again on the socket it takes back. The server answers a query sent to its group with what
/// `getsockopt` says of them.
const UDP_GROUP_ECHO: &str = r#"
import select, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.IPPROTO_IPV6, 25, 1)  # IPV6_RECVERR
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 7)
s.bind(("::", 5353))
ifindex = socket.if_nametoindex("vde0")
for g in ("ff02::9:3", "ff02::9:4"):
    mreq = socket.inet_pton(socket.AF_INET6, g) + ifindex.to_bytes(4, sys.byteorder)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
# Left again: a new daemon must not join it.
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, mreq)
print("ready", flush=True)
while True:
    r, _, _ = select.select([s], [], [], 5)
    if not r:
        continue
    d, a = s.recvfrom(1000)
    o = (s.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST),
         s.getsockopt(socket.IPPROTO_IPV6, 25),
         s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS))
    s.sendto(b"echo %s %d %d %d" % ((d,) + o), a)
"#;

#[test]
fn a_udp_servers_options_and_groups_survive_the_death_of_its_stack_daemon() {
    let mut lab = Lab::new("crash-udpopt");
    let mut c = lab.node("fd00::1", "python3");
    c.args(["-c", UDP_GROUP_ECHO]);
    lab.spawn(c, "server.out");
    wait_for(Duration::from_secs(10), "the server", || {
        lab.log("server.out").contains("ready").then_some(())
    });
    assert_eq!(udp_ask(&lab, "ff02::9:3", "one", 10), "echo one 1 1 7");
    assert_eq!(
        udp_ask(&lab, "ff02::9:4", "left", 1),
        "",
        "a group left still answers"
    );
    let ctl = node_ctl(&lab.path("run"), "fd00::1");
    let dpid: i32 = field(&info(&ctl), "pid").unwrap().parse().unwrap();
    kill9(dpid);
    assert_eq!(
        udp_ask(&lab, "ff02::9:3", "two", 10),
        "echo two 1 1 7",
        "{}",
        lab.log("server.out")
    );
    let after = info(&ctl);
    assert_ne!(field(&after, "pid"), Some(dpid.to_string()), "{after}");
    assert_eq!(
        udp_ask(&lab, "ff02::9:4", "left", 1),
        "",
        "a group left answers again"
    );
}
