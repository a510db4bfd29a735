//! A node belongs to its owner (issue 10): attacks by another local user that must fail,
//! and a daemon that stops answering must not freeze the program.
//!
//! The attacker runs as uid 65534 (`setpriv --reuid=65534 --regid=65534 --clear-groups`); no
//! user account is needed. The victim is the test's own user (root in CI).

mod harness;
use harness::*;
use ioth_e2e::Daemon;
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
            pids_with(&ctl.to_string_lossy()).first().copied()
        }),
        name: "attacker's daemon".into(),
    };
    let info = || {
        let o = Command::new(bin("iothctl"))
            .arg("--ctl")
            .arg(&ctl)
            .arg("info")
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(info().contains("sockets=0"), "{}", info());
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
    assert!(
        info().contains("sockets=0"),
        "the attacker got a socket: {}",
        info()
    );
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
        pids_with(&run).first().copied()
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
