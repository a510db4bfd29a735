//! python3 -m http.server as a node (fd00::1 and 10.0.0.1) serving a 20 MiB random file;
//! curl (IPv6) and wget (IPv4) as two other nodes download it; the sha256 must match.

mod harness;
use harness::*;
use std::time::Duration;

#[test]
fn python_server_curl_and_wget_clients() {
    for p in ["python3", "curl", "wget", "sha256sum"] {
        if !have(p) {
            eprintln!("SKIP: {p} is not installed");
            return;
        }
    }
    let mut lab = Lab::new("py");
    let www = lab.path("www");
    std::fs::create_dir_all(&www).unwrap();
    random_file(&www.join("big"), 20 << 20);
    let want = sha256(&www.join("big"));

    let mut srv = lab.node("fd00::1,10.0.0.1", "python3");
    srv.args(["-m", "http.server", "80", "--bind", "::", "--directory"])
        .arg(&www);
    lab.spawn(srv, "server.log");

    // Ready when a client node can fetch something.
    wait_for(Duration::from_secs(30), "http.server answers", || {
        let mut c = lab.node("fd00::2", "curl");
        c.args(["-sf", "-o", "/dev/null", "-m", "3", "http://[fd00::1]/"]);
        lab.run(c, Duration::from_secs(10))
            .status
            .success()
            .then_some(())
    });

    let out6 = lab.path("curl6.bin");
    let mut c = lab.node("fd00::2", "curl");
    c.args(["-sSf", "-m", "60", "-o"])
        .arg(&out6)
        .arg("http://[fd00::1]/big");
    let o = lab.run(c, Duration::from_secs(90));
    assert!(
        o.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(sha256(&out6), want, "curl over IPv6");

    let out4 = lab.path("wget4.bin");
    let mut w = lab.node("10.0.0.3", "wget");
    w.args(["-q", "-T", "60", "-t", "1", "-O"])
        .arg(&out4)
        .arg("http://10.0.0.1/big");
    let o = lab.run(w, Duration::from_secs(90));
    assert!(
        o.status.success(),
        "wget: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(sha256(&out4), want, "wget over IPv4");

    let log = lab.log("server.log");
    assert!(
        log.contains("\"GET /big HTTP/1.1\" 200"),
        "server log: {log}"
    );
}
