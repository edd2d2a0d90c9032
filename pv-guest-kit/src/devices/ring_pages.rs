//! A [`RingMemory`] over several [`SharedPage`]s (multi-page rings, DEV-3):
//! ring byte `o` lives at byte `o % 4096` of page `o / 4096`, so a ring of
//! `n` granted pages needs no contiguous mapping. Accesses that straddle a
//! page boundary are split; the header words are always in page 0.

use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

use hypercall_abi::ring::RingMemory;
use hypercall_abi::PAGE_SIZE;

use crate::ring::SharedPage;

const PAGE: usize = PAGE_SIZE as usize;

/// The pages of one ring, in ring order.
#[derive(Debug)]
pub struct RingPages {
    pages: Vec<SharedPage>,
}

impl RingPages {
    /// A ring over `pages` (at least one).
    pub fn new(pages: Vec<SharedPage>) -> RingPages {
        assert!(!pages.is_empty(), "a ring needs a page");
        RingPages { pages }
    }

    /// A ring over `pages`, which may be empty (only to hand pages back
    /// through [`Self::take_pages`]).
    pub fn new_or_empty(pages: Vec<SharedPage>) -> RingPages {
        RingPages { pages }
    }

    /// The pages back.
    pub fn into_pages(self) -> Vec<SharedPage> {
        self.pages
    }

    /// Takes the pages out, leaving the ring empty (every access then panics).
    pub fn take_pages(&mut self) -> Vec<SharedPage> {
        core::mem::take(&mut self.pages)
    }

    /// The pages.
    pub fn pages(&self) -> &[SharedPage] {
        &self.pages
    }
}

/// Splits `[offset, offset + len)` into per-page pieces:
/// `(page, offset in page, offset in the caller's buffer, length)`.
fn pieces(offset: usize, len: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let mut done = 0usize;
    core::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let at = offset + done;
        let in_page = at % PAGE;
        let n = (PAGE - in_page).min(len - done);
        let piece = (at / PAGE, in_page, done, n);
        done += n;
        Some(piece)
    })
}

impl RingMemory for RingPages {
    fn len(&self) -> usize {
        self.pages.len() * PAGE
    }

    fn read_u32(&self, offset: usize) -> u32 {
        let page = &self.pages[offset / PAGE];
        page.read_u32(offset % PAGE)
    }

    fn write_u32(&mut self, offset: usize, value: u32) {
        let page = &mut self.pages[offset / PAGE];
        page.write_u32(offset % PAGE, value);
    }

    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        for (page, at, from, n) in pieces(offset, out.len()) {
            self.pages[page].read(at, &mut out[from..from + n]);
        }
    }

    fn write_bytes(&mut self, offset: usize, data: &[u8]) {
        for (page, at, from, n) in pieces(offset, data.len()) {
            self.pages[page].write(at, &data[from..from + n]);
        }
    }

    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn accesses_split_at_page_boundaries() {
        let v: std::vec::Vec<_> = pieces(4000, 200).collect();
        assert_eq!(v, [(0, 4000, 0, 96), (1, 0, 96, 104)]);
        let v: std::vec::Vec<_> = pieces(8192, 16).collect();
        assert_eq!(v, [(2, 0, 0, 16)]);
        let v: std::vec::Vec<_> = pieces(100, 3 * 4096).collect();
        assert_eq!(v.len(), 4);
        assert_eq!(v.iter().map(|p| p.3).sum::<usize>(), 3 * 4096);
        // Pieces are contiguous in the buffer and never cross a page.
        for w in v.windows(2) {
            assert_eq!(w[0].2 + w[0].3, w[1].2);
            assert_eq!(w[1].1, 0);
        }
        assert!(v.iter().all(|p| p.1 + p.3 <= 4096));
        assert_eq!(pieces(5, 0).count(), 0);
    }
}
