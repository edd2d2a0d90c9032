//! The fuzz targets: each takes untrusted bytes, runs one parser or state
//! machine on them and checks its documented invariants (a violation
//! panics, which the runner reports with the input). `run` returns whether
//! the input was accepted (accepted inputs join the corpus).

use hv_core::loader::cmdline::{
    parse_hv_cmdline, parse_module_cmdline, MAX_GUEST_CMDLINE, MAX_NAME_LEN, MAX_TIMESLICE_US,
    MIN_MEM_BYTES, MIN_TIMESLICE_US,
};
use hv_core::loader::elf::{ElfImage, MAX_IMAGE_SPAN, MAX_SEGMENTS};
use hypercall_abi::elf_note::{NOTE_ABI_VERSION, NOTE_HYPERCALL_PAGE, NOTE_NAME};
use hypercall_abi::layout::is_guest_range;
use hypercall_abi::ring::{BackRing, FrontRing, RingError, RingMemory};

/// One fuzz target.
#[derive(Debug)]
pub struct Target {
    /// Its name (`--target`).
    pub name: &'static str,
    /// The seed corpus.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Tokens the mutator inserts.
    pub dictionary: &'static [&'static [u8]],
    /// Runs the input; true if it was accepted.
    pub run: fn(&[u8]) -> bool,
}

/// Every target, in the order they run.
pub const ALL: &[Target] = &[
    Target {
        name: "elf",
        seeds: elf_seeds,
        dictionary: &[
            b"\x7fELF",
            b"Paravane\0",
            b"\x01\x00\x00\x00",
            b"\x04\x00\x00\x00",
        ],
        run: elf,
    },
    Target {
        name: "module-cmdline",
        seeds: module_seeds,
        dictionary: &[
            b" ",
            b"--",
            b"name=",
            b"mem=",
            b"vcpus=",
            b"K",
            b"M",
            b"G",
            b"=",
            b"0",
            b"4096",
            b"18446744073709551615",
            b".elf",
            b"/",
        ],
        run: module_cmdline,
    },
    Target {
        name: "hv-cmdline",
        seeds: hv_seeds,
        dictionary: &[
            b" ",
            b"loglvl=",
            b"timeslice_us=",
            b"audit=",
            b"trace",
            b"1",
            b"99",
        ],
        run: hv_cmdline,
    },
    Target {
        name: "ring",
        seeds: ring_seeds,
        dictionary: &[&[0, 0, 0, 0], &[1, 1, 1, 1], &[9, 0xff, 0xff, 0xff, 0x7f]],
        run: ring,
    },
    Target {
        name: "acpi",
        seeds: crate::acpi_target::seeds,
        dictionary: crate::acpi_target::DICTIONARY,
        run: crate::acpi_target::run,
    },
    Target {
        name: "blkif",
        seeds: crate::device_targets::blkif_seeds,
        dictionary: crate::device_targets::BLKIF_DICTIONARY,
        run: crate::device_targets::blkif,
    },
    Target {
        name: "netif",
        seeds: crate::device_targets::netif_seeds,
        dictionary: crate::device_targets::NETIF_DICTIONARY,
        run: crate::device_targets::netif,
    },
    Target {
        name: "http",
        seeds: crate::http_target::seeds,
        dictionary: crate::http_target::DICTIONARY,
        run: crate::http_target::run,
    },
    Target {
        name: "devbus",
        seeds: crate::device_targets::devbus_seeds,
        dictionary: crate::device_targets::DEVBUS_DICTIONARY,
        run: crate::device_targets::devbus,
    },
    Target {
        name: "mgmt",
        seeds: crate::mgmt_target::mgmt_seeds,
        dictionary: crate::mgmt_target::MGMT_DICTIONARY,
        run: crate::mgmt_target::mgmt,
    },
];

// ---------------------------------------------------------------- ELF

