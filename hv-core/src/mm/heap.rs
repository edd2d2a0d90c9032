//! The hypervisor heap: a talc allocator over one region carved out of RAM at
//! boot. Holds domain and vCPU structures and hypervisor stacks.

use talc::{ErrOnOom, Span, Talc, Talck};

#[global_allocator]
static HEAP: Talck<spin::Mutex<()>, ErrOnOom> = Talc::new(ErrOnOom).lock();

/// Gives `[base, base + size)` to the heap.
///
/// # Safety
/// 1. The range must be mapped, writable, unused by anything else, and stay so
///    for the life of the hypervisor.
pub unsafe fn init(base: u64, size: u64) {
    let span = Span::from_base_size(base as *mut u8, size as usize);
    // SAFETY: the caller hands over exclusive, mapped memory (obligation 1).
    let claimed = unsafe { HEAP.lock().claim(span) };
    if claimed.is_err() {
        panic!("heap: could not claim {size:#x} bytes at {base:#x}");
    }
}

/// Bytes the heap could still hand out (ignoring fragmentation).
pub fn available_bytes() -> usize {
    HEAP.lock().get_counters().available_bytes
}
