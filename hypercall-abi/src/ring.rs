//! Shared request/response rings (DESIGN.md "Shared rings"; modelled on Xen's
//! `io/ring.h`): one generic ring that split drivers (blkif, netif, console)
//! instantiate with their own message types.
//!
//! A frontend grants one or more pages; the backend maps them. Requests flow
//! frontend → backend, responses backend → frontend, through the same slots.
//! The two sides do not trust each other: either may write any bytes into the
//! shared memory at any time. SPEC.md has no rings section yet, so the
//! requirement IDs `RING-1` .. `RING-7` are defined here.
//!
//! This crate has no `unsafe`: the shared memory is reached through
//! [`RingMemory`], which the kernel side implements with volatile or atomic
//! accesses and a real fence, and the tests implement over a `Vec`.
//!
//! # RING-1 Layout
//!
//! ```text
//! offset  size  field                     written by
//!      0     4  req_prod   (SringHeader)  [FRONT]  requests published
//!      4     4  req_event                 [BACK]   "notify me when req_prod passes this"
//!      8     4  rsp_prod                  [BACK]   responses published
//!     12     4  rsp_event                 [FRONT]  "notify me when rsp_prod passes this"
//!     16    48  pad                       [FRONT]  zeroed at init, then ignored
//!     64  N * S slot[0] .. slot[N-1]      request: [FRONT]; response: [BACK]
//! ```
//!
//! `S` is [`slot_size`]: the larger of the two message sizes rounded up to 8.
//! `N` is [`ring_slots`]: the largest power of two with `64 + N * S <= len`
//! (at most 2^31). A slot holds a request or a response, by position, like a
//! C union: request `i` and response `i` both live in slot `i & (N - 1)`.
//! Response `i` overwrites request `i` after the backend copied it out;
//! request `i + N` overwrites response `i` after the frontend copied it out.
//!
//! # RING-2 Indices
//!
//! The four header fields and the private indices of each side are
//! free-running `u32`s, only ever advanced with `wrapping_add(1)`; the slot of
//! index `i` is `i & (N - 1)`. Because `N` divides 2^32, the slot sequence
//! continues seamlessly across the 2^32 wrap. A distance `a.wrapping_sub(b)`
//! is the true distance `a - b` whenever that lies in `0 .. 2^32`, which the
//! invariants below keep within `0 ..= N <= 2^31`. A hostile index gives some
//! `u32` distance; it is only ever *compared* against a bound derived from
//! private state, never used to size a loop.
//!
//! # RING-3 Update protocol
//!
//! Requests (responses are the mirror image, steps 5 to 8):
//!
//! 1. The frontend writes a request into slot `req_prod_pvt` and advances
//!    `req_prod_pvt` ([`FrontRing::push_request`]). It may do so only while
//!    `req_prod_pvt - rsp_cons < N`: the slot's previous response was consumed.
//! 2. The frontend fences, stores `req_prod = req_prod_pvt`, fences, loads
//!    `req_event` and notifies the backend if `req_prod` passed it
//!    ([`FrontRing::publish_requests`]).
//! 3. The backend loads `req_prod` once, validates it (RING-6), fences, and
//!    copies slot `req_cons` out once (RING-5), advancing `req_cons`
//!    ([`BackRing::take_request`]).
//! 4. Before sleeping, the backend stores `req_event = req_cons + 1`, fences
//!    and loads `req_prod` again ([`BackRing::final_check_for_requests`]);
//!    only if that still shows nothing does it wait for an event.
//! 5. The backend writes a response into slot `rsp_prod_pvt` (a request it has
//!    already copied out) and advances `rsp_prod_pvt` ([`BackRing::push_response`]).
//! 6. The backend fences, stores `rsp_prod`, fences, loads `rsp_event` and
//!    notifies if `rsp_prod` passed it ([`BackRing::publish_responses`]).
//! 7. The frontend loads `rsp_prod` once, validates it, fences and copies the
//!    response out ([`FrontRing::take_response`]).
//! 8. Before sleeping, the frontend stores `rsp_event = rsp_cons + 1`, fences
//!    and rechecks ([`FrontRing::final_check_for_responses`]).
//!
//! # RING-4 Notification suppression
//!
//! A producer that moved its index from `old` to `new` notifies the consumer
//! iff the consumer's event index lies in `old + 1 ..= new` ([`notify_needed`]).
//! The store of the producer index and the load of the event index (step 2/6)
//! are separated by a full fence, and so are the consumer's store of the event
//! index and its reload of the producer index (step 4/8): of two racing sides
//! at least one sees the other's store, so either the consumer finds the new
//! work or the producer sees the event index and notifies. A peer writing a bad
//! event index only costs itself notifications.
//!
//! # RING-5 Copy once, then validate
//!
//! The consuming side copies every message out of shared memory exactly once
//! (Xen's `RING_COPY_REQUEST`, XSA-155) and returns the copy; later writes to
//! the slot cannot change it. The *content* is validated by the caller, on the
//! copy.
//!
//! # RING-6 Producer-index validation
//!
//! Every load of the peer's producer index is checked against private state
//! before anything is read from a slot. The backend requires
//! `req_prod - req_cons <= N - (req_cons - rsp_prod_published)`, i.e.
//! `req_prod - req_cons <= N` and `req_prod - rsp_prod_published <= N`:
//! requests may not overrun slots whose responses the frontend cannot have
//! consumed yet. (Xen bounds by `rsp_prod_pvt`; bounding by what was
//! *published* is stricter, rejects nothing an honest frontend does, and
//! means the backend takes at most `N` requests between two publishes.) The
//! frontend requires `rsp_prod - rsp_cons <= req_prod_published - rsp_cons`
//! (never more responses than requests it published, which is `<= N`;
//! stricter than `req_prod_pvt` for the same reason). A failed
//! check is [`RingError::ProducerOverrun`] and leaves the private state as it
//! was; the caller should treat the peer as broken (disconnect).
//!
//! # RING-7 Attaching
//!
//! The backend takes its starting point from `rsp_prod`, read once
//! ([`BackRing::attach`]).
//!
//! # Invariants
//!
//! Whatever the peer writes, after every call:
//! - frontend: `req_prod_pvt - rsp_cons <= N` and
//!   `req_prod_published - rsp_cons <= req_prod_pvt - rsp_cons`, so at most `N`
//!   requests are in flight and no response is taken that was not requested;
//! - backend: `rsp_prod_pvt - rsp_prod_published <= req_cons -
//!   rsp_prod_published <= N`: at most `N` requests taken since the last
//!   publish, so at most `N` unanswered and at most `N` answers unpublished;
//! - every method does a bounded amount of work and never panics (given a
//!   [`RingMemory`] that honours its contract).

use core::fmt;
use core::marker::PhantomData;
use core::mem::{offset_of, size_of};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The ring header at offset 0 of the shared memory (RING-1). All indices are
/// free-running (RING-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SringHeader {
    /// `[FRONT]` Number of requests published (free-running).
    pub req_prod: u32,
    /// `[BACK]` The backend wants an event when `req_prod` reaches this.
    pub req_event: u32,
    /// `[BACK]` Number of responses published (free-running).
    pub rsp_prod: u32,
    /// `[FRONT]` The frontend wants an event when `rsp_prod` reaches this.
    pub rsp_event: u32,
    /// `[FRONT]` Zeroed at init; ignored by both sides afterwards.
    pub pad: [u8; 48],
}

