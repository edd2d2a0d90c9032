//! Guest images as `pvctl` sends them: an ELF file cut down to what the
//! loader reads — the ELF header, the program headers and every segment's
//! file bytes — without section headers and debug sections (a debug build of
//! a small guest shrinks from megabytes to tens of KiB, which matters on a
//! 115200-baud management line). Anything that does not look like an ELF64
//! file goes unchanged: refusing it is the hypervisor's loader's job, so its
//! words reach the user.

/// The bytes to send for `image`.
pub fn compact(image: &[u8]) -> Vec<u8> {
    match loaded_end(image) {
        Some(end) if end < image.len() => {
            let mut out = image[..end].to_vec();
            // e_shoff = 0, e_shnum = 0, e_shstrndx = 0: no section headers.
            out[0x28..0x30].fill(0);
            out[0x3c..0x40].fill(0);
            out
        }
        _ => image.to_vec(),
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u16::from_le_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// End of the last byte the loader reads, for a well-formed ELF64 LE file.
fn loaded_end(b: &[u8]) -> Option<usize> {
    if b.get(..6)? != b"\x7fELF\x02\x01" || b.len() < 64 {
        return None;
    }
    let phoff = u64_at(b, 0x20)?;
    let phentsize = u16_at(b, 0x36)?;
    let phnum = u16_at(b, 0x38)?;
    if phentsize != 56 || phnum == 0 {
        return None;
    }
    let mut end = phoff.checked_add(phentsize * phnum)?.max(64);
    for i in 0..phnum {
        let ph = usize::try_from(phoff + i * phentsize).ok()?;
        let offset = u64_at(b, ph + 8)?;
        let filesz = u64_at(b, ph + 32)?;
        end = end.max(offset.checked_add(filesz)?);
    }
    let end = usize::try_from(end).ok()?;
    (end <= b.len()).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF64 with one segment at file offset 0x100 of 0x20 bytes, then junk.
    fn elf() -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x28..0x30].copy_from_slice(&0x300u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&5u16.to_le_bytes());
        b[64 + 8..64 + 16].copy_from_slice(&0x100u64.to_le_bytes());
        b[64 + 32..64 + 40].copy_from_slice(&0x20u64.to_le_bytes());
        b[0x100..0x120].fill(0xaa);
        b
    }

    #[test]
    fn keeps_headers_and_segments_only() {
        let out = compact(&elf());
        assert_eq!(out.len(), 0x120);
        assert_eq!(&out[0x100..0x120], &[0xaa; 0x20]);
        assert_eq!(&out[0x28..0x30], &[0; 8]);
        assert_eq!(&out[0x3c..0x3e], &[0; 2]);
    }

    #[test]
    fn leaves_non_elf_and_broken_files_alone() {
        assert_eq!(compact(b"hello"), b"hello");
        let mut e = elf();
        e[64 + 32..64 + 40].copy_from_slice(&0x1000u64.to_le_bytes()); // past the end
        assert_eq!(compact(&e), e);
        let mut e = elf();
        e[0x36] = 32;
        assert_eq!(compact(&e), e);
    }
}
