//! Event channels on the guest side (SPEC.md §8, EVT-1 .. EVT-6; HC-12
//! block and poll): binding ports, per-port handlers, the upcall that runs
//! them, the upcall mask, and waiting for events without using the CPU.
//!
//! # Upcalls
//! The first call that may lead to an event ([`init`], a `bind_*`,
//! [`alloc_unbound`], [`set_handler`], [`enable`], [`wait_until`]) registers
//! the kit's event stub as the event callback (`set_callbacks`, sharing it
//! with the user-mode syscall callback, see `crate::callbacks`). When an
//! upcall arrives the hypervisor has already set `evtchn_upcall_mask`; the
//! stub saves the registers and `upcall`:
//! 1. clears `evtchn_upcall_pending`, swaps `evtchn_pending_sel` out;
//! 2. for each selected word, takes `pending & !mask` and, per set bit,
//!    clears the pending bit (`fetch_and`) *then* calls the port's handler;
//! 3. repeats until the selector stays empty, clears `evtchn_upcall_mask`,
//!    and returns through the `iret` stub (the hypervisor delivers again on
//!    that return if something arrived in between).
//!
//! Handlers run in "interrupt context" on the interrupted stack with upcalls
//! masked: they must be short, must not allocate (the heap lock may be held
//! by the interrupted code) and must not block. Printing is allowed (the
//! console never deadlocks). Most handlers only record that something
//! happened; the main program waits with [`wait_until`].
//!
//! # Waiting
//! [`wait_until`] masks upcalls, checks its condition, and if it is false
//! calls `sched_op(SCHEDOP_BLOCK)`, which unmasks upcalls and blocks in one
//! step (so an event arriving between the check and the block is not lost),
//! then loops. A blocked vCPU uses no CPU (EVT-6).
//!
//! # Invariants
//! - Only vCPU 0 exists (ABI 0.x); all state here is vcpu_info\[0\]'s.
//! - shared_info is reached only through atomics on naturally aligned words
//!   (the hypervisor changes it concurrently).
//! - The handler table is only written with upcalls masked, and the upcall
//!   reads it with `try_read` and drops the guard before calling a handler,
//!   so neither side can deadlock on it.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use hypercall_abi::evtchn::EvtchnStatus;
use hypercall_abi::shared_info::{SharedInfo, VcpuInfo};
use hypercall_abi::{DomId, Errno};
use spin::{Once, RwLock};

pub use hypercall_abi::evtchn::Port;

pub use crate::hypercall::{sched_block, sched_poll};

use crate::hypercall;

/// Ports a domain may hold (SPEC.md §8): handlers exist for `1 .. MAX_PORTS`.
pub const MAX_PORTS: usize = 1024;

/// What runs when a port's event arrives (in interrupt context, see the
/// module documentation).
pub type Handler = fn(Port);

/// Handlers by port.
static HANDLERS: RwLock<[Option<Handler>; MAX_PORTS]> = RwLock::new([None; MAX_PORTS]);
/// Set once the event callback is registered.
static INIT: Once<Result<(), Errno>> = Once::new();
/// Upcalls taken so far.
static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Events handled so far (one per pending bit cleared by [`upcall`]).
static EVENTS: AtomicU64 = AtomicU64::new(0);

/// The shared_info page and vcpu_info\[0\] as atomics (the one unsafe edge of
/// this module).
mod shared {
    use super::*;

    /// start_info.shared_info, cached (the upcall reads it several times).
    static PAGE: AtomicU64 = AtomicU64::new(0);

    /// The shared_info page (start_info.shared_info, mapped writable for the
    /// domain's lifetime, SPEC.md §5.2).
    fn page() -> *mut SharedInfo {
        let mut va = PAGE.load(Ordering::Relaxed);
        if va == 0 {
            va = crate::start_info().shared_info;
            PAGE.store(va, Ordering::Relaxed);
        }
        va as *mut SharedInfo
    }

    fn vcpu0() -> *mut VcpuInfo {
        // `vcpu_info` is the first field of `SharedInfo`.
        page().cast::<VcpuInfo>()
    }

