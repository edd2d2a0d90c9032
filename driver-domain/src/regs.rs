//! Device registers: a window of memory-mapped I/O (a BAR, or the part of one
//! a capability points at) reached only through sized accesses.
//!
//! The kernel implements [`RegisterWindow`] over an uncached mapping of the
//! device's MMIO frames; tests implement it over a simulated device.
//!
//! # Invariants
//! - Offsets handed to the accessors lie inside the window; callers derive
//!   every device-supplied offset through [`RegisterWindow::window`], which
//!   checks it, so the accessors may treat an out-of-range offset as a bug.

/// A window of device registers.
pub trait RegisterWindow: Sized {
    /// Bytes in the window.
    fn len(&self) -> usize;
    /// Whether the window is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The sub-window `offset .. offset + len`; `None` if it leaves this one.
    fn window(&self, offset: usize, len: usize) -> Option<Self>;
    /// Reads the byte at `offset`.
    fn read8(&self, offset: usize) -> u8;
    /// Reads the `u16` at `offset`.
    fn read16(&self, offset: usize) -> u16;
    /// Reads the `u32` at `offset`.
    fn read32(&self, offset: usize) -> u32;
    /// Writes the byte at `offset`.
    fn write8(&self, offset: usize, value: u8);
    /// Writes the `u16` at `offset`.
    fn write16(&self, offset: usize, value: u16);
    /// Writes the `u32` at `offset`.
    fn write32(&self, offset: usize, value: u32);
    /// Reads a `u64` register as two `u32` halves, low first (as the virtio
    /// and NVMe specifications allow).
    fn read64(&self, offset: usize) -> u64 {
        let low = self.read32(offset);
        let high = self.read32(offset + 4);
        u64::from(low) | (u64::from(high) << 32)
    }
    /// Writes a `u64` register as two `u32` halves, low first.
    fn write64(&self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

/// Whether `offset .. offset + len` fits in `total` bytes.
pub fn fits(offset: usize, len: usize, total: usize) -> bool {
    offset.checked_add(len).is_some_and(|end| end <= total)
}

#[cfg(test)]
mod tests {
    use super::fits;

    #[test]
    fn fits_checks_overflow() {
        assert!(fits(0, 16, 16));
        assert!(fits(16, 0, 16));
        assert!(!fits(1, 16, 16));
        assert!(!fits(usize::MAX, 2, usize::MAX));
    }
}
