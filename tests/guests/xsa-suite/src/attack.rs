//! Attack helpers shared by the regression tests: raw hypercalls whose
//! arguments the tests choose, page-table plumbing (machine addresses of own
//! table entries, scratch tables), and catching the exceptions an attack
//! must end in.
//!
//! Every raw call here is `unsafe` in the kit because it could change the
//! caller's own mappings; the tests only aim them at scratch tables, frames
//! they own and nothing else uses, or at requests SPEC says must be refused.

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::mm::{MmuUpdate, MmuextOp};
use hypercall_abi::{Errno, Hypercall};
use pv_guest_kit::hypercall::{self, BatchError};
use pv_guest_kit::mm::pagetable::{entry_maddr, entry_mfn, table_index};
use pv_guest_kit::mm::{self, AddressSpace, Frame};
use pv_guest_kit::traps::{self, TrapAction, TrapContext};

/// One raw hypercall; the raw return value.
pub fn raw(call: Hypercall, args: [u64; 5]) -> i64 {
    // SAFETY: the tests pass arguments that either name scratch memory the
    // test owns, or must be refused by the hypervisor; a wrongly accepted
    // one is reported by the test before anything relies on it.
    unsafe { hypercall::hypercall_raw(call.number(), args) }
}

/// One raw hypercall as a `Result`.
pub fn call(call: Hypercall, args: [u64; 5]) -> Result<u64, Errno> {
    Errno::check(raw(call, args))
}

/// A raw `mmu_update` batch.
pub fn update(reqs: &[MmuUpdate]) -> Result<(), BatchError> {
    // SAFETY: see the module documentation.
    unsafe { hypercall::mmu_update(reqs) }
}

/// One raw `mmu_update` request.
pub fn update1(ptr: u64, val: u64) -> Result<(), Errno> {
    update(&[MmuUpdate { ptr, val }]).map_err(|e| e.errno)
}

/// A raw `mmuext_op` batch.
pub fn ext(ops: &[MmuextOp]) -> Result<(), BatchError> {
    // SAFETY: see the module documentation.
    unsafe { hypercall::mmuext_op(ops) }
}

/// One raw `mmuext_op`.
pub fn ext1(cmd: u32, arg1: u64) -> Result<(), Errno> {
    ext2(cmd, arg1, 0)
}

/// One raw `mmuext_op` with two arguments.
pub fn ext2(cmd: u32, arg1: u64, arg2: u64) -> Result<(), Errno> {
    ext(&[MmuextOp {
        cmd,
        pad: 0,
        arg1,
        arg2,
    }])
    .map_err(|e| e.errno)
}

/// The entry at machine address `maddr`, which must lie in an own frame.
pub fn read_machine(maddr: u64) -> Option<u64> {
    let pfn = mm::mfn_to_pfn(maddr >> 12)?;
    Some(mm::physmap::read_va(
        mm::layout().pfn_va(pfn) + (maddr & 0xff8),
    ))
}

/// The tables that map `va` in the boot kernel address space, created by
/// the kit if missing: machine frames of the L3, L2 and L1 and the machine
/// address of `va`'s L1 entry.
#[derive(Clone, Copy, Debug)]
pub struct Tables {
    pub l4: u64,
    pub l3: u64,
    pub l2: u64,
    pub l1: u64,
    pub l1e: u64,
}

impl Tables {
    /// Builds (or finds) the tables of `va` in `kernel`.
    pub fn of(kernel: &mut AddressSpace, va: u64) -> Result<Tables, &'static str> {
        let l1e = kernel.l1_entry(va).map_err(|_| "building scratch tables")?;
        let l4 = mm::layout().boot_l4_mfn;
        let l3 =
            entry_mfn(read_machine(entry_maddr(l4, table_index(va, 4))).ok_or("reading the L4")?);
        let l2 =
            entry_mfn(read_machine(entry_maddr(l3, table_index(va, 3))).ok_or("reading an L3")?);
        Ok(Tables {
            l4,
            l3,
            l2,
            l1: l1e >> 12,
            l1e,
        })
    }
}

/// A frame filled by `fill`, made read-only and offered to `pin` as a page
/// table; afterwards it is made writable and freed again, which also checks
/// that a failed pin left no type behind. Returns the pin's result, and
/// `Err` text if the frame could not be returned to the allocator.
pub fn try_pin_table(
    cmd: u32,
    fill: impl FnOnce(&mut Frame),
) -> Result<Result<(), Errno>, &'static str> {
    let mut frame = Frame::alloc_zeroed().map_err(|_| "allocating a frame")?;
    fill(&mut frame);
    let table = frame
        .into_readonly()
        .map_err(|_| "making a frame read-only")?;
    let result = ext1(cmd, table.mfn());
    if result.is_ok() {
        ext1(hypercall_abi::mm::MMUEXT_UNPIN_TABLE, table.mfn())
            .map_err(|_| "unpinning a table that should not have been pinned")?;
    }
    match table.into_writable() {
        Ok(frame) => drop(frame),
        Err(_) => return Err("the frame kept a page-table type after the pin"),
    }
    Ok(result)
}

