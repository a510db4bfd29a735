//! The management console, vde_switch style: a text protocol on `DIR/mgmt`.
//!
//! On connect the switch prints a banner and the prompt `vde$ `. One command per line. A
//! command with output answers `0000 DATA END WITH '.'`, the lines, a lone `.`, then
//! `1000 Success`; a failure answers `1NNN <strerror>` (NNN = errno). Empty lines and `#`
//! comments are ignored. This module only interprets lines (pure, over [`Core`]); the
//! event loop moves the bytes.

#![deny(unsafe_code)]

use crate::core::{Core, CoreError, PortId, Vlan, mac_str};
use crate::impair::{Settings, Shaper, port_seed};
use ioth_common::sys::Errno;

pub const BANNER: &str = concat!(
    "ioth-switch ",
    env!("CARGO_PKG_VERSION"),
    " (VDE v3 compatible switch)\n",
    "Type 'help' for the list of commands.\n"
);
pub const PROMPT: &str = "\nvde$ ";
/// Longest accepted command line.
pub const MAX_LINE: usize = 1024;

/// What the connection should do after the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Logout,
    Shutdown,
    /// From now on the connection carries a pcap stream of the frames of this port (`None`:
    /// every port), `count` of them at most (`None`: until the client goes).
    Capture {
        port: Option<PortId>,
        count: Option<u64>,
    },
}

/// Facts about the running switch that only the I/O layer knows.
#[derive(Clone, Debug, Default)]
pub struct Info {
    pub dir: String,
    pub numports: u32,
    pub pcap: Option<String>,
    pub queue_limit: usize,
    /// The status server's address (`--http`).
    pub http: Option<String>,
    /// `--http-node`: the node's addresses, name, pid and state.
    pub http_node: Option<String>,
    pub now_ms: u64,
    pub uptime_s: u64,
}

const HELP: &[(&str, &str, &str)] = &[
    ("help", "", "this list"),
    ("showinfo", "", "show switch version and info"),
    ("logout", "", "close this console"),
    ("shutdown", "", "stop the switch"),
    ("port/print", "[N]", "print port(s) in use and counters"),
    ("port/allprint", "", "print every port in use, with details"),
    ("port/setvlan", "N VLAN", "set the untagged VLAN of port N"),
    (
        "port/resetcounter",
        "[N]",
        "reset the counters of port N (all ports)",
    ),
    ("vlan/create", "N", "create VLAN N (1..4094)"),
    (
        "vlan/addport",
        "N PORT",
        "make PORT a tagged member of VLAN N",
    ),
    ("vlan/print", "", "list VLANs and their ports"),
    ("hash/print", "", "print the MAC learning table"),
    (
        "shortcut/print",
        "",
        "list the shortcuts between native ports",
    ),
    (
        "shortcut/revoke",
        "[ID]",
        "end shortcut ID (all); traffic goes through the switch",
    ),
    (
        "hash/setexpire",
        "SECS",
        "set the ageing time of learned addresses",
    ),
    (
        "impair",
        "[PORT [FROM] [OPTS|clear]]",
        "impair frames to PORT (from FROM only): delay=MS jitter=MS loss=PCT dup=PCT reorder=PCT rate=MBIT limit=FRAMES seed=N",
    ),
    (
        "block",
        "[A B]",
        "drop every frame between ports A and B (list blocks)",
    ),
    ("unblock", "A B", "end the block between A and B"),
    (
        "partition",
        "A,B.. [C,D..]..",
        "block every pair of ports in different groups (one group: from all others)",
    ),
    ("heal", "", "end every block and partition"),
    (
        "capture",
        "[PORT] [count=N]",
        "stream the frames of PORT (every port) as pcap on this connection",
    ),
    (
        "status/json",
        "",
        "the LAN as the status page reads it (/api/ports)",
    ),
    ("status/metrics", "", "the Prometheus metrics (/metrics)"),
];

/// An answer: the bytes to send (without the prompt) and what to do next.
#[derive(Debug)]
pub struct Answer {
    pub text: String,
    pub action: Action,
}

