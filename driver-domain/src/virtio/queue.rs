//! The split virtqueue (virtio 1.2 §2.7): descriptor table, available ring
//! and used ring, each in its own DMA page, driven from the driver's side.
//!
//! The driver keeps its own copy of everything it needs to free descriptors
//! (the free list and which heads are in flight), so nothing the device writes
//! is trusted: a used element is accepted only if it names a chain in flight,
//! and a used index that runs ahead of what was made available is a device
//! fault, not a reason to read stale elements.
//!
//! # Invariants
//! - Every descriptor is either on the free list or in exactly one in-flight
//!   chain; `num_free + sum(chain lengths) == size`.
//! - `avail_idx - last_used` (wrapping) is the number of chains in flight.
//! - Ring indices are written only after the entries they publish (a release
//!   fence between), and read before the entries they cover (an acquire fence).

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

use crate::dma::{DmaAllocator, DmaError, DmaPage, Segment};

/// Largest queue this driver sets up: each ring then fits one page.
pub const MAX_QUEUE_SIZE: u16 = 256;

/// Descriptor flag: the chain continues at `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const DESC_F_WRITE: u16 = 2;
/// Used-ring flag: the device asks not to be notified.
pub const USED_F_NO_NOTIFY: u16 = 1;

const DESC_SIZE: usize = 16;
const RING_HEADER: usize = 4;
const USED_ELEM_SIZE: usize = 8;

/// One buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Where it is.
    pub segment: Segment,
    /// Whether the device writes it (else reads it).
    pub device_writes: bool,
}

impl Buffer {
    /// A buffer the device reads.
    pub fn readable(segment: Segment) -> Buffer {
        Buffer {
            segment,
            device_writes: false,
        }
    }
    /// A buffer the device writes.
    pub fn writable(segment: Segment) -> Buffer {
        Buffer {
            segment,
            device_writes: true,
        }
    }
}

/// A chain the device has finished with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    /// The chain's head descriptor (what [`SplitQueue::push`] returned).
    pub head: u16,
    /// Bytes the device says it wrote.
    pub len: u32,
}

/// What went wrong with a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// Not enough free descriptors.
    Full,
    /// A chain needs at least one buffer.
    EmptyChain,
    /// The size is zero, not a power of two, or above [`MAX_QUEUE_SIZE`].
    BadSize,
    /// No DMA memory for the rings.
    NoMemory(DmaError),
    /// The device returned a head that is not in flight.
    BadUsedId(u32),
    /// The device's used index ran past what was made available.
    BadUsedIndex(u16),
}

/// The driver side of one split virtqueue.
pub struct SplitQueue<P: DmaPage> {
    size: u16,
    desc: P,
    avail: P,
    used: P,
    /// Free-list links, the driver's own copy.
    next: Vec<u16>,
    free_head: u16,
    num_free: u16,
    /// Chain length per head id; 0 when the id is not an in-flight head.
    chain_len: Vec<u16>,
    avail_idx: u16,
    last_used: u16,
}

