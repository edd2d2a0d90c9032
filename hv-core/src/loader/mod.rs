//! Turning boot modules into domain images: the ELF loader and the module
//! command-line parser. Pure logic, host-tested.

pub mod cmdline;
pub mod elf;
