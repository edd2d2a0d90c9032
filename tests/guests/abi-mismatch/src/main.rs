//! `abi-mismatch`: an image that announces ABI 99.0 in its ABI note. The
//! hypervisor must refuse to build it (HC-2), so `kmain` never runs.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

use hypercall_abi::start_info::StartInfo;
use pv_guest_kit::println;

pv_guest_kit::entry_with_abi!(kmain, 99, 0);

fn kmain(_si: &'static StartInfo) {
    println!("abi-mismatch: this should never run");
}
