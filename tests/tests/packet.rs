//! Packet sockets (`AF_PACKET`) through the shim: python (`packet.py`) as a node without an
//! IPv4 address sends a DHCP discover on a `SOCK_DGRAM` packet socket and reads the answer
//! a dnsmasq node sends to its MAC (source `sockaddr_ll`, `PACKET_AUXDATA`), then asks for
//! the server's MAC with an ARP request on a `SOCK_RAW` one. Static busybox `udhcpc` is in
//! `static.rs`; another user's packet socket on a node is refused in
//! `preload/tests/owner.rs`.

use ioth_e2e::*;

#[test]
fn packet_sockets_send_and_read_frames_on_the_nodes_link() {
    if !have("python3") || !have("dnsmasq") {
        return skip("python3 or dnsmasq (dnsmasq-base) missing");
    }
    let mut lab = NodeLab::new("packet", None);
    let server = lab.node("10.0.9.1/24");
    lab.dhcp_server(&server, "10.0.9.100,10.0.9.150,1h");
    let mut c = lab.at("fd00:9::8", "python3");
    c.arg(repo().join("tests/tests/packet.py"));
    let o = run_for(60, c);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success() && out.ends_with("done\n"),
        "packet.py: {}\ndnsmasq: {}",
        text(&o),
        lab.log("dnsmasq.log")
    );
    for want in [
        "type True protocol 0x800",
        &format!("bind-unknown {}", libc::ENODEV),
        "name vde0 0x800 hatype 1 own-mac True",
        "sent True",
        "offer-from vde0 0x800 pkttype 0 hatype 1 halen 6 not-own True",
        "ip-csum-ok True udp-len-ok True",
        "auxdata user 1 len-ok True snap-ok True",
        "arp-reply to-own True sender-is-server True pkttype 0 whole-frame 0x806",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    let offer = out
        .lines()
        .find_map(|l| l.strip_prefix("offer "))
        .and_then(|l| {
            l.split_whitespace()
                .next()?
                .parse::<std::net::Ipv4Addr>()
                .ok()
        })
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        offer.octets()[..3] == [10, 0, 9] && (100..=150).contains(&offer.octets()[3]),
        "{offer}"
    );
}
