//! PCI functions as hv-core sees them (PDEV-1 .. PDEV-4): enumeration through
//! a [`ConfigSpace`], BAR sizing, the capabilities hv-core cares about
//! (MSI, MSI-X, virtio's configuration-access window), who owns each
//! function, the filter on the driver domain's configuration writes, and
//! which machine frames its BARs let it map.
//!
//! Portable: the hardware is only the narrow [`ConfigSpace`] trait (ECAM in
//! the kernel, a model in the tests).
//!
//! # Invariants
//! - Enumeration reads and writes only functions that answer (vendor ID not
//!   0xFFFF), restores every BAR it sizes and the command register, and stops
//!   walking a capability list after [`MAX_CAPS`] entries (a looping list).
//! - [`filter_config_write`] never lets a write reach a BAR, the expansion
//!   ROM, the header's read-only fields, or an interrupt-programming
//!   capability.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use alloc::vec::Vec;
use core::fmt;

use hypercall_abi::physdev::{
    PhysdevBar, PhysdevDeviceInfo, PHYSDEV_BARS, PHYSDEV_BAR_64BIT, PHYSDEV_BAR_IO,
    PHYSDEV_BAR_PREFETCH, PHYSDEV_BAR_PRESENT,
};
use hypercall_abi::{Errno, PAGE_SIZE};

/// A PCI function address in segment 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl Bdf {
    pub const fn new(bus: u8, dev: u8, func: u8) -> Self {
        Self {
            bus,
            dev: dev & 0x1f,
            func: func & 7,
        }
    }

    /// From the 16-bit requester ID (`bus << 8 | dev << 3 | func`).
    pub const fn from_rid(rid: u16) -> Self {
        Self::new((rid >> 8) as u8, ((rid >> 3) & 0x1f) as u8, (rid & 7) as u8)
    }

    /// The 16-bit requester ID.
    pub const fn rid(self) -> u16 {
        ((self.bus as u16) << 8) | ((self.dev as u16) << 3) | self.func as u16
    }

    /// From an ABI `sbdf`; `None` for a segment other than 0.
    pub fn from_sbdf(sbdf: u32) -> Option<Self> {
        if sbdf >> 16 != 0 {
            return None;
        }
        Some(Self::from_rid(sbdf as u16))
    }

    /// Parses `bb:dd.f` (hex).
    pub fn parse(s: &str) -> Option<Self> {
        let (bus, rest) = s.split_once(':')?;
        let (dev, func) = rest.split_once('.')?;
        if bus.is_empty() || bus.len() > 2 || dev.is_empty() || dev.len() > 2 || func.len() != 1 {
            return None;
        }
        let bus = u8::from_str_radix(bus, 16).ok()?;
        let dev = u8::from_str_radix(dev, 16).ok()?;
        let func = u8::from_str_radix(func, 16).ok()?;
        (dev < 32 && func < 8).then_some(Self::new(bus, dev, func))
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{:x}", self.bus, self.dev, self.func)
    }
}

/// Access width of a configuration-space access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    Byte = 1,
    Word = 2,
    Dword = 4,
}

impl Width {
    pub fn from_size(size: u8) -> Option<Self> {
        match size {
            1 => Some(Self::Byte),
            2 => Some(Self::Word),
            4 => Some(Self::Dword),
            _ => None,
        }
    }

    pub const fn bytes(self) -> u16 {
        self as u16
    }
}

/// The hardware: one function's 4 KiB configuration space. `offset` is
/// aligned to the width and below 4096 (callers check).
pub trait ConfigSpace {
    fn read(&self, bdf: Bdf, offset: u16, width: Width) -> u32;
    fn write(&self, bdf: Bdf, offset: u16, width: Width, value: u32);
}

/// Largest configuration-space offset + 1.
pub const CONFIG_SIZE: u16 = 4096;
/// Most capabilities walked per function.
pub const MAX_CAPS: usize = 48;

pub const REG_VENDOR: u16 = 0x00;
pub const REG_COMMAND: u16 = 0x04;
pub const REG_STATUS: u16 = 0x06;
pub const REG_REVISION: u16 = 0x08;
pub const REG_HEADER_TYPE: u16 = 0x0e;
pub const REG_BAR0: u16 = 0x10;
pub const REG_CAP_PTR: u16 = 0x34;

pub const CMD_IO: u16 = 1 << 0;
pub const CMD_MEMORY: u16 = 1 << 1;
pub const CMD_BUS_MASTER: u16 = 1 << 2;
pub const CMD_INTX_DISABLE: u16 = 1 << 10;
/// Command bits the driver domain may change (PDEV-3): I/O, memory, bus
/// master, parity, SERR, INTx disable.
pub const CMD_GUEST_WRITABLE: u16 =
    CMD_IO | CMD_MEMORY | CMD_BUS_MASTER | (1 << 6) | (1 << 8) | CMD_INTX_DISABLE;
const STATUS_CAP_LIST: u16 = 1 << 4;

pub const CAP_MSI: u8 = 0x05;
pub const CAP_VENDOR: u8 = 0x09;
pub const CAP_MSIX: u8 = 0x11;
/// Virtio's `VIRTIO_PCI_CAP_PCI_CFG`: a window onto any BAR offset.
const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;
const VENDOR_VIRTIO: u16 = 0x1af4;

/// One BAR as sized at boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bar {
    pub address: u64,
    pub size: u64,
    pub io: bool,
    pub is_64bit: bool,
    pub prefetchable: bool,
}

impl Bar {
    pub fn present(&self) -> bool {
        self.size != 0
    }

