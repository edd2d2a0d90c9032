//! Intel VT-d (Intel VT-d specification, rev. 4): root and context tables,
//! second-level page tables, register-based invalidation of the context
//! cache and the IOTLB, fault recording registers and the fault event
//! interrupt (PDEV-6, PDEV-7).
//!
//! The unit driver is generic over [`Mmio`] and [`TableFrames`], so its
//! whole bring-up sequence is host-tested against a register model.
//!
//! # Invariants
//! - Every requester is blocked (root or context entry not present) unless
//!   [`Iommu::attach`]ed; translation is enabled only after the root table
//!   pointer is latched and both caches were invalidated.
//! - Command-register writes keep the persistent enable bits (TE, QIE, IRE,
//!   CFI) of the status register and set exactly one new bit.

use super::page_table::{EntryFormat, TableFrames};
use super::{DmaFault, Iommu, IommuError, Mmio};
use crate::platform::pci::Bdf;

pub const REG_VER: u64 = 0x00;
pub const REG_CAP: u64 = 0x08;
pub const REG_ECAP: u64 = 0x10;
pub const REG_GCMD: u64 = 0x18;
pub const REG_GSTS: u64 = 0x1c;
pub const REG_RTADDR: u64 = 0x20;
pub const REG_CCMD: u64 = 0x28;
pub const REG_FSTS: u64 = 0x34;
pub const REG_FECTL: u64 = 0x38;
pub const REG_FEDATA: u64 = 0x3c;
pub const REG_FEADDR: u64 = 0x40;
pub const REG_FEUADDR: u64 = 0x44;

pub const GCMD_TE: u32 = 1 << 31;
pub const GCMD_SRTP: u32 = 1 << 30;
pub const GCMD_WBF: u32 = 1 << 27;
/// Status bits that persist (enables); the others are one-shot.
const GSTS_PERSISTENT: u32 = 0x96ff_ffff;
pub const GSTS_RTPS: u32 = 1 << 30;
pub const GSTS_TES: u32 = 1 << 31;
pub const GSTS_WBFS: u32 = 1 << 27;

pub const CCMD_ICC: u64 = 1 << 63;
pub const CCMD_GLOBAL: u64 = 1 << 61;
pub const IOTLB_IVT: u64 = 1 << 63;
pub const IOTLB_GLOBAL: u64 = 1 << 60;
/// Drain reads and writes before the invalidation completes.
pub const IOTLB_DRAIN: u64 = (1 << 49) | (1 << 48);

pub const FSTS_PFO: u32 = 1 << 0;
pub const FSTS_PPF: u32 = 1 << 1;
/// Write-1-to-clear error bits of the fault status register.
const FSTS_ERRORS: u32 = FSTS_PFO | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6);
pub const FECTL_IM: u32 = 1 << 31;

/// The domain id the driver domain's space uses in context entries.
pub const DRIVER_DID: u16 = 1;
/// Polls of a status bit before giving up.
const SPIN_LIMIT: u32 = 1_000_000;

/// Capabilities the driver reads from CAP and ECAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Supported adjusted guest address widths (bit 1: 39-bit/3-level,
    /// bit 2: 48-bit/4-level).
    pub sagaw: u8,
    /// Maximum guest address width in bits.
    pub mgaw: u8,
    /// Write-buffer flushing required.
    pub rwbf: bool,
    /// Fault recording registers: offset and count.
    pub fault_offset: u64,
    pub fault_count: u32,
    /// IOTLB registers' offset.
    pub iotlb_offset: u64,
    /// Caching mode: not-present entries may be cached.
    pub caching_mode: bool,
}

impl Caps {
    pub fn decode(cap: u64, ecap: u64) -> Self {
        Self {
            sagaw: ((cap >> 8) & 0x1f) as u8,
            mgaw: (((cap >> 16) & 0x3f) + 1) as u8,
            rwbf: cap & (1 << 4) != 0,
            fault_offset: ((cap >> 24) & 0x3ff) * 16,
            fault_count: ((cap >> 40) & 0xff) as u32 + 1,
            iotlb_offset: ((ecap >> 8) & 0x3ff) * 16,
            caching_mode: cap & (1 << 7) != 0,
        }
    }

