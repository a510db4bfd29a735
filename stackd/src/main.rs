//! `ioth-stackd`: one process per IoTh node.
//!
//! It owns a smoltcp `Interface` plugged into one switch port, the node's addresses, routes,
//! neighbours and all its sockets, serves the control protocol of `ioth_common::ctl` on a
//! unix SOCK_SEQPACKET socket, and pumps each socket's data through a kernel socketpair whose
//! other end the application holds. See `DESIGN.md` at the top of the repository.
//!
//! The daemon is the library's [`ioth_stackd::daemon`] around its sans-IO
//! [`ioth_stackd::stack`]; this file parses the command line, binds the control sockets,
//! plugs into the switch and forks into the background on request.

use clap::Parser;
use ioth_common::config::{NodeConfig, RawConfig};
use ioth_common::names;
use ioth_common::port::SwitchPort;
use ioth_common::sys::{self, Errno, Fd, UnixAddr};
use ioth_stackd::{daemon, keeper, os, stack};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// ioth per-node stack daemon.
#[derive(Parser, Debug)]
#[command(name = "ioth-stackd", version, about)]
struct Cli {
    /// Node addresses, comma-separated, with optional prefix (fd00::5/64,10.0.0.5/24), or
    /// `dhcp` (DHCPv4), `slaac` (IPv6 router advertisements) or `auto` (both).
    /// With auto modes, give --name or --mac: the MAC is otherwise random.
    #[arg(long, env = "IOTH_IP")]
    ip: Option<String>,
    /// Default gateways, comma-separated.
    #[arg(long, env = "IOTH_GW")]
    gw: Option<String>,
    /// DNS servers, comma-separated.
    #[arg(long, env = "IOTH_DNS")]
    dns: Option<String>,
    /// MAC address (default: derived from the first address; in auto modes from the name).
    #[arg(long, env = "IOTH_MAC")]
    mac: Option<String>,
    /// IP MTU (default 1500 on VDE ports, 65521 on native ports).
    #[arg(long, env = "IOTH_MTU")]
    mtu: Option<String>,
    /// Switch directory or vde://DIR (default: the per-user switch, started on demand).
    #[arg(long, env = "IOTH_SWITCH")]
    switch: Option<String>,
    /// Host name of the node.
    #[arg(long, env = "IOTH_NAME")]
    name: Option<String>,
    /// Control socket path (default: derived from the addresses and switch).
    #[arg(long)]
    ctl: Option<PathBuf>,
    /// Users (numeric uids, comma-separated or repeated) who may use this node besides its
    /// own user and root; each may act on its own sockets only.
    #[arg(long, value_delimiter = ',')]
    allow_uid: Vec<u32>,
    /// Groups (numeric gids) whose members may use this node (as with --allow-uid).
    #[arg(long, value_delimiter = ',')]
    allow_gid: Vec<u32>,
    /// Keep running when no socket and no client is left.
    #[arg(long)]
    persist: bool,
    /// Fork into the background once ready (auto modes: once addresses are configured); the
    /// parent prints the control path and exits.
    #[arg(long)]
    daemon: bool,
    /// With --daemon in auto modes (--ip auto/slaac/dhcp): seconds to wait for an address
    /// (DHCP lease or SLAAC) before giving up with an error and stopping the node.
    #[arg(long, default_value_t = 10.0)]
    addr_timeout: f64,
    /// Seconds to stay alive after the last socket and client are gone.
    #[arg(long, default_value_t = 2.0)]
    linger: f64,
    /// Seconds a connection waits for the peer to acknowledge data or FIN (or to answer
    /// zero-window probes) before failing with ETIMEDOUT; Linux's tcp_retries2 (15)
    /// takes 924.6 s. TCP_USER_TIMEOUT overrides it per socket.
    #[arg(long, env = "IOTH_TCP_RETRIES_TIMEOUT", default_value_t = 924.6)]
    tcp_retries_timeout: f64,
    /// The same for a connection the application closed (an orphan): Linux's
    /// tcp_orphan_retries (8) takes 102.2 s.
    #[arg(long, env = "IOTH_TCP_ORPHAN_TIMEOUT", default_value_t = 102.2)]
    tcp_orphan_timeout: f64,
    /// Seconds an orphan waits in FIN-WAIT-2 for the peer's FIN: Linux's tcp_fin_timeout.
    #[arg(long, env = "IOTH_TCP_FIN_TIMEOUT", default_value_t = 60.0)]
    tcp_fin_timeout: f64,
    /// Keep this node's TCP connections on the LAN: never hand a connection's socket
    /// straight to (or take one from) another node's application on this host
    /// (cut-through). Also IOTH_CUT_THROUGH=0.
    #[arg(long)]
    no_cut_through: bool,
    /// Local ports for connects and binds to port 0, LOW-HIGH (Linux's
    /// ip_local_port_range; default 49152-65535).
    #[arg(long, env = "IOTH_PORT_RANGE")]
    port_range: Option<String>,
}

