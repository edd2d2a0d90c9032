//! Hypercalls through the hypercall page (SPEC.md §2.1, HC-1 .. HC-20,
//! EVT-*, GNT-*).
//!
//! The image reserves [`HYPERCALL_PAGE`] — one page of `int3` in the text
//! segment, named by the `NOTE_HYPERCALL_PAGE` note — and the hypervisor fills
//! it with one 32-byte stub per hypercall before the domain's first
//! instruction. A hypercall is a direct `call page + 32 * n` with the arguments
//! in rdi, rsi, rdx, r10, r8 and the result in rax (`-errno` on failure); the
//! hypervisor preserves every register except rax, rcx and r11.
//!
//! Each wrapper here is the only place its hypercall's register convention is
//! written down on the guest side. Calls whose effect Rust cannot check (code
//! addresses, stacks) are `unsafe fn`s; [`hypercall_raw`] is the escape hatch
//! for tests that pass hostile arguments on purpose.
//!
//! # Host builds
//! There is no hypervisor on the host: every wrapper panics when called.

use hypercall_abi::bench::BENCH_SYSCALL_FLOOR;
use hypercall_abi::console::{CONSOLE_IO_MAX, CONSOLE_READ, CONSOLE_WRITE};
use hypercall_abi::domctl::{DomainInfo, DOMCTL_GET_INFO};
use hypercall_abi::evtchn::{
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindVcpu, EvtchnBindVirq,
    EvtchnStatus, Port, EVTCHNOP_ALLOC_UNBOUND, EVTCHNOP_BIND_INTERDOMAIN, EVTCHNOP_BIND_IPI,
    EVTCHNOP_BIND_VCPU, EVTCHNOP_BIND_VIRQ, EVTCHNOP_CLOSE, EVTCHNOP_SEND, EVTCHNOP_STATUS,
    EVTCHNOP_UNMASK,
};
use hypercall_abi::grant::{
    GnttabCopy, GnttabMapGrantRef, GnttabQuerySize, GnttabSetupTable, GnttabUnmapGrantRef,
    GNTTABOP_COPY, GNTTABOP_MAP_GRANT_REF, GNTTABOP_QUERY_SIZE, GNTTABOP_SETUP_TABLE,
    GNTTABOP_UNMAP_GRANT_REF,
};
use hypercall_abi::hypercall::{
    Features, HYPERCALL_SLOTS, HYPERCALL_STUB_SIZE, VERSION_ABI, VERSION_FEATURES,
};
use hypercall_abi::mm::{MmuUpdate, MmuextOp};
use hypercall_abi::multicall::MulticallEntry;
use hypercall_abi::sched::{
    SchedPoll, SCHEDOP_BLOCK, SCHEDOP_POLL, SCHEDOP_SHUTDOWN, SCHEDOP_YIELD, SHUTDOWN_CRASH,
};
use hypercall_abi::trap::TrapInfo;
use hypercall_abi::vcpu::{
    VcpuContext, VcpuRunstate, VCPUOP_DOWN, VCPUOP_GET_RUNSTATE, VCPUOP_INITIALISE, VCPUOP_IS_UP,
    VCPUOP_UP,
};
use hypercall_abi::{DomId, Errno, Hypercall};

/// The page the hypervisor fills with hypercall stubs: 4 KiB, page aligned.
///
/// Its bytes are never read from Rust: the compiler would see the `0xcc` it was
/// initialised with, not the stubs the hypervisor wrote.
#[repr(C, align(4096))]
pub struct HypercallPage(#[allow(dead_code)] [u8; 4096]);

const _: () = assert!(core::mem::size_of::<HypercallPage>() == hypercall_abi::PAGE_SIZE as usize);
const _: () = assert!(core::mem::align_of::<HypercallPage>() == hypercall_abi::PAGE_SIZE as usize);

impl core::fmt::Debug for HypercallPage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "HypercallPage@{:p}", self)
    }
}

impl HypercallPage {
    /// Virtual address of the page.
    pub fn address(&'static self) -> u64 {
        self as *const Self as u64
    }
}

/// The hypercall page of this image. `guest.ld` keeps its section first in
/// `.text`; the `NOTE_HYPERCALL_PAGE` note (see [`crate::note`]) names it.
#[cfg_attr(target_os = "none", link_section = ".text.hypercall_page")]
pub static HYPERCALL_PAGE: HypercallPage = HypercallPage([0xcc; 4096]);

