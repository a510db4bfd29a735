//! Plugging into a switch: the client side of a switch port.
//!
//! [`SwitchPort::open`] takes a switch location (a directory, or `vde://DIR`):
//! * if `DIR/native` exists (an `ioth-switch`), it opens a native port: one `SOCK_SEQPACKET`
//!   connection, jumbo frames, large buffers, and checksums filled in by the switch when it
//!   offers to ([`SwitchPort::csum_fill`]);
//! * otherwise it speaks classic VDE v3 to `DIR/ctl` (Debian's `vde_switch`, or `ioth-switch`
//!   when asked with `vde://`), 1518-byte frames.
//!
//! The returned port's data fd is non-blocking; one frame per `send`/`recv`.
//!
//! A client that can use switch shortcuts (direct socketpairs to other native ports, see
//! [`vde::ShortcutOffer`]) opens with [`SwitchPort::open_with_shortcuts`] and reads with
//! [`SwitchPort::recv_any`], which also returns the offers. Plain [`SwitchPort::open`] never
//! asks for them.

use crate::sys::{self, Errno, Fd, UnixAddr};
use crate::vde::{self, NativeHello, NativeRefusal, NativeWelcome, VdeRequest};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    Native,
    Vde,
}

/// An open switch port.
#[derive(Debug)]
pub struct SwitchPort {
    data: Fd,
    /// VDE: the control connection, kept open for the port's life (EOF = switch gone).
    ctl: Option<Fd>,
    pub kind: PortKind,
    /// Largest frame (Ethernet header included, no FCS) this port carries.
    pub max_frame: usize,
    /// Port number on the switch, when known.
    pub port: u32,
    /// The switch fills in checksums of the frames we send
    /// ([`vde::NATIVE_FLAG_CSUM_FILL`]): the stack may leave them out.
    pub csum_fill: bool,
    /// The switch may send [`vde::ShortcutOffer`]s on this port (read them with
    /// [`SwitchPort::recv_any`]).
    pub shortcuts: bool,
    /// The switch takes shared-memory rings on this port ([`vde::NATIVE_FLAG_RINGS`]; its
    /// half comes through [`SwitchPort::recv_any`]).
    pub rings: bool,
    /// The switch may send [`vde::UplinkOffer`]s on this port ([`vde::NATIVE_FLAG_UPLINK`]).
    pub uplink: bool,
}

/// What [`SwitchPort::recv_any`] read.
#[derive(Debug)]
pub enum Incoming {
    /// A frame of this length, in the buffer.
    Frame(usize),
    /// A shortcut offer, with the client's end of the socketpair.
    Shortcut(vde::ShortcutOffer, Fd),
    /// The switch's half of the port's rings (its data and ack memfds, [`crate::ring`]).
    Rings(Fd, Fd),
    /// An offer to send a remote MAC's frames straight to its tunnel endpoint, with the
    /// client's end of its socketpair (the [`vde::UplinkRoute`] waits there).
    Uplink(vde::UplinkOffer, Fd),
    /// A message that is neither (too short for a frame, or an offer without its descriptor):
    /// dropped.
    Ignored,
}

/// Socket buffer size asked for on data sockets (the kernel caps it at wmem_max/rmem_max).
pub const PORT_SOCKBUF: i32 = 4 << 20;

/// Why opening a port failed, said plainly.
#[derive(Debug)]
pub struct OpenError {
    pub errno: Errno,
    pub what: String,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.errno)
    }
}

impl std::error::Error for OpenError {}

/// What a client says about a [`NativeRefusal`] from the switch whose native socket is `path`.
fn refusal_text(path: &Path, r: &NativeRefusal) -> String {
    let dir = path.parent().unwrap_or(path).display();
    if r.reason == vde::REFUSED_FULL {
        format!(
            "the switch at {dir} is full: all its {} ports are in use (start it with a larger \
             --numports, e.g. ioth-switch --numports {})",
            r.ports,
            r.ports.saturating_mul(2).clamp(2, 65535)
        )
    } else {
        format!("the switch at {dir} refused the port (reason {})", r.reason)
    }
}

