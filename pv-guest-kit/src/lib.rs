//! pv-guest-kit: what a Paravane PV guest kernel links.
//!
//! The kit owns the guest side of the hypervisor contract (SPEC.md §2, §5, §6):
//!
//! - [`entry!`] / [`entry_with_abi!`]: the image's entry point `_pv_start` and its
//!   two Paravane ELF notes (ABI version, hypercall page), emitted once per image
//!   in the guest crate; [`start::kit_start`] then checks start_info, installs the
//!   default trap table and calls the guest's `main`.
//! - [`hypercall`]: the hypercall page and one safe wrapper per hypercall, plus a
//!   raw escape hatch.
//! - [`console`] ([`print!`], [`println!`]) and [`logger`] (a `log` backend).
//! - [`traps`]: exception entry stubs, per-vector Rust handlers, `iret`.
//! - [`mm`]: the frame allocator, the heap (`alloc` works in guests), the
//!   page-table manager ([`mm::AddressSpace`], batched `mmu_update`s) and
//!   fault-tolerant probes.
//! - [`user`]: guest user mode — user programs in their own address spaces,
//!   their syscalls and faults.
//! - [`events`]: event channels — ports, per-port handlers run by the event
//!   upcall, the upcall mask, and [`events::wait_until`] (blocks, no CPU).
//! - [`grants`]: grant tables — lending frames ([`grants::GrantTable`]),
//!   mapping and copying others' ([`grants::map_grant_ref`],
//!   [`grants::grant_copy`]).
//! - [`physdev`]: the driver domain's devices (physdev_op, MMIO mappings).
//! - [`ring`]: shared rings over a granted page with an event channel
//!   ([`ring::Frontend`], [`ring::Backend`]).
//! - [`smp`]: secondary vCPUs ([`smp::start_vcpu`]) and a spin lock.
//! - [`time`]: monotonic system time from the PV clock, no hypercall.
//! - [`toolstack`]: building, pausing and destroying other domains, their
//!   consoles, hv-core's log and the management UART (`DOMAIN_BUILD`).
//! - [`testing`]: test guests' reports and their one result line (XTF-style).
//! - [`cmdline`], [`bench`]: portable helpers, unit-tested on the host.
//! - the panic handler (kernel target only): report, flush, `SHUTDOWN_CRASH`.
//!
//! # Host builds
//! Guest crates are workspace members, so they also build for the host. There
//! every item keeps its signature, but nothing that needs the hypervisor can run:
//! the hypercall layer panics, and [`entry!`] expands to a `fn main()` that says
//! so and exits with status 1. Everything target-specific (asm, the panic
//! handler, linker sections) is behind `cfg(target_os = "none")`.
//!
//! # Linking
//! Images are linked with `pv-guest-kit/guest.ld` at virtual `0x400000`, with
//! `-C relocation-model=static -C code-model=small` (see `cargo xtask`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub use hypercall_abi as abi;
pub use log;

#[macro_use]
pub mod console;

pub mod bench;
pub mod blk_bench;
mod callbacks;
pub mod cmdline;
pub mod devices;
pub mod events;
pub mod grants;
pub mod hypercall;
pub mod logger;
pub mod mm;
pub mod note;
pub mod physdev;
pub mod ring;
pub mod smp;
pub mod start;
pub mod testing;
pub mod time;
pub mod toolstack;
pub mod traps;
pub mod user;

#[cfg(all(target_os = "none", not(test)))]
mod panic;

pub use hypercall_abi::start_info::StartInfo;
pub use start::start_info;
