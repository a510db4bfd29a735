//! Real servers as nodes, beyond the single nginx of `nginx.rs`:
//! * two nginx instances, each on its own node and addresses, both on port 80 at the same
//!   time, each serving its own content, next to a third nginx on the kernel's loopback
//!   (no shim) that stays reachable by a plain curl;
//! * nginx `proxy_pass` (a worker connects to the upstream after fork, non-blocking) to a
//!   `python3 -m http.server` node;
//! * `python3 -m http.server` serving `urllib` clients on other nodes (IPv6 and IPv4);
//! * an asyncio echo server (`host=None`: a v6-only `[::]` and a `0.0.0.0` socket on one port)
//!   and client, each a node.
//!
//! Content is checked by sha256.

mod harness;
use harness::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A command that runs `prog args` as `nobody` when we are root.
fn unprivileged(mut base: Command, prog: &str, args: &[&str]) -> Command {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 && have("setpriv") {
        base.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", prog]);
    } else {
        base = Command::new(prog);
    }
    base.args(args);
    base
}

/// Prepare `lab/<name>/` with a www root holding `files` (name, size) and an nginx.conf whose
/// server block has `server`; returns the nginx arguments (without -s).
fn nginx_site(lab: &Lab, name: &str, files: &[(&str, usize)], server: &str) -> Vec<String> {
    let d = lab.path(name).display().to_string();
    for sub in ["www", "tmp", "logs"] {
        std::fs::create_dir_all(format!("{d}/{sub}")).unwrap();
    }
    set_mode(&lab.path(name), 0o755);
    set_mode(&lab.path(&format!("{name}/www")), 0o755);
    set_mode(&lab.path(&format!("{name}/tmp")), 0o777);
    set_mode(&lab.path(&format!("{name}/logs")), 0o777);
    for (f, len) in files {
        random_file(&lab.path(&format!("{name}/www/{f}")), *len);
    }
    let conf = format!(
        r#"daemon on; master_process on; worker_processes 2;
pid {d}/logs/nginx.pid; error_log {d}/logs/error.log info;
events {{ use epoll; worker_connections 256; }}
http {{
  sendfile on; keepalive_timeout 5; access_log {d}/logs/access.log;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fcgi; uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  server {{ root {d}/www; {server} }}
}}
"#
    );
    let cp = format!("{d}/nginx.conf");
    std::fs::write(&cp, conf).unwrap();
    set_mode(Path::new(&cp), 0o644);
    vec![
        "-p".into(),
        d.clone(),
        "-e".into(),
        format!("{d}/logs/error.log"),
        "-c".into(),
        cp,
    ]
}

