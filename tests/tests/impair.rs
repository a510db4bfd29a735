//! Impaired links (issue 14): each impairment the switch's console sets does what it says,
//! measured by real programs on the nodes: Debian's `ping` through `iothrun` for delay,
//! jitter, loss, duplication and reordering, `curl` from an nginx node for the rate, and a
//! partition that a TCP download survives (sha256). Seeded (`--seed`, `seed=`) and bounded.

use ioth_e2e::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `ping` as a process of the node at `ctl` (through `iothrun`: Debian's ping has
/// `cap_net_raw`, so the loader would ignore `LD_PRELOAD`).
fn ping(ctl: &Path, rundir: &Path, args: &[&str]) -> String {
    let mut c = Command::new(repo().join("scripts/iothrun"));
    c.arg("--stack")
        .arg(ctl)
        .arg("--")
        .arg("ping")
        .args(args)
        .env("IOTH_RUNDIR", rundir)
        .env_remove("IOTH_IP");
    text(&run_for(120, c))
}

/// The round-trip times (ms) of the replies in ping's output, duplicates included.
fn rtts(out: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|l| l.split(" time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect()
}

/// `(transmitted, received, duplicates)` from ping's summary.
fn summary(out: &str) -> (u32, u32, u32) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary in: {out}"));
    let num = |what: &str| -> u32 {
        line.split(',')
            .find(|p| p.contains(what))
            .and_then(|p| {
                p.trim()
                    .trim_start_matches('+')
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    (num("transmitted"), num("received"), num("duplicates"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// A counter from the `impair PORT` answer (`frames N sent N lost N …`).
fn impair_count(sw: &Path, port: &str, what: &str) -> u64 {
    let t = switch_ctl(sw, &format!("impair {port}"));
    let words: Vec<&str> = t.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == what)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or_else(|| panic!("no {what} in: {t}"))
}

#[test]
fn each_impairment_does_what_it_says() {
    if !have("ping") {
        return skip("ping missing");
    }
    let tmp = TempDir::new("impair");
    let sw = tmp.join("sw");
    let rundir = tmp.join("run");
    let _switch = ioth_switch(&sw, &["--seed", "1"]);
    let a = node(&sw, "fd00::1/64", &tmp.join("a.ctl"));
    let _b = node(&sw, "fd00::2/64", &tmp.join("b.ctl"));
    let c = node(&sw, "fd00::3/64", &tmp.join("c.ctl"));
    let out = ping(&a.ctl, &rundir, &["-c", "3", "-i", "0.05", "fd00::2"]);
    assert_eq!(summary(&out).1, 3, "unimpaired: {out}");

    // Bad input: a clear error, nothing changed.
    switch_ctl_fails(&sw, "impair 99 delay=1", "no port 99");
    switch_ctl_fails(&sw, "impair fd00::2 loss=150", "is not a percentage");
    switch_ctl_fails(&sw, "impair fd00::2 reorder=5", "reorder needs a delay");
    switch_ctl_fails(&sw, "partition fd00::1,fd00::2 fd00::2", "in two groups");
    assert!(switch_ctl(&sw, "impair fd00::2").contains("none"));

    // Delay, on the frames to fd00::2 only: every round trip takes it once.
    switch_ctl(&sw, "impair fd00::2 delay=40");
    let out = ping(&a.ctl, &rundir, &["-c", "15", "-i", "0.05", "fd00::2"]);
    let mut t = rtts(&out);
    assert_eq!(t.len(), 15, "{out}");
    let m = median(&mut t);
    assert!(
        t[0] >= 40.0 && (40.0..44.0).contains(&m),
        "delay 40 ms: {t:?}"
    );

    // Jitter: uniform in 40 ± 15 ms.
    switch_ctl(&sw, "impair fd00::2 delay=40 jitter=15 limit=5000");
    let out = ping(&a.ctl, &rundir, &["-c", "60", "-i", "0.02", "fd00::2"]);
    let mut t = rtts(&out);
    assert_eq!(t.len(), 60, "{out}");
    median(&mut t);
    // Never early; late only by the scheduling of a busy machine (the 90th percentile).
    let (lo, p90) = (t[0], t[t.len() * 9 / 10]);
    assert!(lo >= 25.0 && p90 < 57.0 && p90 - lo > 15.0, "jitter: {t:?}");

    // Loss: 2,000 pings, the measured fraction within one point of the setting.
    switch_ctl(&sw, "impair fd00::2 loss=4 seed=11");
    let out = ping(
        &a.ctl,
        &rundir,
        &["-q", "-c", "2000", "-i", "0.002", "-W", "1", "fd00::2"],
    );
    let (tx, rx, _) = summary(&out);
    assert_eq!(tx, 2000, "{out}");
    let lost = 100.0 * f64::from(tx - rx) / f64::from(tx);
    assert!((3.0..=5.0).contains(&lost), "loss 4%: {lost}% lost\n{out}");
    assert!(impair_count(&sw, "fd00::2", "lost") >= u64::from(tx - rx));

    // Duplication: the receiver answers each copy, and ping counts the extra replies.
    switch_ctl(&sw, "impair fd00::2 dup=10 seed=12");
    let out = ping(
        &a.ctl,
        &rundir,
        &["-q", "-c", "500", "-i", "0.002", "fd00::2"],
    );
    let (tx, rx, dups) = summary(&out);
    assert_eq!((tx, rx), (500, 500), "{out}");
    let made = impair_count(&sw, "fd00::2", "duplicated");
    assert!(
        (25..=80).contains(&dups),
        "dup 10%: {dups} duplicates\n{out}"
    );
    assert!(
        u64::from(dups) <= made && made <= u64::from(dups) + 5,
        "ping saw {dups}, the switch made {made}"
    );

    // Reordering: a quarter of the requests skip the 20 ms delay and come back first.
    switch_ctl(&sw, "impair fd00::2 delay=20 reorder=25 seed=13");
    let out = ping(&a.ctl, &rundir, &["-c", "300", "-i", "0.005", "fd00::2"]);
    let t = rtts(&out);
    assert_eq!(t.len(), 300, "{out}");
    let early = t.iter().filter(|x| **x < 10.0).count();
    assert!(
        (50..=100).contains(&early),
        "reorder 25%: {early} of 300 early"
    );
    let counted = impair_count(&sw, "fd00::2", "reordered");
    assert!(early as u64 <= counted && counted <= early as u64 + 5);

    switch_ctl(&sw, "impair fd00::2 clear");
    let out = ping(&a.ctl, &rundir, &["-c", "5", "-i", "0.05", "fd00::2"]);
    let t = rtts(&out);
    assert!(
        t.len() >= 4 && t.iter().all(|x| *x < 10.0),
        "cleared: {out}"
    );

    // Between two ports: the frames from fd00::1 to fd00::2 only.
    switch_ctl(&sw, "impair fd00::2 fd00::1 delay=30");
    let out = ping(&a.ctl, &rundir, &["-c", "5", "-i", "0.05", "fd00::2"]);
    let t = rtts(&out);
    assert!(
        t.len() >= 4 && t.iter().all(|x| *x >= 30.0),
        "from fd00::1: {out}"
    );
    let out = ping(&c.ctl, &rundir, &["-c", "5", "-i", "0.05", "fd00::2"]);
    let t = rtts(&out);
    assert!(
        t.len() >= 4 && t.iter().all(|x| *x < 10.0),
        "from fd00::3: {out}"
    );
    assert!(switch_ctl(&sw, "impair").contains(" from "));
}

fn curl_on(ctl: &Path, rundir: &Path, url: &str, out: &Path, extra: &[&str]) -> Command {
    let mut c = on_node("curl", ctl, rundir);
    c.args(["-sS", "--max-time", "60", "-o"])
        .arg(out)
        .args(["-w", "%{speed_download}"])
        .args(extra)
        .arg(url);
    c
}

#[test]
fn the_rate_limit_holds_a_download_to_its_rate() {
    if nginx_bin().is_none() || !have("curl") {
        return skip("nginx or curl missing");
    }
    let tmp = TempDir::new("impair-rate");
    let sw = tmp.join("sw");
    let rundir = tmp.join("run");
    let _switch = ioth_switch(&sw, &[]);
    let web = node(&sw, "fd00::10/64", &tmp.join("web.ctl"));
    let cli = node(&sw, "fd00::11/64", &tmp.join("cli.ctl"));
    let www = tmp.join("www");
    std::fs::create_dir_all(&www).unwrap();
    random_file(&www.join("f"), 16 << 20);
    let _nginx = nginx_on(&web.ctl, &rundir, &tmp.join("ngx"), &www);
    // The download's data goes to the client's port: limit that to 40 Mbit/s.
    switch_ctl(&sw, "impair fd00::11 rate=40");
    let got = tmp.join("got");
    let o = run_ok(&mut curl_on(
        &cli.ctl,
        &rundir,
        "http://[fd00::10]/f",
        &got,
        &[],
    ));
    assert_eq!(sha256_file(&got), sha256_file(&www.join("f")));
    let speed: f64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let want = 40e6 / 8.0;
    assert!(
        (0.9 * want..1.1 * want).contains(&speed),
        "rate 40 Mbit/s: {:.1} Mbit/s",
        speed * 8.0 / 1e6
    );
    assert!(
        switch_ctl(&sw, "shortcut/print").trim().is_empty(),
        "an impaired port gets no shortcut"
    );
}

#[test]
fn a_partition_cuts_two_groups_heal_restores_them_and_tcp_survives() {
    if nginx_bin().is_none() || !have("curl") || !have("ping") {
        return skip("nginx, curl or ping missing");
    }
    let tmp = TempDir::new("impair-part");
    let sw = tmp.join("sw");
    let rundir = tmp.join("run");
    // A connection cut through before the partition would not cross the switch (cut-through
    // hands the sockets from application to application): keep TCP on the LAN.
    let _switch = ioth_switch(&sw, &["--no-cut-through"]);
    let web = node(&sw, "fd00::20/64", &tmp.join("web.ctl"));
    let cli = node(&sw, "fd00::21/64", &tmp.join("cli.ctl"));
    let other = node(&sw, "fd00::22/64", &tmp.join("other.ctl"));
    let reaches =
        |from: &Path, to: &str| summary(&ping(from, &rundir, &["-c", "1", "-W", "1", to])).1 == 1;
    assert!(reaches(&cli.ctl, "fd00::20") && reaches(&other.ctl, "fd00::21"));

    switch_ctl(&sw, "partition fd00::20 fd00::21,fd00::22");
    assert!(!reaches(&cli.ctl, "fd00::20") && !reaches(&other.ctl, "fd00::20"));
    assert!(reaches(&other.ctl, "fd00::21"), "inside one group");
    switch_ctl(&sw, "heal");
    assert!(reaches(&cli.ctl, "fd00::20"));

    // A download held to 20 Mbit/s on the wire (so that it is on the wire, not in socket
    // buffers) meets a 2-second partition and carries on.
    let www = tmp.join("www");
    std::fs::create_dir_all(&www).unwrap();
    random_file(&www.join("f"), 12 << 20);
    switch_ctl(&sw, "impair fd00::21 rate=20");
    let _nginx = nginx_on(&web.ctl, &rundir, &tmp.join("ngx"), &www);
    let got = tmp.join("got");
    let mut curl = curl_on(&cli.ctl, &rundir, "http://[fd00::20]/f", &got, &[])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "the download under way", || {
        (std::fs::metadata(&got).map_or(0, |m| m.len()) > 1 << 20).then_some(())
    });
    switch_ctl(&sw, "partition fd00::20 fd00::21");
    let cut = Instant::now();
    let at_cut = std::fs::metadata(&got).unwrap().len();
    // The partition lasts two seconds: that is what is tested, not a wait for something.
    std::thread::sleep(Duration::from_secs(2));
    let during = std::fs::metadata(&got).unwrap().len() - at_cut;
    let blocks = switch_ctl(&sw, "block");
    switch_ctl(&sw, "heal");
    eprintln!(
        "partition {:?}: {during} bytes arrived during it; {blocks}",
        cut.elapsed()
    );
    assert!(
        !blocks.contains("dropped 0\n"),
        "frames were dropped across the partition: {blocks}"
    );
    let st = curl.wait().unwrap();
    assert!(st.success(), "curl across the partition");
    assert_eq!(sha256_file(&got), sha256_file(&www.join("f")));
}
