//! The Paravane ELF notes an image carries (SPEC.md §5.1, HC-2; see
//! `hypercall_abi::elf_note`).
//!
//! [`entry!`](crate::entry) places one [`AbiNote`] and one [`HypercallPageNote`]
//! in the guest crate, as `#[used]` statics in section `.note.paravane`, which
//! `guest.ld` keeps in the `PT_NOTE` segment (and in the read-only `PT_LOAD`).
//!
//! # Invariants
//! Both notes are 32 bytes and 8-aligned: a 12-byte header, the 9-byte owner
//! name padded to 12, an 8-byte descriptor at offset 24. Padding to 4 and to 8
//! gives the same layout, so the section parses whichever `p_align` the linker
//! gives the note segment.
#![deny(unsafe_code)]

use hypercall_abi::elf_note::{AbiVersionNote, NOTE_ABI_VERSION, NOTE_HYPERCALL_PAGE, NOTE_NAME};

use crate::hypercall::HypercallPage;

/// The owner name padded to 12 bytes.
const fn padded_name() -> [u8; 12] {
    let mut name = [0u8; 12];
    let mut i = 0;
    while i < NOTE_NAME.len() {
        name[i] = NOTE_NAME[i];
        i += 1;
    }
    name
}

/// A `NOTE_ABI_VERSION` note.
#[derive(Debug)]
#[repr(C, align(8))]
pub struct AbiNote {
    namesz: u32,
    descsz: u32,
    ntype: u32,
    name: [u8; 12],
    desc: AbiVersionNote,
}

impl AbiNote {
    /// The note for an image built against ABI `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self {
            namesz: NOTE_NAME.len() as u32,
            descsz: core::mem::size_of::<AbiVersionNote>() as u32,
            ntype: NOTE_ABI_VERSION,
            name: padded_name(),
            desc: AbiVersionNote { major, minor },
        }
    }
}

/// A `NOTE_HYPERCALL_PAGE` note; the linker writes the page's absolute address
/// into the descriptor (images are linked with `relocation-model=static`).
#[derive(Debug)]
#[repr(C, align(8))]
pub struct HypercallPageNote {
    namesz: u32,
    descsz: u32,
    ntype: u32,
    name: [u8; 12],
    desc: &'static HypercallPage,
}

impl HypercallPageNote {
    /// The note naming `page`.
    pub const fn new(page: &'static HypercallPage) -> Self {
        Self {
            namesz: NOTE_NAME.len() as u32,
            descsz: core::mem::size_of::<u64>() as u32,
            ntype: NOTE_HYPERCALL_PAGE,
            name: padded_name(),
            desc: page,
        }
    }
}

const _: () = assert!(core::mem::size_of::<AbiNote>() == 32);
const _: () = assert!(core::mem::offset_of!(AbiNote, desc) == 24);
const _: () = assert!(core::mem::size_of::<HypercallPageNote>() == 32);
const _: () = assert!(core::mem::offset_of!(HypercallPageNote, desc) == 24);
const _: () = assert!(core::mem::size_of::<&'static HypercallPage>() == 8);

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses one note the way the ELF specification lays it out, with
    /// `align`-byte padding; returns (type, descriptor, total size).
    fn parse(bytes: &[u8], align: usize) -> (u32, &[u8], usize) {
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let (namesz, descsz, ntype) = (word(0) as usize, word(4) as usize, word(8));
        assert_eq!(&bytes[12..12 + namesz], NOTE_NAME);
        let desc_at = (12 + namesz).next_multiple_of(align);
        let end = (desc_at + descsz).next_multiple_of(align);
        (ntype, &bytes[desc_at..desc_at + descsz], end)
    }

    /// Test-only view of a note's bytes; the notes have no padding bytes
    /// (checked by the size assertions above).
    #[allow(unsafe_code)]
    fn bytes_of<T>(value: &T) -> &[u8] {
        let ptr = value as *const T as *const u8;
        // SAFETY: `value` is a live, fully initialised `T` of `size_of::<T>()` bytes.
        unsafe { core::slice::from_raw_parts(ptr, core::mem::size_of::<T>()) }
    }

    #[test]
    fn abi_note_parses_with_either_padding() {
        let note = AbiNote::new(0, 1);
        for align in [4, 8] {
            let (ntype, desc, len) = parse(bytes_of(&note), align);
            assert_eq!(ntype, NOTE_ABI_VERSION);
            assert_eq!(desc, [0, 0, 0, 0, 1, 0, 0, 0]);
            assert_eq!(len, 32);
        }
    }

    #[test]
    fn hypercall_page_note_holds_the_address() {
        static NOTE: HypercallPageNote = HypercallPageNote::new(&crate::hypercall::HYPERCALL_PAGE);
        for align in [4, 8] {
            let (ntype, desc, len) = parse(bytes_of(&NOTE), align);
            assert_eq!(ntype, NOTE_HYPERCALL_PAGE);
            assert_eq!(
                u64::from_le_bytes(desc.try_into().unwrap()),
                crate::hypercall::HYPERCALL_PAGE.address()
            );
            assert_eq!(len, 32);
        }
    }
}
