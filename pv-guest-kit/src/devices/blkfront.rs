//! blkfront (SPEC.md §13, BLK-*): a block device served by a backend domain
//! through a devbus record, a multi-page ring and grants.
//!
//! Requests are queued asynchronously: [`BlockFront::submit`] grants fresh
//! buffer frames to the backend, puts a request on the ring and returns its
//! id; many may be in flight (up to the ring's size); [`BlockFront::kick`]
//! publishes them with one notification; [`BlockFront::wait`] blocks until
//! a given one completed (responses come in any order, BLK-7). Transfers of
//! up to 11 pages use direct segments, larger ones (when the backend offers
//! it) one or two indirect pages (BLK-3). The synchronous helpers
//! ([`BlockFront::read`], [`BlockFront::write`], [`BlockFront::flush`])
//! are built on these.
//!
//! # Reconnecting
//! When the backend closes the record (DEV-3) every request in flight fails
//! with [`BlkError::Closed`]; [`BlockFront::reconnect`] closes this side,
//! waits for `CLOSED`, resets the record and connects a fresh ring.
//!
//! # Invariants
//! - A buffer frame stays granted and owned by its in-flight entry until the
//!   response for it was taken; its grant is then ended (the backend only
//!   copies, so it is never still in use; if it were, the frame is leaked
//!   rather than reused).
//! - Responses are matched by id; an id not in flight is ignored.
//!
//! # A hostile backend (BLK-10)
//! Nothing the backend writes is trusted beyond what is checked: a
//! producer index that fails RING-6 fails the call with
//! [`BlkError::Ring`] and takes nothing; a response whose id is not in
//! flight (unknown, or answered already) is dropped, one whose `operation`
//! is not the request's or whose `status` is not a `BLKIF_RSP_*` value
//! completes its request with `BLKIF_RSP_ERROR`; all three are counted
//! ([`BlockFront::garbage_responses`]). With [`BlockFront::set_timeout`],
//! a wait gives up with [`BlkError::Timeout`] however many events arrive.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use hypercall_abi::blkif::*;
use hypercall_abi::devbus::*;
use hypercall_abi::ring::{FrontRing, RingError, RingMemory};
use hypercall_abi::{DomId, Errno, PAGE_SIZE};

use super::devbus;
use super::grant_table;
use super::ring_pages::RingPages;
use crate::events::{self, Port};
use crate::grants::{GrantError, GrantRef};
use crate::mm::{Frame, MmError};
use crate::ring::SharedPage;

/// Ring pages a blkfront asks for.
pub const BLKFRONT_RING_PAGES: u32 = 2;

const UNIT: usize = BLKIF_UNIT as usize;
const PAGE: usize = PAGE_SIZE as usize;

/// Why a block operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// devbus or event-channel hypercall refused.
    Hypercall(Errno),
    /// Granting failed.
    Grant(GrantError),
    /// No memory for buffers.
    Mm(MmError),
    /// The backend broke the ring protocol.
    Ring(RingError),
    /// The record is not (or no longer) connected.
    Closed,
    /// The record does not exist or is not a block device of this domain.
    NoDevice,
    /// The request is malformed for this device (size, alignment, range).
    BadRequest,
    /// The backend answered with this status.
    Status(i16),
    /// No response within the timeout ([`BlockFront::set_timeout`]).
    Timeout,
}

impl core::fmt::Display for BlkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BlkError::Hypercall(e) => write!(f, "hypercall: {e}"),
            BlkError::Grant(e) => write!(f, "grant: {e}"),
            BlkError::Mm(e) => write!(f, "memory: {e:?}"),
            BlkError::Ring(e) => write!(f, "ring: {e}"),
            BlkError::Closed => write!(f, "device closed"),
            BlkError::NoDevice => write!(f, "no such device"),
            BlkError::BadRequest => write!(f, "bad request"),
            BlkError::Status(s) => write!(f, "backend status {s}"),
            BlkError::Timeout => write!(f, "no response in time"),
        }
    }
}

impl core::error::Error for BlkError {}

impl From<Errno> for BlkError {
    fn from(e: Errno) -> Self {
        BlkError::Hypercall(e)
    }
}

impl From<GrantError> for BlkError {
    fn from(e: GrantError) -> Self {
        BlkError::Grant(e)
    }
}

impl From<MmError> for BlkError {
    fn from(e: MmError) -> Self {
        BlkError::Mm(e)
    }
}

