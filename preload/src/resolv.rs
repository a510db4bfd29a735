//! Name resolution for the virtual network: `getaddrinfo`, `getnameinfo`, `gethostbyname`,
//! `gethostbyname2`, `gethostbyname_r`, `gethostbyname2_r`, `gethostbyaddr`,
//! `gethostbyaddr_r`.
//!
//! glibc's resolver sends its DNS queries from inside libc, where no preload hook sees them:
//! left alone, a node would ask the *host's* DNS servers over the *host's* network. So, in a
//! process of an active node, these functions are the shim's own:
//!
//! 1. Numeric hosts, `node == NULL` (`AI_PASSIVE`), service names and every flag are glibc's:
//!    `getaddrinfo` first asks the real one with `AI_NUMERICHOST` (no lookup can leave the
//!    process), and only a name it cannot parse is resolved here.
//! 2. A name is looked up in `/etc/hosts` first (the file glibc reads), then, if the node
//!    has its own name (`IOTH_NAME`), against that name, then on the node's DNS servers
//!    (`IOTH_DNS`, or the `dns=` lines of the node's daemon) with A and AAAA queries over a
//!    virtual UDP socket of the node, then, for single-label names and names ending in
//!    `.local`, with a multicast DNS query (`[ff02::fb]:5353`, answered by the stack daemon
//!    of the node that has that `IOTH_NAME`).
//! 3. A name nobody knows is `EAI_NONAME` (`HOST_NOT_FOUND`); DNS servers that never answer
//!    make it `EAI_AGAIN` (`TRY_AGAIN`). Nothing is ever asked of the host's DNS, unless
//!    `IOTH_RESOLVE=kernel`, which hands all these functions back to glibc.
//! 4. Results are built by the real `getaddrinfo` from the resolved address strings (with
//!    `AI_NUMERICHOST`), so every `addrinfo` is glibc's and the real `freeaddrinfo` frees
//!    it; the canonical name is `malloc`ed like glibc's.
//!
//! Not done: search domains (`/etc/resolv.conf` is not read), DNS over TCP, `res_query` and
//! the other `res_*` functions, `getaddrinfo_a`, NSS databases other than `/etc/hosts`.

use crate::emu::{self, Daemons};
use crate::hook::hooks;
use crate::node;
use ioth_common::ctl::{DgramHeader, Reply, Request, WireAddr};
use ioth_common::dns;
use ioth_common::sys::{self, Fd};
use libc::{addrinfo, c_char, c_int, c_void, hostent, size_t, sockaddr, socklen_t};
use std::ffi::{CStr, CString};
use std::io::IoSlice;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Why a lookup found nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fail {
    NoName,
    Again,
}

/// Do the shim's functions answer, or glibc's?
fn ours() -> bool {
    static MODE: OnceLock<bool> = OnceLock::new();
    *MODE.get_or_init(|| {
        node::active()
            && !std::env::var("IOTH_RESOLVE").is_ok_and(|v| v.eq_ignore_ascii_case("kernel"))
    })
}

