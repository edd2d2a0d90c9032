//! ELF64 guest images: deciding whether the kernel image in a boot module is
//! loadable, and describing what to load (SPEC.md §5.1, HC-2, HC-5).
//!
//! This module owns parsing and validation only: it never copies or maps
//! anything. Every byte comes from an untrusted boot module, so every offset,
//! size and address read from the file is an *allegation*: it is checked with
//! checked arithmetic and `get()` before use, and no input makes this code panic.
//!
//! Only `PT_LOAD` and `PT_NOTE` program headers are interpreted; other types
//! (`PT_GNU_STACK`, ...) are ignored. Section headers are never read.
//!
//! # Invariants
//! Every [`ElfImage`] returned by [`ElfImage::parse`] satisfies:
//! - It has 1 to [`MAX_SEGMENTS`] load segments, sorted by `vaddr`. `PT_LOAD`
//!   headers with `memsz == 0` are dropped silently.
//! - Each segment has `filesz <= memsz`, its `filesz` file bytes lie inside the
//!   file, and `[vaddr, vaddr + memsz)` neither overflows nor touches hypervisor
//!   address space (`hypercall_abi::layout::is_guest_range`, HC-5).
//! - No two segments share a 4 KiB page: the loader maps whole pages per segment
//!   with that segment's permissions, so the page-rounded ranges
//!   `[round_down(vaddr), round_up(vaddr + memsz))` are pairwise disjoint.
//! - The entry point lies inside a segment with the executable flag (`PF_X`).
//! - `virt_end() - virt_base()` is at most [`MAX_IMAGE_SPAN`] (1 GiB).
//! - Paravane notes, when present, are well formed and not duplicated; a
//!   hypercall page note names a page-aligned page lying wholly inside one
//!   segment's `[vaddr, vaddr + memsz)`. Missing notes are not an error here:
//!   the domain builder decides what it requires.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use core::fmt;

use hypercall_abi::elf_note::{AbiVersionNote, NOTE_ABI_VERSION, NOTE_HYPERCALL_PAGE, NOTE_NAME};
use hypercall_abi::layout::is_guest_range;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// Most `PT_LOAD` segments (with a non-zero `memsz`) an image may have.
pub const MAX_SEGMENTS: usize = 16;
/// Largest allowed `virt_end() - virt_base()`.
pub const MAX_IMAGE_SPAN: u64 = 1 << 30;

/// Page size the loader maps segments with.
const PAGE_SIZE: u64 = 4096;
/// Mask of the in-page offset bits.
const PAGE_MASK: u64 = PAGE_SIZE - 1;

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u32 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

/// The ELF64 file header, as laid out in the file (little-endian).
#[derive(FromBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(dead_code)] // Every field is kept so the layout matches the file.
struct Ehdr {
    ident: [u8; 16],
    e_type: U16,
    e_machine: U16,
    e_version: U32,
    e_entry: U64,
    e_phoff: U64,
    e_shoff: U64,
    e_flags: U32,
    e_ehsize: U16,
    e_phentsize: U16,
    e_phnum: U16,
    e_shentsize: U16,
    e_shnum: U16,
    e_shstrndx: U16,
}

/// An ELF64 program header, as laid out in the file (little-endian).
#[derive(FromBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(dead_code)] // Every field is kept so the layout matches the file.
struct Phdr {
    p_type: U32,
    p_flags: U32,
    p_offset: U64,
    p_vaddr: U64,
    p_paddr: U64,
    p_filesz: U64,
    p_memsz: U64,
    p_align: U64,
}

/// An ELF note header; name and descriptor follow, each padded.
#[derive(FromBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct Nhdr {
    namesz: U32,
    descsz: U32,
    n_type: U32,
}

const EHDR_SIZE: usize = core::mem::size_of::<Ehdr>();
const PHDR_SIZE: usize = core::mem::size_of::<Phdr>();
const NHDR_SIZE: usize = core::mem::size_of::<Nhdr>();
const _: () = assert!(EHDR_SIZE == 64);
const _: () = assert!(PHDR_SIZE == 56);
const _: () = assert!(NHDR_SIZE == 12);

/// One `PT_LOAD` segment to be loaded: `filesz` bytes from `file_offset` copied
/// to `vaddr`, the rest of `memsz` zero-filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    /// Virtual address of the first byte.
    pub vaddr: u64,
    /// Bytes of memory the segment occupies (never 0, never below `filesz`).
    pub memsz: u64,
    /// Offset in the file of the bytes to copy.
    pub file_offset: u64,
    /// Bytes to copy from the file; the rest of `memsz` is zeroed.
    pub filesz: u64,
    /// `PF_R`.
    pub readable: bool,
    /// `PF_W`.
    pub writable: bool,
    /// `PF_X`.
    pub executable: bool,
}

impl LoadSegment {
    /// End (exclusive) of `[vaddr, vaddr + memsz)`; never overflows once validated.
    fn end(&self) -> Option<u64> {
        self.vaddr.checked_add(self.memsz)
    }

    /// Page-rounded `[start, end)` the loader maps for this segment.
    fn page_range(&self) -> Option<(u64, u64)> {
        let end = self.end()?.checked_next_multiple_of(PAGE_SIZE)?;
        Some((self.vaddr & !PAGE_MASK, end))
    }

    /// Whether `va` lies inside `[vaddr, vaddr + memsz)`.
    fn contains(&self, va: u64) -> bool {
        va.checked_sub(self.vaddr)
            .is_some_and(|off| off < self.memsz)
    }
}

/// The Paravane notes an image carries (see `hypercall_abi::elf_note`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestNotes {
    /// `NOTE_ABI_VERSION`: the ABI the image was built against.
    pub abi: Option<AbiVersionNote>,
    /// `NOTE_HYPERCALL_PAGE`: where the hypervisor writes the hypercall stubs.
    pub hypercall_page: Option<u64>,
}

