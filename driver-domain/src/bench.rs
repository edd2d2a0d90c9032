//! `bench=1`: the driver domain's device figures for `cargo xtask bench`,
//! timed with the TSC inside domain 0 (min/median over batches, `BENCH`
//! lines carry the median): sequential read/write throughput, random 4 KiB
//! reads at queue depth 1 and 32 on each disk, and transmitted frames per
//! second and full-frame transmit throughput on the NIC (the reference of
//! the guests' TCP figures when the bridge holds the NIC); and, for the
//! disk blkback serves, the figures of the guest block benchmark's plan
//! ([`served`]).

use alloc::vec::Vec;

use driver_domain::blk::{BlockDevice, BlockOp, BlockRequest};
use driver_domain::dma::{PageBuffer, Segment};
use driver_domain::net::{arp_request, Nic};
use hypercall_abi::PAGE_SIZE;
use pv_guest_kit::bench::{mib_per_second, rdtsc, report_rate, Stats};
use pv_guest_kit::blk_bench;
use pv_guest_kit::println;

use crate::backend::real_disk::{RealDisk, FRAME};

use crate::devices::{deadline, VirtioNic};
use crate::hw::frames::{FrameDma, FramePage};

/// Batches per figure.
const BATCHES: usize = 5;

/// Requests of one batch: `(op, sector)` of request `i`.
type Plan<'a> = &'a mut dyn FnMut(u64) -> (BlockOp, u64);

/// Runs `count` requests, keeping up to `depth` in flight, each on its own
/// buffer of `buffers`; returns the TSC ticks or `None` on an error.
fn run_batch(
    disk: &mut impl BlockDevice,
    buffers: &[Vec<Segment>],
    count: u64,
    depth: usize,
    plan: Plan<'_>,
    tsc_hz: u64,
) -> Option<u64> {
    let depth = depth.clamp(1, buffers.len());
    let mut free: Vec<usize> = (0..depth).collect();
    let mut issued = 0u64;
    let mut done = 0u64;
    let mut keep_waiting = deadline(tsc_hz, 30);
    let start = rdtsc();
    while done < count {
        while issued < count {
            let Some(&slot) = free.last() else { break };
            let (op, sector) = plan(issued);
            let req = BlockRequest {
                op,
                sector,
                segments: &buffers[slot],
                tag: slot as u64,
            };
            match disk.submit(&req) {
                Ok(()) => {
                    free.pop();
                    issued += 1;
                }
                Err(driver_domain::blk::BlockError::Busy) => break,
                Err(e) => {
                    println!("dd bench: submit: {e}");
                    return None;
                }
            }
        }
        match disk.poll() {
            Some(c) => {
                if let Err(e) = c.result {
                    println!("dd bench: request failed: {e}");
                    return None;
                }
                free.push(c.tag as usize);
                done += 1;
            }
            None if !keep_waiting() => {
                println!("dd bench: timeout");
                return None;
            }
            None => {}
        }
    }
    Some(rdtsc() - start)
}

fn report(name: &str, unit: &str, amount: u64, samples: &mut [u64], tsc_hz: u64) {
    if let Some(stats) = Stats::from_samples(samples) {
        report_rate(name, unit, amount, &stats, tsc_hz);
    }
}