/// Byte offset of hypercall `nr`'s stub in the page.
pub const fn stub_offset(nr: Hypercall) -> u64 {
    nr.number() as u64 * HYPERCALL_STUB_SIZE
}

/// `call`s the stub of hypercall `$nr` (a constant) with the named argument
/// registers; evaluates to rax as `i64`. Must be used inside `unsafe`.
#[cfg(target_os = "none")]
macro_rules! stub_call {
    ($nr:expr $(, $reg:tt = $arg:expr)* $(,)?) => {{
        let ret: i64;
        core::arch::asm!(
            "call {page} + {offset}",
            page = sym $crate::hypercall::HYPERCALL_PAGE,
            offset = const $crate::hypercall::stub_offset($nr),
            $( in($reg) $arg, )*
            lateout("rax") ret,
            lateout("rcx") _,
            lateout("r11") _,
        );
        ret
    }};
}

/// Host stand-in for `stub_call!`: evaluates the arguments, then panics.
#[cfg(not(target_os = "none"))]
macro_rules! stub_call {
    ($nr:expr $(, $reg:tt = $arg:expr)* $(,)?) => {{
        $( let _ = $arg; )*
        no_hypervisor($nr)
    }};
}

/// What a hypercall does on the host: there is no hypervisor to call.
///
/// # Safety
/// Always safe to call (it panics); `unsafe` only so that host builds of the
/// wrappers need the same `unsafe` blocks as kernel builds.
#[cfg(not(target_os = "none"))]
#[cold]
unsafe fn no_hypervisor(nr: Hypercall) -> i64 {
    panic!(
        "hypercall {} needs the Paravane hypervisor; this is a host build",
        nr.name()
    )
}