impl<P: DmaPage> SplitQueue<P> {
    /// A queue of `size` descriptors with zeroed rings.
    pub fn new<A: DmaAllocator<Page = P>>(alloc: &mut A, size: u16) -> Result<Self, QueueError> {
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(QueueError::BadSize);
        }
        let desc = alloc.alloc_page().map_err(QueueError::NoMemory)?;
        let avail = alloc.alloc_page().map_err(QueueError::NoMemory)?;
        let used = alloc.alloc_page().map_err(QueueError::NoMemory)?;
        Ok(Self {
            size,
            desc,
            avail,
            used,
            next: (1..=size).collect(),
            free_head: 0,
            num_free: size,
            chain_len: vec![0; usize::from(size)],
            avail_idx: 0,
            last_used: 0,
        })
    }

    /// Descriptors in the queue.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Free descriptors.
    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// Chains in flight.
    pub fn in_flight(&self) -> u16 {
        self.avail_idx.wrapping_sub(self.last_used)
    }

    /// Device addresses of the descriptor table, available and used rings.
    pub fn addresses(&self) -> (u64, u64, u64) {
        (
            self.desc.device_addr(),
            self.avail.device_addr(),
            self.used.device_addr(),
        )
    }

    /// Writes a chain of `buffers` and makes it available; returns its head.
    /// The device sees it after the caller notifies (if [`Self::should_notify`]).
    pub fn push(&mut self, buffers: &[Buffer]) -> Result<u16, QueueError> {
        if buffers.is_empty() {
            return Err(QueueError::EmptyChain);
        }
        if buffers.len() > usize::from(self.num_free) {
            return Err(QueueError::Full);
        }
        let head = self.free_head;
        let mut id = head;
        for (i, buffer) in buffers.iter().enumerate() {
            let last = i + 1 == buffers.len();
            let next = self.next[usize::from(id)];
            let mut flags = if buffer.device_writes {
                DESC_F_WRITE
            } else {
                0
            };
            if !last {
                flags |= DESC_F_NEXT;
            }
            let at = usize::from(id) * DESC_SIZE;
            self.desc.write_u64(at, buffer.segment.addr);
            self.desc.write_u32(at + 8, buffer.segment.len);
            self.desc.write_u16(at + 12, flags);
            self.desc.write_u16(at + 14, if last { 0 } else { next });
            if !last {
                id = next;
            } else {
                self.free_head = next;
            }
        }
        self.num_free -= buffers.len() as u16;
        self.chain_len[usize::from(head)] = buffers.len() as u16;
        let slot = usize::from(self.avail_idx % self.size);
        self.avail.write_u16(RING_HEADER + 2 * slot, head);
        // The descriptors and the ring slot must be visible before the index
        // that publishes them (virtio 1.2 §2.7.13).
        fence(Ordering::Release);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.avail.write_u16(2, self.avail_idx);
        Ok(head)
    }

    /// Whether the device wants a notification for what was just made
    /// available. Call after [`Self::push`]; the full fence orders the index
    /// write before the flag read (§2.7.13.4).
    pub fn should_notify(&self) -> bool {
        fence(Ordering::SeqCst);
        self.used.read_u16(0) & USED_F_NO_NOTIFY == 0
    }

    /// Whether the device has finished a chain [`Self::pop_used`] has not
    /// returned yet (a peek at the used index: nothing is consumed).
    pub fn has_used(&self) -> bool {
        self.used.read_u16(2) != self.last_used
    }

    /// The next chain the device finished, if any; frees its descriptors.
    pub fn pop_used(&mut self) -> Result<Option<Used>, QueueError> {
        let device_idx = self.used.read_u16(2);
        if device_idx == self.last_used {
            return Ok(None);
        }
        if device_idx.wrapping_sub(self.last_used) > self.in_flight() {
            return Err(QueueError::BadUsedIndex(device_idx));
        }
        // The element is read after the index that covers it.
        fence(Ordering::Acquire);
        let slot = usize::from(self.last_used % self.size);
        let at = RING_HEADER + USED_ELEM_SIZE * slot;
        let id = self.used.read_u32(at);
        let len = self.used.read_u32(at + 4);
        let head = u16::try_from(id)
            .ok()
            .filter(|&h| h < self.size && self.chain_len[usize::from(h)] != 0)
            .ok_or(QueueError::BadUsedId(id))?;
        self.last_used = self.last_used.wrapping_add(1);
        self.free_chain(head);
        Ok(Some(Used { head, len }))
    }

    /// Puts the chain at `head` back on the free list, following the
    /// driver's own links (never the device-writable table).
    fn free_chain(&mut self, head: u16) {
        let count = core::mem::take(&mut self.chain_len[usize::from(head)]);
        let mut last = head;
        for _ in 1..count {
            last = self.next[usize::from(last)];
        }
        self.next[usize::from(last)] = self.free_head;
        self.free_head = head;
        self.num_free += count;
    }
}

#[cfg(test)]
pub(crate) mod device {
    //! The device side of a split queue over simulated memory, for tests.
    use super::*;
    use crate::sim::SimMemory;

    pub struct DeviceQueue {
        pub mem: SimMemory,
        pub size: u16,
        pub desc: u64,
        pub avail: u64,
        pub used: u64,
        pub last_avail: u16,
        pub used_idx: u16,
    }

    /// A chain as the device reads it.
    pub struct Chain {
        pub head: u16,
        pub buffers: Vec<(u64, u32, bool)>,
    }

