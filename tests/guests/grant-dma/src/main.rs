//! `grant-dma`: the granting side of the `dd-grant-dma` scenario (PDEV-8).
//! Grants domain 0 one zeroed frame (reference 0, writable), waits until the
//! data domain 0's disk DMAs into it arrives, then waits until domain 0 has
//! unmapped it (the grant can be ended) and checks the frame was not
//! written after that. Powers off when done; panics (crashing this domain,
//! which the scenario notices) on anything unexpected.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

use hypercall_abi::start_info::StartInfo;
use pv_guest_kit::grants::GrantTable;
use pv_guest_kit::hypercall::sched_yield;
use pv_guest_kit::mm::Frame;
use pv_guest_kit::println;

pv_guest_kit::entry!(kmain);

/// What domain 0 DMAs into the frame (its first 8 bytes are checked).
const PATTERN: &[u8; 16] = b"grant-dma-data!\n";
/// Yields before giving up on a step.
const PATIENCE: u32 = 2_000_000;

fn kmain(_si: &'static StartInfo) {
    let mut table = match GrantTable::setup(1) {
        Ok(t) => t,
        Err(e) => panic!("grant-dma: grant table: {e:?}"),
    };
    let frame = match Frame::alloc_zeroed() {
        Ok(f) => f,
        Err(e) => panic!("grant-dma: no frame: {e:?}"),
    };
    let gref = match table.grant_access(0, frame.mfn(), false) {
        Ok(g) => g,
        Err(e) => panic!("grant-dma: granting: {e:?}"),
    };
    println!(
        "grant-dma: granted domain 0 frame mfn {:#x} as gref {gref}",
        frame.mfn()
    );
    let want = u64::from_le_bytes([
        PATTERN[0], PATTERN[1], PATTERN[2], PATTERN[3], PATTERN[4], PATTERN[5], PATTERN[6],
        PATTERN[7],
    ]);
    let mut arrived = false;
    for _ in 0..PATIENCE {
        if frame.read_u64(0) == want
            && frame.read_u64(511)
                == u64::from_le_bytes([
                    PATTERN[8],
                    PATTERN[9],
                    PATTERN[10],
                    PATTERN[11],
                    PATTERN[12],
                    PATTERN[13],
                    PATTERN[14],
                    PATTERN[15],
                ])
        {
            arrived = true;
            break;
        }
        sched_yield();
    }
    if !arrived {
        panic!("grant-dma: the device's data never arrived in the granted frame");
    }
    println!("grant-dma: the device's data arrived in the granted frame");
    let mut ended = false;
    for _ in 0..PATIENCE {
        if table.end_access(gref).is_ok() {
            ended = true;
            break;
        }
        sched_yield();
    }
    if !ended {
        panic!("grant-dma: domain 0 never unmapped the grant");
    }
    // Clear the frame; whatever lands in it from now on came from a device
    // that should no longer reach it.
    let mut frame = frame;
    frame.zero();
    for _ in 0..20_000 {
        sched_yield();
    }
    let untouched = (0..512).all(|i| frame.read_u64(i) == 0);
    if !untouched {
        panic!("grant-dma: the frame was written after the grant ended");
    }
    println!("grant-dma: grant ended; nothing reached the frame afterwards");
}
