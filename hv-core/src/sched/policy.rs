//! A credit2-style proportional-share scheduling policy for one pCPU: which
//! runnable vCPU runs next and for how long, with weights, caps and boosted
//! wake-ups. Pure logic on a clock the caller supplies (nanoseconds); no
//! hardware, no locks, no time source, so the kernel uses it as is and the
//! host tests drive it with a simulated CPU.
//!
//! # Model
//! - **Credit.** Every entity has a credit; running for `ran` ns burns
//!   `ran * MAX_WEIGHT / weight` of it, so at equal credit a heavier entity
//!   runs proportionally longer. [`Policy::pick`] runs the entity with the most
//!   credit (ties: the one queued first).
//! - **Reset.** When the best candidate's credit is below zero, everyone's
//!   credit is raised by `m * CREDIT_INIT`, with `m` the smallest integer that
//!   brings the candidate back to zero or above (credit2's reset event), and
//!   then clipped to [`CREDIT_INIT`] plus a small carry-over, so an entity that
//!   slept cannot hoard credit. The reset is O(1): credit is stored as
//!   `credit = base - vtime` with a per-entity `vtime` that only grows by the
//!   burn, and a reset raises `base`. Adding the same amount to everyone keeps
//!   the order; the clip is applied when an entity (re)enters a queue (wake,
//!   unpark, put back). That is exact: queued entities cannot exceed the clip
//!   after a reset (the best of them was below zero before it), and boosted
//!   ones are served in wake order regardless of credit.
//! - **Boost.** A vCPU woken from a block whose credit is not negative (it has
//!   not used more than its share since the last reset) is *boosted*: it waits
//!   in a FIFO that [`Policy::pick`] serves before the credit queue, and
//!   [`Policy::should_preempt`] asks any non-boosted runner to give way at
//!   once. Boosted runs burn credit like any other, and a waker whose credit
//!   is negative is not boosted, so over time boosting cannot buy more than
//!   the weight's share (a vCPU's `vtime` never gets more than one reset
//!   quantum plus one slice ahead of the least-served runnable one and still
//!   be boosted).
//! - **Caps.** An entity with cap `c` % may use `CAP_PERIOD * c / 100` ns per
//!   [`CAP_PERIOD`] (periods aligned to multiples of `CAP_PERIOD` on the
//!   caller's clock). The budget is a bucket: refilled by one period's budget
//!   at each period boundary, never above one period's budget; an overrun is
//!   debt paid from the next periods (at most one period's budget of debt is
//!   kept, so one huge overrun, e.g. across a clock jump, parks an entity for
//!   at most two periods). An entity out of budget is *parked* until its
//!   refill, even if the CPU then idles: caps are not work conserving;
//!   [`Policy::next_event`] says when to look again.
//!
//! # Guarantees (one pCPU, caller runs each pick for at most the slice it got)
//! - Work conserving: `pick` returns `None` only if every entity that is not
//!   blocked and not on a CPU is parked by its cap.
//! - Shares: runnable uncapped CPU-bound entities get CPU in proportion to
//!   their weights (the host tests measure within 0.1 % over 10 s).
//! - Starvation: a runnable uncapped entity of weight `w` waits at most about
//!   `(W / w + 1)` slices, `W` the total weight of the others (credit2 has
//!   the same bound: with weights 1 and 65535 that is about 65.5 s at 1 ms).
//! - Wake-up latency: a boosted waker is picked as soon as the caller acts on
//!   `should_preempt` (the wake path should ask at once, as a "tickle"),
//!   except that boosted entities are served FIFO and a boosted runner is not
//!   preempted by another: the bound is (boosted entities ahead of it,
//!   running one included) × timeslice, and 0 when it is the only one.
//!
//! # Invariants
//! - An entity is in at most one of the credit queue, the boost FIFO and the
//!   parked set, and in none of them while it is blocked or on a CPU; its
//!   `slot` names where it is and the key it is filed under.
//! - A queued or boosted capped entity has budget left; a parked one has none.
//! - `base` never decreases, and `base >= CREDIT_MAX`, so `base - CREDIT_MAX`
//!   never saturates.
//!
//! # Complexity
//! With `n` entities, every operation is O(log n) (B-tree maps keyed by
//! `(vtime, seq)`, by wake order and by refill time); `pick` also unparks the
//! `k` entities whose budget refilled, O(k log n), each paid once per parking.
//! Clock and credit arithmetic saturates: `Ns` is `u64`, credit is `u128`
//! (2^128 credit lasts far beyond 2^64 ns even at weight 1).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use alloc::collections::BTreeMap;

