//! `domctl`: privileged domain control (SPEC.md HC-17) and the toolstack
//! operations (SPEC.md §16, TS-*). Each operation names the capability it
//! needs; without it the call returns `-EPERM`.
//!
//! `domctl(op, domid, buf)`: `domid` names the target domain (ignored by the
//! operations that have none); `buf` is the guest address of the operation's
//! argument struct, or — for the operations that say so — a plain value.
//! Every struct is copied in once (IN fields), validated, and copied back
//! (OUT fields) only when the call succeeds, unless noted.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `domctl(DOMCTL_GET_INFO, domid, buf)`: fill `buf` (a [`DomainInfo`]) with the
/// domain whose id is the smallest one `>= domid`; returns that id, or `-ESRCH`
/// when there is none. Needs `Capabilities::DOMAIN_QUERY`.
pub const DOMCTL_GET_INFO: u64 = 0;
/// `domctl(DOMCTL_CREATE, 0, &DomctlCreate)`: an empty, paused domain with no
/// memory; returns its domid (TS-2). Needs `DOMAIN_BUILD`.
pub const DOMCTL_CREATE: u64 = 1;
/// `domctl(DOMCTL_POPULATE, domid, nr_pages)`: gives the domain `nr_pages`
/// more frames (`buf` is the count, not a pointer) (TS-3). Needs `DOMAIN_BUILD`.
pub const DOMCTL_POPULATE: u64 = 2;
/// `domctl(DOMCTL_BUILD, domid, &mut DomctlBuild)`: lays out an ELF image in the
/// populated memory with the boot-time builder and sets vCPU 0's initial
/// context (TS-4). Needs `DOMAIN_BUILD`.
pub const DOMCTL_BUILD: u64 = 3;
/// `domctl(DOMCTL_UNPAUSE, domid, 0)`: lets a built domain's vCPUs run (TS-5).
pub const DOMCTL_UNPAUSE: u64 = 4;
/// `domctl(DOMCTL_PAUSE, domid, 0)`: stops a domain's vCPUs; returns once none
/// runs (TS-5).
pub const DOMCTL_PAUSE: u64 = 5;
/// `domctl(DOMCTL_DESTROY, domid, 0)`: kills the domain through the crash path
/// and frees it (TS-6).
pub const DOMCTL_DESTROY: u64 = 6;
/// `domctl(DOMCTL_SHUTDOWN, domid, reason)`: asks the domain to shut down
/// (`buf` is a `SHUTDOWN_*` reason) by raising `VIRQ_SHUTDOWN_REQUEST` in it (TS-7).
pub const DOMCTL_SHUTDOWN: u64 = 7;
/// `domctl(DOMCTL_GET_INFO_V2, domid, &mut DomainInfoV2)`: as
/// [`DOMCTL_GET_INFO`] with more fields (TS-8). Needs `DOMAIN_QUERY`.
pub const DOMCTL_GET_INFO_V2: u64 = 8;
/// `domctl(DOMCTL_PHYSINFO, 0, &mut PhysInfo)`: the machine (TS-9). Needs `DOMAIN_QUERY`.
pub const DOMCTL_PHYSINFO: u64 = 9;
/// `domctl(DOMCTL_CONSOLE_READ, domid, &mut DomctlRead)`: a domain's console
/// output stream (TS-10). Needs `DOMAIN_BUILD`.
pub const DOMCTL_CONSOLE_READ: u64 = 10;
/// `domctl(DOMCTL_CONSOLE_INPUT, domid, &DomctlBytes)`: queues console input
/// for a domain; returns the bytes queued (TS-11). Needs `DOMAIN_BUILD`.
pub const DOMCTL_CONSOLE_INPUT: u64 = 11;
/// `domctl(DOMCTL_HV_LOG_READ, 0, &mut DomctlRead)`: hv-core's own log (TS-12).
/// Needs `DOMAIN_BUILD`.
pub const DOMCTL_HV_LOG_READ: u64 = 12;
/// `domctl(DOMCTL_MGMT_READ, 0, &DomctlBytes)`: bytes received on the
/// management UART; returns how many, possibly 0 (TS-13). Needs `DOMAIN_BUILD`.
pub const DOMCTL_MGMT_READ: u64 = 13;
/// `domctl(DOMCTL_MGMT_WRITE, 0, &DomctlBytes)`: sends bytes on the management
/// UART; returns how many it took, possibly 0 (TS-13). Needs `DOMAIN_BUILD`.
pub const DOMCTL_MGMT_WRITE: u64 = 14;
/// `domctl(DOMCTL_BOOT_MODULE_READ, index, &mut BootModule)`: bytes of a boot
/// module hv-core kept instead of starting it (`hold` flag) (TS-14). Needs `DOMAIN_BUILD`.
pub const DOMCTL_BOOT_MODULE_READ: u64 = 15;