/// `--port-range`/`IOTH_PORT_RANGE`: `LOW-HIGH` (or `LOW HIGH`, as the sysctl prints it),
/// 1 <= LOW <= HIGH <= 65535.
fn parse_port_range(v: &str) -> Result<(u16, u16), String> {
    let bad = || format!("IOTH_PORT_RANGE={v:?}: expected LOW-HIGH, ports 1 to 65535, LOW <= HIGH");
    let (a, b) = v
        .trim()
        .split_once(|c: char| c == '-' || c.is_whitespace())
        .ok_or_else(bad)?;
    let lo: u16 = a.trim().parse().map_err(|_| bad())?;
    let hi: u16 = b.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// `IOTH_CUT_THROUGH`: unset or 1/yes/on/true (cut-through allowed), 0/no/off/false.
fn cut_through_env() -> Result<bool, String> {
    match std::env::var("IOTH_CUT_THROUGH") {
        Err(_) => Ok(true),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "1" | "yes" | "on" | "true" => Ok(true),
            "0" | "no" | "off" | "false" => Ok(false),
            _ => Err(format!(
                "IOTH_CUT_THROUGH={v:?}: expected 1 or 0 (yes/no, on/off, true/false)"
            )),
        },
    }
}

fn main() {
    os::large_allocations_from_mmap();
    let cli = Cli::parse();
    // One descriptor per socket of every process of the node: the soft limit we inherit
    // (1024, say, from a shell, while nginx raises its own to 20,000) is not ours to keep.
    let nofile = sys::raise_fd_limit();
    let filter = std::env::var("IOTH_LOG").unwrap_or_else(|_| "off".into());
    env_logger::Builder::new()
        .parse_filters(&filter)
        .target(env_logger::Target::Stderr)
        .init();
    log::debug!("open files limit: {nofile}");
    let raw = RawConfig {
        ip: cli.ip.clone().filter(|s| !s.trim().is_empty()),
        gw: cli.gw.clone().filter(|s| !s.trim().is_empty()),
        dns: cli.dns.clone().filter(|s| !s.trim().is_empty()),
        mac: cli.mac.clone().filter(|s| !s.trim().is_empty()),
        mtu: cli.mtu.clone().filter(|s| !s.trim().is_empty()),
        switch: cli.switch.clone().filter(|s| !s.trim().is_empty()),
        name: cli.name.clone().filter(|s| !s.trim().is_empty()),
    };
    let cfg = match raw.parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ioth-stackd: {e}");
            std::process::exit(2);
        }
    };
    for (name, v) in [
        ("--linger", cli.linger),
        ("--tcp-retries-timeout", cli.tcp_retries_timeout),
        ("--tcp-orphan-timeout", cli.tcp_orphan_timeout),
        ("--tcp-fin-timeout", cli.tcp_fin_timeout),
    ] {
        if !v.is_finite() || !(0.0..=1e9).contains(&v) {
            eprintln!("ioth-stackd: {name} must be a number of seconds >= 0");
            std::process::exit(2);
        }
    }
    let cut_through = match cut_through_env() {
        Ok(on) => on && !cli.no_cut_through,
        Err(e) => {
            eprintln!("ioth-stackd: {e}");
            std::process::exit(2);
        }
    };
    let port_range = match cli.port_range.as_deref().map(parse_port_range) {
        None => stack::DEFAULT_PORT_RANGE,
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            eprintln!("ioth-stackd: {e}");
            std::process::exit(2);
        }
    };
    let secs = |v: f64| smoltcp::time::Duration::from_micros((v * 1e6) as u64);
    let tcp_timeouts = stack::TcpTimeouts {
        retries: secs(cli.tcp_retries_timeout),
        orphan: secs(cli.tcp_orphan_timeout),
        fin: secs(cli.tcp_fin_timeout),
    };
    let ctl_path = cli
        .ctl
        .clone()
        .unwrap_or_else(|| names::node_ctl_path(&cfg));
    if let Some(dir) = ctl_path.parent()
        && !dir.as_os_str().is_empty()
    {
        if cli.ctl.is_none() {
            // The run directory: ours alone, or nothing (names::ensure_private_dir).
            if let Err(e) = names::ensure_private_dir(dir) {
                eprintln!("ioth-stackd: {e}");
                std::process::exit(1);
            }
        } else {
            let _ = create_private_dir(dir);
        }
    }

    // Control socket first: if a live daemon already serves it, it won the race.
    let listener = match bind_ctl(&ctl_path) {
        Ok(Some(fd)) => fd,
        Ok(None) => {
            println!("{}", ctl_path.display());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("ioth-stackd: control socket {}: {e}", ctl_path.display());
            std::process::exit(1);
        }
    };
    let node_id = loop {
        let id = sys::random_u64();
        if id != 0 {
            break id;
        }
    };
    let abstract_listener = bind_abstract(node_id).ok();

    let (loc, port) = match open_switch(&cfg) {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_file(&ctl_path);
            eprintln!("ioth-stackd: {e}");
            std::process::exit(1);
        }
    };

    let node = Node {
        cli,
        cfg,
        id: node_id,
        ctl_path,
        listener,
        abstract_listener,
        tcp_timeouts,
        cut_through,
        port_range,
    };
    if node.cli.daemon {
        // The parent exits once the child says it has an address (at once for fixed ones).
        let (rd, wr) = match std::io::pipe() {
            Ok((r, w)) => (Fd::from(OwnedFd::from(r)), Fd::from(OwnedFd::from(w))),
            Err(e) => {
                eprintln!("ioth-stackd: pipe: {e}");
                node.give_up(1);
            }
        };
        match os::fork() {
            Ok(os::Forked::Parent(pid)) => {
                drop(wr);
                if let Err(e) = wait_ready(&rd, &node.cfg, node.cli.addr_timeout) {
                    os::kill_child(pid);
                    eprintln!("ioth-stackd: {e}");
                    node.give_up(1);
                }
                println!("{}", node.ctl_path.display());
                let _ = std::io::stdout().flush();
                os::exit_now(0);
            }
            Ok(os::Forked::Child) => {
                drop(rd);
                os::detach();
                node.keep((loc, port), wr)
            }
            Err(e) => {
                eprintln!("ioth-stackd: fork: {e}");
                node.give_up(1);
            }
        }
    }
    println!("ctl={}", node.ctl_path.display());
    let _ = std::io::stdout().flush();
    let opts = node.options(loc, None, None, Vec::new(), None, 0);
    let code = node.run(port, opts);
    std::process::exit(code);
}