/// A failed command: the errno of its answer line, and what was wrong when the errno alone
/// would not say (`1022 Invalid argument: loss: '150' is not a percentage 0..100`).
#[derive(Debug)]
struct Fail(Errno, Option<String>);

impl From<Errno> for Fail {
    fn from(e: Errno) -> Fail {
        Fail(e, None)
    }
}

impl Fail {
    /// `EINVAL`, and why.
    fn invalid(why: impl Into<String>) -> Fail {
        Fail(Errno::EINVAL, Some(why.into()))
    }
}

fn ok_data(lines: Vec<String>) -> Result<Vec<String>, Fail> {
    Ok(lines)
}

fn core_err(e: CoreError) -> Errno {
    Errno(e.errno())
}

fn parse_num<T: std::str::FromStr>(s: Option<&str>) -> Result<T, Errno> {
    s.ok_or(Errno::EINVAL)?.parse().map_err(|_| Errno::EINVAL)
}

/// The error line for `e`.
pub fn error_line(e: Errno) -> String {
    fail_line(e.into())
}

fn fail_line(f: Fail) -> String {
    let why = f.1.map(|w| format!(": {w}")).unwrap_or_default();
    format!("1{:03} {}{why}\n", f.0.0.clamp(0, 999), f.0)
}

/// A port named by its number, or by a word of its description as `port/print` shows it (a
/// node's address or name), or by a MAC address learned on it.
pub fn resolve_port(core: &Core, now_ms: u64, name: &str) -> Result<PortId, String> {
    if let Ok(n) = name.parse::<PortId>() {
        return if core.has_port(n) {
            Ok(n)
        } else {
            Err(format!("no port {n}"))
        };
    }
    let ip: Option<std::net::IpAddr> = name.parse().ok();
    let same = |w: &str| w == name || (ip.is_some() && w.parse().ok() == ip);
    let mut found: Vec<PortId> = core
        .ports()
        .filter(|(_, p)| p.description.split_whitespace().any(same))
        .map(|(id, _)| id)
        .collect();
    if found.is_empty() {
        let mac = name.to_ascii_lowercase();
        found = core
            .table(now_ms)
            .into_iter()
            .filter(|(m, ..)| mac_str(m) == mac)
            .map(|(_, _, p, _)| p)
            .collect();
        found.dedup();
    }
    match found[..] {
        [p] => Ok(p),
        [] => Err(format!("no port has the address, name or MAC '{name}'")),
        _ => Err(format!(
            "'{name}' names several ports ({}): give a port number",
            found
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        )),
    }
}

fn port_arg(core: &Core, info: &Info, name: &str) -> Result<PortId, Fail> {
    resolve_port(core, info.now_ms, name).map_err(|why| Fail(Errno(libc::ENXIO), Some(why)))
}

/// The lines `impair` shows for one impairment.
fn impair_lines(head: String, sh: Option<&Shaper>) -> Vec<String> {
    match sh {
        Some(sh) => vec![
            format!("{head} {}", sh.settings),
            format!("  {}", sh.stats_line()),
        ],
        None => vec![format!("{head} none")],
    }
}

