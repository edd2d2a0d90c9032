//! Domains: the start-of-day layout and builder (portable, host-tested), the
//! hypercall page, and — in the kernel — the live domain and vCPU table.

pub mod build;
pub mod hypercall_page;
pub mod layout;

#[cfg(target_os = "none")]
mod create;
#[cfg(target_os = "none")]
mod held;
#[cfg(target_os = "none")]
mod table;
#[cfg(target_os = "none")]
pub use create::*;
#[cfg(target_os = "none")]
pub use held::*;
#[cfg(target_os = "none")]
pub use table::*;
