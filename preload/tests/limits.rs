//! Limits and bad arguments (issue 11): a node that runs out of descriptors gets the
//! kernel's `EMFILE` for that call and nothing else breaks; the stack daemon raises its own
//! descriptor limit; bad pointers give `EFAULT`; an empty `IOTH_IP` is an error, never the
//! host's network.

mod harness;
use harness::*;
use std::path::PathBuf;
use std::process::Command;
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

/// nginx as a node, started under `ulimit -Sn 1024` with `worker_rlimit_nofile` raised (its
/// stack daemon, started by nginx, inherits the 1024), and a python node holding 2,000
/// connections to it at once: every one gets the file, whole (before: the daemon kept the
/// 1,024 limit and about half the clients got `ECONNRESET`).
#[test]
fn nginx_under_a_low_soft_limit_serves_2000_clients_at_once() {
    nginx_2000(false);
}

/// The same with a stack daemon that cannot raise its limit (hard limit 1,024, started by
/// hand): connections it has no descriptors for wait in the daemon until served ones free
/// theirs, as connections wait in a full SYN queue; none is lost. nginx's listener is a
/// kernel listener of its own: it sees no error (a listener made through the daemon gets
/// one error record per shortage, and its `accept` fails with `EMFILE` once).
#[test]
fn a_daemon_out_of_descriptors_keeps_connections_waiting() {
    nginx_2000(true);
}