/// `impair` without a port: every impairment; `impair PORT [FROM] …`: the impairment of the
/// frames to PORT (from FROM only), shown, set or cleared.
fn impair(core: &mut Core, info: &Info, args: &[&str]) -> Result<Vec<String>, Fail> {
    let port_head = |id: PortId| format!("Port {id:04}");
    let pair_head = |to: PortId, from: PortId| format!("Port {to:04} from {from:04}");
    let Some(first) = args.first() else {
        let mut out: Vec<String> = Vec::new();
        for (id, p) in core.ports() {
            if let Some(sh) = &p.impair {
                out.extend(impair_lines(port_head(id), Some(sh)));
            }
        }
        for ((from, to), sh) in core.pair_impairments() {
            out.extend(impair_lines(pair_head(to, from), Some(sh)));
        }
        return Ok(out);
    };
    let id = port_arg(core, info, first)?;
    // A second word that is neither an option nor `clear` names the port the frames come
    // from.
    let from = match args.get(1) {
        Some(&w) if w != "clear" && !w.contains('=') => Some(port_arg(core, info, w)?),
        _ => None,
    };
    let rest = &args[1 + usize::from(from.is_some())..];
    let seed = port_seed(core.seed, id) ^ from.map_or(0, |f| port_seed(core.seed, f));
    let settings = match rest {
        [] => {
            return Ok(match from {
                None => impair_lines(
                    port_head(id),
                    core.port(id).and_then(|p| p.impair.as_deref()),
                ),
                Some(f) => impair_lines(pair_head(id, f), core.pair_impairment(f, id)),
            });
        }
        ["clear"] => None,
        opts => Some(Settings::parse(opts, seed).map_err(Fail::invalid)?),
    };
    match from {
        None => core.set_impairment(id, settings),
        Some(f) => core.set_pair_impairment(f, id, settings),
    }
    .map_err(core_err)?;
    Ok(Vec::new())
}

/// `partition G1 G2…`: groups of comma-separated ports.
fn partition(core: &mut Core, info: &Info, args: &[&str]) -> Result<Vec<String>, Fail> {
    let mut groups: Vec<Vec<PortId>> = Vec::new();
    for g in args {
        let mut ids = Vec::new();
        for name in g.split(',').filter(|n| !n.is_empty()) {
            ids.push(port_arg(core, info, name)?);
        }
        groups.push(ids);
    }
    if groups.len() == 1 {
        let rest: Vec<PortId> = core
            .ports()
            .map(|(id, _)| id)
            .filter(|id| !groups[0].contains(id))
            .collect();
        groups.push(rest);
    }
    if groups.is_empty() || groups.iter().any(|g| g.is_empty()) {
        return Err(Fail::invalid("give groups of ports, such as 1,2 3,4"));
    }
    for (i, g) in groups.iter().enumerate() {
        for h in &groups[i + 1..] {
            if let Some(p) = g.iter().find(|p| h.contains(p)) {
                return Err(Fail::invalid(format!("port {p} is in two groups")));
            }
        }
    }
    for (i, g) in groups.iter().enumerate() {
        for h in &groups[i + 1..] {
            for a in g {
                for b in h {
                    core.block(*a, *b).map_err(core_err)?;
                }
            }
        }
    }
    Ok(Vec::new())
}

