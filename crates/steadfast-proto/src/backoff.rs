//! Reconnect backoff policies.
//!
//! A [`BackoffPolicy`] chooses how long to wait before the next connection attempt. Four
//! policies are provided, matching the "Backoff" section of the reconnect spec:
//!
//! - [`Exponential`] from `min` to `max`, with a [`Jitter`] mode (the default, via
//!   [`default_policy`]: rising decorrelated jitter, 1 s to 60 s);
//! - [`UniformRandom`] in `[min, max]` (Paho's style);
//! - [`Stepped`]: a list of delays, each with +/- a jitter fraction;
//! - [`Constant`].
//!
//! Applications can supply their own by implementing the trait. Every provided policy returns
//! delays inside `[min_delay(), max_delay()]`, for every attempt number up to `u32::MAX`; none
//! of them panics or overflows. Randomness comes only from the [`rand_core::Rng`] passed in (any generator; the
//! core uses [`Xoshiro256`](crate::rng::Xoshiro256)), so a pinned
//! seed gives a reproducible schedule.
//!
//! ```
//! use steadfast_proto::backoff::{default_policy, BackoffPolicy};
//! use steadfast_proto::rng::{Rng, Xoshiro256};
//! use std::time::Duration;
//!
//! let mut policy = default_policy();
//! let mut rng = Xoshiro256::seed_from_u64(1);
//! for attempt in 1..=10 {
//!     let d = policy.next_delay(attempt, &mut rng);
//!     assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(60));
//! }
//! policy.reset();
//! ```

use core::fmt;
use core::time::Duration;

use crate::rng::{duration_from_nanos_u128, Draw, Rng};

/// Chooses the delay before each reconnection attempt.
///
/// The connection core calls [`next_delay`](BackoffPolicy::next_delay) once per failed
/// attempt, with `attempt` counting the consecutive failed attempts since the last
/// [`reset`](BackoffPolicy::reset). It calls `reset` only after a connection has stayed up for
/// `stable_after` (or on `wake()`), so a connection that is dropped right after it is accepted
/// keeps growing the delay.
///
/// Implementations must return a delay within `[min_delay(), max_delay()]` and must not panic
/// for any `attempt`, including `0` (treat it as `1`) and `u32::MAX`.
///
/// A user-supplied policy:
///
/// ```
/// use steadfast_proto::backoff::BackoffPolicy;
/// use steadfast_proto::rng::{Rng, Xoshiro256};
/// use std::time::Duration;
///
/// /// 1 s per failed attempt, up to 10 s.
/// #[derive(Debug)]
/// struct Linear;
///
/// impl BackoffPolicy for Linear {
///     fn next_delay(&mut self, attempt: u32, _rng: &mut dyn Rng) -> Duration {
///         Duration::from_secs(u64::from(attempt.clamp(1, 10)))
///     }
///     fn reset(&mut self) {}
///     fn max_delay(&self) -> Duration { Duration::from_secs(10) }
///     fn min_delay(&self) -> Duration { Duration::from_secs(1) }
/// }
///
/// let mut p: Box<dyn BackoffPolicy> = Box::new(Linear);
/// assert_eq!(p.next_delay(3, &mut Xoshiro256::seed_from_u64(0)), Duration::from_secs(3));
/// ```
pub trait BackoffPolicy: Send + fmt::Debug {
    /// The delay to wait before the next attempt.
    ///
    /// `attempt` is the number of consecutive failed attempts so far, counting from the last
    /// [`reset`](BackoffPolicy::reset): `1` after the first failure (the delay before the
    /// first retry), `2` after the second, and so on. `0` is treated as `1`; the count may
    /// saturate at `u32::MAX`.
    fn next_delay(&mut self, attempt: u32, rng: &mut dyn Rng) -> Duration;

    /// Forgets any growth state. Called after a connection has stayed up for `stable_after`,
    /// or on `wake()`.
    fn reset(&mut self);

    /// The largest delay this policy returns. The core uses `max_delay() / 4` as the floor
    /// after a "slow down" refusal or a session takeover.
    fn max_delay(&self) -> Duration;

    /// The smallest delay this policy returns.
    fn min_delay(&self) -> Duration;
}

impl<P: BackoffPolicy + ?Sized> BackoffPolicy for Box<P> {
    fn next_delay(&mut self, attempt: u32, rng: &mut dyn Rng) -> Duration {
        (**self).next_delay(attempt, rng)
    }
    fn reset(&mut self) {
        (**self).reset()
    }
    fn max_delay(&self) -> Duration {
        (**self).max_delay()
    }
    fn min_delay(&self) -> Duration {
        (**self).min_delay()
    }
}