/// What the node's daemon says about itself (`NodeInfo`): addresses, DNS servers, name.
#[derive(Default)]
struct Info {
    addrs: Vec<IpAddr>,
    dns: Vec<IpAddr>,
    name: Option<String>,
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.split('/').next()?.trim();
    s.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

fn node_info() -> Info {
    let mut i = Info::default();
    if let Ok((Reply::Bytes(b), _)) = node::call_home(&Request::NodeInfo, None) {
        for line in String::from_utf8_lossy(&b).lines() {
            match line.split_once('=') {
                Some(("addr", v)) => i.addrs.extend(parse_ip(v)),
                Some(("dns", v)) => i.dns.extend(parse_ip(v)),
                Some(("name", v)) if !v.is_empty() => i.name = Some(v.to_string()),
                _ => {}
            }
        }
    }
    if let Ok(v) = std::env::var("IOTH_DNS") {
        i.dns = v.split(',').filter_map(parse_ip).collect();
    }
    if let Ok(v) = std::env::var("IOTH_NAME")
        && !v.trim().is_empty()
    {
        i.name = Some(v.trim().to_string());
    }
    i
}

/// The node's `/etc/resolv.conf` (see `crate::files`): its DNS servers as `nameserver`
/// lines; `None` where the shim does not answer names (inert, or `IOTH_RESOLVE=kernel`).
pub fn resolv_conf() -> Option<String> {
    if !ours() {
        return None;
    }
    let mut t = String::from(
        "# the resolver configuration of this ioth node (IOTH_DNS, or its DHCP lease)\n",
    );
    for d in node_info().dns {
        t.push_str(&format!("nameserver {d}\n"));
    }
    Some(t)
}

// ------------------------------------------------------------------------ /etc/hosts

fn hosts_file() -> String {
    std::fs::read_to_string("/etc/hosts").unwrap_or_default()
}

/// Entries of a hosts file: (address, names).
fn hosts_entries(text: &str) -> Vec<(IpAddr, Vec<String>)> {
    let mut v = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut it = line.split_whitespace();
        let Some(ip) = it
            .next()
            .and_then(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let names: Vec<String> = it.map(|s| s.to_string()).collect();
        if !names.is_empty() {
            v.push((ip, names));
        }
    }
    v
}

/// `/etc/hosts` lookup: canonical name and addresses.
pub fn hosts_lookup(text: &str, name: &str) -> Option<(String, Vec<IpAddr>)> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut canon = None;
    let mut addrs = Vec::new();
    for (ip, names) in hosts_entries(text) {
        if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            canon.get_or_insert_with(|| names[0].clone());
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
    }
    canon.map(|c| (c, addrs))
}

fn hosts_reverse(text: &str, ip: &IpAddr) -> Option<String> {
    hosts_entries(text)
        .into_iter()
        .find(|(a, _)| a == ip)
        .map(|(_, n)| n[0].clone())
}

// ------------------------------------------------------------------------ DNS over the node

/// A virtual UDP socket of the node, used with the datagram header directly (no hooks).
struct Udp {
    fd: Fd,
}

