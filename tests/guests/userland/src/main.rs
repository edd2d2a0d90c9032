//! `userland`: guest user mode (SPEC.md MM-7). The kernel runs two user
//! programs, each in its own user address space holding only its text, its
//! stack and its data page, and serves their syscalls:
//!
//! | rax | syscall | arguments | result |
//! |---:|---|---|---|
//! | 1 | write | rdi = buffer, rsi = length | bytes written |
//! | 2 | counter | — | a counter shared by all programs, incremented |
//! | 3 | exit | rdi = code | does not return |
//!
//! Each program also reads (a) a kernel address (`start_info`) and (b) the
//! other program's data page: both must fault in user mode (#PF with
//! `FRAME_FLAG_USER_MODE`), which the kernel reports and resumes past. A
//! third run makes program 1 fault where nothing expects it: it is killed and
//! the kernel goes on. Panics on any failed check.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use hypercall_abi::hypercall::Features;
use hypercall_abi::start_info::StartInfo;
use hypercall_abi::trap::vector;
use hypercall_abi::PAGE_SIZE;
use pv_guest_kit::mm::{self, layout};
use pv_guest_kit::println;
use pv_guest_kit::user::{
    Control, Outcome, Process, Program, Supervisor, UserFault, UserRegs, USER_STACK_PAGES,
};

pv_guest_kit::entry!(kmain);

/// `write(buf, len)`.
const SYS_WRITE: u64 = 1;
/// `counter()`.
const SYS_COUNTER: u64 = 2;
/// `exit(code)`.
const SYS_EXIT: u64 = 3;
/// What the kernel puts in rax when it resumes a program after an expected
/// fault (the programs check it).
const FAULT_MARK: u64 = 0xfa17;
/// Exit code of a program whose probe did *not* fault.
const ISOLATION_BROKEN: u64 = 0xbad;
/// Longest write the kernel copies.
const WRITE_MAX: usize = 256;

/// Each program's data page.
const DATA: [u64; 2] = [0x0000_4000_0000_0000, 0x0000_4000_0010_0000];
/// Where program 1 stores its counter sum in its data page.
const SUM_OFFSET: u64 = 2048;

fn kmain(si: &'static StartInfo) {
    let features = pv_guest_kit::hypercall::features().unwrap_or(Features::empty());
    assert!(
        features.contains(Features::GUEST_USER_MODE),
        "userland: no GUEST_USER_MODE feature bit ({features:?})"
    );
    let programs = [program_a(), program_b()];
    let messages: [&[u8]; 2] = [b"hello from user program 1", b"user program 2 reporting"];
    let kernel_va = si as *const StartInfo as u64;
    let free_at_start = mm::free_frames();

    let mut processes = [0, 1].map(|n| {
        let mut process = Process::new(&programs[n])
            .unwrap_or_else(|err| panic!("userland: program {}: {err}", n + 1));
        process
            .add_pages(DATA[n], 1)
            .unwrap_or_else(|err| panic!("userland: data page: {err}"));
        if process.write_user(DATA[n], messages[n]).is_err() {
            panic!("userland: cannot write program {}'s data page", n + 1);
        }
        process
    });
    for (n, process) in processes.iter().enumerate() {
        check_only_own_pages(n, process, &programs[n]);
    }

    let mut kernel = Kernel {
        counter: 0,
        current: 0,
        probes: [0; 2],
        faults: 0,
    };
    let mut codes = [0u64; 2];
    for (n, process) in processes.iter_mut().enumerate() {
        kernel.current = n;
        kernel.probes = [kernel_va, DATA[1 - n]];
        let faults_before = kernel.faults;
        let args = [
            kernel_va,
            DATA[1 - n],
            DATA[n],
            messages[n].len() as u64,
            0,
            0,
        ];
        match process.run(&mut kernel, args) {
            Ok(Outcome::Exited(code)) if code != ISOLATION_BROKEN => {
                println!("userland: program {} exited with code {code}", n + 1);
                codes[n] = code;
            }
            Ok(outcome) => panic!("userland: program {} ended with {outcome:?}", n + 1),
            Err(err) => panic!("userland: running program {}: {err}", n + 1),
        }
        assert_eq!(
            kernel.faults - faults_before,
            2,
            "userland: program {} did not fault twice",
            n + 1
        );
    }
    // Program 1 read the counter twice (1, 2), program 2 once (3).
    assert_eq!(codes, [3, 3], "userland: exit codes");
    let mut sum = [0u8; 8];
    if processes[0]
        .read_user(DATA[0] + SUM_OFFSET, &mut sum)
        .is_err()
    {
        panic!("userland: cannot read program 1's data page");
    }
    assert_eq!(
        u64::from_le_bytes(sum),
        3,
        "userland: program 1's stored sum"
    );
    println!("userland: program 1 stored its counter sum in its own data page: ok");

    // A fault nobody expects kills the program, not the kernel.
    kernel.current = 0;
    kernel.probes = [u64::MAX; 2];
    let bad = [0x10, DATA[1], DATA[0], messages[0].len() as u64, 0, 0];
    match processes[0].run(&mut kernel, bad) {
        Ok(Outcome::Killed(fault)) if fault.vector == vector::PF && fault.cr2 == 0x10 => {
            println!(
                "userland: program 1 killed after {} at cr2={:#x} rip={:#x}: ok",
                fault.name(),
                fault.cr2,
                fault.rip
            );
        }
        other => panic!("userland: unexpected fault was not a kill: {other:?}"),
    }

    for process in processes {
        let name = process.name();
        if let Err(err) = process.destroy() {
            panic!("userland: destroying {name}: {err}");
        }
    }
    assert_eq!(
        mm::free_frames(),
        free_at_start,
        "userland: frames leaked by the processes"
    );
    println!("userland: both programs ran, isolation held");
}