/// Nanoseconds on the caller's clock (monotonic; may jump forward).
pub type Ns = u64;

/// An opaque schedulable entity (a vCPU id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entity(pub u64);

/// Smallest weight; lower values are raised to it.
pub const MIN_WEIGHT: u32 = 1;
/// Largest weight; higher values are lowered to it.
pub const MAX_WEIGHT: u32 = 65535;
/// Weight of a vCPU nobody configured.
pub const DEFAULT_WEIGHT: u32 = 256;
/// Length of a cap accounting period.
pub const CAP_PERIOD: Ns = 10_000_000;

/// Scheduling parameters of one entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Relative share, `MIN_WEIGHT..=MAX_WEIGHT` (clamped into it).
    pub weight: u32,
    /// 0 = no cap, else at most this percent of one pCPU (values above 100
    /// count as 100).
    pub cap_percent: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            weight: DEFAULT_WEIGHT,
            cap_percent: 0,
        }
    }
}

/// Credit, in units of "ns run at `MAX_WEIGHT`".
type Credit = u128;

/// Credit burnt by running `ran` ns at `weight` (clamped to at least 1).
const fn burn(ran: Ns, weight: u32) -> Credit {
    let weight = if weight == 0 { 1 } else { weight };
    match (ran as u128 * MAX_WEIGHT as u128).checked_div(weight as u128) {
        Some(c) => c,
        None => 0,
    }
}

/// Credit every entity gets at a reset, and a new entity starts with
/// (10 ms at the default weight, credit2's `CSCHED2_CREDIT_INIT`).
pub const CREDIT_INIT: Credit = burn(10_000_000, DEFAULT_WEIGHT);
/// Credit kept beyond `CREDIT_INIT` (0.5 ms at the default weight, credit2's
/// `CSCHED2_CARRYOVER_MAX`).
const CARRYOVER_MAX: Credit = burn(500_000, DEFAULT_WEIGHT);
/// The clip: no entity enters a queue with more credit than this.
const CREDIT_MAX: Credit = CREDIT_INIT.saturating_add(CARRYOVER_MAX);

/// A cap's budget bucket (unused when `per_period == 0`).
#[derive(Clone, Copy, Debug)]
struct Budget {
    /// Budget per period in ns; 0 = uncapped.
    per_period: i64,
    /// Budget left in period `period`; negative is debt.
    left: i64,
    /// Index (`now / CAP_PERIOD`) of the period `left` belongs to.
    period: u64,
}

impl Budget {
    fn new(cap_percent: u32, now: Ns) -> Budget {
        let mut b = Budget {
            per_period: 0,
            left: 0,
            period: period_of(now),
        };
        b.set_cap(cap_percent);
        b
    }

    /// A full bucket for `cap_percent` (already clamped to 0..=100).
    fn set_cap(&mut self, cap_percent: u32) {
        let per_period = CAP_PERIOD
            .saturating_mul(u64::from(cap_percent))
            .checked_div(100)
            .unwrap_or(0);
        self.per_period = i64::try_from(per_period).unwrap_or(i64::MAX);
        self.left = self.per_period;
    }

    fn capped(&self) -> bool {
        self.per_period > 0
    }

    fn exhausted(&self) -> bool {
        self.capped() && self.left <= 0
    }

    /// Adds one period's budget per boundary crossed since the last look.
    fn refill(&mut self, now: Ns) {
        let period = period_of(now);
        if period <= self.period {
            return;
        }
        if self.capped() {
            let crossed = i64::try_from(period.saturating_sub(self.period)).unwrap_or(i64::MAX);
            self.left = self
                .left
                .saturating_add(crossed.saturating_mul(self.per_period))
                .min(self.per_period);
        }
        self.period = period;
    }

