//! The stack daemon's control protocol decoders on arbitrary bytes: no panic.
#![no_main]

use ioth_common::ctl::{self, AcceptRecord, DgramHeader, Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        let _ = Request::decode(&r.encode());
    }
    if let Ok((seq, r)) = Reply::decode_seq(data) {
        assert_eq!(Reply::decode_seq(&r.encode_seq(seq)), Ok((seq, r)));
    }
    let _ = (ctl::is_one_way(data), ctl::request_seq(data));
    let _ = AcceptRecord::decode_error(data);
    if let Ok(a) = AcceptRecord::decode(data) {
        assert_eq!(AcceptRecord::decode(&a.encode()), Ok(a));
    }
    if let Ok(h) = DgramHeader::decode(data) {
        assert_eq!(DgramHeader::decode(&h.encode()), Ok(h));
    }
});
