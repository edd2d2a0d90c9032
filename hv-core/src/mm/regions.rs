//! Physical-memory regions: turning the firmware memory map and the ranges
//! hv-core must keep (image, modules, low memory) into frames to hand out.

use heapless::Vec;

/// A half-open physical address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
}

impl Region {
    pub const fn new(start: u64, end: u64) -> Region {
        Region { start, end }
    }

    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Most usable regions tracked.
pub const MAX_REGIONS: usize = 64;

/// Subtracts every `reserved` range from the `ram` ranges, shrinks what is left
/// to whole pages, drops everything at or above `limit`, and returns the result
/// sorted by address.
pub fn usable(ram: &[Region], reserved: &[Region], limit: u64) -> Vec<Region, MAX_REGIONS> {
    let mut out: Vec<Region, MAX_REGIONS> = Vec::new();
    for r in ram {
        let mut pieces: Vec<Region, MAX_REGIONS> = Vec::new();
        let _ = pieces.push(Region::new(r.start, r.end.min(limit)));
        for res in reserved {
            let mut next: Vec<Region, MAX_REGIONS> = Vec::new();
            for p in &pieces {
                if res.end <= p.start || res.start >= p.end {
                    let _ = next.push(*p);
                    continue;
                }
                if res.start > p.start {
                    let _ = next.push(Region::new(p.start, res.start));
                }
                if res.end < p.end {
                    let _ = next.push(Region::new(res.end, p.end));
                }
            }
            pieces = next;
        }
        for p in pieces {
            let start = p.start.div_ceil(4096) * 4096;
            let end = p.end / 4096 * 4096;
            if end > start {
                let _ = out.push(Region::new(start, end));
            }
        }
    }
    out.sort_unstable_by_key(|r| r.start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracts_and_aligns() {
        let ram = [Region::new(0, 0x9fc00), Region::new(0x10_0000, 0x800_0000)];
        let reserved = [Region::new(0, 0x10_0000), Region::new(0x10_0000, 0x20_0123)];
        let u = usable(&ram, &reserved, 4 << 30);
        assert_eq!(u.as_slice(), &[Region::new(0x20_1000, 0x800_0000)]);
    }

    #[test]
    fn hole_in_the_middle_and_limit() {
        let ram = [Region::new(0x10_0000, 0x1_2000_0000)];
        let reserved = [Region::new(0x40_0000, 0x50_0000)];
        let u = usable(&ram, &reserved, 0x1_0000_0000);
        assert_eq!(
            u.as_slice(),
            &[
                Region::new(0x10_0000, 0x40_0000),
                Region::new(0x50_0000, 0x1_0000_0000)
            ]
        );
    }

    #[test]
    fn reserved_covering_everything() {
        let ram = [Region::new(0x1000, 0x5000)];
        let reserved = [Region::new(0, 0x10000)];
        assert!(usable(&ram, &reserved, u64::MAX).is_empty());
    }
}
