//! The kit's own path to `mmu_update` and `mmuext_op` (MM-4, MM-6): the one
//! place where [`crate::mm`] calls the unsafe hypercall wrappers.
//!
//! # Contract (for callers inside `mm`)
//! Callers submit only:
//! - leaf (L1) entries for addresses outside the physmap of a kernel address
//!   space, or in a user address space;
//! - installs of page-table frames they allocated, and removals of them;
//! - physmap entries of frames they own as page tables (read-only before the
//!   frame becomes a table, writable again once it is no longer one);
//! - pins, unpins and base pointers of tables they built, where a kernel base
//!   pointer maps everything the boot L4 maps in the physmap.
//!
//! None of these changes memory Rust code uses, which is what the hypercall
//! wrappers' safety contracts ask for.
#![deny(unsafe_code)]

use hypercall_abi::mm::{MmuUpdate, MmuextOp};

use crate::hypercall::BatchError;

/// Applies `reqs` with one `mmu_update` call.
#[allow(unsafe_code)]
pub(crate) fn submit(reqs: &[MmuUpdate]) -> Result<(), BatchError> {
    // SAFETY: callers follow the module contract: no request changes memory
    // Rust uses.
    unsafe { crate::hypercall::mmu_update(reqs) }
}

/// Runs `ops` with one `mmuext_op` call.
#[allow(unsafe_code)]
pub(crate) fn ext(ops: &[MmuextOp]) -> Result<(), BatchError> {
    // SAFETY: callers follow the module contract: base pointers map what Rust
    // uses, unpinned tables are no longer in use.
    unsafe { crate::hypercall::mmuext_op(ops) }
}
