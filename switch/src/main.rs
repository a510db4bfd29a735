//! `ioth-switch`: the command line. `ioth-switch --sock DIR [options]` runs a switch;
//! `ioth-switch ctl --sock DIR COMMAND...` sends one console command to a running switch.
//!
//! With `--daemon` the process forks once every socket is bound and listening; the parent
//! writes the pid file (if asked) and exits 0 only then, so "the command returned" means
//! "the switch accepts connections".

use clap::{Parser, Subcommand};
use ioth_common::sys::{self, UnixAddr};
use ioth_switch::server::{self, Config, HttpNode, Server};
use ioth_switch::status;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "ioth-switch",
    version,
    about = "ioth's virtual Ethernet switch (VDE v3 compatible, plus native ports)",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Switch directory (holds ctl, native, mgmt and the ports' data sockets).
    #[arg(short = 's', long, required = true)]
    sock: Option<PathBuf>,
    /// Mode of the port sockets, ctl and native (octal; default 0600).
    #[arg(short = 'm', long, value_parser = parse_octal)]
    mode: Option<u32>,
    /// Mode of the directory (octal; default 0700, or derived from --mode and --mgmt-mode
    /// like vde_switch: setgid, x where r or w; and sticky if others may write).
    #[arg(long, value_parser = parse_octal)]
    dirmode: Option<u32>,
    /// Group owning the directory and port sockets (name or gid).
    #[arg(short = 'g', long)]
    group: Option<String>,
    /// Mode of the console socket DIR/mgmt (octal), whatever --mode says: the console can
    /// stop the switch and change its VLANs.
    #[arg(long, visible_alias = "mgmtmode", value_parser = parse_octal, default_value = "0600")]
    mgmt_mode: u32,
    /// Group of the console socket (name or gid; default: the directory's).
    #[arg(long, visible_alias = "mgmtgroup")]
    mgmt_group: Option<String>,
    /// Write every received frame to this pcap file.
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Most ports in use at once (each connected node takes one; a port costs nothing until
    /// it is used). A client beyond them is refused, and told that the switch is full.
    #[arg(short = 'n', long, visible_alias = "ports", default_value_t = DEFAULT_NUMPORTS,
          value_parser = clap::value_parser!(u32).range(1..=65535))]
    numports: u32,
    /// Act as a hub: flood every frame to every port.
    #[arg(short = 'x', long)]
    hub: bool,
    /// Bound of each port's output queue, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    queue: usize,
    /// Never offer shortcuts (direct socketpairs between two ioth stacks' native ports);
    /// there are none anyway with --pcap or --hub.
    #[arg(long)]
    no_shortcuts: bool,
    /// Move frames between the switch and the stacks' native ports through their sockets
    /// only, not through shared-memory rings.
    #[arg(long)]
    no_rings: bool,
    /// Send every frame for a VXLAN uplink through the switch: never let a stack daemon send
    /// the frames for a MAC learned behind the uplink straight to its tunnel endpoint.
    #[arg(long)]
    no_uplink_shortcuts: bool,
    /// Keep TCP connections between nodes on the LAN: the stacks at the ends of a shortcut
    /// may not hand a connection's socket from application to application (cut-through).
    #[arg(long)]
    no_cut_through: bool,
    /// Most MAC addresses the switch learns on one port; frames from further source
    /// addresses are forwarded but not learned (counted as not_learned in port/print).
    #[arg(long, default_value_t = ioth_switch::core::DEFAULT_MAX_MACS_PER_PORT as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_macs_per_port: u32,
    /// Most MAC addresses the switch learns in all.
    #[arg(long, default_value_t = ioth_switch::core::DEFAULT_MAX_MACS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_macs: u32,
    /// Port security: a port keeps the first source MAC it sends for its life; frames from
    /// it with another source are dropped (counted as lock in port/print), and no other port
    /// may use that MAC. Not for cables to other switches.
    #[arg(long)]
    port_lock: bool,
    /// Carry the LAN to other hosts: `vxlan://ADDR[/port=4789][/vni=1][/ttl=1][/if=IFACE]`
    /// (vdeplug4's syntax; ADDR a multicast group, default 239.0.0.1, or unicast peers
    /// separated by commas), or any other vdeplug4 URL (`vxvde://`, `slirp://`, `tap://`,
    /// `udp://`, `vde://`…) through Debian's `vde_plug`, which the switch runs and restarts.
    /// Repeatable; each uplink is one port.
    #[arg(long, value_parser = ioth_switch::uplink::parse_url)]
    uplink: Vec<ioth_switch::uplink::UplinkUrl>,
    /// Seed of the impairments' random decisions (loss, duplication, jitter, reordering)
    /// that set no `seed=` of their own: the same seed and the same traffic repeat a run.
    /// Default: a random one, shown by `showinfo`.
    #[arg(long)]
    seed: Option<u64>,
    /// Serve a status page (`/`), the LAN as JSON (`/api/ports`) and Prometheus metrics
    /// (`/metrics`) on this TCP address, e.g. 127.0.0.1:8080 (port 0: any; `showinfo` says
    /// which). Off by default.
    #[arg(long, value_name = "ADDR:PORT")]
    http: Option<String>,
    /// Serve the same on the virtual LAN, on port 80 of a node of the switch's own with
    /// these addresses (`IOTH_IP`'s syntax, e.g. `fd00::80,10.0.0.80`). Off by default.
    #[arg(long, value_name = "ADDR")]
    http_node: Option<String>,
    /// The name of `--http-node`'s node (answered over multicast DNS: `NAME` and
    /// `NAME.local`).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "ioth-switch",
        requires = "http_node"
    )]
    http_node_name: String,
    /// Fork into the background once listening (the parent exits 0 when ready).
    #[arg(short = 'd', long)]
    daemon: bool,
    /// Write the switch's pid to this file.
    #[arg(short = 'p', long)]
    pidfile: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send one command to a running switch's console and print the answer.
    Ctl {
        /// Switch directory.
        #[arg(short = 's', long)]
        sock: PathBuf,
        /// The command and its arguments, e.g. `port/print`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// `--http-node`'s program (the switch runs it as a node of its own): serve the status
    /// page, `/api/ports` and `/metrics` on LISTEN, asking the console of the switch at DIR.
    #[command(hide = true)]
    StatusNode {
        #[arg(short = 's', long)]
        sock: PathBuf,
        #[arg(long, default_value = "[::]:80")]
        listen: String,
    },
}