    /// `evtchn_upcall_pending` of vCPU 0.
    pub(super) fn upcall_pending() -> &'static AtomicU8 {
        // SAFETY: the field lies inside the shared_info page, which stays
        // mapped for the domain's lifetime; it is only ever accessed
        // atomically (here and by the hypervisor), and no Rust reference to
        // the page exists elsewhere.
        unsafe { AtomicU8::from_ptr(core::ptr::addr_of_mut!((*vcpu0()).evtchn_upcall_pending)) }
    }

    /// `evtchn_upcall_mask` of vCPU 0.
    pub(super) fn upcall_mask() -> &'static AtomicU8 {
        // SAFETY: as in `upcall_pending`.
        unsafe { AtomicU8::from_ptr(core::ptr::addr_of_mut!((*vcpu0()).evtchn_upcall_mask)) }
    }

    /// `evtchn_pending_sel` of vCPU 0.
    pub(super) fn pending_sel() -> &'static AtomicU64 {
        // SAFETY: as in `upcall_pending` (the field is 8-aligned, offset 8).
        unsafe { AtomicU64::from_ptr(core::ptr::addr_of_mut!((*vcpu0()).evtchn_pending_sel)) }
    }

    /// Word `index % 64` of `evtchn_pending`.
    pub(super) fn pending(index: usize) -> &'static AtomicU64 {
        // SAFETY: as in `upcall_pending`; the index is reduced into the array.
        unsafe {
            AtomicU64::from_ptr(core::ptr::addr_of_mut!(
                (*page()).evtchn_pending[index % 64]
            ))
        }
    }

    /// Word `index % 64` of `evtchn_mask`.
    pub(super) fn mask(index: usize) -> &'static AtomicU64 {
        // SAFETY: as in `pending`.
        unsafe { AtomicU64::from_ptr(core::ptr::addr_of_mut!((*page()).evtchn_mask[index % 64])) }
    }
}

/// The word and bit of `port` in the 2-level bitmaps.
const fn word_bit(port: Port) -> (usize, u64) {
    ((port / 64) as usize, 1u64 << (port % 64))
}

/// Registers the kit's event stub as the event callback (once; later calls
/// return the first outcome).
pub fn init() -> Result<(), Errno> {
    *INIT.call_once(crate::callbacks::install_event)
}

/// [`init`], panicking if the hypervisor refuses the callback.
fn ensure_init() {
    if let Err(err) = init() {
        panic!("events: set_callbacks(event) failed: {err}");
    }
}

/// Registers `handler` for `port` (replacing any); events on a port without
/// a handler are consumed and dropped.
pub fn set_handler(port: Port, handler: Handler) {
    ensure_init();
    set_slot(port, Some(handler));
}

/// Removes the handler of `port`.
pub fn clear_handler(port: Port) {
    set_slot(port, None);
}

fn set_slot(port: Port, value: Option<Handler>) {
    let Some(index) = usize::try_from(port).ok().filter(|&p| p < MAX_PORTS) else {
        panic!("events: port {port} out of range");
    };
    let was = disable();
    HANDLERS.write()[index] = value;
    restore(was);
}

/// `EVTCHNOP_BIND_INTERDOMAIN`: connects to `remote_dom`'s unbound
/// `remote_port`; returns the local port.
pub fn bind_interdomain(remote_dom: DomId, remote_port: Port) -> Result<Port, Errno> {
    ensure_init();
    hypercall::evtchn_bind_interdomain(remote_dom, remote_port)
}

/// `EVTCHNOP_ALLOC_UNBOUND`: a port `remote_dom` may bind to.
pub fn alloc_unbound(remote_dom: DomId) -> Result<Port, Errno> {
    ensure_init();
    hypercall::evtchn_alloc_unbound(remote_dom)
}

/// `EVTCHNOP_BIND_VIRQ` on vCPU 0.
pub fn bind_virq(virq: u32) -> Result<Port, Errno> {
    ensure_init();
    hypercall::evtchn_bind_virq(virq, 0)
}

