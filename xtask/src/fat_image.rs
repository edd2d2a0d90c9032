//! Host-made FAT disk images ([`paravane_tests::DiskContent::Fat`]): before a
//! boot, an MBR (built by `paravane_tests::disk_image::mbr`) whose partition
//! 1 gets a FAT16 volume from `mkfs.vfat --offset` and the scenario's files
//! from `mcopy -i image@@offset`; after QEMU exits, `fsck.vfat -n` on a copy
//! of the partition and each expected file copied back out with `mcopy` and
//! compared byte for byte. Every problem after the boot is one failure line
//! for the verdict; a missing tool is an error naming the package.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use paravane_tests::disk_image::{mbr, PARTITION_FAT16_LBA, SECTOR};
use paravane_tests::FatVolume;

use crate::prereq::find_on_path;
use crate::Result;

/// The tools, with the Debian package of each.
const TOOLS: [(&str, &str); 3] = [
    ("mkfs.vfat", "dosfstools"),
    ("fsck.vfat", "dosfstools"),
    ("mcopy", "mtools"),
];

/// Where `tool` is: on `PATH`, or in the sbin directories a non-root `PATH`
/// often lacks.
fn find_tool(tool: &str) -> Result<PathBuf> {
    find_on_path(tool)
        .or_else(|| {
            ["/usr/sbin", "/sbin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            let package = TOOLS
                .iter()
                .find(|(t, _)| *t == tool)
                .map_or("dosfstools", |(_, p)| p);
            format!(
                "`{tool}` not found: scenarios with a FAT disk image need it; \
                 install it with `apt-get install {package}` (Debian packages dosfstools and mtools)"
            )
            .into()
        })
}

/// Checks every tool is installed, so a run fails before it boots.
pub fn require_tools() -> Result<()> {
    for (tool, _) in TOOLS {
        find_tool(tool)?;
    }
    Ok(())
}

/// Runs `tool args`; returns its exit success and its output (stdout, then
/// stderr).
fn run(tool: &str, args: &[&str]) -> Result<(bool, String)> {
    let path = find_tool(tool)?;
    let out = Command::new(&path)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text.trim().to_owned()))
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| format!("path {} is not UTF-8", path.display()).into())
}

/// `mtools`' name for the volume: `image@@offset`.
fn mtools_image(image: &Path, volume: &FatVolume) -> Result<String> {
    Ok(format!("{}@@{}", path_str(image)?, volume.byte_offset()))
}

/// Sectors of the partition: from its first sector to the end of the image.
fn partition_sectors(image_bytes: u64, volume: &FatVolume) -> Result<u64> {
    (image_bytes / SECTOR)
        .checked_sub(volume.first_sector)
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            format!(
                "FAT partition at sector {} leaves no room in a {image_bytes}-byte image",
                volume.first_sector
            )
            .into()
        })
}

/// Turns the zero-filled `image` into an MBR + FAT16 volume holding the
/// volume's files (written first to `scratch` as `host-<NAME>`).
pub fn make(image: &Path, volume: &FatVolume, scratch: &Path) -> Result<()> {
    require_tools()?;
    let bytes = std::fs::metadata(image)
        .map_err(|e| format!("cannot stat {}: {e}", image.display()))?
        .len();
    let sectors = partition_sectors(bytes, volume)?;
    let record = mbr(volume.first_sector, sectors, PARTITION_FAT16_LBA)
        .ok_or_else(|| "the FAT partition does not fit an MBR".to_owned())?;
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(image)
            .map_err(|e| format!("cannot open {}: {e}", image.display()))?;
        file.write_all(&record)
            .map_err(|e| format!("cannot write the MBR of {}: {e}", image.display()))?;
    }
    let offset = volume.first_sector.to_string();
    let kib = (sectors * SECTOR / 1024).to_string();
    let (ok, out) = run(
        "mkfs.vfat",
        &[
            "-F",
            "16",
            "-n",
            volume.label,
            "--offset",
            &offset,
            path_str(image)?,
            &kib,
        ],
    )?;
    if !ok {
        return Err(format!("mkfs.vfat on {} failed: {out}", image.display()).into());
    }
    let target = mtools_image(image, volume)?;
    for file in volume.files {
        let source = scratch.join(format!("host-{}", file.name));
        std::fs::write(&source, (file.contents)())
            .map_err(|e| format!("cannot write {}: {e}", source.display()))?;
        let dest = format!("::{}", file.name);
        let (ok, out) = run("mcopy", &["-i", &target, path_str(&source)?, &dest])?;
        if !ok {
            return Err(format!("mcopy {} to {}: {out}", file.name, image.display()).into());
        }
    }
    Ok(())
}