/// Start (or signal, with `-s`) nginx as a node (`ip`) or on the kernel (`ip == None`).
fn nginx(lab: &Lab, ip: Option<&str>, args: &[String], signal: Option<&str>) {
    let bin = nginx_bin().unwrap();
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Some(s) = signal {
        a.extend(["-s", s]);
    }
    let base = match ip {
        Some(ip) => {
            let mut c = lab.node(ip, "setpriv");
            // SAFETY: getuid has no preconditions.
            if unsafe { libc::getuid() } == 0 {
                // nginx runs as nobody: its node's control socket goes in nobody's own run dir.
                c.env("IOTH_RUNDIR", lab.user_rundir("nobody"));
            }
            c
        }
        None => Command::new("setpriv"),
    };
    let o = lab.run(unprivileged(base, &bin, &a), Duration::from_secs(30));
    assert!(
        o.status.success(),
        "nginx {a:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// curl as a node (or on the kernel when `ip` is None) into sha256sum.
fn fetch_sha(lab: &Lab, ip: Option<&str>, tool: &str, url: &str) -> String {
    let cmd = match tool {
        "curl" => format!("curl -sSf -m 120 '{url}' | sha256sum | cut -d' ' -f1"),
        _ => format!("wget -q -T 120 -t 1 -O - '{url}' | sha256sum | cut -d' ' -f1"),
    };
    let mut c = match ip {
        Some(ip) => lab.node(ip, "bash"),
        None => {
            let mut c = Command::new("bash");
            c.env_remove("LD_PRELOAD");
            c
        }
    };
    c.args(["-c", &format!("set -o pipefail; {cmd}")]);
    let o = lab.run(c, Duration::from_secs(180));
    assert!(
        o.status.success(),
        "{tool} {url}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn ready(lab: &Lab, ip: Option<&str>, url: &str) {
    wait_for(Duration::from_secs(30), url, || {
        let mut c = match ip {
            Some(ip) => lab.node(ip, "curl"),
            None => {
                let mut c = Command::new("curl");
                c.env_remove("LD_PRELOAD");
                c
            }
        };
        c.args(["-sf", "-o", "/dev/null", "-m", "5", url]);
        lab.run(c, Duration::from_secs(20))
            .status
            .success()
            .then_some(())
    });
}

fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn two_nginx_nodes_on_port_80_and_one_on_kernel_loopback() {
    if nginx_bin().is_none() || !have("curl") || !have("wget") || !have("setpriv") {
        eprintln!("SKIP: nginx, curl, wget or setpriv missing");
        return;
    }
    let lab = Lab::new("nginx2");
    let a = nginx_site(
        &lab,
        "a",
        &[("a", 10 << 20)],
        "listen [::]:80; listen 10.0.0.1:80;",
    );
    let b = nginx_site(
        &lab,
        "b",
        &[("b", 20 << 20)],
        "listen [::]:80; listen 10.0.0.2:80;",
    );
    let port = free_loopback_port();
    let k = nginx_site(
        &lab,
        "k",
        &[("k", 10 << 20)],
        &format!("listen 127.0.0.1:{port};"),
    );
    nginx(&lab, Some("fd00::1,10.0.0.1"), &a, None);
    nginx(&lab, Some("fd00::2,10.0.0.2"), &b, None);
    nginx(&lab, None, &k, None);
    let client = Some("fd00::3,10.0.0.3");
    ready(&lab, client, "http://[fd00::1]/a");
    ready(&lab, client, "http://[fd00::2]/b");
    ready(&lab, None, &format!("http://127.0.0.1:{port}/k"));

    let sha_a = sha256(&lab.path("a/www/a"));
    let sha_b = sha256(&lab.path("b/www/b"));
    let sha_k = sha256(&lab.path("k/www/k"));
    assert_eq!(fetch_sha(&lab, client, "curl", "http://[fd00::1]/a"), sha_a);
    assert_eq!(fetch_sha(&lab, client, "wget", "http://10.0.0.1/a"), sha_a);
    assert_eq!(fetch_sha(&lab, client, "curl", "http://[fd00::2]/b"), sha_b);
    assert_eq!(fetch_sha(&lab, client, "wget", "http://10.0.0.2/b"), sha_b);
    // Each serves only its own content. (The same node as the other fetches: a node with
    // only fd00::3 would be a second node with that address and MAC, and while its daemon
    // lingered the switch would send the next fetch's segments to it, which resets them.)
    let mut c = lab.node("fd00::3,10.0.0.3", "curl");
    c.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://[fd00::2]/a",
    ]);
    let o = lab.run(c, Duration::from_secs(30));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "404");
    // The kernel's nginx: a plain curl reaches it, and the virtual ones are still reachable.
    let kurl = format!("http://127.0.0.1:{port}/k");
    assert_eq!(fetch_sha(&lab, None, "curl", &kurl), sha_k);
    assert_eq!(fetch_sha(&lab, client, "curl", "http://[fd00::1]/a"), sha_a);
    assert_eq!(fetch_sha(&lab, client, "curl", "http://10.0.0.2/b"), sha_b);

    for (ip, args) in [
        (Some("fd00::1,10.0.0.1"), &a),
        (Some("fd00::2,10.0.0.2"), &b),
        (None, &k),
    ] {
        nginx(&lab, ip, args, Some("stop"));
    }
}

