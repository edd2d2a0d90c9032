//! Entry-path regressions (SPEC §2, HC-5, HC-13, HC-16): SYSRET to a
//! non-canonical address (XSA-7), single-stepping across `syscall`
//! (XSA-204), `mov ss` right before an entry (XSA-260) and odd RFLAGS bits
//! on entry (XSA-339).
//!
//! What every test checks beyond its own attack: the hypervisor comes back
//! (no `(hv) PANIC`, the judge checks), the hypercall gives its documented
//! result, and every exception the guest receives names a guest rip.

use hypercall_abi::hypercall::VERSION_ABI;
use hypercall_abi::layout::{is_guest_address, LOWER_HALF_END};
use hypercall_abi::mm::{pte, MmuUpdate};
use hypercall_abi::trap::{vector, TrapInfo};
use hypercall_abi::{Errno, Hypercall, PAGE_SIZE};
use pv_guest_kit::hypercall;
use pv_guest_kit::mm::{self, AddressSpace, Frame};
use pv_guest_kit::testing::TestReport;
use pv_guest_kit::user::{Control, Process, Program, Supervisor, UserFault, UserRegs};

use crate::arch::{self, RFLAGS_AC, RFLAGS_DF, RFLAGS_NT, RFLAGS_TF};
use crate::attack::{call, catch, read_machine, update, Tables};
use crate::mmu::setup;

/// The last page of the lower canonical half.
const LAST_PAGE: u64 = LOWER_HALF_END - PAGE_SIZE;
/// Scratch region for the tests' batches.
const SCRATCH: u64 = 0x0000_2000_0000_0000;

/// The ABI version word, for comparing results.
fn abi_word() -> i64 {
    hypercall::version(VERSION_ABI).map_or(-1, |v| v as i64)
}

