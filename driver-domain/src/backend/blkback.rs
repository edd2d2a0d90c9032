//! blkback (SPEC.md §13, BLK-*): serves one frontend's blkif ring from a
//! [`BlockStore`] view.
//!
//! Each request is copied out of the ring once (RING-5), then checked
//! (`blkif::check_request`, BLK-4) before anything else happens; indirect
//! segment pages are copied once into the backend's own frames and checked
//! as a whole before any I/O. Data moves by grant copy, in batches, through
//! a pool of bounce frames: for a write, every segment is copied in before
//! the store is written, so a bad grant fails the request without touching
//! the disk; for a read, the store is read first and copied out after. A
//! flush is answered only after the store's `flush` returned (BLK-5);
//! flushes are deferred to the end of each batch and coalesced, so they
//! complete after the reads and writes taken with them. Responses carry the
//! request's id and leave in completion order, not request order (BLK-7).
//!
//! A producer index that breaks RING-6 ends the connection (BLK-9): the
//! caller unmaps the ring and closes the record; nothing else is affected.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};

use driver_domain::blk::BlockOp;
use driver_domain::disk_queue::Finished;
use hypercall_abi::blkif::*;
use hypercall_abi::ring::{BackRing, RingError};
use hypercall_abi::DomId;
use pv_guest_kit::devices::grant_copy::{copy_batch, CopyOp, Direction};
use pv_guest_kit::devices::ring_pages::RingPages;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::mm::{Frame, MmError};

use super::block_store::{BlockStore, UNIT};
use super::real_disk::{Persistent, RealDisk, FRAME};

/// Bounce frames: the most segments moved in one batch.
pub const BOUNCE_FRAMES: usize = 64;
/// Most indirect segments this backend serves.
pub const MAX_INDIRECT_SEGMENTS: u32 = 256;
/// Most persistent grants (BLK-11) one connection may have mapped (the
/// domain's grant mappings are limited, GNT-3; see also
/// `real_disk::MAX_PERSISTENT_TOTAL`).
pub const MAX_PERSISTENT: usize = 640;
/// Requests served per connection before the others get a turn.
const BUDGET: u32 = 32;

/// Counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkStats {
    pub requests: u64,
    pub errors: u64,
    pub flushes: u64,
    pub units_read: u64,
    pub units_written: u64,
    /// TSC ticks spent in grant copies of a queued disk's data.
    pub copy_ticks: u64,
    /// TSC ticks spent taking, checking and answering requests of a queued
    /// disk (grant copies included).
    pub serve_ticks: u64,
}

/// Frames the backend copies through.
pub struct Bounce {
    frames: Vec<Frame>,
}

impl Bounce {
    pub fn new() -> Result<Bounce, MmError> {
        let mut frames = Vec::with_capacity(BOUNCE_FRAMES);
        for _ in 0..BOUNCE_FRAMES {
            frames.push(Frame::alloc()?);
        }
        Ok(Bounce { frames })
    }

    /// The frames, for other backends' copies.
    pub fn frames(&mut self) -> &mut [Frame] {
        &mut self.frames
    }
}

/// What a connection serves from.
pub enum Backing {
    /// A store answering each call synchronously (the RAM disk).
    Store(alloc::boxed::Box<dyn BlockStore>),
    /// `count` units from `first` of a real disk, many requests in flight.
    Queued {
        disk: Rc<RefCell<RealDisk>>,
        first: u64,
        count: u64,
    },
}

/// A request of a queued connection on the disk.
struct Pending {
    id: u64,
    operation: u8,
    /// The guest's segments (empty for a flush); a read's data goes there.
    segs: Vec<BlkifSegment>,
    /// Grant-copy the data to the guest at completion (a read through pool
    /// frames; a read into persistent grants needs none).
    read: bool,
}

/// Tags of queued jobs, unique over every connection of this domain.
static NEXT_JOB: AtomicU64 = AtomicU64::new(0);

fn next_job() -> u64 {
    NEXT_JOB.fetch_add(1, Ordering::Relaxed)
}

