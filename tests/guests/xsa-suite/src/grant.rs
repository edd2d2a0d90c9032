//! Grant-table regressions (SPEC §8b, GNT-1 .. GNT-5), each against a
//! `granter` partner (d2, see [`crate::partner`]): two-step unmaps (XSA-224),
//! copy batches (226), odd mapping addresses and flags (227), use counts
//! versus references (230/236), read-only mappings kept read-only (234),
//! error results that are always negative (316) and references dropped
//! once per mapping (380).
//!
//! The partner checks at the end that every grant ends at once (nothing
//! left in use) and its read-only page is intact; the audit (MM-8) checks
//! every reference count.

use alloc::vec::Vec;

use hypercall_abi::grant::{
    GnttabCopy, GnttabCopyPtr, GnttabMapGrantRef, GnttabUnmapGrantRef, GNTCOPY_SOURCE_GREF,
    GNTMAP_READONLY, GNTTABOP_COPY, GNTTABOP_MAP_GRANT_REF, GNTTABOP_UNMAP_GRANT_REF,
};
use hypercall_abi::mm::{pte, UVMF_INVLPG};
use hypercall_abi::{DomId, Errno, Hypercall};
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::grants::{self, map_grant_ref, unmap_grant_ref, GrantHandle, GrantRef};
use pv_guest_kit::hypercall::{self, sched_yield};
use pv_guest_kit::mm::{self, probe, AddressSpace, Frame, VaRange};
use pv_guest_kit::ring::SharedPage;
use pv_guest_kit::testing::TestReport;

use crate::attack::{call, read_machine, update1};
use crate::mmu::setup;
use crate::partner::{
    CMD_END_ACCESS, DATA_PATTERN, DATA_REF, MAILBOX_REF, PARTNER_PORT, REPLY, REPLY_SEQ, REQ_ARG,
    REQ_CMD, REQ_SEQ, RO_PATTERN, RO_REF,
};

/// The test's side of a granter partner.
pub struct Granter {
    pub dom: DomId,
    pub port: Port,
    mailbox: SharedPage,
    seq: u64,
    va: VaRange,
    next_va: u64,
}

fn wake(_port: Port) {}

impl Granter {
    /// Connects to the granter (domain `partner=`, default 2).
    pub fn connect(r: &mut TestReport, args: &Args<'_>) -> Option<Granter> {
        let dom = args.get_u64("partner").unwrap_or(2) as DomId;
        let port = retry(r, "binding to the granter", &[Errno::EINVAL], || {
            events::bind_interdomain(dom, PARTNER_PORT)
        })?;
        events::set_handler(port, wake);
        let mut va = r.setup("address space for mappings", mm::reserve_va(64))?;
        let mailbox_va = va.page(0);
        let _ = &mut va;
        let mailbox = retry(
            r,
            "mapping the mailbox",
            &[Errno::EPERM, Errno::ENOENT],
            || grants::map(dom, MAILBOX_REF, mailbox_va, false),
        )?;
        Some(Granter {
            dom,
            port,
            mailbox: SharedPage::from_mapping(mailbox),
            seq: 0,
            va,
            next_va: 1,
        })
    }

    /// A page of address space never used before.
    pub fn fresh_va(&mut self) -> u64 {
        let va = self.va.page(self.next_va);
        self.next_va += 1;
        va
    }

    /// Asks the granter to end grant `gref`: true if it ended.
    pub fn end_access(&mut self, gref: GrantRef) -> bool {
        self.seq += 1;
        self.mailbox.store_u64(REQ_CMD, CMD_END_ACCESS);
        self.mailbox.store_u64(REQ_ARG, u64::from(gref));
        self.mailbox.store_u64(REQ_SEQ, self.seq);
        let _ = events::notify(self.port);
        let seq = self.seq;
        events::wait_until(|| self.mailbox.load_u64(REPLY_SEQ) == seq);
        self.mailbox.load_u64(REPLY) == 0
    }

    /// Unmaps the mailbox; the granter sees this domain go when it ends.
    pub fn leave(self) {
        if let Some(mapping) = self.mailbox.into_mapping() {
            let _ = mapping.unmap();
        }
    }
}