    /// `[first, last]` machine frames of a present memory BAR.
    pub fn frames(&self) -> Option<(u64, u64)> {
        if !self.present() || self.io {
            return None;
        }
        let end = self.address.checked_add(self.size.checked_sub(1)?)?;
        Some((self.address / PAGE_SIZE, end / PAGE_SIZE))
    }
}

/// The MSI-X capability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msix {
    pub cap: u8,
    /// Table entries.
    pub entries: u16,
    /// BIR in bits 0..3, offset in the rest.
    pub table: u32,
    pub pba: u32,
}

impl Msix {
    fn region(bars: &[Bar; PHYSDEV_BARS], location: u32, len: u64) -> Option<(u64, u64)> {
        let bar = bars.get((location & 7) as usize)?;
        if !bar.present() || bar.io {
            return None;
        }
        let start = bar.address.checked_add(u64::from(location & !7))?;
        Some((start, start.checked_add(len)?))
    }

    /// Machine address range `[start, end)` of the table.
    pub fn table_range(&self, bars: &[Bar; PHYSDEV_BARS]) -> Option<(u64, u64)> {
        Self::region(bars, self.table, u64::from(self.entries) * 16)
    }

    /// Machine address range `[start, end)` of the pending-bit array.
    pub fn pba_range(&self, bars: &[Bar; PHYSDEV_BARS]) -> Option<(u64, u64)> {
        Self::region(
            bars,
            self.pba,
            u64::from(self.entries).div_ceil(64).saturating_mul(8),
        )
    }
}

/// Who a function belongs to (PDEV-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceOwner {
    /// hv-core keeps it (bridges, the IOMMU).
    Hypervisor,
    /// Assigned to the driver domain.
    Driver,
    /// Nobody may use it (not listed in `dom0_pci`, or no IOMMU).
    Nobody,
}

impl DeviceOwner {
    pub const fn label(self) -> &'static str {
        match self {
            Self::Hypervisor => "hv",
            Self::Driver => "d0",
            Self::Nobody => "-",
        }
    }
}

/// One PCI function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciFunction {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    /// `base << 16 | sub << 8 | prog_if`.
    pub class: u32,
    pub revision: u8,
    pub header_type: u8,
    pub bars: [Bar; PHYSDEV_BARS],
    /// Offset of the MSI capability.
    pub msi_cap: Option<u8>,
    /// MSI: 64-bit address capable.
    pub msi_64bit: bool,
    /// MSI: vectors the device can request.
    pub msi_vectors: u16,
    pub msix: Option<Msix>,
    /// Configuration-space ranges `[start, end)` the driver domain may not
    /// write (PDEV-3), beyond the header rules.
    pub write_denied: heapless::Vec<(u16, u16), 8>,
    pub owner: DeviceOwner,
}

impl PciFunction {
    pub const fn base_class(&self) -> u8 {
        (self.class >> 16) as u8
    }

    pub const fn sub_class(&self) -> u8 {
        (self.class >> 8) as u8
    }

    /// A bridge of any kind (host, ISA/LPC, PCI-to-PCI, …).
    pub const fn is_bridge(&self) -> bool {
        self.base_class() == 0x06
    }

    /// An IOMMU (class 08/06: AMD-Vi's own function).
    pub const fn is_iommu(&self) -> bool {
        self.base_class() == 0x08 && self.sub_class() == 0x06
    }

    /// The `PHYSDEVOP_DEVICE_INFO` answer for this function.
    pub fn device_info(&self, index: u32) -> PhysdevDeviceInfo {
        let mut info = PhysdevDeviceInfo {
            index,
            sbdf: u32::from(self.bdf.rid()),
            vendor_id: self.vendor,
            device_id: self.device,
            class: self.class,
            revision: self.revision,
            header_type: self.header_type,
            msi_cap: self.msi_cap.unwrap_or(0),
            msix_cap: self.msix.map_or(0, |m| m.cap),
            msix_entries: self.msix.map_or(0, |m| m.entries),
            msi_vectors: if self.msi_cap.is_some() {
                self.msi_vectors
            } else {
                0
            },
            msix_table: self.msix.map_or(0, |m| m.table),
            msix_pba: self.msix.map_or(0, |m| m.pba),
            ..PhysdevDeviceInfo::default()
        };
        for (out, bar) in info.bars.iter_mut().zip(&self.bars) {
            if !bar.present() {
                continue;
            }
            let mut flags = PHYSDEV_BAR_PRESENT;
            if bar.io {
                flags |= PHYSDEV_BAR_IO;
            }
            if bar.is_64bit {
                flags |= PHYSDEV_BAR_64BIT;
            }
            if bar.prefetchable {
                flags |= PHYSDEV_BAR_PREFETCH;
            }
            *out = PhysdevBar {
                address: bar.address,
                size: bar.size,
                flags,
                pad: 0,
            };
        }
        info
    }
}