/// Calls hypercall number `nr` with five raw argument registers (rdi, rsi, rdx,
/// r10, r8) and returns rax unchanged. For tests that pass hostile arguments;
/// everything else uses the typed wrappers.
///
/// Panics if `nr` is not a stub slot (`nr >= HYPERCALL_SLOTS`).
///
/// # Safety
/// 1. Any argument the hypervisor treats as a pointer into guest memory must be
///    valid for the reads and writes the hypercall does, or point at memory
///    Rust does not use (the hypervisor rejects unmapped pointers with `-EFAULT`).
/// 2. The hypercall's effect must not break the Rust program: no code address,
///    stack or trap table the kit relies on may be replaced with something
///    invalid, and `iret` must only be reached with a valid `IretContext` on
///    the stack (it never returns here).
pub unsafe fn hypercall_raw(nr: u32, args: [u64; 5]) -> i64 {
    assert!(
        u64::from(nr) < HYPERCALL_SLOTS,
        "hypercall {nr} has no stub slot"
    );
    #[cfg(target_os = "none")]
    {
        let target = HYPERCALL_PAGE.address() + u64::from(nr) * HYPERCALL_STUB_SIZE;
        let ret: i64;
        // SAFETY: `target` is a stub in the hypercall page, which follows the
        // hypercall calling convention (clobbers only rax, rcx, r11); what the
        // hypercall does with the arguments is the caller's obligation.
        unsafe {
            core::arch::asm!(
                "call {target}",
                target = in(reg) target,
                in("rdi") args[0],
                in("rsi") args[1],
                in("rdx") args[2],
                in("r10") args[3],
                in("r8") args[4],
                lateout("rax") ret,
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
        ret
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = args;
        panic!("hypercall {nr} needs the Paravane hypervisor; this is a host build")
    }
}

/// `version(cmd)` (HC-10): the raw answer to a `VERSION_*` sub-command.
pub fn version(cmd: u64) -> Result<u64, Errno> {
    // SAFETY: `version` reads and writes no guest memory.
    let ret = unsafe { stub_call!(Hypercall::Version, "rdi" = cmd) };
    Errno::check(ret)
}

/// The hypervisor's ABI version `(major, minor)`, from `version(VERSION_ABI)`.
pub fn abi_version() -> Result<(u32, u32), Errno> {
    let packed = version(VERSION_ABI)?;
    Ok(((packed >> 16) as u32, (packed & 0xffff) as u32))
}

/// The hypervisor's feature bits, from `version(VERSION_FEATURES)`.
pub fn features() -> Result<Features, Errno> {
    version(VERSION_FEATURES).map(Features::from_bits_retain)
}

/// `console_io(CONSOLE_WRITE)` (HC-11): writes all of `bytes`, in chunks of at
/// most `CONSOLE_IO_MAX`. Returns the number of bytes the hypervisor took,
/// which is short only if it stopped taking any. Unbuffered: most code wants
/// [`print!`](crate::print) instead.
pub fn console_write(bytes: &[u8]) -> Result<usize, Errno> {
    let mut done = 0;
    while let Some(rest) = bytes.get(done..).filter(|rest| !rest.is_empty()) {
        let chunk = rest.get(..CONSOLE_IO_MAX as usize).unwrap_or(rest);
        // SAFETY: `chunk` is valid for reads of `chunk.len()` bytes; the
        // hypervisor only reads it.
        let ret = unsafe {
            stub_call!(
                Hypercall::ConsoleIo,
                "rdi" = CONSOLE_WRITE,
                "rsi" = chunk.len() as u64,
                "rdx" = chunk.as_ptr() as u64,
            )
        };
        match Errno::check(ret)? {
            0 => break,
            taken => done += (taken as usize).min(chunk.len()),
        }
    }
    Ok(done)
}

/// `console_io(CONSOLE_READ)` (HC-11): reads pending console input into `buf`
/// without blocking; returns the number of bytes read (possibly 0). A domain
/// with the `CONSOLE_READ` capability reads the serial console; since ABI 0.6
/// every other domain reads its own input queue, filled by the toolstack
/// (TS-11; before 0.6 they got `-EPERM`).
pub fn console_read(buf: &mut [u8]) -> Result<usize, Errno> {
    let len = buf.len().min(CONSOLE_IO_MAX as usize);
    // SAFETY: `buf` is valid for writes of `len <= buf.len()` bytes and nothing
    // else refers to it during the call.
    let ret = unsafe {
        stub_call!(
            Hypercall::ConsoleIo,
            "rdi" = CONSOLE_READ,
            "rsi" = len as u64,
            "rdx" = buf.as_mut_ptr() as u64,
        )
    };
    Errno::check(ret).map(|n| (n as usize).min(len))
}

/// `sched_op(SCHEDOP_YIELD)` (HC-12): gives up the CPU; the domain stays
/// runnable. Yield cannot fail, so there is nothing to return.
pub fn sched_yield() {
    // SAFETY: yielding reads and writes no guest memory.
    let ret = unsafe { stub_call!(Hypercall::SchedOp, "rdi" = SCHEDOP_YIELD, "rsi" = 0u64) };
    debug_assert!(ret >= 0, "sched_op(yield) failed: {ret}");
}

/// `sched_op(SCHEDOP_SHUTDOWN, reason)` (HC-12): flushes the console, then
/// shuts the domain down with `reason` (`SHUTDOWN_*`). Never returns: should
/// the hypervisor refuse the reason, the domain shuts down with
/// `SHUTDOWN_CRASH`, and if even that returns it yields forever.
pub fn shutdown(reason: u64) -> ! {
    crate::console::flush();
    for reason in [reason, SHUTDOWN_CRASH] {
        // SAFETY: shutdown reads and writes no guest memory; if it returns,
        // nothing has changed.
        let _ = unsafe { stub_call!(Hypercall::SchedOp, "rdi" = SCHEDOP_SHUTDOWN, "rsi" = reason) };
    }
    loop {
        sched_yield();
    }
}

/// `set_trap_table(table, count)` (HC-13): updates the handlers of the vectors
/// `table` names; an entry with address 0 removes its vector's handler.
/// Guests normally use [`crate::traps`] instead.
///
/// # Safety
/// 1. Every non-zero `address` in `table` must be the entry of a handler that
///    follows the bounce protocol of `hypercall_abi::trap` (entered with rsp at
///    an `ExceptionFrame`, leaves through the `iret` stub).
/// 2. Replacing the kit's handlers makes [`crate::traps::set_handler`] handlers
///    unreachable for those vectors.
pub unsafe fn set_trap_table(table: &[TrapInfo]) -> Result<(), Errno> {
    // SAFETY: `table` is valid for reads of `table.len()` entries; the
    // addresses' validity is the caller's obligation.
    let ret = unsafe {
        stub_call!(
            Hypercall::SetTrapTable,
            "rdi" = table.as_ptr() as u64,
            "rsi" = table.len() as u64,
        )
    };
    Errno::check(ret).map(drop)
}

/// `stack_switch(rsp)` (HC-14): the kernel stack the hypervisor switches to
/// when a trap arrives from guest user mode.
///
/// # Safety
/// 1. `rsp` must be the 16-byte-aligned top of writable memory that nothing
///    else uses, large enough for every trap handler that may run on it.
pub unsafe fn stack_switch(rsp: u64) -> Result<(), Errno> {
    // SAFETY: the stack's validity is the caller's obligation; the call itself
    // reads no guest memory.
    let ret = unsafe { stub_call!(Hypercall::StackSwitch, "rdi" = rsp) };
    Errno::check(ret).map(drop)
}

/// `set_callbacks(event, failsafe, syscall)` (HC-15): registers the callback
/// entry points (0 leaves a callback unregistered).
///
/// # Safety
/// 1. Each non-zero address must be an entry point that follows the callback
///    protocol SPEC.md HC-15 describes for it.
pub unsafe fn set_callbacks(event: u64, failsafe: u64, syscall: u64) -> Result<(), Errno> {
    // SAFETY: the entry points' validity is the caller's obligation; the call
    // itself reads no guest memory.
    let ret = unsafe {
        stub_call!(
            Hypercall::SetCallbacks,
            "rdi" = event,
            "rsi" = failsafe,
            "rdx" = syscall,
        )
    };
    Errno::check(ret).map(drop)
}

/// `domctl(DOMCTL_GET_INFO, domid, &mut info)` (HC-17): the domain whose id is
/// the smallest one `>= domid` (its id is `info.domid`); `Err(ESRCH)` when
/// there is none, `Err(EPERM)` without the `DOMAIN_QUERY` capability.
pub fn domctl_get_info(domid: DomId) -> Result<DomainInfo, Errno> {
    let mut info = DomainInfo::default();
    // SAFETY: `info` is valid for writes of one `DomainInfo`, which any bytes
    // make valid (zerocopy `FromBytes`).
    let ret = unsafe {
        stub_call!(
            Hypercall::Domctl,
            "rdi" = DOMCTL_GET_INFO,
            "rsi" = u64::from(domid),
            "rdx" = &mut info as *mut DomainInfo as u64,
        )
    };
    let found = Errno::check(ret)?;
    debug_assert_eq!(
        found,
        u64::from(info.domid),
        "domctl returned another domid than it filled in"
    );
    Ok(info)
}

/// `bench_op(BENCH_SYSCALL_FLOOR)` (HC-18): puts this vCPU in syscall-floor
/// mode. Until it executes `ud2`, `syscall` is a bare round trip and **no
/// hypercall works** — no printing, no panicking; see `hvbench`.
pub fn bench_syscall_floor() -> Result<(), Errno> {
    // SAFETY: the call reads and writes no guest memory; floor mode changes
    // what later `syscall`s do, not memory.
    let ret = unsafe { stub_call!(Hypercall::BenchOp, "rdi" = BENCH_SYSCALL_FLOOR) };
    Errno::check(ret).map(drop)
}

/// Why a batched call (`mmu_update`, `mmuext_op`) stopped: how many requests
/// completed before the failing one (so the failing index is `done`), and its
/// error (MM-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchError {
    /// Requests that succeeded (and stay applied) before the failing one.
    pub done: usize,
    /// The failing request's error (or the call's, e.g. `E2BIG`, `EFAULT`).
    pub errno: Errno,
}

impl core::fmt::Display for BatchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} after {} requests", self.errno, self.done)
    }
}

