//! Event channels (SPEC.md §8, EVT-*): notifications between domains, from
//! the hypervisor (VIRQs) and between a domain's vCPUs (IPIs).
//!
//! A port is pending when its bit in `SharedInfo.evtchn_pending` is set. The
//! hypervisor delivers an *upcall* to the event callback when a pending,
//! unmasked port sets a vCPU's `evtchn_upcall_pending` while its
//! `evtchn_upcall_mask` is clear (Xen's 2-level ABI).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// An event-channel port number (`1 .. EVTCHN_PORTS`; 0 is never allocated).
pub type Port = u32;

/// `evtchn_op(EVTCHNOP_BIND_INTERDOMAIN, &EvtchnBindInterdomain)`.
pub const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
/// `evtchn_op(EVTCHNOP_BIND_VIRQ, &EvtchnBindVirq)`.
pub const EVTCHNOP_BIND_VIRQ: u64 = 1;
/// `evtchn_op(EVTCHNOP_CLOSE, port)` — the port is the argument itself.
pub const EVTCHNOP_CLOSE: u64 = 3;
/// `evtchn_op(EVTCHNOP_SEND, port)` — the port is the argument itself.
pub const EVTCHNOP_SEND: u64 = 4;
/// `evtchn_op(EVTCHNOP_STATUS, &EvtchnStatus)`.
pub const EVTCHNOP_STATUS: u64 = 5;
/// `evtchn_op(EVTCHNOP_ALLOC_UNBOUND, &EvtchnAllocUnbound)`.
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
/// `evtchn_op(EVTCHNOP_BIND_IPI, &EvtchnBindIpi)`.
pub const EVTCHNOP_BIND_IPI: u64 = 7;
/// `evtchn_op(EVTCHNOP_BIND_VCPU, &EvtchnBindVcpu)`.
pub const EVTCHNOP_BIND_VCPU: u64 = 8;
/// `evtchn_op(EVTCHNOP_UNMASK, port)` — the port is the argument itself.
pub const EVTCHNOP_UNMASK: u64 = 9;

/// IN/OUT of `EVTCHNOP_ALLOC_UNBOUND`: a port that `remote_dom` may bind to.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnAllocUnbound {
    /// IN: the domain allowed to connect.
    pub remote_dom: u32,
    /// OUT: the new port.
    pub port: Port,
}
const _: () = assert!(core::mem::size_of::<EvtchnAllocUnbound>() == 8);

/// IN/OUT of `EVTCHNOP_BIND_INTERDOMAIN`: connect to `remote_dom`'s unbound
/// `remote_port`, which must name the caller as its remote domain.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindInterdomain {
    /// IN.
    pub remote_dom: u32,
    /// IN.
    pub remote_port: Port,
    /// OUT: the caller's end.
    pub local_port: Port,
    /// Must be zero.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<EvtchnBindInterdomain>() == 16);
const _: () = assert!(core::mem::offset_of!(EvtchnBindInterdomain, local_port) == 8);

/// IN/OUT of `EVTCHNOP_BIND_VIRQ`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindVirq {
    /// IN: `VIRQ_*`.
    pub virq: u32,
    /// IN: the vCPU to notify.
    pub vcpu: u32,
    /// OUT.
    pub port: Port,
    /// Must be zero.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<EvtchnBindVirq>() == 16);
const _: () = assert!(core::mem::offset_of!(EvtchnBindVirq, port) == 8);

/// IN/OUT of `EVTCHNOP_BIND_IPI`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindIpi {
    /// IN: the vCPU to notify.
    pub vcpu: u32,
    /// OUT.
    pub port: Port,
}
const _: () = assert!(core::mem::size_of::<EvtchnBindIpi>() == 8);

/// IN of `EVTCHNOP_BIND_VCPU`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindVcpu {
    /// IN.
    pub port: Port,
    /// IN: the vCPU to notify from now on.
    pub vcpu: u32,
}
const _: () = assert!(core::mem::size_of::<EvtchnBindVcpu>() == 8);

/// IN/OUT of `EVTCHNOP_STATUS` (of one of the caller's own ports).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnStatus {
    /// IN.
    pub port: Port,
    /// OUT: `EVTCHNSTAT_*`.
    pub status: u32,
    /// OUT: the vCPU notified.
    pub vcpu: u32,
    /// OUT: remote domain (unbound, interdomain) or VIRQ number.
    pub remote_dom_or_virq: u32,
    /// OUT: remote port (interdomain).
    pub remote_port: Port,
    /// Zero.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<EvtchnStatus>() == 24);

/// `EvtchnStatus.status`: not in use.
pub const EVTCHNSTAT_CLOSED: u32 = 0;
/// Allocated, waiting for the remote domain to bind.
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
/// Connected to a remote port.
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
/// Bound to a device interrupt (`PHYSDEVOP_BIND_MSI`, PDEV-5; since 0.5).
pub const EVTCHNSTAT_PIRQ: u32 = 3;
/// Bound to a VIRQ.
pub const EVTCHNSTAT_VIRQ: u32 = 4;
/// Bound to an IPI.
pub const EVTCHNSTAT_IPI: u32 = 5;

/// VIRQ: per-vCPU timer (from the time ABI on).
pub const VIRQ_TIMER: u32 = 0;
/// VIRQ: console input is waiting (the driver domain's serial input; since
/// 0.6 also any domain's queue filled by `DOMCTL_CONSOLE_INPUT`, TS-11).
pub const VIRQ_CONSOLE: u32 = 2;
/// VIRQ: a domain shut down or crashed (driver domain).
pub const VIRQ_DOM_EXC: u32 = 3;
/// VIRQ: a devbus record naming this domain changed (DEV-4), since 0.5.
pub const VIRQ_DEVBUS: u32 = 4;
/// VIRQ: another domain wrote console output (raised in `DOMAIN_BUILD`
/// holders that bound it, TS-10), since 0.6.
pub const VIRQ_GUEST_CONSOLE: u32 = 5;
/// VIRQ: the toolstack asks this domain to shut down (`DOMCTL_SHUTDOWN`,
/// TS-7), since 0.6.
pub const VIRQ_SHUTDOWN_REQUEST: u32 = 6;
/// Number of VIRQs.
pub const NR_VIRQS: u32 = 8;
