//! The ACPI DMAR table (Intel VT-d specification §8): the remapping
//! hardware units (DRHD) and the devices each covers (PDEV-1, PDEV-9).
//!
//! Portable and host-tested; the table is a byte slice read by
//! [`super::acpi::read_table`] (length and checksum already checked).
//! Structures the hypervisor does not use (RMRR, ATSR, RHSA, ANDD, SATC)
//! are accepted and skipped; an unknown structure type, a DRHD covering no
//! device, or a structure running past the table makes the whole table
//! unusable ([`DmarError`]): hv-core then assigns no device unless
//! `iommu=off` (PDEV-9).
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
use super::pci::Bdf;

/// Most path elements kept per device scope.
pub const MAX_PATH: usize = 8;

const DRHD: u16 = 0;
/// The last structure type of VT-d 4.x (SATC).
const LAST_KNOWN_TYPE: u16 = 5;
const DRHD_INCLUDE_PCI_ALL: u8 = 1;

/// What a device scope names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    /// A PCI endpoint.
    Endpoint,
    /// A PCI-to-PCI bridge and everything below it.
    SubHierarchy,
    IoApic,
    Hpet,
    AcpiNamespace,
}

/// One device scope entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceScope {
    pub kind: ScopeKind,
    pub enumeration_id: u8,
    pub start_bus: u8,
    /// `(device, function)` hops from `start_bus`.
    pub path: heapless::Vec<(u8, u8), MAX_PATH>,
}

impl DeviceScope {
    /// The function the scope names: follows the path through bridges,
    /// asking `secondary_bus` for each bridge's secondary bus number.
    pub fn resolve(&self, secondary_bus: &dyn Fn(Bdf) -> Option<u8>) -> Option<Bdf> {
        let (&last, hops) = self.path.split_last()?;
        let mut bus = self.start_bus;
        for &(dev, func) in hops {
            bus = secondary_bus(Bdf::new(bus, dev, func))?;
        }
        Some(Bdf::new(bus, last.0, last.1))
    }
}

/// A DMA remapping hardware unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drhd {
    /// Register base (physical).
    pub base: u64,
    pub segment: u16,
    /// Covers every function of the segment not covered by another unit.
    pub include_pci_all: bool,
    pub scopes: Vec<DeviceScope>,
}

/// What hv-core keeps of the DMAR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dmar {
    /// DMA physical address width in bits.
    pub host_address_width: u8,
    /// Bit 0 of the flags: interrupt remapping supported.
    pub interrupt_remapping: bool,
    pub units: Vec<Drhd>,
    /// Reserved-memory regions `[base, limit]` (RMRR) devices use; listed,
    /// not mapped: hv-core assigns devices whole to the driver domain.
    pub reserved_regions: Vec<(u64, u64)>,
}

/// Why the DMAR cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmarError {
    NotDmar,
    /// A structure or scope runs past the table or has a bad length.
    Malformed {
        offset: usize,
    },
    /// A remapping structure of an unknown type.
    UnknownStructure {
        kind: u16,
        offset: usize,
    },
    /// A device scope of an unknown type.
    UnknownScope {
        kind: u8,
        offset: usize,
    },
    /// A DRHD without INCLUDE_PCI_ALL and without device scopes.
    UnitWithoutDevices {
        base: u64,
    },
    /// No DRHD at all.
    NoUnits,
    /// A DRHD with a register base of 0 or not page aligned.
    BadUnitBase {
        base: u64,
    },
}

impl fmt::Display for DmarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotDmar => write!(f, "not a DMAR table"),
            Self::Malformed { offset } => write!(f, "DMAR is malformed at offset {offset}"),
            Self::UnknownStructure { kind, offset } => write!(
                f,
                "DMAR has a remapping structure of unknown type {kind} at offset {offset}"
            ),
            Self::UnknownScope { kind, offset } => {
                write!(
                    f,
                    "DMAR has a device scope of unknown type {kind} at offset {offset}"
                )
            }
            Self::UnitWithoutDevices { base } => {
                write!(f, "DMAR unit at {base:#x} covers no device")
            }
            Self::NoUnits => write!(f, "DMAR lists no remapping unit"),
            Self::BadUnitBase { base } => write!(f, "DMAR unit has a bad register base {base:#x}"),
        }
    }
}