/// The policy steadfast uses unless configured otherwise: [`Exponential`] with
/// [`Jitter::Rising`], `min` 1 s and `max` 60 s. A client whose link drops alone retries after
/// 1 s to 3 s (as with [`Jitter::Decorrelated`], the previous default); a fleet cut off by a
/// long outage makes about a third fewer attempts, and comes back sooner against a broker that
/// limits its connection rate (the evidence: the fleet simulation in `docs/lifecycle.md`).
///
/// ```
/// use steadfast_proto::backoff::{default_policy, BackoffPolicy, Jitter};
/// use std::time::Duration;
///
/// let p = default_policy();
/// assert_eq!(p.min_delay(), Duration::from_secs(1));
/// assert_eq!(p.max_delay(), Duration::from_secs(60));
/// assert_eq!(p.jitter_mode(), Jitter::Rising);
/// ```
pub fn default_policy() -> Exponential {
    Exponential::new(Duration::from_secs(1), Duration::from_secs(60)).jitter(Jitter::Rising)
}

/// The jitter modes of the AWS architecture note "Exponential Backoff And Jitter", adapted so
/// that every mode stays within `[min, max]`.
///
/// Below, `exp` is the un-jittered delay `min * factor^(attempt - 1)`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// No jitter: exactly `exp`.
    None,
    /// Uniform in `[min, exp]`.
    Full,
    /// `exp / 2` plus uniform in `[0, exp / 2]`, raised to at least `min`.
    Equal,
    /// `min(max, uniform[min, prev * 3])`, where `prev` is the previous delay (starting at
    /// `min`). This mode is stateful and ignores the attempt number; `reset()` starts it over.
    ///
    /// As in the AWS formula, once `3 * prev` exceeds `max` a share of the delays is exactly
    /// `max`. A fleet still does not fall into lock-step: each client's retry instants are sums
    /// of its own earlier random delays.
    ///
    /// The default of [`Exponential::new`]. The library's [`default_policy`] uses
    /// [`Jitter::Rising`] instead.
    #[default]
    Decorrelated,
    /// `min(max, uniform[prev, prev * 3])`, where `prev` is the previous delay (starting at
    /// `min`): decorrelated jitter whose lower bound climbs with the previous delay, so a delay
    /// never shrinks until `reset()`. The first delay is drawn exactly as
    /// [`Jitter::Decorrelated`]'s (from `[min, 3 x min]`, with the same generator call), so a
    /// client whose link drops alone comes back as fast; after that the mean delay doubles per
    /// attempt instead of growing about 1.5x, so a fleet cut off by a long outage makes fewer
    /// attempts while the broker is down (see the fleet simulation in `docs/lifecycle.md`).
    /// Stateful like `Decorrelated`; `reset()` starts it over. The jitter of
    /// [`default_policy`].
    Rising,
}

/// Growth base used when `min` is zero: a zero base would never grow.
const ZERO_MIN_GROWTH_BASE: Duration = Duration::from_millis(1);

/// Exponential backoff from `min` to `max`, with a [`Jitter`] mode.
///
/// Defaults: `factor` 2.0, jitter [`Jitter::Decorrelated`]. Without jitter the delay before
/// retry `attempt` is `min * factor^(attempt - 1)`, capped at `max`:
///
/// ```
/// use steadfast_proto::backoff::{BackoffPolicy, Exponential, Jitter};
/// use steadfast_proto::rng::{Rng, Xoshiro256};
/// use std::time::Duration;
///
/// let mut p = Exponential::new(Duration::from_secs(1), Duration::from_secs(60)).jitter(Jitter::None);
/// let mut rng = Xoshiro256::seed_from_u64(0);
/// let secs: Vec<u64> = (1..=8).map(|a| p.next_delay(a, &mut rng).as_secs()).collect();
/// assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
/// ```
///
/// If `min` is zero, growth starts from 1 ms (or `max`, if smaller) instead, because zero times
/// any factor stays zero; delays are still never below `min` nor above `max`.
#[derive(Debug, Clone, PartialEq)]
pub struct Exponential {
    min: Duration,
    max: Duration,
    factor: f64,
    jitter: Jitter,
    /// The previous delay, for [`Jitter::Decorrelated`] and [`Jitter::Rising`].
    prev: Duration,
}

impl Exponential {
    /// Creates an exponential policy from `min` to `max` (factor 2.0, decorrelated jitter).
    /// If `min > max` the two are swapped.
    pub fn new(min: Duration, max: Duration) -> Exponential {
        let (min, max) = if min <= max { (min, max) } else { (max, min) };
        let mut p = Exponential {
            min,
            max,
            factor: 2.0,
            jitter: Jitter::default(),
            prev: Duration::ZERO,
        };
        p.prev = p.growth_base();
        p
    }