    impl DeviceQueue {
        pub fn new(mem: SimMemory, size: u16, (desc, avail, used): (u64, u64, u64)) -> Self {
            Self {
                mem,
                size,
                desc,
                avail,
                used,
                last_avail: 0,
                used_idx: 0,
            }
        }

        /// The next available chain.
        pub fn pop_avail(&mut self) -> Option<Chain> {
            let idx = self.mem.read_u16(self.avail + 2);
            if idx == self.last_avail {
                return None;
            }
            let slot = u64::from(self.last_avail % self.size);
            let head = self.mem.read_u16(self.avail + 4 + 2 * slot);
            self.last_avail = self.last_avail.wrapping_add(1);
            let mut buffers = Vec::new();
            let mut id = head;
            loop {
                assert!(id < self.size, "descriptor {id} out of range");
                let at = self.desc + u64::from(id) * 16;
                let addr = self.mem.read_u64(at);
                let len = self.mem.read_u32(at + 8);
                let flags = self.mem.read_u16(at + 12);
                buffers.push((addr, len, flags & DESC_F_WRITE != 0));
                assert!(buffers.len() <= usize::from(self.size), "descriptor loop");
                if flags & DESC_F_NEXT == 0 {
                    break;
                }
                id = self.mem.read_u16(at + 14);
            }
            Some(Chain { head, buffers })
        }