/// A minimal valid Paravane guest image: one RX segment of 8 KiB at
/// 0x400000 (file offset 0x1000), a note segment with both notes.
pub fn minimal_image() -> Vec<u8> {
    let mut f = vec![0u8; 0x3000];
    let put =
        |f: &mut Vec<u8>, at: usize, bytes: &[u8]| f[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut f, 0, b"\x7fELF\x02\x01\x01");
    put(&mut f, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut f, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut f, 20, &1u32.to_le_bytes());
    put(&mut f, 24, &0x40_0010u64.to_le_bytes()); // entry
    put(&mut f, 32, &64u64.to_le_bytes()); // phoff
    put(&mut f, 52, &64u16.to_le_bytes()); // ehsize
    put(&mut f, 54, &56u16.to_le_bytes()); // phentsize
    put(&mut f, 56, &2u16.to_le_bytes()); // phnum
                                          // PT_LOAD, R+X.
    let load = 64;
    put(&mut f, load, &1u32.to_le_bytes());
    put(&mut f, load + 4, &5u32.to_le_bytes());
    put(&mut f, load + 8, &0x1000u64.to_le_bytes());
    put(&mut f, load + 16, &0x40_0000u64.to_le_bytes());
    put(&mut f, load + 24, &0x40_0000u64.to_le_bytes());
    put(&mut f, load + 32, &0x2000u64.to_le_bytes());
    put(&mut f, load + 40, &0x3000u64.to_le_bytes());
    put(&mut f, load + 48, &0x1000u64.to_le_bytes());
    // Notes at 0x200.
    let mut notes = Vec::new();
    for (kind, desc) in [
        (
            NOTE_ABI_VERSION,
            [0u32.to_le_bytes(), 4u32.to_le_bytes()].concat(),
        ),
        (NOTE_HYPERCALL_PAGE, 0x40_0000u64.to_le_bytes().to_vec()),
    ] {
        notes.extend_from_slice(&(NOTE_NAME.len() as u32).to_le_bytes());
        notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        notes.extend_from_slice(&kind.to_le_bytes());
        notes.extend_from_slice(NOTE_NAME);
        notes.resize(notes.len().next_multiple_of(4), 0);
        notes.extend_from_slice(&desc);
        notes.resize(notes.len().next_multiple_of(4), 0);
    }
    put(&mut f, 0x200, &notes);
    let note = 64 + 56;
    put(&mut f, note, &4u32.to_le_bytes()); // PT_NOTE
    put(&mut f, note + 4, &4u32.to_le_bytes());
    put(&mut f, note + 8, &0x200u64.to_le_bytes());
    put(&mut f, note + 32, &(notes.len() as u64).to_le_bytes());
    put(&mut f, note + 40, &(notes.len() as u64).to_le_bytes());
    put(&mut f, note + 48, &4u64.to_le_bytes());
    f
}

fn elf_seeds() -> Vec<Vec<u8>> {
    vec![minimal_image(), minimal_image()[..0x100].to_vec()]
}

/// Parses an image; on success checks what the loader relies on.
fn elf(bytes: &[u8]) -> bool {
    let Ok(image) = ElfImage::parse(bytes) else {
        return false;
    };
    let segments = image.segments();
    assert!(!segments.is_empty() && segments.len() <= MAX_SEGMENTS);
    assert!(image.virt_base() <= image.virt_end());
    assert!(image.virt_end() - image.virt_base() <= MAX_IMAGE_SPAN);
    for (i, seg) in segments.iter().enumerate() {
        assert!(
            seg.memsz > 0 && seg.memsz >= seg.filesz,
            "segment {i}: sizes"
        );
        assert!(
            is_guest_range(seg.vaddr, seg.memsz),
            "segment {i} leaves guest space"
        );
        assert_eq!(
            image.segment_data(seg).len() as u64,
            seg.filesz,
            "segment {i}: file bytes"
        );
        assert!(seg.vaddr >= image.virt_base() && seg.vaddr + seg.memsz <= image.virt_end());
        for (j, other) in segments.iter().enumerate().skip(i + 1) {
            let page = |s: u64| s & !0xfff;
            let end = |s: &hv_core::loader::elf::LoadSegment| {
                (s.vaddr + s.memsz).next_multiple_of(0x1000)
            };
            assert!(
                end(seg) <= page(other.vaddr) || end(other) <= page(seg.vaddr),
                "segments {i} and {j} share a page"
            );
        }
    }
    let entry = image.entry();
    assert!(
        segments
            .iter()
            .any(|s| s.executable && entry >= s.vaddr && entry - s.vaddr < s.memsz),
        "entry {entry:#x} outside every executable segment"
    );
    if let Some(page) = image.notes().hypercall_page {
        assert!(page & 0xfff == 0, "hypercall page misaligned");
        assert!(
            segments
                .iter()
                .any(|s| page >= s.vaddr && page - s.vaddr + 4096 <= s.memsz),
            "hypercall page outside the segments"
        );
    }
    true
}

// ---------------------------------------------------------------- command lines

