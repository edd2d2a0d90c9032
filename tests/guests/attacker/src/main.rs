//! `attacker`: tries to break the PV MMU's invariants (SPEC.md §7, MM-1b,
//! MM-2) and checks that each attempt is refused with the error SPEC names,
//! printing `attacker: <attack>: refused with <ERRNO>`. Panics (crashing the
//! domain) on an attempt that succeeds or fails with another error.
//!
//! Its scenario boots a `hello` victim beside it, whose frames it tries to map
//! and which must finish undisturbed.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;

use hypercall_abi::hypercall::VERSION_ABI;
use hypercall_abi::layout::M2P_VIRT_START;
use hypercall_abi::mm::{
    pte, MmuUpdate, MmuextOp, MMUEXT_NEW_BASEPTR, MMUEXT_NEW_USER_BASEPTR, MMUEXT_PIN_L1_TABLE,
    MMUEXT_PIN_L4_TABLE, MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_UNPIN_TABLE, MMU_BATCH_MAX,
    MMU_MACHPHYS_UPDATE, UVMF_INVLPG,
};
use hypercall_abi::multicall::MulticallEntry;
use hypercall_abi::start_info::StartInfo;
use hypercall_abi::{Errno, Hypercall, PAGE_SIZE};
use pv_guest_kit::hypercall::{self, BatchError};
use pv_guest_kit::mm::pagetable::{entry_maddr, entry_mfn, table_index};
use pv_guest_kit::mm::{self, probe, AddressSpace, Frame, MmError};
use pv_guest_kit::println;

pv_guest_kit::entry!(kmain);

/// Scratch region (L4 slot 64) whose tables the attacks write into.
const SCRATCH: u64 = 0x0000_2000_0000_0000;
/// A region with no tables at all (L4 slot 96).
const UNMAPPED: u64 = 0x0000_3000_0000_0000;
/// A hypervisor frame: hv-core's image starts at 1 MiB.
const HV_MFN: u64 = 0x100;
/// First L1 index of the partial batch.
const BATCH_AT: usize = 10;

/// Counts the refused attacks.
struct Attacks {
    refused: u32,
}

impl Attacks {
    /// Checks that `attack` failed with `want`, and reports it.
    fn expect(&mut self, attack: &str, got: Result<(), Errno>, want: Errno) {
        match got {
            Err(errno) if errno == want => {
                self.refused += 1;
                println!("attacker: {attack}: refused with {errno}");
            }
            Err(errno) => panic!("attacker: {attack}: expected {want}, got {errno}"),
            Ok(()) => panic!("attacker: {attack}: expected {want}, but it was ACCEPTED"),
        }
    }
}

/// One raw `mmu_update` of the attacker's choosing.
fn update(reqs: &[MmuUpdate]) -> Result<(), BatchError> {
    // SAFETY: every request targets the scratch region's tables, a page table
    // of this domain in a slot nothing uses, or is one SPEC says must be
    // refused; should the hypervisor wrongly accept one, the attack's check
    // panics before anything relies on the changed mapping.
    unsafe { hypercall::mmu_update(reqs) }
}

/// One raw `mmu_update` request, error only.
fn update1(ptr: u64, val: u64) -> Result<(), Errno> {
    update(&[MmuUpdate { ptr, val }]).map_err(|e| e.errno)
}

/// One raw `mmuext_op`, error only.
fn ext1(cmd: u32, arg1: u64) -> Result<(), Errno> {
    let op = MmuextOp {
        cmd,
        pad: 0,
        arg1,
        arg2: 0,
    };
    ext(&[op])
}

/// Raw `mmuext_op`s, error only.
fn ext(ops: &[MmuextOp]) -> Result<(), Errno> {
    // SAFETY: as in `update`: the operations target tables the attacker
    // built or are expected to be refused.
    unsafe { hypercall::mmuext_op(ops) }.map_err(|e| e.errno)
}

/// Unwraps a kit result or panics naming the step.
fn or_die<T>(result: Result<T, MmError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("attacker: {what}: {err}"),
    }
}

