//! The block benchmark plan (`cargo xtask bench`, scenario `dd-bench`):
//! what domain 0 runs locally on its served disk and the `blkbench` guest
//! runs through blkfront on the same disk region, so the two sets of
//! figures compare like with like. Also the report format both print.
//!
//! Every figure is taken over [`BATCHES`] timed batches on the first
//! [`REGION_UNITS`] units of the disk (or the guest's view of it):
//! - `seq_write_mibs` / `seq_read_mibs`: [`SEQ_REQUESTS`] requests of
//!   [`SEQ_REQUEST_BYTES`] (1 MiB) at consecutive addresses from unit 0,
//!   [`SEQ_DEPTH`] (2) in flight;
//! - `rand4k_qd1_iops` / `rand4k_qd32_iops`: 4 KiB reads at 4 KiB-aligned
//!   addresses drawn by [`RandomSectors`] from the region, 1 or 32 in
//!   flight, [`RAND_QD1_COUNT`] / [`RAND_QD32_COUNT`] per batch.

/// Timed batches per figure.
pub const BATCHES: usize = 9;
/// Units (512 bytes) of the region measured: 16 MiB.
pub const REGION_UNITS: u64 = 16 << 11;
/// Bytes per sequential request.
pub const SEQ_REQUEST_BYTES: usize = 1 << 20;
/// Sequential requests per batch (16 MiB: the whole region).
pub const SEQ_REQUESTS: u64 = 16;
/// Sequential requests in flight (2 MiB: more than a virtio-blk queue
/// holds).
pub const SEQ_DEPTH: usize = 2;
/// Bytes per random request.
pub const RAND_BYTES: usize = 4096;
/// Random reads per batch at depth 1.
pub const RAND_QD1_COUNT: u64 = 128;
/// Random reads per batch at depth 32.
pub const RAND_QD32_COUNT: u64 = 512;
/// Depth of the deep random figure.
pub const RAND_DEEP: usize = 32;

/// The figures, in the order they are measured: (name suffix, write,
/// random, depth, requests per batch).
pub const FIGURES: [(&str, bool, bool, usize, u64); 4] = [
    ("seq_write_mibs", true, false, SEQ_DEPTH, SEQ_REQUESTS),
    ("seq_read_mibs", false, false, SEQ_DEPTH, SEQ_REQUESTS),
    ("rand4k_qd1_iops", false, true, 1, RAND_QD1_COUNT),
    ("rand4k_qd32_iops", false, true, RAND_DEEP, RAND_QD32_COUNT),
];

/// The start units of random 4 KiB requests: a xorshift sequence from a
/// fixed seed (the same in every domain), 8-unit aligned, inside the region.
#[derive(Clone, Debug)]
pub struct RandomSectors {
    state: u64,
    slots: u64,
}

impl RandomSectors {
    /// Random requests inside the first `region_units` units.
    pub fn new(region_units: u64) -> RandomSectors {
        RandomSectors {
            state: 0x9e37_79b9_7f4a_7c15,
            slots: (region_units / 8).max(1),
        }
    }

    /// The next start unit.
    pub fn next_sector(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % self.slots) * 8
    }
}

/// The amount one batch of figure `(write, random, _, count)` moves, in the
/// figure's unit (MiB or requests).
pub fn batch_amount(random: bool, count: u64) -> u64 {
    if random {
        count
    } else {
        (count * SEQ_REQUEST_BYTES as u64) >> 20
    }
}

/// Prints figure `name` from batch tick counts: best and median, then the
/// `BENCH` line (median).
pub fn report(name: &str, random: bool, count: u64, samples: &mut [u64], tsc_hz: u64) {
    let Some(stats) = crate::bench::Stats::from_samples(samples) else {
        return;
    };
    let unit = if random { "IOPS" } else { "MiB/s" };
    crate::bench::report_rate(name, unit, batch_amount(random, count), &stats, tsc_hz);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_sectors_are_aligned_inside_the_region_and_repeat() {
        let mut a = RandomSectors::new(REGION_UNITS);
        let mut b = RandomSectors::new(REGION_UNITS);
        for _ in 0..1000 {
            let s = a.next_sector();
            assert_eq!(s, b.next_sector());
            assert!(s.is_multiple_of(8) && s + 8 <= REGION_UNITS);
        }
    }

    #[test]
    fn amounts() {
        assert_eq!(batch_amount(false, SEQ_REQUESTS), 16);
        assert_eq!(batch_amount(true, 64), 64);
        assert!(SEQ_REQUESTS * (SEQ_REQUEST_BYTES as u64 / 512) <= REGION_UNITS);
    }
}
