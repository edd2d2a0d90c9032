//! Split-device backends of the driver domain (SPEC.md §12–14): the
//! boot-time toolstack that creates devbus records from the command line
//! ([`config`]), the storage they serve (a RAM disk or a real disk,
//! [`block_store`], [`gpt`],
//! [`disk_image`]), blkback ([`blkback`]), and netback ([`netback`]) with
//! its learning bridge ([`bridge`]), which with `nic=virtio-net` also holds
//! the physical NIC ([`Uplink`]), all driven by one event loop
//! ([`Backends::run_until`]).
//!
//! The loop reconciles the devbus records this domain backs after every
//! `VIRQ_DEVBUS` (DEV-4): it connects a record whose frontend published
//! its rings, and tears a connection down when the frontend closed (or
//! died) or the ring broke, closing its own side (DEV-3). Between rounds it
//! blocks until a frontend notifies, a record changes, the NIC raises its
//! interrupt with a received frame waiting, or `done` holds.

pub mod blkback;
pub mod block_store;
pub mod bridge;
pub mod config;
pub mod disk_image;
pub mod gpt;
pub mod netback;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use hypercall_abi::devbus::*;
use hypercall_abi::start_info::StartInfo;
use hypercall_abi::{DomId, Errno};
use pv_guest_kit::devices::devbus;
use pv_guest_kit::devices::ring_pages::RingPages;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::grants;
use pv_guest_kit::println;
use pv_guest_kit::ring::SharedPage;

use blkback::{BlkConnection, Bounce, MAX_INDIRECT_SEGMENTS};
use block_store::{BlockStore, RamDisk, SharedStore, View};
use bridge::{Bridge, Forward, UPLINK_PORT};
use config::Config;
use driver_domain::net::{NetError, Nic, MAX_FRAME};
use hypercall_abi::netif::{NETIF_RSP_DROPPED, NETIF_RSP_OKAY};
use netback::NetConnection;

/// What a record this domain backs is served from.
enum Served {
    Blk { view: View, readonly: bool },
    Net { mac: [u8; 6] },
}

/// Frames taken from the NIC per round.
const UPLINK_BUDGET: usize = 32;

/// Counters of the uplink port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkStats {
    /// Frames the bridge sent out on the wire.
    pub to_wire: u64,
    /// Frames that came in from the wire.
    pub from_wire: u64,
    /// Frames for the wire the NIC refused (transmit queue full after a
    /// reclaim, bad length).
    pub tx_dropped: u64,
    /// Frames from the wire dropped: longer than a frame, or claiming a
    /// vif's MAC as their source (which would steal its bridge entry).
    pub rx_dropped: u64,
}

/// The physical NIC as the bridge's uplink port (DEV-6 `nic=`, NET-4):
/// frames the bridge sends to [`UPLINK_PORT`] go out on the wire, frames
/// from the wire enter the bridge there. Its interrupt (an MSI-X vector
/// bound to an event channel, PDEV-5) wakes the backend loop.
pub struct Uplink {
    nic: Box<dyn Nic>,
    /// The NIC's interrupt port; without one the loop polls the NIC.
    irq: Option<Port>,
    pub stats: UplinkStats,
}

impl Uplink {
    /// Takes `nic` with its interrupt `irq` (bound, masked), which from now
    /// on only wakes the loop (the loop looks at the queues itself).
    pub fn new(nic: Box<dyn Nic>, irq: Option<Port>) -> Uplink {
        if let Some(port) = irq {
            events::set_handler(port, uplink_interrupt);
            if let Err(e) = events::unmask(port) {
                println!("netback: uplink: cannot unmask the NIC's port {port}: {e}");
            }
        }
        let m = nic.mac();
        println!(
            "netback: the bridge holds the NIC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} as its uplink port ({})",
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            m[5],
            if irq.is_some() {
                "woken by its MSI-X event"
            } else {
                "no interrupt: polled"
            }
        );
        Uplink {
            nic,
            irq,
            stats: UplinkStats::default(),
        }
    }

    /// Sends `frame` out on the wire; whether the NIC took it.
    fn transmit(&mut self, frame: &[u8]) -> bool {
        let sent = match self.nic.transmit(frame) {
            Err(NetError::Busy) => {
                self.nic.reclaim();
                self.nic.transmit(frame)
            }
            other => other,
        };
        if sent.is_ok() {
            self.stats.to_wire += 1;
        } else {
            self.stats.tx_dropped += 1;
        }
        sent.is_ok()
    }