/// `mmu_update(reqs, count, &done, 0)` (MM-4): applies the page-table and M2P
/// updates in `reqs` in order. On failure, returns how many succeeded.
///
/// The `progress` argument is always 0 (it belongs to the hypervisor).
///
/// # Safety
/// 1. No update may unmap, remap or change the permissions of memory that Rust
///    code uses (the image, stacks, heap, the physmap pages it writes), nor
///    remap a page-table frame writable in a way that some code then writes
///    through. The hypervisor only protects itself and other domains; keeping
///    this domain's own mappings sane is the caller's job.
pub unsafe fn mmu_update(reqs: &[MmuUpdate]) -> Result<(), BatchError> {
    let mut done: u64 = 0;
    // SAFETY: `reqs` is valid for reads of `reqs.len()` requests and `done`
    // for one u64 write; what the updates change is the caller's obligation.
    let ret = unsafe {
        stub_call!(
            Hypercall::MmuUpdate,
            "rdi" = reqs.as_ptr() as u64,
            "rsi" = reqs.len() as u64,
            "rdx" = &mut done as *mut u64 as u64,
            "r10" = 0u64,
        )
    };
    batch_result(ret, done)
}

/// `update_va_mapping(va, val, flags)` (MM-5): writes the L1 entry that maps
/// `va` in the current address space, then flushes per `flags` (`UVMF_*`).
///
/// # Safety
/// As for [`mmu_update`]: the change must not affect memory Rust uses.
pub unsafe fn update_va_mapping(va: u64, val: u64, flags: u64) -> Result<(), Errno> {
    // SAFETY: the call reads no guest memory; the mapping change is the
    // caller's obligation.
    let ret = unsafe {
        stub_call!(
            Hypercall::UpdateVaMapping,
            "rdi" = va,
            "rsi" = val,
            "rdx" = flags,
        )
    };
    Errno::check(ret).map(drop)
}

