//! The live domains and their vCPUs, and creating and destroying them.
//!
//! # Invariants
//! - Every domain in [`DOMAINS`] owns exactly the frames in its `p2m` plus its
//!   shared_info frame, each recorded with that owner in the frame table.
//! - A vCPU (and its hypervisor stack) is freed only when no pCPU runs it or
//!   is switching to it: `claimed` and `ctx_live` both clear (see `sched`).

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

impl KernelStack {
    /// A zeroed stack allocated directly on the heap: building it on the
    /// stack first would overflow a vCPU's own 16 KiB stack when a
    /// toolstack creates a domain from a hypercall.
    /// `None` when the heap cannot provide one (a domain creation then
    /// fails with `ENOMEM` instead of hv-core panicking).
    pub fn try_new_boxed() -> Option<Box<KernelStack>> {
        let layout = core::alloc::Layout::new::<KernelStack>();
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc::alloc_zeroed(layout) }.cast::<KernelStack>();
        if ptr.is_null() {
            return None;
        }
        // SAFETY: `ptr` was just allocated by the global allocator with the
        // layout of `KernelStack`, is zeroed (a valid byte array) and owned by
        // nothing else.
        Some(unsafe { Box::from_raw(ptr) })
    }
}

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
    /// The kernel base pointer (L4 mfn; holds a base-pointer reference).
    pub kernel_l4: Mfn,
    /// The user base pointer, if any (holds a base-pointer reference).
    pub user_l4: Option<Mfn>,
    /// In guest user mode (on `user_l4`), else kernel mode (on `kernel_l4`).
    pub user_mode: bool,
    pub fpu: FxArea,
    pub traps: [TrapEntry; TRAP_VECTORS],
    /// Guest kernel stack for traps taken in guest user mode (`stack_switch`).
    pub kernel_sp: u64,
    pub callbacks: Callbacks,
    /// Vectors whose handlers are running (bounced, not yet returned with iret),
    /// innermost last.
    pub active_traps: heapless::Vec<u8, 8>,
    /// In syscall-floor mode (`bench_op`).
    pub floor_mode: bool,
    /// Blocked in `sched_op(block)` or `sched_op(poll)`, not runnable.
    pub blocked: bool,
    /// The ports a `sched_op(poll)` waits on (empty for `block`).
    pub polling: heapless::Vec<u32, 8>,
    /// System time (ns) at which a `sched_op(poll)` gives up; 0 = never.
    pub poll_deadline: u64,
    /// One-shot timer (`set_timer_op`), system time in ns; 0 = none.
    pub timer_deadline: u64,
    /// TSC when this vCPU last started running.
    pub running_since: u64,
    /// Nanoseconds this vCPU has run.
    pub cpu_time_ns: u64,
    /// Online (`vcpu_op` up); a vCPU that is down never runs.
    pub up: bool,
    /// Has a context to start from (vCPU 0 from the builder, others from
    /// `vcpu_op(initialise)`).
    pub initialised: bool,
    /// The pCPU whose run queue holds this vCPU (see `sched`).
    pub cpu: u32,
    /// Pinned to this pCPU (never stolen by another), if any.
    pub pin: Option<u32>,
    /// Weight and cap.
    pub params: crate::sched::policy::Params,
    /// A pCPU runs this vCPU or is switching to it (see `sched`).
    pub claimed: bool,
    /// The vCPU's hypervisor stack is in use on some pCPU (see `sched`).
    pub ctx_live: core::sync::atomic::AtomicBool,
}

impl Vcpu {
    /// The CR3 value for the vCPU's current mode.
    pub fn active_cr3(&self) -> u64 {
        match (self.user_mode, self.user_l4) {
            (true, Some(user)) => user << 12,
            _ => self.kernel_l4 << 12,
        }
    }

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

/// How far `DOMCTL_BUILD` (or the boot builder) got (TS-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildState {
    /// Not built: its frames are zero.
    Empty,
    /// Built: vCPU 0 has its start-of-day context.
    Built,
    /// A build wrote into its frames and then failed: it can only be destroyed.
    Spoiled,
}

/// Bytes of console input queued per domain (TS-11).
pub const CONSOLE_INPUT_SIZE: usize = hypercall_abi::domctl::CONSOLE_INPUT_SIZE as usize;

