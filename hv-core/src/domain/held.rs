//! Boot modules held for the toolstack (SPEC.md TS-14): a module with the
//! `hold` key is not built; hv-core keeps its bytes (in the boot area, never
//! freed) and its string, and `DOMCTL_BOOT_MODULE_READ` copies them out.
//!
//! # Invariants
//! - Set once, at the end of start of day, before any domain runs; read-only
//!   after.

use alloc::string::String;
use alloc::vec::Vec;

use crate::mm::DIRECT_MAP_BASE;

/// One held module.
pub struct HeldModule {
    bytes: &'static [u8],
    /// The module string without its `hold` token.
    string: String,
}

impl HeldModule {
    /// Keeps `bytes` (direct-mapped boot-module memory that is never freed)
    /// and `string`.
    pub fn new(bytes: &'static [u8], string: &str) -> HeldModule {
        let params = string.split(" -- ").next().unwrap_or("");
        let mut kept = String::new();
        for token in params.split_whitespace().filter(|&t| t != "hold") {
            if !kept.is_empty() {
                kept.push(' ');
            }
            kept.push_str(token);
        }
        if let Some((_, guest)) = string.split_once(" -- ") {
            kept.push_str(" -- ");
            kept.push_str(guest);
        }
        HeldModule {
            bytes,
            string: kept,
        }
    }

    /// Its machine address range `[start, end)`.
    pub fn phys_range(&self) -> (u64, u64) {
        let start = (self.bytes.as_ptr() as u64).wrapping_sub(DIRECT_MAP_BASE);
        (start, start.wrapping_add(self.bytes.len() as u64))
    }

    pub fn bytes(&self) -> &'static [u8] {
        self.bytes
    }

    pub fn string(&self) -> &str {
        &self.string
    }
}

static HELD: spin::Once<Vec<HeldModule>> = spin::Once::new();

/// Records the held modules (once, at the end of start of day).
pub fn hold_boot_modules(modules: Vec<HeldModule>) {
    HELD.call_once(|| modules);
}

/// Held module `index` (0 = the first), if any.
pub fn held_module(index: usize) -> Option<&'static HeldModule> {
    HELD.get()?.get(index)
}

/// How many modules are held.
pub fn nr_held_modules() -> usize {
    HELD.get().map_or(0, Vec::len)
}
