//! Disk images a scenario asks the host to prepare, and what the host checks
//! on them after QEMU exits: an MBR with one FAT partition (made by
//! `mkfs.vfat`, filled with `mcopy`), checked with `fsck.vfat -n` and by
//! copying files back out byte for byte. xtask runs the tools; this module
//! says what to make and what to expect, and builds the MBR itself.
//!
//! Also the contents the guests are known to write, so the host can compare
//! (the guest and these functions must agree byte for byte: a drift fails
//! the scenario, it cannot make it pass).

/// Bytes per sector of the images.
pub const SECTOR: u64 = 512;
/// MBR partition type of a FAT16 volume addressed by LBA.
pub const PARTITION_FAT16_LBA: u8 = 0x0e;

/// What a disk holds when QEMU starts.
#[derive(Clone, Copy, Debug)]
pub enum DiskContent {
    /// All zeros.
    Zeroed,
    /// An MBR whose partition 1 holds a FAT volume.
    Fat(FatVolume),
    /// The image of the same name scenario `from` left behind (run it
    /// first: `cargo xtask test` runs scenarios in table order), copied;
    /// after the boot the host checks it as `check` says (its `files` are
    /// not used).
    Kept {
        /// The scenario whose image this is.
        from: &'static str,
        /// The checks after the boot, if any.
        check: Option<FatVolume>,
    },
}

impl DiskContent {
    /// The volume the host checks after the boot.
    pub const fn checked_volume(&self) -> Option<&FatVolume> {
        match self {
            DiskContent::Zeroed => None,
            DiskContent::Fat(v) => Some(v),
            DiskContent::Kept { check, .. } => check.as_ref(),
        }
    }
}

/// A file the host puts on a volume or expects on it.
#[derive(Clone, Copy, Debug)]
pub struct HostFile {
    /// 8.3 name in the root directory, e.g. `"HELLO.TXT"`.
    pub name: &'static str,
    /// Its bytes.
    pub contents: fn() -> Vec<u8>,
}

/// A FAT16 volume in MBR partition 1, from `first_sector` to the end of
/// the disk.
#[derive(Clone, Copy, Debug)]
pub struct FatVolume {
    /// First sector of the partition.
    pub first_sector: u64,
    /// Volume label (at most 11 characters).
    pub label: &'static str,
    /// Files `mcopy` puts in the root directory before the boot.
    pub files: &'static [HostFile],
    /// After QEMU exits: `fsck.vfat -n` must find the volume clean and
    /// each of these files must read back (with `mcopy`) exactly so.
    pub expect_after: &'static [HostFile],
}

impl FatVolume {
    /// Byte offset of the partition (what `mkfs.vfat --offset` takes in
    /// sectors and `mtools` as `image@@offset`).
    pub const fn byte_offset(&self) -> u64 {
        self.first_sector * SECTOR
    }
}

/// A master boot record with one partition of `sectors` sectors from
/// `first` (type `kind`), the others empty. `None` when the partition does
/// not fit the MBR's 32-bit fields.
pub fn mbr(first: u64, sectors: u64, kind: u8) -> Option<[u8; 512]> {
    let first = u32::try_from(first).ok()?;
    let sectors = u32::try_from(sectors).ok()?;
    if first == 0 || sectors == 0 {
        return None;
    }
    first.checked_add(sectors)?;
    let mut mbr = [0u8; 512];
    let entry = &mut mbr[446..462];
    // CHS fields: "use LBA" (0xfe 0xff 0xff), as tools write for big disks.
    entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[4] = kind;
    entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&first.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    Some(mbr)
}

/// The `HELLO.TXT` the host puts on `fsdemo-disk`'s volume.
pub fn host_hello() -> Vec<u8> {
    b"Hello from the host, put here by mcopy.\r\n".to_vec()
}

/// The `NOTES.TXT` fsdemo writes (tests/guests/fsdemo `notes()`): 12 KiB of
/// numbered lines.
pub fn fsdemo_notes() -> Vec<u8> {
    let mut text = Vec::new();
    let mut line = 0u32;
    while text.len() < 12 * 1024 {
        text.extend_from_slice(
            format!("fsdemo note {line:05}: written through blkfront\n").as_bytes(),
        );
        line += 1;
    }
    text.truncate(12 * 1024);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbr_has_one_partition_and_a_signature() {
        let m = mbr(2048, 63488, PARTITION_FAT16_LBA).expect("mbr");
        assert_eq!(&m[510..], &[0x55, 0xaa]);
        assert_eq!(m[446 + 4], 0x0e);
        assert_eq!(m[446 + 8..446 + 12], 2048u32.to_le_bytes());
        assert_eq!(m[446 + 12..446 + 16], 63488u32.to_le_bytes());
        assert!(m[462..510].iter().all(|&b| b == 0), "one partition only");
        assert!(m[..446].iter().all(|&b| b == 0));
    }

    #[test]
    fn mbr_refuses_what_it_cannot_express() {
        assert!(mbr(0, 10, 6).is_none());
        assert!(mbr(1, 0, 6).is_none());
        assert!(mbr(1 << 32, 10, 6).is_none());
        assert!(mbr(u64::from(u32::MAX), 2, 6).is_none());
    }

    #[test]
    fn fsdemo_notes_are_12_kib_of_numbered_lines() {
        let n = fsdemo_notes();
        assert_eq!(n.len(), 12 * 1024);
        assert!(n.starts_with(b"fsdemo note 00000: written through blkfront\n"));
        assert!(String::from_utf8(n).is_ok());
    }
}
