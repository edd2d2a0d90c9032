//! The machine clock: TSC and local-APIC timer calibrated against the PIT at
//! boot, system time (ns since boot), the wallclock from the RTC, the PV clock
//! fields every domain's shared_info carries (TIME-1), and per-vCPU one-shot
//! timers that raise VIRQ_TIMER (TIME-2). The boot CPU's APIC timer is
//! one-shot: it fires at the earliest armed vCPU deadline or 1 ms after the
//! last interrupt, whichever comes first, so timers fire within microseconds
//! of their deadline; the other CPUs keep a periodic 1 ms tick.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::shared_info::SharedInfo;
use hypercall_abi::DomId;

use super::{days_from_civil, TscScale};
use crate::arch::cpu::rdtsc;
use crate::arch::{lapic, pit, rtc};
use crate::domain::{DomainState, VcpuId, DOMAINS};
use crate::mm::mfn_to_virt;

/// The calibrated clock.
pub struct Clock {
    /// TSC at system time 0.
    pub tsc0: u64,
    pub tsc_hz: u64,
    pub scale: TscScale,
    /// Local APIC timer ticks per millisecond (divide by 16).
    pub lapic_per_ms: u32,
    /// Wallclock at system time 0.
    pub wc_sec: u64,
    pub wc_nsec: u32,
}

static CLOCK: spin::Once<Clock> = spin::Once::new();

/// PIT ticks in the 10 ms calibration window.
const CALIBRATION_TICKS: u16 = 11_932;

/// Calibrates the clock (once, at boot, before the timer runs).
pub fn calibrate() -> &'static Clock {
    CLOCK.call_once(|| {
        let mut t = (0, 0);
        let lapic_per_ms = lapic::calibrate(|| {
            t.0 = rdtsc();
            pit::wait_ticks(CALIBRATION_TICKS, || {});
            t.1 = rdtsc();
        });
        let tsc_hz = (t.1 - t.0).saturating_mul(pit::PIT_HZ) / u64::from(CALIBRATION_TICKS);
        let scale = TscScale::for_frequency(tsc_hz);
        let (y, mo, d, h, mi, s) = rtc::read_datetime();
        let tsc0 = rdtsc();
        let epoch = days_from_civil(y, mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s);
        Clock {
            tsc0,
            tsc_hz,
            scale,
            lapic_per_ms,
            wc_sec: epoch.max(0) as u64,
            wc_nsec: 0,
        }
    })
}

/// The TSC frequency in Hz (0 before calibration).
pub fn tsc_hz() -> u64 {
    CLOCK.get().map_or(0, |c| c.tsc_hz)
}

/// Nanoseconds since the clock was calibrated (0 before).
pub fn now_ns() -> u64 {
    CLOCK
        .get()
        .map_or(0, |c| c.scale.ticks_to_ns(rdtsc().wrapping_sub(c.tsc0)))
}

/// Writes the PV clock and wallclock into a (fresh) shared_info page.
pub fn publish(shared_info_mfn: u64, nr_vcpus: usize) {
    let Some(c) = CLOCK.get() else { return };
    let si = mfn_to_virt(shared_info_mfn) as *mut SharedInfo;
    // SAFETY: the shared_info frame belongs to a domain being built, which is
    // not running yet; the writes stay inside the page.
    unsafe {
        for v in 0..nr_vcpus.min(hypercall_abi::shared_info::MAX_VIRT_CPUS) {
            let vi = core::ptr::addr_of_mut!((*si).vcpu_info[v]);
            (*vi).time_version = 1;
            (*vi).tsc_timestamp = c.tsc0;
            (*vi).system_time = 0;
            (*vi).tsc_to_system_mul = c.scale.mul;
            (*vi).tsc_shift = c.scale.shift;
            (*vi).time_version = 2;
        }
        (*si).wc_version = 1;
        (*si).wc_sec = c.wc_sec;
        (*si).wc_nsec = c.wc_nsec;
        (*si).wc_version = 2;
    }
}

/// The earliest armed vCPU timer or poll deadline (ns, `u64::MAX` = none),
/// updated under `DOMAINS`: the boot CPU's one-shot timer fires at it (or at
/// its next 1 ms tick, whichever comes first).
static NEXT_DEADLINE: AtomicU64 = AtomicU64::new(u64::MAX);
/// When the boot CPU's timer is set to fire next (ns).
static PROGRAMMED: AtomicU64 = AtomicU64::new(u64::MAX);

/// Notes a new timer or poll deadline (the caller holds `DOMAINS`); makes
/// the boot CPU fire at it if that is before its next tick.
pub fn arm(deadline: u64) {
    if deadline == 0 {
        return;
    }
    NEXT_DEADLINE.fetch_min(deadline, Ordering::AcqRel);
    if deadline < PROGRAMMED.load(Ordering::Acquire) {
        if crate::arch::percpu::cpu_index() == 0 {
            program_boot_cpu_timer();
        } else {
            crate::sched::kick(0);
        }
    }
}

/// Arms the boot CPU's one-shot timer for its next event: the next 1 ms
/// tick or the earliest vCPU deadline. Called on the boot CPU only.
pub fn program_boot_cpu_timer() {
    let Some(c) = CLOCK.get() else { return };
    let now = now_ns();
    let at = NEXT_DEADLINE
        .load(Ordering::Acquire)
        .clamp(now.saturating_add(5_000), now.saturating_add(1_000_000));
    PROGRAMMED.store(at, Ordering::Release);
    let ticks = (at - now).saturating_mul(u64::from(c.lapic_per_ms)) / 1_000_000;
    lapic::rearm(u32::try_from(ticks).unwrap_or(u32::MAX));
}

/// On every timer interrupt of the boot CPU: fires due one-shot timers
/// (VIRQ_TIMER) and ends `sched_op(poll)` waits whose timeout passed, then
/// arms the next interrupt.
pub fn expire_timers() {
    let now = now_ns();
    let mut fire: Vec<(DomId, u32)> = Vec::new();
    {
        let mut table = DOMAINS.lock();
        let mut next = u64::MAX;
        for d in table.domains.values_mut() {
            if d.state != DomainState::Running {
                continue;
            }
            for (i, v) in d.vcpus.iter_mut().enumerate() {
                if v.timer_deadline != 0 && v.timer_deadline <= now {
                    v.timer_deadline = 0;
                    fire.push((d.id, i as u32));
                } else if v.timer_deadline != 0 {
                    next = next.min(v.timer_deadline);
                }
                if v.blocked && v.poll_deadline > now {
                    next = next.min(v.poll_deadline);
                }
                if v.blocked && v.poll_deadline != 0 && v.poll_deadline <= now {
                    v.blocked = false;
                    v.polling.clear();
                    v.poll_deadline = 0;
                    crate::sched::make_runnable(
                        VcpuId {
                            domid: d.id,
                            vcpu: i as u32,
                        },
                        v.cpu,
                    );
                }
            }
        }
        NEXT_DEADLINE.store(next, Ordering::Release);
    }
    for (dom, vcpu) in fire {
        crate::event::delivery::send_vcpu_timer(dom, vcpu);
    }
    program_boot_cpu_timer();
}