/// One connected blkif ring.
pub struct BlkConnection {
    pub frontend: DomId,
    port: Port,
    mem: RingPages,
    ring: BackRing<BlkifRequest, BlkifResponse>,
    backing: Backing,
    limits: DeviceLimits,
    /// Queued requests on the disk, by job tag.
    pending: BTreeMap<u64, Pending>,
    /// A request taken off the ring that waits for free pool frames.
    stalled: Option<BlkifRequest>,
    /// Persistent grants mapped and placed in the IOMMU space (BLK-11).
    persistent: BTreeMap<u32, Persistent>,
    /// No more grants get mapped (a limit was reached or a mapping
    /// failed): new ones go the copying way.
    persistent_full: bool,
    /// Jobs answered on a timeout that the device has not let go of yet
    /// (it may still reach their persistent grants).
    held: BTreeSet<u64>,
    pub stats: BlkStats,
}

/// What serving one request produced.
fn status_of(ok: bool) -> i16 {
    if ok {
        BLKIF_RSP_OKAY
    } else {
        BLKIF_RSP_ERROR
    }
}

impl BlkConnection {
    /// Attaches to a ring the frontend initialised (RING-7).
    pub fn new(
        frontend: DomId,
        port: Port,
        mem: RingPages,
        backing: Backing,
        readonly: bool,
    ) -> Result<BlkConnection, (RingPages, RingError)> {
        let ring = match BackRing::attach(&mem) {
            Ok(ring) => ring,
            Err(e) => return Err((mem, e)),
        };
        let (sectors, sector_size, persistent) = match &backing {
            Backing::Store(store) => (store.units(), store.sector_size(), 0),
            Backing::Queued { count, disk, .. } => (
                *count,
                UNIT as u32,
                if disk.borrow().maps_persistent() {
                    BLKIF_FEATURE_PERSISTENT
                } else {
                    0
                },
            ),
        };
        let limits = DeviceLimits {
            sectors,
            sector_size,
            readonly,
            features: BLKIF_FEATURE_FLUSH
                | BLKIF_FEATURE_DISCARD
                | BLKIF_FEATURE_INDIRECT
                | persistent,
            max_indirect_segments: MAX_INDIRECT_SEGMENTS,
        };
        Ok(BlkConnection {
            frontend,
            port,
            mem,
            ring,
            backing,
            limits,
            pending: BTreeMap::new(),
            stalled: None,
            persistent: BTreeMap::new(),
            persistent_full: false,
            held: BTreeSet::new(),
            stats: BlkStats::default(),
        })
    }

    pub fn features(&self) -> u32 {
        self.limits.features
    }

    pub fn ring_size(&self) -> u32 {
        self.ring.size()
    }

    pub fn units(&self) -> u64 {
        self.limits.sectors
    }

    pub fn port(&self) -> Port {
        self.port
    }

    /// The ring pages back (to unmap them).
    pub fn into_ring(self) -> RingPages {
        self.mem
    }

    /// Whether a request is waiting; re-arms the notification first (RING-3 step 4).
    /// A request stalled for pool frames counts once frames are free.
    pub fn has_work(&mut self) -> Result<bool, RingError> {
        if self.stalled.is_some() {
            if let Backing::Queued { disk, .. } = &self.backing {
                if disk.borrow().free_frames() >= frames_needed(self.stalled.as_ref()) {
                    return Ok(true);
                }
            }
        }
        self.ring.final_check_for_requests(&mut self.mem)
    }

    /// Serves up to a budget of requests; `Ok(true)` if any were served.
    ///
    /// Flushes are deferred to the end of the batch and coalesced into one
    /// store flush, which returns before any of them is answered (BLK-5):
    /// a flush completes after the reads and writes taken with it, so
    /// responses leave out of request order (BLK-7).
    pub fn serve(&mut self, bounce: &mut Bounce) -> Result<bool, RingError> {
        if matches!(self.backing, Backing::Queued { .. }) {
            return self.serve_queued(bounce);
        }
        let mut served = 0;
        let mut flushes: Vec<BlkifRequest> = Vec::new();
        while served < BUDGET {
            let Some(req) = self.ring.take_request(&self.mem)? else {
                break;
            };
            served += 1;
            if req.operation == BLKIF_OP_FLUSH_DISKCACHE
                && check_request(&req, &self.limits) == Ok(Checked::Flush)
            {
                flushes.push(req);
                continue;
            }
            let status = self.handle(&req, bounce);
            self.respond(&req, status)?;
        }
        if !flushes.is_empty() {
            self.stats.flushes += flushes.len() as u64;
            let status = status_of(self.store().is_some_and(|s| s.flush().is_ok()));
            for req in &flushes {
                self.respond(req, status)?;
            }
        }
        if served > 0 && self.ring.publish_responses(&mut self.mem) {
            let _ = events::notify(self.port);
        }
        Ok(served > 0)
    }

