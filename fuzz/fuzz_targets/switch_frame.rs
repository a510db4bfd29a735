//! The switch core on arbitrary frames: a few ports with VLANs, each input split into frames
//! (`[ingress port, len, bytes...]`). No panic, nothing sent back to the ingress port, and
//! every copy fits its destination port.
#![no_main]

use ioth_switch::core::{Core, Port, PortKind, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut core = Core::new(data.first().is_some_and(|b| b & 0x80 != 0));
    for (i, max) in [(1u32, 1518usize), (2, 65536), (3, 64), (4, 9000)] {
        let kind = if i % 2 == 0 {
            PortKind::Native
        } else {
            PortKind::Vde
        };
        let _ = core.add_port(i, Port::new(kind, "fuzz", max));
    }
    let _ = core.create_vlan(5);
    let _ = core.vlan_add_port(5, 2);
    let _ = core.set_port_vlan(4, 5);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut now = 0u64;
    while rest.len() >= 2 {
        let ingress = u32::from(rest[0] % 6);
        let len = usize::from(rest[1]) * 8 % (rest.len() - 1);
        let frame = &rest[2.min(rest.len())..(2 + len).min(rest.len())];
        rest = &rest[(2 + len).min(rest.len())..];
        now += 1000;
        core.handle_frame(ingress, frame, now, &mut out);
        for e in &out {
            assert_ne!(e.port, ingress);
            let bytes = render(frame, e.tagging, &mut buf);
            assert!(bytes.len() <= core.port(e.port).unwrap().max_frame);
        }
        core.expire(now);
    }
    let _ = core.table(now);
});
