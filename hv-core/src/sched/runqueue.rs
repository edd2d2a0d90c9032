//! A FIFO run queue of runnable vCPUs.
//!
//! # Invariants
//! - A vCPU is queued at most once.

use alloc::collections::VecDeque;

/// A round-robin run queue of ids.
pub struct RunQueue<T> {
    queue: VecDeque<T>,
}

impl<T: Copy + PartialEq> RunQueue<T> {
    pub const fn new() -> RunQueue<T> {
        RunQueue {
            queue: VecDeque::new(),
        }
    }

    /// Queues `id` at the back unless it is already queued.
    pub fn push(&mut self, id: T) {
        if !self.queue.contains(&id) {
            self.queue.push_back(id);
        }
    }

    /// Takes the next vCPU to run.
    pub fn pop(&mut self) -> Option<T> {
        self.queue.pop_front()
    }

    /// Drops every queued id for which `gone` is true.
    pub fn remove_where(&mut self, gone: impl Fn(&T) -> bool) {
        self.queue.retain(|id| !gone(id));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

impl<T: Copy + PartialEq> Default for RunQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_without_duplicates() {
        let mut q = RunQueue::new();
        q.push(1);
        q.push(2);
        q.push(1);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(), Some(1));
        q.push(1);
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn removal() {
        let mut q = RunQueue::new();
        for i in 0..6 {
            q.push(i);
        }
        q.remove_where(|&i| i % 2 == 0);
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.len(), 2);
    }
}