/// `mmuext_op(ops, count, &done, 0)` (MM-6): pins, unpins, base pointers, TLB
/// flushes, page clears and copies, in order. On failure, returns how many
/// succeeded.
///
/// # Safety
/// 1. A new base pointer (kernel or user) must map everything Rust uses from
///    the mode that runs on it; unpinning must not release tables still in use.
/// 2. `CLEAR_PAGE`/`COPY_PAGE` must not target frames Rust uses.
pub unsafe fn mmuext_op(ops: &[MmuextOp]) -> Result<(), BatchError> {
    let mut done: u64 = 0;
    // SAFETY: `ops` is valid for reads of `ops.len()` operations and `done`
    // for one u64 write; the operations' effects are the caller's obligation.
    let ret = unsafe {
        stub_call!(
            Hypercall::MmuextOp,
            "rdi" = ops.as_ptr() as u64,
            "rsi" = ops.len() as u64,
            "rdx" = &mut done as *mut u64 as u64,
            "r10" = 0u64,
        )
    };
    batch_result(ret, done)
}

/// `multicall(calls, count)` (HC-20): runs each entry as hypercall `op` with
/// its arguments and stores its return value in `result`. `Err` only when an
/// entry could not be read or its result written.
///
/// # Safety
/// 1. Every entry must satisfy the safety obligations of the hypercall it
///    names, as if called directly.
pub unsafe fn multicall(calls: &mut [MulticallEntry]) -> Result<(), Errno> {
    // SAFETY: `calls` is valid for reads and writes of `calls.len()` entries
    // (the hypervisor writes each `result`); the entries' effects are the
    // caller's obligation.
    let ret = unsafe {
        stub_call!(
            Hypercall::Multicall,
            "rdi" = calls.as_mut_ptr() as u64,
            "rsi" = calls.len() as u64,
        )
    };
    Errno::check(ret).map(drop)
}

/// `evtchn_op(cmd, port)` for the sub-commands whose argument is the port
/// itself (`SEND`, `CLOSE`, `UNMASK`; EVT-1).
fn evtchn_port_op(cmd: u64, port: Port) -> Result<(), Errno> {
    // SAFETY: these sub-commands read and write no guest memory; the port is
    // passed by value.
    let ret = unsafe { stub_call!(Hypercall::EvtchnOp, "rdi" = cmd, "rsi" = u64::from(port)) };
    Errno::check(ret).map(drop)
}

/// `evtchn_op(cmd, &mut arg)` for the sub-commands that take a structure,
/// copied in once and written back (EVT-1). Callers pair each `cmd` with its
/// structure from `hypercall_abi::evtchn`.
fn evtchn_struct_op<T>(cmd: u64, arg: &mut T) -> Result<(), Errno> {
    // SAFETY: `arg` is valid for reads and writes of one `T`, and nothing else
    // refers to it during the call; every `T` used here is a `repr(C)`
    // structure of plain integers, so any bytes written back make a valid `T`.
    let ret = unsafe {
        stub_call!(
            Hypercall::EvtchnOp,
            "rdi" = cmd,
            "rsi" = arg as *mut T as u64
        )
    };
    Errno::check(ret).map(drop)
}

/// `EVTCHNOP_SEND` (EVT-2): notifies the other end of `port` (an
/// interdomain or IPI port; dropped on an unbound one).
pub fn evtchn_send(port: Port) -> Result<(), Errno> {
    evtchn_port_op(EVTCHNOP_SEND, port)
}

/// `EVTCHNOP_CLOSE` (EVT-1): frees `port`; an interdomain peer falls back to
/// unbound.
pub fn evtchn_close(port: Port) -> Result<(), Errno> {
    evtchn_port_op(EVTCHNOP_CLOSE, port)
}

