//! A small, seedable, platform-independent pseudo-random number generator.
//!
//! [`Xoshiro256`] is xoshiro256** (Blackman and Vigna), seeded through SplitMix64. It uses only
//! 64-bit integer arithmetic, so a seed gives the same sequence on every platform and every
//! build. It is the project's one generator: backoff jitter (where a pinned seed makes tests
//! reproducible and distinct seeds keep a fleet of clients out of lock-step), and the seeded
//! fuzz and property helpers. It is **not** cryptographically secure.
//!
//! It implements the standard [`rand_core::Rng`] trait, and [`BackoffPolicy`] takes any
//! `rand_core::Rng`, so a policy is not tied to this type. [`Draw`] adds the unbiased range
//! draws the policies need to every `rand_core::Rng`.
//!
//! [`BackoffPolicy`]: crate::backoff::BackoffPolicy

use core::convert::Infallible;
use core::time::Duration;

pub use rand_core::{Rng, SeedableRng, TryRng};

/// Nanoseconds in one second.
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A seedable xoshiro256** pseudo-random number generator.
///
/// The same seed always yields the same sequence, on every platform:
///
/// ```
/// use steadfast_proto::rng::{Draw, Rng, Xoshiro256};
/// use std::time::Duration;
///
/// let mut a = Xoshiro256::seed_from_u64(7);
/// let mut b = Xoshiro256::seed_from_u64(7);
/// assert_eq!(a.next_u64(), b.next_u64());
///
/// let d = a.duration_between(Duration::from_secs(1), Duration::from_secs(3));
/// assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(3));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xoshiro256 {
    s: [u64; 4],
}

/// One step of SplitMix64: advances `state` and returns the next output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Converts a nanosecond count to a [`Duration`], saturating at [`Duration::MAX`].
pub(crate) fn duration_from_nanos_u128(nanos: u128) -> Duration {
    let secs = nanos / NANOS_PER_SEC;
    if secs > u128::from(u64::MAX) {
        return Duration::MAX;
    }
    // `nanos % 1e9` is below 1e9 and fits a u32; `secs` fits a u64 (checked above).
    Duration::new(secs as u64, (nanos % NANOS_PER_SEC) as u32)
}

impl Xoshiro256 {
    /// Creates a generator from a 64-bit seed, expanding it to the 256-bit state with
    /// SplitMix64 (as the xoshiro authors recommend). Every seed, including 0, is valid.
    ///
    /// ```
    /// use steadfast_proto::rng::Xoshiro256;
    /// let mut rng = Xoshiro256::seed_from_u64(0);
    /// assert_eq!(rng.next_u64(), 0x99ec_5f36_cb75_f2b4);
    /// ```
    pub fn seed_from_u64(seed: u64) -> Xoshiro256 {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        // SplitMix64 is a bijection on its counter, so four consecutive outputs are never all
        // zero; the all-zero state (the one xoshiro cannot leave) is unreachable.
        Xoshiro256 { s }
    }

