//! A [`BlockDevice`] kept busy with many requests at once: what the block
//! backend serves guests from on a real disk (SPEC.md DEV-6
//! `disk=virtio-blk|nvme`).
//!
//! The caller hands in *jobs* (a read or write of whole units over DMA
//! segments it owns, or a flush), each with a user tag and a buffer `B`
//! the queue keeps while the device may touch it. A job larger than one
//! device request is cut into *parts* of at most `max_segments` segments;
//! parts go to the device in job order as long as it takes them, so up to
//! its queue depth are in flight. [`DiskQueue::pump`] submits, takes the
//! device's completions (in any order) and checks deadlines; finished jobs
//! come out of [`DiskQueue::take_finished`] with their buffer, in the order
//! they finished, not the order they came in.
//!
//! # Flush (BLK-5, exact)
//! A flush job waits until every read or write job handed in *before* it
//! has finished (answered), then sends one device flush (virtio-blk
//! `VIRTIO_BLK_T_FLUSH`, NVMe FLUSH) and finishes only when the device
//! answered that. So a flush's success means: every write the caller had
//! been told finished before it handed in the flush, and every write
//! handed in before the flush, is on stable storage. Jobs handed in after a
//! flush may pass it.
//!
//! # Invariants
//! - Every job handed in finishes exactly once (success, the device's
//!   error, or [`BlockError::Timeout`]); none is lost or doubled.
//! - A buffer is returned only when no part of its job is still on the
//!   device: a job answered on a timeout keeps its buffer until the late
//!   completions arrive, then it comes out of [`DiskQueue::take_reclaimed`]
//!   (memory the device may still write is never reused).
//! - A completion whose tag is not in flight is a device fault: counted and
//!   ignored.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use crate::blk::{BlockDevice, BlockError, BlockOp, BlockRequest};
use crate::dma::Segment;

/// Bytes per addressing unit.
pub const UNIT: usize = 512;

/// A finished job.
#[derive(Debug, PartialEq, Eq)]
pub struct Finished<B> {
    /// The tag the job was handed in with.
    pub user: u64,
    /// What it was.
    pub op: BlockOp,
    /// Its outcome.
    pub result: Result<(), BlockError>,
    /// Its buffer, or `None` when the device still holds it (a timeout:
    /// see [`DiskQueue::take_reclaimed`]).
    pub buf: Option<B>,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Device requests submitted.
    pub submitted: u64,
    /// Device flushes that succeeded.
    pub flushes: u64,
    /// Most device requests in flight at once.
    pub max_in_flight: usize,
    /// Completions for no request in flight.
    pub faults: u64,
    /// Jobs answered with a timeout.
    pub timeouts: u64,
}

struct Part {
    sector: u64,
    segments: Vec<Segment>,
}

struct Job<B> {
    user: u64,
    op: BlockOp,
    /// Parts not yet on the device.
    unsent: VecDeque<Part>,
    /// Parts on the device.
    on_device: usize,
    result: Result<(), BlockError>,
    buf: Option<B>,
    /// Already answered (timeout): only waiting for the device to let go.
    answered: bool,
}

impl<B> Job<B> {
    fn done(&self) -> bool {
        self.unsent.is_empty() && self.on_device == 0
    }
}

/// A block device with a queue of jobs in front of it.
pub struct DiskQueue<B> {
    dev: Box<dyn BlockDevice>,
    now: Box<dyn FnMut() -> u64>,
    timeout: u64,
    /// Jobs by sequence number (hand-in order).
    jobs: BTreeMap<u64, Job<B>>,
    next_seq: u64,
    /// Device tag → (job sequence, submission time).
    in_flight: BTreeMap<u64, (u64, u64)>,
    next_tag: u64,
    finished: VecDeque<Finished<B>>,
    reclaimed: Vec<(u64, B)>,
    /// Counters.
    pub stats: QueueStats,
}

impl<B> core::fmt::Debug for DiskQueue<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "DiskQueue({} units, {} jobs, {} on the device)",
            self.units(),
            self.jobs.len(),
            self.in_flight.len()
        )
    }
}