    /// Up to [`UPLINK_BUDGET`] frames from the wire.
    fn receive_batch(&mut self) -> Vec<Vec<u8>> {
        self.nic.reclaim();
        let mut frames = Vec::new();
        let mut buf = [0u8; MAX_FRAME];
        while frames.len() < UPLINK_BUDGET {
            match self.nic.receive(&mut buf) {
                Some(n) if n <= MAX_FRAME => {
                    self.stats.from_wire += 1;
                    frames.push(buf[..n].to_vec());
                }
                Some(_) => self.stats.rx_dropped += 1,
                None => break,
            }
        }
        frames
    }
}

/// Every backend of this domain.
pub struct Backends {
    me: DomId,
    served: BTreeMap<u32, Served>,
    blk: BTreeMap<u32, BlkConnection>,
    /// Connected vifs by record id, which is also their bridge port.
    net: BTreeMap<u32, NetConnection>,
    bridge: Bridge,
    /// The physical NIC on the bridge, if `nic=` gave one.
    uplink: Option<Uplink>,
    /// Records refused at this generation (not retried until they change).
    refused: BTreeMap<u32, u32>,
    va_pool: Vec<u64>,
    bounce: Bounce,
    /// The disk `blk` views are cut from, once set up (the toolstack cuts
    /// more at run time).
    disk: Option<SharedStore>,
}

fn wake(_port: Port) {}

/// The NIC's interrupts taken (its event's upcalls), for the uplink's line.
static UPLINK_INTERRUPTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The NIC's event handler: counts; the loop looks at the queues itself.
fn uplink_interrupt(_port: Port) {
    UPLINK_INTERRUPTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
}

/// Resolves a configured view on the disk.
fn resolve(disk: &SharedStore, view: config::View) -> Result<View, &'static str> {
    match view {
        config::View::Whole => Ok(View::whole(disk.clone())),
        config::View::Lba { first, count } => {
            View::new(disk.clone(), first, count).map_err(|_| "range outside the disk")
        }
        config::View::Gpt(n) => {
            let part = {
                let mut d = disk.borrow_mut();
                gpt::read_partition(&mut *d, n).map_err(|_| "no such GPT partition")?
            };
            View::new(disk.clone(), part.first, part.units()).map_err(|_| "bad partition")
        }
    }
}

impl Backends {
    /// Sets up the disk (`device`, the real disk `config.device` named, or
    /// else a RAM disk) and creates the configured records (the boot-time
    /// toolstack, DEV-6), with `uplink` (the NIC `config.nic` named) on the
    /// bridge. Problems are reported and skipped.
    /// With `keep_disk` (the run-time toolstack) the disk is set up even
    /// when no boot-time guest has a `blk=` view of it.
    pub fn start(
        si: &StartInfo,
        config: &Config,
        device: Option<SharedStore>,
        uplink: Option<Uplink>,
        keep_disk: bool,
    ) -> Backends {
        if let Err(e) = devbus::watch() {
            panic!("backend: cannot bind VIRQ_DEVBUS: {e}");
        }
        let bounce = Bounce::new().unwrap_or_else(|e| panic!("backend: bounce frames: {e:?}"));
        let mut backends = Backends {
            me: si.domid,
            served: BTreeMap::new(),
            blk: BTreeMap::new(),
            net: BTreeMap::new(),
            bridge: Bridge::new(),
            uplink,
            refused: BTreeMap::new(),
            va_pool: Vec::new(),
            bounce,
            disk: None,
        };
        backends.create_records(config, device, keep_disk);
        backends
    }