/// One node's daemon, as started: what each of its daemons (see `keeper`) starts from.
struct Node {
    cli: Cli,
    cfg: NodeConfig,
    id: u64,
    ctl_path: PathBuf,
    listener: Fd,
    abstract_listener: Option<Fd>,
    tcp_timeouts: stack::TcpTimeouts,
    cut_through: bool,
    port_range: (u16, u16),
}

impl Node {
    fn options(
        &self,
        switch_loc: String,
        ready: Option<Fd>,
        keeper: Option<keeper::Reporter>,
        restored: Vec<(ioth_stackd::stack::KeptSocket, Fd)>,
        journal: Option<Fd>,
        restarts: u32,
    ) -> daemon::Options {
        daemon::Options {
            allow_uids: self.cli.allow_uid.clone(),
            allow_gids: self.cli.allow_gid.clone(),
            persist: self.cli.persist,
            linger: std::time::Duration::from_secs_f64(self.cli.linger),
            tcp_timeouts: self.tcp_timeouts,
            cut_through: self.cut_through,
            port_range: self.port_range,
            switch_loc,
            ready,
            keeper,
            restored,
            journal,
            restarts,
        }
    }

    /// Run the daemon; the exit code. A normal end (no socket left) removes the control
    /// path.
    fn run(self, port: SwitchPort, opts: daemon::Options) -> i32 {
        let code = match daemon::Daemon::new(
            self.cfg,
            self.id,
            port,
            self.listener,
            self.abstract_listener,
            opts,
        ) {
            Ok(mut n) => n.run(),
            Err(e) => {
                log::error!("{e}");
                eprintln!("ioth-stackd: {e}");
                1
            }
        };
        if code == 0 {
            let _ = std::fs::remove_file(&self.ctl_path);
        }
        code
    }

