//! The loop's work: ingress (frames read one at a time, after a look at their headers: SYNs
//! to a full listener are dropped as Linux does, listener pools refilled around every SYN),
//! egress (`poll_egress` until quiet), and the pass over every socket that moves TCP data
//! between smoltcp and the socketpairs, finishes connects, and frees what is closed.

use super::*;

impl<D: Link> Stack<D> {
    /// Read frames (at most [`RX_BATCH`]); `true` when the link went down.
    pub(super) fn ingress(&mut self) -> bool {
        if !self.net.more_rx && !self.net.dev.has_hairpin() {
            return false;
        }
        self.net.more_rx = false;
        let mut budget = RX_BATCH;
        loop {
            if self.net.dev.is_blocked() {
                // Replies could not be sent: resume when the switch socket drains (the
                // EPOLLOUT event the device asked for), or retry at once without one.
                self.net.more_rx = !self.net.dev.wakes_when_writable();
                return false;
            }
            if budget == 0 {
                self.net.more_rx = true;
                return false;
            }
            budget -= 1;
            let (n, hairpin) = match self.net.dev.recv() {
                Recv::Frame { len, hairpin } => (len, hairpin),
                Recv::Empty => return false,
                Recv::Down => return true,
            };
            if !hairpin {
                self.packet_tap(n);
            }
            let f = self.net.dev.frame(n);
            if !hairpin && frame::loopback_martian(f) {
                log::debug!("frame with a loopback address from the switch: dropped");
                continue;
            }
            if let Some(ip) = frame::neighbour_seen(f) {
                if self.net.seen.len() > 4096 {
                    self.net.seen.clear();
                }
                self.net.seen.insert(ip, self.net.now);
            }
            let tuple = frame::tcp_tuple(f);
            // The socket that takes a TCP segment, when the index knows it (`demux.rs`).
            let mut hint = match &tuple {
                Some((k, _)) if self.net.is_own(&k.0) => self.net.demux.lookup(&self.net.set, k),
                _ => None,
            };
            let mut syn_port = None;
            let mut syn_listener = None;
            if let Some((src, dst, port)) = frame::tcp_syn(f)
                && self.net.is_own(&dst)
            {
                let from = tuple.as_ref().map(|(k, _)| SocketAddr::new(k.2, k.3));
                match self.match_listener(dst, port, from) {
                    Some(lid) => {
                        // The SYN-ACK needs the client's link address, which smoltcp does
                        // not learn from the SYN; its own request may be held back for up to
                        // a second by its cache-wide rate limit (a fresh daemon that just
                        // asked for another neighbour: the SYN-ACK waited for the client's
                        // SYN retransmission).
                        if !self.net.is_own(&src) {
                            self.net.prime_neighbour(src);
                        }
                        syn_listener = Some(lid);
                        let full = self
                            .socks
                            .get(&lid)
                            .map(|l| {
                                let TcpState::Listening(li) = &l.tcp else {
                                    return true;
                                };
                                self.net.accept_pending(l) >= li.backlog
                            })
                            .unwrap_or(true);
                        if full {
                            log::debug!("backlog full on port {port}: SYN dropped");
                            continue;
                        }
                        self.refill_port(port);
                        syn_port = Some(port);
                    }
                    None => {
                        // A pool for another family would take it: refuse it as Linux does
                        // (no listener of its family) rather than misdeliver it.
                        if self
                            .listening()
                            .any(|(_, s)| s.bound.map(|b| b.1) == Some(port))
                        {
                            let mut rst = Vec::new();
                            // (A SYN of our own, hairpinned: the RST comes back the same way.)
                            if frame::rst_for_syn(f, self.net.cfg.mac.0, &mut rst) {
                                self.net.dev.send_now(&rst);
                            }
                            continue;
                        }
                    }
                }
            }
            if hint.is_none()
                && let (Some(lid), Some((k, _))) = (syn_listener, &tuple)
            {
                hint = self.pool_socket(lid, k);
            }
            let net = &mut self.net;
            net.dev.stage(Some(n));
            match hint {
                Some(h) => net.ingress_to(h),
                None => {
                    net.demux.egress_all = true;
                    net.iface
                        .poll_ingress_single(net.now, &mut net.dev, &mut net.set);
                }
            }
            net.dev.stage(None);
            if let Some(p) = syn_port {
                self.refill_port(p);
            }
        }
    }

