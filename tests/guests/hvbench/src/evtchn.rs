//! The event-channel figures (SPEC.md §8, EVT-2 .. EVT-6):
//! - `evtchn_send_cycles`: `EVTCHNOP_SEND` on an IPI port to ourselves with
//!   upcalls masked, clearing the pending bit after each send so every send
//!   does the whole work (as the Xen figure: "pending cleared each time");
//! - `evtchn_send_upcall_return_cycles`: the same send with upcalls enabled:
//!   send → upcall → handler → `iret` back, per round trip;
//! - `evtchn_pingpong_same_cpu_cycles`: a round trip to the echo domain on
//!   the same CPU: send → echo (blocked) wakes → it sends back → we (blocked)
//!   wake.

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::evtchn::EVTCHNSTAT_INTERDOMAIN;
use pv_guest_kit::bench::measure;
use pv_guest_kit::events::{self, Port};

use crate::report;

/// Events the IPI handler saw.
static IPIS: AtomicU64 = AtomicU64::new(0);
/// Events the echo domain sent us.
static REPLIES: AtomicU64 = AtomicU64::new(0);

fn on_ipi(_port: Port) {
    IPIS.fetch_add(1, Ordering::Relaxed);
}

fn on_reply(_port: Port) {
    REPLIES.fetch_add(1, Ordering::Relaxed);
}

/// Unwraps an event operation.
fn ok<T>(result: Result<T, hypercall_abi::Errno>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("hvbench: {what}: {err}"),
    }
}

/// The figures that need no second domain. Upcalls are masked on entry
/// (hvbench keeps them masked through the earlier figures) and enabled on
/// return.
pub fn run_local() {
    let ipi = ok(events::bind_ipi(), "binding an IPI port");
    events::set_handler(ipi, on_ipi);

    // Masked: each send sets the pending bit, the selector and
    // upcall_pending, and returns without an upcall.
    events::disable();
    let mut failures = 0u32;
    let stats = measure(32, 1000, || {
        failures += u32::from(events::notify(ipi).is_err());
        events::clear_pending(ipi);
    });
    report(
        "evtchn_send_cycles",
        "event channel send, pending cleared each time",
        stats,
        1,
    );
    assert_eq!(failures, 0, "hvbench: {failures} sends failed");
    assert_eq!(IPIS.load(Ordering::Relaxed), 0, "an upcall while masked");

    // Enabled: each send comes back as an upcall before the call returns.
    events::enable();
    let before = IPIS.load(Ordering::Relaxed);
    let stats = measure(32, 1000, || {
        failures += u32::from(events::notify(ipi).is_err());
    });
    report(
        "evtchn_send_upcall_return_cycles",
        "send + event upcall + iret back",
        stats,
        1,
    );
    let seen = IPIS.load(Ordering::Relaxed) - before;
    assert_eq!(failures, 0, "hvbench: {failures} sends failed");
    assert_eq!(seen, 32 * 1000, "hvbench: {seen} upcalls for 32000 sends");
    ok(events::close(ipi), "closing the IPI port");
}

/// The round trip to the echo domain through `port` (allocated for it at
/// start of day).
pub fn run_pingpong(port: Port) {
    events::set_handler(port, on_reply);
    // The echo domain notifies once it has bound the port.
    events::wait_until(|| events::status(port).is_ok_and(|s| s.status == EVTCHNSTAT_INTERDOMAIN));
    let mut failures = 0u32;
    let stats = measure(16, 100, || {
        let before = REPLIES.load(Ordering::Relaxed);
        failures += u32::from(events::notify(port).is_err());
        events::wait_until(|| REPLIES.load(Ordering::Relaxed) != before);
    });
    report(
        "evtchn_pingpong_same_cpu_cycles",
        "event round trip to another domain on the same CPU",
        stats,
        1,
    );
    assert_eq!(failures, 0, "hvbench: {failures} sends failed");
}
