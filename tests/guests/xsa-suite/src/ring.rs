//! Shared-ring and notification regressions (SPEC §8c RING-*, EVT-*). The
//! split drivers (blkback, netback) do not exist yet; what is tested is
//! what they will stand on: the ring library's copy-once consumption
//! (XSA-155), responses and hypervisor outputs that carry no stray bytes
//! (216), and event storms from a guest (332) and toward a frontend (391),
//! measured as the victim's progress.

use core::cell::{Cell, RefCell};
use core::sync::atomic::{AtomicU64, Ordering};

use alloc::vec;
use alloc::vec::Vec;

use hypercall_abi::evtchn::{EvtchnStatus, EVTCHNOP_STATUS};
use hypercall_abi::grant::{GnttabMapGrantRef, GnttabQuerySize, GNTTABOP_QUERY_SIZE};
use hypercall_abi::hypercall::VERSION_ABI;
use hypercall_abi::layout::{GUEST_CS, GUEST_SS};
use hypercall_abi::mm::MmuUpdate;
use hypercall_abi::multicall::MulticallEntry;
use hypercall_abi::ring::{BackRing, FrontRing, RingError, RingMemory};
use hypercall_abi::trap::{vector, FRAME_FLAGS_ALL};
use hypercall_abi::{DomId, Hypercall};
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::grants::GrantTable;
use pv_guest_kit::hypercall::{self, sched_yield};
use pv_guest_kit::mm::Frame;
use pv_guest_kit::ring::{Frontend, SharedPage};
use pv_guest_kit::testing::TestReport;
use pv_guest_kit::traps::{self, TrapAction, TrapContext};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::attack::{call, rdtsc, tsc_per_ms};
use crate::mmu::setup;
use crate::partner::PARTNER_PORT;

/// A request of the test rings: a length and payload words, with a
/// checksum the consumer validates on its copy.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TestReq {
    pub id: u64,
    pub len: u64,
    pub data: u64,
    pub sum: u64,
}

/// A response: smaller than a request, so it fills only part of a slot.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TestRsp {
    pub id: u64,
    pub status: u64,
}

const _: () = assert!(core::mem::size_of::<TestReq>() == 32);
const _: () = assert!(core::mem::size_of::<TestRsp>() == 16);

fn req(i: u64) -> TestReq {
    let (len, data) = (i % 512, 0x1000_0000 + i);
    TestReq {
        id: i,
        len,
        data,
        sum: i ^ len ^ data,
    }
}

/// Ring memory a hostile frontend controls: every byte of a slot that is
/// read is overwritten with garbage right after the read (as if the
/// frontend rewrote the request after the backend's first fetch), and
/// every read is counted per byte and per header field.
struct HostileMemory {
    bytes: RefCell<Vec<u8>>,
    reads: RefCell<Vec<u32>>,
    header_reads: Cell<[u32; 4]>,
    scramble: Cell<bool>,
}

impl HostileMemory {
    fn new(len: usize) -> HostileMemory {
        HostileMemory {
            bytes: RefCell::new(vec![0; len]),
            reads: RefCell::new(vec![0; len]),
            header_reads: Cell::new([0; 4]),
            scramble: Cell::new(false),
        }
    }
}

impl RingMemory for HostileMemory {
    fn len(&self) -> usize {
        self.bytes.borrow().len()
    }

    fn read_u32(&self, offset: usize) -> u32 {
        if offset < 16 {
            let mut counts = self.header_reads.get();
            counts[offset / 4] += 1;
            self.header_reads.set(counts);
        }
        let b = self.bytes.borrow();
        u32::from_le_bytes([b[offset], b[offset + 1], b[offset + 2], b[offset + 3]])
    }

