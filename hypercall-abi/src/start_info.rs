//! The start_info page: what a domain is told at start of day (SPEC.md §5, HC-6).
//!
//! The hypervisor writes it once, before the domain's first instruction, and
//! passes its virtual address in `rsi`. Every field is `[HV]`; the guest may
//! overwrite its copy, the hypervisor never reads it back.

use bitflags::bitflags;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `StartInfo.magic`: identifies the structure and its ABI major.
pub const START_INFO_MAGIC: [u8; 16] = *b"paravane-0-x64\0\0";
/// Bytes in `StartInfo.cmdline`, including the terminating NUL.
pub const CMDLINE_SIZE: usize = 1024;
/// Bytes in `StartInfo.name`, including the terminating NUL.
pub const NAME_SIZE: usize = 32;

bitflags! {
    /// Capabilities granted to a domain at creation (SPEC.md §5.3, DOM-3).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Capabilities: u64 {
        /// May read console input (`console_io(CONSOLE_READ)`).
        const CONSOLE_READ = 1 << 0;
        /// May query other domains (`domctl(DOMCTL_GET_INFO)`).
        const DOMAIN_QUERY = 1 << 1;
        /// Its shutdown ends the machine: poweroff/reboot of this domain powers
        /// the machine off. Held by the driver domain.
        const MACHINE_POWER = 1 << 2;
        /// May create and destroy devbus records (DEV-2), since 0.5. Bit 8
        /// leaves 3..8 to the other 0.5 capabilities.
        const DEVBUS_ADMIN = 1 << 8;
        /// May use `physdev_op`: its assigned PCI devices, their interrupts and
        /// MMIO, its IOMMU space (PDEV-*, since 0.5). Held by the driver domain.
        const DEVICES = 1 << 3;
        /// May build, pause, unpause, destroy and shut down other domains, read
        /// their consoles and give them console input, read hv-core's log, use
        /// the management UART and read held boot modules (TS-*, since 0.6).
        /// Held by the driver domain.
        const DOMAIN_BUILD = 1 << 4;
    }
}

bitflags! {
    /// `StartInfo.flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct StartFlags: u32 {
        /// This is the driver domain (domain 0).
        const DRIVER_DOMAIN = 1 << 0;
    }
}

/// The start_info page, `[HV]`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StartInfo {
    /// [`START_INFO_MAGIC`].
    pub magic: [u8; 16],
    /// ABI major of the hypervisor.
    pub abi_major: u32,
    /// ABI minor of the hypervisor.
    pub abi_minor: u32,
    /// This domain's id.
    pub domid: u32,
    /// [`StartFlags`] bits.
    pub flags: u32,
    /// [`Capabilities`] bits.
    pub capabilities: u64,
    /// Number of pseudo-physical pages the domain owns (pfn `0..nr_pages`).
    pub nr_pages: u64,
    /// Virtual address of pfn 0: pfn `p` is mapped at `virt_base + p * 4096`.
    pub virt_base: u64,
    /// Virtual address of the P2M list: `nr_pages` little-endian `u64` mfns.
    pub p2m_list: u64,
    /// Virtual address of the shared_info page (mapped read-write).
    pub shared_info: u64,
    /// Machine frame of the shared_info page.
    pub shared_info_mfn: u64,
    /// Virtual address of the start-of-day L4 page table (mapped read-only).
    pub pt_base: u64,
    /// Number of page-table frames at start of day; they are the pfns
    /// `pt_first_pfn .. pt_first_pfn + nr_pt_frames`.
    pub nr_pt_frames: u64,
    /// First pfn of the start-of-day page tables.
    pub pt_first_pfn: u64,
    /// Virtual address of the hypercall page.
    pub hypercall_page: u64,
    /// First pfn the start-of-day layout does not use: pfns from here to
    /// `nr_pages` are free for the guest.
    pub first_free_pfn: u64,
    /// Virtual address of the top of the initial stack (also in `rsp`).
    pub stack_top: u64,
    /// Bytes of initial stack below `stack_top`.
    pub stack_size: u64,
    /// Number of vCPUs the domain was created with.
    pub nr_vcpus: u32,
    /// Must be zero.
    pub reserved0: u32,
    /// Entries in the read-only M2P table at `layout::M2P_VIRT_START` (one
    /// `u64` pfn per machine frame; `u64::MAX` = not a guest frame). ABI 0.2.
    pub nr_m2p_entries: u64,
    /// Reserved for additions in later minors; zero.
    pub reserved: [u64; 15],
    /// Domain name, NUL-terminated UTF-8.
    pub name: [u8; NAME_SIZE],
    /// Guest command line, NUL-terminated UTF-8.
    pub cmdline: [u8; CMDLINE_SIZE],
}

const _: () = assert!(core::mem::size_of::<StartInfo>() == 1328);
const _: () = assert!(core::mem::size_of::<StartInfo>() <= 4096);
const _: () = assert!(core::mem::offset_of!(StartInfo, abi_major) == 16);
const _: () = assert!(core::mem::offset_of!(StartInfo, domid) == 24);
const _: () = assert!(core::mem::offset_of!(StartInfo, capabilities) == 32);
const _: () = assert!(core::mem::offset_of!(StartInfo, nr_pages) == 40);
const _: () = assert!(core::mem::offset_of!(StartInfo, virt_base) == 48);
const _: () = assert!(core::mem::offset_of!(StartInfo, p2m_list) == 56);
const _: () = assert!(core::mem::offset_of!(StartInfo, shared_info) == 64);
const _: () = assert!(core::mem::offset_of!(StartInfo, shared_info_mfn) == 72);
const _: () = assert!(core::mem::offset_of!(StartInfo, pt_base) == 80);
const _: () = assert!(core::mem::offset_of!(StartInfo, nr_pt_frames) == 88);
const _: () = assert!(core::mem::offset_of!(StartInfo, pt_first_pfn) == 96);
const _: () = assert!(core::mem::offset_of!(StartInfo, hypercall_page) == 104);
const _: () = assert!(core::mem::offset_of!(StartInfo, first_free_pfn) == 112);
const _: () = assert!(core::mem::offset_of!(StartInfo, stack_top) == 120);
const _: () = assert!(core::mem::offset_of!(StartInfo, stack_size) == 128);
const _: () = assert!(core::mem::offset_of!(StartInfo, nr_vcpus) == 136);
const _: () = assert!(core::mem::offset_of!(StartInfo, nr_m2p_entries) == 144);
const _: () = assert!(core::mem::offset_of!(StartInfo, reserved) == 152);
const _: () = assert!(core::mem::offset_of!(StartInfo, name) == 272);
const _: () = assert!(core::mem::offset_of!(StartInfo, cmdline) == 304);

impl StartInfo {
    /// The command line as a string (up to the first NUL; invalid UTF-8 → empty).
    pub fn cmdline_str(&self) -> &str {
        c_str(&self.cmdline)
    }

    /// The domain name as a string.
    pub fn name_str(&self) -> &str {
        c_str(&self.name)
    }
}

/// The UTF-8 text before the first NUL of `bytes` (empty when not UTF-8).
pub fn c_str(bytes: &[u8]) -> &str {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..len]).unwrap_or("")
}
