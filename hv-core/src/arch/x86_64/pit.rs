//! The legacy PIT (8254), used once at boot as a known-frequency reference to
//! calibrate the TSC and the local APIC timer.

use super::cpu::{inb, outb};

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;

/// Runs `during` while PIT channel 2 counts down `ticks` (at most 65535) of
/// its 1.193182 MHz clock, i.e. returns once that much real time has passed.
pub fn wait_ticks(ticks: u16, mut during: impl FnMut()) {
    // SAFETY: port 0x61 (speaker/gate), 0x43 (PIT command) and 0x42 (channel
    // 2) belong to the PIT, which hv-core owns and uses only here, at boot.
    unsafe {
        let gate = inb(0x61);
        outb(0x61, (gate & !0x02) | 0x01); // gate on, speaker off
        outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0
        outb(0x42, ticks as u8);
        outb(0x42, (ticks >> 8) as u8);
        // Restart the count: toggle the gate.
        let g = inb(0x61);
        outb(0x61, g & !0x01);
        outb(0x61, g | 0x01);
        while inb(0x61) & 0x20 == 0 {
            during();
        }
        outb(0x61, gate);
    }
}