fn kmain(si: &'static StartInfo) {
    let layout = mm::layout();
    let free_at_start = mm::free_frames();
    let mut attacks = Attacks { refused: 0 };
    let mut kernel = AddressSpace::kernel();
    let l4 = layout.boot_l4_mfn;
    let l4_entry = |slot: usize| entry_maddr(l4, slot);

    // Scratch tables: the L1 entry of SCRATCH and the tables above it.
    let l1e = or_die(kernel.l1_entry(SCRATCH), "scratch tables");
    let l1 = l1e >> 12;
    let l3 = entry_mfn(read_machine(l4_entry(table_index(SCRATCH, 4))));
    let l2 = entry_mfn(read_machine(
        (l3 << 12) | (table_index(SCRATCH, 3) as u64 * 8),
    ));
    let frames: Vec<Frame> = (0..8u64)
        .map(|i| {
            let mut frame = or_die(Frame::alloc(), "frame");
            frame.write_u64(0, 0xa77a_c000 + i);
            frame
        })
        .collect();
    let boot_l1_pfn = layout.pt_first_pfn + layout.nr_pt_frames - 1;
    let boot_l1_mfn = layout.mfn(boot_l1_pfn);

    // (1) A writable mapping of one of its own page tables.
    attacks.expect(
        "writable mapping of own page-table frame",
        update1(l1e, (boot_l1_mfn << 12) | pte::P | pte::RW),
        Errno::EBUSY,
    );
    attacks.expect(
        "pinning an L1 that maps a page table writable",
        pin_l1_with(|frame| frame.write_u64(0, (boot_l1_mfn << 12) | pte::P | pte::RW)),
        Errno::EBUSY,
    );

    // (2) Another domain's frame.
    let foreign = find_foreign_mfn(si);
    println!(
        "attacker: found mfn {foreign:#x} owned by another domain (M2P says pfn {:#x})",
        mm::m2p(foreign).unwrap_or(u64::MAX)
    );
    attacks.expect(
        "mapping another domain's frame",
        update1(l1e, (foreign << 12) | pte::P),
        Errno::EPERM,
    );
    attacks.expect(
        "M2P update of another domain's frame",
        update1((foreign << 12) | MMU_MACHPHYS_UPDATE, 0),
        Errno::EPERM,
    );

    // (3) Hypervisor frames and slots.
    attacks.expect(
        "mapping a hypervisor frame",
        update1(l1e, (HV_MFN << 12) | pte::P),
        Errno::EPERM,
    );
    for slot in [256, 511] {
        let current = read_machine(l4_entry(slot));
        let name = if slot == 256 {
            "writing hypervisor L4 slot 256"
        } else {
            "writing hypervisor L4 slot 511"
        };
        attacks.expect(name, update1(l4_entry(slot), current), Errno::EPERM);
    }

    // (4) Pinning an L1 with a bad entry.
    let own = frames[0].mfn();
    attacks.expect(
        "pinning an L1 with a global entry",
        pin_l1_with(|frame| frame.write_u64(3, (own << 12) | pte::P | pte::G)),
        Errno::EINVAL,
    );
    attacks.expect(
        "pinning an L1 mapping a hypervisor frame",
        pin_l1_with(|frame| frame.write_u64(7, (HV_MFN << 12) | pte::P)),
        Errno::EPERM,
    );

    // (5) Linear page tables.
    attacks.expect(
        "self-referencing L4 (slot 300)",
        update1(l4_entry(300), (l4 << 12) | pte::P | pte::RW),
        Errno::EBUSY,
    );
    attacks.expect(
        "L3 pointing at itself",
        update1(entry_maddr(l3, 5), (l3 << 12) | pte::P),
        Errno::EBUSY,
    );
    attacks.expect(
        "L2 entry pointing at an L1's parent L3",
        update1(entry_maddr(l2, 9), (l3 << 12) | pte::P),
        Errno::EBUSY,
    );

    // (6) Base pointers.
    attacks.expect(
        "unpinning the L4 in use",
        ext1(MMUEXT_UNPIN_TABLE, l4),
        Errno::EBUSY,
    );
    attacks.expect(
        "pinning the pinned L4 again",
        ext1(MMUEXT_PIN_L4_TABLE, l4),
        Errno::EINVAL,
    );
    attacks.expect(
        "an L1 as the new base pointer",
        ext1(MMUEXT_NEW_BASEPTR, l1),
        Errno::EBUSY,
    );
    attacks.expect(
        "a writable frame as the user base pointer",
        ext1(MMUEXT_NEW_USER_BASEPTR, frames[7].mfn()),
        Errno::EBUSY,
    );

    // (7) Malformed batches and requests.
    partial_batch(&mut attacks, l1e, &frames, &kernel);
    attacks.expect(
        "superpage (PS) in an L2 entry",
        update1(entry_maddr(l2, 1), (own << 12) | pte::P | pte::PS_OR_PAT),
        Errno::EINVAL,
    );
    attacks.expect(
        "mmu_update with a misaligned ptr",
        update1(l1e + 4, (own << 12) | pte::P),
        Errno::EINVAL,
    );
    attacks.expect(
        "mmu_update with an unknown command",
        update1(l1e | 2, (own << 12) | pte::P),
        Errno::EINVAL,
    );
    let too_many = vec![MmuUpdate { ptr: l1e, val: 0 }; MMU_BATCH_MAX as usize + 1];
    attacks.expect(
        "mmu_update with count 4097",
        update(&too_many).map_err(|e| e.errno),
        Errno::E2BIG,
    );
    drop(too_many);
    attacks.expect(
        "mmu_update with requests in hypervisor space",
        raw(Hypercall::MmuUpdate, [M2P_VIRT_START, 1, 0, 0, 0]),
        Errno::EFAULT,
    );
    attacks.expect(
        "mmuext_op with a non-zero pad",
        ext(&[MmuextOp {
            cmd: MMUEXT_TLB_FLUSH_LOCAL,
            pad: 1,
            arg1: 0,
            arg2: 0,
        }]),
        Errno::EINVAL,
    );
    attacks.expect(
        "update_va_mapping without an L2",
        // SAFETY: nothing is mapped around UNMAPPED; the call must fail.
        unsafe { hypercall::update_va_mapping(UNMAPPED, (own << 12) | pte::P, UVMF_INVLPG) },
        Errno::EINVAL,
    );
    multicalls(&mut attacks);

    // Clean up: the scratch tables, then the frames.
    or_die(kernel.destroy(), "free the scratch tables");
    drop(frames);
    assert_eq!(mm::free_frames(), free_at_start, "attacker: frames leaked");
    println!("attacker: all {} attacks refused", attacks.refused);
}

