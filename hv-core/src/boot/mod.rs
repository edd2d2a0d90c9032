//! Boot: from the multiboot hand-off to the first domain running. Parses the
//! loader's information, sets up descriptor tables, memory (frame table, heap,
//! direct map), builds every boot module into a domain (dom0-less boot), then
//! starts the timer and the scheduler.

pub mod multiboot;

#[cfg(target_os = "none")]
mod kernel;
#[cfg(target_os = "none")]
pub use kernel::kernel_main;
