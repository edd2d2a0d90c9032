//! The one place the kit calls `set_callbacks` (HC-15): the event callback
//! ([`crate::events`]) and the user-mode syscall callback ([`crate::user`])
//! are registered together, so that installing one never drops the other.
//!
//! # Invariants
//! - [`CALLBACKS`] holds what was last registered successfully; each slot is
//!   0 or the address of one of the kit's entry stubs (`crate::traps`).
#![deny(unsafe_code)]

use hypercall_abi::Errno;
use spin::Mutex;

/// `(event, syscall)` entry points as last registered (0: none).
static CALLBACKS: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// Registers `(event, syscall)` with the hypervisor and records them.
#[allow(unsafe_code)]
fn apply(state: &mut (u64, u64), event: u64, syscall: u64) -> Result<(), Errno> {
    // SAFETY: both addresses are 0 or entry stubs of `crate::traps` (the only
    // callers pass `traps::event_entry_point` / `traps::syscall_entry_point`),
    // which follow the callback protocol: entered with rsp at an
    // `ExceptionFrame`, they leave through the `iret` stub (HC-13, EVT-5, MM-7).
    unsafe { crate::hypercall::set_callbacks(event, 0, syscall)? };
    *state = (event, syscall);
    Ok(())
}

/// Makes the kit's event stub the event callback, keeping the syscall one.
pub(crate) fn install_event() -> Result<(), Errno> {
    let mut state = CALLBACKS.lock();
    let syscall = state.1;
    apply(&mut state, crate::traps::event_entry_point(), syscall)
}

/// Makes the kit's syscall stub the syscall callback, keeping the event one.
pub(crate) fn install_syscall() -> Result<(), Errno> {
    let mut state = CALLBACKS.lock();
    let event = state.0;
    apply(&mut state, event, crate::traps::syscall_entry_point())
}
