//! A node belongs to its owner (issue 10): attacks by another local user that must fail,
//! and a daemon that stops answering must not freeze the program.
//!
//! The attacker runs as uid 65534 (`setpriv --reuid=65534 --regid=65534 --clear-groups`); no
//! user account is needed. The victim is the test's own user (root in CI).

mod harness;
use harness::*;
use ioth_e2e::{Daemon, info_field};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ATTACKER: &str = "65534";

/// `cmd` as the attacker.
fn as_attacker(prog: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={ATTACKER}"),
        &format!("--regid={ATTACKER}"),
        "--clear-groups",
        "--",
        prog,
    ]);
    c
}

/// `script` (python) as the attacker with `arg`, holding what it made until killed: the
/// process and the first line it printed.
fn attacker_holding(script: &str, arg: &str) -> (std::process::Child, String) {
    let mut c = as_attacker("/usr/bin/python3")
        .args(["-c", script, arg])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    (c, line)
}

/// The control socket of the node the lab's programs started in its run directory.
fn run_dir_ctl(lab: &Lab) -> std::path::PathBuf {
    std::fs::read_dir(lab.path("run"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "ctl"))
        .expect("the node's control socket")
}

/// A python HTTP server node at fd00::5 port 8000 serving `/blob` of `len` random bytes;
/// the blob's sha256.
fn python_upstream(lab: &mut Lab, len: usize) -> String {
    let up = lab.path("up");
    std::fs::create_dir_all(&up).unwrap();
    random_file(&up.join("blob"), len);
    let want = sha256(&up.join("blob"));
    let mut py = lab.node("fd00::5", "python3");
    py.args(["-m", "http.server", "8000", "--bind", "::", "--directory"])
        .arg(&up);
    lab.spawn(py, "upstream.log");
    want
}

/// curl `url` from node fd00::3 into sha256: (success, digest, stderr).
fn fetch_sha(lab: &Lab, url: &str) -> (bool, String, String) {
    let mut c = lab.node("fd00::3", "bash");
    c.args([
        "-c",
        &format!("set -o pipefail; curl -sSf -m 60 '{url}' | sha256sum | cut -d' ' -f1"),
    ]);
    let o = lab.run(c, Duration::from_secs(90));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() }) == 0
}

/// A victim program: one TCP socket, connected to nothing; prints `ok` or the errno.
const VICTIM: &str = r#"
import socket
try:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.bind(("fd00::5", 0))
    print("ok", s.getsockname()[1])
except OSError as e:
    print("errno", e.errno)
"#;

fn attacker_switch(dir: &Path) -> Daemon {
    let pidfile = dir.with_extension("pid");
    let mut c = as_attacker(&bin("ioth-switch").to_string_lossy());
    c.arg("--sock")
        .arg(dir)
        .args(["--mode", "0666", "--daemon", "--pidfile"])
        .arg(&pidfile);
    let o = c.output().expect("ioth-switch");
    assert!(o.status.success(), "attacker's switch: {o:?}");
    let pid = wait_for(Duration::from_secs(10), "attacker switch pid", || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    Daemon {
        pid,
        name: "attacker's switch".into(),
    }
}

/// Ports on a switch, from its console (the attacker's own view).
fn ports(sw: &Path) -> String {
    let o = as_attacker(&bin("ioth-switch").to_string_lossy())
        .args(["ctl", "--sock"])
        .arg(sw)
        .arg("port/print")
        .output()
        .expect("ctl");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_run_directory_planted_by_another_user_is_refused() {
    if !have("python3") || !have("setpriv") || !root() {
        eprintln!("SKIP: needs python3, setpriv and root (to play another uid)");
        return;
    }
    let lab = Lab::new("owner-rundir");
    // A shared sticky directory, as /tmp.
    let public = lab.path("public");
    std::fs::create_dir_all(&public).unwrap();
    set_mode(&public, 0o1777);
    set_mode(&lab.dir, 0o755);
    // The attacker makes the victim's run directory first, open to all, with a switch of
    // its own where the victim's default switch would be; and a symlink to its own directory.
    let planted = public.join("ioth-victim");
    let o = as_attacker("mkdir")
        .arg("-m")
        .arg("0777")
        .arg(&planted)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let sw = planted.join("switch");
    let _switch = attacker_switch(&sw);
    let link = public.join("ioth-link");
    let o = as_attacker("ln")
        .arg("-s")
        .arg(&planted)
        .arg(&link)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    for (rundir, why) in [(&planted, "belongs to uid 65534"), (&link, "symbolic link")] {
        let mut c = lab.node("fd00::5", "python3");
        c.env_remove("IOTH_SWITCH")
            .env("IOTH_RUNDIR", rundir)
            .args(["-c", VICTIM]);
        let o = lab.run(c, Duration::from_secs(30));
        let out = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            out.contains(&format!("errno {}", libc::ENETDOWN)),
            "{}: the victim used it: {out} {err}",
            rundir.display()
        );
        // One clear line that names the directory and the fix.
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("libioth: ")
                && err.contains(&rundir.display().to_string())
                && err.contains(why)
                && err.contains("IOTH_RUNDIR"),
            "{err}"
        );
    }
    assert!(
        !ports(&sw).contains("ioth-stackd"),
        "the victim's node plugged into the attacker's switch: {}",
        ports(&sw)
    );
    // The victim keeps working in a run directory of its own.
    let mut c = lab.node("fd00::5", "python3");
    c.args(["-c", VICTIM]);
    let o = lab.run(c, Duration::from_secs(30));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("ok "),
        "{o:?}"
    );
}