    /// Visit the sockets with work (see `work.rs`): pump data, finish connects, hand over
    /// accepted connections, drop closed sockets.
    pub(super) fn service(&mut self) {
        let mut ids = std::mem::take(&mut self.ids);
        ids.clear();
        ids.append(&mut self.revisit);
        if let Some(every) = self.sweep
            && self.net.now >= self.next_sweep
        {
            self.next_sweep = self.net.now + every;
            ids.extend(self.socks.keys().copied());
        }
        while let Some(Reverse((at, id))) = self.alarms.peek().copied()
            && at <= self.net.now
        {
            self.alarms.pop();
            ids.push(id);
        }
        self.work.take(&mut ids);
        let mut accepted: Vec<SocketHandle> = Vec::new();
        for &id in &ids {
            if self.socks.get(&id).is_some_and(|s| {
                matches!(
                    s.tcp,
                    TcpState::Cut(_)
                        | TcpState::CutPending(_)
                        | TcpState::CutWait(_)
                        | TcpState::Fresh(_)
                )
            }) {
                if !self.cut_visit(id) {
                    self.socks.remove(&id);
                    self.kept_drop(id);
                } else if let Some(s) = self.socks.get(&id)
                    && matches!(s.tcp, TcpState::Connecting(_))
                {
                    // A wait for the neighbour that ended in TCP: smoltcp must wake it when
                    // the handshake ends, as for any connect.
                    self.net.rearm(s);
                    self.revisit.push(id);
                }
                continue;
            }
            let Some(mut s) = self.socks.get_mut(&id) else {
                continue;
            };
            if s.kind == Kind::Udp && s.dg.h.is_none() && s.rd {
                // A first datagram from an unbound socket: bind it to an ephemeral port.
                let _ = self.udp_open(id);
                let Some(again) = self.socks.get_mut(&id) else {
                    continue;
                };
                s = again;
            }
            let net = &mut self.net;
            let keep = match s.kind {
                Kind::Tcp => net.service_tcp(s, &mut accepted),
                _ => {
                    net.pump_dgram(s);
                    if s.hup {
                        if let Some(h) = s.dg.h.take() {
                            net.set.remove(h);
                        }
                        false
                    } else {
                        true
                    }
                }
            };
            if !keep {
                // Dropping it closes its daemon end, which leaves the owner's epoll set.
                self.socks.remove(&id);
                self.kept_drop(id);
                continue;
            }
            net.rearm(s);
            match &mut s.tcp {
                TcpState::Connecting(_) => self.revisit.push(id),
                TcpState::Listening(l) if l.kernel.is_some() => {
                    // Connections wait for room in the kernel listener's backlog (no
                    // descriptor says when): try again soon. And a look for its close.
                    if !l.queue.is_empty() {
                        self.alarms.push(Reverse((net.now + KERNEL_RETRY, id)));
                    }
                    if let Some(k) = &mut l.kernel
                        && net.now >= k.check.check_at
                    {
                        if kernel_listener_gone(net.id, id, s.app_ino) {
                            s.hup = true;
                            self.revisit.push(id);
                        } else {
                            k.check.later(net.now);
                            self.alarms.push(Reverse((k.check.check_at, id)));
                        }
                    }
                }
                TcpState::Conn(c) => {
                    // A wait the stack ends itself: visit it then (one alarm at a time; a
                    // visit at the old time sets the next).
                    let w = &mut c.watch;
                    if w.alarm.is_some_and(|a| a <= net.now) {
                        w.alarm = None;
                    }
                    if let Some(end) = w.stall_end(&net.timeouts)
                        && w.alarm.is_none_or(|a| a > end)
                    {
                        w.alarm = Some(end);
                        self.alarms.push(Reverse((end, id)));
                    }
                }
                _ => {}
            }
        }
        self.ids = ids;
        self.redispatch();
        self.udp_errors();
        if let Some(m) = &mut self.net.mdns {
            m.poll(&mut self.net.set, &self.net.own);
        }
        // Connections waiting for descriptors, oldest first, until one still finds none.
        let mut waiting = std::mem::take(&mut self.unpaired).into_iter();
        for h in waiting.by_ref() {
            self.accepted(h);
            if !self.unpaired.is_empty() {
                break;
            }
        }
        self.unpaired.extend(waiting);
        for h in accepted {
            self.accepted(h);
        }
        self.rehome();
    }

