//! ACPI table discovery and the small tables hv-core needs for the CPUs and
//! the PCI configuration space: the RSDP scan, the RSDT/XSDT walk, the MADT
//! (local APICs, I/O APICs) and the MCFG (ECAM windows). The DMAR and IVRS
//! remapping tables have their own modules ([`super::dmar`], [`super::ivrs`]).
//!
//! Firmware tables are read through a [`PhysMemory`], so every parser here
//! runs on the host against synthetic tables. Firmware is trusted no more than
//! it must be (PDEV-1): every length is bounds-checked against the bytes
//! actually read, every checksum is verified, counts are capped, and garbage
//! gives an [`AcpiError`], never a panic.
//!
//! Why not the `acpi` crate: it parses MADT and MCFG but neither DMAR nor
//! IVRS, and it reaches firmware memory through an unsafe mapping handler;
//! hv-core wants one byte-slice model for all of its tables so that a single
//! set of proptests covers every parser, and reads everything through the
//! existing [`PhysMemory`] of the boot code.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use alloc::vec::Vec;

use crate::boot::multiboot::PhysMemory;

/// Most tables the RSDT/XSDT walk keeps.
pub const MAX_TABLES: usize = 64;
/// Most local APICs kept from the MADT (enabled or online-capable ones).
pub const MAX_CPUS: usize = 64;
/// Most I/O APICs kept from the MADT.
pub const MAX_IO_APICS: usize = 8;
/// Most ECAM windows kept from the MCFG.
pub const MAX_ECAM: usize = 8;
/// Largest table hv-core reads (the tables it parses are a few KiB).
pub const MAX_TABLE_LEN: u32 = 256 * 1024;
/// Size of the common system description table header.
pub const SDT_HEADER_LEN: usize = 36;

/// Why an ACPI table could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// No valid RSDP in the EBDA or 0xE0000..0x100000.
    NoRsdp,
    /// Physical memory at this address could not be read.
    Unreadable(u64),
    /// The table's checksum does not sum to zero.
    BadChecksum([u8; 4]),
    /// The table's length is below its header or above [`MAX_TABLE_LEN`].
    BadLength([u8; 4], u32),
    /// The table has another signature than the one expected.
    WrongSignature([u8; 4]),
    /// A structure inside the table runs past its end or has a bad length.
    Truncated([u8; 4], usize),
    /// The table was not found in the RSDT/XSDT.
    Missing([u8; 4]),
}

/// A signature for messages (`????` if it is not ASCII).
pub fn signature_str(sig: &[u8; 4]) -> &str {
    match core::str::from_utf8(sig) {
        Ok(s) if s.bytes().all(|b| b.is_ascii_graphic()) => s,
        _ => "????",
    }
}

impl core::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoRsdp => write!(f, "no ACPI RSDP found"),
            Self::Unreadable(pa) => write!(f, "memory at {pa:#x} is unreadable"),
            Self::BadChecksum(s) => write!(f, "{} has a bad checksum", signature_str(s)),
            Self::BadLength(s, l) => write!(f, "{} has a bad length {l}", signature_str(s)),
            Self::WrongSignature(s) => {
                write!(f, "unexpected table signature {}", signature_str(s))
            }
            Self::Truncated(s, off) => {
                write!(f, "{} is malformed at offset {off}", signature_str(s))
            }
            Self::Missing(s) => write!(f, "no {} table", signature_str(s)),
        }
    }
}

/// Little-endian field reads that fail instead of panicking.
pub(crate) trait ReadLe {
    fn u8_at(&self, off: usize) -> Option<u8>;
    fn u16_at(&self, off: usize) -> Option<u16>;
    fn u32_at(&self, off: usize) -> Option<u32>;
    fn u64_at(&self, off: usize) -> Option<u64>;
}

