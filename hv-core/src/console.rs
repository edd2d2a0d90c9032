//! The hypervisor console: hv-core's own log lines (`(hv) ...`, through the
//! `log` crate) and each domain's console output (`(d<domid>) ...`), merged
//! line by line onto the serial port so that lines never interleave.
//!
//! Guest bytes are untrusted: control characters other than tab are escaped,
//! and lines are cut at [`LINE_MAX`] bytes.

use core::fmt::{self, Write};

/// Longest console line, in bytes, before it is split.
pub const LINE_MAX: usize = 200;

/// A domain's partial console line.
#[derive(Default)]
pub struct LineBuffer {
    buf: heapless::Vec<u8, LINE_MAX>,
}

impl LineBuffer {
    pub const fn new() -> LineBuffer {
        LineBuffer {
            buf: heapless::Vec::new(),
        }
    }

    /// Adds guest output; calls `emit` with every completed line (without its
    /// newline, not yet escaped).
    pub fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        for &b in bytes {
            if b == b'\n' {
                emit(&self.buf);
                self.buf.clear();
                continue;
            }
            if b == b'\r' {
                continue;
            }
            if self.buf.push(b).is_err() {
                emit(&self.buf);
                self.buf.clear();
                let _ = self.buf.push(b);
            }
        }
    }

    /// Emits what is buffered, if anything (e.g. when the domain ends).
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            emit(&self.buf);
            self.buf.clear();
        }
    }
}

/// Writes guest bytes with anything that could drive a terminal escaped.
pub fn write_escaped(out: &mut dyn Write, line: &[u8]) -> fmt::Result {
    for &b in line {
        match b {
            b'\t' | 0x20..=0x7e => out.write_char(b as char)?,
            _ => write!(out, "\\x{b:02x}")?,
        }
    }
    Ok(())
}

#[cfg(target_os = "none")]
mod serial_console {
    use core::fmt::{self, Write};

    use crate::arch::serial::Serial;

    static SERIAL: crate::sync::Mutex<Option<Serial>> = crate::sync::Mutex::new(None);

    /// hv-core's own log lines, as printed (TS-12). Lock order: after `SERIAL`.
    static HV_LOG: crate::sync::Mutex<
        crate::toolstack::StreamRing<[u8; hypercall_abi::domctl::HV_LOG_RING_SIZE as usize]>,
    > = crate::sync::Mutex::new(crate::toolstack::StreamRing::new(
        [0; hypercall_abi::domctl::HV_LOG_RING_SIZE as usize],
    ));

    /// Copies from hv-core's log ring (TS-12).
    pub fn hv_log_read(
        offset: u64,
        out: &mut [u8],
    ) -> Result<hypercall_abi::domctl::ConsoleChunk, hypercall_abi::Errno> {
        HV_LOG.lock().read(offset, out)
    }

    /// Writes to the console and to the hv log ring.
    struct Tee<'a>(&'a mut dyn Write);

    impl Write for Tee<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            HV_LOG.lock().write(s.as_bytes());
            self.0.write_str(s)
        }
    }

    struct Out<'a>(&'a mut Serial);

    impl Write for Out<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for b in s.bytes() {
                if b == b'\n' {
                    self.0.write_byte(b'\r');
                }
                self.0.write_byte(b);
            }
            Ok(())
        }
    }

    /// Sets up the serial port. Call first thing at boot.
    pub fn init() {
        *SERIAL.lock() = Some(Serial::init());
    }

    /// Runs `f` with exclusive use of the console.
    pub fn with_console(f: impl FnOnce(&mut dyn Write)) {
        let mut guard = SERIAL.lock();
        if let Some(serial) = guard.as_mut() {
            f(&mut Out(serial));
        }
    }

    /// Reads one byte of console input, if any is waiting.
    pub fn read_byte() -> Option<u8> {
        SERIAL.lock().as_mut().and_then(|s| s.read_byte())
    }

    /// The management UART (TS-13), if one answers at COM2.
    static MGMT: crate::sync::Mutex<Option<crate::arch::serial::MgmtUart>> =
        crate::sync::Mutex::new(None);

    /// Probes and programs the management UART (at boot).
    pub fn mgmt_init() -> bool {
        let uart = crate::arch::serial::MgmtUart::probe();
        let found = uart.is_some();
        *MGMT.lock() = uart;
        found
    }

    /// Bytes received on the management UART, without blocking.
    pub fn mgmt_read(out: &mut [u8]) -> usize {
        let mut guard = MGMT.lock();
        let Some(uart) = guard.as_mut() else { return 0 };
        let mut n = 0;
        for slot in out.iter_mut() {
            match uart.read_byte() {
                Some(b) => {
                    *slot = b;
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// Sends what the management UART takes now; returns how many bytes.
    pub fn mgmt_write(bytes: &[u8]) -> usize {
        MGMT.lock()
            .as_mut()
            .map_or(0, |uart| uart.write_some(bytes))
    }

    /// Prints a domain's console line as `(d<domid>) <line>`.
    pub fn emit_guest_line(domid: u32, line: &[u8]) {
        with_console(|out| {
            let _ = write!(out, "(d{domid}) ");
            let _ = super::write_escaped(out, line);
            let _ = out.write_str("\n");
        });
    }

    /// Writes to the serial port without the lock: for the panic path only,
    /// where the lock may be held by the code that panicked.
    pub fn emergency_writer() -> impl Write {
        struct Emergency(Serial);
        impl Write for Emergency {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                Out(&mut self.0).write_str(s)
            }
        }
        Emergency(Serial::init())
    }

    struct Logger;

    impl log::Log for Logger {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::max_level()
        }

        fn log(&self, record: &log::Record<'_>) {
            if !self.enabled(record.metadata()) {
                return;
            }
            with_console(|out| {
                let out = &mut Tee(out);
                let _ = match record.level() {
                    log::Level::Info => writeln!(out, "(hv) {}", record.args()),
                    log::Level::Warn => writeln!(out, "(hv) warning: {}", record.args()),
                    log::Level::Error => writeln!(out, "(hv) error: {}", record.args()),
                    log::Level::Debug => writeln!(out, "(hv) debug: {}", record.args()),
                    log::Level::Trace => writeln!(out, "(hv) trace: {}", record.args()),
                };
            });
        }

        fn flush(&self) {}
    }

    static LOGGER: Logger = Logger;

    /// Routes the `log` crate to the console at `level`.
    pub fn init_logger(level: log::LevelFilter) {
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(level);
    }
}

#[cfg(target_os = "none")]
pub use serial_console::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_and_escape() {
        let mut lb = LineBuffer::new();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        lb.feed(b"hello\nwor", |l| lines.push(l.to_vec()));
        lb.feed(b"ld\r\n", |l| lines.push(l.to_vec()));
        assert_eq!(lines, vec![b"hello".to_vec(), b"world".to_vec()]);
        let long = vec![b'x'; LINE_MAX + 5];
        lines.clear();
        lb.feed(&long, |l| lines.push(l.to_vec()));
        lb.flush(|l| lines.push(l.to_vec()));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), LINE_MAX);
        assert_eq!(lines[1].len(), 5);
        let mut s = String::new();
        write_escaped(&mut s, b"a\x1b[2Jb\t\xff").unwrap();
        assert_eq!(s, "a\\x1b[2Jb\t\\xff");
    }
}
