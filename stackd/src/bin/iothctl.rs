//! `iothctl`: talk to an `ioth-stackd` through its control protocol, without the preload
//! shim. Used by the end-to-end tests and by the benchmark ("the stack alone").
//!
//! * `iothctl --ctl PATH info`: the node description;
//! * `iothctl --ctl PATH listen [--once] ADDR PORT`: accept connections (one with `--once`)
//!   and copy each to stdout until EOF; `listening` on stderr when ready;
//! * `iothctl --ctl PATH connect ADDR PORT`: stdin to the connection, then half-close, and
//!   the connection to stdout until EOF;
//! * `iothctl --ctl PATH ping [-c N] ADDR`: ICMP echo through an ICMP datagram socket; exit
//!   status 0 iff every request got its reply;
//! * `iothctl --ctl PATH forward LISTEN ADDR PORT`: a port forwarder from the host into the
//!   virtual LAN: every connection to the kernel TCP address LISTEN (e.g. `127.0.0.1:8080`)
//!   is joined to a connection the node makes to ADDR PORT, so an ordinary program (a
//!   browser) reaches a node; `forwarding` on stderr when ready;
//! * `iothctl --ctl PATH expose ADDR PORT TARGET`: the other way: the node listens on ADDR
//!   PORT and joins every connection to the kernel TCP address TARGET (a host service made
//!   reachable from the virtual LAN); `listening` on stderr when ready.
//!
//! Both forwarders copy each direction in its own thread and pass half-closes on; a
//! connection that cannot be made is closed at once (and said on stderr); they run until
//! killed.

use clap::{Parser, Subcommand};
use ioth_common::ctl::{AcceptRecord, Client, DgramHeader, Reply, Request, WireAddr};
use ioth_common::sys::{self, Errno, Fd, UnixAddr};
use std::io::{IoSliceMut, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{OwnedFd, RawFd};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "iothctl",
    version,
    about = "Control-protocol client for ioth-stackd"
)]
struct Cli {
    /// The node's control socket.
    #[arg(long, env = "IOTH_STACK")]
    ctl: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the node description.
    Info,
    /// Accept TCP connections and copy them to stdout.
    Listen {
        /// Accept a single connection, then exit.
        #[arg(long)]
        once: bool,
        addr: IpAddr,
        port: u16,
    },
    /// Connect, send stdin, half-close, copy the connection to stdout.
    Connect { addr: IpAddr, port: u16 },
    /// Forward connections to the kernel address LISTEN into the virtual LAN (ADDR PORT).
    Forward {
        listen: SocketAddr,
        addr: IpAddr,
        port: u16,
    },
    /// Listen on the node (ADDR PORT) and forward connections to the kernel address TARGET.
    Expose {
        addr: IpAddr,
        port: u16,
        target: SocketAddr,
    },
    /// ICMP echo.
    Ping {
        #[arg(short = 'c', default_value_t = 3)]
        count: u32,
        /// Seconds between requests.
        #[arg(short = 'i', default_value_t = 0.2)]
        interval: f64,
        /// Seconds to wait for each reply.
        #[arg(short = 'W', default_value_t = 2.0)]
        wait: f64,
        addr: IpAddr,
    },
}

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("iothctl: {msg}");
    std::process::exit(1)
}

fn main() {
    let cli = Cli::parse();
    let addr = if cli.ctl.starts_with('@') {
        UnixAddr::Abstract(cli.ctl.as_bytes()[1..].to_vec())
    } else {
        UnixAddr::path(&cli.ctl)
    };
    let c = Client::connect(&addr).unwrap_or_else(|e| die(format!("{}: {e}", cli.ctl)));
    match cli.cmd {
        Cmd::Info => match call(&c, &Request::NodeInfo, None).0 {
            Reply::Bytes(b) => {
                let _ = std::io::stdout().write_all(&b);
            }
            r => die(format!("unexpected reply {r:?}")),
        },
        Cmd::Listen { once, addr, port } => listen(&c, addr, port, once),
        Cmd::Connect { addr, port } => connect(&c, addr, port),
        Cmd::Forward { listen, addr, port } => forward(&c, listen, addr, port),
        Cmd::Expose { addr, port, target } => expose(&c, addr, port, target),
        Cmd::Ping {
            count,
            interval,
            wait,
            addr,
        } => ping(&c, addr, count, interval, wait),
    }
}