/// Execute one command line.
pub fn execute(core: &mut Core, info: &Info, line: &str) -> Answer {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Answer {
            text: String::new(),
            action: Action::Continue,
        };
    }
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or("");
    let args: Vec<&str> = words.collect();
    let mut action = Action::Continue;
    let r: Result<Vec<String>, Fail> = match cmd {
        "help" => ok_data(
            HELP.iter()
                .map(|(c, a, d)| format!("{:<20} {:<8} {}", c, a, d))
                .collect(),
        ),
        "showinfo" => ok_data(vec![
            format!("ioth-switch version {}", env!("CARGO_PKG_VERSION")),
            format!("sock dir {}", info.dir),
            format!("numports {} in use {}", info.numports, core.ports().count()),
            format!("hub mode {}", if core.hub { "on" } else { "off" }),
            format!("port lock {}", if core.port_lock { "on" } else { "off" }),
            format!("ageing {} s", core.ageing_ms / 1000),
            format!(
                "learned MACs {} max {} per port {}",
                core.learned(),
                core.max_macs,
                core.max_macs_per_port
            ),
            format!("output queue limit {} bytes per port", info.queue_limit),
            format!("pcap {}", info.pcap.as_deref().unwrap_or("off")),
            format!(
                "shortcuts {} active {}",
                if core.shortcuts_enabled { "on" } else { "off" },
                core.shortcuts().count()
            ),
            format!("seed {}", core.seed),
            format!(
                "http {}",
                info.http.as_deref().map_or("off".into(), |a| format!("http://{a}/"))
            ),
            format!("http node {}", info.http_node.as_deref().unwrap_or("off")),
            format!("uptime {} s", info.uptime_s),
        ]),
        "logout" => {
            action = Action::Logout;
            Ok(Vec::new())
        }
        "shutdown" => {
            action = Action::Shutdown;
            Ok(Vec::new())
        }
        "port/print" | "port/allprint" => port_print(core, &args, cmd == "port/allprint"),
        "port/setvlan" => (|| -> Result<Vec<String>, Fail> {
            let p: PortId = parse_num(args.first().copied())?;
            let v: Vlan = parse_num(args.get(1).copied())?;
            core.set_port_vlan(p, v).map_err(core_err)?;
            Ok(Vec::new())
        })(),
        "port/resetcounter" => (|| -> Result<Vec<String>, Fail> {
            let p = match args.first() {
                Some(s) => Some(parse_num::<PortId>(Some(s))?),
                None => None,
            };
            core.reset_counters(p).map_err(core_err)?;
            Ok(Vec::new())
        })(),
        "vlan/create" => (|| -> Result<Vec<String>, Fail> {
            let v: Vlan = parse_num(args.first().copied())?;
            core.create_vlan(v).map_err(core_err)?;
            Ok(Vec::new())
        })(),
        "vlan/addport" => (|| -> Result<Vec<String>, Fail> {
            let v: Vlan = parse_num(args.first().copied())?;
            let p: PortId = parse_num(args.get(1).copied())?;
            core.vlan_add_port(v, p).map_err(core_err)?;
            Ok(Vec::new())
        })(),
        "vlan/print" => {
            let vlans: Vec<Vlan> = core.vlans().collect();
            ok_data(
                vlans
                    .into_iter()
                    .map(|v| {
                        let untagged: Vec<String> = core
                            .ports()
                            .filter(|(_, p)| p.untagged_vlan == v)
                            .map(|(id, _)| id.to_string())
                            .collect();
                        let tagged: Vec<String> = core
                            .ports()
                            .filter(|(_, p)| p.tagged.contains(&v))
                            .map(|(id, _)| id.to_string())
                            .collect();
                        format!(
                            "VLAN {v:04} untagged [{}] tagged [{}]",
                            untagged.join(" "),
                            tagged.join(" ")
                        )
                    })
                    .collect(),
            )
        }
        "hash/print" => ok_data(
            core.table(info.now_ms)
                .into_iter()
                .map(|(m, v, p, age)| {
                    format!(
                        "Hash: {:04} Addr: {} VLAN {v:04} to port: {p:03} age {} secs",
                        0,
                        mac_str(&m),
                        age / 1000
                    )
                })
                .collect(),
        ),
        "shortcut/print" => ok_data(
            core.shortcuts()
                .map(|(id, s)| {
                    format!(
                        "Shortcut {id:04} port {:03} {} <-> port {:03} {} VLAN {:04} age {} secs cut-through {}",
                        s.a.0,
                        mac_str(&s.a.1),
                        s.b.0,
                        mac_str(&s.b.1),
                        s.vlan,
                        info.now_ms.saturating_sub(s.created_ms) / 1000,
                        u64::from(s.cut.0) + u64::from(s.cut.1)
                    )
                })
                .collect(),
        ),
        "shortcut/revoke" => (|| -> Result<Vec<String>, Fail> {
            match args.first() {
                Some(s) => {
                    let id: u32 = parse_num(Some(s))?;
                    if !core.shortcuts().any(|(i, _)| i == id) {
                        return Err(Errno(libc::ENOENT).into());
                    }
                    core.revoke_shortcut(id);
                }
                None => core.revoke_all(),
            }
            Ok(Vec::new())
        })(),
        "hash/setexpire" => (|| -> Result<Vec<String>, Fail> {
            let s: u64 = parse_num(args.first().copied())?;
            if s == 0 || s > 86_400 * 365 {
                return Err(Errno::EINVAL.into());
            }
            core.ageing_ms = s * 1000;
            Ok(Vec::new())
        })(),
        "impair" => impair(core, info, &args),
        "block" if args.is_empty() => ok_data(
            core.blocks()
                .map(|((a, b), n)| format!("Block port {a:03} <-> port {b:03} dropped {n}"))
                .collect(),
        ),
        "block" | "unblock" => (|| {
            if args.len() != 2 {
                return Err(Fail::invalid("give two ports"));
            }
            let a = port_arg(core, info, args[0])?;
            let b = port_arg(core, info, args[1])?;
            if cmd == "block" {
                core.block(a, b).map_err(core_err)?;
            } else {
                core.unblock(a, b).map_err(core_err)?;
            }
            Ok(Vec::new())
        })(),
        "partition" => partition(core, info, &args),
        "heal" => {
            core.heal();
            Ok(Vec::new())
        }
        "capture" => (|| {
            let mut port = None;
            let mut count = None;
            for a in &args {
                if let Some(n) = a.strip_prefix("count=") {
                    count = Some(n.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        Fail::invalid(format!("count: '{n}' is not a number of frames"))
                    })?);
                } else if port.is_none() {
                    port = Some(port_arg(core, info, a)?);
                } else {
                    return Err(Fail::invalid(format!("'{a}': one port at most")));
                }
            }
            action = Action::Capture { port, count };
            Ok(Vec::new())
        })(),
        "status/json" | "status/metrics" if args.is_empty() => {
            let facts = crate::status::Facts {
                dir: info.dir.clone(),
                uptime_s: info.uptime_s,
                now_ms: info.now_ms,
            };
            let body = if cmd == "status/json" {
                crate::status::ports_json(core, &facts)
            } else {
                crate::status::metrics(core, &facts)
            };
            ok_data(body.lines().map(str::to_string).collect())
        }
        "status/json" | "status/metrics" => Err(Errno::EINVAL.into()),
        _ => Err(Fail(Errno(libc::ENOSYS), None)),
    };
    let text = match r {
        Ok(lines) if lines.is_empty() => "1000 Success\n".to_string(),
        Ok(lines) => {
            let mut t = String::from("0000 DATA END WITH '.'\n");
            for l in lines {
                t.push_str(&l);
                t.push('\n');
            }
            t.push_str(".\n1000 Success\n");
            t
        }
        Err(f) => {
            action = Action::Continue;
            fail_line(f)
        }
    };
    Answer { text, action }
}

