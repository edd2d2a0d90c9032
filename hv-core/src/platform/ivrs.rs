//! The ACPI IVRS table (AMD I/O Virtualization Technology specification,
//! §5): the IOMMUs (IVHD blocks) and the devices each translates (PDEV-1,
//! PDEV-9).
//!
//! Portable and host-tested. An IVRS may describe one IOMMU several times
//! (IVHD types 10h, 11h, 40h); hv-core uses the type-10h blocks, or the
//! 11h ones, or the 40h ones, whichever comes first in that order. IVMD
//! blocks (types 20h–22h) are accepted and skipped. An unknown block type,
//! an unknown device-entry type, an IVHD that names no device or anything
//! running past its block makes the table unusable ([`IvrsError`]).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use alloc::vec::Vec;
use core::fmt;

use super::acpi::{signature, ReadLe, SDT_HEADER_LEN};

/// A range of 16-bit device IDs (requester IDs) an IOMMU translates,
/// inclusive, with the ID the IOMMU sees for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRange {
    pub first: u16,
    pub last: u16,
    /// The requester ID the device's DMA carries (an alias), if not its own.
    pub alias: Option<u16>,
}

/// An IOMMU described by an IVHD block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivhd {
    /// The block type (0x10, 0x11 or 0x40).
    pub kind: u8,
    pub flags: u8,
    /// The IOMMU's own PCI function.
    pub iommu_rid: u16,
    pub capability_offset: u16,
    /// Register base (physical).
    pub base: u64,
    pub segment: u16,
    /// Every device ID (entry type 1, "all").
    pub all: bool,
    pub ranges: Vec<DeviceRange>,
}

impl Ivhd {
    /// Whether this IOMMU translates DMA from requester `rid`; the ID its
    /// device table is indexed by for it.
    pub fn translates(&self, rid: u16) -> Option<u16> {
        for r in &self.ranges {
            if (r.first..=r.last).contains(&rid) {
                return Some(r.alias.unwrap_or(rid));
            }
        }
        self.all.then_some(rid)
    }
}

/// What hv-core keeps of the IVRS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivrs {
    pub iv_info: u32,
    pub units: Vec<Ivhd>,
}

/// Why the IVRS cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IvrsError {
    NotIvrs,
    Malformed {
        offset: usize,
    },
    UnknownBlock {
        kind: u8,
        offset: usize,
    },
    UnknownEntry {
        kind: u8,
        offset: usize,
    },
    /// An IVHD naming no device.
    UnitWithoutDevices {
        base: u64,
    },
    NoUnits,
    BadUnitBase {
        base: u64,
    },
}

impl fmt::Display for IvrsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotIvrs => write!(f, "not an IVRS table"),
            Self::Malformed { offset } => write!(f, "IVRS is malformed at offset {offset}"),
            Self::UnknownBlock { kind, offset } => {
                write!(
                    f,
                    "IVRS has a block of unknown type {kind:#x} at offset {offset}"
                )
            }
            Self::UnknownEntry { kind, offset } => write!(
                f,
                "IVRS has a device entry of unknown type {kind} at offset {offset}"
            ),
            Self::UnitWithoutDevices { base } => {
                write!(f, "IVRS unit at {base:#x} covers no device")
            }
            Self::NoUnits => write!(f, "IVRS describes no IOMMU"),
            Self::BadUnitBase { base } => write!(f, "IVRS unit has a bad register base {base:#x}"),
        }
    }
}

const IVHD_10: u8 = 0x10;
const IVHD_11: u8 = 0x11;
const IVHD_40: u8 = 0x40;

