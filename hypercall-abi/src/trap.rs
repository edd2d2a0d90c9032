//! Trap tables, bounce frames and `iret` (SPEC.md §6, HC-13 .. HC-16).
//!
//! # Exception bounce protocol (HC-13)
//! 1. A guest exception (vector 0..31) that has a handler in the trap table is
//!    delivered by pushing an [`ExceptionFrame`] on the guest kernel stack — the
//!    interrupted rsp if the guest was in kernel mode, else the `stack_switch`
//!    stack — 16-byte aligned, and entering the handler with every general
//!    register as it was at the fault.
//! 2. The handler drops `error_code` and `cr2` (`add rsp, 16`), which leaves the
//!    `flags ..= ss` tail, and jumps (not calls) to the `iret` stub.
//! 3. The `iret` stub pushes rcx, r11, rax, so the stack holds an [`IretContext`]
//!    when the hypercall runs; `iret` restores it.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Number of exception vectors a trap table may name (0..31).
pub const TRAP_VECTORS: usize = 32;
/// Largest `count` accepted by `set_trap_table`.
pub const TRAP_TABLE_MAX: u64 = TRAP_VECTORS as u64;

/// One trap-table entry, `[GUEST]`, IN to `set_trap_table`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TrapInfo {
    /// Exception vector, 0..31.
    pub vector: u8,
    /// `TRAP_FLAG_*` bits.
    pub flags: u8,
    /// Must be zero.
    pub reserved: [u8; 6],
    /// Handler entry point (guest virtual); 0 removes the vector's handler.
    pub address: u64,
}
const _: () = assert!(core::mem::size_of::<TrapInfo>() == 16);
const _: () = assert!(core::mem::offset_of!(TrapInfo, flags) == 1);
const _: () = assert!(core::mem::offset_of!(TrapInfo, address) == 8);

/// `TrapInfo.flags`: the handler may be entered from guest user mode (an `int n`
/// instruction in user mode reaches it; faults always do).
pub const TRAP_FLAG_USER_INT: u8 = 1 << 0;
/// All defined `TrapInfo.flags` bits.
pub const TRAP_FLAGS_ALL: u8 = TRAP_FLAG_USER_INT;

/// Frame flag: in an [`ExceptionFrame`], the interrupted context was guest user
/// mode; in an [`IretContext`], return to guest user mode.
pub const FRAME_FLAG_USER_MODE: u64 = 1 << 0;
/// Frame flag, in an [`ExceptionFrame`] only: this is not an exception but a
/// `syscall` from guest user mode, delivered to the syscall callback (MM-7);
/// rcx and r11 hold the user's rip and rflags, as SYSCALL leaves them.
pub const FRAME_FLAG_SYSCALL: u64 = 1 << 1;
/// All defined frame flag bits.
pub const FRAME_FLAGS_ALL: u64 = FRAME_FLAG_USER_MODE | FRAME_FLAG_SYSCALL;

/// What the hypervisor pushes on the guest kernel stack to deliver an exception,
/// `[HV]`. The handler is entered with rsp pointing at `error_code`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ExceptionFrame {
    /// Hardware error code, or 0 for vectors without one.
    pub error_code: u64,
    /// Faulting linear address for #PF (vector 14); 0 otherwise.
    pub cr2: u64,
    /// `FRAME_FLAG_*`.
    pub flags: u64,
    /// Interrupted instruction pointer.
    pub rip: u64,
    /// [`crate::layout::GUEST_CS`].
    pub cs: u64,
    /// Interrupted RFLAGS.
    pub rflags: u64,
    /// Interrupted stack pointer.
    pub rsp: u64,
    /// [`crate::layout::GUEST_SS`].
    pub ss: u64,
}
const _: () = assert!(core::mem::size_of::<ExceptionFrame>() == 64);
const _: () = assert!(core::mem::offset_of!(ExceptionFrame, flags) == 16);
const _: () = assert!(core::mem::offset_of!(ExceptionFrame, ss) == 56);

/// What `iret` reads at the guest's rsp, `[GUEST]`, IN (HC-16).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct IretContext {
    /// rax to restore (pushed by the stub).
    pub rax: u64,
    /// r11 to restore (pushed by the stub).
    pub r11: u64,
    /// rcx to restore (pushed by the stub).
    pub rcx: u64,
    /// `FRAME_FLAG_*`; unknown bits → `-EINVAL`.
    pub flags: u64,
    /// Return address: must be a guest address (HC-5).
    pub rip: u64,
    /// Ignored; the hypervisor always uses [`crate::layout::GUEST_CS`].
    pub cs: u64,
    /// RFLAGS; only [`crate::layout::GUEST_RFLAGS_MASK`] bits are taken.
    pub rflags: u64,
    /// Stack pointer to return with.
    pub rsp: u64,
    /// Ignored; the hypervisor always uses [`crate::layout::GUEST_SS`].
    pub ss: u64,
}
const _: () = assert!(core::mem::size_of::<IretContext>() == 72);
const _: () = assert!(core::mem::offset_of!(IretContext, flags) == 24);
const _: () = assert!(core::mem::offset_of!(IretContext, rip) == 32);
const _: () = assert!(core::mem::offset_of!(IretContext, ss) == 64);
// The exception frame's tail (flags..ss) is exactly the iret context's tail.
const _: () = assert!(
    core::mem::size_of::<ExceptionFrame>() - core::mem::offset_of!(ExceptionFrame, flags)
        == core::mem::size_of::<IretContext>() - core::mem::offset_of!(IretContext, flags)
);

/// Exception vector numbers (Intel SDM vol. 3, table 6-1).
pub mod vector {
    /// Divide error.
    pub const DE: u8 = 0;
    /// Debug.
    pub const DB: u8 = 1;
    /// Non-maskable interrupt (never bounced).
    pub const NMI: u8 = 2;
    /// Breakpoint (`int3`).
    pub const BP: u8 = 3;
    /// Overflow (`into`).
    pub const OF: u8 = 4;
    /// BOUND range exceeded.
    pub const BR: u8 = 5;
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// Device not available.
    pub const NM: u8 = 7;
    /// Double fault (never bounced).
    pub const DF: u8 = 8;
    /// Invalid TSS.
    pub const TS: u8 = 10;
    /// Segment not present.
    pub const NP: u8 = 11;
    /// Stack-segment fault.
    pub const SS: u8 = 12;
    /// General protection.
    pub const GP: u8 = 13;
    /// Page fault.
    pub const PF: u8 = 14;
    /// x87 floating-point error.
    pub const MF: u8 = 16;
    /// Alignment check.
    pub const AC: u8 = 17;
    /// Machine check (never bounced).
    pub const MC: u8 = 18;
    /// SIMD floating-point exception.
    pub const XM: u8 = 19;

    /// Mnemonic of a vector, for logs.
    pub const fn name(vector: u8) -> &'static str {
        match vector {
            0 => "#DE",
            1 => "#DB",
            2 => "NMI",
            3 => "#BP",
            4 => "#OF",
            5 => "#BR",
            6 => "#UD",
            7 => "#NM",
            8 => "#DF",
            9 => "#MF(old)",
            10 => "#TS",
            11 => "#NP",
            12 => "#SS",
            13 => "#GP",
            14 => "#PF",
            16 => "#MF",
            17 => "#AC",
            18 => "#MC",
            19 => "#XM",
            20 => "#VE",
            21 => "#CP",
            _ => "#??",
        }
    }
}
