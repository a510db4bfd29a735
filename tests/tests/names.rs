//! Names on the virtual network: a real DNS server (dnsmasq) as a node, `curl`/`wget` and
//! `getent` resolving through it by name (`IOTH_DNS`), a node's own name (`IOTH_NAME`)
//! found by other nodes over multicast DNS, `/etc/hosts`, and unknown names failing
//! without asking the host's DNS.

use ioth_e2e::*;
use std::time::Duration;

fn nginx_bin() -> Option<String> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|s| s.to_string())
}

#[test]
fn dnsmasq_node_serves_names_to_curl_wget_getent() {
    let Some(nginx) = nginx_bin() else {
        return skip("nginx missing");
    };
    if !have("dnsmasq") || !have("curl") || !have("wget") || !have("getent") {
        return skip("dnsmasq (dnsmasq-base), curl, wget or getent missing");
    }
    let mut lab = NodeLab::new("names", None);
    let dns = lab.node("fd00::80,10.0.0.80");
    let web = lab.node("fd00::81,10.0.0.81");
    lab.dnsmasq(&dns, &["web1,fd00::81,10.0.0.81"]);
    let d = lab.dir.path().display().to_string();
    for sub in ["www", "logs", "tmp"] {
        std::fs::create_dir_all(lab.dir.join(sub)).unwrap();
    }
    std::fs::write(lab.dir.join("www/index.html"), "hello by name\n").unwrap();
    let conf = format!(
        r#"daemon off; master_process off; pid {d}/logs/nginx.pid; error_log stderr;
events {{ worker_connections 64; }}
http {{ access_log off;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fcgi; uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  server {{ listen [::]:80; listen 80; root {d}/www; }} }}
"#
    );
    std::fs::write(lab.dir.join("nginx.conf"), conf).unwrap();
    let mut n = lab.on(&web, &nginx);
    n.args(["-p", &d, "-c", &format!("{d}/nginx.conf")]);
    lab.spawn(n, "nginx.log");

    let client = |lab: &NodeLab, prog: &str| {
        let mut c = lab.at("fd00::82,10.0.0.82", prog);
        c.env("IOTH_DNS", "fd00::80");
        c
    };
    // getent ahosts: getaddrinfo through the virtual DNS.
    let mut g = client(&lab, "getent");
    g.args(["ahosts", "web1"]);
    let o = run_for(30, g);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success() && out.contains("fd00::81") && out.contains("10.0.0.81"),
        "getent ahosts web1: {}\ndnsmasq: {}",
        text(&o),
        lab.log("dnsmasq.log")
    );
    assert!(
        lab.log("dnsmasq.log").contains("web1"),
        "the query reached dnsmasq"
    );
    // gethostbyname (getent hosts) and reverse (getnameinfo/gethostbyaddr via PTR).
    let mut g = client(&lab, "getent");
    g.args(["hosts", "10.0.0.81"]);
    let o = run_for(30, g);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("web1"),
        "getent hosts 10.0.0.81: {}",
        text(&o)
    );
    // curl and wget by name, once nginx answers.
    wait_for(Duration::from_secs(30), "curl http://web1/", || {
        let mut c = client(&lab, "curl");
        c.args(["-sS", "-m", "10", "http://web1/"]);
        let o = run_for(20, c);
        String::from_utf8_lossy(&o.stdout)
            .contains("hello by name")
            .then_some(())
    });
    let mut w = client(&lab, "wget");
    w.args(["-q", "-O", "-", "-T", "10", "-t", "1", "http://web1/"]);
    let o = run_for(30, w);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("hello by name"),
        "wget http://web1/: {}\nnginx: {}",
        text(&o),
        lab.log("nginx.log")
    );
    // Unknown names fail (asked of the virtual DNS, never of the host's).
    let mut g = client(&lab, "getent");
    g.args(["hosts", "no-such-host"]);
    let o = run_for(30, g);
    assert_eq!(o.status.code(), Some(2), "unknown name: {}", text(&o));
    assert!(lab.log("dnsmasq.log").contains("no-such-host"));
    let mut c = client(&lab, "curl");
    c.args(["-sS", "-m", "10", "http://no-such-host/"]);
    let o = run_for(30, c);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("resolve"),
        "curl unknown host: {}",
        text(&o)
    );
    // /etc/hosts still answers first (localhost is in every /etc/hosts).
    let mut g = client(&lab, "getent");
    g.args(["ahosts", "localhost"]);
    let o = run_for(30, g);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("127.0.0.1"),
        "localhost: {}",
        text(&o)
    );
    // Numeric hosts and services stay glibc's.
    let mut g = client(&lab, "getent");
    g.args(["ahosts", "fd00::81"]);
    let o = run_for(30, g);
    assert!(o.status.success(), "numeric: {}", text(&o));
}