/// What the record says about the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// Capacity in 512-byte units.
    pub sectors: u64,
    /// Logical sector size.
    pub sector_size: u32,
    /// Writes are refused.
    pub readonly: bool,
    /// `BLKIF_FEATURE_*` of the backend.
    pub features: u32,
    /// Most segments of an indirect request.
    pub max_indirect_segments: u32,
}

/// An operation to queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read `units` 512-byte units at `sector`.
    Read { sector: u64, units: u32 },
    /// Write `data` (a multiple of 512 bytes) at `sector`.
    Write { sector: u64, data: Vec<u8> },
    /// Flush (BLK-5).
    Flush,
    /// Discard `units` at `sector` (BLK-6).
    Discard { sector: u64, units: u64 },
}

/// A finished request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The id [`BlockFront::submit`] returned.
    pub id: u64,
    /// `BLKIF_RSP_*`.
    pub status: i16,
    /// A successful read's data.
    pub data: Option<Vec<u8>>,
    /// Position among this connection's responses (0 first): the order in
    /// which the backend completed requests (BLK-7).
    pub seq: u64,
}

struct Inflight {
    operation: u8,
    /// Buffer frames and their grants, in transfer order, with the bytes each carries.
    buffers: Vec<(Frame, GrantRef, usize)>,
    /// Indirect segment pages and their grants.
    indirect: Vec<(Frame, GrantRef)>,
}

/// A connected block device.
pub struct BlockFront {
    record: u32,
    backend: DomId,
    port: Port,
    mem: RingPages,
    ring: FrontRing<BlkifRequest, BlkifResponse>,
    ring_grefs: Vec<GrantRef>,
    info: DiskInfo,
    next_id: u64,
    inflight: BTreeMap<u64, Inflight>,
    done: BTreeMap<u64, Completion>,
    /// Grants the backend still held when their request ended (never seen
    /// with a copying backend); their frames are kept out of use.
    leaked: usize,
    /// Responses taken so far.
    responses: u64,
    /// Responses refused or corrected (BLK-10).
    garbage: u64,
    /// How long a wait for responses may take, ns (`None`: for ever).
    timeout_ns: Option<u64>,
}

impl core::fmt::Debug for BlockFront {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlockFront")
            .field("record", &self.record)
            .field("backend", &self.backend)
            .field("port", &self.port)
            .field("info", &self.info)
            .field("inflight", &self.inflight.len())
            .finish()
    }
}

fn wake(_port: Port) {}

fn grant(backend: DomId, frame: &Frame, readonly: bool) -> Result<GrantRef, BlkError> {
    grant_table(|t| t.grant_access(backend, frame.mfn(), readonly))?.map_err(BlkError::Grant)
}

fn end_grant(gref: GrantRef) -> bool {
    grant_table(|t| t.end_access(gref).is_ok()).unwrap_or(false)
}

/// The status a response for an in-flight request of `operation` completes
/// it with (BLK-10): its own if it is one of BLK-7's and the operation
/// matches, else `BLKIF_RSP_ERROR`.
fn checked_status(rsp: &BlkifResponse, operation: u8) -> i16 {
    let defined = matches!(
        rsp.status,
        BLKIF_RSP_OKAY | BLKIF_RSP_ERROR | BLKIF_RSP_EOPNOTSUPP
    );
    if defined && rsp.operation == operation {
        rsp.status
    } else {
        BLKIF_RSP_ERROR
    }
}

/// The first block record naming this domain as frontend.
pub fn find_disk(me: DomId) -> Result<Option<DevbusRecord>, Errno> {
    Ok(devbus::records()?
        .into_iter()
        .find(|r| r.kind == DEVBUS_KIND_BLK && r.frontend == me))
}

