//! Turns a valid guest image (an ELF64 x86_64 executable) into a broken one, so
//! scenarios can check hv-core's loader refuses it with the right reason.
//!
//! Each function takes the valid image's bytes and returns the broken image. They
//! read the ELF header and program headers at their fixed ELF64 offsets and panic,
//! with a message naming the problem, if the input is not such an image: a silently
//! unmutated image would make the scenario test nothing.

/// `e_ident` magic.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// `EI_CLASS` value for 64-bit objects.
const ELFCLASS64: u8 = 2;
/// `EI_DATA` value for little-endian objects.
const ELFDATA2LSB: u8 = 1;
/// `e_machine` value for x86_64.
const EM_X86_64: u16 = 62;
/// Size of an ELF64 header.
const EHDR_SIZE: usize = 64;
/// Size of an ELF64 program header.
const PHDR_SIZE: usize = 56;

/// `e_entry` offset in the ELF header.
const E_ENTRY: usize = 0x18;
/// `e_phoff` offset in the ELF header.
const E_PHOFF: usize = 0x20;
/// `e_phentsize` offset in the ELF header.
const E_PHENTSIZE: usize = 0x36;
/// `e_phnum` offset in the ELF header.
const E_PHNUM: usize = 0x38;
/// `e_machine` offset in the ELF header.
const E_MACHINE: usize = 0x12;

/// `p_type` offset in a program header.
const P_TYPE: usize = 0;
/// `p_vaddr` offset in a program header.
const P_VADDR: usize = 16;
/// `p_paddr` offset in a program header.
const P_PADDR: usize = 24;

/// Loadable segment.
const PT_LOAD: u32 = 1;
/// Note segment (may carry the guest's ABI version: never overwritten).
const PT_NOTE: u32 = 4;
/// Program header table segment.
const PT_PHDR: u32 = 6;
/// GNU stack-permissions marker: harmless to repurpose.
const PT_GNU_STACK: u32 = 0x6474_e551;

/// Length [`truncate`] keeps: the ELF header and program headers, not the segments.
pub const TRUNCATED_LEN: usize = 1000;
/// Entry point [`entry_outside`] sets: canonical, user-half, far from any guest image.
pub const OUTSIDE_ENTRY: u64 = 0x7fff_0000_0000;
/// The text [`not_elf`] repeats.
pub const NOT_ELF_TEXT: &str = "this is not an ELF image\n";

/// Keeps the first [`TRUNCATED_LEN`] bytes: the headers survive, the segment data
/// does not. Panics if the image is not longer than that.
pub fn truncate(mut image: Vec<u8>) -> Vec<u8> {
    ProgramHeaders::parse(&image);
    assert!(
        image.len() > TRUNCATED_LEN,
        "image of {} bytes is too short to truncate to {TRUNCATED_LEN}",
        image.len()
    );
    image.truncate(TRUNCATED_LEN);
    image
}

/// Replaces the image with a few hundred bytes of text.
pub fn not_elf(_image: Vec<u8>) -> Vec<u8> {
    NOT_ELF_TEXT.repeat(16).into_bytes()
}

/// Makes two `PT_LOAD` segments start at the same address: the second one's
/// `p_vaddr` (and `p_paddr`) become the first one's. An image with a single
/// `PT_LOAD` gets a copy of it in a spare program header (`PT_GNU_STACK` first,
/// never `PT_NOTE` or `PT_PHDR`). Panics if there is neither.
pub fn overlapping_segments(mut image: Vec<u8>) -> Vec<u8> {
    let phdrs = ProgramHeaders::parse(&image);
    let loads: Vec<usize> = phdrs.indices_of(&image, |t| t == PT_LOAD);
    let first = *loads.first().expect("image has no PT_LOAD segment");
    let first_at = phdrs.offset(first);
    if let Some(&second) = loads.get(1) {
        let second_at = phdrs.offset(second);
        let vaddr = read_u64(&image, first_at + P_VADDR);
        let paddr = read_u64(&image, first_at + P_PADDR);
        write_u64(&mut image, second_at + P_VADDR, vaddr);
        write_u64(&mut image, second_at + P_PADDR, paddr);
        return image;
    }
    let spare = phdrs
        .indices_of(&image, |t| t == PT_GNU_STACK)
        .into_iter()
        .chain(phdrs.indices_of(&image, |t| !matches!(t, PT_LOAD | PT_NOTE | PT_PHDR)))
        .next()
        .expect("image has one PT_LOAD and no spare program header to overlap it with");
    let spare_at = phdrs.offset(spare);
    image.copy_within(first_at..first_at + PHDR_SIZE, spare_at);
    image
}

