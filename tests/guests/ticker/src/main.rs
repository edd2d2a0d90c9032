//! `ticker`: the toolstack's small guest. It prints one line as soon as it
//! runs, then keeps running cheaply: it sleeps on its vCPU timer and does a
//! little work every beat (so its CPU time grows), printing a heartbeat only
//! every `print=` beats.
//!
//! It powers off when the toolstack asks it to shut down (TS-7), unless
//! `polite=0`.
//!
//! Command line: `beat=<ms>` (default 1000), `print=<beats>` (default 30,
//! 0 = never), `echo=1` (print console input it receives, TS-11), and
//! `io=1`: instead of sleeping, connect the first disk and vif the toolstack
//! gave it and do I/O without end — write, read back and check 4 KiB on the
//! disk, send a broadcast frame on the vif — printing a line after the first
//! round and after `rounds=` rounds (default 50), so a test can destroy it in
//! the middle of disk and net I/O.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::vec;

use hypercall_abi::start_info::StartInfo;
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::devices::blkfront::{find_disk, BlockFront};
use pv_guest_kit::devices::devbus;
use pv_guest_kit::devices::netfront::{find_vif, NetFront};
use pv_guest_kit::events;
use pv_guest_kit::hypercall::{console_read, sched_yield};
use pv_guest_kit::println;
use pv_guest_kit::time::{now_ns, sleep_ns};

pv_guest_kit::entry!(kmain);

fn kmain(si: &'static StartInfo) {
    println!("ticker: up (domain {}, {} pages)", si.domid, si.nr_pages);
    let args = Args::new(si.cmdline_str());
    if args.get_u64("polite") != Some(0) {
        if let Err(e) = events::power_off_on_shutdown_request() {
            panic!("ticker: VIRQ_SHUTDOWN_REQUEST: {e}");
        }
    }
    if args.get_u64("io") == Some(1) {
        io_loop(si, args.get_u64("rounds").unwrap_or(50));
    }
    let beat_ms = args.get_u64("beat").unwrap_or(1000).max(1);
    let print_every = args.get_u64("print").unwrap_or(30);
    let echo = args.get_u64("echo") == Some(1);
    let mut beats = 0u64;
    let mut work = 0u64;
    loop {
        if let Err(e) = sleep_ns(0, beat_ms * 1_000_000) {
            panic!("ticker: sleep: {e}");
        }
        beats += 1;
        // About 50 us of work, so the CPU time the toolstack reports grows.
        let until = now_ns() + 50_000;
        while now_ns() < until {
            work = work.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        if echo {
            let mut buf = [0u8; 128];
            if let Ok(n) = console_read(&mut buf) {
                if n > 0 {
                    let text = core::str::from_utf8(&buf[..n]).unwrap_or("(not UTF-8)");
                    println!("ticker: got {:?}", text.trim_end());
                }
            }
        }
        if print_every != 0 && beats.is_multiple_of(print_every) {
            println!("ticker: heartbeat {beats} ({work:#x})");
        }
    }
}

/// Disk and net I/O until destroyed.
fn io_loop(si: &StartInfo, report_at: u64) -> ! {
    if let Err(e) = devbus::watch() {
        panic!("ticker: VIRQ_DEVBUS: {e}");
    }
    let (mut disk_record, mut vif_record) = (None, None);
    events::wait_until(|| {
        disk_record = find_disk(si.domid).unwrap_or_else(|e| panic!("ticker: devbus: {e}"));
        vif_record = find_vif(si.domid).unwrap_or_else(|e| panic!("ticker: devbus: {e}"));
        disk_record.is_some() && vif_record.is_some()
    });
    let (Some(disk_record), Some(vif_record)) = (disk_record, vif_record) else {
        panic!("ticker: no disk or vif")
    };
    let mut disk =
        BlockFront::connect(disk_record.id).unwrap_or_else(|e| panic!("ticker: disk: {e}"));
    let mut vif = NetFront::connect(vif_record.id).unwrap_or_else(|e| panic!("ticker: vif: {e}"));
    let units = disk.info().sectors;
    let slots = (units / 8).max(1);
    let mac = vif.mac();
    let mut frame = vec![0u8; 128];
    frame[..6].fill(0xff);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    let mut block = vec![0u8; 4096];
    let mut back = vec![0u8; 4096];
    let (mut sent, mut received) = (0u64, 0u64);
    let mut round = 0u64;
    loop {
        round += 1;
        let slot = round % slots;
        for (i, b) in block.iter_mut().enumerate() {
            *b = (round as u8).wrapping_add(i as u8).wrapping_mul(31);
        }
        disk.write(slot * 8, &block)
            .unwrap_or_else(|e| panic!("ticker: write: {e}"));
        disk.read(slot * 8, &mut back)
            .unwrap_or_else(|e| panic!("ticker: read: {e}"));
        assert!(back == block, "ticker: round {round}: read back differs");
        frame[14..22].copy_from_slice(&round.to_le_bytes());
        let _ = vif.poll();
        if vif.can_transmit() && vif.transmit(&frame).is_ok() {
            sent += 1;
        }
        while let Ok(Some(_)) = vif.receive() {
            received += 1;
        }
        if round == 1 {
            println!(
                "ticker: io running: disk of {units} units, vif {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
            );
        }
        if round == report_at {
            println!(
                "ticker: io ok after {round} rounds ({sent} frames sent, {received} received)"
            );
        }
        sched_yield();
    }
}
