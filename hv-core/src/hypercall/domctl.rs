//! `domctl` (HC-17): privileged domain control, capability-checked — domain
//! queries and the toolstack operations of SPEC.md §16 (TS-*).
//!
//! Every operation checks the caller's capability before it reads `buf`;
//! argument structs are copied in once, checked, then used; no lock is held
//! while guest memory is read or written (TS-15).

use alloc::vec::Vec;

use hypercall_abi::domctl::{
    BootModule, DomainInfo, DomainInfoV2, DomctlBuild, DomctlBytes, DomctlCreate, DomctlRead,
    PhysInfo, BUILD_CMDLINE_MAX, BUILD_IMAGE_MAX, DOMAIN_STATE_CRASHED, DOMAIN_STATE_PAUSED,
    DOMAIN_STATE_RUNNING, DOMAIN_STATE_SHUTDOWN, DOMCTL_BOOT_MODULE_READ, DOMCTL_BUILD,
    DOMCTL_CONSOLE_INPUT, DOMCTL_CONSOLE_READ, DOMCTL_CREATE, DOMCTL_DESTROY, DOMCTL_GET_INFO,
    DOMCTL_GET_INFO_V2, DOMCTL_HV_LOG_READ, DOMCTL_MGMT_READ, DOMCTL_MGMT_WRITE, DOMCTL_PAUSE,
    DOMCTL_PHYSINFO, DOMCTL_POPULATE, DOMCTL_SHUTDOWN, DOMCTL_UNPAUSE, DOMCTL_XFER_MAX,
    IOMMU_AMDVI, IOMMU_NONE, IOMMU_VTD,
};
use hypercall_abi::evtchn::{VIRQ_CONSOLE, VIRQ_SHUTDOWN_REQUEST};
use hypercall_abi::physdev::{PHYSDEV_IOMMU_AMDVI, PHYSDEV_IOMMU_VTD};
use hypercall_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT};
use hypercall_abi::start_info::Capabilities;
use hypercall_abi::{DomId, Errno, ABI_MAJOR, ABI_MINOR};

use crate::domain::{self, BuildState, Domain, DomainSpec, DomainState, DOMAINS};
use crate::guest_memory::{copy_from_guest, copy_to_guest, read_obj, write_obj, GuestRange};
use crate::loader::cmdline::PinList;
use crate::sched;

pub fn domctl(op: u64, domid: u64, buf: u64) -> Result<u64, Errno> {
    let caller = sched::current().ok_or(Errno::EINVAL)?.domid;
    let needs = match op {
        DOMCTL_GET_INFO | DOMCTL_GET_INFO_V2 | DOMCTL_PHYSINFO => Capabilities::DOMAIN_QUERY,
        DOMCTL_CREATE..=DOMCTL_BOOT_MODULE_READ => Capabilities::DOMAIN_BUILD,
        _ => return Err(Errno::EINVAL),
    };
    let caps = DOMAINS
        .lock()
        .domains
        .get(&caller)
        .map(|d| d.capabilities)
        .ok_or(Errno::ESRCH)?;
    if !caps.contains(needs) {
        return Err(Errno::EPERM);
    }
    match op {
        DOMCTL_GET_INFO => get_info(domid, buf),
        DOMCTL_GET_INFO_V2 => get_info_v2(domid, buf),
        DOMCTL_PHYSINFO => physinfo(buf),
        DOMCTL_CREATE => create(buf),
        DOMCTL_POPULATE => domain::domain_populate(target(domid)?, buf)
            .map(|()| 0)
            .map_err(|r| r.errno),
        DOMCTL_BUILD => build(target(domid)?, buf),
        DOMCTL_UNPAUSE => {
            let t = other(domid, caller, Errno::EINVAL)?;
            domain::domain_unpause(t).map(|()| 0)
        }
        DOMCTL_PAUSE => {
            let t = other(domid, caller, Errno::EINVAL)?;
            domain::domain_pause(t).map(|()| 0)
        }
        DOMCTL_DESTROY => domain::domain_destroy(target(domid)?, caller).map(|()| 0),
        DOMCTL_SHUTDOWN => shutdown(other(domid, caller, Errno::EPERM)?, buf),
        DOMCTL_CONSOLE_READ => console_read(target(domid)?, buf),
        DOMCTL_CONSOLE_INPUT => console_input(target(domid)?, buf),
        DOMCTL_HV_LOG_READ => hv_log_read(buf),
        DOMCTL_MGMT_READ => mgmt_read(buf),
        DOMCTL_MGMT_WRITE => mgmt_write(buf),
        DOMCTL_BOOT_MODULE_READ => boot_module_read(domid, buf),
        _ => Err(Errno::EINVAL),
    }
}

