//! A shortcut peer cannot kill a stack daemon (issue 10, item 3). An attacker running as
//! another user (`nobody`, through `setpriv`) plugs into a switch whose native socket anyone
//! may open, gets a shortcut to a victim node and attacks its shared-memory rings
//! (`ioth-attack-ring`: rings it truncates after handing them over, the victim's own ring
//! shrunk, grown and written, malformed records). After each attack the victim must be
//! alive, answer `iothctl info`, and carry a TCP stream from an honest node intact (sha256).
//!
//! The switch's own rings (a native port's, `NATIVE_FLAG_RINGS`) meet the same attacks from
//! a port client: the switch must stay up, lose at most the attacker's port, and carry the
//! honest nodes' streams (which go through it: no shortcuts there) intact.

use ioth_e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn counter(ctl: &Path, key: &str) -> u64 {
    info_field(ctl, key).parse().unwrap()
}

/// Send random bytes from node `from` to node `to` (at `to_ip`) and check they arrived.
fn transfer(tmp: &TempDir, from: &Path, to: &Path, to_ip: &str, port: u16, len: usize) {
    let mut data = vec![0u8; len];
    ioth_common::sys::getrandom(&mut data).unwrap();
    checked_stream(tmp, (from, to), (to_ip, port), &data, || {});
}

struct Lab {
    tmp: TempDir,
    sw: PathBuf,
    _switch: Daemon,
    victim: Node,
    honest: Node,
}

const VICTIM_V4: &str = "10.77.0.1";

/// A switch anyone may plug into, a victim and an honest node that already talk (so the
/// switch knows the victim's MAC); `None` where an attacker cannot run as another user.
fn lab(tag: &str) -> Option<Lab> {
    lab_with(tag, &[])
}

fn lab_with(tag: &str, switch_args: &[&str]) -> Option<Lab> {
    if ioth_common::sys::geteuid() != 0 || !have("setpriv") {
        skip("needs root and setpriv to run the attacker as another user");
        return None;
    }
    let tmp = TempDir::new(tag);
    let sw = tmp.join("sw");
    let _switch = ioth_switch(&sw, &[&["--mode", "0666"], switch_args].concat());
    let victim = node(&sw, "fd00::a1/64,10.77.0.1/24", &tmp.join("victim.ctl"));
    let honest = node(&sw, "fd00::a2/64,10.77.0.2/24", &tmp.join("honest.ctl"));
    let lab = Lab {
        tmp,
        sw,
        _switch,
        victim,
        honest,
    };
    transfer(
        &lab.tmp,
        &lab.honest.ctl,
        &lab.victim.ctl,
        "fd00::a1",
        7000,
        1 << 20,
    );
    Some(lab)
}

/// Run the attacker as `nobody` against the victim; its report.
fn attack(lab: &Lab, mode: &str, id: u8) -> String {
    let mac = info_field(&lab.victim.ctl, "mac");
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("ioth-attack-ring"))
        .arg(&lab.sw)
        .args([&mac, VICTIM_V4, mode, &id.to_string()]);
    let o = run_for(30, c);
    let out = text(&o);
    assert!(o.status.success(), "attacker: {out}");
    assert!(out.contains("attack done"), "{out}");
    eprintln!("{out}");
    out
}

/// Whether `pid` still runs; if not, how it ended (a daemon's parent is gone, so nobody may
/// have reaped it yet: a zombie counts as dead).
fn running(pid: i32) -> Result<(), String> {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Err("gone".into());
    };
    // After "pid (comm)": state is the first field, the wait status the 50th.
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    if f[0] != "Z" && f[0] != "X" {
        return Ok(());
    }
    let status: i32 = f.get(49).and_then(|s| s.trim().parse().ok()).unwrap_or(-1);
    Err(format!(
        "dead, wait status {status:#x} (signal {})",
        status & 0x7f
    ))
}