    /// Sets the growth factor (default 2.0). A factor below 1.0, infinite or NaN is replaced
    /// by 1.0 (no growth), so delays never shrink.
    pub fn factor(mut self, factor: f64) -> Exponential {
        self.factor = if factor.is_finite() && factor >= 1.0 {
            factor
        } else {
            1.0
        };
        self
    }

    /// Sets the jitter mode (default [`Jitter::Decorrelated`]) and resets the growth state.
    pub fn jitter(mut self, jitter: Jitter) -> Exponential {
        self.jitter = jitter;
        self.reset();
        self
    }

    /// The configured jitter mode.
    pub fn jitter_mode(&self) -> Jitter {
        self.jitter
    }

    /// The configured growth factor.
    pub fn growth_factor(&self) -> f64 {
        self.factor
    }

    fn growth_base(&self) -> Duration {
        if self.min.is_zero() {
            ZERO_MIN_GROWTH_BASE.min(self.max)
        } else {
            self.min
        }
    }

    /// The un-jittered delay for `attempt`: `base * factor^(attempt - 1)`, capped at `max`.
    fn exp_delay(&self, attempt: u32) -> Duration {
        let n = i32::try_from(attempt.max(1) - 1).unwrap_or(i32::MAX);
        let nanos = self.growth_base().as_nanos() as f64 * self.factor.powi(n);
        let max_nanos = self.max.as_nanos() as f64;
        // Infinity compares above any max; NaN (only from a zero base times infinity) too.
        if nanos.is_nan() || nanos >= max_nanos {
            return self.max;
        }
        duration_from_nanos_u128(nanos.round() as u128).clamp(self.min, self.max)
    }
}

impl BackoffPolicy for Exponential {
    fn next_delay(&mut self, attempt: u32, rng: &mut dyn Rng) -> Duration {
        let d = match self.jitter {
            Jitter::None => self.exp_delay(attempt),
            Jitter::Full => {
                let exp = self.exp_delay(attempt);
                rng.duration_between(self.min, exp)
            }
            Jitter::Equal => {
                let exp = self.exp_delay(attempt);
                let half = exp / 2;
                half + rng.duration_between(Duration::ZERO, exp - half)
            }
            Jitter::Decorrelated => {
                let upper = self.prev.saturating_mul(3).max(self.min);
                let d = rng.duration_between(self.min, upper).min(self.max);
                // Never let the state fall to zero (it would never grow again).
                self.prev = d.max(self.growth_base());
                d
            }
            Jitter::Rising => {
                let lower = self.prev.max(self.min).min(self.max);
                let upper = self.prev.saturating_mul(3).max(lower);
                let d = rng.duration_between(lower, upper).min(self.max);
                self.prev = d.max(self.growth_base());
                d
            }
        };
        d.clamp(self.min, self.max)
    }

    fn reset(&mut self) {
        self.prev = self.growth_base();
    }

    fn max_delay(&self) -> Duration {
        self.max
    }

    fn min_delay(&self) -> Duration {
        self.min
    }
}

/// A delay drawn uniformly from `[min, max]` on every attempt, as Paho does.
///
/// ```
/// use steadfast_proto::backoff::{BackoffPolicy, UniformRandom};
/// use steadfast_proto::rng::{Rng, Xoshiro256};
/// use std::time::Duration;
///
/// let mut p = UniformRandom::new(Duration::from_secs(1), Duration::from_secs(5));
/// let d = p.next_delay(1, &mut Xoshiro256::seed_from_u64(0));
/// assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniformRandom {
    min: Duration,
    max: Duration,
}

impl UniformRandom {
    /// Creates the policy. If `min > max` the two are swapped.
    pub fn new(min: Duration, max: Duration) -> UniformRandom {
        let (min, max) = if min <= max { (min, max) } else { (max, min) };
        UniformRandom { min, max }
    }
}

impl BackoffPolicy for UniformRandom {
    fn next_delay(&mut self, _attempt: u32, rng: &mut dyn Rng) -> Duration {
        rng.duration_between(self.min, self.max)
    }

    fn reset(&mut self) {}

    fn max_delay(&self) -> Duration {
        self.max
    }

    fn min_delay(&self) -> Duration {
        self.min
    }
}

/// Why [`Stepped::new`] refused its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteppedError {
    /// The list of steps was empty.
    NoSteps,
    /// The jitter fraction was negative, above 1.0, or not a number.
    InvalidJitter,
}

impl fmt::Display for SteppedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SteppedError::NoSteps => "stepped backoff needs at least one step",
            SteppedError::InvalidJitter => "stepped backoff jitter must be within 0.0..=1.0",
        })
    }
}