/// XSA-7: a `syscall` whose next instruction would be at the first
/// non-canonical address (the instruction ends at 2^47) leaves rcx
/// non-canonical. hv-core must not SYSRET there (on Intel that faults in
/// ring 0 on the guest's stack); the guest must get an exception at a
/// canonical rip. Also: every guest-supplied code address is checked
/// (HC-5): a non-canonical handler, callback or `iret` target is refused.
pub fn xsa_7(r: &mut TestReport) {
    let mut code = setup!(r, "a code frame", Frame::alloc_zeroed());
    // `syscall` in the last two bytes of the lower half; int3 before it.
    let mut bytes = [0xccu8; 16];
    bytes[14] = 0x0f;
    bytes[15] = 0x05;
    code.write_bytes(4096 - 16, &bytes);
    let mut kernel = AddressSpace::kernel();
    setup!(
        r,
        "mapping the last page of the lower half",
        kernel
            .map(LAST_PAGE, code.pfn(), false)
            .and_then(|()| mm::pagetable::flush())
    );
    let syscall_at = LOWER_HALF_END - 2;
    let caught = catch(
        &[vector::GP, vector::PF, vector::UD],
        arch::landing(),
        0,
        || {
            // SAFETY: every exception the jump can end in is caught and
            // resumes at the landing.
            unsafe { arch::jump_away(syscall_at, u64::from(Hypercall::Version.number())) }
        },
    );
    match caught {
        None => r.fail(format_args!(
            "a syscall at {syscall_at:#x} returned without an exception"
        )),
        Some(c) if is_guest_address(c.rip) => r.pass(format_args!(
            "a syscall ending at 2^47: {} delivered at canonical rip {:#x}",
            hypercall_abi::trap::vector::name(c.vector),
            c.rip
        )),
        Some(c) => r.fail(format_args!(
            "a syscall ending at 2^47 came back to non-canonical rip {:#x} ({}): the hypervisor returned there",
            c.rip,
            hypercall_abi::trap::vector::name(c.vector)
        )),
    }
    // The same from syscall-floor mode (HC-18), whose entry is a bare
    // SYSRET stub.
    setup!(
        r,
        "entering syscall-floor mode",
        hypercall::bench_syscall_floor()
    );
    // No hypercall (not even `iret`) works in floor mode: the #GP handler
    // ends the mode with a `ud2` before it returns.
    let caught = catch(&[vector::PF, vector::UD], arch::landing(), 0, || {
        pv_guest_kit::traps::set_handler(vector::GP, gp_in_floor_mode);
        // SAFETY: as above.
        unsafe { arch::jump_away(syscall_at, 0) }
    });
    pv_guest_kit::traps::clear_handler(vector::GP);
    let ended = catch(&[vector::UD], 0, 2, arch::ud2);
    r.check(
        ended.is_some_and(|c| c.vector == vector::UD),
        format_args!("the #GP handler's ud2 ended floor mode"),
    );
    match caught {
        Some(c) if is_guest_address(c.rip) => r.pass(format_args!(
            "in syscall-floor mode: {} delivered at canonical rip {:#x}",
            hypercall_abi::trap::vector::name(c.vector),
            c.rip
        )),
        other => r.fail(format_args!(
            "in syscall-floor mode a syscall ending at 2^47 came back as {other:?}"
        )),
    }
    user_mode_syscall_at_the_top(r);
    setup!(
        r,
        "unmapping the last page",
        kernel
            .unmap(LAST_PAGE)
            .and_then(|()| mm::pagetable::tlb_flush_local())
    );
    drop(code);

    // Guest-supplied code addresses.
    for bad in [LOWER_HALF_END, 0xffff_8000_0000_0000, 0x8000_0000_0000_0000] {
        let table = [TrapInfo {
            vector: vector::BP,
            flags: 0,
            reserved: [0; 6],
            address: bad,
        }];
        r.refused(
            &alloc::format!("a #BP handler at {bad:#x}"),
            call(Hypercall::SetTrapTable, [table.as_ptr() as u64, 1, 0, 0, 0]),
            Errno::EINVAL,
        );
        r.refused(
            &alloc::format!("a syscall callback at {bad:#x}"),
            call(Hypercall::SetCallbacks, [0, 0, bad, 0, 0]),
            Errno::EINVAL,
        );
        r.refused(
            &alloc::format!("an event callback at {bad:#x}"),
            call(Hypercall::SetCallbacks, [bad, 0, 0, 0, 0]),
            Errno::EINVAL,
        );
    }
    r.refused(
        "a kernel stack just past 2^47",
        call(Hypercall::StackSwitch, [LOWER_HALF_END + 1, 0, 0, 0, 0]),
        Errno::EINVAL,
    );
    // The old trap table stayed: int3 still reaches the kit.
    let seen = catch(&[vector::BP], 0, 0, || {
        // SAFETY: int3 traps; the handler resumes after it.
        unsafe { arch::int3() };
    });
    r.check(
        seen.is_some_and(|c| c.vector == vector::BP),
        format_args!("the trap table survived the refused updates"),
    );
    // An `iret` to a non-canonical rip: refused, the stub's ud2 follows.
    let iret = catch(&[vector::BP, vector::UD], 0, 0, || {
        pv_guest_kit::traps::set_handler(vector::BP, redirect_to_noncanonical);
        // SAFETY: the #BP handler returns to a non-canonical rip; the
        // refused iret ends in the stub's ud2, whose handler lands here.
        unsafe { arch::int3() };
    });
    r.check(
        iret.is_some_and(|c| c.vector == vector::UD && is_guest_address(c.rip)),
        format_args!(
            "an iret to {LOWER_HALF_END:#x} is refused and ends in the stub's ud2 ({iret:?})"
        ),
    );
}

/// #GP handler in syscall-floor mode: records, ends the mode (`ud2`, HC-18)
/// so that its `iret` works, and resumes at the landing.
fn gp_in_floor_mode(ctx: &mut pv_guest_kit::traps::TrapContext) -> pv_guest_kit::traps::TrapAction {
    crate::attack::record_external(ctx);
    arch::ud2();
    ctx.rip = arch::landing();
    pv_guest_kit::traps::TrapAction::Resume
}

/// What the user-mode part of XSA-7 saw.
struct TopSupervisor {
    /// (vector, rip) of a fault, or (0x100, rip) of a syscall event.
    seen: Option<(u64, u64)>,
}

impl Supervisor for TopSupervisor {
    fn syscall(&mut self, _: &mut Process, regs: &mut UserRegs) -> Control {
        self.seen = Some((0x100, regs.rip));
        Control::Kill
    }

