//! The switch seen from outside (issue 15): `--http` serves the status page, `/api/ports`
//! and `/metrics`; Prometheus's own `promtool check metrics` accepts the metrics, and the
//! byte counters grow by at least a 10 MiB transfer that crossed the switch. A second switch
//! on the same address fails with a clear error; a client that goes mid-request does not
//! stop the switch.

use ioth_e2e::*;
use std::io::{Read, Write};
use std::process::Command;

/// `GET path` on the status server: (status code, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let code = r
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = r.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    (code, body)
}

/// The status server's address, as `showinfo` gives it.
fn http_addr(sw: &std::path::Path) -> String {
    let info = switch_ctl(sw, "showinfo");
    info.lines()
        .find_map(|l| l.strip_prefix("http http://"))
        .and_then(|a| a.strip_suffix('/'))
        .unwrap_or_else(|| panic!("no http address in showinfo: {info}"))
        .to_string()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut d = vec![0u8; n];
    ioth_common::sys::getrandom(&mut d).unwrap();
    d
}

/// Prometheus's own checker accepts `metrics` (skipped, and said, without it).
fn promtool_accepts(metrics: &str) {
    if !have("promtool") {
        return skip("promtool (Debian's prometheus) missing: the exposition is not checked by it");
    }
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "promtool check metrics: {}", text(&o));
}

/// The sum of a metric's samples whose labels contain `with`.
fn sum(metrics: &str, name: &str, with: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(with))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn status_page_api_and_metrics_show_the_lan() {
    let tmp = TempDir::new("status");
    let sw = tmp.join("sw");
    // No shortcuts: the transfer's frames cross the switch and its counters.
    let _switch = ioth_switch(&sw, &["--http", "127.0.0.1:0", "--no-shortcuts"]);
    let addr = http_addr(&sw);
    let a = node(&sw, "fd00::61/64", &tmp.join("a.ctl"));
    let b = node(&sw, "fd00::62/64", &tmp.join("b.ctl"));

    let (code, page) = get(&addr, "/");
    assert_eq!(code, 200);
    assert!(
        page.contains("<html") && page.contains("/api/ports"),
        "{page}"
    );
    assert_eq!(get(&addr, "/nope").0, 404);

    // Both nodes are on the page's data, with their addresses.
    let ports = wait_for(
        std::time::Duration::from_secs(5),
        "both nodes in /api/ports",
        || {
            let (_, j) = get(&addr, "/api/ports");
            (j.contains("ioth-stackd fd00::61") && j.contains("ioth-stackd fd00::62")).then_some(j)
        },
    );
    assert!(ports.contains("\"kind\":\"native\""), "{ports}");

    let before = get(&addr, "/metrics").1;
    let sent = "node=\"fd00::61\"";
    let data = random_bytes(10 << 20);
    checked_stream(&tmp, (&a.ctl, &b.ctl), ("fd00::62", 5070), &data, || {});
    let grown = wait_for(
        std::time::Duration::from_secs(5),
        "the counters to grow",
        || {
            let m = get(&addr, "/metrics").1;
            let d = sum(&m, "ioth_switch_port_received_bytes_total", sent)
                - sum(&before, "ioth_switch_port_received_bytes_total", sent);
            (d >= data.len() as f64).then_some(m)
        },
    );
    assert!(
        sum(&grown, "ioth_switch_port_sent_bytes_total", "fd00::62")
            - sum(&before, "ioth_switch_port_sent_bytes_total", "fd00::62")
            >= data.len() as f64
    );

    // Prometheus's checker accepts the exposition.
    promtool_accepts(&grown);

    // A client that sends half a request and goes, then one that never sends: the switch
    // still switches and still answers.
    {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /metr").unwrap();
    }
    let _idle = std::net::TcpStream::connect(&addr).unwrap();
    let mut c = Command::new(bin("iothctl"));
    c.arg("--ctl")
        .arg(&a.ctl)
        .args(["ping", "-c", "2", "fd00::62"]);
    assert!(run_for(20, c).status.success());
    assert_eq!(get(&addr, "/api/ports").0, 200);

    // The same address for a second switch: a clear error.
    let o = run(Command::new(bin("ioth-switch"))
        .arg("--sock")
        .arg(tmp.join("sw2"))
        .args(["--http", &addr]));
    assert!(
        !o.status.success() && text(&o).contains(&format!("--http {addr}")),
        "{}",
        text(&o)
    );
}

/// The page as headless Chromium renders it, after its script has fetched `/api/ports`.
fn rendered(url: &str) -> String {
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=3000",
        "--dump-dom",
        url,
    ]);
    String::from_utf8_lossy(&run_for(60, c).stdout).into_owned()
}