fn port_print(core: &Core, args: &[&str], all: bool) -> Result<Vec<String>, Fail> {
    let only: Option<PortId> = match args.first() {
        Some(s) => Some(parse_num(Some(s))?),
        None => None,
    };
    if let Some(p) = only
        && !core.has_port(p)
    {
        return Err(Errno(libc::ENXIO).into());
    }
    let mut out = Vec::new();
    for (id, p) in core.ports() {
        if only.is_some_and(|o| o != id) {
            continue;
        }
        let c = &p.counters;
        out.push(format!(
            "Port {id:04} kind={} untagged_vlan={:04} max_frame={} ACTIVE - {}",
            p.kind.name(),
            p.untagged_vlan,
            p.max_frame,
            p.description
        ));
        out.push(format!(" IN:  pkts {} bytes {}", c.rx_frames, c.rx_bytes));
        out.push(format!(" OUT: pkts {} bytes {}", c.tx_frames, c.tx_bytes));
        let drops: Vec<String> = c.drops().iter().map(|(k, n)| format!("{k} {n}")).collect();
        out.push(format!(" DROP: {}", drops.join(" ")));
        out.push(format!(" QUEUE: bytes {}", p.queued_bytes));
        out.push(format!(
            " MACS: learned {} not_learned {}{}",
            p.learned,
            c.not_learned,
            p.locked_mac
                .map(|m| format!(" locked {}", mac_str(&m)))
                .unwrap_or_default()
        ));
        out.extend(p.detail.iter().map(|d| format!(" {d}")));
        if let Some(sh) = &p.impair {
            out.push(format!(" IMPAIR: {}", sh.settings));
            out.push(format!(" IMPAIRED: {}", sh.stats_line()));
        }
        for ((from, _), sh) in core.pair_impairments().filter(|((_, to), _)| *to == id) {
            out.push(format!(" IMPAIR from {from:04}: {}", sh.settings));
            out.push(format!(" IMPAIRED from {from:04}: {}", sh.stats_line()));
        }
        if all {
            let tagged: Vec<String> = p.tagged.iter().map(|v| v.to_string()).collect();
            out.push(format!(" tagged VLANs [{}]", tagged.join(" ")));
        }
    }
    Ok(out)
}