    fn write_u32(&mut self, offset: usize, value: u32) {
        self.bytes.borrow_mut()[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        let mut b = self.bytes.borrow_mut();
        let mut reads = self.reads.borrow_mut();
        for (i, o) in out.iter_mut().enumerate() {
            *o = b[offset + i];
            reads[offset + i] += 1;
            if self.scramble.get() {
                b[offset + i] ^= 0xff;
            }
        }
    }

    fn write_bytes(&mut self, offset: usize, data: &[u8]) {
        self.bytes.borrow_mut()[offset..offset + data.len()].copy_from_slice(data);
    }

    fn fence(&self) {
        core::sync::atomic::fence(Ordering::SeqCst);
    }
}

/// XSA-155: a backend fetches each request exactly once. Requests are
/// scrambled in shared memory right after each byte is read; the backend's
/// copies must still be the requests as published (and validate), every
/// slot byte must have been read exactly once, `req_prod` once per take;
/// an impossible `req_prod` is refused and changes nothing.
pub fn xsa_155(r: &mut TestReport, _args: &Args<'_>) {
    let mut mem = HostileMemory::new(4096);
    let mut front: FrontRing<TestReq, TestRsp> = setup!(r, "ring init", FrontRing::init(&mut mem));
    let mut back: BackRing<TestReq, TestRsp> = setup!(r, "ring attach", BackRing::attach(&mem));
    let size = u64::from(front.size());
    let mut taken = 0u64;
    let mut valid = 0u64;
    for round in 0..4u64 {
        for i in 0..size {
            setup!(
                r,
                "pushing",
                front
                    .push_request(&mut mem, &req(round * size + i))
                    .map_err(|_| "full")
            );
        }
        let _ = front.publish_requests(&mut mem);
        mem.reads.borrow_mut().iter_mut().for_each(|c| *c = 0);
        mem.header_reads.set([0; 4]);
        mem.scramble.set(true);
        let mut takes = 0u32;
        while let Ok(Some(copy)) = back.take_request(&mem) {
            takes += 1;
            let want = req(taken);
            taken += 1;
            if copy == want && copy.sum == copy.id ^ copy.len ^ copy.data {
                valid += 1;
            }
            let _ = back.push_response(
                &mut mem,
                &TestRsp {
                    id: copy.id,
                    status: 0,
                },
            );
        }
        mem.scramble.set(false);
        let once = mem.reads.borrow()[64..64 + (size as usize) * 32]
            .iter()
            .all(|&c| c == 1);
        let req_prod_reads = mem.header_reads.get()[0];
        r.check(
            once && takes == size as u32 && req_prod_reads == takes + 1,
            format_args!(
                "round {round}: {takes} requests taken, every slot byte read once, req_prod read {req_prod_reads} times"
            ),
        );
        let _ = back.publish_responses(&mut mem);
        while let Ok(Some(_)) = front.take_response(&mem) {}
    }
    r.check(
        valid == taken && taken == 4 * size,
        format_args!("all {taken} copies are the requests as published ({valid} valid) although the memory changed under every read"),
    );
    // An impossible producer index (RING-6): refused, no state change.
    let before = back.requests_pending_response();
    let cons = taken as u32;
    mem.write_u32(0, cons.wrapping_add(size as u32 + 5));
    r.check(
        back.take_request(&mem) == Err(RingError::ProducerOverrun),
        format_args!("req_prod {} past the ring is refused", size + 5),
    );
    mem.write_u32(0, cons.wrapping_sub(1));
    r.check(
        back.take_request(&mem) == Err(RingError::ProducerOverrun),
        format_args!("req_prod behind the consumer is refused"),
    );
    mem.write_u32(0, cons);
    r.check(
        back.take_request(&mem) == Ok(None) && back.requests_pending_response() == before,
        format_args!("and the backend's state is unchanged"),
    );
}

/// Bytes of the last exception frame seen by [`frame_check`].
static FRAME_OK: AtomicU64 = AtomicU64::new(0);

fn frame_check(ctx: &mut TrapContext) -> TrapAction {
    let f = ctx.frame();
    let ok = f.error_code == 0
        && f.cr2 == 0
        && f.flags & !FRAME_FLAGS_ALL == 0
        && f.cs == GUEST_CS
        && f.ss == GUEST_SS;
    FRAME_OK.store(if ok { 1 } else { 2 }, Ordering::SeqCst);
    TrapAction::Resume
}

/// XSA-216: no stray bytes in what comes back. Every field the hypervisor
/// writes (exception frames, STATUS, QUERY_SIZE, `done`, multicall results,
/// grant statuses) is defined, pads are zero, and nothing next to an output
/// is touched; a ring response overwrites exactly its own bytes of a slot.
pub fn xsa_216(r: &mut TestReport, _args: &Args<'_>) {
    FRAME_OK.store(0, Ordering::SeqCst);
    traps::set_handler(vector::BP, frame_check);
    // SAFETY: the handler resumes after the int3.
    unsafe { crate::arch::int3() };
    traps::clear_handler(vector::BP);
    r.check(
        FRAME_OK.load(Ordering::SeqCst) == 1,
        format_args!("an exception frame has zero error code and cr2, defined flags, cs/ss"),
    );
    let port = setup!(r, "a port", events::alloc_unbound(0));
    let mut status = [0xa5u8; 24];
    status[..4].copy_from_slice(&port.to_le_bytes());
    let got = call(
        Hypercall::EvtchnOp,
        [EVTCHNOP_STATUS, status.as_mut_ptr() as u64, 0, 0, 0],
    );
    let s = EvtchnStatus::read_from_bytes(&status).unwrap_or_default();
    r.check(
        got.is_ok() && s.pad == 0 && s.vcpu == 0 && s.remote_port == 0 && s.remote_dom_or_virq == 0,
        format_args!("STATUS fills every field, pad zero ({s:?})"),
    );
    let _ = events::close(port);
    let mut size = [0xa5u8; 16];
    let got = call(
        Hypercall::GrantTableOp,
        [GNTTABOP_QUERY_SIZE, size.as_mut_ptr() as u64, 1, 0, 0],
    );
    let q = GnttabQuerySize::read_from_bytes(&size[..8]).unwrap_or_default();
    r.check(
        got.is_ok()
            && q.nr_frames == 0
            && q.max_nr_frames == 4
            && size[8..].iter().all(|&b| b == 0xa5),
        format_args!("QUERY_SIZE writes its 8 bytes and nothing after ({q:?})"),
    );
    let mut around = [0xa5a5_a5a5_a5a5_a5a5u64; 3];
    let reqs: [MmuUpdate; 0] = [];
    let got = call(
        Hypercall::MmuUpdate,
        [
            reqs.as_ptr() as u64,
            0,
            core::ptr::addr_of_mut!(around[1]) as u64,
            0,
            0,
        ],
    );
    r.check(
        got.is_ok() && around == [0xa5a5_a5a5_a5a5_a5a5, 0, 0xa5a5_a5a5_a5a5_a5a5],
        format_args!("mmu_update writes exactly its done word ({around:x?})"),
    );
    let mut calls = [MulticallEntry {
        op: u64::from(Hypercall::Version.number()),
        result: 0xa5a5,
        args: [VERSION_ABI, 1, 2, 3, 4, 5],
    }];
    // SAFETY: version has no effect.
    let got = unsafe { hypercall::multicall(&mut calls) };
    r.check(
        got.is_ok() && calls[0].args == [VERSION_ABI, 1, 2, 3, 4, 5] && calls[0].op == 0,
        format_args!("a multicall entry gets its result, its other fields untouched"),
    );
    let mut op = GnttabMapGrantRef {
        host_addr: 0x0000_3000_0000_0000,
        gref: 0,
        dom: 0,
        status: 0x5a5a,
        handle: 0x5a5a_5a5a,
        ..GnttabMapGrantRef::default()
    };
    let got = hypercall::grant_map(core::slice::from_mut(&mut op));
    r.check(
        got.is_ok() && op.status < 0 && op.pad == 0 && op.host_addr == 0x0000_3000_0000_0000,
        format_args!(
            "a failed grant map gets a status, the rest is as given (status {})",
            op.status
        ),
    );
    // A ring response overwrites only its 16 bytes of a 32-byte slot.
    let mut mem = HostileMemory::new(4096);
    let mut front: FrontRing<TestReq, TestRsp> = setup!(r, "ring init", FrontRing::init(&mut mem));
    let mut back: BackRing<TestReq, TestRsp> = setup!(r, "ring attach", BackRing::attach(&mem));
    setup!(
        r,
        "pushing",
        front.push_request(&mut mem, &req(7)).map_err(|_| "full")
    );
    let _ = front.publish_requests(&mut mem);
    let copy = back.take_request(&mem);
    setup!(
        r,
        "taking",
        back.push_response(&mut mem, &TestRsp { id: 7, status: 1 })
            .map_err(|_| "push")
    );
    let _ = back.publish_responses(&mut mem);
    let slot: Vec<u8> = mem.bytes.borrow()[64..96].to_vec();
    r.check(
        matches!(copy, Ok(Some(c)) if c == req(7))
            && slot[..16] == *TestRsp { id: 7, status: 1 }.as_bytes()
            && slot[16..] == req(7).as_bytes()[16..],
        format_args!("a response leaves the rest of its slot as the frontend wrote it"),
    );
    r.check(
        matches!(
            front.take_response(&mem),
            Ok(Some(TestRsp { id: 7, status: 1 }))
        ),
        format_args!("the frontend reads the response back"),
    );
}

/// Events counted by [`count`].
static EVENTS: AtomicU64 = AtomicU64::new(0);

fn count(_port: Port) {
    EVENTS.fetch_add(1, Ordering::Relaxed);
}

/// One unit of the victim's work.
fn work_unit(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    core::hint::black_box(x)
}

/// Units done in `ms` milliseconds of wall time (TSC).
fn units_in(ms: u64) -> u64 {
    let end = rdtsc() + ms * tsc_per_ms();
    let mut units = 0;
    let mut x = 1;
    while rdtsc() < end {
        x = work_unit(x);
        units += 1;
    }
    units
}

/// Trials per measurement; the fastest counts. The TSC is wall time on
/// the host, and a host that deschedules QEMU only ever adds time, so the
/// minimum of a few trials is the robust figure. Each trial spans many
/// 10 ms time slices ([`TRIAL_MS`]), so none can fit between two turns of
/// the storming domain.
const TRIALS: usize = 2;
/// Length of one trial of the victim's work, alone.
const TRIAL_MS: u64 = 150;

/// TSC ticks to do `units` units: the fastest of [`TRIALS`] runs.
fn best_ticks_for(units: u64) -> u64 {
    (0..TRIALS)
        .map(|_| ticks_for(units))
        .min()
        .unwrap_or(u64::MAX)
}

/// TSC ticks to do `units` units.
fn ticks_for(units: u64) -> u64 {
    let start = rdtsc();
    let mut x = 1;
    for _ in 0..units {
        x = work_unit(x);
    }
    core::hint::black_box(x);
    rdtsc() - start
}

/// The lowest acceptable share of the CPU a victim keeps under a storm,
/// in percent of what it had alone (two runnable domains: fair is 50).
const MIN_SHARE_PERCENT: u64 = 20;

/// Measures the victim's work rate alone (`quiet_ms`) and then while
/// `start_storm` has started a storm; checks the share.
fn progress_under_storm(r: &mut TestReport, what: &str, start_storm: impl FnOnce()) -> bool {
    let per_ms = tsc_per_ms().max(1);
    let units = units_in(TRIAL_MS);
    let quiet = best_ticks_for(units);
    EVENTS.store(0, Ordering::Relaxed);
    start_storm();
    let stormy = best_ticks_for(units);
    let share = quiet * 100 / stormy.max(1);
    r.check(
        share >= MIN_SHARE_PERCENT,
        format_args!(
            "{what}: {units} units of work took {} ms alone and {} ms under the storm ({share}% of the CPU; {} events arrived)",
            quiet / per_ms,
            stormy / per_ms,
            EVENTS.load(Ordering::Relaxed)
        ),
    )
}

/// XSA-332: an event storm from another domain (`sender` partner, no
/// yielding) does not starve the victim: it keeps at least 20% of the CPU
/// it had alone (a fair share is 50%), and events keep arriving.
pub fn xsa_332(r: &mut TestReport, args: &Args<'_>) {
    let dom = args.get_u64("partner").unwrap_or(2) as DomId;
    let mut port = 0;
    for _ in 0..100_000 {
        match events::bind_interdomain(dom, PARTNER_PORT) {
            Ok(p) => {
                port = p;
                break;
            }
            Err(_) => sched_yield(),
        }
    }
    if port == 0 {
        r.error(format_args!("could not bind to the sender"));
        return;
    }
    events::set_handler(port, count);
    progress_under_storm(r, "send storm toward this domain", || {
        let _ = events::notify(port);
    });
    r.check(
        EVENTS.load(Ordering::Relaxed) > 0,
        format_args!("the storm's events were delivered"),
    );
    let _ = events::close(port);
}

/// XSA-391: a hostile backend (`bad-backend` partner) publishes an
/// impossible response index and floods the frontend with events. The
/// frontend detects the overrun (RING-6) without taking a response,
/// disconnects, and keeps at least 20% of its CPU under the flood.
pub fn xsa_391(r: &mut TestReport, args: &Args<'_>) {
    let dom = args.get_u64("partner").unwrap_or(2) as DomId;
    let per_ms = tsc_per_ms().max(1);
    let units = units_in(TRIAL_MS);
    let quiet = best_ticks_for(units);
    let page = setup!(r, "a ring page", Frame::alloc_zeroed());
    let mfn = page.mfn();
    let port = setup!(r, "a port", events::alloc_unbound(dom));
    events::set_handler(port, count);
    // The ring is initialised before the backend can see it.
    let mut fe: Frontend<TestReq, TestRsp> = setup!(
        r,
        "a ring",
        Frontend::new(SharedPage::from_frame(page), port)
    );
    let mut table = setup!(r, "a grant table", GrantTable::setup(1));
    let gref = setup!(r, "granting the ring", table.grant_access(dom, mfn, false));
    r.check(
        gref == 0 && port == PARTNER_PORT,
        format_args!("ring granted as ref 0, port 1"),
    );
    setup!(r, "pushing a request", fe.push(&req(1)).map_err(|_| "full"));
    let _ = fe.publish();
    let free = fe.free_requests();
    let mut outcome = Ok(None);
    for _ in 0..1_000_000 {
        outcome = fe.take();
        if outcome != Ok(None) {
            break;
        }
        sched_yield();
    }
    r.check(
        outcome == Err(RingError::ProducerOverrun) && fe.free_requests() == free,
        format_args!(
            "an impossible rsp_prod from the backend is refused ({outcome:?}), no response taken"
        ),
    );
    let stormy = best_ticks_for(units);
    let share = quiet * 100 / stormy.max(1);
    r.check(
        share >= MIN_SHARE_PERCENT,
        format_args!(
            "{units} units of work took {} ms alone and {} ms under the backend's flood ({share}% of the CPU; {} events)",
            quiet / per_ms,
            stormy / per_ms,
            EVENTS.load(Ordering::Relaxed)
        ),
    );
    // Disconnect: stop listening; the page stays granted until the
    // backend unmaps it (GNT-5 keeps it allocated past this domain's end).
    r.check(
        events::close(port).is_ok(),
        format_args!("disconnected (port closed)"),
    );
    core::mem::forget(fe);
    core::mem::forget(table);
}