/// Size of [`SringHeader`]; slot 0 starts here.
pub const SRING_HEADER_SIZE: usize = 64;
const _: () = assert!(size_of::<SringHeader>() == SRING_HEADER_SIZE);
const _: () = assert!(offset_of!(SringHeader, req_prod) == 0);
const _: () = assert!(offset_of!(SringHeader, req_event) == 4);
const _: () = assert!(offset_of!(SringHeader, rsp_prod) == 8);
const _: () = assert!(offset_of!(SringHeader, rsp_event) == 12);
const _: () = assert!(offset_of!(SringHeader, pad) == 16);

const REQ_PROD: usize = offset_of!(SringHeader, req_prod);
const REQ_EVENT: usize = offset_of!(SringHeader, req_event);
const RSP_PROD: usize = offset_of!(SringHeader, rsp_prod);
const RSP_EVENT: usize = offset_of!(SringHeader, rsp_event);

/// Slots are a multiple of this many bytes (and so 8-aligned, as the header
/// size is).
pub const SLOT_ALIGN: usize = 8;

/// The most slots a ring has: the largest power of two a `u32` holds (RING-2).
pub const MAX_RING_SLOTS: u32 = 1 << 31;

/// Access to the shared ring memory: implemented by guests over their mapping
/// (volatile or atomic accesses), by tests over a `Vec`.
///
/// The ring calls these only with ranges inside `0 .. len()` as it was at
/// [`FrontRing::init`] / [`BackRing::attach`]; callers must pass the same
/// memory to every call on one ring. `read_u32`/`write_u32` offsets are
/// 4-aligned (the header fields); byte copies stay within one slot. The peer
/// may change any byte at any time; an implementation must tolerate that
/// (no references into the shared memory held across calls).
pub trait RingMemory {
    /// Size of the shared memory in bytes.
    fn len(&self) -> usize;
    /// Whether the memory is empty (then no ring fits).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// One single-copy-atomic 32-bit load at a 4-aligned `offset`.
    fn read_u32(&self, offset: usize) -> u32;
    /// One single-copy-atomic 32-bit store at a 4-aligned `offset`.
    fn write_u32(&mut self, offset: usize, value: u32);
    /// Copy `out.len()` bytes starting at `offset` out (one snapshot; bytes
    /// may be torn against a concurrent writer, never read twice).
    fn read_bytes(&self, offset: usize, out: &mut [u8]);
    /// Copy `data` in, starting at `offset`.
    fn write_bytes(&mut self, offset: usize, data: &[u8]);
    /// A full memory barrier: loads and stores before it are globally visible
    /// before loads and stores after it (x86_64: `mfence`; a compiler fence is
    /// not enough, see RING-4).
    fn fence(&self);
}

/// A message type that can cross a ring: plain bytes, no padding, any bit
/// pattern valid (the peer chooses the bits).
pub trait RingMessage: FromBytes + IntoBytes + Immutable + Copy {}
impl<T: FromBytes + IntoBytes + Immutable + Copy> RingMessage for T {}

/// Bytes per slot for a ring of `Req`/`Rsp`: the larger size rounded up to
/// [`SLOT_ALIGN`], and at least [`SLOT_ALIGN`] (RING-1).
pub const fn slot_size<Req, Rsp>() -> usize {
    let (a, b) = (size_of::<Req>(), size_of::<Rsp>());
    let max = if a > b { a } else { b };
    if max == 0 {
        SLOT_ALIGN
    } else {
        // A type's size is at most isize::MAX, so rounding up cannot overflow.
        max.div_ceil(SLOT_ALIGN) * SLOT_ALIGN
    }
}

/// Number of slots `N` in `mem_len` bytes of slots of `slot_size` bytes: the
/// largest power of two with `64 + N * slot_size <= mem_len`, capped at
/// [`MAX_RING_SLOTS`]; 0 if not even one slot fits or `slot_size` is 0 (RING-1).
pub const fn ring_slots(mem_len: usize, slot_size: usize) -> u32 {
    if slot_size == 0 || mem_len < SRING_HEADER_SIZE {
        return 0;
    }
    let fit = (mem_len - SRING_HEADER_SIZE) / slot_size;
    if fit == 0 {
        return 0;
    }
    // fit >= 1, so leading_zeros <= BITS - 1 and the shift is in range.
    let pow = 1usize << (usize::BITS - 1 - fit.leading_zeros());
    if pow >= MAX_RING_SLOTS as usize {
        MAX_RING_SLOTS
    } else {
        pow as u32
    }
}

/// Whether a producer that moved its index from `old` to `new` must notify a
/// consumer whose event index is `event`: iff `event` lies in `old + 1 ..= new`,
/// in wrapping arithmetic (`(new - event) < (new - old)`, RING-4).
pub fn notify_needed(old: u32, new: u32, event: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// The frontend cannot push a request: all `N` slots hold requests or
/// responses it has not consumed yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingFull;

impl fmt::Display for RingFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ring full")
    }
}

/// What a ring operation can report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The memory is too small for the header and one slot.
    MemoryTooSmall,
    /// The peer's producer index is impossible (RING-6): ahead of what the
    /// ring can hold or of what was requested, or behind the consumer.
    ProducerOverrun,
    /// `push_response` with no request taken and not yet answered.
    NoRequestPending,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MemoryTooSmall => "ring memory too small",
            Self::ProducerOverrun => "peer's producer index out of range",
            Self::NoRequestPending => "no request pending a response",
        })
    }
}

/// Byte offset of the slot of free-running index `idx` in a ring of `size`
/// (a power of two, >= 1) slots of `slot_size` bytes. `init`/`attach`
/// checked `64 + size * slot_size <= mem.len()`, so nothing here overflows and
/// the whole slot is in range.
fn slot_offset(size: u32, slot_size: usize, idx: u32) -> usize {
    SRING_HEADER_SIZE + (idx & (size - 1)) as usize * slot_size
}

/// Copy one message out of the slot at `offset`, with exactly one
/// `read_bytes` (RING-5).
fn copy_out<T: RingMessage, M: RingMemory + ?Sized>(mem: &M, offset: usize) -> T {
    let mut msg = T::new_zeroed();
    mem.read_bytes(offset, msg.as_mut_bytes());
    msg
}

/// The frontend's end of a ring: produces requests, consumes responses.
///
/// Holds only private indices; the shared memory is passed to every call.
pub struct FrontRing<Req, Rsp> {
    /// `N`.
    size: u32,
    /// Requests pushed (published or not).
    req_prod_pvt: u32,
    /// The last value stored to `req_prod`: the "old" of RING-4, kept
    /// privately so a backend scribbling on `req_prod` cannot influence it.
    req_prod_published: u32,
    /// Responses consumed.
    rsp_cons: u32,
    _msg: PhantomData<fn(Req) -> Rsp>,
}

