//! Pieces shared by the three parts of ioth (see `DESIGN.md` at the top of the repo):
//!
//! * [`config`]: the node configuration (`IOTH_IP`, `IOTH_GW`, `IOTH_MAC`, ...), parsed into
//!   validated values with clear errors;
//! * [`csum`]: filling in IPv4/TCP/UDP/ICMP checksums of a frame (checksum offload between
//!   ioth stacks);
//! * [`ctl`]: the control protocol between `libioth.so` and `ioth-stackd`, and the record that
//!   a listening socket carries for each accepted connection;
//! * [`rtnl`]: rtnetlink messages for a node's interface (the shim's netlink sockets, the
//!   daemon's address and route events);
//! * [`offload`]: TCP segmentation and coalescing where 64 KiB frames meet a wire of 1500
//!   bytes (the switch's uplinks, and a stack daemon sending straight to a tunnel endpoint);
//! * [`names`]: where things live (run directory, default switch, node control sockets) and the
//!   abstract unix names that give every virtual socket fd its identity;
//! * [`ring`]: shared-memory frame rings between two processes that may not trust each other
//!   (switch shortcuts between stack daemons, and native switch ports). With [`sys`], the
//!   only module of this crate with `unsafe` (its mappings);
//! * [`sys`]: the raw system-call layer. Everything here goes straight to the kernel with
//!   `syscall(2)`, never through a libc symbol that the preload shim interposes, so the same
//!   code is safe to run inside the shim and inside the daemons.
//!
//! This crate stays small on purpose: no daemon logic, no smoltcp.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod config;
pub mod csum;
pub mod ctl;
pub mod dns;
pub mod names;
pub mod offload;
pub mod port;
pub mod ring;
pub mod rtnl;
pub mod sys;
pub mod table;
pub mod vde;