impl Udp {
    fn open() -> Option<Udp> {
        let fd = emu::socket(
            &Daemons,
            libc::AF_INET6,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
        .ok()?;
        // SAFETY: emu::socket returns a descriptor it just created for us, owned by nobody
        // else.
        let fd = unsafe { Fd::from_raw(fd) };
        Some(Udp { fd })
    }

    fn send(&self, to: SocketAddr, msg: &[u8]) {
        let h = DgramHeader {
            addr: WireAddr(Some(to)),
            len: msg.len() as u32,
            flags: 0,
        }
        .encode();
        let _ = sys::sendmsg(
            self.fd.raw(),
            &[IoSlice::new(&h), IoSlice::new(msg)],
            &[],
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        );
    }

    /// The next response before `deadline`.
    fn recv(&self, deadline: Instant) -> Option<dns::Response> {
        let mut buf = vec![0u8; 4096 + DgramHeader::LEN];
        loop {
            match sys::recv(self.fd.raw(), &mut buf, libc::MSG_DONTWAIT) {
                Ok(n) if n > DgramHeader::LEN => {
                    if let Some(r) = dns::parse_response(&buf[DgramHeader::LEN..n]) {
                        return Some(r);
                    }
                    continue;
                }
                Ok(0) => return None,
                Ok(_) => continue,
                Err(e) if e.is_again() || e == sys::Errno::EINTR => {}
                Err(_) => return None,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let ms = left.as_millis().clamp(1, 60_000) as i32;
            if !matches!(
                sys::wait_fd(self.fd.raw(), libc::POLLIN, ms),
                Ok(true) | Err(_)
            ) {
                return None;
            }
        }
    }
}

fn random_id() -> u16 {
    sys::random_u64() as u16
}

/// Unicast DNS: A and/or AAAA from each server in turn. `Ok(None)`: a server said the name
/// does not exist (or has no such records); `Err(Again)`: no server answered.
fn dns_lookup(servers: &[IpAddr], name: &str, v4: bool, v6: bool) -> Result<Vec<IpAddr>, Fail> {
    let Some(sock) = Udp::open() else {
        return Err(Fail::Again);
    };
    let mut types = Vec::new();
    if v6 {
        types.push(dns::TYPE_AAAA);
    }
    if v4 {
        types.push(dns::TYPE_A);
    }
    let mut answered = false;
    for server in servers {
        let to = SocketAddr::new(*server, 53);
        let qs: Vec<(u16, Vec<u8>)> = types
            .iter()
            .filter_map(|t| {
                let id = random_id();
                dns::query(id, name, *t, true).map(|q| (id, q))
            })
            .collect();
        if qs.is_empty() {
            return Err(Fail::NoName);
        }
        for _try in 0..2 {
            for (_, q) in &qs {
                sock.send(to, q);
            }
            let deadline = Instant::now() + Duration::from_millis(1000);
            let mut got: Vec<Option<dns::Response>> = vec![None; qs.len()];
            while got.iter().any(|g| g.is_none()) {
                let Some(r) = sock.recv(deadline) else { break };
                if let Some(i) = qs.iter().position(|(id, _)| *id == r.id) {
                    got[i] = Some(r);
                }
            }
            if got.iter().any(|g| g.is_some()) {
                answered = true;
                let mut addrs: Vec<IpAddr> = Vec::new();
                for r in got.iter().flatten() {
                    for (_, ip) in &r.addrs {
                        if !addrs.contains(ip) && (ip.is_ipv4() && v4 || ip.is_ipv6() && v6) {
                            addrs.push(*ip);
                        }
                    }
                }
                if !addrs.is_empty() {
                    return Ok(addrs);
                }
                break;
            }
        }
    }
    if answered || servers.is_empty() {
        Ok(Vec::new())
    } else {
        Err(Fail::Again)
    }
}

/// Multicast DNS (RFC 6762 §5.1 one-shot query from an ephemeral port, answered by legacy
/// unicast): all addresses of `name`.
fn mdns_lookup(name: &str) -> Vec<IpAddr> {
    let Some(sock) = Udp::open() else {
        return Vec::new();
    };
    let qname = if name.to_ascii_lowercase().ends_with(".local") {
        name.to_string()
    } else {
        format!("{name}.local")
    };
    let id = random_id();
    let Some(q) = dns::query(id, &qname, dns::TYPE_ANY, false) else {
        return Vec::new();
    };
    let to = SocketAddr::new(IpAddr::V6(dns::MDNS_V6), dns::MDNS_PORT);
    for wait in [300u64, 700] {
        sock.send(to, &q);
        let deadline = Instant::now() + Duration::from_millis(wait);
        while let Some(r) = sock.recv(deadline) {
            let addrs: Vec<IpAddr> = r
                .addrs
                .iter()
                .filter(|(owner, _)| dns::is_own_name(owner, name))
                .map(|(_, ip)| *ip)
                .collect();
            if r.id == id && !addrs.is_empty() {
                return addrs;
            }
        }
    }
    Vec::new()
}

/// Reverse lookup over DNS (PTR).
fn dns_reverse(servers: &[IpAddr], ip: &IpAddr) -> Option<String> {
    let sock = Udp::open()?;
    let id = random_id();
    let q = dns::query(id, &dns::reverse_name(ip), dns::TYPE_PTR, true)?;
    for server in servers {
        sock.send(SocketAddr::new(*server, 53), &q);
        let deadline = Instant::now() + Duration::from_millis(1000);
        while let Some(r) = sock.recv(deadline) {
            if r.id == id {
                if let Some(n) = r.ptrs.first() {
                    return Some(n.clone());
                }
                break;
            }
        }
    }
    None
}

fn is_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80)
}

/// Resolve `name` for the node (see the module docs for the order). Addresses of the
/// families asked for, IPv6 first as the answers came.
pub fn lookup(name: &str, v4: bool, v6: bool) -> Result<(String, Vec<IpAddr>), Fail> {
    let keep = |ip: &IpAddr| ip.is_ipv4() && v4 || ip.is_ipv6() && v6;
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(Fail::NoName);
    }
    if let Some((canon, addrs)) = hosts_lookup(&hosts_file(), name) {
        let a: Vec<IpAddr> = addrs.into_iter().filter(keep).collect();
        if !a.is_empty() {
            return Ok((canon, a));
        }
    }
    let info = node_info();
    if let Some(own) = &info.name
        && dns::is_own_name(name, own)
    {
        let a: Vec<IpAddr> = info
            .addrs
            .iter()
            .copied()
            .filter(|ip| keep(ip) && !is_link_local(ip))
            .collect();
        if !a.is_empty() {
            return Ok((name.to_string(), a));
        }
    }
    let local = name.to_ascii_lowercase().ends_with(".local");
    let mut again = false;
    if !local && !info.dns.is_empty() {
        match dns_lookup(&info.dns, name, v4, v6) {
            Ok(a) if !a.is_empty() => return Ok((name.to_string(), a)),
            Ok(_) => {}
            Err(_) => again = true,
        }
    }
    if local || !name.contains('.') {
        let a: Vec<IpAddr> = mdns_lookup(name)
            .into_iter()
            .filter(|ip| keep(ip) && !is_link_local(ip))
            .collect();
        if !a.is_empty() {
            return Ok((name.to_string(), a));
        }
    }
    crate::debug!("resolve {name}: not found (dns {:?})", info.dns);
    Err(if again { Fail::Again } else { Fail::NoName })
}