    /// Returns the next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

impl TryRng for Xoshiro256 {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        // The high half: xoshiro256**'s upper bits are its best ones.
        Ok((Xoshiro256::next_u64(self) >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(Xoshiro256::next_u64(self))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = Xoshiro256::next_u64(self).to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

impl SeedableRng for Xoshiro256 {
    type Seed = [u8; 32];

    /// The 256-bit state, little-endian words. The all-zero state (which xoshiro cannot leave)
    /// is replaced by the expansion of seed 0.
    fn from_seed(seed: [u8; 32]) -> Self {
        let mut s = [0u64; 4];
        for (word, bytes) in s.iter_mut().zip(seed.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            *word = u64::from_le_bytes(b);
        }
        if s == [0; 4] {
            return Xoshiro256::seed_from_u64(0);
        }
        Xoshiro256 { s }
    }

    /// The SplitMix64 expansion of [`Xoshiro256::seed_from_u64`] (not rand_core's PCG one), so
    /// a seed gives the same sequence through either door.
    fn seed_from_u64(seed: u64) -> Self {
        Xoshiro256::seed_from_u64(seed)
    }
}

/// Unbiased draws of floats, integers in a range and durations in a range, for every
/// [`rand_core::Rng`] (including `dyn Rng`), as the backoff policies need them.
pub trait Draw: Rng {
    /// Returns a uniformly distributed `f64` in `[0, 1)`, with 53 bits of precision.
    ///
    /// ```
    /// use steadfast_proto::rng::{Draw, Xoshiro256};
    /// let mut rng = Xoshiro256::seed_from_u64(1);
    /// let x = rng.next_f64();
    /// assert!((0.0..1.0).contains(&x));
    /// ```
    fn next_f64(&mut self) -> f64 {
        // The top 53 bits, scaled by 2^-53: exactly representable, never 1.0.
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Returns a uniformly distributed integer in `[lo, hi_inclusive]`, without modulo bias.
    ///
    /// If `lo > hi_inclusive` the bounds are swapped. `lo == hi_inclusive` returns `lo` (and
    /// still advances the generator by one step, so call sequences stay aligned).
    ///
    /// ```
    /// use steadfast_proto::rng::{Draw, Xoshiro256};
    /// let mut rng = Xoshiro256::seed_from_u64(3);
    /// let die = rng.range_u64(1, 6);
    /// assert!((1..=6).contains(&die));
    /// assert_eq!(rng.range_u64(5, 5), 5);
    /// ```
    fn range_u64(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        let (lo, hi) = if lo <= hi_inclusive {
            (lo, hi_inclusive)
        } else {
            (hi_inclusive, lo)
        };
        let x = self.next_u64();
        let span = match (hi - lo).checked_add(1) {
            Some(span) => span,
            // The whole u64 range.
            None => return x,
        };
        // Lemire's multiply-shift with rejection ("Fast Random Integer Generation in an
        // Interval", 2019): unbiased, and usually a single draw.
        let mut m = u128::from(x) * u128::from(span);
        if (m as u64) < span {
            let threshold = span.wrapping_neg() % span;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(span);
            }
        }
        lo + (m >> 64) as u64
    }

    /// Returns a uniformly distributed integer in `[0, n)`, without modulo bias; `0` when
    /// `n == 0`.
    ///
    /// ```
    /// use steadfast_proto::rng::{Draw, Xoshiro256};
    /// let mut rng = Xoshiro256::seed_from_u64(4);
    /// assert!(rng.below(10) < 10);
    /// assert_eq!(rng.below(0), 0);
    /// ```
    fn below(&mut self, n: u64) -> u64 {
        self.range_u64(0, n.saturating_sub(1))
    }

    /// Returns a uniformly distributed integer in `[0, hi_inclusive]` for 128-bit bounds
    #[doc(hidden)]
    /// (bit-mask rejection; fewer than two draws of 128 bits on average).
    fn below_or_eq_u128(&mut self, hi_inclusive: u128) -> u128 {
        if hi_inclusive == 0 {
            self.next_u64();
            return 0;
        }
        let mask = u128::MAX >> hi_inclusive.leading_zeros();
        loop {
            let x = ((u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())) & mask;
            if x <= hi_inclusive {
                return x;
            }
        }
    }

    /// Returns a uniformly distributed duration in `[lo, hi]`, at nanosecond resolution.
    ///
    /// Both bounds are inclusive: the result is never below `lo` and never above `hi`.
    /// `lo == hi` returns `lo`. If `lo > hi` the bounds are swapped. Any pair of durations is
    /// accepted, up to [`Duration::MAX`]; nothing overflows.
    ///
    /// ```
    /// use steadfast_proto::rng::{Draw, Xoshiro256};
    /// use std::time::Duration;
    ///
    /// let mut rng = Xoshiro256::seed_from_u64(9);
    /// let (lo, hi) = (Duration::from_millis(500), Duration::from_millis(1500));
    /// let d = rng.duration_between(lo, hi);
    /// assert!(lo <= d && d <= hi);
    /// assert_eq!(rng.duration_between(lo, lo), lo);
    /// // Swapped bounds give the same range.
    /// let d = rng.duration_between(hi, lo);
    /// assert!(lo <= d && d <= hi);
    /// ```
    fn duration_between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        let span = (hi - lo).as_nanos();
        let offset = match u64::try_from(span) {
            Ok(span) => u128::from(self.range_u64(0, span)),
            Err(_) => self.below_or_eq_u128(span),
        };
        // offset <= span, so lo + offset <= hi <= Duration::MAX: no overflow.
        lo + duration_from_nanos_u128(offset)
    }
}

impl<R: Rng + ?Sized> Draw for R {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_traits_give_the_same_sequence() {
        let mut a = Xoshiro256::seed_from_u64(3);
        let mut b = <Xoshiro256 as SeedableRng>::seed_from_u64(3);
        let dynamic: &mut dyn Rng = &mut b;
        assert_eq!(a.next_u64(), dynamic.next_u64());
        let mut bytes = [0u8; 12];
        dynamic.fill_bytes(&mut bytes);
        assert_eq!(bytes[..8], a.next_u64().to_le_bytes());
        assert_eq!(Xoshiro256::from_seed([0; 32]), Xoshiro256::seed_from_u64(0));
        let d = dynamic.duration_between(Duration::from_secs(1), Duration::from_secs(2));
        assert!(Duration::from_secs(1) <= d && d <= Duration::from_secs(2));
    }

    #[test]
    fn splitmix_and_xoshiro_match_the_reference_implementation() {
        // State expansion: the published SplitMix64 outputs for seed 0.
        let r = Xoshiro256::seed_from_u64(0);
        assert_eq!(
            r.s,
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f,
                0xf88b_b8a8_724c_81ec
            ]
        );
        // Outputs computed with an independent reference implementation of xoshiro256**.
        let mut r = Xoshiro256::seed_from_u64(0);
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            [
                0x99ec_5f36_cb75_f2b4,
                0xbf6e_1f78_4956_452a,
                0x1a5f_849d_4933_e6e0,
                0x6aa5_94f1_262d_2d2c
            ]
        );
        let mut r = Xoshiro256::seed_from_u64(42);
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            [
                0x1578_0b2e_0c2e_c716,
                0x6104_d986_6d11_3a7e,
                0xae17_5332_39e4_99a1,
                0xecb8_ad47_03b3_60a1
            ]
        );
    }

