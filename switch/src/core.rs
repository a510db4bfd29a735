//! The switch core: a pure function of frames in, forwarding decisions out.
//!
//! No I/O, no clock: the caller passes the time (milliseconds on any monotonic scale) with each
//! call. The core owns the port table (kind, description, largest frame, VLAN membership and
//! counters), the VLAN set and the MAC learning table.
//!
//! What it does:
//! * learning on (source MAC, VLAN), unless the source is a group (broadcast/multicast)
//!   address; entries age out after [`Core::ageing_ms`] (default 300 s);
//! * a bounded table: at most [`Core::max_macs_per_port`] addresses learned on one port and
//!   [`Core::max_macs`] in all. A frame whose source cannot be learned (its port, or the
//!   table, is full) is still forwarded, just not learned, and counted (`not_learned`): a
//!   flood of made-up source addresses costs the switch no memory and the other ports
//!   nothing. A full port cannot take over an address learned elsewhere either: that entry is
//!   forgotten (its traffic flooded) rather than left pointing at the old port;
//! * known unicast goes to its port only; broadcast, multicast and unknown unicast are flooded
//!   to every other port of the frame's VLAN; nothing ever goes back to the ingress port;
//! * 802.1Q as vde_switch does it: every port has one untagged VLAN (default 0) and a set of
//!   tagged VLANs. An untagged frame belongs to its ingress port's untagged VLAN; a tagged
//!   frame is accepted only on a port that is a tagged member of its VLAN. On the way out the
//!   tag is removed for ports whose untagged VLAN it is, and added for tagged members;
//! * port lock ([`Core::port_lock`], `--port-lock`): the first unicast source address seen on
//!   a port is that port's for its life; frames from it with any other source (broadcast and
//!   multicast destinations included) are dropped and counted (`drop_lock`), and no other
//!   port may take a locked address, so one member of the LAN cannot steal another's unicast
//!   traffic by sending frames in its name. A port whose first source is already locked to
//!   another port stays unlocked and drops that frame. Not for cables to other switches (a
//!   cable carries many addresses);
//! * hub mode floods every frame to every other port, VLANs ignored (port lock still applies);
//! * frames shorter than 14 bytes (18 if tagged) are dropped and counted as malformed; a frame
//!   that would exceed a destination port's largest frame is not sent there (`drop_toobig`).
//!
//! Shortcuts (bookkeeping only; the I/O layer makes and ends the socketpairs): when a known
//! unicast frame goes, untagged and unchanged, between two native ports that both take
//! shortcut offers, have the same untagged VLAN, largest frame and checksum mode,
//! [`Core::shortcut_candidate`] proposes a direct path between the two MACs, and
//! [`Core::add_shortcut`] records it. A shortcut is revoked (its id queued for
//! [`Core::take_revoked`]) when either MAC is learned on another port, either port is removed,
//! changes its untagged VLAN or becomes a tagged member of a VLAN, or on [`Core::revoke_all`].
//! Frames over a shortcut never reach the switch: the ports' counters do not include them.
//!
//! What it does not do: spanning tree, port mirroring, padding of short frames (vde_switch
//! pads to 60 bytes; receivers do not need it), queueing (the I/O layer's job; it reports
//! queue drops and transmissions back through [`Core::note_tx`] and [`Core::note_drop_queue`]).

#![deny(unsafe_code)]

use crate::impair::{Settings, Shaper};
use ioth_common::vde::{StatReport, stat};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Port number on the switch.
pub type PortId = u32;
/// 802.1Q VLAN id, 0..=4094 (0 = the default, untagged LAN).
pub type Vlan = u16;
pub type Mac = [u8; 6];

pub const ETH_HDR: usize = 14;
pub const TPID_8021Q: u16 = 0x8100;
pub const MAX_VLAN: Vlan = 4094;
pub const DEFAULT_AGEING_MS: u64 = 300_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    Vde,
    Native,
    /// A VXLAN tunnel to other hosts ([`crate::uplink`]).
    Vxlan,
}

impl PortKind {
    pub fn name(self) -> &'static str {
        match self {
            PortKind::Vde => "vde",
            PortKind::Native => "native",
            PortKind::Vxlan => "vxlan",
        }
    }
}

/// Per-port counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Output queue full.
    pub drop_queue: u64,
    /// Frame larger than this port's largest frame (on output, or an oversized datagram in).
    pub drop_toobig: u64,
    /// Received frame shorter than an Ethernet header.
    pub drop_malformed: u64,
    /// Received tagged frame for a VLAN this port is not a member of.
    pub drop_vlan: u64,
    /// Received frames whose source address was not learned because this port, or the whole
    /// table, holds as many addresses as allowed (the frames were forwarded all the same).
    pub not_learned: u64,
    /// Received frames with a source address other than the port's, with port lock on.
    pub drop_lock: u64,
    /// Frames not delivered to this port because their ingress port and this one are
    /// blocked from each other (`block`, `partition`).
    pub drop_block: u64,
}

impl Counters {
    /// The drop counters by cause, as `port/print`, `/api/ports` and `/metrics` name them.
    pub fn drops(&self) -> [(&'static str, u64); 6] {
        [
            ("queue", self.drop_queue),
            ("toobig", self.drop_toobig),
            ("malformed", self.drop_malformed),
            ("vlan", self.drop_vlan),
            ("lock", self.drop_lock),
            ("block", self.drop_block),
        ]
    }
}

#[derive(Clone, Debug)]
pub struct Port {
    pub kind: PortKind,
    pub description: String,
    pub max_frame: usize,
    pub untagged_vlan: Vlan,
    pub tagged: BTreeSet<Vlan>,
    pub counters: Counters,
    /// Bytes waiting in the port's output queue (a gauge the I/O layer keeps up to date).
    pub queued_bytes: usize,
    /// A native port that sends frames without checksums and wants them filled in for the
    /// rest of the world (`NATIVE_FLAG_CSUM_FILL`); it also accepts frames without them.
    pub csum_fill: bool,
    /// A native port whose client takes shortcut offers (`NATIVE_FLAG_SHORTCUT`).
    pub shortcut: bool,
    /// A native port whose client takes uplink offers (`NATIVE_FLAG_UPLINK`): it may send
    /// the frames for a MAC learned behind a VXLAN uplink straight to its tunnel endpoint.
    pub uplink_offers: bool,
    /// Addresses in the learning table that lead to this port (a gauge the core keeps).
    pub learned: usize,
    /// With port lock: the port's address, once it sent a frame.
    pub locked_mac: Option<Mac>,
    /// Lines `port/print` adds about this port's kind (an uplink's state and counters; the
    /// I/O layer keeps them up to date).
    pub detail: Vec<String>,
    /// The impairment of the frames delivered to this port (`impair`), at work.
    pub impair: Option<Box<Shaper>>,
    /// What the port's stack daemon reports of itself (none until it does).
    pub node: Option<Box<NodeStats>>,
}

/// A stack daemon's figures about itself ([`ioth_common::vde::StatReport`]; the metrics are
/// in [`ioth_common::vde::stat`]). Fixed in size: a daemon cannot make the switch hold more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// TCP sockets by state (`stat::TCP_STATES`).
    pub tcp_states: [u64; stat::TCP_STATES.len()],
    pub cut_through: u64,
    /// Sockets by kind (`stat::SOCKET_KINDS`).
    pub sockets: [u64; stat::SOCKET_KINDS.len()],
    pub retransmitted: u64,
    pub timeouts: u64,
    pub fast_retransmits: u64,
    pub resident_bytes: u64,
}

impl Port {
    pub fn new(kind: PortKind, description: impl Into<String>, max_frame: usize) -> Port {
        Port {
            kind,
            description: description.into(),
            max_frame,
            untagged_vlan: 0,
            tagged: BTreeSet::new(),
            counters: Counters::default(),
            queued_bytes: 0,
            csum_fill: false,
            shortcut: false,
            uplink_offers: false,
            learned: 0,
            locked_mac: None,
            detail: Vec::new(),
            impair: None,
            node: None,
        }
    }
}

/// How a frame leaves towards one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tagging {
    /// Unchanged.
    AsIs,
    /// Remove the 802.1Q tag.
    Untag,
    /// Insert an 802.1Q tag with this VLAN id.
    Tag(Vlan),
}

/// One copy of a frame to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Egress {
    pub port: PortId,
    pub tagging: Tagging,
}

/// What happened to a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Sent to this many ports (0: nobody else in the VLAN, or only too-small ports).
    Forwarded(usize),
    Malformed,
    /// Tagged for a VLAN the ingress port is not a member of.
    VlanDenied,
    /// With port lock: the source address is not the ingress port's.
    Locked,
    /// The ingress port does not exist.
    NoSuchPort,
}

/// Errors of configuration calls, as the errno a console reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoreError {
    /// No such port or VLAN (ENXIO / ENOENT style).
    NoSuchPort,
    NoSuchVlan,
    /// VLAN id out of range.
    InvalidVlan,
    /// VLAN already exists / port already used.
    Exists,
    /// A port blocked from itself.
    SamePort,
    /// Unblocking two ports that were not blocked.
    NotBlocked,
}

