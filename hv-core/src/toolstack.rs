//! The portable parts of the toolstack operations (SPEC.md §16, TS-*):
//! checking `DOMCTL_CREATE` arguments, and [`StreamRing`], the byte ring that
//! keeps each domain's console output and hv-core's own log as a stream with
//! absolute positions (so a reader notices lost output). Host-tested; the
//! hypercall handlers are in `hypercall::domctl`, the domain steps in
//! `domain::create`.
//!
//! # Invariants
//! - A `StreamRing` holds exactly the last `min(end, capacity)` bytes written:
//!   stream position `p` (for `end - held <= p < end`) is at `buf[p % capacity]`.

use hypercall_abi::domctl::{
    check_domain_name, ConsoleChunk, DomctlCreate, DEFAULT_WEIGHT, DOMAIN_VCPUS_MAX,
};
use hypercall_abi::Errno;

/// A validated `DomctlCreate` (TS-2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateArgs {
    pub name: heapless::String<32>,
    pub max_pages: u64,
    pub vcpus: u32,
    pub weight: u32,
    pub cap_percent: u32,
}

/// Checks a copied-in `DomctlCreate` (TS-2): everything but the name's
/// uniqueness and the free memory, which need the live tables.
pub fn check_create(arg: &DomctlCreate) -> Result<CreateArgs, Errno> {
    if arg.reserved != 0 {
        return Err(Errno::EINVAL);
    }
    let len = usize::try_from(arg.name_len).map_err(|_| Errno::EINVAL)?;
    let raw = arg.name.get(..len).ok_or(Errno::EINVAL)?;
    let name = check_domain_name(raw).map_err(|_| Errno::EINVAL)?;
    if !(1..=DOMAIN_VCPUS_MAX).contains(&arg.vcpus) {
        return Err(Errno::EINVAL);
    }
    let weight = match arg.weight {
        0 => DEFAULT_WEIGHT,
        w @ 1..=65535 => w,
        _ => return Err(Errno::EINVAL),
    };
    if arg.cap_percent > 100 || arg.max_pages == 0 {
        return Err(Errno::EINVAL);
    }
    let mut owned = heapless::String::new();
    owned.push_str(name).map_err(|_| Errno::EINVAL)?;
    Ok(CreateArgs {
        name: owned,
        max_pages: arg.max_pages,
        vcpus: arg.vcpus,
        weight,
        cap_percent: arg.cap_percent,
    })
}

/// The last `capacity` bytes of a byte stream, addressed by stream position.
pub struct StreamRing<S> {
    buf: S,
    /// Bytes ever written (the stream's end position).
    end: u64,
}

impl<S: AsRef<[u8]> + AsMut<[u8]>> StreamRing<S> {
    /// An empty stream kept in `buf` (its length is the capacity).
    pub const fn new(buf: S) -> Self {
        StreamRing { buf, end: 0 }
    }

    /// The stream's end: bytes ever written.
    pub fn end(&self) -> u64 {
        self.end
    }

    fn capacity(&self) -> u64 {
        self.buf.as_ref().len() as u64
    }

    /// Appends `bytes`, overwriting the oldest when full.
    pub fn write(&mut self, bytes: &[u8]) {
        let cap = self.capacity();
        if cap == 0 {
            self.end = self.end.wrapping_add(bytes.len() as u64);
            return;
        }
        // Only the last `cap` bytes of a long write can be kept.
        let skip = bytes.len().saturating_sub(cap as usize);
        self.end = self.end.wrapping_add(skip as u64);
        let buf = self.buf.as_mut();
        for &b in bytes.iter().skip(skip) {
            if let Some(slot) = buf.get_mut((self.end % cap) as usize) {
                *slot = b;
            }
            self.end = self.end.wrapping_add(1);
        }
    }

