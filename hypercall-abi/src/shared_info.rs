//! The shared_info page: per-domain state the hypervisor and the guest both
//! read and write (SPEC.md §5.2, HC-7).
//!
//! ABI 0.1 fixes the layout; the event-channel fields are written from the
//! event-channel ABI on (EVT-*), the time fields from the time ABI on. Until then
//! the hypervisor leaves them zero.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// vCPU slots in shared_info.
pub const MAX_VIRT_CPUS: usize = 32;
/// Event-channel ports addressed by the 2-level bitmaps: 64 × 64.
pub const EVTCHN_PORTS: usize = 64 * 64;

/// Per-vCPU shared state.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuInfo {
    /// `[HV]` set when an event is pending for this vCPU; `[GUEST]` clears it.
    pub evtchn_upcall_pending: u8,
    /// `[GUEST]` non-zero masks event upcalls (the guest's virtual interrupt flag).
    pub evtchn_upcall_mask: u8,
    /// Must be zero.
    pub pad0: [u8; 6],
    /// `[HV]` sets, `[GUEST]` clears: which words of `evtchn_pending` to scan.
    pub evtchn_pending_sel: u64,
    /// `[HV]` time: version (odd while being updated).
    pub time_version: u32,
    /// Must be zero.
    pub pad1: u32,
    /// `[HV]` TSC at the last time update.
    pub tsc_timestamp: u64,
    /// `[HV]` system time (ns since boot) at `tsc_timestamp`.
    pub system_time: u64,
    /// `[HV]` TSC-to-ns multiplier (32.32 fixed point, after `tsc_shift`).
    pub tsc_to_system_mul: u32,
    /// `[HV]` shift applied to TSC deltas before `tsc_to_system_mul`.
    pub tsc_shift: i8,
    /// Must be zero.
    pub pad2: [u8; 3],
    /// Reserved; zero.
    pub reserved: [u64; 2],
}
const _: () = assert!(core::mem::size_of::<VcpuInfo>() == 64);
const _: () = assert!(core::mem::offset_of!(VcpuInfo, evtchn_pending_sel) == 8);
const _: () = assert!(core::mem::offset_of!(VcpuInfo, time_version) == 16);
const _: () = assert!(core::mem::offset_of!(VcpuInfo, tsc_timestamp) == 24);
const _: () = assert!(core::mem::offset_of!(VcpuInfo, system_time) == 32);
const _: () = assert!(core::mem::offset_of!(VcpuInfo, tsc_to_system_mul) == 40);
const _: () = assert!(core::mem::offset_of!(VcpuInfo, tsc_shift) == 44);

/// The shared_info page.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SharedInfo {
    /// Per-vCPU state.
    pub vcpu_info: [VcpuInfo; MAX_VIRT_CPUS],
    /// `[HV]` sets, `[GUEST]` clears: pending bit per event-channel port.
    pub evtchn_pending: [u64; 64],
    /// `[GUEST]`: mask bit per port.
    pub evtchn_mask: [u64; 64],
    /// `[HV]` wallclock: version (odd while being updated).
    pub wc_version: u32,
    /// `[HV]` wallclock: nanoseconds part.
    pub wc_nsec: u32,
    /// `[HV]` wallclock: seconds since the Unix epoch at system time 0.
    pub wc_sec: u64,
    /// Reserved; pads the structure to one page.
    pub reserved: [u64; 126],
}
const _: () = assert!(core::mem::size_of::<SharedInfo>() == 4096);
const _: () = assert!(core::mem::offset_of!(SharedInfo, evtchn_pending) == 2048);
const _: () = assert!(core::mem::offset_of!(SharedInfo, evtchn_mask) == 2560);
const _: () = assert!(core::mem::offset_of!(SharedInfo, wc_version) == 3072);
const _: () = assert!(core::mem::offset_of!(SharedInfo, wc_sec) == 3080);
