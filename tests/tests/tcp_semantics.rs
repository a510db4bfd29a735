//! TCP as a program sees it where ioth used to differ from the kernel (issue 16): a reset
//! makes `read`/`recv`/`recvmsg` fail with `ECONNRESET` once (after any data still unread,
//! and not after a FIN), `SO_ERROR` takes the error first; the first write after a reset
//! fails with `ECONNRESET` and no `SIGPIPE`, the next with `EPIPE` and `SIGPIPE` (`send`,
//! `write`, `sendmsg`); a port closed first stays busy for
//! a `bind` without `SO_REUSEADDR` (TIME_WAIT, and FIN-WAIT while the peer has not closed)
//! and `SO_REUSEADDR` frees it; `getsockopt(SO_BINDTODEVICE)` answers an empty name.
//!
//! The same script (`tcp_semantics.py`) runs over the kernel's loopback and as an ioth node,
//! IPv6 and IPv4, in this test run: what is expected is what the kernel does.

use ioth_e2e::*;

#[test]
fn resets_time_wait_and_options_as_the_kernel_has_them() {
    if !have("python3") {
        return skip("python3 missing");
    }
    same_as_the_kernel(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tcp_semantics.py"),
        "tcpsem",
        &[
            ("::1", "fd00::31/64", "fd00::31"),
            ("127.0.0.1", "10.3.0.31/24", "10.3.0.31"),
        ],
        // The kernel's answers are the ones the issue describes.
        &[
            "rst_read: ECONNRESET",
            "rst_unread_then: ECONNRESET",
            "rst_send: ECONNRESET",
            "rst_send_sigpipe: 0",
            "rst_send_again: EPIPE",
            "rst_send_again_sigpipe: 1",
            "rst_sendfile: ECONNRESET",
            "rst_sendfile_again: EPIPE",
            "rst_splice: ECONNRESET",
            "rst_splice_again: EPIPE",
            "fin_then_rst_read: b''",
            "time_wait_bind: EADDRINUSE",
            "time_wait_bind_reuseaddr: None",
        ],
    );
}
