//! The switch seen from outside (issue 15): `--http ADDR:PORT` serves a status page (`/`,
//! static HTML and JavaScript embedded in the binary), the LAN as JSON (`/api/ports`, which
//! the page reads every second) and Prometheus metrics (`/metrics`, text exposition format
//! 0.0.4). HTTP is tiny_http's, on a thread of its own: the frame path never waits for a
//! browser. The event loop renders a [`Snapshot`] (pure functions of the core, here) at
//! every tick and after console commands; the thread only hands out the latest one.

#![deny(unsafe_code)]

use crate::core::{Core, NodeStats, mac_str};
use ioth_common::vde::stat;
use serde_json::json;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// The page: one table of ports, refreshed from `/api/ports`.
pub const PAGE: &str = include_str!("status.html");

/// What the HTTP thread serves, rendered by the event loop.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub ports_json: String,
    pub metrics: String,
}

/// Facts the core does not hold.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub dir: String,
    pub uptime_s: u64,
    pub now_ms: u64,
}

/// `/api/ports`: every port with its kind, description, MACs, VLANs, counters, drops, queue,
/// uplink lines and impairment; the shortcuts and the blocks.
pub fn ports_json(core: &Core, f: &Facts) -> String {
    let table = core.table(f.now_ms);
    let ports: Vec<serde_json::Value> = core
        .ports()
        .map(|(id, p)| {
            let c = &p.counters;
            let macs: Vec<String> = table
                .iter()
                .filter(|(_, _, port, _)| *port == id)
                .map(|(m, ..)| mac_str(m))
                .collect();
            let pairs: Vec<serde_json::Value> = core
                .pair_impairments()
                .filter(|((_, to), _)| *to == id)
                .map(|((from, _), sh)| {
                    json!({"from": from, "settings": sh.settings.to_string(), "stats": sh.stats_line()})
                })
                .collect();
            json!({
                "port": id,
                "kind": p.kind.name(),
                "description": p.description,
                "untagged_vlan": p.untagged_vlan,
                "tagged_vlans": p.tagged.iter().collect::<Vec<_>>(),
                "max_frame": p.max_frame,
                "macs": macs,
                "rx_frames": c.rx_frames, "rx_bytes": c.rx_bytes,
                "tx_frames": c.tx_frames, "tx_bytes": c.tx_bytes,
                "drops": c.drops().iter().map(|(k, n)| (k.to_string(), json!(n)))
                    .collect::<serde_json::Map<_, _>>(),
                "queue_bytes": p.queued_bytes,
                "detail": p.detail,
                "captured": core.captured(id),
                "impair": p.impair.as_ref().map(|sh| json!({
                    "settings": sh.settings.to_string(), "stats": sh.stats_line()
                })),
                "impair_from": pairs,
                "node": p.node.as_ref().map(|n| node_json(n)),
            })
        })
        .collect();
    let shortcuts: Vec<serde_json::Value> = core
        .shortcuts()
        .map(|(id, s)| {
            json!({
                "id": id, "a": {"port": s.a.0, "mac": mac_str(&s.a.1)},
                "b": {"port": s.b.0, "mac": mac_str(&s.b.1)}, "vlan": s.vlan,
                "cut_through": u64::from(s.cut.0) + u64::from(s.cut.1),
                "a_sent": {"frames": s.frames.0, "bytes": s.bytes.0},
                "b_sent": {"frames": s.frames.1, "bytes": s.bytes.1},
            })
        })
        .collect();
    let blocks: Vec<serde_json::Value> = core
        .blocks()
        .map(|((a, b), n)| json!({"a": a, "b": b, "dropped": n}))
        .collect();
    json!({
        "switch": {
            "dir": f.dir, "uptime_s": f.uptime_s, "learned_macs": core.learned(),
            "hub": core.hub, "shortcuts_enabled": core.shortcuts_enabled,
        },
        "ports": ports,
        "shortcuts": shortcuts,
        "blocks": blocks,
    })
    .to_string()
}

/// What a port's stack daemon reported of itself.
fn node_json(n: &NodeStats) -> serde_json::Value {
    let named = |names: &[&str], v: &[u64]| -> serde_json::Map<String, serde_json::Value> {
        names
            .iter()
            .zip(v)
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect()
    };
    json!({
        "tcp_states": named(&stat::TCP_STATES, &n.tcp_states),
        "cut_through": n.cut_through,
        "sockets": named(&stat::SOCKET_KINDS, &n.sockets),
        "retransmitted_segments": n.retransmitted,
        "timeouts": n.timeouts,
        "fast_retransmits": n.fast_retransmits,
        "resident_bytes": n.resident_bytes,
    })
}