/// The victim survived: alive, answering, and moving an honest node's data intact.
fn still_serves(lab: &Lab, port: u16) {
    std::thread::sleep(std::time::Duration::from_millis(200));
    let pid = lab.victim.daemon.pid;
    running(pid).unwrap_or_else(|e| panic!("the victim daemon is {e}"));
    node_info(&lab.victim.ctl);
    transfer(
        &lab.tmp,
        &lab.honest.ctl,
        &lab.victim.ctl,
        "fd00::a1",
        port,
        4 << 20,
    );
    transfer(
        &lab.tmp,
        &lab.victim.ctl,
        &lab.honest.ctl,
        "fd00::a2",
        port + 1,
        4 << 20,
    );
    running(pid).unwrap_or_else(|e| panic!("the victim daemon is {e}"));
}

#[test]
fn rings_the_peer_truncates_after_handing_them_over_are_refused() {
    let Some(lab) = lab("ring-unsealed") else {
        return;
    };
    let out = attack(&lab, "unsealed", 11);
    still_serves(&lab, 7010);
    // Refused at once: the shortcut ended, counted.
    assert!(out.contains("the victim ended the shortcut"), "{out}");
    assert!(counter(&lab.victim.ctl, "shortcut_malformed") >= 1);
}

#[test]
fn the_peer_can_neither_shrink_nor_grow_nor_write_the_daemons_ring() {
    let Some(lab) = lab("ring-shrink") else {
        return;
    };
    let out = attack(&lab, "shrink", 12);
    still_serves(&lab, 7020);
    assert_eq!(
        out.matches("shrunk false grown false written false")
            .count(),
        2,
        "{out}"
    );
}

#[test]
fn malformed_records_end_the_shortcut_at_once() {
    let Some(lab) = lab("ring-garbage") else {
        return;
    };
    let out = attack(&lab, "garbage", 13);
    still_serves(&lab, 7030);
    assert!(out.contains("the victim ended the shortcut"), "{out}");
    assert!(counter(&lab.victim.ctl, "shortcut_malformed") >= 1);
}

/// A doorbell is written into only if it is an eventfd: one end of a socketpair handed
/// over as the attacker's doorbell ends the shortcut before the victim writes a byte into
/// it. And the victim's own doorbell, filled to the brim by the attacker, costs the victim
/// nothing.
#[test]
fn the_peer_cannot_make_the_daemon_write_into_a_socket_for_a_doorbell() {
    let Some(lab) = lab("ring-bell") else {
        return;
    };
    let before = counter(&lab.victim.ctl, "shortcut_malformed");
    let out = attack(&lab, "bell", 14);
    assert!(
        out.contains("victim's doorbell: anon_inode:[eventfd]"),
        "{out}"
    );
    assert!(out.contains("filled the victim's doorbell: true"), "{out}");
    assert!(out.contains("our doorbell socket got 0 bytes"), "{out}");
    assert!(out.contains("the victim ended the shortcut"), "{out}");
    assert!(counter(&lab.victim.ctl, "shortcut_malformed") > before);
    still_serves(&lab, 7070);
}

/// The attacks on the switch's rings, one after another on one switch.
#[test]
fn a_port_client_cannot_kill_the_switch_through_its_rings() {
    let Some(lab) = lab_with("ring-switch", &["--no-shortcuts"]) else {
        return;
    };
    let alive = |lab: &Lab| {
        running(lab._switch.pid).unwrap_or_else(|e| panic!("the switch is {e}"));
        assert_eq!(info_field(&lab.victim.ctl, "switch_rings"), "1");
    };
    alive(&lab);
    // Refused: no half comes back, and nothing maps what the attacker pulls away.
    let out = attack(&lab, "switch-unsealed", 21);
    assert!(out.contains("no rings from the switch"), "{out}");
    still_serves(&lab, 7040);
    alive(&lab);
    // The switch's memfds are sealed: the attacker can change none of them.
    let out = attack(&lab, "switch-shrink", 22);
    assert_eq!(
        out.matches("shrunk false grown false written false")
            .count(),
        2,
        "{out}"
    );
    still_serves(&lab, 7050);
    alive(&lab);
    // Malformed records: the attacker's port is gone at once, the others stay.
    let out = attack(&lab, "switch-garbage", 23);
    assert!(out.contains("the switch removed the port"), "{out}");
    assert!(!switch_ctl(&lab.sw, "port/print").contains("ioth-attack-ring"));
    still_serves(&lab, 7060);
    alive(&lab);
}