/// A domid argument: `ESRCH` past the u32 range (existence is checked by the
/// operation, under the table lock).
fn target(domid: u64) -> Result<DomId, Errno> {
    DomId::try_from(domid).map_err(|_| Errno::ESRCH)
}

/// A domid that must be neither the caller nor domain 0 (else `refusal`).
fn other(domid: u64, caller: DomId, refusal: Errno) -> Result<DomId, Errno> {
    let t = target(domid)?;
    if t == caller || t == hypercall_abi::DOMID_DRIVER {
        return Err(refusal);
    }
    Ok(t)
}

fn state_code(d: &Domain) -> (u32, u32) {
    match d.state {
        DomainState::Running if d.paused => (DOMAIN_STATE_PAUSED, 0),
        DomainState::Running => (DOMAIN_STATE_RUNNING, 0),
        DomainState::Shutdown(r) => (DOMAIN_STATE_SHUTDOWN, r as u32),
        DomainState::Crashed => (DOMAIN_STATE_CRASHED, 0),
    }
}

fn name_bytes(d: &Domain) -> [u8; 32] {
    let mut name = [0u8; 32];
    let n = d.name.len().min(31);
    name[..n].copy_from_slice(&d.name.as_bytes()[..n]);
    name
}

fn get_info(domid: u64, buf: u64) -> Result<u64, Errno> {
    let info = {
        let table = DOMAINS.lock();
        let first = target(domid)?;
        let (_, d) = table.domains.range(first..).next().ok_or(Errno::ESRCH)?;
        // Version 1 keeps its 0.5 meaning: a live domain is RUNNING, paused
        // or not (a minor bump does not change what exists).
        let (state, shutdown_reason) = match state_code(d) {
            (DOMAIN_STATE_PAUSED, r) => (DOMAIN_STATE_RUNNING, r),
            other => other,
        };
        DomainInfo {
            domid: d.id,
            state,
            shutdown_reason,
            nr_vcpus: d.vcpus.len() as u32,
            nr_pages: d.p2m.len() as u64,
            cpu_cycles: d.cpu_cycles,
            name: name_bytes(d),
        }
    };
    write_obj(buf, &info)?;
    Ok(u64::from(info.domid))
}

fn get_info_v2(domid: u64, buf: u64) -> Result<u64, Errno> {
    let info = {
        let table = DOMAINS.lock();
        let first = target(domid)?;
        let (_, d) = table.domains.range(first..).next().ok_or(Errno::ESRCH)?;
        let (state, shutdown_reason) = state_code(d);
        let ports = crate::event::delivery::EVENTS.lock().ports_in_use(d.id);
        let grants = crate::grant::live::GRANTS.lock().entries_in_use(d.id);
        DomainInfoV2 {
            domid: d.id,
            state,
            shutdown_reason,
            paused: u32::from(d.paused),
            nr_vcpus: d.vcpus.len() as u32,
            evtchn_ports_in_use: ports,
            grant_entries_in_use: grants,
            built: u32::from(d.build == BuildState::Built),
            nr_pages: d.p2m.len() as u64,
            max_pages: d.max_pages,
            cpu_ns: d
                .vcpus
                .iter()
                .map(|v| v.cpu_time_ns)
                .fold(0u64, u64::saturating_add),
            created_tsc: d.created_tsc,
            first_output_tsc: d.first_output_tsc,
            hv_build_cycles: d.hv_build_cycles,
            console_end: d.console_ring.end(),
            unpaused_tsc: d.unpaused_tsc,
            name: name_bytes(d),
        }
    };
    write_obj(buf, &info)?;
    Ok(u64::from(info.domid))
}

fn physinfo(buf: u64) -> Result<u64, Errno> {
    let mut info = PhysInfo {
        abi_major: ABI_MAJOR,
        abi_minor: ABI_MINOR,
        nr_cpus: sched::nr_online() as u32,
        iommu: match crate::iommu::live::IOMMU.lock().mode() {
            PHYSDEV_IOMMU_VTD => IOMMU_VTD,
            PHYSDEV_IOMMU_AMDVI => IOMMU_AMDVI,
            _ => IOMMU_NONE,
        },
        tsc_hz: crate::time::clock::tsc_hz(),
        nr_boot_modules: domain::nr_held_modules() as u32,
        ..PhysInfo::default()
    };
    {
        let table = DOMAINS.lock();
        let owned: u64 = table.domains.values().map(|d| d.nr_frames()).sum();
        info.nr_domains = table.domains.len() as u32;
        let free = crate::mm::live::FRAMES
            .lock()
            .as_ref()
            .map_or(0, |f| f.free_count());
        info.free_pages = free;
        info.total_pages = free.saturating_add(owned);
    }
    let version = env!("CARGO_PKG_VERSION").as_bytes();
    let n = version.len().min(31);
    info.hv_version[..n].copy_from_slice(&version[..n]);
    write_obj(buf, &info)?;
    Ok(0)
}