impl BlockFront {
    /// Connects to record `id` (DEV-3): brings the record back to
    /// `INITIALISING` if a previous connection left it closed, grants a
    /// fresh ring and a port to the backend, publishes them and waits for
    /// the backend to connect.
    pub fn connect(id: u32) -> Result<BlockFront, BlkError> {
        devbus::watch()?;
        let record = devbus::get(id)?.ok_or(BlkError::NoDevice)?;
        if record.kind != DEVBUS_KIND_BLK {
            return Err(BlkError::NoDevice);
        }
        let backend = record.backend;
        if !devbus::settle_frontend(id)? {
            return Err(BlkError::NoDevice);
        }

        let mut frames = Vec::new();
        for _ in 0..BLKFRONT_RING_PAGES {
            frames.push(Frame::alloc_zeroed()?);
        }
        let mut ring_grefs = Vec::new();
        for frame in &frames {
            ring_grefs.push(grant(backend, frame, false)?);
        }
        let mut mem = RingPages::new(frames.into_iter().map(SharedPage::from_frame).collect());
        let ring = FrontRing::init(&mut mem).map_err(BlkError::Ring)?;
        let port = events::alloc_unbound(backend)?;
        events::set_handler(port, wake);
        let mut refs = [0u32; DEVBUS_MAX_RING_PAGES as usize];
        refs[..ring_grefs.len()].copy_from_slice(&ring_grefs);
        let mut front = BlockFront {
            record: id,
            backend,
            port,
            mem,
            ring,
            ring_grefs,
            info: DiskInfo {
                sectors: record.sectors,
                sector_size: record.sector_size,
                readonly: record.dev_flags & DEVBUS_FLAG_READONLY != 0,
                features: 0,
                max_indirect_segments: 0,
            },
            next_id: 1,
            inflight: BTreeMap::new(),
            done: BTreeMap::new(),
            leaked: 0,
            responses: 0,
            garbage: 0,
            timeout_ns: None,
        };
        let published = devbus::publish(&DevbusPublish {
            id,
            nr_ring_pages: BLKFRONT_RING_PAGES,
            event_port: port,
            pad: 0,
            ring_refs: refs,
        });
        if let Err(e) = published {
            front.release();
            return Err(e.into());
        }
        let connected = devbus::wait_for(id, |r| {
            r.state == DEVBUS_STATE_CONNECTED || r.closed_sides != 0
        });
        match connected {
            Ok(Some(r)) if r.state == DEVBUS_STATE_CONNECTED => {
                front.info.features = r.backend_features;
                front.info.max_indirect_segments = r.max_indirect_segments;
                Ok(front)
            }
            // The backend refused the rings: close our side and wait for it
            // to let go before the pages can be freed.
            Ok(Some(_)) => {
                let _ = front.disconnect();
                Err(BlkError::Closed)
            }
            Ok(None) => {
                front.release();
                Err(BlkError::NoDevice)
            }
            Err(e) => {
                front.release();
                Err(e.into())
            }
        }
    }

    /// The disk.
    pub fn info(&self) -> DiskInfo {
        self.info
    }

    /// The devbus record.
    pub fn record(&self) -> u32 {
        self.record
    }