impl<B> DiskQueue<B> {
    /// Puts a queue in front of `dev` (nothing in flight). `now` reads a
    /// clock; a device request not finished `timeout` ticks after it was
    /// submitted fails its job with [`BlockError::Timeout`]. The device must
    /// have 512-byte sectors.
    pub fn new(
        dev: Box<dyn BlockDevice>,
        now: Box<dyn FnMut() -> u64>,
        timeout: u64,
    ) -> Result<Self, BlockError> {
        if dev.info().sector_size as usize != UNIT {
            return Err(BlockError::Unsupported);
        }
        Ok(DiskQueue {
            dev,
            now,
            timeout,
            jobs: BTreeMap::new(),
            next_seq: 0,
            in_flight: BTreeMap::new(),
            next_tag: 0,
            finished: VecDeque::new(),
            reclaimed: Vec::new(),
            stats: QueueStats::default(),
        })
    }

    /// Capacity in 512-byte units.
    pub fn units(&self) -> u64 {
        self.dev.info().sectors
    }

    /// Most segments in one device request.
    pub fn max_segments(&self) -> usize {
        usize::from(self.dev.info().max_segments.max(1))
    }

    /// Jobs handed in and not yet finished (answered ones waiting for the
    /// device to let go of their buffer are not counted).
    pub fn pending(&self) -> usize {
        self.jobs.values().filter(|j| !j.answered).count()
    }

    /// Whether a job of one of `users` is still queued or on the device
    /// (answered on a timeout included: the device may still reach its
    /// memory).
    pub fn holds_any(&self, users: &alloc::collections::BTreeSet<u64>) -> bool {
        self.jobs.values().any(|j| users.contains(&j.user))
    }

    /// Device requests in flight.
    pub fn on_device(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether nothing is queued, on the device or waiting to be taken.
    pub fn is_idle(&self) -> bool {
        self.jobs.is_empty() && self.finished.is_empty() && self.reclaimed.is_empty()
    }

    /// Hands in a read or write of the units `segments` carry (each a whole
    /// number of units) at `sector`. Refused at once, with nothing queued and
    /// `buf` handed back, if the layout or range is bad.
    pub fn submit(
        &mut self,
        user: u64,
        op: BlockOp,
        sector: u64,
        segments: &[Segment],
        buf: B,
    ) -> Result<(), (BlockError, B)> {
        if op == BlockOp::Flush {
            return Err((BlockError::BadLayout, buf));
        }
        if segments.is_empty()
            || segments
                .iter()
                .any(|s| s.len == 0 || !(s.len as usize).is_multiple_of(UNIT))
        {
            return Err((BlockError::BadLayout, buf));
        }
        let units: u64 = segments
            .iter()
            .map(|s| u64::from(s.len) / UNIT as u64)
            .sum();
        match sector.checked_add(units) {
            Some(end) if end <= self.units() => {}
            _ => return Err((BlockError::OutOfRange, buf)),
        }
        let mut unsent = VecDeque::new();
        let mut at = sector;
        for chunk in segments.chunks(self.max_segments()) {
            unsent.push_back(Part {
                sector: at,
                segments: chunk.to_vec(),
            });
            at += chunk
                .iter()
                .map(|s| u64::from(s.len) / UNIT as u64)
                .sum::<u64>();
        }
        self.add(user, op, unsent, buf);
        Ok(())
    }

    /// Hands in a flush (see the module documentation for what it waits for).
    pub fn flush(&mut self, user: u64, buf: B) {
        let part = Part {
            sector: 0,
            segments: Vec::new(),
        };
        self.add(user, BlockOp::Flush, VecDeque::from([part]), buf);
    }

    fn add(&mut self, user: u64, op: BlockOp, unsent: VecDeque<Part>, buf: B) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.jobs.insert(
            seq,
            Job {
                user,
                op,
                unsent,
                on_device: 0,
                result: Ok(()),
                buf: Some(buf),
                answered: false,
            },
        );
    }

    /// Moves everything along: takes completions, submits what the device
    /// takes, answers jobs past their deadline. Returns whether anything
    /// changed.
    pub fn pump(&mut self) -> bool {
        let mut progress = false;
        while let Some(done) = self.dev.poll() {
            progress = true;
            let Some((seq, _)) = self.in_flight.remove(&done.tag) else {
                self.stats.faults += 1;
                continue;
            };
            let Some(job) = self.jobs.get_mut(&seq) else {
                self.stats.faults += 1;
                continue;
            };
            job.on_device -= 1;
            if let Err(e) = done.result {
                if job.result.is_ok() {
                    job.result = Err(e);
                }
                // The rest of a failed job is not worth sending.
                job.unsent.clear();
            } else if job.op == BlockOp::Flush {
                self.stats.flushes += 1;
            }
            self.retire(seq);
        }
        progress |= self.submit_ready();
        progress |= self.check_deadlines();
        progress
    }