/// `EVTCHNOP_UNMASK` (EVT-3): clears the mask bit of `port` and raises the
/// upcall if it is pending.
pub fn evtchn_unmask(port: Port) -> Result<(), Errno> {
    evtchn_port_op(EVTCHNOP_UNMASK, port)
}

/// `EVTCHNOP_ALLOC_UNBOUND`: a new port that `remote_dom` may bind to.
pub fn evtchn_alloc_unbound(remote_dom: DomId) -> Result<Port, Errno> {
    let mut arg = EvtchnAllocUnbound {
        remote_dom,
        port: 0,
    };
    evtchn_struct_op(EVTCHNOP_ALLOC_UNBOUND, &mut arg)?;
    Ok(arg.port)
}

/// `EVTCHNOP_BIND_INTERDOMAIN`: connects to `remote_dom`'s unbound
/// `remote_port` (which must name this domain); returns the local port.
pub fn evtchn_bind_interdomain(remote_dom: DomId, remote_port: Port) -> Result<Port, Errno> {
    let mut arg = EvtchnBindInterdomain {
        remote_dom,
        remote_port,
        local_port: 0,
        pad: 0,
    };
    evtchn_struct_op(EVTCHNOP_BIND_INTERDOMAIN, &mut arg)?;
    Ok(arg.local_port)
}

/// `EVTCHNOP_BIND_VIRQ`: a port for `virq` (`VIRQ_*`), notifying `vcpu`.
pub fn evtchn_bind_virq(virq: u32, vcpu: u32) -> Result<Port, Errno> {
    let mut arg = EvtchnBindVirq {
        virq,
        vcpu,
        port: 0,
        pad: 0,
    };
    evtchn_struct_op(EVTCHNOP_BIND_VIRQ, &mut arg)?;
    Ok(arg.port)
}

/// `EVTCHNOP_BIND_IPI`: a port whose sends notify this domain's `vcpu`.
pub fn evtchn_bind_ipi(vcpu: u32) -> Result<Port, Errno> {
    let mut arg = EvtchnBindIpi { vcpu, port: 0 };
    evtchn_struct_op(EVTCHNOP_BIND_IPI, &mut arg)?;
    Ok(arg.port)
}

/// `EVTCHNOP_BIND_VCPU`: from now on `port` notifies `vcpu`.
pub fn evtchn_bind_vcpu(port: Port, vcpu: u32) -> Result<(), Errno> {
    let mut arg = EvtchnBindVcpu { port, vcpu };
    // BIND_VCPU only reads its structure; the write-back is harmless.
    evtchn_struct_op(EVTCHNOP_BIND_VCPU, &mut arg)
}

/// `EVTCHNOP_STATUS`: what one of this domain's ports is.
pub fn evtchn_status(port: Port) -> Result<EvtchnStatus, Errno> {
    let mut arg = EvtchnStatus {
        port,
        ..EvtchnStatus::default()
    };
    evtchn_struct_op(EVTCHNOP_STATUS, &mut arg)?;
    Ok(arg)
}

/// `sched_op(SCHEDOP_BLOCK)` (HC-12, EVT-6): clears this vCPU's
/// `evtchn_upcall_mask` and blocks until an event sets
/// `evtchn_upcall_pending` (at once if it is set); the upcall is delivered on
/// the way out. Guests normally use [`crate::events::wait_until`].
pub fn sched_block() {
    // SAFETY: blocking reads and writes no guest memory (the upcall it may
    // deliver is the event callback's business).
    let ret = unsafe { stub_call!(Hypercall::SchedOp, "rdi" = SCHEDOP_BLOCK, "rsi" = 0u64) };
    debug_assert!(ret >= 0, "sched_op(block) failed: {ret}");
}

/// `sched_op(SCHEDOP_POLL)` (HC-12): blocks until one of `ports` (1 ..= 8
/// open ports of this domain) is pending, masked or not. Does not touch the
/// upcall mask or clear anything.
pub fn sched_poll(ports: &[Port]) -> Result<(), Errno> {
    sched_poll_until(ports, 0)
}