    /// Slots in the ring.
    pub fn ring_size(&self) -> u32 {
        self.ring.size()
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Grants that could not be ended (should stay 0).
    pub fn leaked_grants(&self) -> usize {
        self.leaked
    }

    /// Most bytes one read or write request may move.
    pub fn max_transfer(&self) -> usize {
        let segments = if self.info.features & BLKIF_FEATURE_INDIRECT != 0 {
            self.info
                .max_indirect_segments
                .min(BLKIF_MAX_INDIRECT_SEGMENTS)
                .max(u32::from(BLKIF_MAX_SEGMENTS_PER_REQUEST))
        } else {
            u32::from(BLKIF_MAX_SEGMENTS_PER_REQUEST)
        };
        segments as usize * PAGE
    }

    fn still_connected(&self) -> Result<(), BlkError> {
        match devbus::get(self.record)? {
            Some(r) if r.state == DEVBUS_STATE_CONNECTED => Ok(()),
            _ => Err(BlkError::Closed),
        }
    }

    /// Builds the buffers and segments of a transfer of `bytes` bytes.
    fn buffers(
        &self,
        data: Option<&[u8]>,
        bytes: usize,
    ) -> Result<Vec<(Frame, GrantRef, usize)>, BlkError> {
        let readonly_grant = data.is_some();
        let mut out = Vec::new();
        let mut at = 0usize;
        while at < bytes {
            let n = (bytes - at).min(PAGE);
            let mut frame = Frame::alloc()?;
            if let Some(data) = data {
                frame.write_bytes(0, &data[at..at + n]);
            }
            let gref = match grant(self.backend, &frame, readonly_grant) {
                Ok(g) => g,
                Err(e) => {
                    for (_, g, _) in out {
                        end_grant(g);
                    }
                    return Err(e);
                }
            };
            out.push((frame, gref, n));
            at += n;
        }
        Ok(out)
    }

    /// Queues `op` (not yet visible to the backend: see [`Self::kick`]) and
    /// returns its id. Waits for a free ring slot if needed.
    pub fn submit(&mut self, op: Op) -> Result<u64, BlkError> {
        self.still_connected()?;
        let id = self.next_id;
        let mut req = BlkifRequest {
            id,
            ..BlkifRequest::default()
        };
        let mut entry = Inflight {
            operation: 0,
            buffers: Vec::new(),
            indirect: Vec::new(),
        };
        let (write, sector, bytes, data) = match &op {
            Op::Read { sector, units } => (false, *sector, *units as usize * UNIT, None),
            Op::Write { sector, data } => (true, *sector, data.len(), Some(data.as_slice())),
            Op::Flush => {
                req.operation = BLKIF_OP_FLUSH_DISKCACHE;
                (false, 0, 0, None)
            }
            Op::Discard { sector, units } => {
                req.operation = BLKIF_OP_DISCARD;
                req.sector_number = *sector;
                req.nr_sectors = *units;
                (false, 0, 0, None)
            }
        };
        if matches!(op, Op::Read { .. } | Op::Write { .. }) {
            if bytes == 0 || !bytes.is_multiple_of(UNIT) || bytes > self.max_transfer() {
                return Err(BlkError::BadRequest);
            }
            let buffers = self.buffers(data, bytes)?;
            let segments: Vec<BlkifSegment> = buffers
                .iter()
                .map(|(_, gref, n)| BlkifSegment {
                    gref: *gref,
                    first_sect: 0,
                    last_sect: (n / UNIT - 1) as u8,
                    pad: 0,
                })
                .collect();
            let rw = if write { BLKIF_OP_WRITE } else { BLKIF_OP_READ };
            req.sector_number = sector;
            if segments.len() <= usize::from(BLKIF_MAX_SEGMENTS_PER_REQUEST) {
                req.operation = rw;
                req.nr_segments = segments.len() as u8;
                req.seg[..segments.len()].copy_from_slice(&segments);
            } else {
                req.operation = BLKIF_OP_INDIRECT;
                req.indirect_op = rw;
                req.nr_indirect_segments = segments.len() as u16;
                for (i, chunk) in segments
                    .chunks(BLKIF_SEGMENTS_PER_INDIRECT_PAGE as usize)
                    .enumerate()
                {
                    let mut page = Frame::alloc_zeroed()?;
                    for (j, s) in chunk.iter().enumerate() {
                        let mut raw = [0u8; 8];
                        raw[..4].copy_from_slice(&s.gref.to_le_bytes());
                        raw[4] = s.first_sect;
                        raw[5] = s.last_sect;
                        page.write_bytes(j * 8, &raw);
                    }
                    let gref = grant(self.backend, &page, true)?;
                    req.indirect_grefs[i] = gref;
                    entry.indirect.push((page, gref));
                }
            }
            entry.buffers = buffers;
        }
        entry.operation = req.operation;
        while self.ring.free_requests() == 0 {
            self.kick()?;
            self.wait_for_responses()?;
        }
        self.ring
            .push_request(&mut self.mem, &req)
            .map_err(|_| BlkError::BadRequest)?;
        self.next_id += 1;
        self.inflight.insert(id, entry);
        Ok(id)
    }

    /// Queues `req` exactly as given (its `id` is replaced by a fresh one,
    /// which is returned). For tests that send malformed requests: the
    /// caller owns whatever grants the request names.
    pub fn submit_raw(&mut self, req: &BlkifRequest) -> Result<u64, BlkError> {
        self.still_connected()?;
        let id = self.next_id;
        let req = BlkifRequest { id, ..*req };
        while self.ring.free_requests() == 0 {
            self.kick()?;
            self.wait_for_responses()?;
        }
        self.ring
            .push_request(&mut self.mem, &req)
            .map_err(|_| BlkError::BadRequest)?;
        self.next_id += 1;
        self.inflight.insert(
            id,
            Inflight {
                operation: req.operation,
                buffers: Vec::new(),
                indirect: Vec::new(),
            },
        );
        Ok(id)
    }

    /// Writes `value` at byte `offset` of the shared ring, bypassing the
    /// protocol, and notifies the backend. For tests of a hostile frontend
    /// (offset 0 is `req_prod`, RING-1); the connection is unusable after.
    pub fn poke_ring(&mut self, offset: usize, value: u32) -> Result<(), BlkError> {
        self.mem.write_u32(offset, value);
        events::notify(self.port)?;
        Ok(())
    }

    /// Responses the backend sent that were dropped or corrected (BLK-10):
    /// unknown or repeated ids, a wrong `operation`, an undefined `status`.
    pub fn garbage_responses(&self) -> u64 {
        self.garbage
    }

    /// Bounds every later wait for responses to `ns` (`None`: no bound);
    /// a wait that runs out fails with [`BlkError::Timeout`].
    pub fn set_timeout(&mut self, ns: Option<u64>) {
        self.timeout_ns = ns;
    }

    /// The backend domain.
    pub fn backend(&self) -> DomId {
        self.backend
    }

    /// Publishes queued requests, notifying the backend if it asked (RING-4).
    pub fn kick(&mut self) -> Result<(), BlkError> {
        if self.ring.publish_requests(&mut self.mem) {
            events::notify(self.port)?;
        }
        Ok(())
    }

    /// Takes every published response; returns how many.
    pub fn poll(&mut self) -> Result<usize, BlkError> {
        let mut n = 0;
        loop {
            let rsp = match self.ring.take_response(&self.mem) {
                Ok(Some(rsp)) => rsp,
                Ok(None) => return Ok(n),
                Err(e) => return Err(BlkError::Ring(e)),
            };
            n += 1;
            let seq = self.responses;
            self.responses += 1;
            let Some(entry) = self.inflight.remove(&rsp.id) else {
                self.garbage += 1;
                continue;
            };
            let status = checked_status(&rsp, entry.operation);
            if status != rsp.status {
                self.garbage += 1;
            }
            let rsp = BlkifResponse { status, ..rsp };
            let data = (rsp.status == BLKIF_RSP_OKAY && entry.operation != BLKIF_OP_WRITE)
                .then(|| {
                    let mut data = Vec::new();
                    for (frame, _, len) in &entry.buffers {
                        let at = data.len();
                        data.resize(at + len, 0);
                        frame.read_bytes(0, &mut data[at..]);
                    }
                    data
                })
                .filter(|d| !d.is_empty());
            self.release_entry(entry);
            self.done.insert(
                rsp.id,
                Completion {
                    id: rsp.id,
                    status: rsp.status,
                    data,
                    seq,
                },
            );
        }
    }

    fn release_entry(&mut self, entry: Inflight) {
        let frames = entry
            .buffers
            .into_iter()
            .map(|(f, g, _)| (f, g))
            .chain(entry.indirect);
        for (frame, gref) in frames {
            if !end_grant(gref) {
                self.leaked += 1;
                core::mem::forget(frame);
            }
        }
    }

    /// Blocks until at least one response is there, or the record closed,
    /// or the timeout ran out.
    fn wait_for_responses(&mut self) -> Result<(), BlkError> {
        let record = self.record;
        let mut closed = false;
        let mem = &mut self.mem;
        let ring = &mut self.ring;
        let ready = || {
            if ring.final_check_for_responses(mem) {
                return true;
            }
            closed = !matches!(
                devbus::get(record),
                Ok(Some(r)) if r.state == DEVBUS_STATE_CONNECTED
            );
            closed
        };
        match self.timeout_ns {
            None => events::wait_until(ready),
            Some(ns) => {
                let deadline = crate::time::now_ns().saturating_add(ns);
                let ports = [self.port, devbus::watch()?];
                if !events::wait_until_deadline(&ports, deadline, ready) {
                    return Err(BlkError::Timeout);
                }
            }
        }
        if closed {
            // A last look: responses published before the close still count.
            if self.poll()? == 0 {
                return Err(BlkError::Closed);
            }
        }
        self.poll().map(drop)
    }

    /// The completion of `id`, if it arrived.
    pub fn completion(&mut self, id: u64) -> Option<Completion> {
        self.done.remove(&id)
    }

    /// Blocks until request `id` completed (publishing queued requests first).
    pub fn wait(&mut self, id: u64) -> Result<Completion, BlkError> {
        self.kick()?;
        loop {
            self.poll()?;
            if let Some(c) = self.done.remove(&id) {
                return Ok(c);
            }
            if !self.inflight.contains_key(&id) {
                return Err(BlkError::BadRequest);
            }
            self.wait_for_responses()?;
        }
    }

    fn run(&mut self, op: Op) -> Result<Completion, BlkError> {
        let id = self.submit(op)?;
        let c = self.wait(id)?;
        if c.status == BLKIF_RSP_OKAY {
            Ok(c)
        } else {
            Err(BlkError::Status(c.status))
        }
    }

    /// Reads `buf.len()` bytes (a multiple of 512) at `sector`.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlkError> {
        let mut done = 0usize;
        while done < buf.len() {
            let n = (buf.len() - done).min(self.max_transfer());
            let c = self.run(Op::Read {
                sector: sector + (done / UNIT) as u64,
                units: (n / UNIT) as u32,
            })?;
            let data = c.data.ok_or(BlkError::BadRequest)?;
            buf[done..done + n].copy_from_slice(&data[..n]);
            done += n;
        }
        Ok(())
    }

