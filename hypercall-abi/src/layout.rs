//! The x86_64 address-space split between hv-core and guests (SPEC.md §4, MM-1).
//!
//! Guest kernel and guest user both run in ring 3. The hypervisor owns a fixed
//! set of top-level (L4) page-table slots in *every* address space; a guest can
//! never map, read or write through them. Everything else is the guest's.

/// First L4 slot reserved for the hypervisor (`0xffff_8000_0000_0000`).
pub const HV_L4_FIRST: usize = 256;
/// Last L4 slot of the low reserved block (inclusive; `..0xffff_8800_0000_0000`).
pub const HV_L4_LAST: usize = 271;
/// The hypervisor image lives in the top L4 slot (`0xffff_ff80_0000_0000..`).
pub const HV_L4_IMAGE: usize = 511;

/// Whether an L4 slot is reserved for the hypervisor.
pub const fn is_hv_l4_slot(slot: usize) -> bool {
    (slot >= HV_L4_FIRST && slot <= HV_L4_LAST) || slot == HV_L4_IMAGE
}

/// End (exclusive) of the lower canonical half.
pub const LOWER_HALF_END: u64 = 0x0000_8000_0000_0000;
/// Start of the guest's part of the upper half (L4 slot 272).
pub const GUEST_UPPER_START: u64 = 0xffff_8800_0000_0000;
/// End (exclusive) of the guest's part of the upper half (L4 slot 511 is the hypervisor's).
pub const GUEST_UPPER_END: u64 = 0xffff_ff80_0000_0000;

/// Read-only machine-to-physical table, mapped into every guest (MM-3; from ABI 0.2).
pub const M2P_VIRT_START: u64 = 0xffff_8000_0000_0000;

/// Hardware code selector of guest (ring-3, 64-bit) code, kernel and user alike.
pub const GUEST_CS: u64 = 0x23;
/// Hardware stack selector of guest code.
pub const GUEST_SS: u64 = 0x1b;

/// RFLAGS bits a guest may set through `iret` or a bounce frame: CF, PF, AF, ZF,
/// SF, DF, OF. The hypervisor always sets IF and clears IOPL, TF, NT, RF, AC, VM.
pub const GUEST_RFLAGS_MASK: u64 = 0x0cd5;
/// RFLAGS.IF, always set while a guest runs.
pub const RFLAGS_IF: u64 = 1 << 9;

/// Whether `va` is an address a guest may use: canonical and outside every
/// hypervisor slot (HC-5).
pub const fn is_guest_address(va: u64) -> bool {
    va < LOWER_HALF_END || (va >= GUEST_UPPER_START && va < GUEST_UPPER_END)
}

/// Whether `[va, va + len)` lies wholly in guest address space (HC-5). An empty
/// range is valid when `va` itself is a guest address or the end of a guest region.
pub const fn is_guest_range(va: u64, len: u64) -> bool {
    let Some(end) = va.checked_add(len) else {
        return false;
    };
    (end <= LOWER_HALF_END) || (va >= GUEST_UPPER_START && end <= GUEST_UPPER_END)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_slots() {
        assert!(!is_hv_l4_slot(0));
        assert!(!is_hv_l4_slot(255));
        assert!(is_hv_l4_slot(256));
        assert!(is_hv_l4_slot(271));
        assert!(!is_hv_l4_slot(272));
        assert!(!is_hv_l4_slot(510));
        assert!(is_hv_l4_slot(511));
        assert_eq!(GUEST_UPPER_START, 0xffff_0000_0000_0000 | (272u64 << 39));
        assert_eq!(GUEST_UPPER_END, 0xffff_0000_0000_0000 | (511u64 << 39));
    }

    #[test]
    fn guest_ranges() {
        assert!(is_guest_range(0x40_0000, 4096));
        assert!(is_guest_range(LOWER_HALF_END - 8, 8));
        assert!(!is_guest_range(LOWER_HALF_END - 8, 9));
        assert!(!is_guest_range(0xffff_8000_0000_0000, 8));
        assert!(!is_guest_range(0xffff_ffff_8000_0000, 8));
        assert!(!is_guest_range(u64::MAX, 2));
        assert!(is_guest_range(GUEST_UPPER_START, 4096));
        assert!(!is_guest_range(GUEST_UPPER_END - 8, 16));
        assert!(!is_guest_address(0x0000_8000_0000_0000));
        assert!(!is_guest_address(0xffff_ffff_ffff_f000));
    }
}
