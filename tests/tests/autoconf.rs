//! Automatic addresses (`IOTH_IP=dhcp`, `slaac`, `auto`): nodes take an IPv4 address, router
//! and DNS server from a DHCPv4 server and an IPv6 address and default route from router
//! advertisements on the virtual LAN, then talk to a fixed-address node over TCP and ICMP.
//!
//! Two servers: Debian's real `dnsmasq` running as an ioth node (DHCPv4 with its ARP-cache
//! injection for unicast replies, router advertisements on a raw ICMPv6 socket, DNS; it sees
//! the node's interface `vde0` over the shim's virtual netlink and interface ioctls), and a
//! small helper in this file on a native switch port (frames built with smoltcp's `wire`
//! codecs), which cheaply checks lease renewal and expiry with a 4 s lease.

use ioth_common::config::{Mac, link_local};
use ioth_common::port::SwitchPort;
use ioth_e2e::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::Duration as SDuration;
use smoltcp::wire::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x09, 0x02];
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);

/// A DHCPv4 server (10.9.0.2, leases from 10.9.0.100, router and DNS 10.9.0.1) and a router
/// advertiser (prefix fd09::/64, default route via its own link-local address, which nothing
/// answers for: only on-link IPv6 traffic is tested) on a port of the switch, in a thread;
/// stopped on drop. `leases` lists "ACK ip mac" lines. (Advertising on behalf of another
/// node's MAC would move that MAC to this port in the learning switch.)
struct LanServices {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    leases: Arc<Mutex<Vec<String>>>,
}

impl Drop for LanServices {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lan_services(sw: &Path) -> LanServices {
    lan_services_lease(sw, 3600)
}

fn lan_services_lease(sw: &Path, lease: u32) -> LanServices {
    let port = SwitchPort::open(&sw.to_string_lossy(), "autoconf test services", 1514)
        .expect("switch port for the test services");
    let stop = Arc::new(AtomicBool::new(false));
    let leases = Arc::new(Mutex::new(Vec::new()));
    let (s, l) = (stop.clone(), leases.clone());
    let thread = std::thread::spawn(move || serve(port, lease, s, l));
    LanServices {
        stop,
        thread: Some(thread),
        leases,
    }
}

fn serve(port: SwitchPort, lease: u32, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<String>>>) {
    let mut buf = vec![0u8; 65536];
    let mut clients: Vec<EthernetAddress> = Vec::new();
    let mut next_ra = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next_ra {
            let _ = port.send(&router_advert());
            next_ra = Instant::now() + Duration::from_millis(300);
        }
        let mut p = [libc::pollfd {
            fd: port.data_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let _ = ioth_common::sys::poll(&mut p, 50);
        while let Ok(n) = port.recv(&mut buf) {
            if n == 0 {
                return;
            }
            if let Some(reply) = answer(&buf[..n], &mut clients, lease, &log) {
                let _ = port.send(&reply);
            }
        }
    }
}

fn router_advert() -> Vec<u8> {
    let router_mac = SERVER_MAC;
    let src = link_local(&Mac(router_mac));
    let dst = IPV6_LINK_LOCAL_ALL_NODES;
    let ra = Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert {
        hop_limit: 64,
        flags: NdiscRouterFlags::empty(),
        router_lifetime: SDuration::from_secs(1800),
        reachable_time: SDuration::ZERO,
        retrans_time: SDuration::ZERO,
        lladdr: Some(EthernetAddress(router_mac).into()),
        mtu: None,
        prefix_info: Some(NdiscPrefixInformation {
            prefix_len: 64,
            flags: NdiscPrefixInfoFlags::ON_LINK | NdiscPrefixInfoFlags::ADDRCONF,
            valid_lifetime: SDuration::from_secs(86400),
            preferred_lifetime: SDuration::from_secs(14400),
            prefix: "fd09::".parse().unwrap(),
        }),
    });
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: ra.buffer_len(),
        hop_limit: 255,
    };
    let mut f = vec![0u8; 14 + ip.buffer_len() + ra.buffer_len()];
    EthernetRepr {
        src_addr: EthernetAddress(router_mac),
        dst_addr: EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
        ethertype: EthernetProtocol::Ipv6,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    ip.emit(&mut Ipv6Packet::new_unchecked(&mut f[14..]));
    ra.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(&mut f[14 + ip.buffer_len()..]),
        &ChecksumCapabilities::default(),
    );
    f
}

