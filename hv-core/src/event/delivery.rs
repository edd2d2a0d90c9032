//! Event delivery (SPEC.md EVT-5): pending bits in shared_info, waking
//! blocked vCPUs, and upcalls to the guest's event callback.
//!
//! shared_info is guest-writable memory: hv-core touches it only with atomic
//! operations on naturally aligned words, never trusts what it reads there
//! beyond "is this bit set", and never reads the same value twice to decide.
//!
//! Lock order: `domain::DOMAINS` before [`EVENTS`].

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use hypercall_abi::evtchn::Port;
use hypercall_abi::shared_info::{SharedInfo, VcpuInfo};
use hypercall_abi::DomId;

use super::channels::{EventChannels, EventSink};
use crate::arch::entry::TrapFrame;
use crate::domain::{Domain, DomainTable, VcpuId, DOMAINS};
use crate::hypercall::{crash_current, deliver, Delivery};
use crate::mm::mfn_to_virt;
use crate::sched;

/// Every domain's event channels.
pub static EVENTS: crate::sync::Mutex<EventChannels> =
    crate::sync::Mutex::new(EventChannels::new());

fn shared(domain: &Domain) -> *mut SharedInfo {
    mfn_to_virt(domain.shared_info_mfn) as *mut SharedInfo
}

fn word(ptr: *mut u64) -> &'static AtomicU64 {
    // SAFETY: `ptr` is an aligned u64 inside a live domain's shared_info
    // frame, reached through the direct map; the frame outlives this use
    // (domains are freed only by the idle context, never during a hypercall).
    unsafe { AtomicU64::from_ptr(ptr) }
}

fn byte(ptr: *mut u8) -> &'static AtomicU8 {
    // SAFETY: as for `word`.
    unsafe { AtomicU8::from_ptr(ptr) }
}

fn vcpu_info(domain: &Domain, vcpu: u32) -> *mut VcpuInfo {
    domain.vcpu_info_va(vcpu) as *mut VcpuInfo
}

/// Marks the vCPU's upcall pending (selector bit for `port`'s word first).
fn mark_upcall(domain: &Domain, vcpu: u32, port: Port) {
    let vi = vcpu_info(domain, vcpu);
    // SAFETY: field addresses inside the VcpuInfo computed above.
    let (sel, pending) = unsafe {
        (
            core::ptr::addr_of_mut!((*vi).evtchn_pending_sel),
            core::ptr::addr_of_mut!((*vi).evtchn_upcall_pending),
        )
    };
    word(sel).fetch_or(1 << (port / 64), Ordering::SeqCst);
    byte(pending).store(1, Ordering::SeqCst);
}

/// An [`EventSink`] that writes the real shared_info pages.
pub struct Notifier<'a> {
    pub table: &'a mut DomainTable,
}

impl EventSink for Notifier<'_> {
    fn set_pending(&mut self, dom: DomId, port: Port, vcpu: u32) {
        let Some(domain) = self.table.domains.get_mut(&dom) else {
            return;
        };
        if domain.state != crate::domain::DomainState::Running {
            return;
        }
        let si = shared(domain);
        let bit = 1u64 << (port % 64);
        let idx = (port / 64) as usize % 64;
        // SAFETY: addresses of array elements inside the shared_info page.
        let (pending, mask) = unsafe {
            (
                core::ptr::addr_of_mut!((*si).evtchn_pending[idx]),
                core::ptr::addr_of_mut!((*si).evtchn_mask[idx]),
            )
        };
        let was_pending = word(pending).fetch_or(bit, Ordering::SeqCst) & bit != 0;
        let masked = word(mask).load(Ordering::SeqCst) & bit != 0;
        let vcpu = if (vcpu as usize) < domain.vcpus.len() {
            vcpu
        } else {
            0
        };
        if !was_pending && !masked {
            mark_upcall(domain, vcpu, port);
        }
        // Wake whoever waits for this: a blocked vCPU on any upcall, a
        // polling vCPU on this port even when it is masked.
        let Some(v) = domain.vcpus.get_mut(vcpu as usize) else {
            return;
        };
        let wake = v.blocked && (v.polling.contains(&port) || (v.polling.is_empty() && !masked));
        if wake {
            v.blocked = false;
            v.polling.clear();
            sched::make_runnable(VcpuId { domid: dom, vcpu }, v.cpu);
        } else if v.claimed && !was_pending && !masked {
            // Running on some pCPU: make it look at its upcall now, not at
            // its next tick.
            sched::kick(v.cpu as usize);
        }
    }
}

