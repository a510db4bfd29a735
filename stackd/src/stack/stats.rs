//! The node's figures for the switch's `/metrics` (`ioth_common::vde::stat`): TCP sockets
//! by state, connections cut through, the applications' sockets by protocol, and the
//! retransmission counters of smoltcp's sockets (smoltcp patch 7). Gathered at most once a
//! second, and only after something happened; the link sends the ones that changed.

use super::*;
use ioth_common::vde::stat;

/// How often the figures go to the link at most.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Retransmission counters summed over TCP sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TcpCounters {
    pub(super) retransmitted: u64,
    pub(super) timeouts: u64,
    pub(super) fast_retransmits: u64,
}

impl TcpCounters {
    /// Count `t`'s (its counters only grow over its life, reuse included).
    pub(super) fn add(&mut self, t: &tcp::Socket) {
        self.retransmitted = self.retransmitted.wrapping_add(t.retransmitted_segments());
        self.timeouts = self.timeouts.wrapping_add(t.timeouts());
        self.fast_retransmits = self.fast_retransmits.wrapping_add(t.fast_retransmits());
    }

    /// Take `t`'s out again (a spare socket back in the set, read live from then on).
    pub(super) fn sub(&mut self, t: &tcp::Socket) {
        self.retransmitted = self.retransmitted.wrapping_sub(t.retransmitted_segments());
        self.timeouts = self.timeouts.wrapping_sub(t.timeouts());
        self.fast_retransmits = self.fast_retransmits.wrapping_sub(t.fast_retransmits());
    }
}

/// The index of a TCP state in [`stat::TCP_STATES`].
fn state_index(s: tcp::State) -> usize {
    match s {
        tcp::State::Closed => 0,
        tcp::State::Listen => 1,
        tcp::State::SynSent => 2,
        tcp::State::SynReceived => 3,
        tcp::State::Established => 4,
        tcp::State::FinWait1 => 5,
        tcp::State::FinWait2 => 6,
        tcp::State::CloseWait => 7,
        tcp::State::Closing => 8,
        tcp::State::LastAck => 9,
        tcp::State::TimeWait => 10,
    }
}

impl<D: Link> Stack<D> {
    /// The figures as `(metric, key, value)`.
    pub fn stats(&self) -> Vec<(u8, u32, u64)> {
        let mut states = [0u64; stat::TCP_STATES.len()];
        let mut c = self.net.tcp_gone;
        for (_, so) in self.net.set.iter() {
            if let smoltcp::socket::Socket::Tcp(t) = so {
                states[state_index(t.state())] += 1;
                c.add(t);
            }
        }
        let mut kinds = [0u64; stat::SOCKET_KINDS.len()];
        let mut cut = 0;
        for s in self.socks.values() {
            kinds[match s.kind {
                Kind::Tcp => 0,
                Kind::Udp => 1,
                Kind::Icmp => 2,
                Kind::Raw => 3,
                Kind::Packet => 4,
            }] += 1;
            cut += u64::from(matches!(s.tcp, TcpState::Cut(_)));
        }
        let mut v: Vec<(u8, u32, u64)> = Vec::with_capacity(24);
        v.extend((0..).zip(states).map(|(k, n)| (stat::TCP_STATE, k, n)));
        v.extend((0..).zip(kinds).map(|(k, n)| (stat::SOCKETS, k, n)));
        v.push((stat::CUT_THROUGH, 0, cut));
        v.push((stat::RETRANSMITTED, 0, c.retransmitted));
        v.push((stat::TIMEOUTS, 0, c.timeouts));
        v.push((stat::FAST_RETRANSMITS, 0, c.fast_retransmits));
        v
    }

    /// Hand the figures to the link when they are due (called at the end of every poll).
    pub(super) fn report_stats(&mut self) {
        let now = self.net.now;
        if now < self.next_stats {
            self.stats_dirty = true;
            return;
        }
        self.next_stats = now + STATS_EVERY;
        self.stats_dirty = false;
        let v = self.stats();
        self.net.dev.report_stats(&v);
    }
}