    /// Writes `data` (a multiple of 512 bytes) at `sector`.
    pub fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BlkError> {
        let mut done = 0usize;
        while done < data.len() {
            let n = (data.len() - done).min(self.max_transfer());
            self.run(Op::Write {
                sector: sector + (done / UNIT) as u64,
                data: data[done..done + n].to_vec(),
            })?;
            done += n;
        }
        Ok(())
    }

    /// Flushes (BLK-5): writes completed before this call are durable when it returns.
    pub fn flush(&mut self) -> Result<(), BlkError> {
        self.run(Op::Flush).map(drop)
    }

    /// Discards `units` at `sector`.
    pub fn discard(&mut self, sector: u64, units: u64) -> Result<(), BlkError> {
        self.run(Op::Discard { sector, units }).map(drop)
    }

    /// Fails every request in flight and frees this connection's ring,
    /// grants and port (after the backend let go of them).
    fn release(&mut self) {
        let inflight = core::mem::take(&mut self.inflight);
        for (id, entry) in inflight {
            self.release_entry(entry);
            self.done.insert(
                id,
                Completion {
                    id,
                    status: BLKIF_RSP_ERROR,
                    data: None,
                    seq: u64::MAX,
                },
            );
        }
        // Ring grants that cannot be ended stay in `ring_grefs`, and their
        // pages are then never freed (see `Drop`).
        let grefs = core::mem::take(&mut self.ring_grefs);
        for gref in grefs {
            if !end_grant(gref) {
                self.leaked += 1;
                self.ring_grefs.push(gref);
            }
        }
        let _ = events::close(self.port);
    }

