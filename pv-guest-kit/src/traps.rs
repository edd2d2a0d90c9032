//! Exceptions (SPEC.md §6, HC-13 .. HC-16): the kit's trap table, its entry
//! stubs, and per-vector Rust handlers.
//!
//! At start of day [`install`] registers one asm entry stub for each vector in
//! [`KIT_VECTORS`]. When the hypervisor bounces an exception, the stub:
//! 1. is entered with rsp at an `ExceptionFrame` and every general register as
//!    it was at the fault;
//! 2. pushes the 15 GPRs and the vector number, which completes a
//!    [`TrapContext`] on the stack, and calls the Rust dispatcher with it
//!    (rsp 16-byte aligned, DF clear);
//! 3. the dispatcher runs the handler registered with [`set_handler`], or
//!    [`report_unhandled`] (which panics, so the domain shuts down as crashed);
//! 4. on [`TrapAction::Resume`] the stub pops the (possibly modified) registers,
//!    drops `error_code` and `cr2` (`add rsp, 16`) and jumps to the `iret` stub,
//!    which returns to `ctx.rip` with `ctx.rsp`, `ctx.rflags` (arithmetic
//!    flags and DF only; the hypervisor masks the rest) and the registers.
//!
//! The same stub shape serves the user-mode syscall callback (pseudo-vector
//! [`SYSCALL_VECTOR`], see [`crate::user`]) and the event callback
//! ([`EVENT_VECTOR`]): the dispatcher hands an event upcall to
//! [`crate::events`] before anything else.
//!
//! Handlers run on the interrupted stack (guest kernel mode), with events as
//! they were. A fault inside a handler is the hypervisor's to judge: a fault of
//! the vector being handled kills the domain.
//!
//! # Invariants
//! - [`TrapContext`] is exactly the stack image the stubs build: the vector,
//!   the GPRs in push order, then the `ExceptionFrame` (asserted below).
//! - The handler table is read with `try_read` only: a trap that interrupts
//!   [`set_handler`] sees no handler rather than deadlocking.

use hypercall_abi::trap::{
    vector, ExceptionFrame, TrapInfo, FRAME_FLAG_USER_MODE, TRAP_FLAG_USER_INT, TRAP_VECTORS,
};
use hypercall_abi::Errno;
use spin::RwLock;

/// The vectors the kit's default table handles: every exception vector except
/// NMI (2), #DF (8) and #MC (18), which are never bounced, and the reserved 9,
/// 15 and 22 and above.
pub const KIT_VECTORS: [u8; 17] = [0, 1, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 19, 20, 21];

/// The `vector` the kit's syscall stub records in a [`TrapContext`]: not an
/// exception vector; the frame's flags have `FRAME_FLAG_SYSCALL` (MM-7).
pub const SYSCALL_VECTOR: u64 = 0x100;

/// The `vector` the kit's event stub records in a [`TrapContext`]: an event
/// upcall (EVT-5), not an exception; handled by [`crate::events`].
pub const EVENT_VECTOR: u64 = 0x101;

/// Whether the kit's trap table handles `vector`.
pub const fn is_kit_vector(vector: u8) -> bool {
    let mut i = 0;
    while i < KIT_VECTORS.len() {
        if KIT_VECTORS[i] == vector {
            return true;
        }
        i += 1;
    }
    false
}

/// Everything about the interrupted context a handler may inspect or change:
/// the stack image the entry stubs build, lowest address first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TrapContext {
    /// Exception vector (0..31).
    pub vector: u64,
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    /// `ExceptionFrame::error_code`: hardware error code, or 0.
    pub error_code: u64,
    /// `ExceptionFrame::cr2`: faulting address for #PF, else 0.
    pub cr2: u64,
    /// `ExceptionFrame::flags` (`FRAME_FLAG_*`).
    pub flags: u64,
    /// Where execution resumes (the faulting instruction for faults).
    pub rip: u64,
    /// `GUEST_CS`.
    pub cs: u64,
    /// RFLAGS to resume with (only `GUEST_RFLAGS_MASK` bits are taken).
    pub rflags: u64,
    /// Stack pointer to resume with.
    pub rsp: u64,
    /// `GUEST_SS`.
    pub ss: u64,
}

/// Bytes the stubs push below the `ExceptionFrame`: the vector and 15 GPRs.
const PUSHED: usize = 16 * 8;
const _: () =
    assert!(core::mem::size_of::<TrapContext>() == PUSHED + core::mem::size_of::<ExceptionFrame>());