    /// Connections queued on a kernel listener that closed before it took them (the daemon
    /// sees a close only when it next looks, or when a hand-over fails), and handshakes
    /// under way on it: each goes to the listener that now takes its addresses (another of
    /// a group sharing the port, `SO_REUSEPORT`, as if it had been its own from the start),
    /// or is reset, as Linux resets the connections queued on a listener that closes.
    fn rehome(&mut self) {
        for h in std::mem::take(&mut self.net.orphan_handshakes) {
            let t = self.net.set.get::<tcp::Socket>(h);
            let to = match (t.local_endpoint(), t.remote_endpoint()) {
                (Some(l), Some(r)) => {
                    let (l, r) = (ep_to_sa(l), ep_to_sa(r));
                    self.match_listener(l.ip(), l.port(), Some(r))
                }
                _ => None,
            };
            if let Some(lid) = to
                && let Some(l) = self.socks.get_mut(&lid)
                && let TcpState::Listening(li) = &mut l.tcp
            {
                li.pool.push(h);
                self.work.add(lid);
                continue;
            }
            self.net.set.get_mut::<tcp::Socket>(h).abort();
            self.net.lingering.push(h.into());
        }
        for p in std::mem::take(&mut self.net.orphans) {
            let conn = self
                .socks
                .get(&p.conn)
                .and_then(|s| Some((s.local?, s.peer?)));
            let to = conn.and_then(|(local, peer)| {
                let lid = self.match_listener(local.ip(), local.port(), Some(peer))?;
                let l = self.socks.get(&lid)?;
                matches!(&l.tcp, TcpState::Listening(li) if li.kernel.is_some()).then_some(lid)
            });
            if let Some(lid) = to
                && let Some(l) = self.socks.get_mut(&lid)
                && let TcpState::Listening(li) = &mut l.tcp
            {
                log::debug!("connection {:x}: its listener closed: to {lid:x}", p.conn);
                li.queue.push_back(p);
                deliver(l, &mut self.net.delivered);
                self.work.add(lid);
                continue;
            }
            log::debug!("connection {:x}: its listener closed: reset", p.conn);
            let Some(s) = self.socks.remove(&p.conn) else {
                continue;
            };
            self.kept_drop(p.conn);
            if let TcpState::Conn(c) = &s.tcp {
                self.net.set.get_mut::<tcp::Socket>(c.h).abort();
                self.net.lingering.push(c.h.into());
            }
        }
    }
}

impl<D: Link> Net<D> {
    /// smoltcp's egress: every socket is asked whether it has something to send.
    pub(super) fn egress_every_socket(&mut self) {
        for _ in 0..100_000 {
            if !self.dev.flush() {
                return;
            }
            match self
                .iface
                .poll_egress(self.now, &mut self.dev, &mut self.set)
            {
                smoltcp::iface::PollResult::None => return,
                smoltcp::iface::PollResult::SocketStateChanged => {}
            }
        }
    }

    /// Ask smoltcp to wake socket `s` when something changes for it (see `work.rs`): each
    /// waker fires once, so every visit ends here.
    pub(super) fn rearm(&mut self, s: &Sock) {
        let w = &s.waker;
        let mut tcp_arm = |h: SocketHandle| {
            let t = self.set.get_mut::<tcp::Socket>(h);
            t.register_recv_waker(w);
            t.register_send_waker(w);
        };
        match &s.tcp {
            TcpState::Listening(l) => l.pool.iter().for_each(|h| tcp_arm(*h)),
            TcpState::Connecting(c) => tcp_arm(c.h),
            TcpState::Conn(c) => tcp_arm(c.h),
            TcpState::Idle
            | TcpState::Fresh(_)
            | TcpState::Done
            | TcpState::Cut(_)
            | TcpState::CutPending(_)
            | TcpState::CutWait(_) => {}
        }
        // What the visit did may have to go out (see `demux.rs`).
        match &s.tcp {
            TcpState::Listening(l) => l.pool.iter().for_each(|h| self.demux.touch(*h)),
            TcpState::Connecting(c) => self.demux.touch(c.h),
            TcpState::Conn(c) => self.demux.touch(c.h),
            TcpState::Idle
            | TcpState::Fresh(_)
            | TcpState::Done
            | TcpState::Cut(_)
            | TcpState::CutPending(_)
            | TcpState::CutWait(_) => {}
        }
        let Some(h) = s.dg.h else {
            return;
        };
        self.demux.egress_all = true;
        match s.kind {
            Kind::Udp => {
                let u = self.set.get_mut::<udp::Socket>(h);
                u.register_recv_waker(w);
                u.register_send_waker(w);
            }
            Kind::Icmp => {
                let i = self.set.get_mut::<icmp::Socket>(h);
                i.register_recv_waker(w);
                i.register_send_waker(w);
            }
            Kind::Raw => {
                let r = self.set.get_mut::<smoltcp::socket::raw::Socket>(h);
                r.register_recv_waker(w);
                r.register_send_waker(w);
            }
            Kind::Tcp | Kind::Packet => {}
        }
    }