    fn fault(&mut self, _: &mut Process, fault: &UserFault, _: &mut UserRegs) -> Control {
        self.seen = Some((u64::from(fault.vector), fault.rip));
        Control::Kill
    }
}

/// XSA-7 from guest user mode: a user program whose `syscall` ends at
/// 2^47 gets a #GP at that instruction; the kernel never sees a
/// non-canonical rip.
fn user_mode_syscall_at_the_top(r: &mut TestReport) {
    let text = arch::landing();
    let program = Program {
        name: "top",
        text_start: text,
        text_end: text + 16,
        entry: text,
    };
    let mut process = setup!(r, "a user process", Process::new(&program));
    setup!(r, "a user page at the top", process.add_pages(LAST_PAGE, 1));
    setup!(
        r,
        "writing the syscall",
        process
            .write_user(LOWER_HALF_END - 2, &[0x0f, 0x05])
            .map_err(|va| alloc::format!("fault at {va:#x}"))
    );
    let mut supervisor = TopSupervisor { seen: None };
    let regs = UserRegs {
        rip: LOWER_HALF_END - 2,
        rsp: pv_guest_kit::user::USER_STACK_TOP,
        ..UserRegs::default()
    };
    let outcome = process.run_from(&mut supervisor, regs);
    r.check(
        outcome.is_ok() && supervisor.seen == Some((u64::from(vector::GP), LOWER_HALF_END - 2)),
        format_args!(
            "in user mode: a syscall ending at 2^47 gets #GP at the syscall ({:x?})",
            supervisor.seen
        ),
    );
    let _ = process.destroy();
}

static RESUME_AFTER_UD: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// #BP handler: returns to the first non-canonical address; the #UD that
/// follows the refused iret resumes after the int3.
fn redirect_to_noncanonical(
    ctx: &mut pv_guest_kit::traps::TrapContext,
) -> pv_guest_kit::traps::TrapAction {
    RESUME_AFTER_UD.store(ctx.rip, core::sync::atomic::Ordering::SeqCst);
    pv_guest_kit::traps::set_handler(vector::UD, resume_after_int3);
    ctx.rip = LOWER_HALF_END;
    pv_guest_kit::traps::TrapAction::Resume
}

/// #UD handler after the refused iret: the #BP handler's frame is still on
/// the stack below; resume the int3's continuation on the original stack.
fn resume_after_int3(
    ctx: &mut pv_guest_kit::traps::TrapContext,
) -> pv_guest_kit::traps::TrapAction {
    // The failed iret left rsp at its IretContext (HC-16: rax, r11, rcx,
    // flags, rip, cs, rflags, rsp, ss): resume where the #BP interrupted,
    // on the stack it had.
    let frame = ctx.rsp;
    let original_rsp = mm::physmap::read_va(frame + 7 * 8);
    ctx.rip = RESUME_AFTER_UD.load(core::sync::atomic::Ordering::SeqCst);
    ctx.rsp = original_rsp;
    crate::attack::record_external(ctx);
    pv_guest_kit::traps::TrapAction::Resume
}