    fn respond(&mut self, req: &BlkifRequest, status: i16) -> Result<(), RingError> {
        self.stats.requests += 1;
        if status != BLKIF_RSP_OKAY {
            self.stats.errors += 1;
        }
        let rsp = BlkifResponse {
            id: req.id,
            operation: req.operation,
            status,
            ..BlkifResponse::default()
        };
        self.ring.push_response(&mut self.mem, &rsp)
    }

    /// The synchronous store, if this connection has one.
    fn store(&mut self) -> Option<&mut dyn BlockStore> {
        match &mut self.backing {
            Backing::Store(s) => Some(&mut **s),
            Backing::Queued { .. } => None,
        }
    }

    /// The segments of a checked read or write (copying indirect pages
    /// once), or the status to answer it with.
    fn data_segments(
        &self,
        req: &BlkifRequest,
        checked: Checked,
        bounce: &mut Bounce,
    ) -> Result<(bool, Vec<BlkifSegment>), i16> {
        match checked {
            Checked::Direct { write, nr_segments } => {
                Ok((write, req.seg[..usize::from(nr_segments)].to_vec()))
            }
            Checked::Indirect {
                write,
                nr_segments,
                nr_pages,
            } => {
                let segs = self
                    .indirect_segments(req, nr_segments, nr_pages, bounce)
                    .ok_or(BLKIF_RSP_ERROR)?;
                check_segments(&segs, req.sector_number, &self.limits)
                    .map_err(|_| BLKIF_RSP_ERROR)?;
                Ok((write, segs))
            }
            _ => Err(BLKIF_RSP_ERROR),
        }
    }

