//! How hv-core ends a machine under QEMU (SPEC.md §8, HV-3): the value it
//! writes to the isa-debug-exit port. QEMU then exits with status `(v << 1) | 1`.

/// I/O port of QEMU's `isa-debug-exit` device (`iobase=0xf4,iosize=0x04`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The driver domain powered the machine off (or every domain ended): status 33.
pub const EXIT_POWEROFF: u32 = 0x10;
/// hv-core panicked: status 35.
pub const EXIT_PANIC: u32 = 0x11;
/// The driver domain asked for a reboot; under QEMU the machine ends: status 37.
pub const EXIT_REBOOT: u32 = 0x12;
/// The driver domain crashed, so the machine cannot go on: status 39.
pub const EXIT_DRIVER_DOMAIN_CRASHED: u32 = 0x13;

/// The QEMU process exit status that results from writing `value`.
pub const fn qemu_status(value: u32) -> i32 {
    (((value << 1) | 1) & 0xff) as i32
}