fn err(errno: Errno, what: impl Into<String>) -> OpenError {
    OpenError {
        errno,
        what: what.into(),
    }
}

impl SwitchPort {
    /// Open a port on the switch at `loc`. `description` shows up in the switch's port list.
    pub fn open(
        loc: &str,
        description: &str,
        want_max_frame: usize,
    ) -> Result<SwitchPort, OpenError> {
        Self::open_flags(loc, description, want_max_frame, 0)
    }

    /// [`SwitchPort::open`], and on a native port ask for shortcut offers
    /// ([`vde::NATIVE_FLAG_SHORTCUT`]), for rings ([`vde::NATIVE_FLAG_RINGS`], used only
    /// if the caller sends its half) and for uplink offers ([`vde::NATIVE_FLAG_UPLINK`]):
    /// the caller must then read with
    /// [`SwitchPort::recv_any`] and serve the shortcuts it accepts.
    pub fn open_with_shortcuts(
        loc: &str,
        description: &str,
        want_max_frame: usize,
    ) -> Result<SwitchPort, OpenError> {
        let flags = vde::NATIVE_FLAG_SHORTCUT | vde::NATIVE_FLAG_RINGS | vde::NATIVE_FLAG_UPLINK;
        Self::open_flags(loc, description, want_max_frame, flags)
    }

    fn open_flags(
        loc: &str,
        description: &str,
        want_max_frame: usize,
        flags: u32,
    ) -> Result<SwitchPort, OpenError> {
        let force_vde = loc.starts_with("vde://");
        let dir = crate::names::switch_dir(loc);
        let dir = std::fs::canonicalize(&dir).map_err(|e| {
            err(
                Errno(e.raw_os_error().unwrap_or(libc::ENOENT)),
                format!("switch {}", dir.display()),
            )
        })?;
        if !dir.is_dir() {
            return Err(err(
                Errno(libc::ENOTDIR),
                format!("switch {} is not a directory", dir.display()),
            ));
        }
        let native = dir.join("native");
        if !force_vde && native.exists() {
            Self::open_native_flags(&native, description, want_max_frame, flags)
        } else {
            Self::open_vde(&dir, description, 0)
        }
    }

    /// Native port at `path` (`DIR/native`).
    pub fn open_native(
        path: &Path,
        description: &str,
        want_max_frame: usize,
    ) -> Result<SwitchPort, OpenError> {
        Self::open_native_flags(path, description, want_max_frame, 0)
    }