/// Tries `attempt` until it stops failing with one of `transient`.
fn retry<T>(
    r: &mut TestReport,
    what: &str,
    transient: &[Errno],
    mut attempt: impl FnMut() -> Result<T, Errno>,
) -> Option<T> {
    for _ in 0..100_000 {
        match attempt() {
            Ok(value) => return Some(value),
            Err(errno) if transient.contains(&errno) => sched_yield(),
            Err(errno) => {
                r.error(format_args!("{what}: {errno}"));
                return None;
            }
        }
    }
    r.error(format_args!("{what}: still failing"));
    None
}

/// One raw map operation: its status and handle.
fn map_raw(dom: DomId, gref: GrantRef, host_addr: u64, flags: u32) -> Result<u32, Errno> {
    let mut op = GnttabMapGrantRef {
        host_addr,
        flags,
        gref,
        dom,
        ..GnttabMapGrantRef::default()
    };
    hypercall::grant_map(core::slice::from_mut(&mut op))?;
    Errno::check(i64::from(op.status)).map(|_| op.handle)
}

/// One raw unmap operation: its status.
fn unmap_raw(host_addr: u64, handle: u32) -> Result<(), Errno> {
    let mut op = GnttabUnmapGrantRef {
        host_addr,
        handle,
        status: 0,
    };
    // SAFETY: unmaps only grant mappings of this test (or must be refused).
    unsafe { hypercall::grant_unmap(core::slice::from_mut(&mut op)) }?;
    Errno::check(i64::from(op.status)).map(drop)
}

/// Reads word 0 of a mapping.
fn peek(va: u64) -> Option<u64> {
    probe::read_u64(va).ok()
}

/// XSA-224: a grant mapped twice and unmapped in steps — a second unmap of
/// one handle, an unmap naming the other mapping's address — drops exactly
/// one reference per mapping; unknown map flags (Xen's device/host/PTE
/// variants) are refused.
pub fn xsa_224(r: &mut TestReport, args: &Args<'_>) {
    let Some(mut g) = Granter::connect(r, args) else {
        return;
    };
    let dom = g.dom;
    for (what, flags) in [
        ("a device-map flag", 1 << 1),
        ("a contains-PTE flag", 1 << 4),
        ("bit 31 of the flags", 1 << 31),
    ] {
        let va = g.fresh_va();
        r.refused(
            &alloc::format!("mapping with {what}"),
            map_raw(dom, DATA_REF, va, flags),
            Errno::EINVAL,
        );
    }
    let (a, b) = (g.fresh_va(), g.fresh_va());
    let ha = setup!(r, "first mapping", map_raw(dom, DATA_REF, a, 0));
    let hb = setup!(r, "second mapping", map_raw(dom, DATA_REF, b, 0));
    r.check(
        peek(a) == Some(DATA_PATTERN) && peek(b) == Some(DATA_PATTERN),
        format_args!("the grant is mapped twice"),
    );
    r.check(unmap_raw(a, ha).is_ok(), format_args!("first unmap"));
    r.refused(
        "unmapping the same handle again",
        unmap_raw(a, ha),
        Errno::EINVAL,
    );
    r.refused(
        "unmapping the second handle at the first address",
        unmap_raw(a, hb),
        Errno::EINVAL,
    );
    r.check(
        peek(b) == Some(DATA_PATTERN) && peek(a).is_none(),
        format_args!("the second mapping still works, the first is gone"),
    );
    r.check(
        !g.end_access(DATA_REF),
        format_args!("the granter cannot end the grant while one mapping remains"),
    );
    r.check(unmap_raw(b, hb).is_ok(), format_args!("second unmap"));
    r.check(
        g.end_access(DATA_REF),
        format_args!("after both unmaps the granter ends the grant"),
    );
    g.leave();
}