    /// Charges `ran` ns, keeping at most one period's budget of debt.
    fn charge(&mut self, ran: Ns) {
        if self.capped() {
            let ran = i64::try_from(ran).unwrap_or(i64::MAX);
            self.left = self
                .left
                .saturating_sub(ran)
                .max(self.per_period.saturating_neg());
        }
    }

    /// The first period boundary at which an exhausted bucket has budget.
    fn refill_at(&self) -> Ns {
        let debt = self.left.unsigned_abs();
        let per_period = self.per_period.unsigned_abs();
        let periods = debt
            .checked_div(per_period)
            .unwrap_or(0)
            .saturating_add(1);
        self.period
            .saturating_add(periods)
            .saturating_mul(CAP_PERIOD)
    }

    /// The longest run allowed by the budget within `slice`.
    fn limit(&self, slice: Ns) -> Ns {
        if self.capped() {
            slice.min(u64::try_from(self.left).unwrap_or(0))
        } else {
            slice
        }
    }
}

fn period_of(now: Ns) -> u64 {
    now.checked_div(CAP_PERIOD).unwrap_or(0)
}

/// Where an entity is filed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Blocked, on a CPU, or between the two.
    None,
    /// In the credit queue under `(vtime, seq)`.
    Queued(u64),
    /// In the boost FIFO under `seq`.
    Boosted(u64),
    /// Parked under `(refill time, seq)`.
    Parked(Ns, u64),
}

/// The grant of an entity on a CPU.
#[derive(Clone, Copy, Debug)]
struct Run {
    granted: Ns,
    boosted: bool,
}

#[derive(Debug)]
struct Vcpu {
    weight: u32,
    cap_percent: u32,
    /// Burnt credit: `credit = base - vtime`.
    vtime: Credit,
    budget: Budget,
    blocked: bool,
    /// Woken while still on a CPU: boost it when it is put back.
    boost_pending: bool,
    on_cpu: Option<Run>,
    slot: Slot,
}

/// The scheduling policy of one pCPU. See the module documentation.
#[derive(Debug)]
pub struct Policy {
    timeslice: Ns,
    /// Credit origin: `credit = base - vtime`; raised by resets.
    base: Credit,
    /// Tie-breaker and FIFO order for every queue insertion.
    seq: u64,
    vcpus: BTreeMap<Entity, Vcpu>,
    /// Runnable entities by (vtime, seq): first = most credit.
    queue: BTreeMap<(Credit, u64), Entity>,
    /// Boosted wakers in wake order.
    boosted: BTreeMap<u64, Entity>,
    /// Capped-out entities by (refill time, seq).
    parked: BTreeMap<(Ns, u64), Entity>,
}

impl Policy {
    /// A policy granting at most `timeslice` ns per pick (at least 1 ns).
    pub fn new(timeslice: Ns) -> Policy {
        Policy {
            timeslice: timeslice.max(1),
            base: CREDIT_MAX,
            seq: 0,
            vcpus: BTreeMap::new(),
            queue: BTreeMap::new(),
            boosted: BTreeMap::new(),
            parked: BTreeMap::new(),
        }
    }

    /// Adds a new runnable entity with `CREDIT_INIT` credit and a full
    /// budget. Adding an id again replaces it.
    pub fn add(&mut self, e: Entity, p: Params, now: Ns) {
        self.remove(e);
        let (weight, cap_percent) = clamp_params(p);
        self.vcpus.insert(
            e,
            Vcpu {
                weight,
                cap_percent,
                vtime: self.base.saturating_sub(CREDIT_INIT),
                budget: Budget::new(cap_percent, now),
                blocked: false,
                boost_pending: false,
                on_cpu: None,
                slot: Slot::None,
            },
        );
        self.enqueue(e, false, now);
    }

    /// Forgets an entity (it died), wherever it is.
    pub fn remove(&mut self, e: Entity) {
        self.unfile(e);
        self.vcpus.remove(&e);
    }