/// Why an image was refused. Indices are program-header indices (as
/// `readelf -l` numbers them); offsets are file offsets in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// The file is shorter than the 64-byte ELF64 header.
    TooShort { len: usize },
    /// The file does not start with `\x7fELF`.
    BadMagic,
    /// `EI_CLASS` is not `ELFCLASS64`.
    NotElf64 { class: u8 },
    /// `EI_DATA` is not `ELFDATA2LSB`.
    NotLittleEndian { data: u8 },
    /// `e_version` is not `EV_CURRENT` (1).
    BadVersion { version: u32 },
    /// `e_type` is not `ET_EXEC`.
    NotExecutable { e_type: u16 },
    /// `e_machine` is not `EM_X86_64`.
    WrongMachine { machine: u16 },
    /// `e_phentsize` is not 56.
    BadPhentsize { phentsize: u16 },
    /// `e_phoff + e_phnum * 56` overflows.
    PhdrTableOverflow { phoff: u64, phnum: u16 },
    /// Program header `index` ends at byte `end`, past the end of the file.
    PhdrTruncated {
        index: u16,
        end: u64,
        file_len: usize,
    },
    /// A `PT_LOAD` segment's `memsz` is smaller than its `filesz`.
    MemszBelowFilesz { index: u16, filesz: u64, memsz: u64 },
    /// A segment's file bytes `[offset, offset + filesz)` are not all in the file.
    SegmentTruncated {
        index: u16,
        offset: u64,
        filesz: u64,
        file_len: usize,
    },
    /// `vaddr + memsz` overflows.
    SegmentAddressOverflow { index: u16, vaddr: u64, memsz: u64 },
    /// `[vaddr, vaddr + memsz)` reaches into hypervisor address space (HC-5).
    SegmentInHypervisorSpace { index: u16, vaddr: u64, memsz: u64 },
    /// More than [`MAX_SEGMENTS`] non-empty `PT_LOAD` segments.
    TooManySegments { index: u16 },
    /// No non-empty `PT_LOAD` segment.
    NoLoadSegments,
    /// Two segments share a page; ranges are page-rounded `[start, end)`.
    SegmentsOverlap {
        first: u16,
        second: u16,
        first_range: (u64, u64),
        second_range: (u64, u64),
    },
    /// `virt_end - virt_base` exceeds [`MAX_IMAGE_SPAN`].
    ImageTooLarge { base: u64, end: u64 },
    /// The entry point is not inside any executable segment.
    EntryOutsideExec { entry: u64 },
    /// A note header, name or descriptor at file byte `offset` runs past the
    /// end of its `PT_NOTE` segment `index`.
    MalformedNote { index: u16, offset: u64 },
    /// A Paravane note's descriptor has the wrong size.
    BadNoteSize {
        note_type: u32,
        descsz: u32,
        expected: u32,
    },
    /// A Paravane note appears twice.
    DuplicateNote { note_type: u32 },
    /// The hypercall page note names an address that is not page aligned.
    HypercallPageMisaligned { addr: u64 },
    /// The hypercall page `[addr, addr + 4096)` is not inside one segment.
    HypercallPageOutsideSegments { addr: u64 },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len } => write!(
                f,
                "truncated: the file has {len} bytes, less than the {EHDR_SIZE}-byte ELF64 header"
            ),
            Self::BadMagic => f.write_str("not an ELF file (bad magic)"),
            Self::NotElf64 { class } => {
                write!(f, "not a 64-bit ELF file (EI_CLASS is {class}, expected 2)")
            }
            Self::NotLittleEndian { data } => {
                write!(f, "not a little-endian ELF file (EI_DATA is {data}, expected 1)")
            }
            Self::BadVersion { version } => {
                write!(f, "unsupported ELF version {version} (expected 1)")
            }
            Self::NotExecutable { e_type } => write!(
                f,
                "not a static executable (e_type is {e_type}, expected 2 = ET_EXEC)"
            ),
            Self::WrongMachine { machine } => write!(
                f,
                "not an x86_64 image (e_machine is {machine}, expected 62 = EM_X86_64)"
            ),
            Self::BadPhentsize { phentsize } => write!(
                f,
                "program header entries are {phentsize} bytes (expected {PHDR_SIZE})"
            ),
            Self::PhdrTableOverflow { phoff, phnum } => write!(
                f,
                "program header table at offset {phoff:#x} with {phnum} entries overflows"
            ),
            Self::PhdrTruncated {
                index,
                end,
                file_len,
            } => write!(
                f,
                "truncated: program header {index} ends at byte {end} but the file has {file_len} bytes"
            ),
            Self::MemszBelowFilesz {
                index,
                filesz,
                memsz,
            } => write!(
                f,
                "segment {index} has memsz {memsz:#x} smaller than filesz {filesz:#x}"
            ),
            Self::SegmentTruncated {
                index,
                offset,
                filesz,
                file_len,
            } => write!(
                f,
                "truncated: segment {index} needs {filesz:#x} bytes at offset {offset:#x} but the file has {file_len} bytes"
            ),
            Self::SegmentAddressOverflow {
                index,
                vaddr,
                memsz,
            } => write!(
                f,
                "segment {index} at {vaddr:#x} with memsz {memsz:#x} wraps around the address space"
            ),
            Self::SegmentInHypervisorSpace {
                index,
                vaddr,
                memsz,
            } => write!(
                f,
                "segment {index} at {vaddr:#x} with memsz {memsz:#x} is not in guest address space"
            ),
            Self::TooManySegments { index } => write!(
                f,
                "too many loadable segments: program header {index} is PT_LOAD number {} (limit {MAX_SEGMENTS})",
                MAX_SEGMENTS.saturating_add(1)
            ),
            Self::NoLoadSegments => f.write_str("no loadable (PT_LOAD) segment"),
            Self::SegmentsOverlap {
                first,
                second,
                first_range,
                second_range,
            } => write!(
                f,
                "segments {first} and {second} overlap ({:#x}..{:#x} and {:#x}..{:#x}, page-rounded)",
                first_range.0, first_range.1, second_range.0, second_range.1
            ),
            Self::ImageTooLarge { base, end } => write!(
                f,
                "image spans {base:#x}..{end:#x}, more than the {} MiB limit",
                MAX_IMAGE_SPAN >> 20
            ),
            Self::EntryOutsideExec { entry } => write!(
                f,
                "entry point {entry:#x} is outside every executable segment"
            ),
            Self::MalformedNote { index, offset } => write!(
                f,
                "malformed note at byte {offset:#x}: it runs past the end of note segment {index}"
            ),
            Self::BadNoteSize {
                note_type,
                descsz,
                expected,
            } => write!(
                f,
                "Paravane note type {note_type} has a {descsz}-byte descriptor (expected {expected})"
            ),
            Self::DuplicateNote { note_type } => {
                write!(f, "Paravane note type {note_type} appears more than once")
            }
            Self::HypercallPageMisaligned { addr } => {
                write!(f, "hypercall page {addr:#x} is not 4 KiB aligned")
            }
            Self::HypercallPageOutsideSegments { addr } => write!(
                f,
                "hypercall page {addr:#x}..+0x1000 is not inside a single loadable segment"
            ),
        }
    }
}

