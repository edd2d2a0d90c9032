//! Starting the secondary CPUs (application processors) the MADT lists:
//! INIT-SIPI-SIPI into a real-mode trampoline copied below 1 MiB, which enters
//! long mode on a temporary L4 (the boot L4 plus an identity slot) and jumps
//! to [`ap_entry`] in the higher half on a fresh stack.
//!
//! # Invariants
//! - One CPU starts at a time: the trampoline's data words are written for it
//!   and read by it before the boot CPU goes on to the next.
//! - Each started CPU gets its own GDT/TSS/IST ([`CpuTables`]), per-CPU block
//!   and idle stack, leaked for good (CPUs never go offline).

use alloc::boxed::Box;
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};

use super::boot::{boot_pml4_phys, KERNEL_VMA};
use super::cpu::{rdtsc, write_cr3};
use super::gdt::{self, CpuTables};
use super::percpu::{PerCpuCell, MAX_CPUS};
use super::{entry, idt, lapic};
use crate::mm::phys_to_virt;

/// Physical address the trampoline runs at (the STARTUP vector is its page).
const TRAMPOLINE_PA: u64 = 0x8000;

global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .set TRAMP, 0x8000
    .balign 16
    .code16
    .global ap_trampoline_start
ap_trampoline_start:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl TRAMP + (ap_gdtr - ap_trampoline_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(TRAMP + (ap_pm32 - ap_trampoline_start))

    .code32
ap_pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    /* CR4: PAE, PGE, OSFXSR, OSXMMEXCPT (as the boot CPU) */
    movl %cr4, %eax
    orl $((1 << 5) | (1 << 7) | (1 << 9) | (1 << 10)), %eax
    movl %eax, %cr4
    movl TRAMP + (ap_cr3 - ap_trampoline_start), %eax
    movl %eax, %cr3
    /* EFER: SCE, LME, NXE */
    movl $0xc0000080, %ecx
    rdmsr
    orl $((1 << 0) | (1 << 8) | (1 << 11)), %eax
    wrmsr
    /* CR0: PE, MP, WP, PG; clear EM and TS */
    movl %cr0, %eax
    orl $((1 << 31) | (1 << 16) | (1 << 1) | 1), %eax
    andl $(~((1 << 2) | (1 << 3))), %eax
    movl %eax, %cr0
    ljmpl $0x18, $(TRAMP + (ap_lm64 - ap_trampoline_start))

    .code64
ap_lm64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq TRAMP + (ap_stack - ap_trampoline_start), %rsp
    movq TRAMP + (ap_arg - ap_trampoline_start), %rdi
    movq TRAMP + (ap_entry_addr - ap_trampoline_start), %rax
    jmp *%rax

    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff             /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff             /* 0x10: data */
    .quad 0x00af9a000000ffff             /* 0x18: 64-bit code */
ap_gdt_end:
ap_gdtr:
    .word ap_gdt_end - ap_gdt - 1
    .long TRAMP + (ap_gdt - ap_trampoline_start)
    .balign 8
    .global ap_cr3, ap_stack, ap_arg, ap_entry_addr
ap_cr3:        .quad 0
ap_stack:      .quad 0
ap_arg:        .quad 0
ap_entry_addr: .quad 0
    .global ap_trampoline_end
ap_trampoline_end:
    .previous
"#,
    options(att_syntax)
);

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_cr3: u8;
    static ap_stack: u8;
    static ap_arg: u8;
    static ap_entry_addr: u8;
}

/// The temporary L4 secondary CPUs enable paging with: the boot L4's entries
/// plus an identity mapping of low memory in slot 0 (the trampoline page).
#[repr(C, align(4096))]
struct ApL4([u64; 512]);
static mut AP_L4: ApL4 = ApL4([0; 512]);

/// What the boot CPU hands one secondary CPU.
struct ApStart {
    index: u64,
    tables: &'static CpuTables,
    percpu: &'static PerCpuCell,
    lapic_per_ms: u32,
}

/// Set by a secondary CPU once it no longer needs the trampoline.
static AP_STARTED: AtomicBool = AtomicBool::new(false);

/// Bytes of each secondary CPU's idle stack.
const AP_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct ApStack([u8; AP_STACK_SIZE]);

/// Offset of a trampoline symbol from its start.
fn offset_of_symbol(sym: *const u8) -> u64 {
    sym as u64 - core::ptr::addr_of!(ap_trampoline_start) as u64
}

/// Writes a 64-bit data word of the copied trampoline.
fn poke(sym: *const u8, value: u64) {
    let va = phys_to_virt(TRAMPOLINE_PA + offset_of_symbol(sym));
    // SAFETY: the word lies inside the trampoline page below 1 MiB, which
    // hv-core reserved and only this module uses; 8-byte aligned by `.balign`.
    unsafe { core::ptr::write_volatile(va as *mut u64, value) };
}

