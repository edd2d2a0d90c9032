//! `domctl-test`: the toolstack operations (SPEC.md §16, TS-*) end to end,
//! from a domain 0 that is nothing but this test. Roles (`role=`):
//!
//! - `toolstack` (domain 0, holds `DOMAIN_BUILD`): reads held boot module 0
//!   (this same image) and builds guests from it at run time with
//!   create → populate → build → unpause; reads their consoles, gives them
//!   input, pauses, unpauses and destroys them mid-run (running on another
//!   pCPU, and blocked); checks that free memory returns to the frame; and
//!   checks each refusal (non-ELF and ABI-mismatch images with their
//!   messages, too much memory, a duplicate name, unknown domids, hostile
//!   pointers and names, destroying itself).
//! - `unprivileged` (a boot-time guest without capabilities): every toolstack
//!   operation is `EPERM`; its own console input needs no capability.
//! - `spinner` (built at run time): prints a numbered line every ~2 ms,
//!   echoes console input, forever.
//! - `blocker` (built at run time): says so, then blocks forever.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec::Vec;

use hypercall_abi::domctl::{
    DomctlCreate, DOMAIN_STATE_PAUSED, DOMAIN_STATE_RUNNING, DOMCTL_CREATE, DOMCTL_DESTROY,
    DOMCTL_PHYSINFO,
};
use hypercall_abi::start_info::StartInfo;
use hypercall_abi::{DomId, Errno, Hypercall};
use pv_guest_kit::bench::rdtsc;
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::hypercall::{console_read, hypercall_raw, sched_block, sched_yield};
use pv_guest_kit::println;
use pv_guest_kit::testing::TestReport;
use pv_guest_kit::time::now_ns;
use pv_guest_kit::toolstack::{self as ts, NewDomain};

pv_guest_kit::entry!(kmain);

fn kmain(si: &'static StartInfo) {
    let args = Args::new(si.cmdline_str());
    match args.get("role").unwrap_or("") {
        "toolstack" => toolstack(),
        "unprivileged" => unprivileged(),
        "spinner" => spinner(args.get("grant").is_some()),
        "blocker" => blocker(),
        other => panic!("unknown role `{other}`"),
    }
}

/// `domctl(op, domid, buf)` with raw arguments, for hostile-argument checks.
/// `buf` is only ever a pointer the hypervisor must refuse, or the address of
/// a live argument struct the operation only reads.
fn raw_domctl(op: u64, domid: u64, buf: u64) -> Result<u64, Errno> {
    // SAFETY: see above: the operations used here either refuse `buf` or only
    // read a live struct at it.
    let ret = unsafe { hypercall_raw(Hypercall::Domctl.number(), [op, domid, buf, 0, 0]) };
    Errno::check(ret)
}

/// Yields until `ns` of system time have passed (keeps the vCPU running:
/// the spinner wants to be on its pCPU when it is paused or destroyed).
fn spin_ns(ns: u64) {
    let until = now_ns().saturating_add(ns);
    while now_ns() < until {
        sched_yield();
    }
}

/// Blocks for `ns` on this vCPU's timer (a toolstack polling in a tight loop
/// would keep the domain table lock busy for everyone else).
fn sleep_ns(ns: u64) {
    if let Err(e) = pv_guest_kit::time::sleep_ns(0, ns) {
        panic!("sleep: {e}");
    }
}

/// Checks `cond` every 0.2 ms until it holds or `timeout_ns` passes; returns
/// whether it held.
fn wait_for(timeout_ns: u64, mut cond: impl FnMut() -> bool) -> bool {
    let until = now_ns().saturating_add(timeout_ns);
    loop {
        if cond() {
            return true;
        }
        if now_ns() > until {
            return false;
        }
        sleep_ns(200_000);
    }
}

const SECOND: u64 = 1_000_000_000;

/// The marker the spinner writes into the frame it grants to domain 0.
const GRANT_MARKER: u64 = 0x5a5a_1234_dead_beef;

