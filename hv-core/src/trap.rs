//! Exceptions and interrupts: guest exceptions are bounced to the guest's trap
//! table or crash that domain; the timer preempts; a fault in hv-core itself
//! is either a guest-access fault (recovered through the fixup table) or a bug
//! (panic).

use hypercall_abi::trap::vector;

use crate::arch::cpu::read_cr2;
use crate::arch::entry::TrapFrame;
use crate::arch::guest_access::fixup_for;
use crate::arch::lapic::{
    self, RESCHEDULE_VECTOR, SPURIOUS_VECTOR, TIMER_VECTOR, TLB_FLUSH_VECTOR,
};
use crate::domain::DOMAINS;
use crate::hypercall::{bounce_exception, crash_current};
use crate::sched;

/// Called by every interrupt stub with the interrupted state.
pub extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let v = frame.vector;
    if v == u64::from(TIMER_VECTOR) {
        lapic::eoi();
        if crate::arch::percpu::cpu_index() == 0 {
            crate::time::clock::expire_timers();
        }
        if frame.from_guest() {
            sched::on_kick_or_tick();
        }
        return;
    }
    if v == u64::from(TLB_FLUSH_VECTOR) {
        lapic::eoi();
        crate::mm::tlb::service();
        return;
    }
    if v == u64::from(RESCHEDULE_VECTOR) {
        lapic::eoi();
        // The boot CPU may be kicked because a nearer timer deadline was armed.
        if crate::arch::percpu::cpu_index() == 0 {
            crate::time::clock::program_boot_cpu_timer();
        }
        // From the idle loop's halt, the loop itself looks at the run queue.
        if frame.from_guest() {
            sched::on_kick_or_tick();
        }
        return;
    }
    if v == u64::from(SPURIOUS_VECTOR) {
        return;
    }
    if v == u64::from(crate::iommu::live::FAULT_VECTOR) {
        lapic::eoi();
        crate::iommu::live::fault_interrupt();
        return;
    }
    if v >= 32 && crate::platform::irq::dispatch(v as u8) {
        lapic::eoi();
        // The driver domain, woken boosted, preempts what runs here now.
        if frame.from_guest() {
            sched::on_kick_or_tick();
        }
        return;
    }
    if v >= 32 {
        lapic::eoi();
        log::warn!("unexpected interrupt vector {v}");
        return;
    }
    if v == u64::from(vector::NMI) {
        log::warn!("NMI at rip={:#x}, ignored", frame.rip);
        return;
    }
    if !frame.from_guest() {
        hypervisor_fault(frame);
        return;
    }
    if v == u64::from(vector::DF) || v == u64::from(vector::MC) {
        panic!(
            "{} while a guest ran (rip={:#x})",
            vector::name(v as u8),
            frame.rip
        );
    }
    guest_exception(frame);
}

fn hypervisor_fault(frame: &mut TrapFrame) {
    let v = frame.vector as u8;
    if v == vector::PF || v == vector::GP {
        if let Some(resume) = fixup_for(frame.rip) {
            frame.rip = resume;
            return;
        }
    }
    let cr2 = if v == vector::PF { read_cr2() } else { 0 };
    panic!(
        "{} in hv-core on pCPU {} running {:?} at rip={:#x} rsp={:#x} error={:#x} cr2={cr2:#x}",
        vector::name(v),
        crate::arch::percpu::cpu_index(),
        sched::current(),
        frame.rip,
        frame.rsp,
        frame.error_code
    );
}

fn guest_exception(frame: &mut TrapFrame) {
    let v = frame.vector as u8;
    if v == vector::UD && end_syscall_floor(frame) {
        return;
    }
    let cr2 = if v == vector::PF { read_cr2() } else { 0 };
    if let Err(reason) = bounce_exception(frame, cr2) {
        log::info!(
            "faulting state: rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x} rflags={:#x}",
            frame.rax,
            frame.rbx,
            frame.rcx,
            frame.rdx,
            frame.rsi,
            frame.rdi,
            frame.rbp,
            frame.rflags
        );
        crash_current(&reason);
    }
}

/// A `ud2` in syscall-floor mode ends that mode and is skipped (HC-18).
fn end_syscall_floor(frame: &mut TrapFrame) -> bool {
    let Some(id) = sched::current() else {
        return false;
    };
    let in_floor = DOMAINS.lock().vcpu_mut(id).is_some_and(|v| v.floor_mode);
    if !in_floor {
        return false;
    }
    if let Some(vcpu) = DOMAINS.lock().vcpu_mut(id) {
        vcpu.floor_mode = false;
    }
    sched::set_syscall_floor(false);
    if crate::hypercall::guest_insn_bytes(frame.rip) == Some([0x0f, 0x0b]) {
        frame.rip += 2;
        return true;
    }
    log::debug!(
        "d{}: syscall-floor mode ended by a #UD that is not ud2",
        id.domid
    );
    false
}
