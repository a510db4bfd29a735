//! Shared helpers for the integration tests: start the real `ioth-switch` binary as a daemon
//! in a temporary directory, kill it (by pid) when the guard drops, build and receive frames.
#![allow(dead_code)]

use ioth_common::port::{Incoming, SwitchPort};
use ioth_common::sys;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ioth-switch");

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "ioth-sw-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `true` while the process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

pub fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Wait (bounded) for `pid` to be gone.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !alive(pid)
}

/// A running switch daemon; SIGTERM (then SIGKILL) on drop.
pub struct Switch {
    pub tmp: TempDir,
    pub dir: PathBuf,
    pub pid: u32,
}

impl Switch {
    /// Start `ioth-switch --sock TMP/sw --daemon --pidfile TMP/pid EXTRA...`; ready when the
    /// command returns.
    pub fn start(extra: &[&str]) -> Switch {
        let tmp = TempDir::new("t");
        let dir = tmp.path().join("sw");
        let pid = start_on(&dir, &tmp.path().join("pid"), extra).expect("switch starts");
        Switch { tmp, dir, pid }
    }

    pub fn ctl(&self, cmd: &str) -> (bool, String) {
        ctl(&self.dir, cmd)
    }

    pub fn native(&self, desc: &str) -> SwitchPort {
        SwitchPort::open_native(&self.dir.join("native"), desc, 65536).expect("native port")
    }

    pub fn vde(&self, desc: &str) -> SwitchPort {
        SwitchPort::open_vde(&self.dir, desc, 0).expect("vde port")
    }

    /// Stop the switch with SIGTERM and wait until it is gone.
    pub fn stop(&self) {
        kill(self.pid, "TERM");
        assert!(wait_gone(self.pid, Duration::from_secs(5)), "switch exits");
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if alive(self.pid) {
            kill(self.pid, "TERM");
            if !wait_gone(self.pid, Duration::from_secs(3)) {
                kill(self.pid, "KILL");
                wait_gone(self.pid, Duration::from_secs(3));
            }
        }
    }
}

/// Start a daemon on `dir`; `Err(stderr)` when it refuses.
pub fn start_on(dir: &Path, pidfile: &Path, extra: &[&str]) -> Result<u32, String> {
    let out = Command::new(BIN)
        .arg("--sock")
        .arg(dir)
        .arg("--daemon")
        .arg("--pidfile")
        .arg(pidfile)
        .args(extra)
        .output()
        .expect("run ioth-switch");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let pid = std::fs::read_to_string(pidfile)
        .expect("pidfile written before the parent exits")
        .trim()
        .parse()
        .expect("pid");
    Ok(pid)
}

pub fn ctl(dir: &Path, cmd: &str) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--sock")
        .arg(dir)
        .args(cmd.split_whitespace())
        .output()
        .expect("run ioth-switch ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The numbers on the line of `text` (a `port/print` answer) that starts with `prefix`.
pub fn numbers_after(text: &str, prefix: &str) -> Vec<u64> {
    text.lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("{prefix} in {text}"))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// The numbers on the line of `port/print PORT` that starts with `prefix`.
pub fn port_numbers(sw: &Switch, port: u32, prefix: &str) -> Vec<u64> {
    let (ok, text) = sw.ctl(&format!("port/print {port}"));
    assert!(ok, "{text}");
    numbers_after(&text, prefix)
}

/// Counters of port `port` from `port/print`: (rx, tx, drop_queue, drop_toobig, malformed).
pub fn counters(sw: &Switch, port: u32) -> [u64; 5] {
    let (ok, text) = sw.ctl(&format!("port/print {port}"));
    assert!(ok, "{text}");
    let nums = |prefix: &str| numbers_after(&text, prefix);
    let i = nums("IN:");
    let o = nums("OUT:");
    let d = nums("DROP:");
    [i[0], o[0], d[0], d[1], d[2]]
}

pub fn mac(last: u8) -> [u8; 6] {
    [0x02, 0x10, 0x20, 0x30, 0x40, last]
}

pub const BCAST: [u8; 6] = [0xff; 6];

pub fn frame(dst: [u8; 6], src: [u8; 6], len: usize, marker: u8) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    f.resize(len.max(15), 0);
    f[14] = marker;
    f
}

/// Send one frame, waiting (bounded) while the socket is full.
pub fn send(p: &SwitchPort, f: &[u8]) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match p.send(f) {
            Ok(_) => return,
            Err(e) if e.is_again() => {
                assert!(Instant::now() < end, "send blocked for 10 s");
                let _ = sys::wait_fd(p.data_fd(), libc::POLLOUT, 100);
            }
            Err(e) => panic!("send: {e}"),
        }
    }
}

/// Wait up to `ms` milliseconds for `take` (a receive on `p`) to get something other than
/// `EAGAIN`; any other error fails the test.
fn wait_recv<T>(
    p: &SwitchPort,
    ms: u64,
    mut take: impl FnMut() -> Result<T, sys::Errno>,
) -> Option<T> {
    let end = Instant::now() + Duration::from_millis(ms);
    loop {
        match take() {
            Ok(m) => return Some(m),
            Err(e) if e.is_again() => {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                let _ = sys::wait_fd(p.data_fd(), libc::POLLIN, left.as_millis() as i32 + 1);
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// Receive one frame within `ms` milliseconds.
pub fn recv(p: &SwitchPort, ms: i32) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 70000];
    let n = wait_recv(p, ms as u64, || p.recv(&mut buf))?;
    Some(buf[..n].to_vec())
}

/// Receive one message with [`SwitchPort::recv_any`] within `ms` milliseconds (a frame is in
/// `buf`).
pub fn recv_any(p: &SwitchPort, buf: &mut [u8], ms: u64) -> Option<Incoming> {
    wait_recv(p, ms, || p.recv_any(buf))
}

/// Assert that nothing arrives on `p` for a short while.
pub fn assert_silent(p: &SwitchPort, what: &str) {
    if let Some(f) = recv(p, 200) {
        panic!("{what}: unexpected frame of {} bytes", f.len());
    }
}

/// Whether an external program is installed; prints why a test is skipped otherwise.
pub fn have(prog: &str, test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false);
    if !found {
        eprintln!("SKIPPED {test}: {prog} is not installed");
    }
    found
}