/// XSA-204: `syscall` executed with TF set must not single-step inside the
/// hypervisor (SFMASK clears TF): the hypercall returns its result and the
/// guest gets its #DB afterwards, at a guest rip. Also across a batch that
/// continues (MM-4) and a plain exception.
pub fn xsa_204(r: &mut TestReport) {
    let want = abi_word();
    let mut result = 0;
    let seen = catch(&[vector::DB], 0, 0, || {
        // SAFETY: version has no effect; a #DB handler is installed.
        result = unsafe { arch::flagged_syscall(RFLAGS_TF, 0, [VERSION_ABI, 0, 0]) }.0;
    });
    r.check(
        result == want,
        format_args!("version with TF set returns {result:#x}"),
    );
    r.check(
        seen.is_some_and(|c| is_guest_address(c.rip) && c.rip < mm::layout().physmap_end()),
        format_args!("the #DB arrives in the guest, after the syscall ({seen:?})"),
    );
    // A batch that continues twice (150 requests, 64 per entry).
    let mut kernel = AddressSpace::kernel();
    let t = setup!(r, "scratch tables", Tables::of(&mut kernel, SCRATCH));
    let data = setup!(r, "a data frame", Frame::alloc_zeroed());
    let reqs: alloc::vec::Vec<MmuUpdate> = (0..150u64)
        .map(|i| MmuUpdate {
            ptr: t.l1e + 8 * i,
            val: (data.mfn() << 12) | pte::P,
        })
        .collect();
    let mut done = 0u64;
    let mut ret = -1;
    let seen = catch(&[vector::DB], 0, 0, || {
        // SAFETY: scratch entries mapping an own frame read-only.
        ret = unsafe {
            arch::flagged_syscall(
                RFLAGS_TF,
                u64::from(Hypercall::MmuUpdate.number()),
                [
                    reqs.as_ptr() as u64,
                    150,
                    core::ptr::addr_of_mut!(done) as u64,
                ],
            )
        }
        .0;
    });
    r.check(
        ret == 0 && done == 150,
        format_args!("a continued batch with TF set completes (ret {ret}, done {done})"),
    );
    r.check(
        seen.is_some_and(|c| is_guest_address(c.rip)),
        format_args!("and single-stepping shows up only in the guest ({seen:?})"),
    );
    let clear: alloc::vec::Vec<MmuUpdate> = (0..150u64)
        .map(|i| MmuUpdate {
            ptr: t.l1e + 8 * i,
            val: 0,
        })
        .collect();
    setup!(r, "clearing", update(&clear).map_err(|e| e.errno));
    r.check(
        read_machine(t.l1e) == Some(0),
        format_args!("scratch entries cleared"),
    );
    let _ = mm::pagetable::tlb_flush_local();
    drop(data);
    let _ = kernel.destroy();
}

/// XSA-260: `mov ss` delays the next debug trap by one instruction; an
/// entry instruction right after it (syscall, int3, int 0x80) must still
/// behave: the hypercall returns, the exceptions reach the guest. The
/// data-breakpoint variant is impossible because a guest cannot program
/// debug registers: a ring-3 `mov dr7` faults (#GP), and no hypercall sets
/// them.
pub fn xsa_260(r: &mut TestReport) {
    let want = abi_word();
    // SAFETY: version has no effect.
    let got = unsafe { arch::mov_ss_syscall(0, 0, VERSION_ABI) };
    r.check(
        got == want,
        format_args!("mov ss; syscall returns {got:#x}"),
    );
    let mut got = -1;
    let seen = catch(&[vector::DB], 0, 0, || {
        // SAFETY: version has no effect; a #DB handler is installed.
        got = unsafe { arch::mov_ss_syscall(RFLAGS_TF, 0, VERSION_ABI) };
    });
    r.check(
        got == want,
        format_args!("TF; mov ss; syscall returns {got:#x}"),
    );
    r.check(
        seen.is_some_and(|c| c.vector == vector::DB && is_guest_address(c.rip)),
        format_args!("the single-step #DB arrives in the guest, after the return ({seen:?})"),
    );
    let seen = catch(&[vector::BP], 0, 0, arch::mov_ss_int3);
    r.check(
        seen.is_some_and(|c| c.vector == vector::BP && is_guest_address(c.rip)),
        format_args!("mov ss; int3 delivers #BP to the guest ({seen:?})"),
    );
    let seen = catch(&[vector::GP], arch::after_int80(), 0, arch::mov_ss_int80);
    r.check(
        seen.is_some_and(|c| c.vector == vector::GP),
        format_args!("mov ss; int 0x80 delivers #GP to the guest ({seen:?})"),
    );
    let seen = catch(&[vector::GP], arch::after_dr7(), 0, || {
        arch::write_dr7(0x3 | (0x3 << 16))
    });
    r.check(
        seen.is_some_and(|c| c.vector == vector::GP),
        format_args!("a guest cannot program a data breakpoint: mov dr7 faults ({seen:?})"),
    );
    r.refused(
        "an undefined hypercall (no debug-register call exists)",
        Errno::check(raw_number(40)).map(drop),
        Errno::ENOSYS,
    );
}

/// Hypercall number `nr` with no arguments.
fn raw_number(nr: u32) -> i64 {
    // SAFETY: an undefined number has no effect.
    unsafe { hypercall::hypercall_raw(nr, [0; 5]) }
}