/// A cheap deterministic generator for random sectors.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The four block figures of `disk`, named `{prefix}_...`.
pub fn block(prefix: &str, disk: &mut impl BlockDevice, dma: &mut FrameDma, tsc_hz: u64) {
    let info = disk.info();
    let per_page = PAGE_SIZE / u64::from(info.sector_size);
    let seq_pages = 16usize.min(usize::from(info.max_segments));
    let depth = usize::from(info.queue_depth);
    // Sequential: 16-page requests, 8 in flight, 2 MiB per batch.
    let mut pages: Vec<PageBuffer<FramePage>> = Vec::new();
    for _ in 0..8 {
        match PageBuffer::new(dma, seq_pages * PAGE_SIZE as usize) {
            Ok(b) => pages.push(b),
            Err(_) => return println!("dd bench: no DMA memory"),
        }
    }
    let seq: Vec<Vec<Segment>> = pages
        .iter()
        .map(|b| b.segments(b.len()).collect())
        .collect();
    let req_sectors = seq_pages as u64 * per_page;
    let seq_count = (2 << 20) / (seq_pages as u64 * PAGE_SIZE);
    let bytes = seq_count * seq_pages as u64 * PAGE_SIZE;
    if seq_count * req_sectors > info.sectors {
        return println!("dd bench: {prefix}: disk too small");
    }
    for (op, name) in [(BlockOp::Write, "seq_write"), (BlockOp::Read, "seq_read")] {
        let mut samples = Vec::new();
        for _ in 0..BATCHES {
            let mut plan = |i: u64| (op, i * req_sectors);
            match run_batch(disk, &seq, seq_count, 8, &mut plan, tsc_hz) {
                Some(t) => samples.push(t),
                None => return,
            }
        }
        report(
            &alloc::format!("{prefix}_{name}_mibs"),
            "MiB/s",
            bytes >> 20,
            &mut samples,
            tsc_hz,
        );
    }
    // Random 4 KiB reads.
    let mut small: Vec<PageBuffer<FramePage>> = Vec::new();
    for _ in 0..32.min(depth) {
        match PageBuffer::new(dma, PAGE_SIZE as usize) {
            Ok(b) => small.push(b),
            Err(_) => return println!("dd bench: no DMA memory"),
        }
    }
    let rand: Vec<Vec<Segment>> = small
        .iter()
        .map(|b| b.segments(b.len()).collect())
        .collect();
    let slots = info.sectors / per_page;
    for (qd, name, count) in [
        (1usize, "rand4k_qd1_iops", 64u64),
        (32, "rand4k_qd32_iops", 256),
    ] {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut samples = Vec::new();
        for _ in 0..BATCHES {
            let mut plan = |_| (BlockOp::Read, (xorshift(&mut state) % slots) * per_page);
            match run_batch(disk, &rand, count, qd, &mut plan, tsc_hz) {
                Some(t) => samples.push(t),
                None => return,
            }
        }
        report(
            &alloc::format!("{prefix}_{name}"),
            "IOPS",
            count,
            &mut samples,
            tsc_hz,
        );
    }
}

/// Sends `count` copies of `frame` and waits until the NIC took them all
/// back; the TSC ticks, or `None` on a timeout or error.
fn transmit_batch(nic: &mut VirtioNic, frame: &[u8], count: u32, tsc_hz: u64) -> Option<u64> {
    let mut keep_waiting = deadline(tsc_hz, 30);
    let start = rdtsc();
    let mut sent = 0;
    while sent < count {
        match nic.transmit(frame) {
            Ok(()) => sent += 1,
            Err(driver_domain::net::NetError::Busy) => {
                nic.reclaim();
                if !keep_waiting() {
                    println!("dd bench: transmit timeout");
                    return None;
                }
            }
            Err(e) => {
                println!("dd bench: transmit: {e}");
                return None;
            }
        }
    }
    while nic.reclaim() > 0 {}
    Some(rdtsc() - start)
}

/// Transmitted frames per second (60-byte ARP requests for an address
/// nobody has, 512 per batch), then transmit throughput with full frames
/// (1514 bytes of an ethertype nobody speaks to a MAC nobody has, 256 per
/// batch) in MiB/s of frame bytes.
pub fn net(nic: &mut VirtioNic, tsc_hz: u64) {
    let frame = arp_request(nic.mac(), [10, 0, 2, 15], [10, 0, 2, 99]);
    let mut samples = Vec::new();
    let mut rx = [0u8; 2048];
    for _ in 0..BATCHES {
        let Some(ticks) = transmit_batch(nic, &frame, 512, tsc_hz) else {
            return;
        };
        samples.push(ticks);
        while nic.receive(&mut rx).is_some() {}
    }
    report("dd_net_pps", "pps", 512, &mut samples, tsc_hz);

    let mut full = [0u8; driver_domain::net::MAX_FRAME];
    full[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xfe]);
    full[6..12].copy_from_slice(&nic.mac());
    // IEEE 802 local experimental ethertype.
    full[12..14].copy_from_slice(&[0x88, 0xb5]);
    const FRAMES: u32 = 256;
    let mut samples = Vec::new();
    for _ in 0..BATCHES {
        let Some(ticks) = transmit_batch(nic, &full, FRAMES, tsc_hz) else {
            return;
        };
        samples.push(ticks);
        while nic.receive(&mut rx).is_some() {}
    }
    report_mibs(
        "dd_net_tx_mibs",
        u64::from(FRAMES) * full.len() as u64,
        &mut samples,
        tsc_hz,
    );
}