    fn create_records(&mut self, config: &Config, device: Option<SharedStore>, keep_disk: bool) {
        self.create_foreign_records(config);
        for n in &config.net {
            let mut mac = [0u8; 8];
            mac[..6].copy_from_slice(&n.mac);
            let create = DevbusCreate {
                kind: DEVBUS_KIND_NET,
                backend: self.me,
                frontend: n.frontend,
                mac,
                ..DevbusCreate::default()
            };
            match devbus::create(&create) {
                Ok(id) => {
                    println!(
                        "toolstack: record {id}: net for d{}, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                        n.frontend, n.mac[0], n.mac[1], n.mac[2], n.mac[3], n.mac[4], n.mac[5]
                    );
                    self.served.insert(id, Served::Net { mac: n.mac });
                }
                Err(e) => println!("toolstack: net for d{}: devbus create: {e}", n.frontend),
            }
        }
        if config.blk.is_empty() && !keep_disk {
            return;
        }
        let (disk, bench_name) = match (config.device, device) {
            (Some(kind), Some(disk)) => {
                let units = disk.borrow().units();
                println!("toolstack: serving from the {kind:?} disk, {units} units");
                if config.seed {
                    println!("toolstack: seed= applies to the RAM disk only; not seeding {kind:?}");
                }
                (disk, "device_local_read_1m_cycles")
            }
            (Some(kind), None) => {
                println!("toolstack: no {kind:?} disk to serve: no blk device created");
                return;
            }
            (None, _) => match RamDisk::new(config.disk_mib) {
                Ok(d) => {
                    println!("toolstack: RAM disk of {} MiB", config.disk_mib);
                    let disk: SharedStore = Rc::new(RefCell::new(d));
                    (disk, "ramdisk_local_read_1m_cycles")
                }
                Err(e) => {
                    println!("toolstack: no RAM disk of {} MiB: {e:?}", config.disk_mib);
                    return;
                }
            },
        };
        if config.seed && config.device.is_none() {
            let seeded = disk_image::seed(&mut *disk.borrow_mut());
            match seeded {
                Ok(s) => println!(
                    "toolstack: seeded a GPT: partition 1 = units {}..={} (MBR + FAT16 with HELLO.TXT), partition 2 = units {}..={}",
                    s.guest_disk.first, s.guest_disk.last, s.scratch.first, s.scratch.last
                ),
                Err(e) => println!("toolstack: seeding failed: {e:?}"),
            }
        }
        {
            // The reference for blkfront's figures (fsdemo): 1 MiB read
            // locally from the disk, in TSC cycles.
            let mut buf = alloc::vec![0u8; 1 << 20];
            let mut runs: Vec<u64> = (0..5)
                .map(|_| {
                    let start = pv_guest_kit::bench::rdtsc();
                    let _ = disk.borrow_mut().read(0, &mut buf);
                    pv_guest_kit::bench::rdtsc() - start
                })
                .collect();
            runs.sort_unstable();
            println!(
                "BENCH name={bench_name} value={} (median of 5, in the driver domain)",
                runs[2]
            );
        }
        self.disk = Some(disk.clone());
        for (index, b) in config.blk.iter().enumerate() {
            let view = match resolve(&disk, b.view) {
                Ok(v) => v,
                Err(why) => {
                    println!("toolstack: blk for d{}: {why}", b.frontend);
                    continue;
                }
            };
            let create = DevbusCreate {
                kind: DEVBUS_KIND_BLK,
                backend: self.me,
                frontend: b.frontend,
                backend_handle: index as u32,
                dev_flags: if b.readonly { DEVBUS_FLAG_READONLY } else { 0 },
                sector_size: view.sector_size(),
                sectors: view.units(),
                ..DevbusCreate::default()
            };
            match devbus::create(&create) {
                Ok(id) => {
                    println!(
                        "toolstack: record {id}: blk for d{}, {:?}, {} units{}",
                        b.frontend,
                        b.view,
                        view.units(),
                        if b.readonly { ", read-only" } else { "" }
                    );
                    self.served.insert(
                        id,
                        Served::Blk {
                            view,
                            readonly: b.readonly,
                        },
                    );
                }
                Err(e) => println!("toolstack: blk for d{}: devbus create: {e}", b.frontend),
            }
        }
    }