/// The `node` label of a port: a stack daemon's node as its description names it (address or
/// name), without the pid, so that a node keeps its series across a restart of its daemon;
/// any other port's description (an uplink's URL, a `vde_plug`'s) as it is.
fn node_label(description: &str) -> &str {
    let Some(who) = description.strip_prefix("ioth-stackd ") else {
        return description;
    };
    match who.rsplit_once(" pid=") {
        Some((w, pid)) if pid.bytes().all(|b| b.is_ascii_digit()) => w,
        _ => who,
    }
}

/// A label value, escaped as the exposition format wants (`\`, `"`, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: its HELP and TYPE lines, then `(labels, value)` samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// A number read off a port.
type PortValue = dyn Fn(&crate::core::Port) -> f64;

/// `/metrics`: per port frames and bytes each way, drops by cause, queued bytes, learned
/// addresses; the switch's learning table, shortcuts (with their cut-through connections)
/// and impairments. Counters end in `_total`, sizes are in bytes, ports are labelled by
/// number, kind and node ([`node_label`]).
pub fn metrics(core: &Core, f: &Facts) -> String {
    let mut out = String::new();
    let port_labels = |id: u32, p: &crate::core::Port| {
        format!(
            "port=\"{id}\",kind=\"{}\",node=\"{}\"",
            p.kind.name(),
            esc(node_label(&p.description))
        )
    };
    let per_port = |get: &PortValue| -> Vec<(String, f64)> {
        core.ports()
            .map(|(id, p)| (port_labels(id, p), get(p)))
            .collect()
    };
    let counters: [(&str, &str, &PortValue); 4] = [
        (
            "ioth_switch_port_received_frames_total",
            "Frames received on the port.",
            &|p| p.counters.rx_frames as f64,
        ),
        (
            "ioth_switch_port_received_bytes_total",
            "Bytes received on the port.",
            &|p| p.counters.rx_bytes as f64,
        ),
        (
            "ioth_switch_port_sent_frames_total",
            "Frames sent out of the port.",
            &|p| p.counters.tx_frames as f64,
        ),
        (
            "ioth_switch_port_sent_bytes_total",
            "Bytes sent out of the port.",
            &|p| p.counters.tx_bytes as f64,
        ),
    ];
    for (name, help, get) in counters {
        family(&mut out, name, "counter", help, &per_port(get));
    }
    let mut drops = Vec::new();
    for (id, p) in core.ports() {
        for (cause, n) in p.counters.drops() {
            drops.push((
                format!("{},cause=\"{cause}\"", port_labels(id, p)),
                n as f64,
            ));
        }
    }
    family(
        &mut out,
        "ioth_switch_port_dropped_frames_total",
        "counter",
        "Frames dropped, by cause: queue full, too big, malformed, VLAN, port lock, block.",
        &drops,
    );
    family(
        &mut out,
        "ioth_switch_port_not_learned_frames_total",
        "counter",
        "Frames whose source address was not learned (the port's or the table's limit).",
        &per_port(&|p| p.counters.not_learned as f64),
    );
    family(
        &mut out,
        "ioth_switch_port_queue_bytes",
        "gauge",
        "Bytes waiting in the port's output queue.",
        &per_port(&|p| p.queued_bytes as f64),
    );
    family(
        &mut out,
        "ioth_switch_port_learned_addresses",
        "gauge",
        "MAC addresses learned on the port.",
        &per_port(&|p| p.learned as f64),
    );
    let mut imp = Vec::new();
    for (id, p) in core.ports() {
        if let Some(sh) = &p.impair {
            for (what, n) in impair_counts(sh) {
                imp.push((
                    format!("{},from=\"\",outcome=\"{what}\"", port_labels(id, p)),
                    n as f64,
                ));
            }
        }
    }
    for ((from, to), sh) in core.pair_impairments() {
        if let Some(p) = core.port(to) {
            for (what, n) in impair_counts(sh) {
                imp.push((
                    format!("{},from=\"{from}\",outcome=\"{what}\"", port_labels(to, p)),
                    n as f64,
                ));
            }
        }
    }
    family(
        &mut out,
        "ioth_switch_impairment_frames_total",
        "counter",
        "What the port's impairment did to the frames offered to it, by outcome.",
        &imp,
    );
    family(
        &mut out,
        "ioth_switch_learned_addresses",
        "gauge",
        "MAC addresses in the learning table.",
        &[(String::new(), core.learned() as f64)],
    );
    family(
        &mut out,
        "ioth_switch_ports",
        "gauge",
        "Ports in use.",
        &[(String::new(), core.ports().count() as f64)],
    );
    family(
        &mut out,
        "ioth_switch_shortcuts",
        "gauge",
        "Shortcuts (direct paths between two stacks) in place.",
        &[(String::new(), core.shortcuts().count() as f64)],
    );
    let cut: Vec<(String, f64)> = core
        .shortcuts()
        .map(|(id, s)| {
            (
                format!(
                    "shortcut=\"{id}\",port_a=\"{}\",port_b=\"{}\"",
                    s.a.0, s.b.0
                ),
                (u64::from(s.cut.0) + u64::from(s.cut.1)) as f64,
            )
        })
        .collect();
    family(
        &mut out,
        "ioth_switch_shortcut_cut_through_connections_total",
        "counter",
        "TCP connections cut through over the shortcut, as its two stacks reported them.",
        &cut,
    );
    let sent = |get: &dyn Fn(&crate::core::Shortcut) -> (u64, u64)| -> Vec<(String, f64)> {
        core.shortcuts()
            .flat_map(|(id, s)| {
                let (a, b) = get(s);
                [(s.a.0, s.b.0, a), (s.b.0, s.a.0, b)].map(|(from, to, v)| {
                    (
                        format!("shortcut=\"{id}\",from_port=\"{from}\",to_port=\"{to}\""),
                        v as f64,
                    )
                })
            })
            .collect()
    };
    family(
        &mut out,
        "ioth_switch_shortcut_sent_frames_total",
        "counter",
        "Frames sent over the shortcut from one port's stack to the other's, as it reported them.",
        &sent(&|s| s.frames),
    );
    family(
        &mut out,
        "ioth_switch_shortcut_sent_bytes_total",
        "counter",
        "Bytes sent over the shortcut from one port's stack to the other's, as it reported them.",
        &sent(&|s| s.bytes),
    );
    node_metrics(&mut out, core, &port_labels);
    family(
        &mut out,
        "ioth_switch_uptime_seconds",
        "gauge",
        "Seconds since the switch started.",
        &[(String::new(), f.uptime_s as f64)],
    );
    out
}