/// Sizes the BARs of a type-0 function. Memory and I/O decoding are off
/// while it does, and the command register is restored afterwards.
// `i` stays below PHYSDEV_BARS and register offsets below 0x28: the
// arithmetic and indexing here cannot overflow or go out of bounds.
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
fn size_bars(cfg: &dyn ConfigSpace, bdf: Bdf) -> [Bar; PHYSDEV_BARS] {
    let mut bars = [Bar::default(); PHYSDEV_BARS];
    let command = cfg.read(bdf, REG_COMMAND, Width::Word) as u16;
    cfg.write(
        bdf,
        REG_COMMAND,
        Width::Word,
        u32::from(command & !(CMD_IO | CMD_MEMORY)),
    );
    let mut i = 0;
    while i < PHYSDEV_BARS {
        let reg = REG_BAR0 + 4 * i as u16;
        let original = cfg.read(bdf, reg, Width::Dword);
        cfg.write(bdf, reg, Width::Dword, 0xffff_ffff);
        let probe = cfg.read(bdf, reg, Width::Dword);
        cfg.write(bdf, reg, Width::Dword, original);
        if original & 1 == 1 {
            // I/O BAR.
            let mask = probe & !3 & 0xffff;
            if mask != 0 {
                bars[i] = Bar {
                    address: u64::from(original & !3),
                    size: u64::from((!mask).wrapping_add(1) & 0xffff),
                    io: true,
                    ..Bar::default()
                };
            }
            i += 1;
            continue;
        }
        let is_64bit = (original >> 1) & 3 == 2 && i + 1 < PHYSDEV_BARS;
        let prefetchable = original & 8 != 0;
        let mut address = u64::from(original & !0xf);
        let mut mask = u64::from(probe & !0xf);
        if is_64bit {
            let reg_hi = reg + 4;
            let original_hi = cfg.read(bdf, reg_hi, Width::Dword);
            cfg.write(bdf, reg_hi, Width::Dword, 0xffff_ffff);
            let probe_hi = cfg.read(bdf, reg_hi, Width::Dword);
            cfg.write(bdf, reg_hi, Width::Dword, original_hi);
            address |= u64::from(original_hi) << 32;
            mask |= u64::from(probe_hi) << 32;
        } else if mask != 0 {
            mask |= 0xffff_ffff_0000_0000;
        }
        if mask != 0 {
            bars[i] = Bar {
                address,
                size: (!mask).wrapping_add(1),
                io: false,
                is_64bit,
                prefetchable,
            };
        }
        i += if is_64bit { 2 } else { 1 };
    }
    cfg.write(bdf, REG_COMMAND, Width::Word, u32::from(command));
    bars
}

/// Reads one function (which answered with `vendor`).
fn read_function(cfg: &dyn ConfigSpace, bdf: Bdf, vendor: u16) -> PciFunction {
    let id = cfg.read(bdf, REG_VENDOR, Width::Dword);
    let class_rev = cfg.read(bdf, REG_REVISION, Width::Dword);
    let header_type = cfg.read(bdf, REG_HEADER_TYPE, Width::Byte) as u8;
    let mut f = PciFunction {
        bdf,
        vendor,
        device: (id >> 16) as u16,
        class: class_rev >> 8,
        revision: class_rev as u8,
        header_type,
        bars: [Bar::default(); PHYSDEV_BARS],
        msi_cap: None,
        msi_64bit: false,
        msi_vectors: 0,
        msix: None,
        write_denied: heapless::Vec::new(),
        owner: DeviceOwner::Nobody,
    };
    if header_type & 0x7f == 0 {
        f.bars = size_bars(cfg, bdf);
    }
    let status = cfg.read(bdf, REG_STATUS, Width::Word) as u16;
    if status & STATUS_CAP_LIST == 0 {
        return f;
    }
    let mut ptr = cfg.read(bdf, REG_CAP_PTR, Width::Byte) as u8 & 0xfc;
    let mut seen = 0;
    while ptr >= 0x40 && seen < MAX_CAPS {
        seen = seen.saturating_add(1);
        let header = cfg.read(bdf, u16::from(ptr), Width::Dword);
        let id = header as u8;
        let next = (header >> 8) as u8 & 0xfc;
        let control = (header >> 16) as u16;
        let at = u16::from(ptr);
        match id {
            CAP_MSI if f.msi_cap.is_none() => {
                f.msi_cap = Some(ptr);
                f.msi_64bit = control & (1 << 7) != 0;
                f.msi_vectors = 1 << ((control >> 1) & 7).min(5);
                let per_vector_mask = control & (1 << 8) != 0;
                let len = match (f.msi_64bit, per_vector_mask) {
                    (false, false) => 10,
                    (true, false) => 14,
                    (false, true) => 20,
                    (true, true) => 24,
                };
                let _ = f.write_denied.push((at, at.saturating_add(len)));
            }
            CAP_MSIX if f.msix.is_none() => {
                let table = cfg.read(bdf, at + 4, Width::Dword);
                let pba = cfg.read(bdf, at + 8, Width::Dword);
                f.msix = Some(Msix {
                    cap: ptr,
                    entries: (control & 0x7ff).saturating_add(1),
                    table,
                    pba,
                });
                let _ = f.write_denied.push((at, at + 12));
            }
            CAP_VENDOR if vendor == VENDOR_VIRTIO => {
                let cap_len = (header >> 16) as u8;
                let cfg_type = (header >> 24) as u8;
                if cfg_type == VIRTIO_PCI_CAP_PCI_CFG {
                    let end = at.saturating_add(u16::from(cap_len.max(20))).min(256);
                    let _ = f.write_denied.push((at, end));
                }
            }
            _ => {}
        }
        ptr = next;
    }
    f
}