impl CoreError {
    pub fn errno(self) -> i32 {
        match self {
            CoreError::NoSuchPort => libc::ENXIO,
            CoreError::NoSuchVlan => libc::ENOENT,
            CoreError::InvalidVlan => libc::EINVAL,
            CoreError::Exists => libc::EEXIST,
            CoreError::SamePort => libc::EINVAL,
            CoreError::NotBlocked => libc::ENOENT,
        }
    }
}

/// A direct path between two MACs on two native ports (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortcut {
    pub a: (PortId, Mac),
    pub b: (PortId, Mac),
    pub vlan: Vlan,
    pub created_ms: u64,
    /// TCP connections cut through over it, as each end's daemon reported them
    /// ([`ioth_common::vde::CutReport`]: the ones it connected).
    pub cut: (u32, u32),
    /// Frames and bytes sent over it by the end at `a` and by the end at `b`, as their
    /// daemons reported them (the switch does not see them).
    pub frames: (u64, u64),
    pub bytes: (u64, u64),
}

/// Default largest number of shortcuts at once (each holds two descriptors in the switch).
pub const DEFAULT_SHORTCUT_LIMIT: usize = 256;

/// Default largest number of addresses learned on one port. A port is one host (a stack
/// daemon, a VM, a `vde_plug`) or a cable to another switch; 1024 hosts behind one cable is
/// already a large LAN.
pub const DEFAULT_MAX_MACS_PER_PORT: usize = 1024;
/// Default largest number of learned addresses in all (64 ports of 1024, about 2.5 MB).
pub const DEFAULT_MAX_MACS: usize = 65536;

#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub port: PortId,
    pub last_seen_ms: u64,
}

/// The switch's state. See the module documentation.
#[derive(Debug)]
pub struct Core {
    ports: BTreeMap<PortId, Port>,
    vlans: BTreeSet<Vlan>,
    table: HashMap<(Mac, Vlan), Entry>,
    pub hub: bool,
    pub ageing_ms: u64,
    /// Most addresses learned on one port.
    pub max_macs_per_port: usize,
    /// Most addresses in the learning table.
    pub max_macs: usize,
    /// Each port keeps the first source address it sent (see the module documentation).
    pub port_lock: bool,
    /// Locked address -> its port.
    locks: HashMap<Mac, PortId>,
    /// Scratch list of candidate ports (avoids an allocation per frame).
    scratch: Vec<PortId>,
    /// Whether shortcuts may be proposed at all (off in hub mode and with a pcap file).
    pub shortcuts_enabled: bool,
    pub shortcut_limit: usize,
    /// Whether uplink offers may be proposed (off with `--no-uplink-shortcuts`).
    pub uplink_shortcuts: bool,
    shortcuts: BTreeMap<u32, Shortcut>,
    /// Ordered MAC pair -> shortcut id.
    sc_pairs: HashMap<(Mac, Mac), u32>,
    /// MAC -> (its port, number of shortcuts using it).
    sc_macs: HashMap<Mac, (PortId, usize)>,
    next_sc: u32,
    revoked: Vec<u32>,
    /// Seeds the impairments that name no seed of their own ([`crate::impair::port_seed`]).
    pub seed: u64,
    /// Ports with an impairment.
    impaired: BTreeSet<PortId>,
    /// Pairs of ports (lower first) that exchange nothing, and the frames dropped between
    /// them.
    blocks: BTreeMap<(PortId, PortId), u64>,
    /// Frames an impairment let go early (cleared or replaced), for [`Core::take_due`].
    released: Vec<(PortId, Vec<u8>)>,
    /// Impairments of the frames from one port to another, `(from, to)`: they take the place
    /// of `to`'s own impairment for those frames.
    pair_impair: BTreeMap<(PortId, PortId), Box<Shaper>>,
    /// Live captures (`capture`): how many watch each port (`None`: every port).
    captures: BTreeMap<Option<PortId>, usize>,
}

impl Default for Core {
    fn default() -> Self {
        Core::new(false)
    }
}

fn is_group(mac: &[u8]) -> bool {
    mac[0] & 1 != 0
}

/// The 802.1Q VLAN id of a tagged frame, `None` if untagged. Needs `frame.len() >= 14`.
fn tag_of(frame: &[u8]) -> Option<Vlan> {
    if u16::from_be_bytes([frame[12], frame[13]]) == TPID_8021Q && frame.len() >= 16 {
        Some(u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff)
    } else {
        None
    }
}

impl Core {
    pub fn new(hub: bool) -> Core {
        Core {
            ports: BTreeMap::new(),
            vlans: BTreeSet::from([0]),
            table: HashMap::new(),
            hub,
            ageing_ms: DEFAULT_AGEING_MS,
            max_macs_per_port: DEFAULT_MAX_MACS_PER_PORT,
            max_macs: DEFAULT_MAX_MACS,
            port_lock: false,
            locks: HashMap::new(),
            scratch: Vec::new(),
            shortcuts_enabled: !hub,
            shortcut_limit: DEFAULT_SHORTCUT_LIMIT,
            uplink_shortcuts: true,
            shortcuts: BTreeMap::new(),
            sc_pairs: HashMap::new(),
            sc_macs: HashMap::new(),
            next_sc: 1,
            revoked: Vec::new(),
            seed: 0,
            impaired: BTreeSet::new(),
            blocks: BTreeMap::new(),
            released: Vec::new(),
            pair_impair: BTreeMap::new(),
            captures: BTreeMap::new(),
        }
    }

    fn pair(x: Mac, y: Mac) -> (Mac, Mac) {
        if x <= y { (x, y) } else { (y, x) }
    }

    /// A direct path worth offering for `frame`, just forwarded from `ingress` to `out` by
    /// [`Core::handle_frame`]: `(src MAC, ingress, dst MAC, egress port, VLAN)`.
    pub fn shortcut_candidate(
        &self,
        ingress: PortId,
        frame: &[u8],
        out: &[Egress],
    ) -> Option<(Mac, PortId, Mac, PortId, Vlan)> {
        self.candidate(ingress, frame, out, false)
    }

    /// An uplink offer worth making for `frame`, just forwarded from `ingress` to `out`: the
    /// same conditions as [`Core::shortcut_candidate`], but from a native port whose client
    /// takes uplink offers to a VXLAN uplink (the caller checks that the uplink knows where
    /// the destination is). The offer is recorded as a shortcut between the two ports, so it
    /// ends for the same reasons.
    pub fn uplink_candidate(
        &self,
        ingress: PortId,
        frame: &[u8],
        out: &[Egress],
    ) -> Option<(Mac, PortId, Mac, PortId, Vlan)> {
        self.candidate(ingress, frame, out, true)
    }

    fn candidate(
        &self,
        ingress: PortId,
        frame: &[u8],
        out: &[Egress],
        uplink: bool,
    ) -> Option<(Mac, PortId, Mac, PortId, Vlan)> {
        if !self.shortcuts_enabled || self.hub || out.len() != 1 || frame.len() < ETH_HDR {
            return None;
        }
        if uplink && !self.uplink_shortcuts {
            return None;
        }
        let e = out[0];
        if e.tagging != Tagging::AsIs || tag_of(frame).is_some() {
            return None;
        }
        let dst: Mac = frame[0..6].try_into().ok()?;
        let src: Mac = frame[6..12].try_into().ok()?;
        if is_group(&dst) || is_group(&src) || dst == src {
            return None;
        }
        let (pi, pe) = (self.ports.get(&ingress)?, self.ports.get(&e.port)?);
        let ends = if uplink {
            pi.uplink_offers && pi.kind == PortKind::Native && pe.kind == PortKind::Vxlan
        } else {
            pi.shortcut
                && pe.shortcut
                && pi.kind == PortKind::Native
                && pe.kind == PortKind::Native
                && pi.csum_fill == pe.csum_fill
                && pi.max_frame == pe.max_frame
        };
        let alike = ends
            && pi.impair.is_none()
            && pe.impair.is_none()
            && !self.blocked(ingress, e.port)
            && !self.pair_impaired(ingress, e.port)
            && !self.captured(ingress)
            && !self.captured(e.port)
            && pi.untagged_vlan == pe.untagged_vlan;
        if !alike
            || self.shortcuts.len() >= self.shortcut_limit
            || self.sc_pairs.contains_key(&Self::pair(src, dst))
        {
            return None;
        }
        // A MAC already shortcut from another port is about to be revoked: not now.
        for (m, p) in [(src, ingress), (dst, e.port)] {
            if self.sc_macs.get(&m).is_some_and(|(q, _)| *q != p) {
                return None;
            }
        }
        Some((src, ingress, dst, e.port, pi.untagged_vlan))
    }

    /// Record a shortcut between `a` and `b`; its id.
    pub fn add_shortcut(
        &mut self,
        a: (PortId, Mac),
        b: (PortId, Mac),
        vlan: Vlan,
        now_ms: u64,
    ) -> u32 {
        let id = self.next_sc;
        self.next_sc = self.next_sc.wrapping_add(1).max(1);
        self.shortcuts.insert(
            id,
            Shortcut {
                a,
                b,
                vlan,
                created_ms: now_ms,
                cut: (0, 0),
                frames: (0, 0),
                bytes: (0, 0),
            },
        );
        self.sc_pairs.insert(Self::pair(a.1, b.1), id);
        for (p, m) in [a, b] {
            self.sc_macs.entry(m).or_insert((p, 0)).1 += 1;
        }
        id
    }

