//! Which of hv-core's interrupt vectors carries which device interrupt
//! (PDEV-5): a fixed table of the device vectors, each free or bound to one
//! MSI or MSI-X entry of one function and to one event-channel port.
//! Portable bookkeeping; programming the device is the caller's.
//!
//! # Invariants
//! - A function's MSI, or one of its MSI-X entries, holds at most one
//!   vector.
//! - Only vectors in `FIRST..=LAST` are ever handed out.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use hypercall_abi::evtchn::Port;
use hypercall_abi::{DomId, Errno};

use super::pci::Bdf;

/// The vectors device interrupts may use.
pub const FIRST_DEVICE_VECTOR: u8 = 0x40;
pub const LAST_DEVICE_VECTOR: u8 = 0xef;
const VECTORS: usize = (LAST_DEVICE_VECTOR - FIRST_DEVICE_VECTOR) as usize + 1;

/// The interrupt source a vector is programmed into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    pub device: Bdf,
    /// `None` for MSI, the table entry for MSI-X.
    pub msix_entry: Option<u16>,
}

/// What a bound vector is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub source: Source,
    pub dom: DomId,
    pub port: Port,
}

/// Every device vector.
pub struct VectorTable {
    slots: [Option<Binding>; VECTORS],
}

impl Default for VectorTable {
    fn default() -> Self {
        Self::new()
    }
}

impl VectorTable {
    pub const fn new() -> Self {
        Self {
            slots: [None; VECTORS],
        }
    }

    fn slot(vector: u8) -> Option<usize> {
        (FIRST_DEVICE_VECTOR..=LAST_DEVICE_VECTOR)
            .contains(&vector)
            .then(|| usize::from(vector.wrapping_sub(FIRST_DEVICE_VECTOR)))
    }

    /// Whether `vector` is one of the device vectors.
    pub fn is_device_vector(vector: u8) -> bool {
        Self::slot(vector).is_some()
    }

    /// A free vector for `source`: `-EBUSY` if it already has one,
    /// `-ENOSPC` if none is free. Nothing is recorded yet.
    pub fn reserve(&self, source: Source) -> Result<u8, Errno> {
        if self.slots.iter().flatten().any(|b| b.source == source) {
            return Err(Errno::EBUSY);
        }
        let free = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(Errno::ENOSPC)?;
        // `free` < VECTORS, so the sum stays a device vector.
        Ok(FIRST_DEVICE_VECTOR.wrapping_add(free as u8))
    }

    /// Records `binding` on a vector [`VectorTable::reserve`] returned.
    pub fn bind(&mut self, vector: u8, binding: Binding) {
        if let Some(s) = Self::slot(vector).and_then(|i| self.slots.get_mut(i)) {
            *s = Some(binding);
        }
    }

    /// The binding of `vector`.
    pub fn get(&self, vector: u8) -> Option<Binding> {
        Self::slot(vector).and_then(|i| self.slots.get(i).copied().flatten())
    }

    /// Frees `vector`; its binding, if it had one.
    pub fn unbind(&mut self, vector: u8) -> Option<Binding> {
        Self::slot(vector).and_then(|i| self.slots.get_mut(i)?.take())
    }

    /// The vectors bound for `dom`.
    pub fn vectors_of(&self, dom: DomId) -> heapless::Vec<u8, VECTORS> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_some_and(|b| b.dom == dom))
            .map(|(i, _)| FIRST_DEVICE_VECTOR.wrapping_add(i as u8))
            .collect()
    }
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

    fn src(dev: u8, entry: Option<u16>) -> Source {
        Source {
            device: Bdf::new(0, dev, 0),
            msix_entry: entry,
        }
    }

    #[test]
    fn reserve_bind_unbind() {
        let mut t = VectorTable::new();
        let v = t.reserve(src(3, Some(0))).unwrap();
        assert_eq!(v, FIRST_DEVICE_VECTOR);
        let b = Binding {
            source: src(3, Some(0)),
            dom: 0,
            port: 5,
        };
        t.bind(v, b);
        assert_eq!(t.get(v), Some(b));
        assert_eq!(t.reserve(src(3, Some(0))), Err(Errno::EBUSY));
        assert_eq!(t.reserve(src(3, Some(1))), Ok(v + 1));
        assert_eq!(t.reserve(src(3, None)), Ok(v + 1));
        assert_eq!(t.vectors_of(0).as_slice(), [v]);
        assert!(t.vectors_of(1).is_empty());
        assert_eq!(t.unbind(v), Some(b));
        assert_eq!(t.unbind(v), None);
        assert_eq!(t.get(0x20), None);
        assert!(!VectorTable::is_device_vector(0x30));
        assert!(VectorTable::is_device_vector(0xef));
        assert!(!VectorTable::is_device_vector(0xff));
    }

    #[test]
    fn exhaustion() {
        let mut t = VectorTable::new();
        for i in 0..VECTORS as u16 {
            let s = src(4, Some(i));
            let v = t.reserve(s).unwrap();
            t.bind(
                v,
                Binding {
                    source: s,
                    dom: 0,
                    port: u32::from(i) + 1,
                },
            );
        }
        assert_eq!(t.reserve(src(4, Some(999))), Err(Errno::ENOSPC));
        assert_eq!(t.vectors_of(0).len(), VECTORS);
    }

    proptest! {
        #[test]
        fn one_vector_per_source(ops in proptest::collection::vec((any::<bool>(), 0u8..4, proptest::option::of(0u16..3), 0x3eu8..0x50), 1..100)) {
            let mut t = VectorTable::new();
            for (bind, dev, entry, vector) in ops {
                if bind {
                    if let Ok(v) = t.reserve(src(dev, entry)) {
                        prop_assert!(VectorTable::is_device_vector(v));
                        t.bind(v, Binding { source: src(dev, entry), dom: 0, port: 1 });
                    }
                } else {
                    t.unbind(vector);
                }
                let sources: Vec<Source> = t.slots.iter().flatten().map(|b| b.source).collect();
                for (i, s) in sources.iter().enumerate() {
                    prop_assert!(!sources[..i].contains(s));
                }
            }
        }
    }
}