/// ARP for the server's address, DHCP DISCOVER and REQUEST.
fn answer(
    f: &[u8],
    clients: &mut Vec<EthernetAddress>,
    lease: u32,
    log: &Mutex<Vec<String>>,
) -> Option<Vec<u8>> {
    let eth = EthernetFrame::new_checked(f).ok()?;
    let ignore = ChecksumCapabilities::ignored();
    match eth.ethertype() {
        EthernetProtocol::Arp => {
            let a = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?;
            let ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr,
                source_protocol_addr,
                target_protocol_addr,
                ..
            } = a
            else {
                return None;
            };
            if target_protocol_addr != SERVER_IP {
                return None;
            }
            let r = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: EthernetAddress(SERVER_MAC),
                source_protocol_addr: SERVER_IP,
                target_hardware_addr: source_hardware_addr,
                target_protocol_addr: source_protocol_addr,
            };
            let mut out = vec![0u8; 14 + r.buffer_len()];
            EthernetRepr {
                src_addr: EthernetAddress(SERVER_MAC),
                dst_addr: source_hardware_addr,
                ethertype: EthernetProtocol::Arp,
            }
            .emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
            r.emit(&mut ArpPacket::new_unchecked(&mut out[14..]));
            Some(out)
        }
        EthernetProtocol::Ipv4 => {
            let ipp = Ipv4Packet::new_checked(eth.payload()).ok()?;
            let ip = Ipv4Repr::parse(&ipp, &ignore).ok()?;
            if ip.next_header != IpProtocol::Udp {
                return None;
            }
            let udpp = UdpPacket::new_checked(ipp.payload()).ok()?;
            if udpp.dst_port() != 67 {
                return None;
            }
            let dp = DhcpPacket::new_checked(udpp.payload()).ok()?;
            let req = DhcpRepr::parse(&dp).ok()?;
            let mac = req.client_hardware_address;
            let idx = match clients.iter().position(|c| *c == mac) {
                Some(i) => i,
                None => {
                    clients.push(mac);
                    clients.len() - 1
                }
            };
            let yiaddr = Ipv4Addr::new(10, 9, 0, 100 + idx as u8);
            let ty = match req.message_type {
                DhcpMessageType::Discover => DhcpMessageType::Offer,
                DhcpMessageType::Request => {
                    let want = req.requested_ip.unwrap_or(req.client_ip);
                    if want != yiaddr {
                        DhcpMessageType::Nak
                    } else {
                        log.lock().unwrap().push(format!("ACK {yiaddr} {mac}"));
                        DhcpMessageType::Ack
                    }
                }
                _ => return None,
            };
            let reply = DhcpRepr {
                message_type: ty,
                transaction_id: req.transaction_id,
                secs: 0,
                client_hardware_address: mac,
                client_ip: Ipv4Addr::UNSPECIFIED,
                your_ip: yiaddr,
                server_ip: SERVER_IP,
                router: Some(ROUTER_IP),
                subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
                relay_agent_ip: Ipv4Addr::UNSPECIFIED,
                broadcast: false,
                requested_ip: None,
                client_identifier: None,
                server_identifier: Some(SERVER_IP),
                parameter_request_list: None,
                dns_servers: Some([ROUTER_IP].into_iter().collect()),
                max_size: None,
                lease_duration: Some(lease),
                renew_duration: None,
                rebind_duration: None,
                additional_options: &[],
            };
            // Broadcast, as a server does for a client without an address.
            let dst = Ipv4Addr::BROADCAST;
            let udp = UdpRepr {
                src_port: 67,
                dst_port: 68,
            };
            let ipr = Ipv4Repr {
                src_addr: SERVER_IP,
                dst_addr: dst,
                next_header: IpProtocol::Udp,
                payload_len: udp.header_len() + reply.buffer_len(),
                hop_limit: 64,
            };
            let mut out = vec![0u8; 14 + ipr.buffer_len() + ipr.payload_len];
            EthernetRepr {
                src_addr: EthernetAddress(SERVER_MAC),
                dst_addr: EthernetAddress::BROADCAST,
                ethertype: EthernetProtocol::Ipv4,
            }
            .emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
            let caps = ChecksumCapabilities::default();
            ipr.emit(&mut Ipv4Packet::new_unchecked(&mut out[14..]), &caps);
            let blen = reply.buffer_len();
            udp.emit(
                &mut UdpPacket::new_unchecked(&mut out[14 + ipr.buffer_len()..]),
                &IpAddress::Ipv4(SERVER_IP),
                &IpAddress::Ipv4(dst),
                blen,
                |b| {
                    let _ = reply.emit(&mut DhcpPacket::new_unchecked(&mut b[..blen]));
                },
                &caps,
            );
            Some(out)
        }
        _ => None,
    }
}

