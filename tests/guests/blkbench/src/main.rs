//! `blkbench`: the guest side of the block throughput benchmark
//! (`cargo xtask bench`, scenario `dd-bench`). Domain 0 has measured its
//! own figures on the same disk region with the same plan
//! ([`pv_guest_kit::blk_bench`]) before serving this guest; this guest runs
//! that plan through blkfront with many requests in flight and prints
//! `guest_blk_seq_write_mibs`, `guest_blk_seq_read_mibs`,
//! `guest_blk_rand4k_qd1_iops` and `guest_blk_rand4k_qd32_iops`
//! (best and median over the batches; the `BENCH` line carries the median).
//!
//! Every request must succeed, and after the write figure the data read
//! back must be what was written: a benchmark of a backend that loses or
//! misplaces data fails (panics) instead of printing a figure.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use hypercall_abi::start_info::StartInfo;
use pv_guest_kit::bench::rdtsc;
use pv_guest_kit::blk_bench::{self, RandomSectors};
use pv_guest_kit::devices::blkfront::{find_disk, BlockFront, Op};
use pv_guest_kit::devices::devbus;
use pv_guest_kit::events;
use pv_guest_kit::println;

pv_guest_kit::entry!(kmain);

/// The bytes every sequential write carries before its number is stamped
/// in (built once, outside the timed batches).
fn base_pattern() -> Vec<u8> {
    (0..blk_bench::SEQ_REQUEST_BYTES)
        .map(|i| (i as u8).wrapping_mul(37) ^ (i >> 9) as u8)
        .collect()
}

/// The bytes sequential request `i` writes: the base pattern with `i` in
/// its first 8 bytes (a copy, as an application's buffer would be).
fn pattern(base: &[u8], i: u64) -> Vec<u8> {
    let mut data = base.to_vec();
    data[..8].copy_from_slice(&i.to_le_bytes());
    data
}

/// Runs `count` requests of one figure with `depth` in flight; returns the
/// TSC ticks. `make(i)` builds request `i`; every completion must be OKAY.
fn batch(front: &mut BlockFront, count: u64, depth: usize, make: &mut dyn FnMut(u64) -> Op) -> u64 {
    let mut in_flight: VecDeque<u64> = VecDeque::new();
    let mut issued = 0u64;
    let start = rdtsc();
    while issued < count || !in_flight.is_empty() {
        while issued < count && in_flight.len() < depth {
            let id = front
                .submit(make(issued))
                .unwrap_or_else(|e| panic!("blkbench: submit: {e}"));
            in_flight.push_back(id);
            issued += 1;
        }
        // Oldest first; the others keep completing meanwhile (in any order).
        let Some(id) = in_flight.pop_front() else {
            break;
        };
        let c = front
            .wait(id)
            .unwrap_or_else(|e| panic!("blkbench: wait: {e}"));
        assert_eq!(c.status, 0, "blkbench: request {id} failed");
    }
    rdtsc() - start
}

fn kmain(si: &'static StartInfo) {
    if let Err(e) = devbus::watch() {
        panic!("blkbench: VIRQ_DEVBUS: {e}");
    }
    let mut record = None;
    events::wait_until(|| {
        record = find_disk(si.domid).unwrap_or_else(|e| panic!("blkbench: devbus: {e}"));
        record.is_some()
    });
    let Some(record) = record else { return };
    let mut front =
        BlockFront::connect(record.id).unwrap_or_else(|e| panic!("blkbench: connect: {e}"));
    let info = front.info();
    let tsc_hz = pv_guest_kit::time::tsc_hz();
    println!(
        "blkbench: disk of {} units, ring of {} slots, up to {} KiB per request",
        info.sectors,
        front.ring_size(),
        front.max_transfer() / 1024
    );
    assert!(
        info.sectors >= blk_bench::REGION_UNITS,
        "blkbench: disk smaller than the benchmark region"
    );
    assert!(
        front.max_transfer() >= blk_bench::SEQ_REQUEST_BYTES,
        "blkbench: the backend cannot take 1 MiB requests"
    );
    let seq_units = (blk_bench::SEQ_REQUEST_BYTES / 512) as u64;
    let base = base_pattern();
    for (name, write, random, depth, count) in blk_bench::FIGURES {
        let mut samples = Vec::new();
        for _ in 0..blk_bench::BATCHES {
            let mut sectors = RandomSectors::new(blk_bench::REGION_UNITS);
            let mut make = |i: u64| match (write, random) {
                (true, _) => Op::Write {
                    sector: i * seq_units,
                    data: pattern(&base, i),
                },
                (false, false) => Op::Read {
                    sector: i * seq_units,
                    units: seq_units as u32,
                },
                (false, true) => Op::Read {
                    sector: sectors.next_sector(),
                    units: (blk_bench::RAND_BYTES / 512) as u32,
                },
            };
            samples.push(batch(&mut front, count, depth, &mut make));
        }
        blk_bench::report(
            &alloc::format!("guest_blk_{name}"),
            random,
            count,
            &mut samples,
            tsc_hz,
        );
        if write {
            // What the batches wrote is there, request by request.
            for i in 0..count {
                let mut back = alloc::vec![0u8; blk_bench::SEQ_REQUEST_BYTES];
                front
                    .read(i * seq_units, &mut back)
                    .unwrap_or_else(|e| panic!("blkbench: read back: {e}"));
                assert!(
                    back == pattern(&base, i),
                    "blkbench: request {i}'s data did not read back"
                );
            }
            println!("blkbench: the {count} MiB written read back intact");
        }
    }
    front
        .disconnect()
        .unwrap_or_else(|e| panic!("blkbench: disconnect: {e}"));
    println!("blkbench: done");
}