impl ReadLe for [u8] {
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.get(off).copied()
    }
    fn u16_at(&self, off: usize) -> Option<u16> {
        let b = self.get(off..off.checked_add(2)?)?;
        Some(u16::from_le_bytes(b.try_into().ok()?))
    }
    fn u32_at(&self, off: usize) -> Option<u32> {
        let b = self.get(off..off.checked_add(4)?)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }
    fn u64_at(&self, off: usize) -> Option<u64> {
        let b = self.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

/// True if the bytes sum to zero modulo 256.
pub fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == 0
}

/// The root system description pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    /// Where it was found.
    pub address: u64,
    /// 0 for ACPI 1.0 (RSDT only), 2 or more with an XSDT.
    pub revision: u8,
    pub rsdt: u32,
    /// The XSDT, if the revision has one and it is non-zero.
    pub xsdt: Option<u64>,
}

/// Validates an RSDP candidate of at least 20 bytes (36 for revision ≥ 2).
pub fn parse_rsdp(address: u64, bytes: &[u8]) -> Option<Rsdp> {
    if bytes.get(..8)? != b"RSD PTR " || !checksum_ok(bytes.get(..20)?) {
        return None;
    }
    let revision = bytes.u8_at(15)?;
    let rsdt = bytes.u32_at(16)?;
    let mut xsdt = None;
    if revision >= 2 {
        let len = bytes.u32_at(20)? as usize;
        if (36..=bytes.len()).contains(&len) && checksum_ok(bytes.get(..len)?) {
            xsdt = bytes.u64_at(24).filter(|&x| x != 0);
        }
    }
    Some(Rsdp {
        address,
        revision,
        rsdt,
        xsdt,
    })
}

/// Scans the first KiB of the EBDA, then 0xE0000..0x100000, on 16-byte
/// boundaries (ACPI 6.5 §5.2.5.1).
pub fn find_rsdp(mem: &dyn PhysMemory) -> Result<Rsdp, AcpiError> {
    let mut seg = [0u8; 2];
    let mut areas: heapless::Vec<(u64, u64), 2> = heapless::Vec::new();
    if mem.read(0x40e, &mut seg) {
        let ebda = u64::from(u16::from_le_bytes(seg)) << 4;
        if (0x80000..0xa0000).contains(&ebda) {
            let _ = areas.push((ebda, ebda.saturating_add(1024)));
        }
    }
    let _ = areas.push((0xe0000, 0x100000));
    for (start, end) in areas {
        let mut area = alloc::vec![0u8; end.saturating_sub(start) as usize];
        if !mem.read(start, &mut area) {
            continue;
        }
        for off in (0..area.len()).step_by(16) {
            let Some(candidate) = area.get(off..off.saturating_add(36).min(area.len())) else {
                continue;
            };
            if let Some(rsdp) = parse_rsdp(start.saturating_add(off as u64), candidate) {
                return Ok(rsdp);
            }
        }
    }
    Err(AcpiError::NoRsdp)
}

/// Reads the table at `pa`: its header, then its whole length, checksummed.
pub fn read_table(mem: &dyn PhysMemory, pa: u64) -> Result<Vec<u8>, AcpiError> {
    let mut header = [0u8; SDT_HEADER_LEN];
    if !mem.read(pa, &mut header) {
        return Err(AcpiError::Unreadable(pa));
    }
    let sig: [u8; 4] = [header[0], header[1], header[2], header[3]];
    let len = header[..].u32_at(4).unwrap_or(0);
    if (len as usize) < SDT_HEADER_LEN || len > MAX_TABLE_LEN {
        return Err(AcpiError::BadLength(sig, len));
    }
    let mut table = alloc::vec![0u8; len as usize];
    if !mem.read(pa, &mut table) {
        return Err(AcpiError::Unreadable(pa));
    }
    if !checksum_ok(&table) {
        return Err(AcpiError::BadChecksum(sig));
    }
    Ok(table)
}

/// The signature of a table read by [`read_table`].
pub fn signature(table: &[u8]) -> [u8; 4] {
    let mut s = [0u8; 4];
    if let Some(b) = table.get(..4) {
        s.copy_from_slice(b);
    }
    s
}