fn parse_scopes(table: &[u8], mut off: usize, end: usize) -> Result<Vec<DeviceScope>, DmarError> {
    let mut scopes = Vec::new();
    while off < end {
        let bad = DmarError::Malformed { offset: off };
        let kind = table.u8_at(off).ok_or(bad)?;
        let len = usize::from(table.u8_at(off.saturating_add(1)).ok_or(bad)?);
        if len < 6 || len % 2 != 0 || off.saturating_add(len) > end {
            return Err(bad);
        }
        let kind = match kind {
            1 => ScopeKind::Endpoint,
            2 => ScopeKind::SubHierarchy,
            3 => ScopeKind::IoApic,
            4 => ScopeKind::Hpet,
            5 => ScopeKind::AcpiNamespace,
            _ => return Err(DmarError::UnknownScope { kind, offset: off }),
        };
        let mut path = heapless::Vec::new();
        let mut p = off.saturating_add(6);
        while p < off.saturating_add(len) {
            let hop = (
                table.u8_at(p).ok_or(bad)?,
                table.u8_at(p.saturating_add(1)).ok_or(bad)?,
            );
            path.push(hop).map_err(|_| bad)?;
            p = p.saturating_add(2);
        }
        scopes.push(DeviceScope {
            kind,
            enumeration_id: table.u8_at(off.saturating_add(4)).ok_or(bad)?,
            start_bus: table.u8_at(off.saturating_add(5)).ok_or(bad)?,
            path,
        });
        off = off.saturating_add(len);
    }
    Ok(scopes)
}

/// Parses a DMAR read by `read_table`.
pub fn parse_dmar(table: &[u8]) -> Result<Dmar, DmarError> {
    if signature(table) != *b"DMAR" {
        return Err(DmarError::NotDmar);
    }
    let start = SDT_HEADER_LEN + 12;
    let bad = DmarError::Malformed {
        offset: SDT_HEADER_LEN,
    };
    let mut dmar = Dmar {
        host_address_width: table.u8_at(SDT_HEADER_LEN).ok_or(bad)?.saturating_add(1),
        interrupt_remapping: table.u8_at(SDT_HEADER_LEN + 1).ok_or(bad)? & 1 != 0,
        units: Vec::new(),
        reserved_regions: Vec::new(),
    };
    if table.len() < start {
        return Err(bad);
    }
    let mut off = start;
    while off < table.len() {
        let bad = DmarError::Malformed { offset: off };
        let kind = table.u16_at(off).ok_or(bad)?;
        let len = usize::from(table.u16_at(off.saturating_add(2)).ok_or(bad)?);
        let end = off.checked_add(len).ok_or(bad)?;
        if len < 4 || end > table.len() {
            return Err(bad);
        }
        match kind {
            DRHD => {
                if len < 16 {
                    return Err(bad);
                }
                let flags = table.u8_at(off.saturating_add(4)).ok_or(bad)?;
                let base = table.u64_at(off.saturating_add(8)).ok_or(bad)?;
                if base == 0 || base % 4096 != 0 {
                    return Err(DmarError::BadUnitBase { base });
                }
                let unit = Drhd {
                    base,
                    segment: table.u16_at(off.saturating_add(6)).ok_or(bad)?,
                    include_pci_all: flags & DRHD_INCLUDE_PCI_ALL != 0,
                    scopes: parse_scopes(table, off.saturating_add(16), end)?,
                };
                let covers_pci = unit.include_pci_all
                    || unit
                        .scopes
                        .iter()
                        .any(|s| matches!(s.kind, ScopeKind::Endpoint | ScopeKind::SubHierarchy));
                if !covers_pci && unit.scopes.is_empty() {
                    return Err(DmarError::UnitWithoutDevices { base });
                }
                dmar.units.push(unit);
            }
            1 => {
                if len < 24 {
                    return Err(bad);
                }
                let base = table.u64_at(off.saturating_add(8)).ok_or(bad)?;
                let limit = table.u64_at(off.saturating_add(16)).ok_or(bad)?;
                parse_scopes(table, off.saturating_add(24), end)?;
                dmar.reserved_regions.push((base, limit));
            }
            2..=LAST_KNOWN_TYPE => {}
            _ => return Err(DmarError::UnknownStructure { kind, offset: off }),
        }
        off = end;
    }
    if dmar.units.is_empty() {
        return Err(DmarError::NoUnits);
    }
    Ok(dmar)
}