/// The name of `ip`: `/etc/hosts`, then the DNS servers' PTR records, then the node's own
/// name for its own addresses.
pub fn reverse(ip: &IpAddr) -> Option<String> {
    if let Some(n) = hosts_reverse(&hosts_file(), ip) {
        return Some(n);
    }
    let info = node_info();
    if let Some(n) = &info.name
        && info.addrs.contains(ip)
    {
        return Some(n.clone());
    }
    if !info.dns.is_empty() {
        return dns_reverse(&info.dns, ip);
    }
    None
}

// ------------------------------------------------------------------------ the C functions

fn cstr<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: p is a NUL-terminated string from the caller.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// Does glibc read `s` as a numeric address (`inet_aton` forms, IPv6 with scope)?
fn looks_numeric(s: &str) -> bool {
    !s.is_empty()
        && (s.chars().all(|c| c.is_ascii_digit() || c == '.')
            || (s.contains(':')
                && s.split('%')
                    .next()
                    .is_some_and(|a| a.parse::<Ipv6Addr>().is_ok())))
}

/// [`ours`], never panicking (for the hooks' prologues).
fn answering() -> bool {
    catch_unwind(ours).unwrap_or(false)
}

/// Whether `getnameinfo` asks us for a host name (else glibc answers alone: no host buffer,
/// no address, `NI_NUMERICHOST`, or not our process).
fn names_host(
    sa: *const sockaddr,
    host: *mut c_char,
    hostlen: socklen_t,
    flags: c_int,
) -> Option<()> {
    (!host.is_null()
        && hostlen != 0
        && !sa.is_null()
        && flags & libc::NI_NUMERICHOST == 0
        && answering())
    .then_some(())
}

fn gai(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(libc::EAI_SYSTEM)
}

/// Chain the real `getaddrinfo` results of each address (see the module docs).
///
/// # Safety
/// `service` null or a C string; `res` valid.
unsafe fn build(
    addrs: &[IpAddr],
    canon: &str,
    service: *const c_char,
    h: &addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    if res.is_null() {
        return libc::EAI_SYSTEM;
    }
    let mut head: *mut addrinfo = std::ptr::null_mut();
    let mut tail: *mut addrinfo = std::ptr::null_mut();
    let mut last_err = libc::EAI_NONAME;
    for a in addrs {
        let Ok(s) = CString::new(a.to_string()) else {
            continue;
        };
        let mut hh = *h;
        hh.ai_family = if a.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        hh.ai_flags = libc::AI_NUMERICHOST | (h.ai_flags & libc::AI_NUMERICSERV);
        let mut one: *mut addrinfo = std::ptr::null_mut();
        // SAFETY: valid strings and hints; `one` receives glibc's list.
        let r = unsafe { real::getaddrinfo(s.as_ptr(), service, &hh, &mut one) };
        if r != 0 || one.is_null() {
            last_err = r;
            continue;
        }
        if head.is_null() {
            head = one;
        } else {
            // SAFETY: tail is the last node of our chain (glibc's memory).
            unsafe { (*tail).ai_next = one };
        }
        tail = one;
        // SAFETY: walking glibc's list to its end.
        unsafe {
            while !(*tail).ai_next.is_null() {
                tail = (*tail).ai_next;
            }
        }
    }
    if head.is_null() {
        return last_err;
    }
    if h.ai_flags & libc::AI_CANONNAME != 0 {
        // SAFETY: malloc'd copy of the name, freed by glibc's freeaddrinfo.
        unsafe {
            let p = libc::malloc(canon.len() + 1).cast::<u8>();
            if !p.is_null() {
                std::ptr::copy_nonoverlapping(canon.as_ptr(), p, canon.len());
                *p.add(canon.len()) = 0;
                (*head).ai_canonname = p.cast();
            }
        }
    }
    // SAFETY: res is valid (checked).
    unsafe { *res = head };
    0
}

