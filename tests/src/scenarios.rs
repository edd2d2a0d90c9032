//! The scenario table: every QEMU boot `cargo xtask test`, `run` and `bench` know,
//! with the serial lines each must show. Edit expectations here.
//!
//! Conventions:
//! - module 1 is always the driver domain (domain 0);
//! - module numbers in `(hv) module N '…'` lines count multiboot modules from 1,
//!   domain ids count only the domains actually created;
//! - the expected exit status is `qemu_status(EXIT_POWEROFF)` (33) unless a
//!   scenario says otherwise.

use hypercall_abi::machine::{qemu_status, EXIT_POWEROFF};

use crate::disk_image::{fsdemo_notes, host_hello};
use crate::elf_mutations::{entry_outside, not_elf, overlapping_segments, truncate};
use crate::{Disk, DiskContent, Expect, FatVolume, HostFile, Image, Kind, Module, Scenario};

/// hv-core command line shared by every scenario; every test boot runs the
/// frame-table audit (SPEC MM-8).
const HV_CMDLINE: &str = "loglvl=info audit=1";
/// hv-core command line of the memory scenarios: recount every frame after
/// each domain ends and before power-off (MM-8).
const HV_CMDLINE_AUDIT: &str = "loglvl=info audit=1";
/// QEMU status when the driver domain powers the machine off.
const POWEROFF: i32 = qemu_status(EXIT_POWEROFF);

/// Module 1 of every scenario.
const DRIVER: Module = Module {
    image: Image::Guest("driver-domain"),
    args: "name=driver mem=16M",
};

/// hv-core command line of the device scenarios: the IOMMU is required and
/// domain 0 gets every device hv-core does not keep (PDEV-2).
const HV_CMDLINE_DD: &str = "loglvl=info audit=1 iommu=on dom0_pci=all";

/// Module 1 of the device scenarios: the driver domain, with room for DMA
/// buffers.
const DRIVER_DD: Module = Module {
    image: Image::Guest("driver-domain"),
    args: "name=driver mem=32M -- devices=1",
};

/// The two disks of the device scenarios.
const DD_DISKS: &[Disk] = &[
    Disk {
        file_name: "vblk.img",
        size_mib: 8,
        content: DiskContent::Zeroed,
    },
    Disk {
        file_name: "nvme.img",
        size_mib: 8,
        content: DiskContent::Zeroed,
    },
];

/// The devices of the device scenarios, after the IOMMU: virtio-blk at
/// 00:03.0, NVMe at 00:04.0, virtio-net (QEMU user networking) at 00:05.0.
/// Virtio goes through the IOMMU only with `iommu_platform=on`.
macro_rules! dd_devices {
    ($iommu:literal) => {
        [
            "-device",
            $iommu,
            "-drive",
            "file={scratch}/vblk.img,if=none,id=vblk,format=raw",
            "-device",
            "virtio-blk-pci,drive=vblk,addr=03.0,disable-legacy=on,iommu_platform=on",
            "-drive",
            "file={scratch}/nvme.img,if=none,id=nvme,format=raw",
            "-device",
            "nvme,drive=nvme,serial=paravane0,addr=04.0",
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0,addr=05.0,disable-legacy=on,iommu_platform=on",
        ]
    };
}
const DD_DEVICES_VTD: [&str; 14] = dd_devices!("intel-iommu");
/// The same devices without an IOMMU (the first pair of arguments repeats a
/// harmless `-device`: QEMU's default VGA, as on the IOMMU machines).
const DD_DEVICES_NO_IOMMU: [&str; 14] = dd_devices!("VGA");
const DD_DEVICES_AMDVI: [&str; 14] = dd_devices!("amd-iommu");

/// `fsdemo-disk`'s disk: 32 MiB, an MBR whose partition 1 (from 1 MiB) is
/// a FAT16 volume the host made, holding the host's `HELLO.TXT`; after the
/// boot it must be clean and hold fsdemo's `NOTES.TXT`.
const FSDEMO_DISK: Disk = Disk {
    file_name: "fat.img",
    size_mib: 32,
    content: DiskContent::Fat(FatVolume {
        first_sector: 2048,
        label: "PARAVANE",
        files: &[HostFile {
            name: "HELLO.TXT",
            contents: host_hello,
        }],
        expect_after: &[
            HostFile {
                name: "HELLO.TXT",
                contents: host_hello,
            },
            HostFile {
                name: "NOTES.TXT",
                contents: fsdemo_notes,
            },
        ],
    }),
};

/// The durability scenarios' volume: made like `fsdemo-disk`'s; after each
/// boot it must be clean and hold fsdemo's `NOTES.TXT`.
const DURABLE_VOLUME: FatVolume = FatVolume {
    first_sector: 2048,
    label: "DURABLE",
    files: &[HostFile {
        name: "HELLO.TXT",
        contents: host_hello,
    }],
    expect_after: &[HostFile {
        name: "NOTES.TXT",
        contents: fsdemo_notes,
    }],
};

/// The q35 + VT-d + virtio-blk machine of the real-disk scenarios, with
/// `{scratch}/fat.img` as the disk.
const FAT_DISK_DEVICES: &[&str] = &[
    "-device",
    "intel-iommu",
    "-drive",
    "file={scratch}/fat.img,if=none,id=vblk,format=raw",
    "-device",
    "virtio-blk-pci,drive=vblk,addr=03.0,disable-legacy=on,iommu_platform=on",
];

/// The machine of the scenarios whose guests reach the outside: VT-d and a
/// virtio-net NIC (00:05.0) on QEMU's user network, with host
/// 127.0.0.1:`{host_port}` forwarded to the web guest's 10.0.2.15:80.
const WEB_NIC: &[&str] = &[
    "-device",
    "intel-iommu",
    "-netdev",
    "user,id=net0,hostfwd=tcp:127.0.0.1:{host_port}-10.0.2.15:80",
    "-device",
    "virtio-net-pci,netdev=net0,addr=05.0,disable-legacy=on,iommu_platform=on",
];

/// The demo's machine: [`FAT_DISK_DEVICES`] (VT-d, virtio-blk on
/// `{scratch}/fat.img`) plus [`WEB_NIC`]'s NIC with the forward to the web
/// guest.
const DEMO_DEVICES: &[&str] = &[
    "-device",
    "intel-iommu",
    "-drive",
    "file={scratch}/fat.img,if=none,id=vblk,format=raw",
    "-device",
    "virtio-blk-pci,drive=vblk,addr=03.0,disable-legacy=on,iommu_platform=on",
    "-netdev",
    "user,id=net0,hostfwd=tcp:127.0.0.1:{host_port}-10.0.2.15:80",
    "-device",
    "virtio-net-pci,netdev=net0,addr=05.0,disable-legacy=on,iommu_platform=on",
];

/// `net-bench`'s machine: [`WEB_NIC`] without the forward (the guest
/// connects out to the host's sink).
const NET_BENCH_NIC: &[&str] = &[
    "-device",
    "intel-iommu",
    "-netdev",
    "user,id=net0",
    "-device",
    "virtio-net-pci,netdev=net0,addr=05.0,disable-legacy=on,iommu_platform=on",
];

/// The toolstack scenarios' modules: the driver domain running its toolstack
/// (it stays up until `pvctl poweroff`) with a 4 MiB RAM disk to cut guest
/// disks from, and the images the host driver creates guests from, held by
/// hv-core rather than started (`hold`, TS-14) — listed so xtask builds them.
const TOOLSTACK_MODULES: &[Module] = &[
    Module {
        image: Image::Guest("driver-domain"),
        args: "name=driver mem=32M -- toolstack=1 disk=4",
    },
    Module {
        image: Image::Guest("ticker"),
        args: "name=ticker-image hold",
    },
    Module {
        image: Image::Guest("abi-mismatch"),
        args: "name=abi-image hold",
    },
];

/// The management UART (COM2) as a unix socket in the scratch directory,
/// which `pvctl --socket` reaches; COM1 stays on stdio.
const TOOLSTACK_QEMU: &[&str] = &[
    "-chardev",
    "socket,id=mgmt,path={scratch}/mgmt.sock,server=on,wait=off",
    "-serial",
    "chardev:mgmt",
];

/// A `hello` module with these parameters.
const fn hello(args: &'static str) -> Module {
    Module {
        image: Image::Guest("hello"),
        args,
    }
}

/// A broken image derived from `hello`.
const fn broken_hello(
    mutate: fn(Vec<u8>) -> Vec<u8>,
    file_name: &'static str,
    args: &'static str,
) -> Module {
    Module {
        image: Image::Derived {
            from: "hello",
            mutate,
            file_name,
        },
        args,
    }
}

/// One security regression scenario (`xsa-<n>`, see `tests/guests/xsa-suite`):
/// the suite's image as domain 1 running test `$name`, then any partner
/// modules. It passes only on the test's own `SUCCESS` result line (and the
/// partners' lines given in `$expect`), a clean audit and no crash.
macro_rules! xsa {
    ($name:literal, $about:literal, [$($module:expr),*], [$($expect:expr),*]) => {
        xsa!(smp 1, "", $name, $about, [$($module),*], [$($expect),*])
    };
    // `smp N`: N pCPUs; `$domain` adds hv-level module keys (e.g. `vcpus=`).
    (smp $smp:literal, $domain:literal, $name:literal, $about:literal, [$($module:expr),*], [$($expect:expr),*]) => {
        Scenario {
            name: $name,
            about: $about,
            kind: Kind::Test,
            hv_cmdline: HV_CMDLINE_AUDIT,
            modules: &[
                DRIVER,
                Module {
                    image: Image::Guest("xsa-suite"),
                    args: concat!("name=", $name, " mem=16M ", $domain, "-- test=", $name),
                },
                $($module),*
            ],
            smp: $smp,
            mem_mib: 256,
            qemu_args: &[],
            disks: &[],
            timeout_secs: 60,
            exit_status: POWEROFF,
            expect: &[
                Expect::Line(concat!("(d1) test result: ", $name, ": SUCCESS")),
                Expect::Count(concat!("(d1) test result: ", $name, ":"), 1),
                Expect::Line(concat!("(hv) d1 '", $name, "': shut down (poweroff)")),
                Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
                Expect::Line("audit: ok"),
                Expect::Absent("audit: FAILED"),
                Expect::Absent("(hv) PANIC"),
                $($expect),*
            ],
        }
    };
}