fn module_seeds() -> Vec<Vec<u8>> {
    [
        "hello.elf name=hello-1 mem=8M vcpus=1 -- greeting=hello-1 lines=3",
        "/boot/driver-domain name=driver mem=16M",
        "x.elf mem=1048576 -- -- --",
        "a/b/c.elf",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// Parses a module string (as hv-core does, after a UTF-8 check).
fn module_cmdline(bytes: &[u8]) -> bool {
    let Ok(text) = core::str::from_utf8(bytes) else {
        return false;
    };
    let Ok(p) = parse_module_cmdline(text) else {
        return false;
    };
    assert!(
        !p.name.is_empty() && p.name.len() <= MAX_NAME_LEN,
        "name length"
    );
    assert!(
        p.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "name characters"
    );
    assert!(
        p.mem_bytes >= MIN_MEM_BYTES && p.mem_bytes % 4096 == 0,
        "mem"
    );
    assert!(p.vcpus >= 1, "vcpus");
    assert!(
        p.guest_cmdline.len() <= MAX_GUEST_CMDLINE,
        "guest cmdline length"
    );
    assert!(text.contains(p.image_path) && text.contains(p.guest_cmdline));
    true
}

fn hv_seeds() -> Vec<Vec<u8>> {
    [
        "hv-core loglvl=info audit=1",
        "/boot/hv-core timeslice_us=500 loglvl=trace",
        "audit=0",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// Parses a hypervisor command line: never fails, only warns.
fn hv_cmdline(bytes: &[u8]) -> bool {
    let Ok(text) = core::str::from_utf8(bytes) else {
        return false;
    };
    let (params, warnings) = parse_hv_cmdline(text);
    assert!((MIN_TIMESLICE_US..=MAX_TIMESLICE_US).contains(&params.timeslice_us));
    warnings.is_empty()
}

// ---------------------------------------------------------------- ring

/// Plain memory shared by both ends (and the hostile writes).
struct SharedBytes(Vec<u8>);

impl RingMemory for SharedBytes {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn read_u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.0[offset..offset + 4].try_into().unwrap_or([0; 4]))
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        self.0[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        out.copy_from_slice(&self.0[offset..offset + out.len()]);
    }
    fn write_bytes(&mut self, offset: usize, data: &[u8]) {
        self.0[offset..offset + data.len()].copy_from_slice(data);
    }
    fn fence(&self) {}
}

fn ring_seeds() -> Vec<Vec<u8>> {
    vec![
        vec![0, 0, 0, 1, 2, 3, 4, 5],
        (0..64).map(|i| (i % 6) as u8).collect(),
        vec![63, 0, 0, 0, 1, 2, 2, 3, 3, 4, 5, 5, 0, 1, 2, 3, 4, 5],
    ]
}

/// Drives a frontend and a backend over one memory from the input: byte 0
/// sizes the memory, then each byte is an operation; operations 6..=9
/// write the next four bytes into a header field (a hostile peer). Checks
/// RING-6's invariants after every step; with no hostile write, every
/// request and response must arrive intact and in order.
fn ring(bytes: &[u8]) -> bool {
    let Some((&len_byte, ops)) = bytes.split_first() else {
        return false;
    };
    let len = 64 + 16 * (usize::from(len_byte) % 64 + 1);
    let mut mem = SharedBytes(vec![0; len]);
    let Ok(mut front) = FrontRing::<u64, u64>::init(&mut mem) else {
        return false;
    };
    let Ok(mut back) = BackRing::<u64, u64>::attach(&mem) else {
        return false;
    };
    let size = front.size();
    let (mut next_req, mut want_req, mut next_rsp, mut want_rsp) = (0u64, 0u64, 0u64, 0u64);
    let mut hostile = false;
    let mut i = 0;
    while i < ops.len() {
        let op = ops[i] % 10;
        i += 1;
        match op {
            0 => {
                if front.push_request(&mut mem, &next_req).is_ok() {
                    next_req += 1;
                }
            }
            1 => {
                let _ = front.publish_requests(&mut mem);
            }
            2 => match back.take_request(&mem) {
                Ok(Some(req)) => {
                    if !hostile {
                        assert_eq!(req, want_req, "request out of order");
                    }
                    want_req += 1;
                }
                Ok(None) | Err(RingError::ProducerOverrun) => {}
                Err(e) => panic!("take_request: {e}"),
            },
            3 => {
                if back.push_response(&mut mem, &next_rsp).is_ok() {
                    next_rsp += 1;
                }
            }
            4 => {
                let _ = back.publish_responses(&mut mem);
            }
            5 => match front.take_response(&mem) {
                Ok(Some(rsp)) => {
                    if !hostile {
                        assert_eq!(rsp, want_rsp, "response out of order");
                    }
                    want_rsp += 1;
                }
                Ok(None) | Err(RingError::ProducerOverrun) => {}
                Err(e) => panic!("take_response: {e}"),
            },
            field => {
                let mut value = [0u8; 4];
                for b in value.iter_mut() {
                    *b = ops.get(i).copied().unwrap_or(0);
                    i += 1;
                }
                mem.write_u32(4 * usize::from(field - 6), u32::from_le_bytes(value));
                hostile = true;
            }
        }
        assert!(
            front.free_requests() <= size,
            "frontend: more free slots than the ring"
        );
        assert!(
            back.requests_pending_response() <= size,
            "backend: more unanswered requests than the ring holds"
        );
        assert!(
            want_rsp <= next_req,
            "a response taken that was never requested"
        );
    }
    !hostile
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_is_accepted_by_its_target() {
        for target in ALL {
            for (i, seed) in (target.seeds)().iter().enumerate() {
                if target.name == "elf" && i == 1 {
                    assert!(!(target.run)(seed), "a truncated image must be refused");
                    continue;
                }
                assert!((target.run)(seed), "{}: seed {i} refused", target.name);
            }
        }
    }

    #[test]
    fn the_minimal_image_is_what_the_loader_expects() {
        let bytes = minimal_image();
        let image = ElfImage::parse(&bytes).expect("minimal image");
        assert_eq!(image.entry(), 0x40_0010);
        assert_eq!(image.notes().hypercall_page, Some(0x40_0000));
    }
}