/// Default `--numports`: hundreds of nodes on one switch. Ports are made as clients come, so
/// an idle switch costs the same whatever the number.
const DEFAULT_NUMPORTS: u32 = 1024;

/// Descriptors a switch may need beyond its ports: listeners, epoll, signalfd, the pcap file,
/// handshakes in progress, console connections, both ends of each shortcut.
const FD_OVERHEAD: u64 = 16 + 256 + 32 + 2 * ioth_switch::core::DEFAULT_SHORTCUT_LIMIT as u64;

fn parse_octal(s: &str) -> Result<u32, String> {
    let t = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(t, 8) {
        Ok(v) if v <= 0o7777 => Ok(v),
        _ => Err(format!("{s:?} is not an octal mode")),
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// vde_switch's rule: setgid, plus x wherever the socket mode has r or w; and sticky when
/// others than the owner may write, so that they can add their own sockets (as `vde_plug`
/// does) but not remove or replace the switch's (`mgmt`, `ctl`, `native`).
fn derived_dirmode(mode: u32) -> u32 {
    let d = 0o2000 | (mode & 0o777) | ((mode & 0o444) >> 2) | ((mode & 0o222) >> 1);
    if d & 0o022 != 0 { d | 0o1000 } else { d }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .parse_filters(&std::env::var("IOTH_LOG").unwrap_or_else(|_| "error".into()))
        .init();
    match cli.cmd {
        Some(Cmd::Ctl { sock, command }) if command.first().is_some_and(|c| c == "capture") => {
            capture(&sock, &command[1..])
        }
        Some(Cmd::Ctl { sock, command }) => ctl(&sock, &command.join(" ")),
        Some(Cmd::StatusNode { sock, listen }) => status_node(&sock, &listen),
        None => run(cli),
    }
}

fn run(cli: Cli) -> ExitCode {
    let Some(dir) = cli.sock else {
        eprintln!("ioth-switch: --sock DIR is required");
        return ExitCode::from(2);
    };
    let (group, mgmt_group) = match (
        cli.group.as_deref().map(server::resolve_group).transpose(),
        cli.mgmt_group
            .as_deref()
            .map(server::resolve_group)
            .transpose(),
    ) {
        (Ok(g), Ok(m)) => (g, m),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("ioth-switch: {e}");
            return ExitCode::from(2);
        }
    };
    let mode = cli.mode.unwrap_or(0o600);
    // The owner must still reach the console: the derived mode covers both sockets' modes.
    let dirmode = cli.dirmode.unwrap_or_else(|| {
        cli.mode.map_or(0o700, |m| {
            derived_dirmode(m) | derived_dirmode(cli.mgmt_mode)
        })
    });
    if cli.dirmode.is_some() && cli.mgmt_mode & 0o600 != 0 && dirmode & 0o100 == 0 {
        eprintln!(
            "ioth-switch: warning: --dirmode {dirmode:o} does not let the owner reach DIR/mgmt"
        );
    }
    let http_node = match cli.http_node.map(|ip| http_node(ip, cli.http_node_name)) {
        Some(Err(e)) => {
            eprintln!("ioth-switch: --http-node: {e}");
            return ExitCode::from(2);
        }
        Some(Ok(n)) => Some(n),
        None => None,
    };
    let cfg = Config {
        dir: absolute(&dir),
        mode,
        mgmt_mode: cli.mgmt_mode,
        mgmt_group,
        dirmode,
        dirmode_explicit: cli.dirmode.is_some(),
        group,
        pcap: cli.pcap.as_deref().map(absolute),
        numports: cli.numports,
        hub: cli.hub,
        queue: cli.queue,
        shortcuts: !cli.no_shortcuts,
        rings: !cli.no_rings,
        uplink_shortcuts: !cli.no_uplink_shortcuts,
        cut_through: !cli.no_cut_through,
        max_macs_per_port: cli.max_macs_per_port as usize,
        max_macs: cli.max_macs as usize,
        port_lock: cli.port_lock,
        uplinks: cli.uplink,
        seed: cli.seed,
        http: cli.http,
        http_node,
    };
    // Every port holds a descriptor (two for a VDE port): the soft limit (often 1024) goes up
    // to the hard one, and if even that is short of the ports asked for, say so now rather
    // than when the ports run out.
    let limit = sys::raise_fd_limit();
    let need = 2 * u64::from(cli.numports) + FD_OVERHEAD;
    if limit < need {
        eprintln!(
            "ioth-switch: warning: the open-file limit ({limit}) is below what {} ports may \
             need ({need}: two per VDE port, one per native port); raise it (ulimit -Hn) or \
             ask for fewer --numports",
            cli.numports
        );
    }
    let pidfile = cli.pidfile.as_deref().map(absolute);
    let mut server = match Server::bind(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ioth-switch: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Block the termination signals before forking, so none is lost in between; the signalfd
    // itself is made after the fork, in the process that polls it.
    if let Err(e) = ioth_switch::os::block_termination_signals() {
        log::error!("sigprocmask: {e}");
    }
    if cli.daemon {
        match ioth_switch::os::fork() {
            Err(e) => {
                eprintln!("ioth-switch: fork: {e}");
                return ExitCode::FAILURE;
            }
            Ok(0) => {
                let _ = ioth_switch::os::setsid();
                let _ = ioth_switch::os::stdio_to_devnull();
                ioth_switch::os::close_other_fds(&server.owned_fds());
                let _ = std::env::set_current_dir("/");
            }
            Ok(child) => {
                if let Some(p) = &pidfile
                    && let Err(e) = std::fs::write(p, format!("{child}\n"))
                {
                    eprintln!("ioth-switch: pidfile {}: {e}", p.display());
                }
                // Ready: every socket is listening in the child.
                std::process::exit(0);
            }
        }
    } else if let Some(p) = &pidfile
        && let Err(e) = std::fs::write(p, format!("{}\n", sys::getpid()))
    {
        eprintln!("ioth-switch: pidfile {}: {e}", p.display());
    }
    if let Err(e) = server.catch_signals() {
        log::error!("{e}");
    }
    server.run();
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    ExitCode::SUCCESS
}

/// Read from `fd` until `done(buf)` says the answer is complete (10 s at most).
fn read_until(fd: i32, buf: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut chunk = [0u8; 4096];
    while !done(buf) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero()
            || !sys::wait_fd(fd, libc::POLLIN, left.as_millis() as i32)
                .map_err(|e| e.to_string())?
        {
            return Err("timed out waiting for the switch".into());
        }
        match sys::retry(|| sys::read(fd, &mut chunk)) {
            Ok(0) => return Err("the switch closed the console".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// A console answer: the lines of its data block (`0000 DATA END WITH '.'` ... `.`) and,
/// once the answer is complete, its result line (`1000 Success`, `1NNN error`) with the code.
fn parse_answer(text: &str) -> (Vec<&str>, Option<(usize, &str)>) {
    let mut data = Vec::new();
    let mut in_data = false;
    for l in text.lines() {
        if l.starts_with("0000 DATA END WITH") {
            in_data = true;
        } else if in_data {
            if l == "." {
                in_data = false;
            } else {
                data.push(l);
            }
        } else if l.len() >= 5
            && l.as_bytes()[0] == b'1'
            && l.as_bytes()[1..4].iter().all(u8::is_ascii_digit)
            && l.as_bytes()[4] == b' '
        {
            return (data, Some((l[..4].parse().unwrap_or(1999), l)));
        }
    }
    (data, None)
}

/// The exit status of a `ctl` command; its error, if any, on standard error.
fn exit_code(r: Result<ExitCode, String>) -> ExitCode {
    r.unwrap_or_else(|e| {
        eprintln!("ioth-switch ctl: {e}");
        ExitCode::FAILURE
    })
}

/// A console connection past the banner and first prompt.
fn console(dir: &Path) -> Result<sys::Fd, String> {
    let path = dir.join("mgmt");
    let fd = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
        .map_err(|e| e.to_string())?;
    sys::retry(|| sys::connect_unix(fd.raw(), &UnixAddr::path(&path)))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = Vec::new();
    read_until(fd.raw(), &mut buf, |b| b.ends_with(b"vde$ "))?;
    Ok(fd)
}

/// `ctl capture [PORT] [--count N]`: the console's `capture`, its pcap stream copied to
/// standard output until the switch ends it (after N frames) or the reader goes
/// (`| tcpdump -r -` exiting is a normal end).
fn capture(dir: &Path, args: &[String]) -> ExitCode {
    let r = (|| -> Result<ExitCode, String> {
        let mut line = String::from("capture");
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--count" | "-c" => {
                    let n = it.next().ok_or("--count needs a number")?;
                    line.push_str(&format!(" count={n}"));
                }
                _ => line.push_str(&format!(" {a}")),
            }
        }
        line.push('\n');
        let fd = console(dir)?;
        sys::send(fd.raw(), line.as_bytes(), libc::MSG_NOSIGNAL).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        read_until(fd.raw(), &mut buf, |b| b.contains(&b'\n'))?;
        let nl = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
        let first = String::from_utf8_lossy(&buf[..nl]).into_owned();
        if !first.starts_with("1000 ") {
            eprintln!("ioth-switch ctl: {first}");
            return Ok(ExitCode::FAILURE);
        }
        let mut out = std::io::stdout().lock();
        let mut rest = buf.split_off((nl + 1).min(buf.len()));
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            if let Err(e) = out.write_all(&rest).and_then(|_| out.flush()) {
                // The reader went (tcpdump exited): the capture is over.
                return if e.kind() == std::io::ErrorKind::BrokenPipe {
                    Ok(ExitCode::SUCCESS)
                } else {
                    Err(format!("standard output: {e}"))
                };
            }
            // Wait for frames, or for the reader of standard output to go (a pipe whose
            // reader closed polls POLLERR): `| tcpdump -c N` ends the capture when tcpdump does,
            // not at the next frame.
            let mut pfd = [
                libc::pollfd {
                    fd: fd.raw(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: libc::STDOUT_FILENO,
                    events: 0,
                    revents: 0,
                },
            ];
            sys::poll(&mut pfd, -1).map_err(|e| e.to_string())?;
            if pfd[1].revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                return Ok(ExitCode::SUCCESS);
            }
            if pfd[0].revents == 0 {
                rest.clear();
                continue;
            }
            match sys::retry(|| sys::read(fd.raw(), &mut chunk)) {
                Ok(0) => return Ok(ExitCode::SUCCESS),
                Ok(n) => rest = chunk[..n].to_vec(),
                Err(e) => return Err(e.to_string()),
            }
        }
    })();
    exit_code(r)
}

/// One console command: the lines of its answer's data, and its result line with the code.
fn ask(dir: &Path, command: &str) -> Result<(Vec<String>, usize, String), String> {
    let fd = console(dir)?;
    let line = format!("{}\n", command.replace('\n', " "));
    sys::send(fd.raw(), line.as_bytes(), libc::MSG_NOSIGNAL).map_err(|e| e.to_string())?;
    let mut ans = Vec::new();
    read_until(fd.raw(), &mut ans, |b| {
        parse_answer(&String::from_utf8_lossy(b)).1.is_some()
    })?;
    let _ = sys::send(fd.raw(), b"logout\n", libc::MSG_NOSIGNAL);
    let text = String::from_utf8_lossy(&ans).into_owned();
    let (data, result) = parse_answer(&text);
    let (code, l) = result.ok_or("no answer")?;
    Ok((
        data.iter().map(|l| l.to_string()).collect(),
        code,
        l.to_string(),
    ))
}

fn ctl(dir: &Path, command: &str) -> ExitCode {
    let r = ask(dir, command).map(|(data, code, line)| {
        for l in data {
            println!("{l}");
        }
        if code == 1000 {
            ExitCode::SUCCESS
        } else {
            eprintln!("ioth-switch ctl: {line}");
            ExitCode::FAILURE
        }
    });
    exit_code(r)
}

/// `--http-node ADDR`: checked as a node would check its `IOTH_IP` and `IOTH_NAME`, and the
/// shim found (`IOTH_LIB`, or `libioth.so` beside this program or in `../lib`).
fn http_node(ip: String, name: String) -> Result<HttpNode, String> {
    let raw = ioth_common::config::RawConfig {
        ip: Some(ip.clone()),
        name: Some(name.clone()),
        ..Default::default()
    };
    let cfg = raw.parse().map_err(|e| e.to_string())?;
    let v6 = match &cfg.addrs {
        ioth_common::config::AddrMode::Static(v) => v.iter().any(|c| c.addr.is_ipv6()),
        ioth_common::config::AddrMode::Auto { slaac, .. } => *slaac,
    };
    let exe = std::env::current_exe().map_err(|e| format!("where is this program: {e}"))?;
    let here = exe.parent().unwrap_or(Path::new("/"));
    let lib = std::env::var_os("IOTH_LIB")
        .map(PathBuf::from)
        .into_iter()
        .chain([here.join("libioth.so"), here.join("../lib/libioth.so")])
        .find(|p| p.is_file())
        .ok_or("libioth.so not found beside ioth-switch or in ../lib (set IOTH_LIB)")?;
    Ok(HttpNode {
        ip,
        name: Some(name),
        lib: lib.canonicalize().unwrap_or(lib),
        exe,
        listen: if v6 { "[::]:80" } else { "0.0.0.0:80" }.into(),
    })
}

/// `status-node`: the status server of `--http-node`, in a node of the switch's own. Each
/// request asks the switch's console; the program ends when the switch that started it
/// does (its parent changes).
fn status_node(dir: &Path, listen: &str) -> ExitCode {
    let server = match tiny_http::Server::http(listen) {
        Ok(s) => std::sync::Arc::new(s),
        Err(e) => {
            eprintln!("ioth-switch status-node: {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let parent = std::os::unix::process::parent_id();
    let watch = server.clone();
    std::thread::spawn(move || {
        while std::os::unix::process::parent_id() == parent {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        watch.unblock();
    });
    status::serve(server, |want| {
        let cmd = match want {
            status::Want::Ports => "status/json",
            status::Want::Metrics => "status/metrics",
        };
        match ask(dir, cmd) {
            Ok((data, 1000, _)) => Some(data.join("\n") + "\n"),
            Ok((_, _, line)) => {
                log::warn!("{cmd}: {line}");
                None
            }
            Err(e) => {
                log::warn!("{cmd}: {e}");
                None
            }
        }
    });
    ExitCode::SUCCESS
}