#[test]
fn a_daemon_of_another_user_is_not_talked_to() {
    if !have("python3") || !have("setpriv") || !root() {
        eprintln!("SKIP: needs python3, setpriv and root (to play another uid)");
        return;
    }
    let lab = Lab::new("owner-peer");
    set_mode(&lab.dir, 0o755);
    let theirs = lab.path("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    set_mode(&theirs, 0o777);
    // The attacker's own node, whose control socket the victim is pointed at.
    let sw = theirs.join("sw");
    let _switch = attacker_switch(&sw);
    let ctl = theirs.join("node.ctl");
    let mut d = as_attacker(&bin("ioth-stackd").to_string_lossy());
    d.args(["--ip", "fd00::66", "--persist", "--daemon", "--switch"])
        .arg(&sw)
        .arg("--ctl")
        .arg(&ctl);
    let o = d.output().unwrap();
    assert!(o.status.success(), "attacker's daemon: {o:?}");
    let _daemon = Daemon {
        pid: wait_for(Duration::from_secs(10), "attacker daemon", || {
            stack_daemons(&ctl.to_string_lossy()).first().copied()
        }),
        name: "attacker's daemon".into(),
    };
    let sockets = || info_field(&ctl, "sockets");
    assert_eq!(sockets(), "0");
    let mut c = lab.node("fd00::5", "python3");
    c.env_remove("IOTH_IP")
        .env("IOTH_STACK", &ctl)
        .args(["-c", VICTIM]);
    let o = lab.run(c, Duration::from_secs(30));
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        out.contains(&format!("errno {}", libc::ENETDOWN)),
        "the victim used another user's daemon: {out} {err}"
    );
    assert!(
        err.starts_with("libioth: ") && err.contains(&ctl.display().to_string()),
        "{err}"
    );
    assert_eq!(sockets(), "0", "the attacker got a socket");
}

/// Holds a socket, waits for `stopped`, then blocks one thread in a control round trip with
/// the daemon stopped while the main thread forks.
const FREEZE: &str = r#"
import os, socket, sys, threading, time
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.bind(("fd00::7", 0))
print("ready", flush=True)
flag = sys.argv[1]
while not os.path.exists(flag):
    time.sleep(0.01)
res = {}
def stuck():
    t = time.monotonic()
    try:
        s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        res["call"] = "answered"
    except OSError as e:
        res["call"] = "errno %d" % e.errno
    res["took"] = time.monotonic() - t
th = threading.Thread(target=stuck)
th.start()
time.sleep(0.3)
t = time.monotonic()
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print("fork %.3f" % (time.monotonic() - t), flush=True)
th.join()
print("call", res["call"], "%.3f" % res["took"], flush=True)
"#;