    /// `serve` for a queued disk: every request is checked and handed to
    /// the disk's queue at once (a write after its data was grant-copied
    /// into pool frames); answers come from [`Self::complete`] as the
    /// device finishes them, in any order (BLK-7). A flush is answered only
    /// after every read and write taken before it finished and the
    /// device's own flush completed (BLK-5, `DiskQueue`). When the pool
    /// has too few free frames, the request waits (`stalled`) and the ring
    /// is left alone until frames come back.
    fn serve_queued(&mut self, bounce: &mut Bounce) -> Result<bool, RingError> {
        let Backing::Queued { disk, first, .. } = &self.backing else {
            return Ok(false);
        };
        let (disk, first) = (disk.clone(), *first);
        let started = pv_guest_kit::bench::rdtsc();
        let mut taken = 0;
        let mut answered = false;
        while taken < BUDGET {
            let req = match self.stalled.take() {
                Some(r) => r,
                None => match self.ring.take_request(&self.mem)? {
                    Some(r) => r,
                    None => break,
                },
            };
            let checked = match check_request(&req, &self.limits) {
                Ok(c) => c,
                Err(reject) => {
                    taken += 1;
                    self.respond(&req, reject.status())?;
                    answered = true;
                    continue;
                }
            };
            let job = next_job();
            match checked {
                Checked::Flush => {
                    taken += 1;
                    self.stats.flushes += 1;
                    disk.borrow_mut().queue.flush(job, Vec::new());
                    self.pending.insert(
                        job,
                        Pending {
                            id: req.id,
                            operation: req.operation,
                            segs: Vec::new(),
                            read: false,
                        },
                    );
                }
                Checked::Discard => {
                    taken += 1;
                    // The real disk keeps discarded units as they are (BLK-6).
                    self.respond(&req, BLKIF_RSP_OKAY)?;
                    answered = true;
                }
                checked => {
                    let (write, segs) = match self.data_segments(&req, checked, bounce) {
                        Ok(x) => x,
                        Err(status) => {
                            taken += 1;
                            self.respond(&req, status)?;
                            answered = true;
                            continue;
                        }
                    };
                    let bytes: usize = segs.iter().map(seg_bytes).sum();
                    let direct = segs.iter().all(|s| s.pad == BLKIF_SEG_PERSISTENT)
                        && disk.borrow().maps_persistent();
                    if let Some(segments) = direct
                        .then(|| self.persistent_segments(&mut disk.borrow_mut(), &segs))
                        .flatten()
                    {
                        // The device reaches the guest's pages itself.
                        taken += 1;
                        let op = if write { BlockOp::Write } else { BlockOp::Read };
                        let sector = first + req.sector_number;
                        let queued =
                            disk.borrow_mut()
                                .queue
                                .submit(job, op, sector, &segments, Vec::new());
                        if queued.is_ok() {
                            self.count_units(write, bytes);
                            self.pending.insert(
                                job,
                                Pending {
                                    id: req.id,
                                    operation: req.operation,
                                    segs: Vec::new(),
                                    read: false,
                                },
                            );
                        } else {
                            self.respond(&req, BLKIF_RSP_ERROR)?;
                            answered = true;
                        }
                        continue;
                    }
                    let Some(mut frames) = disk.borrow_mut().take_frames(bytes.div_ceil(FRAME))
                    else {
                        self.stalled = Some(req);
                        break;
                    };
                    taken += 1;
                    if write {
                        let ops = copy_ops(self.frontend, &segs, Direction::FromGrant);
                        let t = pv_guest_kit::bench::rdtsc();
                        let copied = copy_batch(&ops, &mut frames)
                            .is_ok_and(|st| st.iter().all(|&s| s == 0));
                        self.stats.copy_ticks += pv_guest_kit::bench::rdtsc() - t;
                        if !copied {
                            disk.borrow_mut().give_frames(frames);
                            self.respond(&req, BLKIF_RSP_ERROR)?;
                            answered = true;
                            continue;
                        }
                    }
                    let mut d = disk.borrow_mut();
                    let segments = d.segments(&frames, bytes);
                    let op = if write { BlockOp::Write } else { BlockOp::Read };
                    let sector = first + req.sector_number;
                    match d.queue.submit(job, op, sector, &segments, frames) {
                        Ok(()) => {
                            drop(d);
                            self.count_units(write, bytes);
                            self.pending.insert(
                                job,
                                Pending {
                                    id: req.id,
                                    operation: req.operation,
                                    segs,
                                    read: !write,
                                },
                            );
                        }
                        Err((_, frames)) => {
                            d.give_frames(frames);
                            drop(d);
                            self.respond(&req, BLKIF_RSP_ERROR)?;
                            answered = true;
                        }
                    }
                }
            }
        }
        if answered && self.ring.publish_responses(&mut self.mem) {
            let _ = events::notify(self.port);
        }
        self.stats.serve_ticks += pv_guest_kit::bench::rdtsc() - started;
        Ok(taken > 0)
    }

    fn count_units(&mut self, write: bool, bytes: usize) {
        let units = (bytes / UNIT) as u64;
        if write {
            self.stats.units_written += units;
        } else {
            self.stats.units_read += units;
        }
    }

    /// The device segments of `segs` (all flagged persistent) through
    /// their mappings in the IOMMU space, mapping the grants not yet seen;
    /// `None` if one cannot be (too many, or a bad grant): the request then
    /// goes the copying way.
    fn persistent_segments(
        &mut self,
        disk: &mut RealDisk,
        segs: &[BlkifSegment],
    ) -> Option<Vec<driver_domain::dma::Segment>> {
        let mut out = Vec::with_capacity(segs.len());
        for s in segs {
            let dev_pfn = match self.persistent.get(&s.gref) {
                Some(p) => p.dev_pfn,
                None => {
                    if self.persistent_full || self.persistent.len() >= MAX_PERSISTENT {
                        self.persistent_full = true;
                        return None;
                    }
                    let Some(p) = disk.map_persistent(self.frontend, s.gref) else {
                        self.persistent_full = true;
                        return None;
                    };
                    let pfn = p.dev_pfn;
                    self.persistent.insert(s.gref, p);
                    pfn
                }
            };
            out.push(driver_domain::dma::Segment {
                addr: (dev_pfn << 12) + u64::from(s.first_sect) * UNIT as u64,
                len: seg_bytes(s) as u32,
            });
        }
        Some(out)
    }

    /// Persistent grants in use now: how many are mapped.
    pub fn persistent_grants(&self) -> usize {
        self.persistent.len()
    }

