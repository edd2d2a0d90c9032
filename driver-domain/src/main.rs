//! Paravane's driver domain (domain 0).
//!
//! It announces itself; given devices (module argument `devices=1`), it
//! brings up the ones hv-core assigned to it (virtio-blk, NVMe, virtio-net;
//! see [`devices`]) and runs their self-tests; `dma-attack=1` runs the DMA
//! isolation test ([`attack`]), `bench=1` the device figures ([`bench`]),
//! `grant-dma=1` the grants-in-the-IOMMU test ([`grant_dma`]).
//! Then it waits for every other domain to end and powers off — which,
//! holding `MACHINE_POWER`, ends the machine. It binds `VIRQ_DOM_EXC`
//! (raised whenever another domain shuts down or crashes) and blocks between
//! checks of `domctl(DOMCTL_GET_INFO)`, so it uses no CPU while guests run.
//! Meanwhile its backends ([`backend`]) serve the guests' split devices,
//! from a RAM disk or, with `disk=virtio-blk` (or `disk=nvme`), from that
//! disk, which then gets no self-test; with `nic=virtio-net` the vifs'
//! bridge also holds the virtio-net NIC (no self-test either), so guests
//! reach the outside.
//!
//! With `toolstack=1` it also runs the run-time toolstack ([`toolstack`]):
//! it serves `pvctl` on the management UART, and stays up when no guest
//! runs until `pvctl poweroff` asks it to end the machine.
//!
//! The drivers themselves are the `driver_domain` library (host-tested);
//! this binary adds the hardware side ([`hw`]).
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

extern crate alloc;

mod attack;
mod backend;
mod bench;
mod devices;
mod grant_dma;
mod hw;
mod toolstack;

use alloc::boxed::Box;
use alloc::rc::Rc;
use core::cell::RefCell;

use backend::block_store::SharedStore;
use backend::config::{DiskDevice, NicDevice};
use driver_domain::blk::BlockError;
use driver_domain::sync_disk::SyncDisk;
use hypercall_abi::domctl::DOMAIN_STATE_RUNNING;
use hypercall_abi::evtchn::VIRQ_DOM_EXC;
use hypercall_abi::sched::SHUTDOWN_POWEROFF;
use hypercall_abi::start_info::StartInfo;
use hypercall_abi::{DomId, Errno};
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::hypercall::{domctl_get_info, shutdown};
use pv_guest_kit::println;

pv_guest_kit::entry!(kmain);

fn kmain(si: &'static StartInfo) {
    println!(
        "driver domain up: Paravane ABI {}.{}, {} pages, capabilities {:#x}",
        si.abi_major, si.abi_minor, si.nr_pages, si.capabilities
    );
    let args = Args::new(si.cmdline_str());
    let flag = |key| args.get_u64(key).unwrap_or(0) != 0;
    let (config, refused) = backend::config::parse(si.cmdline_str());
    for token in refused {
        println!("toolstack: ignoring bad option `{token}`");
    }
    let served = config.device;
    let mut devs = None;
    if flag("grant-dma") {
        run_grant_dma();
    } else if flag("devices")
        || flag("dma-attack")
        || flag("bench")
        || served.is_some()
        || config.nic.is_some()
    {
        devs = run_devices(flag("dma-attack"), flag("bench"), served, config.nic);
    }
    let disk = served.and_then(|kind| served_disk(kind, devs.as_mut()?));
    let uplink = config.nic.and_then(|kind| uplink_nic(kind, devs.as_mut()?));
    let port = match events::bind_virq(VIRQ_DOM_EXC) {
        Ok(port) => port,
        Err(err) => panic!("driver: cannot bind VIRQ_DOM_EXC: {err}"),
    };
    // The event only wakes the wait below, which re-checks the domains.
    events::set_handler(port, domain_exception);
    let run_toolstack = flag("toolstack");
    let mut backends = backend::Backends::start(si, &config, disk, uplink, run_toolstack);
    if run_toolstack {
        let mut toolstack = toolstack::Toolstack::start(si.domid);
        backends.run_until(Some(&mut toolstack), || false);
        println!("driver: powering off as pvctl asked");
    } else {
        backends.run_until(None, || match other_domain_running(si.domid) {
            Ok(running) => !running,
            Err(err) => panic!("driver: cannot list domains: {err}"),
        });
        println!("driver: no guests left, powering off");
    }
    shutdown(SHUTDOWN_POWEROFF);
}

/// Takes the disk the backends serve guests from out of `devs` (DEV-6
/// `disk=virtio-blk|nvme`), driven one request at a time with a 5 s limit
/// per request.
fn served_disk(kind: DiskDevice, devs: &mut devices::Devices) -> Option<SharedStore> {
    let now = Box::new(pv_guest_kit::bench::rdtsc);
    let timeout = devs.tsc_hz.max(1_000_000_000).saturating_mul(5);
    let disk: Result<SharedStore, BlockError> = match kind {
        DiskDevice::VirtioBlk => {
            let (dev, _) = devs.vblk.take()?;
            SyncDisk::new(dev, &mut devs.dma, now, timeout)
                .map(|d| -> SharedStore { Rc::new(RefCell::new(d)) })
        }
        DiskDevice::Nvme => {
            let (dev, _) = devs.nvme.take()?;
            SyncDisk::new(dev, &mut devs.dma, now, timeout)
                .map(|d| -> SharedStore { Rc::new(RefCell::new(d)) })
        }
    };
    disk.map_err(|e| println!("dd: cannot serve the {kind:?} disk: {e}"))
        .ok()
}