/// Reads the entry at machine address `maddr` (one of this domain's tables).
fn read_machine(maddr: u64) -> u64 {
    match mm::mfn_to_pfn(maddr >> 12) {
        Some(pfn) => mm::physmap::read_va(mm::layout().pfn_va(pfn) + (maddr & 0xff8)),
        None => panic!("attacker: {maddr:#x} is not in an own frame"),
    }
}

/// A raw hypercall, as a `Result`.
fn raw(call: Hypercall, args: [u64; 5]) -> Result<(), Errno> {
    // SAFETY: the pointer arguments point into hypervisor space, which the
    // hypervisor must refuse to read or write (HC-5).
    let ret = unsafe { hypercall::hypercall_raw(call.number(), args) };
    Errno::check(ret).map(drop)
}

/// Builds an L1 in a fresh frame with `fill`, makes it read-only, tries to
/// pin it, and frees the frame again (the pin must fail for that to work).
fn pin_l1_with(fill: impl FnOnce(&mut Frame)) -> Result<(), Errno> {
    let mut frame = or_die(Frame::alloc_zeroed(), "frame for an L1");
    fill(&mut frame);
    let table = match frame.into_readonly() {
        Ok(table) => table,
        Err((_, err)) => panic!("attacker: making a frame read-only: {err}"),
    };
    let result = ext1(MMUEXT_PIN_L1_TABLE, table.mfn());
    if result.is_ok() {
        return result;
    }
    match table.into_writable() {
        Ok(frame) => drop(frame),
        Err((_, err)) => panic!("attacker: frame still typed after a failed pin: {err}"),
    }
    result
}

