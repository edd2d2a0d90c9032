//! The guest console: [`print!`](crate::print) and [`println!`](crate::println)
//! through a line buffer over `console_io(CONSOLE_WRITE)` (HC-11).
//!
//! hv-core prefixes every console line with `(d<domid>) `, so the kit hands it
//! whole lines where it can: output is buffered until a `'\n'`, until
//! [`LINE_MAX`] bytes are pending, or until [`flush`] (which shutdown and the
//! panic handler call).
//!
//! # Invariants
//! - A [`LineBuffer`] never holds a `'\n'` or more than [`LINE_MAX`] bytes
//!   between calls: either completes a chunk that is handed to the sink at once.
//! - The global buffer is only ever locked with `try_lock`. A print that finds it
//!   locked — a trap handler or panic that interrupted a print on this vCPU —
//!   formats into its own buffer on the stack instead, so printing never
//!   deadlocks; the interrupted partial line is printed when its print resumes.
#![forbid(unsafe_code)]

use core::fmt;

use spin::Mutex;

/// Bytes buffered before a line is written out even without its `'\n'`.
pub const LINE_MAX: usize = 256;

/// Buffers text and hands it to a sink one line (or [`LINE_MAX`] bytes) at a time.
#[derive(Clone)]
pub struct LineBuffer {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuffer {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self {
            buf: [0; LINE_MAX],
            len: 0,
        }
    }

    /// The bytes waiting for their line to end.
    pub fn pending(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// Appends `bytes`, passing each completed line (with its `'\n'`) or each
    /// [`LINE_MAX`]-byte chunk to `sink`.
    pub fn write(&mut self, mut bytes: &[u8], sink: &mut impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            let space = LINE_MAX - self.len;
            let take = match bytes.iter().position(|&b| b == b'\n') {
                Some(newline) if newline < space => newline + 1,
                _ => space.min(bytes.len()),
            };
            let (head, rest) = bytes.split_at(take);
            if let Some(dst) = self.buf.get_mut(self.len..self.len + take) {
                dst.copy_from_slice(head);
            }
            self.len += take;
            bytes = rest;
            if self.len == LINE_MAX || head.last() == Some(&b'\n') {
                self.flush(sink);
            }
        }
    }

    /// Passes whatever is pending to `sink` and empties the buffer.
    pub fn flush(&mut self, sink: &mut impl FnMut(&[u8])) {
        if self.len > 0 {
            sink(self.pending());
            self.len = 0;
        }
    }
}

/// The sink of the global console: the hypervisor console. Errors are dropped:
/// there is nowhere left to report them.
fn hypervisor_sink(line: &[u8]) {
    let _ = crate::hypercall::console_write(line);
}

/// A [`LineBuffer`] with its sink, as a [`fmt::Write`].
struct Writer<'a, S: FnMut(&[u8])> {
    buffer: &'a mut LineBuffer,
    sink: S,
}

impl<S: FnMut(&[u8])> fmt::Write for Writer<'_, S> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.buffer.write(s.as_bytes(), &mut self.sink);
        Ok(())
    }
}

/// The console's line buffer.
static CONSOLE: Mutex<LineBuffer> = Mutex::new(LineBuffer::new());

/// Formats `args` onto the console (what [`print!`](crate::print) expands to).
#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    use fmt::Write as _;
    match CONSOLE.try_lock() {
        Some(mut buffer) => {
            let _ = Writer {
                buffer: &mut buffer,
                sink: hypervisor_sink,
            }
            .write_fmt(args);
        }
        None => {
            // Re-entered on this vCPU (see the module invariants).
            let mut buffer = LineBuffer::new();
            let _ = Writer {
                buffer: &mut buffer,
                sink: hypervisor_sink,
            }
            .write_fmt(args);
            buffer.flush(&mut hypervisor_sink);
        }
    }
}

/// Writes out whatever the console buffer holds.
pub fn flush() {
    if let Some(mut buffer) = CONSOLE.try_lock() {
        buffer.flush(&mut hypervisor_sink);
    }
}

/// Prints to the Paravane console (line-buffered).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::_print(::core::format_args!($($arg)*))
    };
}

/// Prints a line to the Paravane console.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::_print(::core::format_args!("\n"))
    };
    ($($arg:tt)*) => {{
        $crate::console::_print(::core::format_args!("{}\n", ::core::format_args!($($arg)*)))
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn collect(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut buffer = LineBuffer::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buffer.write(chunk, &mut |line: &[u8]| out.push(line.to_vec()));
        }
        (out, buffer.pending().to_vec())
    }

    #[test]
    fn lines_are_written_whole() {
        let (out, pending) = collect(&[b"Hello ", b"from ", b"d1\nsecond", b" line\nthird"]);
        assert_eq!(
            out,
            [b"Hello from d1\n".to_vec(), b"second line\n".to_vec()]
        );
        assert_eq!(pending, b"third");
    }

    #[test]
    fn several_lines_in_one_write() {
        let (out, pending) = collect(&[b"a\nb\n\nc"]);
        assert_eq!(out, [b"a\n".to_vec(), b"b\n".to_vec(), b"\n".to_vec()]);
        assert_eq!(pending, b"c");
    }

    #[test]
    fn long_lines_are_cut_at_line_max() {
        let long = [b'x'; LINE_MAX * 2 + 10];
        let (out, pending) = collect(&[&long, b"\n"]);
        assert_eq!(out.len(), 3);
        assert!(out[..2].iter().all(|chunk| chunk.len() == LINE_MAX));
        assert_eq!(out[2].len(), 11);
        assert_eq!(out[2].last(), Some(&b'\n'));
        assert!(pending.is_empty());
    }

    #[test]
    fn newline_exactly_at_capacity() {
        let mut text = [b'y'; LINE_MAX];
        text[LINE_MAX - 1] = b'\n';
        let (out, pending) = collect(&[&text]);
        assert_eq!(out, [text.to_vec()]);
        assert!(pending.is_empty());
        // One byte past capacity: the newline starts the next chunk.
        let (out, pending) = collect(&[&[b'z'; LINE_MAX], b"\n"]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], b"\n");
        assert!(pending.is_empty());
    }

    #[test]
    fn flush_empties_and_skips_empty() {
        let mut buffer = LineBuffer::new();
        let mut out: Vec<Vec<u8>> = Vec::new();
        buffer.flush(&mut |line: &[u8]| out.push(line.to_vec()));
        assert!(out.is_empty());
        buffer.write(b"partial", &mut |line: &[u8]| out.push(line.to_vec()));
        buffer.flush(&mut |line: &[u8]| out.push(line.to_vec()));
        assert_eq!(out, [b"partial".to_vec()]);
        assert!(buffer.pending().is_empty());
    }

    #[test]
    fn formatting_goes_through_the_buffer() {
        use core::fmt::Write as _;
        let mut buffer = LineBuffer::new();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut writer = Writer {
            buffer: &mut buffer,
            sink: |line: &[u8]| out.push(line.to_vec()),
        };
        write!(writer, "value={:#x}\nrest", 0xdead_u32).unwrap();
        assert_eq!(out, [b"value=0xdead\n".to_vec()]);
        assert_eq!(buffer.pending(), b"rest");
    }
}