impl std::error::Error for SteppedError {}

/// A list of delays: retry `k` waits `steps[k - 1]`, and every retry past the end of the list
/// waits the last step. Each delay is drawn uniformly from `step * (1 - jitter)` to
/// `step * (1 + jitter)`.
///
/// ```
/// use steadfast_proto::backoff::{BackoffPolicy, Stepped};
/// use steadfast_proto::rng::{Rng, Xoshiro256};
/// use std::time::Duration;
///
/// let steps = vec![Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(30)];
/// let mut p = Stepped::new(steps, 0.2).unwrap(); // +/- 20 %
/// let mut rng = Xoshiro256::seed_from_u64(0);
/// let d = p.next_delay(2, &mut rng);
/// assert!(d >= Duration::from_secs(4) && d <= Duration::from_secs(6));
/// let d = p.next_delay(100, &mut rng); // past the end: the last step
/// assert!(d >= Duration::from_secs(24) && d <= Duration::from_secs(36));
/// assert_eq!(p.min_delay(), Duration::from_millis(800));
/// assert_eq!(p.max_delay(), Duration::from_secs(36));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Stepped {
    /// Per step, the inclusive range `[step - step * jitter, step + step * jitter]`.
    bounds: Vec<(Duration, Duration)>,
    jitter: f64,
    min: Duration,
    max: Duration,
}

impl Stepped {
    /// Creates the policy from a non-empty list of steps and a jitter fraction in
    /// `0.0..=1.0` (for example 0.2 for +/- 20 %; 0.0 for none).
    ///
    /// # Errors
    /// [`SteppedError::NoSteps`] if `steps` is empty, [`SteppedError::InvalidJitter`] if
    /// `jitter` is negative, above 1.0 or NaN.
    pub fn new(steps: Vec<Duration>, jitter: f64) -> Result<Stepped, SteppedError> {
        if steps.is_empty() {
            return Err(SteppedError::NoSteps);
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(SteppedError::InvalidJitter);
        }
        let bounds: Vec<(Duration, Duration)> = steps
            .iter()
            .map(|&step| {
                let delta = (step.as_nanos() as f64 * jitter).round();
                // f64 -> u128 saturates; delta is finite and non-negative here.
                let delta = duration_from_nanos_u128(delta as u128);
                (step.saturating_sub(delta), step.saturating_add(delta))
            })
            .collect();
        let min = bounds.iter().map(|b| b.0).min().unwrap_or_default();
        let max = bounds.iter().map(|b| b.1).max().unwrap_or_default();
        Ok(Stepped {
            bounds,
            jitter,
            min,
            max,
        })
    }

    /// The jitter fraction.
    pub fn jitter_fraction(&self) -> f64 {
        self.jitter
    }
}

impl BackoffPolicy for Stepped {
    fn next_delay(&mut self, attempt: u32, rng: &mut dyn Rng) -> Duration {
        let last = self.bounds.len() - 1;
        let index = usize::try_from(attempt.max(1) - 1)
            .unwrap_or(usize::MAX)
            .min(last);
        let (lo, hi) = self.bounds[index];
        rng.duration_between(lo, hi)
    }

    fn reset(&mut self) {}

    fn max_delay(&self) -> Duration {
        self.max
    }

    fn min_delay(&self) -> Duration {
        self.min
    }
}

/// The same delay before every attempt. Does not draw from the [`Rng`](crate::rng::Rng).
///
/// ```
/// use steadfast_proto::backoff::{BackoffPolicy, Constant};
/// use steadfast_proto::rng::{Rng, Xoshiro256};
/// use std::time::Duration;
///
/// let mut p = Constant::new(Duration::from_secs(5));
/// assert_eq!(p.next_delay(42, &mut Xoshiro256::seed_from_u64(0)), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constant {
    delay: Duration,
}

impl Constant {
    /// Creates the policy.
    pub fn new(delay: Duration) -> Constant {
        Constant { delay }
    }
}

impl BackoffPolicy for Constant {
    fn next_delay(&mut self, _attempt: u32, _rng: &mut dyn Rng) -> Duration {
        self.delay
    }

    fn reset(&mut self) {}

    fn max_delay(&self) -> Duration {
        self.delay
    }

