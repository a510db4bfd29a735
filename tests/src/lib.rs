//! Harness for the end-to-end tests: temporary directories, daemons started and stopped by
//! pid, readiness checks by polling a real condition with a deadline (never a fixed sleep),
//! and helpers to run real programs as IoTh nodes.
//!
//! Binaries come from `IOTH_BIN_DIR` (set by `scripts/test`), else from the target directory
//! the test executable lives in.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Directory of the ioth binaries (`ioth-switch`, `ioth-stackd`, `iothctl`, `libioth.so`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IOTH_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test-exe>
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
        "{} is missing: build the workspace first (cargo build --release)",
        p.display()
    );
    p
}

pub fn libioth() -> PathBuf {
    bin("libioth.so")
}

/// The repository root (for scripts/).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Whether an external program is installed.
pub fn have(prog: &str) -> bool {
    which(prog).is_some()
}

pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Print why a test does not run (the summary counts it as passed; the reason is visible).
pub fn skip(reason: &str) {
    eprintln!("SKIP: {reason}");
}

/// `true` when the quick mode (scripts/test --quick) asks to skip slow cases.
pub fn quick() -> bool {
    std::env::var_os("IOTH_TEST_QUICK").is_some()
}

/// Poll `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A temporary directory, world-readable (unprivileged servers read from it), removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "ioth-e2e-{tag}-{}-{:x}",
            std::process::id(),
            ioth_common::sys::random_u64() & 0xffff_ffff
        ));
        std::fs::create_dir_all(&p).unwrap();
        chmod(&p, 0o755);
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A daemon we started, stopped by pid (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    pub pid: i32,
    pub name: String,
}

impl Daemon {
    pub fn from_pidfile(name: &str, pidfile: &Path) -> Daemon {
        let pid = wait_for(Duration::from_secs(10), &format!("{name} pid file"), || {
            std::fs::read_to_string(pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
        });
        Daemon {
            pid,
            name: name.to_string(),
        }
    }

    pub fn alive(&self) -> bool {
        // SAFETY: kill with signal 0 only checks for existence.
        unsafe { libc::kill(self.pid, 0) == 0 }
    }

    pub fn stop(&mut self) {
        if self.pid <= 0 {
            return;
        }
        // SAFETY: signalling a pid we started.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.alive() && Instant::now() < deadline {
            // Only this pid: reaping any child would steal the exit status of a command
            // another test thread is running.
            // SAFETY: waitpid with WNOHANG on one pid; status is discarded.
            unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), libc::WNOHANG) };
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.alive() {
            // SAFETY: as above.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(1);
            // SAFETY: waitpid with WNOHANG on one pid; status is discarded.
            while unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), libc::WNOHANG) } == 0
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.pid = 0;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Run a command to completion, capturing output (stdin is empty unless the caller set it).
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Run and require success.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Start `ioth-switch --sock DIR --daemon` (ready when the call returns).
pub fn ioth_switch(dir: &Path, extra: &[&str]) -> Daemon {
    start_switch(Command::new(bin("ioth-switch")), dir, extra)
}

/// `cmd` (ioth-switch, however it is run) `--sock DIR EXTRA… --daemon --pidfile DIR.pid`.
fn start_switch(mut cmd: Command, dir: &Path, extra: &[&str]) -> Daemon {
    let pidfile = dir.with_extension("pid");
    run_ok(
        cmd.arg("--sock")
            .arg(dir)
            .args(extra)
            .arg("--daemon")
            .arg("--pidfile")
            .arg(&pidfile),
    );
    Daemon::from_pidfile("ioth-switch", &pidfile)
}

/// Start Debian's `vde_switch -s DIR -d` (ready when `DIR/ctl` accepts connections).
pub fn vde_switch(dir: &Path) -> Daemon {
    let pidfile = dir.with_extension("pid");
    run_ok(
        Command::new("vde_switch")
            .arg("-s")
            .arg(dir)
            .arg("-d")
            .arg("-p")
            .arg(&pidfile)
            .arg("--nostdin"),
    );
    let d = Daemon::from_pidfile("vde_switch", &pidfile);
    wait_for(Duration::from_secs(5), "vde_switch ctl", || {
        std::os::unix::net::UnixStream::connect(dir.join("ctl")).ok()
    });
    d
}

