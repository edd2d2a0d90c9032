//! A `log` backend on the guest console: each record prints as
//! `[LEVEL] message` (hv-core adds the `(d<domid>) ` prefix).
#![forbid(unsafe_code)]

use log::{LevelFilter, Log, Metadata, Record, SetLoggerError};

/// The console logger.
struct ConsoleLogger;

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            crate::println!("[{}] {}", record.level(), record.args());
        }
    }

    fn flush(&self) {
        crate::console::flush();
    }
}

static LOGGER: ConsoleLogger = ConsoleLogger;

/// Routes the `log` macros to the console, showing records up to `level`.
/// Fails only if a logger was already installed.
pub fn init(level: LevelFilter) -> Result<(), SetLoggerError> {
    log::set_logger(&LOGGER)?;
    log::set_max_level(level);
    Ok(())
}
