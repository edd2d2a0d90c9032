//! Multiboot1 information parser. The loader's structures are read through a
//! [`PhysMemory`] so that this parser runs on the host in tests.
//!
//! The loader is trusted no more than it must be: every offset is
//! bounds-checked, counts are capped, strings are length-limited.

use heapless::Vec;

use crate::mm::regions::Region;

/// Magic value the loader passes in eax.
pub const LOADER_MAGIC: u32 = 0x2bad_b002;
/// Most boot modules hv-core accepts.
pub const MAX_MODULES: usize = 32;
/// Most memory-map entries kept.
pub const MAX_MMAP: usize = 64;
/// Longest command line read.
pub const MAX_CMDLINE: usize = 4096;

const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODS: u32 = 1 << 3;
const FLAG_MMAP: u32 = 1 << 6;

/// Read access to physical memory.
pub trait PhysMemory {
    /// Copies `buf.len()` bytes at physical address `pa`; false if unreadable.
    fn read(&self, pa: u64, buf: &mut [u8]) -> bool;
}

/// A boot module as the loader placed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    /// `[start, end)` in physical memory.
    pub range: Region,
    /// Physical address of its NUL-terminated string.
    pub string: u64,
}

/// What hv-core keeps of the multiboot information.
#[derive(Clone, Debug, Default)]
pub struct BootInfo {
    /// Physical address of the kernel command line, if any.
    pub cmdline: Option<u64>,
    pub modules: Vec<Module, MAX_MODULES>,
    /// Available RAM (memory-map type 1).
    pub ram: Vec<Region, MAX_MMAP>,
    /// Modules beyond [`MAX_MODULES`] that were ignored.
    pub modules_dropped: u32,
}

/// Why the multiboot information could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    BadMagic(u32),
    Unreadable(u64),
    NoMemoryMap,
}

fn read_u32(mem: &dyn PhysMemory, pa: u64) -> Result<u32, BootInfoError> {
    let mut b = [0u8; 4];
    if mem.read(pa, &mut b) {
        Ok(u32::from_le_bytes(b))
    } else {
        Err(BootInfoError::Unreadable(pa))
    }
}

fn read_u64(mem: &dyn PhysMemory, pa: u64) -> Result<u64, BootInfoError> {
    let mut b = [0u8; 8];
    if mem.read(pa, &mut b) {
        Ok(u64::from_le_bytes(b))
    } else {
        Err(BootInfoError::Unreadable(pa))
    }
}

/// Parses the multiboot information at `mbi` (physical).
pub fn parse(mem: &dyn PhysMemory, magic: u32, mbi: u64) -> Result<BootInfo, BootInfoError> {
    if magic != LOADER_MAGIC {
        return Err(BootInfoError::BadMagic(magic));
    }
    let mut info = BootInfo::default();
    let flags = read_u32(mem, mbi)?;
    if flags & FLAG_CMDLINE != 0 {
        info.cmdline = Some(u64::from(read_u32(mem, mbi + 16)?));
    }
    if flags & FLAG_MODS != 0 {
        let count = read_u32(mem, mbi + 20)?;
        let addr = u64::from(read_u32(mem, mbi + 24)?);
        for i in 0..u64::from(count) {
            let entry = addr + i * 16;
            let start = u64::from(read_u32(mem, entry)?);
            let end = u64::from(read_u32(mem, entry + 4)?);
            let string = u64::from(read_u32(mem, entry + 8)?);
            let module = Module {
                range: Region::new(start, end.max(start)),
                string,
            };
            if info.modules.push(module).is_err() {
                info.modules_dropped += 1;
            }
        }
    }
    if flags & FLAG_MMAP == 0 {
        return Err(BootInfoError::NoMemoryMap);
    }
    let length = u64::from(read_u32(mem, mbi + 44)?);
    let addr = u64::from(read_u32(mem, mbi + 48)?);
    let mut off = 0u64;
    while off + 24 <= length {
        let size = u64::from(read_u32(mem, addr + off)?);
        let base = read_u64(mem, addr + off + 4)?;
        let len = read_u64(mem, addr + off + 12)?;
        let kind = read_u32(mem, addr + off + 20)?;
        if kind == 1 && len > 0 {
            let _ = info.ram.push(Region::new(base, base.saturating_add(len)));
        }
        off += size.max(20) + 4;
    }
    Ok(info)
}