        /// Returns `id` with `len` bytes written (no validation: tests use it
        /// to misbehave too).
        pub fn push_used(&mut self, id: u32, len: u32) {
            let slot = u64::from(self.used_idx % self.size);
            self.mem.write_u32(self.used + 4 + 8 * slot, id);
            self.mem.write_u32(self.used + 8 + 8 * slot, len);
            self.used_idx = self.used_idx.wrapping_add(1);
            self.mem.write_u16(self.used + 2, self.used_idx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::device::DeviceQueue;
    use super::*;
    use crate::sim::SimMemory;
    use proptest::prelude::*;

    fn seg(addr: u64, len: u32) -> Segment {
        Segment { addr, len }
    }

    fn setup(size: u16) -> (SplitQueue<crate::sim::SimPage>, DeviceQueue) {
        let mem = SimMemory::new();
        let q = SplitQueue::new(&mut mem.allocator(), size).unwrap();
        let dev = DeviceQueue::new(mem, size, q.addresses());
        (q, dev)
    }

    #[test]
    fn bad_sizes() {
        let mem = SimMemory::new();
        for size in [0, 3, 512] {
            assert!(matches!(
                SplitQueue::new(&mut mem.allocator(), size),
                Err(QueueError::BadSize)
            ));
        }
        mem.set_limit(2);
        assert!(matches!(
            SplitQueue::new(&mut mem.allocator(), 8),
            Err(QueueError::NoMemory(DmaError::OutOfMemory))
        ));
    }

    #[test]
    fn chain_reaches_the_device_and_comes_back() {
        let (mut q, mut dev) = setup(4);
        let head = q
            .push(&[
                Buffer::readable(seg(0x1000, 16)),
                Buffer::writable(seg(0x2000, 512)),
                Buffer::writable(seg(0x3000, 1)),
            ])
            .unwrap();
        assert_eq!(q.num_free(), 1);
        assert!(q.should_notify());
        let chain = dev.pop_avail().unwrap();
        assert_eq!(chain.head, head);
        assert_eq!(
            chain.buffers,
            [(0x1000, 16, false), (0x2000, 512, true), (0x3000, 1, true)]
        );
        assert!(dev.pop_avail().is_none());
        assert_eq!(
            q.push(&[Buffer::readable(seg(0, 1)); 2]),
            Err(QueueError::Full)
        );
        assert_eq!(q.pop_used(), Ok(None));
        dev.push_used(u32::from(head), 513);
        assert_eq!(q.pop_used(), Ok(Some(Used { head, len: 513 })));
        assert_eq!(q.num_free(), 4);
        assert_eq!(q.in_flight(), 0);
        assert_eq!(q.push(&[]), Err(QueueError::EmptyChain));
    }

    #[test]
    fn device_lies_are_refused() {
        let (mut q, mut dev) = setup(4);
        let head = q.push(&[Buffer::readable(seg(0x1000, 16))]).unwrap();
        dev.pop_avail().unwrap();
        dev.push_used(3, 0);
        assert_eq!(q.pop_used(), Err(QueueError::BadUsedId(3)), "not in flight");
        let (mut q, mut dev) = setup(4);
        q.push(&[Buffer::readable(seg(0x1000, 16))]).unwrap();
        dev.push_used(0x10000, 0);
        assert_eq!(q.pop_used(), Err(QueueError::BadUsedId(0x10000)));
        let (mut q, mut dev) = setup(4);
        q.push(&[Buffer::readable(seg(0x1000, 16))]).unwrap();
        dev.push_used(u32::from(head), 0);
        dev.push_used(u32::from(head), 0);
        assert_eq!(q.pop_used(), Err(QueueError::BadUsedIndex(2)), "ran ahead");
    }

    #[test]
    fn notification_suppression_is_honoured() {
        let (mut q, dev) = setup(4);
        q.push(&[Buffer::readable(seg(0x1000, 16))]).unwrap();
        dev.mem.write_u16(dev.used, USED_F_NO_NOTIFY);
        assert!(!q.should_notify());
    }

    proptest! {
        /// Random pushes and out-of-order completions over many wraps of the
        /// 16-bit indices: the device sees each chain exactly as pushed, the
        /// driver gets each head back once, and every descriptor comes back.
        #[test]
        fn chains_survive_any_completion_order(
            ops in proptest::collection::vec((1usize..5, any::<bool>(), any::<prop::sample::Index>()), 1..400)
        ) {
            let (mut q, mut dev) = setup(16);
            let mut device_held: Vec<(u16, usize)> = Vec::new();
            let mut expected: alloc::collections::BTreeMap<u16, Vec<(u64, u32, bool)>> = Default::default();
            let mut n = 0u64;
            for (len, complete, pick) in ops {
                if !complete {
                    let bufs: Vec<Buffer> = (0..len).map(|i| {
                        n += 1;
                        Buffer { segment: seg(n << 12, (i + 1) as u32), device_writes: n.is_multiple_of(3) }
                    }).collect();
                    match q.push(&bufs) {
                        Ok(head) => {
                            prop_assert!(!expected.contains_key(&head));
                            expected.insert(head, bufs.iter().map(|b| (b.segment.addr, b.segment.len, b.device_writes)).collect());
                            let chain = dev.pop_avail().unwrap();
                            prop_assert_eq!(chain.head, head);
                            prop_assert_eq!(&chain.buffers, &expected[&head]);
                            device_held.push((head, len));
                        }
                        Err(QueueError::Full) => prop_assert!(usize::from(q.num_free()) < len),
                        Err(e) => prop_assert!(false, "push: {:?}", e),
                    }
                } else if !device_held.is_empty() {
                    let (head, len) = device_held.remove(pick.index(device_held.len()));
                    dev.push_used(u32::from(head), len as u32);
                    prop_assert_eq!(q.pop_used(), Ok(Some(Used { head, len: len as u32 })));
                    expected.remove(&head);
                }
                let held: usize = device_held.iter().map(|&(_, l)| l).sum();
                prop_assert_eq!(usize::from(q.num_free()) + held, 16);
                prop_assert_eq!(usize::from(q.in_flight()), device_held.len());
            }
        }

        /// Whatever the device writes in the used ring, the driver never
        /// panics and never frees a descriptor twice.
        #[test]
        fn garbage_used_ring_is_harmless(writes in proptest::collection::vec((any::<u32>(), any::<u16>()), 1..50)) {
            let (mut q, dev) = setup(8);
            for i in 0..4u64 {
                q.push(&[Buffer::readable(seg(i << 12, 8))]).unwrap();
            }
            for (id, idx) in writes {
                dev.mem.write_u32(dev.used + 4 + 8 * u64::from(idx % 8), id);
                dev.mem.write_u16(dev.used + 2, idx);
                let _ = q.pop_used();
                prop_assert!(q.num_free() <= 8);
                prop_assert!(usize::from(q.num_free()) + usize::from(q.in_flight()) <= 8);
            }
        }
    }
}
