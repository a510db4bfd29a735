//! nginx (default daemon mode: master + 2 workers, epoll, sendfile) started as an unprivileged
//! user as a node on fd00::1 and 10.0.0.1, listening on `[::]:80` (nginx's default sets
//! IPV6_V6ONLY) and on `10.0.0.1:80` at the same time, as Linux allows; curl (IPv6) and wget
//! (IPv4) as other nodes download 10/20/40 MiB files (and 1 GiB unless `IOTH_TEST_QUICK` is
//! set) with a sha256 check, cut through and then with `IOTH_CUT_THROUGH=0`; both workers
//! serve; `nginx -s reload` and `nginx -s stop` work.

mod harness;
use harness::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

/// Run as `nobody` when we are root (port 80 must not need privilege on a virtual node).
fn as_user(lab: &Lab, ip: &str, args: &[&str]) -> Command {
    let nginx = nginx_bin().unwrap();
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 && have("setpriv") {
        let mut c = lab.node(ip, "setpriv");
        c.env("IOTH_RUNDIR", lab.user_rundir("nobody"));
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            &nginx,
        ]);
        c.args(args);
        c
    } else {
        let mut c = lab.node(ip, &nginx);
        c.args(args);
        c
    }
}

/// A lab for nginx: `www`, `tmp` and `logs` (the last two writable by the user it runs as).
fn nginx_lab(name: &str) -> Lab {
    let lab = Lab::new(name);
    for sub in ["www", "tmp", "logs"] {
        std::fs::create_dir_all(lab.path(sub)).unwrap();
    }
    set_mode(&lab.path("tmp"), 0o777);
    set_mode(&lab.path("logs"), 0o777);
    lab
}

/// Write nginx's configuration (two workers; `http`: the `http` block's own directives,
/// its `server` included) and return the command-line arguments that use it.
fn nginx_conf(lab: &Lab, http: &str) -> Vec<String> {
    let d = lab.dir.display().to_string();
    let conf = format!(
        r#"daemon on; master_process on; worker_processes 2;
pid {d}/logs/nginx.pid; error_log {d}/logs/error.log info;
events {{ use epoll; worker_connections 256; }}
http {{
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fcgi; uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
{http}
}}
"#
    );
    let conf_path = lab.path("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    set_mode(&conf_path, 0o644);
    let elog = format!("{d}/logs/error.log");
    let cp = conf_path.display().to_string();
    ["-p", &d, "-e", &elog, "-c", &cp]
        .iter()
        .map(|a| a.to_string())
        .collect()
}

/// Start nginx as a node on `ip` (its arguments `base`), and wait until a client node
/// fetches `url`.
fn nginx_start(lab: &Lab, ip: &str, base: &[&str], url: &str) {
    let o = lab.run(as_user(lab, ip, base), Duration::from_secs(30));
    lab.nginx_started(&o);
    wait_for(Duration::from_secs(30), "nginx answers", || {
        let mut c = lab.node("fd00::2,10.0.0.2", "curl");
        c.args(["-sSf", "-m", "10", "-o", "/dev/null", url]);
        lab.run(c, Duration::from_secs(15))
            .status
            .success()
            .then_some(())
    });
}

/// `nginx -s stop`, and wait for its master to exit.
fn nginx_stop(lab: &Lab, ip: &str, base: &[&str]) {
    let master: i32 = lab.log("logs/nginx.pid").trim().parse().unwrap();
    let mut stop: Vec<&str> = base.to_vec();
    stop.extend(["-s", "stop"]);
    let o = lab.run(as_user(lab, ip, &stop), Duration::from_secs(30));
    assert!(
        o.status.success(),
        "stop: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    wait_for(Duration::from_secs(20), "nginx master exits", || {
        // SAFETY: signal 0 only checks existence.
        (unsafe { libc::kill(master, 0) } != 0).then_some(())
    });
}

