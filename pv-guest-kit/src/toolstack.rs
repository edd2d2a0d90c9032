//! The toolstack's hypercalls (SPEC.md §16, TS-*): building, pausing and
//! destroying other domains, their consoles, hv-core's log, the management
//! UART and held boot modules. One safe wrapper per `domctl` operation; every
//! one needs the `DOMAIN_BUILD` capability (else `Err(EPERM)`), except
//! [`domain_info`] and [`physinfo`], which need `DOMAIN_QUERY`.
//!
//! A domain goes through the same steps whether hv-core builds it from a boot
//! module or a toolstack builds it at run time:
//! [`domain_create`] → [`domain_populate`] → [`domain_build`] → [`domain_unpause`].

use hypercall_abi::domctl::{
    BootModule, ConsoleChunk, DomainInfoV2, DomctlBuild, DomctlBytes, DomctlCreate, DomctlRead,
    PhysInfo, DOMCTL_BOOT_MODULE_READ, DOMCTL_BUILD, DOMCTL_CONSOLE_INPUT, DOMCTL_CONSOLE_READ,
    DOMCTL_CREATE, DOMCTL_DESTROY, DOMCTL_GET_INFO_V2, DOMCTL_HV_LOG_READ, DOMCTL_MGMT_READ,
    DOMCTL_MGMT_WRITE, DOMCTL_PAUSE, DOMCTL_PHYSINFO, DOMCTL_POPULATE, DOMCTL_SHUTDOWN,
    DOMCTL_UNPAUSE, DOMCTL_XFER_MAX,
};
use hypercall_abi::{DomId, Errno, Hypercall};

use crate::hypercall::hypercall_raw;

pub use hypercall_abi::domctl::{
    DOMAIN_STATE_CRASHED, DOMAIN_STATE_PAUSED, DOMAIN_STATE_RUNNING, DOMAIN_STATE_SHUTDOWN,
};

/// What [`domain_create`] makes.
#[derive(Clone, Copy, Debug)]
pub struct NewDomain<'a> {
    /// 1..=31 bytes of `[A-Za-z0-9._-]`; `EEXIST` if a live domain has it.
    pub name: &'a str,
    /// Memory limit in 4 KiB pages.
    pub max_pages: u64,
    /// 1..=32.
    pub vcpus: u32,
    /// 0 = default (256).
    pub weight: u32,
    /// 0 = uncapped.
    pub cap_percent: u32,
}

/// `domctl(op, domid, buf)` with `buf` a value or the address of `arg`.
///
/// # Safety
/// 1. If the operation reads or writes memory at `buf`, `buf` must be valid
///    for those accesses (the caller passes the address of a live, suitably
///    sized, `FromBytes` value or a plain value for value operations).
unsafe fn domctl(op: u64, domid: DomId, buf: u64) -> Result<u64, Errno> {
    // SAFETY: `domctl` reads/writes only `buf` (the caller's obligation) and
    // the buffers named inside it, which the safe wrappers below build from
    // live Rust slices.
    let ret = unsafe {
        hypercall_raw(
            Hypercall::Domctl.number(),
            [op, u64::from(domid), buf, 0, 0],
        )
    };
    Errno::check(ret)
}

/// `DOMCTL_CREATE` (TS-2): an empty domain, paused, with no memory.
pub fn domain_create(cfg: &NewDomain) -> Result<DomId, Errno> {
    let name = cfg.name.as_bytes();
    let mut arg = DomctlCreate {
        max_pages: cfg.max_pages,
        vcpus: cfg.vcpus,
        weight: cfg.weight,
        cap_percent: cfg.cap_percent,
        name_len: name.len().min(u32::MAX as usize) as u32,
        name: [0; 32],
        reserved: 0,
    };
    if name.len() > arg.name.len() {
        return Err(Errno::EINVAL);
    }
    arg.name[..name.len()].copy_from_slice(name);
    // SAFETY: `arg` is a live `DomctlCreate`, only read.
    let id = unsafe { domctl(DOMCTL_CREATE, 0, &arg as *const DomctlCreate as u64)? };
    DomId::try_from(id).map_err(|_| Errno::ERANGE)
}

