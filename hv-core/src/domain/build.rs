//! The domain builder: lays a guest ELF image, start_info, P2M list, bootstrap
//! page tables and stack into a domain's (zeroed) frames, as SPEC.md §5 says.
//! Pure logic over a [`GuestFrames`] window, so it runs on the host in tests;
//! the run-time toolstack builder will share it.

use hypercall_abi::elf_note::AbiVersionNote;
use hypercall_abi::start_info::{
    Capabilities, StartFlags, StartInfo, CMDLINE_SIZE, NAME_SIZE, START_INFO_MAGIC,
};
use hypercall_abi::{DomId, ABI_MAJOR, ABI_MINOR, PAGE_SIZE};
use zerocopy::{FromZeros, IntoBytes};

use super::hypercall_page;
use super::layout::{StartLayout, STACK_PAGES};
use crate::loader::elf::ElfImage;
use crate::mm::pte::{PTE_P, PTE_RW, PTE_US};
use crate::mm::Mfn;

/// Write access to the frames of the domain being built.
pub trait GuestFrames {
    /// The contents of machine frame `mfn`, which belongs to the domain.
    fn frame_mut(&mut self, mfn: Mfn) -> &mut [u8; 4096];
}

/// Why an image cannot become a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    MissingAbiNote,
    UnsupportedAbi(AbiVersionNote),
    MissingHypercallPage,
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ImageError::MissingAbiNote => {
                write!(f, "no Paravane ABI note (was it built with pv-guest-kit?)")
            }
            ImageError::UnsupportedAbi(v) => write!(
                f,
                "ABI {}.{} is not supported (this hypervisor speaks {}.0 to {}.{})",
                v.major, v.minor, ABI_MAJOR, ABI_MAJOR, ABI_MINOR
            ),
            ImageError::MissingHypercallPage => write!(f, "no hypercall-page note"),
        }
    }
}

/// Checks the notes a bootable image must carry; returns its ABI version and
/// hypercall-page address.
pub fn check_image(image: &ElfImage<'_>) -> Result<(AbiVersionNote, u64), ImageError> {
    let notes = image.notes();
    let abi = notes.abi.ok_or(ImageError::MissingAbiNote)?;
    if abi.major != ABI_MAJOR {
        return Err(ImageError::UnsupportedAbi(abi));
    }
    let page = notes
        .hypercall_page
        .ok_or(ImageError::MissingHypercallPage)?;
    Ok((abi, page))
}

/// Who the domain is.
pub struct Identity<'a> {
    pub domid: DomId,
    pub name: &'a str,
    pub cmdline: &'a str,
    pub capabilities: Capabilities,
    pub flags: StartFlags,
    pub nr_vcpus: u32,
    /// Entries of the machine's M2P table.
    pub nr_m2p_entries: u64,
}

/// The domain's machine frames.
pub struct Frames<'a> {
    /// pfn → mfn for every pfn of the layout.
    pub p2m: &'a [Mfn],
    pub shared_info_mfn: Mfn,
    /// Hypervisor L4 entries `(slot, value)` copied into the guest's L4.
    pub hv_l4: &'a [(usize, u64)],
}

/// Where the built domain starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub rip: u64,
    pub rsp: u64,
    /// Virtual address of start_info, passed in rsi.
    pub start_info: u64,
    /// Machine address of the L4 (the domain's CR3).
    pub cr3: u64,
}