/// Enumerates buses `first..=last` (every device; functions 1–7 only when
/// function 0 is multi-function).
pub fn enumerate(cfg: &dyn ConfigSpace, first: u8, last: u8) -> Vec<PciFunction> {
    let mut out = Vec::new();
    for bus in first..=last {
        for dev in 0..32 {
            let f0 = Bdf::new(bus, dev, 0);
            let vendor = cfg.read(f0, REG_VENDOR, Width::Word) as u16;
            if vendor == 0xffff {
                continue;
            }
            let multi = cfg.read(f0, REG_HEADER_TYPE, Width::Byte) & 0x80 != 0;
            out.push(read_function(cfg, f0, vendor));
            if !multi {
                continue;
            }
            for func in 1..8 {
                let bdf = Bdf::new(bus, dev, func);
                let vendor = cfg.read(bdf, REG_VENDOR, Width::Word) as u16;
                if vendor != 0xffff {
                    out.push(read_function(cfg, bdf, vendor));
                }
            }
        }
    }
    out
}

/// Most functions a `dom0_pci=` list names.
pub const MAX_DOM0_PCI: usize = 16;

/// `dom0_pci=` (PDEV-2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dom0Pci {
    /// Every function hv-core does not keep (the default).
    #[default]
    All,
    /// No function.
    None,
    /// These functions (those hv-core keeps excepted): the first `len` of
    /// `devices`.
    List {
        devices: [Bdf; MAX_DOM0_PCI],
        len: u8,
    },
}

