//! The shim's only output: debug lines when `IOTH_LOG` is set (any value but `0`), and one
//! error line per process when the node cannot be used.
//!
//! Lines go to fd 2 with one raw `write(2)`, prefixed `libioth[pid]: ` (debug) or `libioth: `
//! (the error line), so they never pass through the application's stdio buffers or our hooks.

use ioth_common::sys;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

static ENABLED: AtomicU8 = AtomicU8::new(0);
static ERROR_PID: AtomicU32 = AtomicU32::new(0);

/// Whether `IOTH_LOG` asks for debug lines (read once per process image).
pub fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var_os("IOTH_LOG").is_some_and(|v| !v.is_empty() && v != "0");
            ENABLED.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

fn emit(line: String) {
    let _ = sys::write_all(2, line.as_bytes());
}

/// Write one debug line (use the [`debug!`](crate::debug) macro).
pub fn debug_line(msg: &str) {
    emit(format!("libioth[{}]: {msg}\n", sys::getpid()));
}

/// Print `libioth: <msg>` once per process, whatever `IOTH_LOG` says.
pub fn error_once(msg: &str) {
    let pid = sys::getpid();
    if ERROR_PID.swap(pid, Ordering::Relaxed) != pid {
        emit(format!("libioth: {msg}\n"));
    } else {
        crate::debug!("(again) {msg}");
    }
}

/// Panics in the shim are caught at the hook boundary and become an errno; std's default hook
/// would first print them on the host program's stderr. This hook prints only with
/// `IOTH_LOG`, as a debug line. It is the panic hook of the shim's own copy of std (a cdylib
/// links its own), so a Rust host program keeps its own hook.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        if enabled() {
            debug_line(&format!("panic (caught, the call fails): {info}"));
        }
    }));
}

/// Debug logging, only evaluated when `IOTH_LOG` is set.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => {
        if $crate::log::enabled() {
            $crate::log::debug_line(&format!($($t)*));
        }
    };
}
