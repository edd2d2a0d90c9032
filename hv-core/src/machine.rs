//! Ending the machine: under QEMU through the isa-debug-exit port (SPEC.md §8),
//! after which the CPU halts (on hardware without that device, it just halts).

use hypercall_abi::machine::DEBUG_EXIT_PORT;

use crate::arch::cpu::{halt_forever, outl};

/// Ends the machine with `code` (one of `hypercall_abi::machine::EXIT_*`).
pub fn exit(code: u32) -> ! {
    // SAFETY: the isa-debug-exit port is hv-core's; writing it ends QEMU, and on
    // a machine without the device the write goes nowhere.
    unsafe { outl(DEBUG_EXIT_PORT, code) };
    halt_forever()
}