/// A domain.
pub struct Domain {
    pub id: DomId,
    pub name: heapless::String<32>,
    pub capabilities: Capabilities,
    /// The driver domain (`StartFlags::DRIVER_DOMAIN`).
    pub driver: bool,
    pub state: DomainState,
    /// Paused by the toolstack, or never unpaused: its vCPUs do not run (TS-5).
    pub paused: bool,
    pub build: BuildState,
    /// A populate is allocating frames for it outside the table lock: the
    /// reaper leaves it alone until that is done.
    pub busy: bool,
    /// pfn → mfn.
    pub p2m: Vec<Mfn>,
    /// Most pages `p2m` may reach.
    pub max_pages: u64,
    pub shared_info_mfn: Mfn,
    pub vcpus: Vec<Box<Vcpu>>,
    pub console: LineBuffer,
    /// Its console output as a stream (TS-10).
    pub console_ring: crate::toolstack::StreamRing<Vec<u8>>,
    /// Console input queued by the toolstack (TS-11).
    pub console_input: heapless::Deque<u8, CONSOLE_INPUT_SIZE>,
    /// TSC cycles its vCPUs have run.
    pub cpu_cycles: u64,
    /// TSC at creation.
    pub created_tsc: u64,
    /// TSC of its first console output (0 = none yet).
    pub first_output_tsc: u64,
    /// TSC of its first unpause (0 = not yet).
    pub unpaused_tsc: u64,
    /// TSC cycles spent in its create, populate and build steps.
    pub hv_build_cycles: u64,
}

impl Domain {
    /// Direct-map address of vCPU `vcpu`'s `VcpuInfo` in the shared_info page.
    pub fn vcpu_info_va(&self, vcpu: u32) -> u64 {
        let slot = u64::from(vcpu.min(hypercall_abi::shared_info::MAX_VIRT_CPUS as u32 - 1));
        crate::mm::mfn_to_virt(self.shared_info_mfn) + slot * 64
    }

    /// Frames this domain owns.
    pub fn nr_frames(&self) -> u64 {
        self.p2m.len() as u64 + 1
    }

    /// Whether it still runs or may run (not shut down or crashed).
    pub fn alive(&self) -> bool {
        self.state == DomainState::Running
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
    /// Every base pointer of every vCPU (one item per reference), for the audit.
    pub fn base_pointers(&self) -> Vec<Mfn> {
        let mut out = Vec::new();
        for d in self.domains.values() {
            // Before a successful build, vCPUs hold no base pointer.
            if d.build != BuildState::Built {
                continue;
            }
            for v in &d.vcpus {
                out.push(v.kernel_l4);
                out.extend(v.user_l4);
            }
        }
        out
    }

    /// Whether `mfn` is a base pointer of any vCPU of `domid`.
    pub fn is_base_pointer(&self, domid: DomId, mfn: Mfn) -> bool {
        self.domains.get(&domid).is_some_and(|d| {
            d.build == BuildState::Built
                && d.vcpus
                    .iter()
                    .any(|v| v.kernel_l4 == mfn || v.user_l4 == Some(mfn))
        })
    }

    pub fn vcpu_mut(&mut self, id: VcpuId) -> Option<&mut Vcpu> {
        self.domains
            .get_mut(&id.domid)?
            .vcpus
            .get_mut(id.vcpu as usize)
            .map(|v| &mut **v)
    }
}

/// The domain table.
pub static DOMAINS: crate::sync::Mutex<DomainTable> = crate::sync::Mutex::new(DomainTable {
    domains: BTreeMap::new(),
    next_domid: 0,
});

/// Returns every frame of `domain` to the free pool, whatever their types and
/// counts (nothing outside the domain references them), except the frames in
/// `keep` (still mapped by other domains through grants); clears their M2P
/// entries. Returns how many were freed.
pub fn release_frames(frames: &mut FrameTable<'static>, domain: &Domain, keep: &[Mfn]) -> u64 {
    let owner = Owner::Domain(domain.id);
    let mut n = 0;
    for &mfn in domain
        .p2m
        .iter()
        .chain(core::iter::once(&domain.shared_info_mfn))
    {
        if keep.contains(&mfn) {
            continue;
        }
        crate::mm::live::set_m2p(mfn, crate::mm::live::M2P_INVALID);
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
