//! NVMe queue pairs (NVMe 1.4 §4.1, §4.6): a submission queue of 64-byte
//! commands the driver fills and a completion queue of 16-byte entries the
//! controller fills, each in one DMA page, with the index arithmetic,
//! phase tags and doorbell values.
//!
//! Completion entries are device data: an entry is accepted only if its
//! command id is in flight on this pair and its submission-queue head lies
//! in the queue; anything else is a controller fault.
//!
//! # Invariants
//! - The submission queue is full when `tail + 1 == head` (mod size): one
//!   slot always stays empty.
//! - `in_flight[cid]` holds exactly the commands submitted and not completed.
//! - The completion head advances only past accepted entries; the expected
//!   phase flips each time it wraps.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

use super::command::{Command, Completion};
use crate::dma::{DmaAllocator, DmaError, DmaPage, PAGE_SIZE};

/// Bytes per submission entry.
pub const SQE_SIZE: usize = 64;
/// Bytes per completion entry.
pub const CQE_SIZE: usize = 16;
/// Largest queue in one page of submission entries.
pub const MAX_ENTRIES: u16 = (PAGE_SIZE / SQE_SIZE) as u16;

/// What went wrong on a queue pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The submission queue is full.
    Full,
    /// Size below 2 or above [`MAX_ENTRIES`].
    BadSize,
    /// No DMA memory.
    NoMemory(DmaError),
    /// The controller completed a command id that is not in flight.
    BadCommandId(u16),
    /// The controller reported a submission head outside the queue.
    BadHead(u16),
}

/// One submission/completion queue pair.
pub struct QueuePair<P: DmaPage> {
    id: u16,
    size: u16,
    sq: P,
    cq: P,
    sq_tail: u16,
    sq_head: u16,
    cq_head: u16,
    phase: bool,
    in_flight: Vec<bool>,
    free_cids: Vec<u16>,
}

impl<P: DmaPage> QueuePair<P> {
    /// A pair with queue id `id` of `size` entries (zeroed pages).
    pub fn new<A: DmaAllocator<Page = P>>(
        alloc: &mut A,
        id: u16,
        size: u16,
    ) -> Result<Self, QueueError> {
        if !(2..=MAX_ENTRIES).contains(&size) {
            return Err(QueueError::BadSize);
        }
        let sq = alloc.alloc_page().map_err(QueueError::NoMemory)?;
        let cq = alloc.alloc_page().map_err(QueueError::NoMemory)?;
        Ok(Self {
            id,
            size,
            sq,
            cq,
            sq_tail: 0,
            sq_head: 0,
            cq_head: 0,
            phase: true,
            in_flight: vec![false; usize::from(size)],
            // Command ids 0 .. size-1; one slot of the ring always stays empty.
            free_cids: (0..size - 1).rev().collect(),
        })
    }

    /// The queue id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Entries per queue.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Device addresses of the submission and completion queues.
    pub fn addresses(&self) -> (u64, u64) {
        (self.sq.device_addr(), self.cq.device_addr())
    }