    fn min_delay(&self) -> Duration {
        self.delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Xoshiro256;

    const ALL_JITTER: [Jitter; 5] = [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
        Jitter::Rising,
    ];

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn exp(jitter: Jitter) -> Exponential {
        Exponential::new(secs(1), secs(60)).jitter(jitter)
    }

    /// Every policy shape under test, each with whether its delays depend on the seed.
    fn policies_with_randomness() -> Vec<(Box<dyn BackoffPolicy>, bool)> {
        let mut v: Vec<(Box<dyn BackoffPolicy>, bool)> = Vec::new();
        for j in ALL_JITTER {
            let random = j != Jitter::None;
            v.push((Box::new(exp(j)), random));
            v.push((
                Box::new(
                    Exponential::new(Duration::from_millis(100), secs(30))
                        .factor(1.5)
                        .jitter(j),
                ),
                random,
            ));
            v.push((
                Box::new(Exponential::new(Duration::ZERO, secs(10)).jitter(j)),
                random,
            ));
            v.push((
                Box::new(Exponential::new(secs(5), secs(5)).jitter(j)),
                false,
            ));
            v.push((
                Box::new(Exponential::new(secs(1), Duration::MAX).jitter(j)),
                random,
            ));
            v.push((
                Box::new(Exponential::new(secs(60), secs(1)).jitter(j)),
                random,
            )); // swapped
        }
        v.push((Box::new(UniformRandom::new(secs(1), secs(60))), true));
        v.push((Box::new(UniformRandom::new(secs(60), secs(1))), true));
        v.push((
            Box::new(Stepped::new(vec![secs(1), secs(5), secs(30)], 0.2).unwrap()),
            true,
        ));
        v.push((
            Box::new(Stepped::new(vec![secs(10), Duration::ZERO, Duration::MAX], 1.0).unwrap()),
            true,
        ));
        v.push((Box::new(Constant::new(secs(7))), false));
        v
    }

    fn all_policies() -> Vec<Box<dyn BackoffPolicy>> {
        policies_with_randomness()
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    }

    /// Delays for attempts 1..=20, repeated, from one seeded RNG.
    fn draws(p: &mut dyn BackoffPolicy, seed: u64, n: usize) -> Vec<Duration> {
        let mut rng = Xoshiro256::seed_from_u64(seed);
        (0..n)
            .map(|i| p.next_delay(i as u32 % 20 + 1, &mut rng))
            .collect()
    }

    fn mean_secs(v: &[Duration]) -> f64 {
        v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64
    }

    /// Asserts each of the ten equal-width buckets of `[lo, hi]` holds 10 % +/- 2 %.
    fn assert_deciles(v: &[Duration], lo: Duration, hi: Duration) {
        let (lo, hi) = (lo.as_secs_f64(), hi.as_secs_f64());
        let mut buckets = [0usize; 10];
        for d in v {
            let x = (d.as_secs_f64() - lo) / (hi - lo);
            buckets[((x * 10.0) as usize).min(9)] += 1;
        }
        let n = v.len() as f64;
        for b in buckets {
            let share = b as f64 / n;
            assert!((0.08..=0.12).contains(&share), "deciles {buckets:?}");
        }
    }

    #[test]
    fn every_policy_and_mode_stays_within_min_and_max() {
        for (i, p) in all_policies().iter_mut().enumerate() {
            let (min, max) = (p.min_delay(), p.max_delay());
            assert!(min <= max, "{p:?}");
            for d in draws(p.as_mut(), i as u64, 10_000) {
                assert!(
                    min <= d && d <= max,
                    "{d:?} outside [{min:?}, {max:?}] for {p:?}"
                );
            }
            let mut rng = Xoshiro256::seed_from_u64(99);
            for attempt in [0, 1, 2, 31, 32, 63, 64, 1_000, u32::MAX - 1, u32::MAX] {
                for _ in 0..100 {
                    let d = p.next_delay(attempt, &mut rng);
                    assert!(min <= d && d <= max, "attempt {attempt}: {d:?} for {p:?}");
                }
            }
            p.reset();
            let d = p.next_delay(1, &mut rng);
            assert!(min <= d && d <= max);
        }
    }

    #[test]
    fn no_jitter_is_the_exact_doubling_sequence() {
        let mut p = exp(Jitter::None);
        let mut rng = Xoshiro256::seed_from_u64(0);
        let got: Vec<Duration> = (1..=10).map(|a| p.next_delay(a, &mut rng)).collect();
        let want: Vec<Duration> = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60].map(secs).to_vec();
        assert_eq!(got, want);
        assert_eq!(
            p.next_delay(0, &mut rng),
            secs(1),
            "attempt 0 is treated as 1"
        );
        assert_eq!(p.next_delay(u32::MAX, &mut rng), secs(60));
        // No randomness consumed.
        assert_eq!(rng, Xoshiro256::seed_from_u64(0));

        let mut p = Exponential::new(Duration::from_millis(100), secs(10))
            .factor(1.5)
            .jitter(Jitter::None);
        let got: Vec<u128> = (1..=4)
            .map(|a| p.next_delay(a, &mut rng).as_millis())
            .collect();
        assert_eq!(got, [100, 150, 225, 337]);

        // A zero min grows from 1 ms.
        let mut p = Exponential::new(Duration::ZERO, secs(1)).jitter(Jitter::None);
        let got: Vec<u128> = (1..=4)
            .map(|a| p.next_delay(a, &mut rng).as_millis())
            .collect();
        assert_eq!(got, [1, 2, 4, 8]);
        assert_eq!(p.next_delay(40, &mut rng), secs(1));

        // A factor below 1 (or NaN) means no growth rather than shrinking.
        for f in [0.5, f64::NAN, f64::INFINITY, -3.0] {
            let mut p = Exponential::new(secs(2), secs(60))
                .factor(f)
                .jitter(Jitter::None);
            assert_eq!(p.next_delay(10, &mut rng), secs(2), "factor {f}");
        }
    }