impl<Req, Rsp> fmt::Debug for FrontRing<Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontRing")
            .field("size", &self.size)
            .field("req_prod_pvt", &self.req_prod_pvt)
            .field("req_prod_published", &self.req_prod_published)
            .field("rsp_cons", &self.rsp_cons)
            .finish()
    }
}

impl<Req: RingMessage, Rsp: RingMessage> FrontRing<Req, Rsp> {
    /// Bytes per slot for this message pair.
    pub const SLOT_SIZE: usize = slot_size::<Req, Rsp>();

    /// Initialise a fresh ring in `mem` (Xen's `SHARED_RING_INIT` +
    /// `FRONT_RING_INIT`) before granting it: zero the header, all indices 0,
    /// both event indices 1 so that the first message each way notifies.
    pub fn init<M: RingMemory + ?Sized>(mem: &mut M) -> Result<Self, RingError> {
        Self::init_at(mem, 0)
    }

    /// [`Self::init`] with every index starting at `start` (tests exercise the
    /// 2^32 wrap with it; the backend copes with any start, RING-7).
    fn init_at<M: RingMemory + ?Sized>(mem: &mut M, start: u32) -> Result<Self, RingError> {
        let size = ring_slots(mem.len(), Self::SLOT_SIZE);
        if size == 0 {
            return Err(RingError::MemoryTooSmall);
        }
        let header = SringHeader {
            req_prod: start,
            req_event: start.wrapping_add(1),
            rsp_prod: start,
            rsp_event: start.wrapping_add(1),
            pad: [0; 48],
        };
        // The ring is not shared yet, so a plain byte copy is fine here.
        mem.write_bytes(0, header.as_bytes());
        // The header must be visible before the caller advertises the ring
        // (grant reference, event channel) to the backend.
        mem.fence();
        Ok(Self {
            size,
            req_prod_pvt: start,
            req_prod_published: start,
            rsp_cons: start,
            _msg: PhantomData,
        })
    }

    /// `N`, the number of slots.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// How many more requests [`Self::push_request`] accepts now
    /// (`RING_FREE_REQUESTS`). Depends on private state only: a slot is free
    /// once the frontend has *consumed* its response, whatever `rsp_prod` says.
    pub fn free_requests(&self) -> u32 {
        // Invariant: req_prod_pvt - rsp_cons <= N (push checks it, and
        // take_response never moves rsp_cons past req_prod_published), so the
        // wrapping distance is exact and the subtraction cannot underflow;
        // saturating anyway so a broken invariant cannot panic.
        self.size
            .saturating_sub(self.req_prod_pvt.wrapping_sub(self.rsp_cons))
    }