/// Powers this domain off when the toolstack asks it to (`DOMCTL_SHUTDOWN`
/// raises `VIRQ_SHUTDOWN_REQUEST`, SPEC TS-7): binds that VIRQ with a handler
/// that says so on the console and shuts down (`SHUTDOWN_POWEROFF`). A guest
/// that does not call this ignores such requests (the toolstack then
/// destroys it after a timeout). Returns the port.
pub fn power_off_on_shutdown_request() -> Result<Port, Errno> {
    let port = bind_virq(hypercall_abi::evtchn::VIRQ_SHUTDOWN_REQUEST)?;
    set_handler(port, shutdown_requested);
    Ok(port)
}

fn shutdown_requested(_port: Port) {
    // The console re-enters safely from an upcall (console module invariants).
    crate::println!("shutdown requested by the toolstack: powering off");
    crate::hypercall::shutdown(hypercall_abi::sched::SHUTDOWN_POWEROFF)
}

/// `EVTCHNOP_BIND_IPI` to vCPU 0: sends on the port notify this domain.
pub fn bind_ipi() -> Result<Port, Errno> {
    ensure_init();
    hypercall::evtchn_bind_ipi(0)
}

/// `EVTCHNOP_CLOSE`, and forgets the port's handler.
pub fn close(port: Port) -> Result<(), Errno> {
    hypercall::evtchn_close(port)?;
    if usize::try_from(port).is_ok_and(|p| p < MAX_PORTS) {
        clear_handler(port);
    }
    Ok(())
}

/// `EVTCHNOP_STATUS` of one of this domain's ports.
pub fn status(port: Port) -> Result<EvtchnStatus, Errno> {
    hypercall::evtchn_status(port)
}

/// `EVTCHNOP_SEND`: notifies the other end of `port`.
pub fn notify(port: Port) -> Result<(), Errno> {
    hypercall::evtchn_send(port)
}

/// Sets the mask bit of `port` (guest-owned): its events stay pending
/// without an upcall until [`unmask`].
pub fn mask(port: Port) {
    let (word, bit) = word_bit(port);
    shared::mask(word).fetch_or(bit, Ordering::SeqCst);
}

/// Clears the mask bit of `port` with `EVTCHNOP_UNMASK`, which raises the
/// upcall if the port is pending meanwhile.
pub fn unmask(port: Port) -> Result<(), Errno> {
    hypercall::evtchn_unmask(port)
}

/// Whether `port` is pending.
pub fn is_pending(port: Port) -> bool {
    let (word, bit) = word_bit(port);
    shared::pending(word).load(Ordering::SeqCst) & bit != 0
}

/// Clears the pending bit of `port` (e.g. after polling it).
pub fn clear_pending(port: Port) {
    let (word, bit) = word_bit(port);
    shared::pending(word).fetch_and(!bit, Ordering::SeqCst);
}

/// Whether upcalls are enabled (`evtchn_upcall_mask` clear).
pub fn enabled() -> bool {
    shared::upcall_mask().load(Ordering::SeqCst) == 0
}

/// Masks upcalls (sets `evtchn_upcall_mask`); returns whether they were
/// enabled, for [`restore`].
pub fn disable() -> bool {
    shared::upcall_mask().swap(1, Ordering::SeqCst) == 0
}

/// Unmasks upcalls; if one is pending meanwhile, forces its delivery now
/// with a cheap hypercall (the hypervisor delivers on the way out).
pub fn enable() {
    ensure_init();
    shared::upcall_mask().store(0, Ordering::SeqCst);
    if shared::upcall_pending().load(Ordering::SeqCst) != 0 {
        let _ = hypercall::version(hypercall_abi::hypercall::VERSION_ABI);
    }
}

/// Re-enables upcalls if `was_enabled` (what [`disable`] returned).
pub fn restore(was_enabled: bool) {
    if was_enabled {
        enable();
    }
}

/// Waits until `condition()` holds, blocking (`SCHEDOP_BLOCK`) in between:
/// checks it with upcalls masked and blocks only if it is false, so an event
/// that makes it true cannot slip in between the check and the block.
/// Returns with upcalls enabled.
///
/// `condition` runs with upcalls masked; it must become true through an
/// event (a handler or another domain writing shared memory and notifying),
/// or this blocks for ever.
pub fn wait_until(mut condition: impl FnMut() -> bool) {
    ensure_init();
    loop {
        disable();
        if condition() {
            enable();
            return;
        }
        // Unmasks upcalls and blocks unless one is pending; the upcall runs
        // on the way out.
        hypercall::sched_block();
    }
}

