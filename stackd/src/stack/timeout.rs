//! How long a connection waits for a peer that went silent (its node died, the wire was
//! cut), as Linux bounds it:
//!
//! - data or a FIN not acknowledged, or a zero window whose probes nobody answers: the
//!   connection fails with `ETIMEDOUT` after [`RETRIES_TIMEOUT`] (Linux's `tcp_retries2`),
//!   or `TCP_USER_TIMEOUT` when the application set it. With `TCP_USER_TIMEOUT`, a window
//!   that stays shut ends it too, answered probes or not (as Linux since 5.13); without, an
//!   answered zero window lasts as long as the peer answers (RFC 1122 4.2.2.17);
//! - `SO_KEEPALIVE`: an idle connection is probed after `TCP_KEEPIDLE` of silence and fails
//!   with `ETIMEDOUT` once the peer was silent for `TCP_KEEPIDLE + TCP_KEEPCNT x
//!   TCP_KEEPINTVL` (with `TCP_USER_TIMEOUT`: that, but not before the first probe had an
//!   interval to be answered). smoltcp has one keep-alive interval: probes go out every
//!   `TCP_KEEPIDLE` of silence, not every `TCP_KEEPINTVL` after the first;
//! - orphans (closed by the application; they live on in `lingering`, or as a connection
//!   whose last data still waits in the socketpair): unacknowledged data or FIN end after
//!   [`ORPHAN_TIMEOUT`] (Linux's `tcp_orphan_retries`), data that makes no progress at all
//!   (a window that never opens) after twice that (Linux: once the probes' backoff reaches
//!   the maximum RTO, 204.6 s), FIN-WAIT-2 after [`FIN_TIMEOUT`] (`tcp_fin_timeout`, or
//!   `TCP_LINGER2`), silently as Linux's FIN-WAIT-2 time-wait socket expires. The daemon,
//!   which exits when no socket is left, then can.
//!
//! A quiet connection with nothing to send and no keep-alive is never timed out, as on
//! Linux. The limits are times counted from when the peer was last heard from, not
//! retransmission counts: smoltcp retransmits with its own RTO (1 s minimum, 60 s maximum),
//! so Linux's counts are turned into the times they take on Linux (200 ms minimum RTO
//! doubling up to 120 s), which is what an application there sees.
//!
//! The clock is smoltcp's socket timeout (`set_timeout`), which aborts a socket once the
//! peer was silent that long since the transmit queue last went from empty to busy. It fires
//! in `dispatch` even while the peer's neighbour entry is unresolved (smoltcp then tries
//! every second), so a dead node's connection ends although no segment can leave. It knows
//! nothing of a FIN sent on a connection that was idle, nor of keep-alive turned on late:
//! its "last heard" may then be hours old. So the stack keeps its own lower bound of that
//! time ([`Watch::heard`]: data that arrived, data acknowledged, a state only the peer
//! moves to) and sets the timeout that much longer, so that it never fires before the
//! limit counted from the start of the wait. Pure ACKs (answers to window probes and
//! keep-alives) are seen by smoltcp only; they keep the connection alive there.
//!
//! The waits that pure ACKs must not extend (a shut window, FIN-WAIT-2) are the stack's own:
//! [`Watch::stall_end`], checked at visits (connections get an alarm, `Stack::alarms`) and
//! by `reap` (orphans).
//!
//! A timeout smoltcp fires in egress wakes the socket like any state change; the stack looks
//! at the sockets woken in egress ([`super::Stack::note_timeouts`]) and reports a connection
//! that closed there while a limit ran as `ETIMEDOUT` (`SO_ERROR`), not as a reset. Reads
//! give EOF and writes `EPIPE`, as after a reset (the application end is a socketpair).

use super::*;

/// The daemon-wide limits (Linux's sysctls); [`Stack::set_tcp_timeouts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpTimeouts {
    /// Unacknowledged data or FIN of a connection ([`RETRIES_TIMEOUT`]).
    pub retries: Duration,
    /// The same for an orphan ([`ORPHAN_TIMEOUT`]).
    pub orphan: Duration,
    /// FIN-WAIT-2 of an orphan ([`FIN_TIMEOUT`]).
    pub fin: Duration,
}