/// One entry of the RSDT/XSDT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRef {
    pub signature: [u8; 4],
    pub address: u64,
}

/// Every table the XSDT (or, without one, the RSDT) lists, with its
/// signature. Entries whose header cannot be read are skipped.
pub fn list_tables(
    mem: &dyn PhysMemory,
    rsdp: &Rsdp,
) -> Result<heapless::Vec<TableRef, MAX_TABLES>, AcpiError> {
    let (root, entry_size) = match rsdp.xsdt {
        Some(x) => (read_table(mem, x)?, 8),
        None => (read_table(mem, u64::from(rsdp.rsdt))?, 4),
    };
    let expected: &[u8; 4] = if entry_size == 8 { b"XSDT" } else { b"RSDT" };
    if &signature(&root) != expected {
        return Err(AcpiError::WrongSignature(signature(&root)));
    }
    let mut out = heapless::Vec::new();
    let body = root.get(SDT_HEADER_LEN..).unwrap_or(&[]);
    for entry in body.chunks_exact(entry_size) {
        let address = if entry_size == 8 {
            entry.u64_at(0).unwrap_or(0)
        } else {
            u64::from(entry.u32_at(0).unwrap_or(0))
        };
        let mut sig = [0u8; 4];
        if address == 0 || !mem.read(address, &mut sig) {
            continue;
        }
        if out
            .push(TableRef {
                signature: sig,
                address,
            })
            .is_err()
        {
            break;
        }
    }
    Ok(out)
}

/// Finds and reads the first table with signature `sig`.
pub fn find_table(
    mem: &dyn PhysMemory,
    tables: &[TableRef],
    sig: &[u8; 4],
) -> Result<Vec<u8>, AcpiError> {
    let t = tables
        .iter()
        .find(|t| &t.signature == sig)
        .ok_or(AcpiError::Missing(*sig))?;
    read_table(mem, t.address)
}

/// A processor's local APIC from the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalApic {
    /// ACPI processor UID.
    pub processor_uid: u32,
    /// The APIC ID (xAPIC: 8 bits; x2APIC entries: 32 bits).
    pub apic_id: u32,
    /// Enabled now (flag bit 0); if false the CPU is only online-capable.
    pub enabled: bool,
}

/// An I/O APIC from the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    pub id: u8,
    pub address: u32,
    pub gsi_base: u32,
}

/// What hv-core keeps of the MADT.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Madt {
    /// Local APIC MMIO address (after any 64-bit override).
    pub local_apic_address: u64,
    /// Usable processors: enabled ones, in table order.
    pub cpus: heapless::Vec<LocalApic, MAX_CPUS>,
    pub io_apics: heapless::Vec<IoApic, MAX_IO_APICS>,
    /// Enabled processors beyond [`MAX_CPUS`] that were not kept.
    pub cpus_dropped: u32,
}

const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_LAPIC_OVERRIDE: u8 = 5;
const MADT_LOCAL_X2APIC: u8 = 9;

