//! Machine memory: the frame table (owner, type and counts of every machine
//! frame), the free-frame allocator built into it, the hypervisor heap, and the
//! direct map through which hv-core reaches any machine address.

pub mod frame_table;
#[cfg(target_os = "none")]
pub mod heap;
#[cfg(target_os = "none")]
pub mod live;
pub mod pagetable;
pub mod pte;
pub mod regions;
#[cfg(target_os = "none")]
pub mod tlb;

pub use frame_table::{FrameTable, FrameType, Mfn, Owner};

/// Where all machine memory below 4 GiB is mapped (L4 slot 262, supervisor only).
pub const DIRECT_MAP_BASE: u64 = 0xffff_8300_0000_0000;
/// How much machine memory the direct map covers.
pub const DIRECT_MAP_SIZE: u64 = 4 << 30;

/// The direct-map address of machine address `pa` (which must be below
/// [`DIRECT_MAP_SIZE`] to be mapped).
pub const fn phys_to_virt(pa: u64) -> u64 {
    DIRECT_MAP_BASE + pa
}

/// The direct-map address of machine frame `mfn`.
pub const fn mfn_to_virt(mfn: Mfn) -> u64 {
    phys_to_virt(mfn << hypercall_abi::PAGE_SHIFT)
}
