//! Virtio 1.x devices over the modern PCI transport: the split virtqueue
//! ([`queue`]), the transport ([`pci`]) and the block ([`blk`]) and network
//! ([`net`]) drivers.
//!
//! # Why not the `virtio-drivers` crate
//! Its HAL hands the device one physical address per buffer (`Hal::share`)
//! and maps BARs by physical address; here a buffer's pages are contiguous
//! on the bus only behind an IOMMU (with `iommu=off` device addresses are
//! scattered machine frames), BARs are mapped through the hypervisor, and
//! completions should come as event channels with many requests in flight.
//! Owning the queue also lets it refuse bad used elements (see [`queue`]).

pub mod blk;
pub mod net;
pub mod pci;
pub mod queue;

/// Feature bit: virtio 1.x (modern) device.
pub const F_VERSION_1: u64 = 1 << 32;
/// Feature bit: the device accesses memory through the platform's IOMMU.
pub const F_ACCESS_PLATFORM: u64 = 1 << 33;

/// Device status: the guest noticed the device.
pub const STATUS_ACKNOWLEDGE: u8 = 1;
/// Device status: the guest has a driver for it.
pub const STATUS_DRIVER: u8 = 2;
/// Device status: the driver is ready.
pub const STATUS_DRIVER_OK: u8 = 4;
/// Device status: feature negotiation done.
pub const STATUS_FEATURES_OK: u8 = 8;
/// Device status: the device needs a reset.
pub const STATUS_NEEDS_RESET: u8 = 64;
/// Device status: the driver gave up.
pub const STATUS_FAILED: u8 = 128;

/// Why a virtio device could not be driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioError {
    /// A required capability is missing or points outside its BAR.
    BadCapability(u8),
    /// A BAR the capabilities name is not mapped.
    BarMissing(u8),
    /// The device did not finish a reset.
    ResetTimeout,
    /// The device lacks a feature the driver needs (the bits).
    MissingFeatures(u64),
    /// The device refused the negotiated features.
    FeaturesRefused,
    /// The queue does not exist or is too small.
    BadQueue(u16),
    /// A queue could not be set up.
    Queue(queue::QueueError),
    /// No DMA memory.
    NoMemory,
}

impl core::fmt::Display for VirtioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VirtioError::BadCapability(t) => write!(f, "missing or bad capability (type {t})"),
            VirtioError::BarMissing(b) => write!(f, "BAR {b} not mapped"),
            VirtioError::ResetTimeout => write!(f, "reset did not complete"),
            VirtioError::MissingFeatures(bits) => write!(f, "missing features {bits:#x}"),
            VirtioError::FeaturesRefused => write!(f, "features refused"),
            VirtioError::BadQueue(q) => write!(f, "queue {q} unusable"),
            VirtioError::Queue(e) => write!(f, "queue: {e:?}"),
            VirtioError::NoMemory => write!(f, "no DMA memory"),
        }
    }
}
