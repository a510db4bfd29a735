//! `ip route`, `ip -6 route` and `ip route get` as a node (issue 16) show the node's routes,
//! as Linux would for its addresses and gateways, not the host's: a prefix route per address,
//! a default route per gateway, and the route a packet would take.

use ioth_e2e::*;
use std::process::Command;

fn ip(sw: &std::path::Path, run: &std::path::Path, args: &[&str]) -> String {
    let mut c = as_node("ip", sw, run, "fd00:7::9/64,10.7.1.9/24");
    c.env("IOTH_GW", "10.7.1.1,fd00:7::1").args(args);
    let o = run_for(30, c);
    assert!(o.status.success(), "ip {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn ip_route_shows_the_nodes_routes() {
    if !have("ip") {
        return skip("ip (iproute2) missing");
    }
    let tmp = TempDir::new("routes");
    let sw = tmp.join("sw");
    let _switch = ioth_switch(&sw, &[]);
    let run = tmp.join("run");
    assert_eq!(
        ip(&sw, &run, &["route"]),
        "default via 10.7.1.1 dev vde0 proto static\n\
         10.7.1.0/24 dev vde0 proto kernel scope link src 10.7.1.9"
    );
    let v6 = ip(&sw, &run, &["-6", "route"]);
    assert_eq!(
        v6,
        "fd00:7::/64 dev vde0 proto kernel metric 256 pref medium\n\
         fe80::/64 dev vde0 proto kernel metric 256 pref medium\n\
         default via fd00:7::1 dev vde0 proto static metric 1024 pref medium"
    );
    assert_eq!(
        ip(&sw, &run, &["route", "get", "10.7.1.20"]),
        "10.7.1.20 dev vde0 src 10.7.1.9\n    cache"
    );
    assert_eq!(
        ip(&sw, &run, &["route", "get", "192.0.2.1"]),
        "192.0.2.1 via 10.7.1.1 dev vde0 src 10.7.1.9\n    cache"
    );
    assert!(
        ip(&sw, &run, &["-6", "route", "get", "2001:db8::1"])
            .starts_with("2001:db8::1 via fd00:7::1 dev vde0 src fd00:7::9")
    );
    // The host's own routes are not what a node sees (its table has no such device).
    let mut host = Command::new("ip");
    host.arg("route").env_remove("LD_PRELOAD");
    let h = String::from_utf8_lossy(&run_for(10, host).stdout).into_owned();
    assert!(!h.contains("dev vde0"), "{h}");
}