/// `DomainInfo.state`: runnable or running.
pub const DOMAIN_STATE_RUNNING: u32 = 0;
/// `DomainInfo.state`: shut down by its own request; `shutdown_reason` says why.
pub const DOMAIN_STATE_SHUTDOWN: u32 = 1;
/// `DomainInfo.state`: crashed (killed by the hypervisor for a fault it could not deliver).
pub const DOMAIN_STATE_CRASHED: u32 = 2;
/// `DomainInfoV2.state`: alive but paused by the toolstack, or created and
/// not yet unpaused (`DomainInfo.state` says `RUNNING` for it, as in 0.5).
pub const DOMAIN_STATE_PAUSED: u32 = 3;

/// OUT of `DOMCTL_GET_INFO`, `[HV]`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DomainInfo {
    /// Domain id.
    pub domid: u32,
    /// `DOMAIN_STATE_*`.
    pub state: u32,
    /// `SHUTDOWN_*` reason when `state` is `DOMAIN_STATE_SHUTDOWN`.
    pub shutdown_reason: u32,
    /// Number of vCPUs.
    pub nr_vcpus: u32,
    /// Pages owned.
    pub nr_pages: u64,
    /// TSC cycles its vCPUs have run.
    pub cpu_cycles: u64,
    /// Name, NUL-terminated.
    pub name: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<DomainInfo>() == 64);
const _: () = assert!(core::mem::offset_of!(DomainInfo, nr_pages) == 16);
const _: () = assert!(core::mem::offset_of!(DomainInfo, cpu_cycles) == 24);
const _: () = assert!(core::mem::offset_of!(DomainInfo, name) == 32);

/// Longest domain name in bytes (TS-2); names are `[A-Za-z0-9._-]`.
pub const DOMAIN_NAME_MAX: usize = 31;
/// Most vCPUs a domain may have (`shared_info::MAX_VIRT_CPUS`).
pub const DOMAIN_VCPUS_MAX: u32 = 32;
/// Weight a domain gets when `DomctlCreate.weight` is 0.
pub const DEFAULT_WEIGHT: u32 = 256;
/// Largest part of an image `DOMCTL_BUILD` copies in (its file header,
/// program headers, loadable segments and notes), in bytes; larger → `-E2BIG`.
/// Section headers and debug info are never copied and do not count.
pub const BUILD_IMAGE_MAX: u64 = 4 << 20;
/// Largest command line `DOMCTL_BUILD` accepts (bytes, without a NUL); longer → `-E2BIG`.
pub const BUILD_CMDLINE_MAX: u64 = 1023;
/// Largest `buf_len`/`len` one console, log, mgmt or module transfer moves;
/// a longer buffer is used up to this many bytes.
pub const DOMCTL_XFER_MAX: u64 = 4096;
/// Bytes of console output hv-core keeps per domain (TS-10).
pub const CONSOLE_RING_SIZE: u64 = 16 * 1024;
/// Bytes of console input hv-core queues per domain (TS-11).
pub const CONSOLE_INPUT_SIZE: u64 = 1024;
/// Bytes of hv-core's own log it keeps (TS-12).
pub const HV_LOG_RING_SIZE: u64 = 64 * 1024;

/// IN of `DOMCTL_CREATE`, `[GUEST]`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DomctlCreate {
    /// IN: most pages the domain may ever own (populate refuses beyond it).
    pub max_pages: u64,
    /// IN: vCPUs, `1..=DOMAIN_VCPUS_MAX`.
    pub vcpus: u32,
    /// IN: scheduler weight, 0 = `DEFAULT_WEIGHT`; else 1..=65535.
    pub weight: u32,
    /// IN: CPU cap in percent of one pCPU, 0 = uncapped; else 1..=100 per vCPU.
    pub cap_percent: u32,
    /// IN: bytes used in `name`, `1..=DOMAIN_NAME_MAX`.
    pub name_len: u32,
    /// IN: the name (`name_len` bytes; the rest is ignored).
    pub name: [u8; 32],
    /// Reserved, MUST be 0.
    pub reserved: u64,
}
const _: () = assert!(core::mem::size_of::<DomctlCreate>() == 64);
const _: () = assert!(core::mem::offset_of!(DomctlCreate, vcpus) == 8);
const _: () = assert!(core::mem::offset_of!(DomctlCreate, name_len) == 20);
const _: () = assert!(core::mem::offset_of!(DomctlCreate, name) == 24);
const _: () = assert!(core::mem::offset_of!(DomctlCreate, reserved) == 56);

