//! `xsa-suite`: Paravane's security regression guests, one test per bug
//! class Xen's advisories (XSAs) name, written against Paravane's ABI
//! (SPEC.md). One image, one test per boot: the command line's
//! `test=xsa-<n>` picks it, and each test has its own scenario named after
//! it. A test reports through [`pv_guest_kit::testing`] and ends the
//! domain after its one result line; its scenario requires
//! `test result: xsa-<n>: SUCCESS`.
//!
//! Every test passes by *observing the attack fail* (an error code, a
//! refused mapping, a fault where access must be gone, a killed attacker)
//! while the hypervisor and any victim carry on, never by not trying.
//!
//! Tests that need a second domain (grants, event channels, rings) boot
//! this image a second time with `role=<partner role>` (see [`partner`]).
//!
//! | module | classes |
//! |---|---|
//! | [`mmu`] | 148, 167, 182, 212, 213, 240, 286, 299 |
//! | [`grant`] | 224, 226, 227, 230, 234, 316, 380 |
//! | [`evtchn`] | 188, 317, 342, 343, 344 |
//! | [`ring`] | 155, 216, 332, 391 |
//! | [`entry`] | 7, 204, 260, 339 |
//! | [`race`] | 401 (two vCPUs) |
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

mod arch;
mod attack;
mod entry;
mod evtchn;
mod grant;
mod mmu;
mod partner;
mod race;
mod ring;

use hypercall_abi::start_info::StartInfo;
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::testing::TestReport;

pv_guest_kit::entry!(kmain);

/// A test: its name (also its scenario's) and its body.
type Test = (&'static str, fn(&mut TestReport, &Args<'_>));

/// Every test, by name.
const TESTS: &[Test] = &[
    ("xsa-7", |r, _| entry::xsa_7(r)),
    ("xsa-148", |r, _| mmu::xsa_148(r)),
    ("xsa-155", ring::xsa_155),
    ("xsa-167", |r, _| mmu::xsa_167(r)),
    ("xsa-182", |r, _| mmu::xsa_182(r)),
    ("xsa-188", evtchn::xsa_188),
    ("xsa-204", |r, _| entry::xsa_204(r)),
    ("xsa-212", |r, _| mmu::xsa_212(r)),
    ("xsa-213", |r, _| mmu::xsa_213(r)),
    ("xsa-216", ring::xsa_216),
    ("xsa-224", grant::xsa_224),
    ("xsa-226", grant::xsa_226),
    ("xsa-227", grant::xsa_227),
    ("xsa-230", grant::xsa_230),
    ("xsa-234", grant::xsa_234),
    ("xsa-240", |r, _| mmu::xsa_240(r)),
    ("xsa-260", |r, _| entry::xsa_260(r)),
    ("xsa-286", |r, _| mmu::xsa_286(r)),
    ("xsa-299", |r, _| mmu::xsa_299(r)),
    ("xsa-316", grant::xsa_316),
    ("xsa-317", evtchn::xsa_317),
    ("xsa-332", ring::xsa_332),
    ("xsa-339", |r, _| entry::xsa_339(r)),
    ("xsa-342", evtchn::xsa_342),
    ("xsa-343", evtchn::xsa_343),
    ("xsa-344", evtchn::xsa_344),
    ("xsa-380", grant::xsa_380),
    ("xsa-391", ring::xsa_391),
    ("xsa-401", |r, _| race::xsa_401(r)),
];

fn kmain(si: &'static StartInfo) {
    let args = Args::new(si.cmdline_str());
    if let Some(role) = args.get("role") {
        partner::run(role, &args);
        return;
    }
    let Some(name) = args.get("test") else {
        panic!("xsa-suite: test=<name> or role=<role> missing");
    };
    let Some(&(name, body)) = TESTS.iter().find(|(n, _)| *n == name) else {
        panic!("xsa-suite: no test called {name}");
    };
    let mut report = TestReport::new(name);
    body(&mut report, &args);
    report.finish()
}
