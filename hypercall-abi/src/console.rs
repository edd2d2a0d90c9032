//! `console_io` sub-commands (SPEC.md HC-11).

/// Write `len` bytes from `buf` to the console. Returns the number of bytes taken.
pub const CONSOLE_WRITE: u64 = 0;
/// Read up to `len` bytes of console input into `buf` (driver domain only).
/// Never blocks: returns the number of bytes read, possibly 0.
pub const CONSOLE_READ: u64 = 1;
/// Largest `len` accepted by one `console_io` call; longer writes return `-E2BIG`.
pub const CONSOLE_IO_MAX: u64 = 4096;