fn info(ctl: &Path) -> String {
    let o = run_ok(
        Command::new(bin("iothctl"))
            .arg("--ctl")
            .arg(ctl)
            .arg("info"),
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn mac_of(info: &str) -> [u8; 6] {
    let m = info
        .lines()
        .find_map(|l| l.strip_prefix("mac="))
        .expect("mac= line");
    Mac::parse(m).unwrap().0
}

fn ping(ctl: &Path, addr: &str) -> bool {
    let mut c = Command::new(bin("iothctl"));
    c.arg("--ctl").arg(ctl).args(["ping", "-c", "2", addr]);
    run_for(20, c).status.success()
}

/// `iothctl connect` from `from` to `addr`:`port` (where `iothctl listen` runs) until it
/// gets through; the listener's log must then show `msg`.
fn tcp_exchange(lab: &NodeLab, from: &Path, addr: &str, port: u16, log: &str, msg: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(r#"printf '%s\n' "$0" | "$1" --ctl "$2" connect "$3" "$4""#)
            .arg(msg)
            .arg(bin("iothctl"))
            .arg(from)
            .args([addr, &port.to_string()]);
        let o = run_for(10, c);
        if o.status.success() && lab.log(log).contains(msg) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "TCP {addr}:{port}: {}\nlistener: {}",
            text(&o),
            lab.log(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn listener(lab: &mut NodeLab, ctl: &Path, port: u16, log: &str) {
    let mut c = Command::new(bin("iothctl"));
    c.arg("--ctl")
        .arg(ctl)
        .args(["listen", "::", &port.to_string()]);
    lab.spawn(c, log);
}

/// A stack daemon in auto mode; `--daemon` returns once it has an address.
fn auto_node(lab: &NodeLab, mode: &str, tag: &str) -> (PathBuf, Daemon) {
    let ctl = lab.dir.join(&format!("{tag}.ctl"));
    let o = run(Command::new(bin("ioth-stackd"))
        .args(["--ip", mode, "--name", tag, "--persist", "--daemon"])
        .arg("--switch")
        .arg(&lab.sw)
        .arg("--ctl")
        .arg(&ctl)
        .env_remove("LD_PRELOAD"));
    assert!(o.status.success(), "ioth-stackd --ip {mode}: {}", text(&o));
    let needle = ctl.to_string_lossy().to_string();
    let pid = wait_for(Duration::from_secs(5), "ioth-stackd process", || {
        stack_daemons(&needle).first().copied()
    });
    (
        ctl,
        Daemon {
            pid,
            name: format!("ioth-stackd {mode}"),
        },
    )
}

#[test]
fn dhcp_and_slaac_nodes_get_addresses_and_talk() {
    let mut lab = NodeLab::new("autoconf", None);
    let router = lab.node("10.9.0.1/24,fd09::1/64");
    let svc = lan_services(&lab.sw);
    listener(&mut lab, &router, 7007, "listen.log");

    // DHCPv4: address, router and DNS server from the lease.
    let (d4, _d4d) = auto_node(&lab, "dhcp", "dhcpnode");
    let i = info(&d4);
    assert!(i.contains("addr=10.9.0.10"), "{i}");
    assert!(
        i.contains("gw=10.9.0.1\n") && i.contains("dns=10.9.0.1\n"),
        "{i}"
    );
    assert!(
        !i.contains("addr=fd09::"),
        "dhcp only: no SLAAC address\n{i}"
    );
    assert!(
        svc.leases
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("ACK 10.9.0.10")),
        "{:?}",
        svc.leases.lock().unwrap()
    );
    assert!(ping(&d4, "10.9.0.1"), "ping from the DHCP node\n{i}");
    tcp_exchange(&lab, &d4, "10.9.0.1", 7007, "listen.log", "hello-from-dhcp");

    // SLAAC: fd09:: + modified EUI-64 of the MAC, default route via the advertising router.
    let (s6, _s6d) = auto_node(&lab, "slaac", "slaacnode");
    let i = info(&s6);
    let mac = Mac(mac_of(&i));
    let ll = link_local(&mac).segments();
    let want = std::net::Ipv6Addr::new(0xfd09, 0, 0, 0, ll[4], ll[5], ll[6], ll[7]);
    assert!(i.contains(&format!("addr={want}/64")), "want {want}\n{i}");
    let gw = link_local(&Mac(SERVER_MAC));
    assert!(i.contains(&format!("gw={gw}\n")), "{i}");
    assert!(
        !i.contains("addr=10.9."),
        "slaac only: no IPv4 address\n{i}"
    );
    assert!(ping(&s6, "fd09::1"), "ping from the SLAAC node\n{i}");
    tcp_exchange(&lab, &s6, "fd09::1", 7007, "listen.log", "hello-from-slaac");

    // auto = both; the name-derived MAC keeps the node (and its control path) stable.
    let (a, _ad) = auto_node(&lab, "auto", "autonode");
    wait_for(
        Duration::from_secs(15),
        "auto node with both families",
        || {
            let i = info(&a);
            (i.contains("addr=10.9.0.10") && i.contains("addr=fd09::")).then_some(())
        },
    );
    tcp_exchange(&lab, &a, "fd09::1", 7007, "listen.log", "hello-from-auto6");
    tcp_exchange(&lab, &a, "10.9.0.1", 7007, "listen.log", "hello-from-auto4");
}

#[test]
fn shim_node_with_ioth_ip_auto_resolves_and_connects() {
    if !have("python3") || !have("dnsmasq") {
        return skip("python3 or dnsmasq (dnsmasq-base) missing");
    }
    let mut lab = NodeLab::new("autoconf-shim", None);
    let router = lab.node("10.9.0.1/24,fd09::1/64");
    let _svc = lan_services(&lab.sw);
    listener(&mut lab, &router, 7008, "listen.log");
    // A real DNS server at the address the DHCP lease names as DNS server.
    lab.dnsmasq(&router, &["gw9,10.9.0.1"]);
    // The shim starts the node's daemon (IOTH_IP=auto, IOTH_NAME for a stable MAC) and its
    // first socket call returns once the node has its addresses; `gw9` is resolved by the DNS
    // server the DHCP lease gave (no IOTH_DNS).
    shim_auto_client(&lab, "shimauto", "fd09::1", 7008, "hello-shim");
    assert!(
        lab.log("dnsmasq.log")
            .contains("query[A] gw9 from 10.9.0.10")
    );
}

/// A python node that the shim starts itself (`IOTH_IP=auto`, `IOTH_NAME` for a stable MAC):
/// its first socket call returns once the node has its addresses; it connects to `gw9` (a
/// name only the DNS server of its DHCP lease knows) and to `v6` on `port` and sends
/// `TAG-FAMILY` on each, which must arrive at the listener (`listen.log`).
fn shim_auto_client(lab: &NodeLab, name: &str, v6: &str, port: u16, tag: &str) {
    let script = format!(
        "import socket,sys,time\n\
         for fam, a in ((socket.AF_INET, 'gw9'), (socket.AF_INET6, '{v6}')):\n\
         \x20   for i in range(50):\n\
         \x20       s = socket.socket(fam)\n\
         \x20       try:\n\
         \x20           s.connect((a, {port})); break\n\
         \x20       except OSError as e:\n\
         \x20           err = e; s.close(); time.sleep(0.2)\n\
         \x20   else:\n\
         \x20       sys.exit('connect %s: %s' % (a, err))\n\
         \x20   s.sendall(('{tag}-%d\\n' % fam).encode()); s.close()\n"
    );
    let mut c = lab.at("auto", "python3");
    c.env("IOTH_NAME", name).args(["-c", &script]);
    let o = run_for(40, c);
    // The daemon the shim started: stopped by pid at the end.
    let _node = stack_daemons(&lab.dir.join("run").to_string_lossy())
        .first()
        .copied()
        .map(|pid| Daemon {
            pid,
            name: "shim's ioth-stackd".into(),
        });
    assert!(
        o.status.success(),
        "{}\ndnsmasq: {}",
        text(&o),
        lab.log("dnsmasq.log")
    );
    wait_for(
        Duration::from_secs(10),
        "both lines at the listener",
        || {
            let l = lab.log("listen.log");
            (l.contains(&format!("{tag}-{}", libc::AF_INET))
                && l.contains(&format!("{tag}-{}", libc::AF_INET6)))
            .then_some(())
        },
    );
}

/// dnsmasq as a node (`--dhcp-range` for IPv4, `ra-only` router advertisements for
/// `fd00:9::/64`, DNS) serves stack daemons in `dhcp`, `slaac` and `auto` mode and a python
/// node the shim starts with `IOTH_IP=auto`; all of them then reach the router node.
#[test]
fn dnsmasq_node_serves_dhcp_and_router_advertisements() {
    if !have("python3") || !have("dnsmasq") {
        return skip("python3 or dnsmasq (dnsmasq-base) missing");
    }
    let mut lab = NodeLab::new("autoconf-dnsmasq", None);
    let router = lab.node("10.0.9.1/24,fd00:9::1/64");
    listener(&mut lab, &router, 7009, "listen.log");
    let leases = lab.dir.join("dnsmasq.leases");
    let mut d = lab.on(&router, "dnsmasq");
    d.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--log-queries",
        "--log-dhcp",
        "--port=53",
        "--user=root",
        "--host-record=gw9,10.0.9.1",
        "--dhcp-range=10.0.9.100,10.0.9.150,1h",
        "--dhcp-range=fd00:9::,ra-only,64",
        "--enable-ra",
    ])
    .arg(format!("--dhcp-leasefile={}", leases.display()))
    .arg(format!(
        "--pid-file={}",
        lab.dir.join("dnsmasq.pid").display()
    ));
    lab.spawn(d, "dnsmasq.log");
    wait_for(
        Duration::from_secs(20),
        "dnsmasq advertising on vde0",
        || {
            let l = lab.log("dnsmasq.log");
            assert!(!l.contains("FAILED") && !l.contains("failed"), "{l}");
            l.contains("RTR-ADVERT(vde0)").then_some(())
        },
    );

    let t0 = Instant::now();
    let (n4, _d4) = auto_node(&lab, "dhcp", "dm-dhcp");
    let i = wait_for(Duration::from_secs(15), "DHCP lease from dnsmasq", || {
        let i = info(&n4);
        (i.contains("addr=10.0.9.1") && i.contains("dns=10.0.9.1")).then_some(i)
    });
    eprintln!("dhcp node: lease after {:?}", t0.elapsed());
    assert!(i.contains("gw=10.0.9.1"), "{i}");
    let mac4 = Mac(mac_of(&i)).to_string();
    wait_for(
        Duration::from_secs(10),
        "the lease in dnsmasq's file",
        || {
            let f = std::fs::read_to_string(&leases).unwrap_or_default();
            f.lines()
                .any(|l| l.contains(&mac4) && l.contains(" 10.0.9.1"))
                .then_some(())
        },
    );
    assert!(
        lab.log("dnsmasq.log").contains("DHCPACK(vde0)"),
        "{}",
        lab.log("dnsmasq.log")
    );
    assert!(ping(&n4, "10.0.9.1"), "ping from the DHCP node\n{i}");
    tcp_exchange(&lab, &n4, "10.0.9.1", 7009, "listen.log", "dnsmasq-dhcp4");

    let t0 = Instant::now();
    let (n6, _d6) = auto_node(&lab, "slaac", "dm-slaac");
    let i = wait_for(
        Duration::from_secs(15),
        "SLAAC address from dnsmasq's RA",
        || {
            let i = info(&n6);
            i.contains("addr=fd00:9::").then_some(i)
        },
    );
    eprintln!("slaac node: address after {:?}", t0.elapsed());
    assert!(
        i.contains("gw=fe80::"),
        "default route via the router's link-local\n{i}"
    );
    assert!(ping(&n6, "fd00:9::1"), "ping from the SLAAC node\n{i}");
    tcp_exchange(&lab, &n6, "fd00:9::1", 7009, "listen.log", "dnsmasq-slaac6");

    let (a, _da) = auto_node(&lab, "auto", "dm-auto");
    wait_for(
        Duration::from_secs(15),
        "auto node with both families",
        || {
            let i = info(&a);
            (i.contains("addr=10.0.9.1") && i.contains("addr=fd00:9::")).then_some(())
        },
    );
    tcp_exchange(&lab, &a, "fd00:9::1", 7009, "listen.log", "dnsmasq-auto6");
    tcp_exchange(&lab, &a, "10.0.9.1", 7009, "listen.log", "dnsmasq-auto4");

    // A program as a node of its own: the shim starts the daemon (IOTH_IP=auto), `gw9` is
    // resolved by dnsmasq, the DNS server of the lease.
    shim_auto_client(&lab, "dmshim", "fd00:9::1", 7009, "dnsmasq-shim");
    let l = lab.log("dnsmasq.log");
    assert!(l.contains("query[A] gw9 from 10.0.9.1"), "{l}");
    // Three leases: the dhcp, auto and shim nodes.
    let f = std::fs::read_to_string(&leases).unwrap_or_default();
    assert_eq!(f.lines().count(), 3, "{f}");
}

#[test]
fn no_server_no_address_clear_error() {
    let lab = NodeLab::new("autoconf-none", None);
    let t0 = Instant::now();
    let o = run(Command::new(bin("ioth-stackd"))
        .args(["--ip", "dhcp", "--daemon", "--addr-timeout", "1"])
        .arg("--switch")
        .arg(&lab.sw)
        .arg("--ctl")
        .arg(lab.dir.join("none.ctl"))
        .env_remove("LD_PRELOAD"));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(e.contains("no address from DHCP within 1 s"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    // The daemon that never got an address is gone (killed by the waiting parent).
    assert!(pid_by_cmdline(&lab.dir.join("none.ctl").to_string_lossy()).is_none());
}

#[test]
fn dhcp_lease_renews_and_expires() {
    let lab = NodeLab::new("autoconf-lease", None);
    let svc = lan_services_lease(&lab.sw, 4);
    let (n, _nd) = auto_node(&lab, "dhcp", "leasenode");
    let mac = mac_of(&info(&n));
    let acks = |svc: &LanServices| {
        let m = EthernetAddress(mac).to_string();
        svc.leases
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.ends_with(&m))
            .count()
    };
    // A 4 s lease is renewed at T1 (2 s) by unicast to the server.
    wait_for(Duration::from_secs(20), "two lease renewals", || {
        (acks(&svc) >= 3).then_some(())
    });
    assert!(info(&n).contains("addr=10.9.0.100/24"));
    // Without a server the lease runs out: address, route and DNS server go.
    drop(svc);
    let i = wait_for(Duration::from_secs(20), "lease expiry", || {
        let i = info(&n);
        (!i.contains("addr=10.9.")).then_some(i)
    });
    assert!(!i.contains("gw=") && !i.contains("dns="), "{i}");
}

/// `iothctl info` of the node at `ctl`, once its daemon answers.
fn info_when_up(ctl: &Path) -> Option<String> {
    let mut c = Command::new(bin("iothctl"));
    c.arg("--ctl").arg(ctl).arg("info");
    let o = run_for(10, c);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A node in auto mode (`monnode`, its daemon in the foreground) with `ip` monitors running
/// as its processes, each `(arguments, log)`, all listening before any address comes: its
/// control socket and the SLAAC address it is to get.
fn monitored_node(lab: &mut NodeLab, monitors: &[(&[&str], &str)]) -> (PathBuf, Ipv6Addr) {
    // The node's daemon in the foreground: with `--daemon` it would return only once it has
    // its addresses, and the monitors must be listening before they come.
    let ctl = lab.dir.join("mon.ctl");
    let mut d = Command::new(bin("ioth-stackd"));
    d.args(["--ip", "auto", "--name", "monnode", "--persist", "--switch"])
        .arg(&lab.sw)
        .arg("--ctl")
        .arg(&ctl)
        .env_remove("LD_PRELOAD");
    lab.spawn(d, "stackd.log");
    let i = wait_for(Duration::from_secs(10), "the node's daemon", || {
        info_when_up(&ctl)
    });
    assert!(i.contains("netlink_subscribers=0\n"), "{i}");
    let ll = link_local(&Mac(mac_of(&i))).segments();
    let v6 = Ipv6Addr::new(0xfd09, 0, 0, 0, ll[4], ll[5], ll[6], ll[7]);
    let mut pids = Vec::new();
    for (args, log) in monitors {
        let mut m = lab.on(&ctl, "ip");
        m.args(*args);
        pids.push(lab.spawn(m, log));
    }
    let all = format!("netlink_subscribers={}\n", monitors.len());
    let i = wait_for(Duration::from_secs(10), "the monitors subscribed", || {
        info_when_up(&ctl).filter(|i| i.contains(&all))
    });
    // `ip monitor` subscribes (binds) before it reads the interfaces and probes for
    // namespace ids (`RTM_GETNSID`) on the same socket: an event that came in between would
    // be taken for the probe's answer and not printed. Once it waits in `recvmsg` it is in
    // its listening loop (the shim's answers are there before it reads them).
    for p in pids {
        wait_for(
            Duration::from_secs(10),
            "a monitor waiting in recvmsg",
            || {
                let s = std::fs::read_to_string(format!("/proc/{p}/syscall")).unwrap_or_default();
                let nr = s
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<i64>().ok());
                (nr == Some(libc::SYS_recvmsg)).then_some(())
            },
        );
    }
    assert!(
        !i.contains("addr=10.9.") && !i.contains("addr=fd09::") && !i.contains("gw="),
        "{i}"
    );
    (ctl, v6)
}

/// The log `name` of `lab`: what `ip` printed, lines without trailing blanks.
fn printed(lab: &NodeLab, name: &str) -> String {
    lab.log(name)
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `ip monitor address` as a process of a node whose addresses come and go (issue 16): the
/// DHCP lease and the SLAAC address appear as `ip` prints new addresses, the lease's end as
/// a deleted one; `ip -6 monitor address` hears of the IPv6 address only.
#[test]
fn ip_monitor_hears_address_changes() {
    if !have("ip") {
        return skip("ip (iproute2) missing");
    }
    let mut lab = NodeLab::new("autoconf-monitor", None);
    let (_ctl, v6) = monitored_node(
        &mut lab,
        &[
            (&["monitor", "address"], "monitor.log"),
            (&["-6", "monitor", "address"], "monitor6.log"),
        ],
    );
    let log = |name: &str| printed(&lab, name);
    let lease = "1: vde0    inet 10.9.0.100/24 brd 10.9.0.255 scope global vde0\n       \
                 valid_lft forever preferred_lft forever";
    let slaac = format!(
        "1: vde0    inet6 {v6}/64 scope global\n       valid_lft forever preferred_lft forever"
    );
    let svc = lan_services_lease(&lab.sw, 4);
    wait_for(
        Duration::from_secs(20),
        "the lease and the SLAAC address",
        || {
            let l = log("monitor.log");
            (l.contains(lease) && l.contains(&slaac)).then_some(())
        },
    );
    let six = wait_for(Duration::from_secs(10), "the SLAAC address (-6)", || {
        let l = log("monitor6.log");
        l.contains(&slaac).then_some(l)
    });
    assert!(!six.contains("inet "), "an IPv4 event for ip -6: {six}");
    // Without the server the lease runs out.
    drop(svc);
    let l = wait_for(Duration::from_secs(20), "the lease's end", || {
        let l = log("monitor.log");
        l.contains(&format!("Deleted {lease}")).then_some(l)
    });
    assert!(!l.contains(&format!("Deleted {slaac}")), "{l}");
    assert!(
        !log("monitor6.log").contains("Deleted"),
        "{}",
        log("monitor6.log")
    );
}

/// `ip monitor route` as a process of a node whose lease and router come and go: the lease's
/// prefix route and default route appear as `ip route` as the node lists them, the SLAAC
/// prefix route and the router's default route as `ip -6 route` does, and the lease's routes
/// are deleted when it runs out. `ip -6 monitor route` hears of the IPv6 routes only, and
/// `ip monitor` of addresses and routes.
#[test]
fn ip_monitor_hears_route_changes() {
    if !have("ip") {
        return skip("ip (iproute2) missing");
    }
    let mut lab = NodeLab::new("autoconf-monitor-route", None);
    let (ctl, _) = monitored_node(
        &mut lab,
        &[
            (&["monitor", "route"], "route.log"),
            (&["-6", "monitor", "route"], "route6.log"),
            (&["monitor"], "all.log"),
        ],
    );
    let log = |name: &str| printed(&lab, name);
    let router = link_local(&Mac(SERVER_MAC));
    let prefix4 = "10.9.0.0/24 dev vde0 proto kernel scope link src 10.9.0.100";
    let default4 = format!("default via {ROUTER_IP} dev vde0 proto static");
    let prefix6 = "fd09::/64 dev vde0 proto kernel metric 256 pref medium";
    let default6 = format!("default via {router} dev vde0 proto static metric 1024 pref medium");
    let svc = lan_services_lease(&lab.sw, 4);
    let l = wait_for(Duration::from_secs(20), "the four routes", || {
        let l = log("route.log");
        [prefix4, &default4, prefix6, &default6]
            .iter()
            .all(|r| l.lines().any(|x| x == *r))
            .then_some(l)
    });
    assert!(!l.contains("Deleted"), "{l}");
    // What `ip route` and `ip -6 route` as the node print, the monitor printed (but
    // fe80::/64, there before the monitor).
    let ip = |args: &[&str]| {
        let mut c = lab.on(&ctl, "ip");
        c.args(args);
        let o = run_for(10, c);
        assert!(o.status.success(), "ip {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let table = ip(&["route"]) + &ip(&["-6", "route"]);
    let listed: Vec<&str> = table
        .lines()
        .map(str::trim_end)
        .filter(|r| !r.starts_with("fe80::/64"))
        .collect();
    assert_eq!(listed.len(), 4, "{table}");
    for r in &listed {
        assert!(
            l.lines().any(|x| x == *r),
            "{r:?} not in the monitor's\n{l}"
        );
    }
    let six = wait_for(Duration::from_secs(10), "the IPv6 routes (-6)", || {
        let l = log("route6.log");
        (l.lines().any(|x| x == prefix6) && l.lines().any(|x| x == default6)).then_some(l)
    });
    assert!(!six.contains("10.9.0."), "an IPv4 route for ip -6: {six}");
    // Without the server the lease runs out: its default route, then its prefix route go
    // (between them, for `ip monitor`, its address).
    drop(svc);
    let gone = [format!("Deleted {default4}"), format!("Deleted {prefix4}")];
    let l = wait_for(
        Duration::from_secs(20),
        "the lease's routes deleted",
        || {
            let l = log("route.log");
            gone.iter().all(|g| l.lines().any(|x| x == g)).then_some(l)
        },
    );
    assert!(!l.contains("Deleted fd09::") && !l.contains(&format!("Deleted {default6}")));
    let all = wait_for(Duration::from_secs(10), "ip monitor (everything)", || {
        let l = log("all.log");
        gone.iter().all(|g| l.lines().any(|x| x == g)).then_some(l)
    });
    let at = |what: &str| {
        all.find(what)
            .unwrap_or_else(|| panic!("{what:?} not in\n{all}"))
    };
    assert!(at(prefix4) < at(&default4), "{all}");
    assert!(
        at("inet 10.9.0.100/24") < at(prefix4),
        "the address, then its route: {all}"
    );
    assert!(
        at(&gone[0]) < at("Deleted 1: vde0    inet 10.9.0.100/24"),
        "{all}"
    );
    assert!(
        at("Deleted 1: vde0    inet 10.9.0.100/24") < at(&gone[1]),
        "{all}"
    );
    assert!(
        !log("route6.log").contains("Deleted"),
        "{}",
        log("route6.log")
    );
}