/// Splits a byte stream into command lines, rejecting over-long ones.
#[derive(Debug, Default)]
pub struct LineBuf {
    buf: Vec<u8>,
    overlong: bool,
}

/// One line out of [`LineBuf`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Text(String),
    TooLong,
}

impl LineBuf {
    /// Feed received bytes; complete lines are appended to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Line>) {
        for &b in bytes {
            if b == b'\n' {
                if self.overlong {
                    out.push(Line::TooLong);
                } else {
                    let s = String::from_utf8_lossy(&self.buf);
                    out.push(Line::Text(s.trim_end_matches('\r').to_string()));
                }
                self.buf.clear();
                self.overlong = false;
            } else if self.buf.len() >= MAX_LINE {
                self.overlong = true;
            } else {
                self.buf.push(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Port, PortKind};

    fn info() -> Info {
        Info {
            dir: "/tmp/x".into(),
            numports: 64,
            ..Default::default()
        }
    }

    #[test]
    fn commands_answer_in_vde_format() {
        let mut c = Core::new(false);
        c.add_port(1, Port::new(PortKind::Native, "hello", 65536))
            .unwrap();
        let a = execute(&mut c, &info(), "port/print");
        assert!(
            a.text
                .starts_with("0000 DATA END WITH '.'\nPort 0001 kind=native")
        );
        assert!(a.text.ends_with("\n.\n1000 Success\n"));
        assert_eq!(
            execute(&mut c, &info(), "vlan/create 7").text,
            "1000 Success\n"
        );
        assert_eq!(
            execute(&mut c, &info(), "vlan/create 7").text,
            "1017 File exists\n"
        );
        assert_eq!(
            execute(&mut c, &info(), "port/setvlan 1 7").text,
            "1000 Success\n"
        );
        assert_eq!(c.port(1).unwrap().untagged_vlan, 7);
        assert!(
            execute(&mut c, &info(), "bogus/cmd x")
                .text
                .starts_with("1038 ")
        );
        assert!(
            execute(&mut c, &info(), "vlan/create")
                .text
                .starts_with("1022 ")
        );
        assert!(
            execute(&mut c, &info(), "port/print 9")
                .text
                .starts_with("1006 ")
        );
        assert_eq!(
            execute(&mut c, &info(), "shutdown").action,
            Action::Shutdown
        );
        assert_eq!(execute(&mut c, &info(), "").text, "");
    }

    #[test]
    fn impairments_and_blocks_by_number_address_or_mac() {
        let mut c = Core::new(false);
        c.seed = 5;
        c.add_port(
            1,
            Port::new(PortKind::Native, "ioth-stackd fd00::5 pid=10", 65536),
        )
        .unwrap();
        c.add_port(
            2,
            Port::new(PortKind::Native, "ioth-stackd web pid=11", 65536),
        )
        .unwrap();
        c.add_port(3, Port::new(PortKind::Vde, "qemu", 1518))
            .unwrap();
        let mut out = Vec::new();
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 0x33, 8, 0]);
        c.handle_frame(3, &f, 0, &mut out);
        let ok = |c: &mut Core, cmd: &str| {
            let t = execute(c, &info(), cmd).text;
            assert!(t.ends_with("1000 Success\n"), "{cmd}: {t}");
            t
        };
        ok(&mut c, "impair fd00:0::5 delay=10 loss=1");
        ok(&mut c, "impair web rate=100mbit");
        ok(&mut c, "impair 02:00:00:00:00:33 dup=2 seed=77");
        let t = ok(&mut c, "impair");
        assert!(
            t.contains("Port 0001 delay=10ms jitter=0ms loss=1% dup=0%"),
            "{t}"
        );
        assert!(
            t.contains(&format!("seed={}", crate::impair::port_seed(5, 1))),
            "{t}"
        );
        assert!(
            t.contains("Port 0002 delay=0ms") && t.contains("rate=100000kbit"),
            "{t}"
        );
        assert!(t.contains("dup=2%") && t.contains("seed=77"), "{t}");
        assert!(t.contains("  frames 0 sent 0 lost 0"), "{t}");
        let t = ok(&mut c, "port/print 1");
        assert!(
            t.contains(" IMPAIR: delay=10ms") && t.contains(" IMPAIRED: frames 0"),
            "{t}"
        );
        ok(&mut c, "impair 1 clear");
        assert!(ok(&mut c, "impair 1").contains("Port 0001 none"));
        for (cmd, start, why) in [
            ("impair 9 delay=1", "1006 ", "no port 9"),
            ("impair fd00::6 delay=1", "1006 ", "no port has"),
            (
                "impair 1 loss=150",
                "1022 ",
                "loss: '150' is not a percentage",
            ),
            ("impair 1 colour=red", "1022 ", "unknown option 'colour'"),
            ("impair 1", "", ""),
            ("block 1", "1022 ", "give two ports"),
            ("block 1 1", "1022 ", ""),
            ("unblock 1 2", "1002 ", ""),
            ("partition 1,2 2,3", "1022 ", "port 2 is in two groups"),
            ("partition 1,x", "1006 ", "'x'"),
        ] {
            let t = execute(&mut c, &info(), cmd).text;
            assert!(t.starts_with(start) && t.contains(why), "{cmd}: {t}");
        }
        ok(&mut c, "block fd00::5 web");
        assert!(c.blocked(1, 2));
        ok(&mut c, "heal");
        ok(&mut c, "partition 3");
        assert!(c.blocked(3, 1) && c.blocked(3, 2) && !c.blocked(1, 2));
        let t = ok(&mut c, "block");
        assert!(t.contains("Block port 001 <-> port 003 dropped 0"), "{t}");
        ok(&mut c, "heal");
        ok(&mut c, "partition 1 2,3");
        assert!(c.blocked(1, 2) && c.blocked(1, 3) && !c.blocked(2, 3));
        // Between two ports, one way.
        ok(&mut c, "impair web fd00::5 delay=5");
        assert!(c.pair_impairment(1, 2).is_some() && c.pair_impairment(2, 1).is_none());
        let t = ok(&mut c, "impair 2 1");
        assert!(t.contains("Port 0002 from 0001 delay=5ms"), "{t}");
        assert!(ok(&mut c, "impair").contains("Port 0002 from 0001 delay=5ms"));
        assert!(ok(&mut c, "port/print 2").contains(" IMPAIR from 0001: delay=5ms"));
        assert!(ok(&mut c, "impair 1 2").contains("Port 0001 from 0002 none"));
        let t = execute(&mut c, &info(), "impair 2 2 delay=1").text;
        assert!(t.starts_with("1022 "), "{t}");
        ok(&mut c, "impair 2 1 clear");
        assert!(c.pair_impairments().next().is_none());
    }

    #[test]
    fn line_splitting_and_overlong() {
        let mut lb = LineBuf::default();
        let mut out = Vec::new();
        lb.feed(b"help\r\nshow", &mut out);
        lb.feed(b"info\n", &mut out);
        lb.feed(&vec![b'x'; 5000], &mut out);
        lb.feed(b"\nhelp\n", &mut out);
        assert_eq!(
            out,
            vec![
                Line::Text("help".into()),
                Line::Text("showinfo".into()),
                Line::TooLong,
                Line::Text("help".into())
            ]
        );
    }
}