/// Like [`report`] for a byte count, in MiB/s with two decimals (a NIC's
/// frame bytes per batch are far less than a MiB).
fn report_mibs(name: &str, bytes: u64, samples: &mut [u64], tsc_hz: u64) {
    let Some(stats) = Stats::from_samples(samples) else {
        return;
    };
    let best = mib_per_second(bytes, stats.min, tsc_hz);
    let median = mib_per_second(bytes, stats.median, tsc_hz);
    println!(
        "{name}: best {best} median {median} MiB/s (batch ticks min {} median {})",
        stats.min, stats.median
    );
    println!("BENCH name={name} value={median} unit=MiB/s");
}

/// The block figures of the disk blkback serves, named `{prefix}_...`,
/// measured before any guest is served, on the region and with the plan
/// the `blkbench` guest then runs through blkfront
/// ([`pv_guest_kit::blk_bench`]): the same queue (`DiskQueue`, many
/// requests in flight) and pool frames the backend uses, without rings,
/// grants or a guest. The guest's figures over these are the cost of
/// serving a guest.
pub fn served(prefix: &str, disk: &mut RealDisk, tsc_hz: u64) {
    let units = disk.queue.units();
    if units < blk_bench::REGION_UNITS {
        return println!("dd bench: {prefix}: disk smaller than the benchmark region");
    }
    for (name, write, random, depth, count) in blk_bench::FIGURES {
        let bytes = if random {
            blk_bench::RAND_BYTES
        } else {
            blk_bench::SEQ_REQUEST_BYTES
        };
        let op = if write { BlockOp::Write } else { BlockOp::Read };
        let mut sectors = blk_bench::RandomSectors::new(blk_bench::REGION_UNITS);
        let mut samples = Vec::new();
        for _ in 0..blk_bench::BATCHES {
            let mut plan = |i: u64| {
                if random {
                    sectors.next_sector()
                } else {
                    i * (bytes / 512) as u64
                }
            };
            match served_batch(disk, op, bytes, count, depth, &mut plan) {
                Some(t) => samples.push(t),
                None => return,
            }
        }
        blk_bench::report(
            &alloc::format!("{prefix}_{name}"),
            random,
            count,
            &mut samples,
            tsc_hz,
        );
    }
}

/// Runs `count` jobs of `bytes` at the sectors `plan` gives, `depth` in
/// flight; returns the TSC ticks or `None` on an error.
fn served_batch(
    disk: &mut RealDisk,
    op: BlockOp,
    bytes: usize,
    count: u64,
    depth: usize,
    plan: &mut dyn FnMut(u64) -> u64,
) -> Option<u64> {
    let frames = bytes.div_ceil(FRAME);
    let (mut issued, mut done) = (0u64, 0u64);
    let start = rdtsc();
    while done < count {
        while issued < count && (issued - done) < depth as u64 {
            let Some(buf) = disk.take_frames(frames) else {
                println!("dd bench: pool too small");
                return None;
            };
            let segments = disk.segments(&buf, bytes);
            if let Err((e, buf)) = disk.queue.submit(issued, op, plan(issued), &segments, buf) {
                disk.give_frames(buf);
                println!("dd bench: submit: {e}");
                return None;
            }
            issued += 1;
        }
        disk.pump(&mut Vec::new());
        while let Some(f) = disk.queue.take_finished() {
            if let Some(buf) = f.buf {
                disk.give_frames(buf);
            }
            if let Err(e) = f.result {
                println!("dd bench: request failed: {e}");
                return None;
            }
            done += 1;
        }
    }
    Some(rdtsc() - start)
}
