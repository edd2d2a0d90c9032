//! `hello`: the smallest useful guest. Greets, optionally prints numbered
//! lines (yielding after each, so domains interleave), and powers off.
//!
//! Command line: `greeting=<name>` (default: the domain name) and
//! `lines=<n>` (default 0).
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

use hypercall_abi::hypercall::{pack_version, VERSION_ABI};
use hypercall_abi::start_info::StartInfo;
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::hypercall::{sched_yield, version};
use pv_guest_kit::println;

pv_guest_kit::entry!(kmain);

fn kmain(si: &'static StartInfo) {
    let args = Args::new(si.cmdline_str());
    let greeting = args.get("greeting").unwrap_or(si.name_str());
    let lines = match args.get("lines") {
        None => 0,
        Some(text) => args
            .get_u64("lines")
            .unwrap_or_else(|| panic!("lines={text} is not a number")),
    };

    let expected = pack_version(si.abi_major, si.abi_minor);
    match version(VERSION_ABI) {
        Ok(v) if v == expected => {}
        other => panic!("version(VERSION_ABI) = {other:?}, start_info says {expected:#x}"),
    }

    println!(
        "Hello from {greeting} (domain {}, {} pages)",
        si.domid, si.nr_pages
    );
    for i in 1..=lines {
        println!("{greeting}: line {i}");
        sched_yield();
    }
}
