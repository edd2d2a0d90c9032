//! `grant-attacker`: tries to misuse the grants a victim gives it (SPEC.md
//! §8b, GNT-2 .. GNT-4) and its event channel (§8), and checks that each
//! attempt is refused with the error SPEC names, printing
//! `grant-attacker: <attack>: refused with <ERRNO>` (or `... faulted as
//! expected` for a write through a read-only mapping). Panics, crashing the
//! domain, on an attempt that succeeds or fails differently.
//!
//! Its victim is `pingpong role=victim` (see that guest for the mailbox
//! protocol): reference 0 is a read-only page, reference 1 a read-write page
//! used as mailbox, port 1 the victim's unbound port. Command line:
//! `victim=<domid>`.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec;

use hypercall_abi::grant::{
    GnttabCopy, GnttabCopyPtr, GnttabMapGrantRef, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF,
    GNTTAB_BATCH_MAX,
};
use hypercall_abi::start_info::StartInfo;
use hypercall_abi::{DomId, Errno};
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::grants::{self, map_grant_ref, unmap_grant_ref, GrantRef};
use pv_guest_kit::hypercall::{self, sched_yield};
use pv_guest_kit::mm::{self, probe, Frame};
use pv_guest_kit::println;
use pv_guest_kit::ring::SharedPage;

pv_guest_kit::entry!(kmain);

/// The victim's read-only grant and the pattern of its every word.
const RO_REF: GrantRef = 0;
const RO_PATTERN: u64 = 0x5a5a_0000_0000_a5a5;
/// The victim's read-write grant (the mailbox).
const RW_REF: GrantRef = 1;
/// The victim's port for us.
const VICTIM_PORT: Port = 1;
/// Mailbox offsets: our stage, the victim's ack.
const STAGE: usize = 0;
const ACK: usize = 8;
/// Events of the flood.
const FLOOD: u32 = 100_000;
/// A hypervisor address (L4 slot 256).
const HV_ADDR: u64 = 0xffff_8000_0000_0000;

/// Counts the refused attacks.
struct Attacks {
    refused: u32,
}

impl Attacks {
    /// Checks that `attack` failed with `want`, and reports it.
    fn expect<T>(&mut self, attack: &str, got: Result<T, Errno>, want: Errno) {
        match got {
            Err(errno) if errno == want => {
                self.refused += 1;
                println!("grant-attacker: {attack}: refused with {errno}");
            }
            Err(errno) => panic!("grant-attacker: {attack}: expected {want}, got {errno}"),
            Ok(_) => panic!("grant-attacker: {attack}: expected {want}, but it was ACCEPTED"),
        }
    }
}

/// Unwraps a step that must work.
fn must<T, E: core::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("grant-attacker: {what}: {err}"),
    }
}

/// One copy operation, batch of one; the op's status as the result.
fn copy1(op: GnttabCopy) -> Result<(), Errno> {
    let mut op = op;
    // SAFETY: the only own-frame destinations used are the attacker's scratch
    // frame (held as a `Frame`, no references) and its L4, which SPEC says
    // must be refused; should it wrongly be accepted the check panics first.
    unsafe { grants::grant_copy(core::slice::from_mut(&mut op))? };
    Errno::check(i64::from(op.status)).map(drop)
}

/// A copy side naming `(dom, gref)`.
fn gref_ptr(dom: DomId, gref: GrantRef, offset: u32) -> GnttabCopyPtr {
    GnttabCopyPtr {
        ref_or_mfn: u64::from(gref),
        domid: dom,
        offset,
    }
}

/// A copy side naming one of our frames.
fn mfn_ptr(mfn: u64, offset: u32) -> GnttabCopyPtr {
    GnttabCopyPtr {
        ref_or_mfn: mfn,
        domid: 0,
        offset,
    }
}

fn wake(_port: Port) {}