/// Raises `virq` for domain `dom` (if it bound it).
pub fn send_virq(dom: DomId, virq: u32) {
    let mut table = DOMAINS.lock();
    let mut events = EVENTS.lock();
    events.send_virq(dom, virq, &mut Notifier { table: &mut table });
}

/// Raises VIRQ_TIMER for vCPU `vcpu` of `dom` (if that vCPU bound it).
pub fn send_vcpu_timer(dom: DomId, vcpu: u32) {
    let mut table = DOMAINS.lock();
    let mut events = EVENTS.lock();
    events.send_vcpu_timer(dom, vcpu, &mut Notifier { table: &mut table });
}

/// Clears `port`'s mask bit; if it is pending, raises the upcall again.
pub fn unmask(domain: &Domain, port: Port) {
    let si = shared(domain);
    let bit = 1u64 << (port % 64);
    let idx = (port / 64) as usize % 64;
    // SAFETY: addresses of array elements inside the shared_info page.
    let (pending, mask) = unsafe {
        (
            core::ptr::addr_of_mut!((*si).evtchn_pending[idx]),
            core::ptr::addr_of_mut!((*si).evtchn_mask[idx]),
        )
    };
    let was_masked = word(mask).fetch_and(!bit, Ordering::SeqCst) & bit != 0;
    if was_masked && word(pending).load(Ordering::SeqCst) & bit != 0 {
        mark_upcall(domain, 0, port);
    }
}

/// Whether `port` is pending in `domain`'s shared_info.
pub fn is_pending(domain: &Domain, port: Port) -> bool {
    let si = shared(domain);
    // SAFETY: address of an array element inside the shared_info page.
    let pending =
        unsafe { core::ptr::addr_of_mut!((*si).evtchn_pending[(port / 64) as usize % 64]) };
    word(pending).load(Ordering::SeqCst) & (1 << (port % 64)) != 0
}

/// Sets or clears the upcall mask of the `VcpuInfo` at `vcpu_info`
/// (direct-map address, from `Domain::vcpu_info_va`).
pub fn set_upcall_mask(vcpu_info: u64, masked: bool) {
    let vi = vcpu_info as *mut VcpuInfo;
    // SAFETY: field address inside a live domain's VcpuInfo.
    byte(unsafe { core::ptr::addr_of_mut!((*vi).evtchn_upcall_mask) })
        .store(u8::from(masked), Ordering::SeqCst);
}

/// Clears the vCPU's upcall mask and says whether an upcall is pending.
pub fn enable_upcalls(domain: &Domain, vcpu: u32) -> bool {
    let vi = vcpu_info(domain, vcpu);
    // SAFETY: field addresses inside the VcpuInfo.
    let (pending, mask) = unsafe {
        (
            core::ptr::addr_of_mut!((*vi).evtchn_upcall_pending),
            core::ptr::addr_of_mut!((*vi).evtchn_upcall_mask),
        )
    };
    byte(mask).store(0, Ordering::SeqCst);
    byte(pending).load(Ordering::SeqCst) != 0
}

/// Called on the way back to a guest whose `VcpuInfo` says an upcall is
/// pending and unmasked: enters its event callback with upcalls masked
/// (EVT-5). A guest with no event callback gets its upcalls masked instead.
pub extern "C" fn deliver_upcall(frame: &mut TrapFrame) {
    let Some(id) = sched::current() else { return };
    let outcome = {
        let mut table = DOMAINS.lock();
        let Some(domain) = table.domains.get_mut(&id.domid) else {
            return;
        };
        let vi = vcpu_info(domain, id.vcpu);
        // SAFETY: field address inside the VcpuInfo.
        byte(unsafe { core::ptr::addr_of_mut!((*vi).evtchn_upcall_mask) })
            .store(1, Ordering::SeqCst);
        let Some(vcpu) = domain.vcpus.get_mut(id.vcpu as usize) else {
            return;
        };
        match vcpu.callbacks.event {
            0 => Ok(()),
            callback => deliver(vcpu, frame, callback, Delivery::Event, 0),
        }
    };
    if let Err(why) = outcome {
        crash_current(&alloc::format!(
            "event upcall at rip={:#x}: {why}",
            frame.rip
        ));
    }
}