fn call(c: &Client, req: &Request, fd: Option<RawFd>) -> (Reply, Vec<Fd>) {
    c.call(req, fd)
        .unwrap_or_else(|e| die(format!("control connection: {e}")))
}

fn domain(a: &IpAddr) -> i32 {
    if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// `socket()`: the id and the app's fd.
fn socket(c: &Client, domain: i32, ty: i32, protocol: i32) -> (u64, Fd) {
    match call(
        c,
        &Request::Socket {
            domain,
            ty,
            protocol,
        },
        None,
    ) {
        (Reply::Created(id), mut fds) if !fds.is_empty() => (id, fds.remove(0)),
        (Reply::Err(e), _) => die(format!("socket: {e}")),
        (r, _) => die(format!("socket: unexpected reply {r:?}")),
    }
}

fn check(what: &str, r: (Reply, Vec<Fd>)) {
    if let Reply::Err(e) = r.0 {
        die(format!("{what}: {e}"))
    }
}

/// A virtual TCP listener on the node (SO_REUSEADDR, backlog 128): its fd.
fn virt_listen(c: &Client, addr: IpAddr, port: u16) -> Fd {
    let (id, fd) = socket(c, domain(&addr), libc::SOCK_STREAM, 0);
    let one = 1i32.to_ne_bytes().to_vec();
    check(
        "setsockopt",
        call(
            c,
            &Request::SetSockOpt {
                id,
                level: libc::SOL_SOCKET,
                name: libc::SO_REUSEADDR,
                value: one,
            },
            None,
        ),
    );
    let wa = WireAddr(Some(SocketAddr::new(addr, port)));
    check("bind", call(c, &Request::Bind { id, addr: wa }, None));
    check(
        "listen",
        call(c, &Request::Listen { id, backlog: 128 }, None),
    );
    fd
}

fn listen(c: &Client, addr: IpAddr, port: u16, once: bool) {
    let fd = virt_listen(c, addr, port);
    eprintln!("listening");
    loop {
        let (conn, _rec) = accept(fd.raw()).unwrap_or_else(|e| die(format!("accept: {e}")));
        copy(conn.raw(), 1).unwrap_or_else(|e| die(format!("copy: {e}")));
        drop(conn);
        if once {
            break;
        }
    }
}

/// Receive one accept record and its connection fd from a listener fd.
pub fn accept(lfd: RawFd) -> Result<(Fd, AcceptRecord), Errno> {
    let mut b = [0u8; ioth_common::ctl::ACCEPT_RECORD_LEN];
    let got = sys::retry(|| sys::recvmsg(lfd, &mut [IoSliceMut::new(&mut b)], 0))?;
    if got.len == 0 {
        return Err(Errno(libc::EINVAL));
    }
    let rec = AcceptRecord::decode(&b[..got.len])?;
    let fd = got.fds.into_iter().next().ok_or(Errno::EPROTO)?;
    Ok((fd, rec))
}

/// Copy `from` to `to` until EOF, in large blocks.
fn copy(from: RawFd, to: RawFd) -> Result<u64, Errno> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = sys::retry(|| sys::read(from, &mut buf))?;
        if n == 0 {
            return Ok(total);
        }
        sys::write_all(to, &buf[..n])?;
        total += n as u64;
    }
}

/// A virtual TCP connection from the node to ADDR PORT, once established.
fn virt_connect(c: &Client, addr: IpAddr, port: u16) -> Result<Fd, String> {
    let (id, fd) = socket(c, domain(&addr), libc::SOCK_STREAM, 0);
    let wa = WireAddr(Some(SocketAddr::new(addr, port)));
    match call(c, &Request::Connect { id, addr: wa }, Some(fd.raw())).0 {
        Reply::Ok => Ok(fd),
        Reply::Err(e) if e.0 == libc::EINPROGRESS => {
            sys::wait_fd(fd.raw(), libc::POLLOUT, -1).map_err(|e| e.to_string())?;
            let err = match call(
                c,
                &Request::GetSockOpt {
                    id,
                    level: libc::SOL_SOCKET,
                    name: libc::SO_ERROR,
                    len: 4,
                },
                None,
            )
            .0
            {
                Reply::Bytes(b) if b.len() == 4 => i32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                r => return Err(format!("SO_ERROR: unexpected reply {r:?}")),
            };
            if err != 0 {
                return Err(format!("connect: {}", Errno(err)));
            }
            Ok(fd)
        }
        Reply::Err(e) => Err(format!("connect: {e}")),
        r => Err(format!("connect: unexpected reply {r:?}")),
    }
}