impl Dmar {
    /// The index of the unit that translates `bdf`'s DMA: the unit whose
    /// scope names it (or a bridge above it), else the segment's
    /// INCLUDE_PCI_ALL unit.
    pub fn unit_for(&self, bdf: Bdf, secondary_bus: &dyn Fn(Bdf) -> Option<u8>) -> Option<usize> {
        for (i, unit) in self.units.iter().enumerate() {
            for scope in &unit.scopes {
                let Some(named) = scope.resolve(secondary_bus) else {
                    continue;
                };
                match scope.kind {
                    ScopeKind::Endpoint if named == bdf => return Some(i),
                    ScopeKind::SubHierarchy => {
                        if named == bdf {
                            return Some(i);
                        }
                        // Below the bridge: its secondary bus (one level).
                        if secondary_bus(named) == Some(bdf.bus) {
                            return Some(i);
                        }
                    }
                    _ => {}
                }
            }
        }
        self.units
            .iter()
            .position(|u| u.include_pci_all && u.segment == 0)
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

    pub fn scope(kind: u8, bus: u8, path: &[(u8, u8)]) -> Vec<u8> {
        let mut s = vec![kind, (6 + 2 * path.len()) as u8, 0, 0, 0, bus];
        for &(d, f) in path {
            s.extend_from_slice(&[d, f]);
        }
        s
    }

    pub fn drhd(flags: u8, base: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = scopes.concat();
        let mut s = Vec::new();
        s.extend_from_slice(&DRHD.to_le_bytes());
        s.extend_from_slice(&((16 + body.len()) as u16).to_le_bytes());
        s.extend_from_slice(&[flags, 0, 0, 0]);
        s.extend_from_slice(&base.to_le_bytes());
        s.extend_from_slice(&body);
        s
    }

    pub fn dmar(haw: u8, structures: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![haw - 1, 1];
        body.extend_from_slice(&[0; 10]);
        body.extend_from_slice(&structures.concat());
        table(b"DMAR", 1, &body)
    }

    /// What QEMU's intel-iommu gives: one unit with explicit scopes for the
    /// I/O APIC and every bus-0 endpoint.
    pub fn qemu_dmar() -> Vec<u8> {
        dmar(
            39,
            &[drhd(
                0,
                0xfed9_0000,
                &[
                    scope(3, 0xff, &[(0, 0)]),
                    scope(1, 0, &[(3, 0)]),
                    scope(1, 0, &[(4, 0)]),
                    scope(1, 0, &[(5, 0)]),
                    scope(1, 0, &[(0x1f, 2)]),
                ],
            )],
        )
    }

    #[test]
    fn parses_what_qemu_gives() {
        let d = parse_dmar(&qemu_dmar()).unwrap();
        assert_eq!(d.host_address_width, 39);
        assert!(d.interrupt_remapping);
        assert_eq!(d.units.len(), 1);
        assert_eq!(d.units[0].base, 0xfed9_0000);
        assert!(!d.units[0].include_pci_all);
        assert_eq!(d.units[0].scopes.len(), 5);
        assert_eq!(d.units[0].scopes[0].kind, ScopeKind::IoApic);
        let no_bridges = |_: Bdf| None;
        assert_eq!(d.unit_for(Bdf::new(0, 3, 0), &no_bridges), Some(0));
        assert_eq!(d.unit_for(Bdf::new(0, 0x1f, 2), &no_bridges), Some(0));
        // Not in any scope and no INCLUDE_PCI_ALL unit: not covered.
        assert_eq!(d.unit_for(Bdf::new(0, 6, 0), &no_bridges), None);
    }

    #[test]
    fn include_all_and_bridges() {
        let t = dmar(
            48,
            &[
                drhd(
                    0,
                    0xfed9_1000,
                    &[scope(2, 0, &[(0x1c, 0)]), scope(1, 0, &[(0x1c, 0), (0, 0)])],
                ),
                drhd(1, 0xfed9_0000, &[]),
            ],
        );
        let d = parse_dmar(&t).unwrap();
        let bridge = |b: Bdf| (b == Bdf::new(0, 0x1c, 0)).then_some(2);
        assert_eq!(
            d.units[0].scopes[1].resolve(&bridge),
            Some(Bdf::new(2, 0, 0))
        );
        assert_eq!(d.unit_for(Bdf::new(2, 0, 0), &bridge), Some(0));
        assert_eq!(d.unit_for(Bdf::new(2, 1, 0), &bridge), Some(0));
        assert_eq!(d.unit_for(Bdf::new(0, 2, 0), &bridge), Some(1));
        assert_eq!(d.unit_for(Bdf::new(0, 2, 0), &|_| None), Some(1));
    }

    #[test]
    fn malformed_tables_are_refused_with_a_reason() {
        // A DRHD with no devices.
        let t = dmar(39, &[drhd(0, 0xfed9_0000, &[])]);
        assert_eq!(
            parse_dmar(&t),
            Err(DmarError::UnitWithoutDevices { base: 0xfed9_0000 })
        );
        // No unit at all.
        assert_eq!(parse_dmar(&dmar(39, &[])), Err(DmarError::NoUnits));
        // An unknown remapping structure.
        let mut unknown = vec![0u8; 8];
        unknown[0] = 9;
        unknown[2] = 8;
        let t = dmar(39, &[drhd(1, 0xfed9_0000, &[]), unknown]);
        assert!(matches!(
            parse_dmar(&t),
            Err(DmarError::UnknownStructure { kind: 9, .. })
        ));
        // A known but unused one (RHSA, type 3) is fine.
        let mut rhsa = vec![0u8; 20];
        rhsa[0] = 3;
        rhsa[2] = 20;
        assert!(parse_dmar(&dmar(39, &[drhd(1, 0xfed9_0000, &[]), rhsa])).is_ok());
        // A scope running past its structure.
        let mut s = scope(1, 0, &[(3, 0)]);
        s[1] = 40;
        let t = dmar(39, &[drhd(0, 0xfed9_0000, &[s])]);
        assert!(matches!(parse_dmar(&t), Err(DmarError::Malformed { .. })));
        // An unaligned register base.
        let t = dmar(39, &[drhd(1, 0xfed9_0010, &[])]);
        assert_eq!(
            parse_dmar(&t),
            Err(DmarError::BadUnitBase { base: 0xfed9_0010 })
        );
        // A structure length of 0 would loop forever: refused.
        let t = dmar(39, &[drhd(1, 0xfed9_0000, &[]), vec![1, 0, 0, 0]]);
        assert!(matches!(parse_dmar(&t), Err(DmarError::Malformed { .. })));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(structures in proptest::collection::vec(
            (0u16..8, proptest::collection::vec(any::<u8>(), 0..40)), 0..6)) {
            let mut raw = Vec::new();
            for (kind, data) in structures {
                raw.extend_from_slice(&kind.to_le_bytes());
                raw.extend_from_slice(&((data.len() + 4) as u16).to_le_bytes());
                raw.extend_from_slice(&data);
            }
            let t = dmar(39, &[raw]);
            if let Ok(d) = parse_dmar(&t) {
                prop_assert!(!d.units.is_empty());
                for u in &d.units {
                    prop_assert!(u.base != 0 && u.base % 4096 == 0);
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut t = bytes;
            if t.len() >= 4 { t[..4].copy_from_slice(b"DMAR"); }
            let _ = parse_dmar(&t);
        }
    }
}
