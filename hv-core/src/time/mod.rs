//! Time (SPEC.md §11, TIME-*): the TSC-to-nanoseconds scale guests use to read
//! system time without a hypercall (portable, host-tested), and in the kernel
//! the calibrated clock, per-vCPU one-shot timers and the time fields of
//! shared_info.

#[cfg(target_os = "none")]
pub mod clock;

/// A TSC-to-ns conversion as the PV clock publishes it: shift the TSC delta
/// by `shift` (left if positive, right if negative), multiply by `mul`, keep
/// the top 64 bits of the 96-bit product (`>> 32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscScale {
    pub mul: u32,
    pub shift: i8,
}

impl TscScale {
    /// The scale for a TSC running at `tsc_hz` (Xen's `set_time_scale`):
    /// `mul` is normalised to [2^31, 2^32) for precision.
    pub fn for_frequency(tsc_hz: u64) -> TscScale {
        let tsc_hz = tsc_hz.max(1);
        let mut shift: i32 = 0;
        let mut tps64 = tsc_hz;
        let tps32: u64 = 1_000_000_000;
        // Bring the TSC rate into (ns rate / 2, ns rate].
        while tps64 > tps32.saturating_mul(2) {
            tps64 >>= 1;
            shift -= 1;
        }
        while tps64 <= tps32 && shift < 31 {
            tps64 <<= 1;
            shift += 1;
        }
        // Now tps32 (1e9) < tps64 <= 2e9: mul = 1e9 * 2^32 / tps64 in [2^31, 2^32).
        let mul = ((tps32 << 32) / tps64).min(u64::from(u32::MAX)) as u32;
        TscScale {
            mul,
            shift: shift as i8,
        }
    }

    /// Nanoseconds for `delta` TSC ticks.
    pub fn ticks_to_ns(&self, delta: u64) -> u64 {
        let shifted = if self.shift >= 0 {
            delta << self.shift
        } else {
            delta >> (-self.shift)
        };
        ((u128::from(shifted) * u128::from(self.mul)) >> 32) as u64
    }
}

/// Days from 1970-01-01 to `year-month-day` (proleptic Gregorian).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn common_frequencies() {
        for hz in [
            1_000_000_000u64,
            2_600_000_000,
            3_000_000_000,
            100_000_000,
            1_193_182,
            4_000_000_000,
        ] {
            let s = TscScale::for_frequency(hz);
            assert!(s.mul >= 1 << 31, "{hz}: mul {:#x} not normalised", s.mul);
            let ns = s.ticks_to_ns(hz);
            assert!(
                ns.abs_diff(1_000_000_000) <= 2,
                "{hz} Hz: one second of ticks gave {ns} ns"
            );
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 22), 20_779);
    }

    proptest! {
        #[test]
        fn conversion_is_monotonic_and_accurate(hz in 1_000_000u64..10_000_000_000, a in 0u64..(1 << 40), b in 0u64..(1 << 40)) {
            let s = TscScale::for_frequency(hz);
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(s.ticks_to_ns(lo) <= s.ticks_to_ns(hi));
            let exact = (u128::from(hi) * 1_000_000_000 / u128::from(hz)) as u64;
            let got = s.ticks_to_ns(hi);
            // Within 1 ppm plus rounding.
            prop_assert!(got.abs_diff(exact) <= exact / 1_000_000 + 2, "{} vs {}", got, exact);
        }
    }
}