const _: () = assert!(core::mem::offset_of!(TrapContext, rax) == 8);
const _: () = assert!(core::mem::offset_of!(TrapContext, r15) == PUSHED - 8);
const _: () = assert!(core::mem::offset_of!(TrapContext, error_code) == PUSHED);
const _: () = assert!(
    core::mem::offset_of!(TrapContext, cr2) == PUSHED + core::mem::offset_of!(ExceptionFrame, cr2)
);
const _: () = assert!(
    core::mem::offset_of!(TrapContext, flags)
        == PUSHED + core::mem::offset_of!(ExceptionFrame, flags)
);
const _: () = assert!(
    core::mem::offset_of!(TrapContext, rip) == PUSHED + core::mem::offset_of!(ExceptionFrame, rip)
);
const _: () = assert!(
    core::mem::offset_of!(TrapContext, rflags)
        == PUSHED + core::mem::offset_of!(ExceptionFrame, rflags)
);
const _: () = assert!(
    core::mem::offset_of!(TrapContext, rsp) == PUSHED + core::mem::offset_of!(ExceptionFrame, rsp)
);
const _: () = assert!(
    core::mem::offset_of!(TrapContext, ss) == PUSHED + core::mem::offset_of!(ExceptionFrame, ss)
);
const _: () = assert!(core::mem::size_of::<TrapContext>() & 15 == 0);

impl TrapContext {
    /// The `ExceptionFrame` part, as the hypervisor pushed it (plus the
    /// handler's changes so far).
    pub fn frame(&self) -> ExceptionFrame {
        ExceptionFrame {
            error_code: self.error_code,
            cr2: self.cr2,
            flags: self.flags,
            rip: self.rip,
            cs: self.cs,
            rflags: self.rflags,
            rsp: self.rsp,
            ss: self.ss,
        }
    }

    /// The vector's mnemonic (`#PF`, ...).
    pub fn vector_name(&self) -> &'static str {
        u8::try_from(self.vector).map_or("#??", vector::name)
    }
}

/// What the dispatcher does after a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapAction {
    /// Return to the interrupted context as `ctx` now describes it.
    Resume,
    /// Not handled: report it and panic, as if no handler were registered.
    Unhandled,
}

/// A per-vector exception handler.
pub type TrapHandler = fn(&mut TrapContext) -> TrapAction;

/// The registered handlers, by vector.
static HANDLERS: RwLock<[Option<TrapHandler>; TRAP_VECTORS]> = RwLock::new([None; TRAP_VECTORS]);

/// Registers `handler` for `vector`, replacing any earlier one.
///
/// Panics unless `vector` is one of [`KIT_VECTORS`] (the others never reach
/// the kit's stubs).
pub fn set_handler(vector: u8, handler: TrapHandler) {
    assert!(
        is_kit_vector(vector),
        "vector {vector} is not handled by the kit's trap table"
    );
    HANDLERS.write()[usize::from(vector)] = Some(handler);
}

/// Removes the handler of `vector`: its exceptions are reported and panic again.
pub fn clear_handler(vector: u8) {
    if let Some(slot) = HANDLERS.write().get_mut(usize::from(vector)) {
        *slot = None;
    }
}

/// The handler registered for `vector`, if any (and if the table is not being
/// written right now).
fn handler(vector: u64) -> Option<TrapHandler> {
    let table = HANDLERS.try_read()?;
    usize::try_from(vector)
        .ok()
        .and_then(|v| table.get(v).copied().flatten())
}

/// Reports an exception nobody handles and panics (the panic handler shuts the
/// domain down as crashed).
pub fn report_unhandled(ctx: &TrapContext) -> ! {
    crate::println!(
        "unhandled {} at rip={:#x} cr2={:#x} error={:#x}",
        ctx.vector_name(),
        ctx.rip,
        ctx.cr2,
        ctx.error_code
    );
    panic!("unhandled {} (vector {})", ctx.vector_name(), ctx.vector)
}

