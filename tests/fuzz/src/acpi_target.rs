//! The `acpi` fuzz target: hv-core's firmware-table parsers
//! (`hv_core::platform::acpi`: RSDP scan, RSDT/XSDT walk, MADT, MCFG) on a
//! hostile firmware image. The input is the BIOS area at 0xE0000 (the rest
//! of memory below 4 GiB reads as zeros, above it is unreadable); for half
//! of the inputs the target first repairs the checksums of every table it
//! recognises, so mutations reach past the checksum checks.
//!
//! Invariants: nothing panics; a found RSDP is on a 16-byte boundary of the
//! scanned area with a valid signature and checksum; a table read is within
//! `SDT_HEADER_LEN..=MAX_TABLE_LEN` bytes, as long as it says and
//! checksummed; at most `MAX_TABLES` tables, `MAX_CPUS` CPUs (the rest
//! counted as dropped, recounted here independently), `MAX_IO_APICS` I/O
//! APICs and `MAX_ECAM` windows, each window with `bus_start <= bus_end`
//! and addresses only for the buses, devices and functions it covers.

use hv_core::boot::multiboot::PhysMemory;
use hv_core::platform::acpi::{
    checksum_ok, find_rsdp, find_table, list_tables, parse_madt, parse_mcfg, parse_rsdp,
    read_table, Madt, MAX_CPUS, MAX_ECAM, MAX_IO_APICS, MAX_TABLES, MAX_TABLE_LEN, SDT_HEADER_LEN,
};

/// Where the input sits in physical memory.
const BASE: u64 = 0xe_0000;
/// Offsets of the seed's tables in the image.
const RSDT_AT: usize = 0x40;
const XSDT_AT: usize = 0x80;
const MADT_AT: usize = 0x100;
const MCFG_AT: usize = 0x200;

/// The input as the BIOS area.
struct Firmware<'a>(&'a [u8]);

impl PhysMemory for Firmware<'_> {
    fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
        let Some(end) = pa.checked_add(buf.len() as u64) else {
            return false;
        };
        if end > 1 << 32 {
            return false;
        }
        buf.fill(0);
        // The part of [pa, end) that overlaps the image.
        let image_end = BASE + self.0.len() as u64;
        let (from, to) = (pa.max(BASE), end.min(image_end));
        if from < to {
            let src = &self.0[(from - BASE) as usize..(to - BASE) as usize];
            buf[(from - pa) as usize..(to - pa) as usize].copy_from_slice(src);
        }
        true
    }
}

fn put(image: &mut [u8], at: usize, bytes: &[u8]) {
    image[at..at + bytes.len()].copy_from_slice(bytes);
}

fn fix_checksum(bytes: &mut [u8], at: usize) {
    bytes[at] = 0;
    let sum = bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    bytes[at] = 0u8.wrapping_sub(sum);
}

/// A table header with `sig` and `body`, not yet checksummed.
fn table(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(sig);
    t.extend_from_slice(&((SDT_HEADER_LEN + body.len()) as u32).to_le_bytes());
    t.extend_from_slice(&[1, 0]);
    t.extend_from_slice(b"PRVANEFUZZTABL\x01\x00\x00\x00PRVN\x01\x00\x00\x00");
    t.extend_from_slice(body);
    t
}

