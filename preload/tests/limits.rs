//! Limits and bad arguments (issue 11): a node that runs out of descriptors gets the
//! kernel's `EMFILE` for that call and nothing else breaks; the stack daemon raises its own
//! descriptor limit; bad pointers give `EFAULT`; an empty `IOTH_IP` is an error, never the
//! host's network.

mod harness;
use harness::*;
use std::path::PathBuf;
use std::time::Duration;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/limits")
        .join(name)
}

/// A python server node on fd00::1 port 7000 that sends `file` to every connection.
fn file_server(lab: &mut Lab, file: &std::path::Path) {
    let mut srv = lab.node("fd00::1", "python3");
    srv.arg(script("serve.py")).arg("7000").arg(file);
    lab.spawn(srv, "server.log");
    wait_for(Duration::from_secs(30), "the server answers", || {
        let mut c = lab.node("fd00::9", "python3");
        c.args([
            "-c",
            "import socket; socket.create_connection(('fd00::1', 7000), timeout=3).close()",
        ]);
        lab.run(c, Duration::from_secs(10))
            .status
            .success()
            .then_some(())
    });
}

/// python under `ulimit -n 64` (soft and hard: its stack daemon, started by the shim,
/// inherits the same limit) opens TCP sockets until `EMFILE`, closes them, and downloads
/// again, three rounds: every download arrives whole, and no call fails with anything but
/// `EMFILE` (before: every later `socket`/`connect` failed with `EPROTO`).
#[test]
fn python_out_of_descriptors_connects_again() {
    if !have("python3") {
        eprintln!("SKIP: python3 is not installed");
        return;
    }
    let mut lab = Lab::new("emfile");
    let file = lab.path("blob");
    random_file(&file, 1 << 20);
    let want = sha256(&file);
    file_server(&mut lab, &file);
    let mut c = lab.node("fd00::2", "sh");
    c.arg("-c")
        .arg("ulimit -n 64 && exec python3 \"$@\"")
        .arg("sh")
        .arg(script("emfile.py"))
        .args(["fd00::1", "7000", &want]);
    let o = lab.run(c, Duration::from_secs(120));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("ok"),
        "stdout: {out}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}
