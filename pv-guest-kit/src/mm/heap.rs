//! The guest heap (kernel target only): a talc allocator over a contiguous
//! range of the domain's free pfns, which are mapped writable and contiguous
//! in the physmap (SPEC.md §5.2). Before [`init`] every allocation fails.

use talc::{ErrOnOom, Span, Talc, Talck};

#[global_allocator]
static HEAP: Talck<spin::Mutex<()>, ErrOnOom> = Talc::new(ErrOnOom).lock();

/// Gives `[base, base + size)` to the heap (nothing if `size` is 0).
pub(super) fn init(base: u64, size: u64) {
    if size == 0 {
        return;
    }
    let span = Span::from_base_size(base as *mut u8, size as usize);
    // SAFETY: `mm::init` passes the physmap range of pfns it took out of the
    // free pool before the frame allocator was set up: mapped writable
    // (SPEC.md §5.2), used by nothing else, for the domain's lifetime.
    let claimed = unsafe { HEAP.lock().claim(span) };
    if claimed.is_err() {
        panic!("heap: could not claim {size:#x} bytes at {base:#x}");
    }
}
