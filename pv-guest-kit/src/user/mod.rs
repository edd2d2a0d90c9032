//! Guest user mode (SPEC.md MM-7): user programs in their own address
//! spaces, their system calls and their faults.
//!
//! A [`Program`] is code linked into the guest image (typically a
//! page-aligned `global_asm!` block that only uses `syscall`). A [`Process`]
//! gives it a user address space holding *only* its text pages (read-only, at
//! the same virtual addresses as in the kernel image), a stack and the data
//! pages the kernel adds — no kernel mapping, so user code cannot reach kernel
//! memory.
//!
//! [`Process::run`] enters user mode and runs a loop: every user `syscall` and
//! every user exception comes back to the kernel as an event (see
//! [`entry`]); the kernel's [`Supervisor`] decides to resume the program
//! (with changed registers, e.g. a syscall result in rax), end it, or kill it.
//!
//! Syscall convention of the kit's programs: number in rax, arguments in rdi,
//! rsi, rdx; result in rax; rcx and r11 are clobbered (as by `syscall`).
//!
//! Only [`entry`] (asm and the hypercalls that register it) uses `unsafe`.
#![deny(unsafe_code)]

mod entry;

pub(crate) use entry::on_user_event;

use alloc::vec::Vec;

use hypercall_abi::trap::FRAME_FLAG_SYSCALL;
use hypercall_abi::{Errno, PAGE_SIZE};

use crate::mm::{layout, AddressSpace, Frame, MmError};
use crate::traps::TrapContext;

/// Top of every process's stack.
pub const USER_STACK_TOP: u64 = 0x0000_7000_0000_0000;
/// Pages of user stack.
pub const USER_STACK_PAGES: u64 = 4;

/// A user program linked into the image.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    /// Name for reports.
    pub name: &'static str,
    /// First byte of its code (page aligned).
    pub text_start: u64,
    /// End of its code (exclusive).
    pub text_end: u64,
    /// Where it starts.
    pub entry: u64,
}

/// A user context: the general registers, rip, rsp and rflags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UserRegs {
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
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
}

// The asm in `entry` addresses the fields by `offset_of!`; this pins the shape.
const _: () = assert!(core::mem::size_of::<UserRegs>() == 18 * 8);
const _: () = assert!(core::mem::offset_of!(UserRegs, rip) == 15 * 8);

impl UserRegs {
    /// The user context a trap or syscall frame describes.
    fn from_trap(ctx: &TrapContext) -> UserRegs {
        UserRegs {
            rax: ctx.rax,
            rbx: ctx.rbx,
            rcx: ctx.rcx,
            rdx: ctx.rdx,
            rsi: ctx.rsi,
            rdi: ctx.rdi,
            rbp: ctx.rbp,
            r8: ctx.r8,
            r9: ctx.r9,
            r10: ctx.r10,
            r11: ctx.r11,
            r12: ctx.r12,
            r13: ctx.r13,
            r14: ctx.r14,
            r15: ctx.r15,
            rip: ctx.rip,
            rsp: ctx.rsp,
            rflags: ctx.rflags,
        }
    }
}

/// An exception raised by user code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserFault {
    /// Exception vector.
    pub vector: u8,
    /// Hardware error code.
    pub error_code: u64,
    /// Faulting address (#PF).
    pub cr2: u64,
    /// Where it happened.
    pub rip: u64,
}

impl UserFault {
    /// The vector's mnemonic.
    pub fn name(&self) -> &'static str {
        hypercall_abi::trap::vector::name(self.vector)
    }
}

/// What the kernel does after a user event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Return to user mode with the (possibly changed) registers.
    Resume,
    /// End the program with this exit code.
    Exit(u64),
    /// Kill the program.
    Kill,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The supervisor ended it with [`Control::Exit`].
    Exited(u64),
    /// The supervisor killed it after this fault.
    Killed(UserFault),
    /// The supervisor killed it in a syscall.
    KilledInSyscall(u64),
}

/// The kernel side of a running program.
pub trait Supervisor {
    /// A `syscall`: `regs.rax` holds the number; set the result in `regs.rax`.
    fn syscall(&mut self, process: &mut Process, regs: &mut UserRegs) -> Control;

    /// An exception; by default the program is killed.
    fn fault(&mut self, process: &mut Process, fault: &UserFault, regs: &mut UserRegs) -> Control {
        let _ = (process, fault, regs);
        Control::Kill
    }
}

/// Why a user run could not start or finish cleanly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserError {
    /// A page-table operation failed.
    Mm(MmError),
    /// `stack_switch` or `set_callbacks` failed.
    Hypercall(Errno),
}

impl From<MmError> for UserError {
    fn from(err: MmError) -> Self {
        UserError::Mm(err)
    }
}

impl core::fmt::Display for UserError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            UserError::Mm(err) => write!(f, "{err}"),
            UserError::Hypercall(errno) => write!(f, "hypercall failed: {errno}"),
        }
    }
}

/// A user program with its address space, stack and data pages.
#[derive(Debug)]
pub struct Process {
    name: &'static str,
    entry: u64,
    space: AddressSpace,
    /// The user-writable pages: (va, frame).
    pages: Vec<(u64, Frame)>,
}

