//! The block-device trait the block backend (and the self-tests) use, with
//! the request validation every driver shares.
//!
//! A request names sectors and the DMA [`Segment`]s that hold the data; a
//! driver queues it ([`BlockDevice::submit`]) and reports its end through
//! [`BlockDevice::poll`], so several requests can be in flight (queue depth).
//! Data never passes through the trait: the device reads and writes the
//! segments directly.
//!
//! # Invariants
//! - A driver accepts only requests [`validate`] passes: inside the disk,
//!   whole sectors, at most [`BlockInfo::max_segments`] non-empty segments.

use core::fmt;

use crate::dma::Segment;

/// What a block device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// Sectors on the disk.
    pub sectors: u64,
    /// Bytes per sector (512 or 4096).
    pub sector_size: u32,
    /// Most segments in one request.
    pub max_segments: u16,
    /// Most requests in flight.
    pub queue_depth: u16,
}

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockOp {
    /// Device → memory.
    Read,
    /// Memory → device.
    Write,
    /// Make earlier writes durable.
    Flush,
}

/// One request.
#[derive(Clone, Copy, Debug)]
pub struct BlockRequest<'a> {
    /// What to do.
    pub op: BlockOp,
    /// First sector.
    pub sector: u64,
    /// Where the data is (empty for a flush).
    pub segments: &'a [Segment],
    /// The caller's tag, returned in the completion.
    pub tag: u64,
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// Too many requests in flight: poll and retry.
    Busy,
    /// The sectors leave the disk.
    OutOfRange,
    /// Not whole sectors, an empty segment, or a segment layout the device
    /// cannot express.
    BadLayout,
    /// More segments than the device takes.
    TooManySegments,
    /// The device reported an I/O error.
    Io,
    /// The device does not support the operation.
    Unsupported,
    /// The device misbehaved (a completion for no request, a bad status).
    DeviceFault,
    /// No completion in time.
    Timeout,
    /// No DMA memory for the request's bookkeeping.
    NoMemory,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            BlockError::Busy => "queue full",
            BlockError::OutOfRange => "sectors out of range",
            BlockError::BadLayout => "bad buffer layout",
            BlockError::TooManySegments => "too many segments",
            BlockError::Io => "I/O error",
            BlockError::Unsupported => "unsupported",
            BlockError::DeviceFault => "device fault",
            BlockError::Timeout => "timeout",
            BlockError::NoMemory => "no DMA memory",
        };
        f.write_str(what)
    }
}

/// The end of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockCompletion {
    /// The request's tag.
    pub tag: u64,
    /// Its outcome.
    pub result: Result<(), BlockError>,
}

/// A block device.
pub trait BlockDevice {
    /// Geometry and limits.
    fn info(&self) -> BlockInfo;
    /// Queues `req`; [`BlockError::Busy`] when the queue is full.
    fn submit(&mut self, req: &BlockRequest<'_>) -> Result<(), BlockError>;
    /// One finished request, if any.
    fn poll(&mut self) -> Option<BlockCompletion>;
    /// Requests in flight.
    fn in_flight(&self) -> usize;
}

/// Checks `req` against the device's limits; returns its sector count.
pub fn validate(info: &BlockInfo, req: &BlockRequest<'_>) -> Result<u64, BlockError> {
    if req.op == BlockOp::Flush {
        return if req.segments.is_empty() {
            Ok(0)
        } else {
            Err(BlockError::BadLayout)
        };
    }
    if req.segments.is_empty() || req.segments.iter().any(|s| s.len == 0) {
        return Err(BlockError::BadLayout);
    }
    if req.segments.len() > usize::from(info.max_segments) {
        return Err(BlockError::TooManySegments);
    }
    let bytes: u64 = req.segments.iter().map(|s| u64::from(s.len)).sum();
    let sector_size = u64::from(info.sector_size.max(1));
    if !bytes.is_multiple_of(sector_size) {
        return Err(BlockError::BadLayout);
    }
    let count = bytes / sector_size;
    match req.sector.checked_add(count) {
        Some(end) if end <= info.sectors => Ok(count),
        _ => Err(BlockError::OutOfRange),
    }
}

/// Submits `req` and polls until it ends, as long as `keep_waiting` says so.
/// Completions of other requests seen meanwhile are dropped, so use this
/// only with nothing else in flight.
pub fn run_sync(
    dev: &mut impl BlockDevice,
    req: &BlockRequest<'_>,
    mut keep_waiting: impl FnMut() -> bool,
) -> Result<(), BlockError> {
    dev.submit(req)?;
    loop {
        if let Some(done) = dev.poll() {
            if done.tag == req.tag {
                return done.result;
            }
        } else if !keep_waiting() {
            return Err(BlockError::Timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INFO: BlockInfo = BlockInfo {
        sectors: 1000,
        sector_size: 512,
        max_segments: 4,
        queue_depth: 8,
    };

    fn seg(len: u32) -> Segment {
        Segment { addr: 0x1000, len }
    }

    fn req(op: BlockOp, sector: u64, segments: &[Segment]) -> BlockRequest<'_> {
        BlockRequest {
            op,
            sector,
            segments,
            tag: 7,
        }
    }

    #[test]
    fn validation() {
        assert_eq!(validate(&INFO, &req(BlockOp::Read, 0, &[seg(4096)])), Ok(8));
        assert_eq!(
            validate(&INFO, &req(BlockOp::Write, 992, &[seg(4096)])),
            Ok(8)
        );
        assert_eq!(
            validate(&INFO, &req(BlockOp::Write, 993, &[seg(4096)])),
            Err(BlockError::OutOfRange)
        );
        assert_eq!(
            validate(&INFO, &req(BlockOp::Read, u64::MAX, &[seg(512)])),
            Err(BlockError::OutOfRange)
        );
        assert_eq!(
            validate(&INFO, &req(BlockOp::Read, 0, &[seg(500)])),
            Err(BlockError::BadLayout)
        );
        assert_eq!(
            validate(&INFO, &req(BlockOp::Read, 0, &[seg(0), seg(512)])),
            Err(BlockError::BadLayout)
        );
        assert_eq!(
            validate(&INFO, &req(BlockOp::Read, 0, &[])),
            Err(BlockError::BadLayout)
        );
        assert_eq!(
            validate(&INFO, &req(BlockOp::Read, 0, &[seg(512); 5])),
            Err(BlockError::TooManySegments)
        );
        assert_eq!(validate(&INFO, &req(BlockOp::Flush, 0, &[])), Ok(0));
        assert_eq!(
            validate(&INFO, &req(BlockOp::Flush, 0, &[seg(512)])),
            Err(BlockError::BadLayout)
        );
    }

    proptest! {
        /// An accepted request lies inside the disk, in whole sectors.
        #[test]
        fn accepted_requests_fit(sector in any::<u64>(), lens in proptest::collection::vec(any::<u32>(), 0..6)) {
            let segments: alloc::vec::Vec<Segment> = lens.iter().map(|&l| seg(l % 9000)).collect();
            if let Ok(count) = validate(&INFO, &req(BlockOp::Read, sector, &segments)) {
                let bytes: u64 = segments.iter().map(|s| u64::from(s.len)).sum();
                prop_assert_eq!(bytes, count * 512);
                prop_assert!(sector + count <= INFO.sectors);
                prop_assert!(segments.len() <= 4 && segments.iter().all(|s| s.len > 0));
            }
        }
    }
}