/// XSA-226: copy batches are bounded (no continuation to get wrong): 512
/// copies all work, 513 are refused, a bad operation in the middle fails
/// alone, an unreadable batch fails as a whole — and afterwards the grant
/// is not left in use.
pub fn xsa_226(r: &mut TestReport, args: &Args<'_>) {
    let Some(mut g) = Granter::connect(r, args) else {
        return;
    };
    let dom = g.dom;
    let own = setup!(r, "a frame", Frame::alloc_zeroed());
    let op = |i: u32, gref: GrantRef| GnttabCopy {
        source: GnttabCopyPtr {
            ref_or_mfn: u64::from(gref),
            domid: dom,
            offset: 8 * i,
        },
        dest: GnttabCopyPtr {
            ref_or_mfn: own.mfn(),
            domid: 0,
            offset: 8 * i,
        },
        len: 8,
        flags: GNTCOPY_SOURCE_GREF,
        ..GnttabCopy::default()
    };
    let mut ops: Vec<GnttabCopy> = (0..512).map(|i| op(i, RO_REF)).collect();
    // SAFETY: the destination is this test's frame, held without references.
    let ret = unsafe { grants::grant_copy(&mut ops) };
    r.check(
        ret.is_ok() && ops.iter().all(|o| o.status == 0),
        format_args!("512 copies in one batch all succeed"),
    );
    r.check(
        (0..512).all(|i| own.read_u64(i) == RO_PATTERN),
        format_args!("and copied the whole page"),
    );
    let mut ops: Vec<GnttabCopy> = (0..513).map(|i| op(i % 512, RO_REF)).collect();
    // SAFETY: as above.
    r.refused(
        "513 copies in one batch",
        unsafe { grants::grant_copy(&mut ops) },
        Errno::E2BIG,
    );
    let mut ops: Vec<GnttabCopy> = (0..64)
        .map(|i| op(i, if i == 30 { 77 } else { DATA_REF }))
        .collect();
    // SAFETY: as above.
    let ret = unsafe { grants::grant_copy(&mut ops) };
    let bad: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.status != 0)
        .map(|(i, _)| i)
        .collect();
    r.check(
        ret.is_ok() && bad == [30] && ops[30].status == -(Errno::EPERM.0 as i32),
        format_args!("a bad copy at index 30 fails alone with EPERM ({bad:?})"),
    );
    r.refused(
        "a copy batch in hypervisor space",
        call(
            Hypercall::GrantTableOp,
            [GNTTABOP_COPY, 0xffff_8000_0000_0000, 4, 0, 0],
        ),
        Errno::EFAULT,
    );
    r.check(
        g.end_access(RO_REF),
        format_args!("the read-only grant is not left in use"),
    );
    r.check(
        g.end_access(DATA_REF),
        format_args!("the data grant is not left in use"),
    );
    drop(own);
    g.leave();
}

/// XSA-227: mapping addresses are checked: a misaligned `host_addr` is
/// treated as its page and must be named the same way to unmap; a
/// PTE-address flag does not exist (`-EINVAL`); non-canonical and
/// hypervisor addresses, a page in use and an address without an L1 are
/// refused.
pub fn xsa_227(r: &mut TestReport, args: &Args<'_>) {
    let Some(mut g) = Granter::connect(r, args) else {
        return;
    };
    let dom = g.dom;
    let page = g.fresh_va();
    let misaligned = page + 8;
    match map_raw(dom, RO_REF, misaligned, GNTMAP_READONLY) {
        Ok(handle) => {
            r.check(
                peek(page) == Some(RO_PATTERN),
                format_args!("a misaligned host_addr maps exactly its page"),
            );
            r.refused(
                "unmapping it by the page address",
                unmap_raw(page, handle),
                Errno::EINVAL,
            );
            r.check(
                unmap_raw(misaligned, handle).is_ok(),
                format_args!("unmapping by the address mapped"),
            );
        }
        // Refusing it outright would be as good.
        Err(e) => {
            r.refused("a misaligned host_addr", Err::<(), _>(e), Errno::EINVAL);
        }
    }
    let kernel_page = mm::layout().pfn_va(mm::layout().pt_first_pfn);
    for (what, addr, flags, want) in [
        (
            "a contains-PTE flag with a page-table address",
            kernel_page,
            1u32 << 4,
            Errno::EINVAL,
        ),
        (
            "a non-canonical host_addr",
            0x0000_8000_0000_0000,
            GNTMAP_READONLY,
            Errno::EINVAL,
        ),
        (
            "a hypervisor host_addr",
            0xffff_8000_0000_1000,
            GNTMAP_READONLY,
            Errno::EINVAL,
        ),
        (
            "over the L4's own mapping",
            kernel_page,
            GNTMAP_READONLY,
            Errno::EBUSY,
        ),
        (
            "an address without an L1",
            0x0000_3000_0000_0000,
            GNTMAP_READONLY,
            Errno::EINVAL,
        ),
    ] {
        r.refused(
            &alloc::format!("mapping at {what}"),
            map_raw(dom, RO_REF, addr, flags),
            want,
        );
    }
    r.check(
        g.end_access(RO_REF),
        format_args!("nothing left the grant in use"),
    );
    g.leave();
}