    /// The keeper (`ioth_stackd::keeper`): fork the daemon, hold its listeners, and start
    /// it again if it dies after it came up.
    fn keep(self, first: (String, SwitchPort), ready: Fd) -> ! {
        let mut store = keeper::Store::default();
        let mut budget = keeper::Budget::default();
        let mut first = Some((first, ready));
        let mut restarts = 0u32;
        let journal = os::memfd(c"ioth-journal", ioth_stackd::journal::file_len())
            .map_err(|e| log::warn!("keeper: journal: {e}"))
            .ok();
        loop {
            let (kch, dch) =
                match sys::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC) {
                    Ok(p) => p,
                    Err(e) => {
                        log::error!("keeper: socketpair: {e}");
                        self.stop(store, 1)
                    }
                };
            match os::fork() {
                Ok(os::Forked::Child) => {
                    drop(kch);
                    os::set_name(c"ioth-stackd");
                    let ((loc, port), ready) = match first.take() {
                        Some((sw, r)) => (sw, Some(r)),
                        None => match open_switch(&self.cfg) {
                            Ok(sw) => (sw, None),
                            Err(e) => {
                                log::error!("{e}");
                                std::process::exit(1);
                            }
                        },
                    };
                    let restored = store.copies();
                    drop(store);
                    let journal = journal.as_ref().and_then(|j| j.dup_cloexec(0).ok());
                    let reporter = Some(keeper::Reporter::new(dch));
                    let opts = self.options(loc, ready, reporter, restored, journal, restarts);
                    let code = self.run(port, opts);
                    std::process::exit(code);
                }
                Ok(os::Forked::Parent(pid)) => {
                    drop(dch);
                    // The switch port and the ready pipe are the first daemon's alone.
                    first = None;
                    os::set_name(c"ioth-keeper");
                    let ended = keeper::watch(&kch, pid, &mut store);
                    log::warn!("daemon {pid} ended: {:?}", ended.exit);
                    // As systemd's Restart=on-failure: an exit with status 0 (no socket
                    // left) or by SIGTERM, SIGINT or SIGHUP is a stop, not a failure.
                    match ended.exit {
                        os::Exit::Code(0) => os::exit_now(0),
                        os::Exit::Signal(libc::SIGTERM | libc::SIGINT | libc::SIGHUP) => {
                            self.stop(store, 0)
                        }
                        os::Exit::Code(c) if !ended.was_up => self.stop(store, c),
                        os::Exit::Signal(_) if !ended.was_up => self.stop(store, 1),
                        _ => {}
                    }
                    if !budget.allow() {
                        log::error!(
                            "keeper: {} restarts within {} s: giving up",
                            keeper::MAX_RESTARTS,
                            keeper::RESTART_WINDOW.as_secs()
                        );
                        self.stop(store, 1);
                    }
                    restarts += 1;
                }
                Err(e) => {
                    log::error!("keeper: fork: {e}");
                    self.stop(store, 1)
                }
            }
        }
    }

    /// The keeper stops starting daemons: the control path and listeners go (a process of
    /// the node starts a new node), and the listeners' daemon ends are held until the
    /// applications close their ends (`keeper::hold`: their listeners stay quiet instead of
    /// reading EOF, on which servers spin).
    fn stop(self, store: keeper::Store, code: i32) -> ! {
        let _ = std::fs::remove_file(&self.ctl_path);
        drop(self);
        keeper::hold(store);
        os::exit_now(code)
    }

    /// No daemon (any more): the control path goes (nobody serves it), and so does the
    /// process.
    fn give_up(&self, code: i32) -> ! {
        let _ = std::fs::remove_file(&self.ctl_path);
        os::exit_now(code)
    }
}