#[test]
fn ioth_name_is_found_by_other_nodes() {
    if !have("python3") || !have("curl") || !have("getent") {
        return skip("python3, curl or getent missing");
    }
    let mut lab = NodeLab::new("mdns", None);
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "served by files\n").unwrap();
    let mut s = lab.at("fd00::91,10.0.0.91", "python3");
    s.env("IOTH_NAME", "files")
        .args(["-m", "http.server", "8000", "--bind", "::", "--directory"])
        .arg(&www);
    lab.spawn(s, "http.log");
    // No IOTH_DNS: the name comes from the node that has it, over multicast DNS.
    for (name, want) in [("files", "fd00::91"), ("files.local", "10.0.0.91")] {
        wait_for(Duration::from_secs(30), "mDNS answer", || {
            let mut g = lab.at("fd00::92,10.0.0.92", "getent");
            g.args(["ahosts", name]);
            let o = run_for(20, g);
            String::from_utf8_lossy(&o.stdout)
                .contains(want)
                .then_some(())
        });
    }
    wait_for(Duration::from_secs(30), "curl http://files:8000/", || {
        let mut c = lab.at("fd00::92,10.0.0.92", "curl");
        c.args(["-sS", "-m", "10", "http://files:8000/hello.txt"]);
        let o = run_for(20, c);
        String::from_utf8_lossy(&o.stdout)
            .contains("served by files")
            .then_some(())
    });
    // Without IOTH_DNS, an unknown name is EAI_NONAME after the mDNS wait.
    let mut g = lab.at("fd00::92,10.0.0.92", "getent");
    g.args(["hosts", "nobody-has-this-name"]);
    let o = run_for(30, g);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// Resolvers that are not glibc's (issue 16): bind9's `dig`, `nslookup` and `host` send
/// through libuv (`syscall(SYS_sendmmsg)`, which the shim's `syscall` hook serves) and read
/// `/etc/resolv.conf` themselves, which shows the node's DNS servers as a node opens it.
#[test]
fn dig_nslookup_and_host_ask_the_nodes_dns_server() {
    if !have("dnsmasq") || !have("dig") || !have("nslookup") || !have("host") {
        return skip("dnsmasq (dnsmasq-base), dig, nslookup or host (bind9-dnsutils) missing");
    }
    let mut lab = NodeLab::new("dig", None);
    let dns = lab.node("fd00::90,10.0.0.90");
    lab.dnsmasq(&dns, &["web9.lan,fd00::99,10.0.0.99"]);
    let client = |lab: &NodeLab, prog: &str, args: &[&str]| {
        let mut c = lab.at("fd00::92,10.0.0.92", prog);
        c.env("IOTH_DNS", "10.0.0.90,fd00::90").args(args);
        let o = run_for(30, c);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success(),
            "{prog} {args:?}: {}\ndnsmasq: {}",
            text(&o),
            lab.log("dnsmasq.log")
        );
        out
    };
    // The node's resolv.conf, as any program that opens it sees it.
    let conf = client(&lab, "cat", &["/etc/resolv.conf"]);
    assert!(
        conf.contains("nameserver 10.0.0.90\n") && conf.contains("nameserver fd00::90\n"),
        "{conf}"
    );
    let short = ["+short", "+time=2", "+tries=2"];
    let dig = |args: &[&str]| client(&lab, "dig", &[&short[..], args].concat());
    assert_eq!(dig(&["@fd00::90", "web9.lan", "AAAA"]).trim(), "fd00::99");
    assert_eq!(dig(&["@10.0.0.90", "web9.lan", "A"]).trim(), "10.0.0.99");
    // No server named: the one in the node's resolv.conf.
    assert_eq!(dig(&["web9.lan", "A"]).trim(), "10.0.0.99");
    let ns = client(&lab, "nslookup", &["web9.lan"]);
    assert!(ns.contains("10.0.0.99") && ns.contains("fd00::99"), "{ns}");
    let h = client(&lab, "host", &["-t", "A", "web9.lan"]);
    assert!(h.contains("web9.lan has address 10.0.0.99"), "{h}");
}
