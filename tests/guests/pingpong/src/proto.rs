//! The ping/pong protocol: what crosses the ring and how both sides fold the
//! exchange into one checksum (equal on both sides when every message
//! arrived intact and in order).

use zerocopy::{FromBytes, Immutable, IntoBytes};

/// A request: sequence number and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
pub struct Request {
    pub seq: u64,
    pub payload: u64,
}

/// A response: the request's sequence number and the transformed payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
pub struct Response {
    pub seq: u64,
    pub payload: u64,
}

/// The payload of request `seq` (splitmix64).
pub fn payload(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The backend's answer to `req`.
pub fn respond(req: &Request) -> Response {
    Response {
        seq: req.seq,
        payload: req.payload.wrapping_mul(31).wrapping_add(req.seq),
    }
}

/// Checksum of no messages.
pub const CHECKSUM_INIT: u64 = 0xcbf2_9ce4_8422_2325;

/// Folds one response into the checksum (FNV-1a style, per 64-bit word).
pub fn fold(sum: u64, rsp: &Response) -> u64 {
    ((sum ^ rsp.payload).wrapping_mul(0x0000_0100_0000_01b3) ^ rsp.seq).rotate_left(7)
}
