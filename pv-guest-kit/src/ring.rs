//! Shared rings over a page (`hypercall_abi::ring`, RING-1 .. RING-7) with
//! an event channel: [`SharedPage`], the [`RingMemory`] a guest uses for a
//! page it grants or maps, and the [`Frontend`] / [`Backend`] helpers that
//! pair a ring with a port — publishing notifies the peer only when it asked
//! (RING-4 notification suppression), and waiting re-arms the event index
//! and re-checks before it blocks.
//!
//! # Invariants
//! - A [`SharedPage`] is only accessed through raw volatile loads and stores
//!   and 32/64-bit atomics, never through Rust references: the peer may
//!   write any byte at any time, and a grant mapping may go away (an access
//!   then faults, which the kit reports; it is not undefined behaviour).

use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use hypercall_abi::ring::{BackRing, FrontRing, RingError, RingFull, RingMemory, RingMessage};
use hypercall_abi::{Errno, PAGE_SIZE};

use crate::events::{self, Port};
use crate::grants::Mapping;
use crate::mm::Frame;

/// Bytes in a [`SharedPage`].
const LEN: usize = PAGE_SIZE as usize;

/// What keeps a [`SharedPage`]'s memory there.
#[derive(Debug)]
enum Backing {
    /// One of this domain's frames, through its physmap mapping.
    Frame(Frame),
    /// A grant mapping of another domain's frame.
    Grant(Mapping),
}

/// One page of memory shared with another domain: a frame of this domain
/// (which it grants) or a grant mapping (of a frame another domain grants).
#[derive(Debug)]
pub struct SharedPage {
    va: u64,
    backing: Backing,
}

impl SharedPage {
    /// Shares one of this domain's frames (through its physmap mapping).
    pub fn from_frame(frame: Frame) -> SharedPage {
        SharedPage {
            va: frame.va(),
            backing: Backing::Frame(frame),
        }
    }

    /// Uses a grant mapping. Writes to a read-only mapping fault.
    pub fn from_mapping(mapping: Mapping) -> SharedPage {
        SharedPage {
            va: mapping.va(),
            backing: Backing::Grant(mapping),
        }
    }

    /// The frame back, if this page is one of this domain's.
    pub fn into_frame(self) -> Option<Frame> {
        match self.backing {
            Backing::Frame(frame) => Some(frame),
            Backing::Grant(_) => None,
        }
    }

    /// The mapping back, if this page is a grant mapping (to unmap it).
    pub fn into_mapping(self) -> Option<Mapping> {
        match self.backing {
            Backing::Grant(mapping) => Some(mapping),
            Backing::Frame(_) => None,
        }
    }

    /// The page's virtual address.
    pub fn va(&self) -> u64 {
        self.va
    }

    /// The frame's mfn, if this page is one of this domain's frames.
    pub fn mfn(&self) -> Option<u64> {
        match &self.backing {
            Backing::Frame(frame) => Some(frame.mfn()),
            Backing::Grant(_) => None,
        }
    }

    /// Address of `len` bytes at `offset`, checked to lie inside the page
    /// and to be `align`-aligned.
    fn at(&self, offset: usize, len: usize, align: usize) -> u64 {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= LEN) && offset.is_multiple_of(align),
            "shared page access of {len} bytes at {offset} out of range or misaligned"
        );
        self.va + offset as u64
    }

    /// The `u32` at `offset` (4-aligned) as an atomic.
    fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        let va = self.at(offset, 4, 4);
        // SAFETY: `va` is an aligned word inside the page, which stays mapped
        // while `self` holds its backing (a grant mapping that the peer's
        // death or an unmap removes faults instead of aliasing Rust memory);
        // the page is shared memory accessed only atomically or volatilely.
        unsafe { AtomicU32::from_ptr(va as *mut u32) }
    }

    /// The `u64` at `offset` (8-aligned) as an atomic.
    fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        let va = self.at(offset, 8, 8);
        // SAFETY: as in `atomic_u32`.
        unsafe { AtomicU64::from_ptr(va as *mut u64) }
    }

    /// Atomically loads the `u64` at `offset` (8-aligned).
    pub fn load_u64(&self, offset: usize) -> u64 {
        self.atomic_u64(offset).load(Ordering::SeqCst)
    }

    /// Atomically stores `value` at `offset` (8-aligned).
    pub fn store_u64(&self, offset: usize, value: u64) {
        self.atomic_u64(offset).store(value, Ordering::SeqCst);
    }

    /// Copies bytes out, with one volatile access per byte or aligned word.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        let base = self.at(offset, out.len(), 1);
        let mut i = 0;
        while i < out.len() {
            let va = base + i as u64;
            if va.is_multiple_of(8) && out.len() - i >= 8 {
                // SAFETY: an aligned word inside the page (checked above),
                // read volatilely: the peer may change it at any time.
                let word = unsafe { core::ptr::read_volatile(va as *const u64) };
                out[i..i + 8].copy_from_slice(&word.to_ne_bytes());
                i += 8;
            } else {
                // SAFETY: a byte inside the page (checked above).
                out[i] = unsafe { core::ptr::read_volatile(va as *const u8) };
                i += 1;
            }
        }
    }

    /// Copies bytes in, with one volatile access per byte or aligned word.
    pub fn write(&self, offset: usize, data: &[u8]) {
        let base = self.at(offset, data.len(), 1);
        let mut i = 0;
        while i < data.len() {
            let va = base + i as u64;
            if va.is_multiple_of(8) && data.len() - i >= 8 {
                let mut word = [0u8; 8];
                word.copy_from_slice(&data[i..i + 8]);
                // SAFETY: an aligned word inside the page (checked above);
                // the page is shared memory no Rust reference covers.
                unsafe { core::ptr::write_volatile(va as *mut u64, u64::from_ne_bytes(word)) };
                i += 8;
            } else {
                // SAFETY: a byte inside the page (checked above).
                unsafe { core::ptr::write_volatile(va as *mut u8, data[i]) };
                i += 1;
            }
        }
    }
}

