//! GUID partition tables: reading one partition's extent from a disk
//! ([`read_partition`], for `gpt:<n>` views) and laying a table down
//! ([`write_gpt`], for seeding the RAM disk). The table is disk data, so
//! the reader trusts nothing: signature, sizes, both CRCs and every bound
//! are checked, and a result always lies inside the disk.

use alloc::vec;

use super::block_store::{BlockStore, StoreError, UNIT};

/// GPT header signature.
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Bytes of the header that the header CRC covers.
const HEADER_SIZE: u32 = 92;
/// Entries a table we write holds, and their size.
const ENTRIES: u32 = 128;
const ENTRY_SIZE: u32 = 128;
/// Units the entry array takes.
const ENTRY_UNITS: u64 = (ENTRIES * ENTRY_SIZE) as u64 / UNIT as u64;
/// Largest entry array the reader accepts.
const MAX_ENTRY_BYTES: u64 = 256 * 1024;
/// Partition type "Linux filesystem data" (mixed-endian GUID bytes).
const TYPE_LINUX_DATA: [u8; 16] = [
    0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4,
];

/// A partition's extent, in units, `last` inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub first: u64,
    pub last: u64,
}

impl Partition {
    /// Units in the partition.
    pub fn units(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// Why a partition could not be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GptError {
    Store(StoreError),
    NoTable,
    BadHeader,
    BadChecksum,
    NoSuchPartition,
    BadEntry,
}

impl From<StoreError> for GptError {
    fn from(e: StoreError) -> Self {
        GptError::Store(e)
    }
}

/// CRC-32 (IEEE, reflected), as GPT uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Reads partition `n` (1-based) of the GPT on `disk`.
pub fn read_partition(disk: &mut dyn BlockStore, n: u32) -> Result<Partition, GptError> {
    let units = disk.units();
    if units < 3 {
        return Err(GptError::NoTable);
    }
    let mut header = vec![0u8; UNIT];
    disk.read(1, &mut header)?;
    if &header[..8] != SIGNATURE {
        return Err(GptError::NoTable);
    }
    let header_size = u32_at(&header, 12);
    if !(HEADER_SIZE..=UNIT as u32).contains(&header_size) || u64_at(&header, 24) != 1 {
        return Err(GptError::BadHeader);
    }
    let crc = u32_at(&header, 16);
    let mut zeroed = header[..header_size as usize].to_vec();
    zeroed[16..20].fill(0);
    if crc32(&zeroed) != crc {
        return Err(GptError::BadChecksum);
    }
    let first_usable = u64_at(&header, 40);
    let last_usable = u64_at(&header, 48);
    let entries_lba = u64_at(&header, 72);
    let num_entries = u32_at(&header, 80);
    let entry_size = u32_at(&header, 84);
    let entries_crc = u32_at(&header, 88);
    if entry_size < 128 || !entry_size.is_multiple_of(8) || num_entries == 0 {
        return Err(GptError::BadHeader);
    }
    let bytes = u64::from(num_entries) * u64::from(entry_size);
    if bytes > MAX_ENTRY_BYTES || last_usable >= units || first_usable > last_usable {
        return Err(GptError::BadHeader);
    }
    let entry_units = bytes.div_ceil(UNIT as u64);
    if entries_lba < 2
        || entries_lba
            .checked_add(entry_units)
            .is_none_or(|end| end > units)
    {
        return Err(GptError::BadHeader);
    }
    let mut entries = vec![0u8; (entry_units as usize) * UNIT];
    disk.read(entries_lba, &mut entries)?;
    if crc32(&entries[..bytes as usize]) != entries_crc {
        return Err(GptError::BadChecksum);
    }
    if n == 0 || n > num_entries {
        return Err(GptError::NoSuchPartition);
    }
    let at = (n as usize - 1) * entry_size as usize;
    let entry = &entries[at..at + 128];
    if entry[..16].iter().all(|&b| b == 0) {
        return Err(GptError::NoSuchPartition);
    }
    let (first, last) = (u64_at(entry, 32), u64_at(entry, 40));
    if first > last || first < first_usable || last > last_usable {
        return Err(GptError::BadEntry);
    }
    Ok(Partition { first, last })
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes a protective MBR, the primary and the backup GPT with
/// `partitions` (named `name<i>`), which must lie in the usable area.
pub fn write_gpt(disk: &mut dyn BlockStore, partitions: &[Partition]) -> Result<(), GptError> {
    let units = disk.units();
    let first_usable = 2 + ENTRY_UNITS;
    let last_usable = units
        .checked_sub(2 + ENTRY_UNITS)
        .ok_or(GptError::Store(StoreError::OutOfRange))?;
    if partitions.len() > ENTRIES as usize
        || partitions
            .iter()
            .any(|p| p.first < first_usable || p.last > last_usable || p.first > p.last)
    {
        return Err(GptError::BadEntry);
    }
    // Protective MBR.
    let mut mbr = vec![0u8; UNIT];
    mbr[446 + 4] = 0xee;
    put_u32(&mut mbr, 446 + 8, 1);
    put_u32(
        &mut mbr,
        446 + 12,
        u32::try_from(units - 1).unwrap_or(u32::MAX),
    );
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    disk.write(0, &mbr)?;
    // Entries.
    let mut entries = vec![0u8; (ENTRY_UNITS as usize) * UNIT];
    for (i, p) in partitions.iter().enumerate() {
        let e = &mut entries[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[..16].copy_from_slice(&TYPE_LINUX_DATA);
        e[16] = i as u8 + 1;
        e[31] = 0x5a;
        put_u64(e, 32, p.first);
        put_u64(e, 40, p.last);
        for (j, ch) in b"part".iter().chain(&[b'1' + i as u8]).enumerate() {
            e[56 + 2 * j] = *ch;
        }
    }
    let entries_crc = crc32(&entries);
    let backup_entries = units - 1 - ENTRY_UNITS;
    for (my, alt, entries_lba) in [(1, units - 1, 2), (units - 1, 1, backup_entries)] {
        let mut h = vec![0u8; UNIT];
        h[..8].copy_from_slice(SIGNATURE);
        put_u32(&mut h, 8, 0x0001_0000);
        put_u32(&mut h, 12, HEADER_SIZE);
        put_u64(&mut h, 24, my);
        put_u64(&mut h, 32, alt);
        put_u64(&mut h, 40, first_usable);
        put_u64(&mut h, 48, last_usable);
        h[56..72].copy_from_slice(b"paravane-ramdisk");
        put_u64(&mut h, 72, entries_lba);
        put_u32(&mut h, 80, ENTRIES);
        put_u32(&mut h, 84, ENTRY_SIZE);
        put_u32(&mut h, 88, entries_crc);
        let crc = crc32(&h[..HEADER_SIZE as usize]);
        put_u32(&mut h, 16, crc);
        disk.write(entries_lba, &entries)?;
        disk.write(my, &h)?;
    }
    Ok(())
}

/// A disk in a `Vec`, for host tests.
#[cfg(test)]
pub(crate) mod test_disk {
    use super::*;
    use crate::backend::block_store::check_range;
    use alloc::vec::Vec;

    pub struct VecDisk(pub Vec<u8>);

    impl BlockStore for VecDisk {
        fn units(&self) -> u64 {
            (self.0.len() / UNIT) as u64
        }
        fn sector_size(&self) -> u32 {
            512
        }
        fn read(&mut self, unit: u64, buf: &mut [u8]) -> Result<(), StoreError> {
            check_range(unit, (buf.len() / UNIT) as u64, self.units())?;
            let at = unit as usize * UNIT;
            buf.copy_from_slice(&self.0[at..at + buf.len()]);
            Ok(())
        }
        fn write(&mut self, unit: u64, data: &[u8]) -> Result<(), StoreError> {
            check_range(unit, (data.len() / UNIT) as u64, self.units())?;
            let at = unit as usize * UNIT;
            self.0[at..at + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
        fn discard(&mut self, unit: u64, count: u64) -> Result<(), StoreError> {
            check_range(unit, count, self.units())?;
            let at = unit as usize * UNIT;
            self.0[at..at + count as usize * UNIT].fill(0);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_disk::VecDisk;
    use super::*;
    use proptest::prelude::*;

    fn disk_with_table() -> VecDisk {
        let mut d = VecDisk(vec![0; 1 << 20]);
        let parts = [
            Partition {
                first: 2048,
                last: 1500,
            },
            Partition {
                first: 40,
                last: 1000,
            },
        ];
        assert_eq!(write_gpt(&mut d, &parts), Err(GptError::BadEntry));
        let parts = [
            Partition {
                first: 40,
                last: 1000,
            },
            Partition {
                first: 1001,
                last: 2000,
            },
        ];
        write_gpt(&mut d, &parts).unwrap();
        d
    }

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn round_trip() {
        let mut d = disk_with_table();
        assert_eq!(
            read_partition(&mut d, 1),
            Ok(Partition {
                first: 40,
                last: 1000
            })
        );
        assert_eq!(
            read_partition(&mut d, 2),
            Ok(Partition {
                first: 1001,
                last: 2000
            })
        );
        assert_eq!(read_partition(&mut d, 3), Err(GptError::NoSuchPartition));
        assert_eq!(read_partition(&mut d, 0), Err(GptError::NoSuchPartition));
        let mut blank = VecDisk(vec![0; 1 << 16]);
        assert_eq!(read_partition(&mut blank, 1), Err(GptError::NoTable));
        // A flipped bit in an entry breaks the entries' CRC.
        d.0[2 * UNIT + 33] ^= 1;
        assert_eq!(read_partition(&mut d, 1), Err(GptError::BadChecksum));
    }

    proptest! {
        /// Whatever bytes the table holds, a partition read from it lies inside the disk.
        #[test]
        fn corrupted_tables_never_escape_the_disk(
            flips in proptest::collection::vec((0usize..(40 * UNIT), any::<u8>()), 1..20),
            recompute_header_crc in any::<bool>(),
            n in 0u32..5,
        ) {
            let mut d = disk_with_table();
            for (at, v) in flips {
                d.0[at] = v;
            }
            if recompute_header_crc {
                let mut h = d.0[UNIT..UNIT + HEADER_SIZE as usize].to_vec();
                h[16..20].fill(0);
                let crc = crc32(&h);
                d.0[UNIT + 16..UNIT + 20].copy_from_slice(&crc.to_le_bytes());
            }
            let units = d.units();
            if let Ok(p) = read_partition(&mut d, n) {
                prop_assert!(p.first <= p.last && p.last < units);
            }
        }
    }
}
