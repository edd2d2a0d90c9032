//! The live memory state of the machine: the frame table, the M2P table, and
//! the page-table engine ([`super::pagetable`]) bound to the direct map.
//!
//! Lock order: `domain::DOMAINS` before [`FRAMES`] before the console.

use alloc::vec::Vec;

use hypercall_abi::layout::{HV_L4_FIRST, M2P_VIRT_START};
use hypercall_abi::mm::pte;
use hypercall_abi::PAGE_SIZE;

use super::frame_table::{FrameTable, Mfn, Owner};
use super::pagetable::{DeviceFrames, PageTables, TableMemory, ENTRIES};
use super::{mfn_to_virt, phys_to_virt};
use crate::arch::cpu::zero_page;

/// The frame table (set up at boot).
pub static FRAMES: crate::sync::Mutex<Option<FrameTable<'static>>> = crate::sync::Mutex::new(None);

/// The hypervisor's L4 entries, copied into every validated guest L4.
static HV_L4: spin::Once<Vec<(usize, u64)>> = spin::Once::new();

/// The frames holding the M2P table, in order.
static M2P_FRAMES: spin::Once<Vec<Mfn>> = spin::Once::new();

/// M2P value of a frame that is not a guest's.
pub const M2P_INVALID: u64 = u64::MAX;

/// Page-table frames reached through the direct map.
pub struct DirectTables;

impl TableMemory for DirectTables {
    fn read_entry(&self, mfn: Mfn, index: usize) -> u64 {
        debug_assert!(index < ENTRIES);
        // SAFETY: the engine only reads frames the frame table covers (all
        // below the direct-map limit), at an index below 512.
        unsafe { core::ptr::read_volatile((mfn_to_virt(mfn) as *const u64).add(index % ENTRIES)) }
    }

    fn write_entry(&mut self, mfn: Mfn, index: usize, value: u64) {
        // SAFETY: the engine writes only table frames of the domain whose
        // operation it performs, after checking ownership and type.
        unsafe {
            core::ptr::write_volatile((mfn_to_virt(mfn) as *mut u64).add(index % ENTRIES), value)
        };
    }

    fn flush_tlbs(&mut self) {
        // Another CPU may cache a writable mapping of a frame that is about
        // to become a page table.
        super::tlb::flush_all();
    }
}

/// The device frames of the functions assigned to the driver domain
/// (PDEV-4); no other domain may map any.
pub struct AssignedDeviceFrames;

impl DeviceFrames for AssignedDeviceFrames {
    fn permitted(&self, dom: hypercall_abi::DomId, mfn: Mfn) -> bool {
        dom == hypercall_abi::DOMID_DRIVER && crate::platform::live::io_frame_permitted(mfn)
    }

    fn page_table_type(&self, dom: hypercall_abi::DomId, mfn: Mfn, is_table: bool) {
        if dom == hypercall_abi::DOMID_DRIVER {
            crate::iommu::live::set_dma_writable(mfn, m2p(mfn), !is_table);
        }
    }
}

/// Makes the direct map of `[start, end)` (device memory below 4 GiB, such
/// as an ECAM window) uncached: sets PCD and PWT in the 2 MiB entries that
/// cover it, then flushes the TLB. The range must hold no RAM.
pub fn make_direct_map_uncached(start: u64, end: u64) {
    use hypercall_abi::mm::pte::{PCD, PS_OR_PAT, PWT};
    let l4 = phys_to_virt(crate::arch::boot::boot_pml4_phys()) as *const u64;
    let slot = ((super::DIRECT_MAP_BASE >> 39) & 0x1ff) as usize;
    // SAFETY: the boot L4 is a page of 512 entries; the direct map's slot
    // holds a PDPT built at boot.
    let l4e = unsafe { core::ptr::read_volatile(l4.add(slot)) };
    let pdpt = phys_to_virt(l4e & 0x000f_ffff_ffff_f000) as *const u64;
    let mut pa = start & !((2 << 20) - 1);
    while pa < end.min(super::DIRECT_MAP_SIZE) {
        // SAFETY: index < 4 (the direct map covers 4 GiB with 1 GiB entries).
        let pdpte = unsafe { core::ptr::read_volatile(pdpt.add((pa >> 30) as usize & 3)) };
        let pd = phys_to_virt(pdpte & 0x000f_ffff_ffff_f000) as *mut u64;
        let i = ((pa >> 21) & 0x1ff) as usize;
        // SAFETY: a 2 MiB entry (PS) of the boot page directory, index < 512;
        // only its caching bits change.
        unsafe {
            let e = core::ptr::read_volatile(pd.add(i));
            if e & PS_OR_PAT != 0 {
                core::ptr::write_volatile(pd.add(i), e | PCD | PWT);
            }
        }
        pa += 2 << 20;
    }
    flush_tlb();
}