fn nginx_2000(own_daemon: bool) {
    let Some(nginx) = nginx_bin() else {
        eprintln!("SKIP: nginx is not installed");
        return;
    };
    if !have("python3") {
        eprintln!("SKIP: python3 is not installed");
        return;
    }
    let mut lab = Lab::new("nofile");
    let d = lab.dir.display().to_string();
    for sub in ["www", "tmp", "logs"] {
        std::fs::create_dir_all(lab.path(sub)).unwrap();
        set_mode(&lab.path(sub), 0o777);
    }
    random_file(&lab.path("www/f"), 24 << 10);
    let want = sha256(&lab.path("www/f"));
    let conf = format!(
        r#"daemon on; master_process on; worker_processes 2; worker_rlimit_nofile 20000;
pid {d}/logs/nginx.pid; error_log {d}/logs/error.log info;
events {{ use epoll; worker_connections 4096; }}
http {{
  sendfile on; keepalive_timeout 5; access_log off;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fcgi; uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  server {{ listen [::]:80 backlog=4096; root {d}/www; }}
}}
"#
    );
    let conf_path = lab.path("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    set_mode(&conf_path, 0o644);
    let elog = format!("{d}/logs/error.log");
    // As nobody when we are root: the workers would be nobody anyway.
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0 && have("setpriv");
    let (rundir, user) = if root {
        (
            lab.user_rundir("nobody"),
            "setpriv --reuid=nobody --regid=nogroup --clear-groups ",
        )
    } else {
        (lab.path("run"), "")
    };
    let mut c = lab.node("fd00::1", "sh");
    c.env("IOTH_RUNDIR", &rundir);
    let mut limit = "ulimit -Sn 1024";
    if own_daemon {
        let ctl = rundir.join("srv.ctl");
        let mut dm = Command::new("sh");
        dm.arg("-c").arg(format!(
            // (No cut-through: the connections must go through this daemon's descriptors,
            // not straight to nginx.)
            "ulimit -n 1024 && exec {user}{} --ip fd00::1 --switch {} --ctl {} --persist \
             --no-cut-through",
            bin("ioth-stackd").display(),
            lab.path("sw").display(),
            ctl.display()
        ));
        lab.spawn(dm, "stackd.log");
        wait_for(Duration::from_secs(10), "the stack daemon", || {
            lab.log("stackd.log").contains("ctl=").then_some(())
        });
        c.env("IOTH_STACK", &ctl);
        limit = "ulimit -n 1024";
    }
    c.arg("-c").arg(format!(
        "{limit} && exec {user}{nginx} -p {d} -e {elog} -c {}",
        conf_path.display()
    ));
    let o = lab.run(c, Duration::from_secs(30));
    lab.nginx_started(&o);
    wait_for(Duration::from_secs(30), "nginx answers", || {
        let mut c = lab.node("fd00::9", "python3");
        c.args([
            "-c",
            "import socket; socket.create_connection(('fd00::1', 80), timeout=3).close()",
        ]);
        lab.run(c, Duration::from_secs(10))
            .status
            .success()
            .then_some(())
    });
    let mut c = lab.node("fd00::2", "python3");
    c.arg(script("many.py"))
        .args(["fd00::1", "80", "2000", "/f", &want]);
    let o = lab.run(c, Duration::from_secs(180));
    let out = String::from_utf8_lossy(&o.stdout);
    let errors = lab.log("logs/error.log");
    assert!(
        o.status.success() && out.contains("ok 2000"),
        "stdout: {out}\nstderr: {}\nnginx: {}",
        String::from_utf8_lossy(&o.stderr),
        errors
            .lines()
            .filter(|l| !l.contains("[notice]"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let shortages = errors.matches("Too many open files").count();
    assert_eq!(shortages, 0, "nginx's log: {errors}");
}

/// Bad pointers (address 1) to `sendto`, `connect`, `bind`, `getsockname`, `getpeername`,
/// `getsockopt`, `setsockopt` and `recvfrom` on virtual sockets give `EFAULT`, as the
/// kernel's do, and the sockets keep working (before: SIGSEGV inside the shim).
#[test]
fn bad_pointers_give_efault() {
    if !have("python3") {
        eprintln!("SKIP: python3 is not installed");
        return;
    }
    let lab = Lab::new("efault");
    let mut c = lab.node("fd00::2", "python3");
    c.arg(script("efault.py"));
    let o = lab.run(c, Duration::from_secs(60));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("ok"),
        "{:?}\nstdout: {out}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `IOTH_IP=''` (set but empty, as from a script whose variable did not expand): the program
/// was meant to be a node, so its INET sockets fail with one clear line on stderr, and
/// nothing reaches the host's network (a kernel listener on 127.0.0.1 sees no connection).
/// Before: the shim was silently off and the program connected through the kernel, which
/// the same program does here with `IOTH_IP` unset.
#[test]
fn empty_ioth_ip_is_an_error_not_the_host_network() {
    if !have("python3") {
        eprintln!("SKIP: python3 is not installed");
        return;
    }
    let lab = Lab::new("emptyip");
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port().to_string();
    let prog = "import socket, sys\n\
                try:\n    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n\
                except OSError as e:\n    print('failed', e.errno); sys.exit(3)\n\
                print('connected')\n";
    for ip in ["", " "] {
        let mut c = lab.node("fd00::2", "python3");
        c.env("IOTH_IP", ip).args(["-c", prog, &port]);
        let o = lab.run(c, Duration::from_secs(30));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(3),
            "IOTH_IP={ip:?}: {}{err}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert!(
            err.contains("libioth: IOTH_IP: set but empty"),
            "the reason, once: {err}"
        );
        assert_eq!(err.matches("libioth").count(), 1, "{err}");
        assert!(
            host.accept()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "IOTH_IP={ip:?} reached the host's network"
        );
    }
    // The same program without IOTH_IP is not a node: it uses the kernel (so the check above
    // can see a connection).
    let mut c = lab.node("fd00::2", "python3");
    c.env_remove("IOTH_IP").args(["-c", prog, &port]);
    let o = lab.run(c, Duration::from_secs(30));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(host.accept().is_ok(), "the kernel connection arrives");
}

/// A stack daemon killed with SIGKILL leaves its `node-*.ctl` behind; the next program of
/// that node starts a new daemon at the same path (the stale socket file never blocks it).
#[test]
fn a_stale_control_socket_never_blocks_a_new_daemon() {
    if !have("python3") {
        eprintln!("SKIP: python3 is not installed");
        return;
    }
    let mut lab = Lab::new("stale");
    let hold = "import socket, time\n\
                s = socket.socket(socket.AF_INET6)\n\
                s.bind(('::', 0))\n\
                print('bound', flush=True)\n\
                time.sleep(60)\n";
    let mut c = lab.node("fd00::2", "python3");
    c.args(["-c", hold]);
    let holder = lab.spawn(c, "hold.log");
    wait_for(Duration::from_secs(30), "a socket of the node", || {
        lab.log("hold.log").contains("bound").then_some(())
    });
    let run = lab.path("run").display().to_string();
    let daemon = wait_for(Duration::from_secs(10), "the node's daemon", || {
        pids_with(&run).into_iter().find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("ioth-stackd"))
        })
    });
    let ctl_files = || -> Vec<PathBuf> {
        std::fs::read_dir(lab.path("run"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".ctl"))
            .collect()
    };
    let before = ctl_files();
    assert_eq!(before.len(), 1, "{before:?}");
    // SAFETY: kill(2) on the daemon this test's node started, and on our own child.
    unsafe {
        libc::kill(daemon, libc::SIGKILL);
        libc::kill(holder as i32, libc::SIGKILL);
    }
    wait_for(Duration::from_secs(10), "the daemon gone", || {
        (!std::path::Path::new(&format!("/proc/{daemon}")).exists()
            || std::fs::read_to_string(format!("/proc/{daemon}/stat"))
                .is_ok_and(|s| s.contains(") Z ")))
        .then_some(())
    });
    assert_eq!(
        ctl_files(),
        before,
        "the stale control socket is left behind"
    );

    // The node again: a new daemon at the same path; a connection over its loopback works.
    let echo = "import socket\n\
                l = socket.socket(socket.AF_INET6); l.bind(('::1', 0)); l.listen(1)\n\
                c = socket.create_connection(l.getsockname()[:2], timeout=10)\n\
                a, _ = l.accept(); c.sendall(b'again'); c.close()\n\
                assert a.recv(16) == b'again'\n\
                print('ok', flush=True)\n";
    let mut c = lab.node("fd00::2", "python3");
    c.args(["-c", echo]);
    let o = lab.run(c, Duration::from_secs(30));
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ok"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(ctl_files(), before);
}
