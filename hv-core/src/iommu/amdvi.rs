//! AMD-Vi (AMD I/O Virtualization Technology specification, rev. 3): the
//! device table, I/O page tables, the command buffer (invalidations,
//! completion wait) and the event log (PDEV-6, PDEV-7).
//!
//! The unit driver is generic over [`Mmio`] and [`TableFrames`] and
//! host-tested against a register model that executes commands.
//!
//! # Invariants
//! - Every device-table entry is valid from the start and blocks all DMA
//!   ([`blocked_dte`]), except the entries of attached devices.
//! - Every command is followed by a COMPLETION_WAIT whose store is observed
//!   before the driver returns: an invalidation is complete on return.

use super::page_table::{EntryFormat, TableFrames};
use super::{DmaFault, Iommu, IommuError, Mmio};
use crate::platform::pci::Bdf;

pub const REG_DEV_TABLE: u64 = 0x0000;
pub const REG_CMD_BUF: u64 = 0x0008;
pub const REG_EVT_LOG: u64 = 0x0010;
pub const REG_CONTROL: u64 = 0x0018;
pub const REG_EXT_FEATURE: u64 = 0x0030;
pub const REG_CMD_HEAD: u64 = 0x2000;
pub const REG_CMD_TAIL: u64 = 0x2008;
pub const REG_EVT_HEAD: u64 = 0x2010;
pub const REG_EVT_TAIL: u64 = 0x2018;
pub const REG_STATUS: u64 = 0x2020;

pub const CTRL_IOMMU_EN: u64 = 1 << 0;
pub const CTRL_EVT_LOG_EN: u64 = 1 << 2;
pub const CTRL_EVT_INT_EN: u64 = 1 << 3;
pub const CTRL_CMD_BUF_EN: u64 = 1 << 12;

/// 256 entries of 16 bytes (one page) for the command buffer and the log.
const RING_ENTRIES_LOG2: u64 = 8;
const RING_BYTES: u64 = 16 << RING_ENTRIES_LOG2;
/// Device-table entries per 4 KiB page.
pub const DTE_PER_PAGE: u64 = 128;
/// The domain id of the driver domain's space.
pub const DRIVER_DOMAIN_ID: u16 = 1;
const SPIN_LIMIT: u32 = 1_000_000;

const DTE_V: u64 = 1 << 0;
const DTE_TV: u64 = 1 << 1;
const PTE_IR: u64 = 1 << 61;
const PTE_IW: u64 = 1 << 62;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// I/O page-table entries: PR = bit 0, next level in 11:9 (0 for a page),
/// IR = bit 61, IW = bit 62.
pub struct IoPte;

impl EntryFormat for IoPte {
    fn table(next: u64, level: u8) -> u64 {
        (next & ADDRESS_MASK) | 1 | (u64::from(level) << 9) | PTE_IR | PTE_IW
    }
    fn leaf(pa: u64, writable: bool) -> u64 {
        (pa & ADDRESS_MASK) | 1 | PTE_IR | if writable { PTE_IW } else { 0 }
    }
    fn present(entry: u64) -> bool {
        entry & 1 != 0
    }
    fn address(entry: u64) -> u64 {
        entry & ADDRESS_MASK
    }
    fn writable(entry: u64) -> bool {
        entry & PTE_IW != 0
    }
}

/// The first quadword of a blocking device-table entry: translation on
/// (4 levels) through `empty_root`, a table with no entry, and neither read
/// nor write permission, so every DMA fails its permission check and is
/// reported (an entry with translation off would block silently).
pub fn blocked_dte(empty_root: u64) -> u64 {
    DTE_V | DTE_TV | (4 << 9) | (empty_root & ADDRESS_MASK)
}

/// The first two quadwords of a translating device-table entry.
pub fn dte(root: u64, levels: u8, domain: u16) -> (u64, u64) {
    (
        DTE_V | DTE_TV | (u64::from(levels) << 9) | (root & ADDRESS_MASK) | PTE_IR | PTE_IW,
        u64::from(domain),
    )
}

/// A command: four dwords.
pub type Command = [u32; 4];

pub fn cmd_completion_wait(store: u64, data: u64) -> Command {
    [
        (store as u32 & !7) | 1,
        ((store >> 32) as u32 & 0xf_ffff) | (1 << 28),
        data as u32,
        (data >> 32) as u32,
    ]
}