/// Parses a MADT ("APIC") read by [`read_table`]. Disabled processors
/// (neither enabled nor online-capable) are left out; online-capable ones are
/// kept with `enabled == false`.
pub fn parse_madt(table: &[u8]) -> Result<Madt, AcpiError> {
    const SIG: [u8; 4] = *b"APIC";
    if signature(table) != SIG {
        return Err(AcpiError::WrongSignature(signature(table)));
    }
    let mut madt = Madt {
        local_apic_address: u64::from(
            table
                .u32_at(SDT_HEADER_LEN)
                .ok_or(AcpiError::Truncated(SIG, SDT_HEADER_LEN))?,
        ),
        ..Madt::default()
    };
    let mut off = SDT_HEADER_LEN + 8;
    while off < table.len() {
        let kind = table.u8_at(off).ok_or(AcpiError::Truncated(SIG, off))?;
        let len = usize::from(
            table
                .u8_at(off.saturating_add(1))
                .ok_or(AcpiError::Truncated(SIG, off))?,
        );
        let entry = table
            .get(off..off.saturating_add(len))
            .filter(|_| len >= 2)
            .ok_or(AcpiError::Truncated(SIG, off))?;
        let short = AcpiError::Truncated(SIG, off);
        let add_cpu = |madt: &mut Madt, cpu: LocalApic, flags: u32| {
            // Bit 0 enabled, bit 1 online capable.
            if flags & 3 == 0 {
                return;
            }
            if madt.cpus.push(cpu).is_err() {
                madt.cpus_dropped = madt.cpus_dropped.saturating_add(1);
            }
        };
        match kind {
            MADT_LOCAL_APIC => {
                let uid = entry.u8_at(2).ok_or(short)?;
                let id = entry.u8_at(3).ok_or(short)?;
                let flags = entry.u32_at(4).ok_or(short)?;
                let cpu = LocalApic {
                    processor_uid: u32::from(uid),
                    apic_id: u32::from(id),
                    enabled: flags & 1 != 0,
                };
                add_cpu(&mut madt, cpu, flags);
            }
            MADT_LOCAL_X2APIC => {
                let id = entry.u32_at(4).ok_or(short)?;
                let flags = entry.u32_at(8).ok_or(short)?;
                let uid = entry.u32_at(12).ok_or(short)?;
                let cpu = LocalApic {
                    processor_uid: uid,
                    apic_id: id,
                    enabled: flags & 1 != 0,
                };
                add_cpu(&mut madt, cpu, flags);
            }
            MADT_IO_APIC => {
                let io = IoApic {
                    id: entry.u8_at(2).ok_or(short)?,
                    address: entry.u32_at(4).ok_or(short)?,
                    gsi_base: entry.u32_at(8).ok_or(short)?,
                };
                let _ = madt.io_apics.push(io);
            }
            MADT_LAPIC_OVERRIDE => {
                madt.local_apic_address = entry.u64_at(4).ok_or(short)?;
            }
            _ => {}
        }
        off = off.saturating_add(len);
    }
    Ok(madt)
}

/// One ECAM window from the MCFG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamWindow {
    /// Physical address of bus 0's configuration space in this segment
    /// (ACPI gives it even when `bus_start` is not 0).
    pub base: u64,
    pub segment: u16,
    pub bus_start: u8,
    pub bus_end: u8,
}

impl EcamWindow {
    /// The physical address of function `bus:dev.func`'s 4 KiB configuration
    /// space, if the window covers that bus and dev/func are in range.
    pub fn function_address(&self, bus: u8, dev: u8, func: u8) -> Option<u64> {
        if bus < self.bus_start || bus > self.bus_end || dev >= 32 || func >= 8 {
            return None;
        }
        let offset = (u64::from(bus) << 20) | (u64::from(dev) << 15) | (u64::from(func) << 12);
        self.base.checked_add(offset)
    }
}

/// Parses an MCFG. Windows with `bus_end < bus_start` are refused.
pub fn parse_mcfg(table: &[u8]) -> Result<heapless::Vec<EcamWindow, MAX_ECAM>, AcpiError> {
    const SIG: [u8; 4] = *b"MCFG";
    if signature(table) != SIG {
        return Err(AcpiError::WrongSignature(signature(table)));
    }
    let mut out = heapless::Vec::new();
    let body = table.get(SDT_HEADER_LEN + 8..).unwrap_or(&[]);
    if body.len() % 16 != 0 {
        return Err(AcpiError::Truncated(SIG, table.len()));
    }
    for (i, e) in body.chunks_exact(16).enumerate() {
        let at = SDT_HEADER_LEN
            .saturating_add(8)
            .saturating_add(i.saturating_mul(16));
        let short = AcpiError::Truncated(SIG, at);
        let w = EcamWindow {
            base: e.u64_at(0).ok_or(short)?,
            segment: e.u16_at(8).ok_or(short)?,
            bus_start: e.u8_at(10).ok_or(short)?,
            bus_end: e.u8_at(11).ok_or(short)?,
        };
        if w.bus_end < w.bus_start {
            return Err(short);
        }
        if out.push(w).is_err() {
            break;
        }
    }
    Ok(out)
}