/// The user address space maps the program's text, its stack and its data
/// page, and nothing else.
fn check_only_own_pages(n: usize, process: &Process, program: &Program) {
    let mappings = process
        .space()
        .mappings()
        .unwrap_or_else(|err| panic!("userland: walking program {}'s tables: {err}", n + 1));
    let text_pages = (program.text_end - program.text_start).div_ceil(PAGE_SIZE);
    assert_eq!(
        mappings.len() as u64,
        text_pages + USER_STACK_PAGES + 1,
        "userland: program {} maps {:?}",
        n + 1,
        mappings
    );
    for &(va, entry) in &mappings {
        let text = (program.text_start..program.text_end).contains(&va);
        let writable = entry & hypercall_abi::mm::pte::RW != 0;
        assert!(
            text != writable,
            "userland: program {}: {va:#x} -> {entry:#x}",
            n + 1
        );
        if !text {
            assert!(
                !layout().in_physmap(va),
                "userland: program {}: kernel address {va:#x} mapped",
                n + 1
            );
        }
    }
    println!(
        "userland: program {} address space: {} text pages (read-only), {} stack pages, 1 data page, nothing else: ok",
        n + 1,
        text_pages,
        USER_STACK_PAGES
    );
}

/// The kernel side of the programs.
struct Kernel {
    counter: u64,
    /// Index of the running program.
    current: usize,
    /// The addresses the running program is expected to fault on: a kernel
    /// address and the other program's data page.
    probes: [u64; 2],
    faults: u64,
}

impl Supervisor for Kernel {
    fn syscall(&mut self, process: &mut Process, regs: &mut UserRegs) -> Control {
        let n = self.current + 1;
        if regs.rcx != regs.rip {
            panic!(
                "userland: syscall frame rip {:#x} differs from rcx {:#x}",
                regs.rip, regs.rcx
            );
        }
        match regs.rax {
            SYS_WRITE => {
                let len = usize::try_from(regs.rsi)
                    .unwrap_or(usize::MAX)
                    .min(WRITE_MAX);
                let mut buf = [0u8; WRITE_MAX];
                match process.read_user(regs.rdi, &mut buf[..len]) {
                    Ok(()) => {
                        let text = core::str::from_utf8(&buf[..len]).unwrap_or("<not UTF-8>");
                        println!("userland: program {n} says: {text}");
                        regs.rax = len as u64;
                    }
                    Err(at) => {
                        println!("userland: program {n} passed a bad buffer at {at:#x}");
                        regs.rax = u64::MAX;
                    }
                }
                Control::Resume
            }
            SYS_COUNTER => {
                self.counter += 1;
                regs.rax = self.counter;
                Control::Resume
            }
            SYS_EXIT => Control::Exit(regs.rdi),
            other => {
                println!("userland: program {n}: unknown syscall {other}");
                regs.rax = u64::MAX;
                Control::Resume
            }
        }
    }

    fn fault(&mut self, _process: &mut Process, fault: &UserFault, regs: &mut UserRegs) -> Control {
        let n = self.current + 1;
        if fault.vector != vector::PF {
            return Control::Kill;
        }
        if fault.cr2 == self.probes[0] {
            println!(
                "userland: program {n} faulted reading kernel memory at {:#x}, isolated",
                fault.cr2
            );
        } else if fault.cr2 == self.probes[1] {
            println!(
                "userland: program {n} faulted reading program {}'s data at {:#x}, isolated",
                2 - self.current,
                fault.cr2
            );
        } else {
            return Control::Kill;
        }
        self.faults += 1;
        // The programs put the resume address in rbx before each probe.
        regs.rip = regs.rbx;
        regs.rax = FAULT_MARK;
        Control::Resume
    }
}