/// Takes the NIC the bridge holds out of `devs` (DEV-6 `nic=virtio-net`).
fn uplink_nic(kind: NicDevice, devs: &mut devices::Devices) -> Option<backend::Uplink> {
    match kind {
        NicDevice::VirtioNet => match devs.vnet.take() {
            Some((nic, port)) => Some(backend::Uplink::new(Box::new(nic), port)),
            None => {
                println!("dd: no virtio-net NIC for the bridge: guests stay on their own segment");
                None
            }
        },
    }
}

/// Brings the devices up and runs the self-tests (except on `served`, the
/// disk guests get, whose contents belong to them, and on the NIC `nic`
/// puts on the bridge), the attack or the benchmarks. Failures are
/// reported, never fatal: the domain still has to power the machine off.
fn run_devices(
    attack_mode: bool,
    bench_mode: bool,
    served: Option<DiskDevice>,
    nic: Option<NicDevice>,
) -> Option<devices::Devices> {
    let tsc_hz = pv_guest_kit::time::tsc_hz();
    let mut devs = match devices::bring_up(tsc_hz) {
        Ok(devs) => devs,
        Err(err) => {
            println!("dd: cannot list devices: {err}");
            return None;
        }
    };
    println!("dd: {} device(s) assigned", devs.listed.len());
    if attack_mode {
        let invisible = attack::unassigned_are_invisible(&devs);
        let blocked = attack::run(&mut devs);
        println!(
            "dd: dma-attack: {}",
            if invisible && blocked {
                "all checks passed"
            } else {
                "FAILED"
            }
        );
        return Some(devs);
    }
    let mut passed = true;
    let dma = &mut devs.dma;
    if let Some((disk, port)) = devs.vblk.as_mut() {
        if served == Some(DiskDevice::VirtioBlk) {
            println!("dd: virtio-blk: serves guests, no self-test");
        } else {
            passed &=
                devices::disk_self_test("virtio-blk", disk, *port, dma, tsc_hz, 2048, 256).is_ok();
        }
    }
    if let Some((disk, port)) = devs.nvme.as_mut() {
        if served == Some(DiskDevice::Nvme) {
            println!("dd: nvme: serves guests, no self-test");
        } else {
            passed &= devices::disk_self_test("nvme", disk, *port, dma, tsc_hz, 2048, 256).is_ok();
        }
    }
    if let Some((vnet, port)) = devs.vnet.as_mut() {
        if nic == Some(NicDevice::VirtioNet) {
            // Its ARP self-test would claim 10.0.2.15 for the NIC's own MAC
            // in the user network's table, which belongs to a guest.
            println!("dd: virtio-net: on the guests' bridge, no self-test");
        } else {
            passed &= devices::arp_self_test(vnet, *port, tsc_hz);
        }
    }
    println!(
        "dd: device self-tests {}",
        if passed { "passed" } else { "FAILED" }
    );
    if bench_mode {
        println!("dd bench: TSC {} Hz", tsc_hz);
        if let Some((disk, _)) = devs.vblk.as_mut() {
            bench::block("dd_virtio_blk", disk, dma, tsc_hz);
        }
        if let Some((disk, _)) = devs.nvme.as_mut() {
            bench::block("dd_nvme_blk", disk, dma, tsc_hz);
        }
        if let Some((nic, _)) = devs.vnet.as_mut() {
            bench::net(nic, tsc_hz);
        }
    }
    Some(devs)
}

/// Brings the devices up and runs the grant-DMA test ([`grant_dma`]).
fn run_grant_dma() {
    let tsc_hz = pv_guest_kit::time::tsc_hz();
    match devices::bring_up(tsc_hz) {
        Ok(mut devs) => {
            grant_dma::run(&mut devs);
        }
        Err(err) => println!("dd: cannot list devices: {err}"),
    }
}

/// `VIRQ_DOM_EXC` handler: nothing to do, the wait re-checks.
fn domain_exception(_port: Port) {}

/// Whether any domain other than `me` is still running (domains that shut
/// down or crashed but are not yet destroyed do not count).
fn other_domain_running(me: DomId) -> Result<bool, Errno> {
    let mut next: DomId = 0;
    loop {
        let info = match domctl_get_info(next) {
            Ok(info) => info,
            Err(Errno::ESRCH) => return Ok(false),
            Err(err) => return Err(err),
        };
        if info.domid != me && info.state == DOMAIN_STATE_RUNNING {
            return Ok(true);
        }
        match info.domid.checked_add(1) {
            Some(after) => next = after,
            None => return Ok(false),
        }
    }
}
