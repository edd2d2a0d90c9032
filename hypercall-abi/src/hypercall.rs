//! The hypercall table (SPEC.md §3): numbers, names and the feature bits.
//!
//! This one table generates the [`Hypercall`] enum, its decoding from the number
//! in `rax`, and the list the hypervisor uses to fill the hypercall page.

use bitflags::bitflags;

/// Bytes per stub in the hypercall page: stub `n` starts at `n * HYPERCALL_STUB_SIZE`.
pub const HYPERCALL_STUB_SIZE: u64 = 32;
/// Number of stub slots in the hypercall page. Numbers at or above this are invalid.
pub const HYPERCALL_SLOTS: u64 = 64;

macro_rules! hypercall_table {
    ($( $(#[$doc:meta])* $num:literal => $variant:ident, )*) => {
        /// A hypercall number (the value the stub puts in `eax`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Hypercall {
            $( $(#[$doc])* $variant = $num, )*
        }

        impl Hypercall {
            /// Every defined hypercall, in number order.
            pub const ALL: &'static [Hypercall] = &[$(Hypercall::$variant,)*];

            /// Decodes a hypercall number; `None` for an undefined one (→ `-ENOSYS`).
            #[inline]
            pub const fn from_number(number: u64) -> Option<Hypercall> {
                match number {
                    $( $num => Some(Hypercall::$variant), )*
                    _ => None,
                }
            }

            /// The hypercall's number.
            #[inline]
            pub const fn number(self) -> u32 {
                self as u32
            }

            /// The snake_case name used in SPEC.md and logs.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Hypercall::$variant => stringify!($variant), )*
                }
            }
        }
    };
}

hypercall_table! {
    /// `version(cmd)`: ABI version or feature bits (HC-10).
    0 => Version,
    /// `console_io(cmd, len, buf)`: write to / read from the hypervisor console (HC-11).
    1 => ConsoleIo,
    /// `sched_op(cmd, arg)`: yield, shutdown (HC-12).
    2 => SchedOp,
    /// `set_trap_table(table, count)`: register exception handlers (HC-13).
    3 => SetTrapTable,
    /// `stack_switch(rsp)`: the kernel stack used when a trap arrives from guest user mode (HC-14).
    4 => StackSwitch,
    /// `set_callbacks(event, failsafe, syscall)`: register callback entry points (HC-15).
    5 => SetCallbacks,
    /// `iret()`: return from a bounced trap; reads an `IretContext` at the guest's rsp (HC-16).
    6 => Iret,
    /// `domctl(op, domid, buf)`: privileged domain control (HC-17).
    7 => Domctl,
    /// `bench_op(cmd)`: measurement aids for `cargo xtask bench` (HC-18).
    8 => BenchOp,
    /// `mmu_update(reqs, count, done, progress)`: batched page-table updates (MM-4).
    9 => MmuUpdate,
    /// `update_va_mapping(va, val, flags)`: update the L1 entry mapping `va` (MM-5).
    10 => UpdateVaMapping,
    /// `mmuext_op(ops, count, done, progress)`: pin, unpin, base pointers, TLB (MM-6).
    11 => MmuextOp,
    /// `multicall(calls, count)`: several hypercalls in one entry (HC-20).
    12 => Multicall,
    /// `evtchn_op(cmd, arg)`: event channels (EVT-*).
    13 => EvtchnOp,
    /// `grant_table_op(cmd, ops, count)`: grant tables (GNT-*).
    14 => GrantTableOp,
    /// `set_timer_op(deadline_ns)`: one-shot VIRQ_TIMER at a system time (TIME-2).
    15 => SetTimerOp,
    /// `vcpu_op(cmd, vcpu, arg)`: secondary vCPUs up/down, run state (HC-21, since 0.5).
    16 => VcpuOp,
    /// `physdev_op(cmd, arg)`: the driver domain's PCI devices, their interrupts and IOMMU space (PDEV-*, since 0.5).
    17 => PhysdevOp,
    /// `devbus_op(cmd, arg)`: device records for split drivers (DEV-*), since 0.5.
    18 => DevbusOp,
}

bitflags! {
    /// Feature bits returned by `version(VERSION_FEATURES)` (HC-10).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Features: u64 {
        /// The hypercall page is filled from the ELF note (always set in 0.x).
        const HYPERCALL_PAGE = 1 << 0;
        /// Exceptions are bounced to the trap table (HC-13).
        const TRAP_BOUNCE = 1 << 1;
        /// `console_io(CONSOLE_READ)` is available to the driver domain.
        const CONSOLE_READ = 1 << 2;
        /// `domctl(DOMCTL_GET_INFO)` is available to capable domains.
        const DOMCTL_GET_INFO = 1 << 3;
        /// Guest page tables: `mmu_update`, `update_va_mapping`, `mmuext_op` (MM-4..6).
        const PV_MMU = 1 << 4;
        /// `multicall` (HC-20).
        const MULTICALL = 1 << 5;
        /// Guest user mode: user base pointer, syscall bounce, iret to user (MM-7).
        const GUEST_USER_MODE = 1 << 6;
        /// The read-only M2P table at `layout::M2P_VIRT_START` (MM-3).
        const M2P = 1 << 7;
        /// Event channels, upcalls, `sched_op` block and poll (EVT-*).
        const EVTCHN = 1 << 8;
        /// Grant tables: setup, query, map, unmap, copy (GNT-*).
        const GRANT_TABLES = 1 << 9;
        /// PV clock in vcpu_info, wallclock, `set_timer_op`, poll timeouts (TIME-*).
        const TIME = 1 << 10;
        /// Several vCPUs per domain, `vcpu_op`, TLB flushes across CPUs (HC-21, since 0.5).
        const SMP = 1 << 11;
        /// devbus records and `VIRQ_DEVBUS` (DEV-*), since 0.5. (Bit 16 so
        /// that the other 0.5 additions can take the next bits.)
        const DEVBUS = 1 << 16;
        /// `physdev_op`: assigned PCI devices, MSI as events, the IOMMU (PDEV-*, since 0.5).
        const PHYSDEV = 1 << 12;
        /// Toolstack domctls (create, populate, build, pause, destroy, consoles,
        /// hv log, management UART, held boot modules) and console input for
        /// every domain (TS-*, since 0.6).
        const TOOLSTACK = 1 << 17;
    }
}

/// `version` sub-command: returns `(ABI_MAJOR << 16) | ABI_MINOR`.
pub const VERSION_ABI: u64 = 0;
/// `version` sub-command: returns the [`Features`] bits.
pub const VERSION_FEATURES: u64 = 1;

/// Packs a version as `version(VERSION_ABI)` returns it.
pub const fn pack_version(major: u32, minor: u32) -> u64 {
    ((major as u64) << 16) | (minor as u64 & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_decode_to_themselves() {
        for &h in Hypercall::ALL {
            assert_eq!(Hypercall::from_number(h.number() as u64), Some(h));
            assert!((h.number() as u64) < HYPERCALL_SLOTS);
        }
        assert_eq!(Hypercall::from_number(HYPERCALL_SLOTS), None);
        assert_eq!(Hypercall::from_number(u64::MAX), None);
    }

    #[test]
    fn numbers_are_ordered() {
        // Numbers are reserved per feature, so the table may have gaps
        // (hv-core's dispatch table has a slot for every number).
        for pair in Hypercall::ALL.windows(2) {
            assert!(pair[0].number() < pair[1].number());
        }
    }
}