    /// Records another domain backs (`foreign-blk=`, `foreign-net=`): created
    /// here, never served here (DEV-6).
    fn create_foreign_records(&mut self, config: &Config) {
        for f in &config.foreign {
            let create = match f.device {
                config::ForeignDevice::Blk { units } => DevbusCreate {
                    kind: DEVBUS_KIND_BLK,
                    backend: f.backend,
                    frontend: f.frontend,
                    sector_size: 512,
                    sectors: units,
                    ..DevbusCreate::default()
                },
                config::ForeignDevice::Net { mac } => {
                    let mut m = [0u8; 8];
                    m[..6].copy_from_slice(&mac);
                    DevbusCreate {
                        kind: DEVBUS_KIND_NET,
                        backend: f.backend,
                        frontend: f.frontend,
                        mac: m,
                        ..DevbusCreate::default()
                    }
                }
            };
            match devbus::create(&create) {
                Ok(id) => println!(
                    "toolstack: record {id}: {} for d{} backed by d{}",
                    if create.kind == DEVBUS_KIND_BLK {
                        "blk"
                    } else {
                        "net"
                    },
                    f.frontend,
                    f.backend
                ),
                Err(e) => println!(
                    "toolstack: record for d{} backed by d{}: devbus create: {e}",
                    f.frontend, f.backend
                ),
            }
        }
    }

