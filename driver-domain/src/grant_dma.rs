//! The `grant-dma` test mode (PDEV-8), written by the hypervisor helper: a
//! guest (domain 1, `grant-dma` test guest) grants domain 0 one frame;
//! domain 0 maps the grant, places its frame in its IOMMU space at the
//! first pfn of the grant window, and has virtio-blk DMA a sector into it
//! there. Then it unmaps the grant *without* unmapping it from the IOMMU
//! space first: hv-core must remove the IOMMU mapping as part of the unmap,
//! so a second DMA to the same bus address faults instead of writing into a
//! frame domain 0 no longer holds.
//!
//! Both sides know the data: sector [`SECTOR`] holds [`PATTERN`] repeated,
//! which domain 0 writes first from one of its own pages.

use driver_domain::blk::{run_sync, BlockOp, BlockRequest};
use driver_domain::dma::{DmaAllocator, DmaPage, Segment};
use hypercall_abi::{Errno, PAGE_SIZE};
use pv_guest_kit::grants;
use pv_guest_kit::hypercall::sched_yield;
use pv_guest_kit::mm::{physmap::read_va, reserve_va};
use pv_guest_kit::physdev;
use pv_guest_kit::println;

use crate::devices::{deadline, Devices};

/// The granting guest's domain id and the reference it grants.
const GRANTER: u32 = 1;
const GREF: u32 = 0;
/// The sector domain 0 DMAs into the granted frame (4 KiB from here).
const SECTOR: u64 = 4096;
/// What that sector holds (repeated over 4 KiB); the guest looks for it.
pub const PATTERN: &[u8; 16] = b"grant-dma-data!\n";

/// One 4 KiB virtio-blk transfer at bus address `addr`.
fn transfer(devs: &mut Devices, op: BlockOp, addr: u64, tag: u64) -> Result<(), Errno> {
    let tsc_hz = devs.tsc_hz;
    let Some((disk, _)) = devs.vblk.as_mut() else {
        return Err(Errno::ENOENT);
    };
    let segment = [Segment {
        addr,
        len: PAGE_SIZE as u32,
    }];
    let req = BlockRequest {
        op,
        sector: SECTOR,
        segments: &segment,
        tag,
    };
    run_sync(disk, &req, deadline(tsc_hz, 2)).map_err(|_| Errno::EFAULT)
}

/// Runs the test; returns whether every check held.
pub fn run(devs: &mut Devices) -> bool {
    let Ok(info) = physdev::iommu_info() else {
        println!("dd: grant-dma: FAILED: no IOMMU info");
        return false;
    };
    if info.grant_pfn_end <= info.grant_pfn_start {
        println!(
            "dd: grant-dma: FAILED: no grant window (IOMMU mode {})",
            info.mode
        );
        return false;
    }
    // The data, written to the disk from one of domain 0's own pages.
    let Ok(mut page) = devs.dma.alloc_page() else {
        println!("dd: grant-dma: FAILED: no DMA page");
        return false;
    };
    for chunk in (0..PAGE_SIZE as usize).step_by(PATTERN.len()) {
        page.write(chunk, PATTERN);
    }
    if let Err(e) = transfer(devs, BlockOp::Write, page.device_addr(), 0x6d01) {
        println!("dd: grant-dma: FAILED: writing the pattern: {e}");
        return false;
    }
    // The guest's grant.
    let Ok(va) = reserve_va(1) else {
        println!("dd: grant-dma: FAILED: no address space");
        return false;
    };
    let mut mapping = None;
    for _ in 0..100_000 {
        match grants::map(GRANTER, GREF, va.page(0), false) {
            Ok(m) => {
                mapping = Some(m);
                break;
            }
            Err(Errno::EPERM | Errno::ENOENT | Errno::ESRCH) => sched_yield(),
            Err(e) => {
                println!("dd: grant-dma: FAILED: mapping the grant: {e}");
                return false;
            }
        }
    }
    let Some(mapping) = mapping else {
        println!("dd: grant-dma: FAILED: domain {GRANTER} never granted gref {GREF}");
        return false;
    };
    let dev_pfn = info.grant_pfn_start;
    let bus_addr = dev_pfn << 12;
    if let Err(e) = physdev::iommu_map_grant(mapping.handle().handle, dev_pfn, false) {
        println!("dd: grant-dma: FAILED: placing the grant in the IOMMU space: {e}");
        return false;
    }
    println!("dd: grant-dma: domain {GRANTER}'s gref {GREF} mapped and placed at bus address {bus_addr:#x}");
    // Disk → granted frame, through the IOMMU.
    if let Err(e) = transfer(devs, BlockOp::Read, bus_addr, 0x6d02) {
        println!("dd: grant-dma: FAILED: DMA into the grant: {e}");
        return false;
    }
    let first = read_va(mapping.va()).to_le_bytes();
    let arrived = first == PATTERN[..8];
    println!(
        "dd: grant-dma: DMA into the granted frame {}",
        if arrived { "arrived" } else { "did NOT arrive" }
    );
    // Unmap the grant only: hv-core must take it out of the IOMMU space.
    let before = physdev::iommu_info().map(|i| i.faults).unwrap_or(0);
    if let Err((_, e)) = mapping.unmap() {
        println!("dd: grant-dma: FAILED: unmapping the grant: {e}");
        return false;
    }
    let _ = transfer(devs, BlockOp::Read, bus_addr, 0x6d03);
    let after = physdev::iommu_info().map(|i| i.faults).unwrap_or(0);
    let removed = after > before;
    println!(
        "dd: grant-dma: after the grant unmap, DMA to {bus_addr:#x} {} (IOMMU faults {before} -> {after})",
        if removed { "faults" } else { "was NOT blocked" }
    );
    let ok = arrived && removed;
    println!(
        "dd: grant-dma: {}",
        if ok { "all checks passed" } else { "FAILED" }
    );
    ok
}