/// A validated guest image borrowing the boot module's bytes. See the module
/// docs for the invariants every value satisfies.
#[derive(Clone, Debug)]
pub struct ElfImage<'a> {
    bytes: &'a [u8],
    entry: u64,
    segments: heapless::Vec<LoadSegment, MAX_SEGMENTS>,
    notes: GuestNotes,
    virt_base: u64,
    virt_end: u64,
}

/// How many leading bytes of an image [`ElfImage::parse`] reads: the file
/// header, the program-header table and every `PT_LOAD` and `PT_NOTE` file
/// range (section headers and debug info are never read). `head` is a prefix
/// of the image holding at least the file header and the program headers;
/// `None` when it does not or the numbers overflow (then use the whole file:
/// the parser reports what is wrong). For a well-formed image, parsing the
/// first `n` bytes gives the same result as parsing all of it, so a builder
/// copies only those from a guest (TS-4).
pub fn loaded_prefix_len(head: &[u8]) -> Option<u64> {
    let (ehdr, _) = Ehdr::ref_from_prefix(head).ok()?;
    let phoff = ehdr.e_phoff.get();
    let phnum = ehdr.e_phnum.get();
    let table_end = u64::from(phnum)
        .checked_mul(PHDR_SIZE as u64)?
        .checked_add(phoff)?;
    let mut table = head.get(usize::try_from(phoff).ok()?..usize::try_from(table_end).ok()?)?;
    let mut end = table_end.max(EHDR_SIZE as u64);
    while let Ok((phdr, rest)) = Phdr::ref_from_prefix(table) {
        table = rest;
        if matches!(phdr.p_type.get(), PT_LOAD | PT_NOTE) {
            end = end.max(phdr.p_offset.get().checked_add(phdr.p_filesz.get())?);
        }
    }
    Some(end)
}

impl<'a> ElfImage<'a> {
    /// Parses and validates `bytes` as a Paravane guest image.
    pub fn parse(bytes: &'a [u8]) -> Result<ElfImage<'a>, ElfError> {
        let (ehdr, _) =
            Ehdr::ref_from_prefix(bytes).map_err(|_| ElfError::TooShort { len: bytes.len() })?;
        check_ehdr(ehdr)?;

        let phoff = ehdr.e_phoff.get();
        let phnum = ehdr.e_phnum.get();
        if u64::from(phnum)
            .checked_mul(PHDR_SIZE as u64)
            .and_then(|size| size.checked_add(phoff))
            .is_none()
        {
            return Err(ElfError::PhdrTableOverflow { phoff, phnum });
        }

        let mut table = usize::try_from(phoff)
            .ok()
            .and_then(|off| bytes.get(off..))
            .unwrap_or_default();
        // Segments with the index of their program header, for error messages.
        let mut loads: heapless::Vec<(LoadSegment, u16), MAX_SEGMENTS> = heapless::Vec::new();
        let mut notes = GuestNotes {
            abi: None,
            hypercall_page: None,
        };
        for index in 0..phnum {
            let Ok((phdr, rest)) = Phdr::ref_from_prefix(table) else {
                let end = u64::from(index)
                    .saturating_add(1)
                    .saturating_mul(PHDR_SIZE as u64)
                    .saturating_add(phoff);
                return Err(ElfError::PhdrTruncated {
                    index,
                    end,
                    file_len: bytes.len(),
                });
            };
            table = rest;
            match phdr.p_type.get() {
                PT_LOAD => {
                    if let Some(seg) = check_load(bytes, index, phdr)? {
                        loads
                            .push((seg, index))
                            .map_err(|_| ElfError::TooManySegments { index })?;
                    }
                }
                PT_NOTE => {
                    let data = file_range(bytes, index, phdr.p_offset.get(), phdr.p_filesz.get())?;
                    let align = if phdr.p_align.get() == 8 { 8 } else { 4 };
                    parse_notes(data, align, index, phdr.p_offset.get(), &mut notes)?;
                }
                _ => {}
            }
        }

        loads.sort_unstable_by_key(|(seg, _)| seg.vaddr);
        for pair in loads.windows(2) {
            let [(a, ai), (b, bi)] = pair else { continue };
            let (Some(ra), Some(rb)) = (a.page_range(), b.page_range()) else {
                continue; // Unreachable: validated by `check_load`.
            };
            if ra.1 > rb.0 {
                return Err(ElfError::SegmentsOverlap {
                    first: *ai,
                    second: *bi,
                    first_range: ra,
                    second_range: rb,
                });
            }
        }

        let (Some((first, _)), Some((last, _))) = (loads.first(), loads.last()) else {
            return Err(ElfError::NoLoadSegments);
        };
        let virt_base = first.vaddr & !PAGE_MASK;
        // Sorted and non-overlapping, so the last segment ends highest.
        let virt_end = last.page_range().map_or(u64::MAX, |(_, end)| end);
        if virt_end
            .checked_sub(virt_base)
            .is_none_or(|span| span > MAX_IMAGE_SPAN)
        {
            return Err(ElfError::ImageTooLarge {
                base: virt_base,
                end: virt_end,
            });
        }

        let entry = ehdr.e_entry.get();
        if !loads
            .iter()
            .any(|(seg, _)| seg.executable && seg.contains(entry))
        {
            return Err(ElfError::EntryOutsideExec { entry });
        }

        if let Some(addr) = notes.hypercall_page {
            if addr & PAGE_MASK != 0 {
                return Err(ElfError::HypercallPageMisaligned { addr });
            }
            let inside = loads.iter().any(|(seg, _)| {
                seg.contains(addr)
                    && addr
                        .checked_add(PAGE_SIZE)
                        .zip(seg.end())
                        .is_some_and(|(page_end, seg_end)| page_end <= seg_end)
            });
            if !inside {
                return Err(ElfError::HypercallPageOutsideSegments { addr });
            }
        }

        let mut segments = heapless::Vec::new();
        for (seg, index) in &loads {
            // Same capacity as `loads`, so this never fails.
            segments
                .push(*seg)
                .map_err(|_| ElfError::TooManySegments { index: *index })?;
        }
        Ok(ElfImage {
            bytes,
            entry,
            segments,
            notes,
            virt_base,
            virt_end,
        })
    }

    /// The entry point; inside an executable segment.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The non-empty `PT_LOAD` segments, sorted by `vaddr`, no two sharing a page.
    pub fn segments(&self) -> &[LoadSegment] {
        &self.segments
    }

    /// The `filesz` bytes of `seg` to copy to `seg.vaddr`. `seg` should come from
    /// [`Self::segments`]; for any other value whose bytes are not in the file
    /// this returns an empty slice.
    pub fn segment_data(&self, seg: &LoadSegment) -> &'a [u8] {
        range(self.bytes, seg.file_offset, seg.filesz).unwrap_or_default()
    }

