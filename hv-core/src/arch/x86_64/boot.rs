//! Multiboot1 entry: the a.out-kludge header, the 32-bit start-up stub that
//! enables long mode, and the jump to the higher half.
//!
//! # Boot page tables
//! The stub builds one set of tables in `.bss` (physical = virtual − `KERNEL_VMA`):
//! - L4[0] and L4[262] → `boot_pdpt_low`, whose entries 0..3 map 0..4 GiB with
//!   2 MiB pages (identity, and the direct map at `DIRECT_MAP_BASE`);
//! - L4[511] → `boot_pdpt_high`, entry 510 → the first PD: the image at
//!   `0xffff_ffff_8000_0000` maps physical 0..1 GiB.
//!
//! The range 3..4 GiB (MMIO: LAPIC, IOAPIC, PCI BARs) is mapped uncached.
//! Every entry is supervisor-only. The identity slot is dropped once Rust runs.

use core::arch::global_asm;

/// Multiboot1 header flags: modules page aligned (0), memory map (1), a.out kludge (16).
const MB_FLAGS: u32 = (1 << 0) | (1 << 1) | (1 << 16);
const MB_MAGIC: u32 = 0x1bad_b002;

global_asm!(
    r#"
    .set KVMA, 0xffffffff80000000

    .section .multiboot, "a"
    .balign 4
multiboot_header:
    .long {mb_magic}
    .long {mb_flags}
    .long -({mb_magic} + {mb_flags})
    .long multiboot_header - KVMA
    .long __image_start - KVMA
    .long __load_end - KVMA
    .long __bss_end - KVMA
    .long _start32 - KVMA

    .section .text.boot, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov %eax, %ebp                       /* multiboot magic */
    /* esi keeps the multiboot info pointer (ebx) */
    mov %ebx, %esi

    /* L4 */
    movl $(boot_pdpt_low - KVMA + 0x3), %eax
    movl %eax, (boot_pml4 - KVMA)
    movl %eax, (boot_pml4 - KVMA + 262 * 8)
    movl $(boot_pdpt_high - KVMA + 0x3), %eax
    movl %eax, (boot_pml4 - KVMA + 511 * 8)

    /* low PDPT: four PDs covering 0..4 GiB */
    movl $(boot_pd - KVMA + 0x3), %eax
    movl %eax, (boot_pdpt_low - KVMA)
    movl %eax, (boot_pdpt_high - KVMA + 510 * 8)
    addl $0x1000, %eax
    movl %eax, (boot_pdpt_low - KVMA + 8)
    addl $0x1000, %eax
    movl %eax, (boot_pdpt_low - KVMA + 16)
    addl $0x1000, %eax
    movl %eax, (boot_pdpt_low - KVMA + 24)

    /* 2048 PD entries of 2 MiB: present, writable, large; 3..4 GiB uncached */
    movl $(boot_pd - KVMA), %edx
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    cmpl $1536, %ecx
    jb 2f
    orl $0x18, %eax
2:  movl %eax, (%edx, %ecx, 8)
    movl $0, 4(%edx, %ecx, 8)
    incl %ecx
    cmpl $2048, %ecx
    jb 1b

    /* CR4: PAE, PGE, OSFXSR, OSXMMEXCPT */
    movl %cr4, %eax
    orl $((1 << 5) | (1 << 7) | (1 << 9) | (1 << 10)), %eax
    movl %eax, %cr4
    movl $(boot_pml4 - KVMA), %eax
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

    lgdt (boot_gdtr - KVMA)
    ljmp $0x08, $(long_mode_low - KVMA)

    .code64
long_mode_low:
    movabsq $long_mode_high, %rax
    jmp *%rax
long_mode_high:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $boot_stack_top, %rsp
    movl %esi, %edi                      /* arg 0: multiboot info (physical) */
    movl %ebp, %esi                      /* arg 1: loader magic */
    xorl %ebp, %ebp
    call {kernel_main}
3:  hlt
    jmp 3b

    .section .rodata
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff             /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff             /* 0x10: data */
boot_gdt_end:
boot_gdtr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt - KVMA

    .section .bss.boot_tables, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4:      .skip 4096
boot_pdpt_low:  .skip 4096
boot_pdpt_high: .skip 4096
boot_pd:        .skip 4 * 4096
    .balign 16
boot_stack:     .skip 64 * 1024
    .global boot_stack_top
boot_stack_top:
    .previous
"#,
    mb_magic = const MB_MAGIC,
    mb_flags = const MB_FLAGS,
    kernel_main = sym crate::boot::kernel_main,
    options(att_syntax)
);

extern "C" {
    static boot_pml4: u8;
    static __image_start: u8;
    static __bss_end: u8;
}

/// Virtual base the image is linked at; physical = virtual − this.
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;

/// Physical address of the boot L4 table (the idle address space).
pub fn boot_pml4_phys() -> u64 {
    let va = core::ptr::addr_of!(boot_pml4) as u64;
    va - KERNEL_VMA
}

/// Physical range `[start, end)` occupied by the hypervisor image, bss included.
pub fn image_phys_range() -> (u64, u64) {
    let (start, end) = (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__bss_end) as u64,
    );
    (start - KERNEL_VMA, end - KERNEL_VMA)
}
