//! devbus (SPEC.md §12, DEV-*): the device records split drivers use to find
//! each other and hand over rings — the portable record table
//! ([`records::DeviceBus`], property-tested) and, in the kernel, the
//! `devbus_op` hypercall and the `VIRQ_DEVBUS` notifications.
//!
//! Lock order: `domain::DOMAINS`, then `event::delivery::EVENTS`, then
//! [`DEVBUS`].

#[cfg(target_os = "none")]
pub mod hypercall;
pub mod records;

pub use records::DeviceBus;

/// Every device record of the machine.
pub static DEVBUS: crate::sync::Mutex<DeviceBus> = crate::sync::Mutex::new(DeviceBus::new());