/// A number read off a node's figures.
type NodeValue = dyn Fn(&NodeStats) -> u64;

/// The figures the ports' stack daemons report of themselves (`ioth_node_*`), labelled as
/// their ports are.
fn node_metrics(
    out: &mut String,
    core: &Core,
    port_labels: &dyn Fn(u32, &crate::core::Port) -> String,
) {
    let nodes: Vec<(String, &NodeStats)> = core
        .ports()
        .filter_map(|(id, p)| Some((port_labels(id, p), p.node.as_deref()?)))
        .collect();
    let by = |label: &str, names: &[&str], get: &dyn Fn(&NodeStats) -> Vec<u64>| {
        let mut v = Vec::new();
        for (l, n) in &nodes {
            for (name, x) in names.iter().zip(get(n)) {
                v.push((format!("{l},{label}=\"{name}\""), x as f64));
            }
        }
        v
    };
    family(
        out,
        "ioth_node_tcp_connections",
        "gauge",
        "TCP sockets of the node's stack by state (listeners' spare sockets count as listen).",
        &by("state", &stat::TCP_STATES, &|n| n.tcp_states.to_vec()),
    );
    family(
        out,
        "ioth_node_sockets",
        "gauge",
        "The applications' sockets on the node, by protocol.",
        &by("protocol", &stat::SOCKET_KINDS, &|n| n.sockets.to_vec()),
    );
    let one: [(&str, &str, &str, &NodeValue); 5] = [
        (
            "ioth_node_tcp_cut_through_connections",
            "gauge",
            "TCP connections of the node cut through to another node of this host.",
            &|n| n.cut_through,
        ),
        (
            "ioth_node_tcp_retransmitted_segments_total",
            "counter",
            "TCP segments the node's stack sent again.",
            &|n| n.retransmitted,
        ),
        (
            "ioth_node_tcp_timeouts_total",
            "counter",
            "Retransmission timeouts of the node's TCP connections.",
            &|n| n.timeouts,
        ),
        (
            "ioth_node_tcp_fast_retransmits_total",
            "counter",
            "Fast retransmits of the node's TCP connections.",
            &|n| n.fast_retransmits,
        ),
        (
            "ioth_node_resident_memory_bytes",
            "gauge",
            "Resident memory of the node's stack daemon.",
            &|n| n.resident_bytes,
        ),
    ];
    for (name, kind, help, get) in one {
        let v: Vec<(String, f64)> = nodes
            .iter()
            .map(|(l, n)| (l.clone(), get(n) as f64))
            .collect();
        family(out, name, kind, help, &v);
    }
}