/// A q35-like image: RSDP revision 2 with an RSDT and an XSDT, both
/// listing a MADT (two xAPIC CPUs, an x2APIC CPU, an I/O APIC, an
/// override) and an MCFG (one window).
fn seed_image(revision: u8) -> Vec<u8> {
    let mut image = vec![0u8; 0x300];
    let mut rsdp = Vec::new();
    rsdp.extend_from_slice(b"RSD PTR \0BOCHS ");
    rsdp.push(revision);
    rsdp.extend_from_slice(&((BASE as u32) + RSDT_AT as u32).to_le_bytes());
    rsdp.extend_from_slice(&36u32.to_le_bytes());
    rsdp.extend_from_slice(&(BASE + XSDT_AT as u64).to_le_bytes());
    rsdp.extend_from_slice(&[0; 4]);
    put(&mut image, 0, &rsdp);
    let (madt, mcfg) = (BASE + MADT_AT as u64, BASE + MCFG_AT as u64);
    let rsdt = table(
        b"RSDT",
        &[(madt as u32).to_le_bytes(), (mcfg as u32).to_le_bytes()].concat(),
    );
    put(&mut image, RSDT_AT, &rsdt);
    let xsdt = table(b"XSDT", &[madt.to_le_bytes(), mcfg.to_le_bytes()].concat());
    put(&mut image, XSDT_AT, &xsdt);
    let mut body = Vec::new();
    body.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]);
    body.extend_from_slice(&[0, 8, 1, 1, 2, 0, 0, 0]);
    body.extend_from_slice(&[1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]);
    body.extend_from_slice(&[9, 16, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0]);
    body.extend_from_slice(&[5, 12, 0, 0, 0, 0, 0xe0, 0xfe, 0, 0, 0, 0]);
    put(&mut image, MADT_AT, &table(b"APIC", &body));
    let mut body = vec![0u8; 8];
    body.extend_from_slice(&0xb000_0000u64.to_le_bytes());
    body.extend_from_slice(&[0, 0, 0, 0xff, 0, 0, 0, 0]);
    put(&mut image, MCFG_AT, &table(b"MCFG", &body));
    repair_checksums(&mut image);
    image
}

pub fn seeds() -> Vec<Vec<u8>> {
    // The last byte decides whether checksums are repaired: even = yes.
    let mut v2 = seed_image(2);
    v2.push(0);
    let mut v0 = seed_image(0);
    v0.push(0);
    vec![v2, v0]
}

pub const DICTIONARY: &[&[u8]] = &[
    b"RSD PTR ",
    b"RSDT",
    b"XSDT",
    b"APIC",
    b"MCFG",
    &[0, 8],
    &[9, 16],
    &[1, 12],
    &[5, 12],
    &[0xff, 0xff, 0xff, 0xff],
    &[0, 0, 0x0e, 0],
];

/// Fixes the checksum of every RSDP and every table with a known signature
/// that starts on a 16-byte boundary of the image.
fn repair_checksums(image: &mut [u8]) {
    for at in (0..image.len()).step_by(16) {
        let rest = &image[at..];
        if rest.starts_with(b"RSD PTR ") && rest.len() >= 36 {
            fix_checksum(&mut image[at..at + 20], 8);
            fix_checksum(&mut image[at..at + 36], 32);
        } else if [b"RSDT", b"XSDT", b"APIC", b"MCFG"]
            .iter()
            .any(|s| rest.starts_with(&s[..]))
            && rest.len() >= SDT_HEADER_LEN
        {
            let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            if (SDT_HEADER_LEN..=rest.len()).contains(&len) {
                fix_checksum(&mut image[at..at + len], 9);
            }
        }
    }
}

/// Processor entries (types 0 and 9) the MADT lists as enabled or online
/// capable, counted without the parser.
fn madt_cpu_entries(table: &[u8]) -> usize {
    let mut off = SDT_HEADER_LEN + 8;
    let mut count = 0;
    while let (Some(&kind), Some(&len)) = (table.get(off), table.get(off + 1)) {
        let flags_at = match kind {
            0 => off + 4,
            9 => off + 8,
            _ => usize::MAX,
        };
        if let Some(f) = table.get(flags_at..flags_at.saturating_add(4)) {
            if f[0] & 3 != 0 && usize::from(len) >= 2 {
                count += 1;
            }
        }
        off += usize::from(len.max(2));
    }
    count
}

fn check_madt(table: &[u8], madt: &Madt) {
    assert!(madt.cpus.len() <= MAX_CPUS && madt.io_apics.len() <= MAX_IO_APICS);
    if madt.cpus_dropped > 0 {
        assert_eq!(
            madt.cpus.len(),
            MAX_CPUS,
            "CPUs dropped before the list was full"
        );
    }
    assert_eq!(
        madt.cpus.len() + madt.cpus_dropped as usize,
        madt_cpu_entries(table),
        "CPUs kept + dropped != usable processor entries"
    );
}