fn create(buf: u64) -> Result<u64, Errno> {
    let arg: DomctlCreate = read_obj(buf)?;
    let checked = crate::toolstack::check_create(&arg)?;
    let spec = DomainSpec {
        name: &checked.name,
        max_pages: checked.max_pages,
        vcpus: checked.vcpus,
        weight: checked.weight,
        cap_percent: checked.cap_percent,
        pin: PinList::default(),
        driver: false,
    };
    let domid = domain::domain_create(&spec).map_err(|r| r.errno)?;
    log::info!(
        "d{domid} '{}': created empty by the toolstack (max {} pages, {} vCPU(s))",
        checked.name,
        checked.max_pages,
        checked.vcpus
    );
    Ok(u64::from(domid))
}

/// `len` zero bytes on the hypervisor heap (`ENOMEM` if it is exhausted).
fn heap_bytes(len: u64) -> Result<Vec<u8>, Errno> {
    let len = usize::try_from(len).map_err(|_| Errno::ENOMEM)?;
    let mut bytes: Vec<u8> = Vec::new();
    bytes.try_reserve_exact(len).map_err(|_| Errno::ENOMEM)?;
    bytes.resize(len, 0);
    Ok(bytes)
}

/// Copies a one-line reason into the caller's `err` buffer (cut to fit) and
/// the struct back with `err_written`; returns `errno`.
fn build_failed(buf: u64, mut arg: DomctlBuild, errno: Errno, why: &str) -> Errno {
    let n = (why.len() as u64).min(arg.err_len).min(DOMCTL_XFER_MAX) as usize;
    arg.err_written = 0;
    if n > 0 {
        if let Ok(range) = GuestRange::new(arg.err, n as u64) {
            if copy_to_guest(range, &why.as_bytes()[..n]).is_ok() {
                arg.err_written = n as u64;
            }
        }
    }
    let _ = write_obj(buf, &arg);
    errno
}

fn build(domid: DomId, buf: u64) -> Result<u64, Errno> {
    let arg: DomctlBuild = read_obj(buf)?;
    if arg.reserved != 0 {
        return Err(build_failed(
            buf,
            arg,
            Errno::EINVAL,
            "reserved field is not 0",
        ));
    }
    if arg.image_len == 0 {
        return Err(build_failed(buf, arg, Errno::EINVAL, "empty image"));
    }
    if arg.cmdline_len > BUILD_CMDLINE_MAX {
        return Err(build_failed(
            buf,
            arg,
            Errno::E2BIG,
            "command line longer than 1023 bytes",
        ));
    }
    // Buffers on the heap: this runs on the caller's 16 KiB vCPU stack.
    let mut cmdline = heap_bytes(arg.cmdline_len)?;
    copy_from_guest(&mut cmdline, GuestRange::new(arg.cmdline, arg.cmdline_len)?)?;
    let Some(cmdline) = core::str::from_utf8(&cmdline)
        .ok()
        .filter(|s| !s.contains('\0'))
    else {
        return Err(build_failed(
            buf,
            arg,
            Errno::EINVAL,
            "command line is not UTF-8 without NUL",
        ));
    };
    // Only the bytes the loader reads are copied in (headers, segments and
    // notes; not section headers or debug info).
    let image_range = GuestRange::new(arg.image, arg.image_len)?;
    let head_len = arg.image_len.min(4096);
    let mut head = heap_bytes(head_len)?;
    copy_from_guest(
        &mut head[..head_len as usize],
        GuestRange::new(image_range.va(), head_len)?,
    )?;
    let copy_len = crate::loader::elf::loaded_prefix_len(&head[..head_len as usize])
        .filter(|&n| n <= arg.image_len)
        .unwrap_or(arg.image_len);
    if copy_len > BUILD_IMAGE_MAX {
        return Err(build_failed(
            buf,
            arg,
            Errno::E2BIG,
            "the image's loaded part is larger than 4 MiB (BUILD_IMAGE_MAX)",
        ));
    }
    let mut image: Vec<u8> = Vec::new();
    if image.try_reserve_exact(copy_len as usize).is_err() {
        return Err(build_failed(
            buf,
            arg,
            Errno::ENOMEM,
            "out of hypervisor heap for the image",
        ));
    }
    image.resize(copy_len as usize, 0);
    copy_from_guest(&mut image, GuestRange::new(image_range.va(), copy_len)?)?;
    match domain::domain_build(domid, &image, cmdline) {
        Ok(()) => {
            let mut out = arg;
            out.err_written = 0;
            write_obj(buf, &out)?;
            Ok(0)
        }
        Err(r) => {
            log::info!("d{domid}: build refused: {}", r.why);
            Err(build_failed(buf, arg, r.errno, &r.why))
        }
    }
}

