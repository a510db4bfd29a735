//! The smoltcp `Device` over a switch port.
//!
//! * Receive: the event loop reads one frame at a time into [`SwitchDevice::rx`] (so that it
//!   can look at the headers first, see `frame.rs`), marks it staged, and calls
//!   `poll_ingress_single`; `receive()` hands out only that staged frame.
//! * Transmit: frames are built in one reusable buffer and sent at once. `EAGAIN` keeps the
//!   frame pending and `transmit()` returns `None` until it went out (back-pressure, never a
//!   drop). While the switch is away (restart), frames are dropped: TCP retransmits.
//! * Wake-ups: once the event loop says which epoll instance watches the switch socket
//!   ([`SwitchDevice::watch`]), the device asks for `EPOLLOUT` only while a frame is pending.
//!   Otherwise every frame the switch takes off the socket would wake the daemon for nothing
//!   (an AF_UNIX sender is woken whenever its peer frees buffer space).
//! * Hairpin: smoltcp has no loopback. Frames addressed to our own MAC, and ARP requests or
//!   neighbour solicitations for one of our own addresses, go to a local queue that the event
//!   loop reads before the switch, so a node can talk to itself.
//!
//! * Checksums: on a native port whose switch fills them in ([`SwitchPort::csum_fill`]), the
//!   device tells smoltcp to neither compute (IPv4 header, TCP, UDP) nor verify (anything)
//!   checksums; ICMP checksums are still computed (not on the data path, and an ICMPv4 echo
//!   may be fragmented, which the switch cannot fill). smoltcp reads the capabilities once,
//!   when the interface is made, so the choice is fixed for the node's life: should the switch
//!   come back after a restart without the offer, the device fills the checksums itself
//!   ([`ioth_common::csum::fill`]). On a VDE port everything is computed and verified.
//!
//! No allocation per frame: hairpin buffers are recycled.

use ioth_common::port::SwitchPort;
use ioth_common::sys::{self, Errno};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::os::fd::RawFd;

pub struct SwitchDevice {
    pub port: Option<SwitchPort>,
    pub mac: [u8; 6],
    pub own: Vec<IpAddr>,
    /// Largest Ethernet frame (no FCS).
    pub frame_mtu: usize,
    pub rx: Vec<u8>,
    pub staged: Option<usize>,
    tx: Vec<u8>,
    pending: Option<usize>,
    pub hairpin: VecDeque<Vec<u8>>,
    free: Vec<Vec<u8>>,
    pub sent: u64,
    pub dropped_down: u64,
    /// Checksums left to the switch (fixed at creation, see the module documentation).
    offload: bool,
    /// The epoll instance and token watching the switch socket (see [`SwitchDevice::watch`]),
    /// and whether `EPOLLOUT` is asked for.
    watch: Option<(RawFd, u64)>,
    out_armed: bool,
}

/// Ask `ep` for `EPOLLOUT` on `fd` too (`on`), or only for `EPOLLIN`; edge-triggered.
fn arm(watch: Option<(RawFd, u64)>, fd: RawFd, armed: &mut bool, on: bool) {
    let Some((ep, token)) = watch else {
        return;
    };
    if *armed == on {
        return;
    }
    let mut ev = libc::EPOLLIN | libc::EPOLLET;
    if on {
        ev |= libc::EPOLLOUT;
    }
    if sys::epoll_ctl(ep, libc::EPOLL_CTL_MOD, fd, ev as u32, token).is_ok() {
        *armed = on;
    }
}

impl SwitchDevice {
    pub fn new(port: SwitchPort, mac: [u8; 6], own: Vec<IpAddr>, frame_mtu: usize) -> Self {
        let bufsz = frame_mtu.max(port.max_frame).max(1518);
        let offload = port.csum_fill;
        SwitchDevice {
            port: Some(port),
            mac,
            own,
            frame_mtu,
            rx: vec![0; bufsz + 64],
            staged: None,
            tx: vec![0; frame_mtu],
            pending: None,
            hairpin: VecDeque::new(),
            free: Vec::new(),
            sent: 0,
            dropped_down: 0,
            offload,
            watch: None,
            out_armed: false,
        }
    }

    /// The switch socket was just added to `ep` with `EPOLLIN | EPOLLET` under `token`: from
    /// now on the device adds `EPOLLOUT` only while a frame waits for room.
    pub fn watch(&mut self, ep: RawFd, token: u64) {
        self.watch = Some((ep, token));
        self.out_armed = false;
    }