    #[test]
    fn full_jitter_is_uniform_between_min_and_exp() {
        let mut p = exp(Jitter::Full);
        let mut rng = Xoshiro256::seed_from_u64(1);
        // Attempt 3: exp = 4 s.
        for _ in 0..1000 {
            let d = p.next_delay(3, &mut rng);
            assert!(secs(1) <= d && d <= secs(4));
        }
        // Large attempt: exp = max, so uniform over [min, max].
        let v: Vec<Duration> = (0..10_000).map(|_| p.next_delay(20, &mut rng)).collect();
        let mean = mean_secs(&v);
        assert!((mean - 30.5).abs() < 30.5 * 0.03, "mean {mean}");
        assert_deciles(&v, secs(1), secs(60));
    }

    #[test]
    fn equal_jitter_is_never_below_half_of_exp() {
        let mut p = exp(Jitter::Equal);
        let mut rng = Xoshiro256::seed_from_u64(2);
        for attempt in 1..=20u32 {
            let e = secs(1u64 << (attempt - 1).min(6)).min(secs(60));
            let v: Vec<Duration> = (0..500).map(|_| p.next_delay(attempt, &mut rng)).collect();
            for &d in &v {
                assert!(
                    d >= e / 2 && d <= e && d >= secs(1),
                    "attempt {attempt}: {d:?}"
                );
            }
            if attempt >= 7 {
                let mean = mean_secs(&v);
                assert!((mean - 45.0).abs() < 45.0 * 0.03, "mean {mean}");
            }
        }
        let v: Vec<Duration> = (0..10_000).map(|_| p.next_delay(30, &mut rng)).collect();
        assert_deciles(&v, secs(30), secs(60));
    }

    #[test]
    fn rising_starts_like_decorrelated_never_shrinks_and_doubles_on_average() {
        // The first delay is the same draw as Decorrelated's, from the same generator state.
        for seed in 0..200 {
            let mut a = exp(Jitter::Rising);
            let mut b = exp(Jitter::Decorrelated);
            let first = a.next_delay(1, &mut Xoshiro256::seed_from_u64(seed));
            assert_eq!(first, b.next_delay(1, &mut Xoshiro256::seed_from_u64(seed)));
            assert!(secs(1) <= first && first <= secs(3));
        }
        let mut p = exp(Jitter::Rising);
        let mut rng = Xoshiro256::seed_from_u64(11);
        let mut sums = [0f64; 3];
        let runs = 20_000;
        for _ in 0..runs {
            p.reset();
            let mut prev = Duration::ZERO;
            for k in 1..=40 {
                let d = p.next_delay(k, &mut rng);
                assert!(d >= prev, "attempt {k}: {d:?} after {prev:?}");
                assert!(secs(1) <= d && d <= secs(60));
                if let Some(sum) = sums.get_mut(k as usize - 1) {
                    *sum += d.as_secs_f64();
                }
                prev = d;
            }
            assert_eq!(prev, secs(60), "40 attempts reach max");
        }
        // The mean of attempt k is 2^k s (2, 4, 8) while no draw can reach the cap.
        for (k, sum) in sums.iter().enumerate() {
            let mean = sum / runs as f64;
            let want = 2f64.powi(k as i32 + 1);
            assert!(
                (mean - want).abs() < want * 0.03,
                "attempt {}: mean {mean}",
                k + 1
            );
        }
    }