/// Pids of running processes (not this one) whose command line contains `needle`.
pub fn pids_with(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(e.path().join("cmdline"))
            && pid != me
            && String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(needle)
        {
            v.push(pid);
        }
    }
    v
}

/// The pid of a running process whose command line contains `needle`.
/// Stack daemons (not their keepers, `ioth-keeper`) whose command line contains `needle`.
pub fn stack_daemons(needle: &str) -> Vec<i32> {
    pids_with(needle)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "ioth-stackd")
        })
        .collect()
}

pub fn pid_by_cmdline(needle: &str) -> Option<i32> {
    pids_with(needle).into_iter().next()
}

/// A stack daemon started for a test (`ioth-stackd --daemon --persist`), stopped on drop.
pub struct Node {
    pub ctl: PathBuf,
    pub daemon: Daemon,
}

/// The keeper (`ioth-keeper`) that is the parent of stack daemon `pid`, if it has one.
fn keeper_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ppid: i32 = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    std::fs::read_to_string(format!("/proc/{ppid}/comm"))
        .is_ok_and(|c| c.trim() == "ioth-keeper")
        .then_some(ppid)
}

impl Node {
    /// The node dies without a word: its daemon and the daemon's keeper (which would
    /// otherwise start another daemon), both with SIGKILL.
    pub fn kill(&mut self) {
        let pid = self.daemon.pid;
        if let Some(k) = keeper_of(pid) {
            // SAFETY: signalling the keeper of the daemon this test started, by its pid.
            unsafe { libc::kill(k, libc::SIGKILL) };
        }
        // SAFETY: signalling the daemon this test started, by its pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        self.daemon.stop();
    }
}