/// Points `e_entry` at [`OUTSIDE_ENTRY`], outside every segment.
pub fn entry_outside(mut image: Vec<u8>) -> Vec<u8> {
    ProgramHeaders::parse(&image);
    write_u64(&mut image, E_ENTRY, OUTSIDE_ENTRY);
    image
}

/// Where an image's program headers are (all in bounds once parsed).
struct ProgramHeaders {
    /// `e_phoff`.
    table: usize,
    /// `e_phentsize`.
    entry_size: usize,
    /// `e_phnum`.
    count: usize,
}

impl ProgramHeaders {
    /// Checks `image` is an ELF64 little-endian x86_64 image whose program headers
    /// lie within it; panics otherwise.
    fn parse(image: &[u8]) -> Self {
        assert!(
            image.len() >= EHDR_SIZE && image[..4] == ELF_MAGIC[..],
            "not an ELF image"
        );
        assert!(
            image[4] == ELFCLASS64 && image[5] == ELFDATA2LSB,
            "not a little-endian ELF64 image"
        );
        assert_eq!(read_u16(image, E_MACHINE), EM_X86_64, "not an x86_64 image");
        let table = usize::try_from(read_u64(image, E_PHOFF)).expect("e_phoff too large");
        let entry_size = usize::from(read_u16(image, E_PHENTSIZE));
        let count = usize::from(read_u16(image, E_PHNUM));
        assert!(
            entry_size >= PHDR_SIZE,
            "e_phentsize {entry_size} is too small"
        );
        let end = entry_size
            .checked_mul(count)
            .and_then(|len| len.checked_add(table));
        assert!(
            end.is_some_and(|end| end <= image.len()),
            "program headers lie outside the image"
        );
        Self {
            table,
            entry_size,
            count,
        }
    }

    /// Byte offset of program header `index`.
    fn offset(&self, index: usize) -> usize {
        self.table + index * self.entry_size
    }

    /// Indices of the program headers whose `p_type` satisfies `wanted`.
    fn indices_of(&self, image: &[u8], wanted: impl Fn(u32) -> bool) -> Vec<usize> {
        (0..self.count)
            .filter(|&i| wanted(read_u32(image, self.offset(i) + P_TYPE)))
            .collect()
    }
}

/// Little-endian `u16` at `at`.
fn read_u16(image: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(field(image, at))
}

/// Little-endian `u32` at `at`.
fn read_u32(image: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(field(image, at))
}

/// Little-endian `u64` at `at`.
fn read_u64(image: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(field(image, at))
}