impl Default for TcpTimeouts {
    fn default() -> Self {
        TcpTimeouts {
            retries: RETRIES_TIMEOUT,
            orphan: ORPHAN_TIMEOUT,
            fin: FIN_TIMEOUT,
        }
    }
}

/// What bounds a connection now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wait {
    /// Nothing: the connection may stay quiet forever.
    None,
    /// Data to be acknowledged (or sent into a zero window).
    Data,
    /// Our FIN to be acknowledged.
    Fin,
    /// Keep-alive on an idle connection.
    KeepAlive,
    /// An orphan in FIN-WAIT-2.
    FinWait2,
}

/// The per-socket options that bound a wait.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bounds {
    /// `TCP_USER_TIMEOUT`.
    pub(super) user: Option<Duration>,
    /// `SO_KEEPALIVE`: idle, interval, count.
    pub(super) keepalive: Option<(Duration, Duration, u32)>,
    /// `TCP_LINGER2` (`None`: [`TcpTimeouts::fin`]).
    pub(super) linger2: Option<Duration>,
}

impl Bounds {
    pub(super) fn of(o: &Opts) -> Bounds {
        Bounds {
            user: (o.user_timeout > 0).then(|| Duration::from_millis(o.user_timeout as u64)),
            keepalive: o.keepalive.then(|| {
                (
                    Duration::from_secs(o.keepidle as u64),
                    Duration::from_secs(o.keepintvl as u64),
                    o.keepcnt,
                )
            }),
            linger2: match o.linger2 {
                0 => None,
                v => Some(Duration::from_secs(v.max(0) as u64)),
            },
        }
    }
}

/// What the stack saw of one connection's peer, to bound its waits.
#[derive(Clone, Debug)]
pub(super) struct Watch {
    /// When the peer was last seen alive: never later than smoltcp's own record.
    pub(super) heard: Instant,
    /// The current wait and since when.
    pub(super) wait: Wait,
    pub(super) since: Instant,
    pub(super) bounds: Bounds,
    /// Whether the last look saw an orphan.
    orphan: bool,
    /// When the stack will visit it for [`Watch::stall_end`] (see `Stack::alarms`).
    pub(super) alarm: Option<Instant>,
    /// Queue lengths and state at the end of the last look.
    sendq: usize,
    recvq: usize,
    state: tcp::State,
}

impl Watch {
    pub(super) fn new(now: Instant, t: &tcp::Socket, bounds: Bounds) -> Watch {
        Watch {
            heard: now,
            wait: Wait::None,
            since: now,
            bounds,
            orphan: false,
            alarm: None,
            sendq: t.send_queue(),
            recvq: t.recv_queue(),
            state: t.state(),
        }
    }

    /// Before the socket is pumped: what moved since the last look shows the peer alive.
    pub(super) fn look(&mut self, t: &tcp::Socket, now: Instant) {
        let st = t.state();
        let moved = st != self.state && !ours(self.state, st);
        if t.send_queue() < self.sendq || t.recv_queue() > self.recvq || moved {
            self.heard = now;
        }
    }

    /// After the socket is pumped: choose the wait and set smoltcp's timeout for it; what
    /// the caller must do now.
    pub(super) fn arm(
        &mut self,
        t: &mut tcp::Socket,
        now: Instant,
        limits: &TcpTimeouts,
        orphan: bool,
    ) -> Verdict {
        self.orphan = orphan;
        let st = t.state();
        self.sendq = t.send_queue();
        self.recvq = t.recv_queue();
        self.state = st;
        use tcp::State::*;
        let wait = if matches!(st, Closed | TimeWait | Listen | SynSent | SynReceived) {
            Wait::None
        } else if self.sendq > 0 {
            Wait::Data
        } else if matches!(st, FinWait1 | Closing | LastAck) {
            Wait::Fin
        } else if orphan && st == FinWait2 {
            Wait::FinWait2
        } else if !orphan && self.bounds.keepalive.is_some() {
            Wait::KeepAlive
        } else {
            Wait::None
        };
        if wait != self.wait {
            self.wait = wait;
            self.since = now;
        }
        let b = &self.bounds;
        let limit = match wait {
            Wait::None => None,
            Wait::Data | Wait::Fin => Some(b.user.unwrap_or(if orphan {
                limits.orphan
            } else {
                limits.retries
            })),
            Wait::KeepAlive => b.keepalive.map(|(idle, intvl, cnt)| match b.user {
                Some(u) => u.max(idle + intvl),
                None => idle + intvl * cnt,
            }),
            Wait::FinWait2 => None,
        };
        // Data makes smoltcp count from its first transmission (the queue was empty before:
        // `send` forgets the old time); other waits may start long after it last heard.
        let late = if wait == Wait::Data || self.since <= self.heard {
            Duration::ZERO
        } else {
            self.since - self.heard
        };
        let want = limit.map(|l| l + late);
        if t.timeout() != want {
            t.set_timeout(want);
        }
        match self.stall_end(limits) {
            Some(end) if now >= end && wait == Wait::FinWait2 => Verdict::Forget,
            Some(end) if now >= end => Verdict::Abort,
            _ => Verdict::Wait,
        }
    }