/// XSA-339: hypercalls and exceptions entered with NT, AC, DF (and TF)
/// set must work as with clean flags: hv-core's copies must not run
/// backwards (DF), its exit must not fault (NT), and a handler starts with
/// DF clear (HC-13).
pub fn xsa_339(r: &mut TestReport) {
    let want = abi_word();
    let mut kernel = AddressSpace::kernel();
    let t = setup!(r, "scratch tables", Tables::of(&mut kernel, SCRATCH));
    let data = setup!(r, "a data frame", Frame::alloc_zeroed());
    let combos: [(&str, u64); 5] = [
        ("NT", RFLAGS_NT),
        ("AC", RFLAGS_AC),
        ("DF", RFLAGS_DF),
        ("NT|AC|DF", RFLAGS_NT | RFLAGS_AC | RFLAGS_DF),
        ("NT|AC|DF|TF", RFLAGS_NT | RFLAGS_AC | RFLAGS_DF | RFLAGS_TF),
    ];
    for (name, flags) in combos {
        let mut version = -1;
        let _ = catch(&[vector::DB], 0, 0, || {
            // SAFETY: version has no effect.
            version = unsafe { arch::flagged_syscall(flags, 0, [VERSION_ABI, 0, 0]) }.0;
        });
        r.check(
            version == want,
            format_args!("{name}: version returns {version:#x}"),
        );
        // A copy-in of 64 requests and a copy-out of `done`.
        let reqs: alloc::vec::Vec<MmuUpdate> = (0..64u64)
            .map(|i| MmuUpdate {
                ptr: t.l1e + 8 * i,
                val: if i % 2 == 0 {
                    (data.mfn() << 12) | pte::P
                } else {
                    0
                },
            })
            .collect();
        let mut done = 0u64;
        let mut ret = -1;
        let _ = catch(&[vector::DB], 0, 0, || {
            // SAFETY: scratch entries mapping an own frame read-only.
            ret = unsafe {
                arch::flagged_syscall(
                    flags,
                    u64::from(Hypercall::MmuUpdate.number()),
                    [
                        reqs.as_ptr() as u64,
                        64,
                        core::ptr::addr_of_mut!(done) as u64,
                    ],
                )
            }
            .0;
        });
        let right = (0..64u64).all(|i| {
            let e = read_machine(t.l1e + 8 * i).unwrap_or(u64::MAX);
            if i % 2 == 0 {
                e & pte::ADDR_MASK == data.mfn() << 12 && e & pte::P != 0
            } else {
                e == 0
            }
        });
        r.check(
            ret == 0 && done == 64 && right,
            format_args!("{name}: a 64-request batch is copied in order and applied (ret {ret}, done {done})"),
        );
        let clear: alloc::vec::Vec<MmuUpdate> = (0..64u64)
            .map(|i| MmuUpdate {
                ptr: t.l1e + 8 * i,
                val: 0,
            })
            .collect();
        setup!(r, "clearing", update(&clear).map_err(|e| e.errno));
        // Console output is copied by hv-core too: the line must come out
        // in order (the scenario checks it).
        let text = alloc::format!("xsa-339: console copy with {name} set: 0123456789abcdef\n");
        let mut written = -1;
        let _ = catch(&[vector::DB], 0, 0, || {
            // SAFETY: console_write only reads `text`.
            written = unsafe {
                arch::flagged_syscall(
                    flags,
                    u64::from(Hypercall::ConsoleIo.number()),
                    [0, text.len() as u64, text.as_ptr() as u64],
                )
            }
            .0;
        });
        r.check(
            written == text.len() as i64,
            format_args!("{name}: console_io wrote {written} bytes"),
        );
        // An exception with the flags set: the handler starts with DF
        // clear, the frame holds the flags the guest had.
        let seen = crate::attack::catch_with_live_flags(flags);
        r.check(
            seen.is_some_and(|(frame, live)| {
                live & RFLAGS_DF == 0
                    && frame & (flags & (RFLAGS_DF | RFLAGS_NT)) == flags & (RFLAGS_DF | RFLAGS_NT)
            }),
            format_args!("{name}: int3 reaches the handler with DF clear ({seen:x?})"),
        );
    }
    let _ = mm::pagetable::tlb_flush_local();
    drop(data);
    let _ = kernel.destroy();
}