#[test]
fn nginx_two_workers_curl_wget_reload_stop() {
    if nginx_bin().is_none() || !have("curl") || !have("wget") {
        eprintln!("SKIP: nginx, curl or wget missing");
        return;
    }
    let lab = nginx_lab("nginx");
    let d = lab.dir.display().to_string();
    let sizes = [10usize, 20, 40];
    for mb in sizes {
        random_file(&lab.path(&format!("www/f{mb}")), mb << 20);
    }
    std::fs::write(lab.path("www/index.html"), "hello\n").unwrap();
    set_mode(&lab.path("www/index.html"), 0o644);
    let args = nginx_conf(
        &lab,
        &format!(
            r#"  sendfile on; tcp_nopush on; keepalive_timeout 5;
  log_format pids '$pid $remote_addr "$request" $status $body_bytes_sent';
  access_log {d}/logs/access.log pids;
  server {{ listen [::]:80; listen 10.0.0.1:80; root {d}/www; }}"#
        ),
    );
    let base: Vec<&str> = args.iter().map(String::as_str).collect();
    let ip = "fd00::1,10.0.0.1";

    nginx_start(&lab, ip, &base, "http://[fd00::1]/");
    let curl = |url: &str, out: &str| {
        let mut c = lab.node("fd00::2,10.0.0.2", "curl");
        c.args(["-sSf", "-m", "60", "-o", out, url]);
        c
    };

    // Every file twice: from clients whose connections are cut through (the default: their
    // bytes go from nginx to the client through one socketpair), then from clients with
    // IOTH_CUT_THROUGH=0 (through both stacks and the shortcut's rings). nginx's node counts
    // the connections it took through TCP (it hears of a cut-through one only when asked
    // about it): the cut-through round must leave it, the other move it.
    let taken = || lab.node_counter("fd00::1", "tcp_accepted").unwrap_or(0);
    for (cut, curl_ip, wget_ip) in [
        (true, "fd00::2,10.0.0.2", "10.0.0.3"),
        (false, "fd00::5,10.0.0.5", "10.0.0.6"),
    ] {
        let before = taken();
        // One download by `c` into `out`, which must hold file `f{mb}`.
        let fetch = |mut c: std::process::Command, out: &std::path::Path, what: &str, mb: usize| {
            if !cut {
                c.env("IOTH_CUT_THROUGH", "0");
            }
            let o = lab.run(c, Duration::from_secs(120));
            assert!(
                o.status.success(),
                "{what} f{mb} (cut-through {cut}): {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let want = sha256(&lab.path(&format!("www/f{mb}")));
            assert_eq!(sha256(out), want, "{what} f{mb}");
        };
        for mb in sizes {
            let o6 = lab.path(&format!("c6-{mb}-{cut}"));
            let mut c = lab.node(curl_ip, "curl");
            c.args(["-sSf", "-m", "60", "-o"])
                .arg(&o6)
                .arg(format!("http://[fd00::1]/f{mb}"));
            fetch(c, &o6, "curl -6", mb);
            let o4 = lab.path(&format!("w4-{mb}-{cut}"));
            let mut w = lab.node(wget_ip, "wget");
            w.args(["-q", "-T", "60", "-t", "1", "-O"])
                .arg(&o4)
                .arg(format!("http://10.0.0.1/f{mb}"));
            fetch(w, &o4, "wget -4", mb);
        }
        let after = taken();
        if cut {
            assert_eq!(after, before, "cut through: none through TCP");
        } else {
            assert!(
                after >= before + 6,
                "IOTH_CUT_THROUGH=0: through TCP: {before} -> {after}"
            );
        }
    }

    // 1 GiB over IPv6, streamed into sha256sum (not in quick mode).
    if std::env::var_os("IOTH_TEST_QUICK").is_none() {
        let big = lab.path("www/g1");
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "head -c 1073741824 /dev/urandom > {}",
                big.display()
            ))
            .status()
            .unwrap();
        assert!(o.success());
        set_mode(&big, 0o644);
        let want = sha256(&big);
        let mut c = lab.node("fd00::4", "sh");
        c.args([
            "-c",
            "curl -sSf -m 600 http://[fd00::1]/g1 | sha256sum | cut -d' ' -f1",
        ]);
        let t = std::time::Instant::now();
        let o = lab.run(c, Duration::from_secs(900));
        let got = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert_eq!(
            got,
            want,
            "1 GiB over IPv6: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("1 GiB in {:?}", t.elapsed());
        let _ = std::fs::remove_file(&big);
    }

    // Both workers take connections: parallel clients until two pids show in the log.
    let workers = wait_for(Duration::from_secs(60), "two workers in access.log", || {
        let mut c = lab.node("fd00::2", "sh");
        c.args([
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do curl -s -o /dev/null http://[fd00::1]/ & done; wait",
        ]);
        lab.run(c, Duration::from_secs(30));
        let pids: BTreeSet<String> = lab
            .log("logs/access.log")
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        (pids.len() >= 2).then_some(pids)
    });
    eprintln!("workers seen: {workers:?}");

    // Reload, then the server still answers (new workers); then stop.
    let mut reload: Vec<&str> = base.to_vec();
    reload.extend(["-s", "reload"]);
    let o = lab.run(as_user(&lab, ip, &reload), Duration::from_secs(30));
    assert!(
        o.status.success(),
        "reload: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    wait_for(Duration::from_secs(30), "reconfigured", || {
        lab.log("logs/error.log")
            .contains("reconfiguring")
            .then_some(())
    });
    for url in ["http://10.0.0.1/", "http://[fd00::1]/"] {
        let o = lab.run(curl(url, "/dev/null"), Duration::from_secs(30));
        assert!(
            o.status.success(),
            "{url} after reload: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    nginx_stop(&lab, ip, &base);
}

/// nginx's `reuseport`: each worker listens on its own socket (`SO_REUSEPORT`) and the
/// kernel spreads connections over them by a hash of their addresses. So do the stack daemon
/// (a SYN through TCP) and the connect table (a connect cut through): 24 connections each
/// way, every body checked, and both workers serve some in each round (all 24 to one
/// worker by chance: 2 in 2^24).
#[test]
fn nginx_reuseport_spreads_connections_over_its_workers() {
    if nginx_bin().is_none() || !have("curl") {
        eprintln!("SKIP: nginx or curl missing");
        return;
    }
    let lab = nginx_lab("nginx-reuseport");
    let d = lab.dir.display().to_string();
    random_file(&lab.path("www/f"), 64 << 10);
    let want = sha256(&lab.path("www/f"));
    let args = nginx_conf(
        &lab,
        &format!(
            r#"  sendfile on; keepalive_timeout 5;
  log_format pids '$pid $remote_addr "$request" $status';
  access_log {d}/logs/access.log pids;
  server {{ listen [::]:80 reuseport; listen 10.0.0.1:80 reuseport; root {d}/www; }}"#
        ),
    );
    let base: Vec<&str> = args.iter().map(String::as_str).collect();
    nginx_start(&lab, "fd00::1,10.0.0.1", &base, "http://[fd00::1]/f");
    let taken = || lab.node_counter("fd00::1", "tcp_accepted").unwrap_or(0);
    for (cut, ip, url) in [
        (true, "fd00::3", "http://[fd00::1]/f"),
        (false, "fd00::4", "http://[fd00::1]/f"),
        (true, "10.0.0.5", "http://10.0.0.1/f"),
        (false, "10.0.0.6", "http://10.0.0.1/f"),
    ] {
        let before_log = lab.log("logs/access.log").lines().count();
        let before = taken();
        // One curl, 24 downloads, each on a connection of its own.
        let mut c = lab.node(ip, "curl");
        if !cut {
            c.env("IOTH_CUT_THROUGH", "0");
        }
        c.args(["-sSf", "-m", "60", "-H", "Connection: close"]);
        let outs: Vec<_> = (0..24).map(|i| lab.path(&format!("o-{ip}-{i}"))).collect();
        for o in &outs {
            c.arg("-o").arg(o).arg(url);
        }
        let o = lab.run(c, Duration::from_secs(90));
        assert!(
            o.status.success(),
            "curl from {ip} (cut-through {cut}): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for o in &outs {
            assert_eq!(sha256(o), want, "{}", o.display());
        }
        let log = lab.log("logs/access.log");
        let pids: BTreeSet<&str> = log
            .lines()
            .skip(before_log)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(
            pids.len(),
            2,
            "from {ip} (cut-through {cut}): workers {pids:?}"
        );
        let after = taken();
        if cut {
            assert_eq!(after, before, "cut through: none through TCP");
        } else {
            assert!(after >= before + 24, "through TCP: {before} -> {after}");
        }
    }
    nginx_stop(&lab, "fd00::1,10.0.0.1", &base);
}
