//! Domain 0's devices: lists what hv-core assigned (PDEV-2), maps BARs
//! (PDEV-4), binds MSI-X vectors to event channels (PDEV-5), brings up the
//! virtio-blk, NVMe and virtio-net drivers, and runs their self-tests:
//! patterned sectors written and read back on each disk, an ARP exchange
//! with QEMU's user-network gateway.

use alloc::vec::Vec;

use driver_domain::blk::{run_sync, BlockDevice, BlockError, BlockOp, BlockRequest};
use driver_domain::dma::{PageBuffer, Segment};
use driver_domain::net::{arp_reply_from, arp_request, Nic};
use driver_domain::nvme::Nvme;
use driver_domain::pattern::{fill_sectors, first_mismatch};
use driver_domain::pci::{self, DeviceId};
use driver_domain::virtio::blk::VirtioBlk;
use driver_domain::virtio::net::VirtioNet;
use driver_domain::virtio::pci::{VirtioPci, VirtioPciCaps, NO_VECTOR};
use hypercall_abi::physdev::{
    PhysdevDeviceInfo, PHYSDEV_BAR_IO, PHYSDEV_BAR_PRESENT, PHYSDEV_IOMMU_OFF, PHYSDEV_IRQ_MSIX,
};
use hypercall_abi::{Errno, PAGE_SIZE};
use pv_guest_kit::bench::rdtsc;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::physdev;
use pv_guest_kit::println;

use crate::hw::config::PhysdevConfigSpace;
use crate::hw::frames::{DmaMode, FrameDma, FramePage};
use crate::hw::mmio::MmioWindow;

/// A virtio-blk disk as the drivers here use it.
pub type VirtioDisk = VirtioBlk<MmioWindow, FramePage>;
/// An NVMe disk.
pub type NvmeDisk = Nvme<MmioWindow, FramePage>;
/// A virtio NIC.
pub type VirtioNic = VirtioNet<MmioWindow, FramePage>;

/// `bb:dd.f` of an sbdf.
pub struct Bdf(pub u32);

impl core::fmt::Display for Bdf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = self.0;
        write!(
            f,
            "{:02x}:{:02x}.{:x}",
            (s >> 8) & 0xff,
            (s >> 3) & 0x1f,
            s & 7
        )
    }
}

/// The devices domain 0 holds, with drivers bound.
pub struct Devices {
    /// DMA addressing for these devices.
    pub dma: FrameDma,
    /// TSC ticks per second.
    pub tsc_hz: u64,
    /// Every device hv-core listed.
    pub listed: Vec<PhysdevDeviceInfo>,
    /// virtio-blk, with its interrupt port.
    pub vblk: Option<(VirtioDisk, Option<Port>)>,
    /// NVMe, with its interrupt port.
    pub nvme: Option<(NvmeDisk, Option<Port>)>,
    /// virtio-net.
    pub vnet: Option<(VirtioNic, Option<Port>)>,
}

/// A deadline `secs` seconds of TSC from now, as a `keep_waiting` closure.
pub fn deadline(tsc_hz: u64, secs: u64) -> impl FnMut() -> bool {
    let end = rdtsc().saturating_add(tsc_hz.max(1_000_000_000).saturating_mul(secs));
    move || rdtsc() < end
}

/// Lists this domain's devices (PDEV-2).
pub fn list() -> Result<Vec<PhysdevDeviceInfo>, Errno> {
    let mut out = Vec::new();
    for index in 0..256 {
        match physdev::device_info(index) {
            Ok(info) => out.push(info),
            Err(Errno::ENOENT) => break,
            Err(err) => return Err(err),
        }
    }
    Ok(out)
}

/// Maps `len` bytes at `offset` of memory BAR `bar` of `info`.
fn map_bar(
    info: &PhysdevDeviceInfo,
    bar: u8,
    offset: u64,
    len: u64,
) -> Result<MmioWindow, &'static str> {
    let b = info.bars.get(usize::from(bar)).ok_or("no such BAR")?;
    if b.flags & PHYSDEV_BAR_PRESENT == 0 || b.flags & PHYSDEV_BAR_IO != 0 {
        return Err("BAR absent or I/O");
    }
    if offset.checked_add(len).is_none_or(|end| end > b.size) {
        return Err("range outside the BAR");
    }
    let start = b.address + offset;
    let first = start / PAGE_SIZE;
    let last = (start + len).div_ceil(PAGE_SIZE);
    let va = physdev::map_mmio(first, last - first).map_err(|e| {
        println!("dd: {}: mapping BAR {bar}: {e}", Bdf(info.sbdf));
        "cannot map"
    })?;
    Ok(MmioWindow::new(va + start % PAGE_SIZE, len as usize))
}

