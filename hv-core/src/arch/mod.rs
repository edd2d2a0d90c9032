//! Architecture layer: everything that needs inline assembly, privileged
//! registers, port or MMIO access lives below this module, behind small safe
//! wrappers. Only x86_64 exists.

#[cfg(target_arch = "x86_64")]
pub mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("hv-core supports only x86_64");