#[test]
fn a_stopped_daemon_bounds_calls_and_never_blocks_fork() {
    if !have("python3") {
        eprintln!("SKIP: python3 missing");
        return;
    }
    let mut lab = Lab::new("owner-freeze");
    let flag = lab.path("stopped");
    let mut c = lab.node("fd00::7", "python3");
    c.args(["-c", FREEZE]).arg(&flag);
    lab.spawn(c, "freeze.log");
    wait_for(Duration::from_secs(30), "victim ready", || {
        lab.log("freeze.log").contains("ready").then_some(())
    });
    let run = lab.path("run").to_string_lossy().into_owned();
    let daemon = wait_for(Duration::from_secs(10), "stack daemon", || {
        stack_daemons(&run).first().copied()
    });
    // SAFETY: kill(2) on the stack daemon this test's node started.
    unsafe { libc::kill(daemon, libc::SIGSTOP) };
    std::fs::write(&flag, b"").unwrap();
    let t = Instant::now();
    let out = wait_for(Duration::from_secs(30), "the victim's verdict", || {
        let l = lab.log("freeze.log");
        l.contains("call ").then_some(l)
    });
    // SAFETY: as above.
    unsafe { libc::kill(daemon, libc::SIGCONT) };
    let fork: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("fork "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        fork < 1.0,
        "fork waited {fork} s for a stopped daemon: {out}"
    );
    let call = out.lines().find(|l| l.starts_with("call ")).unwrap();
    assert!(
        call.starts_with(&format!("call errno {} ", libc::ENETDOWN)),
        "a call to a stopped daemon: {call}"
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    // The node works again once its daemon runs.
    let mut c = lab.node("fd00::7", "python3");
    c.args([
        "-c",
        "import socket; s = socket.socket(socket.AF_INET6); s.bind(('fd00::7', 0)); print('ok')",
    ]);
    let o = lab.run(c, Duration::from_secs(30));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok"), "{o:?}");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The attacker's side of the control protocol, raw: connect to a node's abstract control
/// name, forge a membership proof, ask for a socket, ask about socket ids 1..=8. Prints one
/// line per request: `<what> <status>` (0, an errno, or -1 when the daemon closed on us).
const INTRUDER: &str = r#"
import socket, struct, sys
node = sys.argv[1]
REQ = int.from_bytes(b"IOT1", "little")
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect("\0ioth/%s/ctl" % node)
def ask(what, op, sid, body=b"", fds=()):
    global s
    try:
        s.sendmsg([struct.pack("<IHHQ", REQ, op, 0, sid) + body],
                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i" * len(fds), *fds))] if fds else [])
        r, anc, flags, addr = s.recvmsg(4096, 1024)
        st = struct.unpack("<i", r[4:8])[0] if len(r) >= 8 else -1
        if st == 0 and len(r) >= 17 and r[8] == 1:
            what += " id=%d" % struct.unpack("<Q", r[9:17])[0]
    except OSError:
        st = -1
    print(what, st, flush=True)
    return st
# A forged proof: a socket of ours under a socket name of the node that no socket has.
f = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
f.bind("\0ioth/%s/3f" % node)
ask("join-forged", 15, 0x3f, fds=[f.fileno()])
ask("join-wrong", 15, 1, fds=[f.fileno()])
ask("socket", 2, 0, struct.pack("<iii", socket.AF_INET6, socket.SOCK_STREAM, 0))
# A packet socket would read the owner's frames.
ask("packet", 2, 0, struct.pack("<iii", socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)))
# Socket names are public: every socket of the node, the victim's among them (a kernel
# listener's name is its socket's name and an L; the door is no socket).
ids = set()
for l in open("/proc/net/unix"):
    name = l.split()[-1] if len(l.split()) >= 8 else ""
    if name.startswith("@ioth/%s/" % node) and not name.endswith(("/ctl", "/door")):
        ids.add(int(name.rsplit("/", 1)[1].rstrip("L"), 16))
print("ids", " ".join(str(i) for i in sorted(ids)), flush=True)
for sid in sorted(ids):
    ask("sockopt %d" % sid, 8, sid, struct.pack("<iiI", socket.SOL_SOCKET, socket.SO_TYPE, 4))
"#;

/// A root node (fd00::1) with `extra` options, listening once on port 80 through iothctl;
/// a second root node sends it a message. Returns the lab, the victim's node id and a check
/// that the message arrived intact.
fn root_node(lab: &Lab, extra: &[&str]) -> String {
    let ctl = lab.path("run/root.ctl");
    let mut d = Command::new(bin("ioth-stackd"));
    d.args(["--ip", "fd00::1", "--persist", "--daemon", "--switch"])
        .arg(lab.path("sw"))
        .arg("--ctl")
        .arg(&ctl)
        .args(extra);
    assert!(d.output().unwrap().status.success());
    info_field(&ctl, "node")
}

/// The victim's node still serves: a listener on fd00::1 port 80 (made before the attack, so
/// it holds the first socket ids) receives a message from another node, intact.
fn victim_serves(lab: &mut Lab, attack: impl FnOnce(&Lab)) {
    let msg = "the victim's own data ".repeat(1000);
    let mut l = Command::new(bin("iothctl"));
    l.arg("--ctl")
        .arg(lab.path("run/root.ctl"))
        .args(["listen", "--once", "fd00::1", "80"]);
    lab.spawn(l, "victim.log");
    wait_for(Duration::from_secs(20), "victim listening", || {
        lab.log("victim.log").contains("listening").then_some(())
    });
    attack(lab);
    let mut d = Command::new(bin("ioth-stackd"));
    d.args(["--ip", "fd00::2", "--persist", "--daemon", "--switch"])
        .arg(lab.path("sw"))
        .arg("--ctl")
        .arg(lab.path("run/client.ctl"));
    assert!(d.output().unwrap().status.success());
    let mut c = Command::new(bin("iothctl"));
    c.arg("--ctl")
        .arg(lab.path("run/client.ctl"))
        .args(["connect", "fd00::1", "80"])
        .stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(msg.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let got = wait_for(Duration::from_secs(20), "the message", || {
        let l = lab.log("victim.log");
        l.contains(msg.as_str()).then_some(l)
    });
    assert!(got.contains(&msg));
}

fn intrude(node: &str) -> String {
    // Debian's python3: another user cannot run root's own (pyenv) one.
    let o = as_attacker("/usr/bin/python3")
        .args(["-c", INTRUDER, node])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A root node started with `extra` options serves its own listener while the intruder runs
/// against it; what the intruder saw (`None`: the test cannot run here).
fn intrusion(tag: &str, extra: &[&str]) -> Option<String> {
    if !have("python3") || !have("setpriv") || !root() {
        eprintln!("SKIP: needs python3, setpriv and root (to play another uid)");
        return None;
    }
    let mut lab = Lab::new(tag);
    set_mode(&lab.dir, 0o755);
    let node = root_node(&lab, extra);
    let mut seen = String::new();
    victim_serves(&mut lab, |_| seen = intrude(&node));
    Some(seen)
}

#[test]
fn another_user_cannot_use_a_root_node() {
    let Some(seen) = intrusion("owner-admit", &[]) else {
        return;
    };
    // Not admitted: a forged proof is refused, and the first other request ends the
    // connection; the attacker gets no socket and learns nothing about the victim's.
    assert!(
        seen.contains(&format!("join-forged {}", libc::EACCES)),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("join-wrong {}", libc::EACCES)),
        "{seen}"
    );
    assert!(!seen.contains("id="), "the attacker got a socket: {seen}");
    let ids = listed(&seen);
    assert!(!ids.is_empty(), "the victim's listener is listed: {seen}");
    for sid in ids {
        assert!(!seen.contains(&format!("sockopt {sid} 0\n")), "{seen}");
    }
}

/// The socket ids the intruder found in /proc/net/unix.
fn listed(seen: &str) -> Vec<u64> {
    seen.lines()
        .find_map(|l| l.strip_prefix("ids"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_allowed_user_may_use_its_own_sockets_only() {
    let Some(seen) = intrusion("owner-allow", &["--allow-uid", ATTACKER]) else {
        return;
    };
    let own: u64 = seen
        .lines()
        .find_map(|l| l.strip_prefix("socket id="))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("an allowed user gets a socket: {seen}"));
    // ... but no packet socket, which would read the owner's frames.
    assert!(
        seen.contains(&format!("packet {}\n", libc::EPERM)),
        "an allowed user's packet socket: {seen}"
    );
    let ids = listed(&seen);
    assert!(ids.len() >= 2, "the victim's listener and ours: {seen}");
    for sid in ids {
        let want = if sid == own { 0 } else { libc::EBADF };
        assert!(
            seen.contains(&format!("sockopt {sid} {want}\n")),
            "socket {sid} (own {own}): {seen}"
        );
    }
}

/// Debian's nginx layout: a root master whose workers run as another user (`user nobody;`)
/// and open outbound connections of their own (`proxy_pass` to a python node). Each worker
/// keeps using its node after `setuid`: it shows the daemon a listener it holds.
#[test]
fn nginx_workers_that_drop_privileges_keep_their_node() {
    if nginx_bin().is_none() || !have("curl") || !have("python3") || !root() {
        eprintln!("SKIP: needs nginx, curl, python3 and root (a root master)");
        return;
    }
    let mut lab = Lab::new("owner-workers");
    set_mode(&lab.dir, 0o755);
    let want = python_upstream(&mut lab, 4 << 20);
    let d = lab.path("ngx");
    for sub in ["tmp", "logs"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
        set_mode(&d.join(sub), 0o777);
    }
    set_mode(&d, 0o755);
    let d = d.display().to_string();
    let conf = format!(
        r#"user nobody nogroup;
daemon on; master_process on; worker_processes 2;
pid {d}/logs/nginx.pid; error_log {d}/logs/error.log info;
events {{ use epoll; worker_connections 256; }}
http {{
  access_log {d}/logs/access.log;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fcgi; uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  server {{ listen [::]:80; location / {{ proxy_pass http://[fd00::5]:8000/; }} }}
}}
"#
    );
    let cp = format!("{d}/nginx.conf");
    std::fs::write(&cp, conf).unwrap();
    let mut n = lab.node("fd00::1", &nginx_bin().unwrap());
    n.args(["-p", &d, "-e", &format!("{d}/logs/error.log"), "-c", &cp]);
    let o = lab.run(n, Duration::from_secs(30));
    assert!(o.status.success(), "nginx: {o:?}");
    let fetch = |url: &str| fetch_sha(&lab, url);
    // The upstream first (so that a failure below is nginx's).
    wait_for(Duration::from_secs(30), "upstream", || {
        fetch("http://[fd00::5]:8000/blob").0.then_some(())
    });
    let (ok, sha, err) = fetch("http://[fd00::1]/blob");
    let log = std::fs::read_to_string(format!("{d}/logs/error.log")).unwrap_or_default();
    assert!(ok && sha == want, "through nginx: {err}\nerror.log:\n{log}");
    // The workers really run as nobody.
    let workers = pids_with("nginx: worker process");
    assert!(!workers.is_empty());
    let o = Command::new("ps")
        .args(["-o", "user=", "-p"])
        .arg(
            workers
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nobody"),
        "{o:?}"
    );
    let mut s = lab.node("fd00::1", &nginx_bin().unwrap());
    s.args([
        "-p",
        &d,
        "-e",
        &format!("{d}/logs/error.log"),
        "-c",
        &cp,
        "-s",
        "stop",
    ]);
    let _ = lab.run(s, Duration::from_secs(30));
}

/// A program that drops privileges before its first socket (as `memcached -u nobody`) with a
/// run directory of root's: it cannot use root's node, and says what to do in one line; with
/// a run directory of its own it works.
#[test]
fn dropping_privileges_before_the_first_socket_says_what_to_do() {
    if !have("python3") || !root() {
        eprintln!("SKIP: needs python3 and root");
        return;
    }
    let lab = Lab::new("owner-drop");
    set_mode(&lab.dir, 0o755);
    let script = format!("import os\nos.setgid(65534)\nos.setuid(65534)\n{VICTIM}");
    // Debian's python3: root's own (pyenv) may not be readable after setuid.
    let run = |rundir: &Path| {
        let mut c = lab.node("fd00::5", "/usr/bin/python3");
        c.env("IOTH_RUNDIR", rundir).args(["-c", &script]);
        lab.run(c, Duration::from_secs(30))
    };
    let o = run(&lab.path("run"));
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        out.contains(&format!("errno {}", libc::ENETDOWN)),
        "{out} {err}"
    );
    assert!(
        err.lines().count() == 1 && err.contains("belongs to uid 0") && err.contains("IOTH_RUNDIR"),
        "{err}"
    );
    let o = run(&lab.user_rundir("nobody"));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("ok "),
        "{o:?}"
    );
}

/// Squats the names the node's next sockets would get if they were predictable: for every
/// socket name of `node` in /proc/net/unix, the next 300 ids (the daemon's counted up from
/// 1; a client's were a per-process salt and a counter).
const SQUATTER: &str = r#"
import socket, sys
node = sys.argv[1]
# The ids as names::socket_name writes them (times an odd constant, modulo 2^64).
K, KI, M = 0x9e3779b97f4a7c15, 0xf1de83e19937733d, (1 << 64) - 1
seen = set()
for l in open("/proc/net/unix"):
    name = l.split()[-1] if len(l.split()) >= 8 else ""
    if name.startswith("@ioth/%s/" % node) and not name.endswith(("/ctl", "/door")):
        seen.add(int(name.rsplit("/", 1)[1].rstrip("L"), 16) * KI & M)
held = []
for sid in seen:
    for k in range(1, 301):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind("\0ioth/%s/%016x" % (node, (sid + k) * K & M))
            held.append(s)
        except OSError:
            s.close()
print("squatted", len(held), flush=True)
sys.stdin.read()
"#;

/// The victim: one socket, then (once the squatter is in place) 50 more.
const MANY: &str = r#"
import os, socket, sys, time
first = socket.socket(socket.AF_INET6)
first.bind(("fd00::5", 0))
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
made, socks = 0, []
for i in range(50):
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("fd00::5", 0))
        socks.append(s)
        made += 1
    except OSError as e:
        print("errno", e.errno, flush=True)
print("made", made, flush=True)
"#;

#[test]
fn squatting_the_next_socket_names_stops_no_socket() {
    if !have("python3") || !have("setpriv") || !root() {
        eprintln!("SKIP: needs python3, setpriv and root (to play another uid)");
        return;
    }
    let mut lab = Lab::new("owner-squat");
    set_mode(&lab.dir, 0o755);
    let flag = lab.path("go");
    let mut v = lab.node("fd00::5", "python3");
    v.args(["-c", MANY]).arg(&flag);
    lab.spawn(v, "victim.log");
    wait_for(Duration::from_secs(30), "victim ready", || {
        lab.log("victim.log").contains("ready").then_some(())
    });
    let ctl = run_dir_ctl(&lab);
    let node = info_field(&ctl, "node");
    let (mut squatter, line) = attacker_holding(SQUATTER, &node);
    assert!(line.starts_with("squatted "), "{line}");
    std::fs::write(&flag, b"").unwrap();
    let log = wait_for(Duration::from_secs(60), "the victim's sockets", || {
        let l = lab.log("victim.log");
        l.contains("made ").then_some(l)
    });
    let _ = squatter.kill();
    let _ = squatter.wait();
    assert!(
        log.contains("made 50"),
        "squatted names stopped sockets ({line}): {log}"
    );
}

/// The victim: a listener on port 8080; closed on cue; then port 8080 again.
const REBIND: &str = r#"
import os, socket, sys, time
def wait(flag):
    while not os.path.exists(flag):
        time.sleep(0.01)
s = socket.socket(socket.AF_INET6)
s.bind(("fd00::5", 8080))
s.listen(1)
print("ready", flush=True)
wait(sys.argv[1])
s.close()
print("closed", flush=True)
wait(sys.argv[2])
deadline = time.monotonic() + 10
while True:
    try:
        t = socket.socket(socket.AF_INET6)
        t.bind(("fd00::5", 8080))
        print("rebound", flush=True)
        break
    except OSError as e:
        t.close()
        if time.monotonic() > deadline:
            print("errno", e.errno, flush=True)
            break
        time.sleep(0.1)
"#;

/// Binds one abstract name (argv[1]) and holds it until stdin closes.
const SQUAT_ONE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0" + sys.argv[1])
print("bound", flush=True)
sys.stdin.read()
"#;

#[test]
fn a_closed_sockets_name_bound_by_another_user_does_not_keep_it_alive() {
    if !have("python3") || !have("setpriv") || !root() {
        eprintln!("SKIP: needs python3, setpriv and root (to play another uid)");
        return;
    }
    let mut lab = Lab::new("owner-alive");
    set_mode(&lab.dir, 0o755);
    let (go1, go2) = (lab.path("go1"), lab.path("go2"));
    let mut v = lab.node("fd00::5", "python3");
    v.args(["-c", REBIND]).arg(&go1).arg(&go2);
    lab.spawn(v, "victim.log");
    wait_for(Duration::from_secs(30), "victim ready", || {
        lab.log("victim.log").contains("ready").then_some(())
    });
    let run = lab.path("run").to_string_lossy().into_owned();
    let daemon = wait_for(Duration::from_secs(10), "stack daemon", || {
        stack_daemons(&run).first().copied()
    });
    let ctl = run_dir_ctl(&lab);
    let node = info_field(&ctl, "node");
    // The listener's name, as anyone can read it.
    let prefix = format!("@ioth/{node}/");
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let names: Vec<String> = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter(|n| n.starts_with(&prefix) && !n.ends_with("/ctl") && !n.ends_with("/door"))
        .map(|n| n[1..].to_string())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // The victim closes its listener while its daemon is stopped; the attacker binds the
    // name the moment it is free, before the daemon looks.
    // SAFETY: kill(2) on the stack daemon this test's node started.
    unsafe { libc::kill(daemon, libc::SIGSTOP) };
    std::fs::write(&go1, b"").unwrap();
    wait_for(Duration::from_secs(10), "victim closed", || {
        lab.log("victim.log").contains("closed").then_some(())
    });
    let (mut squatter, line) = attacker_holding(SQUAT_ONE, &names[0]);
    // SAFETY: as above.
    unsafe { libc::kill(daemon, libc::SIGCONT) };
    assert!(line.starts_with("bound"), "{line}");
    std::fs::write(&go2, b"").unwrap();
    let log = wait_for(Duration::from_secs(30), "the victim's verdict", || {
        let l = lab.log("victim.log");
        (l.contains("rebound") || l.contains("errno")).then_some(l)
    });
    let _ = squatter.kill();
    let _ = squatter.wait();
    assert!(
        log.contains("rebound"),
        "the closed listener still holds port 8080: {log}"
    );
}

/// Debian's apache layout: a root parent whose prefork children run as `www-data` (`User`)
/// and proxy (`mod_proxy`) to a python node. Before, the children's own connections failed
/// and apache answered 503.
#[test]
fn apache_children_as_www_data_proxy_to_a_python_node() {
    let apache = "/usr/sbin/apache2";
    let modules = Path::new("/usr/lib/apache2/modules");
    if !Path::new(apache).exists() || !have("curl") || !have("python3") || !root() {
        eprintln!("SKIP: needs apache2, curl, python3 and root (a root parent)");
        return;
    }
    let mut lab = Lab::new("owner-apache");
    set_mode(&lab.dir, 0o755);
    let want = python_upstream(&mut lab, 3 << 20);
    let d = lab.path("apache");
    std::fs::create_dir_all(d.join("logs")).unwrap();
    set_mode(&d, 0o755);
    set_mode(&d.join("logs"), 0o777);
    let m = modules.display();
    let d = d.display().to_string();
    let conf = format!(
        r#"ServerRoot {d}
ServerName node1
PidFile {d}/httpd.pid
ErrorLog {d}/logs/error.log
LoadModule mpm_prefork_module {m}/mod_mpm_prefork.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule proxy_module {m}/mod_proxy.so
LoadModule proxy_http_module {m}/mod_proxy_http.so
User www-data
Group www-data
Listen 80
StartServers 2
ProxyPass "/" "http://[fd00::5]:8000/"
"#
    );
    let cp = format!("{d}/httpd.conf");
    std::fs::write(&cp, conf).unwrap();
    let mut a = lab.node("fd00::1", apache);
    a.args(["-f", &cp, "-k", "start"]);
    let o = lab.run(a, Duration::from_secs(30));
    assert!(o.status.success(), "apache: {o:?}");
    let fetch = |url: &str| fetch_sha(&lab, url);
    wait_for(Duration::from_secs(30), "upstream", || {
        fetch("http://[fd00::5]:8000/blob").0.then_some(())
    });
    let (ok, sha, err) = wait_for(Duration::from_secs(30), "apache", || {
        let r = fetch("http://[fd00::1]/blob");
        (r.0 || !r.2.contains("Connection refused")).then_some(r)
    });
    let log = std::fs::read_to_string(format!("{d}/logs/error.log")).unwrap_or_default();
    let mut s = Command::new(apache);
    s.env_remove("LD_PRELOAD").args(["-f", &cp, "-k", "stop"]);
    let _ = s.output();
    assert!(
        ok && sha == want,
        "through apache: {err}\nerror.log:\n{log}"
    );
}
