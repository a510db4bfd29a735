//! `ioth-switch`: an unprivileged learning Ethernet switch whose directory is a classic VDE v3
//! switch directory (Debian's `vde_plug`, QEMU and other `vde_switch` clients plug in), plus
//! ioth's faster native port type.
//!
//! * [`core`]: the pure switching logic (learning, flooding, VLANs, counters); no I/O.
//! * [`impair`]: netem-like impairments of the frames delivered to a port (delay, loss…).
//! * [`pcap`]: classic pcap capture files.
//! * [`mgmt`]: the vde_switch-style text console (command interpreter, line splitting).
//! * [`server`]: the directory, the sockets and the epoll loop.
//! * [`status`]: the status page, `/api/ports` and `/metrics` over HTTP (`--http`).
//! * [`uplink`]: VXLAN uplinks to other hosts (`--uplink vxlan://…`).
//! * [`os`]: fork/setsid/signalfd, the few process calls `ioth_common::sys` lacks.
//!
//! The binary (`main.rs`) is the command line: run a switch, or `ctl` to talk to one.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod child;
pub mod core;
pub mod impair;
pub mod mgmt;
pub mod os;
pub mod pcap;
pub mod server;
pub mod status;
pub mod uplink;

/// Removes a file when dropped (unless forgotten).
pub(crate) struct Unlink(pub std::path::PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
