//! The management-protocol fuzz target (`mgmt`, SPEC.md §17): arbitrary
//! bytes, fed to the frame decoder in arbitrary pieces (the first byte of
//! the input picks the piece size) with frames spliced in, then every frame
//! found is parsed as every request the driver domain's toolstack accepts.
//!
//! Invariants: the decoder never panics and only yields frames whose header
//! and payload CRCs check and whose length is at most `MAX_PAYLOAD`; a
//! well-formed frame placed after the noise is always found (the decoder
//! resynchronises, MGMT-2); a parsed `CREATE` stays within its limits.

use hypercall_abi::mgmt::{
    crc32, encode_frame, exact, CreateRequest, Decoder, DomRef, ImageRef, MAX_CMDLINE, MAX_DISKS,
    MAX_FRAME, MAX_NICS, MAX_PAYLOAD, MGMT_MAGIC,
};
use zerocopy::FromBytes;

/// Tokens the mutator inserts.
pub const MGMT_DICTIONARY: &[&[u8]] = &[b"PVMG", &[1, 0], &[6, 0], &[0xff, 0xff, 0, 0]];

/// A sentinel frame appended to every input: the decoder must find it.
fn sentinel() -> Vec<u8> {
    let mut out = vec![0u8; MAX_FRAME];
    let n = encode_frame(0x7e, 0x5e17_1e11, &[b"sentinel"], &mut out).expect("encode");
    out.truncate(n);
    out
}

/// Seeds: a few valid frames.
pub fn mgmt_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (kind, payload) in [
        (1u16, vec![1u8, 0, 0, 0, 0, 0, 0, 0]),
        (3, Vec::new()),
        (7, vec![5, 0, 0, 0, 0, 0, 0, 0]),
        (6, vec![0u8; 96]),
    ] {
        let mut out = vec![0u8; MAX_FRAME];
        let n = encode_frame(kind, 9, &[&payload], &mut out).expect("encode");
        let mut seed = vec![7u8];
        seed.extend_from_slice(&out[..n]);
        seeds.push(seed);
    }
    seeds
}

/// Runs one input; accepted if it held at least one frame besides the sentinel.
pub fn mgmt(bytes: &[u8]) -> bool {
    let step = usize::from(*bytes.first().unwrap_or(&1)).max(1);
    let mut stream = bytes.get(1..).unwrap_or(&[]).to_vec();
    // A partial frame at the end of the input may swallow the sentinel's
    // bytes as its payload; a quiet line resets it (as the server does),
    // so the sentinel comes after a reset.
    let mut decoder = Decoder::new();
    let mut found = 0usize;
    let mut sentinel_seen = false;
    let check = |d: &mut Decoder, found: &mut usize, sentinel_seen: &mut bool| {
        while let Some((h, p)) = d.frame() {
            assert_eq!(h.magic, MGMT_MAGIC, "frame without magic");
            assert!(
                p.len() <= MAX_PAYLOAD && p.len() == h.len as usize,
                "length"
            );
            assert_eq!(crc32(p), h.payload_crc, "payload CRC");
            if h.kind == 0x7e && h.seq == 0x5e17_1e11 && p == b"sentinel" {
                *sentinel_seen = true;
            } else {
                *found += 1;
                parse_as_requests(p);
            }
            d.pop();
        }
    };
    let feed = |d: &mut Decoder, data: &[u8], found: &mut usize, seen: &mut bool| {
        for piece in data.chunks(step) {
            let mut piece = piece;
            loop {
                let n = d.push(piece);
                piece = &piece[n..];
                check(d, found, seen);
                if piece.is_empty() {
                    break;
                }
            }
        }
    };
    feed(&mut decoder, &stream, &mut found, &mut sentinel_seen);
    decoder.reset();
    stream = sentinel();
    feed(&mut decoder, &stream, &mut found, &mut sentinel_seen);
    assert!(
        sentinel_seen,
        "the decoder did not resynchronise on a good frame"
    );
    found > 0
}

fn parse_as_requests(payload: &[u8]) {
    if let Ok(req) = CreateRequest::parse(payload) {
        assert!(req.nr_disks() <= MAX_DISKS && req.nr_nics() <= MAX_NICS);
        assert!(req.cmdline.len() <= MAX_CMDLINE);
        for i in 0..req.nr_disks() {
            assert!(req.disk(i).is_some());
        }
    }
    let _ = exact::<DomRef>(payload);
    let _ = ImageRef::read_from_prefix(payload);
}
