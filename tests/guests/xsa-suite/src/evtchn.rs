//! Event-channel regressions (SPEC §8, EVT-1 .. EVT-6, HC-12): failed binds
//! leaving no state behind (XSA-188), port numbers past the table (317),
//! polling ports that are not usable (342), close racing with sends from
//! another domain (343) and closing many ports at once without stalling
//! other domains (344).

use core::sync::atomic::{AtomicU64, Ordering};

use alloc::vec::Vec;

use hypercall_abi::evtchn::{
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindVcpu, EvtchnBindVirq,
    EvtchnStatus, EVTCHNOP_ALLOC_UNBOUND, EVTCHNOP_BIND_INTERDOMAIN, EVTCHNOP_BIND_IPI,
    EVTCHNOP_BIND_VCPU, EVTCHNOP_BIND_VIRQ, EVTCHNOP_CLOSE, EVTCHNOP_SEND, EVTCHNOP_STATUS,
    EVTCHNOP_UNMASK, EVTCHNSTAT_CLOSED, EVTCHNSTAT_UNBOUND, VIRQ_TIMER,
};
use hypercall_abi::grant::{
    GnttabQuerySize, GnttabSetupTable, GNTTABOP_QUERY_SIZE, GNTTABOP_SETUP_TABLE,
};
use hypercall_abi::mm::{MMUEXT_PIN_L1_TABLE, MMUEXT_UNPIN_TABLE};
use hypercall_abi::sched::{SchedPoll, SCHEDOP_POLL};
use hypercall_abi::{DomId, Errno, Hypercall};
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::hypercall::sched_yield;
use pv_guest_kit::mm::{self, Frame};
use pv_guest_kit::testing::TestReport;
use zerocopy::IntoBytes;

use crate::attack::{call, ext1, rdtsc, system_time_ns, tsc_per_ms};
use crate::mmu::setup;
use crate::partner::PARTNER_PORT;

/// A hypervisor address.
const HV_ADDR: u64 = 0xffff_8000_0000_0000;

/// `evtchn_op(cmd, arg)`, raw.
fn evtchn_raw(cmd: u64, arg: u64) -> Result<u64, Errno> {
    call(Hypercall::EvtchnOp, [cmd, arg, 0, 0, 0])
}

/// Ports 1..=`upto` that are open (STATUS says so; a port never used may
/// also be refused as not in use).
fn open_ports(upto: Port) -> Vec<Port> {
    (1..=upto)
        .filter(|&p| events::status(p).is_ok_and(|s| s.status != EVTCHNSTAT_CLOSED))
        .collect()
}

/// `value`'s bytes in a frame of their own, then made read-only: a
/// structure the hypervisor can read but not write back.
fn readonly_struct(value: &[u8]) -> Option<mm::pagetable::ReadOnlyFrame> {
    let mut frame = Frame::alloc_zeroed().ok()?;
    frame.write_bytes(0, value);
    frame.into_readonly().ok()
}