/// Busy-waits `us` microseconds on the TSC.
fn delay_us(us: u64, tsc_hz: u64) {
    let end = rdtsc() + tsc_hz / 1_000_000 * us;
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// Starts every CPU in `apic_ids` except this one, one at a time; returns
/// how many came up. `lapic_per_ms` is the calibrated APIC timer rate.
pub fn start_secondary_cpus(apic_ids: &[u32], lapic_per_ms: u32, tsc_hz: u64) -> usize {
    let me = lapic::id();
    let others: heapless::Vec<u32, MAX_CPUS> = apic_ids
        .iter()
        .copied()
        .filter(|&id| id != me)
        .take(MAX_CPUS - 1)
        .collect();
    if others.is_empty() {
        return 0;
    }
    // The trampoline code, and the temporary L4.
    let (start, end) = (
        core::ptr::addr_of!(ap_trampoline_start),
        core::ptr::addr_of!(ap_trampoline_end),
    );
    let len = end as usize - start as usize;
    // SAFETY: copying the trampoline's bytes into its reserved page below
    // 1 MiB (len < 4 KiB), through the direct map.
    unsafe {
        core::ptr::copy_nonoverlapping(start, phys_to_virt(TRAMPOLINE_PA) as *mut u8, len);
    }
    let boot_l4 = phys_to_virt(boot_pml4_phys()) as *const u64;
    // SAFETY: AP_L4 is written only here, before any secondary CPU runs; the
    // boot L4 is a 512-entry table. Slot 262 (the direct map of 0..4 GiB with
    // 2 MiB pages) doubles as the identity map in slot 0.
    let l4_pa = unsafe {
        let l4 = &mut *core::ptr::addr_of_mut!(AP_L4);
        for (i, e) in l4.0.iter_mut().enumerate() {
            *e = core::ptr::read_volatile(boot_l4.add(i));
        }
        l4.0[0] = l4.0[262];
        core::ptr::addr_of!(AP_L4) as u64 - KERNEL_VMA
    };
    let (cr3_sym, stack_sym, arg_sym, entry_sym) = (
        core::ptr::addr_of!(ap_cr3),
        core::ptr::addr_of!(ap_stack),
        core::ptr::addr_of!(ap_arg),
        core::ptr::addr_of!(ap_entry_addr),
    );
    poke(cr3_sym, l4_pa);
    poke(entry_sym, ap_entry as *const () as u64);

    let mut started = 0;
    for (n, &apic) in others.iter().enumerate() {
        let index = (n + 1) as u64;
        let tables = CpuTables::leak_new();
        let percpu: &'static PerCpuCell = Box::leak(Box::new(PerCpuCell::new(index, tables.tss())));
        let stack: &'static mut ApStack = Box::leak(Box::new(ApStack([0; AP_STACK_SIZE])));
        let top = stack.0.as_ptr_range().end as u64;
        let start: &'static ApStart = Box::leak(Box::new(ApStart {
            index,
            tables,
            percpu,
            lapic_per_ms,
        }));
        // A function entered by `jmp` expects rsp ≡ 8 (mod 16).
        poke(stack_sym, top - 8);
        poke(arg_sym, start as *const ApStart as u64);
        AP_STARTED.store(false, Ordering::SeqCst);

        lapic::send_init(apic);
        delay_us(10_000, tsc_hz);
        lapic::send_startup(apic, (TRAMPOLINE_PA >> 12) as u8);
        delay_us(200, tsc_hz);
        if !AP_STARTED.load(Ordering::SeqCst) {
            lapic::send_startup(apic, (TRAMPOLINE_PA >> 12) as u8);
        }
        let deadline = rdtsc() + tsc_hz / 5; // 200 ms
        while !AP_STARTED.load(Ordering::SeqCst) && rdtsc() < deadline {
            core::hint::spin_loop();
        }
        if AP_STARTED.load(Ordering::SeqCst) {
            started += 1;
        } else {
            log::warn!("CPU with APIC id {apic} did not start; going on without it");
            // It may still wake later on a stale trampoline: stop here.
            break;
        }
    }
    started
}

/// A secondary CPU's first Rust code, on its idle stack, still on the
/// trampoline's L4.
extern "C" fn ap_entry(start: &'static ApStart) -> ! {
    // SAFETY: the boot L4 maps hv-core exactly as the trampoline L4 does,
    // minus the identity slot this code no longer uses.
    unsafe { write_cr3(boot_pml4_phys()) };
    gdt::init(start.tables);
    idt::load();
    entry::init(start.percpu);
    lapic::init(start.lapic_per_ms);
    crate::mm::tlb::cpu_online();
    crate::sched::cpu_online(lapic::id());
    log::info!("CPU {} (APIC id {}) online", start.index, lapic::id());
    AP_STARTED.store(true, Ordering::SeqCst);
    crate::sched::run_idle()
}