/// Binds MSI-X entry `entry` to a masked port (pending bits show the
/// interrupts; the drivers poll).
fn bind_vector(info: &PhysdevDeviceInfo, entry: u16) -> Option<Port> {
    if entry >= info.msix_entries {
        return None;
    }
    match physdev::bind_msi(info.sbdf, PHYSDEV_IRQ_MSIX, entry) {
        Ok(port) => {
            events::mask(port);
            events::clear_pending(port);
            Some(port)
        }
        Err(err) => {
            println!("dd: {}: MSI-X entry {entry}: {err}", Bdf(info.sbdf));
            None
        }
    }
}

/// Opens a modern virtio device's transport.
fn open_virtio(info: &PhysdevDeviceInfo) -> Result<VirtioPci<MmioWindow>, &'static str> {
    let cfg = PhysdevConfigSpace::new(info.sbdf);
    pci::enable_memory_and_dma(&cfg);
    let caps = VirtioPciCaps::find(&cfg).map_err(|_| "no virtio capabilities")?;
    let mut mapped: [Option<MmioWindow>; 6] = [None; 6];
    VirtioPci::new(&caps, |bar| {
        let slot = mapped.get_mut(usize::from(bar))?;
        if slot.is_none() {
            let size = info.bars[usize::from(bar)].size;
            *slot = map_bar(info, bar, 0, size).ok();
        }
        *slot
    })
    .map_err(|_| "virtio capabilities unusable")
}

/// Lists, maps and brings up every device domain 0 has a driver for.
pub fn bring_up(tsc_hz: u64) -> Result<Devices, Errno> {
    let iommu = physdev::iommu_info()?;
    let mode = if iommu.mode == PHYSDEV_IOMMU_OFF {
        DmaMode::Machine
    } else {
        DmaMode::Iommu
    };
    println!(
        "dd: IOMMU mode {} ({} unit(s)), DMA addresses are {}",
        iommu.mode,
        iommu.units,
        if mode == DmaMode::Iommu {
            "pseudo-physical"
        } else {
            "machine"
        }
    );
    let mut devices = Devices {
        dma: FrameDma { mode },
        tsc_hz,
        listed: list()?,
        vblk: None,
        nvme: None,
        vnet: None,
    };
    for info in devices.listed.clone() {
        let id = DeviceId {
            vendor: info.vendor_id,
            device: info.device_id,
        };
        let bdf = Bdf(info.sbdf);
        println!(
            "dd: device {bdf} {:04x}:{:04x} class {:06x}, MSI-X {} entries",
            id.vendor, id.device, info.class, info.msix_entries
        );
        if id == DeviceId::VIRTIO_BLK && devices.vblk.is_none() {
            let port = bind_vector(&info, 0);
            let result = open_virtio(&info).and_then(|t| {
                VirtioBlk::new(
                    t,
                    &mut devices.dma,
                    if port.is_some() { 0 } else { NO_VECTOR },
                )
                .map_err(|e| {
                    println!("dd: {bdf} virtio-blk: {e}");
                    "init failed"
                })
            });
            match result {
                Ok(disk) => {
                    let i = disk.info();
                    println!(
                        "dd: {bdf} virtio-blk: {} sectors of {} bytes, queue depth {}, {} segments",
                        i.sectors, i.sector_size, i.queue_depth, i.max_segments
                    );
                    devices.vblk = Some((disk, port));
                }
                Err(e) => println!("dd: {bdf} virtio-blk: {e}"),
            }
        } else if id == DeviceId::QEMU_NVME && devices.nvme.is_none() {
            let cfg = PhysdevConfigSpace::new(info.sbdf);
            pci::enable_memory_and_dma(&cfg);
            // Registers and the admin + one I/O doorbell pair (stride 4):
            // the MSI-X table further up BAR 0 stays unmapped (PDEV-4).
            let port = bind_vector(&info, 1);
            let result = map_bar(&info, 0, 0, 2 * PAGE_SIZE).and_then(|regs| {
                Nvme::new(regs, &mut devices.dma, port.map(|_| 1), deadline(tsc_hz, 5)).map_err(
                    |e| {
                        println!("dd: {bdf} nvme: {e}");
                        "bring-up failed"
                    },
                )
            });
            match result {
                Ok(disk) => {
                    let i = disk.info();
                    let model = core::str::from_utf8(&disk.identity().model)
                        .unwrap_or("?")
                        .trim_end();
                    println!(
                        "dd: {bdf} nvme: '{model}', {} blocks of {} bytes, queue depth {}",
                        i.sectors, i.sector_size, i.queue_depth
                    );
                    devices.nvme = Some((disk, port));
                }
                Err(e) => println!("dd: {bdf} nvme: {e}"),
            }
        } else if id == DeviceId::VIRTIO_NET && devices.vnet.is_none() {
            let port = bind_vector(&info, 0);
            let v = if port.is_some() { 0 } else { NO_VECTOR };
            let result = open_virtio(&info).and_then(|t| {
                VirtioNet::new(t, &mut devices.dma, (v, v)).map_err(|e| {
                    println!("dd: {bdf} virtio-net: {e}");
                    "init failed"
                })
            });
            match result {
                Ok(nic) => {
                    let m = nic.mac();
                    println!(
                        "dd: {bdf} virtio-net: MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                        m[0], m[1], m[2], m[3], m[4], m[5]
                    );
                    devices.vnet = Some((nic, port));
                }
                Err(e) => println!("dd: {bdf} virtio-net: {e}"),
            }
        }
    }
    Ok(devices)
}