    /// Whether an `EPOLLOUT` event will come when the pending frame can go (if `false` while
    /// blocked, the caller has to retry on its own).
    pub fn wakes_when_writable(&self) -> bool {
        self.out_armed
    }

    /// Whether a frame waits for room on the switch socket.
    pub fn is_blocked(&self) -> bool {
        self.pending.is_some()
    }

    /// Try to send the pending frame; `true` if nothing is pending any more.
    pub fn flush(&mut self) -> bool {
        if let Some(n) = self.pending {
            // (Checksums, if needed, were filled when the frame was first sent.)
            match self.port.as_ref().map(|p| p.send(&self.tx[..n])) {
                Some(Err(e)) if e.is_again() => {
                    if let Some(p) = &self.port {
                        arm(self.watch, p.data_fd(), &mut self.out_armed, true);
                    }
                    return false;
                }
                _ => self.pending = None,
            }
        }
        if self.out_armed
            && let Some(p) = &self.port
        {
            arm(self.watch, p.data_fd(), &mut self.out_armed, false);
        }
        true
    }

    /// Take the next hairpinned frame into `rx`; its length.
    pub fn take_hairpin(&mut self) -> Option<usize> {
        let b = self.hairpin.pop_front()?;
        let n = b.len().min(self.rx.len());
        self.rx[..n].copy_from_slice(&b[..n]);
        self.free.push(b);
        Some(n)
    }

    /// Read one frame from the switch into `rx`.
    pub fn recv_switch(&mut self) -> Result<usize, Errno> {
        match &self.port {
            Some(p) => p.recv(&mut self.rx),
            None => Err(Errno::EAGAIN),
        }
    }
}

pub struct Rx<'a>(&'a [u8]);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

pub struct Tx<'a> {
    buf: &'a mut Vec<u8>,
    pending: &'a mut Option<usize>,
    port: &'a Option<SwitchPort>,
    hairpin: &'a mut VecDeque<Vec<u8>>,
    free: &'a mut Vec<Vec<u8>>,
    mac: [u8; 6],
    own: &'a [IpAddr],
    sent: &'a mut u64,
    dropped: &'a mut u64,
    offload: bool,
    watch: Option<(RawFd, u64)>,
    out_armed: &'a mut bool,
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        let r = f(&mut self.buf[..len]);
        let frame = &self.buf[..len];
        if crate::frame::is_for_self(frame, &self.mac, self.own) {
            let mut b = self.free.pop().unwrap_or_default();
            b.clear();
            b.extend_from_slice(frame);
            self.hairpin.push_back(b);
            return r;
        }
        if self.offload && self.port.as_ref().is_some_and(|p| !p.csum_fill) {
            ioth_common::csum::fill(&mut self.buf[..len]);
        }
        let frame = &self.buf[..len];
        match self.port {
            Some(p) => match p.send(frame) {
                Ok(_) => *self.sent += 1,
                Err(e) if e.is_again() => {
                    *self.pending = Some(len);
                    arm(self.watch, p.data_fd(), self.out_armed, true);
                }
                Err(e) => {
                    log::debug!("switch send: {e}");
                    *self.dropped += 1;
                }
            },
            None => *self.dropped += 1,
        }
        r
    }
}

impl Device for SwitchDevice {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _ts: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        self.staged?;
        if !self.flush() {
            return None;
        }
        let n = self.staged.take()?;
        let SwitchDevice {
            port,
            mac,
            own,
            rx,
            tx,
            pending,
            hairpin,
            free,
            sent,
            dropped_down,
            offload,
            watch,
            out_armed,
            ..
        } = self;
        Some((
            Rx(&rx[..n]),
            Tx {
                buf: tx,
                pending,
                port,
                hairpin,
                free,
                mac: *mac,
                own,
                sent,
                dropped: dropped_down,
                offload: *offload,
                watch: *watch,
                out_armed,
            },
        ))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<Tx<'_>> {
        if !self.flush() {
            return None;
        }
        Some(Tx {
            buf: &mut self.tx,
            pending: &mut self.pending,
            port: &self.port,
            hairpin: &mut self.hairpin,
            free: &mut self.free,
            mac: self.mac,
            own: &self.own,
            sent: &mut self.sent,
            dropped: &mut self.dropped_down,
            offload: self.offload,
            watch: self.watch,
            out_armed: &mut self.out_armed,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.frame_mtu;
        c.max_burst_size = None;
        if self.offload {
            let mut k = ChecksumCapabilities::ignored();
            k.icmpv4 = Checksum::Tx;
            k.icmpv6 = Checksum::Tx;
            c.checksum = k;
        }
        c
    }
}
