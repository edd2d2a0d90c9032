//! Timing for in-guest benchmarks (DESIGN "Benchmarks run inside domains, timed
//! with the TSC"): [`rdtsc`], [`measure`] (per-iteration min and median over
//! batches), [`Hundredths`] for printing ratios without floating point, and
//! the throughput figures of batch timings ([`per_second`],
//! [`mib_per_second`], [`report_rate`]).
//!
//! [`measure`] touches nothing but the TSC and the stack between its argument
//! checks and its return, so it is usable in modes where no hypercall works
//! (syscall-floor mode, HC-18).

use core::fmt;

/// Most batches [`measure`] keeps samples for.
pub const MAX_BATCHES: usize = 256;

/// Reads the time-stamp counter, after every earlier instruction has completed
/// (`lfence; rdtsc`). Returns 0 on the host.
#[inline(always)]
pub fn rdtsc() -> u64 {
    #[cfg(target_os = "none")]
    {
        let low: u32;
        let high: u32;
        // SAFETY: `lfence` and `rdtsc` read no memory and change only edx:eax
        // (rdtsc is allowed in ring 3: the hypervisor leaves CR4.TSD clear).
        unsafe {
            core::arch::asm!(
                "lfence",
                "rdtsc",
                out("eax") low,
                out("edx") high,
                options(nomem, nostack, preserves_flags),
            );
        }
        (u64::from(high) << 32) | u64::from(low)
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

/// Per-iteration cycle figures of a measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Fastest batch.
    pub min: u64,
    /// Median batch (mean of the two middle ones for an even count, rounded down).
    pub median: u64,
}

impl Stats {
    /// Sorts `samples` in place and summarises them; `None` when empty.
    pub fn from_samples(samples: &mut [u64]) -> Option<Stats> {
        insertion_sort(samples);
        let min = *samples.first()?;
        let mid = samples.len() / 2;
        let median = if samples.len() % 2 == 1 {
            samples[mid]
        } else {
            let (low, high) = (samples[mid - 1], samples[mid]);
            low + (high - low) / 2
        };
        Some(Stats { min, median })
    }
}

/// Sorts ascending without allocating (the sample counts are small).
pub fn insertion_sort(values: &mut [u64]) {
    for i in 1..values.len() {
        let mut j = i;
        while j > 0 && values[j - 1] > values[j] {
            values.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Runs `op` in `batches` batches of `iters` iterations, timing each batch with
/// [`rdtsc`], and returns the per-iteration min and median over the batches.
///
/// Panics (before running anything) unless `1 <= batches <= MAX_BATCHES` and
/// `iters >= 1`.
pub fn measure(batches: usize, iters: u64, mut op: impl FnMut()) -> Stats {
    assert!(
        (1..=MAX_BATCHES).contains(&batches) && iters >= 1,
        "measure: need 1..={MAX_BATCHES} batches and at least one iteration"
    );
    let mut samples = [0u64; MAX_BATCHES];
    for sample in &mut samples[..batches] {
        let start = rdtsc();
        for _ in 0..iters {
            op();
        }
        *sample = rdtsc().wrapping_sub(start) / iters;
    }
    match Stats::from_samples(&mut samples[..batches]) {
        Some(stats) => stats,
        None => unreachable!("batches >= 1"),
    }
}

/// A fixed-point number with two decimals, printed as `x.yy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hundredths(pub u64);

impl Hundredths {
    /// `numerator / denominator`, rounded to the nearest hundredth; `None` when
    /// the denominator is 0 or the result does not fit.
    pub fn ratio(numerator: u64, denominator: u64) -> Option<Hundredths> {
        if denominator == 0 {
            return None;
        }
        let scaled = u128::from(numerator) * 100 + u128::from(denominator) / 2;
        u64::try_from(scaled / u128::from(denominator))
            .ok()
            .map(Hundredths)
    }
}

impl fmt::Display for Hundredths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// `amount` per batch that took `ticks` TSC ticks, per second (rounded
/// down; a batch of 0 ticks counts as 1).
pub fn per_second(amount: u64, ticks: u64, tsc_hz: u64) -> u64 {
    (u128::from(amount) * u128::from(tsc_hz) / u128::from(ticks.max(1))) as u64
}

/// `bytes` per batch that took `ticks` TSC ticks, in MiB/s with two
/// decimals (rounded down), for figures far below a MiB per batch.
pub fn mib_per_second(bytes: u64, ticks: u64, tsc_hz: u64) -> Hundredths {
    Hundredths(
        (u128::from(bytes) * 100 * u128::from(tsc_hz) / (u128::from(ticks.max(1)) << 20)) as u64,
    )
}

/// Prints a throughput figure from batch timings, `amount` per batch:
/// best and median (fewer ticks is more per second, so the best comes
/// from the minimum), then the `BENCH` line with the median.
pub fn report_rate(name: &str, unit: &str, amount: u64, stats: &Stats, tsc_hz: u64) {
    let best = per_second(amount, stats.min, tsc_hz);
    let median = per_second(amount, stats.median, tsc_hz);
    crate::println!(
        "{name}: best {best} median {median} {unit} (batch ticks min {} median {})",
        stats.min,
        stats.median
    );
    crate::println!("BENCH name={name} value={median} unit={unit}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn rates() {
        assert_eq!(per_second(8, 1_000, 2_000), 16);
        assert_eq!(per_second(8, 0, 2_000), 16_000);
        // 512 KiB in half a second: 1 MiB/s; a third of a MiB in one: 0.33.
        assert_eq!(mib_per_second(512 << 10, 1_000, 2_000), Hundredths(100));
        assert_eq!(mib_per_second((1 << 20) / 3, 2_000, 2_000), Hundredths(33));
        assert_eq!(format!("{}", mib_per_second(3 << 20, 1, 1)), "3.00");
    }

    #[test]
    fn sorts() {
        let mut values = [5, 3, 9, 1, 1, 0, u64::MAX, 7];
        insertion_sort(&mut values);
        assert_eq!(values, [0, 1, 1, 3, 5, 7, 9, u64::MAX]);
        let mut empty: [u64; 0] = [];
        insertion_sort(&mut empty);
    }

    #[test]
    fn stats() {
        assert_eq!(Stats::from_samples(&mut []), None);
        assert_eq!(
            Stats::from_samples(&mut [7]),
            Some(Stats { min: 7, median: 7 })
        );
        assert_eq!(
            Stats::from_samples(&mut [30, 10, 20]),
            Some(Stats {
                min: 10,
                median: 20
            })
        );
        assert_eq!(
            Stats::from_samples(&mut [40, 10, 20, 31]),
            Some(Stats {
                min: 10,
                median: 25
            })
        );
        assert_eq!(
            Stats::from_samples(&mut [u64::MAX, u64::MAX - 2]),
            Some(Stats {
                min: u64::MAX - 2,
                median: u64::MAX - 1
            })
        );
    }

    #[test]
    fn measure_runs_every_iteration() {
        let mut count = 0u64;
        let stats = measure(64, 1000, || count += 1);
        assert_eq!(count, 64_000);
        // The host's rdtsc() is 0.
        assert_eq!(stats, Stats { min: 0, median: 0 });
    }

    #[test]
    #[should_panic(expected = "batches")]
    fn measure_refuses_too_many_batches() {
        measure(MAX_BATCHES + 1, 1, || {});
    }

    #[test]
    fn hundredths() {
        assert_eq!(Hundredths::ratio(812, 100), Some(Hundredths(812)));
        assert_eq!(format!("{}", Hundredths::ratio(812, 100).unwrap()), "8.12");
        assert_eq!(format!("{}", Hundredths::ratio(1, 3).unwrap()), "0.33");
        assert_eq!(format!("{}", Hundredths::ratio(2, 3).unwrap()), "0.67");
        assert_eq!(format!("{}", Hundredths::ratio(5, 1).unwrap()), "5.00");
        assert_eq!(format!("{}", Hundredths(7)), "0.07");
        assert_eq!(Hundredths::ratio(1, 0), None);
        assert_eq!(Hundredths::ratio(u64::MAX, 1), None);
    }
}
