//! `multicall` (SPEC.md HC-20): several hypercalls for one entry into the
//! hypervisor, each with its own result.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// One call of a multicall batch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct MulticallEntry {
    /// `[GUEST]` IN: hypercall number.
    pub op: u64,
    /// `[HV]` OUT: what the hypercall returned (`-errno` on failure).
    pub result: u64,
    /// `[GUEST]` IN: arguments 1..5 in order (rdi, rsi, rdx, r10, r8); the sixth is unused.
    pub args: [u64; 6],
}
const _: () = assert!(core::mem::size_of::<MulticallEntry>() == 64);
const _: () = assert!(core::mem::offset_of!(MulticallEntry, result) == 8);
const _: () = assert!(core::mem::offset_of!(MulticallEntry, args) == 16);

/// Largest `count` for `multicall` (`-E2BIG` beyond).
pub const MULTICALL_MAX: u64 = 1024;