    #[test]
    fn decorrelated_spreads_grows_to_max_and_restarts_low_after_reset() {
        let mut p = exp(Jitter::Decorrelated);
        let mut rng = Xoshiro256::seed_from_u64(3);
        let (mut high_within_20, mut max_within_100) = (0, 0);
        let mut all = Vec::new();
        for _run in 0..500 {
            p.reset();
            let first = p.next_delay(1, &mut rng);
            assert!(
                secs(1) <= first && first <= secs(3),
                "first after reset {first:?}"
            );
            let (mut high, mut hit_max) = (false, false);
            for attempt in 2..=100 {
                let d = p.next_delay(attempt, &mut rng);
                if attempt <= 20 {
                    all.push(d);
                    high |= d >= secs(45);
                }
                hit_max |= d == secs(60);
            }
            high_within_20 += usize::from(high);
            max_within_100 += usize::from(hit_max);
        }
        // The AWS formula draws from [min, 3 * prev] and caps at max, so most runs climb into
        // the top quarter within 20 attempts, and every run touches max eventually.
        assert!(
            high_within_20 >= 400,
            "{high_within_20}/500 runs reached 45 s by attempt 20"
        );
        assert_eq!(max_within_100, 500);
        // Below the cap, the values are spread (no two equal at nanosecond resolution).
        let mut below_max: Vec<Duration> = all.iter().copied().filter(|&d| d < secs(60)).collect();
        let n = below_max.len();
        below_max.sort();
        below_max.dedup();
        assert!(
            n > all.len() / 4 && below_max.len() == n,
            "{} distinct of {n}",
            below_max.len()
        );
        assert!(all.iter().any(|&d| d < secs(10)));
    }

    #[test]
    fn decorrelated_first_delay_is_uniform_over_min_to_three_min() {
        let mut v = Vec::new();
        for seed in 0..10_000 {
            let mut p = default_policy();
            v.push(p.next_delay(1, &mut Xoshiro256::seed_from_u64(seed)));
        }
        assert_deciles(&v, secs(1), secs(3));
        let mean = mean_secs(&v);
        assert!((mean - 2.0).abs() < 2.0 * 0.03, "mean {mean}");
    }

    #[test]
    fn uniform_random_mean_and_deciles() {
        let mut p = UniformRandom::new(secs(1), secs(60));
        let v = draws(&mut p, 4, 10_000);
        let mean = mean_secs(&v);
        assert!((mean - 30.5).abs() < 30.5 * 0.03, "mean {mean}");
        assert_deciles(&v, secs(1), secs(60));
    }

    #[test]
    fn stepped_follows_the_steps_within_the_jitter_fraction() {
        let steps = vec![secs(1), secs(5), secs(30)];
        let mut p = Stepped::new(steps.clone(), 0.2).unwrap();
        assert_eq!(p.min_delay(), Duration::from_millis(800));
        assert_eq!(p.max_delay(), secs(36));
        let mut rng = Xoshiro256::seed_from_u64(5);
        for attempt in [0, 1, 2, 3, 4, 100, u32::MAX] {
            let step = steps[(attempt.max(1) as usize - 1).min(2)];
            let (lo, hi) = (step.mul_f64(0.8), step.mul_f64(1.2));
            let v: Vec<Duration> = (0..2000).map(|_| p.next_delay(attempt, &mut rng)).collect();
            for &d in &v {
                assert!(lo <= d && d <= hi, "attempt {attempt}: {d:?}");
            }
            assert!(v.iter().any(|&d| d < step) && v.iter().any(|&d| d > step));
            let mean = mean_secs(&v);
            assert!((mean - step.as_secs_f64()).abs() < step.as_secs_f64() * 0.02);
        }
        // No jitter: exact.
        let mut p = Stepped::new(steps.clone(), 0.0).unwrap();
        let got: Vec<Duration> = (1..=5).map(|a| p.next_delay(a, &mut rng)).collect();
        assert_eq!(got, [1, 5, 30, 30, 30].map(secs));
        assert_eq!((p.min_delay(), p.max_delay()), (secs(1), secs(30)));
    }