    /// Commands in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.iter().filter(|&&f| f).count()
    }

    /// Whether a command can be submitted now.
    pub fn has_room(&self) -> bool {
        !self.free_cids.is_empty() && (self.sq_tail + 1) % self.size != self.sq_head
    }

    /// The command id the next [`Self::submit`] will use.
    pub fn next_cid(&self) -> u16 {
        self.free_cids.last().copied().unwrap_or(0)
    }

    /// Writes `cmd` (its command id set here) at the tail; returns the
    /// command id and the new tail, which the caller writes to the
    /// submission doorbell.
    pub fn submit(&mut self, mut cmd: Command) -> Result<(u16, u16), QueueError> {
        if !self.has_room() {
            return Err(QueueError::Full);
        }
        let cid = self.free_cids.pop().ok_or(QueueError::Full)?;
        cmd.set_cid(cid);
        let at = usize::from(self.sq_tail) * SQE_SIZE;
        for (i, dword) in cmd.dwords.iter().enumerate() {
            self.sq.write_u32(at + 4 * i, *dword);
        }
        self.in_flight[usize::from(cid)] = true;
        self.sq_tail = (self.sq_tail + 1) % self.size;
        // The entry must be in memory before the doorbell write that the
        // caller does next.
        fence(Ordering::Release);
        Ok((cid, self.sq_tail))
    }

    /// The next completion, if the controller posted one; returns it and
    /// the new completion head for the doorbell.
    pub fn poll(&mut self) -> Result<Option<(Completion, u16)>, QueueError> {
        let at = usize::from(self.cq_head) * CQE_SIZE;
        let status = self.cq.read_u32(at + 12);
        if ((status >> 16) & 1 == 1) != self.phase {
            return Ok(None);
        }
        // The rest of the entry is read after its phase tag.
        fence(Ordering::Acquire);
        let completion = Completion {
            result: self.cq.read_u32(at),
            sq_head: self.cq.read_u16(at + 8),
            sq_id: self.cq.read_u16(at + 10),
            cid: status as u16,
            status: (status >> 17) as u16,
        };
        if completion.sq_head >= self.size {
            return Err(QueueError::BadHead(completion.sq_head));
        }
        let cid = completion.cid;
        match self.in_flight.get_mut(usize::from(cid)) {
            Some(flag) if *flag && completion.sq_id == self.id => *flag = false,
            _ => return Err(QueueError::BadCommandId(cid)),
        }
        self.free_cids.push(cid);
        self.sq_head = completion.sq_head;
        self.cq_head += 1;
        if self.cq_head == self.size {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        Ok(Some((completion, self.cq_head)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimMemory;
    use proptest::prelude::*;

    /// The controller's side: consumes entries up to a tail, posts completions.
    struct Ctrl {
        mem: SimMemory,
        sq: u64,
        cq: u64,
        size: u16,
        head: u16,
        cq_tail: u16,
        phase: bool,
    }

    impl Ctrl {
        fn take(&mut self, tail: u16) -> Vec<u16> {
            let mut cids = Vec::new();
            while self.head != tail {
                let dw0 = self.mem.read_u32(self.sq + u64::from(self.head) * 64);
                cids.push((dw0 >> 16) as u16);
                self.head = (self.head + 1) % self.size;
            }
            cids
        }

        fn complete(&mut self, cid: u16, sq_id: u16) {
            let at = self.cq + u64::from(self.cq_tail) * 16;
            self.mem.write_u32(at, 0xabc);
            self.mem.write_u16(at + 8, self.head);
            self.mem.write_u16(at + 10, sq_id);
            self.mem
                .write_u32(at + 12, u32::from(cid) | (u32::from(self.phase) << 16));
            self.cq_tail += 1;
            if self.cq_tail == self.size {
                self.cq_tail = 0;
                self.phase = !self.phase;
            }
        }
    }

    fn pair(size: u16) -> (QueuePair<crate::sim::SimPage>, Ctrl) {
        let mem = SimMemory::new();
        let q = QueuePair::new(&mut mem.allocator(), 1, size).unwrap();
        let (sq, cq) = q.addresses();
        (
            q,
            Ctrl {
                mem,
                sq,
                cq,
                size,
                head: 0,
                cq_tail: 0,
                phase: true,
            },
        )
    }

    #[test]
    fn full_queue_keeps_one_slot_empty() {
        let (mut q, _) = pair(4);
        for _ in 0..3 {
            q.submit(Command::new(0x02)).unwrap();
        }
        assert_eq!(q.submit(Command::new(0x02)), Err(QueueError::Full));
        assert_eq!(q.in_flight(), 3);
        assert!(matches!(
            QueuePair::<crate::sim::SimPage>::new(&mut SimMemory::new().allocator(), 1, 65),
            Err(QueueError::BadSize)
        ));
    }

    #[test]
    fn lies_are_refused() {
        let (mut q, mut c) = pair(4);
        let (cid, tail) = q.submit(Command::new(0x02)).unwrap();
        assert_eq!(c.take(tail), [cid]);
        c.complete(cid + 1, 1);
        assert_eq!(q.poll(), Err(QueueError::BadCommandId(cid + 1)));
        let (mut q, mut c) = pair(4);
        let (cid, tail) = q.submit(Command::new(0x02)).unwrap();
        c.take(tail);
        c.complete(cid, 2);
        assert_eq!(
            q.poll(),
            Err(QueueError::BadCommandId(cid)),
            "other queue's id"
        );
        let (mut q, mut c) = pair(4);
        let (cid, tail) = q.submit(Command::new(0x02)).unwrap();
        c.take(tail);
        c.head = 9;
        c.complete(cid, 1);
        assert_eq!(q.poll(), Err(QueueError::BadHead(9)));
    }

    proptest! {
        /// Random submit/complete interleavings, completions in any order,
        /// over many wraps: every command completes exactly once with its
        /// own id, and the phase tag never lets a stale entry through.
        #[test]
        fn pairs_survive_any_order(ops in proptest::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 1..600)) {
            let (mut q, mut c) = pair(8);
            let mut at_ctrl: Vec<u16> = Vec::new();
            for (submit, pick) in ops {
                if submit {
                    match q.submit(Command::new(0x01)) {
                        Ok((_, tail)) => at_ctrl.extend(c.take(tail)),
                        Err(QueueError::Full) => prop_assert!(q.in_flight() == 7 || !q.has_room()),
                        Err(e) => prop_assert!(false, "{:?}", e),
                    }
                } else if !at_ctrl.is_empty() {
                    let cid = at_ctrl.remove(pick.index(at_ctrl.len()));
                    c.complete(cid, 1);
                    let (done, head) = q.poll().unwrap().expect("posted");
                    prop_assert_eq!(done.cid, cid);
                    prop_assert_eq!(done.result, 0xabc);
                    prop_assert_eq!(head, c.cq_tail);
                }
                prop_assert_eq!(q.poll(), Ok(None));
                prop_assert_eq!(q.in_flight(), at_ctrl.len());
            }
        }
    }
}
