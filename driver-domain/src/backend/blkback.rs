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

use alloc::vec::Vec;

use hypercall_abi::blkif::*;
use hypercall_abi::ring::{BackRing, RingError};
use hypercall_abi::DomId;
use pv_guest_kit::devices::grant_copy::{copy_batch, CopyOp, Direction};
use pv_guest_kit::devices::ring_pages::RingPages;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::mm::{Frame, MmError};

use super::block_store::{BlockStore, UNIT};

/// Bounce frames: the most segments moved in one batch.
pub const BOUNCE_FRAMES: usize = 64;
/// Most indirect segments this backend serves.
pub const MAX_INDIRECT_SEGMENTS: u32 = 256;
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

/// One connected blkif ring.
pub struct BlkConnection {
    pub frontend: DomId,
    port: Port,
    mem: RingPages,
    ring: BackRing<BlkifRequest, BlkifResponse>,
    store: alloc::boxed::Box<dyn BlockStore>,
    limits: DeviceLimits,
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
        store: alloc::boxed::Box<dyn BlockStore>,
        readonly: bool,
    ) -> Result<BlkConnection, (RingPages, RingError)> {
        let ring = match BackRing::attach(&mem) {
            Ok(ring) => ring,
            Err(e) => return Err((mem, e)),
        };
        let limits = DeviceLimits {
            sectors: store.units(),
            sector_size: store.sector_size(),
            readonly,
            features: BLKIF_FEATURE_FLUSH | BLKIF_FEATURE_DISCARD | BLKIF_FEATURE_INDIRECT,
            max_indirect_segments: MAX_INDIRECT_SEGMENTS,
        };
        Ok(BlkConnection {
            frontend,
            port,
            mem,
            ring,
            store,
            limits,
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
    pub fn has_work(&mut self) -> Result<bool, RingError> {
        self.ring.final_check_for_requests(&mut self.mem)
    }

    /// Serves up to a budget of requests; `Ok(true)` if any were served.
    ///
    /// Flushes are deferred to the end of the batch and coalesced into one
    /// store flush, which returns before any of them is answered (BLK-5):
    /// a flush completes after the reads and writes taken with it, so
    /// responses leave out of request order (BLK-7).
    pub fn serve(&mut self, bounce: &mut Bounce) -> Result<bool, RingError> {
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
            let status = status_of(self.store.flush().is_ok());
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

    /// Serves one copied-out request; returns the response status.
    fn handle(&mut self, req: &BlkifRequest, bounce: &mut Bounce) -> i16 {
        let checked = match check_request(req, &self.limits) {
            Ok(c) => c,
            Err(reject) => return reject.status(),
        };
        match checked {
            // `serve` defers valid flushes; this one is only reached by a
            // caller that does not.
            Checked::Flush => status_of(self.store.flush().is_ok()),
            Checked::Discard => status_of(
                self.store
                    .discard(req.sector_number, req.nr_sectors)
                    .is_ok(),
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
                if self.store.write(unit, &buf).is_err() {
                    return BLKIF_RSP_ERROR;
                }
                self.stats.units_written += units;
            } else {
                if self.store.read(unit, &mut buf).is_err() {
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
