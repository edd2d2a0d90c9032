//! The live domains and their vCPUs, and creating and destroying them.
//!
//! # Invariants
//! - Every domain in [`DOMAINS`] owns exactly the frames in its `p2m` plus its
//!   shared_info frame, each recorded with that owner in the frame table.
//! - A vCPU's hypervisor stack is freed only by the idle context, never while
//!   that vCPU is current (see `sched`).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use hypercall_abi::start_info::Capabilities;
use hypercall_abi::trap::TRAP_VECTORS;
use hypercall_abi::DomId;

use crate::arch::cpu::FxArea;
use crate::console::LineBuffer;
use crate::mm::{FrameTable, Mfn, Owner};

/// Bytes of hypervisor stack per vCPU.
pub const KSTACK_SIZE: usize = 16 * 1024;

/// A vCPU's hypervisor stack.
#[repr(C, align(16))]
pub struct KernelStack(pub [u8; KSTACK_SIZE]);

/// A registered exception handler.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapEntry {
    pub address: u64,
    pub flags: u8,
}

/// Callback entry points registered with `set_callbacks`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Callbacks {
    pub event: u64,
    pub failsafe: u64,
    pub syscall: u64,
}

/// Names a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuId {
    pub domid: DomId,
    pub vcpu: u32,
}

/// A virtual CPU.
pub struct Vcpu {
    pub id: VcpuId,
    /// Hypervisor stack pointer while parked in `switch`.
    pub saved_rsp: u64,
    pub kstack: Box<KernelStack>,
    /// Machine address of the L4 this vCPU runs on.
    pub cr3: u64,
    pub fpu: FxArea,
    pub traps: [TrapEntry; TRAP_VECTORS],
    /// Guest kernel stack for traps taken in guest user mode (`stack_switch`).
    pub kernel_sp: u64,
    pub callbacks: Callbacks,
    /// Vectors whose handlers are running (bounced, not yet returned with iret),
    /// innermost last.
    pub active_traps: heapless::Vec<u8, 4>,
    /// In syscall-floor mode (`bench_op`).
    pub floor_mode: bool,
    /// TSC when this vCPU last started running.
    pub running_since: u64,
}

impl Vcpu {
    /// Top of the hypervisor stack.
    pub fn kstack_top(&self) -> u64 {
        self.kstack.0.as_ptr_range().end as u64
    }
}

/// Lifecycle of a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainState {
    Running,
    /// Shut down at its own request, with the reason.
    Shutdown(u64),
    /// Killed by the hypervisor.
    Crashed,
}

/// A domain.
pub struct Domain {
    pub id: DomId,
    pub name: heapless::String<32>,
    pub capabilities: Capabilities,
    pub state: DomainState,
    /// pfn → mfn.
    pub p2m: Vec<Mfn>,
    pub shared_info_mfn: Mfn,
    pub vcpus: Vec<Box<Vcpu>>,
    pub console: LineBuffer,
    /// TSC cycles its vCPUs have run.
    pub cpu_cycles: u64,
}

impl Domain {
    /// Frames this domain owns.
    pub fn nr_frames(&self) -> u64 {
        self.p2m.len() as u64 + 1
    }

    /// Flushes a partial console line.
    pub fn flush_console(&mut self) {
        let id = self.id;
        self.console
            .flush(|line| crate::console::emit_guest_line(id, line));
    }
}

/// All domains, by id.
pub struct DomainTable {
    pub domains: BTreeMap<DomId, Box<Domain>>,
    pub next_domid: DomId,
}

impl DomainTable {
    pub fn vcpu_mut(&mut self, id: VcpuId) -> Option<&mut Vcpu> {
        self.domains
            .get_mut(&id.domid)?
            .vcpus
            .get_mut(id.vcpu as usize)
            .map(|v| &mut **v)
    }
}

/// The domain table.
pub static DOMAINS: spin::Mutex<DomainTable> = spin::Mutex::new(DomainTable {
    domains: BTreeMap::new(),
    next_domid: 0,
});

/// The frame table (set up at boot).
pub static FRAMES: spin::Mutex<Option<FrameTable<'static>>> = spin::Mutex::new(None);

/// Returns every frame of `domain` to the free pool; returns how many.
pub fn release_frames(frames: &mut FrameTable<'static>, domain: &Domain) -> u64 {
    let owner = Owner::Domain(domain.id);
    let mut n = 0;
    for &mfn in domain
        .p2m
        .iter()
        .chain(core::iter::once(&domain.shared_info_mfn))
    {
        if frames.release(mfn, owner).is_ok() {
            n += 1;
        } else {
            log::error!(
                "d{}: frame {mfn:#x} was not owned by it at teardown",
                domain.id
            );
        }
    }
    n
}