impl Drop for Node {
    /// Stop the daemon (SIGTERM, which its keeper takes as a stop). A daemon too busy to go
    /// within 3 s is killed, which its keeper would take for a crash and answer with a new
    /// daemon: so the keeper goes too, and any daemon of this node that is left.
    fn drop(&mut self) {
        let keeper = keeper_of(self.daemon.pid);
        self.daemon.stop();
        if let Some(k) = keeper {
            // Running, not a zombie its new parent has yet to reap.
            let running = || {
                std::fs::read_to_string(format!("/proc/{k}/stat")).is_ok_and(|st| {
                    st.rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().next())
                        .is_some_and(|state| state != "Z" && state != "X")
                })
            };
            let deadline = Instant::now() + Duration::from_secs(3);
            while running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            // SAFETY: the keeper of the daemon this test started, by its pid.
            unsafe { libc::kill(k, libc::SIGKILL) };
        }
        for p in stack_daemons(&self.ctl.to_string_lossy()) {
            // SAFETY: a daemon of this test's node (its own control socket path).
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

pub fn node(switch: &Path, ips: &str, ctl: &Path) -> Node {
    node_by(Command::new(bin("ioth-stackd")), switch, ips, ctl)
}

/// [`node`] in network namespace `ns` (as a node on that host would be: where its switch is).
pub fn node_in(ns: &Netns, switch: &Path, ips: &str, ctl: &Path) -> Node {
    node_by(ns.exec(bin("ioth-stackd")), switch, ips, ctl)
}

fn node_by(mut cmd: Command, switch: &Path, ips: &str, ctl: &Path) -> Node {
    run_ok(
        cmd.arg("--ip")
            .arg(ips)
            .arg("--switch")
            .arg(switch)
            .arg("--ctl")
            .arg(ctl)
            .arg("--persist")
            .arg("--daemon")
            .env_remove("LD_PRELOAD"),
    );
    let needle = ctl.to_string_lossy().to_string();
    let pid = wait_for(Duration::from_secs(5), "ioth-stackd process", || {
        stack_daemons(&needle).first().copied()
    });
    Node {
        ctl: ctl.to_path_buf(),
        daemon: Daemon {
            pid,
            name: "ioth-stackd".into(),
        },
    }
}

/// `sha256sum` of a file.
pub fn sha256_file(p: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(p));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `sha256sum` of bytes.
pub fn sha256_bytes(b: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A file of `len` random bytes.
pub fn random_file(p: &Path, len: usize) {
    use std::io::Write;
    let mut f = std::fs::File::create(p).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        ioth_common::sys::getrandom(&mut buf[..n]).unwrap();
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    chmod(p, 0o644);
}

/// A command run as a node through `LD_PRELOAD` (switch, run dir and addresses given).
pub fn as_node(
    prog: impl AsRef<std::ffi::OsStr>,
    switch: &Path,
    rundir: &Path,
    ip: &str,
) -> Command {
    node_env(Command::new(prog), switch, rundir, ip)
}

/// [`as_node`] in network namespace `ns` (the node's stack daemon, which the shim starts,
/// runs there too). The environment is `env`'s to set, inside: `ip` itself runs without the
/// shim.
pub fn as_node_in(
    ns: &Netns,
    prog: impl AsRef<std::ffi::OsStr>,
    switch: &Path,
    rundir: &Path,
    ip: &str,
) -> Command {
    let mut c = ns.exec("env");
    c.args(["-u", "IOTH_STACK"]);
    for (k, v) in [
        ("LD_PRELOAD", libioth().as_os_str()),
        ("IOTH_IP", ip.as_ref()),
        ("IOTH_SWITCH", switch.as_os_str()),
        ("IOTH_RUNDIR", rundir.as_os_str()),
    ] {
        let mut kv = std::ffi::OsString::from(format!("{k}="));
        kv.push(v);
        c.arg(kv);
    }
    c.arg(prog);
    c
}

fn node_env(mut c: Command, switch: &Path, rundir: &Path, ip: &str) -> Command {
    c.env("LD_PRELOAD", libioth())
        .env("IOTH_IP", ip)
        .env("IOTH_SWITCH", switch)
        .env("IOTH_RUNDIR", rundir)
        .env_remove("IOTH_STACK");
    c
}

/// A switch in a temporary directory, stack daemon nodes on it, and background programs;
/// everything is stopped by pid on drop.
pub struct NodeLab {
    pub dir: TempDir,
    pub sw: PathBuf,
    _switch: Daemon,
    nodes: Vec<Node>,
    procs: Vec<Daemon>,
}

impl NodeLab {
    pub fn new(tag: &str, mode: Option<&str>) -> NodeLab {
        let dir = TempDir::new(tag);
        let sw = dir.join("sw");
        let extra: Vec<&str> = match mode {
            Some(m) => vec!["--mode", m],
            None => vec![],
        };
        let _switch = ioth_switch(&sw, &extra);
        NodeLab {
            dir,
            sw,
            _switch,
            nodes: Vec::new(),
            procs: Vec::new(),
        }
    }

    /// A stack daemon with these addresses; returns its control socket.
    pub fn node(&mut self, ips: &str) -> PathBuf {
        let ctl = self.dir.join(&format!("n{}.ctl", self.nodes.len()));
        self.nodes.push(node(&self.sw, ips, &ctl));
        ctl
    }

    /// `prog` as a process of the node at `ctl`.
    pub fn on(&self, ctl: &Path, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("LD_PRELOAD", libioth())
            .env("IOTH_STACK", ctl)
            .env("IOTH_RUNDIR", self.dir.join("run"))
            .env_remove("IOTH_IP")
            .env_remove("IOTH_DNS")
            .env_remove("IOTH_NAME");
        c
    }

    /// `prog` as a node that the shim starts itself (`IOTH_IP`) on this lab's switch.
    pub fn at(&self, ip: &str, prog: &str) -> Command {
        let mut c = as_node(prog, &self.sw, &self.dir.join("run"), ip);
        c.env_remove("IOTH_DNS")
            .env_remove("IOTH_NAME")
            .env_remove("IOTH_RESOLVE");
        c
    }

    /// Start `c` in the background with its output in `log`; stopped by pid on drop.
    /// Returns its pid.
    pub fn spawn(&mut self, mut c: Command, log: &str) -> i32 {
        let out = File::create(self.dir.join(log)).unwrap();
        let err = out.try_clone().unwrap();
        // Reaped by `Daemon::stop` (waitpid on its pid).
        #[allow(clippy::zombie_processes)]
        let child = c
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {c:?}: {e}"));
        let pid = child.id() as i32;
        self.procs.push(Daemon {
            pid,
            name: log.to_string(),
        });
        pid
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// dnsmasq as the LAN's DHCPv4 server, a process of the node at `ctl`: leases from
    /// `range` (`--dhcp-range`) recorded in `DIR/leases`, started and ready; its log is
    /// `dnsmasq.log`. Returns the lease file.
    pub fn dhcp_server(&mut self, ctl: &Path, range: &str) -> PathBuf {
        let leases = self.dir.join("leases");
        let mut d = self.on(ctl, "dnsmasq");
        d.args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--log-dhcp",
            "--port=53",
            "--user=root",
        ])
        .arg(format!("--dhcp-range={range}"))
        .arg(format!("--dhcp-leasefile={}", leases.display()));
        self.spawn(d, "dnsmasq.log");
        wait_for(Duration::from_secs(20), "dnsmasq started", || {
            self.log("dnsmasq.log")
                .contains("DHCP, IP range")
                .then_some(())
        });
        leases
    }

    /// A real DNS server as a process of the node at `ctl`: dnsmasq answering `records`
    /// (`--host-record`), started and ready; its log is `dnsmasq.log`.
    pub fn dnsmasq(&mut self, ctl: &Path, records: &[&str]) {
        let mut c = self.on(ctl, "dnsmasq");
        c.args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--log-queries",
            "--port=53",
            "--user=root",
        ]);
        for r in records {
            c.arg(format!("--host-record={r}"));
        }
        self.spawn(c, "dnsmasq.log");
        wait_for(Duration::from_secs(20), "dnsmasq started", || {
            self.log("dnsmasq.log").contains("started").then_some(())
        });
    }
}