/// Reads the NUL-terminated string at `pa` into `buf`, returning the text
/// (up to `buf.len()` bytes; invalid UTF-8 is cut at the first bad byte).
pub fn read_c_string<'b>(mem: &dyn PhysMemory, pa: u64, buf: &'b mut [u8]) -> &'b str {
    let mut len = 0;
    for (i, slot) in buf.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        if !mem.read(pa + i as u64, &mut b) || b[0] == 0 {
            break;
        }
        *slot = b[0];
        len = i + 1;
    }
    let bytes = &buf[..len];
    match core::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(std::vec::Vec<u8>);
    impl PhysMemory for Fake {
        fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
            let start = pa as usize;
            match self.0.get(start..start + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    fn put32(m: &mut [u8], at: usize, v: u32) {
        m[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put64(m: &mut [u8], at: usize, v: u64) {
        m[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn sample() -> Fake {
        let mut m = vec![0u8; 0x3000];
        let mbi = 0x100;
        put32(&mut m, mbi, FLAG_CMDLINE | FLAG_MODS | FLAG_MMAP);
        put32(&mut m, mbi + 16, 0x800);
        m[0x800..0x80b].copy_from_slice(b"hv loglvl=x");
        put32(&mut m, mbi + 20, 2);
        put32(&mut m, mbi + 24, 0x400);
        put32(&mut m, 0x400, 0x10_0000);
        put32(&mut m, 0x404, 0x10_2000);
        put32(&mut m, 0x408, 0x900);
        put32(&mut m, 0x410, 0x10_2000);
        put32(&mut m, 0x414, 0x10_1000); // end before start: clamped empty
        put32(&mut m, 0x418, 0x900);
        m[0x900..0x905].copy_from_slice(b"a.elf");
        // memory map: two entries of size 20
        put32(&mut m, mbi + 44, 48);
        put32(&mut m, mbi + 48, 0x600);
        put32(&mut m, 0x600, 20);
        put64(&mut m, 0x604, 0);
        put64(&mut m, 0x60c, 0x9fc00);
        put32(&mut m, 0x614, 1);
        put32(&mut m, 0x618, 20);
        put64(&mut m, 0x61c, 0xf0000);
        put64(&mut m, 0x624, 0x10000);
        put32(&mut m, 0x62c, 2);
        Fake(m)
    }

    #[test]
    fn parses_modules_cmdline_and_ram() {
        let mem = sample();
        let info = parse(&mem, LOADER_MAGIC, 0x100).unwrap();
        assert_eq!(info.cmdline, Some(0x800));
        assert_eq!(info.modules.len(), 2);
        assert_eq!(info.modules[0].range, Region::new(0x10_0000, 0x10_2000));
        assert!(info.modules[1].range.is_empty());
        assert_eq!(info.ram.as_slice(), &[Region::new(0, 0x9fc00)]);
        let mut buf = [0u8; 64];
        assert_eq!(read_c_string(&mem, 0x800, &mut buf), "hv loglvl=x");
        let mut small = [0u8; 2];
        assert_eq!(read_c_string(&mem, 0x900, &mut small), "a.");
    }

    #[test]
    fn rejects_bad_magic_and_unreadable() {
        let mem = sample();
        assert_eq!(
            parse(&mem, 0, 0x100).unwrap_err(),
            BootInfoError::BadMagic(0)
        );
        assert!(matches!(
            parse(&mem, LOADER_MAGIC, 0x10_0000),
            Err(BootInfoError::Unreadable(_))
        ));
    }
}