fn spinner(grant: bool) {
    println!("spinner: up");
    if grant {
        // A frame domain 0 maps, so that it is destroyed mid-I/O (TS-6).
        let mut table = pv_guest_kit::grants::GrantTable::setup(1)
            .unwrap_or_else(|e| panic!("grant table: {e}"));
        let mut frame =
            pv_guest_kit::mm::Frame::alloc_zeroed().unwrap_or_else(|e| panic!("frame: {e:?}"));
        frame.write_u64(0, GRANT_MARKER);
        let gref = table
            .grant_access(0, frame.mfn(), false)
            .unwrap_or_else(|e| panic!("grant: {e}"));
        println!("spinner: granted gref {gref}");
        // Both stay for the rest of its life.
        core::mem::forget(table);
        core::mem::forget(frame);
    }
    let mut input = [0u8; 64];
    let mut n = 0u64;
    loop {
        n += 1;
        println!("spinner: line {n}");
        if let Ok(got) = console_read(&mut input) {
            if got > 0 {
                let text = core::str::from_utf8(&input[..got]).unwrap_or("?");
                println!("spinner: input `{}`", text.trim_end());
            }
        }
        spin_ns(2_000_000);
    }
}

fn blocker() {
    if let Err(e) = pv_guest_kit::events::power_off_on_shutdown_request() {
        panic!("binding VIRQ_SHUTDOWN_REQUEST: {e}");
    }
    println!("blocker: blocking");
    pv_guest_kit::console::flush();
    loop {
        sched_block();
    }
}

fn unprivileged() {
    let mut t = TestReport::new("domctl-unprivileged");
    let cfg = NewDomain {
        name: "nope",
        max_pages: 16,
        vcpus: 1,
        weight: 0,
        cap_percent: 0,
    };
    t.refused(
        "domain_create without DOMAIN_BUILD",
        ts::domain_create(&cfg),
        Errno::EPERM,
    );
    t.refused("domain_populate", ts::domain_populate(0, 1), Errno::EPERM);
    let mut err = [0u8; 16];
    t.refused(
        "domain_build",
        ts::domain_build(0, b"x", "", &mut err).map_err(|(e, _)| e),
        Errno::EPERM,
    );
    t.refused(
        "domain_pause of domain 0",
        ts::domain_pause(0),
        Errno::EPERM,
    );
    t.refused("domain_unpause", ts::domain_unpause(0), Errno::EPERM);
    t.refused(
        "domain_destroy of domain 0",
        ts::domain_destroy(0),
        Errno::EPERM,
    );
    t.refused("domain_shutdown", ts::domain_shutdown(0, 0), Errno::EPERM);
    let mut buf = [0u8; 64];
    t.refused(
        "console_read of domain 0",
        ts::console_read(0, 0, &mut buf),
        Errno::EPERM,
    );
    t.refused("console_input", ts::console_input(0, b"x"), Errno::EPERM);
    t.refused("hv_log_read", ts::hv_log_read(0, &mut buf), Errno::EPERM);
    t.refused("mgmt_read", ts::mgmt_read(&mut buf), Errno::EPERM);
    t.refused("mgmt_write", ts::mgmt_write(b"x"), Errno::EPERM);
    t.refused(
        "boot_module_read",
        ts::boot_module_read(0, 0, &mut buf),
        Errno::EPERM,
    );
    t.refused(
        "domain_info without DOMAIN_QUERY",
        ts::domain_info(0),
        Errno::EPERM,
    );
    t.refused(
        "physinfo without DOMAIN_QUERY",
        ts::physinfo(),
        Errno::EPERM,
    );
    // A hostile pointer is not even looked at without the capability.
    t.refused(
        "domain_create with a hypervisor pointer",
        raw_domctl(DOMCTL_CREATE, 0, 0xffff_8000_0000_0000),
        Errno::EPERM,
    );
    // Its own console input needs no capability (HC-11, since 0.6): wait for
    // what the toolstack queues.
    println!("unprivileged: waiting for input");
    let mut got = Vec::new();
    let arrived = wait_for(20 * SECOND, || {
        let mut b = [0u8; 32];
        match console_read(&mut b) {
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) => panic!("console_read of its own input: {e}"),
        }
        got.ends_with(b"\n")
    });
    t.check(
        arrived && got == b"ping from d0\n",
        format_args!("own console input {:?} arrives", core::str::from_utf8(&got)),
    );
    t.finish()
}