/// IN/OUT of `DOMCTL_BUILD`. `err_written` is written back on failure too.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DomctlBuild {
    /// IN: guest address of the ELF image.
    pub image: u64,
    /// IN: its length in bytes, at least 1 (see `BUILD_IMAGE_MAX`).
    pub image_len: u64,
    /// IN: guest address of the command line (UTF-8, no NUL), or 0.
    pub cmdline: u64,
    /// IN: its length, `0..=BUILD_CMDLINE_MAX`.
    pub cmdline_len: u64,
    /// IN: guest address of a buffer for a one-line reason on failure, or 0.
    pub err: u64,
    /// IN: its length (a longer reason is cut).
    pub err_len: u64,
    /// OUT: bytes of reason written into `err` (0 on success).
    pub err_written: u64,
    /// Reserved, MUST be 0.
    pub reserved: u64,
}
const _: () = assert!(core::mem::size_of::<DomctlBuild>() == 64);
const _: () = assert!(core::mem::offset_of!(DomctlBuild, err) == 32);
const _: () = assert!(core::mem::offset_of!(DomctlBuild, err_written) == 48);

/// IN/OUT of `DOMCTL_GET_INFO_V2`, `[HV]` (all OUT).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DomainInfoV2 {
    /// Domain id.
    pub domid: u32,
    /// `DOMAIN_STATE_*` (`PAUSED` while paused and alive).
    pub state: u32,
    /// `SHUTDOWN_*` reason when `state` is `DOMAIN_STATE_SHUTDOWN`.
    pub shutdown_reason: u32,
    /// 1 while paused by the toolstack (or never unpaused), else 0.
    pub paused: u32,
    /// Number of vCPUs.
    pub nr_vcpus: u32,
    /// Event-channel ports not closed.
    pub evtchn_ports_in_use: u32,
    /// Entries of its grant table that some domain has mapped.
    pub grant_entries_in_use: u32,
    /// 1 once `DOMCTL_BUILD` (or the boot builder) succeeded, else 0.
    pub built: u32,
    /// Pages owned (pseudo-physical pages; the shared_info frame is not counted).
    pub nr_pages: u64,
    /// Most pages it may own.
    pub max_pages: u64,
    /// Nanoseconds its vCPUs have run, summed.
    pub cpu_ns: u64,
    /// TSC when it was created.
    pub created_tsc: u64,
    /// TSC when it first wrote console output; 0 = not yet.
    pub first_output_tsc: u64,
    /// TSC cycles hv-core spent in its create, populate and build operations.
    pub hv_build_cycles: u64,
    /// End of its console output stream (bytes written so far, TS-10).
    pub console_end: u64,
    /// TSC when it was first unpaused; 0 = not yet.
    pub unpaused_tsc: u64,
    /// Name, NUL-terminated.
    pub name: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<DomainInfoV2>() == 128);
const _: () = assert!(core::mem::offset_of!(DomainInfoV2, nr_pages) == 32);
const _: () = assert!(core::mem::offset_of!(DomainInfoV2, first_output_tsc) == 64);
const _: () = assert!(core::mem::offset_of!(DomainInfoV2, unpaused_tsc) == 88);
const _: () = assert!(core::mem::offset_of!(DomainInfoV2, name) == 96);

/// `PhysInfo.iommu`: no IOMMU in use.
pub const IOMMU_NONE: u32 = 0;
/// `PhysInfo.iommu`: Intel VT-d.
pub const IOMMU_VTD: u32 = 1;
/// `PhysInfo.iommu`: AMD-Vi.
pub const IOMMU_AMDVI: u32 = 2;

/// OUT of `DOMCTL_PHYSINFO`, `[HV]`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysInfo {
    /// ABI major of the hypervisor.
    pub abi_major: u32,
    /// ABI minor of the hypervisor.
    pub abi_minor: u32,
    /// pCPUs online.
    pub nr_cpus: u32,
    /// `IOMMU_*`.
    pub iommu: u32,
    /// Frames hv-core manages for domains (free plus owned by domains).
    pub total_pages: u64,
    /// Frames in the free pool.
    pub free_pages: u64,
    /// TSC frequency in Hz.
    pub tsc_hz: u64,
    /// Live domains (including dead ones not yet reaped).
    pub nr_domains: u32,
    /// Boot modules kept for the toolstack (`hold`, TS-14).
    pub nr_boot_modules: u32,
    /// hv-core's version, NUL-terminated.
    pub hv_version: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<PhysInfo>() == 80);