/// `DOMCTL_POPULATE` (TS-3): `nr_pages` more pages; `ENOMEM` if not free,
/// `ERANGE` past `max_pages`.
pub fn domain_populate(domid: DomId, nr_pages: u64) -> Result<(), Errno> {
    // SAFETY: a value operation: no memory is accessed.
    unsafe { domctl(DOMCTL_POPULATE, domid, nr_pages) }.map(drop)
}

/// `DOMCTL_BUILD` (TS-4): lays out the ELF `image` with hv-core's own
/// loader/builder (the one boot-time domains use) and sets vCPU 0's initial
/// context. On failure `err` receives one human line (e.g. "not an ELF file")
/// and its length is returned with the error.
pub fn domain_build(
    domid: DomId,
    image: &[u8],
    cmdline: &str,
    err: &mut [u8],
) -> Result<(), (Errno, usize)> {
    let mut arg = DomctlBuild {
        image: image.as_ptr() as u64,
        image_len: image.len() as u64,
        cmdline: cmdline.as_ptr() as u64,
        cmdline_len: cmdline.len() as u64,
        err: err.as_mut_ptr() as u64,
        err_len: err.len() as u64,
        err_written: 0,
        reserved: 0,
    };
    // SAFETY: `arg` is a live `DomctlBuild`; the image and cmdline it names are
    // live slices (only read), `err` a live mutable slice of `err_len` bytes.
    let ret = unsafe { domctl(DOMCTL_BUILD, domid, &mut arg as *mut DomctlBuild as u64) };
    match ret {
        Ok(_) => Ok(()),
        Err(e) => Err((e, (arg.err_written as usize).min(err.len()))),
    }
}

/// `DOMCTL_UNPAUSE` (TS-5).
pub fn domain_unpause(domid: DomId) -> Result<(), Errno> {
    // SAFETY: no memory is accessed.
    unsafe { domctl(DOMCTL_UNPAUSE, domid, 0) }.map(drop)
}

/// `DOMCTL_PAUSE` (TS-5): returns once none of its vCPUs runs.
pub fn domain_pause(domid: DomId) -> Result<(), Errno> {
    // SAFETY: no memory is accessed.
    unsafe { domctl(DOMCTL_PAUSE, domid, 0) }.map(drop)
}

/// `DOMCTL_DESTROY` (TS-6): kills the domain as a crash would, whatever it is
/// doing; its frames return to the free pool once the last foreign or grant
/// reference goes.
pub fn domain_destroy(domid: DomId) -> Result<(), Errno> {
    // SAFETY: no memory is accessed.
    unsafe { domctl(DOMCTL_DESTROY, domid, 0) }.map(drop)
}

/// `DOMCTL_SHUTDOWN` (TS-7): asks politely (`VIRQ_SHUTDOWN_REQUEST` in the
/// guest); a guest without a handler ignores it, so a toolstack destroys it
/// after a timeout.
pub fn domain_shutdown(domid: DomId, reason: u32) -> Result<(), Errno> {
    // SAFETY: a value operation: no memory is accessed.
    unsafe { domctl(DOMCTL_SHUTDOWN, domid, u64::from(reason)) }.map(drop)
}

/// `DOMCTL_GET_INFO_V2` (TS-8): the domain with the smallest id
/// `>= domid_at_least`; `ESRCH` when there is none.
pub fn domain_info(domid_at_least: DomId) -> Result<DomainInfoV2, Errno> {
    let mut info = DomainInfoV2::default();
    // SAFETY: `info` is a live `DomainInfoV2` (any bytes are valid).
    unsafe {
        domctl(
            DOMCTL_GET_INFO_V2,
            domid_at_least,
            &mut info as *mut DomainInfoV2 as u64,
        )?
    };
    Ok(info)
}

/// `DOMCTL_PHYSINFO` (TS-9).
pub fn physinfo() -> Result<PhysInfo, Errno> {
    let mut info = PhysInfo::default();
    // SAFETY: `info` is a live `PhysInfo` (any bytes are valid).
    unsafe { domctl(DOMCTL_PHYSINFO, 0, &mut info as *mut PhysInfo as u64)? };
    Ok(info)
}

fn read_stream(op: u64, domid: DomId, offset: u64, buf: &mut [u8]) -> Result<ConsoleChunk, Errno> {
    let mut arg = DomctlRead {
        offset,
        buf: buf.as_mut_ptr() as u64,
        buf_len: (buf.len() as u64).min(DOMCTL_XFER_MAX),
        chunk: ConsoleChunk::default(),
    };
    // SAFETY: `arg` is a live `DomctlRead`; it names `buf`, valid for writes of
    // `buf_len <= buf.len()` bytes.
    unsafe { domctl(op, domid, &mut arg as *mut DomctlRead as u64)? };
    Ok(arg.chunk)
}