/// Reads held boot module `index` whole.
fn read_module(index: u32) -> Result<Vec<u8>, Errno> {
    let mut image = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let piece = ts::boot_module_read(index, image.len() as u64, &mut chunk)?;
        if image.is_empty() {
            // Guest heaps are small: no doubling.
            image.reserve_exact(piece.size as usize);
        }
        image.extend_from_slice(&chunk[..piece.copied]);
        if piece.copied == 0 || image.len() as u64 >= piece.size {
            return Ok(image);
        }
    }
}

/// The whole console output of `domid` so far (what the ring still holds).
fn console_text(domid: DomId) -> Result<(Vec<u8>, u64), Errno> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut offset = 0;
    let mut first_start = None;
    loop {
        let c = ts::console_read(domid, offset, &mut buf)?;
        first_start.get_or_insert(c.start);
        out.extend_from_slice(&buf[..c.len as usize]);
        offset = c.start + c.len;
        if c.len == 0 || offset >= c.end {
            return Ok((out, first_start.unwrap_or(0)));
        }
    }
}

/// The first u64 of a granted frame mapped at `va`.
fn read_marker(va: u64) -> u64 {
    // SAFETY: `va` is a page mapped by a grant mapping this domain holds; it is
    // only read, through a raw volatile access (no Rust reference to it).
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Waits until `domid` is no longer listed (reaped).
fn wait_gone(domid: DomId) -> bool {
    wait_for(
        10 * SECOND,
        || !matches!(ts::domain_info(domid), Ok(i) if i.domid == domid),
    )
}

fn free_pages() -> u64 {
    ts::physinfo().map(|p| p.free_pages).unwrap_or(0)
}

struct Built {
    domid: DomId,
    cycles: u64,
}

/// create → populate → build (paused), timing the hypervisor steps.
fn make(name: &str, pages: u64, image: &[u8], cmdline: &str) -> Result<Built, (Errno, Vec<u8>)> {
    let cfg = NewDomain {
        name,
        max_pages: pages,
        vcpus: 1,
        weight: 0,
        cap_percent: 0,
    };
    let t0 = rdtsc();
    let domid = ts::domain_create(&cfg).map_err(|e| (e, Vec::new()))?;
    let mut err = [0u8; 160];
    let built = ts::domain_populate(domid, pages)
        .map_err(|e| (e, 0))
        .and_then(|()| ts::domain_build(domid, image, cmdline, &mut err));
    let cycles = rdtsc() - t0;
    match built {
        Ok(()) => Ok(Built { domid, cycles }),
        Err((e, n)) => {
            let _ = ts::domain_destroy(domid);
            wait_gone(domid);
            Err((e, err[..n].to_vec()))
        }
    }
}

fn toolstack() {
    let mut t = TestReport::new("domctl");
    let Some(phys) = t.setup("physinfo", ts::physinfo()) else {
        t.finish()
    };
    println!(
        "domctl: ABI {}.{}, {} CPU(s), {} of {} pages free, {} held module(s), TSC {} Hz",
        phys.abi_major,
        phys.abi_minor,
        phys.nr_cpus,
        phys.free_pages,
        phys.total_pages,
        phys.nr_boot_modules,
        phys.tsc_hz
    );
    let features = pv_guest_kit::hypercall::features();
    t.check(
        features.is_ok_and(|f| f.contains(hypercall_abi::hypercall::Features::TOOLSTACK)),
        format_args!("the TOOLSTACK feature bit is set"),
    );
    t.check(
        phys.abi_minor >= 6 && phys.nr_boot_modules == 2 && phys.free_pages <= phys.total_pages,
        format_args!("physinfo is plausible"),
    );

    // The unprivileged guest (d1) gets console input, then ends.
    let queued = ts::console_input(1, b"ping from d0\n");
    t.check(
        queued == Ok(13),
        format_args!("console_input queued {queued:?}"),
    );
    t.check(wait_gone(1), format_args!("the unprivileged guest ended"));
    t.refused(
        "console_read of a gone domain",
        ts::console_read(1, 0, &mut [0u8; 8]),
        Errno::ESRCH,
    );

    let Some(future) = t.setup("read held module 1", read_module(1)) else {
        t.finish()
    };
    t.refused(
        "boot_module_read past the last",
        ts::boot_module_read(2, 0, &mut [0u8; 8]),
        Errno::ENOENT,
    );

    let baseline = free_pages();
    println!("domctl: baseline {baseline} free pages");
    t.check(
        future.starts_with(b"\x7fELF"),
        format_args!("held module 1 is an ELF image ({} bytes)", future.len()),
    );

    // Refusals, each with nothing left behind.
    let bad = [0x42u8; 512];
    match make("not-elf", 1024, &bad, "") {
        Err((Errno::EINVAL, msg)) => {
            let msg = core::str::from_utf8(&msg).unwrap_or("?");
            println!("domctl: non-ELF image refused: {msg}");
            t.check(
                msg.contains("not an ELF file"),
                format_args!("non-ELF message `{msg}`"),
            );
        }
        other => t.fail(format_args!("non-ELF image: {:?}", other.map(|b| b.domid))),
    }
    match make("future", 1024, &future, "") {
        Err((Errno::EINVAL, msg)) => {
            let msg = core::str::from_utf8(&msg).unwrap_or("?");
            println!("domctl: ABI-mismatch image refused: {msg}");
            t.check(
                msg.contains("ABI 99.0 is not supported"),
                format_args!("ABI-mismatch message `{msg}`"),
            );
        }
        other => t.fail(format_args!(
            "ABI-mismatch image: {:?}",
            other.map(|b| b.domid)
        )),
    }
    // Guest heaps are small: one image at a time.
    drop(future);
    let Some(image) = t.setup("read held module 0", read_module(0)) else {
        t.finish()
    };
    t.check(
        image.starts_with(b"\x7fELF"),
        format_args!("held module 0 is an ELF image ({} bytes)", image.len()),
    );
    match make("tiny", 4, &image, "role=spinner") {
        Err((Errno::EINVAL, msg)) => {
            let msg = core::str::from_utf8(&msg).unwrap_or("?");
            println!("domctl: image in too little memory refused: {msg}");
        }
        other => t.fail(format_args!("4-page domain: {:?}", other.map(|b| b.domid))),
    }
    let greedy = NewDomain {
        name: "greedy",
        max_pages: baseline + 10,
        vcpus: 1,
        weight: 0,
        cap_percent: 0,
    };
    t.refused(
        "more memory than is free",
        ts::domain_create(&greedy),
        Errno::ENOMEM,
    );
    let dup = NewDomain {
        name: "dup",
        max_pages: 64,
        vcpus: 1,
        weight: 0,
        cap_percent: 0,
    };
    match ts::domain_create(&dup) {
        Ok(first) => {
            t.refused("a duplicate name", ts::domain_create(&dup), Errno::EEXIST);
            t.refused(
                "populate beyond max_pages",
                ts::domain_populate(first, 65),
                Errno::ERANGE,
            );
            t.refused(
                "populate 0 pages",
                ts::domain_populate(first, 0),
                Errno::EINVAL,
            );
            t.refused(
                "unpause of a never-built domain",
                ts::domain_unpause(first),
                Errno::EINVAL,
            );
            let info = ts::domain_info(first);
            t.check(
                matches!(info, Ok(i) if i.domid == first && i.state == DOMAIN_STATE_PAUSED && i.built == 0 && i.nr_pages == 0),
                format_args!("a created domain is paused, unbuilt, empty"),
            );
            t.check(
                ts::domain_destroy(first).is_ok() && wait_gone(first),
                format_args!("destroy of a never-populated domain"),
            );
        }
        Err(e) => t.fail(format_args!("create `dup`: {e}")),
    }
    let bad_names: [&[u8]; 4] = [b"", b"has space", &[0xc3, 0x28], &[b'x'; 32]];
    for name in bad_names {
        let mut arg = DomctlCreate {
            max_pages: 16,
            vcpus: 1,
            name_len: name.len() as u32,
            ..DomctlCreate::default()
        };
        let n = name.len().min(32);
        arg.name[..n].copy_from_slice(&name[..n]);
        let ret = raw_domctl(DOMCTL_CREATE, 0, &arg as *const DomctlCreate as u64);
        t.refused("create with a bad name", ret, Errno::EINVAL);
    }
    for (what, ptr) in [
        ("a hypervisor pointer", 0xffff_8000_0000_0000u64),
        ("an unmapped pointer", 0x7000_0000_0000),
    ] {
        t.refused(what, raw_domctl(DOMCTL_PHYSINFO, 0, ptr), Errno::EFAULT);
    }
    t.refused("destroy of itself", ts::domain_destroy(0), Errno::EPERM);
    t.refused("pause of itself", ts::domain_pause(0), Errno::EINVAL);
    t.refused(
        "pause of an unknown domain",
        ts::domain_pause(0x7fff),
        Errno::ESRCH,
    );
    t.refused(
        "destroy of an unknown domain",
        ts::domain_destroy(0x7fff),
        Errno::ESRCH,
    );
    t.refused(
        "destroy of domid 2^32",
        raw_domctl(DOMCTL_DESTROY, 1 << 32, 0),
        Errno::ESRCH,
    );
    t.refused(
        "console_read of an unknown domain",
        ts::console_read(0x7fff, 0, &mut [0u8; 8]),
        Errno::ESRCH,
    );
    t.check(
        free_pages() == baseline,
        format_args!("free memory back to the baseline after the refusals"),
    );

    // Empty 32-vCPU domains until the hypervisor heap says no: ENOMEM, not
    // a hypervisor out-of-memory; then they all go.
    let mut many: Vec<DomId> = Vec::new();
    let last = loop {
        let name = alloc::format!("heap-{}", many.len());
        let cfg = NewDomain {
            name: &name,
            max_pages: 1,
            vcpus: 32,
            weight: 0,
            cap_percent: 0,
        };
        match ts::domain_create(&cfg) {
            Ok(id) if many.len() < 64 => many.push(id),
            Ok(id) => {
                many.push(id);
                break Ok(());
            }
            Err(e) => break Err(e),
        }
    };
    println!(
        "domctl: {} empty 32-vCPU domains before {last:?}",
        many.len()
    );
    t.check(
        last == Err(Errno::ENOMEM) && !many.is_empty(),
        format_args!("the hypervisor heap runs out with ENOMEM"),
    );
    for &id in &many {
        t.check(
            ts::domain_destroy(id).is_ok() && wait_gone(id),
            format_args!("destroy empty domain {id}"),
        );
    }
    t.check(
        free_pages() == baseline,
        format_args!("free memory back to the baseline after the heap test"),
    );

    // A guest built at run time, running on the other pCPU.
    let pages = 1024;
    let Some(g) = t.setup(
        "build the spinner",
        make("spinner", pages, &image, "role=spinner grant=1").map_err(|(e, msg)| {
            alloc::format!("{e}: {}", core::str::from_utf8(&msg).unwrap_or("?"))
        }),
    ) else {
        t.finish()
    };
    let info = ts::domain_info(g.domid);
    let hv_cycles = info.map(|i| i.hv_build_cycles).unwrap_or(0);
    println!(
        "domctl: create+populate+build of a {pages}-page guest: {} TSC cycles ({} in hv-core)",
        g.cycles, hv_cycles
    );
    t.check(
        matches!(info, Ok(i) if i.built == 1 && i.paused == 1 && i.nr_pages == pages && i.first_output_tsc == 0),
        format_args!("built, still paused, silent"),
    );
    let t_unpause = rdtsc();
    t.check(ts::domain_unpause(g.domid).is_ok(), format_args!("unpause"));
    let up = wait_for(10 * SECOND, || {
        console_text(g.domid).is_ok_and(|(text, _)| contains(&text, b"spinner: line 3\n"))
    });
    t.check(
        up,
        format_args!("its console lines arrive through console_read"),
    );
    if let Ok(i) = ts::domain_info(g.domid) {
        println!(
            "domctl: unpause to first console output: {} TSC cycles; on pCPU-time {} ns so far",
            i.first_output_tsc.saturating_sub(t_unpause),
            i.cpu_ns
        );
        t.check(
            i.state == DOMAIN_STATE_RUNNING && i.first_output_tsc > i.created_tsc,
            format_args!("running, first output stamped"),
        );
    }
    t.check(
        ts::console_input(g.domid, b"hello spinner\n") == Ok(14),
        format_args!("input queued"),
    );
    t.check(
        wait_for(10 * SECOND, || {
            console_text(g.domid)
                .is_ok_and(|(text, _)| contains(&text, b"spinner: input `hello spinner`"))
        }),
        format_args!("the spinner echoes its input"),
    );

    // Map the frame it granted, as a backend would.
    let gref = console_text(g.domid).ok().and_then(|(text, _)| {
        let at = text
            .windows(21)
            .position(|w| w == b"spinner: granted gref")?;
        let digits: Vec<u8> = text[at + 22..]
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        core::str::from_utf8(&digits).ok()?.parse::<u32>().ok()
    });
    let mapping = gref.and_then(|gref| {
        let va = pv_guest_kit::mm::reserve_va(1).ok()?.start();
        pv_guest_kit::grants::map(g.domid, gref, va, false).ok()
    });
    t.check(
        mapping
            .as_ref()
            .is_some_and(|m| read_marker(m.va()) == GRANT_MARKER),
        format_args!("domain 0 maps the spinner's grant {gref:?}"),
    );
    t.check(
        ts::domain_info(g.domid).is_ok_and(|i| i.grant_entries_in_use == 1),
        format_args!("info counts its mapped grant entry"),
    );

    // Pause: output stops (it runs on another pCPU: the kick must stop it).
    t.check(ts::domain_pause(g.domid).is_ok(), format_args!("pause"));
    let end_at_pause = ts::domain_info(g.domid).map(|i| i.console_end).unwrap_or(0);
    sleep_ns(SECOND / 5);
    let info = ts::domain_info(g.domid);
    t.check(
        matches!(info, Ok(i) if i.state == DOMAIN_STATE_PAUSED && i.console_end == end_at_pause),
        format_args!("paused: no output for 200 ms"),
    );
    t.check(
        ts::domain_unpause(g.domid).is_ok(),
        format_args!("unpause again"),
    );
    t.check(
        wait_for(10 * SECOND, || {
            ts::domain_info(g.domid).is_ok_and(|i| i.console_end > end_at_pause + 100)
        }),
        format_args!("output resumes after unpause"),
    );
    // Pause and unpause it in quick succession while it runs on the other
    // pCPU (this found a pCPU resuming a vCPU from a stale stack pointer
    // while another pCPU was still parking it).
    let mut cycles_ok = true;
    for i in 0..200u64 {
        cycles_ok &= ts::domain_pause(g.domid).is_ok();
        if i % 3 == 0 {
            sleep_ns(300_000);
        }
        cycles_ok &= ts::domain_unpause(g.domid).is_ok();
        sleep_ns(200_000 + (i % 7) * 100_000);
    }
    let end_after_cycles = ts::domain_info(g.domid).map(|i| i.console_end).unwrap_or(0);
    t.check(
        cycles_ok
            && wait_for(10 * SECOND, || {
                ts::domain_info(g.domid).is_ok_and(|i| i.console_end > end_after_cycles + 100)
            }),
        format_args!("200 pause/unpause cycles, and it still runs"),
    );
    // Let the ring wrap, then check loss is reported.
    let wrapped = wait_for(30 * SECOND, || {
        ts::domain_info(g.domid).is_ok_and(|i| i.console_end > 17 * 1024)
    });
    if wrapped {
        let c = ts::console_read(g.domid, 0, &mut [0u8; 64]);
        t.check(
            matches!(c, Ok(c) if c.start > 0 && c.start + 16 * 1024 >= c.end && c.len == 64),
            format_args!("lost output is reported: {c:?}"),
        );
        t.refused(
            "console_read past the end",
            ts::console_read(g.domid, u64::MAX, &mut [0u8; 8]),
            Errno::EINVAL,
        );
    } else {
        t.fail(format_args!("the console ring did not fill"));
    }

    // Destroy it mid-run.
    let t_destroy = rdtsc();
    t.check(
        ts::domain_destroy(g.domid).is_ok(),
        format_args!("destroy mid-run"),
    );
    let gone = wait_gone(g.domid);
    println!(
        "domctl: destroy until reaped: {} TSC cycles",
        rdtsc() - t_destroy
    );
    t.check(gone, format_args!("the destroyed spinner is reaped"));
    if let Some(m) = mapping {
        // The granted frame outlives its owner while domain 0 maps it.
        t.check(
            free_pages() == baseline - 1 && read_marker(m.va()) == GRANT_MARKER,
            format_args!("the mapped frame stays until domain 0 unmaps it"),
        );
        t.check(
            m.unmap().is_ok(),
            format_args!("domain 0 unmaps the dead domain's grant"),
        );
    }
    t.check(
        free_pages() == baseline,
        format_args!(
            "free memory back to the baseline, to the frame ({} vs {baseline})",
            free_pages()
        ),
    );
    t.refused(
        "console_read of a destroyed domain",
        ts::console_read(g.domid, 0, &mut [0u8; 8]),
        Errno::ESRCH,
    );

    // A blocked guest is destroyed too.
    match make("blocker", 512, &image, "role=blocker") {
        Ok(b) => {
            let hv = ts::domain_info(b.domid)
                .map(|i| i.hv_build_cycles)
                .unwrap_or(0);
            println!(
                "domctl: create+populate+build of a 512-page guest: {} TSC cycles ({hv} in hv-core)",
                b.cycles
            );
            t.check(
                ts::domain_unpause(b.domid).is_ok(),
                format_args!("unpause the blocker"),
            );
            let blocked = wait_for(10 * SECOND, || {
                console_text(b.domid).is_ok_and(|(text, _)| contains(&text, b"blocker: blocking"))
            });
            sleep_ns(SECOND / 20);
            t.check(blocked, format_args!("the blocker runs"));
            t.check(
                ts::domain_destroy(b.domid).is_ok() && wait_gone(b.domid),
                format_args!("destroy of a blocked domain"),
            );
        }
        Err((e, _)) => t.fail(format_args!("build the blocker: {e}")),
    }
    t.check(
        free_pages() == baseline,
        format_args!("free memory back to the baseline after the blocker"),
    );

    // A polite shutdown (TS-7): a guest that bound VIRQ_SHUTDOWN_REQUEST
    // powers itself off.
    match make("polite", 512, &image, "role=blocker") {
        Ok(b) => {
            t.check(
                ts::domain_unpause(b.domid).is_ok(),
                format_args!("unpause the polite guest"),
            );
            let blocked = wait_for(10 * SECOND, || {
                console_text(b.domid).is_ok_and(|(text, _)| contains(&text, b"blocker: blocking"))
            });
            t.check(blocked, format_args!("the polite guest runs"));
            t.refused(
                "shutdown with a bad reason",
                ts::domain_shutdown(b.domid, 77),
                Errno::EINVAL,
            );
            t.refused(
                "shutdown of itself",
                ts::domain_shutdown(0, 0),
                Errno::EPERM,
            );
            t.check(
                ts::domain_shutdown(b.domid, 0).is_ok(),
                format_args!("shutdown request sent"),
            );
            let state = wait_for(
                10 * SECOND,
                || !matches!(ts::domain_info(b.domid), Ok(i) if i.domid == b.domid && i.state != hypercall_abi::domctl::DOMAIN_STATE_SHUTDOWN),
            );
            t.check(
                state && wait_gone(b.domid),
                format_args!("it shut itself down and was reaped"),
            );
        }
        Err((e, _)) => t.fail(format_args!("build the polite guest: {e}")),
    }
    t.check(
        free_pages() == baseline,
        format_args!("free memory back to the baseline after the polite shutdown"),
    );

    // Every toolstack operation with hostile domids and pointers: an error
    // each time, and nothing else happens (the hypervisor and this domain
    // carry on; free memory is unchanged).
    let mut accepted = 0;
    let mut calls = 0;
    for op in 1..=15u64 {
        for domid in [0u64, 1, 0x7fff, 1 << 32, u64::MAX] {
            for buf in [
                0u64,
                1,
                0x7000_0000_0000,
                0xffff_8000_0000_0000,
                u64::MAX - 7,
            ] {
                calls += 1;
                if let Ok(v) = raw_domctl(op, domid, buf) {
                    accepted += 1;
                    println!("domctl: op {op} domid {domid:#x} buf {buf:#x} accepted: {v}");
                }
            }
        }
    }
    t.check(
        accepted == 0 && free_pages() == baseline,
        format_args!("{calls} hostile toolstack calls all refused"),
    );

    let mut log = [0u8; 4096];
    let hv_log = ts::hv_log_read(0, &mut log);
    t.check(
        matches!(hv_log, Ok(c) if c.len > 0 && c.end >= c.len),
        format_args!("hv log readable ({hv_log:?})"),
    );
    let mut mgmt = [0u8; 16];
    t.check(
        ts::mgmt_read(&mut mgmt) == Ok(0),
        format_args!("management UART: nothing received"),
    );
    let sent = ts::mgmt_write(b"mgmt hello\n");
    t.check(
        sent == Ok(11),
        format_args!("management UART takes bytes ({sent:?})"),
    );
    t.finish()
}
