//! Guest pointers as allegations (SPEC.md HC-5): a [`GuestRange`] is checked
//! when it is built (guest address space, no overflow), and its bytes are only
//! reached through copy-in/copy-out routines that survive a fault. Arguments
//! are copied in once, then validated, then used.

use hypercall_abi::layout::is_guest_range;
use hypercall_abi::Errno;

/// A range of guest virtual addresses that lies wholly in guest address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestRange {
    va: u64,
    len: u64,
}

impl GuestRange {
    /// Checks `[va, va + len)`: `-EFAULT` when it overflows or touches
    /// hypervisor address space.
    pub fn new(va: u64, len: u64) -> Result<GuestRange, Errno> {
        if is_guest_range(va, len) {
            Ok(GuestRange { va, len })
        } else {
            Err(Errno::EFAULT)
        }
    }

    pub fn va(&self) -> u64 {
        self.va
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(target_os = "none")]
mod access {
    use hypercall_abi::Errno;
    use zerocopy::{FromBytes, Immutable, IntoBytes};

    use super::GuestRange;
    use crate::arch::guest_access::copy_bytes;

    /// Copies guest memory into `dst` (`range.len()` must equal `dst.len()`).
    pub fn copy_from_guest(dst: &mut [u8], range: GuestRange) -> Result<(), Errno> {
        if dst.len() as u64 != range.len() {
            return Err(Errno::EINVAL);
        }
        // SAFETY: `dst` is valid for its length; the guest side was checked by
        // GuestRange::new and the current address space is the calling guest's.
        unsafe { copy_bytes(dst.as_mut_ptr(), range.va() as *const u8, dst.len()) }
            .map_err(|_| Errno::EFAULT)
    }

    /// Copies `src` into guest memory (`range.len()` must equal `src.len()`).
    pub fn copy_to_guest(range: GuestRange, src: &[u8]) -> Result<(), Errno> {
        if src.len() as u64 != range.len() {
            return Err(Errno::EINVAL);
        }
        // SAFETY: as for copy_from_guest, with the roles swapped.
        unsafe { copy_bytes(range.va() as *mut u8, src.as_ptr(), src.len()) }
            .map_err(|_| Errno::EFAULT)
    }

    /// Reads one `T` at guest address `va`.
    pub fn read_obj<T: FromBytes + IntoBytes>(va: u64) -> Result<T, Errno> {
        let mut value = T::new_zeroed();
        let range = GuestRange::new(va, core::mem::size_of::<T>() as u64)?;
        copy_from_guest(value.as_mut_bytes(), range)?;
        Ok(value)
    }

    /// Writes one `T` at guest address `va`.
    pub fn write_obj<T: IntoBytes + Immutable>(va: u64, value: &T) -> Result<(), Errno> {
        let range = GuestRange::new(va, core::mem::size_of::<T>() as u64)?;
        copy_to_guest(range, value.as_bytes())
    }
}

#[cfg(target_os = "none")]
pub use access::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert!(GuestRange::new(0x40_0000, 16).is_ok());
        assert_eq!(
            GuestRange::new(0xffff_ffff_8000_0000, 8),
            Err(Errno::EFAULT)
        );
        assert_eq!(GuestRange::new(u64::MAX - 3, 8), Err(Errno::EFAULT));
        assert_eq!(GuestRange::new(0x7fff_ffff_fff8, 16), Err(Errno::EFAULT));
    }
}