    /// Resolves a disk view for a run-time domain (the toolstack checks every
    /// disk before it creates anything).
    pub fn resolve_view(&self, view: config::View) -> Result<View, &'static str> {
        let disk = self
            .disk
            .as_ref()
            .ok_or("the driver domain has no disk to cut views from")?;
        resolve(disk, view)
    }

    /// Creates a blk record for `frontend` serving `view` (the run-time
    /// toolstack's `disk =`); returns the record id.
    pub fn add_disk(
        &mut self,
        frontend: DomId,
        view: View,
        readonly: bool,
        handle: u32,
    ) -> Result<u32, Errno> {
        let create = DevbusCreate {
            kind: DEVBUS_KIND_BLK,
            backend: self.me,
            frontend,
            backend_handle: handle,
            dev_flags: if readonly { DEVBUS_FLAG_READONLY } else { 0 },
            sector_size: view.sector_size(),
            sectors: view.units(),
            ..DevbusCreate::default()
        };
        let id = devbus::create(&create)?;
        self.served.insert(id, Served::Blk { view, readonly });
        Ok(id)
    }

    /// Creates a net record for `frontend` with `mac` (the run-time
    /// toolstack's `nic =`); returns the record id.
    pub fn add_nic(&mut self, frontend: DomId, mac: [u8; 6]) -> Result<u32, Errno> {
        let mut wire = [0u8; 8];
        wire[..6].copy_from_slice(&mac);
        let create = DevbusCreate {
            kind: DEVBUS_KIND_NET,
            backend: self.me,
            frontend,
            mac: wire,
            ..DevbusCreate::default()
        };
        let id = devbus::create(&create)?;
        self.served.insert(id, Served::Net { mac });
        Ok(id)
    }

    /// Removes record `id` (a half-made domain's), ending its connection.
    pub fn remove_record(&mut self, id: u32) {
        self.disconnect(id, "the toolstack removed it");
        let _ = devbus::destroy(id);
        self.served.remove(&id);
    }

    /// A page of address space with an empty L1 entry, for a grant mapping.
    fn map_page(&mut self) -> Option<u64> {
        self.va_pool
            .pop()
            .or_else(|| pv_guest_kit::mm::reserve_va(1).ok().map(|r| r.start()))
    }

    /// Maps the frontend's ring pages; on failure unmaps what it mapped.
    fn map_ring(&mut self, frontend: DomId, refs: &[u32]) -> Result<RingPages, Errno> {
        let mut pages = Vec::new();
        for &gref in refs {
            let Some(va) = self.map_page() else {
                self.unmap_ring(RingPages::new_or_empty(pages));
                return Err(Errno::ENOMEM);
            };
            match grants::map(frontend, gref, va, false) {
                Ok(m) => pages.push(SharedPage::from_mapping(m)),
                Err(e) => {
                    self.va_pool.push(va);
                    self.unmap_ring(RingPages::new_or_empty(pages));
                    return Err(e);
                }
            }
        }
        Ok(RingPages::new(pages))
    }

    fn unmap_ring(&mut self, mut ring: RingPages) {
        for page in ring.take_pages() {
            if let Some(m) = page.into_mapping() {
                let va = m.va();
                match m.unmap() {
                    Ok(()) => self.va_pool.push(va),
                    Err((_, e)) => println!("backend: unmapping {va:#x}: {e}"),
                }
            }
        }
    }

    /// Connects record `r` (published, INITIALISING).
    fn connect(&mut self, r: &DevbusRecord) -> Result<(), &'static str> {
        match self.served.get(&r.id) {
            Some(Served::Blk { .. }) => self.connect_blk(r),
            Some(Served::Net { .. }) => self.connect_net(r),
            None => Err("not a record this domain serves"),
        }
    }

    fn bind(&mut self, r: &DevbusRecord) -> Result<Port, &'static str> {
        let port = events::bind_interdomain(r.frontend, r.event_port)
            .map_err(|_| "cannot bind the event port")?;
        events::set_handler(port, wake);
        Ok(port)
    }

    fn connect_blk(&mut self, r: &DevbusRecord) -> Result<(), &'static str> {
        let Some(Served::Blk { view, readonly }) = self.served.get(&r.id) else {
            return Err("not a block record");
        };
        let (store, readonly): (Box<dyn BlockStore>, bool) = (Box::new(view.clone()), *readonly);
        let refs = &r.ring_refs[..r.nr_ring_pages as usize];
        let ring = self
            .map_ring(r.frontend, refs)
            .map_err(|_| "cannot map the ring grants")?;
        let port = match self.bind(r) {
            Ok(p) => p,
            Err(why) => {
                self.unmap_ring(ring);
                return Err(why);
            }
        };
        let conn = match BlkConnection::new(r.frontend, port, ring, store, readonly) {
            Ok(c) => c,
            Err((ring, _)) => {
                self.unmap_ring(ring);
                let _ = events::close(port);
                return Err("the ring is not initialised");
            }
        };
        let connect = DevbusConnect {
            id: r.id,
            backend_features: conn.features(),
            max_indirect_segments: MAX_INDIRECT_SEGMENTS,
            pad: 0,
        };
        if devbus::connect(&connect).is_err() {
            self.teardown(conn);
            return Err("devbus connect refused");
        }
        println!(
            "blkback: record {} connected to d{}: {} ring pages ({} slots), {} units",
            r.id,
            r.frontend,
            r.nr_ring_pages,
            conn.ring_size(),
            conn.units()
        );
        self.blk.insert(r.id, conn);
        Ok(())
    }

    fn connect_net(&mut self, r: &DevbusRecord) -> Result<(), &'static str> {
        let Some(&Served::Net { mac }) = self.served.get(&r.id) else {
            return Err("not a net record");
        };
        let n = r.nr_ring_pages as usize;
        let tx = self
            .map_ring(r.frontend, &r.ring_refs[..n])
            .map_err(|_| "cannot map the tx ring grants")?;
        let rx = match self.map_ring(r.frontend, &r.ring_refs[n..2 * n]) {
            Ok(rx) => rx,
            Err(_) => {
                self.unmap_ring(tx);
                return Err("cannot map the rx ring grants");
            }
        };
        let port = match self.bind(r) {
            Ok(p) => p,
            Err(why) => {
                self.unmap_ring(tx);
                self.unmap_ring(rx);
                return Err(why);
            }
        };
        let conn = match NetConnection::new(r.frontend, mac, port, tx, rx) {
            Ok(c) => c,
            Err((tx, rx, _)) => {
                self.unmap_ring(tx);
                self.unmap_ring(rx);
                let _ = events::close(port);
                return Err("the rings are not initialised");
            }
        };
        let connect = DevbusConnect {
            id: r.id,
            ..DevbusConnect::default()
        };
        if devbus::connect(&connect).is_err() {
            self.teardown_net(conn);
            return Err("devbus connect refused");
        }
        println!(
            "netback: record {} connected to d{}: vif on bridge port {}",
            r.id, r.frontend, r.id
        );
        self.net.insert(r.id, conn);
        Ok(())
    }

    fn teardown_net(&mut self, conn: NetConnection) {
        let _ = events::close(conn.port());
        let (tx, rx) = conn.into_rings();
        self.unmap_ring(tx);
        self.unmap_ring(rx);
    }

    fn teardown(&mut self, conn: BlkConnection) {
        let _ = events::close(conn.port());
        self.unmap_ring(conn.into_ring());
    }

    /// Ends connection `id` and closes this side of its record.
    fn disconnect(&mut self, id: u32, why: &str) {
        if let Some(conn) = self.blk.remove(&id) {
            let s = conn.stats;
            println!(
                "blkback: record {id} of d{} closed ({why}): {} requests, {} errors, {} flushes, {} units read, {} written",
                conn.frontend, s.requests, s.errors, s.flushes, s.units_read, s.units_written
            );
            self.teardown(conn);
        }
        if let Some(conn) = self.net.remove(&id) {
            let s = conn.stats;
            println!(
                "netback: record {id} of d{} closed ({why}): {} frames sent, {} refused, {} received, {} dropped",
                conn.frontend, s.tx_frames, s.tx_refused, s.rx_frames, s.rx_dropped
            );
            self.bridge.remove_port(id);
            println!(
                "netback: the bridge now knows {} addresses",
                self.bridge.known_addresses()
            );
            self.teardown_net(conn);
        }
        let _ = devbus::close(id);
    }

    /// Brings connections in line with the records (DEV-3).
    fn reconcile(&mut self) {
        let records = match devbus::records() {
            Ok(r) => r,
            Err(e) => {
                println!("backend: devbus query: {e}");
                return;
            }
        };
        let mine: Vec<DevbusRecord> = records
            .into_iter()
            .filter(|r| r.backend == self.me)
            .collect();
        // Connections whose record is gone.
        let gone: Vec<u32> = self
            .blk
            .keys()
            .copied()
            .filter(|id| !mine.iter().any(|r| r.id == *id))
            .collect();
        let gone_net: Vec<u32> = self
            .net
            .keys()
            .copied()
            .filter(|id| !mine.iter().any(|r| r.id == *id))
            .collect();
        // What this domain served for records that are gone (their
        // domains died and both sides closed, DEV-5).
        self.served.retain(|id, _| mine.iter().any(|r| r.id == *id));
        for id in gone {
            if let Some(conn) = self.blk.remove(&id) {
                self.teardown(conn);
            }
        }
        for id in gone_net {
            if let Some(conn) = self.net.remove(&id) {
                self.bridge.remove_port(id);
                self.teardown_net(conn);
            }
        }
        for r in mine {
            let back_closed = r.closed_sides & DEVBUS_SIDE_BACK != 0;
            let front_closed = r.closed_sides & DEVBUS_SIDE_FRONT != 0;
            if front_closed && !back_closed {
                self.disconnect(r.id, "the frontend closed");
            } else if r.state == DEVBUS_STATE_INITIALISING
                && r.nr_ring_pages > 0
                && !self.blk.contains_key(&r.id)
                && !self.net.contains_key(&r.id)
                && self.refused.get(&r.id) != Some(&r.generation)
            {
                if let Err(why) = self.connect(&r) {
                    println!(
                        "blkback: record {} of d{}: refused: {why}",
                        r.id, r.frontend
                    );
                    self.refused.insert(r.id, r.generation);
                    let _ = devbus::close(r.id);
                }
            }
        }
    }

    /// Serves every connection until `done()` holds (or the toolstack, if
    /// there is one, is finished), blocking in between. The toolstack is
    /// polled every round and wakes the loop with the vCPU timer when it
    /// wants to be polled again (the management UART has no interrupt).
    pub fn run_until(
        &mut self,
        mut toolstack: Option<&mut crate::toolstack::Toolstack>,
        mut done: impl FnMut() -> bool,
    ) {
        let mut seen = u64::MAX;
        loop {
            if let Some(ts) = toolstack.as_deref_mut() {
                if ts.poll(self) {
                    continue;
                }
                if ts.finished() {
                    self.close_all("the machine is powering off");
                    return;
                }
            }
            let changes = devbus::changes();
            if changes != seen {
                seen = changes;
                self.reconcile();
            }
            let mut progress = false;
            let mut broken = Vec::new();
            for (&id, conn) in self.blk.iter_mut() {
                match conn.serve(&mut self.bounce) {
                    Ok(p) => progress |= p,
                    Err(_) => broken.push(id),
                }
            }
            progress |= self.switch_frames(&mut broken);
            for id in broken {
                self.disconnect(id, "the frontend broke the ring");
            }
            if progress {
                continue;
            }
            if done() {
                self.close_all("the driver domain is done");
                return;
            }
            if self.uplink.as_ref().is_some_and(|u| u.irq.is_none()) {
                // Nothing would wake the loop for a frame from the wire.
                pv_guest_kit::hypercall::sched_yield();
                continue;
            }
            let wake = toolstack.as_deref().map(|ts| ts.arm_timer());
            let blk = &mut self.blk;
            let net = &mut self.net;
            let uplink = &self.uplink;
            events::wait_until(|| {
                devbus::changes() != seen
                    || blk.values_mut().any(|c| c.has_work().unwrap_or(true))
                    || net.values_mut().any(|c| c.has_work().unwrap_or(true))
                    || uplink.as_ref().is_some_and(|u| u.nic.has_received())
                    || wake.is_some_and(|w| w.fired())
                    || done()
            });
        }
    }

    /// Ends every connection (the guests are gone or going).
    fn close_all(&mut self, why: &str) {
        let ids: Vec<u32> = self.blk.keys().chain(self.net.keys()).copied().collect();
        for id in ids {
            self.disconnect(id, why);
        }
        if let Some(up) = &self.uplink {
            let s = up.stats;
            println!(
                "netback: uplink: {} frames to the wire, {} from the wire, {} refused by the NIC, {} from the wire dropped; interrupts {}",
                s.to_wire,
                s.from_wire,
                s.tx_dropped,
                s.rx_dropped,
                UPLINK_INTERRUPTS.load(core::sync::atomic::Ordering::Relaxed)
            );
        }
    }

    /// One round of the bridge (NET-4): takes the frames every vif sent and
    /// those the NIC received, forwards each to its destination ports and
    /// answers the vifs. Returns whether any frame moved; vifs whose rings
    /// broke go to `broken`.
    fn switch_frames(&mut self, broken: &mut Vec<u32>) -> bool {
        let mut sent = Vec::new();
        for (&id, conn) in self.net.iter_mut() {
            match conn.take_tx(self.bounce.frames()) {
                Ok(frames) => sent.extend(frames.into_iter().map(|f| (id, f))),
                Err(_) => broken.push(id),
            }
        }
        let wire = self
            .uplink
            .as_mut()
            .map(Uplink::receive_batch)
            .unwrap_or_default();
        let progress = !sent.is_empty() || !wire.is_empty();
        for (in_port, tx) in sent {
            let status = match tx.frame {
                Err(status) => status,
                Ok(frame) => {
                    let spoofed = self
                        .net
                        .get(&in_port)
                        .is_none_or(|c| frame.get(6..12) != Some(&c.mac[..]));
                    if !spoofed && self.forward(in_port, &frame, broken) {
                        NETIF_RSP_OKAY
                    } else {
                        NETIF_RSP_DROPPED
                    }
                }
            };
            if let Some(conn) = self.net.get_mut(&in_port) {
                if conn.answer_tx(tx.id, status).is_err() {
                    broken.push(in_port);
                }
            }
        }
        for frame in wire {
            if !bridge::wire_frame_allowed(&frame, self.net.values().map(|c| &c.mac)) {
                if let Some(up) = self.uplink.as_mut() {
                    up.stats.rx_dropped += 1;
                }
                continue;
            }
            self.forward(UPLINK_PORT, &frame, broken);
        }
        for conn in self.net.values_mut() {
            conn.publish();
        }
        broken.sort_unstable();
        broken.dedup();
        progress
    }

    /// Sends `frame`, which came in on `in_port`, where the bridge says;
    /// returns whether any port took it.
    fn forward(&mut self, in_port: u32, frame: &[u8], broken: &mut Vec<u32>) -> bool {
        let targets: Vec<u32> = match self.bridge.forward(in_port, frame) {
            Forward::To(p) => alloc::vec![p],
            Forward::Flood => {
                bridge::flood_targets(self.net.keys().copied(), self.uplink.is_some(), in_port)
            }
            Forward::Drop => Vec::new(),
        };
        let mut delivered = false;
        for p in targets {
            if p == UPLINK_PORT {
                if let Some(up) = self.uplink.as_mut() {
                    delivered |= up.transmit(frame);
                }
            } else if let Some(conn) = self.net.get_mut(&p) {
                match conn.deliver(frame, self.bounce.frames()) {
                    Ok(d) => delivered |= d,
                    Err(_) => broken.push(p),
                }
            }
        }
        delivered
    }
}