    /// Revoke one shortcut (its id goes to [`Core::take_revoked`]).
    pub fn revoke_shortcut(&mut self, id: u32) {
        let Some(sc) = self.shortcuts.remove(&id) else {
            return;
        };
        self.sc_pairs.remove(&Self::pair(sc.a.1, sc.b.1));
        for (_, m) in [sc.a, sc.b] {
            if let Some(e) = self.sc_macs.get_mut(&m) {
                e.1 -= 1;
                if e.1 == 0 {
                    self.sc_macs.remove(&m);
                }
            }
        }
        self.revoked.push(id);
    }

    fn revoke_where(&mut self, f: impl Fn(&Shortcut) -> bool) {
        let ids: Vec<u32> = self
            .shortcuts
            .iter()
            .filter(|(_, s)| f(s))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.revoke_shortcut(id);
        }
    }

    /// Revoke the shortcuts (uplink offers) of `mac` as seen on `port`: an uplink's
    /// endpoint for it changed or was forgotten.
    pub fn revoke_mac_at(&mut self, port: PortId, mac: Mac) {
        self.revoke_where(|s| s.a == (port, mac) || s.b == (port, mac));
    }

    /// Revoke the shortcuts (uplink offers) of `port`: an uplink closed or opened again.
    pub fn revoke_port(&mut self, port: PortId) {
        self.revoke_where(|s| s.a.0 == port || s.b.0 == port);
    }

    /// Revoke every shortcut.
    pub fn revoke_all(&mut self) {
        self.revoke_where(|_| true);
    }

    /// Ids of the shortcuts revoked since the last call.
    pub fn take_revoked(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.revoked)
    }

    /// Whether any shortcut was revoked since the last [`Core::take_revoked`].
    pub fn has_revoked(&self) -> bool {
        !self.revoked.is_empty()
    }

    /// A port's daemon reports `made` connections cut through over shortcut `id` (ignored
    /// unless that port is one of its ends).
    pub fn note_cut_report(&mut self, port: PortId, id: u32, made: u32) {
        if let Some(s) = self.shortcuts.get_mut(&id) {
            if s.a.0 == port {
                s.cut.0 = made;
            } else if s.b.0 == port {
                s.cut.1 = made;
            }
        }
    }

    /// A figure the stack daemon on `port` reports of itself; one it should not know (a
    /// shortcut that is not its own, a key out of range, a metric unknown) is ignored.
    pub fn note_stat(&mut self, port: PortId, r: StatReport) {
        let (m, k, v) = (r.metric, r.key as usize, r.value);
        if m == stat::SHORTCUT_FRAMES || m == stat::SHORTCUT_BYTES {
            let Some(s) = self.shortcuts.get_mut(&r.key) else {
                return;
            };
            let frames = m == stat::SHORTCUT_FRAMES;
            let (fa, fb) = if frames {
                (&mut s.frames.0, &mut s.frames.1)
            } else {
                (&mut s.bytes.0, &mut s.bytes.1)
            };
            if s.a.0 == port {
                let more = v.saturating_sub(*fa);
                *fa = v;
                // An uplink offer: what the node's daemon sent to the tunnel endpoint went
                // out on the uplink, and is counted there as the switch's own sends are.
                if let Some(u) = self.ports.get_mut(&s.b.0)
                    && u.kind == PortKind::Vxlan
                {
                    if frames {
                        u.counters.tx_frames += more;
                    } else {
                        u.counters.tx_bytes += more;
                    }
                }
            } else if s.b.0 == port {
                *fb = v;
            }
            return;
        }
        let Some(p) = self.ports.get_mut(&port) else {
            return;
        };
        let n = p.node.get_or_insert_with(Box::default);
        let slot = match m {
            stat::TCP_STATE => n.tcp_states.get_mut(k),
            stat::CUT_THROUGH => Some(&mut n.cut_through),
            stat::SOCKETS => n.sockets.get_mut(k),
            stat::RETRANSMITTED => Some(&mut n.retransmitted),
            stat::TIMEOUTS => Some(&mut n.timeouts),
            stat::FAST_RETRANSMITS => Some(&mut n.fast_retransmits),
            stat::RESIDENT => Some(&mut n.resident_bytes),
            _ => None,
        };
        if let Some(slot) = slot {
            *slot = v;
        }
    }

    /// The shortcuts: `(id, shortcut)`, by id.
    pub fn shortcuts(&self) -> impl Iterator<Item = (u32, &Shortcut)> {
        self.shortcuts.iter().map(|(k, v)| (*k, v))
    }

    pub fn add_port(&mut self, id: PortId, port: Port) -> Result<(), CoreError> {
        if self.ports.contains_key(&id) {
            return Err(CoreError::Exists);
        }
        self.ports.insert(id, port);
        Ok(())
    }

    /// Remove a port and forget every address learned on it.
    pub fn remove_port(&mut self, id: PortId) -> Option<Port> {
        self.forget_where(|e| e.port == id);
        self.revoke_where(|s| s.a.0 == id || s.b.0 == id);
        self.impaired.remove(&id);
        self.blocks.retain(|(a, b), _| *a != id && *b != id);
        self.released.retain(|(p, _)| *p != id);
        self.pair_impair.retain(|(a, b), _| *a != id && *b != id);
        let port = self.ports.remove(&id)?;
        if let Some(m) = port.locked_mac {
            self.locks.remove(&m);
        }
        Some(port)
    }

    pub fn port(&self, id: PortId) -> Option<&Port> {
        self.ports.get(&id)
    }

    pub fn port_mut(&mut self, id: PortId) -> Option<&mut Port> {
        self.ports.get_mut(&id)
    }

    pub fn ports(&self) -> impl Iterator<Item = (PortId, &Port)> {
        self.ports.iter().map(|(k, v)| (*k, v))
    }

    pub fn has_port(&self, id: PortId) -> bool {
        self.ports.contains_key(&id)
    }

    pub fn vlans(&self) -> impl Iterator<Item = Vlan> + '_ {
        self.vlans.iter().copied()
    }

    pub fn create_vlan(&mut self, v: Vlan) -> Result<(), CoreError> {
        if v == 0 || v > MAX_VLAN {
            return Err(CoreError::InvalidVlan);
        }
        if !self.vlans.insert(v) {
            return Err(CoreError::Exists);
        }
        Ok(())
    }

    /// Make `port` a tagged member of `v`.
    pub fn vlan_add_port(&mut self, v: Vlan, port: PortId) -> Result<(), CoreError> {
        if v > MAX_VLAN {
            return Err(CoreError::InvalidVlan);
        }
        if !self.vlans.contains(&v) {
            return Err(CoreError::NoSuchVlan);
        }
        let p = self.ports.get_mut(&port).ok_or(CoreError::NoSuchPort)?;
        if p.untagged_vlan == v || !p.tagged.insert(v) {
            return Err(CoreError::Exists);
        }
        self.revoke_where(|s| s.a.0 == port || s.b.0 == port);
        Ok(())
    }

    /// Set the untagged VLAN of `port`.
    pub fn set_port_vlan(&mut self, port: PortId, v: Vlan) -> Result<(), CoreError> {
        if v > MAX_VLAN {
            return Err(CoreError::InvalidVlan);
        }
        if !self.vlans.contains(&v) {
            return Err(CoreError::NoSuchVlan);
        }
        let p = self.ports.get_mut(&port).ok_or(CoreError::NoSuchPort)?;
        p.tagged.remove(&v);
        p.untagged_vlan = v;
        self.forget_where(|e| e.port == port);
        self.revoke_where(|s| s.a.0 == port || s.b.0 == port);
        Ok(())
    }

    pub fn reset_counters(&mut self, port: Option<PortId>) -> Result<(), CoreError> {
        match port {
            Some(id) => {
                self.ports
                    .get_mut(&id)
                    .ok_or(CoreError::NoSuchPort)?
                    .counters = Counters::default();
            }
            None => self
                .ports
                .values_mut()
                .for_each(|p| p.counters = Counters::default()),
        }
        Ok(())
    }

    /// The learning table: `(mac, vlan, port, age_ms)`, sorted.
    pub fn table(&self, now_ms: u64) -> Vec<(Mac, Vlan, PortId, u64)> {
        let mut v: Vec<_> = self
            .table
            .iter()
            .map(|((m, vl), e)| (*m, *vl, e.port, now_ms.saturating_sub(e.last_seen_ms)))
            .collect();
        v.sort();
        v
    }

    /// Forget entries older than the ageing time.
    pub fn expire(&mut self, now_ms: u64) {
        let age = self.ageing_ms;
        self.forget_where(|e| now_ms.saturating_sub(e.last_seen_ms) > age);
    }

    /// Number of learned addresses.
    pub fn learned(&self) -> usize {
        self.table.len()
    }

    /// Forget the entries `f` selects, keeping the ports' counts.
    fn forget_where(&mut self, f: impl Fn(&Entry) -> bool) {
        let ports = &mut self.ports;
        self.table.retain(|_, e| {
            if !f(e) {
                return true;
            }
            if let Some(p) = ports.get_mut(&e.port) {
                p.learned = p.learned.saturating_sub(1);
            }
            false
        });
    }

    /// Forget one entry, keeping its port's count.
    fn forget(&mut self, key: &(Mac, Vlan)) {
        if let Some(e) = self.table.remove(key)
            && let Some(p) = self.ports.get_mut(&e.port)
        {
            p.learned = p.learned.saturating_sub(1);
        }
    }

    /// Learn that `src` on `vlan` is behind `ingress`, within the caps (see the module
    /// documentation); counts `not_learned` when it cannot.
    fn learn(&mut self, src: Mac, vlan: Vlan, ingress: PortId, now_ms: u64) {
        let key = (src, vlan);
        let room = |p: Option<&Port>| p.is_some_and(|p| p.learned < self.max_macs_per_port);
        match self.table.get_mut(&key) {
            Some(e) if e.port == ingress => {
                e.last_seen_ms = now_ms;
                return;
            }
            Some(e) => {
                // Moved. The old entry goes whether or not the new port may learn it.
                let old = e.port;
                if room(self.ports.get(&ingress)) {
                    *e = Entry {
                        port: ingress,
                        last_seen_ms: now_ms,
                    };
                    for (p, up) in [(old, false), (ingress, true)] {
                        if let Some(p) = self.ports.get_mut(&p) {
                            p.learned = if up {
                                p.learned + 1
                            } else {
                                p.learned.saturating_sub(1)
                            };
                        }
                    }
                    return;
                }
                self.forget(&key);
            }
            None => {
                if self.table.len() < self.max_macs && room(self.ports.get(&ingress)) {
                    self.table.insert(
                        key,
                        Entry {
                            port: ingress,
                            last_seen_ms: now_ms,
                        },
                    );
                    if let Some(p) = self.ports.get_mut(&ingress) {
                        p.learned += 1;
                    }
                    return;
                }
            }
        }
        if let Some(p) = self.ports.get_mut(&ingress) {
            p.counters.not_learned += 1;
        }
    }

    pub fn note_tx(&mut self, port: PortId, bytes: usize) {
        if let Some(p) = self.ports.get_mut(&port) {
            p.counters.tx_frames += 1;
            p.counters.tx_bytes += bytes as u64;
        }
    }

    pub fn note_queued(&mut self, port: PortId, bytes: usize) {
        if let Some(p) = self.ports.get_mut(&port) {
            p.queued_bytes = bytes;
        }
    }

    pub fn note_drop_queue(&mut self, port: PortId) {
        if let Some(p) = self.ports.get_mut(&port) {
            p.counters.drop_queue += 1;
        }
    }

    /// The largest frame the port that a unicast `frame` from `ingress` goes to takes, less
    /// room for a VLAN tag (`None`: flooded, unknown, or back where it came from).
    pub fn unicast_room(&self, ingress: PortId, frame: &[u8]) -> Option<usize> {
        if self.hub || frame.len() < ETH_HDR || is_group(&frame[..6]) {
            return None;
        }
        let vlan = match tag_of(frame) {
            Some(v) => v,
            None => self.ports.get(&ingress)?.untagged_vlan,
        };
        let dst: Mac = frame[..6].try_into().ok()?;
        let e = self.table.get(&(dst, vlan))?;
        if e.port == ingress {
            return None;
        }
        self.ports
            .get(&e.port)
            .map(|p| p.max_frame.saturating_sub(4))
    }

    /// A received datagram was larger than the ingress port's largest frame, or a frame too
    /// large for a port's link was dropped there.
    pub fn note_toobig(&mut self, port: PortId) {
        if let Some(p) = self.ports.get_mut(&port) {
            p.counters.drop_toobig += 1;
        }
    }

    // ---- impairments and partitions (see crate::impair) ----

    fn ordered(a: PortId, b: PortId) -> (PortId, PortId) {
        if a <= b { (a, b) } else { (b, a) }
    }

    /// Whether a frame from `ingress` to port `id` (`p`) meets a block; if so it is counted,
    /// on the pair and on `p`.
    fn count_block(
        blocks: &mut BTreeMap<(PortId, PortId), u64>,
        ingress: PortId,
        id: PortId,
        p: &mut Port,
    ) -> bool {
        if blocks.is_empty() {
            return false;
        }
        let Some(n) = blocks.get_mut(&Self::ordered(ingress, id)) else {
            return false;
        };
        *n += 1;
        p.counters.drop_block += 1;
        true
    }

    /// End the shortcuts between ports `a` and `b`.
    fn revoke_between(&mut self, a: PortId, b: PortId) {
        let pair = Self::ordered(a, b);
        self.revoke_where(|s| Self::ordered(s.a.0, s.b.0) == pair);
    }

    /// Whether `a` and `b` are blocked from each other.
    pub fn blocked(&self, a: PortId, b: PortId) -> bool {
        !self.blocks.is_empty() && self.blocks.contains_key(&Self::ordered(a, b))
    }

    /// Drop everything between `a` and `b`, both ways (their shortcut ends).
    pub fn block(&mut self, a: PortId, b: PortId) -> Result<(), CoreError> {
        if !self.has_port(a) || !self.has_port(b) {
            return Err(CoreError::NoSuchPort);
        }
        if a == b {
            return Err(CoreError::SamePort);
        }
        self.blocks.entry(Self::ordered(a, b)).or_insert(0);
        self.revoke_between(a, b);
        Ok(())
    }

    /// Let `a` and `b` exchange frames again.
    pub fn unblock(&mut self, a: PortId, b: PortId) -> Result<(), CoreError> {
        match self.blocks.remove(&Self::ordered(a, b)) {
            Some(_) => Ok(()),
            None => Err(CoreError::NotBlocked),
        }
    }

    /// End every block.
    pub fn heal(&mut self) {
        self.blocks.clear();
    }

    /// The blocked pairs (lower port first) and the frames dropped between each.
    pub fn blocks(&self) -> impl Iterator<Item = ((PortId, PortId), u64)> + '_ {
        self.blocks.iter().map(|(k, v)| (*k, *v))
    }

    /// Impair the frames delivered to `port` from now on (`None`: no more). Frames the old
    /// impairment held go at once ([`Core::take_due`]); the port's shortcuts end.
    pub fn set_impairment(&mut self, port: PortId, s: Option<Settings>) -> Result<(), CoreError> {
        let p = self.ports.get_mut(&port).ok_or(CoreError::NoSuchPort)?;
        if let Some(mut old) = p.impair.take() {
            self.released
                .extend(old.drain().into_iter().map(|f| (port, f)));
        }
        match s {
            Some(s) => {
                p.impair = Some(Box::new(Shaper::new(s)));
                self.impaired.insert(port);
                self.revoke_where(|s| s.a.0 == port || s.b.0 == port);
            }
            None => {
                self.impaired.remove(&port);
            }
        }
        Ok(())
    }

    /// A live capture of `port`'s frames (`None`: every port's) begins: the shortcuts it would
    /// miss end, and no new one is made while it runs, so that no frame escapes it.
    pub fn capture_begin(&mut self, port: Option<PortId>) {
        *self.captures.entry(port).or_default() += 1;
        match port {
            Some(p) => self.revoke_where(|s| s.a.0 == p || s.b.0 == p),
            None => self.revoke_all(),
        }
    }

    /// A live capture begun with [`Core::capture_begin`] ends.
    pub fn capture_end(&mut self, port: Option<PortId>) {
        if let Some(n) = self.captures.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                self.captures.remove(&port);
            }
        }
    }

    /// Whether any live capture runs.
    pub fn capturing(&self) -> bool {
        !self.captures.is_empty()
    }

    /// Whether a live capture watches `port`.
    pub fn captured(&self, port: PortId) -> bool {
        !self.captures.is_empty()
            && (self.captures.contains_key(&None) || self.captures.contains_key(&Some(port)))
    }

    /// Whether the frames from `a` to `b`, or from `b` to `a`, have an impairment of their own.
    fn pair_impaired(&self, a: PortId, b: PortId) -> bool {
        !self.pair_impair.is_empty()
            && (self.pair_impair.contains_key(&(a, b)) || self.pair_impair.contains_key(&(b, a)))
    }

    /// Impair the frames from `from` delivered to `to` (`None`: no more); as
    /// [`Core::set_impairment`], for one direction between two ports.
    pub fn set_pair_impairment(
        &mut self,
        from: PortId,
        to: PortId,
        s: Option<Settings>,
    ) -> Result<(), CoreError> {
        if !self.has_port(from) || !self.has_port(to) {
            return Err(CoreError::NoSuchPort);
        }
        if from == to {
            return Err(CoreError::SamePort);
        }
        if let Some(mut old) = self.pair_impair.remove(&(from, to)) {
            self.released
                .extend(old.drain().into_iter().map(|f| (to, f)));
        }
        if let Some(s) = s {
            self.pair_impair
                .insert((from, to), Box::new(Shaper::new(s)));
            self.revoke_between(from, to);
        }
        Ok(())
    }

    /// The impairments between pairs of ports: `((from, to), shaper)`.
    pub fn pair_impairments(&self) -> impl Iterator<Item = ((PortId, PortId), &Shaper)> {
        self.pair_impair.iter().map(|(k, v)| (*k, &**v))
    }

    /// The impairment of the frames from `from` to `to`, if set.
    pub fn pair_impairment(&self, from: PortId, to: PortId) -> Option<&Shaper> {
        self.pair_impair.get(&(from, to)).map(|b| &**b)
    }

    /// Whether any impairment (of a port or a pair) is set.
    pub fn impairing(&self) -> bool {
        !self.impaired.is_empty() || !self.pair_impair.is_empty()
    }

    /// Hand a frame from `from` for `port` to its impairment (the pair's, else the port's):
    /// `None` if there is none (send the frame as usual), else how many copies go now (the
    /// rest wait for [`Core::take_due`]).
    pub fn impair(
        &mut self,
        from: PortId,
        port: PortId,
        now_ns: u64,
        frame: &[u8],
    ) -> Option<usize> {
        if !self.pair_impair.is_empty()
            && let Some(sh) = self.pair_impair.get_mut(&(from, port))
        {
            return Some(sh.push(now_ns, frame));
        }
        if self.impaired.is_empty() {
            return None;
        }
        let sh = self.ports.get_mut(&port)?.impair.as_deref_mut()?;
        Some(sh.push(now_ns, frame))
    }

    /// When the first frame an impairment holds is due (or frames were released: now).
    pub fn next_due(&self) -> Option<u64> {
        if !self.released.is_empty() {
            return Some(0);
        }
        let ports = self
            .impaired
            .iter()
            .filter_map(|p| self.ports.get(p)?.impair.as_ref()?.next_due());
        let pairs = self.pair_impair.values().filter_map(|sh| sh.next_due());
        ports.chain(pairs).min()
    }

    /// Move the frames whose time has come to `out`, as (port, frame), each port's and each
    /// pair's in order.
    pub fn take_due(&mut self, now_ns: u64, out: &mut Vec<(PortId, Vec<u8>)>) {
        out.append(&mut self.released);
        for id in &self.impaired {
            let Some(sh) = self.ports.get_mut(id).and_then(|p| p.impair.as_deref_mut()) else {
                continue;
            };
            while let Some(f) = sh.pop_due(now_ns) {
                out.push((*id, f));
            }
        }
        for ((_, to), sh) in self.pair_impair.iter_mut() {
            while let Some(f) = sh.pop_due(now_ns) {
                out.push((*to, f));
            }
        }
    }

    /// Decide where a frame received on `ingress` goes; the copies to send are appended to
    /// `out` (cleared first). Counts rx, malformed, VLAN and too-big drops.
    pub fn handle_frame(
        &mut self,
        ingress: PortId,
        frame: &[u8],
        now_ms: u64,
        out: &mut Vec<Egress>,
    ) -> Verdict {
        out.clear();
        let Some(inp) = self.ports.get_mut(&ingress) else {
            return Verdict::NoSuchPort;
        };
        inp.counters.rx_frames += 1;
        inp.counters.rx_bytes += frame.len() as u64;
        if frame.len() < ETH_HDR {
            inp.counters.drop_malformed += 1;
            return Verdict::Malformed;
        }
        let tag = tag_of(frame);
        if u16::from_be_bytes([frame[12], frame[13]]) == TPID_8021Q && frame.len() < ETH_HDR + 4 {
            inp.counters.drop_malformed += 1;
            return Verdict::Malformed;
        }
        if self.port_lock {
            let src: Mac = frame[6..12].try_into().unwrap_or([0xff; 6]);
            match inp.locked_mac {
                Some(m) if m == src => {}
                None if !is_group(&src) && !self.locks.contains_key(&src) => {
                    inp.locked_mac = Some(src);
                    self.locks.insert(src, ingress);
                }
                _ => {
                    inp.counters.drop_lock += 1;
                    return Verdict::Locked;
                }
            }
        }
        let len = frame.len();
        if self.hub {
            let mut n = 0;
            for (id, p) in self.ports.iter_mut() {
                if *id == ingress {
                    continue;
                }
                if Self::count_block(&mut self.blocks, ingress, *id, p) {
                    continue;
                }
                if len > p.max_frame && !ioth_common::offload::can_cut(frame, p.max_frame - 4) {
                    p.counters.drop_toobig += 1;
                    continue;
                }
                out.push(Egress {
                    port: *id,
                    tagging: Tagging::AsIs,
                });
                n += 1;
            }
            return Verdict::Forwarded(n);
        }
        let vlan = match tag {
            Some(v) => {
                if !inp.tagged.contains(&v) {
                    inp.counters.drop_vlan += 1;
                    return Verdict::VlanDenied;
                }
                v
            }
            None => inp.untagged_vlan,
        };
        let dst: Mac = frame[0..6].try_into().unwrap_or([0xff; 6]);
        let src: Mac = frame[6..12].try_into().unwrap_or([0xff; 6]);
        if !is_group(&src) {
            if self.sc_macs.get(&src).is_some_and(|(p, _)| *p != ingress) {
                // The MAC moved: its shortcuts lead to the old port.
                self.revoke_where(|s| s.a.1 == src || s.b.1 == src);
            }
            self.learn(src, vlan, ingress, now_ms);
        }
        self.scratch.clear();
        let known = if is_group(&dst) {
            None
        } else {
            match self.table.get(&(dst, vlan)) {
                Some(e) if now_ms.saturating_sub(e.last_seen_ms) <= self.ageing_ms => Some(e.port),
                Some(_) => {
                    self.forget(&(dst, vlan));
                    None
                }
                None => None,
            }
        };
        match known {
            Some(p) if p == ingress => return Verdict::Forwarded(0),
            Some(p) => self.scratch.push(p),
            None => self
                .scratch
                .extend(self.ports.keys().copied().filter(|p| *p != ingress)),
        }
        let mut n = 0;
        for id in self.scratch.iter() {
            let Some(p) = self.ports.get_mut(id) else {
                continue;
            };
            if Self::count_block(&mut self.blocks, ingress, *id, p) {
                continue;
            }
            let tagging = if p.untagged_vlan == vlan {
                if tag.is_some() {
                    Tagging::Untag
                } else {
                    Tagging::AsIs
                }
            } else if p.tagged.contains(&vlan) {
                if tag.is_some() {
                    Tagging::AsIs
                } else {
                    Tagging::Tag(vlan)
                }
            } else {
                continue;
            };
            let out_len = match tagging {
                Tagging::AsIs => len,
                Tagging::Untag => len - 4,
                Tagging::Tag(_) => len + 4,
            };
            // Too large: TCP is cut into segments, other IP packets into fragments, of the
            // port's size where it goes out (the I/O layer, as a NIC's offloads); anything
            // else is dropped and counted.
            if out_len > p.max_frame && !ioth_common::offload::can_cut(frame, p.max_frame - 4) {
                p.counters.drop_toobig += 1;
                continue;
            }
            out.push(Egress { port: *id, tagging });
            n += 1;
        }
        Verdict::Forwarded(n)
    }
}