/// A partner domain of an `xsa-<n>` scenario: the suite's image in `role`.
const fn xsa_partner(args: &'static str) -> Module {
    Module {
        image: Image::Guest("xsa-suite"),
        args,
    }
}

/// Every scenario, in the order `cargo xtask test` runs them.
pub(crate) static ALL: &[Scenario] = &[
    Scenario {
        name: "demo",
        about: "A guest serves HTTP that the host reaches (curl through hostfwd, the driver domain's virtio-net NIC and bridge) while another mounts the host-made FAT volume on its disk (virtio-blk behind VT-d) and writes a file, then all power off",
        kind: Kind::Demo,
        hv_cmdline: HV_CMDLINE_DD,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=32M -- nic=virtio-net net=1:02:00:00:00:00:01 disk=virtio-blk blk=2:whole",
            },
            Module {
                image: Image::Guest("web"),
                args: "name=web mem=16M",
            },
            Module {
                image: Image::Guest("fsdemo"),
                args: "name=fsdemo mem=16M",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: DEMO_DEVICES,
        disks: &[FSDEMO_DISK],
        timeout_secs: 180,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d0) netback: the bridge holds the NIC 52:54:00:12:34:56 as its uplink port"),
            Expect::Line("(d1) web: listening on http://10.0.2.15:80/"),
            Expect::InOrder(&[
                "(d1) web: GET / -> 200",
                "(d1) web: GET /stats -> 200",
                "(d1) web: GET /quit -> 200",
            ]),
            Expect::Line("(d1) web: served 3 requests"),
            Expect::Line("(d2) fsdemo: HELLO.TXT says: Hello from the host, put here by mcopy."),
            Expect::Line("(d2) fsdemo: wrote NOTES.TXT (12288 bytes) and flushed the disk"),
            Expect::Line("(d2) fsdemo: NOTES.TXT read back intact after reconnecting; all checks passed"),
            Expect::Line("(hv) d1 'web': shut down (poweroff)"),
            Expect::Line("(hv) d2 'fsdemo': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "crasher",
        about: "A guest faults and is destroyed, its memory is reclaimed, a bystander carries on",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("crasher"),
                args: "name=crasher mem=8M",
            },
            hello("name=bystander mem=8M -- greeting=bystander lines=40"),
            Module {
                image: Image::Guest("crasher"),
                args: "name=orphan mem=4M -- mode=no-handler",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d1) crasher: caught #PF at cr2=0xdead0000, resuming"),
            Expect::Line("(d1) crasher: resumed after #PF"),
            Expect::Line("(d1) crasher: caught #DE"),
            Expect::Line("(hv) d1 'crasher': crashed: #PF at rip="),
            Expect::Line("cr2=0xbad0000 inside its own #PF handler"),
            Expect::Absent("crasher: ERROR"),
            Expect::Line("(hv) d3 'orphan': crashed: #UD at rip="),
            Expect::Line("with no handler registered"),
            Expect::Line("(hv) d3 'orphan': 1025 frames returned to the free pool"),
            // The bystander runs between the crasher's steps, not only after them.
            Expect::InOrder(&["(d2) Hello from bystander", "(d1) crasher: caught #DE"]),
            // The bystander keeps printing after the crash, and finishes.
            Expect::InOrder(&["(hv) d1 'crasher': crashed:", "(d2) bystander: line 40"]),
            Expect::Line("(hv) d2 'bystander': shut down (poweroff)"),
            // 8 MiB = 2048 pages, plus the shared_info frame.
            Expect::Line("(hv) d1 'crasher': 2049 frames returned to the free pool"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "abi-mismatch",
        about: "A guest built for an unsupported ABI major is refused; the next one boots",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("abi-mismatch"),
                args: "name=future",
            },
            hello("name=hello mem=8M -- greeting=survivor"),
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(hv) module 2 'future': refused: ABI 99.0 is not supported"),
            Expect::Line("(d1) Hello from survivor"),
            Expect::Line("(hv) d1 'hello': shut down (poweroff)"),
        ],
    },
    Scenario {
        name: "bad-modules",
        about: "Malformed images and bad module parameters are refused one by one; a valid guest still boots",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            DRIVER,
            broken_hello(not_elf, "not-elf.elf", "name=not-elf"),
            broken_hello(truncate, "truncated.elf", "name=truncated"),
            broken_hello(overlapping_segments, "overlap.elf", "name=overlap"),
            broken_hello(entry_outside, "bad-entry.elf", "name=bad-entry"),
            hello("name=greedy mem=64G"),
            hello("name=typo mem=12Q"),
            hello("name=unknown frobnicate=1"),
            hello("name=ok mem=8M -- greeting=ok"),
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(hv) module 2 'not-elf': refused: not an ELF file"),
            Expect::Line("(hv) module 3 'truncated': refused: truncated"),
            Expect::Line("(hv) module 4 'overlap': refused: segments"),
            Expect::Line("(hv) module 5 'bad-entry': refused: entry point"),
            Expect::Line("(hv) module 6 'greedy': refused: not enough memory"),
            Expect::Line("(hv) module 7 'typo': refused: bad value `12Q` for mem"),
            Expect::Line("(hv) module 8 'unknown': refused: unknown parameter `frobnicate`"),
            Expect::Line("(d1) Hello from ok"),
            Expect::Line("(hv) d1 'ok': shut down (poweroff)"),
        ],
    },
    Scenario {
        name: "domctl",
        about: "Domain 0 builds guests at run time (create, populate, build, unpause) from a held boot module, reads their consoles, pauses, destroys them mid-run and blocked; free memory returns to the frame; bad images, memory, names and domids are refused",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            Module {
                image: Image::Guest("domctl-test"),
                args: "name=toolstack mem=32M -- role=toolstack",
            },
            Module {
                image: Image::Guest("domctl-test"),
                args: "name=unprivileged mem=8M -- role=unprivileged",
            },
            Module {
                image: Image::Guest("domctl-test"),
                args: "name=image hold",
            },
            Module {
                image: Image::Guest("abi-mismatch"),
                args: "name=future hold",
            },
        ],
        smp: 2,
        mem_mib: 256,
        // COM2 for the management UART (TS-13), its output discarded.
        qemu_args: &["-serial", "null"],
        disks: &[],
        timeout_secs: 120,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(hv) management UART: COM2 (0x2f8) found"),
            Expect::Line("(hv) module 3 'image': held for the toolstack"),
            Expect::Line("(hv) module 4 'future': held for the toolstack"),
            Expect::Line("(d1) test result: domctl-unprivileged: SUCCESS"),
            Expect::Line("(d0) domctl: non-ELF image refused: not an ELF file"),
            Expect::Line("(d0) domctl: ABI-mismatch image refused: ABI 99.0 is not supported"),
            Expect::Line("(d0) domctl: create+populate+build of a 1024-page guest:"),
            // The guest's lines still reach the serial console as (dN) lines.
            Expect::Line("spinner: input `hello spinner`"),
            Expect::Line("'spinner': destroyed by d0"),
            // Destroyed while domain 0 mapped its grant: that frame waits.
            Expect::Line("'spinner': 1 frames stay until other domains unmap their grants"),
            Expect::Line("(d0) domctl: the mapped frame stays until domain 0 unmaps it: ok"),
            Expect::Line("'blocker': destroyed by d0"),
            Expect::Line("shutdown requested by the toolstack: powering off"),
            Expect::Line("'polite': shut down (poweroff)"),
            Expect::Line("(d0) test result: domctl: SUCCESS"),
            Expect::Line("audit: ok"),
            Expect::Absent("audit: FAILED"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "mmtest",
        about: "A guest maps, unmaps and remaps thousands of pages, switches address spaces and tears it all down",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_AUDIT,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("mmtest"),
                args: "name=mmtest mem=32M",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 120,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d1) mmtest: all checks passed ("),
            Expect::Line("(hv) d1 'mmtest': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("audit: FAILED"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "userland",
        about: "A guest kernel runs two user programs in their own address spaces; each faults reading kernel memory and the other's data",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_AUDIT,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("userland"),
                args: "name=userland mem=16M",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 120,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d1) userland: program 1 says: hello from user program 1"),
            Expect::Line("(d1) userland: program 2 says: user program 2 reporting"),
            Expect::Line("(d1) userland: program 1 faulted reading kernel memory at 0x"),
            Expect::Line("(d1) userland: program 1 faulted reading program 2's data at 0x"),
            Expect::Line("(d1) userland: program 2 faulted reading kernel memory at 0x"),
            Expect::Line("(d1) userland: program 2 faulted reading program 1's data at 0x"),
            Expect::Line("(d1) userland: program 1 killed after #PF"),
            Expect::Line("(d1) userland: both programs ran, isolation held"),
            Expect::Line("(hv) d1 'userland': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("audit: FAILED"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "attacker",
        about: "A guest attacks the page-table rules; every attempt is refused with SPEC's error and a victim finishes",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_AUDIT,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("attacker"),
                args: "name=attacker mem=16M",
            },
            hello("name=victim mem=16M -- greeting=victim lines=30"),
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 120,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d1) attacker: writable mapping of own page-table frame: refused with EBUSY"),
            Expect::Line("(d1) attacker: pinning an L1 that maps a page table writable: refused with EBUSY"),
            Expect::Line("(d1) attacker: mapping another domain's frame: refused with EPERM"),
            Expect::Line("(d1) attacker: M2P update of another domain's frame: refused with EPERM"),
            Expect::Line("(d1) attacker: mapping a hypervisor frame: refused with EPERM"),
            Expect::Line("(d1) attacker: writing hypervisor L4 slot 256: refused with EPERM"),
            Expect::Line("(d1) attacker: writing hypervisor L4 slot 511: refused with EPERM"),
            Expect::Line("(d1) attacker: pinning an L1 with a global entry: refused with EINVAL"),
            Expect::Line("(d1) attacker: pinning an L1 mapping a hypervisor frame: refused with EPERM"),
            Expect::Line("(d1) attacker: self-referencing L4 (slot 300): refused with EBUSY"),
            Expect::Line("(d1) attacker: L3 pointing at itself: refused with EBUSY"),
            Expect::Line("(d1) attacker: L2 entry pointing at an L1's parent L3: refused with EBUSY"),
            Expect::Line("(d1) attacker: unpinning the L4 in use: refused with EBUSY"),
            Expect::Line("(d1) attacker: pinning the pinned L4 again: refused with EINVAL"),
            Expect::Line("(d1) attacker: an L1 as the new base pointer: refused with EBUSY"),
            Expect::Line("(d1) attacker: a writable frame as the user base pointer: refused with EBUSY"),
            Expect::Line("(d1) attacker: batch of 8 with a bad entry at index 4: refused with EPERM"),
            Expect::Line("(d1) attacker: partial batch stopped with done = 4, entries 0..3 applied"),
            Expect::Line("(d1) attacker: superpage (PS) in an L2 entry: refused with EINVAL"),
            Expect::Line("(d1) attacker: mmu_update with a misaligned ptr: refused with EINVAL"),
            Expect::Line("(d1) attacker: mmu_update with an unknown command: refused with EINVAL"),
            Expect::Line("(d1) attacker: mmu_update with count 4097: refused with E2BIG"),
            Expect::Line("(d1) attacker: mmu_update with requests in hypervisor space: refused with EFAULT"),
            Expect::Line("(d1) attacker: mmuext_op with a non-zero pad: refused with EINVAL"),
            Expect::Line("(d1) attacker: update_va_mapping without an L2: refused with EINVAL"),
            Expect::Line("(d1) attacker: multicall with an iret entry: refused with EINVAL"),
            Expect::Line("(d1) attacker: multicall with a nested multicall: refused with EINVAL"),
            Expect::Line("(d1) attacker: all 26 attacks refused"),
            Expect::Line("(hv) d1 'attacker': shut down (poweroff)"),
            Expect::Line("(d2) victim: line 30"),
            Expect::Line("(hv) d2 'victim': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("audit: FAILED"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "pingpong",
        about: "Two domains exchange 100,000 messages over a granted ring with event notifications; both compute the same checksum",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_AUDIT,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("pingpong"),
                args: "name=ping mem=8M -- role=ping peer=2 count=100000",
            },
            Module {
                image: Image::Guest("pingpong"),
                args: "name=pong mem=8M -- role=pong peer=1 peer_port=1 gref=0 count=100000",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 120,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d1) ping: ring of 128 slots granted to d2 as ref 0, port 1"),
            Expect::Line("(d2) pong: connected to d1 port 1"),
            // The checksum of the 100,000 responses (see pingpong's proto.rs):
            // equal on both sides.
            Expect::Line("(d1) ping: 100000 messages, checksum 0xbc3f9e39c45de8de"),
            Expect::Line("(d2) pong: 100000 messages, checksum 0xbc3f9e39c45de8de"),
            Expect::Line("(d2) pong: ring unmapped"),
            Expect::Line("(d1) ping: grants ended, ring freed"),
            Expect::Line("(hv) d1 'ping': shut down (poweroff)"),
            Expect::Line("(hv) d2 'pong': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("audit: FAILED"),
            Expect::Absent("crashed"),
            Expect::Absent("panic"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "pingpong-kill",
        about: "The backend of a ring crashes mid-exchange; the frontend notices, ends its grant and powers off cleanly",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_AUDIT,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("pingpong"),
                args: "name=ping mem=8M -- role=ping peer=2 count=100000 watch_peer=1",
            },
            Module {
                image: Image::Guest("pingpong"),
                args: "name=pong mem=8M -- role=pong peer=1 peer_port=1 gref=0 count=100000 die_after=5000",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 120,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d2) pong: dying on purpose after 5000 messages"),
            Expect::Line("(hv) d2 'pong': crashed: #UD at rip="),
            Expect::Line("(d1) ping: peer died after 5000 messages, carrying on"),
            Expect::InOrder(&[
                "(hv) d2 'pong': crashed:",
                "(d1) ping: peer died after 5000 messages",
                "(d1) ping: grants ended, ring freed",
                "(hv) d1 'ping': shut down (poweroff)",
            ]),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("audit: FAILED"),
            Expect::Absent("(hv) d1 'ping': crashed"),
            Expect::Absent("panic"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "grant-attacker",
        about: "A guest misuses the grants and the event channel a victim gives it; every attempt is refused and the victim finishes",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_AUDIT,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("grant-attacker"),
                args: "name=grant-attacker mem=8M -- victim=2",
            },
            Module {
                image: Image::Guest("pingpong"),
                args: "name=victim mem=8M -- role=victim peer=1",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 120,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d2) grant-victim: granted ref 0 read-only and ref 1 read-write to d1, port 1"),
            Expect::Line("(d1) grant-attacker: mapping a reference never granted: refused with EPERM"),
            Expect::Line("(d1) grant-attacker: mapping an out-of-range reference: refused with EINVAL"),
            Expect::Line("(d1) grant-attacker: mapping a grant of a domain without a grant table: refused with ENOENT"),
            Expect::Line("(d1) grant-attacker: writing through a read-only grant mapping: faulted as expected (#PF at 0x"),
            Expect::Line("(d1) grant-attacker: reading through an unmapped grant: faulted as expected"),
            Expect::Line("(d1) grant-attacker: mapping a read-only grant writable: refused with EACCES"),
            Expect::Line("(d1) grant-attacker: unmapping a grant twice: refused with EINVAL"),
            Expect::Line("(d1) grant-attacker: mapping a grant at a hypervisor address: refused with EINVAL"),
            Expect::Line("(d1) grant-attacker: mapping a grant over a page in use: refused with EBUSY"),
            Expect::Line("(d1) grant-attacker: a batch of 513 map operations: refused with E2BIG"),
            Expect::Line("(d1) grant-attacker: grant copy into a read-only grant: refused with EACCES"),
            Expect::Line("(d1) grant-attacker: grant copy of 4097 bytes: refused with EINVAL"),
            Expect::Line("(d1) grant-attacker: grant copy across the end of a page: refused with EINVAL"),
            Expect::Line("(d1) grant-attacker: grant copy from a reference never granted: refused with EPERM"),
            Expect::Line("(d1) grant-attacker: grant copy into its own page table: refused with EBUSY"),
            Expect::Line("(d2) grant-victim: end_access of a mapped grant: refused (in use)"),
            Expect::Line("(d2) grant-victim: end_access after the attacker unmapped: ok"),
            Expect::Line("(d1) grant-attacker: sent 100000 events to the victim"),
            Expect::Line("(d2) grant-victim: still working after the event flood ("),
            Expect::Line("(d1) grant-attacker: all 14 attacks refused"),
            Expect::Line("(d2) grant-victim: all grants ended, done"),
            Expect::Line("(hv) d1 'grant-attacker': shut down (poweroff)"),
            Expect::Line("(hv) d2 'victim': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("audit: FAILED"),
            Expect::Absent("crashed"),
            Expect::Absent("panic"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "smp",
        about: "A 4-vCPU guest on 4 pCPUs: concurrent token ring, time across vCPUs, TLB shootdown, vCPU down/up",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("smptest"),
                args: "name=smptest mem=8M vcpus=4",
            },
        ],
        smp: 4,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 90,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(hv) CPUs: 4 enabled in the MADT (APIC ids [0, 1, 2, 3]), 4 online"),
            Expect::Line("(d1) smptest: vCPUs 1..3 up"),
            Expect::Line("(d1) smptest: concurrency: ok"),
            Expect::Line("went backwards"),
            Expect::Absent("(d1) smptest: FAILED"),
            Expect::Line("(d1) smptest: TLB shootdown: the page faults on vCPU 1 right after the unmap: ok"),
            Expect::Line("(d1) smptest: vCPU 3 down (stopped at"),
            Expect::Line("(d1) smptest: all SMP checks passed"),
            Expect::Line("(hv) d1 'smptest': shut down (poweroff)"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "sched-weights",
        about: "Weights 2:1 on one pCPU, a 25% cap, and a sleeper woken on time beside a spinner",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("schedtest"),
                args: "name=heavy mem=4M weight=512 pin=1 -- role=spin label=heavy from_ms=1500 to_ms=3500",
            },
            Module {
                image: Image::Guest("schedtest"),
                args: "name=light mem=4M weight=256 pin=1 -- role=spin label=light from_ms=1500 to_ms=3500",
            },
            Module {
                image: Image::Guest("schedtest"),
                args: "name=capped mem=4M cap=25 pin=2 -- role=spin label=capped from_ms=1500 to_ms=3500",
            },
            Module {
                image: Image::Guest("schedtest"),
                args: "name=spinner mem=4M pin=0 -- role=spin label=spinner from_ms=1500 to_ms=3500",
            },
            Module {
                image: Image::Guest("schedtest"),
                args: "name=sleeper mem=4M pin=0 -- role=sleep label=sleeper from_ms=1500 to_ms=3500 period_ms=5",
            },
        ],
        // Three pCPUs: fewer busy emulated CPUs than a 4-way machine keeps
        // the host's scheduling out of the figures on a 2-core CI machine.
        smp: 3,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 90,
        exit_status: POWEROFF,
        expect: &[
            // Weights 512:256 on pCPU 1: CPU time 2:1 ±10%.
            Expect::Number {
                line: "(d1) schedtest heavy:",
                key: "cpu_us=",
                per: Some(("(d2) schedtest light:", "cpu_us=")),
                min: 1.8,
                max: 2.2,
            },
            // Together they keep pCPU 1 busy (work conserving).
            Expect::Number {
                line: "(d1) schedtest heavy:",
                key: "share=",
                per: None,
                min: 60.0,
                max: 73.0,
            },
            // Cap 25% alone on pCPU 2: 25% ±5%.
            Expect::Number {
                line: "(d3) schedtest capped:",
                key: "share=",
                per: None,
                min: 20.0,
                max: 30.0,
            },
            // The sleeper (on pCPU 0 with the driver domain) typically wakes
            // within 2.5 ms of its deadline although `spinner` never gives
            // the pCPU up: its wake-up is boosted. Without the boost it waits
            // for the spinner's 10 ms slice (median ~5 ms).
            Expect::Number {
                line: "(d5) schedtest sleeper:",
                key: "median_late_us=",
                per: None,
                min: 0.0,
                max: 4000.0,
            },
            Expect::Absent("schedtest: FAILED"),
            Expect::Count("shut down (poweroff)", 6),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "timetest",
        about: "PV clock without hypercalls, wallclock, set_timer_op and poll timeouts",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("timetest"),
                args: "name=timetest mem=8M",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d1) timetest: system time is monotonic"),
            Expect::Line("(d1) timetest: wallclock"),
            Expect::Line("(d1) timetest: a 20 ms timer fired after"),
            Expect::Line("(d1) timetest: a past deadline fired at once"),
            Expect::Line("(d1) timetest: a 10 ms poll timeout returned after"),
            Expect::Line("(d1) timetest: all checks passed"),
            Expect::Line("(hv) d1 'timetest': shut down (poweroff)"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "hcall-fuzz",
        about: "10^6 seeded, mutated hypercalls (seed 0x5eed) while a watchdog guest keeps running; no hypervisor fault, audit clean",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("hcall-fuzz"),
                args: "name=fuzz mem=16M -- seed=0x5eed count=1000000",
            },
            hello("name=watchdog mem=8M -- lines=200"),
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 180,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d1) hcall-fuzz: seed 0x5eed count 1000000"),
            Expect::Line("(d1) hcall-fuzz: done: 1000000 calls (seed 0x5eed)"),
            // The fuzzer also checks each result against SPEC.
            Expect::Absent("hcall-fuzz: ERROR"),
            Expect::Line("(hv) d1 'fuzz': shut down (poweroff)"),
            Expect::Line("(d2) watchdog: line 200"),
            Expect::Line("(hv) d2 'watchdog': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "bench",
        about: "hvbench measures hypercall, MMU, event-channel and grant costs (with an echo domain) and prints BENCH lines",
        kind: Kind::Bench,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("hvbench"),
                args: "name=bench mem=16M -- echo=2",
            },
            Module {
                image: Image::Guest("pingpong"),
                args: "name=echo mem=4M -- role=echo peer=1 peer_port=1",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 300,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("BENCH name=hypercall_null_cycles"),
            Expect::Line("BENCH name=evtchn_send_cycles"),
            Expect::Line("BENCH name=evtchn_pingpong_same_cpu_cycles"),
            Expect::Line("BENCH name=grant_copy_4k_ratio"),
            Expect::Line("(d2) echo: answered"),
            Expect::Absent("crashed"),
        ],
    },
    Scenario {
        name: "sched-bench",
        about: "schedbench on 2 pCPUs: yield with nothing else runnable, event ping-pong across pCPUs, vCPU-to-vCPU IPI round trip",
        kind: Kind::Bench,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("schedbench"),
                args: "name=schedbench mem=8M vcpus=2 pin=0,1 -- role=main echo=2",
            },
            Module {
                image: Image::Guest("pingpong"),
                args: "name=echo mem=4M pin=1 -- role=echo peer=1 peer_port=1",
            },
        ],
        smp: 2,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 300,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("BENCH name=sched_yield_cycles"),
            Expect::Line("BENCH name=evtchn_pingpong_cross_cpu_cycles"),
            Expect::Line("BENCH name=ipi_roundtrip_cycles"),
            Expect::Line("(d1) schedbench: vCPU 0 on pCPU 0;"),
            Expect::Line("(d1) schedbench: IPI round trips answered:"),
            Expect::Absent("FAILED"),
            Expect::Absent("crashed"),
        ],
    },
    Scenario {
        name: "switch-bench",
        about: "schedbench: a domain-to-domain switch, two domains yielding to each other on one pCPU",
        kind: Kind::Bench,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("schedbench"),
                args: "name=switch mem=4M -- role=switch",
            },
            Module {
                image: Image::Guest("schedbench"),
                args: "name=yielder mem=4M -- role=yielder until_ms=1500",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 300,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("BENCH name=domain_switch_cycles"),
            Expect::Absent("FAILED"),
            Expect::Absent("crashed"),
        ],
    },
    Scenario {
        name: "wake-bench",
        about: "schedtest: how late a sleeper on a 5 ms timer wakes while another domain spins on its pCPU",
        kind: Kind::Bench,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            DRIVER,
            Module {
                image: Image::Guest("schedtest"),
                args: "name=spinner mem=4M -- role=spin label=spinner from_ms=1000 to_ms=2000",
            },
            Module {
                image: Image::Guest("schedtest"),
                args: "name=sleeper mem=4M -- role=sleep label=sleeper from_ms=1000 to_ms=2000 period_ms=5",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 300,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("BENCH name=wakeup_latency_ns"),
            Expect::Absent("FAILED"),
            Expect::Absent("crashed"),
        ],
    },
    Scenario {
        name: "fsdemo",
        about: "A guest mounts the FAT volume on its disk (blkfront -> driver-domain blkback over a GPT partition of a RAM disk), reads a file, writes one, flushes, reconnects and reads it back",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=64M -- disk=16 seed=gpt-fat blk=1:gpt:1",
            },
            Module {
                image: Image::Guest("fsdemo"),
                args: "name=fsdemo mem=16M",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 120,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d0) toolstack: seeded a GPT: partition 1"),
            Expect::Line("(d0) toolstack: record 1: blk for d1, Gpt(1)"),
            Expect::Line("(d0) blkback: record 1 connected to d1: 2 ring pages (32 slots)"),
            Expect::Line("(d1) fsdemo: disk connected:"),
            Expect::Line("(d1) fsdemo: 8 reads were in flight at once; 64 KiB indirect read matches them"),
            Expect::Line("(d1) fsdemo: HELLO.TXT says: Hello from the driver domain's RAM disk."),
            Expect::Line("(d1) fsdemo: wrote NOTES.TXT (12288 bytes) and flushed the disk"),
            Expect::Line("(d1) fsdemo: reconnected to record 1"),
            Expect::Line("(d1) fsdemo: NOTES.TXT read back intact after reconnecting; all checks passed"),
            // Two connections, each closed by the frontend, with no errors.
            Expect::Count("(d0) blkback: record 1 of d1 closed (the frontend closed)", 2),
            Expect::Count(" requests, 0 errors, ", 2),
            // Both flushes reached the backend (and the RAM disk) before fsdemo went on.
            Expect::Line(" 0 errors, 2 flushes, "),
            Expect::Line("(d1) fsdemo: a flush queued before a read completed after it (out of order)"),
            Expect::Line("(hv) d1 'fsdemo': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("refused"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "fsdemo-disk",
        about: "fsdemo on a real disk: the host makes a FAT image (mkfs.vfat, mcopy), the driver domain serves it to fsdemo from virtio-blk behind VT-d, fsdemo reads the host's file and writes its own; afterwards fsck.vfat -n finds it clean and mcopy gets fsdemo's file byte-exact",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_DD,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=32M -- disk=virtio-blk blk=1:whole",
            },
            Module {
                image: Image::Guest("fsdemo"),
                args: "name=fsdemo mem=16M",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: FAT_DISK_DEVICES,
        disks: &[FSDEMO_DISK],
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(hv) iommu: VT-d"),
            Expect::Line("(d0) dd: 00:03.0 virtio-blk: 65536 sectors of 512 bytes"),
            Expect::Line("(d0) dd: virtio-blk: serves guests, no self-test"),
            Expect::Line("(d0) toolstack: serving from the VirtioBlk disk, 65536 units"),
            Expect::Line("(d0) toolstack: record 1: blk for d1, Whole, 65536 units"),
            Expect::Line("(d0) blkback: record 1 connected to d1: 2 ring pages (32 slots)"),
            Expect::Line("(d1) fsdemo: 8 reads were in flight at once; 64 KiB indirect read matches them"),
            Expect::Line("(d1) fsdemo: HELLO.TXT says: Hello from the host, put here by mcopy."),
            Expect::Line("(d1) fsdemo: wrote NOTES.TXT (12288 bytes) and flushed the disk"),
            Expect::Line("(d1) fsdemo: NOTES.TXT read back intact after reconnecting; all checks passed"),
            Expect::Count("(d0) blkback: record 1 of d1 closed (the frontend closed)", 2),
            Expect::Count(" requests, 0 errors, ", 2),
            // Both flushes went to the device (SyncDisk waits for its answer).
            Expect::Line(" 0 errors, 2 flushes, "),
            Expect::Line("(hv) d1 'fsdemo': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("refused"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "fsdemo-nvme",
        about: "fsdemo-disk with the FAT image on NVMe behind VT-d (disk=nvme): host-made, read and written by fsdemo, then clean and byte-exact on the host",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_DD,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=32M -- disk=nvme blk=1:whole",
            },
            Module {
                image: Image::Guest("fsdemo"),
                args: "name=fsdemo mem=16M",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[
            "-device",
            "intel-iommu",
            "-drive",
            "file={scratch}/fat.img,if=none,id=nvme,format=raw",
            "-device",
            "nvme,drive=nvme,serial=paravane0,addr=04.0",
        ],
        disks: &[FSDEMO_DISK],
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d0) dd: nvme: serves guests, no self-test"),
            Expect::Line("(d0) toolstack: serving from the Nvme disk, 65536 units"),
            Expect::Line("(d1) fsdemo: HELLO.TXT says: Hello from the host, put here by mcopy."),
            Expect::Line("(d1) fsdemo: NOTES.TXT read back intact after reconnecting; all checks passed"),
            Expect::Line(" 0 errors, 2 flushes, "),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("refused"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "durability-1-write",
        about: "Durability, boot 1: fsdemo writes NOTES.TXT to a host-made FAT image on virtio-blk and flushes; xtask kills QEMU with SIGKILL as soon as the flush is acknowledged; the host then finds the volume clean and NOTES.TXT byte-exact",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_DD,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=32M -- disk=virtio-blk blk=1:whole",
            },
            Module {
                image: Image::Guest("fsdemo"),
                args: "name=fsdemo mem=16M",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: FAT_DISK_DEVICES,
        disks: &[Disk {
            file_name: "fat.img",
            size_mib: 32,
            content: DiskContent::Fat(DURABLE_VOLUME),
        }],
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d0) toolstack: serving from the VirtioBlk disk, 65536 units"),
            Expect::Line("(d1) fsdemo: HELLO.TXT says: Hello from the host, put here by mcopy."),
            Expect::KilledAfter("(d1) fsdemo: wrote NOTES.TXT (12288 bytes) and flushed the disk"),
            Expect::Absent("(d1) fsdemo: reconnected"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "durability-2-read",
        about: "Durability, boot 2: the image durability-1-write left after its kill -9 boots again; fsdemo finds NOTES.TXT intact, and so does the host afterwards",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_DD,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=32M -- disk=virtio-blk blk=1:whole",
            },
            Module {
                image: Image::Guest("fsdemo"),
                args: "name=fsdemo mem=16M -- verify=1",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: FAT_DISK_DEVICES,
        disks: &[Disk {
            file_name: "fat.img",
            size_mib: 32,
            content: DiskContent::Kept {
                from: "durability-1-write",
                check: Some(DURABLE_VOLUME),
            },
        }],
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d0) toolstack: record 1: blk for d1, Whole, 65536 units"),
            Expect::Line("(d1) fsdemo: NOTES.TXT from the previous boot is intact"),
            Expect::Line("(d0) blkback: record 1 of d1 closed (the frontend closed): "),
            Expect::Line(" 0 errors, 0 flushes, "),
            Expect::Line("(hv) d1 'fsdemo': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "evil-frontend",
        about: "A hostile blkfront sends malformed requests, bad and foreign grants, a request storm and a runaway producer index; it gets error responses and a closed device, reconnects, while fsdemo's I/O on the same backend is unharmed",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                // d1's disk is the scratch partition given as an LBA range.
                args: "name=driver mem=64M -- disk=16 seed=gpt-fat blk=1:lba:28638+4096 blk=2:gpt:1",
            },
            Module {
                image: Image::Guest("evil-frontend"),
                args: "name=evil mem=16M -- victim=2 storm=2000",
            },
            Module {
                image: Image::Guest("fsdemo"),
                args: "name=fsdemo mem=16M",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 120,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d0) toolstack: record 1: blk for d1, Lba { first: 28638, count: 4096 }, 4096 units"),
            Expect::Line("(d0) toolstack: record 2: blk for d2, Gpt(1)"),
            Expect::Line("(d1) evil-frontend: devbus refused create, destroy, connect, a foreign port and a bad ring size; only its own record is visible"),
            Expect::Line("(d1) evil-frontend: 16 malformed requests all got error responses; the disk is unchanged"),
            Expect::Line("(d1) evil-frontend: storm of 2000 requests, 2000 answered"),
            Expect::Line("(d0) blkback: record 1 of d1 closed (the frontend broke the ring)"),
            // Exactly the malformed requests failed: the storm was served in full.
            Expect::Line(" 2018 requests, 16 errors, "),
            Expect::Line("(d1) evil-frontend: req_prod far ahead of the consumer: the backend closed the device"),
            Expect::Line("(d1) evil-frontend: reconnected; honest I/O works again"),
            Expect::Line("(d1) evil-frontend: all attacks answered"),
            Expect::Line("(d2) fsdemo: NOTES.TXT read back intact after reconnecting; all checks passed"),
            Expect::Count("(d0) blkback: record 2 of d2 closed (the frontend closed)", 2),
            Expect::Line("(hv) d1 'evil': shut down (poweroff)"),
            Expect::Line("(hv) d2 'fsdemo': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "net-tcp",
        about: "Two guests exchange 256 KiB over TCP (smoltcp on netfront) through their vifs and the driver domain's learning bridge, while a third forges the server's MAC and is dropped",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=32M -- net=1:02:00:00:00:00:01 net=2:02:00:00:00:00:02 net=3:02:00:00:00:00:03",
            },
            Module {
                image: Image::Guest("nettest"),
                args: "name=server mem=16M -- role=server ip=10.0.0.1",
            },
            Module {
                image: Image::Guest("nettest"),
                args: "name=client mem=16M -- role=client ip=10.0.0.2 server=10.0.0.1 bytes=262144",
            },
            Module {
                image: Image::Guest("nettest"),
                args: "name=spoofer mem=16M -- role=spoofer ip=10.0.0.3 victim=02:00:00:00:00:01",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 120,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d0) toolstack: record 1: net for d1, MAC 02:00:00:00:00:01"),
            Expect::Line("(d0) toolstack: record 2: net for d2, MAC 02:00:00:00:00:02"),
            Expect::Line("(d0) netback: record 1 connected to d1"),
            Expect::Line("(d0) netback: record 2 connected to d2"),
            Expect::Line("(d1) nettest: server listening on 10.0.0.1:7"),
            Expect::Line("(d2) nettest: client connecting to 10.0.0.1:7"),
            Expect::Line("(d1) nettest: server received 262144 bytes intact, checksum"),
            Expect::Line("(d2) nettest: client sent 262144 bytes; the server confirmed count and checksum"),
            Expect::Line("(d0) netback: record 1 of d1 closed (the frontend closed)"),
            Expect::Line("(d0) netback: record 2 of d2 closed (the frontend closed)"),
            Expect::Count("(d1) nettest: vif disconnected, grants ended", 1),
            Expect::Count("(d2) nettest: vif disconnected, grants ended", 1),
            Expect::Count(" 0 refused, ", 2),
            Expect::Line("(hv) d1 'server': shut down (poweroff)"),
            Expect::Line("(hv) d2 'client': shut down (poweroff)"),
            Expect::Line("(d3) nettest: spoofer: 50 frames with a forged source MAC dropped, 10 honest broadcasts forwarded"),
            Expect::Line("(d0) netback: record 3 of d3 closed (the frontend closed): 10 frames sent, 50 refused"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "web",
        about: "A guest takes a DHCP lease from QEMU's user network and serves HTTP on smoltcp; the host's curl reaches it through hostfwd, the driver domain's virtio-net NIC (behind VT-d, on the bridge), netback and netfront: the page, /stats, 404, 405, 400, 20 sequential connections while another client stalls mid-request, then /quit",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_DD,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=32M -- nic=virtio-net net=1:02:00:00:00:00:01",
            },
            Module {
                image: Image::Guest("web"),
                args: "name=web mem=16M -- ip=dhcp",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: WEB_NIC,
        disks: &[],
        timeout_secs: 180,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(hv) iommu: VT-d"),
            Expect::Line("(d0) dd: virtio-net: on the guests' bridge, no self-test"),
            Expect::Line("(d0) netback: the bridge holds the NIC 52:54:00:12:34:56 as its uplink port (woken by its MSI-X event)"),
            Expect::Line("(d0) netback: record 1 connected to d1"),
            // QEMU's DHCP server, reached through the bridge and the NIC.
            Expect::Line("(d1) web: DHCP lease 10.0.2.15/24, gateway 10.0.2.2"),
            Expect::Line("(d1) web: listening on http://10.0.2.15:80/ (gateway 10.0.2.2)"),
            Expect::InOrder(&[
                "(d1) web: GET / -> 200",
                "(d1) web: GET /stats -> 200",
                "(d1) web: GET /no-such-page -> 404",
                "(d1) web: DELETE / -> 405",
                "(d1) web: malformed request -> 400",
                "(d1) web: GET /index.html -> 200",
                "(d1) web: malformed request -> 400",
                "(d1) web: GET /stats -> 200",
                "(d1) web: GET /quit -> 200",
            ]),
            Expect::Count("(d1) web: GET /index.html -> 200", 20),
            // The bad one and the stalled client's half request.
            Expect::Count("(d1) web: malformed request -> 400", 2),
            Expect::Line("(d1) web: served 28 requests"),
            Expect::Line("(d1) web: vif disconnected, powering off"),
            Expect::Line("(d0) netback: record 1 of d1 closed (the frontend closed)"),
            // Every frame the guest sent was delivered (to the NIC), every
            // frame for it had a posted page, and the NIC took every frame.
            Expect::Line(" frames sent, 0 refused, "),
            Expect::Line(" received, 0 dropped"),
            Expect::Line("(d0) netback: uplink: "),
            Expect::Line(" from the wire, 0 refused by the NIC, 0 from the wire dropped"),
            // The NIC's MSI-X event woke the loop (nothing else would have
            // for a frame from the wire).
            Expect::Number {
                line: "(d0) netback: uplink: ",
                key: "interrupts ",
                per: None,
                min: 1.0,
                max: 1e9,
            },
            Expect::Line("(hv) d1 'web': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("aborted"),
            Expect::Absent("DHCP lease lost"),
            Expect::Absent("DMA fault"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    xsa!(
        "xsa-7",
        "A syscall whose return address is 2^47 and non-canonical handler, callback and iret targets: the guest gets a fault at a canonical rip",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-148",
        "Superpage (PS) entries in L2/L3, also as a flags-only change of a present entry, are refused",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-167",
        "mmuext and mmu_update operations on mfns past the end of memory are refused",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-182",
        "Flipping only the RW bit of a page-table mapping is refused; no self-mapping L4 entry exists to flip",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-204",
        "syscall with TF set: the hypercall returns, the #DB reaches the guest, also across continuations",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-212",
        "A batch whose request array runs into non-canonical space fails with EFAULT exactly there, after continuations",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-213",
        "iret and nested multicall entries in a multicall are refused; the vCPU stays in kernel mode",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-240",
        "Linear page-table entries and chains at every level are refused",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-260",
        "mov ss before syscall, int3 and int 0x80; ring-3 debug registers fault",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-286",
        "Writable mappings removed without a flush in a multicall that pins the frame: stale aliases fault",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-299",
        "A big table tree failing validation at its last entry leaves no types behind; a batch failing after continuations stops exactly there",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-339",
        "Hypercalls and exceptions entered with NT, AC, DF and TF set work; copies run forwards",
        [],
        [
            Expect::Line("(d1) xsa-339: console copy with NT|AC|DF|TF set: 0123456789abcdef"),
            Expect::Line("(d1) xsa-339: console copy with DF set: 0123456789abcdef"),
            Expect::Absent("crashed")
        ]
    ),
    xsa!(
        "xsa-224",
        "A grant mapped twice and unmapped in steps (repeated handle, wrong address) drops one reference per mapping; unknown map flags are refused",
        [xsa_partner("name=granter mem=8M -- role=granter peer=1 report=xsa-224-granter")],
        [
            Expect::Line("(d2) test result: xsa-224-granter: SUCCESS"),
            Expect::Absent("crashed")
        ]
    ),
    xsa!(
        "xsa-226",
        "512 grant copies work, 513 are refused, a bad one fails alone, an unreadable batch fails whole; nothing is left in use",
        [xsa_partner("name=granter mem=8M -- role=granter peer=1 report=xsa-226-granter")],
        [
            Expect::Line("(d2) test result: xsa-226-granter: SUCCESS"),
            Expect::Absent("crashed")
        ]
    ),
    xsa!(
        "xsa-227",
        "Misaligned, non-canonical, hypervisor and in-use mapping addresses and a PTE-address flag are handled as documented",
        [xsa_partner("name=granter mem=8M -- role=granter peer=1 report=xsa-227-granter")],
        [
            Expect::Line("(d2) test result: xsa-227-granter: SUCCESS"),
            Expect::Absent("crashed")
        ]
    ),
    xsa!(
        "xsa-230",
        "A grant mapped eight times stays in use until the last unmap; a partly bad map batch maps exactly the good ones",
        [xsa_partner("name=granter mem=8M -- role=granter peer=1 report=xsa-230-granter")],
        [
            Expect::Line("(d2) test result: xsa-230-granter: SUCCESS"),
            Expect::Absent("crashed")
        ]
    ),
    xsa!(
        "xsa-234",
        "A read-only grant mapping cannot be made writable or removed by page-table updates; its unmap releases it",
        [xsa_partner("name=granter mem=8M -- role=granter peer=1 report=xsa-234-granter")],
        [
            Expect::Line("(d2) test result: xsa-234-granter: SUCCESS"),
            Expect::Absent("crashed")
        ]
    ),
    xsa!(
        "xsa-316",
        "Every failing hypercall and every failed batch operation returns a negative errno",
        [xsa_partner("name=granter mem=8M -- role=granter peer=1 report=xsa-316-granter")],
        [
            Expect::Line("(d2) test result: xsa-316-granter: SUCCESS"),
            Expect::Absent("crashed")
        ]
    ),
    xsa!(
        "xsa-380",
        "An unmap batch with repeated and bogus handles unmaps each mapping exactly once",
        [xsa_partner("name=granter mem=8M -- role=granter peer=1 report=xsa-380-granter")],
        [
            Expect::Line("(d2) test result: xsa-380-granter: SUCCESS"),
            Expect::Absent("crashed")
        ]
    ),
    xsa!(
        "xsa-188",
        "Binds whose result cannot be written back and grant-table setups with a bad frame leave no port, VIRQ, table or frame use behind",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-317",
        "Port numbers outside 1..1023 are refused by every event-channel operation; the table fills at exactly 1023",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-342",
        "Polling closed, zero, out-of-range, too many or unreadable ports is refused without blocking; a timeout still returns",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-343",
        "A port closed and rebound 2000 times while another domain floods it with sends: no failure on either side",
        [xsa_partner("name=sender mem=8M -- role=sender peer=1 report=xsa-343-sender")],
        [
            Expect::Line("(d2) test result: xsa-343-sender: SUCCESS"),
            Expect::Absent("crashed")
        ]
    ),
    xsa!(
        "xsa-344",
        "Closing 1023 ports, and dying with 1023 open, never stalls another domain for 200 ms",
        [xsa_partner("name=ticker mem=8M -- role=ticker peer=1 report=xsa-344-ticker")],
        [
            Expect::Line("(d2) test result: xsa-344-ticker: SUCCESS"),
            Expect::Absent("crashed")
        ]
    ),
    xsa!(
        "xsa-155",
        "The ring library copies each request once: requests scrambled right after every read still arrive as published; impossible producer indices are refused",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-216",
        "Exception frames, STATUS, QUERY_SIZE, done words, multicall results, grant statuses and ring responses carry no stray bytes",
        [],
        [Expect::Absent("crashed")]
    ),
    xsa!(
        "xsa-332",
        "A domain flooding another with events without pause: the victim keeps at least 20% of the CPU it had alone",
        [xsa_partner("name=flooder mem=8M -- role=sender yield=0 peer=1 report=xsa-332-flooder")],
        [
            Expect::Line("(d2) test result: xsa-332-flooder: SUCCESS"),
            Expect::Absent("crashed")
        ]
    ),
    xsa!(
        "xsa-391",
        "A hostile backend publishes an impossible response index and floods the frontend: refused, the frontend disconnects and keeps its CPU share",
        [xsa_partner("name=bad-backend mem=8M -- role=bad-backend peer=1 report=xsa-391-backend")],
        [
            Expect::Line("(d2) test result: xsa-391-backend: SUCCESS"),
            Expect::Absent("crashed")
        ]
    ),
    xsa!(
        smp 2,
        "vcpus=2 pin=0,1 ",
        "xsa-401",
        "Two vCPUs on two pCPUs race to give one frame two types (pin vs writable map, pin vs pin, unpin vs map, pin vs stale TLB): one side always loses",
        [],
        [
            Expect::Line("(d1) xsa-401: pin L1 vs writable map: "),
            Expect::Line("(d1) xsa-401: pin L1 vs pin L2/L1: "),
            Expect::Line("(d1) xsa-401: unpin vs writable map: "),
            Expect::Line("(d1) xsa-401: pin L1 vs writes through a stale TLB entry: "),
            Expect::Absent("crashed")
        ]
    ),
    Scenario {
        name: "xsa-155-backend",
        about: "XSA-155 against blkback and netback: a frontend on its own pCPU rewrites the sector, segment, tx grant/offset and size of each request until the response comes; every result is exactly one version, invalid versions are refused, while fsdemo and a TCP pair use the same backends",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_AUDIT,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=64M pin=0 -- disk=16 seed=gpt-fat blk=1:lba:28638+4096 blk=1:lba:28638+64:ro blk=2:gpt:1 net=1:02:00:00:00:01:01 net=1:02:00:00:00:01:02 net=3:02:00:00:00:00:01 net=4:02:00:00:00:00:02",
            },
            Module {
                image: Image::Guest("evil-frontend"),
                args: "name=evil mem=16M pin=1 -- mode=xsa-155 victim=2 rounds=200",
            },
            Module {
                image: Image::Guest("fsdemo"),
                args: "name=fsdemo mem=16M",
            },
            Module {
                image: Image::Guest("nettest"),
                args: "name=server mem=16M -- role=server ip=10.0.0.1",
            },
            Module {
                image: Image::Guest("nettest"),
                args: "name=client mem=16M -- role=client ip=10.0.0.2 server=10.0.0.1 bytes=262144",
            },
        ],
        smp: 2,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 240,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d1) evil-frontend: blkback, 200 reads rewritten under the backend: "),
            Expect::Line("; each result exactly one version"),
            Expect::Line("(d1) evil-frontend: blkif responses: ids, operations and statuses as sent, pads zero"),
            Expect::Line("(d1) evil-frontend: blkback, 100 requests on a read-only device flipping between READ and WRITE: "),
            Expect::Line("; the device never changed"),
            Expect::Line("(d1) evil-frontend: netback, 200 frames rewritten under the backend: "),
            Expect::Line("; each frame exactly one version"),
            Expect::Line("(d1) evil-frontend: netif responses: ids and statuses defined"),
            Expect::Line("(d1) evil-frontend: xsa-155: all checks passed"),
            Expect::Line("(d2) fsdemo: NOTES.TXT read back intact after reconnecting; all checks passed"),
            Expect::Line("(d3) nettest: server received 262144 bytes intact, checksum"),
            Expect::Line("(d4) nettest: client sent 262144 bytes; the server confirmed count and checksum"),
            Expect::Absent("broke the ring"),
            Expect::Line("(hv) d1 'evil': shut down (poweroff)"),
            Expect::Line("(hv) d2 'fsdemo': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "xsa-216-backend",
        about: "XSA-216 against blkback and netback: every response field is defined, pads are zero, nothing is written past a response in its slot, outside a transfer in a granted page, past a frame in an rx page or into a refused page",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_AUDIT,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=32M -- disk=16 blk=1:lba:0+4096 net=1:02:00:00:00:01:01 net=1:02:00:00:00:01:02",
            },
            Module {
                image: Image::Guest("evil-frontend"),
                args: "name=evil mem=16M -- mode=xsa-216 victim=0 rounds=24",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 120,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d1) evil-frontend: blkback, 24 reads checked: 24 got sector 0"),
            Expect::Line("(d1) evil-frontend: blkif responses: ids, operations and statuses as sent, pads zero"),
            Expect::Line("(d1) evil-frontend: netback, 24 frames checked: 24 at offset 0"),
            Expect::Line("(d1) evil-frontend: netif responses: ids and statuses defined"),
            Expect::Line("(d1) evil-frontend: xsa-216: all checks passed"),
            Expect::Line("(hv) d1 'evil': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "xsa-332-backend",
        about: "XSA-332 against the backends: a frontend sends events with no work to blkback and netback without pause; another guest's disk reads and frames keep at least 20% of their unstormed rate, and the stormer is still served after",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_AUDIT,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=32M -- disk=16 blk=1:lba:0+4096 blk=2:lba:4096+4096 net=1:02:00:00:00:01:01 net=2:02:00:00:00:02:01 net=2:02:00:00:00:02:02",
            },
            Module {
                image: Image::Guest("evil-frontend"),
                args: "name=stormer mem=16M -- mode=xsa-332 victim=2",
            },
            Module {
                image: Image::Guest("evil-frontend"),
                args: "name=victim mem=16M -- mode=victim peer=1 rounds=400",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 180,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d1) evil-frontend: storm: "),
            Expect::Line("(d2) evil-frontend: victim: 400 rounds of a 64 KiB read and a frame took "),
            Expect::Line("(d2) BENCH name=xsa332_victim_io_share value="),
            Expect::Line("(d2) evil-frontend: victim: I/O kept flowing through the storm"),
            Expect::Line("(d1) evil-frontend: after the storm blkback and netback still answer the stormer"),
            Expect::Absent("broke the ring"),
            Expect::Line("(hv) d1 'stormer': shut down (poweroff)"),
            Expect::Line("(hv) d2 'victim': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "evil-netfront",
        about: "A hostile netfront sends malformed tx requests, bad, foreign and read-only grants, a forged source MAC, a request storm and broken ring indices; netback answers with errors or drops, closes only that vif, serves it again after reconnecting, while two other guests exchange TCP through the bridge",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_AUDIT,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=32M -- net=1:02:00:00:00:01:01 net=1:02:00:00:00:01:02 net=2:02:00:00:00:00:01 net=3:02:00:00:00:00:02",
            },
            Module {
                image: Image::Guest("evil-frontend"),
                args: "name=evil mem=16M -- mode=net victim=2 storm=2000",
            },
            Module {
                image: Image::Guest("nettest"),
                args: "name=server mem=16M -- role=server ip=10.0.0.1",
            },
            Module {
                image: Image::Guest("nettest"),
                args: "name=client mem=16M -- role=client ip=10.0.0.2 server=10.0.0.1 bytes=262144",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 180,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d1) evil-frontend: 10 malformed tx requests all got NETIF_RSP_ERROR"),
            Expect::Line("(d1) evil-frontend: 2 frames with a forged source MAC dropped"),
            Expect::Line("(d1) evil-frontend: rx pages read-only, ungranted, foreign and padded all got NETIF_RSP_ERROR; the next good page got its frame"),
            Expect::Line("(d1) evil-frontend: storm of 2000 tx requests, 2000 answered"),
            Expect::Line("(d1) evil-frontend: tx req_prod one past a full ring: netback closed the vif"),
            Expect::Line("(d1) evil-frontend: rx req_prod far ahead of the consumer: netback closed the vif"),
            Expect::Line("(d1) evil-frontend: tx req_prod behind the consumer: netback closed the vif"),
            Expect::Count("(d0) netback: record 1 of d1 closed (the frontend broke the ring)", 3),
            Expect::Line("(d1) evil-frontend: reconnected; honest frames flow again"),
            Expect::Line("(d1) evil-frontend: all netif attacks answered"),
            Expect::Line("(d2) nettest: server received 262144 bytes intact, checksum"),
            Expect::Line("(d3) nettest: client sent 262144 bytes; the server confirmed count and checksum"),
            Expect::Absent("record 3 of d2 closed (the frontend broke"),
            Expect::Absent("record 4 of d3 closed (the frontend broke"),
            Expect::Line("(hv) d1 'evil': shut down (poweroff)"),
            Expect::Line("(hv) d2 'server': shut down (poweroff)"),
            Expect::Line("(hv) d3 'client': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "xsa-391-frontend",
        about: "XSA-391 against the kit's frontends: a guest made the backend of a blk and a net record (foreign-blk=, foreign-net=) answers with unknown and repeated ids, wrong operations, undefined statuses and impossible rx frames, floods events, then publishes an impossible producer; blkfront and netfront refuse and count the garbage, time out instead of hanging, keep their books and disconnect cleanly",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_AUDIT,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=16M -- foreign-blk=2:1:64 foreign-net=2:1:02:00:00:00:03:01",
            },
            Module {
                image: Image::Guest("rogue-backend"),
                args: "name=frontend mem=16M -- role=frontend",
            },
            Module {
                image: Image::Guest("rogue-backend"),
                args: "name=rogue mem=16M -- role=backend",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 120,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d0) toolstack: record 1: blk for d1 backed by d2"),
            Expect::Line("(d0) toolstack: record 2: net for d1 backed by d2"),
            Expect::Line("(d1) rogue-backend: blkfront: unknown id, repeated id, wrong operation and undefined status refused (4 counted)"),
            Expect::Line("(d1) rogue-backend: blkfront: a wait under the event storm timed out after "),
            Expect::Line("(d1) rogue-backend: blkfront: rsp_prod 1000 ahead refused (ring error), nothing taken, 2 still in flight"),
            Expect::Line("(d1) rogue-backend: blkfront: disconnected cleanly"),
            Expect::Line("(d1) rogue-backend: netfront: unknown and repeated ids, oversized, zero-length and out-of-page rx refused (7 counted)"),
            Expect::Line("(d1) rogue-backend: netfront: rx rsp_prod 1000 ahead refused (ring error), nothing taken"),
            Expect::Line("(d1) rogue-backend: netfront: disconnected cleanly"),
            Expect::Line("(d1) rogue-backend: frontend: survived the rogue backend"),
            Expect::Line("(d2) rogue-backend: backend: every attack sent"),
            Expect::Line("(hv) d1 'frontend': shut down (poweroff)"),
            Expect::Line("(hv) d2 'rogue': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Line("audit: ok"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "dd-vtd",
        about: "q35 with an Intel IOMMU: domain 0 drives virtio-blk, NVMe and virtio-net behind VT-d",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_DD,
        modules: &[DRIVER_DD],
        smp: 1,
        mem_mib: 256,
        qemu_args: &DD_DEVICES_VTD,
        disks: DD_DISKS,
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(hv) iommu: VT-d"),
            Expect::Line("(hv) pci: 00:03.0 1af4:1042"),
            Expect::Line("(hv) pci: 00:04.0 1b36:0010"),
            Expect::Line("(hv) pci: 00:05.0 1af4:1041"),
            Expect::Line("(d0) dd: 00:03.0 virtio-blk: "),
            Expect::Line("(d0) dd: 00:04.0 nvme: "),
            Expect::Line("(d0) dd: 00:05.0 virtio-net: MAC 52:54:00:"),
            Expect::Line("(d0) dd: virtio-blk: wrote and read back 256 patterned sectors at 2048: all match"),
            Expect::Line("(d0) dd: nvme: wrote and read back 256 patterned sectors at 2048: all match"),
            Expect::Line("10.0.2.2 is at 52:55:0a:00:02:02"),
            Expect::Line("(d0) dd: device self-tests passed"),
            Expect::Absent("FAILED"),
            Expect::Absent("DMA fault"),
            Expect::Absent("(hv) PANIC"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
        ],
    },
    Scenario {
        name: "dd-amdvi",
        about: "q35 with an AMD IOMMU: domain 0 drives virtio-blk, NVMe and virtio-net behind AMD-Vi",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_DD,
        modules: &[DRIVER_DD],
        smp: 1,
        mem_mib: 256,
        qemu_args: &DD_DEVICES_AMDVI,
        disks: DD_DISKS,
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(hv) iommu: AMD-Vi"),
            Expect::Line("(hv) pci: 00:03.0 1af4:1042"),
            Expect::Line("(hv) pci: 00:04.0 1b36:0010"),
            Expect::Line("(hv) pci: 00:05.0 1af4:1041"),
            Expect::Line("(d0) dd: 00:03.0 virtio-blk: "),
            Expect::Line("(d0) dd: 00:04.0 nvme: "),
            Expect::Line("(d0) dd: 00:05.0 virtio-net: MAC 52:54:00:"),
            Expect::Line("(d0) dd: virtio-blk: wrote and read back 256 patterned sectors at 2048: all match"),
            Expect::Line("(d0) dd: nvme: wrote and read back 256 patterned sectors at 2048: all match"),
            Expect::Line("10.0.2.2 is at 52:55:0a:00:02:02"),
            Expect::Line("(d0) dd: device self-tests passed"),
            Expect::Absent("FAILED"),
            Expect::Absent("DMA fault"),
            Expect::Absent("(hv) PANIC"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
        ],
    },
    Scenario {
        name: "dd-no-iommu",
        about: "Devices but no IOMMU and no iommu=off: hv-core says so and assigns nothing; domain 0 still runs",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_DD,
        modules: &[DRIVER],
        smp: 1,
        mem_mib: 256,
        qemu_args: &DD_DEVICES_NO_IOMMU,
        disks: DD_DISKS,
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(hv) warning: iommu: no DMAR or IVRS table: no device is assigned"),
            Expect::Line("(hv) pci: 00:03.0 1af4:1042 class 01.00.00 owner -"),
            Expect::Line("(hv) pci: 00:04.0 1b36:0010 class 01.08.02 owner -"),
            Expect::Line("(hv) pci: 00:00.0 8086:29c0 class 06.00.00 owner hv"),
            Expect::Absent("owner d0"),
            Expect::Absent("(hv) PANIC"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
        ],
    },
    Scenario {
        name: "dd-iommu-off",
        about: "iommu=off given explicitly: devices are assigned without DMA protection, with a warning; domain 0 drives them with machine addresses",
        kind: Kind::Test,
        hv_cmdline: "loglvl=info audit=1 iommu=off",
        modules: &[DRIVER_DD],
        smp: 1,
        mem_mib: 256,
        qemu_args: &DD_DEVICES_NO_IOMMU,
        disks: DD_DISKS,
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(hv) warning: iommu: off (iommu=off): the driver domain's devices can DMA anywhere"),
            Expect::Line("(hv) pci: 00:03.0 1af4:1042 class 01.00.00 owner d0"),
            Expect::Line("(d0) dd: device self-tests passed"),
            Expect::Absent("(hv) PANIC"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
        ],
    },
    Scenario {
        name: "dd-grant-dma",
        about: "A guest grants domain 0 a frame; domain 0 places it in its IOMMU space, a disk DMAs into it, and the grant unmap removes it from the IOMMU space first",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE_DD,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=32M -- grant-dma=1",
            },
            Module {
                image: Image::Guest("grant-dma"),
                args: "name=granter mem=4M",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &DD_DEVICES_VTD,
        disks: DD_DISKS,
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d1) grant-dma: granted domain 0 frame"),
            Expect::Line("(d0) dd: grant-dma: domain 1's gref 0 mapped and placed at bus address"),
            Expect::Line("(d0) dd: grant-dma: DMA into the granted frame arrived"),
            Expect::Line("(d1) grant-dma: the device's data arrived in the granted frame"),
            Expect::Line("(hv) warning: iommu: DMA fault: 00:03.0 write "),
            Expect::Line("(d0) dd: grant-dma: all checks passed"),
            Expect::Line("(d1) grant-dma: grant ended; nothing reached the frame afterwards"),
            Expect::Line("(hv) d1 'granter': shut down (poweroff)"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "dd-bench",
        about: "Domain 0 measures its disks (sequential MiB/s, random 4 KiB IOPS at depth 1 and 32) and NIC (frames/s) behind VT-d and prints BENCH lines",
        kind: Kind::Bench,
        hv_cmdline: HV_CMDLINE_DD,
        modules: &[Module {
            image: Image::Guest("driver-domain"),
            args: "name=driver mem=32M -- bench=1",
        }],
        smp: 1,
        mem_mib: 256,
        qemu_args: &DD_DEVICES_VTD,
        disks: DD_DISKS,
        timeout_secs: 180,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("BENCH name=dd_virtio_blk_seq_read_mibs"),
            Expect::Line("BENCH name=dd_virtio_blk_rand4k_qd32_iops"),
            Expect::Line("BENCH name=dd_nvme_blk_seq_write_mibs"),
            Expect::Line("BENCH name=dd_nvme_blk_rand4k_qd1_iops"),
            Expect::Line("BENCH name=dd_net_pps"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "net-bench",
        about: "TCP throughput timed in the sending guest (smoltcp over netfront): guest->guest through the bridge and guest->host through the bridge, domain 0's virtio-net NIC and QEMU's user network to a host sink, with domain 0's raw NIC transmit rate measured first in the same boot",
        kind: Kind::Bench,
        hv_cmdline: HV_CMDLINE_DD,
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=32M -- bench=1 nic=virtio-net net=1:02:00:00:00:00:01 net=2:02:00:00:00:00:02",
            },
            Module {
                image: Image::Guest("nettest"),
                args: "name=server mem=16M -- role=server ip=10.0.2.16 conns=5",
            },
            Module {
                image: Image::Guest("nettest"),
                args: "name=client mem=16M -- role=bench ip=10.0.2.15 server=10.0.2.16 host=10.0.2.2:{host_port} bytes=262144 runs=5",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: NET_BENCH_NIC,
        disks: &[],
        timeout_secs: 600,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("BENCH name=dd_net_tx_mibs"),
            Expect::Line("(d0) netback: the bridge holds the NIC"),
            Expect::Count("(d1) nettest: server received 262144 bytes intact", 5),
            Expect::Line("BENCH name=guest_net_tcp_guest_to_guest_mibs"),
            Expect::Line("BENCH name=guest_net_tcp_guest_to_host_mibs"),
            Expect::Line("(d2) nettest: bench: guest->host / guest->guest = "),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Absent("crashed"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "dma-attack",
        about: "Domain 0 points a device's DMA at a frame it does not own: the IOMMU blocks and reports it; an unassigned device is invisible",
        kind: Kind::Test,
        // The NIC (00:05.0) is left out of domain 0's devices.
        hv_cmdline: "loglvl=info audit=1 iommu=on dom0_pci=00:03.0+00:04.0",
        modules: &[
            Module {
                image: Image::Guest("driver-domain"),
                args: "name=driver mem=32M -- dma-attack=1",
            },
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &DD_DEVICES_VTD,
        disks: DD_DISKS,
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(hv) pci: 00:05.0 1af4:1041"),
            // virtio-blk's read from disk is a DMA write into memory.
            Expect::Line("(hv) warning: iommu: DMA fault: 00:03.0 write "),
            Expect::Line("(d0) dd: dma-attack: every bus-0 slot not assigned to domain 0 is invisible"),
            Expect::Line("(d0) dd: dma-attack: target frame unchanged"),
            Expect::Line("(d0) dd: dma-attack: all checks passed"),
            Expect::Absent("(hv) PANIC"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
        ],
    },
    Scenario {
        name: "toolstack",
        about: "pvctl on the host drives the driver domain's toolstack over the management socket: 50 guests created from a config, listed, watched and destroyed with free memory back to the frame; a guest destroyed mid disk and net I/O; bad input refused with one line each; poweroff",
        kind: Kind::Test,
        hv_cmdline: HV_CMDLINE,
        modules: TOOLSTACK_MODULES,
        smp: 1,
        mem_mib: 512,
        qemu_args: TOOLSTACK_QEMU,
        disks: &[],
        timeout_secs: 900,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("toolstack: serving management protocol 1"),
            Expect::Line("toolstack: dropped a half-sent frame"),
            Expect::Line("(d0) toolstack: created d"),
            Expect::Line("ticker: got \"hello from the host\""),
            Expect::Line("ticker: io running"),
            Expect::Line("ticker: io ok after 30 rounds"),
            Expect::Line("toolstack: pvctl asked to power the machine off"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Absent("audit: FAILED"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
    Scenario {
        name: "toolstack-bench",
        about: "pvctl creates a minimal guest 10 times; the driver domain times create to first console line, split into toolstack and hypervisor time, and prints BENCH lines",
        kind: Kind::Bench,
        hv_cmdline: HV_CMDLINE,
        modules: TOOLSTACK_MODULES,
        smp: 1,
        mem_mib: 256,
        qemu_args: TOOLSTACK_QEMU,
        disks: &[],
        timeout_secs: 600,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("BENCH name=create_to_first_output_us"),
            Expect::Line("BENCH name=create_toolstack_us"),
            Expect::Line("BENCH name=create_hypervisor_us"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Absent("(hv) PANIC"),
        ],
    },
];

#[cfg(test)]
mod xsa_tests {
    use super::*;

    /// The `xsa-<n>` scenarios of the security regression suite (the
    /// xsa-suite guest's; `xsa-<n>-backend`/`-frontend` attack the split
    /// drivers with their own guests).
    fn xsa() -> impl Iterator<Item = &'static Scenario> {
        ALL.iter().filter(|s| {
            s.name
                .strip_prefix("xsa-")
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
    }

    #[test]
    fn every_split_driver_xsa_scenario_audits_and_names_its_class() {
        let split: Vec<&Scenario> = ALL
            .iter()
            .filter(|s| s.name.starts_with("xsa-") && !xsa().any(|x| x.name == s.name))
            .collect();
        assert!(split.len() >= 4);
        for s in split {
            let class = s.name.split('-').nth(1).unwrap_or("");
            assert!(
                ALL.iter().any(|x| x.name == format!("xsa-{class}")),
                "{}: no xsa-{class} beside it",
                s.name
            );
            assert!(s
                .expect
                .iter()
                .any(|e| matches!(e, Expect::Line("audit: ok"))));
            assert!(s
                .expect
                .iter()
                .any(|e| matches!(e, Expect::Absent("(hv) PANIC"))));
        }
    }

    #[test]
    fn every_xsa_scenario_requires_its_own_success_line_once() {
        assert!(xsa().count() >= 28);
        for s in xsa() {
            let success = format!("(d1) test result: {}: SUCCESS", s.name);
            let result = format!("(d1) test result: {}:", s.name);
            assert!(
                s.expect
                    .iter()
                    .any(|e| matches!(e, Expect::Line(l) if *l == success)),
                "{}: no SUCCESS line required",
                s.name
            );
            assert!(
                s.expect
                    .iter()
                    .any(|e| matches!(e, Expect::Count(l, 1) if *l == result)),
                "{}: the result line is not required exactly once",
                s.name
            );
            assert!(s
                .expect
                .iter()
                .any(|e| matches!(e, Expect::Absent("(hv) PANIC"))));
            assert!(s
                .expect
                .iter()
                .any(|e| matches!(e, Expect::Line("audit: ok"))));
            let test_arg = format!("-- test={}", s.name);
            assert!(
                s.modules[1].args.ends_with(&test_arg),
                "{}: module 2 does not run test {}",
                s.name,
                s.name
            );
        }
    }

    #[test]
    fn every_partner_reports_and_is_required_to_succeed() {
        for s in xsa() {
            for partner in &s.modules[2..] {
                let report = partner
                    .args
                    .split_whitespace()
                    .find_map(|a| a.strip_prefix("report="))
                    .unwrap_or_else(|| panic!("{}: a partner without report=", s.name));
                assert!(
                    report.starts_with(s.name),
                    "{}: partner report {report}",
                    s.name
                );
                let success = format!("(d2) test result: {report}: SUCCESS");
                assert!(
                    s.expect
                        .iter()
                        .any(|e| matches!(e, Expect::Line(l) if *l == success)),
                    "{}: partner's SUCCESS not required",
                    s.name
                );
            }
        }
    }

    #[test]
    fn a_failed_or_missing_result_line_fails_the_judge() {
        let s = ALL.iter().find(|s| s.name == "xsa-148").expect("xsa-148");
        let good = "(d1) test result: xsa-148: SUCCESS\n\
                    (hv) d1 'xsa-148': shut down (poweroff)\n\
                    (hv) d0 'driver': shut down (poweroff)\n\
                    (hv) audit: ok (1 frames checked)\n";
        assert!(crate::judge(s, good, Some(POWEROFF)).passed);
        let failed = good.replace("SUCCESS", "FAILURE (an attack worked)");
        assert!(!crate::judge(s, &failed, Some(POWEROFF)).passed);
        let skipped = good.replace("SUCCESS", "SKIP (no reason)");
        assert!(!crate::judge(s, &skipped, Some(POWEROFF)).passed);
        let twice = format!("{good}(d1) test result: xsa-148: SUCCESS\n");
        assert!(!crate::judge(s, &twice, Some(POWEROFF)).passed);
        let missing = good.replace("(d1) test result: xsa-148: SUCCESS\n", "");
        assert!(!crate::judge(s, &missing, Some(POWEROFF)).passed);
    }
}