    /// Takes the persistent mappings away (the connection is closing),
    /// with the jobs that may still reach them: those not answered yet and
    /// those the device still holds after a timeout. The caller unmaps them
    /// once all those jobs are over.
    pub fn take_persistent(&mut self) -> (Vec<Persistent>, BTreeSet<u64>) {
        let maps = core::mem::take(&mut self.persistent)
            .into_values()
            .collect();
        let mut jobs: BTreeSet<u64> = self.pending.keys().copied().collect();
        jobs.append(&mut self.held);
        (maps, jobs)
    }

    /// The device let go of job `user` (answered earlier on a timeout).
    pub fn released(&mut self, user: u64) {
        self.held.remove(&user);
    }

    /// Answers the request of finished job `done`, if it is this
    /// connection's (a read's data is grant-copied to the guest first);
    /// gives its frames back to `disk`. Returns `Ok(false)` if the job is
    /// not this connection's (nothing is done then).
    pub fn complete(
        &mut self,
        done: &mut Finished<Vec<Frame>>,
        disk: &mut RealDisk,
    ) -> Result<bool, RingError> {
        let Some(p) = self.pending.remove(&done.user) else {
            return Ok(false);
        };
        let started = pv_guest_kit::bench::rdtsc();
        let mut status = status_of(done.result.is_ok());
        if done.buf.is_none() {
            // Answered on a timeout: the device may still reach the job's
            // memory until it lets go (`released`).
            self.held.insert(done.user);
        }
        if let Some(mut frames) = done.buf.take() {
            if p.read && status == BLKIF_RSP_OKAY {
                let ops = copy_ops(self.frontend, &p.segs, Direction::ToGrant);
                let t = pv_guest_kit::bench::rdtsc();
                let copied =
                    copy_batch(&ops, &mut frames).is_ok_and(|st| st.iter().all(|&s| s == 0));
                self.stats.copy_ticks += pv_guest_kit::bench::rdtsc() - t;
                if !copied {
                    status = BLKIF_RSP_ERROR;
                }
            }
            disk.give_frames(frames);
        }
        let req = BlkifRequest {
            id: p.id,
            operation: p.operation,
            ..BlkifRequest::default()
        };
        self.respond(&req, status)?;
        self.stats.serve_ticks += pv_guest_kit::bench::rdtsc() - started;
        Ok(true)
    }

    /// Publishes answers given by [`Self::complete`], notifying if asked.
    pub fn publish(&mut self) {
        if self.ring.publish_responses(&mut self.mem) {
            let _ = events::notify(self.port);
        }
    }

    /// Serves one copied-out request; returns the response status.
    fn handle(&mut self, req: &BlkifRequest, bounce: &mut Bounce) -> i16 {
        let checked = match check_request(req, &self.limits) {
            Ok(c) => c,
            Err(reject) => return reject.status(),
        };
        match checked {
            // `serve` defers valid flushes; this one is only reached by a
            // caller that does not.
            Checked::Flush => status_of(self.store().is_some_and(|s| s.flush().is_ok())),
            Checked::Discard => status_of(
                self.store()
                    .is_some_and(|s| s.discard(req.sector_number, req.nr_sectors).is_ok()),
            ),
            Checked::Direct { write, nr_segments } => {
                let segs = &req.seg[..usize::from(nr_segments)];
                self.transfer(write, req.sector_number, segs, bounce)
            }
            Checked::Indirect {
                write,
                nr_segments,
                nr_pages,
            } => {
                let Some(segs) = self.indirect_segments(req, nr_segments, nr_pages, bounce) else {
                    return BLKIF_RSP_ERROR;
                };
                if check_segments(&segs, req.sector_number, &self.limits).is_err() {
                    return BLKIF_RSP_ERROR;
                }
                self.transfer(write, req.sector_number, &segs, bounce)
            }
        }
    }

