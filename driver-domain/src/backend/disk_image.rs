//! Seeding the RAM disk (`seed=gpt-fat`, SPEC.md DEV-6): a GPT whose
//! partition 1 holds a guest's whole disk — an MBR with one FAT16 partition
//! carrying `HELLO.TXT` — and whose partition 2 is a 2 MiB scratch area.
//! A stand-in for a host-made image until the driver domain has real
//! disks; the FAT layout follows Microsoft's FAT specification (BPB at the
//! volume's first sector, two FATs, a 512-entry root directory).

use alloc::vec;

use super::block_store::{BlockStore, StoreError, UNIT};
use super::gpt::{write_gpt, GptError, Partition};

/// The file the seed puts on the FAT volume.
pub const HELLO_NAME: &[u8; 11] = b"HELLO   TXT";
/// Its contents.
pub const HELLO_TEXT: &[u8] = b"Hello from the driver domain's RAM disk.\n";

/// Units before the FAT partition inside the guest's disk.
const INNER_FIRST: u64 = 8;
/// Reserved sectors of the FAT volume (the boot sector and spares).
const RESERVED: u64 = 4;
/// Root directory entries (32 bytes each: 32 units).
const ROOT_ENTRIES: u64 = 512;
/// Units of the scratch partition.
const SCRATCH_UNITS: u64 = 4096;

/// Where the seed put things.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seeded {
    /// The guest disk (GPT partition 1).
    pub guest_disk: Partition,
    /// The scratch area (GPT partition 2).
    pub scratch: Partition,
}