/// [`sched_poll`] that also returns once system time reaches `deadline_ns`
/// (TIME-1; 0 = never).
pub fn sched_poll_until(ports: &[Port], deadline_ns: u64) -> Result<(), Errno> {
    let poll = SchedPoll {
        ports: ports.as_ptr() as u64,
        nr_ports: u32::try_from(ports.len()).unwrap_or(u32::MAX),
        pad: 0,
        timeout: deadline_ns,
    };
    // SAFETY: `poll` and the `ports` it points at are valid for reads for the
    // whole call; the hypervisor only reads them.
    let ret = unsafe {
        stub_call!(
            Hypercall::SchedOp,
            "rdi" = SCHEDOP_POLL,
            "rsi" = &poll as *const SchedPoll as u64
        )
    };
    Errno::check(ret).map(drop)
}

/// `grant_table_op(cmd, ops, count)` (GNT-*), raw.
///
/// # Safety
/// 1. `ops` must be valid for reads and writes of `count` operations of the
///    structure `cmd` takes, which nothing else uses during the call.
/// 2. The operation's effect must be acceptable to the Rust program (see the
///    typed wrappers' contracts).
unsafe fn grant_table_op(cmd: u64, ops: u64, count: usize) -> Result<(), Errno> {
    // SAFETY: obligations 1 and 2 of the caller.
    let ret = unsafe {
        stub_call!(
            Hypercall::GrantTableOp,
            "rdi" = cmd,
            "rsi" = ops,
            "rdx" = count as u64
        )
    };
    Errno::check(ret).map(drop)
}

/// `GNTTABOP_SETUP_TABLE` (GNT-1): the frames `mfns` (at most 4, owned by
/// this domain) become its grant table; an empty list drops the table.
///
/// # Safety
/// 1. Each frame must be dedicated to the grant table: the hypervisor keeps
///    a writable use of it and sets `GTF_READING`/`GTF_WRITING` bits in its
///    entries, so no Rust reference may cover it and no other code may use it.
pub unsafe fn grant_setup_table(mfns: &[u64]) -> Result<(), Errno> {
    let mut setup = GnttabSetupTable {
        nr_frames: u32::try_from(mfns.len()).unwrap_or(u32::MAX),
        pad: 0,
        frame_list: mfns.as_ptr() as u64,
    };
    // SAFETY: `setup` and the list it points at are valid for the call;
    // obligation 1 covers what the table frames are used for afterwards.
    unsafe { grant_table_op(GNTTABOP_SETUP_TABLE, &mut setup as *mut _ as u64, 1) }
}

/// `GNTTABOP_QUERY_SIZE` (GNT-1): `(nr_frames, max_nr_frames)` of this
/// domain's table.
pub fn grant_query_size() -> Result<GnttabQuerySize, Errno> {
    let mut size = GnttabQuerySize::default();
    // SAFETY: `size` is valid for one write of its plain-integer structure;
    // the query changes nothing else.
    unsafe { grant_table_op(GNTTABOP_QUERY_SIZE, &mut size as *mut _ as u64, 1)? };
    Ok(size)
}

/// `GNTTABOP_MAP_GRANT_REF` (GNT-3) for each of `ops` (at most 512); each
/// gets its own `status` and `handle`. `Err` only when the batch itself is
/// refused (`E2BIG`, `EFAULT`).
///
/// A map only fills an L1 entry that was empty (`-EBUSY` otherwise), so it
/// never replaces memory the program uses.
pub fn grant_map(ops: &mut [GnttabMapGrantRef]) -> Result<(), Errno> {
    // SAFETY: `ops` is valid for reads and writes of `ops.len()` operations
    // of plain integers; each map writes only an empty L1 entry.
    unsafe { grant_table_op(GNTTABOP_MAP_GRANT_REF, ops.as_mut_ptr() as u64, ops.len()) }
}

/// `GNTTABOP_UNMAP_GRANT_REF` (GNT-3) for each of `ops`; per-op `status`.
///
/// # Safety
/// 1. No Rust reference may cover the pages being unmapped (the kit reaches
///    grant mappings only through raw volatile accesses, see
///    [`crate::ring::SharedPage`]).
pub unsafe fn grant_unmap(ops: &mut [GnttabUnmapGrantRef]) -> Result<(), Errno> {
    // SAFETY: `ops` is valid for reads and writes of `ops.len()` operations;
    // obligation 1 covers the removed mappings.
    unsafe { grant_table_op(GNTTABOP_UNMAP_GRANT_REF, ops.as_mut_ptr() as u64, ops.len()) }
}