// The two user programs. Each is a page-aligned block of code that only uses
// registers, its stack, its own data page and `syscall`. At entry: rdi = a
// kernel address, rsi = the other program's data page, rdx = its own data
// page (a message at offset 0), r10 = the message length.
#[cfg(target_os = "none")]
core::arch::global_asm!(
    ".pushsection .text.userland_programs, \"ax\", @progbits",
    ".p2align 12",
    ".globl userland_prog_a_start",
    "userland_prog_a_start:",
    // Program 1: write, counter twice, store the sum, probe, exit(sum).
    "mov r12, rdi",
    "mov r13, rsi",
    "mov r14, rdx",
    "mov r15, r10",
    "mov eax, {write}",
    "mov rdi, r14",
    "mov rsi, r15",
    "syscall",
    "mov eax, {counter}",
    "syscall",
    "mov rbp, rax",
    "mov eax, {counter}",
    "syscall",
    "add rbp, rax",
    "push rbp",
    "pop rbx",
    "mov qword ptr [r14 + {sum}], rbx",
    "lea rbx, [rip + 2f]",
    "xor eax, eax",
    "mov rax, qword ptr [r12]",
    "2:",
    "cmp rax, {mark}",
    "jne 8f",
    "lea rbx, [rip + 3f]",
    "xor eax, eax",
    "mov rax, qword ptr [r13]",
    "3:",
    "cmp rax, {mark}",
    "jne 8f",
    "mov eax, {exit}",
    "mov rdi, rbp",
    "syscall",
    "ud2",
    "8:",
    "mov eax, {exit}",
    "mov edi, {broken}",
    "syscall",
    "ud2",
    ".p2align 12",
    ".globl userland_prog_a_end",
    "userland_prog_a_end:",
    "",
    ".globl userland_prog_b_start",
    "userland_prog_b_start:",
    // Program 2: write, probe the other program first, then the kernel,
    // counter once, exit(counter).
    "mov r12, rdi",
    "mov r13, rsi",
    "mov r14, rdx",
    "mov r15, r10",
    "mov eax, {write}",
    "mov rdi, r14",
    "mov rsi, r15",
    "syscall",
    "lea rbx, [rip + 2f]",
    "xor eax, eax",
    "mov rax, qword ptr [r13]",
    "2:",
    "cmp rax, {mark}",
    "jne 8f",
    "lea rbx, [rip + 3f]",
    "xor eax, eax",
    "mov rax, qword ptr [r12]",
    "3:",
    "cmp rax, {mark}",
    "jne 8f",
    "mov eax, {counter}",
    "syscall",
    "mov rdi, rax",
    "mov eax, {exit}",
    "syscall",
    "ud2",
    "8:",
    "mov eax, {exit}",
    "mov edi, {broken}",
    "syscall",
    "ud2",
    ".p2align 12",
    ".globl userland_prog_b_end",
    "userland_prog_b_end:",
    ".popsection",
    write = const SYS_WRITE,
    counter = const SYS_COUNTER,
    exit = const SYS_EXIT,
    mark = const FAULT_MARK,
    broken = const ISOLATION_BROKEN,
    sum = const SUM_OFFSET,
);

#[cfg(target_os = "none")]
extern "C" {
    static userland_prog_a_start: u8;
    static userland_prog_a_end: u8;
    static userland_prog_b_start: u8;
    static userland_prog_b_end: u8;
}

/// Program 1's text.
#[cfg(target_os = "none")]
fn program_a() -> Program {
    let start = &raw const userland_prog_a_start as u64;
    Program {
        name: "program 1",
        text_start: start,
        text_end: &raw const userland_prog_a_end as u64,
        entry: start,
    }
}

/// Program 2's text.
#[cfg(target_os = "none")]
fn program_b() -> Program {
    let start = &raw const userland_prog_b_start as u64;
    Program {
        name: "program 2",
        text_start: start,
        text_end: &raw const userland_prog_b_end as u64,
        entry: start,
    }
}

/// Host stand-ins: the guest never runs on the host.
#[cfg(not(target_os = "none"))]
fn program_a() -> Program {
    unreachable!("userland only runs under Paravane")
}

#[cfg(not(target_os = "none"))]
fn program_b() -> Program {
    unreachable!("userland only runs under Paravane")
}
