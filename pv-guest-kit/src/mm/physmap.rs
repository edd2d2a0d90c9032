//! The domain's memory as the start-of-day layout maps it (SPEC.md §5.2) and
//! the hypervisor's read-only M2P table (MM-3): the only place in the kit that
//! turns addresses into memory accesses.
//!
//! Pfn `p` is mapped at `virt_base + 4096 * p`: writable, except the page
//! tables (start-of-day ones, and every frame the kit turns into a table),
//! which are read-only. Every access here is volatile: page tables and the M2P
//! change under the guest's feet (the hypervisor writes them, the CPU sets
//! accessed/dirty bits).
//!
//! # Invariants
//! - Writes go only to frames the caller holds a [`Frame`] for: a frame the
//!   allocator handed out, mapped writable, that no Rust reference covers.
//! - Reads of arbitrary addresses are allowed: a read of an unmapped address
//!   faults, which the trap handlers turn into a panic or a probe failure,
//!   never into undefined behaviour of the Rust program.

use hypercall_abi::layout::M2P_VIRT_START;
use hypercall_abi::PAGE_SIZE;

use super::frames::Frame;

/// Reads the `u64` at virtual address `va` (8-byte aligned).
///
/// Panics on a misaligned address. An unmapped address raises #PF, which the
/// kit reports (see [`crate::mm::probe`] for a read that survives it).
#[inline]
pub fn read_va(va: u64) -> u64 {
    assert!(va.is_multiple_of(8), "read_va({va:#x}): misaligned");
    // SAFETY: a volatile 8-byte read has no effect on Rust-visible state; if
    // `va` is not mapped it faults and the trap handler takes over.
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

/// Writes `value` at virtual address `va` (8-byte aligned).
///
/// # Safety
/// 1. `va` must be mapped writable, and the memory must not be covered by any
///    Rust reference or otherwise used by Rust code (e.g. a scratch mapping
///    of a frame the caller owns).
#[inline]
pub unsafe fn write_va(va: u64, value: u64) {
    assert!(va.is_multiple_of(8), "write_va({va:#x}): misaligned");
    // SAFETY: obligation 1 of the caller.
    unsafe { core::ptr::write_volatile(va as *mut u64, value) }
}

/// Writes word `index` (0..512) of `frame` through its physmap mapping.
pub(crate) fn write_frame_u64(frame: &mut Frame, index: usize, value: u64) {
    assert!(index < 512, "frame word {index} out of range");
    let va = frame.va() + (index as u64) * 8;
    // SAFETY: a `Frame` is a free frame handed out by the allocator: mapped
    // writable in the physmap and used by nothing else (frames module
    // invariants); `&mut` makes this the only access.
    unsafe { core::ptr::write_volatile(va as *mut u64, value) }
}

/// Copies `bytes` into `frame` at byte `offset`.
pub(crate) fn write_frame_bytes(frame: &mut Frame, offset: usize, bytes: &[u8]) {
    let end = offset.checked_add(bytes.len());
    assert!(
        end.is_some_and(|end| end <= PAGE_SIZE as usize),
        "write of {} bytes at {offset} leaves the frame",
        bytes.len()
    );
    let dst = (frame.va() + offset as u64) as *mut u8;
    // SAFETY: as in `write_frame_u64`; the range stays inside the frame
    // (checked above) and cannot overlap `bytes`, which Rust owns elsewhere.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) }
}

/// Zeroes `frame`.
pub(crate) fn zero_frame(frame: &mut Frame) {
    // SAFETY: as in `write_frame_u64`; the whole page belongs to the frame.
    unsafe { core::ptr::write_bytes(frame.va() as *mut u8, 0, PAGE_SIZE as usize) }
}

/// Copies `dst.len()` bytes from virtual address `va` (which must be mapped
/// readable, e.g. a physmap page) into `dst`.
pub(crate) fn read_bytes(va: u64, dst: &mut [u8]) {
    for (i, byte) in dst.iter_mut().enumerate() {
        // SAFETY: a volatile read; see `read_va` about unmapped addresses.
        *byte = unsafe { core::ptr::read_volatile((va + i as u64) as *const u8) };
    }
}

/// The P2M list at `va`: `nr_pages` mfns.
///
/// Panics unless `va` is 8-aligned.
pub(crate) fn p2m_slice(va: u64, nr_pages: u64) -> &'static [u64] {
    assert!(
        va.is_multiple_of(8) && va != 0,
        "p2m_list {va:#x} misaligned"
    );
    let len = usize::try_from(nr_pages).unwrap_or(0);
    // SAFETY: start_info promises `nr_pages` u64s at `p2m_list`, mapped for
    // the domain's lifetime (SPEC.md §5.2). The kit never writes the P2M and
    // hands out no mutable access to it, so a shared slice is sound.
    unsafe { core::slice::from_raw_parts(va as *const u64, len) }
}

/// Entry `mfn` of the M2P table (MM-3), or `None` beyond `nr_entries`.
pub(crate) fn m2p_entry(mfn: u64, nr_entries: u64) -> Option<u64> {
    if mfn >= nr_entries {
        return None;
    }
    let va = M2P_VIRT_START.checked_add(mfn.checked_mul(8)?)?;
    // SAFETY: the hypervisor maps `nr_m2p_entries` u64s read-only at
    // M2P_VIRT_START in every guest address space (MM-3); the read is volatile
    // because it updates them.
    Some(unsafe { core::ptr::read_volatile(va as *const u64) })
}