    #[test]
    fn stepped_rejects_bad_arguments() {
        assert_eq!(Stepped::new(vec![], 0.1), Err(SteppedError::NoSteps));
        for j in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert_eq!(
                Stepped::new(vec![secs(1)], j),
                Err(SteppedError::InvalidJitter)
            );
        }
        assert!(Stepped::new(vec![secs(1)], 1.0).is_ok());
        assert!(!SteppedError::NoSteps.to_string().is_empty());
    }

    #[test]
    fn constant_is_constant() {
        let mut p = Constant::new(secs(7));
        let mut rng = Xoshiro256::seed_from_u64(6);
        for attempt in [0, 1, 2, 1000, u32::MAX] {
            assert_eq!(p.next_delay(attempt, &mut rng), secs(7));
        }
        assert_eq!((p.min_delay(), p.max_delay()), (secs(7), secs(7)));
        assert_eq!(rng, Xoshiro256::seed_from_u64(6), "no randomness consumed");
    }

    #[test]
    fn same_seed_same_schedule_different_seed_different_schedule() {
        for (mut p, is_random) in policies_with_randomness() {
            p.reset();
            let a = draws(p.as_mut(), 1, 200);
            p.reset();
            let b = draws(p.as_mut(), 1, 200);
            p.reset();
            let c = draws(p.as_mut(), 2, 200);
            assert_eq!(a, b, "{p:?}");
            if is_random {
                assert_ne!(a, c, "{p:?}");
            }
        }
    }

    /// Histogram of `delays` in buckets of `width` over `[lo, hi]`; asserts no bucket holds
    /// more than 3x the uniform share.
    fn assert_no_lockstep(delays: &[Duration], lo: Duration, hi: Duration, width: Duration) {
        let buckets = ((hi - lo).as_nanos()).div_ceil(width.as_nanos()) as usize;
        let mut hist = vec![0usize; buckets];
        for &d in delays {
            let i = ((d - lo).as_nanos() / width.as_nanos()) as usize;
            hist[i.min(buckets - 1)] += 1;
        }
        let share = delays.len() as f64 / buckets as f64;
        let worst = *hist.iter().max().unwrap();
        assert!(
            (worst as f64) <= 3.0 * share,
            "bucket with {worst} clients, uniform share {share}: {hist:?}"
        );
    }

    #[test]
    fn a_fleet_with_distinct_seeds_does_not_retry_in_lock_step() {
        // 1,000 clients fail at the same instant; each has its own seed.
        let first_retry = |mut p: Box<dyn BackoffPolicy>| -> Vec<Duration> {
            (0..1000u64)
                .map(|client| {
                    p.reset();
                    p.next_delay(1, &mut Xoshiro256::seed_from_u64(client))
                })
                .collect()
        };
        // Paho-style uniform over a minute, 1-second buckets.
        let v = first_retry(Box::new(UniformRandom::new(secs(0), secs(60))));
        assert_no_lockstep(&v, secs(0), secs(60), secs(1));
        // Full jitter at a grown attempt spreads over [min, max] too.
        let v: Vec<Duration> = (0..1000u64)
            .map(|c| exp(Jitter::Full).next_delay(10, &mut Xoshiro256::seed_from_u64(c)))
            .collect();
        assert_no_lockstep(&v, secs(1), secs(60), secs(1));
        // The default policy's first retry lies in [1 s, 3 s]: 1-second buckets, and finer
        // 100 ms buckets.
        let v = first_retry(Box::new(default_policy()));
        assert_no_lockstep(&v, secs(1), secs(3), secs(1));
        assert_no_lockstep(&v, secs(1), secs(3), Duration::from_millis(100));
        // With the default policy, the instants of the k-th retry (the sum of the first k
        // delays) stay spread out as the delays grow.
        let mut clients: Vec<(Exponential, Xoshiro256, Duration)> = (0..1000u64)
            .map(|c| {
                (
                    default_policy(),
                    Xoshiro256::seed_from_u64(c),
                    Duration::ZERO,
                )
            })
            .collect();
        let mut previous_worst = usize::MAX;
        for attempt in 1..=10 {
            let mut at: Vec<Duration> = clients
                .iter_mut()
                .map(|(p, rng, t)| {
                    *t += p.next_delay(attempt, rng);
                    *t
                })
                .collect();
            let mut per_second = std::collections::BTreeMap::new();
            for t in &at {
                *per_second.entry(t.as_secs()).or_insert(0usize) += 1;
            }
            let worst = per_second.values().copied().max().unwrap();
            // Once a client's delay reaches max it stays exactly max (rising jitter never
            // shrinks), so its phase is kept: the spread stops widening there, and the busiest
            // second may gain a client or two by chance, but it never bunches up.
            assert!(
                worst <= previous_worst.saturating_add(5),
                "attempt {attempt}: spread contracted ({previous_worst} -> {worst})"
            );
            if attempt >= 5 {
                assert!(
                    worst <= 50,
                    "attempt {attempt}: {worst} clients in one second"
                );
            }
            previous_worst = worst;
            at.sort();
            at.dedup();
            assert_eq!(
                at.len(),
                1000,
                "attempt {attempt}: two clients at the same instant"
            );
        }
    }

    #[test]
    fn boxed_policies_are_policies() {
        let mut p: Box<dyn BackoffPolicy> = Box::new(exp(Jitter::None));
        let mut rng = Xoshiro256::seed_from_u64(0);
        assert_eq!(p.next_delay(2, &mut rng), secs(2));
        assert_eq!(p.max_delay(), secs(60));
        fn takes_policy<P: BackoffPolicy>(p: &P) -> Duration {
            p.min_delay()
        }
        assert_eq!(takes_policy(&p), secs(1));
    }
}