fn parse_entries(t: &[u8], mut off: usize, end: usize, unit: &mut Ivhd) -> Result<(), IvrsError> {
    let mut range_start: Option<(u16, Option<u16>)> = None;
    while off < end {
        let bad = IvrsError::Malformed { offset: off };
        let kind = t.u8_at(off).ok_or(bad)?;
        let len = match kind {
            0..=63 => 4,
            64..=127 => 8,
            240 => 22 + usize::from(t.u8_at(off.saturating_add(21)).ok_or(bad)?),
            _ => return Err(IvrsError::UnknownEntry { kind, offset: off }),
        };
        if off.saturating_add(len) > end {
            return Err(bad);
        }
        let id = t.u16_at(off.saturating_add(1)).ok_or(bad)?;
        match kind {
            0 => {}
            1 => unit.all = true,
            2 => unit.ranges.push(DeviceRange {
                first: id,
                last: id,
                alias: None,
            }),
            3 => range_start = Some((id, None)),
            4 => {
                let (first, alias) = range_start.take().ok_or(bad)?;
                if id < first {
                    return Err(bad);
                }
                unit.ranges.push(DeviceRange {
                    first,
                    last: id,
                    alias,
                });
            }
            66 => unit.ranges.push(DeviceRange {
                first: id,
                last: id,
                alias: Some(t.u16_at(off.saturating_add(5)).ok_or(bad)?),
            }),
            67 => range_start = Some((id, Some(t.u16_at(off.saturating_add(5)).ok_or(bad)?))),
            70 => unit.ranges.push(DeviceRange {
                first: id,
                last: id,
                alias: None,
            }),
            71 => range_start = Some((id, None)),
            // Special devices (I/O APIC, HPET) and ACPI HID devices: not PCI.
            72 | 240 => {}
            _ => return Err(IvrsError::UnknownEntry { kind, offset: off }),
        }
        off = off.saturating_add(len);
    }
    if range_start.is_some() {
        return Err(IvrsError::Malformed { offset: end });
    }
    Ok(())
}

/// Parses an IVRS read by `read_table`.
pub fn parse_ivrs(table: &[u8]) -> Result<Ivrs, IvrsError> {
    if signature(table) != *b"IVRS" {
        return Err(IvrsError::NotIvrs);
    }
    let bad = IvrsError::Malformed {
        offset: SDT_HEADER_LEN,
    };
    let iv_info = table.u32_at(SDT_HEADER_LEN).ok_or(bad)?;
    let mut off = SDT_HEADER_LEN + 12;
    if table.len() < off {
        return Err(bad);
    }
    let mut all_units = Vec::new();
    while off < table.len() {
        let bad = IvrsError::Malformed { offset: off };
        let kind = table.u8_at(off).ok_or(bad)?;
        let len = usize::from(table.u16_at(off.saturating_add(2)).ok_or(bad)?);
        let end = off.checked_add(len).ok_or(bad)?;
        if len < 4 || end > table.len() {
            return Err(bad);
        }
        match kind {
            IVHD_10 | IVHD_11 | IVHD_40 => {
                let entries = if kind == IVHD_10 { 24 } else { 40 };
                if len < entries {
                    return Err(bad);
                }
                let base = table.u64_at(off.saturating_add(8)).ok_or(bad)?;
                if base == 0 || base % 4096 != 0 {
                    return Err(IvrsError::BadUnitBase { base });
                }
                let mut unit = Ivhd {
                    kind,
                    flags: table.u8_at(off.saturating_add(1)).ok_or(bad)?,
                    iommu_rid: table.u16_at(off.saturating_add(4)).ok_or(bad)?,
                    capability_offset: table.u16_at(off.saturating_add(6)).ok_or(bad)?,
                    base,
                    segment: table.u16_at(off.saturating_add(16)).ok_or(bad)?,
                    all: false,
                    ranges: Vec::new(),
                };
                parse_entries(table, off.saturating_add(entries), end, &mut unit)?;
                if !unit.all && unit.ranges.is_empty() {
                    return Err(IvrsError::UnitWithoutDevices { base });
                }
                all_units.push(unit);
            }
            0x20..=0x22 => {}
            _ => return Err(IvrsError::UnknownBlock { kind, offset: off }),
        }
        off = end;
    }
    let chosen = [IVHD_10, IVHD_11, IVHD_40]
        .into_iter()
        .find(|k| all_units.iter().any(|u| u.kind == *k))
        .ok_or(IvrsError::NoUnits)?;
    all_units.retain(|u| u.kind == chosen);
    Ok(Ivrs {
        iv_info,
        units: all_units,
    })
}

impl Ivrs {
    /// The unit translating requester `rid` (segment 0) and the device-table
    /// index it uses.
    pub fn unit_for(&self, rid: u16) -> Option<(usize, u16)> {
        self.units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.segment == 0)
            .find_map(|(i, u)| u.translates(rid).map(|id| (i, id)))
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
    use crate::platform::acpi::tests::table;
    use proptest::prelude::*;

    pub fn ivhd(kind: u8, base: u64, iommu_rid: u16, entries: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = entries.concat();
        let head = if kind == IVHD_10 { 24 } else { 40 };
        let mut b = vec![kind, 0xb0];
        b.extend_from_slice(&((head + body.len()) as u16).to_le_bytes());
        b.extend_from_slice(&iommu_rid.to_le_bytes());
        b.extend_from_slice(&0x40u16.to_le_bytes());
        b.extend_from_slice(&base.to_le_bytes());
        b.extend_from_slice(&[0; 2]); // segment
        b.extend_from_slice(&[0; 2]); // info
        b.resize(head, 0);
        b.extend_from_slice(&body);
        b
    }