/// `--daemon` parent: wait for the child's "ready" byte. Fixed addresses are ready at once;
/// auto mode waits for the first DHCP lease or SLAAC address, up to `secs`.
fn wait_ready(rd: &Fd, cfg: &ioth_common::config::NodeConfig, secs: f64) -> Result<(), String> {
    let auto = matches!(cfg.addrs, ioth_common::config::AddrMode::Auto { .. });
    let limit = if auto && secs.is_finite() && secs >= 0.0 {
        std::time::Duration::from_secs_f64(secs)
    } else {
        std::time::Duration::from_secs(30)
    };
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut p = [libc::pollfd {
            fd: rd.raw(),
            events: libc::POLLIN,
            revents: 0,
        }];
        match sys::poll(&mut p, left.as_millis().min(i32::MAX as u128) as i32) {
            Ok(0) if auto => {
                return Err(format!(
                    "no address from {} within {} s (is there a DHCP server or router on the \
                     switch?)",
                    match cfg.addrs {
                        ioth_common::config::AddrMode::Auto {
                            slaac: true,
                            dhcp4: true,
                        } => "DHCP or a router advertisement",
                        ioth_common::config::AddrMode::Auto { slaac: true, .. } => {
                            "a router advertisement"
                        }
                        _ => "DHCP",
                    },
                    limit.as_secs_f64()
                ));
            }
            Ok(0) => return Err("the daemon did not start in time".into()),
            Ok(_) => {
                let mut b = [0u8; 1];
                return match sys::read(rd.raw(), &mut b) {
                    Ok(1) => Ok(()),
                    _ => Err(
                        "the daemon failed to start (run it without --daemon to see why)".into(),
                    ),
                };
            }
            Err(e) if e == Errno::EINTR => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Bind and listen on the control path. `Ok(None)`: a live daemon already serves it.
fn bind_ctl(path: &Path) -> Result<Option<Fd>, Errno> {
    let addr = UnixAddr::path(path);
    let mk = || {
        sys::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    let fd = mk()?;
    match sys::bind_unix(fd.raw(), &addr) {
        Ok(()) => {}
        Err(Errno::EADDRINUSE) => {
            let probe = sys::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)?;
            if sys::retry(|| sys::connect_unix(probe.raw(), &addr)).is_ok() {
                return Ok(None);
            }
            let _ = std::fs::remove_file(path);
            sys::bind_unix(fd.raw(), &addr)?;
        }
        Err(e) => return Err(e),
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    sys::listen(fd.raw(), 128)?;
    Ok(Some(fd))
}

fn bind_abstract(node_id: u64) -> Result<Fd, Errno> {
    sys::unix_listener(libc::SOCK_SEQPACKET, &names::node_ctl_name(node_id), 128)
}

/// Open the node's switch port; with no switch configured, use (and if needed start) the
/// per-user default switch.
fn open_switch(cfg: &ioth_common::config::NodeConfig) -> Result<(String, SwitchPort), String> {
    let desc = stack::port_description(cfg);
    let want = daemon::want_frame(cfg.mtu);
    if let Some(loc) = &cfg.switch {
        return SwitchPort::open_with_shortcuts(loc, &desc, want)
            .map(|p| (loc.clone(), p))
            .map_err(|e| format!("cannot plug into the switch: {e}"));
    }
    let dir = names::default_switch_dir();
    let loc = dir.to_string_lossy().into_owned();
    // The per-user switch lives in the run directory, which must be ours alone, and so must
    // the switch's own directory if it is there already: another user could have made either
    // first and be waiting with a switch of their own.
    if let Some(parent) = dir.parent() {
        names::ensure_private_dir(parent).map_err(|e| e.to_string())?;
    }
    if std::fs::symlink_metadata(&dir).is_ok() {
        names::ensure_private_dir(&dir).map_err(|e| e.to_string())?;
    }
    if let Ok(p) = SwitchPort::open_with_shortcuts(&loc, &desc, want) {
        return Ok((loc, p));
    }
    let exe = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("ioth-switch")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("ioth-switch"));
    let status = std::process::Command::new(&exe)
        .arg("--sock")
        .arg(&dir)
        .arg("--daemon")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    if !status.success() {
        // Another node may have started it at the same time: try once more anyway.
        log::warn!("{} exited with {status}", exe.display());
    }
    SwitchPort::open_with_shortcuts(&loc, &desc, want)
        .map(|p| (loc, p))
        .map_err(|e| format!("cannot plug into the default switch: {e}"))
}
