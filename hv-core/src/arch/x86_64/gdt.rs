//! Global descriptor table and task-state segment.
//!
//! Selector layout (fixed by SYSCALL/SYSRET, see `entry`): 0x08 hypervisor code,
//! 0x10 hypervisor data, 0x18 guest data (`GUEST_SS` = 0x1b), 0x20 guest 64-bit
//! code (`GUEST_CS` = 0x23), 0x28 TSS. The TSS gives NMI, #DF and #MC their own
//! IST stacks, and `rsp0` is the running vCPU's hypervisor stack. Every CPU has
//! its own set ([`CpuTables`]).

use core::cell::UnsafeCell;

use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::{PrivilegeLevel, VirtAddr};

/// Hypervisor code selector.
pub const HV_CS: u16 = 0x08;
/// Hypervisor data selector.
pub const HV_DS: u16 = 0x10;
/// Base for SYSRET: it loads SS = base + 8 and CS = base + 16 (both RPL 3).
pub const SYSRET_BASE: u16 = 0x10;

/// IST slot (1-based in the IDT) of the NMI stack.
pub const IST_NMI: u16 = 1;
/// IST slot of the double-fault stack.
pub const IST_DOUBLE_FAULT: u16 = 2;
/// IST slot of the machine-check stack.
pub const IST_MACHINE_CHECK: u16 = 3;

const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

/// One CPU's GDT, TSS and IST stacks.
pub struct CpuTables {
    gdt: UnsafeCell<GlobalDescriptorTable>,
    tss: UnsafeCell<TaskStateSegment>,
    ist: UnsafeCell<[IstStack; 3]>,
}

// SAFETY: a CPU's tables are touched by that CPU only: `init` once while it
// starts, then its TSS's rsp0 through `percpu::set_kernel_stack` (with
// interrupts disabled, on that CPU).
unsafe impl Sync for CpuTables {}

impl CpuTables {
    const fn new() -> CpuTables {
        CpuTables {
            gdt: UnsafeCell::new(GlobalDescriptorTable::new()),
            tss: UnsafeCell::new(TaskStateSegment::new()),
            ist: UnsafeCell::new([const { IstStack([0; IST_STACK_SIZE]) }; 3]),
        }
    }

    /// Fresh tables for a secondary CPU, on the heap for good.
    pub fn leak_new() -> &'static CpuTables {
        alloc::boxed::Box::leak(alloc::boxed::Box::new(CpuTables::new()))
    }

    /// The TSS (for the per-CPU block).
    pub const fn tss(&self) -> *mut TaskStateSegment {
        self.tss.get()
    }
}

/// The boot CPU's tables.
pub static BOOT_TABLES: CpuTables = CpuTables::new();

/// Builds and loads `tables` as this CPU's GDT and TSS. Call once per CPU,
/// before it takes an interrupt, with tables no other CPU uses.
pub fn init(tables: &'static CpuTables) {
    // SAFETY: called once on the CPU that owns `tables` before anything else
    // uses them, so the exclusive references do not alias.
    let (gdt, tss, ist) = unsafe {
        (
            &mut *tables.gdt.get(),
            &mut *tables.tss.get(),
            &mut *tables.ist.get(),
        )
    };
    for (slot, stack) in ist.iter().enumerate() {
        let top = VirtAddr::from_ptr(stack.0.as_ptr_range().end);
        tss.interrupt_stack_table[slot] = top;
    }
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let guest_data = gdt.append(Descriptor::user_data_segment());
    let guest_code = gdt.append(Descriptor::user_code_segment());
    // SAFETY: the TSS lives as long as the GDT (both are 'static).
    let tss_sel = gdt.append(unsafe { Descriptor::tss_segment_unchecked(tables.tss.get()) });
    debug_assert_eq!(code.0, HV_CS);
    debug_assert_eq!(data.0, HV_DS);
    debug_assert_eq!(guest_data.0 | 3, hypercall_abi::layout::GUEST_SS as u16);
    debug_assert_eq!(guest_code.0 | 3, hypercall_abi::layout::GUEST_CS as u16);
    // SAFETY: the GDT is 'static and complete; the selectors name the segments
    // just appended; the TSS descriptor is valid and not busy.
    unsafe {
        gdt.load_unsafe();
        CS::set_reg(SegmentSelector::new(1, PrivilegeLevel::Ring0));
        DS::set_reg(SegmentSelector::new(2, PrivilegeLevel::Ring0));
        ES::set_reg(SegmentSelector::new(2, PrivilegeLevel::Ring0));
        SS::set_reg(SegmentSelector::new(2, PrivilegeLevel::Ring0));
        load_tss(tss_sel);
    }
}