    /// The Paravane notes found (`None` for each one missing).
    pub fn notes(&self) -> GuestNotes {
        self.notes
    }

    /// Lowest segment `vaddr`, rounded down to 4 KiB.
    pub fn virt_base(&self) -> u64 {
        self.virt_base
    }

    /// Highest segment `vaddr + memsz`, rounded up to 4 KiB (exclusive).
    pub fn virt_end(&self) -> u64 {
        self.virt_end
    }
}

/// Checks the identification and the fixed fields of the file header.
fn check_ehdr(ehdr: &Ehdr) -> Result<(), ElfError> {
    let [m0, m1, m2, m3, class, data, ..] = ehdr.ident;
    if [m0, m1, m2, m3] != ELF_MAGIC {
        return Err(ElfError::BadMagic);
    }
    if class != ELFCLASS64 {
        return Err(ElfError::NotElf64 { class });
    }
    if data != ELFDATA2LSB {
        return Err(ElfError::NotLittleEndian { data });
    }
    let version = ehdr.e_version.get();
    if version != EV_CURRENT {
        return Err(ElfError::BadVersion { version });
    }
    let e_type = ehdr.e_type.get();
    if e_type != ET_EXEC {
        return Err(ElfError::NotExecutable { e_type });
    }
    let machine = ehdr.e_machine.get();
    if machine != EM_X86_64 {
        return Err(ElfError::WrongMachine { machine });
    }
    let phentsize = ehdr.e_phentsize.get();
    if usize::from(phentsize) != PHDR_SIZE {
        return Err(ElfError::BadPhentsize { phentsize });
    }
    Ok(())
}

/// Validates one `PT_LOAD` header; `None` for an empty (`memsz == 0`) one.
fn check_load(bytes: &[u8], index: u16, phdr: &Phdr) -> Result<Option<LoadSegment>, ElfError> {
    let flags = phdr.p_flags.get();
    let seg = LoadSegment {
        vaddr: phdr.p_vaddr.get(),
        memsz: phdr.p_memsz.get(),
        file_offset: phdr.p_offset.get(),
        filesz: phdr.p_filesz.get(),
        readable: flags & PF_R != 0,
        writable: flags & PF_W != 0,
        executable: flags & PF_X != 0,
    };
    if seg.memsz < seg.filesz {
        return Err(ElfError::MemszBelowFilesz {
            index,
            filesz: seg.filesz,
            memsz: seg.memsz,
        });
    }
    if seg.memsz == 0 {
        return Ok(None);
    }
    file_range(bytes, index, seg.file_offset, seg.filesz)?;
    if seg.end().is_none() {
        return Err(ElfError::SegmentAddressOverflow {
            index,
            vaddr: seg.vaddr,
            memsz: seg.memsz,
        });
    }
    if !is_guest_range(seg.vaddr, seg.memsz) {
        return Err(ElfError::SegmentInHypervisorSpace {
            index,
            vaddr: seg.vaddr,
            memsz: seg.memsz,
        });
    }
    Ok(Some(seg))
}

/// `bytes[offset..offset + len]`, if all of it is there.
fn range(bytes: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    bytes.get(start..end)
}

/// The file bytes of segment `index`, or [`ElfError::SegmentTruncated`].
fn file_range(bytes: &[u8], index: u16, offset: u64, filesz: u64) -> Result<&[u8], ElfError> {
    range(bytes, offset, filesz).ok_or(ElfError::SegmentTruncated {
        index,
        offset,
        filesz,
        file_len: bytes.len(),
    })
}

/// Parses the notes in the contents `data` of `PT_NOTE` segment `index` (at file
/// offset `file_offset`), recording Paravane notes in `notes`. Name and
/// descriptor are padded to `align` bytes (4, or 8 for 8-aligned note segments).
fn parse_notes(
    data: &[u8],
    align: usize,
    index: u16,
    file_offset: u64,
    notes: &mut GuestNotes,
) -> Result<(), ElfError> {
    let mut pos = 0usize;
    while let Some(rest) = data.get(pos..).filter(|rest| !rest.is_empty()) {
        let malformed = ElfError::MalformedNote {
            index,
            offset: file_offset.saturating_add(pos as u64),
        };
        let (nhdr, _) = Nhdr::ref_from_prefix(rest).map_err(|_| malformed)?;
        let namesz = usize::try_from(nhdr.namesz.get()).map_err(|_| malformed)?;
        let descsz = usize::try_from(nhdr.descsz.get()).map_err(|_| malformed)?;
        let name_end = NHDR_SIZE.checked_add(namesz).ok_or(malformed)?;
        let desc_start = name_end.checked_next_multiple_of(align).ok_or(malformed)?;
        let desc_end = desc_start.checked_add(descsz).ok_or(malformed)?;
        let name = rest.get(NHDR_SIZE..name_end).ok_or(malformed)?;
        let desc = rest.get(desc_start..desc_end).ok_or(malformed)?;
        // Padding after the last descriptor may be cut off by the segment end.
        let next = desc_end
            .checked_next_multiple_of(align)
            .ok_or(malformed)?
            .min(rest.len());
        pos = pos.checked_add(next).ok_or(malformed)?;

        if name == NOTE_NAME.as_slice() {
            record_note(nhdr.n_type.get(), desc, notes)?;
        }
    }
    Ok(())
}