    /// Changes weight and cap. A changed cap starts with a full budget (and
    /// unparks the entity); a new weight applies to time charged from now on.
    pub fn set_params(&mut self, e: Entity, p: Params) {
        let (weight, cap_percent) = clamp_params(p);
        let Some(v) = self.vcpus.get_mut(&e) else {
            return;
        };
        v.weight = weight;
        if v.cap_percent == cap_percent {
            return;
        }
        v.cap_percent = cap_percent;
        v.budget.set_cap(cap_percent);
        if let Slot::Parked(at, seq) = v.slot {
            self.parked.remove(&(at, seq));
            v.vtime = v.vtime.max(self.base.saturating_sub(CREDIT_MAX));
            let seq = next_seq(&mut self.seq);
            self.queue.insert((v.vtime, seq), e);
            v.slot = Slot::Queued(seq);
        }
    }

    /// Marks an entity not runnable. If it is on a CPU it stays there until
    /// [`put_back`](Self::put_back), which then charges it and does not
    /// requeue it.
    pub fn block(&mut self, e: Entity, now: Ns) {
        self.unfile(e);
        if let Some(v) = self.vcpus.get_mut(&e) {
            v.blocked = true;
            v.boost_pending = false;
            v.budget.refill(now);
        }
    }

    /// Makes a blocked entity runnable again, boosted if its credit is not
    /// negative and it has budget left (parked otherwise). Waking a runnable
    /// entity does nothing; waking one still on a CPU takes effect at its
    /// `put_back`.
    pub fn wake(&mut self, e: Entity, now: Ns) {
        let Some(v) = self.vcpus.get_mut(&e) else {
            return;
        };
        if !v.blocked {
            return;
        }
        v.blocked = false;
        if v.on_cpu.is_some() {
            v.boost_pending = true;
        } else {
            self.enqueue(e, true, now);
        }
    }

    /// Takes the next entity to run and the longest it may run: a boosted
    /// waker if any (in wake order), else the one with the most credit.
    /// The entity is on a CPU until [`put_back`](Self::put_back).
    pub fn pick(&mut self, now: Ns) -> Option<(Entity, Ns)> {
        self.unpark_due(now);
        loop {
            let (e, boosted) = if let Some((_, e)) = self.boosted.pop_first() {
                (e, true)
            } else {
                let (&(top, _), _) = self.queue.first_key_value()?;
                if top > self.base {
                    // The best credit is negative: reset (see the module docs).
                    let m = top.saturating_sub(self.base).div_ceil(CREDIT_INIT);
                    self.base = self.base.saturating_add(m.saturating_mul(CREDIT_INIT));
                }
                let (_, e) = self.queue.pop_first()?;
                (e, false)
            };
            let Some(v) = self.vcpus.get_mut(&e) else {
                continue; // unreachable by the invariants; skip a stale entry
            };
            v.slot = Slot::None;
            if boosted {
                v.vtime = v.vtime.max(self.base.saturating_sub(CREDIT_MAX));
            }
            v.budget.refill(now);
            let granted = v.budget.limit(self.timeslice);
            v.on_cpu = Some(Run { granted, boosted });
            return Some((e, granted));
        }
    }

    /// Charges `ran` ns to an entity taken by [`pick`](Self::pick) and
    /// requeues it unless it is blocked. `still_runnable == false` blocks it
    /// now (like [`block`](Self::block)), so a wake that must not be lost has
    /// to come after this call. Does nothing for an entity not on a CPU.
    pub fn put_back(&mut self, e: Entity, ran: Ns, still_runnable: bool, now: Ns) {
        let Some(v) = self.vcpus.get_mut(&e) else {
            return;
        };
        if v.on_cpu.take().is_none() {
            return;
        }
        v.vtime = v.vtime.saturating_add(burn(ran, v.weight));
        v.budget.charge(ran);
        if !still_runnable {
            v.blocked = true;
            v.boost_pending = false;
        }
        if v.blocked {
            v.budget.refill(now);
        } else {
            let boost = core::mem::take(&mut v.boost_pending);
            self.enqueue(e, boost, now);
        }
    }