    /// Write `req` into the next slot (RING-3 step 1); not visible to the
    /// backend until [`Self::publish_requests`].
    pub fn push_request<M: RingMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        req: &Req,
    ) -> Result<(), RingFull> {
        if self.free_requests() == 0 {
            return Err(RingFull);
        }
        mem.write_bytes(
            slot_offset(self.size, Self::SLOT_SIZE, self.req_prod_pvt),
            req.as_bytes(),
        );
        // Free was >= 1, so req_prod_pvt - rsp_cons stays <= N.
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publish the pushed requests (RING-3 step 2,
    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`). Returns whether the backend
    /// asked to be notified, i.e. whether to send the event.
    #[must_use = "if this returns true the backend is waiting for an event"]
    pub fn publish_requests<M: RingMemory + ?Sized>(&mut self, mem: &mut M) -> bool {
        let old = self.req_prod_published;
        let new = self.req_prod_pvt;
        // Fence: the request slots written by push_request are visible before
        // the req_prod store that tells the backend they exist.
        mem.fence();
        mem.write_u32(REQ_PROD, new);
        self.req_prod_published = new;
        // Fence: the req_prod store is visible before the req_event load
        // (store -> load, a full barrier even on x86). Pairs with the fence in
        // BackRing::final_check_for_requests (RING-4).
        mem.fence();
        notify_needed(old, new, mem.read_u32(REQ_EVENT))
    }

    /// Validate one load of `rsp_prod` (RING-6); the number of responses
    /// available.
    fn responses_available(&self, rsp_prod: u32) -> Result<u32, RingError> {
        let available = rsp_prod.wrapping_sub(self.rsp_cons);
        // posted = requests published and not yet answered as far as we have
        // consumed; <= req_prod_pvt - rsp_cons <= N by the invariants, so
        // `available <= posted` also gives `available <= N`. A backend index
        // behind rsp_cons wraps to a huge distance and fails too.
        let posted = self.req_prod_published.wrapping_sub(self.rsp_cons);
        if available > posted || available > self.size {
            return Err(RingError::ProducerOverrun);
        }
        Ok(available)
    }

    /// Take the next response, if the backend published one (RING-3 step 7):
    /// `rsp_prod` is loaded once and validated (RING-6), the slot copied out
    /// once (RING-5). The caller validates the content.
    pub fn take_response<M: RingMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<Option<Rsp>, RingError> {
        let rsp_prod = mem.read_u32(RSP_PROD);
        if self.responses_available(rsp_prod)? == 0 {
            return Ok(None);
        }
        // Fence: the rsp_prod load happens before the slot loads, so we see
        // the response the backend wrote before publishing it (read barrier;
        // pairs with the first fence in BackRing::publish_responses).
        mem.fence();
        let rsp = copy_out(mem, slot_offset(self.size, Self::SLOT_SIZE, self.rsp_cons));
        // available >= 1, so rsp_cons stays at or behind req_prod_published.
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// Whether `rsp_prod` shows anything unconsumed; `true` also for an
    /// impossible `rsp_prod`, so the caller goes on to `take_response` and
    /// gets the error.
    fn has_unconsumed_responses<M: RingMemory + ?Sized>(&self, mem: &M) -> bool {
        mem.read_u32(RSP_PROD) != self.rsp_cons
    }

    /// Before waiting for an event (RING-3 step 8,
    /// `RING_FINAL_CHECK_FOR_RESPONSES`): ask for an event at the next
    /// response and re-check. `true`: call [`Self::take_response`] again
    /// (which may report [`RingError::ProducerOverrun`]); `false`: the backend
    /// will notify when it publishes more.
    #[must_use = "if this returns true there is work and no event will come for it"]
    pub fn final_check_for_responses<M: RingMemory + ?Sized>(&mut self, mem: &mut M) -> bool {
        if self.has_unconsumed_responses(mem) {
            return true;
        }
        mem.write_u32(RSP_EVENT, self.rsp_cons.wrapping_add(1));
        // Fence: the rsp_event store is visible before the rsp_prod reload
        // (store -> load). Pairs with the second fence in
        // BackRing::publish_responses: either we see its new rsp_prod here or
        // it sees our rsp_event and notifies (RING-4).
        mem.fence();
        self.has_unconsumed_responses(mem)
    }
}

/// The backend's end of a ring: consumes requests, produces responses.
///
/// Holds only private indices; the shared memory is passed to every call.
pub struct BackRing<Req, Rsp> {
    /// `N`.
    size: u32,
    /// Requests taken (copied out).
    req_cons: u32,
    /// Responses pushed (published or not).
    rsp_prod_pvt: u32,
    /// The last value stored to `rsp_prod` (the "old" of RING-4).
    rsp_prod_published: u32,
    _msg: PhantomData<fn(Req) -> Rsp>,
}

impl<Req, Rsp> fmt::Debug for BackRing<Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackRing")
            .field("size", &self.size)
            .field("req_cons", &self.req_cons)
            .field("rsp_prod_pvt", &self.rsp_prod_pvt)
            .field("rsp_prod_published", &self.rsp_prod_published)
            .finish()
    }
}

impl<Req: RingMessage, Rsp: RingMessage> BackRing<Req, Rsp> {
    /// Bytes per slot for this message pair.
    pub const SLOT_SIZE: usize = slot_size::<Req, Rsp>();

    /// Attach to a ring the frontend initialised (RING-7, `BACK_RING_ATTACH`).
    ///
    /// Nothing in the header is trusted and nothing is written. The backend
    /// has produced no response yet, so the ring's response position is
    /// whatever the frontend initialised `rsp_prod` to (0 after
    /// [`FrontRing::init`]); `req_cons = rsp_prod_pvt = rsp_prod`, loaded once.
    /// Requests the frontend published before the attach are then served, as
    /// `req_prod` itself is not consulted (it would also need checking against
    /// another untrusted value). Whatever `rsp_prod` held, every later
    /// `req_prod` is validated against these private indices (RING-6), so a bad
    /// value only breaks the frontend's own ring: its requests are rejected as
    /// an overrun, or the backend waits for requests that never come.
    /// `req_event` is left alone: the frontend set it to `start + 1`, and the
    /// backend re-arms it in [`Self::final_check_for_requests`].
    pub fn attach<M: RingMemory + ?Sized>(mem: &M) -> Result<Self, RingError> {
        let size = ring_slots(mem.len(), Self::SLOT_SIZE);
        if size == 0 {
            return Err(RingError::MemoryTooSmall);
        }
        let start = mem.read_u32(RSP_PROD);
        Ok(Self {
            size,
            req_cons: start,
            rsp_prod_pvt: start,
            rsp_prod_published: start,
            _msg: PhantomData,
        })
    }

    /// `N`, the number of slots.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Requests taken and not yet answered with [`Self::push_response`]
    /// (at most `N`).
    pub fn requests_pending_response(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// Validate one load of `req_prod` (RING-6); the number of requests
    /// available.
    fn requests_available(&self, req_prod: u32) -> Result<u32, RingError> {
        let unconsumed = req_prod.wrapping_sub(self.req_cons);
        // Invariant: taken since the last publish = req_cons -
        // rsp_prod_published <= N, so `room` is exact. `unconsumed <= room`
        // says both `req_prod - req_cons <= N` and
        // `req_prod - rsp_prod_published <= N` (the sum of the two distances,
        // computed without the wrap that `req_prod - rsp_prod_published`
        // would suffer when N = 2^31). A req_prod behind req_cons wraps to a
        // huge distance and fails too.
        let taken = self.req_cons.wrapping_sub(self.rsp_prod_published);
        let room = self.size.saturating_sub(taken);
        if unconsumed > room {
            return Err(RingError::ProducerOverrun);
        }
        Ok(unconsumed)
    }

    /// Take the next request, if the frontend published one (RING-3 step 3,
    /// `RING_COPY_REQUEST`): `req_prod` is loaded once and validated (RING-6),
    /// the slot copied out exactly once (RING-5). The caller validates the
    /// content of the returned copy.
    pub fn take_request<M: RingMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<Option<Req>, RingError> {
        let req_prod = mem.read_u32(REQ_PROD);
        if self.requests_available(req_prod)? == 0 {
            return Ok(None);
        }
        // Fence: the req_prod load happens before the slot loads, so we see
        // the request the frontend wrote before publishing it (read barrier;
        // pairs with the first fence in FrontRing::publish_requests).
        mem.fence();
        let req = copy_out(mem, slot_offset(self.size, Self::SLOT_SIZE, self.req_cons));
        // 1 <= unconsumed <= room, so req_cons - rsp_prod_published stays
        // <= N (and with it req_cons - rsp_prod_pvt).
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(req))
    }

    /// Write the response to the oldest unanswered request into its slot
    /// (RING-3 step 5); not visible until [`Self::publish_responses`].
    pub fn push_response<M: RingMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        rsp: &Rsp,
    ) -> Result<(), RingError> {
        if self.requests_pending_response() == 0 {
            return Err(RingError::NoRequestPending);
        }
        // The slot held request rsp_prod_pvt, which take_request has copied
        // out; the frontend does not reuse it before consuming this response.
        mem.write_bytes(
            slot_offset(self.size, Self::SLOT_SIZE, self.rsp_prod_pvt),
            rsp.as_bytes(),
        );
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publish the pushed responses (RING-3 step 6,
    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`). Returns whether the frontend
    /// asked to be notified.
    #[must_use = "if this returns true the frontend is waiting for an event"]
    pub fn publish_responses<M: RingMemory + ?Sized>(&mut self, mem: &mut M) -> bool {
        let old = self.rsp_prod_published;
        let new = self.rsp_prod_pvt;
        // Fence: the response slot stores (and our earlier copy-out loads of
        // the requests) complete before the rsp_prod store lets the frontend
        // read those slots and reuse them.
        mem.fence();
        mem.write_u32(RSP_PROD, new);
        self.rsp_prod_published = new;
        // Fence: the rsp_prod store is visible before the rsp_event load
        // (store -> load). Pairs with the fence in
        // FrontRing::final_check_for_responses (RING-4).
        mem.fence();
        notify_needed(old, new, mem.read_u32(RSP_EVENT))
    }

    /// Whether `req_prod` shows requests to take (validated, RING-6).
    fn has_unconsumed_requests<M: RingMemory + ?Sized>(&self, mem: &M) -> Result<bool, RingError> {
        Ok(self.requests_available(mem.read_u32(REQ_PROD))? != 0)
    }

    /// Before waiting for an event (RING-3 step 4,
    /// `RING_FINAL_CHECK_FOR_REQUESTS`): ask for an event at the next request
    /// and re-check. `Ok(true)`: call [`Self::take_request`] again;
    /// `Ok(false)`: the frontend will notify when it publishes more.
    pub fn final_check_for_requests<M: RingMemory + ?Sized>(
        &mut self,
        mem: &mut M,
    ) -> Result<bool, RingError> {
        if self.has_unconsumed_requests(mem)? {
            return Ok(true);
        }
        mem.write_u32(REQ_EVENT, self.req_cons.wrapping_add(1));
        // Fence: the req_event store is visible before the req_prod reload
        // (store -> load). Pairs with the second fence in
        // FrontRing::publish_requests: either we see its new req_prod here or
        // it sees our req_event and notifies (RING-4).
        mem.fence();
        self.has_unconsumed_requests(mem)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use core::cell::Cell;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::vec;
    use std::vec::Vec;

    /// Shared memory over a `Vec`, counting accesses.
    struct VecMemory {
        bytes: Vec<u8>,
        u32_reads: Cell<usize>,
        byte_reads: Cell<usize>,
    }

    impl VecMemory {
        fn new(len: usize) -> Self {
            Self {
                bytes: vec![0xa5; len],
                u32_reads: Cell::new(0),
                byte_reads: Cell::new(0),
            }
        }
        fn header(&self) -> SringHeader {
            SringHeader::read_from_bytes(&self.bytes[..SRING_HEADER_SIZE]).unwrap()
        }
    }

    impl RingMemory for VecMemory {
        fn len(&self) -> usize {
            self.bytes.len()
        }
        fn read_u32(&self, offset: usize) -> u32 {
            assert_eq!(offset % 4, 0);
            self.u32_reads.set(self.u32_reads.get() + 1);
            u32::from_ne_bytes(self.bytes[offset..offset + 4].try_into().unwrap())
        }
        fn write_u32(&mut self, offset: usize, value: u32) {
            assert_eq!(offset % 4, 0);
            self.bytes[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
        }
        fn read_bytes(&self, offset: usize, out: &mut [u8]) {
            self.byte_reads.set(self.byte_reads.get() + 1);
            out.copy_from_slice(&self.bytes[offset..offset + out.len()]);
        }
        fn write_bytes(&mut self, offset: usize, data: &[u8]) {
            self.bytes[offset..offset + data.len()].copy_from_slice(data);
        }
        fn fence(&self) {}
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
    #[repr(C)]
    struct Req {
        id: u64,
        sector: u64,
        op: u32,
        pad: u32,
    }
    const _: () = assert!(size_of::<Req>() == 24);

    #[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
    #[repr(C)]
    struct Rsp {
        id: u32,
        status: u32,
        extra: u32,
    }
    const _: () = assert!(size_of::<Rsp>() == 12);

    type Front = FrontRing<Req, Rsp>;
    type Back = BackRing<Req, Rsp>;

    fn req(id: u64) -> Req {
        Req {
            id,
            sector: id * 8,
            op: 1,
            pad: 0,
        }
    }
    fn rsp(id: u64) -> Rsp {
        Rsp {
            id: id as u32,
            status: 0,
            extra: 7,
        }
    }

    /// 8 slots of 24 bytes, plus a few bytes that do not make a 9th.
    const LEN8: usize = SRING_HEADER_SIZE + 8 * 24 + 10;

    fn pair(len: usize, start: u32) -> (VecMemory, Front, Back) {
        let mut mem = VecMemory::new(len);
        let front = Front::init_at(&mut mem, start).unwrap();
        let back = Back::attach(&mem).unwrap();
        (mem, front, back)
    }

    #[test]
    fn header_layout() {
        assert_eq!(size_of::<SringHeader>(), 64);
        assert_eq!((REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT), (0, 4, 8, 12));
    }

    #[test]
    fn slot_sizes() {
        assert_eq!(slot_size::<Req, Rsp>(), 24);
        assert_eq!(slot_size::<Rsp, Rsp>(), 16);
        assert_eq!(slot_size::<u8, u16>(), 8);
        assert_eq!(slot_size::<[u8; 0], ()>(), 8);
        assert_eq!(slot_size::<[u8; 65], u8>(), 72);
        assert_eq!(Front::SLOT_SIZE, 24);
    }

    #[test]
    fn ring_slots_math() {
        assert_eq!(ring_slots(4096, 64), 32); // 63 fit
        assert_eq!(ring_slots(4096, 8), 256); // 504 fit
        assert_eq!(ring_slots(64 + 8 * 24, 24), 8); // exactly 8
        assert_eq!(ring_slots(64 + 8 * 24 - 1, 24), 4);
        assert_eq!(ring_slots(LEN8, 24), 8);
        assert_eq!(ring_slots(72, 8), 1);
        assert_eq!(ring_slots(71, 8), 0);
        assert_eq!(ring_slots(64, 8), 0);
        assert_eq!(ring_slots(0, 8), 0);
        assert_eq!(ring_slots(4096, 0), 0);
        assert_eq!(ring_slots(usize::MAX, 8), MAX_RING_SLOTS);
        assert_eq!(ring_slots(usize::MAX, usize::MAX), 0);
        const N: u32 = ring_slots(2 * 4096, 112);
        assert_eq!(N, 64);
    }

    #[test]
    fn notify_needed_cases() {
        assert!(notify_needed(0, 1, 1)); // event at the first new index
        assert!(notify_needed(0, 5, 5)); // ... at the last
        assert!(notify_needed(0, 5, 3)); // ... in between
        assert!(!notify_needed(0, 5, 6)); // not reached yet
        assert!(!notify_needed(3, 5, 3)); // already passed before
        assert!(!notify_needed(10, 12, 5)); // stale
        assert!(!notify_needed(5, 5, 5)); // nothing new
        assert!(!notify_needed(5, 5, 6));
        // Across the wrap.
        assert!(notify_needed(u32::MAX - 1, 1, u32::MAX));
        assert!(notify_needed(u32::MAX - 1, 1, 0));
        assert!(notify_needed(u32::MAX - 1, 1, 1));
        assert!(!notify_needed(u32::MAX - 1, 1, 2));
        assert!(!notify_needed(u32::MAX - 1, 1, u32::MAX - 1));
    }

    #[test]
    fn init_and_attach() {
        let mut mem = VecMemory::new(LEN8);
        let front = Front::init(&mut mem).unwrap();
        assert_eq!(front.size(), 8);
        assert_eq!(front.free_requests(), 8);
        let h = mem.header();
        assert_eq!(
            (h.req_prod, h.req_event, h.rsp_prod, h.rsp_event),
            (0, 1, 0, 1)
        );
        assert_eq!(h.pad, [0; 48]);
        let back = Back::attach(&mem).unwrap();
        assert_eq!(back.size(), 8);
        assert_eq!(back.requests_pending_response(), 0);

        let mut small = VecMemory::new(64 + 23);
        assert_eq!(
            Front::init(&mut small).unwrap_err(),
            RingError::MemoryTooSmall
        );
        assert_eq!(Back::attach(&small).unwrap_err(), RingError::MemoryTooSmall);
        let mut empty = VecMemory::new(0);
        assert!(empty.is_empty());
        assert_eq!(
            Front::init(&mut empty).unwrap_err(),
            RingError::MemoryTooSmall
        );
    }

    #[test]
    fn round_trip_wraps_free_running_indices() {
        let start = u32::MAX - 20;
        let (mut mem, mut front, mut back) = pair(LEN8, start);
        let (mut sent, mut got_req, mut got_rsp) = (0u64, 0u64, 0u64);
        let total = 200u64; // 25 times round an 8-slot ring, across 2^32
        let mut batch = 1;
        while got_rsp < total {
            for _ in 0..batch {
                if sent < total && front.push_request(&mut mem, &req(sent)).is_ok() {
                    sent += 1;
                }
            }
            let _ = front.publish_requests(&mut mem);
            while let Some(r) = back.take_request(&mem).unwrap() {
                assert_eq!(r, req(got_req));
                back.push_response(&mut mem, &rsp(got_req)).unwrap();
                got_req += 1;
            }
            let _ = back.publish_responses(&mut mem);
            while let Some(r) = front.take_response(&mem).unwrap() {
                assert_eq!(r, rsp(got_rsp));
                got_rsp += 1;
            }
            batch = batch % 9 + 1;
        }
        assert_eq!((sent, got_req, got_rsp), (total, total, total));
        let end = start.wrapping_add(total as u32);
        assert!(end < start, "indices wrapped");
        let h = mem.header();
        assert_eq!((h.req_prod, h.rsp_prod), (end, end));
        assert_eq!(front.free_requests(), 8);
    }

    #[test]
    fn ring_full() {
        let (mut mem, mut front, mut back) = pair(LEN8, 0);
        for i in 0..8 {
            assert_eq!(front.free_requests(), 8 - i as u32);
            front.push_request(&mut mem, &req(i)).unwrap();
        }
        assert_eq!(front.free_requests(), 0);
        assert_eq!(front.push_request(&mut mem, &req(8)), Err(RingFull));
        let _ = front.publish_requests(&mut mem);
        // Consumed requests do not free slots; consumed responses do.
        while back.take_request(&mem).unwrap().is_some() {}
        assert_eq!(back.requests_pending_response(), 8);
        assert_eq!(front.push_request(&mut mem, &req(8)), Err(RingFull));
        back.push_response(&mut mem, &rsp(0)).unwrap();
        let _ = back.publish_responses(&mut mem);
        assert_eq!(front.push_request(&mut mem, &req(8)), Err(RingFull));
        assert_eq!(front.take_response(&mem).unwrap(), Some(rsp(0)));
        assert_eq!(front.free_requests(), 1);
        front.push_request(&mut mem, &req(8)).unwrap();
        assert_eq!(front.push_request(&mut mem, &req(9)), Err(RingFull));
    }

    #[test]
    fn response_needs_a_taken_request() {
        let (mut mem, mut front, mut back) = pair(LEN8, 0);
        assert_eq!(
            back.push_response(&mut mem, &rsp(0)),
            Err(RingError::NoRequestPending)
        );
        front.push_request(&mut mem, &req(0)).unwrap();
        let _ = front.publish_requests(&mut mem);
        // Published but not taken: still nothing to answer.
        assert_eq!(
            back.push_response(&mut mem, &rsp(0)),
            Err(RingError::NoRequestPending)
        );
        back.take_request(&mem).unwrap().unwrap();
        back.push_response(&mut mem, &rsp(0)).unwrap();
        assert_eq!(
            back.push_response(&mut mem, &rsp(1)),
            Err(RingError::NoRequestPending)
        );
    }

    #[test]
    fn notification_suppression() {
        let (mut mem, mut front, mut back) = pair(LEN8, 0);
        // req_event = 1 from init: the first request notifies.
        front.push_request(&mut mem, &req(0)).unwrap();
        assert!(front.publish_requests(&mut mem));
        // The backend is busy (has not re-armed): no more events.
        front.push_request(&mut mem, &req(1)).unwrap();
        assert!(!front.publish_requests(&mut mem));
        assert!(!front.publish_requests(&mut mem), "nothing new, no event");
        // The backend drains, then final-checks before sleeping.
        assert!(back.take_request(&mem).unwrap().is_some());
        assert_eq!(back.final_check_for_requests(&mut mem), Ok(true));
        assert!(back.take_request(&mem).unwrap().is_some());
        assert_eq!(back.final_check_for_requests(&mut mem), Ok(false));
        assert_eq!(mem.header().req_event, 3);
        // Now it sleeps: the next publish notifies, the one after does not.
        front.push_request(&mut mem, &req(2)).unwrap();
        assert!(front.publish_requests(&mut mem));
        front.push_request(&mut mem, &req(3)).unwrap();
        assert!(!front.publish_requests(&mut mem));

        // Responses, the same way: rsp_event = 1 from init.
        back.push_response(&mut mem, &rsp(0)).unwrap();
        assert!(back.publish_responses(&mut mem));
        back.push_response(&mut mem, &rsp(1)).unwrap();
        assert!(!back.publish_responses(&mut mem));
        assert!(front.final_check_for_responses(&mut mem));
        while front.take_response(&mem).unwrap().is_some() {}
        assert!(!front.final_check_for_responses(&mut mem));
        back.take_request(&mem).unwrap().unwrap();
        back.push_response(&mut mem, &rsp(2)).unwrap();
        assert!(back.publish_responses(&mut mem));
    }

    #[test]
    fn final_check_catches_a_racing_publish() {
        let (mut mem, mut front, mut back) = pair(LEN8, 0);
        front.push_request(&mut mem, &req(0)).unwrap();
        let _ = front.publish_requests(&mut mem);
        back.take_request(&mem).unwrap().unwrap();
        // The frontend publishes after the backend's last look but before its
        // req_event store: the publish sees the old req_event (no event) ...
        mem.write_u32(REQ_EVENT, 1);
        front.push_request(&mut mem, &req(1)).unwrap();
        assert!(!front.publish_requests(&mut mem));
        // ... and the backend's re-check after arming finds the request.
        assert_eq!(back.final_check_for_requests(&mut mem), Ok(true));
        assert_eq!(back.take_request(&mem).unwrap(), Some(req(1)));
    }

    #[test]
    fn attach_serves_requests_published_before_it() {
        let mut mem = VecMemory::new(LEN8);
        let mut front = Front::init_at(&mut mem, 1000).unwrap();
        for i in 0..3 {
            front.push_request(&mut mem, &req(i)).unwrap();
        }
        let _ = front.publish_requests(&mut mem);
        let mut back = Back::attach(&mem).unwrap();
        for i in 0..3 {
            assert_eq!(back.take_request(&mem).unwrap(), Some(req(i)));
        }
        assert_eq!(back.take_request(&mem).unwrap(), None);
    }

    #[test]
    fn hostile_req_prod_is_rejected_without_side_effects() {
        let (mut mem, mut front, mut back) = pair(LEN8, 0);
        for i in 0..3 {
            front.push_request(&mut mem, &req(i)).unwrap();
        }
        let _ = front.publish_requests(&mut mem);
        assert_eq!(back.take_request(&mem).unwrap(), Some(req(0)));

        for bad in [
            9u32,
            1000,
            u32::MAX,
            0, /* behind req_cons = 1 */
            1 + 8 + 1,
        ] {
            mem.write_u32(REQ_PROD, bad);
            for _ in 0..3 {
                assert_eq!(back.take_request(&mem), Err(RingError::ProducerOverrun));
            }
            assert_eq!(
                back.final_check_for_requests(&mut mem),
                Err(RingError::ProducerOverrun)
            );
        }
        // req_prod = req_cons + N is the most the ring can hold (with 1 taken,
        // unanswered): 1 + 8 overruns the unanswered slot 0.
        mem.write_u32(REQ_PROD, 1 + 8);
        assert_eq!(back.take_request(&mem), Err(RingError::ProducerOverrun));
        // State unchanged: back to the truth, and nothing is returned twice.
        mem.write_u32(REQ_PROD, 3);
        assert_eq!(back.take_request(&mem).unwrap(), Some(req(1)));
        assert_eq!(back.take_request(&mem).unwrap(), Some(req(2)));
        assert_eq!(back.take_request(&mem).unwrap(), None);
        assert_eq!(back.requests_pending_response(), 3);

        // Answered but not published: the frontend cannot have reused those
        // slots yet, so req_prod may still only reach rsp_prod + 8 = 8.
        for i in 0..3 {
            back.push_response(&mut mem, &rsp(i)).unwrap();
        }
        mem.write_u32(REQ_PROD, 3 + 6);
        assert_eq!(back.take_request(&mem), Err(RingError::ProducerOverrun));
        // Published: req_prod may run up to req_cons + 8 and no further.
        let _ = back.publish_responses(&mut mem);
        mem.write_u32(REQ_PROD, 3 + 9);
        assert_eq!(back.take_request(&mem), Err(RingError::ProducerOverrun));
        mem.write_u32(REQ_PROD, 3 + 8);
        let mut taken = 0;
        while let Ok(Some(_)) = back.take_request(&mem) {
            taken += 1;
            assert!(taken <= 8, "more requests than the ring holds");
        }
        assert_eq!(taken, 8);
        assert_eq!(back.take_request(&mem).unwrap(), None);
    }

    #[test]
    fn hostile_rsp_prod_is_rejected() {
        let (mut mem, mut front, mut back) = pair(LEN8, 0);
        // No request posted: any response is an overrun.
        mem.write_u32(RSP_PROD, 1);
        assert_eq!(front.take_response(&mem), Err(RingError::ProducerOverrun));
        assert!(
            front.final_check_for_responses(&mut mem),
            "true, so the caller sees the error"
        );
        // Three pushed, two published: at most two responses.
        mem.write_u32(RSP_PROD, 0);
        for i in 0..2 {
            front.push_request(&mut mem, &req(i)).unwrap();
        }
        let _ = front.publish_requests(&mut mem);
        front.push_request(&mut mem, &req(2)).unwrap();
        for bad in [3u32, 9, u32::MAX] {
            mem.write_u32(RSP_PROD, bad);
            assert_eq!(front.take_response(&mem), Err(RingError::ProducerOverrun));
        }
        // A sane backend answers request 0.
        mem.write_u32(RSP_PROD, 0);
        back.take_request(&mem).unwrap().unwrap();
        back.push_response(&mut mem, &rsp(0)).unwrap();
        let _ = back.publish_responses(&mut mem);
        assert_eq!(front.take_response(&mem).unwrap(), Some(rsp(0)));
        // rsp_prod moved back behind rsp_cons.
        mem.write_u32(RSP_PROD, 0);
        assert_eq!(front.take_response(&mem), Err(RingError::ProducerOverrun));
        mem.write_u32(RSP_PROD, 1);
        assert_eq!(front.take_response(&mem).unwrap(), None);
        assert_eq!(front.free_requests(), 6);
    }

    #[test]
    fn request_is_copied_exactly_once() {
        let (mut mem, mut front, mut back) = pair(LEN8, 0);
        front.push_request(&mut mem, &req(42)).unwrap();
        let _ = front.publish_requests(&mut mem);
        let (u32s, bytes) = (mem.u32_reads.get(), mem.byte_reads.get());
        let copy = back.take_request(&mem).unwrap().unwrap();
        assert_eq!(mem.u32_reads.get() - u32s, 1, "req_prod loaded once");
        assert_eq!(mem.byte_reads.get() - bytes, 1, "slot copied once");
        // The frontend rewrites the slot after the copy: the copy is unchanged.
        let slot = slot_offset(8, 24, 0);
        mem.write_bytes(slot, req(666).as_bytes());
        assert_eq!(copy, req(42));
        assert_eq!(back.take_request(&mem).unwrap(), None, "not returned again");

        // Same for responses.
        back.push_response(&mut mem, &rsp(42)).unwrap();
        let _ = back.publish_responses(&mut mem);
        let (u32s, bytes) = (mem.u32_reads.get(), mem.byte_reads.get());
        let copy = front.take_response(&mem).unwrap().unwrap();
        assert_eq!(mem.u32_reads.get() - u32s, 1);
        assert_eq!(mem.byte_reads.get() - bytes, 1);
        mem.write_bytes(slot, rsp(666).as_bytes());
        assert_eq!(copy, rsp(42));
        assert_eq!(front.take_response(&mem).unwrap(), None);
    }

    /// Private-state invariants that must hold whatever the peer wrote.
    fn check_invariants(front: &Front, back: &Back) -> Result<(), TestCaseError> {
        let n = front.size();
        let in_flight = front.req_prod_pvt.wrapping_sub(front.rsp_cons);
        let published = front.req_prod_published.wrapping_sub(front.rsp_cons);
        prop_assert!(in_flight <= n, "front in flight {in_flight} > {n}");
        prop_assert!(
            published <= in_flight,
            "front published {published} > {in_flight}"
        );
        let taken = back.req_cons.wrapping_sub(back.rsp_prod_published);
        prop_assert!(taken <= n, "back took {taken} > {n} since its last publish");
        let unanswered = back.requests_pending_response();
        prop_assert!(
            unanswered <= taken,
            "back unanswered {unanswered} > {taken}"
        );
        let unpublished = back.rsp_prod_pvt.wrapping_sub(back.rsp_prod_published);
        prop_assert!(
            unpublished <= taken,
            "back unpublished {unpublished} > {taken}"
        );
        Ok(())
    }

    #[derive(Clone, Debug)]
    enum Op {
        FrontPush,
        FrontPublish,
        FrontTake,
        FrontFinalCheck,
        BackTake,
        BackPush,
        BackPublish,
        BackFinalCheck,
        /// Hostile: write these bytes at this offset (modulo the length).
        Scribble(usize, Vec<u8>),
        /// Hostile: add this delta to the header field at this offset.
        Nudge(usize, u32),
    }

    fn honest_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::FrontPush),
            2 => Just(Op::FrontPublish),
            3 => Just(Op::FrontTake),
            1 => Just(Op::FrontFinalCheck),
            3 => Just(Op::BackTake),
            3 => Just(Op::BackPush),
            2 => Just(Op::BackPublish),
            1 => Just(Op::BackFinalCheck),
        ]
    }

    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => honest_op(),
            1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..32))
                .prop_map(|(o, b)| Op::Scribble(o, b)),
            1 => (0usize..4, prop_oneof![0u32..20, any::<u32>(), (u32::MAX - 20)..=u32::MAX])
                .prop_map(|(f, d)| Op::Nudge(f * 4, d)),
        ]
    }

    /// Memory of 1 ..= 40 slots' worth plus a partial slot.
    fn mem_len() -> impl Strategy<Value = usize> {
        (1usize..=40, 0usize..24).prop_map(|(k, extra)| SRING_HEADER_SIZE + k * 24 + extra)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// With honest peers, any interleaving delivers every request exactly
        /// once and in order, every response likewise, and no event is lost:
        /// a publish that returns false never leaves the peer asleep.
        #[test]
        fn honest_interleavings_deliver_everything_in_order(
            len in mem_len(),
            start in prop_oneof![any::<u32>(), (u32::MAX - 50)..=u32::MAX],
            ops in proptest::collection::vec(honest_op(), 1..400),
        ) {
            let (mut mem, mut front, mut back) = pair(len, start);
            let (mut next_req, mut next_rsp) = (0u64, 0u64);
            let mut expect_req = 0u64;
            let mut unanswered = VecDeque::new();
            // A side is asleep after a final check that found nothing, until
            // the peer's publish returns true.
            let (mut back_asleep, mut front_asleep) = (false, false);
            for op in ops.iter().chain(core::iter::repeat_n(&Op::FrontPublish, 1)) {
                match op {
                    Op::FrontPush => {
                        if front.push_request(&mut mem, &req(next_req)).is_ok() {
                            next_req += 1;
                        }
                    }
                    Op::FrontPublish => {
                        let new_work = front.req_prod_pvt != front.req_prod_published;
                        if front.publish_requests(&mut mem) {
                            back_asleep = false;
                        } else {
                            prop_assert!(!(new_work && back_asleep), "lost wakeup of the backend");
                        }
                    }
                    Op::FrontTake => {
                        front_asleep = false;
                        if let Some(r) = front.take_response(&mem).unwrap() {
                            prop_assert_eq!(r, rsp(next_rsp));
                            next_rsp += 1;
                        }
                    }
                    Op::FrontFinalCheck => {
                        front_asleep = !front.final_check_for_responses(&mut mem);
                    }
                    Op::BackTake => {
                        back_asleep = false;
                        if let Some(r) = back.take_request(&mem).unwrap() {
                            prop_assert_eq!(r, req(expect_req));
                            unanswered.push_back(expect_req);
                            expect_req += 1;
                        }
                    }
                    Op::BackPush => {
                        if let Some(&id) = unanswered.front() {
                            back.push_response(&mut mem, &rsp(id)).unwrap();
                            unanswered.pop_front();
                        } else {
                            prop_assert_eq!(
                                back.push_response(&mut mem, &rsp(0)),
                                Err(RingError::NoRequestPending)
                            );
                        }
                    }
                    Op::BackPublish => {
                        let new_work = back.rsp_prod_pvt != back.rsp_prod_published;
                        if back.publish_responses(&mut mem) {
                            front_asleep = false;
                        } else {
                            prop_assert!(!(new_work && front_asleep), "lost wakeup of the frontend");
                        }
                    }
                    Op::BackFinalCheck => {
                        back_asleep = !back.final_check_for_requests(&mut mem).unwrap();
                    }
                    Op::Scribble(..) | Op::Nudge(..) => unreachable!(),
                }
                check_invariants(&front, &back)?;
            }
            // Drain: everything published reaches the backend, every request
            // is answered, every response reaches the frontend.
            while let Some(r) = back.take_request(&mem).unwrap() {
                prop_assert_eq!(r, req(expect_req));
                unanswered.push_back(expect_req);
                expect_req += 1;
            }
            prop_assert_eq!(expect_req, next_req);
            while let Some(id) = unanswered.pop_front() {
                back.push_response(&mut mem, &rsp(id)).unwrap();
            }
            let _ = back.publish_responses(&mut mem);
            while let Some(r) = front.take_response(&mem).unwrap() {
                prop_assert_eq!(r, rsp(next_rsp));
                next_rsp += 1;
            }
            prop_assert_eq!(next_rsp, next_req);
            prop_assert_eq!(front.free_requests(), front.size());
            prop_assert!(!front.final_check_for_responses(&mut mem));
            prop_assert_eq!(back.final_check_for_requests(&mut mem), Ok(false));
        }

        /// Garbage written anywhere between operations never makes either side
        /// panic or loop, never breaks the private invariants, and never yields
        /// more than the ring can hold: the backend takes at most N requests
        /// between two of its publishes, the frontend never takes more
        /// responses than it published requests, and a drain loop ends within
        /// N + 1 calls.
        #[test]
        fn garbage_never_breaks_either_side(
            len in mem_len(),
            start in any::<u32>(),
            ops in proptest::collection::vec(any_op(), 1..400),
        ) {
            let (mut mem, mut front, mut back) = pair(len, start);
            let n = front.size();
            let (mut published, mut front_taken) = (0u64, 0u64);
            let (mut back_taken, mut back_answered) = (0u64, 0u64);
            let mut pushed_unpublished = 0u64;
            let mut taken_since_publish = 0u64;
            for op in ops {
                match op {
                    Op::FrontPush => {
                        if front.push_request(&mut mem, &req(0)).is_ok() {
                            pushed_unpublished += 1;
                        }
                    }
                    Op::FrontPublish => {
                        let _ = front.publish_requests(&mut mem);
                        published += pushed_unpublished;
                        pushed_unpublished = 0;
                    }
                    Op::FrontTake => {
                        for _ in 0..=n {
                            match front.take_response(&mem) {
                                Ok(Some(_)) => front_taken += 1,
                                Ok(None) | Err(_) => break,
                            }
                        }
                        // The drain ended by itself within N + 1 calls.
                        prop_assert!(!matches!(front.take_response(&mem), Ok(Some(_))));
                    }
                    Op::FrontFinalCheck => {
                        let _ = front.final_check_for_responses(&mut mem);
                    }
                    Op::BackTake => {
                        for _ in 0..=n {
                            match back.take_request(&mem) {
                                Ok(Some(_)) => {
                                    back_taken += 1;
                                    taken_since_publish += 1;
                                }
                                Ok(None) | Err(_) => break,
                            }
                        }
                        prop_assert!(!matches!(back.take_request(&mem), Ok(Some(_))));
                    }
                    Op::BackPush => {
                        if back.push_response(&mut mem, &rsp(0)).is_ok() {
                            back_answered += 1;
                        }
                    }
                    Op::BackPublish => {
                        let _ = back.publish_responses(&mut mem);
                        taken_since_publish = 0;
                    }
                    Op::BackFinalCheck => {
                        let _ = back.final_check_for_requests(&mut mem);
                    }
                    Op::Scribble(offset, bytes) => {
                        let offset = offset % len;
                        let end = (offset + bytes.len()).min(len);
                        mem.bytes[offset..end].copy_from_slice(&bytes[..end - offset]);
                    }
                    Op::Nudge(field, delta) => {
                        let v = mem.read_u32(field).wrapping_add(delta);
                        mem.write_u32(field, v);
                    }
                }
                check_invariants(&front, &back)?;
                prop_assert!(front_taken <= published, "{front_taken} responses for {published} requests");
                prop_assert!(back_taken - back_answered <= u64::from(n));
                prop_assert!(
                    taken_since_publish <= u64::from(n),
                    "{taken_since_publish} requests taken between two publishes"
                );
                prop_assert_eq!(u64::from(back.requests_pending_response()), back_taken - back_answered);
            }
        }
    }
}