/// XSA-188: a bind or allocation whose result cannot be written back fails
/// (`-EFAULT`) and leaves no port allocated or VIRQ bound; a grant-table
/// setup with a bad frame fails and leaves no table and no use of the good
/// frames.
pub fn xsa_188(r: &mut TestReport, _args: &Args<'_>) {
    let cases: [(&str, u64, Vec<u8>); 3] = [
        (
            "ALLOC_UNBOUND",
            EVTCHNOP_ALLOC_UNBOUND,
            EvtchnAllocUnbound {
                remote_dom: 0,
                port: 0,
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            "BIND_VIRQ(TIMER)",
            EVTCHNOP_BIND_VIRQ,
            EvtchnBindVirq {
                virq: VIRQ_TIMER,
                ..EvtchnBindVirq::default()
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            "BIND_IPI",
            EVTCHNOP_BIND_IPI,
            EvtchnBindIpi::default().as_bytes().to_vec(),
        ),
    ];
    for (what, cmd, bytes) in cases {
        let Some(page) = readonly_struct(&bytes) else {
            r.error(format_args!("building a read-only argument"));
            return;
        };
        let va = mm::layout().pfn_va(page.pfn());
        r.refused(
            &alloc::format!("{what} with a read-only argument"),
            evtchn_raw(cmd, va),
            Errno::EFAULT,
        );
        let open = open_ports(16);
        r.check(
            open.is_empty(),
            format_args!("after the failed {what} no port is open ({open:?})"),
        );
        if let Ok(frame) = page.into_writable() {
            drop(frame);
        }
    }
    match events::bind_virq(VIRQ_TIMER) {
        Ok(port) => {
            r.pass(format_args!(
                "VIRQ_TIMER binds normally afterwards (port {port})"
            ));
            let _ = events::close(port);
        }
        Err(e) => r.fail(format_args!(
            "VIRQ_TIMER cannot be bound after the failed bind: {e}"
        )),
    }
    // Grant-table setup with one bad frame among good ones.
    let good = setup!(r, "a frame", Frame::alloc_zeroed());
    let l4 = mm::layout().boot_l4_mfn;
    for (what, bad, want) in [
        ("a hypervisor frame", 0x100u64, Errno::EPERM),
        (
            "a frame past memory",
            mm::layout().nr_m2p_entries + 5,
            Errno::EPERM,
        ),
        ("its own L4", l4, Errno::EBUSY),
    ] {
        let list = [good.mfn(), bad];
        let setup_op = GnttabSetupTable {
            nr_frames: 2,
            pad: 0,
            frame_list: list.as_ptr() as u64,
        };
        r.refused(
            &alloc::format!("a grant table with {what} as its second frame"),
            call(
                Hypercall::GrantTableOp,
                [
                    GNTTABOP_SETUP_TABLE,
                    core::ptr::addr_of!(setup_op) as u64,
                    1,
                    0,
                    0,
                ],
            ),
            want,
        );
        let mut size = GnttabQuerySize::default();
        let queried = call(
            Hypercall::GrantTableOp,
            [
                GNTTABOP_QUERY_SIZE,
                core::ptr::addr_of_mut!(size) as u64,
                1,
                0,
                0,
            ],
        );
        r.check(
            queried.is_ok() && size.nr_frames == 0,
            format_args!("no table is left behind ({} frames)", size.nr_frames),
        );
    }
    let list = [good.mfn()];
    let bad_list = GnttabSetupTable {
        nr_frames: 1,
        pad: 0,
        frame_list: HV_ADDR,
    };
    r.refused(
        "a grant table whose frame list is in hypervisor space",
        call(
            Hypercall::GrantTableOp,
            [
                GNTTABOP_SETUP_TABLE,
                core::ptr::addr_of!(bad_list) as u64,
                1,
                0,
                0,
            ],
        ),
        Errno::EFAULT,
    );
    let _ = list;
    // No writable use of the good frame survived: it can become an L1.
    match good.into_readonly() {
        Ok(table) => {
            let pinned = ext1(MMUEXT_PIN_L1_TABLE, table.mfn());
            r.check(
                pinned.is_ok(),
                format_args!("the good frame holds no leftover use: it pins as an L1 ({pinned:?})"),
            );
            if pinned.is_ok() {
                let _ = ext1(MMUEXT_UNPIN_TABLE, table.mfn());
            }
            if let Ok(frame) = table.into_writable() {
                drop(frame);
            }
        }
        Err(_) => r.error(format_args!("making the good frame read-only")),
    }
}

/// XSA-317: every port number outside 1..1023, in every sub-operation that
/// takes one, is refused (`-EINVAL`); allocating until the table is full
/// stops with `-ENOSPC` at exactly 1023 ports, which all close again.
pub fn xsa_317(r: &mut TestReport, _args: &Args<'_>) {
    let bad: [u64; 9] = [
        0,
        1024,
        1025,
        4096,
        65_535,
        1 << 31,
        u32::MAX as u64,
        1 << 32,
        u64::MAX,
    ];
    for port in bad {
        for (what, cmd) in [
            ("SEND", EVTCHNOP_SEND),
            ("CLOSE", EVTCHNOP_CLOSE),
            ("UNMASK", EVTCHNOP_UNMASK),
        ] {
            r.refused(
                &alloc::format!("{what} of port {port:#x}"),
                evtchn_raw(cmd, port),
                Errno::EINVAL,
            );
        }
        let Ok(port32) = u32::try_from(port) else {
            continue;
        };
        let mut status = EvtchnStatus {
            port: port32,
            ..EvtchnStatus::default()
        };
        r.refused(
            &alloc::format!("STATUS of port {port:#x}"),
            evtchn_raw(EVTCHNOP_STATUS, core::ptr::addr_of_mut!(status) as u64),
            Errno::EINVAL,
        );
        let mut bind = EvtchnBindVcpu {
            port: port32,
            vcpu: 0,
        };
        r.refused(
            &alloc::format!("BIND_VCPU of port {port:#x}"),
            evtchn_raw(EVTCHNOP_BIND_VCPU, core::ptr::addr_of_mut!(bind) as u64),
            Errno::EINVAL,
        );
        let mut inter = EvtchnBindInterdomain {
            remote_dom: 0,
            remote_port: port32,
            ..EvtchnBindInterdomain::default()
        };
        r.refused(
            &alloc::format!("BIND_INTERDOMAIN to remote port {port:#x}"),
            evtchn_raw(
                EVTCHNOP_BIND_INTERDOMAIN,
                core::ptr::addr_of_mut!(inter) as u64,
            ),
            Errno::EINVAL,
        );
    }
    let mut ports = Vec::new();
    let full = loop {
        match events::alloc_unbound(0) {
            Ok(p) => ports.push(p),
            Err(e) => break e,
        }
        if ports.len() > 2000 {
            break Errno::EINVAL;
        }
    };
    r.check(
        full == Errno::ENOSPC
            && ports.len() == 1023
            && ports.iter().all(|&p| (1..1024).contains(&p)),
        format_args!(
            "the table fills at 1023 ports with ENOSPC ({} ports, {full})",
            ports.len()
        ),
    );
    r.check(
        events::status(1023).is_ok_and(|s| s.status == EVTCHNSTAT_UNBOUND),
        format_args!("port 1023, the last one, is usable"),
    );
    let closed = ports.iter().filter(|&&p| events::close(p).is_ok()).count();
    r.check(
        closed == ports.len() && open_ports(1023).is_empty(),
        format_args!("all {closed} close again"),
    );
}

/// `sched_op(POLL)` with these fields.
fn poll_raw(ports: u64, nr_ports: u32, pad: u32, timeout: u64) -> Result<u64, Errno> {
    let poll = SchedPoll {
        ports,
        nr_ports,
        pad,
        timeout,
    };
    call(
        Hypercall::SchedOp,
        [SCHEDOP_POLL, core::ptr::addr_of!(poll) as u64, 0, 0, 0],
    )
}

/// XSA-342: polling closed ports, port 0, ports past the table, too many
/// or no ports, a list in hypervisor space: refused, never blocking; a
/// poll of a usable port with a timeout returns after it.
pub fn xsa_342(r: &mut TestReport, _args: &Args<'_>) {
    let open = setup!(r, "an open port", events::alloc_unbound(0));
    let soon = system_time_ns() + 5_000_000;
    for (what, list, want) in [
        ("a closed port", alloc::vec![open + 1], Errno::EINVAL),
        ("port 0", alloc::vec![0], Errno::EINVAL),
        ("port 1024", alloc::vec![1024], Errno::EINVAL),
        ("port 2^32-1", alloc::vec![u32::MAX], Errno::EINVAL),
        (
            "an open and a closed port",
            alloc::vec![open, open + 1],
            Errno::EINVAL,
        ),
        ("9 ports", alloc::vec![open; 9], Errno::E2BIG),
    ] {
        r.refused(
            &alloc::format!("polling {what}"),
            poll_raw(list.as_ptr() as u64, list.len() as u32, 0, soon),
            want,
        );
    }
    let list = [open];
    r.refused(
        "polling no ports",
        poll_raw(list.as_ptr() as u64, 0, 0, soon),
        Errno::EINVAL,
    );
    r.refused(
        "a port list in hypervisor space",
        poll_raw(HV_ADDR, 1, 0, soon),
        Errno::EFAULT,
    );
    r.refused(
        "a poll structure in hypervisor space",
        call(Hypercall::SchedOp, [SCHEDOP_POLL, HV_ADDR, 0, 0, 0]),
        Errno::EFAULT,
    );
    let started = system_time_ns();
    let got = poll_raw(list.as_ptr() as u64, 1, 0, started + 5_000_000);
    let took = system_time_ns() - started;
    r.check(
        got.is_ok() && (5_000_000..500_000_000).contains(&took),
        format_args!(
            "polling an open, idle port with a 5 ms timeout returns after {} us",
            took / 1000
        ),
    );
    let _ = events::close(open);
}

/// Events seen by [`count_event`].
static EVENTS: AtomicU64 = AtomicU64::new(0);

fn count_event(_port: Port) {
    EVENTS.fetch_add(1, Ordering::Relaxed);
}

/// XSA-343: closing and rebinding a port 2000 times while a `sender`
/// partner (d2) sends on it as fast as it can: every close and bind
/// works, events arrive, the sender sees no error (its scenario line).
/// Also an IPI port closed while pending: sends on it are refused after.
pub fn xsa_343(r: &mut TestReport, args: &Args<'_>) {
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
    events::set_handler(port, count_event);
    setup!(r, "sending go", events::notify(port));
    let mut failures = 0;
    const CYCLES: u32 = 2000;
    for i in 0..CYCLES {
        if events::close(port).is_err() {
            failures += 1;
        }
        if i % 4 == 0 {
            sched_yield();
        }
        match events::bind_interdomain(dom, PARTNER_PORT) {
            Ok(p) => {
                port = p;
                events::set_handler(port, count_event);
            }
            Err(_) => failures += 1,
        }
        sched_yield();
    }
    let seen = EVENTS.load(Ordering::Relaxed);
    r.check(
        failures == 0,
        format_args!("{CYCLES} close/rebind cycles under a send storm, {failures} failed"),
    );
    r.check(seen > 0, format_args!("{seen} events arrived meanwhile"));
    let _ = events::close(port);
    let ipi = setup!(r, "an IPI port", events::bind_ipi());
    events::mask(ipi);
    setup!(r, "sending on it", events::notify(ipi));
    r.check(events::is_pending(ipi), format_args!("the IPI is pending"));
    r.check(
        events::close(ipi).is_ok(),
        format_args!("closing it while pending"),
    );
    r.refused(
        "sending on the closed IPI port",
        events::notify(ipi),
        Errno::EINVAL,
    );
    r.refused(
        "unmasking the closed IPI port",
        events::unmask(ipi),
        Errno::EINVAL,
    );
    events::clear_pending(ipi);
}

/// XSA-344: closing all 1023 ports, and dying with 1023 open, does not
/// stall the machine: each close is short (under 50 ms of wall time even
/// on a busy host), and a `ticker` partner (d2)
/// keeps running with its largest gap under 200 ms (its scenario line).
pub fn xsa_344(r: &mut TestReport, args: &Args<'_>) {
    let dom = args.get_u64("partner").unwrap_or(2) as DomId;
    let fill = |r: &mut TestReport| -> Vec<Port> {
        let mut ports = Vec::new();
        while let Ok(p) = events::alloc_unbound(dom) {
            ports.push(p);
        }
        r.check(
            ports.len() == 1023,
            format_args!("allocated {} ports", ports.len()),
        );
        ports
    };
    let ports = fill(r);
    let per_ms = tsc_per_ms().max(1);
    let mut longest = 0;
    let started = rdtsc();
    for p in &ports {
        let t = rdtsc();
        let _ = events::close(*p);
        longest = longest.max(rdtsc() - t);
    }
    let all = rdtsc() - started;
    // The bound is loose on purpose: the TSC is host wall time, and the
    // host may deschedule QEMU in the middle of a close. A close that
    // walked every port of every domain would still show up here.
    r.check(
        longest < 50 * per_ms,
        format_args!(
            "closing 1023 ports took {} us, the longest close {} us",
            all * 1000 / per_ms,
            longest * 1000 / per_ms
        ),
    );
    // Die with the table full: hv-core closes them all at once (EVT-4).
    let again = fill(r);
    r.pass(format_args!("ending with {} ports open", again.len()));
}