    /// Whether `current`, on a CPU for `ran_so_far` ns of this pick, should
    /// give way now: its slice or budget is used up, it is blocked or gone,
    /// or a boosted waker waits and `current` is not boosted. Depends only on
    /// `ran_so_far`; `_now` is for policies that need the clock.
    pub fn should_preempt(&self, current: Entity, ran_so_far: Ns, _now: Ns) -> bool {
        let Some(v) = self.vcpus.get(&current) else {
            return true;
        };
        let Some(run) = v.on_cpu else {
            return true;
        };
        v.blocked
            || ran_so_far >= run.granted
            || (v.budget.capped() && ran_so_far >= u64::try_from(v.budget.left).unwrap_or(0))
            || (!run.boosted && !self.boosted.is_empty())
    }

    /// When the earliest parked entity's budget refills (never before
    /// `now`), for the caller's timer; `None` if nothing is parked.
    pub fn next_event(&self, now: Ns) -> Option<Ns> {
        self.parked
            .first_key_value()
            .map(|(&(at, _), _)| at.max(now))
    }

    /// An entity's credit (diagnostics): positive means under its share.
    pub fn credit(&self, e: Entity) -> Option<i128> {
        let v = self.vcpus.get(&e)?;
        Some(if v.vtime <= self.base {
            i128::try_from(self.base.saturating_sub(v.vtime)).unwrap_or(i128::MAX)
        } else {
            i128::try_from(v.vtime.saturating_sub(self.base))
                .unwrap_or(i128::MAX)
                .saturating_neg()
        })
    }

    /// Files a runnable entity that is in no queue and not on a CPU: parked
    /// if out of budget, else boosted (if `boost` and its credit is not
    /// negative) or queued by credit. Applies the credit clip.
    fn enqueue(&mut self, e: Entity, boost: bool, now: Ns) {
        let Some(v) = self.vcpus.get_mut(&e) else {
            return;
        };
        debug_assert!(v.slot == Slot::None && v.on_cpu.is_none() && !v.blocked);
        v.budget.refill(now);
        v.vtime = v.vtime.max(self.base.saturating_sub(CREDIT_MAX));
        let seq = next_seq(&mut self.seq);
        v.slot = if v.budget.exhausted() {
            let at = v.budget.refill_at();
            self.parked.insert((at, seq), e);
            Slot::Parked(at, seq)
        } else if boost && v.vtime <= self.base {
            self.boosted.insert(seq, e);
            Slot::Boosted(seq)
        } else {
            self.queue.insert((v.vtime, seq), e);
            Slot::Queued(seq)
        };
    }

    /// Takes an entity out of whichever queue holds it.
    fn unfile(&mut self, e: Entity) {
        let Some(v) = self.vcpus.get_mut(&e) else {
            return;
        };
        match v.slot {
            Slot::None => {}
            Slot::Queued(seq) => {
                self.queue.remove(&(v.vtime, seq));
            }
            Slot::Boosted(seq) => {
                self.boosted.remove(&seq);
            }
            Slot::Parked(at, seq) => {
                self.parked.remove(&(at, seq));
            }
        }
        v.slot = Slot::None;
    }

    /// Moves parked entities whose refill time has come back to the queue.
    fn unpark_due(&mut self, now: Ns) {
        // Bounded by the parked count: an entity re-parked at a time <= now
        // (possible only once the clock saturates) is not visited again.
        let mut todo = self.parked.len();
        while todo > 0 {
            todo = todo.saturating_sub(1);
            let Some(entry) = self.parked.first_entry() else {
                return;
            };
            if entry.key().0 > now {
                return;
            }
            let e = entry.remove();
            if let Some(v) = self.vcpus.get_mut(&e) {
                v.slot = Slot::None;
            }
            self.enqueue(e, false, now);
        }
    }
}

fn clamp_params(p: Params) -> (u32, u32) {
    (
        p.weight.clamp(MIN_WEIGHT, MAX_WEIGHT),
        p.cap_percent.min(100),
    )
}

fn next_seq(seq: &mut u64) -> u64 {
    let s = *seq;
    *seq = s.wrapping_add(1);
    s
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
mod tests;