/// Run a semantics script (`NAME: OUTCOME` lines, then `done`) over the kernel's loopback
/// and as an ioth node, IPv6 and IPv4, in this test run, and require the same lines: what
/// is expected is what the kernel does. `wants`: lines the kernel's output must have, so the
/// comparison means something on this kernel. Cases: (kernel address, node's `IOTH_IP`,
/// node's address).
pub fn same_as_the_kernel(script: &str, tag: &str, cases: &[(&str, &str, &str)], wants: &[&str]) {
    let lines = |o: &Output, who: &str| -> Vec<String> {
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success() && out.ends_with("done\n"),
            "{who}: {}",
            text(o)
        );
        out.lines().map(str::to_string).collect()
    };
    let tmp = TempDir::new(tag);
    let sw = tmp.join("sw");
    let _switch = ioth_switch(&sw, &[]);
    for (kernel_addr, node_ip, addr) in cases {
        let mut k = Command::new("python3");
        k.args([script, kernel_addr]).env_remove("LD_PRELOAD");
        let kernel = lines(&run_for(60, k), "kernel");
        for want in wants {
            assert!(kernel.iter().any(|l| l == want), "kernel: {kernel:?}");
        }
        let mut n = as_node("python3", &sw, &tmp.join("run"), node_ip);
        // Through the node's stack: its TCP is what is compared (a connection within the
        // node is otherwise cut through, with what README lists that changes).
        n.env("IOTH_CUT_THROUGH", "0");
        n.args([script, addr]);
        let node = lines(&run_for(60, n), "node");
        assert_eq!(
            node, kernel,
            "as an ioth node ({addr}) vs the kernel ({kernel_addr})"
        );
    }
}

