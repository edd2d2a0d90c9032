//! Host drivers: what the host does to a scenario's machine while QEMU runs —
//! fetch a guest's web page through QEMU's `hostfwd`, drive `pvctl` over the
//! management socket. A scenario has at most one driver, looked up by name in
//! [`driver_for`]; it runs on its own thread beside [`crate::qemu::launch`],
//! sees the serial console as it arrives ([`Session::wait_for`]) and its
//! notes go to the log as `host: …` lines.
//!
//! # Invariants
//! - A driver never blocks without a bound: every wait takes a timeout and
//!   returns as soon as QEMU has ended.
//! - A driver's error fails the scenario and kills QEMU at once (no waiting
//!   for the scenario's timeout).

pub mod net_bench;
pub mod web;

mod toolstack;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A host driver: returns `Err` with one line saying what went wrong.
pub type Driver = fn(&Session) -> std::result::Result<(), String>;

/// The driver of scenario `name`, if it has one.
pub fn driver_for(name: &str) -> Option<Driver> {
    match name {
        "web" => Some(web::check),
        "demo" => Some(web::demo),
        "net-bench" => Some(net_bench::sink),
        "toolstack" => Some(toolstack::drive),
        "toolstack-bench" => Some(toolstack::bench),
        _ => None,
    }
}

/// The serial console as seen so far, shared between the run loop (writer)
/// and a driver (reader).
#[derive(Debug, Default)]
pub struct SerialFeed {
    state: Mutex<FeedState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct FeedState {
    text: String,
    ended: bool,
    notes: Vec<String>,
}

impl SerialFeed {
    /// Appends one serial line.
    pub fn push_line(&self, line: &str) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.text.push_str(line);
        state.text.push('\n');
        self.changed.notify_all();
    }

    /// Marks QEMU as gone: waits return at once from now on.
    pub fn end(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ended = true;
        self.changed.notify_all();
    }

    /// Takes the driver's notes written since the last call.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(
            &mut self
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .notes,
        )
    }
}

/// What a driver gets to work with.
#[derive(Clone, Debug)]
pub struct Session {
    /// Absolute path of the scenario's scratch directory (disk images, sockets).
    // For drivers of host programs (pvctl); none reads it yet.
    #[allow(dead_code)]
    pub scratch: PathBuf,
    /// Absolute path of the workspace root (built host binaries live under it).
    #[allow(dead_code)]
    pub root: PathBuf,
    /// The free host TCP port that `{host_port}` stood for in the QEMU arguments.
    pub host_port: u16,
    /// The machine stays up for the user after the driver is done
    /// (`cargo xtask run` serving pvctl): leave the guests running.
    pub stays_up: bool,
    pub(crate) feed: Arc<SerialFeed>,
}

impl Session {
    /// A session over `feed`.
    pub fn new(root: PathBuf, scratch: PathBuf, host_port: u16, feed: Arc<SerialFeed>) -> Self {
        Self {
            scratch,
            root,
            host_port,
            stays_up: false,
            feed,
        }
    }

    /// Waits until a serial line contains `needle`; returns that line.
    /// Fails when `timeout` passes or QEMU ends first.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> std::result::Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut state = self
            .feed
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(line) = state.text.lines().find(|l| l.contains(needle)) {
                return Ok(line.to_owned());
            }
            if state.ended {
                return Err(format!("QEMU ended before a line with `{needle}`"));
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(format!(
                    "no line with `{needle}` within {} s",
                    timeout.as_secs()
                ));
            };
            state = self
                .feed
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The serial console so far.
    pub fn serial(&self) -> String {
        self.feed
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .text
            .clone()
    }

    /// Whether QEMU has ended.
    pub fn ended(&self) -> bool {
        self.feed
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ended
    }

    /// Writes `line` to the scenario log (as `host: line`).
    pub fn note(&self, line: impl Into<String>) {
        let mut state = self
            .feed
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.notes.push(line.into());
    }
}

/// A TCP port on 127.0.0.1 that is free right now (the OS picks it).
pub fn free_host_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn session(feed: &Arc<SerialFeed>) -> Session {
        Session::new(PathBuf::from("/"), PathBuf::from("/"), 0, feed.clone())
    }

    #[test]
    fn wait_for_sees_lines_pushed_later() {
        let feed = Arc::new(SerialFeed::default());
        let writer = feed.clone();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            writer.push_line("(d1) web: listening on 10.0.2.15:80");
        });
        let line = session(&feed)
            .wait_for("listening", Duration::from_secs(5))
            .expect("line");
        assert_eq!(line, "(d1) web: listening on 10.0.2.15:80");
        t.join().expect("writer");
    }

    #[test]
    fn wait_for_fails_on_timeout_and_on_end() {
        let feed = Arc::new(SerialFeed::default());
        let s = session(&feed);
        let err = s
            .wait_for("never", Duration::from_millis(30))
            .expect_err("timeout");
        assert!(err.contains("within 0 s"), "{err}");
        feed.end();
        let started = Instant::now();
        let err = s
            .wait_for("never", Duration::from_secs(60))
            .expect_err("ended");
        assert!(err.starts_with("QEMU ended"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn notes_are_taken_once() {
        let feed = Arc::new(SerialFeed::default());
        let s = session(&feed);
        s.note("curl: 200 OK");
        assert_eq!(feed.take_notes(), ["curl: 200 OK"]);
        assert!(feed.take_notes().is_empty());
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_host_port().expect("port"), 0);
    }
}