    #[test]
    fn same_seed_same_sequence_different_seed_different_sequence() {
        let seq = |seed| {
            let mut r = Xoshiro256::seed_from_u64(seed);
            (0..64).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(seq(1), seq(1));
        assert_ne!(seq(1), seq(2));
        let mut a = Xoshiro256::seed_from_u64(5);
        a.next_u64();
        let mut b = a.clone();
        assert_eq!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn next_f64_is_in_unit_interval_with_mean_one_half() {
        let mut r = Xoshiro256::seed_from_u64(11);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            sum += x;
        }
        let mean = sum / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn range_u64_covers_small_ranges_evenly_and_handles_edges() {
        let mut r = Xoshiro256::seed_from_u64(12);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            let v = r.range_u64(10, 15);
            assert!((10..=15).contains(&v));
            counts[(v - 10) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..=11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(r.range_u64(7, 7), 7);
        for _ in 0..1000 {
            let v = r.range_u64(15, 10);
            assert!((10..=15).contains(&v));
        }
        // Full range and near-full ranges neither panic nor overflow.
        r.range_u64(0, u64::MAX);
        for _ in 0..1000 {
            let v = r.range_u64(1, u64::MAX);
            assert!(v >= 1);
            let v = r.range_u64(u64::MAX - 1, u64::MAX);
            assert!(v >= u64::MAX - 1);
        }
    }

    #[test]
    fn duration_between_is_inclusive_at_nanosecond_resolution() {
        let mut r = Xoshiro256::seed_from_u64(13);
        let lo = Duration::new(1, 999_999_999);
        let hi = Duration::new(2, 1);
        let mut seen = [false; 3];
        for _ in 0..1000 {
            let d = r.duration_between(lo, hi);
            assert!(lo <= d && d <= hi);
            seen[(d - lo).as_nanos() as usize] = true;
        }
        assert_eq!(seen, [true; 3], "both ends and the middle are reachable");
        assert_eq!(r.duration_between(lo, lo), lo);
        assert_eq!(
            r.duration_between(Duration::ZERO, Duration::ZERO),
            Duration::ZERO
        );
        for _ in 0..1000 {
            let d = r.duration_between(hi, lo);
            assert!(lo <= d && d <= hi);
        }
    }

    #[test]
    fn duration_between_handles_spans_beyond_u64_nanoseconds() {
        let mut r = Xoshiro256::seed_from_u64(14);
        for _ in 0..1000 {
            let d = r.duration_between(Duration::ZERO, Duration::MAX);
            assert!(d <= Duration::MAX);
            let lo = Duration::MAX - Duration::from_secs(1);
            let d = r.duration_between(lo, Duration::MAX);
            assert!(d >= lo);
        }
        // A wide span is not stuck near one end.
        let mut above_half = 0;
        for _ in 0..1000 {
            if r.duration_between(Duration::ZERO, Duration::MAX) > Duration::MAX / 2 {
                above_half += 1;
            }
        }
        assert!((400..=600).contains(&above_half), "{above_half}");
    }

    #[test]
    fn duration_from_nanos_saturates() {
        assert_eq!(duration_from_nanos_u128(u128::MAX), Duration::MAX);
        assert_eq!(
            duration_from_nanos_u128(Duration::MAX.as_nanos()),
            Duration::MAX
        );
        assert_eq!(
            duration_from_nanos_u128(1_500_000_000),
            Duration::from_millis(1500)
        );
    }
}
