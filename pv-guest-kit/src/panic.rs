//! The panic handler of every guest kernel (kernel target only): prints
//! `panic: <message> at <file>:<line>`, flushes the console and shuts the
//! domain down with `SHUTDOWN_CRASH`.
#![forbid(unsafe_code)]

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use hypercall_abi::sched::SHUTDOWN_CRASH;

use crate::hypercall::shutdown;

/// Set by the first panic: a panic while reporting one skips the report.
static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if !PANICKING.swap(true, Ordering::Relaxed) {
        // Whatever was pending goes out first, on its own line.
        crate::console::flush();
        match info.location() {
            Some(at) => crate::println!("panic: {} at {}:{}", info.message(), at.file(), at.line()),
            None => crate::println!("panic: {}", info.message()),
        }
    }
    shutdown(SHUTDOWN_CRASH)
}