    /// Native port at `path`, asking for checksum filling and the extra `flags`
    /// (e.g. [`vde::NATIVE_FLAG_SHORTCUT`]).
    pub fn open_native_flags(
        path: &Path,
        description: &str,
        want_max_frame: usize,
        flags: u32,
    ) -> Result<SwitchPort, OpenError> {
        let what = || format!("switch port {}", path.display());
        let fd = sys::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)
            .map_err(|e| err(e, what()))?;
        sys::retry(|| sys::connect_unix(fd.raw(), &UnixAddr::path(path)))
            .map_err(|e| err(e, what()))?;
        let _ = sys::setsockopt_int(fd.raw(), libc::SOL_SOCKET, libc::SO_SNDBUF, PORT_SOCKBUF);
        let _ = sys::setsockopt_int(fd.raw(), libc::SOL_SOCKET, libc::SO_RCVBUF, PORT_SOCKBUF);
        let hello = NativeHello {
            max_frame: want_max_frame as u32,
            description: description.into(),
            flags: vde::NATIVE_FLAG_CSUM_FILL | flags,
        };
        sys::retry(|| sys::send(fd.raw(), &hello.encode(), libc::MSG_NOSIGNAL))
            .map_err(|e| err(e, what()))?;
        if !sys::wait_fd(fd.raw(), libc::POLLIN, 5000).map_err(|e| err(e, what()))? {
            return Err(err(
                Errno::ETIMEDOUT,
                format!("{}: no answer to the port request", what()),
            ));
        }
        let mut buf = [0u8; 64];
        let n = sys::retry(|| sys::recv(fd.raw(), &mut buf, 0)).map_err(|e| err(e, what()))?;
        if n == 0 {
            return Err(err(
                Errno::ECONNREFUSED,
                format!("{}: the switch refused the port", what()),
            ));
        }
        if let Ok(r) = NativeRefusal::parse(&buf[..n]) {
            return Err(err(Errno::ECONNREFUSED, refusal_text(path, &r)));
        }
        let w = NativeWelcome::parse(&buf[..n])
            .map_err(|e| err(e, format!("{}: not an ioth switch", what())))?;
        sys::set_nonblocking(fd.raw(), true).map_err(|e| err(e, what()))?;
        Ok(SwitchPort {
            data: fd,
            ctl: None,
            kind: PortKind::Native,
            max_frame: w.max_frame as usize,
            port: w.port,
            csum_fill: w.has(vde::NATIVE_FLAG_CSUM_FILL),
            shortcuts: w.has(vde::NATIVE_FLAG_SHORTCUT),
            rings: w.has(vde::NATIVE_FLAG_RINGS),
            uplink: w.has(vde::NATIVE_FLAG_UPLINK),
        })
    }

    /// Classic VDE v3 port on the switch directory `dir` (port 0 = any).
    pub fn open_vde(dir: &Path, description: &str, port: u32) -> Result<SwitchPort, OpenError> {
        let ctl_path = dir.join("ctl");
        let what = || format!("VDE switch {}", ctl_path.display());
        let ctl = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
            .map_err(|e| err(e, what()))?;
        sys::retry(|| sys::connect_unix(ctl.raw(), &UnixAddr::path(&ctl_path)))
            .map_err(|e| err(e, what()))?;
        let data = sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
            .map_err(|e| err(e, what()))?;
        let pid = sys::getpid();
        let mut bound: Option<PathBuf> = None;
        'dirs: for base in [dir.to_path_buf(), std::env::temp_dir()] {
            for seq in 0..1000u32 {
                let p = if base == dir {
                    base.join(format!(".{pid:05}-{seq:05}"))
                } else {
                    base.join(format!("vde.{pid:05}-{seq:05}"))
                };
                match sys::bind_unix(data.raw(), &UnixAddr::path(&p)) {
                    Ok(()) => {
                        bound = Some(p);
                        break 'dirs;
                    }
                    Err(Errno::EADDRINUSE) => continue,
                    Err(_) => continue 'dirs,
                }
            }
        }
        let bound = bound.ok_or_else(|| {
            err(
                Errno(libc::EACCES),
                format!("{}: cannot bind a data socket", what()),
            )
        })?;
        // The switch must be able to connect to our socket (vde.md 2.6: never mode 0).
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600));
        }
        let cleanup = Unlink(bound.clone());
        let description = format!("{description} user={} pid={pid}", sys::geteuid());
        let req = VdeRequest {
            port,
            port0: false,
            sock: UnixAddr::path(&bound),
            description,
        };
        let bytes = req.encode().map_err(|e| err(e, what()))?;
        sys::retry(|| sys::send(ctl.raw(), &bytes, libc::MSG_NOSIGNAL))
            .map_err(|e| err(e, what()))?;
        // Old vde_switch may neither answer nor close when it refuses (vde.md 2.4): time out.
        let mut reply = [0u8; vde::SOCKADDR_UN_LEN];
        let mut got = 0;
        while got < reply.len() {
            if !sys::wait_fd(ctl.raw(), libc::POLLIN, 5000).map_err(|e| err(e, what()))? {
                return Err(err(
                    Errno::ETIMEDOUT,
                    format!("{}: no answer to the port request", what()),
                ));
            }
            let n = sys::retry(|| sys::read(ctl.raw(), &mut reply[got..]))
                .map_err(|e| err(e, what()))?;
            if n == 0 {
                // VDE has no way to say why: a full switch (vde_switch's and ioth-switch's
                // --numports) or a data socket the switch would not connect to.
                return Err(err(
                    Errno::ECONNREFUSED,
                    format!(
                        "{}: the switch refused the port (all its ports in use? see its \
                         --numports)",
                        what()
                    ),
                ));
            }
            got += n;
        }
        let theirs =
            vde::parse_sockaddr_un(&reply).map_err(|e| err(e, format!("{}: bad reply", what())))?;
        sys::retry(|| sys::connect_unix(data.raw(), &theirs)).map_err(|e| err(e, what()))?;
        drop(cleanup);
        let _ = sys::setsockopt_int(data.raw(), libc::SOL_SOCKET, libc::SO_SNDBUF, PORT_SOCKBUF);
        let _ = sys::setsockopt_int(data.raw(), libc::SOL_SOCKET, libc::SO_RCVBUF, PORT_SOCKBUF);
        sys::set_nonblocking(data.raw(), true).map_err(|e| err(e, what()))?;
        Ok(SwitchPort {
            data,
            ctl: Some(ctl),
            kind: PortKind::Vde,
            max_frame: vde::VDE_MAX_FRAME,
            port: 0,
            csum_fill: false,
            shortcuts: false,
            rings: false,
            uplink: false,
        })
    }

    /// The frame socket (non-blocking).
    pub fn data_fd(&self) -> RawFd {
        self.data.raw()
    }

    /// The VDE control connection, if any: readable (EOF) when the switch goes away.
    pub fn ctl_fd(&self) -> Option<RawFd> {
        self.ctl.as_ref().map(|f| f.raw())
    }

    /// Send one frame without blocking (`EAGAIN` when the socket is full).
    pub fn send(&self, frame: &[u8]) -> Result<usize, Errno> {
        sys::send(
            self.data.raw(),
            frame,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    }

    /// Receive one frame without blocking. A datagram larger than `buf` is reported as
    /// `EMSGSIZE` (and dropped); `Ok(0)` on a native port means the switch closed it.
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let n = sys::recv(self.data.raw(), buf, libc::MSG_DONTWAIT | libc::MSG_TRUNC)?;
        if n > buf.len() {
            return Err(Errno::EMSGSIZE);
        }
        Ok(n)
    }
}

