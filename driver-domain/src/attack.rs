//! The `dma-attack` test mode: domain 0 points a device's DMA at a frame it
//! may not write and that lies outside its IOMMU space — one of its own
//! start-of-day page tables, addressed by its *machine* address (MM-2: a page
//! table never has a writable mapping; without an IOMMU this DMA would
//! rewrite it) — and checks that the IOMMU stopped the transfer (PDEV-6,
//! PDEV-7): the frame's content is unchanged and hv-core counted a fault. It
//! also checks that a device hv-core did not assign is invisible (PDEV-2).
//!
//! The hypervisor's own frames (the M2P table) would be a better target, but
//! a guest cannot learn their machine addresses: its page-table walks stop at
//! the hypervisor's L4 slots.

use driver_domain::blk::{BlockDevice, BlockOp, BlockRequest};
use driver_domain::dma::Segment;
use driver_domain::virtio::STATUS_NEEDS_RESET;
use hypercall_abi::physdev::sbdf;
use hypercall_abi::{Errno, PAGE_SIZE};
use pv_guest_kit::mm::{layout, physmap::read_va};
use pv_guest_kit::physdev;
use pv_guest_kit::println;

use crate::devices::{deadline, Bdf, Devices};

/// Checks that no device outside `listed` answers config reads: every
/// bus-0 slot hv-core did not list must fail with ENOENT. Returns whether
/// all did.
pub fn unassigned_are_invisible(devices: &Devices) -> bool {
    let mut ok = true;
    for slot in 0..32u8 {
        let id = sbdf(0, 0, slot, 0);
        if devices.listed.iter().any(|d| d.sbdf == id) {
            continue;
        }
        match physdev::config_read(id, 0, 4) {
            Err(Errno::ENOENT) => {}
            Ok(v) => {
                println!(
                    "dd: dma-attack: FAILED: unassigned {} answers config reads ({v:#x})",
                    Bdf(id)
                );
                ok = false;
            }
            Err(e) => {
                println!(
                    "dd: dma-attack: FAILED: unassigned {}: {e} instead of ENOENT",
                    Bdf(id)
                );
                ok = false;
            }
        }
    }
    if ok {
        println!("dd: dma-attack: every bus-0 slot not assigned to domain 0 is invisible (ENOENT), e.g. 00:05.0");
    }
    ok
}

/// A start-of-day page table to aim at, and the bus address to use: by
/// machine address if its mfn lies outside domain 0's IOMMU space
/// (`mfn >= ram_pages`, so `mfn << 12` names no pseudo-physical page
/// there), else by its pseudo-physical address, which hv-core maps
/// read-only for devices because the frame is a page table (PDEV-6).
/// Returns (bus address, where domain 0 reads it, how it is addressed).
fn target_frame(ram_pages: u64) -> Option<(u64, u64, &'static str)> {
    let layout = layout();
    let tables = layout.pt_first_pfn..layout.pt_first_pfn + layout.nr_pt_frames;
    let outside = tables.clone().find_map(|pfn| {
        let mfn = layout.mfn(pfn);
        (mfn >= ram_pages).then(|| {
            (
                mfn << 12,
                layout.pfn_va(pfn),
                "machine address, outside the IOMMU space",
            )
        })
    });
    outside.or_else(|| {
        tables.clone().next().map(|pfn| {
            (
                pfn << 12,
                layout.pfn_va(pfn),
                "pseudo-physical address, read-only to devices",
            )
        })
    })
}

fn snapshot(va: u64) -> [u64; 512] {
    core::array::from_fn(|i| read_va(va + 8 * i as u64))
}

/// Runs the attack with the virtio-blk disk; returns whether every check held.
pub fn run(devices: &mut Devices) -> bool {
    let Ok(before) = physdev::iommu_info() else {
        println!("dd: dma-attack: FAILED: no IOMMU info");
        return false;
    };
    let Some((bus_addr, va, how)) = target_frame(before.ram_pages) else {
        println!("dd: dma-attack: FAILED: no page-table frame to aim at");
        return false;
    };
    let Some((disk, _)) = devices.vblk.as_mut() else {
        println!("dd: dma-attack: FAILED: no virtio-blk disk to program");
        return false;
    };
    let content = snapshot(va);
    // A 4 KiB read from the disk into the page table's machine address.
    let segment = [Segment {
        addr: bus_addr,
        len: PAGE_SIZE as u32,
    }];
    let req = BlockRequest {
        op: BlockOp::Read,
        sector: 0,
        segments: &segment,
        tag: 0xa77ac,
    };
    println!(
        "dd: dma-attack: virtio-blk DMA of 4 KiB into page-table frame at bus address {bus_addr:#x} ({how})"
    );
    if let Err(e) = disk.submit(&req) {
        println!("dd: dma-attack: FAILED: submit: {e}");
        return false;
    }
    let mut keep_waiting = deadline(devices.tsc_hz, 2);
    let outcome = loop {
        if let Some(done) = disk.poll() {
            break Some(done.result);
        }
        if disk.transport().status() & STATUS_NEEDS_RESET != 0 || !keep_waiting() {
            break None;
        }
    };
    let status = disk.transport().status();
    match outcome {
        Some(Ok(())) => println!("dd: dma-attack: the device reported success"),
        Some(Err(e)) => println!("dd: dma-attack: the transfer failed: {e}"),
        None => println!(
            "dd: dma-attack: the transfer failed: no completion, device status {status:#x}"
        ),
    }
    let unchanged = snapshot(va) == content;
    let after = physdev::iommu_info().map(|i| i.faults).unwrap_or(0);
    println!(
        "dd: dma-attack: target frame {}; IOMMU faults for domain 0: {} -> {}",
        if unchanged { "unchanged" } else { "CHANGED" },
        before.faults,
        after
    );
    // QEMU's devices move data through a bounce buffer when a DMA address
    // does not map directly, so a write the IOMMU drops can still complete
    // "successfully" for the device: the IOMMU fault and the unchanged frame
    // are what show the DMA was blocked.
    if matches!(outcome, Some(Ok(()))) && after > before.faults {
        println!("dd: dma-attack: (the device cannot see the blocked write: QEMU completed the request through a bounce buffer)");
    }
    let ok = unchanged && after > before.faults;
    println!("dd: dma-attack: {}", if ok { "blocked" } else { "FAILED" });
    ok
}
