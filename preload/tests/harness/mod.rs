//! A tiny lab for the shim's end-to-end tests: a private switch in a temporary directory,
//! real programs started as nodes with `LD_PRELOAD=libioth.so`, and a clean-up that stops
//! exactly the processes started for this lab (the switch by its pidfile, the stack daemons
//! that the shim spawned by the lab directory in their command line).
//!
//! Binaries: `IOTH_BIN_DIR`, else the target directory of the test executable
//! (`cargo build -p ioth-stackd -p ioth-switch` with the same `CARGO_TARGET_DIR`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IOTH_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p ioth-stackd -p ioth-switch, same target dir)",
        p.display()
    );
    p
}

pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Poll `f` until it gives `Some`, or panic after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) on a pid we started.
    unsafe { libc::kill(pid, sig) };
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Pids whose command line mentions `needle`.
pub fn pids_with(needle: &str) -> Vec<i32> {
    let mut v = Vec::new();
    let me = std::process::id() as i32;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&c).contains(needle)
        {
            v.push(pid);
        }
    }
    v
}

fn stop_pids(pids: &[i32]) {
    for &p in pids {
        kill(p, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &p in pids {
        if alive(p) {
            kill(p, libc::SIGKILL);
        }
    }
}

pub struct Lab {
    pub dir: PathBuf,
    switch_pid: Option<i32>,
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
            switch_pid: None,
            children: Vec::new(),
        };
        lab.start_switch();
        lab
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn start_switch(&mut self) {
        let sw = self.path("sw");
        let pidfile = self.path("sw.pid");
        let ioth = bin_dir().join("ioth-switch");
        let st = if ioth.exists() {
            Command::new(ioth)
                .arg("-s")
                .arg(&sw)
                .arg("-d")
                .arg("-p")
                .arg(&pidfile)
                .arg("--mode")
                .arg("777")
                .stdout(Stdio::null())
                .status()
        } else {
            Command::new("vde_switch")
                .arg("-s")
                .arg(&sw)
                .arg("-d")
                .arg("-p")
                .arg(&pidfile)
                .arg("-m")
                .arg("777")
                .status()
        };
        assert!(
            st.map(|s| s.success()).unwrap_or(false),
            "switch did not start"
        );
        let pid = wait_for(Duration::from_secs(5), "switch pidfile", || {
            std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
        });
        self.switch_pid = Some(pid);
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

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Processes that mention the lab directory: stack daemons, daemonised servers.
        let needle = self.dir.to_string_lossy().to_string();
        stop_pids(&pids_with(&needle));
        if let Some(p) = self.switch_pid {
            stop_pids(&[p]);
        }
        if std::env::var_os("IOTH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

pub fn random_file(p: &Path, len: usize) {
    let mut data = vec![0u8; len];
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut data).unwrap();
    std::fs::write(p, data).unwrap();
    set_mode(p, 0o644);
}

pub fn sha256(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}