impl Dom0Pci {
    /// Parses `all`, `none` or `bb:dd.f+bb:dd.f+…` (at most
    /// [`MAX_DOM0_PCI`] functions).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all" => Some(Self::All),
            "none" => Some(Self::None),
            _ => {
                let mut devices = [Bdf::new(0, 0, 0); MAX_DOM0_PCI];
                let mut len = 0usize;
                for part in s.split('+') {
                    let bdf = Bdf::parse(part)?;
                    if devices.get(..len).is_some_and(|d| d.contains(&bdf)) {
                        continue;
                    }
                    *devices.get_mut(len)? = bdf;
                    len = len.saturating_add(1);
                }
                Some(Self::List {
                    devices,
                    len: len as u8,
                })
            }
        }
    }

    /// The functions a list names (empty for `all` and `none`).
    pub fn listed(&self) -> &[Bdf] {
        match self {
            Self::List { devices, len } => devices.get(..usize::from(*len)).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// Decides every function's owner (PDEV-2). `devices_allowed` is false when
/// no usable IOMMU protects DMA and `iommu=off` was not given: then nothing
/// is assigned. Returns the listed functions that are absent or kept.
pub fn assign(
    functions: &mut [PciFunction],
    policy: &Dom0Pci,
    devices_allowed: bool,
) -> heapless::Vec<Bdf, MAX_DOM0_PCI> {
    for f in functions.iter_mut() {
        f.owner = if f.is_bridge() || f.is_iommu() {
            DeviceOwner::Hypervisor
        } else if !devices_allowed {
            DeviceOwner::Nobody
        } else {
            match policy {
                Dom0Pci::All => DeviceOwner::Driver,
                Dom0Pci::None => DeviceOwner::Nobody,
                Dom0Pci::List { .. } if policy.listed().contains(&f.bdf) => DeviceOwner::Driver,
                Dom0Pci::List { .. } => DeviceOwner::Nobody,
            }
        };
    }
    let mut unusable = heapless::Vec::new();
    {
        for bdf in policy.listed() {
            let usable = functions
                .iter()
                .any(|f| f.bdf == *bdf && f.owner != DeviceOwner::Hypervisor);
            if !usable {
                let _ = unusable.push(*bdf);
            }
        }
    }
    unusable
}

/// Programs `f`'s MSI capability with one vector (`address`, `data`) and
/// enables it (PDEV-5). False if it has no MSI capability.
pub fn enable_msi(cfg: &dyn ConfigSpace, f: &PciFunction, address: u64, data: u16) -> bool {
    let Some(cap) = f.msi_cap else {
        return false;
    };
    let cap = u16::from(cap);
    let control = cfg.read(f.bdf, cap + 2, Width::Word) as u16;
    // Disabled while it changes; one vector (multiple message enable 0).
    cfg.write(f.bdf, cap + 2, Width::Word, u32::from(control & !0x71));
    cfg.write(f.bdf, cap + 4, Width::Dword, address as u32);
    if f.msi_64bit {
        cfg.write(f.bdf, cap + 8, Width::Dword, (address >> 32) as u32);
        cfg.write(f.bdf, cap + 12, Width::Word, u32::from(data));
    } else {
        cfg.write(f.bdf, cap + 8, Width::Word, u32::from(data));
    }
    cfg.write(
        f.bdf,
        cap + 2,
        Width::Word,
        u32::from((control & !0x70) | 1),
    );
    true
}

/// Masks `f`'s MSI (clears its enable bit).
pub fn disable_msi(cfg: &dyn ConfigSpace, f: &PciFunction) {
    if let Some(cap) = f.msi_cap {
        let cap = u16::from(cap);
        let control = cfg.read(f.bdf, cap + 2, Width::Word) as u16;
        cfg.write(f.bdf, cap + 2, Width::Word, u32::from(control & !1));
    }
}

/// Sets the MSI-X enable bit (and clears the function mask) of `f`.
pub fn enable_msix(cfg: &dyn ConfigSpace, f: &PciFunction) -> bool {
    let Some(msix) = f.msix else {
        return false;
    };
    let at = u16::from(msix.cap) + 2;
    let control = cfg.read(f.bdf, at, Width::Word) as u16;
    cfg.write(
        f.bdf,
        at,
        Width::Word,
        u32::from((control | 0x8000) & !0x4000),
    );
    true
}

/// Checks a configuration access's shape (PDEV-3): width 1, 2 or 4, aligned,
/// inside the 4 KiB space.
pub fn check_access(offset: u16, size: u8) -> Result<Width, Errno> {
    let width = Width::from_size(size).ok_or(Errno::EINVAL)?;
    if !offset.is_multiple_of(width.bytes()) || offset >= CONFIG_SIZE {
        return Err(Errno::EINVAL);
    }
    Ok(width)
}

/// Header bytes the driver domain may write: command, status, cache line
/// size, latency timer, interrupt line.
fn header_byte_writable(offset: u16) -> bool {
    matches!(offset, 0x04..=0x07 | 0x0c | 0x0d | 0x3c)
}

/// Filters a driver-domain configuration write (PDEV-3). Returns the value to
/// write, or `-EPERM`. `current_command` is the command register now (its
/// bits outside [`CMD_GUEST_WRITABLE`] are kept).
pub fn filter_config_write(
    f: &PciFunction,
    offset: u16,
    width: Width,
    value: u32,
    current_command: u16,
) -> Result<u32, Errno> {
    let end = offset.saturating_add(width.bytes());
    if offset < 0x40 && !(offset..end).all(header_byte_writable) {
        return Err(Errno::EPERM);
    }
    if f.write_denied
        .iter()
        .any(|&(start, stop)| offset < stop && start < end)
    {
        return Err(Errno::EPERM);
    }
    // The command register: only the writable bits come from `value`.
    if offset <= REG_COMMAND && REG_COMMAND < end {
        let shift = u32::from(REG_COMMAND.saturating_sub(offset)).saturating_mul(8);
        let keep = u32::from(!CMD_GUEST_WRITABLE) << shift;
        let cmd_now = u32::from(current_command) << shift;
        let mask_bits = match width {
            Width::Byte => 0xff,
            _ => 0xffff,
        } << shift;
        let keep = keep & mask_bits;
        return Ok((value & !keep) | (cmd_now & keep));
    }
    if width == Width::Byte && offset == REG_COMMAND + 1 {
        let keep = u32::from(!CMD_GUEST_WRITABLE >> 8) & 0xff;
        let now = u32::from(current_command >> 8);
        return Ok((value & !keep) | (now & keep));
    }
    Ok(value)
}

/// Machine-frame ranges (inclusive) for the driver domain's MMIO (PDEV-4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoFrames {
    /// Frames of assigned functions' memory BARs.
    permitted: Vec<(u64, u64)>,
    /// Frames that may never be mapped, even inside a permitted range.
    forbidden: Vec<(u64, u64)>,
}

impl IoFrames {
    /// Builds the rules from every function (assigned or not) and the other
    /// MMIO regions `[start, end)` hv-core uses (IOMMU units, local APIC,
    /// I/O APICs, ECAM windows).
    pub fn build(functions: &[PciFunction], hv_regions: &[(u64, u64)]) -> Self {
        let mut rules = Self::default();
        let frames_of = |start: u64, end: u64| -> Option<(u64, u64)> {
            (end > start).then(|| (start / PAGE_SIZE, end.saturating_sub(1) / PAGE_SIZE))
        };
        for f in functions {
            for bar in &f.bars {
                let Some(range) = bar.frames() else {
                    continue;
                };
                if f.owner == DeviceOwner::Driver {
                    rules.permitted.push(range);
                } else {
                    rules.forbidden.push(range);
                }
            }
            if let Some(msix) = f.msix {
                for r in [msix.table_range(&f.bars), msix.pba_range(&f.bars)]
                    .into_iter()
                    .flatten()
                {
                    if let Some(range) = frames_of(r.0, r.1) {
                        rules.forbidden.push(range);
                    }
                }
            }
        }
        for &(start, end) in hv_regions {
            if let Some(range) = frames_of(start, end) {
                rules.forbidden.push(range);
            }
        }
        rules
    }

    /// Whether the driver domain may map machine frame `mfn` (uncached).
    pub fn permits(&self, mfn: u64) -> bool {
        let inside = |ranges: &[(u64, u64)]| ranges.iter().any(|&(a, b)| a <= mfn && mfn <= b);
        inside(&self.permitted) && !inside(&self.forbidden)
    }

    /// Whether `mfn` belongs to any device BAR or hv-core MMIO region.
    pub fn is_device_frame(&self, mfn: u64) -> bool {
        let inside = |ranges: &[(u64, u64)]| ranges.iter().any(|&(a, b)| a <= mfn && mfn <= b);
        inside(&self.permitted) || inside(&self.forbidden)
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
pub(crate) mod tests {
    use super::*;
    use core::cell::RefCell;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A model configuration space: per function 4 KiB of bytes, plus BAR
    /// size masks (writes to a BAR keep only the address bits).
    #[derive(Default)]
    pub struct FakeConfig {
        pub spaces: RefCell<BTreeMap<Bdf, [u8; 4096]>>,
        pub bar_masks: BTreeMap<(Bdf, usize), u32>,
        /// BAR registers that are the high half of a 64-bit BAR.
        pub high_halves: std::collections::BTreeSet<(Bdf, usize)>,
    }

    impl FakeConfig {
        pub fn add(&mut self, bdf: Bdf, vendor: u16, device: u16, class: u32) -> &mut Self {
            let mut space = [0u8; 4096];
            space[0..2].copy_from_slice(&vendor.to_le_bytes());
            space[2..4].copy_from_slice(&device.to_le_bytes());
            space[8..12].copy_from_slice(&((class << 8) | 1).to_le_bytes());
            space[4..6].copy_from_slice(&(CMD_MEMORY | CMD_BUS_MASTER).to_le_bytes());
            self.spaces.borrow_mut().insert(bdf, space);
            self
        }

        /// A 32-bit memory BAR (or the low half of a 64-bit one with `kind`
        /// 0b100) of `size` at `address`.
        pub fn bar(&mut self, bdf: Bdf, i: usize, address: u32, size: u32, flags: u32) {
            self.bar_masks.insert((bdf, i), !(size - 1));
            self.poke(bdf, REG_BAR0 + 4 * i as u16, address | flags);
        }

        pub fn bar_hi(&mut self, bdf: Bdf, i: usize, address_hi: u32, mask_hi: u32) {
            self.bar_masks.insert((bdf, i), mask_hi);
            self.high_halves.insert((bdf, i));
            self.poke(bdf, REG_BAR0 + 4 * i as u16, address_hi);
        }

        pub fn poke(&self, bdf: Bdf, off: u16, value: u32) {
            let mut spaces = self.spaces.borrow_mut();
            let s = spaces.get_mut(&bdf).expect("function");
            s[off as usize..off as usize + 4].copy_from_slice(&value.to_le_bytes());
        }

        pub fn peek(&self, bdf: Bdf, off: u16) -> u32 {
            self.read(bdf, off, Width::Dword)
        }

        /// Adds a capability list: `(offset, bytes)`, linked in order.
        pub fn caps(&self, bdf: Bdf, caps: &[(u8, &[u8])]) {
            let mut spaces = self.spaces.borrow_mut();
            let s = spaces.get_mut(&bdf).expect("function");
            s[6] |= STATUS_CAP_LIST as u8;
            s[REG_CAP_PTR as usize] = caps.first().map_or(0, |c| c.0);
            for (i, (at, bytes)) in caps.iter().enumerate() {
                let at = *at as usize;
                s[at..at + bytes.len()].copy_from_slice(bytes);
                s[at + 1] = caps.get(i + 1).map_or(0, |c| c.0);
            }
        }
    }

    impl ConfigSpace for FakeConfig {
        fn read(&self, bdf: Bdf, offset: u16, width: Width) -> u32 {
            let spaces = self.spaces.borrow();
            let Some(s) = spaces.get(&bdf) else {
                return match width {
                    Width::Byte => 0xff,
                    Width::Word => 0xffff,
                    Width::Dword => 0xffff_ffff,
                };
            };
            let o = offset as usize;
            let mut v = 0u32;
            for i in 0..width.bytes() as usize {
                v |= u32::from(s[o + i]) << (8 * i);
            }
            v
        }

        fn write(&self, bdf: Bdf, offset: u16, width: Width, value: u32) {
            let mut value = value;
            if (REG_BAR0..REG_BAR0 + 24).contains(&offset) && width == Width::Dword {
                let i = usize::from((offset - REG_BAR0) / 4);
                let old = self.read(bdf, offset, Width::Dword);
                let mask = self.bar_masks.get(&(bdf, i)).copied().unwrap_or(0);
                let flag_bits = if self.high_halves.contains(&(bdf, i)) {
                    0
                } else if old & 1 == 1 {
                    3
                } else {
                    0xf
                };
                let mask = if self.bar_masks.contains_key(&(bdf, i)) {
                    mask & !flag_bits
                } else {
                    0
                };
                value = (value & mask) | (old & flag_bits);
            }
            let mut spaces = self.spaces.borrow_mut();
            let Some(s) = spaces.get_mut(&bdf) else {
                return;
            };
            let o = offset as usize;
            for i in 0..width.bytes() as usize {
                s[o + i] = (value >> (8 * i)) as u8;
            }
        }
    }

    /// A q35-like bus: host bridge, virtio-blk with MSI-X and the virtio
    /// config window, an NVMe with a 64-bit BAR and MSI, an LPC bridge
    /// (multi-function with SMBus).
    pub fn q35_like() -> FakeConfig {
        let mut c = FakeConfig::default();
        let host = Bdf::new(0, 0, 0);
        c.add(host, 0x8086, 0x29c0, 0x060000);
        let blk = Bdf::new(0, 3, 0);
        c.add(blk, 0x1af4, 0x1042, 0x010000);
        c.bar(blk, 1, 0xfebd_1000, 0x1000, 0);
        c.bar(blk, 4, 0x0000_0000, 0x4000, 0b1100);
        c.bar_hi(blk, 5, 0x0000_0008, 0xffff_ffff);
        c.caps(
            blk,
            &[
                (
                    0x98,
                    &[CAP_MSIX, 0, 0x01, 0x00, 0x01, 0, 0, 0, 0x01, 0x08, 0, 0],
                ),
                (0x84, &[CAP_VENDOR, 0, 20, VIRTIO_PCI_CAP_PCI_CFG]),
                (0x70, &[CAP_VENDOR, 0, 16, 1]),
            ],
        );
        let nvme = Bdf::new(0, 4, 0);
        c.add(nvme, 0x1b36, 0x0010, 0x010802);
        c.bar(nvme, 0, 0xfebd_4000, 0x4000, 0b0100);
        c.bar_hi(nvme, 1, 0, 0xffff_ffff);
        c.caps(nvme, &[(0x40, &[CAP_MSI, 0, 0x80 | 0x0a, 0x00])]);
        let lpc = Bdf::new(0, 0x1f, 0);
        c.add(lpc, 0x8086, 0x2918, 0x060100);
        c.poke(lpc, 0x0c, 0x0080_0000);
        let smbus = Bdf::new(0, 0x1f, 3);
        c.add(smbus, 0x8086, 0x2930, 0x0c0500);
        c.bar(smbus, 4, 0x0700, 0x40, 1);
        c
    }

    #[test]
    fn bdf_parses_and_prints() {
        let b = Bdf::parse("00:1f.3").unwrap();
        assert_eq!(b, Bdf::new(0, 0x1f, 3));
        assert_eq!(b.to_string(), "00:1f.3");
        assert_eq!(Bdf::from_rid(b.rid()), b);
        for bad in [
            "", "0:0", "00:20.0", "00:00.8", "000:00.0", "zz:00.0", "00:00.00",
        ] {
            assert_eq!(Bdf::parse(bad), None, "{bad}");
        }
        assert_eq!(Bdf::from_sbdf(0x1_0018), None);
        assert_eq!(Bdf::from_sbdf(0x18), Some(Bdf::new(0, 3, 0)));
    }

    #[test]
    fn enumeration_finds_functions_bars_and_capabilities() {
        let c = q35_like();
        let fs = enumerate(&c, 0, 0);
        let names: Vec<String> = fs.iter().map(|f| f.bdf.to_string()).collect();
        assert_eq!(
            names,
            ["00:00.0", "00:03.0", "00:04.0", "00:1f.0", "00:1f.3"]
        );
        let blk = &fs[1];
        assert_eq!(
            (blk.vendor, blk.device, blk.class),
            (0x1af4, 0x1042, 0x010000)
        );
        assert_eq!(blk.bars[1].address, 0xfebd_1000);
        assert_eq!(blk.bars[1].size, 0x1000);
        assert!(blk.bars[4].is_64bit && blk.bars[4].prefetchable);
        assert_eq!(blk.bars[4].address, 0x8_0000_0000);
        assert_eq!(blk.bars[4].size, 0x4000);
        assert!(!blk.bars[5].present());
        let msix = blk.msix.unwrap();
        assert_eq!(
            (msix.cap, msix.entries, msix.table, msix.pba),
            (0x98, 2, 1, 0x801)
        );
        assert_eq!(
            msix.table_range(&blk.bars),
            Some((0xfebd_1000, 0xfebd_1020))
        );
        assert_eq!(msix.pba_range(&blk.bars), Some((0xfebd_1800, 0xfebd_1808)));
        assert_eq!(blk.write_denied.as_slice(), [(0x98, 0xa4), (0x84, 0x98)]);
        let nvme = &fs[2];
        assert_eq!(nvme.msi_cap, Some(0x40));
        assert!(nvme.msi_64bit);
        assert_eq!(nvme.msi_vectors, 32);
        assert_eq!(nvme.bars[0].address, 0xfebd_4000);
        assert_eq!(nvme.write_denied.as_slice(), [(0x40, 0x4e)]);
        let smbus = &fs[4];
        assert!(smbus.bars[4].io);
        assert_eq!(smbus.bars[4].size, 0x40);
        // BARs and the command register are restored.
        assert_eq!(c.peek(Bdf::new(0, 3, 0), 0x14), 0xfebd_1000);
        assert_eq!(
            c.read(Bdf::new(0, 3, 0), REG_COMMAND, Width::Word) as u16,
            CMD_MEMORY | CMD_BUS_MASTER
        );
    }

    #[test]
    fn assignment_keeps_bridges_and_honours_the_list() {
        let c = q35_like();
        let mut fs = enumerate(&c, 0, 0);
        let bad = assign(&mut fs, &Dom0Pci::All, true);
        assert!(bad.is_empty());
        let owners: Vec<&str> = fs.iter().map(|f| f.owner.label()).collect();
        assert_eq!(owners, ["hv", "d0", "d0", "hv", "d0"]);
        let list = Dom0Pci::parse("00:04.0+00:00.0+00:09.0").unwrap();
        let bad = assign(&mut fs, &list, true);
        assert_eq!(bad.as_slice(), [Bdf::new(0, 0, 0), Bdf::new(0, 9, 0)]);
        let owners: Vec<&str> = fs.iter().map(|f| f.owner.label()).collect();
        assert_eq!(owners, ["hv", "-", "d0", "hv", "-"]);
        // Without an IOMMU (and without iommu=off) nobody gets anything.
        assign(&mut fs, &Dom0Pci::All, false);
        assert!(fs.iter().all(|f| f.owner != DeviceOwner::Driver));
        assert_eq!(Dom0Pci::parse("none"), Some(Dom0Pci::None));
        assert_eq!(Dom0Pci::parse("00:03.0+"), None);
        assert_eq!(Dom0Pci::parse(""), None);
        assert_eq!(
            Dom0Pci::parse("00:03.0+00:03.0").unwrap().listed(),
            [Bdf::new(0, 3, 0)]
        );
        let seventeen: Vec<String> = (0..17).map(|d| format!("00:{d:02x}.0")).collect();
        assert_eq!(Dom0Pci::parse(&seventeen.join("+")), None);
    }

    #[test]
    fn config_writes_are_filtered() {
        let c = q35_like();
        let fs = enumerate(&c, 0, 0);
        let blk = &fs[1];
        let nvme = &fs[2];
        let cmd = CMD_MEMORY;
        let w = |f, off, width, v| filter_config_write(f, off, width, v, cmd);
        // BARs, ROM, IDs, header type, capability pointer: refused.
        for off in [0x00, 0x08, 0x10, 0x14, 0x24, 0x30, 0x34] {
            assert_eq!(
                w(blk, off, Width::Dword, 0xffff_ffff),
                Err(Errno::EPERM),
                "{off:#x}"
            );
        }
        assert_eq!(w(blk, 0x0e, Width::Byte, 0), Err(Errno::EPERM));
        // The command register: only the writable bits change.
        assert_eq!(
            w(blk, 0x04, Width::Word, 0xffff),
            Ok(u32::from(CMD_GUEST_WRITABLE))
        );
        assert_eq!(w(blk, 0x04, Width::Word, 0x0000), Ok(0));
        assert_eq!(
            filter_config_write(blk, 0x04, Width::Word, 0, 0x0080),
            Ok(0x0080)
        );
        // A dword write at 0x04 carries the status word through.
        assert_eq!(w(blk, 0x04, Width::Dword, 0xffff_0006), Ok(0xffff_0006));
        assert_eq!(w(blk, 0x05, Width::Byte, 0xff), Ok(0x05));
        assert_eq!(w(blk, 0x0c, Width::Word, 0x4010), Ok(0x4010));
        assert_eq!(w(blk, 0x3c, Width::Byte, 11), Ok(11));
        // MSI, MSI-X and the virtio window: refused; elsewhere: allowed.
        assert_eq!(w(nvme, 0x42, Width::Word, 1), Err(Errno::EPERM));
        assert_eq!(w(nvme, 0x4c, Width::Word, 1), Err(Errno::EPERM));
        assert_eq!(w(nvme, 0x50, Width::Dword, 1), Ok(1));
        assert_eq!(w(blk, 0x9a, Width::Word, 0x8000), Err(Errno::EPERM));
        assert_eq!(w(blk, 0x90, Width::Dword, 0), Err(Errno::EPERM));
        assert_eq!(w(blk, 0x70, Width::Dword, 0), Ok(0));
        assert_eq!(w(blk, 0x100, Width::Dword, 7), Ok(7));
        assert_eq!(check_access(0x101, 2), Err(Errno::EINVAL));
        assert_eq!(check_access(0x1000, 1), Err(Errno::EINVAL));
        assert_eq!(check_access(0, 3), Err(Errno::EINVAL));
        assert_eq!(check_access(0xffc, 4), Ok(Width::Dword));
    }

    #[test]
    fn io_frames_permit_assigned_bars_only() {
        let c = q35_like();
        let mut fs = enumerate(&c, 0, 0);
        assign(&mut fs, &Dom0Pci::parse("00:03.0").unwrap(), true);
        let io = IoFrames::build(&fs, &[(0xfee0_0000, 0xfee0_1000)]);
        // virtio-blk's BAR4 (assigned): mappable.
        assert!(io.permits(0x80_0000));
        assert!(io.permits(0x80_0003));
        assert!(!io.permits(0x80_0004));
        // Its MSI-X table page in BAR1: never.
        assert!(!io.permits(0xfebd1));
        assert!(io.is_device_frame(0xfebd1));
        // The NVMe (not assigned): never.
        assert!(!io.permits(0xfebd4));
        assert!(!io.permits(0xfee00));
        assert!(!io.permits(0x1000));
        assert!(!io.is_device_frame(0x1000));
    }

    #[test]
    fn msi_and_msix_are_programmed() {
        let c = q35_like();
        let fs = enumerate(&c, 0, 0);
        let nvme = &fs[2];
        assert!(enable_msi(&c, nvme, 0xfee0_1000, 0x41));
        assert_eq!(c.peek(nvme.bdf, 0x44), 0xfee0_1000);
        assert_eq!(c.peek(nvme.bdf, 0x48), 0);
        assert_eq!(c.read(nvme.bdf, 0x4c, Width::Word), 0x41);
        assert_eq!(c.read(nvme.bdf, 0x42, Width::Word) & 0x71, 1);
        disable_msi(&c, nvme);
        assert_eq!(c.read(nvme.bdf, 0x42, Width::Word) & 1, 0);
        assert!(!enable_msi(&c, &fs[1], 0, 0));
        assert!(enable_msix(&c, &fs[1]));
        assert_eq!(c.read(fs[1].bdf, 0x9a, Width::Word) & 0xc000, 0x8000);
        assert!(!enable_msix(&c, nvme));
    }

    proptest! {
        #[test]
        fn garbage_config_space_never_panics(bytes in proptest::collection::vec(any::<u8>(), 256),
                                             vendor in 0u16..0xffff) {
            let c = FakeConfig::default();
            let bdf = Bdf::new(0, 0, 0);
            let mut space = [0u8; 4096];
            space[..256].copy_from_slice(&bytes);
            space[0..2].copy_from_slice(&vendor.to_le_bytes());
            space[0x0e] &= 0x7f;
            c.spaces.borrow_mut().insert(bdf, space);
            let fs = enumerate(&c, 0, 0);
            prop_assert_eq!(fs.len(), 1);
            let f = &fs[0];
            for (start, end) in &f.write_denied {
                prop_assert!(start < end);
            }
            let _ = f.device_info(0);
            for off in (0u16..256).step_by(2) {
                let _ = filter_config_write(f, off, Width::Word, 0xffff, 0);
            }
        }

        #[test]
        fn filtered_writes_never_touch_a_bar(off in 0u16..0x40, size in prop_oneof![Just(1u8), Just(2), Just(4)],
                                             value: u32, cmd: u16) {
            let c = q35_like();
            let fs = enumerate(&c, 0, 0);
            if let Ok(width) = check_access(off, size) {
                if filter_config_write(&fs[1], off, width, value, cmd).is_ok() {
                    let end = off + u16::from(size);
                    prop_assert!((off..end).all(|b| matches!(b, 4..=7 | 0x0c | 0x0d | 0x3c)));
                }
            }
        }
    }
}
