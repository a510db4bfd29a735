//! A tiny lab for the shim's end-to-end tests: a private switch in a temporary directory,
//! real programs started as nodes with `LD_PRELOAD=libioth.so`, and a clean-up that stops
//! exactly the processes started for this lab (the switch by its pidfile, the stack daemons
//! that the shim spawned by the lab directory in their command line).
//!
//! Built on the shared end-to-end harness (`ioth-e2e`, tests/src/lib.rs): binaries from
//! `IOTH_BIN_DIR`, else the target directory of the test executable.

#![allow(dead_code, unused_imports)]

use ioth_e2e::{Daemon, ioth_switch};
pub use ioth_e2e::{bin, bin_dir, chmod as set_mode, have, random_file, sha256_file as sha256};
pub use ioth_e2e::{pids_with, stack_daemons, wait_for};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn kill(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) on a pid we started.
    unsafe { libc::kill(pid, sig) };
}

/// Debian's nginx, if installed.
pub fn nginx_bin() -> Option<String> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
}

pub struct Lab {
    pub dir: PathBuf,
    switch: Option<Daemon>,
    children: Vec<Child>,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "ioth-shim-{tag}-{}-{n}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run")).unwrap();
        set_mode(&dir, 0o755);
        let mut lab = Lab {
            dir,
            switch: None,
            children: Vec::new(),
        };
        lab.start_switch();
        lab
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn start_switch(&mut self) {
        self.switch = Some(ioth_switch(&self.path("sw"), &["--mode", "777"]));
    }

    /// A command run as a node with address(es) `ip`.
    pub fn node(&self, ip: &str, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("LD_PRELOAD", bin("libioth.so"))
            .env("IOTH_IP", ip)
            .env("IOTH_SWITCH", self.path("sw"))
            .env("IOTH_RUNDIR", self.path("run"))
            .env("IOTH_STACKD", bin("ioth-stackd"))
            .env_remove("IOTH_STACK")
            .env_remove("IOTH_GW")
            .env_remove("IOTH_MAC");
        c
    }

    /// Start a long-running child; it is killed when the lab ends.
    pub fn spawn(&mut self, mut c: Command, log: &str) -> u32 {
        let out = std::fs::File::create(self.path(log)).unwrap();
        let err = out.try_clone().unwrap();
        let child = c.stdout(out).stderr(err).spawn().expect("spawn");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Run to completion with a time limit; (success, stdout, stderr).
    pub fn run(&self, mut c: Command, limit: Duration) -> Output {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let pid = child.id() as i32;
        let deadline = Instant::now() + limit;
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                kill(pid, libc::SIGKILL);
                let o = child.wait_with_output().unwrap();
                panic!(
                    "command timed out after {limit:?}: {c:?}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait_with_output().unwrap()
    }

    /// A run directory of `user`'s own, mode 0700, for the nodes of programs that run as that
    /// user (the shim accepts no run directory of another owner or one others may write).
    pub fn user_rundir(&self, user: &str) -> PathBuf {
        let d = self.path(&format!("run-{user}"));
        std::fs::create_dir_all(&d).unwrap();
        set_mode(&d, 0o700);
        let ok = Command::new("chown")
            .arg(format!("{user}:"))
            .arg(&d)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown {user}: {}", d.display());
        d
    }

    /// A counter `key=N` from `iothctl info` of the node that has address `addr`, looked up
    /// among the control sockets of the lab's run directories (`run`, `run-USER`).
    pub fn node_counter(&self, addr: &str, key: &str) -> Option<u64> {
        for d in std::fs::read_dir(&self.dir).ok()?.flatten() {
            if !d.file_name().to_string_lossy().starts_with("run") {
                continue;
            }
            for e in std::fs::read_dir(d.path()).ok()?.flatten() {
                let p = e.path();
                if p.extension().is_none_or(|x| x != "ctl") {
                    continue;
                }
                let Ok(o) = Command::new(bin("iothctl"))
                    .arg("--ctl")
                    .arg(&p)
                    .arg("info")
                    .output()
                else {
                    continue;
                };
                let t = String::from_utf8_lossy(&o.stdout).to_string();
                if t.lines().any(|l| l.starts_with(&format!("addr={addr}/"))) {
                    return t
                        .lines()
                        .find_map(|l| l.strip_prefix(&format!("{key}=")))
                        .and_then(|v| v.parse().ok());
                }
            }
        }
        None
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Fail unless `nginx` (its start, `o`) exited 0 (a daemonised master), showing its
    /// output and the lab's `logs/error.log`.
    pub fn nginx_started(&self, o: &Output) {
        assert!(
            o.status.success(),
            "nginx start: {}{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log("logs/error.log")
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // SIGTERM first: a server with workers (nginx's master) stops them; SIGKILL would
        // leave them running, holding the node's listeners.
        for c in &mut self.children {
            kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for c in &mut self.children {
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Processes that mention the lab directory: stack daemons, daemonised servers.
        let needle = self.dir.to_string_lossy().to_string();
        for pid in pids_with(&needle) {
            Daemon {
                pid,
                name: "lab process".into(),
            }
            .stop();
        }
        self.switch.take();
        if std::env::var_os("IOTH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
