//! `ioth-stackd`: one process per IoTh node, as a library so that its stack can be tested
//! without a process.
//!
//! It owns a smoltcp `Interface` plugged into one switch port, the node's addresses, routes,
//! neighbours and all its sockets, serves the control protocol of `ioth_common::ctl` on a
//! unix SOCK_SEQPACKET socket, and pumps each socket's data through a kernel socketpair whose
//! other end the application holds. See `DESIGN.md` at the top of the repository.
//!
//! Modules:
//! - [`stack`]: the node's TCP/IP stack and sockets, sans-IO (time passed in, the link any
//!   [`link::Link`]): the control operations, ingress, egress and the socket pumps;
//! - [`daemon`]: the epoll loop, control server, switch reconnects and exit around a stack;
//! - [`link`]: what the stack needs from its link; `device`: the link over a switch port
//!   (with `shortcut`s through `ring`s);
//! - `cut`: the messages of TCP cut-through between two daemons (over a shortcut);
//! - `frame`: header peeking and the few frames built by hand; `neigh`: `SIOCSARP`;
//! - `autoconf` (DHCPv4 and SLAAC for `--ip auto/dhcp/slaac`), `mdns` (the node's name),
//!   `icmperr` (ICMP errors for connected UDP), `raw` (raw ICMPv6 sockets);
//! - [`os`]: the few raw syscalls not in `ioth_common::sys`.

mod autoconf;
mod cut;
pub mod daemon;
mod device;
mod direct;
mod frame;
#[cfg(test)]
mod harness;
mod icmperr;
pub mod journal;
pub mod keeper;
pub mod link;
mod mdns;
mod neigh;
pub mod os;
mod raw;
pub(crate) use ioth_common::ring;
mod shortcut;
pub mod stack;
