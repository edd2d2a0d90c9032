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

use crate::elf_mutations::{entry_outside, not_elf, overlapping_segments, truncate};
use crate::{Disk, Expect, Image, Kind, Module, Scenario};

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
    },
    Disk {
        file_name: "nvme.img",
        size_mib: 8,
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

/// Every scenario, in the order `cargo xtask test` runs them.
pub(crate) static ALL: &[Scenario] = &[
    Scenario {
        name: "demo",
        about: "Two hello guests print a greeting beside the driver domain, then all power off",
        kind: Kind::Demo,
        hv_cmdline: HV_CMDLINE,
        modules: &[
            DRIVER,
            hello("name=hello-1 mem=8M -- greeting=hello-1"),
            hello("name=hello-2 mem=8M -- greeting=hello-2"),
        ],
        smp: 1,
        mem_mib: 256,
        qemu_args: &[],
        disks: &[],
        timeout_secs: 60,
        exit_status: POWEROFF,
        expect: &[
            Expect::Line("(d1) Hello from hello-1"),
            Expect::Line("(d2) Hello from hello-2"),
            Expect::Line("(hv) d1 'hello-1': shut down (poweroff)"),
            Expect::Line("(hv) d2 'hello-2': shut down (poweroff)"),
            Expect::Line("(hv) d0 'driver': shut down (poweroff)"),
            Expect::Absent("crashed"),
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
];