    /// Page-table levels to use: 4 if supported and the address width
    /// allows, else 3; `None` if neither is supported.
    pub fn levels(&self) -> Option<u8> {
        if self.sagaw & 0b100 != 0 && self.mgaw >= 48 {
            Some(4)
        } else if self.sagaw & 0b010 != 0 {
            Some(3)
        } else {
            None
        }
    }
}

/// Second-level page-table entries: R = bit 0, W = bit 1, address 51:12.
pub struct SecondLevel;

const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

impl EntryFormat for SecondLevel {
    fn table(next: u64, _level: u8) -> u64 {
        (next & ADDRESS_MASK) | 3
    }
    fn leaf(pa: u64, writable: bool) -> u64 {
        (pa & ADDRESS_MASK) | 1 | if writable { 2 } else { 0 }
    }
    fn present(entry: u64) -> bool {
        entry & 3 != 0
    }
    fn address(entry: u64) -> u64 {
        entry & ADDRESS_MASK
    }
    fn writable(entry: u64) -> bool {
        entry & 2 != 0
    }
}

/// A root-table entry: the context table of one bus.
pub fn root_entry(context_table: u64) -> u64 {
    (context_table & ADDRESS_MASK) | 1
}

/// A context entry (low, high): translate through the second-level table
/// at `root` with `levels` levels, domain id `did`.
pub fn context_entry(root: u64, levels: u8, did: u16) -> (u64, u64) {
    let aw = u64::from(levels - 2); // 1: 39-bit, 2: 48-bit
    ((root & ADDRESS_MASK) | 1, aw | (u64::from(did) << 8))
}

/// The reason text of a fault reason code (VT-d spec, Appendix A).
pub fn fault_reason(code: u8) -> &'static str {
    match code {
        0x1 => "root entry not present",
        0x2 => "context entry not present",
        0x3 => "invalid context entry",
        0x4 => "address beyond the address width",
        0x5 => "write not permitted (page not mapped writable)",
        0x6 => "read not permitted (page not mapped)",
        0x7 => "second-level table access failed",
        0x8 => "root table access failed",
        0x9 => "context table access failed",
        0xa => "root entry reserved bits",
        0xb => "context entry reserved bits",
        0xc => "paging entry reserved bits",
        0xd => "translation type blocked",
        _ => "other remapping fault",
    }
}

/// Decodes a fault recording register (low and high 64 bits); `None` if its
/// F bit is clear.
pub fn decode_fault(lo: u64, hi: u64) -> Option<DmaFault> {
    if hi >> 63 == 0 {
        return None;
    }
    let code = (hi >> 32) as u8;
    Some(DmaFault {
        source: Bdf::from_rid(hi as u16),
        address: lo & !0xfff,
        // T (bit 126): 0 = write, 1 = read.
        write: (hi >> 62) & 1 == 0,
        reason: fault_reason(code),
        code,
    })
}

/// One DMA remapping hardware unit.
pub struct VtdUnit<M: Mmio, T: TableFrames> {
    mmio: M,
    mem: T,
    base: u64,
    caps: Caps,
    levels: u8,
    root_table: u64,
    enabled: bool,
}

impl<M: Mmio, T: TableFrames> VtdUnit<M, T> {
    /// Reads the unit's capabilities and allocates an empty root table
    /// (every requester blocked). Nothing is written to the unit yet.
    pub fn new(mmio: M, mut mem: T, base: u64) -> Result<Self, IommuError> {
        let caps = Caps::decode(mmio.read64(REG_CAP), mmio.read64(REG_ECAP));
        let levels = caps.levels().ok_or(IommuError::Unsupported(
            "no 3- or 4-level second-level tables",
        ))?;
        let root_table = mem.alloc_zeroed().ok_or(IommuError::NoMemory)?;
        Ok(Self {
            mmio,
            mem,
            base,
            caps,
            levels,
            root_table,
            enabled: false,
        })
    }

    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    pub fn version(&self) -> u32 {
        self.mmio.read32(REG_VER)
    }