fn connect(c: &Client, addr: IpAddr, port: u16) {
    let fd = virt_connect(c, addr, port).unwrap_or_else(|e| die(e));
    let wfd = fd.raw();
    let writer = std::thread::spawn(move || {
        let r = copy(0, wfd);
        let _ = sys::shutdown(wfd, libc::SHUT_WR);
        r
    });
    let r = copy(fd.raw(), 1);
    if let Err(e) = r {
        die(format!("receive: {e}"));
    }
    match writer.join() {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => die(format!("send: {e}")),
        Err(_) => die("send thread failed"),
    }
}

/// Copy both ways between two connected stream fds, each direction in its own thread;
/// EOF on one side becomes a half-close of the other.
fn join(a: Fd, b: Fd) {
    let (ar, br) = (a.raw(), b.raw());
    std::thread::spawn(move || {
        let back = std::thread::spawn(move || {
            let _ = copy(br, ar);
            let _ = sys::shutdown(ar, libc::SHUT_WR);
        });
        let _ = copy(ar, br);
        let _ = sys::shutdown(br, libc::SHUT_WR);
        let _ = back.join();
        drop((a, b));
    });
}

fn forward(c: &Client, listen: SocketAddr, addr: IpAddr, port: u16) {
    let l = std::net::TcpListener::bind(listen).unwrap_or_else(|e| die(format!("{listen}: {e}")));
    eprintln!("forwarding");
    for conn in l.incoming() {
        let Ok(conn) = conn else { continue };
        match virt_connect(c, addr, port) {
            Ok(v) => join(Fd::from(OwnedFd::from(conn)), v),
            Err(e) => eprintln!("iothctl: {addr} port {port}: {e}"),
        }
    }
}

fn expose(c: &Client, addr: IpAddr, port: u16, target: SocketAddr) {
    let fd = virt_listen(c, addr, port);
    eprintln!("listening");
    loop {
        let (conn, _rec) = accept(fd.raw()).unwrap_or_else(|e| die(format!("accept: {e}")));
        match std::net::TcpStream::connect(target) {
            Ok(k) => join(conn, Fd::from(OwnedFd::from(k))),
            Err(e) => eprintln!("iothctl: {target}: {e}"),
        }
    }
}

fn ping(c: &Client, addr: IpAddr, count: u32, interval: f64, wait: f64) {
    let (dom, proto, req_type, rep_type) = if addr.is_ipv4() {
        (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8)
    } else {
        (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8, 129u8)
    };
    let (_id, fd) = socket(c, dom, libc::SOCK_DGRAM, proto);
    let mut ok = 0;
    for seq in 1..=count {
        let mut pkt = DgramHeader {
            addr: WireAddr(Some(SocketAddr::new(addr, 0))),
            len: 64,
            flags: 0,
        }
        .encode()
        .to_vec();
        let mut icmp = vec![0u8; 64];
        icmp[0] = req_type;
        icmp[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
        for (i, b) in icmp[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
        pkt.extend_from_slice(&icmp);
        let t0 = Instant::now();
        if let Err(e) = sys::send(fd.raw(), &pkt, libc::MSG_NOSIGNAL) {
            die(format!("send: {e}"));
        }
        let deadline = t0 + Duration::from_secs_f64(wait);
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                println!("no reply from {addr}: icmp_seq={seq}");
                break;
            }
            match sys::wait_fd(fd.raw(), libc::POLLIN, left.as_millis() as i32 + 1) {
                Ok(true) => {}
                _ => continue,
            }
            let n = match sys::recv(fd.raw(), &mut buf, libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(_) => continue,
            };
            let Ok(h) = DgramHeader::decode(&buf[..n]) else {
                continue;
            };
            let m = &buf[DgramHeader::LEN..n];
            if m.len() >= 8 && m[0] == rep_type && u16::from_be_bytes([m[6], m[7]]) == seq as u16 {
                let from = h.addr.0.map(|a| a.ip().to_string()).unwrap_or_default();
                println!(
                    "{} bytes from {from}: icmp_seq={seq} time={:.3} ms",
                    m.len(),
                    t0.elapsed().as_secs_f64() * 1000.0
                );
                ok += 1;
                break;
            }
        }
        if seq < count {
            std::thread::sleep(Duration::from_secs_f64(interval));
        }
    }
    println!("{count} transmitted, {ok} received");
    std::process::exit(if ok == count { 0 } else { 1 });
}