/// Flushes this CPU's TLB (all non-global entries).
pub fn flush_tlb() {
    super::tlb::flush_local();
}

/// Runs `f` with the page-table engine; `None` before the frame table exists.
pub fn with_page_tables<R>(
    f: impl FnOnce(&mut PageTables<'_, 'static, DirectTables>) -> R,
) -> Option<R> {
    let mut guard = FRAMES.lock();
    let frames = guard.as_mut()?;
    let mut mem = DirectTables;
    let hv_l4 = HV_L4.get().map_or(&[][..], |v| v.as_slice());
    let mut pt = PageTables {
        frames,
        mem: &mut mem,
        hv_l4,
        io: &AssignedDeviceFrames,
    };
    Some(f(&mut pt))
}

/// Records the hypervisor's L4 entries (once, at boot, after [`init_m2p`]).
pub fn set_hypervisor_l4(entries: Vec<(usize, u64)>) {
    HV_L4.call_once(|| entries);
}

/// The hypervisor's L4 entries.
pub fn hypervisor_l4() -> &'static [(usize, u64)] {
    HV_L4.get().map_or(&[][..], |v| v.as_slice())
}

/// Allocates the M2P table (every entry [`M2P_INVALID`]) and maps it
/// read-only for ring 3 at `M2P_VIRT_START` through L4 slot 256 of the boot
/// L4. Returns its number of entries.
pub fn init_m2p(frames: &mut FrameTable<'static>, boot_l4_phys: u64) -> u64 {
    let entries = frames.len();
    let pages = (entries * 8).div_ceil(PAGE_SIZE);
    let nr_l1 = pages.div_ceil(ENTRIES as u64);
    assert!(nr_l1 <= ENTRIES as u64, "M2P larger than one L2 covers");
    let mut alloc = || {
        let mfn = frames
            .alloc(Owner::Hypervisor)
            .expect("no memory for the M2P table");
        // SAFETY: a frame just allocated to hv-core, mapped by the direct map.
        unsafe { zero_page(mfn_to_virt(mfn)) };
        mfn
    };
    let m2p: Vec<Mfn> = (0..pages).map(|_| alloc()).collect();
    for &mfn in &m2p {
        // SAFETY: hv-core's own frame; fill it with M2P_INVALID.
        unsafe { core::ptr::write_bytes(mfn_to_virt(mfn) as *mut u8, 0xff, PAGE_SIZE as usize) };
    }
    let l3 = alloc();
    let l2 = alloc();
    let leaf = pte::P | pte::US | pte::NX;
    let table = pte::P | pte::US;
    let mut tables = DirectTables;
    tables.write_entry(l3, 0, (l2 << 12) | table);
    for (i, chunk) in m2p.chunks(ENTRIES).enumerate() {
        let l1 = alloc();
        for (j, &mfn) in chunk.iter().enumerate() {
            tables.write_entry(l1, j, (mfn << 12) | leaf);
        }
        tables.write_entry(l2, i, (l1 << 12) | table);
    }
    debug_assert_eq!(M2P_VIRT_START >> 39 & 0x1ff, HV_L4_FIRST as u64);
    // SAFETY: slot 256 of the boot L4 is the hypervisor's and unused so far.
    unsafe {
        core::ptr::write_volatile(
            (phys_to_virt(boot_l4_phys) as *mut u64).add(HV_L4_FIRST),
            (l3 << 12) | table,
        )
    };
    M2P_FRAMES.call_once(|| m2p);
    entries
}

/// `M2P[mfn]`, if the table has that entry.
pub fn m2p(mfn: Mfn) -> Option<u64> {
    let frames = M2P_FRAMES.get()?;
    let &page = frames.get((mfn / ENTRIES as u64) as usize)?;
    // SAFETY: an M2P frame of hv-core's, index below 512.
    let value = unsafe {
        core::ptr::read_volatile(
            (mfn_to_virt(page) as *const u64).add((mfn % ENTRIES as u64) as usize),
        )
    };
    (value != M2P_INVALID).then_some(value)
}

/// Sets `M2P[mfn] = value`.
pub fn set_m2p(mfn: Mfn, value: u64) {
    let Some(frames) = M2P_FRAMES.get() else {
        return;
    };
    let Some(&page) = frames.get((mfn / ENTRIES as u64) as usize) else {
        return;
    };
    // SAFETY: an M2P frame of hv-core's, index below 512.
    unsafe {
        core::ptr::write_volatile(
            (mfn_to_virt(page) as *mut u64).add((mfn % ENTRIES as u64) as usize),
            value,
        )
    };
}