/// Decode a sockaddr given to getnameinfo.
fn sa_ip(b: &[u8]) -> Option<IpAddr> {
    crate::addr::decode(b)
        .ok()?
        .0
        .map(|s| ioth_common::config::unmap(s.ip()))
}

// ------------------------------------------------------------------------ gethostby*

unsafe extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

fn set_h_errno(v: c_int) {
    // SAFETY: __h_errno_location returns the calling thread's h_errno.
    unsafe { *__h_errno_location() = v };
}

const HOST_NOT_FOUND: c_int = 1;
const TRY_AGAIN: c_int = 2;
const NO_RECOVERY: c_int = 3;

/// A hostent's contents before it is laid out in a buffer.
struct Host {
    name: String,
    af: c_int,
    addrs: Vec<Vec<u8>>,
}

fn host_for(name: &str, af: c_int) -> Result<Host, c_int> {
    let (v4, v6) = (af == libc::AF_INET, af == libc::AF_INET6);
    match lookup(name, v4, v6) {
        Ok((canon, addrs)) => Ok(Host {
            name: canon,
            af,
            addrs: addrs
                .iter()
                .map(|a| match a {
                    IpAddr::V4(v) => v.octets().to_vec(),
                    IpAddr::V6(v) => v.octets().to_vec(),
                })
                .collect(),
        }),
        Err(Fail::NoName) => Err(HOST_NOT_FOUND),
        Err(Fail::Again) => Err(TRY_AGAIN),
    }
}

/// Lay `h` out in `buf` (aliases, address pointers, addresses, name) and fill `ret`.
///
/// # Safety
/// `ret` valid; `buf` has `len` writable bytes.
unsafe fn layout(h: &Host, ret: *mut hostent, buf: *mut c_char, len: usize) -> Result<(), ()> {
    let ptr = std::mem::size_of::<*mut c_char>();
    let base = buf as usize;
    let start = (base + ptr - 1) & !(ptr - 1);
    let alen = if h.af == libc::AF_INET { 4 } else { 16 };
    let need =
        (start - base) + ptr + (h.addrs.len() + 1) * ptr + h.addrs.len() * alen + h.name.len() + 1;
    if need > len {
        return Err(());
    }
    // SAFETY: everything written lies in [buf, buf + need) ⊆ the caller's buffer; pointer
    // slots are aligned (start is rounded up).
    unsafe {
        let aliases = start as *mut *mut c_char;
        *aliases = std::ptr::null_mut();
        let list = aliases.add(1);
        let mut data = list.add(h.addrs.len() + 1) as *mut u8;
        for (i, a) in h.addrs.iter().enumerate() {
            std::ptr::copy_nonoverlapping(a.as_ptr(), data, alen);
            *list.add(i) = data.cast();
            data = data.add(alen);
        }
        *list.add(h.addrs.len()) = std::ptr::null_mut();
        std::ptr::copy_nonoverlapping(h.name.as_ptr(), data, h.name.len());
        *data.add(h.name.len()) = 0;
        (*ret).h_name = data.cast();
        (*ret).h_aliases = aliases;
        (*ret).h_addrtype = h.af;
        (*ret).h_length = alen as c_int;
        (*ret).h_addr_list = list;
    }
    Ok(())
}

thread_local! {
    static STATIC_HOST: std::cell::RefCell<(hostent, Vec<u64>)> = std::cell::RefCell::new((
        hostent {
            h_name: std::ptr::null_mut(),
            h_aliases: std::ptr::null_mut(),
            h_addrtype: 0,
            h_length: 0,
            h_addr_list: std::ptr::null_mut(),
        },
        vec![0u64; 1024],
    ));
}

/// The non-reentrant form: a per-thread result, valid until the thread's next call.
fn static_result(h: Result<Host, c_int>) -> *mut hostent {
    let h = match h {
        Ok(h) => h,
        Err(e) => {
            set_h_errno(e);
            return std::ptr::null_mut();
        }
    };
    STATIC_HOST.with(|s| {
        let mut s = s.borrow_mut();
        let (he, buf) = &mut *s;
        let len = buf.len() * 8;
        // SAFETY: buf is ours with len bytes; he is ours.
        match unsafe { layout(&h, he, buf.as_mut_ptr().cast(), len) } {
            Ok(()) => he as *mut hostent,
            Err(()) => {
                set_h_errno(NO_RECOVERY);
                std::ptr::null_mut()
            }
        }
    })
}