/// Handles the exception `ctx` describes as the entry stubs do:
/// 1. an event from guest user mode (a user exception or `syscall`) goes to
///    the user-mode runner ([`crate::user`]) when a program runs;
/// 2. a #PF at a probe instruction resumes the probe ([`crate::mm::probe`]);
/// 3. otherwise the handler registered for `ctx.vector` runs, and
///    [`report_unhandled`] if there is none or it returns
///    [`TrapAction::Unhandled`].
///
/// Returns when the interrupted context may resume as `ctx` now describes it.
pub fn dispatch(ctx: &mut TrapContext) {
    if ctx.vector == EVENT_VECTOR {
        // An upcall, from kernel or user mode alike: the iret goes back to
        // wherever it interrupted (the frame's flags say which mode).
        crate::events::upcall();
        return;
    }
    if ctx.flags & FRAME_FLAG_USER_MODE != 0 && crate::user::on_user_event(ctx) {
        return;
    }
    if crate::mm::probe::fixup(ctx) {
        return;
    }
    let action = match handler(ctx.vector) {
        Some(handler) => handler(ctx),
        None => TrapAction::Unhandled,
    };
    match action {
        TrapAction::Resume => {}
        TrapAction::Unhandled => report_unhandled(ctx),
    }
}

/// What the entry stubs call, with rdi = the `TrapContext` they built.
#[cfg(target_os = "none")]
extern "C" fn trap_entry(ctx: &mut TrapContext) {
    dispatch(ctx);
}

// The entry stubs (one per vector 0..31, each pushing the GPRs and its
// vector) and the table of their addresses.
#[cfg(target_os = "none")]
core::arch::global_asm!(
    ".pushsection .text.pv_trap_entry, \"ax\", @progbits",
    // Every general register, rax pushed last (TrapContext order).
    ".macro PV_SAVE_GPRS",
    "push r15; push r14; push r13; push r12; push r11; push r10; push r9; push r8",
    "push rbp; push rdi; push rsi; push rdx; push rcx; push rbx; push rax",
    ".endm",
    ".irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".p2align 4",
    ".Lpv_trap_entry_\\vec:",
    "PV_SAVE_GPRS",
    "push \\vec",
    "jmp .Lpv_trap_common",
    ".endr",
    "",
    // The syscall callback (MM-7): the same frame, a pseudo-vector.
    ".p2align 4",
    ".Lpv_syscall_entry:",
    "PV_SAVE_GPRS",
    "push {syscall_vector}",
    "jmp .Lpv_trap_common",
    "",
    // The event callback (EVT-5): the same frame, another pseudo-vector.
    ".p2align 4",
    ".Lpv_event_entry:",
    "PV_SAVE_GPRS",
    "push {event_vector}",
    "jmp .Lpv_trap_common",
    "",
    ".p2align 4",
    ".Lpv_trap_common:",
    "mov rdi, rsp",
    "mov rbx, rsp",
    "and rsp, -16",
    "cld",
    "call {dispatch}",
    "mov rsp, rbx",
    "add rsp, 8",
    "pop rax",
    "pop rbx",
    "pop rcx",
    "pop rdx",
    "pop rsi",
    "pop rdi",
    "pop rbp",
    "pop r8",
    "pop r9",
    "pop r10",
    "pop r11",
    "pop r12",
    "pop r13",
    "pop r14",
    "pop r15",
    "add rsp, 16",
    "jmp {page} + {iret}",
    ".popsection",
    "",
    ".pushsection .rodata.pv_trap_entries, \"a\", @progbits",
    ".p2align 3",
    ".globl __pv_guest_kit_trap_entries",
    "__pv_guest_kit_trap_entries:",
    ".irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".quad .Lpv_trap_entry_\\vec",
    ".endr",
    ".globl __pv_guest_kit_syscall_entry",
    "__pv_guest_kit_syscall_entry:",
    ".quad .Lpv_syscall_entry",
    ".globl __pv_guest_kit_event_entry",
    "__pv_guest_kit_event_entry:",
    ".quad .Lpv_event_entry",
    ".popsection",
    dispatch = sym trap_entry,
    syscall_vector = const SYSCALL_VECTOR,
    event_vector = const EVENT_VECTOR,
    page = sym crate::hypercall::HYPERCALL_PAGE,
    iret = const crate::hypercall::stub_offset(hypercall_abi::Hypercall::Iret),
);

/// Address of the kit's entry stub for `vector` (0 on the host).
fn entry_point(vector: u8) -> u64 {
    #[cfg(target_os = "none")]
    {
        extern "C" {
            /// The stub addresses, by vector (defined in the asm above).
            static __pv_guest_kit_trap_entries: [u64; TRAP_VECTORS];
        }
        // SAFETY: the asm above defines the table as 32 initialised quads in
        // read-only memory; nothing writes it.
        let table = unsafe { &__pv_guest_kit_trap_entries };
        table.get(usize::from(vector)).copied().unwrap_or(0)
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = vector;
        0
    }
}

