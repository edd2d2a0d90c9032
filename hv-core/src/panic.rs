//! hv-core's panic handler: print the message and location, stop every CPU
//! (only the boot CPU runs in ABI 0.1), end the machine with `EXIT_PANIC`.

use core::fmt::Write;
use core::panic::PanicInfo;

use hypercall_abi::machine::EXIT_PANIC;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let mut out = crate::console::emergency_writer();
    let _ = out.write_str("(hv) PANIC");
    if let Some(loc) = info.location() {
        let _ = write!(out, " at {}:{}", loc.file(), loc.line());
    }
    let _ = writeln!(out, ": {}", info.message());
    crate::machine::exit(EXIT_PANIC)
}
