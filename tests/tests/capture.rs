//! Live capture (issue 15): `ioth-switch ctl capture [PORT] [--count N]` streams pcap while
//! it runs, and no byte escapes it: the ports it watches lose their shortcuts and get none
//! (so no cut-through either) until it ends. A curl download from an nginx node, captured
//! by two captures at once (one port, every port), is rebuilt from each pcap (sha256).

use ioth_e2e::*;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

/// `ioth-switch ctl --sock SW capture ARGS…` writing to `out`, once the capture runs (its
/// pcap header is out).
fn capture(sw: &Path, args: &str, out: &Path) -> Child {
    let c = switch_ctl_command(sw, &format!("capture {args}"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), "the capture's pcap header", || {
        (std::fs::metadata(out).map_or(0, |m| m.len()) >= 24).then_some(())
    });
    c
}

/// Wait until the switch has made a shortcut (`what` says why one is expected).
fn a_shortcut(sw: &Path, what: &str) {
    wait_for(Duration::from_secs(10), what, || {
        switch_ctl(sw, "shortcut/print")
            .contains("Shortcut")
            .then_some(())
    });
}

/// Frames in a pcap file (records after the 24-byte header).
fn records(pcap: &[u8]) -> usize {
    let (mut off, mut n) = (24, 0);
    while off + 16 <= pcap.len() {
        let incl = u32::from_le_bytes(pcap[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16 + incl;
        n += usize::from(off <= pcap.len());
    }
    n
}

#[test]
fn live_captures_hold_a_whole_download_through_shortcut_capable_ports() {
    if nginx_bin().is_none() || !have("curl") {
        return skip("nginx or curl missing");
    }
    let tmp = TempDir::new("capture");
    let sw = tmp.join("sw");
    let rundir = tmp.join("run");
    let _switch = ioth_switch(&sw, &[]);
    let web = node(&sw, "fd00::51/64", &tmp.join("web.ctl"));
    let cli = node(&sw, "fd00::52/64", &tmp.join("cli.ctl"));
    let www = tmp.join("www");
    std::fs::create_dir_all(&www).unwrap();
    random_file(&www.join("f"), 4 << 20);
    let want = sha256_file(&www.join("f"));
    let _nginx = nginx_on(&web.ctl, &rundir, &tmp.join("ngx"), &www);
    let fetch = |out: &Path| {
        run_ok(
            on_node("curl", &cli.ctl, &rundir)
                .args(["-sS", "--max-time", "60", "-o"])
                .arg(out)
                .arg("http://[fd00::51]/f"),
        );
    };
    // The two nodes talk: a shortcut comes, the path a capture must take away.
    fetch(&tmp.join("warm"));
    a_shortcut(&sw, "a shortcut between the nodes");

    // Bad input: a clear error, no stream.
    switch_ctl_fails(&sw, "capture 99", "no port 99");

    // Two captures at once: the client's port, and every port.
    let (one, all) = (tmp.join("one.pcap"), tmp.join("all.pcap"));
    let mut caps = [capture(&sw, "fd00::52", &one), capture(&sw, "", &all)];
    assert!(
        switch_ctl(&sw, "shortcut/print").trim().is_empty(),
        "the captured ports keep no shortcut"
    );
    let got = tmp.join("got");
    fetch(&got);
    assert_eq!(sha256_file(&got), want);
    assert!(
        switch_ctl(&sw, "shortcut/print").trim().is_empty(),
        "and get none while the capture runs"
    );
    // The whole response is in each capture (flushed as it goes; the last ACKs may trail).
    for f in [&one, &all] {
        wait_for(
            Duration::from_secs(10),
            "the download in the capture",
            || {
                let stream = tcp_stream_from(&std::fs::read(f).unwrap_or_default(), 80);
                let at = stream.windows(4).position(|w| w == b"\r\n\r\n")?;
                (sha256_bytes(&stream[at + 4..]) == want).then_some(())
            },
        );
    }
    for c in caps.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }

    // `--count N` ends by itself after N frames.
    let few = tmp.join("few.pcap");
    let mut c = capture(&sw, "fd00::52 --count 5", &few);
    fetch(&tmp.join("again"));
    let st = wait_for(Duration::from_secs(10), "capture --count 5 to end", || {
        c.try_wait().unwrap()
    });
    assert!(st.success());
    assert_eq!(records(&std::fs::read(&few).unwrap()), 5);

    // With no capture left, the nodes get a shortcut again.
    fetch(&tmp.join("after"));
    a_shortcut(&sw, "a shortcut once the captures ended");
}