/// The reentrant form's result convention.
///
/// # Safety
/// As for gethostbyname_r.
unsafe fn reentrant_result(
    h: Result<Host, c_int>,
    ret: *mut hostent,
    buf: *mut c_char,
    len: size_t,
    result: *mut *mut hostent,
    err: *mut c_int,
) -> c_int {
    if result.is_null() || ret.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: result is the caller's valid pointer.
    unsafe { *result = std::ptr::null_mut() };
    let set_err = |v: c_int| {
        if !err.is_null() {
            // SAFETY: err is the caller's valid pointer.
            unsafe { *err = v };
        }
    };
    match h {
        Err(e) => {
            set_err(e);
            if e == TRY_AGAIN { libc::EAGAIN } else { 0 }
        }
        // SAFETY: ret/buf/len are the caller's.
        Ok(h) => match unsafe { layout(&h, ret, buf, len) } {
            Ok(()) => {
                // SAFETY: as above.
                unsafe { *result = ret };
                set_err(0);
                0
            }
            Err(()) => {
                set_err(NO_RECOVERY);
                libc::ERANGE
            }
        },
    }
}

/// Whether the shim answers for this name (else glibc: numeric, or not our process).
fn ours_for(name: *const c_char) -> Option<String> {
    let n = cstr(name)?;
    if looks_numeric(n) || !answering() {
        return None;
    }
    Some(n.to_string())
}

/// The host of an address (for gethostbyaddr*).
///
/// # Safety
/// `a` has `len` readable bytes.
unsafe fn host_by_addr(a: *const c_void, len: socklen_t, ty: c_int) -> Result<Host, c_int> {
    let b = if a.is_null() {
        return Err(NO_RECOVERY);
    } else {
        // SAFETY: the caller's len bytes.
        unsafe { std::slice::from_raw_parts(a.cast::<u8>(), len as usize) }
    };
    let ip = match (ty, b.len()) {
        (libc::AF_INET, 4) => IpAddr::from(<[u8; 4]>::try_from(b).map_err(|_| NO_RECOVERY)?),
        (libc::AF_INET6, 16) => IpAddr::from(<[u8; 16]>::try_from(b).map_err(|_| NO_RECOVERY)?),
        _ => return Err(NO_RECOVERY),
    };
    match reverse(&ioth_common::config::unmap(ip)) {
        Some(name) => Ok(Host {
            name,
            af: ty,
            addrs: vec![b.to_vec()],
        }),
        None => Err(HOST_NOT_FOUND),
    }
}

