//! The console backend's per-domain log: the tail of a domain's console
//! output stream as the toolstack copied it out of hv-core (TS-10), kept
//! after the domain is gone so `pvctl console` still shows how it ended.
//! Positions are the hypervisor's stream positions. Pure and host-tested.

use alloc::collections::VecDeque;

/// Bytes kept per domain (the driver domain's heap is small; hv-core keeps
/// 16 KiB of each live domain's output itself).
pub const LOG_BYTES: usize = 4096;

/// One domain's console log.
#[derive(Debug, Default)]
pub struct ConsoleLog {
    /// Stream position of `bytes[0]`.
    base: u64,
    bytes: VecDeque<u8>,
    /// Stream position to read from next.
    next: u64,
}

impl ConsoleLog {
    /// An empty log at stream position 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the next read of the hypervisor's stream starts.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Adds `data`, which the hypervisor returned from stream position
    /// `start` (later than [`ConsoleLog::next`] when output was lost: the
    /// log restarts there).
    pub fn append(&mut self, start: u64, data: &[u8]) {
        if start != self.next {
            self.bytes.clear();
            self.base = start;
        }
        self.bytes.extend(data.iter().copied());
        self.next = start + data.len() as u64;
        while self.bytes.len() > LOG_BYTES {
            self.bytes.pop_front();
            self.base += 1;
        }
    }

    /// Up to `max` bytes from stream position `offset` (or from the oldest
    /// byte kept, if that is later): the position of the first byte, and
    /// the bytes.
    pub fn read(&self, offset: u64, max: usize) -> (u64, alloc::vec::Vec<u8>) {
        let start = offset.clamp(self.base, self.next);
        let skip = (start - self.base) as usize;
        let bytes = self.bytes.iter().skip(skip).take(max).copied().collect();
        (start, bytes)
    }

    /// The stream end as far as the log knows.
    pub fn end(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail_with_stream_positions() {
        let mut log = ConsoleLog::new();
        log.append(0, b"hello\n");
        assert_eq!(log.read(0, 100), (0, b"hello\n".to_vec()));
        assert_eq!(log.read(2, 2), (2, b"ll".to_vec()));
        let big = alloc::vec![b'x'; LOG_BYTES];
        log.append(6, &big);
        assert_eq!(log.end(), 6 + LOG_BYTES as u64);
        let (start, bytes) = log.read(0, 10);
        assert_eq!((start, bytes.len()), (6, 10));
        // Output lost in between: the log restarts at the new position.
        log.append(10_000, b"tail");
        assert_eq!(log.read(0, 100), (10_000, b"tail".to_vec()));
        assert_eq!(log.read(20_000, 100), (10_004, alloc::vec::Vec::new()));
    }
}