impl Process {
    /// A new process for `program`: a user address space with the program's
    /// text pages (read-only, same addresses as in the image) and a zeroed
    /// stack of [`USER_STACK_PAGES`] below [`USER_STACK_TOP`].
    pub fn new(program: &Program) -> Result<Process, MmError> {
        let layout = layout();
        let start = program.text_start & !(PAGE_SIZE - 1);
        if program.text_end <= start
            || !layout.in_physmap(start)
            || !layout.in_physmap(program.text_end - 1)
            || !(start..program.text_end).contains(&program.entry)
        {
            return Err(MmError::BadAddress(program.text_start));
        }
        let mut process = Process {
            name: program.name,
            entry: program.entry,
            space: AddressSpace::new_user()?,
            pages: Vec::new(),
        };
        let mut va = start;
        while va < program.text_end {
            let pfn = (va - layout.virt_base) / PAGE_SIZE;
            process.space.map(va, pfn, false)?;
            va += PAGE_SIZE;
        }
        process.add_pages(
            USER_STACK_TOP - USER_STACK_PAGES * PAGE_SIZE,
            USER_STACK_PAGES,
        )?;
        crate::mm::flush()?;
        Ok(process)
    }

    /// The program's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The process's address space.
    pub fn space(&self) -> &AddressSpace {
        &self.space
    }

    /// Maps `count` zeroed, user-writable pages at `va`.
    pub fn add_pages(&mut self, va: u64, count: u64) -> Result<(), MmError> {
        for i in 0..count {
            let frame = Frame::alloc_zeroed()?;
            let page = va + i * PAGE_SIZE;
            self.space.map(page, frame.pfn(), true)?;
            self.pages.push((page, frame));
        }
        crate::mm::flush()
    }

    /// The frame behind user-writable page `va` (page aligned).
    fn page_mut(&mut self, va: u64) -> Option<&mut Frame> {
        self.pages
            .iter_mut()
            .find(|(page, _)| *page == va)
            .map(|(_, frame)| frame)
    }

    /// Copies `bytes` to user address `va`; only the process's writable
    /// pages can be written. `Err(address)` at the first page that is not one.
    pub fn write_user(&mut self, va: u64, bytes: &[u8]) -> Result<(), u64> {
        let mut done = 0usize;
        while done < bytes.len() {
            let at = va.checked_add(done as u64).ok_or(va)?;
            let offset = (at % PAGE_SIZE) as usize;
            let chunk = (PAGE_SIZE as usize - offset).min(bytes.len() - done);
            let frame = self.page_mut(at - offset as u64).ok_or(at)?;
            frame.write_bytes(offset, &bytes[done..done + chunk]);
            done += chunk;
        }
        Ok(())
    }

    /// Copies user memory at `va` into `buf` through the process's page
    /// tables (any page mapped in its address space). `Err(address)` at the
    /// first unmapped page.
    pub fn read_user(&self, va: u64, buf: &mut [u8]) -> Result<(), u64> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = va.checked_add(done as u64).ok_or(va)?;
            let offset = at % PAGE_SIZE;
            let chunk = (PAGE_SIZE - offset).min((buf.len() - done) as u64) as usize;
            let pfn = match self.space.translate(at - offset) {
                Ok(Some(t)) => t.pfn.ok_or(at)?,
                _ => return Err(at),
            };
            crate::mm::physmap::read_bytes(
                layout().pfn_va(pfn) + offset,
                &mut buf[done..done + chunk],
            );
            done += chunk;
        }
        Ok(())
    }

    /// Runs the program from its entry with `args` in rdi, rsi, rdx, r10, r8,
    /// r9, until `supervisor` ends or kills it.
    pub fn run(
        &mut self,
        supervisor: &mut dyn Supervisor,
        args: [u64; 6],
    ) -> Result<Outcome, UserError> {
        let regs = UserRegs {
            rdi: args[0],
            rsi: args[1],
            rdx: args[2],
            r10: args[3],
            r8: args[4],
            r9: args[5],
            rip: self.entry,
            rsp: USER_STACK_TOP,
            ..UserRegs::default()
        };
        self.run_from(supervisor, regs)
    }

    /// Runs the program from the context `regs`.
    pub fn run_from(
        &mut self,
        supervisor: &mut dyn Supervisor,
        mut regs: UserRegs,
    ) -> Result<Outcome, UserError> {
        entry::install_kernel_entry().map_err(UserError::Hypercall)?;
        self.space.set_user()?;
        let outcome = loop {
            let event = entry::enter(&regs);
            regs = UserRegs::from_trap(&event);
            if event.flags & FRAME_FLAG_SYSCALL != 0 {
                match supervisor.syscall(self, &mut regs) {
                    Control::Resume => {}
                    Control::Exit(code) => break Outcome::Exited(code),
                    Control::Kill => break Outcome::KilledInSyscall(regs.rax),
                }
            } else {
                let fault = UserFault {
                    vector: u8::try_from(event.vector).unwrap_or(u8::MAX),
                    error_code: event.error_code,
                    cr2: event.cr2,
                    rip: event.rip,
                };
                match supervisor.fault(self, &fault, &mut regs) {
                    Control::Resume => {}
                    Control::Exit(code) => break Outcome::Exited(code),
                    Control::Kill => break Outcome::Killed(fault),
                }
            }
        };
        crate::mm::clear_user()?;
        Ok(outcome)
    }

    /// Frees the address space, then the stack and data frames.
    pub fn destroy(self) -> Result<(), MmError> {
        let Process { space, pages, .. } = self;
        match space.destroy() {
            Ok(()) => {
                drop(pages);
                Ok(())
            }
            Err(err) => {
                // Still mapped: never hand these frames out again.
                core::mem::forget(pages);
                Err(err)
            }
        }
    }
}