hooks! {
    fn getaddrinfo(
        node: *const c_char,
        service: *const c_char,
        hints: *const addrinfo,
        res: *mut *mut addrinfo,
    ) -> c_int
    where (!node.is_null() && answering()).then_some(()) => |()| {
        let mut h: addrinfo = if hints.is_null() {
            // glibc's defaults for a NULL hints.
            // SAFETY: addrinfo is plain old data (integers and nullable pointers): all zeroes
            // is a valid value.
            let mut h: addrinfo = unsafe { std::mem::zeroed() };
            h.ai_flags = libc::AI_V4MAPPED | libc::AI_ADDRCONFIG;
            h
        } else {
            // SAFETY: a non-null hints is the caller's readable addrinfo (getaddrinfo(3)).
            unsafe { *hints }
        };
        h.ai_canonname = std::ptr::null_mut();
        h.ai_addr = std::ptr::null_mut();
        h.ai_next = std::ptr::null_mut();
        let flags = h.ai_flags;
        // Numeric first: glibc's answer, with no lookup possible.
        let mut numeric = h;
        numeric.ai_flags = (flags | libc::AI_NUMERICHOST) & !libc::AI_ADDRCONFIG;
        // SAFETY: the caller's node/service/res with our hints.
        let r = unsafe { real::getaddrinfo(node, service, &numeric, res) };
        if r != libc::EAI_NONAME || flags & libc::AI_NUMERICHOST != 0 {
            return r;
        }
        gai(|| {
            let Some(name) = cstr(node) else {
                return libc::EAI_NONAME;
            };
            let fam = h.ai_family;
            let mapped = fam == libc::AF_INET6 && flags & libc::AI_V4MAPPED != 0;
            let v4 = fam == libc::AF_UNSPEC || fam == libc::AF_INET || mapped;
            let v6 = fam == libc::AF_UNSPEC || fam == libc::AF_INET6;
            if !v4 && !v6 {
                return libc::EAI_FAMILY;
            }
            let (canon, mut addrs) = match lookup(name, v4, v6) {
                Ok(x) => x,
                Err(Fail::NoName) => return libc::EAI_NONAME,
                Err(Fail::Again) => return libc::EAI_AGAIN,
            };
            if flags & libc::AI_ADDRCONFIG != 0 {
                let mine = node_info().addrs;
                let has4 = mine.iter().any(|a| a.is_ipv4());
                let has6 = mine.iter().any(|a| a.is_ipv6() && !is_link_local(a));
                addrs.retain(|a| a.is_ipv4() && has4 || a.is_ipv6() && has6);
            }
            if mapped {
                let any6 = addrs.iter().any(|a| a.is_ipv6());
                if any6 && flags & libc::AI_ALL == 0 {
                    addrs.retain(|a| a.is_ipv6());
                }
                for a in addrs.iter_mut() {
                    if let IpAddr::V4(v) = a {
                        *a = IpAddr::V6(v.to_ipv6_mapped());
                    }
                }
            }
            if addrs.is_empty() {
                return libc::EAI_NONAME;
            }
            // SAFETY: res is the caller's result pointer.
            unsafe { build(&addrs, &canon, service, &h, res) }
        })
    }

    fn getnameinfo(
        sa: *const sockaddr,
        salen: socklen_t,
        host: *mut c_char,
        hostlen: socklen_t,
        serv: *mut c_char,
        servlen: socklen_t,
        flags: c_int,
    ) -> c_int
    where names_host(sa, host, hostlen, flags) => |()| {
        // Service and numeric host from glibc; the host name from us.
        // SAFETY: the caller's arguments, with NI_NUMERICHOST (no lookup).
        let r = unsafe {
            real::getnameinfo(
                sa,
                salen,
                host,
                hostlen,
                serv,
                servlen,
                (flags | libc::NI_NUMERICHOST) & !libc::NI_NAMEREQD,
            )
        };
        if r != 0 {
            return r;
        }
        gai(|| {
            // SAFETY: sa has salen readable bytes (the caller's).
            let b =
                unsafe { std::slice::from_raw_parts(sa.cast::<u8>(), (salen as usize).min(128)) };
            let Some(ip) = sa_ip(b) else {
                return 0;
            };
            match reverse(&ip) {
                Some(mut n) => {
                    if flags & libc::NI_NOFQDN != 0
                        && let Some((first, _)) = n.split_once('.')
                    {
                        n = first.to_string();
                    }
                    if n.len() + 1 > hostlen as usize {
                        return libc::EAI_OVERFLOW;
                    }
                    // SAFETY: host has hostlen bytes; we write n.len() + 1 <= hostlen.
                    unsafe {
                        std::ptr::copy_nonoverlapping(n.as_ptr(), host.cast::<u8>(), n.len());
                        *host.add(n.len()) = 0;
                    }
                    0
                }
                None if flags & libc::NI_NAMEREQD != 0 => libc::EAI_NONAME,
                None => 0,
            }
        })
    }

    fn gethostbyname(name: *const c_char) -> *mut hostent
    where ours_for(name) => |n| {
        catch_unwind(|| static_result(host_for(&n, libc::AF_INET))).unwrap_or(std::ptr::null_mut())
    }

    fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent
    where ours_for(name) => |n| {
        if af != libc::AF_INET && af != libc::AF_INET6 {
            set_h_errno(NO_RECOVERY);
            return std::ptr::null_mut();
        }
        catch_unwind(|| static_result(host_for(&n, af))).unwrap_or(std::ptr::null_mut())
    }

    fn gethostbyname_r(
        name: *const c_char,
        ret: *mut hostent,
        buf: *mut c_char,
        len: size_t,
        result: *mut *mut hostent,
        err: *mut c_int,
    ) -> c_int
    where ours_for(name) => |n| {
        let h = catch_unwind(|| host_for(&n, libc::AF_INET)).unwrap_or(Err(NO_RECOVERY));
        // SAFETY: ret, buf (len or blen bytes), result and err are the caller's, as the
        // reentrant gethostby*_r functions require them.
        unsafe { reentrant_result(h, ret, buf, len, result, err) }
    }

    fn gethostbyname2_r(
        name: *const c_char,
        af: c_int,
        ret: *mut hostent,
        buf: *mut c_char,
        len: size_t,
        result: *mut *mut hostent,
        err: *mut c_int,
    ) -> c_int
    where ours_for(name) => |n| {
        if af != libc::AF_INET && af != libc::AF_INET6 {
            return libc::EAFNOSUPPORT;
        }
        let h = catch_unwind(|| host_for(&n, af)).unwrap_or(Err(NO_RECOVERY));
        // SAFETY: ret, buf (len or blen bytes), result and err are the caller's, as the
        // reentrant gethostby*_r functions require them.
        unsafe { reentrant_result(h, ret, buf, len, result, err) }
    }

    fn gethostbyaddr(
        a: *const c_void,
        len: socklen_t,
        ty: c_int,
    ) -> *mut hostent
    where answering().then_some(()) => |()| {
        // SAFETY: the caller's address bytes.
        catch_unwind(|| static_result(unsafe { host_by_addr(a, len, ty) }))
            .unwrap_or(std::ptr::null_mut())
    }

    fn gethostbyaddr_r(
        a: *const c_void,
        len: socklen_t,
        ty: c_int,
        ret: *mut hostent,
        buf: *mut c_char,
        blen: size_t,
        result: *mut *mut hostent,
        err: *mut c_int,
    ) -> c_int
    where answering().then_some(()) => |()| {
        // SAFETY: the caller's address bytes.
        let h = catch_unwind(|| unsafe { host_by_addr(a, len, ty) }).unwrap_or(Err(NO_RECOVERY));
        // SAFETY: ret, buf (len or blen bytes), result and err are the caller's, as the
        // reentrant gethostby*_r functions require them.
        unsafe { reentrant_result(h, ret, buf, blen, result, err) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_rules() {
        let t = "127.0.0.1 localhost\n# c\nfd00::1 web1 web1.lan # x\n10.0.0.1\tweb1\nbad line\n";
        let (c, a) = hosts_lookup(t, "WEB1.").unwrap();
        assert_eq!(c, "web1");
        assert_eq!(
            a,
            vec![
                "fd00::1".parse::<IpAddr>().unwrap(),
                "10.0.0.1".parse().unwrap()
            ]
        );
        assert!(hosts_lookup(t, "web2").is_none());
        assert_eq!(
            hosts_reverse(t, &"10.0.0.1".parse().unwrap()).as_deref(),
            Some("web1")
        );
    }

    #[test]
    fn numeric_forms_stay_with_glibc() {
        for s in [
            "10.0.0.1",
            "127.1",
            "fd00::1",
            "fe80::1%eth0",
            "::ffff:1.2.3.4",
        ] {
            assert!(looks_numeric(s), "{s}");
        }
        for s in ["web1", "123abc", "a:b", ""] {
            assert!(!looks_numeric(s), "{s}");
        }
    }

    #[test]
    fn hostent_layout_fits_or_says_erange() {
        let h = Host {
            name: "web1".into(),
            af: libc::AF_INET,
            addrs: vec![vec![10, 0, 0, 1], vec![10, 0, 0, 2]],
        };
        // SAFETY: hostent is plain old data.
        let mut he: hostent = unsafe { std::mem::zeroed() };
        let mut buf = [0u8; 128];
        // SAFETY: buffers are ours.
        assert!(unsafe { layout(&h, &mut he, buf.as_mut_ptr().cast(), 128) }.is_ok());
        // SAFETY: layout filled he with pointers into buf.
        unsafe {
            assert_eq!(CStr::from_ptr(he.h_name).to_str().unwrap(), "web1");
            let a1 = *he.h_addr_list.add(1) as *const u8;
            assert_eq!(std::slice::from_raw_parts(a1, 4), &[10, 0, 0, 2]);
            assert!((*he.h_addr_list.add(2)).is_null());
        }
        // SAFETY: as above.
        assert!(unsafe { layout(&h, &mut he, buf.as_mut_ptr().cast(), 20) }.is_err());
    }
}