#[test]
fn nginx_proxy_pass_to_python_http_server() {
    if nginx_bin().is_none() || !have("curl") || !have("python3") || !have("setpriv") {
        eprintln!("SKIP: nginx, curl, python3 or setpriv missing");
        return;
    }
    let mut lab = Lab::new("proxy");
    let up = lab.path("up");
    std::fs::create_dir_all(&up).unwrap();
    random_file(&up.join("blob"), 20 << 20);
    let want = sha256(&up.join("blob"));
    let mut py = lab.node("fd00::5,10.0.0.5", "python3");
    py.args(["-m", "http.server", "8000", "--bind", "::", "--directory"])
        .arg(&up);
    lab.spawn(py, "upstream.log");
    let p = nginx_site(
        &lab,
        "p",
        &[],
        "listen [::]:80; listen 10.0.0.1:80; \
         location /v6/ { proxy_pass http://[fd00::5]:8000/; } \
         location /v4/ { proxy_pass http://10.0.0.5:8000/; }",
    );
    nginx(&lab, Some("fd00::1,10.0.0.1"), &p, None);
    let client = Some("fd00::3,10.0.0.3");
    ready(&lab, client, "http://[fd00::5]:8000/blob");
    ready(&lab, client, "http://[fd00::1]/v6/blob");
    assert_eq!(
        fetch_sha(&lab, client, "curl", "http://[fd00::1]/v6/blob"),
        want
    );
    assert_eq!(
        fetch_sha(&lab, client, "curl", "http://10.0.0.1/v4/blob"),
        want
    );
    assert!(
        lab.log("upstream.log")
            .contains("\"GET /blob HTTP/1.0\" 200")
    );
    nginx(&lab, Some("fd00::1,10.0.0.1"), &p, Some("stop"));
}

const URLLIB: &str = r#"
import hashlib, sys, urllib.request
h = hashlib.sha256()
with urllib.request.urlopen(sys.argv[1], timeout=60) as r:
    while True:
        d = r.read(1 << 16)
        if not d:
            break
        h.update(d)
print(h.hexdigest())
"#;

#[test]
fn python_http_server_and_urllib_clients() {
    if !have("python3") {
        eprintln!("SKIP: python3 missing");
        return;
    }
    let mut lab = Lab::new("urllib");
    let www = lab.path("www");
    std::fs::create_dir_all(&www).unwrap();
    random_file(&www.join("f"), 20 << 20);
    let want = sha256(&www.join("f"));
    let mut srv = lab.node("fd00::1,10.0.0.1", "python3");
    srv.args(["-m", "http.server", "80", "--bind", "::", "--directory"])
        .arg(&www);
    lab.spawn(srv, "server.log");
    for (ip, url) in [
        ("fd00::2", "http://[fd00::1]/f"),
        ("10.0.0.3", "http://10.0.0.1/f"),
    ] {
        let got = wait_for(Duration::from_secs(30), "urllib download", || {
            let mut c = lab.node(ip, "python3");
            c.args(["-c", URLLIB, url]);
            let o = lab.run(c, Duration::from_secs(90));
            o.status
                .success()
                .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
        });
        assert_eq!(got, want, "urllib from {ip}");
    }
}

const ECHO_SERVER: &str = r#"
import asyncio
async def handle(r, w):
    while True:
        d = await r.read(65536)
        if not d:
            break
        w.write(d)
        await w.drain()
    w.close()
async def main():
    s = await asyncio.start_server(handle, host=None, port=9000)
    print("listening", flush=True)
    async with s:
        await s.serve_forever()
asyncio.run(main())
"#;

const ECHO_CLIENT: &str = r#"
import asyncio, hashlib, os, sys
async def main(host):
    r, w = await asyncio.open_connection(host, 9000)
    data = os.urandom(4 << 20)
    async def send():
        for i in range(0, len(data), 100000):
            w.write(data[i:i + 100000])
            await w.drain()
        w.write_eof()
    t = asyncio.create_task(send())
    got = b""
    while len(got) < len(data):
        d = await asyncio.wait_for(r.read(1 << 16), 30)
        if not d:
            break
        got += d
    await t
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), len(got)
    assert await r.read() == b""
    w.close()
    print("echo-ok", host)
asyncio.run(main(sys.argv[1]))
"#;

#[test]
fn asyncio_echo_server_and_client() {
    if !have("python3") {
        eprintln!("SKIP: python3 missing");
        return;
    }
    let mut lab = Lab::new("asyncio");
    let mut s = lab.node("fd00::1,10.0.0.1", "python3");
    s.args(["-c", ECHO_SERVER]);
    lab.spawn(s, "server.log");
    wait_for(Duration::from_secs(30), "asyncio server", || {
        lab.log("server.log").contains("listening").then_some(())
    });
    for (ip, host) in [("fd00::2", "fd00::1"), ("10.0.0.2", "10.0.0.1")] {
        let mut c = lab.node(ip, "python3");
        c.args(["-c", ECHO_CLIENT, host]);
        let o = lab.run(c, Duration::from_secs(90));
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("echo-ok"),
            "asyncio client {ip}: {}{}\nserver: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            lab.log("server.log")
        );
    }
}