impl Drop for NodeLab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.stop();
        }
    }
}

/// Run with a deadline (the program is killed by `timeout` if it hangs).
pub fn run_for(secs: u32, mut c: Command) -> Output {
    let mut t = Command::new("timeout");
    t.arg("-k")
        .arg("2")
        .arg(secs.to_string())
        .arg(c.get_program());
    t.args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    let _ = &mut c;
    run(&mut t)
}

pub fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Start `iothctl --ctl CTL listen --once ADDR PORT` with its stdout in `out`; returns once it
/// says `listening` (its readiness line).
pub fn iothctl_listen(ctl: &Path, addr: &str, port: u16, out: &Path) -> std::process::Child {
    use std::io::BufRead;
    let mut server = Command::new(bin("iothctl"))
        .arg("--ctl")
        .arg(ctl)
        .args(["listen", "--once", addr, &port.to_string()])
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "iothctl listen exited before listening"
        );
    }
    server
}

/// A node's description (`iothctl --ctl CTL info`), within 10 s.
pub fn node_info(ctl: &Path) -> String {
    let mut c = Command::new(bin("iothctl"));
    c.arg("--ctl").arg(ctl).arg("info");
    let o = run_for(10, c);
    assert!(o.status.success(), "iothctl info: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `key=VALUE` from a node's description.
pub fn info_field(ctl: &Path, key: &str) -> String {
    let i = node_info(ctl);
    i.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} in {i}"))
        .to_string()
}

/// Send `data` from node `from` to `to_ip`:`port` on node `to` (both through iothctl) and
/// check it arrived intact (sha256). `during` runs while the data flows (after the first
/// half is written).
pub fn checked_stream(
    tmp: &TempDir,
    (from, to): (&Path, &Path),
    (to_ip, port): (&str, u16),
    data: &[u8],
    during: impl FnOnce(),
) {
    use std::io::Write;
    let out = tmp.join(&format!("out{port}"));
    let mut server = iothctl_listen(to, "::", port, &out);
    let mut client = Command::new(bin("iothctl"))
        .arg("--ctl")
        .arg(from)
        .args(["connect", to_ip, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut tx = client.stdin.take().unwrap();
    let half = data.len() / 2;
    tx.write_all(&data[..half]).unwrap();
    during();
    tx.write_all(&data[half..]).unwrap();
    drop(tx);
    assert!(client.wait().unwrap().success(), "client");
    assert!(server.wait().unwrap().success(), "server");
    assert_eq!(sha256_file(&out), sha256_bytes(data), "stream differs");
}

/// A network namespace made for a test (`ip netns add`), standing in for another host;
/// deleted on drop. Stop the processes started in it first (by pid).
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `None` (the caller skips) when this process may not make namespaces (not root, or no
    /// `ip`).
    pub fn new(tag: &str) -> Option<Netns> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || !have("ip") {
            return None;
        }
        let name = format!(
            "ioth-{tag}-{:x}",
            ioth_common::sys::random_u64() & 0xff_ffff
        );
        let o = run(Command::new("ip").args(["netns", "add", &name]));
        if !o.status.success() {
            return None;
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        Some(ns)
    }

    /// `ip -n NAME ARGS…`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        run_ok(Command::new("ip").args(["-n", &self.name]).args(args));
    }

    /// `prog` run inside the namespace (`ip netns exec`, which execs it: the pid is the
    /// program's).
    pub fn exec(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(prog);
        c
    }
}

impl Netns {
    /// A file that programs run in the namespace see at `/etc/NAME` (`ip netns exec` binds
    /// `/etc/netns/NS/NAME` over it), e.g. its own `resolv.conf`; removed on drop.
    pub fn etc(&self, name: &str, content: &str) {
        let d = Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), content).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}

impl Netns {
    /// Wait (20 s at most) until the kernel here gets an answer to a ping of `addr`: the
    /// readiness of a node reached through a tunnel or a tap.
    pub fn wait_ping(&self, addr: &str) {
        wait_for(
            Duration::from_secs(20),
            &format!("{addr} answering ping"),
            || {
                run(self.exec("ping").args(["-c", "1", "-W", "1", addr]))
                    .status
                    .success()
                    .then_some(())
            },
        );
    }

    /// A TCP stream of `len` random bytes from the kernel here (python) to `node_ip`:`port`,
    /// where the node at `ctl` listens (iothctl); checked by sha256. `tmp` holds the files.
    pub fn stream_to_node(
        &self,
        tmp: &TempDir,
        ctl: &Path,
        (node_ip, port): (&str, u16),
        len: usize,
    ) {
        let mut data = vec![0u8; len];
        ioth_common::sys::getrandom(&mut data).unwrap();
        let out = tmp.join(&format!("stream{port}.out"));
        let src = tmp.join(&format!("stream{port}.in"));
        std::fs::write(&src, &data).unwrap();
        let mut server = iothctl_listen(ctl, "0.0.0.0", port, &out);
        let send = run(self.exec("python3").arg("-c").arg(format!(
            "import socket; s = socket.create_connection(('{node_ip}', {port}), timeout=30); \
             s.sendall(open('{}', 'rb').read()); s.close()",
            src.display()
        )));
        assert!(send.status.success(), "kernel sender: {}", text(&send));
        assert!(server.wait().unwrap().success());
        assert_eq!(sha256_file(&out), sha256_bytes(&data));
    }
}

/// A veth pair between two namespaces: `a_if` with `a_addr` (CIDR) in `a`, `b_if` with
/// `b_addr` in `b`, both up.
pub fn veth(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    run_ok(Command::new("ip").args([
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]));
    a.ip(&["addr", "add", a_addr, "dev", a_if]);
    b.ip(&["addr", "add", b_addr, "dev", b_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// `ioth-switch --sock DIR --daemon EXTRA…` started inside `ns` (ready when this returns).
pub fn ioth_switch_in(ns: &Netns, dir: &Path, extra: &[&str]) -> Daemon {
    start_switch(ns.exec(bin("ioth-switch")), dir, extra)
}

/// `ioth-switch ctl --sock DIR CMD…`, not started.
pub fn switch_ctl_command(dir: &Path, cmd: &str) -> Command {
    let mut c = Command::new(bin("ioth-switch"));
    c.arg("ctl")
        .arg("--sock")
        .arg(dir)
        .args(cmd.split_whitespace());
    c
}

/// One console command on a running switch (`ioth-switch ctl`); its output.
pub fn switch_ctl(dir: &Path, cmd: &str) -> String {
    let o = run_ok(&mut switch_ctl_command(dir, cmd));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A console command that must fail, saying `why`.
pub fn switch_ctl_fails(dir: &Path, cmd: &str, why: &str) {
    let o = run(&mut switch_ctl_command(dir, cmd));
    assert!(
        !o.status.success() && text(&o).contains(why),
        "{cmd}: {}",
        text(&o)
    );
}

/// Debian's nginx, if installed.
pub fn nginx_bin() -> Option<std::path::PathBuf> {
    which("nginx").or_else(|| {
        ["/usr/sbin/nginx"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
    })
}

/// An nginx configuration in `dir` serving `root`, listening on `listen` (nginx `listen`
/// arguments), with its pid file at `dir/nginx.pid`.
pub fn nginx_conf(dir: &Path, root: &Path, listen: &[&str]) -> std::path::PathBuf {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let listens: String = listen.iter().map(|l| format!("listen {l}; ")).collect();
    let conf = format!(
        "daemon on; master_process on; worker_processes 1; user root;
pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{ sendfile on; access_log off; client_body_temp_path {d}/tmp/b; proxy_temp_path {d}/tmp/p;
  fastcgi_temp_path {d}/tmp/f; uwsgi_temp_path {d}/tmp/u; scgi_temp_path {d}/tmp/s;
  server {{ {listens} root {}; }} }}
",
        root.display()
    );
    let p = dir.join("nginx.conf");
    std::fs::write(&p, conf).unwrap();
    p
}

/// The bytes of the TCP stream(s) whose (source, destination) ports `select` takes, in a
/// classic pcap file of Ethernet frames
/// (IPv4 or IPv6 without extension headers), in sequence order from the SYN, retransmissions
/// counted once; up to the first hole.
pub fn tcp_stream_where(pcap: &[u8], select: impl Fn(u16, u16) -> bool) -> Vec<u8> {
    let u16be = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let u32le = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let mut segs: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut syn = None;
    let mut off = 24;
    while off + 16 <= pcap.len() {
        let (incl, orig) = (
            u32le(pcap, off + 8) as usize,
            u32le(pcap, off + 12) as usize,
        );
        let Some(f) = pcap.get(off + 16..off + 16 + incl) else {
            break;
        };
        off += 16 + incl;
        assert_eq!(incl, orig, "a frame cut short in the capture");
        let (ip, tcp) = match f.get(12..14).map(|t| u16be(t, 0)) {
            Some(0x0800) if f.len() >= 34 && f[23] == 6 => {
                let ihl = usize::from(f[14] & 0xf) * 4;
                let total = usize::from(u16be(f, 16));
                (14 + total, 14 + ihl)
            }
            Some(0x86dd) if f.len() >= 54 && f[20] == 6 => (54 + usize::from(u16be(f, 18)), 54),
            _ => continue,
        };
        let Some(t) = f.get(tcp..ip.min(f.len())) else {
            continue;
        };
        if t.len() < 20 || !select(u16be(t, 0), u16be(t, 2)) {
            continue;
        }
        let seq = u32::from_be_bytes(t[4..8].try_into().unwrap());
        if t[13] & 0x02 != 0 {
            syn = Some(seq.wrapping_add(1));
        }
        let data = &t[usize::from(t[12] >> 4) * 4..];
        if !data.is_empty() {
            segs.push((seq, data.to_vec()));
        }
    }
    let Some(start) = syn else {
        return Vec::new();
    };
    segs.sort_by_key(|s| s.0.wrapping_sub(start));
    let mut out = Vec::new();
    for (seq, d) in segs {
        let at = seq.wrapping_sub(start) as usize;
        if at > out.len() {
            break;
        }
        if at + d.len() > out.len() {
            out.extend_from_slice(&d[out.len() - at..]);
        }
    }
    out
}

/// The TCP stream to `port` in a pcap file (see [`tcp_stream_where`]).
pub fn tcp_stream_to(pcap: &[u8], port: u16) -> Vec<u8> {
    tcp_stream_where(pcap, |_, dst| dst == port)
}

/// The TCP stream from `port` in a pcap file (see [`tcp_stream_where`]).
pub fn tcp_stream_from(pcap: &[u8], port: u16) -> Vec<u8> {
    tcp_stream_where(pcap, |src, _| src == port)
}

/// `prog` as a process of the node whose stack daemon listens on `ctl` (`IOTH_STACK`, with
/// the shim), its run directory `rundir`.
pub fn on_node(prog: impl AsRef<std::ffi::OsStr>, ctl: &Path, rundir: &Path) -> Command {
    let mut c = Command::new(prog);
    c.env("LD_PRELOAD", libioth())
        .env("IOTH_STACK", ctl)
        .env("IOTH_RUNDIR", rundir)
        .env_remove("IOTH_IP");
    c
}

/// Debian's nginx as a process of the node at `ctl`, serving `www` on `[::]:80`, its files
/// in `dir`; stopped (by its pid file) on drop.
pub fn nginx_on(ctl: &Path, rundir: &Path, dir: &Path, www: &Path) -> Daemon {
    let conf = nginx_conf(dir, www, &["[::]:80"]);
    run_ok(
        on_node(nginx_bin().expect("nginx"), ctl, rundir)
            .arg("-c")
            .arg(&conf),
    );
    Daemon::from_pidfile("nginx node", &dir.join("nginx.pid"))
}