    /// Copies the indirect segment pages once and decodes the segments.
    fn indirect_segments(
        &self,
        req: &BlkifRequest,
        nr_segments: u32,
        nr_pages: usize,
        bounce: &mut Bounce,
    ) -> Option<Vec<BlkifSegment>> {
        let ops: Vec<CopyOp> = (0..nr_pages)
            .map(|i| CopyOp {
                dom: self.frontend,
                gref: req.indirect_grefs[i],
                grant_offset: 0,
                frame: i,
                frame_offset: 0,
                len: 4096,
                direction: Direction::FromGrant,
            })
            .collect();
        let statuses = copy_batch(&ops, &mut bounce.frames).ok()?;
        if statuses.iter().any(|&s| s != 0) {
            return None;
        }
        let mut segs = Vec::with_capacity(nr_segments as usize);
        let mut raw = [0u8; 8];
        for i in 0..nr_segments as usize {
            let page = i / BLKIF_SEGMENTS_PER_INDIRECT_PAGE as usize;
            let at = (i % BLKIF_SEGMENTS_PER_INDIRECT_PAGE as usize) * 8;
            bounce.frames[page].read_bytes(at, &mut raw);
            segs.push(BlkifSegment {
                gref: u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]),
                first_sect: raw[4],
                last_sect: raw[5],
                pad: u16::from_le_bytes([raw[6], raw[7]]),
            });
        }
        Some(segs)
    }

    /// Moves checked segments between the frontend's grants and the store,
    /// [`BOUNCE_FRAMES`] segments at a time, each batch with one store call
    /// (the segments cover consecutive units): a real disk then sees one
    /// request per batch, not one per segment.
    fn transfer(
        &mut self,
        write: bool,
        sector: u64,
        segs: &[BlkifSegment],
        bounce: &mut Bounce,
    ) -> i16 {
        let mut unit = sector;
        let mut buf = Vec::new();
        for chunk in segs.chunks(BOUNCE_FRAMES) {
            let ops: Vec<CopyOp> = chunk
                .iter()
                .enumerate()
                .map(|(i, s)| CopyOp {
                    dom: self.frontend,
                    gref: s.gref,
                    grant_offset: u32::from(s.first_sect) * UNIT as u32,
                    frame: i,
                    frame_offset: 0,
                    len: (u32::from(s.last_sect - s.first_sect) + 1) * UNIT as u32,
                    direction: if write {
                        Direction::FromGrant
                    } else {
                        Direction::ToGrant
                    },
                })
                .collect();
            let total: usize = ops.iter().map(|op| op.len as usize).sum();
            buf.clear();
            buf.resize(total, 0u8);
            let units = (total / UNIT) as u64;
            if write {
                // Every grant is copied before the disk is touched.
                match copy_batch(&ops, &mut bounce.frames) {
                    Ok(st) if st.iter().all(|&s| s == 0) => {}
                    _ => return BLKIF_RSP_ERROR,
                }
                let mut at = 0;
                for (i, op) in ops.iter().enumerate() {
                    let n = op.len as usize;
                    bounce.frames[i].read_bytes(0, &mut buf[at..at + n]);
                    at += n;
                }
                if self.store().is_none_or(|s| s.write(unit, &buf).is_err()) {
                    return BLKIF_RSP_ERROR;
                }
                self.stats.units_written += units;
            } else {
                if self.store().is_none_or(|s| s.read(unit, &mut buf).is_err()) {
                    return BLKIF_RSP_ERROR;
                }
                let mut at = 0;
                for (i, op) in ops.iter().enumerate() {
                    let n = op.len as usize;
                    bounce.frames[i].write_bytes(0, &buf[at..at + n]);
                    at += n;
                }
                self.stats.units_read += units;
                match copy_batch(&ops, &mut bounce.frames) {
                    Ok(st) if st.iter().all(|&s| s == 0) => {}
                    _ => return BLKIF_RSP_ERROR,
                }
            }
            unit += units;
        }
        BLKIF_RSP_OKAY
    }
}

/// Bytes one checked segment carries.
fn seg_bytes(s: &BlkifSegment) -> usize {
    (usize::from(s.last_sect - s.first_sect) + 1) * UNIT
}

/// Frames a stalled request needs (0 if it needs none or cannot be sized:
/// serving it then answers it).
fn frames_needed(req: Option<&BlkifRequest>) -> usize {
    let Some(req) = req else { return 0 };
    if req.operation == BLKIF_OP_INDIRECT {
        // One frame per segment at most; the exact count is known only
        // after the indirect pages were copied.
        usize::from(req.nr_indirect_segments)
    } else {
        let n = usize::from(req.nr_segments).min(req.seg.len());
        req.seg[..n]
            .iter()
            .map(|s| (usize::from(s.last_sect.saturating_sub(s.first_sect)) + 1) * UNIT)
            .sum::<usize>()
            .div_ceil(FRAME)
    }
}

