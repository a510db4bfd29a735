//! Where things live, and how a virtual socket's fd says which node and socket it is.
//!
//! * Run directory: `$IOTH_RUNDIR`, else `$XDG_RUNTIME_DIR/ioth`, else `/tmp/ioth-<uid>`.
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

/// The abstract name bound to the application end of socket `sock` of node `node`.
pub fn socket_name(node: u64, sock: u64) -> UnixAddr {
    UnixAddr::Abstract(format!("ioth/{node:016x}/{sock:x}").into_bytes())
}

/// Recognise a name made by [`socket_name`]: `(node, sock)`.
pub fn parse_socket_name(addr: &UnixAddr) -> Option<(u64, u64)> {
    let UnixAddr::Abstract(n) = addr else {
        return None;
    };
    let rest = n.strip_prefix(PREFIX)?;
    let s = std::str::from_utf8(rest).ok()?;
    let (node, sock) = s.split_once('/')?;
    if node.len() != 16 || sock == "ctl" {
        return None;
    }
    Some((
        u64::from_str_radix(node, 16).ok()?,
        u64::from_str_radix(sock, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_roundtrip() {
        let n = socket_name(0xdead_beef_0000_0001, 42);
        assert_eq!(parse_socket_name(&n), Some((0xdead_beef_0000_0001, 42)));
        assert_eq!(parse_socket_name(&node_ctl_name(7)), None);
        assert_eq!(
            parse_socket_name(&UnixAddr::Abstract(b"other/1/2".to_vec())),
            None
        );
        assert_eq!(parse_socket_name(&UnixAddr::Path(b"/tmp/x".to_vec())), None);
    }
}
