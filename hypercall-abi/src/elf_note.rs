//! ELF notes a guest image carries (SPEC.md §5.1, HC-2).
//!
//! Notes live in a `PT_NOTE` segment, owner name [`NOTE_NAME`] (with its NUL),
//! 4-byte aligned as the ELF specification requires.

/// Note owner name, including the terminating NUL.
pub const NOTE_NAME: &[u8; 9] = b"Paravane\0";

/// Note type: the ABI version the image was built against; descriptor is
/// [`AbiVersionNote`]. Required: an image without it is refused.
pub const NOTE_ABI_VERSION: u32 = 1;
/// Note type: virtual address of the page the hypervisor fills with hypercall
/// stubs; descriptor is a little-endian `u64`, page aligned, inside a loaded
/// writable-or-executable segment. Required.
pub const NOTE_HYPERCALL_PAGE: u32 = 2;

/// Descriptor of a [`NOTE_ABI_VERSION`] note.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct AbiVersionNote {
    /// ABI major the image was built against.
    pub major: u32,
    /// ABI minor the image was built against.
    pub minor: u32,
}

const _: () = assert!(core::mem::size_of::<AbiVersionNote>() == 8);
const _: () = assert!(core::mem::offset_of!(AbiVersionNote, minor) == 4);