fn impair_counts(sh: &crate::impair::Shaper) -> [(&'static str, u64); 6] {
    let s = &sh.stats;
    [
        ("offered", s.frames),
        ("sent", s.sent),
        ("lost", s.lost),
        ("duplicated", s.duplicated),
        ("reordered", s.reordered),
        ("dropped", s.dropped),
    ]
}

/// What a request asks for besides the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// `/api/ports`.
    Ports,
    /// `/metrics`.
    Metrics,
}

/// The HTTP side: answer requests until the server is unblocked, with what `fetch` gives
/// (`None`: not available now, 503).
pub fn serve(server: Arc<tiny_http::Server>, fetch: impl Fn(Want) -> Option<String>) {
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("/").to_string();
        let get = |w: Want, ctype: &'static str| match fetch(w) {
            Some(body) => (body, ctype, 200),
            None => ("the switch does not answer\n".into(), "text/plain", 503),
        };
        let (body, ctype, code) = match (req.method(), path.as_str()) {
            (tiny_http::Method::Get, "/") | (tiny_http::Method::Get, "/index.html") => {
                (PAGE.to_string(), "text/html; charset=utf-8", 200)
            }
            (tiny_http::Method::Get, "/api/ports") => get(Want::Ports, "application/json"),
            (tiny_http::Method::Get, "/metrics") => {
                get(Want::Metrics, "text/plain; version=0.0.4; charset=utf-8")
            }
            (tiny_http::Method::Get, _) => ("not found\n".into(), "text/plain", 404),
            _ => ("method not allowed\n".into(), "text/plain", 405),
        };
        let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes())
            .expect("a valid header");
        let resp = tiny_http::Response::from_string(body)
            .with_status_code(code)
            .with_header(header);
        // A client that went away mid-answer is its own problem.
        let _ = req.respond(resp);
    }
}

/// [`serve`] from the snapshot the event loop keeps fresh.
pub fn serve_snapshot(server: Arc<tiny_http::Server>, snap: Arc<Mutex<Snapshot>>) {
    serve(server, |w| {
        let s = snap.lock().unwrap_or_else(|e| e.into_inner());
        Some(match w {
            Want::Ports => s.ports_json.clone(),
            Want::Metrics => s.metrics.clone(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Port, PortKind};

    #[test]
    fn metrics_follow_the_exposition_format() {
        let mut c = Core::new(false);
        c.add_port(
            1,
            Port::new(PortKind::Native, "ioth-stackd \"q\" pid=1", 65536),
        )
        .unwrap();
        c.port_mut(1).unwrap().counters.rx_bytes = 12345;
        let m = metrics(&c, &Facts::default());
        assert!(m.contains("# TYPE ioth_switch_port_received_bytes_total counter\n"));
        assert!(m.contains(
            "ioth_switch_port_received_bytes_total{port=\"1\",kind=\"native\",node=\"\\\"q\\\"\"} 12345\n"
        ));
        assert!(m.contains("cause=\"block\"} 0\n"));
        assert_eq!(node_label("ioth-stackd web pid=12"), "web");
        assert_eq!(node_label("ioth-stackd fd00::5 pid=x"), "fd00::5 pid=x");
        assert_eq!(node_label("vxlan://239.0.0.1"), "vxlan://239.0.0.1");
        let j: serde_json::Value =
            serde_json::from_str(&ports_json(&c, &Facts::default())).unwrap();
        assert_eq!(j["ports"][0]["rx_bytes"], 12345);
        assert_eq!(j["ports"][0]["description"], "ioth-stackd \"q\" pid=1");
    }
}