/// `GNTTABOP_COPY` (GNT-4) for each of `ops` (at most 512); per-op `status`.
///
/// # Safety
/// 1. Every destination that is one of this domain's own frames (no
///    `GNTCOPY_DEST_GREF`) must not be memory Rust code uses through
///    references: e.g. a [`crate::mm::Frame`] the caller holds, accessed only
///    through its methods.
pub unsafe fn grant_copy(ops: &mut [GnttabCopy]) -> Result<(), Errno> {
    // SAFETY: `ops` is valid for reads and writes of `ops.len()` operations;
    // obligation 1 covers the destinations.
    unsafe { grant_table_op(GNTTABOP_COPY, ops.as_mut_ptr() as u64, ops.len()) }
}

/// A batched call's return value and `done` count as a `Result`.
fn batch_result(ret: i64, done: u64) -> Result<(), BatchError> {
    match Errno::check(ret) {
        Ok(_) => Ok(()),
        Err(errno) => Err(BatchError {
            done: usize::try_from(done).unwrap_or(usize::MAX),
            errno,
        }),
    }
}

/// `vcpu_op(VCPUOP_INITIALISE, vcpu, ctx)` (HC-21): gives down vCPU `vcpu` its
/// starting context. Guests normally use [`crate::smp::start_vcpu`].
///
/// # Safety
/// 1. `ctx.rip` must be code that can run on `ctx.rsp`, a stack no one else
///    uses, with the trap table and callbacks of the calling vCPU.
pub unsafe fn vcpu_initialise(vcpu: u32, ctx: &VcpuContext) -> Result<(), Errno> {
    // SAFETY: the hypervisor reads the context from `ctx`, a live reference;
    // the caller guarantees the context itself (obligation 1).
    let ret = unsafe {
        stub_call!(
            Hypercall::VcpuOp,
            "rdi" = VCPUOP_INITIALISE,
            "rsi" = u64::from(vcpu),
            "rdx" = ctx as *const VcpuContext as u64
        )
    };
    Errno::check(ret).map(|_| ())
}

/// `vcpu_op(VCPUOP_UP | VCPUOP_DOWN | VCPUOP_IS_UP, vcpu)` (HC-21).
pub fn vcpu_up_down(cmd: u64, vcpu: u32) -> Result<u64, Errno> {
    if !matches!(cmd, VCPUOP_UP | VCPUOP_DOWN | VCPUOP_IS_UP) {
        return Err(Errno::EINVAL);
    }
    // SAFETY: these sub-commands read and write no guest memory.
    let ret = unsafe {
        stub_call!(
            Hypercall::VcpuOp,
            "rdi" = cmd,
            "rsi" = u64::from(vcpu),
            "rdx" = 0u64
        )
    };
    Errno::check(ret)
}

/// `vcpu_op(VCPUOP_GET_RUNSTATE, vcpu, out)` (HC-21): where and how long a
/// vCPU of this domain ran.
pub fn vcpu_runstate(vcpu: u32) -> Result<VcpuRunstate, Errno> {
    let mut out = VcpuRunstate::default();
    // SAFETY: the hypervisor writes a VcpuRunstate into `out`, a live local.
    let ret = unsafe {
        stub_call!(
            Hypercall::VcpuOp,
            "rdi" = VCPUOP_GET_RUNSTATE,
            "rsi" = u64::from(vcpu),
            "rdx" = &mut out as *mut VcpuRunstate as u64
        )
    };
    Errno::check(ret).map(|_| out)
}

/// `set_timer_op(deadline)` (TIME-2): VIRQ_TIMER once system time reaches
/// `deadline` ns (0 cancels).
pub fn set_timer(deadline_ns: u64) -> Result<(), Errno> {
    // SAFETY: set_timer_op reads and writes no guest memory.
    let ret = unsafe { stub_call!(Hypercall::SetTimerOp, "rdi" = deadline_ns) };
    Errno::check(ret).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_results() {
        assert_eq!(batch_result(0, 0), Ok(()));
        assert_eq!(
            batch_result(Errno::EPERM.to_return(), 4),
            Err(BatchError {
                done: 4,
                errno: Errno::EPERM
            })
        );
    }

    #[test]
    fn stub_offsets() {
        assert_eq!(stub_offset(Hypercall::Version), 0);
        assert_eq!(stub_offset(Hypercall::Iret), 6 * 32);
        assert_eq!(stub_offset(Hypercall::BenchOp), 8 * 32);
    }

    #[test]
    fn page_is_one_aligned_page() {
        assert_eq!(HYPERCALL_PAGE.address() % 4096, 0);
    }
}
