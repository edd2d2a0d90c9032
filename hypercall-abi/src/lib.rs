//! Paravane's hypercall ABI — the one source of truth for everything that crosses
//! the ring-0 / ring-3 boundary or passes between domains.
//!
//! SPEC.md is the prose for this crate; every item here names the SPEC section
//! (requirement IDs such as `HC-3`) that defines its semantics. Rules:
//!
//! - Every shared struct is `#[repr(C)]`, derives zerocopy's `FromBytes`/`IntoBytes`
//!   (which reject hidden padding, so pads are explicit fields), uses fixed-width
//!   integers only, and carries compile-time size and offset assertions.
//! - Fields are tagged with who writes them: `[HV]` (the hypervisor), `[GUEST]`.
//! - The version is `major.minor`; minor bumps only add (SPEC.md §1.2).
#![no_std]
#![forbid(unsafe_code)]

pub mod bench;
pub mod blkif;
pub mod console;
pub mod devbus;
pub mod domctl;
pub mod elf_note;
pub mod errno;
pub mod evtchn;
pub mod grant;
pub mod hypercall;
pub mod layout;
pub mod machine;
pub mod mgmt;
pub mod mm;
pub mod multicall;
pub mod netif;
pub mod physdev;
pub mod ring;
pub mod sched;
pub mod shared_info;
pub mod start_info;
pub mod trap;
pub mod vcpu;

pub use errno::Errno;
pub use hypercall::Hypercall;

/// ABI major version. A hypervisor refuses guests built against another major (HC-2).
pub const ABI_MAJOR: u32 = 0;
/// ABI minor version. Minor bumps only add hypercalls, sub-ops, fields in reserved
/// space or feature bits, so a guest built against minor `m` runs on any hypervisor
/// of the same major; on a hypervisor whose minor is below `m` it must check the
/// feature bits of what it uses (SPEC.md §1.2).
pub const ABI_MINOR: u32 = 6;

/// Size of a machine or pseudo-physical page.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// A domain identifier. Domain 0 is the driver domain.
pub type DomId = u32;

/// The domain identifier of the driver domain.
pub const DOMID_DRIVER: DomId = 0;