/// The host's checks after the boot: `fsck.vfat -n` finds the volume clean
/// and every expected file reads back exactly. Returns one line per
/// failure (empty when all hold).
pub fn check(image: &Path, volume: &FatVolume, scratch: &Path) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    let name = image
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let bytes =
        std::fs::read(image).map_err(|e| format!("cannot read {}: {e}", image.display()))?;
    let start = usize::try_from(volume.byte_offset()).unwrap_or(usize::MAX);
    let Some(partition) = bytes.get(start..) else {
        return Ok(vec![format!(
            "{name}: the image is shorter than its partition offset"
        )]);
    };
    // fsck.vfat takes no offset: check a copy of the partition.
    let copy = scratch.join("fsck-partition.img");
    std::fs::write(&copy, partition)
        .map_err(|e| format!("cannot write {}: {e}", copy.display()))?;
    let (clean, out) = run("fsck.vfat", &["-n", path_str(&copy)?])?;
    if !clean {
        failures.push(format!(
            "host check: fsck.vfat -n on {name}'s FAT partition found problems: {}",
            out.replace('\n', " / ")
        ));
    }
    let source = mtools_image(image, volume)?;
    for file in volume.expect_after {
        let out_path = scratch.join(format!("out-{}", file.name));
        let _ = std::fs::remove_file(&out_path);
        let from = format!("::{}", file.name);
        let (ok, out) = run("mcopy", &["-n", "-i", &source, &from, path_str(&out_path)?])?;
        if !ok {
            failures.push(format!(
                "host check: mcopy could not get {} from {name}: {out}",
                file.name
            ));
            continue;
        }
        let got = std::fs::read(&out_path)
            .map_err(|e| format!("cannot read {}: {e}", out_path.display()))?;
        if let Some(why) = difference(&got, &(file.contents)()) {
            failures.push(format!("host check: {} on {name}: {why}", file.name));
        }
    }
    Ok(failures)
}

/// How `got` differs from `want`, if it does.
fn difference(got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    Some(format!(
        "{} bytes, expected {}; first difference at byte {at}",
        got.len(),
        want.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use paravane_tests::HostFile;

    fn greeting() -> Vec<u8> {
        b"hi\n".to_vec()
    }

    fn other() -> Vec<u8> {
        b"not what was written\n".to_vec()
    }

    #[test]
    fn differences_are_described() {
        assert_eq!(difference(b"abc", b"abc"), None);
        assert_eq!(
            difference(b"abd", b"abc").as_deref(),
            Some("3 bytes, expected 3; first difference at byte 2")
        );
        assert_eq!(
            difference(b"ab", b"abc").as_deref(),
            Some("2 bytes, expected 3; first difference at byte 2")
        );
    }

    #[test]
    fn partition_must_fit() {
        let v = FatVolume {
            first_sector: 2048,
            label: "T",
            files: &[],
            expect_after: &[],
        };
        assert_eq!(partition_sectors(2 << 20, &v).ok(), Some(2048));
        assert!(partition_sectors(1 << 20, &v).is_err());
    }

    /// The whole round trip with the real tools: made, clean, a file that
    /// is there matches, one that differs and one that is missing fail.
    #[test]
    fn make_then_check_with_the_host_tools() {
        // The message names the packages; CI installs them (.ci/run).
        if let Err(crate::Error::Failed(e)) = require_tools() {
            panic!("{e}");
        }
        let dir = std::env::temp_dir().join(format!("xtask-fat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let image = dir.join("t.img");
        let file = std::fs::File::create(&image).expect("create");
        file.set_len(16 << 20).expect("size");
        let made = FatVolume {
            first_sector: 2048,
            label: "XTASKTEST",
            files: &[HostFile {
                name: "HELLO.TXT",
                contents: greeting,
            }],
            expect_after: &[],
        };
        make(&image, &made, &dir).expect("make");
        let bytes = std::fs::read(&image).expect("read");
        assert_eq!(&bytes[510..512], &[0x55, 0xaa]);
        assert_eq!(bytes[446 + 4], PARTITION_FAT16_LBA);
        let good = FatVolume {
            expect_after: &[HostFile {
                name: "HELLO.TXT",
                contents: greeting,
            }],
            ..made
        };
        assert_eq!(
            check(&image, &good, &dir).expect("check"),
            Vec::<String>::new()
        );
        let bad = FatVolume {
            expect_after: &[
                HostFile {
                    name: "HELLO.TXT",
                    contents: other,
                },
                HostFile {
                    name: "NONE.TXT",
                    contents: greeting,
                },
            ],
            ..made
        };
        let failures = check(&image, &bad, &dir).expect("check");
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("HELLO.TXT on t.img: 3 bytes, expected 21"));
        assert!(failures[1].contains("mcopy could not get NONE.TXT"));
        // Corrupt the first FAT's media byte: fsck must notice.
        let mut broken = bytes.clone();
        let reserved = u16::from_le_bytes([broken[2048 * 512 + 14], broken[2048 * 512 + 15]]);
        broken[2048 * 512 + usize::from(reserved) * 512] = 0x00;
        std::fs::write(&image, &broken).expect("write");
        let failures = check(&image, &good, &dir).expect("check");
        assert!(
            failures.iter().any(|f| f.contains("fsck.vfat -n")),
            "{failures:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