fn kmain(si: &'static StartInfo) {
    let args = Args::new(si.cmdline_str());
    let victim = match args.get_u64("victim") {
        Some(domid) => domid as DomId,
        None => panic!("grant-attacker: victim=<domid> missing"),
    };
    let mut attacks = Attacks { refused: 0 };

    // Connect: the victim allocated port 1 for us and granted refs 0 and 1.
    let port = retry("binding to the victim", &[Errno::EINVAL], || {
        events::bind_interdomain(victim, VICTIM_PORT)
    });
    events::set_handler(port, wake);
    let mut va = Addresses {
        range: must(mm::reserve_va(PAGES), "reserving address space"),
        next: 0,
    };
    let mailbox_va = va.fresh();
    let mailbox = retry(
        "mapping the mailbox",
        &[Errno::EPERM, Errno::ENOENT],
        || grants::map(victim, RW_REF, mailbox_va, false),
    );
    let mailbox = SharedPage::from_mapping(mailbox);
    let scratch = must(Frame::alloc_zeroed(), "scratch frame");
    println!("grant-attacker: connected to d{victim} (port {port}), mailbox mapped");

    // Mapping what was never granted, or not to us.
    let scratch_va = va.fresh();
    attacks.expect(
        "mapping a reference never granted",
        map_grant_ref(victim, 2, scratch_va, true),
        Errno::EPERM,
    );
    attacks.expect(
        "mapping an out-of-range reference",
        map_grant_ref(victim, 512, scratch_va, true),
        Errno::EINVAL,
    );
    attacks.expect(
        "mapping a grant of a domain without a grant table",
        map_grant_ref(0, 0, scratch_va, true),
        Errno::ENOENT,
    );

    // Write through a read-only grant: the map works, the write faults.
    let handle = must(
        map_grant_ref(victim, RO_REF, scratch_va, true),
        "mapping the read-only grant read-only",
    );
    let seen = must(probe::read_u64(scratch_va), "reading the read-only grant");
    assert_eq!(seen, RO_PATTERN, "grant-attacker: wrong read-only page");
    // SAFETY: the page is a grant mapping no Rust reference covers; the
    // write must fault (a read-only mapping), and if it did not, the victim's
    // page check would report it.
    match unsafe { probe::write_u64(scratch_va, 0xbad) } {
        Err(cr2) => {
            attacks.refused += 1;
            println!(
                "grant-attacker: writing through a read-only grant mapping: faulted as expected (#PF at {cr2:#x})"
            );
        }
        Ok(()) => panic!("grant-attacker: writing through a read-only grant mapping was ACCEPTED"),
    }
    must(unmap_grant_ref(handle), "unmapping the read-only grant");
    // GNT-3: the unmap clears the entry (even though the read above set its
    // accessed bit), so the page must be gone.
    match probe::read_u64(scratch_va) {
        Err(_) => {
            println!("grant-attacker: reading through an unmapped grant: faulted as expected")
        }
        Ok(_) => panic!("grant-attacker: the page is still readable after its grant was unmapped"),
    }

    let scratch_va = va.fresh();
    attacks.expect(
        "mapping a read-only grant writable",
        map_grant_ref(victim, RO_REF, scratch_va, false),
        Errno::EACCES,
    );
    let handle = must(
        map_grant_ref(victim, RO_REF, scratch_va, true),
        "mapping the read-only grant",
    );
    must(unmap_grant_ref(handle), "unmapping");
    attacks.expect(
        "unmapping a grant twice",
        unmap_grant_ref(handle),
        Errno::EINVAL,
    );
    attacks.expect(
        "mapping a grant at a hypervisor address",
        map_grant_ref(victim, RO_REF, HV_ADDR, true),
        Errno::EINVAL,
    );
    attacks.expect(
        "mapping a grant over a page in use",
        map_grant_ref(victim, RO_REF, scratch.va(), true),
        Errno::EBUSY,
    );
    let mut batch = vec![
        GnttabMapGrantRef {
            host_addr: va.fresh(),
            gref: RO_REF,
            dom: victim,
            ..GnttabMapGrantRef::default()
        };
        GNTTAB_BATCH_MAX as usize + 1
    ];
    attacks.expect(
        "a batch of 513 map operations",
        hypercall::grant_map(&mut batch),
        Errno::E2BIG,
    );

    // Copies.
    attacks.expect(
        "grant copy into a read-only grant",
        copy1(GnttabCopy {
            source: mfn_ptr(scratch.mfn(), 0),
            dest: gref_ptr(victim, RO_REF, 0),
            len: 8,
            flags: GNTCOPY_DEST_GREF,
            ..GnttabCopy::default()
        }),
        Errno::EACCES,
    );
    attacks.expect(
        "grant copy of 4097 bytes",
        copy1(GnttabCopy {
            source: gref_ptr(victim, RO_REF, 0),
            dest: mfn_ptr(scratch.mfn(), 0),
            len: 4097,
            flags: GNTCOPY_SOURCE_GREF,
            ..GnttabCopy::default()
        }),
        Errno::EINVAL,
    );
    attacks.expect(
        "grant copy across the end of a page",
        copy1(GnttabCopy {
            source: gref_ptr(victim, RO_REF, 0),
            dest: mfn_ptr(scratch.mfn(), 4095),
            len: 2,
            flags: GNTCOPY_SOURCE_GREF,
            ..GnttabCopy::default()
        }),
        Errno::EINVAL,
    );
    attacks.expect(
        "grant copy from a reference never granted",
        copy1(GnttabCopy {
            source: gref_ptr(victim, 2, 0),
            dest: mfn_ptr(scratch.mfn(), 0),
            len: 8,
            flags: GNTCOPY_SOURCE_GREF,
            ..GnttabCopy::default()
        }),
        Errno::EPERM,
    );
    attacks.expect(
        "grant copy into its own page table",
        copy1(GnttabCopy {
            source: gref_ptr(victim, RO_REF, 0),
            dest: mfn_ptr(mm::layout().boot_l4_mfn, 0),
            len: 8,
            flags: GNTCOPY_SOURCE_GREF,
            ..GnttabCopy::default()
        }),
        Errno::EBUSY,
    );

    // Ending a grant we map: hold ref 0 while the victim tries.
    let scratch_va = va.fresh();
    let held = must(
        map_grant_ref(victim, RO_REF, scratch_va, true),
        "mapping the read-only grant",
    );
    stage(&mailbox, port, 1);
    must(unmap_grant_ref(held), "unmapping the read-only grant");
    stage(&mailbox, port, 2);

    // Event flood.
    for _ in 0..FLOOD {
        must(events::notify(port), "sending an event");
    }
    println!("grant-attacker: sent {FLOOD} events to the victim");
    stage(&mailbox, port, 3);

    // Leave: unmap the mailbox (the victim then ends its grant). The port
    // closes when this domain ends (EVT-4), which tells the victim we are
    // gone.
    let mapping = mailbox
        .into_mapping()
        .unwrap_or_else(|| unreachable!("the mailbox is a grant mapping"));
    if let Err((_, err)) = mapping.unmap() {
        panic!("grant-attacker: unmapping the mailbox: {err}");
    }
    drop(scratch);
    println!("grant-attacker: all {} attacks refused", attacks.refused);
}

/// Pages of address space for grant maps.
const PAGES: u64 = 8;

/// Hands out each reserved page once.
struct Addresses {
    range: mm::VaRange,
    next: u64,
}

impl Addresses {
    /// A page never mapped before.
    fn fresh(&mut self) -> u64 {
        let va = self.range.page(self.next);
        self.next += 1;
        va
    }
}

/// Announces `n` in the mailbox, wakes the victim and waits for its ack.
fn stage(mailbox: &SharedPage, port: Port, n: u64) {
    mailbox.store_u64(STAGE, n);
    must(events::notify(port), "notifying the victim");
    events::wait_until(|| mailbox.load_u64(ACK) >= n);
}

/// Tries `attempt` until it stops failing with one of `transient`.
fn retry<T>(what: &str, transient: &[Errno], mut attempt: impl FnMut() -> Result<T, Errno>) -> T {
    for _ in 0..100_000 {
        match attempt() {
            Ok(value) => return value,
            Err(errno) if transient.contains(&errno) => sched_yield(),
            Err(errno) => panic!("grant-attacker: {what}: {errno}"),
        }
    }
    panic!("grant-attacker: {what}: still failing")
}
