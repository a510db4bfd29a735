//! Where things live, and how a virtual socket's fd says which node and socket it is.
//!
//! * Run directory: `$IOTH_RUNDIR`, else `$XDG_RUNTIME_DIR/ioth`, else `/tmp/ioth-<uid>`. It
//!   must be the user's own ([`ensure_private_dir`]): a real directory (not a symlink), owned
//!   by the effective uid, writable by nobody else; it is made with mode 0700 when missing.
//!   In a shared `/tmp`, another user could otherwise make it first and plant a switch or a
//!   daemon there.
//! * Default switch: `<rundir>/switch` (a VDE-compatible switch directory).
//! * A node started on demand listens on `<rundir>/node-<hash>.ctl`, where the hash covers the
//!   node's addresses and switch: every process started with the same `IOTH_IP` on the same
//!   switch joins the same node.
//! * Every node also listens on the abstract unix name `ioth/<node-id>/ctl`.
//! * The application's end of each virtual socket's socketpair is bound to the abstract name
//!   `ioth/<node-id>/<socket-id>` (hex). Any process holding the fd, after dup, fork or exec,
//!   learns with one `getsockname` which node and socket it is, and where to ask.

#![deny(unsafe_code)]

use crate::config::{AddrMode, NodeConfig};
use crate::sys::UnixAddr;
use std::path::PathBuf;

const PREFIX: &[u8] = b"ioth/";

pub fn rundir() -> PathBuf {
    if let Some(d) = std::env::var_os("IOTH_RUNDIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("ioth");
    }
    PathBuf::from(format!("/tmp/ioth-{}", crate::sys::getuid()))
}

/// Why a directory cannot hold our sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafeDir {
    pub path: PathBuf,
    pub why: String,
}

impl std::fmt::Display for UnsafeDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}; remove it, or set IOTH_RUNDIR to a directory of your own (mode 0700)",
            self.path.display(),
            self.why
        )
    }
}

impl std::error::Error for UnsafeDir {}