/// Grant copies moving `segs` (checked) to or from a byte stream laid over
/// consecutive frames: segment data packed one after another, a piece
/// that crosses a frame boundary split in two.
fn copy_ops(dom: DomId, segs: &[BlkifSegment], direction: Direction) -> Vec<CopyOp> {
    let mut ops = Vec::with_capacity(segs.len());
    let mut at = 0usize;
    for s in segs {
        let mut left = seg_bytes(s);
        let mut grant_offset = usize::from(s.first_sect) * UNIT;
        while left > 0 {
            let (frame, frame_offset) = (at / FRAME, at % FRAME);
            let n = left.min(FRAME - frame_offset);
            ops.push(CopyOp {
                dom,
                gref: s.gref,
                grant_offset: grant_offset as u32,
                frame,
                frame_offset: frame_offset as u32,
                len: n as u32,
                direction,
            });
            at += n;
            grant_offset += n;
            left -= n;
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(gref: u32, first_sect: u8, last_sect: u8) -> BlkifSegment {
        BlkifSegment {
            gref,
            first_sect,
            last_sect,
            pad: 0,
        }
    }

    #[test]
    fn copy_ops_pack_segments_and_split_at_frame_ends() {
        let segs = [seg(10, 2, 4), seg(11, 0, 7), seg(12, 7, 7)];
        let ops = copy_ops(5, &segs, Direction::FromGrant);
        let got: Vec<(u32, u32, usize, u32, u32)> = ops
            .iter()
            .map(|o| (o.gref, o.grant_offset, o.frame, o.frame_offset, o.len))
            .collect();
        assert_eq!(
            got,
            [
                (10, 1024, 0, 0, 1536),
                (11, 0, 0, 1536, 2560),
                (11, 2560, 1, 0, 1536),
                (12, 3584, 1, 1536, 512),
            ]
        );
        assert!(ops
            .iter()
            .all(|o| o.dom == 5 && o.direction == Direction::FromGrant));
    }

    #[test]
    fn a_stalled_request_knows_its_frames() {
        let mut req = BlkifRequest {
            operation: BLKIF_OP_READ,
            nr_segments: 3,
            ..BlkifRequest::default()
        };
        req.seg[0] = seg(1, 0, 7);
        req.seg[1] = seg(2, 0, 7);
        req.seg[2] = seg(3, 0, 0);
        assert_eq!(frames_needed(Some(&req)), 3);
        req.nr_segments = 2;
        assert_eq!(frames_needed(Some(&req)), 2);
        assert_eq!(frames_needed(None), 0);
        let indirect = BlkifRequest {
            operation: BLKIF_OP_INDIRECT,
            nr_indirect_segments: 256,
            ..BlkifRequest::default()
        };
        assert_eq!(frames_needed(Some(&indirect)), 256);
    }

    proptest! {
        /// The copies of any checked segments fill the frames as one
        /// contiguous stream, each inside one frame and inside its
        /// segment's part of the granted page, in segment order.
        #[test]
        fn copy_ops_cover_the_stream_exactly(
            raw in proptest::collection::vec((0u8..8, 0u8..8), 1..40),
        ) {
            let segs: Vec<BlkifSegment> = raw
                .iter()
                .enumerate()
                .map(|(i, &(a, b))| seg(i as u32, a.min(b), a.max(b)))
                .collect();
            let ops = copy_ops(1, &segs, Direction::ToGrant);
            let mut at = 0usize;
            let mut next = (0usize, usize::from(segs[0].first_sect) * UNIT);
            for o in &ops {
                prop_assert_eq!(o.frame * FRAME + o.frame_offset as usize, at);
                prop_assert!(o.frame_offset as usize + o.len as usize <= FRAME);
                prop_assert!(o.len > 0);
                // Continues the current segment or starts the next one.
                let s = &segs[next.0];
                let end = (usize::from(s.last_sect) + 1) * UNIT;
                if next.1 == end {
                    next = (next.0 + 1, usize::from(segs[next.0 + 1].first_sect) * UNIT);
                }
                let s = &segs[next.0];
                prop_assert_eq!(o.gref, s.gref);
                prop_assert_eq!(o.grant_offset as usize, next.1);
                next.1 += o.len as usize;
                prop_assert!(next.1 <= (usize::from(s.last_sect) + 1) * UNIT);
                at += o.len as usize;
            }
            prop_assert_eq!(at, segs.iter().map(seg_bytes).sum::<usize>());
            prop_assert_eq!(next.0, segs.len() - 1);
        }
    }
}
