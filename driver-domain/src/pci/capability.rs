//! The PCI capability list: a chain of `(id, next)` headers in configuration
//! space, walked defensively.
//!
//! # Invariants
//! - The walk visits at most [`MAX_CAPABILITIES`] entries, each at a 4-aligned
//!   offset in `0x40 .. 0x100`; a loop or a bad pointer ends it.

use super::{ConfigSpace, CAPABILITIES_POINTER, STATUS, STATUS_CAPABILITIES};

/// Most capabilities a 256-byte space can hold past the header.
pub const MAX_CAPABILITIES: usize = 48;
/// Capability id: MSI-X.
pub const ID_MSIX: u8 = 0x11;
/// Capability id: vendor specific (virtio uses it).
pub const ID_VENDOR: u8 = 0x09;

/// One capability: its id and where its header is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Capability id.
    pub id: u8,
    /// Offset of its header in configuration space.
    pub offset: u16,
}

/// Iterator over a device's capabilities.
pub struct Capabilities<'a, C: ConfigSpace> {
    cfg: &'a C,
    next: u16,
    visited: usize,
}

impl<'a, C: ConfigSpace> Capabilities<'a, C> {
    /// The capabilities of `cfg` (none if its status says there are none).
    pub fn new(cfg: &'a C) -> Self {
        let next = if cfg.read16(STATUS) & STATUS_CAPABILITIES != 0 {
            u16::from(cfg.read8(CAPABILITIES_POINTER))
        } else {
            0
        };
        Self {
            cfg,
            next,
            visited: 0,
        }
    }
}

impl<C: ConfigSpace> Iterator for Capabilities<'_, C> {
    type Item = Capability;

    fn next(&mut self) -> Option<Capability> {
        let offset = self.next & 0xfc;
        if offset < 0x40 || self.visited >= MAX_CAPABILITIES {
            return None;
        }
        self.visited += 1;
        let header = self.cfg.read16(offset);
        self.next = header >> 8;
        Some(Capability {
            id: header as u8,
            offset,
        })
    }
}

/// Where a device's MSI-X table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixInfo {
    /// Offset of the capability.
    pub cap_offset: u16,
    /// Vectors in the table.
    pub table_size: u16,
    /// BAR holding the table.
    pub table_bar: u8,
    /// Offset of the table in that BAR.
    pub table_offset: u32,
}

impl MsixInfo {
    /// Reads the MSI-X capability of `cfg`, if it has one.
    pub fn find(cfg: &impl ConfigSpace) -> Option<MsixInfo> {
        let cap = Capabilities::new(cfg).find(|c| c.id == ID_MSIX)?;
        let control = cfg.read16(cap.offset + 2);
        let table = cfg.read32(cap.offset + 4);
        Some(MsixInfo {
            cap_offset: cap.offset,
            table_size: (control & 0x7ff) + 1,
            table_bar: (table & 7) as u8,
            table_offset: table & !7,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::testing::ArrayConfig;
    use proptest::prelude::*;

    fn with_caps(chain: &[(usize, u8, u8)]) -> ArrayConfig {
        let cfg = ArrayConfig::new();
        cfg.set16(6, 0x10);
        cfg.set8(0x34, chain.first().map_or(0, |c| c.0 as u8));
        for &(at, id, next) in chain {
            cfg.set8(at, id);
            cfg.set8(at + 1, next);
        }
        cfg
    }

    #[test]
    fn walks_the_chain() {
        let cfg = with_caps(&[(0x40, 0x09, 0x60), (0x60, 0x11, 0x50), (0x50, 0x09, 0)]);
        cfg.set16(0x62, 0x0003);
        cfg.set32(0x64, 0x2001);
        let caps: alloc::vec::Vec<_> = Capabilities::new(&cfg).map(|c| (c.id, c.offset)).collect();
        assert_eq!(caps, [(0x09, 0x40), (0x11, 0x60), (0x09, 0x50)]);
        assert_eq!(
            MsixInfo::find(&cfg),
            Some(MsixInfo {
                cap_offset: 0x60,
                table_size: 4,
                table_bar: 1,
                table_offset: 0x2000
            })
        );
    }

    #[test]
    fn no_list_without_status_bit() {
        let cfg = with_caps(&[(0x40, 0x09, 0)]);
        cfg.set16(6, 0);
        assert_eq!(Capabilities::new(&cfg).count(), 0);
    }

    #[test]
    fn loops_end() {
        let cfg = with_caps(&[(0x40, 0x09, 0x44), (0x44, 0x09, 0x40)]);
        assert_eq!(Capabilities::new(&cfg).count(), MAX_CAPABILITIES);
        let into_header = with_caps(&[(0x40, 0x09, 0x10)]);
        assert_eq!(Capabilities::new(&into_header).count(), 1);
    }

    proptest! {
        /// Any configuration space: the walk ends, in bounds.
        #[test]
        fn any_space_walk_is_bounded(bytes in proptest::collection::vec(any::<u8>(), 256)) {
            let cfg = ArrayConfig::new();
            cfg.0.borrow_mut().copy_from_slice(&bytes);
            let caps: alloc::vec::Vec<_> = Capabilities::new(&cfg).collect();
            prop_assert!(caps.len() <= MAX_CAPABILITIES);
            for cap in caps {
                prop_assert!(cap.offset >= 0x40 && cap.offset < 0x100 && cap.offset % 4 == 0);
            }
            let _ = MsixInfo::find(&cfg);
        }
    }
}
