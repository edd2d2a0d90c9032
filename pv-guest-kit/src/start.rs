//! Start of day (SPEC.md §5, HC-6): the image entry point and [`kit_start`].
//!
//! hv-core enters `_pv_start` in ring 3 with rsp at the top of the 64 KiB
//! start-of-day stack and rsi = the start_info page. `_pv_start` (emitted by
//! [`entry!`](crate::entry) in the guest crate, so exactly once per image) does
//! `mov rdi, rsi; and rsp, -16; call <trampoline>; ud2`; the trampoline calls
//! [`kit_start`] with the guest's `main`.
//!
//! [`kit_start`] checks start_info, records it for [`start_info()`], sets up
//! the heap and the frame allocator ([`crate::mm::init`]), installs the
//! default trap table ([`crate::traps::install`]), runs `main`, then
//! flushes the console and powers the domain off.
#![forbid(unsafe_code)]

use hypercall_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF};
use hypercall_abi::start_info::{StartInfo, START_INFO_MAGIC};
use hypercall_abi::{ABI_MAJOR, ABI_MINOR};
use spin::Once;

use crate::hypercall::shutdown;

/// The start_info page, once [`kit_start`] has checked it.
static START_INFO: Once<&'static StartInfo> = Once::new();

/// This domain's start_info. Panics before [`kit_start`] has run (it runs
/// before `main`, so only code that runs earlier than `main` can see that).
pub fn start_info() -> &'static StartInfo {
    match START_INFO.get() {
        Some(si) => si,
        None => panic!("start_info() called before kit_start"),
    }
}

/// Why a start_info page cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// `magic` is not `START_INFO_MAGIC`.
    BadMagic,
    /// The hypervisor speaks another ABI major than the kit was built for.
    AbiMajor { hypervisor: u32 },
}

/// Checks that `si` is a start_info page this kit understands.
pub fn check_start_info(si: &StartInfo) -> Result<(), StartError> {
    if si.magic != START_INFO_MAGIC {
        return Err(StartError::BadMagic);
    }
    if si.abi_major != ABI_MAJOR {
        return Err(StartError::AbiMajor {
            hypervisor: si.abi_major,
        });
    }
    Ok(())
}

/// Runs the guest: checks `si`, installs the default trap table, calls `main`,
/// then powers off. What `_pv_start` leads to; guests never call it.
///
/// `si` comes from rsi at entry, which the hypervisor guarantees to be the
/// start_info page, mapped for the domain's lifetime (HC-6).
#[doc(hidden)]
pub fn kit_start(si: &'static StartInfo, main: fn(&'static StartInfo)) -> ! {
    match check_start_info(si) {
        Ok(()) => {}
        Err(StartError::BadMagic) => {
            crate::println!("pv-guest-kit: start_info has a bad magic; refusing to run");
            shutdown(SHUTDOWN_CRASH)
        }
        Err(StartError::AbiMajor { hypervisor }) => {
            crate::println!(
                "pv-guest-kit: built for ABI {ABI_MAJOR}.{ABI_MINOR}, the hypervisor speaks {hypervisor}.{}",
                si.abi_minor
            );
            shutdown(SHUTDOWN_CRASH)
        }
    }
    START_INFO.call_once(|| si);
    crate::mm::init(si);
    if let Err(err) = crate::traps::install() {
        panic!("set_trap_table failed: {err}");
    }
    main(si);
    shutdown(SHUTDOWN_POWEROFF)
}

/// Declares the guest's `main` (`fn(&'static StartInfo)`), built against the
/// kit's ABI version. See [`entry_with_abi!`](crate::entry_with_abi).
///
/// The function must not be called `main` (on the host the macro defines a
/// `fn main()`); guests use `kmain`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        $crate::entry_with_abi!($main, $crate::abi::ABI_MAJOR, $crate::abi::ABI_MINOR);
    };
}

/// Declares the guest's `main`, announcing ABI `major.minor` in the image's
/// ABI note (tests use this to build an image the hypervisor must refuse).
///
/// On the kernel target this emits, once per image: the `_pv_start` entry
/// point, the `NOTE_ABI_VERSION` and `NOTE_HYPERCALL_PAGE` notes. On the host it
/// emits a `fn main()` that explains this is a guest kernel and exits with 1.
#[macro_export]
macro_rules! entry_with_abi {
    ($main:path, $major:expr, $minor:expr) => {
        #[cfg(target_os = "none")]
        const _: () = {
            /// The image's ABI note.
            #[allow(unsafe_code)]
            #[link_section = ".note.paravane"]
            #[used]
            static PV_NOTE_ABI: $crate::note::AbiNote = $crate::note::AbiNote::new($major, $minor);

            /// The image's hypercall-page note.
            #[allow(unsafe_code)]
            #[link_section = ".note.paravane"]
            #[used]
            static PV_NOTE_HYPERCALL_PAGE: $crate::note::HypercallPageNote =
                $crate::note::HypercallPageNote::new(&$crate::hypercall::HYPERCALL_PAGE);
        };

        /// Called by `_pv_start` with rdi = the start_info page (HC-6).
        #[cfg(target_os = "none")]
        extern "C" fn __pv_guest_kit_entry(si: &'static $crate::abi::start_info::StartInfo) -> ! {
            $crate::start::kit_start(si, $main)
        }

        #[cfg(target_os = "none")]
        ::core::arch::global_asm!(
            ".pushsection .text._pv_start, \"ax\", @progbits",
            ".globl _pv_start",
            ".type _pv_start, @function",
            "_pv_start:",
            "mov rdi, rsi",
            "and rsp, -16",
            "call {entry}",
            "ud2",
            ".size _pv_start, . - _pv_start",
            ".popsection",
            entry = sym __pv_guest_kit_entry,
        );

        #[cfg(not(target_os = "none"))]
        fn main() {
            let _: fn(&'static $crate::abi::start_info::StartInfo) = $main;
            let _ = ($major, $minor);
            ::std::eprintln!("this is a Paravane guest kernel; boot it with `cargo xtask run`");
            ::std::process::exit(1);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn start_info_checks() {
        let mut si = StartInfo::new_zeroed();
        assert_eq!(check_start_info(&si), Err(StartError::BadMagic));
        si.magic = START_INFO_MAGIC;
        si.abi_major = ABI_MAJOR + 1;
        assert_eq!(
            check_start_info(&si),
            Err(StartError::AbiMajor {
                hypervisor: ABI_MAJOR + 1
            })
        );
        si.abi_major = ABI_MAJOR;
        si.abi_minor = ABI_MINOR + 5;
        assert_eq!(check_start_info(&si), Ok(()));
    }
}
