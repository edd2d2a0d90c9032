//! Physical Region Page entries (NVMe 1.4 §4.3): how a command names its
//! data. PRP1 holds the first page (with an offset); PRP2 holds the second
//! page when the data spans two, else the address of a PRP list holding
//! pages 2 .. n.
//!
//! A buffer is a list of [`Segment`]s; NVMe needs them to tile pages: only the
//! first may start inside a page, only the last may end inside one.

use heapless::Vec;

use crate::dma::{Segment, PAGE_SIZE};

/// Most pages a command may name (one PRP list page of entries + PRP1).
pub const MAX_PAGES: usize = PAGE_SIZE / 8 + 1;

const PAGE: u64 = PAGE_SIZE as u64;

/// Why a buffer cannot be expressed with PRPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrpError {
    /// No data, or an empty segment.
    Empty,
    /// A segment starts or ends inside a page where NVMe needs a boundary,
    /// or the first byte is not dword aligned.
    Misaligned,
    /// More pages than one PRP list holds.
    TooLarge,
}

/// The pages a buffer covers: the first with its offset, the rest page aligned.
pub fn pages(segments: &[Segment]) -> Result<Vec<u64, MAX_PAGES>, PrpError> {
    let mut out: Vec<u64, MAX_PAGES> = Vec::new();
    let last = segments.len().checked_sub(1).ok_or(PrpError::Empty)?;
    for (i, seg) in segments.iter().enumerate() {
        if seg.len == 0 {
            return Err(PrpError::Empty);
        }
        let end = seg
            .addr
            .checked_add(u64::from(seg.len))
            .ok_or(PrpError::Misaligned)?;
        if (i == 0 && seg.addr % 4 != 0)
            || (i > 0 && seg.addr % PAGE != 0)
            || (i < last && end % PAGE != 0)
        {
            return Err(PrpError::Misaligned);
        }
        let mut at = seg.addr;
        while at < end {
            out.push(at).map_err(|_| PrpError::TooLarge)?;
            at = (at & !(PAGE - 1)) + PAGE;
        }
    }
    Ok(out)
}

/// PRP1 and PRP2 for `pages`, writing the PRP list (if needed) with
/// `write_list(index, entry)` into the page at `list_addr`.
pub fn entries(
    pages: &[u64],
    list_addr: u64,
    mut write_list: impl FnMut(usize, u64),
) -> (u64, u64) {
    match pages {
        [] => (0, 0),
        [one] => (*one, 0),
        [first, second] => (*first, *second),
        [first, rest @ ..] => {
            for (i, &page) in rest.iter().enumerate() {
                write_list(i, page);
            }
            (*first, list_addr)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(addr: u64, len: u32) -> Segment {
        Segment { addr, len }
    }

    #[test]
    fn shapes() {
        assert_eq!(pages(&[seg(0x1200, 0x200)]).unwrap(), [0x1200]);
        assert_eq!(
            pages(&[seg(0x1e00, 0x400)]).unwrap(),
            [0x1e00, 0x2000],
            "crosses a page"
        );
        assert_eq!(
            pages(&[seg(0x1000, 0x1000), seg(0x9000, 0x800)]).unwrap(),
            [0x1000, 0x9000]
        );
        assert_eq!(
            pages(&[seg(0x1000, 0x800), seg(0x9000, 0x800)]),
            Err(PrpError::Misaligned),
            "hole"
        );
        assert_eq!(
            pages(&[seg(0x1000, 0x1000), seg(0x9100, 0x800)]),
            Err(PrpError::Misaligned)
        );
        assert_eq!(pages(&[seg(0x1002, 4)]), Err(PrpError::Misaligned), "dword");
        assert_eq!(pages(&[]), Err(PrpError::Empty));
        assert_eq!(pages(&[seg(0x1000, 0)]), Err(PrpError::Empty));
        assert_eq!(pages(&[seg(u64::MAX - 3, 8)]), Err(PrpError::Misaligned));
        let big = [seg(0, u32::MAX)];
        assert_eq!(pages(&big), Err(PrpError::TooLarge));
        let mut list = alloc::vec::Vec::new();
        assert_eq!(entries(&[0x1000], 0x7000, |_, _| panic!()), (0x1000, 0));
        assert_eq!(
            entries(&[0x1000, 0x3000], 0x7000, |_, _| panic!()),
            (0x1000, 0x3000)
        );
        assert_eq!(
            entries(&[0x1000, 0x3000, 0x5000], 0x7000, |i, e| list.push((i, e))),
            (0x1000, 0x7000)
        );
        assert_eq!(list, [(0, 0x3000), (1, 0x5000)]);
    }

    proptest! {
        /// Accepted buffers: the pages cover exactly the segments' bytes, the
        /// first may have an offset, the rest are page aligned.
        #[test]
        fn accepted_pages_cover_the_bytes(
            segs in proptest::collection::vec((0u64..64, 0u64..4096, 1u32..3 * 4096), 1..5)
        ) {
            let segments: alloc::vec::Vec<Segment> = segs.iter().map(|&(page, off, len)| seg(page * PAGE + off, len)).collect();
            if let Ok(pages) = pages(&segments) {
                let bytes: u64 = segments.iter().map(|s| u64::from(s.len)).sum();
                let first_off = segments[0].addr % PAGE;
                prop_assert_eq!(pages.len() as u64, (first_off + bytes).div_ceil(PAGE));
                prop_assert_eq!(pages[0], segments[0].addr);
                prop_assert!(pages[1..].iter().all(|p| p % PAGE == 0));
            }
        }
    }
}