    /// When the stack itself ends the wait, whatever smoltcp hears: an orphan's FIN-WAIT-2
    /// (`tcp_fin_timeout`); data that makes no progress (nothing acknowledged: a zero window
    /// whose probes the peer answers) of an orphan, or of a connection with
    /// `TCP_USER_TIMEOUT`. Linux keeps such a window open forever otherwise (RFC 1122
    /// 4.2.2.17), but not for an orphan (it gives up once the probes' backoff reaches the
    /// maximum RTO, 204.6 s with a 200 ms RTO: here twice the orphan limit) nor past a
    /// user timeout.
    pub(super) fn stall_end(&self, limits: &TcpTimeouts) -> Option<Instant> {
        let b = &self.bounds;
        let stalled = self.since.max(self.heard);
        match self.wait {
            Wait::FinWait2 if self.orphan => Some(self.since + b.linger2.unwrap_or(limits.fin)),
            Wait::Data if self.orphan => Some(stalled + b.user.unwrap_or(limits.orphan * 2)),
            Wait::Data => b.user.map(|u| stalled + u),
            _ => None,
        }
    }

    /// Whether a wait for the peer ran (its end is a timeout, not a reset).
    pub(super) fn waiting(&self) -> bool {
        !matches!(self.wait, Wait::None | Wait::FinWait2)
    }
}

/// What [`Watch::arm`] asks of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing yet.
    Wait,
    /// Drop the socket without a word (an orphan's FIN-WAIT-2 is over).
    Forget,
    /// Give up: abort (RST), `ETIMEDOUT` for the application.
    Abort,
}

/// State changes the application causes (a close), which say nothing of the peer.
fn ours(from: tcp::State, to: tcp::State) -> bool {
    use tcp::State::*;
    matches!(
        (from, to),
        (Established, FinWait1) | (CloseWait, LastAck) | (_, Closed)
    )
}

/// A smoltcp socket the application no longer holds, kept until smoltcp is done with it
/// (an RST to send, a FIN to finish); with a [`Watch`] when it was a connection.
pub(super) struct Linger {
    pub(super) h: SocketHandle,
    pub(super) watch: Option<Box<Watch>>,
}

impl From<SocketHandle> for Linger {
    fn from(h: SocketHandle) -> Linger {
        Linger { h, watch: None }
    }
}

impl<D: Link> Stack<D> {
    /// The daemon-wide limits (Linux's `tcp_retries2`, `tcp_orphan_retries`,
    /// `tcp_fin_timeout`); the defaults are Linux's.
    pub fn set_tcp_timeouts(&mut self, t: TcpTimeouts) {
        self.net.timeouts = t;
    }

    /// Connections smoltcp closed in egress while a wait ran: their timeout fired. They get
    /// `ETIMEDOUT` and are visited at the next poll (they are marked already: the state
    /// change woke them).
    pub(super) fn note_timeouts(&mut self) {
        let mut woken = std::mem::take(&mut self.ids);
        woken.clear();
        self.work.take(&mut woken);
        for &id in &woken {
            self.work.add(id);
            let Some(s) = self.socks.get_mut(&id) else {
                continue;
            };
            let TcpState::Conn(c) = &s.tcp else {
                continue;
            };
            if c.watch.waiting()
                && s.so_error == 0
                && self.net.set.get::<tcp::Socket>(c.h).state() == tcp::State::Closed
            {
                log::debug!("connection timed out ({:?})", c.watch.wait);
                s.so_error = libc::ETIMEDOUT;
            }
        }
        self.ids = woken;
    }
}