/// An mfn that M2P says belongs to a guest and that is not ours.
fn find_foreign_mfn(si: &StartInfo) -> u64 {
    (0..si.nr_m2p_entries)
        .find(|&mfn| mm::m2p(mfn).is_some_and(|pfn| pfn != u64::MAX) && !mm::owns_mfn(mfn))
        .unwrap_or_else(|| panic!("attacker: no foreign guest frame in the M2P"))
}

/// (7) Eight requests with a bad one at index 4: the call fails with its
/// error, `done == 4`, and requests 0..3 stay applied.
fn partial_batch(attacks: &mut Attacks, l1e: u64, frames: &[Frame], kernel: &AddressSpace) {
    let reqs: Vec<MmuUpdate> = (0..8usize)
        .map(|i| MmuUpdate {
            ptr: l1e + ((BATCH_AT + i) as u64) * 8,
            val: if i == 4 {
                (HV_MFN << 12) | pte::P
            } else {
                (frames[i].mfn() << 12) | pte::P
            },
        })
        .collect();
    let result = update(&reqs);
    let done = result.err().map_or(8, |e| e.done);
    assert_eq!(done, 4, "attacker: partial batch: done = {done}");
    for (i, frame) in frames.iter().enumerate() {
        let va = SCRATCH + ((BATCH_AT + i) as u64) * PAGE_SIZE;
        let mapped = kernel
            .translate(va)
            .unwrap_or_else(|err| panic!("attacker: translate: {err}"));
        let read = probe::read_u64(va);
        if i < 4 {
            assert!(
                mapped.is_some_and(|t| t.mfn == frame.mfn()),
                "attacker: partial batch: entry {i} not applied"
            );
            assert_eq!(
                read,
                Ok(0xa77a_c000 + i as u64),
                "attacker: entry {i} content"
            );
        } else {
            assert!(
                mapped.is_none(),
                "attacker: partial batch: entry {i} applied"
            );
            assert_eq!(read, Err(va), "attacker: entry {i} readable");
        }
    }
    attacks.expect(
        "batch of 8 with a bad entry at index 4",
        result.map_err(|e| e.errno),
        Errno::EPERM,
    );
    println!("attacker: partial batch stopped with done = 4, entries 0..3 applied, 4..7 not");
}

/// `multicall` refuses to batch `iret` and `multicall`, without stopping the
/// entries around them.
fn multicalls(attacks: &mut Attacks) {
    let version = MulticallEntry {
        op: u64::from(Hypercall::Version.number()),
        result: 0,
        args: [VERSION_ABI, 0, 0, 0, 0, 0],
    };
    for (name, op) in [
        ("multicall with an iret entry", Hypercall::Iret),
        ("multicall with a nested multicall", Hypercall::Multicall),
    ] {
        let mut calls = [
            version,
            MulticallEntry {
                op: u64::from(op.number()),
                result: 0,
                args: [0; 6],
            },
            version,
        ];
        // SAFETY: `version` has no effect; `iret` and `multicall` must be
        // refused without running (HC-20).
        let ret = unsafe { hypercall::multicall(&mut calls) };
        assert_eq!(ret, Ok(()), "attacker: {name}: the call itself");
        let expected_version = hypercall::version(VERSION_ABI).ok();
        assert_eq!(
            Some(calls[0].result),
            expected_version,
            "attacker: {name}: entry 0"
        );
        assert_eq!(
            Some(calls[2].result),
            expected_version,
            "attacker: {name}: entry 2"
        );
        attacks.expect(
            name,
            Errno::check(calls[1].result as i64).map(drop),
            Errno::EINVAL,
        );
    }
}