/// Records one Paravane note; unknown types are ignored (later ABI minors may add some).
fn record_note(note_type: u32, desc: &[u8], notes: &mut GuestNotes) -> Result<(), ElfError> {
    let bad_size = ElfError::BadNoteSize {
        note_type,
        descsz: u32::try_from(desc.len()).unwrap_or(u32::MAX),
        expected: 8,
    };
    let duplicate = ElfError::DuplicateNote { note_type };
    match note_type {
        NOTE_ABI_VERSION => {
            let note = AbiVersionNote::read_from_bytes(desc).map_err(|_| bad_size)?;
            if notes.abi.replace(note).is_some() {
                return Err(duplicate);
            }
        }
        NOTE_HYPERCALL_PAGE => {
            let addr = U64::read_from_bytes(desc).map_err(|_| bad_size)?.get();
            if notes.hypercall_page.replace(addr).is_some() {
                return Err(duplicate);
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const R: u32 = PF_R;
    const RW: u32 = PF_R | PF_W;
    const RX: u32 = PF_R | PF_X;

    fn put16(buf: &mut [u8], off: usize, v: u16) {
        buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn put32(buf: &mut [u8], off: usize, v: u32) {
        buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put64(buf: &mut [u8], off: usize, v: u64) {
        buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// One note: owner name (with NUL), type, descriptor.
    fn note(name: &[u8], n_type: u32, desc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&n_type.to_le_bytes());
        out.extend_from_slice(name);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(desc);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    fn abi_note(major: u32, minor: u32) -> Vec<u8> {
        let mut desc = major.to_le_bytes().to_vec();
        desc.extend_from_slice(&minor.to_le_bytes());
        note(NOTE_NAME, NOTE_ABI_VERSION, &desc)
    }

    fn hcall_note(addr: u64) -> Vec<u8> {
        note(NOTE_NAME, NOTE_HYPERCALL_PAGE, &addr.to_le_bytes())
    }

    /// A program header to emit: `data` is placed in the file and becomes
    /// `p_offset`/`p_filesz` (override with `fix` afterwards).
    #[derive(Clone)]
    struct Seg {
        p_type: u32,
        flags: u32,
        vaddr: u64,
        memsz: u64,
        data: Vec<u8>,
        align: u64,
    }

    fn load(vaddr: u64, memsz: u64, flags: u32, data: Vec<u8>) -> Seg {
        Seg {
            p_type: PT_LOAD,
            flags,
            vaddr,
            memsz,
            data,
            align: 4096,
        }
    }

    fn note_seg(data: Vec<u8>) -> Seg {
        Seg {
            p_type: PT_NOTE,
            flags: R,
            vaddr: 0,
            memsz: 0,
            data,
            align: 4,
        }
    }

    /// Header, program headers, then each segment's data (16-byte aligned).
    fn build(entry: u64, segs: &[Seg]) -> Vec<u8> {
        let mut out = vec![0u8; 64 + 56 * segs.len()];
        out[..4].copy_from_slice(&ELF_MAGIC);
        out[4] = ELFCLASS64;
        out[5] = ELFDATA2LSB;
        out[6] = 1;
        put16(&mut out, 16, ET_EXEC);
        put16(&mut out, 18, EM_X86_64);
        put32(&mut out, 20, EV_CURRENT);
        put64(&mut out, 24, entry);
        put64(&mut out, 32, 64);
        put16(&mut out, 52, 64);
        put16(&mut out, 54, 56);
        put16(&mut out, 56, segs.len() as u16);
        for (i, seg) in segs.iter().enumerate() {
            out.resize(out.len().next_multiple_of(16), 0);
            let offset = out.len() as u64;
            out.extend_from_slice(&seg.data);
            let ph = 64 + 56 * i;
            put32(&mut out, ph, seg.p_type);
            put32(&mut out, ph + 4, seg.flags);
            put64(&mut out, ph + 8, offset);
            put64(&mut out, ph + 16, seg.vaddr);
            put64(&mut out, ph + 24, seg.vaddr);
            put64(&mut out, ph + 32, seg.data.len() as u64);
            put64(&mut out, ph + 40, seg.memsz);
            put64(&mut out, ph + 48, seg.align);
        }
        out
    }

    /// Offset of a field in program header `i`.
    fn ph(i: usize, field: usize) -> usize {
        64 + 56 * i + field
    }
    const P_OFFSET: usize = 8;
    const P_VADDR: usize = 16;
    const P_FILESZ: usize = 32;
    const P_MEMSZ: usize = 40;

    const TEXT: u64 = 0x40_0000;
    const DATA: u64 = 0x40_3000;
    const HCALL: u64 = 0x40_1000;

    fn valid_segs() -> Vec<Seg> {
        let mut notes = abi_note(0, 1);
        notes.extend(hcall_note(HCALL));
        vec![
            note_seg(notes),
            // Listed out of order: parse sorts by vaddr.
            load(DATA + 0x10, 0x2ff0, RW, vec![0xda; 0x30]),
            load(TEXT, 0x2000, RX, vec![0xc3; 0x120]),
        ]
    }

    fn valid() -> Vec<u8> {
        build(TEXT + 0x10, &valid_segs())
    }

    fn err(bytes: &[u8]) -> ElfError {
        ElfImage::parse(bytes).expect_err("image should be refused")
    }

    /// Every invariant the module docs promise.
    fn check_invariants(img: &ElfImage<'_>, bytes: &[u8]) {
        let segs = img.segments();
        assert!(!segs.is_empty() && segs.len() <= MAX_SEGMENTS);
        for seg in segs {
            assert!(seg.memsz > 0 && seg.filesz <= seg.memsz);
            assert!(is_guest_range(seg.vaddr, seg.memsz));
            let data = img.segment_data(seg);
            assert_eq!(data.len() as u64, seg.filesz);
            let off = seg.file_offset as usize;
            assert_eq!(data, &bytes[off..off + data.len()]);
            assert!(img.virt_base() <= seg.vaddr);
            assert!(seg.vaddr + seg.memsz <= img.virt_end());
        }
        for w in segs.windows(2) {
            assert!(w[0].vaddr <= w[1].vaddr);
            assert!(w[0].page_range().unwrap().1 <= w[1].page_range().unwrap().0);
        }
        assert!(segs
            .iter()
            .any(|s| s.executable && s.vaddr <= img.entry() && img.entry() < s.vaddr + s.memsz));
        assert_eq!(img.virt_base() % 4096, 0);
        assert_eq!(img.virt_end() % 4096, 0);
        assert!(img.virt_end() - img.virt_base() <= MAX_IMAGE_SPAN);
        if let Some(page) = img.notes().hypercall_page {
            assert_eq!(page % 4096, 0);
            assert!(segs
                .iter()
                .any(|s| s.vaddr <= page && page + 4096 <= s.vaddr + s.memsz));
        }
    }

    #[test]
    fn loaded_prefix_parses_like_the_whole_file() {
        let mut bytes = valid();
        let n = loaded_prefix_len(&bytes).expect("a prefix") as usize;
        assert!(n <= bytes.len());
        // Debug info after the loaded parts is not needed.
        bytes.extend_from_slice(&[0xee; 10_000]);
        assert_eq!(loaded_prefix_len(&bytes), Some(n as u64));
        let whole = ElfImage::parse(&bytes).unwrap();
        let prefix = ElfImage::parse(&bytes[..n]).unwrap();
        assert_eq!(whole.segments(), prefix.segments());
        assert_eq!(whole.notes(), prefix.notes());
        assert_eq!(whole.entry(), prefix.entry());
        for (a, b) in whole.segments().iter().zip(prefix.segments()) {
            assert_eq!(whole.segment_data(a), prefix.segment_data(b));
        }
        // One byte less loses part of a segment or note.
        assert!(ElfImage::parse(&bytes[..n - 1]).is_err());
        // A head without the program headers says so.
        assert_eq!(loaded_prefix_len(&bytes[..EHDR_SIZE]), None);
        assert_eq!(loaded_prefix_len(b"not an elf"), None);
    }

    proptest! {
        #[test]
        fn loaded_prefix_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = loaded_prefix_len(&bytes);
        }
    }

    #[test]
    fn valid_image() {
        let bytes = valid();
        let img = ElfImage::parse(&bytes).unwrap();
        check_invariants(&img, &bytes);
        assert_eq!(img.entry(), TEXT + 0x10);
        let segs = img.segments();
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].vaddr, TEXT);
        assert_eq!(segs[0].memsz, 0x2000);
        assert_eq!(segs[0].filesz, 0x120);
        assert!(segs[0].readable && segs[0].executable && !segs[0].writable);
        assert!(segs[1].readable && segs[1].writable && !segs[1].executable);
        assert_eq!(img.segment_data(&segs[0]), &[0xc3; 0x120][..]);
        assert_eq!(img.segment_data(&segs[1]), &[0xda; 0x30][..]);
        assert_eq!(
            img.notes(),
            GuestNotes {
                abi: Some(AbiVersionNote { major: 0, minor: 1 }),
                hypercall_page: Some(HCALL),
            }
        );
        assert_eq!(img.virt_base(), TEXT);
        assert_eq!(img.virt_end(), DATA + 0x3000);
    }

    #[test]
    fn notes_are_optional_and_foreign_notes_ignored() {
        let mut segs = valid_segs();
        let mut notes = note(b"GNU\0", 3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        notes.extend(note(b"Xen\0", NOTE_ABI_VERSION, &[0; 3]));
        notes.extend(note(NOTE_NAME, 77, &[0; 5])); // Unknown Paravane type.
        segs[0] = note_seg(notes);
        let b = build(TEXT, &segs);
        let img = ElfImage::parse(&b).unwrap();
        assert_eq!(
            img.notes(),
            GuestNotes {
                abi: None,
                hypercall_page: None
            }
        );
        // No PT_NOTE at all.
        let b = build(TEXT, &valid_segs()[1..]);
        let img = ElfImage::parse(&b).unwrap();
        assert_eq!(img.notes().abi, None);
    }

    #[test]
    fn eight_aligned_note_segment() {
        let mut segs = valid_segs();
        let mut desc = Vec::new();
        desc.extend_from_slice(&HCALL.to_le_bytes());
        // namesz 9 pads to 24 with 8-byte alignment.
        let mut n = Vec::new();
        n.extend_from_slice(&9u32.to_le_bytes());
        n.extend_from_slice(&8u32.to_le_bytes());
        n.extend_from_slice(&NOTE_HYPERCALL_PAGE.to_le_bytes());
        n.extend_from_slice(NOTE_NAME);
        n.resize(24, 0);
        n.extend_from_slice(&desc);
        segs[0] = note_seg(n);
        segs[0].align = 8;
        let b = build(TEXT, &segs);
        let img = ElfImage::parse(&b).unwrap();
        assert_eq!(img.notes().hypercall_page, Some(HCALL));
    }

    #[test]
    fn header_errors() {
        assert_eq!(err(&[]), ElfError::TooShort { len: 0 });
        assert_eq!(err(&valid()[..63]), ElfError::TooShort { len: 63 });

        let cases: [(usize, u8, ElfError); 3] = [
            (0, 0x7e, ElfError::BadMagic),
            (4, 1, ElfError::NotElf64 { class: 1 }),
            (5, 2, ElfError::NotLittleEndian { data: 2 }),
        ];
        for (off, val, want) in cases {
            let mut b = valid();
            b[off] = val;
            assert_eq!(err(&b), want);
        }
        let mut b = valid();
        put32(&mut b, 20, 2);
        assert_eq!(err(&b), ElfError::BadVersion { version: 2 });
        let mut b = valid();
        put16(&mut b, 16, 3);
        assert_eq!(err(&b), ElfError::NotExecutable { e_type: 3 });
        let mut b = valid();
        put16(&mut b, 18, 3);
        assert_eq!(err(&b), ElfError::WrongMachine { machine: 3 });
        let mut b = valid();
        put16(&mut b, 54, 64);
        assert_eq!(err(&b), ElfError::BadPhentsize { phentsize: 64 });
    }

    #[test]
    fn phdr_table_bounds() {
        let mut b = valid();
        put64(&mut b, 32, u64::MAX);
        assert_eq!(
            err(&b),
            ElfError::PhdrTableOverflow {
                phoff: u64::MAX,
                phnum: 3
            }
        );
        let mut b = valid();
        put64(&mut b, 32, u64::MAX - 56 * 3 + 1);
        assert!(matches!(err(&b), ElfError::PhdrTableOverflow { .. }));
        let mut b = valid();
        put64(&mut b, 32, u64::MAX - 56 * 3);
        assert!(matches!(err(&b), ElfError::PhdrTruncated { index: 0, .. }));

        let mut b = valid();
        let len = b.len();
        put16(&mut b, 56, u16::MAX);
        let want_index = ((len - 64) / 56) as u16;
        assert_eq!(
            err(&b),
            ElfError::PhdrTruncated {
                index: want_index,
                end: 64 + 56 * (u64::from(want_index) + 1),
                file_len: len,
            }
        );
        let msg = err(&b).to_string();
        assert!(msg.starts_with(&format!(
            "truncated: program header {want_index} ends at byte"
        )));
    }

    #[test]
    fn segment_size_errors() {
        let mut b = valid();
        put64(&mut b, ph(2, P_MEMSZ), 0x10);
        assert_eq!(
            err(&b),
            ElfError::MemszBelowFilesz {
                index: 2,
                filesz: 0x120,
                memsz: 0x10
            }
        );

        let mut b = valid();
        let len = b.len();
        put64(&mut b, ph(1, P_FILESZ), 0x1000);
        assert!(matches!(
            err(&b),
            ElfError::SegmentTruncated { index: 1, filesz: 0x1000, file_len, .. } if file_len == len
        ));
        for (off, size) in [(u64::MAX, 1), (u64::MAX - 1, 2), (1, u64::MAX - 1)] {
            let mut b = valid();
            put64(&mut b, ph(1, P_OFFSET), off);
            put64(&mut b, ph(1, P_FILESZ), size);
            put64(&mut b, ph(1, P_MEMSZ), u64::MAX);
            assert!(matches!(
                err(&b),
                ElfError::SegmentTruncated { index: 1, .. }
            ));
        }
        // The note segment's bytes are checked too.
        let mut b = valid();
        put64(&mut b, ph(0, P_OFFSET), u64::MAX);
        assert!(matches!(
            err(&b),
            ElfError::SegmentTruncated { index: 0, .. }
        ));
    }

    #[test]
    fn segment_address_errors() {
        let mut b = valid();
        put64(&mut b, ph(1, P_VADDR), u64::MAX - 0x10);
        assert!(matches!(
            err(&b),
            ElfError::SegmentAddressOverflow { index: 1, .. }
        ));

        let mut b = valid();
        put64(&mut b, ph(1, P_VADDR), 0xffff_8000_0000_0000);
        assert_eq!(
            err(&b),
            ElfError::SegmentInHypervisorSpace {
                index: 1,
                vaddr: 0xffff_8000_0000_0000,
                memsz: 0x2ff0
            }
        );
        // Straddling the end of the lower half, and the hypervisor image slot.
        for vaddr in [0x7fff_ffff_f000, 0xffff_ffff_8000_0000] {
            let mut b = valid();
            put64(&mut b, ph(1, P_VADDR), vaddr);
            assert!(matches!(err(&b), ElfError::SegmentInHypervisorSpace { .. }));
        }
    }

    #[test]
    fn segment_count() {
        let mut segs = vec![load(TEXT, 0x1000, RX, vec![0x90; 4])];
        for i in 1..MAX_SEGMENTS as u64 {
            segs.push(load(TEXT + i * 0x1000, 0x1000, RW, vec![i as u8]));
        }
        let b = build(TEXT, &segs);
        let img = ElfImage::parse(&b).unwrap();
        assert_eq!(img.segments().len(), MAX_SEGMENTS);
        // Empty segments do not count.
        segs.push(load(0, 0, RW, vec![]));
        assert!(ElfImage::parse(&build(TEXT, &segs)).is_ok());
        segs.push(load(0x80_0000, 0x1000, RW, vec![]));
        assert_eq!(
            err(&build(TEXT, &segs)),
            ElfError::TooManySegments { index: 17 }
        );

        assert_eq!(err(&build(TEXT, &[])), ElfError::NoLoadSegments);
        let segs = [valid_segs()[0].clone(), load(TEXT, 0, RX, vec![])];
        assert_eq!(err(&build(TEXT, &segs)), ElfError::NoLoadSegments);
    }

    #[test]
    fn overlapping_segments() {
        let segs = [
            load(0x40_1000, 0x2000, RX, vec![1]),
            load(0x40_2000, 0x2000, RW, vec![2]),
        ];
        let e = err(&build(0x40_1000, &segs));
        assert_eq!(
            e,
            ElfError::SegmentsOverlap {
                first: 0,
                second: 1,
                first_range: (0x40_1000, 0x40_3000),
                second_range: (0x40_2000, 0x40_4000),
            }
        );
        assert_eq!(
            e.to_string(),
            "segments 0 and 1 overlap (0x401000..0x403000 and 0x402000..0x404000, page-rounded)"
        );
        // Byte-disjoint but sharing a page.
        let segs = [
            load(0x40_0000, 0x10, RX, vec![1]),
            load(0x40_0800, 0x10, RW, vec![2]),
        ];
        assert!(matches!(
            err(&build(0x40_0000, &segs)),
            ElfError::SegmentsOverlap { .. }
        ));
        // Touching page ranges are fine; a later segment contained in an earlier one is not.
        let segs = [
            load(0x40_0000, 0x1000, RX, vec![1]),
            load(0x40_1000, 0x10, RW, vec![2]),
        ];
        assert!(ElfImage::parse(&build(0x40_0000, &segs)).is_ok());
        let segs = [
            load(0x40_0000, 0x10_0000, RX, vec![1]),
            load(0x40_1000, 0x1000, RW, vec![2]),
            load(0x60_0000, 0x1000, RW, vec![3]),
        ];
        assert!(matches!(
            err(&build(0x40_0000, &segs)),
            ElfError::SegmentsOverlap {
                first: 0,
                second: 1,
                ..
            }
        ));
    }

    #[test]
    fn image_span() {
        let segs = [
            load(TEXT, 0x1000, RX, vec![1]),
            load(TEXT + MAX_IMAGE_SPAN - 0x1000, 0x1000, RW, vec![2]),
        ];
        assert!(ElfImage::parse(&build(TEXT, &segs)).is_ok());
        let segs = [
            load(TEXT, 0x1000, RX, vec![1]),
            load(TEXT + MAX_IMAGE_SPAN - 0x1000, 0x1001, RW, vec![2]),
        ];
        assert_eq!(
            err(&build(TEXT, &segs)),
            ElfError::ImageTooLarge {
                base: TEXT,
                end: TEXT + MAX_IMAGE_SPAN + 0x1000
            }
        );
    }

    #[test]
    fn entry_point() {
        for entry in [
            0,
            TEXT - 1,
            TEXT + 0x2000,
            DATA + 0x20,
            0x12345678,
            u64::MAX,
        ] {
            let e = err(&build(entry, &valid_segs()));
            assert_eq!(e, ElfError::EntryOutsideExec { entry });
        }
        assert_eq!(
            ElfError::EntryOutsideExec { entry: 0x12345678 }.to_string(),
            "entry point 0x12345678 is outside every executable segment"
        );
        // Last byte of the executable segment (memsz, not filesz, counts).
        assert!(ElfImage::parse(&build(TEXT + 0x1fff, &valid_segs())).is_ok());
    }

    #[test]
    fn note_errors() {
        let with_notes = |notes: Vec<u8>| {
            let mut segs = valid_segs();
            segs[0] = note_seg(notes);
            build(TEXT, &segs)
        };
        assert_eq!(
            err(&with_notes(note(NOTE_NAME, NOTE_ABI_VERSION, &[0; 12]))),
            ElfError::BadNoteSize {
                note_type: 1,
                descsz: 12,
                expected: 8
            }
        );
        assert_eq!(
            err(&with_notes(note(NOTE_NAME, NOTE_HYPERCALL_PAGE, &[0; 4]))),
            ElfError::BadNoteSize {
                note_type: 2,
                descsz: 4,
                expected: 8
            }
        );
        let mut dup = abi_note(0, 1);
        dup.extend(abi_note(0, 2));
        assert_eq!(
            err(&with_notes(dup)),
            ElfError::DuplicateNote { note_type: 1 }
        );
        let mut dup = hcall_note(HCALL);
        dup.extend(hcall_note(HCALL));
        assert_eq!(
            err(&with_notes(dup)),
            ElfError::DuplicateNote { note_type: 2 }
        );

        // Header cut short, and huge name/descriptor sizes.
        let mut short = abi_note(0, 1);
        short.extend_from_slice(&[0; 8]);
        assert!(matches!(
            err(&with_notes(short)),
            ElfError::MalformedNote { index: 0, .. }
        ));
        for (namesz, descsz) in [
            (u32::MAX, 0),
            (0, u32::MAX),
            (9, 9),
            (100, 0),
            (u32::MAX - 2, 8),
        ] {
            let mut n = abi_note(0, 1);
            put32(&mut n, 0, namesz);
            put32(&mut n, 4, descsz);
            assert!(
                matches!(
                    err(&with_notes(n)),
                    ElfError::MalformedNote { index: 0, .. }
                ),
                "namesz {namesz} descsz {descsz}"
            );
        }
        let mut n = abi_note(0, 1);
        n.truncate(n.len() - 1);
        let b = with_notes(n);
        let note_off = u64::from_le_bytes(b[ph(0, P_OFFSET)..][..8].try_into().unwrap());
        assert_eq!(
            err(&b),
            ElfError::MalformedNote {
                index: 0,
                offset: note_off
            }
        );
    }

    #[test]
    fn hypercall_page_placement() {
        let with_page = |addr: u64| {
            let mut segs = valid_segs();
            segs[0] = note_seg(hcall_note(addr));
            build(TEXT, &segs)
        };
        assert!(ElfImage::parse(&with_page(TEXT)).is_ok());
        assert!(ElfImage::parse(&with_page(DATA + 0x2000)).is_ok());
        assert_eq!(
            err(&with_page(HCALL + 8)),
            ElfError::HypercallPageMisaligned { addr: HCALL + 8 }
        );
        // Data segment starts at DATA+0x10, so the page at DATA is not wholly inside.
        for addr in [
            DATA,
            TEXT + 0x2000,
            0,
            0x7fff_ffff_f000,
            0xffff_ffff_ffff_f000,
        ] {
            assert_eq!(
                err(&with_page(addr)),
                ElfError::HypercallPageOutsideSegments { addr }
            );
        }
    }

    #[test]
    fn every_prefix_is_refused() {
        let bytes = valid();
        for len in 0..bytes.len() {
            assert!(
                ElfImage::parse(&bytes[..len]).is_err(),
                "prefix {len} parsed"
            );
        }
        assert!(ElfImage::parse(&bytes).is_ok());
    }

    #[test]
    fn display_is_one_line() {
        let all = [
            ElfError::TooShort { len: 3 },
            ElfError::BadMagic,
            ElfError::NotElf64 { class: 1 },
            ElfError::NotLittleEndian { data: 2 },
            ElfError::BadVersion { version: 0 },
            ElfError::NotExecutable { e_type: 3 },
            ElfError::WrongMachine { machine: 3 },
            ElfError::BadPhentsize { phentsize: 0 },
            ElfError::PhdrTableOverflow { phoff: 1, phnum: 2 },
            ElfError::PhdrTruncated {
                index: 3,
                end: 4120,
                file_len: 1000,
            },
            ElfError::MemszBelowFilesz {
                index: 0,
                filesz: 2,
                memsz: 1,
            },
            ElfError::SegmentTruncated {
                index: 0,
                offset: 1,
                filesz: 2,
                file_len: 3,
            },
            ElfError::SegmentAddressOverflow {
                index: 0,
                vaddr: 1,
                memsz: 2,
            },
            ElfError::SegmentInHypervisorSpace {
                index: 0,
                vaddr: 1,
                memsz: 2,
            },
            ElfError::TooManySegments { index: 17 },
            ElfError::NoLoadSegments,
            ElfError::SegmentsOverlap {
                first: 1,
                second: 2,
                first_range: (0, 1),
                second_range: (0, 1),
            },
            ElfError::ImageTooLarge { base: 0, end: 1 },
            ElfError::EntryOutsideExec { entry: 0 },
            ElfError::MalformedNote {
                index: 0,
                offset: 0,
            },
            ElfError::BadNoteSize {
                note_type: 1,
                descsz: 0,
                expected: 8,
            },
            ElfError::DuplicateNote { note_type: 1 },
            ElfError::HypercallPageMisaligned { addr: 1 },
            ElfError::HypercallPageOutsideSegments { addr: 0 },
        ];
        for e in all {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'), "{e:?}: {s}");
        }
        assert_eq!(
            ElfError::BadMagic.to_string(),
            "not an ELF file (bad magic)"
        );
        assert_eq!(
            ElfError::PhdrTruncated {
                index: 3,
                end: 4120,
                file_len: 1000
            }
            .to_string(),
            "truncated: program header 3 ends at byte 4120 but the file has 1000 bytes"
        );
    }

    #[test]
    fn foreign_segment_data_is_empty() {
        let bytes = valid();
        let img = ElfImage::parse(&bytes).unwrap();
        let mut seg = img.segments()[0];
        seg.file_offset = u64::MAX;
        assert!(img.segment_data(&seg).is_empty());
    }

    /// Bytes of the valid image worth mutating: header, phdrs and notes.
    fn header_len() -> usize {
        let b = valid();
        let note_off = u64::from_le_bytes(b[ph(0, P_OFFSET)..][..8].try_into().unwrap());
        let note_len = u64::from_le_bytes(b[ph(0, P_FILESZ)..][..8].try_into().unwrap());
        (note_off + note_len) as usize
    }

    proptest! {
        #[test]
        fn mutated_images_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            headers_only in any::<bool>(),
        ) {
            let mut bytes = valid();
            let span = if headers_only { header_len() } else { bytes.len() };
            for (pos, val) in flips {
                bytes[pos % span] = val;
            }
            if let Ok(img) = ElfImage::parse(&bytes) {
                check_invariants(&img, &bytes);
            }
        }

        #[test]
        fn mutated_words_never_panic(
            field in 0usize..(3 * 56 / 8 + 5),
            val in prop_oneof![
                any::<u64>(),
                Just(u64::MAX),
                Just(0),
                (0u64..0x1_0000),
                (0x3f_0000u64..0x41_0000),
            ],
        ) {
            // Overwrite one 8-byte word of the header (from e_entry on) or phdrs.
            let mut bytes = valid();
            let off = 24 + field * 8;
            put64(&mut bytes, off, val);
            if let Ok(img) = ElfImage::parse(&bytes) {
                check_invariants(&img, &bytes);
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            if let Ok(img) = ElfImage::parse(&bytes) {
                check_invariants(&img, &bytes);
            }
        }

        #[test]
        fn random_bytes_behind_valid_header_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..4096),
            phnum in 0u16..32,
        ) {
            let mut bytes = valid()[..64].to_vec();
            put16(&mut bytes, 56, phnum);
            bytes.extend(tail);
            if let Ok(img) = ElfImage::parse(&bytes) {
                check_invariants(&img, &bytes);
            }
        }
    }
}