    /// Free lingering sockets that smoltcp is done with (called after egress, so that an
    /// aborted socket got its chance to send the RST), and bound the waits of orphans
    /// (`timeout.rs`).
    pub(super) fn reap(&mut self) {
        let set = &mut self.set;
        let spare = &mut self.tcp_spare;
        let gone = &mut self.tcp_gone;
        let time_wait = &mut self.time_wait;
        let demux = &mut self.demux;
        let (now, limits) = (self.now, self.timeouts);
        let mut next_orphan_end: Option<Instant> = None;
        self.lingering.retain_mut(|o| {
            let t = set.get_mut::<tcp::Socket>(o.h);
            if t.recv_queue() > 0 && t.state() != tcp::State::Closed {
                // Data for a socket the app has closed: Linux answers with RST. Keep the
                // socket until egress has sent it.
                t.abort();
                return true;
            }
            let st = t.state();
            if matches!(st, tcp::State::Closed | tcp::State::TimeWait) {
                if st == tcp::State::TimeWait {
                    time_wait.note(t, now);
                }
                demux.forget(o.h);
                keep_spare(spare, gone, set.remove(o.h));
                return false;
            }
            let Some(w) = &mut o.watch else {
                return true;
            };
            w.look(t, now);
            match w.arm(t, now, &limits, true) {
                Verdict::Forget => {
                    // FIN-WAIT-2 is over: forget it without a word, as Linux's time-wait
                    // socket for it expires.
                    log::debug!("orphan in FIN-WAIT-2 dropped");
                    demux.forget(o.h);
                    keep_spare(spare, gone, set.remove(o.h));
                    return false;
                }
                Verdict::Abort => {
                    log::debug!("orphan without progress aborted");
                    t.abort();
                    return true;
                }
                Verdict::Wait => {}
            }
            if let Some(end) = w.stall_end(&limits) {
                next_orphan_end = Some(next_orphan_end.map_or(end, |n| n.min(end)));
            }
            true
        });
        self.next_orphan_end = next_orphan_end;
    }