/// XSA-230/236: use counts and references stay paired. The same grant
/// mapped eight times (and copied from meanwhile) stays in use until the
/// last unmap; a map batch with one bad operation leaves exactly the good
/// ones; the granter can end both grants after the last unmap. (Racing
/// vCPUs need SMP guests: not yet.)
pub fn xsa_230(r: &mut TestReport, args: &Args<'_>) {
    let Some(mut g) = Granter::connect(r, args) else {
        return;
    };
    let dom = g.dom;
    let mut held: Vec<GrantHandle> = Vec::new();
    for _ in 0..8 {
        let va = g.fresh_va();
        held.push(setup!(
            r,
            "a read-only mapping",
            map_grant_ref(dom, RO_REF, va, true)
        ));
    }
    let own = setup!(r, "a frame", Frame::alloc_zeroed());
    let mut copy = GnttabCopy {
        source: GnttabCopyPtr {
            ref_or_mfn: u64::from(RO_REF),
            domid: dom,
            offset: 0,
        },
        dest: GnttabCopyPtr {
            ref_or_mfn: own.mfn(),
            domid: 0,
            offset: 0,
        },
        len: 4096,
        flags: GNTCOPY_SOURCE_GREF,
        ..GnttabCopy::default()
    };
    // SAFETY: the destination is this test's frame.
    let copied = unsafe { grants::grant_copy(core::slice::from_mut(&mut copy)) };
    r.check(
        copied.is_ok() && copy.status == 0,
        format_args!("a copy while mapped eight times"),
    );
    while held.len() > 1 {
        if let Some(h) = held.pop() {
            r.check(
                unmap_grant_ref(h).is_ok(),
                format_args!("unmap ({} left)", held.len()),
            );
        }
        if held.len() == 4 || held.len() == 1 {
            r.check(
                !g.end_access(RO_REF),
                format_args!("with {} mapping(s) left the grant cannot end", held.len()),
            );
        }
    }
    if let Some(h) = held.pop() {
        r.check(unmap_grant_ref(h).is_ok(), format_args!("last unmap"));
    }
    r.check(
        g.end_access(RO_REF),
        format_args!("after the last unmap the grant ends"),
    );
    // A batch of 8 with a bad one at index 5.
    let mut ops: Vec<GnttabMapGrantRef> = (0..8)
        .map(|i| GnttabMapGrantRef {
            host_addr: g.fresh_va(),
            gref: if i == 5 { 400 } else { DATA_REF },
            dom,
            ..GnttabMapGrantRef::default()
        })
        .collect();
    let ret = hypercall::grant_map(&mut ops);
    let good: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.status == 0)
        .map(|(i, _)| i)
        .collect();
    r.check(
        ret.is_ok() && good == [0, 1, 2, 3, 4, 6, 7] && ops[5].status == -(Errno::EPERM.0 as i32),
        format_args!("a batch with a bad map at index 5 maps exactly the other 7"),
    );
    for op in ops.iter().filter(|o| o.status == 0) {
        let _ = unmap_raw(op.host_addr, op.handle);
    }
    r.check(
        g.end_access(DATA_REF),
        format_args!("the data grant ends after its 7 unmaps"),
    );
    drop(own);
    g.leave();
}