/// Make sure `dir` is the user's own: create it with mode 0700 if missing (its parents as
/// needed); refuse a symlink, a non-directory, a directory of another owner, or one that
/// group or others may write.
pub fn ensure_private_dir(dir: &std::path::Path) -> Result<(), UnsafeDir> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let bad = |why: String| UnsafeDir {
        path: dir.to_path_buf(),
        why,
    };
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                let _ = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent);
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                // Made meanwhile (by us in another process, or by someone else): check it.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(bad(format!("cannot be created ({e})"))),
            }
            std::fs::symlink_metadata(dir).map_err(|e| bad(format!("is unreadable ({e})")))?
        }
        Err(e) => return Err(bad(format!("is unreadable ({e})"))),
    };
    let me = crate::sys::geteuid();
    if meta.file_type().is_symlink() {
        return Err(bad("is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(bad("is not a directory".into()));
    }
    if meta.uid() != me {
        return Err(bad(format!(
            "belongs to uid {}, not to you (uid {me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(bad(format!(
            "is writable by group or others (mode {:04o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

pub fn default_switch_dir() -> PathBuf {
    rundir().join("switch")
}

/// Strip an optional `vde://` scheme from a switch location.
pub fn switch_dir(loc: &str) -> PathBuf {
    PathBuf::from(loc.strip_prefix("vde://").unwrap_or(loc))
}

/// The control socket path of the node defined by `cfg` (see the module docs).
pub fn node_ctl_path(cfg: &NodeConfig) -> PathBuf {
    let mut key = String::new();
    match &cfg.addrs {
        AddrMode::Static(v) => {
            let mut a: Vec<String> = v.iter().map(|c| c.to_string()).collect();
            a.sort();
            key.push_str(&a.join(","));
        }
        AddrMode::Auto { .. } => key.push_str(&format!("auto/{}", cfg.mac)),
    }
    key.push('|');
    key.push_str(cfg.switch.as_deref().unwrap_or(""));
    rundir().join(format!(
        "node-{:016x}.ctl",
        crate::config::fnv1a(key.as_bytes())
    ))
}

/// The abstract control name of node `node`.
pub fn node_ctl_name(node: u64) -> UnixAddr {
    UnixAddr::Abstract(format!("ioth/{node:016x}/ctl").into_bytes())
}

/// The abstract name of node `node`'s door: a TCP socket the shim made is an unconnected
/// `AF_UNIX` stream socket until it connects or listens; then the shim connects it here, and
/// the daemon takes the accepted end as the socket's daemon end (`ctl::Request::Register`).
pub fn node_door_name(node: u64) -> UnixAddr {
    UnixAddr::Abstract(format!("ioth/{node:016x}/door").into_bytes())
}

/// The abstract name bound to the application end of socket `sock` of node `node`.
///
/// The id is written scrambled (times an odd constant, a bijection on `u64`), all 16 digits:
/// the kernel files abstract names in 256 buckets by a checksum of their bytes, and the
/// short, consecutive ids of plain hex fill few of them (a node with 20,000 sockets walked
/// chains of about 270 names on each bind; scrambled, about 85, near the even 78).
pub fn socket_name(node: u64, sock: u64) -> UnixAddr {
    let s = sock.wrapping_mul(SCRAMBLE);
    UnixAddr::Abstract(format!("ioth/{node:016x}/{s:016x}").into_bytes())
}

/// The abstract name of the kernel listener that socket `sock` of node `node` becomes when it
/// listens (a socket the shim made: `ctl`, Listen): its connections, TCP ones handed over by
/// the daemon and cut-through ones from other nodes' applications, are the kernel's own
/// `accept`. The socket name with an `L` after the id: an accepted connection carries its
/// listener's name, so a name like this is a listener or one of its connections (told
/// apart by the peer's name).
pub fn listener_name(node: u64, sock: u64) -> UnixAddr {
    let s = sock.wrapping_mul(SCRAMBLE);
    UnixAddr::Abstract(format!("ioth/{node:016x}/{s:016x}L").into_bytes())
}

/// Recognise a name made by [`listener_name`]: `(node, sock)`.
pub fn parse_listener_name(addr: &UnixAddr) -> Option<(u64, u64)> {
    let UnixAddr::Abstract(n) = addr else {
        return None;
    };
    let n = n.strip_suffix(b"L")?;
    parse_socket_name(&UnixAddr::Abstract(n.to_vec()))
}

/// The odd constant of [`socket_name`] and its inverse modulo 2^64.
const SCRAMBLE: u64 = 0x9e37_79b9_7f4a_7c15;
const UNSCRAMBLE: u64 = 0xf1de_83e1_9937_733d;

/// Recognise a name made by [`socket_name`]: `(node, sock)`.
pub fn parse_socket_name(addr: &UnixAddr) -> Option<(u64, u64)> {
    let UnixAddr::Abstract(n) = addr else {
        return None;
    };
    let rest = n.strip_prefix(PREFIX)?;
    let s = std::str::from_utf8(rest).ok()?;
    let (node, sock) = s.split_once('/')?;
    if node.len() != 16 || sock.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(node, 16).ok()?,
        u64::from_str_radix(sock, 16).ok()?.wrapping_mul(UNSCRAMBLE),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_roundtrip() {
        let n = socket_name(0xdead_beef_0000_0001, 42);
        assert_eq!(parse_socket_name(&n), Some((0xdead_beef_0000_0001, 42)));
        for id in [0, 1, 2, u64::MAX, 1 << 63] {
            assert_eq!(parse_socket_name(&socket_name(3, id)), Some((3, id)));
        }
        assert_eq!(SCRAMBLE.wrapping_mul(UNSCRAMBLE), 1);
        assert_eq!(parse_socket_name(&node_ctl_name(7)), None);
        assert_eq!(
            parse_socket_name(&UnixAddr::Abstract(b"other/1/2".to_vec())),
            None
        );
        assert_eq!(parse_socket_name(&UnixAddr::Path(b"/tmp/x".to_vec())), None);
        let l = listener_name(5, 77);
        assert_eq!(parse_listener_name(&l), Some((5, 77)));
        assert_eq!(parse_socket_name(&l), None);
        assert_eq!(parse_listener_name(&socket_name(5, 77)), None);
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ioth-names-{}-{name}-{:x}",
            std::process::id(),
            crate::sys::random_u64()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn private_dir_is_made_with_mode_0700() {
        use std::os::unix::fs::MetadataExt;
        let d = tmp("new").join("run");
        ensure_private_dir(&d).unwrap();
        let m = std::fs::metadata(&d).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.mode() & 0o777, 0o700);
        // Again: accepted as it is.
        ensure_private_dir(&d).unwrap();
        let _ = std::fs::remove_dir_all(d.parent().unwrap());
    }

    #[test]
    fn unsafe_dirs_are_refused_with_the_path_and_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let base = tmp("bad");
        std::fs::create_dir_all(&base).unwrap();
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_private_dir(&open).unwrap_err();
        assert!(e.why.contains("writable by group or others"), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(open.to_str().unwrap()) && msg.contains("IOTH_RUNDIR"),
            "{msg}"
        );
        let link = base.join("link");
        let target = base.join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(
            ensure_private_dir(&link)
                .unwrap_err()
                .why
                .contains("symbolic link")
        );
        let file = base.join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(
            ensure_private_dir(&file)
                .unwrap_err()
                .why
                .contains("not a directory")
        );
        // Another owner (only root can hand a directory to someone else).
        let theirs = base.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        if crate::sys::geteuid() == 0
            && std::os::unix::fs::chown(&theirs, Some(65534), None).is_ok()
        {
            assert!(
                ensure_private_dir(&theirs)
                    .unwrap_err()
                    .why
                    .contains("uid 65534")
            );
        }
        let _ = std::fs::remove_dir_all(&base);
    }
}