/// The sum of the numbers in the rendered table's cells of class `class`.
fn column(dom: &str, class: &str) -> u64 {
    dom.split(&format!("class=\"num {class}\">"))
        .skip(1)
        .filter_map(|c| c.split('<').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn the_status_page_in_a_browser_shows_every_node_and_counts_traffic() {
    if !have("chromium") || nginx_bin().is_none() || !have("curl") {
        return skip("chromium, nginx or curl missing");
    }
    let tmp = TempDir::new("status-page");
    let sw = tmp.join("sw");
    let rundir = tmp.join("run");
    // No shortcuts: the downloads cross the switch, so its counters move.
    let _switch = ioth_switch(&sw, &["--http", "127.0.0.1:0", "--no-shortcuts"]);
    let info = switch_ctl(&sw, "showinfo");
    let url = info
        .lines()
        .find_map(|l| l.strip_prefix("http "))
        .unwrap_or_else(|| panic!("no http address in showinfo: {info}"))
        .to_string();
    let www = tmp.join("www");
    std::fs::create_dir_all(&www).unwrap();
    random_file(&www.join("f"), 2 << 20);
    let mut nodes = Vec::new();
    let mut nginxes = Vec::new();
    for (i, ip) in ["fd00::81", "fd00::82"].iter().enumerate() {
        let n = node(&sw, &format!("{ip}/64"), &tmp.join(&format!("web{i}.ctl")));
        nginxes.push(nginx_on(
            &n.ctl,
            &rundir,
            &tmp.join(&format!("ngx{i}")),
            &www,
        ));
        nodes.push(n);
    }
    let cli = node(&sw, "fd00::83/64", &tmp.join("cli.ctl"));
    let dom = rendered(&url);
    for ip in ["fd00::81", "fd00::82", "fd00::83"] {
        assert!(
            dom.contains(&format!("ioth-stackd {ip} ")),
            "{ip} not on the page:\n{dom}"
        );
    }
    let before = column(&dom, "rx-bytes");
    for ip in ["fd00::81", "fd00::82"] {
        let got = tmp.join("got");
        run_ok(
            on_node("curl", &cli.ctl, &rundir)
                .args(["-sS", "--max-time", "30", "-o"])
                .arg(&got)
                .arg(format!("http://[{ip}]/f")),
        );
        assert_eq!(sha256_file(&got), sha256_file(&www.join("f")));
    }
    // The page refreshes itself from the switch's counters.
    let after = wait_for(
        std::time::Duration::from_secs(20),
        "the page's counters",
        || {
            let n = column(&rendered(&url), "rx-bytes");
            (n >= before + (4 << 20)).then_some(n)
        },
    );
    eprintln!("received bytes on the page: {before} then {after}");
}

/// The port number the switch gave the node whose description contains `who`.
fn port_of(metrics: &str, who: &str) -> String {
    metrics
        .lines()
        .filter(|l| l.starts_with("ioth_switch_port_received_bytes_total{") && l.contains(who))
        .find_map(|l| Some(l.split("port=\"").nth(1)?.split('"').next()?.to_string()))
        .unwrap_or_else(|| panic!("no port for {who} in the metrics: {metrics}"))
}

/// The stack daemons report themselves to the switch: bytes and frames sent over each
/// shortcut (which the switch never sees), TCP sockets by state, retransmissions and
/// timeouts, resident memory; and `--http-node` serves the same page on the virtual LAN from
/// a node of the switch's own, by address and by its mDNS name, supervised.
#[test]
fn nodes_report_themselves_and_the_page_is_on_the_lan() {
    let tmp = TempDir::new("status-node");
    let sw = tmp.join("sw");
    // No cut-through: the transfer goes from stack to stack over their shortcut.
    let _switch = ioth_switch(
        &sw,
        &[
            "--http",
            "127.0.0.1:0",
            "--no-cut-through",
            "--http-node",
            "fd00::80,10.7.0.80",
            "--http-node-name",
            "lanstatus",
            "--seed",
            "7",
        ],
    );
    let addr = http_addr(&sw);
    let a = node(&sw, "fd00::71/64", &tmp.join("a.ctl"));
    let b = node(&sw, "fd00::72/64", &tmp.join("b.ctl"));
    let data = random_bytes(10 << 20);
    checked_stream(&tmp, (&a.ctl, &b.ctl), ("fd00::72", 5071), &data, || {});
    // The page is rendered every 200 ms: the transfer may be over before the nodes show.
    let m = wait_for(
        std::time::Duration::from_secs(5),
        "both nodes in /metrics",
        || {
            let m = get(&addr, "/metrics").1;
            (m.contains("node=\"fd00::71\"") && m.contains("node=\"fd00::72\"")).then_some(m)
        },
    );
    let (pa, pb) = (port_of(&m, "fd00::71"), port_of(&m, "fd00::72"));
    let over = format!("from_port=\"{pa}\",to_port=\"{pb}\"");
    let m = wait_for(
        std::time::Duration::from_secs(5),
        "the shortcut's bytes in /metrics",
        || {
            let m = get(&addr, "/metrics").1;
            (sum(&m, "ioth_switch_shortcut_sent_bytes_total", &over) >= data.len() as f64)
                .then_some(m)
        },
    );
    assert!(sum(&m, "ioth_switch_shortcut_sent_frames_total", &over) >= 160.0);
    // The switch itself saw almost none of it.
    assert!(
        sum(&m, "ioth_switch_port_received_bytes_total", "fd00::71") < (1 << 20) as f64,
        "{m}"
    );
    assert!(sum(&m, "ioth_node_resident_memory_bytes", "fd00::71") > 1e6);
    assert_eq!(
        sum(&m, "ioth_node_tcp_retransmitted_segments_total", "fd00::71"),
        0.0,
        "a clean transfer retransmits nothing"
    );

    // A listener shows in the node's figures; loss on the way to the receiver makes the
    // sender retransmit (the impairment takes the shortcut away: through the switch).
    let out = tmp.join("listening");
    let mut l = iothctl_listen(&b.ctl, "::", 5099, &out);
    wait_for(
        std::time::Duration::from_secs(5),
        "the listener in /metrics",
        || {
            let m = get(&addr, "/metrics").1;
            (sum(&m, "ioth_node_tcp_connections", "fd00::72") > 0.0
                && m.lines().any(|x| {
                    x.starts_with("ioth_node_tcp_connections{")
                        && x.contains("fd00::72")
                        && x.contains("state=\"listen\"")
                        && !x.ends_with(" 0")
                }))
            .then_some(())
        },
    );
    let _ = l.kill();
    let _ = l.wait();
    switch_ctl(&sw, &format!("impair {pb} loss=10"));
    checked_stream(
        &tmp,
        (&a.ctl, &b.ctl),
        ("fd00::72", 5072),
        &data[..8 << 20],
        || {},
    );
    let m = wait_for(
        std::time::Duration::from_secs(5),
        "retransmissions in /metrics",
        || {
            let m = get(&addr, "/metrics").1;
            (sum(&m, "ioth_node_tcp_retransmitted_segments_total", "fd00::71") > 0.0).then_some(m)
        },
    );
    assert!(
        sum(&m, "ioth_node_tcp_timeouts_total", "fd00::71")
            + sum(&m, "ioth_node_tcp_fast_retransmits_total", "fd00::71")
            > 0.0,
        "{m}"
    );
    promtool_accepts(&m);

    // The page on the LAN: a curl node reaches the status node by address and by name.
    let curl = |url: &str, ip: &str| {
        let mut c = as_node("curl", &sw, &tmp.join("run"), ip);
        c.args(["-sS", "--max-time", "10", url]);
        let o = run_for(30, c);
        assert!(o.status.success(), "curl {url}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let page = curl("http://[fd00::80]/", "fd00::73/64");
    assert!(
        page.contains("<html") && page.contains("/api/ports"),
        "{page}"
    );
    let ports = curl("http://10.7.0.80/api/ports", "10.7.0.73/24");
    assert!(
        ports.contains("\"description\":\"ioth-stackd fd00::71")
            && ports.contains("\"description\":\"ioth-stackd lanstatus"),
        "{ports}"
    );
    let metrics = curl("http://lanstatus/metrics", "fd00::74/64");
    assert!(
        metrics.contains("ioth_switch_shortcut_sent_bytes_total{"),
        "{metrics}"
    );

    // Killed, it runs again, and answers again.
    let pid_of = || {
        switch_ctl(&sw, "showinfo")
            .lines()
            .find_map(|l| l.strip_prefix("http node "))
            .and_then(|l| {
                l.split(" pid ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<i32>()
                    .ok()
            })
    };
    let first = pid_of().expect("the status node's pid in showinfo");
    let _ = Command::new("kill")
        .args(["-9", &first.to_string()])
        .status();
    wait_for(
        std::time::Duration::from_secs(10),
        "the status node to run again",
        || pid_of().filter(|p| *p != first),
    );
    let again = curl("http://[fd00::80]/api/ports", "fd00::73/64");
    assert!(again.contains("\"ports\""), "{again}");
}