/// [`wait_until`] with a deadline: blocks (upcalls masked during the check,
/// as there) until `condition` holds or system time reaches `deadline_ns`,
/// waking when one of `ports` (1 ..= 8 of this domain's) is pending.
/// Returns whether `condition` held. Returns with upcalls enabled.
pub fn wait_until_deadline(
    ports: &[Port],
    deadline_ns: u64,
    mut condition: impl FnMut() -> bool,
) -> bool {
    ensure_init();
    loop {
        disable();
        if condition() {
            enable();
            return true;
        }
        if crate::time::now_ns() >= deadline_ns {
            enable();
            return false;
        }
        // A pending port (masked upcall or not) ends the poll at once; the
        // handlers run when upcalls are enabled again.
        let polled = hypercall::sched_poll_until(ports, deadline_ns);
        enable();
        if polled.is_err() {
            // Bad ports: fall back to yielding until the deadline.
            hypercall::sched_yield();
        }
    }
}

/// `SCHEDOP_POLL`: blocks until one of `ports` (1 ..= 8) is pending, masked
/// or not, without involving upcalls. The caller clears what it handles
/// ([`clear_pending`]).
pub fn poll(ports: &[Port]) -> Result<(), Errno> {
    hypercall::sched_poll(ports)
}

/// Upcalls taken so far.
pub fn upcalls() -> u64 {
    UPCALLS.load(Ordering::Relaxed)
}

/// Events handled so far (pending bits the upcall cleared).
pub fn events_handled() -> u64 {
    EVENTS.load(Ordering::Relaxed)
}

/// Set while [`upcall`] runs (an upcall cannot nest: the mask is set).
static IN_UPCALL: AtomicBool = AtomicBool::new(false);

/// The Rust side of the event stub (EVT-5): runs the handlers of every
/// pending, unmasked port, then unmasks upcalls. Called by the trap
/// dispatcher with `evtchn_upcall_mask` already set by the hypervisor.
pub(crate) fn upcall() {
    UPCALLS.fetch_add(1, Ordering::Relaxed);
    IN_UPCALL.store(true, Ordering::Relaxed);
    loop {
        shared::upcall_pending().store(0, Ordering::SeqCst);
        let mut sel = shared::pending_sel().swap(0, Ordering::SeqCst);
        if sel == 0 {
            break;
        }
        while sel != 0 {
            let word = sel.trailing_zeros() as usize;
            sel &= sel - 1;
            let mut ready = shared::pending(word).load(Ordering::SeqCst)
                & !shared::mask(word).load(Ordering::SeqCst);
            while ready != 0 {
                let bit = ready.trailing_zeros();
                ready &= ready - 1;
                // Clear first: an event that arrives while the handler runs
                // sets the bit (and the selector) again and is seen by the
                // next round.
                shared::pending(word).fetch_and(!(1u64 << bit), Ordering::SeqCst);
                EVENTS.fetch_add(1, Ordering::Relaxed);
                let port = (word as u32) * 64 + bit;
                let handler = HANDLERS
                    .try_read()
                    .and_then(|table| table.get(port as usize).copied().flatten());
                if let Some(handler) = handler {
                    handler(port);
                }
            }
        }
    }
    IN_UPCALL.store(false, Ordering::Relaxed);
    shared::upcall_mask().store(0, Ordering::SeqCst);
}

/// Whether the caller runs inside an event handler.
pub fn in_upcall() -> bool {
    IN_UPCALL.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_map_to_words_and_bits() {
        assert_eq!(word_bit(1), (0, 2));
        assert_eq!(word_bit(63), (0, 1 << 63));
        assert_eq!(word_bit(64), (1, 1));
        assert_eq!(word_bit(1023), (15, 1 << 63));
    }

    fn noop(_port: Port) {}

    #[test]
    #[should_panic(expected = "out of range")]
    fn handlers_beyond_the_port_range_are_refused() {
        set_slot(MAX_PORTS as Port, Some(noop));
    }
}