/// XSA-234: a grant mapped read-only stays read-only — writes fault, the
/// mapping's entry cannot be made writable (by `mmu_update` or
/// `update_va_mapping`, `-EBUSY`) — and its unmap releases a read-only use
/// (the granter ends it at once; the audit checks the counts).
pub fn xsa_234(r: &mut TestReport, args: &Args<'_>) {
    let Some(mut g) = Granter::connect(r, args) else {
        return;
    };
    let dom = g.dom;
    let va = g.fresh_va();
    let handle = setup!(
        r,
        "a read-only mapping",
        map_grant_ref(dom, DATA_REF, va, true)
    );
    // SAFETY: a grant mapping no Rust reference covers; must fault.
    let wrote = unsafe { probe::write_u64(va, 0xbad) };
    r.check(
        wrote.is_err(),
        format_args!("a write through the read-only mapping faults"),
    );
    let mut kernel = AddressSpace::kernel();
    let l1e = setup!(r, "finding the mapping's entry", kernel.l1_entry(va));
    let entry = read_machine(l1e).unwrap_or(0);
    r.check(
        entry & pte::P != 0 && entry & pte::RW == 0,
        format_args!("the entry is read-only"),
    );
    r.refused(
        "making the entry writable with mmu_update",
        update1(l1e, entry | pte::RW),
        Errno::EBUSY,
    );
    r.refused(
        "making it writable with update_va_mapping",
        // SAFETY: must be refused.
        unsafe { hypercall::update_va_mapping(va, entry | pte::RW, UVMF_INVLPG) },
        Errno::EBUSY,
    );
    r.refused(
        "removing the entry with mmu_update",
        update1(l1e, 0),
        Errno::EBUSY,
    );
    // SAFETY: as above.
    let wrote = unsafe { probe::write_u64(va, 0xbad) };
    r.check(
        wrote.is_err() && peek(va) == Some(DATA_PATTERN),
        format_args!("still read-only, content intact"),
    );
    r.check(unmap_grant_ref(handle).is_ok(), format_args!("unmap"));
    r.check(
        g.end_access(DATA_REF),
        format_args!("the grant ends at once after the unmap"),
    );
    g.leave();
}

/// XSA-316: every failure is a negative errno — of a whole call and of
/// each operation's status — never a positive value a caller could take
/// for success.
pub fn xsa_316(r: &mut TestReport, args: &Args<'_>) {
    let Some(mut g) = Granter::connect(r, args) else {
        return;
    };
    let dom = u64::from(g.dom);
    let hv = 0xffff_8000_0000_0000u64;
    let calls: [(&str, Hypercall, [u64; 5]); 14] = [
        ("version, bad command", Hypercall::Version, [99, 0, 0, 0, 0]),
        (
            "console_io, too long",
            Hypercall::ConsoleIo,
            [0, 1 << 20, 0, 0, 0],
        ),
        (
            "sched_op, bad command",
            Hypercall::SchedOp,
            [77, 0, 0, 0, 0],
        ),
        (
            "set_trap_table, too many",
            Hypercall::SetTrapTable,
            [0, 1000, 0, 0, 0],
        ),
        ("stack_switch, 0", Hypercall::StackSwitch, [0, 0, 0, 0, 0]),
        (
            "domctl without the capability",
            Hypercall::Domctl,
            [0, 0, 0, 0, 0],
        ),
        (
            "mmu_update from hypervisor space",
            Hypercall::MmuUpdate,
            [hv, 1, 0, 0, 0],
        ),
        (
            "update_va_mapping of a hypervisor address",
            Hypercall::UpdateVaMapping,
            [hv, 0, 0, 0, 0],
        ),
        (
            "mmuext_op, too many",
            Hypercall::MmuextOp,
            [0, 100_000, 0, 0, 0],
        ),
        (
            "multicall from hypervisor space",
            Hypercall::Multicall,
            [hv, 1, 0, 0, 0],
        ),
        (
            "evtchn_op, bad command",
            Hypercall::EvtchnOp,
            [99, 0, 0, 0, 0],
        ),
        (
            "grant map from hypervisor space",
            Hypercall::GrantTableOp,
            [GNTTABOP_MAP_GRANT_REF, hv, 1, 0, 0],
        ),
        (
            "grant unmap, too many",
            Hypercall::GrantTableOp,
            [GNTTABOP_UNMAP_GRANT_REF, 0, 100_000, 0, 0],
        ),
        (
            "grant_table_op, bad command",
            Hypercall::GrantTableOp,
            [99, 0, 1, 0, 0],
        ),
    ];
    let mut negative = 0;
    for (what, nr, args) in calls {
        let ret = crate::attack::raw(nr, args);
        let known = (-4095..0).contains(&ret);
        if r.check(known, format_args!("{what}: returns {ret}")) {
            negative += 1;
        }
    }
    // 16..18 are reserved for this ABI's new calls; 19..63 are undefined.
    let wrong: Vec<(u32, i64)> = (19..64u32)
        .map(|nr| {
            // SAFETY: an undefined number has no effect.
            (nr, unsafe { hypercall::hypercall_raw(nr, [0; 5]) })
        })
        .filter(|&(_, ret)| ret != -i64::from(Errno::ENOSYS.0))
        .collect();
    r.check(
        wrong.is_empty(),
        format_args!("undefined hypercalls 19..63 return -ENOSYS ({wrong:?})"),
    );
    // Per-operation statuses of a batch where every operation fails.
    let mut ops: Vec<GnttabMapGrantRef> = [
        (RO_REF, 0u32),
        (600, GNTMAP_READONLY),
        (77, GNTMAP_READONLY),
        (RO_REF, 1 << 9),
    ]
    .iter()
    .map(|&(gref, flags)| GnttabMapGrantRef {
        host_addr: g.fresh_va(),
        flags,
        gref,
        dom: dom as u32,
        ..GnttabMapGrantRef::default()
    })
    .collect();
    let ret = hypercall::grant_map(&mut ops);
    let statuses: Vec<i32> = ops.iter().map(|o| o.status).collect();
    r.check(
        ret.is_ok() && statuses.iter().all(|&s| (-4095..0).contains(&s)),
        format_args!("every failed map operation has a negative status ({statuses:?})"),
    );
    r.check(
        negative == 14,
        format_args!("{negative} failing calls, all negative"),
    );
    r.check(
        g.end_access(RO_REF),
        format_args!("nothing was left mapped"),
    );
    g.leave();
}