fn put_u64(frame: &mut [u8; 4096], index: usize, value: u64) {
    let at = index * 8;
    frame[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn get_u64(frame: &[u8; 4096], index: usize) -> u64 {
    let at = index * 8;
    let mut b = [0u8; 8];
    b.copy_from_slice(&frame[at..at + 8]);
    u64::from_le_bytes(b)
}

fn copy_c_str<const N: usize>(dst: &mut [u8; N], src: &str) {
    let n = src.len().min(N - 1);
    dst[..n].copy_from_slice(&src.as_bytes()[..n]);
}

/// Builds the domain into `mem`, whose frames must be zero. `layout` must come
/// from `layout::compute` for this image and `frames.p2m.len()` pages, and
/// `hypercall_page` from [`check_image`].
pub fn build(
    mem: &mut dyn GuestFrames,
    image: &ElfImage<'_>,
    hypercall_page: u64,
    layout: &StartLayout,
    who: &Identity<'_>,
    frames: &Frames<'_>,
) -> Entry {
    let p2m = frames.p2m;
    let base = layout.virt_base;

    // 1. Image segments (bytes past filesz stay zero).
    for seg in image.segments() {
        let data = image.segment_data(seg);
        let mut done = 0usize;
        while done < data.len() {
            let va = seg.vaddr + done as u64;
            let pfn = ((va - base) / PAGE_SIZE) as usize;
            let off = (va % PAGE_SIZE) as usize;
            let n = (data.len() - done).min(4096 - off);
            mem.frame_mut(p2m[pfn])[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }

    // 2. Hypercall page.
    let hc_pfn = ((hypercall_page - base) / PAGE_SIZE) as usize;
    hypercall_page::write(mem.frame_mut(p2m[hc_pfn]));

    // 3. P2M list.
    for (pfn, &mfn) in p2m.iter().enumerate() {
        let page = layout.p2m_pfn as usize + pfn / 512;
        put_u64(mem.frame_mut(p2m[page]), pfn % 512, mfn);
    }

    // 4. Page tables: L4, then L3s, L2s, L1s handed out in address order.
    let l4_mfn = p2m[layout.pt_pfn as usize];
    for &(slot, value) in frames.hv_l4 {
        put_u64(mem.frame_mut(l4_mfn), slot, value);
    }
    let mut next = [
        layout.pt_pfn + 1 + layout.nr_l3 + layout.nr_l2, // L1s
        layout.pt_pfn + 1 + layout.nr_l3,                // L2s
        layout.pt_pfn + 1,                               // L3s
    ];
    let table_flags = PTE_P | PTE_RW | PTE_US;
    for pfn in 0..=layout.nr_pages {
        let va = layout.pfn_va(pfn);
        let (mfn, writable) = if pfn == layout.nr_pages {
            (frames.shared_info_mfn, true)
        } else {
            (p2m[pfn as usize], !layout.is_pt_pfn(pfn))
        };
        let mut table = l4_mfn;
        for level in (2..=4u32).rev() {
            let index = ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize;
            let entry = get_u64(mem.frame_mut(table), index);
            table = if entry & PTE_P != 0 {
                entry >> 12
            } else {
                let slot = &mut next[(level - 2) as usize];
                let child = p2m[*slot as usize];
                *slot += 1;
                put_u64(mem.frame_mut(table), index, (child << 12) | table_flags);
                child
            };
        }
        let index = ((va >> 12) & 0x1ff) as usize;
        let flags = PTE_P | PTE_US | if writable { PTE_RW } else { 0 };
        put_u64(mem.frame_mut(table), index, (mfn << 12) | flags);
    }

    // 5. start_info.
    let mut si = StartInfo::new_zeroed();
    si.magic = START_INFO_MAGIC;
    si.abi_major = ABI_MAJOR;
    si.abi_minor = ABI_MINOR;
    si.domid = who.domid;
    si.flags = who.flags.bits();
    si.capabilities = who.capabilities.bits();
    si.nr_pages = layout.nr_pages;
    si.virt_base = base;
    si.p2m_list = layout.pfn_va(layout.p2m_pfn);
    si.shared_info = layout.shared_info_va;
    si.shared_info_mfn = frames.shared_info_mfn;
    si.pt_base = layout.pfn_va(layout.pt_pfn);
    si.nr_pt_frames = layout.pt_pages();
    si.pt_first_pfn = layout.pt_pfn;
    si.hypercall_page = hypercall_page;
    si.first_free_pfn = layout.first_free_pfn;
    si.stack_top = layout.stack_top();
    si.stack_size = STACK_PAGES * PAGE_SIZE;
    si.nr_vcpus = who.nr_vcpus;
    si.nr_m2p_entries = who.nr_m2p_entries;
    copy_c_str::<NAME_SIZE>(&mut si.name, who.name);
    copy_c_str::<CMDLINE_SIZE>(&mut si.cmdline, who.cmdline);
    let si_frame = mem.frame_mut(p2m[layout.start_info_pfn as usize]);
    si_frame[..core::mem::size_of::<StartInfo>()].copy_from_slice(si.as_bytes());

    Entry {
        rip: image.entry(),
        rsp: layout.stack_top(),
        start_info: layout.pfn_va(layout.start_info_pfn),
        cr3: l4_mfn << 12,
    }
}
