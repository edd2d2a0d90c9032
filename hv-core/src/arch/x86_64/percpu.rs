//! Per-CPU data: the [`PerCpu`] block every CPU reaches through its GS base in
//! ring 0 (the entry code reads it with `%gs:` offsets), and the accessors the
//! rest of hv-core uses for "this CPU".
//!
//! # Invariants
//! - Each CPU's GS base (in ring 0) is its own `PerCpu`, set once by
//!   `entry::init` before the CPU takes any interrupt; blocks are never freed.
//! - A CPU writes only its own block, with interrupts disabled (hv-core always
//!   runs with interrupts disabled), so plain stores suffice.

use core::cell::UnsafeCell;
use core::mem::offset_of;

use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// The most CPUs hv-core brings up.
pub const MAX_CPUS: usize = 16;

/// Per-CPU data reached through GS in ring 0.
#[repr(C)]
pub struct PerCpu {
    /// Top of the running vCPU's hypervisor stack (SYSCALL switches to it).
    pub kstack_top: u64,
    /// Guest rsp parked by the SYSCALL entry while it switches stacks.
    pub scratch: u64,
    /// Non-zero while the running vCPU is in guest user mode: its SYSCALL is a
    /// user system call for the guest kernel, not a hypercall (MM-7).
    pub user_mode: u64,
    /// Direct-map address of the running vCPU's `VcpuInfo` (a zeroed dummy in
    /// the idle context): the exit paths check its upcall pending/mask bytes.
    pub vcpu_info: u64,
    /// This block's own address (so Rust code can find it through GS).
    pub this: u64,
    /// This CPU's index: 0 for the boot CPU, then in bring-up order.
    pub index: u64,
    /// This CPU's TSS (its `rsp0` follows the running vCPU).
    pub tss: *mut TaskStateSegment,
}

/// A [`PerCpu`] block that can live in a static or be leaked from the heap.
pub struct PerCpuCell(UnsafeCell<PerCpu>);

// SAFETY: each CPU only touches its own block, with interrupts disabled (see
// the module invariants); other CPUs never dereference it.
unsafe impl Sync for PerCpuCell {}

impl PerCpuCell {
    /// A block for CPU `index` whose TSS is `tss`.
    pub const fn new(index: u64, tss: *mut TaskStateSegment) -> PerCpuCell {
        PerCpuCell(UnsafeCell::new(PerCpu {
            kstack_top: 0,
            scratch: 0,
            user_mode: 0,
            vcpu_info: 0,
            this: 0,
            index,
            tss,
        }))
    }

    /// The block's address (what GS base is set to).
    pub fn as_ptr(&self) -> *mut PerCpu {
        let p = self.0.get();
        // SAFETY: called by `entry::init` on the CPU that owns the block,
        // before it is in use through GS; a plain store into the block.
        unsafe { (*p).this = p as u64 };
        p
    }
}

/// What `PerCpu::vcpu_info` points at when no vCPU runs.
static IDLE_VCPU_INFO: [u64; 8] = [0; 8];

/// This CPU's `PerCpu`.
#[inline(always)]
fn this() -> *mut PerCpu {
    let p: u64;
    // SAFETY: in ring 0 GS base is this CPU's PerCpu (module invariant);
    // reading its `this` field has no side effects.
    unsafe {
        core::arch::asm!("mov {}, gs:[{off}]", out(reg) p, off = const offset_of!(PerCpu, this),
                         options(nostack, readonly, preserves_flags))
    };
    p as *mut PerCpu
}

/// This CPU's index (0 = boot CPU).
#[inline(always)]
pub fn cpu_index() -> usize {
    // SAFETY: `this()` is this CPU's live block; a plain read.
    unsafe { (*this()).index as usize }
}

/// Sets the stack SYSCALL and interrupts from ring 3 switch to.
pub fn set_kernel_stack(top: u64) {
    let cpu = this();
    // SAFETY: plain stores to this CPU's PerCpu and TSS with interrupts
    // disabled; the CPU reads rsp0 and the SYSCALL entry reads kstack_top only
    // when entering ring 0, which cannot happen here.
    unsafe {
        (*cpu).kstack_top = top;
        (*(*cpu).tss).privilege_stack_table[0] = VirtAddr::new_truncate(top);
    }
}

/// Records whether the running vCPU is in guest user mode (read by the
/// SYSCALL entry).
pub fn set_guest_user_mode(on: bool) {
    // SAFETY: a plain store to this CPU's PerCpu with interrupts disabled.
    unsafe { (*this()).user_mode = u64::from(on) };
}

/// Records the running vCPU's `VcpuInfo` (direct-map address), or the idle
/// dummy with `None`.
pub fn set_vcpu_info(va: Option<u64>) {
    let va = va.unwrap_or(IDLE_VCPU_INFO.as_ptr() as u64);
    // SAFETY: a plain store to this CPU's PerCpu with interrupts disabled.
    unsafe { (*this()).vcpu_info = va };
}