    /// Finishes job `seq` if nothing of it is left.
    fn retire(&mut self, seq: u64) {
        if !self.jobs.get(&seq).is_some_and(Job::done) {
            return;
        }
        let Some(job) = self.jobs.remove(&seq) else {
            return;
        };
        if job.answered {
            self.reclaimed.extend(job.buf.map(|b| (job.user, b)));
        } else {
            self.finished.push_back(Finished {
                user: job.user,
                op: job.op,
                result: job.result,
                buf: job.buf,
            });
        }
    }

    /// Whether a flush handed in as `seq` may go to the device: every read
    /// or write before it was answered.
    fn barrier_clear(&self, seq: u64) -> bool {
        !self
            .jobs
            .range(..seq)
            .any(|(_, j)| j.op != BlockOp::Flush && !j.answered)
    }

    /// Submits parts in hand-in order until the device is full.
    fn submit_ready(&mut self) -> bool {
        let mut progress = false;
        let seqs: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.unsent.is_empty())
            .map(|(&s, _)| s)
            .collect();
        for seq in seqs {
            let flush = self.jobs.get(&seq).is_some_and(|j| j.op == BlockOp::Flush);
            if flush && !self.barrier_clear(seq) {
                continue;
            }
            while let Some(job) = self.jobs.get_mut(&seq) {
                let Some(part) = job.unsent.front() else {
                    break;
                };
                let tag = self.next_tag;
                let req = BlockRequest {
                    op: job.op,
                    sector: part.sector,
                    segments: &part.segments,
                    tag,
                };
                match self.dev.submit(&req) {
                    Ok(()) => {
                        self.next_tag = self.next_tag.wrapping_add(1);
                        job.unsent.pop_front();
                        job.on_device += 1;
                        let at = (self.now)();
                        self.in_flight.insert(tag, (seq, at));
                        self.stats.submitted += 1;
                        self.stats.max_in_flight =
                            self.stats.max_in_flight.max(self.in_flight.len());
                        progress = true;
                    }
                    Err(BlockError::Busy) => return progress,
                    Err(e) => {
                        if job.result.is_ok() {
                            job.result = Err(e);
                        }
                        job.unsent.clear();
                        self.retire(seq);
                        progress = true;
                        break;
                    }
                }
            }
        }
        progress
    }

    /// Answers every job with a device request past its deadline.
    fn check_deadlines(&mut self) -> bool {
        let now = (self.now)();
        let late: Vec<u64> = self
            .in_flight
            .values()
            .filter(|(_, at)| now.wrapping_sub(*at) > self.timeout)
            .map(|&(seq, _)| seq)
            .collect();
        let mut progress = false;
        for seq in late {
            let Some(job) = self.jobs.get_mut(&seq) else {
                continue;
            };
            if job.answered {
                continue;
            }
            job.answered = true;
            job.unsent.clear();
            self.stats.timeouts += 1;
            self.finished.push_back(Finished {
                user: job.user,
                op: job.op,
                result: Err(BlockError::Timeout),
                buf: None,
            });
            progress = true;
        }
        progress
    }

    /// The next finished job.
    pub fn take_finished(&mut self) -> Option<Finished<B>> {
        self.finished.pop_front()
    }

    /// Timed-out jobs the device has since let go of: their user tags and
    /// buffers.
    pub fn take_reclaimed(&mut self) -> Vec<(u64, B)> {
        core::mem::take(&mut self.reclaimed)
    }

    /// Runs one job to its end with nothing else queued, pumping until it
    /// finished (bounded by the timeout). For start-up reads (a GPT).
    pub fn run_alone(
        &mut self,
        op: BlockOp,
        sector: u64,
        segments: &[Segment],
        buf: B,
    ) -> Result<B, Option<BlockError>> {
        if !self.jobs.is_empty() {
            return Err(Some(BlockError::Busy));
        }
        match op {
            BlockOp::Flush => self.flush(u64::MAX, buf),
            _ => self
                .submit(u64::MAX, op, sector, segments, buf)
                .map_err(|(e, _)| Some(e))?,
        }
        loop {
            self.pump();
            if let Some(f) = self.take_finished() {
                return match (f.result, f.buf) {
                    (Ok(()), Some(b)) => Ok(b),
                    (Err(e), _) => Err(Some(e)),
                    (Ok(()), None) => Err(None),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::rc::Rc;
    use core::cell::{Cell, RefCell};

    use proptest::prelude::*;

    use super::*;
    use crate::blk::{validate, BlockCompletion, BlockInfo};

    /// What the fake device saw.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Event {
        Write { sector: u64, units: u64 },
        Read { sector: u64, units: u64 },
        Flush,
    }

    /// Shared state of the fake device: requests on it complete when the
    /// test says so, in any order.
    #[derive(Default)]
    struct Model {
        /// (tag, op, sector, units) on the device.
        on_device: Vec<(u64, BlockOp, u64, u64)>,
        /// Completions released but not yet polled.
        ready: VecDeque<BlockCompletion>,
        seen: Vec<Event>,
        /// Units written and completed, not yet flushed.
        volatile: Vec<(u64, u64)>,
        /// What each flush on the device will make durable: the writes
        /// completed when it was submitted.
        flush_covers: BTreeMap<u64, Vec<(u64, u64)>>,
        /// Units on stable storage.
        durable: Vec<(u64, u64)>,
        depth: usize,
        fail_sector: Option<u64>,
    }

    struct FakeDevice {
        info: BlockInfo,
        model: Rc<RefCell<Model>>,
    }

    impl BlockDevice for FakeDevice {
        fn info(&self) -> BlockInfo {
            self.info
        }

        fn submit(&mut self, req: &BlockRequest<'_>) -> Result<(), BlockError> {
            let units = validate(&self.info, req)?;
            let mut m = self.model.borrow_mut();
            if m.on_device.len() >= m.depth {
                return Err(BlockError::Busy);
            }
            m.seen.push(match req.op {
                BlockOp::Read => Event::Read {
                    sector: req.sector,
                    units,
                },
                BlockOp::Write => Event::Write {
                    sector: req.sector,
                    units,
                },
                BlockOp::Flush => Event::Flush,
            });
            if req.op == BlockOp::Flush {
                let snapshot = m.volatile.clone();
                m.flush_covers.insert(req.tag, snapshot);
            }
            m.on_device.push((req.tag, req.op, req.sector, units));
            Ok(())
        }

        fn poll(&mut self) -> Option<BlockCompletion> {
            self.model.borrow_mut().ready.pop_front()
        }

        fn in_flight(&self) -> usize {
            self.model.borrow().on_device.len()
        }
    }

    impl Model {
        /// Completes the request at index `i` of those on the device.
        fn complete(&mut self, i: usize) {
            let (tag, op, sector, units) = self.on_device.remove(i);
            let result = if self.fail_sector == Some(sector) && op != BlockOp::Flush {
                Err(BlockError::Io)
            } else {
                Ok(())
            };
            match op {
                BlockOp::Write if result.is_ok() => self.volatile.push((sector, units)),
                BlockOp::Flush => {
                    let covered = self.flush_covers.remove(&tag).unwrap_or_default();
                    self.durable.extend(covered);
                }
                _ => {}
            }
            self.ready.push_back(BlockCompletion { tag, result });
        }
    }

    struct Rig {
        q: DiskQueue<u32>,
        model: Rc<RefCell<Model>>,
        clock: Rc<Cell<u64>>,
    }

    fn rig(max_segments: u16, depth: usize) -> Rig {
        let model = Rc::new(RefCell::new(Model {
            depth,
            ..Model::default()
        }));
        let dev = FakeDevice {
            info: BlockInfo {
                sectors: 1 << 20,
                sector_size: 512,
                max_segments,
                queue_depth: depth as u16,
            },
            model: model.clone(),
        };
        let clock = Rc::new(Cell::new(0u64));
        let c = clock.clone();
        let q = DiskQueue::new(Box::new(dev), Box::new(move || c.get()), 1000).expect("queue");
        Rig { q, model, clock }
    }

    fn pages(n: usize) -> Vec<Segment> {
        (0..n)
            .map(|i| Segment {
                addr: 0x10_0000 + i as u64 * 0x1000,
                len: 4096,
            })
            .collect()
    }

    fn finished(q: &mut DiskQueue<u32>) -> Vec<(u64, Result<(), BlockError>)> {
        let mut out = Vec::new();
        while let Some(f) = q.take_finished() {
            out.push((f.user, f.result));
        }
        out
    }

    #[test]
    fn keeps_many_in_flight_and_completes_out_of_order() {
        let mut r = rig(8, 16);
        for i in 0..10u64 {
            r.q.submit(i, BlockOp::Read, i * 8, &pages(1), i as u32)
                .expect("submit");
        }
        r.q.pump();
        assert_eq!(r.q.on_device(), 10);
        // Complete in reverse order.
        for i in (0..10).rev() {
            r.model.borrow_mut().complete(i);
        }
        r.q.pump();
        let users: Vec<u64> = finished(&mut r.q).iter().map(|f| f.0).collect();
        assert_eq!(users, (0..10).rev().collect::<Vec<_>>());
        assert!(r.q.is_idle());
        assert_eq!(r.q.stats.max_in_flight, 10);
    }

    #[test]
    fn a_large_job_is_cut_into_device_sized_parts() {
        let mut r = rig(4, 16);
        r.q.submit(1, BlockOp::Write, 100, &pages(10), 7)
            .expect("submit");
        r.q.pump();
        assert_eq!(
            r.model.borrow().seen,
            [
                Event::Write {
                    sector: 100,
                    units: 32
                },
                Event::Write {
                    sector: 132,
                    units: 32
                },
                Event::Write {
                    sector: 164,
                    units: 16
                },
            ]
        );
        r.model.borrow_mut().complete(1);
        r.model.borrow_mut().complete(0);
        r.q.pump();
        assert!(r.q.take_finished().is_none(), "one part is still out");
        r.model.borrow_mut().complete(0);
        r.q.pump();
        let f = r.q.take_finished().expect("finished");
        assert_eq!((f.user, f.result, f.buf), (1, Ok(()), Some(7)));
    }

    #[test]
    fn a_full_device_gets_the_rest_later() {
        let mut r = rig(2, 3);
        r.q.submit(1, BlockOp::Read, 0, &pages(8), 0)
            .expect("submit");
        r.q.pump();
        assert_eq!(r.q.on_device(), 3);
        r.model.borrow_mut().complete(0);
        r.q.pump();
        assert_eq!(r.q.on_device(), 3);
        assert_eq!(r.model.borrow().seen.len(), 4);
    }

    #[test]
    fn a_flush_waits_for_earlier_writes_and_then_the_device() {
        let mut r = rig(8, 16);
        r.q.submit(1, BlockOp::Write, 0, &pages(1), 0).expect("w1");
        r.q.submit(2, BlockOp::Write, 8, &pages(1), 0).expect("w2");
        r.q.flush(3, 0);
        r.q.submit(4, BlockOp::Write, 16, &pages(1), 0).expect("w4");
        r.q.pump();
        // The later write passes the flush; the flush is not sent yet.
        assert_eq!(r.q.on_device(), 3);
        assert!(!r.model.borrow().seen.contains(&Event::Flush));
        r.model.borrow_mut().complete(0);
        r.q.pump();
        assert!(!r.model.borrow().seen.contains(&Event::Flush));
        r.model.borrow_mut().complete(0);
        r.q.pump();
        assert_eq!(r.model.borrow().seen.last(), Some(&Event::Flush));
        assert_eq!(
            finished(&mut r.q).iter().map(|f| f.0).collect::<Vec<_>>(),
            [1, 2]
        );
        // Not answered before the device's flush completed.
        let flush_at = r
            .model
            .borrow()
            .on_device
            .iter()
            .position(|d| d.1 == BlockOp::Flush)
            .expect("flush on device");
        r.model.borrow_mut().complete(flush_at);
        r.q.pump();
        assert_eq!(finished(&mut r.q), [(3, Ok(()))]);
        assert_eq!(r.q.stats.flushes, 1);
        assert!(r.model.borrow().durable.contains(&(0, 8)));
        assert!(r.model.borrow().durable.contains(&(8, 8)));
    }

    #[test]
    fn device_errors_fail_their_job_only() {
        let mut r = rig(2, 16);
        r.model.borrow_mut().fail_sector = Some(16);
        r.q.submit(1, BlockOp::Write, 0, &pages(6), 0).expect("w");
        r.q.submit(2, BlockOp::Read, 100, &pages(1), 0).expect("r");
        r.q.pump();
        while !r.model.borrow().on_device.is_empty() {
            r.model.borrow_mut().complete(0);
        }
        r.q.pump();
        let mut got = finished(&mut r.q);
        got.sort_by_key(|g| g.0);
        assert_eq!(got, [(1, Err(BlockError::Io)), (2, Ok(()))]);
    }

    #[test]
    fn bad_jobs_are_refused_at_once() {
        let mut r = rig(8, 16);
        let odd = [Segment {
            addr: 0x1000,
            len: 100,
        }];
        assert_eq!(
            r.q.submit(1, BlockOp::Read, 0, &odd, 5),
            Err((BlockError::BadLayout, 5))
        );
        assert_eq!(
            r.q.submit(1, BlockOp::Read, (1 << 20) - 7, &pages(1), 6),
            Err((BlockError::OutOfRange, 6))
        );
        assert_eq!(
            r.q.submit(1, BlockOp::Read, u64::MAX, &pages(1), 6),
            Err((BlockError::OutOfRange, 6))
        );
        assert!(r.q.is_idle());
    }

    #[test]
    fn a_silent_device_times_out_and_its_buffer_is_kept_until_it_answers() {
        let mut r = rig(8, 16);
        r.q.submit(1, BlockOp::Read, 0, &pages(1), 42).expect("r");
        r.q.pump();
        r.clock.set(2000);
        r.q.pump();
        let f = r.q.take_finished().expect("answered");
        assert_eq!(
            (f.user, f.result, f.buf),
            (1, Err(BlockError::Timeout), None)
        );
        assert_eq!(r.q.pending(), 0);
        assert!(r.q.take_reclaimed().is_empty());
        assert!(r.q.holds_any(&[1].into()), "the device still holds it");
        assert!(!r.q.holds_any(&[2].into()));
        r.model.borrow_mut().complete(0);
        r.q.pump();
        assert!(r.q.take_finished().is_none(), "answered only once");
        assert!(!r.q.holds_any(&[1].into()));
        assert_eq!(r.q.take_reclaimed(), [(1, 42)]);
        assert!(r.q.is_idle());
    }

    #[test]
    fn a_completion_for_nothing_is_a_counted_fault() {
        let mut r = rig(8, 16);
        r.model.borrow_mut().ready.push_back(BlockCompletion {
            tag: 99,
            result: Ok(()),
        });
        r.q.pump();
        assert_eq!(r.q.stats.faults, 1);
        assert!(r.q.take_finished().is_none());
    }

    /// A step of the random schedule.
    #[derive(Clone, Debug)]
    enum Step {
        Write(u8, u8),
        Read(u8, u8),
        Flush,
        Complete(u8),
        Pump,
        Tick,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (any::<u8>(), 1u8..12).prop_map(|(s, n)| Step::Write(s, n)),
            (any::<u8>(), 1u8..12).prop_map(|(s, n)| Step::Read(s, n)),
            Just(Step::Flush),
            any::<u8>().prop_map(Step::Complete),
            Just(Step::Pump),
            Just(Step::Tick),
        ]
    }

    proptest! {
        /// Under any schedule of hand-ins, out-of-order completions and
        /// deadlines: every job finishes exactly once and its buffer comes
        /// back exactly once; a flush succeeds only after every write handed
        /// in before it was answered, each successful one durable on the
        /// device.
        #[test]
        fn no_job_is_lost_and_flushes_are_exact(
            steps in proptest::collection::vec(step(), 1..120),
            depth in 1usize..12,
            max_segments in 1u16..6,
        ) {
            let mut r = rig(max_segments, depth);
            let mut next_user = 0u64;
            let mut outstanding: BTreeMap<u64, BlockOp> = BTreeMap::new();
            let mut writes: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            let mut answered: BTreeMap<u64, Result<(), BlockError>> = BTreeMap::new();
            let mut bufs_back = 0usize;
            let mut handed = 0usize;
            let mut drained = false;
            for (i, s) in steps.iter().map(Some).chain(core::iter::repeat_n(None, 10_000)).enumerate() {
                match s {
                    Some(&Step::Write(at, n)) | Some(&Step::Read(at, n)) => {
                        let op = if matches!(s, Some(Step::Write(..))) { BlockOp::Write } else { BlockOp::Read };
                        let user = next_user;
                        next_user += 1;
                        let sector = u64::from(at) * 64;
                        r.q.submit(user, op, sector, &pages(usize::from(n)), user as u32).expect("valid");
                        handed += 1;
                        outstanding.insert(user, op);
                        if op == BlockOp::Write {
                            writes.insert(user, (sector, u64::from(n) * 8));
                        }
                    }
                    Some(Step::Flush) => {
                        let user = next_user;
                        next_user += 1;
                        r.q.flush(user, user as u32);
                        handed += 1;
                        outstanding.insert(user, BlockOp::Flush);
                    }
                    Some(&Step::Complete(k)) => {
                        let mut m = r.model.borrow_mut();
                        if !m.on_device.is_empty() {
                            let n = m.on_device.len();
                            m.complete(usize::from(k) % n);
                        }
                    }
                    Some(Step::Pump) => { r.q.pump(); }
                    Some(Step::Tick) => r.clock.set(r.clock.get() + 600),
                    None => {
                        // Drain: pump, and the device answers its newest request.
                        r.q.pump();
                        let mut m = r.model.borrow_mut();
                        if !m.on_device.is_empty() {
                            let n = m.on_device.len();
                            m.complete(n - 1);
                        } else if i > steps.len() && outstanding.is_empty() {
                            drained = true;
                        }
                    }
                }
                while let Some(f) = r.q.take_finished() {
                    prop_assert!(outstanding.remove(&f.user).is_some(), "job {} finished twice", f.user);
                    if let Some(b) = f.buf {
                        prop_assert_eq!(u64::from(b), f.user);
                        bufs_back += 1;
                    }
                    if f.op == BlockOp::Flush && f.result.is_ok() {
                        let model = r.model.borrow();
                        for (&w, &range) in writes.range(..f.user) {
                            prop_assert!(answered.contains_key(&w), "flush {} answered before write {}", f.user, w);
                            if answered[&w].is_ok() {
                                prop_assert!(covers_all(&model.durable, range), "write {} not durable at flush {}", w, f.user);
                            }
                        }
                    }
                    answered.insert(f.user, f.result);
                }
                bufs_back += r.q.take_reclaimed().len();
                if drained && r.q.is_idle() {
                    break;
                }
            }
            prop_assert!(outstanding.is_empty(), "lost jobs: {:?}", outstanding);
            prop_assert_eq!(bufs_back, handed);
            prop_assert!(r.q.is_idle());
        }
    }

    /// Whether the union of `durable` ranges covers `range`.
    fn covers_all(durable: &[(u64, u64)], range: (u64, u64)) -> bool {
        (range.0..range.0 + range.1).all(|u| durable.iter().any(|d| d.0 <= u && u < d.0 + d.1))
    }

    #[test]
    fn run_alone_reads_and_flushes() {
        let model = Rc::new(RefCell::new(Model {
            depth: 4,
            ..Model::default()
        }));
        let dev = AutoDevice(FakeDevice {
            info: BlockInfo {
                sectors: 1024,
                sector_size: 512,
                max_segments: 8,
                queue_depth: 4,
            },
            model: model.clone(),
        });
        let mut q: DiskQueue<u32> =
            DiskQueue::new(Box::new(dev), Box::new(|| 0), 10).expect("queue");
        assert_eq!(q.run_alone(BlockOp::Read, 8, &pages(2), 3), Ok(3));
        assert_eq!(q.run_alone(BlockOp::Flush, 0, &[], 4), Ok(4));
        assert_eq!(
            q.run_alone(BlockOp::Read, 1023, &pages(1), 5),
            Err(Some(BlockError::OutOfRange))
        );
        assert!(q.is_idle());
        assert_eq!(
            model.borrow().seen,
            [
                Event::Read {
                    sector: 8,
                    units: 16
                },
                Event::Flush
            ]
        );
    }

    /// A fake device that completes everything on the next poll.
    struct AutoDevice(FakeDevice);

    impl BlockDevice for AutoDevice {
        fn info(&self) -> BlockInfo {
            self.0.info
        }
        fn submit(&mut self, req: &BlockRequest<'_>) -> Result<(), BlockError> {
            self.0.submit(req)
        }
        fn poll(&mut self) -> Option<BlockCompletion> {
            {
                let mut m = self.0.model.borrow_mut();
                if !m.on_device.is_empty() {
                    m.complete(0);
                }
            }
            self.0.poll()
        }
        fn in_flight(&self) -> usize {
            self.0.in_flight()
        }
    }
}