impl SwitchPort {
    /// Receive one message without blocking: a frame (into `buf`) or, on a port granted
    /// shortcuts, a [`vde::ShortcutOffer`] with its descriptor, or on one granted rings, the
    /// switch's half. Errors as [`SwitchPort::recv`].
    pub fn recv_any(&self, buf: &mut [u8]) -> Result<Incoming, Errno> {
        if !self.shortcuts && !self.rings && !self.uplink {
            return self.recv(buf).map(Incoming::Frame);
        }
        let r = sys::recvmsg(
            self.data.raw(),
            &mut [std::io::IoSliceMut::new(buf)],
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )?;
        if r.len > buf.len() {
            return Err(Errno::EMSGSIZE);
        }
        if r.len == 0 || r.len >= vde::MIN_FRAME {
            return Ok(Incoming::Frame(r.len));
        }
        let mut fds = r.fds;
        if self.rings && &buf[..r.len] == crate::ring::SETUP_MAGIC && fds.len() == 2 {
            let ack = fds.remove(1);
            return Ok(Incoming::Rings(fds.remove(0), ack));
        }
        if self.uplink
            && fds.len() == 1
            && let Some(o) = vde::UplinkOffer::parse(&buf[..r.len])
        {
            return Ok(Incoming::Uplink(o, fds.remove(0)));
        }
        match (vde::ShortcutOffer::parse(&buf[..r.len]), fds.len()) {
            (Ok(o), 1) if self.shortcuts => Ok(Incoming::Shortcut(o, fds.remove(0))),
            _ => Ok(Incoming::Ignored),
        }
    }
}

struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
