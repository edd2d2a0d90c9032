//! Base address registers: decoding the raw values into where a device's
//! memory window is.

/// What a BAR maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory.
    Memory32,
    /// 64-bit memory (uses the next BAR too).
    Memory64,
    /// I/O ports (the drivers do not use them).
    Io,
}

/// A decoded BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// BAR index, 0..6.
    pub index: u8,
    /// Kind.
    pub kind: BarKind,
    /// Bus address of the window.
    pub base: u64,
    /// Size in bytes (a power of two), 0 if unknown.
    pub size: u64,
    /// Prefetchable memory.
    pub prefetchable: bool,
}

impl Bar {
    /// Decodes BAR `index` from its raw value `low` and, for a 64-bit BAR,
    /// the next one's `high`. `None` for an unimplemented (zero) BAR.
    pub fn decode(index: u8, low: u32, high: u32, size: u64) -> Option<Bar> {
        if low & 1 == 1 {
            return Some(Bar {
                index,
                kind: BarKind::Io,
                base: u64::from(low & !3),
                size,
                prefetchable: false,
            });
        }
        let kind = match (low >> 1) & 3 {
            0 => BarKind::Memory32,
            2 => BarKind::Memory64,
            _ => return None,
        };
        let base = match kind {
            BarKind::Memory64 => u64::from(low & !0xf) | (u64::from(high) << 32),
            _ => u64::from(low & !0xf),
        };
        if base == 0 {
            return None;
        }
        Some(Bar {
            index,
            kind,
            base,
            size,
            prefetchable: low & 8 != 0,
        })
    }

    /// The size a memory BAR's all-ones read-back `mask` (low, high) says.
    pub fn size_from_mask(low: u32, high: u32, is_64: bool) -> u64 {
        let mask = if is_64 {
            u64::from(low & !0xf) | (u64::from(high) << 32)
        } else {
            u64::from(low & !0xf) | 0xffff_ffff_0000_0000
        };
        if mask == 0 || mask == 0xffff_ffff_0000_0000 {
            0
        } else {
            (!mask).wrapping_add(1)
        }
    }

    /// Whether `offset .. offset + len` lies inside the window.
    pub fn contains(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_kinds() {
        let b = Bar::decode(4, 0xfe00_000c, 0x1, 0x4000).unwrap();
        assert_eq!(b.kind, BarKind::Memory64);
        assert_eq!(b.base, 0x1_fe00_0000);
        assert!(b.prefetchable);
        let m = Bar::decode(0, 0xfebd_1000, 0, 0x1000).unwrap();
        assert_eq!((m.kind, m.base), (BarKind::Memory32, 0xfebd_1000));
        assert_eq!(Bar::decode(1, 0xc041, 0, 0x40).unwrap().kind, BarKind::Io);
        assert_eq!(Bar::decode(2, 0, 0, 0), None);
        assert_eq!(Bar::decode(2, 0xfe00_0002, 0, 0), None, "reserved type");
        assert!(m.contains(0xff8, 8) && !m.contains(0xff8, 9) && !m.contains(u64::MAX, 2));
    }

    #[test]
    fn sizes() {
        assert_eq!(Bar::size_from_mask(0xffff_c000, 0, false), 0x4000);
        assert_eq!(Bar::size_from_mask(0xffff_c00c, 0xffff_ffff, true), 0x4000);
        assert_eq!(Bar::size_from_mask(0, 0, true), 0);
    }
}