/// The bytes to send for `frame` with `tagging`; `buf` is scratch space for re-tagged copies.
/// `frame` must have passed [`Core::handle_frame`] (at least 14 bytes, 18 if tagged).
pub fn render<'a>(frame: &'a [u8], tagging: Tagging, buf: &'a mut Vec<u8>) -> &'a [u8] {
    match tagging {
        Tagging::AsIs => frame,
        Tagging::Untag if frame.len() >= ETH_HDR + 4 => {
            buf.clear();
            buf.extend_from_slice(&frame[..12]);
            buf.extend_from_slice(&frame[16..]);
            buf
        }
        Tagging::Untag => frame,
        Tagging::Tag(v) if frame.len() >= 12 => {
            buf.clear();
            buf.extend_from_slice(&frame[..12]);
            buf.extend_from_slice(&TPID_8021Q.to_be_bytes());
            buf.extend_from_slice(&(v & 0x0fff).to_be_bytes());
            buf.extend_from_slice(&frame[12..]);
            buf
        }
        Tagging::Tag(_) => frame,
    }
}

/// Format a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn mac_str(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [0x02, 0, 0, 0, 0, 0xa];
    const B: Mac = [0x02, 0, 0, 0, 0, 0xb];
    const C: Mac = [0x02, 0, 0, 0, 0, 0xc];
    const BCAST: Mac = [0xff; 6];

    fn frame(dst: Mac, src: Mac) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0u8; 46]);
        f
    }

    fn tagged(dst: Mac, src: Mac, v: Vlan) -> Vec<u8> {
        let mut b = Vec::new();
        render(&frame(dst, src), Tagging::Tag(v), &mut b).to_vec()
    }

    fn core3() -> Core {
        let mut c = Core::new(false);
        for i in 1..=3 {
            c.add_port(i, Port::new(PortKind::Native, format!("p{i}"), 1518))
                .unwrap();
        }
        c
    }

    fn ports(out: &[Egress]) -> Vec<PortId> {
        out.iter().map(|e| e.port).collect()
    }

    #[test]
    fn unknown_is_flooded_then_learned_unicast_goes_to_one_port() {
        let mut c = core3();
        let mut out = Vec::new();
        assert_eq!(
            c.handle_frame(1, &frame(B, A), 0, &mut out),
            Verdict::Forwarded(2)
        );
        assert_eq!(ports(&out), vec![2, 3]);
        // B answers: A is known, so only port 1.
        c.handle_frame(2, &frame(A, B), 1, &mut out);
        assert_eq!(ports(&out), vec![1]);
        // Now B is known too.
        c.handle_frame(1, &frame(B, A), 2, &mut out);
        assert_eq!(ports(&out), vec![2]);
        assert_eq!(c.port(1).unwrap().counters.rx_frames, 2);
    }

    #[test]
    fn broadcast_floods_and_never_returns_to_ingress() {
        let mut c = core3();
        let mut out = Vec::new();
        c.handle_frame(2, &frame(BCAST, B), 0, &mut out);
        assert_eq!(ports(&out), vec![1, 3]);
        // Multicast source is not learned.
        c.handle_frame(2, &frame(A, [0x33, 0x33, 0, 0, 0, 1]), 0, &mut out);
        assert_eq!(c.table(0).len(), 1);
        // A frame to a MAC learned on the ingress port goes nowhere.
        c.handle_frame(1, &frame(B, A), 0, &mut out);
        c.handle_frame(2, &frame(A, B), 0, &mut out);
        assert_eq!(ports(&out), vec![1]);
        c.handle_frame(1, &frame(A, C), 0, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn entries_age_out() {
        let mut c = core3();
        c.ageing_ms = 1000;
        let mut out = Vec::new();
        c.handle_frame(2, &frame(BCAST, B), 0, &mut out);
        c.handle_frame(1, &frame(B, A), 500, &mut out);
        assert_eq!(ports(&out), vec![2]);
        c.handle_frame(1, &frame(B, A), 1501, &mut out);
        assert_eq!(ports(&out), vec![2, 3], "expired entry floods again");
        c.expire(10_000);
        assert!(c.table(10_000).is_empty());
    }

    #[test]
    fn mac_moves_and_port_removal_forgets() {
        let mut c = core3();
        let mut out = Vec::new();
        c.handle_frame(2, &frame(BCAST, B), 0, &mut out);
        c.handle_frame(3, &frame(BCAST, B), 0, &mut out);
        c.handle_frame(1, &frame(B, A), 0, &mut out);
        assert_eq!(ports(&out), vec![3]);
        c.remove_port(3);
        c.handle_frame(1, &frame(B, A), 0, &mut out);
        assert_eq!(ports(&out), vec![2]);
    }

    #[test]
    fn short_frames_are_malformed() {
        let mut c = core3();
        let mut out = Vec::new();
        assert_eq!(
            c.handle_frame(1, &[0u8; 13], 0, &mut out),
            Verdict::Malformed
        );
        let mut t = frame(BCAST, A)[..14].to_vec();
        t[12] = 0x81;
        t[13] = 0x00;
        assert_eq!(c.handle_frame(1, &t, 0, &mut out), Verdict::Malformed);
        assert_eq!(c.port(1).unwrap().counters.drop_malformed, 2);
        assert_eq!(c.handle_frame(9, &t, 0, &mut out), Verdict::NoSuchPort);
    }

    #[test]
    fn too_big_for_destination_is_counted() {
        let mut c = core3();
        c.port_mut(1).unwrap().max_frame = 9000;
        c.port_mut(3).unwrap().max_frame = 9000;
        let mut big = frame(BCAST, A);
        big.resize(4000, 0);
        let mut out = Vec::new();
        c.handle_frame(1, &big, 0, &mut out);
        assert_eq!(ports(&out), vec![3]);
        assert_eq!(c.port(2).unwrap().counters.drop_toobig, 1);
    }

    #[test]
    fn vlans_separate_and_tag() {
        let mut c = core3();
        let mut out = Vec::new();
        c.create_vlan(10).unwrap();
        assert_eq!(c.create_vlan(10), Err(CoreError::Exists));
        assert_eq!(c.set_port_vlan(2, 11), Err(CoreError::NoSuchVlan));
        c.set_port_vlan(2, 10).unwrap();
        // Port 1 (VLAN 0) and port 2 (VLAN 10) do not see each other.
        c.handle_frame(1, &frame(BCAST, A), 0, &mut out);
        assert_eq!(ports(&out), vec![3]);
        // Port 3 becomes a trunk for VLAN 10: port 2's untagged frames reach it tagged.
        c.vlan_add_port(10, 3).unwrap();
        c.handle_frame(2, &frame(BCAST, B), 0, &mut out);
        assert_eq!(
            out,
            vec![Egress {
                port: 3,
                tagging: Tagging::Tag(10)
            }]
        );
        // Tagged frames from port 3 reach port 2 untagged, and port 1 not at all.
        let t = tagged(BCAST, C, 10);
        c.handle_frame(3, &t, 0, &mut out);
        assert_eq!(
            out,
            vec![Egress {
                port: 2,
                tagging: Tagging::Untag
            }]
        );
        let mut buf = Vec::new();
        assert_eq!(render(&t, Tagging::Untag, &mut buf), &frame(BCAST, C)[..]);
        // Tagged frames for a VLAN the port is not in are dropped.
        assert_eq!(
            c.handle_frame(1, &tagged(BCAST, A, 10), 0, &mut out),
            Verdict::VlanDenied
        );
        assert_eq!(c.port(1).unwrap().counters.drop_vlan, 1);
    }

    #[test]
    fn hub_floods_everything() {
        let mut c = core3();
        c.hub = true;
        let mut out = Vec::new();
        c.handle_frame(2, &frame(BCAST, B), 0, &mut out);
        c.handle_frame(1, &frame(B, A), 0, &mut out);
        assert_eq!(ports(&out), vec![2, 3]);
    }

    fn sc_core() -> Core {
        let mut c = core3();
        for i in 1..=3 {
            c.port_mut(i).unwrap().shortcut = true;
        }
        c
    }

    #[test]
    fn shortcut_proposed_for_learned_unicast_between_capable_ports() {
        let mut c = sc_core();
        let mut out = Vec::new();
        // Unknown destination: flooded, no shortcut.
        c.handle_frame(1, &frame(B, A), 0, &mut out);
        assert_eq!(c.shortcut_candidate(1, &frame(B, A), &out), None);
        c.handle_frame(2, &frame(A, B), 0, &mut out);
        assert_eq!(
            c.shortcut_candidate(2, &frame(A, B), &out),
            Some((B, 2, A, 1, 0))
        );
        let id = c.add_shortcut((2, B), (1, A), 0, 0);
        assert_eq!(c.shortcut_candidate(2, &frame(A, B), &out), None, "once");
        c.handle_frame(1, &frame(B, A), 0, &mut out);
        assert_eq!(
            c.shortcut_candidate(1, &frame(B, A), &out),
            None,
            "either way"
        );
        assert_eq!(c.shortcuts().count(), 1);
        assert!(!c.has_revoked());
        c.revoke_all();
        assert_eq!(c.take_revoked(), vec![id]);
        assert_eq!(c.shortcuts().count(), 0);
    }

    #[test]
    fn blocked_ports_exchange_nothing_and_the_drops_are_counted() {
        let mut c = core3();
        let mut out = Vec::new();
        c.block(1, 2).unwrap();
        assert_eq!(c.block(1, 1), Err(CoreError::SamePort));
        assert_eq!(c.block(1, 9), Err(CoreError::NoSuchPort));
        // A broadcast from 1 reaches 3 only; then unicast 2 -> 1 goes nowhere.
        c.handle_frame(1, &frame(BCAST, A), 0, &mut out);
        assert_eq!(ports(&out), vec![3]);
        c.handle_frame(2, &frame(A, B), 0, &mut out);
        assert_eq!(ports(&out), Vec::<PortId>::new());
        assert_eq!(c.port(2).unwrap().counters.drop_block, 1);
        assert_eq!(c.port(1).unwrap().counters.drop_block, 1);
        assert_eq!(c.blocks().collect::<Vec<_>>(), vec![((1, 2), 2)]);
        c.unblock(2, 1).unwrap();
        assert_eq!(c.unblock(2, 1), Err(CoreError::NotBlocked));
        c.handle_frame(2, &frame(A, B), 0, &mut out);
        assert_eq!(ports(&out), vec![1]);
        c.block(2, 3).unwrap();
        c.remove_port(3);
        assert_eq!(c.blocks().count(), 0, "a removed port's blocks go with it");
        c.block(1, 2).unwrap();
        c.heal();
        assert!(!c.blocked(1, 2));
    }

    #[test]
    fn impaired_or_blocked_ports_get_no_shortcut_and_lose_theirs() {
        let mut c = sc_core();
        let mut out = Vec::new();
        c.handle_frame(1, &frame(BCAST, A), 0, &mut out);
        c.handle_frame(2, &frame(A, B), 0, &mut out);
        let id = c.add_shortcut((2, B), (1, A), 0, 0);
        c.set_impairment(3, Some(Settings::none(1))).unwrap();
        assert!(!c.has_revoked(), "another port's impairment");
        c.set_impairment(1, Some(Settings::none(1))).unwrap();
        assert_eq!(c.take_revoked(), vec![id]);
        assert_eq!(c.shortcut_candidate(2, &frame(A, B), &out), None);
        c.set_impairment(1, None).unwrap();
        assert!(c.shortcut_candidate(2, &frame(A, B), &out).is_some());
        let id = c.add_shortcut((2, B), (1, A), 0, 0);
        c.block(1, 2).unwrap();
        assert_eq!(c.take_revoked(), vec![id]);
        assert_eq!(c.shortcut_candidate(2, &frame(A, B), &out), None);
        assert_eq!(c.set_impairment(9, None), Err(CoreError::NoSuchPort));
    }

    #[test]
    fn an_impairment_holds_frames_until_due_and_clearing_releases_them() {
        let mut c = core3();
        let mut s = Settings::none(3);
        s.delay_ns = 1_000;
        c.set_impairment(2, Some(s)).unwrap();
        assert_eq!(c.impair(2, 1, 0, b"x"), None, "port 1 is not impaired");
        assert_eq!(c.impair(1, 2, 0, b"a"), Some(0));
        assert_eq!(c.impair(3, 2, 10, b"b"), Some(0));
        assert_eq!(c.next_due(), Some(1_000));
        let mut due = Vec::new();
        c.take_due(1_005, &mut due);
        assert_eq!(due, vec![(2, b"a".to_vec())]);
        c.set_impairment(2, None).unwrap();
        assert_eq!(c.next_due(), Some(0), "released at once");
        due.clear();
        c.take_due(0, &mut due);
        assert_eq!(due, vec![(2, b"b".to_vec())]);
        assert_eq!(c.next_due(), None);
    }

    #[test]
    fn a_capture_ends_and_withholds_the_shortcuts_of_its_ports() {
        let mut c = sc_core();
        let mut out = Vec::new();
        c.handle_frame(1, &frame(BCAST, A), 0, &mut out);
        c.handle_frame(2, &frame(A, B), 0, &mut out);
        let id = c.add_shortcut((2, B), (1, A), 0, 0);
        c.capture_begin(Some(3));
        assert!(!c.has_revoked(), "another port's capture");
        c.capture_begin(Some(1));
        c.capture_begin(Some(1));
        assert_eq!(c.take_revoked(), vec![id]);
        assert_eq!(c.shortcut_candidate(2, &frame(A, B), &out), None);
        c.capture_end(Some(1));
        assert_eq!(
            c.shortcut_candidate(2, &frame(A, B), &out),
            None,
            "one still runs"
        );
        c.capture_end(Some(1));
        assert!(c.shortcut_candidate(2, &frame(A, B), &out).is_some());
        c.capture_begin(None);
        assert!(c.captured(2) && c.shortcut_candidate(2, &frame(A, B), &out).is_none());
        c.capture_end(None);
        c.capture_end(None);
        assert!(!c.captured(2) && c.captured(3));
    }

    #[test]
    fn a_pair_impairment_acts_on_one_direction_between_two_ports_only() {
        let mut c = sc_core();
        let mut out = Vec::new();
        c.handle_frame(1, &frame(BCAST, A), 0, &mut out);
        c.handle_frame(2, &frame(A, B), 0, &mut out);
        let id = c.add_shortcut((2, B), (1, A), 0, 0);
        let mut s = Settings::none(3);
        s.delay_ns = 1_000;
        assert_eq!(
            c.set_pair_impairment(1, 1, Some(s.clone())),
            Err(CoreError::SamePort)
        );
        assert_eq!(
            c.set_pair_impairment(1, 9, Some(s.clone())),
            Err(CoreError::NoSuchPort)
        );
        c.set_pair_impairment(1, 2, Some(s.clone())).unwrap();
        assert_eq!(c.take_revoked(), vec![id], "the pair's shortcut ends");
        assert_eq!(
            c.shortcut_candidate(2, &frame(A, B), &out),
            None,
            "either way"
        );
        assert_eq!(c.impair(1, 2, 0, b"a"), Some(0), "1 -> 2 waits");
        assert_eq!(c.impair(2, 1, 0, b"b"), None, "2 -> 1 does not");
        assert_eq!(c.impair(3, 2, 0, b"c"), None, "3 -> 2 does not");
        // A port's own impairment still acts on the others' frames.
        let mut own = Settings::none(4);
        own.loss = 1.0;
        c.set_impairment(2, Some(own)).unwrap();
        assert_eq!(c.impair(3, 2, 0, b"c"), Some(0), "lost");
        assert_eq!(
            c.impair(1, 2, 0, b"d"),
            Some(0),
            "the pair's, not the port's"
        );
        let mut due = Vec::new();
        c.take_due(1_000, &mut due);
        assert_eq!(due, vec![(2, b"a".to_vec()), (2, b"d".to_vec())]);
        assert_eq!(c.pair_impairments().count(), 1);
        c.remove_port(1);
        assert_eq!(c.pair_impairments().count(), 0, "gone with its port");
    }

    #[test]
    fn no_shortcut_for_incapable_or_mismatched_ports_or_when_disabled() {
        let mut c = sc_core();
        let mut out = Vec::new();
        c.handle_frame(1, &frame(BCAST, A), 0, &mut out);
        c.handle_frame(2, &frame(A, B), 0, &mut out);
        c.port_mut(2).unwrap().shortcut = false;
        assert_eq!(c.shortcut_candidate(2, &frame(A, B), &out), None);
        c.port_mut(2).unwrap().shortcut = true;
        c.port_mut(2).unwrap().csum_fill = true;
        assert_eq!(c.shortcut_candidate(2, &frame(A, B), &out), None);
        c.port_mut(2).unwrap().csum_fill = false;
        c.port_mut(2).unwrap().kind = PortKind::Vde;
        assert_eq!(c.shortcut_candidate(2, &frame(A, B), &out), None);
        c.port_mut(2).unwrap().kind = PortKind::Native;
        c.shortcuts_enabled = false;
        assert_eq!(c.shortcut_candidate(2, &frame(A, B), &out), None);
        c.shortcuts_enabled = true;
        c.shortcut_limit = 0;
        assert_eq!(c.shortcut_candidate(2, &frame(A, B), &out), None);
        c.shortcut_limit = 1;
        assert!(c.shortcut_candidate(2, &frame(A, B), &out).is_some());
        // Tagged traffic never.
        c.create_vlan(7).unwrap();
        c.vlan_add_port(7, 1).unwrap();
        c.vlan_add_port(7, 2).unwrap();
        let t = tagged(A, B, 7);
        c.handle_frame(2, &t, 0, &mut out);
        assert_eq!(c.shortcut_candidate(2, &t, &out), None);
    }

    #[test]
    fn shortcut_revoked_on_mac_move_port_removal_and_vlan_change() {
        let mut c = sc_core();
        let mut out = Vec::new();
        let id = c.add_shortcut((1, A), (2, B), 0, 0);
        // A seen on its own port again: nothing.
        c.handle_frame(1, &frame(BCAST, A), 0, &mut out);
        assert!(!c.has_revoked());
        // B shows up on port 3: revoked.
        c.handle_frame(3, &frame(BCAST, B), 0, &mut out);
        assert_eq!(c.take_revoked(), vec![id]);
        let id = c.add_shortcut((1, A), (3, B), 0, 0);
        c.remove_port(3);
        assert_eq!(c.take_revoked(), vec![id]);
        let id = c.add_shortcut((1, A), (2, B), 0, 0);
        c.create_vlan(5).unwrap();
        c.set_port_vlan(1, 5).unwrap();
        assert_eq!(c.take_revoked(), vec![id]);
        let id = c.add_shortcut((1, A), (2, B), 5, 0);
        c.vlan_add_port(5, 2).unwrap();
        assert_eq!(c.take_revoked(), vec![id]);
        assert_eq!(c.shortcuts().count(), 0);
    }

    #[test]
    fn uplink_offers_go_from_asking_native_ports_to_vxlan_uplinks_and_end_like_shortcuts() {
        let mut c = Core::new(false);
        c.add_port(1, Port::new(PortKind::Native, "node", 65536))
            .unwrap();
        c.add_port(2, Port::new(PortKind::Vxlan, "vxlan://", 65536))
            .unwrap();
        c.add_port(3, Port::new(PortKind::Native, "old node", 65536))
            .unwrap();
        c.port_mut(1).unwrap().uplink_offers = true;
        let mut out = Vec::new();
        // B is behind the uplink; A and C are nodes.
        c.handle_frame(2, &frame(BCAST, B), 0, &mut out);
        c.handle_frame(1, &frame(B, A), 0, &mut out);
        assert_eq!(c.shortcut_candidate(1, &frame(B, A), &out), None);
        assert_eq!(
            c.uplink_candidate(1, &frame(B, A), &out),
            Some((A, 1, B, 2, 0))
        );
        // Not from a port that did not ask, nor towards a node.
        c.handle_frame(3, &frame(B, C), 0, &mut out);
        assert_eq!(c.uplink_candidate(3, &frame(B, C), &out), None);
        c.handle_frame(1, &frame(C, A), 0, &mut out);
        assert_eq!(c.uplink_candidate(1, &frame(C, A), &out), None);
        // Switched off.
        c.uplink_shortcuts = false;
        c.handle_frame(1, &frame(B, A), 0, &mut out);
        assert_eq!(c.uplink_candidate(1, &frame(B, A), &out), None);
        c.uplink_shortcuts = true;
        // Recorded as a shortcut; it ends when B moves behind the uplink, when the uplink
        // reopens, and with a capture of either port.
        let id = c.add_shortcut((1, A), (2, B), 0, 0);
        c.handle_frame(1, &frame(B, A), 0, &mut out);
        assert_eq!(
            c.uplink_candidate(1, &frame(B, A), &out),
            None,
            "made already"
        );
        // The daemon's reports of what it sent count as the uplink's sends.
        use ioth_common::vde::{StatReport, stat};
        let r = |metric, value| StatReport {
            metric,
            key: id,
            value,
        };
        let before = c.port(2).unwrap().counters;
        c.note_stat(1, r(stat::SHORTCUT_FRAMES, 10));
        c.note_stat(1, r(stat::SHORTCUT_BYTES, 6000));
        c.note_stat(1, r(stat::SHORTCUT_FRAMES, 15));
        c.note_stat(3, r(stat::SHORTCUT_FRAMES, 99));
        let after = c.port(2).unwrap().counters;
        assert_eq!(after.tx_frames - before.tx_frames, 15);
        assert_eq!(after.tx_bytes - before.tx_bytes, 6000);
        c.revoke_mac_at(2, B);
        assert_eq!(c.take_revoked(), vec![id]);
        let id = c.add_shortcut((1, A), (2, B), 0, 0);
        c.revoke_port(2);
        assert_eq!(c.take_revoked(), vec![id]);
        let id = c.add_shortcut((1, A), (2, B), 0, 0);
        c.capture_begin(Some(2));
        assert_eq!(c.take_revoked(), vec![id]);
        c.handle_frame(1, &frame(B, A), 0, &mut out);
        assert_eq!(c.uplink_candidate(1, &frame(B, A), &out), None, "captured");
        c.capture_end(Some(2));
        c.handle_frame(1, &frame(B, A), 0, &mut out);
        assert!(c.uplink_candidate(1, &frame(B, A), &out).is_some());
        // B comes home, to a node's port: over.
        let id = c.add_shortcut((1, A), (2, B), 0, 0);
        c.handle_frame(3, &frame(BCAST, B), 0, &mut out);
        assert_eq!(c.take_revoked(), vec![id]);
    }

    #[test]
    fn a_daemon_reports_only_its_own_figures() {
        use ioth_common::vde::{StatReport, stat};
        let mut c = sc_core();
        let id = c.add_shortcut((1, A), (2, B), 0, 0);
        let r = |metric, key, value| StatReport { metric, key, value };
        c.note_stat(1, r(stat::SHORTCUT_BYTES, id, 1000));
        c.note_stat(2, r(stat::SHORTCUT_FRAMES, id, 7));
        // Port 3 is not on the shortcut; no shortcut 99.
        c.note_stat(3, r(stat::SHORTCUT_BYTES, id, 5));
        c.note_stat(1, r(stat::SHORTCUT_BYTES, 99, 5));
        let (_, s) = c.shortcuts().next().unwrap();
        assert_eq!((s.bytes, s.frames), ((1000, 0), (0, 7)));
        c.note_stat(1, r(stat::TCP_STATE, 4, 12));
        c.note_stat(1, r(stat::RESIDENT, 0, 1 << 20));
        // Out of range, unknown: ignored, and nothing grows.
        c.note_stat(1, r(stat::TCP_STATE, 11, 1));
        c.note_stat(1, r(stat::SOCKETS, 5, 1));
        c.note_stat(1, r(200, 0, 1));
        let n = c.port(1).unwrap().node.as_deref().unwrap();
        assert_eq!(n.tcp_states[4], 12);
        assert_eq!(n.tcp_states.iter().sum::<u64>(), 12);
        assert_eq!(n.sockets, [0; 5]);
        assert_eq!(n.resident_bytes, 1 << 20);
        assert!(c.port(2).unwrap().node.is_none());
        // No port 9: nothing made.
        c.note_stat(9, r(stat::RESIDENT, 0, 1));
        assert!(c.port(9).is_none());
    }

    fn nth_mac(i: u32) -> Mac {
        let b = i.to_be_bytes();
        [0x02, 0x99, b[0], b[1], b[2], b[3]]
    }

    #[test]
    fn learning_is_capped_per_port_and_in_all_and_still_forwards() {
        let mut c = core3();
        c.max_macs_per_port = 4;
        c.max_macs = 6;
        let mut out = Vec::new();
        // Port 1 floods made-up sources: 4 learned, the rest forwarded but not learned.
        for i in 0..100 {
            let v = c.handle_frame(1, &frame(BCAST, nth_mac(i)), 0, &mut out);
            assert_eq!(v, Verdict::Forwarded(2), "frame {i} still forwarded");
        }
        assert_eq!(c.port(1).unwrap().learned, 4);
        assert_eq!(c.port(1).unwrap().counters.not_learned, 96);
        assert_eq!(c.learned(), 4);
        // A known source refreshes, it does not count.
        c.handle_frame(1, &frame(BCAST, nth_mac(0)), 1, &mut out);
        assert_eq!(c.port(1).unwrap().counters.not_learned, 96);
        // Port 2 still learns, up to the total.
        c.handle_frame(2, &frame(BCAST, A), 0, &mut out);
        c.handle_frame(2, &frame(BCAST, B), 0, &mut out);
        c.handle_frame(3, &frame(BCAST, C), 0, &mut out);
        assert_eq!(c.learned(), 6);
        assert_eq!(c.port(2).unwrap().learned, 2);
        assert_eq!(c.port(3).unwrap().learned, 0);
        assert_eq!(c.port(3).unwrap().counters.not_learned, 1);
        // C was not learned: frames to it are flooded.
        c.handle_frame(2, &frame(C, A), 0, &mut out);
        assert_eq!(ports(&out), vec![1, 3]);
        // A moves to the full port 1: forgotten (flooded), not left on port 2.
        c.handle_frame(1, &frame(BCAST, A), 0, &mut out);
        assert_eq!(c.port(2).unwrap().learned, 1);
        assert_eq!(c.port(1).unwrap().learned, 4);
        c.handle_frame(3, &frame(A, C), 0, &mut out);
        assert_eq!(ports(&out), vec![1, 2]);
        assert_eq!(c.port(3).unwrap().learned, 1, "room made by A's removal");
        // VLAN changes, port removal and ageing give the room back.
        c.set_port_vlan(2, 0).unwrap();
        assert_eq!(c.port(2).unwrap().learned, 0);
        c.remove_port(1);
        assert_eq!(c.learned(), 1);
        c.ageing_ms = 5;
        c.handle_frame(2, &frame(BCAST, B), 10, &mut out);
        c.expire(100);
        assert_eq!((c.learned(), c.port(3).unwrap().learned), (0, 0));
        c.handle_frame(2, &frame(BCAST, B), 100, &mut out);
        c.handle_frame(3, &frame(B, C), 200, &mut out);
        assert_eq!(ports(&out), vec![2]);
        // The destination's entry expired on lookup: flooded, and its port's count drops.
        assert_eq!(c.port(2).unwrap().learned, 0);
    }

    #[test]
    fn port_lock_keeps_each_ports_first_address() {
        let mut c = core3();
        c.port_lock = true;
        let mut out = Vec::new();
        assert_eq!(
            c.handle_frame(1, &frame(BCAST, A), 0, &mut out),
            Verdict::Forwarded(2)
        );
        assert_eq!(c.port(1).unwrap().locked_mac, Some(A));
        // Port 1 in another's name, to a broadcast or a unicast address: dropped.
        assert_eq!(
            c.handle_frame(1, &frame(BCAST, B), 0, &mut out),
            Verdict::Locked
        );
        assert_eq!(
            c.handle_frame(1, &frame(C, B), 0, &mut out),
            Verdict::Locked
        );
        // Port 2's very first frame claims A, which is port 1's: dropped, port 2 unlocked.
        assert_eq!(
            c.handle_frame(2, &frame(C, A), 0, &mut out),
            Verdict::Locked
        );
        assert_eq!(c.port(2).unwrap().locked_mac, None);
        assert_eq!(c.port(2).unwrap().counters.drop_lock, 1);
        // A group source never locks a port.
        let group: Mac = [0x33, 0x33, 0, 0, 0, 1];
        assert_eq!(
            c.handle_frame(2, &frame(BCAST, group), 0, &mut out),
            Verdict::Locked
        );
        c.handle_frame(2, &frame(BCAST, B), 0, &mut out);
        assert_eq!(c.port(2).unwrap().locked_mac, Some(B));
        // A's traffic still goes to port 1 only.
        c.handle_frame(3, &frame(A, C), 0, &mut out);
        assert_eq!(ports(&out), vec![1]);
        assert_eq!(c.port(1).unwrap().counters.drop_lock, 2);
        assert_eq!(c.port(1).unwrap().counters.rx_frames, 3);
        // The lock goes with the port; hub mode keeps the locks.
        c.remove_port(1);
        c.hub = true;
        assert_eq!(
            c.handle_frame(2, &frame(BCAST, A), 0, &mut out),
            Verdict::Locked
        );
        c.add_port(1, Port::new(PortKind::Native, "new", 1518))
            .unwrap();
        assert_eq!(
            c.handle_frame(1, &frame(BCAST, A), 0, &mut out),
            Verdict::Forwarded(2)
        );
        assert_eq!(c.port(1).unwrap().locked_mac, Some(A));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut c = core3();
        c.create_vlan(5).unwrap();
        c.vlan_add_port(5, 2).unwrap();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let mut x: u64 = 0x1234_5678;
        for len in 0..200usize {
            let f: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            for ing in 0..5 {
                c.handle_frame(ing, &f, len as u64, &mut out);
                for e in &out {
                    assert_ne!(e.port, ing);
                    let _ = render(&f, e.tagging, &mut buf);
                }
            }
        }
    }
}