pub fn cmd_invalidate_dte(device_id: u16) -> Command {
    [u32::from(device_id), 2 << 28, 0, 0]
}

/// Every page of `domain` (S = 1 with the all-ones address, PDE = 1).
pub fn cmd_invalidate_pages(domain: u16) -> Command {
    [
        0,
        u32::from(domain) | (3 << 28),
        0xffff_f000 | 3,
        0x7fff_ffff,
    ]
}

/// The reason text of an event code.
pub fn event_reason(code: u8) -> &'static str {
    match code {
        1 => "illegal device-table entry",
        2 => "I/O page fault (address not mapped for the device)",
        3 => "device-table hardware error",
        4 => "page-table hardware error",
        5 => "illegal command",
        6 => "command hardware error",
        7 => "IOTLB invalidation timeout",
        8 => "invalid device request",
        _ => "other event",
    }
}

/// Decodes an event-log entry; `None` for events that are not about a
/// device's DMA.
pub fn decode_event(e: [u32; 4]) -> Option<DmaFault> {
    let code = (e[1] >> 28) as u8;
    if !matches!(code, 1 | 2 | 8) {
        return None;
    }
    let flags = (e[1] >> 16) & 0xfff;
    Some(DmaFault {
        source: Bdf::from_rid(e[0] as u16),
        address: u64::from(e[2]) | (u64::from(e[3]) << 32),
        write: flags & (1 << 5) != 0,
        reason: event_reason(code),
        code,
    })
}

/// One AMD IOMMU.
pub struct AmdViUnit<M: Mmio, T: TableFrames> {
    mmio: M,
    mem: T,
    base: u64,
    levels: u8,
    device_table: u64,
    /// An empty top-level table for blocked devices.
    empty_root: u64,
    /// Entries in the device table.
    device_ids: u64,
    cmd_buf: u64,
    cmd_tail: u64,
    evt_log: u64,
    /// Where COMPLETION_WAIT stores.
    semaphore: u64,
    sequence: u64,
    enabled: bool,
}

impl<M: Mmio, T: TableFrames> AmdViUnit<M, T> {
    /// Allocates a device table for device ids `0..device_ids` (every entry
    /// blocking), the command buffer and the event log. Nothing is written
    /// to the unit yet.
    pub fn new(mmio: M, mut mem: T, base: u64, device_ids: u32) -> Result<Self, IommuError> {
        let pages = u64::from(device_ids).div_ceil(DTE_PER_PAGE).clamp(1, 512);
        let device_table = mem
            .alloc_contiguous(pages as usize)
            .ok_or(IommuError::NoMemory)?;
        let empty_root = mem.alloc_zeroed().ok_or(IommuError::NoMemory)?;
        for id in 0..pages * DTE_PER_PAGE {
            mem.write(device_table, id * 4, blocked_dte(empty_root));
        }
        let cmd_buf = mem.alloc_zeroed().ok_or(IommuError::NoMemory)?;
        let evt_log = mem.alloc_zeroed().ok_or(IommuError::NoMemory)?;
        let semaphore = mem.alloc_zeroed().ok_or(IommuError::NoMemory)?;
        Ok(Self {
            mmio,
            mem,
            base,
            levels: 4,
            device_table,
            empty_root,
            device_ids: pages * DTE_PER_PAGE,
            cmd_buf,
            cmd_tail: 0,
            evt_log,
            semaphore,
            sequence: 0,
            enabled: false,
        })
    }

    /// The device-table entry of `device_id` (first two quadwords).
    pub fn dte_of(&self, device_id: u16) -> Option<(u64, u64)> {
        let id = u64::from(device_id);
        (id < self.device_ids).then(|| {
            (
                self.mem.read(self.device_table, id * 4),
                self.mem.read(self.device_table, id * 4 + 1),
            )
        })
    }

    fn push(&mut self, cmd: Command) {
        let at = self.cmd_tail / 8;
        self.mem.write(
            self.cmd_buf,
            at,
            u64::from(cmd[0]) | (u64::from(cmd[1]) << 32),
        );
        self.mem.write(
            self.cmd_buf,
            at + 1,
            u64::from(cmd[2]) | (u64::from(cmd[3]) << 32),
        );
        self.cmd_tail = (self.cmd_tail + 16) % RING_BYTES;
        self.mmio.write64(REG_CMD_TAIL, self.cmd_tail);
    }

