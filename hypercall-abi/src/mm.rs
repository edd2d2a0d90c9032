//! Guest page tables (SPEC.md §7, MM-*): `mmu_update`, `update_va_mapping`,
//! `mmuext_op`, and the rules every page-table entry must follow.
//!
//! A PV guest owns real x86_64 page tables holding machine frame numbers. It
//! reads them directly; it changes them only through these hypercalls, which
//! validate every entry against the frame table.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// One `mmu_update` request, `[GUEST]`, IN.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct MmuUpdate {
    /// Low 2 bits: the command (`MMU_*`). The rest: for `MMU_NORMAL_PT_UPDATE`,
    /// the machine address of the 8-byte entry to write; for
    /// `MMU_MACHPHYS_UPDATE`, the machine address of the frame (mfn << 12).
    pub ptr: u64,
    /// The new entry, or for `MMU_MACHPHYS_UPDATE` the pfn to record.
    pub val: u64,
}
const _: () = assert!(core::mem::size_of::<MmuUpdate>() == 16);
const _: () = assert!(core::mem::offset_of!(MmuUpdate, val) == 8);

/// `MmuUpdate.ptr` command: write a page-table entry (validated).
pub const MMU_NORMAL_PT_UPDATE: u64 = 0;
/// `MmuUpdate.ptr` command: set `M2P[mfn] = val` for a frame the caller owns.
pub const MMU_MACHPHYS_UPDATE: u64 = 1;
/// Mask of the command bits in `MmuUpdate.ptr`.
pub const MMU_CMD_MASK: u64 = 3;

/// Largest `count` for `mmu_update` and `mmuext_op` (`-E2BIG` beyond).
pub const MMU_BATCH_MAX: u64 = 4096;

/// `update_va_mapping` flags: no TLB flush.
pub const UVMF_NONE: u64 = 0;
/// `update_va_mapping` flags: flush the whole TLB afterwards.
pub const UVMF_TLB_FLUSH: u64 = 1;
/// `update_va_mapping` flags: invalidate the one address afterwards.
pub const UVMF_INVLPG: u64 = 2;
/// Mask of the flush-type bits.
pub const UVMF_FLUSHTYPE_MASK: u64 = 3;
/// `update_va_mapping` flags: flush on every vCPU of the domain, not only the caller's.
pub const UVMF_ALL: u64 = 4;

/// One `mmuext_op` operation, `[GUEST]`, IN.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct MmuextOp {
    /// `MMUEXT_*`.
    pub cmd: u32,
    /// Must be zero.
    pub pad: u32,
    /// mfn (pin, unpin, base pointers, clear/copy destination) or linear address (invlpg).
    pub arg1: u64,
    /// Source mfn for `MMUEXT_COPY_PAGE`; otherwise must be zero.
    pub arg2: u64,
}
const _: () = assert!(core::mem::size_of::<MmuextOp>() == 24);
const _: () = assert!(core::mem::offset_of!(MmuextOp, arg1) == 8);
const _: () = assert!(core::mem::offset_of!(MmuextOp, arg2) == 16);

/// Validate the frame as an L1 table and pin it.
pub const MMUEXT_PIN_L1_TABLE: u32 = 0;
/// Validate the frame as an L2 table and pin it.
pub const MMUEXT_PIN_L2_TABLE: u32 = 1;
/// Validate the frame as an L3 table and pin it.
pub const MMUEXT_PIN_L3_TABLE: u32 = 2;
/// Validate the frame as an L4 table and pin it.
pub const MMUEXT_PIN_L4_TABLE: u32 = 3;
/// Unpin a pinned table (`-EBUSY` while it is a vCPU's base pointer).
pub const MMUEXT_UNPIN_TABLE: u32 = 4;
/// Switch the caller's kernel address space to the L4 at `arg1`.
pub const MMUEXT_NEW_BASEPTR: u32 = 5;
/// Flush the caller's TLB.
pub const MMUEXT_TLB_FLUSH_LOCAL: u32 = 6;
/// Invalidate the linear address `arg1` in the caller's TLB.
pub const MMUEXT_INVLPG_LOCAL: u32 = 7;
/// Flush the TLBs of the domain's vCPUs (`arg2` ignored in ABI 0.2: all of them).
pub const MMUEXT_TLB_FLUSH_MULTI: u32 = 8;
/// Invalidate `arg1` on the domain's vCPUs.
pub const MMUEXT_INVLPG_MULTI: u32 = 9;
/// Flush the TLBs of every vCPU of the domain.
pub const MMUEXT_TLB_FLUSH_ALL: u32 = 10;
/// Invalidate `arg1` on every vCPU of the domain.
pub const MMUEXT_INVLPG_ALL: u32 = 11;
/// Set the caller's user-mode L4 (`arg1` = 0: no user address space).
pub const MMUEXT_NEW_USER_BASEPTR: u32 = 15;
/// Zero the frame `arg1` (a frame the caller owns that is not a page table).
pub const MMUEXT_CLEAR_PAGE: u32 = 16;
/// Copy frame `arg2` to frame `arg1` (both the caller's; the destination not a page table).
pub const MMUEXT_COPY_PAGE: u32 = 17;

/// Page-table entry bits (x86_64), as the validation rules name them.
pub mod pte {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Writable.
    pub const RW: u64 = 1 << 1;
    /// User (forced on by the hypervisor in every guest entry).
    pub const US: u64 = 1 << 2;
    /// Write-through.
    pub const PWT: u64 = 1 << 3;
    /// Cache disable.
    pub const PCD: u64 = 1 << 4;
    /// Accessed.
    pub const A: u64 = 1 << 5;
    /// Dirty (L1 only).
    pub const D: u64 = 1 << 6;
    /// PAT (L1) / page size (L2, L3): superpages are refused.
    pub const PS_OR_PAT: u64 = 1 << 7;
    /// Global: refused in guest entries.
    pub const G: u64 = 1 << 8;
    /// Software bits 9..11, free for the guest.
    pub const AVAIL: u64 = 0x7 << 9;
    /// No-execute.
    pub const NX: u64 = 1 << 63;
    /// The frame-number bits.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// Bits a guest L1 entry may set besides the address.
    pub const L1_ALLOWED: u64 = P | RW | US | PWT | PCD | A | D | PS_OR_PAT | AVAIL | NX;
    /// Bits a guest L2/L3/L4 entry may set besides the address.
    pub const UPPER_ALLOWED: u64 = P | RW | US | PWT | PCD | A | AVAIL | NX;
}