    /// Service one TCP socket; `false` when it is gone.
    pub(super) fn service_tcp(&mut self, s: &mut Sock, accepted: &mut Vec<SocketHandle>) -> bool {
        match &mut s.tcp {
            TcpState::Idle => !s.hup,
            // (Visited in `service` before this.)
            TcpState::Cut(_)
            | TcpState::CutPending(_)
            | TcpState::CutWait(_)
            | TcpState::Fresh(_) => true,
            TcpState::Done => {
                // Whatever the app still writes has nowhere to go.
                while s.rd {
                    match sys::read(s.dmn.raw(), &mut self.scratch) {
                        Ok(n) if n > 0 => {}
                        Err(e) if e == Errno::EINTR => {}
                        _ => s.rd = false,
                    }
                }
                !s.hup
            }
            TcpState::Listening(l) => {
                let mut i = 0;
                while i < l.pool.len() {
                    let h = l.pool[i];
                    match self.set.get::<tcp::Socket>(h).state() {
                        tcp::State::Listen => i += 1,
                        tcp::State::SynReceived => {
                            // (Taken by smoltcp's scan: index it for the rest of the
                            // handshake.)
                            self.demux.learn(h, self.set.get::<tcp::Socket>(h));
                            i += 1;
                        }
                        tcp::State::Closed => {
                            self.free_tcp(h);
                            l.pool.swap_remove(i);
                        }
                        _ => {
                            l.pool.swap_remove(i);
                            accepted.push(h);
                        }
                    }
                }
                if l.kernel.is_some() {
                    s.wr = true;
                }
                if s.wr {
                    deliver(s, &mut self.delivered);
                }
                if s.hup {
                    if let TcpState::Listening(l) = std::mem::replace(&mut s.tcp, TcpState::Done) {
                        for h in l.pool {
                            let t = self.set.get_mut::<tcp::Socket>(h);
                            if l.kernel.is_some() && t.state() != tcp::State::Listen {
                                // A handshake under way: as a connection queued (below).
                                self.orphan_handshakes.push(h);
                                continue;
                            }
                            t.abort();
                            self.lingering.push(h.into());
                        }
                        // Queued connections: dropping their app ends makes them close; a
                        // kernel listener's (second descriptors of our own ends) go to
                        // another listener of the port, or are reset.
                        if l.kernel.is_some() {
                            self.orphans
                                .extend(l.queue.into_iter().filter(|p| p.app.is_some()));
                        }
                    }
                    return false;
                }
                true
            }
            TcpState::Connecting(c) => {
                let st = self.set.get::<tcp::Socket>(c.h).state();
                let elapsed = self.now - c.start;
                let err = match st {
                    tcp::State::SynSent | tcp::State::SynReceived => {
                        if elapsed >= CONNECT_TIMEOUT {
                            Some(libc::ETIMEDOUT)
                        } else if self.neighbour_failed(c.hop, c.start) {
                            Some(libc::EHOSTUNREACH)
                        } else {
                            None
                        }
                    }
                    tcp::State::Closed => Some(libc::ECONNREFUSED),
                    _ => Some(0),
                };
                if let Some(e) = err {
                    self.connect_done(s, e);
                    if e == 0 {
                        return self.pump_tcp(s);
                    }
                }
                true
            }
            TcpState::Conn(_) => self.pump_tcp(s),
        }
    }