fn shutdown(domid: DomId, reason: u64) -> Result<u64, Errno> {
    if !matches!(reason, SHUTDOWN_POWEROFF | SHUTDOWN_REBOOT | SHUTDOWN_CRASH) {
        return Err(Errno::EINVAL);
    }
    let alive = DOMAINS
        .lock()
        .domains
        .get(&domid)
        .is_some_and(|d| d.alive());
    if !alive {
        return Err(Errno::ESRCH);
    }
    crate::event::delivery::send_virq(domid, VIRQ_SHUTDOWN_REQUEST);
    Ok(0)
}

/// Reads a `DomctlRead`, lets `fill` copy stream bytes into a hypervisor
/// buffer, then copies them out and the chunk back.
fn read_stream(
    buf: u64,
    fill: impl FnOnce(u64, &mut [u8]) -> Result<hypercall_abi::domctl::ConsoleChunk, Errno>,
) -> Result<u64, Errno> {
    let mut arg: DomctlRead = read_obj(buf)?;
    let want = arg.buf_len.min(DOMCTL_XFER_MAX);
    let dst = GuestRange::new(arg.buf, want)?;
    let mut bytes = heap_bytes(want)?;
    let chunk = fill(arg.offset, &mut bytes)?;
    let len = chunk.len.min(want);
    copy_to_guest(GuestRange::new(dst.va(), len)?, &bytes[..len as usize])?;
    arg.chunk = chunk;
    write_obj(buf, &arg)?;
    Ok(len)
}

fn console_read(domid: DomId, buf: u64) -> Result<u64, Errno> {
    read_stream(buf, |offset, out| {
        let table = DOMAINS.lock();
        let d = table.domains.get(&domid).ok_or(Errno::ESRCH)?;
        if !d.alive() {
            return Err(Errno::ESRCH);
        }
        d.console_ring.read(offset, out)
    })
}

fn hv_log_read(buf: u64) -> Result<u64, Errno> {
    read_stream(buf, crate::console::hv_log_read)
}

/// Reads a `DomctlBytes` and copies its bytes (at most `DOMCTL_XFER_MAX`) in.
fn bytes_in(buf: u64) -> Result<Vec<u8>, Errno> {
    let arg: DomctlBytes = read_obj(buf)?;
    let len = arg.len.min(DOMCTL_XFER_MAX);
    let src = GuestRange::new(arg.buf, len)?;
    let mut bytes = heap_bytes(len)?;
    copy_from_guest(&mut bytes, src)?;
    Ok(bytes)
}

fn console_input(domid: DomId, buf: u64) -> Result<u64, Errno> {
    let bytes = bytes_in(buf)?;
    let queued = {
        let mut table = DOMAINS.lock();
        let d = table.domains.get_mut(&domid).ok_or(Errno::ESRCH)?;
        if !d.alive() {
            return Err(Errno::ESRCH);
        }
        if d.capabilities.contains(Capabilities::CONSOLE_READ) {
            return Err(Errno::EINVAL);
        }
        bytes
            .iter()
            .take_while(|&&b| d.console_input.push_back(b).is_ok())
            .count()
    };
    if queued > 0 {
        crate::event::delivery::send_virq(domid, VIRQ_CONSOLE);
    }
    Ok(queued as u64)
}

fn mgmt_read(buf: u64) -> Result<u64, Errno> {
    let arg: DomctlBytes = read_obj(buf)?;
    let want = arg.len.min(DOMCTL_XFER_MAX);
    let dst = GuestRange::new(arg.buf, want)?;
    let mut bytes = heap_bytes(want)?;
    let n = crate::console::mgmt_read(&mut bytes);
    copy_to_guest(GuestRange::new(dst.va(), n as u64)?, &bytes[..n])?;
    Ok(n as u64)
}

fn mgmt_write(buf: u64) -> Result<u64, Errno> {
    let bytes = bytes_in(buf)?;
    Ok(crate::console::mgmt_write(&bytes) as u64)
}

fn boot_module_read(index: u64, buf: u64) -> Result<u64, Errno> {
    let mut arg: BootModule = read_obj(buf)?;
    let module = usize::try_from(index)
        .ok()
        .and_then(domain::held_module)
        .ok_or(Errno::ENOENT)?;
    let bytes = module.bytes();
    let size = bytes.len() as u64;
    let from = arg.offset.min(size);
    let n = (size - from).min(arg.buf_len).min(DOMCTL_XFER_MAX);
    let dst = GuestRange::new(arg.buf, n)?;
    copy_to_guest(dst, &bytes[from as usize..(from + n) as usize])?;
    arg.copied = n;
    arg.size = size;
    arg.string = [0; 88];
    let s = module.string().as_bytes();
    let k = s.len().min(arg.string.len() - 1);
    arg.string[..k].copy_from_slice(&s[..k]);
    write_obj(buf, &arg)?;
    Ok(n)
}