/// Exceptions caught by [`catch`]: (vector + 1) of the last one, its rip,
/// its error code, and how many arrived.
static CAUGHT_VECTOR: AtomicU64 = AtomicU64::new(0);
static CAUGHT_RIP: AtomicU64 = AtomicU64::new(0);
static CAUGHT_CR2: AtomicU64 = AtomicU64::new(0);
static CAUGHT_COUNT: AtomicU64 = AtomicU64::new(0);
static CAUGHT_RFLAGS: AtomicU64 = AtomicU64::new(0);
/// Where the handler resumes (0: after the faulting instruction is skipped
/// by `CAUGHT_SKIP` bytes).
static RESUME_AT: AtomicU64 = AtomicU64::new(0);
static CAUGHT_SKIP: AtomicU64 = AtomicU64::new(0);

/// An exception seen by a [`catch`] handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caught {
    pub vector: u8,
    pub rip: u64,
    pub cr2: u64,
    pub rflags: u64,
    pub count: u64,
}

/// Records `ctx` as caught without changing where it resumes (for
/// handlers of their own that still report through [`catch`]).
pub fn record_external(ctx: &TrapContext) {
    CAUGHT_VECTOR.store(ctx.vector + 1, Ordering::SeqCst);
    CAUGHT_RIP.store(ctx.rip, Ordering::SeqCst);
    CAUGHT_CR2.store(ctx.cr2, Ordering::SeqCst);
    CAUGHT_RFLAGS.store(ctx.rflags, Ordering::SeqCst);
    CAUGHT_COUNT.fetch_add(1, Ordering::SeqCst);
}

fn record(ctx: &mut TrapContext) -> TrapAction {
    CAUGHT_VECTOR.store(ctx.vector + 1, Ordering::SeqCst);
    CAUGHT_RIP.store(ctx.rip, Ordering::SeqCst);
    CAUGHT_CR2.store(ctx.cr2, Ordering::SeqCst);
    CAUGHT_RFLAGS.store(ctx.rflags, Ordering::SeqCst);
    CAUGHT_COUNT.fetch_add(1, Ordering::SeqCst);
    let resume = RESUME_AT.load(Ordering::SeqCst);
    if resume != 0 {
        ctx.rip = resume;
    } else {
        ctx.rip = ctx.rip.wrapping_add(CAUGHT_SKIP.load(Ordering::SeqCst));
    }
    // Single-stepping ends with the first trap.
    ctx.rflags &= !(1 << 8);
    TrapAction::Resume
}

/// Runs `body` with a recording handler on `vectors`: the handler resumes
/// at `resume` (if non-zero) or `skip` bytes after the trapping rip.
/// Returns the last exception seen, if any; the handlers are removed after.
pub fn catch(vectors: &[u8], resume: u64, skip: u64, body: impl FnOnce()) -> Option<Caught> {
    CAUGHT_VECTOR.store(0, Ordering::SeqCst);
    CAUGHT_COUNT.store(0, Ordering::SeqCst);
    RESUME_AT.store(resume, Ordering::SeqCst);
    CAUGHT_SKIP.store(skip, Ordering::SeqCst);
    for &v in vectors {
        traps::set_handler(v, record);
    }
    body();
    for &v in vectors {
        traps::clear_handler(v);
    }
    let vector = CAUGHT_VECTOR.load(Ordering::SeqCst);
    (vector != 0).then(|| Caught {
        vector: (vector - 1) as u8,
        rip: CAUGHT_RIP.load(Ordering::SeqCst),
        cr2: CAUGHT_CR2.load(Ordering::SeqCst),
        rflags: CAUGHT_RFLAGS.load(Ordering::SeqCst),
        count: CAUGHT_COUNT.load(Ordering::SeqCst),
    })
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    pv_guest_kit::bench::rdtsc()
}

/// RFLAGS live inside the last #BP handler run by [`catch_with_live_flags`].
static LIVE_RFLAGS: AtomicU64 = AtomicU64::new(0);

fn record_live(ctx: &mut TrapContext) -> TrapAction {
    LIVE_RFLAGS.store(crate::arch::live_rflags(), Ordering::SeqCst);
    record(ctx)
}

/// `int3` with `flags` set: (the frame's rflags, RFLAGS live in the
/// handler), or `None` if no #BP arrived.
pub fn catch_with_live_flags(flags: u64) -> Option<(u64, u64)> {
    LIVE_RFLAGS.store(u64::MAX, Ordering::SeqCst);
    let seen = catch(&[hypercall_abi::trap::vector::DB], 0, 0, || {
        traps::set_handler(hypercall_abi::trap::vector::BP, record_live);
        crate::arch::int3_with_flags(flags);
        traps::clear_handler(hypercall_abi::trap::vector::BP);
    });
    let _ = seen;
    let frame_flags = CAUGHT_RFLAGS.load(Ordering::SeqCst);
    let live = LIVE_RFLAGS.load(Ordering::SeqCst);
    (live != u64::MAX).then_some((frame_flags, live))
}

/// TSC ticks per millisecond, from the PV clock's scale (TIME-1).
pub fn tsc_per_ms() -> u64 {
    pv_guest_kit::time::tsc_hz() / 1000
}

/// System time in ns (TIME-1).
pub fn system_time_ns() -> u64 {
    pv_guest_kit::time::now_ns()
}