    pub fn entry4(kind: u8, id: u16) -> Vec<u8> {
        let id = id.to_le_bytes();
        vec![kind, id[0], id[1], 0]
    }

    pub fn ivrs(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut body = 0x0020_3040u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&blocks.concat());
        table(b"IVRS", 1, &body)
    }

    /// What QEMU's amd-iommu gives: one IVHD type 10h, one select entry per
    /// device.
    pub fn qemu_ivrs() -> Vec<u8> {
        ivrs(&[ivhd(
            IVHD_10,
            0xfed8_0000,
            0x0008,
            &[
                entry4(2, 0x0000),
                entry4(2, 0x0008),
                entry4(2, 0x0018),
                entry4(2, 0x0020),
                entry4(2, 0x0028),
                entry4(2, 0x00fa),
            ],
        )])
    }

    #[test]
    fn parses_what_qemu_gives() {
        let t = parse_ivrs(&qemu_ivrs()).unwrap();
        assert_eq!(t.units.len(), 1);
        let u = &t.units[0];
        assert_eq!(
            (u.kind, u.base, u.iommu_rid),
            (IVHD_10, 0xfed8_0000, 0x0008)
        );
        assert_eq!(t.unit_for(0x0018), Some((0, 0x0018)));
        assert_eq!(t.unit_for(0x0030), None);
    }

    #[test]
    fn ranges_aliases_and_type_choice() {
        let mut alias = vec![67, 0x00, 0x02, 0, 0, 0x10, 0x01, 0];
        alias.extend_from_slice(&entry4(4, 0x02ff));
        let t = ivrs(&[
            ivhd(IVHD_40, 0xfed8_0000, 2, &[entry4(1, 0)]),
            ivhd(
                IVHD_10,
                0xfed8_0000,
                2,
                &[entry4(3, 0x0100), entry4(4, 0x01ff), alias],
            ),
            vec![
                0x20, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 0,
            ],
        ]);
        let t = parse_ivrs(&t).unwrap();
        // The type-10h block is the one used.
        assert_eq!(t.units.len(), 1);
        assert!(!t.units[0].all);
        assert_eq!(t.unit_for(0x0150), Some((0, 0x0150)));
        assert_eq!(t.unit_for(0x0250), Some((0, 0x0110)));
        assert_eq!(t.unit_for(0x0300), None);
    }

    #[test]
    fn malformed_tables_are_refused_with_a_reason() {
        assert_eq!(
            parse_ivrs(&ivrs(&[ivhd(IVHD_10, 0xfed8_0000, 2, &[])])),
            Err(IvrsError::UnitWithoutDevices { base: 0xfed8_0000 })
        );
        assert_eq!(parse_ivrs(&ivrs(&[])), Err(IvrsError::NoUnits));
        let mut unknown = vec![0x77, 0, 8, 0, 0, 0, 0, 0];
        unknown.truncate(8);
        assert!(matches!(
            parse_ivrs(&ivrs(&[qemu_ivrs()[48..].to_vec(), unknown])),
            Err(IvrsError::UnknownBlock { kind: 0x77, .. })
        ));
        // A range start without its end.
        assert!(matches!(
            parse_ivrs(&ivrs(&[ivhd(IVHD_10, 0xfed8_0000, 2, &[entry4(3, 0x10)])])),
            Err(IvrsError::Malformed { .. })
        ));
        // An unknown 4-byte entry type.
        assert!(matches!(
            parse_ivrs(&ivrs(&[ivhd(IVHD_10, 0xfed8_0000, 2, &[entry4(9, 0x10)])])),
            Err(IvrsError::UnknownEntry { kind: 9, .. })
        ));
        assert_eq!(
            parse_ivrs(&ivrs(&[ivhd(IVHD_10, 0, 2, &[entry4(1, 0)])])),
            Err(IvrsError::BadUnitBase { base: 0 })
        );
    }

    proptest! {
        #[test]
        fn garbage_entries_never_panic(entries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..12), 0..10)) {
            let t = ivrs(&[ivhd(IVHD_10, 0xfed8_0000, 2, &entries)]);
            if let Ok(i) = parse_ivrs(&t) {
                for u in &i.units {
                    prop_assert!(u.all || !u.ranges.is_empty());
                    for r in &u.ranges { prop_assert!(r.first <= r.last); }
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut t = bytes;
            if t.len() >= 4 { t[..4].copy_from_slice(b"IVRS"); }
            let _ = parse_ivrs(&t);
        }
    }
}
