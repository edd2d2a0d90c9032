//! The driver domain's device drivers, as a library the kernel image links
//! and the host unit-tests.
//!
//! Domain 0 owns the PCI devices the hypervisor assigned to it (SPEC.md
//! physdev_op). This crate holds everything between those devices and the
//! backends that will serve other domains:
//!
//! - [`dma`]: pages a device may read and write ([`dma::DmaPage`]), addressed
//!   by the device through their *device address* (pfn << 12 behind an IOMMU,
//!   the machine address from the P2M without one);
//! - [`regs`]: register windows (a mapped BAR, a PCI capability's window)
//!   behind [`regs::RegisterWindow`];
//! - [`pci`]: configuration space ([`pci::ConfigSpace`]), capability lists,
//!   BARs, MSI-X tables;
//! - [`virtio`]: the split virtqueue, the virtio 1.x modern PCI transport,
//!   virtio-blk and virtio-net;
//! - [`nvme`]: NVMe queue pairs, commands, PRP lists and the controller
//!   bring-up;
//! - [`blk`] and [`net`]: the block-device and NIC traits the backends use;
//! - [`pattern`]: the patterned sectors and frames the self-tests write;
//! - [`disk_queue`]: a block device kept busy with many requests at once,
//!   completing out of order, with exact flushes: what the block backend
//!   serves guests from on a real disk.
//!
//! Everything here is portable: hardware is reached only through the traits
//! above, which the kernel implements over mapped MMIO and its own frames
//! (`src/main.rs` and its modules) and the tests implement over simulated
//! devices. The crate has no `unsafe`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod blk;
pub mod disk_queue;
pub mod dma;
pub mod net;
pub mod nvme;
pub mod pattern;
pub mod pci;
pub mod regs;
pub mod virtio;

#[cfg(test)]
pub(crate) mod sim;