    /// Move data both ways for a connected socket; `false` when the socket is gone.
    pub(super) fn pump_tcp(&mut self, s: &mut Sock) -> bool {
        let TcpState::Conn(c) = &mut s.tcp else {
            return true;
        };
        if s.held {
            // Nothing to pump until a kernel listener takes it (`deliver`).
            return true;
        }
        let fd = s.dmn.raw();
        let t = self.set.get_mut::<tcp::Socket>(c.h);
        c.watch.look(t, self.now);
        // net → app
        if s.wr {
            while t.can_recv() {
                let r = t.recv(|buf| match sys::write(fd, buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(n)) if n > 0 => {
                        let was = bulk(c.rx_bytes, c.tx_bytes);
                        c.rx_bytes += n as u64;
                        if !was && bulk(c.rx_bytes, c.tx_bytes) {
                            t.set_ack_delay(Some(ACK_DELAY));
                        }
                    }
                    Ok(Err(e)) if e.is_again() => {
                        s.wr = false;
                        break;
                    }
                    Ok(Err(e)) if e == Errno::EINTR => {}
                    Ok(Err(_)) => {
                        // The app can no longer read: Linux answers further data with RST.
                        s.wr = false;
                        t.abort();
                        break;
                    }
                    _ => break,
                }
            }
        }
        // app → net
        if s.rd && !c.app_eof {
            loop {
                // Our side is already closed (nothing to do with app data), or no room.
                if !t.may_send() || !t.can_send() {
                    break;
                }
                let r = t.send(|buf| match sys::read(fd, buf) {
                    Ok(n) => (n, Ok((n, buf.len()))),
                    Err(e) => (0, Err(e)),
                });
                if let Ok(Ok((n, _))) = r
                    && n > 0
                {
                    let was = bulk(c.rx_bytes, c.tx_bytes);
                    c.tx_bytes += n as u64;
                    if was && !bulk(c.rx_bytes, c.tx_bytes) {
                        t.set_ack_delay(None);
                    }
                }
                match r {
                    Ok(Ok((0, _))) => {
                        c.app_eof = true;
                        // Closed (not only shut down) with SO_LINGER 0: Linux sends the RST
                        // alone. A FIN first would give the peer's reads an EOF.
                        let closed = || {
                            let mut p = [libc::pollfd {
                                fd,
                                events: 0,
                                revents: 0,
                            }];
                            sys::poll(&mut p, 0).is_ok() && p[0].revents & libc::POLLHUP != 0
                        };
                        if s.opts.linger == Some(0) && closed() {
                            t.abort();
                        } else {
                            t.close();
                        }
                        break;
                    }
                    // A short read emptied the pair: more data (or the app's EOF) will come
                    // with a new edge, so no read that would only say EAGAIN. Not once the
                    // app's end has shut down (RDHUP or HUP seen): its EOF came with the
                    // edge already taken, and is read now.
                    Ok(Ok((n, room))) if n < room && !s.rd_eof => {
                        s.rd = false;
                        break;
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.is_again() => {
                        s.rd = false;
                        break;
                    }
                    Ok(Err(e)) if e == Errno::EINTR => {}
                    Ok(Err(e)) => {
                        // ECONNRESET: the app closed with data it never read; Linux then
                        // resets the connection.
                        c.app_eof = true;
                        if e.0 == libc::ECONNRESET {
                            t.abort();
                        } else {
                            t.close();
                        }
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let st = t.state();
        let reset = st == tcp::State::Closed
            && !matches!(
                c.prev,
                tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
                    | tcp::State::Closed
            );
        if reset {
            log::debug!("connection reset (was {})", c.prev);
            if s.so_error == 0 {
                // As Linux's tcp_reset: after the peer's FIN (CLOSE_WAIT) the error is EPIPE,
                // which a write reports with SIGPIPE. Only once that FIN reached the app: a
                // FIN and an RST back to back (a peer of ours closing with SO_LINGER 0) is a
                // reset, as Linux's peer would have sent the RST alone.
                s.so_error = match c.prev {
                    tcp::State::SynReceived => libc::ECONNREFUSED,
                    tcp::State::CloseWait if c.fin_to_app => libc::EPIPE,
                    _ => libc::ECONNRESET,
                };
            }
            // Reads give EOF, writes EPIPE (SIGPIPE unless MSG_NOSIGNAL), as after an RST; the
            // shim turns that EOF into the error (`ctl::SO_IOTH_READ_ERROR`) unless the app
            // had its EOF from a FIN first.
            s.read_error = !c.fin_to_app;
            let _ = sys::shutdown(fd, libc::SHUT_RDWR);
            // If we aborted (app closed with unread data), the RST still has to go out.
            self.lingering.push(c.h.into());
            s.tcp = TcpState::Done;
            return !s.hup;
        }
        if !c.fin_to_app
            && !t.may_recv()
            && t.recv_queue() == 0
            && matches!(
                st,
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
                    | tcp::State::Closed
            )
        {
            // (An app that closed its end has nobody left to tell.)
            if !s.hup {
                let _ = sys::shutdown(fd, libc::SHUT_WR);
            }
            c.fin_to_app = true;
        }
        c.prev = st;
        if s.hup && c.app_eof {
            // The app closed its last fd: linger until smoltcp is done with the socket.
            let unread = t.recv_queue() > 0
                || sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)
                    == Ok(libc::ECONNRESET);
            let watch = if s.opts.linger == Some(0) || unread {
                t.abort();
                None
            } else {
                t.close();
                c.watch.arm(t, self.now, &self.timeouts, true);
                Some(c.watch.clone())
            };
            self.lingering.push(Linger { h: c.h, watch });
            s.tcp = TcpState::Done;
            return false;
        }
        if matches!(st, tcp::State::Closed | tcp::State::TimeWait) && c.fin_to_app && c.app_eof {
            if st == tcp::State::TimeWait {
                self.time_wait.note(t, self.now);
            }
            let h = c.h;
            self.free_tcp(h);
            s.tcp = TcpState::Done;
            return !s.hup;
        }
        // Closed by the app (`hup`) with its last data still in the socketpair: an orphan.
        if c.watch.arm(t, self.now, &self.timeouts, s.hup) != Verdict::Wait {
            log::debug!("connection without progress aborted");
            if s.so_error == 0 {
                s.so_error = libc::ETIMEDOUT;
            }
            t.abort();
            // Visited again (the reset path), as the abort's own wake-up may be lost.
            s.waker.wake_by_ref();
        }
        true
    }
}
