//! Event channels (SPEC.md §8): the port state machine (portable,
//! property-tested) and, in the kernel, delivery into shared_info and upcalls.

pub mod channels;
#[cfg(target_os = "none")]
pub mod delivery;
