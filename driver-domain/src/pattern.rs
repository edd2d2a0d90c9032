//! Patterned data for the self-tests: sector contents that say which sector
//! and which pass wrote them, so a read-back catches misplaced, stale or
//! torn data.

/// Fills `buf` with the pattern of `first_sector` onwards for `seed`, in
/// `sector_size` pieces.
pub fn fill_sectors(buf: &mut [u8], first_sector: u64, sector_size: usize, seed: u64) {
    for (i, sector) in buf.chunks_mut(sector_size.max(8)).enumerate() {
        let lba = first_sector + i as u64;
        let mut state = seed ^ lba.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed;
        for word in sector.chunks_mut(8) {
            // xorshift64*: cheap and never stuck at zero for a non-zero state.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
    }
}

/// The first sector (relative to `first_sector`) whose contents differ from
/// the pattern, or `None` if all match.
pub fn first_mismatch(buf: &[u8], first_sector: u64, sector_size: usize, seed: u64) -> Option<u64> {
    let mut expected = alloc::vec![0u8; sector_size.max(8)];
    for (i, sector) in buf.chunks(sector_size.max(8)).enumerate() {
        let lba = first_sector + i as u64;
        let want = &mut expected[..sector.len()];
        fill_sectors(want, lba, sector_size, seed);
        if sector != want {
            return Some(i as u64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_misplaced_and_stale_sectors() {
        let mut buf = alloc::vec![0u8; 4 * 512];
        fill_sectors(&mut buf, 10, 512, 1);
        assert_eq!(first_mismatch(&buf, 10, 512, 1), None);
        assert_eq!(first_mismatch(&buf, 11, 512, 1), Some(0), "other sector");
        assert_eq!(first_mismatch(&buf, 10, 512, 2), Some(0), "other pass");
        buf[3 * 512 + 100] ^= 1;
        assert_eq!(first_mismatch(&buf, 10, 512, 1), Some(3));
    }
}