    /// Copies bytes from stream position `offset` (or from the oldest kept
    /// byte, if `offset` was overwritten) into `out`. `offset > end`: `EINVAL`.
    pub fn read(&self, offset: u64, out: &mut [u8]) -> Result<ConsoleChunk, Errno> {
        if offset > self.end {
            return Err(Errno::EINVAL);
        }
        let cap = self.capacity();
        let oldest = self.end.saturating_sub(cap);
        let start = offset.max(oldest);
        let len = (self.end - start).min(out.len() as u64);
        let buf = self.buf.as_ref();
        for (i, slot) in out.iter_mut().take(len as usize).enumerate() {
            let pos = start + i as u64;
            *slot = buf.get((pos % cap.max(1)) as usize).copied().unwrap_or(0);
        }
        Ok(ConsoleChunk {
            start,
            len,
            end: self.end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn create(name: &[u8]) -> DomctlCreate {
        let mut arg = DomctlCreate {
            max_pages: 256,
            vcpus: 1,
            name_len: name.len() as u32,
            ..DomctlCreate::default()
        };
        arg.name[..name.len().min(32)].copy_from_slice(&name[..name.len().min(32)]);
        arg
    }

    #[test]
    fn create_arguments() {
        let ok = check_create(&create(b"guest-1")).unwrap();
        assert_eq!(ok.name.as_str(), "guest-1");
        assert_eq!(ok.weight, DEFAULT_WEIGHT);
        assert_eq!(check_create(&create(b"")), Err(Errno::EINVAL));
        assert_eq!(check_create(&create(b"bad name")), Err(Errno::EINVAL));
        assert_eq!(check_create(&create(&[0xff, 0xfe])), Err(Errno::EINVAL));
        assert_eq!(check_create(&create(&[b'a'; 32])), Err(Errno::EINVAL));
        let mut long_len = create(b"a");
        long_len.name_len = 33;
        assert_eq!(check_create(&long_len), Err(Errno::EINVAL));
        long_len.name_len = u32::MAX;
        assert_eq!(check_create(&long_len), Err(Errno::EINVAL));
        for (vcpus, ok) in [(0, false), (1, true), (32, true), (33, false)] {
            let mut a = create(b"v");
            a.vcpus = vcpus;
            assert_eq!(check_create(&a).is_ok(), ok, "vcpus {vcpus}");
        }
        let mut a = create(b"w");
        a.weight = 70000;
        assert_eq!(check_create(&a), Err(Errno::EINVAL));
        a.weight = 7;
        assert_eq!(check_create(&a).unwrap().weight, 7);
        a.cap_percent = 101;
        assert_eq!(check_create(&a), Err(Errno::EINVAL));
        a.cap_percent = 100;
        a.max_pages = 0;
        assert_eq!(check_create(&a), Err(Errno::EINVAL));
        a.max_pages = 1;
        a.reserved = 1;
        assert_eq!(check_create(&a), Err(Errno::EINVAL));
    }

    #[test]
    fn ring_keeps_the_tail_and_reports_loss() {
        let mut r = StreamRing::new([0u8; 8]);
        let mut out = [0u8; 16];
        assert_eq!(
            r.read(0, &mut out),
            Ok(ConsoleChunk {
                start: 0,
                len: 0,
                end: 0
            })
        );
        r.write(b"hello");
        let c = r.read(0, &mut out).unwrap();
        assert_eq!((c.start, c.len, c.end), (0, 5, 5));
        assert_eq!(&out[..5], b"hello");
        let c = r.read(3, &mut out).unwrap();
        assert_eq!((c.start, c.len), (3, 2));
        assert_eq!(&out[..2], b"lo");
        r.write(b" world");
        // 11 bytes written, 8 kept: "lo world".
        let c = r.read(0, &mut out).unwrap();
        assert_eq!((c.start, c.len, c.end), (3, 8, 11));
        assert_eq!(&out[..8], b"lo world");
        assert_eq!(r.read(12, &mut out), Err(Errno::EINVAL));
        let c = r.read(11, &mut out).unwrap();
        assert_eq!((c.start, c.len, c.end), (11, 0, 11));
        // A short buffer gets the oldest bytes first.
        let mut small = [0u8; 3];
        let c = r.read(5, &mut small).unwrap();
        assert_eq!((c.start, c.len), (5, 3));
        assert_eq!(&small, b" wo");
        // A write longer than the ring keeps its tail.
        r.write(b"0123456789abcdef");
        let c = r.read(0, &mut out).unwrap();
        assert_eq!((c.start, c.len, c.end), (19, 8, 27));
        assert_eq!(&out[..8], b"89abcdef");
    }

    #[test]
    fn empty_ring_counts_but_keeps_nothing() {
        let mut r = StreamRing::new([0u8; 0]);
        r.write(b"abc");
        let mut out = [0u8; 4];
        assert_eq!(
            r.read(1, &mut out),
            Ok(ConsoleChunk {
                start: 3,
                len: 0,
                end: 3
            })
        );
    }

    proptest! {
        #[test]
        fn ring_matches_a_model(writes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20),
                                offset_frac in 0.0f64..=1.0, out_len in 0usize..64) {
            let mut r = StreamRing::new(alloc::vec![0u8; 32]);
            let mut all: Vec<u8> = Vec::new();
            for w in &writes {
                r.write(w);
                all.extend_from_slice(w);
            }
            let end = all.len() as u64;
            let offset = (end as f64 * offset_frac) as u64;
            let mut out = vec![0u8; out_len];
            let c = r.read(offset, &mut out).unwrap();
            prop_assert_eq!(c.end, end);
            prop_assert_eq!(c.start, offset.max(end.saturating_sub(32)));
            prop_assert_eq!(c.len, (end - c.start).min(out_len as u64));
            let s = c.start as usize;
            prop_assert_eq!(&out[..c.len as usize], &all[s..s + c.len as usize]);
        }
    }
}