/// Whether `port` was raised since the last look (clears it).
pub fn take_interrupt(port: Option<Port>) -> bool {
    match port {
        Some(p) if events::is_pending(p) => {
            events::clear_pending(p);
            true
        }
        _ => false,
    }
}

/// Writes `sectors` patterned sectors at `first`, reads them back into a
/// zeroed buffer and compares; returns the number of requests used.
pub fn disk_self_test(
    name: &str,
    disk: &mut impl BlockDevice,
    port: Option<Port>,
    dma: &mut FrameDma,
    tsc_hz: u64,
    first: u64,
    sectors: u64,
) -> Result<(), BlockError> {
    let info = disk.info();
    let sector_size = info.sector_size as usize;
    let bytes = sectors as usize * sector_size;
    let mut buf = PageBuffer::new(dma, bytes).map_err(|_| BlockError::NoMemory)?;
    let mut data = alloc::vec![0u8; bytes];
    fill_sectors(&mut data, first, sector_size, 0xd0d0);
    buf.fill(&data);
    let segments: Vec<Segment> = buf.segments(bytes).collect();
    let per_request = usize::from(info.max_segments).clamp(1, 16);
    let sectors_per_page = (PAGE_SIZE as usize / sector_size) as u64;
    let _ = take_interrupt(port);
    let mut interrupts = 0;
    for op in [BlockOp::Write, BlockOp::Read] {
        if op == BlockOp::Read {
            buf.fill(&alloc::vec![0u8; bytes]);
        }
        for (i, chunk) in segments.chunks(per_request).enumerate() {
            let sector = first + (i * per_request) as u64 * sectors_per_page;
            let req = BlockRequest {
                op,
                sector,
                segments: chunk,
                tag: i as u64,
            };
            run_sync(disk, &req, deadline(tsc_hz, 5))?;
            interrupts += u64::from(take_interrupt(port));
        }
    }
    let mut back = alloc::vec![0u8; bytes];
    buf.copy_out(&mut back);
    match first_mismatch(&back, first, sector_size, 0xd0d0) {
        None => {
            println!(
                "dd: {name}: wrote and read back {sectors} patterned sectors at {first}: all match ({} interrupt(s) seen)",
                interrupts
            );
            Ok(())
        }
        Some(bad) => {
            println!(
                "dd: {name}: FAILED: sector {} differs after read-back",
                first + bad
            );
            Err(BlockError::Io)
        }
    }
}

/// Sends ARP requests for 10.0.2.2 until the gateway answers (or 5 s).
pub fn arp_self_test(nic: &mut VirtioNic, port: Option<Port>, tsc_hz: u64) -> bool {
    let me = nic.mac();
    let request = arp_request(me, [10, 0, 2, 15], [10, 0, 2, 2]);
    let mut keep_waiting = deadline(tsc_hz, 5);
    let mut buf = [0u8; 2048];
    let mut sent = 0;
    let mut next_send = 0;
    let mut interrupts = 0;
    while keep_waiting() {
        if rdtsc() >= next_send {
            if nic.transmit(&request).is_ok() {
                sent += 1;
            }
            next_send = rdtsc() + tsc_hz / 5;
        }
        nic.reclaim();
        interrupts += u64::from(take_interrupt(port));
        while let Some(n) = nic.receive(&mut buf) {
            if let Some(gw) = arp_reply_from(&buf[..n.min(buf.len())], me, [10, 0, 2, 2]) {
                println!(
                    "dd: virtio-net: ARP reply after {sent} request(s): 10.0.2.2 is at {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} ({} interrupt(s) seen)",
                    gw[0], gw[1], gw[2], gw[3], gw[4], gw[5], interrupts
                );
                return true;
            }
        }
    }
    println!("dd: virtio-net: FAILED: no ARP reply from 10.0.2.2 after {sent} request(s)");
    false
}