    /// Queues `cmds` and a completion wait, and waits for it.
    fn run(&mut self, cmds: &[Command]) -> Result<(), IommuError> {
        for &c in cmds {
            self.push(c);
        }
        self.sequence += 1;
        let want = self.sequence;
        self.mem.write(self.semaphore, 0, 0);
        self.push(cmd_completion_wait(self.semaphore, want));
        for _ in 0..SPIN_LIMIT {
            if self.mem.read(self.semaphore, 0) == want {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(IommuError::Timeout("command completion"))
    }

    fn flush_device(&mut self, device_id: u16) -> Result<(), IommuError> {
        if !self.enabled {
            return Ok(());
        }
        self.run(&[
            cmd_invalidate_dte(device_id),
            cmd_invalidate_pages(DRIVER_DOMAIN_ID),
        ])
    }
}

impl<M: Mmio, T: TableFrames> Iommu for AmdViUnit<M, T> {
    fn name(&self) -> &'static str {
        "AMD-Vi"
    }

    fn base(&self) -> u64 {
        self.base
    }

    fn levels(&self) -> u8 {
        self.levels
    }

    fn attach(&mut self, device: Bdf, root: u64, levels: u8) -> Result<(), IommuError> {
        let id = u64::from(device.rid());
        if id >= self.device_ids {
            return Err(IommuError::Unsupported("device id beyond the device table"));
        }
        let (q0, q1) = dte(root, levels, DRIVER_DOMAIN_ID);
        self.mem.write(self.device_table, id * 4 + 1, q1);
        self.mem.write(self.device_table, id * 4, q0);
        self.flush_device(device.rid())
    }

    fn detach(&mut self, device: Bdf) {
        let id = u64::from(device.rid());
        if id >= self.device_ids {
            return;
        }
        self.mem
            .write(self.device_table, id * 4, blocked_dte(self.empty_root));
        self.mem.write(self.device_table, id * 4 + 1, 0);
        if let Err(e) = self.flush_device(device.rid()) {
            log::error!("iommu: AMD-Vi at {:#x}: {e}", self.base);
        }
    }

    fn enable(&mut self) -> Result<(), IommuError> {
        let pages = self.device_ids / DTE_PER_PAGE;
        self.mmio
            .write64(REG_DEV_TABLE, self.device_table | (pages - 1));
        self.mmio
            .write64(REG_CMD_BUF, self.cmd_buf | (RING_ENTRIES_LOG2 << 56));
        self.mmio
            .write64(REG_EVT_LOG, self.evt_log | (RING_ENTRIES_LOG2 << 56));
        self.mmio.write64(REG_CMD_HEAD, 0);
        self.mmio.write64(REG_CMD_TAIL, 0);
        self.mmio.write64(REG_EVT_HEAD, 0);
        self.mmio.write64(REG_EVT_TAIL, 0);
        self.cmd_tail = 0;
        let control = self.mmio.read64(REG_CONTROL);
        self.mmio.write64(
            REG_CONTROL,
            control | CTRL_CMD_BUF_EN | CTRL_EVT_LOG_EN | CTRL_EVT_INT_EN | CTRL_IOMMU_EN,
        );
        self.enabled = true;
        let all: alloc::vec::Vec<Command> = (0..self.device_ids)
            .map(|id| cmd_invalidate_dte(id as u16))
            .collect();
        for chunk in all.chunks(64) {
            self.run(chunk)?;
        }
        self.run(&[cmd_invalidate_pages(DRIVER_DOMAIN_ID)])
    }

    fn set_fault_interrupt(&mut self, _address: u64, _data: u32) -> bool {
        false
    }

    fn flush_iotlb(&mut self) {
        if !self.enabled {
            return;
        }
        if let Err(e) = self.run(&[cmd_invalidate_pages(DRIVER_DOMAIN_ID)]) {
            log::error!("iommu: AMD-Vi at {:#x}: {e}", self.base);
        }
    }

    fn drain_faults(&mut self, report: &mut dyn FnMut(DmaFault)) {
        // Entries from the head up to the first empty one: consumed entries
        // are zeroed, so this works whether or not the unit keeps its tail
        // register up to date (QEMU 7.2 does not).
        let mut head = self.mmio.read64(REG_EVT_HEAD) % RING_BYTES;
        for _ in 0..RING_BYTES / 16 {
            let lo = self.mem.read(self.evt_log, head / 8);
            let hi = self.mem.read(self.evt_log, head / 8 + 1);
            if lo == 0 && hi == 0 {
                // Empty: nothing more, or an entry not written yet (it will
                // be read at the next interrupt).
                break;
            }
            {
                let e = [lo as u32, (lo >> 32) as u32, hi as u32, (hi >> 32) as u32];
                if let Some(fault) = decode_event(e) {
                    report(fault);
                } else {
                    log::warn!(
                        "iommu: AMD-Vi event {}: {} ({e:08x?})",
                        e[1] >> 28,
                        event_reason((e[1] >> 28) as u8)
                    );
                }
                self.mem.write(self.evt_log, head / 8, 0);
                self.mem.write(self.evt_log, head / 8 + 1, 0);
            }
            head = (head + 16) % RING_BYTES;
        }
        self.mmio.write64(REG_EVT_HEAD, head);
        // Overflow, event-log and completion interrupts are write-1-to-clear.
        let status = self.mmio.read64(REG_STATUS);
        self.mmio.write64(REG_STATUS, status & 0x7);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iommu::page_table::tests::FakeFrames;
    use core::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    /// A register model: executes COMPLETION_WAIT stores (through a shared
    /// handle on the fake memory) when the tail moves, records the others.
    struct FakeAmdVi {
        regs: RefCell<BTreeMap<u64, u64>>,
        mem: Rc<RefCell<FakeFrames>>,
        executed: RefCell<Vec<Command>>,
    }

    struct SharedFrames(Rc<RefCell<FakeFrames>>);

    impl TableFrames for SharedFrames {
        fn alloc_zeroed(&mut self) -> Option<u64> {
            self.0.borrow_mut().alloc_zeroed()
        }
        fn alloc_contiguous(&mut self, pages: usize) -> Option<u64> {
            self.0.borrow_mut().alloc_contiguous(pages)
        }
        fn read(&self, table: u64, index: u64) -> u64 {
            self.0.borrow().read(table, index)
        }
        fn write(&mut self, table: u64, index: u64, value: u64) {
            self.0.borrow_mut().write(table, index, value)
        }
    }

    impl Mmio for FakeAmdVi {
        fn read32(&self, offset: u64) -> u32 {
            self.read64(offset) as u32
        }
        fn write32(&self, offset: u64, value: u32) {
            self.write64(offset, u64::from(value))
        }
        fn read64(&self, offset: u64) -> u64 {
            self.regs.borrow().get(&offset).copied().unwrap_or(0)
        }
        fn write64(&self, offset: u64, value: u64) {
            self.regs.borrow_mut().insert(offset, value);
            if offset != REG_CMD_TAIL {
                return;
            }
            let control = self.read64(REG_CONTROL);
            if control & CTRL_CMD_BUF_EN == 0 {
                return;
            }
            let base = self.read64(REG_CMD_BUF) & ADDRESS_MASK;
            let mut head = self.read64(REG_CMD_HEAD);
            while head != value {
                let mem = self.mem.borrow();
                let lo = mem.read(base, head / 8);
                let hi = mem.read(base, head / 8 + 1);
                drop(mem);
                let c = [lo as u32, (lo >> 32) as u32, hi as u32, (hi >> 32) as u32];
                if c[1] >> 28 == 1 {
                    let store = u64::from(c[0] & !7) | (u64::from(c[1] & 0xf_ffff) << 32);
                    let data = u64::from(c[2]) | (u64::from(c[3]) << 32);
                    self.mem.borrow_mut().write(store, 0, data);
                }
                self.executed.borrow_mut().push(c);
                head = (head + 16) % RING_BYTES;
            }
            self.regs.borrow_mut().insert(REG_CMD_HEAD, head);
        }
    }

    fn unit() -> AmdViUnit<FakeAmdVi, SharedFrames> {
        let mem = Rc::new(RefCell::new(FakeFrames::default()));
        let mmio = FakeAmdVi {
            regs: RefCell::new(BTreeMap::new()),
            mem: mem.clone(),
            executed: RefCell::new(Vec::new()),
        };
        AmdViUnit::new(mmio, SharedFrames(mem), 0xfed8_0000, 256).unwrap()
    }

    #[test]
    fn every_device_starts_blocked_and_attach_translates() {
        let mut u = unit();
        assert_eq!(u.device_ids, 256);
        let blocked = blocked_dte(u.empty_root);
        assert_eq!(blocked & (PTE_IR | PTE_IW), 0);
        assert_eq!(blocked & 3, 3);
        for id in [0u16, 0x18, 0xff] {
            assert_eq!(u.dte_of(id), Some((blocked, 0)));
        }
        assert!(u.mem.0.borrow().frames[&u.empty_root]
            .iter()
            .all(|&e| e == 0));
        assert_eq!(u.dte_of(256), None);
        u.enable().unwrap();
        let control = u.mmio.read64(REG_CONTROL);
        assert_eq!(control & CTRL_IOMMU_EN, CTRL_IOMMU_EN);
        assert_eq!(u.mmio.read64(REG_DEV_TABLE) & 0x1ff, 1);
        // 256 DTE invalidations, one page invalidation, 5 completion waits.
        let n = u.mmio.executed.borrow().len();
        assert_eq!(n, 256 + 1 + 5);
        u.attach(Bdf::new(0, 3, 0), 0x5000, 4).unwrap();
        let (q0, q1) = u.dte_of(0x18).unwrap();
        assert_eq!(q0 & 3, 3);
        assert_eq!((q0 >> 9) & 7, 4);
        assert_eq!(q0 & ADDRESS_MASK, 0x5000);
        assert!(q0 & PTE_IR != 0 && q0 & PTE_IW != 0);
        assert_eq!(q1, u64::from(DRIVER_DOMAIN_ID));
        let last: Vec<u32> = u
            .mmio
            .executed
            .borrow()
            .iter()
            .rev()
            .take(3)
            .map(|c| c[1] >> 28)
            .collect();
        assert_eq!(last, [1, 3, 2]);
        u.detach(Bdf::new(0, 3, 0));
        assert_eq!(u.dte_of(0x18), Some((blocked, 0)));
        assert_eq!(
            u.attach(Bdf::new(1, 0, 0), 0x5000, 4),
            Err(IommuError::Unsupported("device id beyond the device table"))
        );
    }

    #[test]
    fn events_are_decoded_and_consumed() {
        let mut u = unit();
        u.enable().unwrap();
        // An I/O page fault: write by 00:04.0 at 0x7777000.
        let entry = [0x20u32, (2 << 28) | (1 << 21) | 1, 0x0777_7000, 0];
        u.mem.write(
            u.evt_log,
            0,
            u64::from(entry[0]) | (u64::from(entry[1]) << 32),
        );
        u.mem.write(
            u.evt_log,
            1,
            u64::from(entry[2]) | (u64::from(entry[3]) << 32),
        );
        u.mmio.write64(REG_EVT_TAIL, 16);
        let mut seen = Vec::new();
        u.drain_faults(&mut |f| seen.push(f));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].source, Bdf::new(0, 4, 0));
        assert!(seen[0].write);
        assert_eq!(seen[0].address, 0x777_7000);
        assert_eq!(seen[0].code, 2);
        assert_eq!(u.mmio.read64(REG_EVT_HEAD), 16);
        let mut again = 0;
        u.drain_faults(&mut |_| again += 1);
        assert_eq!(again, 0);
        assert_eq!(decode_event([0, 5 << 28, 0, 0]), None);
        // A unit that writes entries but leaves its tail register behind.
        for (i, dev) in [(1u64, 0x28u32), (2, 0x29)] {
            u.mem.write(
                u.evt_log,
                2 * i,
                u64::from(dev) | (u64::from(2u32 << 28) << 32),
            );
            u.mem.write(u.evt_log, 2 * i + 1, 0x1000 * i);
        }
        let mut late = Vec::new();
        u.drain_faults(&mut |f| late.push((f.source, f.write, f.address)));
        assert_eq!(
            late,
            [
                (Bdf::new(0, 5, 0), false, 0x1000),
                (Bdf::new(0, 5, 1), false, 0x2000)
            ]
        );
        assert_eq!(u.mmio.read64(REG_EVT_HEAD), 48);
    }

    #[test]
    fn page_entries() {
        assert_eq!(
            IoPte::table(0x3000, 2),
            0x3000 | 1 | (2 << 9) | PTE_IR | PTE_IW
        );
        assert!(!IoPte::writable(IoPte::leaf(0x4000, false)));
        assert_eq!(IoPte::address(IoPte::leaf(0x4000, true)), 0x4000);
        assert_eq!(
            cmd_invalidate_pages(1),
            [0, 1 | (3 << 28), 0xffff_f003, 0x7fff_ffff]
        );
        assert_eq!(
            cmd_completion_wait(0x1_2345_6788, 7),
            [0x2345_6789, 1 | (1 << 28), 7, 0]
        );
    }
}
