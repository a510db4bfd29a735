//! Resetting the peers of a dead daemon's connections (see `crate::journal`).
//!
//! A new daemon knows the addresses and ports of its predecessor's connections, not their
//! sequence numbers, so it cannot send an acceptable RST itself. It sends each peer two bare
//! ACK segments with arbitrary numbers half the sequence space apart: at least one of them
//! is unacceptable to the peer (its acknowledgment number lies beyond what the peer sent, or
//! its sequence number outside the peer's window), and the peer answers it with an ACK that
//! carries the numbers it expects (RFC 9293 3.10.7.4, RFC 5961). That ACK matches no socket
//! here, so smoltcp answers it with an RST whose sequence number is the one the peer expects:
//! the peer's connection fails at once, as after a reboot of a kernel host, instead of
//! waiting for its own timeout.
//!
//! The probes go out through raw TCP sockets, which would also take every TCP segment that
//! arrives (and stop smoltcp's RSTs): they are removed as soon as the probes have left (at
//! most [`PROBE_TIME`] later, if a neighbour does not answer), and an answer that reaches
//! them before that is answered with the RST here.

use super::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::raw;
use smoltcp::wire::{
    IpProtocol, IpRepr, IpVersion, Ipv4Packet, Ipv6Packet, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber,
};

/// Longest the probe sockets stay.
const PROBE_TIME: Duration = Duration::from_secs(3);

pub(super) struct Resets {
    socks: Vec<SocketHandle>,
    peers: Vec<(SocketAddr, SocketAddr)>,
    until: Instant,
}

/// An IP packet carrying one TCP segment without payload.
fn segment(local: SocketAddr, remote: SocketAddr, repr: &TcpRepr) -> Option<Vec<u8>> {
    if local.is_ipv4() != remote.is_ipv4() {
        return None;
    }
    let caps = ChecksumCapabilities::default();
    let (src, dst) = (from_ip(local.ip()), from_ip(remote.ip()));
    let ip = IpRepr::new(src, dst, IpProtocol::Tcp, repr.header_len(), 64);
    let mut b = vec![0u8; ip.buffer_len()];
    ip.emit(&mut b[..], &caps);
    let mut t = TcpPacket::new_unchecked(&mut b[ip.header_len()..]);
    repr.emit(&mut t, &src, &dst, &caps);
    Some(b)
}

fn bare(local: SocketAddr, remote: SocketAddr, seq: u32, ack: Option<u32>) -> TcpRepr<'static> {
    TcpRepr {
        src_port: local.port(),
        dst_port: remote.port(),
        control: if ack.is_some() {
            TcpControl::None
        } else {
            TcpControl::Rst
        },
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    }
}

impl<D: Link> Stack<D> {
    /// Make the peers of `conns` (local, remote: a previous daemon's connections) reset them.
    pub fn reset_peers(&mut self, conns: Vec<(SocketAddr, SocketAddr)>, now: Instant) {
        self.net.now = now;
        // Connections within the node died with it entirely.
        let own = &self.net.own;
        let conns: Vec<_> = conns
            .into_iter()
            .filter(|(_, p)| !p.ip().is_loopback() && !own.contains(&p.ip()))
            .collect();
        if conns.is_empty() {
            return;
        }
        // Every peer at once (smoltcp asks for one neighbour a second).
        for (_, p) in &conns {
            self.net.prime_neighbour(p.ip());
        }
        let mut socks = Vec::new();
        for v in [IpVersion::Ipv4, IpVersion::Ipv6] {
            let buf = || {
                raw::PacketBuffer::new(
                    vec![raw::PacketMetadata::EMPTY; 2 * conns.len() + 16],
                    vec![0u8; (2 * conns.len() + 16) * 80],
                )
            };
            let mut r = raw::Socket::new(Some(v), Some(IpProtocol::Tcp), buf(), buf());
            for (l, p) in &conns {
                if l.is_ipv4() != (v == IpVersion::Ipv4) {
                    continue;
                }
                let seq = mix(&mut self.rng) as u32;
                let ack = mix(&mut self.rng) as u32;
                for half in [0u32, 1 << 31] {
                    let repr = bare(*l, *p, seq.wrapping_add(half), Some(ack.wrapping_add(half)));
                    if let Some(b) = segment(*l, *p, &repr) {
                        let _ = r.send_slice(&b);
                    }
                }
            }
            if r.send_queue() > 0 {
                socks.push(self.net.set.add(r));
            }
        }
        log::info!(
            "resetting {} connections of the previous daemon",
            conns.len()
        );
        self.net.resets = Some(Resets {
            socks,
            peers: conns,
            until: now + PROBE_TIME,
        });
    }
}

impl<D: Link> Net<D> {
    /// After egress: answer the peers' ACKs that the probe sockets took, and remove the
    /// sockets once the probes are out.
    pub(super) fn resets_tick(&mut self) {
        let Some(r) = &mut self.resets else {
            return;
        };
        let mut out = Vec::new();
        for &h in &r.socks {
            let s = self.set.get_mut::<raw::Socket>(h);
            while let Ok(pkt) = s.recv() {
                if let Some(rst) = answer(pkt, &r.peers) {
                    out.push((h, rst));
                }
            }
        }
        for (h, b) in out {
            let _ = self.set.get_mut::<raw::Socket>(h).send_slice(&b);
        }
        let sent = r
            .socks
            .iter()
            .all(|h| self.set.get::<raw::Socket>(*h).send_queue() == 0);
        if sent || self.now >= r.until {
            for h in r.socks.drain(..) {
                self.set.remove(h);
            }
            self.resets = None;
        }
    }
}

/// An RST for a segment from one of `peers` that carries an ACK (the answer to a probe).
fn answer(pkt: &[u8], peers: &[(SocketAddr, SocketAddr)]) -> Option<Vec<u8>> {
    let (src, dst, payload): (IpAddr, IpAddr, &[u8]) = match IpVersion::of_packet(pkt).ok()? {
        IpVersion::Ipv4 => {
            let p = Ipv4Packet::new_checked(pkt).ok()?;
            (
                IpAddr::V4(p.src_addr()),
                IpAddr::V4(p.dst_addr()),
                &pkt[p.header_len() as usize..p.total_len() as usize],
            )
        }
        IpVersion::Ipv6 => {
            let p = Ipv6Packet::new_checked(pkt).ok()?;
            (
                IpAddr::V6(p.src_addr()),
                IpAddr::V6(p.dst_addr()),
                &pkt[40..40 + p.payload_len() as usize],
            )
        }
    };
    let t = TcpPacket::new_checked(payload).ok()?;
    if t.rst() || !t.ack() {
        return None;
    }
    let local = SocketAddr::new(dst, t.dst_port());
    let remote = SocketAddr::new(src, t.src_port());
    if !peers.contains(&(local, remote)) {
        return None;
    }
    segment(
        local,
        remote,
        &bare(local, remote, t.ack_number().0 as u32, None),
    )
}