/// XSA-380: references drop once per mapping, also inside one batch: an
/// unmap batch naming a handle twice and a bogus handle unmaps each real
/// mapping once; the granter can end both grants afterwards.
pub fn xsa_380(r: &mut TestReport, args: &Args<'_>) {
    let Some(mut g) = Granter::connect(r, args) else {
        return;
    };
    let dom = g.dom;
    let (a, b, c) = (g.fresh_va(), g.fresh_va(), g.fresh_va());
    let mut ops = [
        GnttabMapGrantRef {
            host_addr: a,
            flags: GNTMAP_READONLY,
            gref: RO_REF,
            dom,
            ..GnttabMapGrantRef::default()
        },
        GnttabMapGrantRef {
            host_addr: b,
            flags: 0,
            gref: DATA_REF,
            dom,
            ..GnttabMapGrantRef::default()
        },
        GnttabMapGrantRef {
            host_addr: c,
            flags: 0,
            gref: 600,
            dom,
            ..GnttabMapGrantRef::default()
        },
    ];
    let ret = hypercall::grant_map(&mut ops);
    r.check(
        ret.is_ok() && ops[0].status == 0 && ops[1].status == 0 && ops[2].status < 0,
        format_args!("a map batch: two mapped, the third refused"),
    );
    let mut unmaps = [
        GnttabUnmapGrantRef {
            host_addr: a,
            handle: ops[0].handle,
            status: 1,
        },
        GnttabUnmapGrantRef {
            host_addr: c,
            handle: 999,
            status: 1,
        },
        GnttabUnmapGrantRef {
            host_addr: a,
            handle: ops[0].handle,
            status: 1,
        },
        GnttabUnmapGrantRef {
            host_addr: b,
            handle: ops[1].handle,
            status: 1,
        },
        GnttabUnmapGrantRef {
            host_addr: b,
            handle: ops[1].handle,
            status: 1,
        },
    ];
    // SAFETY: only this test's grant mappings.
    let ret = unsafe { hypercall::grant_unmap(&mut unmaps) };
    let statuses: Vec<i32> = unmaps.iter().map(|u| u.status).collect();
    let e = -(Errno::EINVAL.0 as i32);
    r.check(
        ret.is_ok() && statuses == [0, e, e, 0, e],
        format_args!("an unmap batch with repeats and a bogus handle: statuses {statuses:?}"),
    );
    r.check(
        peek(a).is_none() && peek(b).is_none(),
        format_args!("both mappings are gone"),
    );
    r.check(
        g.end_access(RO_REF),
        format_args!("the read-only grant ends"),
    );
    r.check(g.end_access(DATA_REF), format_args!("the data grant ends"));
    g.leave();
}
