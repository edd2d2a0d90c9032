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
use pv_guest_kit::devices::blkfront::{find_disk, BlockFront, IoBuf};
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

/// Makes `buf` what sequential request `i` wrote: the base pattern with
/// `i` in its first 8 bytes.
fn stamp(buf: &mut [u8], i: u64) {
    buf[..8].copy_from_slice(&i.to_le_bytes());
}

/// Runs `count` requests of one figure with `depth` in flight, each on a
/// buffer of `bufs` (granted once, reused: see `IoBuf`); returns the TSC
/// ticks. `plan(i)` gives request `i`'s start unit; a write stamps `i` in
/// its buffer's first 8 bytes. Each request is published at once (so the
/// backend works while the next is queued); every completion must be OKAY.
fn batch(
    front: &mut BlockFront,
    bufs: &mut Vec<IoBuf>,
    (write, units, count, depth): (bool, u32, u64, usize),
    plan: &mut dyn FnMut(u64) -> u64,
    submit_ticks: &mut u64,
) -> u64 {
    let mut in_flight: VecDeque<u64> = VecDeque::new();
    let mut issued = 0u64;
    let start = rdtsc();
    while issued < count || !in_flight.is_empty() {
        while issued < count && in_flight.len() < depth {
            let t = rdtsc();
            let Some(mut buf) = bufs.pop() else { break };
            if write {
                buf.write(0, &issued.to_le_bytes());
            }
            let id = front
                .submit_io(write, plan(issued), units, buf)
                .unwrap_or_else(|e| panic!("blkbench: submit: {e}"));
            front
                .kick()
                .unwrap_or_else(|e| panic!("blkbench: kick: {e}"));
            *submit_ticks += rdtsc() - t;
            in_flight.push_back(id);
            issued += 1;
        }
        // Oldest first; the others keep completing meanwhile (in any order).
        let Some(id) = in_flight.pop_front() else {
            break;
        };
        let (c, buf) = front
            .wait_io(id)
            .unwrap_or_else(|e| panic!("blkbench: wait: {e}"));
        assert_eq!(c.status, 0, "blkbench: request {id} failed");
        bufs.push(buf.unwrap_or_else(|| panic!("blkbench: request {id} lost its buffer")));
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
    let mut buf = base_pattern();
    // The buffers, granted once and filled once (as the local figures move
    // no data through the CPU either); kept until the disk is disconnected
    // (a backend may map them for the connection's life, BLK-11).
    let io_bufs = |n: usize, bytes: usize| -> Vec<IoBuf> {
        (0..n)
            .map(|_| {
                let mut b = front
                    .io_buf(bytes)
                    .unwrap_or_else(|e| panic!("blkbench: buffers: {e}"));
                b.write(0, &buf[..bytes]);
                b
            })
            .collect()
    };
    let mut seq_bufs = io_bufs(blk_bench::SEQ_DEPTH, blk_bench::SEQ_REQUEST_BYTES);
    let mut rand_bufs = io_bufs(blk_bench::RAND_DEEP, blk_bench::RAND_BYTES);
    for (name, write, random, depth, count) in blk_bench::FIGURES {
        let bytes = if random {
            blk_bench::RAND_BYTES
        } else {
            blk_bench::SEQ_REQUEST_BYTES
        };
        let bufs = if random {
            &mut rand_bufs
        } else {
            &mut seq_bufs
        };
        let mut samples = Vec::new();
        let mut submit_ticks = 0u64;
        for _ in 0..blk_bench::BATCHES {
            let mut sectors = RandomSectors::new(blk_bench::REGION_UNITS);
            let mut plan = |i: u64| {
                if random {
                    sectors.next_sector()
                } else {
                    i * seq_units
                }
            };
            let shape = (write, (bytes / 512) as u32, count, depth);
            samples.push(batch(&mut front, bufs, shape, &mut plan, &mut submit_ticks));
        }
        let total: u64 = samples.iter().sum();
        println!(
            "blkbench: {name}: {}% of the time in submit (stamping, queueing, publishing)",
            submit_ticks * 100 / total.max(1)
        );
        blk_bench::report(
            &alloc::format!("guest_blk_{name}"),
            random,
            count,
            &mut samples,
            tsc_hz,
        );
        if write {
            // What the batches wrote is there, request by request.
            const PIECE: usize = 256 * 1024;
            let mut back = alloc::vec![0u8; PIECE];
            for i in 0..count {
                stamp(&mut buf, i);
                for (k, expected) in buf.chunks(PIECE).enumerate() {
                    front
                        .read(i * seq_units + (k * PIECE / 512) as u64, &mut back)
                        .unwrap_or_else(|e| panic!("blkbench: read back: {e}"));
                    assert!(
                        back == expected,
                        "blkbench: request {i}'s data did not read back"
                    );
                }
            }
            println!("blkbench: the {count} MiB written read back intact");
        }
    }
    // Close with reads still in flight on persistent buffers: the backend
    // must unmap them (after the device is done) before it closes its side,
    // so every grant ends.
    let mut left = 0;
    for (i, buf) in seq_bufs.drain(..).enumerate() {
        front
            .submit_io(false, i as u64 * seq_units, seq_units as u32, buf)
            .unwrap_or_else(|e| panic!("blkbench: submit: {e}"));
        left += 1;
    }
    front
        .kick()
        .unwrap_or_else(|e| panic!("blkbench: kick: {e}"));
    // Let the driver domain take them to the device first.
    pv_guest_kit::hypercall::sched_yield();
    let leaked = front
        .close()
        .unwrap_or_else(|e| panic!("blkbench: disconnect: {e}"));
    let stuck = leaked + rand_bufs.into_iter().map(IoBuf::release).sum::<usize>();
    assert_eq!(
        stuck, 0,
        "blkbench: the backend still maps buffers after closing"
    );
    println!("blkbench: disconnected with {left} reads in flight; every buffer grant ended");
    println!("blkbench: done");
}