/// Address of the kit's syscall stub, the callback for user `syscall`s
/// (MM-7, registered by [`crate::user`]; 0 on the host).
pub fn syscall_entry_point() -> u64 {
    #[cfg(target_os = "none")]
    {
        extern "C" {
            /// The stub's address (defined in the asm above).
            static __pv_guest_kit_syscall_entry: u64;
        }
        // SAFETY: the asm above defines it as one initialised quad in
        // read-only memory; nothing writes it.
        unsafe { __pv_guest_kit_syscall_entry }
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

/// Address of the kit's event stub, the event callback (EVT-5, registered
/// by [`crate::events`]; 0 on the host).
pub fn event_entry_point() -> u64 {
    #[cfg(target_os = "none")]
    {
        extern "C" {
            /// The stub's address (defined in the asm above).
            static __pv_guest_kit_event_entry: u64;
        }
        // SAFETY: the asm above defines it as one initialised quad in
        // read-only memory; nothing writes it.
        unsafe { __pv_guest_kit_event_entry }
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

/// The kit's trap table: each of [`KIT_VECTORS`] → its entry stub, or → 0
/// (removed) when `remove`.
fn table(remove: bool) -> [TrapInfo; KIT_VECTORS.len()] {
    KIT_VECTORS.map(|vector| TrapInfo {
        vector,
        // `int3` and `into` may be used deliberately (debuggers, checks).
        flags: if matches!(vector, vector::BP | vector::OF) {
            TRAP_FLAG_USER_INT
        } else {
            0
        },
        reserved: [0; 6],
        address: if remove { 0 } else { entry_point(vector) },
    })
}

/// Registers the kit's entry stubs for [`KIT_VECTORS`] with the hypervisor
/// (`kit_start` does this before `main`).
pub fn install() -> Result<(), Errno> {
    let table = table(false);
    // SAFETY: every address is one of the entry stubs above, which follow the
    // bounce protocol (HC-13): they build a TrapContext on the frame and leave
    // through the iret stub.
    unsafe { crate::hypercall::set_trap_table(&table) }
}

/// Removes every handler of the kit's table from the hypervisor, so that an
/// exception kills the domain instead of reaching the kit (crash tests).
/// [`install`] undoes it.
///
/// Each vector is removed by an entry with address 0 (HC-13), which works
/// whether or not the hypervisor also treats an empty table as "clear all".
pub fn clear_table() -> Result<(), Errno> {
    let table = table(true);
    // SAFETY: entries with address 0 only remove handlers.
    unsafe { crate::hypercall::set_trap_table(&table) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kit_vectors() {
        for v in 0..=255u8 {
            let expected = v < 22 && ![2, 8, 9, 15, 18].contains(&v);
            assert_eq!(is_kit_vector(v), expected, "vector {v}");
        }
    }

    #[test]
    fn tables() {
        let removal = table(true);
        assert!(removal
            .iter()
            .all(|e| e.address == 0 && e.reserved == [0; 6]));
        assert_eq!(removal.map(|e| e.vector), KIT_VECTORS);
        assert_eq!(removal[3].flags, TRAP_FLAG_USER_INT);
        assert_eq!(removal[13].flags, 0);
    }

    fn skip_two(ctx: &mut TrapContext) -> TrapAction {
        ctx.rip += 2;
        TrapAction::Resume
    }

    #[test]
    fn handlers_register_and_clear() {
        assert!(handler(u64::from(vector::UD)).is_none());
        set_handler(vector::UD, skip_two);
        let mut ctx = TrapContext {
            vector: 6,
            rip: 0x40_1000,
            ..Default::default()
        };
        dispatch(&mut ctx);
        assert_eq!(ctx.rip, 0x40_1002);
        assert_eq!(ctx.vector_name(), "#UD");
        clear_handler(vector::UD);
        assert!(handler(u64::from(vector::UD)).is_none());
        assert!(handler(99).is_none());
    }

    #[test]
    #[should_panic(expected = "not handled by the kit")]
    fn nmi_cannot_be_handled() {
        set_handler(vector::NMI, skip_two);
    }
}