fn check_mcfg(table: &[u8]) {
    if let Ok(windows) = parse_mcfg(table) {
        assert!(windows.len() <= MAX_ECAM);
        for w in &windows {
            assert!(w.bus_start <= w.bus_end, "window with its buses reversed");
            let first = w.function_address(w.bus_start, 0, 0);
            assert_eq!(first, w.base.checked_add(u64::from(w.bus_start) << 20));
            if let Some(last) = w.function_address(w.bus_end, 31, 7) {
                assert!(last >= w.base && last - w.base < 256 << 20);
            }
            assert_eq!(w.function_address(w.bus_start, 32, 0), None);
            assert_eq!(w.function_address(w.bus_start, 0, 8), None);
            if w.bus_end < u8::MAX {
                assert_eq!(w.function_address(w.bus_end + 1, 0, 0), None);
            }
        }
    }
}

/// Runs every parser on the image; accepted if the MADT was found and parsed.
pub fn run(bytes: &[u8]) -> bool {
    let Some((&mode, image)) = bytes.split_last() else {
        return false;
    };
    let mut image = image.to_vec();
    if mode % 2 == 0 {
        repair_checksums(&mut image);
    }
    // The raw parsers on the raw bytes too.
    if let Some(r) = parse_rsdp(0, &image) {
        assert!(image.starts_with(b"RSD PTR ") && checksum_ok(&image[..20]));
        assert!(r.xsdt.is_none() || r.revision >= 2);
    }
    if let Ok(madt) = parse_madt(&image) {
        check_madt(&image, &madt);
    }
    check_mcfg(&image);
    let mem = Firmware(&image);
    let Ok(rsdp) = find_rsdp(&mem) else {
        return false;
    };
    assert!(rsdp.address.is_multiple_of(16) && (BASE..0x10_0000).contains(&rsdp.address));
    let mut found = [0u8; 20];
    assert!(mem.read(rsdp.address, &mut found));
    assert!(found.starts_with(b"RSD PTR "), "RSDP without its signature");
    assert!(checksum_ok(&found), "RSDP with a bad checksum");
    let Ok(tables) = list_tables(&mem, &rsdp) else {
        return false;
    };
    assert!(tables.len() <= MAX_TABLES);
    for t in &tables {
        assert_ne!(t.address, 0);
        if let Ok(bytes) = read_table(&mem, t.address) {
            let declared = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            assert!(bytes.len() >= SDT_HEADER_LEN && bytes.len() as u32 <= MAX_TABLE_LEN);
            assert_eq!(bytes.len() as u32, declared);
            assert!(checksum_ok(&bytes));
            assert_eq!(bytes[..4], t.signature);
        }
    }
    if let Ok(mcfg) = find_table(&mem, &tables, b"MCFG") {
        check_mcfg(&mcfg);
    }
    let Ok(madt_bytes) = find_table(&mem, &tables, b"APIC") else {
        return false;
    };
    match parse_madt(&madt_bytes) {
        Ok(madt) => {
            check_madt(&madt_bytes, &madt);
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_madt_lists_three_usable_cpus() {
        let image = seed_image(2);
        let madt_len = u32::from_le_bytes(image[MADT_AT + 4..MADT_AT + 8].try_into().unwrap());
        let madt = &image[MADT_AT..MADT_AT + madt_len as usize];
        assert_eq!(madt_cpu_entries(madt), 3);
        let parsed = parse_madt(madt).unwrap();
        assert_eq!(parsed.cpus.len(), 3);
        check_madt(madt, &parsed);
    }

    #[test]
    fn broken_checksums_are_repaired_only_for_even_modes() {
        let mut input = seed_image(0);
        input[MADT_AT + 20] ^= 0x55; // OEM table id: checksum now wrong
        input.push(1);
        assert!(!run(&input), "a bad MADT checksum must be refused");
        *input.last_mut().unwrap() = 0;
        assert!(run(&input));
    }
}