/// Writes a little-endian `u64` at `at`.
fn write_u64(image: &mut [u8], at: usize, value: u64) {
    image[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// The `N` bytes at `at` (callers checked bounds via [`ProgramHeaders::parse`]).
fn field<const N: usize>(image: &[u8], at: usize) -> [u8; N] {
    image[at..at + N].try_into().expect("slice length equals N")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One program header for [`synthetic_elf`]: (type, offset, vaddr, size).
    type Phdr = (u32, u64, u64, u64);

    /// A minimal ELF64 x86_64 executable with these program headers, segment data
    /// filled with 0xcc, 0x3000 bytes long.
    fn synthetic_elf(phdrs: &[Phdr]) -> Vec<u8> {
        let mut image = vec![0u8; 0x3000];
        image[..4].copy_from_slice(ELF_MAGIC);
        image[4] = ELFCLASS64;
        image[5] = ELFDATA2LSB;
        image[6] = 1; // EI_VERSION
        image[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        image[E_MACHINE..E_MACHINE + 2].copy_from_slice(&EM_X86_64.to_le_bytes());
        image[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
        write_u64(&mut image, E_ENTRY, 0x40_1000);
        write_u64(&mut image, E_PHOFF, EHDR_SIZE as u64);
        image[0x34..0x36].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
        image[E_PHENTSIZE..E_PHENTSIZE + 2].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        image[E_PHNUM..E_PHNUM + 2].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for (i, &(p_type, offset, vaddr, size)) in phdrs.iter().enumerate() {
            let at = EHDR_SIZE + i * PHDR_SIZE;
            image[at..at + 4].copy_from_slice(&p_type.to_le_bytes());
            image[at + 4..at + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
            write_u64(&mut image, at + 8, offset);
            write_u64(&mut image, at + P_VADDR, vaddr);
            write_u64(&mut image, at + P_PADDR, vaddr);
            write_u64(&mut image, at + 32, size);
            write_u64(&mut image, at + 40, size);
            write_u64(&mut image, at + 48, 0x1000);
            if p_type == PT_LOAD {
                let (start, end) = (offset as usize, (offset + size) as usize);
                image[start..end].fill(0xcc);
            }
        }
        image
    }

    const TWO_LOADS: &[Phdr] = &[
        (PT_LOAD, 0x1000, 0x40_1000, 0x800),
        (PT_NOTE, 0x1800, 0x40_1800, 0x20),
        (PT_LOAD, 0x2000, 0x40_2000, 0x1000),
        (PT_GNU_STACK, 0, 0, 0),
    ];

    fn vaddr(image: &[u8], index: usize) -> u64 {
        read_u64(image, EHDR_SIZE + index * PHDR_SIZE + P_VADDR)
    }

    fn p_type(image: &[u8], index: usize) -> u32 {
        read_u32(image, EHDR_SIZE + index * PHDR_SIZE + P_TYPE)
    }

    #[test]
    fn truncate_keeps_headers_only() {
        let image = synthetic_elf(TWO_LOADS);
        let cut = truncate(image.clone());
        assert_eq!(cut.len(), TRUNCATED_LEN);
        assert_eq!(cut[..], image[..TRUNCATED_LEN]);
        // Still parses as ELF: the loader must notice the missing segment data.
        ProgramHeaders::parse(&cut);
    }

    #[test]
    #[should_panic(expected = "too short")]
    fn truncate_refuses_a_short_image() {
        let mut image = synthetic_elf(&[(PT_LOAD, 0x100, 0x40_0000, 0x10)]);
        image.truncate(600);
        truncate(image);
    }

    #[test]
    fn not_elf_is_text_without_the_magic() {
        let text = not_elf(synthetic_elf(TWO_LOADS));
        assert!((200..1000).contains(&text.len()), "{}", text.len());
        assert_ne!(&text[..4], ELF_MAGIC);
        assert!(std::str::from_utf8(&text).is_ok_and(|t| t.starts_with(NOT_ELF_TEXT)));
    }

    #[test]
    fn overlapping_moves_the_second_load_onto_the_first() {
        let image = synthetic_elf(TWO_LOADS);
        let bad = overlapping_segments(image.clone());
        assert_eq!(bad.len(), image.len());
        assert_eq!(vaddr(&bad, 2), 0x40_1000);
        assert_eq!(
            read_u64(&bad, EHDR_SIZE + 2 * PHDR_SIZE + P_PADDR),
            0x40_1000
        );
        assert_eq!(vaddr(&bad, 0), 0x40_1000);
        // Nothing else changed.
        let changed: Vec<usize> = (0..image.len()).filter(|&i| image[i] != bad[i]).collect();
        let second = EHDR_SIZE + 2 * PHDR_SIZE;
        assert!(changed
            .iter()
            .all(|&i| (second + P_VADDR..second + P_PADDR + 8).contains(&i)));
    }

    #[test]
    fn overlapping_with_one_load_repurposes_gnu_stack_not_the_note() {
        let image = synthetic_elf(&[
            (PT_NOTE, 0x800, 0x40_0800, 0x20),
            (PT_LOAD, 0x1000, 0x40_1000, 0x800),
            (PT_GNU_STACK, 0, 0, 0),
        ]);
        let bad = overlapping_segments(image);
        assert_eq!(p_type(&bad, 0), PT_NOTE);
        assert_eq!((p_type(&bad, 1), vaddr(&bad, 1)), (PT_LOAD, 0x40_1000));
        assert_eq!((p_type(&bad, 2), vaddr(&bad, 2)), (PT_LOAD, 0x40_1000));
    }

    #[test]
    #[should_panic(expected = "no spare program header")]
    fn overlapping_needs_two_loads_or_a_spare_header() {
        overlapping_segments(synthetic_elf(&[(PT_LOAD, 0x1000, 0x40_1000, 0x800)]));
    }

    #[test]
    fn entry_outside_only_changes_e_entry() {
        let image = synthetic_elf(TWO_LOADS);
        let bad = entry_outside(image.clone());
        assert_eq!(read_u64(&bad, E_ENTRY), OUTSIDE_ENTRY);
        assert_eq!(bad[..E_ENTRY], image[..E_ENTRY]);
        assert_eq!(bad[E_ENTRY + 8..], image[E_ENTRY + 8..]);
    }

    #[test]
    #[should_panic(expected = "not an ELF image")]
    fn mutations_refuse_non_elf_input() {
        entry_outside(b"hello".to_vec());
    }

    #[test]
    #[should_panic(expected = "program headers lie outside the image")]
    fn mutations_refuse_out_of_range_program_headers() {
        let mut image = synthetic_elf(TWO_LOADS);
        write_u64(&mut image, E_PHOFF, 0x2ff0);
        overlapping_segments(image);
    }
}