    fn wait32(&self, reg: u64, mask: u32, want: u32, what: &'static str) -> Result<(), IommuError> {
        for _ in 0..SPIN_LIMIT {
            if self.mmio.read32(reg) & mask == want {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(IommuError::Timeout(what))
    }

    fn wait64_clear(&self, reg: u64, bit: u64, what: &'static str) -> Result<(), IommuError> {
        for _ in 0..SPIN_LIMIT {
            if self.mmio.read64(reg) & bit == 0 {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(IommuError::Timeout(what))
    }

    /// Sets one command bit and waits for its status bit.
    fn command(&self, bit: u32, status: u32, what: &'static str) -> Result<(), IommuError> {
        let now = self.mmio.read32(REG_GSTS) & GSTS_PERSISTENT;
        self.mmio.write32(REG_GCMD, now | bit);
        self.wait32(REG_GSTS, status, status, what)
    }

    fn flush_write_buffer(&self) {
        if self.caps.rwbf {
            let now = self.mmio.read32(REG_GSTS) & GSTS_PERSISTENT;
            self.mmio.write32(REG_GCMD, now | GCMD_WBF);
            let _ = self.wait32(REG_GSTS, GSTS_WBFS, 0, "write-buffer flush");
        }
    }

    fn invalidate_all(&self) -> Result<(), IommuError> {
        self.flush_write_buffer();
        self.mmio.write64(REG_CCMD, CCMD_ICC | CCMD_GLOBAL);
        self.wait64_clear(REG_CCMD, CCMD_ICC, "context-cache invalidation")?;
        let iotlb = self.caps.iotlb_offset + 8;
        self.mmio
            .write64(iotlb, IOTLB_IVT | IOTLB_GLOBAL | IOTLB_DRAIN);
        self.wait64_clear(iotlb, IOTLB_IVT, "IOTLB invalidation")
    }

    fn context_table(&mut self, bus: u8, create: bool) -> Option<u64> {
        let i = u64::from(bus) * 2;
        let e = self.mem.read(self.root_table, i);
        if e & 1 != 0 {
            return Some(e & ADDRESS_MASK);
        }
        if !create {
            return None;
        }
        let table = self.mem.alloc_zeroed()?;
        self.mem.write(self.root_table, i + 1, 0);
        self.mem.write(self.root_table, i, root_entry(table));
        Some(table)
    }

    /// The context entry of `device` (low, high), for tests and audits.
    pub fn context_of(&mut self, device: Bdf) -> Option<(u64, u64)> {
        let table = self.context_table(device.bus, false)?;
        let i = u64::from(device.rid() & 0xff) * 2;
        Some((self.mem.read(table, i), self.mem.read(table, i + 1)))
    }
}

impl<M: Mmio, T: TableFrames> Iommu for VtdUnit<M, T> {
    fn name(&self) -> &'static str {
        "VT-d"
    }

    fn base(&self) -> u64 {
        self.base
    }

    fn levels(&self) -> u8 {
        self.levels
    }

    fn attach(&mut self, device: Bdf, root: u64, levels: u8) -> Result<(), IommuError> {
        if levels != self.levels {
            return Err(IommuError::Unsupported("page-table depth"));
        }
        let table = self
            .context_table(device.bus, true)
            .ok_or(IommuError::NoMemory)?;
        let i = u64::from(device.rid() & 0xff) * 2;
        let (lo, hi) = context_entry(root, levels, DRIVER_DID);
        self.mem.write(table, i + 1, hi);
        self.mem.write(table, i, lo);
        if self.enabled {
            self.invalidate_all()?;
        }
        Ok(())
    }

    fn detach(&mut self, device: Bdf) {
        let Some(table) = self.context_table(device.bus, false) else {
            return;
        };
        let i = u64::from(device.rid() & 0xff) * 2;
        self.mem.write(table, i, 0);
        self.mem.write(table, i + 1, 0);
        if self.enabled {
            let _ = self.invalidate_all();
        }
    }

    fn enable(&mut self) -> Result<(), IommuError> {
        self.mmio.write64(REG_RTADDR, self.root_table);
        self.command(GCMD_SRTP, GSTS_RTPS, "root table pointer")?;
        self.invalidate_all()?;
        self.command(GCMD_TE, GSTS_TES, "translation enable")?;
        self.enabled = true;
        Ok(())
    }

    fn set_fault_interrupt(&mut self, address: u64, data: u32) -> bool {
        self.mmio.write32(REG_FEDATA, data);
        self.mmio.write32(REG_FEADDR, address as u32);
        self.mmio.write32(REG_FEUADDR, (address >> 32) as u32);
        self.mmio.write32(REG_FECTL, 0);
        true
    }

    fn flush_iotlb(&mut self) {
        if let Err(e) = self.invalidate_all() {
            log::error!("iommu: VT-d at {:#x}: {e}", self.base);
        }
    }

    fn drain_faults(&mut self, report: &mut dyn FnMut(DmaFault)) {
        let status = self.mmio.read32(REG_FSTS);
        if status & (FSTS_PPF | FSTS_ERRORS) == 0 {
            return;
        }
        let first = (status >> 8) & 0xff;
        for k in 0..self.caps.fault_count {
            let index = (first + k) % self.caps.fault_count;
            let at = self.caps.fault_offset + u64::from(index) * 16;
            let hi = self.mmio.read64(at + 8);
            let lo = self.mmio.read64(at);
            if let Some(fault) = decode_fault(lo, hi) {
                report(fault);
                // F is write-1-to-clear (bit 31 of the top dword).
                self.mmio.write32(at + 12, 1 << 31);
            }
        }
        self.mmio.write32(REG_FSTS, status & FSTS_ERRORS);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::iommu::page_table::tests::FakeFrames;
    use crate::iommu::page_table::IoPageTable;
    use core::cell::RefCell;
    use std::collections::BTreeMap;

    /// A register model of a VT-d unit: GCMD bits show up in GSTS, CCMD/IOTLB
    /// invalidations complete at once, one fault record at 0x200.
    pub struct FakeVtd {
        pub regs: RefCell<BTreeMap<u64, u64>>,
        pub log: RefCell<Vec<(u64, u64)>>,
    }

    /// CAP: SAGAW 39-bit, MGAW 39, FRO 0x200/16, NFR 1 → 2 records.
    pub const CAP: u64 = (0b010 << 8) | (38 << 16) | ((0x200 / 16) << 24) | (1 << 40);
    /// ECAP: IRO 0x100/16.
    pub const ECAP: u64 = (0x100 / 16) << 8;

    impl FakeVtd {
        pub fn new() -> Self {
            let mut regs = BTreeMap::new();
            regs.insert(REG_VER, 0x10);
            regs.insert(REG_CAP, CAP);
            regs.insert(REG_ECAP, ECAP);
            Self {
                regs: RefCell::new(regs),
                log: RefCell::new(Vec::new()),
            }
        }
        fn get(&self, off: u64) -> u64 {
            self.regs.borrow().get(&off).copied().unwrap_or(0)
        }
        fn set(&self, off: u64, v: u64) {
            self.regs.borrow_mut().insert(off, v);
        }
    }

    impl Mmio for FakeVtd {
        fn read32(&self, offset: u64) -> u32 {
            let base = offset & !7;
            (self.get(base) >> ((offset & 4) * 8)) as u32
        }
        fn write32(&self, offset: u64, value: u32) {
            self.log.borrow_mut().push((offset, u64::from(value)));
            match offset {
                REG_GCMD => {
                    // GSTS mirrors the command (one-shot bits stay latched
                    // for RTPS; WBF completes at once).
                    let gsts = value & !GCMD_WBF;
                    let old = self.get(REG_GCMD) & 0xffff_ffff;
                    self.set(REG_GCMD, old | (u64::from(gsts) << 32));
                }
                REG_FSTS => {
                    let now = self.read32(REG_FSTS) & !(value & FSTS_ERRORS);
                    let w = self.get(0x30) & 0xffff_ffff;
                    self.set(0x30, w | (u64::from(now) << 32));
                }
                o if o == 0x200 + 12 || o == 0x210 + 12 => {
                    let rec = o - 12 + 8;
                    if value & (1 << 31) != 0 {
                        self.set(rec, self.get(rec) & !(1 << 63));
                    }
                }
                _ => {
                    let base = offset & !7;
                    let shift = (offset & 4) * 8;
                    let v =
                        (self.get(base) & !(0xffff_ffff << shift)) | (u64::from(value) << shift);
                    self.set(base, v);
                }
            }
        }
        fn read64(&self, offset: u64) -> u64 {
            self.get(offset)
        }
        fn write64(&self, offset: u64, value: u64) {
            self.log.borrow_mut().push((offset, value));
            // Invalidations complete at once.
            let v = if offset == REG_CCMD {
                value & !CCMD_ICC
            } else if offset == 0x108 {
                value & !IOTLB_IVT
            } else {
                value
            };
            self.set(offset, v);
        }
    }

    #[test]
    fn caps_decode() {
        let c = Caps::decode(CAP, ECAP);
        assert_eq!(c.sagaw, 0b010);
        assert_eq!(c.mgaw, 39);
        assert_eq!(c.fault_offset, 0x200);
        assert_eq!(c.fault_count, 2);
        assert_eq!(c.iotlb_offset, 0x100);
        assert_eq!(c.levels(), Some(3));
        assert_eq!(Caps::decode(0b110 << 8 | 47 << 16, 0).levels(), Some(4));
        assert_eq!(Caps::decode(0b100 << 8 | 38 << 16, 0).levels(), None);
    }

    #[test]
    fn bring_up_attach_and_block() {
        let mut unit = VtdUnit::new(FakeVtd::new(), FakeFrames::default(), 0xfed9_0000).unwrap();
        let mut mem = FakeFrames::default();
        let space = IoPageTable::new(&mut mem, 3).unwrap();
        let dev = Bdf::new(0, 3, 0);
        unit.attach(dev, space.root, 3).unwrap();
        assert_eq!(
            unit.attach(dev, space.root, 4),
            Err(IommuError::Unsupported("page-table depth"))
        );
        unit.enable().unwrap();
        let (lo, hi) = unit.context_of(dev).unwrap();
        assert_eq!(lo, space.root | 1);
        assert_eq!(hi, 1 | (u64::from(DRIVER_DID) << 8));
        // Another function on the bus stays blocked.
        assert_eq!(unit.context_of(Bdf::new(0, 4, 0)), Some((0, 0)));
        assert_eq!(unit.context_of(Bdf::new(1, 0, 0)), None);
        // The sequence: root pointer, SRTP, context and IOTLB invalidation, TE.
        let log = unit.mmio.log.borrow().clone();
        let order: Vec<u64> = log.iter().map(|e| e.0).collect();
        let pos = |reg| order.iter().position(|&r| r == reg).unwrap();
        assert!(pos(REG_RTADDR) < pos(REG_GCMD));
        assert!(pos(REG_GCMD) < pos(REG_CCMD) && pos(REG_CCMD) < pos(0x108));
        let te = log.iter().rposition(|e| e.0 == REG_GCMD).unwrap();
        assert_eq!(log[te].1 as u32 & GCMD_TE, GCMD_TE);
        assert!(te > pos(0x108));
        assert!(unit.mmio.read32(REG_GSTS) & GSTS_TES != 0);
        unit.detach(dev);
        assert_eq!(unit.context_of(dev), Some((0, 0)));
    }

    #[test]
    fn faults_are_decoded_and_cleared() {
        let mut unit = VtdUnit::new(FakeVtd::new(), FakeFrames::default(), 0xfed9_0000).unwrap();
        // A write by 00:03.0 to 0x12345678 not mapped: reason 5.
        unit.mmio.set(0x200, 0x1234_5000);
        unit.mmio.set(0x208, (1 << 63) | (5 << 32) | 0x18);
        // FSTS: PPF, FRI 0.
        unit.mmio.set(0x30, u64::from(FSTS_PPF) << 32);
        let mut seen = Vec::new();
        unit.drain_faults(&mut |f| seen.push(f));
        assert_eq!(seen.len(), 1);
        let f = seen[0];
        assert_eq!(f.source, Bdf::new(0, 3, 0));
        assert_eq!(f.address, 0x1234_5000);
        assert!(f.write);
        assert_eq!(f.code, 5);
        assert_eq!(
            f.to_string(),
            "00:03.0 write 0x12345000: write not permitted (page not mapped writable) (0x5)"
        );
        // Cleared: a second drain sees nothing.
        let mut again = 0;
        unit.drain_faults(&mut |_| again += 1);
        assert_eq!(again, 0);
        // A read fault decodes as such.
        let f = decode_fault(0x1000, (1 << 63) | (1 << 62) | (6 << 32) | 0x20).unwrap();
        assert!(!f.write);
        assert_eq!(f.source, Bdf::new(0, 4, 0));
        assert_eq!(decode_fault(0, 0), None);
    }
}