/// Finds the RSDP and reads the MADT: the one-call API for CPU bring-up.
pub fn madt_cpus(mem: &dyn PhysMemory) -> Result<Madt, AcpiError> {
    let rsdp = find_rsdp(mem)?;
    let tables = list_tables(mem, &rsdp)?;
    parse_madt(&find_table(mem, &tables, b"APIC")?)
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Sparse physical memory for tests.
    #[derive(Default)]
    pub struct FakeMemory {
        pub bytes: BTreeMap<u64, u8>,
    }

    impl FakeMemory {
        pub fn put(&mut self, pa: u64, data: &[u8]) {
            for (i, &b) in data.iter().enumerate() {
                self.bytes.insert(pa + i as u64, b);
            }
        }
    }

    impl PhysMemory for FakeMemory {
        fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
            // Unwritten bytes read as zero (as firmware areas would), but
            // anything at or above 4 GiB is unreadable.
            if pa.checked_add(buf.len() as u64).is_none_or(|e| e > 1 << 32) {
                return false;
            }
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.bytes.get(&(pa + i as u64)).copied().unwrap_or(0);
            }
            true
        }
    }

    /// Builds a table: header with `sig`, then `body`, checksummed.
    pub fn table(sig: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(sig);
        t.extend_from_slice(&((SDT_HEADER_LEN + body.len()) as u32).to_le_bytes());
        t.push(revision);
        t.push(0); // checksum
        t.extend_from_slice(b"PRVANE");
        t.extend_from_slice(b"TESTTABL");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(b"PRVN");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(body);
        fix_checksum(&mut t, 9);
        t
    }

    pub fn fix_checksum(t: &mut [u8], at: usize) {
        t[at] = 0;
        let sum = t.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        t[at] = 0u8.wrapping_sub(sum);
    }

    fn rsdp_v0(rsdt: u32) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(b"RSD PTR ");
        r.push(0);
        r.extend_from_slice(b"BOCHS ");
        r.push(0);
        r.extend_from_slice(&rsdt.to_le_bytes());
        fix_checksum(&mut r, 8);
        r
    }

    fn rsdp_v2(rsdt: u32, xsdt: u64) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(b"RSD PTR ");
        r.push(0);
        r.extend_from_slice(b"BOCHS ");
        r.push(2);
        r.extend_from_slice(&rsdt.to_le_bytes());
        r.extend_from_slice(&36u32.to_le_bytes());
        r.extend_from_slice(&xsdt.to_le_bytes());
        r.push(0); // extended checksum
        r.extend_from_slice(&[0, 0, 0]);
        fix_checksum(&mut r[..20], 8);
        let sum = r.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        r[32] = 0u8.wrapping_sub(sum);
        r
    }

    pub fn madt_body(cpus: &[(u8, u8, u32)], x2: &[(u32, u32)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        for &(uid, id, flags) in cpus {
            b.extend_from_slice(&[MADT_LOCAL_APIC, 8, uid, id]);
            b.extend_from_slice(&flags.to_le_bytes());
        }
        b.extend_from_slice(&[MADT_IO_APIC, 12, 0, 0]);
        b.extend_from_slice(&0xfec0_0000u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        // An interrupt source override (ignored).
        b.extend_from_slice(&[2, 10, 0, 0, 2, 0, 0, 0, 0, 0]);
        for &(id, flags) in x2 {
            b.extend_from_slice(&[MADT_LOCAL_X2APIC, 16, 0, 0]);
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(&flags.to_le_bytes());
            b.extend_from_slice(&(100 + id).to_le_bytes());
        }
        b
    }

    /// A machine like q35 under SeaBIOS: RSDP revision 0 in the BIOS area,
    /// an RSDT listing a MADT and an MCFG.
    pub fn seabios_like(extra: &[(&[u8; 4], Vec<u8>)]) -> FakeMemory {
        let mut mem = FakeMemory::default();
        let mut addrs = Vec::new();
        let mut pa = 0x7fe_0000u64;
        let mut put = |mem: &mut FakeMemory, t: &[u8]| {
            mem.put(pa, t);
            let at = pa;
            pa += 0x1000;
            at
        };
        let madt = table(
            b"APIC",
            3,
            &madt_body(&[(0, 0, 1), (1, 1, 1), (2, 2, 0), (3, 3, 2)], &[]),
        );
        addrs.push(put(&mut mem, &madt) as u32);
        let mut mcfg_body = vec![0u8; 8];
        mcfg_body.extend_from_slice(&0xb000_0000u64.to_le_bytes());
        mcfg_body.extend_from_slice(&[0, 0, 0, 0xff, 0, 0, 0, 0]);
        let mcfg = table(b"MCFG", 1, &mcfg_body);
        addrs.push(put(&mut mem, &mcfg) as u32);
        for (sig, body) in extra {
            let t = table(sig, 1, body);
            addrs.push(put(&mut mem, &t) as u32);
        }
        let body: Vec<u8> = addrs.iter().flat_map(|a| a.to_le_bytes()).collect();
        let rsdt = table(b"RSDT", 1, &body);
        let rsdt_pa = put(&mut mem, &rsdt);
        mem.put(0xf5a40, &rsdp_v0(rsdt_pa as u32));
        mem
    }

    #[test]
    fn finds_the_rsdp_of_a_seabios_machine_and_its_cpus() {
        let mem = seabios_like(&[]);
        let rsdp = find_rsdp(&mem).unwrap();
        assert_eq!(rsdp.address, 0xf5a40);
        assert_eq!(rsdp.revision, 0);
        assert_eq!(rsdp.xsdt, None);
        let madt = madt_cpus(&mem).unwrap();
        assert_eq!(madt.local_apic_address, 0xfee0_0000);
        let ids: Vec<(u32, bool)> = madt.cpus.iter().map(|c| (c.apic_id, c.enabled)).collect();
        // CPU 2 is disabled and not online-capable; CPU 3 is online-capable.
        assert_eq!(ids, [(0, true), (1, true), (3, false)]);
        assert_eq!(madt.io_apics.len(), 1);
        assert_eq!(madt.io_apics[0].address, 0xfec0_0000);
    }

    #[test]
    fn mcfg_gives_the_ecam_window() {
        let mem = seabios_like(&[]);
        let rsdp = find_rsdp(&mem).unwrap();
        let tables = list_tables(&mem, &rsdp).unwrap();
        let w = parse_mcfg(&find_table(&mem, &tables, b"MCFG").unwrap()).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].base, 0xb000_0000);
        assert_eq!(w[0].bus_end, 0xff);
        assert_eq!(w[0].function_address(0, 3, 0), Some(0xb001_8000));
        assert_eq!(w[0].function_address(1, 0, 1), Some(0xb010_1000));
        assert_eq!(w[0].function_address(0, 32, 0), None);
        assert_eq!(w[0].function_address(0, 0, 8), None);
    }

    #[test]
    fn a_missing_table_is_reported() {
        let mem = seabios_like(&[]);
        let rsdp = find_rsdp(&mem).unwrap();
        let tables = list_tables(&mem, &rsdp).unwrap();
        assert_eq!(
            find_table(&mem, &tables, b"DMAR"),
            Err(AcpiError::Missing(*b"DMAR"))
        );
    }

    #[test]
    fn the_xsdt_is_preferred_and_x2apic_entries_count() {
        let mut mem = FakeMemory::default();
        let madt = table(b"APIC", 3, &madt_body(&[(0, 0, 1)], &[(300, 1), (301, 0)]));
        mem.put(0x100_0000, &madt);
        let xsdt = table(b"XSDT", 1, &0x100_0000u64.to_le_bytes());
        mem.put(0x100_1000, &xsdt);
        // The RSDT points nowhere useful: the XSDT must be used.
        mem.put(0x80000 + 0x10, &rsdp_v2(0xdead_0000, 0x100_1000));
        mem.put(0x40e, &0x8000u16.to_le_bytes());
        let rsdp = find_rsdp(&mem).unwrap();
        assert_eq!(rsdp.address, 0x80010);
        assert_eq!(rsdp.xsdt, Some(0x100_1000));
        let madt = madt_cpus(&mem).unwrap();
        let ids: Vec<u32> = madt.cpus.iter().map(|c| c.apic_id).collect();
        assert_eq!(ids, [0, 300]);
        assert_eq!(madt.cpus[1].processor_uid, 400);
    }

    #[test]
    fn bad_checksums_and_lengths_are_refused() {
        let mut mem = seabios_like(&[]);
        // No RSDP at all.
        let empty = FakeMemory::default();
        assert_eq!(find_rsdp(&empty), Err(AcpiError::NoRsdp));
        // A corrupted MADT byte breaks its checksum.
        let rsdp = find_rsdp(&mem).unwrap();
        let tables = list_tables(&mem, &rsdp).unwrap();
        let madt_pa = tables
            .iter()
            .find(|t| &t.signature == b"APIC")
            .unwrap()
            .address;
        let b = mem.bytes.get(&(madt_pa + 40)).copied().unwrap_or(0);
        mem.put(madt_pa + 40, &[b ^ 0x55]);
        assert_eq!(madt_cpus(&mem), Err(AcpiError::BadChecksum(*b"APIC")));
        // A length below the header.
        mem.put(madt_pa + 4, &10u32.to_le_bytes());
        assert_eq!(madt_cpus(&mem), Err(AcpiError::BadLength(*b"APIC", 10)));
        // A corrupted RSDP is not found.
        mem.put(0xf5a40 + 9, b"X");
        assert_eq!(find_rsdp(&mem), Err(AcpiError::NoRsdp));
    }

    #[test]
    fn a_madt_entry_running_past_the_end_is_refused() {
        let mut body = madt_body(&[(0, 0, 1)], &[]);
        body.extend_from_slice(&[MADT_LOCAL_APIC, 8, 1, 1]);
        let t = table(b"APIC", 3, &body);
        assert!(matches!(parse_madt(&t), Err(AcpiError::Truncated(_, _))));
        let mut body = madt_body(&[(0, 0, 1)], &[]);
        body.extend_from_slice(&[MADT_LOCAL_APIC, 0]);
        let t = table(b"APIC", 3, &body);
        assert!(matches!(parse_madt(&t), Err(AcpiError::Truncated(_, _))));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                sig in prop_oneof![Just(*b"APIC"), Just(*b"MCFG")]) {
            let mut t = bytes.clone();
            if t.len() >= 4 { t[..4].copy_from_slice(&sig); }
            let _ = parse_madt(&t);
            let _ = parse_mcfg(&t);
            let _ = parse_rsdp(0, &bytes);
        }

        #[test]
        fn garbage_entries_in_a_valid_madt_never_panic(
            entries in proptest::collection::vec((any::<u8>(), 0u8..24, proptest::collection::vec(any::<u8>(), 0..24)), 0..20)) {
            let mut body = vec![0u8; 8];
            for (kind, len, data) in entries {
                body.push(kind);
                body.push(len);
                body.extend_from_slice(&data);
            }
            let t = table(b"APIC", 3, &body);
            // Whatever the entries, parsing ends with a table or an error.
            let _ = parse_madt(&t);
        }
    }
}
