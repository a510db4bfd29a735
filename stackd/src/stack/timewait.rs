//! TIME_WAIT as a program sees it: the local address and port of a connection this node
//! closed first stay busy for 60 s (Linux's `TCP_TIMEWAIT_LEN`), so that a `bind` to them
//! without `SO_REUSEADDR` fails with `EADDRINUSE` while `SO_REUSEADDR` allows it; and
//! orphans still closing (FIN-WAIT-1/2, CLOSING) hold their ports as well. smoltcp's own
//! TIME-WAIT socket is not kept (its memory is a connection's): only the address and port,
//! at most [`MAX_TIME_WAIT`] of them (as `tcp_max_tw_buckets`, the oldest go first).
//!
//! Unlike Linux, a new socket with `SO_REUSEADDR` may bind even if the closed one had not
//! set it (Linux asks both); servers, which are who rebinds, set it on their listeners.
//! Likewise `SO_REUSEPORT` (Linux lets it bind over a TIME-WAIT connection that had it, as
//! those accepted from a listener with it do: a server that starts a listener of its group
//! again while its closed connections wait).

use super::*;

/// How long an address and port stay busy after an active close.
const TIME_WAIT: Duration = Duration::from_secs(60);
/// Most addresses and ports remembered at once.
pub(super) const MAX_TIME_WAIT: usize = 65536;

/// Recently closed local endpoints, oldest first, and their latest expiry by endpoint.
#[derive(Default)]
pub(super) struct TimeWait {
    order: VecDeque<(IpAddr, u16, Instant)>,
    until: HashMap<(IpAddr, u16), Instant>,
}

impl TimeWait {
    /// The connection `t` reached TIME-WAIT (it closed first): hold its local endpoint.
    pub(super) fn note(&mut self, t: &tcp::Socket, now: Instant) {
        let Some(ep) = t.local_endpoint() else {
            return;
        };
        let ip = config::unmap(IpAddr::from(ep.addr));
        self.expire(now);
        if self.order.len() >= MAX_TIME_WAIT
            && let Some((a, p, at)) = self.order.pop_front()
            && self.until.get(&(a, p)) == Some(&at)
        {
            self.until.remove(&(a, p));
        }
        let at = now + TIME_WAIT;
        self.order.push_back((ip, ep.port, at));
        self.until.insert((ip, ep.port), at);
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(a, p, at)) = self.order.front() {
            if at > now {
                break;
            }
            self.order.pop_front();
            if self.until.get(&(a, p)) == Some(&at) {
                self.until.remove(&(a, p));
            }
        }
    }

    /// Whether `port` on `ip` is in TIME-WAIT.
    fn holds(&self, ip: IpAddr, port: u16, now: Instant) -> bool {
        self.until.get(&(ip, port)).is_some_and(|at| *at > now)
    }
}

impl<D: Link> Net<D> {
    /// Whether a connection this node closed first still holds `port` on `addr` (`None`:
    /// any address of the families `v4`/`v6`): in TIME-WAIT, or an orphan still closing.
    pub(super) fn closing_holds(
        &self,
        addr: Option<IpAddr>,
        (v4, v6): (bool, bool),
        port: u16,
    ) -> bool {
        let overlaps = |ip: IpAddr| match addr {
            Some(a) => a == ip,
            None => (ip.is_ipv4() && v4) || (ip.is_ipv6() && v6),
        };
        let own = self.own.iter().copied();
        if own
            .filter(|ip| overlaps(*ip))
            .any(|ip| self.time_wait.holds(ip, port, self.now))
        {
            return true;
        }
        self.lingering.iter().any(|o| {
            let t = self.set.get::<tcp::Socket>(o.h);
            matches!(
                t.state(),
                tcp::State::FinWait1 | tcp::State::FinWait2 | tcp::State::Closing
            ) && t
                .local_endpoint()
                .is_some_and(|ep| ep.port == port && overlaps(config::unmap(IpAddr::from(ep.addr))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_wait_holds_for_a_minute_and_is_bounded() {
        let mut tw = TimeWait::default();
        let ip: IpAddr = "fd00::1".parse().unwrap();
        let t0 = Instant::from_secs(100);
        tw.order.push_back((ip, 80, t0 + TIME_WAIT));
        tw.until.insert((ip, 80), t0 + TIME_WAIT);
        assert!(tw.holds(ip, 80, t0));
        assert!(!tw.holds(ip, 81, t0));
        assert!(!tw.holds(ip, 80, t0 + TIME_WAIT));
        tw.expire(t0 + TIME_WAIT);
        assert!(tw.order.is_empty() && tw.until.is_empty());
    }
}