/// The FAT16 geometry for a volume of `units` sectors: `(sectors per
/// cluster, sectors per FAT, clusters)`, clusters in FAT16's range.
pub fn fat16_geometry(units: u64) -> Option<(u64, u64, u64)> {
    let root = ROOT_ENTRIES * 32 / UNIT as u64;
    for spc in [1u64, 2, 4, 8, 16, 32, 64] {
        // Grow the FAT until it covers every cluster.
        let mut fat = 1u64;
        loop {
            let data = units.checked_sub(RESERVED + 2 * fat + root)?;
            let clusters = data / spc;
            let need = ((clusters + 2) * 2).div_ceil(UNIT as u64);
            if need <= fat {
                if (4085..65525).contains(&clusters) {
                    return Some((spc, fat, clusters));
                }
                break;
            }
            fat = need;
        }
    }
    None
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Lays an MBR with one FAT16 partition over `units` units of `disk` from
/// `base`, with `HELLO.TXT` in its root directory.
pub fn write_fat_disk(disk: &mut dyn BlockStore, base: u64, units: u64) -> Result<(), GptError> {
    let vol_units = units.checked_sub(INNER_FIRST).ok_or(GptError::BadEntry)?;
    let (spc, fat, _clusters) = fat16_geometry(vol_units).ok_or(GptError::BadEntry)?;
    let vol_units32 = u32::try_from(vol_units).map_err(|_| GptError::BadEntry)?;
    // The guest disk's MBR.
    let mut mbr = vec![0u8; UNIT];
    mbr[446 + 4] = 0x06;
    put_u32(&mut mbr, 446 + 8, INNER_FIRST as u32);
    put_u32(&mut mbr, 446 + 12, vol_units32);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    disk.write(base, &mbr)?;
    // The boot sector with the BPB.
    let vol = base + INNER_FIRST;
    let mut bs = vec![0u8; UNIT];
    bs[..3].copy_from_slice(&[0xeb, 0x3c, 0x90]);
    bs[3..11].copy_from_slice(b"PARAVANE");
    put_u16(&mut bs, 11, UNIT as u16);
    bs[13] = spc as u8;
    put_u16(&mut bs, 14, RESERVED as u16);
    bs[16] = 2;
    put_u16(&mut bs, 17, ROOT_ENTRIES as u16);
    if vol_units < 65536 {
        put_u16(&mut bs, 19, vol_units as u16);
    } else {
        put_u32(&mut bs, 32, vol_units32);
    }
    bs[21] = 0xf8;
    put_u16(&mut bs, 22, fat as u16);
    put_u16(&mut bs, 24, 32);
    put_u16(&mut bs, 26, 64);
    put_u32(&mut bs, 28, INNER_FIRST as u32);
    bs[36] = 0x80;
    bs[38] = 0x29;
    put_u32(&mut bs, 39, 0x5eed_f00d);
    bs[43..54].copy_from_slice(b"PARAVANE   ");
    bs[54..62].copy_from_slice(b"FAT16   ");
    bs[510] = 0x55;
    bs[511] = 0xaa;
    disk.write(vol, &bs)?;
    // Both FATs: media and end-of-chain markers, and HELLO.TXT in cluster 2.
    let mut fat_sector = vec![0u8; UNIT];
    put_u16(&mut fat_sector, 0, 0xfff8);
    put_u16(&mut fat_sector, 2, 0xffff);
    put_u16(&mut fat_sector, 4, 0xffff);
    let zero = vec![0u8; UNIT];
    for copy in 0..2 {
        let start = vol + RESERVED + copy * fat;
        disk.write(start, &fat_sector)?;
        for s in 1..fat {
            disk.write(start + s, &zero)?;
        }
    }
    // The root directory: the volume label, then the file.
    let root = vol + RESERVED + 2 * fat;
    let root_units = ROOT_ENTRIES * 32 / UNIT as u64;
    let mut dir = vec![0u8; UNIT];
    dir[..11].copy_from_slice(b"PARAVANE   ");
    dir[11] = 0x08;
    dir[32..43].copy_from_slice(HELLO_NAME);
    dir[32 + 11] = 0x20;
    put_u16(&mut dir, 32 + 26, 2);
    put_u32(&mut dir, 32 + 28, HELLO_TEXT.len() as u32);
    disk.write(root, &dir)?;
    for s in 1..root_units {
        disk.write(root + s, &zero)?;
    }
    // Cluster 2: the file's data.
    let data = root + root_units;
    let mut first = vec![0u8; UNIT];
    first[..HELLO_TEXT.len()].copy_from_slice(HELLO_TEXT);
    disk.write(data, &first)?;
    Ok(())
}

/// Seeds `disk`: a GPT with the guest disk (partition 1) and the scratch
/// area (partition 2), and the FAT disk inside partition 1.
pub fn seed(disk: &mut dyn BlockStore) -> Result<Seeded, GptError> {
    let units = disk.units();
    let first = 2048u64;
    let end = units
        .checked_sub(34 + SCRATCH_UNITS)
        .filter(|&e| e > first)
        .ok_or(GptError::Store(StoreError::OutOfRange))?;
    let guest_disk = Partition {
        first,
        last: end - 1,
    };
    let scratch = Partition {
        first: end,
        last: end + SCRATCH_UNITS - 1,
    };
    write_gpt(disk, &[guest_disk, scratch])?;
    write_fat_disk(disk, guest_disk.first, guest_disk.units())?;
    Ok(Seeded {
        guest_disk,
        scratch,
    })
}

#[cfg(test)]
mod tests {
    use super::super::gpt::read_partition;
    use super::super::gpt::test_disk::VecDisk;
    use super::*;

    #[test]
    fn geometry_is_fat16() {
        for mib in [4u64, 8, 14, 64, 250] {
            let (spc, fat, clusters) = fat16_geometry(mib * 2048).unwrap();
            assert!((4085..65525).contains(&clusters), "{mib} MiB");
            assert!((clusters + 2) * 2 <= fat * 512);
            assert!(spc.is_power_of_two());
        }
        assert_eq!(fat16_geometry(100), None);
        // 2 MiB holds too few clusters for FAT16.
        assert_eq!(fat16_geometry(2 * 2048), None);
    }

    #[test]
    fn seeded_disk_has_the_file() {
        let mut d = VecDisk(vec![0; 16 << 20]);
        let s = seed(&mut d).unwrap();
        assert_eq!(read_partition(&mut d, 1).unwrap(), s.guest_disk);
        assert_eq!(read_partition(&mut d, 2).unwrap(), s.scratch);
        let base = s.guest_disk.first as usize * UNIT;
        // The inner MBR names a FAT16 partition at unit 8.
        assert_eq!(d.0[base + 446 + 4], 0x06);
        assert_eq!(&d.0[base + 510..base + 512], &[0x55, 0xaa]);
        let vol = base + 8 * UNIT;
        assert_eq!(&d.0[vol + 54..vol + 62], b"FAT16   ");
        let spc = u64::from(d.0[vol + 13]);
        let fat = u64::from(u16::from_le_bytes([d.0[vol + 22], d.0[vol + 23]]));
        let root = vol + (4 + 2 * fat) as usize * UNIT;
        assert_eq!(&d.0[root + 32..root + 43], HELLO_NAME);
        let data = root + 32 * UNIT;
        assert_eq!(&d.0[data..data + HELLO_TEXT.len()], HELLO_TEXT);
        assert!(spc >= 1);
    }
}