    /// Closes this side of the record, waits until the backend closed its
    /// side too (so it no longer maps the ring), and frees everything.
    pub fn disconnect(mut self) -> Result<(), BlkError> {
        devbus::close(self.record)?;
        devbus::wait_for(self.record, |r| r.state == DEVBUS_STATE_CLOSED)?;
        self.release();
        Ok(())
    }

    /// After the backend closed (requests fail with [`BlkError::Closed`]):
    /// closes this side, waits for `CLOSED`, resets and connects again.
    pub fn reconnect(self) -> Result<BlockFront, BlkError> {
        let id = self.record;
        self.disconnect()?;
        BlockFront::connect(id)
    }

    /// The ring memory (for tests that inspect it).
    pub fn ring_len(&self) -> usize {
        self.mem.len()
    }
}

impl Drop for BlockFront {
    fn drop(&mut self) {
        if !self.ring_grefs.is_empty() {
            // Still granted (not disconnected, or the backend held on): the
            // backend may still write the ring, so its frames are never reused.
            for page in self.mem.take_pages() {
                core::mem::forget(page);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsp(operation: u8, status: i16) -> BlkifResponse {
        BlkifResponse {
            id: 1,
            operation,
            status,
            ..BlkifResponse::default()
        }
    }

    #[test]
    fn only_defined_statuses_of_the_right_operation_pass() {
        for status in [BLKIF_RSP_OKAY, BLKIF_RSP_ERROR, BLKIF_RSP_EOPNOTSUPP] {
            assert_eq!(
                checked_status(&rsp(BLKIF_OP_READ, status), BLKIF_OP_READ),
                status
            );
        }
        // A wrong operation never completes a request successfully.
        assert_eq!(
            checked_status(&rsp(BLKIF_OP_WRITE, BLKIF_RSP_OKAY), BLKIF_OP_READ),
            BLKIF_RSP_ERROR
        );
        for status in [1, 77, -3, i16::MIN, i16::MAX] {
            assert_eq!(
                checked_status(&rsp(BLKIF_OP_READ, status), BLKIF_OP_READ),
                BLKIF_RSP_ERROR
            );
        }
    }
}