/// `DOMCTL_CONSOLE_READ` (TS-10): bytes of the domain's console output stream
/// from position `offset` (or later, when output was lost: `start > offset`).
/// `ESRCH` for a dead or unknown domain.
pub fn console_read(domid: DomId, offset: u64, buf: &mut [u8]) -> Result<ConsoleChunk, Errno> {
    read_stream(DOMCTL_CONSOLE_READ, domid, offset, buf)
}

/// `DOMCTL_HV_LOG_READ` (TS-12): hv-core's own log, what it printed on the
/// serial console.
pub fn hv_log_read(offset: u64, buf: &mut [u8]) -> Result<ConsoleChunk, Errno> {
    read_stream(DOMCTL_HV_LOG_READ, 0, offset, buf)
}

fn bytes_op(op: u64, domid: DomId, ptr: u64, len: usize) -> Result<usize, Errno> {
    let arg = DomctlBytes {
        buf: ptr,
        len: (len as u64).min(DOMCTL_XFER_MAX),
    };
    // SAFETY: `arg` is a live `DomctlBytes` naming a live buffer of at least
    // `arg.len` bytes (the callers pass a slice's pointer and length).
    let n = unsafe { domctl(op, domid, &arg as *const DomctlBytes as u64)? };
    Ok((n as usize).min(len))
}

/// `DOMCTL_CONSOLE_INPUT` (TS-11): queues input the guest reads with
/// `console_io(CONSOLE_READ)`; returns the bytes queued (fewer when its queue
/// is full).
pub fn console_input(domid: DomId, bytes: &[u8]) -> Result<usize, Errno> {
    bytes_op(
        DOMCTL_CONSOLE_INPUT,
        domid,
        bytes.as_ptr() as u64,
        bytes.len(),
    )
}

/// `DOMCTL_MGMT_READ` (TS-13): bytes received on the management UART (COM2);
/// never blocks, 0 = nothing available.
pub fn mgmt_read(buf: &mut [u8]) -> Result<usize, Errno> {
    bytes_op(DOMCTL_MGMT_READ, 0, buf.as_mut_ptr() as u64, buf.len())
}

/// `DOMCTL_MGMT_WRITE` (TS-13): sends bytes on the management UART; never
/// blocks, returns how many it took (0 when its transmitter is busy).
pub fn mgmt_write(bytes: &[u8]) -> Result<usize, Errno> {
    bytes_op(DOMCTL_MGMT_WRITE, 0, bytes.as_ptr() as u64, bytes.len())
}

/// A piece of a held boot module (TS-14).
#[derive(Clone, Copy, Debug)]
pub struct ModulePiece {
    /// Bytes copied into the buffer.
    pub copied: usize,
    /// The module's size.
    pub size: u64,
    /// The module's string (file name and parameters), NUL-terminated.
    pub string: [u8; 88],
}

impl ModulePiece {
    /// The module's string up to its NUL (empty if not UTF-8).
    pub fn string(&self) -> &str {
        let end = self
            .string
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.string.len());
        core::str::from_utf8(&self.string[..end]).unwrap_or("")
    }
}

/// `DOMCTL_BOOT_MODULE_READ` (TS-14): bytes of held boot module `index`
/// (0 = the first held one) from `offset`; `ENOENT` past the last.
pub fn boot_module_read(index: u32, offset: u64, buf: &mut [u8]) -> Result<ModulePiece, Errno> {
    let mut arg = BootModule {
        offset,
        buf: buf.as_mut_ptr() as u64,
        buf_len: (buf.len() as u64).min(DOMCTL_XFER_MAX),
        ..BootModule::default()
    };
    // SAFETY: `arg` is a live `BootModule`; it names `buf`, valid for writes of
    // `buf_len <= buf.len()` bytes.
    unsafe {
        domctl(
            DOMCTL_BOOT_MODULE_READ,
            index,
            &mut arg as *mut BootModule as u64,
        )?
    };
    Ok(ModulePiece {
        copied: (arg.copied as usize).min(buf.len()),
        size: arg.size,
        string: arg.string,
    })
}