const _: () = assert!(core::mem::offset_of!(PhysInfo, total_pages) == 16);
const _: () = assert!(core::mem::offset_of!(PhysInfo, nr_domains) == 40);
const _: () = assert!(core::mem::offset_of!(PhysInfo, hv_version) == 48);

/// Where a read of a byte stream (a console or the hv log) landed, `[HV]`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ConsoleChunk {
    /// Stream position of the first byte copied (`> offset` when the bytes
    /// from `offset` were overwritten: output was lost).
    pub start: u64,
    /// Bytes copied.
    pub len: u64,
    /// The stream's end (total bytes ever written).
    pub end: u64,
}
const _: () = assert!(core::mem::size_of::<ConsoleChunk>() == 24);

/// IN/OUT of `DOMCTL_CONSOLE_READ` and `DOMCTL_HV_LOG_READ`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DomctlRead {
    /// IN: stream position to read from.
    pub offset: u64,
    /// IN: guest address of the buffer.
    pub buf: u64,
    /// IN: its length (at most `DOMCTL_XFER_MAX` bytes are used).
    pub buf_len: u64,
    /// OUT: what was read.
    pub chunk: ConsoleChunk,
}
const _: () = assert!(core::mem::size_of::<DomctlRead>() == 48);
const _: () = assert!(core::mem::offset_of!(DomctlRead, chunk) == 24);

/// IN of `DOMCTL_CONSOLE_INPUT`, `DOMCTL_MGMT_READ`, `DOMCTL_MGMT_WRITE`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DomctlBytes {
    /// IN: guest address of the bytes (or of the buffer to fill).
    pub buf: u64,
    /// IN: their length (at most `DOMCTL_XFER_MAX` are used).
    pub len: u64,
}
const _: () = assert!(core::mem::size_of::<DomctlBytes>() == 16);

/// IN/OUT of `DOMCTL_BOOT_MODULE_READ`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootModule {
    /// IN: byte offset in the module.
    pub offset: u64,
    /// IN: guest address of the buffer.
    pub buf: u64,
    /// IN: its length (at most `DOMCTL_XFER_MAX` are used).
    pub buf_len: u64,
    /// OUT: bytes copied.
    pub copied: u64,
    /// OUT: the module's size in bytes.
    pub size: u64,
    /// OUT: the module's string (file name and parameters, without `hold`),
    /// NUL-terminated, cut to fit.
    pub string: [u8; 88],
}
const _: () = assert!(core::mem::size_of::<BootModule>() == 128);
const _: () = assert!(core::mem::offset_of!(BootModule, string) == 40);

impl Default for BootModule {
    fn default() -> Self {
        BootModule {
            offset: 0,
            buf: 0,
            buf_len: 0,
            copied: 0,
            size: 0,
            string: [0; 88],
        }
    }
}

/// Why a domain name is refused (TS-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Empty or longer than [`DOMAIN_NAME_MAX`].
    Length,
    /// A byte outside `[A-Za-z0-9._-]`.
    Character,
}

/// Checks a domain name (TS-2): `1..=DOMAIN_NAME_MAX` bytes of `[A-Za-z0-9._-]`.
pub fn check_domain_name(name: &[u8]) -> Result<&str, NameError> {
    if name.is_empty() || name.len() > DOMAIN_NAME_MAX {
        return Err(NameError::Length);
    }
    if !name
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(NameError::Character);
    }
    // All ASCII, so valid UTF-8.
    core::str::from_utf8(name).map_err(|_| NameError::Character)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check_domain_name(b"web-1.a_b"), Ok("web-1.a_b"));
        assert_eq!(check_domain_name(b""), Err(NameError::Length));
        assert_eq!(check_domain_name(&[b'a'; 31]).map(str::len), Ok(31));
        assert_eq!(check_domain_name(&[b'a'; 32]), Err(NameError::Length));
        assert_eq!(check_domain_name(b"a b"), Err(NameError::Character));
        assert_eq!(check_domain_name(b"a/b"), Err(NameError::Character));
        assert_eq!(check_domain_name(&[0xc3, 0xa9]), Err(NameError::Character));
        assert_eq!(check_domain_name(&[0xff]), Err(NameError::Character));
        assert_eq!(check_domain_name(b"a\0"), Err(NameError::Character));
    }
}