impl RingMemory for SharedPage {
    fn len(&self) -> usize {
        LEN
    }

    fn read_u32(&self, offset: usize) -> u32 {
        self.atomic_u32(offset).load(Ordering::Relaxed)
    }

    fn write_u32(&mut self, offset: usize, value: u32) {
        self.atomic_u32(offset).store(value, Ordering::Relaxed);
    }

    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        self.read(offset, out);
    }

    fn write_bytes(&mut self, offset: usize, data: &[u8]) {
        self.write(offset, data);
    }

    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
}

/// The frontend of a ring in a [`SharedPage`], notifying `port`.
#[derive(Debug)]
pub struct Frontend<Req, Rsp> {
    page: SharedPage,
    ring: FrontRing<Req, Rsp>,
    port: Port,
    notifications: u64,
}

impl<Req: RingMessage, Rsp: RingMessage> Frontend<Req, Rsp> {
    /// Initialises a fresh ring in `page` (before it is granted or
    /// advertised), to be notified through `port`.
    pub fn new(mut page: SharedPage, port: Port) -> Result<Self, RingError> {
        let ring = FrontRing::init(&mut page)?;
        Ok(Frontend {
            page,
            ring,
            port,
            notifications: 0,
        })
    }

    /// The event-channel port.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The shared page.
    pub fn page(&self) -> &SharedPage {
        &self.page
    }

    /// Slots in the ring.
    pub fn size(&self) -> u32 {
        self.ring.size()
    }

    /// How many more requests [`Self::push`] takes now.
    pub fn free_requests(&self) -> u32 {
        self.ring.free_requests()
    }

    /// Queues a request (not visible to the backend before [`Self::publish`]).
    pub fn push(&mut self, req: &Req) -> Result<(), RingFull> {
        self.ring.push_request(&mut self.page, req)
    }

    /// Publishes the queued requests and notifies the backend if it asked
    /// for it; returns whether it notified.
    pub fn publish(&mut self) -> Result<bool, Errno> {
        let notify = self.ring.publish_requests(&mut self.page);
        if notify {
            events::notify(self.port)?;
            self.notifications += 1;
        }
        Ok(notify)
    }

    /// The next response, if the backend published one.
    pub fn take(&mut self) -> Result<Option<Rsp>, RingError> {
        self.ring.take_response(&self.page)
    }

    /// Re-arms `rsp_event` and re-checks: `true` if a response is there.
    pub fn final_check(&mut self) -> bool {
        self.ring.final_check_for_responses(&mut self.page)
    }

    /// Blocks until a response is there (using no CPU meanwhile).
    pub fn wait(&mut self) {
        events::wait_until(|| self.ring.final_check_for_responses(&mut self.page));
    }

    /// Notifications sent so far.
    pub fn notifications(&self) -> u64 {
        self.notifications
    }

    /// The page back.
    pub fn into_page(self) -> SharedPage {
        self.page
    }
}

/// The backend of a ring in a [`SharedPage`], notifying `port`.
#[derive(Debug)]
pub struct Backend<Req, Rsp> {
    page: SharedPage,
    ring: BackRing<Req, Rsp>,
    port: Port,
    notifications: u64,
}

impl<Req: RingMessage, Rsp: RingMessage> Backend<Req, Rsp> {
    /// Attaches to a ring the frontend initialised in `page` (RING-7).
    pub fn attach(page: SharedPage, port: Port) -> Result<Self, RingError> {
        let ring = BackRing::attach(&page)?;
        Ok(Backend {
            page,
            ring,
            port,
            notifications: 0,
        })
    }

    /// The event-channel port.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The shared page.
    pub fn page(&self) -> &SharedPage {
        &self.page
    }

    /// Slots in the ring.
    pub fn size(&self) -> u32 {
        self.ring.size()
    }

    /// The next request, if the frontend published one (copied out once).
    pub fn take(&mut self) -> Result<Option<Req>, RingError> {
        self.ring.take_request(&self.page)
    }

    /// Queues the response to the oldest unanswered request.
    pub fn push(&mut self, rsp: &Rsp) -> Result<(), RingError> {
        self.ring.push_response(&mut self.page, rsp)
    }

    /// Publishes the queued responses and notifies the frontend if it asked
    /// for it; returns whether it notified.
    pub fn publish(&mut self) -> Result<bool, Errno> {
        let notify = self.ring.publish_responses(&mut self.page);
        if notify {
            events::notify(self.port)?;
            self.notifications += 1;
        }
        Ok(notify)
    }

    /// Re-arms `req_event` and re-checks: `Ok(true)` if a request is there.
    pub fn final_check(&mut self) -> Result<bool, RingError> {
        self.ring.final_check_for_requests(&mut self.page)
    }

    /// Blocks until a request is there (using no CPU meanwhile), or the
    /// frontend's index turns out impossible.
    pub fn wait(&mut self) -> Result<(), RingError> {
        let mut outcome = Ok(());
        events::wait_until(
            || match self.ring.final_check_for_requests(&mut self.page) {
                Ok(ready) => ready,
                Err(err) => {
                    outcome = Err(err);
                    true
                }
            },
        );
        outcome
    }

    /// Notifications sent so far.
    pub fn notifications(&self) -> u64 {
        self.notifications
    }

    /// The page back.
    pub fn into_page(self) -> SharedPage {
        self.page
    }
}
